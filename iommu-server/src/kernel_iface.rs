//! The object model's kernel interfaces: client memory (`MemorySource`, over `mem_pin`) and
//! device grants (`CapabilityVerifier`, over `mmio_info` and the enumerated BARs).

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use iommu_abi::Error;
use iommu_core::IommuBackend;
use iommu_core::{
    AddressSpace, CapabilityVerifier, ClientId, DeviceGrant, IsolationGroup, MemoryObjectId, MemoryObjectInfo, MemorySource, ObjectId, PinnedPages, RequesterId, UnitId,
};
use kernel_abi::{MapFlags, ObjectType, Rights, MAX_PIN_RANGE};
use userlib::{println, syscall};

use crate::discovery::{Ecam, PciFunction};
use fwtables::dmar::pci::PciAddress;
use crate::layout::{self, PAGE};
use crate::slots;

/// One kernel pin: `pages` pages of an object from the page it is keyed by, of which `in_use`
/// are still pinned in the object model's eyes. The object model unpins page ranges that need
/// not match the ranges it pinned, so a kernel pin is released when its last page is.
struct KernelPin {
    pin: u64,
    pages: u64,
    in_use: u64,
}

/// A kernel pin's key: its object, its first page, and its place in the order pins were taken
/// (a page pinned again while an older pin of it lives on for its other pages gets a second
/// pin starting at the same page).
type PinKey = (MemoryObjectId, u64, u64);

/// Client memory pinned through the kernel: one `mem_pin_range` (one kernel pin) per run of up
/// to `MAX_PIN_RANGE` pages the object model asks for.
///
/// The object model pins a page only while it holds it unpinned, so each page it holds is
/// held by exactly one kernel pin: the newest one covering it (older pins covering the page
/// released it before it was pinned again).
pub struct KernelMemory {
    authority: u64,
    pins: BTreeMap<PinKey, KernelPin>,
    /// Pins taken so far: the third part of the next key.
    taken: u64,
    /// The capability slot `identify` looked at last and what it designates: `pin` is always
    /// called with the capability `identify` just vouched for.
    identified: Option<(u64, MemoryObjectId)>,
}

impl KernelMemory {
    pub fn new(authority: u64) -> Self {
        KernelMemory { authority, pins: BTreeMap::new(), taken: 0, identified: None }
    }

    /// Kernel pins held for client memory.
    pub fn kernel_pins(&self) -> usize {
        self.pins.len()
    }

    /// Whether kernel pin `pin` is still held for client memory.
    pub fn holds(&self, pin: u64) -> bool {
        self.pins.values().any(|held| held.pin == pin)
    }

    fn release(&mut self, key: PinKey) {
        if let Some(held) = self.pins.remove(&key) {
            if let Err(error) = syscall::mem_unpin(held.pin) {
                println!("iommu-server: unpin {} failed: {error:?}", held.pin);
            }
        }
    }

    /// `unpin` of pages `[first, end)` where more than one pin covers the range: each page is
    /// released from the newest pin covering it.
    fn unpin_overlapping(&mut self, object: MemoryObjectId, first: u64, end: u64) {
        let mut emptied: Vec<PinKey> = Vec::new();
        for page in first..end {
            let holder = self
                .pins
                .range((object, 0, 0)..=(object, page, u64::MAX))
                .filter(|(key, held)| key.1 + held.pages > page)
                .max_by_key(|(key, _)| key.2)
                .map(|(&key, _)| key);
            let Some(key) = holder else { continue };
            let held = self.pins.get_mut(&key).expect("found above");
            held.in_use -= 1;
            if held.in_use == 0 {
                emptied.push(key);
            }
        }
        for key in emptied {
            self.release(key);
        }
    }
}

impl MemorySource for KernelMemory {
    fn identify(&mut self, _client: ClientId, memory: u64) -> Result<MemoryObjectInfo, Error> {
        self.identified = None;
        // One question to the kernel: it refuses anything but a memory object the client may
        // read, and tells the capability's rights. The serial names the object whatever
        // capability designates it, and is never reused, so pins recorded under it cannot be
        // confused with a later object's.
        let (serial, pages, rights) = syscall::mem_info(memory).map_err(|_| Error::BadCapability)?;
        let id = MemoryObjectId(serial);
        self.identified = Some((memory, id));
        Ok(MemoryObjectInfo { id, size: pages * PAGE, writable: rights.contains(Rights::WRITE) })
    }

