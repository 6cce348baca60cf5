//! Fault records (VT-d spec 7.1-7.2, register layout 11.4.14) and the fault-reason table.
//!
//! A record is 128 bits at CAP.FRO + 16 * index:
//! * bits 63:12 FI: the faulting page address, or for interrupt-remapping faults the
//!   interrupt index in bits 63:48;
//! * bits 79:64 SID, bit 95 PP (PASID present), bits 103:96 FR (reason), bits 123:104 PV
//!   (PASID value), bit 126 T (0 write, 1 read), bit 127 F (record valid; write 1 to clear).
//!
//! QEMU implements a single record; while its F bit is set further faults are dropped and only
//! FSTS.PFO (overflow) records that something was lost.

use alloc::vec::Vec;

use hwio::{address_fields, flag_fields, numeric_fields, reserved_bits};

use crate::RequesterId;

/// Direction of the faulting DMA request (record bit 126, T).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessKind {
    Read,
    Write,
}

/// Whether the fault came from DMA remapping or from interrupt remapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    Dma,
    /// `index` is the interrupt-remapping table index the request named.
    InterruptRemap { index: u16 },
}

/// One decoded fault record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodedFault {
    pub requester: RequesterId,
    /// Faulting page address (4 KiB aligned); zero for interrupt-remapping faults.
    pub address: u64,
    pub access: AccessKind,
    /// Fault reason code (FR).
    pub reason: u8,
    pub pasid: Option<u32>,
    pub kind: FaultKind,
}

/// Result of draining the fault records.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FaultReport {
    pub faults: Vec<DecodedFault>,
    /// FSTS.PFO was set: at least one fault was dropped because every record was full.
    pub overflowed: bool,
}

/// Record bits in the high 64-bit word.
pub mod record {
    pub const F: u64 = 1 << 63;
    pub const T_READ: u64 = 1 << 62;
    pub const PASID_PRESENT: u64 = 1 << 31;
    /// Byte offset of the dword holding F within a record; written with [`F_IN_DWORD`] to clear F.
    pub const F_DWORD: usize = 12;
    /// F (record bit 127) as bit 31 of the dword at [`F_DWORD`].
    pub const F_IN_DWORD: u32 = 1 << 31;
}

/// One 128-bit fault record as the unit writes it (register layout 11.4.14).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FaultRecord {
    pub words: [u64; 2],
}

impl FaultRecord {
    address_fields! {
        /// FI (bits 63:12): the faulting page address.
        fault_info, set_fault_info: word 0, bits 63:12;
    }
    numeric_fields! {
        /// FI bits 63:48 of an interrupt-remapping fault: the interrupt index.
        interrupt_index, set_interrupt_index: word 0, bits 48, width 16;
        /// SID (bits 79:64).
        source, set_source: word 1, bits 0, width 16;
        /// FR (bits 103:96): the fault reason.
        reason, set_reason: word 1, bits 32, width 8;
        /// PV (bits 123:104): the PASID, valid with PP.
        pasid, set_pasid: word 1, bits 40, width 20;
    }
    flag_fields! {
        /// PP (bit 95): PV holds the request's PASID.
        pasid_present, set_pasid_present: word 1, bit 31;
        /// T (bit 126): 1 read, 0 write.
        read, set_read: word 1, bit 62;
        /// F (bit 127): the record holds a fault; software writes 1 to clear it.
        fault, set_fault: word 1, bit 63;
    }
}

reserved_bits! {
    FaultRecord, words 2:
    /// Below FI (bits 11:0).
    word 0, bits 11:0;
}

/// Whether `reason` is an interrupt-remapping fault (spec 7.1.2, codes 20h-26h).
pub fn is_interrupt_remapping_reason(reason: u8) -> bool {
    (0x20..=0x26).contains(&reason)
}

impl DecodedFault {
    /// Decodes a record from its two 64-bit words; `None` if F (bit 127) is clear.
    pub fn decode(low: u64, high: u64) -> Option<Self> {
        let record = FaultRecord { words: [low, high] };
        if !record.fault() {
            return None;
        }
        let reason = record.reason() as u8;
        let kind = if is_interrupt_remapping_reason(reason) {
            FaultKind::InterruptRemap { index: record.interrupt_index() as u16 }
        } else {
            FaultKind::Dma
        };
        let address = if matches!(kind, FaultKind::Dma) { record.fault_info() } else { 0 };
        Some(Self {
            requester: RequesterId(record.source() as u16),
            address,
            access: if record.read() { AccessKind::Read } else { AccessKind::Write },
            reason,
            pasid: record.pasid_present().then_some(record.pasid() as u32),
            kind,
        })
    }

    pub fn reason_name(&self) -> &'static str {
        fault_reason_name(self.reason)
    }
}

