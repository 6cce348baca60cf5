//! Resolving DMAR device scopes against the live PCI topology, and finding the remapping unit
//! that translates a given requester.
//!
//! A device scope names a device by a start bus and a path of (device, function) hops (VT-d
//! §8.3.1.1): every hop but the last is a PCI-PCI bridge whose *secondary bus* is where the next
//! hop lives. Bus numbers are assigned at enumeration time, so only the running system can turn
//! a path into a bus number; it does so through the [`PciTopology`] trait (the IOMMU server
//! implements it over ECAM reads of each bridge's Type 1 header).
//!
//! [`Dmar::drhd_for_requester`] then applies the VT-d matching rule: a device listed in some
//! unit's explicit scopes (directly or under a listed bridge) belongs to that unit; otherwise the
//! segment's INCLUDE_PCI_ALL unit, if any, is its catch-all (§8.3, "INCLUDE_PCI_ALL").

use core::fmt;

use super::{DeviceScope, Dmar, Drhd, ScopeType};

/// Read access to PCI bridge bus numbers (Type 1 configuration header offsets 0x19 and 0x1A).
pub trait PciTopology {
    /// Secondary bus number of the PCI-PCI bridge at `segment:bus:device.function`, or `None`
    /// when there is no bridge there.
    fn secondary_bus(&self, segment: u16, bus: u8, device: u8, function: u8) -> Option<u8>;
    /// Subordinate (highest downstream) bus number of that bridge, or `None`.
    fn subordinate_bus(&self, segment: u16, bus: u8, device: u8, function: u8) -> Option<u8>;
}

/// A PCI function's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PciAddress {
    pub segment: u16,
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

impl PciAddress {
    /// Builds an address from a requester ID's bus and devfn byte (device << 3 | function).
    pub fn from_devfn(segment: u16, bus: u8, devfn: u8) -> PciAddress {
        PciAddress { segment, bus, device: devfn >> 3, function: devfn & 7 }
    }

    /// The devfn byte: device << 3 | function.
    pub fn devfn(&self) -> u8 {
        (self.device << 3) | (self.function & 7)
    }

    /// The 16-bit requester ID: bus << 8 | devfn.
    pub fn requester_id(&self) -> u16 {
        (u16::from(self.bus) << 8) | u16::from(self.devfn())
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}:{:02x}:{:02x}.{}", self.segment, self.bus, self.device, self.function)
    }
}

/// Why a device scope's path could not be resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScopePathError {
    /// The scope has no path entries (the spec requires at least one).
    EmptyPath,
    /// Hop `hop` names device > 31 or function > 7.
    InvalidHop { hop: usize, device: u8, function: u8 },
    /// Hop `hop` must be a bridge to reach the next hop, but no bridge was found at `at`.
    MissingBridge { hop: usize, at: PciAddress },
}

impl fmt::Display for ScopePathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScopePathError::EmptyPath => f.write_str("device scope has an empty path"),
            ScopePathError::InvalidHop { hop, device, function } => {
                write!(f, "path hop {hop} names device {device:#x} function {function:#x}, out of range")
            }
            ScopePathError::MissingBridge { hop, at } => {
                write!(f, "path hop {hop}: no PCI-PCI bridge at {at} to reach the next hop")
            }
        }
    }
}

impl DeviceScope {
    /// Walks the scope's path through the bridges of `segment` and returns the final device's
    /// address (for a sub-hierarchy scope, the bridge itself).
    pub fn resolve(&self, segment: u16, topology: &impl PciTopology) -> Result<PciAddress, ScopePathError> {
        let (last, bridges) = self.path.split_last().ok_or(ScopePathError::EmptyPath)?;
        let mut bus = self.start_bus;
        for (hop, entry) in self.path.iter().enumerate() {
            if entry.device > 31 || entry.function > 7 {
                return Err(ScopePathError::InvalidHop { hop, device: entry.device, function: entry.function });
            }
        }
        for (hop, entry) in bridges.iter().enumerate() {
            let at = PciAddress { segment, bus, device: entry.device, function: entry.function };
            bus = topology
                .secondary_bus(segment, bus, entry.device, entry.function)
                .ok_or(ScopePathError::MissingBridge { hop, at })?;
        }
        Ok(PciAddress { segment, bus, device: last.device, function: last.function })
    }
}

/// Which rule matched a requester to its DRHD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrhdMatchRule {
    /// A PCI endpoint scope names the requester.
    Endpoint,
    /// A PCI sub-hierarchy scope names the requester's bridge or a bridge above it.
    SubHierarchy,
    /// No explicit scope matched; the segment's INCLUDE_PCI_ALL unit catches it.
    IncludePciAll,
}

/// The DRHD translating a requester, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DrhdMatch<'a> {
    pub drhd: &'a Drhd,
    /// The explicit scope that matched (`None` for the INCLUDE_PCI_ALL catch-all).
    pub scope: Option<&'a DeviceScope>,
    pub rule: DrhdMatchRule,
}

impl Dmar {
    /// Finds the DRHD whose remapping hardware translates DMA from `requester`.
    ///
    /// Explicit scopes of every unit in the requester's segment are tried first, in table order;
    /// scopes whose path does not resolve on this system (devices firmware lists but that are
    /// absent) are skipped, as Linux does. Only then does the segment's INCLUDE_PCI_ALL unit
    /// match. Returns `None` when the requester is not translated at all.
    pub fn drhd_for_requester(&self, requester: PciAddress, topology: &impl PciTopology) -> Option<DrhdMatch<'_>> {
        let in_segment = || self.drhds().filter(move |d| d.segment == requester.segment);
        for drhd in in_segment().filter(|d| !d.include_pci_all()) {
            for scope in &drhd.scopes {
                if let Some(rule) = scope_covers(scope, requester, topology) {
                    return Some(DrhdMatch { drhd, scope: Some(scope), rule });
                }
            }
        }
        in_segment()
            .find(|d| d.include_pci_all())
            .map(|drhd| DrhdMatch { drhd, scope: None, rule: DrhdMatchRule::IncludePciAll })
    }
}

/// Whether an explicit PCI scope covers `requester`, and by which rule.
fn scope_covers(scope: &DeviceScope, requester: PciAddress, topology: &impl PciTopology) -> Option<DrhdMatchRule> {
    let rule = match scope.scope_type {
        ScopeType::PciEndpoint => DrhdMatchRule::Endpoint,
        ScopeType::PciSubHierarchy => DrhdMatchRule::SubHierarchy,
        _ => return None,
    };
    let device = scope.resolve(requester.segment, topology).ok()?;
    if device == requester {
        return Some(rule);
    }
    if rule == DrhdMatchRule::SubHierarchy {
        let secondary = topology.secondary_bus(device.segment, device.bus, device.device, device.function)?;
        let subordinate = topology.subordinate_bus(device.segment, device.bus, device.device, device.function)?;
        if (secondary..=subordinate).contains(&requester.bus) {
            return Some(rule);
        }
    }
    None
}
