//! Dirty tracking of SMMUv3 stage-1 domains with hardware dirty-state update (IDR0.HTTU =
//! 0b10, CD.HA/HD; spec 3.13.3): a tracking domain's writable leaves carry DBM and start
//! writable-clean (AP[2] set, `iommu_pt::smmu_stage1`); the first write through one clears
//! AP[2]. Reading reports the leaves with DBM and AP[2] clear and, unless asked not to, sets
//! AP[2] again and then invalidates the range by ASID: a TLB entry filled by a write keeps
//! the leaf writable, so without the invalidation a later write would not be recorded. QEMU
//! has no HTTU, so this path is tested against the `smmuv3` model only.

use iommu_abi::{Error, IovaRange};
use iommu_core::HwDomainId;
use smmuv3::{Env, Granule, TlbScope};

use super::{SmmuBackend, Table};
use crate::dirty::{clean_whole, read_table};
use crate::Environment;

impl<E: Environment> SmmuBackend<E> {
    /// `IommuBackend::set_dirty_tracking`: switching on cleans every leaf of the domain (and
    /// invalidates its ASID if one was dirty), so that only later writes are reported.
    pub(super) fn switch_dirty_tracking(&mut self, id: HwDomainId, enable: bool) -> Result<(), Error> {
        let SmmuBackend { units, domains, dma, clock, .. } = self;
        let d = domains.get_mut(id).ok_or(Error::HardwareFailure)?;
        let Table::Stage1(table) = &mut d.table else { return Err(Error::NotSupported) };
        let report = clean_whole(table, enable, dma)?;
        if report.cleaned_entries > 0 {
            let mut env = Env { dma, clock };
            if let Err(error) = units[d.unit].hw.tlbi_asid(&mut env, d.tag) {
                Self::fail_closed("TLB invalidation after cleaning dirty state", error);
            }
        }
        Ok(())
    }

    /// `IommuBackend::read_and_clear_dirty`.
    pub(super) fn read_dirty(&mut self, id: HwDomainId, range: IovaRange, page_size: u64, clear: bool, bitmap: &mut [u64]) -> Result<(), Error> {
        let SmmuBackend { units, domains, dma, clock, .. } = self;
        let d = domains.get_mut(id).ok_or(Error::HardwareFailure)?;
        let Table::Stage1(table) = &mut d.table else { return Err(Error::NotSupported) };
        let report = read_table(table, range, page_size, clear, bitmap, dma)?;
        if report.cleaned_entries > 0 {
            let mut env = Env { dma, clock };
            let scope = TlbScope::Stage1 { asid: d.tag };
            let length = range.last - range.start + 1;
            if let Err(error) = units[d.unit].hw.tlbi_range(&mut env, scope, range.start, length, Granule::Size4K, true) {
                Self::fail_closed("TLB invalidation after reading dirty state", error);
            }
        }
        Ok(())
    }
}
