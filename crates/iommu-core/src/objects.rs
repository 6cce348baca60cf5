//! The objects of the model and the per-client handle tables.
//!
//! Objects live in one server-global [`SlotTable`] keyed by [`ObjectId`] (generation-tagged,
//! never 0, never issued twice). Each object has an owner: the client that created it. Clients
//! never see object IDs; they hold *handles*, small per-client numbers (also slot keys: never 0,
//! never issued twice to the client) in their own table, each pointing at an object with a set
//! of rights. Both tables are slot tables because every request resolves a handle and then its
//! object: two index operations instead of two tree searches.
//!
//! Dependencies between objects ("users", as in iommufd) are not counted but derived from
//! the objects themselves when needed: an HWPT names its IOAS or parent HWPT and its fault
//! queue, a device names the HWPT (or address space and fault queue) of each attachment.
//! Scanning is linear in the number of objects and cannot drift out of sync the way a separate
//! reference count can. The one question asked on every map and unmap, "which HWPTs mirror this
//! IOAS", is answered from an index instead (`ObjectModel::hwpts_by_parent`), kept where objects are
//! created and removed (an HWPT's parent never changes), so a client with many objects does
//! not slow down every other client's requests.

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::vec::Vec;
use iommu_abi::{FaultRecord, Handle, IovaRange, Perm, Rights};
use slot_table::SlotTable;

use crate::budget::{Account, ClientLimits, Usage};
use crate::backend::{AddressSpace, HwDomain, HwDomainId, RequesterId, ReservedRegion, UnitId};
use crate::memory::MemoryObjectId;
use crate::ClientId;
use crate::model::IsolationGroup;

/// Server-global identity of an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId(pub(crate) u64);

slot_table::slot_key!(ObjectId, 32, 32);

/// The type of an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// An I/O address space.
    Ioas,
    /// A hardware page table (paging or nested domain).
    Hwpt,
    /// A bound device.
    Device,
    /// A fault queue.
    Fault,
    /// A registered memory object.
    Memory,
}

/// One mapping of an IOAS: a page-aligned IOVA range backed by a range of one memory
/// object.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Area {
    pub range: IovaRange,
    pub object: MemoryObjectId,
    pub offset: u64,
    pub perm: Perm,
    /// The registration whose pins the area uses; `None`: the area holds uses of its pages
    /// in the pin table itself.
    pub registration: Option<ObjectId>,
}

impl Area {
    pub fn length(&self) -> u64 {
        self.range.last - self.range.start + 1
    }
}

/// An I/O address space: the mappings, keyed by start IOVA, and the allowed ranges (empty:
/// no restriction).
#[derive(Default)]
pub(crate) struct Ioas {
    pub areas: BTreeMap<u64, Area>,
    pub allowed: Vec<IovaRange>,
    /// What every map consults, derived from the HWPTs over this IOAS, the devices attached to
    /// them and `allowed`; valid while the server's topology epoch is the one recorded.
    pub summary: Option<(u64, IoasSummary)>,
}

impl Ioas {
    /// The cached summary; the server refreshes it before any map or unmap reads it.
    pub fn summary(&self) -> &IoasSummary {
        &self.summary.as_ref().expect("summary refreshed before use").1
    }

    pub fn area_ranges(&self) -> Vec<IovaRange> {
        self.areas.values().map(|area| area.range).collect()
    }

    pub fn overlaps_area(&self, range: &IovaRange) -> bool {
        // Areas are disjoint, so only the last area starting at or before `range.last`
        // can reach into `range`.
        self.areas.range(..=range.last).next_back().is_some_and(|(_, area)| area.range.last >= range.start)
    }
}

/// The translation context of an IOAS as maps see it.
pub(crate) struct IoasSummary {
    /// The domains of the HWPTs over it: every mapping goes into each.
    pub domains: Vec<HwDomainId>,
    /// Aperture of every domain, intersected with the allowed ranges.
    pub permitted: Vec<IovaRange>,
    /// Reserved regions of the devices attached through it (sorted, merged).
    pub reserved: Vec<IovaRange>,
    /// Page sizes every domain supports.
    pub page_sizes: u64,
}

/// What an HWPT translates through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum HwptParent {
    /// A paging HWPT mirroring this IOAS.
    Ioas(ObjectId),
    /// A nested HWPT whose stage 2 is this paging HWPT.
    Hwpt(ObjectId),
}

pub(crate) struct Hwpt {
    pub unit: UnitId,
    pub domain: HwDomain,
    pub parent: HwptParent,
    pub fault: Option<ObjectId>,
    pub nest_parent: bool,
    pub dirty_capable: bool,
    pub dirty_enabled: bool,
}

/// What one (device, PASID) slot is attached to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Attachment {
    Hwpt(ObjectId),
    Sva { address_space: AddressSpace, fault: Option<ObjectId> },
}

pub(crate) struct Device {
    pub unit: UnitId,
    pub rid: RequesterId,
    pub pasid_bits: u8,
    /// Its isolation group, where the platform knows one (`device_bind_in_group`).
    pub group: Option<IsolationGroup>,
    /// The handle `device_bind` returned to the owner; names the device in fault records.
    pub label: Handle,
    pub reserved: Vec<ReservedRegion>,
    /// Key `None`: the requester ID itself (no PASID).
    pub attachments: BTreeMap<Option<u32>, Attachment>,
}

/// A page request the device waits on, and where to send the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PendingRequest {
    pub device: ObjectId,
    pub unit: UnitId,
    pub rid: RequesterId,
    pub pasid: Option<u32>,
    pub group: u32,
}

