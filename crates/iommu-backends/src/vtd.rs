//! `IommuBackend` for Intel VT-d: domains are `iommu-pt` page tables (second-level, or
//! first-level on units that only translate first-stage), attachments are `vtd` context or
//! PASID entries, and every unmap is followed by an IOTLB invalidation that is waited for.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use iommu_abi::{Access, Error, FaultReason, Invalidation, IovaRange, PageResponseCode, Perm, UnitCaps, UnitKind};
use iommu_core::{
    DomainConfig, DrainedFault, FaultEvent, HwDomain, HwDomainId, IommuBackend, MsiMessage, RequesterId, ReservedKind,
    ReservedRegion, Translation, UnitId, UnitInfo,
};
use iommu_pt::vtd_first_level::{FirstLevelConfig, VtdFirstLevel};
use iommu_pt::vtd_second_level::{SecondLevelConfig, VtdSecondLevel};
use iommu_pt::{Format, LargePages, PageTable, SplitPolicy, Unmapped};
use slot_table::SlotTable;
use vtd::irq::ApicMode;
use vtd::unit::RID_PASID;
use vtd::{AccessKind, DomainIdAllocator, FaultKind, Mode, VtdError, VtdUnit};

use crate::direct::{self, DirectMapped, DirectMaps};
use crate::{table_error, table_perm, unmap_failed, Environment, Measured};

mod dirty;
mod fault_stage;
mod page_requests;
mod sva;

/// Which table format a unit's domains use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableKind {
    /// Legacy-mode context entries with second-level tables.
    LegacySecondLevel,
    /// Scalable-mode PASID entries with second-level tables.
    ScalableSecondLevel,
    /// Scalable-mode PASID entries with first-level tables (units without second-level
    /// translation, e.g. QEMU's `x-flts=on`).
    ScalableFirstLevel,
}

impl TableKind {
    pub fn name(self) -> &'static str {
        match self {
            TableKind::LegacySecondLevel => "legacy second-level",
            TableKind::ScalableSecondLevel => "scalable second-level",
            TableKind::ScalableFirstLevel => "scalable first-level",
        }
    }
    /// The status-page code (see `status::UNIT0_MODE`).
    pub fn code(self) -> u64 {
        match self {
            TableKind::LegacySecondLevel => 1,
            TableKind::ScalableSecondLevel => 2,
            TableKind::ScalableFirstLevel => 3,
        }
    }
}

/// One remapping unit under the server's control.
pub struct Unit<E: Environment> {
    pub hw: VtdUnit<E::Registers, E::Clock>,
    pub kind: TableKind,
    domain_ids: DomainIdAllocator,
    /// Second-level configuration (levels and widths) chosen from CAP.
    second_level: SecondLevelConfig,
    /// DMA physical address width from DMAR (bounds every output address).
    output_bits: u8,
    /// RMRR ranges per requester ID (inclusive).
    pub rmrrs: BTreeMap<u16, Vec<(u64, u64)>>,
    /// Interrupt remapping entries in use, one bit per IRTE.
    irtes_in_use: [u64; IRTE_WORDS],
    /// Page request groups delivered and not yet answered.
    outstanding_groups: page_requests::OutstandingGroups,
    /// What the object model is told the unit offers (fixed at bring-up).
    caps: UnitCaps,
    /// Slots attached to nested domains, whose faults name their stage.
    nested_attachments: fault_stage::NestedAttachments,
}

const IRTE_WORDS: usize = (1 << IRTE_TABLE_LOG2) / 64;

/// Where a block of a device's MSIs is routed: IRTEs `first..first + count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct MsiRoute {
    first: u16,
    count: u16,
}

enum Table {
    SecondLevel(PageTable<VtdSecondLevel>),
    FirstLevel(PageTable<VtdFirstLevel>),
    /// The client's first-level table at the guest-physical `root` (an IOVA of `parent`),
    /// walked through the second-level tables of `parent` (PGTT 011b).
    Nested { parent: HwDomainId, root: u64, five_level: bool },
}

struct Domain {
    unit: usize,
    did: u16,
    table: Table,
    /// A second-level domain's nested children's domain-ids: their IOTLB entries combine its
    /// translations with theirs, so its unmaps invalidate them too.
    nested_dids: Vec<u16>,
}

