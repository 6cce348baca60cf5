//! Table pages shared with the remapping hardware, and the write discipline for entries in them.
//!
//! Hardware may fetch an entry at any moment, and ECAP.C=0 (QEMU's default) means its fetches
//! do not snoop CPU caches. [`DmaTable::publish`] therefore writes an entry so that the walker
//! can only ever see "not present" or the complete new entry:
//!
//! 1. words 1..N are written while word 0 (holding Present) still reads not-present, and are
//!    flushed to memory when walks are not coherent;
//! 2. a release fence orders those stores before
//! 3. the single 64-bit store of word 0, which is then flushed.
//!
//! The entry being replaced must already be not present (and invalidated from the caches);
//! that is the caller's half of the discipline, documented at [`crate::unit`].

use core::sync::atomic::{fence, Ordering};

use hwio::{DmaAllocator, DmaBuffer, VolatileRegion};

use crate::tables::HardwareEntry;
use crate::VtdError;

/// One physically contiguous table owned by the unit.
#[derive(Debug)]
pub struct DmaTable {
    buffer: DmaBuffer,
    coherent: bool,
}

impl DmaTable {
    /// A zeroed table of `size` bytes, 4 KiB aligned (every VT-d table pointer is 4 KiB aligned).
    pub fn allocate<A: DmaAllocator>(alloc: &mut A, size: usize, coherent: bool) -> Result<Self, VtdError> {
        let buffer = alloc.alloc_zeroed(size, 4096).ok_or(VtdError::OutOfMemory)?;
        Ok(Self { buffer, coherent })
    }

    /// Returns the memory to `alloc`. Hardware must no longer reference it.
    pub fn free<A: DmaAllocator>(self, alloc: &mut A) {
        alloc.free(self.buffer);
    }

    pub fn phys(&self) -> u64 {
        self.buffer.phys
    }

    /// The buffer's words; volatile because hardware may write them (status dwords,
    /// accessed/dirty bits) and reads them behind the compiler's back. Every access is checked
    /// to be aligned and inside the buffer.
    fn memory(&self) -> VolatileRegion {
        // SAFETY: the buffer came from a DmaAllocator and this table owns it until it is freed.
        unsafe { self.buffer.volatile() }
    }

    /// Reads the 64-bit word at `byte_offset`.
    pub fn read_word(&self, byte_offset: usize) -> u64 {
        self.memory().at::<u64>(byte_offset).read()
    }

    /// Reads the 32-bit word at `byte_offset` (wait-descriptor status dwords).
    pub fn read_u32(&self, byte_offset: usize) -> u32 {
        let word = self.read_word(byte_offset & !7);
        (word >> ((byte_offset & 4) * 8)) as u32
    }

    /// Writes the 64-bit word at `byte_offset` without any flush.
    pub fn write_word(&self, byte_offset: usize, value: u64) {
        self.memory().at::<u64>(byte_offset).write(value)
    }

    /// Makes `[byte_offset, byte_offset + len)` visible to a non-snooping walker.
    pub fn flush<A: DmaAllocator>(&self, alloc: &A, byte_offset: usize, len: usize) {
        if !self.coherent {
            assert!(byte_offset + len <= self.buffer.size);
            alloc.flush_for_device(self.buffer.virt.wrapping_add(byte_offset), len);
        }
    }

    pub fn read_entry<E: HardwareEntry>(&self, byte_offset: usize) -> E {
        let mut words = [0u64; 8];
        for (index, word) in words.iter_mut().take(E::WORDS).enumerate() {
            *word = self.read_word(byte_offset + index * 8);
        }
        E::from_words(&words[..E::WORDS])
    }

    /// Writes `entry` at `byte_offset` so a walker sees either the old not-present entry or
    /// the whole new one (module docs). An entry with a reserved bit set is refused, and
    /// nothing is written: hardware would fault on it ("reserved field set").
    pub fn publish<E: HardwareEntry, A: DmaAllocator>(&self, alloc: &A, byte_offset: usize, entry: &E) -> Result<(), VtdError> {
        if let Some(reserved) = entry.reserved_bits_set() {
            return Err(VtdError::ReservedBitsSet(reserved));
        }
        let words = entry.words();
        for (index, word) in words.iter().enumerate().skip(1) {
            self.write_word(byte_offset + index * 8, *word);
        }
        self.flush(alloc, byte_offset, E::WORDS * 8);
        fence(Ordering::Release);
        self.write_word(byte_offset, words[0]);
        self.flush(alloc, byte_offset, 8);
        Ok(())
    }

    /// Marks the entry at `byte_offset` not present (word 0 first), then zeroes the rest.
    pub fn clear<A: DmaAllocator>(&self, alloc: &A, byte_offset: usize, words: usize) {
        self.write_word(byte_offset, 0);
        self.flush(alloc, byte_offset, 8);
        fence(Ordering::Release);
        for index in 1..words {
            self.write_word(byte_offset + index * 8, 0);
        }
        self.flush(alloc, byte_offset, words * 8);
    }
}
