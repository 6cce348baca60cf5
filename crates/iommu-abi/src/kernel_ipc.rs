//! How the eight-word messages of [`crate::wire`] travel over the kernel's IPC, whose `call`
//! carries only four words and one capability each way.
//!
//! Every client has a *message window*: one page of a memory object the **server** allocates
//! at [`CONNECT`] and lends the client: a capability derived from the server's own, with the
//! kernel's READ, WRITE and DERIVE rights but not GRANT (the client can map the page and copy
//! the capability, never send it on), put into the empty slot the client names. Afterwards
//! each operation is one kernel `call`:
//!
//! ```text
//! client: writes the 8 request words to window[0..8]
//!         call(ep, cap?, [REQUEST, 0, 0, 0])   cap: the operation's capability, if it takes one
//! server: copies window[0..8] out (the client could change it meanwhile), dispatches,
//!         writes the 8 reply words to window[0..8]
//!         reply([status, 0, 0, 0])             status = reply word 0 (0 or an Error code)
//! ```
//!
//! Transport-level failures (no window yet, a malformed transport word) are answered in the
//! IPC reply only, with the window untouched. The client is the endpoint *badge* the kernel
//! attaches to its messages: the root task gives each client its own badged copy.
//!
//! The window is the server's memory, mapped by the server through its original capability,
//! so nothing the client does with its lent copy (delete, revoke, unmap) can take the page
//! from the server: the request path never touches memory a client can take away. A client
//! that gives up its copy only loses its own view; its requests are still read from, and
//! answered into, the server's page. The server takes the lent copy back (revokes it) when the
//! client disconnects or its process ends.

use hwio::SharedWords;

use crate::wire::{Message, MESSAGE_WORDS};

/// Transport word 0: registers the client; word 1 is an empty slot of the client's capability
/// space, into which the server lends the window (a memory object of one page: READ, WRITE,
/// DERIVE). Reply: status, and the window in that slot if the status is 0.
pub const CONNECT: u64 = 1;
/// Transport word 0: an operation's request is in the window; its reply will be too.
pub const REQUEST: u64 = 2;
/// Transport word 0: the client is done; the server tears down what it owns, takes the lent
/// window back (the client's copies and mappings of it go) and frees it. Reply: status only.
pub const DISCONNECT: u64 = 3;
/// Transport word 0: the capability sent is a notification (WRITE right) the server signals
/// with [`FAULT_SIGNAL`] whenever it queues a fault record in one of the client's fault
/// queues, so a driver can wait for faults instead of polling `fault_read`. Replaces an
/// earlier subscription. Reply: status only.
pub const SUBSCRIBE_FAULTS: u64 = 4;

/// The notification bit the server signals for [`SUBSCRIBE_FAULTS`].
pub const FAULT_SIGNAL: u64 = 1 << 0;

/// Transport status: the client has no window yet (send [`CONNECT`] first).
pub const STATUS_NOT_CONNECTED: u64 = 0x1_0000;
/// Transport status: the client is already connected, the slot [`CONNECT`] names is no empty
/// slot of the client, or the server could not allocate the window.
pub const STATUS_BAD_WINDOW: u64 = 0x1_0001;
/// Transport status: unknown transport word 0, or non-zero words 1..4.
pub const STATUS_BAD_TRANSPORT: u64 = 0x1_0002;
/// Transport status: the server serves no more clients.
pub const STATUS_TOO_MANY_CLIENTS: u64 = 0x1_0003;
/// Transport status: [`SUBSCRIBE_FAULTS`] came without a notification capability with WRITE.
pub const STATUS_BAD_NOTIFICATION: u64 = 0x1_0004;
/// Transport status: a server instance that replaced an ended one (started with
/// `iommu_server_contract::start::RESTARTED`) got a message other than [`CONNECT`] from a
/// client that has not connected to it: the client's connection was with the ended server.
/// The client library reports it as `Error::ServerRestarted`.
pub const STATUS_SERVER_RESTARTED: u64 = 0x1_0005;

/// Bytes of the window the protocol uses: one message.
pub const WINDOW_BYTES: usize = MESSAGE_WORDS * 8;

/// Reads a message out of a window, word by word with volatile loads (the other side may write
/// the page concurrently; each word is read exactly once).
///
/// # Safety
/// `window` must point to at least [`WINDOW_BYTES`] readable, 8-byte aligned bytes.
pub unsafe fn read_window(window: *const u64) -> Message {
    // SAFETY: mapped, aligned and long enough by the caller's contract.
    unsafe { SharedWords::<MESSAGE_WORDS>::at_address(window as usize) }.read_array()
}

/// Writes a message into a window with volatile stores.
///
/// # Safety
/// `window` must point to at least [`WINDOW_BYTES`] writable, 8-byte aligned bytes.
pub unsafe fn write_window(window: *mut u64, message: &Message) {
    // SAFETY: mapped, aligned and long enough by the caller's contract.
    unsafe { SharedWords::<MESSAGE_WORDS>::at_address(window as usize) }.write_slice(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_round_trip_preserves_every_word() {
        let mut page = [0u64; 512];
        let message: Message = [1, 2, 3, u64::MAX, 5, 6, 7, 0x8000_0000_0000_0000];
        // SAFETY: the page holds 512 aligned words.
        unsafe { write_window(page.as_mut_ptr(), &message) };
        assert_eq!(&page[..8], &message);
        assert!(page[8..].iter().all(|&w| w == 0), "only the message words are written");
        // SAFETY: as above.
        assert_eq!(unsafe { read_window(page.as_ptr()) }, message);
    }

    #[test]
    fn transport_codes_are_distinct_and_outside_error_codes() {
        let statuses = [STATUS_NOT_CONNECTED, STATUS_BAD_WINDOW, STATUS_BAD_TRANSPORT, STATUS_TOO_MANY_CLIENTS, STATUS_BAD_NOTIFICATION, STATUS_SERVER_RESTARTED];
        for (i, a) in statuses.iter().enumerate() {
            assert!(crate::Error::from_code(*a as u32).is_none(), "{a:#x} collides with an Error code");
            for b in &statuses[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_ne!(CONNECT, REQUEST);
        assert_ne!(REQUEST, DISCONNECT);
    }
}
