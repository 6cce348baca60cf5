//! The firmware-table override: which of an override file and the machine's own DMAR or IORT
//! the server uses, and the x86 I/O-port interface the DMAR override is read through.

// The MMIO model is shared with tests/fwcfg.rs; this file uses only its file directory.
#[allow(dead_code)]
mod support;

use std::cell::Cell;

use fwcfg::device::port;
use fwcfg::table_override::{choose, dmar_same_units, iort_same_units, Source, DMAR_FILE, IORT_FILE};
use fwcfg::{FwCfg, PortIo, Ports};
use fwtables::dmar::Dmar;
use fwtables::iort::{Iort, NodeBody};
use fwtables::sdt::Signature;
use fwtables::testing::{self as build, Output};

const VTD_BASE: u64 = 0xfed9_0000;
/// An RMRR for the edu device at 00:03.0.
const RMRR: (u64, u64) = (0x3f00_0000, 0x3f00_ffff);

/// QEMU's q35 DMAR shape: one DRHD with explicit endpoint scopes and the I/O APIC.
fn machine_structures() -> Vec<Vec<u8>> {
    let scopes = [build::scope(1, 0, &[(2, 0)]), build::scope(1, 0, &[(3, 0)]), build::scope(3, 0, &[(0x1f, 0)])];
    vec![build::drhd(0, 0, VTD_BASE, &scopes)]
}

fn with_rmrr(mut structures: Vec<Vec<u8>>) -> Vec<u8> {
    structures.push(build::rmrr(0, RMRR.0, RMRR.1, &[build::scope(1, 0, &[(3, 0)])]));
    build::dmar(&structures)
}

fn choose_dmar(file: Option<&[u8]>) -> fwcfg::table_override::Chosen<Dmar> {
    let machine = Dmar::parse(&build::dmar(&machine_structures())).expect("machine DMAR");
    choose(Signature::DMAR, file.map(|bytes| (DMAR_FILE, bytes)), Some(machine), Dmar::parse, dmar_same_units)
}

#[test]
fn without_an_override_the_machines_table_is_used_silently() {
    let chosen = choose_dmar(None);
    assert_eq!(chosen.source, Source::Machine);
    assert!(chosen.messages.is_empty());
    assert_eq!(chosen.table.expect("the machine's").rmrrs().count(), 0);
}

#[test]
fn a_matching_override_is_taken_and_logged() {
    let file = with_rmrr(machine_structures());
    let chosen = choose_dmar(Some(&file));
    assert_eq!(chosen.source, Source::Override, "{:?}", chosen.messages);
    let rmrrs: Vec<(u64, u64)> = chosen.table.expect("the override").rmrrs().map(|r| (r.base, r.limit)).collect();
    assert_eq!(rmrrs, [RMRR]);
    assert_eq!(chosen.messages.len(), 1);
    assert!(chosen.messages[0].contains("opt/iommu-os/dmar") && chosen.messages[0].contains("override taken"), "{:?}", chosen.messages);
}

/// Each malformed override is rejected with a message saying why, and the machine's own
/// table (without the RMRR) is used.
#[test]
fn a_malformed_override_is_rejected_with_a_message_and_the_machines_table_used() {
    let good = with_rmrr(machine_structures());
    let mut bad_checksum = good.clone();
    bad_checksum[9] = bad_checksum[9].wrapping_add(1);
    let mut trailing = good.clone();
    trailing.push(0);
    let mut wrong_signature = good.clone();
    wrong_signature[..4].copy_from_slice(b"IORT");
    build::fix_checksum(&mut wrong_signature);
    let other_unit = with_rmrr(vec![build::drhd(0, 0, 0xfed9_1000, &[build::scope(1, 0, &[(2, 0)]), build::scope(1, 0, &[(3, 0)]), build::scope(3, 0, &[(0x1f, 0)])])]);
    let other_scopes = with_rmrr(vec![build::drhd(0, 0, VTD_BASE, &[build::scope(1, 0, &[(2, 0)]), build::scope(3, 0, &[(0x1f, 0)])])]);
    let include_all = with_rmrr(vec![build::drhd(1, 0, VTD_BASE, &[build::scope(3, 0, &[(0x1f, 0)])])]);
    let no_unit = with_rmrr(Vec::new());
    let cases: [(&str, &[u8], &str); 8] = [
        ("checksum", &bad_checksum, "hecksum"),
        ("truncated", &good[..good.len() - 4], "ength"),
        ("trailing bytes", &trailing, "the file has"),
        ("signature", &wrong_signature, "ignature"),
        ("another register base", &other_unit, "registers 0xfed91000"),
        ("another scope", &other_scopes, "device scopes"),
        ("INCLUDE_PCI_ALL", &include_all, "flags 0x1"),
        ("no DRHD", &no_unit, "0 DRHDs"),
    ];
    for (what, file, why) in cases {
        let chosen = choose_dmar(Some(file));
        assert_eq!(chosen.source, Source::Machine, "{what}: taken");
        assert_eq!(chosen.table.as_ref().expect("the machine's").rmrrs().count(), 0, "{what}: not the machine's table");
        assert_eq!(chosen.messages.len(), 1, "{what}");
        let message = &chosen.messages[0];
        assert!(message.contains("override rejected") && message.contains(why) && message.contains("the machine's own DMAR is used"), "{what}: {message}");
    }
}

