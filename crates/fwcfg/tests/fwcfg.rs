//! fw_cfg driver and table loader against a register model of QEMU's device and synthetic
//! loader scripts shaped like QEMU's.

mod support;

use std::collections::BTreeMap;

use fwcfg::device::{key, MAX_FILES, MAX_FILE_BYTES};
use fwcfg::loader::{Command, Script, Zone, LOADER_FILE, LOAD_BASE, RSDP_FILE};
use fwcfg::{Error, File, FwCfg, LoaderProblem};
use fwtables::sdt::{checksum_is_zero, Rsdp, RootTable, Signature};
use support::*;

const TABLES: &str = "etc/acpi/tables";

// ---------------------------------------------------------------------------------------------
// The device.

#[test]
fn probe_checks_the_signature() {
    let device = Device::with_files(&[]);
    assert!(FwCfg::probe(&device).is_ok());
    assert!(device.bad_accesses.borrow().is_empty(), "{:?}", device.bad_accesses.borrow());

    let mut items = BTreeMap::new();
    items.insert(key::SIGNATURE, b"QEMX".to_vec());
    let wrong = Device::with_items(items);
    assert_eq!(FwCfg::probe(&wrong).err(), Some(Error::NoDevice { signature: *b"QEMX" }));
}

#[test]
fn directory_lists_every_file_with_its_key_and_size() {
    let device = Device::with_files(&[("etc/acpi/rsdp", vec![1; 36]), ("bootorder", vec![]), ("etc/table-loader", vec![2; 4096])]);
    let fw = FwCfg::probe(&device).unwrap();
    let files = fw.files().unwrap();
    let expected = [("etc/acpi/rsdp", 36, FIRST_FILE_KEY), ("bootorder", 0, FIRST_FILE_KEY + 1), ("etc/table-loader", 4096, FIRST_FILE_KEY + 2)];
    let expected: Vec<File> =
        expected.iter().map(|&(name, size, key)| File { name: name.to_owned(), size, key }).collect();
    assert_eq!(files, expected);
    assert!(device.bad_accesses.borrow().is_empty(), "{:?}", device.bad_accesses.borrow());
}

#[test]
fn read_file_returns_exactly_the_file_even_when_not_a_multiple_of_eight() {
    let odd: Vec<u8> = (1..=13).collect();
    let long: Vec<u8> = (0..=255).cycle().take(1000).collect();
    let device = Device::with_files(&[("odd", odd.clone()), ("long", long.clone())]);
    let fw = FwCfg::probe(&device).unwrap();
    assert_eq!(fw.read_file("odd").unwrap(), odd);
    assert_eq!(fw.read_file("long").unwrap(), long);
    // Selecting rewinds: a second read sees the same bytes.
    assert_eq!(fw.read_file("odd").unwrap(), odd);
    assert_eq!(fw.read_item(FIRST_FILE_KEY, 16), [odd.as_slice(), &[0; 3]].concat(), "zeros past the end");
}

#[test]
fn missing_file_is_an_error() {
    let device = Device::with_files(&[("a", vec![1])]);
    let fw = FwCfg::probe(&device).unwrap();
    assert_eq!(fw.read_file("etc/acpi/tables"), Err(Error::FileNotFound { name: "etc/acpi/tables".into() }));
}

/// A device whose directory is `count` followed by `entries`.
fn device_with_directory(count: u32, entries: &[[u8; 64]]) -> Device {
    let mut items = BTreeMap::new();
    items.insert(key::SIGNATURE, b"QEMU".to_vec());
    items.insert(key::FILE_DIR, [count.to_be_bytes().as_slice(), &entries.concat()].concat());
    Device::with_items(items)
}

#[test]
fn hostile_directories_are_errors() {
    let too_many = device_with_directory(MAX_FILES + 1, &[]);
    assert_eq!(FwCfg::probe(&too_many).unwrap().files(), Err(Error::TooManyFiles { count: MAX_FILES + 1 }));

    let unterminated = device_with_directory(1, &[directory_entry(&[b'x'; 56], 4, 0x20)]);
    assert_eq!(FwCfg::probe(&unterminated).unwrap().files(), Err(Error::BadFileName { index: 0 }));

    let huge = device_with_directory(1, &[directory_entry(b"huge", u32::MAX, 0x20)]);
    assert_eq!(
        FwCfg::probe(&huge).unwrap().read_file("huge"),
        Err(Error::FileTooLarge { name: "huge".into(), size: u32::MAX })
    );
    let limit = device_with_directory(1, &[directory_entry(b"limit", MAX_FILE_BYTES, 0x20)]);
    assert_eq!(FwCfg::probe(&limit).unwrap().read_file("limit").map(|b| b.len()), Ok(MAX_FILE_BYTES as usize));
}

