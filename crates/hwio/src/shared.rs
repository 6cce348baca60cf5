//! Words of memory shared with another process: the IOMMU server's status page, IPC message
//! windows, a driver's report page, pages lent between test programs. The other side reads and
//! writes them while this side runs, so every access is one volatile 64-bit load or store
//! (never merged, split, repeated or elided) at a word index checked against the length.
//!
//! The length is part of the type: each check is against a constant, so an access at a
//! constant index, or in a loop over a shorter array, costs no check at run time (a message
//! window is copied in and out on every IPC request).

use core::ptr::NonNull;

use crate::VolatileRegion;

/// `LEN` 64-bit words shared with another process (or with the kernel, which reads a process's
/// pages through its direct map).
#[derive(Clone, Copy, Debug)]
pub struct SharedWords<const LEN: usize> {
    base: NonNull<u8>,
}

// SAFETY: like `VolatileRegion`, an address range rather than an owner of it; every access is
// one volatile load or store, as sound from one thread as from another.
unsafe impl<const LEN: usize> Send for SharedWords<LEN> {}

impl<const LEN: usize> SharedWords<LEN> {
    /// # Safety
    /// `[base, base + 8 * LEN)` must stay mapped and readable (writable too, if written through
    /// this or a copy) for as long as it or a copy is used; `base` must be 8-byte aligned and not
    /// 0.
    #[inline]
    pub const unsafe fn at_address(base: usize) -> Self {
        // SAFETY: the caller promises a non-zero address.
        SharedWords { base: unsafe { NonNull::new_unchecked(base as *mut u8) } }
    }

    /// Words shared.
    pub const fn len(&self) -> usize {
        LEN
    }

    /// Whether no word is shared.
    pub const fn is_empty(&self) -> bool {
        LEN == 0
    }

    #[inline]
    fn words(&self) -> VolatileRegion {
        // SAFETY: `at_address`'s contract: mapped, 8-byte aligned, `LEN` words long.
        unsafe { VolatileRegion::new(self.base, LEN * 8) }
    }

    /// Word `index` as the other side last wrote it. Panics if `index` is not below `LEN`.
    #[inline]
    pub fn read(&self, index: usize) -> u64 {
        self.words().word(index).read()
    }

    /// Stores `value` at word `index`. Panics if `index` is not below `LEN`.
    #[inline]
    pub fn write(&self, index: usize, value: u64) {
        self.words().word(index).write(value)
    }

    /// Adds `delta` (wrapping) to word `index`: one load and one store, so only for words this
    /// side alone writes (counters the other side only reads).
    #[inline]
    pub fn add(&self, index: usize, delta: u64) {
        self.words().word(index).update(|old| old.wrapping_add(delta))
    }

    /// Words `0..N`, each loaded exactly once (the other side may change them meanwhile: a copy
    /// taken once is what the caller checks and uses). Panics if `N` exceeds `LEN`.
    #[inline]
    pub fn read_array<const N: usize>(&self) -> [u64; N] {
        core::array::from_fn(|index| self.read(index))
    }

    /// Stores `words` at words `0..words.len()`, in order. Panics if there are more than `LEN`.
    #[inline]
    pub fn write_slice(&self, words: &[u64]) {
        for (index, &word) in words.iter().enumerate() {
            self.write(index, word);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared<const LEN: usize>(words: &mut [u64]) -> SharedWords<LEN> {
        assert!(words.len() >= LEN);
        // SAFETY: the slice holds at least `LEN` words, outlives every use in the test and is
        // 8-byte aligned.
        unsafe { SharedWords::at_address(words.as_mut_ptr() as usize) }
    }

    #[test]
    fn words_land_at_their_indices() {
        let mut page = [0u64; 16];
        let words = shared::<16>(&mut page);
        words.write(3, 7);
        words.add(3, 5);
        words.add(4, u64::MAX);
        words.add(4, 2);
        words.write_slice(&[10, 11]);
        assert_eq!((words.read(3), words.read(4), words.len()), (12, 1, 16));
        assert_eq!(words.read_array::<5>(), [10, 11, 0, 12, 1]);
        assert_eq!(page[..6], [10, 11, 0, 12, 1, 0], "nothing written beyond the words named");
    }

    #[test]
    #[should_panic(expected = "outside the region or unaligned")]
    fn an_index_past_the_end_panics() {
        let mut page = [0u64; 4];
        shared::<2>(&mut page).read(2);
    }

    #[test]
    #[should_panic(expected = "outside the region or unaligned")]
    fn an_array_longer_than_the_words_panics() {
        let mut page = [0u64; 4];
        shared::<2>(&mut page).read_array::<3>();
    }

    #[test]
    #[should_panic(expected = "outside the region or unaligned")]
    fn a_slice_longer_than_the_words_panics() {
        let mut page = [0u64; 4];
        shared::<2>(&mut page).write_slice(&[1, 2, 3]);
    }
}
