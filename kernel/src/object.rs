//! Kernel objects that capabilities name.
//!
//! Objects are reference-counted (`Rc`): a capability, a mapping or a pin each hold one
//! reference, and an object's resources (frames) return to the pool when the last goes. The
//! kernel is single-threaded with interrupts masked, so `RefCell` is enough for interior state.

use crate::cap::Capability;
use crate::mm::{CONTIGUOUS, FRAMES};
use crate::process::Tid;
use alloc::collections::VecDeque;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use kernel_abi::ObjectType;

/// Pages of memory a process may own through memory objects; shared with the objects it
/// allocated so that freeing returns the pages even after the process has ended.
pub type Quota = Rc<QuotaAccount>;

#[derive(Debug)]
pub struct QuotaAccount {
    pub limit: Cell<u64>,
    pub used: Cell<u64>,
    /// The quota of the process that created this one's (`process_create`), out of whose
    /// limit this limit came: it goes back there when the account goes, that is when the
    /// process has ended and nothing charged to it is left (memory objects another process
    /// maps or the quarantine holds keep it).
    pub returns_to: RefCell<Option<Quota>>,
}

impl QuotaAccount {
    pub fn new(limit: u64) -> Quota {
        Rc::new(QuotaAccount { limit: Cell::new(limit), used: Cell::new(0), returns_to: RefCell::new(None) })
    }

    pub fn charge(&self, pages: u64) -> bool {
        match self.used.get().checked_add(pages) {
            Some(total) if total <= self.limit.get() => {
                self.used.set(total);
                true
            }
            _ => false,
        }
    }

    /// Pages still free under the limit.
    pub fn available(&self) -> u64 {
        self.limit.get() - self.used.get()
    }

    pub fn release(&self, pages: u64) {
        self.used.set(self.used.get() - pages);
    }
}

impl Drop for QuotaAccount {
    fn drop(&mut self) {
        if let Some(parent) = self.returns_to.get_mut().take() {
            parent.limit.set(parent.limit.get() + self.limit.get());
        }
    }
}

/// Quota pages each endpoint or notification costs the process that creates it. Such a record
/// is far smaller than a page, but the page is the quota's unit, and the charge bounds how much
/// kernel memory a process can make the kernel hold (memory objects are charged by size,
/// threads are bounded per process, capabilities by the capability space).
pub const KERNEL_OBJECT_PAGES: u64 = 1;

/// Pages charged to a quota, given back when the charge is dropped (with the object holding it).
#[derive(Debug)]
pub struct Charge {
    quota: Quota,
    pages: u64,
}

impl Charge {
    /// Charges `pages` to `quota`, or nothing if that would exceed its limit.
    pub fn take(quota: &Quota, pages: u64) -> Option<Charge> {
        quota.charge(pages).then(|| Charge { quota: quota.clone(), pages })
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.quota.release(self.pages);
    }
}

static NEXT_SERIAL: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(1);

fn next_serial() -> u64 {
    NEXT_SERIAL.fetch_add(1, core::sync::atomic::Ordering::Relaxed)
}

/// Physical frames, zeroed at allocation, freed when the last reference goes.
#[derive(Debug)]
pub struct MemoryObject {
    /// Kernel-wide serial number, never reused (`mem_info`).
    pub serial: u64,
    pub frames: Vec<u64>,
    /// From the contiguous pool (freed there as one block).
    contiguous: bool,
    quota: Quota,
}

impl MemoryObject {
    /// `pages` physically contiguous frames, size-aligned (see `MemFlags::CONTIGUOUS`).
    pub fn allocate_contiguous(pages: u64, quota: &Quota) -> Option<Rc<MemoryObject>> {
        if !quota.charge(pages) {
            return None;
        }
        let mut frames = Vec::new();
        let base = match frames.try_reserve_exact(pages as usize).ok().and_then(|_| CONTIGUOUS.lock().alloc(pages as usize)) {
            Some(base) => base,
            None => {
                quota.release(pages);
                return None;
            }
        };
        frames.extend((0..pages).map(|i| base + i * crate::mm::FRAME_SIZE));
        Some(Rc::new(MemoryObject { serial: next_serial(), frames, contiguous: true, quota: quota.clone() }))
    }

