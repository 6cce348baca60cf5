//! Physical memory: the frame allocator and the direct map.

use boot::{BootInfo, PhysRange, DIRECT_MAP_BASE, EARLY_DIRECT_MAP_SIZE};
use spin::Mutex;
use volatile::VolatilePtr;

pub const FRAME_SIZE: u64 = 4096;

/// Kernel virtual address of physical address `phys` through the direct map.
pub fn phys_to_virt(phys: u64) -> *mut u8 {
    (DIRECT_MAP_BASE + phys) as *mut u8
}

/// Kernel virtual address of the `len` bytes at physical `phys` through the direct map, if the
/// direct map covers them all (it ends at 4 GiB: device memory above, such as a 64-bit BAR a
/// user mapped, has no kernel address).
pub fn direct_map_range(phys: u64, len: u64) -> Option<*mut u8> {
    let end = phys.checked_add(len)?;
    (end <= EARLY_DIRECT_MAP_SIZE).then(|| phys_to_virt(phys))
}

/// The device register of type `T` at physical address `phys`, through the direct map: each
/// access is one volatile load or store of `T`'s width.
///
/// # Safety
/// The direct map must cover `phys` (device memory where it is a device's), `phys` must be
/// aligned for `T`, and accessing it must not change memory the kernel relies on.
pub unsafe fn device_register<T: Copy>(phys: u64) -> VolatilePtr<'static, T> {
    // SAFETY: the direct map's base is not 0, so neither is the address; the rest is the
    // caller's contract, and the direct map lasts as long as the kernel.
    unsafe { VolatilePtr::new(core::ptr::NonNull::new_unchecked(phys_to_virt(phys).cast::<T>())) }
}

/// Free 4 KiB frames, kept as an intrusive singly linked list threaded through the free frames
/// themselves (each free frame's first word holds the next free frame's physical address).
/// O(1) alloc and free, no metadata beyond the frames.
pub struct FrameAllocator {
    head: u64,
    free: u64,
}

const NO_FRAME: u64 = u64::MAX;

impl FrameAllocator {
    pub const fn new() -> Self {
        FrameAllocator { head: NO_FRAME, free: 0 }
    }

    /// Adds every frame of `range` (page-aligned) to the pool.
    pub fn add_range(&mut self, range: PhysRange) {
        let mut frame = range.end;
        while frame >= range.start + FRAME_SIZE {
            frame -= FRAME_SIZE;
            self.push(frame);
        }
    }

    fn push(&mut self, frame: u64) {
        // SAFETY: `frame` is a free RAM frame owned by this allocator, mapped in the direct map.
        unsafe { (phys_to_virt(frame) as *mut u64).write(self.head) };
        self.head = frame;
        self.free += 1;
    }

    /// A zero-filled frame, or `None` when memory is exhausted.
    pub fn alloc(&mut self) -> Option<u64> {
        if self.head == NO_FRAME {
            return None;
        }
        let frame = self.head;
        // SAFETY: `frame` heads the free list, so it is a free RAM frame in the direct map whose
        // first word is the next link; after this the frame belongs to the caller.
        unsafe {
            self.head = (phys_to_virt(frame) as *const u64).read();
            core::ptr::write_bytes(phys_to_virt(frame), 0, FRAME_SIZE as usize);
        }
        self.free -= 1;
        Some(frame)
    }

    /// Returns a frame obtained from `alloc`.
    pub fn free(&mut self, frame: u64) {
        debug_assert!(frame.is_multiple_of(FRAME_SIZE));
        self.push(frame);
    }

    pub fn free_frames(&self) -> u64 {
        self.free
    }

    /// Takes the free frame `frame` out of the pool (zero-filled, as `alloc` hands frames out);
    /// false if it is not free. A walk of the free list: for tests that need one frame at an
    /// address fixed before boot (a firmware-table override's RMRR), not for allocation.
    pub fn take(&mut self, frame: u64) -> bool {
        let mut link: *mut u64 = &mut self.head;
        // SAFETY: `link` points at `head` or at the first word of a free frame in the direct
        // map, each holding the next free frame's address; the list is ours while `self` is
        // borrowed mutably.
        unsafe {
            while *link != NO_FRAME {
                if *link == frame {
                    *link = (phys_to_virt(frame) as *const u64).read();
                    core::ptr::write_bytes(phys_to_virt(frame), 0, FRAME_SIZE as usize);
                    self.free -= 1;
                    return true;
                }
                link = phys_to_virt(*link) as *mut u64;
            }
        }
        false
    }
}

