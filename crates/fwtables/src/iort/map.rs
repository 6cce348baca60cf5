//! Following IORT ID mappings from a device to the IOMMU and interrupt controller it reaches.
//!
//! A PCI function's DMA carries its requester ID. The root complex node maps that RID to a
//! stream ID at an SMMU; the SMMU node maps the stream ID to a device ID at an ITS group (for
//! the MSIs the device sends through the SMMU). [`Iort::map_id`] performs those hops and returns
//! each one, so the IOMMU server learns both "which SMMU, which stream ID" and "which ITS, which
//! device ID" from one walk.
//!
//! Rules (DEN0049 "ID mappings", and matching what Linux's IORT code does):
//! * A range mapping matches an ID in `input_base..=input_base + Number of IDs`.
//! * A *single mapping* carries the node's own ID, not a translation of incoming IDs. It matches
//!   at the starting node only when that node is a named component or root complex (a device
//!   with one ID); it is never used to translate an ID arriving from another node.
//! * An SMMUv3's or PMCG's own-ID mapping is used only by [`Iort::map_own_id`], which starts from
//!   the node's own ID (e.g. for the SMMU's event-queue MSIs).
//! * The walk ends at a node with no mapping for the ID (an ITS group has none; an SMMU that
//!   does not forward MSIs has none). At the *starting* node that is an error: the device is
//!   simply not described.
//! * An output reference that is not the offset of a node is a dangling reference; reaching a
//!   node twice is a loop. Both are errors. [`Iort::parse`] already rejects tables with either,
//!   so these matter only for an [`Iort`] changed after parsing; either way a walk visits each
//!   node at most once and so ends within as many hops as the table has nodes.

use alloc::vec::Vec;
use core::fmt;

use super::{IdMapping, Iort, Node, NodeBody, NodeType};

/// One translation step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdHop {
    /// Table offset of the node doing the translation.
    pub node: u32,
    pub node_type: NodeType,
    /// The ID entering the node; `None` when the hop starts from the node's own ID.
    pub input_id: Option<u32>,
    /// Index into the node's ID mappings of the mapping used.
    pub mapping_index: usize,
    pub output_id: u32,
    /// Table offset of the node the output ID goes to.
    pub output_node: u32,
}

/// The result of following mappings: every hop, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdPath {
    pub hops: Vec<IdHop>,
}

impl IdPath {
    /// The node the walk ended at and the ID it arrived with.
    pub fn destination(&self) -> Option<(u32, u32)> {
        self.hops.last().map(|h| (h.output_node, h.output_id))
    }

    /// The first hop that arrives at a node of `node_type`: e.g. `NodeType::SmmuV3` gives the
    /// SMMU translating a root complex's RID and the stream ID it sees.
    pub fn arrival_at(&self, iort: &Iort, node_type: NodeType) -> Option<(u32, u32)> {
        self.hops
            .iter()
            .find(|h| iort.node_at(h.output_node).is_some_and(|n| n.node_type == node_type))
            .map(|h| (h.output_node, h.output_id))
    }
}

/// Why following mappings failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// No node starts at table offset `offset`.
    NoSuchNode { offset: u32 },
    /// No root complex node describes PCI segment `segment`.
    NoRootComplex { segment: u32 },
    /// The starting node has no mapping for `id`.
    NoMapping { node: u32, id: u32 },
    /// The node has no single mapping carrying its own ID (or its SMMUv3 device-ID mapping
    /// index points outside its mappings or at a range mapping).
    NoOwnIdMapping { node: u32 },
    /// Mapping `mapping_index` of `node` references `reference`, which is not a node.
    DanglingReference { node: u32, mapping_index: usize, reference: u32 },
    /// Mappings lead back to `node`, which the walk already passed.
    Loop { node: u32 },
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MapError::NoSuchNode { offset } => write!(f, "no IORT node at table offset {offset:#x}"),
            MapError::NoRootComplex { segment } => write!(f, "no root complex node for PCI segment {segment}"),
            MapError::NoMapping { node, id } => write!(f, "node at {node:#x} has no ID mapping for ID {id:#x}"),
            MapError::NoOwnIdMapping { node } => {
                write!(f, "node at {node:#x} has no single mapping for its own ID")
            }
            MapError::DanglingReference { node, mapping_index, reference } => write!(
                f,
                "ID mapping {mapping_index} of node at {node:#x} references {reference:#x}, which is not a node"
            ),
            MapError::Loop { node } => write!(f, "ID mappings loop back to the node at {node:#x}"),
        }
    }
}

