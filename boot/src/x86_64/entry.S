/*
 * PVH entry: 32-bit protected mode -> long mode -> high half.
 *
 * Code and data in .boot.* are linked at their physical (load) addresses, so the 32-bit code
 * can use them before paging is on; everything else is linked at KERNEL_VIRT_BASE + physical.
 */

.set KERNEL_VIRT_BASE, 0xFFFFFFFF80000000
.set PTE_PRESENT_WRITABLE, 0x3
.set PTE_LARGE, 0x80            /* PS: 2 MiB page in a page directory */
.set CR4_PAE, 1 << 5
.set CR0_PE_WP_PG, 0x80010001
.set MSR_EFER, 0xC0000080
.set EFER_LME_NXE, (1 << 8) | (1 << 11)

/* Xen ELF note XEN_ELFNOTE_PHYS32_ENTRY (type 18): QEMU's PVH loader enters here. */
.section .note.Xen, "a"
.p2align 2
.long 4, 4, 18
.asciz "Xen"
.p2align 2
.long _start32

.section .boot.text, "ax"
.code32
.global _start32
_start32:
    cli
    mov %ebx, %esi                     /* hvm_start_info, kept in esi */
    rdtsc                              /* guest instructions so far, under -icount */
    mov %eax, boot_tsc
    mov %edx, boot_tsc + 4
    mov $boot_stack_top, %esp

    /* Page directories: 2048 x 2 MiB pages = the first 4 GiB. */
    xor %ecx, %ecx
1:  mov %ecx, %eax
    shl $21, %eax
    or $(PTE_PRESENT_WRITABLE | PTE_LARGE), %eax
    mov %eax, boot_pd(, %ecx, 8)
    mov %ecx, %edx
    shr $11, %edx
    mov %edx, boot_pd + 4(, %ecx, 8)
    inc %ecx
    cmp $2048, %ecx
    jb 1b

    /* Low PDPT: four PDs. Used for the identity map (PML4[0]) and the direct map (PML4[256]). */
    mov $boot_pd + PTE_PRESENT_WRITABLE, %eax
    xor %ecx, %ecx
2:  mov %eax, boot_pdpt_low(, %ecx, 8)
    add $4096, %eax
    inc %ecx
    cmp $4, %ecx
    jb 2b

    /* High PDPT (PML4[511]): entries 510/511 map KERNEL_VIRT_BASE + [0, 2 GiB). */
    mov $boot_pd + PTE_PRESENT_WRITABLE, %eax
    mov %eax, boot_pdpt_high + 510 * 8
    add $4096, %eax
    mov %eax, boot_pdpt_high + 511 * 8

    mov $boot_pdpt_low + PTE_PRESENT_WRITABLE, %eax
    mov %eax, boot_pml4
    mov %eax, boot_pml4 + 256 * 8
    mov $boot_pdpt_high + PTE_PRESENT_WRITABLE, %eax
    mov %eax, boot_pml4 + 511 * 8

    mov %cr4, %eax
    or $CR4_PAE, %eax
    mov %eax, %cr4
    mov $boot_pml4, %eax
    mov %eax, %cr3
    mov $MSR_EFER, %ecx
    rdmsr
    or $EFER_LME_NXE, %eax
    wrmsr
    mov %cr0, %eax
    or $CR0_PE_WP_PG, %eax
    mov %eax, %cr0

    lgdt boot_gdt_pointer
    ljmp $0x08, $start64

.code64
start64:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    xor %ax, %ax
    mov %ax, %fs
    mov %ax, %gs
    movabs $__stack_top, %rsp
    /* .bss is NOLOAD: clear it before Rust runs. */
    movabs $__bss_start, %rdi
    movabs $__bss_end, %rcx
    sub %rdi, %rcx
    xor %eax, %eax
    rep stosb
    mov %esi, %edi                     /* zero-extends hvm_start_info */
    movabs $boot_x86_64, %rax
    call *%rax
    ud2

.section .boot.data, "aw"
.p2align 3
.global boot_tsc
boot_tsc:
    .quad 0
boot_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF           /* 0x08: 64-bit code, DPL 0 */
    .quad 0x00CF92000000FFFF           /* 0x10: data, DPL 0 */
boot_gdt_end:
boot_gdt_pointer:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt

.section .boot.bss, "aw", @nobits
.p2align 12
boot_pml4:      .skip 4096
boot_pdpt_low:  .skip 4096
boot_pdpt_high: .skip 4096
boot_pd:        .skip 4 * 4096
boot_stack:     .skip 4096
boot_stack_top:
