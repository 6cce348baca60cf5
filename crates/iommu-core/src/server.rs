//! The server state and every operation on it.
//!
//! Each public operation follows the same shape, which is what makes "nothing changes on
//! error" hold:
//!
//! 1. resolve handles (existence, type, rights) and validate arguments — no state touched;
//! 2. perform the fallible external steps (pin, backend map/attach/alloc), undoing the
//!    ones already done if a later one fails;
//! 3. commit to the object table, which cannot fail.
//!
//! Teardown runs in the order that keeps devices away from freed memory: devices are
//! blocked before their domain is freed, translations are unmapped (with IOTLB
//! invalidation, inside `IommuBackend::unmap`) before pages are unpinned.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec;
use alloc::vec::Vec;
use iommu_abi::wire::PASID_MAX;
use iommu_abi::{
    Access, DeviceInfo, Error, FaultReason, FaultRecord, Handle, IovaChoice, IovaRange, PageResponseCode, Perm, Rights,
    Stage1Config, UnitCaps, PAGE_SIZE,
};

use crate::budget::{self, ClientLimits, Usage};
use crate::backend::{
    AddressSpace, DomainConfig, HwDomainId, IommuBackend, RequesterId, Translation, UnitId,
};
use crate::iova;
use slot_table::SlotTable;
use crate::memory::{MemorySource, PinTable};
use crate::objects::{
    Area, Attachment, Body, Client, ClientTable, Device, FaultQueue, HandleEntry, HandleRef, Hwpt, HwptParent, Ioas, Object,
    IoasSummary, ObjectId, ObjectKind, PendingRequest, QueuedFault, Registration,
};
use crate::ClientId;

/// Page sizes assumed for IOVA alignment while an IOAS has no domain: 4 KiB, 2 MiB, 1 GiB.
const DEFAULT_PAGE_SIZES: u64 = (1 << 12) | (1 << 21) | (1 << 30);
/// Largest dirty bitmap one query may produce, in pages (a 2 MiB bitmap).
pub const MAX_DIRTY_BITMAP_PAGES: u64 = 1 << 24;

/// A device capability the server has already verified with the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceGrant {
    /// The unit the device sits behind.
    pub unit: UnitId,
    /// Its requester / stream ID.
    pub rid: RequesterId,
    /// PASID bits the device supports (0: none; at most 20).
    pub pasid_bits: u8,
}

/// Options of a paging HWPT.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HwptAllocOptions {
    /// May be the stage-2 parent of nested HWPTs.
    pub nest_parent: bool,
    /// Supports dirty tracking.
    pub dirty_tracking: bool,
    /// Fault queue for faults of devices attached to it.
    pub fault: Option<Handle>,
}

/// A fault the hardware reported, as the server's interrupt loop hands it over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultEvent {
    /// Reporting unit.
    pub unit: UnitId,
    /// Faulting device.
    pub rid: RequesterId,
    /// PASID of the transaction, if any.
    pub pasid: Option<u32>,
    /// Faulting address.
    pub iova: u64,
    /// Kind of access.
    pub access: Access,
    /// Why it faulted.
    pub reason: FaultReason,
    /// Page request group index (for [`FaultReason::PageRequest`]; the backend delivers one
    /// event per group, for its last request, since the response is per group).
    pub group: u32,
}

/// Where a fault went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultDelivery {
    /// Queued in a fault queue of `owner` (whom the server then notifies).
    Queued { owner: ClientId },
    /// The queue was full; counted in its overflow count (a page request was answered
    /// `Invalid` so the device does not wait forever).
    Overflowed,
    /// No queue: unknown device, no attachment for the PASID, or no fault queue on the
    /// attachment. Counted server-wide; a page request was answered `Invalid`.
    Unrouted,
}

/// The result of reading a fault queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultReadout {
    /// Records, oldest first.
    pub records: Vec<FaultRecord>,
    /// Faults lost to overflow since the previous read.
    pub overflow: u64,
}

/// Tunables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// Records a fault queue holds before it overflows.
    pub fault_queue_depth: usize,
    /// Highest PASID the server hands out (PASID 0 is never handed out: it is the
    /// "no PASID" requester-ID entry on both VT-d and SMMUv3).
    pub max_pasid: u32,
    /// Client ids are below this (they index the client table).
    pub max_clients: u64,
    /// What each client may hold (see [`budget`]).
    pub limits: ClientLimits,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig { fault_queue_depth: 64, max_pasid: PASID_MAX, max_clients: 64, limits: ClientLimits::default() }
    }
}

/// Server-wide counters ([`Server::counters`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// The sum of every client's [`Usage`].
    pub charged: Usage,
    /// Live objects.
    pub objects: u64,
    /// Handles in all tables.
    pub handles: u64,
    /// Distinct pinned pages.
    pub pinned_pages: u64,
    /// Allocated PASIDs.
    pub pasids: u64,
    /// Bound devices.
    pub bound_devices: u64,
    /// Faults that had no queue to go to.
    pub unrouted_faults: u64,
}

/// The IOMMU server's object model: every client's objects and handles, the pin table,
/// and the hardware and kernel interfaces it drives.
pub struct Server<B: IommuBackend, M: MemorySource> {
    backend: B,
    memory: M,
    config: ServerConfig,
    clients: ClientTable,
    pub(crate) objects: SlotTable<ObjectId, Object>,
    /// Every HWPT by what it translates through (see `objects`).
    hwpts_by_parent: BTreeSet<(HwptParent, ObjectId)>,
    /// Advanced by every change that can alter an IOAS summary (HWPTs created or destroyed,
    /// attachments, allowed ranges): cached summaries of older epochs are recomputed.
    topology_epoch: u64,
    pins: PinTable,
    pub(crate) bound_devices: BTreeMap<(UnitId, RequesterId), ObjectId>,
    pasid_owners: BTreeMap<u32, ClientId>,
    last_pasid: u32,
    unrouted_faults: u64,
}

/// One contiguous piece of a mapping: its IOVA, frames and permission.
struct Segment<'a> {
    iova: u64,
    frames: &'a [u64],
    perm: Perm,
}

/// Map `frames` at `iova` in physically contiguous runs; on error unmap what this call
/// mapped.
fn map_frames<B: IommuBackend>(backend: &mut B, domain: HwDomainId, segment: &Segment) -> Result<(), Error> {
    let mut done = 0usize;
    while done < segment.frames.len() {
        let run = contiguous_run(&segment.frames[done..]);
        let iova = segment.iova + done as u64 * PAGE_SIZE;
        if let Err(error) = backend.map(domain, iova, segment.frames[done], run as u64 * PAGE_SIZE, segment.perm) {
            if done > 0 {
                backend.unmap(domain, segment.iova, done as u64 * PAGE_SIZE);
            }
            return Err(error);
        }
        done += run;
    }
    Ok(())
}

/// How many frames from the first on are physically consecutive pages (at least 1 for a
/// non-empty slice). Client memory is often one contiguous object, so whole chunks are checked
/// with a branch-free fold the compiler vectorizes, and only a chunk with a break is searched
/// frame by frame.
fn contiguous_run(frames: &[u64]) -> usize {
    const CHUNK: usize = 64;
    let Some(&first) = frames.first() else { return 0 };
    let expected = |index: usize| first.wrapping_add(index as u64 * PAGE_SIZE);
    let mut checked = 0;
    for chunk in frames.chunks(CHUNK) {
        let differs = chunk.iter().enumerate().fold(0u64, |acc, (i, &frame)| acc | (frame ^ expected(checked + i)));
        if differs != 0 {
            let broken = chunk.iter().enumerate().position(|(i, &frame)| frame != expected(checked + i)).expect("a frame differs");
            return checked + broken;
        }
        checked += chunk.len();
    }
    checked
}

/// Map every segment into every domain; on error unmap everything this call mapped.
fn map_segments<B: IommuBackend>(backend: &mut B, domains: &[HwDomainId], segments: &[Segment]) -> Result<(), Error> {
    for (domain_index, &domain) in domains.iter().enumerate() {
        for (segment_index, segment) in segments.iter().enumerate() {
            if let Err(error) = map_frames(backend, domain, segment) {
                unmap_segments_mapped(backend, domains, segments, domain_index, segment_index);
                return Err(error);
            }
        }
    }
    Ok(())
}

/// The rollback of `map_segments` when segment `segment_index` failed in domain `domain_index`
/// (out of line, so that the successful map does not pay for its frame).
#[cold]
#[inline(never)]
fn unmap_segments_mapped<B: IommuBackend>(backend: &mut B, domains: &[HwDomainId], segments: &[Segment], domain_index: usize, segment_index: usize) {
    for done in &segments[..segment_index] {
        backend.unmap(domains[domain_index], done.iova, done.frames.len() as u64 * PAGE_SIZE);
    }
    for &earlier in &domains[..domain_index] {
        for done in segments {
            backend.unmap(earlier, done.iova, done.frames.len() as u64 * PAGE_SIZE);
        }
    }
}

fn check_aligned_length(length: u64) -> Result<(), Error> {
    if length == 0 {
        return Err(Error::ZeroLength);
    }
    if length % PAGE_SIZE != 0 {
        return Err(Error::Unaligned);
    }
    Ok(())
}

/// The checks every map makes of the range it takes pages from (an offset in a memory object,
/// or the source IOVA of a copy): some access, a non-empty, page-aligned length at a
/// page-aligned start, no wrap. Returns the end of the range.
fn check_map_range(perm: Perm, offset: u64, length: u64) -> Result<u64, Error> {
    check_perm(perm)?;
    check_aligned_length(length)?;
    if offset % PAGE_SIZE != 0 {
        return Err(Error::Unaligned);
    }
    offset.checked_add(length).ok_or(Error::Overflow)
}

/// Whether a range ending at `object_end` lies in an object of `size` bytes that allows `perm`.
fn check_within_object(object_end: u64, size: u64, writable: bool, perm: Perm) -> Result<(), Error> {
    if object_end > size {
        return Err(Error::OutOfObjectRange);
    }
    if perm.write && !writable {
        return Err(Error::PermissionDenied);
    }
    Ok(())
}

