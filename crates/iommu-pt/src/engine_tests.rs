//! Engine tests over every format, on the fake DMA memory. Translations are checked twice: via
//! `PageTable::translate` and via a walk of the *device view* (what a non-snooping IOMMU reads
//! by physical address), so a missing flush or a wrong link fails a test.

use crate::fake_dma::FakeDma;
use crate::smmu_stage1::{SmmuStage1, Stage1Config, Stage1Entry};
use crate::smmu_stage2::{SmmuStage2, Stage2Config};
use crate::vtd_first_level::{FirstLevelConfig, FirstLevelEntry, VtdFirstLevel};
use crate::vtd_second_level::{SecondLevelConfig, VtdSecondLevel};
use crate::*;

const K4: u64 = 4096;
const M2: u64 = 2 << 20;
const G1: u64 = 1 << 30;

fn second_level(levels: u8, large_pages: LargePages, dirty_tracking: bool) -> VtdSecondLevel {
    VtdSecondLevel::new(SecondLevelConfig { large_pages, dirty_tracking, ..SecondLevelConfig::basic(levels, 46) }).unwrap()
}

fn first_level(dirty_tracking: bool) -> VtdFirstLevel {
    VtdFirstLevel::new(FirstLevelConfig {
        levels: 4,
        output_bits: 46,
        one_gib_pages: true,
        execute_requests: false,
        dirty_tracking,
    })
    .unwrap()
}

fn stage1(input_bits: u8, dirty_tracking: bool) -> SmmuStage1 {
    SmmuStage1::new(Stage1Config {
        input_bits,
        output_bits: 48,
        mair_index: 1,
        device_mair_index: 2,
        not_global: true,
        large_pages: LargePages::ALL,
        dirty_tracking,
    })
    .unwrap()
}

fn stage2(input_bits: u8, start_level: u8) -> SmmuStage2 {
    SmmuStage2::new(Stage2Config { input_bits, start_level, output_bits: 48, large_pages: LargePages::ALL }).unwrap()
}

/// A 4-level VT-d second-level table with 2 MiB and 1 GiB pages.
fn sl_table(dma: &mut FakeDma) -> PageTable<VtdSecondLevel> {
    PageTable::new(dma, second_level(4, LargePages::ALL, false)).unwrap()
}

/// The raw entries a hardware walk of `iova` reads through the device view, root first.
fn device_walk<F: Format>(table: &PageTable<F>, dma: &FakeDma, iova: u64) -> Vec<u64> {
    let geometry = table.geometry();
    let mut phys = table.root_phys();
    let mut height = geometry.top_height();
    let mut entries = geometry.root_entries();
    let mut path = Vec::new();
    loop {
        let index = (iova >> page_shift(height)) as usize & (entries - 1);
        let raw = dma.device_read(phys + index as u64 * 8);
        path.push(raw);
        match table.format().decode(raw, height) {
            Decoded::Table { phys: next } => {
                phys = next;
                height -= 1;
                entries = ENTRIES_PER_TABLE;
            }
            _ => return path,
        }
    }
}

/// Where a device's access to `iova` goes, walking the device view.
fn device_translate<F: Format>(table: &PageTable<F>, dma: &FakeDma, iova: u64) -> Option<u64> {
    let path = device_walk(table, dma, iova);
    let height = table.geometry().top_height() + 1 - path.len() as u8;
    match table.format().decode(*path.last()?, height) {
        Decoded::Leaf { phys, .. } => Some(phys + (iova & (page_size(height) - 1))),
        _ => None,
    }
}

/// Asserts CPU-side and device-side translations agree with `expected` (phys, page size).
fn assert_maps<F: Format>(table: &PageTable<F>, dma: &FakeDma, iova: u64, expected: Option<(u64, u64)>) {
    let translation = table.translate(iova).map(|t| (t.phys, t.page_size));
    assert_eq!(translation, expected, "translate({iova:#x})");
    assert_eq!(device_translate(table, dma, iova), expected.map(|(phys, _)| phys), "device walk of {iova:#x}");
}

// ---- exact entry bits through the physical links ----

#[test]
fn vtd_second_level_entries_on_a_real_walk() {
    let mut dma = FakeDma::new();
    let mut table = sl_table(&mut dma);
    table.map(0x1000, 0x1234_5000, K4, Perm::READ_WRITE, &mut dma).unwrap();
    let path = device_walk(&table, &dma, 0x1000);
    assert_eq!(path.len(), 4);
    for link in &path[..3] {
        assert_eq!(link & 0xfff, 0x003, "non-leaf R|W");
    }
    assert_eq!(path[3], 0x1234_5003);
    table.destroy(&mut dma);
}

#[test]
fn vtd_first_level_entries_are_user_accessible_at_every_level() {
    let mut dma = FakeDma::new();
    let mut table = PageTable::new(&mut dma, first_level(false)).unwrap();
    table.map(0x1000, 0x1234_5000, K4, Perm::READ_WRITE, &mut dma).unwrap();
    let path = device_walk(&table, &dma, 0x1000);
    assert_eq!(path.len(), 4);
    for link in &path[..3] {
        assert_eq!(link & 0xfff, 0x027);
    }
    assert!(path.iter().all(|&raw| FirstLevelEntry(raw).user()));
    assert_eq!(path[3], 0x1234_5067);
    table.destroy(&mut dma);
}

#[test]
fn smmu_stage1_entries_on_a_real_walk() {
    let mut dma = FakeDma::new();
    let mut table = PageTable::new(&mut dma, stage1(48, false)).unwrap();
    assert_eq!(table.levels(), 4);
    table.map(0x1000, 0x1234_5000, K4, Perm::READ_WRITE, &mut dma).unwrap();
    let path = device_walk(&table, &dma, 0x1000);
    assert_eq!(path.len(), 4);
    assert!(path[..3].iter().all(|link| link & 0xfff == 0x003));
    assert_eq!(path[3], 0x0060_0000_1234_5f47);
    table.destroy(&mut dma);
}

#[test]
fn smmu_stage2_entries_on_a_real_walk() {
    let mut dma = FakeDma::new();
    let mut table = PageTable::new(&mut dma, stage2(48, 0)).unwrap();
    table.map(0x1000, 0x1234_5000, K4, Perm::READ_WRITE, &mut dma).unwrap();
    let path = device_walk(&table, &dma, 0x1000);
    assert_eq!(path[3], 0x0040_0000_1234_57ff);
    table.destroy(&mut dma);
}

// ---- map / translate / page-size selection ----

#[test]
fn map_uses_the_largest_page_alignment_and_length_allow() {
    let mut dma = FakeDma::new();
    let mut table = sl_table(&mut dma);
    let iova = G1;
    let phys = 2 * G1;
    table.map(iova, phys, G1 + M2 + K4, Perm::READ_WRITE, &mut dma).unwrap();
    assert_maps(&table, &dma, iova + 0x1234, Some((phys + 0x1234, G1)));
    assert_maps(&table, &dma, iova + G1 + 0x5678, Some((phys + G1 + 0x5678, M2)));
    assert_maps(&table, &dma, iova + G1 + M2, Some((phys + G1 + M2, K4)));
    assert_maps(&table, &dma, iova + G1 + M2 + K4, None);
    // Leaves at heights 2, 1, 0: walks of 2, 3 and 4 entries.
    assert_eq!(device_walk(&table, &dma, iova).len(), 2);
    assert_eq!(device_walk(&table, &dma, iova + G1).len(), 3);
    assert_eq!(device_walk(&table, &dma, iova + G1 + M2).len(), 4);

    // Physical address only 2 MiB aligned: no 1 GiB leaf.
    let iova = 8 * G1;
    table.map(iova, 3 * G1 + M2, G1, Perm::READ, &mut dma).unwrap();
    assert_maps(&table, &dma, iova, Some((3 * G1 + M2, M2)));
    assert_maps(&table, &dma, iova + G1 - K4, Some((4 * G1 + M2 - K4, M2)));
    // Physical address only 4 KiB aligned: 4 KiB pages throughout.
    let iova = 16 * G1;
    table.map(iova, 5 * G1 + K4, M2, Perm::READ, &mut dma).unwrap();
    assert_maps(&table, &dma, iova + M2 - K4, Some((5 * G1 + M2, K4)));
    table.destroy(&mut dma);
}

