//! The server's state, shared by its two threads, and what each thread does with it.
//!
//! * The main thread receives requests and dispatches them (`serve`).
//! * The event thread waits on the `EVENTS` notification: the IOMMU's fault interrupt (drain
//!   the fault records or event queue, route each to `Server::deliver_fault`), on arm the
//!   SMMU's global-error interrupt, the end of a client process (tear the client down), and
//!   the kernel's report of revoked pins (`crate::revocation`).
//!
//! The platform part of bring-up (firmware, PCI, units) is `vtd_platform` below on x86 and
//! `crate::arm` on aarch64; both hand back a [`Platform`], the rest is common.
//!
//! Both threads hold the one lock while they touch the state and never while they block in
//! the kernel. The lock yields instead of spinning: with one CPU, a spinning waiter would only
//! burn the time slice the holder needs to finish.

use alloc::vec::Vec;
use iommu_abi::kernel_ipc;
use iommu_abi::Access;
use iommu_core::{ClientId, FaultDelivery, Server, ServerConfig};
use kernel_abi::{ObjectType, Rights, Syscall};
use userlib::{println, syscall};

use crate::discovery::PciFunction;
use crate::kernel_iface::{DeviceRegistry, KernelMemory};
use crate::layout::{self, PAGE};
use crate::slots;
use crate::status::{self, StatusPage};

#[cfg(target_arch = "x86_64")]
pub type Backend = crate::vtd_backend::VtdBackend;
#[cfg(target_arch = "aarch64")]
pub use crate::arm::Backend;

pub type IommuServer = Server<Backend, KernelMemory>;

/// What the platform's bring-up hands the common part: the backend with its units up (every
/// device blocked, fault interrupts bound to `EVENTS`), and the enumerated PCI functions.
pub struct Platform {
    pub backend: Backend,
    pub devices: DeviceRegistry,
    /// The firmware describes an IOMMU (a DMAR table; an SMMUv3 node).
    pub iommu_described: bool,
}

/// A connected client's message window: a page of the server's own, in slot
/// `window_slot(badge)`, mapped at `virt`; the client holds a copy lent at connect.
struct Window {
    virt: u64,
    /// The slot of the notification the client subscribed for its faults, if any.
    fault_notification: Option<u64>,
}

/// Rights of the window copy a client is lent: it may map the page and copy the capability,
/// but not send it on (no GRANT), so the page is shared with this client and no one else.
const WINDOW_RIGHTS: Rights = Rights::READ.union(Rights::WRITE).union(Rights::DERIVE);

/// The slot of client `badge`'s window (`badge` in 1..=MAX_CLIENTS).
fn window_slot(badge: u64) -> u64 {
    slots::WINDOW_BASE + badge - 1
}

/// The connected clients' windows, indexed by badge (1..=MAX_CLIENTS): every request looks its
/// window up.
struct Windows {
    by_badge: [Option<Window>; slots::MAX_CLIENTS as usize + 1],
    open: u64,
}

impl Windows {
    const fn new() -> Self {
        Windows { by_badge: [const { None }; slots::MAX_CLIENTS as usize + 1], open: 0 }
    }

    fn get(&self, badge: u64) -> Option<&Window> {
        self.by_badge.get(usize::try_from(badge).ok()?)?.as_ref()
    }

    fn get_mut(&mut self, badge: u64) -> Option<&mut Window> {
        self.by_badge.get_mut(usize::try_from(badge).ok()?)?.as_mut()
    }

    fn contains(&self, badge: u64) -> bool {
        self.get(badge).is_some()
    }

    /// Opens `badge`'s window (the caller checked 1..=MAX_CLIENTS and that none is open).
    fn insert(&mut self, badge: u64, window: Window) {
        self.by_badge[badge as usize] = Some(window);
        self.open += 1;
    }

    fn remove(&mut self, badge: u64) -> Option<Window> {
        let window = self.by_badge.get_mut(usize::try_from(badge).ok()?)?.take()?;
        self.open -= 1;
        Some(window)
    }
}

pub struct State {
    pub server: IommuServer,
    pub devices: DeviceRegistry,
    pub status: StatusPage,
    windows: Windows,
    /// Empty slots to receive the next capability into (a subscription keeps the slot it came in).
    free_receive_slots: Vec<u64>,
    receive_slot: u64,
    iommu_described: bool,
}

