//! DMAR, the ACPI table describing Intel VT-d remapping hardware (Intel VT-d Architecture
//! Specification, chapter 8 "BIOS Considerations").
//!
//! [`Dmar::parse`] decodes the header and every remapping structure in table order into owned
//! values. Structures of a type this crate does not know are kept as
//! [`RemappingStructure::Unknown`] (VT-d §8.2 tells software to skip them by their length)
//! so a caller can report them; a structure whose length field cannot be trusted is an error
//! because nothing after it can be located.
//!
//! Contents that are wrong in a sound structure (an RMRR whose limit lies below its base, a
//! unit at register base zero, duplicate units, an empty scope path) do not stop the parse:
//! they become [`Warning`]s in [`Dmar::warnings`], and the query methods ([`Dmar::drhds`],
//! [`Dmar::rmrrs`]) skip the entries those warnings mark ignored. A wrong checksum is an error.
//!
//! Device scopes (§8.3.1) are decoded for every structure that carries them. Turning a scope's
//! path into a bus/device/function needs the live PCI topology; see the [`pci`] module.

pub mod pci;
mod checks;

use alloc::string::String;
use alloc::vec::Vec;

use crate::error::{ParseError, Problem};
use crate::layout::View;
use crate::sdt::{SdtHeader, Signature};
use crate::warning::{self, Warning};

/// Field layouts of the DMAR and its remapping structures. Offsets inside a remapping structure
/// are relative to that structure's start.
pub mod layout {
    use crate::layout::Field;

    /// DMAR header fields after the SDT header, VT-d §8.1 Table "DMA Remapping Reporting
    /// Structure".
    pub const HOST_ADDRESS_WIDTH: Field<u8> = Field::new(36, "Host Address Width");
    pub const FLAGS: Field<u8> = Field::new(37, "Flags");
    pub const RESERVED: Field<[u8; 10]> = Field::new(38, "Reserved");
    /// Offset of the first remapping structure.
    pub const STRUCTURES: usize = 48;
    const _: () = assert!(RESERVED.end() == STRUCTURES);

    /// Common remapping structure header, VT-d §8.2.
    pub mod structure {
        use crate::layout::Field;
        pub const TYPE: Field<u16> = Field::new(0, "Type");
        pub const LENGTH: Field<u16> = Field::new(2, "Length");
        pub const SIZE: usize = 4;
        const _: () = assert!(LENGTH.end() == SIZE);
    }

    /// DMA Remapping Hardware Unit Definition, VT-d §8.3.
    pub mod drhd {
        use crate::layout::Field;
        pub const FLAGS: Field<u8> = Field::new(4, "Flags");
        pub const SIZE_FIELD: Field<u8> = Field::new(5, "Size");
        pub const SEGMENT: Field<u16> = Field::new(6, "Segment Number");
        pub const REGISTER_BASE: Field<u64> = Field::new(8, "Register Base Address");
        /// Device scopes start here.
        pub const FIXED: usize = 16;
        const _: () = assert!(REGISTER_BASE.end() == FIXED);
    }

    /// Reserved Memory Region Reporting structure, VT-d §8.4.
    pub mod rmrr {
        use crate::layout::Field;
        pub const RESERVED: Field<u16> = Field::new(4, "Reserved");
        pub const SEGMENT: Field<u16> = Field::new(6, "Segment Number");
        pub const BASE: Field<u64> = Field::new(8, "Reserved Memory Region Base Address");
        pub const LIMIT: Field<u64> = Field::new(16, "Reserved Memory Region Limit Address");
        pub const FIXED: usize = 24;
        const _: () = assert!(LIMIT.end() == FIXED);
    }

    /// Root Port ATS Capability Reporting structure, VT-d §8.5.
    pub mod atsr {
        use crate::layout::Field;
        pub const FLAGS: Field<u8> = Field::new(4, "Flags");
        pub const RESERVED: Field<u8> = Field::new(5, "Reserved");
        pub const SEGMENT: Field<u16> = Field::new(6, "Segment Number");
        pub const FIXED: usize = 8;
        const _: () = assert!(SEGMENT.end() == FIXED);
    }

    /// Remapping Hardware Static Affinity structure, VT-d §8.6.
    pub mod rhsa {
        use crate::layout::Field;
        pub const RESERVED: Field<u32> = Field::new(4, "Reserved");
        pub const REGISTER_BASE: Field<u64> = Field::new(8, "Register Base Address");
        pub const PROXIMITY_DOMAIN: Field<u32> = Field::new(16, "Proximity Domain");
        pub const FIXED: usize = 20;
        const _: () = assert!(PROXIMITY_DOMAIN.end() == FIXED);
    }

