//! Address spaces shared with devices (SVA): the kernel's half of the protocol by which an
//! IOMMU walks a process's own page tables.
//!
//! Whoever holds a process capability with CONTROL (or the process itself) makes an
//! address-space capability (`address_space_cap`) and hands it to a driver, which passes it to
//! the IOMMU server. The server, holding the DMA authority, resolves it (`address_space_watch`)
//! into the table root and a *watch*: a pin of no memory, revoked as a `cap_watch` is. From
//! then on the IOMMU may cache anything the tables reach, so every change that shrinks that
//! reach is reported and its frames held:
//!
//! - an unmap (by `unmap`, or a mapping removed with its capability): the data page's memory
//!   object and the table pages the unmap freed are held; the change is a record
//!   (pin, `ADDRESS_SPACE_CHANGE`, first virtual page, pages) in the server's
//!   `revocation_read`, coalesced per watch into one covering range;
//! - the process's end: its tables, image frames and memory objects are held whole, and the
//!   watch is revoked (a record with serial 0);
//! - permission downgrades: the kernel has none (no protection change system call).
//!
//! Records read are acknowledged with `address_space_ack` once the server invalidated the
//! IOMMU's caches; only then do the frames go back to the pool. An exited process's frames go
//! when the server releases the watch (`mem_unpin`), which it does after blocking the device.
//!
//! If the watcher ends instead (killed, faulted, exited), nobody invalidates any more while a
//! PASID or context entry it wrote may still point at the tables: the watch goes into the
//! kernel's quarantine (`Quarantine`) rather than ending. It goes on holding what the process
//! unmaps and, once the process ends, its whole address space, until a new server that blocked
//! every device calls `quarantine_release`. Until then the process cannot be watched again.

use crate::arch::paging::{AddressSpace, USER_MEMORY_ATTRIBUTES};
use crate::cap::Capability;
use crate::mm::FRAMES;
use crate::object::Object;
use crate::process::{Kernel, Mappings, Pid};
use alloc::boxed::Box;
use alloc::vec::Vec;
use kernel_abi::{Error, Rights, ADDRESS_SPACE_CHANGE, NO_CAP, REVOCATION_RECORD_WORDS};

/// What a change of a watched address space freed, out of the pool until acknowledged.
pub enum Held {
    /// Page-table frames an unmap unlinked (0 where none).
    Tables([u64; 3]),
    /// A memory object an unmap stopped mapping: its frames go with its last reference.
    Object { _object: Object },
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Held::Tables(tables) = self {
            let mut frames = FRAMES.lock();
            tables.iter().filter(|&&t| t != 0).for_each(|&t| frames.free(t));
        }
    }
}

/// Pages `held` keeps out of the pool (an object's every frame, as it is freed whole).
fn held_pages(held: &[Held]) -> u64 {
    held.iter()
        .map(|held| match held {
            Held::Tables(tables) => tables.iter().filter(|&&t| t != 0).count() as u64,
            Held::Object { _object: Object::Memory(memory) } => memory.frames.len() as u64,
            Held::Object { .. } => 0,
        })
        .sum()
}

/// The watch on a process's address space, kept by the watched process.
pub struct Watched {
    /// The process that watches (the IOMMU server) and the pin it watches with.
    pub watcher: Pid,
    pub pin: u64,
    /// Virtual pages `[first, end)` covering every change the watcher has not read yet.
    changed: Option<(u64, u64)>,
    /// What those changes freed.
    unread: Vec<Held>,
    /// What the changes the watcher read freed, until it acknowledges them.
    unacknowledged: Vec<Held>,
}

impl Watched {
    /// Whether the watch holds frames for a change not yet read or acknowledged.
    pub fn holds_frames(&self) -> bool {
        !self.unread.is_empty() || !self.unacknowledged.is_empty()
    }

    /// The page at `va` was unmapped: `tables` (unlinked, not freed) and the memory `object`
    /// it mapped are held until the watcher acknowledges.
    pub fn unmapped(&mut self, va: u64, tables: [u64; 3], object: Option<Object>) {
        let page = va / crate::arch::PAGE_SIZE;
        self.changed = Some(match self.changed {
            Some((first, end)) => (first.min(page), end.max(page + 1)),
            None => (page, page + 1),
        });
        if tables.iter().any(|&t| t != 0) {
            self.unread.push(Held::Tables(tables));
        }
        if let Some(object) = object {
            self.unread.push(Held::Object { _object: object });
        }
    }
}

