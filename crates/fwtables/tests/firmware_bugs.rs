//! Broken firmware: tables whose structure is sound but whose contents are wrong decode with
//! located warnings and the bad entries skipped; tables whose structure or IORT graph is broken
//! are rejected with an error naming the field, its offset and (for references) the node.

use fwtables::testing as support;

use fwtables::dmar::pci::{DrhdMatchRule, PciAddress, PciTopology};
use fwtables::dmar::Dmar;
use fwtables::iort::Iort;
use fwtables::mcfg::Mcfg;
use fwtables::{ParseError, Problem, Signature, Warning, WarningKind};
use support::*;

/// Bus 0 only: no bridges.
struct FlatBus;
impl PciTopology for FlatBus {
    fn secondary_bus(&self, _: u16, _: u8, _: u8, _: u8) -> Option<u8> {
        None
    }
    fn subordinate_bus(&self, _: u16, _: u8, _: u8, _: u8) -> Option<u8> {
        None
    }
}

fn pci(device: u8) -> PciAddress {
    PciAddress { segment: 0, bus: 0, device, function: 0 }
}

const ENDPOINT: u8 = 1;

#[test]
fn an_rmrr_ending_below_its_base_is_a_warning_and_skipped() {
    let structures = [
        drhd(1, 0, 0xfed9_0000, &[]),
        rmrr(0, 0x8000_0000, 0x7fff_ffff, &[scope(ENDPOINT, 0, &[(2, 0)])]),
        rmrr(0, 0x9000_0000, 0x9000_ffff, &[scope(ENDPOINT, 0, &[(2, 0)])]),
    ];
    let dmar = Dmar::parse(&dmar(&structures)).expect("a semantic bug does not make the table unreadable");
    let bad = dmar_offset(&structures, 1);
    assert_eq!(
        dmar.warnings,
        [Warning {
            table: Signature::DMAR,
            structure: "RMRR",
            entry: bad,
            field: "Reserved Memory Region Limit Address",
            offset: bad + 16,
            kind: WarningKind::RmrrLimitBelowBase { base: 0x8000_0000, limit: 0x7fff_ffff },
            entry_ignored: true,
        }]
    );
    // The decoding keeps all three structures; the consumer's view skips the bad region.
    assert_eq!(dmar.structures.len(), 3);
    let usable: Vec<(u64, u64)> = dmar.rmrrs().map(|r| (r.base, r.limit)).collect();
    assert_eq!(usable, [(0x9000_0000, 0x9000_ffff)]);
    let text = dmar.warnings[0].to_string();
    assert!(text.contains("RMRR at 0x40") && text.contains("offset 0x50") && text.contains("ignored"), "{text}");
}

#[test]
fn rmrrs_off_page_boundaries_name_the_wrong_end() {
    let structures = [
        rmrr(0, 0x8000_0800, 0x8000_ffff, &[scope(ENDPOINT, 0, &[(2, 0)])]),
        rmrr(0, 0x8001_0000, 0x8001_0ffe, &[scope(ENDPOINT, 0, &[(2, 0)])]),
        rmrr(0, 0x8002_0000, 0x8002_0fff, &[scope(ENDPOINT, 0, &[(2, 0)])]),
    ];
    let dmar = Dmar::parse(&dmar(&structures)).unwrap();
    let found: Vec<(usize, &str)> = dmar.warnings.iter().map(|w| (w.entry, w.field)).collect();
    assert_eq!(
        found,
        [
            (dmar_offset(&structures, 0), "Reserved Memory Region Base Address"),
            (dmar_offset(&structures, 1), "Reserved Memory Region Limit Address"),
        ]
    );
    assert!(dmar.warnings.iter().all(|w| matches!(w.kind, WarningKind::RmrrNotPageAligned { .. })));
    assert_eq!(dmar.rmrrs().map(|r| r.base).collect::<Vec<_>>(), [0x8002_0000]);
}

