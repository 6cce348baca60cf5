//! VMSAv8-64 stage 1 translation (Arm ARM D8): the kernel's W^X mappings and user address
//! spaces.
//!
//! Both halves use the 4 KiB granule and 48-bit virtual addresses (TCR_EL1.T0SZ = T1SZ = 16, set
//! by the boot code), i.e. four levels of 512 eight-byte descriptors. The halves have separate
//! roots, which makes sharing the kernel half free:
//!
//! - TTBR1_EL1 (addresses from 0xFFFF_0000_0000_0000): the kernel, the same for every address
//!   space; rebuilt once by [`protect_kernel_image`].
//! - TTBR0_EL1 (addresses below 2^48): the user address space, switched by
//!   [`AddressSpace::activate`]. While no user space is active it points at an empty table, so a
//!   stray kernel access to a low address faults.
//!
//! ASIDs are not used: every user space runs with ASID 0, its pages are non-global (nG), and
//! `activate` invalidates the whole EL1 TLB (TLBI VMALLE1IS) when it changes TTBR0_EL1. That is
//! the simplest scheme that is correct without ASID allocation and rollover; the cost is
//! refilling the kernel's TLB entries after each switch.
//!
//! Memory attributes come from MAIR_EL1 as programmed by the boot code: index 0 Device-nGnRE,
//! index 1 Normal Write-Back, index 2 Normal Non-cacheable (checked in `protect_kernel_image`).

use crate::arch::{Frames, MapError, MapFlags, PAGE_SIZE, USER_TOP};
use crate::mm::phys_to_virt;
use aarch64_cpu::registers::{Readable, MAIR_EL1, TTBR0_EL1};
use boot::{DIRECT_MAP_BASE, EARLY_DIRECT_MAP_SIZE, KERNEL_VIRT_BASE};

// Descriptor fields (Arm ARM D8.3, "Translation table descriptor formats").
/// Bit 0: valid.
const VALID: u64 = 1 << 0;
/// Bit 1: at levels 0-2 a table (not a block) descriptor; at level 3 it must be set (page).
const TABLE_OR_PAGE: u64 = 1 << 1;
/// AttrIndx, bits [4:2]: MAIR_EL1 attribute index.
const ATTR_DEVICE_NGNRE: u64 = 0 << 2;
const ATTR_NORMAL_WRITE_BACK: u64 = 1 << 2;
const ATTR_INDEX_MASK: u64 = 0b111 << 2;
/// AP[1], bit 6: EL0 may access.
const AP_EL0: u64 = 1 << 6;
/// AP[2], bit 7: read-only (at every EL that may access).
const AP_READ_ONLY: u64 = 1 << 7;
/// SH, bits [9:8] = 0b11: Inner Shareable (Normal memory; Device memory ignores SH).
const INNER_SHAREABLE: u64 = 0b11 << 8;
/// Bit 10: access flag. Set in every descriptor: no access-flag faults (no FEAT_HAFDBS use).
const ACCESS_FLAG: u64 = 1 << 10;
/// Bit 11: not global, the entry is tagged with the ASID.
const NOT_GLOBAL: u64 = 1 << 11;
/// Bit 53: privileged execute-never. Bit 54: unprivileged execute-never.
const PXN: u64 = 1 << 53;
const UXN: u64 = 1 << 54;
/// Table descriptor bit 59: PXNTable, execution at EL1 is never permitted below this entry.
const PXN_TABLE: u64 = 1 << 59;
/// Output address, bits [47:12] (48-bit physical addresses).
const ADDRESS_MASK: u64 = 0x0000_FFFF_FFFF_F000;

/// MAIR_EL1 as the boot code programs it: Attr0 0x04, Attr1 0xFF, Attr2 0x44.
const EXPECTED_MAIR_EL1: u64 = 0x44_FF_04;

/// The memory attributes an IOMMU walking a user address space must use: the CPU's MAIR_EL1,
/// which the descriptors' AttrIndx fields index.
pub const USER_MEMORY_ATTRIBUTES: u64 = EXPECTED_MAIR_EL1;

const ENTRIES: usize = 512;
const LEVELS: u32 = 4;

/// A 4 KiB translation table in the kernel image, for when no frame allocator is at hand.
#[repr(C, align(4096))]
struct StaticTable([u64; ENTRIES]);

/// TTBR0_EL1's table while no user address space is active: every entry invalid.
static EMPTY_TABLE: StaticTable = StaticTable([0; ENTRIES]);

