//! `IommuBackend` for Arm SMMUv3: domains are `iommu-pt` VMSAv8-64 tables, either stage 1
//! (a context descriptor per stream carrying the domain's ASID and TTB0) or stage 2 (the STE
//! carries the domain's VMID and VTTBR); attachments are STEs written by `smmuv3::Smmu`, and every
//! unmap is followed by a TLB invalidation that ends with CMD_SYNC and is waited for.
//!
//! Streams the server knows (every enumerated PCI function behind a unit) are never left
//! without a configuration: from takeover, and whenever their owner detaches or goes, they are
//! attached to the unit's *blocking domain*, a table with nothing mapped and fault recording
//! on (CD.R / STE.S2R). Every DMA of a blocked stream therefore aborts *and* is reported with
//! its address and direction, which an abort STE (no event at all) would not do. StreamIDs no
//! function uses stay without a level-2 stream table: their traffic is aborted with
//! C_BAD_STREAMID. A stream with IORT RMRs is blocked in a private domain of its own instead,
//! which maps only its RMR regions (`crate::direct`).
//!
//! Nesting (`DomainConfig::Nested`): a nest parent is always a stage-2 domain, whatever the
//! unit's stage. A nested domain is the client's context descriptor, at an IPA of the parent,
//! over the parent's stage-2 tables; the STE (Config = S1+S2) is the server's alone: its
//! stage-2 fields, S1CDMax = 0, the CD fetch attributes and the VMID. Every nested domain gets
//! a VMID of its own, so the TLB entries of its stage 1 are tagged (VMID, ASID) with a VMID no
//! other domain uses: whatever ASIDs the client writes into its CD, and whatever it asks
//! `invalidate_stage1` to drop, it reaches only its own entries. The server cannot read the
//! CD before the SMMU does (it lives in client memory and may change at any time), so nothing
//! in it is trusted: its TTB0 and every stage-1 table address are IPAs that stage 2 translates
//! (a client can reach only what its parent maps), and a malformed CD is C_BAD_CD, a
//! configuration error of the client's own stream. An unmap in the parent invalidates its own
//! VMID and each nested child's.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use iommu_abi::{Access, Error, FaultReason, FaultStage, Invalidation, IovaRange, PageResponseCode, Perm, UnitCaps, UnitKind};
use iommu_core::{
    DomainConfig, DrainedFault, FaultEvent, HwDomain, HwDomainId, IommuBackend, RequesterId, ReservedKind, ReservedRegion,
    Translation, UnitId, UnitInfo,
};
use iommu_pt::smmu_stage1::{SmmuStage1, Stage1Config as Stage1Tables};
use iommu_pt::smmu_stage2::{SmmuStage2, Stage2Config as Stage2Tables};
use iommu_pt::{LargePages, PageTable, Unmapped};
use slot_table::SlotTable;
use smmuv3::{Command, DecodedEvent, Env, EventRecord, EventType, Granule, Httu, NestedStage1, Smmu, SmmuError, SmmuOptions, Stage1Config, Stage2Config, TlbScope};

mod dirty;

use crate::direct::{self, DirectMapped, DirectMaps};
use crate::{table_error, table_perm, unmap_failed, Environment, Measured};

mod page_requests;
mod substreams;
mod sva;

/// Which translation stage a unit's domains use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomainStage {
    /// Stage 1: one context descriptor per stream (ASID, TTB0), STE.Config = S1 translate.
    Stage1,
    /// Stage 2: the STE itself holds the table (VMID, VTTBR), STE.Config = S2 translate.
    Stage2,
}

impl DomainStage {
    pub fn name(self) -> &'static str {
        match self {
            DomainStage::Stage1 => "stage-1",
            DomainStage::Stage2 => "stage-2",
        }
    }
    /// The status-page code (see `status::UNIT0_MODE`).
    pub fn code(self) -> u64 {
        match self {
            DomainStage::Stage1 => 4,
            DomainStage::Stage2 => 5,
        }
    }
}

/// The IOVA window kept free in every SMMU domain for mapping interrupt doorbells (the
/// GICv2m frame or an ITS): MSI writes are translated like any DMA on SMMUv3, so the server
/// must be able to map the doorbell there without colliding with a client's buffers. The same
/// window Linux reserves for this purpose (`MSI_IOVA_BASE`, 1 MiB).
pub const MSI_IOVA_WINDOW: (u64, u64) = (0x0800_0000, 0x080F_FFFF);

/// The largest input size of a stage-1 table with 4 KiB granules (T0SZ = 16, walk from level 0).
const STAGE1_INPUT_BITS: u8 = 48;
/// Largest output address the `iommu-pt` formats and the SMMU driver program (IPS / S2PS 48 bits).
const MAX_OUTPUT_BITS: u8 = 48;
/// MAIR index of normal write-back memory in `smmuv3::config::DEFAULT_MAIR` (Attr0 = 0xFF).
const NORMAL_MEMORY_MAIR_INDEX: u8 = 0;
/// MAIR index of Device-nGnRE memory in `DEFAULT_MAIR` (Attr1 = 0x04), for doorbells.
const DEVICE_MEMORY_MAIR_INDEX: u8 = 1;
/// Bytes of a page.
const PAGE: u64 = 4096;
/// The event queue holds 2^11 records (64 KiB): QEMU records a blocked DMA once per 4-byte
/// access, so one blocked 4 KiB transfer produces 1024 events, and a queue that overflows
/// loses the later ones.
const EVENT_QUEUE_LOG2: u32 = 11;
/// Page sizes of a 4 KiB-granule VMSAv8-64 table: 4 KiB pages, 2 MiB and 1 GiB blocks.
const PAGE_SIZES: u64 = (1 << 12) | (1 << 21) | (1 << 30);