#[test]
fn a_unit_at_zero_and_a_duplicate_unit_are_skipped() {
    let structures = [
        drhd(0, 0, 0, &[scope(ENDPOINT, 0, &[(2, 0)])]),
        drhd(0, 0, 0xfed9_0000, &[scope(ENDPOINT, 0, &[(3, 0)])]),
        drhd(0, 0, 0xfed9_0000, &[scope(ENDPOINT, 0, &[(4, 0)])]),
        drhd(1, 0, 0xfed9_1000, &[]),
    ];
    let dmar = Dmar::parse(&dmar(&structures)).unwrap();
    let kinds: Vec<(usize, WarningKind)> = dmar.warnings.iter().map(|w| (w.entry, w.kind)).collect();
    assert_eq!(
        kinds,
        [
            (dmar_offset(&structures, 0), WarningKind::ZeroRegisterBase),
            (dmar_offset(&structures, 2), WarningKind::DuplicateUnit { first: dmar_offset(&structures, 1) }),
        ]
    );
    assert_eq!(dmar.warnings[0].offset, dmar_offset(&structures, 0) + 8);
    let bases: Vec<u64> = dmar.drhds().map(|d| d.register_base).collect();
    assert_eq!(bases, [0xfed9_0000, 0xfed9_1000]);
    // Devices only the skipped units listed fall to the catch-all unit.
    let unit = |device| dmar.drhd_for_requester(pci(device), &FlatBus).map(|m| (m.drhd.register_base, m.rule));
    assert_eq!(unit(2), Some((0xfed9_1000, DrhdMatchRule::IncludePciAll)));
    assert_eq!(unit(3), Some((0xfed9_0000, DrhdMatchRule::Endpoint)));
    assert_eq!(unit(4), Some((0xfed9_1000, DrhdMatchRule::IncludePciAll)));
}

#[test]
fn include_pci_all_out_of_order_is_kept_and_a_second_one_skipped() {
    let structures = [
        drhd(1, 0, 0xfed9_0000, &[]),
        drhd(0, 0, 0xfed9_1000, &[scope(ENDPOINT, 0, &[(3, 0)])]),
        drhd(1, 0, 0xfed9_2000, &[]),
        // Another segment's catch-all is no conflict.
        drhd(1, 1, 0xfed9_3000, &[]),
    ];
    let dmar = Dmar::parse(&dmar(&structures)).unwrap();
    let found: Vec<(usize, WarningKind, bool)> = dmar.warnings.iter().map(|w| (w.entry, w.kind, w.entry_ignored)).collect();
    assert_eq!(
        found,
        [
            (dmar_offset(&structures, 0), WarningKind::IncludePciAllNotLast { next: dmar_offset(&structures, 1) }, false),
            (dmar_offset(&structures, 2), WarningKind::SecondIncludePciAll { first: dmar_offset(&structures, 0) }, true),
        ]
    );
    assert!(dmar.warnings.iter().all(|w| w.field == "Flags"));
    // Explicit scopes still win over the early catch-all.
    let unit = |device| dmar.drhd_for_requester(pci(device), &FlatBus).map(|m| m.drhd.register_base);
    assert_eq!((unit(3), unit(5)), (Some(0xfed9_1000), Some(0xfed9_0000)));
}

#[test]
fn an_empty_scope_path_is_a_warning_and_matches_nothing() {
    let structures = [drhd(0, 0, 0xfed9_0000, &[scope(ENDPOINT, 0, &[]), scope(ENDPOINT, 0, &[(3, 0)])])];
    let dmar = Dmar::parse(&dmar(&structures)).unwrap();
    let empty_scope = dmar_offset(&structures, 0) + 16;
    assert_eq!(dmar.warnings.len(), 1);
    let w = dmar.warnings[0];
    assert_eq!((w.structure, w.entry, w.field, w.offset, w.kind), ("device scope", empty_scope, "Length", empty_scope + 1, WarningKind::EmptyScopePath));
    assert!(dmar.ignored(empty_scope));
    assert_eq!(dmar.drhds().count(), 1);
    assert!(dmar.drhd_for_requester(pci(0), &FlatBus).is_none());
    assert!(dmar.drhd_for_requester(pci(3), &FlatBus).is_some());
}

