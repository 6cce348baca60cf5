//! One VT-d remapping unit: bring-up, attach/detach, flushes, faults, interrupt remapping.
//!
//! # Bring-up ([`VtdUnit::init`])
//! Anything firmware left enabled (TE, IRE, QIE) is turned off, protected memory regions are
//! disabled (PMEN), an empty root table is installed (RTADDR + SRTP, TTM selecting legacy or
//! scalable mode), queued invalidation is enabled when ECAP.QI (register-based otherwise), all
//! caches are invalidated globally, stale fault records are cleared, and only then is
//! translation enabled. The root table is empty at that point, so every requester id faults
//! ("root entry not present"): default deny, every device blocked until attached.
//!
//! # Global command discipline (spec 11.4.4)
//! GCMD is write-only and some of its bits are one-shot commands (SRTP, SFL, WBF, SIRTP). A
//! command value is therefore computed from GSTS with only the persistent enables kept, one bit
//! is changed per write, and GSTS is polled (bounded by the clock) until it reflects the change.
//!
//! # Replacing entries: "blocked, never wrong"
//! Context, PASID and interrupt-remapping entries are 128 to 512 bits, wider than any single
//! store this driver can rely on. Following the spec's guidance for modifying present entries
//! (6.5.3.3, 9.x), a present entry is replaced by: clearing it (the 64-bit word holding
//! Present first), invalidating every cache that may hold it or translations derived from it
//! (context or PASID cache, then IOTLB or PASID-IOTLB for the old domain-id, then the
//! device-TLB), and only then writing the new entry with [`crate::dma::DmaTable::publish`]
//! (Present last). In the window between the clear and the publish the device's DMA faults:
//! it is blocked, but it is never translated with a mix of old and new fields nor by a stale
//! cached copy. Interrupt-remapping entries follow the same pattern; an interrupt raised in
//! that window is lost (fault 22h), so callers reprogram an IRTE with the source masked.
//!
//! # Caching mode
//! With CAP.CM=1 (QEMU `caching-mode=on`) hardware may cache not-present entries, so making an
//! entry present is followed by the invalidations Linux also issues (context-cache
//! device-selective with domain-id 0 and domain IOTLB; or PASID cache + PASID-IOTLB), and
//! [`VtdUnit::caching_mode`] tells the map path it must flush after creating mappings too.
//!
//! # Scalable mode layout
//! Each attached requester gets a context entry pointing at a one-page PASID directory (512
//! entries, PDTS=2), so PASIDs below [`MAX_PASID`] are supported. Untagged DMA uses PASID
//! [`RID_PASID`] = 0, named by the context entry's RID_PASID field. QEMU 10.0.2 rejects nested
//! PGTT (the entry faults with 5Bh); the driver still programs it per spec 9.6 for hardware
//! that has ECAP.NEST.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use hwio::{Clock, DmaAllocator, Registers};

use crate::descriptors::{covering_page_block, DeviceTlbRange, Invalidation, DEVICE_TLB_ALL};
use crate::dma::DmaTable;
use crate::fault::{record, DecodedFault, FaultReport};
use crate::invalidate::{Invalidator, QueuedInvalidator, RegisterInvalidator};
use crate::irq::{ApicMode, InterruptRemapEntry, RemappableMsi};
use crate::regs::{self, event_control, fsts, gcmd, irta, pmen, rtaddr, Capability, ExtendedCapability};
use crate::tables::{
    ContextEntry, HardwareEntry, LegacyTranslationType, PasidDirectoryEntry, PasidEntry, PasidTranslationType,
    RootEntry, ScalableContextEntry, ScalableRootEntry, PASIDS_PER_TABLE,
};
use crate::{wait_for, RequesterId, VtdError, WaitTarget, DEFAULT_TIMEOUT_NS};

/// Translation-table mode of the unit (RTADDR.TTM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Root and 128-bit context entries; second-level tables or pass-through per requester.
    Legacy,
    /// Scalable root/context entries, PASID directory and PASID tables (needs ECAP.SMTS).
    Scalable,
}

/// What an attached requester's (or PASID's) DMA is translated with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Translation {
    /// Second-level (VT-d format) tables at `root` with `levels` levels (3, 4 or 5).
    SecondLevel { root: u64, levels: u8 },
    /// First-level (IA-32e format) tables at `root`, 4-level or 5-level. Scalable mode only.
    FirstLevel { root: u64, five_level: bool },
    /// First-level tables whose pointers and outputs are guest-physical, translated by the
    /// second-level tables (spec 3.8). Scalable mode with ECAP.NEST; QEMU 10.0.2 rejects it.
    Nested { first_level_root: u64, five_level: bool, second_level_root: u64, second_level_levels: u8 },
    /// DMA addresses are used untranslated (ECAP.PT).
    PassThrough,
}

/// PASID whose PASID-table entry serves DMA without a PASID in scalable mode.
pub const RID_PASID: u32 = 0;
/// log2 of the PASID-directory entries per device: one 4 KiB page of 8-byte entries.
const DIRECTORY_ENTRIES_LOG2: u32 = 9;
/// PASIDs supported per device with a one-page directory.
pub const MAX_PASID: u32 = (1 << DIRECTORY_ENTRIES_LOG2) * PASIDS_PER_TABLE;

const PAGE: usize = 4096;
const LEGACY_CONTEXT_ENTRY_BYTES: usize = 16;
const SCALABLE_CONTEXT_ENTRY_BYTES: usize = 32;
const PASID_ENTRY_BYTES: usize = 64;
const IRTE_BYTES: usize = 16;

/// The two invalidation engines as one type, chosen at `init`.
#[derive(Debug)]
enum InvalidationEngine {
    Queued(QueuedInvalidator),
    Register(RegisterInvalidator),
}

