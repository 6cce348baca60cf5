//! The server's virtual address space (the image sits at 4 MiB, the stack just below the top).

/// The heap.
pub const HEAP: u64 = 0x1000_0000;
pub const HEAP_PAGES: u64 = 1024;
/// Scratch window for reading firmware memory one piece at a time.
pub const FIRMWARE_WINDOW: u64 = 0x2000_0000;
pub const FIRMWARE_WINDOW_PAGES: u64 = 64;
/// The IOMMU registers (VT-d register pages, or the SMMUv3's 128 KiB register frame).
pub const IOMMU_REGISTERS: u64 = 0x2100_0000;
/// QEMU's fw_cfg registers (arm).
#[cfg(target_arch = "aarch64")]
pub const FW_CFG: u64 = 0x2200_0000;
/// PCI configuration space: bus `b` of the ECAM window at `ECAM + b MiB`.
pub const ECAM: u64 = 0x3000_0000;
/// DMA memory for IOMMU tables, handed out upwards.
pub const DMA: u64 = 0x4000_0000;
/// Client message windows: client `badge` at `WINDOWS + badge pages`.
pub const WINDOWS: u64 = 0x5000_0000;
/// The status page.
pub const STATUS: u64 = 0x5100_0000;
/// The event thread's stack.
pub const EVENT_STACK: u64 = 0x5200_0000;
pub const EVENT_STACK_PAGES: u64 = 16;
/// Where the server maps the start of a client's memory object that a dirty bitmap is written
/// into (`hwpt_get_dirty_bitmap_into`), for the duration of the request: room for the largest
/// bitmap (2^24 pages, 2 MiB).
pub const DIRTY_BITMAP_WINDOW: u64 = 0x5300_0000;
pub const DIRTY_BITMAP_WINDOW_PAGES: u64 = 512;
/// Where a request's memory object is mapped, read-only, while the server copies words out
/// of it (`hwpt_invalidate` entries: 4 KiB of them, so at most two pages).
pub const REQUEST_MEMORY: u64 = 0x5800_0000;
pub const REQUEST_MEMORY_PAGES: u64 = 2;

/// The client limits page, while the server reads it at start.
pub const CLIENT_LIMITS: u64 = 0x5900_0000;
pub const PAGE: u64 = 4096;
