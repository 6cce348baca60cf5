//! A simulated PCI hierarchy: configuration requests are routed through the bridges' bus
//! number registers and memory addresses through their windows and command bits, as the
//! hardware does, so numbering and window mistakes show.


use pci::{Address, ConfigAccess};

pub const ENDPOINT_ID: u32 = 0x11e8_1234;
pub const BRIDGE_ID: u32 = 0x000e_1b36;

/// One function: its configuration space (1024 dwords), which bits of each dword a write
/// changes, and the functions on its secondary bus when it is a bridge.
#[derive(Clone)]
pub struct Node {
    pub device: u8,
    pub function: u8,
    pub space: Vec<u32>,
    pub writable: Vec<u32>,
    pub children: Vec<Node>,
}

/// PCI Express device/port types (PCI Express 4.0, 7.5.3.2).
pub const ENDPOINT: u8 = 0x0;
pub const ROOT_PORT: u8 = 0x4;
pub const SWITCH_DOWNSTREAM: u8 = 0x6;
pub const PCIE_TO_PCI: u8 = 0x7;
pub const RC_INTEGRATED: u8 = 0x9;

impl Node {
    fn blank(device: u8, function: u8, id: u32, layout: u8) -> Node {
        let mut node = Node { device, function, space: vec![0; 1024], writable: vec![0; 1024], children: Vec::new() };
        node.space[0] = id;
        node.space[3] = u32::from(layout) << 16;
        // Command: I/O, memory, bus master writable.
        node.writable[1] = 0x7;
        node
    }

    /// A conventional endpoint with these memory BARs (size, 64-bit).
    pub fn endpoint(device: u8, function: u8, bars: &[(u64, bool)]) -> Node {
        let mut node = Node::blank(device, function, ENDPOINT_ID, 0);
        node.space[2] = 0x00ff_0000;
        let mut register = 4;
        for &(size, is_64) in bars {
            let mask = !(size - 1);
            node.writable[register] = mask as u32 & !0xf;
            if is_64 {
                node.space[register] = 0b100;
                node.writable[register + 1] = (mask >> 32) as u32;
                register += 2;
            } else {
                register += 1;
            }
        }
        node
    }

    /// A type 1 function with these children; `port_type` adds a PCI Express capability.
    pub fn bridge(device: u8, function: u8, port_type: Option<u8>, children: Vec<Node>) -> Node {
        let mut node = Node::blank(device, function, BRIDGE_ID, 1);
        node.space[2] = 0x0604_0000;
        // Bus numbers (latency timer read-only), memory window, prefetchable window.
        node.writable[6] = 0x00ff_ffff;
        node.writable[8] = 0xfff0_fff0;
        node.writable[9] = 0xfff0_fff0;
        node.writable[10] = u32::MAX;
        node.writable[11] = u32::MAX;
        node.space[6] = 0x4000_0000;
        node.children = children;
        if let Some(port_type) = port_type {
            node.pcie(port_type);
        }
        node
    }

    /// Adds the PCI Express capability at 0x40 (status bit 4, capabilities pointer).
    pub fn pcie(&mut self, port_type: u8) -> &mut Self {
        self.space[1] |= 1 << 20;
        self.space[0x34 / 4] = 0x40;
        self.space[0x40 / 4] = 0x0002_0010 | u32::from(port_type) << 20;
        self
    }

    /// Adds the ACS extended capability at 0x100 with this capability register.
    pub fn acs(&mut self, capability: u16) -> &mut Self {
        self.space[0x100 / 4] = 0x0001_000d;
        self.space[0x104 / 4] = u32::from(capability);
        self
    }

    pub fn multifunction(mut self) -> Self {
        self.space[3] |= 0x80 << 16;
        self
    }

    pub fn with_id(mut self, id: u32) -> Self {
        self.space[0] = id;
        self
    }

    fn is_bridge(&self) -> bool {
        (self.space[3] >> 16) & 0x7f == 1
    }

    pub fn secondary(&self) -> u8 {
        (self.space[6] >> 8) as u8
    }

    pub fn subordinate(&self) -> u8 {
        (self.space[6] >> 16) as u8
    }

    fn command(&self) -> u32 {
        self.space[1] & 0xffff
    }

