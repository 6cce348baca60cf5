//! The PVH start-of-day structure (`hvm_start_info`, Xen public/arch-x86/hvm/start_info.h).

use super::phys_slice;
use crate::PhysRange;

const START_INFO_MAGIC: u32 = 0x336e_c578;
/// E820 type of usable RAM.
const E820_RAM: u32 = 1;
const E820_ENTRY_SIZE: usize = 24;
const EARLY_DIRECT_MAP_LIMIT: u64 = crate::EARLY_DIRECT_MAP_SIZE;

pub struct StartInfo {
    raw: &'static [u8],
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

impl StartInfo {
    /// Layout (version 1): magic @0, version @4, flags @8, nr_modules @12, modlist_paddr @16,
    /// cmdline_paddr @24, rsdp_paddr @32, memmap_paddr @40, memmap_entries @48.
    pub fn read(phys: u64) -> StartInfo {
        let raw = phys_slice(phys, 56);
        assert_eq!(le32(raw, 0), START_INFO_MAGIC, "PVH start info magic missing");
        StartInfo { raw }
    }

    pub fn rsdp(&self) -> Option<u64> {
        Some(le64(self.raw, 32)).filter(|&p| p != 0)
    }

    pub fn cmdline(&self) -> Option<&'static [u8]> {
        let phys = le64(self.raw, 24);
        if phys == 0 || phys >= EARLY_DIRECT_MAP_LIMIT {
            return None;
        }
        let window = phys_slice(phys, crate::MAX_CMDLINE);
        Some(window)
    }

    /// Usable RAM from the E820 map, clipped to what the early direct map covers.
    pub fn ram_regions(&self) -> impl Iterator<Item = PhysRange> {
        let phys = le64(self.raw, 40);
        let count = le32(self.raw, 48) as usize;
        let table = if phys == 0 { &[][..] } else { phys_slice(phys, count * E820_ENTRY_SIZE) };
        table.chunks_exact(E820_ENTRY_SIZE).filter_map(|e| {
            let (addr, size, kind) = (le64(e, 0), le64(e, 8), le32(e, 16));
            let end = addr.saturating_add(size).min(EARLY_DIRECT_MAP_LIMIT);
            (kind == E820_RAM && addr < end).then_some(PhysRange { start: addr, end })
        })
    }
}

impl StartInfo {
    /// E820 ACPI-reclaimable (3) and NVS (4) and reserved (2) ranges below the PCI hole: where
    /// SeaBIOS keeps the ACPI tables.
    pub fn firmware_regions(&self) -> impl Iterator<Item = PhysRange> {
        const E820_RESERVED: u32 = 2;
        const E820_ACPI: u32 = 3;
        const E820_NVS: u32 = 4;
        const PCI_HOLE: u64 = 0xB000_0000;
        let phys = le64(self.raw, 40);
        let count = le32(self.raw, 48) as usize;
        let table = if phys == 0 { &[][..] } else { phys_slice(phys, count * E820_ENTRY_SIZE) };
        table.chunks_exact(E820_ENTRY_SIZE).filter_map(|e| {
            let (addr, size, kind) = (le64(e, 0), le64(e, 8), le32(e, 16));
            let end = addr.saturating_add(size).min(PCI_HOLE);
            let firmware = matches!(kind, E820_RESERVED | E820_ACPI | E820_NVS);
            (firmware && addr < end).then_some(PhysRange { start: addr & !0xFFF, end: (end + 0xFFF) & !0xFFF })
        })
    }
}

/// ACPI 6.5 §5.2.5.1: on legacy BIOS systems the RSDP is on a 16-byte boundary in
/// 0xE0000..0xFFFFF. Used when the PVH loader left rsdp_paddr zero.
pub fn find_rsdp_in_bios_area() -> Option<u64> {
    let area = phys_slice(0xE_0000, 0x2_0000);
    (0..area.len())
        .step_by(16)
        .find(|&off| &area[off..off + 8] == b"RSD PTR ")
        .map(|off| 0xE_0000 + off as u64)
}
