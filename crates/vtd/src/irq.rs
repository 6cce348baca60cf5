//! Interrupt remapping: the interrupt remapping table entry (IRTE, VT-d spec 9.10) and the
//! remappable-format MSI a device is programmed with (spec 5.1.5.2).
//!
//! With IR enabled a device's MSI write no longer names a vector and CPU; it names an IRTE
//! index ("handle"), and the IRTE supplies vector and destination. Every IRTE the unit writes
//! also carries source validation (SVT=01, SQ=00: the requester id must equal SID exactly), so
//! a device that writes another device's handle faults with reason 26h instead of injecting
//! that device's interrupt.

use core::mem::size_of;

use crate::tables::HardwareEntry;
use crate::RequesterId;

/// How the IRTE destination field is interpreted (IRTA.EIME).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApicMode {
    /// 8-bit APIC ids, carried in IRTE bits 47:40.
    XApic,
    /// 32-bit x2APIC ids, IRTE bits 63:32 (needs ECAP.EIM).
    X2Apic,
}

/// Field positions of the remapped-format IRTE (spec 9.10).
pub mod irte {
    pub const PRESENT: u64 = 1 << 0;
    pub const FPD: u64 = 1 << 1;
    /// Destination mode, bit 2: 0 physical, 1 logical.
    pub const DESTINATION_LOGICAL: u64 = 1 << 2;
    /// Redirection hint, bit 3.
    pub const REDIRECTION_HINT: u64 = 1 << 3;
    /// Trigger mode, bit 4: 0 edge, 1 level.
    pub const TRIGGER_LEVEL: u64 = 1 << 4;
    /// Delivery mode, bits 7:5 (000 fixed).
    pub const DELIVERY_MODE_SHIFT: u32 = 5;
    /// IRTE mode, bit 15: 0 remapped, 1 posted.
    pub const POSTED: u64 = 1 << 15;
    /// Vector, bits 23:16.
    pub const VECTOR_SHIFT: u32 = 16;
    /// Destination id, bits 63:32.
    pub const DESTINATION_SHIFT: u32 = 32;
    /// High word: SID bits 15:0 (79:64), SQ bits 17:16 (81:80), SVT bits 19:18 (83:82).
    pub const SQ_SHIFT: u32 = 16;
    pub const SVT_SHIFT: u32 = 18;
    /// SVT=01: verify the requester id against SID (qualified by SQ).
    pub const SVT_REQUESTER_ID: u64 = 0b01;
}

/// A remapped-format interrupt remapping table entry, 128 bits.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InterruptRemapEntry {
    pub words: [u64; 2],
}
const _: () = assert!(size_of::<InterruptRemapEntry>() == 16);

impl HardwareEntry for InterruptRemapEntry {
    const WORDS: usize = 2;
    fn words(&self) -> &[u64] {
        &self.words
    }
    fn from_words(words: &[u64]) -> Self {
        Self { words: [words[0], words[1]] }
    }
}

impl InterruptRemapEntry {
    /// A present entry delivering `vector` (fixed delivery, edge, physical destination, no
    /// redirection hint) to `destination`, accepted only from `source`.
    pub fn remapped(vector: u8, destination: u32, apic_mode: ApicMode, source: RequesterId) -> Self {
        let destination_field = match apic_mode {
            ApicMode::XApic => (destination as u64 & 0xff) << 8,
            ApicMode::X2Apic => destination as u64,
        };
        let low = irte::PRESENT
            | (vector as u64) << irte::VECTOR_SHIFT
            | destination_field << irte::DESTINATION_SHIFT;
        let high = source.0 as u64 | irte::SVT_REQUESTER_ID << irte::SVT_SHIFT;
        Self { words: [low, high] }
    }
    pub fn vector(&self) -> u8 {
        (self.words[0] >> irte::VECTOR_SHIFT) as u8
    }
    pub fn destination_field(&self) -> u32 {
        (self.words[0] >> irte::DESTINATION_SHIFT) as u32
    }
    pub fn source_id(&self) -> RequesterId {
        RequesterId(self.words[1] as u16)
    }
    pub fn source_validation(&self) -> u64 {
        self.words[1] >> irte::SVT_SHIFT & 3
    }
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
        let address = 0xfee0_0000
            | ((handle as u32) & 0x7fff) << 5
            | 1 << 4
            | ((handle as u32) >> 15 & 1) << 2;
        Self { address, data: 0 }
    }

    /// The same with SHV (address bit 3) set: the device's data value (0, or the message
    /// number a multiple-message MSI puts in its low bits) is added to the handle, so a block
    /// of 2^n IRTEs from `handle` serves 2^n messages (spec 5.1.5.2).
    pub fn with_subhandles(self) -> Self {
        Self { address: self.address | 1 << 3, data: 0 }
    }

    /// The IRTE index this MSI names (inverse of [`Self::for_handle`]).
    pub fn handle(&self) -> u16 {
        ((self.address >> 5 & 0x7fff) | (self.address >> 2 & 1) << 15) as u16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn x2apic_irte_destination() {
        let entry = InterruptRemapEntry::remapped(0x30, 0x1_0002, ApicMode::X2Apic, RequesterId(0x100));
        assert_eq!(entry.destination_field(), 0x1_0002);
        assert_eq!(entry.words[0] & (irte::POSTED | irte::TRIGGER_LEVEL | irte::DESTINATION_LOGICAL), 0);
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
