//! The run queue: strict priorities, round robin within a level.

use crate::process::Tid;
use alloc::collections::VecDeque;

/// Levels 0 (lowest) to 7; `occupied` has one bit per level.
pub const PRIORITY_LEVELS: usize = 8;
/// Priority of threads the kernel starts (the root task's, and the tests' processes).
pub const DEFAULT_PRIORITY: u8 = kernel_abi::START_PRIORITY as u8;

pub struct RunQueue {
    levels: [VecDeque<Tid>; PRIORITY_LEVELS],
    /// Bit p set: level p is non-empty (the scheduler's hot path asks this after every call).
    occupied: u8,
}

impl RunQueue {
    pub const fn new() -> Self {
        RunQueue { levels: [const { VecDeque::new() }; PRIORITY_LEVELS], occupied: 0 }
    }

    pub fn push_back(&mut self, tid: Tid, priority: u8) {
        self.levels[priority as usize].push_back(tid);
        self.occupied |= 1 << priority;
    }

    /// Queues `tid` to run before the others of its level (IPC hand-off).
    pub fn push_front(&mut self, tid: Tid, priority: u8) {
        self.levels[priority as usize].push_front(tid);
        self.occupied |= 1 << priority;
    }

    /// The first thread of the highest non-empty level.
    pub fn pop(&mut self) -> Option<Tid> {
        let priority = self.highest()?;
        let level = &mut self.levels[priority as usize];
        let tid = level.pop_front();
        if level.is_empty() {
            self.occupied &= !(1 << priority);
        }
        tid
    }

    /// The highest level with a runnable thread.
    pub fn highest(&self) -> Option<u8> {
        (self.occupied != 0).then(|| 7 - self.occupied.leading_zeros() as u8)
    }

    /// Whether a thread above `priority` is runnable.
    pub fn has_higher_than(&self, priority: u8) -> bool {
        (self.occupied as u32) >> (priority as u32 + 1) != 0
    }

    pub fn remove(&mut self, tid: Tid) {
        for (priority, level) in self.levels.iter_mut().enumerate() {
            level.retain(|&t| t != tid);
            if level.is_empty() {
                self.occupied &= !(1 << priority);
            }
        }
    }
}
