//! IORT, the Arm IO Remapping Table (Arm DEN0049, issues C through E.f; table revisions 0..=6).
//!
//! The IORT is a graph. Its nodes are I/O sources (PCI root complexes, named components such as
//! platform devices), IOMMUs (SMMUv1/v2, SMMUv3), interrupt controllers (GIC ITS groups) and a
//! few descriptive nodes (PMCG counters, RMR reserved memory). Edges are *ID mappings*: a node
//! maps a range of input IDs (e.g. PCI requester IDs) onto a range of output IDs (e.g. SMMU
//! stream IDs) at another node, named by its byte offset from the start of the table.
//!
//! [`Iort::parse`] decodes every node into owned values; [`map`] follows mappings from a source
//! to the IOMMU and interrupt controller it reaches. The parse validates the graph, because a
//! broken edge would silently lose a device later: every output reference must name the start
//! of a node of a kind that receives IDs (an SMMU or ITS group; for an SMMU's or PMCG's own
//! mappings, an ITS group), a PMCG's node reference must name the node it counts, and the
//! mappings must not form a cycle. Such tables are rejected
//! with an error naming the mapping's node. Wrong contents that leave the graph intact (an
//! SMMU at address zero, an RMR range off its 64 KiB granule) become [`Warning`]s.
//!
//! Fields added by later node revisions (SMMUv3 proximity domain and device-ID mapping index,
//! root-complex memory address size limit, PMCG page 1 base) sit at the end of a node's fixed
//! part. They are decoded when that fixed part, which ends where the node's ID mapping array
//! starts, is long enough to hold them, and are `None` otherwise; this reads old and new nodes
//! alike without trusting the revision byte alone. The root complex PASID capabilities field
//! replaced reserved bytes, so it is decoded only from node revision 4 (issue E.d) on.

mod checks;
pub mod map;

use alloc::string::String;
use alloc::vec::Vec;

use crate::error::{ParseError, Problem};
use crate::layout::{array_offset, Field, LeValue, View};
use crate::sdt::{SdtHeader, Signature};
use crate::warning::{self, Warning};

/// Field layouts of the IORT and its nodes. Offsets inside a node are relative to the node.
pub mod layout {
    use crate::layout::Field;

    /// IORT header fields after the SDT header (DEN0049 "IORT" table header).
    pub const NODE_COUNT: Field<u32> = Field::new(36, "Number of IORT Nodes");
    pub const NODE_OFFSET: Field<u32> = Field::new(40, "Offset to Array of IORT Nodes");
    pub const RESERVED: Field<u32> = Field::new(44, "Reserved");
    pub const HEADER_SIZE: usize = 48;
    const _: () = assert!(RESERVED.end() == HEADER_SIZE);

    /// Fields every node starts with (DEN0049 "IORT node" common header).
    pub mod node {
        use crate::layout::Field;
        pub const TYPE: Field<u8> = Field::new(0, "Type");
        pub const LENGTH: Field<u16> = Field::new(1, "Length");
        pub const REVISION: Field<u8> = Field::new(3, "Revision");
        /// Reserved before issue E; a unique node identifier since.
        pub const IDENTIFIER: Field<u32> = Field::new(4, "Identifier");
        pub const MAPPING_COUNT: Field<u32> = Field::new(8, "Number of ID mappings");
        pub const MAPPING_OFFSET: Field<u32> = Field::new(12, "Reference to ID Array");
        pub const SIZE: usize = 16;
        const _: () = assert!(MAPPING_OFFSET.end() == SIZE);
    }

    /// One ID mapping (DEN0049 "ID mappings" table).
    pub mod id_mapping {
        use crate::layout::Field;
        pub const INPUT_BASE: Field<u32> = Field::new(0, "Input base");
        /// The number of IDs in the range *minus one*.
        pub const ID_COUNT: Field<u32> = Field::new(4, "Number of IDs");
        pub const OUTPUT_BASE: Field<u32> = Field::new(8, "Output base");
        pub const OUTPUT_REFERENCE: Field<u32> = Field::new(12, "Output reference");
        pub const FLAGS: Field<u32> = Field::new(16, "Flags");
        pub const SIZE: usize = 20;
        const _: () = assert!(FLAGS.end() == SIZE);
    }

    /// Memory access properties embedded in named-component and root-complex nodes
    /// (DEN0049 "Memory access properties"); offsets relative to the properties.
    pub mod memory_access {
        use crate::layout::Field;
        pub const CACHE_COHERENCY: Field<u32> = Field::new(0, "Cache Coherent Attribute");
        pub const HINTS: Field<u8> = Field::new(4, "Allocation Hints");
        pub const RESERVED: Field<u16> = Field::new(5, "Reserved");
        pub const FLAGS: Field<u8> = Field::new(7, "Memory Access Flags");
        pub const SIZE: usize = 8;
        const _: () = assert!(FLAGS.end() == SIZE);
    }

