//! Pinning client memory, accounted once per (memory object, page).
//!
//! A client names memory by a capability it transfers with `ioas_map`. The server asks the
//! kernel (through [`MemorySource`]) which memory object the capability designates and to
//! pin pages of it; the kernel vouches that the client really holds the object and returns
//! the physical frames. The same page may then be mapped many times: into several HWPTs of
//! one IOAS, into several IOASes through `ioas_copy`, or by two `ioas_map` calls of the
//! same object. [`PinTable`] counts those uses per page and pins a page only on its first
//! use and unpins it on its last, so the kernel sees exactly one pin per page in use.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use iommu_abi::{Error, PAGE_SIZE};

use crate::ClientId;

/// The kernel's identity of a memory object: stable however many capabilities name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemoryObjectId(pub u64);

/// What the kernel says about a memory capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryObjectInfo {
    /// The object's identity.
    pub id: MemoryObjectId,
    /// Its size in bytes (a multiple of the page size).
    pub size: u64,
    /// Whether the capability allows devices to write the memory.
    pub writable: bool,
}

/// Frames of pinned memory: `frames[i]` is the physical address of page `i` of the range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinnedPages {
    /// One physical page address per page.
    pub frames: Vec<u64>,
}

/// The kernel interface for client memory.
pub trait MemorySource {
    /// Which object the capability `memory` (received from `client`) designates.
    /// `BadCapability` if it designates no memory object the client holds.
    fn identify(&mut self, client: ClientId, memory: u64) -> Result<MemoryObjectInfo, Error>;

    /// Pin `length` bytes at `offset` of the object `memory` designates and return their
    /// frames. Offsets and length are page-aligned and inside the object. On error nothing
    /// stays pinned.
    fn pin(&mut self, client: ClientId, memory: u64, offset: u64, length: u64) -> Result<PinnedPages, Error>;

    /// Release a pin taken by `pin` (possibly a sub-range of it).
    fn unpin(&mut self, object: MemoryObjectId, offset: u64, length: u64);
}

#[derive(Clone, Copy, Debug)]
struct PinnedPage {
    phys: u64,
    uses: u32,
}

/// Use counts of pinned pages, keyed by (memory object, page index).
#[derive(Default)]
pub struct PinTable {
    pages: BTreeMap<(MemoryObjectId, u64), PinnedPage>,
}

fn page_indices(offset: u64, length: u64) -> core::ops::Range<u64> {
    offset / PAGE_SIZE..(offset + length) / PAGE_SIZE
}

impl PinTable {
    /// Number of distinct pages currently pinned.
    pub fn pinned_pages(&self) -> usize {
        self.pages.len()
    }

    /// Take one use of every page of `[offset, offset + length)` of `object`, pinning the
    /// pages not yet pinned (in contiguous runs), and return the frames. On error no use is
    /// taken and nothing newly pinned stays pinned.
    pub fn acquire<M: MemorySource>(
        &mut self,
        source: &mut M,
        client: ClientId,
        memory: u64,
        object: MemoryObjectId,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u64>, Error> {
        let mut newly_pinned: Vec<(u64, u64)> = Vec::new();
        let mut run_start: Option<u64> = None;
        let pages = page_indices(offset, length);
        let end = pages.end;
        for index in pages.clone().chain(core::iter::once(end)) {
            let pinned = index < end && self.pages.contains_key(&(object, index));
            let wants_pin = index < end && !pinned;
            match (run_start, wants_pin) {
                (None, true) => run_start = Some(index),
                (Some(start), false) => {
                    run_start = None;
                    let run_offset = start * PAGE_SIZE;
                    let run_length = (index - start) * PAGE_SIZE;
                    match source.pin(client, memory, run_offset, run_length) {
                        Ok(pinned) if pinned.frames.len() as u64 == index - start => {
                            for (page, phys) in (start..index).zip(pinned.frames) {
                                self.pages.insert((object, page), PinnedPage { phys, uses: 0 });
                            }
                            newly_pinned.push((run_offset, run_length));
                        }
                        result => {
                            if result.is_ok() {
                                // A source returning the wrong number of frames is broken;
                                // treat it as a failed pin and give the pin back.
                                source.unpin(object, run_offset, run_length);
                            }
                            for (run_offset, run_length) in newly_pinned {
                                for page in page_indices(run_offset, run_length) {
                                    self.pages.remove(&(object, page));
                                }
                                source.unpin(object, run_offset, run_length);
                            }
                            return Err(result.err().unwrap_or(Error::HardwareFailure));
                        }
                    }
                }
                _ => {}
            }
        }
        let mut frames = Vec::with_capacity((end - offset / PAGE_SIZE) as usize);
        for index in page_indices(offset, length) {
            let page = self.pages.get_mut(&(object, index)).expect("every page was pinned above");
            page.uses += 1;
            frames.push(page.phys);
        }
        Ok(frames)
    }

    /// Take one more use of pages that are already pinned (for `ioas_copy`), returning
    /// their frames. The caller guarantees the pages are pinned (they are mapped).
    pub fn share(&mut self, object: MemoryObjectId, offset: u64, length: u64) -> Vec<u64> {
        page_indices(offset, length)
            .map(|index| {
                let page = self.pages.get_mut(&(object, index)).expect("a mapped page is pinned");
                page.uses += 1;
                page.phys
            })
            .collect()
    }

    /// The frames of pinned pages, without taking a use.
    pub fn frames(&self, object: MemoryObjectId, offset: u64, length: u64) -> Vec<u64> {
        page_indices(offset, length)
            .map(|index| self.pages.get(&(object, index)).expect("a mapped page is pinned").phys)
            .collect()
    }

    /// Drop one use of every page of the range, unpinning (in contiguous runs) the pages
    /// whose last use this was.
    pub fn release<M: MemorySource>(&mut self, source: &mut M, object: MemoryObjectId, offset: u64, length: u64) {
        let mut run_start: Option<u64> = None;
        let end = (offset + length) / PAGE_SIZE;
        for index in page_indices(offset, length).chain(core::iter::once(end)) {
            let last_use = index < end && {
                let page = self.pages.get_mut(&(object, index)).expect("a released page is pinned");
                page.uses -= 1;
                page.uses == 0
            };
            if last_use {
                self.pages.remove(&(object, index));
                run_start.get_or_insert(index);
            } else if let Some(start) = run_start.take() {
                source.unpin(object, start * PAGE_SIZE, (index - start) * PAGE_SIZE);
            }
        }
    }
}
