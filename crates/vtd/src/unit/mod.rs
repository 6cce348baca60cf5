//! One VT-d remapping unit: bring-up, attach/detach, flushes, faults, interrupt remapping.
//!
//! [`VtdUnit`] is split by concern, one file each:
//! * `hardware.rs`: register access, the global command discipline and the invalidation engine
//!   every operation goes through;
//! * `bring_up.rs`: [`VtdUnit::init`], default deny;
//! * `context.rs`: root, context and PASID tables, attach and detach ("blocked, never wrong");
//! * `flush.rs`: IOTLB, PASID and device-TLB invalidation after table changes;
//! * `faults.rs`: fault recording and the fault event interrupt;
//! * `interrupts.rs`: the interrupt remapping table;
//! * `page_requests.rs`: the page request queue and page group responses.
//!
//! This file holds the unit's state, the requests it accepts and their validation.

mod bring_up;
mod context;
mod faults;
mod flush;
mod hardware;
mod interrupts;
mod page_requests;

use alloc::collections::BTreeMap;

use hwio::{Clock, DmaAllocator, Registers};

use crate::dma::DmaTable;
use crate::regs::{self, Capability, ExtendedCapability};
use crate::tables::PASIDS_PER_TABLE;
use crate::{RequesterId, VtdError, DEFAULT_TIMEOUT_NS};
use hardware::Hardware;
use interrupts::InterruptTable;

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
    /// Second-level tables as `SecondLevel`, whose entries the walker marks accessed and
    /// whose leaves it marks dirty (PASID entry SSADE). Scalable mode with ECAP.SSADS.
    SecondLevelTracked { root: u64, levels: u8 },
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
    /// The page request queue, once enabled.
    page_requests: Option<page_requests::PageRequestQueue>,
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
            page_requests: None,
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
        (regs::ver::MAJOR.get(version.into()) as u8, regs::ver::MINOR.get(version.into()) as u8)
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
            (Mode::Legacy, Translation::SecondLevelTracked { .. }) => {
                Err(VtdError::Unsupported("second-level dirty tracking needs scalable mode"))
            }
            (Mode::Legacy, _) => Err(VtdError::Unsupported("first-level and nested translation need scalable mode")),
            (Mode::Scalable, Translation::SecondLevelTracked { levels, .. }) => {
                if !ecap.second_level() || !ecap.second_level_dirty() {
                    return Err(VtdError::Unsupported("second-level dirty tracking needs ECAP.SLTS and SSADS"));
                }
                second_level_ok(levels)
            }
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
}
