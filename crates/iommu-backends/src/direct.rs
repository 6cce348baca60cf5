//! Firmware-required identity maps (VT-d RMRR, IORT RMR), shared by both backends.
//!
//! Firmware names memory a device keeps using on its own (a USB controller's legacy keyboard
//! buffer, a GPU's stolen memory): the device must reach it at IOVA == physical address in
//! whatever domain it is attached to, or it breaks. Such a *direct device* is therefore never
//! left without those maps:
//!
//! * From takeover on it is attached to a private domain of its own that maps only its
//!   regions: the blocking domain of a direct device (everything else faults).
//! * Attaching or replacing it into a domain first maps its regions there (unless another
//!   direct device attached to that domain already did), then switches the device, then drops
//!   its regions from the domain it left once no other direct device there needs them.
//! * Blocking it (detach, unbind, its owner gone) switches it back to its private domain.
//!
//! The object model never maps over a direct region (it reserves the regions of every attached
//! device and refuses an attach whose regions collide with a mapping), so the identity maps and
//! the clients' mappings never meet.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use iommu_abi::{Error, IovaRange, Perm, PAGE_SIZE};
use iommu_core::{HwDomainId, IommuBackend};

/// One direct device: its regions, its private domain and where its requester slot points.
struct DirectDevice {
    /// Page-aligned, inclusive.
    regions: Vec<IovaRange>,
    private: HwDomainId,
    current: HwDomainId,
}

/// The direct devices of a backend and which of their regions each domain maps for them.
#[derive(Default)]
pub(crate) struct DirectMaps {
    /// By (unit index, requester ID).
    devices: BTreeMap<(usize, u32), DirectDevice>,
    /// (domain, region start, region last) → attached direct devices that need it mapped there.
    users: BTreeMap<(HwDomainId, u64, u64), usize>,
}

impl DirectMaps {
    /// The private domain of a direct device.
    pub(crate) fn private_domain(&self, unit: usize, rid: u32) -> Option<HwDomainId> {
        self.devices.get(&(unit, rid)).map(|device| device.private)
    }

    /// Counts one more user of `region` in `domain`; true if it is the first (map it).
    fn take(&mut self, domain: HwDomainId, region: IovaRange) -> bool {
        let users = self.users.entry((domain, region.start, region.last)).or_insert(0);
        *users += 1;
        *users == 1
    }

    /// Counts one user fewer of `region` in `domain`; true if it was the last (unmap it).
    fn give_back(&mut self, domain: HwDomainId, region: IovaRange) -> bool {
        let key = (domain, region.start, region.last);
        match self.users.get_mut(&key) {
            Some(users) if *users > 1 => {
                *users -= 1;
                false
            }
            Some(_) => {
                self.users.remove(&key);
                true
            }
            None => false,
        }
    }
}

/// A backend that keeps direct devices.
pub(crate) trait DirectMapped: IommuBackend {
    fn direct_maps(&mut self) -> &mut DirectMaps;
    /// A fresh, empty paging domain on `unit` that maps nothing else (no MSI doorbells).
    fn allocate_private(&mut self, unit: usize) -> Result<HwDomainId, Error>;
    /// Points the requester slot (no PASID) of `rid` at `domain`, nothing more.
    fn point(&mut self, unit: usize, rid: u32, domain: HwDomainId) -> Result<(), Error>;
}

/// The inclusive firmware range rounded out to whole pages (firmware rounds it, or its
/// parser warned that it did not).
fn page_range(start: u64, last: u64) -> IovaRange {
    IovaRange { start: start & !(PAGE_SIZE - 1), last: last | (PAGE_SIZE - 1) }
}

/// Maps `regions` at their own address in `domain`; on failure nothing of them stays mapped.
fn map_identity<B: DirectMapped>(backend: &mut B, domain: HwDomainId, regions: &[IovaRange]) -> Result<(), Error> {
    for (index, region) in regions.iter().enumerate() {
        if let Err(error) = backend.map(domain, region.start, region.start, region.last - region.start + 1, Perm::READ_WRITE) {
            for done in &regions[..index] {
                backend.unmap(domain, done.start, done.last - done.start + 1);
            }
            return Err(error);
        }
    }
    Ok(())
}

/// Makes `rid` a direct device with the inclusive ranges `ranges`: its private domain maps
/// them, and it is attached there at once.
pub(crate) fn add_device<B: DirectMapped>(backend: &mut B, unit: usize, rid: u32, ranges: &[(u64, u64)]) -> Result<(), Error> {
    let mut regions: Vec<IovaRange> = ranges.iter().map(|&(start, last)| page_range(start, last)).collect();
    regions.sort_by_key(|region| region.start);
    regions.dedup();
    let private = backend.allocate_private(unit)?;
    if let Err(error) = map_identity(backend, private, &regions) {
        backend.domain_free(private);
        return Err(error);
    }
    if let Err(error) = backend.point(unit, rid, private) {
        for region in &regions {
            backend.unmap(private, region.start, region.last - region.start + 1);
        }
        backend.domain_free(private);
        return Err(error);
    }
    backend.direct_maps().devices.insert((unit, rid), DirectDevice { regions, private, current: private });
    Ok(())
}

/// Attaches (or replaces) the requester slot of `rid` to `domain`, a direct device's regions
/// mapped there first and dropped from the domain it leaves after. On error the device stays
/// where it was and `domain` maps what it mapped before.
pub(crate) fn switch<B: DirectMapped>(backend: &mut B, unit: usize, rid: u32, domain: HwDomainId) -> Result<(), Error> {
    let maps = backend.direct_maps();
    let Some(device) = maps.devices.get(&(unit, rid)) else { return backend.point(unit, rid, domain) };
    let (regions, private, old) = (device.regions.clone(), device.private, device.current);
    if old == domain {
        return backend.point(unit, rid, domain);
    }
    let mut fresh = Vec::new();
    if domain != private {
        for &region in &regions {
            if backend.direct_maps().take(domain, region) {
                fresh.push(region);
            }
        }
    }
    let result = map_identity(backend, domain, &fresh).and_then(|()| {
        backend.point(unit, rid, domain).inspect_err(|_| {
            for region in &fresh {
                backend.unmap(domain, region.start, region.last - region.start + 1);
            }
        })
    });
    if let Err(error) = result {
        if domain != private {
            for &region in &regions {
                backend.direct_maps().give_back(domain, region);
            }
        }
        return Err(error);
    }
    backend.direct_maps().devices.get_mut(&(unit, rid)).expect("looked up above").current = domain;
    if old != private {
        for &region in &regions {
            if backend.direct_maps().give_back(old, region) {
                backend.unmap(old, region.start, region.last - region.start + 1);
            }
        }
    }
    Ok(())
}

/// Blocks a direct device: back to its private domain. False for any other device (the
/// caller blocks it its own way).
pub(crate) fn block<B: DirectMapped>(backend: &mut B, unit: usize, rid: u32) -> bool {
    let Some(private) = backend.direct_maps().private_domain(unit, rid) else { return false };
    if let Err(error) = switch(backend, unit, rid, private) {
        panic!("FATAL: returning direct device {rid:#06x} to its private domain failed ({error:?}); it may still reach released memory");
    }
    true
}