/// Index of the mapping that carries the node's own ID, if the node type has one.
fn own_id_mapping_index(node: &Node) -> Option<usize> {
    let first_single = || node.id_mappings.iter().position(IdMapping::single_mapping);
    match &node.body {
        // The SMMUv3 names its own-ID mapping by index (DEN0049 "DeviceID mapping index");
        // nodes that predate the field, or whose GSIVs are all wired (so no MSIs), fall back to
        // a single mapping if one is present.
        NodeBody::SmmuV3(smmu) => match smmu.device_id_mapping_index {
            Some(index) if (index as usize) < node.id_mappings.len() && node.id_mappings[index as usize].single_mapping() => {
                Some(index as usize)
            }
            _ => first_single(),
        },
        _ => first_single(),
    }
}

impl Iort {
    /// Follows `input_id` from the node at table offset `start` (a root complex with a
    /// requester ID, a named component with its device ID, ...) to where the mappings end.
    pub fn map_id(&self, start: u32, input_id: u32) -> Result<IdPath, MapError> {
        let node = self.node_at(start).ok_or(MapError::NoSuchNode { offset: start })?;
        let single_allowed = matches!(node.node_type, NodeType::NamedComponent | NodeType::RootComplex);
        let own = own_id_mapping_index(node);
        let found = node.id_mappings.iter().enumerate().find_map(|(index, m)| {
            if Some(index) == own && !single_allowed {
                return None;
            }
            if m.single_mapping() {
                return single_allowed.then_some((index, m.output_base));
            }
            m.translate(input_id).map(|out| (index, out))
        });
        let (mapping_index, output_id) = found.ok_or(MapError::NoMapping { node: start, id: input_id })?;
        let first = IdHop {
            node: start,
            node_type: node.node_type,
            input_id: Some(input_id),
            mapping_index,
            output_id,
            output_node: node.id_mappings[mapping_index].output_reference,
        };
        self.continue_walk(first)
    }

    /// Follows the node's own ID (its single mapping; for an SMMUv3 the one its device-ID
    /// mapping index names) onward, e.g. to the ITS that receives an SMMU's MSIs.
    pub fn map_own_id(&self, start: u32) -> Result<IdPath, MapError> {
        let node = self.node_at(start).ok_or(MapError::NoSuchNode { offset: start })?;
        let mapping_index = own_id_mapping_index(node).ok_or(MapError::NoOwnIdMapping { node: start })?;
        let mapping = &node.id_mappings[mapping_index];
        let first = IdHop {
            node: start,
            node_type: node.node_type,
            input_id: None,
            mapping_index,
            output_id: mapping.output_base,
            output_node: mapping.output_reference,
        };
        self.continue_walk(first)
    }

    /// Convenience: follows requester ID `rid` from the root complex of PCI `segment`.
    pub fn map_requester_id(&self, segment: u32, rid: u16) -> Result<IdPath, MapError> {
        let rc = self.root_complex(segment).ok_or(MapError::NoRootComplex { segment })?;
        self.map_id(rc.offset, u32::from(rid))
    }

    /// The ITS group (table offset) and DeviceID that MSIs of requester `rid` on PCI `segment`
    /// arrive with: its requester ID followed to an ITS group, through the SMMU that translates
    /// it if there is one (the SMMU's mappings turn its StreamID into the DeviceID). `None`
    /// when its mappings reach no ITS group, or one that is ignored.
    pub fn its_device_id(&self, segment: u32, rid: u16) -> Option<(u32, u32)> {
        let path = self.map_requester_id(segment, rid).ok()?;
        path.arrival_at(self, NodeType::ItsGroup).filter(|&(its, _)| !self.ignored(its as usize))
    }

    /// Continues from a first hop through range mappings until none matches.
    fn continue_walk(&self, first: IdHop) -> Result<IdPath, MapError> {
        let mut visited = Vec::with_capacity(4);
        visited.push(first.node);
        let mut hops = Vec::with_capacity(4);
        let mut hop = first;
        loop {
            let next = self.node_at(hop.output_node).ok_or(MapError::DanglingReference {
                node: hop.node,
                mapping_index: hop.mapping_index,
                reference: hop.output_node,
            })?;
            hops.push(hop);
            if visited.contains(&next.offset) {
                return Err(MapError::Loop { node: next.offset });
            }
            visited.push(next.offset);
            let own = own_id_mapping_index(next);
            let id = hop.output_id;
            let found = next
                .id_mappings
                .iter()
                .enumerate()
                .filter(|&(index, _)| Some(index) != own)
                .find_map(|(index, m)| m.translate(id).map(|out| (index, out)));
            let Some((mapping_index, output_id)) = found else {
                return Ok(IdPath { hops });
            };
            hop = IdHop {
                node: next.offset,
                node_type: next.node_type,
                input_id: Some(id),
                mapping_index,
                output_id,
                output_node: next.id_mappings[mapping_index].output_reference,
            };
        }
    }
}