// ---------------------------------------------------------------------------------------------
// The loader.

/// Files shaped like QEMU's: a tables blob (DSDT, APIC, IORT, root table, zero padding) and an
/// RSDP, with the loader script linking them. `revision` 2 gives an XSDT with 8-byte entries
/// (arm `virt`), 0 an RSDT with 4-byte entries (x86 q35).
struct QemuLike {
    script: Vec<u8>,
    tables: Vec<u8>,
    rsdp: Vec<u8>,
    /// Offsets in the blob of the DSDT, APIC, IORT and root table.
    offsets: [usize; 4],
}

const IORT_BODY: [u8; 24] = [0xa5; 24];

fn qemu_like(revision: u8) -> QemuLike {
    let dsdt = sdt(b"DSDT", &[0x10; 20]);
    let apic = sdt(b"APIC", &[0x20; 8]);
    let iort = sdt(b"IORT", &IORT_BODY);
    let (root_signature, entry_size) = if revision == 0 { (b"RSDT", 4) } else { (b"XSDT", 8) };
    let offsets = [0, dsdt.len(), dsdt.len() + apic.len(), dsdt.len() + apic.len() + iort.len()];
    // Entries hold table offsets in the blob; ADD_POINTER turns them into addresses.
    let mut entries = Vec::new();
    for &offset in &offsets[1..3] {
        entries.extend_from_slice(&(offset as u64).to_le_bytes()[..entry_size]);
    }
    let root = sdt(root_signature, &entries);
    let mut tables = [dsdt, apic, iort, root].concat();
    let used = tables.len();
    tables.resize(512, 0);

    let mut commands = vec![allocate(TABLES, 64, ZONE_HIGH)];
    for index in 0..2 {
        let entry = offsets[3] + 36 + index * entry_size;
        commands.push(add_pointer(TABLES, TABLES, entry as u32, entry_size as u8));
    }
    let ends = [offsets[1], offsets[2], offsets[3], used];
    for (start, end) in offsets.iter().zip(ends) {
        commands.push(add_checksum(TABLES, *start as u32 + SDT_CHECKSUM, *start as u32, (end - start) as u32));
    }
    commands.push(allocate(RSDP_FILE, 16, ZONE_FSEG));
    if revision == 0 {
        commands.push(add_pointer(RSDP_FILE, TABLES, RSDP_RSDT_ADDRESS, 4));
        commands.push(add_checksum(RSDP_FILE, RSDP_CHECKSUM, 0, 20));
    } else {
        commands.push(add_pointer(RSDP_FILE, TABLES, RSDP_XSDT_ADDRESS, 8));
        commands.push(add_checksum(RSDP_FILE, RSDP_CHECKSUM, 0, 20));
        commands.push(add_checksum(RSDP_FILE, RSDP_EXTENDED_CHECKSUM, 0, 36));
    }
    QemuLike { script: script(&commands), tables, rsdp: rsdp(revision, offsets[3] as u64), offsets }
}

impl QemuLike {
    fn contents(&self) -> Vec<(String, Vec<u8>)> {
        vec![(TABLES.to_owned(), self.tables.clone()), (RSDP_FILE.to_owned(), self.rsdp.clone())]
    }
}

#[test]
fn script_parses_into_commands() {
    let layout = qemu_like(2);
    let script = Script::parse(&layout.script).unwrap();
    assert_eq!(script.commands[0], Command::Allocate { file: TABLES.into(), align: 64, zone: Zone::High });
    let first_entry = (layout.offsets[3] + 36) as u32;
    assert_eq!(
        script.commands[1],
        Command::AddPointer { destination: TABLES.into(), source: TABLES.into(), offset: first_entry, size: 8 }
    );
    assert_eq!(script.commands[3], Command::AddChecksum { file: TABLES.into(), offset: 9, start: 0, length: 56 });
    assert_eq!(script.allocated_files().collect::<Vec<_>>(), [TABLES, RSDP_FILE]);
}

