//! What an IOMMU driver needs from the environment it runs in, as three small traits.
//!
//! The VT-d and SMMUv3 drivers and the page-table builders are pure code: in the IOMMU server they
//! run on MMIO capabilities and memory objects whose physical addresses the kernel vouches for; in
//! host unit tests they run on software models of the hardware. These traits are the seam.
//!
//! Beside them live the mechanisms every driver shares: [`wait`], the one bounded wait on
//! hardware; [`bits`], the one bit-field convention of every hardware layout; and
//! [`SharedWords`], the one accessor of words shared with another process.
#![cfg_attr(not(test), no_std)]

pub mod bits;
mod io;
mod shared;
pub mod wait;

pub use io::VolatileRegion;
pub use shared::SharedWords;

/// A block of device registers. Offsets are in bytes from the block's base.
///
/// Implementations perform exactly the access width named: QEMU's VT-d model aborts on an 8-byte
/// access to a 32-bit register, and SMMUv3 ID registers must be read 32 bits at a time.
pub trait Registers {
    fn read32(&self, offset: usize) -> u32;
    fn write32(&self, offset: usize, value: u32);
    fn read64(&self, offset: usize) -> u64;
    fn write64(&self, offset: usize, value: u64);
}

/// A shared reference to registers is registers too: several drivers (or a driver and a test)
/// can share one model or one register window.
impl<R: Registers + ?Sized> Registers for &R {
    fn read32(&self, offset: usize) -> u32 {
        (**self).read32(offset)
    }

    fn write32(&self, offset: usize, value: u32) {
        (**self).write32(offset, value)
    }

    fn read64(&self, offset: usize) -> u64 {
        (**self).read64(offset)
    }

    fn write64(&self, offset: usize, value: u64) {
        (**self).write64(offset, value)
    }
}

/// One physically contiguous, zero-filled allocation that devices and IOMMUs can read by physical
/// address, and the driver through `virt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaBuffer {
    pub phys: u64,
    pub virt: *mut u8,
    pub size: usize,
}

impl DmaBuffer {
    /// The buffer's memory as a [`VolatileRegion`]: the device reads and writes it behind the
    /// compiler's back.
    ///
    /// # Safety
    /// The buffer must come from a [`DmaAllocator`] (whose `virt` maps `size` bytes, 8-byte
    /// aligned) and must not be freed while the region is used.
    pub unsafe fn volatile(&self) -> VolatileRegion {
        // SAFETY: `virt` is a live, aligned mapping of `size` bytes by the caller's contract.
        unsafe { VolatileRegion::at_address(self.virt as usize, self.size) }
    }
}

/// Source of memory for IOMMU tables (root/context/PASID tables, stream tables, queues, page
/// tables).
pub trait DmaAllocator {
    /// A zeroed buffer of `size` bytes whose physical address is aligned to `align` (a power of
    /// two, at least 4096). `None` when memory is exhausted.
    fn alloc_zeroed(&mut self, size: usize, align: usize) -> Option<DmaBuffer>;
    /// Returns a buffer obtained from `alloc_zeroed`.
    fn free(&mut self, buffer: DmaBuffer);
    /// Makes CPU writes to `[virt, virt + len)` visible to an IOMMU whose table walks do not snoop
    /// the CPU caches (VT-d ECAP.C = 0). A no-op where walks are coherent.
    fn flush_for_device(&self, virt: *const u8, len: usize);
}

/// A monotonic clock for bounding every wait on hardware.
pub trait Clock {
    /// Nanoseconds since an arbitrary origin.
    fn now_ns(&self) -> u64;
}
