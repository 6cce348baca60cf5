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
//! - a permission downgrade (`mem_protect`): nothing is freed, but the caller waits until the
//!   record was acknowledged, so the device has lost the rights when the call returns. If the
//!   watch ends unacknowledged because its watcher ended, the caller gets PeerGone: the
//!   change holds for the CPU, but nothing confirmed it for the IOMMU. A watch its living
//!   watcher releases (`mem_unpin`, after blocking the device) counts as acknowledged.
//!
//! Records read are acknowledged with `address_space_ack` once the server invalidated the
//! IOMMU's caches; only then do the frames go back to the pool. An exited process's frames go
//! when the server releases the watch (`mem_unpin`), which it does after blocking the device.
//!
//! An address space may have up to `MAX_ADDRESS_SPACE_WATCHES` watches (one per binding):
//! each gets every record and acknowledges on its own; what a change freed is shared between
//! the watches and goes back to the pool with the last acknowledgement (the last release, for
//! an exited process), and a downgrade returns once every watch acknowledged it.
//!
//! If a watcher ends instead (killed, faulted, exited), nobody invalidates any more while a
//! PASID or context entry it wrote may still point at the tables: its watch goes into the
//! kernel's quarantine (`Quarantine`) rather than ending. It goes on holding what the process
//! unmaps and, once the process ends, its whole address space, until a new server that blocked
//! every device calls `quarantine_release`; until then it takes up one of the process's
//! watches, and a downgrade gets no acknowledgement from it (`PeerGone`).

use crate::arch::paging::{AddressSpace, USER_MEMORY_ATTRIBUTES};
use crate::cap::Capability;
use crate::mm::FRAMES;
use crate::object::{Notification, Object};
use crate::process::{Kernel, Mappings, Pid};
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use kernel_abi::{Error, Rights, ADDRESS_SPACE_CHANGE, MAX_ADDRESS_SPACE_WATCHES, NO_CAP, REVOCATION_RECORD_WORDS};

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

/// Pages `held` keeps out of the pool (an object's every frame, as it is freed whole). A change
/// seen by several watches is counted once for each.
fn held_pages(held: &[Rc<Held>]) -> u64 {
    held.iter()
        .map(|held| match &**held {
            Held::Tables(tables) => tables.iter().filter(|&&t| t != 0).count() as u64,
            Held::Object { _object: Object::Memory(memory) } => memory.frames.len() as u64,
            Held::Object { .. } => 0,
        })
        .sum()
}

/// A permission downgrade (`mem_protect`) of a watched address space, which its caller
/// waits on until every watch acknowledged it.
pub struct Downgrade {
    /// The caller waits on it (`ThreadState::Waiting`), and is made runnable when it is done.
    done: Rc<RefCell<Notification>>,
    /// Watches that have not acknowledged it yet.
    pending: Cell<usize>,
    /// A watch ended unacknowledged with its watcher.
    unconfirmed: Cell<bool>,
}

impl Downgrade {
    /// What the caller gets once every watch answered: `None` while one has not.
    pub fn outcome(&self) -> Option<Result<(), Error>> {
        (self.pending.get() == 0).then(|| if self.unconfirmed.get() { Err(Error::PeerGone) } else { Ok(()) })
    }

    /// The notification the caller waits on.
    pub fn done(&self) -> &Rc<RefCell<Notification>> {
        &self.done
    }
}

/// The watch on a process's address space, kept by the watched process.
pub struct Watched {
    /// The process that watches (the IOMMU server) and the pin it watches with.
    pub watcher: Pid,
    pub pin: u64,
    /// Virtual pages `[first, end)` covering every change the watcher has not read yet.
    changed: Option<(u64, u64)>,
    /// What those changes freed (shared with the address space's other watches).
    unread: Vec<Rc<Held>>,
    /// What the changes the watcher read freed, until it acknowledges them.
    unacknowledged: Vec<Rc<Held>>,
    /// The downgrades among the unread changes, and among those read.
    unread_downgrades: Vec<Rc<Downgrade>>,
    unacknowledged_downgrades: Vec<Rc<Downgrade>>,
}

impl Watched {
    /// Whether the watch holds frames for a change not yet read or acknowledged.
    pub fn holds_frames(&self) -> bool {
        !self.unread.is_empty() || !self.unacknowledged.is_empty()
    }

