//! Stream configurations end to end: the driver writes STEs/CDs, the model walks them.

use super::support::*;
use crate::cd::ContextDescriptor;
use crate::cmd::opcode;
use crate::event::{EventType, FaultClass};
use crate::model::Access;
use crate::regs::{Granule, WalkAttributes};
use crate::smmu::{SmmuOptions, TlbScope};
use crate::{NestedStage1, Stage1Config, Stage2Config, StreamConfig};

const SID: u32 = 0x0008; // bus 0, device 1, function 0
const DATA: u64 = MEM_BASE + (20 << 20);

/// Stage-1 tables with a 39-bit input (T0SZ 25, start level 1): IOVA 0x8000_0000 → DATA (RW),
/// IOVA 0x8000_1000 → DATA + 4K (read-only).
fn stage1_tables(rig: &Rig) -> (PageTables, u64) {
    let tables = PageTables::new(&rig.memory, TABLES_BASE, 0);
    let root = tables.alloc(4096);
    tables.map(root, 1, 39, 0x8000_0000, DATA, S1_RW);
    tables.map(root, 1, 39, 0x8000_1000, DATA + 0x1000, S1_RO);
    (tables, root)
}

/// Stage-2 tables with a 40-bit IPA (T0SZ 24) starting at level 1: two concatenated root tables.
fn stage2_tables(rig: &Rig, base: u64) -> (PageTables, u64) {
    let tables = PageTables::new(&rig.memory, base, 0);
    let root = tables.alloc(8192);
    (tables, root)
}

#[test]
fn bypass_then_abort_takes_effect_immediately() {
    let mut rig = Rig::new();
    let (smmu, mut env) = rig.parts();
    smmu.set_bypass(&mut env, SID).unwrap();
    assert_eq!(rig.model().translate(SID, None, 0x1234_5678, Access::Write), Ok(0x1234_5678));
    assert!(rig.model().config_cached(SID));
    let (smmu, mut env) = rig.parts();
    smmu.set_abort(&mut env, SID).unwrap();
    // Only a CFGI_STE makes the model forget the cached bypass configuration.
    assert_eq!(rig.model().translate(SID, None, 0x1234_5678, Access::Write).unwrap_err().event, None);
}

#[test]
fn stage1_translates_and_reports_faults() {
    let mut rig = Rig::new();
    let (_tables, root) = stage1_tables(&rig);
    let (smmu, mut env) = rig.parts();
    let asid = smmu.alloc_asid().unwrap();
    smmu.attach_stage1(&mut env, SID, &Stage1Config::new(asid, root, 25, Granule::Size4K)).unwrap();
    let model = rig.model();
    assert_eq!(model.translate(SID, None, 0x8000_0123, Access::Write), Ok(DATA + 0x123));
    assert_eq!(model.translate(SID, None, 0x8000_1FF8, Access::Read), Ok(DATA + 0x1FF8));
    assert!(model.translate(SID, None, 0x8000_1000, Access::Write).is_err());
    assert!(model.translate(SID, None, 0x9000_0000, Access::Read).is_err());
    assert!(model.translate(SID, None, 1 << 39, Access::Read).is_err(), "outside the 39-bit TTB0 range");

    let events = rig.smmu.drain_events().events;
    let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [EventType::Permission, EventType::Translation, EventType::Translation]);
    let permission = events[0];
    assert_eq!(permission.stream_id, SID);
    assert_eq!(permission.input_addr, Some(0x8000_1000));
    assert_eq!(permission.read, Some(false));
    assert!(!permission.stage2);
    assert_eq!(permission.ipa, None);
    assert_eq!(events[1].read, Some(true));
    assert_eq!(events[2].input_addr, Some(1 << 39));
}