/// The VT-d backend: every unit and every domain, and the DMA memory their tables live in.
pub struct VtdBackend<E: Environment> {
    pub units: Vec<Unit<E>>,
    domains: SlotTable<HwDomainId, Domain>,
    pub dma: E::Dma,
    /// Routed MSIs by (unit, requester ID).
    msi_routes: BTreeMap<(UnitId, RequesterId), MsiRoute>,
    /// Process address spaces bound with SVA, by where they are bound.
    sva: BTreeMap<sva::BindingKey, sva::Binding>,
    /// Devices with RMRRs and the identity maps each domain holds for them.
    direct: DirectMaps,
}

/// log2 of the interrupt remapping table's entries: 256 IRTEs, one page.
const IRTE_TABLE_LOG2: u8 = 8;

/// The MSI doorbell range: DMA writes there are interrupt requests, never memory.
const MSI_WINDOW: (u64, u64) = (0xFEE0_0000, 0xFEEF_FFFF);

fn hardware<E: Environment>(error: VtdError) -> Error {
    E::log(format_args!("iommu-server: VT-d operation failed: {error:?}"));
    match error {
        VtdError::OutOfMemory | VtdError::DomainIdsExhausted => Error::NoResources,
        VtdError::Unsupported(_) => Error::NotSupported,
        _ => Error::HardwareFailure,
    }
}

impl<E: Environment> Unit<E> {
    /// Brings a unit up in the mode its ECAP calls for, every requester blocked.
    pub fn bring_up(regs: E::Registers, clock: E::Clock, output_bits: u8, dma: &mut E::Dma) -> Result<Self, VtdError> {
        let mut hw = VtdUnit::new(regs, clock);
        let (cap, ecap) = (hw.capability(), hw.extended_capability());
        let mode = hw.preferred_mode();
        let kind = match mode {
            Mode::Legacy => TableKind::LegacySecondLevel,
            Mode::Scalable if ecap.second_level() => TableKind::ScalableSecondLevel,
            Mode::Scalable if ecap.first_level() => TableKind::ScalableFirstLevel,
            Mode::Scalable => return Err(VtdError::Unsupported("scalable unit without first- or second-level translation")),
        };
        // The deepest second-level table the unit walks, at most 4 levels (48 bits).
        let levels = [4u8, 3].into_iter().find(|&l| cap.supports_second_level_levels(l)).ok_or(VtdError::Unsupported("no 3- or 4-level SAGAW"))?;
        let address_width = (12 + 9 * levels).min(cap.max_guest_address_width() as u8);
        let second_level = SecondLevelConfig {
            levels,
            address_width,
            output_bits,
            large_pages: LargePages { two_mib: cap.second_level_2m(), one_gib: cap.second_level_2m() && cap.second_level_1g() },
            execute_requests: false,
            snoop: false,
            dirty_tracking: false,
        };
        hw.init(mode, dma)?;
        // Interrupt remapping from the start: every MSI a device writes (and any DMA write to
        // the interrupt window) is looked up in a table of not-present entries, so no device
        // raises an interrupt until the server writes an IRTE for it. The unit's own fault
        // event is not a device write and is not remapped.
        hw.enable_interrupt_remapping(IRTE_TABLE_LOG2, ApicMode::XApic, dma)?;
        let mut unit = Unit {
            hw,
            kind,
            domain_ids: DomainIdAllocator::new(cap),
            second_level,
            output_bits,
            rmrrs: BTreeMap::new(),
            irtes_in_use: [0; IRTE_WORDS],
            outstanding_groups: Default::default(),
            nested_attachments: Default::default(),
            caps: UnitCaps::empty(),
        };
        unit.enable_page_requests(dma)?;
        if unit.hw.page_requests_enabled() {
            unit.caps = unit.caps.union(UnitCaps::PAGE_REQUESTS);
        }
        if unit.tracks_dirty() {
            unit.caps = unit.caps.union(UnitCaps::DIRTY_TRACKING);
        }
        Ok(unit)
    }

    /// Whether the unit's walks record writes in its domains' tables: first-level walks always
    /// set D; second-level ones only with ECAP.SSADS (QEMU has none).
    fn tracks_dirty(&self) -> bool {
        match self.kind {
            TableKind::ScalableFirstLevel => true,
            TableKind::ScalableSecondLevel => self.hw.extended_capability().second_level_dirty(),
            TableKind::LegacySecondLevel => false,
        }
    }

    fn irte_in_use(&self, index: usize) -> bool {
        self.irtes_in_use[index / 64] >> (index % 64) & 1 != 0
    }

