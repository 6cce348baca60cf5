//! Enumeration, requester IDs, groups and BAR placement against a simulated hierarchy shaped
//! like the QEMU machines the kernel tests use.

mod sim;

use pci::regs::PortType;
use pci::{bars, enumerate, Address, BusNumbers, ConfigAccess, MemoryWindow, Topology};
use sim::{Hierarchy, Node, PCIE_TO_PCI, RC_INTEGRATED, ROOT_PORT, SWITCH_DOWNSTREAM};

const MIB: u64 = 1 << 20;
const ISOLATING_PORT: u16 = 0x1d;

fn edu(device: u8, function: u8) -> Node {
    Node::endpoint(device, function, &[(MIB, false)])
}

fn pcie(mut node: Node, port_type: u8) -> Node {
    node.pcie(port_type);
    node
}

fn with_acs(mut node: Node, capability: u16) -> Node {
    node.acs(capability);
    node
}

/// Bus 0: a host bridge (00.0), an integrated edu (01.0), a root port with an edu (02.0), a
/// PCIe-to-PCI bridge with two conventional edus (03.0), and a root port with a conventional
/// PCI-to-PCI bridge with one edu below it (04.0).
fn machine() -> Hierarchy {
    Hierarchy::new(
        0,
        vec![
            Node::endpoint(0, 0, &[]).with_id(0x29c0_8086),
            pcie(edu(1, 0), RC_INTEGRATED),
            Node::bridge(2, 0, Some(ROOT_PORT), vec![pcie(edu(0, 0), sim::ENDPOINT)]),
            Node::bridge(3, 0, Some(PCIE_TO_PCI), vec![edu(1, 0), Node::endpoint(2, 0, &[(2 * MIB, true)])]),
            Node::bridge(4, 0, Some(ROOT_PORT), vec![Node::bridge(0, 0, None, vec![edu(5, 0)])]),
        ],
    )
}

fn addresses(topology: &Topology) -> Vec<Address> {
    topology.functions.iter().map(|f| f.address).collect()
}

fn at(bus: u8, device: u8, function: u8) -> Address {
    Address::new(0, bus, device, function)
}

fn index(topology: &Topology, address: Address) -> usize {
    topology.find(address).unwrap_or_else(|| panic!("{address} not enumerated"))
}

#[test]
fn buses_are_numbered_depth_first_and_every_function_is_found() {
    let mut hierarchy = machine();
    let topology = enumerate(&mut hierarchy, 0, 0, 255, BusNumbers::Assign);
    assert_eq!(
        addresses(&topology),
        [at(0, 0, 0), at(0, 1, 0), at(0, 2, 0), at(1, 0, 0), at(0, 3, 0), at(2, 1, 0), at(2, 2, 0), at(0, 4, 0), at(3, 0, 0), at(4, 5, 0)]
    );
    // Each bridge forwards exactly the buses below it.
    let buses = |path: &[(u8, u8)]| (hierarchy.at(path).secondary(), hierarchy.at(path).subordinate());
    assert_eq!(buses(&[(2, 0)]), (1, 1));
    assert_eq!(buses(&[(3, 0)]), (2, 2));
    assert_eq!(buses(&[(4, 0)]), (3, 4));
    assert_eq!(buses(&[(4, 0), (0, 0)]), (4, 4));
    // Primary bus numbers name the bus each bridge sits on.
    assert_eq!(hierarchy.at(&[(4, 0), (0, 0)]).space[6] & 0xff, 3);
    let bridge = &topology.functions[index(&topology, at(0, 4, 0))];
    assert_eq!(bridge.port_type, Some(PortType::RootPort));
    assert_eq!(topology.functions[index(&topology, at(3, 0, 0))].port_type, None, "a conventional bridge has no PCI Express capability");
    assert_eq!(topology.functions[index(&topology, at(4, 5, 0))].parent, Some(index(&topology, at(3, 0, 0))));
}

