//! Interrupt policy: the periodic tick on the EL1 virtual timer and device lines (GIC SPIs,
//! and with a GICv3 the LPIs its ITS routes for MSIs, `its`) forwarded to user drivers.
//!
//! The kernel never unmasks IRQs at EL1. Interrupts are taken only while EL0 runs (the EL0 IRQ
//! vector returns from `run_user`), and `wait_for_interrupt` idles in WFI with PSTATE.I still
//! masked: WFI wakes on a pending physical IRQ whatever PSTATE.I says (Arm ARM D1.6.2, "Wait
//! for Interrupt"), after which the interrupt is acknowledged from the GIC directly. No IRQ
//! handler ever runs on top of kernel code.
//!
//! A device interrupt (SPI) is masked at the distributor before its end-of-interrupt, so a
//! level-sensitive line that stays asserted does not fire again until the kernel unmasks it
//! with `irq_set_enabled` once the user driver has serviced the device. LPIs are messages and
//! stay enabled while bound.

use super::{gic, its};
use crate::arch::Trap;
use aarch64_cpu::registers::{Readable, Writeable, CNTFRQ_EL0, CNTVCT_EL0, CNTV_CTL_EL0, CNTV_CVAL_EL0};
use core::sync::atomic::{AtomicU64, Ordering};

/// The EL1 virtual timer's interrupt: PPI 11, INTID 27 (Arm ARM D12.2 / Server Base System
/// Architecture; also `/timer` in QEMU's device tree).
const VIRTUAL_TIMER_INTID: u32 = 27;

/// Counter ticks between timer interrupts; 0 while the timer is off.
static TIMER_PERIOD: AtomicU64 = AtomicU64::new(0);

pub fn init_interrupts() {
    gic::init();
}

/// Brings up the ITS the firmware describes at `its_base`, if the GIC is a GICv3 (a GICv2
/// machine has none; its MSIs go through GICv2m SPIs).
pub fn init_its(its_base: Option<u64>) {
    if let (Some(base), Some(redistributor)) = (its_base, gic::redistributor()) {
        its::init(base, redistributor);
    }
}

/// Starts a `hz` periodic tick on the EL1 virtual timer (CNTV), reported as `Trap::Timer`.
pub fn start_timer(hz: u32) {
    let period = CNTFRQ_EL0.get() / hz as u64;
    TIMER_PERIOD.store(period, Ordering::Relaxed);
    CNTV_CVAL_EL0.set(CNTVCT_EL0.get() + period);
    // CNTV_CTL_EL0: ENABLE (bit 0) = 1, IMASK (bit 1) = 0.
    CNTV_CTL_EL0.write(CNTV_CTL_EL0::ENABLE::SET + CNTV_CTL_EL0::IMASK::CLEAR);
    gic::set_priority(VIRTUAL_TIMER_INTID);
    gic::set_enabled(VIRTUAL_TIMER_INTID, true);
}

/// Moves the timer's compare value one period on. The timer interrupt is level-sensitive and
/// stays asserted while CNTVCT >= CNTV_CVAL, so this must happen before its end-of-interrupt.
/// Ticks missed while the kernel was busy are dropped rather than delivered in a burst.
fn rearm_timer() {
    let period = TIMER_PERIOD.load(Ordering::Relaxed);
    let now = CNTVCT_EL0.get();
    let mut next = CNTV_CVAL_EL0.get() + period;
    if next <= now {
        next = now + period;
    }
    CNTV_CVAL_EL0.set(next);
}

/// Unmasks or masks device interrupt `line` (a GIC SPI INTID, or an LPI the ITS routes).
/// Other lines are ignored (the kernel checks them against the IRQ capability before calling).
pub fn irq_set_enabled(line: u32, enabled: bool) {
    if its::is_lpi(line) {
        its::set_enabled(line, enabled);
    } else if line >= gic::FIRST_SPI && gic::is_valid(line) {
        gic::set_enabled(line, enabled);
    }
}

/// Configures SPI `line` as edge-triggered (`edge`) or level-sensitive. The reset state is
/// level, which suits PCI INTx; the SMMUv3's wired interrupts on `virt` (SPIs 106..109) are
/// edge-triggered pulses that a level-sensitive configuration could miss.
pub fn irq_configure(line: u32, edge: bool) {
    if line >= gic::FIRST_SPI && gic::is_valid(line) {
        gic::set_trigger(line, edge);
    }
}

/// Acknowledges the pending interrupt, if any, and turns it into a `Trap`; `None` if nothing
/// (or only a spurious interrupt) was pending.
pub(super) fn acknowledge() -> Option<Trap> {
    let interrupt = gic::acknowledge()?;
    let trap = if interrupt.intid == VIRTUAL_TIMER_INTID {
        rearm_timer();
        Trap::Timer
    } else if its::is_lpi(interrupt.intid) {
        // An LPI is a message: nothing stays asserted, so it stays enabled (module docs of `its`).
        its::count_taken();
        Trap::DeviceIrq(interrupt.intid)
    } else {
        gic::set_enabled(interrupt.intid, false);
        Trap::DeviceIrq(interrupt.intid)
    };
    gic::end_of_interrupt(interrupt);
    Some(trap)
}

/// Idles until an interrupt arrives and reports it (see the module docs for why PSTATE.I stays
/// masked).
pub fn wait_for_interrupt() -> Trap {
    loop {
        if let Some(trap) = acknowledge() {
            return trap;
        }
        // An interrupt becoming pending between the acknowledge above and this WFI makes the
        // WFI complete at once, so no wake-up is lost.
        aarch64_cpu::asm::wfi();
    }
}