    fn mark_irtes(&mut self, first: usize, count: usize, used: bool) {
        for index in first..first + count {
            let bit = 1u64 << (index % 64);
            if used {
                self.irtes_in_use[index / 64] |= bit;
            } else {
                self.irtes_in_use[index / 64] &= !bit;
            }
        }
    }

    /// A free block of `count` IRTEs aligned to its size (a multiple-message MSI adds the
    /// message number to the first handle).
    fn free_irte_block(&self, count: usize) -> Option<usize> {
        (0..1 << IRTE_TABLE_LOG2).step_by(count).find(|&first| (first..first + count).all(|index| !self.irte_in_use(index)))
    }
}

impl<E: Environment> VtdBackend<E> {
    pub fn new(dma: E::Dma) -> Self {
        VtdBackend { units: Vec::new(), domains: SlotTable::new(), dma, msi_routes: BTreeMap::new(), sva: BTreeMap::new(), direct: DirectMaps::default() }
    }

    /// How many units the backend drives (`UnitId`s `0..unit_count()`).
    pub fn unit_count(&self) -> usize {
        self.units.len()
    }

    fn unit(&self, unit: UnitId) -> Option<&Unit<E>> {
        self.units.get(unit.0 as usize)
    }

    /// Gives every device with RMRRs (`Unit::rmrrs`) its private domain mapping them at their
    /// own address and attaches it there (`direct`): from now on its RMRRs are mapped in every
    /// domain it is attached to. Called once, after bring-up, before any client exists.
    pub fn install_direct_maps(&mut self) -> Result<(), Error> {
        for unit in 0..self.units.len() {
            let devices: Vec<(u16, Vec<(u64, u64)>)> = self.units[unit].rmrrs.iter().map(|(&rid, ranges)| (rid, ranges.clone())).collect();
            for (rid, ranges) in devices {
                direct::add_device(self, unit, u32::from(rid), &ranges)?;
            }
        }
        Ok(())
    }

    /// The translation a requester attached to `domain` is given.
    fn translation(&self, domain: &Domain) -> vtd::Translation {
        match &domain.table {
            Table::SecondLevel(table) if table.format().dirty_scheme().is_some() => {
                vtd::Translation::SecondLevelTracked { root: table.root_phys(), levels: table.levels() }
            }
            Table::SecondLevel(table) => vtd::Translation::SecondLevel { root: table.root_phys(), levels: table.levels() },
            Table::FirstLevel(table) => vtd::Translation::FirstLevel { root: table.root_phys(), five_level: table.levels() == 5 },
            Table::Nested { parent, root, five_level } => {
                let Some(Domain { table: Table::SecondLevel(parent), .. }) = self.domains.get(*parent) else {
                    unreachable!("a nested domain's parent outlives it and is a second-level domain")
                };
                vtd::Translation::Nested { first_level_root: *root, five_level: *five_level, second_level_root: parent.root_phys(), second_level_levels: parent.levels() }
            }
        }
    }

    /// A nested domain on `unit`: the client's first-level table at the guest-physical `root`
    /// over the second-level domain `parent`, with a domain-id of its own (its first-level
    /// entries are tagged with it, so no other domain's invalidations or entries meet them).
    fn allocate_nested(&mut self, unit_index: usize, parent: HwDomainId, root: u64, five_level: bool) -> Result<HwDomain, Error> {
        let parent_domain = self.domains.get(parent).ok_or(Error::NotNestParent)?;
        if !matches!(parent_domain.table, Table::SecondLevel(_)) {
            return Err(Error::NotNestParent);
        }
        if parent_domain.unit != unit_index {
            return Err(Error::IncompatibleUnit);
        }
        if self.domains.next_key().is_none() {
            return Err(Error::NoResources);
        }
        let did = self.units[unit_index].domain_ids.allocate().map_err(hardware::<E>)?;
        let table = Table::Nested { parent, root, five_level };
        let id = self.domains.insert(Domain { unit: unit_index, did, table, nested_dids: Vec::new() }).expect("a slot was free");
        self.domains.get_mut(parent).expect("looked up above").nested_dids.push(did);
        let input_bits = if five_level { 56 } else { 47 };
        Ok(HwDomain { id, aperture: IovaRange { start: 0, last: (1u64 << input_bits) - 1 }, page_sizes: (1 << 12) | (1 << 21) })
    }

