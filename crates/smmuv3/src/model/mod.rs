//! A software SMMUv3 for host tests, behaving like QEMU 10.0.2's `virt,iommu=smmuv3` model.
//!
//! [`SmmuModel`] implements [`hwio::Registers`] (so the real driver runs on it unchanged) and
//! keeps its tables, queues and event records in [`FakeMemory`], which the driver fills through
//! [`ModelDma`]. Its DMA side is [`SmmuModel::translate`]: a device transaction walks
//! STE → CD → stage-1 tables and/or stage-2 tables exactly as the spec orders it (nested: the CD
//! address and every stage-1 table address go through stage 2), and either yields a physical
//! address or aborts, recording the spec's event in the event queue in memory.
//!
//! Like the hardware, the model caches, and each cache is dropped only by the commands the spec
//! names for it (4.3, 4.4): STEs by CMD_CFGI_STE, CMD_CFGI_STE_RANGE and CMD_CFGI_ALL; CDs by
//! CMD_CFGI_CD(_ALL) and, as in QEMU, by the STE invalidations of their stream (never the other
//! way round: CMD_CFGI_CD leaves the STE cached); translations in a TLB, and the non-leaf table
//! descriptors of each walk in a walk cache, by the CMD_TLBI_* whose tag (ASID, VMID) and address
//! match, where a TLBI by address with Leaf = 1 keeps the walk cache. A driver that forgets an
//! invalidation, or names the wrong one, therefore fails tests the way it would fail on hardware.
//!
//! An SMMU without IDR0.COHACC reads its tables and queues from the device view of
//! [`FakeMemory`], which only the driver's `flush_for_device` updates: a missing flush, or a
//! valid bit made visible before the rest of its entry, shows in the walk. Devices move bytes
//! through [`SmmuModel::dma_write`] and [`SmmuModel::dma_read`].
//!
//! Fidelity notes: register widths are enforced (a 64-bit read of an ID register panics: QEMU
//! returns 0); configurations that make QEMU abort (an STE with stage 2 and S2AA64 = 0, a CD with
//! IPS = 6) panic; commands outside the set QEMU implements get CERROR_ILL and stop the queue until
//! GERRORN acknowledges CMDQ_ERR; the event queue follows the spec's PROD.OVFLG overflow protocol
//! (QEMU instead raises GERROR.EVENTQ_ABT_ERR when full). Beyond QEMU, a configuration with
//! IDR0.PRI and stalls gets the PRI queue and stalled transactions ([`recoverable`]).

mod memory;
mod recoverable;
mod substreams;
mod walk;

use alloc::collections::BTreeMap;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};

use hwio::bits::Layout;
use hwio::Registers;

use crate::cd::ContextDescriptor;
use crate::cmd::{opcode, Command, SyncSignal};
use crate::config::Stage2Config;
use crate::event::{EventRecord, EventType, FaultClass};
use crate::queue::QueuePointer;
use crate::regs::{
    address_size_bits, cr0, cr2, gbpa, offset, queue_base_addr, queue_base_log2size, CommandErrorCode, GlobalErrors,
    Httu, IdRegisters, StreamTableFormat, StrtabBaseCfg,
};
use crate::ste::{L1Descriptor, Ste, StreamConfig};

pub use memory::{FakeMemory, ModelDma, StepClock};
pub use recoverable::{PriResponseRecord, RecoverableDevice, RecoverableOutcome, Recovery};
use walk::{walk, Fault, Stage, View, WalkConfig, WalkCursor, WalkEntry};

/// When the model consumes commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandConsumption {
    /// All pending commands run when CMDQ_PROD (or CR0, GERRORN) is written, as in QEMU.
    OnProdWrite,
    /// Up to this many commands run each time CMDQ_CONS is read: a slow, asynchronous SMMU.
    PerConsRead(u32),
    /// Never: a hung SMMU.
    Never,
}

/// What the model implements and how it responds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelConfig {
    pub idr: [u32; 6],
    /// Whether CR0ACK follows CR0 (false: an SMMU that never acknowledges).
    pub acknowledge_cr0: bool,
    pub commands: CommandConsumption,
    /// As the spec allows (4.3.2), CMD_CFGI_STE leaves the stream's cached CDs alone (QEMU drops
    /// them with the STE), and before each command it consumes the model checks that no live
    /// stage-1 STE points at a CD whose cached copy differs from memory: a CD changed without
    /// CMD_CFGI_CD before its STE went live ([`SmmuModel::stale_cd_streams`]).
    pub cds_outlive_ste_invalidation: bool,
    /// Before each command it consumes, the model checks that no block its TLB holds has
    /// become a table descriptor in memory: a block split without break-before-make (spec
    /// 3.21.1), which real TLBs may answer with a conflict ([`SmmuModel::blocks_split_while_cached`]).
    pub break_before_make_checked: bool,
}

impl ModelConfig {
    /// QEMU 10.0.2 with stage 1 and stage 2: IDR0 = 0x0D44101B, IDR1 = 0x02730010 (SIDSIZE 16,
    /// no substreams, 2^19-entry queues), IDR3 RIL|HAD, IDR5 = 44-bit OAS with 4K/16K/64K granules.
    pub const fn qemu() -> ModelConfig {
        ModelConfig {
            idr: [0x0D44_101B, 0x0273_0010, 0, 0x0000_0404, 0, 0x0000_0074],
            acknowledge_cr0: true,
            commands: CommandConsumption::OnProdWrite,
            cds_outlive_ste_invalidation: false,
            break_before_make_checked: false,
        }
    }
}

