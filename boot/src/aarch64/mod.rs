//! aarch64 entry on QEMU `virt`.
//!
//! `entry.S` runs first, at the image's physical address with the MMU off. It records
//! CNTVCT_EL0, leaves EL2 for EL1 if QEMU entered at EL2 (`virtualization=on`), enables FP/SIMD,
//! builds the early translation tables in .bss and turns the MMU on:
//!
//! - TTBR0_EL1: identity map of `[0, EARLY_DIRECT_MAP_SIZE)` with 1 GiB blocks, needed only for
//!   the few instructions between enabling the MMU and jumping to the high address; replaced by
//!   an empty table right after.
//! - TTBR1_EL1: the direct map of `[0, EARLY_DIRECT_MAP_SIZE)` at `DIRECT_MAP_BASE` (same
//!   level-1 table as the identity map) and the kernel image at `KERNEL_VIRT_BASE + physical`
//!   with 2 MiB blocks. The kernel replaces both with W^X 4 KiB mappings in
//!   `protect_kernel_image`.
//!
//! Both halves use the 4 KiB granule with 48-bit virtual addresses (T0SZ = T1SZ = 16), i.e.
//! four levels of 512 entries (Arm ARM D8.2, VMSAv8-64 translation).
//!
//! `entry.S` then calls [`boot_aarch64`] at the high address on the boot stack, which turns the
//! device tree into a [`BootInfo`] and calls `kernel_main`.
//!
//! Where the device tree is: QEMU hands an ELF kernel no DTB pointer (x0 = 0; only Linux
//! `Image` files get the Linux boot protocol), but `hw/arm/boot.c` places the DTB at the start of
//! RAM whenever it fits below the lowest loaded ELF address. The linker script leaves that
//! 2 MiB gap, and [`boot_aarch64`] checks the FDT magic there.

use crate::{BootInfo, Firmware, PhysRange, DIRECT_MAP_BASE, EARLY_DIRECT_MAP_SIZE, KERNEL_VIRT_BASE};

// SCTLR_EL1 (Arm ARM D19.2): bits that are RES1 in Armv8.0 and control features of later
// versions when those exist: EOS (11), TSCXT (20), EIS (22), SPAN (23: PSTATE.PAN is left
// unchanged on exception entry), nTLSMD (28), LSMAOE (29).
const SCTLR_EL1_RES1: u64 = (1 << 11) | (1 << 20) | (1 << 22) | (1 << 23) | (1 << 28) | (1 << 29);
const SCTLR_EL1_M: u64 = 1 << 0;
const SCTLR_EL1_C: u64 = 1 << 2;
/// SA (bit 3) and SA0 (bit 4): SP alignment checking at EL1 and EL0.
const SCTLR_EL1_SA_SA0: u64 = (1 << 3) | (1 << 4);
const SCTLR_EL1_I: u64 = 1 << 12;
const SCTLR_EL1_MMU_OFF: u64 = SCTLR_EL1_RES1;
/// EE = E0E = 0 (little-endian), WXN = 0, A = 0 (no alignment checking beyond the target's
/// strict-align code generation).
const SCTLR_EL1_MMU_ON: u64 = SCTLR_EL1_RES1 | SCTLR_EL1_M | SCTLR_EL1_C | SCTLR_EL1_I | SCTLR_EL1_SA_SA0;

/// HCR_EL2.RW (bit 31): the next lower level, EL1, is AArch64.
const HCR_EL2_RW: u64 = 1 << 31;
/// CNTHCTL_EL2.EL1PCTEN (bit 0) | EL1PCEN (bit 1).
const CNTHCTL_EL2_EL1_TIMER_ACCESS: u64 = 0b11;
/// CPTR_EL2 with HCR_EL2.E2H = 0: bits [13:12], [9] and [7:0] are RES1; TFP (bit 10) = 0 and
/// TZ (bit 8) = 0 leave FP/SIMD and SVE untrapped at EL2.
const CPTR_EL2_RES1: u64 = (0b11 << 12) | (1 << 9) | 0xFF;
/// SPSR_EL2 for the ERET to EL1: M[3:0] = 0b0101 (EL1h), D, A, I, F (bits 9:6) set.
const SPSR_EL1H_MASKED: u64 = (0b1111 << 6) | 0b0101;
/// CPACR_EL1.FPEN (bits 21:20) = 0b11.
const CPACR_EL1_FPEN: u64 = 0b11 << 20;

/// MAIR_EL1 (Arm ARM D19.2): Attr0 = 0x04 Device-nGnRE, Attr1 = 0xFF Normal Inner/Outer
/// Write-Back non-transient Read/Write-Allocate, Attr2 = 0x44 Normal Inner/Outer
/// Non-cacheable. The kernel's page-table code uses the same indices.
const MAIR_EL1: u64 = 0x04 | (0xFF << 8) | (0x44 << 16);

