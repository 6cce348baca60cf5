//! Invalidation requests and their queued-invalidation descriptor encodings (VT-d spec 6.5.2).
//!
//! [`Invalidation`] names what must be forgotten; [`Invalidation::encode`] produces the 128-bit
//! descriptor. In scalable mode the queue holds 256-bit descriptors (IQA.DW=1) whose upper 128
//! bits are zero for every type used here, so [`Descriptor256`] is the same content widened.
//! The register-based invalidator interprets the same requests through CCMD/IOTLB_REG instead.

use core::mem::size_of;

use hwio::bits::{Layout, ReservedBitsSet};
use hwio::{address_fields, flag_fields, numeric_fields, reserved_bits};

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
    pub const PAGE_GROUP_RESPONSE: u64 = 0x9;
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

impl Descriptor128 {
    numeric_fields! {
        /// Type[3:0] (bits 3:0); Type[6:4] (bits 11:9) is zero for every type defined here.
        kind, set_kind: word 0, bits 0, width 4;
    }

    /// The reserved bits of this descriptor's type found set; for a type this driver does not
    /// define, every bit set (type 0, which no descriptor has, reported as its empty type
    /// field). Every descriptor the driver queues passes through here, so this is one table
    /// look-up rather than a dispatch on the type.
    #[inline(always)]
    pub fn reserved_bits_set(&self) -> Option<ReservedBitsSet> {
        let reserved = RESERVED_BY_KIND[self.kind() as usize];
        let found = [self.words[0] & reserved[0], self.words[1] & reserved[1]];
        if found[0] | found[1] == 0 && self.kind() != 0 {
            return None;
        }
        let word = if found[0] == 0 && found[1] != 0 { 1 } else { 0 };
        Some(ReservedBitsSet { word, bits: found[word] })
    }
}

/// Per type code, the reserved bits of its layout; every bit for codes this driver does not
/// define.
const RESERVED_BY_KIND: [[u64; 2]; 16] = {
    const fn words(reserved: &[u64]) -> [u64; 2] {
        [reserved[0], reserved[1]]
    }
    let mut table = [[u64::MAX; 2]; 16];
    table[kind::CONTEXT_CACHE as usize] = words(ContextCacheDescriptor::RESERVED);
    table[kind::IOTLB as usize] = words(IotlbDescriptor::RESERVED);
    table[kind::DEVICE_TLB as usize] = words(DeviceTlbDescriptor::RESERVED);
    table[kind::INTERRUPT_ENTRY_CACHE as usize] = words(InterruptEntryDescriptor::RESERVED);
    table[kind::WAIT as usize] = words(WaitDescriptor::RESERVED);
    table[kind::PASID_IOTLB as usize] = words(PasidIotlbDescriptor::RESERVED);
    table[kind::PASID_CACHE as usize] = words(PasidCacheDescriptor::RESERVED);
    table[kind::PASID_DEVICE_TLB as usize] = words(PasidDeviceTlbDescriptor::RESERVED);
    table[kind::PAGE_GROUP_RESPONSE as usize] = words(PageGroupResponseDescriptor::RESERVED);
    table
};