#[test]
fn a_clean_table_has_no_warnings() {
    let dmar = Dmar::parse(include_bytes!("../../../tests/fwtables/dmar-full.aml")).unwrap();
    assert_eq!(dmar.warnings, []);
    let full = Iort::parse(include_bytes!("../../../tests/fwtables/iort-full.aml")).unwrap();
    assert_eq!(full.warnings, []);
    assert_eq!(Iort::parse(&iort(&iort_nodes_ok())).unwrap().warnings, []);
}

#[test]
fn a_wrong_checksum_is_rejected_naming_the_checksum_field() {
    for (mut table, signature) in [
        (dmar(&[drhd(1, 0, 0xfed9_0000, &[])]), Signature::DMAR),
        (iort(&iort_nodes_ok()), Signature::IORT),
        (sdt(b"MCFG", 1, &[0; 8]), Signature::MCFG),
    ] {
        let last = table.len() - 1;
        table[last] ^= 0x10;
        let err = match signature {
            Signature::DMAR => Dmar::parse(&table).map(drop),
            Signature::IORT => Iort::parse(&table).map(drop),
            _ => Mcfg::parse(&table).map(drop),
        }
        .unwrap_err();
        assert_eq!(
            err,
            ParseError { table: signature, structure: "table header", field: "Checksum", offset: 9, problem: Problem::ChecksumMismatch { sum: 0x10 } }
        );
    }
}

#[test]
fn a_structure_overrunning_the_table_is_rejected() {
    let structures = [drhd(1, 0, 0xfed9_0000, &[]), rmrr(0, 0x8000_0000, 0x8000_ffff, &[])];
    let mut table = dmar(&structures);
    let at = dmar_offset(&structures, 1);
    table[at + 2] = 0x40; // RMRR Length 64: 40 bytes past the end of the table
    fix_checksum(&mut table);
    let err = Dmar::parse(&table).unwrap_err();
    assert_eq!((err.structure, err.field, err.offset), ("RMRR", "Length", at + 2));
    assert_eq!(err.problem, Problem::Truncated { needed: 0x40, available: 24 });
}

#[test]
fn an_rmr_descriptor_array_on_the_node_header_is_rejected() {
    let mut nodes = iort_nodes_ok();
    nodes.push(rmr(&[(0x8000_0000, 0x1_0000)], vec![range(0, 1, 0x20, Output::Node(1))]));
    let offsets = iort_offsets(&nodes);
    let mut table = iort(&nodes);
    let field = offsets[3] as usize + 24; // Reference to Memory Range Descriptors
    table[field] = 20;
    fix_checksum(&mut table);
    let err = Iort::parse(&table).unwrap_err();
    assert_eq!((err.structure, err.field, err.offset), ("RMR node", "Reference to Memory Range Descriptors", field));
}

/// The error for an IORT whose root complex (node 2) maps to `output`.
fn root_complex_to(output: Output) -> ParseError {
    let mut nodes = iort_nodes_ok();
    nodes[2].mappings[0].output = output;
    Iort::parse(&iort(&nodes)).unwrap_err()
}

#[test]
fn dangling_iort_references_are_rejected_naming_the_node() {
    let offsets = iort_offsets(&iort_nodes_ok());
    let (its, smmu, rc) = (offsets[0], offsets[1], offsets[2]);
    // The root complex's mapping is the first thing after its 36-byte fixed part.
    let field = rc as usize + 36 + 12;

    let outside = root_complex_to(Output::Offset(0x1000));
    assert_eq!((outside.structure, outside.field, outside.offset), ("ID mapping", "Output reference", field));
    assert_eq!(outside.problem, Problem::ReferenceOutsideTable { node: rc, reference: 0x1000 });
    assert!(outside.to_string().contains(&format!("node at {rc:#x}")), "{outside}");

    let inside = root_complex_to(Output::Offset(smmu + 8));
    assert_eq!(inside.problem, Problem::ReferenceIntoNode { node: rc, reference: smmu + 8, target: smmu });
    assert_eq!(inside.offset, field);

    let header = root_complex_to(Output::Offset(0x20));
    assert_eq!(header.problem, Problem::ReferenceNotANode { node: rc, reference: 0x20 });

    // The well-formed variant parses and translates, so the errors above come from the
    // reference alone.
    let good = Iort::parse(&iort(&iort_nodes_ok())).unwrap();
    assert_eq!(good.map_requester_id(0, 0x10).unwrap().destination(), Some((its, 0x10)));
}