#[test]
fn firmware_numbers_are_followed_as_found() {
    let mut hierarchy = machine();
    let assigned = enumerate(&mut hierarchy, 0, 0, 255, BusNumbers::Assign);
    let found = enumerate(&mut hierarchy, 0, 0, 255, BusNumbers::Firmware);
    assert_eq!(found, assigned);
}

#[test]
fn unnumbered_bridges_hide_their_buses_from_a_firmware_walk() {
    let mut hierarchy = machine();
    let found = enumerate(&mut hierarchy, 0, 0, 255, BusNumbers::Firmware);
    assert_eq!(addresses(&found), [at(0, 0, 0), at(0, 1, 0), at(0, 2, 0), at(0, 3, 0), at(0, 4, 0)]);
}

#[test]
fn a_bridge_pointing_back_at_its_own_bus_is_not_followed() {
    let mut hierarchy = machine();
    enumerate(&mut hierarchy, 0, 0, 255, BusNumbers::Assign);
    // Firmware bug: the conventional bridge on bus 3 claims bus 1 (already scanned) as its
    // secondary bus, and the root port at 02.0 claims bus 0.
    let conventional = at(3, 0, 0);
    let buses = hierarchy.read32(conventional, 0x18);
    hierarchy.write32(conventional, 0x18, (buses & 0xff00_00ff) | 4 << 16 | 1 << 8);
    let found = enumerate(&mut hierarchy, 0, 0, 255, BusNumbers::Firmware);
    assert_eq!(found.functions.iter().filter(|f| f.address == at(1, 0, 0)).count(), 1, "bus 1 scanned once");
    assert_eq!(found.find(at(4, 5, 0)), None);
}

#[test]
fn running_out_of_bus_numbers_leaves_the_last_bridges_unconfigured() {
    let mut hierarchy = machine();
    let topology = enumerate(&mut hierarchy, 0, 0, 2, BusNumbers::Assign);
    assert_eq!(topology.functions.last().map(|f| f.address), Some(at(0, 4, 0)));
    assert_eq!(topology.functions.last().and_then(|f| f.bridge), None);
    assert!(topology.functions.iter().all(|f| f.address.bus <= 2));
}

#[test]
fn behind_a_pcie_to_pci_bridge_dma_carries_the_bridges_alias() {
    let mut hierarchy = machine();
    let topology = enumerate(&mut hierarchy, 0, 0, 255, BusNumbers::Assign);
    let aliases = |address| topology.dma_aliases(index(&topology, address));
    let seen = |address| topology.requester_id(index(&topology, address));
    // Bus 0 and behind a root port: the function's own ID.
    assert_eq!(aliases(at(0, 1, 0)), [0x0008]);
    assert_eq!(aliases(at(1, 0, 0)), [0x0100]);
    // Behind the PCIe-to-PCI bridge (secondary bus 2): (2, 00.0), for both functions.
    assert_eq!(aliases(at(2, 1, 0)), [0x0208, 0x0200]);
    assert_eq!(seen(at(2, 1, 0)), 0x0200);
    assert_eq!(seen(at(2, 2, 0)), 0x0200);
    // Behind a conventional PCI-to-PCI bridge: the bridge's own ID (03:00.0); the root port
    // above it forwards unchanged.
    assert_eq!(aliases(at(4, 5, 0)), [0x0428, 0x0300]);
}

#[test]
fn a_conventional_bridge_below_a_pcie_to_pci_bridge_is_overridden_by_it() {
    let mut hierarchy = Hierarchy::new(
        0,
        vec![Node::bridge(3, 0, Some(PCIE_TO_PCI), vec![Node::bridge(4, 0, None, vec![edu(0, 0)])])],
    );
    let topology = enumerate(&mut hierarchy, 0, 0, 255, BusNumbers::Assign);
    // Bus 1 behind the PCIe-to-PCI bridge, bus 2 behind the conventional bridge at 01:04.0.
    assert_eq!(topology.dma_aliases(index(&topology, at(2, 0, 0))), [0x0200, 0x0120, 0x0100]);
    assert_eq!(topology.requester_id(index(&topology, at(2, 0, 0))), 0x0100);
}