#[test]
fn stage1_cd_matches_what_qemu_requires() {
    let mut rig = Rig::new();
    let (_tables, root) = stage1_tables(&rig);
    let (smmu, mut env) = rig.parts();
    smmu.attach_stage1(&mut env, SID, &Stage1Config::new(7, root, 25, Granule::Size4K)).unwrap();
    let ste = rig.smmu.ste(SID).unwrap();
    assert_eq!(ste.config(), Some(StreamConfig::Stage1));
    assert_eq!(ste.s1_cd_max(), 0);
    assert_eq!(ste.s2vmid(), 0, "stage-1-only entries are tagged with VMID 0");
    let cd_addr = ste.s1_context_ptr();
    let mut cd = ContextDescriptor::default();
    for (i, w) in cd.words.iter_mut().enumerate() {
        *w = rig.memory.read_u64(cd_addr + 8 * i as u64).unwrap();
    }
    assert_eq!(cd.ips(), 4, "IPS clamped to the 44-bit OAS");
    assert!(cd.valid() && cd.aa64() && cd.abort_faults() && cd.epd1() && !cd.epd0());
    assert_eq!((cd.asid(), cd.ttb0(), cd.t0sz()), (7, root, 25));
}

#[test]
fn unmapping_needs_the_range_invalidation_the_driver_issues() {
    let mut rig = Rig::new();
    let (tables, root) = stage1_tables(&rig);
    let (smmu, mut env) = rig.parts();
    let asid = smmu.alloc_asid().unwrap();
    smmu.attach_stage1(&mut env, SID, &Stage1Config::new(asid, root, 25, Granule::Size4K)).unwrap();
    assert_eq!(rig.model().translate(SID, None, 0x8000_0000, Access::Read), Ok(DATA));
    tables.unmap(root, 1, 39, 0x8000_0000);
    // The TLB still holds the old translation, as hardware would.
    assert_eq!(rig.model().translate(SID, None, 0x8000_0000, Access::Read), Ok(DATA));
    let (smmu, mut env) = rig.parts();
    smmu.tlbi_range(&mut env, TlbScope::Stage1 { asid }, 0x8000_0000, 0x2000, Granule::Size4K, true).unwrap();
    let err = rig.model().translate(SID, None, 0x8000_0000, Access::Read).unwrap_err();
    assert_eq!(err.event.unwrap().event_type(), EventType::Translation);
    // QEMU's SMMU has range invalidation: one TLBI_NH_VA for both pages ((NUM + 1) << SCALE
    // = 1 << 1, TG 4K), then CMD_SYNC.
    let cmds = rig.model().executed_commands();
    let last = &cmds[cmds.len() - 2..];
    assert_eq!((last[0].op(), last[0].va(), last[0].tg(), last[0].num(), last[0].scale()), (opcode::TLBI_NH_VA, 0x8000_0000, 1, 0, 1));
    assert_eq!(last[1].op(), opcode::SYNC);
}

#[test]
fn without_range_invalidation_small_ranges_go_page_by_page() {
    let mut rig = Rig::without_range_invalidation(SmmuOptions::default());
    let (tables, root) = stage1_tables(&rig);
    let (smmu, mut env) = rig.parts();
    let asid = smmu.alloc_asid().unwrap();
    smmu.attach_stage1(&mut env, SID, &Stage1Config::new(asid, root, 25, Granule::Size4K)).unwrap();
    assert_eq!(rig.model().translate(SID, None, 0x8000_1000, Access::Read), Ok(DATA + 0x1000));
    tables.unmap(root, 1, 39, 0x8000_1000);
    let (smmu, mut env) = rig.parts();
    smmu.tlbi_range(&mut env, TlbScope::Stage1 { asid }, 0x8000_0000, 0x2000, Granule::Size4K, true).unwrap();
    assert!(rig.model().translate(SID, None, 0x8000_1000, Access::Read).is_err());
    let ops: Vec<(u8, u64)> = rig.model().executed_commands().iter().rev().take(3).map(|c| (c.op(), c.tg())).collect();
    assert_eq!(ops, [(opcode::SYNC, 0), (opcode::TLBI_NH_VA, 0), (opcode::TLBI_NH_VA, 0)]);
}

