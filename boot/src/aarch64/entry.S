// aarch64 entry: from QEMU's reset state to `boot_aarch64` at the kernel's high address.
//
// QEMU `-kernel` with an ELF image enters `_start` (through the absolute symbol `_start_phys`,
// see kernel/linker-aarch64.ld) at EL1, or at EL2 with `-machine virtualization=on`, with the
// MMU and caches off and DAIF masked. Until the MMU is on this code runs at its physical
// address while linked at KERNEL_VIRT_BASE + physical; it therefore reaches data only through
// PC-relative ADR/ADRP (which yield physical addresses here) and uses `ldr =symbol` literals
// only to obtain link-time (virtual) addresses.
//
// Register use until `boot_aarch64`: x19 = CNTVCT_EL0 at entry, x20 = entry exception level,
// x21 = physical address of the empty TTBR0 table. All are callee-saved in AAPCS64.
//
// The operands in braces are constants defined in mod.rs, where each is derived from the
// named register fields.

.section .text.boot, "ax"
.global _start
_start:
    // First instruction that can read the counter: the boot-cost benchmark starts here.
    // CNTVCT_EL0 is always readable at EL1 and EL2 (Arm ARM D12.1, generic timer).
    mrs     x19, cntvct_el0

    // CurrentEL.EL is bits [3:2].
    mrs     x20, CurrentEL
    ubfx    x20, x20, #2, #2
    cmp     x20, #2
    b.eq    .Lenter_from_el2
    cmp     x20, #1
    b.eq    .Lat_el1
    // EL3 (QEMU `secure=on` without firmware) is not supported: there is no console yet to
    // say so, so the CPU parks; a debugger shows x20 = 3.
.Lpark:
    wfe
    b       .Lpark

.Lenter_from_el2:
    // HCR_EL2: RW (bit 31) = 1 makes EL1 AArch64. Everything else 0: no stage 2 (VM), IRQ/FIQ/
    // SError routed to EL1 (IMO/FMO/AMO = 0), TGE = 0, E2H = 0 (no VHE host).
    ldr     x0, ={hcr_el2}
    msr     hcr_el2, x0
    // CNTHCTL_EL2 (E2H = 0 layout): EL1PCTEN (bit 0) and EL1PCEN (bit 1) = 1, so EL1 may use
    // the physical counter and timer without trapping. The virtual timer needs no permission.
    mov     x0, #{cnthctl_el2}
    msr     cnthctl_el2, x0
    // CNTVOFF_EL2 = 0: virtual count == physical count (its reset value is UNKNOWN).
    msr     cntvoff_el2, xzr
    // CPTR_EL2 (E2H = 0 layout): only the RES1 bits; TFP (bit 10) = 0 so FP/SIMD does not trap
    // to EL2.
    ldr     x0, ={cptr_el2}
    msr     cptr_el2, x0
    // HSTR_EL2 = 0: no trapping of AArch32 CP15 accesses.
    msr     hstr_el2, xzr
    // EL1 reads of MIDR_EL1 / MPIDR_EL1 return VPIDR_EL2 / VMPIDR_EL2: make them the real ones.
    mrs     x0, midr_el1
    msr     vpidr_el2, x0
    mrs     x0, mpidr_el1
    msr     vmpidr_el2, x0
    // GICv3 CPU interface: with ID_AA64PFR0_EL1.GIC (bits [27:24]) != 0 the system-register
    // interface exists, and EL1 may enable it only if ICC_SRE_EL2.Enable (bit 3) = 1; SRE
    // (bit 0) = 1 selects the system-register interface at EL2 too. ICH_HCR_EL2 = 0 keeps the
    // virtual CPU interface off. (QEMU with a GICv2 reports GIC = 0 here.)
    mrs     x0, id_aa64pfr0_el1
    ubfx    x0, x0, #24, #4
    cbz     x0, 1f
    mrs     x0, S3_4_C12_C9_5           // ICC_SRE_EL2
    orr     x0, x0, #0x1                // SRE
    orr     x0, x0, #0x8                // Enable
    msr     S3_4_C12_C9_5, x0
    isb
    msr     S3_4_C12_C11_0, xzr         // ICH_HCR_EL2
