//! Invalidation requests and their queued-invalidation descriptor encodings (VT-d spec 6.5.2).
//!
//! [`Invalidation`] names what must be forgotten; [`Invalidation::encode`] produces the 128-bit
//! descriptor. In scalable mode the queue holds 256-bit descriptors (IQA.DW=1) whose upper 128
//! bits are zero for every type used here, so [`Descriptor256`] is the same content widened.
//! The register-based invalidator interprets the same requests through CCMD/IOTLB_REG instead.

use core::mem::size_of;

/// A 128-bit invalidation descriptor (legacy-mode queue).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Descriptor128 {
    pub words: [u64; 2],
}
const _: () = assert!(size_of::<Descriptor128>() == 16);

/// A 256-bit invalidation descriptor (scalable-mode queue, IQA.DW=1).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Descriptor256 {
    pub words: [u64; 4],
}
const _: () = assert!(size_of::<Descriptor256>() == 32);

impl From<Descriptor128> for Descriptor256 {
    fn from(short: Descriptor128) -> Self {
        Self { words: [short.words[0], short.words[1], 0, 0] }
    }
}

/// Descriptor type codes, bits 3:0 of word 0 (spec 6.5.2).
pub mod kind {
    pub const CONTEXT_CACHE: u64 = 0x1;
    pub const IOTLB: u64 = 0x2;
    pub const DEVICE_TLB: u64 = 0x3;
    pub const INTERRUPT_ENTRY_CACHE: u64 = 0x4;
    pub const WAIT: u64 = 0x5;
    pub const PASID_IOTLB: u64 = 0x6;
    pub const PASID_CACHE: u64 = 0x7;
    pub const PASID_DEVICE_TLB: u64 = 0x8;
}

/// Wait descriptor flags (spec 6.5.2.8). Never set `IF` and `SW` together: QEMU 10.0.2 aborts
/// on such a descriptor.
pub mod wait {
    /// Interrupt flag: set ICS.IWC (and raise the completion event) when reached.
    pub const IF: u64 = 1 << 4;
    /// Status write: store the status data dword at the status address when reached.
    pub const SW: u64 = 1 << 5;
    /// Fence: later descriptors wait for this one to complete.
    pub const FN: u64 = 1 << 6;
}

/// The device-TLB address encoding for "every address" (spec 6.5.2.5: S=1 and all address
/// bits below bit 63 set).
pub const DEVICE_TLB_ALL: DeviceTlbRange = DeviceTlbRange { base: 0, pages_log2: 52 };

/// A naturally aligned range of 2^`pages_log2` 4 KiB pages starting at `base`, as device-TLB
/// invalidations express sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceTlbRange {
    pub base: u64,
    pub pages_log2: u8,
}

impl DeviceTlbRange {
    /// The ADDR field and S bit: with S=1 the lowest clear bit of ADDR[63:12] marks the size,
    /// so 2^n pages are written as the base with bits 12..12+n-1 set.
    fn encode(self) -> (u64, bool) {
        if self.pages_log2 == 0 {
            return (self.base & !0xfff, false);
        }
        let ones = (1u64 << (self.pages_log2 as u32 - 1)) - 1;
        ((self.base & !0xfff | ones << 12) & !0xfff & !(1 << 63), true)
    }
}