// SAFETY: the state holds raw pointers only into mappings (registers, DMA tables, windows, the
// status page) that are process-wide and live as long as the process; the two threads that
// share it access it only under `STATE`'s lock.
unsafe impl Send for State {}

/// Yields the CPU while waiting for the lock (see the module documentation).
pub struct YieldRelax;

impl spin::RelaxStrategy for YieldRelax {
    fn relax() {
        syscall::yield_now();
    }
}

static STATE: spin::mutex::Mutex<Option<State>, YieldRelax> = spin::mutex::Mutex::new(None);

pub fn install(state: State) {
    *STATE.lock() = Some(state);
}

/// Runs `f` on the state under the lock.
pub fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    let mut guard = STATE.lock();
    f(guard.as_mut().expect("state installed before any thread uses it"))
}

pub fn map_status_page() -> StatusPage {
    let writable = syscall::cap_info(slots::STATUS_PAGE)
        .is_ok_and(|(kind, rights, _)| ObjectType::from_u64(kind) == Some(ObjectType::Memory) && Rights::from_bits_retain(rights).contains(Rights::READ.union(Rights::WRITE)));
    if writable && syscall::mem_map(slots::STATUS_PAGE, layout::STATUS, 0, 1, kernel_abi::MapFlags::WRITE).is_ok() {
        // SAFETY: just mapped writable, never unmapped.
        unsafe { StatusPage::at(layout::STATUS as *mut u64) }
    } else {
        StatusPage::absent()
    }
}

pub fn report_failure() {
    map_status_page().set(status::STATE, status::STATE_FAILED);
}

