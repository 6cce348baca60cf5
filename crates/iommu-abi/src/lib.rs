//! The IPC protocol between device drivers and the user-level IOMMU server.
//!
//! The protocol is modelled on Linux iommufd: a driver owns objects in the server (I/O
//! address spaces, hardware page tables, bound devices, fault queues) and names them by
//! *handles* in its own handle table. Each handle carries [`Rights`]; handles can be
//! derived with fewer rights into another client's table and revoked again.
//!
//! * [`error`]: the [`Error`] codes, shared with the server's object model.
//! * [`types`]: handles, rights, permissions, ranges, fault records, unit information.
//! * [`wire`]: the fixed eight-word message layout and the table declaring every operation
//!   once, from which the total, validating decoder and the server's handler trait follow.
//! * [`kernel_ipc`]: how those eight words travel over the kernel's four-word IPC (a shared
//!   message window per client).
//!
//! The server-side dispatcher lives in `iommu-core` (which depends on this crate for the
//! shared error type; the reverse dependency would be a cycle), the typed client and the
//! kernel transport in `iommu-client`. The driver-facing reference is `docs/ipc-api.md`.
#![cfg_attr(not(test), no_std)]

pub mod error;
pub mod kernel_ipc;
pub mod types;
pub mod wire;

#[cfg(test)]
mod api_doc_tests;
#[cfg(test)]
mod tests;

pub use error::Error;
pub use types::{
    Access, DeviceId, DeviceInfo, FaultId, FaultReason, FaultRecord, FaultStage, Handle, HwptId, IoasId, IovaRange, MemoryId,
    Invalidation, PageResponseCode, Perm, Rights, Stage1Config, Stage1Format, UnitCaps, UnitKind, INVALIDATIONS_PER_CALL,
    PAGE_SIZE,
};
pub use wire::{FaultBatch, IovaChoice, Message, Opcode, RangeList, Reply, ReplyShape, Request};
