//! The kernel's system calls behind [`WindowTransport`]: what a user program connects with.

use kernel_abi::{MapFlags, Rights};
use userlib::syscall;

use crate::client::Iommu;
use crate::window::{CallReply, SystemCalls, WindowPlace, WindowTransport};

/// The system calls of this process (`userlib::syscall`).
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelCalls;

impl SystemCalls for KernelCalls {
    #[inline]
    fn call(&mut self, endpoint: u64, cap: u64, words: [u64; 4]) -> Result<CallReply, kernel_abi::Error> {
        syscall::call(endpoint, cap, words).map(|reply| CallReply { words: reply.words, cap_received: reply.cap_received })
    }

    #[inline]
    fn map_page(&mut self, memory: u64, virt: u64) -> Result<(), kernel_abi::Error> {
        syscall::mem_map(memory, virt, 0, 1, MapFlags::WRITE)
    }

    #[inline]
    fn cap_derive(&mut self, source: u64, destination: u64, rights: Rights) -> Result<(), kernel_abi::Error> {
        syscall::cap_derive(source, destination, rights, 0)
    }

    #[inline]
    fn cap_delete(&mut self, slot: u64) -> Result<(), kernel_abi::Error> {
        syscall::cap_delete(slot)
    }
}

/// A driver's connection to the IOMMU server.
pub type Connection = Iommu<WindowTransport<KernelCalls>>;

/// Connects to the server behind `endpoint` (see [`WindowTransport::connect_with`]).
pub fn connect(endpoint: u64, place: &WindowPlace) -> Result<Connection, u64> {
    WindowTransport::connect_with(KernelCalls, endpoint, place)
}

/// Connects again, after `Error::ServerRestarted`, to the new server behind `endpoint` (see
/// [`WindowTransport::reconnect_with`]).
pub fn reconnect(endpoint: u64, place: &WindowPlace) -> Result<Connection, u64> {
    WindowTransport::reconnect_with(KernelCalls, endpoint, place)
}