/// Read or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// A transaction the model refused. `event` is the record it wrote to the event queue, if any
/// (none for Config = abort, GBPA abort, unrecorded translation-class faults, or a disabled or
/// overflowing event queue).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aborted {
    pub event: Option<EventRecord>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TlbEntry {
    vmid: u16,
    /// `None` for stage-2-only entries.
    asid: Option<u16>,
    input_base: u64,
    size: u64,
    output_base: u64,
    writable: bool,
    /// Where the block descriptor this entry came from lies (one-stage walks of a block).
    block_descriptor: Option<u64>,
}

#[derive(Default)]
struct State {
    cr0: u32,
    cr0ack: u32,
    cr1: u32,
    cr2: u32,
    gbpa: u32,
    irq_ctrl: u32,
    gerror: u32,
    gerrorn: u32,
    strtab_base: u64,
    strtab_base_cfg: u32,
    cmdq_base: u64,
    cmdq_prod: u32,
    cmdq_cons: u32,
    eventq_base: u64,
    eventq_prod: u32,
    eventq_cons: u32,
    /// Configuration cache: STEs and (SubstreamID 0) CDs by StreamID.
    stes: BTreeMap<u32, Ste>,
    cds: BTreeMap<u32, ContextDescriptor>,
    tlb: Vec<TlbEntry>,
    walk_cache: Vec<WalkEntry>,
    executed: Vec<Command>,
    sync_interrupts: u64,
    lost_events: u64,
    recoverable: recoverable::RecoverableState,
    /// CDs of substreams, by (StreamID, SubstreamID).
    substream_cds: BTreeMap<(u32, u32), ContextDescriptor>,
    /// `cds_outlive_ste_invalidation`: streams found live over a stale cached CD.
    stale_cd_streams: Vec<u32>,
    /// `break_before_make_checked`: input addresses of cached blocks found replaced by tables.
    blocks_split_while_cached: Vec<u64>,
}

/// The model SMMU.
pub struct SmmuModel {
    memory: Rc<FakeMemory>,
    config: ModelConfig,
    /// Starts as `config.commands`; tests may change it at run time.
    commands: Cell<CommandConsumption>,
    state: RefCell<State>,
}

impl SmmuModel {
    pub fn new(memory: Rc<FakeMemory>, config: ModelConfig) -> SmmuModel {
        // Reset values as in QEMU: GBPA = 0x1000 (SHCFG = incoming), everything else zero.
        let state = State { gbpa: 0x1000, ..State::default() };
        SmmuModel { memory, config, commands: Cell::new(config.commands), state: RefCell::new(state) }
    }

    /// Changes when commands are consumed (e.g. to hang the SMMU after a successful bring-up).
    pub fn set_command_consumption(&self, commands: CommandConsumption) {
        self.commands.set(commands);
    }

    /// Raises a global error as the hardware would (toggles its GERROR bit if not active).
    pub fn raise_global_error(&self, bit: u32) {
        raise_gerror(&mut self.state.borrow_mut(), bit);
    }

    pub fn memory(&self) -> &Rc<FakeMemory> {
        &self.memory
    }

    fn id(&self) -> IdRegisters {
        IdRegisters { idr: self.config.idr }
    }

    /// Every command executed so far, in order (rejected commands are not included).
    pub fn executed_commands(&self) -> Vec<Command> {
        self.state.borrow().executed.clone()
    }

    /// CMD_SYNCs that asked for an interrupt (CS = SIG_IRQ).
    pub fn sync_interrupts(&self) -> u64 {
        self.state.borrow().sync_interrupts
    }

    /// Events discarded because the event queue was full.
    pub fn lost_events(&self) -> u64 {
        self.state.borrow().lost_events
    }

    /// Number of cached translations.
    pub fn tlb_entries(&self) -> usize {
        self.state.borrow().tlb.len()
    }

    /// Whether the STE of `sid` is cached.
    pub fn config_cached(&self, sid: u32) -> bool {
        self.state.borrow().stes.contains_key(&sid)
    }

    /// Whether the CD of `sid` (SubstreamID 0) is cached.
    pub fn cd_cached(&self, sid: u32) -> bool {
        self.state.borrow().cds.contains_key(&sid)
    }

    /// Drops every cached STE, CD, translation and table descriptor, as an SMMU may at any
    /// moment (caches are finite): a test then sees what the next fetch from memory would.
    pub fn evict_caches(&self) {
        let mut state = self.state.borrow_mut();
        state.stes.clear();
        state.cds.clear();
        state.substream_cds.clear();
        state.tlb.clear();
        state.walk_cache.clear();
    }

    /// Number of cached non-leaf table descriptors.
    pub fn walk_cache_entries(&self) -> usize {
        self.state.borrow().walk_cache.len()
    }

