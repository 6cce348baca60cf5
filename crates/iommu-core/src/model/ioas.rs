//! IOAS: allocation, mapping (pin, then map into every paging domain of the IOAS), unmapping
//! (unmap and invalidate, then unpin), copying between address spaces, allowed ranges, and
//! the cached summary (domains, usable ranges, page sizes) that maps and unmaps read.

use alloc::vec;
use alloc::vec::Vec;
use iommu_abi::{Error, Handle, IovaChoice, IovaRange, Perm, Rights, PAGE_SIZE};
use crate::budget::{self, Usage};
use crate::backend::{HwDomainId, IommuBackend};
use crate::iova;
use slot_table::SlotTable;
use crate::memory::MemorySource;
use crate::objects::{Area, Attachment, Body, HwptParent, Ioas, Object, IoasSummary, ObjectId, ObjectKind};
use crate::ClientId;

use super::ObjectModel;

/// Page sizes assumed for IOVA alignment while an IOAS has no domain: 4 KiB, 2 MiB, 1 GiB.
const DEFAULT_PAGE_SIZES: u64 = (1 << 12) | (1 << 21) | (1 << 30);

/// One contiguous piece of a mapping: its IOVA, frames and permission.
pub(super) struct Segment<'a> {
    pub(super) iova: u64,
    pub(super) frames: &'a [u64],
    pub(super) perm: Perm,
}

/// Map `frames` at `iova` in physically contiguous runs; on error unmap what this call
/// mapped.
fn map_frames<B: IommuBackend>(backend: &mut B, domain: HwDomainId, segment: &Segment) -> Result<(), Error> {
    let mut done = 0usize;
    while done < segment.frames.len() {
        let run = contiguous_run(&segment.frames[done..]);
        let iova = segment.iova + done as u64 * PAGE_SIZE;
        if let Err(error) = backend.map(domain, iova, segment.frames[done], run as u64 * PAGE_SIZE, segment.perm) {
            if done > 0 {
                backend.unmap(domain, segment.iova, done as u64 * PAGE_SIZE);
            }
            return Err(error);
        }
        done += run;
    }
    Ok(())
}

/// How many frames from the first on are physically consecutive pages (at least 1 for a
/// non-empty slice). Client memory is often one contiguous object, so whole chunks are checked
/// with a branch-free fold the compiler vectorizes, and only a chunk with a break is searched
/// frame by frame.
fn contiguous_run(frames: &[u64]) -> usize {
    const CHUNK: usize = 64;
    let Some(&first) = frames.first() else { return 0 };
    let expected = |index: usize| first.wrapping_add(index as u64 * PAGE_SIZE);
    let mut checked = 0;
    for chunk in frames.chunks(CHUNK) {
        let differs = chunk.iter().enumerate().fold(0u64, |acc, (i, &frame)| acc | (frame ^ expected(checked + i)));
        if differs != 0 {
            let broken = chunk.iter().enumerate().position(|(i, &frame)| frame != expected(checked + i)).expect("a frame differs");
            return checked + broken;
        }
        checked += chunk.len();
    }
    checked
}

/// Map every segment into every domain; on error unmap everything this call mapped.
pub(super) fn map_segments<B: IommuBackend>(backend: &mut B, domains: &[HwDomainId], segments: &[Segment]) -> Result<(), Error> {
    for (domain_index, &domain) in domains.iter().enumerate() {
        for (segment_index, segment) in segments.iter().enumerate() {
            if let Err(error) = map_frames(backend, domain, segment) {
                unmap_segments_mapped(backend, domains, segments, domain_index, segment_index);
                return Err(error);
            }
        }
    }
    Ok(())
}

