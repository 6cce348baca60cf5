//! The driver proper: one [`Smmu`] per SMMUv3 instance.
//!
//! # Bring-up (IHI 0070, 6.3.9 and appendix "SMMU initialization")
//! 1. Read IDR0..5 (32-bit reads) and refuse SMMUs without AArch64 tables or little-endian walks.
//! 2. Set GBPA.ABORT (so that traffic aborts instead of bypassing while SMMUEN = 0), then clear CR0
//!    and IRQ_CTRL, each waiting for its ACK register.
//! 3. Allocate the stream table: 2-level with SPLIT = 8 when IDR0.ST_LEVEL allows and SIDSIZE > 8,
//!    otherwise linear with every STE set to abort. Allocate the command and event queues
//!    (2^min(IDR1 max, cap) entries). Every base is aligned to its size.
//! 4. Program STRTAB_BASE(_CFG), queue bases and pointers, CR1 (write-back inner-shareable when
//!    IDR0.COHACC, else non-cacheable) and CR2 (RECINVSID | PTM).
//! 5. Enable the command queue, invalidate everything (CMD_CFGI_ALL, CMD_TLBI_NSNH_ALL, CMD_SYNC),
//!    enable the event queue, the GERROR and event queue interrupts, and finally SMMUEN.
//!
//! After bring-up every StreamID is denied: a linear table holds V=1/Config=abort STEs (traffic is
//! aborted without an event); a 2-level table starts with empty L1 descriptors, whose traffic is
//! aborted with a C_BAD_STREAMID event (useful for spotting unexpected DMA). QEMU virt wires the
//! SMMU's interrupts as edge SPIs (no MSI), so IRQ_CTRL is the only interrupt configuration needed;
//! the MSI configuration registers stay zero.
//!
//! # Updating a live STE
//! The SMMU may fetch an STE at any moment and reads it 64 bits at a time with no atomicity across
//! words, so a stream must never be seen with a mix of old and new words. The driver's rule:
//! * If the current STE is live (valid, not abort), first write only word 0 with Config = abort,
//!   then CMD_CFGI_STE + CMD_SYNC. From then on the SMMU ignores every other word.
//! * Write the CD (if any), then CMD_CFGI_CD + CMD_SYNC (the SMMU may still cache the stream's
//!   previous CD, perhaps from the same buffer: CMD_CFGI_STE need not drop CDs), then words
//!   1..7, then a store barrier, then word 0 (one 64-bit store), then CMD_CFGI_STE + CMD_SYNC.
//!
//! The price is a short window in which the stream's transactions are aborted while changing from
//! one live configuration to another: blocked, never translated wrongly. (Linux computes which
//! bits each configuration uses to skip the window where possible; we keep the simple, obviously
//! correct sequence.) Transitions to abort, and from abort/invalid to anything, have no window.
//!
//! # Commands
//! Submission writes 16-byte entries at CMDQ_PROD, handling the wrap bit, waiting (bounded by the
//! clock) for space when the queue is full. Every public operation ends with CMD_SYNC and polls
//! CMDQ_CONS until it passes the sync. If the SMMU raises GERROR.CMDQ_ERR, the driver reads
//! CMDQ_CONS.ERR, overwrites the offending entry with a CMD_SYNC, acknowledges GERRORN (which
//! restarts consumption, on QEMU too) and reports [`SmmuError::CommandRejected`].

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use hwio::bits::Layout;
use hwio::wait::poll_until;
use hwio::{Clock, DmaAllocator, DmaBuffer, Registers};

use crate::cd::ContextDescriptor;
use crate::cmd::{Command, SyncSignal};
use crate::config::{NestedStage1, Stage1Config, Stage2Config};
use crate::dma::{self, alloc_aligned, publish_to_device, read_word, write_word, write_words};
use crate::error::{SmmuError, WaitTarget};
use crate::event::{DecodedEvent, EventRecord};
use crate::ids::IdAllocator;
use crate::queue::QueuePointer;
use crate::regs::{
    address_size_encoding, cr0, cr1_value, cr2, gbpa, irq_ctrl, offset, queue_base_value, strtab_base_value,
    CommandErrorCode, GlobalErrors, Granule, IdRegisters, StreamTableFormat, StrtabBaseCfg, TableFormats,
    WalkAttributes,
};
use crate::ste::{L1Descriptor, Ste, StreamConfig, TranslationRegime};

mod page_requests;
mod substreams;

pub use page_requests::PriDrain;
pub use substreams::{CdL1Descriptor, CdTableLayout};

/// The two environment services every driver operation may need: DMA memory (tables, flushes) and
/// a clock (every wait on the hardware is bounded).
pub struct Env<'a> {
    pub dma: &'a mut dyn DmaAllocator,
    pub clock: &'a dyn Clock,
}

/// VMID with which stage-1-only STEs tag their TLB entries. With IDR0.S2P = 1 the SMMU (and QEMU
/// 10.0.2) keys even stage-1-only entries by STE.S2VMID, and stage-1 TLBI commands match the VMID
/// they carry, so this value must be used consistently in both.
pub const STAGE1_ONLY_VMID: u16 = 0;

/// StreamID bits resolved by one level-2 stream table (256 STEs, 16 KiB per table).
pub const STREAM_TABLE_SPLIT: u32 = 8;

/// Largest linear stream table the driver builds: 2^16 STEs = 4 MiB.
pub const LINEAR_STREAM_TABLE_MAX_LOG2: u32 = 16;

/// Largest level-1 table: 2^17 descriptors = 1 MiB, covering 25-bit StreamIDs with SPLIT = 8.
pub const L1_TABLE_MAX_LOG2: u32 = 17;

