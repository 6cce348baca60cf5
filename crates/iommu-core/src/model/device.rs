//! DEVICE: binding from a verified grant, attaching, replacing and detaching its slots (the
//! requester ID or one PASID), SVA bindings, and the server-wide PASID space.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use iommu_abi::wire::{PASID_MAX, SVA_UNTAGGED};
use iommu_abi::{DeviceInfo, Error, Handle, Rights, UnitCaps};
use crate::budget::{self};
use crate::backend::{AddressSpace, IommuBackend, RequesterId, Translation, UnitId};
use crate::memory::MemorySource;
use crate::objects::{Attachment, Body, Device, ObjectId, ObjectKind};
use crate::ClientId;

use super::ObjectModel;

/// A device capability the server has already verified with the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceGrant {
    /// The unit the device sits behind.
    pub unit: UnitId,
    /// Its requester / stream ID.
    pub rid: RequesterId,
    /// PASID bits the device supports (0: none; at most 20).
    pub pasid_bits: u8,
}

/// Functions the IOMMU cannot isolate from each other (they share a DMA requester ID, or reach
/// each other peer-to-peer without ACS), named by the platform (`pci::groups`): they go to
/// one client. Functions sharing a requester ID are always in one group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IsolationGroup(pub u32);

impl<B: IommuBackend, M: MemorySource> ObjectModel<B, M> {
    /// Bind a verified device grant: the device starts blocked. Fails if bound already. For a
    /// platform that knows no isolation groups (each device is its own).
    pub fn device_bind(&mut self, client: ClientId, grant: DeviceGrant) -> Result<Handle, Error> {
        self.device_bind_in_group(client, grant, None)
    }

    /// `device_bind` of a device in isolation group `group`: refused with
    /// `IsolationGroupHeld` while another client holds a device of the group (the same client
    /// may bind several); `DeviceAlreadyBound` still answers for a requester ID that is bound.
    pub fn device_bind_in_group(&mut self, client: ClientId, grant: DeviceGrant, group: Option<IsolationGroup>) -> Result<Handle, Error> {
        self.check_handle_space(client)?;
        if self.backend.unit_info(grant.unit).is_none() {
            return Err(Error::BadCapability);
        }
        if self.bound_devices.contains_key(&(grant.unit, grant.rid)) {
            return Err(Error::DeviceAlreadyBound);
        }
        // A function of a group another client holds (its requester ID is not bound: that
        // was refused above, the same device to the IOMMU).
        if let Some(group) = group {
            let held_elsewhere = self
                .bound_devices
                .values()
                .any(|&id| self.device(id).group == Some(group) && self.objects[id].owner != client);
            if held_elsewhere {
                return Err(Error::IsolationGroupHeld);
            }
        }
        let reserved = self.backend.reserved_regions(grant.unit, grant.rid);
        self.charge_new_object(client, budget::device(reserved.len()))?;
        self.backend.block(grant.unit, grant.rid, None);
        let device = Device {
            unit: grant.unit,
            rid: grant.rid,
            pasid_bits: grant.pasid_bits.min(20),
            group,
            label: Handle(0),
            reserved,
            attachments: BTreeMap::new(),
        };
        let handle = self.create(client, Body::Device(device));
        let id = self.client(client).expect("the client just created it").handles[handle.0].object;
        self.device_mut(id).label = handle;
        self.bound_devices.insert((grant.unit, grant.rid), id);
        Ok(handle)
    }

    /// Check that `client` may use `pasid` on `device`.
    fn check_pasid(&self, client: ClientId, device: ObjectId, pasid: Option<u32>) -> Result<(), Error> {
        let Some(pasid) = pasid else { return Ok(()) };
        if self.pasid_owners.get(&pasid) != Some(&client) {
            return Err(Error::NoSuchPasid);
        }
        let device = self.device(device);
        if !self.unit_caps(device.unit).contains(UnitCaps::PASID) {
            return Err(Error::NotSupported);
        }
        if device.pasid_bits == 0 || pasid >> device.pasid_bits != 0 {
            return Err(Error::PasidOutOfRange);
        }
        Ok(())
    }

    /// Checks shared by attach and replace: same unit, PASID, reserved regions vs mappings.
    fn check_attach_target(&self, client: ClientId, device: ObjectId, hwpt: ObjectId, pasid: Option<u32>) -> Result<(), Error> {
        if self.hwpt(hwpt).unit != self.device(device).unit {
            return Err(Error::IncompatibleUnit);
        }
        self.check_pasid(client, device, pasid)?;
        let ioas = self.root_ioas(hwpt);
        let collides = self
            .device(device)
            .reserved
            .iter()
            .any(|region| self.ioas(ioas).overlaps_area(&region.range));
        if collides {
            return Err(Error::ReservedConflict);
        }
        Ok(())
    }