1:
    // SCTLR_EL1 resets to an UNKNOWN value when EL2 is entered: make it "MMU off" before EL1
    // runs.
    ldr     x0, ={sctlr_el1_mmu_off}
    msr     sctlr_el1, x0
    // SPSR_EL2: M[3:0] = 0b0101 (EL1h: EL1 using SP_EL1), D/A/I/F (bits 9:6) masked.
    mov     x0, #{spsr_el1h_masked}
    msr     spsr_el2, x0
    adr     x0, .Lat_el1
    msr     elr_el2, x0
    eret

.Lat_el1:
    ldr     x0, ={sctlr_el1_mmu_off}
    msr     sctlr_el1, x0
    // CPACR_EL1.FPEN (bits 21:20) = 0b11: FP/SIMD never traps, although the soft-float target
    // emits no FP instructions.
    mov     x0, #{cpacr_el1_fpen}
    msr     cpacr_el1, x0
    isb

    // Zero .bss (it holds the boot page tables). With the MMU off every access is Device-
    // nGnRnE, so only aligned stores: the linker script aligns both ends to 16 bytes.
    adrp    x0, __bss_start
    add     x0, x0, :lo12:__bss_start
    adrp    x1, __bss_end
    add     x1, x1, :lo12:__bss_end
1:  cmp     x0, x1
    b.hs    2f
    stp     xzr, xzr, [x0], #16
    b       1b
2:

    // Level-1 table shared by the identity map (TTBR0, index 0) and the direct map (TTBR1):
    // 1 GiB blocks for [0, EARLY_DIRECT_MAP_SIZE). The first GiB of `virt` is MMIO (flash, GIC,
    // PL011, SMMU, PCIe windows): Device-nGnRE. The rest is RAM from 0x40000000: Normal WB.
    adrp    x0, boot_low_l1
    ldr     x1, ={device_block}
    str     x1, [x0]
    ldr     x3, ={normal_block}
    mov     x2, #1
