//! The model holds the driver to the spec: each test runs a deliberately wrong driver step next
//! to the right one and asserts what the device then observes (bytes a DMA moved, an abort, an
//! event), not only which commands the driver queued.

use alloc::boxed::Box;
use alloc::rc::Rc;
use core::cell::RefCell;

use hwio::{DmaAllocator, DmaBuffer, Registers};

use super::support::*;
use crate::cmd::Command;
use crate::event::EventType;
use crate::model::{Aborted, FakeMemory, ModelConfig, ModelDma, SmmuModel};
use crate::cd::ContextDescriptor;
use crate::regs::{offset, queue_base_addr, queue_base_log2size, Granule, WalkAttributes};
use crate::ste::Ste;
use crate::smmu::{Env, SmmuOptions, TlbScope};
use crate::{SmmuError, Stage1Config, Stage2Config, StreamConfig};

const SID: u32 = 0x0008;
const OTHER_SID: u32 = 0x0010;
const DATA: u64 = MEM_BASE + (20 << 20);
const IOVA: u64 = 0x8000_0000;

/// Writes a pattern at `iova` from `sid` and returns the 16 bytes at `pa` afterwards.
fn dma_lands(model: &SmmuModel, memory: &FakeMemory, sid: u32, iova: u64, pa: u64) -> Result<Vec<u8>, Aborted> {
    model.dma_write(sid, None, iova, &[0x5a; 16])?;
    Ok(memory.read_bytes(pa, 16).unwrap())
}

/// Stage-1 tables (39-bit input, start level 1) at `base` mapping IOVA to `pa`.
fn stage1_tables(rig: &Rig, base: u64, pa: u64) -> (PageTables, u64) {
    let tables = PageTables::new(&rig.memory, base, 0);
    let root = tables.alloc(4096);
    tables.map(root, 1, 39, IOVA, pa, S1_RW);
    (tables, root)
}

#[test]
fn cfgi_cd_leaves_the_cached_ste() {
    let mut rig = Rig::new();
    let (_tables, root) = stage1_tables(&rig, TABLES_BASE, DATA);
    let (smmu, mut env) = rig.parts();
    let asid = smmu.alloc_asid().unwrap();
    smmu.attach_stage1(&mut env, SID, &Stage1Config::new(asid, root, 25, Granule::Size4K)).unwrap();
    assert_eq!(dma_lands(rig.model(), &rig.memory, SID, IOVA, DATA), Ok(vec![0x5a; 16]));

    // A hand-made block of the stream: word 0 of its STE becomes Config = abort.
    let ste_word0 = {
        let mut ste = rig.smmu.ste(SID).unwrap();
        ste.set_config(StreamConfig::Abort);
        ste.words[0]
    };
    let slot = ste_slot(&rig.memory, rig.model(), SID);
    assert!(rig.memory.write_u64(slot, ste_word0));
    let (smmu, mut env) = rig.parts();
    // Wrong: CFGI_CD (and CFGI_CD_ALL) for a change of the STE. The cached STE stays in use: the
    // device still writes memory.
    smmu.execute(&mut env, &[Command::cfgi_cd(SID, 0, false), Command::cfgi_cd_all(SID)]).unwrap();
    assert!(rig.model().config_cached(SID) && !rig.model().cd_cached(SID));
    assert!(rig.memory.write_u64(DATA, 0));
    assert_eq!(dma_lands(rig.model(), &rig.memory, SID, IOVA, DATA), Ok(vec![0x5a; 16]));
    // Right: CFGI_STE. The stream is blocked, silently (Config = abort records nothing).
    let (smmu, mut env) = rig.parts();
    smmu.execute(&mut env, &[Command::cfgi_ste(SID, false)]).unwrap();
    assert!(rig.memory.write_u64(DATA, 0));
    assert_eq!(dma_lands(rig.model(), &rig.memory, SID, IOVA, DATA), Err(Aborted { event: None }));
    assert_eq!(rig.memory.read_bytes(DATA, 8).unwrap(), [0; 8]);
}

