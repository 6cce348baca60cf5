//! Per-client limits and what each client has charged against them.
//!
//! Every object, handle, mapped area, PASID, attachment and fault record the model keeps on a
//! client's behalf is *charged* to one client before it is allocated, and *refunded* when it
//! goes. Whoever owns the memory pays: objects, and the areas, attachments and fault records
//! inside them, are charged to the object's owner (a client that lends MAP on its IOAS lends
//! its budget with it); a handle is charged to the client whose table holds it; a PASID to the
//! client that allocated it. Charges are computed from the thing itself (an area's length,
//! a registration's page count), so a refund always returns exactly what was charged, and a
//! closed client's usage is zero.
//!
//! The byte counts are estimates of the heap the model uses, not measurements: a slot-table
//! entry costs its value plus its key word; a B-tree entry costs twice its key and value (a
//! node holds up to 11 entries and is at least about half full, and its header is shared by
//! them); a list element costs its size. Transient allocations freed before a request returns
//! (frame lists, segment lists) and the cached IOAS summary (its size follows the HWPTs and
//! devices already charged) are not charged.
//!
//! Page-table pages are allocated inside the backend, whose interface does not report them;
//! what is limited instead is the number of domains (HWPTs) a client holds, each of which owns
//! its page tables.

use core::mem::size_of;

use crate::backend::{HwDomainId, ReservedRegion};
use crate::objects::{Area, Attachment, Body, HandleEntry, HandleRef, HwptParent, Object, ObjectId, PendingRequest, QueuedFault, FAULT_RECORDS_RESERVED};

/// How much of each resource one client may hold: its own when it is opened with
/// [`ObjectModel::open_client_with_limits`](crate::ObjectModel::open_client_with_limits), else
/// [`ServerConfig::limits`](crate::ServerConfig). Exhausting any gives that client
/// `NoResources` and no other client notices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientLimits {
    /// Handles in the client's table (the table itself holds at most 65,535).
    pub handles: u64,
    /// Mapped areas in the IOASes the client owns.
    pub areas: u64,
    /// Allocated PASIDs.
    pub pasids: u64,
    /// Fault queues.
    pub fault_queues: u64,
    /// HWPTs, each a domain with its page tables.
    pub domains: u64,
    /// Estimated server heap, in bytes (see the module documentation).
    pub memory_bytes: u64,
}

impl ClientLimits {
    /// No limit but the tables' own.
    pub const UNLIMITED: ClientLimits = ClientLimits {
        handles: u64::MAX,
        areas: u64::MAX,
        pasids: u64::MAX,
        fault_queues: u64::MAX,
        domains: u64::MAX,
        memory_bytes: u64::MAX,
    };
}

impl Default for ClientLimits {
    /// A client may use a quarter of the server's 4 MiB heap, so that two of them and the
    /// server's own reserve fit (budgets are not overcommitted: docs/architecture.md, threat
    /// model): about 7,700 one-page areas (an area is estimated at 128 bytes plus 8 per page),
    /// or registrations of about 512 MiB (8 bytes per page).
    fn default() -> Self {
        ClientLimits { handles: 4096, areas: 16384, pasids: 256, fault_queues: 64, domains: 64, memory_bytes: 1 << 20 }
    }
}

/// What a client holds, or what one step charges (a difference of usages).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Handles in its table.
    pub handles: u64,
    /// Areas in its IOASes.
    pub areas: u64,
    /// PASIDs.
    pub pasids: u64,
    /// Fault queues.
    pub fault_queues: u64,
    /// HWPTs (domains).
    pub domains: u64,
    /// Estimated heap bytes.
    pub bytes: u64,
}

impl Usage {
    /// Whether `self + charge` stays within `limits`.
    fn admits(&self, charge: &Usage, limits: &ClientLimits) -> bool {
        let within = |used: u64, more: u64, limit: u64| used.checked_add(more).is_some_and(|total| total <= limit);
        within(self.handles, charge.handles, limits.handles)
            && within(self.areas, charge.areas, limits.areas)
            && within(self.pasids, charge.pasids, limits.pasids)
            && within(self.fault_queues, charge.fault_queues, limits.fault_queues)
            && within(self.domains, charge.domains, limits.domains)
            && within(self.bytes, charge.bytes, limits.memory_bytes)
    }

