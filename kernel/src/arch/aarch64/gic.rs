//! The Generic Interrupt Controller of QEMU `virt`: GICv2 (the default) or GICv3
//! (`-machine gic-version=3`).
//!
//! References: GIC Architecture Specification v2 (IHI 0048B) chapter 4, and v3/v4 (IHI 0069)
//! chapters 12 (distributor and redistributor registers) and 12.11 (CPU interface system
//! registers). The kernel uses one CPU, one priority and one group:
//!
//! - GICv2: every interrupt stays in Group 0 (GICD_IGROUPRn = 0) and, with GICC_CTLR.FIQEn = 0,
//!   is signalled as IRQ. QEMU's `virt` GICv2 has no Security Extensions, so this is the only
//!   group there is.
//! - GICv3: affinity routing (GICD_CTLR.ARE = 1) and every interrupt in Group 1, signalled as
//!   IRQ through ICC_IAR1_EL1. QEMU's `virt` GICv3 without `secure=on` has GICD_CTLR.DS = 1
//!   (a single security state), so Group 1 is the non-secure group EL1 owns.
//!
//! Which one is present is read from the distributor's GICD_PIDR2.ArchRev (bits [7:4]) rather
//! than from the device tree, because the architecture code is handed no device tree; the
//! register addresses are `virt`'s fixed memory map (hw/arm/virt.c), like the UART's.

use crate::mm::device_register;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

const GICD_PHYS: u64 = 0x0800_0000;
/// GICv2 CPU interface.
const GICC_PHYS: u64 = 0x0801_0000;
/// GICv3 redistributors, one 128 KiB pair of frames (RD_base, SGI_base) per CPU.
const GICR_PHYS: u64 = 0x080A_0000;

// Distributor registers, common to v2 and v3 unless noted.
const GICD_CTLR: u64 = 0x000;
const GICD_TYPER: u64 = 0x004;
const GICD_IGROUPR: u64 = 0x080;
const GICD_ISENABLER: u64 = 0x100;
const GICD_ICENABLER: u64 = 0x180;
const GICD_ICPENDR: u64 = 0x280;
const GICD_ICACTIVER: u64 = 0x380;
const GICD_IPRIORITYR: u64 = 0x400;
/// v2 only: one byte of CPU-interface targets per interrupt.
const GICD_ITARGETSR: u64 = 0x800;
const GICD_ICFGR: u64 = 0xC00;
/// v3 only: 64-bit affinity route per SPI.
const GICD_IROUTER: u64 = 0x6000;
const GICD_PIDR2_V2: u64 = 0xFE8;
const GICD_PIDR2_V3: u64 = 0xFFE8;
/// v2: Enable (bit 0). v3 with DS = 1: EnableGrp1 (bit 1), ARE (bit 4); RWP (bit 31) is set while
/// a write to GICD_CTLR or GICD_ICENABLER is still taking effect.
const GICD_CTLR_V2_ENABLE: u32 = 1 << 0;
const GICD_CTLR_V3_ENABLE_GRP1: u32 = 1 << 1;
const GICD_CTLR_V3_ARE: u32 = 1 << 4;
const GICD_CTLR_RWP: u32 = 1 << 31;

// GICv2 CPU interface registers.
const GICC_CTLR: u64 = 0x00;
const GICC_PMR: u64 = 0x04;
const GICC_BPR: u64 = 0x08;
const GICC_IAR: u64 = 0x0C;
const GICC_EOIR: u64 = 0x10;

// GICv3 redistributor: RD_base frame, then SGI_base frame at +64 KiB.
const GICR_TYPER: u64 = 0x0008;
const GICR_WAKER: u64 = 0x0014;
const GICR_FRAME_STRIDE_V3: u64 = 0x2_0000;
/// GICv4 redistributors with virtual LPI support (GICR_TYPER.VLPIS, bit 1) have two more frames.
const GICR_FRAME_STRIDE_V4: u64 = 0x4_0000;
const GICR_TYPER_VLPIS: u64 = 1 << 1;
const GICR_TYPER_LAST: u64 = 1 << 4;
const GICR_WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
const GICR_WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;
const GICR_SGI_BASE: u64 = 0x1_0000;