    fn changed_page(&mut self, va: u64) {
        let page = va / crate::arch::PAGE_SIZE;
        self.changed = Some(match self.changed {
            Some((first, end)) => (first.min(page), end.max(page + 1)),
            None => (page, page + 1),
        });
    }
}

/// The page at `va` of an address space with `watches` was unmapped: `tables` (unlinked, not
/// freed) and the memory `object` it mapped are held until every watch acknowledged.
pub fn unmapped(watches: &mut [Watched], va: u64, tables: [u64; 3], object: Option<Object>) {
    let tables = tables.iter().any(|&t| t != 0).then(|| Rc::new(Held::Tables(tables)));
    let object = object.map(|object| Rc::new(Held::Object { _object: object }));
    for watch in watches.iter_mut() {
        watch.changed_page(va);
        watch.unread.extend(tables.iter().chain(object.iter()).cloned());
    }
}

/// The tables of a watched process that ended, held whole until its last watch is released.
struct ExitedTables {
    space: Option<AddressSpace>,
    image_frames: Vec<u64>,
    /// Dropped after the tables: they hold the memory objects the tables mapped.
    _mappings: Mappings,
}

/// What one watch of an ended process holds until its watcher releases it.
pub struct ExitedSpace {
    _tables: Rc<ExitedTables>,
    _held: Vec<Rc<Held>>,
}

impl ExitedSpace {
    /// Pages held: the tables (root included), the image, each memory object mapped (once)
    /// and what earlier unmaps held.
    fn pages(&self) -> u64 {
        let exited = &*self._tables;
        let tables = exited.space.as_ref().map_or(0, |space| space.table_frames() + 1);
        let mut objects: Vec<(u64, u64)> = exited
            ._mappings
            .objects()
            .filter_map(|object| match object {
                Object::Memory(memory) => Some((memory.serial, memory.frames.len() as u64)),
                _ => None,
            })
            .collect();
        objects.sort_unstable();
        objects.dedup();
        tables + exited.image_frames.len() as u64 + objects.iter().map(|&(_, pages)| pages).sum::<u64>() + held_pages(&self._held)
    }
}

impl Drop for ExitedTables {
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
    // A few watches at a time; and tables an IOMMU would read differently from the CPU (a
    // user level without U/S, a page without AF) are not shared.
    if watched.sva.len() >= MAX_ADDRESS_SPACE_WATCHES || !watched.space.iommu_walkable() {
        return Err(Error::InvalidState);
    }
    let root = watched.space.root().phys();
    let watches = &mut kernel.processes.get_mut(target).expect("checked above").sva;
    watches.try_reserve(1).map_err(|_| Error::OutOfMemory)?;
    let pin = kernel.pin(pid, via, None, 0, 0)?;
    let watch = Watched {
        watcher: pid,
        pin,
        changed: None,
        unread: Vec::new(),
        unacknowledged: Vec::new(),
        unread_downgrades: Vec::new(),
        unacknowledged_downgrades: Vec::new(),
    };
    kernel.processes.get_mut(target).expect("checked above").sva.push(watch);
    Ok([pin, root, USER_MEMORY_ATTRIBUTES])
}

impl Kernel {
    /// The process `pid` watches with `pin`, if it is alive, and the watch's index.
    fn watched_by(&self, watcher: Pid, pin: u64) -> Option<(Pid, usize)> {
        self.processes.iter().find_map(|(id, p)| p.sva.iter().position(|w| w.watcher == watcher && w.pin == pin).map(|index| (id, index)))
    }

    /// `address_space_ack(authority, pin)` once the authority is checked: the frames of the
    /// records read of watch `pin` go back to the pool (once no other watch holds them), and
    /// the downgrades among them are done for this watch.
    pub fn address_space_ack(&mut self, pid: Pid, pin: u64) -> Result<(), Error> {
        match self.watched_by(pid, pin) {
            Some((watched, index)) => {
                let watch = &mut self.processes.get_mut(watched).expect("found above").sva[index];
                watch.unacknowledged.clear();
                let downgrades = core::mem::take(&mut watch.unacknowledged_downgrades);
                downgrades.iter().for_each(|downgrade| self.answer_downgrade(downgrade, true));
                Ok(())
            }
            // An ended process's frames go with the watch (`mem_unpin`).
            None if self.exited_spaces.contains_key(&(pid, pin)) => Ok(()),
            None => Err(Error::InvalidArgument),
        }
    }

