//! Fake physical memory shared by the driver (through [`ModelDma`]) and the model SMMU, plus a
//! clock that advances on every reading.

use alloc::alloc::{alloc_zeroed, dealloc, Layout};
use alloc::rc::Rc;
use core::cell::Cell;

use hwio::{Clock, DmaAllocator, DmaBuffer};

/// A block of host memory posing as physical memory `[base, base + size)`.
///
/// Accessed only through raw pointers (never Rust references) because the driver writes the same
/// bytes through `DmaBuffer::virt` while the model reads them by physical address.
pub struct FakeMemory {
    base: u64,
    size: usize,
    ptr: *mut u8,
    layout: Layout,
}

impl FakeMemory {
    /// Page-aligned host memory, zeroed, so that physical alignment carries over to `virt`.
    pub fn new(base: u64, size: usize) -> Rc<FakeMemory> {
        assert!(base.is_multiple_of(4096) && size.is_multiple_of(4096) && size > 0);
        let layout = Layout::from_size_align(size, 4096).expect("fake memory layout");
        // SAFETY: `layout` has a non-zero size (asserted above).
        let ptr = unsafe { alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "host out of memory for fake physical memory");
        Rc::new(FakeMemory { base, size, ptr, layout })
    }

    pub fn base(&self) -> u64 {
        self.base
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether `[pa, pa + len)` is backed (outside it, SMMU fetches take an external abort).
    pub fn contains(&self, pa: u64, len: usize) -> bool {
        pa >= self.base && pa.checked_add(len as u64).is_some_and(|end| end <= self.base + self.size as u64)
    }

    /// Host pointer for physical address `pa` (which must be backed).
    pub fn host_ptr(&self, pa: u64) -> *mut u8 {
        assert!(self.contains(pa, 1), "physical address {pa:#x} not backed by fake memory");
        self.ptr.wrapping_add((pa - self.base) as usize)
    }

    /// The 64-bit little-endian word at `pa`, `None` outside memory or when misaligned.
    pub fn read_u64(&self, pa: u64) -> Option<u64> {
        if !pa.is_multiple_of(8) || !self.contains(pa, 8) {
            return None;
        }
        // SAFETY: the 8 bytes at `pa` are inside the allocation (checked) and 8-byte aligned
        // (the allocation is page aligned and `pa` is a multiple of 8 from a page-aligned base).
        Some(u64::from_le(unsafe { core::ptr::read_volatile(self.host_ptr(pa) as *const u64) }))
    }

    /// Writes the 64-bit word at `pa`; false outside memory or when misaligned.
    pub fn write_u64(&self, pa: u64, value: u64) -> bool {
        if !pa.is_multiple_of(8) || !self.contains(pa, 8) {
            return false;
        }
        // SAFETY: as in `read_u64`.
        unsafe { core::ptr::write_volatile(self.host_ptr(pa) as *mut u64, value.to_le()) };
        true
    }
}

impl Drop for FakeMemory {
    fn drop(&mut self) {
        // SAFETY: `ptr` was allocated in `new` with exactly this layout and is freed once.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

/// A bump allocator over [`FakeMemory`] implementing [`DmaAllocator`]. Freed buffers are not
/// reused (so a use-after-free by the driver reads stale, recognisable data rather than another
/// table), but are counted for leak checks.
pub struct ModelDma {
    memory: Rc<FakeMemory>,
    next: u64,
    end: u64,
    live: usize,
    flushes: Cell<usize>,
}

impl ModelDma {
    /// Allocates from all of `memory`.
    pub fn new(memory: Rc<FakeMemory>) -> ModelDma {
        let (start, end) = (memory.base(), memory.base() + memory.size() as u64);
        ModelDma::in_range(memory, start, end)
    }

    /// Allocates from `[start, end)` only, leaving the rest of `memory` to the test (for hand-made
    /// page tables, data pages, or addresses nothing is allowed to touch).
    pub fn in_range(memory: Rc<FakeMemory>, start: u64, end: u64) -> ModelDma {
        assert!(memory.contains(start, (end - start) as usize));
        ModelDma { memory, next: start, end, live: 0, flushes: Cell::new(0) }
    }

    /// Buffers allocated and not yet freed.
    pub fn live_allocations(&self) -> usize {
        self.live
    }

    /// Number of `flush_for_device` calls.
    pub fn flushes(&self) -> usize {
        self.flushes.get()
    }
}

impl DmaAllocator for ModelDma {
    fn alloc_zeroed(&mut self, size: usize, align: usize) -> Option<DmaBuffer> {
        assert!(align.is_power_of_two() && align >= 4096, "DmaAllocator contract: align >= 4096");
        let phys = self.next.checked_add(align as u64 - 1)? & !(align as u64 - 1);
        if phys.checked_add(size as u64)? > self.end {
            return None;
        }
        self.next = phys + size as u64;
        let virt = self.memory.host_ptr(phys);
        // SAFETY: `[virt, virt + size)` lies inside the fake memory (checked by `contains`), and
        // the bump pointer never hands the same bytes out twice.
        unsafe { core::ptr::write_bytes(virt, 0, size) };
        self.live += 1;
        Some(DmaBuffer { phys, virt, size })
    }

    fn free(&mut self, buffer: DmaBuffer) {
        assert!(self.memory.contains(buffer.phys, buffer.size), "freeing a buffer this allocator never gave");
        self.live -= 1;
    }

    fn flush_for_device(&self, _virt: *const u8, _len: usize) {
        self.flushes.set(self.flushes.get() + 1);
    }
}

/// A clock that advances by a fixed step each time it is read, so waits on a hardware model that
/// never answers end after a predictable number of polls.
pub struct StepClock {
    now: Cell<u64>,
    step_ns: u64,
}

impl StepClock {
    pub fn new(step_ns: u64) -> StepClock {
        StepClock { now: Cell::new(0), step_ns }
    }
}

impl Clock for StepClock {
    fn now_ns(&self) -> u64 {
        let now = self.now.get();
        self.now.set(now + self.step_ns);
        now
    }
}
