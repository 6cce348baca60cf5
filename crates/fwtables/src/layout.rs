//! Typed field layouts and bounds-checked reads.
//!
//! Firmware tables are packed little-endian structures at arbitrary alignment. Instead of
//! casting bytes to `#[repr(packed)]` structs (which needs `unsafe` and invites unaligned
//! references), every structure is described by a set of [`Field`] constants: offset, width
//! (from the field's Rust type) and the specification's name for it. Each layout module ends
//! with a `const` assertion that its last field ends exactly at the structure's specified size,
//! so a typo in an offset fails the build.
//!
//! A [`View`] is a window onto one structure inside a table. Reads through it check the field
//! against the window, never the whole table, so a structure whose length field lies cannot
//! make a read stray into its neighbour; failures come back as [`ParseError`]s naming the
//! structure, field and table offset.

use core::marker::PhantomData;

use crate::error::{ParseError, Problem};
use crate::sdt::Signature;

/// A fixed-width little-endian value that can be read out of table bytes.
pub trait LeValue: Copy {
    /// Width in bytes.
    const WIDTH: usize;
    /// Decodes the value from the first `WIDTH` bytes, or `None` if there are fewer.
    fn read(bytes: &[u8]) -> Option<Self>;
}

macro_rules! le_int {
    ($($ty:ty),*) => {$(
        impl LeValue for $ty {
            const WIDTH: usize = core::mem::size_of::<$ty>();
            fn read(bytes: &[u8]) -> Option<Self> {
                bytes.first_chunk().map(|chunk| <$ty>::from_le_bytes(*chunk))
            }
        }
    )*};
}
le_int!(u8, u16, u32, u64);

impl<const N: usize> LeValue for [u8; N] {
    const WIDTH: usize = N;
    fn read(bytes: &[u8]) -> Option<Self> {
        bytes.first_chunk().copied()
    }
}

/// One field of a structure layout: where it sits relative to the structure's start, and what
/// the specification calls it.
#[derive(Debug)]
pub struct Field<T> {
    /// Offset from the start of the enclosing structure.
    pub offset: usize,
    /// The specification's name for the field (used in error messages and by `fwdump`).
    pub name: &'static str,
    value_type: PhantomData<T>,
}

// Manual impls: derives would demand `T: Clone`, which the marker does not need.
impl<T> Clone for Field<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Field<T> {}

impl<T: LeValue> Field<T> {
    /// Declares a field at `offset` called `name`.
    pub const fn new(offset: usize, name: &'static str) -> Self {
        Field { offset, name, value_type: PhantomData }
    }

    /// Width of the field in bytes.
    pub const fn width(&self) -> usize {
        T::WIDTH
    }

    /// Offset one past the field's last byte.
    pub const fn end(&self) -> usize {
        self.offset + T::WIDTH
    }
}

/// A bounds-checked window onto one structure of a table.
#[derive(Clone, Copy, Debug)]
pub(crate) struct View<'a> {
    bytes: &'a [u8],
    table_offset: usize,
    table: Signature,
    structure: &'static str,
}

impl<'a> View<'a> {
    /// A view of a whole table (its bytes already cut to the header's length).
    pub(crate) fn table(bytes: &'a [u8], table: Signature, structure: &'static str) -> Self {
        View { bytes, table_offset: 0, table, structure }
    }

    /// Number of bytes in the window.
    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Offset of the window's first byte from the start of the table.
    pub(crate) fn table_offset(&self) -> usize {
        self.table_offset
    }

    /// The bytes of the window.
    pub(crate) fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Builds an error about the field `field` at `relative` bytes into this structure.
    pub(crate) fn error(&self, field: &'static str, relative: usize, problem: Problem) -> ParseError {
        ParseError {
            table: self.table,
            structure: self.structure,
            field,
            offset: self.table_offset.saturating_add(relative),
            problem,
        }
    }