// TCR_EL1 (Arm ARM D19.2) without IPS, which entry.S fills in from ID_AA64MMFR0_EL1.
const TCR_T0SZ: u64 = 16; // bits [5:0]: 2^(64-16) bytes = 48-bit TTBR0 range
const TCR_IRGN0_WBWA: u64 = 0b01 << 8;
const TCR_ORGN0_WBWA: u64 = 0b01 << 10;
const TCR_SH0_INNER: u64 = 0b11 << 12;
const TCR_TG0_4K: u64 = 0b00 << 14;
const TCR_T1SZ: u64 = 16 << 16; // bits [21:16]
const TCR_IRGN1_WBWA: u64 = 0b01 << 24;
const TCR_ORGN1_WBWA: u64 = 0b01 << 26;
const TCR_SH1_INNER: u64 = 0b11 << 28;
const TCR_TG1_4K: u64 = 0b10 << 30; // TG1 encodes 4 KiB as 0b10, unlike TG0
const TCR_EL1: u64 = TCR_T0SZ
    | TCR_IRGN0_WBWA
    | TCR_ORGN0_WBWA
    | TCR_SH0_INNER
    | TCR_TG0_4K
    | TCR_T1SZ
    | TCR_IRGN1_WBWA
    | TCR_ORGN1_WBWA
    | TCR_SH1_INNER
    | TCR_TG1_4K;

// Stage 1 VMSAv8-64 descriptors (Arm ARM D8.3): bits [1:0] = 0b01 block, 0b11 table;
// AttrIndx [4:2]; AP [7:6] = 0b00 (EL1 read/write, no EL0 access); SH [9:8]; AF [10];
// PXN [53]; UXN [54].
const DESC_BLOCK: u64 = 0b01;
const DESC_TABLE: u64 = 0b11;
const DESC_ATTR_DEVICE: u64 = 0 << 2;
const DESC_ATTR_NORMAL: u64 = 1 << 2;
const DESC_SH_INNER: u64 = 0b11 << 8;
const DESC_AF: u64 = 1 << 10;
const DESC_PXN: u64 = 1 << 53;
const DESC_UXN: u64 = 1 << 54;
const DEVICE_BLOCK: u64 = DESC_BLOCK | DESC_ATTR_DEVICE | DESC_AF | DESC_PXN | DESC_UXN;
/// Executable at EL1: the identity map runs the MMU-enable sequence, the image runs the kernel.
const NORMAL_BLOCK: u64 = DESC_BLOCK | DESC_ATTR_NORMAL | DESC_SH_INNER | DESC_AF | DESC_UXN;

/// Semihosting (Arm "Semihosting for AArch32 and AArch64", v2.0): on AArch64, SYS_EXIT (0x18)
/// takes in X1 a pointer to {reason, subcode}; reason ADP_Stopped_ApplicationExit = 0x20026
/// makes QEMU exit with status = subcode. Boot faults exit with status 2, kernel failures use 1.
const SEMIHOSTING_SYS_EXIT: u64 = 0x18;
const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x20026;
const EARLY_FAULT_EXIT_CODE: u64 = 2;

// SAFETY: `_start` is the image's entry point and runs before any Rust code, on a CPU in the
// reset state QEMU sets up for `-kernel`; it touches only the image's own .bss (zeroing it and
// building page tables there) and system registers of EL1/EL2, and calls `boot_aarch64` exactly
// once with the MMU on, the image mapped at its link address and a valid stack.
core::arch::global_asm!(
    include_str!("entry.S"),
    hcr_el2 = const HCR_EL2_RW,
    cnthctl_el2 = const CNTHCTL_EL2_EL1_TIMER_ACCESS,
    cptr_el2 = const CPTR_EL2_RES1,
    sctlr_el1_mmu_off = const SCTLR_EL1_MMU_OFF,
    sctlr_el1_mmu_on = const SCTLR_EL1_MMU_ON,
    spsr_el1h_masked = const SPSR_EL1H_MASKED,
    cpacr_el1_fpen = const CPACR_EL1_FPEN,
    mair_el1 = const MAIR_EL1,
    tcr_el1 = const TCR_EL1,
    device_block = const DEVICE_BLOCK,
    normal_block = const NORMAL_BLOCK,
    table_desc = const DESC_TABLE,
    direct_map_gib = const EARLY_DIRECT_MAP_SIZE >> 30,
    direct_map_l0_offset = const ((DIRECT_MAP_BASE >> 39) & 0x1FF) * 8,
    semihosting_exit = const SEMIHOSTING_SYS_EXIT,
    adp_stopped_application_exit = const ADP_STOPPED_APPLICATION_EXIT,
    early_fault_exit_code = const EARLY_FAULT_EXIT_CODE,
);