enum Table {
    Stage1(PageTable<SmmuStage1>),
    Stage2(PageTable<SmmuStage2>),
    /// The client's CD at `cd_ipa` over the stage-2 tables of `parent`.
    Nested { parent: HwDomainId, cd_ipa: u64 },
}

struct Domain {
    unit: usize,
    /// ASID (stage 1) or VMID (stage 2 and nested) tagging the domain's TLB entries.
    tag: u16,
    table: Table,
    /// A stage-2 domain's nested children's VMIDs: their TLB entries also hold its
    /// translations, so its unmaps invalidate them too.
    nested_vmids: Vec<u16>,
}

/// One SMMUv3 under the server's control.
pub struct SmmuUnit<R: hwio::Registers> {
    pub hw: Smmu<R>,
    /// Physical base of its register frame (for logs and reports).
    pub base: u64,
    pub stage: DomainStage,
    /// Output address bits (min of IDR5.OAS and what the table formats support).
    output_bits: u8,
    /// StreamID of each PCI requester ID behind this unit (from the firmware's ID mapping).
    streams: BTreeMap<u32, u32>,
    /// The requester ID each StreamID of `streams` stands for (the lowest, where firmware maps
    /// several to one stream): how a fault event finds its device.
    requesters: BTreeMap<u32, u32>,
    /// The domain every known, unattached stream is attached to (see the module documentation).
    blocking: HwDomainId,
    /// Stage-1 translation faults stall (the unit supports stalls, domains are stage 1).
    stalls: bool,
    /// Page requests and stalls delivered and not yet answered.
    outstanding: page_requests::Outstanding,
    /// What the object model is told the unit offers (fixed at bring-up).
    caps: UnitCaps,
    /// The domain each stream's STE points at.
    attached: BTreeMap<u32, HwDomainId>,
    /// The streams whose STE points at a nested domain (their faults name a stage).
    nested_streams: BTreeSet<u32>,
    /// IORT RMR ranges per requester ID (inclusive): identity-mapped wherever the device is
    /// attached, once `SmmuBackend::install_direct_maps` has run.
    pub rmrs: BTreeMap<u32, Vec<(u64, u64)>>,
}

impl<R: hwio::Registers> SmmuUnit<R> {
    /// Whether the unit's walks record writes in its domains' tables: stage-1 domains on an SMMU
    /// with hardware dirty-state update (IDR0.HTTU = 0b10; QEMU has none). Stage-2 DBM is not
    /// driven.
    fn tracks_dirty(&self) -> bool {
        self.stage == DomainStage::Stage1 && self.hw.id_registers().httu() == Httu::AccessFlagAndDirty
    }

    /// The requester ID whose DMA carries `sid`, if the firmware maps one to it.
    pub fn requester_of(&self, sid: u32) -> Option<u32> {
        self.requesters.get(&sid).copied()
    }
}

/// The SMMUv3 backend: every unit, every domain, and the DMA memory their tables live in.
pub struct SmmuBackend<E: Environment> {
    pub units: Vec<SmmuUnit<E::Registers>>,
    domains: SlotTable<HwDomainId, Domain>,
    pub dma: E::Dma,
    clock: E::Clock,
    /// Pages of the MSI doorbells (GICv2m frames) every paging domain maps, at their own
    /// address, inside `MSI_IOVA_WINDOW`.
    msi_doorbells: Vec<u64>,
    /// Process address spaces bound with SVA, by stream.
    sva: BTreeMap<sva::BindingKey, sva::Binding>,
    /// Devices with RMRs and the identity maps each domain holds for them.
    direct: DirectMaps,
}

fn hardware<E: Environment>(error: SmmuError) -> Error {
    E::log(format_args!("iommu-server: SMMUv3 operation failed: {error:?}"));
    match error {
        SmmuError::OutOfMemory => Error::NoResources,
        SmmuError::Unsupported(_) => Error::NotSupported,
        _ => Error::HardwareFailure,
    }
}

/// The VMSAv8-64 lookup level a 4 KiB-granule stage-2 walk of `input_bits` starts at, so that
/// the root is a single table (level 0 resolves bits 47..39, level 1 bits 38..30).
fn stage2_start_level(input_bits: u8) -> u8 {
    match input_bits {
        40.. => 0,
        31..=39 => 1,
        _ => 2,
    }
}

impl<E: Environment> SmmuBackend<E> {
    pub fn new(dma: E::Dma, clock: E::Clock) -> Self {
        SmmuBackend { units: Vec::new(), domains: SlotTable::new(), dma, clock, msi_doorbells: Vec::new(), sva: BTreeMap::new(), direct: DirectMaps::default() }
    }

    /// How many units the backend drives (`UnitId`s `0..unit_count()`).
    pub fn unit_count(&self) -> usize {
        self.units.len()
    }

    /// Adds an MSI doorbell page that every paging domain created from now on maps at its own
    /// address (devices then program the same MSI address with or without the IOMMU); `false`
    /// if the page is outside `MSI_IOVA_WINDOW`, where a client's buffer could be.
    pub fn add_msi_doorbell(&mut self, frame: u64) -> bool {
        let page = frame & !(PAGE - 1);
        let inside = (MSI_IOVA_WINDOW.0..=MSI_IOVA_WINDOW.1 - (PAGE - 1)).contains(&page);
        if inside {
            self.msi_doorbells.push(page);
        }
        inside
    }

