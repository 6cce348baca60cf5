//! Processes, threads, the scheduler loop, and the kernel state they share.
//!
//! The kernel has no threads of its own: [`Kernel::run_once`] picks the next runnable thread,
//! enters user mode with `arch::run_user`, and handles whatever brought it back (system call,
//! fault, timer, device interrupt). A blocked thread is simply not in the run queue; whoever
//! unblocks it writes its system-call results into its saved context and queues it.
//! A process that faults is killed, and everything it held is returned: capabilities (and the
//! mappings made through them), threads, page tables and frames; the memory it had pinned for
//! devices goes into quarantine instead (see [`Quarantine`]).

use crate::arch::{self, paging::{AddressSpace, Root}, MapError, MapFlags, Trap, UserContext, PAGE_SIZE};
use crate::cap::{CSpace, CapId, Capability, DerivationTree};
use crate::elf::{self, ElfError};
use crate::mm::FRAMES;
use crate::object::{Endpoint, IrqLine, MemoryObject, Notification, Object, Quota, QuotaAccount};
use slot_table::SlotTable;
use crate::sched::{RunQueue, DEFAULT_PRIORITY, PRIORITY_LEVELS};
use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::rc::{Rc, Weak};
use alloc::vec::Vec;
use core::cell::RefCell;
use kernel_abi::{Error, Rights};

/// A process id: a `slot-table` key (16 index bits, 16 generation bits; never 0).
pub type Pid = u32;
/// A thread id, like [`Pid`].
pub type Tid = u32;

/// Top of every process's initial stack (the page above it stays unmapped as a guard).
pub const USER_STACK_TOP: u64 = 0x0000_7FFF_FFF0_0000;
pub const USER_STACK_PAGES: u64 = 16;
/// Threads one process may have.
pub const MAX_THREADS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    Exited(u64),
    /// Killed by the kernel for a fault it took.
    Faulted(Trap),
    /// Killed through a process capability.
    Killed,
}

pub enum ThreadState {
    Runnable,
    /// In `call`, queued on an endpoint (`Endpoint::senders`, with the call's badge and
    /// capability) until a receiver takes the call; its message words stay in its saved
    /// argument registers. The state stays small enough to move cheaply.
    Sending { ep: Rc<RefCell<Endpoint>> },
    /// In `recv`, queued on an endpoint.
    Receiving { ep: Rc<RefCell<Endpoint>>, recv_slot: u64 },
    /// In `call`, message delivered, waiting for `server` to reply.
    AwaitingReply { server: Tid },
    Waiting { notification: Rc<RefCell<Notification>> },
}

pub struct Thread {
    pub pid: Pid,
    /// 0 (lowest) ..= PRIORITY_LEVELS - 1.
    pub priority: u8,
    pub context: UserContext,
    pub state: ThreadState,
    /// The caller this thread received from last and has not replied to.
    pub reply_to: Option<Tid>,
    /// Its process's address space (`run_once` switches to it without a process lookup).
    pub space: Root,
}

impl Thread {
    /// Moves the thread from a state that holds nothing (`Runnable`, `AwaitingReply`) to
    /// `state`. The old state is forgotten rather than dropped: it owns nothing, and a drop
    /// would run the whole enum's drop glue, an out-of-line call, on the IPC path.
    pub fn leave_plain_state(&mut self, state: ThreadState) {
        match core::mem::replace(&mut self.state, state) {
            plain @ (ThreadState::Runnable | ThreadState::AwaitingReply { .. }) => core::mem::forget(plain),
            _ => unreachable!("the thread was blocked on an object"),
        }
    }
}

/// One user mapping and the capability it was made through.
pub struct Mapping {
    pub via: CapId,
    /// Keeps the memory alive while mapped.
    pub _object: Object,
}

/// A process's mappings, indexed by address and by the capability they were made through, so
/// that deleting a capability finds its mappings without scanning them all.
#[derive(Default)]
pub struct Mappings {
    by_address: BTreeMap<u64, Mapping>,
    by_capability: BTreeMap<CapId, BTreeSet<u64>>,
}

impl Mappings {
    pub fn insert(&mut self, va: u64, mapping: Mapping) {
        self.by_capability.entry(mapping.via).or_default().insert(va);
        self.by_address.insert(va, mapping);
    }

    pub fn remove(&mut self, va: u64) -> Option<Mapping> {
        let mapping = self.by_address.remove(&va)?;
        if let Some(set) = self.by_capability.get_mut(&mapping.via) {
            set.remove(&va);
            if set.is_empty() {
                self.by_capability.remove(&mapping.via);
            }
        }
        Some(mapping)
    }