impl Invalidator for InvalidationEngine {
    fn invalidate<R: Registers, C: Clock, A: DmaAllocator>(
        &mut self,
        regs: &R,
        clock: &C,
        alloc: &A,
        timeout_ns: u64,
        batch: &[Invalidation],
    ) -> Result<(), VtdError> {
        match self {
            InvalidationEngine::Queued(queue) => queue.invalidate(regs, clock, alloc, timeout_ns, batch),
            InvalidationEngine::Register(registers) => registers.invalidate(regs, clock, alloc, timeout_ns, batch),
        }
    }
}

/// Register access, timing and invalidation: the part of the unit every operation uses.
struct Hardware<R, C> {
    regs: R,
    clock: C,
    cap: Capability,
    ecap: ExtendedCapability,
    timeout_ns: u64,
    invalidator: Option<InvalidationEngine>,
}

impl<R: Registers, C: Clock> Hardware<R, C> {
    /// Sets or clears one persistent GCMD enable and waits for GSTS to follow.
    fn set_enable(&self, bit: u32, enable: bool) -> Result<(), VtdError> {
        let persistent = self.regs.read32(regs::GSTS) & gcmd::PERSISTENT;
        let command = if enable { persistent | bit } else { persistent & !bit };
        self.regs.write32(regs::GCMD, command);
        let expected = if enable { bit } else { 0 };
        wait_for(&self.clock, self.timeout_ns, WaitTarget::GlobalStatus(bit), || {
            self.regs.read32(regs::GSTS) & bit == expected
        })
    }

    /// Issues a one-shot GCMD command (SRTP, SIRTP) and waits for its status bit to be set.
    fn one_shot(&self, bit: u32) -> Result<(), VtdError> {
        let persistent = self.regs.read32(regs::GSTS) & gcmd::PERSISTENT;
        self.regs.write32(regs::GCMD, persistent | bit);
        wait_for(&self.clock, self.timeout_ns, WaitTarget::GlobalStatus(bit), || {
            self.regs.read32(regs::GSTS) & bit != 0
        })
    }

    /// Flushes the write buffer when CAP.RWBF demands it after table updates (spec 6.8);
    /// WBFS clears when the flush is done.
    fn flush_write_buffer(&self) -> Result<(), VtdError> {
        if !self.cap.requires_write_buffer_flush() {
            return Ok(());
        }
        let persistent = self.regs.read32(regs::GSTS) & gcmd::PERSISTENT;
        self.regs.write32(regs::GCMD, persistent | gcmd::WBF);
        wait_for(&self.clock, self.timeout_ns, WaitTarget::GlobalStatus(gcmd::WBF), || {
            self.regs.read32(regs::GSTS) & gcmd::WBF == 0
        })
    }

    fn invalidate<A: DmaAllocator>(&mut self, alloc: &A, batch: &[Invalidation]) -> Result<(), VtdError> {
        if batch.is_empty() {
            return Ok(());
        }
        let engine = self.invalidator.as_mut().ok_or(VtdError::NotInitialized)?;
        engine.invalidate(&self.regs, &self.clock, alloc, self.timeout_ns, batch)
    }

    fn coherent(&self) -> bool {
        self.ecap.coherent()
    }

    /// The address width used where an entry needs one but no table is walked
    /// (pass-through): the widest supported of 4, 3 and 5 levels.
    fn pass_through_levels(&self) -> u8 {
        [4, 3, 5].into_iter().find(|&levels| self.cap.supports_second_level_levels(levels)).unwrap_or(4)
    }
}

/// Per-requester bookkeeping.
#[derive(Debug, Default)]
struct DeviceState {
    /// Whether the device's ATS translation cache (device-TLB) is in use.
    device_tlb: bool,
    /// Legacy mode: the context entry's domain-id while attached.
    legacy_did: Option<u16>,
    /// Scalable mode: the PASID directory the context entry points at.
    pasid_directory: Option<DmaTable>,
    /// Scalable mode: PASID tables by directory index.
    pasid_tables: BTreeMap<u32, DmaTable>,
    /// Scalable mode: attached PASIDs (including RID_PASID) and their domain-ids.
    pasids: BTreeMap<u32, u16>,
}

impl DeviceState {
    fn is_attached(&self) -> bool {
        self.legacy_did.is_some() || !self.pasids.is_empty()
    }
}

struct InterruptTable {
    table: DmaTable,
    entries: u32,
    apic_mode: ApicMode,
}

/// Driver for one VT-d remapping unit.
pub struct VtdUnit<R: Registers, C: Clock> {
    hw: Hardware<R, C>,
    mode: Option<Mode>,
    root: Option<DmaTable>,
    /// Context tables by (bus, half): legacy mode uses half 0 only; scalable mode splits
    /// devfn 0-127 and 128-255 over two tables.
    context_tables: BTreeMap<(u8, u8), DmaTable>,
    devices: BTreeMap<u16, DeviceState>,
    /// Whether any device was marked as using a device-TLB: until then, no flush needs to look
    /// for device-TLBs to invalidate.
    device_tlbs_enabled: bool,
    interrupts: Option<InterruptTable>,
}

impl<R: Registers, C: Clock> VtdUnit<R, C> {
    /// Reads CAP and ECAP; touches nothing else. `clock` bounds every later wait.
    pub fn new(regs: R, clock: C) -> Self {
        let cap = Capability(regs.read64(regs::CAP));
        let ecap = ExtendedCapability(regs.read64(regs::ECAP));
        Self {
            hw: Hardware { regs, clock, cap, ecap, timeout_ns: DEFAULT_TIMEOUT_NS, invalidator: None },
            mode: None,
            root: None,
            context_tables: BTreeMap::new(),
            devices: BTreeMap::new(),
            device_tlbs_enabled: false,
            interrupts: None,
        }
    }

    pub fn capability(&self) -> Capability {
        self.hw.cap
    }