    /// Brings an SMMU up (every stream denied), creates its blocking domain and attaches every
    /// stream of `streams` (requester ID → StreamID) to it. Returns the unit's index.
    pub fn add_unit(&mut self, regs: E::Registers, base: u64, wanted: DomainStage, streams: BTreeMap<u32, u32>) -> Result<usize, &'static str> {
        let mut env = Env { dma: &mut self.dma, clock: &self.clock };
        let options = SmmuOptions { eventq_log2_cap: EVENT_QUEUE_LOG2, cache_maintenance: E::CACHE_MAINTENANCE, ..SmmuOptions::default() };
        let hw = Smmu::init(regs, &mut env, options).map_err(|error| {
            E::log(format_args!("iommu-server: SMMUv3 at {base:#x}: bring-up failed: {error:?}"));
            "SMMUv3 bring-up failed"
        })?;
        let coherent = hw.id_registers().coherent();
        if !coherent {
            E::log(format_args!(
                "iommu-server: SMMUv3 at {base:#x} does not snoop CPU caches (IDR0.COHACC = 0): the server cleans its own tables and queues for it; SVA, nesting and dirty tracking, whose tables others write, are refused"
            ));
        }
        let id = hw.id_registers();
        let stage = match wanted {
            DomainStage::Stage2 if id.stage2() => DomainStage::Stage2,
            DomainStage::Stage1 if id.stage1() => DomainStage::Stage1,
            _ if id.stage1() => DomainStage::Stage1,
            _ => DomainStage::Stage2,
        };
        if stage != wanted {
            E::log(format_args!("iommu-server: SMMUv3 at {base:#x} has no {} translation; using {}", wanted.name(), stage.name()));
        }
        let output_bits = (id.oas_bits() as u8).min(MAX_OUTPUT_BITS);
        let index = self.units.len();
        // Placeholder until the blocking domain exists: it is allocated on this very unit.
        let mut requesters = BTreeMap::new();
        for (&rid, &sid) in &streams {
            requesters.entry(sid).or_insert(rid);
        }
        self.units.push(SmmuUnit {
            hw,
            base,
            stage,
            output_bits,
            streams,
            requesters,
            blocking: HwDomainId(0),
            stalls: false,
            outstanding: Default::default(),
            caps: UnitCaps::empty(),
            attached: BTreeMap::new(),
            nested_streams: BTreeSet::new(),
            rmrs: BTreeMap::new(),
        });
        let mut env = Env { dma: &mut self.dma, clock: &self.clock };
        let unit = &mut self.units[index];
        unit.enable_recoverable_faults(&mut env).map_err(|_| "cannot enable the PRI queue")?;
        if unit.recoverable_faults() {
            unit.caps = unit.caps.union(UnitCaps::PAGE_REQUESTS);
        }
        if unit.substream_bits() != 0 {
            unit.caps = unit.caps.union(UnitCaps::PASID);
        }
        let (stage1, stage2) = (unit.hw.id_registers().stage1(), unit.hw.id_registers().stage2());
        // A stage-1 unit can walk a process's own tables from a CD (SVA). Those tables, a
        // nested client's stage-1 tables and CD, and the dirty bits the unit writes are shared
        // with the CPU with no cache maintenance by the server: only a coherent unit sees them.
        if stage1 && coherent {
            unit.caps = unit.caps.union(UnitCaps::SVA);
        }
        if stage1 && stage2 && coherent {
            unit.caps = unit.caps.union(UnitCaps::NESTING);
        }
        if unit.tracks_dirty() && coherent {
            unit.caps = unit.caps.union(UnitCaps::DIRTY_TRACKING);
        }
        let blocking = self.allocate(index, stage, false).map_err(|_| "no memory for the blocking domain")?;
        self.units[index].blocking = blocking.id;
        let sids: Vec<u32> = self.units[index].streams.values().copied().collect();
        for sid in sids {
            self.install(index, sid, blocking.id).map_err(|_| "cannot block a stream at takeover")?;
        }
        Ok(index)
    }

    /// Gives every stream with RMRs (`SmmuUnit::rmrs`) a private domain mapping them at their
    /// own address in place of the blocking domain (`direct`): from now on its RMRs are mapped
    /// in every domain it is attached to. Called once, after `add_unit`, before any client
    /// exists.
    pub fn install_direct_maps(&mut self) -> Result<(), Error> {
        for unit in 0..self.units.len() {
            let devices: Vec<(u32, Vec<(u64, u64)>)> = self.units[unit].rmrs.iter().map(|(&rid, ranges)| (rid, ranges.clone())).collect();
            for (rid, ranges) in devices {
                if !self.units[unit].streams.contains_key(&rid) {
                    continue;
                }
                direct::add_device(self, unit, rid, &ranges)?;
            }
        }
        Ok(())
    }

    /// A fresh, empty domain on `unit` in `stage` (with `dirty_tracking`, stage 1 only:
    /// writable leaves carry DBM).
    fn allocate(&mut self, unit_index: usize, stage: DomainStage, dirty_tracking: bool) -> Result<HwDomain, Error> {
        if self.domains.next_key().is_none() {
            return Err(Error::NoResources);
        }
        let unit = &mut self.units[unit_index];
        let large_pages = LargePages::ALL;
        let (tag, table, input_bits) = match stage {
            DomainStage::Stage1 => {
                let asid = unit.hw.alloc_asid().ok_or(Error::NoResources)?;
                let format = SmmuStage1::new(Stage1Tables {
                    input_bits: STAGE1_INPUT_BITS,
                    output_bits: unit.output_bits,
                    mair_index: NORMAL_MEMORY_MAIR_INDEX,
                    device_mair_index: DEVICE_MEMORY_MAIR_INDEX,
                    not_global: true,
                    large_pages,
                    dirty_tracking,
                })
                .map_err(table_error);
                let table = format.and_then(|f| PageTable::new(&mut self.dma, f).map_err(table_error));
                match table {
                    Ok(table) => (asid, Table::Stage1(table), STAGE1_INPUT_BITS),
                    Err(error) => {
                        let _ = unit.hw.free_asid(&mut Env { dma: &mut self.dma, clock: &self.clock }, asid);
                        return Err(error);
                    }
                }
            }
            DomainStage::Stage2 => {
                let vmid = unit.hw.alloc_vmid().ok_or(Error::NoResources)?;
                // The IPA space cannot be wider than what the SMMU outputs (STE.S2T0SZ >= 64 - OAS).
                let input_bits = unit.output_bits;
                let format = SmmuStage2::new(Stage2Tables {
                    input_bits,
                    start_level: stage2_start_level(input_bits),
                    output_bits: unit.output_bits,
                    large_pages,
                })
                .map_err(table_error);
                let table = format.and_then(|f| PageTable::new(&mut self.dma, f).map_err(table_error));
                match table {
                    Ok(table) => (vmid, Table::Stage2(table), input_bits),
                    Err(error) => {
                        let _ = unit.hw.free_vmid(&mut Env { dma: &mut self.dma, clock: &self.clock }, vmid);
                        return Err(error);
                    }
                }
            }
        };
        let id = self.domains.insert(Domain { unit: unit_index, tag, table, nested_vmids: Vec::new() }).expect("a slot was free");
        Ok(HwDomain { id, aperture: IovaRange { start: 0, last: (1u64 << input_bits) - 1 }, page_sizes: PAGE_SIZES })
    }

    /// A nested domain on `unit`: the client's CD at `cd_ipa` over the stage-2 domain `parent`,
    /// with a VMID of its own.
    fn allocate_nested(&mut self, unit_index: usize, parent: HwDomainId, cd_ipa: u64) -> Result<HwDomain, Error> {
        let parent_domain = self.domains.get(parent).ok_or(Error::NotNestParent)?;
        let Table::Stage2(parent_table) = &parent_domain.table else { return Err(Error::NotNestParent) };
        if parent_domain.unit != unit_index {
            return Err(Error::IncompatibleUnit);
        }
        let nested = NestedStage1 { cd_ipa };
        let format = parent_table.format();
        let s2 = Stage2Config::new(parent_domain.tag, parent_table.root_phys(), format.t0sz(), format.config().start_level, Granule::Size4K);
        nested.validate(self.units[unit_index].hw.id_registers(), &s2).map_err(hardware::<E>)?;
        if self.domains.next_key().is_none() {
            return Err(Error::NoResources);
        }
        let vmid = self.units[unit_index].hw.alloc_vmid().ok_or(Error::NoResources)?;
        let table = Table::Nested { parent, cd_ipa };
        let id = self.domains.insert(Domain { unit: unit_index, tag: vmid, table, nested_vmids: Vec::new() }).expect("a slot was free");
        self.domains.get_mut(parent).expect("looked up above").nested_vmids.push(vmid);
        Ok(HwDomain { id, aperture: IovaRange { start: 0, last: (1u64 << STAGE1_INPUT_BITS) - 1 }, page_sizes: PAGE_SIZES })
    }

    /// Points stream `sid` of `unit` at `domain` (STE and, for stage 1, CD), with the `smmuv3`
    /// crate's never-torn update sequence.
    fn install(&mut self, unit: usize, sid: u32, domain: HwDomainId) -> Result<(), SmmuError> {
        if self.units[unit].substream_bits() != 0 {
            return self.install_substream(unit, sid, 0, domain);
        }
        let d = self.domains.get(domain).expect("callers looked the domain up");
        let (hw, dma) = (&mut self.units[unit].hw, &mut self.dma);
        let mut env = Env { dma, clock: &self.clock };
        let installed = match &d.table {
            Table::Stage1(table) => {
                let format = table.format();
                let config = Stage1Config {
                    hardware_dirty: format.config().dirty_tracking,
                    ..Stage1Config::new(d.tag, table.root_phys(), format.t0sz(), Granule::Size4K)
                };
                hw.attach_stage1(&mut env, sid, &config)?;
                // A fault then waits for the object model's answer instead of aborting.
                if self.units[unit].stalls {
                    self.units[unit].hw.set_stall(&mut env, sid, true)?;
                }
                Ok(())
            }
            Table::Stage2(table) => {
                let format = table.format();
                let config = Stage2Config::new(d.tag, table.root_phys(), format.t0sz(), format.config().start_level, Granule::Size4K);
                hw.attach_stage2(&mut env, sid, &config)
            }
            Table::Nested { parent, cd_ipa } => {
                let Some(Domain { table: Table::Stage2(table), .. }) = self.domains.get(*parent) else {
                    unreachable!("a nested domain's parent outlives it and is a stage-2 domain")
                };
                let format = table.format();
                // The parent's tables under the nested domain's own VMID.
                let s2 = Stage2Config::new(d.tag, table.root_phys(), format.t0sz(), format.config().start_level, Granule::Size4K);
                hw.attach_nested(&mut env, sid, &NestedStage1 { cd_ipa: *cd_ipa }, &s2)
            }
        };
        if installed.is_ok() {
            let nested = matches!(d.table, Table::Nested { .. });
            let unit = &mut self.units[unit];
            unit.attached.insert(sid, domain);
            match nested {
                true => unit.nested_streams.insert(sid),
                false => unit.nested_streams.remove(&sid),
            };
        }
        installed
    }

    /// Invalidates what an unmap changed and hands the unlinked tables back to the domain's
    /// table tree once no walker can hold them any more.
    fn complete_unmap(unit: &mut SmmuUnit<E::Registers>, d: &mut Domain, unmapped: Unmapped, dma: &mut E::Dma, clock: &E::Clock) {
        if let Some(range) = unmapped.range.clone() {
            let scope = match d.table {
                Table::Stage1(_) => TlbScope::Stage1 { asid: d.tag },
                Table::Stage2(_) | Table::Nested { .. } => TlbScope::Stage2 { vmid: d.tag },
            };
            // Unlinked tables may sit in walk caches: then the invalidation must not be leaf-only.
            let leaf_only = unmapped.freed_tables.is_empty();
            let mut env = Env { dma, clock };
            if let Err(error) = unit.hw.tlbi_range(&mut env, scope, range.start, range.end - range.start, Granule::Size4K, leaf_only) {
                Self::fail_closed("TLB invalidation after unmap", error);
            }
            if !d.nested_vmids.is_empty() {
                Self::invalidate_nested(unit, &d.nested_vmids, range, leaf_only, &mut env);
            }
        }
        match &mut d.table {
            Table::Stage1(table) => table.recycle(unmapped.freed_tables, dma),
            Table::Stage2(table) => table.recycle(unmapped.freed_tables, dma),
            Table::Nested { .. } => unreachable!("nothing is mapped in a nested domain"),
        }
    }

    /// The nested children of a stage-2 domain whose IPAs `range` changed: their combined
    /// entries carry their own VMIDs. Out of line: most domains have no nested child.
    #[cold]
    #[inline(never)]
    fn invalidate_nested(unit: &mut SmmuUnit<E::Registers>, vmids: &[u16], range: core::ops::Range<u64>, leaf_only: bool, env: &mut Env<'_>) {
        for &vmid in vmids {
            if let Err(error) = unit.hw.tlbi_range(env, TlbScope::Stage2 { vmid }, range.start, range.end - range.start, Granule::Size4K, leaf_only) {
                Self::fail_closed("TLB invalidation of a nested domain after unmap", error);
            }
        }
    }

    /// A failed invalidation leaves translations the object model is about to unpin: stop
    /// rather than hand the pages back (as the VT-d backend does).
    #[cold]
    #[inline(never)]
    fn fail_closed(what: &str, error: SmmuError) -> ! {
        panic!("FATAL: {what} failed ({error:?}); refusing to release memory a device may still reach");
    }

    fn stream(&self, unit: UnitId, rid: RequesterId) -> Option<(usize, u32)> {
        let index = unit.0 as usize;
        let sid = *self.units.get(index)?.streams.get(&rid.0)?;
        Some((index, sid))
    }
}