#[test]
fn disabled_large_pages_are_not_used() {
    let mut dma = FakeDma::new();
    let mut table = PageTable::new(&mut dma, second_level(4, LargePages::NONE, false)).unwrap();
    table.map(G1, G1, 2 * M2, Perm::READ, &mut dma).unwrap();
    assert_maps(&table, &dma, G1 + M2, Some((G1 + M2, K4)));
    let only_2m = LargePages { two_mib: true, one_gib: false };
    let mut table2 = PageTable::new(&mut dma, second_level(4, only_2m, false)).unwrap();
    table2.map(G1, G1, G1, Perm::READ, &mut dma).unwrap();
    assert_maps(&table2, &dma, G1, Some((G1, M2)));
    table.destroy(&mut dma);
    table2.destroy(&mut dma);
    assert_eq!(dma.live_count(), 0);
}

#[test]
fn one_gib_leaf_in_the_root_of_a_three_level_table() {
    let mut dma = FakeDma::new();
    let mut table = PageTable::new(&mut dma, second_level(3, LargePages::ALL, false)).unwrap();
    table.map(511 * G1, 7 * G1, G1, Perm::READ_WRITE, &mut dma).unwrap();
    assert_eq!(device_walk(&table, &dma, 511 * G1).len(), 1);
    assert_maps(&table, &dma, 512 * G1 - K4, Some((8 * G1 - K4, G1)));
    assert_eq!(dma.live_count(), 1, "no table below the root");
    table.destroy(&mut dma);
}

#[test]
fn every_format_maps_and_translates_at_every_leaf_height() {
    fn check<F: Format>(format: F, base: u64) {
        let mut dma = FakeDma::new();
        let mut table = PageTable::new(&mut dma, format).unwrap();
        table.map(base, G1, G1, Perm::READ, &mut dma).unwrap();
        table.map(base + G1, 2 * G1, M2, Perm::READ, &mut dma).unwrap();
        table.map(base + G1 + M2, 3 * G1, K4, Perm::READ, &mut dma).unwrap();
        assert_maps(&table, &dma, base + 0x1000, Some((G1 + 0x1000, G1)));
        assert_maps(&table, &dma, base + G1 + 0x1000, Some((2 * G1 + 0x1000, M2)));
        assert_maps(&table, &dma, base + G1 + M2 + 8, Some((3 * G1 + 8, K4)));
        let perm = table.translate(base).unwrap().perm;
        assert!(perm.contains(Perm::READ) && !perm.contains(Perm::WRITE));
        table.destroy(&mut dma);
        assert_eq!(dma.live_count(), 0);
    }
    check(second_level(4, LargePages::ALL, false), 64 * G1);
    check(second_level(5, LargePages::ALL, false), 1 << 55);
    check(first_level(false), 64 * G1);
    check(stage1(48, false), 64 * G1);
    check(stage1(39, false), 64 * G1);
    check(stage2(48, 0), 64 * G1);
    check(stage2(40, 1), 512 * G1 + 64 * G1);
}

#[test]
fn stage2_concatenated_root_spans_two_tables() {
    let mut dma = FakeDma::new();
    let mut table = PageTable::new(&mut dma, stage2(40, 1)).unwrap();
    assert_eq!(table.root_phys() % 8192, 0, "concatenated root aligned to its size");
    let iova = 1 << 39; // first entry of the second concatenated table
    table.map(iova, 0x8000_0000, K4, Perm::READ_WRITE, &mut dma).unwrap();
    let root_entry = dma.device_read(table.root_phys() + 512 * 8);
    assert_eq!(root_entry & 0b11, 0b11);
    assert_maps(&table, &dma, iova + 4, Some((0x8000_0004, K4)));
    table.map((1 << 40) - K4, 0x9000_0000, K4, Perm::READ, &mut dma).unwrap();
    assert_maps(&table, &dma, (1 << 40) - K4, Some((0x9000_0000, K4)));
    assert_eq!(table.map(1 << 40, 0, K4, Perm::READ, &mut dma), Err(Error::OutOfRange));
    table.destroy(&mut dma);
    assert_eq!(dma.live_count(), 0);
}

#[test]
fn many_4k_pages_as_one_range() {
    let mut dma = FakeDma::new();
    let mut table = sl_table(&mut dma);
    let iova = 0x1000_0000;
    let phys = 0x2_0000_0000 + K4; // 4 KiB aligned only
    table.map(iova, phys, 256 * K4, Perm::READ_WRITE, &mut dma).unwrap();
    for page in 0..256 {
        assert_maps(&table, &dma, iova + page * K4, Some((phys + page * K4, K4)));
    }
    assert_maps(&table, &dma, iova + 256 * K4, None);
    assert_eq!(dma.live_count(), 4, "root + one table per lower level");
    let unmapped = table.unmap(iova, 256 * K4, SplitPolicy::Refuse, &mut dma).unwrap();
    assert_eq!(unmapped.bytes, 256 * K4);
    assert_eq!(unmapped.range, Some(iova..iova + 256 * K4));
    assert!(unmapped.freed_tables.is_empty(), "the emptied path stays linked");
    assert_eq!(dma.live_count(), 4);
    table.destroy(&mut dma);
    assert_eq!(dma.live_count(), 0);
}

#[test]
fn entries_written_into_one_table_are_flushed_together() {
    let mut dma = FakeDma::new();
    let mut table = sl_table(&mut dma);
    table.map(0, 0x10_0000, K4, Perm::READ, &mut dma).unwrap();
    let before = dma.flush_count();
    table.map(K4, 0x20_0000, 256 * K4, Perm::READ, &mut dma).unwrap();
    assert_eq!(dma.flush_count() - before, 1, "one flush for 256 entries in one existing table");
    assert_maps(&table, &dma, 256 * K4, Some((0x20_0000 + 255 * K4, K4)));
    table.destroy(&mut dma);
}

// ---- refusals change nothing ----

#[test]
fn map_over_an_existing_mapping_is_refused_and_changes_nothing() {
    let mut dma = FakeDma::new();
    let mut table = sl_table(&mut dma);
    table.map(G1, 0x5000_0000, K4, Perm::READ, &mut dma).unwrap();
    table.map(0x60_0000, 0x7000_0000, M2, Perm::READ, &mut dma).unwrap();
    let live = dma.live_count();

    // Needs new tables below the 1 GiB boundary, then collides at its end.
    let start = G1 - 2 * M2;
    assert_eq!(
        table.map(start, 0x1_0000_0000, 2 * M2 + K4, Perm::READ, &mut dma),
        Err(Error::AlreadyMapped { iova: G1 })
    );
    assert_eq!(dma.live_count(), live, "no table created");
    assert_maps(&table, &dma, start, None);
    assert_maps(&table, &dma, G1, Some((0x5000_0000, K4)));

    // 4 KiB inside an existing 2 MiB leaf, and a 2 MiB leaf over an existing table.
    assert_eq!(
        table.map(0x61_0000, 0, K4, Perm::READ, &mut dma),
        Err(Error::AlreadyMapped { iova: 0x60_0000 })
    );
    assert_eq!(table.map(G1, 0, M2, Perm::READ, &mut dma), Err(Error::AlreadyMapped { iova: G1 }));
    assert_eq!(dma.live_count(), live);
    assert_maps(&table, &dma, 0x61_0000, Some((0x7001_0000, M2)));
    table.destroy(&mut dma);
}