/// Where QEMU `virt` places the DTB for ELF kernels: the base of RAM.
const DTB_PHYS: u64 = 0x4000_0000;
const FDT_MAGIC: u32 = 0xd00d_feed;

extern "C" {
    static __kernel_start: u8;
    static __kernel_phys_start: u8;
    static __kernel_end: u8;
}

static mut BOOT_INFO: BootInfo = BootInfo::empty(Firmware::DeviceTree { dtb: 0, size: 0 });

/// Called once from `entry.S`, at the high address, on the boot stack, with interrupts masked.
#[no_mangle]
extern "C" fn boot_aarch64(boot_start_count: u64, entry_el: u64) -> ! {
    // SAFETY: single CPU, called once before anything else reads BOOT_INFO; afterwards the
    // value is only read through the shared reference handed to the kernel.
    let info = unsafe { &mut *core::ptr::addr_of_mut!(BOOT_INFO) };
    // Linker-script symbols: only their addresses mean something.
    let image_virt = core::ptr::addr_of!(__kernel_start) as u64;
    let image_phys = core::ptr::addr_of!(__kernel_phys_start) as u64;
    let image_end = core::ptr::addr_of!(__kernel_end) as u64;
    assert_eq!(image_virt - image_phys, KERNEL_VIRT_BASE, "linker script and boot::KERNEL_VIRT_BASE disagree");
    info.kernel_image = PhysRange { start: image_phys, end: image_end - KERNEL_VIRT_BASE };
    info.boot_start_count = boot_start_count;
    info.entry_el = entry_el as u8;

    let fdt = find_device_tree();
    let dtb = PhysRange { start: DTB_PHYS, end: DTB_PHYS + fdt.total_size() as u64 };
    info.firmware = Firmware::DeviceTree { dtb: dtb.start, size: dtb.size() };
    if let Some(bootargs) = fdt.find_node("/chosen").and_then(|chosen| chosen.property("bootargs")) {
        info.set_cmdline(bootargs.value);
    }

    let mut reserved = ReservedRanges::default();
    reserved.push(info.kernel_image);
    reserved.push(dtb);
    // RAM beyond the early direct map cannot be reached by the frame allocator.
    reserved.push(PhysRange { start: EARLY_DIRECT_MAP_SIZE, end: u64::MAX });
    for reservation in fdt.memory_reservations() {
        let start = reservation.address() as u64;
        reserved.push(PhysRange { start, end: start + reservation.size() as u64 });
    }
    if let Some(reserved_memory) = fdt.find_node("/reserved-memory") {
        for region in reserved_memory.children().filter_map(|child| child.reg()).flatten() {
            let start = region.starting_address as u64;
            reserved.push(PhysRange { start, end: start + region.size.unwrap_or(0) as u64 });
        }
    }

    let root = fdt.find_node("/").expect("device tree without a root node");
    let memory_nodes =
        root.children().filter(|node| node.property("device_type").and_then(|p| p.as_str()) == Some("memory"));
    for region in memory_nodes.filter_map(|node| node.reg()).flatten() {
        let start = region.starting_address as u64;
        let ram = PhysRange { start, end: start + region.size.unwrap_or(0) as u64 };
        info.add_ram(ram, reserved.as_slice());
    }

    // SAFETY: `kernel_main` is the kernel's entry; BOOT_INFO lives for the whole run and is not
    // written again.
    unsafe { crate::kernel_main(&*core::ptr::addr_of!(BOOT_INFO)) }
}

/// The DTB QEMU left at the base of RAM, read through the direct map.
fn find_device_tree() -> fdt::Fdt<'static> {
    let dtb = (DIRECT_MAP_BASE + DTB_PHYS) as *const u8;
    // SAFETY: the base of RAM is in the early direct map, and 4 bytes are always readable there.
    let magic = u32::from_be(unsafe { (dtb as *const u32).read_volatile() });
    assert_eq!(magic, FDT_MAGIC, "no device tree at the base of RAM ({DTB_PHYS:#x})");
    // SAFETY: a valid FDT header is at `dtb` (magic checked); the fdt crate reads `totalsize`
    // bytes, which QEMU placed below the kernel image, and nothing writes them afterwards.
    unsafe { fdt::Fdt::from_ptr(dtb) }.expect("malformed device tree")
}

/// Physical ranges that must not become usable RAM, collected before `BootInfo::add_ram`.
#[derive(Default)]
struct ReservedRanges {
    ranges: [PhysRange; 16],
    count: usize,
}

impl ReservedRanges {
    fn push(&mut self, range: PhysRange) {
        assert!(self.count < self.ranges.len(), "too many reserved memory ranges in the device tree");
        self.ranges[self.count] = range;
        self.count += 1;
    }

    fn as_slice(&self) -> &[PhysRange] {
        &self.ranges[..self.count]
    }
}
