//! Isolation groups: functions the IOMMU cannot keep apart, which must go to one driver.
//!
//! Two functions share a group when
//! - their DMA can carry the same requester ID (one aliases the other, or both alias a
//!   bridge): the IOMMU cannot tell whose a request is;
//! - they are functions of one multi-function device and one of them lacks ACS P2P request
//!   and completion redirect: they can reach each other without going upstream;
//! - they sit below two downstream ports (root ports or switch downstream ports) on one bus,
//!   one of which lacks ACS source validation, request and completion redirect and upstream
//!   forwarding (PCI Express 4.0, 6.12): peer-to-peer traffic can pass between the ports
//!   without reaching the IOMMU.

use alloc::vec::Vec;

use crate::enumerate::Topology;
use crate::regs::acs;

impl Topology {
    /// The group of every function, as the index of the group's first function.
    pub fn groups(&self) -> Vec<usize> {
        let count = self.functions.len();
        let mut groups = UnionFind::new(count);
        let aliases: Vec<Vec<u16>> = (0..count).map(|i| self.dma_aliases(i)).collect();
        for a in 0..count {
            for b in a + 1..count {
                if aliases[a].iter().any(|id| aliases[b].contains(id)) {
                    groups.join(a, b);
                }
            }
        }
        for a in 0..count {
            let fa = &self.functions[a];
            for b in a + 1..count {
                let fb = &self.functions[b];
                let same_device = fa.parent == fb.parent && fa.address.bus == fb.address.bus && fa.address.device == fb.address.device;
                let isolated = |acs: Option<u16>| acs.is_some_and(|bits| bits & acs::ISOLATING_FUNCTION == acs::ISOLATING_FUNCTION);
                if same_device && !(isolated(fa.acs) && isolated(fb.acs)) {
                    groups.join(a, b);
                }
            }
        }
        // Downstream ports on one bus: everything below two of them joins when either leaks.
        let ports: Vec<usize> = (0..count)
            .filter(|&i| self.functions[i].bridge.is_some() && self.functions[i].port_type.is_some_and(|t| t.is_downstream_port()))
            .collect();
        let leaks = |i: usize| self.functions[i].acs.is_none_or(|bits| bits & acs::ISOLATING_PORT != acs::ISOLATING_PORT);
        for (n, &a) in ports.iter().enumerate() {
            for &b in &ports[n + 1..] {
                let siblings = self.functions[a].parent == self.functions[b].parent && self.functions[a].address.bus == self.functions[b].address.bus;
                if siblings && (leaks(a) || leaks(b)) {
                    let below_a: Vec<usize> = (0..count).filter(|&i| self.is_below(i, a)).collect();
                    let below_b: Vec<usize> = (0..count).filter(|&i| self.is_below(i, b)).collect();
                    for &x in &below_a {
                        for &y in &below_b {
                            groups.join(x, y);
                        }
                    }
                }
            }
        }
        (0..count).map(|i| groups.first_of(i)).collect()
    }

    /// Whether the function at `index` lies somewhere below the bridge at `bridge`.
    pub fn is_below(&self, index: usize, bridge: usize) -> bool {
        let mut at = self.functions[index].parent;
        while let Some(parent) = at {
            if parent == bridge {
                return true;
            }
            at = self.functions[parent].parent;
        }
        false
    }
}

/// Disjoint sets over `0..n`, each named by its lowest member.
struct UnionFind {
    parent: Vec<usize>,
}

impl UnionFind {
    fn new(n: usize) -> Self {
        UnionFind { parent: (0..n).collect() }
    }

    fn root(&mut self, mut i: usize) -> usize {
        while self.parent[i] != i {
            i = self.parent[i];
        }
        i
    }

    fn join(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.root(a), self.root(b));
        let (low, high) = if ra < rb { (ra, rb) } else { (rb, ra) };
        self.parent[high] = low;
    }

    fn first_of(&mut self, i: usize) -> usize {
        self.root(i)
    }
}
