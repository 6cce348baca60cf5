//! The kernel's own tests (run with `test=<filter>` on the command line).

use crate::arch::{self, MapFlags, Trap};
use crate::ktest::{Test, TestResult};
use crate::process::{ExitReason, Scheduler};
use crate::user_images::USERTEST;
use crate::{ensure, mm};

/// Scenario numbers of user/usertest (its start argument).
mod scenario {
    pub const HELLO: u64 = 0;
    pub const NULL_WRITE: u64 = 1;
    pub const ILLEGAL_INSTRUCTION: u64 = 2;
    pub const BAD_POINTERS: u64 = 3;
    pub const SPIN: u64 = 4;
    pub const HOSTILE_SYSCALLS: u64 = 5;
    pub const KERNEL_READ: u64 = 6;
}

fn run_scenario(arg: u64) -> Result<ExitReason, alloc::string::String> {
    let mut scheduler = Scheduler::new();
    let pid = scheduler.spawn("usertest", USERTEST, arg).map_err(|e| alloc::format!("spawn: {e:?}"))?;
    scheduler.run_until_exited(&[pid]);
    scheduler.take_exit(pid).ok_or_else(|| "no exit recorded".into())
}

fn user_exits_with(arg: u64, code: u64) -> TestResult {
    let reason = run_scenario(arg)?;
    ensure!(reason == ExitReason::Exited(code), "scenario {arg}: {reason:?}, expected exit {code}");
    Ok(())
}

fn user_hello_exit_code() -> TestResult {
    user_exits_with(scenario::HELLO, 42)
}

fn user_killed(arg: u64) -> TestResult {
    let before = mm::FRAMES.lock().free_frames();
    let reason = run_scenario(arg)?;
    let expected = match arg {
        scenario::ILLEGAL_INSTRUCTION => matches!(reason, ExitReason::Faulted(Trap::IllegalInstruction { .. })),
        scenario::NULL_WRITE => matches!(reason, ExitReason::Faulted(Trap::PageFault { addr: 0, write: true, .. })),
        _ => matches!(reason, ExitReason::Faulted(Trap::PageFault { write: false, .. })),
    };
    ensure!(expected, "scenario {arg} ended with {reason:?}");
    let after = mm::FRAMES.lock().free_frames();
    ensure!(after == before, "killed process leaked {} frames", before as i64 - after as i64);
    Ok(())
}

fn user_preemption_of_spinner() -> TestResult {
    let mut scheduler = Scheduler::new();
    let spinner = scheduler.spawn("spinner", USERTEST, scenario::SPIN).map_err(|e| alloc::format!("{e:?}"))?;
    let hello = scheduler.spawn("hello", USERTEST, scenario::HELLO).map_err(|e| alloc::format!("{e:?}"))?;
    // Only the timer can take the CPU away from the spinner.
    scheduler.run_until_exited(&[hello]);
    ensure!(scheduler.take_exit(hello) == Some(ExitReason::Exited(42)), "hello did not finish");
    scheduler.kill(spinner);
    ensure!(scheduler.take_exit(spinner) == Some(ExitReason::Killed), "spinner not reaped");
    Ok(())
}

fn user_create_destroy_cycles_no_leak() -> TestResult {
    let before = mm::FRAMES.lock().free_frames();
    for _ in 0..20 {
        user_exits_with(scenario::HELLO, 42)?;
        let reason = run_scenario(scenario::NULL_WRITE)?;
        ensure!(matches!(reason, ExitReason::Faulted(_)), "fault scenario survived");
    }
    let after = mm::FRAMES.lock().free_frames();
    ensure!(after == before, "20 cycles leaked {} frames", before as i64 - after as i64);
    Ok(())
}

pub const TESTS: &[Test] = &[
    Test { name: "mm::frames_alloc_free_roundtrip", run: frames_alloc_free_roundtrip },
    Test { name: "mm::heap_alloc_free", run: heap_alloc_free },
    Test { name: "paging::user_map_translate_unmap", run: user_map_translate_unmap },
    Test { name: "paging::destroy_reclaims_tables", run: destroy_reclaims_tables },
    Test { name: "timer::ticks", run: timer_ticks },
    Test { name: "user::hello_exit_code", run: user_hello_exit_code },
    Test { name: "user::null_write_killed", run: || user_killed(scenario::NULL_WRITE) },
    Test { name: "user::illegal_instruction_killed", run: || user_killed(scenario::ILLEGAL_INSTRUCTION) },
    Test { name: "user::kernel_read_killed", run: || user_killed(scenario::KERNEL_READ) },
    Test { name: "user::bad_pointers_refused", run: || user_exits_with(scenario::BAD_POINTERS, 0) },
    Test { name: "user::hostile_syscalls_survived", run: || user_exits_with(scenario::HOSTILE_SYSCALLS, 0) },
    Test { name: "user::preemption_of_spinner", run: user_preemption_of_spinner },
    Test { name: "user::create_destroy_cycles_no_leak", run: user_create_destroy_cycles_no_leak },
    Test { name: "selftest::intentional_failure", run: intentional_failure },
    Test { name: "selftest::intentional_hang", run: intentional_hang },
];

