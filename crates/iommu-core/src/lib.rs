//! The hardware-neutral object model of the user-level IOMMU server.
//!
//! It plays the role Linux's iommufd plays for a process: a driver (a *client*) creates
//! objects and names them by handles.
//!
//! * **IOAS** — an I/O address space: a set of mappings (areas) from IOVA ranges to pinned
//!   pages of the client's memory objects, plus allowed ranges.
//! * **HWPT** — a hardware page table on one IOMMU unit. A *paging* HWPT mirrors an IOAS:
//!   every mapping of the IOAS is mapped into every paging HWPT of it before the map
//!   request returns. A *nested* HWPT is a user-owned stage-1 table over a paging parent
//!   (stage 2) allocated with `nest_parent`.
//! * **DEVICE** — a device bound from a kernel-verified [`DeviceGrant`]. It has attachments:
//!   per PASID slot (or the requester ID itself) an HWPT or an SVA binding of a process
//!   address space.
//! * **FAULT** — a bounded queue of fault records; HWPTs and SVA bindings name one.
//! * **MEMORY** — a memory object registered once (verified with the kernel, pinned whole),
//!   mapped from by handle with no further kernel work; busy while mapped.
//!
//! Ownership and sharing: objects live in one server-global table and are owned by the
//! client that created it; clients hold per-client handle tables whose entries point at
//! objects with [`Rights`](iommu_abi::Rights). A handle with GRANT can be *derived* into
//! the holder's own table, or another client's that accepted handles from the holder, with a
//! subset of its rights; revoking a handle revokes everything
//! derived from it, transitively. Destroying an object removes every handle to it.
//! Closing a client tears down what it owns, including other clients' attachments to it.
//!
//! Hardware is reached through [`IommuBackend`] (VT-d and SMMUv3 drivers implement it),
//! client memory through [`MemorySource`] (the kernel). [`dispatch`] connects the IPC
//! protocol of `iommu-abi` to an [`ObjectModel`]. The `fake` module (feature `fake`, and in
//! tests) provides a recording backend and memory source.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod backend;
pub mod budget;
pub mod dispatch;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
pub mod iova;
pub mod memory;
mod objects;
pub mod model;

#[cfg(test)]
mod tests;

pub use backend::{
    AddressSpace, DomainConfig, DrainedFault, FaultEvent, HwDomain, HwDomainId, IommuBackend, MsiMessage, RequesterId, ReservedKind, ReservedRegion,
    Translation, UnitId, UnitInfo,
};
pub use budget::{ClientLimits, Usage};
pub use dispatch::{dispatch, CapabilityVerifier};
pub use memory::{MemoryObjectId, MemoryObjectInfo, MemorySource, PinTable, PinnedPages};
pub use objects::{ObjectId, ObjectKind};
pub use model::{AddressSpaceChange, Counters, DeviceGrant, FaultDelivery, HwptAllocOptions, IsolationGroup, ObjectModel, Revoked, ServerConfig};

/// A connected client, identified by the badge the kernel attaches to its IPC endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub u64);
