//! A recording fake backend and memory source for tests.
//!
//! Both append to one shared [`CallLog`], so a test can check the *relative* order of
//! hardware steps and pin steps (e.g. every unmap precedes the unpin of its pages). Both
//! keep a model of the state they would hold (mapped pages per domain, attachments, pinned
//! pages) and record a *violation* whenever the object model asks for something a real
//! driver or kernel would reject or that would be unsafe: mapping a page twice, freeing a
//! domain that still has mappings or attached devices, attaching an attached device,
//! pinning a page twice, unpinning an unpinned page. Tests assert there are none.
//!
//! Failures can be injected at the Nth fallible call, to test rollback.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;
use iommu_abi::{Error, Invalidation, IovaRange, PageResponseCode, Perm, PAGE_SIZE};

use crate::backend::{
    DomainConfig, DrainedFault, HwDomain, HwDomainId, IommuBackend, MsiMessage, RequesterId, ReservedRegion, Translation, UnitId, UnitInfo,
};
use crate::memory::{MemoryObjectId, MemoryObjectInfo, MemorySource, PinnedPages};
use crate::ClientId;

/// One recorded call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// `domain_alloc` that succeeded.
    DomainAlloc { unit: UnitId, domain: HwDomainId, config: DomainConfig },
    /// `domain_free`.
    DomainFree { domain: HwDomainId },
    /// `map` that succeeded.
    Map { domain: HwDomainId, iova: u64, phys: u64, length: u64, perm: Perm },
    /// `unmap` (including its invalidation).
    Unmap { domain: HwDomainId, iova: u64, length: u64 },
    /// `attach` that succeeded.
    Attach { unit: UnitId, rid: RequesterId, pasid: Option<u32>, translation: Translation },
    /// `replace` that succeeded.
    Replace { unit: UnitId, rid: RequesterId, pasid: Option<u32>, translation: Translation },
    /// `block`.
    Block { unit: UnitId, rid: RequesterId, pasid: Option<u32> },
    /// `invalidate_address_space`.
    InvalidateAddressSpace { unit: UnitId, rid: RequesterId, pasid: Option<u32>, iova: u64, length: u64 },
    /// `release_msis`.
    ReleaseMsis { unit: UnitId, rid: RequesterId },
    /// `set_dirty_tracking` that succeeded.
    SetDirtyTracking { domain: HwDomainId, enable: bool },
    /// `read_and_clear_dirty` that succeeded.
    ReadDirty { domain: HwDomainId, range: IovaRange },
    /// `invalidate_stage1` that succeeded.
    InvalidateStage1 { domain: HwDomainId, entry: Invalidation },
    /// `page_response`.
    PageResponse { unit: UnitId, rid: RequesterId, pasid: Option<u32>, group: u32, code: PageResponseCode },
    /// `pin` that succeeded.
    Pin { object: MemoryObjectId, offset: u64, length: u64 },
    /// `unpin`.
    Unpin { object: MemoryObjectId, offset: u64, length: u64 },
    /// A fallible call that failed because a failure was injected.
    InjectedFailure,
}

/// The log both fakes append to.
pub type CallLog = Rc<RefCell<Vec<Call>>>;

/// Counts fallible calls and fails the chosen one.
#[derive(Default)]
struct FailurePlan {
    calls: usize,
    fail_at: Option<usize>,
}

impl FailurePlan {
    fn next_fails(&mut self) -> bool {
        self.calls += 1;
        self.fail_at == Some(self.calls)
    }

    /// Whether the chosen call is still ahead.
    fn pending(&self) -> bool {
        self.fail_at.is_some_and(|at| at > self.calls)
    }
}

/// A fake IOMMU unit.
#[derive(Clone, Debug)]
pub struct FakeUnit {
    /// Kind and features.
    pub info: UnitInfo,
    /// Aperture of its domains.
    pub aperture: IovaRange,
    /// Page sizes of its domains.
    pub page_sizes: u64,
    /// Reserved regions per device.
    pub reserved: BTreeMap<RequesterId, Vec<ReservedRegion>>,
}

struct FakeDomain {
    pages: BTreeMap<u64, (u64, Perm)>,
    parent: Option<HwDomainId>,
    dirty_tracking: bool,
    dirty: BTreeSet<u64>,
}

