//! The contract between usertest and the kernel tests that start it: scenario numbers (the start
//! argument's low byte) and the slots the tests fill.
#![no_std]

pub const HELLO: u64 = 0;
pub const NULL_WRITE: u64 = 1;
pub const ILLEGAL_INSTRUCTION: u64 = 2;
pub const BAD_POINTERS: u64 = 3;
pub const SPIN: u64 = 4;
pub const HOSTILE_SYSCALLS: u64 = 5;
pub const KERNEL_READ: u64 = 6;
pub const IPC_SERVER: u64 = 7;
pub const IPC_CLIENT: u64 = 8;
pub const REVOKER: u64 = 9;
pub const BENCH_CLIENT: u64 = 10;
pub const EDU_IRQ: u64 = 11;
pub const MEM_QUERIES: u64 = 12;
pub const PRIORITIES: u64 = 13;
pub const IO_PORTS: u64 = 14;
/// Creates endpoints and notifications until the quota refuses; exits with
/// `KERNEL_OBJECTS_MADE + how many it made`.
pub const KERNEL_OBJECT_QUOTA: u64 = 15;
pub const KERNEL_OBJECTS_MADE: u64 = 1000;
/// IPC between threads of one process at different priorities: calls queued before the server
/// waits and calls to a waiting server, with and without capabilities; the thread a call or a
/// reply wakes runs at once only if no thread of higher priority is ready; a capability revoked
/// in flight; the process ends with a call and its capability in flight.
pub const IPC_SCHEDULING: u64 = 16;
/// Makes a system call with `BAD_STACK_POINTER` as its stack pointer, then writes below it:
/// the kernel must return to it (an error status executes an undefined instruction instead),
/// and the write, to the unmapped top of the lower half, must kill the process.
pub const BAD_STACK: u64 = 17;
/// The first address above the lower half: non-canonical on x86_64, above anything user code
/// can map on aarch64.
pub const BAD_STACK_POINTER: u64 = 0x0000_8000_0000_0000;
/// A server that lends a copy of a page of its own to each client that asks (`reply_lend`),
/// after checking that with no caller to answer nothing is lent.
pub const LENDER: u64 = 18;
/// A client of LENDER (badge in the start argument's second byte): lends into an occupied
/// slot and of a capability without GRANT are refused and answered; a lent copy has the rights
/// the server chose and shows its page, and the server serves on after the copy is deleted.
pub const BORROWER: u64 = 19;

/// Maps one page at addresses 1 GiB apart until the quota refuses (OutOfMemory), which the
/// page tables and mapping records it pays for must bring about; then waits on the
/// notification in `MAP_MANY_NOTIFICATION_SLOT`, unmaps everything, checks that the charges
/// came back by mapping as many again, and exits with `MAPPINGS_MADE + how many it made`.
/// With parameter (bits 8 and up) 1 it is the bystander instead: allocates, maps and uses one
/// page, and exits with 0.
pub const MAP_MANY: u64 = 20;
pub const MAPPINGS_MADE: u64 = 10_000;
pub const MAP_MANY_NOTIFICATION_SLOT: u64 = 8;
/// x86: the edu driver's setup, then the device's MSI aimed at exception vectors 14, 13 and 8
/// in turn (each raised once and acknowledged at the device); then a read of address 0, which
/// must kill the process as a page fault.
pub const EDU_EXCEPTION_VECTORS: u64 = 21;
/// The vectors EDU_EXCEPTION_VECTORS aims the MSI at.
pub const EXCEPTION_VECTORS_RAISED: [u8; 3] = [14, 13, 8];

/// HOSTILE_SYSCALLS: on x86 the PCI configuration ports (slot `IO_PORTS_SLOT`); on both, a
/// one-page MMIO region above 4 GiB, which no direct map covers.
pub const HIGH_MMIO_SLOT: u64 = 9;
pub const HIGH_MMIO_BASE: u64 = 0x80_0000_0000;

/// IO_PORTS: the PCI configuration ports (0xCF8..0xCFF) and the ECAM window.
pub const IO_PORTS_SLOT: u64 = 6;
pub const IO_PORTS_ECAM_SLOT: u64 = 7;

/// MEM_QUERIES: the DMA authority.
pub const AUTHORITY_SLOT: u64 = 5;

/// The endpoint (server: READ; clients: WRITE | GRANT, badged).
pub const ENDPOINT_SLOT: u64 = 1;