    /// Invalidates what `d` may have cached, for `range` (iova, length) or all of it, with
    /// the invalidation its table format calls for, and waits for it.
    fn invalidate(unit: &mut Unit<E>, d: &Domain, range: Option<(u64, u64)>, dma: &E::Dma) -> Result<(), VtdError> {
        match (&d.table, range) {
            (Table::SecondLevel(_), Some((iova, length))) => unit.hw.flush_iotlb_range(d.did, iova, length, dma),
            (Table::SecondLevel(_), None) => unit.hw.flush_domain(d.did, dma),
            (Table::FirstLevel(_) | Table::Nested { .. }, _) => unit.hw.flush_first_level(d.did, range, dma),
        }?;
        if d.nested_dids.is_empty() {
            return Ok(());
        }
        Self::invalidate_nested(unit, &d.nested_dids, dma)
    }

    /// Nested children cache combined translations tagged with their own domain-ids and
    /// PASIDs; which of their IOVAs went through the changed IPAs is unknown: all of them.
    /// Out of line: most domains have no nested child.
    #[cold]
    #[inline(never)]
    fn invalidate_nested(unit: &mut Unit<E>, dids: &[u16], dma: &E::Dma) -> Result<(), VtdError> {
        for &did in dids {
            unit.hw.flush_first_level(did, None, dma)?;
        }
        Ok(())
    }

    /// Invalidates what an unmap changed and hands the unlinked tables back to the domain's
    /// table tree once no walker can hold them any more.
    fn complete_unmap(unit: &mut Unit<E>, d: &mut Domain, id: HwDomainId, unmapped: Unmapped, dma: &mut E::Dma) {
        if let Some(range) = unmapped.range.clone() {
            if let Err(error) = Self::invalidate(unit, d, Some((range.start, range.end - range.start)), dma) {
                Self::fail_closed(id, error);
            }
        }
        match &mut d.table {
            Table::SecondLevel(table) => table.recycle(unmapped.freed_tables, dma),
            Table::FirstLevel(table) => table.recycle(unmapped.freed_tables, dma),
            Table::Nested { .. } => unreachable!("nothing is mapped in a nested domain"),
        }
    }

    /// A failed invalidation leaves translations in the IOTLB that the object model is about
    /// to unpin: nothing safe can follow, so the server stops rather than hand the pages back.
    /// (Its exit releases its pins in the kernel too; the root task must then reset the unit,
    /// as the kernel tests do. docs/iommu-server.md lists this as an open problem.)
    #[cold]
    #[inline(never)]
    fn fail_closed(domain: HwDomainId, error: VtdError) -> ! {
        panic!("FATAL: IOTLB invalidation for domain {} failed ({error:?}); refusing to release memory a device may still reach", domain.0);
    }
}

impl<E: Environment> IommuBackend for VtdBackend<E> {
    fn unit_info(&self, unit: UnitId) -> Option<UnitInfo> {
        self.unit(unit).map(|unit| {
            let scalable = unit.hw.mode() == Some(vtd::Mode::Scalable);
            let ecap = unit.hw.extended_capability();
            let mut caps = unit.caps;
            // SVA depends on the mode the unit was brought up in (scalable, first-level tables).
            if unit.walks_process_tables() {
                caps |= UnitCaps::SVA;
            }
            // Tagged PASIDs need ECAP.PASID; RID_PASID is the untagged slot.
            if scalable && ecap.pasid() {
                caps |= UnitCaps::PASID;
            }
            // Nesting: first-level over second-level tables (QEMU 10.0.2 has no ECAP.NEST).
            if scalable && ecap.nested() && ecap.first_level() && ecap.second_level() {
                caps |= UnitCaps::NESTING;
            }
            UnitInfo { kind: UnitKind::IntelVtd, caps }
        })
    }

    fn reserved_regions(&self, unit: UnitId, rid: RequesterId) -> Vec<ReservedRegion> {
        let mut regions = Vec::from([ReservedRegion {
            range: IovaRange { start: MSI_WINDOW.0, last: MSI_WINDOW.1 },
            kind: ReservedKind::Msi,
        }]);
        if let Some(unit) = self.unit(unit) {
            for &(start, last) in unit.rmrrs.get(&(rid.0 as u16)).into_iter().flatten() {
                regions.push(ReservedRegion { range: IovaRange { start, last }, kind: ReservedKind::Direct });
            }
        }
        regions
    }

