//! Word indices of the status page: counters the server keeps in a page the root task shares
//! with it, so the root task (and the kernel tests acting as one) can observe the server
//! without a protocol.

/// 1 once discovery and bring-up finished, 2 if they failed.
pub const STATE: usize = 0;
pub const STATE_READY: u64 = 1;
pub const STATE_FAILED: u64 = 2;
/// 1 if the firmware describes an IOMMU: a DMAR table (x86), an SMMUv3 node (arm).
pub const IOMMU_DESCRIBED: usize = 1;
/// IOMMU units brought up.
pub const UNITS: usize = 2;
/// PCI functions found.
pub const PCI_FUNCTIONS: usize = 3;
/// The identification registers of unit 0: CAP and ECAP of a VT-d unit, IDR0 and IDR1 of an
/// SMMUv3.
pub const UNIT0_CAP: usize = 4;
pub const UNIT0_ECAP: usize = 5;
/// Translation used on unit 0: 1 legacy second-level, 2 scalable second-level, 3 scalable
/// first-level (VT-d); 4 stage 1, 5 stage 2 (SMMUv3).
pub const UNIT0_MODE: usize = 6;
/// Distinct client pages the object model holds pinned.
pub const PINNED_PAGES: usize = 7;
/// Clients connected now.
pub const OPEN_CLIENTS: usize = 8;
/// Clients torn down because their process ended.
pub const CLIENTS_REAPED: usize = 9;
/// DMA faults and refused interrupt requests the hardware reported.
pub const FAULTS: usize = 10;
/// Faults with no fault queue to go to (e.g. devices no client bound).
pub const UNROUTED_FAULTS: usize = 11;
/// The last fault: requester ID, address (of a refused interrupt: the interrupt index it
/// named), access (1 read, 2 write), reason code (VT-d
/// fault reason, or SMMUv3 event number).
pub const LAST_FAULT_RID: usize = 12;
pub const LAST_FAULT_ADDRESS: usize = 13;
pub const LAST_FAULT_ACCESS: usize = 14;
pub const LAST_FAULT_REASON: usize = 15;
/// Requests served.
pub const REQUESTS: usize = 16;
/// Pins the server's memory source holds in the kernel for client memory.
pub const KERNEL_PINS: usize = 17;

/// Whether the ACPI IORT (read through fw_cfg) describes the same SMMUs and StreamIDs as the
/// device tree (arm): 0 not read, 1 agrees (no IORT agrees with a tree without SMMUs), 2 not.
#[cfg(target_arch = "aarch64")]
pub const IORT_CHECK: usize = 18;
#[cfg(target_arch = "aarch64")]
pub const IORT_UNREAD: u64 = 0;
#[cfg(target_arch = "aarch64")]
pub const IORT_AGREES: u64 = 1;
#[cfg(target_arch = "aarch64")]
pub const IORT_DISAGREES: u64 = 2;

/// Objects (IOAS, HWPT, device, fault queue) of all clients in the object model.
pub const OBJECTS: usize = 19;

/// What all clients hold against their limits, summed (`iommu_core::Usage`): handles, mapped
/// areas, PASIDs, fault queues, HWPTs (each a domain with its page tables), and estimated
/// server heap bytes. All zero once every client is gone.
pub const CHARGED_HANDLES: usize = 20;
pub const CHARGED_AREAS: usize = 21;
pub const CHARGED_PASIDS: usize = 22;
pub const CHARGED_FAULT_QUEUES: usize = 23;
pub const CHARGED_DOMAINS: usize = 24;
pub const CHARGED_BYTES: usize = 25;

/// Pages the kernel had quarantined for an ended server (its tables, queues and pinned client
/// pages) that this server released once its bring-up had blocked every device.
pub const QUARANTINE_RELEASED: usize = 26;

/// Devices reset (`pci::reset`) after they left an owner, or when a new server took them
/// over, with their configuration restored before their next owner.
pub const RESETS: usize = 29;
/// Devices that left an owner and were only quiesced (bus mastering and MSI off): they have no
/// reset method, or their reset failed.
pub const QUIESCED_WITHOUT_RESET: usize = 30;

/// The firmware-table override (a DMAR on x86, an IORT on arm, handed over through fw_cfg):
/// 0 none offered, 1 taken instead of the machine's own table, 2 rejected (the machine's used).
pub const TABLE_OVERRIDE: usize = 32;
pub const TABLE_OVERRIDE_NONE: u64 = 0;
pub const TABLE_OVERRIDE_TAKEN: u64 = 1;
pub const TABLE_OVERRIDE_REJECTED: u64 = 2;
/// Devices with firmware-required identity maps (RMRR, IORT RMR) kept mapped from takeover on.
pub const DIRECT_DEVICES: usize = 33;

/// Words the page holds.
pub const WORDS: usize = 34;
