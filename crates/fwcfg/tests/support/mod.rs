//! Test doubles: a register-level model of QEMU's MMIO fw_cfg device, and builders for table
//! loader commands and ACPI tables.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use fwcfg::device::{dir_entry, key, register};
use fwcfg::loader::{command_layout as cmd, command_type};
use fwcfg::Mmio;

/// Model of the MMIO device as QEMU implements it: a big-endian 16-bit selector and a
/// big-endian 8-byte data register streaming the selected item (zeros past its end).
pub struct Device {
    pub items: BTreeMap<u16, Vec<u8>>,
    selected: Cell<Option<u16>>,
    position: Cell<usize>,
    /// Every access at an offset or width the real device would not accept.
    pub bad_accesses: RefCell<Vec<String>>,
}

/// The key the model gives the first file; distinct high and low bytes catch a selector written
/// in the wrong byte order.
pub const FIRST_FILE_KEY: u16 = 0x0123;

impl Device {
    pub fn with_items(items: BTreeMap<u16, Vec<u8>>) -> Device {
        Device { items, selected: Cell::new(None), position: Cell::new(0), bad_accesses: RefCell::new(Vec::new()) }
    }

    /// A device with the signature item and `files` behind a file directory.
    pub fn with_files(files: &[(&str, Vec<u8>)]) -> Device {
        let mut items = BTreeMap::new();
        items.insert(key::SIGNATURE, b"QEMU".to_vec());
        let mut directory = (files.len() as u32).to_be_bytes().to_vec();
        for (index, (name, contents)) in files.iter().enumerate() {
            let item = FIRST_FILE_KEY + index as u16;
            directory.extend_from_slice(&directory_entry(name.as_bytes(), contents.len() as u32, item));
            items.insert(item, contents.clone());
        }
        items.insert(key::FILE_DIR, directory);
        Device::with_items(items)
    }
}

/// One directory entry: be32 size, be16 key, be16 reserved, name[56] NUL-padded.
pub fn directory_entry(name: &[u8], size: u32, item: u16) -> [u8; dir_entry::LEN] {
    let mut entry = [0u8; dir_entry::LEN];
    entry[dir_entry::SIZE_FIELD..][..4].copy_from_slice(&size.to_be_bytes());
    entry[dir_entry::SELECT..][..2].copy_from_slice(&item.to_be_bytes());
    entry[dir_entry::NAME..][..name.len()].copy_from_slice(name);
    entry
}

impl Mmio for Device {
    fn read64(&self, offset: usize) -> u64 {
        if offset != register::DATA {
            self.bad_accesses.borrow_mut().push(format!("8-byte read at {offset:#x}"));
            return 0;
        }
        let item = self.selected.get().and_then(|k| self.items.get(&k));
        let start = self.position.get();
        let mut stream = [0u8; 8];
        for (i, byte) in stream.iter_mut().enumerate() {
            *byte = item.and_then(|bytes| bytes.get(start + i)).copied().unwrap_or(0);
        }
        self.position.set(start + 8);
        // The device packs the stream big-endian (first byte most significant); a big-endian
        // register's bytes in address order are therefore the stream, whatever the CPU.
        let register_value = u64::from_be_bytes(stream);
        u64::from_ne_bytes(register_value.to_be_bytes())
    }

    fn write16(&self, offset: usize, value: u16) {
        if offset != register::SELECTOR {
            self.bad_accesses.borrow_mut().push(format!("2-byte write at {offset:#x}"));
            return;
        }
        self.selected.set(Some(u16::from_be_bytes(value.to_ne_bytes())));
        self.position.set(0);
    }
}

fn name_field(name: &str) -> [u8; cmd::FILE_NAME_LEN] {
    let mut field = [0u8; cmd::FILE_NAME_LEN];
    field[..name.len()].copy_from_slice(name.as_bytes());
    field
}

fn command(kind: u32) -> [u8; cmd::LEN] {
    let mut entry = [0u8; cmd::LEN];
    entry[cmd::TYPE..][..4].copy_from_slice(&kind.to_le_bytes());
    entry
}