    /// Memory as the SMMU's table and queue accesses see it (IDR0.COHACC).
    fn view(&self) -> View<'_> {
        View { memory: &self.memory, coherent: self.id().coherent() }
    }

    /// A device's DMA write of `data` at `iova`, page by page through [`SmmuModel::translate`];
    /// stops at the first page that aborts (earlier pages were written).
    pub fn dma_write(&self, sid: u32, ssid: Option<u32>, iova: u64, data: &[u8]) -> Result<(), Aborted> {
        let mut done = 0;
        while done < data.len() {
            let address = iova + done as u64;
            let chunk = (0x1000 - (address & 0xfff) as usize).min(data.len() - done);
            let pa = self.translate(sid, ssid, address, Access::Write)?;
            self.memory.write_bytes(pa, &data[done..done + chunk]).ok_or(Aborted { event: None })?;
            done += chunk;
        }
        Ok(())
    }

    /// A device's DMA read of `len` bytes at `iova` through [`SmmuModel::translate`].
    pub fn dma_read(&self, sid: u32, ssid: Option<u32>, iova: u64, len: usize) -> Result<Vec<u8>, Aborted> {
        let mut bytes = Vec::with_capacity(len);
        while bytes.len() < len {
            let address = iova + bytes.len() as u64;
            let chunk = (0x1000 - (address & 0xfff) as usize).min(len - bytes.len());
            let pa = self.translate(sid, ssid, address, Access::Read)?;
            bytes.extend(self.memory.read_bytes(pa, chunk).ok_or(Aborted { event: None })?);
        }
        Ok(bytes)
    }

    /// Raw value of SMMU_CR0 (for tests checking what the driver enabled).
    pub fn cr0(&self) -> u32 {
        self.state.borrow().cr0
    }

    /// A device with StreamID `sid` (and SubstreamID `ssid`) accesses `iova`.
    pub fn translate(&self, sid: u32, ssid: Option<u32>, iova: u64, access: Access) -> Result<u64, Aborted> {
        let mut state = self.state.borrow_mut();
        let write = access == Access::Write;
        if state.cr0 & cr0::SMMUEN == 0 {
            // Spec 6.3.14: with the SMMU disabled, GBPA decides; no event either way.
            return if state.gbpa & gbpa::ABORT != 0 { Err(Aborted { event: None }) } else { Ok(iova) };
        }
        let mut record = EventRecord::default();
        record.set_stream_id(sid as u64).set_input_addr(iova).set_read(!write);
        if let Some(ssid) = ssid {
            record.set_ssv(true).set_substream_id(ssid as u64);
        }
        match self.translate_locked(&mut state, sid, ssid, iova, write) {
            Ok(pa) => Ok(pa),
            Err(Outcome::SilentAbort) => Err(Aborted { event: None }),
            Err(Outcome::Fault { fault, record_allowed }) => {
                // A stalled transaction is always recorded: software must learn its tag.
                let stalls = fault.kind.is_translation_class() && !fault.stage2 && self.stalls(&state, sid);
                if !record_allowed && !stalls {
                    return Err(Aborted { event: None });
                }
                record.set_event_id(fault.kind.id() as u64);
                if matches!(fault.kind, EventType::SteFetch | EventType::CdFetch | EventType::WalkExternalAbort) {
                    record.set_fetch_addr(fault.fetch_addr);
                }
                if fault.kind.is_translation_class() || fault.kind == EventType::WalkExternalAbort {
                    record.set_stage2(fault.stage2).set_class_bits(fault.class as u64);
                    if fault.stage2 && fault.kind.is_translation_class() {
                        record.set_ipa(fault.ipa);
                    }
                }
                if stalls {
                    let stag = state.recoverable.stall(sid);
                    record.set_stall(true).set_stag(stag as u64);
                }
                let written = self.record_event(&mut state, record);
                Err(Aborted { event: written.then_some(record) })
            }
        }
    }

    fn translate_locked(&self, state: &mut State, sid: u32, ssid: Option<u32>, iova: u64, write: bool) -> Result<u64, Outcome> {
        let ste = match state.stes.get(&sid) {
            Some(cached) => *cached,
            None => {
                let ste = self.fetch_ste(state, sid)?;
                state.stes.insert(sid, ste);
                ste
            }
        };
        let stream = ste.config().expect("only decodable STEs are cached");
        match stream {
            StreamConfig::Abort => return Err(Outcome::SilentAbort),
            StreamConfig::Bypass if ssid.is_none() => return Ok(iova),
            _ => {}
        }
        let cd = if stream.stage1() && ste.s1_cd_max() != 0 {
            match self.substream_cd(state, &ste, sid, ssid)? {
                substreams::SubstreamCd::Cd(cd) => Some(cd),
                substreams::SubstreamCd::Bypass => return Ok(iova),
            }
        } else if ssid.is_some() {
            // Substreams need stage 1 and S1CDMax > 0 (spec 5.2, C_BAD_SUBSTREAMID).
            return Err(config_fault(EventType::BadSubstreamId));
        } else if stream.stage1() {
            Some(match state.cds.get(&sid) {
                Some(cached) => *cached,
                None => {
                    let cd = self.fetch_cd(&ste, stream)?;
                    state.cds.insert(sid, cd);
                    cd
                }
            })
        } else {
            None
        };
        let vmid = ste.s2vmid() as u16;
        let s2 = stream.stage2().then(|| stage2_walk_config(&ste));
        let s2_record = ste.s2_record();
        let asid = cd.map(|cd| cd.asid() as u16);
        if let Some(hit) = state.tlb.iter().find(|e| {
            e.vmid == vmid && e.asid == asid && iova >= e.input_base && iova - e.input_base < e.size
        }) {
            // A cached entry that forbids the write is re-walked so the fault is reported exactly.
            if !write || hit.writable {
                return Ok(hit.output_base + (iova - hit.input_base));
            }
        }

        let memory = self.view();
        // Walks of one stage go through the walk cache; nested walks do not use it (a cached
        // stage-1 descriptor holds an IPA whose stage-2 translation would need caching too).
        let nested = cd.is_some() && s2.is_some();
        let mut cursor = WalkCursor { cache: &mut state.walk_cache, vmid, asid };
        let mut cache = (!nested).then_some(&mut cursor);
        let stage2_fault = |fault: Fault| Outcome::Fault { fault, record_allowed: !fault.kind.is_translation_class() || s2_record };
        let (output, size, writable, block_descriptor) = if let Some(cd) = cd {
            let s1 = stage1_walk_config(&cd);
            let cd_record = cd.record_faults();
            let input_ok = !cd.epd0() && iova >> s1.input_bits == 0;
            let s1_fault = |fault: Fault| {
                let record_allowed = !fault.kind.is_translation_class() || if fault.stage2 { s2_record } else { cd_record };
                Outcome::Fault { fault, record_allowed }
            };
            if !input_ok {
                return Err(s1_fault(Fault::new(EventType::Translation, false, FaultClass::Input, iova)));
            }
            let mut table_address = |table_ipa: u64| match &s2 {
                Some(s2cfg) => {
                    walk(memory, s2cfg, table_ipa, false, FaultClass::TranslationTable, &mut Ok, None).map(|l| l.output)
                }
                None => Ok(table_ipa),
            };
            let leaf = walk(memory, &s1, iova, write, FaultClass::Input, &mut table_address, cache.as_deref_mut())
                .map_err(s1_fault)?;
            match &s2 {
                Some(s2cfg) => {
                    let ipa = leaf.output;
                    let leaf2 =
                        walk(memory, s2cfg, ipa, write, FaultClass::Input, &mut Ok, None).map_err(stage2_fault)?;
                    (leaf2.output, leaf.size.min(leaf2.size), leaf.writable && leaf2.writable, None)
                }
                None => (leaf.output, leaf.size, leaf.writable, leaf.block_descriptor),
            }
        } else {
            let s2cfg = s2.expect("stage-2-only STE");
            let leaf = walk(memory, &s2cfg, iova, write, FaultClass::Input, &mut Ok, cache).map_err(stage2_fault)?;
            (leaf.output, leaf.size, leaf.writable, leaf.block_descriptor)
        };
        let input_base = iova & !(size - 1);
        let output_base = output - (iova - input_base);
        state.tlb.push(TlbEntry { vmid, asid, input_base, size, output_base, writable, block_descriptor });
        Ok(output)
    }

    /// Reads and validates the STE of `sid`, with QEMU's checks.
    fn fetch_ste(&self, state: &State, sid: u32) -> Result<Ste, Outcome> {
        let memory = self.view();
        let id = self.id();
        let cfg = StrtabBaseCfg::decode(state.strtab_base_cfg);
        let log2size = cfg.log2size.min(id.sid_bits());
        if sid >> log2size != 0 {
            return Err(Outcome::Fault {
                fault: Fault::new(EventType::BadStreamId, false, FaultClass::ContextDescriptor, 0),
                record_allowed: state.cr2 & cr2::RECINVSID != 0,
            });
        }
        let base = state.strtab_base & hwio::bits::addr_mask(6, 51);
        let ste_addr = match cfg.format {
            StreamTableFormat::Linear => (base & !hwio::bits::low_mask(log2size + 6)) + sid as u64 * 64,
            StreamTableFormat::TwoLevel => {
                // Like QEMU, the L1 base is aligned down to the L1 table size.
                let l1_size_log2 = (log2size.saturating_sub(cfg.split) + 3).max(6);
                let l1_addr = (base & !hwio::bits::low_mask(l1_size_log2)) + (sid >> cfg.split) as u64 * 8;
                let Some(word) = memory.read_u64(l1_addr) else {
                    return Err(fetch_fault(EventType::SteFetch, l1_addr));
                };
                let desc = L1Descriptor { words: [word] };
                if desc.span() == 0 {
                    return Err(config_fault(EventType::BadStreamId));
                }
                let l2_index = sid as u64 & hwio::bits::low_mask(cfg.split);
                if l2_index >> (desc.span() - 1) != 0 {
                    return Err(config_fault(EventType::BadSte));
                }
                desc.l2_ptr() + l2_index * 64
            }
        };
        let mut ste = Ste::default();
        for (i, word) in ste.words.iter_mut().enumerate() {
            *word = memory.read_u64(ste_addr + 8 * i as u64).ok_or(fetch_fault(EventType::SteFetch, ste_addr))?;
        }
        // A valid STE with a RES0 field set is ILLEGAL (spec 5.2), like a reserved Config.
        let stream = match ste.config() {
            Some(config) if ste.valid() && ste.reserved_bits_set().is_none() => config,
            _ => return Err(config_fault(EventType::BadSte)),
        };
        if matches!(stream, StreamConfig::Abort | StreamConfig::Bypass) {
            return Ok(ste);
        }
        if (stream.stage1() && !id.stage1()) || (stream.stage2() && !id.stage2()) {
            return Err(config_fault(EventType::BadSte));
        }
        if stream.stage2() {
            assert!(ste.s2_aa64(), "QEMU 10.0.2 aborts on a stage-2 STE with S2AA64 = 0");
            if !stage2_fields_valid(&ste, &id) {
                return Err(config_fault(EventType::BadSte));
            }
        }
        // QEMU: no substreams, no stall model; S1STALLD is only legal where stalls exist.
        if stream.stage1() && (!self.substreams_valid(&ste, stream) || (ste.s1_stall_disable() && id.stall_unsupported())) {
            return Err(config_fault(EventType::BadSte));
        }
        Ok(ste)
    }

    /// Reads and validates the CD (SubstreamID 0) a stage-1 STE points to, with QEMU's checks.
    fn fetch_cd(&self, ste: &Ste, stream: StreamConfig) -> Result<ContextDescriptor, Outcome> {
        let id = self.id();
        let memory = self.view();
        let mut cd_addr = ste.s1_context_ptr();
        if stream.stage2() {
            // Nested: the CD pointer is an IPA; a stage-2 fault here has CLASS = CD.
            let s2 = stage2_walk_config(ste);
            cd_addr = walk(memory, &s2, cd_addr, false, FaultClass::ContextDescriptor, &mut Ok, None)
                .map_err(|fault| Outcome::Fault { fault, record_allowed: !fault.kind.is_translation_class() || ste.s2_record() })?
                .output;
        }
        let mut cd = ContextDescriptor::default();
        for (i, word) in cd.words.iter_mut().enumerate() {
            *word = memory.read_u64(cd_addr + 8 * i as u64).ok_or(fetch_fault(EventType::CdFetch, cd_addr))?;
        }
        assert!(cd.ips() <= 5 || !cd.valid(), "QEMU 10.0.2 aborts on a CD with IPS = 6 (52-bit)");
        if !cd_valid(&cd, &id) {
            return Err(config_fault(EventType::BadCd));
        }
        Ok(cd)
    }

    /// Appends `record` to the event queue; false if it could not be written.
    fn record_event(&self, state: &mut State, record: EventRecord) -> bool {
        const OVFLG: u32 = 1 << 31;
        if state.cr0 & cr0::EVENTQEN == 0 {
            return false;
        }
        let log2 = queue_base_log2size(state.eventq_base).min(self.id().eventq_log2_max());
        let prod = QueuePointer::from_register(log2, state.eventq_prod);
        let cons = QueuePointer::from_register(log2, state.eventq_cons);
        if prod.is_full_with(cons) {
            // Spec 7.4: a full queue drops the event and flags the overflow, once per
            // acknowledgement (OVFLG differs from OVACKFLG until software copies it).
            if (state.eventq_prod ^ state.eventq_cons) & OVFLG == 0 {
                state.eventq_prod ^= OVFLG;
            }
            state.lost_events += 1;
            return false;
        }
        let addr = queue_base_addr(state.eventq_base) + prod.index() as u64 * EventRecord::SIZE as u64;
        for (i, word) in record.words.iter().enumerate() {
            if !self.memory.write_u64(addr + 8 * i as u64, *word) {
                raise_gerror(state, GlobalErrors::EVENTQ_ABT_ERR);
                return false;
            }
        }
        state.eventq_prod = (state.eventq_prod & OVFLG) | prod.next().register_value();
        true
    }

    /// Runs queued commands, at most `budget` of them.
    fn consume_commands(&self, state: &mut State, budget: Option<u32>) {
        if state.cr0 & cr0::CMDQEN == 0 {
            return;
        }
        let log2 = queue_base_log2size(state.cmdq_base).min(self.id().cmdq_log2_max());
        let mut done = 0;
        loop {
            let prod = QueuePointer::from_register(log2, state.cmdq_prod);
            let cons = QueuePointer::from_register(log2, state.cmdq_cons);
            let stopped = GlobalErrors::active(state.gerror, state.gerrorn).contains(GlobalErrors::CMDQ_ERR);
            if prod.is_empty_with(cons) || stopped || budget.is_some_and(|b| done >= b) {
                return;
            }
            let addr = queue_base_addr(state.cmdq_base) + cons.index() as u64 * Command::SIZE as u64;
            let view = self.view();
            let fetched = view.read_u64(addr).zip(view.read_u64(addr + 8));
            if self.config.cds_outlive_ste_invalidation {
                self.check_cached_cds(state);
            }
            if self.config.break_before_make_checked {
                self.check_cached_blocks(state);
            }
            let result = match fetched {
                Some((w0, w1)) => self.execute(state, Command { words: [w0, w1] }),
                None => Err(CommandErrorCode::Abort),
            };
            match result {
                Ok(()) => {
                    state.cmdq_cons = cons.next().register_value();
                    done += 1;
                }
                Err(code) => {
                    // Spec 7.1: CONS stays on the failed command, ERR says why, GERROR toggles.
                    state.cmdq_cons = cons.register_value() | code.encoding() << 24;
                    raise_gerror(state, GlobalErrors::CMDQ_ERR);
                    return;
                }
            }
        }
    }

    /// `cds_outlive_ste_invalidation`: records every stream whose STE in memory is live at
    /// stage 1 alone while the CD cached for it differs from the one in memory (a nested CD
    /// pointer is an IPA, not checked here): the SMMU could walk with the stale one now.
    fn check_cached_cds(&self, state: &mut State) {
        let memory = self.view();
        let mut stale = Vec::new();
        for (&sid, cached) in &state.cds {
            let Ok(ste) = self.fetch_ste(state, sid) else { continue };
            if ste.config() != Some(StreamConfig::Stage1) || !ste.is_live() {
                continue;
            }
            let cd_addr = ste.s1_context_ptr();
            let current = (0..cached.words.len()).map(|i| memory.read_u64(cd_addr + 8 * i as u64));
            if current.zip(cached.words.iter()).any(|(word, &cached)| word != Some(cached)) {
                stale.push(sid);
            }
        }
        for sid in stale {
            if !state.stale_cd_streams.contains(&sid) {
                state.stale_cd_streams.push(sid);
            }
        }
    }

    /// `break_before_make_checked`: records every cached block whose descriptor in memory is
    /// now a table descriptor (bits 1:0 = 0b11 above level 3).
    fn check_cached_blocks(&self, state: &mut State) {
        let memory = self.view();
        let split: Vec<u64> = state
            .tlb
            .iter()
            .filter(|entry| entry.block_descriptor.is_some_and(|at| memory.read_u64(at).is_some_and(|desc| desc & 3 == 3)))
            .map(|entry| entry.input_base)
            .collect();
        for base in split {
            if !state.blocks_split_while_cached.contains(&base) {
                state.blocks_split_while_cached.push(base);
            }
        }
    }

    /// `break_before_make_checked`: the input addresses of cached blocks seen split.
    pub fn blocks_split_while_cached(&self) -> Vec<u64> {
        self.state.borrow().blocks_split_while_cached.clone()
    }

    /// `cds_outlive_ste_invalidation`: the streams seen live over a stale cached CD.
    pub fn stale_cd_streams(&self) -> Vec<u32> {
        self.state.borrow().stale_cd_streams.clone()
    }

    fn execute(&self, state: &mut State, cmd: Command) -> Result<(), CommandErrorCode> {
        let id = self.id();
        let s1 = id.stage1();
        let s2 = id.stage2();
        // With IDR0.S2P = 0 the VMID fields are ignored (QEMU: VMID -1 = any).
        let vmid_matches = |vmid: u16| !s2 || vmid == cmd.vmid() as u16;
        // TLBI by address: one address, or with TG != 0 (IDR3.RIL) the range of
        // (NUM + 1) << SCALE granules from it (spec 4.4.1.1).
        let range_tg = cmd.tg();
        let overlaps = |base: u64, size: u64, addr: u64| {
            let granules = (cmd.num() + 1) << cmd.scale();
            let length = match range_tg {
                0 => 1,
                tg => granules << (10 + 2 * tg),
            };
            addr < base + size && base < addr.saturating_add(length)
        };
        let contains = |e: &TlbEntry, addr: u64| overlaps(e.input_base, e.size, addr);
        // Non-leaf walk-cache entries an address invalidation reaches: none with Leaf = 1
        // (spec 4.4.1: only last-level entries are invalidated), else those on the address's path.
        let walk_reached = |e: &WalkEntry, addr: u64| !cmd.leaf() && overlaps(e.input_base, e.size, addr);
        let asid = cmd.asid() as u16;
        match cmd.op() {
            opcode::SYNC => {
                if cmd.sync_cs() == SyncSignal::Irq as u64 {
                    state.sync_interrupts += 1;
                }
            }
            opcode::PREFETCH_CONFIG | opcode::PREFETCH_ADDR => {}
            // The STE and the CDs cached through it (QEMU drops them together as well).
            opcode::CFGI_STE => {
                if cmd.ssec() {
                    return Err(CommandErrorCode::Illegal);
                }
                state.stes.remove(&(cmd.stream_id() as u32));
                if !self.config.cds_outlive_ste_invalidation {
                    state.cds.remove(&(cmd.stream_id() as u32));
                    state.substream_cds.retain(|&(sid, _), _| sid != cmd.stream_id() as u32);
                }
            }
            // CDs only: the STE that points to them stays cached (spec 4.3.4, 4.3.5).
            opcode::CFGI_CD | opcode::CFGI_CD_ALL => {
                if cmd.ssec() {
                    return Err(CommandErrorCode::Illegal);
                }
                state.cds.remove(&(cmd.stream_id() as u32));
                let (sid, ssid) = (cmd.stream_id() as u32, cmd.substream_id() as u32);
                let all = cmd.op() == opcode::CFGI_CD_ALL;
                state.substream_cds.retain(|key, _| key.0 != sid || !(all || key.1 == ssid));
            }
            opcode::CFGI_STE_RANGE => {
                if cmd.ssec() {
                    return Err(CommandErrorCode::Illegal);
                }
                let mask = hwio::bits::low_mask(cmd.range() as u32 + 1);
                let first = cmd.stream_id() & !mask;
                let outside = |sid: &u32| (*sid as u64) < first || (*sid as u64) > first + mask;
                state.stes.retain(|sid, _| outside(sid));
                state.cds.retain(|sid, _| outside(sid));
                state.substream_cds.retain(|(sid, _), _| outside(sid));
            }
            opcode::TLBI_NH_ALL if s1 => {
                state.tlb.retain(|e| !(e.asid.is_some() && vmid_matches(e.vmid)));
                state.walk_cache.retain(|e| !(e.asid.is_some() && vmid_matches(e.vmid)));
            }
            opcode::TLBI_NH_ASID if s1 => {
                state.tlb.retain(|e| !(e.asid == Some(asid) && vmid_matches(e.vmid)));
                state.walk_cache.retain(|e| !(e.asid == Some(asid) && vmid_matches(e.vmid)));
            }
            opcode::TLBI_NH_VA if s1 => {
                state.tlb.retain(|e| !(e.asid == Some(asid) && vmid_matches(e.vmid) && contains(e, cmd.va())));
                state.walk_cache.retain(|e| !(e.asid == Some(asid) && vmid_matches(e.vmid) && walk_reached(e, cmd.va())));
            }
            opcode::TLBI_NH_VAA if s1 => {
                state.tlb.retain(|e| !(e.asid.is_some() && vmid_matches(e.vmid) && contains(e, cmd.va())));
                state.walk_cache.retain(|e| !(e.asid.is_some() && vmid_matches(e.vmid) && walk_reached(e, cmd.va())));
            }
            opcode::TLBI_S12_VMALL if s2 => {
                state.tlb.retain(|e| !vmid_matches(e.vmid));
                state.walk_cache.retain(|e| !vmid_matches(e.vmid));
            }
            // Only stage-2-only entries: combined entries of nested streams stay (spec 4.4.8).
            opcode::TLBI_S2_IPA if s2 => {
                state.tlb.retain(|e| !(e.asid.is_none() && vmid_matches(e.vmid) && contains(e, cmd.ipa())));
                state.walk_cache.retain(|e| !(e.asid.is_none() && vmid_matches(e.vmid) && walk_reached(e, cmd.ipa())));
            }
            opcode::TLBI_NSNH_ALL => {
                state.tlb.clear();
                state.walk_cache.clear();
            }
            opcode::PRI_RESP if id.pri() => {
                state.recoverable.execute(&cmd);
            }
            opcode::RESUME if !id.stall_unsupported() => {
                state.recoverable.execute(&cmd);
            }
            _ => return Err(CommandErrorCode::Illegal),
        }
        state.executed.push(cmd);
        Ok(())
    }
}