    /// ACPI Name-space Device Declaration structure, VT-d §8.7.
    pub mod andd {
        use crate::layout::Field;
        pub const RESERVED: Field<[u8; 3]> = Field::new(4, "Reserved");
        pub const DEVICE_NUMBER: Field<u8> = Field::new(7, "ACPI Device Number");
        /// The NUL-terminated ACPI object name starts here.
        pub const OBJECT_NAME: usize = 8;
        const _: () = assert!(DEVICE_NUMBER.end() == OBJECT_NAME);
    }

    /// SoC Integrated Address Translation Cache reporting structure, VT-d §8.8.
    pub mod satc {
        use crate::layout::Field;
        pub const FLAGS: Field<u8> = Field::new(4, "Flags");
        pub const RESERVED: Field<u8> = Field::new(5, "Reserved");
        pub const SEGMENT: Field<u16> = Field::new(6, "Segment Number");
        pub const FIXED: usize = 8;
        const _: () = assert!(SEGMENT.end() == FIXED);
    }

    /// SoC Integrated Device Property reporting structure, VT-d §8.9.
    pub mod sidp {
        use crate::layout::Field;
        pub const RESERVED: Field<u16> = Field::new(4, "Reserved");
        pub const SEGMENT: Field<u16> = Field::new(6, "Segment Number");
        pub const FIXED: usize = 8;
        const _: () = assert!(SEGMENT.end() == FIXED);
    }

    /// Device Scope structure, VT-d §8.3.1.
    pub mod scope {
        use crate::layout::Field;
        pub const TYPE: Field<u8> = Field::new(0, "Device Scope Type");
        pub const LENGTH: Field<u8> = Field::new(1, "Length");
        pub const FLAGS: Field<u8> = Field::new(2, "Flags");
        pub const RESERVED: Field<u8> = Field::new(3, "Reserved");
        pub const ENUMERATION_ID: Field<u8> = Field::new(4, "Enumeration ID");
        pub const START_BUS: Field<u8> = Field::new(5, "Start Bus Number");
        /// Path entries (2 bytes each: device, function) start here.
        pub const PATH: usize = 6;
        pub const PATH_ENTRY_SIZE: usize = 2;
        const _: () = assert!(START_BUS.end() == PATH);
    }
}

/// Remapping structure type codes, VT-d §8.2 Table "Remapping Structure Types".
pub mod structure_type {
    pub const DRHD: u16 = 0;
    pub const RMRR: u16 = 1;
    pub const ATSR: u16 = 2;
    pub const RHSA: u16 = 3;
    pub const ANDD: u16 = 4;
    pub const SATC: u16 = 5;
    pub const SIDP: u16 = 6;
}

/// The DMAR header's Flags byte, VT-d §8.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmarFlags(pub u8);

impl DmarFlags {
    /// Bit 0 INTR_REMAP: the platform supports interrupt remapping.
    pub fn intr_remap(self) -> bool {
        self.0 & 1 != 0
    }
    /// Bit 1 X2APIC_OPT_OUT: firmware asks the OS not to enable x2APIC mode.
    pub fn x2apic_opt_out(self) -> bool {
        self.0 & 2 != 0
    }
    /// Bit 2 DMA_CTRL_PLATFORM_OPT_IN: firmware supports the OS keeping DMA protection on
    /// across the handoff (the "DMA protection" opt-in).
    pub fn dma_ctrl_platform_opt_in(self) -> bool {
        self.0 & 4 != 0
    }
}

/// Device scope entry types, VT-d §8.3.1 Table "Device Scope Entry Types".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScopeType {
    /// 1: a PCI endpoint device.
    PciEndpoint,
    /// 2: a PCI-PCI bridge and every device below it.
    PciSubHierarchy,
    /// 3: an I/O APIC; the enumeration ID is its APIC ID.
    IoApic,
    /// 4: an MSI-capable HPET; the enumeration ID is its HPET number.
    MsiCapableHpet,
    /// 5: an ACPI namespace device; the enumeration ID is the ANDD device number.
    AcpiNamespaceDevice,
    /// Any other value (0 and 6..=255 are reserved).
    Reserved(u8),
}

