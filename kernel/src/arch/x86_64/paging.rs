//! 4-level x86_64 paging (SDM Vol. 3 §4.5): the kernel's W^X mappings and user address spaces.
//!
//! The upper half (PML4 entries 256..512) is the kernel's and is shared by every address space:
//! each user PML4 copies those entries from the kernel PML4, whose lower-level tables are never
//! freed. The lower half belongs to the process.

use crate::arch::{Frames, MapError, MapFlags, PAGE_SIZE, USER_TOP};
use crate::mm::phys_to_virt;
use boot::{DIRECT_MAP_BASE, EARLY_DIRECT_MAP_SIZE, KERNEL_VIRT_BASE};
use core::sync::atomic::{AtomicU64, Ordering};

const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const USER: u64 = 1 << 2;
const WRITE_THROUGH: u64 = 1 << 3;
const CACHE_DISABLE: u64 = 1 << 4;
const HUGE: u64 = 1 << 7;
const GLOBAL: u64 = 1 << 8;
const NO_EXECUTE: u64 = 1 << 63;
const ADDRESS_MASK: u64 = 0x000F_FFFF_FFFF_F000;
/// q35 puts ECAM (0xB0000000), PCI MMIO, the I/O APIC, VT-d and the LAPIC between here and
/// 4 GiB: map that window uncached.
const MMIO_HOLE_START: u64 = 0xB000_0000;

static KERNEL_PML4: AtomicU64 = AtomicU64::new(0);

/// The memory attributes an IOMMU walking a user address space needs besides its root: none
/// on x86 (first-stage walks take caching from the entries themselves).
pub const USER_MEMORY_ATTRIBUTES: u64 = 0;

fn table(phys: u64) -> &'static mut [u64; 512] {
    // SAFETY: page-table frames are allocated from the frame pool and mapped in the direct map;
    // the kernel runs single-threaded with interrupts off, so no other reference is live.
    unsafe { &mut *(phys_to_virt(phys) as *mut [u64; 512]) }
}

fn index(va: u64, level: u32) -> usize {
    ((va >> (12 + 9 * level)) & 0x1FF) as usize
}

/// Returns the next-level table of `entry`, allocating it with `flags` if absent.
fn next_table(entry: &mut u64, flags: u64, frames: &mut Frames) -> Result<u64, MapError> {
    if *entry & PRESENT == 0 {
        let frame = frames.alloc().ok_or(MapError::OutOfMemory)?;
        *entry = frame | flags | PRESENT;
    }
    Ok(*entry & ADDRESS_MASK)
}

extern "C" {
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_end: u8;
    static __kernel_end: u8;
}

/// Builds the final kernel page tables and switches to them: the direct map of the first
/// 4 GiB (RW, NX; uncached over the MMIO hole) and the kernel image with 4 KiB pages: text RX,
/// rodata R+NX, data/bss RW+NX. The boot identity map is gone afterwards.
pub fn protect_kernel_image(frames: &mut Frames) {
    let pml4 = frames.alloc().expect("frame for the kernel PML4");
    let kernel_flags = PRESENT | WRITABLE | GLOBAL;
    for gib in 0..EARLY_DIRECT_MAP_SIZE >> 30 {
        let va = DIRECT_MAP_BASE + (gib << 30);
        let pdpt = next_table(&mut table(pml4)[index(va, 3)], WRITABLE, frames).expect("kernel tables");
        let pd = next_table(&mut table(pdpt)[index(va, 2)], WRITABLE, frames).expect("kernel tables");
        for (i, entry) in table(pd).iter_mut().enumerate() {
            let pa = (gib << 30) + ((i as u64) << 21);
            let cache = if pa >= MMIO_HOLE_START { CACHE_DISABLE | WRITE_THROUGH } else { 0 };
            *entry = pa | kernel_flags | HUGE | NO_EXECUTE | cache;
        }
    }
    // SAFETY: linker-script symbols; only their addresses are used.
    let (text_start, text_end, rodata_end, end) = unsafe {
        (
            &__text_start as *const u8 as u64,
            &__text_end as *const u8 as u64,
            &__rodata_end as *const u8 as u64,
            &__kernel_end as *const u8 as u64,
        )
    };
    let mut va = text_start;
    while va < end {
        let flags = if va < text_end {
            PRESENT | GLOBAL
        } else if va < rodata_end {
            PRESENT | GLOBAL | NO_EXECUTE
        } else {
            kernel_flags | NO_EXECUTE
        };
        let mut t = pml4;
        for level in (1..=3).rev() {
            t = next_table(&mut table(t)[index(va, level)], WRITABLE, frames).expect("kernel tables");
        }
        table(t)[index(va, 0)] = (va - KERNEL_VIRT_BASE) | flags;
        va += PAGE_SIZE;
    }
    // Pre-populate every kernel-half PML4 entry so that user address spaces, which copy them,
    // see later kernel mappings too.
    for entry in table(pml4)[256..].iter_mut() {
        next_table(entry, WRITABLE, frames).expect("kernel tables");
    }
    KERNEL_PML4.store(pml4, Ordering::Relaxed);
    // SAFETY: the new tables map everything the kernel uses (image, stack in .bss, direct map).
    unsafe { write_cr3(pml4) };
}

