//! Builders for small DMAR and IORT tables with correct checksums, so tests can state exactly
//! which firmware bug a table has: this crate's tests and fwdump's (feature `testing`).

use alloc::vec;
use alloc::vec::Vec;

/// A whole table: SDT header (ACPI §5.2.6) with `body` after it and the checksum set.
pub fn sdt(signature: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(signature);
    t.extend_from_slice(&((36 + body.len()) as u32).to_le_bytes());
    t.push(revision);
    t.push(0);
    t.extend_from_slice(b"FWTEST");
    t.extend_from_slice(b"BUGGYFW ");
    t.extend_from_slice(&1u32.to_le_bytes());
    t.extend_from_slice(b"TEST");
    t.extend_from_slice(&1u32.to_le_bytes());
    t.extend_from_slice(body);
    fix_checksum(&mut t);
    t
}

/// Sets the checksum byte (offset 9) so the bytes sum to zero.
pub fn fix_checksum(table: &mut [u8]) {
    if table.len() > 9 {
        table[9] = 0;
        let sum = table.iter().fold(0u8, |s, &b| s.wrapping_add(b));
        table[9] = 0u8.wrapping_sub(sum);
    }
}

// ---- DMAR (VT-d §8) ----

/// A device scope (§8.3.1): type, start bus and (device, function) path.
pub fn scope(scope_type: u8, start_bus: u8, path: &[(u8, u8)]) -> Vec<u8> {
    let mut s = vec![scope_type, (6 + 2 * path.len()) as u8, 0, 0, 0, start_bus];
    for &(device, function) in path {
        s.extend_from_slice(&[device, function]);
    }
    s
}

fn remapping_structure(structure_type: u16, fixed: &[u8], scopes: &[Vec<u8>]) -> Vec<u8> {
    let length = 4 + fixed.len() + scopes.iter().map(Vec::len).sum::<usize>();
    let mut s = Vec::new();
    s.extend_from_slice(&structure_type.to_le_bytes());
    s.extend_from_slice(&(length as u16).to_le_bytes());
    s.extend_from_slice(fixed);
    for scope in scopes {
        s.extend_from_slice(scope);
    }
    s
}

/// A DRHD (§8.3): flags (bit 0 INCLUDE_PCI_ALL), segment, register base, scopes.
pub fn drhd(flags: u8, segment: u16, register_base: u64, scopes: &[Vec<u8>]) -> Vec<u8> {
    let mut fixed = vec![flags, 0];
    fixed.extend_from_slice(&segment.to_le_bytes());
    fixed.extend_from_slice(&register_base.to_le_bytes());
    remapping_structure(0, &fixed, scopes)
}

/// An RMRR (§8.4): segment, base, inclusive limit, scopes.
pub fn rmrr(segment: u16, base: u64, limit: u64, scopes: &[Vec<u8>]) -> Vec<u8> {
    let mut fixed = vec![0, 0];
    fixed.extend_from_slice(&segment.to_le_bytes());
    fixed.extend_from_slice(&base.to_le_bytes());
    fixed.extend_from_slice(&limit.to_le_bytes());
    remapping_structure(1, &fixed, scopes)
}

/// A revision-1 DMAR (host address width 39 bits, INTR_REMAP) holding `structures`.
pub fn dmar(structures: &[Vec<u8>]) -> Vec<u8> {
    let mut body = vec![38, 1];
    body.extend_from_slice(&[0; 10]);
    for s in structures {
        body.extend_from_slice(s);
    }
    sdt(b"DMAR", 1, &body)
}

/// Table offset of the `index`th structure of a DMAR built from `structures`.
pub fn dmar_offset(structures: &[Vec<u8>], index: usize) -> usize {
    48 + structures[..index].iter().map(Vec::len).sum::<usize>()
}

// ---- IORT (Arm DEN0049) ----

/// Where an ID mapping's output goes.
#[derive(Clone, Copy, Debug)]
pub enum Output {
    /// The start of the node with this index.
    Node(usize),
    /// A raw table offset, for dangling references.
    Offset(u32),
}