#[test]
fn an_ste_with_a_reserved_bit_set_is_refused_by_the_driver_and_illegal_to_the_smmu() {
    let mut rig = Rig::new();
    let (_tables, root) = stage1_tables(&rig, TABLES_BASE, DATA);
    let (smmu, mut env) = rig.parts();
    let asid = smmu.alloc_asid().unwrap();
    smmu.attach_stage1(&mut env, SID, &Stage1Config::new(asid, root, 25, Granule::Size4K)).unwrap();
    assert_eq!(dma_lands(rig.model(), &rig.memory, SID, IOVA, DATA), Ok(vec![0x5a; 16]));

    // The driver's writer refuses the entry and leaves the live one alone.
    let mut wrong = rig.smmu.ste(SID).unwrap();
    wrong.words[0] |= 1 << 52;
    let (smmu, mut env) = rig.parts();
    assert_eq!(smmu.install_ste(&mut env, SID, wrong, None), Err(SmmuError::InvalidConfig("STE with RES0 bits set")));
    assert_eq!(dma_lands(rig.model(), &rig.memory, SID, IOVA, DATA), Ok(vec![0x5a; 16]));

    // Written behind the driver's back, the SMMU finds it ILLEGAL: C_BAD_STE, nothing moves.
    let slot = ste_slot(&rig.memory, rig.model(), SID);
    assert!(rig.memory.write_u64(slot, wrong.words[0]));
    let (smmu, mut env) = rig.parts();
    smmu.execute(&mut env, &[Command::cfgi_ste(SID, false)]).unwrap();
    assert!(rig.memory.write_u64(DATA, 0));
    let aborted = dma_lands(rig.model(), &rig.memory, SID, IOVA, DATA).unwrap_err();
    assert_eq!(aborted.event.map(|event| event.event_type()), Some(EventType::BadSte));
    assert_eq!(rig.memory.read_bytes(DATA, 8).unwrap(), [0; 8]);
}

#[test]
fn a_cd_with_a_reserved_bit_set_is_refused_by_the_driver() {
    let mut rig = Rig::new();
    let (_tables, root) = stage1_tables(&rig, TABLES_BASE, DATA);
    let (smmu, mut env) = rig.parts();
    let asid = smmu.alloc_asid().unwrap();
    let cfg = Stage1Config::new(asid, root, 25, Granule::Size4K);
    let mut wrong = ContextDescriptor::for_stage1(&cfg, 44, WalkAttributes::for_coherency(true));
    wrong.words[5] |= 1 << 60;
    let mut ste = Ste::abort();
    ste.set_config(StreamConfig::Stage1);
    assert_eq!(smmu.install_ste(&mut env, SID, ste, Some(wrong)), Err(SmmuError::InvalidConfig("CD with RES0 bits set")));
    // Nothing was installed: the stream stays at the default (abort).
    assert!(dma_lands(rig.model(), &rig.memory, SID, IOVA, DATA).is_err());
}

/// The STE slot of `sid` in a 2-level stream table (L1 descriptor → L2 table).
fn ste_slot(memory: &FakeMemory, model: &SmmuModel, sid: u32) -> u64 {
    let l1 = model.read64(offset::STRTAB_BASE) & 0x000F_FFFF_FFFF_FFC0;
    let descriptor = memory.read_u64(l1 + (sid as u64 >> 8) * 8).unwrap();
    (descriptor & 0x000F_FFFF_FFFF_FFC0) + (sid as u64 & 0xff) * 64
}