    pub fn extended_capability(&self) -> ExtendedCapability {
        self.hw.ecap
    }

    /// VER register: (major, minor).
    pub fn version(&self) -> (u8, u8) {
        let version = self.hw.regs.read32(regs::VER);
        ((version >> 4 & 0xf) as u8, (version & 0xf) as u8)
    }

    /// Bound for every hardware wait from now on.
    pub fn set_timeout_ns(&mut self, timeout_ns: u64) {
        self.hw.timeout_ns = timeout_ns;
    }

    /// The mode chosen at `init`, if initialized.
    pub fn mode(&self) -> Option<Mode> {
        self.mode
    }

    /// The register block (for the server's diagnostics and for tests on the model).
    pub fn registers(&self) -> &R {
        &self.hw.regs
    }

    /// Whether CAP.CM is set: hardware may cache not-present entries, so the map path must
    /// flush the IOTLB after creating mappings, not only after removing them.
    pub fn caching_mode(&self) -> bool {
        self.hw.cap.caching_mode()
    }

    /// The mode to use for this unit: scalable when ECAP.SMTS, legacy otherwise.
    pub fn preferred_mode(&self) -> Mode {
        if self.hw.ecap.scalable_mode() {
            Mode::Scalable
        } else {
            Mode::Legacy
        }
    }

    /// Brings the unit up with translation enabled and every requester blocked (module docs).
    /// Not retried: after an error the tables allocated so far stay with this object, and the
    /// caller reports the unit as failed.
    pub fn init<A: DmaAllocator>(&mut self, mode: Mode, alloc: &mut A) -> Result<(), VtdError> {
        if self.mode.is_some() {
            return Err(VtdError::InvalidArgument("unit already initialized"));
        }
        if mode == Mode::Scalable && !self.hw.ecap.scalable_mode() {
            return Err(VtdError::Unsupported("scalable mode needs ECAP.SMTS"));
        }
        if mode == Mode::Scalable && !self.hw.ecap.queued_invalidation() {
            return Err(VtdError::Unsupported("scalable mode needs queued invalidation"));
        }

        // Quiesce what firmware may have left on, translation first so DMA stops being
        // translated by tables we are about to replace.
        let status = self.hw.regs.read32(regs::GSTS);
        for bit in [gcmd::TE, gcmd::IRE, gcmd::QIE] {
            if status & bit != 0 {
                self.hw.set_enable(bit, false)?;
            }
        }

        // Protected memory regions would exempt memory from remapping (spec 11.4.13).
        if self.hw.cap.protected_low_region() || self.hw.cap.protected_high_region() {
            self.hw.regs.write32(regs::PMEN, 0);
            let registers = &self.hw.regs;
            wait_for(&self.hw.clock, self.hw.timeout_ns, WaitTarget::ProtectedMemory, || {
                registers.read32(regs::PMEN) & pmen::PRS == 0
            })?;
        }

        let root = DmaTable::allocate(alloc, PAGE, self.hw.coherent())?;
        let mode_bits = match mode {
            Mode::Legacy => rtaddr::TTM_LEGACY,
            Mode::Scalable => rtaddr::TTM_SCALABLE,
        };
        self.hw.regs.write64(regs::RTADDR, root.phys() | mode_bits);
        self.root = Some(root);
        self.hw.flush_write_buffer()?;
        self.hw.one_shot(gcmd::SRTP)?;

        if self.hw.ecap.queued_invalidation() {
            let mut queue = QueuedInvalidator::new(alloc, mode == Mode::Scalable, self.hw.coherent())?;
            queue.program(&self.hw.regs);
            self.hw.invalidator = Some(InvalidationEngine::Queued(queue));
            self.hw.set_enable(gcmd::QIE, true)?;
        } else {
            self.hw.invalidator = Some(InvalidationEngine::Register(RegisterInvalidator::new(
                self.hw.ecap.iotlb_register_offset(),
                self.hw.cap.read_draining(),
                self.hw.cap.write_draining(),
            )));
        }

        let mut batch = Vec::from([Invalidation::ContextGlobal]);
        if mode == Mode::Scalable {
            batch.push(Invalidation::PasidCacheGlobal);
        }
        batch.push(Invalidation::IotlbGlobal);
        self.hw.invalidate(alloc, &batch)?;

        self.drain_faults();
        self.hw.set_enable(gcmd::TE, true)?;
        self.mode = Some(mode);
        Ok(())
    }

    /// Programs the fault event MSI (FEDATA, FEADDR, FEUADDR) and unmasks it (FECTL.IM=0).
    pub fn enable_fault_interrupts(&mut self, msi_address: u64, msi_data: u32) {
        self.hw.regs.write32(regs::FEDATA, msi_data);
        self.hw.regs.write32(regs::FEADDR, msi_address as u32);
        self.hw.regs.write32(regs::FEUADDR, (msi_address >> 32) as u32);
        self.hw.regs.write32(regs::FECTL, 0);
    }

    /// Masks the fault event interrupt (FECTL.IM=1); faults are still recorded.
    pub fn mask_fault_interrupts(&mut self) {
        self.hw.regs.write32(regs::FECTL, event_control::IM);
    }

    /// Marks the device as using ATS: its context entry allows translation requests (legacy
    /// TT=01, scalable DTE=1) and every flush of its domain also invalidates its device-TLB.
    /// Takes effect at the next attach.
    pub fn enable_device_tlb(&mut self, requester: RequesterId) -> Result<(), VtdError> {
        if !self.hw.ecap.device_tlb() {
            return Err(VtdError::Unsupported("device-TLBs need ECAP.DT"));
        }
        self.devices.entry(requester.0).or_default().device_tlb = true;
        self.device_tlbs_enabled = true;
        Ok(())
    }

    fn require_mode(&self) -> Result<Mode, VtdError> {
        self.mode.ok_or(VtdError::NotInitialized)
    }