/// The rollback of `map_segments` when segment `segment_index` failed in domain `domain_index`
/// (out of line, so that the successful map does not pay for its frame).
#[cold]
#[inline(never)]
fn unmap_segments_mapped<B: IommuBackend>(backend: &mut B, domains: &[HwDomainId], segments: &[Segment], domain_index: usize, segment_index: usize) {
    for done in &segments[..segment_index] {
        backend.unmap(domains[domain_index], done.iova, done.frames.len() as u64 * PAGE_SIZE);
    }
    for &earlier in &domains[..domain_index] {
        for done in segments {
            backend.unmap(earlier, done.iova, done.frames.len() as u64 * PAGE_SIZE);
        }
    }
}

fn check_aligned_length(length: u64) -> Result<(), Error> {
    if length == 0 {
        return Err(Error::ZeroLength);
    }
    if !length.is_multiple_of(PAGE_SIZE) {
        return Err(Error::Unaligned);
    }
    Ok(())
}

/// The checks every map makes of the range it takes pages from (an offset in a memory object,
/// or the source IOVA of a copy): some access, a non-empty, page-aligned length at a
/// page-aligned start, no wrap. Returns the end of the range.
pub(super) fn check_map_range(perm: Perm, offset: u64, length: u64) -> Result<u64, Error> {
    check_perm(perm)?;
    check_aligned_length(length)?;
    if !offset.is_multiple_of(PAGE_SIZE) {
        return Err(Error::Unaligned);
    }
    offset.checked_add(length).ok_or(Error::Overflow)
}

/// Whether a range ending at `object_end` lies in an object of `size` bytes that allows `perm`.
pub(super) fn check_within_object(object_end: u64, size: u64, writable: bool, perm: Perm) -> Result<(), Error> {
    if object_end > size {
        return Err(Error::OutOfObjectRange);
    }
    if perm.write && !writable {
        return Err(Error::PermissionDenied);
    }
    Ok(())
}

fn check_perm(perm: Perm) -> Result<(), Error> {
    if perm.read || perm.write {
        Ok(())
    } else {
        Err(Error::BadPermissions)
    }
}

/// The largest page size in `page_sizes` not above `length`, at least 4 KiB.
fn alignment_for(length: u64, page_sizes: u64) -> u64 {
    let highest_bit = 63 - length.leading_zeros();
    let fitting = if highest_bit == 63 { u64::MAX } else { (1u64 << (highest_bit + 1)) - 1 };
    let candidates = page_sizes & fitting & !(PAGE_SIZE - 1);
    if candidates == 0 {
        PAGE_SIZE
    } else {
        1 << (63 - candidates.leading_zeros())
    }
}

/// Choose (auto) or check (fixed) the IOVA range of a new mapping of `length` bytes in `ioas`,
/// whose summary is current.
#[inline]
pub(super) fn place(ioas: &Ioas, choice: IovaChoice, length: u64) -> Result<IovaRange, Error> {
    let summary = ioas.summary();
    match choice {
        IovaChoice::Fixed(start) => {
            if start % PAGE_SIZE != 0 {
                return Err(Error::Unaligned);
            }
            let range = IovaRange::from_start_len(start, length)?;
            if !iova::covered_by(&summary.permitted, &range) {
                return Err(Error::OutsideAperture);
            }
            if summary.reserved.iter().any(|reserved| reserved.intersects(&range)) {
                return Err(Error::ReservedRegion);
            }
            if ioas.overlaps_area(&range) {
                return Err(Error::Overlap);
            }
            Ok(range)
        }
        IovaChoice::Auto => place_anywhere(ioas, length),
    }
}

/// `place` for [`IovaChoice::Auto`]: the lowest free range, aligned to the largest page size
/// that fits the length (out of line: it builds range lists, which the fixed case never does).
#[inline(never)]
fn place_anywhere(ioas: &Ioas, length: u64) -> Result<IovaRange, Error> {
    let summary = ioas.summary();
    let usable = iova::subtract(&summary.permitted, &summary.reserved);
    let free = iova::subtract(&usable, &ioas.area_ranges());
    let align = alignment_for(length, summary.page_sizes);
    let start = iova::find_free(&free, length, align).ok_or(Error::NoIovaSpace)?;
    IovaRange::from_start_len(start, length)
}