/// Declares one descriptor type's 128-bit layout: a new one carries its type code and every
/// other field zero; it converts into the [`Descriptor128`] the queue takes.
macro_rules! descriptor_layout {
    ($(#[$doc:meta])* $name:ident, $kind:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name {
            pub words: [u64; 2],
        }

        impl $name {
            pub fn new() -> Self {
                let mut descriptor = Descriptor128::default();
                descriptor.set_kind($kind);
                Self { words: descriptor.words }
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl $name {
            /// The finished descriptor, as the queue takes it.
            #[inline(always)]
            pub fn descriptor(&self) -> Descriptor128 {
                Descriptor128 { words: self.words }
            }
        }
    };
}

descriptor_layout!(
    /// Context-cache invalidate descriptor (6.5.2.1).
    ContextCacheDescriptor,
    kind::CONTEXT_CACHE
);

impl ContextCacheDescriptor {
    numeric_fields! {
        /// G (bits 5:4): 1 global, 2 domain-selective, 3 device-selective.
        granularity, set_granularity: word 0, bits 4, width 2;
        /// DID (bits 31:16).
        did, set_did: word 0, bits 16, width 16;
        /// SID (bits 47:32).
        source, set_source: word 0, bits 32, width 16;
        /// FM (bits 49:48): function bits of SID to ignore.
        function_mask, set_function_mask: word 0, bits 48, width 2;
    }
}

reserved_bits! {
    ContextCacheDescriptor, words 2:
    word 0, bits 8:6;
    word 0, bits 15:12;
    word 0, bits 63:50;
    word 1, bits 63:0;
}

descriptor_layout!(
    /// IOTLB invalidate descriptor (6.5.2.3).
    IotlbDescriptor,
    kind::IOTLB
);

/// Word 1 of the IOTLB and PASID-based IOTLB descriptors: AM 5:0, IH bit 6, ADDR 63:12.
macro_rules! page_selective_fields {
    () => {
        numeric_fields! {
            /// AM (bits 69:64): the range is 2^AM pages, naturally aligned.
            address_mask, set_address_mask: word 1, bits 0, width 6;
        }
        flag_fields! {
            /// IH (bit 70): only leaf entries changed.
            leaf_only, set_leaf_only: word 1, bit 6;
        }
        address_fields! {
            /// ADDR (bits 127:76).
            address, set_address: word 1, bits 63:12;
        }
    };
}

impl IotlbDescriptor {
    flag_fields! {
        /// DW (bit 6): drain writes. Where CAP.DWD says the unit drains, the invalidation
        /// completes only after every write translated through the invalidated entries is done.
        drain_writes, set_drain_writes: word 0, bit 6;
        /// DR (bit 7): drain reads, likewise (CAP.DRD).
        drain_reads, set_drain_reads: word 0, bit 7;
    }
    numeric_fields! {
        /// G (bits 5:4): 1 global, 2 domain-selective, 3 page-selective within the domain.
        granularity, set_granularity: word 0, bits 4, width 2;
        /// DID (bits 31:16).
        did, set_did: word 0, bits 16, width 16;
    }
    page_selective_fields!();
}

reserved_bits! {
    IotlbDescriptor, words 2:
    /// Bits 7:6 are DW/DR (drain writes/reads); bit 8 is reserved.
    word 0, bits 8:8;
    word 0, bits 15:12;
    word 0, bits 63:32;
    word 1, bits 11:7;
}

descriptor_layout!(
    /// Device-TLB invalidate descriptor (6.5.2.5).
    DeviceTlbDescriptor,
    kind::DEVICE_TLB
);

/// PFSID is split: bits 3:0 at 15:12 of word 0, bits 15:4 at 63:52 (6.5.2.5, 6.5.2.6).
macro_rules! physical_function_fields {
    () => {
        numeric_fields! {
            physical_function_low, set_physical_function_low: word 0, bits 12, width 4;
            physical_function_high, set_physical_function_high: word 0, bits 52, width 12;
        }
        /// PFSID, reassembled.
        pub const fn physical_function(&self) -> u16 {
            (self.physical_function_low() | self.physical_function_high() << 4) as u16
        }
        pub fn set_physical_function(&mut self, pfsid: u16) -> &mut Self {
            self.set_physical_function_low(pfsid as u64 & 0xf).set_physical_function_high(pfsid as u64 >> 4)
        }
    };
}

impl DeviceTlbDescriptor {
    numeric_fields! {
        /// MIP (bits 20:16): the device's invalidation queue depth.
        queue_depth, set_queue_depth: word 0, bits 16, width 5;
        /// SID (bits 47:32).
        source, set_source: word 0, bits 32, width 16;
    }
    flag_fields! {
        /// S (bit 64): ADDR encodes the range size.
        sized, set_sized: word 1, bit 0;
    }
    address_fields! {
        /// ADDR (bits 127:76).
        address, set_address: word 1, bits 63:12;
    }
    physical_function_fields!();
}

reserved_bits! {
    DeviceTlbDescriptor, words 2:
    word 0, bits 8:4;
    word 0, bits 31:21;
    word 0, bits 51:48;
    word 1, bits 11:1;
}

descriptor_layout!(
    /// Interrupt entry cache invalidate descriptor (6.5.2.7).
    InterruptEntryDescriptor,
    kind::INTERRUPT_ENTRY_CACHE
);

impl InterruptEntryDescriptor {
    flag_fields! {
        /// G (bit 4): 0 global, 1 index-selective.
        index_selective, set_index_selective: word 0, bit 4;
    }
    numeric_fields! {
        /// IM (bits 31:27): 2^IM entries from IIDX.
        index_mask, set_index_mask: word 0, bits 27, width 5;
        /// IIDX (bits 47:32).
        index, set_index: word 0, bits 32, width 16;
    }
}

reserved_bits! {
    InterruptEntryDescriptor, words 2:
    word 0, bits 8:5;
    word 0, bits 26:12;
    word 0, bits 63:48;
    word 1, bits 63:0;
}

descriptor_layout!(
    /// Invalidation wait descriptor (6.5.2.8).
    WaitDescriptor,
    kind::WAIT
);

impl WaitDescriptor {
    flag_fields! {
        /// IF (bit 4).
        interrupt, set_interrupt: word 0, bit 4;
        /// SW (bit 5).
        status_write, set_status_write: word 0, bit 5;
        /// FN (bit 6).
        fence, set_fence: word 0, bit 6;
    }
    numeric_fields! {
        /// Status Data (bits 63:32).
        status_data, set_status_data: word 0, bits 32, width 32;
    }
    address_fields! {
        /// Status Address (bits 127:66), dword aligned.
        status_address, set_status_address: word 1, bits 63:2;
    }
}

reserved_bits! {
    WaitDescriptor, words 2:
    /// Bit 7 is PD (page-request drain), left zero; bit 8 is reserved.
    word 0, bits 8:8;
    word 0, bits 31:12;
    word 1, bits 1:0;
}

descriptor_layout!(
    /// PASID-cache invalidate descriptor (6.5.2.2).
    PasidCacheDescriptor,
    kind::PASID_CACHE
);

impl PasidCacheDescriptor {
    numeric_fields! {
        /// G (bits 5:4): 0 domain-selective, 1 PASID-selective, 3 global.
        granularity, set_granularity: word 0, bits 4, width 2;
        /// DID (bits 31:16).
        did, set_did: word 0, bits 16, width 16;
        /// PASID (bits 51:32).
        pasid, set_pasid: word 0, bits 32, width 20;
    }
}

reserved_bits! {
    PasidCacheDescriptor, words 2:
    word 0, bits 8:6;
    word 0, bits 15:12;
    word 0, bits 63:52;
    word 1, bits 63:0;
}

descriptor_layout!(
    /// PASID-based IOTLB invalidate descriptor (6.5.2.4).
    PasidIotlbDescriptor,
    kind::PASID_IOTLB
);

impl PasidIotlbDescriptor {
    numeric_fields! {
        /// G (bits 5:4): 2 all of the PASID, 3 page-selective within the PASID.
        granularity, set_granularity: word 0, bits 4, width 2;
        /// DID (bits 31:16).
        did, set_did: word 0, bits 16, width 16;
        /// PASID (bits 51:32).
        pasid, set_pasid: word 0, bits 32, width 20;
    }
    page_selective_fields!();
}

reserved_bits! {
    PasidIotlbDescriptor, words 2:
    word 0, bits 8:6;
    word 0, bits 15:12;
    word 0, bits 63:52;
    word 1, bits 11:7;
}

descriptor_layout!(
    /// PASID-based device-TLB invalidate descriptor (6.5.2.6).
    PasidDeviceTlbDescriptor,
    kind::PASID_DEVICE_TLB
);

impl PasidDeviceTlbDescriptor {
    numeric_fields! {
        /// MIP (bits 8:4): the device's invalidation queue depth.
        queue_depth, set_queue_depth: word 0, bits 4, width 5;
        /// SID (bits 31:16).
        source, set_source: word 0, bits 16, width 16;
        /// PASID (bits 51:32).
        pasid, set_pasid: word 0, bits 32, width 20;
    }
    flag_fields! {
        /// S (bit 75): ADDR encodes the range size. Bit 64 (G, all PASIDs) is left zero.
        sized, set_sized: word 1, bit 11;
    }
    address_fields! {
        /// ADDR (bits 127:76).
        address, set_address: word 1, bits 63:12;
    }
    physical_function_fields!();
}

reserved_bits! {
    PasidDeviceTlbDescriptor, words 2:
    word 1, bits 10:1;
}

descriptor_layout!(
    /// Page group response descriptor: not an invalidation, but it travels the invalidation
    /// queue (scalable mode only). It answers a page request group the unit delivered in the
    /// page request queue; the unit forwards it to the device as a PCIe PRG response.
    PageGroupResponseDescriptor,
    kind::PAGE_GROUP_RESPONSE
);

impl PageGroupResponseDescriptor {
    flag_fields! {
        /// PP (bit 4): the response carries a PASID (the request did).
        pasid_present, set_pasid_present: word 0, bit 4;
    }
    numeric_fields! {
        /// Response code (bits 15:12): 0 success, 1 invalid request, Fh response failure.
        response_code, set_response_code: word 0, bits 12, width 4;
        /// RID (bits 31:16): the requester the response goes to.
        requester, set_requester: word 0, bits 16, width 16;
        /// PASID (bits 51:32).
        pasid, set_pasid: word 0, bits 32, width 20;
        /// PRGI (bits 75:67): the page request group index being answered.
        group, set_group: word 1, bits 3, width 9;
    }
    flag_fields! {
        /// LPIG (bit 66): the response closes the group (always 1 here: groups are answered
        /// once, whole).
        last_in_group, set_last_in_group: word 1, bit 2;
    }
}

reserved_bits! {
    PageGroupResponseDescriptor, words 2:
    /// Bit 5 is PDP (private data present), left zero; bits 11:6 reserved.
    word 0, bits 11:5;
    word 0, bits 63:52;
    word 1, bits 1:0;
    word 1, bits 63:12;
}

/// The response codes of a page group response (PCIe PRG Response Message).
pub mod response_code {
    /// The pages are mapped: the device retries the accesses.
    pub const SUCCESS: u8 = 0x0;
    /// The request cannot be satisfied: the device fails the accesses of this group.
    pub const INVALID_REQUEST: u8 = 0x1;
    /// Catastrophic failure: the device stops issuing page requests.
    pub const RESPONSE_FAILURE: u8 = 0xf;
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
    /// The ADDR field (bits 63:12, in place) and S bit: with S=1 the lowest clear bit of
    /// ADDR[63:12] marks the size, so 2^n pages are written as the base with bits 12..12+n-1 set.
    fn encode(self) -> (u64, bool) {
        if self.pages_log2 == 0 {
            return (self.base & hwio::bits::addr_mask(12, 63), false);
        }
        // Bits 12 up to 12 + pages_log2 - 2 set; ADDR bit 63 stays clear even for "every address".
        let size_bits = hwio::bits::addr_mask(12, 10 + self.pages_log2 as u32);
        ((self.base | size_bits) & hwio::bits::addr_mask(12, 62), true)
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
    /// Not an invalidation: the answer to page request group `group` of `requester` (at
    /// `pasid` if the request carried one), with a [`response_code`]. It shares the queue and
    /// its completion wait (scalable mode only).
    PageGroupResponse { requester: u16, pasid: Option<u32>, group: u16, code: u8 },
}

impl Invalidation {
    /// The 128-bit descriptor for this request.
    #[inline(always)]
    pub fn encode(&self) -> Descriptor128 {
        match *self {
            Invalidation::ContextGlobal => ContextCacheDescriptor::new().set_granularity(1).descriptor(),
            Invalidation::ContextDomain { did } => {
                ContextCacheDescriptor::new().set_granularity(2).set_did(did as u64).descriptor()
            }
            Invalidation::ContextDevice { did, source, function_mask } => ContextCacheDescriptor::new()
                .set_granularity(3)
                .set_did(did as u64)
                .set_source(source as u64)
                .set_function_mask(function_mask as u64 & 3)
                .descriptor(),
            Invalidation::IotlbGlobal => IotlbDescriptor::new().set_granularity(1).descriptor(),
            Invalidation::IotlbDomain { did } => IotlbDescriptor::new().set_granularity(2).set_did(did as u64).descriptor(),
            Invalidation::IotlbPages { did, address, address_mask, leaf_only } => IotlbDescriptor::new()
                .set_granularity(3)
                .set_did(did as u64)
                .set_address(address & hwio::bits::addr_mask(12, 63))
                .set_leaf_only(leaf_only)
                .set_address_mask(address_mask as u64 & 0x3f)
                .descriptor(),
            Invalidation::DeviceTlb { source, physical_function, queue_depth, range } => {
                let (address, sized) = range.encode();
                DeviceTlbDescriptor::new()
                    .set_physical_function(physical_function)
                    .set_queue_depth(queue_depth as u64 & 0x1f)
                    .set_source(source as u64)
                    .set_address(address)
                    .set_sized(sized)
                    .descriptor()
            }
            Invalidation::InterruptEntryGlobal => InterruptEntryDescriptor::new().descriptor(),
            Invalidation::InterruptEntries { index, index_mask } => InterruptEntryDescriptor::new()
                .set_index_selective(true)
                .set_index_mask(index_mask as u64 & 0x1f)
                .set_index(index as u64)
                .descriptor(),
            Invalidation::PasidCacheDomain { did } => PasidCacheDescriptor::new().set_did(did as u64).descriptor(),
            Invalidation::PasidCachePasid { did, pasid } => PasidCacheDescriptor::new()
                .set_granularity(1)
                .set_did(did as u64)
                .set_pasid(pasid as u64 & 0xf_ffff)
                .descriptor(),
            Invalidation::PasidCacheGlobal => PasidCacheDescriptor::new().set_granularity(3).descriptor(),
            Invalidation::PasidIotlbAll { did, pasid } => PasidIotlbDescriptor::new()
                .set_granularity(2)
                .set_did(did as u64)
                .set_pasid(pasid as u64 & 0xf_ffff)
                .descriptor(),
            Invalidation::PasidIotlbPages { did, pasid, address, address_mask, leaf_only } => PasidIotlbDescriptor::new()
                .set_granularity(3)
                .set_did(did as u64)
                .set_pasid(pasid as u64 & 0xf_ffff)
                .set_address(address & hwio::bits::addr_mask(12, 63))
                .set_leaf_only(leaf_only)
                .set_address_mask(address_mask as u64 & 0x3f)
                .descriptor(),
            Invalidation::PasidDeviceTlb { source, physical_function, pasid, queue_depth, range } => {
                let (address, sized) = range.encode();
                PasidDeviceTlbDescriptor::new()
                    .set_queue_depth(queue_depth as u64 & 0x1f)
                    .set_physical_function(physical_function)
                    .set_source(source as u64)
                    .set_pasid(pasid as u64 & 0xf_ffff)
                    .set_address(address)
                    .set_sized(sized)
                    .descriptor()
            }
            Invalidation::PageGroupResponse { requester, pasid, group, code } => {
                let mut descriptor = PageGroupResponseDescriptor::new();
                descriptor
                    .set_response_code(code as u64 & 0xf)
                    .set_requester(requester as u64)
                    .set_group(group as u64 & 0x1ff)
                    .set_last_in_group(true);
                if let Some(pasid) = pasid {
                    descriptor.set_pasid_present(true).set_pasid(pasid as u64 & 0xf_ffff);
                }
                descriptor.descriptor()
            }
        }
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
                | Invalidation::PageGroupResponse { .. }
        )
    }
}

/// `descriptor` with the drain bits the unit honours (CAP.DRD/DWD) set if it is an IOTLB
/// invalidation (6.5.2.3): without them, a unit that drains only when asked may still complete
/// DMA translated through the old entries after the invalidation's wait has completed, that is
/// after the pages went back. Other descriptors carry no drain bits and pass unchanged.
#[inline(always)]
pub fn with_iotlb_drain(descriptor: Descriptor128, reads: bool, writes: bool) -> Descriptor128 {
    if descriptor.kind() != kind::IOTLB {
        return descriptor;
    }
    let mut iotlb = IotlbDescriptor { words: descriptor.words };
    iotlb.set_drain_reads(reads).set_drain_writes(writes);
    iotlb.descriptor()
}

/// A wait descriptor that stores `status_data` at `status_address` (4-byte aligned) once every
/// earlier descriptor has completed. SW only, never IF: QEMU aborts on SW+IF.
pub fn status_write_wait(status_address: u64, status_data: u32) -> Descriptor128 {
    WaitDescriptor::new()
        .set_status_write(true)
        .set_fence(true)
        .set_status_data(status_data as u64)
        .set_status_address(status_address & hwio::bits::addr_mask(2, 63))
        .descriptor()
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

    /// Every request at its widest values, and the wait descriptor.
    fn every_kind_of_descriptor() -> [Descriptor128; 18] {
        let range = DeviceTlbRange { base: 0xffff_f000, pages_log2: 0 };
        [
            Invalidation::ContextGlobal.encode(),
            Invalidation::ContextDomain { did: u16::MAX }.encode(),
            Invalidation::ContextDevice { did: u16::MAX, source: u16::MAX, function_mask: 3 }.encode(),
            Invalidation::IotlbGlobal.encode(),
            Invalidation::IotlbDomain { did: u16::MAX }.encode(),
            Invalidation::IotlbPages { did: u16::MAX, address: u64::MAX, address_mask: 0x3f, leaf_only: true }.encode(),
            Invalidation::DeviceTlb { source: u16::MAX, physical_function: u16::MAX, queue_depth: 0x1f, range: DEVICE_TLB_ALL }
                .encode(),
            Invalidation::InterruptEntryGlobal.encode(),
            Invalidation::InterruptEntries { index: u16::MAX, index_mask: 0x1f }.encode(),
            Invalidation::PasidCacheDomain { did: u16::MAX }.encode(),
            Invalidation::PasidCachePasid { did: u16::MAX, pasid: u32::MAX }.encode(),
            Invalidation::PasidCacheGlobal.encode(),
            Invalidation::PasidIotlbAll { did: u16::MAX, pasid: u32::MAX }.encode(),
            Invalidation::PasidIotlbPages { did: u16::MAX, pasid: u32::MAX, address: u64::MAX, address_mask: 0x3f, leaf_only: true }
                .encode(),
            Invalidation::PasidDeviceTlb { source: u16::MAX, physical_function: u16::MAX, pasid: u32::MAX, queue_depth: 0x1f, range }
                .encode(),
            status_write_wait(u64::MAX, u32::MAX),
            Invalidation::DeviceTlb { source: 1, physical_function: 1, queue_depth: 1, range }.encode(),
            Invalidation::PageGroupResponse { requester: u16::MAX, pasid: Some(u32::MAX), group: u16::MAX, code: u8::MAX }.encode(),
        ]
    }

    #[test]
    fn encodings_at_their_widest_leave_every_reserved_bit_clear() {
        for descriptor in every_kind_of_descriptor() {
            assert_eq!(descriptor.reserved_bits_set(), None, "{descriptor:x?}");
        }
    }

    #[test]
    fn a_reserved_bit_set_is_reported_for_each_descriptor_type() {
        // Bit 8 of word 0 is reserved in context, IOTLB, device-TLB, IEC, wait and PASID
        // descriptors except the PASID-based device-TLB, whose reserved bits are in word 1.
        for descriptor in every_kind_of_descriptor() {
            let mut broken = descriptor;
            let expected = if matches!(descriptor.kind(), kind::PASID_DEVICE_TLB | kind::PAGE_GROUP_RESPONSE) {
                broken.words[1] |= 1 << 1;
                ReservedBitsSet { word: 1, bits: 1 << 1 }
            } else {
                broken.words[0] |= 1 << 8;
                ReservedBitsSet { word: 0, bits: 1 << 8 }
            };
            assert_eq!(broken.reserved_bits_set(), Some(expected), "{descriptor:x?}");
        }
        // Per type: the DID position of one type is reserved in another.
        let interrupt = Invalidation::InterruptEntryGlobal.encode();
        let mut with_did = interrupt;
        with_did.words[0] |= 5 << 16;
        assert_eq!(with_did.reserved_bits_set(), Some(ReservedBitsSet { word: 0, bits: 5 << 16 }));
        // A type this driver does not define is refused with every bit it has set.
        let unknown = Descriptor128 { words: [0x3_000f, 0] };
        assert_eq!(unknown.reserved_bits_set(), Some(ReservedBitsSet { word: 0, bits: 0x3_000f }));
        let empty = Descriptor128::default();
        assert_eq!(empty.reserved_bits_set(), Some(ReservedBitsSet { word: 0, bits: 0 }));
    }

    #[test]
    fn page_group_response_layout() {
        let with_pasid = Invalidation::PageGroupResponse { requester: 0x0118, pasid: Some(0x12345), group: 0x1a5, code: response_code::INVALID_REQUEST };
        // Type 9, PP bit 4, code at 15:12, RID at 31:16, PASID at 51:32; LPIG bit 66, PRGI 75:67.
        assert_eq!(with_pasid.encode().words, [0x0001_2345_0118_1019, 0x1a5 << 3 | 1 << 2]);
        let without = Invalidation::PageGroupResponse { requester: 0x0118, pasid: None, group: 3, code: response_code::SUCCESS };
        assert_eq!(without.encode().words, [0x0118_0009, 3 << 3 | 1 << 2]);
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