    /// ITS group node, type 0.
    pub mod its_group {
        use crate::layout::Field;
        pub const ITS_COUNT: Field<u32> = Field::new(16, "Number of ITSs");
        /// The array of 4-byte GIC ITS identifiers starts here.
        pub const IDENTIFIERS: usize = 20;
        const _: () = assert!(ITS_COUNT.end() == IDENTIFIERS);
    }

    /// Named component node, type 1.
    pub mod named_component {
        use crate::layout::Field;
        pub const NODE_FLAGS: Field<u32> = Field::new(16, "Node Flags");
        pub const MEMORY_ACCESS: usize = 20;
        pub const ADDRESS_SIZE_LIMIT: Field<u8> = Field::new(28, "Device Memory Address Size Limit");
        /// The NUL-terminated device object name starts here.
        pub const OBJECT_NAME: usize = 29;
        const _: () = assert!(MEMORY_ACCESS + super::memory_access::SIZE == ADDRESS_SIZE_LIMIT.offset);
        const _: () = assert!(ADDRESS_SIZE_LIMIT.end() == OBJECT_NAME);
    }

    /// PCI root complex node, type 2.
    pub mod root_complex {
        use crate::layout::Field;
        pub const MEMORY_ACCESS: usize = 16;
        pub const ATS_ATTRIBUTE: Field<u32> = Field::new(24, "ATS Attribute");
        pub const PCI_SEGMENT: Field<u32> = Field::new(28, "PCI Segment number");
        /// Fixed part of a revision-0 node.
        pub const MINIMUM: usize = 32;
        pub const MEMORY_ADDRESS_SIZE_LIMIT: Field<u8> = Field::new(32, "Memory address size limit");
        pub const PASID_CAPABILITIES: Field<u16> = Field::new(33, "PASID capabilities");
        pub const RESERVED: Field<u8> = Field::new(35, "Reserved");
        pub const FIXED: usize = 36;
        const _: () = assert!(MEMORY_ACCESS + super::memory_access::SIZE == ATS_ATTRIBUTE.offset);
        const _: () = assert!(PCI_SEGMENT.end() == MINIMUM);
        const _: () = assert!(RESERVED.end() == FIXED);
    }

    /// SMMUv1 or SMMUv2 node, type 3.
    pub mod smmu_v1v2 {
        use crate::layout::Field;
        pub const BASE_ADDRESS: Field<u64> = Field::new(16, "Base Address");
        pub const SPAN: Field<u64> = Field::new(24, "Span");
        pub const MODEL: Field<u32> = Field::new(32, "Model");
        pub const FLAGS: Field<u32> = Field::new(36, "SMMU Flags");
        pub const GLOBAL_INTERRUPT_OFFSET: Field<u32> = Field::new(40, "Reference to Global Interrupt Array");
        pub const CONTEXT_INTERRUPT_COUNT: Field<u32> = Field::new(44, "Number of context interrupts");
        pub const CONTEXT_INTERRUPT_OFFSET: Field<u32> = Field::new(48, "Reference to Context Interrupt Array");
        pub const PMU_INTERRUPT_COUNT: Field<u32> = Field::new(52, "Number of PMU Interrupts");
        pub const PMU_INTERRUPT_OFFSET: Field<u32> = Field::new(56, "Reference to PMU Interrupt Array");
        pub const FIXED: usize = 60;
        const _: () = assert!(PMU_INTERRUPT_OFFSET.end() == FIXED);

        /// The global interrupt array (relative to its own start).
        pub const NSG_IRPT: Field<u32> = Field::new(0, "SMMU_NSgIrpt");
        pub const NSG_IRPT_FLAGS: Field<u32> = Field::new(4, "SMMU_NSgIrpt interrupt flags");
        pub const NSG_CFG_IRPT: Field<u32> = Field::new(8, "SMMU_NSgCfgIrpt");
        pub const NSG_CFG_IRPT_FLAGS: Field<u32> = Field::new(12, "SMMU_NSgCfgIrpt interrupt flags");
        pub const GLOBAL_INTERRUPTS_SIZE: usize = 16;
        const _: () = assert!(NSG_CFG_IRPT_FLAGS.end() == GLOBAL_INTERRUPTS_SIZE);

        /// A context or PMU interrupt entry (relative to the entry).
        pub const INTERRUPT_GSIV: Field<u32> = Field::new(0, "GSIV");
        pub const INTERRUPT_FLAGS: Field<u32> = Field::new(4, "Interrupt Flags");
        pub const INTERRUPT_SIZE: usize = 8;
        const _: () = assert!(INTERRUPT_FLAGS.end() == INTERRUPT_SIZE);
    }