#[inline]
pub(super) fn ioas_in(objects: &SlotTable<ObjectId, Object>, id: ObjectId) -> &Ioas {
    match &objects[id].body {
        Body::Ioas(ioas) => ioas,
        _ => panic!("object {id:?} is not an IOAS"),
    }
}

/// The IOAS `id` and its owner (who is charged for its areas), from one lookup.
#[inline]
pub(super) fn owned_ioas_in(objects: &SlotTable<ObjectId, Object>, id: ObjectId) -> (ClientId, &Ioas) {
    match &objects[id] {
        Object { owner, body: Body::Ioas(ioas) } => (*owner, ioas),
        _ => panic!("object {id:?} is not an IOAS"),
    }
}

/// `owned_ioas_in`, mutably.
#[inline]
fn owned_ioas_in_mut(objects: &mut SlotTable<ObjectId, Object>, id: ObjectId) -> (ClientId, &mut Ioas) {
    match objects.get_mut(id).expect("live object") {
        Object { owner, body: Body::Ioas(ioas) } => (*owner, ioas),
        _ => panic!("object {id:?} is not an IOAS"),
    }
}

#[inline]
pub(super) fn ioas_in_mut(objects: &mut SlotTable<ObjectId, Object>, id: ObjectId) -> &mut Ioas {
    match &mut objects.get_mut(id).expect("live object").body {
        Body::Ioas(ioas) => ioas,
        _ => panic!("object {id:?} is not an IOAS"),
    }
}

impl<B: IommuBackend, M: MemorySource> ObjectModel<B, M> {
    /// Allocate an empty IOAS.
    pub fn ioas_alloc(&mut self, client: ClientId) -> Result<Handle, Error> {
        self.charge_new_object(client, budget::IOAS)?;
        Ok(self.create(client, Body::Ioas(Ioas::default())))
    }

    /// Map `length` bytes at `offset` of the memory capability `memory` into the IOAS,
    /// into every HWPT of it, before returning the IOVA. Needs MAP.
    // The arguments are the request's own fields (docs/ipc-api.md, `ioas_map`).
    #[allow(clippy::too_many_arguments)]
    pub fn ioas_map(
        &mut self,
        client: ClientId,
        ioas: Handle,
        memory: u64,
        offset: u64,
        length: u64,
        choice: IovaChoice,
        perm: Perm,
    ) -> Result<u64, Error> {
        let ioas = self.resolve(client, ioas, ObjectKind::Ioas, Rights::MAP)?;
        let object_end = check_map_range(perm, offset, length)?;
        self.refresh_summary(ioas);
        let range = place(self.ioas(ioas), choice, length)?;
        let info = self.memory.identify(client, memory)?;
        check_within_object(object_end, info.size, info.writable, perm)?;
        let owner = self.objects[ioas].owner;
        let charge = Usage { areas: 1, bytes: budget::area_bytes(length, false), ..Usage::default() };
        self.clients.get_mut(owner).expect("owners are live").account.charge_areas(charge.areas, charge.bytes)?;
        let frames = match self.pins.acquire(&mut self.memory, client, memory, info.id, offset, length) {
            Ok(frames) => frames,
            Err(error) => {
                self.refund(owner, charge);
                return Err(error);
            }
        };
        let segment = Segment { iova: range.start, frames: &frames, perm };
        let domains = &ioas_in(&self.objects, ioas).summary().domains;
        if let Err(error) = map_segments(&mut self.backend, domains, core::slice::from_ref(&segment)) {
            self.pins.release(&mut self.memory, info.id, offset, length);
            self.refund(owner, charge);
            return Err(error);
        }
        self.ioas_mut(ioas).areas.insert(range.start, Area { range, object: info.id, offset, perm, registration: None });
        Ok(range.start)
    }

