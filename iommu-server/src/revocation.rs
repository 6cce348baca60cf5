//! Revocation reaching the IOMMU: the server's half of the kernel's pin revocation protocol
//! (`kernel_abi::Syscall::RevocationWatch`).
//!
//! The kernel signals `EVENTS` bit [`REVOCATION_EVENT_BIT`] when a pin of the server is
//! revoked because the client capability it was lent through went (revoked by the client or
//! by whoever granted it, deleted, the client ended). The event thread then reads the records:
//! * a memory pin (object serial, page range): the object model removes every area over those
//!   pages and every registration of the object (unmapped from every domain, which
//!   invalidates, then unpinned), after which the kernel pin is released and the frames may
//!   return to the pool. Until then the pin keeps them out of reuse.
//! * a device watch (`cap_watch`, taken when a device is bound): the device is blocked and
//!   unbound at once.
//! * an address-space watch (`address_space_watch`, taken for `sva_bind`): a change record
//!   (serial `ADDRESS_SPACE_CHANGE`, a virtual page range the process unmapped) is
//!   invalidated on every unit the address space is bound on, and only then acknowledged, after
//!   which the kernel reuses the frames; a revoked watch (the process ended, or the capability
//!   went) blocks every binding of it, and the watch is released with its held frames.

use alloc::vec::Vec;
use iommu_core::{AddressSpaceChange, IommuBackend, MemoryObjectId, ObjectId, ObjectModel};
use kernel_abi::ADDRESS_SPACE_CHANGE;
use userlib::syscall::{self, RevocationRecord};
use userlib::println;

use crate::kernel_iface::{DeviceRegistry, KernelMemory};
use fwtables::dmar::pci::PciAddress;
use crate::layout::PAGE;
use crate::slots;

/// Bit of `EVENTS` the kernel signals when a pin is revoked: above the client bits and (arm)
/// the global-error bit.
pub const REVOCATION_EVENT_BIT: u64 = slots::MAX_CLIENTS + 2;
const _: () = assert!(REVOCATION_EVENT_BIT < 64);

/// Registers the event bit with the kernel (at bring-up).
pub fn watch() -> Result<(), kernel_abi::Error> {
    syscall::revocation_watch(slots::DMA_AUTHORITY, slots::EVENTS, REVOCATION_EVENT_BIT)
}

/// After a request: a watch taken during it belongs to the device the request bound, or to
/// none (the bind failed, or the device was bound already under another watch) and is
/// released; so are the watches of devices unbound since, and of address spaces no longer
/// bound. A refused bind leaves its function without bus mastering (verifying the capability
/// turned it on), unless that function is the bound one: behind a PCIe-to-PCI bridge its DMA
/// would carry the bound device's requester ID into that device's domain. Nothing to do, and
/// no kernel call, when the request took no watch.
pub fn settle<B: IommuBackend>(server: &ObjectModel<B, KernelMemory>, devices: &mut DeviceRegistry) {
    if !devices.address_spaces.is_empty() {
        settle_address_spaces(server, &mut devices.address_spaces);
    }
    let watches = &mut devices.watches;
    if watches.iter().all(|watch| watch.device.is_some()) {
        return;
    }
    // The functions of this request's binds that did not bind: their watches own nothing yet.
    let pending: Vec<u64> = watches.iter().filter(|watch| watch.device.is_none()).map(|watch| watch.pin).collect();
    // Watches that still own their device first, so that a new watch never adopts a device
    // another watch owns, whatever their order.
    for watch in watches.iter_mut() {
        if watch.device.is_some_and(|device| server.bound_device(watch.unit, watch.rid) != Some(device)) {
            watch.device = None;
        }
    }
    let mut owned: Vec<ObjectId> = watches.iter().filter_map(|watch| watch.device).collect();
    for watch in watches.iter_mut().filter(|watch| watch.device.is_none()) {
        watch.device = server.bound_device(watch.unit, watch.rid).filter(|device| !owned.contains(device));
        if let Some(device) = watch.device {
            owned.push(device);
        }
    }
    let kept: Vec<PciAddress> = watches.iter().filter(|watch| watch.device.is_some()).map(|watch| watch.function).collect();
    let mut refused: Vec<PciAddress> = Vec::new();
    // Two pending watches of one device: the first adopted it, the second is released.
    watches.retain(|watch| {
        if watch.device.is_none() {
            let _ = syscall::mem_unpin(watch.pin);
            if pending.contains(&watch.pin) && !kept.contains(&watch.function) {
                refused.push(watch.function);
            }
        }
        watch.device.is_some()
    });
    if let Some(ecam) = devices.ecam.as_mut() {
        for address in refused {
            if let Some(function) = devices.functions.iter().find(|f| f.address == address) {
                ecam.set_bus_master(function, false);
            }
        }
    }
}