/// Above this many pages a range invalidation becomes one whole-ASID (or whole-VMID)
/// invalidation: 64 per-page commands already take a quarter of a 256-entry queue, and
/// refilling a few TLB entries costs less than queueing hundreds of commands.
pub const RANGE_INVALIDATION_PAGE_LIMIT: u64 = 64;

/// Driver tunables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmmuOptions {
    /// Bound for every wait on the hardware.
    pub timeout_ns: u64,
    /// The command queue gets 2^min(IDR1.CMDQS, this) entries.
    pub cmdq_log2_cap: u32,
    /// The event queue gets 2^min(IDR1.EVENTQS, this) entries.
    pub eventq_log2_cap: u32,
    /// Use a linear stream table even where a 2-level one is supported.
    pub force_linear_stream_table: bool,
    /// Whether the DMA allocator's `flush_for_device` writes CPU stores back to memory. An
    /// SMMU whose table walks and queue accesses do not snoop CPU caches (IDR0.COHACC = 0)
    /// reads only what was written back: without this it is refused (left aborting all
    /// traffic through GBPA) rather than assumed coherent.
    pub cache_maintenance: bool,
}

impl Default for SmmuOptions {
    /// 100 ms timeouts (QEMU completes everything synchronously; real SMMUs take microseconds),
    /// 256 commands (4 KiB) and 256 events (8 KiB), an allocator that writes caches back.
    fn default() -> SmmuOptions {
        SmmuOptions { timeout_ns: 100_000_000, cmdq_log2_cap: 8, eventq_log2_cap: 8, force_linear_stream_table: false, cache_maintenance: true }
    }
}

/// Which TLB entries an invalidation targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlbScope {
    /// A stage-1-only address space (tagged with [`STAGE1_ONLY_VMID`]).
    Stage1 { asid: u16 },
    /// A client's stage-1 address space nested over stage 2 `vmid`.
    NestedStage1 { vmid: u16, asid: u16 },
    /// A stage-2 address space; also drops combined stage-1+2 entries of nested streams.
    Stage2 { vmid: u16 },
}

/// Result of [`Smmu::drain_events`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventDrain {
    pub events: Vec<DecodedEvent>,
    /// The event queue overflowed since the previous drain (EVENTQ_PROD.OVFLG differed from
    /// EVENTQ_CONS.OVACKFLG): at least one event was lost. The hardware does not count them.
    pub overflowed: bool,
}

/// Result of [`Smmu::check_gerror`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GerrorReport {
    /// Errors that were active (and are now acknowledged, except SFM_ERR).
    pub active: GlobalErrors,
    /// The command dropped to clear an active CMDQ_ERR.
    pub rejected_command: Option<SmmuError>,
}

enum StreamTable {
    Linear { table: DmaBuffer, log2size: u32 },
    TwoLevel { l1: DmaBuffer, l2: Vec<Option<DmaBuffer>>, log2size: u32 },
}

struct CommandQueue {
    buf: DmaBuffer,
    prod: QueuePointer,
}

struct EventQueue {
    buf: DmaBuffer,
    log2_entries: u32,
}

/// One SMMUv3 instance.
pub struct Smmu<R: Registers> {
    regs: R,
    id: IdRegisters,
    walk: WalkAttributes,
    timeout_ns: u64,
    stream_table: StreamTable,
    cmdq: CommandQueue,
    eventq: EventQueue,
    /// The single CD of each stage-1 (non-nested) stream.
    contexts: BTreeMap<u32, DmaBuffer>,
    asids: IdAllocator,
    vmids: IdAllocator,
    overflow_count: u64,
    /// The PRI queue, once enabled.
    priq: Option<page_requests::PriQueue>,
    /// The CD tables of streams with substreams.
    cd_tables: BTreeMap<u32, substreams::CdTable>,
}

impl<R: Registers> Smmu<R> {
    /// Brings the SMMU up with every stream denied (see the module documentation for the
    /// sequence). On an error after the tables were handed to the hardware their memory is
    /// deliberately not freed: the SMMU may still read it.
    pub fn init(regs: R, env: &mut Env<'_>, options: SmmuOptions) -> Result<Smmu<R>, SmmuError> {
        let mut idr = [0u32; 6];
        for (i, value) in idr.iter_mut().enumerate() {
            *value = regs.read32(offset::IDR0 + 4 * i);
        }
        let id = IdRegisters { idr };
        if !matches!(id.table_formats(), TableFormats::AArch64Only | TableFormats::Both) {
            return Err(SmmuError::Unsupported("AArch64 translation tables (IDR0.TTF)"));
        }
        if !id.little_endian_tables() {
            return Err(SmmuError::Unsupported("little-endian tables (IDR0.TTENDIAN)"));
        }
        if !id.stage1() && !id.stage2() {
            return Err(SmmuError::Unsupported("any translation stage"));
        }
        if id.tables_preset() || id.queues_preset() {
            return Err(SmmuError::Unsupported("preset stream table or queue bases (IDR1)"));
        }

        // Quiesce first, with GBPA making the disabled SMMU abort rather than bypass.
        let quiesce = QuiescedRegs { regs: &regs, timeout_ns: options.timeout_ns };
        quiesce.set_gbpa_abort(env.clock)?;
        quiesce.write_acked(env.clock, offset::CR0, offset::CR0ACK, 0, WaitTarget::Cr0Ack)?;
        quiesce.write_acked(env.clock, offset::IRQ_CTRL, offset::IRQ_CTRLACK, 0, WaitTarget::IrqCtrlAck)?;
        // Quiesced, everything aborts: a unit whose walks would read stale tables stays so.
        if !id.coherent() && !options.cache_maintenance {
            return Err(SmmuError::Unsupported("IO-coherent walks (IDR0.COHACC) or cache maintenance for a non-coherent SMMU"));
        }

        let walk = WalkAttributes::for_coherency(id.coherent());
        let stream_table = build_stream_table(env.dma, &id, &options)?;
        let cmdq_log2 = id.cmdq_log2_max().min(options.cmdq_log2_cap);
        let eventq_log2 = id.eventq_log2_max().min(options.eventq_log2_cap);
        let cmdq_buf = match alloc_aligned(env.dma, Command::SIZE << cmdq_log2) {
            Ok(buf) => buf,
            Err(e) => {
                release_stream_table(env.dma, stream_table);
                return Err(e);
            }
        };
        let eventq_buf = match alloc_aligned(env.dma, EventRecord::SIZE << eventq_log2) {
            Ok(buf) => buf,
            Err(e) => {
                release_stream_table(env.dma, stream_table);
                env.dma.free(cmdq_buf);
                return Err(e);
            }
        };

        let mut smmu = Smmu {
            regs,
            id,
            walk,
            timeout_ns: options.timeout_ns,
            stream_table,
            cmdq: CommandQueue { buf: cmdq_buf, prod: QueuePointer::new(cmdq_log2) },
            eventq: EventQueue { buf: eventq_buf, log2_entries: eventq_log2 },
            contexts: BTreeMap::new(),
            asids: IdAllocator::new(id.asid_bits()),
            vmids: IdAllocator::new(id.vmid_bits()),
            overflow_count: 0,
            priq: None,
            cd_tables: BTreeMap::new(),
        };
        smmu.program_and_enable(env)?;
        Ok(smmu)
    }