    /// Remove an area: unmap it from every domain (the backend invalidates), then unpin.
    pub(super) fn remove_area(&mut self, ioas: ObjectId, start: u64) -> u64 {
        self.refresh_summary(ioas);
        let ObjectModel { objects, backend, pins, memory, clients, .. } = self;
        let (owner, target) = owned_ioas_in_mut(objects, ioas);
        let area = target.areas.remove(&start).expect("area exists");
        for &domain in &target.summary().domains {
            backend.unmap(domain, area.range.start, area.length());
        }
        match area.registration {
            Some(registered) => {
                if let Some(Object { body: Body::Memory(registration), .. }) = objects.get_mut(registered) {
                    registration.mappings -= 1;
                }
            }
            None => pins.release(memory, area.object, area.offset, area.length()),
        }
        let charged = budget::area(&area);
        clients.get_mut(owner).expect("owners are live").account.refund_areas(charged.areas, charged.bytes);
        area.length()
    }

    /// Unmap every mapping inside `[iova, iova + length)`; a mapping that reaches outside
    /// the range fails the whole request with `PartialUnmap`. Needs UNMAP.
    pub fn ioas_unmap(&mut self, client: ClientId, ioas: Handle, iova_start: u64, length: u64) -> Result<u64, Error> {
        let ioas = self.resolve(client, ioas, ObjectKind::Ioas, Rights::UNMAP)?;
        check_aligned_length(length)?;
        if !iova_start.is_multiple_of(PAGE_SIZE) {
            return Err(Error::Unaligned);
        }
        let range = IovaRange::from_start_len(iova_start, length)?;
        let areas = &self.ioas(ioas).areas;
        // The usual request names exactly one area, which is then the only one it touches.
        if areas.get(&range.start).is_some_and(|area| area.range == range) {
            return Ok(self.remove_area(ioas, range.start));
        }
        // Areas do not overlap, so their ends ascend with their starts: walking back from the
        // last area starting inside the range, the first that ends before it ends the search.
        let mut hit: Vec<Area> = areas.range(..=range.last).rev().map(|(_, area)| *area).take_while(|area| area.range.intersects(&range)).collect();
        hit.reverse();
        if hit.is_empty() {
            return Err(Error::NotMapped);
        }
        if hit.iter().any(|area| !range.contains_range(&area.range)) {
            return Err(Error::PartialUnmap);
        }
        Ok(hit.iter().map(|area| self.remove_area(ioas, area.range.start)).sum())
    }

    /// Unmap everything. Needs UNMAP.
    pub fn ioas_unmap_all(&mut self, client: ClientId, ioas: Handle) -> Result<u64, Error> {
        let ioas = self.resolve(client, ioas, ObjectKind::Ioas, Rights::UNMAP)?;
        Ok(self.unmap_everything(ioas))
    }

    pub(super) fn unmap_everything(&mut self, ioas: ObjectId) -> u64 {
        let starts: Vec<u64> = self.ioas(ioas).areas.keys().copied().collect();
        starts.into_iter().map(|start| self.remove_area(ioas, start)).sum()
    }

