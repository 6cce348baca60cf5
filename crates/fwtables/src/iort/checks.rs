//! Validation of the IORT as a graph, and its "your BIOS is broken" warnings.
//!
//! References and cycles are errors: a mapping into nothing, into the middle of a node, at a
//! node that cannot receive IDs, or round a loop makes every walk through it meaningless, and
//! accepting the table would let a device silently lose its SMMU. The remaining checks are
//! warnings on entries that are wrong but leave the graph usable.

use alloc::vec;
use alloc::vec::Vec;

use super::layout::{id_mapping, pmcg as pmcg_layout, rmr, smmu_v1v2, smmu_v3};
use super::{IdMapping, Node, NodeBody, NodeType};
use crate::error::{ParseError, Problem};
use crate::sdt::Signature;
use crate::warning::{Warning, WarningKind};

/// RMR ranges are granted in 64 KiB units (DEN0049 "Memory Range Descriptor").
const RMR_GRANULE_MASK: u64 = 0xffff;

fn mapping_error(mapping: &IdMapping, problem: Problem) -> ParseError {
    ParseError {
        table: Signature::IORT,
        structure: "ID mapping",
        field: id_mapping::OUTPUT_REFERENCE.name,
        offset: mapping.offset + id_mapping::OUTPUT_REFERENCE.offset,
        problem,
    }
}

/// Index in `nodes` (sorted by offset: they are parsed back to back) of the node at `offset`.
fn index_of(nodes: &[Node], offset: u32) -> Result<usize, usize> {
    nodes.binary_search_by_key(&offset, |n| n.offset)
}

/// Whether a node of this kind can be the output of an ID mapping. Kinds this crate does not
/// decode (newer revisions' node types) get the benefit of the doubt.
fn receives_ids(kind: NodeType) -> bool {
    matches!(kind, NodeType::ItsGroup | NodeType::SmmuV1V2 | NodeType::SmmuV3 | NodeType::Other(_))
}

/// The node starting at table offset `reference`, which the node at `from` names; otherwise
/// what is wrong with the reference.
fn resolve(nodes: &[Node], table_len: usize, from: u32, reference: u32) -> Result<&Node, Problem> {
    if reference as usize >= table_len {
        return Err(Problem::ReferenceOutsideTable { node: from, reference });
    }
    index_of(nodes, reference).map(|index| &nodes[index]).map_err(|after| {
        let containing = after
            .checked_sub(1)
            .map(|i| &nodes[i])
            .filter(|n| u64::from(reference) < u64::from(n.offset) + u64::from(n.length));
        match containing {
            Some(n) => Problem::ReferenceIntoNode { node: from, reference, target: n.offset },
            None => Problem::ReferenceNotANode { node: from, reference },
        }
    })
}

/// Checks that every ID mapping's output reference is the start of a node that can take its
/// IDs. An SMMU's stream IDs and a PMCG's own ID leave only as MSI device IDs, so their
/// mappings must reach an ITS group. A PMCG's node reference must name the SMMUv3, named
/// component or root complex whose traffic it counts (DEN0049 "PMCG node").
pub(super) fn references(nodes: &[Node], table_len: usize) -> Result<(), ParseError> {
    for node in nodes {
        let from = node.offset;
        for mapping in &node.id_mappings {
            let reference = mapping.output_reference;
            let target = resolve(nodes, table_len, from, reference).map_err(|problem| mapping_error(mapping, problem))?;
            let from_smmu_side = matches!(node.node_type, NodeType::SmmuV1V2 | NodeType::SmmuV3 | NodeType::Pmcg);
            let expected = if !receives_ids(target.node_type) {
                Some("an SMMU or ITS group node")
            } else if from_smmu_side && matches!(target.node_type, NodeType::SmmuV1V2 | NodeType::SmmuV3) {
                Some("an ITS group node")
            } else {
                None
            };
            if let Some(expected) = expected {
                let found = target.node_type.name();
                return Err(mapping_error(mapping, Problem::WrongReferenceKind { node: from, reference, found, expected }));
            }
        }
        if let NodeBody::Pmcg(pmcg) = &node.body {
            let reference = pmcg.node_reference;
            let error = |problem| ParseError {
                table: Signature::IORT,
                structure: "PMCG node",
                field: pmcg_layout::NODE_REFERENCE.name,
                offset: from as usize + pmcg_layout::NODE_REFERENCE.offset,
                problem,
            };
            let target = resolve(nodes, table_len, from, reference).map_err(error)?;
            let counted = matches!(
                target.node_type,
                NodeType::SmmuV3 | NodeType::NamedComponent | NodeType::RootComplex | NodeType::Other(_)
            );
            if !counted {
                let expected = "an SMMUv3, named component or root complex node";
                return Err(error(Problem::WrongReferenceKind { node: from, reference, found: target.node_type.name(), expected }));
            }
        }
    }
    Ok(())
}