impl<E: Environment> IommuBackend for SmmuBackend<E> {
    fn unit_info(&self, unit: UnitId) -> Option<UnitInfo> {
        self.units.get(unit.0 as usize).map(|unit| UnitInfo { kind: UnitKind::ArmSmmuV3, caps: unit.caps })
    }

    fn reserved_regions(&self, unit: UnitId, rid: RequesterId) -> Vec<ReservedRegion> {
        let mut regions = Vec::from([ReservedRegion { range: IovaRange { start: MSI_IOVA_WINDOW.0, last: MSI_IOVA_WINDOW.1 }, kind: ReservedKind::Msi }]);
        if let Some(unit) = self.units.get(unit.0 as usize) {
            for &(start, last) in unit.rmrs.get(&rid.0).into_iter().flatten() {
                regions.push(ReservedRegion { range: IovaRange { start, last }, kind: ReservedKind::Direct });
            }
        }
        regions
    }

    fn domain_alloc(&mut self, unit: UnitId, config: &DomainConfig) -> Result<HwDomain, Error> {
        let index = unit.0 as usize;
        if index >= self.units.len() {
            return Err(Error::NoResources);
        }
        let (stage, dirty_tracking) = match *config {
            DomainConfig::Paging { nest_parent: false, dirty_tracking } => (self.units[index].stage, dirty_tracking),
            DomainConfig::Paging { nest_parent: true, dirty_tracking: false } if self.units[index].hw.id_registers().stage2() => (DomainStage::Stage2, false),
            DomainConfig::Nested { parent, stage1 } => {
                // One CD per stream: QEMU implements no substreams (IDR1.SSIDSIZE = 0).
                if stage1.format != iommu_abi::Stage1Format::SmmuV3ContextDescriptors || stage1.table_entries_log2 != 0 {
                    return Err(Error::NotSupported);
                }
                return self.allocate_nested(index, parent, stage1.table_root);
            }
            _ => return Err(Error::NotSupported),
        };
        if dirty_tracking && !self.units[index].tracks_dirty() {
            return Err(Error::NotSupported);
        }
        let domain = self.allocate(index, stage, dirty_tracking)?;
        // MSI writes are DMA writes to the SMMU: without the doorbell an attached device's
        // interrupts would fault. The blocking domain maps nothing, so blocked devices cannot
        // raise interrupts at all. The window is reserved, so no client mapping collides.
        let device_write = iommu_pt::Perm::READ_WRITE | iommu_pt::Perm::DEVICE;
        let mut mapped = Ok(());
        for &page in &self.msi_doorbells {
            let d = self.domains.get_mut(domain.id).expect("just allocated");
            mapped = match &mut d.table {
                Table::Stage1(table) => table.map(page, page, PAGE, device_write, &mut self.dma),
                Table::Stage2(table) => table.map(page, page, PAGE, device_write, &mut self.dma),
                Table::Nested { .. } => unreachable!("allocated as a paging domain"),
            };
            if mapped.is_err() {
                break;
            }
        }
        if let Err(error) = mapped {
            // Nothing was attached yet: freeing unmaps with the domain.
            self.domain_free(domain.id);
            return Err(table_error(error));
        }
        Ok(domain)
    }