    fn program_and_enable(&mut self, env: &mut Env<'_>) -> Result<(), SmmuError> {
        let (table_phys, cfg) = match &self.stream_table {
            StreamTable::Linear { table, log2size } => {
                (table.phys, StrtabBaseCfg { format: StreamTableFormat::Linear, log2size: *log2size, split: 0 })
            }
            StreamTable::TwoLevel { l1, log2size, .. } => (
                l1.phys,
                StrtabBaseCfg { format: StreamTableFormat::TwoLevel, log2size: *log2size, split: STREAM_TABLE_SPLIT },
            ),
        };
        self.regs.write64(offset::STRTAB_BASE, strtab_base_value(table_phys));
        self.regs.write32(offset::STRTAB_BASE_CFG, cfg.encode());
        self.regs.write64(offset::CMDQ_BASE, queue_base_value(self.cmdq.buf.phys, self.cmdq_log2()));
        self.regs.write32(offset::CMDQ_PROD, 0);
        self.regs.write32(offset::CMDQ_CONS, 0);
        self.regs.write64(offset::EVENTQ_BASE, queue_base_value(self.eventq.buf.phys, self.eventq.log2_entries));
        self.regs.write32(offset::EVENTQ_PROD, 0);
        self.regs.write32(offset::EVENTQ_CONS, 0);
        self.regs.write32(offset::CR1, cr1_value(self.walk, self.walk));
        self.regs.write32(offset::CR2, cr2::RECINVSID | cr2::PTM);

        // A global error left active by firmware (CMDQ_ERR in particular) would stall the queue.
        let gerror = self.regs.read32(offset::GERROR);
        self.regs.write32(offset::GERRORN, gerror);

        self.write_cr0(env.clock, cr0::CMDQEN)?;
        self.execute(env, &[Command::cfgi_all(), Command::tlbi_nsnh_all()])?;
        self.write_cr0(env.clock, cr0::CMDQEN | cr0::EVENTQEN)?;
        self.write_irq_ctrl(env.clock, irq_ctrl::GERROR_IRQEN | irq_ctrl::EVENTQ_IRQEN)?;
        self.write_cr0(env.clock, cr0::CMDQEN | cr0::EVENTQEN | cr0::SMMUEN)
    }

    /// Disables translation (all traffic then aborts through GBPA.ABORT), frees every table,
    /// queue and CD, and hands the register block back. If the SMMU does not acknowledge the
    /// disable, the memory is not freed (it may still be in use) and the error is returned.
    pub fn shutdown(mut self, env: &mut Env<'_>) -> Result<R, SmmuError> {
        self.write_cr0(env.clock, 0)?;
        self.write_irq_ctrl(env.clock, 0)?;
        for (_, cd) in core::mem::take(&mut self.contexts) {
            env.dma.free(cd);
        }
        env.dma.free(self.cmdq.buf);
        env.dma.free(self.eventq.buf);
        if let Some(priq) = self.priq.take() {
            env.dma.free(priq.buf);
        }
        for (_, table) in core::mem::take(&mut self.cd_tables) {
            substreams::release(env.dma, table);
        }
        release_stream_table(env.dma, self.stream_table);
        Ok(self.regs)
    }

    /// The register block (the software model exposes its DMA-side interface through this).
    pub fn registers(&self) -> &R {
        &self.regs
    }

    pub fn id_registers(&self) -> &IdRegisters {
        &self.id
    }

    pub fn stream_table_format(&self) -> StreamTableFormat {
        match self.stream_table {
            StreamTable::Linear { .. } => StreamTableFormat::Linear,
            StreamTable::TwoLevel { .. } => StreamTableFormat::TwoLevel,
        }
    }

    /// Number of StreamIDs the stream table covers.
    pub fn stream_id_limit(&self) -> u32 {
        1 << self.stream_table_log2()
    }

    /// Number of entries of the command queue.
    pub fn command_queue_entries(&self) -> u32 {
        1 << self.cmdq_log2()
    }