    pub fn contains(&self, va: u64) -> bool {
        self.by_address.contains_key(&va)
    }

    pub fn len(&self) -> u64 {
        self.by_address.len() as u64
    }

    /// Addresses of the mappings made through capability `id`.
    pub fn made_through(&self, id: CapId) -> Vec<u64> {
        self.by_capability.get(&id).map(|set| set.iter().copied().collect()).unwrap_or_default()
    }

    /// The objects mapped, once per mapping.
    pub fn objects(&self) -> impl Iterator<Item = &Object> {
        self.by_address.values().map(|mapping| &mapping._object)
    }

    pub fn clear(&mut self) {
        self.by_address.clear();
        self.by_capability.clear();
    }
}

/// Mapping records one quota page pays for. A record (its entry in each index and its share of
/// their tree nodes) takes about 100 bytes of kernel heap.
pub const MAPPING_RECORDS_PER_PAGE: u64 = 32;

/// Quota pages `records` mapping records cost.
pub fn mapping_record_pages(records: u64) -> u64 {
    records.div_ceil(MAPPING_RECORDS_PER_PAGE)
}

/// A pin: frames of a memory object kept out of the free pool (none for a `cap_watch`), and
/// the capability it is lent through while that stands (see `Syscall::RevocationWatch`).
pub struct Pin {
    pub memory: Option<Rc<MemoryObject>>,
    pub first_page: u64,
    pub pages: u64,
    /// `None` once revoked, or if nobody else lent it.
    pub lender: Option<CapId>,
}

/// Memory objects a process had pinned when it ended, kept out of the free pool: pins are how
/// an IOMMU server learns the physical addresses it writes into tables, so what it pinned (its
/// root, context and stream tables, page tables, queues, and its clients' pages) may still be
/// walked or written by a unit that nobody reprograms any more. They stay here until a holder
/// of the DMA authority states that no unit can reach them (`quarantine_release`: a new server
/// that put every unit into a blocking state over its own tables). Keyed by object serial: an
/// object pinned page by page is held once.
///
/// The address-space watches (SVA) of an ended watcher are held too: a unit may still walk the
/// watched process's tables through a PASID or context entry the dead server wrote, so the
/// watch goes on holding what the process unmaps (and, once it ends, its whole address space)
/// until the same release (see `crate::sva`).
#[derive(Default)]
pub struct Quarantine {
    objects: BTreeMap<u64, Rc<MemoryObject>>,
    /// (dead watcher, pin) of each watch held.
    watches: Vec<(Pid, u64)>,
}

impl Quarantine {
    fn hold(&mut self, memory: Rc<MemoryObject>) {
        self.objects.entry(memory.serial).or_insert(memory);
    }

    pub(crate) fn hold_watch(&mut self, watcher: Pid, pin: u64) {
        self.watches.push((watcher, pin));
    }

    /// Address-space watches held.
    pub fn watches(&self) -> u64 {
        self.watches.len() as u64
    }

    /// Pages of the objects held (every page of each object, pinned or not: the object is
    /// freed whole); `Kernel::quarantined_pages` adds what the watches hold.
    pub fn pages(&self) -> u64 {
        self.objects.values().map(|m| m.frames.len() as u64).sum()
    }

    pub fn objects(&self) -> u64 {
        self.objects.len() as u64
    }

    /// Every frame held.
    pub fn frames(&self) -> impl Iterator<Item = u64> + '_ {
        self.objects.values().flat_map(|m| m.frames.iter().copied())
    }

    /// Lets every held object go (its frames return to the pool unless something else still
    /// holds it); returns the pages and objects released.
    fn release_objects(&mut self) -> (u64, u64) {
        let released = (self.pages(), self.objects());
        self.objects.clear();
        released
    }
}

impl Kernel {
    /// Pages the quarantine holds: its objects' and those its watches hold.
    pub fn quarantined_pages(&self) -> u64 {
        let watches: u64 = self.quarantine.watches.iter().map(|&(watcher, pin)| self.address_space_watch_pages(watcher, pin)).sum();
        self.quarantine.pages() + watches
    }

    /// Lets everything the quarantine holds go (`quarantine_release`): its objects, and its
    /// watches, which end (what they held returns to the pool); returns the pages released
    /// and the objects and watches they were in.
    pub fn release_quarantine(&mut self) -> (u64, u64) {
        let pages = self.quarantined_pages();
        let watches = core::mem::take(&mut self.quarantine.watches);
        let held = watches.len() as u64;
        for (watcher, pin) in watches {
            self.end_address_space_watch(watcher, pin);
        }
        let (_, objects) = self.quarantine.release_objects();
        (pages, objects + held)
    }
}