#[test]
fn references_to_the_wrong_kind_of_node_are_rejected() {
    let offsets = iort_offsets(&iort_nodes_ok());
    let to_root_complex = root_complex_to(Output::Node(2));
    assert_eq!(
        to_root_complex.problem,
        Problem::WrongReferenceKind { node: offsets[2], reference: offsets[2], found: "root complex", expected: "an SMMU or ITS group node" }
    );
    // An SMMU's stream IDs leave only towards an ITS group.
    let mut nodes = iort_nodes_ok();
    nodes.push(smmu_v3(0x0906_0000).with(vec![range(0, 0x100, 0, Output::Node(0))]));
    nodes[1].mappings[0].output = Output::Node(3);
    let err = Iort::parse(&iort(&nodes)).unwrap_err();
    let offsets = iort_offsets(&nodes);
    assert_eq!(
        err.problem,
        Problem::WrongReferenceKind { node: offsets[1], reference: offsets[3], found: "SMMUv3", expected: "an ITS group node" }
    );
    assert_eq!(err.offset, offsets[1] as usize + 68 + 12);
}

#[test]
fn a_pmcg_must_reference_the_node_it_counts() {
    let with_pmcg = |reference: u32| {
        let mut nodes = iort_nodes_ok();
        nodes.push(pmcg(0x0906_0000, reference));
        let offsets = iort_offsets(&nodes);
        (Iort::parse(&iort(&nodes)), offsets)
    };
    let offsets = iort_offsets(&iort_nodes_ok());
    // Counting the SMMUv3 is right ...
    assert!(with_pmcg(offsets[1]).0.is_ok());
    // ... an ITS group is the wrong kind, and a reference into the SMMU's body dangles.
    let (wrong, all) = with_pmcg(offsets[0]);
    let err = wrong.unwrap_err();
    assert_eq!((err.structure, err.field, err.offset), ("PMCG node", "Node reference", all[3] as usize + 28));
    assert!(matches!(err.problem, Problem::WrongReferenceKind { found: "ITS group", .. }), "{err}");
    let (inside, all) = with_pmcg(offsets[1] + 4);
    assert_eq!(
        inside.unwrap_err().problem,
        Problem::ReferenceIntoNode { node: all[3], reference: offsets[1] + 4, target: offsets[1] }
    );
}

#[test]
fn mapping_cycles_are_rejected_with_their_nodes() {
    // ITS group 0 (wrongly carrying a mapping) -> SMMU -> ITS group 0.
    let mut nodes = iort_nodes_ok();
    nodes[0].mappings = vec![range(0, 0x100, 0, Output::Node(1))];
    let offsets = iort_offsets(&nodes);
    let err = Iort::parse(&iort(&nodes)).unwrap_err();
    assert_eq!(err.problem, Problem::MappingCycle { node: offsets[1], back_to: offsets[0], length: 2 });
    assert_eq!((err.structure, err.field, err.offset), ("ID mapping", "Output reference", offsets[1] as usize + 68 + 12));
    let text = err.to_string();
    assert!(text.contains(&format!("{:#x}", offsets[0])) && text.contains(&format!("{:#x}", offsets[1])), "{text}");

    // A node mapping to itself, and a three-node ring of ITS groups reached from a root complex.
    let self_loop = vec![its_group(&[0]).with(vec![range(0, 1, 0, Output::Node(0))])];
    assert_eq!(Iort::parse(&iort(&self_loop)).unwrap_err().problem, Problem::MappingCycle { node: 48, back_to: 48, length: 1 });
    let ring = vec![
        root_complex(0).with(vec![range(0, 0x100, 0, Output::Node(1))]),
        its_group(&[0]).with(vec![range(0, 0x100, 0, Output::Node(2))]),
        its_group(&[1]).with(vec![range(0, 0x100, 0, Output::Node(3))]),
        its_group(&[2]).with(vec![range(0, 0x100, 0, Output::Node(1))]),
    ];
    let offsets = iort_offsets(&ring);
    assert_eq!(
        Iort::parse(&iort(&ring)).unwrap_err().problem,
        Problem::MappingCycle { node: offsets[3], back_to: offsets[1], length: 3 }
    );
}