    fn check_domain_id(&self, did: u16) -> Result<(), VtdError> {
        if did as u32 >= self.hw.cap.domain_count() {
            return Err(VtdError::InvalidArgument("domain-id beyond CAP.ND"));
        }
        if did == 0 && self.hw.cap.caching_mode() {
            return Err(VtdError::InvalidArgument("domain-id 0 is reserved in caching mode"));
        }
        Ok(())
    }

    fn check_translation(&self, mode: Mode, translation: Translation) -> Result<(), VtdError> {
        let (cap, ecap) = (self.hw.cap, self.hw.ecap);
        let second_level_ok = |levels: u8| {
            if cap.supports_second_level_levels(levels) {
                Ok(())
            } else {
                Err(VtdError::Unsupported("second-level table depth not in CAP.SAGAW"))
            }
        };
        let first_level_ok = |five_level: bool| {
            if !ecap.first_level() {
                Err(VtdError::Unsupported("first-level translation needs ECAP.FLTS"))
            } else if five_level && !cap.first_level_5_level() {
                Err(VtdError::Unsupported("5-level first-level tables need CAP.FL5LP"))
            } else {
                Ok(())
            }
        };
        match (mode, translation) {
            (_, Translation::PassThrough) if !ecap.pass_through() => {
                Err(VtdError::Unsupported("pass-through needs ECAP.PT"))
            }
            (_, Translation::PassThrough) => Ok(()),
            (Mode::Legacy, Translation::SecondLevel { levels, .. }) => second_level_ok(levels),
            (Mode::Legacy, _) => Err(VtdError::Unsupported("first-level and nested translation need scalable mode")),
            (Mode::Scalable, Translation::SecondLevel { levels, .. }) => {
                if !ecap.second_level() {
                    return Err(VtdError::Unsupported("second-level translation needs ECAP.SLTS"));
                }
                second_level_ok(levels)
            }
            (Mode::Scalable, Translation::FirstLevel { five_level, .. }) => first_level_ok(five_level),
            (Mode::Scalable, Translation::Nested { five_level, second_level_levels, .. }) => {
                if !ecap.nested() || !ecap.second_level() {
                    return Err(VtdError::Unsupported("nested translation needs ECAP.NEST and SLTS"));
                }
                first_level_ok(five_level)?;
                second_level_ok(second_level_levels)
            }
        }
    }

    /// Attaches DMA without PASID from `requester` to domain `did` translated by
    /// `translation`, replacing any previous attachment ("blocked, never wrong", module docs).
    pub fn attach<A: DmaAllocator>(
        &mut self,
        requester: RequesterId,
        did: u16,
        translation: Translation,
        alloc: &mut A,
    ) -> Result<(), VtdError> {
        let mode = self.require_mode()?;
        self.check_domain_id(did)?;
        self.check_translation(mode, translation)?;
        match mode {
            Mode::Legacy => self.attach_legacy(requester, did, translation, alloc),
            Mode::Scalable => self.write_pasid_entry(requester, RID_PASID, did, translation, alloc),
        }
    }

    /// Attaches DMA tagged with `pasid` from `requester` (scalable mode, ECAP.PASID).
    pub fn attach_pasid<A: DmaAllocator>(
        &mut self,
        requester: RequesterId,
        pasid: u32,
        did: u16,
        translation: Translation,
        alloc: &mut A,
    ) -> Result<(), VtdError> {
        let mode = self.require_mode()?;
        if mode != Mode::Scalable || !self.hw.ecap.pasid() {
            return Err(VtdError::Unsupported("PASID attach needs scalable mode and ECAP.PASID"));
        }
        if pasid == RID_PASID || pasid >= MAX_PASID {
            return Err(VtdError::InvalidArgument("PASID is RID_PASID or beyond the PASID directory"));
        }
        self.check_domain_id(did)?;
        self.check_translation(mode, translation)?;
        self.write_pasid_entry(requester, pasid, did, translation, alloc)
    }

    /// Blocks DMA without PASID from `requester` again.
    pub fn detach<A: DmaAllocator>(&mut self, requester: RequesterId, alloc: &mut A) -> Result<(), VtdError> {
        match self.require_mode()? {
            Mode::Legacy => self.detach_legacy(requester, alloc),
            Mode::Scalable => self.remove_pasid_entry(requester, RID_PASID, alloc),
        }
    }

    /// Blocks DMA tagged with `pasid` from `requester` again.
    pub fn detach_pasid<A: DmaAllocator>(
        &mut self,
        requester: RequesterId,
        pasid: u32,
        alloc: &mut A,
    ) -> Result<(), VtdError> {
        if self.require_mode()? != Mode::Scalable || pasid == RID_PASID {
            return Err(VtdError::InvalidArgument("not a PASID attachment"));
        }
        self.remove_pasid_entry(requester, pasid, alloc)
    }

    /// Domain-id serving DMA without PASID from `requester`, if attached.
    pub fn attached_domain(&self, requester: RequesterId) -> Option<u16> {
        let device = self.devices.get(&requester.0)?;
        device.legacy_did.or_else(|| device.pasids.get(&RID_PASID).copied())
    }

    /// Context table for (bus, half), created and hooked into the root table on first use.
    fn context_table<A: DmaAllocator>(&mut self, bus: u8, half: u8, alloc: &mut A) -> Result<(), VtdError> {
        if self.context_tables.contains_key(&(bus, half)) {
            return Ok(());
        }
        let mode = self.require_mode()?;
        let table = DmaTable::allocate(alloc, PAGE, self.hw.coherent())?;
        let root = self.root.as_ref().ok_or(VtdError::NotInitialized)?;
        let root_offset = bus as usize * 16;
        match mode {
            Mode::Legacy => root.publish(alloc, root_offset, &RootEntry::new(table.phys())),
            // Scalable root entries have one present bit per half; the half is one 64-bit store
            // and the other half is left untouched.
            Mode::Scalable => {
                let entry = if half == 0 {
                    ScalableRootEntry::new(Some(table.phys()), None)
                } else {
                    ScalableRootEntry::new(None, Some(table.phys()))
                };
                let word = ScalableRootEntry::word_for(half << 7);
                let word_offset = root_offset + word * 8;
                root.write_word(word_offset, entry.words[word]);
                root.flush(alloc, word_offset, 8);
            }
        }
        self.context_tables.insert((bus, half), table);
        Ok(())
    }

