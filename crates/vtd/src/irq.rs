//! Interrupt remapping: the interrupt remapping table entry (IRTE, VT-d spec 9.10) and the
//! remappable-format MSI a device is programmed with (spec 5.1.5.2).
//!
//! With IR enabled a device's MSI write no longer names a vector and CPU; it names an IRTE
//! index ("handle"), and the IRTE supplies vector and destination. Every IRTE the unit writes
//! also carries source validation (SVT=01, SQ=00: the requester id must equal SID exactly), so
//! a device that writes another device's handle faults with reason 26h instead of injecting
//! that device's interrupt.

use core::mem::size_of;

use hwio::{flag_fields, numeric_fields, reserved_bits};

use crate::tables::{hardware_entry, HardwareEntry};
use crate::RequesterId;

/// How the IRTE destination field is interpreted (IRTA.EIME).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApicMode {
    /// 8-bit APIC ids, carried in IRTE bits 47:40.
    XApic,
    /// 32-bit x2APIC ids, IRTE bits 63:32 (needs ECAP.EIM).
    X2Apic,
}

/// SVT=01 (IRTE bits 83:82): verify the requester id against SID (qualified by SQ).
pub const SVT_REQUESTER_ID: u64 = 0b01;

/// A remapped-format interrupt remapping table entry, 128 bits.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InterruptRemapEntry {
    pub words: [u64; 2],
}
hardware_entry!(InterruptRemapEntry, 2);
reserved_bits! {
    InterruptRemapEntry, words 2:
    /// R, bits 14:12 (AVAIL, bits 11:8, is software's).
    word 0, bits 14:12;
    /// R, bits 31:24.
    word 0, bits 31:24;
    /// R, bits 127:84.
    word 1, bits 63:20;
}

impl InterruptRemapEntry {
    flag_fields! {
        /// P, bit 0.
        present, set_present: word 0, bit 0;
        /// FPD, bit 1: fault processing disabled.
        fault_processing_disabled, set_fault_processing_disabled: word 0, bit 1;
        /// DM, bit 2: logical (1) or physical (0) destination.
        destination_logical, set_destination_logical: word 0, bit 2;
        /// RH, bit 3: redirection hint.
        redirection_hint, set_redirection_hint: word 0, bit 3;
        /// TM, bit 4: level (1) or edge (0) triggered.
        trigger_level, set_trigger_level: word 0, bit 4;
        /// IM, bit 15: posted (1) or remapped (0) format.
        posted, set_posted: word 0, bit 15;
    }
    numeric_fields! {
        /// DLM, bits 7:5: delivery mode (000 fixed).
        delivery_mode, set_delivery_mode: word 0, bits 5, width 3;
        /// V, bits 23:16.
        vector_field, set_vector_field: word 0, bits 16, width 8;
        /// DST, bits 63:32: x2APIC id, or xAPIC id in bits 47:40.
        destination, set_destination: word 0, bits 32, width 32;
        /// SID, bits 79:64.
        sid, set_sid: word 1, bits 0, width 16;
        /// SQ, bits 81:80: which SID bits are compared.
        source_qualifier, set_source_qualifier: word 1, bits 16, width 2;
        /// SVT, bits 83:82: source validation type.
        source_validation, set_source_validation: word 1, bits 18, width 2;
    }

    /// A present entry delivering `vector` (fixed delivery, edge, physical destination, no
    /// redirection hint) to `destination`, accepted only from `source`.
    pub fn remapped(vector: u8, destination: u32, apic_mode: ApicMode, source: RequesterId) -> Self {
        let destination_field = match apic_mode {
            ApicMode::XApic => (destination as u64 & 0xff) << 8,
            ApicMode::X2Apic => destination as u64,
        };
        let mut entry = Self::default();
        entry
            .set_vector_field(vector as u64)
            .set_destination(destination_field)
            .set_sid(source.0 as u64)
            .set_source_validation(SVT_REQUESTER_ID)
            .set_present(true);
        entry
    }
    pub fn vector(&self) -> u8 {
        self.vector_field() as u8
    }
    pub fn destination_field(&self) -> u32 {
        self.destination() as u32
    }
    pub fn source_id(&self) -> RequesterId {
        RequesterId(self.sid() as u16)
    }
}

