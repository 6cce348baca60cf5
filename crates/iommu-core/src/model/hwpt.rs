//! HWPT: paging domains mirroring an IOAS, nested stage-1 domains over a paging parent, and
//! dirty tracking.

use alloc::vec;
use alloc::vec::Vec;
use iommu_abi::{Error, Handle, Invalidation, IovaRange, Rights, Stage1Config, UnitCaps, INVALIDATIONS_PER_CALL, PAGE_SIZE};
use crate::budget::{self};
use crate::backend::{DomainConfig, IommuBackend, UnitId};
use crate::memory::MemorySource;
use crate::objects::{Area, Body, Hwpt, HwptParent, ObjectId, ObjectKind};
use crate::ClientId;

use super::ObjectModel;
use super::ioas::{map_segments, Segment};

/// Largest dirty bitmap one query may produce, in pages (a 2 MiB bitmap).
pub const MAX_DIRTY_BITMAP_PAGES: u64 = 1 << 24;

/// Options of a paging HWPT.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HwptAllocOptions {
    /// May be the stage-2 parent of nested HWPTs.
    pub nest_parent: bool,
    /// Supports dirty tracking.
    pub dirty_tracking: bool,
    /// Fault queue for faults of devices attached to it.
    pub fault: Option<Handle>,
}

impl<B: IommuBackend, M: MemorySource> ObjectModel<B, M> {
    pub(super) fn unit_caps(&self, unit: UnitId) -> UnitCaps {
        self.backend.unit_info(unit).map_or(UnitCaps::default(), |info| info.caps)
    }

    /// Allocate a paging HWPT on `device`'s unit mirroring `ioas`: every existing mapping
    /// is mapped into it before it is returned. Needs ATTACH on the device, the IOAS and
    /// the fault queue.
    pub fn hwpt_alloc(&mut self, client: ClientId, device: Handle, ioas: Handle, options: HwptAllocOptions) -> Result<Handle, Error> {
        let device = self.resolve(client, device, ObjectKind::Device, Rights::ATTACH)?;
        let ioas = self.resolve(client, ioas, ObjectKind::Ioas, Rights::ATTACH)?;
        let fault = self.resolve_optional(client, options.fault, ObjectKind::Fault, Rights::ATTACH)?;
        let unit = self.device(device).unit;
        let caps = self.unit_caps(unit);
        // A fault queue is allowed on every unit: it receives the unrecoverable faults of the
        // attached devices everywhere, and page requests only where the unit has them.
        if (options.nest_parent && !caps.contains(UnitCaps::NESTING))
            || (options.dirty_tracking && !caps.contains(UnitCaps::DIRTY_TRACKING))
        {
            return Err(Error::NotSupported);
        }
        self.charge_new_object(client, budget::HWPT)?;
        let config = DomainConfig::Paging { nest_parent: options.nest_parent, dirty_tracking: options.dirty_tracking };
        let domain = match self.backend.domain_alloc(unit, &config) {
            Ok(domain) => domain,
            Err(error) => {
                self.refund_new_object(client, budget::HWPT);
                return Err(error);
            }
        };
        let areas: Vec<Area> = self.ioas(ioas).areas.values().copied().collect();
        if areas.iter().any(|area| !domain.aperture.contains_range(&area.range)) {
            self.backend.domain_free(domain.id);
            self.refund_new_object(client, budget::HWPT);
            return Err(Error::ReservedConflict);
        }
        let frame_lists: Vec<Vec<u64>> = areas.iter().map(|area| self.pins.frames(area.object, area.offset, area.length())).collect();
        let segments: Vec<Segment> = areas
            .iter()
            .zip(&frame_lists)
            .map(|(area, frames)| Segment { iova: area.range.start, frames, perm: area.perm })
            .collect();
        if let Err(error) = map_segments(&mut self.backend, &[domain.id], &segments) {
            self.backend.domain_free(domain.id);
            self.refund_new_object(client, budget::HWPT);
            return Err(error);
        }
        let hwpt = Hwpt {
            unit,
            domain,
            parent: HwptParent::Ioas(ioas),
            fault,
            nest_parent: options.nest_parent,
            dirty_capable: options.dirty_tracking,
            dirty_enabled: false,
        };
        Ok(self.create(client, Body::Hwpt(hwpt)))
    }