    /// Adds `other` field by field.
    pub fn plus(self, other: Usage) -> Usage {
        Usage {
            handles: self.handles + other.handles,
            areas: self.areas + other.areas,
            pasids: self.pasids + other.pasids,
            fault_queues: self.fault_queues + other.fault_queues,
            domains: self.domains + other.domains,
            bytes: self.bytes + other.bytes,
        }
    }

    fn minus(self, other: Usage) -> Usage {
        let less = |a: u64, b: u64| a.checked_sub(b).expect("a refund returns no more than was charged");
        Usage {
            handles: less(self.handles, other.handles),
            areas: less(self.areas, other.areas),
            pasids: less(self.pasids, other.pasids),
            fault_queues: less(self.fault_queues, other.fault_queues),
            domains: less(self.domains, other.domains),
            bytes: less(self.bytes, other.bytes),
        }
    }

    /// `self` taken `count` times.
    pub(crate) fn times(self, count: u64) -> Usage {
        Usage {
            handles: self.handles * count,
            areas: self.areas * count,
            pasids: self.pasids * count,
            fault_queues: self.fault_queues * count,
            domains: self.domains * count,
            bytes: self.bytes * count,
        }
    }
}

/// One client's account: what it holds and what it may hold.
pub(crate) struct Account {
    pub used: Usage,
    pub limits: ClientLimits,
}

impl Account {
    /// Take `charge` if it fits under `limits`, else `NoResources` with nothing taken. The
    /// gate every allocation on the client's behalf passes first (tests inject failures
    /// here).
    #[inline]
    pub fn charge(&mut self, charge: Usage) -> Result<(), iommu_abi::Error> {
        #[cfg(test)]
        if injection::next_charge_fails() {
            return Err(iommu_abi::Error::NoResources);
        }
        if !self.used.admits(&charge, &self.limits) {
            return Err(iommu_abi::Error::NoResources);
        }
        self.used = self.used.plus(charge);
        Ok(())
    }

    /// The map path's charge (one or more areas): a compare and an add per counter.
    #[inline]
    pub fn charge_areas(&mut self, areas: u64, bytes: u64) -> Result<(), iommu_abi::Error> {
        #[cfg(test)]
        if injection::next_charge_fails() {
            return Err(iommu_abi::Error::NoResources);
        }
        let areas = self.used.areas + areas;
        let bytes = self.used.bytes + bytes;
        if areas > self.limits.areas || bytes > self.limits.memory_bytes {
            return Err(iommu_abi::Error::NoResources);
        }
        self.used.areas = areas;
        self.used.bytes = bytes;
        Ok(())
    }

    /// The fault path's charge (a record): a compare and an add.
    #[inline]
    pub fn charge_bytes(&mut self, bytes: u64) -> Result<(), iommu_abi::Error> {
        #[cfg(test)]
        if injection::next_charge_fails() {
            return Err(iommu_abi::Error::NoResources);
        }
        let bytes = self.used.bytes + bytes;
        if bytes > self.limits.memory_bytes {
            return Err(iommu_abi::Error::NoResources);
        }
        self.used.bytes = bytes;
        Ok(())
    }

    /// Return what `charge_bytes` took.
    #[inline]
    pub fn refund_bytes(&mut self, bytes: u64) {
        debug_assert!(self.used.bytes >= bytes, "a refund returns no more than was charged");
        self.used.bytes -= bytes;
    }

    /// Return what `charge_areas` took (the unmap path's refund).
    #[inline]
    pub fn refund_areas(&mut self, areas: u64, bytes: u64) {
        debug_assert!(self.used.areas >= areas && self.used.bytes >= bytes, "a refund returns no more than was charged");
        self.used.areas -= areas;
        self.used.bytes -= bytes;
    }

    /// Return what a `charge` took.
    pub fn refund(&mut self, charge: Usage) {
        self.used = self.used.minus(charge);
    }
}

const fn slot_entry<T>() -> u64 {
    (size_of::<T>() + size_of::<u64>()) as u64
}

const fn tree_entry<K, V>() -> u64 {
    2 * (size_of::<K>() + size_of::<V>()) as u64
}

const fn bytes(bytes: u64) -> Usage {
    Usage { handles: 0, areas: 0, pasids: 0, fault_queues: 0, domains: 0, bytes }
}

/// Bytes of one physical frame address kept per pinned page.
const FRAME_BYTES: u64 = size_of::<u64>() as u64;

/// A handle: its table entry and its place in its parent's list of derived handles.
pub(crate) const HANDLE: Usage = Usage { handles: 1, ..bytes(slot_entry::<HandleEntry>() + size_of::<HandleRef>() as u64) };