/// Fields of an MSI address in the interrupt range 0xFEEx_xxxx, in both formats (compatibility,
/// spec 5.1.2.1; remappable, spec 5.1.5.2).
pub mod msi_address {
    use hwio::bits::Field;
    /// Bits 31:20 = 0xFEE: the interrupt address range.
    pub const INTERRUPT_RANGE: u64 = 0xfee0_0000;
    /// Compatibility format: destination APIC id, bits 19:12.
    pub const DESTINATION: Field = Field::new(12, 8);
    /// Remappable format: handle\[14:0\], bits 19:5.
    pub const HANDLE_LOW: Field = Field::new(5, 15);
    /// Interrupt format, bit 4: 1 = remappable, 0 = compatibility.
    pub const REMAPPABLE: u64 = 1 << 4;
    /// SHV, bit 3: sub-handle valid (the data register's low 16 bits are added to the handle).
    pub const SUBHANDLE_VALID: u64 = 1 << 3;
    /// Remappable format: handle\[15\], bit 2.
    pub const HANDLE_HIGH: Field = Field::new(2, 1);
}

/// The MSI address/data a device must be programmed with to raise the interrupt in IRTE
/// `handle` (remappable format, spec 5.1.5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemappableMsi {
    pub address: u32,
    pub data: u32,
}

impl RemappableMsi {
    /// Address: 0xFEE in bits 31:20, handle\[14:0\] in 19:5, bit 4 = 1 (remappable format),
    /// SHV (bit 3) = 0 so the data register is ignored for handle computation, handle\[15\] in
    /// bit 2. Data: 0.
    pub fn for_handle(handle: u16) -> Self {
        let handle = handle as u64;
        let address = msi_address::INTERRUPT_RANGE
            | msi_address::HANDLE_LOW.place(handle & 0x7fff)
            | msi_address::REMAPPABLE
            | msi_address::HANDLE_HIGH.place(handle >> 15);
        Self { address: address as u32, data: 0 }
    }

    /// The same with SHV (address bit 3) set: the device's data value (0, or the message
    /// number a multiple-message MSI puts in its low bits) is added to the handle, so a block
    /// of 2^n IRTEs from `handle` serves 2^n messages (spec 5.1.5.2).
    pub fn with_subhandles(self) -> Self {
        Self { address: self.address | msi_address::SUBHANDLE_VALID as u32, data: 0 }
    }

    /// The IRTE index this MSI names (inverse of [`Self::for_handle`]).
    pub fn handle(&self) -> u16 {
        let address = self.address as u64;
        (msi_address::HANDLE_LOW.get(address) | msi_address::HANDLE_HIGH.get(address) << 15) as u16
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hwio::bits::Layout;

    #[test]
    fn xapic_irte_layout() {
        let entry = InterruptRemapEntry::remapped(0x41, 0x03, ApicMode::XApic, RequesterId::new(0, 4, 0));
        // P, vector 0x41 at 23:16, APIC id 3 at bits 47:40.
        assert_eq!(entry.words[0], 1 | 0x41 << 16 | 0x03 << 40);
        // SID 0x0020, SQ=00, SVT=01 at 83:82.
        assert_eq!(entry.words[1], 0x0020 | 1 << 18);
        assert_eq!(entry.vector(), 0x41);
        assert_eq!(entry.source_id(), RequesterId(0x20));
        assert_eq!(entry.source_validation(), 1);
        assert!(entry.is_present());
    }

    #[test]
    fn every_field_at_its_widest_leaves_the_reserved_bits_clear() {
        let mut entry = InterruptRemapEntry::remapped(0xff, u32::MAX, ApicMode::X2Apic, RequesterId(0xffff));
        entry
            .set_fault_processing_disabled(true)
            .set_destination_logical(true)
            .set_redirection_hint(true)
            .set_trigger_level(true)
            .set_posted(true)
            .set_delivery_mode(0b111)
            .set_source_qualifier(0b11)
            .set_source_validation(0b11);
        assert_eq!(entry.reserved_bits_set(), None);
        entry.words[0] |= 1 << 24;
        assert_eq!(entry.reserved_bits_set(), Some(hwio::bits::ReservedBitsSet { word: 0, bits: 1 << 24 }));
    }

    #[test]
    fn x2apic_irte_destination() {
        let entry = InterruptRemapEntry::remapped(0x30, 0x1_0002, ApicMode::X2Apic, RequesterId(0x100));
        assert_eq!(entry.destination_field(), 0x1_0002);
        assert!(!entry.posted() && !entry.trigger_level() && !entry.destination_logical());
    }

    #[test]
    fn remappable_msi_address() {
        let msi = RemappableMsi::for_handle(5);
        assert_eq!(msi.address, 0xfee0_00b0);
        assert_eq!(msi.data, 0);
        let high = RemappableMsi::for_handle(0x8001);
        assert_eq!(high.address, 0xfee0_0034);
        assert_eq!(high.handle(), 0x8001);
        assert_eq!(RemappableMsi::for_handle(5).with_subhandles(), RemappableMsi { address: 0xfee0_00b8, data: 0 });
    }
}