    pub fn allocate(pages: u64, quota: &Quota) -> Option<Rc<MemoryObject>> {
        if !quota.charge(pages) {
            return None;
        }
        let mut frames = Vec::new();
        if frames.try_reserve_exact(pages as usize).is_err() {
            quota.release(pages);
            return None;
        }
        let mut pool = FRAMES.lock();
        for _ in 0..pages {
            match pool.alloc() {
                Some(f) => frames.push(f),
                None => {
                    frames.into_iter().for_each(|f| pool.free(f));
                    quota.release(pages);
                    return None;
                }
            }
        }
        Some(Rc::new(MemoryObject { serial: next_serial(), frames, contiguous: false, quota: quota.clone() }))
    }
}

impl Drop for MemoryObject {
    fn drop(&mut self) {
        if self.contiguous {
            CONTIGUOUS.lock().free(self.frames[0], self.frames.len());
        } else {
            let mut pool = FRAMES.lock();
            self.frames.iter().for_each(|&f| pool.free(f));
        }
        self.quota.release(self.frames.len() as u64);
    }
}

/// Device registers: a physical range the kernel hands out only through capabilities.
#[derive(Debug)]
pub struct MmioRegion {
    pub base: u64,
    pub size: u64,
}

/// A call waiting in an endpoint for a receiver. Its message words wait where the caller put
/// them, in its argument registers (see `Kernel::deliver`).
#[derive(Debug)]
pub struct PendingCall {
    pub caller: Tid,
    /// The badge of the capability it was made through.
    pub badge: u64,
    /// The capability the call moves, out of the caller's capability space meanwhile.
    pub cap: Option<Capability>,
}

#[derive(Debug, Default)]
pub struct Endpoint {
    /// Calls whose callers are blocked until a receiver arrives, in arrival order.
    pub senders: VecDeque<PendingCall>,
    /// Receivers blocked until a caller arrives. The last to wait takes the next call: any
    /// receiver of an endpoint serves it, and a stack takes and gives one in a few instructions.
    pub receivers: Vec<Tid>,
    /// What its creator pays for it (none for objects the kernel makes itself).
    #[allow(dead_code, reason = "held for its Drop, which gives the quota back")]
    pub charge: Option<Charge>,
}

#[derive(Debug, Default)]
pub struct Notification {
    pub bits: u64,
    pub waiters: VecDeque<Tid>,
    /// What its creator pays for it (none for objects the kernel makes itself).
    #[allow(dead_code, reason = "held for its Drop, which gives the quota back")]
    pub charge: Option<Charge>,
}

#[derive(Debug)]
pub struct IrqLine {
    pub line: u32,
    /// Edge-triggered (else level); fixed by the platform description.
    pub edge: bool,
    pub bound: Option<(Rc<RefCell<Notification>>, u64)>,
    /// The process that bound it (meaningful while `bound` is set).
    pub binder: crate::process::Pid,
    /// The instruction counter when the line last fired (0: never): where measurements of
    /// interrupt-to-user latency start.
    pub last_fired_at: u64,
}

#[derive(Debug, Clone)]
pub enum Object {
    Endpoint(Rc<RefCell<Endpoint>>),
    Notification(Rc<RefCell<Notification>>),
    Memory(Rc<MemoryObject>),
    Mmio(Rc<MmioRegion>),
    Irq(Rc<RefCell<IrqLine>>),
    Process(crate::process::Pid),
    DmaAuthority,
    /// The address space of a process, to share with devices (see `crate::sva`).
    AddressSpace(crate::process::Pid),
    /// x86 I/O ports `[base, base + count)`.
    #[cfg(target_arch = "x86_64")]
    IoPorts { base: u16, count: u16 },
}

impl Object {
    pub fn kind(&self) -> ObjectType {
        match self {
            Object::Endpoint(_) => ObjectType::Endpoint,
            Object::Notification(_) => ObjectType::Notification,
            Object::Memory(_) => ObjectType::Memory,
            Object::Mmio(_) => ObjectType::Mmio,
            Object::Irq(_) => ObjectType::Irq,
            Object::Process(_) => ObjectType::Process,
            Object::DmaAuthority => ObjectType::DmaAuthority,
            Object::AddressSpace(_) => ObjectType::AddressSpace,
            #[cfg(target_arch = "x86_64")]
            Object::IoPorts { .. } => ObjectType::IoPorts,
        }
    }
}
