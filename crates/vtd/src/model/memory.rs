//! Fake physical memory, a DMA allocator over it, and a stepping clock.

use alloc::collections::BTreeMap;
use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::alloc::Layout;
use core::cell::{Cell, RefCell};

use hwio::{Clock, DmaAllocator, DmaBuffer};

/// A block of host memory posing as physical memory at `[base, base + size)`.
///
/// Both the driver (through `DmaBuffer::virt`) and the model (by physical address) read and
/// write it, so all access goes through raw pointers.
///
/// Two views of the same memory: what the CPU sees (`bytes`, where the driver's stores land),
/// and what a remapping unit whose walks do not snoop CPU caches sees (`device`, ECAP.C = 0).
/// Only [`PhysMemory::flush`] (the driver's `flush_for_device`) copies CPU stores into the
/// device view, line by line as a cache-line write-back would; writes by coherent agents (the
/// model's own status writes and device DMA, and the tests' hand-built tables) go to both. A
/// walker reading the device view therefore sees exactly what the driver flushed, in the order
/// it flushed it: a forgotten flush or a Present bit flushed before the rest of its entry shows
/// up as a wrong walk.
#[derive(Debug)]
pub struct PhysMemory {
    base: u64,
    size: usize,
    bytes: *mut u8,
    device: *mut u8,
    layout: Layout,
}

/// Bytes one flush writes back at least: a cache line (CLFLUSH granularity on x86).
const CACHE_LINE: u64 = 64;

impl PhysMemory {
    /// Zeroed memory of `size` bytes (a multiple of 4 KiB) at physical `base` (4 KiB aligned).
    pub fn new(base: u64, size: usize) -> Rc<Self> {
        assert!(base.is_multiple_of(4096) && size.is_multiple_of(4096) && size > 0);
        let layout = Layout::from_size_align(size, 4096).expect("valid layout");
        // SAFETY: the layout has non-zero size.
        let bytes = unsafe { alloc::alloc::alloc_zeroed(layout) };
        // SAFETY: as above.
        let device = unsafe { alloc::alloc::alloc_zeroed(layout) };
        assert!(!bytes.is_null() && !device.is_null(), "host allocation failed");
        Rc::new(Self { base, size, bytes, device, layout })
    }

    pub fn base(&self) -> u64 {
        self.base
    }

    pub fn size(&self) -> usize {
        self.size
    }

    fn offset(&self, phys: u64, len: usize) -> Option<usize> {
        let offset = phys.checked_sub(self.base)? as usize;
        (offset.checked_add(len)? <= self.size).then_some(offset)
    }

    /// The host pointer for `phys`, if inside this memory.
    pub fn virt(&self, phys: u64) -> Option<*mut u8> {
        // SAFETY: `offset` checked that phys lies inside the allocation.
        self.offset(phys, 1).map(|offset| unsafe { self.bytes.add(offset) })
    }

    /// The physical address of host pointer `virt`, if inside this memory.
    pub fn phys_of(&self, virt: *const u8) -> Option<u64> {
        let offset = (virt as usize).checked_sub(self.bytes as usize)?;
        (offset < self.size).then_some(self.base + offset as u64)
    }

    /// Little-endian 64-bit read; `None` outside memory or unaligned (an access error).
    pub fn read_u64(&self, phys: u64) -> Option<u64> {
        let offset = self.offset(phys, 8).filter(|_| phys.is_multiple_of(8))?;
        // SAFETY: in bounds and 8-aligned (base and allocation are 4 KiB aligned).
        Some(unsafe { core::ptr::read_volatile(self.bytes.add(offset) as *const u64) })
    }

    /// A coherent agent's write: both the CPU and the device view change.
    pub fn write_u64(&self, phys: u64, value: u64) -> Option<()> {
        let offset = self.offset(phys, 8).filter(|_| phys.is_multiple_of(8))?;
        // SAFETY: as in `read_u64`; `device` has the same size and alignment as `bytes`.
        unsafe {
            core::ptr::write_volatile(self.bytes.add(offset) as *mut u64, value);
            core::ptr::write_volatile(self.device.add(offset) as *mut u64, value);
        }
        Some(())
    }

    /// What a non-snooping walker reads at `phys`: the value last flushed (or written by a
    /// coherent agent), not necessarily what the CPU stored since.
    pub fn device_read_u64(&self, phys: u64) -> Option<u64> {
        let offset = self.offset(phys, 8).filter(|_| phys.is_multiple_of(8))?;
        // SAFETY: in bounds and 8-aligned, as in `read_u64`, in the equally sized device view.
        Some(unsafe { core::ptr::read_volatile(self.device.add(offset) as *const u64) })
    }

    /// Writes the CPU's view of every cache line touching `[phys, phys + len)` back to the
    /// device view (CLFLUSH of each line).
    pub fn flush(&self, phys: u64, len: usize) {
        let start = phys & !(CACHE_LINE - 1);
        let end = (phys + len as u64).next_multiple_of(CACHE_LINE).min(self.base + self.size as u64);
        let offset = self.offset(start, (end - start) as usize).expect("flush inside memory");
        // SAFETY: the range lies inside both equally sized allocations (checked by `offset`),
        // and the two allocations do not overlap.
        unsafe { core::ptr::copy_nonoverlapping(self.bytes.add(offset), self.device.add(offset), (end - start) as usize) };
    }

    pub fn read_u32(&self, phys: u64) -> Option<u32> {
        let offset = self.offset(phys, 4).filter(|_| phys.is_multiple_of(4))?;
        // SAFETY: in bounds and 4-aligned.
        Some(unsafe { core::ptr::read_volatile(self.bytes.add(offset) as *const u32) })
    }

