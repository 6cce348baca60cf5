//! Malformed input: precise errors for specific corruptions, and a deterministic mutation sweep
//! that asserts every parser returns Ok or Err (never panics) on truncated and bit-flipped
//! versions of the fixtures.

use fwtables::dmar::{Dmar, RemappingStructure};
use fwtables::iort::map::MapError;
use fwtables::iort::Iort;
use fwtables::mcfg::Mcfg;
use fwtables::sdt::{RootTable, Rsdp, SdtHeader};
use fwtables::{ParseError, Problem, Signature};

use fwtables::testing as support;

const FIXTURES: [&[u8]; 4] = [
    include_bytes!("../../../tests/fwtables/dmar-full.aml"),
    include_bytes!("../../../tests/fwtables/dmar-qemu-q35.aml"),
    include_bytes!("../../../tests/fwtables/iort-full.aml"),
    include_bytes!("../../../tests/fwtables/iort-qemu-virt.aml"),
];

/// Runs every parser (and the IORT walks) over `bytes` as given and with its checksum made
/// right again (a wrong checksum would otherwise stop the table parsers before the part under
/// test); only panics count as failure.
fn parse_everything(bytes: &[u8]) {
    parse_as_given(bytes);
    let mut fixed = bytes.to_vec();
    support::fix_checksum(&mut fixed);
    parse_as_given(&fixed);
}

fn parse_as_given(bytes: &[u8]) {
    let _ = SdtHeader::parse(bytes);
    let _ = Dmar::parse(bytes);
    let _ = Mcfg::parse(bytes);
    let _ = RootTable::parse(bytes);
    let _ = Rsdp::parse(bytes);
    if let Ok(iort) = Iort::parse(bytes) {
        for node in &iort.nodes {
            for id in [0, 0x10, 0x8005, u32::MAX] {
                let _ = iort.map_id(node.offset, id);
            }
            let _ = iort.map_own_id(node.offset);
        }
    }
}

/// Small deterministic generator (xorshift) so the sweep is reproducible.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn truncation_at_every_length_never_panics() {
    for fixture in FIXTURES {
        for len in 0..=fixture.len() {
            parse_everything(&fixture[..len]);
        }
    }
}

#[test]
fn mutations_never_panic() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for fixture in FIXTURES {
        // Every byte set to a few boundary values...
        for at in 0..fixture.len() {
            for value in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let mut bytes = fixture.to_vec();
                bytes[at] = value;
                parse_everything(&bytes);
            }
        }
        // ...then random multi-byte corruption, bounded.
        for _ in 0..3000 {
            let mut bytes = fixture.to_vec();
            for _ in 0..1 + rng.next() % 4 {
                let at = (rng.next() as usize) % bytes.len();
                bytes[at] = rng.next() as u8;
            }
            parse_everything(&bytes);
        }
    }
}

#[test]
fn a_short_dmar_structure_length_is_named() {
    let mut bytes = FIXTURES[0].to_vec();
    // First DRHD's Length (table offset 0x32) set below its 16-byte fixed part.
    bytes[0x32] = 8;
    let err = Dmar::parse(&bytes).unwrap_err();
    assert_eq!(
        err,
        ParseError {
            table: Signature::DMAR,
            structure: "DRHD",
            field: "Length",
            offset: 0x32,
            problem: Problem::LengthTooSmall { length: 8, minimum: 16 },
        }
    );
    assert!(err.to_string().contains("DRHD"), "{err}");
}

#[test]
fn an_odd_device_scope_length_is_named() {
    let mut bytes = FIXTURES[0].to_vec();
    // First scope of the first DRHD is at 0x40; its Length at 0x41.
    bytes[0x41] = 7;
    let err = Dmar::parse(&bytes).unwrap_err();
    assert_eq!((err.structure, err.field, err.offset), ("device scope", "Length", 0x41));
    assert!(matches!(err.problem, Problem::InvalidValue { value: 7, .. }));
}