fn table(phys: u64) -> &'static mut [u64; ENTRIES] {
    // SAFETY: translation-table frames come from the frame pool and are mapped in the direct
    // map; the kernel runs single-threaded with interrupts masked, so no other reference to the
    // table is live while the returned one is used.
    unsafe { &mut *(phys_to_virt(phys) as *mut [u64; ENTRIES]) }
}

/// Index of `va` in a table of `level` (0 = root, 3 = last): VA bits [47:39], [38:30], [29:21],
/// [20:12].
fn index(va: u64, level: u32) -> usize {
    ((va >> (39 - 9 * level)) & 0x1FF) as usize
}

/// Physical address of something in the kernel image (linked at KERNEL_VIRT_BASE + physical).
fn image_phys<T>(item: *const T) -> u64 {
    item as u64 - KERNEL_VIRT_BASE
}

/// Returns the table `entry` points to, first allocating it with the extra table `attributes`
/// if `entry` is invalid.
fn next_table(entry: &mut u64, attributes: u64, frames: &mut Frames) -> Result<u64, MapError> {
    if *entry & VALID == 0 {
        let frame = frames.alloc().ok_or(MapError::OutOfMemory)?;
        *entry = frame | attributes | TABLE_OR_PAGE | VALID;
    }
    Ok(*entry & ADDRESS_MASK)
}

/// Makes descriptor writes visible to the table walker (Arm ARM D8.2.8/D8.16: a DSB after
/// updating translation tables, before the new entries may be used).
fn publish_table_writes() {
    // SAFETY: a barrier; no memory is modified.
    unsafe { core::arch::asm!("dsb ishst", options(nostack, preserves_flags)) };
}

/// Sets TTBR0_EL1 (ASID 0) and invalidates every EL1 TLB entry (and cached walk) of this
/// Inner Shareable domain.
///
/// # Safety
/// `root` must be a level-0 table that maps no kernel memory at EL0-accessible or EL1-
/// executable addresses, and must stay valid until TTBR0_EL1 is changed again.
unsafe fn set_user_root(root: u64) {
    // SAFETY: per the caller's guarantee the new table cannot expose the kernel; the
    // TLBI/DSB/ISB sequence (Arm ARM D8.16.2) ensures no translation from the previous table
    // survives.
    unsafe {
        core::arch::asm!(
            "msr ttbr0_el1, {root}",
            "isb",
            "tlbi vmalle1is",
            "dsb ish",
            "isb",
            root = in(reg) root,
            options(nostack, preserves_flags),
        )
    };
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

    /// The tables user addresses translate through now.
    pub fn current() -> Root {
        Root(TTBR0_EL1.get_baddr())
    }

    /// Makes these the current user tables.
    ///
    /// # Safety
    /// The address space whose root this is must not have been destroyed.
    pub unsafe fn activate(self) {
        // SAFETY: per the caller, the tables of a live address space: they map only EL0 pages,
        // all PXN, and live until `destroy`, which switches away from them first.
        unsafe { set_user_root(self.0) };
    }
}

/// A user address space: the tables behind TTBR0_EL1.
pub struct AddressSpace {
    root: u64,
    /// Table frames below the root (`table_frames`).
    tables: u64,
}

impl AddressSpace {
    pub fn new(frames: &mut Frames) -> Option<AddressSpace> {
        Some(AddressSpace { root: frames.alloc()?, tables: 0 })
    }

    /// How many table frames the address space holds besides the root. Every one of them maps
    /// something: `unmap` frees the tables it leaves empty.
    pub fn table_frames(&self) -> u64 {
        self.tables
    }

    /// Maps the 4 KiB page at `va` to `pa`. User pages are always PXN (the kernel never runs
    /// user code) and UXN unless executable; device pages are never executable.
    pub fn map(&mut self, va: u64, pa: u64, flags: MapFlags, frames: &mut Frames) -> Result<(), MapError> {
        if !va.is_multiple_of(PAGE_SIZE) || !pa.is_multiple_of(PAGE_SIZE) || pa & !ADDRESS_MASK != 0 || !(PAGE_SIZE..USER_TOP).contains(&va) {
            return Err(MapError::BadAddress);
        }
        let mut t = self.root;
        for level in 0..LEVELS - 1 {
            let entry = &mut table(t)[index(va, level)];
            let present = *entry & VALID != 0;
            t = next_table(entry, PXN_TABLE, frames)?;
            self.tables += u64::from(!present);
        }
        let leaf = &mut table(t)[index(va, LEVELS - 1)];
        if *leaf & VALID != 0 {
            return Err(MapError::AlreadyMapped);
        }
        let memory_type =
            if flags.device { ATTR_DEVICE_NGNRE | UXN } else { ATTR_NORMAL_WRITE_BACK | INNER_SHAREABLE };
        let permissions = AP_EL0
            | if flags.writable { 0 } else { AP_READ_ONLY }
            | if flags.executable { 0 } else { UXN };
        // An invalid entry is never held in a TLB (Arm ARM D8.16.1), so no invalidation is due.
        *leaf = pa | memory_type | permissions | PXN | NOT_GLOBAL | ACCESS_FLAG | TABLE_OR_PAGE | VALID;
        publish_table_writes();
        Ok(())
    }

