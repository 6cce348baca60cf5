//! Turning parsed tables into the JSON tree fwdump prints.
//!
//! Every value read from the table is emitted as a located leaf: its table offset is the
//! structure's offset plus the field's offset from `fwtables`' layout constants, so the iasl
//! comparison can find the same field in iasl's disassembly. The JSON convention (README.md):
//! counts, lengths, offsets, indices, revisions and widths are JSON numbers; addresses,
//! address-range sizes, IDs, flag words and codes are "0x…" strings; single decoded bits are
//! booleans; kind names are lower_snake_case.

use fwtables::dmar::{layout as dl, DeviceScope, Dmar, RemappingStructure, ScopeType};
use fwtables::iort::{layout as il, IdMapping, Iort, MemoryAccess, Node, NodeBody, NodeType, SmmuInterrupt};
use fwtables::layout::{Field, LeValue};
use fwtables::sdt::{header_layout as hl, SdtHeader};
use fwtables::Warning;

use crate::json::Json;

/// A located hex leaf (address, ID, flags, code) for `field` of the structure starting at
/// table offset `base`.
fn at<T: LeValue>(base: usize, field: Field<T>, value: impl Into<u64>) -> Json {
    Json::field(value, base + field.offset, field.width())
}

/// A located number leaf (count, length, offset, index, revision, width) for `field`.
fn num<T: LeValue>(base: usize, field: Field<T>, value: impl Into<u64>) -> Json {
    Json::number_field(value, base + field.offset, field.width())
}

/// Printable form of a fixed-width ID string (non-printable bytes become '.').
fn ascii(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| if (0x20..0x7f).contains(&b) { b as char } else { '.' }).collect()
}

fn header(h: &SdtHeader) -> Json {
    Json::Object(vec![
        ("signature", Json::text(&ascii(&h.signature.0), hl::SIGNATURE.offset, 4)),
        ("length", num(0, hl::LENGTH, h.length)),
        ("revision", num(0, hl::REVISION, h.revision)),
        ("checksum", at(0, hl::CHECKSUM, h.checksum)),
        ("checksum_valid", Json::Bool(h.checksum_valid)),
        ("oem_id", Json::text(&ascii(&h.oem_id), hl::OEM_ID.offset, 6)),
        ("oem_table_id", Json::text(&ascii(&h.oem_table_id), hl::OEM_TABLE_ID.offset, 8)),
        ("oem_revision", at(0, hl::OEM_REVISION, h.oem_revision)),
        ("creator_id", Json::text(&ascii(&h.creator_id), hl::CREATOR_ID.offset, 4)),
        ("creator_revision", at(0, hl::CREATOR_REVISION, h.creator_revision)),
    ])
}

/// The firmware bugs the parser found in a table that still decodes.
fn warnings(list: &[Warning]) -> Json {
    Json::Array(
        list.iter()
            .map(|w| {
                Json::Object(vec![
                    ("kind", Json::label(w.kind.name())),
                    ("entry", Json::number(w.entry as u64)),
                    ("field", Json::label(w.field)),
                    ("offset", Json::number(w.offset as u64)),
                    ("entry_ignored", Json::Bool(w.entry_ignored)),
                    ("message", Json::label(&w.to_string())),
                ])
            })
            .collect(),
    )
}

/// The JSON for a DMAR.
pub fn dmar(d: &Dmar) -> Json {
    Json::Object(vec![
        ("table", Json::label("dmar")),
        ("header", header(&d.header)),
        ("host_address_width", num(0, dl::HOST_ADDRESS_WIDTH, d.host_address_width)),
        ("dma_address_width_bits", Json::number(u64::from(d.dma_address_width()))),
        ("flags", at(0, dl::FLAGS, d.flags.0)),
        ("intr_remap", Json::Bool(d.flags.intr_remap())),
        ("x2apic_opt_out", Json::Bool(d.flags.x2apic_opt_out())),
        ("dma_ctrl_platform_opt_in", Json::Bool(d.flags.dma_ctrl_platform_opt_in())),
        ("structures", Json::Array(d.structures.iter().map(structure).collect())),
        ("warnings", warnings(&d.warnings)),
    ])
}

