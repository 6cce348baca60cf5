//! The server's state, shared by its two threads, and what each thread does with it.
//!
//! * The main thread receives requests and dispatches them (`serve`).
//! * The event thread waits on the `EVENTS` notification: the IOMMU's fault interrupt (each
//!   unit drained through the object model, `ObjectModel::drain_faults`, which says whom to wake),
//!   on arm the SMMU's global-error interrupt, the end of a client process (tear the client
//!   down), and the kernel's report of revoked pins (`crate::revocation`).
//!
//! The platform part of bring-up (firmware, PCI, units) is `crate::x86` or `crate::arm`; both
//! hand back a [`Platform`], the rest is common.
//!
//! Both threads hold the one lock while they touch the state and never while they block in
//! the kernel. The lock yields instead of spinning: with one CPU, a spinning waiter would only
//! burn the time slice the holder needs to finish.

use alloc::vec::Vec;
use iommu_abi::kernel_ipc;
use iommu_abi::{Access, FaultReason};
use iommu_core::{ClientId, ClientLimits, DrainedFault, FaultDelivery, ObjectModel, ServerConfig, UnitId};
use kernel_abi::{ObjectType, Rights, Syscall};
use userlib::{println, syscall};

use crate::hw::Backend;
use crate::kernel_iface::{DeviceRegistry, KernelMemory};
use crate::layout::{self, PAGE};
use crate::slots;
use crate::status::{self, StatusPage};
use iommu_server_contract::limits::{self, Limits};
use hwio::SharedWords;

