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