    /// SMMUv3 node, type 4.
    pub mod smmu_v3 {
        use crate::layout::Field;
        pub const BASE_ADDRESS: Field<u64> = Field::new(16, "Base Address");
        pub const FLAGS: Field<u32> = Field::new(24, "SMMUv3 flags");
        pub const RESERVED: Field<u32> = Field::new(28, "Reserved");
        pub const VATOS_ADDRESS: Field<u64> = Field::new(32, "VATOS address");
        pub const MODEL: Field<u32> = Field::new(40, "Model");
        pub const EVENT_GSIV: Field<u32> = Field::new(44, "Event");
        pub const PRI_GSIV: Field<u32> = Field::new(48, "PRI");
        pub const GERR_GSIV: Field<u32> = Field::new(52, "GERR");
        pub const SYNC_GSIV: Field<u32> = Field::new(56, "Sync");
        /// Fixed part of a revision-0 node.
        pub const MINIMUM: usize = 60;
        pub const PROXIMITY_DOMAIN: Field<u32> = Field::new(60, "Proximity domain");
        pub const DEVICE_ID_MAPPING_INDEX: Field<u32> = Field::new(64, "DeviceID mapping index");
        pub const FIXED: usize = 68;
        const _: () = assert!(SYNC_GSIV.end() == MINIMUM);
        const _: () = assert!(DEVICE_ID_MAPPING_INDEX.end() == FIXED);
    }

    /// PMCG (SMMUv3 performance monitor counter group) node, type 5.
    pub mod pmcg {
        use crate::layout::Field;
        pub const PAGE0_BASE: Field<u64> = Field::new(16, "Page 0 Base Address");
        pub const OVERFLOW_GSIV: Field<u32> = Field::new(24, "Overflow interrupt GSIV");
        pub const NODE_REFERENCE: Field<u32> = Field::new(28, "Node reference");
        /// Fixed part of a revision-0 node.
        pub const MINIMUM: usize = 32;
        pub const PAGE1_BASE: Field<u64> = Field::new(32, "Page 1 Base Address");
        pub const FIXED: usize = 40;
        const _: () = assert!(NODE_REFERENCE.end() == MINIMUM);
        const _: () = assert!(PAGE1_BASE.end() == FIXED);
    }

    /// Reserved Memory Range node, type 6.
    pub mod rmr {
        use crate::layout::Field;
        pub const FLAGS: Field<u32> = Field::new(16, "Flags");
        pub const DESCRIPTOR_COUNT: Field<u32> = Field::new(20, "Number of Memory Range Descriptors");
        pub const DESCRIPTOR_OFFSET: Field<u32> = Field::new(24, "Reference to Memory Range Descriptors");
        pub const FIXED: usize = 28;
        const _: () = assert!(DESCRIPTOR_OFFSET.end() == FIXED);

        /// Memory range descriptor (relative to the descriptor).
        pub const RANGE_BASE: Field<u64> = Field::new(0, "Physical Range Offset");
        pub const RANGE_LENGTH: Field<u64> = Field::new(8, "Physical Range Length");
        pub const RANGE_RESERVED: Field<u32> = Field::new(16, "Reserved");
        pub const RANGE_SIZE: usize = 20;
        const _: () = assert!(RANGE_RESERVED.end() == RANGE_SIZE);
    }
}

/// Node type codes (DEN0049 "IORT node types").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeType {
    ItsGroup,
    NamedComponent,
    RootComplex,
    SmmuV1V2,
    SmmuV3,
    Pmcg,
    Rmr,
    /// A type this crate does not decode (e.g. newer GICv5 nodes).
    Other(u8),
}

impl NodeType {
    pub fn from_raw(raw: u8) -> NodeType {
        match raw {
            0 => NodeType::ItsGroup,
            1 => NodeType::NamedComponent,
            2 => NodeType::RootComplex,
            3 => NodeType::SmmuV1V2,
            4 => NodeType::SmmuV3,
            5 => NodeType::Pmcg,
            6 => NodeType::Rmr,
            other => NodeType::Other(other),
        }
    }

    pub fn raw(self) -> u8 {
        match self {
            NodeType::ItsGroup => 0,
            NodeType::NamedComponent => 1,
            NodeType::RootComplex => 2,
            NodeType::SmmuV1V2 => 3,
            NodeType::SmmuV3 => 4,
            NodeType::Pmcg => 5,
            NodeType::Rmr => 6,
            NodeType::Other(raw) => raw,
        }
    }

    /// Short human-readable name.
    pub fn name(self) -> &'static str {
        match self {
            NodeType::ItsGroup => "ITS group",
            NodeType::NamedComponent => "named component",
            NodeType::RootComplex => "root complex",
            NodeType::SmmuV1V2 => "SMMUv1/v2",
            NodeType::SmmuV3 => "SMMUv3",
            NodeType::Pmcg => "PMCG",
            NodeType::Rmr => "RMR",
            NodeType::Other(_) => "unknown",
        }
    }
}

/// One ID mapping: IDs `input_base..=input_base + id_count_minus_one` become
/// `output_base + (id - input_base)` at the node at `output_reference`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdMapping {
    /// Table offset of the mapping.
    pub offset: usize,
    pub input_base: u32,
    /// The spec's "Number of IDs" field, which holds the number of IDs in the range minus one.
    pub id_count_minus_one: u32,
    pub output_base: u32,
    /// Table offset of the node the IDs go to.
    pub output_reference: u32,
    pub flags: u32,
}