/// Where a translation is attached: the device and, if any, its PASID.
pub type AttachSlot = (UnitId, RequesterId, Option<u32>);

/// The fake IOMMU backend.
pub struct FakeBackend {
    log: CallLog,
    units: BTreeMap<UnitId, FakeUnit>,
    failures: FailurePlan,
    next_domain: u64,
    domains: BTreeMap<HwDomainId, FakeDomain>,
    attached: BTreeMap<AttachSlot, Translation>,
    /// Devices with MSIs routed, and how many.
    msi_routes: BTreeMap<(UnitId, RequesterId), usize>,
    /// Faults the units hold until drained, oldest first.
    pending_faults: Vec<DrainedFault>,
    violations: Vec<String>,
}

impl FakeBackend {
    /// A backend with no units, logging to `log`.
    pub fn new(log: CallLog) -> Self {
        FakeBackend {
            log,
            units: BTreeMap::new(),
            failures: FailurePlan::default(),
            next_domain: 1,
            domains: BTreeMap::new(),
            attached: BTreeMap::new(),
            msi_routes: BTreeMap::new(),
            pending_faults: Vec::new(),
            violations: Vec::new(),
        }
    }

    /// Add a unit.
    pub fn add_unit(&mut self, unit: UnitId, fake: FakeUnit) {
        self.units.insert(unit, fake);
    }

    /// Make the `n`th fallible call from now (1 = the next one) fail with
    /// `HardwareFailure`.
    pub fn fail_nth_call(&mut self, n: usize) {
        self.failures.fail_at = Some(self.failures.calls + n);
    }

    /// Unsafe or invalid requests seen so far.
    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    /// Whether a failure `fail_nth_call` chose is still ahead (no call reached it).
    pub fn failure_pending(&self) -> bool {
        self.failures.pending()
    }

    /// Every live translation: (domain, IOVA, physical address, permission) per 4 KiB page,
    /// in order.
    pub fn entries(&self) -> Vec<(HwDomainId, u64, u64, Perm)> {
        self.domains.iter().flat_map(|(&id, domain)| domain.pages.iter().map(move |(&iova, &(phys, perm))| (id, iova, phys, perm))).collect()
    }

    /// Every attached (device, PASID) slot and its translation, in order.
    pub fn attachments(&self) -> Vec<(AttachSlot, Translation)> {
        self.attached.iter().map(|(&slot, &translation)| (slot, translation)).collect()
    }

    /// Live domains, in order.
    pub fn domain_ids(&self) -> Vec<HwDomainId> {
        self.domains.keys().copied().collect()
    }

    /// Number of live domains.
    pub fn live_domains(&self) -> usize {
        self.domains.len()
    }

    /// Number of 4 KiB pages mapped in `domain` (0 if it does not exist).
    pub fn mapped_pages(&self, domain: HwDomainId) -> usize {
        self.domains.get(&domain).map_or(0, |d| d.pages.len())
    }

    /// Total pages mapped in all domains.
    pub fn total_mapped_pages(&self) -> usize {
        self.domains.values().map(|d| d.pages.len()).sum()
    }

    /// What `iova` translates to in `domain`.
    pub fn translate(&self, domain: HwDomainId, iova: u64) -> Option<(u64, Perm)> {
        let (phys, perm) = *self.domains.get(&domain)?.pages.get(&(iova & !(PAGE_SIZE - 1)))?;
        Some((phys + (iova & (PAGE_SIZE - 1)), perm))
    }

    /// What the device (or PASID) is attached to; `None` means blocked.
    pub fn attachment(&self, unit: UnitId, rid: RequesterId, pasid: Option<u32>) -> Option<Translation> {
        self.attached.get(&(unit, rid, pasid)).copied()
    }

    /// Number of attached (not blocked) device/PASID slots.
    /// The devices with MSIs routed, with how many each.
    pub fn msi_routes(&self) -> Vec<((UnitId, RequesterId), usize)> {
        self.msi_routes.iter().map(|(&device, &count)| (device, count)).collect()
    }

    pub fn attached_slots(&self) -> usize {
        self.attached.len()
    }

