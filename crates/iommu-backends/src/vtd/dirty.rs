//! Dirty tracking of VT-d domains: the walker sets D in the leaves it writes through: bit 6 of
//! first-level leaves (spec 3.6.2, always), bit 9 of second-level leaves when the PASID entry
//! has SSADE (spec 3.7.3, units with ECAP.SSADS; QEMU has none, so this path is tested against
//! the `vtd` model). A domain allocated for tracking starts its writable leaves with D clear.
//! Reading returns the leaves with D set and, unless asked not to, clears D and then
//! invalidates the range: the IOTLB keeps the rights of the walk that filled it, so without
//! the invalidation a later write through a cached entry would not set D again.
//!
//! A write the device makes between clearing D and the invalidation's completion can go
//! unrecorded (it used a translation cached as dirty). Migration reads once more with the
//! device stopped, as with iommufd, which makes the last read exact.

use iommu_abi::{Error, IovaRange};
use iommu_core::HwDomainId;

use super::{Table, VtdBackend};
use crate::dirty::{clean_whole, read_table};
use crate::Environment;

impl<E: Environment> VtdBackend<E> {
    /// `IommuBackend::set_dirty_tracking`: switching on cleans every leaf of the domain (and
    /// invalidates if one was dirty), so that only later writes are reported.
    pub(super) fn switch_dirty_tracking(&mut self, id: HwDomainId, enable: bool) -> Result<(), Error> {
        let VtdBackend { units, domains, dma, .. } = self;
        let d = domains.get_mut(id).ok_or(Error::HardwareFailure)?;
        let report = match &mut d.table {
            Table::FirstLevel(table) => clean_whole(table, enable, dma)?,
            Table::SecondLevel(table) => clean_whole(table, enable, dma)?,
            // The client's own first level: its dirty bits are the client's to read.
            Table::Nested { .. } => return Err(Error::NotSupported),
        };
        if report.cleaned_entries > 0 {
            if let Err(error) = Self::invalidate(&mut units[d.unit], d, None, dma) {
                Self::fail_closed(id, error);
            }
        }
        Ok(())
    }

    /// `IommuBackend::read_and_clear_dirty`.
    pub(super) fn read_dirty(&mut self, id: HwDomainId, range: IovaRange, page_size: u64, clear: bool, bitmap: &mut [u64]) -> Result<(), Error> {
        let VtdBackend { units, domains, dma, .. } = self;
        let d = domains.get_mut(id).ok_or(Error::HardwareFailure)?;
        let report = match &mut d.table {
            Table::FirstLevel(table) => read_table(table, range, page_size, clear, bitmap, dma)?,
            Table::SecondLevel(table) => read_table(table, range, page_size, clear, bitmap, dma)?,
            Table::Nested { .. } => return Err(Error::NotSupported),
        };
        if report.cleaned_entries > 0 {
            let length = range.last - range.start + 1;
            if let Err(error) = Self::invalidate(&mut units[d.unit], d, Some((range.start, length)), dma) {
                Self::fail_closed(id, error);
            }
        }
        Ok(())
    }
}