/// Discovery and bring-up (module documentation of `main`): `platform` brings the firmware's
/// IOMMUs and PCI functions up, the rest is the same on every platform.
pub fn bring_up(status: StatusPage, platform: impl FnOnce(&StatusPage) -> Result<Platform, &'static str>) -> Result<State, &'static str> {
    // First: the platform binds the fault interrupts to it.
    syscall::notification_create(slots::EVENTS).map_err(|_| "no notification")?;
    let Platform { backend, devices, iommu_described } = platform(&status)?;
    for badge in 1..=slots::MAX_CLIENTS {
        let slot = slots::CLIENT_PROCESS_BASE + badge;
        if syscall::cap_info(slot).is_ok() {
            let watched = syscall::raw_call(Syscall::ProcessWatch as u64, [slot, slots::EVENTS, badge, 0, 0, 0]);
            if watched != 0 {
                println!("iommu-server: cannot watch the process of client {badge} (status {watched})");
            }
        }
    }
    let server = Server::new(backend, KernelMemory::new(slots::DMA_AUTHORITY), ServerConfig { max_clients: slots::MAX_CLIENTS + 1, ..ServerConfig::default() });
    let receive_slots: Vec<u64> = (slots::RECEIVE_BASE..slots::RECEIVE_BASE + slots::RECEIVE_SLOTS).rev().collect();
    let mut state = State {
        server,
        devices,
        status,
        windows: Windows::new(),
        free_receive_slots: receive_slots,
        receive_slot: 0,
        iommu_described,
    };
    state.receive_slot = state.free_receive_slots.pop().expect("receive slots");
    Ok(state)
}

/// Prints the enumerated functions, their unit and BARs.
pub fn print_functions(functions: &[PciFunction]) {
    for function in functions {
        let unit = function.unit.map_or(alloc::string::String::from("untranslated"), |u| alloc::format!("unit {u}"));
        println!(
            "iommu-server: pci {} {:04x}:{:04x} class {:06x} rid {:#06x} {unit}, {} memory BARs",
            function.address,
            function.vendor,
            function.device,
            function.class,
            function.requester_id(),
            function.bars.len()
        );
        for bar in &function.bars {
            println!("iommu-server:   BAR{} {:#x} size {:#x}", bar.index, bar.base, bar.size);
        }
    }
}

/// The x86 platform: ACPI (DMAR, MCFG), PCI as the firmware assigned it, VT-d units.
#[cfg(target_arch = "x86_64")]
pub mod vtd_platform {
    use alloc::vec::Vec;
    use iommu_abi::{Access, FaultReason};
    use iommu_core::{FaultDelivery, FaultEvent, RequesterId, UnitId};
    use userlib::{println, syscall};
    use vtd::{AccessKind, FaultKind};

    use super::{Platform, State};
    use crate::discovery::{self, Ecam, FirmwareMemory};
    use crate::hw::DmaPool;
    use hwio::VolatileRegion;
    use crate::kernel_iface::DeviceRegistry;
    use crate::layout::{self, PAGE};
    use crate::slots;
    use crate::status::{self, StatusPage};
    use crate::vtd_backend::{Unit, VtdBackend};

    pub fn bring_up(status: &StatusPage) -> Result<Platform, &'static str> {
        let firmware_memory = FirmwareMemory::from_slots();
        println!("iommu-server: {} firmware regions", firmware_memory.region_count());
        let firmware = discovery::read_firmware(&firmware_memory)?;
        let mut ecam = match firmware.mcfg.as_ref() {
            Some(mcfg) => Some(Ecam::new(mcfg)?),
            None => None,
        };
        let mut functions = ecam.as_mut().map(|e| e.enumerate()).unwrap_or_default();
        // The firmware assigns BARs on x86; one it left without an address cannot be used.
        for function in functions.iter_mut() {
            function.bars.retain(|bar| bar.base != 0);
        }
        status.set(status::PCI_FUNCTIONS, functions.len() as u64);
        let mut dma = DmaPool::new(slots::DMA_AUTHORITY, layout::DMA);
        let mut units: Vec<Unit> = Vec::new();
        match firmware.dmar.as_ref() {
            None => println!("iommu-server: no DMAR table: this machine has no VT-d unit, DMA is not remapped"),
            Some(dmar) => {
                status.set(status::IOMMU_DESCRIBED, 1);
                let (vtd_base, vtd_size) = syscall::mmio_info(slots::IOMMU_REGISTERS).map_err(|_| "no VT-d register capability")?;
                let output_bits = dmar.dma_address_width().min(52) as u8;
                // DRHD index → unit index, for matching devices.
                let mut unit_of_drhd: Vec<Option<usize>> = Vec::new();
                for (index, drhd) in dmar.drhds().enumerate() {
                    println!(
                        "iommu-server: DRHD {index}: registers {:#x}, segment {}, {}, {} scopes",
                        drhd.register_base,
                        drhd.segment,
                        if drhd.include_pci_all() { "INCLUDE_PCI_ALL" } else { "explicit scope" },
                        drhd.scopes.len()
                    );
                    let inside = drhd.register_base >= vtd_base && drhd.register_base + PAGE <= vtd_base + vtd_size;
                    if !inside || !units.is_empty() {
                        // One register capability, one mapping window: a second unit would need its own.
                        println!("iommu-server: DRHD {index}: no register capability for it; its devices stay as firmware left them");
                        unit_of_drhd.push(None);
                        continue;
                    }
                    let first_page = (drhd.register_base - vtd_base) / PAGE;
                    syscall::mmio_map(slots::IOMMU_REGISTERS, layout::IOMMU_REGISTERS, first_page, 1).map_err(|_| "cannot map VT-d registers")?;
                    // SAFETY: the page (page-aligned, not 0) was just mapped and stays mapped for the server's life.
                    let regs = unsafe { VolatileRegion::at_address(layout::IOMMU_REGISTERS as usize, PAGE as usize) };
                    let unit = Unit::bring_up(regs, output_bits, &mut dma).map_err(|e| {
                        println!("iommu-server: DRHD {index}: bring-up failed: {e:?}");
                        "VT-d bring-up failed"
                    })?;
                    let (cap, ecap) = (unit.hw.capability().0, unit.hw.extended_capability().0);
                    let (major, minor) = unit.hw.version();
                    println!(
                        "iommu-server: unit {}: VT-d {major}.{minor} CAP {cap:#018x} ECAP {ecap:#018x}, {} translation, caching mode {}, all DMA and interrupts blocked",
                        units.len(),
                        unit.kind.name(),
                        unit.hw.caching_mode()
                    );
                    if units.is_empty() {
                        status.set(status::UNIT0_CAP, cap);
                        status.set(status::UNIT0_ECAP, ecap);
                        status.set(status::UNIT0_MODE, unit.kind.code());
                    }
                    unit_of_drhd.push(Some(units.len()));
                    units.push(unit);
                }
                if let Some(ecam) = ecam.as_mut() {
                    let topology = discovery::EcamTopology { ecam: core::cell::RefCell::new(ecam) };
                    for function in functions.iter_mut() {
                        let matched = dmar.drhd_for_requester(function.address, &topology);
                        let drhd_index = matched.and_then(|m| dmar.drhds().position(|d| core::ptr::eq(d, m.drhd)));
                        function.unit = drhd_index.and_then(|i| unit_of_drhd.get(i).copied().flatten());
                        if let Some(unit) = function.unit {
                            let rmrrs = discovery::rmrrs_for(dmar, function.address, &topology);
                            if !rmrrs.is_empty() {
                                units[unit].rmrrs.insert(function.requester_id(), rmrrs);
                            }
                        }
                    }
                }
            }
        }
        super::print_functions(&functions);
        status.set(status::UNITS, units.len() as u64);

        let mut backend = VtdBackend::new(dma);
        backend.units = units;
        if !backend.units.is_empty() {
            let vector = slots::MSI_VECTOR_BASE + slots::FAULT_MSI_INDEX;
            for unit in backend.units.iter_mut() {
                unit.hw.enable_fault_interrupts(slots::MSI_ADDRESS, vector);
            }
            syscall::irq_bind(slots::FAULT_IRQ, slots::EVENTS, slots::FAULT_EVENT_BIT).map_err(|_| "cannot bind the fault IRQ")?;
        }
        let devices = DeviceRegistry { functions, ecam, pci_window: syscall::mmio_info(slots::PCI_MMIO).ok(), msis: crate::msi::Msis::from_slots() };
        Ok(Platform { backend, devices, iommu_described: firmware.dmar.is_some() })
    }

    impl State {
        /// Drains every unit's fault records into the object model.
        pub fn drain_faults(&mut self) {
            for unit_index in 0..self.server.backend().units.len() {
                let report = self.server.backend_mut().units[unit_index].hw.drain_faults();
                if report.overflowed {
                    println!("iommu-server: unit {unit_index}: fault records overflowed, faults were lost");
                }
                for fault in report.faults {
                    // An interrupt request is a write; its record names the interrupt index it
                    // asked for (bits 63:48) where a DMA fault names the page.
                    let (access, address, reason) = match fault.kind {
                        FaultKind::Dma => {
                            let access = match fault.access {
                                AccessKind::Read => Access::READ,
                                AccessKind::Write => Access::WRITE,
                            };
                            (access, fault.address, fault_reason(fault.reason))
                        }
                        FaultKind::InterruptRemap { index } => (Access::WRITE, u64::from(index), FaultReason::Interrupt),
                    };
                    let event = FaultEvent {
                        unit: UnitId(unit_index as u32),
                        rid: RequesterId(u32::from(fault.requester.0)),
                        // Scalable mode tags DMA without PASID with RID_PASID in the record; to
                        // the object model that is the requester's own (PASID-less) slot.
                        pasid: fault.pasid.filter(|&pasid| pasid != vtd::unit::RID_PASID),
                        iova: address,
                        access,
                        reason,
                        group: 0,
                    };
                    let delivery = self.server.deliver_fault(event);
                    self.notify_fault_owner(delivery);
                    self.record_fault(u64::from(fault.requester.0), address, access, u64::from(fault.reason));
                    if let FaultKind::InterruptRemap { index } = fault.kind {
                        let to = if matches!(delivery, FaultDelivery::Queued { .. }) { "queued to its owner" } else { "not queued" };
                        println!("iommu-server: interrupt refused: unit {unit_index} rid {:#06x} index {index:#x}, reason {:#x} ({}) -> {to}", fault.requester.0, fault.reason, fault.reason_name());
                        continue;
                    }
                    println!(
                        "iommu-server: DMA fault: unit {unit_index} rid {:#06x} {:?} at {:#x}, reason {:#x} ({}) -> {}",
                        fault.requester.0,
                        fault.access,
                        address,
                        fault.reason,
                        fault.reason_name(),
                        match delivery {
                            FaultDelivery::Queued { .. } => "queued to its owner",
                            FaultDelivery::Overflowed => "owner's queue full",
                            FaultDelivery::Unrouted => "no owner (blocked device)",
                        }
                    );
                }
            }
        }
    }

    /// The object-model reason of a VT-d fault reason code. A missing leaf is reported with the
    /// read/write permission codes (5h, 6h; and the first-level equivalents), since no present
    /// entry grants the access: to a driver that is a translation fault (it unmapped, or never
    /// mapped, the address); missing root/context entries only occur for unbound devices, whose
    /// faults are unrouted anyway. Invalid table pointers and reserved bits (7h-Dh) are
    /// table-walk faults.
    fn fault_reason(code: u8) -> FaultReason {
        match code {
            0x07..=0x0d => FaultReason::TableWalk,
            _ => FaultReason::Translation,
        }
    }
}