    /// Tells the watcher of `pid`'s address space, if any, that it changed.
    pub fn notify_address_space_watcher(&mut self, pid: Pid) {
        let watches = self.processes.get(pid).map_or(0, |p| p.sva.len());
        // By index: signalling needs the kernel, which the watches are part of.
        for index in 0..watches {
            let watch = &self.processes[pid].sva[index];
            let Some(watcher) = self.processes.get(watch.watcher).filter(|_| watch.changed.is_some()) else { continue };
            if let Some((notification, bit)) = watcher.revocation_watch.clone() {
                self.signal(&notification, 1 << bit);
            }
        }
    }

    /// `mem_protect(va, pages, flags)` of `pid` once the range is checked: every page keeps
    /// only the rights in `flags`. Returns the downgrade to wait for if the address space is
    /// watched and a page lost a right (see the module's description).
    pub fn protect(&mut self, pid: Pid, va: u64, pages: u64, flags: crate::arch::MapFlags) -> Result<Option<Rc<Downgrade>>, Error> {
        let page_size = crate::arch::PAGE_SIZE;
        let process = self.processes.get_mut(pid).expect("caller");
        let pages_at = |i: u64| va + i * page_size;
        if (0..pages).any(|i| !process.mappings.contains(pages_at(i))) {
            return Err(Error::NotMapped);
        }
        let adds = |(_, had): (u64, crate::arch::MapFlags)| (flags.writable && !had.writable) || (flags.executable && !had.executable);
        if (0..pages).any(|i| process.space.translate(pages_at(i)).is_some_and(adds)) {
            return Err(Error::MissingRights);
        }
        let watched = !process.sva.is_empty();
        let mut downgraded = false;
        for i in 0..pages {
            if process.space.downgrade(pages_at(i), flags) {
                downgraded = true;
                process.sva.iter_mut().for_each(|watch| watch.changed_page(pages_at(i)));
            }
        }
        if !watched || !downgraded {
            return Ok(None);
        }
        let done = Rc::new(RefCell::new(Notification::default()));
        let downgrade = Rc::new(Downgrade { done, pending: Cell::new(process.sva.len()), unconfirmed: Cell::new(false) });
        let watchers: Vec<Pid> = process.sva.iter().map(|watch| watch.watcher).collect();
        for watch in process.sva.iter_mut() {
            watch.unread_downgrades.push(downgrade.clone());
        }
        // A watch whose watcher is gone (its watch kept, not ended) will not acknowledge.
        let orphaned = watchers.into_iter().filter(|&watcher| !self.processes.contains(watcher)).count();
        (0..orphaned).for_each(|_| self.answer_downgrade(&downgrade, false));
        self.notify_address_space_watcher(pid);
        Ok(Some(downgrade))
    }

    /// One watch answered `downgrade`: acknowledged (`confirmed`) or ended with its watcher.
    /// With the last answer its caller, if still waiting, runs on with the outcome.
    fn answer_downgrade(&mut self, downgrade: &Downgrade, confirmed: bool) {
        if !confirmed {
            downgrade.unconfirmed.set(true);
        }
        downgrade.pending.set(downgrade.pending.get().saturating_sub(1));
        let Some(outcome) = downgrade.outcome() else { return };
        let waiter = downgrade.done.borrow_mut().waiters.pop_front();
        if let Some(tid) = waiter {
            let status = outcome.err().map_or(0, |error| error as u64);
            self.make_runnable(tid, &[status]);
        }
    }

    /// The records of `watcher`'s watched address spaces that changed, at most `max`: each
    /// with the process it is about, for [`Kernel::address_space_changes_read`].
    pub fn address_space_changes(&self, watcher: Pid, max: usize) -> Vec<(Pid, [u64; REVOCATION_RECORD_WORDS])> {
        self.processes
            .iter()
            .flat_map(|(id, p)| p.sva.iter().filter(move |w| w.watcher == watcher).map(move |w| (id, w)))
            .filter_map(|(id, watch)| {
                let (first, end) = watch.changed?;
                Some((id, [watch.pin, ADDRESS_SPACE_CHANGE, first, end - first]))
            })
            .take(max)
            .collect()
    }

