//! The kernel heap: `linked_list_allocator` over a physically contiguous range from `mm::init`.

use boot::PhysRange;
use linked_list_allocator::LockedHeap;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

pub fn init(range: PhysRange) {
    // SAFETY: `range` is RAM reserved for the heap by `mm::init` (not in the frame pool) and
    // mapped in the direct map; `init` is called once.
    unsafe { HEAP.lock().init(crate::mm::phys_to_virt(range.start), range.size() as usize) };
}

pub fn used_bytes() -> usize {
    HEAP.lock().used()
}