/// The priority of every enabled interrupt and the mask letting it through (lower values are
/// higher priority; implementations may drop low-order bits, which 0xA0 and 0xF0 survive).
const INTERRUPT_PRIORITY: u8 = 0xA0;
const PRIORITY_MASK: u32 = 0xF0;
/// INTIDs 1020..1023 are special: "no pending interrupt" (spurious) and the like.
const FIRST_SPECIAL_INTID: u32 = 1020;
const LAST_SPECIAL_INTID: u32 = 1023;
/// SGIs 0-15 and PPIs 16-31 are private to a CPU; SPIs start at 32.
pub const FIRST_SPI: u32 = 32;

const VERSION_NONE: u8 = 0;
const VERSION_2: u8 = 2;
const VERSION_3: u8 = 3;

static VERSION: AtomicU8 = AtomicU8::new(VERSION_NONE);
/// Number of INTIDs the distributor implements (GICD_TYPER.ITLinesNumber).
static LINES: AtomicU64 = AtomicU64::new(0);
/// GICv3: physical address of this CPU's redistributor (RD_base).
static REDISTRIBUTOR: AtomicU64 = AtomicU64::new(0);

pub(super) fn read32(phys: u64) -> u32 {
    // SAFETY: callers pass GIC registers in the first GiB of physical space, which the direct map
    // covers with Device-nGnRE attributes; register reads have no effect on memory.
    unsafe { device_register::<u32>(phys) }.read()
}

pub(super) fn write32(phys: u64, value: u32) {
    // SAFETY: as in `read32`; GIC register writes only change interrupt state.
    unsafe { device_register::<u32>(phys) }.write(value)
}

fn write8(phys: u64, value: u8) {
    // SAFETY: as in `write32`; GICD_IPRIORITYR and GICD_ITARGETSR are byte-accessible.
    unsafe { device_register::<u8>(phys) }.write(value)
}

pub(super) fn read64(phys: u64) -> u64 {
    // SAFETY: as in `read32`; the callers' registers (GICR_TYPER, GITS_TYPER, GITS_BASER<n>,
    // GITS_CREADR and the like) are 64-bit.
    unsafe { device_register::<u64>(phys) }.read()
}

pub(super) fn write64(phys: u64, value: u64) {
    // SAFETY: as in `write32`; the callers' registers (GICD_IROUTER, GICR_PROPBASER, GITS_CBASER
    // and the like) are 64-bit.
    unsafe { device_register::<u64>(phys) }.write(value)
}

/// Register block and bit of interrupt `intid` in a one-bit-per-interrupt array.
fn bit_register(base: u64, intid: u32) -> (u64, u32) {
    (base + (intid / 32) as u64 * 4, 1 << (intid % 32))
}

/// Detects the GIC and brings distributor, redistributor and CPU interface to the state
/// described in the module docs: everything disabled and inactive except the interface itself.
pub fn init() {
    let lines = ((read32(GICD_PHYS + GICD_TYPER) & 0x1F) + 1) * 32;
    LINES.store(lines.min(FIRST_SPECIAL_INTID) as u64, Ordering::Relaxed);
    let version = if (read32(GICD_PHYS + GICD_PIDR2_V2) >> 4) & 0xF == 2 {
        VERSION_2
    } else if matches!((read32(GICD_PHYS + GICD_PIDR2_V3) >> 4) & 0xF, 3 | 4) {
        VERSION_3
    } else {
        panic!("no GICv2 or GICv3 distributor at {GICD_PHYS:#x}");
    };
    VERSION.store(version, Ordering::Relaxed);
    match version {
        VERSION_2 => init_v2(),
        _ => init_v3(),
    }
}