    fn domain_alloc(&mut self, unit_id: UnitId, config: &DomainConfig) -> Result<HwDomain, Error> {
        let unit_index = unit_id.0 as usize;
        let nesting = self.unit_info(unit_id).is_some_and(|info| info.caps.contains(UnitCaps::NESTING));
        let (kind, dirty_tracking) = match *config {
            DomainConfig::Paging { nest_parent: false, dirty_tracking } => (self.units.get(unit_index).ok_or(Error::NoResources)?.kind, dirty_tracking),
            // A nest parent is a second-level domain whatever the unit's plain domains are.
            DomainConfig::Paging { nest_parent: true, dirty_tracking: false } if nesting => (TableKind::ScalableSecondLevel, false),
            DomainConfig::Nested { parent, stage1 } if nesting && stage1.format == iommu_abi::Stage1Format::VtdFirstLevel => {
                return self.allocate_nested(unit_index, parent, stage1.table_root, stage1.address_width == 57);
            }
            _ => return Err(Error::NotSupported),
        };
        let unit = self.units.get_mut(unit_index).ok_or(Error::NoResources)?;
        if dirty_tracking && !unit.tracks_dirty() {
            return Err(Error::NotSupported);
        }
        if self.domains.next_key().is_none() {
            return Err(Error::NoResources);
        }
        let did = unit.domain_ids.allocate().map_err(hardware::<E>)?;
        let (table, aperture_bits, page_sizes) = match kind {
            TableKind::LegacySecondLevel | TableKind::ScalableSecondLevel => {
                let config = SecondLevelConfig { dirty_tracking, ..unit.second_level };
                let format = VtdSecondLevel::new(config).map_err(table_error);
                let table = format.and_then(|f| PageTable::new(&mut self.dma, f).map_err(table_error));
                let mut sizes = 1 << 12;
                if config.large_pages.two_mib {
                    sizes |= 1 << 21;
                }
                if config.large_pages.one_gib {
                    sizes |= 1 << 30;
                }
                (table.map(Table::SecondLevel), config.address_width, sizes)
            }
            TableKind::ScalableFirstLevel => {
                let one_gib = unit.hw.capability().first_level_1g();
                let config = FirstLevelConfig { levels: 4, output_bits: unit.output_bits, one_gib_pages: one_gib, execute_requests: false, dirty_tracking };
                let format = VtdFirstLevel::new(config).map_err(table_error);
                let table = format.and_then(|f| PageTable::new(&mut self.dma, f).map_err(table_error));
                let sizes = (1 << 12) | (1 << 21) | if one_gib { 1 << 30 } else { 0 };
                // Lower canonical half of 4-level paging.
                (table.map(Table::FirstLevel), 47, sizes)
            }
        };
        let table = match table {
            Ok(table) => table,
            Err(error) => {
                let _ = self.units[unit_index].domain_ids.free(did);
                return Err(error);
            }
        };
        let id = self.domains.insert(Domain { unit: unit_index, did, table, nested_dids: Vec::new() }).expect("a slot was free");
        let aperture = IovaRange { start: 0, last: (1u64 << aperture_bits) - 1 };
        Ok(HwDomain { id, aperture, page_sizes })
    }

    fn domain_free(&mut self, domain: HwDomainId) {
        let Some(d) = self.domains.remove(domain) else { return };
        // Nothing is mapped or attached (the contract), but the domain-id may still tag
        // cached paging-structure entries: forget them before the id or the tables are reused.
        let unit = &mut self.units[d.unit];
        if let Err(error) = Self::invalidate(unit, &d, None, &self.dma) {
            panic!("FATAL: flush of freed domain {} failed ({error:?}); refusing to reuse table memory", domain.0);
        }
        let _ = unit.domain_ids.free(d.did);
        match d.table {
            Table::SecondLevel(table) => table.destroy(&mut self.dma),
            Table::FirstLevel(table) => table.destroy(&mut self.dma),
            Table::Nested { parent, .. } => {
                if let Some(parent) = self.domains.get_mut(parent) {
                    parent.nested_dids.retain(|&did| did != d.did);
                }
            }
        }
    }