impl Default for FrameAllocator {
    fn default() -> Self {
        Self::new()
    }
}

/// Physically contiguous allocations come from a region set aside at boot, tracked with one
/// bit per frame; the general pool cannot provide contiguity.
pub struct ContiguousPool {
    base: u64,
    used: [u64; CONTIGUOUS_FRAMES / 64],
}

/// 32 MiB.
pub const CONTIGUOUS_FRAMES: usize = 8192;

impl ContiguousPool {
    pub const fn new() -> Self {
        ContiguousPool { base: 0, used: [u64::MAX; CONTIGUOUS_FRAMES / 64] }
    }

    fn set_range(&mut self, first: usize, count: usize, used: bool) {
        for i in first..first + count {
            if used {
                self.used[i / 64] |= 1 << (i % 64);
            } else {
                self.used[i / 64] &= !(1 << (i % 64));
            }
        }
    }

    fn is_free(&self, i: usize) -> bool {
        self.used[i / 64] & (1 << (i % 64)) == 0
    }

    /// `pages` zeroed contiguous frames whose physical base is aligned to `pages` rounded up to
    /// a power of two.
    pub fn alloc(&mut self, pages: usize) -> Option<u64> {
        let align = pages.next_power_of_two();
        let align_bytes = align as u64 * FRAME_SIZE;
        // First frame index whose physical address is aligned.
        let mut first = (((self.base + align_bytes - 1) & !(align_bytes - 1)) - self.base) / FRAME_SIZE;
        while first as usize + pages <= CONTIGUOUS_FRAMES {
            let start = first as usize;
            if (start..start + pages).all(|i| self.is_free(i)) {
                self.set_range(start, pages, true);
                let phys = self.base + first * FRAME_SIZE;
                // SAFETY: the range was free in this pool, which owns it; it is in the direct map.
                unsafe { core::ptr::write_bytes(phys_to_virt(phys), 0, pages * FRAME_SIZE as usize) };
                return Some(phys);
            }
            first += align as u64;
        }
        None
    }

    pub fn free(&mut self, phys: u64, pages: usize) {
        self.set_range(((phys - self.base) / FRAME_SIZE) as usize, pages, false);
    }

    pub fn free_frames(&self) -> usize {
        (0..CONTIGUOUS_FRAMES).filter(|&i| self.is_free(i)).count()
    }
}

pub static CONTIGUOUS: Mutex<ContiguousPool> = Mutex::new(ContiguousPool::new());

/// The kernel's one frame pool.
pub static FRAMES: Mutex<FrameAllocator> = Mutex::new(FrameAllocator::new());

/// Gives the usable RAM of `info` to `FRAMES`, except `heap_bytes` for the kernel heap and the
/// contiguous pool, both taken from the first region large enough; returns the heap's range.
pub fn init(info: &BootInfo, heap_bytes: u64) -> PhysRange {
    const POOL_BYTES: u64 = CONTIGUOUS_FRAMES as u64 * FRAME_SIZE;
    let mut heap = None;
    let mut frames = FRAMES.lock();
    for region in info.usable_regions() {
        let mut region = *region;
        if heap.is_none() && region.size() >= heap_bytes + POOL_BYTES + FRAME_SIZE {
            heap = Some(PhysRange { start: region.start, end: region.start + heap_bytes });
            region.start += heap_bytes;
            let mut pool = CONTIGUOUS.lock();
            pool.base = region.start;
            pool.set_range(0, CONTIGUOUS_FRAMES, false);
            region.start += POOL_BYTES;
        }
        frames.add_range(region);
    }
    heap.expect("no RAM region large enough for the kernel heap")
}
