//! Typed access to memory that another agent reads or writes behind the compiler's back:
//! device registers, pages shared with another process, tables and queues an IOMMU walks.
//! Built on the `volatile` crate: every access is exactly one load or store of the width of
//! its type, never merged, split, repeated or elided.

use core::mem::{align_of, size_of};
use core::ptr::NonNull;

use volatile::VolatilePtr;

use crate::Registers;

/// `len` bytes of device registers, shared pages or device-visible tables at `base`, accessed
/// at byte offsets with volatile loads and stores only.
#[derive(Clone, Copy, Debug)]
pub struct VolatileRegion {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: a region is an address range, not an owner of it; every access through it is one
// volatile load or store, which is as sound from one thread as from another.
unsafe impl Send for VolatileRegion {}

impl VolatileRegion {
    /// # Safety
    /// `[base, base + len)` must stay mapped, readable and writable, for as long as the region or
    /// a copy of it is used, and `base` must be 8-byte aligned.
    pub const unsafe fn new(base: NonNull<u8>, len: usize) -> Self {
        VolatileRegion { base, len }
    }

    /// The same as [`VolatileRegion::new`] from an address.
    ///
    /// # Safety
    /// As for [`VolatileRegion::new`]; `base` must not be 0.
    pub const unsafe fn at_address(base: usize, len: usize) -> Self {
        // SAFETY: the caller promises a non-zero address.
        VolatileRegion { base: unsafe { NonNull::new_unchecked(base as *mut u8) }, len }
    }

    /// Bytes in the region.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether the region has no bytes.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `T` at byte `offset`. Panics when it lies outside the region or is misaligned: an
    /// offset is the driver's own constant or index, so either is a bug, not a device's answer.
    #[inline]
    pub fn at<T: Copy>(&self, offset: usize) -> VolatilePtr<'_, T> {
        let inside = offset.checked_add(size_of::<T>()).is_some_and(|end| end <= self.len);
        if !inside || !offset.is_multiple_of(align_of::<T>()) {
            outside();
        }
        // SAFETY: inside the region (checked above), which `new`'s contract keeps mapped; aligned
        // because the base is 8-byte aligned and the offset a multiple of `T`'s alignment.
        unsafe { VolatilePtr::new(self.base.add(offset).cast::<T>()) }
    }

    /// The 64-bit word at `index` (byte offset `8 * index`).
    #[inline]
    pub fn word(&self, index: usize) -> VolatilePtr<'_, u64> {
        self.at(index.saturating_mul(8))
    }
}

/// The panic of a bad offset, out of line and without arguments so that the checks inline into
/// every access as a compare and a branch.
#[cold]
#[inline(never)]
#[track_caller]
fn outside() -> ! {
    panic!("access outside the region or unaligned")
}

impl Registers for VolatileRegion {
    #[inline]
    fn read32(&self, offset: usize) -> u32 {
        self.at::<u32>(offset).read()
    }
    #[inline]
    fn write32(&self, offset: usize, value: u32) {
        self.at::<u32>(offset).write(value)
    }
    #[inline]
    fn read64(&self, offset: usize) -> u64 {
        self.at::<u64>(offset).read()
    }
    #[inline]
    fn write64(&self, offset: usize, value: u64) {
        self.at::<u64>(offset).write(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(words: &mut [u64]) -> VolatileRegion {
        let len = core::mem::size_of_val(words);
        // SAFETY: the slice outlives every use in the test and is 8-byte aligned.
        unsafe { VolatileRegion::new(NonNull::from(words).cast(), len) }
    }

    #[test]
    fn accesses_land_at_their_byte_offsets() {
        let mut words = [0u64; 4];
        let r = region(&mut words);
        r.write64(8, 0x1122_3344_5566_7788);
        r.write32(16, 0xaabb_ccdd);
        r.word(3).write(7);
        assert_eq!(r.read32(8), 0x5566_7788, "little-endian low half");
        assert_eq!(r.read32(12), 0x1122_3344);
        assert_eq!(r.read64(16), 0xaabb_ccdd);
        assert_eq!(words, [0, 0x1122_3344_5566_7788, 0xaabb_ccdd, 7]);
    }

    #[test]
    #[should_panic(expected = "outside the region or unaligned")]
    fn an_access_past_the_end_panics() {
        let mut words = [0u64; 2];
        region(&mut words).read32(16);
    }

    #[test]
    #[should_panic(expected = "outside the region or unaligned")]
    fn a_misaligned_access_panics() {
        let mut words = [0u64; 2];
        region(&mut words).read64(4);
    }
}