fn group_of(topology: &Topology, groups: &[usize], address: Address) -> usize {
    groups[index(topology, address)]
}

#[test]
fn functions_behind_one_pci_bridge_form_one_group() {
    let mut hierarchy = machine();
    let topology = enumerate(&mut hierarchy, 0, 0, 255, BusNumbers::Assign);
    let groups = topology.groups();
    let group = |address| group_of(&topology, &groups, address);
    assert_eq!(group(at(2, 1, 0)), group(at(2, 2, 0)));
    // The PCI-to-PCI bridge's ID is the alias of the edu below it: one group.
    assert_eq!(group(at(4, 5, 0)), group(at(3, 0, 0)));
    assert_ne!(group(at(0, 1, 0)), group(at(2, 1, 0)));
    assert_ne!(group(at(0, 1, 0)), group(at(0, 0, 0)));
    // Distinct groups overall: host bridge, integrated edu, root port 02.0, its edu (QEMU's
    // root ports here have no ACS, but a single port has no sibling port to leak to), the
    // PCIe-to-PCI bridge, its two edus, root port 04.0, the conventional bridge with its edu.
    let mut distinct = groups.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 7, "groups {groups:?}");
}

/// Two root ports on bus 0, each with one endpoint; `acs` on both ports when set.
fn two_ports(acs: Option<u16>) -> Topology {
    let port = |device| {
        let node = Node::bridge(device, 0, Some(ROOT_PORT), vec![pcie(edu(0, 0), sim::ENDPOINT)]);
        match acs {
            Some(bits) => with_acs(node, bits),
            None => node,
        }
    };
    let mut hierarchy = Hierarchy::new(0, vec![port(1), port(2)]);
    enumerate(&mut hierarchy, 0, 0, 255, BusNumbers::Assign)
}

#[test]
fn sibling_ports_without_acs_share_their_functions_group() {
    let leaky = two_ports(None);
    let groups = leaky.groups();
    assert_eq!(group_of(&leaky, &groups, at(1, 0, 0)), group_of(&leaky, &groups, at(2, 0, 0)));
    // Only some of the bits: still leaky (no upstream forwarding).
    let partial = two_ports(Some(0x0d));
    let groups = partial.groups();
    assert_eq!(group_of(&partial, &groups, at(1, 0, 0)), group_of(&partial, &groups, at(2, 0, 0)));
    let isolated = two_ports(Some(ISOLATING_PORT));
    let groups = isolated.groups();
    assert_ne!(group_of(&isolated, &groups, at(1, 0, 0)), group_of(&isolated, &groups, at(2, 0, 0)));
    // The ports themselves stay apart from the endpoints below them.
    assert_ne!(group_of(&isolated, &groups, at(0, 1, 0)), group_of(&isolated, &groups, at(1, 0, 0)));
}

#[test]
fn switch_downstream_ports_follow_the_same_rule() {
    let downstream = |device, acs: Option<u16>| {
        let node = Node::bridge(device, 0, Some(SWITCH_DOWNSTREAM), vec![pcie(edu(0, 0), sim::ENDPOINT)]);
        acs.map_or(node.clone(), |bits| with_acs(node, bits))
    };
    let switch = |acs| Hierarchy::new(0, vec![Node::bridge(1, 0, Some(0x5), vec![downstream(0, acs), downstream(1, acs)])]);
    for (acs, shared) in [(None, true), (Some(ISOLATING_PORT), false)] {
        let mut hierarchy = switch(acs);
        let topology = enumerate(&mut hierarchy, 0, 0, 255, BusNumbers::Assign);
        let groups = topology.groups();
        // Upstream port 00:01.0 → bus 1; downstream ports 01:00.0 → bus 2, 01:01.0 → bus 3.
        let same = group_of(&topology, &groups, at(2, 0, 0)) == group_of(&topology, &groups, at(3, 0, 0));
        assert_eq!(same, shared, "ACS {acs:?}");
    }
}