#[test]
fn without_range_invalidation_large_ranges_invalidate_the_whole_asid() {
    let mut rig = Rig::without_range_invalidation(SmmuOptions::default());
    let (tables, root) = stage1_tables(&rig);
    let (smmu, mut env) = rig.parts();
    let asid = smmu.alloc_asid().unwrap();
    smmu.attach_stage1(&mut env, SID, &Stage1Config::new(asid, root, 25, Granule::Size4K)).unwrap();
    // The device caches the translation of the range's last page, which is then unmapped.
    assert_eq!(rig.model().dma_write(SID, None, 0x8000_0000, &[7; 8]), Ok(()));
    assert_eq!(rig.memory.read_bytes(DATA, 8), Some(vec![7; 8]));
    tables.unmap(root, 1, 39, 0x8000_0000);
    let (smmu, mut env) = rig.parts();
    smmu.tlbi_range(&mut env, TlbScope::Stage1 { asid }, 0x8000_0000 - 64 * 4096, 65 * 4096, Granule::Size4K, false).unwrap();
    let cmds = rig.model().executed_commands();
    let last = &cmds[cmds.len() - 2..];
    assert_eq!((last[0].op(), last[0].asid(), last[0].vmid()), (opcode::TLBI_NH_ASID, asid as u64, 0));
    assert_eq!(last[1].op(), opcode::SYNC);
    let aborted = rig.model().dma_write(SID, None, 0x8000_0000, &[9; 8]).unwrap_err();
    assert_eq!(aborted.event.map(|event| event.event_type()), Some(EventType::Translation));
    assert_eq!(rig.memory.read_bytes(DATA, 8), Some(vec![7; 8]));
}

#[test]
fn range_invalidation_covers_any_page_count_in_few_commands() {
    let mut rig = Rig::new();
    // 65 pages = 1 page at SCALE 0, then 64 pages as NUM 1 at SCALE 6; 0x3FF pages: 31 + 31 * 32.
    for (pages, expected) in [(65u64, vec![(0x10_0000u64, 0u64, 0u64), (0x10_1000, 0, 6)]), (0x3FF, vec![(0x10_0000, 30, 0), (0x11_F000, 30, 5)])] {
        let before = rig.model().executed_commands().len();
        let (smmu, mut env) = rig.parts();
        smmu.tlbi_range(&mut env, TlbScope::Stage2 { vmid: 3 }, 0x10_0000, pages * 4096, Granule::Size4K, false).unwrap();
        let cmds = rig.model().executed_commands()[before..].to_vec();
        let ranges: Vec<(u64, u64, u64)> = cmds.iter().filter(|c| c.op() == opcode::TLBI_S2_IPA).map(|c| (c.ipa(), c.num(), c.scale())).collect();
        assert_eq!(ranges, expected);
        let covered: u64 = ranges.iter().map(|&(_, num, scale)| (num + 1) << scale).sum();
        assert_eq!(covered, pages);
        // The combined entries of nested streams, then the sync.
        let tail: Vec<u8> = cmds.iter().rev().take(2).map(|c| c.op()).collect();
        assert_eq!(tail, [opcode::SYNC, opcode::TLBI_NH_ALL]);
    }
}

#[test]
fn stage2_translates_through_concatenated_root_and_reports_ipa() {
    let mut rig = Rig::new();
    let (tables, root) = stage2_tables(&rig, TABLES_BASE);
    // IPA bit 39 selects the second concatenated root table.
    tables.map(root, 1, 40, 0x80_0000_0000, DATA, S2_RW);
    tables.map(root, 1, 40, 0x1000, DATA + 0x1000, S2_RO);
    let (smmu, mut env) = rig.parts();
    let vmid = smmu.alloc_vmid().unwrap();
    smmu.attach_stage2(&mut env, SID, &Stage2Config::new(vmid, root, 24, 1, Granule::Size4K)).unwrap();
    let model = rig.model();
    assert_eq!(model.translate(SID, None, 0x80_0000_0040, Access::Write), Ok(DATA + 0x40));
    assert_eq!(model.translate(SID, None, 0x1008, Access::Read), Ok(DATA + 0x1008));
    assert!(model.translate(SID, None, 0x1008, Access::Write).is_err());
    let events = rig.smmu.drain_events().events;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, EventType::Permission);
    assert!(events[0].stage2);
    assert_eq!(events[0].ipa, Some(0x1000));
    assert_eq!(events[0].class, Some(FaultClass::Input));
    let ste = rig.smmu.ste(SID).unwrap();
    assert!(ste.s2_aa64() && ste.s2_record());
    assert_eq!((ste.s2sl0(), ste.s2t0sz(), ste.s2vmid()), (1, 24, vmid as u64));
}