    /// Simulate a device write at `iova` in a domain tracking dirty bits.
    pub fn mark_dirty(&mut self, domain: HwDomainId, iova: u64) {
        if let Some(d) = self.domains.get_mut(&domain) {
            if d.dirty_tracking {
                d.dirty.insert(iova & !(PAGE_SIZE - 1));
            }
        }
    }

    /// Simulate a unit recording a fault: the next `drain_faults` of its unit hands it over.
    pub fn record_fault(&mut self, fault: DrainedFault) {
        self.pending_faults.push(fault);
    }

    fn record(&self, call: Call) {
        self.log.borrow_mut().push(call);
    }

    fn fail(&mut self) -> bool {
        if self.failures.next_fails() {
            self.record(Call::InjectedFailure);
            true
        } else {
            false
        }
    }

    fn check_translation(&mut self, translation: &Translation) {
        if let Translation::Domain(domain) = translation {
            if !self.domains.contains_key(domain) {
                self.violations.push(format!("attach to unknown domain {domain:?}"));
            }
        }
    }
}

impl IommuBackend for FakeBackend {
    fn unit_info(&self, unit: UnitId) -> Option<UnitInfo> {
        self.units.get(&unit).map(|u| u.info)
    }

    fn reserved_regions(&self, unit: UnitId, rid: RequesterId) -> Vec<ReservedRegion> {
        self.units.get(&unit).and_then(|u| u.reserved.get(&rid)).cloned().unwrap_or_default()
    }

    fn domain_alloc(&mut self, unit: UnitId, config: &DomainConfig) -> Result<HwDomain, Error> {
        if self.fail() {
            return Err(Error::HardwareFailure);
        }
        let fake = self.units.get(&unit).ok_or(Error::NotSupported)?.clone();
        let parent = match config {
            DomainConfig::Paging { .. } => None,
            DomainConfig::Nested { parent, .. } => Some(*parent),
        };
        if let Some(parent) = parent {
            if !self.domains.contains_key(&parent) {
                self.violations.push(format!("nested domain over unknown parent {parent:?}"));
            }
        }
        let id = HwDomainId(self.next_domain);
        self.next_domain += 1;
        self.domains.insert(id, FakeDomain { pages: BTreeMap::new(), parent, dirty_tracking: false, dirty: BTreeSet::new() });
        self.record(Call::DomainAlloc { unit, domain: id, config: *config });
        Ok(HwDomain { id, aperture: fake.aperture, page_sizes: fake.page_sizes })
    }

    /// Refuses ASIDs above 255, as a unit with 8-bit ASIDs would.
    fn invalidate_stage1(&mut self, domain: HwDomainId, entry: Invalidation) -> Result<(), Error> {
        if self.domains.get(&domain).is_none_or(|d| d.parent.is_none()) {
            self.violations.push(format!("stage-1 invalidation of {domain:?}, which is no nested domain"));
            return Err(Error::NotSupported);
        }
        let asid = match entry {
            Invalidation::Stage1Asid { asid } | Invalidation::Stage1Range { asid, .. } => asid,
            Invalidation::ContextDescriptor => 0,
        };
        if asid > 0xff {
            return Err(Error::InvalidRange);
        }
        self.record(Call::InvalidateStage1 { domain, entry });
        Ok(())
    }

    fn domain_free(&mut self, domain: HwDomainId) {
        self.record(Call::DomainFree { domain });
        match self.domains.get(&domain) {
            None => self.violations.push(format!("free of unknown domain {domain:?}")),
            Some(d) if !d.pages.is_empty() => self.violations.push(format!("free of {domain:?} with {} pages mapped", d.pages.len())),
            Some(_) => {}
        }
        if self.attached.values().any(|t| *t == Translation::Domain(domain)) {
            self.violations.push(format!("free of {domain:?} with a device attached"));
        }
        if self.domains.values().any(|d| d.parent == Some(domain)) {
            self.violations.push(format!("free of {domain:?} with nested children"));
        }
        self.domains.remove(&domain);
    }