#[test]
fn map_out_of_memory_leaves_nothing_behind() {
    let mut dma = FakeDma::new();
    let mut table = sl_table(&mut dma);
    dma.fail_after(2); // the map needs three tables
    assert_eq!(table.map(0, 0, K4, Perm::READ, &mut dma), Err(Error::OutOfMemory));
    assert_eq!(dma.live_count(), 1);
    assert_maps(&table, &dma, 0, None);
    dma.fail_after(3);
    table.map(0, 0, K4, Perm::READ, &mut dma).unwrap();
    assert_maps(&table, &dma, 0, Some((0, K4)));
    table.destroy(&mut dma);
}

#[test]
fn range_checks() {
    let mut dma = FakeDma::new();
    let mut table = sl_table(&mut dma);
    let top = 1u64 << 48;
    // IOVA 0 and the very last page of the address width are mappable.
    table.map(0, 0, K4, Perm::READ, &mut dma).unwrap();
    table.map(top - K4, 0x3000, K4, Perm::READ, &mut dma).unwrap();
    assert_maps(&table, &dma, 0, Some((0, K4)));
    assert_maps(&table, &dma, top - 1, Some((0x3fff, K4)));
    assert_eq!(table.translate(top), None);
    assert_eq!(table.translate(u64::MAX), None);

    let rw = Perm::READ_WRITE;
    assert_eq!(table.map(0x10_0000, 0, 0, rw, &mut dma), Err(Error::ZeroLength));
    assert_eq!(table.map(0x10_0800, 0, K4, rw, &mut dma), Err(Error::Unaligned));
    assert_eq!(table.map(0x10_0000, 0x800, K4, rw, &mut dma), Err(Error::Unaligned));
    assert_eq!(table.map(0x10_0000, 0, 0x1800, rw, &mut dma), Err(Error::Unaligned));
    assert_eq!(table.map(u64::MAX - 0xfff, 0, 2 * K4, rw, &mut dma), Err(Error::Overflow));
    assert_eq!(table.map(0x10_0000, u64::MAX - 0xfff, 2 * K4, rw, &mut dma), Err(Error::Overflow));
    assert_eq!(table.map(top - K4, 0, 2 * K4, rw, &mut dma), Err(Error::OutOfRange));
    assert_eq!(table.map(top, 0, K4, rw, &mut dma), Err(Error::OutOfRange));
    assert_eq!(table.map(0x10_0000, (1 << 46) - K4, 2 * K4, rw, &mut dma), Err(Error::OutputOutOfRange));
    assert_eq!(table.map(0x10_0000, 0, K4, Perm::EXECUTE, &mut dma), Err(Error::UnsupportedPermission));

    assert_eq!(table.unmap(0, 0, SplitPolicy::Split, &mut dma).map(|_| ()), Err(Error::ZeroLength));
    assert_eq!(table.unmap(top, K4, SplitPolicy::Split, &mut dma).map(|_| ()), Err(Error::OutOfRange));
    assert_eq!(table.unmap(u64::MAX - 0xfff, 2 * K4, SplitPolicy::Split, &mut dma).map(|_| ()), Err(Error::Overflow));
    assert_eq!(table.try_merge(0x800, K4, &dma).map(|_| ()), Err(Error::Unaligned));
    assert_eq!(dma.live_count(), 7, "refusals allocated nothing");

    let unmapped = table.unmap(top - K4, K4, SplitPolicy::Refuse, &mut dma).unwrap();
    assert_eq!(unmapped.range, Some(top - K4..top));
    unmapped.freed_tables.release(&mut dma);
    table.destroy(&mut dma);
    assert_eq!(dma.live_count(), 0);
}

// ---- unmap, reclaim, split ----

#[test]
fn unmap_of_everything_reclaims_every_table_after_release() {
    let mut dma = FakeDma::new();
    let mut table = sl_table(&mut dma);
    table.map(G1 - M2 - K4, 0x4000_0000 - M2 - K4, G1 + 2 * M2 + 2 * K4, Perm::READ_WRITE, &mut dma).unwrap();
    table.map(700 * G1, 0, K4, Perm::READ, &mut dma).unwrap();
    let live = dma.live_count();
    assert!(live > 4);

    let unmapped = table.unmap(0, 1 << 48, SplitPolicy::Refuse, &mut dma).unwrap();
    assert_eq!(unmapped.bytes, G1 + 2 * M2 + 2 * K4 + K4);
    assert_eq!(unmapped.range, Some(G1 - M2 - K4..700 * G1 + K4));
    assert_eq!(unmapped.largest_page_size, G1);
    assert_eq!(unmapped.freed_tables.len(), live - 1);
    // Deferred: nothing freed until the caller's invalidation is done.
    assert_eq!(dma.live_count(), live);
    assert_maps(&table, &dma, G1, None);
    assert_maps(&table, &dma, 700 * G1, None);
    unmapped.freed_tables.release(&mut dma);
    assert_eq!(dma.live_count(), 1, "only the root remains");
    // The emptied root is fully reusable.
    table.map(G1, G1, K4, Perm::READ, &mut dma).unwrap();
    assert_maps(&table, &dma, G1, Some((G1, K4)));
    table.destroy(&mut dma);
    assert_eq!(dma.live_count(), 0);
}

#[test]
fn unmap_keeps_neighbours_and_their_tables() {
    let mut dma = FakeDma::new();
    let mut table = sl_table(&mut dma);
    table.map(0x10_0000, 0xa000, 2 * K4, Perm::READ, &mut dma).unwrap();
    let unmapped = table.unmap(0x10_0000, K4, SplitPolicy::Refuse, &mut dma).unwrap();
    assert!(unmapped.freed_tables.is_empty());
    assert_eq!(unmapped.largest_page_size, K4);
    unmapped.freed_tables.release(&mut dma);
    assert_maps(&table, &dma, 0x10_0000, None);
    assert_maps(&table, &dma, 0x10_1000, Some((0xb000, K4)));
    assert_eq!(dma.live_count(), 4);
    table.destroy(&mut dma);
}

#[test]
fn unmap_skips_holes_and_reports_what_it_removed() {
    let mut dma = FakeDma::new();
    let mut table = sl_table(&mut dma);
    table.map(0, 0, K4, Perm::READ, &mut dma).unwrap();
    table.map(0x10_0000, 0x10_0000, 2 * K4, Perm::READ, &mut dma).unwrap();
    let unmapped = table.unmap(0, M2, SplitPolicy::Refuse, &mut dma).unwrap();
    assert_eq!(unmapped.bytes, 3 * K4);
    assert_eq!(unmapped.range, Some(0..0x10_2000));
    unmapped.freed_tables.release(&mut dma);
    let nothing = table.unmap(0, M2, SplitPolicy::Refuse, &mut dma).unwrap();
    assert_eq!((nothing.bytes, nothing.range.clone(), nothing.largest_page_size), (0, None, 0));
    nothing.freed_tables.release(&mut dma);
    assert_eq!(dma.live_count(), 3, "the root and the emptied path above the unlinked leaf table");
    table.destroy(&mut dma);
    assert_eq!(dma.live_count(), 0);
}

