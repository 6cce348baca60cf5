//! The one error type every table parser returns.
//!
//! A malformed table must be diagnosable from the message alone, so a [`ParseError`] names the
//! table, the structure being decoded, the field that was bad, and that field's byte offset from
//! the start of the table (the same offsets `iasl -d` prints in its left column).

use core::fmt;

use crate::sdt::Signature;

/// What was wrong with a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem {
    /// The field or structure needs `needed` bytes but its enclosing structure (or the table)
    /// has only `available` bytes left at that offset.
    Truncated { needed: usize, available: usize },
    /// A length field is smaller than the fixed part of the structure it describes.
    LengthTooSmall { length: u64, minimum: u64 },
    /// Offset plus count times entry size does not fit in the address space.
    Overflow,
    /// The table does not start with the signature the parser was asked for.
    WrongSignature { expected: Signature, found: Signature },
    /// A field holds a value the specification does not allow; `expected` says what would be.
    InvalidValue { value: u64, expected: &'static str },
    /// A string field has no NUL terminator inside its structure.
    Unterminated,
    /// A string field holds a byte outside printable ASCII.
    NotAscii { byte: u8 },
    /// The table's bytes sum to `sum` modulo 256 instead of zero (ACPI §5.2.6).
    ChecksumMismatch { sum: u8 },
    /// An ID mapping of the IORT node at `node` references `reference`, which lies past the
    /// table's end.
    ReferenceOutsideTable { node: u32, reference: u32 },
    /// An ID mapping of the node at `node` references `reference`, inside the table but in no
    /// node (the header or a gap).
    ReferenceNotANode { node: u32, reference: u32 },
    /// An ID mapping of the node at `node` references `reference`, which lies inside the body
    /// of the node at `target` instead of at a node's start.
    ReferenceIntoNode { node: u32, reference: u32, target: u32 },
    /// An ID mapping of the node at `node` references the node at `reference`, whose kind
    /// (`found`) cannot receive its IDs; `expected` names the kinds that can.
    WrongReferenceKind { node: u32, reference: u32, found: &'static str, expected: &'static str },
    /// ID mappings form a cycle: a mapping of the node at `node` leads back to the node at
    /// `back_to`, which leads to `node` again through `length` nodes in all.
    MappingCycle { node: u32, back_to: u32, length: usize },
}

/// A table that could not be decoded, located precisely.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// Signature of the table being parsed.
    pub table: Signature,
    /// The structure being decoded, e.g. "DRHD", "device scope", "SMMUv3 node".
    pub structure: &'static str,
    /// The field that was bad, in the specification's own words.
    pub field: &'static str,
    /// Byte offset of that field from the start of the table.
    pub offset: usize,
    /// What was wrong with it.
    pub problem: Problem,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Problem::Truncated { needed, available } => {
                write!(f, "needs {needed} bytes but only {available} remain")
            }
            Problem::LengthTooSmall { length, minimum } => {
                write!(f, "length {length} is below the minimum {minimum}")
            }
            Problem::Overflow => f.write_str("offset arithmetic overflows"),
            Problem::WrongSignature { expected, found } => {
                write!(f, "signature is \"{found}\", expected \"{expected}\"")
            }
            Problem::InvalidValue { value, expected } => {
                write!(f, "value {value:#x} is invalid: expected {expected}")
            }
            Problem::Unterminated => f.write_str("string has no NUL terminator"),
            Problem::NotAscii { byte } => write!(f, "string contains non-ASCII byte {byte:#04x}"),
            Problem::ChecksumMismatch { sum } => {
                write!(f, "table bytes sum to {sum:#04x}, not zero: the checksum is wrong")
            }
            Problem::ReferenceOutsideTable { node, reference } => write!(
                f,
                "the node at {node:#x} references {reference:#x}, past the end of the table (dangling reference)"
            ),
            Problem::ReferenceNotANode { node, reference } => write!(
                f,
                "the node at {node:#x} references {reference:#x}, where no node is (dangling reference)"
            ),
            Problem::ReferenceIntoNode { node, reference, target } => write!(
                f,
                "the node at {node:#x} references {reference:#x}, inside the node at {target:#x} rather than at its start"
            ),
            Problem::WrongReferenceKind { node, reference, found, expected } => write!(
                f,
                "the node at {node:#x} references the {found} node at {reference:#x}; expected {expected}"
            ),
            Problem::MappingCycle { node, back_to, length } => write!(
                f,
                "ID mappings form a cycle of {length} nodes: the node at {node:#x} maps back to the node at {back_to:#x}"
            ),
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: field \"{}\" at table offset {:#x}: {}",
            self.table, self.structure, self.field, self.offset, self.problem
        )
    }
}

impl core::error::Error for ParseError {}