impl IdMapping {
    /// Flags bit 0 Single mapping: the mapping carries the one ID of the node itself (e.g. an
    /// SMMU's own MSIs); the input range is ignored.
    pub fn single_mapping(&self) -> bool {
        self.flags & 1 != 0
    }

    /// Number of IDs in the input range.
    pub fn id_count(&self) -> u64 {
        u64::from(self.id_count_minus_one) + 1
    }

    /// Whether `id` lies in the (inclusive) input range. Always false for single mappings.
    pub fn contains(&self, id: u32) -> bool {
        !self.single_mapping()
            && id >= self.input_base
            && u64::from(id) <= u64::from(self.input_base) + u64::from(self.id_count_minus_one)
    }

    /// The output ID for `id`, if the range contains it. Output IDs past 32 bits are invalid and
    /// yield `None`.
    pub fn translate(&self, id: u32) -> Option<u32> {
        if !self.contains(id) {
            return None;
        }
        self.output_base.checked_add(id - self.input_base)
    }
}

/// Memory access properties of a named component or root complex.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryAccess {
    /// 1 when the device is fully cache coherent (CCA), 0 otherwise.
    pub cache_coherency: u32,
    /// Allocation hints: bit 0 transient, 1 write-allocate, 2 read-allocate, 3 override.
    pub hints: u8,
    /// Memory access flags: bit 0 CPM (coherent path to memory), bit 1 DACS (device attributes
    /// are cacheable and inner shareable), bit 2 ensured coherency of accesses.
    pub flags: u8,
}

/// ITS group node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItsGroup {
    /// GIC ITS identifiers (matching the MADT GIC ITS structures).
    pub its_ids: Vec<u32>,
}

/// Named component node: a platform device described in the ACPI namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedComponent {
    pub node_flags: u32,
    pub memory_access: MemoryAccess,
    pub address_size_limit: u8,
    /// Full path of the device object, e.g. `\_SB.ETH0`.
    pub device_name: String,
}

/// PCI root complex node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootComplex {
    pub memory_access: MemoryAccess,
    /// Bit 0 ATS supported, bit 1 PRI supported, bit 2 PASID forwarding supported.
    pub ats_attribute: u32,
    pub pci_segment: u32,
    /// Decoded when the node's fixed part holds it (node revision 1 and later).
    pub memory_address_size_limit: Option<u8>,
    /// Decoded for node revision 4 (issue E.d) and later; bits 4:0 give the PASID width.
    pub pasid_capabilities: Option<u16>,
}

/// An SMMUv1/v2 interrupt: a GSIV and its flags (bit 0: edge triggered).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmmuInterrupt {
    pub gsiv: u32,
    pub flags: u32,
}

/// SMMUv1 or SMMUv2 node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmmuV1V2 {
    pub base_address: u64,
    pub span: u64,
    /// 0 SMMUv1, 1 SMMUv2, 2 MMU-400, 3 MMU-500, 4 MMU-401, 5 Cavium ThunderX SMMUv2.
    pub model: u32,
    /// Bit 0 DVM supported, bit 1 coherent page table walk.
    pub flags: u32,
    /// Offsets from the node's start of the global, context and PMU interrupt arrays.
    pub global_interrupt_offset: u32,
    pub context_interrupt_offset: u32,
    pub pmu_interrupt_offset: u32,
    pub nsg_irpt: SmmuInterrupt,
    pub nsg_cfg_irpt: SmmuInterrupt,
    pub context_interrupts: Vec<SmmuInterrupt>,
    pub pmu_interrupts: Vec<SmmuInterrupt>,
}

/// SMMUv3 node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmmuV3 {
    pub base_address: u64,
    /// Bit 0 COHACC override, bits 2:1 HTTU override, bit 3 proximity domain valid,
    /// bit 4 DeviceID mapping index valid.
    pub flags: u32,
    pub vatos_address: u64,
    /// 0 generic, 1 HiSilicon Hi161x, 2 Cavium CN99xx.
    pub model: u32,
    pub event_gsiv: u32,
    pub pri_gsiv: u32,
    pub gerr_gsiv: u32,
    pub sync_gsiv: u32,
    pub proximity_domain: Option<u32>,
    /// Index of the ID mapping that carries the SMMU's own device ID (for its MSIs).
    pub device_id_mapping_index: Option<u32>,
}

impl SmmuV3 {
    pub fn coherent_access_override(&self) -> bool {
        self.flags & 1 != 0
    }
    pub fn httu_override(&self) -> u32 {
        (self.flags >> 1) & 3
    }
    pub fn proximity_domain_valid(&self) -> bool {
        self.flags & (1 << 3) != 0
    }
    pub fn device_id_mapping_index_valid(&self) -> bool {
        self.flags & (1 << 4) != 0
    }
}