fn frames_alloc_free_roundtrip() -> TestResult {
    let mut frames = mm::FRAMES.lock();
    let before = frames.free_frames();
    let a = frames.alloc().ok_or("no frame")?;
    let b = frames.alloc().ok_or("no frame")?;
    ensure!(a != b && a % 4096 == 0 && b % 4096 == 0, "frames {a:#x} {b:#x} not distinct/aligned");
    // SAFETY: `a` is a frame we own, mapped in the direct map.
    let zeroed = unsafe { core::slice::from_raw_parts(mm::phys_to_virt(a), 4096) }.iter().all(|&x| x == 0);
    ensure!(zeroed, "allocated frame not zeroed");
    ensure!(frames.free_frames() == before - 2, "free count did not drop by 2");
    frames.free(a);
    frames.free(b);
    ensure!(frames.free_frames() == before, "free count not restored");
    Ok(())
}

fn heap_alloc_free() -> TestResult {
    let before = crate::heap::used_bytes();
    let v: alloc::vec::Vec<u64> = (0..10_000).collect();
    ensure!(v.iter().sum::<u64>() == 49_995_000, "heap data corrupted");
    ensure!(crate::heap::used_bytes() >= before + 80_000, "heap usage not accounted");
    drop(v);
    ensure!(crate::heap::used_bytes() == before, "heap not returned");
    Ok(())
}

fn user_map_translate_unmap() -> TestResult {
    let mut frames = mm::FRAMES.lock();
    let mut space = arch::paging::AddressSpace::new(&mut frames).ok_or("no memory")?;
    let page = frames.alloc().ok_or("no frame")?;
    let va = 0x40_0000;
    let flags = MapFlags { writable: true, executable: false, device: false };
    space.map(va, page, flags, &mut frames).map_err(|e| alloc::format!("{e:?}"))?;
    ensure!(space.map(va, page, flags, &mut frames) == Err(arch::MapError::AlreadyMapped), "double map accepted");
    ensure!(space.map(arch::USER_TOP, page, flags, &mut frames) == Err(arch::MapError::BadAddress), "kernel-half map accepted");
    ensure!(space.map(va + 1, page, flags, &mut frames) == Err(arch::MapError::BadAddress), "unaligned map accepted");
    ensure!(space.translate(va + 0x123) == Some((page + 0x123, flags)), "translate wrong");
    ensure!(space.unmap(va) == Some(page), "unmap returned wrong frame");
    ensure!(space.translate(va).is_none(), "still mapped after unmap");
    space.destroy(&mut frames);
    frames.free(page);
    Ok(())
}

fn destroy_reclaims_tables() -> TestResult {
    let mut frames = mm::FRAMES.lock();
    let before = frames.free_frames();
    let mut space = arch::paging::AddressSpace::new(&mut frames).ok_or("no memory")?;
    let page = frames.alloc().ok_or("no frame")?;
    let flags = MapFlags { writable: false, executable: true, device: false };
    // Spread over several top-level entries so every table level is allocated more than once.
    for va in [0x1000, 0x20_0000, 0x4000_0000, 0x7F00_0000_0000] {
        space.map(va, page, flags, &mut frames).map_err(|e| alloc::format!("{e:?}"))?;
    }
    space.destroy(&mut frames);
    frames.free(page);
    ensure!(frames.free_frames() == before, "leaked {} frames", before as i64 - frames.free_frames() as i64);
    Ok(())
}

fn timer_ticks() -> TestResult {
    let start = arch::instruction_counter();
    let mut ticks = 0;
    for _ in 0..1000 {
        if arch::wait_for_interrupt() == Trap::Timer {
            ticks += 1;
            if ticks == 3 {
                break;
            }
        }
    }
    ensure!(ticks == 3, "only {ticks} timer ticks");
    ensure!(arch::instruction_counter() > start, "instruction counter did not advance");
    Ok(())
}

/// Used by the runner's self-test: must be reported as a failure.
fn intentional_failure() -> TestResult {
    ensure!(1 + 1 == 3, "this test fails on purpose");
    Ok(())
}

/// Used by the runner's self-test: must be detected as a hang by the runner's timeout.
fn intentional_hang() -> TestResult {
    loop {
        arch::wait_for_interrupt();
    }
}