#[derive(Clone, Debug)]
pub struct Mapping {
    pub input_base: u32,
    pub count_minus_one: u32,
    pub output_base: u32,
    pub output: Output,
    pub flags: u32,
}

/// A range mapping of `count` IDs.
pub fn range(input_base: u32, count: u32, output_base: u32, output: Output) -> Mapping {
    Mapping { input_base, count_minus_one: count - 1, output_base, output, flags: 0 }
}

#[derive(Clone, Debug)]
pub struct IortNode {
    pub node_type: u8,
    pub revision: u8,
    /// Type-specific fields after the 16-byte common header, before the ID array.
    pub fields: Vec<u8>,
    pub mappings: Vec<Mapping>,
}

impl IortNode {
    pub fn with(mut self, mappings: Vec<Mapping>) -> IortNode {
        self.mappings = mappings;
        self
    }
    fn length(&self) -> usize {
        16 + self.fields.len() + 20 * self.mappings.len()
    }
}

/// An ITS group with the given ITS identifiers.
pub fn its_group(ids: &[u32]) -> IortNode {
    let mut fields = (ids.len() as u32).to_le_bytes().to_vec();
    for id in ids {
        fields.extend_from_slice(&id.to_le_bytes());
    }
    IortNode { node_type: 0, revision: 1, fields, mappings: Vec::new() }
}

/// An SMMUv3 at `base` with wired interrupts (revision 4: proximity domain and device-ID
/// mapping index present, not valid).
pub fn smmu_v3(base: u64) -> IortNode {
    let mut fields = base.to_le_bytes().to_vec();
    fields.extend_from_slice(&[0; 8]); // flags, reserved
    fields.extend_from_slice(&[0; 8]); // VATOS
    fields.extend_from_slice(&[0; 4]); // model
    for gsiv in [0x6au32, 0x6b, 0x6d, 0x6c, 0, 0] {
        fields.extend_from_slice(&gsiv.to_le_bytes()); // event, PRI, GERR, sync, proximity, index
    }
    IortNode { node_type: 4, revision: 4, fields, mappings: Vec::new() }
}

/// A PCI root complex of `segment` (revision 3: memory address size limit 64 bits).
pub fn root_complex(segment: u32) -> IortNode {
    let mut fields = vec![1, 0, 0, 0, 0, 0, 0, 3]; // coherent, CPM and DACS
    fields.extend_from_slice(&0u32.to_le_bytes()); // ATS attribute
    fields.extend_from_slice(&segment.to_le_bytes());
    fields.extend_from_slice(&[64, 0, 0, 0]); // size limit, reserved
    IortNode { node_type: 2, revision: 3, fields, mappings: Vec::new() }
}

/// A PMCG (revision 1, page 1 base present) counting the traffic of the node at table offset
/// `node_reference`.
pub fn pmcg(page0_base: u64, node_reference: u32) -> IortNode {
    let mut fields = page0_base.to_le_bytes().to_vec();
    fields.extend_from_slice(&0x70u32.to_le_bytes()); // overflow GSIV
    fields.extend_from_slice(&node_reference.to_le_bytes());
    fields.extend_from_slice(&(page0_base + 0x1_0000).to_le_bytes());
    IortNode { node_type: 5, revision: 1, fields, mappings: Vec::new() }
}

/// An RMR node (revision 3) with (base, length) ranges, placed right after its fixed fields.
pub fn rmr(ranges: &[(u64, u64)], mappings: Vec<Mapping>) -> IortNode {
    // Flags, descriptor count, descriptor offset (set by `with_ranges`).
    let mut fields = 0u32.to_le_bytes().to_vec();
    fields.extend_from_slice(&(ranges.len() as u32).to_le_bytes());
    fields.extend_from_slice(&0u32.to_le_bytes());
    IortNode { node_type: 6, revision: 3, fields, mappings }.with_ranges(ranges)
}