    fn leaf(&self, va: u64) -> Option<&'static mut u64> {
        if va >= USER_TOP {
            return None;
        }
        let mut t = self.root;
        for level in 0..LEVELS - 1 {
            let entry = table(t)[index(va, level)];
            if entry & VALID == 0 {
                return None;
            }
            t = entry & ADDRESS_MASK;
        }
        let leaf = &mut table(t)[index(va, LEVELS - 1)];
        // Every leaf of these tables is an EL0 page; the check keeps a privileged-only one from
        // ever being read or written on a user's behalf.
        (*leaf & (VALID | AP_EL0) == VALID | AP_EL0).then_some(leaf)
    }

    /// Removes the mapping at `va` (if any), frees the translation tables that leaves empty,
    /// and returns the physical page it mapped.
    pub fn unmap(&mut self, va: u64, frames: &mut Frames) -> Option<u64> {
        let va = va & !(PAGE_SIZE - 1);
        let pa = self.leaf(va).map(|leaf| {
            let pa = *leaf & ADDRESS_MASK;
            *leaf = 0;
            pa
        });
        let freed = self.unlink_empty_tables(va);
        if pa.is_some() || freed.iter().any(|&t| t != 0) {
            invalidate(va);
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
            invalidate(va);
        }
        self.tables -= unlinked.iter().filter(|&&t| t != 0).count() as u64;
        unlinked
    }

    /// Frees the translation tables on `va`'s path that map nothing (after a map that failed
    /// part way).
    pub fn free_empty_tables(&mut self, va: u64, frames: &mut Frames) {
        let freed = self.unlink_empty_tables(va);
        if freed.iter().any(|&t| t != 0) {
            invalidate(va);
        }
        self.free_tables(freed, frames);
    }

    /// Unlinks the tables on `va`'s path that have no valid entry left, bottom-up (never the
    /// root), and returns them (0 where none), to be freed once the TLB forgot them.
    fn unlink_empty_tables(&mut self, va: u64) -> [u64; 3] {
        let mut freed = [0; 3];
        if va >= USER_TOP {
            return freed;
        }
        // path[level]: the table of `level` on the walk to `va` (0: root ... 3: last), as far
        // as it goes.
        let mut path = [self.root; LEVELS as usize];
        let mut level = 0;
        while level < LEVELS as usize - 1 {
            let entry = table(path[level])[index(va, level as u32)];
            if entry & VALID == 0 {
                break;
            }
            level += 1;
            path[level] = entry & ADDRESS_MASK;
        }
        while level > 0 && table(path[level]).iter().all(|&entry| entry == 0) {
            table(path[level - 1])[index(va, level as u32 - 1)] = 0;
            freed[level - 1] = path[level];
            level -= 1;
        }
        freed
    }

    fn free_tables(&mut self, tables: [u64; 3], frames: &mut Frames) {
        for t in tables.into_iter().filter(|&t| t != 0) {
            frames.free(t);
            self.tables -= 1;
        }
    }

    /// Takes write (`writable` false: AP[2] set) and execute (`executable` false: UXN set)
    /// away from the EL0 page at `va`; rights `flags` grants are kept if the page has them,
    /// never added. Returns whether the descriptor changed (then the TLB no longer holds the
    /// old rights).
    pub fn downgrade(&mut self, va: u64, flags: MapFlags) -> bool {
        let va = va & !(PAGE_SIZE - 1);
        let Some(leaf) = self.leaf(va) else { return false };
        let mut entry = *leaf;
        if !flags.writable {
            entry |= AP_READ_ONLY;
        }
        if !flags.executable {
            entry |= UXN;
        }
        if entry == *leaf {
            return false;
        }
        // A change of permissions only needs no break-before-make (Arm ARM D8.16.1): the new
        // descriptor is stored, then the old one's TLB entries invalidated.
        *leaf = entry;
        invalidate(va);
        true
    }

    /// The physical address `va` maps to and the mapping's permissions.
    pub fn translate(&self, va: u64) -> Option<(u64, MapFlags)> {
        let entry = *self.leaf(va & !(PAGE_SIZE - 1))?;
        let flags = MapFlags {
            writable: entry & AP_READ_ONLY == 0,
            executable: entry & UXN == 0,
            device: entry & ATTR_INDEX_MASK == ATTR_DEVICE_NGNRE,
        };
        Some(((entry & ADDRESS_MASK) + (va & (PAGE_SIZE - 1)), flags))
    }

    pub fn root(&self) -> Root {
        Root(self.root)
    }

    /// Whether an SMMU walking these tables through a CD (TTB0, AFFD = 0, no hardware
    /// access-flag updates) sees what the CPU sees: every valid entry above the last level is
    /// a table descriptor, and every page has AF and AP[1] (EL0) set.
    pub fn iommu_walkable(&self) -> bool {
        fn level_ok(t: u64, level: u32) -> bool {
            table(t).iter().filter(|&&e| e & VALID != 0).all(|&e| {
                if level == LEVELS - 1 {
                    e & (TABLE_OR_PAGE | ACCESS_FLAG | AP_EL0) == TABLE_OR_PAGE | ACCESS_FLAG | AP_EL0
                } else {
                    e & TABLE_OR_PAGE != 0 && level_ok(e & ADDRESS_MASK, level + 1)
                }
            })
        }
        level_ok(self.root, 0)
    }

    /// Frees every translation table of this address space (not the mapped frames, which belong
    /// to memory objects). Switches TTBR0_EL1 to the empty table first if this one is active.
    pub fn destroy(self, frames: &mut Frames) {
        if TTBR0_EL1.get_baddr() == self.root {
            // SAFETY: the empty table maps nothing and is a static.
            unsafe { set_user_root(image_phys(&EMPTY_TABLE)) };
        }
        fn free_level(t: u64, level: u32, frames: &mut Frames) {
            if level < LEVELS - 1 {
                for entry in table(t).iter().filter(|entry| **entry & VALID != 0) {
                    free_level(*entry & ADDRESS_MASK, level + 1, frames);
                }
            }
            frames.free(t);
        }
        free_level(self.root, 0, frames);
    }
}