/// Nested: stage 2 maps guest IPA [GUEST_IPA, +256K) onto PA [GUEST_BASE, +256K); the guest's CD
/// and stage-1 tables live there and refer to each other by IPA. Guest IOVA 0x4000_0000 → IPA
/// DATA_IPA → PA DATA.
const GUEST_IPA: u64 = 0x10_0000_0000;
const DATA_IPA: u64 = 0x20_0000_0000;

struct Nested {
    s2cfg: Stage2Config,
    s1: NestedStage1,
    s2: PageTables,
    s2_root: u64,
    s1_root: u64,
}

fn nested_setup(rig: &mut Rig) -> Nested {
    let (s2, s2_root) = stage2_tables(rig, TABLES_BASE);
    for page in 0..64 {
        s2.map(s2_root, 1, 40, GUEST_IPA + page * 4096, GUEST_BASE + page * 4096, S2_RW);
    }
    s2.map(s2_root, 1, 40, DATA_IPA, DATA, S2_RW);
    let guest = PageTables::new(&rig.memory, GUEST_BASE, GUEST_BASE.wrapping_sub(GUEST_IPA));
    let cd_pa = guest.alloc(4096);
    let s1_root = guest.alloc(4096);
    guest.map(s1_root, 1, 39, 0x4000_0000, DATA_IPA, S1_RW);
    let cd = ContextDescriptor::for_stage1(
        &Stage1Config::new(0x55, guest.walker_address(s1_root), 25, Granule::Size4K),
        44,
        WalkAttributes::for_coherency(true),
    );
    for (i, w) in cd.words.iter().enumerate() {
        assert!(rig.memory.write_u64(cd_pa + 8 * i as u64, *w));
    }
    let vmid = rig.smmu.alloc_vmid().unwrap();
    let s2cfg = Stage2Config::new(vmid, s2_root, 24, 1, Granule::Size4K);
    Nested { s2cfg, s1: NestedStage1 { cd_ipa: guest.walker_address(cd_pa) }, s2, s2_root, s1_root }
}

#[test]
fn nested_translation_walks_cd_and_tables_through_stage2() {
    let mut rig = Rig::new();
    let n = nested_setup(&mut rig);
    let (smmu, mut env) = rig.parts();
    smmu.attach_nested(&mut env, SID, &n.s1, &n.s2cfg).unwrap();
    assert_eq!(rig.smmu.ste(SID).unwrap().config(), Some(StreamConfig::Nested));
    assert_eq!(rig.model().translate(SID, None, 0x4000_0010, Access::Write), Ok(DATA + 0x10));

    // A stage-1 level-2 table at an IPA that stage 2 does not map: stage-2 fault, CLASS = TT.
    let unmapped_table_ipa = GUEST_IPA + 63 * 4096;
    n.s2.unmap(n.s2_root, 1, 40, unmapped_table_ipa);
    let slot = n.s1_root + ((0x8000_0000u64 >> 30) & 0x1FF) * 8;
    assert!(rig.memory.write_u64(slot, unmapped_table_ipa | 0b11));
    let err = rig.model().translate(SID, None, 0x8000_0000, Access::Read).unwrap_err();
    let ev = err.event.unwrap().decode();
    assert_eq!(ev.kind, EventType::Translation);
    assert!(ev.stage2);
    assert_eq!(ev.class, Some(FaultClass::TranslationTable));
    assert_eq!(ev.ipa, Some(unmapped_table_ipa));
    assert_eq!(ev.input_addr, Some(0x8000_0000));
}