fn structure(s: &RemappingStructure) -> Json {
    use dl::structure as h;
    let common = |offset: usize, kind: &str, raw_type: u16, length: u16| {
        vec![
            ("offset", Json::number(offset as u64)),
            ("kind", Json::label(kind)),
            ("type", at(offset, h::TYPE, raw_type)),
            ("length", num(offset, h::LENGTH, length)),
        ]
    };
    let scopes = |list: &[DeviceScope]| Json::Array(list.iter().map(scope).collect());
    let mut members;
    match s {
        RemappingStructure::Drhd(u) => {
            use dl::drhd as l;
            members = common(u.offset, "drhd", 0, u.length);
            members.extend([
                ("flags", at(u.offset, l::FLAGS, u.flags)),
                ("include_pci_all", Json::Bool(u.include_pci_all())),
                ("size", at(u.offset, l::SIZE_FIELD, u.size)),
                ("register_set_bytes", u.register_set_size().map_or(Json::Null, Json::number)),
                ("segment", at(u.offset, l::SEGMENT, u.segment)),
                ("register_base", at(u.offset, l::REGISTER_BASE, u.register_base)),
                ("scopes", scopes(&u.scopes)),
            ]);
        }
        RemappingStructure::Rmrr(r) => {
            use dl::rmrr as l;
            members = common(r.offset, "rmrr", 1, r.length);
            members.extend([
                ("segment", at(r.offset, l::SEGMENT, r.segment)),
                ("base", at(r.offset, l::BASE, r.base)),
                ("limit", at(r.offset, l::LIMIT, r.limit)),
                ("scopes", scopes(&r.scopes)),
            ]);
        }
        RemappingStructure::Atsr(a) => {
            use dl::atsr as l;
            members = common(a.offset, "atsr", 2, a.length);
            members.extend([
                ("flags", at(a.offset, l::FLAGS, a.flags)),
                ("all_ports", Json::Bool(a.all_ports())),
                ("segment", at(a.offset, l::SEGMENT, a.segment)),
                ("scopes", scopes(&a.scopes)),
            ]);
        }
        RemappingStructure::Rhsa(r) => {
            use dl::rhsa as l;
            members = common(r.offset, "rhsa", 3, r.length);
            members.extend([
                ("register_base", at(r.offset, l::REGISTER_BASE, r.register_base)),
                ("proximity_domain", at(r.offset, l::PROXIMITY_DOMAIN, r.proximity_domain)),
            ]);
        }
        RemappingStructure::Andd(a) => {
            use dl::andd as l;
            members = common(a.offset, "andd", 4, a.length);
            members.extend([
                ("device_number", at(a.offset, l::DEVICE_NUMBER, a.device_number)),
                ("object_name", Json::text(&a.object_name, a.offset + l::OBJECT_NAME, a.object_name.len())),
            ]);
        }
        RemappingStructure::Satc(sa) => {
            use dl::satc as l;
            members = common(sa.offset, "satc", 5, sa.length);
            members.extend([
                ("flags", at(sa.offset, l::FLAGS, sa.flags)),
                ("atc_required", Json::Bool(sa.atc_required())),
                ("segment", at(sa.offset, l::SEGMENT, sa.segment)),
                ("scopes", scopes(&sa.scopes)),
            ]);
        }
        RemappingStructure::Sidp(si) => {
            use dl::sidp as l;
            members = common(si.offset, "sidp", 6, si.length);
            members.extend([("segment", at(si.offset, l::SEGMENT, si.segment)), ("scopes", scopes(&si.scopes))]);
        }
        RemappingStructure::Unknown { offset, structure_type, length } => {
            members = common(*offset, "unknown", *structure_type, *length);
            members.push(("skipped", Json::Bool(true)));
        }
    }
    Json::Object(members)
}