    fn domain_free(&mut self, domain: HwDomainId) {
        let Some(d) = self.domains.remove(domain) else { return };
        // Nothing is mapped or attached (the contract), but the tag may still label cached walks:
        // freeing the ASID/VMID invalidates it before it or the tables are reused.
        let (hw, dma) = (&mut self.units[d.unit].hw, &mut self.dma);
        let mut env = Env { dma, clock: &self.clock };
        let freed = match d.table {
            Table::Stage1(_) => hw.free_asid(&mut env, d.tag),
            Table::Stage2(_) | Table::Nested { .. } => hw.free_vmid(&mut env, d.tag),
        };
        if let Err(error) = freed {
            Self::fail_closed("invalidation of a freed domain", error);
        }
        match d.table {
            Table::Stage1(table) => table.destroy(&mut self.dma),
            Table::Stage2(table) => table.destroy(&mut self.dma),
            Table::Nested { parent, .. } => {
                if let Some(parent) = self.domains.get_mut(parent) {
                    parent.nested_vmids.retain(|&vmid| vmid != d.tag);
                }
            }
        }
    }

    fn map(&mut self, domain: HwDomainId, iova: u64, phys: u64, length: u64, perm: Perm) -> Result<(), Error> {
        let SmmuBackend { units, domains, dma, clock, .. } = self;
        let d = domains.get_mut(domain).ok_or(Error::HardwareFailure)?;
        let in_the_way = match &mut d.table {
            Table::Stage1(table) => table.prepare_map(iova, phys, length, dma),
            Table::Stage2(table) => table.prepare_map(iova, phys, length, dma),
            // The object model maps into the parent: a nested domain's stage 1 is the client's.
            Table::Nested { .. } => return Err(Error::NotSupported),
        };
        if let Some(unlinked) = in_the_way {
            Self::complete_unmap(&mut units[d.unit], d, unlinked, dma, clock);
        }
        // SMMU TLBs hold no invalid entries, so a new translation needs no invalidation.
        match &mut d.table {
            Table::Stage1(table) => table.map(iova, phys, length, table_perm(perm), dma),
            Table::Stage2(table) => table.map(iova, phys, length, table_perm(perm), dma),
            Table::Nested { .. } => unreachable!("refused above"),
        }
        .map_err(table_error)
    }

