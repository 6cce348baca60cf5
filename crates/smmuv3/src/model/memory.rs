//! Fake physical memory shared by the driver (through [`ModelDma`]) and the model SMMU, plus a
//! clock that advances on every reading.

use alloc::alloc::{alloc_zeroed, dealloc, Layout};
use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::Cell;

use hwio::{Clock, DmaAllocator, DmaBuffer};

/// A block of host memory posing as physical memory `[base, base + size)`.
///
/// Accessed only through raw pointers (never Rust references) because the driver writes the same
/// bytes through `DmaBuffer::virt` while the model reads them by physical address.
///
/// Two views: the CPU's (`ptr`, where the driver's stores land) and that of an SMMU whose table
/// and queue accesses do not snoop CPU caches (`device`, IDR0.COHACC = 0). Only the driver's
/// `flush_for_device` ([`FakeMemory::flush`]) copies CPU stores to the device view, a cache line
/// at a time; coherent agents (the SMMU's event writes, device DMA, the tests' hand-built tables)
/// write both. A non-coherent walker therefore sees exactly what was flushed, in flush order.
pub struct FakeMemory {
    base: u64,
    size: usize,
    ptr: *mut u8,
    device: *mut u8,
    layout: Layout,
}

/// Bytes one flush writes back at least: a cache line (DC CVAC works on lines).
const CACHE_LINE: u64 = 64;

impl FakeMemory {
    /// Page-aligned host memory, zeroed, so that physical alignment carries over to `virt`.
    pub fn new(base: u64, size: usize) -> Rc<FakeMemory> {
        assert!(base.is_multiple_of(4096) && size.is_multiple_of(4096) && size > 0);
        let layout = Layout::from_size_align(size, 4096).expect("fake memory layout");
        // SAFETY: `layout` has a non-zero size (asserted above).
        let ptr = unsafe { alloc_zeroed(layout) };
        // SAFETY: as above.
        let device = unsafe { alloc_zeroed(layout) };
        assert!(!ptr.is_null() && !device.is_null(), "host out of memory for fake physical memory");
        Rc::new(FakeMemory { base, size, ptr, device, layout })
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

    /// The physical address of host pointer `virt`, if it points into this memory.
    pub fn phys_of(&self, virt: *const u8) -> Option<u64> {
        let offset = (virt as usize).checked_sub(self.ptr as usize)?;
        (offset < self.size).then_some(self.base + offset as u64)
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

    /// A coherent agent's write of the 64-bit word at `pa` (both views); false outside memory or
    /// when misaligned.
    pub fn write_u64(&self, pa: u64, value: u64) -> bool {
        if !pa.is_multiple_of(8) || !self.contains(pa, 8) {
            return false;
        }
        // SAFETY: as in `read_u64`, for both equally sized views.
        unsafe {
            core::ptr::write_volatile(self.host_ptr(pa) as *mut u64, value.to_le());
            core::ptr::write_volatile(self.device_ptr(pa) as *mut u64, value.to_le());
        }
        true
    }

    /// The device view's byte for `pa` (which must be backed).
    fn device_ptr(&self, pa: u64) -> *mut u8 {
        assert!(self.contains(pa, 1), "physical address {pa:#x} not backed by fake memory");
        self.device.wrapping_add((pa - self.base) as usize)
    }

    /// What a non-snooping SMMU reads at `pa`: the word as last flushed or written coherently.
    pub fn device_read_u64(&self, pa: u64) -> Option<u64> {
        if !pa.is_multiple_of(8) || !self.contains(pa, 8) {
            return None;
        }
        // SAFETY: in bounds and aligned, as in `read_u64`, in the equally sized device view.
        Some(u64::from_le(unsafe { core::ptr::read_volatile(self.device_ptr(pa) as *const u64) }))
    }

    /// Writes every cache line touching `[pa, pa + len)` back from the CPU view to the device view.
    pub fn flush(&self, pa: u64, len: usize) {
        let start = pa & !(CACHE_LINE - 1);
        let end = (pa + len as u64).next_multiple_of(CACHE_LINE).min(self.base + self.size as u64);
        assert!(self.contains(start, (end - start) as usize), "flush outside fake memory");
        // SAFETY: the range lies inside both equally sized allocations (checked above), which do
        // not overlap.
        unsafe { core::ptr::copy_nonoverlapping(self.host_ptr(start), self.device_ptr(start), (end - start) as usize) };
    }

    /// `len` bytes at `pa` as a device's DMA read returns them; `None` outside memory.
    pub fn read_bytes(&self, pa: u64, len: usize) -> Option<Vec<u8>> {
        if !self.contains(pa, len) {
            return None;
        }
        // SAFETY: the range lies inside the allocation (checked above).
        Some(unsafe { core::slice::from_raw_parts(self.host_ptr(pa), len) }.to_vec())
    }

    /// A device's DMA write (coherent: both views); `None` outside memory.
    pub fn write_bytes(&self, pa: u64, data: &[u8]) -> Option<()> {
        if !self.contains(pa, data.len()) {
            return None;
        }
        // SAFETY: the range lies inside both equally sized, non-overlapping allocations.
        unsafe {
            core::ptr::copy_nonoverlapping(data.as_ptr(), self.host_ptr(pa), data.len());
            core::ptr::copy_nonoverlapping(data.as_ptr(), self.device_ptr(pa), data.len());
        }
        Some(())
    }
}

impl Drop for FakeMemory {
    fn drop(&mut self) {
        // SAFETY: `ptr` and `device` were allocated in `new` with exactly this layout and are
        // freed once.
        unsafe {
            dealloc(self.ptr, self.layout);
            dealloc(self.device, self.layout);
        }
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
    observer: Option<Box<dyn Fn()>>,
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
        ModelDma { memory, next: start, end, live: 0, flushes: Cell::new(0), observer: None }
    }

    /// Runs `observer` after every flush from now on: a test lets a device do DMA at each point
    /// where the SMMU's view of memory changes, so it sees every intermediate state of an update.
    pub fn observe_flushes(&mut self, observer: Box<dyn Fn()>) {
        self.observer = Some(observer);
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
        // Freshly zeroed memory holds no stale lines: the device sees the zeros too.
        self.memory.flush(phys, size);
        self.live += 1;
        Some(DmaBuffer { phys, virt, size })
    }

    fn free(&mut self, buffer: DmaBuffer) {
        assert!(self.memory.contains(buffer.phys, buffer.size), "freeing a buffer this allocator never gave");
        self.live -= 1;
    }

    fn flush_for_device(&self, virt: *const u8, len: usize) {
        let pa = self.memory.phys_of(virt).expect("flush outside fake memory");
        self.memory.flush(pa, len);
        self.flushes.set(self.flushes.get() + 1);
        if let Some(observer) = &self.observer {
            observer();
        }
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
