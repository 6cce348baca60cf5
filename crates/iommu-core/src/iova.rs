//! Arithmetic on sets of IOVA ranges: sorted lists of disjoint inclusive ranges.
//!
//! The usable space of an IOAS is computed, not stored: `aperture ∩ allowed − reserved`,
//! where each term is derived from the current domains and devices. Keeping these as
//! plain functions over sorted lists makes that derivation easy to test on its own.

use alloc::vec::Vec;
use iommu_abi::IovaRange;

/// Sort and merge overlapping or adjacent ranges.
pub fn normalize(mut ranges: Vec<IovaRange>) -> Vec<IovaRange> {
    ranges.sort();
    let mut merged: Vec<IovaRange> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match merged.last_mut() {
            Some(previous) if previous.last == u64::MAX || range.start <= previous.last + 1 => {
                previous.last = previous.last.max(range.last);
            }
            _ => merged.push(range),
        }
    }
    merged
}

/// `ranges ∩ limit` for a normalized `ranges`.
pub fn intersect(ranges: &[IovaRange], limit: &IovaRange) -> Vec<IovaRange> {
    ranges.iter().filter_map(|range| range.intersection(limit)).collect()
}

/// `ranges ∩ limits` for normalized lists.
pub fn intersect_all(ranges: &[IovaRange], limits: &[IovaRange]) -> Vec<IovaRange> {
    normalize(limits.iter().flat_map(|limit| intersect(ranges, limit)).collect())
}

/// `ranges − holes` for normalized lists.
pub fn subtract(ranges: &[IovaRange], holes: &[IovaRange]) -> Vec<IovaRange> {
    let mut result = Vec::new();
    for range in ranges {
        let mut rest = Some(*range);
        for hole in holes {
            let Some(current) = rest else { break };
            if !current.intersects(hole) {
                continue;
            }
            if hole.start > current.start {
                result.push(IovaRange { start: current.start, last: hole.start - 1 });
            }
            rest = (hole.last < current.last).then(|| IovaRange { start: hole.last + 1, last: current.last });
        }
        result.extend(rest);
    }
    result
}

/// Whether `range` lies inside one range of the normalized list `ranges`.
pub fn covered_by(ranges: &[IovaRange], range: &IovaRange) -> bool {
    ranges.iter().any(|candidate| candidate.contains_range(range))
}

/// The lowest IOVA `a`, aligned to `align` (a power of two), never 0, such that
/// `[a, a + length)` lies inside one range of the normalized list `free`.
pub fn find_free(free: &[IovaRange], length: u64, align: u64) -> Option<u64> {
    debug_assert!(length > 0 && align.is_power_of_two());
    free.iter().find_map(|range| {
        // Never hand out IOVA 0: a zero DMA address is indistinguishable from "no
        // address" in many drivers and devices.
        let lowest = range.start.max(1);
        let start = lowest.checked_add(align - 1)? & !(align - 1);
        let last = start.checked_add(length - 1)?;
        (start >= range.start && last <= range.last).then_some(start)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, last: u64) -> IovaRange {
        IovaRange::new(start, last).unwrap()
    }

    #[test]
    fn normalize_merges_overlaps_and_neighbours() {
        let merged = normalize(vec![r(0x3000, 0x3fff), r(0x1000, 0x1fff), r(0x2000, 0x2fff), r(0x8000, u64::MAX), r(0x9000, 0x9fff)]);
        assert_eq!(merged, vec![r(0x1000, 0x3fff), r(0x8000, u64::MAX)]);
    }

    #[test]
    fn subtract_splits_and_trims() {
        let left = subtract(&[r(0, 0xffff)], &[r(0x2000, 0x2fff), r(0x8000, 0x1_ffff)]);
        assert_eq!(left, vec![r(0, 0x1fff), r(0x3000, 0x7fff)]);
        assert_eq!(subtract(&[r(0, u64::MAX)], &[r(0, u64::MAX)]), vec![]);
        assert_eq!(subtract(&[r(0x1000, 0x1fff)], &[]), vec![r(0x1000, 0x1fff)]);
    }

    #[test]
    fn intersect_all_keeps_common_parts() {
        let common = intersect_all(&[r(0, 0xffff), r(0x2_0000, 0x2_ffff)], &[r(0x8000, 0x2_0fff)]);
        assert_eq!(common, vec![r(0x8000, 0xffff), r(0x2_0000, 0x2_0fff)]);
    }

    #[test]
    fn find_free_aligns_skips_zero_and_respects_the_top() {
        assert_eq!(find_free(&[r(0, 0xffff)], 0x1000, 0x1000), Some(0x1000), "never 0");
        assert_eq!(find_free(&[r(0x1000, 0x3f_ffff)], 0x20_0000, 0x20_0000), Some(0x20_0000));
        assert_eq!(find_free(&[r(0x1000, 0x2f_ffff)], 0x20_0000, 0x20_0000), None, "no aligned room");
        assert_eq!(find_free(&[r(u64::MAX - 0xfff, u64::MAX)], 0x1000, 0x1000), Some(u64::MAX - 0xfff));
        assert_eq!(find_free(&[r(u64::MAX - 0xfff, u64::MAX)], 0x2000, 0x1000), None, "would wrap");
        assert_eq!(find_free(&[r(u64::MAX - 0xfff, u64::MAX)], 0x1000, 0x20_0000), None, "alignment wraps");
    }
}
