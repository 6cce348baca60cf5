//! System-call dispatch. Every argument is untrusted: unknown numbers, out-of-range lengths
//! and bad pointers get an error status, never a kernel fault.

use crate::process::{Continuation, Process};
use crate::usermem::UserSlice;
use kernel_abi::{Error, Syscall, MAX_DEBUG_WRITE};

pub fn handle(process: &mut Process) -> Continuation {
    let number = process.context.syscall_number();
    let args = process.context.syscall_args();
    let result = match Syscall::from_number(number) {
        None => Err(Error::UnknownSyscall),
        Some(Syscall::Exit) => return Continuation::Exit(args[0]),
        Some(Syscall::Yield) => {
            process.context.set_syscall_result(&[0]);
            return Continuation::Yield;
        }
        Some(Syscall::DebugWrite) => debug_write(process, args[0], args[1]),
    };
    match result {
        Ok(()) => process.context.set_syscall_result(&[0]),
        Err(e) => process.context.set_syscall_result(&[e as u64]),
    }
    Continuation::Resume
}

fn debug_write(process: &Process, ptr: u64, len: u64) -> Result<(), Error> {
    if len > MAX_DEBUG_WRITE as u64 {
        return Err(Error::InvalidArgument);
    }
    let slice = UserSlice::new(ptr, len)?;
    let mut buf = [0u8; MAX_DEBUG_WRITE];
    slice.copy_into(&process.space, &mut buf[..len as usize])?;
    crate::arch::console_write(&buf[..len as usize]);
    Ok(())
}