    /// Allocate a nested HWPT: the user's stage-1 table over the stage-2 `parent` (a
    /// paging HWPT allocated with `nest_parent`). Needs ATTACH on the device, the parent
    /// and the fault queue.
    pub fn hwpt_alloc_nested(
        &mut self,
        client: ClientId,
        device: Handle,
        parent: Handle,
        stage1: Stage1Config,
        fault: Option<Handle>,
    ) -> Result<Handle, Error> {
        let device = self.resolve(client, device, ObjectKind::Device, Rights::ATTACH)?;
        let parent = self.resolve(client, parent, ObjectKind::Hwpt, Rights::ATTACH)?;
        let fault = self.resolve_optional(client, fault, ObjectKind::Fault, Rights::ATTACH)?;
        let unit = self.device(device).unit;
        let parent_hwpt = self.hwpt(parent);
        if !parent_hwpt.nest_parent || !matches!(parent_hwpt.parent, HwptParent::Ioas(_)) {
            return Err(Error::NotNestParent);
        }
        if parent_hwpt.unit != unit {
            return Err(Error::IncompatibleUnit);
        }
        stage1.validate()?;
        let info = self.backend.unit_info(unit).ok_or(Error::NotSupported)?;
        if !info.caps.contains(UnitCaps::NESTING) || stage1.format.unit_kind() != info.kind {
            return Err(Error::NotSupported);
        }
        // The unit fetches the stage-1 root through the parent's stage 2: a root the parent
        // does not map could only fault, so it is refused here. (Unmapping it later is
        // contained the same way: the fetch faults at stage 2.)
        let HwptParent::Ioas(parent_ioas) = parent_hwpt.parent else { unreachable!("checked above") };
        let root_mapped = self.ioas(parent_ioas).areas.range(..=stage1.table_root).next_back().is_some_and(|(_, area)| area.range.start <= stage1.table_root && stage1.table_root <= area.range.last);
        if !root_mapped {
            return Err(Error::NotMapped);
        }
        let config = DomainConfig::Nested { parent: parent_hwpt.domain.id, stage1 };
        self.charge_new_object(client, budget::HWPT)?;
        let domain = match self.backend.domain_alloc(unit, &config) {
            Ok(domain) => domain,
            Err(error) => {
                self.refund_new_object(client, budget::HWPT);
                return Err(error);
            }
        };
        let hwpt = Hwpt {
            unit,
            domain,
            parent: HwptParent::Hwpt(parent),
            fault,
            nest_parent: false,
            dirty_capable: false,
            dirty_enabled: false,
        };
        Ok(self.create(client, Body::Hwpt(hwpt)))
    }

    /// Carry out `count` stage-1 invalidations of the nested HWPT `hwpt`, read from byte
    /// `offset` of the memory object `memory` designates, in order; stop at the first entry
    /// that is malformed or that the unit refuses. Returns how many were done. Needs ATTACH.
    pub fn hwpt_invalidate(&mut self, client: ClientId, hwpt: Handle, memory: u64, offset: u64, count: u32) -> Result<u64, Error> {
        let hwpt = self.resolve(client, hwpt, ObjectKind::Hwpt, Rights::ATTACH)?;
        if !matches!(self.hwpt(hwpt).parent, HwptParent::Hwpt(_)) {
            return Err(Error::NotSupported);
        }
        if count == 0 || count > INVALIDATIONS_PER_CALL {
            return Err(Error::InvalidRange);
        }
        if !offset.is_multiple_of(Invalidation::BYTES) {
            return Err(Error::Unaligned);
        }
        // One copy of every entry before any is carried out: the client may rewrite them.
        let mut words = vec![0u64; 2 * count as usize];
        self.memory.read(client, memory, offset, &mut words)?;
        let domain = self.hwpt(hwpt).domain.id;
        let mut done = 0;
        for entry in words.chunks_exact(2) {
            let Ok(entry) = Invalidation::decode([entry[0], entry[1]]) else { break };
            if self.backend.invalidate_stage1(domain, entry).is_err() {
                break;
            }
            done += 1;
        }
        Ok(done)
    }

    /// Switch dirty tracking of a paging HWPT allocated with dirty tracking. Needs DIRTY.
    pub fn hwpt_set_dirty_tracking(&mut self, client: ClientId, hwpt: Handle, enable: bool) -> Result<(), Error> {
        let hwpt = self.resolve(client, hwpt, ObjectKind::Hwpt, Rights::DIRTY)?;
        if !self.hwpt(hwpt).dirty_capable {
            return Err(Error::NotSupported);
        }
        self.backend.set_dirty_tracking(self.hwpt(hwpt).domain.id, enable)?;
        self.hwpt_mut(hwpt).dirty_enabled = enable;
        Ok(())
    }