    /// Attach the device (or its PASID) to an HWPT. Needs ATTACH on both.
    pub fn device_attach(&mut self, client: ClientId, device: Handle, hwpt: Handle, pasid: Option<u32>) -> Result<(), Error> {
        let device = self.resolve(client, device, ObjectKind::Device, Rights::ATTACH)?;
        let hwpt = self.resolve(client, hwpt, ObjectKind::Hwpt, Rights::ATTACH)?;
        self.check_attach_target(client, device, hwpt, pasid)?;
        if self.device(device).attachments.contains_key(&pasid) {
            return Err(Error::AlreadyAttached);
        }
        let (unit, rid) = (self.device(device).unit, self.device(device).rid);
        let owner = self.objects[device].owner;
        self.charge(owner, budget::ATTACHMENT)?;
        if let Err(error) = self.backend.attach(unit, rid, pasid, Translation::Domain(self.hwpt(hwpt).domain.id)) {
            self.refund(owner, budget::ATTACHMENT);
            return Err(error);
        }
        self.device_mut(device).attachments.insert(pasid, Attachment::Hwpt(hwpt));
        self.topology_epoch += 1;
        Ok(())
    }

    /// Switch the attached device (or PASID) to another HWPT; the hardware switches
    /// atomically, then the old attachment is released. Needs ATTACH on both.
    pub fn device_replace(&mut self, client: ClientId, device: Handle, hwpt: Handle, pasid: Option<u32>) -> Result<(), Error> {
        let device = self.resolve(client, device, ObjectKind::Device, Rights::ATTACH)?;
        let hwpt = self.resolve(client, hwpt, ObjectKind::Hwpt, Rights::ATTACH)?;
        let old = *self.device(device).attachments.get(&pasid).ok_or(Error::NotAttached)?;
        self.check_attach_target(client, device, hwpt, pasid)?;
        if old == Attachment::Hwpt(hwpt) {
            return Ok(());
        }
        let (unit, rid) = (self.device(device).unit, self.device(device).rid);
        self.backend.replace(unit, rid, pasid, Translation::Domain(self.hwpt(hwpt).domain.id))?;
        self.device_mut(device).attachments.insert(pasid, Attachment::Hwpt(hwpt));
        self.topology_epoch += 1;
        // The old domain's page requests are answered `Invalid` even when the new domain
        // reports to the same queue: a pager would resolve them in the old domain, and a
        // `Success` then makes the device retry in the new one, where nothing was mapped.
        let old_fault = self.attachment_fault(&old);
        self.abort_page_requests(old_fault, Some(device), Some(pasid));
        Ok(())
    }

    /// Detach the device (or PASID) from its HWPT: it is blocked. Needs ATTACH.
    pub fn device_detach(&mut self, client: ClientId, device: Handle, pasid: Option<u32>) -> Result<(), Error> {
        let device = self.resolve(client, device, ObjectKind::Device, Rights::ATTACH)?;
        match self.device(device).attachments.get(&pasid) {
            Some(Attachment::Hwpt(_)) => {
                self.release_attachment(device, pasid);
                Ok(())
            }
            _ => Err(Error::NotAttached),
        }
    }

    pub(super) fn attachment_fault(&self, attachment: &Attachment) -> Option<ObjectId> {
        match attachment {
            Attachment::Hwpt(hwpt) => self.hwpt(*hwpt).fault,
            Attachment::Sva { fault, .. } => *fault,
        }
    }

    /// Block the (device, PASID), forget the attachment, and answer the page requests it
    /// left behind.
    pub(super) fn release_attachment(&mut self, device: ObjectId, pasid: Option<u32>) {
        let (unit, rid) = (self.device(device).unit, self.device(device).rid);
        self.backend.block(unit, rid, pasid);
        let attachment = self.device_mut(device).attachments.remove(&pasid).expect("attachment exists");
        self.refund(self.objects[device].owner, budget::ATTACHMENT);
        self.topology_epoch += 1;
        let fault = self.attachment_fault(&attachment);
        self.abort_page_requests(fault, Some(device), Some(pasid));
    }