    fn map(&mut self, domain: HwDomainId, iova: u64, phys: u64, length: u64, perm: Perm) -> Result<(), Error> {
        let VtdBackend { units, domains, dma, .. } = self;
        let d = domains.get_mut(domain).ok_or(Error::HardwareFailure)?;
        let unit = &mut units[d.unit];
        let in_the_way = match &mut d.table {
            Table::SecondLevel(table) => table.prepare_map(iova, phys, length, dma),
            Table::FirstLevel(table) => table.prepare_map(iova, phys, length, dma),
            // The object model maps into the parent: a nested domain's first level is the client's.
            Table::Nested { .. } => return Err(Error::NotSupported),
        };
        if let Some(unlinked) = in_the_way {
            Self::complete_unmap(unit, d, domain, unlinked, dma);
        }
        let result = match &mut d.table {
            Table::SecondLevel(table) => table.map(iova, phys, length, table_perm(perm), dma),
            Table::FirstLevel(table) => table.map(iova, phys, length, table_perm(perm), dma),
            Table::Nested { .. } => unreachable!("refused above"),
        };
        result.map_err(table_error)?;
        // Caching mode: the unit may have cached the old not-present entries.
        if unit.hw.caching_mode() {
            if let Err(error) = Self::invalidate(unit, d, Some((iova, length)), dma) {
                Self::fail_closed(domain, error);
            }
        }
        Ok(())
    }

    fn unmap(&mut self, domain: HwDomainId, iova: u64, length: u64) {
        let VtdBackend { units, domains, dma, .. } = self;
        let Some(d) = domains.get_mut(domain) else { return };
        let result = match &mut d.table {
            Table::SecondLevel(table) => table.unmap(iova, length, SplitPolicy::Split, dma),
            Table::FirstLevel(table) => table.unmap(iova, length, SplitPolicy::Split, dma),
            Table::Nested { .. } => return,
        };
        let unmapped = result.unwrap_or_else(|error| unmap_failed(iova, length, error));
        Self::complete_unmap(&mut units[d.unit], d, domain, unmapped, dma);
    }

    fn attach(&mut self, unit: UnitId, rid: RequesterId, pasid: Option<u32>, translation: Translation) -> Result<(), Error> {
        match translation {
            Translation::ProcessAddressSpace(space) => self.bind_address_space(unit, rid, pasid, space),
            Translation::Domain(_) => self.replace(unit, rid, pasid, translation),
        }
    }

    fn replace(&mut self, unit_id: UnitId, rid: RequesterId, pasid: Option<u32>, translation: Translation) -> Result<(), Error> {
        let Translation::Domain(domain) = translation else { return Err(Error::NotSupported) };
        let d = self.domains.get(domain).ok_or(Error::HardwareFailure)?;
        if d.unit != unit_id.0 as usize {
            return Err(Error::IncompatibleUnit);
        }
        let nested = matches!(d.table, Table::Nested { .. });
        match pasid {
            // A device with RMRRs takes its identity maps along (`direct`).
            None => direct::switch(self, unit_id.0 as usize, rid.0, domain)?,
            Some(pasid) => {
                let (translation, did) = (self.translation(d), d.did);
                let unit = &mut self.units[d.unit];
                // A present PASID entry is replaced by clearing it, invalidating the PASID
                // cache, the (PASID-)IOTLB of the old domain and the device-TLB, then writing
                // the new one (the `vtd` crate's "blocked, never wrong" order).
                unit.hw.attach_pasid(vtd::RequesterId(rid.0 as u16), pasid, did, translation, &mut self.dma).map_err(hardware::<E>)?;
            }
        }
        self.units[unit_id.0 as usize].nested_attachments.set(rid.0 as u16, pasid, nested);
        Ok(())
    }

    /// One IRTE per vector on the boot CPU (APIC 0), each accepting the interrupt only from
    /// `rid` (SVT=01, SQ=00: all 16 bits compared), in a block aligned to its size.
    fn route_msis(&mut self, unit_id: UnitId, rid: RequesterId, vectors: &[u8]) -> Result<MsiMessage, Error> {
        if self.msi_routes.contains_key(&(unit_id, rid)) {
            return Err(Error::Busy);
        }
        let unit = self.units.get_mut(unit_id.0 as usize).ok_or(Error::NoResources)?;
        let first = unit.free_irte_block(vectors.len()).ok_or(Error::NoResources)?;
        let source = vtd::RequesterId(rid.0 as u16);
        let mut msi = None;
        for (offset, &vector) in vectors.iter().enumerate() {
            match unit.hw.program_irte((first + offset) as u16, vector, 0, source, &mut self.dma) {
                Ok(programmed) => msi = msi.or(Some(programmed)),
                Err(error) => {
                    for done in first..first + offset {
                        let _ = unit.hw.clear_irte(done as u16, &mut self.dma);
                    }
                    return Err(hardware::<E>(error));
                }
            }
        }
        let msi = msi.ok_or(Error::InvalidRange)?;
        let msi = if vectors.len() > 1 { msi.with_subhandles() } else { msi };
        unit.mark_irtes(first, vectors.len(), true);
        self.msi_routes.insert((unit_id, rid), MsiRoute { first: first as u16, count: vectors.len() as u16 });
        E::log(format_args!("iommu-server: device {:#06x}: {} MSI(s) through IRTE {first}.. (vectors {vectors:x?}), address {:#x}", rid.0, vectors.len(), msi.address));
        Ok(MsiMessage { address: msi.address, data: msi.data })
    }