#[test]
fn partial_unmap_splits_a_2m_leaf() {
    let mut dma = FakeDma::new();
    let mut table = sl_table(&mut dma);
    table.map(M2, 0x4000_0000, M2, Perm::READ_WRITE, &mut dma).unwrap();
    let live = dma.live_count();
    let unmapped = table.unmap(M2 + K4, 2 * K4, SplitPolicy::Split, &mut dma).unwrap();
    assert_eq!(unmapped.bytes, 2 * K4);
    assert_eq!(unmapped.range, Some(M2 + K4..M2 + 3 * K4));
    assert_eq!(unmapped.largest_page_size, M2, "the split 2 MiB leaf may be cached whole");
    unmapped.freed_tables.release(&mut dma);
    assert_eq!(dma.live_count(), live + 1, "one table from the split");
    assert_maps(&table, &dma, M2, Some((0x4000_0000, K4)));
    assert_maps(&table, &dma, M2 + K4, None);
    assert_maps(&table, &dma, M2 + 2 * K4, None);
    assert_maps(&table, &dma, M2 + 3 * K4, Some((0x4000_3000, K4)));
    assert_maps(&table, &dma, 2 * M2 - K4, Some((0x4000_0000 + M2 - K4, K4)));
    assert_eq!(table.translate(M2 + 3 * K4).unwrap().perm, Perm::READ_WRITE);
    table.destroy(&mut dma);
    assert_eq!(dma.live_count(), 0);
}

#[test]
fn partial_unmap_splits_a_1g_leaf_down_to_4k() {
    let mut dma = FakeDma::new();
    let mut table = sl_table(&mut dma);
    table.map(G1, 3 * G1, G1, Perm::READ, &mut dma).unwrap();
    let live = dma.live_count();
    let cut = G1 + M2 + K4;
    table.unmap(cut, K4, SplitPolicy::Split, &mut dma).unwrap().freed_tables.release(&mut dma);
    assert_eq!(dma.live_count(), live + 2);
    assert_maps(&table, &dma, G1, Some((3 * G1, M2)));
    assert_maps(&table, &dma, G1 + M2, Some((3 * G1 + M2, K4)));
    assert_maps(&table, &dma, cut, None);
    assert_maps(&table, &dma, cut + K4, Some((3 * G1 + M2 + 2 * K4, K4)));
    assert_maps(&table, &dma, 2 * G1 - 1, Some((4 * G1 - 1, M2)));
    // Unmapping the rest reclaims every table the split created.
    let rest = table.unmap(G1, G1, SplitPolicy::Refuse, &mut dma).unwrap();
    assert_eq!(rest.bytes, G1 - K4);
    assert_eq!(rest.freed_tables.len(), 2);
    rest.freed_tables.release(&mut dma);
    assert_eq!(dma.live_count(), live, "the root and the emptied table that held the 1 GiB leaf");
    table.destroy(&mut dma);
    assert_eq!(dma.live_count(), 0);
}

#[test]
fn refused_split_changes_nothing() {
    let mut dma = FakeDma::new();
    let mut table = sl_table(&mut dma);
    table.map(2 * M2, 0x4000_0000, 2 * M2, Perm::READ, &mut dma).unwrap();
    let live = dma.live_count();
    // The start cuts nothing, the end cuts the second 2 MiB leaf.
    assert_eq!(
        table.unmap(2 * M2, M2 + K4, SplitPolicy::Refuse, &mut dma).map(|_| ()),
        Err(Error::WouldSplit { iova: 3 * M2, page_size: M2 })
    );
    assert_maps(&table, &dma, 2 * M2, Some((0x4000_0000, M2)));
    assert_eq!(dma.live_count(), live);
    dma.fail_after(0);
    assert_eq!(table.unmap(2 * M2, K4, SplitPolicy::Split, &mut dma).map(|_| ()), Err(Error::OutOfMemory));
    assert_maps(&table, &dma, 2 * M2 + K4, Some((0x4000_1000, M2)));
    assert_eq!(dma.live_count(), live);
    table.destroy(&mut dma);
}

#[test]
fn split_keeps_the_dirty_state() {
    let mut dma = FakeDma::new();
    let mut table = PageTable::new(&mut dma, first_level(true)).unwrap();
    table.map(M2, 0x4000_0000, M2, Perm::READ_WRITE, &mut dma).unwrap();
    assert_eq!(device_walk(&table, &dma, M2).len(), 3, "a 2 MiB leaf");
    dma.device_update(leaf_entry_phys(&table, &dma, M2), |raw| raw | FirstLevelEntry::DIRTY);
    table.unmap(M2, K4, SplitPolicy::Split, &mut dma).unwrap().freed_tables.release(&mut dma);
    let mut bitmap = [0u64; 8];
    let report = table.read_and_clear_dirty(M2, M2, DirtyReadMode::ReadAndClear, &mut bitmap, &dma).unwrap();
    assert_eq!(report.dirty_pages, 511);
    assert_eq!(bitmap[0], !1, "page 0 was unmapped, the other 511 inherited D");
    table.destroy(&mut dma);
}

// ---- merge ----

#[test]
fn merge_collapses_512_contiguous_4k_pages_into_2m() {
    let mut dma = FakeDma::new();
    let mut table = sl_table(&mut dma);
    let phys = 0x8000_0000;
    for page in 0..512 {
        table.map(M2 + page * K4, phys + page * K4, K4, Perm::READ_WRITE, &mut dma).unwrap();
    }
    assert_eq!(dma.live_count(), 4);
    let merged = table.try_merge(0, G1, &dma).unwrap();
    assert_eq!((merged.merged_entries, merged.largest_page_size), (1, M2));
    assert_eq!(merged.range, Some(M2..2 * M2));
    assert_eq!(merged.freed_tables.len(), 1);
    merged.freed_tables.release(&mut dma);
    assert_eq!(dma.live_count(), 3);
    assert_maps(&table, &dma, M2 + 0x12_3456, Some((phys + 0x12_3456, M2)));
    assert_eq!(table.translate(M2).unwrap().perm, Perm::READ_WRITE);
    table.destroy(&mut dma);
}

#[test]
fn merge_refuses_mixed_permissions_misaligned_memory_and_partial_ranges() {
    let mut dma = FakeDma::new();
    let mut table = sl_table(&mut dma);
    let map_pages = |table: &mut PageTable<VtdSecondLevel>, dma: &mut FakeDma, iova: u64, phys: u64, odd: Option<u64>| {
        for page in 0..512 {
            let perm = if Some(page) == odd { Perm::READ } else { Perm::READ_WRITE };
            table.map(iova + page * K4, phys + page * K4, K4, perm, dma).unwrap();
        }
    };
    map_pages(&mut table, &mut dma, 0, 0x8000_0000, Some(17));
    map_pages(&mut table, &mut dma, M2, 0x9000_0000 + K4, None);
    map_pages(&mut table, &mut dma, 2 * M2, 0xa000_0000, None);
    let live = dma.live_count();
    let merged = table.try_merge(0, 2 * M2 + M2 - K4, &dma).unwrap();
    assert_eq!(merged.merged_entries, 0);
    assert!(merged.range.is_none());
    merged.freed_tables.release(&mut dma);
    assert_eq!(dma.live_count(), live);
    assert_maps(&table, &dma, 2 * M2, Some((0xa000_0000, K4)));
    // Covering the third table whole does merge it.
    let merged = table.try_merge(2 * M2, M2, &dma).unwrap();
    assert_eq!(merged.merged_entries, 1);
    merged.freed_tables.release(&mut dma);
    assert_maps(&table, &dma, 2 * M2 + K4, Some((0xa000_1000, M2)));
    table.destroy(&mut dma);
    assert_eq!(dma.live_count(), 0);
}