/// Invalidates the TLB entries of user page `va`, and the walk-cache entries of every level
/// on its path (TLBI VAE1IS, not VALE1IS: unlinked tables must be forgotten too).
fn invalidate(va: u64) {
    // TLBI VAE1IS takes VA[55:12] in bits [43:0] and the ASID (0) in bits [63:48].
    let operand = (va >> 12) & 0xFFF_FFFF_FFFF;
    // SAFETY: break-before-make for removed descriptors (Arm ARM D8.16.1): the descriptor
    // stores are made visible, then the entries cached for this VA invalidated and completed.
    // For an inactive address space the invalidation only drops an entry of the active one,
    // which is refetched.
    unsafe {
        core::arch::asm!(
            "dsb ishst",
            "tlbi vae1is, {operand}",
            "dsb ish",
            "isb",
            operand = in(reg) operand,
            options(nostack, preserves_flags),
        )
    };
}

extern "C" {
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_end: u8;
    static __boot_stack_guard: u8;
    static __kernel_end: u8;
}

/// Builds the final kernel translation tables and switches TTBR1_EL1 to them:
///
/// - the direct map of `[0, EARLY_DIRECT_MAP_SIZE)` with 1 GiB blocks, read/write and never
///   executable: Device-nGnRE for the first GiB (`virt`'s MMIO), Normal Write-Back above;
/// - the kernel image with 4 KiB pages: text read-only and executable, rodata read-only,
///   data/bss/stack read/write; only text is executable at EL1; nothing is accessible at EL0.
///   The boot stack's guard page stays unmapped, so a kernel stack overflow faults.
///
/// The image's physical pages also stay writable through the direct map, as on x86.
pub fn protect_kernel_image(frames: &mut Frames) {
    assert_eq!(MAIR_EL1.get(), EXPECTED_MAIR_EL1, "MAIR_EL1 differs from the boot code's layout");
    let root = frames.alloc().expect("frame for the kernel's level-0 table");

    let direct_map = frames.alloc().expect("frame for the direct map's level-1 table");
    for gib in 0..EARLY_DIRECT_MAP_SIZE >> 30 {
        let memory_type =
            if gib == 0 { ATTR_DEVICE_NGNRE } else { ATTR_NORMAL_WRITE_BACK | INNER_SHAREABLE };
        // Level-1 block descriptor: bit 1 clear.
        table(direct_map)[gib as usize] = (gib << 30) | memory_type | PXN | UXN | ACCESS_FLAG | VALID;
    }
    table(root)[index(DIRECT_MAP_BASE, 0)] = direct_map | TABLE_OR_PAGE | VALID;

    let text_start = core::ptr::addr_of!(__text_start) as u64;
    let text_end = core::ptr::addr_of!(__text_end) as u64;
    let rodata_end = core::ptr::addr_of!(__rodata_end) as u64;
    let guard_page = core::ptr::addr_of!(__boot_stack_guard) as u64;
    let image_end = core::ptr::addr_of!(__kernel_end) as u64;
    for va in (text_start..image_end).step_by(PAGE_SIZE as usize) {
        let permissions = match va {
            _ if va == guard_page => continue,
            _ if va < text_end => AP_READ_ONLY | UXN,
            _ if va < rodata_end => AP_READ_ONLY | PXN | UXN,
            _ => PXN | UXN,
        };
        let mut t = root;
        for level in 0..LEVELS - 1 {
            t = next_table(&mut table(t)[index(va, level)], 0, frames).expect("frame for a kernel table");
        }
        table(t)[index(va, LEVELS - 1)] = (va - KERNEL_VIRT_BASE)
            | ATTR_NORMAL_WRITE_BACK
            | INNER_SHAREABLE
            | permissions
            | ACCESS_FLAG
            | TABLE_OR_PAGE
            | VALID;
    }

    // A temporary identity map of the GiB holding the image, executable, for the switch below.
    let identity_root = frames.alloc().expect("frame for the identity map");
    let identity_l1 = frames.alloc().expect("frame for the identity map");
    let image_gib = (text_start - KERNEL_VIRT_BASE) & !((1 << 30) - 1);
    table(identity_l1)[index(image_gib, 1)] =
        image_gib | ATTR_NORMAL_WRITE_BACK | INNER_SHAREABLE | UXN | ACCESS_FLAG | VALID;
    table(identity_root)[index(image_gib, 0)] = identity_l1 | TABLE_OR_PAGE | VALID;
    publish_table_writes();

    // SAFETY: the new tables map the running kernel's text, data and stack at the same
    // addresses and physical pages as the boot tables, and the direct map likewise; see
    // `replace_kernel_root` for the switch itself.
    unsafe { replace_kernel_root(root, identity_root) };
    frames.free(identity_l1);
    frames.free(identity_root);
}