    fn msis_routed(&self, unit: UnitId, rid: RequesterId) -> bool {
        self.msi_routes.contains_key(&(unit, rid))
    }

    /// Clears the route's IRTEs, each followed by its interrupt-entry-cache invalidation:
    /// once this returns, the device's MSIs fault (22h) instead of reaching a CPU.
    fn release_msis(&mut self, unit_id: UnitId, rid: RequesterId) {
        let Some(route) = self.msi_routes.remove(&(unit_id, rid)) else { return };
        let Some(unit) = self.units.get_mut(unit_id.0 as usize) else { return };
        for index in route.first..route.first + route.count {
            if let Err(error) = unit.hw.clear_irte(index, &mut self.dma) {
                panic!("FATAL: clearing IRTE {index} failed ({error:?}); a released device could still raise its interrupts");
            }
        }
        unit.mark_irtes(route.first as usize, route.count as usize, false);
        E::log(format_args!("iommu-server: device {:#06x} unbound: IRTE {}.. cleared", rid.0, route.first));
    }

    fn block(&mut self, unit_id: UnitId, rid: RequesterId, pasid: Option<u32>) {
        if self.unbind_address_space(unit_id, rid, pasid) {
            return;
        }
        // A device with RMRRs is blocked in its private domain, which keeps them mapped.
        if pasid.is_none() && direct::block(self, unit_id.0 as usize, rid.0) {
            return;
        }
        let Some(unit) = self.units.get_mut(unit_id.0 as usize) else { return };
        let requester = vtd::RequesterId(rid.0 as u16);
        let detached = match pasid {
            None => unit.hw.detach(requester, &mut self.dma),
            Some(pasid) => unit.hw.detach_pasid(requester, pasid, &mut self.dma),
        };
        unit.nested_attachments.set(requester.0, pasid, false);
        match detached {
            Ok(()) | Err(VtdError::NotAttached) => {}
            Err(error) => panic!("FATAL: blocking {:#06x} failed ({error:?}); the device may still reach released memory", rid.0),
        }
    }

    fn invalidate_address_space(&mut self, unit: UnitId, rid: RequesterId, pasid: Option<u32>, iova: u64, length: u64) {
        self.invalidate_binding(unit, rid, pasid, iova, length);
    }

    fn set_dirty_tracking(&mut self, domain: HwDomainId, enable: bool) -> Result<(), Error> {
        self.switch_dirty_tracking(domain, enable)
    }

    fn read_and_clear_dirty(&mut self, domain: HwDomainId, range: IovaRange, page_size: u64, clear: bool, bitmap: &mut [u64]) -> Result<(), Error> {
        self.read_dirty(domain, range, page_size, clear, bitmap)
    }

    /// VT-d has no ASIDs: stage-1 entries are tagged by (domain-id, PASID), so an entry must
    /// name ASID 0 and is carried out for every PASID the nested domain is attached at. The
    /// PASID entry (the CD's counterpart) is the server's: there is no cache of the client's.
    fn invalidate_stage1(&mut self, domain: HwDomainId, entry: Invalidation) -> Result<(), Error> {
        let d = self.domains.get(domain).ok_or(Error::NotSupported)?;
        let Table::Nested { .. } = d.table else { return Err(Error::NotSupported) };
        let range = match entry {
            Invalidation::Stage1Asid { asid: 0 } => None,
            Invalidation::Stage1Range { asid: 0, va, pages, .. } => Some((va, u64::from(pages) * iommu_abi::PAGE_SIZE)),
            _ => return Err(Error::InvalidRange),
        };
        let unit = &mut self.units[d.unit];
        unit.hw.flush_first_level(d.did, range, &self.dma).map_err(hardware::<E>)
    }