    fn unmap(&mut self, domain: HwDomainId, iova: u64, length: u64) {
        let SmmuBackend { units, domains, dma, clock, .. } = self;
        let Some(d) = domains.get_mut(domain) else { return };
        let Domain { unit, tag, table, nested_vmids } = d;
        let unit = &mut units[*unit];
        // A block split by the unmap goes invalid, then every cached entry and walk of it, also
        // its nested children's, before its table is linked (break-before-make).
        let scope = match table {
            Table::Stage1(_) => TlbScope::Stage1 { asid: *tag },
            Table::Stage2(_) | Table::Nested { .. } => TlbScope::Stage2 { vmid: *tag },
        };
        let mut invalidate_block = |dma: &mut E::Dma, base: u64, size: u64| {
            let mut env = Env { dma, clock };
            if let Err(error) = unit.hw.tlbi_range(&mut env, scope, base, size, Granule::Size4K, false) {
                Self::fail_closed("TLB invalidation of a block being split", error);
            }
            if !nested_vmids.is_empty() {
                Self::invalidate_nested(unit, nested_vmids, base..base + size, false, &mut env);
            }
        };
        let result = match table {
            Table::Stage1(table) => table.unmap_breaking_before_make(iova, length, dma, &mut invalidate_block),
            Table::Stage2(table) => table.unmap_breaking_before_make(iova, length, dma, &mut invalidate_block),
            Table::Nested { .. } => return,
        };
        let unmapped = result.unwrap_or_else(|error| unmap_failed(iova, length, error));
        Self::complete_unmap(&mut units[d.unit], d, unmapped, dma, clock);
    }

    fn attach(&mut self, unit: UnitId, rid: RequesterId, pasid: Option<u32>, translation: Translation) -> Result<(), Error> {
        match translation {
            Translation::ProcessAddressSpace(space) => self.bind_address_space(unit, rid, pasid, space),
            Translation::Domain(_) => self.replace(unit, rid, pasid, translation),
        }
    }

