//! The server's heap: one memory object mapped at `layout::HEAP`, managed by a `class_heap`
//! (size-class lists over a linked-list allocator, behind a spin lock: both server threads
//! allocate).

use class_heap::ClassHeap;
use userlib::syscall;

use crate::layout;
use crate::slots;

#[global_allocator]
static HEAP: ClassHeap = ClassHeap::empty();

pub fn init() -> Result<(), kernel_abi::Error> {
    syscall::mem_alloc(layout::HEAP_PAGES, slots::HEAP, kernel_abi::MemFlags::empty())?;
    syscall::mem_map(slots::HEAP, layout::HEAP, 0, layout::HEAP_PAGES, kernel_abi::MapFlags::WRITE)?;
    // SAFETY: the range was just mapped writable, belongs to nothing else, and stays mapped
    // for the life of the process; `init` runs once, before any allocation.
    unsafe { HEAP.init(layout::HEAP as *mut u8, (layout::HEAP_PAGES * layout::PAGE) as usize) };
    Ok(())
}