    fn map(&mut self, domain: HwDomainId, iova: u64, phys: u64, length: u64, perm: Perm) -> Result<(), Error> {
        if self.fail() {
            return Err(Error::HardwareFailure);
        }
        let Some(d) = self.domains.get_mut(&domain) else {
            self.violations.push(format!("map into unknown domain {domain:?}"));
            return Err(Error::HardwareFailure);
        };
        for page in 0..length / PAGE_SIZE {
            let at = iova + page * PAGE_SIZE;
            if d.pages.insert(at, (phys + page * PAGE_SIZE, perm)).is_some() {
                self.violations.push(format!("{domain:?}: IOVA {at:#x} mapped twice"));
            }
        }
        self.record(Call::Map { domain, iova, phys, length, perm });
        Ok(())
    }

    fn unmap(&mut self, domain: HwDomainId, iova: u64, length: u64) {
        self.record(Call::Unmap { domain, iova, length });
        let Some(d) = self.domains.get_mut(&domain) else {
            self.violations.push(format!("unmap from unknown domain {domain:?}"));
            return;
        };
        for page in 0..length / PAGE_SIZE {
            let at = iova + page * PAGE_SIZE;
            if d.pages.remove(&at).is_none() {
                self.violations.push(format!("{domain:?}: unmap of unmapped IOVA {at:#x}"));
            }
        }
    }

    fn attach(&mut self, unit: UnitId, rid: RequesterId, pasid: Option<u32>, translation: Translation) -> Result<(), Error> {
        if self.fail() {
            return Err(Error::HardwareFailure);
        }
        self.check_translation(&translation);
        if self.attached.insert((unit, rid, pasid), translation).is_some() {
            self.violations.push(format!("attach of attached {unit:?}/{rid:?}/{pasid:?}"));
        }
        self.record(Call::Attach { unit, rid, pasid, translation });
        Ok(())
    }

    fn replace(&mut self, unit: UnitId, rid: RequesterId, pasid: Option<u32>, translation: Translation) -> Result<(), Error> {
        if self.fail() {
            return Err(Error::HardwareFailure);
        }
        self.check_translation(&translation);
        if self.attached.insert((unit, rid, pasid), translation).is_none() {
            self.violations.push(format!("replace of unattached {unit:?}/{rid:?}/{pasid:?}"));
        }
        self.record(Call::Replace { unit, rid, pasid, translation });
        Ok(())
    }

    fn block(&mut self, unit: UnitId, rid: RequesterId, pasid: Option<u32>) {
        self.attached.remove(&(unit, rid, pasid));
        self.record(Call::Block { unit, rid, pasid });
    }

    fn invalidate_address_space(&mut self, unit: UnitId, rid: RequesterId, pasid: Option<u32>, iova: u64, length: u64) {
        if !matches!(self.attached.get(&(unit, rid, pasid)), Some(Translation::ProcessAddressSpace(_))) {
            self.violations.push(format!("address-space invalidation of {unit:?}/{rid:?}/{pasid:?}, which is bound to none"));
        }
        self.record(Call::InvalidateAddressSpace { unit, rid, pasid, iova, length });
    }

    fn route_msis(&mut self, unit: UnitId, rid: RequesterId, vectors: &[u8]) -> Result<MsiMessage, Error> {
        if self.fail() {
            return Err(Error::HardwareFailure);
        }
        if self.msi_routes.insert((unit, rid), vectors.len()).is_some() {
            self.violations.push(format!("MSIs of {unit:?}/{rid:?} routed twice"));
        }
        // Remappable format (VT-d 5.1.5.2): handle 0 in address bits 19:5, bit 4 set.
        Ok(MsiMessage { address: 0xFEE0_0010, data: 0 })
    }

    fn msis_routed(&self, unit: UnitId, rid: RequesterId) -> bool {
        self.msi_routes.contains_key(&(unit, rid))
    }

    fn release_msis(&mut self, unit: UnitId, rid: RequesterId) {
        self.msi_routes.remove(&(unit, rid));
        self.record(Call::ReleaseMsis { unit, rid });
    }

    fn set_dirty_tracking(&mut self, domain: HwDomainId, enable: bool) -> Result<(), Error> {
        if self.fail() {
            return Err(Error::HardwareFailure);
        }
        let d = self.domains.get_mut(&domain).ok_or(Error::HardwareFailure)?;
        d.dirty_tracking = enable;
        if !enable {
            d.dirty.clear();
        }
        self.record(Call::SetDirtyTracking { domain, enable });
        Ok(())
    }