    /// Map the pages mapped at `[src_iova, src_iova + length)` of `src` into `dst`, sharing
    /// their pins. The source range must be fully mapped; `perm` may not exceed the source
    /// mappings'. Needs COPY_FROM on `src` and MAP on `dst`.
    #[allow(clippy::too_many_arguments)]
    pub fn ioas_copy(
        &mut self,
        client: ClientId,
        dst: Handle,
        dst_choice: IovaChoice,
        src: Handle,
        src_iova: u64,
        length: u64,
        perm: Perm,
    ) -> Result<u64, Error> {
        let src = self.resolve(client, src, ObjectKind::Ioas, Rights::COPY_FROM)?;
        let dst = self.resolve(client, dst, ObjectKind::Ioas, Rights::MAP)?;
        check_map_range(perm, src_iova, length)?;
        let src_range = IovaRange::from_start_len(src_iova, length)?;
        // Split the source range into pieces of the areas covering it, without holes.
        let mut pieces: Vec<Area> = Vec::new();
        let mut cursor = src_range.start;
        loop {
            let area = self.ioas(src).areas.range(..=cursor).next_back().map(|(_, area)| *area);
            let area = area.filter(|area| area.range.last >= cursor).ok_or(Error::NotMapped)?;
            let last = area.range.last.min(src_range.last);
            pieces.push(Area {
                range: IovaRange { start: cursor, last },
                object: area.object,
                offset: area.offset + (cursor - area.range.start),
                perm: area.perm,
                // A copy takes uses of the pages itself (they are pinned, by the source area
                // or its registration), so it outlives either.
                registration: None,
            });
            if last == src_range.last {
                break;
            }
            cursor = last + 1;
        }
        if pieces.iter().any(|piece| !perm.within(piece.perm)) {
            return Err(Error::PermissionDenied);
        }
        self.refresh_summary(dst);
        let dst_range = place(self.ioas(dst), dst_choice, length)?;
        let shift = |iova: u64| iova - src_range.start + dst_range.start;
        let owner = self.objects[dst].owner;
        let charge = pieces.iter().fold(Usage::default(), |sum, piece| sum.plus(budget::area(piece)));
        self.clients.get_mut(owner).expect("owners are live").account.charge_areas(charge.areas, charge.bytes)?;
        let frame_lists: Vec<Vec<u64>> = pieces.iter().map(|piece| self.pins.share(piece.object, piece.offset, piece.length())).collect();
        let segments: Vec<Segment> = pieces
            .iter()
            .zip(&frame_lists)
            .map(|(piece, frames)| Segment { iova: shift(piece.range.start), frames, perm })
            .collect();
        if let Err(error) = map_segments(&mut self.backend, &ioas_in(&self.objects, dst).summary().domains, &segments) {
            for piece in &pieces {
                self.pins.release(&mut self.memory, piece.object, piece.offset, piece.length());
            }
            self.refund(owner, charge);
            return Err(error);
        }
        let areas = &mut self.ioas_mut(dst).areas;
        for piece in pieces {
            let range = IovaRange { start: shift(piece.range.start), last: shift(piece.range.last) };
            areas.insert(range.start, Area { range, object: piece.object, offset: piece.offset, perm, registration: None });
        }
        Ok(dst_range.start)
    }

    /// The usable IOVA ranges: every domain's aperture ∩ allowed ranges − reserved regions
    /// of attached devices. Needs no right.
    pub fn ioas_iova_ranges(&self, client: ClientId, ioas: Handle) -> Result<Vec<IovaRange>, Error> {
        let ioas = self.resolve(client, ioas, ObjectKind::Ioas, Rights::empty())?;
        Ok(iova::subtract(&self.ioas_permitted(ioas), &self.ioas_reserved(ioas)))
    }

    /// Restrict mappings to `ranges` (page-granular; empty lifts the restriction). Fails
    /// if an existing mapping would fall outside. Needs MAP.
    pub fn ioas_allow_iovas(&mut self, client: ClientId, ioas: Handle, ranges: &[IovaRange]) -> Result<(), Error> {
        let ioas = self.resolve(client, ioas, ObjectKind::Ioas, Rights::MAP)?;
        for range in ranges {
            if range.start > range.last {
                return Err(Error::InvalidRange);
            }
            if range.start % PAGE_SIZE != 0 || range.last.wrapping_add(1) % PAGE_SIZE != 0 {
                return Err(Error::Unaligned);
            }
        }
        let allowed = iova::normalize(ranges.to_vec());
        if !allowed.is_empty() && self.ioas(ioas).areas.values().any(|area| !iova::covered_by(&allowed, &area.range)) {
            return Err(Error::AreasOutsideAllowed);
        }
        let owner = self.objects[ioas].owner;
        let (now, then) = (allowed.len(), self.ioas(ioas).allowed.len());
        if now > then {
            self.charge(owner, budget::allowed_ranges(now - then))?;
        } else {
            self.refund(owner, budget::allowed_ranges(then - now));
        }
        self.ioas_mut(ioas).allowed = allowed;
        self.topology_epoch += 1;
        Ok(())
    }