#[test]
fn functions_of_one_device_share_a_group_unless_each_has_acs_redirect() {
    let device = |acs: Option<u16>| {
        let nodes = vec![edu(1, 0).multifunction(), edu(1, 1)];
        let nodes = nodes.into_iter().map(|node| acs.map_or(node.clone(), |bits| with_acs(node, bits))).collect();
        let mut hierarchy = Hierarchy::new(0, nodes);
        enumerate(&mut hierarchy, 0, 0, 255, BusNumbers::Assign)
    };
    let plain = device(None);
    assert_eq!(plain.functions.len(), 2);
    assert_eq!(plain.groups(), [0, 0]);
    assert_eq!(device(Some(0x0c)).groups(), [0, 1]);
    assert_eq!(device(Some(0x04)).groups(), [0, 0], "request redirect alone lets completions through");
}

#[test]
fn function_1_of_a_single_function_device_is_not_scanned() {
    // Without the multi-function bit, functions 1-7 are not looked at (some devices decode
    // every function number as function 0).
    let mut hierarchy = Hierarchy::new(0, vec![edu(1, 0), edu(1, 1)]);
    assert_eq!(addresses(&enumerate(&mut hierarchy, 0, 0, 255, BusNumbers::Assign)), [at(0, 1, 0)]);
}

#[test]
fn bars_behind_bridges_are_reachable_through_their_windows() {
    let mut hierarchy = machine();
    let mut topology = enumerate(&mut hierarchy, 0, 0, 255, BusNumbers::Assign);
    let window = MemoryWindow { start: 0x1000_0000, end: 0x3eff_0000 };
    assert_eq!(bars::assign(&mut hierarchy, &mut topology, window), []);
    let mut placed: Vec<(u64, u64)> = Vec::new();
    for (i, function) in topology.functions.iter().enumerate() {
        for bar in &function.bars {
            assert!(bar.base >= window.start && bar.base + bar.size <= window.end, "{} BAR{} outside the window", function.address, bar.index);
            assert_eq!(bar.base % bar.size, 0, "{} BAR{} misaligned", function.address, bar.index);
            assert!(placed.iter().all(|&(b, s)| bar.base + bar.size <= b || b + s <= bar.base), "{} BAR{} overlaps", function.address, bar.index);
            placed.push((bar.base, bar.size));
            // The first and the last byte reach this function's BAR through every bridge above.
            let path: Vec<(u8, u8)> = topology.path(i).iter().chain([&i]).map(|&f| (topology.functions[f].address.device, topology.functions[f].address.function)).collect();
            for address in [bar.base, bar.base + bar.size - 1] {
                assert_eq!(hierarchy.decode(address), Some((path.clone(), usize::from(bar.index))), "{} BAR{} at {address:#x}", function.address, bar.index);
            }
        }
    }
    assert_eq!(placed.len(), 5, "four edus' BAR0 and the 64-bit BAR");
    // Nothing else decodes: just past the last BAR, nobody answers.
    let end = placed.iter().map(|&(b, s)| b + s).max().unwrap();
    assert_eq!(hierarchy.decode(end.next_multiple_of(MIB) + MIB), None);
}

#[test]
fn a_bar_that_does_not_fit_is_reported_and_its_function_left_not_decoding() {
    let mut hierarchy = machine();
    let mut topology = enumerate(&mut hierarchy, 0, 0, 255, BusNumbers::Assign);
    // Room for the integrated edu and the root port's edu only.
    let window = MemoryWindow { start: 0x1000_0000, end: 0x1000_0000 + 2 * MIB };
    let unplaced = bars::assign(&mut hierarchy, &mut topology, window);
    assert_eq!(unplaced.iter().map(|u| u.address).collect::<Vec<_>>(), [at(2, 1, 0), at(2, 2, 0), at(4, 5, 0)]);
    let behind = index(&topology, at(2, 1, 0));
    assert!(topology.functions[behind].bars.is_empty());
    assert_eq!(hierarchy.read32(at(2, 1, 0), 0x04) & 0x2, 0, "a function with an unplaced BAR must not decode");
    assert_eq!(hierarchy.decode(0x1000_0000).map(|(path, _)| path), Some(vec![(1, 0)]));
    assert_eq!(hierarchy.decode(0x1000_0000 + MIB).map(|(path, _)| path), Some(vec![(2, 0), (0, 0)]));
}