#[test]
fn nested_invalidation_by_stage2_range_drops_combined_entries() {
    let mut rig = Rig::new();
    let n = nested_setup(&mut rig);
    let (smmu, mut env) = rig.parts();
    smmu.attach_nested(&mut env, SID, &n.s1, &n.s2cfg).unwrap();
    assert_eq!(rig.model().translate(SID, None, 0x4000_0000, Access::Read), Ok(DATA));
    n.s2.unmap(n.s2_root, 1, 40, DATA_IPA);
    let (smmu, mut env) = rig.parts();
    let scope = TlbScope::Stage2 { vmid: n.s2cfg.vmid };
    smmu.tlbi_range(&mut env, scope, DATA_IPA, 4096, Granule::Size4K, true).unwrap();
    let ev = rig.model().translate(SID, None, 0x4000_0000, Access::Read).unwrap_err().event.unwrap().decode();
    assert_eq!((ev.kind, ev.stage2, ev.class), (EventType::Translation, true, Some(FaultClass::Input)));
    assert_eq!(ev.ipa, Some(DATA_IPA));
}

#[test]
fn nested_cd_problems_are_reported_as_cd_events() {
    let mut rig = Rig::new();
    let Nested { s2cfg, s1, s2, s2_root, .. } = nested_setup(&mut rig);
    // A CD IPA mapped by stage 2 to memory that does not exist: F_CD_FETCH.
    let hole_ipa = GUEST_IPA + (1 << 30);
    s2.map(s2_root, 1, 40, hole_ipa, 0x100_0000_0000 - 0x1000, S2_RW);
    let (smmu, mut env) = rig.parts();
    smmu.attach_nested(&mut env, SID, &NestedStage1 { cd_ipa: hole_ipa }, &s2cfg).unwrap();
    let ev = rig.model().translate(SID, None, 0x4000_0000, Access::Read).unwrap_err().event.unwrap().decode();
    assert_eq!((ev.kind, ev.fetch_addr), (EventType::CdFetch, Some(0x100_0000_0000 - 0x1000)));

    // An invalid guest CD (V = 0): C_BAD_CD.
    let cd_pa = s1.cd_ipa.wrapping_add(GUEST_BASE.wrapping_sub(GUEST_IPA));
    let word0 = rig.memory.read_u64(cd_pa).unwrap();
    assert!(rig.memory.write_u64(cd_pa, word0 & !(1 << 31)));
    let (smmu, mut env) = rig.parts();
    smmu.attach_nested(&mut env, SID, &s1, &s2cfg).unwrap();
    let ev = rig.model().translate(SID, None, 0x4000_0000, Access::Read).unwrap_err().event.unwrap().decode();
    assert_eq!(ev.kind, EventType::BadCd);
}

#[test]
fn faults_are_not_recorded_without_cd_r_and_config_errors_always_are() {
    let mut rig = Rig::new();
    let (_tables, root) = stage1_tables(&rig);
    let mut cfg = Stage1Config::new(3, root, 25, Granule::Size4K);
    cfg.record_faults = false;
    let (smmu, mut env) = rig.parts();
    smmu.attach_stage1(&mut env, SID, &cfg).unwrap();
    assert_eq!(rig.model().translate(SID, None, 0x9000_0000, Access::Read).unwrap_err().event, None);
    // QEMU has no substreams: SSID traffic is C_BAD_SUBSTREAMID whatever CD.R says.
    let ev = rig.model().translate(SID, Some(1), 0x8000_0000, Access::Read).unwrap_err().event.unwrap().decode();
    assert_eq!((ev.kind, ev.substream_id), (EventType::BadSubstreamId, Some(1)));
}

