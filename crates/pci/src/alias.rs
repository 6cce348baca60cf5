//! The requester IDs a function's DMA can carry when it reaches the IOMMU.
//!
//! A function issues its requests with its own ID. Bridges on the way up forward them, and
//! some take ownership of them (the IOMMU then sees the bridge's ID, not the function's):
//! - a PCI Express to PCI/PCI-X bridge tags what it forwards from conventional PCI with its
//!   secondary bus number and devfn 0 (PCIe to PCI/PCI-X Bridge 1.0, 2.3; VT-d 3.4, 3.9.2
//!   "devices behind conventional PCI bridges"): every function below it shares that ID;
//! - a conventional PCI-to-PCI bridge (no PCI Express capability) forwards with its own ID;
//! - PCI Express ports (root ports, switch ports) forward requests unchanged.
//!
//! The ID the IOMMU really sees is the last one taken on the way up; an IOMMU that has to
//! accept the function's DMA in every case programs all of them into the domain.

use alloc::vec::Vec;

use crate::enumerate::Topology;
use crate::regs::PortType;

impl Topology {
    /// Every requester ID the DMA of the function at `index` carries on its way up: its own
    /// first, then each one a bridge above substitutes, without repeats.
    pub fn dma_aliases(&self, index: usize) -> Vec<u16> {
        let mut ids = alloc::vec![self.functions[index].address.own_requester_id()];
        let mut child = index;
        while let Some(parent) = self.functions[child].parent {
            let bridge = &self.functions[parent];
            let substituted = match (bridge.port_type, bridge.bridge) {
                (Some(PortType::PcieToPciBridge), Some(buses)) => Some(u16::from(buses.secondary) << 8),
                (None, _) => Some(bridge.address.own_requester_id()),
                _ => None,
            };
            if let Some(id) = substituted.filter(|id| !ids.contains(id)) {
                ids.push(id);
            }
            child = parent;
        }
        ids
    }

    /// The requester ID the IOMMU sees on the function's DMA.
    pub fn requester_id(&self, index: usize) -> u16 {
        *self.dma_aliases(index).last().expect("a function's own ID is always first")
    }
}