fn scope_kind(t: ScopeType) -> &'static str {
    match t {
        ScopeType::PciEndpoint => "pci_endpoint",
        ScopeType::PciSubHierarchy => "pci_sub_hierarchy",
        ScopeType::IoApic => "ioapic",
        ScopeType::MsiCapableHpet => "hpet",
        ScopeType::AcpiNamespaceDevice => "acpi_namespace_device",
        ScopeType::Reserved(_) => "reserved",
    }
}

fn scope(s: &DeviceScope) -> Json {
    use dl::scope as l;
    let path = s
        .path
        .iter()
        .enumerate()
        .map(|(i, hop)| {
            let entry = s.offset + l::PATH + i * l::PATH_ENTRY_SIZE;
            Json::Object(vec![("device", Json::field(hop.device, entry, 1)), ("function", Json::field(hop.function, entry + 1, 1))])
        })
        .collect();
    Json::Object(vec![
        ("offset", Json::number(s.offset as u64)),
        ("kind", Json::label(scope_kind(s.scope_type))),
        ("type", at(s.offset, l::TYPE, s.scope_type.raw())),
        ("length", num(s.offset, l::LENGTH, s.length)),
        ("flags", at(s.offset, l::FLAGS, s.flags)),
        ("enumeration_id", at(s.offset, l::ENUMERATION_ID, s.enumeration_id)),
        ("start_bus", at(s.offset, l::START_BUS, s.start_bus)),
        ("path", Json::Array(path)),
    ])
}

/// The JSON for an IORT.
pub fn iort(t: &Iort) -> Json {
    Json::Object(vec![
        ("table", Json::label("iort")),
        ("header", header(&t.header)),
        ("node_count", num(0, il::NODE_COUNT, t.nodes.len() as u64)),
        ("node_array_offset", num(0, il::NODE_OFFSET, t.node_array_offset)),
        ("nodes", Json::Array(t.nodes.iter().enumerate().map(|(i, n)| node(t, i, n)).collect())),
        ("warnings", warnings(&t.warnings)),
    ])
}

/// The lower_snake_case kind name of an IORT node.
fn node_kind(t: NodeType) -> &'static str {
    match t {
        NodeType::ItsGroup => "its_group",
        NodeType::NamedComponent => "named_component",
        NodeType::RootComplex => "root_complex",
        NodeType::SmmuV1V2 => "smmu_v1_v2",
        NodeType::SmmuV3 => "smmu_v3",
        NodeType::Pmcg => "pmcg",
        NodeType::Rmr => "rmr",
        NodeType::Other(_) => "unknown",
    }
}

fn memory_access(base: usize, m: &MemoryAccess) -> Json {
    use il::memory_access as l;
    Json::Object(vec![
        ("cache_coherency", at(base, l::CACHE_COHERENCY, m.cache_coherency)),
        ("hints", at(base, l::HINTS, m.hints)),
        ("flags", at(base, l::FLAGS, m.flags)),
    ])
}

fn id_mapping(t: &Iort, m: &IdMapping) -> Json {
    use il::id_mapping as l;
    Json::Object(vec![
        ("offset", Json::number(m.offset as u64)),
        ("input_base", at(m.offset, l::INPUT_BASE, m.input_base)),
        ("id_count_minus_one", num(m.offset, l::ID_COUNT, m.id_count_minus_one)),
        ("id_count", Json::number(m.id_count())),
        ("output_base", at(m.offset, l::OUTPUT_BASE, m.output_base)),
        ("output_reference", num(m.offset, l::OUTPUT_REFERENCE, m.output_reference)),
        ("output_node_index", t.node_index(m.output_reference).map_or(Json::Null, |i| Json::number(i as u64))),
        ("flags", at(m.offset, l::FLAGS, m.flags)),
        ("single_mapping", Json::Bool(m.single_mapping())),
    ])
}

fn interrupts(base: usize, list: &[SmmuInterrupt]) -> Json {
    use il::smmu_v1v2 as l;
    Json::Array(
        list.iter()
            .enumerate()
            .map(|(i, irq)| {
                let entry = base + i * l::INTERRUPT_SIZE;
                Json::Object(vec![("gsiv", at(entry, l::INTERRUPT_GSIV, irq.gsiv)), ("flags", at(entry, l::INTERRUPT_FLAGS, irq.flags))])
            })
            .collect(),
    )
}