/// PMCG node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pmcg {
    pub page0_base: u64,
    pub overflow_gsiv: u32,
    /// Table offset of the SMMU or named component whose traffic this PMCG counts.
    pub node_reference: u32,
    pub page1_base: Option<u64>,
}

/// One reserved memory range of an RMR node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRange {
    pub offset: usize,
    pub base: u64,
    pub length: u64,
}

/// Reserved Memory Range node: memory the listed stream IDs use before the OS takes over and
/// that must stay identity-mapped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rmr {
    /// Bit 0 remapping permitted, bit 1 access privileged, bits 9:2 access attributes.
    pub flags: u32,
    /// Offset of the descriptor array from the node's start.
    pub descriptor_offset: u32,
    pub ranges: Vec<MemoryRange>,
}

impl Rmr {
    pub fn remapping_permitted(&self) -> bool {
        self.flags & 1 != 0
    }
    pub fn access_privileged(&self) -> bool {
        self.flags & 2 != 0
    }
    /// Memory attributes of the range: 0..=3 Device nGnRnE/nGnRE/nGRE/GRE, 4 Normal
    /// non-cacheable, 5 Normal write-back inner shareable.
    pub fn access_attributes(&self) -> u8 {
        ((self.flags >> 2) & 0xff) as u8
    }
}

/// Type-specific contents of a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeBody {
    ItsGroup(ItsGroup),
    NamedComponent(NamedComponent),
    RootComplex(RootComplex),
    SmmuV1V2(SmmuV1V2),
    SmmuV3(SmmuV3),
    Pmcg(Pmcg),
    Rmr(Rmr),
    /// A node type not decoded here; its common header and ID mappings are still parsed.
    Unknown,
}

/// One IORT node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Table offset of the node: what ID mappings' output references name.
    pub offset: u32,
    pub node_type: NodeType,
    pub length: u16,
    pub revision: u8,
    pub identifier: u32,
    /// The "Reference to ID Array" field: offset of the ID mappings from the node's start.
    pub mapping_offset: u32,
    pub id_mappings: Vec<IdMapping>,
    pub body: NodeBody,
}

/// A parsed IORT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Iort {
    pub header: SdtHeader,
    /// Table offset of the first node.
    pub node_array_offset: u32,
    pub nodes: Vec<Node>,
    /// Firmware bugs found in nodes that still decode, in table order.
    pub warnings: Vec<Warning>,
}

impl Iort {
    /// Parses a whole IORT (header included).
    pub fn parse(bytes: &[u8]) -> Result<Iort, ParseError> {
        let (header, table) = SdtHeader::parse_expecting(bytes, Signature::IORT)?;
        let view = View::table(table, Signature::IORT, "IORT header");
        let node_count = view.get(layout::NODE_COUNT)?;
        let node_array_offset = view.get(layout::NODE_OFFSET)?;
        if (node_array_offset as usize) < layout::HEADER_SIZE {
            return Err(view.error(
                layout::NODE_OFFSET.name,
                layout::NODE_OFFSET.offset,
                Problem::InvalidValue { value: u64::from(node_array_offset), expected: "an offset past the 48-byte header" },
            ));
        }
        // Each node takes at least its 16-byte header, which bounds a lying count before any
        // allocation sized by it.
        let room = table.len().saturating_sub(node_array_offset as usize) / layout::node::SIZE;
        if node_count as usize > room {
            return Err(view.error(
                layout::NODE_COUNT.name,
                layout::NODE_COUNT.offset,
                Problem::InvalidValue { value: u64::from(node_count), expected: "no more nodes than fit in the table" },
            ));
        }
        let mut nodes = Vec::with_capacity(node_count as usize);
        let mut at = node_array_offset as usize;
        for _ in 0..node_count {
            let node = parse_node(&view, at)?;
            at += usize::from(node.length);
            nodes.push(node);
        }
        header.require_checksum(table)?;
        checks::references(&nodes, table.len())?;
        checks::cycles(&nodes)?;
        let warnings = checks::warnings(&nodes);
        Ok(Iort { header, node_array_offset, nodes, warnings })
    }

    /// Whether a warning makes consumers skip the node, ID mapping or memory range at table
    /// offset `offset`.
    pub fn ignored(&self, offset: usize) -> bool {
        warning::ignored(&self.warnings, offset)
    }

    /// The node starting at table offset `offset` (what output references name).
    pub fn node_at(&self, offset: u32) -> Option<&Node> {
        self.nodes.iter().find(|n| n.offset == offset)
    }

    /// Index in [`Iort::nodes`] of the node at `offset`.
    pub fn node_index(&self, offset: u32) -> Option<usize> {
        self.nodes.iter().position(|n| n.offset == offset)
    }

    /// The root complex node of PCI segment `segment`.
    pub fn root_complex(&self, segment: u32) -> Option<&Node> {
        self.nodes
            .iter()
            .find(|n| matches!(&n.body, NodeBody::RootComplex(rc) if rc.pci_segment == segment))
    }