enum Outcome {
    /// Aborted without an event (Config = abort).
    SilentAbort,
    /// Aborted with `fault`; `record_allowed` is false for translation-class faults whose stage
    /// has R/S2R clear.
    Fault { fault: Fault, record_allowed: bool },
}

fn config_fault(kind: EventType) -> Outcome {
    Outcome::Fault { fault: Fault::new(kind, false, FaultClass::ContextDescriptor, 0), record_allowed: true }
}

fn fetch_fault(kind: EventType, addr: u64) -> Outcome {
    let mut fault = Fault::new(kind, false, FaultClass::ContextDescriptor, 0);
    fault.fetch_addr = addr;
    Outcome::Fault { fault, record_allowed: true }
}

fn raise_gerror(state: &mut State, bit: u32) {
    // Only a non-active error toggles; an active one stays as it is until acknowledged.
    if !GlobalErrors::active(state.gerror, state.gerrorn).contains(bit) {
        state.gerror ^= bit;
    }
}

/// QEMU's STE stage-2 checks (decode_ste_s2_cfg) plus HTTU/stall absence.
fn stage2_fields_valid(ste: &Ste, id: &IdRegisters) -> bool {
    let Some(granule) = ste.s2_granule() else { return false };
    let Some(level) = Stage2Config::start_level_from_sl0(granule, ste.s2sl0()) else { return false };
    let oas = id.oas_bits();
    let ps = address_size_bits(ste.s2ps()).unwrap_or(oas).min(oas);
    let t0sz = ste.s2t0sz() as u32;
    let min_t0sz = if granule.shift() == 16 { 64 - oas } else { (64 - oas).max(16) };
    let g = granule.shift();
    let level_shift = g + (3 - level as u32) * (g - 3);
    let ipa_bits = 64 - t0sz;
    !(t0sz > 39
        || t0sz < min_t0sz
        || ipa_bits <= level_shift
        || ipa_bits - level_shift > g - 3 + 4
        || ste.s2ttb() >> ps != 0
        || ste.s2_endi()
        || ste.s2_stall()
        || ste.s2_ha()
        || ste.s2_hd())
}