/// Human-readable meaning of a fault reason code.
///
/// Legacy codes 01h-0Dh and interrupt-remapping codes 20h-26h follow spec 7.1; the
/// scalable-mode codes are those QEMU 10 reports and the second-stage ones of nested
/// translation (SSS.x 78h-7Bh, SGN.4-7 83h-86h), which follow the spec's 7.2.3 table. QEMU
/// reports second-level permission faults in scalable mode with the legacy codes 05h/06h and
/// root/context not-present with 01h/02h.
pub fn fault_reason_name(reason: u8) -> &'static str {
    match reason {
        0x01 => "root entry not present",
        0x02 => "context entry not present",
        0x03 => "invalid context entry",
        0x04 => "address beyond the domain's address width",
        0x05 => "write without write permission in second-level entry",
        0x06 => "read without read permission in second-level entry",
        0x07 => "cannot access a second-level paging entry",
        0x08 => "cannot access the root table",
        0x09 => "cannot access a context table",
        0x0a => "reserved bits set in root entry",
        0x0b => "reserved bits set in context entry",
        0x0c => "reserved bits set in second-level paging entry",
        0x0d => "request type blocked by context entry translation type",
        0x20 => "reserved fields set in interrupt request",
        0x21 => "interrupt index beyond remapping table size",
        0x22 => "interrupt remapping entry not present",
        0x23 => "cannot access the interrupt remapping table",
        0x24 => "reserved fields set in interrupt remapping entry",
        0x25 => "compatibility-format interrupt blocked",
        0x26 => "interrupt source-id validation failed",
        0x31 => "invalid translation table mode in root table address",
        0x50 => "cannot access a PASID directory entry",
        0x51 => "PASID directory entry not present",
        0x58 => "cannot access a PASID table entry",
        0x59 => "PASID table entry not present",
        0x5b => "invalid PASID table entry",
        0x70 => "cannot access a first-level paging entry",
        0x71 => "first-level paging entry not present",
        0x72 => "reserved bits set in first-level paging entry",
        0x73 => "invalid first-level table pointer in PASID entry",
        0x78 => "cannot access a second-stage paging entry",
        0x79 => "second-stage paging entry not present",
        0x7a => "reserved bits set in second-stage paging entry",
        0x7b => "cannot access the second-stage table of the PASID entry",
        0x80 => "first-level input address not canonical",
        0x81 => "user access to first-level entry with U/S clear",
        0x83 => "address beyond the host address width",
        0x84 => "address beyond the second stage's address width",
        0x85 => "write without write permission",
        0x86 => "read without read permission in second-stage entry",
        0x87 => "translated address falls in the interrupt range",
        _ => "unknown fault reason",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_second_level_read_fault() {
        // F, T=read, FR=6, SID 00:03.0 = 0x0018, address 0x1234_5678.
        let high = record::F | record::T_READ | 6 << 32 | 0x0018;
        let fault = DecodedFault::decode(0x1234_5678, high).unwrap();
        assert_eq!(fault.requester, RequesterId::new(0, 3, 0));
        assert_eq!(fault.address, 0x1234_5000);
        assert_eq!(fault.access, AccessKind::Read);
        assert_eq!(fault.reason, 6);
        assert_eq!(fault.pasid, None);
        assert_eq!(fault.kind, FaultKind::Dma);
        assert_eq!(fault.reason_name(), "read without read permission in second-level entry");
    }

    #[test]
    fn decodes_pasid_write_fault() {
        let high = record::F | 0x81 << 32 | record::PASID_PRESENT | 0x4_2abc << 40 | 0x0110;
        let fault = DecodedFault::decode(0xdead_b000, high).unwrap();
        assert_eq!(fault.access, AccessKind::Write);
        assert_eq!(fault.pasid, Some(0x4_2abc));
        assert_eq!(fault.requester, RequesterId::new(1, 2, 0));
        assert_eq!(fault.reason_name(), "user access to first-level entry with U/S clear");
    }

    #[test]
    fn decodes_interrupt_remapping_fault() {
        let high = record::F | 0x26 << 32 | 0x0008;
        let fault = DecodedFault::decode(0x0021u64 << 48, high).unwrap();
        assert_eq!(fault.kind, FaultKind::InterruptRemap { index: 0x21 });
        assert_eq!(fault.address, 0);
        assert_eq!(fault.reason_name(), "interrupt source-id validation failed");
    }

    #[test]
    fn a_reserved_bit_set_is_reported() {
        let mut record = FaultRecord::default();
        record.set_fault(true).set_read(true).set_reason(0xff).set_source(0xffff);
        record.set_pasid_present(true).set_pasid(0xf_ffff).set_fault_info(hwio::bits::addr_mask(12, 63));
        assert_eq!(hwio::bits::Layout::reserved_bits_set(&record), None);
        record.words[0] |= 1 << 3;
        assert_eq!(hwio::bits::Layout::reserved_bits_set(&record), Some(hwio::bits::ReservedBitsSet { word: 0, bits: 1 << 3 }));
    }

    #[test]
    fn empty_record_is_none() {
        assert_eq!(DecodedFault::decode(0x1000, 6 << 32), None);
    }

    #[test]
    fn reason_table() {
        assert_eq!(fault_reason_name(0x71), "first-level paging entry not present");
        assert_eq!(fault_reason_name(0x02), "context entry not present");
        assert_eq!(fault_reason_name(0xee), "unknown fault reason");
        assert!(is_interrupt_remapping_reason(0x20) && !is_interrupt_remapping_reason(0x27));
    }
}
