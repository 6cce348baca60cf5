//! The kernel heap: a `class_heap` (size-class lists over `linked_list_allocator`) over a
//! physically contiguous range from `mm::init`.

use boot::PhysRange;
use class_heap::ClassHeap;

#[global_allocator]
static HEAP: ClassHeap = ClassHeap::empty();

pub fn init(range: PhysRange) {
    // SAFETY: `range` is RAM reserved for the heap by `mm::init` (not in the frame pool) and
    // mapped in the direct map; `init` is called once.
    unsafe { HEAP.init(crate::mm::phys_to_virt(range.start), range.size() as usize) };
}

pub fn used_bytes() -> usize {
    HEAP.used()
}
