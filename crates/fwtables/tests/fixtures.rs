//! Decodes the committed iasl-compiled fixtures (tests/fwtables/*.aml) and checks the values
//! their .asl sources spell out.

use fwtables::dmar::pci::{DrhdMatchRule, PciAddress, PciTopology};
use fwtables::dmar::{Dmar, PathEntry, RemappingStructure, ScopeType};
use fwtables::iort::map::MapError;
use fwtables::iort::{Iort, NodeBody, NodeType};
use fwtables::SdtHeader;

const DMAR_FULL: &[u8] = include_bytes!("../../../tests/fwtables/dmar-full.aml");
const DMAR_QEMU: &[u8] = include_bytes!("../../../tests/fwtables/dmar-qemu-q35.aml");
const IORT_FULL: &[u8] = include_bytes!("../../../tests/fwtables/iort-full.aml");
const IORT_QEMU: &[u8] = include_bytes!("../../../tests/fwtables/iort-qemu-virt.aml");
/// The tables QEMU itself built for the configurations the two `-qemu-` sources describe.
const DMAR_QEMU_DUMP: &[u8] = include_bytes!("../../../tests/fwtables/dmar-qemu-q35.dat");
const IORT_QEMU_DUMP: &[u8] = include_bytes!("../../../tests/fwtables/iort-qemu-virt.dat");

/// The bridges of dmar-full.asl's topology: root port 00:1c.0 -> bus 1..=2, root port 00:1c.4
/// -> bus 3..=5, switch upstream port 03:00.0 -> bus 4..=5.
struct Bridges;

impl Bridges {
    fn buses(&self, segment: u16, bus: u8, device: u8, function: u8) -> Option<(u8, u8)> {
        match (segment, bus, device, function) {
            (0, 0, 0x1c, 0) => Some((1, 2)),
            (0, 0, 0x1c, 4) => Some((3, 5)),
            (0, 3, 0, 0) => Some((4, 5)),
            _ => None,
        }
    }
}

impl PciTopology for Bridges {
    fn secondary_bus(&self, segment: u16, bus: u8, device: u8, function: u8) -> Option<u8> {
        self.buses(segment, bus, device, function).map(|b| b.0)
    }
    fn subordinate_bus(&self, segment: u16, bus: u8, device: u8, function: u8) -> Option<u8> {
        self.buses(segment, bus, device, function).map(|b| b.1)
    }
}

fn pci(segment: u16, bus: u8, device: u8, function: u8) -> PciAddress {
    PciAddress { segment, bus, device, function }
}

#[test]
fn dmar_full_decodes_every_structure() {
    let dmar = Dmar::parse(DMAR_FULL).expect("fixture parses");
    assert!(dmar.header.checksum_valid);
    assert_eq!(&dmar.header.oem_id, b"FWTEST");
    assert_eq!(dmar.header.revision, 2);
    assert_eq!(dmar.dma_address_width(), 48);
    assert!(dmar.flags.intr_remap() && dmar.flags.x2apic_opt_out() && dmar.flags.dma_ctrl_platform_opt_in());

    let kinds: Vec<&str> = dmar
        .structures
        .iter()
        .map(|s| match s {
            RemappingStructure::Drhd(_) => "DRHD",
            RemappingStructure::Rmrr(_) => "RMRR",
            RemappingStructure::Atsr(_) => "ATSR",
            RemappingStructure::Rhsa(_) => "RHSA",
            RemappingStructure::Andd(_) => "ANDD",
            RemappingStructure::Satc(_) => "SATC",
            RemappingStructure::Sidp(_) => "SIDP",
            RemappingStructure::Unknown { .. } => "unknown",
        })
        .collect();
    assert_eq!(kinds, ["DRHD", "DRHD", "DRHD", "RMRR", "ATSR", "RHSA", "ANDD", "SATC", "SIDP"]);

    let drhds: Vec<_> = dmar.drhds().collect();
    let a = drhds[0];
    assert_eq!((a.register_base, a.segment, a.include_pci_all()), (0xfed9_0000, 0, false));
    assert_eq!(a.register_set_size(), Some(4096));
    let types: Vec<ScopeType> = a.scopes.iter().map(|s| s.scope_type).collect();
    assert_eq!(
        types,
        [
            ScopeType::PciEndpoint,
            ScopeType::PciSubHierarchy,
            ScopeType::PciEndpoint,
            ScopeType::IoApic,
            ScopeType::MsiCapableHpet,
            ScopeType::AcpiNamespaceDevice
        ]
    );
    assert_eq!(
        a.scopes[2].path,
        [
            PathEntry { device: 0x1c, function: 4 },
            PathEntry { device: 0, function: 0 },
            PathEntry { device: 3, function: 1 }
        ]
    );
    assert_eq!((a.scopes[3].enumeration_id, a.scopes[3].start_bus), (8, 0xf0));
    assert_eq!(a.scopes[2].offset, 0x50);

    let b = drhds[1];
    assert_eq!((b.register_base, b.include_pci_all(), b.register_set_size()), (0xfed9_1000, true, Some(8192)));
    let c = drhds[2];
    assert_eq!((c.segment, c.include_pci_all(), c.scopes.len()), (1, true, 0));

    let RemappingStructure::Rmrr(rmrr) = &dmar.structures[3] else { panic!("RMRR expected") };
    assert_eq!((rmrr.base, rmrr.limit), (0x7c00_0000, 0x7c7f_ffff));
    assert_eq!(rmrr.scopes[0].path, [PathEntry { device: 0x14, function: 0 }]);
    let RemappingStructure::Atsr(atsr) = &dmar.structures[4] else { panic!("ATSR expected") };
    assert!(!atsr.all_ports());
    assert_eq!(atsr.scopes[0].scope_type, ScopeType::PciSubHierarchy);
    let RemappingStructure::Rhsa(rhsa) = &dmar.structures[5] else { panic!("RHSA expected") };
    assert_eq!((rhsa.register_base, rhsa.proximity_domain), (0xfed9_0000, 1));
    let andd = dmar.andd(a.scopes[5].enumeration_id).expect("ANDD for the namespace scope");
    assert_eq!(andd.object_name, "\\_SB.PCI0.I2C0");
    let RemappingStructure::Satc(satc) = &dmar.structures[7] else { panic!("SATC expected") };
    assert!(satc.atc_required());
    let RemappingStructure::Sidp(sidp) = &dmar.structures[8] else { panic!("SIDP expected") };
    assert_eq!(sidp.scopes[0].flags, 2);
}