/// Disables, deactivates and clears every SPI and gives it the common priority.
fn reset_spis() {
    let lines = LINES.load(Ordering::Relaxed) as u32;
    for first in (FIRST_SPI..lines).step_by(32) {
        let offset = (first / 32) as u64 * 4;
        write32(GICD_PHYS + GICD_ICENABLER + offset, u32::MAX);
        write32(GICD_PHYS + GICD_ICPENDR + offset, u32::MAX);
        write32(GICD_PHYS + GICD_ICACTIVER + offset, u32::MAX);
    }
    for intid in FIRST_SPI..lines {
        write8(GICD_PHYS + GICD_IPRIORITYR + intid as u64, INTERRUPT_PRIORITY);
    }
}

fn init_v2() {
    write32(GICD_PHYS + GICD_CTLR, 0);
    reset_spis();
    let lines = LINES.load(Ordering::Relaxed) as u32;
    for intid in FIRST_SPI..lines {
        // Target CPU interface 0, the only one.
        write8(GICD_PHYS + GICD_ITARGETSR + intid as u64, 1);
    }
    // SGIs and PPIs (banked per CPU): disabled until asked for.
    write32(GICD_PHYS + GICD_ICENABLER, u32::MAX);
    write32(GICD_PHYS + GICD_CTLR, GICD_CTLR_V2_ENABLE);
    write32(GICC_PHYS + GICC_PMR, PRIORITY_MASK);
    // Binary point 0: no priority grouping (all bits compare).
    write32(GICC_PHYS + GICC_BPR, 0);
    // GICC_CTLR.Enable (bit 0); FIQEn = 0, EOImode = 0 (EOIR drops priority and deactivates).
    write32(GICC_PHYS + GICC_CTLR, 1);
}

fn init_v3() {
    write32(GICD_PHYS + GICD_CTLR, 0);
    wait_for_distributor_writes();
    reset_spis();
    let lines = LINES.load(Ordering::Relaxed) as u32;
    for intid in FIRST_SPI..lines {
        let (register, bit) = bit_register(GICD_PHYS + GICD_IGROUPR, intid);
        write32(register, read32(register) | bit);
        // Aff3.Aff2.Aff1.Aff0 = 0.0.0.0, Interrupt_Routing_Mode = 0: deliver to CPU 0.
        write64(GICD_PHYS + GICD_IROUTER + intid as u64 * 8, 0);
    }
    write32(GICD_PHYS + GICD_CTLR, GICD_CTLR_V3_ARE | GICD_CTLR_V3_ENABLE_GRP1);
    wait_for_distributor_writes();

    let redistributor = find_redistributor();
    REDISTRIBUTOR.store(redistributor, Ordering::Relaxed);
    // Wake the redistributor: clear ProcessorSleep, wait for ChildrenAsleep to clear.
    let waker = redistributor + GICR_WAKER;
    write32(waker, read32(waker) & !GICR_WAKER_PROCESSOR_SLEEP);
    while read32(waker) & GICR_WAKER_CHILDREN_ASLEEP != 0 {
        core::hint::spin_loop();
    }
    let sgi_base = redistributor + GICR_SGI_BASE;
    write32(sgi_base + GICD_ICENABLER, u32::MAX);
    write32(sgi_base + GICD_IGROUPR, u32::MAX);

    // SAFETY: the GICv3 CPU interface system registers (IHI 0069 12.11), reached by encoding
    // because they belong to no base-architecture feature the assembler knows of. The boot code
    // set ICC_SRE_EL2.Enable when entered at EL2; with QEMU entering at EL1 there is no EL2 to
    // forbid it. ICC_SRE_EL1.SRE (bit 0) = 1 selects the system-register interface; PMR lets
    // INTERRUPT_PRIORITY through; BPR1 = 0; ICC_CTLR_EL1.EOImode (bit 1) = 0 makes EOIR1 both
    // drop priority and deactivate; IGRPEN1 = 1 enables Group 1. None of this touches memory.
    let sre: u64 = unsafe {
        let sre: u64;
        core::arch::asm!(
            "mrs {sre}, S3_0_C12_C12_5",
            "orr {sre}, {sre}, #1",
            "msr S3_0_C12_C12_5, {sre}",
            "isb",
            "mrs {sre}, S3_0_C12_C12_5",
            sre = out(reg) sre,
            options(nomem, nostack, preserves_flags),
        );
        sre
    };
    assert!(sre & 1 == 1, "GICv3 system-register interface disabled at EL2 (ICC_SRE_EL1.SRE is 0)");
    // SAFETY: see above.
    unsafe {
        core::arch::asm!(
            "msr S3_0_C4_C6_0, {pmr}",      // ICC_PMR_EL1
            "msr S3_0_C12_C12_3, xzr",      // ICC_BPR1_EL1
            "msr S3_0_C12_C12_4, xzr",      // ICC_CTLR_EL1
            "msr S3_0_C12_C12_7, {one}",    // ICC_IGRPEN1_EL1
            "isb",
            pmr = in(reg) PRIORITY_MASK as u64,
            one = in(reg) 1u64,
            options(nomem, nostack, preserves_flags),
        );
    }
}