    /// How many event queue overflows `drain_events` has seen in total.
    pub fn event_overflow_count(&self) -> u64 {
        self.overflow_count
    }

    /// The STE currently installed for `sid`, `None` when its level-2 table does not exist yet.
    pub fn ste(&self, sid: u32) -> Option<Ste> {
        let (buf, off) = self.existing_ste_slot(sid)?;
        let mut ste = Ste::default();
        for (i, word) in ste.words.iter_mut().enumerate() {
            *word = read_word(&buf, off + 8 * i);
        }
        Some(ste)
    }

    // ----- stream configuration -------------------------------------------------------------

    /// Denies all traffic of `sid` (V=1, Config=abort; no events).
    pub fn set_abort(&mut self, env: &mut Env<'_>, sid: u32) -> Result<(), SmmuError> {
        self.install_ste(env, sid, Ste::abort(), None)
    }

    /// Lets `sid` through untranslated.
    pub fn set_bypass(&mut self, env: &mut Env<'_>, sid: u32) -> Result<(), SmmuError> {
        self.install_ste(env, sid, Ste::bypass(), None)
    }

    /// Translates `sid` through the stage-1 tables of `cfg` (one CD, allocated by the driver).
    pub fn attach_stage1(&mut self, env: &mut Env<'_>, sid: u32, cfg: &Stage1Config) -> Result<(), SmmuError> {
        cfg.validate(&self.id)?;
        let cd = ContextDescriptor::for_stage1(cfg, cfg.effective_output_bits(&self.id), self.walk);
        let mut ste = self.stage1_ste_base(StreamConfig::Stage1);
        ste.set_s2vmid(STAGE1_ONLY_VMID as u64);
        self.install_ste(env, sid, ste, Some(cd))
    }

    /// Translates `sid` through the stage-2 tables of `cfg`.
    pub fn attach_stage2(&mut self, env: &mut Env<'_>, sid: u32, cfg: &Stage2Config) -> Result<(), SmmuError> {
        cfg.validate(&self.id)?;
        let mut ste = Ste::default();
        ste.set_valid(true).set_config(StreamConfig::Stage2);
        self.apply_stage2(&mut ste, cfg);
        self.install_ste(env, sid, ste, None)
    }

    /// Translates `sid` through the client's stage-1 (CD at an IPA) nested over stage 2 `s2`. The
    /// SMMU translates the CD address and the stage-1 table addresses through stage 2.
    pub fn attach_nested(
        &mut self,
        env: &mut Env<'_>,
        sid: u32,
        s1: &NestedStage1,
        s2: &Stage2Config,
    ) -> Result<(), SmmuError> {
        s2.validate(&self.id)?;
        s1.validate(&self.id, s2)?;
        let mut ste = self.stage1_ste_base(StreamConfig::Nested);
        ste.set_s1_context_ptr(s1.cd_ipa);
        self.apply_stage2(&mut ste, s2);
        self.install_ste(env, sid, ste, None)
    }

    fn stage1_ste_base(&self, config: StreamConfig) -> Ste {
        let mut ste = Ste::default();
        ste.set_valid(true)
            .set_config(config)
            .set_s1_fmt(0)
            .set_s1_cd_max(0)
            .set_s1_cir(self.walk.inner as u64)
            .set_s1_cor(self.walk.outer as u64)
            .set_s1_csh(self.walk.shareability as u64)
            .set_strw(TranslationRegime::NonSecureEl1 as u64);
        ste
    }

    fn apply_stage2(&self, ste: &mut Ste, cfg: &Stage2Config) {
        let out = cfg.effective_output_bits(&self.id);
        ste.set_s2vmid(cfg.vmid as u64)
            .set_s2t0sz(cfg.t0sz as u64)
            .set_s2sl0(Stage2Config::sl0_encoding(cfg.granule, cfg.start_level).unwrap_or(0))
            .set_s2ir0(self.walk.inner as u64)
            .set_s2or0(self.walk.outer as u64)
            .set_s2sh0(self.walk.shareability as u64)
            .set_s2tg(cfg.granule.tg_encoding())
            .set_s2ps(address_size_encoding(out).unwrap_or(0))
            // QEMU aborts (assertion) on a stage-2 STE with S2AA64 = 0.
            .set_s2_aa64(true)
            .set_s2_endi(false)
            .set_s2_affd(false)
            .set_s2_ptw(false)
            .set_s2_record(cfg.record_faults)
            .set_s2ttb(cfg.vttbr);
    }

