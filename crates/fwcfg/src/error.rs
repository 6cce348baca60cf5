//! The crate's one error type.

use alloc::string::String;
use core::fmt;

use fwtables::sdt::WalkError;
use fwtables::ParseError;

/// Why reading fw_cfg or running its table loader failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// The signature item did not read `"QEMU"`: there is no fw_cfg device behind the registers.
    NoDevice { signature: [u8; 4] },
    /// The file directory claims more entries than [`crate::device::MAX_FILES`].
    TooManyFiles { count: u32 },
    /// Directory entry `index` has a name that is not NUL-terminated UTF-8.
    BadFileName { index: u32 },
    /// No file of this name in the directory (or, for the loader, among the files supplied).
    FileNotFound { name: String },
    /// The file is larger than [`crate::device::MAX_FILE_BYTES`].
    FileTooLarge { name: String, size: u32 },
    /// The loader script's length is not a whole number of commands.
    ScriptLength { length: usize },
    /// Loader command `command` (counted from 0) cannot be carried out.
    Loader { command: usize, problem: LoaderProblem },
    /// The RSDP the loader produced is malformed.
    Rsdp(ParseError),
    /// Walking the root table or reading a table it lists failed.
    Tables(WalkError),
}

/// What was wrong with one loader command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoaderProblem {
    /// A file name field has no NUL terminator or is not UTF-8.
    BadFileName,
    /// ALLOCATE names a zone other than high memory or the F-segment.
    UnknownZone { zone: u8 },
    /// ALLOCATE's alignment is not a power of two.
    BadAlignment { align: u32 },
    /// ALLOCATE names a file whose contents were not supplied.
    MissingFile { name: String },
    /// ALLOCATE names a file a previous command already allocated.
    AllocatedTwice { name: String },
    /// The command refers to a file no earlier ALLOCATE placed.
    NotAllocated { name: String },
    /// ADD_POINTER's pointer width is not 1, 2, 4 or 8 bytes.
    BadPointerSize { size: u8 },
    /// The bytes `[offset, offset + length)` the command touches lie outside `name`.
    OutOfBounds { name: String, offset: u64, length: u64, file_length: usize },
    /// Adding the source file's address to the pointer does not fit in its `size` bytes.
    PointerOverflow { value: u64, size: u8 },
    /// The files do not fit in the loader's 64-bit address space.
    AddressSpaceExhausted,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoDevice { signature } => {
                write!(f, "no fw_cfg device: signature item reads {signature:02x?}, not \"QEMU\"")
            }
            Error::TooManyFiles { count } => write!(f, "fw_cfg file directory claims {count} entries"),
            Error::BadFileName { index } => write!(f, "fw_cfg directory entry {index} has a malformed name"),
            Error::FileNotFound { name } => write!(f, "no fw_cfg file \"{name}\""),
            Error::FileTooLarge { name, size } => write!(f, "fw_cfg file \"{name}\" is {size} bytes, too large"),
            Error::ScriptLength { length } => {
                write!(f, "table loader script is {length} bytes, not a multiple of the command size")
            }
            Error::Loader { command, problem } => write!(f, "table loader command {command}: {problem}"),
            Error::Rsdp(e) => write!(f, "RSDP: {e}"),
            Error::Tables(e) => write!(f, "ACPI tables: {e}"),
        }
    }
}

impl fmt::Display for LoaderProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoaderProblem::BadFileName => write!(f, "file name is not NUL-terminated UTF-8"),
            LoaderProblem::UnknownZone { zone } => write!(f, "unknown allocation zone {zone}"),
            LoaderProblem::BadAlignment { align } => write!(f, "alignment {align} is not a power of two"),
            LoaderProblem::MissingFile { name } => write!(f, "contents of \"{name}\" were not supplied"),
            LoaderProblem::AllocatedTwice { name } => write!(f, "\"{name}\" is allocated twice"),
            LoaderProblem::NotAllocated { name } => write!(f, "\"{name}\" was not allocated"),
            LoaderProblem::BadPointerSize { size } => write!(f, "pointer size {size} is not 1, 2, 4 or 8"),
            LoaderProblem::OutOfBounds { name, offset, length, file_length } => write!(
                f,
                "bytes {offset:#x}..+{length:#x} lie outside \"{name}\" ({file_length:#x} bytes)"
            ),
            LoaderProblem::PointerOverflow { value, size } => {
                write!(f, "patched pointer {value:#x} does not fit in {size} bytes")
            }
            LoaderProblem::AddressSpaceExhausted => write!(f, "files do not fit in the address space"),
        }
    }
}
