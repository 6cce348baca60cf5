//! Shared virtual addressing on VT-d: a process's own x86-64 page tables as a first-level
//! table, in a PASID entry of their own with a domain-id of their own.
//!
//! The entry is the device's RID_PASID slot for its DMA without a PASID (QEMU's `x-flts=on`
//! unit: the only DMA its devices issue), or any PASID on a unit with ECAP.PASID. The entry
//! leaves SRE clear, so every request is a user request: the unit refuses a leaf reached
//! through any entry with U/S = 0 (the kernel half of every process's tables), and QEMU
//! faults it with 81h. The server maps nothing in a bound table; when the process's tables
//! shrink, the kernel reports it and `invalidate_address_space` drops what the unit cached
//! (PASID-based IOTLB invalidation, which covers the paging-structure caches too) before the
//! server acknowledges.

use iommu_abi::Error;
use iommu_core::{AddressSpace, RequesterId, UnitId};
use vtd::unit::RID_PASID;
use vtd::{Mode, VtdError};

use super::{hardware, Unit, VtdBackend};
use crate::Environment;

/// What the backend keeps of one binding: the domain-id that tags its cached translations.
pub(super) struct Binding {
    pub(super) did: u16,
}

/// Where a binding lives on its unit.
pub(super) type BindingKey = (UnitId, RequesterId, Option<u32>);

impl<E: Environment> Unit<E> {
    /// A unit walks process tables if it is in scalable mode and translates first-level.
    pub(super) fn walks_process_tables(&self) -> bool {
        self.hw.mode() == Some(Mode::Scalable) && self.hw.extended_capability().first_level()
    }
}

impl<E: Environment> VtdBackend<E> {
    /// Points (`rid`, `pasid`) at the process's first-level table `space.root` under a fresh
    /// domain-id. On error nothing changed.
    pub(super) fn bind_address_space(&mut self, unit_id: UnitId, rid: RequesterId, pasid: Option<u32>, space: AddressSpace) -> Result<(), Error> {
        let key = (unit_id, rid, pasid);
        if self.sva.contains_key(&key) {
            return Err(Error::AlreadyAttached);
        }
        let unit = self.units.get_mut(unit_id.0 as usize).ok_or(Error::NoResources)?;
        if !unit.walks_process_tables() || unit.rmrrs.get(&(rid.0 as u16)).is_some_and(|r| !r.is_empty()) {
            return Err(Error::NotSupported);
        }
        let did = unit.domain_ids.allocate().map_err(hardware::<E>)?;
        let requester = vtd::RequesterId(rid.0 as u16);
        let translation = vtd::Translation::FirstLevel { root: space.root, five_level: false };
        let attached = match pasid {
            None => unit.hw.attach(requester, did, translation, &mut self.dma),
            Some(pasid) => unit.hw.attach_pasid(requester, pasid, did, translation, &mut self.dma),
        };
        if let Err(error) = attached {
            let _ = unit.domain_ids.free(did);
            return Err(hardware::<E>(error));
        }
        self.sva.insert(key, Binding { did });
        Ok(())
    }

    /// Removes the binding at (`unit`, `rid`, `pasid`), if there is one: its PASID entry is
    /// cleared with the PASID-cache and IOTLB invalidation that retires it, then its
    /// domain-id is free again. Returns whether there was a binding.
    pub(super) fn unbind_address_space(&mut self, unit_id: UnitId, rid: RequesterId, pasid: Option<u32>) -> bool {
        let Some(binding) = self.sva.remove(&(unit_id, rid, pasid)) else { return false };
        let unit = &mut self.units[unit_id.0 as usize];
        let requester = vtd::RequesterId(rid.0 as u16);
        let detached = match pasid {
            None => unit.hw.detach(requester, &mut self.dma),
            Some(pasid) => unit.hw.detach_pasid(requester, pasid, &mut self.dma),
        };
        match detached {
            Ok(()) | Err(VtdError::NotAttached) => {}
            Err(error) => panic!("FATAL: unbinding {:#06x} failed ({error:?}); the device may still reach the process's memory", rid.0),
        }
        let _ = unit.domain_ids.free(binding.did);
        true
    }

    /// Drops what the unit cached of the binding at (`unit`, `rid`, `pasid`) for
    /// `[iova, iova + length)` and waits. A unit that does not complete the invalidation stops
    /// the server before the kernel is told the frames are free.
    pub(super) fn invalidate_binding(&mut self, unit_id: UnitId, rid: RequesterId, pasid: Option<u32>, iova: u64, length: u64) {
        let Some(binding) = self.sva.get(&(unit_id, rid, pasid)) else { return };
        let unit = &mut self.units[unit_id.0 as usize];
        if let Err(error) = unit.hw.flush_pasid(binding.did, pasid.unwrap_or(RID_PASID), Some((iova, length)), &self.dma) {
            panic!("FATAL: invalidation of the address space bound to {:#06x} failed ({error:?}); refusing to let the kernel reuse its frames", rid.0);
        }
    }
}