/// Finds a cycle among the mapping edges (all references already point at node starts) with an
/// iterative depth-first search, so a table of many nodes cannot exhaust the stack.
pub(super) fn cycles(nodes: &[Node]) -> Result<(), ParseError> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        Unvisited,
        OnPath,
        Done,
    }
    let mut state = vec![State::Unvisited; nodes.len()];
    // The current path: (node index, index of its next mapping to follow).
    let mut path: Vec<(usize, usize)> = Vec::new();
    for root in 0..nodes.len() {
        if state[root] != State::Unvisited {
            continue;
        }
        state[root] = State::OnPath;
        path.push((root, 0));
        while let Some(top) = path.last_mut() {
            let (at, next) = *top;
            let Some(mapping) = nodes[at].id_mappings.get(next) else {
                state[at] = State::Done;
                path.pop();
                continue;
            };
            top.1 += 1;
            let Ok(target) = index_of(nodes, mapping.output_reference) else { continue };
            match state[target] {
                State::Unvisited => {
                    state[target] = State::OnPath;
                    path.push((target, 0));
                }
                State::OnPath => {
                    let start = path.iter().position(|&(i, _)| i == target).unwrap_or(0);
                    let problem = Problem::MappingCycle {
                        node: nodes[at].offset,
                        back_to: nodes[target].offset,
                        length: path.len() - start,
                    };
                    return Err(mapping_error(mapping, problem));
                }
                State::Done => {}
            }
        }
    }
    Ok(())
}

/// Warnings for entries that are wrong but leave the graph intact, in table order.
pub(super) fn warnings(nodes: &[Node]) -> Vec<Warning> {
    let mut found = Vec::new();
    let warn = |structure, entry: usize, field: &'static str, field_offset: usize, kind, entry_ignored| Warning {
        table: Signature::IORT,
        structure,
        entry,
        field,
        offset: entry + field_offset,
        kind,
        entry_ignored,
    };
    let mut smmu_bases: Vec<(u64, u32)> = Vec::new();
    for node in nodes {
        let at = node.offset as usize;
        let base = match &node.body {
            NodeBody::SmmuV3(s) => Some((s.base_address, "SMMUv3 node", smmu_v3::BASE_ADDRESS)),
            NodeBody::SmmuV1V2(s) => Some((s.base_address, "SMMUv1/v2 node", smmu_v1v2::BASE_ADDRESS)),
            _ => None,
        };
        if let Some((address, structure, field)) = base {
            let kind = if address == 0 {
                Some(WarningKind::ZeroAddress)
            } else if let Some(&(_, first)) = smmu_bases.iter().find(|(b, _)| *b == address) {
                Some(WarningKind::DuplicateSmmu { first })
            } else {
                smmu_bases.push((address, node.offset));
                None
            };
            if let Some(kind) = kind {
                found.push(warn(structure, at, field.name, field.offset, kind, true));
            }
        }
        if let NodeBody::Rmr(r) = &node.body {
            for range in &r.ranges {
                let kind = if range.length == 0 {
                    Some((rmr::RANGE_LENGTH, WarningKind::EmptyRange))
                } else if range.base & RMR_GRANULE_MASK != 0 {
                    Some((rmr::RANGE_BASE, WarningKind::RangeNotAligned { base: range.base, length: range.length }))
                } else if range.length & RMR_GRANULE_MASK != 0 {
                    Some((rmr::RANGE_LENGTH, WarningKind::RangeNotAligned { base: range.base, length: range.length }))
                } else {
                    None
                };
                if let Some((field, kind)) = kind {
                    found.push(warn("RMR memory range descriptor", range.offset, field.name, field.offset, kind, true));
                }
            }
        }
        for mapping in node.id_mappings.iter().filter(|m| !m.single_mapping()) {
            if u64::from(mapping.output_base) + u64::from(mapping.id_count_minus_one) > u64::from(u32::MAX) {
                let kind = WarningKind::OutputRangeOverflow { output_base: mapping.output_base, id_count: mapping.id_count() };
                // Kept: IDs whose output fits still translate (`IdMapping::translate`).
                found.push(warn("ID mapping", mapping.offset, id_mapping::ID_COUNT.name, id_mapping::ID_COUNT.offset, kind, false));
            }
        }
    }
    found.sort_by_key(|w| w.entry);
    found
}