impl ScopeType {
    pub fn from_raw(raw: u8) -> ScopeType {
        match raw {
            1 => ScopeType::PciEndpoint,
            2 => ScopeType::PciSubHierarchy,
            3 => ScopeType::IoApic,
            4 => ScopeType::MsiCapableHpet,
            5 => ScopeType::AcpiNamespaceDevice,
            other => ScopeType::Reserved(other),
        }
    }

    pub fn raw(self) -> u8 {
        match self {
            ScopeType::PciEndpoint => 1,
            ScopeType::PciSubHierarchy => 2,
            ScopeType::IoApic => 3,
            ScopeType::MsiCapableHpet => 4,
            ScopeType::AcpiNamespaceDevice => 5,
            ScopeType::Reserved(raw) => raw,
        }
    }
}

/// One hop of a device-scope path: the device and function of a device on the current bus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathEntry {
    pub device: u8,
    pub function: u8,
}

/// A device scope entry, VT-d §8.3.1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceScope {
    /// Table offset of the entry.
    pub offset: usize,
    pub scope_type: ScopeType,
    pub length: u8,
    /// Flags byte (reserved in older revisions of the spec; reported raw).
    pub flags: u8,
    pub enumeration_id: u8,
    pub start_bus: u8,
    /// The path from `start_bus` to the device, one (device, function) per bus crossed.
    pub path: Vec<PathEntry>,
}

/// DMA Remapping Hardware Unit Definition, VT-d §8.3.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drhd {
    pub offset: usize,
    pub length: u16,
    pub flags: u8,
    /// Raw Size byte; see [`Drhd::register_set_size`].
    pub size: u8,
    pub segment: u16,
    pub register_base: u64,
    pub scopes: Vec<DeviceScope>,
    /// Revision of the DMAR this unit came from: it decides whether `size` is defined.
    table_revision: u8,
}

impl Drhd {
    /// Flags bit 0 INCLUDE_PCI_ALL: the unit covers every PCI device of its segment not claimed
    /// by another unit's explicit scope (§8.3).
    pub fn include_pci_all(&self) -> bool {
        self.flags & 1 != 0
    }

    /// Size of the register set in bytes: 2^(Size bits 3:0) 4 KiB pages. The Size byte was
    /// reserved (zero) in DMAR revision 1 tables, whose units always have one page; `None` then.
    pub fn register_set_size(&self) -> Option<u64> {
        (self.table_revision >= 2).then(|| 4096u64 << (self.size & 0x0f))
    }
}

/// Reserved Memory Region Reporting structure, VT-d §8.4.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rmrr {
    pub offset: usize,
    pub length: u16,
    pub segment: u16,
    pub base: u64,
    /// Last byte of the region (inclusive limit, as the spec defines it).
    pub limit: u64,
    pub scopes: Vec<DeviceScope>,
}

/// Root Port ATS Capability Reporting structure, VT-d §8.5.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Atsr {
    pub offset: usize,
    pub length: u16,
    pub flags: u8,
    pub segment: u16,
    pub scopes: Vec<DeviceScope>,
}

impl Atsr {
    /// Flags bit 0 ALL_PORTS: every root port of the segment supports ATS.
    pub fn all_ports(&self) -> bool {
        self.flags & 1 != 0
    }
}

/// Remapping Hardware Static Affinity structure, VT-d §8.6.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rhsa {
    pub offset: usize,
    pub length: u16,
    pub register_base: u64,
    pub proximity_domain: u32,
}

/// ACPI Name-space Device Declaration structure, VT-d §8.7.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Andd {
    pub offset: usize,
    pub length: u16,
    /// Matched by the enumeration ID of ACPI-namespace-device scopes.
    pub device_number: u8,
    /// Fully qualified ACPI object name, e.g. `\_SB.PCI0.I2C0`.
    pub object_name: String,
}

/// SoC Integrated Address Translation Cache reporting structure, VT-d §8.8.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Satc {
    pub offset: usize,
    pub length: u16,
    pub flags: u8,
    pub segment: u16,
    pub scopes: Vec<DeviceScope>,
}

impl Satc {
    /// Flags bit 0 ATC_REQUIRED: the listed devices need ATS enabled to function correctly.
    pub fn atc_required(&self) -> bool {
        self.flags & 1 != 0
    }
}

/// SoC Integrated Device Property reporting structure, VT-d §8.9.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sidp {
    pub offset: usize,
    pub length: u16,
    pub segment: u16,
    pub scopes: Vec<DeviceScope>,
}