pub struct Process {
    pub name: &'static str,
    /// Its user mappings go through `map_page` and `unmap_page`, which charge the page-table
    /// frames and records they add to the quota.
    pub space: AddressSpace,
    /// Page-table frames that mappings made after the image was loaded added, and that the
    /// quota pays for (the image's own tables are the kernel's cost of creating the process).
    charged_tables: u64,
    /// Frames of the boot image and the initial stack.
    image_frames: Vec<u64>,
    pub cspace: CSpace,
    pub mappings: Mappings,
    /// Pin id -> what it holds (`mem_pin`, `mem_pin_range`, `cap_watch`).
    pub pins: BTreeMap<u64, Pin>,
    pub next_pin: u64,
    /// Revoked pins whose records `revocation_read` has not handed out yet: at most one entry
    /// per pin, so bounded by `MAX_PINS` whatever lenders do.
    pub revoked_pins: BTreeSet<u64>,
    /// Signalled (notification, bit) when one of this process's pins is revoked.
    pub revocation_watch: Option<(Rc<RefCell<Notification>>, u64)>,
    pub quota: Quota,
    pub threads: Vec<Tid>,
    entry: u64,
    arg: u64,
    pub started: bool,
    pub watchers: Vec<(Rc<RefCell<Notification>>, u64)>,
    /// The IOMMU server's watch on this address space while a device shares it (SVA).
    pub sva: Vec<crate::sva::Watched>,
}

impl Process {
    /// Maps `pa` at `va` through capability `via`, charging the page-table frames this adds and
    /// the record's share of a page to the quota; on any refusal nothing is left behind.
    pub fn map_page(&mut self, va: u64, pa: u64, flags: MapFlags, via: &Capability) -> Result<(), Error> {
        let records = mapping_record_pages(self.mappings.len() + 1) - mapping_record_pages(self.mappings.len());
        let tables_before = self.space.table_frames();
        {
            let mut frames = FRAMES.lock();
            let mapped = self.space.map(va, pa, flags, &mut frames);
            let added = self.space.table_frames() - tables_before;
            if mapped.is_err() || !self.quota.charge(added + records) {
                // Frees the tables this attempt added (empty but for this page, if it mapped).
                if mapped.is_ok() {
                    self.space.unmap(va, &mut frames);
                } else {
                    self.space.free_empty_tables(va, &mut frames);
                }
                return Err(match mapped {
                    Err(MapError::AlreadyMapped) => Error::AlreadyMapped,
                    Err(MapError::BadAddress) => Error::BadAddress,
                    _ => Error::OutOfMemory,
                });
            }
            self.charged_tables += added;
        }
        self.mappings.insert(va, Mapping { via: via.id, _object: via.object.clone() });
        Ok(())
    }

    /// Removes the mapping at `va`, frees the page tables it leaves empty and returns their
    /// charge and the record's to the quota.
    pub fn unmap_page(&mut self, va: u64) {
        if !self.sva.is_empty() {
            return self.unmap_shared_page(va);
        }
        let tables_before = self.space.table_frames();
        self.space.unmap(va, &mut FRAMES.lock());
        let freed = tables_before - self.space.table_frames();
        let records_before = mapping_record_pages(self.mappings.len());
        // Dropped after the frame lock is released: it may hold the last reference to a memory
        // object, whose frames then go back to the pool.
        let removed = self.mappings.remove(va);
        self.charged_tables -= freed;
        self.quota.release(freed + records_before - mapping_record_pages(self.mappings.len()));
        drop(removed);
    }

    /// `unmap_page` of an address space a device shares: the page tables it frees and the
    /// memory it stops mapping are held for the watcher instead of freed (see `crate::sva`).
    fn unmap_shared_page(&mut self, va: u64) {
        let tables = self.space.unmap_keeping_tables(va);
        let freed = tables.iter().filter(|&&t| t != 0).count() as u64;
        let records_before = mapping_record_pages(self.mappings.len());
        let removed = self.mappings.remove(va);
        self.charged_tables -= freed;
        self.quota.release(freed + records_before - mapping_record_pages(self.mappings.len()));
        crate::sva::unmapped(&mut self.sva, va, tables, removed.map(|mapping| mapping._object));
    }
}

/// What a system call other than IPC asks the scheduler to do with the calling thread (IPC
/// picks the next thread itself: see `Kernel::deliver`).
pub enum Continuation {
    /// The caller runs on with these first four results (status and up to three values).
    Return([u64; 4]),
    /// The caller, its results written, goes to the back of its level.
    Yield,
    /// The caller waits; the next thread in the run queue runs.
    Block,
    Exit(u64),
}

