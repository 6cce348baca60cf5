//! QEMU's ACPI table loader ("BIOS linker/loader"): the `etc/table-loader` script and a firmware
//! stand-in that runs it on copies of the files.
//!
//! The script is an array of 128-byte commands (`BiosLinkerLoaderEntry` in QEMU's
//! `hw/acpi/bios-linker-loader.c`; all integers little-endian, file names NUL-padded):
//!
//! * ALLOCATE a file at some address with an alignment, in high memory or the F-segment;
//! * ADD_POINTER: add the address of one file to a 1/2/4/8-byte value at an offset in another
//!   (QEMU writes the target's *offset* there, so the sum is the target's address);
//! * ADD_CHECKSUM: subtract the byte sum of a range from the checksum byte inside it;
//! * WRITE_POINTER: report an address back to QEMU (not needed to read tables; skipped, as are
//!   command types QEMU does not define).
//!
//! [`Script::run`] places the files one after another in a private address space starting at
//! [`LOAD_BASE`], carries out the commands in order, and returns [`LoadedFiles`], which reads
//! that address space for [`fwtables::sdt`]'s RSDP → XSDT/RSDT walk.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use fwtables::sdt::{read_table, Rsdp, RootTable, Signature};

use crate::device::c_string;
use crate::error::{Error, LoaderProblem};

/// The loader script's fw_cfg file.
pub const LOADER_FILE: &str = "etc/table-loader";
/// The file holding the RSDP (QEMU allocates it in the F-segment).
pub const RSDP_FILE: &str = "etc/acpi/rsdp";

/// Command type values (`BIOS_LINKER_LOADER_COMMAND_*`).
pub mod command_type {
    pub const ALLOCATE: u32 = 1;
    pub const ADD_POINTER: u32 = 2;
    pub const ADD_CHECKSUM: u32 = 3;
    pub const WRITE_POINTER: u32 = 4;
}

/// Byte offsets inside one 128-byte command.
pub mod command_layout {
    /// Length of every command; the script is an array of them.
    pub const LEN: usize = 128;
    /// u32: the command type ([`super::command_type`]).
    pub const TYPE: usize = 0;
    /// Length of every file-name field, NUL terminator included.
    pub const FILE_NAME_LEN: usize = 56;

    /// ALLOCATE: `char[56]` file to allocate.
    pub const ALLOCATE_FILE: usize = 4;
    /// ALLOCATE: u32 alignment of the file's address.
    pub const ALLOCATE_ALIGN: usize = 60;
    /// ALLOCATE: u8 zone ([`super::Zone`]).
    pub const ALLOCATE_ZONE: usize = 64;

    /// ADD_POINTER: `char[56]` file holding the pointer.
    pub const POINTER_DEST_FILE: usize = 4;
    /// ADD_POINTER: `char[56]` file the pointer points into.
    pub const POINTER_SRC_FILE: usize = 60;
    /// ADD_POINTER: u32 offset of the pointer in the destination file.
    pub const POINTER_OFFSET: usize = 116;
    /// ADD_POINTER: u8 width of the pointer in bytes.
    pub const POINTER_SIZE: usize = 120;

    /// ADD_CHECKSUM: `char[56]` file holding the checksummed range.
    pub const CHECKSUM_FILE: usize = 4;
    /// ADD_CHECKSUM: u32 offset of the checksum byte.
    pub const CHECKSUM_OFFSET: usize = 60;
    /// ADD_CHECKSUM: u32 start of the summed range.
    pub const CHECKSUM_START: usize = 64;
    /// ADD_CHECKSUM: u32 length of the summed range.
    pub const CHECKSUM_LENGTH: usize = 68;

    const _: () = assert!(ALLOCATE_FILE + FILE_NAME_LEN == ALLOCATE_ALIGN && ALLOCATE_ZONE < LEN);
    const _: () = assert!(POINTER_SRC_FILE + FILE_NAME_LEN == POINTER_OFFSET && POINTER_SIZE < LEN);
    const _: () = assert!(CHECKSUM_FILE + FILE_NAME_LEN == CHECKSUM_OFFSET && CHECKSUM_LENGTH + 4 <= LEN);
}

/// Where ALLOCATE asks for a file to be placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Zone {
    /// Anywhere in memory (value 1).
    High,
    /// The F-segment below 1 MiB, where legacy OSes scan for the RSDP (value 2).
    FSegment,
}

/// One command of the script that this loader carries out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Allocate { file: String, align: u32, zone: Zone },
    AddPointer { destination: String, source: String, offset: u32, size: u8 },
    AddChecksum { file: String, offset: u32, start: u32, length: u32 },
}

/// A parsed `etc/table-loader`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Script {
    /// The commands to carry out, in script order; skipped commands are absent.
    pub commands: Vec<Command>,
}

