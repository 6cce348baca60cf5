//! A heap for the kernel and the servers: small blocks come from one free list per size class,
//! everything else (and the blocks the lists hand out the first time) from a
//! `linked_list_allocator` heap.
//!
//! `linked_list_allocator` walks its list of holes on every allocation and merges neighbours on
//! every free: correct and compact, but a few hundred instructions per call, and the IPC paths
//! allocate small objects (B-tree nodes, short vectors) on every request. A freed small block
//! is instead pushed on the list of its class and the next allocation of that class pops it:
//! a handful of instructions. The price is that memory once used for a class stays with that
//! class (it is reused, never returned to the backing heap); with eight classes up to 2 KiB
//! that bounds the idle memory by the peak use of each class.
//!
//! Classes are powers of two from 16 to 2048 bytes; a block serves requests whose size and
//! alignment both fit its class (blocks are aligned to their size, up to 16 bytes, by the
//! backing heap, so requests needing more alignment than 16 bytes go to the backing heap).
#![cfg_attr(not(test), no_std)]

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{null_mut, NonNull};
use linked_list_allocator::Heap;
use spin::Mutex;

/// Number of size classes: 16, 32, ..., 2048 bytes.
const CLASSES: usize = 8;
/// log2 of the smallest class.
const SMALLEST_SHIFT: u32 = 4;
/// Largest block size served from a class list.
pub const LARGEST_CLASS: usize = 1 << (SMALLEST_SHIFT as usize + CLASSES - 1);
/// Alignment every class block has (the backing allocation's alignment).
const CLASS_ALIGN: usize = 16;

/// The class of a request, if a class serves it.
fn class_of(layout: Layout) -> Option<usize> {
    if layout.size() > LARGEST_CLASS || layout.align() > CLASS_ALIGN {
        return None;
    }
    let size = layout.size().max(1 << SMALLEST_SHIFT).next_power_of_two();
    Some((size.trailing_zeros() - SMALLEST_SHIFT) as usize)
}

fn class_layout(class: usize) -> Layout {
    // A power of two between 16 and 2048 with alignment 16 is always a valid layout.
    Layout::from_size_align(1 << (class as u32 + SMALLEST_SHIFT), CLASS_ALIGN).expect("class layout")
}

/// A free block on a class list: its first word links to the next.
struct FreeBlock {
    next: Option<NonNull<FreeBlock>>,
}

struct Inner {
    backing: Heap,
    free: [Option<NonNull<FreeBlock>>; CLASSES],
    /// Bytes of blocks waiting on the class lists.
    cached: usize,
}

/// The allocator. `empty()` is usable as a `static`; [`ClassHeap::init`] gives it its memory.
pub struct ClassHeap {
    inner: Mutex<Inner>,
}

// SAFETY: the raw pointers inside point into the heap region, which the allocator owns; every
// access goes through the mutex.
unsafe impl Send for Inner {}

impl ClassHeap {
    pub const fn empty() -> Self {
        Self { inner: Mutex::new(Inner { backing: Heap::empty(), free: [None; CLASSES], cached: 0 }) }
    }

    /// Gives the heap its memory.
    ///
    /// # Safety
    /// `[start, start + size)` must be writable memory used by nothing else for as long as the
    /// heap is in use, and `init` must be called once, before any allocation.
    pub unsafe fn init(&self, start: *mut u8, size: usize) {
        // SAFETY: forwarded from the caller.
        unsafe { self.inner.lock().backing.init(start, size) }
    }

    /// Bytes allocated and not freed (blocks waiting on the class lists count as free).
    pub fn used(&self) -> usize {
        let inner = self.inner.lock();
        inner.backing.used() - inner.cached
    }

    /// Bytes the backing heap can still hand out (not counting the class lists).
    pub fn free_backing(&self) -> usize {
        self.inner.lock().backing.free()
    }
}