pub type IommuServer = ObjectModel<Backend, KernelMemory>;

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

    /// Signals the owner of the queue a fault just went to, if it subscribed.
    fn notify_fault_owner(&self, delivery: FaultDelivery) {
        let FaultDelivery::Queued { owner } = delivery else { return };
        if let Some(slot) = self.get(owner.0).and_then(|window| window.fault_notification) {
            // A notification whose other holders are gone still takes the signal; nothing to
            // do if the kernel refuses.
            let _ = syscall::notify_signal(slot, kernel_ipc::FAULT_SIGNAL);
        }
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
    /// Answer unconnected clients `STATUS_SERVER_RESTARTED` (`start::RESTARTED`).
    pub replaces_ended_server: bool,
    /// The limits the system description gives each badge's client (`None`: the defaults).
    own_limits: [Option<ClientLimits>; slots::MAX_CLIENTS as usize + 1],
    windows: Windows,
    /// Empty slots to receive the next capability into (a subscription keeps the slot it came in).
    free_receive_slots: Vec<u64>,
    receive_slot: u64,
    iommu_described: bool,
    /// Faults nobody received that the console was told of (see `drain_faults`).
    undelivered_logged: u32,
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
pub fn bring_up(status: StatusPage, limits: ClientLimits, platform: impl FnOnce(&StatusPage) -> Result<Platform, &'static str>) -> Result<State, &'static str> {
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
    let server = ObjectModel::new(backend, KernelMemory::new(slots::DMA_AUTHORITY), ServerConfig { max_clients: slots::MAX_CLIENTS + 1, limits, ..ServerConfig::default() });
    let receive_slots: Vec<u64> = (slots::RECEIVE_BASE..slots::RECEIVE_BASE + slots::RECEIVE_SLOTS).rev().collect();
    let mut state = State {
        server,
        devices,
        status,
        windows: Windows::new(),
        free_receive_slots: receive_slots,
        receive_slot: 0,
        iommu_described,
        undelivered_logged: 0,
        replaces_ended_server: false,
        own_limits: [None; slots::MAX_CLIENTS as usize + 1],
    };
    state.receive_slot = state.free_receive_slots.pop().expect("receive slots");
    Ok(state)
}

impl State {
    pub fn mark_ready(&mut self) {
        println!(
            "iommu-server: ready: {} units, {} PCI functions, {}",
            self.server.backend().unit_count(),
            self.devices.functions.len(),
            if self.iommu_described { "firmware describes an IOMMU" } else { "firmware describes no IOMMU" }
        );
        #[cfg(target_arch = "x86_64")]
        println!("iommu-server: {} MSI lines to give drivers", self.devices.msis.pool_size());
        #[cfg(target_arch = "aarch64")]
        println!("iommu-server: {}", if self.devices.msis.isolated() { "MSIs through the ITS, isolated per device" } else { "no ITS: drivers get no MSIs" });
        self.status.set(status::STATE, status::STATE_READY);
    }

    /// Drains every unit's faults through the object model into their owners' fault queues,
    /// wakes the owners, and keeps the count and the last fault on the status page. A fault
    /// its owner receives is the owner's to report; the console gets only those nobody
    /// receives, and only the first [`UNDELIVERED_LOG_LINES`] of them, so that a device
    /// faulting without pause neither floods the console nor slows fault delivery.
    fn drain_faults(&mut self) {
        let State { server, windows, status: page, undelivered_logged, .. } = self;
        for unit in 0..server.backend().unit_count() {
            let mut delivered = 0;
            let reported = server.drain_faults(UnitId(unit as u32), &mut |fault, delivery| {
                delivered += 1;
                windows.notify_fault_owner(delivery);
                record_fault(page, fault);
                if !matches!(delivery, FaultDelivery::Queued { .. }) {
                    log_undelivered_fault(fault, delivery, undelivered_logged);
                }
            });
            // Faults naming no device (which the backend only logged) count all the same.
            page.add(status::FAULTS, (reported - delivered) as u64);
        }
        page.set(status::UNROUTED_FAULTS, server.unrouted_faults());
    }

    /// arm: the MSIs of devices unbound since (a destroy, a disconnect, a revoked device
    /// capability, a client's end) leave the ITS (`crate::arm::msi`).
    #[cfg(target_arch = "aarch64")]
    fn release_stale_msis(&mut self) {
        let server = &self.server;
        self.devices.release_stale_msis(|unit, rid| server.bound_device(unit, rid).is_some());
    }

    fn publish_counters(&self) {
        self.status.set(status::PINNED_PAGES, self.server.pinned_pages() as u64);
        self.status.set(status::OPEN_CLIENTS, self.windows.open);
        self.status.set(status::UNROUTED_FAULTS, self.server.unrouted_faults());
        self.status.set(status::KERNEL_PINS, self.server.memory().kernel_pins() as u64);
        self.status.set(status::OBJECTS, self.server.object_count() as u64);
        let charged = self.server.charged();
        self.status.set(status::CHARGED_HANDLES, charged.handles);
        self.status.set(status::CHARGED_AREAS, charged.areas);
        self.status.set(status::CHARGED_PASIDS, charged.pasids);
        self.status.set(status::CHARGED_FAULT_QUEUES, charged.fault_queues);
        self.status.set(status::CHARGED_DOMAINS, charged.domains);
        self.status.set(status::CHARGED_BYTES, charged.bytes);
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
                let Some(window) = self.windows.get(badge) else { return Some(self.not_connected()) };
                let window = window.virt as *mut u64;
                // SAFETY: the window is the server's own page, mapped writable through the
                // server's capability while the client is connected; nothing the client does
                // with its lent copy reaches that mapping.
                let request = unsafe { kernel_ipc::read_window(window) };
                let objects = self.server.object_count();
                let reply = iommu_core::dispatch(&mut self.server, &mut self.devices, ClientId(badge), &request, cap);
                // SAFETY: as above.
                unsafe { kernel_ipc::write_window(window, &reply) };
                crate::revocation::settle(&self.server, &mut self.devices);
                // A device unbound (an object fewer) or a bind tried: before anything else.
                if self.server.object_count() < objects || self.devices.handovers.unsettled() {
                    crate::reset::settle(&self.server, &mut self.devices, &self.status);
                }
                reply[0]
            }
            kernel_ipc::SUBSCRIBE_FAULTS => self.subscribe_faults(badge, cap),
            kernel_ipc::DISCONNECT => match self.windows.contains(badge) {
                true => {
                    self.close(badge);
                    0
                }
                false => self.not_connected(),
            },
            _ => kernel_ipc::STATUS_BAD_TRANSPORT,
        };
        Some(status)
    }

    /// What a client that has not connected to this instance hears.
    fn not_connected(&self) -> u64 {
        if self.replaces_ended_server {
            kernel_ipc::STATUS_SERVER_RESTARTED
        } else {
            kernel_ipc::STATUS_NOT_CONNECTED
        }
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
        match self.own_limits[badge as usize] {
            Some(limits) => self.server.open_client_with_limits(ClientId(badge), limits),
            None => self.server.open_client(ClientId(badge)),
        };
        None
    }

    /// Keeps the notification capability `cap` to signal when a fault is queued for the
    /// client (replacing an earlier one).
    fn subscribe_faults(&mut self, badge: u64, cap: Option<u64>) -> u64 {
        let Some(slot) = cap else { return kernel_ipc::STATUS_BAD_NOTIFICATION };
        let not_connected = self.not_connected();
        let Some(window) = self.windows.get_mut(badge) else { return not_connected };
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

    /// Tears a client down: every object it owns, then its window and subscription. The lent
    /// window copy is revoked first (with any copies the client made and their mappings), so
    /// the page is freed with the server's capability and no client keeps it, or the server's
    /// quota, for later.
    fn close(&mut self, badge: u64) {
        let _ = self.server.close_client(ClientId(badge));
        #[cfg(target_arch = "x86_64")]
        self.devices.release_stale_msis(self.server.backend());
        #[cfg(target_arch = "aarch64")]
        self.release_stale_msis();
        crate::reset::settle(&self.server, &mut self.devices, &self.status);
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

/// Counts a fault the hardware reported and remembers it as the last one. The record's words
/// first, the count last: a reader that sees the count move (the kernel tests poll it between
/// time slices, and the server may be preempted anywhere here) then reads this record, not the
/// one before. Addresses are kept as pages, as VT-d records them; an interrupt fault's is the
/// interrupt index it asked for.
fn record_fault(page: &StatusPage, fault: &DrainedFault) {
    let event = &fault.event;
    let address = if event.reason == FaultReason::Interrupt { event.iova } else { event.iova & !(PAGE - 1) };
    page.set(status::LAST_FAULT_RID, u64::from(event.rid.0));
    page.set(status::LAST_FAULT_ADDRESS, address);
    page.set(status::LAST_FAULT_ACCESS, u64::from(event.access.bits()));
    page.set(status::LAST_FAULT_REASON, u64::from(fault.code));
    page.add(status::FAULTS, 1);
}

/// Console lines the server writes for faults nobody receives; later ones are only counted
/// (status page, `FAULTS` and `UNROUTED_FAULTS`).
const UNDELIVERED_LOG_LINES: u32 = 64;

fn log_undelivered_fault(fault: &DrainedFault, delivery: FaultDelivery, logged: &mut u32) {
    if *logged > UNDELIVERED_LOG_LINES {
        return;
    }
    *logged += 1;
    if *logged > UNDELIVERED_LOG_LINES {
        println!("iommu-server: more faults nobody receives; from here on they are only counted on the status page");
        return;
    }
    let event = &fault.event;
    let to = match delivery {
        FaultDelivery::Queued { .. } => "queued to its owner",
        FaultDelivery::Overflowed => "owner's queue full",
        FaultDelivery::Unrouted => "no owner (blocked device)",
    };
    let (unit, rid, code, name) = (event.unit.0, event.rid.0, fault.code, crate::hw::fault_name(fault));
    if event.reason == FaultReason::Interrupt {
        println!("iommu-server: interrupt refused: unit {unit} rid {rid:#06x} index {:#x}, reason {code:#x} ({name}) -> {to}", event.iova);
        return;
    }
    let access = if event.access.contains(Access::EXEC) {
        "exec"
    } else if event.access.contains(Access::WRITE) {
        "write"
    } else {
        "read"
    };
    println!("iommu-server: DMA fault: unit {unit} rid {rid:#06x} {access} at {:#x}, reason {code:#x} ({name}) -> {to}", event.iova);
}

/// The event thread's body: `arg` is unused.
extern "C" fn event_thread(_arg: u64) -> ! {
    // The fault interrupt is acknowledged with the next wait (one kernel entry for both),
    // once its faults are drained.
    let mut fault_irq_serviced = false;
    loop {
        let waited = match core::mem::take(&mut fault_irq_serviced) {
            true => syscall::irq_ack_and_wait(slots::FAULT_IRQ, slots::EVENTS),
            false => syscall::notify_wait(slots::EVENTS),
        };
        let bits = match waited {
            Ok(bits) => bits,
            Err(error) => {
                println!("iommu-server: event wait failed: {error:?}");
                syscall::exit(4);
            }
        };
        with(|state| {
            if bits & 1 << slots::FAULT_EVENT_BIT != 0 {
                state.drain_faults();
                fault_irq_serviced = true;
            }
            #[cfg(target_arch = "aarch64")]
            if bits & 1 << slots::GERROR_EVENT_BIT != 0 {
                state.server.backend_mut().check_global_errors();
                let _ = syscall::irq_ack(slots::GERROR_IRQ);
            }
            // Only a unit with PRI binds this bit (QEMU's has none): its requests are drained
            // with the faults, and the PRI queue's line acknowledged on its own.
            #[cfg(target_arch = "aarch64")]
            if bits & 1 << slots::PRIQ_EVENT_BIT != 0 {
                state.drain_faults();
                let _ = syscall::irq_ack(slots::PRIQ_IRQ);
            }
            // Before reaping: a client's end revokes what it lent, and once it is counted as
            // reaped nothing of it is held any more.
            let revoked = bits & 1 << crate::revocation::REVOCATION_EVENT_BIT != 0;
            if revoked {
                crate::revocation::process(&mut state.server, &mut state.devices);
                crate::reset::settle(&state.server, &mut state.devices, &state.status);
                #[cfg(target_arch = "aarch64")]
                state.release_stale_msis();
                state.publish_counters();
            }
            // One bit per client badge (1..=MAX_CLIENTS): visit only the set ones.
            let mut ended = bits & ((1 << (slots::MAX_CLIENTS + 1)) - 2);
            while ended != 0 {
                state.reap(u64::from(ended.trailing_zeros()));
                ended &= ended - 1;
            }
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
            #[cfg(target_arch = "aarch64")]
            state.release_stale_msis();
            state.publish_counters();
            (status, state.receive_slot)
        });
        answer = status;
        slot = next_slot;
    }
}

/// The object model's limits for the contract's `limits`.
pub fn client_limits(limits: Limits) -> ClientLimits {
    let Limits { handles, areas, pasids, fault_queues, domains, memory_bytes } = limits;
    ClientLimits { handles, areas, pasids, fault_queues, domains, memory_bytes }
}

impl State {
    /// Takes each client's limits from the page the root task gives (`slots::CLIENT_LIMITS`,
    /// `iommu_server_contract::limits`), if it gave one. The root task checked that their
    /// memory budgets fit the heap; the page is read once and unmapped.
    pub fn read_client_limits(&mut self) {
        if syscall::mem_map(slots::CLIENT_LIMITS, layout::CLIENT_LIMITS, 0, 1, kernel_abi::MapFlags::empty()).is_err() {
            return;
        }
        const WORDS: usize = (slots::MAX_CLIENTS as usize + 1) * limits::WORDS_PER_CLIENT;
        // SAFETY: the page was just mapped readable at layout::CLIENT_LIMITS and stays mapped
        // until the unmap below; the root task does not change it while servers run.
        let page: SharedWords<WORDS> = unsafe { SharedWords::at_address(layout::CLIENT_LIMITS as usize) };
        for badge in 1..=slots::MAX_CLIENTS as usize {
            let first = badge * limits::WORDS_PER_CLIENT;
            if page.read(first) == limits::PRESENT {
                let words = core::array::from_fn(|i| page.read(first + 1 + i));
                self.own_limits[badge] = Some(client_limits(Limits::from_words(words)));
            }
        }
        let _ = syscall::unmap(layout::CLIENT_LIMITS, 1);
    }
}