impl State {
    pub fn mark_ready(&mut self) {
        println!(
            "iommu-server: ready: {} units, {} PCI functions, {}",
            self.server.backend().units.len(),
            self.devices.functions.len(),
            if self.iommu_described { "firmware describes an IOMMU" } else { "firmware describes no IOMMU" }
        );
        #[cfg(target_arch = "x86_64")]
        println!("iommu-server: {} MSI lines to give drivers", self.devices.msis.pool_size());
        self.status.set(status::STATE, status::STATE_READY);
    }

    /// Counts a DMA fault the hardware reported and remembers it as the last one.
    /// The record's words first, the count last: a reader that sees the count move (the kernel
    /// tests poll it between time slices, and the server may be preempted anywhere here) then
    /// reads this record, not the one before.
    pub fn record_fault(&self, rid: u64, address: u64, access: Access, reason: u64) {
        self.status.set(status::LAST_FAULT_RID, rid);
        self.status.set(status::LAST_FAULT_ADDRESS, address);
        self.status.set(status::LAST_FAULT_ACCESS, u64::from(access.bits()));
        self.status.set(status::LAST_FAULT_REASON, reason);
        self.status.add(status::FAULTS, 1);
    }

    fn publish_counters(&self) {
        self.status.set(status::PINNED_PAGES, self.server.pinned_pages() as u64);
        self.status.set(status::OPEN_CLIENTS, self.windows.open);
        self.status.set(status::UNROUTED_FAULTS, self.server.unrouted_faults());
        self.status.set(status::KERNEL_PINS, self.server.memory().kernel_pins() as u64);
        self.status.set(status::OBJECTS, self.server.object_count() as u64);
    }

