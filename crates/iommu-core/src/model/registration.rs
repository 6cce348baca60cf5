//! MEMORY: a memory object registered once (verified and pinned whole) and mapped from by
//! handle with no kernel work per map.

use alloc::vec::Vec;
use iommu_abi::{Error, Handle, IovaChoice, Perm, Rights, PAGE_SIZE};
use crate::budget::{self};
use crate::backend::IommuBackend;
use slot_table::SlotTable;
use crate::memory::MemorySource;
use crate::objects::{Area, Body, Object, ObjectId, ObjectKind, Registration};
use crate::ClientId;

use super::ObjectModel;
use super::ioas::{check_map_range, check_within_object, ioas_in_mut, map_segments, owned_ioas_in, place, Segment};

#[inline]
fn registration_in(objects: &SlotTable<ObjectId, Object>, id: ObjectId) -> &Registration {
    match &objects[id].body {
        Body::Memory(registration) => registration,
        _ => panic!("object {id:?} is not registered memory"),
    }
}

impl<B: IommuBackend, M: MemorySource> ObjectModel<B, M> {
    /// Register the memory object `memory` (a capability received from `client`) for
    /// `ioas_map_registered`: the kernel vouches for it once, and its pages stay pinned until
    /// the registration and the last mapping from it are gone.
    pub fn memory_register(&mut self, client: ClientId, memory: u64) -> Result<Handle, Error> {
        self.check_handle_space(client)?;
        let info = self.memory.identify(client, memory)?;
        if info.size == 0 {
            return Err(Error::ZeroLength);
        }
        let charge = budget::registration(info.size / PAGE_SIZE);
        self.charge_new_object(client, charge)?;
        let frames = match self.pins.acquire(&mut self.memory, client, memory, info.id, 0, info.size) {
            Ok(frames) => frames,
            Err(error) => {
                self.refund_new_object(client, charge);
                return Err(error);
            }
        };
        let registration = Registration { object: info.id, size: info.size, writable: info.writable, frames, mappings: 0 };
        Ok(self.create(client, Body::Memory(registration)))
    }

    /// `ioas_map` from registered memory: the same checks and placement, the pages are already
    /// pinned. Needs MAP on both handles.
    #[allow(clippy::too_many_arguments)]
    pub fn ioas_map_registered(
        &mut self,
        client: ClientId,
        ioas: Handle,
        memory: Handle,
        offset: u64,
        length: u64,
        choice: IovaChoice,
        perm: Perm,
    ) -> Result<u64, Error> {
        let ioas = self.resolve(client, ioas, ObjectKind::Ioas, Rights::MAP)?;
        let memory = self.resolve(client, memory, ObjectKind::Memory, Rights::MAP)?;
        let object_end = check_map_range(perm, offset, length)?;
        self.refresh_summary(ioas);
        let ObjectModel { objects, backend, clients, .. } = self;
        let registration = registration_in(objects, memory);
        check_within_object(object_end, registration.size, registration.writable, perm)?;
        let (owner, target) = owned_ioas_in(objects, ioas);
        let range = place(target, choice, length)?;
        let pages = (offset / PAGE_SIZE) as usize..(object_end / PAGE_SIZE) as usize;
        let segment = Segment { iova: range.start, frames: &registration.frames[pages], perm };
        let account = &mut clients.get_mut(owner).expect("owners are live").account;
        let area_bytes = budget::area_bytes(length, true);
        account.charge_areas(1, area_bytes)?;
        if let Err(error) = map_segments(backend, &target.summary().domains, core::slice::from_ref(&segment)) {
            account.refund_areas(1, area_bytes);
            return Err(error);
        }
        let object = registration.object;
        if let Body::Memory(registration) = &mut objects.get_mut(memory).expect("resolved above").body {
            registration.mappings += 1;
        }
        ioas_in_mut(objects, ioas).areas.insert(range.start, Area { range, object, offset, perm, registration: Some(memory) });
        Ok(range.start)
    }

    /// Destroy a registration even if mapped: the areas mapped from it (in other clients'
    /// IOASes, when it was shared) are unmapped first.
    pub(super) fn teardown_registration(&mut self, memory: ObjectId) {
        let users: Vec<(ObjectId, u64)> = self
            .objects
            .iter()
            .filter_map(|(id, object)| match &object.body {
                Body::Ioas(ioas) => Some(ioas.areas.values().filter(|area| area.registration == Some(memory)).map(|area| (id, area.range.start)).collect::<Vec<_>>()),
                _ => None,
            })
            .flatten()
            .collect();
        for (ioas, start) in users {
            self.remove_area(ioas, start);
        }
        self.free_unused(memory);
    }
}