    fn replace(&mut self, unit: UnitId, rid: RequesterId, pasid: Option<u32>, translation: Translation) -> Result<(), Error> {
        if let Some(pasid) = pasid {
            self.replace_pasid(unit, rid, pasid, translation)?;
            self.forget_replaced_binding(unit, rid, Some(pasid));
            return Ok(());
        }
        let Translation::Domain(domain) = translation else { return Err(Error::NotSupported) };
        let d = self.domains.get(domain).ok_or(Error::HardwareFailure)?;
        if d.unit != unit.0 as usize {
            return Err(Error::IncompatibleUnit);
        }
        self.stream(unit, rid).ok_or(Error::IncompatibleUnit)?;
        // A device with RMRs takes its identity maps along (`direct`).
        direct::switch(self, unit.0 as usize, rid.0, domain)?;
        self.forget_replaced_binding(unit, rid, None);
        Ok(())
    }

    fn block(&mut self, unit: UnitId, rid: RequesterId, pasid: Option<u32>) {
        if self.unbind_address_space(unit, rid, pasid) {
            return;
        }
        if let Some(pasid) = pasid {
            return self.block_pasid(unit, rid, pasid);
        }
        let Some((index, sid)) = self.stream(unit, rid) else { return };
        // A device with RMRs is blocked in its private domain, which keeps them mapped.
        if direct::block(self, index, rid.0) {
            return;
        }
        let blocking = self.units[index].blocking;
        if let Err(error) = self.install(index, sid, blocking) {
            panic!("FATAL: blocking stream {sid:#x} failed ({error:?}); the device may still reach released memory");
        }
    }

    fn invalidate_address_space(&mut self, unit: UnitId, rid: RequesterId, pasid: Option<u32>, iova: u64, length: u64) {
        self.invalidate_binding(unit, rid, pasid, iova, length);
    }

    fn invalidate_stage1(&mut self, domain: HwDomainId, entry: Invalidation) -> Result<(), Error> {
        let d = self.domains.get(domain).ok_or(Error::NotSupported)?;
        let Table::Nested { .. } = d.table else { return Err(Error::NotSupported) };
        let (vmid, unit) = (d.tag, &mut self.units[d.unit]);
        let asid_bits = unit.hw.id_registers().asid_bits();
        let mut env = Env { dma: &mut self.dma, clock: &self.clock };
        let done = match entry {
            Invalidation::Stage1Asid { asid } | Invalidation::Stage1Range { asid, .. } if u32::from(asid) >> asid_bits != 0 => {
                return Err(Error::InvalidRange);
            }
            Invalidation::Stage1Asid { asid } => unit.hw.execute(&mut env, &[Command::tlbi_nh_asid(vmid, asid)]),
            Invalidation::Stage1Range { asid, va, pages, leaf_only } => {
                let scope = TlbScope::NestedStage1 { vmid, asid };
                unit.hw.tlbi_range(&mut env, scope, va, u64::from(pages) * PAGE, Granule::Size4K, leaf_only)
            }
            Invalidation::ContextDescriptor => {
                let streams: Vec<Command> = unit.attached.iter().filter(|&(_, &attached)| attached == domain).map(|(&sid, _)| Command::cfgi_cd(sid, 0, false)).collect();
                unit.hw.execute(&mut env, &streams)
            }
        };
        done.map_err(hardware::<E>)
    }

    fn set_dirty_tracking(&mut self, domain: HwDomainId, enable: bool) -> Result<(), Error> {
        self.switch_dirty_tracking(domain, enable)
    }

    fn read_and_clear_dirty(&mut self, domain: HwDomainId, range: IovaRange, page_size: u64, clear: bool, bitmap: &mut [u64]) -> Result<(), Error> {
        self.read_dirty(domain, range, page_size, clear, bitmap)
    }

    /// A burst of events of one stream with the same kind and direction in the same page (QEMU
    /// reports a blocked transfer once per access) is one fault, with the burst's first address.
    fn drain_faults(&mut self, unit_id: UnitId, sink: &mut dyn FnMut(DrainedFault)) -> usize {
        let Some(unit) = self.units.get_mut(unit_id.0 as usize) else { return 0 };
        let SmmuUnit { hw, requesters, nested_streams, .. } = unit;
        let route = Route { unit: unit_id, requesters, nested_streams };
        // Records are compared raw and only a burst's first is decoded.
        let continues = |first: &EventRecord, next: &EventRecord| {
            first.stream_id() == next.stream_id()
                && first.event_id() == next.event_id()
                && first.read() == next.read()
                && first.input_addr() & !(PAGE - 1) == next.input_addr() & !(PAGE - 1)
        };
        // Stalled transactions are answered one by one: never folded into a burst.
        let mut stalls: Vec<DecodedEvent> = Vec::new();
        let mut burst: Option<(EventRecord, u32)> = None;
        let mut reported = 0;
        let overflowed = hw.drain_event_records(|record| {
            if record.stall() {
                let decoded = record.decode();
                if decoded.stall_tag.is_some() {
                    stalls.push(decoded);
                    return;
                }
            }
            match &mut burst {
                Some((first, count)) if continues(first, &record) => *count += 1,
                _ => {
                    if let Some((first, count)) = burst.replace((record, 1)) {
                        reported += 1;
                        route.deliver_burst::<E>(first.decode(), count, sink);
                    }
                }
            }
        });
        if let Some((first, count)) = burst {
            reported += 1;
            route.deliver_burst::<E>(first.decode(), count, sink);
        }
        if overflowed {
            E::log(format_args!("iommu-server: unit {}: event queue overflowed, events were lost", unit_id.0));
        }
        // Most units have no PRI queue and no stalls: their fault path does not even look.
        if stalls.is_empty() && !unit.recoverable_faults() {
            return reported;
        }
        reported + unit.deliver_recoverable(unit_id, stalls, sink, &|line| E::log(line))
    }