/// One remapping structure, in table order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemappingStructure {
    Drhd(Drhd),
    Rmrr(Rmrr),
    Atsr(Atsr),
    Rhsa(Rhsa),
    Andd(Andd),
    Satc(Satc),
    Sidp(Sidp),
    /// A reserved type: skipped by its length, kept so it can be reported.
    Unknown { offset: usize, structure_type: u16, length: u16 },
}

/// A parsed DMAR table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dmar {
    pub header: SdtHeader,
    /// Raw Host Address Width: the DMA physical address width minus one (§8.1).
    pub host_address_width: u8,
    pub flags: DmarFlags,
    pub structures: Vec<RemappingStructure>,
    /// Firmware bugs found in the structures, in table order.
    pub warnings: Vec<Warning>,
}

impl Dmar {
    /// Parses a whole DMAR table (header included).
    pub fn parse(bytes: &[u8]) -> Result<Dmar, ParseError> {
        let (header, table) = SdtHeader::parse_expecting(bytes, Signature::DMAR)?;
        let view = View::table(table, Signature::DMAR, "DMAR header");
        let host_address_width = view.get(layout::HOST_ADDRESS_WIDTH)?;
        let flags = DmarFlags(view.get(layout::FLAGS)?);
        view.range(layout::STRUCTURES, 0, layout::RESERVED.name)?;

        let mut structures = Vec::new();
        let mut at = layout::STRUCTURES;
        while at < table.len() {
            let (structure, length) = parse_structure(&view, at, header.revision)?;
            structures.push(structure);
            at += length;
        }
        header.require_checksum(table)?;
        let warnings = checks::warnings(&structures);
        Ok(Dmar { header, host_address_width, flags, structures, warnings })
    }

    /// Whether a warning makes consumers skip the structure or device scope at table offset
    /// `offset`.
    pub fn ignored(&self, offset: usize) -> bool {
        warning::ignored(&self.warnings, offset)
    }

    /// DMA physical address width in bits (Host Address Width + 1).
    pub fn dma_address_width(&self) -> u32 {
        u32::from(self.host_address_width) + 1
    }

    /// Every usable DRHD (not ignored for a firmware bug), in table order.
    pub fn drhds(&self) -> impl Iterator<Item = &Drhd> {
        self.structures.iter().filter_map(|s| match s {
            RemappingStructure::Drhd(d) if !self.ignored(d.offset) => Some(d),
            _ => None,
        })
    }

    /// Every usable RMRR (not ignored for a firmware bug), in table order.
    pub fn rmrrs(&self) -> impl Iterator<Item = &Rmrr> {
        self.structures.iter().filter_map(|s| match s {
            RemappingStructure::Rmrr(r) if !self.ignored(r.offset) => Some(r),
            _ => None,
        })
    }

    /// The ANDD declaring ACPI device `number` (what an ACPI-namespace-device scope's
    /// enumeration ID refers to).
    pub fn andd(&self, number: u8) -> Option<&Andd> {
        self.structures.iter().find_map(|s| match s {
            RemappingStructure::Andd(a) if a.device_number == number => Some(a),
            _ => None,
        })
    }
}

const STRUCTURE_NAMES: [&str; 7] = ["DRHD", "RMRR", "ATSR", "RHSA", "ANDD", "SATC", "SIDP"];