fn check_loaded(revision: u8) {
    let layout = qemu_like(revision);
    let loaded = Script::parse(&layout.script).unwrap().run(layout.contents()).unwrap();
    let tables_at = loaded.address(TABLES).unwrap();
    assert_eq!(tables_at, LOAD_BASE, "first file at the base (already 64-byte aligned)");
    let rsdp_at = loaded.address(RSDP_FILE).unwrap();
    assert_eq!(rsdp_at, LOAD_BASE + 512, "after the tables, 16-byte aligned");

    let rsdp = Rsdp::parse(loaded.contents(RSDP_FILE).unwrap()).unwrap();
    assert!(rsdp.checksum_valid);
    let (root_signature, root_at) = rsdp.root_table_address();
    assert_eq!(root_signature, if revision == 0 { Signature::RSDT } else { Signature::XSDT });
    assert_eq!(root_at, tables_at + layout.offsets[3] as u64, "pointer patched with the blob's address");
    if revision >= 2 {
        assert_eq!(rsdp.extended_checksum_valid, Some(true));
    }
    let mut memory = |address, buf: &mut [u8]| loaded.read(address, buf);
    let root = RootTable::load(&rsdp, &mut memory).unwrap();
    assert!(root.header.checksum_valid, "checksum computed after the entries were patched");
    let expected: Vec<u64> = layout.offsets[1..3].iter().map(|&o| tables_at + o as u64).collect();
    assert_eq!(root.entries, expected);

    let found = loaded.acpi_tables().unwrap();
    let signatures: Vec<Signature> = found.iter().map(|t| t.signature).collect();
    assert_eq!(signatures, [Signature(*b"APIC"), Signature::IORT]);
    assert!(found.iter().all(|t| checksum_is_zero(&t.bytes)));
    let iort = loaded.find_table(Signature::IORT).unwrap().unwrap();
    assert_eq!(iort.len(), 36 + IORT_BODY.len());
    assert_eq!(&iort[36..], IORT_BODY);
    assert_eq!(loaded.find_table(Signature::DMAR), Ok(None));
}

#[test]
fn loads_an_xsdt_layout_like_arm_virt() {
    check_loaded(2);
}

#[test]
fn loads_an_rsdt_layout_like_q35() {
    check_loaded(0);
}

#[test]
fn write_pointer_and_undefined_commands_are_skipped() {
    let layout = qemu_like(2);
    let mut undefined = write_pointer();
    undefined[0] = 0x7f;
    let script = [write_pointer().as_slice(), &layout.script, &undefined].concat();
    let parsed = Script::parse(&script).unwrap();
    assert_eq!(parsed, Script::parse(&layout.script).unwrap());
}

#[test]
fn files_no_allocate_names_are_ignored_and_missing_ones_are_errors() {
    let layout = qemu_like(2);
    let mut contents = layout.contents();
    contents.push(("etc/tpm/log".into(), vec![0; 64]));
    let loaded = Script::parse(&layout.script).unwrap().run(contents).unwrap();
    assert!(loaded.contents("etc/tpm/log").is_none());

    let without_rsdp = vec![(TABLES.to_owned(), layout.tables.clone())];
    let error = Script::parse(&layout.script).unwrap().run(without_rsdp).unwrap_err();
    let rsdp_allocate = 1 + 2 + 4;
    assert_eq!(
        error,
        Error::Loader { command: rsdp_allocate, problem: LoaderProblem::MissingFile { name: RSDP_FILE.into() } }
    );
}

/// Runs a script of `commands` on a 64-byte file "a" and a 16-byte file "b".
fn run(commands: &[[u8; 128]]) -> Result<fwcfg::LoadedFiles, Error> {
    let contents = vec![("a".to_owned(), vec![0u8; 64]), ("b".to_owned(), vec![0u8; 16])];
    Script::parse(&script(commands))?.run(contents)
}

fn loader_error(command: usize, problem: LoaderProblem) -> Result<fwcfg::LoadedFiles, Error> {
    Err(Error::Loader { command, problem })
}

#[test]
fn malformed_scripts_are_errors() {
    assert_eq!(Script::parse(&[0; 100]), Err(Error::ScriptLength { length: 100 }));

    let mut unterminated = allocate("a", 16, ZONE_HIGH);
    unterminated[4..60].fill(b'x');
    assert_eq!(run(&[unterminated]), loader_error(0, LoaderProblem::BadFileName));
    assert_eq!(run(&[allocate("a", 16, 3)]), loader_error(0, LoaderProblem::UnknownZone { zone: 3 }));
    assert_eq!(run(&[allocate("a", 24, ZONE_HIGH)]), loader_error(0, LoaderProblem::BadAlignment { align: 24 }));
    assert_eq!(run(&[allocate("a", 0, ZONE_HIGH)]), loader_error(0, LoaderProblem::BadAlignment { align: 0 }));
    assert_eq!(
        run(&[allocate("a", 16, ZONE_HIGH), allocate("a", 16, ZONE_HIGH)]),
        loader_error(1, LoaderProblem::AllocatedTwice { name: "a".into() })
    );
    assert_eq!(
        run(&[allocate("a", 16, ZONE_HIGH), add_pointer("a", "b", 0, 8)]),
        loader_error(1, LoaderProblem::NotAllocated { name: "b".into() })
    );
    assert_eq!(
        run(&[add_checksum("b", 0, 0, 16)]),
        loader_error(0, LoaderProblem::NotAllocated { name: "b".into() })
    );
}

