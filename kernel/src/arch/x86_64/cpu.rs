//! GDT, TSS, IDT and the SYSCALL MSRs.
//!
//! Interrupt and exception stubs (in `user.rs`'s assembly) push a vector number and jump to one
//! common path that either returns to `run_user`'s caller (trap from ring 3) or handles a
//! kernel-mode event (interrupt while idling, or a kernel exception, which is fatal).

use core::ptr::addr_of;
use x86_64::instructions::segmentation::{Segment, CS, DS, ES, SS};
use x86_64::instructions::tables::load_tss;
use x86_64::registers::model_specific::{Efer, EferFlags, LStar, SFMask, Star};
use x86_64::registers::rflags::RFlags;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;
use x86_64::VirtAddr;

/// Selectors, in the order SYSRET requires: user data at STAR.SYSRET + 8, user code at + 16.
pub const KERNEL_CODE: u16 = 0x08;
pub const KERNEL_DATA: u16 = 0x10;
pub const USER_DATA: u16 = 0x18 | 3;
pub const USER_CODE: u16 = 0x20 | 3;

const TRAP_STACK_SIZE: usize = 16 * 1024;

/// Only its address is used (as TSS.RSP0), hence the allowance.
#[repr(align(16))]
#[allow(dead_code)]
struct TrapStack([u8; TRAP_STACK_SIZE]);
static mut TRAP_STACK: TrapStack = TrapStack([0; TRAP_STACK_SIZE]);
static mut TSS: TaskStateSegment = TaskStateSegment::new();
static mut GDT: GlobalDescriptorTable = GlobalDescriptorTable::new();

#[repr(C, packed)]
struct IdtPointer {
    limit: u16,
    base: u64,
}

/// 256 interrupt gates, filled from the stub table built in assembly.
#[repr(C, align(16))]
struct Idt([[u64; 2]; 256]);
static mut IDT: Idt = Idt([[0; 2]; 256]);

extern "C" {
    /// The 256 per-vector entry stubs, 16 bytes apart (user.rs assembly).
    static trap_stubs: u8;
    fn syscall_entry();
}

pub fn init_cpu() {
    // SAFETY: runs once on the boot CPU before interrupts are enabled; the statics are only
    // touched here, and the CPU keeps pointers to them for the rest of the run, which is fine
    // because they are never moved or freed.
    unsafe {
        let tss = &mut *core::ptr::addr_of_mut!(TSS);
        // Ring-3 traps arrive on this stack; the common path copies the registers out at once.
        tss.privilege_stack_table[0] =
            VirtAddr::from_ptr(addr_of!(TRAP_STACK)) + TRAP_STACK_SIZE as u64;

        let gdt = &mut *core::ptr::addr_of_mut!(GDT);
        let kcode = gdt.append(Descriptor::kernel_code_segment());
        let kdata = gdt.append(Descriptor::kernel_data_segment());
        let udata = gdt.append(Descriptor::user_data_segment());
        let ucode = gdt.append(Descriptor::user_code_segment());
        let tss_sel = gdt.append(Descriptor::tss_segment(&*addr_of!(TSS)));
        assert_eq!(
            (kcode.0, kdata.0, udata.0, ucode.0),
            (KERNEL_CODE, KERNEL_DATA, USER_DATA, USER_CODE)
        );
        gdt.load();
        CS::set_reg(kcode);
        DS::set_reg(kdata);
        ES::set_reg(kdata);
        SS::set_reg(kdata);
        load_tss(tss_sel);

        let idt = &mut *core::ptr::addr_of_mut!(IDT);
        for (vector, gate) in idt.0.iter_mut().enumerate() {
            // Breakpoint is callable from ring 3 (DPL 3) so that `int3` in a user program is
            // reported as an illegal instruction instead of a #GP.
            let dpl = if vector == 3 { 3 } else { 0 };
            *gate = interrupt_gate(addr_of!(trap_stubs) as u64 + 16 * vector as u64, dpl);
        }
        let pointer = IdtPointer { limit: (core::mem::size_of::<Idt>() - 1) as u16, base: addr_of!(IDT) as u64 };
        core::arch::asm!("lidt [{}]", in(reg) &pointer, options(readonly, nostack, preserves_flags));

        // SYSCALL: CS/SS from STAR[47:32], SYSRET from STAR[63:48]; IF, TF, DF, AC and NT
        // cleared on entry. User code may set NT at will; left set in the kernel, it would make
        // the IRETQ back to user mode fault.
        Star::write(
            SegmentSelector(USER_CODE),
            SegmentSelector(USER_DATA),
            SegmentSelector(KERNEL_CODE),
            SegmentSelector(KERNEL_DATA),
        )
        .expect("GDT order matches SYSRET");
        LStar::write(VirtAddr::new(syscall_entry as *const () as u64));
        SFMask::write(
            RFlags::INTERRUPT_FLAG
                | RFlags::TRAP_FLAG
                | RFlags::DIRECTION_FLAG
                | RFlags::ALIGNMENT_CHECK
                | RFlags::NESTED_TASK,
        );
        Efer::update(|f| f.insert(EferFlags::SYSTEM_CALL_EXTENSIONS | EferFlags::NO_EXECUTE_ENABLE));
    }
}

/// A 64-bit interrupt gate (SDM Vol. 3 §6.14.1): interrupts stay disabled in handlers.
fn interrupt_gate(handler: u64, dpl: u64) -> [u64; 2] {
    const PRESENT: u64 = 1 << 47;
    const TYPE_INTERRUPT_GATE: u64 = 0xE << 40;
    let low = (handler & 0xFFFF)
        | ((KERNEL_CODE as u64) << 16)
        | TYPE_INTERRUPT_GATE
        | (dpl << 45)
        | PRESENT
        | ((handler >> 16) & 0xFFFF) << 48;
    [low, handler >> 32]
}
