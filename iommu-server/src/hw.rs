//! The `hwio` traits over the kernel: registers through mapped MMIO capabilities (as
//! `hwio::VolatileRegion`s), DMA memory
//! from physically contiguous memory objects pinned for their physical address, and a clock
//! from the time-stamp counter. [`Kernel`] hands them to the backend of this architecture.

use alloc::vec::Vec;
use hwio::{Clock, DmaAllocator, DmaBuffer, VolatileRegion};
use kernel_abi::MemFlags;
use userlib::{println, syscall};

use crate::layout::PAGE;
use crate::slots;

/// The backends' environment in the server: MMIO, kernel memory objects, the instruction
/// counter, the console.
pub struct Kernel;

impl iommu_backends::Environment for Kernel {
    type Registers = VolatileRegion;
    type Dma = DmaPool;
    type Clock = TscClock;

    fn log(line: core::fmt::Arguments<'_>) {
        println!("{line}");
    }
}

/// The backend this server drives: VT-d on x86, SMMUv3 on arm.
#[cfg(target_arch = "x86_64")]
pub type Backend = iommu_backends::vtd::VtdBackend<Kernel>;
#[cfg(target_arch = "aarch64")]
pub type Backend = iommu_backends::smmuv3::SmmuBackend<Kernel>;

/// The backend's name for a drained fault's code (the console log of undelivered faults).
#[cfg(target_arch = "x86_64")]
pub use iommu_backends::vtd::fault_name;
#[cfg(target_arch = "aarch64")]
pub use iommu_backends::smmuv3::fault_name;

/// Nanoseconds from the time-stamp counter, taken as 1 GHz: exact under `-icount shift=0`
/// (one instruction per nanosecond, and QEMU derives the TSC from that clock), and within a
/// small factor on TCG and hardware, which is all a bound on hardware waits needs.
#[derive(Clone, Copy, Default)]
pub struct TscClock;

impl Clock for TscClock {
    fn now_ns(&self) -> u64 {
        userlib::syscall::instruction_counter()
    }
}

/// Makes CPU stores to `[virt, virt + len)` reach memory: VT-d walks with ECAP.C = 0 do not
/// snoop caches. QEMU's TCG has no caches, but hardware does and the code must be right there.
pub fn flush_cache_range(virt: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        const LINE: usize = 64;
        let start = virt as usize & !(LINE - 1);
        let end = virt as usize + len;
        let mut line = start;
        while line < end {
            // SAFETY: CLFLUSH of a mapped address only writes the line back; it is allowed in
            // user mode and has no other effect.
            unsafe { core::arch::asm!("clflush [{}]", in(reg) line, options(nostack, preserves_flags)) };
            line += LINE;
        }
        // SAFETY: MFENCE orders the flushes before the stores that follow (the register write
        // or queue tail update that makes hardware look).
        unsafe { core::arch::asm!("mfence", options(nostack, preserves_flags)) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (virt, len);
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
    }
}

/// Pages of one chunk: tables are carved out of 1 MiB contiguous objects, so a page table
/// (two pages) does not cost a capability slot and a kernel pin of its own.
const CHUNK_PAGES: usize = 256;

struct Chunk {
    phys: u64,
    virt: u64,
    used: [u64; CHUNK_PAGES / 64],
}

impl Chunk {
    fn is_used(&self, page: usize) -> bool {
        self.used[page / 64] & 1 << (page % 64) != 0
    }
    fn mark(&mut self, first: usize, pages: usize, used: bool) {
        for page in first..first + pages {
            if used {
                self.used[page / 64] |= 1 << (page % 64);
            } else {
                self.used[page / 64] &= !(1 << (page % 64));
            }
        }
    }
    /// First free run of `pages` pages starting at a multiple of `align_pages`.
    fn find(&self, pages: usize, align_pages: usize) -> Option<usize> {
        let mut first = 0;
        while first + pages <= CHUNK_PAGES {
            match (first..first + pages).find(|&p| self.is_used(p)) {
                None => return Some(first),
                Some(used) => first = (used + 1).next_multiple_of(align_pages),
            }
        }
        None
    }
}

/// DMA memory for IOMMU tables and queues, from the kernel's contiguous memory objects.
pub struct DmaPool {
    chunks: Vec<Chunk>,
    next_slot: u64,
    next_virt: u64,
    authority: u64,
}

impl DmaPool {
    pub fn new(authority: u64, virt_base: u64) -> Self {
        DmaPool { chunks: Vec::new(), next_slot: slots::DMA_FIRST, next_virt: virt_base, authority }
    }

    /// A new contiguous object of `pages` pages mapped writable, with its physical address.
    fn grow(&mut self, pages: u64) -> Option<(u64, u64)> {
        if self.next_slot >= slots::DMA_FIRST + slots::DMA_COUNT {
            return None;
        }
        let slot = self.next_slot;
        syscall::mem_alloc(pages, slot, MemFlags::CONTIGUOUS).ok()?;
        let virt = self.next_virt;
        if syscall::mem_map(slot, virt, 0, pages, kernel_abi::MapFlags::WRITE).is_err() {
            let _ = syscall::cap_delete(slot);
            return None;
        }
        // The pin is never released: table memory stays with the server for its lifetime.
        let (_pin, phys) = match syscall::mem_pin(self.authority, slot, 0) {
            Ok(pinned) => pinned,
            Err(_) => {
                let _ = syscall::unmap(virt, pages);
                let _ = syscall::cap_delete(slot);
                return None;
            }
        };
        self.next_slot += 1;
        self.next_virt += pages.next_power_of_two() * PAGE;
        Some((phys, virt))
    }
}

impl DmaAllocator for DmaPool {
    fn alloc_zeroed(&mut self, size: usize, align: usize) -> Option<DmaBuffer> {
        let pages = size.div_ceil(PAGE as usize).max(1);
        let align_pages = (align / PAGE as usize).max(1);
        if pages > CHUNK_PAGES || align_pages > CHUNK_PAGES || !align_pages.is_power_of_two() {
            return None;
        }
        let found = self.chunks.iter().enumerate().find_map(|(index, chunk)| Some((index, chunk.find(pages, align_pages)?)));
        let (index, first) = match found {
            Some(found) => found,
            None => {
                let (phys, virt) = self.grow(CHUNK_PAGES as u64)?;
                self.chunks.push(Chunk { phys, virt, used: [0; CHUNK_PAGES / 64] });
                (self.chunks.len() - 1, 0)
            }
        };
        let chunk = &mut self.chunks[index];
        chunk.mark(first, pages, true);
        let offset = first as u64 * PAGE;
        let virt = (chunk.virt + offset) as *mut u8;
        // SAFETY: the run lies inside the chunk's writable mapping and was free, so no one else
        // holds a pointer into it.
        unsafe { core::ptr::write_bytes(virt, 0, pages * PAGE as usize) };
        flush_cache_range(virt, pages * PAGE as usize);
        Some(DmaBuffer { phys: chunk.phys + offset, virt, size: pages * PAGE as usize })
    }

    fn free(&mut self, buffer: DmaBuffer) {
        let pages = buffer.size.div_ceil(PAGE as usize);
        let chunk = self
            .chunks
            .iter_mut()
            .find(|c| (c.phys..c.phys + CHUNK_PAGES as u64 * PAGE).contains(&buffer.phys))
            .expect("freed buffer came from this pool");
        chunk.mark(((buffer.phys - chunk.phys) / PAGE) as usize, pages, false);
    }

    fn flush_for_device(&self, virt: *const u8, len: usize) {
        flush_cache_range(virt, len);
    }
}