#[test]
fn merge_goes_bottom_up_to_1g() {
    let mut dma = FakeDma::new();
    let mut table = sl_table(&mut dma);
    for block in 0..512 {
        // 511 blocks as 2 MiB leaves, the last one as 512 pages of 4 KiB.
        let (iova, phys) = (G1 + block * M2, 5 * G1 + block * M2);
        if block < 511 {
            table.map(iova, phys, M2, Perm::READ, &mut dma).unwrap();
        } else {
            for page in 0..512 {
                table.map(iova + page * K4, phys + page * K4, K4, Perm::READ, &mut dma).unwrap();
            }
        }
    }
    let merged = table.try_merge(G1, G1, &dma).unwrap();
    assert_eq!((merged.merged_entries, merged.largest_page_size), (2, G1));
    assert_eq!(merged.freed_tables.len(), 2);
    merged.freed_tables.release(&mut dma);
    assert_eq!(dma.live_count(), 2, "root and the table holding the 1 GiB leaf");
    assert_maps(&table, &dma, 2 * G1 - 1, Some((6 * G1 - 1, G1)));
    table.destroy(&mut dma);
}

// ---- dirty tracking ----

/// Physical address of the leaf entry mapping `iova` (from a device walk).
fn leaf_entry_phys<F: Format>(table: &PageTable<F>, dma: &FakeDma, iova: u64) -> u64 {
    let path = device_walk(table, dma, iova);
    let height = table.geometry().top_height() + 1 - path.len() as u8;
    let table_phys = if path.len() == 1 {
        table.root_phys()
    } else {
        match table.format().decode(path[path.len() - 2], height + 1) {
            Decoded::Table { phys } => phys,
            other => panic!("not a table: {other:?}"),
        }
    };
    table_phys + ((iova >> page_shift(height)) & 511) * 8
}

#[test]
fn first_level_dirty_bits_are_read_and_cleared() {
    let mut dma = FakeDma::new();
    let mut table = PageTable::new(&mut dma, first_level(true)).unwrap();
    let base = 0x10_0000;
    table.map(base, 0x50_0000, 8 * K4, Perm::READ_WRITE, &mut dma).unwrap();
    let mut bitmap = [u64::MAX; 2];
    let clean = table.read_and_clear_dirty(base, 8 * K4, DirtyReadMode::ReadAndClear, &mut bitmap, &dma).unwrap();
    assert_eq!(clean, DirtyReport { dirty_pages: 0, cleaned_entries: 0 });
    assert_eq!(bitmap, [!0xff, u64::MAX], "the 8 bits of the range overwritten, the rest untouched");
    bitmap = [0; 2];

    for page in [1, 5] {
        dma.device_update(leaf_entry_phys(&table, &dma, base + page * K4), |raw| raw | FirstLevelEntry::DIRTY);
    }
    let report = table.read_and_clear_dirty(base, 8 * K4, DirtyReadMode::ReadAndClear, &mut bitmap, &dma).unwrap();
    assert_eq!(report, DirtyReport { dirty_pages: 2, cleaned_entries: 2 });
    assert_eq!(bitmap[0], 0b10_0010);
    let entry = dma.device_read(leaf_entry_phys(&table, &dma, base + K4));
    assert!(!FirstLevelEntry(entry).dirty(), "cleared D was flushed");
    assert!(FirstLevelEntry(entry).writable(), "mapping kept");
    let again = table.read_and_clear_dirty(base, 8 * K4, DirtyReadMode::ReadAndClear, &mut bitmap, &dma).unwrap();
    assert_eq!((again.dirty_pages, bitmap[0]), (0, 0));

    dma.device_update(leaf_entry_phys(&table, &dma, base + 3 * K4), |raw| raw | FirstLevelEntry::DIRTY);
    for _ in 0..2 {
        let peek = table.read_and_clear_dirty(base, 8 * K4, DirtyReadMode::ReadOnly, &mut bitmap, &dma).unwrap();
        assert_eq!((peek.dirty_pages, peek.cleaned_entries, bitmap[0]), (1, 0, 0b1000));
    }
    table.destroy(&mut dma);
}

#[test]
fn dirty_large_leaf_marks_its_pages_and_is_cleaned_only_when_covered() {
    let mut dma = FakeDma::new();
    let mut table = PageTable::new(&mut dma, first_level(true)).unwrap();
    table.map(M2, 0x4000_0000, M2, Perm::READ_WRITE, &mut dma).unwrap();
    dma.device_update(leaf_entry_phys(&table, &dma, M2), |raw| raw | FirstLevelEntry::DIRTY);
    let mut bitmap = [0u64; 8];
    let part = table.read_and_clear_dirty(M2 + 10 * K4, 4 * K4, DirtyReadMode::ReadAndClear, &mut bitmap, &dma).unwrap();
    assert_eq!(part, DirtyReport { dirty_pages: 4, cleaned_entries: 0 });
    assert_eq!(bitmap[0], 0b1111);
    let whole = table.read_and_clear_dirty(M2, M2, DirtyReadMode::ReadAndClear, &mut bitmap, &dma).unwrap();
    assert_eq!(whole, DirtyReport { dirty_pages: 512, cleaned_entries: 1 });
    assert!(bitmap.iter().all(|&word| word == u64::MAX));
    let after = table.read_and_clear_dirty(M2, M2, DirtyReadMode::ReadAndClear, &mut bitmap, &dma).unwrap();
    assert_eq!(after.dirty_pages, 0);
    table.destroy(&mut dma);
}

#[test]
fn smmu_dbm_leaves_start_dirty_and_are_cleaned_by_setting_ap2() {
    let mut dma = FakeDma::new();
    let mut table = PageTable::new(&mut dma, stage1(39, true)).unwrap();
    table.map(0, 0x9000_0000, 4 * K4, Perm::READ_WRITE, &mut dma).unwrap();
    table.map(4 * K4, 0xa000_0000, K4, Perm::READ, &mut dma).unwrap();
    let mut bitmap = [0u64; 1];
    let first = table.read_and_clear_dirty(0, 5 * K4, DirtyReadMode::ReadAndClear, &mut bitmap, &dma).unwrap();
    assert_eq!(first, DirtyReport { dirty_pages: 4, cleaned_entries: 4 });
    assert_eq!(bitmap[0], 0b1111, "writable leaves start writable-dirty; the read-only one never is");
    let cleaned = Stage1Entry(dma.device_read(leaf_entry_phys(&table, &dma, 0)));
    assert!(cleaned.read_only() && cleaned.dbm());
    assert_eq!(table.translate(0).unwrap().perm, Perm::READ_WRITE);
    let second = table.read_and_clear_dirty(0, 5 * K4, DirtyReadMode::ReadAndClear, &mut bitmap, &dma).unwrap();
    assert_eq!((second.dirty_pages, bitmap[0]), (0, 0));
    // HTTU records a write to page 2 by clearing AP[2].
    dma.device_update(leaf_entry_phys(&table, &dma, 2 * K4), |raw| raw & !Stage1Entry::AP_READ_ONLY);
    let third = table.read_and_clear_dirty(0, 5 * K4, DirtyReadMode::ReadAndClear, &mut bitmap, &dma).unwrap();
    assert_eq!((third.dirty_pages, bitmap[0]), (1, 0b100));
    table.destroy(&mut dma);
}

