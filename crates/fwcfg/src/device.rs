//! The fw_cfg device itself: item selection, the data stream, the file directory, over
//! either interface QEMU offers (MMIO on arm `virt`, I/O ports on x86).
//!
//! fw_cfg exposes numbered *items*. Writing an item's 16-bit key to the selector register
//! selects it and rewinds it; each read of the data register then returns the item's next
//! bytes in order (zeros past its end). Items from key [`key::FILE_DIR`] on are named *files*,
//! listed in a directory item. QEMU `docs/specs/fw_cfg.rst`.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::error::Error;
use crate::loader::{LoadedFiles, Script, LOADER_FILE};

/// Physical base of the MMIO fw_cfg on QEMU's arm `virt` machine (`VIRT_FW_CFG` in
/// `hw/arm/virt.c`).
pub const VIRT_MMIO_BASE: u64 = 0x0902_0000;
/// Size of that MMIO window: data, selector and DMA registers.
pub const VIRT_MMIO_SIZE: u64 = 0x18;

/// MMIO register offsets from the device's base (fw_cfg.rst, "Memory-Mapped Interface").
pub mod register {
    /// Data register. On `virt` it is 8 bytes wide: an 8-byte read returns the next 8 bytes of
    /// the selected item, placed in address order (the device is big-endian: the item's first
    /// byte is the most significant of the register's value).
    pub const DATA: usize = 0;
    /// Selector register, 16 bits, big-endian; QEMU accepts only 2-byte writes.
    pub const SELECTOR: usize = 8;
}

/// Item keys (fw_cfg.rst, "Selector Register" and the key table).
pub mod key {
    /// Reads the four bytes `"QEMU"`.
    pub const SIGNATURE: u16 = 0x0000;
    /// The file directory: a big-endian u32 count, then that many [`super::dir_entry`]s.
    pub const FILE_DIR: u16 = 0x0019;
}

/// What [`key::SIGNATURE`] reads on a QEMU fw_cfg device.
pub const SIGNATURE: [u8; 4] = *b"QEMU";

/// Layout of one directory entry, `struct FWCfgFile` (all integers big-endian).
pub mod dir_entry {
    /// u32: the file's size in bytes.
    pub const SIZE_FIELD: usize = 0;
    /// u16: the key that selects the file.
    pub const SELECT: usize = 4;
    /// u16: reserved.
    pub const RESERVED: usize = 6;
    /// `char[56]`: NUL-terminated file name.
    pub const NAME: usize = 8;
    /// Length of the name field.
    pub const NAME_LEN: usize = 56;
    /// Length of one entry.
    pub const LEN: usize = 64;
    const _: () = assert!(SELECT + 2 == RESERVED && RESERVED + 2 == NAME && NAME + NAME_LEN == LEN);
}

/// More directory entries than this is taken as a broken device (QEMU's default is 32 slots
/// and it raises that only to a few hundred).
pub const MAX_FILES: u32 = 4096;
/// Largest file [`FwCfg::read_file`] will copy; QEMU's ACPI blob is 128 KiB or a few times that.
pub const MAX_FILE_BYTES: u32 = 4 << 20;

/// Access to a fw_cfg device's MMIO registers, in exactly the widths fw_cfg needs.
///
/// Like `hwio::Registers`, values are what a CPU load or store of that width at `offset` from
/// the device's base sees, in the CPU's native byte order; this crate converts to and from the
/// device's big-endian registers. An implementation must perform one access of exactly the
/// width named (QEMU ignores a selector write of any other width).
pub trait Mmio {
    /// One 8-byte load at `offset`.
    fn read64(&self, offset: usize) -> u64;
    /// One 2-byte store at `offset`.
    fn write16(&self, offset: usize, value: u16);
}

/// A borrowed register block works too, so a caller can keep its own.
impl<M: Mmio + ?Sized> Mmio for &M {
    fn read64(&self, offset: usize) -> u64 {
        (**self).read64(offset)
    }
    fn write16(&self, offset: usize, value: u16) {
        (**self).write16(offset, value)
    }
}

/// The x86 I/O-port interface (fw_cfg.rst, "IO Port Interface").
pub mod port {
    /// Selector register: 16 bits, little-endian (the CPU's own order on x86).
    pub const SELECTOR: u16 = 0x510;
    /// Data register: one byte of the selected item per 1-byte read.
    pub const DATA: u16 = 0x511;
    /// The ports a reader needs: selector and data, up to the DMA address register's end
    /// (0x514..0x51b), which this crate does not use.
    pub const RANGE: core::ops::Range<u16> = 0x510..0x51c;
}

/// Access to a fw_cfg device's I/O ports, in exactly the widths fw_cfg needs.
pub trait PortIo {
    /// One 1-byte `in` from `port`.
    fn in8(&self, port: u16) -> u8;
    /// One 2-byte `out` of `value` to `port`.
    fn out16(&self, port: u16, value: u16);
}

/// A fw_cfg device behind the x86 I/O ports.
pub struct Ports<P: PortIo>(pub P);

/// How the device is reached: selecting an item, then streaming its bytes.
pub trait Transport {
    /// Selects item `key` and rewinds it.
    fn select(&self, key: u16);
    /// The selected item's next bytes, in item order, at the front of `chunk`; how many.
    fn next_bytes(&self, chunk: &mut [u8; 8]) -> usize;
}