/// Releases the watches of address spaces nothing is bound to (a failed `sva_bind`, an
/// unbind, a teardown): the kernel then stops holding their frames.
fn settle_address_spaces<B: IommuBackend>(server: &ObjectModel<B, KernelMemory>, pins: &mut Vec<u64>) {
    pins.retain(|&pin| {
        let bound = server.address_space_bound(pin);
        if !bound {
            let _ = syscall::mem_unpin(pin);
        }
        bound
    });
}

/// Reads every pending revocation record and acts on it (the event thread, under the lock).
pub fn process<B: IommuBackend>(server: &mut ObjectModel<B, KernelMemory>, devices: &mut DeviceRegistry) {
    let mut records = [RevocationRecord::default(); 16];
    loop {
        let count = match syscall::revocation_read(slots::DMA_AUTHORITY, &mut records) {
            Ok(count) => count,
            Err(error) => {
                println!("iommu-server: revocation_read failed: {error:?}");
                return;
            }
        };
        for record in &records[..count] {
            if record.serial == ADDRESS_SPACE_CHANGE {
                address_space_changed(server, record);
            } else if record.serial == 0 && devices.address_spaces.contains(&record.pin) {
                address_space_gone(server, devices, record.pin);
            } else if record.serial == 0 {
                revoke_device(server, devices, record.pin);
            } else {
                revoke_memory(server, record);
            }
        }
        if count < records.len() {
            settle_address_spaces(server, &mut devices.address_spaces);
            return;
        }
    }
}

/// A bound process unmapped pages: every unit it is bound on forgets them, then the kernel may
/// reuse their frames.
fn address_space_changed<B: IommuBackend>(server: &mut ObjectModel<B, KernelMemory>, record: &RevocationRecord) {
    let change = AddressSpaceChange::Shrunk { iova: record.first_page * PAGE, length: record.pages * PAGE };
    server.address_space_record(record.pin, change, || {
        if let Err(error) = syscall::address_space_ack(slots::DMA_AUTHORITY, record.pin) {
            println!("iommu-server: address_space_ack failed: {error:?}");
        }
    });
}

/// A bound process ended, or the capability it was bound with went: its bindings are blocked,
/// then the watch (and with it what the kernel held of the process) is released.
fn address_space_gone<B: IommuBackend>(server: &mut ObjectModel<B, KernelMemory>, devices: &mut DeviceRegistry, pin: u64) {
    let blocked = server.address_space_record(pin, AddressSpaceChange::Gone, || {
        let _ = syscall::mem_unpin(pin);
    });
    devices.address_spaces.retain(|&watched| watched != pin);
    println!("iommu-server: address space {pin} gone: {blocked} binding(s) blocked");
}

fn revoke_memory<B: IommuBackend>(server: &mut ObjectModel<B, KernelMemory>, record: &RevocationRecord) {
    let revoked = server.revoke_memory(MemoryObjectId(record.serial), record.first_page, record.pages);
    // Every page of the pin was used by an area now removed, so the object model released
    // the pin through `KernelMemory::unpin`. One still held would be a bug: it stays held
    // (its frames out of reuse) rather than being released under mappings.
    let held = server.memory().holds(record.pin);
    println!(
        "iommu-server: memory object {} pages {}..{} revoked: {} areas and {} registrations removed{}",
        record.serial,
        record.first_page,
        record.first_page + record.pages,
        revoked.areas,
        revoked.registrations,
        if held { "; its kernel pin is still in use" } else { "" }
    );
}

fn revoke_device<B: IommuBackend>(server: &mut ObjectModel<B, KernelMemory>, devices: &mut DeviceRegistry, pin: u64) {
    let Some(index) = devices.watches.iter().position(|watch| watch.pin == pin) else { return };
    let watch = devices.watches.swap_remove(index);
    let _ = syscall::mem_unpin(pin);
    let Some(device) = watch.device else { return };
    // Only the binding the capability was verified for: the device may have been unbound and
    // bound again by someone else since.
    if server.bound_device(watch.unit, watch.rid) == Some(device) {
        server.revoke_device(watch.unit, watch.rid);
        #[cfg(target_arch = "x86_64")]
        devices.release_stale_msis(server.backend());
        println!("iommu-server: device {:#x} capability revoked: blocked and unbound", watch.rid.0);
    }
}
