//! Page requests (VT-d spec 7.5): a device with PCIe PRI that found a page not present asks the
//! unit for it; the unit writes a 256-bit page request descriptor into the page request queue
//! (PQA/PQH/PQT, one page of 128 descriptors here) and raises the page request event. Software
//! answers each page request *group* once, with a page group response descriptor on the
//! invalidation queue ([`crate::descriptors::PageGroupResponseDescriptor`]); the device holds
//! the faulting accesses until then and retries them on success.

use hwio::{address_fields, flag_fields, numeric_fields};

use crate::RequesterId;

/// Bytes per page request descriptor.
pub const DESCRIPTOR_BYTES: usize = 32;
/// Type code (bits 7:0) of a page request descriptor.
pub const TYPE_PAGE_REQUEST: u64 = 0x01;

/// One page request descriptor as the unit writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PageRequestDescriptor {
    pub words: [u64; 4],
}

impl PageRequestDescriptor {
    numeric_fields! {
        /// Type (bits 7:0): [`TYPE_PAGE_REQUEST`].
        kind, set_kind: word 0, bits 0, width 8;
        /// RID (bits 31:16): the requesting device.
        requester, set_requester: word 0, bits 16, width 16;
        /// PASID (bits 51:32), valid with PP.
        pasid, set_pasid: word 0, bits 32, width 20;
        /// PRGI (bits 75:67): the page request group index.
        group, set_group: word 1, bits 3, width 9;
    }
    flag_fields! {
        /// PP (bit 8): the request carries a PASID.
        pasid_present, set_pasid_present: word 0, bit 8;
        /// ER (bit 52): execute access requested.
        execute, set_execute: word 0, bit 52;
        /// PMR (bit 53): privileged-mode access requested.
        privileged, set_privileged: word 0, bit 53;
        /// RDR (bit 64): read access requested.
        read, set_read: word 1, bit 0;
        /// WRR (bit 65): write access requested.
        write, set_write: word 1, bit 1;
        /// LPIG (bit 66): the last request of its group; the group may be answered now.
        last_in_group, set_last_in_group: word 1, bit 2;
    }
    address_fields! {
        /// ADDR (bits 127:76): the page asked for.
        address, set_address: word 1, bits 63:12;
    }
}

/// One decoded page request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub requester: RequesterId,
    pub pasid: Option<u32>,
    /// The page asked for (4 KiB aligned).
    pub address: u64,
    pub read: bool,
    pub write: bool,
    /// The last request of its group: the response is due once this one is seen.
    pub last_in_group: bool,
    /// The page request group index (9 bits).
    pub group: u16,
}

impl PageRequest {
    /// Decodes a descriptor; `None` for a type this driver does not know.
    pub fn decode(descriptor: &PageRequestDescriptor) -> Option<PageRequest> {
        if descriptor.kind() != TYPE_PAGE_REQUEST {
            return None;
        }
        Some(PageRequest {
            requester: RequesterId(descriptor.requester() as u16),
            pasid: descriptor.pasid_present().then_some(descriptor.pasid() as u32),
            address: descriptor.address(),
            read: descriptor.read(),
            write: descriptor.write(),
            last_in_group: descriptor.last_in_group(),
            group: descriptor.group() as u16,
        })
    }

    /// The descriptor a unit writes for this request.
    pub fn encode(&self) -> PageRequestDescriptor {
        let mut descriptor = PageRequestDescriptor::default();
        descriptor
            .set_kind(TYPE_PAGE_REQUEST)
            .set_requester(self.requester.0 as u64)
            .set_read(self.read)
            .set_write(self.write)
            .set_last_in_group(self.last_in_group)
            .set_group(self.group as u64 & 0x1ff)
            .set_address(self.address & hwio::bits::addr_mask(12, 63));
        if let Some(pasid) = self.pasid {
            descriptor.set_pasid_present(true).set_pasid(pasid as u64 & 0xf_ffff);
        }
        descriptor
    }
}

/// What draining the page request queue found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PageRequestReport {
    /// Requests, oldest first.
    pub requests: alloc::vec::Vec<PageRequest>,
    /// PRS.PRO was set: a request found the queue full (the unit answered it itself).
    pub overflowed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_layout() {
        let request = PageRequest {
            requester: RequesterId(0x0118),
            pasid: Some(0xabcde),
            address: 0x7654_3000,
            read: true,
            write: true,
            last_in_group: true,
            group: 0x155,
        };
        let descriptor = request.encode();
        // Type 1, PP bit 8, RID 31:16, PASID 51:32; RDR/WRR/LPIG bits 0-2 of word 1, PRGI 11:3.
        assert_eq!(descriptor.words, [0x000a_bcde_0118_0101, 0x7654_3000 | 0x155 << 3 | 0b111, 0, 0]);
        assert_eq!(PageRequest::decode(&descriptor), Some(request));
        let mut unknown = descriptor;
        unknown.set_kind(2);
        assert_eq!(PageRequest::decode(&unknown), None);
    }
}
