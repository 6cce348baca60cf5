//! Arm SMMUv3 driver (IHI 0070) as pure code, for the user-level IOMMU server.
//!
//! The driver programs one SMMU through [`hwio::Registers`], builds its stream table, context
//! descriptors and queues in memory from [`hwio::DmaAllocator`], and bounds every wait with
//! [`hwio::Clock`]. Page tables are not built here: attach calls take the root address and shape
//! of tables built by the `iommu-pt` crate.
//!
//! Layout of the crate:
//! * [`regs`]: register offsets and decoders/encoders (IDR0..5, CR0..2, GBPA, IRQ_CTRL, GERROR,
//!   STRTAB_BASE(_CFG), queue bases).
//! * [`ste`], [`cd`], [`cmd`], [`event`]: the in-memory structures as typed 64-bit word arrays with
//!   named field accessors (64-byte STE and CD, 16-byte commands, 32-byte event records).
//! * [`queue`]: circular queue pointers with wrap bits; [`ids`]: ASID/VMID allocation.
//! * [`pri`]: PRI queue entries, CMD_PRI_RESP and CMD_RESUME (recoverable faults).
//! * [`config`]: the stage-1/stage-2/nested configurations callers attach, validated against
//!   the ID registers and QEMU's limits.
//! * [`smmu`]: [`Smmu`], the driver: bring-up, stream configuration with ordered (never torn) STE
//!   updates, command submission and error recovery, TLB invalidation, event draining.
//! * `model` (tests, or feature `model`): a software SMMUv3 over fake memory that executes commands
//!   and walks STE → CD → page tables the way QEMU 10.0.2 does, for host tests.
//!
//! Target hardware is QEMU 10.0.2's `-machine virt,iommu=smmuv3` (both stages, 2-level stream
//! tables, 16-bit StreamIDs, no substreams/ATS/PRI/MSI/HTTU); its quirks are documented where the
//! code meets them.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod cd;
pub mod cmd;
pub mod config;
mod dma;
pub mod error;
pub mod event;
pub mod ids;
pub mod pri;
pub mod queue;
pub mod regs;
pub mod smmu;
pub mod ste;

#[cfg(any(test, feature = "model"))]
pub mod model;

#[cfg(test)]
mod tests;

pub use cd::ContextDescriptor;
pub use cmd::Command;
pub use config::{NestedStage1, Stage1Config, Stage2Config};
pub use error::{SmmuError, WaitTarget};
pub use event::{DecodedEvent, EventRecord, EventType, FaultClass};
pub use regs::{Granule, Httu, IdRegisters};
pub use smmu::{CdTableLayout, Env, EventDrain, GerrorReport, PriDrain, Smmu, SmmuOptions, TlbScope};
pub use ste::{Ste, StreamConfig};
