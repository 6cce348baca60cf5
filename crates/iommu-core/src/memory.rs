//! Pinning client memory, accounted once per (memory object, page).
//!
//! A client names memory by a capability it transfers with `ioas_map`. The server asks the
//! kernel (through [`MemorySource`]) which memory object the capability designates and to
//! pin pages of it; the kernel vouches that the client really holds the object and returns
//! the physical frames. The same page may then be mapped many times: into several HWPTs of
//! one IOAS, into several IOASes through `ioas_copy`, or by two `ioas_map` calls of the
//! same object. [`PinTable`] counts those uses per page (in runs of pages sharing a count) and
//! pins a page only on its first use and unpins it on its last, so every page in use is pinned
//! exactly once.

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

    /// Write `words` at the start of the object `memory` designates (results the client asked
    /// to receive in its own memory). The caller checked, through `identify`, that the
    /// capability allows writing and that the words fit in the object.
    fn write_words(&mut self, client: ClientId, memory: u64, words: &[u64]) -> Result<(), Error>;

    /// Copy `words.len()` 64-bit words at byte `offset` (8-byte aligned) of the object the
    /// capability `memory` (received from `client`) designates into `words`: a snapshot, so
    /// the client changing the memory meanwhile changes nothing already copied.
    /// `OutOfObjectRange` if the words are not all inside the object; a source that cannot
    /// read client memory keeps this default.
    fn read(&mut self, _client: ClientId, _memory: u64, _offset: u64, _words: &mut [u64]) -> Result<(), Error> {
        Err(Error::NotSupported)
    }
}

/// Pages `[first, first + frames.len())` of one object, all with the same use count.
#[derive(Clone, Debug)]
struct PinnedRun {
    frames: Vec<u64>,
    uses: u32,
}

/// Use counts of pinned pages, kept as disjoint runs of pages with one count each, keyed by
/// (memory object, first page): a mapping of N pages costs a few map operations and one copy of
/// its frames rather than N of each. Runs are split where a range starts or ends inside one.
#[derive(Default)]
pub struct PinTable {
    runs: BTreeMap<(MemoryObjectId, u64), PinnedRun>,
    pages: usize,
}

fn page_indices(offset: u64, length: u64) -> core::ops::Range<u64> {
    offset / PAGE_SIZE..(offset + length) / PAGE_SIZE
}

impl PinTable {
    /// Number of distinct pages currently pinned.
    pub fn pinned_pages(&self) -> usize {
        self.pages
    }

    /// Makes `page` the first page of its run, if a run covers it (splitting changes no count).
    fn split_at(&mut self, object: MemoryObjectId, page: u64) {
        let Some((&(_, first), run)) = self.runs.range_mut((object, 0)..(object, page)).next_back() else {
            return;
        };
        if first + run.frames.len() as u64 <= page {
            return;
        }
        let tail = PinnedRun { frames: run.frames.split_off((page - first) as usize), uses: run.uses };
        self.runs.insert((object, page), tail);
    }