pub(crate) struct QueuedFault {
    pub record: FaultRecord,
    pub request: Option<PendingRequest>,
}

pub(crate) struct FaultQueue {
    pub queued: VecDeque<QueuedFault>,
    pub overflow: u64,
    /// Page requests read by the driver and not yet answered, by cookie.
    pub awaiting: BTreeMap<u32, PendingRequest>,
    pub last_cookie: u32,
}

/// Records a new queue holds without allocating: the first faults of a device reach its driver
/// without a heap allocation on the way (charged with the queue, `budget::FAULT_QUEUE`).
pub(crate) const FAULT_RECORDS_RESERVED: usize = 4;

impl Default for FaultQueue {
    fn default() -> Self {
        FaultQueue { queued: VecDeque::with_capacity(FAULT_RECORDS_RESERVED), overflow: 0, awaiting: BTreeMap::new(), last_cookie: 0 }
    }
}

impl FaultQueue {
    /// A cookie not used by any queued or awaiting request, never 0.
    pub fn next_cookie(&mut self) -> u32 {
        loop {
            self.last_cookie = self.last_cookie.wrapping_add(1).max(1);
            let cookie = self.last_cookie;
            let queued = self.queued.iter().any(|fault| fault.record.cookie == cookie);
            if !queued && !self.awaiting.contains_key(&cookie) {
                return cookie;
            }
        }
    }
}

/// A memory object the client registered: verified with the kernel and pinned whole once, so
/// mapping from it needs no capability transfer, no kernel call and no pin accounting.
#[derive(Debug)]
pub(crate) struct Registration {
    pub object: MemoryObjectId,
    pub size: u64,
    pub writable: bool,
    /// Physical address of every page of the object: a copy of what the pin table holds,
    /// kept so that a map slices it instead of searching the pin table (the search was most of
    /// a registered map's cost).
    pub frames: Vec<u64>,
    /// Areas mapped from it (in any client's IOAS); it cannot be destroyed while any remains.
    pub mappings: u64,
}

pub(crate) enum Body {
    Ioas(Ioas),
    Hwpt(Hwpt),
    Device(Device),
    Fault(FaultQueue),
    Memory(Registration),
}

pub(crate) struct Object {
    pub owner: ClientId,
    pub body: Body,
}

impl Object {
    pub fn kind(&self) -> ObjectKind {
        match self.body {
            Body::Ioas(_) => ObjectKind::Ioas,
            Body::Hwpt(_) => ObjectKind::Hwpt,
            Body::Device(_) => ObjectKind::Device,
            Body::Fault(_) => ObjectKind::Fault,
            Body::Memory(_) => ObjectKind::Memory,
        }
    }
}

/// A handle in some client's table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HandleRef {
    pub client: ClientId,
    pub handle: u32,
}

pub(crate) struct HandleEntry {
    pub object: ObjectId,
    /// The object's kind (which never changes), so that resolving a handle needs no object
    /// lookup.
    pub kind: ObjectKind,
    pub rights: Rights,
    /// The handle this one was derived from; revoking it revokes this one.
    pub parent: Option<HandleRef>,
    pub derived: Vec<HandleRef>,
}

/// One connected client (one driver process): its handle table, its PASIDs and what it has
/// charged against its limits.
pub(crate) struct Client {
    /// Handle numbers are the keys: at most 65,535 live handles, and 2^32 over the client's
    /// life (a slot retires after 65,536 uses).
    pub handles: SlotTable<u32, HandleEntry>,
    pub pasids: BTreeSet<u32>,
    pub account: Account,
    /// Clients whose `handle_derive` may put handles into this table.
    pub accepts_from: BTreeSet<ClientId>,
}

impl Client {
    pub fn new(limits: ClientLimits) -> Client {
        Client { handles: SlotTable::new(), pasids: BTreeSet::new(), account: Account { used: Usage::default(), limits }, accepts_from: BTreeSet::new() }
    }

    pub fn has_handle_space(&self) -> bool {
        self.handles.next_key().is_some()
    }
}

/// The connected clients, indexed by id: ids are the transport's small numbers (endpoint
/// badges), below `ServerConfig::max_clients`, and every request starts by finding its client.
#[derive(Default)]
pub(crate) struct ClientTable {
    slots: Vec<Option<Client>>,
}

impl ClientTable {
    pub fn get(&self, id: ClientId) -> Option<&Client> {
        self.slots.get(usize::try_from(id.0).ok()?)?.as_ref()
    }

    pub fn get_mut(&mut self, id: ClientId) -> Option<&mut Client> {
        self.slots.get_mut(usize::try_from(id.0).ok()?)?.as_mut()
    }

    /// Opens `id` (which the caller bounded) with an empty handle table and `limits`.
    pub fn open(&mut self, id: ClientId, limits: ClientLimits) {
        let index = id.0 as usize;
        if self.slots.len() <= index {
            self.slots.resize_with(index + 1, || None);
        }
        self.slots[index] = Some(Client::new(limits));
    }

    pub fn remove(&mut self, id: ClientId) -> Option<Client> {
        self.slots.get_mut(usize::try_from(id.0).ok()?)?.take()
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut Client> {
        self.slots.iter_mut().filter_map(Option::as_mut)
    }

    pub fn iter(&self) -> impl Iterator<Item = (ClientId, &Client)> {
        self.slots.iter().enumerate().filter_map(|(index, slot)| Some((ClientId(index as u64), slot.as_ref()?)))
    }
}