    /// The named component whose device object is `name` (e.g. `\_SB.ETH0`).
    pub fn named_component(&self, name: &str) -> Option<&Node> {
        self.nodes
            .iter()
            .find(|n| matches!(&n.body, NodeBody::NamedComponent(nc) if nc.device_name == name))
    }
}

fn node_structure_name(raw_type: u8) -> &'static str {
    match NodeType::from_raw(raw_type) {
        NodeType::ItsGroup => "ITS group node",
        NodeType::NamedComponent => "named component node",
        NodeType::RootComplex => "root complex node",
        NodeType::SmmuV1V2 => "SMMUv1/v2 node",
        NodeType::SmmuV3 => "SMMUv3 node",
        NodeType::Pmcg => "PMCG node",
        NodeType::Rmr => "RMR node",
        NodeType::Other(_) => "unknown node",
    }
}

/// Parses the node at table offset `at`.
fn parse_node(table: &View<'_>, at: usize) -> Result<Node, ParseError> {
    use layout::node as h;
    let raw_type = table.read_at::<u8>(at, h::TYPE.name).unwrap_or(u8::MAX);
    let name = node_structure_name(raw_type);
    let head = table.sub(at, h::SIZE, name, h::TYPE.name)?;
    let length = head.get(h::LENGTH)?;
    head.require_min_len(h::LENGTH.offset, h::LENGTH.name, usize::from(length), h::SIZE)?;
    let node = table.sub_by_length(at, usize::from(length), name, h::LENGTH)?;
    let node_type = NodeType::from_raw(node.get(h::TYPE)?);
    let mapping_count = node.get(h::MAPPING_COUNT)?;
    let mapping_offset = node.get(h::MAPPING_OFFSET)?;

    // The ID array must lie inside the node, after the common header.
    let mut id_mappings = Vec::new();
    let mut fixed_end = node.len();
    if mapping_count > 0 {
        let start = mapping_offset as usize;
        if start < h::SIZE {
            return Err(node.error(
                h::MAPPING_OFFSET.name,
                h::MAPPING_OFFSET.offset,
                Problem::InvalidValue { value: u64::from(mapping_offset), expected: "an offset past the node header" },
            ));
        }
        let bytes = (mapping_count as usize)
            .checked_mul(layout::id_mapping::SIZE)
            .ok_or_else(|| node.error(h::MAPPING_COUNT.name, h::MAPPING_COUNT.offset, Problem::Overflow))?;
        node.range(start, bytes, h::MAPPING_COUNT.name)?;
        fixed_end = fixed_end.min(start);
        for index in 0..mapping_count as usize {
            let rel = array_offset(&node, h::MAPPING_OFFSET.name, start, index, layout::id_mapping::SIZE)?;
            id_mappings.push(parse_id_mapping(&node.sub(rel, layout::id_mapping::SIZE, "ID mapping", h::MAPPING_OFFSET.name)?)?);
        }
    }
    let fixed = FixedPart { node, end: fixed_end };
    let body = match node_type {
        NodeType::ItsGroup => NodeBody::ItsGroup(parse_its_group(&fixed)?),
        NodeType::NamedComponent => NodeBody::NamedComponent(parse_named_component(&fixed)?),
        NodeType::RootComplex => NodeBody::RootComplex(parse_root_complex(&fixed, node.get(h::REVISION)?)?),
        NodeType::SmmuV1V2 => NodeBody::SmmuV1V2(parse_smmu_v1v2(&node)?),
        NodeType::SmmuV3 => NodeBody::SmmuV3(parse_smmu_v3(&fixed)?),
        NodeType::Pmcg => NodeBody::Pmcg(parse_pmcg(&fixed)?),
        NodeType::Rmr => NodeBody::Rmr(parse_rmr(&node)?),
        NodeType::Other(_) => NodeBody::Unknown,
    };
    Ok(Node {
        offset: node.table_offset() as u32,
        node_type,
        length,
        revision: node.get(h::REVISION)?,
        identifier: node.get(h::IDENTIFIER)?,
        mapping_offset,
        id_mappings,
        body,
    })
}

fn parse_id_mapping(m: &View<'_>) -> Result<IdMapping, ParseError> {
    use layout::id_mapping as l;
    Ok(IdMapping {
        offset: m.table_offset(),
        input_base: m.get(l::INPUT_BASE)?,
        id_count_minus_one: m.get(l::ID_COUNT)?,
        output_base: m.get(l::OUTPUT_BASE)?,
        output_reference: m.get(l::OUTPUT_REFERENCE)?,
        flags: m.get(l::FLAGS)?,
    })
}

/// A node's fixed part: the bytes before its ID mapping array.
struct FixedPart<'a> {
    node: View<'a>,
    end: usize,
}