// SAFETY: blocks handed out are disjoint and inside the heap region (the backing heap's
// guarantee, and a class block is on its list only while free); a class block is at least as
// large and as aligned as every layout `class_of` maps to its class.
unsafe impl GlobalAlloc for ClassHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let mut inner = self.inner.lock();
        let Some(class) = class_of(layout) else {
            return inner.backing.allocate_first_fit(layout).map_or(null_mut(), |block| block.as_ptr());
        };
        if let Some(block) = inner.free[class] {
            // SAFETY: blocks on a class list are free blocks of that class written by
            // `dealloc`, inside the heap region and aligned for `FreeBlock`.
            inner.free[class] = unsafe { block.as_ref().next };
            inner.cached -= 1 << (class as u32 + SMALLEST_SHIFT);
            return block.as_ptr().cast();
        }
        inner.backing.allocate_first_fit(class_layout(class)).map_or(null_mut(), |block| block.as_ptr())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let mut inner = self.inner.lock();
        let Some(block) = NonNull::new(ptr) else { return };
        match class_of(layout) {
            Some(class) => {
                let block = block.cast::<FreeBlock>();
                // SAFETY: `ptr` was allocated by `alloc` with this layout, hence as a block of
                // this class: at least 16 bytes, 16-byte aligned, no longer used by the caller.
                unsafe { block.write(FreeBlock { next: inner.free[class] }) };
                inner.free[class] = Some(block);
                inner.cached += 1 << (class as u32 + SMALLEST_SHIFT);
            }
            // SAFETY: allocated by the backing heap with this same layout (`class_of` decides
            // the same way for both calls).
            None => unsafe { inner.backing.deallocate(block, layout) },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heap(bytes: usize) -> (ClassHeap, Vec<u128>) {
        let mut memory = vec![0u128; bytes / 16];
        let heap = ClassHeap::empty();
        // SAFETY: the vector outlives the heap in every test (returned alongside) and is used
        // by nothing else.
        unsafe { heap.init(memory.as_mut_ptr().cast(), bytes) };
        (heap, memory)
    }

    #[test]
    fn classes_round_up_and_large_or_aligned_requests_bypass_them() {
        assert_eq!(class_of(Layout::from_size_align(1, 1).unwrap()), Some(0));
        assert_eq!(class_of(Layout::from_size_align(16, 8).unwrap()), Some(0));
        assert_eq!(class_of(Layout::from_size_align(17, 8).unwrap()), Some(1));
        assert_eq!(class_of(Layout::from_size_align(2048, 16).unwrap()), Some(7));
        assert_eq!(class_of(Layout::from_size_align(2049, 8).unwrap()), None);
        assert_eq!(class_of(Layout::from_size_align(64, 64).unwrap()), None);
    }

    #[test]
    fn a_freed_block_is_reused_by_its_class_and_used_bytes_return() {
        let (heap, _memory) = heap(64 * 1024);
        let before = heap.used();
        let small = Layout::from_size_align(40, 8).unwrap();
        // SAFETY: layouts are non-zero; every block is freed with the layout it was made with.
        unsafe {
            let a = heap.alloc(small);
            assert!(!a.is_null() && (a as usize).is_multiple_of(16));
            assert_eq!(heap.used(), before + 64);
            a.write_bytes(0xAB, 40);
            heap.dealloc(a, small);
            assert_eq!(heap.used(), before);
            let backing_free = heap.free_backing();
            let b = heap.alloc(Layout::from_size_align(64, 16).unwrap());
            assert_eq!(b, a, "the 64-byte class hands back its freed block");
            assert_eq!(heap.free_backing(), backing_free, "no backing allocation for a cached block");
            heap.dealloc(b, Layout::from_size_align(64, 16).unwrap());
        }
    }

    #[test]
    fn large_blocks_go_back_to_the_backing_heap() {
        let (heap, _memory) = heap(64 * 1024);
        let big = Layout::from_size_align(8192, 8).unwrap();
        let free = heap.free_backing();
        // SAFETY: as above.
        unsafe {
            let block = heap.alloc(big);
            assert!(!block.is_null());
            assert!(heap.free_backing() <= free - 8192);
            heap.dealloc(block, big);
        }
        assert_eq!(heap.free_backing(), free);
    }

    #[test]
    fn exhaustion_is_a_null_pointer_not_a_panic() {
        let (heap, _memory) = heap(4096);
        let layout = Layout::from_size_align(2048, 8).unwrap();
        let mut blocks = Vec::new();
        // SAFETY: as above.
        unsafe {
            loop {
                let block = heap.alloc(layout);
                if block.is_null() {
                    break;
                }
                blocks.push(block);
                assert!(blocks.len() <= 2, "more 2 KiB blocks than a 4 KiB heap holds");
            }
            for block in blocks {
                heap.dealloc(block, layout);
            }
        }
    }
}