    fn pin(&mut self, _client: ClientId, memory: u64, offset: u64, length: u64) -> Result<PinnedPages, Error> {
        let Some((slot, object)) = self.identified.filter(|&(slot, _)| slot == memory) else {
            return Err(Error::BadCapability);
        };
        let first = offset / PAGE;
        let pages = length / PAGE;
        let mut frames: Vec<u64> = Vec::with_capacity(pages as usize);
        let mut taken: Vec<PinKey> = Vec::new();
        let mut done = 0;
        while done < pages {
            let run = (pages - done).min(MAX_PIN_RANGE);
            // The kernel writes the frames straight into the vector's spare capacity (no
            // zeroing first: every word is written before it counts as part of the vector).
            let out = &mut frames.spare_capacity_mut()[..run as usize];
            match syscall::mem_pin_range_uninit(self.authority, slot, first + done, out) {
                Ok(pin) => {
                    // SAFETY: `mem_pin_range` succeeded, so the kernel wrote all `run` words
                    // after the `done` initialized ones; capacity is `pages` >= done + run.
                    unsafe { frames.set_len((done + run) as usize) };
                    let key = (object, first + done, self.taken);
                    self.taken += 1;
                    self.pins.insert(key, KernelPin { pin, pages: run, in_use: run });
                    taken.push(key);
                }
                Err(error) => {
                    for key in taken {
                        self.release(key);
                    }
                    return Err(match error {
                        kernel_abi::Error::OutOfRange => Error::OutOfObjectRange,
                        kernel_abi::Error::OutOfMemory => Error::NoResources,
                        _ => Error::BadCapability,
                    });
                }
            }
            done += run;
        }
        Ok(PinnedPages { frames })
    }

    /// Maps the pages the words fill at `DIRTY_BITMAP_WINDOW`, writes the words, unmaps.
    fn write_words(&mut self, _client: ClientId, memory: u64, words: &[u64]) -> Result<(), Error> {
        let pages = (words.len() as u64 * 8).div_ceil(PAGE);
        if pages > layout::DIRTY_BITMAP_WINDOW_PAGES {
            return Err(Error::BitmapTooLarge);
        }
        syscall::mem_map(memory, layout::DIRTY_BITMAP_WINDOW, 0, pages, MapFlags::WRITE).map_err(|error| match error {
            kernel_abi::Error::OutOfMemory => Error::NoResources,
            kernel_abi::Error::OutOfRange => Error::OutOfObjectRange,
            kernel_abi::Error::MissingRights => Error::PermissionDenied,
            _ => Error::BadCapability,
        })?;
        let base = layout::DIRTY_BITMAP_WINDOW as *mut u64;
        for (index, &word) in words.iter().enumerate() {
            // SAFETY: the window maps the object's first `pages` pages writable, which hold every
            // word; the window is page-aligned. The client shares these pages, hence volatile
            // writes: nothing here reads them back.
            unsafe { core::ptr::write_volatile(base.add(index), word) };
        }
        if let Err(error) = syscall::unmap(layout::DIRTY_BITMAP_WINDOW, pages) {
            panic!("FATAL: unmapping the dirty-bitmap window failed ({error:?}); the next request would find it taken");
        }
        Ok(())
    }

    /// Maps the pages holding the words read-only at `layout::REQUEST_MEMORY`, copies the
    /// words out and unmaps them again.
    fn read(&mut self, _client: ClientId, memory: u64, offset: u64, words: &mut [u64]) -> Result<(), Error> {
        let (_, pages, _) = syscall::mem_info(memory).map_err(|_| Error::BadCapability)?;
        let bytes = 8 * words.len() as u64;
        let end = offset.checked_add(bytes).ok_or(Error::OutOfObjectRange)?;
        if !offset.is_multiple_of(8) || end > pages * PAGE {
            return Err(Error::OutOfObjectRange);
        }
        if words.is_empty() {
            return Ok(());
        }
        let (first, last) = (offset / PAGE, (end - 1) / PAGE);
        let count = last - first + 1;
        if count > layout::REQUEST_MEMORY_PAGES {
            return Err(Error::InvalidRange);
        }
        syscall::mem_map(memory, layout::REQUEST_MEMORY, first, count, kernel_abi::MapFlags::empty()).map_err(|_| Error::BadCapability)?;
        let base = (layout::REQUEST_MEMORY + offset % PAGE) as *const u64;
        for (index, word) in words.iter_mut().enumerate() {
            // SAFETY: the pages holding `[offset, end)` are mapped at REQUEST_MEMORY from the
            // page of `offset` on, `offset` is 8-byte aligned, and `index` < words.len(), so the
            // word lies inside the mapping. Volatile: the client may write it meanwhile; each
            // word is read once.
            *word = unsafe { core::ptr::read_volatile(base.add(index)) };
        }
        // Mapped through the client's capability, which the server deletes after the request.
        let _ = syscall::unmap(layout::REQUEST_MEMORY, count);
        Ok(())
    }