    /// Copies `len` bytes from `phys` (`None` outside memory): what a device's DMA read returns.
    pub fn read_bytes(&self, phys: u64, len: usize) -> Option<Vec<u8>> {
        let offset = self.offset(phys, len)?;
        // SAFETY: `offset` checked the range lies inside the allocation.
        Some(unsafe { core::slice::from_raw_parts(self.bytes.add(offset), len) }.to_vec())
    }

    /// A device's DMA write: coherent, so both views change. `None` outside memory.
    pub fn write_bytes(&self, phys: u64, data: &[u8]) -> Option<()> {
        let offset = self.offset(phys, data.len())?;
        // SAFETY: the range lies inside both equally sized allocations (checked by `offset`).
        unsafe {
            core::ptr::copy_nonoverlapping(data.as_ptr(), self.bytes.add(offset), data.len());
            core::ptr::copy_nonoverlapping(data.as_ptr(), self.device.add(offset), data.len());
        }
        Some(())
    }

    /// A coherent agent's write (the unit's status writes, device DMA): both views change.
    pub fn write_u32(&self, phys: u64, value: u32) -> Option<()> {
        let offset = self.offset(phys, 4).filter(|_| phys.is_multiple_of(4))?;
        // SAFETY: in bounds and 4-aligned, in both equally sized views.
        unsafe {
            core::ptr::write_volatile(self.bytes.add(offset) as *mut u32, value);
            core::ptr::write_volatile(self.device.add(offset) as *mut u32, value);
        }
        Some(())
    }

    /// Fills both views (allocation zeroing, poisoning on free: memory the caches cannot hold
    /// stale lines of, as after the allocator cleaned it).
    fn fill(&self, phys: u64, len: usize, byte: u8) {
        let offset = self.offset(phys, len).expect("fill inside memory");
        // SAFETY: the range was checked to lie inside both equally sized allocations.
        unsafe {
            core::ptr::write_bytes(self.bytes.add(offset), byte, len);
            core::ptr::write_bytes(self.device.add(offset), byte, len);
        }
    }
}

impl Drop for PhysMemory {
    fn drop(&mut self) {
        // SAFETY: `bytes` and `device` came from `alloc_zeroed` with this layout and are freed
        // once.
        unsafe {
            alloc::alloc::dealloc(self.bytes, self.layout);
            alloc::alloc::dealloc(self.device, self.layout);
        }
    }
}

/// Byte written over freed buffers, so hardware (the model) walking a table the driver freed
/// sees garbage instead of a stale but plausible entry.
pub const POISON: u8 = 0xa5;

/// Called after every flush, at the moments a non-snooping walker may see something new.
pub type FlushObserver = Box<dyn Fn()>;

/// A bump allocator handing out [`PhysMemory`]; freed memory is poisoned, never reused.
pub struct FakeDma {
    memory: Rc<PhysMemory>,
    next: u64,
    live: RefCell<BTreeMap<u64, usize>>,
    flushes: Cell<usize>,
    observer: Option<FlushObserver>,
}

impl FakeDma {
    pub fn new(memory: Rc<PhysMemory>) -> Self {
        let next = memory.base();
        Self { memory, next, live: RefCell::new(BTreeMap::new()), flushes: Cell::new(0), observer: None }
    }

    /// Runs `observer` after every flush from now on: a test lets a device do DMA at each point
    /// where the walker's view of the tables changes, so it sees every intermediate state of an
    /// update (a torn entry among them).
    pub fn observe_flushes(&mut self, observer: FlushObserver) {
        self.observer = Some(observer);
    }

    pub fn memory(&self) -> &Rc<PhysMemory> {
        &self.memory
    }

    /// Buffers allocated and not yet freed.
    pub fn live_allocations(&self) -> usize {
        self.live.borrow().len()
    }

    /// Number of `flush_for_device` calls so far.
    pub fn flush_count(&self) -> usize {
        self.flushes.get()
    }
}

impl DmaAllocator for FakeDma {
    fn alloc_zeroed(&mut self, size: usize, align: usize) -> Option<DmaBuffer> {
        let align = align.max(4096) as u64;
        let phys = self.next.div_ceil(align) * align;
        let end = phys.checked_add(size as u64)?;
        if end > self.memory.base() + self.memory.size() as u64 || size == 0 {
            return None;
        }
        self.next = end;
        self.memory.fill(phys, size, 0);
        self.live.borrow_mut().insert(phys, size);
        Some(DmaBuffer { phys, virt: self.memory.virt(phys)?, size })
    }

    fn free(&mut self, buffer: DmaBuffer) {
        let size = self.live.borrow_mut().remove(&buffer.phys).expect("freeing a buffer that is not live");
        assert_eq!(size, buffer.size, "freeing with a different size");
        self.memory.fill(buffer.phys, size, POISON);
    }

    fn flush_for_device(&self, virt: *const u8, len: usize) {
        let phys = self.memory.phys_of(virt).filter(|_| len > 0).expect("flush outside DMA memory");
        self.memory.flush(phys, len);
        self.flushes.set(self.flushes.get() + 1);
        if let Some(observer) = &self.observer {
            observer();
        }
    }
}

/// A clock that advances by `step_ns` every time it is read, so bounded waits on a model that
/// never completes end deterministically.
#[derive(Debug)]
pub struct StepClock {
    now: Cell<u64>,
    step_ns: u64,
}

impl StepClock {
    pub fn new(step_ns: u64) -> Self {
        Self { now: Cell::new(0), step_ns }
    }
}

impl Clock for StepClock {
    fn now_ns(&self) -> u64 {
        let now = self.now.get();
        self.now.set(now + self.step_ns);
        now
    }
}