#[test]
fn leaf_only_invalidation_keeps_the_walk_cache() {
    for leaf_only in [true, false] {
        // Stage 1: the level-2 descriptor of IOVA is relinked to a new level-3 table.
        let mut rig = Rig::new();
        let (tables, root) = stage1_tables(&rig, TABLES_BASE, DATA);
        let (smmu, mut env) = rig.parts();
        let asid = smmu.alloc_asid().unwrap();
        smmu.attach_stage1(&mut env, SID, &Stage1Config::new(asid, root, 25, Granule::Size4K)).unwrap();
        assert_eq!(dma_lands(rig.model(), &rig.memory, SID, IOVA, DATA), Ok(vec![0x5a; 16]));
        assert!(rig.model().walk_cache_entries() >= 2);
        tables.relink(root, 1, 39, IOVA, 2);
        tables.map(root, 1, 39, IOVA, DATA + 0x3000, S1_RW);
        let (smmu, mut env) = rig.parts();
        smmu.tlbi_range(&mut env, TlbScope::Stage1 { asid }, IOVA, 0x1000, Granule::Size4K, leaf_only).unwrap();
        let landed_at = if leaf_only {
            // Wrong: Leaf = 1 after a table descriptor changed. The walk cache still leads to
            // the old level-3 table and the old page.
            DATA
        } else {
            DATA + 0x3000
        };
        assert!(rig.memory.write_bytes(DATA, &[0; 16]).is_some());
        assert_eq!(dma_lands(rig.model(), &rig.memory, SID, IOVA, landed_at), Ok(vec![0x5a; 16]));

        // Stage 2 (TLBI_S2_IPA): the same with a 40-bit IPA space.
        let mut rig = Rig::new();
        let tables = PageTables::new(&rig.memory, TABLES_BASE, 0);
        let root = tables.alloc(8192);
        tables.map(root, 1, 40, IOVA, DATA, S2_RW);
        let (smmu, mut env) = rig.parts();
        let vmid = smmu.alloc_vmid().unwrap();
        smmu.attach_stage2(&mut env, SID, &Stage2Config::new(vmid, root, 24, 1, Granule::Size4K)).unwrap();
        assert_eq!(dma_lands(rig.model(), &rig.memory, SID, IOVA, DATA), Ok(vec![0x5a; 16]));
        tables.relink(root, 1, 40, IOVA, 2);
        tables.map(root, 1, 40, IOVA, DATA + 0x3000, S2_RW);
        let (smmu, mut env) = rig.parts();
        smmu.tlbi_range(&mut env, TlbScope::Stage2 { vmid }, IOVA, 0x1000, Granule::Size4K, leaf_only).unwrap();
        assert!(rig.memory.write_bytes(DATA, &[0; 16]).is_some());
        assert_eq!(dma_lands(rig.model(), &rig.memory, SID, IOVA, landed_at), Ok(vec![0x5a; 16]));
    }
}

#[test]
fn invalidation_by_asid_or_vmid_drops_only_that_tag() {
    let mut rig = Rig::new();
    let (first_tables, first_root) = stage1_tables(&rig, TABLES_BASE, DATA);
    let (second_tables, second_root) = stage1_tables(&rig, TABLES_BASE + (1 << 20), DATA + 0x1000);
    let (smmu, mut env) = rig.parts();
    let (first_asid, second_asid) = (smmu.alloc_asid().unwrap(), smmu.alloc_asid().unwrap());
    smmu.attach_stage1(&mut env, SID, &Stage1Config::new(first_asid, first_root, 25, Granule::Size4K)).unwrap();
    smmu.attach_stage1(&mut env, OTHER_SID, &Stage1Config::new(second_asid, second_root, 25, Granule::Size4K)).unwrap();
    assert_eq!(dma_lands(rig.model(), &rig.memory, SID, IOVA, DATA), Ok(vec![0x5a; 16]));
    assert_eq!(dma_lands(rig.model(), &rig.memory, OTHER_SID, IOVA, DATA + 0x1000), Ok(vec![0x5a; 16]));
    first_tables.unmap(first_root, 1, 39, IOVA);
    second_tables.unmap(second_root, 1, 39, IOVA);
    // Wrong for the second stream: only the first ASID is invalidated, the other keeps its
    // stale translation.
    let (smmu, mut env) = rig.parts();
    smmu.tlbi_asid(&mut env, first_asid).unwrap();
    let aborted = rig.model().dma_write(SID, None, IOVA, &[1]).unwrap_err();
    assert_eq!(aborted.event.map(|event| event.event_type()), Some(EventType::Translation));
    assert_eq!(dma_lands(rig.model(), &rig.memory, OTHER_SID, IOVA, DATA + 0x1000), Ok(vec![0x5a; 16]));
    let (smmu, mut env) = rig.parts();
    smmu.tlbi_asid(&mut env, second_asid).unwrap();
    assert!(rig.model().dma_write(OTHER_SID, None, IOVA, &[1]).is_err());

    // VMIDs likewise.
    let mut rig = Rig::new();
    let tables = PageTables::new(&rig.memory, TABLES_BASE, 0);
    let (first_root, second_root) = (tables.alloc(8192), tables.alloc(8192));
    tables.map(first_root, 1, 40, IOVA, DATA, S2_RW);
    tables.map(second_root, 1, 40, IOVA, DATA + 0x1000, S2_RW);
    let (smmu, mut env) = rig.parts();
    let (first_vmid, second_vmid) = (smmu.alloc_vmid().unwrap(), smmu.alloc_vmid().unwrap());
    smmu.attach_stage2(&mut env, SID, &Stage2Config::new(first_vmid, first_root, 24, 1, Granule::Size4K)).unwrap();
    smmu.attach_stage2(&mut env, OTHER_SID, &Stage2Config::new(second_vmid, second_root, 24, 1, Granule::Size4K)).unwrap();
    assert_eq!(dma_lands(rig.model(), &rig.memory, SID, IOVA, DATA), Ok(vec![0x5a; 16]));
    assert_eq!(dma_lands(rig.model(), &rig.memory, OTHER_SID, IOVA, DATA + 0x1000), Ok(vec![0x5a; 16]));
    tables.unmap(first_root, 1, 40, IOVA);
    tables.unmap(second_root, 1, 40, IOVA);
    let (smmu, mut env) = rig.parts();
    smmu.tlbi_vmid(&mut env, first_vmid).unwrap();
    assert!(rig.model().dma_write(SID, None, IOVA, &[1]).is_err());
    assert_eq!(dma_lands(rig.model(), &rig.memory, OTHER_SID, IOVA, DATA + 0x1000), Ok(vec![0x5a; 16]));
}