/// Address [`Script::run`] places the first file at. Not zero, so no table lands at address 0,
/// which the RSDP uses for "no XSDT"; small, so 4-byte pointers (RSDT entries) reach every file.
pub const LOAD_BASE: u64 = 0x1000;

impl Script {
    /// Parses a script. Commands QEMU does not define, and WRITE_POINTER, are skipped.
    pub fn parse(bytes: &[u8]) -> Result<Script, Error> {
        use command_layout as l;
        if !bytes.len().is_multiple_of(l::LEN) {
            return Err(Error::ScriptLength { length: bytes.len() });
        }
        let mut commands = Vec::new();
        for (index, entry) in bytes.chunks_exact(l::LEN).enumerate() {
            let fail = |problem| Error::Loader { command: index, problem };
            let u32_at = |at: usize| u32::from_le_bytes([entry[at], entry[at + 1], entry[at + 2], entry[at + 3]]);
            let name_at = |at: usize| {
                c_string(&entry[at..at + l::FILE_NAME_LEN]).map(str::to_string).ok_or(fail(LoaderProblem::BadFileName))
            };
            let command = match u32_at(l::TYPE) {
                command_type::ALLOCATE => {
                    let zone = match entry[l::ALLOCATE_ZONE] {
                        1 => Zone::High,
                        2 => Zone::FSegment,
                        zone => return Err(fail(LoaderProblem::UnknownZone { zone })),
                    };
                    Command::Allocate { file: name_at(l::ALLOCATE_FILE)?, align: u32_at(l::ALLOCATE_ALIGN), zone }
                }
                command_type::ADD_POINTER => Command::AddPointer {
                    destination: name_at(l::POINTER_DEST_FILE)?,
                    source: name_at(l::POINTER_SRC_FILE)?,
                    offset: u32_at(l::POINTER_OFFSET),
                    size: entry[l::POINTER_SIZE],
                },
                command_type::ADD_CHECKSUM => Command::AddChecksum {
                    file: name_at(l::CHECKSUM_FILE)?,
                    offset: u32_at(l::CHECKSUM_OFFSET),
                    start: u32_at(l::CHECKSUM_START),
                    length: u32_at(l::CHECKSUM_LENGTH),
                },
                _ => continue,
            };
            commands.push(command);
        }
        Ok(Script { commands })
    }

    /// The files ALLOCATE commands name, in script order: the contents [`Script::run`] needs.
    pub fn allocated_files(&self) -> impl Iterator<Item = &str> {
        self.commands.iter().filter_map(|command| match command {
            Command::Allocate { file, .. } => Some(file.as_str()),
            _ => None,
        })
    }

    /// Carries out the script on `contents` (file name, bytes), which must hold every file an
    /// ALLOCATE names; files no ALLOCATE names are ignored. Commands run in script order and
    /// may only refer to files allocated before them, as firmware requires.
    pub fn run(&self, mut contents: Vec<(String, Vec<u8>)>) -> Result<LoadedFiles, Error> {
        let mut loaded = LoadedFiles { files: Vec::new() };
        let mut next_free = LOAD_BASE;
        for (index, command) in self.commands.iter().enumerate() {
            let fail = |problem| Error::Loader { command: index, problem };
            match command {
                Command::Allocate { file, align, .. } => {
                    if !align.is_power_of_two() {
                        return Err(fail(LoaderProblem::BadAlignment { align: *align }));
                    }
                    if loaded.position(file).is_some() {
                        return Err(fail(LoaderProblem::AllocatedTwice { name: file.clone() }));
                    }
                    let supplied = contents.iter().position(|(name, _)| name == file);
                    let Some(supplied) = supplied else {
                        return Err(fail(LoaderProblem::MissingFile { name: file.clone() }));
                    };
                    let (name, bytes) = contents.swap_remove(supplied);
                    let mask = u64::from(*align) - 1;
                    let address = next_free.checked_add(mask).map(|a| a & !mask);
                    let end = address.and_then(|a| a.checked_add(bytes.len() as u64));
                    let (Some(address), Some(end)) = (address, end) else {
                        return Err(fail(LoaderProblem::AddressSpaceExhausted));
                    };
                    next_free = end;
                    loaded.files.push(Placed { name, address, bytes });
                }
                Command::AddPointer { destination, source, offset, size } => {
                    if !matches!(size, 1 | 2 | 4 | 8) {
                        return Err(fail(LoaderProblem::BadPointerSize { size: *size }));
                    }
                    let source_address = loaded.placed(source).map_err(fail)?.address;
                    let file = loaded.placed_mut(destination).map_err(fail)?;
                    let width = usize::from(*size);
                    let field = file.range(u64::from(*offset), width as u64).map_err(fail)?;
                    let mut value = [0u8; 8];
                    value[..width].copy_from_slice(&file.bytes[field.clone()]);
                    let value = u64::from_le_bytes(value);
                    let patched = value
                        .checked_add(source_address)
                        .filter(|&p| width == 8 || p >> (8 * width) == 0)
                        .ok_or(fail(LoaderProblem::PointerOverflow { value, size: *size }))?;
                    file.bytes[field].copy_from_slice(&patched.to_le_bytes()[..width]);
                }
                Command::AddChecksum { file, offset, start, length } => {
                    let file = loaded.placed_mut(file).map_err(fail)?;
                    let checksum = file.range(u64::from(*offset), 1).map_err(fail)?.start;
                    let summed = file.range(u64::from(*start), u64::from(*length)).map_err(fail)?;
                    let sum = file.bytes[summed].iter().fold(0u8, |sum, &b| sum.wrapping_add(b));
                    file.bytes[checksum] = file.bytes[checksum].wrapping_sub(sum);
                }
            }
        }
        Ok(loaded)
    }
}