    fn drain_faults(&mut self, unit_id: UnitId, sink: &mut dyn FnMut(DrainedFault)) -> usize {
        let Some(unit) = self.units.get_mut(unit_id.0 as usize) else { return 0 };
        let mut reported = 0;
        let nested_attachments = &unit.nested_attachments;
        let overflowed = unit.hw.drain_faults_each(|fault| {
            reported += 1;
            // An interrupt request is a write; its record names the interrupt index it asked
            // for (bits 63:48) where a DMA fault names the page.
            let (access, address, reason) = match fault.kind {
                FaultKind::Dma => {
                    let access = match fault.access {
                        AccessKind::Read => Access::READ,
                        AccessKind::Write => Access::WRITE,
                    };
                    (access, fault.address, fault_reason(fault.reason))
                }
                FaultKind::InterruptRemap { index } => (Access::WRITE, u64::from(index), FaultReason::Interrupt),
            };
            // Scalable mode tags DMA without PASID with RID_PASID in the record; to the object
            // model that is the requester's own (PASID-less) slot.
            let pasid = fault.pasid.filter(|&pasid| pasid != RID_PASID);
            let event = FaultEvent {
                unit: unit_id,
                rid: RequesterId(u32::from(fault.requester.0)),
                pasid,
                iova: address,
                access,
                reason,
                group: 0,
                stage: nested_attachments.stage(fault.requester.0, pasid, fault.reason),
            };
            sink(DrainedFault { event, code: fault.reason });
        });
        if overflowed {
            E::log(format_args!("iommu-server: unit {}: fault records overflowed, faults were lost", unit_id.0));
        }
        // Most units have no page request queue: their fault path does not even look.
        if unit.hw.page_requests_enabled() {
            reported + unit.drain_page_requests(unit_id, sink)
        } else {
            reported
        }
    }

    fn page_response(&mut self, unit_id: UnitId, rid: RequesterId, pasid: Option<u32>, group: u32, code: PageResponseCode) {
        let Some(unit) = self.units.get_mut(unit_id.0 as usize) else { return };
        unit.respond(rid, pasid, group, code, &self.dma);
    }
}

/// The object-model reason of a VT-d fault reason code. A missing leaf is reported with the
/// read/write permission codes (5h, 6h; and the first-level equivalents), since no present
/// entry grants the access: to a driver that is a translation fault (it unmapped, or never
/// mapped, the address); missing root/context entries only occur for unbound devices, whose
/// faults are unrouted anyway. Invalid table pointers and reserved bits (7h-Dh) are
/// table-walk faults. First-level walks tell a write to a present read-only leaf (85h) from a
/// missing leaf (71h): that is a permission fault, also where no IOAS knows the mapping (a
/// process's own tables, SVA).
fn fault_reason(code: u8) -> FaultReason {
    match code {
        0x07..=0x0d => FaultReason::TableWalk,
        0x85 => FaultReason::Permission,
        _ => FaultReason::Translation,
    }
}

impl<E: Environment> DirectMapped for VtdBackend<E> {
    fn direct_maps(&mut self) -> &mut DirectMaps {
        &mut self.direct
    }

    fn allocate_private(&mut self, unit: usize) -> Result<HwDomainId, Error> {
        self.domain_alloc(UnitId(unit as u32), &DomainConfig::Paging { nest_parent: false, dirty_tracking: false }).map(|domain| domain.id)
    }

    fn point(&mut self, unit: usize, rid: u32, domain: HwDomainId) -> Result<(), Error> {
        let d = self.domains.get(domain).ok_or(Error::HardwareFailure)?;
        let (translation, did) = (self.translation(d), d.did);
        // A present context (or RID_PASID) entry is replaced in the `vtd` crate's "blocked,
        // never wrong" order.
        self.units[unit].hw.attach(vtd::RequesterId(rid as u16), did, translation, &mut self.dma).map_err(hardware::<E>)
    }
}

/// What the VT-d specification calls a drained fault's code, for the server's log.
pub fn fault_name(fault: &DrainedFault) -> &'static str {
    match fault.event.reason {
        FaultReason::PageRequest => "page request",
        _ => vtd::fault::fault_reason_name(fault.code),
    }
}

impl<E: Environment> Measured for VtdBackend<E> {
    fn describe(&self) -> Option<(&'static str, &'static str)> {
        self.units.first().map(|unit| ("vtd", unit.kind.name()))
    }

    fn invalidate_domain(&mut self, domain: HwDomainId) -> bool {
        let Some(d) = self.domains.get(domain) else { return false };
        Self::invalidate(&mut self.units[d.unit], d, None, &self.dma).is_ok()
    }
}