/// Parses the remapping structure at table offset `at`; returns it and its length.
fn parse_structure(table: &View<'_>, at: usize, revision: u8) -> Result<(RemappingStructure, usize), ParseError> {
    use layout::structure as h;
    let name = table
        .read_at::<u16>(at + h::TYPE.offset, h::TYPE.name)
        .ok()
        .and_then(|t| STRUCTURE_NAMES.get(usize::from(t)).copied())
        .unwrap_or("remapping structure");
    let head = table.sub(at, h::SIZE, name, h::TYPE.name)?;
    let structure_type = head.get(h::TYPE)?;
    let length = head.get(h::LENGTH)?;
    let fixed = match structure_type {
        structure_type::DRHD => layout::drhd::FIXED,
        structure_type::RMRR => layout::rmrr::FIXED,
        structure_type::ATSR => layout::atsr::FIXED,
        structure_type::RHSA => layout::rhsa::FIXED,
        // The name needs at least its NUL.
        structure_type::ANDD => layout::andd::OBJECT_NAME + 1,
        structure_type::SATC => layout::satc::FIXED,
        structure_type::SIDP => layout::sidp::FIXED,
        _ => h::SIZE,
    };
    head.require_min_len(h::LENGTH.offset, h::LENGTH.name, usize::from(length), fixed)?;
    let s = table.sub_by_length(at, usize::from(length), name, h::LENGTH)?;
    let offset = s.table_offset();
    let parsed = match structure_type {
        structure_type::DRHD => {
            use layout::drhd as l;
            RemappingStructure::Drhd(Drhd {
                offset,
                length,
                flags: s.get(l::FLAGS)?,
                size: s.get(l::SIZE_FIELD)?,
                segment: s.get(l::SEGMENT)?,
                register_base: s.get(l::REGISTER_BASE)?,
                scopes: parse_scopes(&s, l::FIXED)?,
                table_revision: revision,
            })
        }
        structure_type::RMRR => {
            use layout::rmrr as l;
            let rmrr = Rmrr {
                offset,
                length,
                segment: s.get(l::SEGMENT)?,
                base: s.get(l::BASE)?,
                limit: s.get(l::LIMIT)?,
                scopes: parse_scopes(&s, l::FIXED)?,
            };
            RemappingStructure::Rmrr(rmrr)
        }
        structure_type::ATSR => {
            use layout::atsr as l;
            RemappingStructure::Atsr(Atsr {
                offset,
                length,
                flags: s.get(l::FLAGS)?,
                segment: s.get(l::SEGMENT)?,
                scopes: parse_scopes(&s, l::FIXED)?,
            })
        }
        structure_type::RHSA => {
            use layout::rhsa as l;
            RemappingStructure::Rhsa(Rhsa {
                offset,
                length,
                register_base: s.get(l::REGISTER_BASE)?,
                proximity_domain: s.get(l::PROXIMITY_DOMAIN)?,
            })
        }
        structure_type::ANDD => {
            use layout::andd as l;
            RemappingStructure::Andd(Andd {
                offset,
                length,
                device_number: s.get(l::DEVICE_NUMBER)?,
                object_name: String::from(s.ascii_z(l::OBJECT_NAME, "ACPI Object Name")?),
            })
        }
        structure_type::SATC => {
            use layout::satc as l;
            RemappingStructure::Satc(Satc {
                offset,
                length,
                flags: s.get(l::FLAGS)?,
                segment: s.get(l::SEGMENT)?,
                scopes: parse_scopes(&s, l::FIXED)?,
            })
        }
        structure_type::SIDP => {
            use layout::sidp as l;
            RemappingStructure::Sidp(Sidp {
                offset,
                length,
                segment: s.get(l::SEGMENT)?,
                scopes: parse_scopes(&s, l::FIXED)?,
            })
        }
        other => RemappingStructure::Unknown { offset, structure_type: other, length },
    };
    Ok((parsed, usize::from(length)))
}

/// Parses the device scopes filling `structure` from `start` to its end.
fn parse_scopes(structure: &View<'_>, start: usize) -> Result<Vec<DeviceScope>, ParseError> {
    use layout::scope as l;
    let mut scopes = Vec::new();
    let mut at = start;
    while at < structure.len() {
        let head = structure.sub(at, l::PATH, "device scope", l::TYPE.name)?;
        let length = head.get(l::LENGTH)?;
        head.require_min_len(l::LENGTH.offset, l::LENGTH.name, usize::from(length), l::PATH)?;
        // The path is a whole number of 2-byte (device, function) entries.
        if !(usize::from(length) - l::PATH).is_multiple_of(l::PATH_ENTRY_SIZE) {
            return Err(head.error(
                l::LENGTH.name,
                l::LENGTH.offset,
                Problem::InvalidValue { value: u64::from(length), expected: "6 plus an even number" },
            ));
        }
        let entry = structure.sub_by_length(at, usize::from(length), "device scope", l::LENGTH)?;
        let path = entry
            .bytes()
            .get(l::PATH..)
            .unwrap_or_default()
            .chunks_exact(l::PATH_ENTRY_SIZE)
            .map(|pair| PathEntry { device: pair[0], function: pair[1] })
            .collect();
        scopes.push(DeviceScope {
            offset: entry.table_offset(),
            scope_type: ScopeType::from_raw(entry.get(l::TYPE)?),
            length,
            flags: entry.get(l::FLAGS)?,
            enumeration_id: entry.get(l::ENUMERATION_ID)?,
            start_bus: entry.get(l::START_BUS)?,
            path,
        });
        at += usize::from(length);
    }
    Ok(scopes)
}
