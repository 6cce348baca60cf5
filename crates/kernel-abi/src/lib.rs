//! The kernel's system-call ABI, shared by the kernel and user programs.
//!
//! Calling convention. x86_64: `syscall` with the number in rax and arguments in rdi, rsi, rdx,
//! r10, r8, r9; results in rax (status), rdi, rsi, ... aarch64: `svc #0` with the number in x8,
//! arguments in x0..x5, results in x0 (status), x1, ... A status of 0 is success; anything else
//! is an [`Error`].
#![cfg_attr(not(test), no_std)]

/// System call numbers.
#[repr(u64)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syscall {
    /// `debug_write(ptr, len)`: writes bytes to the kernel console. `len` <= `MAX_DEBUG_WRITE`.
    DebugWrite = 0,
    /// `exit(code)`: ends the calling process; never returns.
    Exit = 1,
    /// `yield()`: gives up the rest of the time slice.
    Yield = 2,
}

impl Syscall {
    pub fn from_number(n: u64) -> Option<Syscall> {
        Some(match n {
            0 => Syscall::DebugWrite,
            1 => Syscall::Exit,
            2 => Syscall::Yield,
            _ => return None,
        })
    }
}

pub const MAX_DEBUG_WRITE: usize = 256;

/// Error codes returned in the status register. Stable numbers.
#[repr(u64)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The system call number is not known.
    UnknownSyscall = 1,
    /// An argument is out of range (e.g. a length above its limit).
    InvalidArgument = 2,
    /// A user pointer names memory the caller may not access in the required way.
    BadAddress = 3,
}

impl Error {
    pub fn from_status(status: u64) -> Option<Error> {
        Some(match status {
            1 => Error::UnknownSyscall,
            2 => Error::InvalidArgument,
            3 => Error::BadAddress,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscall_numbers_round_trip() {
        for s in [Syscall::DebugWrite, Syscall::Exit, Syscall::Yield] {
            assert_eq!(Syscall::from_number(s as u64), Some(s));
        }
        assert_eq!(Syscall::from_number(3), None);
        assert_eq!(Syscall::from_number(u64::MAX), None);
    }

    #[test]
    fn error_codes_round_trip_and_zero_is_success() {
        for e in [Error::UnknownSyscall, Error::InvalidArgument, Error::BadAddress] {
            assert_eq!(Error::from_status(e as u64), Some(e));
        }
        assert_eq!(Error::from_status(0), None);
    }
}
