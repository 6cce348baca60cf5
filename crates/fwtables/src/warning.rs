//! Firmware bugs in tables that still decode.
//!
//! Real firmware ships tables whose structure is sound but whose contents are wrong: an RMRR
//! whose limit lies below its base, a remapping unit at address zero, two units at the same
//! address. Rejecting the whole table for one such entry would leave every device unprotected,
//! so the parsers decode the table, record a [`Warning`] per bad entry (located like a
//! [`ParseError`](crate::ParseError): table, structure, field and table offset) and say whether
//! the entry is ignored. The query methods of [`Dmar`](crate::dmar::Dmar),
//! [`Iort`](crate::iort::Iort) and [`Mcfg`](crate::mcfg::Mcfg) skip ignored entries; the raw
//! structure lists keep them so tools can print what the firmware said.

use core::fmt;

use crate::sdt::Signature;

/// What is wrong with an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WarningKind {
    /// RMRR: the limit (inclusive end) lies below the base address.
    RmrrLimitBelowBase { base: u64, limit: u64 },
    /// RMRR: the base is not 4 KiB aligned or the limit does not end a 4 KiB page (VT-d §8.4).
    RmrrNotPageAligned { base: u64, limit: u64 },
    /// DRHD: the register base address is zero.
    ZeroRegisterBase,
    /// DRHD: the register base is not 4 KiB aligned (VT-d §8.3).
    RegisterBaseNotPageAligned { base: u64 },
    /// DRHD: another unit earlier in the table has the same register base.
    DuplicateUnit { first: usize },
    /// DRHD with INCLUDE_PCI_ALL followed by another DRHD of its segment (VT-d §8.3 wants the
    /// catch-all unit last); `next` is the table offset of that later unit.
    IncludePciAllNotLast { next: usize },
    /// DRHD: a second INCLUDE_PCI_ALL unit in the segment; `first` is the first one's offset.
    SecondIncludePciAll { first: usize },
    /// Device scope with no path entries (VT-d §8.3.1 requires at least one).
    EmptyScopePath,
    /// IORT ID mapping: the output range runs past 2^32 - 1.
    OutputRangeOverflow { output_base: u32, id_count: u64 },
    /// IORT SMMU node: the base address is zero.
    ZeroAddress,
    /// IORT RMR range: base or length is not a multiple of 64 KiB (DEN0049 "RMR node").
    RangeNotAligned { base: u64, length: u64 },
    /// IORT RMR range: zero length.
    EmptyRange,
    /// IORT SMMUv3: another SMMUv3 node earlier in the table has the same base address.
    DuplicateSmmu { first: u32 },
    /// MCFG allocation: the end bus is below the start bus.
    EndBusBelowStartBus { start: u8, end: u8 },
    /// MCFG allocation: its buses overlap an earlier allocation of the same segment.
    OverlappingEcam { first: usize },
}

/// One firmware bug in an otherwise decodable table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Warning {
    pub table: Signature,
    /// The kind of entry, e.g. "RMRR", "device scope", "ID mapping".
    pub structure: &'static str,
    /// Table offset of the entry (what `fwdump` prints as its `offset`).
    pub entry: usize,
    /// The field at fault, in the specification's words.
    pub field: &'static str,
    /// Table offset of that field.
    pub offset: usize,
    pub kind: WarningKind,
    /// Whether consumers skip the entry (query methods leave it out).
    pub entry_ignored: bool,
}

impl WarningKind {
    /// A short lower_snake_case name, stable for tools (`fwdump` prints it).
    pub fn name(&self) -> &'static str {
        match self {
            WarningKind::RmrrLimitBelowBase { .. } => "rmrr_limit_below_base",
            WarningKind::RmrrNotPageAligned { .. } => "rmrr_not_page_aligned",
            WarningKind::ZeroRegisterBase => "zero_register_base",
            WarningKind::RegisterBaseNotPageAligned { .. } => "register_base_not_page_aligned",
            WarningKind::DuplicateUnit { .. } => "duplicate_unit",
            WarningKind::IncludePciAllNotLast { .. } => "include_pci_all_not_last",
            WarningKind::SecondIncludePciAll { .. } => "second_include_pci_all",
            WarningKind::EmptyScopePath => "empty_scope_path",
            WarningKind::OutputRangeOverflow { .. } => "output_range_overflow",
            WarningKind::ZeroAddress => "zero_address",
            WarningKind::RangeNotAligned { .. } => "range_not_aligned",
            WarningKind::EmptyRange => "empty_range",
            WarningKind::DuplicateSmmu { .. } => "duplicate_smmu",
            WarningKind::EndBusBelowStartBus { .. } => "end_bus_below_start_bus",
            WarningKind::OverlappingEcam { .. } => "overlapping_ecam",
        }
    }
}

impl fmt::Display for WarningKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            WarningKind::RmrrLimitBelowBase { base, limit } => {
                write!(f, "limit {limit:#x} lies below base {base:#x}")
            }
            WarningKind::RmrrNotPageAligned { base, limit } => {
                write!(f, "region {base:#x}..={limit:#x} does not start and end on 4 KiB pages")
            }
            WarningKind::ZeroRegisterBase => f.write_str("register base address is zero"),
            WarningKind::RegisterBaseNotPageAligned { base } => write!(f, "register base {base:#x} is not 4 KiB aligned"),
            WarningKind::DuplicateUnit { first } => write!(f, "same register base as the unit at {first:#x}"),
            WarningKind::IncludePciAllNotLast { next } => {
                write!(f, "INCLUDE_PCI_ALL unit is not the last of its segment (the unit at {next:#x} follows)")
            }
            WarningKind::SecondIncludePciAll { first } => {
                write!(f, "second INCLUDE_PCI_ALL unit of its segment (the first is at {first:#x})")
            }
            WarningKind::EmptyScopePath => f.write_str("device scope has no path entries"),
            WarningKind::OutputRangeOverflow { output_base, id_count } => {
                write!(f, "{id_count} IDs from output base {output_base:#x} run past 0xffffffff")
            }
            WarningKind::ZeroAddress => f.write_str("address is zero"),
            WarningKind::RangeNotAligned { base, length } => {
                write!(f, "range {base:#x} + {length:#x} is not 64 KiB aligned")
            }
            WarningKind::EmptyRange => f.write_str("range is empty"),
            WarningKind::DuplicateSmmu { first } => write!(f, "same base address as the SMMUv3 node at {first:#x}"),
            WarningKind::EndBusBelowStartBus { start, end } => {
                write!(f, "end bus {end:#x} is below start bus {start:#x}")
            }
            WarningKind::OverlappingEcam { first } => {
                write!(f, "bus range overlaps the allocation at {first:#x}")
            }
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} at {:#x}: field \"{}\" at table offset {:#x}: {}{}",
            self.table,
            self.structure,
            self.entry,
            self.field,
            self.offset,
            self.kind,
            if self.entry_ignored { " (entry ignored)" } else { "" }
        )
    }
}

/// Whether any warning in `warnings` makes consumers ignore the entry at table offset `entry`.
pub(crate) fn ignored(warnings: &[Warning], entry: usize) -> bool {
    warnings.iter().any(|w| w.entry_ignored && w.entry == entry)
}