/// Switching tracking on cleans a whole address space with no bitmap: small and large leaves
/// far apart are cleaned, and a read afterwards reports only later writes.
#[test]
fn clear_dirty_cleans_the_whole_space_without_a_bitmap() {
    let mut dma = FakeDma::new();
    let mut table = PageTable::new(&mut dma, first_level(true)).unwrap();
    let far = 100 * G1;
    table.map(K4, 0x50_0000, 2 * K4, Perm::READ_WRITE, &mut dma).unwrap();
    table.map(far, 0x4000_0000, M2, Perm::READ_WRITE, &mut dma).unwrap();
    for iova in [K4, 2 * K4, far] {
        dma.device_update(leaf_entry_phys(&table, &dma, iova), |raw| raw | FirstLevelEntry::DIRTY);
    }
    let whole_space = table.geometry().input_limit();
    let report = table.clear_dirty(0, whole_space, &dma).unwrap();
    assert_eq!(report, DirtyReport { dirty_pages: 2 + 512, cleaned_entries: 3 });
    for iova in [K4, 2 * K4, far] {
        assert!(!FirstLevelEntry(dma.device_read(leaf_entry_phys(&table, &dma, iova))).dirty(), "{iova:#x} still dirty");
    }
    dma.device_update(leaf_entry_phys(&table, &dma, 2 * K4), |raw| raw | FirstLevelEntry::DIRTY);
    let mut bitmap = [0u64; 1];
    let read = table.read_and_clear_dirty(0, 64 * K4, DirtyReadMode::ReadAndClear, &mut bitmap, &dma).unwrap();
    assert_eq!((read.dirty_pages, bitmap[0]), (1, 0b100));
    assert_eq!(table.clear_dirty(0, whole_space, &dma).unwrap().cleaned_entries, 0);
    let mut untracked = sl_table(&mut dma);
    assert_eq!(untracked.clear_dirty(0, K4, &dma), Err(Error::DirtyTrackingUnsupported));
    untracked.destroy(&mut dma);
    table.destroy(&mut dma);
}

#[test]
fn dirty_read_refusals() {
    let mut dma = FakeDma::new();
    let mut untracked = sl_table(&mut dma);
    let mut bitmap = [0u64; 1];
    assert_eq!(
        untracked.read_and_clear_dirty(0, K4, DirtyReadMode::ReadOnly, &mut bitmap, &dma),
        Err(Error::DirtyTrackingUnsupported)
    );
    let mut tracked = PageTable::new(&mut dma, second_level(4, LargePages::ALL, true)).unwrap();
    assert_eq!(
        tracked.read_and_clear_dirty(0, 65 * K4, DirtyReadMode::ReadOnly, &mut bitmap, &dma),
        Err(Error::BitmapTooSmall)
    );
    assert_eq!(tracked.read_and_clear_dirty(0, 0, DirtyReadMode::ReadOnly, &mut bitmap, &dma), Err(Error::ZeroLength));
    // Second-level D is bit 9.
    tracked.map(0, 0x7000, K4, Perm::READ_WRITE, &mut dma).unwrap();
    dma.device_update(leaf_entry_phys(&tracked, &dma, 0), |raw| raw | (1 << 9));
    let report = tracked.read_and_clear_dirty(0, 64 * K4, DirtyReadMode::ReadAndClear, &mut bitmap, &dma).unwrap();
    assert_eq!((report.dirty_pages, bitmap[0]), (1, 1));
    untracked.destroy(&mut dma);
    tracked.destroy(&mut dma);
    assert_eq!(dma.live_count(), 0);
}

// ---- lifetime ----

#[test]
fn destroy_returns_every_page() {
    let mut dma = FakeDma::new();
    let mut table = PageTable::new(&mut dma, stage1(48, false)).unwrap();
    table.map(0, 0, 3 * G1 + 5 * M2 + 7 * K4, Perm::READ, &mut dma).unwrap();
    table.map(300 * G1 + K4, K4, 3 * K4, Perm::READ, &mut dma).unwrap();
    table.unmap(M2, K4, SplitPolicy::Split, &mut dma).unwrap().freed_tables.release(&mut dma);
    assert!(dma.live_count() > 5);
    table.destroy(&mut dma);
    assert_eq!(dma.live_count(), 0);
}

#[test]
fn deferred_lists_append() {
    let mut dma = FakeDma::new();
    let mut table = sl_table(&mut dma);
    table.map(0, 0, K4, Perm::READ, &mut dma).unwrap();
    table.map(G1, 0, K4, Perm::READ, &mut dma).unwrap();
    // The first unmap keeps its emptied path; the second keeps its own and unlinks the first
    // (leaf table and directory: the directory-pointer table above is shared); unmapping
    // everything then unlinks the second path whole.
    let kept = table.unmap(0, K4, SplitPolicy::Refuse, &mut dma).unwrap().freed_tables;
    let mut first = table.unmap(G1, K4, SplitPolicy::Refuse, &mut dma).unwrap().freed_tables;
    let second = table.unmap(0, 1 << 48, SplitPolicy::Refuse, &mut dma).unwrap().freed_tables;
    assert_eq!((kept.len(), first.len(), second.len()), (0, 2, 3));
    first.append(second);
    first.append(kept);
    assert_eq!(first.len(), 5);
    first.release(&mut dma);
    assert_eq!(dma.live_count(), 1);
    table.destroy(&mut dma);
}

#[test]
fn recycled_tables_serve_the_next_map_without_allocating() {
    let mut dma = FakeDma::new();
    let mut table = sl_table(&mut dma);
    table.map(0x4000_0000, 0x8000, K4, Perm::READ, &mut dma).unwrap();
    assert_eq!(dma.live_count(), 4);
    let unmapped = table.unmap(0x4000_0000, K4, SplitPolicy::Refuse, &mut dma).unwrap();
    assert!(unmapped.freed_tables.is_empty(), "the emptied path stays linked");
    table.recycle(unmapped.freed_tables, &mut dma);
    // A path under another root entry: three new tables; its unmap keeps it and unlinks the
    // first path whole.
    table.map(0x80_0000_0000, 0x9000, K4, Perm::READ_WRITE, &mut dma).unwrap();
    assert_eq!(dma.live_count(), 7);
    let unmapped = table.unmap(0x80_0000_0000, K4, SplitPolicy::Refuse, &mut dma).unwrap();
    assert_eq!(unmapped.freed_tables.len(), 3);
    assert_eq!(unmapped.range, Some(0..0x80_0000_1000), "the invalidation covers the first path's tables too");
    table.recycle(unmapped.freed_tables, &mut dma);
    // Kept, not freed: the next map in an empty region links them again.
    assert_eq!(dma.live_count(), 7);
    table.map(0x100_0000_0000, 0xa000, K4, Perm::READ_WRITE, &mut dma).unwrap();
    assert_eq!(dma.live_count(), 7, "the map used the recycled tables");
    // They come back zero, in the device view too: only the new path is present.
    assert_maps(&table, &dma, 0x100_0000_0000, Some((0xa000, K4)));
    assert_maps(&table, &dma, 0x100_0000_1000, None);
    assert_maps(&table, &dma, 0x4000_0000, None);
    assert_maps(&table, &dma, 0x80_0000_0000, None);
    let unmapped = table.unmap(0x100_0000_0000, K4, SplitPolicy::Refuse, &mut dma).unwrap();
    table.recycle(unmapped.freed_tables, &mut dma);
    table.destroy(&mut dma);
    assert_eq!(dma.live_count(), 0, "destroy frees the kept and the retained tables too");
}

