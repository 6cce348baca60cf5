//! Domain-id allocation (VT-d spec 3.4.1, 6.2.1).
//!
//! Domain-ids tag IOTLB and context-cache entries, so two translation domains must never share
//! one while either is attached. The unit supports 2^(4 + 2 * CAP.ND) ids. With CAP.CM=1
//! hardware uses domain-id 0 to tag cached not-present/invalid entries, so it is never handed
//! out there.

use alloc::vec;
use alloc::vec::Vec;

use crate::regs::Capability;
use crate::VtdError;

/// A bitmap allocator over the unit's domain-ids.
#[derive(Debug, Clone)]
pub struct DomainIdAllocator {
    used: Vec<u64>,
    count: u32,
    first: u32,
}

impl DomainIdAllocator {
    pub fn new(cap: Capability) -> Self {
        let count = cap.domain_count();
        Self { used: vec![0; (count as usize).div_ceil(64)], count, first: cap.caching_mode() as u32 }
    }

    /// The lowest free domain-id.
    pub fn allocate(&mut self) -> Result<u16, VtdError> {
        // Ids below `first` are reserved: search as if they were taken.
        let reserved = (1u64 << self.first) - 1;
        for (index, word) in self.used.iter_mut().enumerate() {
            let taken = *word | if index == 0 { reserved } else { 0 };
            if taken == u64::MAX {
                continue;
            }
            let bit = (!taken).trailing_zeros();
            let id = index as u32 * 64 + bit;
            if id >= self.count {
                break;
            }
            *word |= 1 << bit;
            return Ok(id as u16);
        }
        Err(VtdError::DomainIdsExhausted)
    }

    /// Returns `id` for reuse. Callers free an id only after its last attachment was detached
    /// and the caches tagged with it were invalidated.
    pub fn free(&mut self, id: u16) -> Result<(), VtdError> {
        let id = id as u32;
        if id < self.first || id >= self.count || self.used[id as usize / 64] >> (id % 64) & 1 == 0 {
            return Err(VtdError::InvalidArgument("domain-id not allocated"));
        }
        self.used[id as usize / 64] &= !(1 << (id % 64));
        Ok(())
    }

    pub fn is_allocated(&self, id: u16) -> bool {
        (id as u32) < self.count && self.used[id as usize / 64] >> (id % 64) & 1 == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ND=0: 16 domain-ids.
    const SMALL_CAP: u64 = 0x0000_0000_0000_0600;

    #[test]
    fn exhaustion_and_reuse() {
        let mut ids = DomainIdAllocator::new(Capability(SMALL_CAP));
        let all: Vec<u16> = (0..16).map(|_| ids.allocate().unwrap()).collect();
        assert_eq!(all, (0..16).collect::<Vec<u16>>());
        assert_eq!(ids.allocate(), Err(VtdError::DomainIdsExhausted));
        ids.free(7).unwrap();
        assert!(!ids.is_allocated(7));
        assert_eq!(ids.allocate(), Ok(7));
        assert_eq!(ids.free(200), Err(VtdError::InvalidArgument("domain-id not allocated")));
    }

    #[test]
    fn caching_mode_reserves_zero() {
        let mut ids = DomainIdAllocator::new(Capability(SMALL_CAP | 1 << 7));
        assert_eq!(ids.allocate(), Ok(1));
        assert_eq!((2..16).map(|_| ids.allocate().unwrap()).count(), 14);
        assert_eq!(ids.allocate(), Err(VtdError::DomainIdsExhausted));
        assert!(ids.free(0).is_err());
    }

    #[test]
    fn qemu_has_65536_ids() {
        let mut ids = DomainIdAllocator::new(Capability(0x00d2_008c_222f_0606));
        for _ in 0..65536 {
            ids.allocate().unwrap();
        }
        assert_eq!(ids.allocate(), Err(VtdError::DomainIdsExhausted));
    }
}