#[test]
fn a_table_length_past_the_buffer_is_reported() {
    let mut bytes = FIXTURES[1].to_vec();
    bytes.truncate(100);
    let err = Dmar::parse(&bytes).unwrap_err();
    assert_eq!((err.field, err.offset), ("Length", 4));
    assert_eq!(err.problem, Problem::Truncated { needed: FIXTURES[1].len(), available: 100 });
}

#[test]
fn an_unknown_dmar_structure_is_skipped_and_reported() {
    let mut bytes = FIXTURES[0].to_vec();
    // RHSA (type 3) at 0xcc becomes reserved type 0x7f; parsing continues after it.
    assert_eq!(bytes[0xcc], 3);
    bytes[0xcc] = 0x7f;
    support::fix_checksum(&mut bytes);
    let dmar = Dmar::parse(&bytes).unwrap();
    assert_eq!(dmar.structures[5], RemappingStructure::Unknown { offset: 0xcc, structure_type: 0x7f, length: 0x14 });
    assert!(matches!(dmar.structures[6], RemappingStructure::Andd(_)));
}

#[test]
fn a_wrong_signature_is_rejected() {
    let err = Dmar::parse(FIXTURES[2]).unwrap_err();
    assert_eq!(err.problem, Problem::WrongSignature { expected: Signature::DMAR, found: Signature::IORT });
}

#[test]
fn an_iort_mapping_array_outside_its_node_is_named() {
    let mut bytes = FIXTURES[3].to_vec();
    // SMMUv3 node at 0x48; its Mapping Offset (node + 12) pushed past the node's end.
    bytes[0x48 + 12] = 0x50;
    let err = Iort::parse(&bytes).unwrap_err();
    assert_eq!((err.structure, err.field), ("SMMUv3 node", "Number of ID mappings"));
    assert!(matches!(err.problem, Problem::Truncated { needed: 20, .. }));
}

#[test]
fn iort_dangling_reference_and_loop_are_rejected() {
    let mut dangling = FIXTURES[3].to_vec();
    // The root complex's first mapping (at 0xa0 + 0x24) references 0x48; point it at 0x44,
    // inside the ITS group node at 0x30.
    dangling[0xa0 + 0x24 + 12] = 0x44;
    support::fix_checksum(&mut dangling);
    let err = Iort::parse(&dangling).unwrap_err();
    assert_eq!(err.problem, Problem::ReferenceIntoNode { node: 0xa0, reference: 0x44, target: 0x30 });
    assert_eq!(err.offset, 0xa0 + 0x24 + 12);

    let mut looped = FIXTURES[3].to_vec();
    // The SMMUv3's mapping (at 0x48 + 0x44) goes to the ITS at 0x30; sending it back to the
    // root complex at 0xa0 would loop, and a root complex never receives IDs.
    looped[0x48 + 0x44 + 12] = 0xa0;
    support::fix_checksum(&mut looped);
    let err = Iort::parse(&looped).unwrap_err();
    assert!(matches!(err.problem, Problem::WrongReferenceKind { node: 0x48, reference: 0xa0, found: "root complex", .. }), "{err}");
}

/// A walk over a hand-assembled graph (not from `parse`, so not validated) still stops at a
/// loop.
#[test]
fn walks_stop_at_loops_in_unvalidated_graphs() {
    let mut iort = Iort::parse(FIXTURES[3]).unwrap();
    iort.nodes[1].id_mappings[0].output_reference = 0xa0;
    assert_eq!(iort.map_requester_id(0, 1), Err(MapError::Loop { node: 0xa0 }));
    iort.nodes[2].id_mappings[0].output_reference = 0x44;
    assert_eq!(
        iort.map_requester_id(0, 1),
        Err(MapError::DanglingReference { node: 0xa0, mapping_index: 0, reference: 0x44 })
    );
}

/// Whether node `to` can be reached from node `from` along one or more mapping edges, computed
/// independently of the parser (plain breadth-first search over indices).
fn reaches(edges: &[Vec<usize>], from: usize, to: usize) -> bool {
    let mut seen = vec![false; edges.len()];
    let mut queue: Vec<usize> = edges[from].clone();
    while let Some(n) = queue.pop() {
        if n == to {
            return true;
        }
        if !std::mem::replace(&mut seen[n], true) {
            queue.extend(&edges[n]);
        }
    }
    false
}

