//! The one bounded wait on hardware every driver uses.
//!
//! A wait polls a condition until it holds or a timeout passes on a [`Clock`]. The condition is
//! polled once more after the clock says the deadline has passed: the thread may have been
//! preempted for longer than the timeout between two polls, and hardware that finished meanwhile
//! must not be reported as timed out (a timeout takes the unit, and with it the server, down).

use crate::Clock;

/// A bounded wait ran out of time with its condition still false.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut;

/// Polls `done` until it returns true, or fails once more than `timeout_ns` have passed on
/// `clock` and a last poll still says false. Spins between polls.
///
/// `done` may have side effects (recovering from an error the hardware reports while it is
/// polled, for instance); it is called at least once.
#[inline(always)]
pub fn poll_until<C: Clock + ?Sized>(clock: &C, timeout_ns: u64, done: impl FnMut() -> bool) -> Result<(), TimedOut> {
    poll_until_pausing(clock, timeout_ns, done, core::hint::spin_loop)
}

/// [`poll_until`] calling `pause` between polls (a thread that waits for another process
/// yields the CPU instead of spinning).
#[inline(always)]
pub fn poll_until_pausing<C: Clock + ?Sized>(
    clock: &C,
    timeout_ns: u64,
    mut done: impl FnMut() -> bool,
    mut pause: impl FnMut(),
) -> Result<(), TimedOut> {
    // The clock is first read after the first look: hardware is often done by then (QEMU
    // always is), and a clock read may cost a system call. `done` is called from one place
    // only, so each wait inlines it once.
    let mut start = None;
    loop {
        // The clock is read before the poll, so the poll that follows an expired deadline is
        // the last word: a wait preempted past its deadline still sees the finished hardware.
        let expired = start.is_some_and(|start| clock.now_ns().wrapping_sub(start) > timeout_ns);
        if done() {
            return Ok(());
        }
        if expired {
            return Err(TimedOut);
        }
        if start.is_none() {
            start = Some(clock.now_ns());
        }
        pause();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::Cell;

    /// Time as the waiting thread sees it: each clock read returns the next of `readings` (the
    /// last one repeats). `now` is the latest reading, which the fake hardware looks at.
    struct ScriptedClock {
        readings: &'static [u64],
        reads: Cell<usize>,
        now: Cell<u64>,
    }

    impl ScriptedClock {
        fn new(readings: &'static [u64]) -> Self {
            Self { readings, reads: Cell::new(0), now: Cell::new(0) }
        }
    }

    impl Clock for ScriptedClock {
        fn now_ns(&self) -> u64 {
            let index = self.reads.get().min(self.readings.len() - 1);
            self.reads.set(self.reads.get() + 1);
            self.now.set(self.readings[index]);
            self.now.get()
        }
    }

    /// The shape the SMMU driver's waits had: the deadline is checked after the poll, and a
    /// passed deadline ends the wait without another look.
    fn poll_until_without_final_look<C: Clock>(clock: &C, timeout_ns: u64, mut done: impl FnMut() -> bool) -> Result<(), TimedOut> {
        let start = clock.now_ns();
        loop {
            if done() {
                return Ok(());
            }
            if clock.now_ns().wrapping_sub(start) > timeout_ns {
                return Err(TimedOut);
            }
        }
    }

    /// The waiting thread is preempted for two seconds right after a poll that found the
    /// hardware busy; the hardware finishes one second in, long past the 1 ms deadline.
    fn preempted_wait(wait: impl FnOnce(&ScriptedClock, &mut dyn FnMut() -> bool) -> Result<(), TimedOut>) -> Result<(), TimedOut> {
        const FINISHES_AT: u64 = 1_000_000_000;
        let clock = ScriptedClock::new(&[0, 2_000_000_000]);
        let mut done = || clock.now.get() >= FINISHES_AT;
        wait(&clock, &mut done)
    }

    #[test]
    fn a_wait_preempted_past_its_deadline_sees_the_hardware_done() {
        assert_eq!(preempted_wait(|clock, done| poll_until(clock, 1_000_000, done)), Ok(()));
    }

    #[test]
    fn the_old_shape_without_a_final_look_times_out_falsely() {
        assert_eq!(preempted_wait(|clock, done| poll_until_without_final_look(clock, 1_000_000, done)), Err(TimedOut));
    }

    #[test]
    fn a_condition_that_never_holds_times_out_after_the_deadline() {
        let clock = ScriptedClock::new(&[0, 400_000, 800_000, 1_200_000]);
        let polls = Cell::new(0);
        let result = poll_until(&clock, 1_000_000, || {
            polls.set(polls.get() + 1);
            false
        });
        assert_eq!(result, Err(TimedOut));
        // Not before the deadline, and with one last poll after it: the first look, then one
        // poll after each of the three later clock readings.
        assert_eq!(polls.get(), 4);
        assert_eq!(clock.reads.get(), 4);
    }

    #[test]
    fn a_condition_already_true_never_reads_the_clock() {
        let clock = ScriptedClock::new(&[0]);
        assert_eq!(poll_until(&clock, 0, || true), Ok(()));
        assert_eq!(clock.reads.get(), 0);
    }

    #[test]
    fn the_pause_runs_between_polls() {
        let clock = ScriptedClock::new(&[0]);
        let polls = Cell::new(0);
        let pauses = Cell::new(0);
        let result = poll_until_pausing(
            &clock,
            1_000,
            || {
                polls.set(polls.get() + 1);
                polls.get() == 3
            },
            || pauses.set(pauses.get() + 1),
        );
        assert_eq!(result, Ok(()));
        assert_eq!(pauses.get(), 2);
    }
}
