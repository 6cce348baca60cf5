//! What the backends' dirty tracking shares: cleaning a whole table, reading a range of one
//! into the caller's bitmap at its page size. Each backend adds the invalidation its unit
//! needs after a read or a cleaning that changed entries (`vtd/dirty.rs`, `smmuv3/dirty.rs`).

use alloc::vec;
use hwio::DmaAllocator;
use iommu_abi::{Error, IovaRange, PAGE_SIZE};
use iommu_pt::{DirtyReadMode, DirtyReport, Format, PageTable};

use crate::table_error;

/// Reads the dirty 4 KiB pages of `range` from `table` (cleaning them with `clear`) and ORs
/// them into `bitmap` at `page_size` granularity. The report says whether entries changed.
pub(crate) fn read_table<F: Format, A: DmaAllocator + ?Sized>(
    table: &mut PageTable<F>,
    range: IovaRange,
    page_size: u64,
    clear: bool,
    bitmap: &mut [u64],
    dma: &A,
) -> Result<DirtyReport, Error> {
    let length = range.last - range.start + 1;
    let mode = if clear { DirtyReadMode::ReadAndClear } else { DirtyReadMode::ReadOnly };
    let mut pages = vec![0u64; (length / PAGE_SIZE).div_ceil(64) as usize];
    let report = table.read_and_clear_dirty(range.start, length, mode, &mut pages, dma).map_err(dirty_error)?;
    fold_pages(&pages, page_size / PAGE_SIZE, bitmap);
    Ok(report)
}

/// Cleans every leaf of `table` when tracking is switched on (switching off changes nothing:
/// the bits are read only while it is on).
pub(crate) fn clean_whole<F: Format, A: DmaAllocator + ?Sized>(table: &mut PageTable<F>, enable: bool, dma: &A) -> Result<DirtyReport, Error> {
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