/// The thread that runs next in the current time slice, with its id, or `None` when the slice
/// ends. Whoever decides finds the thread once, and the scheduler runs it from that reference.
pub type Next<'k> = Option<(Tid, &'k mut Thread)>;

pub struct Kernel {
    /// Boxed: a slot is then two words, and a lookup tests a pointer rather than a niche deep
    /// in the record.
    pub processes: SlotTable<Pid, Box<Process>>,
    pub threads: SlotTable<Tid, Thread>,
    pub run_queue: RunQueue,
    exited: BTreeMap<Pid, ExitReason>,
    pub tree: DerivationTree,
    pub irqs: BTreeMap<u32, Weak<RefCell<IrqLine>>>,
    /// arm: the IRQ objects `msi_route` made, by DeviceID (`syscall::msi`).
    #[cfg(target_arch = "aarch64")]
    pub msi_routes: BTreeMap<u32, Vec<Weak<RefCell<IrqLine>>>>,
    pub images: &'static [(&'static str, &'static [u8])],
    /// Address spaces of ended processes a device shared, by (watcher, pin): held until the
    /// watcher releases its watch (see `crate::sva`).
    pub exited_spaces: BTreeMap<(Pid, u64), crate::sva::ExitedSpace>,
    /// What ended pinners held for devices. Dropped with the kernel state (tests only: the
    /// kernel of a running system is never dropped).
    pub quarantine: Quarantine,
}

impl Kernel {
    pub fn new(images: &'static [(&'static str, &'static [u8])]) -> Self {
        Kernel {
            processes: SlotTable::new(),
            threads: SlotTable::new(),
            run_queue: RunQueue::new(),
            exited: BTreeMap::new(),
            tree: DerivationTree::new(),
            irqs: BTreeMap::new(),
            #[cfg(target_arch = "aarch64")]
            msi_routes: BTreeMap::new(),
            images,
            exited_spaces: BTreeMap::new(),
            quarantine: Quarantine::default(),
        }
    }

    /// Creates a process from an ELF image, not yet started. Its image and stack frames are
    /// charged to `quota_pages` as well.
    pub fn create_process(&mut self, name: &'static str, image: &[u8], arg: u64, quota_pages: u64) -> Result<Pid, ElfError> {
        let mut frames = FRAMES.lock();
        let mut space = AddressSpace::new(&mut frames).ok_or(ElfError::OutOfMemory)?;
        let mut owned = Vec::new();
        let loaded = elf::load(image, &mut space, &mut frames, &mut owned).and_then(|entry| {
            let stack = MapFlags { writable: true, executable: false, device: false };
            for i in 1..=USER_STACK_PAGES {
                let frame = frames.alloc().ok_or(ElfError::OutOfMemory)?;
                owned.push(frame);
                space.map(USER_STACK_TOP - i * PAGE_SIZE, frame, stack, &mut frames).map_err(|_| ElfError::OutOfMemory)?;
            }
            Ok(entry)
        });
        let entry = match loaded {
            Ok(entry) => entry,
            Err(e) => {
                space.destroy(&mut frames);
                owned.into_iter().for_each(|f| frames.free(f));
                return Err(e);
            }
        };
        let process = Process {
                name,
                space,
                charged_tables: 0,
                image_frames: owned,
                cspace: CSpace::new(),
                mappings: Mappings::default(),
                pins: BTreeMap::new(),
                next_pin: 1,
                revoked_pins: BTreeSet::new(),
                revocation_watch: None,
                quota: QuotaAccount::new(quota_pages),
                threads: Vec::new(),
                entry,
                arg,
                started: false,
                watchers: Vec::new(),
                sva: Vec::new(),
            };
        match self.processes.insert(Box::new(process)) {
            Some(pid) => Ok(pid),
            None => Err(ElfError::OutOfMemory),
        }
    }

    /// Starts the first thread of a created process.
    pub fn start_process(&mut self, pid: Pid) -> Result<(), Error> {
        let process = self.processes.get_mut(pid).ok_or(Error::PeerGone)?;
        if process.started {
            return Err(Error::InvalidState);
        }
        process.started = true;
        let (entry, arg) = (process.entry, process.arg);
        self.add_thread(pid, UserContext::new(entry, USER_STACK_TOP, arg), DEFAULT_PRIORITY).map(|_| ())
    }

    pub fn add_thread(&mut self, pid: Pid, context: UserContext, priority: u8) -> Result<Tid, Error> {
        if priority as usize >= PRIORITY_LEVELS {
            return Err(Error::InvalidArgument);
        }
        let process = self.processes.get_mut(pid).ok_or(Error::PeerGone)?;
        if process.threads.len() >= MAX_THREADS {
            return Err(Error::OutOfMemory);
        }
        let thread = Thread { pid, priority, context, state: ThreadState::Runnable, reply_to: None, space: process.space.root() };
        let tid = self.threads.insert(thread).ok_or(Error::OutOfMemory)?;
        self.processes.get_mut(pid).expect("checked above").threads.push(tid);
        self.run_queue.push_back(tid, priority);
        Ok(tid)
    }