#[test]
fn a_retained_path_serves_the_next_map_there() {
    let mut dma = FakeDma::new();
    let mut table = sl_table(&mut dma);
    table.map(G1, 0x8000, K4, Perm::READ, &mut dma).unwrap();
    table.unmap(G1, K4, SplitPolicy::Refuse, &mut dma).unwrap().freed_tables.release(&mut dma);
    assert_maps(&table, &dma, G1, None);
    let live = dma.live_count();
    // Another page of the same leaf table: no table work, and the unmap invalidates the leaf only.
    table.map(G1 + K4, 0x9000, K4, Perm::READ_WRITE, &mut dma).unwrap();
    assert_eq!(dma.live_count(), live);
    assert_maps(&table, &dma, G1 + K4, Some((0x9000, K4)));
    let unmapped = table.unmap(G1 + K4, K4, SplitPolicy::Refuse, &mut dma).unwrap();
    assert_eq!(unmapped.range, Some(G1 + K4..G1 + 2 * K4));
    assert!(unmapped.freed_tables.is_empty());
    table.destroy(&mut dma);
    assert_eq!(dma.live_count(), 0);
}

#[test]
fn prepare_map_unlinks_a_retained_path_in_the_way_of_a_large_leaf() {
    let mut dma = FakeDma::new();
    let mut table = sl_table(&mut dma);
    table.map(G1 + K4, 0x8000, K4, Perm::READ, &mut dma).unwrap();
    table.unmap(G1 + K4, K4, SplitPolicy::Refuse, &mut dma).unwrap().freed_tables.release(&mut dma);
    // Not in the way: a range that cannot hold a large leaf over the path, or misaligned memory.
    assert!(table.prepare_map(G1, 0, M2 - K4, &dma).is_none());
    assert!(table.prepare_map(G1, K4, M2, &dma).is_none());
    assert!(table.prepare_map(G1 + M2, 0, M2, &dma).is_none());
    // In the way of a 2 MiB leaf: the whole path (it maps nothing up to below the root) goes.
    let released = table.prepare_map(G1, 0x20_0000, M2, &dma).expect("path in the way");
    assert_eq!(released.freed_tables.len(), 3);
    assert_eq!(released.range, Some(0..0x80_0000_0000));
    table.recycle(released.freed_tables, &mut dma);
    assert!(table.prepare_map(G1, 0x20_0000, M2, &dma).is_none(), "nothing is retained any more");
    table.map(G1, 0x20_0000, M2, Perm::READ, &mut dma).unwrap();
    assert_eq!(table.translate(G1 + K4).map(|t| (t.phys, t.page_size)), Some((0x20_1000, M2)));
    assert_maps(&table, &dma, G1 + M2 - K4, Some((0x20_0000 + M2 - K4, M2)));
    // The 2 MiB unmap retains the path down to the table that held the leaf: the next 2 MiB
    // leaf goes into it, nothing is in the way.
    let unmapped = table.unmap(G1, M2, SplitPolicy::Refuse, &mut dma).unwrap();
    assert!(unmapped.freed_tables.is_empty());
    assert!(table.prepare_map(G1, 0x40_0000, M2, &dma).is_none());
    let live = dma.live_count();
    table.map(G1, 0x40_0000, M2, Perm::READ, &mut dma).unwrap();
    assert_eq!(dma.live_count(), live);
    assert_maps(&table, &dma, G1, Some((0x40_0000, M2)));
    table.unmap(G1, M2, SplitPolicy::Refuse, &mut dma).unwrap().freed_tables.release(&mut dma);
    table.destroy(&mut dma);
    assert_eq!(dma.live_count(), 0);
}

#[test]
fn a_map_over_a_retained_path_without_prepare_is_still_right() {
    let mut dma = FakeDma::new();
    let mut table = sl_table(&mut dma);
    table.map(G1 + K4, 0x8000, K4, Perm::READ, &mut dma).unwrap();
    table.unmap(G1 + K4, K4, SplitPolicy::Refuse, &mut dma).unwrap().freed_tables.release(&mut dma);
    table.map(G1, 0x20_0000, M2, Perm::READ, &mut dma).unwrap();
    // Mapped through the emptied leaf table, 4 KiB at a time, every page where it belongs.
    for page in [0, 1, 255, 511] {
        assert_maps(&table, &dma, G1 + page * K4, Some((0x20_0000 + page * K4, K4)));
    }
    assert_eq!(table.map(G1 + K4, 0, K4, Perm::READ, &mut dma), Err(Error::AlreadyMapped { iova: G1 + K4 }));
    table.unmap(G1, M2, SplitPolicy::Refuse, &mut dma).unwrap().freed_tables.release(&mut dma);
    assert_maps(&table, &dma, G1, None);
    table.destroy(&mut dma);
    assert_eq!(dma.live_count(), 0);
}

#[test]
fn small_unmaps_everywhere_hold_at_most_one_path_beyond_the_spares() {
    let mut dma = FakeDma::new();
    let mut table = sl_table(&mut dma);
    // Root, one retained path of three tables, at most eight spares.
    let bound = 1 + 3 + 8;
    for step in 0..64u64 {
        // Spread over leaf tables, directories and root entries.
        let iova = (step % 7) * 0x80_0000_0000 + (step % 5) * G1 + step * M2;
        table.map(iova, 0x8000, K4, Perm::READ, &mut dma).unwrap();
        let unmapped = table.unmap(iova, K4, SplitPolicy::Refuse, &mut dma).unwrap();
        table.recycle(unmapped.freed_tables, &mut dma);
        assert!(dma.live_count() <= bound, "step {step}: {} tables held", dma.live_count());
        assert_maps(&table, &dma, iova, None);
    }
    table.destroy(&mut dma);
    assert_eq!(dma.live_count(), 0);
}

#[test]
fn recycle_returns_tables_that_still_hold_entries() {
    let mut dma = FakeDma::new();
    let mut small = sl_table(&mut dma);
    let base = dma.live_count();
    // 4 KiB pages filling two leaf tables; the unmap covers both whole, so they are unlinked with
    // their entries in place (not cleared one by one) and must not be reused as empty tables.
    for page in 0..1024 {
        small.map(G1 + page * K4, page * K4, K4, Perm::READ, &mut dma).unwrap();
    }
    assert_eq!(dma.live_count(), base + 4, "three levels of path plus a second leaf table");
    let unmapped = small.unmap(G1, 2 * M2, SplitPolicy::Refuse, &mut dma).unwrap();
    assert_eq!(unmapped.freed_tables.len(), 2, "the emptied upper tables stay linked");
    small.recycle(unmapped.freed_tables, &mut dma);
    // The two full leaf tables went back to the allocator.
    assert_eq!(dma.live_count(), base + 2);
    small.map(G1, 0, K4, Perm::READ, &mut dma).unwrap();
    assert_maps(&small, &dma, G1, Some((0, K4)));
    assert_maps(&small, &dma, G1 + K4, None);
    assert_eq!(dma.live_count(), base + 3, "one leaf table allocated fresh");
    small.destroy(&mut dma);
    assert_eq!(dma.live_count(), 0);
}