    /// [base, limit] of the memory window, if open.
    fn window(&self) -> Option<(u64, u64)> {
        let base = u64::from(self.space[8] & 0xfff0) << 16;
        let limit = (u64::from(self.space[8] >> 16 & 0xfff0) << 16) | 0xf_ffff;
        (base <= limit).then_some((base, limit))
    }

    /// Memory BARs as (register index, base, size).
    fn bars(&self) -> Vec<(usize, u64, u64)> {
        let count = if self.is_bridge() { 2 } else { 6 };
        let mut bars = Vec::new();
        let mut register = 4;
        while register < 4 + count {
            let mask = self.writable[register];
            if mask == 0 {
                register += 1;
                continue;
            }
            let is_64 = self.space[register] & 0b110 == 0b100;
            let (base, full_mask) = if is_64 {
                (
                    u64::from(self.space[register + 1]) << 32 | u64::from(self.space[register] & !0xf),
                    u64::from(self.writable[register + 1]) << 32 | u64::from(mask),
                )
            } else {
                (u64::from(self.space[register] & !0xf), 0xffff_ffff_0000_0000 | u64::from(mask))
            };
            bars.push((register - 4, base, (!full_mask).wrapping_add(1)));
            register += if is_64 { 2 } else { 1 };
        }
        bars
    }
}

pub struct Hierarchy {
    pub first_bus: u8,
    pub root: Vec<Node>,
}

impl Hierarchy {
    pub fn new(first_bus: u8, root: Vec<Node>) -> Self {
        Hierarchy { first_bus, root }
    }

    /// The node a configuration request for `address` reaches, routed by bus numbers.
    pub fn route(&mut self, address: Address) -> Option<&mut Node> {
        fn on_bus(nodes: &mut [Node], this_bus: u8, address: Address) -> Option<&mut Node> {
            if address.bus == this_bus {
                return nodes.iter_mut().find(|n| n.device == address.device && n.function == address.function);
            }
            let bridge = nodes.iter_mut().find(|n| n.is_bridge() && n.secondary() > this_bus && (n.secondary()..=n.subordinate()).contains(&address.bus))?;
            let secondary = bridge.secondary();
            on_bus(&mut bridge.children, secondary, address)
        }
        let first = self.first_bus;
        on_bus(&mut self.root, first, address)
    }

    /// The node found by device/function steps from the first bus (independent of numbering).
    pub fn at(&self, path: &[(u8, u8)]) -> &Node {
        let mut nodes = &self.root;
        let mut found = None;
        for &(device, function) in path {
            let node = nodes.iter().find(|n| n.device == device && n.function == function).expect("no node at that path");
            nodes = &node.children;
            found = Some(node);
        }
        found.expect("an empty path")
    }

    /// The function and BAR register a memory access at `address` reaches: through bridges
    /// only where they decode memory and their window holds the address.
    pub fn decode(&self, address: u64) -> Option<(Vec<(u8, u8)>, usize)> {
        fn on_bus(nodes: &[Node], path: &mut Vec<(u8, u8)>, address: u64) -> Option<usize> {
            for node in nodes {
                path.push((node.device, node.function));
                if node.command() & 0x2 != 0 {
                    if let Some(&(index, _, _)) = node.bars().iter().find(|&&(_, base, size)| base != 0 && (base..base + size).contains(&address)) {
                        return Some(index);
                    }
                    if node.is_bridge() && node.window().is_some_and(|(base, limit)| (base..=limit).contains(&address)) {
                        if let Some(index) = on_bus(&node.children, path, address) {
                            return Some(index);
                        }
                    }
                }
                path.pop();
            }
            None
        }
        let mut path = Vec::new();
        on_bus(&self.root, &mut path, address).map(|index| (path, index))
    }
}

impl ConfigAccess for Hierarchy {
    fn read32(&mut self, address: Address, offset: u16) -> u32 {
        assert!(offset.is_multiple_of(4) && offset < 4096, "unaligned or out-of-range configuration read at {offset:#x}");
        self.route(address).map_or(u32::MAX, |node| node.space[usize::from(offset / 4)])
    }

    fn write32(&mut self, address: Address, offset: u16, value: u32) {
        assert!(offset.is_multiple_of(4) && offset < 4096, "unaligned or out-of-range configuration write at {offset:#x}");
        if let Some(node) = self.route(address) {
            let register = usize::from(offset / 4);
            let mask = node.writable[register];
            node.space[register] = (node.space[register] & !mask) | (value & mask);
        }
    }
}
