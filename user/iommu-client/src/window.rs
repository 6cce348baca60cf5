//! The kernel transport: the client side of `iommu_abi::kernel_ipc`. The server lends a
//! message window at connect; each request is written into it, announced with one kernel `call`,
//! and answered in it.
//!
//! The transport is generic over the few system calls it makes ([`SystemCalls`]): a driver uses
//! the kernel's (`KernelCalls`, on the bare-metal targets), the host tests a simulated kernel
//! and server.

use hwio::SharedWords;
use iommu_abi::kernel_ipc;
use iommu_abi::wire::{Message, MESSAGE_WORDS};
use iommu_abi::Error;
use kernel_abi::{Rights, NO_CAP};

use crate::client::{Iommu, Transport};

/// What a kernel `call` brings back: the four reply words, and whether a capability came too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallReply {
    pub words: [u64; 4],
    pub cap_received: bool,
}

/// The system calls the transport makes (`kernel_abi` describes each).
pub trait SystemCalls {
    /// Sends `words` and moves the capability in slot `cap` (or none: `NO_CAP`) to `endpoint`,
    /// and waits for the reply.
    fn call(&mut self, endpoint: u64, cap: u64, words: [u64; 4]) -> Result<CallReply, kernel_abi::Error>;
    /// Maps the one-page memory object in slot `memory` readable and writable at `virt`.
    fn map_page(&mut self, memory: u64, virt: u64) -> Result<(), kernel_abi::Error>;
    /// Copies the capability in slot `source` into the empty slot `destination` with `rights`
    /// (at most the source's).
    fn cap_derive(&mut self, source: u64, destination: u64, rights: Rights) -> Result<(), kernel_abi::Error>;
    /// Empties slot `slot`.
    fn cap_delete(&mut self, slot: u64) -> Result<(), kernel_abi::Error>;
}

/// A connection to the IOMMU server over the kernel's IPC.
pub struct WindowTransport<K: SystemCalls> {
    kernel: K,
    endpoint: u64,
    window: SharedWords<MESSAGE_WORDS>,
    /// Empty slot that receives the derived copy of each capability sent (the call moves it).
    outgoing: u64,
    /// Status of the last IPC reply (0, an `Error` code, or a `kernel_ipc` status).
    pub last_ipc_status: u64,
}

/// Where the window lives in the client, and the slots the connection needs.
#[derive(Clone, Copy, Debug)]
pub struct WindowPlace {
    /// Empty slot for the window capability the server lends at connect.
    pub window_slot: u64,
    /// Empty slot for the copy of each capability a request sends.
    pub outgoing_slot: u64,
    /// Free page-aligned address to map the window at.
    pub virt: u64,
}

impl<K: SystemCalls> WindowTransport<K> {
    /// Registers with the server behind `endpoint`, which lends its window page into
    /// `place.window_slot`, and maps the window at `place.virt`. Err: the transport status, or
    /// the kernel's error code.
    pub fn connect_with(mut kernel: K, endpoint: u64, place: &WindowPlace) -> Result<Iommu<Self>, u64> {
        let kernel_error = |e: kernel_abi::Error| e as u64;
        let reply = kernel.call(endpoint, NO_CAP, [kernel_ipc::CONNECT, place.window_slot, 0, 0]).map_err(kernel_error)?;
        if reply.words[0] != 0 {
            return Err(reply.words[0]);
        }
        kernel.map_page(place.window_slot, place.virt).map_err(kernel_error)?;
        // SAFETY: the page the server lent is mapped writable at `place.virt` (page-aligned, so
        // not 0 and aligned) and stays mapped for the connection's life: only the client itself
        // could unmap it, and a scenario that takes its window away makes no more calls here.
        let window = unsafe { SharedWords::at_address(place.virt as usize) };
        let transport = WindowTransport { kernel, endpoint, window, outgoing: place.outgoing_slot, last_ipc_status: 0 };
        Ok(Iommu::new(transport))
    }

    /// Connects again after `Error::ServerRestarted`: gives up the ended server's window (its
    /// capability in `place.window_slot`, and with it the mapping at `place.virt`), then
    /// connects as [`Self::connect_with`] does. The handles of the old connection mean nothing
    /// to the new server: the client sets its devices up again.
    pub fn reconnect_with(mut kernel: K, endpoint: u64, place: &WindowPlace) -> Result<Iommu<Self>, u64> {
        // An empty slot is fine: the client may have given the window up already.
        let _ = kernel.cap_delete(place.window_slot);
        Self::connect_with(kernel, endpoint, place)
    }

    /// One raw transport call (for tests of the server's transport checks).
    pub fn raw(&mut self, words: [u64; 4]) -> u64 {
        match self.kernel.call(self.endpoint, NO_CAP, words) {
            Ok(reply) => reply.words[0],
            Err(error) => error as u64,
        }
    }

    /// Asks the server to signal the notification in `notification` (bit
    /// `kernel_ipc::FAULT_SIGNAL`) whenever it queues a fault for this client. The server gets
    /// a copy that can signal and nothing else (GRANT only because sending needs it). Returns
    /// the transport status (0 on success).
    pub fn subscribe_faults(&mut self, notification: u64) -> u64 {
        if let Err(error) = self.kernel.cap_derive(notification, self.outgoing, Rights::WRITE.union(Rights::GRANT)) {
            return error as u64;
        }
        match self.kernel.call(self.endpoint, self.outgoing, [kernel_ipc::SUBSCRIBE_FAULTS, 0, 0, 0]) {
            Ok(reply) => reply.words[0],
            Err(error) => {
                let _ = self.kernel.cap_delete(self.outgoing);
                error as u64
            }
        }
    }

    /// Tells the server this client is done.
    pub fn disconnect(&mut self) -> u64 {
        self.raw([kernel_ipc::DISCONNECT, 0, 0, 0])
    }

    /// The system calls (e.g. a test's simulated kernel).
    pub fn kernel_mut(&mut self) -> &mut K {
        &mut self.kernel
    }
}

impl<K: SystemCalls> Transport for WindowTransport<K> {
    fn call(&mut self, msg: &Message, cap: Option<u64>) -> (Message, Option<u64>) {
        let failed = |error: Error| {
            let mut reply = [0u64; MESSAGE_WORDS];
            reply[0] = u64::from(error.code());
            (reply, None)
        };
        let sent = match cap {
            Some(slot) => {
                // A copy with the same rights as the original (derivation never adds rights).
                if self.kernel.cap_derive(slot, self.outgoing, Rights::all()).is_err() {
                    return failed(Error::BadCapability);
                }
                self.outgoing
            }
            None => NO_CAP,
        };
        self.window.write_slice(msg);
        let reply = self.kernel.call(self.endpoint, sent, [kernel_ipc::REQUEST, 0, 0, 0]);
        if sent != NO_CAP {
            // Normally moved to the server; still here only if the call failed before.
            let _ = self.kernel.cap_delete(sent);
        }
        let reply = match reply {
            Ok(reply) => reply,
            Err(_) => return failed(Error::MalformedReply),
        };
        self.last_ipc_status = reply.words[0];
        if reply.words[0] == kernel_ipc::STATUS_SERVER_RESTARTED {
            return failed(Error::ServerRestarted);
        }
        let message: Message = self.window.read_array();
        if message[0] != reply.words[0] {
            // A transport-level refusal: the window holds our request, not a reply.
            return failed(Error::MalformedReply);
        }
        (message, reply.cap_received.then_some(0))
    }
}