pub const ZONE_HIGH: u8 = 1;
pub const ZONE_FSEG: u8 = 2;

pub fn allocate(file: &str, align: u32, zone: u8) -> [u8; cmd::LEN] {
    let mut entry = command(command_type::ALLOCATE);
    entry[cmd::ALLOCATE_FILE..][..cmd::FILE_NAME_LEN].copy_from_slice(&name_field(file));
    entry[cmd::ALLOCATE_ALIGN..][..4].copy_from_slice(&align.to_le_bytes());
    entry[cmd::ALLOCATE_ZONE] = zone;
    entry
}

pub fn add_pointer(destination: &str, source: &str, offset: u32, size: u8) -> [u8; cmd::LEN] {
    let mut entry = command(command_type::ADD_POINTER);
    entry[cmd::POINTER_DEST_FILE..][..cmd::FILE_NAME_LEN].copy_from_slice(&name_field(destination));
    entry[cmd::POINTER_SRC_FILE..][..cmd::FILE_NAME_LEN].copy_from_slice(&name_field(source));
    entry[cmd::POINTER_OFFSET..][..4].copy_from_slice(&offset.to_le_bytes());
    entry[cmd::POINTER_SIZE] = size;
    entry
}

pub fn add_checksum(file: &str, offset: u32, start: u32, length: u32) -> [u8; cmd::LEN] {
    let mut entry = command(command_type::ADD_CHECKSUM);
    entry[cmd::CHECKSUM_FILE..][..cmd::FILE_NAME_LEN].copy_from_slice(&name_field(file));
    entry[cmd::CHECKSUM_OFFSET..][..4].copy_from_slice(&offset.to_le_bytes());
    entry[cmd::CHECKSUM_START..][..4].copy_from_slice(&start.to_le_bytes());
    entry[cmd::CHECKSUM_LENGTH..][..4].copy_from_slice(&length.to_le_bytes());
    entry
}

/// A WRITE_POINTER command (its fields do not matter: the loader skips it).
pub fn write_pointer() -> [u8; cmd::LEN] {
    command(command_type::WRITE_POINTER)
}

pub fn script(commands: &[[u8; cmd::LEN]]) -> Vec<u8> {
    commands.concat()
}

/// Offset of the checksum byte in an SDT header (ACPI §5.2.6).
pub const SDT_CHECKSUM: u32 = 9;
/// Offsets in the RSDP (ACPI §5.2.5.3).
pub const RSDP_CHECKSUM: u32 = 8;
pub const RSDP_RSDT_ADDRESS: u32 = 16;
pub const RSDP_XSDT_ADDRESS: u32 = 24;
pub const RSDP_EXTENDED_CHECKSUM: u32 = 32;

/// An SDT with a zero checksum byte (the loader fills it in), as QEMU exports them.
pub fn sdt(signature: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut table = signature.to_vec();
    table.extend_from_slice(&((36 + body.len()) as u32).to_le_bytes());
    table.push(1); // revision
    table.push(0); // checksum
    table.extend_from_slice(b"BOCHS BXPC    ");
    table.extend_from_slice(&1u32.to_le_bytes());
    table.extend_from_slice(b"BXPC");
    table.extend_from_slice(&1u32.to_le_bytes());
    table.extend_from_slice(body);
    table
}

/// An RSDP of `revision` 0 (RSDT pointer) or 2 (XSDT pointer), root-table field holding the
/// root table's offset in its file (the loader adds the file's address), checksums zero.
pub fn rsdp(revision: u8, root_offset: u64) -> Vec<u8> {
    let mut rsdp = b"RSD PTR ".to_vec();
    rsdp.push(0);
    rsdp.extend_from_slice(b"BOCHS ");
    rsdp.push(revision);
    if revision == 0 {
        rsdp.extend_from_slice(&(root_offset as u32).to_le_bytes());
    } else {
        rsdp.extend_from_slice(&0u32.to_le_bytes());
        rsdp.extend_from_slice(&36u32.to_le_bytes());
        rsdp.extend_from_slice(&root_offset.to_le_bytes());
        rsdp.extend_from_slice(&[0; 4]);
    }
    rsdp
}