/// QEMU's CD checks (decode_cd), and the RES0 bits a strict SMMU finds ILLEGAL (C_BAD_CD).
fn cd_valid(cd: &ContextDescriptor, id: &IdRegisters) -> bool {
    // CD.S = 1 is ILLEGAL where stalls are not supported (STALL_MODEL = 0b01).
    let stall_ok = !cd.stall() || !id.stall_unsupported();
    if cd.reserved_bits_set().is_some() {
        return false;
    }
    let ips = address_size_bits(cd.ips()).unwrap_or(0).min(id.oas_bits());
    let tt0_ok = cd.epd0() || ((16..=39).contains(&cd.t0sz()) && cd.granule0().is_some() && cd.ttb0() >> ips == 0);
    let tt1_ok = cd.epd1() || (16..=39).contains(&cd.t1sz());
    // HA/HD only where IDR0.HTTU offers them (QEMU has no HTTU and rejects both).
    let httu_ok = match id.httu() {
        Httu::AccessFlagAndDirty => !cd.hd() || cd.ha(),
        Httu::AccessFlag => !cd.hd(),
        _ => !cd.ha() && !cd.hd(),
    };
    cd.valid() && cd.aa64() && cd.abort_faults() && stall_ok && httu_ok && !cd.endi() && tt0_ok && tt1_ok
}