    pub fn spawn(&mut self, name: &'static str, image: &[u8], arg: u64, quota_pages: u64) -> Result<Pid, ElfError> {
        let pid = self.create_process(name, image, arg, quota_pages)?;
        self.start_process(pid).map_err(|_| ElfError::OutOfMemory)?;
        Ok(pid)
    }

    /// Puts a new original capability (no parent) into `slot` of `pid`.
    pub fn install(&mut self, pid: Pid, slot: u64, object: Object, rights: Rights, badge: u64) -> Result<CapId, Error> {
        let process = self.processes.get_mut(pid).ok_or(Error::PeerGone)?;
        process.cspace.check_empty(slot)?;
        let id = self.tree.insert(pid, None);
        process.cspace.put(slot, Capability { id, object, rights, badge });
        Ok(id)
    }

    /// Puts a capability derived from `parent` into `slot` of `pid`.
    pub fn install_derived(&mut self, pid: Pid, slot: u64, parent: &Capability, rights: Rights, badge: u64) -> Result<CapId, Error> {
        let process = self.processes.get_mut(pid).ok_or(Error::PeerGone)?;
        process.cspace.check_empty(slot)?;
        let id = self.tree.insert(pid, Some(parent.id));
        process.cspace.put(slot, Capability { id, object: parent.object.clone(), rights, badge });
        Ok(id)
    }

    /// Deletes the capability in `slot` of `pid` and every mapping made through it; the pins
    /// lent through it are revoked.
    pub fn delete_cap(&mut self, pid: Pid, slot: u64) -> Result<(), Error> {
        let process = self.processes.get_mut(pid).ok_or(Error::PeerGone)?;
        let cap = process.cspace.take(slot)?;
        for va in process.mappings.made_through(cap.id) {
            process.unmap_page(va);
        }
        self.notify_address_space_watcher(pid);
        self.tree.remove(cap.id);
        if self.tree.has_revoked() {
            self.deliver_revocations();
        }
        Ok(())
    }

    /// Deletes every capability derived from the one in `slot` of `pid`, and revokes the pins
    /// lent through it or through any of them.
    pub fn revoke(&mut self, pid: Pid, slot: u64) -> Result<(), Error> {
        let id = self.processes.get(pid).ok_or(Error::PeerGone)?.cspace.get(slot)?.id;
        self.tree.revoke_lent(id);
        for (descendant, owner) in self.tree.descendants(id) {
            let found = self.processes.get(owner).and_then(|p| p.cspace.find(descendant));
            match found {
                Some(s) => self.delete_cap(owner, s)?,
                // In flight with a queued call: drop it there.
                None => self.drop_in_flight(descendant),
            }
        }
        self.deliver_revocations();
        Ok(())
    }

    /// Hands the pins revoked since the last call to their pinners: each such pin loses its
    /// lender and gets one pending record (it keeps its frames until `mem_unpin`), and each
    /// pinner with a revocation watch is signalled once.
    pub fn deliver_revocations(&mut self) {
        let mut to_signal: Vec<(Rc<RefCell<Notification>>, u64)> = Vec::new();
        for (pinner, pin) in self.tree.take_revoked() {
            let Some(process) = self.processes.get_mut(pinner) else { continue };
            let Some(held) = process.pins.get_mut(&pin) else { continue };
            if held.lender.take().is_none() {
                continue;
            }
            process.revoked_pins.insert(pin);
            if let Some((notification, bit)) = &process.revocation_watch {
                if !to_signal.iter().any(|(n, b)| Rc::ptr_eq(n, notification) && b == bit) {
                    to_signal.push((notification.clone(), *bit));
                }
            }
        }
        for (notification, bit) in to_signal {
            self.signal(&notification, 1 << bit);
        }
    }

    /// Records a new pin of `pid` taken through capability `via` (see
    /// `Syscall::RevocationWatch` for the capability it is lent through) and returns its
    /// number.
    pub fn pin(&mut self, pid: Pid, via: &Capability, memory: Option<Rc<MemoryObject>>, first_page: u64, pages: u64) -> Result<u64, Error> {
        let process = self.processes.get_mut(pid).ok_or(Error::PeerGone)?;
        if process.pins.len() >= kernel_abi::MAX_PINS {
            return Err(Error::OutOfMemory);
        }
        let pin = process.next_pin;
        process.next_pin += 1;
        let lender = self.tree.lend(via.id, pid, pin);
        process.pins.insert(pin, Pin { memory, first_page, pages, lender });
        Ok(pin)
    }