/// A watched process's address space after the process ended, held whole until the watcher
/// releases its watch.
pub struct ExitedSpace {
    space: Option<AddressSpace>,
    image_frames: Vec<u64>,
    /// Dropped after the tables: they hold the memory objects the tables mapped.
    _mappings: Mappings,
    _held: Vec<Held>,
}

impl ExitedSpace {
    /// Pages held: the tables (root included), the image, each memory object mapped (once)
    /// and what earlier unmaps held.
    fn pages(&self) -> u64 {
        let tables = self.space.as_ref().map_or(0, |space| space.table_frames() + 1);
        let mut objects: Vec<(u64, u64)> = self
            ._mappings
            .objects()
            .filter_map(|object| match object {
                Object::Memory(memory) => Some((memory.serial, memory.frames.len() as u64)),
                _ => None,
            })
            .collect();
        objects.sort_unstable();
        objects.dedup();
        tables + self.image_frames.len() as u64 + objects.iter().map(|&(_, pages)| pages).sum::<u64>() + held_pages(&self._held)
    }
}

impl Drop for ExitedSpace {
    fn drop(&mut self) {
        let mut frames = FRAMES.lock();
        if let Some(space) = self.space.take() {
            space.destroy(&mut frames);
        }
        self.image_frames.iter().for_each(|&f| frames.free(f));
    }
}

/// `address_space_cap(process, dst)`: see `Syscall::AddressSpaceCap`.
pub fn address_space_cap(kernel: &mut Kernel, pid: Pid, process: u64, dst: u64) -> Result<(), Error> {
    let rights = Rights::CONTROL.union(Rights::GRANT).union(Rights::DERIVE);
    if process == NO_CAP {
        return kernel.install(pid, dst, Object::AddressSpace(pid), rights, 0).map(|_| ());
    }
    let parent = kernel.processes[pid].cspace.get(process)?.clone();
    let Object::Process(target) = parent.object else { return Err(Error::WrongType) };
    if !parent.rights.contains(Rights::CONTROL) {
        return Err(Error::MissingRights);
    }
    let caller = kernel.processes.get_mut(pid).expect("caller");
    caller.cspace.check_empty(dst)?;
    // Derived from the process capability: revoking that revokes this.
    let id = kernel.tree.insert(pid, Some(parent.id));
    caller.cspace.put(dst, Capability { id, object: Object::AddressSpace(target), rights, badge: 0 });
    Ok(())
}

/// `address_space_watch(authority, cap) -> (pin, root, attributes)` once the authority is
/// checked: see `Syscall::AddressSpaceWatch`.
pub fn address_space_watch(kernel: &mut Kernel, pid: Pid, via: &Capability) -> Result<[u64; 3], Error> {
    let Object::AddressSpace(target) = via.object else { return Err(Error::WrongType) };
    let watched = kernel.processes.get(target).ok_or(Error::PeerGone)?;
    // One watch at a time; and tables an IOMMU would read differently from the CPU (a user
    // level without U/S, a page without AF) are not shared.
    if watched.sva.is_some() || !watched.space.iommu_walkable() {
        return Err(Error::InvalidState);
    }
    let root = watched.space.root().phys();
    let pin = kernel.pin(pid, via, None, 0, 0)?;
    let watch = Watched { watcher: pid, pin, changed: None, unread: Vec::new(), unacknowledged: Vec::new() };
    kernel.processes.get_mut(target).expect("checked above").sva = Some(Box::new(watch));
    Ok([pin, root, USER_MEMORY_ATTRIBUTES])
}

impl Kernel {
    /// The process `pid` watches with `pin`, if it is alive.
    fn watched_by(&self, watcher: Pid, pin: u64) -> Option<Pid> {
        self.processes.iter().find_map(|(id, p)| p.sva.as_ref().is_some_and(|w| w.watcher == watcher && w.pin == pin).then_some(id))
    }

    /// `address_space_ack(authority, pin)` once the authority is checked: the frames of the
    /// records read of watch `pin` go back to the pool.
    pub fn address_space_ack(&mut self, pid: Pid, pin: u64) -> Result<(), Error> {
        match self.watched_by(pid, pin) {
            Some(watched) => {
                let watch = self.processes.get_mut(watched).and_then(|p| p.sva.as_mut()).expect("found above");
                watch.unacknowledged.clear();
                Ok(())
            }
            // An ended process's frames go with the watch (`mem_unpin`).
            None if self.exited_spaces.contains_key(&(pid, pin)) => Ok(()),
            None => Err(Error::InvalidArgument),
        }
    }

