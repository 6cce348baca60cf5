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

use alloc::vec;
use iommu_abi::{Error, IovaRange, PAGE_SIZE};
use iommu_core::HwDomainId;
use hwio::DmaAllocator;
use iommu_pt::{DirtyReadMode, DirtyReport, Format, PageTable};

use super::{Table, VtdBackend};
use crate::{table_error, Environment};

impl<E: Environment> VtdBackend<E> {
    /// `IommuBackend::set_dirty_tracking`: switching on cleans every leaf of the domain (and
    /// invalidates if one was dirty), so that only later writes are reported.
    pub(super) fn switch_dirty_tracking(&mut self, id: HwDomainId, enable: bool) -> Result<(), Error> {
        let VtdBackend { units, domains, dma, .. } = self;
        let d = domains.get_mut(id).ok_or(Error::HardwareFailure)?;
        let report = match &mut d.table {
            Table::FirstLevel(table) => clean_whole(table, enable, dma)?,
            Table::SecondLevel(table) => clean_whole(table, enable, dma)?,
        };
        if report.cleaned_entries > 0 {
            if let Err(error) = Self::invalidate(&mut units[d.unit], d, None, dma) {
                Self::fail_closed(id, error);
            }
        }
        Ok(())
    }

    /// `IommuBackend::read_and_clear_dirty`: the table reports 4 KiB pages, which are ORed into
    /// `bitmap` at `page_size` granularity.
    pub(super) fn read_dirty(&mut self, id: HwDomainId, range: IovaRange, page_size: u64, clear: bool, bitmap: &mut [u64]) -> Result<(), Error> {
        let VtdBackend { units, domains, dma, .. } = self;
        let d = domains.get_mut(id).ok_or(Error::HardwareFailure)?;
        let length = range.last - range.start + 1;
        let mode = if clear { DirtyReadMode::ReadAndClear } else { DirtyReadMode::ReadOnly };
        let mut pages = vec![0u64; (length / PAGE_SIZE).div_ceil(64) as usize];
        let report = match &mut d.table {
            Table::FirstLevel(table) => table.read_and_clear_dirty(range.start, length, mode, &mut pages, dma),
            Table::SecondLevel(table) => table.read_and_clear_dirty(range.start, length, mode, &mut pages, dma),
        }
        .map_err(dirty_error)?;
        if report.cleaned_entries > 0 {
            if let Err(error) = Self::invalidate(&mut units[d.unit], d, Some((range.start, length)), dma) {
                Self::fail_closed(id, error);
            }
        }
        fold_pages(&pages, page_size / PAGE_SIZE, bitmap);
        Ok(())
    }
}

/// Cleans every leaf of `table` when tracking is switched on (switching off changes nothing:
/// the bits are read only while it is on).
fn clean_whole<F: Format, A: DmaAllocator + ?Sized>(table: &mut PageTable<F>, enable: bool, dma: &A) -> Result<DirtyReport, Error> {
    let nothing = DirtyReport { dirty_pages: 0, cleaned_entries: 0 };
    if !enable {
        return table.format().dirty_scheme().map(|_| nothing).ok_or(Error::NotSupported);
    }
    table.clear_dirty(0, table.geometry().input_limit(), dma).map_err(dirty_error)
}

/// A domain allocated without tracking has a table format that records no dirty state.
fn dirty_error(error: iommu_pt::Error) -> Error {
    match error {
        iommu_pt::Error::DirtyTrackingUnsupported => Error::NotSupported,
        other => table_error(other),
    }
}

/// ORs a bitmap of 4 KiB pages into one of pages `per_page` times larger: bit `i` of `pages`
/// sets bit `i / per_page` of `bitmap`.
fn fold_pages(pages: &[u64], per_page: u64, bitmap: &mut [u64]) {
    for (index, &word) in pages.iter().enumerate() {
        let mut rest = word;
        while rest != 0 {
            let page = index as u64 * 64 + u64::from(rest.trailing_zeros());
            let bit = page / per_page;
            bitmap[(bit / 64) as usize] |= 1 << (bit % 64);
            rest &= rest - 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fold_pages;

    #[test]
    fn pages_fold_into_larger_pages() {
        let mut bitmap = [0u64; 2];
        // 4 KiB pages 0, 7, 8 and 127 into 32 KiB pages: bits 0, 0, 1 and 15.
        fold_pages(&[1 | 1 << 7 | 1 << 8, 1 << 63], 8, &mut bitmap);
        assert_eq!(bitmap, [1 | 1 << 1 | 1 << 15, 0]);
        let mut same = [1u64 << 40, 0];
        fold_pages(&[1 << 3, 1 << 1], 1, &mut same);
        assert_eq!(same, [1 << 40 | 1 << 3, 1 << 1], "ORed in, at 4 KiB one bit per page");
    }
}