#[test]
fn iort_content_bugs_are_warnings() {
    let nodes = vec![
        its_group(&[0]),
        smmu_v3(0).with(vec![range(0, 0x100, 0, Output::Node(0))]),
        smmu_v3(0x0905_0000).with(vec![range(0, 0x100, 0xffff_ff80, Output::Node(0))]),
        smmu_v3(0x0905_0000),
        root_complex(0).with(vec![range(0, 0x100, 0, Output::Node(2))]),
        rmr(&[(0x8000_0000, 0x1_0000), (0x8010_0000, 0x1000), (0x8020_0000, 0)], vec![range(0, 1, 0x20, Output::Node(2))]),
    ];
    let offsets = iort_offsets(&nodes);
    let parsed = Iort::parse(&iort(&nodes)).unwrap();
    let found: Vec<(&str, &str, WarningKind, bool)> =
        parsed.warnings.iter().map(|w| (w.structure, w.field, w.kind, w.entry_ignored)).collect();
    assert_eq!(
        found,
        [
            ("SMMUv3 node", "Base Address", WarningKind::ZeroAddress, true),
            ("ID mapping", "Number of IDs", WarningKind::OutputRangeOverflow { output_base: 0xffff_ff80, id_count: 0x100 }, false),
            ("SMMUv3 node", "Base Address", WarningKind::DuplicateSmmu { first: offsets[2] }, true),
            ("RMR memory range descriptor", "Physical Range Length", WarningKind::RangeNotAligned { base: 0x8010_0000, length: 0x1000 }, true),
            ("RMR memory range descriptor", "Physical Range Length", WarningKind::EmptyRange, true),
        ]
    );
    assert!(parsed.ignored(offsets[1] as usize) && parsed.ignored(offsets[3] as usize) && !parsed.ignored(offsets[2] as usize));
    // The overflowing mapping still translates the IDs whose output fits.
    let path = parsed.map_requester_id(0, 0x10).unwrap();
    assert_eq!(path.arrival_at(&parsed, fwtables::iort::NodeType::SmmuV3), Some((offsets[2], 0x10)));
    assert_eq!(path.destination(), Some((offsets[0], 0xffff_ff90)));
}

#[test]
fn mcfg_bus_range_bugs_are_warnings() {
    let mut body = vec![0u8; 8];
    for (base, segment, start, end) in [(0xb000_0000u64, 0u16, 0u8, 0x3fu8), (0xc000_0000, 0, 0x20, 0x7f), (0xd000_0000, 1, 0x10, 0x0f)] {
        body.extend_from_slice(&base.to_le_bytes());
        body.extend_from_slice(&segment.to_le_bytes());
        body.extend_from_slice(&[start, end, 0, 0, 0, 0]);
    }
    let mcfg = Mcfg::parse(&sdt(b"MCFG", 1, &body)).unwrap();
    let found: Vec<(usize, usize, WarningKind)> = mcfg.warnings.iter().map(|w| (w.entry, w.offset, w.kind)).collect();
    assert_eq!(
        found,
        [(60, 70, WarningKind::OverlappingEcam { first: 44 }), (76, 87, WarningKind::EndBusBelowStartBus { start: 0x10, end: 0x0f })]
    );
    assert_eq!(mcfg.segment_for(0, 0x30).map(|s| s.base_address), Some(0xb000_0000));
    assert!(mcfg.segment_for(0, 0x50).is_none());
    assert!(mcfg.segment_for(1, 0x10).is_none());
}