/// Many generated IORTs with random kinds and edges (valid and dangling): the parser accepts a
/// table exactly when every reference is a node start of an admissible kind and the graph has
/// no cycle, a reported cycle really exists, and every requester ID walk on an accepted table
/// ends within as many hops as there are nodes.
#[test]
fn generated_iort_graphs_are_judged_like_an_independent_check() {
    use support::{its_group, iort, iort_offsets, range, root_complex, smmu_v3, IortNode, Output};
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let (mut accepted, mut cycles, mut other_errors) = (0, 0, 0);
    for _ in 0..4000 {
        let count = 1 + (rng.next() % 6) as usize;
        let mut nodes: Vec<IortNode> = (0..count)
            .map(|i| match rng.next() % 3 {
                0 => its_group(&[i as u32]),
                1 => smmu_v3(0x1000_0000 + 0x2_0000 * i as u64),
                _ => root_complex(i as u32),
            })
            .collect();
        // The first node always starts right after the 48-byte header.
        let first = 48;
        for node in nodes.iter_mut() {
            let edges = rng.next() % 3;
            node.mappings = (0..edges)
                .map(|_| {
                    let output = match rng.next() % 8 {
                        0 => Output::Offset(first + 4),
                        1 => Output::Offset(0x10_0000),
                        _ => Output::Node((rng.next() as usize) % count),
                    };
                    let base = (rng.next() % 4) as u32 * 0x40;
                    range(base, 0x40, (rng.next() % 0x100) as u32, output)
                })
                .collect();
        }
        let bytes = iort(&nodes);
        let offsets = iort_offsets(&nodes);
        let kinds: Vec<u8> = nodes.iter().map(|n| n.node_type).collect();
        let mut edges = vec![Vec::new(); count];
        let mut references_ok = true;
        for (i, node) in nodes.iter().enumerate() {
            for m in &node.mappings {
                match m.output {
                    Output::Node(t) => {
                        // ITS groups (type 0) and SMMUs (4) receive IDs; an SMMU's go only to an
                        // ITS group.
                        let admissible = kinds[t] == 0 || (kinds[t] == 4 && kinds[i] != 4);
                        references_ok &= admissible;
                        edges[i].push(t);
                    }
                    Output::Offset(_) => references_ok = false,
                }
            }
        }
        let has_cycle = (0..count).any(|n| reaches(&edges, n, n));
        match Iort::parse(&bytes) {
            Ok(parsed) => {
                assert!(references_ok && !has_cycle, "accepted a bad graph: {nodes:?}");
                accepted += 1;
                for (i, node) in parsed.nodes.iter().enumerate() {
                    for id in [0, 0x41, 0xbf, 0x100] {
                        if let Ok(path) = parsed.map_id(node.offset, id) {
                            assert!(path.hops.len() <= count, "walk from node {i} too long: {path:?}");
                        }
                    }
                }
            }
            Err(ParseError { problem: Problem::MappingCycle { node, back_to, .. }, .. }) => {
                assert!(references_ok, "a cycle was reported before a bad reference: {nodes:?}");
                let index = |o: u32| offsets.iter().position(|&x| x == o).unwrap();
                let (a, b) = (index(node), index(back_to));
                assert!(edges[a].contains(&b) && (a == b || reaches(&edges, b, a)), "no such cycle: {nodes:?}");
                cycles += 1;
            }
            Err(err) => {
                assert!(!references_ok, "rejected a sound graph ({err}): {nodes:?}");
                other_errors += 1;
            }
        }
    }
    // The generator must exercise every outcome, or the test proves little.
    assert!(accepted > 100 && cycles > 20 && other_errors > 100, "{accepted} {cycles} {other_errors}");
}