#[test]
fn emptiness_follows_every_entry_change() {
    let mut dma = FakeDma::new();
    let mut table = sl_table(&mut dma);
    // Fill a leaf table except its last entry, then empty it from both ends: the table is
    // reclaimed exactly when its last entry goes, not before.
    table.map(0, 0, M2 - K4, Perm::READ, &mut dma).unwrap();
    table.map(M2 - K4, 0, K4, Perm::READ, &mut dma).unwrap();
    let first = table.unmap(0, K4, SplitPolicy::Refuse, &mut dma).unwrap();
    assert!(first.freed_tables.is_empty());
    table.recycle(first.freed_tables, &mut dma);
    let middle = table.unmap(K4, M2 - 3 * K4, SplitPolicy::Refuse, &mut dma).unwrap();
    assert!(middle.freed_tables.is_empty(), "entry {} still maps", M2 - 2 * K4);
    table.recycle(middle.freed_tables, &mut dma);
    let before_last = table.unmap(M2 - 2 * K4, K4, SplitPolicy::Refuse, &mut dma).unwrap();
    assert!(before_last.freed_tables.is_empty());
    table.recycle(before_last.freed_tables, &mut dma);
    let last = table.unmap(M2 - K4, K4, SplitPolicy::Refuse, &mut dma).unwrap();
    assert!(last.freed_tables.is_empty(), "the emptied path is retained");
    table.recycle(last.freed_tables, &mut dma);
    // Emptied a second path elsewhere: the first one is reclaimed now, and it is empty all the
    // way up.
    table.map(0x80_0000_0000, 0, K4, Perm::READ, &mut dma).unwrap();
    let elsewhere = table.unmap(0x80_0000_0000, K4, SplitPolicy::Refuse, &mut dma).unwrap();
    assert_eq!(elsewhere.freed_tables.len(), 3, "leaf, directory and directory-pointer tables");
    table.recycle(elsewhere.freed_tables, &mut dma);
    table.destroy(&mut dma);
    assert_eq!(dma.live_count(), 0);
}

#[test]
fn a_misbehaving_allocator_is_refused() {
    struct ShortAllocator(FakeDma);
    impl hwio::DmaAllocator for ShortAllocator {
        fn alloc_zeroed(&mut self, size: usize, align: usize) -> Option<hwio::DmaBuffer> {
            // Hands out half of what was asked.
            self.0.alloc_zeroed(size / 2, align)
        }
        fn free(&mut self, buffer: hwio::DmaBuffer) {
            self.0.free(buffer)
        }
        fn flush_for_device(&self, virt: *const u8, len: usize) {
            self.0.flush_for_device(virt, len)
        }
    }
    let mut short = ShortAllocator(FakeDma::new());
    let result = PageTable::new(&mut short, stage1(48, false));
    assert_eq!(result.map(|_| ()).unwrap_err(), Error::BadAllocation);
    assert_eq!(short.0.live_count(), 0, "the bad buffer was given back");
}

#[test]
fn device_memory_gets_device_attributes_on_arm_and_is_refused_on_vtd() {
    let mut dma = FakeDma::new();
    let doorbell = 0x0802_0000;
    let device_rw = Perm::READ_WRITE | Perm::DEVICE;
    let mut s1 = PageTable::new(&mut dma, stage1(48, false)).unwrap();
    s1.map(doorbell, doorbell, K4, device_rw, &mut dma).unwrap();
    s1.map(G1, 0x4000_0000, K4, Perm::READ_WRITE, &mut dma).unwrap();
    let leaf = *device_walk(&s1, &dma, doorbell).last().unwrap();
    assert_eq!(Stage1Entry(leaf).attr_index(), 2, "the Device-nGnRE MAIR index");
    assert_eq!(Stage1Entry(*device_walk(&s1, &dma, G1).last().unwrap()).attr_index(), 1, "normal memory keeps its index");
    assert_eq!(s1.translate(doorbell).map(|t| t.perm), Some(device_rw));
    assert_eq!(s1.translate(G1).map(|t| t.perm), Some(Perm::READ_WRITE));
    s1.destroy(&mut dma);

    let mut s2 = PageTable::new(&mut dma, stage2(40, 1)).unwrap();
    s2.map(doorbell, doorbell, K4, device_rw, &mut dma).unwrap();
    let leaf = *device_walk(&s2, &dma, doorbell).last().unwrap();
    assert_eq!(leaf >> 2 & 0b1111, 0b0001, "MemAttr Device-nGnRE");
    assert_eq!(s2.translate(doorbell).map(|t| t.perm), Some(device_rw));
    s2.destroy(&mut dma);

    let mut second = sl_table(&mut dma);
    assert_eq!(second.map(doorbell, doorbell, K4, device_rw, &mut dma), Err(Error::UnsupportedPermission));
    second.destroy(&mut dma);
    let mut first = PageTable::new(&mut dma, first_level(false)).unwrap();
    assert_eq!(first.map(doorbell, doorbell, K4, device_rw, &mut dma), Err(Error::UnsupportedPermission));
    first.destroy(&mut dma);
    assert_eq!(dma.live_count(), 0);
}

#[test]
fn every_format_holds_at_most_one_emptied_path() {
    fn check<F: Format>(format: F) {
        let mut dma = FakeDma::new();
        let mut table = PageTable::new(&mut dma, format).unwrap();
        let limit = table.geometry().input_limit();
        // The root, one retained path below it, and the spare tables.
        let bound = 1 + (table.levels() as usize - 1) + 8;
        let phys = 0x4000_0000;
        let mut previous = 0;
        let mut replaced = 0;
        for step in 0..60u64 {
            // Addresses spread over the whole input range; every third map a 2 MiB leaf where
            // the step before left its emptied path, which must make way for it (as the
            // backends do with `prepare_map`).
            let spread = (step.wrapping_mul(0x9E37_79B9_7F4A_7C15) % limit) & !(K4 - 1);
            let (iova, length) = if step % 3 == 2 { (previous & !(M2 - 1), M2) } else { (spread, K4) };
            previous = iova;
            if let Some(unlinked) = table.prepare_map(iova, phys, length, &dma) {
                replaced += 1;
                table.recycle(unlinked.freed_tables, &mut dma);
            }
            table.map(iova, phys, length, Perm::READ, &mut dma).unwrap();
            for offset in [0, length - K4] {
                assert_eq!(table.translate(iova + offset).map(|t| t.phys), Some(phys + offset), "step {step}");
                assert_eq!(device_translate(&table, &dma, iova + offset), Some(phys + offset), "step {step}");
            }
            if length == M2 {
                assert_eq!(table.translate(iova).map(|t| t.page_size), Some(M2), "step {step}: a 2 MiB leaf");
            }
            let unmapped = table.unmap(iova, length, SplitPolicy::Refuse, &mut dma).unwrap();
            assert_eq!(unmapped.bytes, length);
            table.recycle(unmapped.freed_tables, &mut dma);
            assert_eq!(device_translate(&table, &dma, iova), None, "step {step}");
            assert!(dma.live_count() <= bound, "step {step}: {} tables held, at most {bound}", dma.live_count());
        }
        assert_eq!(replaced, 20, "every 2 MiB map found a retained path in its way");
        table.destroy(&mut dma);
        assert_eq!(dma.live_count(), 0);
    }
    check(second_level(4, LargePages::ALL, false));
    check(second_level(3, LargePages::ALL, false));
    check(first_level(false));
    check(stage1(48, false));
    check(stage1(39, false));
    check(stage2(48, 0));
    check(stage2(40, 1));
}