    /// Follow-up for an entry that just became present: in caching mode hardware may hold a
    /// cached not-present copy, so `caching_mode_batch` is issued; otherwise only the write
    /// buffer needs flushing (when CAP.RWBF).
    fn after_present<A: DmaAllocator>(&mut self, caching_mode_batch: &[Invalidation], alloc: &A) -> Result<(), VtdError> {
        if self.hw.cap.caching_mode() {
            self.hw.invalidate(alloc, caching_mode_batch)
        } else {
            self.hw.flush_write_buffer()
        }
    }

    fn device_tlb_enabled(&self, requester: RequesterId) -> bool {
        self.devices.get(&requester.0).is_some_and(|device| device.device_tlb)
    }

    fn attach_legacy<A: DmaAllocator>(
        &mut self,
        requester: RequesterId,
        did: u16,
        translation: Translation,
        alloc: &mut A,
    ) -> Result<(), VtdError> {
        let kind_for_tables = if self.device_tlb_enabled(requester) {
            LegacyTranslationType::WithDeviceTlb
        } else {
            LegacyTranslationType::Untranslated
        };
        let entry = match translation {
            Translation::SecondLevel { root, levels } => ContextEntry::new(kind_for_tables, root, levels, did),
            Translation::PassThrough => {
                ContextEntry::new(LegacyTranslationType::PassThrough, 0, self.hw.pass_through_levels(), did)
            }
            Translation::FirstLevel { .. } | Translation::Nested { .. } => {
                return Err(VtdError::Unsupported("first-level and nested translation need scalable mode"))
            }
        };
        self.context_table(requester.bus(), 0, alloc)?;
        self.retire_legacy_context(requester, alloc)?;
        let table = &self.context_tables[&(requester.bus(), 0)];
        table.publish(alloc, requester.devfn() as usize * LEGACY_CONTEXT_ENTRY_BYTES, &entry);
        self.devices.entry(requester.0).or_default().legacy_did = Some(did);
        // Linux's caching-mode sequence: not-present entries are cached under domain-id 0.
        let caching_mode_batch =
            [Invalidation::ContextDevice { did: 0, source: requester.0, function_mask: 0 }, Invalidation::IotlbDomain { did }];
        self.after_present(&caching_mode_batch, alloc)
    }

    /// Clears a present legacy context entry and invalidates everything derived from it.
    /// Returns whether there was one.
    fn retire_legacy_context<A: DmaAllocator>(&mut self, requester: RequesterId, alloc: &A) -> Result<bool, VtdError> {
        let Some(table) = self.context_tables.get(&(requester.bus(), 0)) else {
            return Ok(false);
        };
        let offset = requester.devfn() as usize * LEGACY_CONTEXT_ENTRY_BYTES;
        let old: ContextEntry = table.read_entry(offset);
        if !old.is_present() {
            return Ok(false);
        }
        table.clear(alloc, offset, ContextEntry::WORDS);
        let did = old.domain_id();
        let mut batch = Vec::from([
            Invalidation::ContextDevice { did, source: requester.0, function_mask: 0 },
            Invalidation::IotlbDomain { did },
        ]);
        if old.translation_type() == LegacyTranslationType::WithDeviceTlb as u64 {
            batch.push(Invalidation::DeviceTlb {
                source: requester.0,
                physical_function: requester.0,
                queue_depth: 0,
                range: DEVICE_TLB_ALL,
            });
        }
        self.hw.flush_write_buffer()?;
        self.hw.invalidate(alloc, &batch)?;
        if let Some(device) = self.devices.get_mut(&requester.0) {
            device.legacy_did = None;
        }
        Ok(true)
    }

    fn detach_legacy<A: DmaAllocator>(&mut self, requester: RequesterId, alloc: &mut A) -> Result<(), VtdError> {
        if self.retire_legacy_context(requester, alloc)? {
            Ok(())
        } else {
            Err(VtdError::NotAttached)
        }
    }

    /// Makes the requester's scalable context entry (and its PASID directory) present.
    fn scalable_context<A: DmaAllocator>(&mut self, requester: RequesterId, alloc: &mut A) -> Result<(), VtdError> {
        let half = requester.devfn() >> 7;
        self.context_table(requester.bus(), half, alloc)?;
        let offset = (requester.devfn() & 0x7f) as usize * SCALABLE_CONTEXT_ENTRY_BYTES;
        let table = &self.context_tables[&(requester.bus(), half)];
        if table.read_entry::<ScalableContextEntry>(offset).is_present() {
            return Ok(());
        }
        let device = self.devices.entry(requester.0).or_default();
        let directory = DmaTable::allocate(alloc, PAGE, self.hw.ecap.coherent())?;
        let entry = ScalableContextEntry::new(
            directory.phys(),
            DIRECTORY_ENTRIES_LOG2,
            RID_PASID,
            self.hw.ecap.pasid(),
            device.device_tlb,
        );
        table.publish(alloc, offset, &entry);
        device.pasid_directory = Some(directory);
        self.after_present(&[Invalidation::ContextDevice { did: 0, source: requester.0, function_mask: 0 }], alloc)
    }