    /// Adds one use to every run inside `pages` (already split at its ends) and returns their
    /// frames in order.
    fn take_uses(&mut self, object: MemoryObjectId, pages: core::ops::Range<u64>) -> Vec<u64> {
        let mut frames = Vec::with_capacity((pages.end - pages.start) as usize);
        for (_, run) in self.runs.range_mut((object, pages.start)..(object, pages.end)) {
            run.uses += 1;
            frames.extend_from_slice(&run.frames);
        }
        frames
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
        let pages = page_indices(offset, length);
        self.split_at(object, pages.start);
        self.split_at(object, pages.end);
        let mut gaps: Vec<(u64, u64)> = Vec::new();
        let mut cursor = pages.start;
        for (&(_, first), run) in self.runs.range((object, pages.start)..(object, pages.end)) {
            if first > cursor {
                gaps.push((cursor, first));
            }
            cursor = first + run.frames.len() as u64;
        }
        if cursor < pages.end {
            gaps.push((cursor, pages.end));
        }
        let mut newly_pinned: Vec<(u64, Vec<u64>)> = Vec::with_capacity(gaps.len());
        for (start, end) in gaps {
            let (run_offset, run_length) = (start * PAGE_SIZE, (end - start) * PAGE_SIZE);
            match source.pin(client, memory, run_offset, run_length) {
                Ok(pinned) if pinned.frames.len() as u64 == end - start => newly_pinned.push((start, pinned.frames)),
                result => {
                    if result.is_ok() {
                        // A source returning the wrong number of frames is broken; treat it as
                        // a failed pin and give the pin back.
                        source.unpin(object, run_offset, run_length);
                    }
                    for (start, frames) in newly_pinned {
                        source.unpin(object, start * PAGE_SIZE, frames.len() as u64 * PAGE_SIZE);
                    }
                    return Err(result.err().unwrap_or(Error::HardwareFailure));
                }
            }
        }
        for (start, frames) in newly_pinned {
            self.pages += frames.len();
            self.runs.insert((object, start), PinnedRun { frames, uses: 0 });
        }
        Ok(self.take_uses(object, pages))
    }

    /// Take one more use of pages that are already pinned (for `ioas_copy`), returning
    /// their frames. The caller guarantees the pages are pinned (they are mapped).
    pub fn share(&mut self, object: MemoryObjectId, offset: u64, length: u64) -> Vec<u64> {
        let pages = page_indices(offset, length);
        self.split_at(object, pages.start);
        self.split_at(object, pages.end);
        let frames = self.take_uses(object, pages.clone());
        assert_eq!(frames.len() as u64, pages.end - pages.start, "a mapped page is pinned");
        frames
    }

    /// The frames of pinned pages, without taking a use.
    pub fn frames(&self, object: MemoryObjectId, offset: u64, length: u64) -> Vec<u64> {
        let pages = page_indices(offset, length);
        let before = self.runs.range((object, 0)..(object, pages.start)).next_back();
        let inside = self.runs.range((object, pages.start)..(object, pages.end));
        let mut frames = Vec::with_capacity((pages.end - pages.start) as usize);
        for (&(_, first), run) in before.into_iter().chain(inside) {
            let run_end = first + run.frames.len() as u64;
            let (from, to) = (first.max(pages.start), run_end.min(pages.end));
            if from < to {
                frames.extend_from_slice(&run.frames[(from - first) as usize..(to - first) as usize]);
            }
        }
        assert_eq!(frames.len() as u64, pages.end - pages.start, "a mapped page is pinned");
        frames
    }

    /// Drop one use of every page of the range, unpinning (in contiguous runs) the pages
    /// whose last use this was.
    pub fn release<M: MemorySource>(&mut self, source: &mut M, object: MemoryObjectId, offset: u64, length: u64) {
        let pages = page_indices(offset, length);
        self.split_at(object, pages.start);
        self.split_at(object, pages.end);
        let mut unused: Vec<u64> = Vec::new();
        for (&(_, first), run) in self.runs.range_mut((object, pages.start)..(object, pages.end)) {
            run.uses = run.uses.checked_sub(1).expect("a released page is in use");
            if run.uses == 0 {
                unused.push(first);
            }
        }
        // Unpin in contiguous stretches, as few calls as the runs allow.
        let mut stretch: Option<(u64, u64)> = None;
        for first in unused {
            let run = self.runs.remove(&(object, first)).expect("listed above");
            let end = first + run.frames.len() as u64;
            self.pages -= run.frames.len();
            stretch = match stretch {
                Some((start, last_end)) if last_end == first => Some((start, end)),
                Some((start, last_end)) => {
                    source.unpin(object, start * PAGE_SIZE, (last_end - start) * PAGE_SIZE);
                    Some((first, end))
                }
                None => Some((first, end)),
            };
        }
        if let Some((start, end)) = stretch {
            source.unpin(object, start * PAGE_SIZE, (end - start) * PAGE_SIZE);
        }
    }
}