    /// Installs `new` (and its CD) for `sid` following the update protocol in the module docs.
    pub(crate) fn install_ste(
        &mut self,
        env: &mut Env<'_>,
        sid: u32,
        new: Ste,
        new_cd: Option<ContextDescriptor>,
    ) -> Result<(), SmmuError> {
        if new.reserved_bits_set().is_some() {
            return Err(SmmuError::InvalidConfig("STE with RES0 bits set"));
        }
        if new_cd.is_some_and(|cd| cd.reserved_bits_set().is_some()) {
            return Err(SmmuError::InvalidConfig("CD with RES0 bits set"));
        }
        let (table, off) = self.ste_slot(env, sid)?;
        let current_word0 = read_word(&table, off);
        let mut current = Ste::default();
        current.words[0] = current_word0;
        if current.is_live() {
            current.set_config(StreamConfig::Abort);
            write_words(&*env.dma, &table, off, &current.words[..1]);
            publish_to_device();
            self.execute(env, &[Command::cfgi_ste(sid, false)])?;
        }

        // The stream is now blocked or invalid: the SMMU looks at word 0 only and uses no CD.
        let old_cd = self.contexts.remove(&sid);
        let old_cd_table = self.cd_tables.remove(&sid);
        let mut ste = new;
        let mut unused_cd = old_cd;
        if let Some(cd) = new_cd {
            let buf = match unused_cd.take() {
                Some(buf) => buf,
                None => alloc_aligned(env.dma, ContextDescriptor::SIZE)?,
            };
            write_words(&*env.dma, &buf, 0, &cd.words);
            publish_to_device();
            self.contexts.insert(sid, buf);
            // The SMMU may still hold the stream's previous CD (CMD_CFGI_STE need not drop it,
            // spec 4.3.2), and the buffer may be the one it came from: forget it while the
            // stream is blocked, so the live STE can only meet the new one.
            self.execute(env, &[Command::cfgi_cd(sid, 0, false)])?;
            ste.set_s1_context_ptr(buf.phys);
        }
        write_words(&*env.dma, &table, off + 8, &ste.words[1..]);
        publish_to_device();
        write_words(&*env.dma, &table, off, &ste.words[..1]);
        publish_to_device();
        let result = self.execute(env, &[Command::cfgi_ste(sid, false)]);
        if let Some(buf) = unused_cd {
            // Only freed once the SMMU has been told to forget the STE that pointed at it.
            if result.is_ok() {
                env.dma.free(buf);
            }
        }
        if let Some(table) = old_cd_table {
            if result.is_ok() {
                substreams::release(env.dma, table);
            }
        }
        result
    }

    /// The buffer and byte offset of `sid`'s STE, creating its level-2 table if needed.
    fn ste_slot(&mut self, env: &mut Env<'_>, sid: u32) -> Result<(DmaBuffer, usize), SmmuError> {
        let limit = self.stream_id_limit();
        if sid >= limit {
            return Err(SmmuError::StreamIdOutOfRange { sid, limit });
        }
        if let Some(slot) = self.existing_ste_slot(sid) {
            return Ok(slot);
        }
        // 2-level table without a level-2 table for this span yet: build one full of abort STEs,
        // then publish it through the L1 descriptor (a single 64-bit store).
        let l2 = alloc_aligned(env.dma, Ste::SIZE << STREAM_TABLE_SPLIT)?;
        let abort = Ste::abort();
        for i in 0..(1usize << STREAM_TABLE_SPLIT) {
            write_word(&l2, i * Ste::SIZE, abort.words[0]);
        }
        dma::flush(&*env.dma, &l2, 0, Ste::SIZE << STREAM_TABLE_SPLIT);
        publish_to_device();
        let StreamTable::TwoLevel { l1, l2: tables, .. } = &mut self.stream_table else {
            unreachable!("linear stream tables have a slot for every StreamID below the limit");
        };
        let l1_index = (sid >> STREAM_TABLE_SPLIT) as usize;
        write_words(&*env.dma, l1, 8 * l1_index, &L1Descriptor::new(l2.phys, STREAM_TABLE_SPLIT).words);
        publish_to_device();
        tables[l1_index] = Some(l2);
        // An SMMU may cache the old (invalid) descriptor with the StreamIDs it covers.
        let first_sid = (l1_index as u32) << STREAM_TABLE_SPLIT;
        self.execute(env, &[Command::cfgi_ste_range(first_sid, STREAM_TABLE_SPLIT as u64 - 1)])?;
        Ok((l2, (sid as usize & ((1 << STREAM_TABLE_SPLIT) - 1)) * Ste::SIZE))
    }

    fn existing_ste_slot(&self, sid: u32) -> Option<(DmaBuffer, usize)> {
        if sid >= self.stream_id_limit() {
            return None;
        }
        match &self.stream_table {
            StreamTable::Linear { table, .. } => Some((*table, sid as usize * Ste::SIZE)),
            StreamTable::TwoLevel { l2, .. } => {
                let table = l2[(sid >> STREAM_TABLE_SPLIT) as usize]?;
                Some((table, (sid as usize & ((1 << STREAM_TABLE_SPLIT) - 1)) * Ste::SIZE))
            }
        }
    }

    fn stream_table_log2(&self) -> u32 {
        match self.stream_table {
            StreamTable::Linear { log2size, .. } | StreamTable::TwoLevel { log2size, .. } => log2size,
        }
    }

    // ----- invalidation ----------------------------------------------------------------------

    /// Invalidates the TLB entries of `scope` for `[iova, iova + size)`, mapped with `granule`
    /// pages, then CMD_SYNC. `leaf_only`: only last-level entries changed (intermediate walk
    /// caches may be kept). With range invalidation (IDR3.RIL) a few range commands cover any
    /// range; without it, one command per page up to [`RANGE_INVALIDATION_PAGE_LIMIT`] pages,
    /// and above that the whole ASID (stage 1) or VMID (stage 2).
    pub fn tlbi_range(
        &mut self,
        env: &mut Env<'_>,
        scope: TlbScope,
        iova: u64,
        size: u64,
        granule: Granule,
        leaf_only: bool,
    ) -> Result<(), SmmuError> {
        if size == 0 {
            return Ok(());
        }
        let first = iova & !(granule.size() - 1);
        let end = iova.saturating_add(size);
        let pages = (end - first).div_ceil(granule.size());
        let by_address = move |addr: u64| match scope {
            TlbScope::Stage1 { asid } => Command::tlbi_nh_va(STAGE1_ONLY_VMID, asid, addr, leaf_only),
            TlbScope::NestedStage1 { vmid, asid } => Command::tlbi_nh_va(vmid, asid, addr, leaf_only),
            TlbScope::Stage2 { vmid } => Command::tlbi_s2_ipa(vmid, addr, leaf_only),
        };
        // TLBI_S2_IPA leaves combined stage-1+2 entries (spec 4.4.8); nested streams of this
        // VMID may hold some for the changed IPAs.
        let combined = match scope {
            TlbScope::Stage2 { vmid } => Some(Command::tlbi_nh_all(vmid)),
            _ => None,
        };
        if self.id.range_invalidation() && pages <= MAX_RANGE_PAGES {
            let ranges = range_pieces(first, pages, granule.shift()).map(|piece| {
                let mut cmd = by_address(piece.address);
                cmd.set_tg(granule.tlbi_tg()).set_num(piece.num_minus_one).set_scale(piece.scale);
                cmd
            });
            return self.execute_all(env, ranges.chain(combined));
        }
        if pages > RANGE_INVALIDATION_PAGE_LIMIT {
            return self.execute(env, &[whole_scope_invalidation(scope)]);
        }
        let per_page = (0..pages).map(|page| by_address(first + page * granule.size()));
        self.execute_all(env, per_page.chain(combined))
    }