    /// Share a verified process address space with the device at `pasid`, or with its DMA
    /// without a PASID when `pasid` is [`SVA_UNTAGGED`] (VT-d's RID_PASID entry, SMMUv3's
    /// SubstreamID 0). Its faults go to `fault`, if named. Needs ATTACH on the device and the
    /// fault queue.
    pub fn sva_bind(&mut self, client: ClientId, device: Handle, pasid: u32, address_space: AddressSpace, fault: Option<Handle>) -> Result<(), Error> {
        let device = self.resolve(client, device, ObjectKind::Device, Rights::ATTACH)?;
        let fault = self.resolve_optional(client, fault, ObjectKind::Fault, Rights::ATTACH)?;
        let slot = sva_slot(pasid);
        self.check_pasid(client, device, slot)?;
        let (unit, rid) = (self.device(device).unit, self.device(device).rid);
        if !self.unit_caps(unit).contains(UnitCaps::SVA) {
            return Err(Error::NotSupported);
        }
        if self.device(device).attachments.contains_key(&slot) {
            return Err(Error::AlreadyAttached);
        }
        let owner = self.objects[device].owner;
        self.charge(owner, budget::ATTACHMENT)?;
        if let Err(error) = self.backend.attach(unit, rid, slot, Translation::ProcessAddressSpace(address_space)) {
            self.refund(owner, budget::ATTACHMENT);
            return Err(error);
        }
        self.device_mut(device).attachments.insert(slot, Attachment::Sva { address_space, fault });
        self.topology_epoch += 1;
        Ok(())
    }

    /// Undo `sva_bind`: the PASID (or, for [`SVA_UNTAGGED`], the device) is blocked. Needs
    /// ATTACH.
    pub fn sva_unbind(&mut self, client: ClientId, device: Handle, pasid: u32) -> Result<(), Error> {
        let device = self.resolve(client, device, ObjectKind::Device, Rights::ATTACH)?;
        let slot = sva_slot(pasid);
        match self.device(device).attachments.get(&slot) {
            Some(Attachment::Sva { .. }) => {
                self.release_attachment(device, slot);
                Ok(())
            }
            _ => Err(Error::NotAttached),
        }
    }

    /// Describe the device's unit. Needs no right.
    /// The unit and requester ID of `client`'s device `device`, for the platform to route the
    /// device's interrupts (`msi_alloc`): interrupts go with the right to attach. Needs ATTACH.
    pub fn device_interrupt_source(&self, client: ClientId, device: Handle) -> Result<(UnitId, RequesterId), Error> {
        let device = self.device(self.resolve(client, device, ObjectKind::Device, Rights::ATTACH)?);
        Ok((device.unit, device.rid))
    }

    pub fn get_info(&self, client: ClientId, device: Handle) -> Result<DeviceInfo, Error> {
        let device = self.device(self.resolve(client, device, ObjectKind::Device, Rights::empty())?);
        let info = self.backend.unit_info(device.unit).ok_or(Error::NotSupported)?;
        Ok(DeviceInfo { unit: device.unit.0, kind: info.kind, caps: info.caps, pasid_bits: device.pasid_bits })
    }

    // ----- PASIDs -----

    /// Allocate a server-wide unique PASID (never 0, not reused until the allocator has
    /// gone round the whole space).
    pub fn pasid_alloc(&mut self, client: ClientId) -> Result<u32, Error> {
        self.client(client)?;
        let max = self.config.max_pasid.min(PASID_MAX);
        let mut candidate = self.last_pasid;
        let mut found = None;
        for _ in 0..max {
            candidate = if candidate >= max { 1 } else { candidate + 1 };
            if !self.pasid_owners.contains_key(&candidate) {
                found = Some(candidate);
                break;
            }
        }
        let candidate = found.ok_or(Error::PasidExhausted)?;
        self.charge(client, budget::PASID)?;
        self.last_pasid = candidate;
        self.pasid_owners.insert(candidate, client);
        self.clients.get_mut(client).expect("checked").pasids.insert(candidate);
        Ok(candidate)
    }

    fn pasid_in_use(&self, pasid: u32) -> bool {
        self.objects.values().any(|object| matches!(&object.body, Body::Device(device) if device.attachments.contains_key(&Some(pasid))))
    }

    /// Free a PASID the client allocated and no longer uses.
    pub fn pasid_free(&mut self, client: ClientId, pasid: u32) -> Result<(), Error> {
        self.client(client)?;
        if self.pasid_owners.get(&pasid) != Some(&client) {
            return Err(Error::NoSuchPasid);
        }
        if self.pasid_in_use(pasid) {
            return Err(Error::Busy);
        }
        self.pasid_owners.remove(&pasid);
        self.clients.get_mut(client).expect("checked").pasids.remove(&pasid);
        self.refund(client, budget::PASID);
        Ok(())
    }

    pub(super) fn teardown_device(&mut self, device: ObjectId) {
        let pasids: Vec<Option<u32>> = self.device(device).attachments.keys().copied().collect();
        for pasid in pasids {
            self.release_attachment(device, pasid);
        }
        self.free_unused(device);
    }
}

/// The attachment slot `sva_bind` / `sva_unbind` mean by `pasid`.
fn sva_slot(pasid: u32) -> Option<u32> {
    (pasid != SVA_UNTAGGED).then_some(pasid)
}