fn check_perm(perm: Perm) -> Result<(), Error> {
    if perm.read || perm.write {
        Ok(())
    } else {
        Err(Error::BadPermissions)
    }
}

/// The largest page size in `page_sizes` not above `length`, at least 4 KiB.
fn alignment_for(length: u64, page_sizes: u64) -> u64 {
    let highest_bit = 63 - length.leading_zeros();
    let fitting = if highest_bit == 63 { u64::MAX } else { (1u64 << (highest_bit + 1)) - 1 };
    let candidates = page_sizes & fitting & !(PAGE_SIZE - 1);
    if candidates == 0 {
        PAGE_SIZE
    } else {
        1 << (63 - candidates.leading_zeros())
    }
}

/// Choose (auto) or check (fixed) the IOVA range of a new mapping of `length` bytes in `ioas`,
/// whose summary is current.
#[inline]
fn place(ioas: &Ioas, choice: IovaChoice, length: u64) -> Result<IovaRange, Error> {
    let summary = ioas.summary();
    match choice {
        IovaChoice::Fixed(start) => {
            if start % PAGE_SIZE != 0 {
                return Err(Error::Unaligned);
            }
            let range = IovaRange::from_start_len(start, length)?;
            if !iova::covered_by(&summary.permitted, &range) {
                return Err(Error::OutsideAperture);
            }
            if summary.reserved.iter().any(|reserved| reserved.intersects(&range)) {
                return Err(Error::ReservedRegion);
            }
            if ioas.overlaps_area(&range) {
                return Err(Error::Overlap);
            }
            Ok(range)
        }
        IovaChoice::Auto => place_anywhere(ioas, length),
    }
}

/// `place` for [`IovaChoice::Auto`]: the lowest free range, aligned to the largest page size
/// that fits the length (out of line: it builds range lists, which the fixed case never does).
#[inline(never)]
fn place_anywhere(ioas: &Ioas, length: u64) -> Result<IovaRange, Error> {
    let summary = ioas.summary();
    let usable = iova::subtract(&summary.permitted, &summary.reserved);
    let free = iova::subtract(&usable, &ioas.area_ranges());
    let align = alignment_for(length, summary.page_sizes);
    let start = iova::find_free(&free, length, align).ok_or(Error::NoIovaSpace)?;
    IovaRange::from_start_len(start, length)
}

#[inline]
fn ioas_in(objects: &SlotTable<ObjectId, Object>, id: ObjectId) -> &Ioas {
    match &objects[id].body {
        Body::Ioas(ioas) => ioas,
        _ => panic!("object {id:?} is not an IOAS"),
    }
}

/// The IOAS `id` and its owner (who is charged for its areas), from one lookup.
#[inline]
fn owned_ioas_in(objects: &SlotTable<ObjectId, Object>, id: ObjectId) -> (ClientId, &Ioas) {
    match &objects[id] {
        Object { owner, body: Body::Ioas(ioas) } => (*owner, ioas),
        _ => panic!("object {id:?} is not an IOAS"),
    }
}

/// `owned_ioas_in`, mutably.
#[inline]
fn owned_ioas_in_mut(objects: &mut SlotTable<ObjectId, Object>, id: ObjectId) -> (ClientId, &mut Ioas) {
    match objects.get_mut(id).expect("live object") {
        Object { owner, body: Body::Ioas(ioas) } => (*owner, ioas),
        _ => panic!("object {id:?} is not an IOAS"),
    }
}

#[inline]
fn ioas_in_mut(objects: &mut SlotTable<ObjectId, Object>, id: ObjectId) -> &mut Ioas {
    match &mut objects.get_mut(id).expect("live object").body {
        Body::Ioas(ioas) => ioas,
        _ => panic!("object {id:?} is not an IOAS"),
    }
}

#[inline]
fn registration_in(objects: &SlotTable<ObjectId, Object>, id: ObjectId) -> &Registration {
    match &objects[id].body {
        Body::Memory(registration) => registration,
        _ => panic!("object {id:?} is not registered memory"),
    }
}