    /// Invalidates every entry of a stage-1-only ASID.
    pub fn tlbi_asid(&mut self, env: &mut Env<'_>, asid: u16) -> Result<(), SmmuError> {
        self.execute(env, &[whole_scope_invalidation(TlbScope::Stage1 { asid })])
    }

    /// Invalidates every stage-1, stage-2 and combined entry of a VMID.
    pub fn tlbi_vmid(&mut self, env: &mut Env<'_>, vmid: u16) -> Result<(), SmmuError> {
        self.execute(env, &[whole_scope_invalidation(TlbScope::Stage2 { vmid })])
    }

    /// Issues CMD_SYNC and waits for every earlier command to complete.
    pub fn sync(&mut self, env: &mut Env<'_>) -> Result<(), SmmuError> {
        self.execute(env, &[])
    }

    // ----- ids -------------------------------------------------------------------------------

    /// A free ASID for a stage-1 address space (never 0).
    pub fn alloc_asid(&mut self) -> Option<u16> {
        self.asids.alloc().map(|id| id as u16)
    }

    /// Invalidates the ASID's TLB entries and releases it, so a later owner starts clean.
    pub fn free_asid(&mut self, env: &mut Env<'_>, asid: u16) -> Result<bool, SmmuError> {
        if !self.asids.is_allocated(asid as u32) {
            return Ok(false);
        }
        self.tlbi_asid(env, asid)?;
        Ok(self.asids.free(asid as u32))
    }

    /// A free VMID for a stage-2 address space (never 0, see [`STAGE1_ONLY_VMID`]).
    pub fn alloc_vmid(&mut self) -> Option<u16> {
        self.vmids.alloc().map(|id| id as u16)
    }

    /// Invalidates the VMID's TLB entries and releases it.
    pub fn free_vmid(&mut self, env: &mut Env<'_>, vmid: u16) -> Result<bool, SmmuError> {
        if !self.vmids.is_allocated(vmid as u32) {
            return Ok(false);
        }
        self.tlbi_vmid(env, vmid)?;
        Ok(self.vmids.free(vmid as u32))
    }

    // ----- command queue ---------------------------------------------------------------------

    /// Submits `commands` followed by CMD_SYNC and waits for the sync to complete. If the SMMU
    /// rejects a command, that command is dropped (replaced by CMD_SYNC), the queue is restarted,
    /// the wait continues, and the first rejection is returned.
    pub fn execute(&mut self, env: &mut Env<'_>, commands: &[Command]) -> Result<(), SmmuError> {
        self.execute_all(env, commands.iter().copied())
    }

    /// [`Smmu::execute`] over commands made on the fly (no buffer for them).
    fn execute_all(&mut self, env: &mut Env<'_>, commands: impl Iterator<Item = Command>) -> Result<(), SmmuError> {
        let mut rejected = None;
        for cmd in commands.chain(core::iter::once(Command::sync(SyncSignal::None))) {
            self.push_command(env, &cmd, &mut rejected)?;
        }
        self.publish_prod();
        let clock = env.clock;
        poll_until(clock, self.timeout_ns, || {
            let cons_reg = self.regs.read32(offset::CMDQ_CONS);
            if self.command_error_active() {
                // Recovered, and waited for like any other progress: an SMMU that rejects
                // every command (one reading unflushed queue memory) must not hang the caller.
                let error = self.recover_command_error(env);
                rejected.get_or_insert(error);
                false
            } else {
                self.cmdq.prod.is_empty_with(QueuePointer::from_register(self.cmdq_log2(), cons_reg))
            }
        })
        .map_err(|_| SmmuError::Timeout(WaitTarget::CommandSync))?;
        rejected.map_or(Ok(()), Err)
    }

    // Inlined into each caller's command loop: left to itself the compiler stopped inlining it
    // once the register and DMA accesses went through `VolatileRegion`, and a whole-ASID
    // invalidation then cost 299 guest instructions instead of 282 (200 inlined).
    #[inline(always)]
    fn push_command(
        &mut self,
        env: &mut Env<'_>,
        cmd: &Command,
        rejected: &mut Option<SmmuError>,
    ) -> Result<(), SmmuError> {
        if self.command_queue_full() {
            self.wait_for_command_queue_space(env, rejected)?;
        }
        let off = self.cmdq.prod.index() as usize * Command::SIZE;
        write_words(&*env.dma, &self.cmdq.buf, off, &cmd.words);
        self.cmdq.prod = self.cmdq.prod.next();
        Ok(())
    }

    fn command_queue_full(&self) -> bool {
        let cons = QueuePointer::from_register(self.cmdq_log2(), self.regs.read32(offset::CMDQ_CONS));
        self.cmdq.prod.is_full_with(cons)
    }