unsafe fn write_cr3(pml4: u64) {
    // SAFETY: the caller passes a PML4 whose kernel half maps the running kernel.
    unsafe { core::arch::asm!("mov cr3, {}", in(reg) pml4, options(nostack, preserves_flags)) };
}

fn read_cr3() -> u64 {
    let value: u64;
    // SAFETY: reading CR3 has no side effects.
    unsafe { core::arch::asm!("mov {}, cr3", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value & ADDRESS_MASK
}

/// Where an address space's tables start. The scheduler keeps one per thread, to switch
/// address spaces without looking up the thread's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Root(u64);

impl Root {
    /// Physical address of the top-level table (for an IOMMU that walks these tables).
    pub fn phys(self) -> u64 {
        self.0
    }

    /// The tables addresses translate through now.
    pub fn current() -> Root {
        Root(read_cr3())
    }

    /// Makes these the current tables.
    ///
    /// # Safety
    /// The address space whose root this is must not have been destroyed.
    pub unsafe fn activate(self) {
        // SAFETY: per the caller, the PML4 of a live address space, whose kernel half is the
        // kernel's own.
        unsafe { write_cr3(self.0) };
    }
}

/// A user address space: its own PML4 over the shared kernel half.
pub struct AddressSpace {
    pml4: u64,
    /// Table frames below the PML4 (`table_frames`).
    tables: u64,
}

impl AddressSpace {
    pub fn new(frames: &mut Frames) -> Option<AddressSpace> {
        let pml4 = frames.alloc()?;
        let kernel = KERNEL_PML4.load(Ordering::Relaxed);
        table(pml4)[256..].copy_from_slice(&table(kernel)[256..]);
        Some(AddressSpace { pml4, tables: 0 })
    }

    /// How many table frames the user half holds besides the root. Every one of them maps
    /// something: `unmap` frees the tables it leaves empty.
    pub fn table_frames(&self) -> u64 {
        self.tables
    }

    pub fn map(&mut self, va: u64, pa: u64, flags: MapFlags, frames: &mut Frames) -> Result<(), MapError> {
        if !va.is_multiple_of(PAGE_SIZE) || !pa.is_multiple_of(PAGE_SIZE) || va == 0 || va >= USER_TOP {
            return Err(MapError::BadAddress);
        }
        let mut t = self.pml4;
        for level in (1..=3).rev() {
            let entry = &mut table(t)[index(va, level)];
            let present = *entry & PRESENT != 0;
            t = next_table(entry, WRITABLE | USER, frames)?;
            self.tables += u64::from(!present);
        }
        let leaf = &mut table(t)[index(va, 0)];
        if *leaf & PRESENT != 0 {
            return Err(MapError::AlreadyMapped);
        }
        let mut entry = pa | PRESENT | USER;
        if flags.writable {
            entry |= WRITABLE;
        }
        if !flags.executable {
            entry |= NO_EXECUTE;
        }
        if flags.device {
            entry |= CACHE_DISABLE | WRITE_THROUGH;
        }
        *leaf = entry;
        Ok(())
    }

    fn leaf(&self, va: u64) -> Option<&'static mut u64> {
        if va >= USER_TOP {
            return None;
        }
        let mut t = self.pml4;
        for level in (1..=3).rev() {
            let entry = table(t)[index(va, level)];
            if entry & PRESENT == 0 {
                return None;
            }
            t = entry & ADDRESS_MASK;
        }
        let leaf = &mut table(t)[index(va, 0)];
        // Every user-half leaf is a user page; the check keeps a kernel-only one from ever
        // being read or written on a user's behalf.
        (*leaf & (PRESENT | USER) == PRESENT | USER).then_some(leaf)
    }

    /// Removes the mapping at `va` (if any), frees the page tables that leaves empty, and
    /// returns the physical page it mapped.
    pub fn unmap(&mut self, va: u64, frames: &mut Frames) -> Option<u64> {
        let va = va & !(PAGE_SIZE - 1);
        let pa = self.leaf(va).map(|leaf| {
            let pa = *leaf & ADDRESS_MASK;
            *leaf = 0;
            pa
        });
        let freed = self.unlink_empty_tables(va);
        if pa.is_some() || freed.iter().any(|&t| t != 0) {
            // SAFETY: INVLPG drops the TLB entry of `va` and every paging-structure cache entry
            // (SDM Vol. 3 §4.10.4.1), so no walk uses an unlinked table after this. For an
            // inactive address space it is harmless: the CR3 switch away from it flushed both.
            unsafe { core::arch::asm!("invlpg [{}]", in(reg) va, options(nostack, preserves_flags)) };
        }
        self.free_tables(freed, frames);
        pa
    }

    /// As `unmap`, but the tables it leaves empty are unlinked, forgotten by the CPU's TLB and
    /// handed back (0 where none) instead of freed: an IOMMU sharing these tables (SVA) may
    /// still hold them in its walk caches until its own invalidation, after which the caller
    /// frees them.
    pub fn unmap_keeping_tables(&mut self, va: u64) -> [u64; 3] {
        let va = va & !(PAGE_SIZE - 1);
        let unmapped = self.leaf(va).map(|leaf| *leaf = 0).is_some();
        let unlinked = self.unlink_empty_tables(va);
        if unmapped || unlinked.iter().any(|&t| t != 0) {
            // SAFETY: as in `unmap`.
            unsafe { core::arch::asm!("invlpg [{}]", in(reg) va, options(nostack, preserves_flags)) };
        }
        self.tables -= unlinked.iter().filter(|&&t| t != 0).count() as u64;
        unlinked
    }

    /// Frees the page tables on `va`'s path that map nothing (after a map that failed part way).
    pub fn free_empty_tables(&mut self, va: u64, frames: &mut Frames) {
        let freed = self.unlink_empty_tables(va);
        if freed.iter().any(|&t| t != 0) {
            // SAFETY: as in `unmap`.
            unsafe { core::arch::asm!("invlpg [{}]", in(reg) va, options(nostack, preserves_flags)) };
        }
        self.free_tables(freed, frames);
    }

    /// Unlinks the tables on `va`'s path that have no entry left, bottom-up (never the PML4),
    /// and returns them (0 where none), to be freed once the TLB forgot them.
    fn unlink_empty_tables(&mut self, va: u64) -> [u64; 3] {
        let mut freed = [0; 3];
        if va >= USER_TOP {
            return freed;
        }
        // path[d]: the table at depth d on the walk to `va` (0: PML4 ... 3: page table), as far
        // as it goes.
        let mut path = [self.pml4; 4];
        let mut depth = 0;
        while depth < 3 {
            let entry = table(path[depth])[index(va, 3 - depth as u32)];
            if entry & PRESENT == 0 {
                break;
            }
            depth += 1;
            path[depth] = entry & ADDRESS_MASK;
        }
        while depth > 0 && table(path[depth]).iter().all(|&entry| entry == 0) {
            table(path[depth - 1])[index(va, 4 - depth as u32)] = 0;
            freed[depth - 1] = path[depth];
            depth -= 1;
        }
        freed
    }

    fn free_tables(&mut self, tables: [u64; 3], frames: &mut Frames) {
        for t in tables.into_iter().filter(|&t| t != 0) {
            frames.free(t);
            self.tables -= 1;
        }
    }

    /// Takes write (`writable` false) and execute (`executable` false) away from the user page
    /// at `va`; rights `flags` grants are kept if the page has them, never added. Returns
    /// whether the entry changed (then the CPU's TLB no longer holds the old rights).
    pub fn downgrade(&mut self, va: u64, flags: MapFlags) -> bool {
        let Some(leaf) = self.leaf(va & !(PAGE_SIZE - 1)) else { return false };
        let mut entry = *leaf;
        if !flags.writable {
            entry &= !WRITABLE;
        }
        if !flags.executable {
            entry |= NO_EXECUTE;
        }
        if entry == *leaf {
            return false;
        }
        *leaf = entry;
        // SAFETY: INVLPG drops the TLB entry of `va` (SDM Vol. 3 §4.10.4.1), so the next access
        // sees the reduced rights; harmless for an inactive address space.
        unsafe { core::arch::asm!("invlpg [{}]", in(reg) va, options(nostack, preserves_flags)) };
        true
    }

    pub fn translate(&self, va: u64) -> Option<(u64, MapFlags)> {
        let entry = *self.leaf(va & !(PAGE_SIZE - 1))?;
        let flags = MapFlags {
            writable: entry & WRITABLE != 0,
            executable: entry & NO_EXECUTE == 0,
            device: entry & CACHE_DISABLE != 0,
        };
        Some(((entry & ADDRESS_MASK) + (va & (PAGE_SIZE - 1)), flags))
    }

    pub fn root(&self) -> Root {
        Root(self.pml4)
    }

    /// Whether an IOMMU walking these tables as a first-level table with user requests only
    /// (VT-d SVA, SRE = 0) reaches exactly the user half: every present entry of the user
    /// half, at every level, has U/S = 1, and every kernel-half PML4 entry has U/S = 0.
    pub fn iommu_walkable(&self) -> bool {
        /// Entries of the table `t` at `level` (2: PDPT ... 0: page table); user tables hold no
        /// large pages.
        fn user_level(t: u64, level: u32) -> bool {
            table(t).iter().filter(|&&e| e & PRESENT != 0).all(|&e| e & USER != 0 && (level == 0 || user_level(e & ADDRESS_MASK, level - 1)))
        }
        let root = table(self.pml4);
        root[..256].iter().filter(|&&e| e & PRESENT != 0).all(|&e| e & USER != 0 && user_level(e & ADDRESS_MASK, 2))
            && root[256..].iter().all(|&e| e & USER == 0)
    }

    /// Frees every page-table page of the user half and the PML4 (not the mapped frames, which
    /// belong to memory objects). Switches to the kernel tables first if this one is active.
    pub fn destroy(self, frames: &mut Frames) {
        if read_cr3() == self.pml4 {
            // SAFETY: the kernel PML4 maps the running kernel.
            unsafe { write_cr3(KERNEL_PML4.load(Ordering::Relaxed)) };
        }
        fn free_level(t: u64, level: u32, frames: &mut Frames) {
            if level > 0 {
                for entry in table(t).iter() {
                    if *entry & PRESENT != 0 {
                        free_level(*entry & ADDRESS_MASK, level - 1, frames);
                    }
                }
            }
            frames.free(t);
        }
        for entry in table(self.pml4)[..256].iter() {
            if *entry & PRESENT != 0 {
                free_level(*entry & ADDRESS_MASK, 2, frames);
            }
        }
        frames.free(self.pml4);
    }
}