impl<B: IommuBackend, M: MemorySource> Server<B, M> {
    /// A server with no clients.
    pub fn new(backend: B, memory: M, config: ServerConfig) -> Self {
        Server {
            backend,
            memory,
            config,
            clients: ClientTable::default(),
            objects: SlotTable::new(),
            hwpts_by_parent: BTreeSet::new(),
            topology_epoch: 0,
            pins: PinTable::default(),
            bound_devices: BTreeMap::new(),
            pasid_owners: BTreeMap::new(),
            last_pasid: 0,
            unrouted_faults: 0,
        }
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The backend, mutably (e.g. for the interrupt loop to drain its event queue).
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// The memory source.
    pub fn memory(&self) -> &M {
        &self.memory
    }

    /// The memory source, mutably.
    pub fn memory_mut(&mut self) -> &mut M {
        &mut self.memory
    }

    /// Number of live objects of all clients.
    pub fn object_count(&self) -> usize {
        self.objects.len()
    }

    /// Number of distinct pinned pages.
    pub fn pinned_pages(&self) -> usize {
        self.pins.pinned_pages()
    }

    /// Number of handles in `client`'s table (0 for an unknown client).
    pub fn handle_count(&self, client: ClientId) -> usize {
        self.clients.get(client).map_or(0, |c| c.handles.len())
    }

    /// Number of allocated PASIDs.
    pub fn allocated_pasids(&self) -> usize {
        self.pasid_owners.len()
    }

    /// Faults that had no fault queue to go to.
    pub fn unrouted_faults(&self) -> u64 {
        self.unrouted_faults
    }

    /// What `client` holds against its limits (`None` for an unknown client).
    pub fn usage(&self, client: ClientId) -> Option<Usage> {
        Some(self.clients.get(client)?.account.used)
    }

    /// The server-wide counters: what every client holds, summed, and the shared tables.
    pub fn counters(&self) -> Counters {
        Counters {
            charged: self.clients.iter().fold(Usage::default(), |sum, (_, client)| sum.plus(client.account.used)),
            objects: self.objects.len() as u64,
            handles: self.clients.iter().map(|(_, client)| client.handles.len() as u64).sum(),
            pinned_pages: self.pins.pinned_pages() as u64,
            pasids: self.pasid_owners.len() as u64,
            bound_devices: self.bound_devices.len() as u64,
            unrouted_faults: self.unrouted_faults,
        }
    }

    /// Everything the model holds, one line per object, handle table, PASID and consent, in
    /// a stable order: tests compare it before and after a request that must change nothing.
    #[cfg(test)]
    pub(crate) fn state_digest(&self) -> Vec<alloc::string::String> {
        use alloc::format;
        let mut lines = Vec::new();
        for (id, object) in self.objects.iter() {
            let body = match &object.body {
                Body::Ioas(ioas) => format!("IOAS areas {:?} allowed {:?}", ioas.areas.values().collect::<Vec<_>>(), ioas.allowed),
                Body::Hwpt(hwpt) => format!(
                    "HWPT {:?} over {:?} fault {:?} dirty {}/{}",
                    hwpt.domain, hwpt.parent, hwpt.fault, hwpt.dirty_capable, hwpt.dirty_enabled
                ),
                Body::Device(device) => format!("device {:?}/{:?} label {:?} attachments {:?}", device.unit, device.rid, device.label, device.attachments),
                Body::Fault(queue) => format!(
                    "fault queue {:?} awaiting {:?} overflow {}",
                    queue.queued.iter().map(|fault| (fault.record, fault.request)).collect::<Vec<_>>(),
                    queue.awaiting,
                    queue.overflow
                ),
                Body::Memory(registration) => format!("registration {:?} {} bytes, {} mappings", registration.object, registration.size, registration.mappings),
            };
            lines.push(format!("{id:?} of {:?}: {body}", object.owner));
        }
        for (id, client) in self.clients.iter() {
            for (number, entry) in client.handles.iter() {
                lines.push(format!("{id:?} handle {number}: {:?} {:?} parent {:?} derived {:?}", entry.object, entry.rights, entry.parent, entry.derived));
            }
            lines.push(format!("{id:?} PASIDs {:?} accepts {:?} uses {:?}", client.pasids, client.accepts_from, client.account.used));
        }
        lines.push(format!("PASID owners {:?}, bound devices {:?}", self.pasid_owners, self.bound_devices));
        lines
    }

    /// `client`'s handle table: number, object and rights of each handle.
    #[cfg(test)]
    pub(crate) fn handle_table(&self, client: ClientId) -> Vec<(u32, ObjectId, Rights)> {
        self.clients.get(client).map_or_else(Vec::new, |c| c.handles.iter().map(|(number, entry)| (number, entry.object, entry.rights)).collect())
    }

    /// Every area of every IOAS, with the IOAS and its owner.
    #[cfg(test)]
    pub(crate) fn all_areas(&self) -> Vec<(ObjectId, ClientId, Area)> {
        let mut areas = Vec::new();
        for (id, object) in self.objects.iter() {
            if let Body::Ioas(ioas) = &object.body {
                areas.extend(ioas.areas.values().map(|area| (id, object.owner, *area)));
            }
        }
        areas
    }

    /// Every registration: the memory object and its size.
    #[cfg(test)]
    pub(crate) fn registrations(&self) -> Vec<(crate::memory::MemoryObjectId, u64)> {
        self.objects
            .values()
            .filter_map(|object| match &object.body {
                Body::Memory(registration) => Some((registration.object, registration.size)),
                _ => None,
            })
            .collect()
    }

    /// The domain of every paging HWPT and the IOAS it mirrors.
    #[cfg(test)]
    pub(crate) fn paging_domains(&self) -> Vec<(HwDomainId, ObjectId)> {
        self.objects
            .values()
            .filter_map(|object| match &object.body {
                Body::Hwpt(Hwpt { domain, parent: HwptParent::Ioas(ioas), .. }) => Some((domain.id, *ioas)),
                _ => None,
            })
            .collect()
    }

    // ----- clients and handles -----

    /// Register a client (a driver connection). Returns false if it was already open or its
    /// id is not below `ServerConfig::max_clients`.
    pub fn open_client(&mut self, client: ClientId) -> bool {
        if client.0 >= self.config.max_clients || self.clients.get(client).is_some() {
            return false;
        }
        self.clients.open(client);
        true
    }

    fn client(&self, client: ClientId) -> Result<&Client, Error> {
        self.clients.get(client).ok_or(Error::NoSuchClient)
    }

    fn lookup(&self, client: ClientId, handle: Handle) -> Result<(ObjectId, Rights), Error> {
        let entry = self.client(client)?.handles.get(handle.0).ok_or(Error::NoSuchObject)?;
        Ok((entry.object, entry.rights))
    }

    fn resolve(&self, client: ClientId, handle: Handle, kind: ObjectKind, needed: Rights) -> Result<ObjectId, Error> {
        let entry = self.client(client)?.handles.get(handle.0).ok_or(Error::NoSuchObject)?;
        if entry.kind != kind {
            return Err(Error::WrongType);
        }
        if !entry.rights.contains(needed) {
            return Err(Error::MissingRight);
        }
        Ok(entry.object)
    }

    fn resolve_optional(&self, client: ClientId, handle: Option<Handle>, kind: ObjectKind, needed: Rights) -> Result<Option<ObjectId>, Error> {
        handle.map(|handle| self.resolve(client, handle, kind, needed)).transpose()
    }

    /// Fail early, before any external step, if `client` could not receive a new handle (to a
    /// new object).
    fn check_handle_space(&self, client: ClientId) -> Result<(), Error> {
        if self.client(client)?.has_handle_space() && self.objects.next_key().is_some() {
            Ok(())
        } else {
            Err(Error::NoResources)
        }
    }

    /// Take `charge` from `client`'s budget, or `NoResources` with nothing taken.
    fn charge(&mut self, client: ClientId, charge: Usage) -> Result<(), Error> {
        let limits = self.config.limits;
        self.clients.get_mut(client).ok_or(Error::NoSuchClient)?.account.charge(charge, &limits)
    }

    /// Give back what `charge` took.
    fn refund(&mut self, client: ClientId, charge: Usage) {
        self.clients.get_mut(client).expect("charges belong to live clients").account.refund(charge);
    }

    /// Checks that `client` can receive a new object's handle and charges it the handle and
    /// `object` (the object's own charge): the first step of every creation.
    fn charge_new_object(&mut self, client: ClientId, object: Usage) -> Result<(), Error> {
        self.check_handle_space(client)?;
        self.charge(client, budget::HANDLE.plus(object))
    }

    /// Undo `charge_new_object` (a later step failed).
    fn refund_new_object(&mut self, client: ClientId, object: Usage) {
        self.refund(client, budget::HANDLE.plus(object));
    }

    fn install_handle(&mut self, client: ClientId, object: ObjectId, rights: Rights, parent: Option<HandleRef>) -> Handle {
        let kind = self.objects[object].kind();
        let table = self.clients.get_mut(client).expect("handle space was checked for a live client");
        let number = table.handles.insert(HandleEntry { object, kind, rights, parent, derived: Vec::new() });
        Handle(number.expect("handle space was checked"))
    }

    /// Insert an object owned by `client` and give the client a handle with every right.
    fn create(&mut self, client: ClientId, body: Body) -> Handle {
        let hwpt_parent = match &body {
            Body::Hwpt(hwpt) => Some(hwpt.parent),
            _ => None,
        };
        let id = self.objects.insert(Object { owner: client, body }).expect("object space was checked");
        if let Some(parent) = hwpt_parent {
            self.hwpts_by_parent.insert((parent, id));
            self.topology_epoch += 1;
        }
        self.install_handle(client, id, Rights::all(), None)
    }

    /// Put a handle to the object `handle` names, with `rights` (a subset of its rights),
    /// into `recipient`'s table. Needs GRANT.
    pub fn handle_derive(&mut self, client: ClientId, handle: Handle, rights: Rights, recipient: ClientId) -> Result<Handle, Error> {
        let (object, held) = self.lookup(client, handle)?;
        if !held.contains(Rights::GRANT) {
            return Err(Error::MissingRight);
        }
        if !held.contains(rights) {
            return Err(Error::RightsEscalation);
        }
        let consented = recipient == client || self.client(recipient)?.accepts_from.contains(&client);
        if !consented {
            return Err(Error::NotAccepted);
        }
        self.check_handle_space(recipient)?;
        self.charge(recipient, budget::HANDLE)?;
        let parent = HandleRef { client, handle: handle.0 };
        let derived = self.install_handle(recipient, object, rights, Some(parent));
        self.clients
            .get_mut(client)
            .and_then(|c| c.handles.get_mut(handle.0))
            .expect("looked up above")
            .derived
            .push(HandleRef { client: recipient, handle: derived.0 });
        Ok(derived)
    }

    /// Let `from` derive handles into `client`'s table (`accept`), or withdraw that. Until a
    /// client accepts, no other client can put anything into its table. Consent given twice
    /// or withdrawn when not given is no error.
    pub fn handle_accept(&mut self, client: ClientId, from: ClientId, accept: bool) -> Result<(), Error> {
        self.client(client)?;
        if from.0 >= self.config.max_clients {
            return Err(Error::NoSuchClient);
        }
        let known = self.client(client)?.accepts_from.contains(&from);
        if accept && !known {
            self.charge(client, budget::ACCEPTANCE)?;
            self.clients.get_mut(client).expect("checked").accepts_from.insert(from);
        } else if !accept && known {
            self.clients.get_mut(client).expect("checked").accepts_from.remove(&from);
            self.refund(client, budget::ACCEPTANCE);
        }
        Ok(())
    }

    /// Remove `handle` from `client`'s table, and every handle derived from it (in any
    /// client). The object itself stays (its owner can still destroy it).
    pub fn handle_revoke(&mut self, client: ClientId, handle: Handle) -> Result<(), Error> {
        self.lookup(client, handle)?;
        self.revoke(HandleRef { client, handle: handle.0 });
        Ok(())
    }

    fn revoke(&mut self, target: HandleRef) {
        let Some(client) = self.clients.get_mut(target.client) else { return };
        let Some(entry) = client.handles.remove(target.handle) else { return };
        client.account.refund(budget::HANDLE);
        if let Some(parent) = entry.parent {
            if let Some(parent_entry) = self.clients.get_mut(parent.client).and_then(|c| c.handles.get_mut(parent.handle)) {
                parent_entry.derived.retain(|child| *child != target);
            }
        }
        for child in entry.derived {
            self.revoke(child);
        }
    }

    /// Remove an object and every handle to it in every client.
    fn remove_object(&mut self, id: ObjectId) {
        self.topology_epoch += 1;
        let object = self.objects.remove(id).expect("live object");
        self.refund(object.owner, budget::object(&object.body));
        if let Body::Hwpt(hwpt) = object.body {
            self.hwpts_by_parent.remove(&(hwpt.parent, id));
        }
        for client in self.clients.values_mut() {
            let before = client.handles.len();
            client.handles.retain(|_, entry| entry.object != id);
            client.account.refund(budget::HANDLE.times((before - client.handles.len()) as u64));
        }
    }

    // ----- typed access (the IDs come from `resolve` or from other objects, so the
    // object exists and has the type; a mismatch is a bug in this module) -----

    fn ioas(&self, id: ObjectId) -> &Ioas {
        ioas_in(&self.objects, id)
    }

    fn ioas_mut(&mut self, id: ObjectId) -> &mut Ioas {
        ioas_in_mut(&mut self.objects, id)
    }

    fn hwpt(&self, id: ObjectId) -> &Hwpt {
        match &self.objects[id].body {
            Body::Hwpt(hwpt) => hwpt,
            _ => panic!("object {id:?} is not an HWPT"),
        }
    }

    fn hwpt_mut(&mut self, id: ObjectId) -> &mut Hwpt {
        match &mut self.objects.get_mut(id).expect("live object").body {
            Body::Hwpt(hwpt) => hwpt,
            _ => panic!("object {id:?} is not an HWPT"),
        }
    }

    fn device(&self, id: ObjectId) -> &Device {
        match &self.objects[id].body {
            Body::Device(device) => device,
            _ => panic!("object {id:?} is not a device"),
        }
    }

    fn device_mut(&mut self, id: ObjectId) -> &mut Device {
        match &mut self.objects.get_mut(id).expect("live object").body {
            Body::Device(device) => device,
            _ => panic!("object {id:?} is not a device"),
        }
    }

    fn fault_mut(&mut self, id: ObjectId) -> &mut FaultQueue {
        match &mut self.objects.get_mut(id).expect("live object").body {
            Body::Fault(queue) => queue,
            _ => panic!("object {id:?} is not a fault queue"),
        }
    }

    // ----- the dependency graph, derived from the objects -----

    fn hwpts_over(&self, parent: HwptParent) -> Vec<ObjectId> {
        self.hwpts_by_parent.range((parent, ObjectId(0))..=(parent, ObjectId(u64::MAX))).map(|&(_, id)| id).collect()
    }

    fn attachments_to(&self, hwpt: ObjectId) -> Vec<(ObjectId, Option<u32>)> {
        let mut found = Vec::new();
        for (id, object) in self.objects.iter() {
            if let Body::Device(device) = &object.body {
                for (pasid, attachment) in &device.attachments {
                    if *attachment == Attachment::Hwpt(hwpt) {
                        found.push((id, *pasid));
                    }
                }
            }
        }
        found
    }

    fn fault_users(&self, fault: ObjectId) -> (Vec<ObjectId>, Vec<(ObjectId, Option<u32>)>) {
        let mut hwpts = Vec::new();
        let mut binds = Vec::new();
        for (id, object) in self.objects.iter() {
            match &object.body {
                Body::Hwpt(hwpt) if hwpt.fault == Some(fault) => hwpts.push(id),
                Body::Device(device) => {
                    for (pasid, attachment) in &device.attachments {
                        if matches!(attachment, Attachment::Sva { fault: Some(f), .. } if *f == fault) {
                            binds.push((id, *pasid));
                        }
                    }
                }
                _ => {}
            }
        }
        (hwpts, binds)
    }

    /// The IOAS whose mappings the HWPT translates through (its own, or its parent's).
    fn root_ioas(&self, hwpt: ObjectId) -> ObjectId {
        match self.hwpt(hwpt).parent {
            HwptParent::Ioas(ioas) => ioas,
            HwptParent::Hwpt(parent) => self.root_ioas(parent),
        }
    }

    fn ioas_domains(&self, ioas: ObjectId) -> Vec<HwDomainId> {
        self.hwpts_over(HwptParent::Ioas(ioas)).into_iter().map(|hwpt| self.hwpt(hwpt).domain.id).collect()
    }

    /// Reserved regions of every device attached to any HWPT translating through `ioas`.
    fn ioas_reserved(&self, ioas: ObjectId) -> Vec<IovaRange> {
        let mut reserved = Vec::new();
        for object in self.objects.values() {
            if let Body::Device(device) = &object.body {
                let through_ioas = device
                    .attachments
                    .values()
                    .any(|attachment| matches!(attachment, Attachment::Hwpt(hwpt) if self.root_ioas(*hwpt) == ioas));
                if through_ioas {
                    reserved.extend(device.reserved.iter().map(|region| region.range));
                }
            }
        }
        iova::normalize(reserved)
    }

    /// `aperture ∩ allowed`: where mappings may go before reserved regions are removed.
    fn ioas_permitted(&self, ioas: ObjectId) -> Vec<IovaRange> {
        let mut space = vec![IovaRange::ALL];
        for hwpt in self.hwpts_over(HwptParent::Ioas(ioas)) {
            space = iova::intersect(&space, &self.hwpt(hwpt).domain.aperture);
        }
        let allowed = &self.ioas(ioas).allowed;
        if allowed.is_empty() {
            space
        } else {
            iova::intersect_all(&space, allowed)
        }
    }

    fn ioas_page_sizes(&self, ioas: ObjectId) -> u64 {
        self.hwpts_over(HwptParent::Ioas(ioas))
            .into_iter()
            .fold(DEFAULT_PAGE_SIZES, |sizes, hwpt| sizes & self.hwpt(hwpt).domain.page_sizes)
    }

    /// Brings the summary of `ioas` (domains, permitted and reserved ranges) up to date: it is
    /// recomputed only after the topology changed. Maps and unmaps then read it in place
    /// ([`Ioas::summary`]) while they drive the backend.
    #[inline]
    fn refresh_summary(&mut self, ioas: ObjectId) {
        let epoch = self.topology_epoch;
        if self.ioas(ioas).summary.as_ref().is_some_and(|(cached_at, _)| *cached_at == epoch) {
            return;
        }
        self.recompute_summary(ioas);
    }

    /// Out of line: the cache hit above is what every map and unmap runs.
    #[inline(never)]
    fn recompute_summary(&mut self, ioas: ObjectId) {
        let epoch = self.topology_epoch;
        let summary = IoasSummary {
            domains: self.ioas_domains(ioas),
            permitted: self.ioas_permitted(ioas),
            reserved: self.ioas_reserved(ioas),
            page_sizes: self.ioas_page_sizes(ioas),
        };
        self.ioas_mut(ioas).summary = Some((epoch, summary));
    }

    // ----- IOAS -----

    /// Allocate an empty IOAS.
    pub fn ioas_alloc(&mut self, client: ClientId) -> Result<Handle, Error> {
        self.charge_new_object(client, budget::IOAS)?;
        Ok(self.create(client, Body::Ioas(Ioas::default())))
    }

    /// Map `length` bytes at `offset` of the memory capability `memory` into the IOAS,
    /// into every HWPT of it, before returning the IOVA. Needs MAP.
    pub fn ioas_map(
        &mut self,
        client: ClientId,
        ioas: Handle,
        memory: u64,
        offset: u64,
        length: u64,
        choice: IovaChoice,
        perm: Perm,
    ) -> Result<u64, Error> {
        let ioas = self.resolve(client, ioas, ObjectKind::Ioas, Rights::MAP)?;
        let object_end = check_map_range(perm, offset, length)?;
        self.refresh_summary(ioas);
        let range = place(self.ioas(ioas), choice, length)?;
        let info = self.memory.identify(client, memory)?;
        check_within_object(object_end, info.size, info.writable, perm)?;
        let owner = self.objects[ioas].owner;
        let charge = Usage { areas: 1, bytes: budget::area_bytes(length, false), ..Usage::default() };
        self.clients.get_mut(owner).expect("owners are live").account.charge_areas(charge.areas, charge.bytes, &self.config.limits)?;
        let frames = match self.pins.acquire(&mut self.memory, client, memory, info.id, offset, length) {
            Ok(frames) => frames,
            Err(error) => {
                self.refund(owner, charge);
                return Err(error);
            }
        };
        let segment = Segment { iova: range.start, frames: &frames, perm };
        let domains = &ioas_in(&self.objects, ioas).summary().domains;
        if let Err(error) = map_segments(&mut self.backend, domains, core::slice::from_ref(&segment)) {
            self.pins.release(&mut self.memory, info.id, offset, length);
            self.refund(owner, charge);
            return Err(error);
        }
        self.ioas_mut(ioas).areas.insert(range.start, Area { range, object: info.id, offset, perm, registration: None });
        Ok(range.start)
    }

    /// Register the memory object `memory` (a capability received from `client`) for
    /// `ioas_map_registered`: the kernel vouches for it once, and its pages stay pinned until
    /// the registration and the last mapping from it are gone.
    pub fn memory_register(&mut self, client: ClientId, memory: u64) -> Result<Handle, Error> {
        self.check_handle_space(client)?;
        let info = self.memory.identify(client, memory)?;
        if info.size == 0 {
            return Err(Error::ZeroLength);
        }
        let charge = budget::registration(info.size / PAGE_SIZE);
        self.charge_new_object(client, charge)?;
        let frames = match self.pins.acquire(&mut self.memory, client, memory, info.id, 0, info.size) {
            Ok(frames) => frames,
            Err(error) => {
                self.refund_new_object(client, charge);
                return Err(error);
            }
        };
        let registration = Registration { object: info.id, size: info.size, writable: info.writable, frames, mappings: 0 };
        Ok(self.create(client, Body::Memory(registration)))
    }

    /// `ioas_map` from registered memory: the same checks and placement, the pages are already
    /// pinned. Needs MAP on both handles.
    #[allow(clippy::too_many_arguments)]
    pub fn ioas_map_registered(
        &mut self,
        client: ClientId,
        ioas: Handle,
        memory: Handle,
        offset: u64,
        length: u64,
        choice: IovaChoice,
        perm: Perm,
    ) -> Result<u64, Error> {
        let ioas = self.resolve(client, ioas, ObjectKind::Ioas, Rights::MAP)?;
        let memory = self.resolve(client, memory, ObjectKind::Memory, Rights::MAP)?;
        let object_end = check_map_range(perm, offset, length)?;
        self.refresh_summary(ioas);
        let Server { objects, backend, clients, config, .. } = self;
        let registration = registration_in(objects, memory);
        check_within_object(object_end, registration.size, registration.writable, perm)?;
        let (owner, target) = owned_ioas_in(objects, ioas);
        let range = place(target, choice, length)?;
        let pages = (offset / PAGE_SIZE) as usize..(object_end / PAGE_SIZE) as usize;
        let segment = Segment { iova: range.start, frames: &registration.frames[pages], perm };
        let account = &mut clients.get_mut(owner).expect("owners are live").account;
        let area_bytes = budget::area_bytes(length, true);
        account.charge_areas(1, area_bytes, &config.limits)?;
        if let Err(error) = map_segments(backend, &target.summary().domains, core::slice::from_ref(&segment)) {
            account.refund_areas(1, area_bytes);
            return Err(error);
        }
        let object = registration.object;
        if let Body::Memory(registration) = &mut objects.get_mut(memory).expect("resolved above").body {
            registration.mappings += 1;
        }
        ioas_in_mut(objects, ioas).areas.insert(range.start, Area { range, object, offset, perm, registration: Some(memory) });
        Ok(range.start)
    }

    /// Remove an area: unmap it from every domain (the backend invalidates), then unpin.
    pub(crate) fn remove_area(&mut self, ioas: ObjectId, start: u64) -> u64 {
        self.refresh_summary(ioas);
        let Server { objects, backend, pins, memory, clients, .. } = self;
        let (owner, target) = owned_ioas_in_mut(objects, ioas);
        let area = target.areas.remove(&start).expect("area exists");
        for &domain in &target.summary().domains {
            backend.unmap(domain, area.range.start, area.length());
        }
        match area.registration {
            Some(registered) => {
                if let Some(Object { body: Body::Memory(registration), .. }) = objects.get_mut(registered) {
                    registration.mappings -= 1;
                }
            }
            None => pins.release(memory, area.object, area.offset, area.length()),
        }
        let charged = budget::area(&area);
        clients.get_mut(owner).expect("owners are live").account.refund_areas(charged.areas, charged.bytes);
        area.length()
    }

    /// Unmap every mapping inside `[iova, iova + length)`; a mapping that reaches outside
    /// the range fails the whole request with `PartialUnmap`. Needs UNMAP.
    pub fn ioas_unmap(&mut self, client: ClientId, ioas: Handle, iova_start: u64, length: u64) -> Result<u64, Error> {
        let ioas = self.resolve(client, ioas, ObjectKind::Ioas, Rights::UNMAP)?;
        check_aligned_length(length)?;
        if iova_start % PAGE_SIZE != 0 {
            return Err(Error::Unaligned);
        }
        let range = IovaRange::from_start_len(iova_start, length)?;
        let areas = &self.ioas(ioas).areas;
        // The usual request names exactly one area, which is then the only one it touches.
        if areas.get(&range.start).is_some_and(|area| area.range == range) {
            return Ok(self.remove_area(ioas, range.start));
        }
        // Areas do not overlap, so their ends ascend with their starts: walking back from the
        // last area starting inside the range, the first that ends before it ends the search.
        let mut hit: Vec<Area> = areas.range(..=range.last).rev().map(|(_, area)| *area).take_while(|area| area.range.intersects(&range)).collect();
        hit.reverse();
        if hit.is_empty() {
            return Err(Error::NotMapped);
        }
        if hit.iter().any(|area| !range.contains_range(&area.range)) {
            return Err(Error::PartialUnmap);
        }
        Ok(hit.iter().map(|area| self.remove_area(ioas, area.range.start)).sum())
    }

    /// Unmap everything. Needs UNMAP.
    pub fn ioas_unmap_all(&mut self, client: ClientId, ioas: Handle) -> Result<u64, Error> {
        let ioas = self.resolve(client, ioas, ObjectKind::Ioas, Rights::UNMAP)?;
        Ok(self.unmap_everything(ioas))
    }

    fn unmap_everything(&mut self, ioas: ObjectId) -> u64 {
        let starts: Vec<u64> = self.ioas(ioas).areas.keys().copied().collect();
        starts.into_iter().map(|start| self.remove_area(ioas, start)).sum()
    }

    /// Map the pages mapped at `[src_iova, src_iova + length)` of `src` into `dst`, sharing
    /// their pins. The source range must be fully mapped; `perm` may not exceed the source
    /// mappings'. Needs COPY_FROM on `src` and MAP on `dst`.
    #[allow(clippy::too_many_arguments)]
    pub fn ioas_copy(
        &mut self,
        client: ClientId,
        dst: Handle,
        dst_choice: IovaChoice,
        src: Handle,
        src_iova: u64,
        length: u64,
        perm: Perm,
    ) -> Result<u64, Error> {
        let src = self.resolve(client, src, ObjectKind::Ioas, Rights::COPY_FROM)?;
        let dst = self.resolve(client, dst, ObjectKind::Ioas, Rights::MAP)?;
        check_map_range(perm, src_iova, length)?;
        let src_range = IovaRange::from_start_len(src_iova, length)?;
        // Split the source range into pieces of the areas covering it, without holes.
        let mut pieces: Vec<Area> = Vec::new();
        let mut cursor = src_range.start;
        loop {
            let area = self.ioas(src).areas.range(..=cursor).next_back().map(|(_, area)| *area);
            let area = area.filter(|area| area.range.last >= cursor).ok_or(Error::NotMapped)?;
            let last = area.range.last.min(src_range.last);
            pieces.push(Area {
                range: IovaRange { start: cursor, last },
                object: area.object,
                offset: area.offset + (cursor - area.range.start),
                perm: area.perm,
                // A copy takes uses of the pages itself (they are pinned, by the source area
                // or its registration), so it outlives either.
                registration: None,
            });
            if last == src_range.last {
                break;
            }
            cursor = last + 1;
        }
        if pieces.iter().any(|piece| !perm.within(piece.perm)) {
            return Err(Error::PermissionDenied);
        }
        self.refresh_summary(dst);
        let dst_range = place(self.ioas(dst), dst_choice, length)?;
        let shift = |iova: u64| iova - src_range.start + dst_range.start;
        let owner = self.objects[dst].owner;
        let charge = pieces.iter().fold(Usage::default(), |sum, piece| sum.plus(budget::area(piece)));
        self.clients.get_mut(owner).expect("owners are live").account.charge_areas(charge.areas, charge.bytes, &self.config.limits)?;
        let frame_lists: Vec<Vec<u64>> = pieces.iter().map(|piece| self.pins.share(piece.object, piece.offset, piece.length())).collect();
        let segments: Vec<Segment> = pieces
            .iter()
            .zip(&frame_lists)
            .map(|(piece, frames)| Segment { iova: shift(piece.range.start), frames, perm })
            .collect();
        if let Err(error) = map_segments(&mut self.backend, &ioas_in(&self.objects, dst).summary().domains, &segments) {
            for piece in &pieces {
                self.pins.release(&mut self.memory, piece.object, piece.offset, piece.length());
            }
            self.refund(owner, charge);
            return Err(error);
        }
        let areas = &mut self.ioas_mut(dst).areas;
        for piece in pieces {
            let range = IovaRange { start: shift(piece.range.start), last: shift(piece.range.last) };
            areas.insert(range.start, Area { range, object: piece.object, offset: piece.offset, perm, registration: None });
        }
        Ok(dst_range.start)
    }

    /// The usable IOVA ranges: every domain's aperture ∩ allowed ranges − reserved regions
    /// of attached devices. Needs no right.
    pub fn ioas_iova_ranges(&self, client: ClientId, ioas: Handle) -> Result<Vec<IovaRange>, Error> {
        let ioas = self.resolve(client, ioas, ObjectKind::Ioas, Rights::empty())?;
        Ok(iova::subtract(&self.ioas_permitted(ioas), &self.ioas_reserved(ioas)))
    }

    /// Restrict mappings to `ranges` (page-granular; empty lifts the restriction). Fails
    /// if an existing mapping would fall outside. Needs MAP.
    pub fn ioas_allow_iovas(&mut self, client: ClientId, ioas: Handle, ranges: &[IovaRange]) -> Result<(), Error> {
        let ioas = self.resolve(client, ioas, ObjectKind::Ioas, Rights::MAP)?;
        for range in ranges {
            if range.start > range.last {
                return Err(Error::InvalidRange);
            }
            if range.start % PAGE_SIZE != 0 || range.last.wrapping_add(1) % PAGE_SIZE != 0 {
                return Err(Error::Unaligned);
            }
        }
        let allowed = iova::normalize(ranges.to_vec());
        if !allowed.is_empty() && self.ioas(ioas).areas.values().any(|area| !iova::covered_by(&allowed, &area.range)) {
            return Err(Error::AreasOutsideAllowed);
        }
        let owner = self.objects[ioas].owner;
        let (now, then) = (allowed.len(), self.ioas(ioas).allowed.len());
        if now > then {
            self.charge(owner, budget::allowed_ranges(now - then))?;
        } else {
            self.refund(owner, budget::allowed_ranges(then - now));
        }
        self.ioas_mut(ioas).allowed = allowed;
        self.topology_epoch += 1;
        Ok(())
    }

    // ----- HWPT -----

    fn unit_caps(&self, unit: UnitId) -> UnitCaps {
        self.backend.unit_info(unit).map_or(UnitCaps::default(), |info| info.caps)
    }

    /// Allocate a paging HWPT on `device`'s unit mirroring `ioas`: every existing mapping
    /// is mapped into it before it is returned. Needs ATTACH on the device, the IOAS and
    /// the fault queue.
    pub fn hwpt_alloc(&mut self, client: ClientId, device: Handle, ioas: Handle, options: HwptAllocOptions) -> Result<Handle, Error> {
        let device = self.resolve(client, device, ObjectKind::Device, Rights::ATTACH)?;
        let ioas = self.resolve(client, ioas, ObjectKind::Ioas, Rights::ATTACH)?;
        let fault = self.resolve_optional(client, options.fault, ObjectKind::Fault, Rights::ATTACH)?;
        let unit = self.device(device).unit;
        let caps = self.unit_caps(unit);
        // A fault queue is allowed on every unit: it receives the unrecoverable faults of the
        // attached devices everywhere, and page requests only where the unit has them.
        if (options.nest_parent && !caps.contains(UnitCaps::NESTING))
            || (options.dirty_tracking && !caps.contains(UnitCaps::DIRTY_TRACKING))
        {
            return Err(Error::NotSupported);
        }
        self.charge_new_object(client, budget::HWPT)?;
        let config = DomainConfig::Paging { nest_parent: options.nest_parent, dirty_tracking: options.dirty_tracking };
        let domain = match self.backend.domain_alloc(unit, &config) {
            Ok(domain) => domain,
            Err(error) => {
                self.refund_new_object(client, budget::HWPT);
                return Err(error);
            }
        };
        let areas: Vec<Area> = self.ioas(ioas).areas.values().copied().collect();
        if areas.iter().any(|area| !domain.aperture.contains_range(&area.range)) {
            self.backend.domain_free(domain.id);
            self.refund_new_object(client, budget::HWPT);
            return Err(Error::ReservedConflict);
        }
        let frame_lists: Vec<Vec<u64>> = areas.iter().map(|area| self.pins.frames(area.object, area.offset, area.length())).collect();
        let segments: Vec<Segment> = areas
            .iter()
            .zip(&frame_lists)
            .map(|(area, frames)| Segment { iova: area.range.start, frames, perm: area.perm })
            .collect();
        if let Err(error) = map_segments(&mut self.backend, &[domain.id], &segments) {
            self.backend.domain_free(domain.id);
            self.refund_new_object(client, budget::HWPT);
            return Err(error);
        }
        let hwpt = Hwpt {
            unit,
            domain,
            parent: HwptParent::Ioas(ioas),
            fault,
            nest_parent: options.nest_parent,
            dirty_capable: options.dirty_tracking,
            dirty_enabled: false,
        };
        Ok(self.create(client, Body::Hwpt(hwpt)))
    }

    /// Allocate a nested HWPT: the user's stage-1 table over the stage-2 `parent` (a
    /// paging HWPT allocated with `nest_parent`). Needs ATTACH on the device, the parent
    /// and the fault queue.
    pub fn hwpt_alloc_nested(
        &mut self,
        client: ClientId,
        device: Handle,
        parent: Handle,
        stage1: Stage1Config,
        fault: Option<Handle>,
    ) -> Result<Handle, Error> {
        let device = self.resolve(client, device, ObjectKind::Device, Rights::ATTACH)?;
        let parent = self.resolve(client, parent, ObjectKind::Hwpt, Rights::ATTACH)?;
        let fault = self.resolve_optional(client, fault, ObjectKind::Fault, Rights::ATTACH)?;
        let unit = self.device(device).unit;
        let parent_hwpt = self.hwpt(parent);
        if !parent_hwpt.nest_parent || !matches!(parent_hwpt.parent, HwptParent::Ioas(_)) {
            return Err(Error::NotNestParent);
        }
        if parent_hwpt.unit != unit {
            return Err(Error::IncompatibleUnit);
        }
        stage1.validate()?;
        let info = self.backend.unit_info(unit).ok_or(Error::NotSupported)?;
        if !info.caps.contains(UnitCaps::NESTING) || stage1.format.unit_kind() != info.kind {
            return Err(Error::NotSupported);
        }
        let config = DomainConfig::Nested { parent: parent_hwpt.domain.id, stage1 };
        self.charge_new_object(client, budget::HWPT)?;
        let domain = match self.backend.domain_alloc(unit, &config) {
            Ok(domain) => domain,
            Err(error) => {
                self.refund_new_object(client, budget::HWPT);
                return Err(error);
            }
        };
        let hwpt = Hwpt {
            unit,
            domain,
            parent: HwptParent::Hwpt(parent),
            fault,
            nest_parent: false,
            dirty_capable: false,
            dirty_enabled: false,
        };
        Ok(self.create(client, Body::Hwpt(hwpt)))
    }

    /// Switch dirty tracking of a paging HWPT allocated with dirty tracking. Needs DIRTY.
    pub fn hwpt_set_dirty_tracking(&mut self, client: ClientId, hwpt: Handle, enable: bool) -> Result<(), Error> {
        let hwpt = self.resolve(client, hwpt, ObjectKind::Hwpt, Rights::DIRTY)?;
        if !self.hwpt(hwpt).dirty_capable {
            return Err(Error::NotSupported);
        }
        self.backend.set_dirty_tracking(self.hwpt(hwpt).domain.id, enable)?;
        self.hwpt_mut(hwpt).dirty_enabled = enable;
        Ok(())
    }

    /// Read and clear the dirty bits of `[iova_start, iova_start + length)`, one bit per
    /// `page_size` page, from an HWPT or from every HWPT of an IOAS (ORed). Every domain
    /// involved must have tracking on. Needs DIRTY.
    pub fn get_dirty_bitmap(&mut self, client: ClientId, target: Handle, iova_start: u64, length: u64, page_size: u64) -> Result<Vec<u64>, Error> {
        let (id, rights) = self.lookup(client, target)?;
        let kind = self.objects[id].kind();
        if kind != ObjectKind::Hwpt && kind != ObjectKind::Ioas {
            return Err(Error::WrongType);
        }
        if !rights.contains(Rights::DIRTY) {
            return Err(Error::MissingRight);
        }
        if !page_size.is_power_of_two() || page_size < PAGE_SIZE {
            return Err(Error::InvalidPageSize);
        }
        if length == 0 {
            return Err(Error::ZeroLength);
        }
        if iova_start % page_size != 0 || length % page_size != 0 {
            return Err(Error::Unaligned);
        }
        let range = IovaRange::from_start_len(iova_start, length)?;
        let pages = length / page_size;
        if pages > MAX_DIRTY_BITMAP_PAGES {
            return Err(Error::BitmapTooLarge);
        }
        let hwpts = match kind {
            ObjectKind::Hwpt => {
                if !matches!(self.hwpt(id).parent, HwptParent::Ioas(_)) {
                    return Err(Error::NotSupported);
                }
                vec![id]
            }
            _ => self.hwpts_over(HwptParent::Ioas(id)),
        };
        if hwpts.is_empty() || hwpts.iter().any(|&hwpt| !self.hwpt(hwpt).dirty_enabled) {
            return Err(Error::DirtyTrackingOff);
        }
        let mut bitmap = vec![0u64; pages.div_ceil(64) as usize];
        for hwpt in hwpts {
            let domain = self.hwpt(hwpt).domain.id;
            self.backend.read_and_clear_dirty(domain, range, page_size, &mut bitmap)?;
        }
        Ok(bitmap)
    }

    // ----- devices and attachments -----

    /// Bind a verified device grant: the device starts blocked. Fails if bound already.
    pub fn device_bind(&mut self, client: ClientId, grant: DeviceGrant) -> Result<Handle, Error> {
        self.check_handle_space(client)?;
        if self.backend.unit_info(grant.unit).is_none() {
            return Err(Error::BadCapability);
        }
        if self.bound_devices.contains_key(&(grant.unit, grant.rid)) {
            return Err(Error::DeviceAlreadyBound);
        }
        let reserved = self.backend.reserved_regions(grant.unit, grant.rid);
        self.charge_new_object(client, budget::device(reserved.len()))?;
        self.backend.block(grant.unit, grant.rid, None);
        let device = Device {
            unit: grant.unit,
            rid: grant.rid,
            pasid_bits: grant.pasid_bits.min(20),
            label: Handle(0),
            reserved,
            attachments: BTreeMap::new(),
        };
        let handle = self.create(client, Body::Device(device));
        let id = self.client(client).expect("the client just created it").handles[handle.0].object;
        self.device_mut(id).label = handle;
        self.bound_devices.insert((grant.unit, grant.rid), id);
        Ok(handle)
    }

    /// Check that `client` may use `pasid` on `device`.
    fn check_pasid(&self, client: ClientId, device: ObjectId, pasid: Option<u32>) -> Result<(), Error> {
        let Some(pasid) = pasid else { return Ok(()) };
        if self.pasid_owners.get(&pasid) != Some(&client) {
            return Err(Error::NoSuchPasid);
        }
        let device = self.device(device);
        if !self.unit_caps(device.unit).contains(UnitCaps::PASID) {
            return Err(Error::NotSupported);
        }
        if device.pasid_bits == 0 || pasid >> device.pasid_bits != 0 {
            return Err(Error::PasidOutOfRange);
        }
        Ok(())
    }

    /// Checks shared by attach and replace: same unit, PASID, reserved regions vs mappings.
    fn check_attach_target(&self, client: ClientId, device: ObjectId, hwpt: ObjectId, pasid: Option<u32>) -> Result<(), Error> {
        if self.hwpt(hwpt).unit != self.device(device).unit {
            return Err(Error::IncompatibleUnit);
        }
        self.check_pasid(client, device, pasid)?;
        let ioas = self.root_ioas(hwpt);
        let collides = self
            .device(device)
            .reserved
            .iter()
            .any(|region| self.ioas(ioas).overlaps_area(&region.range));
        if collides {
            return Err(Error::ReservedConflict);
        }
        Ok(())
    }

    /// Attach the device (or its PASID) to an HWPT. Needs ATTACH on both.
    pub fn device_attach(&mut self, client: ClientId, device: Handle, hwpt: Handle, pasid: Option<u32>) -> Result<(), Error> {
        let device = self.resolve(client, device, ObjectKind::Device, Rights::ATTACH)?;
        let hwpt = self.resolve(client, hwpt, ObjectKind::Hwpt, Rights::ATTACH)?;
        self.check_attach_target(client, device, hwpt, pasid)?;
        if self.device(device).attachments.contains_key(&pasid) {
            return Err(Error::AlreadyAttached);
        }
        let (unit, rid) = (self.device(device).unit, self.device(device).rid);
        let owner = self.objects[device].owner;
        self.charge(owner, budget::ATTACHMENT)?;
        if let Err(error) = self.backend.attach(unit, rid, pasid, Translation::Domain(self.hwpt(hwpt).domain.id)) {
            self.refund(owner, budget::ATTACHMENT);
            return Err(error);
        }
        self.device_mut(device).attachments.insert(pasid, Attachment::Hwpt(hwpt));
        self.topology_epoch += 1;
        Ok(())
    }

    /// Switch the attached device (or PASID) to another HWPT; the hardware switches
    /// atomically, then the old attachment is released. Needs ATTACH on both.
    pub fn device_replace(&mut self, client: ClientId, device: Handle, hwpt: Handle, pasid: Option<u32>) -> Result<(), Error> {
        let device = self.resolve(client, device, ObjectKind::Device, Rights::ATTACH)?;
        let hwpt = self.resolve(client, hwpt, ObjectKind::Hwpt, Rights::ATTACH)?;
        let old = *self.device(device).attachments.get(&pasid).ok_or(Error::NotAttached)?;
        self.check_attach_target(client, device, hwpt, pasid)?;
        if old == Attachment::Hwpt(hwpt) {
            return Ok(());
        }
        let (unit, rid) = (self.device(device).unit, self.device(device).rid);
        self.backend.replace(unit, rid, pasid, Translation::Domain(self.hwpt(hwpt).domain.id))?;
        self.device_mut(device).attachments.insert(pasid, Attachment::Hwpt(hwpt));
        self.topology_epoch += 1;
        let old_fault = self.attachment_fault(&old);
        if old_fault.is_some() && old_fault != self.hwpt(hwpt).fault {
            self.abort_page_requests(old_fault, Some(device), Some(pasid));
        }
        Ok(())
    }

    /// Detach the device (or PASID) from its HWPT: it is blocked. Needs ATTACH.
    pub fn device_detach(&mut self, client: ClientId, device: Handle, pasid: Option<u32>) -> Result<(), Error> {
        let device = self.resolve(client, device, ObjectKind::Device, Rights::ATTACH)?;
        match self.device(device).attachments.get(&pasid) {
            Some(Attachment::Hwpt(_)) => {
                self.release_attachment(device, pasid);
                Ok(())
            }
            _ => Err(Error::NotAttached),
        }
    }

    fn attachment_fault(&self, attachment: &Attachment) -> Option<ObjectId> {
        match attachment {
            Attachment::Hwpt(hwpt) => self.hwpt(*hwpt).fault,
            Attachment::Sva { fault, .. } => *fault,
        }
    }

    /// Block the (device, PASID), forget the attachment, and answer the page requests it
    /// left behind.
    fn release_attachment(&mut self, device: ObjectId, pasid: Option<u32>) {
        let (unit, rid) = (self.device(device).unit, self.device(device).rid);
        self.backend.block(unit, rid, pasid);
        let attachment = self.device_mut(device).attachments.remove(&pasid).expect("attachment exists");
        self.refund(self.objects[device].owner, budget::ATTACHMENT);
        self.topology_epoch += 1;
        let fault = self.attachment_fault(&attachment);
        self.abort_page_requests(fault, Some(device), Some(pasid));
    }

    /// Share a verified process address space with the device at `pasid`. Needs ATTACH on
    /// the device and the fault queue.
    pub fn sva_bind(&mut self, client: ClientId, device: Handle, pasid: u32, address_space: AddressSpace, fault: Option<Handle>) -> Result<(), Error> {
        let device = self.resolve(client, device, ObjectKind::Device, Rights::ATTACH)?;
        let fault = self.resolve_optional(client, fault, ObjectKind::Fault, Rights::ATTACH)?;
        self.check_pasid(client, device, Some(pasid))?;
        let (unit, rid) = (self.device(device).unit, self.device(device).rid);
        let caps = self.unit_caps(unit);
        if !caps.contains(UnitCaps::SVA) || (fault.is_some() && !caps.contains(UnitCaps::PAGE_REQUESTS)) {
            return Err(Error::NotSupported);
        }
        if self.device(device).attachments.contains_key(&Some(pasid)) {
            return Err(Error::AlreadyAttached);
        }
        let owner = self.objects[device].owner;
        self.charge(owner, budget::ATTACHMENT)?;
        if let Err(error) = self.backend.attach(unit, rid, Some(pasid), Translation::ProcessAddressSpace(address_space)) {
            self.refund(owner, budget::ATTACHMENT);
            return Err(error);
        }
        self.device_mut(device).attachments.insert(Some(pasid), Attachment::Sva { address_space, fault });
        self.topology_epoch += 1;
        Ok(())
    }

    /// Undo `sva_bind`: the PASID is blocked. Needs ATTACH.
    pub fn sva_unbind(&mut self, client: ClientId, device: Handle, pasid: u32) -> Result<(), Error> {
        let device = self.resolve(client, device, ObjectKind::Device, Rights::ATTACH)?;
        match self.device(device).attachments.get(&Some(pasid)) {
            Some(Attachment::Sva { .. }) => {
                self.release_attachment(device, Some(pasid));
                Ok(())
            }
            _ => Err(Error::NotAttached),
        }
    }

    /// Describe the device's unit. Needs no right.
    /// The unit and requester ID of `client`'s device `device`, for the platform to route the
    /// device's interrupts (`msi_alloc`): interrupts go with the right to attach. Needs ATTACH.
    pub fn device_interrupt_source(&self, client: ClientId, device: Handle) -> Result<(UnitId, RequesterId), Error> {
        let device = self.device(self.resolve(client, device, ObjectKind::Device, Rights::ATTACH)?);
        Ok((device.unit, device.rid))
    }

    pub fn get_info(&self, client: ClientId, device: Handle) -> Result<DeviceInfo, Error> {
        let device = self.device(self.resolve(client, device, ObjectKind::Device, Rights::empty())?);
        let info = self.backend.unit_info(device.unit).ok_or(Error::NotSupported)?;
        Ok(DeviceInfo { unit: device.unit.0, kind: info.kind, caps: info.caps, pasid_bits: device.pasid_bits })
    }

    // ----- PASIDs -----

    /// Allocate a server-wide unique PASID (never 0, not reused until the allocator has
    /// gone round the whole space).
    pub fn pasid_alloc(&mut self, client: ClientId) -> Result<u32, Error> {
        self.client(client)?;
        let max = self.config.max_pasid.min(PASID_MAX);
        let mut candidate = self.last_pasid;
        let mut found = None;
        for _ in 0..max {
            candidate = if candidate >= max { 1 } else { candidate + 1 };
            if !self.pasid_owners.contains_key(&candidate) {
                found = Some(candidate);
                break;
            }
        }
        let candidate = found.ok_or(Error::PasidExhausted)?;
        self.charge(client, budget::PASID)?;
        self.last_pasid = candidate;
        self.pasid_owners.insert(candidate, client);
        self.clients.get_mut(client).expect("checked").pasids.insert(candidate);
        Ok(candidate)
    }

    fn pasid_in_use(&self, pasid: u32) -> bool {
        self.objects.values().any(|object| matches!(&object.body, Body::Device(device) if device.attachments.contains_key(&Some(pasid))))
    }

    /// Free a PASID the client allocated and no longer uses.
    pub fn pasid_free(&mut self, client: ClientId, pasid: u32) -> Result<(), Error> {
        self.client(client)?;
        if self.pasid_owners.get(&pasid) != Some(&client) {
            return Err(Error::NoSuchPasid);
        }
        if self.pasid_in_use(pasid) {
            return Err(Error::Busy);
        }
        self.pasid_owners.remove(&pasid);
        self.clients.get_mut(client).expect("checked").pasids.remove(&pasid);
        self.refund(client, budget::PASID);
        Ok(())
    }

    // ----- faults -----

    /// Allocate a fault queue.
    pub fn fault_alloc(&mut self, client: ClientId) -> Result<Handle, Error> {
        self.charge_new_object(client, budget::FAULT_QUEUE)?;
        Ok(self.create(client, Body::Fault(FaultQueue::default())))
    }

    /// Route a hardware fault to the fault queue of the device's attachment.
    pub fn deliver_fault(&mut self, event: FaultEvent) -> FaultDelivery {
        let device = self.bound_devices.get(&(event.unit, event.rid)).copied();
        let route = device.and_then(|device| {
            let attachment = self.device(device).attachments.get(&event.pasid)?;
            Some((device, self.attachment_fault(attachment)?))
        });
        let is_request = event.reason == FaultReason::PageRequest;
        let Some((device, fault)) = route else {
            self.unrouted_faults += 1;
            if is_request {
                self.backend.page_response(event.unit, event.rid, event.pasid, event.group, PageResponseCode::Invalid);
            }
            return FaultDelivery::Unrouted;
        };
        let reason = self.fault_reason_in_ioas(device, &event);
        let label = self.device(device).label;
        let owner = self.objects[fault].owner;
        let depth = self.config.fault_queue_depth;
        // A queue is full at its depth or when its owner's budget cannot take the record.
        let limits = self.config.limits;
        let full = self.fault_mut(fault).queued.len() >= depth
            || self.clients.get_mut(owner).expect("owners are live").account.charge_bytes(budget::FAULT_RECORD.bytes, &limits).is_err();
        let queue = self.fault_mut(fault);
        if full {
            queue.overflow += 1;
            if is_request {
                self.backend.page_response(event.unit, event.rid, event.pasid, event.group, PageResponseCode::Invalid);
            }
            return FaultDelivery::Overflowed;
        }
        let cookie = if is_request { queue.next_cookie() } else { 0 };
        let request = is_request.then_some(PendingRequest {
            device,
            unit: event.unit,
            rid: event.rid,
            pasid: event.pasid,
            group: event.group,
        });
        let record = FaultRecord { device: label, pasid: event.pasid, iova: event.iova, access: event.access, reason, cookie };
        queue.queued.push_back(QueuedFault { record, request });
        FaultDelivery::Queued { owner }
    }

    /// A translation fault at an IOVA that the device's IOAS maps, but without the access that
    /// faulted, is a permission fault. Some units cannot tell the two apart: VT-d reports a
    /// missing second-level leaf and a read-only one with the same reason (5h "lack of write
    /// permission", VT-d spec 7.1.3), so the backend reports both as translation faults and
    /// the IOAS, which knows what was mapped, decides.
    fn fault_reason_in_ioas(&self, device: ObjectId, event: &FaultEvent) -> FaultReason {
        if event.reason != FaultReason::Translation {
            return event.reason;
        }
        let Some(&Attachment::Hwpt(hwpt)) = self.device(device).attachments.get(&event.pasid) else { return event.reason };
        let HwptParent::Ioas(ioas) = self.hwpt(hwpt).parent else { return event.reason };
        let Some((_, area)) = self.ioas(ioas).areas.range(..=event.iova).next_back() else { return event.reason };
        let wants = |access: Access| event.access.bits() & access.bits() != 0;
        let inside = area.range.start <= event.iova && event.iova <= area.range.last;
        if inside && ((wants(Access::READ) && !area.perm.read) || (wants(Access::WRITE) && !area.perm.write)) {
            FaultReason::Permission
        } else {
            event.reason
        }
    }

    /// Take up to `max` records, oldest first, and the overflow count (which restarts at
    /// 0). Page requests read here await `fault_respond`. Needs READ_FAULTS.
    pub fn fault_read(&mut self, client: ClientId, fault: Handle, max: usize) -> Result<FaultReadout, Error> {
        let fault = self.resolve(client, fault, ObjectKind::Fault, Rights::READ_FAULTS)?;
        let owner = self.objects[fault].owner;
        let queue = self.fault_mut(fault);
        let mut records = Vec::new();
        // A page request keeps its record's charge while it awaits the answer.
        let mut finished = 0;
        while records.len() < max {
            let Some(queued) = queue.queued.pop_front() else { break };
            match queued.request {
                Some(request) => {
                    queue.awaiting.insert(queued.record.cookie, request);
                }
                None => finished += 1,
            }
            records.push(queued.record);
        }
        let overflow = core::mem::take(&mut queue.overflow);
        self.clients.get_mut(owner).expect("owners are live").account.refund_bytes(budget::FAULT_RECORD.bytes * finished);
        Ok(FaultReadout { records, overflow })
    }

    /// Answer a page request read from this queue. Needs READ_FAULTS.
    pub fn fault_respond(&mut self, client: ClientId, fault: Handle, cookie: u32, code: PageResponseCode) -> Result<(), Error> {
        let fault = self.resolve(client, fault, ObjectKind::Fault, Rights::READ_FAULTS)?;
        let request = self.fault_mut(fault).awaiting.remove(&cookie).ok_or(Error::NoSuchFault)?;
        self.refund(self.objects[fault].owner, budget::FAULT_RECORD);
        self.backend.page_response(request.unit, request.rid, request.pasid, request.group, code);
        Ok(())
    }

    /// Answer `Invalid` to page requests in the queue `fault` (queued or awaiting) of
    /// `device` (any if `None`) at `pasid` (any if `None`), and drop them, so no device
    /// waits on a request nobody will answer.
    fn abort_page_requests(&mut self, fault: Option<ObjectId>, device: Option<ObjectId>, pasid: Option<Option<u32>>) {
        let Some(fault) = fault else { return };
        let matches = |request: &PendingRequest| device.is_none_or(|d| d == request.device) && pasid.is_none_or(|p| p == request.pasid);
        let queue = self.fault_mut(fault);
        let mut aborted = Vec::new();
        queue.queued.retain(|queued| match queued.request {
            Some(request) if matches(&request) => {
                aborted.push(request);
                false
            }
            _ => true,
        });
        queue.awaiting.retain(|_, request| {
            if matches(request) {
                aborted.push(*request);
                false
            } else {
                true
            }
        });
        self.refund(self.objects[fault].owner, budget::FAULT_RECORD.times(aborted.len() as u64));
        for request in aborted {
            self.backend.page_response(request.unit, request.rid, request.pasid, request.group, PageResponseCode::Invalid);
        }
    }

    // ----- destruction -----

    fn is_busy(&self, id: ObjectId) -> bool {
        match &self.objects[id].body {
            Body::Ioas(_) => !self.hwpts_over(HwptParent::Ioas(id)).is_empty(),
            Body::Hwpt(_) => !self.hwpts_over(HwptParent::Hwpt(id)).is_empty() || !self.attachments_to(id).is_empty(),
            Body::Device(device) => !device.attachments.is_empty(),
            Body::Fault(_) => {
                let (hwpts, binds) = self.fault_users(id);
                !hwpts.is_empty() || !binds.is_empty()
            }
            Body::Memory(registration) => registration.mappings != 0,
        }
    }

    /// Destroy an object no other object uses (`Busy` otherwise). Every handle to it, in
    /// every client, goes with it. Needs DESTROY.
    pub fn destroy(&mut self, client: ClientId, handle: Handle) -> Result<(), Error> {
        let (id, rights) = self.lookup(client, handle)?;
        if !rights.contains(Rights::DESTROY) {
            return Err(Error::MissingRight);
        }
        if self.is_busy(id) {
            return Err(Error::Busy);
        }
        self.free_unused(id);
        Ok(())
    }

    /// Free an object that has no users.
    fn free_unused(&mut self, id: ObjectId) {
        match self.objects[id].kind() {
            ObjectKind::Ioas => {
                self.unmap_everything(id);
            }
            ObjectKind::Hwpt => {
                let hwpt = self.hwpt(id);
                let domain = hwpt.domain.id;
                if let HwptParent::Ioas(ioas) = hwpt.parent {
                    let areas: Vec<Area> = self.ioas(ioas).areas.values().copied().collect();
                    for area in areas {
                        self.backend.unmap(domain, area.range.start, area.length());
                    }
                }
                self.backend.domain_free(domain);
            }
            ObjectKind::Device => {
                let (unit, rid) = (self.device(id).unit, self.device(id).rid);
                self.bound_devices.remove(&(unit, rid));
                self.backend.release_msis(unit, rid);
            }
            ObjectKind::Fault => {
                self.abort_page_requests(Some(id), None, None);
                let records = self.fault_mut(id).queued.len() as u64;
                self.refund(self.objects[id].owner, budget::FAULT_RECORD.times(records));
            }
            ObjectKind::Memory => {
                if let Body::Memory(registration) = &self.objects[id].body {
                    let (object, size) = (registration.object, registration.size);
                    self.pins.release(&mut self.memory, object, 0, size);
                }
            }
        }
        self.remove_object(id);
    }

    /// Destroy an HWPT and everything that depends on it: nested children first, then
    /// attached devices are blocked, then the domain is unmapped and freed.
    fn teardown_hwpt(&mut self, hwpt: ObjectId) {
        for child in self.hwpts_over(HwptParent::Hwpt(hwpt)) {
            self.teardown_hwpt(child);
        }
        for (device, pasid) in self.attachments_to(hwpt) {
            self.release_attachment(device, pasid);
        }
        self.free_unused(hwpt);
    }

    fn teardown_ioas(&mut self, ioas: ObjectId) {
        for hwpt in self.hwpts_over(HwptParent::Ioas(ioas)) {
            self.teardown_hwpt(hwpt);
        }
        self.free_unused(ioas);
    }

    pub(crate) fn teardown_device(&mut self, device: ObjectId) {
        let pasids: Vec<Option<u32>> = self.device(device).attachments.keys().copied().collect();
        for pasid in pasids {
            self.release_attachment(device, pasid);
        }
        self.free_unused(device);
    }

    /// Destroy a fault queue even if used: users lose their queue (their faults become
    /// unrouted) rather than being destroyed.
    fn teardown_fault(&mut self, fault: ObjectId) {
        let (hwpts, binds) = self.fault_users(fault);
        for hwpt in hwpts {
            self.hwpt_mut(hwpt).fault = None;
        }
        for (device, pasid) in binds {
            if let Some(Attachment::Sva { fault, .. }) = self.device_mut(device).attachments.get_mut(&pasid) {
                *fault = None;
            }
        }
        self.free_unused(fault);
    }

    /// Destroy a registration even if mapped: the areas mapped from it (in other clients'
    /// IOASes, when it was shared) are unmapped first.
    pub(crate) fn teardown_registration(&mut self, memory: ObjectId) {
        let users: Vec<(ObjectId, u64)> = self
            .objects
            .iter()
            .filter_map(|(id, object)| match &object.body {
                Body::Ioas(ioas) => Some(ioas.areas.values().filter(|area| area.registration == Some(memory)).map(|area| (id, area.range.start)).collect::<Vec<_>>()),
                _ => None,
            })
            .flatten()
            .collect();
        for (ioas, start) in users {
            self.remove_area(ioas, start);
        }
        self.free_unused(memory);
    }

    fn owned(&self, client: ClientId, kind: ObjectKind) -> Vec<ObjectId> {
        self.objects.iter().filter(|(_, object)| object.owner == client && object.kind() == kind).map(|(id, _)| id).collect()
    }

    /// Tear down everything a client owns, in dependency order: its handles (and handles
    /// derived from them) are revoked; its devices are detached (blocked) and unbound; its
    /// HWPTs are destroyed, nested before parents, blocking any other client's device
    /// attached to them; its IOASes are unmapped (invalidating) and unpinned; its fault
    /// queues are destroyed, answering pending page requests; its PASIDs are released.
    pub fn close_client(&mut self, client: ClientId) -> Result<(), Error> {
        let handles: Vec<u32> = self.client(client)?.handles.keys().collect();
        for handle in handles {
            self.revoke(HandleRef { client, handle });
        }
        for device in self.owned(client, ObjectKind::Device) {
            self.teardown_device(device);
        }
        let mut hwpts = self.owned(client, ObjectKind::Hwpt);
        hwpts.sort_by_key(|&hwpt| matches!(self.hwpt(hwpt).parent, HwptParent::Ioas(_)));
        for hwpt in hwpts {
            if self.objects.contains(hwpt) {
                self.teardown_hwpt(hwpt);
            }
        }
        for ioas in self.owned(client, ObjectKind::Ioas) {
            self.teardown_ioas(ioas);
        }
        for fault in self.owned(client, ObjectKind::Fault) {
            self.teardown_fault(fault);
        }
        for memory in self.owned(client, ObjectKind::Memory) {
            self.teardown_registration(memory);
        }
        let pasids: Vec<u32> = self.clients.get(client).expect("checked").pasids.iter().copied().collect();
        for pasid in pasids {
            let users: Vec<ObjectId> = self
                .objects
                .iter()
                .filter(|(_, object)| matches!(&object.body, Body::Device(device) if device.attachments.contains_key(&Some(pasid))))
                .map(|(id, _)| id)
                .collect();
            for device in users {
                self.release_attachment(device, Some(pasid));
            }
            self.pasid_owners.remove(&pasid);
            self.refund(client, budget::PASID);
        }
        // Emptied first, so that a client that accepted itself is refunded once.
        let closing = self.clients.get_mut(client).expect("checked");
        let accepted = core::mem::take(&mut closing.accepts_from).len() as u64;
        closing.account.refund(budget::ACCEPTANCE.times(accepted));
        // A later client with the same id (the transport reuses them) starts with nobody's
        // consent.
        for other in self.clients.values_mut() {
            if other.accepts_from.remove(&client) {
                other.account.refund(budget::ACCEPTANCE);
            }
        }
        let left = self.clients.remove(client).expect("checked").account.used;
        debug_assert_eq!(left, Usage::default(), "everything {client:?} was charged is returned");
        Ok(())
    }
}

#[cfg(test)]
mod run_tests {
    use super::{contiguous_run, PAGE_SIZE};

    #[test]
    fn contiguous_runs_end_at_the_first_break_in_any_chunk() {
        let consecutive: alloc::vec::Vec<u64> = (0..200).map(|i| 0x10_0000 + i * PAGE_SIZE).collect();
        assert_eq!(contiguous_run(&consecutive), 200);
        assert_eq!(contiguous_run(&[]), 0);
        assert_eq!(contiguous_run(&consecutive[..1]), 1);
        for broken_at in [1, 63, 64, 70, 199] {
            let mut frames = consecutive.clone();
            frames[broken_at] += PAGE_SIZE;
            assert_eq!(contiguous_run(&frames), broken_at, "break at {broken_at}");
        }
    }
}