#[test]
fn dmar_full_resolves_multi_hop_scope_and_picks_units() {
    let dmar = Dmar::parse(DMAR_FULL).unwrap();
    let a = dmar.drhds().next().unwrap();
    // 00:1c.4 -> bus 3, 03:00.0 -> bus 4, so the device is 04:03.1.
    assert_eq!(a.scopes[2].resolve(0, &Bridges), Ok(pci(0, 4, 3, 1)));

    let unit = |addr| dmar.drhd_for_requester(addr, &Bridges).map(|m| (m.drhd.register_base, m.rule));
    assert_eq!(unit(pci(0, 0, 2, 0)), Some((0xfed9_0000, DrhdMatchRule::Endpoint)));
    assert_eq!(unit(pci(0, 4, 3, 1)), Some((0xfed9_0000, DrhdMatchRule::Endpoint)));
    // Under root port 00:1c.0 (buses 1..=2) and the port itself.
    assert_eq!(unit(pci(0, 2, 0, 0)), Some((0xfed9_0000, DrhdMatchRule::SubHierarchy)));
    assert_eq!(unit(pci(0, 0, 0x1c, 0)), Some((0xfed9_0000, DrhdMatchRule::SubHierarchy)));
    // A sibling of the multi-hop device is not in any explicit scope: catch-all unit B.
    assert_eq!(unit(pci(0, 4, 3, 0)), Some((0xfed9_1000, DrhdMatchRule::IncludePciAll)));
    assert_eq!(unit(pci(1, 0, 1, 0)), Some((0xfed9_2000, DrhdMatchRule::IncludePciAll)));
    assert_eq!(unit(pci(2, 0, 1, 0)), None);
}

#[test]
fn dmar_qemu_q35_has_one_explicit_unit() {
    let dmar = Dmar::parse(DMAR_QEMU).unwrap();
    assert_eq!(&dmar.header.oem_id, b"BOCHS ");
    assert_eq!(dmar.header.revision, 1);
    assert!(dmar.flags.intr_remap() && !dmar.flags.x2apic_opt_out());
    let drhds: Vec<_> = dmar.drhds().collect();
    assert_eq!(drhds.len(), 1);
    let unit = drhds[0];
    assert_eq!((unit.register_base, unit.include_pci_all(), unit.scopes.len()), (0xfed9_0000, false, 8));
    // Revision-1 tables have no register-set size field.
    assert_eq!(unit.register_set_size(), None);
    let ioapic = &unit.scopes[0];
    assert_eq!((ioapic.scope_type, ioapic.enumeration_id, ioapic.start_bus), (ScopeType::IoApic, 0, 0xff));
    let RemappingStructure::Atsr(atsr) = &dmar.structures[1] else { panic!("ATSR expected") };
    assert!(atsr.all_ports() && atsr.scopes.is_empty());
    // Without INCLUDE_PCI_ALL, a device QEMU did not list is untranslated.
    assert_eq!(dmar.drhd_for_requester(pci(0, 0, 5, 0), &Bridges), None);
    assert!(dmar.drhd_for_requester(pci(0, 0, 0x1f, 2), &Bridges).is_some());
}

