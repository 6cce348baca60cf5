//! The server's capability space: which slot holds what. The root task (or a kernel test
//! acting as one) fills the fixed slots before starting the server; the server allocates the
//! rest itself.

/// Endpoint (READ) on which clients' requests arrive; clients hold badged copies.
pub const REQUESTS: u64 = 1;
/// DmaAuthority (CONTROL): lets the server pin memory and learn physical addresses.
pub const DMA_AUTHORITY: u64 = 2;
/// MMIO (READ, WRITE) of the IOMMU registers: the VT-d register page(s) on x86, the SMMUv3
/// register frame (both 64 KiB pages) on arm.
pub const IOMMU_REGISTERS: u64 = 3;
/// MMIO (READ, WRITE) of the PCI ECAM window.
pub const ECAM: u64 = 4;
/// MMIO of the PCI memory window; device capabilities must lie inside it.
pub const PCI_MMIO: u64 = 5;
/// IRQ (CONTROL) of the fault interrupt: the MSI line the VT-d fault event is programmed to
/// raise (x86), the SMMU's event-queue SPI (arm; the server checks the line against the
/// device tree with `irq_info`).
pub const FAULT_IRQ: u64 = 6;
/// Memory object (READ, WRITE) of one page: the status page the root task reads
/// (layout in `status`). Optional.
pub const STATUS_PAGE: u64 = 7;
/// IRQ (CONTROL) of the SMMU's global-error SPI (arm).
#[cfg(target_arch = "aarch64")]
pub const GERROR_IRQ: u64 = 8;
/// QEMU's fw_cfg device: on arm its MMIO (READ, WRITE), for the ACPI tables (the IORT); on
/// x86 its I/O ports 0x510-0x51b (READ, WRITE) and nothing else. On both it carries the
/// firmware-table override (`fwcfg::table_override`). Optional on x86.
pub const FW_CFG: u64 = 9;
/// Memory object (READ) of one page: each client's limits, from the system description
/// (layout in `limits`). Optional: without it every client gets the defaults.
pub const CLIENT_LIMITS: u64 = 15;
/// MSI line number of the capability in `FAULT_IRQ`: the server cannot ask the kernel which
/// line an IRQ capability serves, so the root task states it by filling the slot matching the
/// line: slot `FAULT_IRQ` serves line `MSI_LINE_BASE + FAULT_MSI_INDEX`.
#[cfg(target_arch = "x86_64")]
pub const FAULT_MSI_INDEX: u32 = 0;
/// First of up to `FIRMWARE_COUNT` read-only MMIO capabilities of firmware memory (x86: the
/// BIOS area holding the RSDP and the ranges holding ACPI tables; arm: the device tree's pages).
pub const FIRMWARE_FIRST: u64 = 16;
pub const FIRMWARE_COUNT: u64 = 16;
/// Slot `CLIENT_PROCESS_BASE + badge` holds a READ-only process capability of the client
/// whose endpoint badge is `badge` (1..=MAX_CLIENTS): the server watches it and tears the
/// client down when the process ends, whatever it was doing.
pub const CLIENT_PROCESS_BASE: u64 = 32;
/// Clients the server serves at once (badges 1..=MAX_CLIENTS).
pub const MAX_CLIENTS: u64 = 16;

/// The notification the fault IRQ and the client-process watches signal.
pub const EVENTS: u64 = 61;
/// Capabilities sent with requests are received into slots from `RECEIVE_BASE` up to
/// `RECEIVE_BASE + RECEIVE_SLOTS - 1`: a fault subscription keeps the slot it arrived in until
/// its client goes, any other capability is deleted after its request.
pub const RECEIVE_BASE: u64 = 64;
/// One subscription kept per client, and one to receive the next capability into.
pub const RECEIVE_SLOTS: u64 = MAX_CLIENTS + 1;
/// Slot `WINDOW_BASE + badge - 1` holds client `badge`'s message window: a page the server
/// allocates at connect, maps, and lends the client a copy of.
pub const WINDOW_BASE: u64 = RECEIVE_BASE + RECEIVE_SLOTS;
/// Slots the DMA allocator takes its memory objects into, upwards.
pub const DMA_FIRST: u64 = 100;
const _: () = assert!(WINDOW_BASE + MAX_CLIENTS <= DMA_FIRST);
pub const DMA_COUNT: u64 = 64;
/// Scratch slot of the in-server benchmark's memory.
pub const BENCH_MEMORY: u64 = 170;
/// The heap's memory object.
pub const HEAP: u64 = 171;
/// The event thread's stack.
pub const EVENT_STACK: u64 = 172;
/// arm: the IRQ capability of the SMMU's PRI queue interrupt (the device tree's `priq` SPI),
/// needed only by an SMMU with PRI (IDR0.PRI; QEMU's has none): the server binds it to
/// `PRIQ_EVENT_BIT` when it enabled the unit's PRI queue.
#[cfg(target_arch = "aarch64")]
pub const PRIQ_IRQ: u64 = 175;

/// x86: up to `MSI_POOL_COUNT` IRQ capabilities (CONTROL, GRANT, DERIVE) of MSI lines the
/// server hands to drivers with `msi_alloc`, in consecutive slots from `MSI_POOL_FIRST`
/// (the server asks the kernel which line each serves). Granting them into a driver needs
/// CONTROL on its process capability (`CLIENT_PROCESS_BASE + badge`).
#[cfg(target_arch = "x86_64")]
pub const MSI_POOL_FIRST: u64 = 176;
#[cfg(target_arch = "x86_64")]
pub const MSI_POOL_COUNT: u64 = 16;
#[cfg(target_arch = "x86_64")]
const _: () = assert!(EVENT_STACK < MSI_POOL_FIRST && MSI_POOL_FIRST + MSI_POOL_COUNT <= 256);

/// arm: slots where the server receives the IRQ capabilities of the MSIs the kernel routes
/// through the ITS (`msi_route`) before granting copies to drivers.
#[cfg(target_arch = "aarch64")]
pub const ITS_MSI_FIRST: u64 = 176;
#[cfg(target_arch = "aarch64")]
pub const ITS_MSI_COUNT: u64 = 64;
#[cfg(target_arch = "aarch64")]
const _: () = assert!(EVENT_STACK < ITS_MSI_FIRST && ITS_MSI_FIRST + ITS_MSI_COUNT <= 256);

/// Bits of the `EVENTS` notification: bit 0 is the fault IRQ, bit `badge` the end of client
/// `badge`'s process, and on arm the bit after the last badge the SMMU's global-error IRQ.
pub const FAULT_EVENT_BIT: u64 = 0;
#[cfg(target_arch = "aarch64")]
pub const GERROR_EVENT_BIT: u64 = MAX_CLIENTS + 1;
/// arm: the SMMU's PRI queue interrupt (after the kernel's revocation bit, `MAX_CLIENTS + 2`).
#[cfg(target_arch = "aarch64")]
pub const PRIQ_EVENT_BIT: u64 = MAX_CLIENTS + 3;

/// Kept in step with the kernel's MSI numbering (`0xFEE00000`, data = vector `0x50 + n` for
/// line `MSI_LINE_BASE + n`, `MSI_LINES` of them).
#[cfg(target_arch = "x86_64")]
pub const MSI_LINE_BASE: u64 = 1000;
#[cfg(target_arch = "x86_64")]
pub const MSI_LINES: u64 = 32;
#[cfg(target_arch = "x86_64")]
pub const MSI_VECTOR_BASE: u32 = 0x50;
#[cfg(target_arch = "x86_64")]
pub const MSI_ADDRESS: u64 = 0xFEE0_0000;