#[test]
fn mcfg_segments_and_ecam_addresses() {
    let mut body = vec![0u8; 8];
    for (base, segment, start, end) in [(0xb000_0000u64, 0u16, 0u8, 0xffu8), (0x40_0000_0000, 1, 0x10, 0x1f)] {
        body.extend_from_slice(&base.to_le_bytes());
        body.extend_from_slice(&segment.to_le_bytes());
        body.extend_from_slice(&[start, end, 0, 0, 0, 0]);
    }
    let mcfg = Mcfg::parse(&support::sdt(b"MCFG", 1, &body)).unwrap();
    assert!(mcfg.header.checksum_valid);
    assert_eq!(mcfg.segments.len(), 2);
    let seg1 = mcfg.segment_for(1, 0x12).unwrap();
    assert_eq!(seg1.offset, 60);
    assert_eq!(seg1.config_address(0x12, 3, 1), Some(0x40_0000_0000 + (0x12 << 20) + (3 << 15) + (1 << 12)));
    assert_eq!(seg1.config_address(0x20, 0, 0), None);
    assert!(mcfg.segment_for(1, 0x0f).is_none());

    let mut partial = support::sdt(b"MCFG", 1, &body);
    partial.truncate(partial.len() - 4);
    partial[4] -= 4;
    assert!(matches!(Mcfg::parse(&partial).unwrap_err().problem, Problem::InvalidValue { .. }));
}

#[test]
fn rsdp_revisions_and_xsdt_walk() {
    // Physical memory: RSDP (revision 2), XSDT at 0x1000 listing an MCFG-less pair: the DMAR
    // fixture at 0x2000 and the IORT fixture at 0x3000.
    let xsdt = support::sdt(b"XSDT", 1, &[0x2000u64.to_le_bytes(), 0x3000u64.to_le_bytes()].concat());
    let mut rsdp = Vec::new();
    rsdp.extend_from_slice(b"RSD PTR ");
    rsdp.push(0);
    rsdp.extend_from_slice(b"FWTEST");
    rsdp.push(2);
    rsdp.extend_from_slice(&0x800u32.to_le_bytes());
    rsdp.extend_from_slice(&36u32.to_le_bytes());
    rsdp.extend_from_slice(&0x1000u64.to_le_bytes());
    rsdp.extend_from_slice(&[0, 0, 0, 0]);
    rsdp[8] = 0u8.wrapping_sub(rsdp[..20].iter().fold(0u8, |s, &b| s.wrapping_add(b)));
    rsdp[32] = 0u8.wrapping_sub(rsdp.iter().fold(0u8, |s, &b| s.wrapping_add(b)));

    let parsed = Rsdp::parse(&rsdp).unwrap();
    assert_eq!((parsed.revision, parsed.xsdt_address), (2, Some(0x1000)));
    assert_eq!((parsed.checksum_valid, parsed.extended_checksum_valid), (true, Some(true)));
    assert_eq!(parsed.root_table_address(), (Signature::XSDT, 0x1000));
    let v1 = Rsdp::parse(&{
        let mut v = rsdp[..20].to_vec();
        v[15] = 0;
        v
    })
    .unwrap();
    assert_eq!((v1.xsdt_address, v1.checksum_valid), (None, false));
    assert_eq!(v1.root_table_address(), (Signature::RSDT, 0x800));

    let regions: Vec<(u64, Vec<u8>)> =
        vec![(0x1000, xsdt), (0x2000, FIXTURES[0].to_vec()), (0x3000, FIXTURES[2].to_vec())];
    let mut memory = |address: u64, buf: &mut [u8]| {
        regions.iter().any(|(base, bytes)| {
            let Some(start) = address.checked_sub(*base) else { return false };
            let Some(src) = bytes.get(start as usize..start as usize + buf.len()) else { return false };
            buf.copy_from_slice(src);
            true
        })
    };
    let root = RootTable::load(&parsed, &mut memory).unwrap();
    assert_eq!(root.entries, [0x2000, 0x3000]);
    let (address, iort) = root.find(&mut memory, Signature::IORT).unwrap().unwrap();
    assert_eq!((address, iort.as_slice()), (0x3000, FIXTURES[2]));
    assert!(root.find(&mut memory, Signature::MCFG).unwrap().is_none());
}