    fn page_response(&mut self, unit_id: UnitId, rid: RequesterId, pasid: Option<u32>, group: u32, code: PageResponseCode) {
        let Some(unit) = self.units.get_mut(unit_id.0 as usize) else { return };
        let mut env = Env { dma: &mut self.dma, clock: &self.clock };
        unit.answer::<E>(&mut env, rid, pasid, group, code);
    }
}

/// What routing a unit's fault event needs: the requester of each stream, and which streams
/// are attached to nested domains (whose faults name their stage).
struct Route<'a> {
    unit: UnitId,
    requesters: &'a BTreeMap<u32, u32>,
    nested_streams: &'a BTreeSet<u32>,
}

impl Route<'_> {
    /// Hands the fault a burst of `count` events starting with `event` stands for to `sink`,
    /// or logs it when nothing can be routed.
    fn deliver_burst<E: Environment>(&self, event: DecodedEvent, count: u32, sink: &mut dyn FnMut(DrainedFault)) {
        let rid = self.requesters.get(&event.stream_id).copied();
        let (Some(address), Some(rid)) = (event.input_addr, rid) else {
            // Configuration errors (C_BAD_STREAMID, C_BAD_STE, ...) carry no address, or the
            // stream belongs to no enumerated function: nothing to route.
            E::log(format_args!("iommu-server: unit {}: {count} x {} from stream {:#x} (no client to tell)", self.unit.0, event.kind.name(), event.stream_id));
            return;
        };
        let nested = !self.nested_streams.is_empty() && self.nested_streams.contains(&event.stream_id);
        let stage = match (nested, event.stage2) {
            (false, _) => FaultStage::Unspecified,
            (true, false) => FaultStage::Stage1,
            (true, true) => FaultStage::Stage2,
        };
        let event_kind = event.kind;
        let event = FaultEvent {
            unit: self.unit,
            rid: RequesterId(rid),
            pasid: event.substream_id,
            iova: address,
            access: access_of(&event),
            reason: fault_reason(event.kind),
            group: 0,
            stage,
        };
        sink(DrainedFault { event, code: event_kind.id() });
    }
}

/// The object-model reason of an SMMU fault event.
fn fault_reason(kind: EventType) -> FaultReason {
    match kind {
        EventType::Permission => FaultReason::Permission,
        EventType::WalkExternalAbort | EventType::CdFetch | EventType::BadCd => FaultReason::TableWalk,
        _ => FaultReason::Translation,
    }
}

/// What the SMMUv3 specification calls a drained fault's code, for the server's log.
pub fn fault_name(fault: &DrainedFault) -> &'static str {
    match fault.event.reason {
        FaultReason::PageRequest => page_requests::request_name(fault.event.group),
        _ => EventType::from_id(fault.code).name(),
    }
}

fn access_of(event: &DecodedEvent) -> Access {
    match (event.read, event.instruction) {
        (_, Some(true)) => Access::EXEC,
        (Some(false), _) => Access::WRITE,
        _ => Access::READ,
    }
}

impl<E: Environment> SmmuBackend<E> {
    /// Reports and acknowledges the units' global errors (GERROR interrupt). A unit in service
    /// failure mode cannot be trusted to have invalidated anything: the server stops.
    pub fn check_global_errors(&mut self) {
        for (index, unit) in self.units.iter_mut().enumerate() {
            match unit.hw.check_gerror(&mut Env { dma: &mut self.dma, clock: &self.clock }) {
                Ok(report) => {
                    for name in report.active.names() {
                        E::log(format_args!("iommu-server: unit {index}: global error {name}"));
                    }
                    if let Some(rejected) = report.rejected_command {
                        E::log(format_args!("iommu-server: unit {index}: command dropped: {rejected:?}"));
                    }
                }
                Err(error) => panic!("FATAL: unit {index}: {error:?}; SMMU in service failure mode"),
            }
        }
    }
}

impl<E: Environment> DirectMapped for SmmuBackend<E> {
    fn direct_maps(&mut self) -> &mut DirectMaps {
        &mut self.direct
    }

    fn allocate_private(&mut self, unit: usize) -> Result<HwDomainId, Error> {
        let stage = self.units[unit].stage;
        self.allocate(unit, stage, false).map(|domain| domain.id)
    }

    fn point(&mut self, unit: usize, rid: u32, domain: HwDomainId) -> Result<(), Error> {
        let sid = *self.units[unit].streams.get(&rid).ok_or(Error::IncompatibleUnit)?;
        self.install(unit, sid, domain).map_err(hardware::<E>)
    }
}

impl<E: Environment> Measured for SmmuBackend<E> {
    fn describe(&self) -> Option<(&'static str, &'static str)> {
        self.units.first().map(|unit| ("smmuv3", unit.stage.name()))
    }

    fn invalidate_domain(&mut self, domain: HwDomainId) -> bool {
        let Some(d) = self.domains.get(domain) else { return false };
        let (unit, tag, stage1) = (d.unit, d.tag, matches!(d.table, Table::Stage1(_)));
        let (hw, dma) = (&mut self.units[unit].hw, &mut self.dma);
        let mut env = Env { dma, clock: &self.clock };
        let result = if stage1 { hw.tlbi_asid(&mut env, tag) } else { hw.tlbi_vmid(&mut env, tag) };
        result.is_ok()
    }
}