    /// Makes sure the PASID table serving `pasid` exists and is named by the directory.
    fn pasid_table<A: DmaAllocator>(&mut self, requester: RequesterId, pasid: u32, alloc: &mut A) -> Result<(), VtdError> {
        let coherent = self.hw.ecap.coherent();
        let device = self.devices.get_mut(&requester.0).ok_or(VtdError::NotAttached)?;
        let directory_index = pasid / PASIDS_PER_TABLE;
        if device.pasid_tables.contains_key(&directory_index) {
            return Ok(());
        }
        let directory = device.pasid_directory.as_ref().ok_or(VtdError::NotAttached)?;
        let table = DmaTable::allocate(alloc, PAGE, coherent)?;
        directory.publish(alloc, directory_index as usize * 8, &PasidDirectoryEntry::new(table.phys()));
        device.pasid_tables.insert(directory_index, table);
        Ok(())
    }

    fn pasid_entry_for(&self, did: u16, translation: Translation) -> PasidEntry {
        let entry = match translation {
            Translation::SecondLevel { root, levels } => PasidEntry::second_level(did, root, levels),
            Translation::FirstLevel { root, five_level } => PasidEntry::first_level(did, root, five_level),
            Translation::Nested { first_level_root, five_level, second_level_root, second_level_levels } => {
                PasidEntry::nested(did, first_level_root, five_level, second_level_root, second_level_levels)
            }
            Translation::PassThrough => PasidEntry::pass_through(did, self.hw.pass_through_levels()),
        };
        if self.hw.ecap.scalable_walk_coherent() {
            entry.with_page_walk_snoop()
        } else {
            entry
        }
    }

    fn write_pasid_entry<A: DmaAllocator>(
        &mut self,
        requester: RequesterId,
        pasid: u32,
        did: u16,
        translation: Translation,
        alloc: &mut A,
    ) -> Result<(), VtdError> {
        let entry = self.pasid_entry_for(did, translation);
        self.scalable_context(requester, alloc)?;
        self.pasid_table(requester, pasid, alloc)?;
        self.retire_pasid_entry(requester, pasid, alloc)?;
        let device = self.devices.get_mut(&requester.0).ok_or(VtdError::NotAttached)?;
        let table = &device.pasid_tables[&(pasid / PASIDS_PER_TABLE)];
        table.publish(alloc, (pasid % PASIDS_PER_TABLE) as usize * PASID_ENTRY_BYTES, &entry);
        device.pasids.insert(pasid, did);
        self.after_present(
            &[Invalidation::PasidCachePasid { did, pasid }, Invalidation::PasidIotlbAll { did, pasid }],
            alloc,
        )
    }

    /// Clears a present PASID entry and invalidates per the spec's guidance for PASID-entry
    /// changes (6.5.3.3): PASID cache, then IOTLB (domain-selective for second-level and
    /// pass-through entries, PASID-based otherwise), then the device-TLB.
    fn retire_pasid_entry<A: DmaAllocator>(
        &mut self,
        requester: RequesterId,
        pasid: u32,
        alloc: &A,
    ) -> Result<bool, VtdError> {
        let Some(device) = self.devices.get(&requester.0) else {
            return Ok(false);
        };
        let Some(table) = device.pasid_tables.get(&(pasid / PASIDS_PER_TABLE)) else {
            return Ok(false);
        };
        let offset = (pasid % PASIDS_PER_TABLE) as usize * PASID_ENTRY_BYTES;
        let old: PasidEntry = table.read_entry(offset);
        if !old.is_present() {
            return Ok(false);
        }
        table.clear(alloc, offset, PasidEntry::WORDS);
        let did = old.domain_id();
        let mut batch = Vec::from([Invalidation::PasidCachePasid { did, pasid }]);
        let second_level_tagged = old.translation_type() == PasidTranslationType::SecondLevel as u64
            || old.translation_type() == PasidTranslationType::PassThrough as u64;
        batch.push(if second_level_tagged {
            Invalidation::IotlbDomain { did }
        } else {
            Invalidation::PasidIotlbAll { did, pasid }
        });
        if device.device_tlb {
            batch.push(device_tlb_request(requester, pasid, DEVICE_TLB_ALL));
        }
        self.hw.flush_write_buffer()?;
        self.hw.invalidate(alloc, &batch)?;
        if let Some(device) = self.devices.get_mut(&requester.0) {
            device.pasids.remove(&pasid);
        }
        Ok(true)
    }

    fn remove_pasid_entry<A: DmaAllocator>(
        &mut self,
        requester: RequesterId,
        pasid: u32,
        alloc: &mut A,
    ) -> Result<(), VtdError> {
        if !self.retire_pasid_entry(requester, pasid, alloc)? {
            return Err(VtdError::NotAttached);
        }
        if self.devices.get(&requester.0).is_some_and(|device| !device.is_attached()) {
            self.release_scalable_context(requester, alloc)?;
        }
        Ok(())
    }

    /// Clears the requester's scalable context entry once no PASID is attached, then frees its
    /// PASID directory and tables (after the context-cache invalidation, so hardware can no
    /// longer reach them).
    fn release_scalable_context<A: DmaAllocator>(&mut self, requester: RequesterId, alloc: &mut A) -> Result<(), VtdError> {
        let half = requester.devfn() >> 7;
        let offset = (requester.devfn() & 0x7f) as usize * SCALABLE_CONTEXT_ENTRY_BYTES;
        if let Some(table) = self.context_tables.get(&(requester.bus(), half)) {
            table.clear(alloc, offset, ScalableContextEntry::WORDS);
        }
        self.hw.flush_write_buffer()?;
        // Scalable context-cache entries are not tagged by domain-id; the DID field is unused.
        self.hw.invalidate(alloc, &[Invalidation::ContextDevice { did: 0, source: requester.0, function_mask: 0 }])?;
        if let Some(device) = self.devices.get_mut(&requester.0) {
            let tables = core::mem::take(&mut device.pasid_tables);
            for table in tables.into_values() {
                table.free(alloc);
            }
            if let Some(directory) = device.pasid_directory.take() {
                directory.free(alloc);
            }
        }
        Ok(())
    }