/// One invalidation request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalidation {
    /// Context cache, all entries.
    ContextGlobal,
    /// Context cache, entries tagged with `did`.
    ContextDomain { did: u16 },
    /// Context cache, the entry of `source` (function mask 0-3 ignores low function bits).
    ContextDevice { did: u16, source: u16, function_mask: u8 },
    /// IOTLB (and paging-structure caches), everything.
    IotlbGlobal,
    /// IOTLB, all mappings of `did`.
    IotlbDomain { did: u16 },
    /// IOTLB, the naturally aligned 2^`address_mask` pages at `address` in `did`.
    /// `leaf_only` sets the invalidation hint: only leaf entries changed.
    IotlbPages { did: u16, address: u64, address_mask: u8, leaf_only: bool },
    /// A device's ATS translation cache (spec 6.5.2.5).
    DeviceTlb { source: u16, physical_function: u16, queue_depth: u8, range: DeviceTlbRange },
    /// Interrupt entry cache, everything.
    InterruptEntryGlobal,
    /// Interrupt entry cache, the 2^`index_mask` entries from `index`.
    InterruptEntries { index: u16, index_mask: u8 },
    /// PASID cache, entries tagged with `did` (scalable mode).
    PasidCacheDomain { did: u16 },
    /// PASID cache, the entry of `pasid` tagged with `did`.
    PasidCachePasid { did: u16, pasid: u32 },
    /// PASID cache, everything.
    PasidCacheGlobal,
    /// PASID-based IOTLB, all non-global mappings of (`did`, `pasid`).
    PasidIotlbAll { did: u16, pasid: u32 },
    /// PASID-based IOTLB, 2^`address_mask` pages at `address` for (`did`, `pasid`).
    PasidIotlbPages { did: u16, pasid: u32, address: u64, address_mask: u8, leaf_only: bool },
    /// PASID-based device-TLB (spec 6.5.2.6).
    PasidDeviceTlb { source: u16, physical_function: u16, pasid: u32, queue_depth: u8, range: DeviceTlbRange },
}

const PASID_MASK: u64 = 0xf_ffff;

fn physical_function_bits(pfsid: u16) -> u64 {
    // PFSID is split: bits 3:0 at 15:12, bits 15:4 at 63:52.
    (pfsid as u64 & 0xf) << 12 | (pfsid as u64 >> 4) << 52
}

impl Invalidation {
    /// The 128-bit descriptor for this request.
    pub fn encode(&self) -> Descriptor128 {
        let words = match *self {
            // Context-cache invalidate (6.5.2.1): G at 5:4 (1 global, 2 domain, 3 device),
            // DID 31:16, SID 47:32, FM 49:48.
            Invalidation::ContextGlobal => [kind::CONTEXT_CACHE | 1 << 4, 0],
            Invalidation::ContextDomain { did } => [kind::CONTEXT_CACHE | 2 << 4 | (did as u64) << 16, 0],
            Invalidation::ContextDevice { did, source, function_mask } => [
                kind::CONTEXT_CACHE
                    | 3 << 4
                    | (did as u64) << 16
                    | (source as u64) << 32
                    | (function_mask as u64 & 3) << 48,
                0,
            ],
            // IOTLB invalidate (6.5.2.3): G at 5:4 (1 global, 2 domain, 3 page), DID 31:16;
            // word 1: ADDR 63:12, IH bit 6, AM 5:0.
            Invalidation::IotlbGlobal => [kind::IOTLB | 1 << 4, 0],
            Invalidation::IotlbDomain { did } => [kind::IOTLB | 2 << 4 | (did as u64) << 16, 0],
            Invalidation::IotlbPages { did, address, address_mask, leaf_only } => [
                kind::IOTLB | 3 << 4 | (did as u64) << 16,
                address & !0xfff | (leaf_only as u64) << 6 | address_mask as u64 & 0x3f,
            ],
            // Device-TLB invalidate (6.5.2.5): PFSID split, MIP/queue depth 20:16, SID 47:32;
            // word 1: ADDR 63:12, S bit 0.
            Invalidation::DeviceTlb { source, physical_function, queue_depth, range } => {
                let (address, size) = range.encode();
                [
                    kind::DEVICE_TLB
                        | physical_function_bits(physical_function)
                        | (queue_depth as u64 & 0x1f) << 16
                        | (source as u64) << 32,
                    address | size as u64,
                ]
            }
            // Interrupt entry cache invalidate (6.5.2.7): G bit 4 (0 global, 1 index),
            // IM 31:27, IIDX 47:32.
            Invalidation::InterruptEntryGlobal => [kind::INTERRUPT_ENTRY_CACHE, 0],
            Invalidation::InterruptEntries { index, index_mask } => [
                kind::INTERRUPT_ENTRY_CACHE
                    | 1 << 4
                    | (index_mask as u64 & 0x1f) << 27
                    | (index as u64) << 32,
                0,
            ],
            // PASID-cache invalidate (6.5.2.2): G at 5:4 (0 domain, 1 PASID, 3 global),
            // DID 31:16, PASID 51:32.
            Invalidation::PasidCacheDomain { did } => [kind::PASID_CACHE | (did as u64) << 16, 0],
            Invalidation::PasidCachePasid { did, pasid } => [
                kind::PASID_CACHE | 1 << 4 | (did as u64) << 16 | (pasid as u64 & PASID_MASK) << 32,
                0,
            ],
            Invalidation::PasidCacheGlobal => [kind::PASID_CACHE | 3 << 4, 0],
            // PASID-based IOTLB invalidate (6.5.2.4): G at 5:4 (2 all of PASID, 3 page-selective
            // within PASID), DID 31:16, PASID 51:32; word 1 as the IOTLB descriptor.
            Invalidation::PasidIotlbAll { did, pasid } => [
                kind::PASID_IOTLB | 2 << 4 | (did as u64) << 16 | (pasid as u64 & PASID_MASK) << 32,
                0,
            ],
            Invalidation::PasidIotlbPages { did, pasid, address, address_mask, leaf_only } => [
                kind::PASID_IOTLB | 3 << 4 | (did as u64) << 16 | (pasid as u64 & PASID_MASK) << 32,
                address & !0xfff | (leaf_only as u64) << 6 | address_mask as u64 & 0x3f,
            ],
            // PASID-based device-TLB invalidate (6.5.2.6): queue depth 8:4, PFSID split, SID
            // 31:16, PASID 51:32; word 1: ADDR 63:12, S bit 11.
            Invalidation::PasidDeviceTlb { source, physical_function, pasid, queue_depth, range } => {
                let (address, size) = range.encode();
                [
                    kind::PASID_DEVICE_TLB
                        | (queue_depth as u64 & 0x1f) << 4
                        | physical_function_bits(physical_function)
                        | (source as u64) << 16
                        | (pasid as u64 & PASID_MASK) << 32,
                    address | (size as u64) << 11,
                ]
            }
        };
        Descriptor128 { words }
    }

