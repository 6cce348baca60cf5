//! The object model's kernel interfaces: client memory (`MemorySource`, over `mem_pin`) and
//! device grants (`CapabilityVerifier`, over `mmio_info` and the enumerated BARs).

use alloc::collections::BTreeMap;
use iommu_abi::Error;
use iommu_core::{AddressSpace, CapabilityVerifier, ClientId, DeviceGrant, MemoryObjectId, MemoryObjectInfo, MemorySource, PinnedPages, RequesterId, UnitId};
use kernel_abi::{ObjectType, Rights};
use userlib::{println, syscall};

use crate::discovery::{Ecam, PciFunction};
use crate::layout::PAGE;

/// The kernel has no size query for memory objects; `mem_pin` refuses pages past the end
/// (`OutOfRange`, reported as `OutOfObjectRange`), so the object model's size check is left to
/// the pin, which happens before anything is mapped.
const SIZE_CHECKED_BY_PIN: u64 = u64::MAX & !(PAGE - 1);

/// Client memory pinned through the kernel, one kernel pin per (object, page).
pub struct KernelMemory {
    authority: u64,
    pins: BTreeMap<(MemoryObjectId, u64), u64>,
    /// The capability slot `identify` looked at last and what it designates: `pin` is always
    /// called with the capability `identify` just vouched for.
    identified: Option<(u64, MemoryObjectId)>,
}

impl KernelMemory {
    pub fn new(authority: u64) -> Self {
        KernelMemory { authority, pins: BTreeMap::new(), identified: None }
    }

    /// Kernel pins held for client memory.
    pub fn kernel_pins(&self) -> usize {
        self.pins.len()
    }

    fn unpin_pages(&mut self, object: MemoryObjectId, pages: core::ops::Range<u64>) {
        for page in pages {
            if let Some(pin) = self.pins.remove(&(object, page)) {
                if let Err(error) = syscall::mem_unpin(pin) {
                    println!("iommu-server: unpin {pin} failed: {error:?}");
                }
            }
        }
    }
}

impl MemorySource for KernelMemory {
    fn identify(&mut self, _client: ClientId, memory: u64) -> Result<MemoryObjectInfo, Error> {
        self.identified = None;
        let (kind, rights, _badge) = syscall::cap_info(memory).map_err(|_| Error::BadCapability)?;
        let rights = Rights(rights);
        if ObjectType::from_u64(kind) != Some(ObjectType::Memory) || !rights.contains(Rights::READ) {
            return Err(Error::BadCapability);
        }
        // The physical address of page 0 names the object: frames are not reused while the
        // object lives, and it lives as long as any of its pages is pinned, which is as long
        // as the pin table remembers the identity.
        let (pin, phys) = syscall::mem_pin(self.authority, memory, 0).map_err(|_| Error::BadCapability)?;
        let _ = syscall::mem_unpin(pin);
        let id = MemoryObjectId(phys);
        self.identified = Some((memory, id));
        Ok(MemoryObjectInfo { id, size: SIZE_CHECKED_BY_PIN, writable: rights.contains(Rights::WRITE) })
    }

    fn pin(&mut self, _client: ClientId, memory: u64, offset: u64, length: u64) -> Result<PinnedPages, Error> {
        let Some((slot, object)) = self.identified.filter(|&(slot, _)| slot == memory) else {
            return Err(Error::BadCapability);
        };
        let first = offset / PAGE;
        let pages = length / PAGE;
        let mut frames = alloc::vec::Vec::with_capacity(pages as usize);
        for page in first..first + pages {
            match syscall::mem_pin(self.authority, slot, page) {
                Ok((pin, phys)) => {
                    self.pins.insert((object, page), pin);
                    frames.push(phys);
                }
                Err(error) => {
                    self.unpin_pages(object, first..page);
                    return Err(match error {
                        kernel_abi::Error::OutOfRange => Error::OutOfObjectRange,
                        kernel_abi::Error::OutOfMemory => Error::NoResources,
                        _ => Error::BadCapability,
                    });
                }
            }
        }
        Ok(PinnedPages { frames })
    }

    fn unpin(&mut self, object: MemoryObjectId, offset: u64, length: u64) {
        self.unpin_pages(object, offset / PAGE..(offset + length) / PAGE);
    }
}

/// Device grants: an MMIO capability of exactly one enumerated BAR names that function.
pub struct DeviceRegistry {
    pub functions: alloc::vec::Vec<PciFunction>,
    pub ecam: Option<Ecam>,
    /// The PCI memory window (base, size): device capabilities must lie inside it.
    pub pci_window: Option<(u64, u64)>,
}

impl DeviceRegistry {
    /// The function owning the BAR `[base, base + size)` exactly, if any.
    pub fn function_with_bar(&self, base: u64, size: u64) -> Option<&PciFunction> {
        self.functions.iter().find(|f| f.bars.iter().any(|bar| bar.base == base && bar.size == size))
    }
}

impl CapabilityVerifier for DeviceRegistry {
    fn device_grant(&mut self, _client: ClientId, cap: u64) -> Result<DeviceGrant, Error> {
        let (kind, _, _) = syscall::cap_info(cap).map_err(|_| Error::BadCapability)?;
        if ObjectType::from_u64(kind) != Some(ObjectType::Mmio) {
            return Err(Error::BadCapability);
        }
        let (base, size) = syscall::mmio_info(cap).map_err(|_| Error::BadCapability)?;
        let (window_base, window_size) = self.pci_window.ok_or(Error::BadCapability)?;
        if base < window_base || base.saturating_add(size) > window_base + window_size {
            return Err(Error::BadCapability);
        }
        let function = self.function_with_bar(base, size).ok_or(Error::BadCapability)?;
        let unit = function.unit.ok_or(Error::BadCapability)?;
        let (address, rid) = (function.address, function.requester_id());
        // The device's DMA is blocked by the IOMMU from here on until its owner attaches it,
        // so enabling bus mastering (without which it cannot DMA at all) is safe now.
        if let Some(ecam) = self.ecam.as_mut() {
            ecam.set_bus_master(address, true);
        }
        Ok(DeviceGrant { unit: UnitId(unit as u32), rid: RequesterId(u32::from(rid)), pasid_bits: 0 })
    }

    fn address_space(&mut self, _client: ClientId, _cap: u64) -> Result<AddressSpace, Error> {
        // No unit is offered SVA (UnitCaps without SVA).
        Err(Error::NotSupported)
    }
}
