//! The kernel's system-call ABI, shared by the kernel and user programs.
//!
//! Calling convention. x86_64: `syscall` with the number in rax and arguments in rdi, rsi, rdx,
//! r10, r8, r9; results in rax (status), rdi, rsi, rdx, r10, r8, r9. aarch64: `svc #0` with the
//! number in x8, arguments in x0..x5; results in x0 (status), x1..x6. A status of 0 is success;
//! anything else is an [`Error`]. Like a function call of the platform's C ABI, a system call
//! may change the caller-saved registers (x86_64: rax, rcx, rdx, rsi, rdi, r8..r11; aarch64:
//! x0..x18) and preserves the others; the kernel need not save what it may change. Those that
//! carry no result hold values the calling thread had or received before, never the kernel's.
//!
//! Capabilities are named by slot numbers in the caller's capability space (`CSPACE_SLOTS`
//! slots). Each capability names one kernel object and carries [`Rights`].
#![cfg_attr(not(test), no_std)]

mod syscall;
pub use syscall::Syscall;

/// Priority the kernel starts threads at (0 lowest .. 7 highest); a thread may create threads
/// up to its own priority.
pub const START_PRIORITY: u64 = 4;

/// Slots in every process's capability space.
pub const CSPACE_SLOTS: u64 = 256;
/// Message words carried by `call`, `recv` and `reply`.
pub const MSG_WORDS: usize = 4;
/// "No capability" in a slot argument.
pub const NO_CAP: u64 = u64::MAX;
pub const MAX_DEBUG_WRITE: usize = 256;
/// Pages one `mem_alloc` may request.
pub const MAX_MEMORY_OBJECT_PAGES: u64 = 4096;
/// Most events one `msi_route` maps (PCI multiple-message MSI: 32).
pub const MAX_MSI_EVENTS: u64 = 32;
/// Pins one process may hold at once (see `Syscall::MemPin`).
pub const MAX_PINS: usize = 8192;
/// Pages one `mem_pin_range` may pin.
pub const MAX_PIN_RANGE: u64 = 512;
/// Words of one `revocation_read` record: pin, object serial (0: a `cap_watch`), first page,
/// pages. An object and a page range, so that other changes of what a device may reach
/// (an address space's unmap) fit the same record.
pub const REVOCATION_RECORD_WORDS: usize = 4;
/// The serial word of a `revocation_read` record that reports a watched address space's
/// change (`Syscall::AddressSpaceWatch`): memory-object serials never reach it.
pub const ADDRESS_SPACE_CHANGE: u64 = u64::MAX;
/// Watches (`Syscall::AddressSpaceWatch`) one address space may have at a time: one per
/// device binding it, so a process can be shared with a few devices at once.
pub const MAX_ADDRESS_SPACE_WATCHES: usize = 4;
/// Records one `revocation_read` hands out at most.
pub const MAX_REVOCATION_RECORDS: u64 = 64;

/// Kind of kernel object a capability names (returned by `cap_info`).
#[repr(u64)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectType {
    Endpoint = 1,
    Notification = 2,
    Memory = 3,
    Mmio = 4,
    Irq = 5,
    Process = 6,
    /// Authority to pin memory objects and learn their physical addresses (the IOMMU server's).
    DmaAuthority = 7,
    /// A range of x86 I/O ports.
    IoPorts = 8,
    /// A process's address space, to share with devices (`Syscall::AddressSpaceWatch`).
    AddressSpace = 9,
}

impl ObjectType {
    pub fn from_u64(v: u64) -> Option<ObjectType> {
        Some(match v {
            1 => ObjectType::Endpoint,
            2 => ObjectType::Notification,
            3 => ObjectType::Memory,
            4 => ObjectType::Mmio,
            5 => ObjectType::Irq,
            6 => ObjectType::Process,
            7 => ObjectType::DmaAuthority,
            8 => ObjectType::IoPorts,
            9 => ObjectType::AddressSpace,
            _ => return None,
        })
    }
}

bitflags::bitflags! {
    /// Rights a capability carries. A derived capability has a subset of its parent's.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Rights: u64 {
        /// Read the object: map memory/MMIO readable, receive on an endpoint, wait on a notification.
        const READ = 1 << 0;
        /// Write: map writable, send/call on an endpoint, signal a notification, ack an IRQ.
        const WRITE = 1 << 1;
        /// Map memory executable.
        const EXECUTE = 1 << 2;
        /// Transfer this capability to another process (IPC or grant).
        const GRANT = 1 << 3;
        /// Derive copies (with fewer rights) and revoke them.
        const DERIVE = 1 << 4;
        /// Control the object: bind an IRQ, kill a process, pin memory (with DmaAuthority).
        const CONTROL = 1 << 5;
    }
}

/// Error codes returned in the status register. Stable numbers.
#[repr(u64)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The system call number is not known.
    UnknownSyscall = 1,
    /// An argument is out of range (length above its limit, reserved bits set, bad flags).
    InvalidArgument = 2,
    /// A user pointer or virtual address names memory the caller may not use that way.
    BadAddress = 3,
    /// The slot number is out of range or the slot is empty.
    InvalidCapability = 4,
    /// The capability names an object of another type than the call needs.
    WrongType = 5,
    /// The capability lacks a right the call needs.
    MissingRights = 6,
    /// The destination slot is occupied.
    SlotOccupied = 7,
    /// Kernel memory, the caller's memory quota or a per-process limit is exhausted.
    OutOfMemory = 8,
    /// The virtual range is already (partly) mapped.
    AlreadyMapped = 9,
    /// The virtual range is not mapped.
    NotMapped = 10,
    /// An index or range lies outside the object.
    OutOfRange = 11,
    /// The object is in a state that does not allow the call (e.g. IRQ already bound, no caller
    /// to reply to, process already started).
    InvalidState = 12,
    /// The peer went away (endpoint deleted, caller killed before the reply).
    PeerGone = 13,
    /// Nothing to receive (non-blocking calls).
    WouldBlock = 14,
}