    fn unpin(&mut self, object: MemoryObjectId, offset: u64, length: u64) {
        let (first, end) = (offset / PAGE, (offset + length) / PAGE);
        let candidates = (object, 0, 0)..(object, end, 0);
        let covers = |key: &PinKey, held: &KernelPin| key.1 + held.pages > first;
        if self.pins.range(candidates.clone()).filter(|(key, held)| covers(key, held)).nth(1).is_some() {
            return self.unpin_overlapping(object, first, end);
        }
        let mut emptied: Vec<PinKey> = Vec::new();
        for (&key, held) in self.pins.range_mut(candidates) {
            let overlap = (key.1 + held.pages).min(end).saturating_sub(key.1.max(first));
            held.in_use -= overlap;
            if overlap > 0 && held.in_use == 0 {
                emptied.push(key);
            }
        }
        for key in emptied {
            self.release(key);
        }
    }
}

/// A device capability's watch (`cap_watch`, taken when the capability is verified for a
/// bind): the pin, the device it was bound as, and what it is.
pub struct DeviceWatch {
    pub pin: u64,
    pub unit: UnitId,
    pub rid: RequesterId,
    /// The function whose capability was verified: behind a PCIe-to-PCI bridge several share
    /// `rid`, and its MSI capability and bus mastering are its own.
    pub function: PciAddress,
    /// The bound device object; `None` until the request that took the watch has ended.
    pub device: Option<ObjectId>,
}

/// Device grants: an MMIO capability of exactly one enumerated BAR names that function.
pub struct DeviceRegistry {
    pub functions: alloc::vec::Vec<PciFunction>,
    pub ecam: Option<Ecam>,
    /// The PCI memory window (base, size): device capabilities must lie inside it.
    pub pci_window: Option<(u64, u64)>,
    /// Watches of the device capabilities verified for binds (`crate::revocation`).
    pub watches: Vec<DeviceWatch>,
    /// Watches of the process address spaces verified for `sva_bind` (their pins, which are
    /// the object model's `AddressSpace::id`; `crate::revocation`).
    pub address_spaces: Vec<u64>,
    /// The devices handed out for binds, reset when they leave their owner (`crate::reset`).
    pub handovers: crate::reset::Handovers,
    /// x86: the MSI line pool and the lines handed out (`crate::msi`).
    #[cfg(target_arch = "x86_64")]
    pub msis: crate::msi::Msis,
    /// arm: the MSIs routed through the ITS (`crate::arm::msi`).
    #[cfg(target_arch = "aarch64")]
    pub msis: crate::arm::msi::ItsMsis,
}

impl DeviceRegistry {
    /// The function bound as (`unit`, `rid`): the one whose capability its watch verified.
    /// One function per requester ID is bound at a time, and `revocation::settle` has run
    /// since the bind.
    fn bound_function(&self, unit: UnitId, rid: RequesterId) -> Result<PciAddress, Error> {
        let watch = self.watches.iter().find(|watch| watch.unit == unit && watch.rid == rid && watch.device.is_some());
        watch.map(|watch| watch.function).ok_or(Error::NotSupported)
    }
}

/// x86: MSIs are the MSI pool's (`crate::msi`), over the configuration space this registry owns.
#[cfg(target_arch = "x86_64")]
impl DeviceRegistry {
    /// See [`crate::msi::Msis::release_stale`].
    pub fn release_stale_msis<B: IommuBackend>(&mut self, backend: &B) {
        let config = crate::msi::ConfigSpace { functions: &self.functions, ecam: self.ecam.as_mut() };
        self.msis.release_stale(config, backend);
    }
}

/// arm: MSIs go through the ITS (`crate::arm::msi`), over the configuration space this
/// registry owns.
#[cfg(target_arch = "aarch64")]
impl DeviceRegistry {
    /// See [`crate::arm::msi::ItsMsis::release_stale`]; `bound` says whether a device is
    /// still bound.
    pub fn release_stale_msis(&mut self, bound: impl Fn(UnitId, RequesterId) -> bool) {
        if self.msis.has_grants() {
            let config = crate::msi::ConfigSpace { functions: &self.functions, ecam: self.ecam.as_mut() };
            self.msis.release_stale(config, bound);
        }
    }
}

