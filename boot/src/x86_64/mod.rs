//! x86_64 entry through PVH (QEMU `-kernel` with an ELF carrying a Xen PHYS32_ENTRY note).
//!
//! QEMU enters `_start32` in 32-bit protected mode, paging off, interrupts off, with EBX holding
//! the physical address of `hvm_start_info`. The assembly builds early page tables (identity and
//! direct map of the first 4 GiB with 2 MiB pages, plus the kernel's high mapping), enters long
//! mode, moves to the high half and calls [`boot_x86_64`], which turns `hvm_start_info` into a
//! [`BootInfo`].

mod pvh;

use crate::{BootInfo, Firmware, PhysRange, DIRECT_MAP_BASE, KERNEL_VIRT_BASE};

core::arch::global_asm!(include_str!("entry.S"), options(att_syntax));

extern "C" {
    static __kernel_phys_start: u8;
    static __kernel_end: u8;
    static boot_tsc: u64;
}

static mut BOOT_INFO: BootInfo = BootInfo::empty(Firmware::Acpi { rsdp: 0 });

/// Called from `entry.S` in long mode, on the kernel stack, with the high mapping live.
#[no_mangle]
extern "C" fn boot_x86_64(start_info_phys: u64) -> ! {
    // SAFETY: single CPU, called once before anything else reads BOOT_INFO; after this function
    // the value is only ever read through the shared reference handed to the kernel.
    let info = unsafe { &mut *core::ptr::addr_of_mut!(BOOT_INFO) };
    // SAFETY: linker-script symbols; only their addresses are taken, or (boot_tsc) a u64 written
    // once by entry.S before this call.
    let (image_start, image_end, tsc) = unsafe {
        (
            &__kernel_phys_start as *const u8 as u64,
            &__kernel_end as *const u8 as u64 - KERNEL_VIRT_BASE,
            core::ptr::read_volatile(&boot_tsc),
        )
    };
    info.kernel_image = PhysRange { start: image_start, end: image_end };
    info.boot_start_count = tsc;

    let start = pvh::StartInfo::read(start_info_phys);
    let rsdp = match start.rsdp() {
        Some(rsdp) => rsdp,
        None => pvh::find_rsdp_in_bios_area().unwrap_or(0),
    };
    info.firmware = Firmware::Acpi { rsdp };
    if let Some(cmdline) = start.cmdline() {
        info.set_cmdline(cmdline);
    }
    // The first MiB holds the BIOS data area, option ROMs and the RSDP: never allocate there.
    let reserved = [PhysRange { start: 0, end: 0x10_0000 }, info.kernel_image];
    for ram in start.ram_regions() {
        info.add_ram(ram, &reserved);
    }
    // The BIOS area holds the RSDP; E820's reserved ranges hold the tables it points to.
    info.add_firmware_region(PhysRange { start: 0xE_0000, end: 0x10_0000 });
    for region in start.firmware_regions() {
        info.add_firmware_region(region);
    }
    // SAFETY: `kernel_main` is the kernel's entry; BOOT_INFO lives for the whole run.
    unsafe { crate::kernel_main(&*core::ptr::addr_of!(BOOT_INFO)) }
}

/// Reads physical memory below 4 GiB through the direct map set up by `entry.S`.
fn phys_slice(phys: u64, len: usize) -> &'static [u8] {
    // SAFETY: the early direct map covers [0, 4 GiB); callers pass ranges the firmware handed
    // us (start info, E820 table, command line, BIOS area), which are never written while the
    // boot path reads them.
    unsafe { core::slice::from_raw_parts((DIRECT_MAP_BASE + phys) as *const u8, len) }
}
