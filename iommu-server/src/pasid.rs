//! The PCIe PASID extended capability of a device being bound: its width bounds the PASIDs
//! the device may be attached at, and the server enables it (PCIe Base 6.x, 7.8.8).

use crate::discovery::Ecam;
use fwtables::dmar::pci::PciAddress;

/// PCIe extended capabilities start here in configuration space.
const FIRST_EXTENDED_CAPABILITY: u16 = 0x100;
/// Extended capability header: ID bits 15:0, version 19:16, next offset 31:20.
const PASID_CAPABILITY_ID: u32 = 0x001b;
/// A header is 4-byte aligned; at most this many fit in the 4 KiB extended space.
const MAX_EXTENDED_CAPABILITIES: usize = (4096 - 0x100) / 4;
/// At header + 4: PASID Capability register (bits 15:0), Max PASID Width in bits 12:8;
/// PASID Control register (bits 31:16), PASID Enable in its bit 0.
const CAPABILITY_AND_CONTROL: u16 = 4;
const MAX_WIDTH_SHIFT: u32 = 8;
const MAX_WIDTH_MASK: u32 = 0x1f;
const CONTROL_PASID_ENABLE: u32 = 1 << 16;

/// The offset of the function's PASID capability, if it has one.
fn find(ecam: &mut Ecam, address: PciAddress) -> Option<u16> {
    let mut offset = FIRST_EXTENDED_CAPABILITY;
    for _ in 0..MAX_EXTENDED_CAPABILITIES {
        let header = ecam.read32(address, offset);
        // 0: no extended capabilities; all ones: no function (or no extended space).
        if header == 0 || header == u32::MAX {
            return None;
        }
        if header & 0xffff == PASID_CAPABILITY_ID {
            return Some(offset);
        }
        let next = (header >> 20) as u16 & !0x3;
        if next < FIRST_EXTENDED_CAPABILITY {
            return None;
        }
        offset = next;
    }
    None
}

/// The function's Max PASID Width (0: no PASID capability, so no tagged DMA), with PASIDs
/// enabled in the capability when it has one: the IOMMU's per-PASID entries decide what a
/// tagged request reaches, and a PASID the device is not attached at faults.
pub fn enable(ecam: &mut Ecam, address: PciAddress) -> u8 {
    let Some(capability) = find(ecam, address) else { return 0 };
    let at = capability + CAPABILITY_AND_CONTROL;
    let registers = ecam.read32(address, at);
    let width = ((registers >> MAX_WIDTH_SHIFT) & MAX_WIDTH_MASK) as u8;
    if width > 0 {
        // The capability half is read-only: writing it back changes nothing.
        ecam.write32(address, at, registers | CONTROL_PASID_ENABLE);
    }
    width
}