    /// Lets the SMMU see what is queued so far, then waits for it to make room. Rare, and kept
    /// out of the command loops it would otherwise be inlined into.
    #[cold]
    #[inline(never)]
    fn wait_for_command_queue_space(&mut self, env: &mut Env<'_>, rejected: &mut Option<SmmuError>) -> Result<(), SmmuError> {
        self.publish_prod();
        let clock = env.clock;
        poll_until(clock, self.timeout_ns, || {
            if self.command_error_active() {
                let error = self.recover_command_error(env);
                rejected.get_or_insert(error);
            }
            !self.command_queue_full()
        })
        .map_err(|_| SmmuError::Timeout(WaitTarget::CommandQueueSpace))
    }

    fn publish_prod(&self) {
        publish_to_device();
        self.regs.write32(offset::CMDQ_PROD, self.cmdq.prod.register_value());
    }

    fn command_error_active(&self) -> bool {
        GlobalErrors::active(self.regs.read32(offset::GERROR), self.regs.read32(offset::GERRORN))
            .contains(GlobalErrors::CMDQ_ERR)
    }

    /// Spec 7.1: the SMMU stopped at the entry CMDQ_CONS points to. Replace it by a harmless
    /// CMD_SYNC, then acknowledge CMDQ_ERR in GERRORN so consumption resumes from that entry.
    fn recover_command_error(&mut self, env: &mut Env<'_>) -> SmmuError {
        let cons_reg = self.regs.read32(offset::CMDQ_CONS);
        let code = CommandErrorCode::from_cons(cons_reg);
        let cons = QueuePointer::from_register(self.cmdq_log2(), cons_reg);
        let off = cons.index() as usize * Command::SIZE;
        let bad = Command { words: [read_word(&self.cmdq.buf, off), read_word(&self.cmdq.buf, off + 8)] };
        write_words(&*env.dma, &self.cmdq.buf, off, &Command::sync(SyncSignal::None).words);
        publish_to_device();
        self.acknowledge_gerrors(GlobalErrors::CMDQ_ERR);
        SmmuError::CommandRejected { opcode: bad.op(), code, index: cons.index() }
    }

    /// Toggles the GERRORN bits in `mask` that are active, making them equal to GERROR.
    fn acknowledge_gerrors(&self, mask: u32) {
        let gerror = self.regs.read32(offset::GERROR);
        let gerrorn = self.regs.read32(offset::GERRORN);
        self.regs.write32(offset::GERRORN, (gerrorn & !mask) | (gerror & mask));
    }

    fn cmdq_log2(&self) -> u32 {
        self.cmdq.prod.entries().trailing_zeros()
    }

    // ----- events and errors -----------------------------------------------------------------

    /// Reads and consumes every event record the SMMU has produced.
    pub fn drain_events(&mut self) -> EventDrain {
        let mut events = Vec::new();
        let overflowed = self.drain_event_records(|record| events.push(record.decode()));
        EventDrain { events, overflowed }
    }

    /// [`Self::drain_events`], handing each record to `each` as it is read, undecoded (fault
    /// delivery allocates nothing, and decodes only the records it reports); returns whether
    /// events were lost to an overflow.
    pub fn drain_event_records(&mut self, mut each: impl FnMut(EventRecord)) -> bool {
        const OVERFLOW_FLAG: u32 = 1 << 31; // EVENTQ_PROD.OVFLG / EVENTQ_CONS.OVACKFLG
        let log2 = self.eventq.log2_entries;
        let prod_reg = self.regs.read32(offset::EVENTQ_PROD);
        let cons_reg = self.regs.read32(offset::EVENTQ_CONS);
        dma::acquire_from_device();
        let prod = QueuePointer::from_register(log2, prod_reg);
        let mut cons = QueuePointer::from_register(log2, cons_reg);
        // Bounded by PROD as read once: records arriving meanwhile wait for the next drain.
        while !prod.is_empty_with(cons) {
            let off = cons.index() as usize * EventRecord::SIZE;
            let mut record = EventRecord::default();
            for (i, word) in record.words.iter_mut().enumerate() {
                *word = read_word(&self.eventq.buf, off + 8 * i);
            }
            each(record);
            cons = cons.next();
        }
        let overflowed = (prod_reg ^ cons_reg) & OVERFLOW_FLAG != 0;
        if overflowed {
            self.overflow_count += 1;
        }
        // Consuming entries frees space; copying OVFLG into OVACKFLG acknowledges the overflow.
        self.regs.write32(offset::EVENTQ_CONS, cons.register_value() | (prod_reg & OVERFLOW_FLAG));
        overflowed
    }

    /// Reports and acknowledges active global errors. An active CMDQ_ERR is recovered as in
    /// [`Smmu::execute`]. SFM_ERR (service failure mode) cannot be cleared without a reset and
    /// yields [`SmmuError::ServiceFailure`].
    pub fn check_gerror(&mut self, env: &mut Env<'_>) -> Result<GerrorReport, SmmuError> {
        let active = GlobalErrors::active(self.regs.read32(offset::GERROR), self.regs.read32(offset::GERRORN));
        let rejected_command =
            active.contains(GlobalErrors::CMDQ_ERR).then(|| self.recover_command_error(env));
        self.acknowledge_gerrors(active.0 & !(GlobalErrors::CMDQ_ERR | GlobalErrors::SFM_ERR));
        if active.contains(GlobalErrors::SFM_ERR) {
            return Err(SmmuError::ServiceFailure);
        }
        Ok(GerrorReport { active, rejected_command })
    }

    // ----- control registers -----------------------------------------------------------------

