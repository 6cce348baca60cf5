//! arm: a driver's MSIs through the server (`msi_alloc`) with a GICv3 ITS.
//!
//! The device tree's `msi-map` says as which DeviceID the ITS sees each requester ID. For
//! `msi_alloc(device, count, first_slot)` (the object model checked the caller may attach the
//! device) the kernel maps EventIDs `0..count` of that DeviceID to LPIs (`msi_route`) and hands
//! the server one IRQ capability per event; the server programs the device's MSI capability
//! with GITS_TRANSLATER's address and data 0 (multiple-message MSI puts the message number in
//! the low data bits: EventID i), and copies the capabilities into the caller's slots with
//! CONTROL only. The ITS drops any other EventID the device writes, and the SMMU maps only the
//! doorbell page into domains, so a device raises its own MSIs and nothing else.
//!
//! A route lives as long as the device stays bound: after every request and every event the
//! server handles, the MSIs of devices no longer bound are released ([`ItsMsis::release_stale`]):
//! the device's MSI off, the driver's capabilities revoked, the ITS mapping gone
//! (`msi_unroute`, which also retires the IRQ objects), the server's slots free again.
//! Meanwhile the device is blocked by the SMMU, doorbell included, so nothing is raised in
//! between.
//!
//! With a GICv2m frame instead of an ITS, `msi_alloc` is refused (NotSupported): GICv2m cannot
//! tell devices apart (see `arm::bring_up`).

use alloc::vec::Vec;
use fwtables::dmar::pci::PciAddress;
use iommu_abi::Error;
use iommu_core::{ClientId, RequesterId, UnitId};
use kernel_abi::Rights;
use userlib::{println, syscall};

use super::devicetree::MsiMapEntry;
use crate::msi::ConfigSpace;
use crate::slots;

/// GITS_TRANSLATER's offset from the ITS base (IHI 0069 12.19: the second 64 KiB frame).
pub const GITS_TRANSLATER_OFFSET: u64 = 0x1_0040;

/// A device's routed MSIs and the server slots holding their capabilities.
struct ItsGrant {
    unit: UnitId,
    rid: RequesterId,
    /// The function whose MSI capability was programmed (several may share `rid`).
    function: PciAddress,
    device_id: u32,
    slots: Vec<u64>,
}

pub struct ItsMsis {
    /// GITS_TRANSLATER's physical address; `None` without an ITS (GICv2m).
    translater: Option<u64>,
    /// Requester ID → DeviceID, from the host bridge's `msi-map` entries naming the ITS.
    msi_map: Vec<MsiMapEntry>,
    grants: Vec<ItsGrant>,
    /// Server slots free for routed capabilities.
    free_slots: Vec<u64>,
    /// Requester IDs whose DeviceID the IORT disputes (`disputed_msi_device_ids`): no MSIs.
    disputed: Vec<u32>,
}

impl ItsMsis {
    pub fn new(translater: Option<u64>, msi_map: Vec<MsiMapEntry>, disputed: Vec<u32>) -> ItsMsis {
        let free_slots = (slots::ITS_MSI_FIRST..slots::ITS_MSI_FIRST + slots::ITS_MSI_COUNT).rev().collect();
        ItsMsis { translater, msi_map, grants: Vec::new(), free_slots, disputed }
    }

    /// `msi_alloc` (module documentation).
    #[allow(clippy::too_many_arguments)] // the request's fields, plus where to program it
    pub fn allocate(&mut self, mut config: ConfigSpace<'_>, client: ClientId, unit: UnitId, rid: RequesterId, function: PciAddress, count: u32, first_slot: u64) -> Result<(), Error> {
        let translater = self.translater.ok_or(Error::NotSupported)?;
        // A device's MSI capability holds one address and one block of data values.
        if self.grants.iter().any(|grant| grant.unit == unit && grant.rid == rid) {
            return Err(Error::Busy);
        }
        if !count.is_power_of_two() {
            return Err(Error::InvalidRange);
        }
        if self.disputed.contains(&rid.0) {
            return Err(Error::NotSupported);
        }
        let device_id = self.msi_map.iter().find_map(|entry| entry.device_of(rid.0)).ok_or(Error::NotSupported)?;
        if self.free_slots.len() < count as usize {
            return Err(Error::NoResources);
        }
        // Consecutive free slots: take the block at the top of the free list if it is one.
        let first = slots::ITS_MSI_FIRST + (0..=slots::ITS_MSI_COUNT - u64::from(count)).find(|&start| (start..start + u64::from(count)).all(|s| self.free_slots.contains(&(slots::ITS_MSI_FIRST + s)))).ok_or(Error::NoResources)?;
        let taken: Vec<u64> = (first..first + u64::from(count)).collect();
        syscall::msi_route(slots::DMA_AUTHORITY, device_id, count, first).map_err(|error| {
            println!("iommu-server: rid {:#06x}: the kernel routed no MSIs for DeviceID {device_id:#x}: {error:?}", rid.0);
            Error::NoResources
        })?;
        self.free_slots.retain(|slot| !taken.contains(slot));
        let grant = ItsGrant { unit, rid, function, device_id, slots: taken };
        let undo = |grant: ItsGrant, config: &mut ConfigSpace<'_>, free: &mut Vec<u64>| {
            config.disable_msi(grant.function);
            release(grant, free);
        };
        if let Err(error) = config.program_msi(function, translater as u32, 0, count) {
            undo(grant, &mut config, &mut self.free_slots);
            return Err(error);
        }
        let process = slots::CLIENT_PROCESS_BASE + client.0;
        for (offset, &slot) in grant.slots.iter().enumerate() {
            if syscall::cap_grant(process, slot, first_slot.wrapping_add(offset as u64), Rights::CONTROL).is_err() {
                // The slot is taken or out of range: undo everything this request did.
                undo(grant, &mut config, &mut self.free_slots);
                return Err(Error::BadCapability);
            }
        }
        println!("iommu-server: rid {:#06x}: {count} MSIs as DeviceID {device_id:#x}, EventIDs 0..{count}, doorbell {translater:#x}", rid.0);
        self.grants.push(grant);
        Ok(())
    }

    /// Releases the MSIs of every device `bound` says is no longer bound (module documentation).
    pub fn release_stale(&mut self, mut config: ConfigSpace<'_>, bound: impl Fn(UnitId, RequesterId) -> bool) {
        let mut index = 0;
        while index < self.grants.len() {
            let grant = &self.grants[index];
            if bound(grant.unit, grant.rid) {
                index += 1;
                continue;
            }
            let grant = self.grants.swap_remove(index);
            config.disable_msi(grant.function);
            println!("iommu-server: device {:#06x}: its MSIs (DeviceID {:#x}) unmapped from the ITS", grant.rid.0, grant.device_id);
            release(grant, &mut self.free_slots);
        }
    }

    /// Whether MSIs can be handed out (an ITS is in use).
    pub fn isolated(&self) -> bool {
        self.translater.is_some()
    }

    pub fn has_grants(&self) -> bool {
        !self.grants.is_empty()
    }
}

/// Revokes the copies handed out, unmaps the device in the ITS and frees the server's slots.
fn release(grant: ItsGrant, free_slots: &mut Vec<u64>) {
    for &slot in &grant.slots {
        let _ = syscall::cap_revoke(slot);
    }
    if let Err(error) = syscall::msi_unroute(slots::DMA_AUTHORITY, grant.device_id) {
        println!("iommu-server: DeviceID {:#x}: msi_unroute failed: {error:?}", grant.device_id);
    }
    for slot in grant.slots {
        let _ = syscall::cap_delete(slot);
        free_slots.push(slot);
    }
}