    /// Whether this request is only meaningful in scalable mode (PASID-granular caches).
    pub fn is_pasid_granular(&self) -> bool {
        matches!(
            self,
            Invalidation::PasidCacheDomain { .. }
                | Invalidation::PasidCachePasid { .. }
                | Invalidation::PasidCacheGlobal
                | Invalidation::PasidIotlbAll { .. }
                | Invalidation::PasidIotlbPages { .. }
                | Invalidation::PasidDeviceTlb { .. }
        )
    }
}

/// A wait descriptor that stores `status_data` at `status_address` (4-byte aligned) once every
/// earlier descriptor has completed. SW only, never IF: QEMU aborts on SW+IF.
pub fn status_write_wait(status_address: u64, status_data: u32) -> Descriptor128 {
    Descriptor128 {
        words: [kind::WAIT | wait::SW | wait::FN | (status_data as u64) << 32, status_address & !3],
    }
}

/// Smallest naturally aligned block of pages covering `[address, address + size)`: returns
/// the block's base and its size as a power of two in pages (the AM field).
pub fn covering_page_block(address: u64, size: u64) -> (u64, u8) {
    let first = address >> 12;
    let last = address.saturating_add(size.max(1) - 1) >> 12;
    let mut mask = 0u8;
    while mask < 52 && first >> mask != last >> mask {
        mask += 1;
    }
    ((first >> mask) << mask << 12, mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_descriptors() {
        assert_eq!(Invalidation::ContextGlobal.encode().words, [0x11, 0]);
        assert_eq!(Invalidation::ContextDomain { did: 5 }.encode().words, [0x5_0021, 0]);
        let device = Invalidation::ContextDevice { did: 0x1234, source: 0x0018, function_mask: 0 };
        assert_eq!(device.encode().words, [0x0018_1234_0031, 0]);
    }

    #[test]
    fn iotlb_descriptors() {
        assert_eq!(Invalidation::IotlbGlobal.encode().words, [0x12, 0]);
        assert_eq!(Invalidation::IotlbDomain { did: 7 }.encode().words, [0x7_0022, 0]);
        let pages = Invalidation::IotlbPages { did: 7, address: 0x20_0000, address_mask: 9, leaf_only: true };
        assert_eq!(pages.encode().words, [0x7_0032, 0x20_0000 | 1 << 6 | 9]);
    }

    #[test]
    fn pasid_descriptors() {
        let pc = Invalidation::PasidCachePasid { did: 2, pasid: 0x12345 };
        assert_eq!(pc.encode().words, [0x1_2345_0002_0017, 0]);
        assert_eq!(Invalidation::PasidCacheGlobal.encode().words, [0x37, 0]);
        assert_eq!(Invalidation::PasidCacheDomain { did: 3 }.encode().words, [0x3_0007, 0]);
        let all = Invalidation::PasidIotlbAll { did: 2, pasid: 5 };
        assert_eq!(all.encode().words, [0x5_0002_0026, 0]);
        let pages = Invalidation::PasidIotlbPages { did: 2, pasid: 5, address: 0x1000, address_mask: 0, leaf_only: false };
        assert_eq!(pages.encode().words, [0x5_0002_0036, 0x1000]);
        assert!(pages.is_pasid_granular());
        assert!(!Invalidation::IotlbGlobal.is_pasid_granular());
    }

    #[test]
    fn interrupt_entry_descriptors() {
        assert_eq!(Invalidation::InterruptEntryGlobal.encode().words, [0x4, 0]);
        let one = Invalidation::InterruptEntries { index: 0x21, index_mask: 0 };
        assert_eq!(one.encode().words, [0x21_0000_0014, 0]);
        let block = Invalidation::InterruptEntries { index: 0x40, index_mask: 3 };
        assert_eq!(block.encode().words, [0x40_1800_0014, 0]);
    }

    #[test]
    fn device_tlb_descriptors() {
        let one_page = Invalidation::DeviceTlb {
            source: 0x0100,
            physical_function: 0x0100,
            queue_depth: 0,
            range: DeviceTlbRange { base: 0x5000, pages_log2: 0 },
        };
        assert_eq!(one_page.encode().words, [0x3 | 0x10 << 52 | 0x0100 << 32, 0x5000]);
        // 16 pages at 0x10000: bits 12..14 set, S=1.
        let block = Invalidation::DeviceTlb {
            source: 0x0100,
            physical_function: 0x0123,
            queue_depth: 4,
            range: DeviceTlbRange { base: 0x10000, pages_log2: 4 },
        };
        let encoded = block.encode().words;
        assert_eq!(encoded[0], 0x3 | 0x3 << 12 | 0x12 << 52 | 4 << 16 | 0x0100 << 32);
        assert_eq!(encoded[1], 0x17001);
        let all = Invalidation::DeviceTlb { source: 1, physical_function: 1, queue_depth: 0, range: DEVICE_TLB_ALL };
        assert_eq!(all.encode().words[1], 0x7fff_ffff_ffff_f001);
        let pasid = Invalidation::PasidDeviceTlb {
            source: 0x0100,
            physical_function: 0x0100,
            pasid: 9,
            queue_depth: 2,
            range: DeviceTlbRange { base: 0x3000, pages_log2: 0 },
        };
        assert_eq!(pasid.encode().words, [0x8 | 2 << 4 | 0x10 << 52 | 0x0100 << 16 | 9 << 32, 0x3000]);
    }

    #[test]
    fn wait_descriptor_has_status_write_and_never_interrupt() {
        let descriptor = status_write_wait(0x7000_1004, 0xdead_beef);
        assert_eq!(descriptor.words, [0xdead_beef_0000_0065, 0x7000_1004]);
        assert_eq!(descriptor.words[0] & wait::IF, 0);
        let wide = Descriptor256::from(descriptor);
        assert_eq!(wide.words, [descriptor.words[0], descriptor.words[1], 0, 0]);
    }

    #[test]
    fn covering_blocks() {
        assert_eq!(covering_page_block(0x1000, 0x1000), (0x1000, 0));
        assert_eq!(covering_page_block(0x1000, 0x2000), (0x0, 2));
        assert_eq!(covering_page_block(0x20_0000, 0x20_0000), (0x20_0000, 9));
        assert_eq!(covering_page_block(0x1fff, 2), (0x0, 2));
        assert_eq!(covering_page_block(0x0, 0x1000_0000), (0x0, 16));
    }
}