    /// Releases pin `pin` of `pid` (`mem_unpin`): its frames may return to the pool.
    pub fn unpin(&mut self, pid: Pid, pin: u64) -> Result<(), Error> {
        let process = self.processes.get_mut(pid).ok_or(Error::PeerGone)?;
        let held = process.pins.remove(&pin).ok_or(Error::InvalidArgument)?;
        match held.lender {
            Some(lender) => self.tree.unlend(lender, (pid, pin)),
            // Revoked (or never lent): its record may still be pending.
            None => {
                process.revoked_pins.remove(&pin);
            }
        }
        if held.memory.is_none() {
            self.end_address_space_watch(pid, pin);
        }
        Ok(())
    }

    fn drop_in_flight(&mut self, id: CapId) {
        for thread in self.threads.values_mut() {
            if let ThreadState::Sending { ep } = &thread.state {
                for call in ep.borrow_mut().senders.iter_mut() {
                    if call.cap.as_ref().is_some_and(|c| c.id == id) {
                        call.cap = None;
                    }
                }
            }
        }
        self.tree.remove(id);
    }

    /// Always inlined: on the notification path (`signal`) the results' length is then known
    /// and they are stored directly; called out of line, the copy became a `memcpy` call.
    #[inline(always)]
    pub fn make_runnable(&mut self, tid: Tid, results: &[u64]) {
        if let Some(t) = self.threads.get_mut(tid) {
            t.context.set_syscall_result(results);
            t.state = ThreadState::Runnable;
            self.run_queue.push_back(tid, t.priority);
        }
    }