    /// Handles one transport message; returns the IPC reply status, or `None` if the message
    /// was answered already (a connect answers with the window it lends).
    fn handle(&mut self, badge: u64, words: [u64; 4], cap: Option<u64>) -> Option<u64> {
        // Word 1 of a connect names the client's slot for the window; every other word is 0.
        let stray = words[2] | words[3] | if words[0] == kernel_ipc::CONNECT { 0 } else { words[1] };
        if stray != 0 {
            return Some(kernel_ipc::STATUS_BAD_TRANSPORT);
        }
        let status = match words[0] {
            kernel_ipc::CONNECT => return self.connect(badge, words[1]),
            kernel_ipc::REQUEST => {
                let Some(window) = self.windows.get(badge) else { return Some(kernel_ipc::STATUS_NOT_CONNECTED) };
                let window = window.virt as *mut u64;
                // SAFETY: the window is the server's own page, mapped writable through the
                // server's capability while the client is connected; nothing the client does
                // with its lent copy reaches that mapping.
                let request = unsafe { kernel_ipc::read_window(window) };
                let reply = iommu_core::dispatch(&mut self.server, &mut self.devices, ClientId(badge), &request, cap);
                // SAFETY: as above.
                unsafe { kernel_ipc::write_window(window, &reply) };
                crate::revocation::settle(self);
                reply[0]
            }
            kernel_ipc::SUBSCRIBE_FAULTS => self.subscribe_faults(badge, cap),
            kernel_ipc::DISCONNECT => match self.windows.contains(badge) {
                true => {
                    self.close(badge);
                    0
                }
                false => kernel_ipc::STATUS_NOT_CONNECTED,
            },
            _ => kernel_ipc::STATUS_BAD_TRANSPORT,
        };
        Some(status)
    }