    /// `watcher` has the records of its watches `(process, pin)`: what their changes freed,
    /// and the downgrades among them, now await its acknowledgement.
    pub fn address_space_changes_read(&mut self, watcher: Pid, read: &[(Pid, u64)]) {
        for &(pid, pin) in read {
            let Some(process) = self.processes.get_mut(pid) else { continue };
            for watch in process.sva.iter_mut().filter(|watch| watch.watcher == watcher && watch.pin == pin) {
                watch.changed = None;
                let unread = core::mem::take(&mut watch.unread);
                watch.unacknowledged.extend(unread);
                let downgrades = core::mem::take(&mut watch.unread_downgrades);
                watch.unacknowledged_downgrades.extend(downgrades);
            }
        }
    }

    /// The watched process `pid` ended: its tables and frames are held until every watcher
    /// released its watch, and each watch is revoked so that its watcher learns of it.
    pub fn keep_exited_space(&mut self, watches: Vec<Watched>, space: AddressSpace, image_frames: Vec<u64>, mappings: Mappings) {
        let tables = Rc::new(ExitedTables { space: Some(space), image_frames, _mappings: mappings });
        for watch in watches {
            let Watched { watcher, pin, unread, mut unacknowledged, .. } = watch;
            unacknowledged.extend(unread);
            self.exited_spaces.insert((watcher, pin), ExitedSpace { _tables: tables.clone(), _held: unacknowledged });
            let Some(process) = self.processes.get_mut(watcher) else { continue };
            let Some(held) = process.pins.get_mut(&pin) else { continue };
            if let Some(lender) = held.lender.take() {
                self.tree.unlend(lender, (watcher, pin));
            }
            process.revoked_pins.insert(pin);
            if let Some((notification, bit)) = process.revocation_watch.clone() {
                self.signal(&notification, 1 << bit);
            }
        }
    }

    /// Pin `pin` of `watcher`, which ended: if it is an address-space watch, it goes into the
    /// quarantine and keeps holding (see the module documentation). The downgrades it had not
    /// acknowledged are answered at once as unconfirmed: nobody will invalidate for them.
    pub fn quarantine_address_space_watch(&mut self, watcher: Pid, pin: u64) {
        if let Some((watched, index)) = self.watched_by(watcher, pin) {
            let watch = &mut self.processes.get_mut(watched).expect("found above").sva[index];
            let mut downgrades = core::mem::take(&mut watch.unread_downgrades);
            downgrades.append(&mut watch.unacknowledged_downgrades);
            downgrades.iter().for_each(|downgrade| self.answer_downgrade(downgrade, false));
            self.quarantine.hold_watch(watcher, pin);
        } else if self.exited_spaces.contains_key(&(watcher, pin)) {
            self.quarantine.hold_watch(watcher, pin);
        }
    }

    /// Pages watch `pin` of `watcher` holds out of the pool: what unmaps of a live process
    /// freed, or an ended process's whole address space.
    pub fn address_space_watch_pages(&self, watcher: Pid, pin: u64) -> u64 {
        match self.watched_by(watcher, pin) {
            Some((watched, index)) => {
                let watch = &self.processes[watched].sva[index];
                held_pages(&watch.unread) + held_pages(&watch.unacknowledged)
            }
            None => self.exited_spaces.get(&(watcher, pin)).map_or(0, ExitedSpace::pages),
        }
    }

    /// Watch `pin` of `watcher` ends (`mem_unpin`, or the release of the quarantine that held
    /// it after the watcher's end): whatever it alone held goes back to the pool. The
    /// downgrades it had not acknowledged are answered: as acknowledged if its watcher released
    /// it, unconfirmed if the watcher is gone.
    pub fn end_address_space_watch(&mut self, watcher: Pid, pin: u64) {
        if let Some((watched, index)) = self.watched_by(watcher, pin) {
            let watch = self.processes.get_mut(watched).expect("found above").sva.remove(index);
            let released = self.processes.contains(watcher);
            for downgrade in watch.unread_downgrades.iter().chain(&watch.unacknowledged_downgrades) {
                self.answer_downgrade(downgrade, released);
            }
        }
        self.exited_spaces.remove(&(watcher, pin));
    }
}