    /// Requesters using device-TLBs whose DMA with `pasid` (RID_PASID: without PASID) is in
    /// domain `did`.
    fn device_tlb_users(&self, did: u16, pasid: u32) -> Vec<RequesterId> {
        if !self.device_tlbs_enabled {
            return Vec::new();
        }
        self.devices
            .iter()
            .filter(|(_, device)| {
                device.device_tlb
                    && (device.pasids.get(&pasid) == Some(&did) || pasid == RID_PASID && device.legacy_did == Some(did))
            })
            .map(|(requester, _)| RequesterId(*requester))
            .collect()
    }

    /// Invalidates IOTLB entries of `did` for `[iova, iova + size)` after an unmap (or, in
    /// caching mode, a map): page-selective with the smallest covering address mask, or
    /// domain-selective when CAP.PSI is clear or the mask would exceed CAP.MAMV. Device-TLBs
    /// of ATS devices in the domain are invalidated for the same block.
    pub fn flush_iotlb_range<A: DmaAllocator>(&mut self, did: u16, iova: u64, size: u64, alloc: &A) -> Result<(), VtdError> {
        if size == 0 {
            return Ok(());
        }
        let (base, mask) = covering_page_block(iova, size);
        let cap = self.hw.cap;
        let request = if cap.page_selective_invalidation() && mask <= cap.max_address_mask() {
            Invalidation::IotlbPages { did, address: base, address_mask: mask, leaf_only: false }
        } else {
            Invalidation::IotlbDomain { did }
        };
        self.invalidate_with_device_tlbs(request, did, RID_PASID, DeviceTlbRange { base, pages_log2: mask }, alloc)
    }

    /// Issues `request` together with the matching device-TLB invalidations of the ATS devices
    /// that use (`did`, `pasid`), and waits for all of them.
    fn invalidate_with_device_tlbs<A: DmaAllocator>(
        &mut self,
        request: Invalidation,
        did: u16,
        pasid: u32,
        range: DeviceTlbRange,
        alloc: &A,
    ) -> Result<(), VtdError> {
        let users = self.device_tlb_users(did, pasid);
        if users.is_empty() {
            // The common case (no ATS device in the domain) needs no batch on the heap.
            return self.hw.invalidate(alloc, &[request]);
        }
        let mut batch = Vec::with_capacity(users.len() + 1);
        batch.push(request);
        batch.extend(users.into_iter().map(|requester| device_tlb_request(requester, pasid, range)));
        self.hw.invalidate(alloc, &batch)
    }

    /// Invalidates every IOTLB entry of `did` (and the device-TLBs of its ATS devices).
    pub fn flush_domain<A: DmaAllocator>(&mut self, did: u16, alloc: &A) -> Result<(), VtdError> {
        self.invalidate_with_device_tlbs(Invalidation::IotlbDomain { did }, did, RID_PASID, DEVICE_TLB_ALL, alloc)
    }

    /// Invalidates first-level (PASID-tagged) mappings of (`did`, `pasid`): the block covering
    /// `range` (iova, size) or, with `None` or a block beyond CAP.MAMV, all of them. Scalable
    /// mode only (PASID-based IOTLB invalidation needs the 256-bit queue).
    pub fn flush_pasid<A: DmaAllocator>(
        &mut self,
        did: u16,
        pasid: u32,
        range: Option<(u64, u64)>,
        alloc: &A,
    ) -> Result<(), VtdError> {
        if self.require_mode()? != Mode::Scalable {
            return Err(VtdError::Unsupported("PASID-based invalidation needs scalable mode"));
        }
        let block = range.filter(|&(_, size)| size != 0).map(|(iova, size)| covering_page_block(iova, size));
        let (request, device_range) = match block {
            Some((base, mask)) if mask <= self.hw.cap.max_address_mask() => (
                Invalidation::PasidIotlbPages { did, pasid, address: base, address_mask: mask, leaf_only: false },
                DeviceTlbRange { base, pages_log2: mask },
            ),
            _ => (Invalidation::PasidIotlbAll { did, pasid }, DEVICE_TLB_ALL),
        };
        self.invalidate_with_device_tlbs(request, did, pasid, device_range, alloc)
    }

    /// Performs arbitrary invalidation requests (e.g. after dirty-bit harvesting).
    pub fn invalidate<A: DmaAllocator>(&mut self, batch: &[Invalidation], alloc: &A) -> Result<(), VtdError> {
        self.hw.invalidate(alloc, batch)
    }

    /// Reads, decodes and clears every pending fault record (F bits), starting at FSTS.FRI,
    /// and clears FSTS.PFO.
    pub fn drain_faults(&mut self) -> FaultReport {
        let registers = &self.hw.regs;
        let cap = self.hw.cap;
        let status = registers.read32(regs::FSTS);
        let mut report = FaultReport { faults: Vec::new(), overflowed: status & fsts::PFO != 0 };
        if status & fsts::PPF != 0 {
            let count = cap.fault_record_count();
            let first = (status >> fsts::FRI_SHIFT & 0xff) as usize % count;
            for step in 0..count {
                let offset = cap.fault_recording_offset() + (first + step) % count * regs::FAULT_RECORD_SIZE;
                // F lives in the high word: read it first, then the address.
                let high = registers.read64(offset + 8);
                let Some(fault) = DecodedFault::decode(registers.read64(offset), high) else {
                    break;
                };
                report.faults.push(fault);
                registers.write32(offset + record::F_DWORD, 1 << 31);
            }
        }
        if report.overflowed {
            registers.write32(regs::FSTS, fsts::PFO);
        }
        report
    }