impl FixedPart<'_> {
    /// Checks that the fixed part holds at least `minimum` bytes.
    fn require(&self, minimum: usize) -> Result<(), ParseError> {
        use layout::node as h;
        if self.end >= minimum {
            return Ok(());
        }
        Err(if self.end < self.node.len() {
            // The ID array was placed on top of the type-specific fields.
            self.node.error(
                h::MAPPING_OFFSET.name,
                h::MAPPING_OFFSET.offset,
                Problem::InvalidValue { value: self.end as u64, expected: "an ID array past the node's fixed fields" },
            )
        } else {
            self.node.error(
                h::LENGTH.name,
                h::LENGTH.offset,
                Problem::LengthTooSmall { length: self.end as u64, minimum: minimum as u64 },
            )
        })
    }

    /// Reads an optional trailing field: present only if the fixed part reaches past it.
    fn optional<T: LeValue>(&self, field: Field<T>) -> Result<Option<T>, ParseError> {
        if field.end() <= self.end {
            self.node.get(field).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// An array of `count` entries the node places at `start` must not overlap the node's fixed
/// fields (which would make one byte mean two things).
fn require_past_fixed(node: &View<'_>, field: Field<u32>, start: usize, count: usize, fixed: usize) -> Result<(), ParseError> {
    if count == 0 || start >= fixed {
        return Ok(());
    }
    Err(node.error(
        field.name,
        field.offset,
        Problem::InvalidValue { value: start as u64, expected: "an array offset past the node's fixed fields" },
    ))
}

fn parse_memory_access(node: &View<'_>, at: usize) -> Result<MemoryAccess, ParseError> {
    use layout::memory_access as l;
    let props = node.sub(at, l::SIZE, "memory access properties", l::CACHE_COHERENCY.name)?;
    Ok(MemoryAccess { cache_coherency: props.get(l::CACHE_COHERENCY)?, hints: props.get(l::HINTS)?, flags: props.get(l::FLAGS)? })
}

fn parse_its_group(fixed: &FixedPart<'_>) -> Result<ItsGroup, ParseError> {
    use layout::its_group as l;
    fixed.require(l::IDENTIFIERS)?;
    let node = &fixed.node;
    let count = node.get(l::ITS_COUNT)?;
    let bytes = (count as usize)
        .checked_mul(4)
        .ok_or_else(|| node.error(l::ITS_COUNT.name, l::ITS_COUNT.offset, Problem::Overflow))?;
    node.range(l::IDENTIFIERS, bytes, l::ITS_COUNT.name)?;
    let its_ids = (0..count as usize)
        .map(|i| node.read_at::<u32>(l::IDENTIFIERS + 4 * i, "GIC ITS Identifier"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ItsGroup { its_ids })
}

fn parse_named_component(fixed: &FixedPart<'_>) -> Result<NamedComponent, ParseError> {
    use layout::named_component as l;
    fixed.require(l::OBJECT_NAME + 1)?;
    let node = &fixed.node;
    // The name must end before the ID array: search only the fixed part.
    let name_area = node.sub(0, fixed.end, "named component node", layout::node::LENGTH.name)?;
    Ok(NamedComponent {
        node_flags: node.get(l::NODE_FLAGS)?,
        memory_access: parse_memory_access(node, l::MEMORY_ACCESS)?,
        address_size_limit: node.get(l::ADDRESS_SIZE_LIMIT)?,
        device_name: String::from(name_area.ascii_z(l::OBJECT_NAME, "Device Object Name")?),
    })
}

fn parse_root_complex(fixed: &FixedPart<'_>, revision: u8) -> Result<RootComplex, ParseError> {
    use layout::root_complex as l;
    fixed.require(l::MINIMUM)?;
    let node = &fixed.node;
    Ok(RootComplex {
        memory_access: parse_memory_access(node, l::MEMORY_ACCESS)?,
        ats_attribute: node.get(l::ATS_ATTRIBUTE)?,
        pci_segment: node.get(l::PCI_SEGMENT)?,
        memory_address_size_limit: fixed.optional(l::MEMORY_ADDRESS_SIZE_LIMIT)?,
        pasid_capabilities: if revision >= 4 { fixed.optional(l::PASID_CAPABILITIES)? } else { None },
    })
}

fn parse_smmu_interrupts(node: &View<'_>, count_field: Field<u32>, offset_field: Field<u32>) -> Result<Vec<SmmuInterrupt>, ParseError> {
    use layout::smmu_v1v2 as l;
    let count = node.get(count_field)? as usize;
    if count == 0 {
        return Ok(Vec::new());
    }
    let start = node.get(offset_field)? as usize;
    require_past_fixed(node, offset_field, start, count, l::FIXED)?;
    let bytes = count
        .checked_mul(l::INTERRUPT_SIZE)
        .ok_or_else(|| node.error(count_field.name, count_field.offset, Problem::Overflow))?;
    node.range(start, bytes, count_field.name)?;
    (0..count)
        .map(|i| {
            let entry = node.sub(start + i * l::INTERRUPT_SIZE, l::INTERRUPT_SIZE, "SMMU interrupt", offset_field.name)?;
            Ok(SmmuInterrupt { gsiv: entry.get(l::INTERRUPT_GSIV)?, flags: entry.get(l::INTERRUPT_FLAGS)? })
        })
        .collect()
}

fn parse_smmu_v1v2(node: &View<'_>) -> Result<SmmuV1V2, ParseError> {
    use layout::smmu_v1v2 as l;
    node.require_min_len(layout::node::LENGTH.offset, layout::node::LENGTH.name, node.len(), l::FIXED)?;
    let global_at = node.get(l::GLOBAL_INTERRUPT_OFFSET)? as usize;
    require_past_fixed(node, l::GLOBAL_INTERRUPT_OFFSET, global_at, 1, l::FIXED)?;
    let global = node.sub(global_at, l::GLOBAL_INTERRUPTS_SIZE, "SMMU global interrupt array", l::GLOBAL_INTERRUPT_OFFSET.name)?;
    Ok(SmmuV1V2 {
        base_address: node.get(l::BASE_ADDRESS)?,
        span: node.get(l::SPAN)?,
        model: node.get(l::MODEL)?,
        flags: node.get(l::FLAGS)?,
        global_interrupt_offset: global_at as u32,
        context_interrupt_offset: node.get(l::CONTEXT_INTERRUPT_OFFSET)?,
        pmu_interrupt_offset: node.get(l::PMU_INTERRUPT_OFFSET)?,
        nsg_irpt: SmmuInterrupt { gsiv: global.get(l::NSG_IRPT)?, flags: global.get(l::NSG_IRPT_FLAGS)? },
        nsg_cfg_irpt: SmmuInterrupt { gsiv: global.get(l::NSG_CFG_IRPT)?, flags: global.get(l::NSG_CFG_IRPT_FLAGS)? },
        context_interrupts: parse_smmu_interrupts(node, l::CONTEXT_INTERRUPT_COUNT, l::CONTEXT_INTERRUPT_OFFSET)?,
        pmu_interrupts: parse_smmu_interrupts(node, l::PMU_INTERRUPT_COUNT, l::PMU_INTERRUPT_OFFSET)?,
    })
}

fn parse_smmu_v3(fixed: &FixedPart<'_>) -> Result<SmmuV3, ParseError> {
    use layout::smmu_v3 as l;
    fixed.require(l::MINIMUM)?;
    let node = &fixed.node;
    Ok(SmmuV3 {
        base_address: node.get(l::BASE_ADDRESS)?,
        flags: node.get(l::FLAGS)?,
        vatos_address: node.get(l::VATOS_ADDRESS)?,
        model: node.get(l::MODEL)?,
        event_gsiv: node.get(l::EVENT_GSIV)?,
        pri_gsiv: node.get(l::PRI_GSIV)?,
        gerr_gsiv: node.get(l::GERR_GSIV)?,
        sync_gsiv: node.get(l::SYNC_GSIV)?,
        proximity_domain: fixed.optional(l::PROXIMITY_DOMAIN)?,
        device_id_mapping_index: fixed.optional(l::DEVICE_ID_MAPPING_INDEX)?,
    })
}

fn parse_pmcg(fixed: &FixedPart<'_>) -> Result<Pmcg, ParseError> {
    use layout::pmcg as l;
    fixed.require(l::MINIMUM)?;
    let node = &fixed.node;
    Ok(Pmcg {
        page0_base: node.get(l::PAGE0_BASE)?,
        overflow_gsiv: node.get(l::OVERFLOW_GSIV)?,
        node_reference: node.get(l::NODE_REFERENCE)?,
        page1_base: fixed.optional(l::PAGE1_BASE)?,
    })
}

fn parse_rmr(node: &View<'_>) -> Result<Rmr, ParseError> {
    use layout::rmr as l;
    node.require_min_len(layout::node::LENGTH.offset, layout::node::LENGTH.name, node.len(), l::FIXED)?;
    let count = node.get(l::DESCRIPTOR_COUNT)? as usize;
    let start = node.get(l::DESCRIPTOR_OFFSET)? as usize;
    require_past_fixed(node, l::DESCRIPTOR_OFFSET, start, count, l::FIXED)?;
    let bytes = count
        .checked_mul(l::RANGE_SIZE)
        .ok_or_else(|| node.error(l::DESCRIPTOR_COUNT.name, l::DESCRIPTOR_COUNT.offset, Problem::Overflow))?;
    node.range(start, bytes, l::DESCRIPTOR_COUNT.name)?;
    let ranges = (0..count)
        .map(|i| {
            let d = node.sub(start + i * l::RANGE_SIZE, l::RANGE_SIZE, "RMR memory range descriptor", l::DESCRIPTOR_OFFSET.name)?;
            Ok(MemoryRange { offset: d.table_offset(), base: d.get(l::RANGE_BASE)?, length: d.get(l::RANGE_LENGTH)? })
        })
        .collect::<Result<Vec<_>, ParseError>>()?;
    Ok(Rmr { flags: node.get(l::FLAGS)?, descriptor_offset: start as u32, ranges })
}