    /// Hands the message of thread `from`, in `call` through a capability with `badge`, (and
    /// `cap`) to the receiver `to`, which is `Receiving`; `from` now awaits its reply. The
    /// receiver runs next (see `switch_to`). Always inlined: on the IPC path, a call's register
    /// saving and argument passing cost about as much as the body.
    #[inline(always)]
    pub fn deliver(&mut self, from: Tid, to: Tid, badge: u64, cap: Option<Capability>) -> Next<'_> {
        // The sender is the running thread, or was taken off the endpoint and made runnable.
        let sender = self.threads.get_mut(from).expect("sender exists");
        sender.leave_plain_state(ThreadState::AwaitingReply { server: to });
        // The message words are the call's last four arguments, which stay in the sender's
        // saved registers until it is answered.
        let [.., w0, w1, w2, w3] = sender.context.syscall_args();
        let receiver = self.threads.get_mut(to).expect("receiver exists");
        let ThreadState::Receiving { recv_slot, .. } = receiver.state else {
            unreachable!("a message goes only to a receiving thread")
        };
        // The state is known: only its endpoint reference is dropped with it.
        receiver.state = ThreadState::Runnable;
        let cap_received = match cap {
            Some(cap) => transfer(&mut self.processes, &mut self.tree, cap, receiver.pid, recv_slot) as u64,
            None => 0,
        };
        receiver.context.set_syscall_result(&[0, badge, w0, w1, w2, w3, cap_received]);
        receiver.reply_to = Some(from);
        switch_to(&mut self.run_queue, to, receiver)
    }

    /// The caller `tid` runs on with `results` (see `switch_to`: a call that made a thread of
    /// higher priority ready gives way to it at once). Always inlined: it is most of what a
    /// null system call costs beyond entry and exit.
    #[inline(always)]
    pub fn resume(&mut self, tid: Tid, results: &[u64; 4]) -> Next<'_> {
        let thread = self.threads.get_mut(tid).expect("caller");
        thread.context.set_syscall_result(results);
        switch_to(&mut self.run_queue, tid, thread)
    }

    /// The first thread in the run queue, which runs next.
    pub fn run_next(&mut self) -> Next<'_> {
        let tid = self.run_queue.pop()?;
        Some((tid, self.threads.get_mut(tid).expect("queued thread")))
    }

    /// The thread that runs after thread `tid` of process `pid` made a system call that asked
    /// for `continuation`.
    pub fn proceed(&mut self, pid: Pid, tid: Tid, priority: u8, continuation: Continuation) -> Next<'_> {
        match continuation {
            Continuation::Return(results) => self.resume(tid, &results),
            Continuation::Block => self.run_next(),
            Continuation::Yield => {
                self.run_queue.push_back(tid, priority);
                None
            }
            Continuation::Exit(code) => {
                self.kill(pid, ExitReason::Exited(code));
                None
            }
        }
    }

    pub fn signal(&mut self, notification: &Rc<RefCell<Notification>>, bits: u64) {
        let waiter = {
            let mut n = notification.borrow_mut();
            n.bits |= bits;
            if n.bits != 0 { n.waiters.pop_front() } else { None }
        };
        if let Some(tid) = waiter {
            let bits = core::mem::take(&mut notification.borrow_mut().bits);
            self.make_runnable(tid, &[0, bits]);
        }
    }

    /// Ends a process: wakes whoever waits on it, returns everything it held.
    pub fn kill(&mut self, pid: Pid, reason: ExitReason) {
        let Some(process) = self.processes.get(pid) else { return };
        if let ExitReason::Faulted(trap) = reason {
            let pc = process.threads.first().and_then(|t| self.threads.get(*t)).map(|t| t.context.pc()).unwrap_or(0);
            crate::println!("[kernel] killed {} (pid {}) at pc {:#x}: {:?}", process.name, pid, pc, trap);
        }
        // Threads go before the address space: `run_once` switches to a thread's tables by the
        // root the thread keeps (`Thread::space`).
        for tid in process.threads.clone() {
            self.remove_thread(tid);
        }
        let slots: Vec<u64> = (0..kernel_abi::CSPACE_SLOTS).filter(|&s| process_has(self, pid, s)).collect();
        for slot in slots {
            let _ = self.delete_cap(pid, slot);
        }
        let mut process = self.processes.remove(pid).expect("checked above");
        for (pin, held) in core::mem::take(&mut process.pins) {
            if let Some(lender) = held.lender {
                self.tree.unlend(lender, (pid, pin));
            }
            match held.memory {
                Some(memory) => self.quarantine.hold(memory),
                None => self.quarantine_address_space_watch(pid, pin),
            }
        }
        // Mappings made through capabilities the process gave away are left: their charges
        // go back with them (the tables are freed with the address space below).
        process.quota.release(process.charged_tables + mapping_record_pages(process.mappings.len()));
        let watchers = core::mem::take(&mut process.watchers);
        match core::mem::take(&mut process.sva) {
            // A device may still walk the tables: they stay until its IOMMU forgot them.
            watches if !watches.is_empty() => {
                let Process { space, image_frames, mappings, .. } = *process;
                self.keep_exited_space(watches, space, image_frames, mappings);
            }
            _ => {
                process.mappings.clear();
                let mut frames = FRAMES.lock();
                process.space.destroy(&mut frames);
                process.image_frames.iter().for_each(|&f| frames.free(f));
            }
        }
        for (notification, bit) in watchers {
            self.signal(&notification, 1 << bit);
        }
        self.exited.insert(pid, reason);
        // The capabilities it held may have lent pins to others.
        self.deliver_revocations();
    }

    fn remove_thread(&mut self, tid: Tid) {
        let Some(thread) = self.threads.remove(tid) else { return };
        self.run_queue.remove(tid);
        match thread.state {
            ThreadState::Sending { ep } => {
                let mut ep = ep.borrow_mut();
                let call = ep.senders.iter().position(|c| c.caller == tid).and_then(|i| ep.senders.remove(i));
                if let Some(cap) = call.and_then(|c| c.cap) {
                    self.tree.remove(cap.id);
                }
            }
            ThreadState::Receiving { ep, .. } => ep.borrow_mut().receivers.retain(|&t| t != tid),
            ThreadState::Waiting { notification } => notification.borrow_mut().waiters.retain(|&t| t != tid),
            ThreadState::AwaitingReply { server } => {
                if let Some(s) = self.threads.get_mut(server) {
                    if s.reply_to == Some(tid) {
                        s.reply_to = None;
                    }
                }
            }
            ThreadState::Runnable => {}
        }
        // A caller waiting for this thread's reply learns that its server is gone.
        if let Some(caller) = thread.reply_to {
            if let Some(t) = answer(&mut self.threads, tid, caller, &[Error::PeerGone as u64]) {
                self.run_queue.push_back(caller, t.priority);
            }
        }
    }

    pub fn has_exited(&self, pid: Pid) -> bool {
        !self.processes.contains(pid)
    }

    /// Takes the exit reason of a process that has ended.
    pub fn take_exit(&mut self, pid: Pid) -> Option<ExitReason> {
        self.exited.remove(&pid)
    }

    /// Runs threads until every process in `pids` has ended.
    pub fn run_until_exited(&mut self, pids: &[Pid]) {
        while pids.iter().any(|p| self.processes.contains(*p)) {
            self.run_once();
        }
    }

    /// Runs one time slice of the next runnable thread (or idles until an interrupt).
    pub fn run_once(&mut self) {
        // A capability the IPC path dropped (its receive slot was taken meanwhile) may have lent
        // pins: their records go out with the next time slice, not on the IPC path.
        if self.tree.has_revoked() {
            self.deliver_revocations();
        }
        let Some(mut running) = self.run_next() else {
            let trap = arch::wait_for_interrupt();
            if let Trap::DeviceIrq(line) = trap {
                self.device_interrupt(line);
            }
            return;
        };
        let mut active = Root::current();
        loop {
            let (tid, thread) = running;
            let (pid, priority) = (thread.pid, thread.priority);
            // Threads of one process share its address space: switch only between processes.
            if thread.space != active {
                // SAFETY: the thread is in the table, so its process and the process's address
                // space are alive: `kill` removes a process's threads before it destroys the
                // address space.
                unsafe { thread.space.activate() };
                active = thread.space;
            }
            let trap = arch::run_user(&mut thread.context);
            match trap {
                Trap::Syscall => {
                    let (number, args) = (thread.context.syscall_number(), thread.context.syscall_args());
                    match crate::syscall::handle(self, pid, tid, priority, number, args) {
                        Some(next) => running = next,
                        None => return,
                    }
                }
                Trap::Timer => return self.run_queue.push_back(tid, priority),
                // The thread keeps its place: it runs again first.
                Trap::Spurious => return self.run_queue.push_front(tid, priority),
                Trap::DeviceIrq(line) => {
                    self.device_interrupt(line);
                    return self.run_queue.push_back(tid, priority);
                }
                Trap::PageFault { .. } | Trap::IllegalInstruction { .. } => return self.kill(pid, ExitReason::Faulted(trap)),
            }
        }
    }

    fn device_interrupt(&mut self, line: u32) {
        let Some(irq) = self.irqs.get(&line).and_then(|w| w.upgrade()) else { return };
        let bound = {
            let mut irq = irq.borrow_mut();
            irq.last_fired_at = arch::instruction_counter();
            irq.bound.clone()
        };
        if let Some((notification, bit)) = bound {
            self.signal(&notification, 1 << bit);
        }
    }
}