    /// Allocates the client's window page, maps it, and lends the client a copy into
    /// `client_slot` with the answer (`None`); `Some(status)` if that cannot be done, with
    /// nothing kept. The server maps the page through its own capability, from which the
    /// client's copy is derived: whatever the client does with its copy (delete, revoke, unmap)
    /// cannot take the page from the server.
    fn connect(&mut self, badge: u64, client_slot: u64) -> Option<u64> {
        if !(1..=slots::MAX_CLIENTS).contains(&badge) {
            return Some(kernel_ipc::STATUS_TOO_MANY_CLIENTS);
        }
        if self.windows.contains(badge) {
            return Some(kernel_ipc::STATUS_BAD_WINDOW);
        }
        let (slot, virt) = (window_slot(badge), layout::WINDOWS + badge * PAGE);
        if syscall::mem_alloc(1, slot, kernel_abi::MemFlags::empty()).is_err() {
            return Some(kernel_ipc::STATUS_BAD_WINDOW);
        }
        let lent = syscall::mem_map(slot, virt, 0, 1, kernel_abi::MapFlags::WRITE)
            .and_then(|()| syscall::reply_lend(slot, client_slot, WINDOW_RIGHTS, [0, 0, 0]));
        if lent.is_err() {
            // The slot was no empty slot of the client, or the client is gone: it still awaits
            // (or no longer needs) the answer, and gets no window. Deleting the capability also
            // removes the mapping made through it.
            let _ = syscall::cap_delete(slot);
            return Some(kernel_ipc::STATUS_BAD_WINDOW);
        }
        self.windows.insert(badge, Window { virt, fault_notification: None });
        self.server.open_client(ClientId(badge));
        None
    }

    /// Keeps the notification capability `cap` to signal when a fault is queued for the
    /// client (replacing an earlier one).
    fn subscribe_faults(&mut self, badge: u64, cap: Option<u64>) -> u64 {
        let Some(slot) = cap else { return kernel_ipc::STATUS_BAD_NOTIFICATION };
        let Some(window) = self.windows.get_mut(badge) else { return kernel_ipc::STATUS_NOT_CONNECTED };
        let is_notification = syscall::cap_info(slot).is_ok_and(|(kind, rights, _)| {
            ObjectType::from_u64(kind) == Some(ObjectType::Notification) && Rights::from_bits_retain(rights).contains(Rights::WRITE)
        });
        if !is_notification {
            return kernel_ipc::STATUS_BAD_NOTIFICATION;
        }
        // The receive slot now holds the subscription: receive into another from here on.
        let Some(next) = self.free_receive_slots.pop() else { return kernel_ipc::STATUS_TOO_MANY_CLIENTS };
        self.receive_slot = next;
        if let Some(old) = window.fault_notification.replace(slot) {
            let _ = syscall::cap_delete(old);
            self.free_receive_slots.push(old);
        }
        0
    }

    /// Signals the owner of the queue a fault just went to, if it subscribed.
    pub(crate) fn notify_fault_owner(&self, delivery: FaultDelivery) {
        let FaultDelivery::Queued { owner } = delivery else { return };
        if let Some(slot) = self.windows.get(owner.0).and_then(|window| window.fault_notification) {
            // A notification whose other holders are gone still takes the signal; nothing to
            // do if the kernel refuses.
            let _ = syscall::notify_signal(slot, kernel_ipc::FAULT_SIGNAL);
        }
    }

    /// Tears a client down: every object it owns, then its window and subscription. The lent
    /// window copy is revoked first (with any copies the client made and their mappings), so
    /// the page is freed with the server's capability and no client keeps it, or the server's
    /// quota, for later.
    fn close(&mut self, badge: u64) {
        let _ = self.server.close_client(ClientId(badge));
        #[cfg(target_arch = "x86_64")]
        self.devices.release_stale_msis(self.server.backend());
        if let Some(window) = self.windows.remove(badge) {
            let slot = window_slot(badge);
            let _ = syscall::cap_revoke(slot);
            // Deleting the capability removes the server's mapping made through it.
            let _ = syscall::cap_delete(slot);
            if let Some(subscription) = window.fault_notification {
                let _ = syscall::cap_delete(subscription);
                self.free_receive_slots.push(subscription);
            }
        }
    }