#[test]
fn iort_full_decodes_every_node() {
    let iort = Iort::parse(IORT_FULL).unwrap();
    assert!(iort.header.checksum_valid);
    assert_eq!(iort.header.revision, 5);
    let types: Vec<NodeType> = iort.nodes.iter().map(|n| n.node_type).collect();
    assert_eq!(
        types,
        [
            NodeType::ItsGroup,
            NodeType::SmmuV3,
            NodeType::SmmuV1V2,
            NodeType::RootComplex,
            NodeType::NamedComponent,
            NodeType::NamedComponent,
            NodeType::Pmcg,
            NodeType::Rmr
        ]
    );
    let offsets: Vec<u32> = iort.nodes.iter().map(|n| n.offset).collect();
    assert_eq!(offsets, [0x30, 0x4c, 0xb8, 0x11c, 0x168, 0x1a4, 0x1e0, 0x21c]);

    let NodeBody::ItsGroup(its) = &iort.nodes[0].body else { panic!() };
    assert_eq!(its.its_ids, [0, 1]);

    let smmu_node = &iort.nodes[1];
    let NodeBody::SmmuV3(smmu) = &smmu_node.body else { panic!() };
    assert_eq!(smmu.base_address, 0x2b40_0000);
    assert!(smmu.coherent_access_override() && smmu.proximity_domain_valid() && smmu.device_id_mapping_index_valid());
    assert_eq!((smmu.proximity_domain, smmu.device_id_mapping_index), (Some(1), Some(1)));
    assert_eq!(smmu_node.id_mappings[0].id_count(), 0x1_0000);
    assert!(smmu_node.id_mappings[1].single_mapping());

    let NodeBody::SmmuV1V2(v2) = &iort.nodes[2].body else { panic!() };
    assert_eq!((v2.base_address, v2.span, v2.model), (0x2b50_0000, 0x1_0000, 3));
    assert_eq!((v2.nsg_irpt.gsiv, v2.nsg_irpt.flags, v2.nsg_cfg_irpt.gsiv), (0x60, 1, 0x61));
    let contexts: Vec<(u32, u32)> = v2.context_interrupts.iter().map(|i| (i.gsiv, i.flags)).collect();
    assert_eq!(contexts, [(0x62, 0), (0x63, 1)]);
    assert_eq!(v2.pmu_interrupts[0].gsiv, 0x64);

    let NodeBody::RootComplex(rc) = &iort.nodes[3].body else { panic!() };
    assert_eq!((rc.memory_access.cache_coherency, rc.memory_access.flags), (1, 3));
    assert_eq!((rc.ats_attribute, rc.memory_address_size_limit, rc.pasid_capabilities), (1, Some(0x30), Some(0x14)));

    let NodeBody::NamedComponent(eth) = &iort.nodes[4].body else { panic!() };
    assert_eq!((eth.device_name.as_str(), eth.address_size_limit), ("\\_SB.ETH0", 0x28));

    let NodeBody::Pmcg(pmcg) = &iort.nodes[6].body else { panic!() };
    assert_eq!((pmcg.page0_base, pmcg.node_reference, pmcg.page1_base), (0x2b42_0000, 0x4c, Some(0x2b43_0000)));

    let NodeBody::Rmr(rmr) = &iort.nodes[7].body else { panic!() };
    assert!(rmr.remapping_permitted() && !rmr.access_privileged());
    assert_eq!(rmr.access_attributes(), 5);
    let ranges: Vec<(u64, u64)> = rmr.ranges.iter().map(|r| (r.base, r.length)).collect();
    assert_eq!(ranges, [(0x8000_0000, 0x1_0000), (0x8010_0000, 0x2_0000)]);
}

#[test]
fn iort_full_follows_id_mappings() {
    let iort = Iort::parse(IORT_FULL).unwrap();
    // RID 00:02.0 (0x10) -> SMMUv3 stream 0x10 -> ITS device ID 0x10010.
    let path = iort.map_requester_id(0, 0x0010).unwrap();
    assert_eq!(path.hops.len(), 2);
    assert_eq!(path.arrival_at(&iort, NodeType::SmmuV3), Some((0x4c, 0x10)));
    assert_eq!(path.destination(), Some((0x30, 0x1_0010)));
    // RIDs 0x8000.. bypass the SMMU.
    let bypass = iort.map_requester_id(0, 0x8005).unwrap();
    assert_eq!((bypass.hops.len(), bypass.destination()), (1, Some((0x30, 0x8005))));
    assert_eq!(iort.map_requester_id(0, 0x9000), Err(MapError::NoMapping { node: 0x11c, id: 0x9000 }));
    // The named component's single mapping ends at the SMMUv2, which has no mappings.
    let eth = iort.named_component("\\_SB.ETH0").unwrap();
    assert_eq!(iort.map_id(eth.offset, 0).unwrap().destination(), Some((0xb8, 0x20)));
    // The SMMUv3's own MSIs use the mapping its DeviceID mapping index names.
    let own = iort.map_own_id(0x4c).unwrap();
    assert_eq!((own.hops[0].mapping_index, own.destination()), (1, Some((0x30, 0x7000))));
    // The PMCG's overflow MSI, likewise.
    assert_eq!(iort.map_own_id(0x1e0).unwrap().destination(), Some((0x30, 0x9000)));
}

