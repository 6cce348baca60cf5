//! Processes, their threads, and the scheduler loop.
//!
//! The kernel has no threads of its own: `run` picks the next runnable thread, enters user
//! mode with `arch::run_user`, and handles whatever brought the thread back (system call,
//! fault, timer preemption). A process that faults is killed and everything it held is
//! returned: its frames and its page tables.

use crate::arch::{self, paging::AddressSpace, MapFlags, Trap, UserContext, PAGE_SIZE};
use crate::elf::{self, ElfError};
use crate::mm::FRAMES;
use crate::syscall;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;

pub type Pid = u32;

/// Top of every process's initial stack (the page above it stays unmapped as a guard).
pub const USER_STACK_TOP: u64 = 0x0000_7FFF_FFF0_0000;
pub const USER_STACK_PAGES: u64 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    Exited(u64),
    /// Killed by the kernel for a fault it took.
    Faulted(Trap),
    /// Killed from outside.
    Killed,
}

pub struct Process {
    pub pid: Pid,
    pub name: &'static str,
    pub space: AddressSpace,
    /// Frames this process owns (image and stack); freed when it ends.
    frames: Vec<u64>,
    pub context: UserContext,
}

pub struct Scheduler {
    processes: BTreeMap<Pid, Process>,
    run_queue: VecDeque<Pid>,
    exited: BTreeMap<Pid, ExitReason>,
    next_pid: Pid,
}

/// What a system call asks the scheduler to do with the calling thread.
pub enum Continuation {
    Resume,
    Yield,
    Exit(u64),
}

impl Scheduler {
    pub const fn new() -> Self {
        Scheduler { processes: BTreeMap::new(), run_queue: VecDeque::new(), exited: BTreeMap::new(), next_pid: 1 }
    }

    /// Creates a process from an ELF image with one thread starting at its entry with `arg`.
    pub fn spawn(&mut self, name: &'static str, image: &[u8], arg: u64) -> Result<Pid, ElfError> {
        let mut frames = FRAMES.lock();
        let mut space = AddressSpace::new(&mut frames).ok_or(ElfError::OutOfMemory)?;
        let mut owned = Vec::new();
        let loaded = elf::load(image, &mut space, &mut frames, &mut owned).and_then(|entry| {
            let stack = MapFlags { writable: true, executable: false, device: false };
            for i in 1..=USER_STACK_PAGES {
                let frame = frames.alloc().ok_or(ElfError::OutOfMemory)?;
                owned.push(frame);
                space.map(USER_STACK_TOP - i * PAGE_SIZE, frame, stack, &mut frames).map_err(|_| ElfError::OutOfMemory)?;
            }
            Ok(entry)
        });
        let entry = match loaded {
            Ok(entry) => entry,
            Err(e) => {
                space.destroy(&mut frames);
                owned.into_iter().for_each(|f| frames.free(f));
                return Err(e);
            }
        };
        let pid = self.next_pid;
        self.next_pid += 1;
        let context = UserContext::new(entry, USER_STACK_TOP, arg);
        self.processes.insert(pid, Process { pid, name, space, frames: owned, context });
        self.run_queue.push_back(pid);
        Ok(pid)
    }

    fn reap(&mut self, pid: Pid, reason: ExitReason) {
        if let Some(process) = self.processes.remove(&pid) {
            if let ExitReason::Faulted(trap) = reason {
                crate::println!("[kernel] killed {} (pid {}) at pc {:#x}: {:?}", process.name, pid, process.context.pc(), trap);
            }
            let mut frames = FRAMES.lock();
            process.space.destroy(&mut frames);
            process.frames.into_iter().for_each(|f| frames.free(f));
        }
        self.run_queue.retain(|&p| p != pid);
        self.exited.insert(pid, reason);
    }

    /// Ends a process from outside (as a kill capability would).
    pub fn kill(&mut self, pid: Pid) {
        if self.processes.contains_key(&pid) {
            self.reap(pid, ExitReason::Killed);
        }
    }

    /// Takes the exit reason of a process that has ended.
    pub fn take_exit(&mut self, pid: Pid) -> Option<ExitReason> {
        self.exited.remove(&pid)
    }

    /// Runs threads until every process in `pids` has ended.
    pub fn run_until_exited(&mut self, pids: &[Pid]) {
        while pids.iter().any(|p| self.processes.contains_key(p)) {
            self.run_once();
        }
    }

    /// Runs one time slice of the next runnable thread (or idles until an interrupt).
    fn run_once(&mut self) {
        let Some(pid) = self.run_queue.pop_front() else {
            arch::wait_for_interrupt();
            return;
        };
        let process = self.processes.get_mut(&pid).expect("queued process exists");
        process.space.activate();
        loop {
            let trap = arch::run_user(&mut process.context);
            match trap {
                Trap::Syscall => match syscall::handle(process) {
                    Continuation::Resume => continue,
                    Continuation::Yield => {
                        self.run_queue.push_back(pid);
                        return;
                    }
                    Continuation::Exit(code) => {
                        self.reap(pid, ExitReason::Exited(code));
                        return;
                    }
                },
                Trap::Timer | Trap::DeviceIrq(_) => {
                    self.run_queue.push_back(pid);
                    return;
                }
                Trap::PageFault { .. } | Trap::IllegalInstruction { .. } => {
                    self.reap(pid, ExitReason::Faulted(trap));
                    return;
                }
            }
        }
    }
}