    pub(super) fn teardown_ioas(&mut self, ioas: ObjectId) {
        for hwpt in self.hwpts_over(HwptParent::Ioas(ioas)) {
            self.teardown_hwpt(hwpt);
        }
        self.free_unused(ioas);
    }

    // ----- the IOAS summary: what maps and unmaps read -----

    fn ioas_domains(&self, ioas: ObjectId) -> Vec<HwDomainId> {
        self.hwpts_over(HwptParent::Ioas(ioas)).into_iter().map(|hwpt| self.hwpt(hwpt).domain.id).collect()
    }

    /// Reserved regions of every device attached to any HWPT translating through `ioas`.
    fn ioas_reserved(&self, ioas: ObjectId) -> Vec<IovaRange> {
        let mut reserved = Vec::new();
        for object in self.objects.values() {
            if let Body::Device(device) = &object.body {
                let through_ioas = device
                    .attachments
                    .values()
                    .any(|attachment| matches!(attachment, Attachment::Hwpt(hwpt) if self.root_ioas(*hwpt) == ioas));
                if through_ioas {
                    reserved.extend(device.reserved.iter().map(|region| region.range));
                }
            }
        }
        iova::normalize(reserved)
    }

    /// `aperture ∩ allowed`: where mappings may go before reserved regions are removed.
    fn ioas_permitted(&self, ioas: ObjectId) -> Vec<IovaRange> {
        let mut space = vec![IovaRange::ALL];
        for hwpt in self.hwpts_over(HwptParent::Ioas(ioas)) {
            space = iova::intersect(&space, &self.hwpt(hwpt).domain.aperture);
        }
        let allowed = &self.ioas(ioas).allowed;
        if allowed.is_empty() {
            space
        } else {
            iova::intersect_all(&space, allowed)
        }
    }

    fn ioas_page_sizes(&self, ioas: ObjectId) -> u64 {
        self.hwpts_over(HwptParent::Ioas(ioas))
            .into_iter()
            .fold(DEFAULT_PAGE_SIZES, |sizes, hwpt| sizes & self.hwpt(hwpt).domain.page_sizes)
    }

    /// Brings the summary of `ioas` (domains, permitted and reserved ranges) up to date: it is
    /// recomputed only after the topology changed. Maps and unmaps then read it in place
    /// ([`Ioas::summary`]) while they drive the backend.
    #[inline]
    pub(super) fn refresh_summary(&mut self, ioas: ObjectId) {
        let epoch = self.topology_epoch;
        if self.ioas(ioas).summary.as_ref().is_some_and(|(cached_at, _)| *cached_at == epoch) {
            return;
        }
        self.recompute_summary(ioas);
    }

    /// Out of line: the cache hit above is what every map and unmap runs.
    #[inline(never)]
    fn recompute_summary(&mut self, ioas: ObjectId) {
        let epoch = self.topology_epoch;
        let summary = IoasSummary {
            domains: self.ioas_domains(ioas),
            permitted: self.ioas_permitted(ioas),
            reserved: self.ioas_reserved(ioas),
            page_sizes: self.ioas_page_sizes(ioas),
        };
        self.ioas_mut(ioas).summary = Some((epoch, summary));
    }
}

#[cfg(test)]
mod run_tests {
    use super::{contiguous_run, PAGE_SIZE};

    #[test]
    fn contiguous_runs_end_at_the_first_break_in_any_chunk() {
        let consecutive: alloc::vec::Vec<u64> = (0..200).map(|i| 0x10_0000 + i * PAGE_SIZE).collect();
        assert_eq!(contiguous_run(&consecutive), 200);
        assert_eq!(contiguous_run(&[]), 0);
        assert_eq!(contiguous_run(&consecutive[..1]), 1);
        for broken_at in [1, 63, 64, 70, 199] {
            let mut frames = consecutive.clone();
            frames[broken_at] += PAGE_SIZE;
            assert_eq!(contiguous_run(&frames), broken_at, "break at {broken_at}");
        }
    }
}