    fn read_and_clear_dirty(&mut self, domain: HwDomainId, range: IovaRange, page_size: u64, clear: bool, bitmap: &mut [u64]) -> Result<(), Error> {
        if self.fail() {
            return Err(Error::HardwareFailure);
        }
        let d = self.domains.get_mut(&domain).ok_or(Error::HardwareFailure)?;
        let hits: Vec<u64> = d.dirty.range(range.start..=range.last).copied().collect();
        for page in hits {
            if clear {
                d.dirty.remove(&page);
            }
            let bit = (page - range.start) / page_size;
            bitmap[(bit / 64) as usize] |= 1 << (bit % 64);
        }
        self.record(Call::ReadDirty { domain, range });
        Ok(())
    }

    fn page_response(&mut self, unit: UnitId, rid: RequesterId, pasid: Option<u32>, group: u32, code: PageResponseCode) {
        self.record(Call::PageResponse { unit, rid, pasid, group, code });
    }

    fn drain_faults(&mut self, unit: UnitId, sink: &mut dyn FnMut(DrainedFault)) -> usize {
        let (drained, kept) = core::mem::take(&mut self.pending_faults).into_iter().partition::<Vec<_>, _>(|fault| fault.event.unit == unit);
        self.pending_faults = kept;
        let count = drained.len();
        drained.into_iter().for_each(sink);
        count
    }
}

/// A fake memory object: owned by one client, physically contiguous from `phys_base`, or
/// with its pages in reverse physical order if `scattered` (so no two pages are adjacent).
#[derive(Clone, Copy, Debug)]
pub struct FakeObject {
    /// Identity.
    pub id: MemoryObjectId,
    /// The only client that holds it.
    pub owner: ClientId,
    /// Size in bytes.
    pub size: u64,
    /// Whether devices may write it.
    pub writable: bool,
    /// Physical address of the first (or, scattered, last) page.
    pub phys_base: u64,
    /// Reverse the page order.
    pub scattered: bool,
}

impl FakeObject {
    fn frame(&self, page: u64) -> u64 {
        if self.scattered {
            self.phys_base + (self.size / PAGE_SIZE - 1 - page) * PAGE_SIZE
        } else {
            self.phys_base + page * PAGE_SIZE
        }
    }
}

/// The fake kernel memory interface.
pub struct FakeMemory {
    log: CallLog,
    objects: BTreeMap<u64, FakeObject>,
    pinned: BTreeSet<(MemoryObjectId, u64)>,
    failures: FailurePlan,
    identify_failures: FailurePlan,
    violations: Vec<String>,
    /// The objects' contents, by (capability, byte offset): what the server wrote
    /// (`MemorySource::write_words`) or a test put there (`fill_words`); other words read 0.
    words: BTreeMap<(u64, u64), u64>,
}

impl FakeMemory {
    /// No memory objects, logging to `log`.
    pub fn new(log: CallLog) -> Self {
        FakeMemory {
            log,
            objects: BTreeMap::new(),
            pinned: BTreeSet::new(),
            failures: FailurePlan::default(),
            identify_failures: FailurePlan::default(),
            violations: Vec::new(),
            words: BTreeMap::new(),
        }
    }

    /// The word `write_words` last wrote at byte `offset` of the object `cap` designates
    /// (0 if none).
    pub fn written_word(&self, cap: u64, offset: u64) -> u64 {
        self.words.get(&(cap, offset)).copied().unwrap_or(0)
    }

    /// Make capability `cap` designate `object`.
    pub fn add_object(&mut self, cap: u64, object: FakeObject) {
        self.objects.insert(cap, object);
    }

    /// Put `words` at byte `offset` of the object `cap` designates (what `read` returns).
    pub fn fill_words(&mut self, cap: u64, offset: u64, words: &[u64]) {
        for (index, &word) in words.iter().enumerate() {
            self.words.insert((cap, offset + 8 * index as u64), word);
        }
    }

    /// Make the `n`th `pin` from now fail with `NoResources`.
    pub fn fail_nth_pin(&mut self, n: usize) {
        self.failures.fail_at = Some(self.failures.calls + n);
    }

