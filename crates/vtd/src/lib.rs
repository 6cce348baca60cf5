//! Intel VT-d remapping-unit driver as pure code (Intel VT-d Architecture Specification rev 4.x).
//!
//! One [`VtdUnit`] drives one DMA-remapping hardware unit (a DRHD in the ACPI DMAR table). It
//! touches the hardware only through [`hwio::Registers`], allocates every table through
//! [`hwio::DmaAllocator`], and bounds every wait on hardware with [`hwio::Clock`], so the same
//! code runs in the IOMMU server on MMIO capabilities and in host tests on [`model`].
//!
//! Layering, bottom up:
//! * [`regs`]: register offsets and CAP/ECAP decoding;
//! * [`tables`], [`descriptors`], [`irq`]: the typed in-memory layouts hardware reads;
//! * [`dma`]: how entries are written so hardware never sees half an entry;
//! * [`invalidate`]: queued and register-based invalidation behind one trait;
//! * [`fault`]: fault-record decoding and the fault-reason table;
//! * [`page_request`]: page request descriptors (PRI) and their decoding;
//! * [`domain_id`]: the domain-id allocator;
//! * [`unit`](mod@unit): the unit itself: bring-up with default deny, attach/detach (legacy, scalable
//!   first-level, second-level, nested, pass-through, per-PASID), flushes, faults, interrupt
//!   remapping.
//!
//! Page tables are not built here: attach takes the root of tables built elsewhere.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod descriptors;
pub mod dma;
pub mod domain_id;
pub mod fault;
pub mod invalidate;
pub mod irq;
#[cfg(any(test, feature = "model"))]
pub mod model;
pub mod page_request;
pub mod regs;
pub mod tables;
pub mod unit;

#[cfg(test)]
mod page_request_tests;
#[cfg(test)]
mod tests;

pub use domain_id::DomainIdAllocator;
pub use fault::{AccessKind, DecodedFault, FaultKind, FaultReport};
pub use irq::{InterruptRemapEntry, RemappableMsi};
pub use unit::{Mode, Translation, VtdUnit};

use hwio::Clock;

/// A PCI requester id: bus in bits 15:8, device in 7:3, function in 2:0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequesterId(pub u16);

impl RequesterId {
    pub fn new(bus: u8, device: u8, function: u8) -> Self {
        Self((bus as u16) << 8 | ((device as u16) & 0x1f) << 3 | (function as u16) & 7)
    }
    pub fn bus(self) -> u8 {
        (self.0 >> 8) as u8
    }
    /// Device and function together, the index into a context table.
    pub fn devfn(self) -> u8 {
        self.0 as u8
    }
    pub fn device(self) -> u8 {
        self.devfn() >> 3
    }
    pub fn function(self) -> u8 {
        self.devfn() & 7
    }
}

/// Which hardware wait ran out of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitTarget {
    /// GSTS did not reflect a GCMD bit (the payload is the bit).
    GlobalStatus(u32),
    /// CCMD.ICC did not clear.
    ContextCommand,
    /// IOTLB_REG.IVT did not clear.
    IotlbCommand,
    /// An invalidation wait descriptor's status write never arrived.
    InvalidationWait,
    /// PMEN.PRS did not clear.
    ProtectedMemory,
}

/// Everything that can go wrong driving a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VtdError {
    /// Hardware did not complete an operation within the timeout.
    Timeout(WaitTarget),
    /// The DMA allocator had no memory.
    OutOfMemory,
    /// The unit lacks a capability the request needs.
    Unsupported(&'static str),
    /// A caller-supplied value is out of range for this unit.
    InvalidArgument(&'static str),
    /// The operation needs `init` first.
    NotInitialized,
    /// Hardware reported an invalidation queue error (FSTS.IQE/ICE/ITE); `head` is IQH at the
    /// time. The queue has been reset to empty.
    InvalidationQueueError { fault_status: u32, head: u64 },
    /// Register-based invalidation completed with actual granularity 00 (not performed).
    InvalidationRejected,
    /// Every domain-id is in use.
    DomainIdsExhausted,
    /// The requester (or PASID) has no attachment to detach.
    NotAttached,
    /// The driver was about to write an entry with reserved bits set (which hardware faults
    /// on); nothing was written.
    ReservedBitsSet(hwio::bits::ReservedBitsSet),
}

/// Default bound on every wait for hardware: one second, as generous as Linux's.
pub const DEFAULT_TIMEOUT_NS: u64 = 1_000_000_000;

/// Polls `done` until it returns true or `timeout_ns` elapse on `clock` ([`hwio::wait`]),
/// naming the wait that ran out of time.
pub(crate) fn wait_for<C: Clock>(
    clock: &C,
    timeout_ns: u64,
    target: WaitTarget,
    done: impl FnMut() -> bool,
) -> Result<(), VtdError> {
    hwio::wait::poll_until(clock, timeout_ns, done).map_err(|_| VtdError::Timeout(target))
}
