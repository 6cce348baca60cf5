//! The client side of `iommu_abi::kernel_ipc`: a message window the server lends at connect,
//! and an `iommu_abi::Transport` that sends each request through it.

use iommu_abi::kernel_ipc;
use iommu_abi::wire::Message;
use iommu_abi::Error;
use iommu_client::{Iommu, Transport};
use kernel_abi::{MapFlags, Rights, NO_CAP};
use userlib::syscall;

/// A connection to the IOMMU server.
pub struct WindowTransport {
    endpoint: u64,
    window: *mut u64,
    /// Empty slot that receives the derived copy of each capability sent (the call moves it).
    outgoing: u64,
    /// Status of the last IPC reply (0, an `Error` code, or a `kernel_ipc` status).
    pub last_ipc_status: u64,
}

/// Where the window lives in the driver, and the slots it needs.
pub struct WindowPlace {
    /// Empty slot for the window capability the server lends at connect.
    pub window_slot: u64,
    pub outgoing_slot: u64,
    pub virt: u64,
}

impl WindowTransport {
    /// Registers with the server behind `endpoint`, which lends its window page into
    /// `place.window_slot`, and maps the window at `place.virt`. Err: the transport status, or
    /// the kernel's error code.
    pub fn connect(endpoint: u64, place: &WindowPlace) -> Result<Iommu<WindowTransport>, u64> {
        let kernel = |e: kernel_abi::Error| e as u64;
        let reply = syscall::call(endpoint, NO_CAP, [kernel_ipc::CONNECT, place.window_slot, 0, 0]).map_err(kernel)?;
        if reply.words[0] != 0 {
            return Err(reply.words[0]);
        }
        syscall::mem_map(place.window_slot, place.virt, 0, 1, MapFlags::WRITE).map_err(kernel)?;
        Ok(Iommu::new(WindowTransport { endpoint, window: place.virt as *mut u64, outgoing: place.outgoing_slot, last_ipc_status: 0 }))
    }

    /// One raw transport call (for tests of the server's transport checks).
    pub fn raw(&mut self, words: [u64; 4]) -> u64 {
        match syscall::call(self.endpoint, NO_CAP, words) {
            Ok(reply) => reply.words[0],
            Err(error) => error as u64,
        }
    }

    /// Asks the server to signal the notification in `notification` (bit
    /// `kernel_ipc::FAULT_SIGNAL`) whenever it queues a fault for this client. The server gets
    /// a copy that can signal and nothing else (GRANT only because sending needs it). Returns
    /// the transport status (0 on success).
    pub fn subscribe_faults(&mut self, notification: u64) -> u64 {
        if let Err(error) = syscall::cap_derive(notification, self.outgoing, Rights::WRITE.union(Rights::GRANT), 0) {
            return error as u64;
        }
        match syscall::call(self.endpoint, self.outgoing, [kernel_ipc::SUBSCRIBE_FAULTS, 0, 0, 0]) {
            Ok(reply) => reply.words[0],
            Err(error) => {
                let _ = syscall::cap_delete(self.outgoing);
                error as u64
            }
        }
    }

    /// Tells the server this client is done.
    pub fn disconnect(&mut self) -> u64 {
        self.raw([kernel_ipc::DISCONNECT, 0, 0, 0])
    }
}

impl Transport for WindowTransport {
    fn call(&mut self, msg: &Message, cap: Option<u64>) -> (Message, Option<u64>) {
        let failed = |error: Error| {
            let mut reply = [0u64; 8];
            reply[0] = u64::from(error.code());
            (reply, None)
        };
        let sent = match cap {
            Some(slot) => {
                // A copy with the same rights as the original (derivation never adds rights).
                if syscall::cap_derive(slot, self.outgoing, Rights::all(), 0).is_err() {
                    return failed(Error::BadCapability);
                }
                self.outgoing
            }
            None => NO_CAP,
        };
        // SAFETY: the window page is mapped writable for the life of the connection (a
        // scenario that deletes its window capability makes no more calls through here).
        unsafe { kernel_ipc::write_window(self.window, msg) };
        let reply = syscall::call(self.endpoint, sent, [kernel_ipc::REQUEST, 0, 0, 0]);
        if sent != NO_CAP {
            // Normally moved to the server; still here only if the call failed before.
            let _ = syscall::cap_delete(sent);
        }
        let reply = match reply {
            Ok(reply) => reply,
            Err(_) => return failed(Error::MalformedReply),
        };
        self.last_ipc_status = reply.words[0];
        // SAFETY: as above.
        let message = unsafe { kernel_ipc::read_window(self.window) };
        if message[0] != reply.words[0] {
            // A transport-level refusal: the window holds our request, not a reply.
            return failed(Error::MalformedReply);
        }
        (message, reply.cap_received.then_some(0))
    }
}