impl CapabilityVerifier for DeviceRegistry {
    fn device_grant(&mut self, _client: ClientId, cap: u64) -> Result<DeviceGrant, Error> {
        let (kind, _, _) = syscall::cap_info(cap).map_err(|_| Error::BadCapability)?;
        if ObjectType::from_u64(kind) != Some(ObjectType::Mmio) {
            return Err(Error::BadCapability);
        }
        let (base, size) = syscall::mmio_info(cap).map_err(|_| Error::BadCapability)?;
        let (window_base, window_size) = self.pci_window.ok_or(Error::BadCapability)?;
        if base < window_base || base.saturating_add(size) > window_base + window_size {
            return Err(Error::BadCapability);
        }
        // The function owning the BAR exactly (borrowed apart from `ecam`, which its bus
        // mastering is set through).
        let index = self.functions.iter().position(|f| f.bars.iter().any(|bar| bar.base == base && bar.size == size)).ok_or(Error::BadCapability)?;
        let function = &self.functions[index];
        let unit = function.unit.ok_or(Error::BadCapability)?;
        let rid = function.requester_id();
        // The device's DMA is blocked by the IOMMU from here on until its owner attaches it,
        // so enabling bus mastering (without which it cannot DMA at all) is safe now.
        // Its PASID capability's width bounds the PASIDs it may be attached at (0 without one:
        // edu has none, so its PASID attachments are refused with PasidOutOfRange).
        let mut pasid_bits = 0;
        if let Some(ecam) = self.ecam.as_mut() {
            ecam.set_bus_master(function, true);
            self.handovers.granted(index, UnitId(unit as u32), RequesterId(u32::from(rid)));
            pasid_bits = crate::pasid::enable(ecam, function.address);
        }
        // If the bind this serves succeeds, the device goes when the capability's lender does.
        match syscall::cap_watch(slots::DMA_AUTHORITY, cap) {
            Ok(pin) => self.watches.push(DeviceWatch { pin, unit: UnitId(unit as u32), rid: RequesterId(u32::from(rid)), function: function.address, device: None }),
            Err(error) => println!("iommu-server: cannot watch a device capability: {error:?}"),
        }
        Ok(DeviceGrant { unit: UnitId(unit as u32), rid: RequesterId(u32::from(rid)), pasid_bits })
    }

    /// Functions sharing a requester ID are always in one group, so the grant names it.
    fn device_group(&self, grant: &DeviceGrant) -> Option<IsolationGroup> {
        let function = self.functions.iter().find(|f| f.unit.map(|unit| UnitId(unit as u32)) == Some(grant.unit) && u32::from(f.requester_id()) == grant.rid.0)?;
        Some(IsolationGroup(function.group as u32))
    }

    /// The kernel resolves the capability into the process's table root and a watch, whose
    /// records `crate::revocation` turns into invalidations before it acknowledges them.
    fn address_space(&mut self, _client: ClientId, cap: u64) -> Result<AddressSpace, Error> {
        let watched = syscall::address_space_watch(slots::DMA_AUTHORITY, cap).map_err(|error| match error {
            kernel_abi::Error::InvalidState => Error::Busy,
            _ => Error::BadCapability,
        })?;
        self.address_spaces.push(watched.pin);
        Ok(AddressSpace { id: watched.pin, root: watched.root, mair: watched.attributes })
    }

    #[cfg(target_arch = "x86_64")]
    fn msi_alloc<B: IommuBackend>(&mut self, backend: &mut B, client: ClientId, unit: UnitId, rid: RequesterId, count: u32, first_slot: u64) -> Result<(), Error> {
        let function = self.bound_function(unit, rid)?;
        let config = crate::msi::ConfigSpace { functions: &self.functions, ecam: self.ecam.as_mut() };
        self.msis.allocate(config, backend, client, (unit, rid, function), count, first_slot)
    }

    #[cfg(target_arch = "aarch64")]
    fn msi_alloc<B: IommuBackend>(&mut self, _backend: &mut B, client: ClientId, unit: UnitId, rid: RequesterId, count: u32, first_slot: u64) -> Result<(), Error> {
        let function = self.bound_function(unit, rid)?;
        let config = crate::msi::ConfigSpace { functions: &self.functions, ecam: self.ecam.as_mut() };
        self.msis.allocate(config, client, unit, rid, function, count, first_slot)
    }
}
