//! Malformed input: precise errors for specific corruptions, and a deterministic mutation sweep
//! that asserts every parser returns Ok or Err (never panics) on truncated and bit-flipped
//! versions of the fixtures.

use fwtables::dmar::{Dmar, RemappingStructure};
use fwtables::iort::map::MapError;
use fwtables::iort::Iort;
use fwtables::mcfg::Mcfg;
use fwtables::sdt::{RootTable, Rsdp, SdtHeader};
use fwtables::{ParseError, Problem, Signature};

const FIXTURES: [&[u8]; 4] = [
    include_bytes!("../../../tests/fwtables/dmar-full.aml"),
    include_bytes!("../../../tests/fwtables/dmar-qemu-q35.aml"),
    include_bytes!("../../../tests/fwtables/iort-full.aml"),
    include_bytes!("../../../tests/fwtables/iort-qemu-virt.aml"),
];

/// Runs every parser (and the IORT walks) over `bytes`; only panics count as failure.
fn parse_everything(bytes: &[u8]) {
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
    assert_eq!((err.field, err.offset), ("Length", 0));
    assert_eq!(err.problem, Problem::Truncated { needed: FIXTURES[1].len(), available: 100 });
}

#[test]
fn an_unknown_dmar_structure_is_skipped_and_reported() {
    let mut bytes = FIXTURES[0].to_vec();
    // RHSA (type 3) at 0xcc becomes reserved type 0x7f; parsing continues after it.
    assert_eq!(bytes[0xcc], 3);
    bytes[0xcc] = 0x7f;
    let dmar = Dmar::parse(&bytes).unwrap();
    assert_eq!(dmar.structures[5], RemappingStructure::Unknown { offset: 0xcc, structure_type: 0x7f, length: 0x14 });
    assert!(matches!(dmar.structures[6], RemappingStructure::Andd(_)));
    // The checksum no longer matches, and that is reported, not fatal.
    assert!(!dmar.header.checksum_valid);
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
fn iort_dangling_reference_and_loop_are_errors() {
    let mut dangling = FIXTURES[3].to_vec();
    // The root complex's only mapping (at 0xa0 + 0x24) references 0x48; point it at 0x44.
    dangling[0xa0 + 0x24 + 12] = 0x44;
    let iort = Iort::parse(&dangling).unwrap();
    assert_eq!(
        iort.map_requester_id(0, 1),
        Err(MapError::DanglingReference { node: 0xa0, mapping_index: 0, reference: 0x44 })
    );

    let mut looped = FIXTURES[3].to_vec();
    // The SMMUv3's mapping (at 0x48 + 0x44) goes to the ITS at 0x30; send it back to the root
    // complex at 0xa0 instead, which maps back to the SMMU.
    looped[0x48 + 0x44 + 12] = 0xa0;
    let iort = Iort::parse(&looped).unwrap();
    assert_eq!(iort.map_requester_id(0, 1), Err(MapError::Loop { node: 0xa0 }));
}

/// Builds a table with a correct checksum from a signature and body.
fn table(signature: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(signature);
    t.extend_from_slice(&((36 + body.len()) as u32).to_le_bytes());
    t.push(revision);
    t.push(0);
    t.extend_from_slice(b"FWTEST");
    t.extend_from_slice(b"UNITTEST");
    t.extend_from_slice(&1u32.to_le_bytes());
    t.extend_from_slice(b"TEST");
    t.extend_from_slice(&1u32.to_le_bytes());
    t.extend_from_slice(body);
    let sum = t.iter().fold(0u8, |s, &b| s.wrapping_add(b));
    t[9] = 0u8.wrapping_sub(sum);
    t
}

#[test]
fn mcfg_segments_and_ecam_addresses() {
    let mut body = vec![0u8; 8];
    for (base, segment, start, end) in [(0xb000_0000u64, 0u16, 0u8, 0xffu8), (0x40_0000_0000, 1, 0x10, 0x1f)] {
        body.extend_from_slice(&base.to_le_bytes());
        body.extend_from_slice(&segment.to_le_bytes());
        body.extend_from_slice(&[start, end, 0, 0, 0, 0]);
    }
    let mcfg = Mcfg::parse(&table(b"MCFG", 1, &body)).unwrap();
    assert!(mcfg.header.checksum_valid);
    assert_eq!(mcfg.segments.len(), 2);
    let seg1 = mcfg.segment_for(1, 0x12).unwrap();
    assert_eq!(seg1.offset, 60);
    assert_eq!(seg1.config_address(0x12, 3, 1), Some(0x40_0000_0000 + (0x12 << 20) + (3 << 15) + (1 << 12)));
    assert_eq!(seg1.config_address(0x20, 0, 0), None);
    assert!(mcfg.segment_for(1, 0x0f).is_none());

    let mut partial = table(b"MCFG", 1, &body);
    partial.truncate(partial.len() - 4);
    partial[4] -= 4;
    assert!(matches!(Mcfg::parse(&partial).unwrap_err().problem, Problem::InvalidValue { .. }));
}

#[test]
fn rsdp_revisions_and_xsdt_walk() {
    // Physical memory: RSDP (revision 2), XSDT at 0x1000 listing an MCFG-less pair: the DMAR
    // fixture at 0x2000 and the IORT fixture at 0x3000.
    let xsdt = table(b"XSDT", 1, &[0x2000u64.to_le_bytes(), 0x3000u64.to_le_bytes()].concat());
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