impl IortNode {
    fn with_ranges(mut self, ranges: &[(u64, u64)]) -> IortNode {
        // The ID array follows `fields`, so descriptors appended to `fields` sit before it.
        let descriptors_at = 16 + self.fields.len();
        self.fields[8..12].copy_from_slice(&(descriptors_at as u32).to_le_bytes());
        for &(base, length) in ranges {
            self.fields.extend_from_slice(&base.to_le_bytes());
            self.fields.extend_from_slice(&length.to_le_bytes());
            self.fields.extend_from_slice(&[0; 4]);
        }
        self
    }
}

/// Table offsets of the nodes an IORT built from `nodes` will have.
pub fn iort_offsets(nodes: &[IortNode]) -> Vec<u32> {
    let mut at = 48;
    nodes
        .iter()
        .map(|n| {
            let here = at;
            at += n.length();
            here as u32
        })
        .collect()
}

/// The bytes of `node` with `identifier`, its `Output::Node` references resolved by `offsets`.
fn iort_node_bytes(n: &IortNode, identifier: u32, offsets: &[u32]) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.push(n.node_type);
    bytes.extend_from_slice(&(n.length() as u16).to_le_bytes());
    bytes.push(n.revision);
    bytes.extend_from_slice(&identifier.to_le_bytes());
    bytes.extend_from_slice(&(n.mappings.len() as u32).to_le_bytes());
    let array = if n.mappings.is_empty() { 0 } else { 16 + n.fields.len() as u32 };
    bytes.extend_from_slice(&array.to_le_bytes());
    bytes.extend_from_slice(&n.fields);
    for m in &n.mappings {
        let reference = match m.output {
            Output::Node(i) => offsets[i],
            Output::Offset(o) => o,
        };
        for word in [m.input_base, m.count_minus_one, m.output_base, reference, m.flags] {
            bytes.extend_from_slice(&word.to_le_bytes());
        }
    }
    bytes
}

/// A revision-5 IORT of `nodes` (identifiers are the node indices).
pub fn iort(nodes: &[IortNode]) -> Vec<u8> {
    let offsets = iort_offsets(nodes);
    let mut body = Vec::new();
    body.extend_from_slice(&(nodes.len() as u32).to_le_bytes());
    body.extend_from_slice(&48u32.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    for (index, n) in nodes.iter().enumerate() {
        body.extend_from_slice(&iort_node_bytes(n, index as u32, &offsets));
    }
    sdt(b"IORT", 5, &body)
}

/// Sets the SDT header's Length (offset 4) to the table's length, then its checksum.
fn fix_length_and_checksum(table: &mut [u8]) {
    let length = table.len() as u32;
    table[4..8].copy_from_slice(&length.to_le_bytes());
    fix_checksum(table);
}

/// Appends a remapping structure (`drhd`, `rmrr`) to the whole DMAR `table` (another
/// firmware's, e.g. QEMU's own), fixing its length and checksum.
pub fn append_dmar_structure(table: &mut Vec<u8>, structure: &[u8]) {
    table.extend_from_slice(structure);
    fix_length_and_checksum(table);
}

/// Appends `node` to the whole IORT `table` (another firmware's, e.g. QEMU's own) with
/// `identifier`, fixing the node count (offset 36), length and checksum. Its mappings must name
/// their targets as `Output::Offset` (table offsets in `table`).
pub fn append_iort_node(table: &mut Vec<u8>, node: &IortNode, identifier: u32) {
    let count = u32::from_le_bytes([table[36], table[37], table[38], table[39]]) + 1;
    table[36..40].copy_from_slice(&count.to_le_bytes());
    let bytes = iort_node_bytes(node, identifier, &[]);
    table.extend_from_slice(&bytes);
    fix_length_and_checksum(table);
}

/// The usual shape: ITS group (node 0), SMMUv3 (node 1) forwarding stream IDs to the ITS,
/// root complex (node 2) sending RIDs through the SMMU.
pub fn iort_nodes_ok() -> Vec<IortNode> {
    vec![
        its_group(&[0]),
        smmu_v3(0x0905_0000).with(vec![range(0, 0x1_0000, 0, Output::Node(0))]),
        root_complex(0).with(vec![range(0, 0x1_0000, 0, Output::Node(1))]),
    ]
}