#[test]
fn out_of_bounds_commands_are_errors() {
    let both = [allocate("a", 16, ZONE_HIGH), allocate("b", 16, ZONE_HIGH)];
    let with = |command| run(&[both[0], both[1], command]);
    let outside = |name: &str, offset, length, file_length| {
        loader_error(2, LoaderProblem::OutOfBounds { name: name.into(), offset, length, file_length })
    };
    assert_eq!(with(add_pointer("a", "b", 60, 8)), outside("a", 60, 8, 64));
    assert_eq!(with(add_pointer("a", "b", u32::MAX, 8)), outside("a", u64::from(u32::MAX), 8, 64));
    assert_eq!(with(add_pointer("a", "b", 0, 3)), loader_error(2, LoaderProblem::BadPointerSize { size: 3 }));
    assert_eq!(with(add_checksum("b", 16, 0, 16)), outside("b", 16, 1, 16));
    assert_eq!(with(add_checksum("b", 0, 8, 9)), outside("b", 8, 9, 16));
    assert_eq!(with(add_checksum("b", 0, u32::MAX, u32::MAX)), outside("b", u64::from(u32::MAX), u64::from(u32::MAX), 16));
    // b sits above LOAD_BASE, so its address does not fit in one byte.
    assert_eq!(with(add_pointer("a", "b", 0, 1)), loader_error(2, LoaderProblem::PointerOverflow { value: 0, size: 1 }));
    assert!(with(add_pointer("a", "b", 56, 8)).is_ok(), "the last whole pointer fits");
}

#[test]
fn pointers_add_the_source_address_and_checksums_cancel_the_sum() {
    let mut a = vec![0u8; 64];
    a[8..12].copy_from_slice(&0x30u32.to_le_bytes());
    a[20] = 0x55;
    let contents = vec![("a".to_owned(), a), ("b".to_owned(), vec![7u8; 16])];
    let commands = [
        allocate("a", 16, ZONE_HIGH),
        allocate("b", 256, ZONE_HIGH),
        add_pointer("a", "b", 8, 4),
        add_checksum("a", 20, 0, 64),
    ];
    let loaded = Script::parse(&script(&commands)).unwrap().run(contents).unwrap();
    let b_at = loaded.address("b").unwrap();
    assert_eq!(b_at % 256, 0);
    assert!(b_at >= LOAD_BASE + 64);
    let a = loaded.contents("a").unwrap();
    assert_eq!(u32::from_le_bytes(a[8..12].try_into().unwrap()), b_at as u32 + 0x30);
    assert!(checksum_is_zero(a));
    let mut window = [0u8; 4];
    assert!(loaded.read(b_at + 12, &mut window));
    assert_eq!(window, [7; 4]);
    assert!(!loaded.read(b_at + 13, &mut window), "a read past the file's end is refused");
}

// ---------------------------------------------------------------------------------------------
// Device and loader together.

#[test]
fn reads_acpi_tables_from_the_device() {
    let layout = qemu_like(2);
    let device = Device::with_files(&[
        ("etc/boot-fail-wait", vec![0; 4]),
        (RSDP_FILE, layout.rsdp.clone()),
        (TABLES, layout.tables.clone()),
        (LOADER_FILE, layout.script.clone()),
    ]);
    let fw = FwCfg::probe(&device).unwrap();
    let iort = fw.load_acpi().unwrap().find_table(Signature::IORT).unwrap().unwrap();
    assert_eq!(&iort[..4], b"IORT");
    assert!(checksum_is_zero(&iort));
    assert!(device.bad_accesses.borrow().is_empty(), "{:?}", device.bad_accesses.borrow());

    let no_loader = Device::with_files(&[(TABLES, layout.tables)]);
    assert_eq!(
        FwCfg::probe(&no_loader).unwrap().load_acpi(),
        Err(Error::FileNotFound { name: LOADER_FILE.into() })
    );
}