/// Switches TTBR1_EL1 to `new_root` without ever letting the TLB hold the old (2 MiB block)
/// and new (4 KiB page) translations of the same address at once, which could raise a TLB
/// conflict abort (Arm ARM D8.16.1, break-before-make). As the kernel runs from TTBR1 itself,
/// the switch runs from the identity map `identity_root` installed in TTBR0_EL1 for the
/// duration: TTBR1 points at an empty table, the TLB is invalidated, then TTBR1 takes the new
/// root and execution returns to the high address. TTBR0_EL1 gets its previous value back.
/// Boot CPU only, before any other CPU runs, hence the non-shareable TLBI.
///
/// # Safety
/// `new_root` must map the running kernel (text, stack, data) as the current tables do, and
/// `identity_root` must identity-map, executable at EL1, the physical pages of this function.
unsafe fn replace_kernel_root(new_root: u64, identity_root: u64) {
    // SAFETY: between `br` to the physical alias and `br` back, the code touches no memory
    // (no stack: SP is a TTBR1 address) and takes no exception (DAIF is masked, the identity map
    // covers the instructions). The empty table and the caller's guarantees make each TTBR1
    // value valid for what runs under it.
    unsafe {
        core::arch::asm!(
            "mrs {saved_ttbr0}, ttbr0_el1",
            "msr ttbr0_el1, {identity}",
            "isb",
            "tlbi vmalle1",
            "dsb nsh",
            "isb",
            "adr {scratch}, 2f",
            "sub {scratch}, {scratch}, {virt_offset}",
            "br {scratch}",
            "2:",
            "msr ttbr1_el1, {empty}",
            "isb",
            "tlbi vmalle1",
            "dsb nsh",
            "isb",
            "msr ttbr1_el1, {new_root}",
            "isb",
            "adr {scratch}, 3f",
            "add {scratch}, {scratch}, {virt_offset}",
            "br {scratch}",
            "3:",
            "msr ttbr0_el1, {saved_ttbr0}",
            "isb",
            "tlbi vmalle1",
            "dsb nsh",
            "isb",
            identity = in(reg) identity_root,
            empty = in(reg) image_phys(&EMPTY_TABLE),
            new_root = in(reg) new_root,
            virt_offset = in(reg) KERNEL_VIRT_BASE,
            saved_ttbr0 = out(reg) _,
            scratch = out(reg) _,
            options(nostack),
        )
    };
}