#[test]
fn an_override_for_a_machine_without_the_table_is_rejected() {
    let file = with_rmrr(machine_structures());
    let chosen = choose(Signature::DMAR, Some((DMAR_FILE, file.as_slice())), None, Dmar::parse, dmar_same_units);
    assert_eq!(chosen.source, Source::Machine);
    assert!(chosen.table.is_none());
    assert!(chosen.messages[0].contains("the machine has no DMAR"), "{:?}", chosen.messages);
}

/// QEMU's virt IORT shape plus an RMR node mapping StreamID 0x18 to the SMMU.
fn iort_with_rmr(smmu_base: u64) -> Vec<u8> {
    let mut nodes = build::iort_nodes_ok();
    nodes[1] = build::smmu_v3(smmu_base).with(vec![build::range(0, 0x1_0000, 0, Output::Node(0))]);
    nodes.push(build::rmr(&[(RMRR.0, RMRR.1 - RMRR.0 + 1)], vec![build::range(0, 1, 0x18, Output::Node(1))]));
    build::iort(&nodes)
}

#[test]
fn an_iort_override_must_describe_the_same_smmus() {
    let machine = || Some(Iort::parse(&build::iort(&build::iort_nodes_ok())).expect("machine IORT"));
    let good = iort_with_rmr(0x0905_0000);
    let chosen = choose(Signature::IORT, Some((IORT_FILE, good.as_slice())), machine(), Iort::parse, iort_same_units);
    assert_eq!(chosen.source, Source::Override, "{:?}", chosen.messages);
    let rmrs = chosen.table.expect("taken").nodes.iter().filter(|n| matches!(n.body, NodeBody::Rmr(_))).count();
    assert_eq!(rmrs, 1);

    let moved = iort_with_rmr(0x0906_0000);
    let chosen = choose(Signature::IORT, Some((IORT_FILE, moved.as_slice())), machine(), Iort::parse, iort_same_units);
    assert_eq!(chosen.source, Source::Machine);
    assert!(chosen.messages[0].contains("SMMUv3s") && chosen.messages[0].contains("9060000"), "{:?}", chosen.messages);
}

/// The x86 interface: a little-endian selector at 0x510 and one byte per read at 0x511.
struct PortModel {
    device: support::Device,
    selected: Cell<u16>,
    position: Cell<usize>,
    bad_accesses: Cell<usize>,
}

impl PortIo for PortModel {
    fn in8(&self, at: u16) -> u8 {
        if at != port::DATA {
            self.bad_accesses.set(self.bad_accesses.get() + 1);
            return 0;
        }
        let item = self.device.items.get(&self.selected.get());
        let byte = item.and_then(|bytes| bytes.get(self.position.get()).copied()).unwrap_or(0);
        self.position.set(self.position.get() + 1);
        byte
    }
    fn out16(&self, at: u16, value: u16) {
        if at != port::SELECTOR {
            self.bad_accesses.set(self.bad_accesses.get() + 1);
            return;
        }
        self.selected.set(value);
        self.position.set(0);
    }
}

#[test]
fn the_override_file_is_read_through_the_io_ports() {
    let table = with_rmrr(machine_structures());
    let device = support::Device::with_files(&[("etc/acpi/tables", vec![1; 100]), (DMAR_FILE, table.clone())]);
    let model = PortModel { device, selected: Cell::new(0), position: Cell::new(0), bad_accesses: Cell::new(0) };
    let fw_cfg = FwCfg::probe(Ports(&model)).expect("signature through the ports");
    assert_eq!(fw_cfg.read_file(DMAR_FILE).expect("the file"), table);
    assert_eq!(model.bad_accesses.get(), 0);
    assert!(port::RANGE.contains(&port::SELECTOR) && port::RANGE.contains(&port::DATA));
}

impl PortIo for &PortModel {
    fn in8(&self, at: u16) -> u8 {
        (**self).in8(at)
    }
    fn out16(&self, at: u16, value: u16) {
        (**self).out16(at, value)
    }
}