fn stage1_walk_config(cd: &ContextDescriptor) -> WalkConfig {
    let granule_shift = cd.granule0().expect("validated").shift();
    let input_bits = 64 - cd.t0sz() as u32;
    WalkConfig {
        stage: Stage::One,
        root: cd.ttb0(),
        granule_shift,
        input_bits,
        start_level: WalkConfig::stage1_start_level(input_bits, granule_shift),
        output_bits: address_size_bits(cd.ips()).unwrap_or(48).min(48),
        affd: cd.affd(),
        hardware_dirty: cd.ha() && cd.hd(),
    }
}

fn stage2_walk_config(ste: &Ste) -> WalkConfig {
    let granule = ste.s2_granule().expect("validated");
    WalkConfig {
        stage: Stage::Two,
        root: ste.s2ttb(),
        granule_shift: granule.shift(),
        input_bits: 64 - ste.s2t0sz() as u32,
        start_level: Stage2Config::start_level_from_sl0(granule, ste.s2sl0()).expect("validated") as u32,
        output_bits: address_size_bits(ste.s2ps()).unwrap_or(48).min(48),
        affd: ste.s2_affd(),
        hardware_dirty: false,
    }
}

impl Registers for SmmuModel {
    fn read32(&self, offset: usize) -> u32 {
        let mut s = self.state.borrow_mut();
        // QEMU aliases page 1 onto page 0 (a CONSTRAINED UNPREDICTABLE choice the spec allows).
        match offset & !offset::PAGE1 {
            o @ offset::IDR0..=offset::IDR5 => self.config.idr[(o - offset::IDR0) / 4],
            offset::IIDR => 0,
            offset::AIDR => 0x1,
            offset::CR0 => s.cr0,
            offset::CR0ACK => s.cr0ack,
            offset::CR1 => s.cr1,
            offset::CR2 => s.cr2,
            offset::STATUSR => 0,
            offset::GBPA => s.gbpa,
            offset::IRQ_CTRL | offset::IRQ_CTRLACK => s.irq_ctrl,
            offset::GERROR => s.gerror,
            offset::GERRORN => s.gerrorn,
            offset::STRTAB_BASE_CFG => s.strtab_base_cfg,
            offset::CMDQ_PROD => s.cmdq_prod,
            offset::CMDQ_CONS => {
                if let CommandConsumption::PerConsRead(n) = self.commands.get() {
                    self.consume_commands(&mut s, Some(n));
                }
                s.cmdq_cons
            }
            0xA8 => s.eventq_prod,
            0xAC => s.eventq_cons,
            0xC8 => s.recoverable.priq_prod,
            0xCC => s.recoverable.priq_cons,
            other => panic!("model: unexpected 32-bit read at {other:#x}"),
        }
    }

