//! Revocation reaching the IOMMU: what the server does when the kernel reports a pin or a
//! device capability revoked.
//!
//! The server keeps no capability to client memory, only the kernel's pins, each lent through
//! the client's capability. When that capability goes (revoked by the client or by whoever
//! granted it, deleted, or the client ended), the kernel reports the pin: an object and a page
//! range. The frames stay held until the server has unmapped every area using those pages from
//! every domain (the backend's unmap invalidates the IOTLB before it returns) and unpinned.
//! Likewise a device whose capability went is blocked and unbound.
//!
//! A page is pinned once whoever maps it ([`crate::PinTable`]), so when its pin is revoked every
//! area over the page goes, whichever client made it: the server can no longer show that anyone
//! lent it. A client that still holds the memory maps it again (a fresh pin, lent through its
//! own capability). The owner of a removed area learns of it from the device's next access
//! there, which faults into its fault queue, and from its later `ioas_unmap` of the range,
//! which answers `NotMapped`; a removed registration's handle answers `NoSuchObject`.

use alloc::vec::Vec;
use iommu_abi::PAGE_SIZE;

use crate::backend::IommuBackend;
use crate::memory::{MemoryObjectId, MemorySource};
use crate::objects::{Body, ObjectId};
use crate::{RequesterId, UnitId};

use super::ObjectModel;

/// What a revocation removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Revoked {
    /// Areas unmapped (including those mapped from a removed registration).
    pub areas: usize,
    /// Registrations removed.
    pub registrations: usize,
}

impl<B: IommuBackend, M: MemorySource> ObjectModel<B, M> {
    /// Removes everything backed by pages `[first_page, first_page + pages)` of `object`, in
    /// every client: each area over those pages (unmapped from every domain of its IOAS, which
    /// invalidates, then its pages released), and each registration of the object with the
    /// areas mapped from it (a registration pins the whole object). When this returns, no
    /// domain maps those pages and the server holds no pin of them.
    pub fn revoke_memory(&mut self, object: MemoryObjectId, first_page: u64, pages: u64) -> Revoked {
        let start = first_page.saturating_mul(PAGE_SIZE);
        let end = first_page.saturating_add(pages).saturating_mul(PAGE_SIZE);
        let mut areas: Vec<(ObjectId, u64)> = Vec::new();
        let mut registrations: Vec<ObjectId> = Vec::new();
        for (id, entry) in self.objects.iter() {
            match &entry.body {
                Body::Ioas(ioas) => areas.extend(
                    ioas.areas
                        .values()
                        .filter(|area| area.registration.is_none() && area.object == object)
                        .filter(|area| area.offset < end && start < area.offset + area.length())
                        .map(|area| (id, area.range.start)),
                ),
                Body::Memory(registration) if registration.object == object => registrations.push(id),
                _ => {}
            }
        }
        let mut revoked = Revoked { areas: areas.len(), registrations: registrations.len() };
        for (ioas, start) in areas {
            self.remove_area(ioas, start);
        }
        for registration in registrations {
            let mapped = match &self.objects[registration].body {
                Body::Memory(registration) => registration.mappings,
                _ => unreachable!("collected as a registration"),
            };
            revoked.areas += mapped as usize;
            self.teardown_registration(registration);
        }
        revoked
    }

    /// The device object bound as `rid` behind `unit`, if any.
    pub fn bound_device(&self, unit: UnitId, rid: RequesterId) -> Option<ObjectId> {
        self.bound_devices.get(&(unit, rid)).copied()
    }

    /// Blocks and unbinds the device `rid` behind `unit`, whoever bound it, because the
    /// capability it was bound with went: every attachment is released (the device blocked)
    /// and the device object and its handles removed. False if no client had it bound.
    pub fn revoke_device(&mut self, unit: UnitId, rid: RequesterId) -> bool {
        match self.bound_devices.get(&(unit, rid)).copied() {
            Some(device) => {
                self.teardown_device(device);
                true
            }
            None => false,
        }
    }
}
