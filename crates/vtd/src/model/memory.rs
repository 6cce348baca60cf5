//! Fake physical memory, a DMA allocator over it, and a stepping clock.

use alloc::collections::BTreeMap;
use alloc::rc::Rc;
use core::alloc::Layout;
use core::cell::{Cell, RefCell};

use hwio::{Clock, DmaAllocator, DmaBuffer};

/// A block of host memory posing as physical memory at `[base, base + size)`.
///
/// Both the driver (through `DmaBuffer::virt`) and the model (by physical address) read and
/// write it, so all access goes through raw pointers into one allocation.
#[derive(Debug)]
pub struct PhysMemory {
    base: u64,
    size: usize,
    bytes: *mut u8,
    layout: Layout,
}

impl PhysMemory {
    /// Zeroed memory of `size` bytes (a multiple of 4 KiB) at physical `base` (4 KiB aligned).
    pub fn new(base: u64, size: usize) -> Rc<Self> {
        assert!(base.is_multiple_of(4096) && size.is_multiple_of(4096) && size > 0);
        let layout = Layout::from_size_align(size, 4096).expect("valid layout");
        // SAFETY: the layout has non-zero size.
        let bytes = unsafe { alloc::alloc::alloc_zeroed(layout) };
        assert!(!bytes.is_null(), "host allocation failed");
        Rc::new(Self { base, size, bytes, layout })
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

    pub fn write_u64(&self, phys: u64, value: u64) -> Option<()> {
        let offset = self.offset(phys, 8).filter(|_| phys.is_multiple_of(8))?;
        // SAFETY: as in `read_u64`.
        unsafe { core::ptr::write_volatile(self.bytes.add(offset) as *mut u64, value) };
        Some(())
    }

    pub fn read_u32(&self, phys: u64) -> Option<u32> {
        let offset = self.offset(phys, 4).filter(|_| phys.is_multiple_of(4))?;
        // SAFETY: in bounds and 4-aligned.
        Some(unsafe { core::ptr::read_volatile(self.bytes.add(offset) as *const u32) })
    }

    pub fn write_u32(&self, phys: u64, value: u32) -> Option<()> {
        let offset = self.offset(phys, 4).filter(|_| phys.is_multiple_of(4))?;
        // SAFETY: in bounds and 4-aligned.
        unsafe { core::ptr::write_volatile(self.bytes.add(offset) as *mut u32, value) };
        Some(())
    }

    fn fill(&self, phys: u64, len: usize, byte: u8) {
        let offset = self.offset(phys, len).expect("fill inside memory");
        // SAFETY: the range was checked to lie inside the allocation.
        unsafe { core::ptr::write_bytes(self.bytes.add(offset), byte, len) };
    }
}

impl Drop for PhysMemory {
    fn drop(&mut self) {
        // SAFETY: `bytes` came from `alloc_zeroed` with this layout and is freed once.
        unsafe { alloc::alloc::dealloc(self.bytes, self.layout) };
    }
}

/// Byte written over freed buffers, so hardware (the model) walking a table the driver freed
/// sees garbage instead of a stale but plausible entry.
pub const POISON: u8 = 0xa5;

/// A bump allocator handing out [`PhysMemory`]; freed memory is poisoned, never reused.
#[derive(Debug)]
pub struct FakeDma {
    memory: Rc<PhysMemory>,
    next: u64,
    live: RefCell<BTreeMap<u64, usize>>,
    flushes: Cell<usize>,
}

impl FakeDma {
    pub fn new(memory: Rc<PhysMemory>) -> Self {
        let next = memory.base();
        Self { memory, next, live: RefCell::new(BTreeMap::new()), flushes: Cell::new(0) }
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
        assert!(self.memory.phys_of(virt).is_some() && len > 0, "flush outside DMA memory");
        self.flushes.set(self.flushes.get() + 1);
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