    /// Read the dirty bits of `[iova_start, iova_start + length)`, one bit per `page_size`
    /// page, from an HWPT or from every HWPT of an IOAS (ORed), and with `clear` mark them
    /// clean. Every domain involved must have tracking on. Needs DIRTY.
    pub fn get_dirty_bitmap(&mut self, client: ClientId, target: Handle, iova_start: u64, length: u64, page_size: u64, clear: bool) -> Result<Vec<u64>, Error> {
        let query = self.dirty_query(client, target, iova_start, length, page_size)?;
        self.read_dirty(&query, clear)
    }

    /// `get_dirty_bitmap`, writing the bitmap into the memory object the capability `memory`
    /// designates, from its start (`ceil(pages / 64)` words), and returning the bytes reported
    /// dirty. Everything is checked before any bit is read, so a refused request leaves the
    /// dirty state as it was.
    #[allow(clippy::too_many_arguments)]
    pub fn get_dirty_bitmap_into(
        &mut self,
        client: ClientId,
        target: Handle,
        iova_start: u64,
        length: u64,
        page_size: u64,
        clear: bool,
        memory: u64,
    ) -> Result<u64, Error> {
        let query = self.dirty_query(client, target, iova_start, length, page_size)?;
        let info = self.memory.identify(client, memory)?;
        if !info.writable {
            return Err(Error::PermissionDenied);
        }
        if query.pages.div_ceil(64) * 8 > info.size {
            return Err(Error::OutOfObjectRange);
        }
        let bitmap = self.read_dirty(&query, clear)?;
        self.memory.write_words(client, memory, &bitmap)?;
        let dirty_pages: u64 = bitmap.iter().map(|word| u64::from(word.count_ones())).sum();
        Ok(dirty_pages * page_size)
    }

    /// Checks a dirty-bitmap request and names the domains it reads.
    fn dirty_query(&self, client: ClientId, target: Handle, iova_start: u64, length: u64, page_size: u64) -> Result<DirtyQuery, Error> {
        let (id, rights) = self.lookup(client, target)?;
        let kind = self.objects[id].kind();
        if kind != ObjectKind::Hwpt && kind != ObjectKind::Ioas {
            return Err(Error::WrongType);
        }
        if !rights.contains(Rights::DIRTY) {
            return Err(Error::MissingRight);
        }
        if !page_size.is_power_of_two() || page_size < PAGE_SIZE {
            return Err(Error::InvalidPageSize);
        }
        if length == 0 {
            return Err(Error::ZeroLength);
        }
        if !iova_start.is_multiple_of(page_size) || !length.is_multiple_of(page_size) {
            return Err(Error::Unaligned);
        }
        let range = IovaRange::from_start_len(iova_start, length)?;
        let pages = length / page_size;
        if pages > MAX_DIRTY_BITMAP_PAGES {
            return Err(Error::BitmapTooLarge);
        }
        let hwpts = match kind {
            ObjectKind::Hwpt => {
                if !matches!(self.hwpt(id).parent, HwptParent::Ioas(_)) {
                    return Err(Error::NotSupported);
                }
                vec![id]
            }
            _ => self.hwpts_over(HwptParent::Ioas(id)),
        };
        if hwpts.is_empty() || hwpts.iter().any(|&hwpt| !self.hwpt(hwpt).dirty_enabled) {
            return Err(Error::DirtyTrackingOff);
        }
        Ok(DirtyQuery { range, page_size, pages, hwpts })
    }

    fn read_dirty(&mut self, query: &DirtyQuery, clear: bool) -> Result<Vec<u64>, Error> {
        let mut bitmap = vec![0u64; query.pages.div_ceil(64) as usize];
        for &hwpt in &query.hwpts {
            let domain = self.hwpt(hwpt).domain.id;
            self.backend.read_and_clear_dirty(domain, query.range, query.page_size, clear, &mut bitmap)?;
        }
        Ok(bitmap)
    }

    /// Destroy an HWPT and everything that depends on it: nested children first, then
    /// attached devices are blocked, then the domain is unmapped and freed.
    pub(super) fn teardown_hwpt(&mut self, hwpt: ObjectId) {
        for child in self.hwpts_over(HwptParent::Hwpt(hwpt)) {
            self.teardown_hwpt(child);
        }
        for (device, pasid) in self.attachments_to(hwpt) {
            self.release_attachment(device, pasid);
        }
        self.free_unused(hwpt);
    }
}

/// A checked dirty-bitmap request.
struct DirtyQuery {
    range: IovaRange,
    page_size: u64,
    /// Bits of the bitmap.
    pages: u64,
    hwpts: Vec<ObjectId>,
}