1:  orr     x1, x3, x2, lsl #30
    str     x1, [x0, x2, lsl #3]
    add     x2, x2, #1
    cmp     x2, #{direct_map_gib}
    b.lo    1b

    // TTBR0 level 0: entry 0 -> the shared level-1 table (identity map of the low 4 GiB).
    adrp    x1, boot_ttbr0_l0
    orr     x2, x0, #{table_desc}
    str     x2, [x1]

    // TTBR1 level 0: DIRECT_MAP_BASE's entry -> the same level-1 table.
    adrp    x1, boot_ttbr1_l0
    str     x2, [x1, #{direct_map_l0_offset}]

    // Kernel image: [__kernel_start, __kernel_end) with 2 MiB blocks through
    // boot_kernel_l1 -> boot_kernel_l2 (the linker script asserts the image starts 2 MiB
    // aligned and stays within one 1 GiB region). x4 = virtual start, x5 = virtual end,
    // x6 = virtual - physical.
    ldr     x4, =__kernel_start
    ldr     x5, =__kernel_end
    adrp    x6, __kernel_start
    sub     x6, x4, x6
    adrp    x0, boot_kernel_l1
    ubfx    x2, x4, #39, #9             // level-0 index: VA bits [47:39]
    orr     x3, x0, #{table_desc}
    str     x3, [x1, x2, lsl #3]
    adrp    x7, boot_kernel_l2
    ubfx    x2, x4, #30, #9             // level-1 index: VA bits [38:30]
    orr     x3, x7, #{table_desc}
    str     x3, [x0, x2, lsl #3]
    ldr     x3, ={normal_block}
1:  ubfx    x2, x4, #21, #9             // level-2 index: VA bits [29:21]
    sub     x8, x4, x6                  // physical address of this 2 MiB block
    orr     x8, x8, x3
    str     x8, [x7, x2, lsl #3]
    add     x4, x4, #0x200000
    cmp     x4, x5
    b.lo    1b

    // The tables were written with the MMU (and so the data cache) off; invalidate any stale
    // lines the caches could hold for .bss before the table walker reads it cacheably
    // (Arm ARM D8.2.6 / B2.4.4, "data coherency when the MMU is disabled"). CTR_EL0.DminLine
    // (bits [19:16]) is log2 of the smallest D-cache line in words.
    dsb     sy
    mrs     x2, ctr_el0
    ubfx    x2, x2, #16, #4
    mov     x3, #4
    lsl     x3, x3, x2
    adrp    x0, __bss_start
    add     x0, x0, :lo12:__bss_start
    adrp    x1, __bss_end
    add     x1, x1, :lo12:__bss_end
    sub     x2, x3, #1
    bic     x0, x0, x2
1:  dc      ivac, x0
    add     x0, x0, x3
    cmp     x0, x1
    b.lo    1b
    dsb     sy

    // MAIR_EL1: Attr0 Device-nGnRE, Attr1 Normal WB RA/WA, Attr2 Normal non-cacheable.
    ldr     x0, ={mair_el1}
    msr     mair_el1, x0
    // TCR_EL1: fixed fields from mod.rs, plus IPS (bits [34:32]) = ID_AA64MMFR0_EL1.PARange
    // (bits [3:0]), capped at 0b101 (48 bits): larger encodings need FEAT_LPA/LPA2 formats.
    ldr     x0, ={tcr_el1}
    mrs     x1, id_aa64mmfr0_el1
    and     x1, x1, #0xf
    mov     x2, #5
    cmp     x1, x2
    csel    x1, x1, x2, lo
    bfi     x0, x1, #32, #3
    msr     tcr_el1, x0
    adrp    x0, boot_ttbr0_l0
    msr     ttbr0_el1, x0
    adrp    x0, boot_ttbr1_l0
    msr     ttbr1_el1, x0
    adrp    x21, boot_empty_l0
    isb
    tlbi    vmalle1
    dsb     nsh
    isb
    // SCTLR_EL1: M (bit 0), C (bit 2), I (bit 12) on, WXN (bit 19) off.
    ldr     x0, ={sctlr_el1_mmu_on}
    msr     sctlr_el1, x0
    isb

    // Still executing at the physical address, now through the identity map: jump high.
    ldr     x0, =.Lhigh
    br      x0
.Lhigh:
    ldr     x0, =__boot_stack_top
    mov     sp, x0
    ldr     x0, =boot_early_vectors
    msr     vbar_el1, x0
    // Drop the identity map: TTBR0 -> an empty table, so that a null or user-range access
    // from the kernel faults instead of reaching physical memory.
    msr     ttbr0_el1, x21
    isb
    tlbi    vmalle1
    dsb     nsh
    isb
    mov     x29, xzr
    mov     x30, xzr
    mov     x0, x19
    mov     x1, x20
    bl      boot_aarch64
    b       .Lpark
.ltorg

// Exceptions before the kernel installs its vectors (in `init_cpu`) cannot be reported on the
// console from here; end QEMU with a failure status through semihosting SYS_EXIT
// instead (QEMU's `-d int` shows the exception). Each of the 16 vectors is 128 bytes, the
// table 2 KiB aligned (VBAR_EL1 bits [10:0] are RES0).
.balign 2048
boot_early_vectors:
.rept 16
    .balign 128
    b       boot_early_fault
.endr

boot_early_fault:
    mov     w0, #{semihosting_exit}
    ldr     x1, =boot_early_fault_exit_block
    hlt     #0xf000
    b       .Lpark
.ltorg

.section .rodata.boot, "a"
.balign 8
boot_early_fault_exit_block:
    .quad   {adp_stopped_application_exit}
    .quad   {early_fault_exit_code}

.section .bss.boot_page_tables, "aw", %nobits
.balign 4096
boot_ttbr0_l0:  .space 4096
boot_ttbr1_l0:  .space 4096
boot_low_l1:    .space 4096
boot_kernel_l1: .space 4096
boot_kernel_l2: .space 4096
boot_empty_l0:  .space 4096