/// One allocated file at its address in the loader's address space.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Placed {
    name: String,
    address: u64,
    bytes: Vec<u8>,
}

impl Placed {
    /// The index range of `[offset, offset + length)` if it lies inside the file.
    fn range(&self, offset: u64, length: u64) -> Result<core::ops::Range<usize>, LoaderProblem> {
        let outside = || LoaderProblem::OutOfBounds {
            name: self.name.clone(),
            offset,
            length,
            file_length: self.bytes.len(),
        };
        let end = offset.checked_add(length).ok_or_else(outside)?;
        if end > self.bytes.len() as u64 {
            return Err(outside());
        }
        Ok(offset as usize..end as usize)
    }
}

/// The files a loader script allocated, with pointers patched and checksums set, laid out in
/// the loader's private address space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadedFiles {
    files: Vec<Placed>,
}

/// One ACPI table found through the root table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcpiTable {
    pub signature: Signature,
    /// The whole table, header included, exactly as firmware would leave it in memory.
    pub bytes: Vec<u8>,
}

impl LoadedFiles {
    fn position(&self, name: &str) -> Option<usize> {
        self.files.iter().position(|file| file.name == name)
    }

    fn placed(&self, name: &str) -> Result<&Placed, LoaderProblem> {
        self.files.iter().find(|file| file.name == name).ok_or_else(|| LoaderProblem::NotAllocated { name: name.to_string() })
    }

    fn placed_mut(&mut self, name: &str) -> Result<&mut Placed, LoaderProblem> {
        self.files
            .iter_mut()
            .find(|file| file.name == name)
            .ok_or_else(|| LoaderProblem::NotAllocated { name: name.to_string() })
    }

    /// The loaded contents of file `name`.
    pub fn contents(&self, name: &str) -> Option<&[u8]> {
        self.position(name).map(|index| self.files[index].bytes.as_slice())
    }

    /// The address the loader gave file `name`.
    pub fn address(&self, name: &str) -> Option<u64> {
        self.position(name).map(|index| self.files[index].address)
    }

    /// Copies `buf.len()` bytes at `address` of the loader's address space; false unless they
    /// all lie inside one file.
    pub fn read(&self, address: u64, buf: &mut [u8]) -> bool {
        self.files.iter().any(|file| {
            let Some(offset) = address.checked_sub(file.address) else { return false };
            match file.range(offset, buf.len() as u64) {
                Ok(range) => {
                    buf.copy_from_slice(&file.bytes[range]);
                    true
                }
                Err(_) => false,
            }
        })
    }

    /// Every table the root table (XSDT, or RSDT for a revision-0 RSDP) lists, in its order.
    /// The DSDT and FACS, which only the FADT points at, are not among them.
    pub fn acpi_tables(&self) -> Result<Vec<AcpiTable>, Error> {
        let rsdp = self.contents(RSDP_FILE).ok_or_else(|| Error::FileNotFound { name: RSDP_FILE.to_string() })?;
        let rsdp = Rsdp::parse(rsdp).map_err(Error::Rsdp)?;
        let mut memory = |address: u64, buf: &mut [u8]| self.read(address, buf);
        let root = RootTable::load(&rsdp, &mut memory).map_err(Error::Tables)?;
        root.entries
            .iter()
            .map(|&address| {
                let bytes = read_table(&mut memory, address).map_err(Error::Tables)?;
                let signature = Signature(bytes.first_chunk::<4>().copied().unwrap_or_default());
                Ok(AcpiTable { signature, bytes })
            })
            .collect()
    }

    /// The first table with `signature` the root table lists.
    pub fn find_table(&self, signature: Signature) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.acpi_tables()?.into_iter().find(|table| table.signature == signature).map(|table| table.bytes))
    }
}