#[test]
fn walk_external_abort_reports_the_descriptor_address() {
    let mut rig = Rig::new();
    let missing_root = 0x800_0000_0000; // below the 44-bit OAS, not backed by memory
    let (smmu, mut env) = rig.parts();
    smmu.attach_stage1(&mut env, SID, &Stage1Config::new(4, missing_root, 25, Granule::Size4K)).unwrap();
    let ev = rig.model().translate(SID, None, 0x8000_0000, Access::Read).unwrap_err().event.unwrap().decode();
    assert_eq!(ev.kind, EventType::WalkExternalAbort);
    assert_eq!(ev.fetch_addr, Some(missing_root + 2 * 8), "level-1 index of IOVA 0x8000_0000 is 2");
    assert_eq!(ev.class, Some(FaultClass::Input));
}

#[test]
fn reattaching_a_live_stream_goes_through_abort_and_frees_the_old_cd() {
    let mut rig = Rig::new();
    let (_tables, root) = stage1_tables(&rig);
    let (s2, s2_root) = stage2_tables(&rig, TABLES_BASE + (1 << 20));
    s2.map(s2_root, 1, 40, 0x8000_0000, DATA + 0x2000, S2_RW);
    let (smmu, mut env) = rig.parts();
    smmu.attach_stage1(&mut env, SID, &Stage1Config::new(5, root, 25, Granule::Size4K)).unwrap();
    let with_cd = rig.dma.live_allocations();
    let executed_before = rig.model().executed_commands().len();
    let (smmu, mut env) = rig.parts();
    let vmid = smmu.alloc_vmid().unwrap();
    smmu.attach_stage2(&mut env, SID, &Stage2Config::new(vmid, s2_root, 24, 1, Granule::Size4K)).unwrap();
    assert_eq!(rig.dma.live_allocations(), with_cd - 1, "the stage-1 CD was released");
    let ops: Vec<u8> = rig.model().executed_commands()[executed_before..].iter().map(|c| c.op()).collect();
    // Block (CFGI_STE + SYNC), then install (CFGI_STE + SYNC).
    assert_eq!(ops, [opcode::CFGI_STE, opcode::SYNC, opcode::CFGI_STE, opcode::SYNC]);
    assert_eq!(rig.model().translate(SID, None, 0x8000_0000, Access::Read), Ok(DATA + 0x2000));
}

#[test]
fn invalid_configurations_never_reach_the_ste() {
    let mut rig = Rig::new();
    let (smmu, mut env) = rig.parts();
    smmu.set_bypass(&mut env, SID).unwrap();
    let bad = Stage1Config::new(1, 0x4000_0000, 12, Granule::Size4K);
    assert!(smmu.attach_stage1(&mut env, SID, &bad).is_err());
    assert_eq!(rig.smmu.ste(SID).unwrap().config(), Some(StreamConfig::Bypass));
}

#[test]
fn range_invalidation_reaches_the_last_page_of_the_range() {
    let mut rig = Rig::new();
    let (tables, root) = stage2_tables(&rig, TABLES_BASE);
    let last = 0x10_0000 + 0x3FE * 4096;
    tables.map(root, 1, 40, last, DATA, S2_RW);
    let (smmu, mut env) = rig.parts();
    let vmid = smmu.alloc_vmid().unwrap();
    smmu.attach_stage2(&mut env, SID, &Stage2Config::new(vmid, root, 24, 1, Granule::Size4K)).unwrap();
    assert_eq!(rig.model().dma_write(SID, None, last, &[3; 4]), Ok(()));
    tables.unmap(root, 1, 40, last);
    // 0x3FF pages in two range commands (SCALE 0 and 5): the cached page is in the second.
    let (smmu, mut env) = rig.parts();
    smmu.tlbi_range(&mut env, TlbScope::Stage2 { vmid }, 0x10_0000, 0x3FF * 4096, Granule::Size4K, true).unwrap();
    let aborted = rig.model().dma_write(SID, None, last, &[4; 4]).unwrap_err();
    assert_eq!(aborted.event.map(|event| event.event_type()), Some(EventType::Translation));
    assert_eq!(rig.memory.read_bytes(DATA, 4), Some(vec![3; 4]));
}