impl<M: Mmio> Transport for M {
    fn select(&self, key: u16) {
        // The register is big-endian: the key's high byte goes to the lower address.
        self.write16(register::SELECTOR, u16::from_ne_bytes(key.to_be_bytes()));
    }
    fn next_bytes(&self, chunk: &mut [u8; 8]) -> usize {
        // Native load of a big-endian register: its bytes in address order are the item's
        // bytes in stream order.
        *chunk = self.read64(register::DATA).to_ne_bytes();
        8
    }
}

impl<P: PortIo> Transport for Ports<P> {
    fn select(&self, key: u16) {
        self.0.out16(port::SELECTOR, key);
    }
    fn next_bytes(&self, chunk: &mut [u8; 8]) -> usize {
        chunk[0] = self.0.in8(port::DATA);
        1
    }
}

/// One entry of the file directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct File {
    pub name: String,
    /// Size in bytes, as the directory states it.
    pub size: u32,
    /// The key that selects the file's contents.
    pub key: u16,
}

/// A fw_cfg device whose signature has been checked.
pub struct FwCfg<T: Transport> {
    transport: T,
}

/// The selected item's data stream: hands out the bytes of successive data reads.
struct Stream<'a, T: Transport> {
    transport: &'a T,
    chunk: [u8; 8],
    filled: usize,
    used: usize,
}

impl<T: Transport> Stream<'_, T> {
    fn read(&mut self, buf: &mut [u8]) {
        for byte in buf {
            if self.used == self.filled {
                self.filled = self.transport.next_bytes(&mut self.chunk);
                self.used = 0;
            }
            *byte = self.chunk[self.used];
            self.used += 1;
        }
    }
}

impl<T: Transport> FwCfg<T> {
    /// Checks that `transport` reaches a fw_cfg device by reading its signature item.
    pub fn probe(transport: T) -> Result<FwCfg<T>, Error> {
        let device = FwCfg { transport };
        let mut signature = [0u8; 4];
        device.select(key::SIGNATURE).read(&mut signature);
        if signature != SIGNATURE {
            return Err(Error::NoDevice { signature });
        }
        Ok(device)
    }

    fn select(&self, item: u16) -> Stream<'_, T> {
        self.transport.select(item);
        Stream { transport: &self.transport, chunk: [0; 8], filled: 0, used: 0 }
    }

    /// Copies the first `len` bytes of item `item` (zeros past the item's end).
    pub fn read_item(&self, item: u16, len: usize) -> Vec<u8> {
        let mut bytes = alloc::vec![0u8; len];
        self.select(item).read(&mut bytes);
        bytes
    }

    /// The file directory, in the device's order.
    pub fn files(&self) -> Result<Vec<File>, Error> {
        let mut stream = self.select(key::FILE_DIR);
        let mut count = [0u8; 4];
        stream.read(&mut count);
        let count = u32::from_be_bytes(count);
        if count > MAX_FILES {
            return Err(Error::TooManyFiles { count });
        }
        let mut files = Vec::with_capacity(count as usize);
        for index in 0..count {
            let mut entry = [0u8; dir_entry::LEN];
            stream.read(&mut entry);
            let be32 = |at: usize| u32::from_be_bytes([entry[at], entry[at + 1], entry[at + 2], entry[at + 3]]);
            let be16 = |at: usize| u16::from_be_bytes([entry[at], entry[at + 1]]);
            let name = c_string(&entry[dir_entry::NAME..dir_entry::NAME + dir_entry::NAME_LEN])
                .ok_or(Error::BadFileName { index })?;
            files.push(File { name: name.to_string(), size: be32(dir_entry::SIZE_FIELD), key: be16(dir_entry::SELECT) });
        }
        Ok(files)
    }

    /// The directory entry of the file called `name`.
    pub fn file(&self, name: &str) -> Result<File, Error> {
        self.files()?
            .into_iter()
            .find(|file| file.name == name)
            .ok_or_else(|| Error::FileNotFound { name: name.to_string() })
    }

    /// The contents of the file called `name`.
    pub fn read_file(&self, name: &str) -> Result<Vec<u8>, Error> {
        self.read(&self.file(name)?)
    }

    /// The contents of a file the directory lists.
    pub fn read(&self, file: &File) -> Result<Vec<u8>, Error> {
        if file.size > MAX_FILE_BYTES {
            return Err(Error::FileTooLarge { name: file.name.clone(), size: file.size });
        }
        Ok(self.read_item(file.key, file.size as usize))
    }

    /// Runs QEMU's table loader (`etc/table-loader`) on copies of the files it allocates and
    /// returns them, pointers patched and checksums set; [`LoadedFiles::find_table`] then
    /// finds any ACPI table the root table lists.
    pub fn load_acpi(&self) -> Result<LoadedFiles, Error> {
        let directory = self.files()?;
        let read_named = |name: &str| match directory.iter().find(|file| file.name == name) {
            Some(file) => self.read(file),
            None => Err(Error::FileNotFound { name: name.to_string() }),
        };
        let script = Script::parse(&read_named(LOADER_FILE)?)?;
        let mut contents = Vec::new();
        for name in script.allocated_files() {
            contents.push((name.to_string(), read_named(name)?));
        }
        script.run(contents)
    }
}

/// The text before the first NUL of a fixed-size name field; `None` without a NUL or when that
/// text is not UTF-8.
pub(crate) fn c_string(field: &[u8]) -> Option<&str> {
    let end = field.iter().position(|&b| b == 0)?;
    core::str::from_utf8(&field[..end]).ok()
}