#[test]
fn a_location_finds_the_function_whatever_the_bus_numbers() {
    let mut hierarchy = machine();
    let topology = enumerate(&mut hierarchy, 0, 0, 255, BusNumbers::Assign);
    let found = |bridges: &[(u8, u8)], device, function| topology.find_by_path(bridges, device, function).map(|i| topology.functions[i].address);
    assert_eq!(found(&[(4, 0), (0, 0)], 5, 0), Some(at(4, 5, 0)));
    assert_eq!(found(&[(3, 0)], 2, 0), Some(at(2, 2, 0)));
    assert_eq!(found(&[], 1, 0), Some(at(0, 1, 0)));
    assert_eq!(found(&[(2, 0)], 1, 0), None);
    assert_eq!(found(&[(1, 0)], 0, 0), None, "01.0 is no bridge");
    let by_id = |instance| topology.find_by_id(0x1234, 0x11e8, instance).map(|i| topology.functions[i].address);
    assert_eq!(by_id(3), Some(at(2, 2, 0)));
    assert_eq!(by_id(5), None);
}

#[test]
fn looping_capability_lists_end() {
    let mut node = edu(1, 0);
    node.pcie(sim::ENDPOINT);
    // The PCI Express capability's next pointer at 0x40 → 0x40, not the PCIe ID: make the first
    // capability a vendor one (0x09) pointing to itself.
    node.space[0x40 / 4] = 0x0000_4009;
    // An extended capability (not ACS) whose next pointer points at itself.
    node.space[0x100 / 4] = 0x1001_0001;
    let mut hierarchy = Hierarchy::new(0, vec![node]);
    let topology = enumerate(&mut hierarchy, 0, 0, 255, BusNumbers::Assign);
    assert_eq!(topology.functions[0].port_type, None);
    assert_eq!(topology.functions[0].acs, None);
}

#[test]
fn a_read_only_walk_writes_nothing_and_reads_where_bars_were_placed() {
    let mut hierarchy = machine();
    let mut owner = enumerate(&mut hierarchy, 0, 0, 255, BusNumbers::Assign);
    bars::assign(&mut hierarchy, &mut owner, MemoryWindow { start: 0x1000_0000, end: 0x3eff_0000 });
    let before: Vec<Vec<u32>> = owner.functions.iter().map(|f| hierarchy.route(f.address).unwrap().space.clone()).collect();
    let mut reader = WriteRefusing(&mut hierarchy);
    let seen = pci::enumerate_read_only(&mut reader, 0, 0, 255);
    assert_eq!(addresses(&seen), addresses(&owner));
    for (i, function) in owner.functions.iter().enumerate() {
        assert!(seen.functions[i].bars.is_empty());
        for bar in &function.bars {
            assert_eq!(bars::read_base(&mut reader, function.address, bar.index), Some(bar.base), "{} BAR{}", function.address, bar.index);
        }
        assert_eq!(seen.dma_aliases(i), owner.dma_aliases(i));
    }
    assert_eq!(seen.groups(), owner.groups());
    let after: Vec<Vec<u32>> = owner.functions.iter().map(|f| hierarchy.route(f.address).unwrap().space.clone()).collect();
    assert!(before == after);
}

/// Configuration access that fails the test on any write.
struct WriteRefusing<'a>(&'a mut Hierarchy);

impl ConfigAccess for WriteRefusing<'_> {
    fn read32(&mut self, address: Address, offset: u16) -> u32 {
        self.0.read32(address, offset)
    }

    fn write32(&mut self, address: Address, offset: u16, value: u32) {
        panic!("a read-only walk wrote {value:#x} at {address} + {offset:#x}");
    }
}
