//! Invalidation after table changes: IOTLB (page- or domain-selective), PASID-based IOTLB, and
//! the device-TLBs of ATS devices in the domain.

use alloc::vec::Vec;

use hwio::{Clock, DmaAllocator, Registers};

use super::{Mode, VtdUnit, RID_PASID};
use crate::descriptors::{covering_page_block, DeviceTlbRange, Invalidation, DEVICE_TLB_ALL};
use crate::{RequesterId, VtdError};

impl<R: Registers, C: Clock> VtdUnit<R, C> {
    /// Marks the device as using ATS: its context entry allows translation requests (legacy
    /// TT=01, scalable DTE=1) and every flush of its domain also invalidates its device-TLB.
    /// Takes effect at the next attach.
    pub fn enable_device_tlb(&mut self, requester: RequesterId) -> Result<(), VtdError> {
        if !self.hw.ecap.device_tlb() {
            return Err(VtdError::Unsupported("device-TLBs need ECAP.DT"));
        }
        self.devices.entry(requester.0).or_default().device_tlb = true;
        self.device_tlbs_enabled = true;
        Ok(())
    }

    /// Requesters using device-TLBs whose DMA with `pasid` (RID_PASID: without PASID) is in
    /// domain `did`.
    fn device_tlb_users(&self, did: u16, pasid: u32) -> Vec<RequesterId> {
        if !self.device_tlbs_enabled {
            return Vec::new();
        }
        self.devices
            .iter()
            .filter(|(_, device)| {
                device.device_tlb
                    && (device.pasids.get(&pasid) == Some(&did) || pasid == RID_PASID && device.legacy_did == Some(did))
            })
            .map(|(requester, _)| RequesterId(*requester))
            .collect()
    }

    /// Invalidates IOTLB entries of `did` for `[iova, iova + size)` after an unmap (or, in
    /// caching mode, a map): page-selective with the smallest covering address mask, or
    /// domain-selective when CAP.PSI is clear or the mask would exceed CAP.MAMV. Device-TLBs
    /// of ATS devices in the domain are invalidated for the same block.
    pub fn flush_iotlb_range<A: DmaAllocator>(&mut self, did: u16, iova: u64, size: u64, alloc: &A) -> Result<(), VtdError> {
        if size == 0 {
            return Ok(());
        }
        let (base, mask) = covering_page_block(iova, size);
        let cap = self.hw.cap;
        let request = if cap.page_selective_invalidation() && mask <= cap.max_address_mask() {
            Invalidation::IotlbPages { did, address: base, address_mask: mask, leaf_only: false }
        } else {
            Invalidation::IotlbDomain { did }
        };
        self.invalidate_with_device_tlbs(request, did, RID_PASID, DeviceTlbRange { base, pages_log2: mask }, alloc)
    }

    /// Issues `request` together with the matching device-TLB invalidations of the ATS devices
    /// that use (`did`, `pasid`), and waits for all of them.
    fn invalidate_with_device_tlbs<A: DmaAllocator>(
        &mut self,
        request: Invalidation,
        did: u16,
        pasid: u32,
        range: DeviceTlbRange,
        alloc: &A,
    ) -> Result<(), VtdError> {
        let users = self.device_tlb_users(did, pasid);
        if users.is_empty() {
            // The common case (no ATS device in the domain) needs no batch on the heap.
            return self.hw.invalidate(alloc, &[request]);
        }
        let mut batch = Vec::with_capacity(users.len() + 1);
        batch.push(request);
        batch.extend(users.into_iter().map(|requester| device_tlb_request(requester, pasid, range)));
        self.hw.invalidate(alloc, &batch)
    }

    /// Invalidates every IOTLB entry of `did` (and the device-TLBs of its ATS devices).
    pub fn flush_domain<A: DmaAllocator>(&mut self, did: u16, alloc: &A) -> Result<(), VtdError> {
        self.invalidate_with_device_tlbs(Invalidation::IotlbDomain { did }, did, RID_PASID, DEVICE_TLB_ALL, alloc)
    }

    /// Invalidates first-level (PASID-tagged) mappings of (`did`, `pasid`): the block covering
    /// `range` (iova, size) or, with `None` or a block beyond CAP.MAMV, all of them. Scalable
    /// mode only (PASID-based IOTLB invalidation needs the 256-bit queue).
    pub fn flush_pasid<A: DmaAllocator>(
        &mut self,
        did: u16,
        pasid: u32,
        range: Option<(u64, u64)>,
        alloc: &A,
    ) -> Result<(), VtdError> {
        if self.require_mode()? != Mode::Scalable {
            return Err(VtdError::Unsupported("PASID-based invalidation needs scalable mode"));
        }
        let block = range.filter(|&(_, size)| size != 0).map(|(iova, size)| covering_page_block(iova, size));
        let (request, device_range) = match block {
            Some((base, mask)) if mask <= self.hw.cap.max_address_mask() => (
                Invalidation::PasidIotlbPages { did, pasid, address: base, address_mask: mask, leaf_only: false },
                DeviceTlbRange { base, pages_log2: mask },
            ),
            _ => (Invalidation::PasidIotlbAll { did, pasid }, DEVICE_TLB_ALL),
        };
        self.invalidate_with_device_tlbs(request, did, pasid, device_range, alloc)
    }

    /// Invalidates first-level mappings of `did` as [`Self::flush_pasid`] does, for every PASID
    /// (RID_PASID included) a requester is attached at with `did`: PASID-based IOTLB
    /// invalidation is per (domain-id, PASID), so a domain attached at several PASIDs needs
    /// one per PASID. With no attachment, RID_PASID's (entries may outlive a detach only until
    /// its own invalidation, but the caller may not know the domain was attached).
    pub fn flush_first_level<A: DmaAllocator>(&mut self, did: u16, range: Option<(u64, u64)>, alloc: &A) -> Result<(), VtdError> {
        let mut pasids: Vec<u32> = self.devices.values().flat_map(|device| device.pasids.iter().filter(|&(_, &d)| d == did).map(|(&pasid, _)| pasid)).collect();
        pasids.sort_unstable();
        pasids.dedup();
        if pasids.is_empty() {
            pasids.push(RID_PASID);
        }
        for pasid in pasids {
            self.flush_pasid(did, pasid, range, alloc)?;
        }
        Ok(())
    }

    /// Performs arbitrary invalidation requests (e.g. after dirty-bit harvesting).
    pub fn invalidate<A: DmaAllocator>(&mut self, batch: &[Invalidation], alloc: &A) -> Result<(), VtdError> {
        self.hw.invalidate(alloc, batch)
    }
}

/// The device-TLB invalidation for `requester`'s DMA with `pasid` (RID_PASID: without PASID).
/// The queue depth is left 0 (the maximum, 32) and the requester is assumed to be its own
/// physical function, as the server does not yet pass SR-IOV topology down.
pub(super) fn device_tlb_request(requester: RequesterId, pasid: u32, range: DeviceTlbRange) -> Invalidation {
    if pasid == RID_PASID {
        Invalidation::DeviceTlb { source: requester.0, physical_function: requester.0, queue_depth: 0, range }
    } else {
        Invalidation::PasidDeviceTlb { source: requester.0, physical_function: requester.0, pasid, queue_depth: 0, range }
    }
}
