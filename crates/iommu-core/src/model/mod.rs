//! The object model's state ([`ObjectModel`]: objects, handle tables, pins) and, one file per
//! object kind as iommufd has them, every operation on it: `ioas.rs`, `hwpt.rs`, `device.rs`
//! (with PASIDs), `fault.rs`, `registration.rs` (MEMORY), `handles.rs` (clients, handles,
//! destruction). This file holds what they share: typed access to the object table and the
//! dependency graph between objects.
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
use alloc::vec::Vec;
use iommu_abi::wire::PASID_MAX;

use crate::budget::{ClientLimits, Usage};
use crate::backend::{DrainedFault, IommuBackend, RequesterId, UnitId};
use slot_table::SlotTable;
use crate::memory::{MemorySource, PinTable};
use crate::objects::{Attachment, Body, ClientTable, Device, FaultQueue, Hwpt, HwptParent, Ioas, Object, ObjectId};
use crate::ClientId;

mod device;
mod fault;
mod handles;
mod hwpt;
mod ioas;
mod registration;
mod revoke;
mod sva;

use ioas::{ioas_in, ioas_in_mut};

pub use device::{DeviceGrant, IsolationGroup};
pub use fault::FaultDelivery;
pub use hwpt::{HwptAllocOptions, MAX_DIRTY_BITMAP_PAGES};
pub use revoke::Revoked;
pub use sva::AddressSpaceChange;

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

/// Server-wide counters ([`ObjectModel::counters`]).
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

/// Faults one drain can hold without growing its buffer (a VT-d unit reports at most one per
/// fault record register; a burst beyond this grows the buffer once).
const DRAINED_FAULTS_RESERVED: usize = 16;

/// The IOMMU server's object model: every client's objects and handles, the pin table,
/// and the hardware and kernel interfaces it drives.
pub struct ObjectModel<B: IommuBackend, M: MemorySource> {
    backend: B,
    memory: M,
    config: ServerConfig,
    clients: ClientTable,
    objects: SlotTable<ObjectId, Object>,
    /// Every HWPT by what it translates through (see `objects`).
    hwpts_by_parent: BTreeSet<(HwptParent, ObjectId)>,
    /// Advanced by every change that can alter an IOAS summary (HWPTs created or destroyed,
    /// attachments, allowed ranges): cached summaries of older epochs are recomputed.
    topology_epoch: u64,
    pins: PinTable,
    bound_devices: BTreeMap<(UnitId, RequesterId), ObjectId>,
    pasid_owners: BTreeMap<u32, ClientId>,
    last_pasid: u32,
    unrouted_faults: u64,
    /// Faults taken from the backend, routed once the backend is no longer borrowed: kept
    /// between drains so that fault delivery allocates nothing once it has run.
    drained: Vec<DrainedFault>,
}

impl<B: IommuBackend, M: MemorySource> ObjectModel<B, M> {
    /// A server with no clients.
    pub fn new(backend: B, memory: M, config: ServerConfig) -> Self {
        ObjectModel {
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
            drained: Vec::with_capacity(DRAINED_FAULTS_RESERVED),
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

    /// What every client is charged, summed (the status page publishes it after each request,
    /// so it is kept apart from the other, costlier counters).
    pub fn charged(&self) -> Usage {
        self.clients.iter().fold(Usage::default(), |sum, (_, client)| sum.plus(client.account.used))
    }

    /// The server-wide counters: what every client holds, summed, and the shared tables.
    pub fn counters(&self) -> Counters {
        Counters {
            charged: self.charged(),
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
    pub(crate) fn handle_table(&self, client: ClientId) -> Vec<(u32, ObjectId, iommu_abi::Rights)> {
        self.clients.get(client).map_or_else(Vec::new, |c| c.handles.iter().map(|(number, entry)| (number, entry.object, entry.rights)).collect())
    }

    /// Every area of every IOAS, with the IOAS and its owner.
    #[cfg(test)]
    pub(crate) fn all_areas(&self) -> Vec<(ObjectId, ClientId, crate::objects::Area)> {
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
    pub(crate) fn paging_domains(&self) -> Vec<(crate::backend::HwDomainId, ObjectId)> {
        self.objects
            .values()
            .filter_map(|object| match &object.body {
                Body::Hwpt(Hwpt { domain, parent: HwptParent::Ioas(ioas), .. }) => Some((domain.id, *ioas)),
                _ => None,
            })
            .collect()
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

    /// The IOAS whose mappings the HWPT translates through (its own, or its parent's).
    fn root_ioas(&self, hwpt: ObjectId) -> ObjectId {
        match self.hwpt(hwpt).parent {
            HwptParent::Ioas(ioas) => ioas,
            HwptParent::Hwpt(parent) => self.root_ioas(parent),
        }
    }
}