    /// The client's process ended: tear down whatever it left.
    fn reap(&mut self, badge: u64) {
        let connected = self.windows.contains(badge);
        if connected {
            self.close(badge);
        }
        let _ = syscall::cap_delete(slots::CLIENT_PROCESS_BASE + badge);
        // Counters first: a reader that sees the client reaped must see its pins gone too.
        self.publish_counters();
        self.status.add(status::CLIENTS_REAPED, 1);
        println!(
            "iommu-server: client {badge} ended{}; {} client pages pinned now",
            if connected { ", its objects torn down" } else { "" },
            self.server.pinned_pages()
        );
    }
}

/// The event thread's body: `arg` is unused.
extern "C" fn event_thread(_arg: u64) -> ! {
    loop {
        let bits = match syscall::notify_wait(slots::EVENTS) {
            Ok(bits) => bits,
            Err(error) => {
                println!("iommu-server: event wait failed: {error:?}");
                syscall::exit(4);
            }
        };
        with(|state| {
            if bits & 1 << slots::FAULT_EVENT_BIT != 0 {
                state.drain_faults();
                let _ = syscall::irq_ack(slots::FAULT_IRQ);
            }
            #[cfg(target_arch = "aarch64")]
            if bits & 1 << slots::GERROR_EVENT_BIT != 0 {
                state.check_global_errors();
                let _ = syscall::irq_ack(slots::GERROR_IRQ);
            }
            // Before reaping: a client's end revokes what it lent, and once it is counted as
            // reaped nothing of it is held any more.
            if bits & 1 << crate::revocation::REVOCATION_EVENT_BIT != 0 {
                crate::revocation::process(state);
            }
            for badge in 1..=slots::MAX_CLIENTS {
                if bits & 1 << badge != 0 {
                    state.reap(badge);
                }
            }
            state.publish_counters();
        });
    }
}

pub fn start_event_thread() -> Result<(), kernel_abi::Error> {
    syscall::mem_alloc(layout::EVENT_STACK_PAGES, slots::EVENT_STACK, kernel_abi::MemFlags::empty())?;
    syscall::mem_map(slots::EVENT_STACK, layout::EVENT_STACK, 0, layout::EVENT_STACK_PAGES, kernel_abi::MapFlags::WRITE)?;
    let top = layout::EVENT_STACK + layout::EVENT_STACK_PAGES * PAGE;
    let entry = event_thread as extern "C" fn(u64) -> ! as usize as u64;
    // The fault thread runs at the start priority (the highest it may have): faults must not
    // wait behind a busy client.
    match syscall::raw_call(Syscall::ThreadCreate as u64, [entry, top, 0, kernel_abi::START_PRIORITY, 0, 0]) {
        0 => Ok(()),
        status => Err(kernel_abi::Error::from_status(status).unwrap_or(kernel_abi::Error::InvalidArgument)),
    }
}

/// The main thread's request loop.
pub fn serve() -> ! {
    // Each answer goes out with the wait for the next request (reply_recv): a client calling
    // again finds the server waiting, and the kernel switches to it directly.
    // `None`: nothing to answer (first receive, or the request was answered already).
    let mut answer: Option<u64> = None;
    let mut slot = with(|state| state.receive_slot);
    loop {
        let received = match answer {
            Some(status) => syscall::reply_recv(slots::REQUESTS, slot, [status, 0, 0, 0]),
            None => syscall::recv(slots::REQUESTS, slot),
        };
        let message = match received {
            Ok(message) => message,
            Err(error) => {
                println!("iommu-server: recv failed: {error:?}");
                syscall::exit(5);
            }
        };
        let cap = message.cap_received.then_some(slot);
        let (status, next_slot) = with(|state| {
            let status = state.handle(message.badge, message.words, cap);
            // A capability that did not become a subscription is not kept: pins hold what they
            // need.
            if cap.is_some() && state.receive_slot == slot {
                let _ = syscall::cap_delete(slot);
            }
            state.status.add(status::REQUESTS, 1);
            state.publish_counters();
            (status, state.receive_slot)
        });
        answer = status;
        slot = next_slot;
    }
}