    /// Installs a table of 2^`entries_log2` IRTEs (all not present: every remapped interrupt
    /// blocked), invalidates the interrupt entry cache and enables interrupt remapping, in the
    /// order spec 11.4.4 (GCMD.SIRTP) demands: IRTA (11.4.11.1: address 63:12, EIME bit 11,
    /// S 3:0 = log2(entries) - 1), SIRTP and its status IRTPS (GSTS bit 24), a global
    /// interrupt-entry-cache invalidation through the queue (6.5.2.7), and only then IRE
    /// (bit 25). Compatibility-format interrupts are blocked (CFI, bit 23, cleared if firmware
    /// left it set: with CFIS=1 they would bypass the table, spec 5.1.2.1). QEMU needs
    /// `kernel-irqchip=split` for its interrupt remapping.
    pub fn enable_interrupt_remapping<A: DmaAllocator>(
        &mut self,
        entries_log2: u8,
        apic_mode: ApicMode,
        alloc: &mut A,
    ) -> Result<(), VtdError> {
        self.require_mode()?;
        if !self.hw.ecap.interrupt_remapping() {
            return Err(VtdError::Unsupported("interrupt remapping needs ECAP.IR"));
        }
        if !matches!(self.hw.invalidator, Some(InvalidationEngine::Queued(_))) {
            return Err(VtdError::Unsupported("interrupt remapping needs queued invalidation"));
        }
        if apic_mode == ApicMode::X2Apic && !self.hw.ecap.extended_interrupt_mode() {
            return Err(VtdError::Unsupported("x2APIC destinations need ECAP.EIM"));
        }
        if !(1..=16).contains(&entries_log2) {
            return Err(VtdError::InvalidArgument("IRTE count must be 2^1..2^16"));
        }
        if self.interrupts.is_some() {
            return Err(VtdError::InvalidArgument("interrupt remapping already enabled"));
        }
        let table = DmaTable::allocate(alloc, IRTE_BYTES << entries_log2, self.hw.coherent())?;
        let extended = if apic_mode == ApicMode::X2Apic { irta::EIME } else { 0 };
        self.hw.regs.write64(regs::IRTA, table.phys() | extended | (entries_log2 as u64 - 1));
        self.interrupts = Some(InterruptTable { table, entries: 1 << entries_log2, apic_mode });
        self.hw.one_shot(gcmd::SIRTP)?;
        self.hw.invalidate(alloc, &[Invalidation::InterruptEntryGlobal])?;
        if self.hw.regs.read32(regs::GSTS) & gcmd::CFI != 0 {
            self.hw.set_enable(gcmd::CFI, false)?;
        }
        self.hw.set_enable(gcmd::IRE, true)
    }

    /// Points IRTE `index` at `vector` on CPU `destination` (APIC id), accepting the interrupt
    /// only from `source`, and returns the MSI address/data to program into the device.
    /// The entry cache is invalidated afterwards, which is also how QEMU learns of the change.
    pub fn program_irte<A: DmaAllocator>(
        &mut self,
        index: u16,
        vector: u8,
        destination: u32,
        source: RequesterId,
        alloc: &mut A,
    ) -> Result<RemappableMsi, VtdError> {
        let interrupts = self.interrupts.as_ref().ok_or(VtdError::Unsupported("interrupt remapping not enabled"))?;
        if index as u32 >= interrupts.entries {
            return Err(VtdError::InvalidArgument("IRTE index beyond table"));
        }
        if interrupts.apic_mode == ApicMode::XApic && destination > 0xff {
            return Err(VtdError::InvalidArgument("xAPIC destination beyond 8 bits"));
        }
        let entry = InterruptRemapEntry::remapped(vector, destination, interrupts.apic_mode, source);
        // A present entry is cleared and invalidated first ("blocked, never wrong").
        self.retire_irte(index, alloc)?;
        let interrupts = self.interrupts.as_ref().ok_or(VtdError::NotInitialized)?;
        interrupts.table.publish(alloc, index as usize * IRTE_BYTES, &entry);
        self.hw.invalidate(alloc, &[Invalidation::InterruptEntries { index, index_mask: 0 }])?;
        Ok(RemappableMsi::for_handle(index))
    }

    /// Makes IRTE `index` not present again.
    pub fn clear_irte<A: DmaAllocator>(&mut self, index: u16, alloc: &mut A) -> Result<(), VtdError> {
        if self.retire_irte(index, alloc)? {
            Ok(())
        } else {
            Err(VtdError::NotAttached)
        }
    }

    fn retire_irte<A: DmaAllocator>(&mut self, index: u16, alloc: &A) -> Result<bool, VtdError> {
        let interrupts = self.interrupts.as_ref().ok_or(VtdError::Unsupported("interrupt remapping not enabled"))?;
        if index as u32 >= interrupts.entries {
            return Err(VtdError::InvalidArgument("IRTE index beyond table"));
        }
        let offset = index as usize * IRTE_BYTES;
        if !interrupts.table.read_entry::<InterruptRemapEntry>(offset).is_present() {
            return Ok(false);
        }
        interrupts.table.clear(alloc, offset, InterruptRemapEntry::WORDS);
        self.hw.invalidate(alloc, &[Invalidation::InterruptEntries { index, index_mask: 0 }])?;
        Ok(true)
    }
}

/// The device-TLB invalidation for `requester`'s DMA with `pasid` (RID_PASID: without PASID).
/// The queue depth is left 0 (the maximum, 32) and the requester is assumed to be its own
/// physical function, as the server does not yet pass SR-IOV topology down.
fn device_tlb_request(requester: RequesterId, pasid: u32, range: DeviceTlbRange) -> Invalidation {
    if pasid == RID_PASID {
        Invalidation::DeviceTlb { source: requester.0, physical_function: requester.0, queue_depth: 0, range }
    } else {
        Invalidation::PasidDeviceTlb { source: requester.0, physical_function: requester.0, pasid, queue_depth: 0, range }
    }
}