fn wait_for_distributor_writes() {
    while read32(GICD_PHYS + GICD_CTLR) & GICD_CTLR_RWP != 0 {
        core::hint::spin_loop();
    }
}

/// The redistributor whose GICR_TYPER.Affinity_Value (bits [63:32]) matches this CPU's
/// MPIDR_EL1 Aff3.Aff2.Aff1.Aff0.
fn find_redistributor() -> u64 {
    let mpidr = aarch64_cpu::registers::Readable::get(&aarch64_cpu::registers::MPIDR_EL1);
    let affinity = ((mpidr >> 32) & 0xFF) << 24 | (mpidr & 0xFF_FFFF);
    let mut frame = GICR_PHYS;
    loop {
        let typer = read64(frame + GICR_TYPER);
        if typer >> 32 == affinity {
            return frame;
        }
        assert!(typer & GICR_TYPER_LAST == 0, "no GICv3 redistributor for MPIDR {mpidr:#x}");
        frame += if typer & GICR_TYPER_VLPIS != 0 { GICR_FRAME_STRIDE_V4 } else { GICR_FRAME_STRIDE_V3 };
    }
}

/// GICv3: this CPU's redistributor (RD_base), which the ITS delivers LPIs to.
pub fn redistributor() -> Option<u64> {
    is_v3().then(|| REDISTRIBUTOR.load(Ordering::Relaxed))
}

fn is_v3() -> bool {
    VERSION.load(Ordering::Relaxed) == VERSION_3
}

/// Base of the register frame holding SGI/PPI state (v2: the banked distributor registers;
/// v3: the redistributor's SGI_base frame) or, for SPIs, the distributor.
fn frame_for(intid: u32) -> u64 {
    if intid < FIRST_SPI && is_v3() {
        REDISTRIBUTOR.load(Ordering::Relaxed) + GICR_SGI_BASE
    } else {
        GICD_PHYS
    }
}

/// `virt`'s GICv2m MSI frame (hw/arm/virt.c, VIRT_GIC_V2M), present with a GICv2: a device
/// raises SPI n by writing n to MSI_SETSPI_NS (frame + 0x040).
const V2M_PHYS: u64 = 0x0802_0000;
/// MSI_TYPER (GICv2m, in Arm's Server Base System Architecture): bits [25:16] the first SPI's
/// INTID, bits [9:0] how many SPIs the frame serves.
const V2M_MSI_TYPER: u64 = 0x008;

/// The SPIs (first INTID, count) devices can raise with MSIs through the GICv2m frame, if the
/// GIC is a GICv2 with one.
pub fn msi_spis() -> Option<(u32, u32)> {
    if VERSION.load(Ordering::Relaxed) != VERSION_2 {
        return None;
    }
    let typer = read32(V2M_PHYS + V2M_MSI_TYPER);
    let (first, count) = ((typer >> 16) & 0x3FF, typer & 0x3FF);
    (count != 0 && first >= FIRST_SPI && is_valid(first + count - 1)).then_some((first, count))
}

