//! ASID and VMID allocation, bounded by what the SMMU implements (IDR0.ASID16 / IDR0.VMID16).
//!
//! A plain bitmap: ids are few (at most 65536) and allocation is rare (one per address space), so
//! first-fit from a rotating cursor is enough. Id 0 is never handed out: VMID 0 tags the TLB entries
//! of stage-1-only streams (with IDR0.S2P = 1 the SMMU tags even those with STE.S2VMID), and ASID 0
//! is kept unused so that a zeroed CD can never alias a live address space.

use alloc::vec;
use alloc::vec::Vec;

#[derive(Debug, Clone)]
pub struct IdAllocator {
    words: Vec<u64>,
    limit: u32,
    cursor: u32,
}

impl IdAllocator {
    /// Ids `1..2^bits`.
    pub fn new(bits: u32) -> IdAllocator {
        let limit = 1u32 << bits;
        let mut words = vec![0u64; limit.div_ceil(64) as usize];
        words[0] |= 1; // id 0 reserved
        IdAllocator { words, limit, cursor: 1 }
    }

    /// Number of ids this allocator covers, including the reserved 0.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    pub fn is_allocated(&self, id: u32) -> bool {
        id < self.limit && self.words[(id / 64) as usize] & (1 << (id % 64)) != 0
    }

    /// The next free id, or `None` when every id is in use.
    pub fn alloc(&mut self) -> Option<u32> {
        for step in 0..self.limit {
            let id = (self.cursor + step) % self.limit;
            if !self.is_allocated(id) {
                self.words[(id / 64) as usize] |= 1 << (id % 64);
                self.cursor = (id + 1) % self.limit;
                return Some(id);
            }
        }
        None
    }

    /// Releases `id`; false if it was not allocated (or is the reserved 0).
    pub fn free(&mut self, id: u32) -> bool {
        if id == 0 || !self.is_allocated(id) {
            return false;
        }
        self.words[(id / 64) as usize] &= !(1 << (id % 64));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_every_nonzero_id_once_then_reuses_freed_ones() {
        let mut ids = IdAllocator::new(8);
        let got: Vec<u32> = core::iter::from_fn(|| ids.alloc()).collect();
        assert_eq!(got.len(), 255);
        assert_eq!(got[0], 1);
        assert_eq!(*got.last().unwrap(), 255);
        assert!(ids.free(77));
        assert!(!ids.free(77));
        assert!(!ids.free(0));
        assert_eq!(ids.alloc(), Some(77));
        assert_eq!(ids.alloc(), None);
    }
}