impl Error {
    pub fn from_status(status: u64) -> Option<Error> {
        use Error::*;
        Some(match status {
            1 => UnknownSyscall,
            2 => InvalidArgument,
            3 => BadAddress,
            4 => InvalidCapability,
            5 => WrongType,
            6 => MissingRights,
            7 => SlotOccupied,
            8 => OutOfMemory,
            9 => AlreadyMapped,
            10 => NotMapped,
            11 => OutOfRange,
            12 => InvalidState,
            13 => PeerGone,
            14 => WouldBlock,
            _ => return None,
        })
    }
}

bitflags::bitflags! {
    /// Flags of `mem_alloc`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct MemFlags: u64 {
        /// Physically contiguous pages, the base aligned to the size rounded up to a power of
        /// two (at most `MAX_CONTIGUOUS_PAGES` pages): for IOMMU tables and queues.
        const CONTIGUOUS = 1 << 0;
    }
}

bitflags::bitflags! {
    /// Flags of `notify_wait` and `notify_poll`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct WaitFlags: u64 {
        /// Acknowledge the IRQ capability in the third argument first (as `irq_ack`): a
        /// thread that services a device and waits for its next interrupt enters the kernel
        /// once rather than twice.
        const ACK_IRQ = 1 << 0;
    }
}

/// Largest contiguous memory object, in pages (4 MiB).
pub const MAX_CONTIGUOUS_PAGES: u64 = 1024;

bitflags::bitflags! {
    /// Flags of `mem_map` (readable is implied).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct MapFlags: u64 {
        const WRITE = 1 << 0;
        const EXECUTE = 1 << 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_round_trip_and_zero_is_success() {
        for status in 1..=14 {
            let e = Error::from_status(status).expect("every code in 1..=14 is defined");
            assert_eq!(e as u64, status);
        }
        assert_eq!(Error::from_status(0), None);
        assert_eq!(Error::from_status(15), None);
    }

    #[test]
    fn rights_subset_logic() {
        let rw = Rights::READ.union(Rights::WRITE);
        assert!(rw.contains(Rights::READ));
        assert!(!Rights::READ.contains(rw));
        assert_eq!(rw.intersection(Rights::WRITE.union(Rights::GRANT)), Rights::WRITE);
        assert_eq!(Rights::all().bits(), 0x3f, "bit 5 (CONTROL) is the highest right");
        assert_eq!(Rights::from_bits(1 << 6), None, "an undefined right is refused");
    }

    #[test]
    fn flag_words_refuse_undefined_bits() {
        assert_eq!(MemFlags::from_bits(1), Some(MemFlags::CONTIGUOUS));
        assert_eq!(MemFlags::from_bits(2), None);
        assert_eq!(MapFlags::from_bits(3), Some(MapFlags::WRITE | MapFlags::EXECUTE));
        assert_eq!(MapFlags::from_bits(4), None);
    }

    #[test]
    fn object_types_round_trip() {
        for v in 1..=9 {
            assert_eq!(ObjectType::from_u64(v).map(|t| t as u64), Some(v));
        }
        assert_eq!(ObjectType::from_u64(0), None);
        assert_eq!(ObjectType::from_u64(10), None);
    }
}

/// What the root task finds at start: every boot capability, and a *directory* page that says
/// which slot holds which. The root task is the one process the kernel starts by itself; it
/// starts everything else from its static system description.
pub mod boot_directory {
    /// The directory: a one-page memory object (READ).
    pub const DIRECTORY_SLOT: u64 = 1;
    /// Boot capabilities occupy slots from here, in directory order.
    pub const FIRST_CAP_SLOT: u64 = 16;
    /// Words of one entry: slot, object type, value (MMIO base, IRQ line, first I/O port, 0),
    /// size (MMIO bytes, I/O ports, 0), and the name in two words (UTF-8, zero padded).
    pub const ENTRY_WORDS: usize = 6;
    /// Word 0 of the page holds the number of entries; entry `i` starts at word
    /// `ENTRY_WORDS * (i + 1)`.
    pub const MAX_ENTRIES: usize = 4096 / (ENTRY_WORDS * 8) - 1;
    /// Longest name.
    pub const NAME_BYTES: usize = 16;
    /// Boot image numbers for `process_create`.
    pub mod image {
        pub const USERTEST: u64 = 0;
        pub const IOMMU_SERVER: u64 = 1;
        pub const EDU_DRIVER: u64 = 2;
        pub const ROOT: u64 = 3;
    }
    /// The root task's start argument: which of its system descriptions it carries out.
    pub mod description {
        /// Two edu devices on the host bridge's bus, each to a driver (every QEMU configuration).
        pub const FLAT: u64 = 0;
        /// An edu device behind a PCIe root port and one behind a PCIe-to-PCI bridge, each to
        /// its own driver (the machine of `qemu-run.sh --topology bridges`).
        pub const BRIDGES: u64 = 1;
        /// The two functions behind that machine's PCIe-to-PCI bridge, each to another driver:
        /// one isolation group for two drivers, which the root task must refuse.
        pub const ONE_GROUP_TWO_DRIVERS: u64 = 2;
        /// The root task's exit status when it refuses its description (two drivers would get
        /// functions of one isolation group).
        pub const REFUSED: u64 = 2;
        /// The root task's exit status when the machine lacks a device its description names.
        pub const MISSING_DEVICE: u64 = 3;
    }
}