/// A driver that forgets `flush_for_device` for everything outside `kept` (physical range).
struct ForgetfulDma<'a> {
    inner: &'a mut ModelDma,
    memory: Rc<FakeMemory>,
    kept: core::ops::Range<u64>,
}

impl DmaAllocator for ForgetfulDma<'_> {
    fn alloc_zeroed(&mut self, size: usize, align: usize) -> Option<DmaBuffer> {
        self.inner.alloc_zeroed(size, align)
    }
    fn free(&mut self, buffer: DmaBuffer) {
        self.inner.free(buffer)
    }
    fn flush_for_device(&self, virt: *const u8, len: usize) {
        if self.kept.contains(&self.memory.phys_of(virt).unwrap()) {
            self.inner.flush_for_device(virt, len);
        }
    }
}

/// The QEMU model with IDR0.COHACC (bit 4) clear: table and queue reads do not snoop.
fn non_coherent_rig() -> Rig {
    let mut config = ModelConfig::qemu();
    config.idr[0] &= !(1 << 4);
    Rig::with(config, SmmuOptions::default()).expect("bring-up on a non-coherent model")
}

#[test]
fn non_coherent_smmu_sees_only_flushed_writes() {
    // Right: the driver flushes every table and queue write; the device's DMA lands.
    let mut rig = non_coherent_rig();
    let (_tables, root) = stage1_tables(&rig, TABLES_BASE, DATA);
    let (smmu, mut env) = rig.parts();
    let asid = smmu.alloc_asid().unwrap();
    smmu.attach_stage1(&mut env, SID, &Stage1Config::new(asid, root, 25, Granule::Size4K)).unwrap();
    assert_eq!(dma_lands(rig.model(), &rig.memory, SID, IOVA, DATA), Ok(vec![0x5a; 16]));

    // Wrong: the same attach with every flush forgotten except the command queue's. The SMMU
    // still reads the empty level-1 stream table descriptor: C_BAD_STREAMID.
    let mut rig = non_coherent_rig();
    let (_tables, root) = stage1_tables(&rig, TABLES_BASE, DATA);
    let cmdq = rig.model().read64(offset::CMDQ_BASE);
    let kept = queue_base_addr(cmdq)..queue_base_addr(cmdq) + (Command::SIZE << queue_base_log2size(cmdq)) as u64;
    let Rig { smmu, dma, clock, memory } = &mut rig;
    let mut forgetful = ForgetfulDma { inner: dma, memory: memory.clone(), kept };
    let asid = smmu.alloc_asid().unwrap();
    let mut env = Env { dma: &mut forgetful, clock: &*clock };
    smmu.attach_stage1(&mut env, OTHER_SID, &Stage1Config::new(asid, root, 25, Granule::Size4K)).unwrap();
    let aborted = dma_lands(smmu.registers(), memory, OTHER_SID, IOVA, DATA).unwrap_err();
    assert_eq!(aborted.event.map(|event| event.event_type()), Some(EventType::BadStreamId));

    // Forgetting the command queue's flushes too: the SMMU fetches zero commands (opcode 0,
    // CERROR_ILL), the replacement CMD_SYNC the driver writes over them as well, and bring-up
    // ends in a timeout instead of hanging.
    let mut config = ModelConfig::qemu();
    config.idr[0] &= !(1 << 4);
    let memory = FakeMemory::new(MEM_BASE, MEM_SIZE);
    let mut dma = ModelDma::in_range(memory.clone(), MEM_BASE, DRIVER_END);
    let mut forgetful = ForgetfulDma { inner: &mut dma, memory: memory.clone(), kept: 0..0 };
    let clock = crate::model::StepClock::new(1_000);
    let model = SmmuModel::new(memory, config);
    let options = SmmuOptions { timeout_ns: 1_000_000, ..SmmuOptions::default() };
    let result = crate::Smmu::init(&model, &mut Env { dma: &mut forgetful, clock: &clock }, options);
    assert!(matches!(result, Err(crate::SmmuError::Timeout(crate::WaitTarget::CommandSync))), "{:?}", result.err());
    assert!(model.executed_commands().is_empty());
    assert_eq!(model.read32(offset::CMDQ_CONS) >> 24 & 0x7f, 1, "CMDQ_CONS.ERR = CERROR_ILL");
}