impl Drop for Kernel {
    /// Returns everything every remaining process holds (tests build a kernel state each).
    fn drop(&mut self) {
        let pids: Vec<Pid> = self.processes.keys().collect();
        for pid in pids {
            self.kill(pid, ExitReason::Killed);
        }
        #[cfg(target_arch = "aarch64")]
        crate::syscall::msi::unroute_all(self);
    }
}

/// Answers `caller` with `results` if it still awaits the answer of `server`: it becomes
/// runnable but is not queued, and is returned. A function of the thread table alone, so that
/// the run queue stays free for the caller; always inlined, as `deliver` is, for `reply_recv`.
#[inline(always)]
pub fn answer<'t>(threads: &'t mut SlotTable<Tid, Thread>, server: Tid, caller: Tid, results: &[u64]) -> Option<&'t mut Thread> {
    let thread = threads.get_mut(caller)?;
    if !matches!(thread.state, ThreadState::AwaitingReply { server: s } if s == server) {
        return None;
    }
    thread.context.set_syscall_result(results);
    thread.leave_plain_state(ThreadState::Runnable);
    Some(thread)
}

/// `next` (runnable, not queued) runs at once, without a trip through the run queue, unless a
/// thread of higher priority is ready; then `next` waits at the front of its level and the
/// slice ends, so that the scheduler picks the higher one.
pub fn switch_to<'t>(run_queue: &mut RunQueue, next: Tid, thread: &'t mut Thread) -> Next<'t> {
    if run_queue.has_higher_than(thread.priority) {
        run_queue.push_front(next, thread.priority);
        return None;
    }
    Some((next, thread))
}

/// Moves `cap`, in transit by IPC, into `recv_slot` of process `pid`; whether it arrived. Kept
/// out of `Kernel::deliver`, which the IPC path inlines, since most messages carry none.
#[inline(never)]
fn transfer(processes: &mut SlotTable<Pid, Box<Process>>, tree: &mut DerivationTree, cap: Capability, pid: Pid, recv_slot: u64) -> bool {
    let process = processes.get_mut(pid).expect("thread's process exists");
    if process.cspace.check_empty(recv_slot).is_err() {
        // The receiver's slot was filled (by a grant) while it waited: the transfer fails safe
        // by dropping the capability.
        tree.remove(cap.id);
        return false;
    }
    tree.set_owner(cap.id, pid);
    process.cspace.put(recv_slot, cap);
    true
}

fn process_has(kernel: &Kernel, pid: Pid, slot: u64) -> bool {
    kernel.processes.get(pid).is_some_and(|p| p.cspace.get(slot).is_ok())
}