/// Whether `intid` is an interrupt the distributor implements.
pub fn is_valid(intid: u32) -> bool {
    (intid as u64) < LINES.load(Ordering::Relaxed)
}

pub fn set_enabled(intid: u32, enabled: bool) {
    let frame = frame_for(intid);
    let (register, bit) = bit_register(frame + if enabled { GICD_ISENABLER } else { GICD_ICENABLER }, intid);
    write32(register, bit);
    if !enabled && frame == GICD_PHYS && is_v3() {
        wait_for_distributor_writes();
    }
}

fn is_enabled(intid: u32) -> bool {
    let (register, bit) = bit_register(frame_for(intid) + GICD_ISENABLER, intid);
    read32(register) & bit != 0
}

/// Gives a PPI or SPI the common priority.
pub fn set_priority(intid: u32) {
    write8(frame_for(intid) + GICD_IPRIORITYR + intid as u64, INTERRUPT_PRIORITY);
}

/// Configures an SPI as edge-triggered or level-sensitive: GICD_ICFGRn has two bits per
/// interrupt, of which the upper one (Int_config[1]) selects edge. The GIC specifications leave
/// changing it while the interrupt is enabled UNPREDICTABLE, so it is disabled meanwhile.
pub fn set_trigger(intid: u32, edge: bool) {
    let was_enabled = is_enabled(intid);
    if was_enabled {
        set_enabled(intid, false);
    }
    let register = GICD_PHYS + GICD_ICFGR + (intid / 16) as u64 * 4;
    let bit = 1 << ((intid % 16) * 2 + 1);
    let value = read32(register);
    write32(register, if edge { value | bit } else { value & !bit });
    if was_enabled {
        set_enabled(intid, true);
    }
}

/// An acknowledged interrupt: the INTID and the raw IAR value EOI needs back.
pub struct Acknowledged {
    pub intid: u32,
    iar: u32,
}

/// Acknowledges the highest-priority pending interrupt (it becomes active), or returns `None`
/// if nothing is pending. Works with PSTATE.I masked: the CPU interface does not look at it.
pub fn acknowledge() -> Option<Acknowledged> {
    let iar = if is_v3() {
        let iar: u64;
        // SAFETY: reading ICC_IAR1_EL1 acknowledges the pending Group 1 interrupt; the caller
        // signals its end with `end_of_interrupt`. No memory is accessed.
        unsafe { core::arch::asm!("mrs {}, S3_0_C12_C12_0", out(reg) iar, options(nomem, nostack, preserves_flags)) };
        iar as u32
    } else {
        read32(GICC_PHYS + GICC_IAR)
    };
    // INTID: GICC_IAR bits [9:0] (bits [12:10] name the source CPU of an SGI);
    // ICC_IAR1_EL1 bits [23:0] (LPIs from 8192 up).
    let intid = if is_v3() { iar & 0xFF_FFFF } else { iar & 0x3FF };
    (!(FIRST_SPECIAL_INTID..=LAST_SPECIAL_INTID).contains(&intid)).then_some(Acknowledged { intid, iar })
}

/// Drops the running priority and deactivates the interrupt (EOImode = 0).
pub fn end_of_interrupt(interrupt: Acknowledged) {
    if is_v3() {
        // SAFETY: writing ICC_EOIR1_EL1 with the value read from ICC_IAR1_EL1 ends that
        // interrupt; no memory is accessed.
        unsafe {
            core::arch::asm!("msr S3_0_C12_C12_1, {}", in(reg) interrupt.iar as u64, options(nomem, nostack, preserves_flags))
        };
    } else {
        write32(GICC_PHYS + GICC_EOIR, interrupt.iar);
    }
}