    /// Make the `n`th `identify` from now fail with `NoResources` (the kernel could not answer).
    pub fn fail_nth_identify(&mut self, n: usize) {
        self.identify_failures.fail_at = Some(self.identify_failures.calls + n);
    }

    /// Whether a failure `fail_nth_pin` or `fail_nth_identify` chose is still ahead.
    pub fn failure_pending(&self) -> bool {
        self.failures.pending() || self.identify_failures.pending()
    }

    /// Every pinned page, as (object, page index), in order.
    pub fn pinned(&self) -> Vec<(MemoryObjectId, u64)> {
        self.pinned.iter().copied().collect()
    }

    /// The physical address of page `page` of `object`, if some capability designates it.
    pub fn frame_of(&self, object: MemoryObjectId, page: u64) -> Option<u64> {
        self.objects.values().find(|candidate| candidate.id == object).map(|found| found.frame(page))
    }

    /// Pages currently pinned, as the kernel sees them.
    pub fn pinned_pages(&self) -> usize {
        self.pinned.len()
    }

    /// Invalid requests seen so far.
    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    fn object(&self, client: ClientId, cap: u64) -> Result<FakeObject, Error> {
        self.objects.get(&cap).filter(|o| o.owner == client).copied().ok_or(Error::BadCapability)
    }
}

impl MemorySource for FakeMemory {
    fn identify(&mut self, client: ClientId, memory: u64) -> Result<MemoryObjectInfo, Error> {
        if self.identify_failures.next_fails() {
            self.log.borrow_mut().push(Call::InjectedFailure);
            return Err(Error::NoResources);
        }
        let object = self.object(client, memory)?;
        Ok(MemoryObjectInfo { id: object.id, size: object.size, writable: object.writable })
    }

    fn pin(&mut self, client: ClientId, memory: u64, offset: u64, length: u64) -> Result<PinnedPages, Error> {
        if self.failures.next_fails() {
            self.log.borrow_mut().push(Call::InjectedFailure);
            return Err(Error::NoResources);
        }
        let object = self.object(client, memory)?;
        if !offset.is_multiple_of(PAGE_SIZE) || !length.is_multiple_of(PAGE_SIZE) || offset + length > object.size {
            self.violations.push(format!("pin of bad range {offset:#x}+{length:#x}"));
            return Err(Error::OutOfObjectRange);
        }
        let mut frames = Vec::new();
        for page in offset / PAGE_SIZE..(offset + length) / PAGE_SIZE {
            if !self.pinned.insert((object.id, page)) {
                self.violations.push(format!("{:?} page {page} pinned twice", object.id));
            }
            frames.push(object.frame(page));
        }
        self.log.borrow_mut().push(Call::Pin { object: object.id, offset, length });
        Ok(PinnedPages { frames })
    }

    fn write_words(&mut self, client: ClientId, memory: u64, words: &[u64]) -> Result<(), Error> {
        let object = self.object(client, memory)?;
        let bytes = words.len() as u64 * 8;
        if !object.writable || bytes > object.size {
            self.violations.push(format!("write of {bytes:#x} bytes the server did not check"));
            return Err(Error::OutOfObjectRange);
        }
        for (index, &word) in words.iter().enumerate() {
            self.words.insert((memory, index as u64 * 8), word);
        }
        Ok(())
    }

    fn read(&mut self, client: ClientId, memory: u64, offset: u64, words: &mut [u64]) -> Result<(), Error> {
        let object = self.object(client, memory)?;
        let end = offset.checked_add(8 * words.len() as u64).ok_or(Error::OutOfObjectRange)?;
        if !offset.is_multiple_of(8) || end > object.size {
            return Err(Error::OutOfObjectRange);
        }
        for (index, word) in words.iter_mut().enumerate() {
            *word = self.words.get(&(memory, offset + 8 * index as u64)).copied().unwrap_or(0);
        }
        Ok(())
    }

    fn unpin(&mut self, object: MemoryObjectId, offset: u64, length: u64) {
        self.log.borrow_mut().push(Call::Unpin { object, offset, length });
        for page in offset / PAGE_SIZE..(offset + length) / PAGE_SIZE {
            if !self.pinned.remove(&(object, page)) {
                self.violations.push(format!("{object:?} page {page} unpinned but not pinned"));
            }
        }
    }
}
