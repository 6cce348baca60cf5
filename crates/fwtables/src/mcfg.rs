//! MCFG: where each PCI segment's ECAM (enhanced configuration access mechanism) window lives.
//!
//! Layout from the PCI Firmware Specification 3.3 §4.1.2 (Table 4-2 and 4-3). The IOMMU server
//! needs it to read bridge secondary bus numbers when resolving DMAR device-scope paths.

use alloc::vec::Vec;

use crate::error::{ParseError, Problem};
use crate::layout::{array_offset, View};
use crate::sdt::{SdtHeader, Signature};
use crate::warning::{self, Warning, WarningKind};

/// MCFG body layout after the SDT header, PCI Firmware Spec §4.1.2 Table 4-2.
pub mod layout {
    use crate::layout::Field;
    pub const RESERVED: Field<[u8; 8]> = Field::new(36, "Reserved");
    /// Offset of the first configuration space base address allocation structure.
    pub const ALLOCATIONS: usize = 44;
    const _: () = assert!(RESERVED.end() == ALLOCATIONS);

    /// Allocation structure, PCI Firmware Spec §4.1.2 Table 4-3.
    pub mod allocation {
        use crate::layout::Field;
        pub const BASE_ADDRESS: Field<u64> = Field::new(0, "Base Address");
        pub const SEGMENT: Field<u16> = Field::new(8, "PCI Segment Group Number");
        pub const START_BUS: Field<u8> = Field::new(10, "Start Bus Number");
        pub const END_BUS: Field<u8> = Field::new(11, "End Bus Number");
        pub const RESERVED: Field<[u8; 4]> = Field::new(12, "Reserved");
        pub const SIZE: usize = 16;
        const _: () = assert!(RESERVED.end() == SIZE);
    }
}

/// One ECAM window: configuration space for buses `start_bus..=end_bus` of `segment`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EcamSegment {
    /// Table offset of this allocation structure.
    pub offset: usize,
    /// Physical address of bus 0's configuration space in this segment (even when `start_bus`
    /// is not 0: the spec defines the base as if the window started at bus 0).
    pub base_address: u64,
    pub segment: u16,
    pub start_bus: u8,
    pub end_bus: u8,
}

impl EcamSegment {
    /// Physical address of the 4 KiB configuration space of `bus:device.function`, or `None` if
    /// the bus is outside the window or device/function are out of range.
    pub fn config_address(&self, bus: u8, device: u8, function: u8) -> Option<u64> {
        if !(self.start_bus..=self.end_bus).contains(&bus) || device > 31 || function > 7 {
            return None;
        }
        // ECAM offset: bus << 20 | device << 15 | function << 12 (PCIe Base Spec §7.2.2).
        let offset = (u64::from(bus) << 20) | (u64::from(device) << 15) | (u64::from(function) << 12);
        self.base_address.checked_add(offset)
    }
}

/// A parsed MCFG.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mcfg {
    pub header: SdtHeader,
    pub segments: Vec<EcamSegment>,
    /// Firmware bugs in the allocations, in table order.
    pub warnings: Vec<Warning>,
}

impl Mcfg {
    /// Parses a whole MCFG table.
    pub fn parse(bytes: &[u8]) -> Result<Mcfg, ParseError> {
        use layout::allocation as a;
        let (header, table) = SdtHeader::parse_expecting(bytes, Signature::MCFG)?;
        let view = View::table(table, Signature::MCFG, "MCFG");
        view.range(layout::ALLOCATIONS, 0, layout::RESERVED.name)?;
        let body = table.len() - layout::ALLOCATIONS.min(table.len());
        if !body.is_multiple_of(a::SIZE) {
            return Err(view.error(
                "Length",
                4,
                Problem::InvalidValue { value: u64::from(header.length), expected: "44 plus a multiple of 16" },
            ));
        }
        let mut segments = Vec::with_capacity(body / a::SIZE);
        for index in 0..body / a::SIZE {
            let at = array_offset(&view, "Allocation", layout::ALLOCATIONS, index, a::SIZE)?;
            let entry = view.sub(at, a::SIZE, "MCFG allocation", "Allocation")?;
            let segment = EcamSegment {
                offset: entry.table_offset(),
                base_address: entry.get(a::BASE_ADDRESS)?,
                segment: entry.get(a::SEGMENT)?,
                start_bus: entry.get(a::START_BUS)?,
                end_bus: entry.get(a::END_BUS)?,
            };
            segments.push(segment);
        }
        header.require_checksum(table)?;
        let warnings = warnings(&segments);
        Ok(Mcfg { header, segments, warnings })
    }

    /// The usable ECAM window (not ignored for a firmware bug) covering `bus` of `segment`.
    pub fn segment_for(&self, segment: u16, bus: u8) -> Option<&EcamSegment> {
        self.segments.iter().find(|s| {
            s.segment == segment && (s.start_bus..=s.end_bus).contains(&bus) && !warning::ignored(&self.warnings, s.offset)
        })
    }
}

/// Allocations that cannot be used as they stand: an inverted bus range, or buses an earlier
/// allocation of the segment already covers (the earlier one wins). Both are ignored.
fn warnings(segments: &[EcamSegment]) -> Vec<Warning> {
    use layout::allocation as a;
    let mut found = Vec::new();
    let mut kept: Vec<&EcamSegment> = Vec::new();
    for s in segments {
        let (field, kind) = if s.end_bus < s.start_bus {
            (a::END_BUS, WarningKind::EndBusBelowStartBus { start: s.start_bus, end: s.end_bus })
        } else if let Some(first) =
            kept.iter().find(|k| k.segment == s.segment && k.start_bus <= s.end_bus && s.start_bus <= k.end_bus)
        {
            (a::START_BUS, WarningKind::OverlappingEcam { first: first.offset })
        } else {
            kept.push(s);
            continue;
        };
        found.push(Warning {
            table: Signature::MCFG,
            structure: "MCFG allocation",
            entry: s.offset,
            field: field.name,
            offset: s.offset + field.offset,
            kind,
            entry_ignored: true,
        });
    }
    found
}