fn optional<T: LeValue>(base: usize, field: Field<T>, value: Option<impl Into<u64>>) -> Json {
    value.map_or(Json::Null, |v| at(base, field, v))
}

fn optional_num<T: LeValue>(base: usize, field: Field<T>, value: Option<impl Into<u64>>) -> Json {
    value.map_or(Json::Null, |v| num(base, field, v))
}

fn node(t: &Iort, index: usize, n: &Node) -> Json {
    use il::node as h;
    let o = n.offset as usize;
    let mut members = vec![
        ("index", Json::number(index as u64)),
        ("offset", Json::number(n.offset)),
        ("kind", Json::label(node_kind(n.node_type))),
        ("type", at(o, h::TYPE, n.node_type.raw())),
        ("length", num(o, h::LENGTH, n.length)),
        ("revision", num(o, h::REVISION, n.revision)),
        ("identifier", at(o, h::IDENTIFIER, n.identifier)),
        ("mapping_count", num(o, h::MAPPING_COUNT, n.id_mappings.len() as u64)),
        ("mapping_offset", num(o, h::MAPPING_OFFSET, n.mapping_offset)),
    ];
    match &n.body {
        NodeBody::ItsGroup(g) => {
            use il::its_group as l;
            let ids = g.its_ids.iter().enumerate().map(|(i, id)| Json::field(*id, o + l::IDENTIFIERS + 4 * i, 4));
            members.extend([("its_count", num(o, l::ITS_COUNT, g.its_ids.len() as u64)), ("its_ids", Json::Array(ids.collect()))]);
        }
        NodeBody::NamedComponent(nc) => {
            use il::named_component as l;
            members.extend([
                ("node_flags", at(o, l::NODE_FLAGS, nc.node_flags)),
                ("memory_access", memory_access(o + l::MEMORY_ACCESS, &nc.memory_access)),
                ("address_size_limit", num(o, l::ADDRESS_SIZE_LIMIT, nc.address_size_limit)),
                ("device_name", Json::text(&nc.device_name, o + l::OBJECT_NAME, nc.device_name.len())),
            ]);
        }
        NodeBody::RootComplex(rc) => {
            use il::root_complex as l;
            members.extend([
                ("memory_access", memory_access(o + l::MEMORY_ACCESS, &rc.memory_access)),
                ("ats_attribute", at(o, l::ATS_ATTRIBUTE, rc.ats_attribute)),
                ("pci_segment", at(o, l::PCI_SEGMENT, rc.pci_segment)),
                ("memory_address_size_limit", optional_num(o, l::MEMORY_ADDRESS_SIZE_LIMIT, rc.memory_address_size_limit)),
                ("pasid_capabilities", optional(o, l::PASID_CAPABILITIES, rc.pasid_capabilities)),
            ]);
        }
        NodeBody::SmmuV1V2(s) => {
            use il::smmu_v1v2 as l;
            let global = o + s.global_interrupt_offset as usize;
            members.extend([
                ("base_address", at(o, l::BASE_ADDRESS, s.base_address)),
                ("span", at(o, l::SPAN, s.span)),
                ("model", at(o, l::MODEL, s.model)),
                ("flags", at(o, l::FLAGS, s.flags)),
                ("global_interrupt_offset", num(o, l::GLOBAL_INTERRUPT_OFFSET, s.global_interrupt_offset)),
                ("context_interrupt_count", num(o, l::CONTEXT_INTERRUPT_COUNT, s.context_interrupts.len() as u64)),
                ("context_interrupt_offset", num(o, l::CONTEXT_INTERRUPT_OFFSET, s.context_interrupt_offset)),
                ("pmu_interrupt_count", num(o, l::PMU_INTERRUPT_COUNT, s.pmu_interrupts.len() as u64)),
                ("pmu_interrupt_offset", num(o, l::PMU_INTERRUPT_OFFSET, s.pmu_interrupt_offset)),
                ("nsg_irpt", at(global, l::NSG_IRPT, s.nsg_irpt.gsiv)),
                ("nsg_irpt_flags", at(global, l::NSG_IRPT_FLAGS, s.nsg_irpt.flags)),
                ("nsg_cfg_irpt", at(global, l::NSG_CFG_IRPT, s.nsg_cfg_irpt.gsiv)),
                ("nsg_cfg_irpt_flags", at(global, l::NSG_CFG_IRPT_FLAGS, s.nsg_cfg_irpt.flags)),
                ("context_interrupts", interrupts(o + s.context_interrupt_offset as usize, &s.context_interrupts)),
                ("pmu_interrupts", interrupts(o + s.pmu_interrupt_offset as usize, &s.pmu_interrupts)),
            ]);
        }
        NodeBody::SmmuV3(s) => {
            use il::smmu_v3 as l;
            members.extend([
                ("base_address", at(o, l::BASE_ADDRESS, s.base_address)),
                ("flags", at(o, l::FLAGS, s.flags)),
                ("coherent_access_override", Json::Bool(s.coherent_access_override())),
                ("httu_override", Json::hex(s.httu_override())),
                ("proximity_domain_valid", Json::Bool(s.proximity_domain_valid())),
                ("device_id_mapping_index_valid", Json::Bool(s.device_id_mapping_index_valid())),
                ("vatos_address", at(o, l::VATOS_ADDRESS, s.vatos_address)),
                ("model", at(o, l::MODEL, s.model)),
                ("event_gsiv", at(o, l::EVENT_GSIV, s.event_gsiv)),
                ("pri_gsiv", at(o, l::PRI_GSIV, s.pri_gsiv)),
                ("gerr_gsiv", at(o, l::GERR_GSIV, s.gerr_gsiv)),
                ("sync_gsiv", at(o, l::SYNC_GSIV, s.sync_gsiv)),
                ("proximity_domain", optional(o, l::PROXIMITY_DOMAIN, s.proximity_domain)),
                ("device_id_mapping_index", optional_num(o, l::DEVICE_ID_MAPPING_INDEX, s.device_id_mapping_index)),
            ]);
        }
        NodeBody::Pmcg(p) => {
            use il::pmcg as l;
            members.extend([
                ("page0_base", at(o, l::PAGE0_BASE, p.page0_base)),
                ("overflow_gsiv", at(o, l::OVERFLOW_GSIV, p.overflow_gsiv)),
                ("node_reference", num(o, l::NODE_REFERENCE, p.node_reference)),
                ("node_reference_index", t.node_index(p.node_reference).map_or(Json::Null, |i| Json::number(i as u64))),
                ("page1_base", optional(o, l::PAGE1_BASE, p.page1_base)),
            ]);
        }
        NodeBody::Rmr(r) => {
            use il::rmr as l;
            let ranges = r.ranges.iter().map(|m| {
                Json::Object(vec![
                    ("offset", Json::number(m.offset as u64)),
                    ("base", at(m.offset, l::RANGE_BASE, m.base)),
                    ("length", at(m.offset, l::RANGE_LENGTH, m.length)),
                ])
            });
            members.extend([
                ("flags", at(o, l::FLAGS, r.flags)),
                ("remapping_permitted", Json::Bool(r.remapping_permitted())),
                ("access_privileged", Json::Bool(r.access_privileged())),
                ("access_attributes", Json::hex(r.access_attributes())),
                ("descriptor_count", num(o, l::DESCRIPTOR_COUNT, r.ranges.len() as u64)),
                ("descriptor_offset", num(o, l::DESCRIPTOR_OFFSET, r.descriptor_offset)),
                ("memory_ranges", Json::Array(ranges.collect())),
            ]);
        }
        NodeBody::Unknown => members.push(("skipped", Json::Bool(true))),
    }
    members.push(("id_mappings", Json::Array(n.id_mappings.iter().map(|m| id_mapping(t, m)).collect())));
    Json::Object(members)
}