#[test]
fn iort_qemu_virt_maps_rid_through_smmu_to_its() {
    let iort = Iort::parse(IORT_QEMU).unwrap();
    assert_eq!((iort.header.revision, iort.nodes.len()), (3, 3));
    let NodeBody::SmmuV3(smmu) = &iort.nodes[1].body else { panic!() };
    assert_eq!(smmu.base_address, 0x0905_0000);
    // QEMU wires GERR to the SPI after sync's.
    assert_eq!((smmu.event_gsiv, smmu.pri_gsiv, smmu.gerr_gsiv, smmu.sync_gsiv), (0x6a, 0x6b, 0x6d, 0x6c));
    let NodeBody::RootComplex(rc) = &iort.nodes[2].body else { panic!() };
    // Node revision 3 predates the PASID capabilities field.
    assert_eq!((rc.memory_address_size_limit, rc.pasid_capabilities), (Some(0x40), None));
    assert_eq!(iort.nodes[2].id_mappings.len(), 2);
    // Bus 0 (RID 00:02.0 = 0x10 here) goes through the SMMUv3 ...
    let path = iort.map_requester_id(0, 0x0010).unwrap();
    assert_eq!(path.arrival_at(&iort, NodeType::SmmuV3), Some((0x48, 0x10)));
    assert_eq!(path.destination(), Some((0x30, 0x10)));
    // ... the other buses straight to the ITS.
    let bypass = iort.map_requester_id(0, 0x0208).unwrap();
    assert_eq!((bypass.hops.len(), bypass.arrival_at(&iort, NodeType::SmmuV3)), (1, None));
    assert_eq!(bypass.destination(), Some((0x30, 0x208)));
    // No single mapping: the SMMU's own interrupts are wired, not MSIs.
    assert_eq!(iort.map_own_id(0x48), Err(MapError::NoOwnIdMapping { node: 0x48 }));
}

/// The hand-written `-qemu-` sources describe QEMU's real tables byte for byte, apart from the
/// fields iasl fills in itself: the checksum and the creator ID and revision.
#[test]
fn qemu_fixtures_equal_the_tables_qemu_builds() {
    use fwtables::sdt::header_layout as h;
    let iasl_written = [h::CHECKSUM.offset..h::CHECKSUM.end(), h::CREATOR_ID.offset..h::CREATOR_REVISION.end()];
    for (compiled, dumped) in [(DMAR_QEMU, DMAR_QEMU_DUMP), (IORT_QEMU, IORT_QEMU_DUMP)] {
        assert!(SdtHeader::parse(dumped).unwrap().0.checksum_valid);
        assert_eq!(compiled.len(), dumped.len());
        for (offset, (a, b)) in compiled.iter().zip(dumped).enumerate() {
            if !iasl_written.iter().any(|r| r.contains(&offset)) {
                assert_eq!(a, b, "byte {offset:#x} of {}", String::from_utf8_lossy(&dumped[..4]));
            }
        }
    }
    assert_eq!(&DMAR_QEMU_DUMP[h::CREATOR_ID.offset..h::CREATOR_ID.end()], b"BXPC");
}

#[test]
fn unresolvable_scope_paths_name_the_missing_hop() {
    use fwtables::dmar::pci::ScopePathError;
    let dmar = Dmar::parse(DMAR_FULL).unwrap();
    let multi_hop = &dmar.drhds().next().unwrap().scopes[2];
    // On segment 1 none of the bridges exist: the first hop (00:1c.4) is reported.
    assert_eq!(
        multi_hop.resolve(1, &Bridges),
        Err(ScopePathError::MissingBridge { hop: 0, at: pci(1, 0, 0x1c, 4) })
    );
    let mut bad = multi_hop.clone();
    bad.path[1].device = 32;
    assert_eq!(bad.resolve(0, &Bridges), Err(ScopePathError::InvalidHop { hop: 1, device: 32, function: 0 }));
    bad.path.clear();
    assert_eq!(bad.resolve(0, &Bridges), Err(ScopePathError::EmptyPath));
}
