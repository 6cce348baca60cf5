//! Access to DMA memory shared with the SMMU, and the barriers that order it.
//!
//! Tables and queues live in [`DmaBuffer`]s; the driver writes them through `virt` with volatile
//! 64-bit stores (the SMMU reads STE, CD and descriptor words with 64-bit single-copy atomicity, so
//! a word must never be written in halves) and flushes them for non-coherent walkers through
//! [`DmaAllocator::flush_for_device`].

use hwio::{DmaAllocator, DmaBuffer, VolatileRegion};

use crate::error::SmmuError;

/// Allocates a zeroed buffer of at least `size` bytes aligned to its own (power-of-two, at least
/// 4 KiB) size: stream tables, L2 tables and queues must be aligned to their size, and QEMU masks
/// the low bits of a misaligned base silently.
pub(crate) fn alloc_aligned(dma: &mut dyn DmaAllocator, size: usize) -> Result<DmaBuffer, SmmuError> {
    let size = size.max(4096).next_power_of_two();
    let buf = dma.alloc_zeroed(size, size).ok_or(SmmuError::OutOfMemory)?;
    if buf.phys % size as u64 != 0 || buf.size < size || !(buf.virt as usize).is_multiple_of(8) {
        dma.free(buf);
        return Err(SmmuError::InvalidConfig("DMA allocator returned a misaligned buffer"));
    }
    Ok(buf)
}

/// Writes one 64-bit word at byte `offset` of `buf`.
pub(crate) fn write_word(buf: &DmaBuffer, offset: usize, value: u64) {
    memory(buf).at::<u64>(offset).write(value)
}

/// Reads one 64-bit word at byte `offset` of `buf`.
pub(crate) fn read_word(buf: &DmaBuffer, offset: usize) -> u64 {
    memory(buf).at::<u64>(offset).read()
}

/// `buf` as volatile memory (the SMMU reads tables and commands and writes event records
/// behind the compiler's back); every access is checked to be aligned and inside the buffer.
fn memory(buf: &DmaBuffer) -> VolatileRegion {
    // SAFETY: every buffer the driver holds came from a DmaAllocator (8-byte alignment checked
    // in `alloc_aligned`) and stays allocated while the driver uses it.
    unsafe { buf.volatile() }
}

/// Writes `words` starting at byte `offset` and makes them visible to a non-coherent SMMU.
pub(crate) fn write_words(dma: &dyn DmaAllocator, buf: &DmaBuffer, offset: usize, words: &[u64]) {
    for (i, word) in words.iter().enumerate() {
        write_word(buf, offset + 8 * i, *word);
    }
    flush(dma, buf, offset, 8 * words.len());
}

pub(crate) fn flush(dma: &dyn DmaAllocator, buf: &DmaBuffer, offset: usize, len: usize) {
    assert!(offset + len <= buf.size);
    // `wrapping_add` keeps this free of unsafe; the range was checked against the buffer above.
    dma.flush_for_device(buf.virt.wrapping_add(offset), len);
}

/// Orders every earlier store to DMA memory before any later store or register write, as observed
/// by the SMMU: used between the tail and word 0 of an STE, and before publishing CMDQ_PROD.
pub(crate) fn publish_to_device() {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: `dsb st` waits for earlier stores to complete; it reads or writes no memory or
    // registers of its own.
    unsafe {
        core::arch::asm!("dsb st", options(nostack, preserves_flags))
    };
    #[cfg(not(target_arch = "aarch64"))]
    core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
}

/// Orders a register read that reported new device-written data (EVENTQ_PROD) before the reads of
/// that data.
pub(crate) fn acquire_from_device() {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: `dsb ld` waits for earlier loads to complete; it has no other effect.
    unsafe {
        core::arch::asm!("dsb ld", options(nostack, preserves_flags))
    };
    #[cfg(not(target_arch = "aarch64"))]
    core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
}