/// A PASID: its entries in the server's owner map and the client's set.
pub(crate) const PASID: Usage = Usage { pasids: 1, ..bytes(tree_entry::<u32, crate::ClientId>() + tree_entry::<u32, ()>()) };

/// A client named in another's `handle_accept`.
pub(crate) const ACCEPTANCE: Usage = bytes(tree_entry::<crate::ClientId, ()>());

/// A (device, PASID) attachment entry.
pub(crate) const ATTACHMENT: Usage = bytes(tree_entry::<Option<u32>, Attachment>());

/// A fault record, queued and then, for a page request, awaiting its answer.
pub(crate) const FAULT_RECORD: Usage = bytes((size_of::<QueuedFault>() as u64) + tree_entry::<u32, PendingRequest>());

/// An area: its tree entry in the IOAS and, unless registered memory pins it, one frame
/// address per page in the pin table.
pub(crate) fn area(area: &Area) -> Usage {
    Usage { areas: 1, ..bytes(area_bytes(area.length(), area.registration.is_some())) }
}

/// The bytes of `area` for an area of `length` bytes, `registered` or not.
pub(crate) fn area_bytes(length: u64, registered: bool) -> u64 {
    let frames = if registered { 0 } else { length / iommu_abi::PAGE_SIZE * FRAME_BYTES };
    tree_entry::<u64, Area>() + frames
}

const OBJECT: u64 = slot_entry::<Object>();

/// An object: its slot and what its body allocates, plus the count it is limited by.
pub(crate) fn object(body: &Body) -> Usage {
    match body {
        Body::Ioas(ioas) => bytes(OBJECT).plus(allowed_ranges(ioas.allowed.len())),
        Body::Hwpt(_) => HWPT,
        Body::Device(bound) => device(bound.reserved.len()),
        Body::Fault(_) => FAULT_QUEUE,
        Body::Memory(registered) => registration(registered.frames.len() as u64),
    }
}

/// An empty IOAS.
pub(crate) const IOAS: Usage = bytes(OBJECT);

/// An HWPT: its object, its entry in the index by parent, one domain.
pub(crate) const HWPT: Usage = Usage { domains: 1, ..bytes(OBJECT + tree_entry::<(HwptParent, ObjectId), ()>() + size_of::<HwDomainId>() as u64) };

/// A fault queue with room for its first records (each record is charged as it arrives).
pub(crate) const FAULT_QUEUE: Usage =
    Usage { fault_queues: 1, ..bytes(OBJECT + (FAULT_RECORDS_RESERVED * size_of::<QueuedFault>()) as u64) };

/// A device with `reserved` reserved regions: its object and its entry among the bound devices.
pub(crate) fn device(reserved: usize) -> Usage {
    bytes(OBJECT + (reserved * size_of::<ReservedRegion>()) as u64 + tree_entry::<(u32, u32), ObjectId>())
}

/// A registration of `pages` pages: its object and the frame address of every page.
pub(crate) fn registration(pages: u64) -> Usage {
    bytes(OBJECT + pages * FRAME_BYTES)
}

/// Bytes of `count` allowed ranges of an IOAS.
pub(crate) fn allowed_ranges(count: usize) -> Usage {
    bytes((count * size_of::<iommu_abi::IovaRange>()) as u64)
}

/// Failure injection for tests: make the Nth charge from now fail with `NoResources`, as if
/// the client's budget were exhausted there. Per thread, so parallel tests do not interfere.
#[cfg(test)]
pub(crate) mod injection {
    use std::cell::Cell;

    std::thread_local! {
        static CHARGES: Cell<usize> = const { Cell::new(0) };
        static FAIL_AT: Cell<Option<usize>> = const { Cell::new(None) };
    }

    /// Fail the `n`th charge from now (1 = the next); `None`: fail none.
    pub fn fail_nth_charge(n: Option<usize>) {
        FAIL_AT.set(n.map(|n| CHARGES.get() + n));
    }

    /// Whether an injected failure is still armed (the operation did not reach it).
    pub fn armed() -> bool {
        FAIL_AT.get().is_some_and(|at| at > CHARGES.get())
    }

    pub(super) fn next_charge_fails() -> bool {
        CHARGES.set(CHARGES.get() + 1);
        FAIL_AT.get() == Some(CHARGES.get())
    }
}