    fn write_cr0(&self, clock: &dyn Clock, value: u32) -> Result<(), SmmuError> {
        QuiescedRegs { regs: &self.regs, timeout_ns: self.timeout_ns }.write_acked(
            clock,
            offset::CR0,
            offset::CR0ACK,
            value,
            WaitTarget::Cr0Ack,
        )
    }

    fn write_irq_ctrl(&self, clock: &dyn Clock, value: u32) -> Result<(), SmmuError> {
        QuiescedRegs { regs: &self.regs, timeout_ns: self.timeout_ns }.write_acked(
            clock,
            offset::IRQ_CTRL,
            offset::IRQ_CTRLACK,
            value,
            WaitTarget::IrqCtrlAck,
        )
    }
}

/// Register helpers usable before the `Smmu` exists.
struct QuiescedRegs<'a, R: Registers> {
    regs: &'a R,
    timeout_ns: u64,
}

impl<R: Registers> QuiescedRegs<'_, R> {
    fn wait(&self, clock: &dyn Clock, target: WaitTarget, done: impl Fn(&R) -> bool) -> Result<(), SmmuError> {
        poll_until(clock, self.timeout_ns, || done(self.regs)).map_err(|_| SmmuError::Timeout(target))
    }

    /// Writes a register that has an ACK twin (CR0/CR0ACK, IRQ_CTRL/IRQ_CTRLACK) and waits until
    /// the twin shows the new value.
    fn write_acked(
        &self,
        clock: &dyn Clock,
        reg: usize,
        ack: usize,
        value: u32,
        target: WaitTarget,
    ) -> Result<(), SmmuError> {
        self.regs.write32(reg, value);
        self.wait(clock, target, |r| r.read32(ack) == value)
    }

    /// GBPA.ABORT, written with UPDATE and complete when UPDATE reads 0 (spec 6.3.14).
    fn set_gbpa_abort(&self, clock: &dyn Clock) -> Result<(), SmmuError> {
        self.wait(clock, WaitTarget::GbpaUpdate, |r| r.read32(offset::GBPA) & gbpa::UPDATE == 0)?;
        let value = self.regs.read32(offset::GBPA) | gbpa::ABORT;
        self.regs.write32(offset::GBPA, value | gbpa::UPDATE);
        self.wait(clock, WaitTarget::GbpaUpdate, |r| r.read32(offset::GBPA) & gbpa::UPDATE == 0)
    }
}

/// Range invalidations cover at most this many granules here: it keeps SCALE within its five
/// bits (the pieces of a count below 2^32 need SCALE <= 31).
const MAX_RANGE_PAGES: u64 = (1 << 32) - 1;

/// One range TLBI (spec 4.4.1.1, "Range-based invalidation"): `(NUM + 1) << SCALE` granules from
/// `address`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RangePiece {
    address: u64,
    num_minus_one: u64,
    scale: u64,
}

/// Splits `pages` granules (of `1 << shift` bytes) from `address` into range TLBIs. Each takes
/// SCALE at the lowest set bit of the remaining count and NUM from the five bits above it, so a
/// count needs at most one command per five bits.
fn range_pieces(address: u64, pages: u64, shift: u32) -> impl Iterator<Item = RangePiece> {
    let (mut address, mut remaining) = (address, pages);
    core::iter::from_fn(move || {
        if remaining == 0 {
            return None;
        }
        let scale = u64::from(remaining.trailing_zeros());
        let num = (remaining >> scale) & 0x1F;
        let piece = RangePiece { address, num_minus_one: num - 1, scale };
        let covered = num << scale;
        remaining -= covered;
        address += covered << shift;
        Some(piece)
    })
}

fn whole_scope_invalidation(scope: TlbScope) -> Command {
    match scope {
        TlbScope::Stage1 { asid } => Command::tlbi_nh_asid(STAGE1_ONLY_VMID, asid),
        TlbScope::NestedStage1 { vmid, asid } => Command::tlbi_nh_asid(vmid, asid),
        TlbScope::Stage2 { vmid } => Command::tlbi_s12_vmall(vmid),
    }
}

fn build_stream_table(
    dma: &mut dyn DmaAllocator,
    id: &IdRegisters,
    options: &SmmuOptions,
) -> Result<StreamTable, SmmuError> {
    let sid_bits = id.sid_bits();
    if id.two_level_stream_table() && sid_bits > STREAM_TABLE_SPLIT && !options.force_linear_stream_table {
        let log2size = sid_bits.min(STREAM_TABLE_SPLIT + L1_TABLE_MAX_LOG2);
        let l1_entries = 1usize << (log2size - STREAM_TABLE_SPLIT);
        // Zeroed descriptors have Span = 0: invalid, traffic gets C_BAD_STREAMID.
        let l1 = alloc_aligned(dma, l1_entries * 8)?;
        dma.flush_for_device(l1.virt, l1.size);
        Ok(StreamTable::TwoLevel { l1, l2: alloc::vec![None; l1_entries], log2size })
    } else {
        let log2size = sid_bits.min(LINEAR_STREAM_TABLE_MAX_LOG2);
        let table = alloc_aligned(dma, Ste::SIZE << log2size)?;
        let abort = Ste::abort();
        for sid in 0..(1usize << log2size) {
            write_word(&table, sid * Ste::SIZE, abort.words[0]);
        }
        dma::flush(dma, &table, 0, Ste::SIZE << log2size);
        Ok(StreamTable::Linear { table, log2size })
    }
}

fn release_stream_table(dma: &mut dyn DmaAllocator, table: StreamTable) {
    match table {
        StreamTable::Linear { table, .. } => dma.free(table),
        StreamTable::TwoLevel { l1, l2, .. } => {
            for buf in l2.into_iter().flatten() {
                dma.free(buf);
            }
            dma.free(l1);
        }
    }
}