    fn write32(&self, offset: usize, value: u32) {
        let mut s = self.state.borrow_mut();
        let run_now = self.commands.get() == CommandConsumption::OnProdWrite;
        match offset & !offset::PAGE1 {
            offset::CR0 => {
                s.cr0 = value;
                if self.config.acknowledge_cr0 {
                    s.cr0ack = value;
                }
                if run_now {
                    self.consume_commands(&mut s, None);
                }
            }
            offset::CR1 => s.cr1 = value,
            offset::CR2 => s.cr2 = value,
            offset::GBPA => {
                // Writes without UPDATE are ignored (SMMUv3.2+); the update completes at once.
                if value & gbpa::UPDATE != 0 {
                    s.gbpa = value & !gbpa::UPDATE;
                }
            }
            offset::IRQ_CTRL => s.irq_ctrl = value,
            offset::GERRORN => {
                s.gerrorn = value;
                // Acknowledging CMDQ_ERR restarts the command queue.
                if run_now {
                    self.consume_commands(&mut s, None);
                }
            }
            offset::STRTAB_BASE_CFG => s.strtab_base_cfg = value,
            offset::CMDQ_PROD => {
                s.cmdq_prod = value;
                if run_now {
                    self.consume_commands(&mut s, None);
                }
            }
            offset::CMDQ_CONS => s.cmdq_cons = value,
            0xA8 => s.eventq_prod = value,
            0xAC => s.eventq_cons = value,
            0xC8 => s.recoverable.priq_prod = value,
            0xCC => s.recoverable.priq_cons = value,
            other => panic!("model: unexpected 32-bit write of {value:#x} at {other:#x}"),
        }
    }

    fn read64(&self, offset: usize) -> u64 {
        let s = self.state.borrow();
        match offset {
            offset::STRTAB_BASE => s.strtab_base,
            offset::CMDQ_BASE => s.cmdq_base,
            offset::EVENTQ_BASE => s.eventq_base,
            offset::PRIQ_BASE => s.recoverable.priq_base,
            other => panic!("model: 64-bit read at {other:#x} (QEMU returns 0 for 32-bit registers)"),
        }
    }

    fn write64(&self, offset: usize, value: u64) {
        let mut s = self.state.borrow_mut();
        match offset {
            offset::STRTAB_BASE => s.strtab_base = value,
            offset::CMDQ_BASE => s.cmdq_base = value,
            offset::EVENTQ_BASE => s.eventq_base = value,
            offset::PRIQ_BASE => s.recoverable.priq_base = value,
            other => panic!("model: 64-bit write at {other:#x}"),
        }
    }
}
