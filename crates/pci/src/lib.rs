//! PCI configuration space for the root task and the IOMMU server: the register layout
//! (`regs`), enumeration of the whole hierarchy through any configuration access, with bus
//! numbers and bridge memory windows assigned where no firmware did (`enumerate`, `bars`),
//! the requester ID each function's DMA really carries and its aliases (`alias`), the
//! groups of functions that cannot be isolated from each other (`groups`), and resetting a
//! function between owners (`reset`).
//!
//! References: PCI Local Bus 3.0 (header layouts), PCI-to-PCI Bridge Architecture 1.2
//! (type 1 header), PCI Express Base 4.0 (capability structure 7.5.3, ACS 7.7.7),
//! PCI Express to PCI/PCI-X Bridge 1.0 (requester IDs of forwarded transactions, 2.3),
//! PCI Bus Power Management 1.2 (power-management reset).

#![no_std]

extern crate alloc;

pub mod alias;
pub mod bars;
pub mod enumerate;
pub mod groups;
pub mod regs;
pub mod reset;

use core::fmt;

pub use bars::{Bar, MemoryWindow};
pub use enumerate::{enumerate, enumerate_read_only, BusNumbers, Function, Topology};

/// Where a function sits: segment, bus, device (0-31), function (0-7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address {
    pub segment: u16,
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

impl Address {
    pub const fn new(segment: u16, bus: u8, device: u8, function: u8) -> Address {
        Address { segment, bus, device, function }
    }

    /// device << 3 | function.
    pub const fn devfn(&self) -> u8 {
        (self.device << 3) | (self.function & 7)
    }

    /// The 16-bit requester ID of the function itself: bus << 8 | devfn.
    pub const fn own_requester_id(&self) -> u16 {
        ((self.bus as u16) << 8) | self.devfn() as u16
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}:{:02x}:{:02x}.{}", self.segment, self.bus, self.device, self.function)
    }
}

/// 32-bit configuration reads and writes of one segment (ECAM on hardware, a simulation in
/// tests). A read of a function that does not exist returns all ones, as the bus does.
pub trait ConfigAccess {
    fn read32(&mut self, address: Address, offset: u16) -> u32;
    fn write32(&mut self, address: Address, offset: u16, value: u32);

    fn read16(&mut self, address: Address, offset: u16) -> u16 {
        (self.read32(address, offset & !3) >> (8 * (offset & 2))) as u16
    }

    fn read8(&mut self, address: Address, offset: u16) -> u8 {
        (self.read32(address, offset & !3) >> (8 * (offset & 3))) as u8
    }
}