    /// Reads a declared field.
    pub(crate) fn get<T: LeValue>(&self, field: Field<T>) -> Result<T, ParseError> {
        self.read_at(field.offset, field.name)
    }

    /// Reads a value at `relative` bytes into the structure (array elements, computed offsets).
    pub(crate) fn read_at<T: LeValue>(&self, relative: usize, name: &'static str) -> Result<T, ParseError> {
        let slice = self.range(relative, T::WIDTH, name)?;
        // `range` returned exactly WIDTH bytes, so `read` cannot come back empty; mapping to the
        // same error keeps this path panic-free regardless.
        T::read(slice).ok_or_else(|| {
            self.error(name, relative, Problem::Truncated { needed: T::WIDTH, available: slice.len() })
        })
    }

    /// The `len` bytes starting `relative` bytes into the structure.
    pub(crate) fn range(&self, relative: usize, len: usize, name: &'static str) -> Result<&'a [u8], ParseError> {
        let end = relative
            .checked_add(len)
            .ok_or_else(|| self.error(name, relative, Problem::Overflow))?;
        self.bytes.get(relative..end).ok_or_else(|| {
            self.error(
                name,
                relative,
                Problem::Truncated { needed: len, available: self.bytes.len().saturating_sub(relative) },
            )
        })
    }

    /// A window onto a nested structure of `len` bytes at `relative`; `name` is the field
    /// (usually a length or offset) that claimed the nested structure is there.
    pub(crate) fn sub(
        &self,
        relative: usize,
        len: usize,
        structure: &'static str,
        name: &'static str,
    ) -> Result<View<'a>, ParseError> {
        let bytes = self.range(relative, len, name)?;
        Ok(View { bytes, table_offset: self.table_offset + relative, table: self.table, structure })
    }

    /// A window onto a nested structure at `relative` whose length `len` was read from its
    /// own length field `length_field` (offset relative to the nested structure). When the
    /// structure overruns this window, the error names that field at its own offset, which is
    /// where the firmware's mistake is.
    pub(crate) fn sub_by_length<T: LeValue>(
        &self,
        relative: usize,
        len: usize,
        structure: &'static str,
        length_field: Field<T>,
    ) -> Result<View<'a>, ParseError> {
        self.sub(relative, len, structure, length_field.name).map_err(|mut error| {
            error.structure = structure;
            error.offset = self.table_offset.saturating_add(relative).saturating_add(length_field.offset);
            error
        })
    }

    /// Checks that a structure-length field is at least the fixed part's size.
    pub(crate) fn require_min_len(
        &self,
        relative: usize,
        name: &'static str,
        length: usize,
        minimum: usize,
    ) -> Result<(), ParseError> {
        if length < minimum {
            return Err(self.error(
                name,
                relative,
                Problem::LengthTooSmall { length: length as u64, minimum: minimum as u64 },
            ));
        }
        Ok(())
    }

    /// Reads a NUL-terminated ASCII string that starts at `relative` and must end inside the
    /// window.
    pub(crate) fn ascii_z(&self, relative: usize, name: &'static str) -> Result<&'a str, ParseError> {
        let rest = self.range(relative, self.bytes.len().saturating_sub(relative), name)?;
        let nul = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| self.error(name, relative, Problem::Unterminated))?;
        let text = &rest[..nul];
        if let Some(&byte) = text.iter().find(|b| !(0x20..0x7f).contains(*b)) {
            return Err(self.error(name, relative, Problem::NotAscii { byte }));
        }
        core::str::from_utf8(text).map_err(|_| self.error(name, relative, Problem::NotAscii { byte: 0x80 }))
    }
}

/// `base + index * stride`, or an overflow error.
pub(crate) fn array_offset(view: &View<'_>, name: &'static str, base: usize, index: usize, stride: usize) -> Result<usize, ParseError> {
    index
        .checked_mul(stride)
        .and_then(|o| o.checked_add(base))
        .ok_or_else(|| view.error(name, base, Problem::Overflow))
}