    /// Tells the watcher of `pid`'s address space, if any, that it changed.
    pub fn notify_address_space_watcher(&mut self, pid: Pid) {
        let Some(watch) = self.processes.get(pid).and_then(|p| p.sva.as_ref()) else { return };
        if watch.changed.is_none() {
            return;
        }
        let signal = self.processes.get(watch.watcher).and_then(|w| w.revocation_watch.clone());
        if let Some((notification, bit)) = signal {
            self.signal(&notification, 1 << bit);
        }
    }

    /// The records of `watcher`'s watched address spaces that changed, at most `max`: each
    /// with the process it is about, for [`Kernel::address_space_changes_read`].
    pub fn address_space_changes(&self, watcher: Pid, max: usize) -> Vec<(Pid, [u64; REVOCATION_RECORD_WORDS])> {
        self.processes
            .iter()
            .filter_map(|(id, p)| {
                let watch = p.sva.as_ref().filter(|w| w.watcher == watcher)?;
                let (first, end) = watch.changed?;
                Some((id, [watch.pin, ADDRESS_SPACE_CHANGE, first, end - first]))
            })
            .take(max)
            .collect()
    }

    /// The watcher has the records of `watched`'s changes: what they freed now awaits its
    /// acknowledgement.
    pub fn address_space_changes_read(&mut self, watched: &[Pid]) {
        for &pid in watched {
            if let Some(watch) = self.processes.get_mut(pid).and_then(|p| p.sva.as_mut()) {
                watch.changed = None;
                let unread = core::mem::take(&mut watch.unread);
                watch.unacknowledged.extend(unread);
            }
        }
    }

    /// The watched process `pid` ended: its tables and frames are held until the watcher
    /// releases the watch, and the watch is revoked so that the watcher learns of it.
    pub fn keep_exited_space(&mut self, watch: Watched, space: AddressSpace, image_frames: Vec<u64>, mappings: Mappings) {
        let Watched { watcher, pin, unread, mut unacknowledged, .. } = watch;
        unacknowledged.extend(unread);
        let exited = ExitedSpace { space: Some(space), image_frames, _mappings: mappings, _held: unacknowledged };
        self.exited_spaces.insert((watcher, pin), exited);
        let Some(process) = self.processes.get_mut(watcher) else { return };
        let Some(held) = process.pins.get_mut(&pin) else { return };
        if let Some(lender) = held.lender.take() {
            self.tree.unlend(lender, (watcher, pin));
        }
        process.revoked_pins.insert(pin);
        if let Some((notification, bit)) = process.revocation_watch.clone() {
            self.signal(&notification, 1 << bit);
        }
    }

    /// Pin `pin` of `watcher`, which ended: if it is an address-space watch, it goes into the
    /// quarantine and keeps holding (see the module documentation).
    pub fn quarantine_address_space_watch(&mut self, watcher: Pid, pin: u64) {
        if self.watched_by(watcher, pin).is_some() || self.exited_spaces.contains_key(&(watcher, pin)) {
            self.quarantine.hold_watch(watcher, pin);
        }
    }

    /// Pages watch `pin` of `watcher` holds out of the pool: what unmaps of a live process
    /// freed, or an ended process's whole address space.
    pub fn address_space_watch_pages(&self, watcher: Pid, pin: u64) -> u64 {
        match self.watched_by(watcher, pin) {
            Some(watched) => {
                let watch = self.processes[watched].sva.as_ref().expect("found by watched_by");
                held_pages(&watch.unread) + held_pages(&watch.unacknowledged)
            }
            None => self.exited_spaces.get(&(watcher, pin)).map_or(0, ExitedSpace::pages),
        }
    }

    /// Watch `pin` of `watcher` ends (`mem_unpin`, or the release of the quarantine that held
    /// it after the watcher's end): whatever it held goes back to the pool.
    pub fn end_address_space_watch(&mut self, watcher: Pid, pin: u64) {
        if let Some(watched) = self.watched_by(watcher, pin) {
            self.processes.get_mut(watched).expect("found above").sva = None;
        }
        self.exited_spaces.remove(&(watcher, pin));
    }
}