/// What one device write observed: the physical address, or the event of its abort (if any).
type Observed = Result<u64, Option<EventType>>;

/// Makes the device of `sid` write to IOVA after every flush from now on, with the SMMU's
/// caches evicted first (it may evict at any moment), so each attempt reads what memory holds
/// then; returns the log of what each attempt observed.
fn probe_after_flushes(dma: &mut ModelDma, model: &Rc<SmmuModel>, sid: u32) -> Rc<RefCell<Vec<Observed>>> {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let (probe_seen, probe_model) = (seen.clone(), model.clone());
    dma.observe_flushes(Box::new(move || {
        probe_model.evict_caches();
        let result = probe_model.translate(sid, None, IOVA, crate::model::Access::Write);
        probe_seen.borrow_mut().push(result.map_err(|aborted| aborted.event.map(|event| event.event_type())));
    }));
    seen
}

#[test]
fn valid_bit_published_before_the_table_pointer_is_seen_torn() {
    let memory = FakeMemory::new(MEM_BASE, MEM_SIZE);
    let mut dma = ModelDma::in_range(memory.clone(), MEM_BASE, DRIVER_END);
    let clock = crate::model::StepClock::new(1_000);
    let model = Rc::new(SmmuModel::new(memory.clone(), ModelConfig::qemu()));
    let mut smmu = crate::Smmu::init(&*model, &mut Env { dma: &mut dma, clock: &clock }, SmmuOptions::default()).unwrap();
    let tables = PageTables::new(&memory, TABLES_BASE, 0);
    let root = tables.alloc(8192);
    tables.map(root, 1, 40, IOVA, DATA, S2_RW);
    let vmid = smmu.alloc_vmid().unwrap();
    let cfg = Stage2Config::new(vmid, root, 24, 1, Granule::Size4K);

    // Right: the driver's install. Every intermediate state is "no stream" (C_BAD_STREAMID),
    // "abort" (silent) or the finished translation.
    let seen = probe_after_flushes(&mut dma, &model, SID);
    smmu.attach_stage2(&mut Env { dma: &mut dma, clock: &clock }, SID, &cfg).unwrap();
    let observed = seen.borrow().clone();
    assert!(observed.len() >= 4);
    assert!(
        observed.iter().all(|result| matches!(result, Err(Some(EventType::BadStreamId)) | Err(None) | Ok(DATA))),
        "{observed:x?}"
    );
    assert_eq!(observed.last(), Some(&Ok(DATA)));

    // Wrong: another stream's STE (same level-2 table, abort so far) gets words 1-2 (VMID,
    // T0SZ, S2AA64...), then word 0 with V and Config = stage 2, and only then word 3, the
    // table pointer. In between the SMMU walks from physical address 0: an external abort.
    let ste = smmu.ste(SID).unwrap();
    let slot = ste_slot(&memory, &model, OTHER_SID);
    let seen = probe_after_flushes(&mut dma, &model, OTHER_SID);
    for word in [1, 2, 0, 3] {
        let virt = memory.host_ptr(slot + 8 * word as u64);
        // SAFETY: `virt` points at an 8-byte aligned word inside the fake memory, which only
        // this single-threaded test touches right now.
        unsafe { core::ptr::write_volatile(virt.cast::<u64>(), ste.words[word]) };
        dma.flush_for_device(virt, 8);
    }
    assert_eq!(*seen.borrow(), [Err(None), Err(None), Err(Some(EventType::WalkExternalAbort)), Ok(DATA)]);
}
