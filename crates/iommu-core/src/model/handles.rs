//! Clients and their handle tables: opening and closing a client, resolving a handle (type
//! and rights), deriving, accepting, revoking, and destroying the object a handle names.

use alloc::vec::Vec;
use iommu_abi::{Error, Handle, Rights};
use crate::budget::{self, ClientLimits, Usage};
use crate::backend::IommuBackend;
use crate::memory::MemorySource;
use crate::objects::{Area, Body, Client, HandleEntry, HandleRef, HwptParent, Object, ObjectId, ObjectKind};
use crate::ClientId;

use super::ObjectModel;

impl<B: IommuBackend, M: MemorySource> ObjectModel<B, M> {
    /// Register a client (a driver connection) under the configured limits
    /// (`ServerConfig::limits`). Returns false if it was already open or its id is not below
    /// `ServerConfig::max_clients`.
    pub fn open_client(&mut self, client: ClientId) -> bool {
        self.open_client_with_limits(client, self.config.limits)
    }

    /// `open_client` with limits of the client's own (the system description's for it).
    pub fn open_client_with_limits(&mut self, client: ClientId, limits: ClientLimits) -> bool {
        if client.0 >= self.config.max_clients || self.clients.get(client).is_some() {
            return false;
        }
        self.clients.open(client, limits);
        true
    }

    /// The limits `client` was opened with (`None` for an unknown client).
    pub fn limits(&self, client: ClientId) -> Option<ClientLimits> {
        self.clients.get(client).map(|c| c.account.limits)
    }

    pub(super) fn client(&self, client: ClientId) -> Result<&Client, Error> {
        self.clients.get(client).ok_or(Error::NoSuchClient)
    }

    pub(super) fn lookup(&self, client: ClientId, handle: Handle) -> Result<(ObjectId, Rights), Error> {
        let entry = self.client(client)?.handles.get(handle.0).ok_or(Error::NoSuchObject)?;
        Ok((entry.object, entry.rights))
    }

    pub(super) fn resolve(&self, client: ClientId, handle: Handle, kind: ObjectKind, needed: Rights) -> Result<ObjectId, Error> {
        let entry = self.client(client)?.handles.get(handle.0).ok_or(Error::NoSuchObject)?;
        if entry.kind != kind {
            return Err(Error::WrongType);
        }
        if !entry.rights.contains(needed) {
            return Err(Error::MissingRight);
        }
        Ok(entry.object)
    }

    pub(super) fn resolve_optional(&self, client: ClientId, handle: Option<Handle>, kind: ObjectKind, needed: Rights) -> Result<Option<ObjectId>, Error> {
        handle.map(|handle| self.resolve(client, handle, kind, needed)).transpose()
    }

    /// Fail early, before any external step, if `client` could not receive a new handle (to a
    /// new object).
    pub(super) fn check_handle_space(&self, client: ClientId) -> Result<(), Error> {
        if self.client(client)?.has_handle_space() && self.objects.next_key().is_some() {
            Ok(())
        } else {
            Err(Error::NoResources)
        }
    }

    /// Take `charge` from `client`'s budget, or `NoResources` with nothing taken.
    pub(super) fn charge(&mut self, client: ClientId, charge: Usage) -> Result<(), Error> {
        self.clients.get_mut(client).ok_or(Error::NoSuchClient)?.account.charge(charge)
    }

    /// Give back what `charge` took.
    pub(super) fn refund(&mut self, client: ClientId, charge: Usage) {
        self.clients.get_mut(client).expect("charges belong to live clients").account.refund(charge);
    }

    /// Checks that `client` can receive a new object's handle and charges it the handle and
    /// `object` (the object's own charge): the first step of every creation.
    pub(super) fn charge_new_object(&mut self, client: ClientId, object: Usage) -> Result<(), Error> {
        self.check_handle_space(client)?;
        self.charge(client, budget::HANDLE.plus(object))
    }

    /// Undo `charge_new_object` (a later step failed).
    pub(super) fn refund_new_object(&mut self, client: ClientId, object: Usage) {
        self.refund(client, budget::HANDLE.plus(object));
    }

    fn install_handle(&mut self, client: ClientId, object: ObjectId, rights: Rights, parent: Option<HandleRef>) -> Handle {
        let kind = self.objects[object].kind();
        let table = self.clients.get_mut(client).expect("handle space was checked for a live client");
        let number = table.handles.insert(HandleEntry { object, kind, rights, parent, derived: Vec::new() });
        Handle(number.expect("handle space was checked"))
    }

    /// Insert an object owned by `client` and give the client a handle with every right.
    pub(super) fn create(&mut self, client: ClientId, body: Body) -> Handle {
        let hwpt_parent = match &body {
            Body::Hwpt(hwpt) => Some(hwpt.parent),
            _ => None,
        };
        let id = self.objects.insert(Object { owner: client, body }).expect("object space was checked");
        if let Some(parent) = hwpt_parent {
            self.hwpts_by_parent.insert((parent, id));
            self.topology_epoch += 1;
        }
        self.install_handle(client, id, Rights::all(), None)
    }

    /// Put a handle to the object `handle` names, with `rights` (a subset of its rights),
    /// into `recipient`'s table. Needs GRANT.
    pub fn handle_derive(&mut self, client: ClientId, handle: Handle, rights: Rights, recipient: ClientId) -> Result<Handle, Error> {
        let (object, held) = self.lookup(client, handle)?;
        if !held.contains(Rights::GRANT) {
            return Err(Error::MissingRight);
        }
        if !held.contains(rights) {
            return Err(Error::RightsEscalation);
        }
        let consented = recipient == client || self.client(recipient)?.accepts_from.contains(&client);
        if !consented {
            return Err(Error::NotAccepted);
        }
        self.check_handle_space(recipient)?;
        self.charge(recipient, budget::HANDLE)?;
        let parent = HandleRef { client, handle: handle.0 };
        let derived = self.install_handle(recipient, object, rights, Some(parent));
        self.clients
            .get_mut(client)
            .and_then(|c| c.handles.get_mut(handle.0))
            .expect("looked up above")
            .derived
            .push(HandleRef { client: recipient, handle: derived.0 });
        Ok(derived)
    }

    /// Let `from` derive handles into `client`'s table (`accept`), or withdraw that. Until a
    /// client accepts, no other client can put anything into its table. Consent given twice
    /// or withdrawn when not given is no error.
    pub fn handle_accept(&mut self, client: ClientId, from: ClientId, accept: bool) -> Result<(), Error> {
        self.client(client)?;
        if from.0 >= self.config.max_clients {
            return Err(Error::NoSuchClient);
        }
        let known = self.client(client)?.accepts_from.contains(&from);
        if accept && !known {
            self.charge(client, budget::ACCEPTANCE)?;
            self.clients.get_mut(client).expect("checked").accepts_from.insert(from);
        } else if !accept && known {
            self.clients.get_mut(client).expect("checked").accepts_from.remove(&from);
            self.refund(client, budget::ACCEPTANCE);
        }
        Ok(())
    }

    /// Remove `handle` from `client`'s table, and every handle derived from it (in any
    /// client). The object itself stays (its owner can still destroy it).
    pub fn handle_revoke(&mut self, client: ClientId, handle: Handle) -> Result<(), Error> {
        self.lookup(client, handle)?;
        self.revoke(HandleRef { client, handle: handle.0 });
        Ok(())
    }

    fn revoke(&mut self, target: HandleRef) {
        let Some(client) = self.clients.get_mut(target.client) else { return };
        let Some(entry) = client.handles.remove(target.handle) else { return };
        client.account.refund(budget::HANDLE);
        if let Some(parent) = entry.parent {
            if let Some(parent_entry) = self.clients.get_mut(parent.client).and_then(|c| c.handles.get_mut(parent.handle)) {
                parent_entry.derived.retain(|child| *child != target);
            }
        }
        for child in entry.derived {
            self.revoke(child);
        }
    }

    /// Remove an object and every handle to it in every client.
    fn remove_object(&mut self, id: ObjectId) {
        self.topology_epoch += 1;
        let object = self.objects.remove(id).expect("live object");
        self.refund(object.owner, budget::object(&object.body));
        if let Body::Hwpt(hwpt) = object.body {
            self.hwpts_by_parent.remove(&(hwpt.parent, id));
        }
        for client in self.clients.values_mut() {
            let before = client.handles.len();
            client.handles.retain(|_, entry| entry.object != id);
            client.account.refund(budget::HANDLE.times((before - client.handles.len()) as u64));
        }
    }

    fn is_busy(&self, id: ObjectId) -> bool {
        match &self.objects[id].body {
            Body::Ioas(_) => !self.hwpts_over(HwptParent::Ioas(id)).is_empty(),
            Body::Hwpt(_) => !self.hwpts_over(HwptParent::Hwpt(id)).is_empty() || !self.attachments_to(id).is_empty(),
            Body::Device(device) => !device.attachments.is_empty(),
            Body::Fault(_) => {
                let (hwpts, binds) = self.fault_users(id);
                !hwpts.is_empty() || !binds.is_empty()
            }
            Body::Memory(registration) => registration.mappings != 0,
        }
    }

    /// Destroy an object no other object uses (`Busy` otherwise). Every handle to it, in
    /// every client, goes with it. Needs DESTROY.
    pub fn destroy(&mut self, client: ClientId, handle: Handle) -> Result<(), Error> {
        let (id, rights) = self.lookup(client, handle)?;
        if !rights.contains(Rights::DESTROY) {
            return Err(Error::MissingRight);
        }
        if self.is_busy(id) {
            return Err(Error::Busy);
        }
        self.free_unused(id);
        Ok(())
    }

    /// Free an object that has no users.
    pub(super) fn free_unused(&mut self, id: ObjectId) {
        match self.objects[id].kind() {
            ObjectKind::Ioas => {
                self.unmap_everything(id);
            }
            ObjectKind::Hwpt => {
                let hwpt = self.hwpt(id);
                let domain = hwpt.domain.id;
                if let HwptParent::Ioas(ioas) = hwpt.parent {
                    let areas: Vec<Area> = self.ioas(ioas).areas.values().copied().collect();
                    for area in areas {
                        self.backend.unmap(domain, area.range.start, area.length());
                    }
                }
                self.backend.domain_free(domain);
            }
            ObjectKind::Device => {
                let (unit, rid) = (self.device(id).unit, self.device(id).rid);
                self.bound_devices.remove(&(unit, rid));
                self.backend.release_msis(unit, rid);
            }
            ObjectKind::Fault => {
                self.abort_page_requests(Some(id), None, None);
                let records = self.fault_mut(id).queued.len() as u64;
                self.refund(self.objects[id].owner, budget::FAULT_RECORD.times(records));
            }
            ObjectKind::Memory => {
                if let Body::Memory(registration) = &self.objects[id].body {
                    let (object, size) = (registration.object, registration.size);
                    self.pins.release(&mut self.memory, object, 0, size);
                }
            }
        }
        self.remove_object(id);
    }

    fn owned(&self, client: ClientId, kind: ObjectKind) -> Vec<ObjectId> {
        self.objects.iter().filter(|(_, object)| object.owner == client && object.kind() == kind).map(|(id, _)| id).collect()
    }

    /// Tear down everything a client owns, in dependency order: its handles (and handles
    /// derived from them) are revoked; its devices are detached (blocked) and unbound; its
    /// HWPTs are destroyed, nested before parents, blocking any other client's device
    /// attached to them; its IOASes are unmapped (invalidating) and unpinned; its fault
    /// queues are destroyed, answering pending page requests; its PASIDs are released.
    pub fn close_client(&mut self, client: ClientId) -> Result<(), Error> {
        let handles: Vec<u32> = self.client(client)?.handles.keys().collect();
        for handle in handles {
            self.revoke(HandleRef { client, handle });
        }
        for device in self.owned(client, ObjectKind::Device) {
            self.teardown_device(device);
        }
        let mut hwpts = self.owned(client, ObjectKind::Hwpt);
        hwpts.sort_by_key(|&hwpt| matches!(self.hwpt(hwpt).parent, HwptParent::Ioas(_)));
        for hwpt in hwpts {
            if self.objects.contains(hwpt) {
                self.teardown_hwpt(hwpt);
            }
        }
        for ioas in self.owned(client, ObjectKind::Ioas) {
            self.teardown_ioas(ioas);
        }
        for fault in self.owned(client, ObjectKind::Fault) {
            self.teardown_fault(fault);
        }
        for memory in self.owned(client, ObjectKind::Memory) {
            self.teardown_registration(memory);
        }
        let pasids: Vec<u32> = self.clients.get(client).expect("checked").pasids.iter().copied().collect();
        for pasid in pasids {
            let users: Vec<ObjectId> = self
                .objects
                .iter()
                .filter(|(_, object)| matches!(&object.body, Body::Device(device) if device.attachments.contains_key(&Some(pasid))))
                .map(|(id, _)| id)
                .collect();
            for device in users {
                self.release_attachment(device, Some(pasid));
            }
            self.pasid_owners.remove(&pasid);
            self.refund(client, budget::PASID);
        }
        // Emptied first, so that a client that accepted itself is refunded once.
        let closing = self.clients.get_mut(client).expect("checked");
        let accepted = core::mem::take(&mut closing.accepts_from).len() as u64;
        closing.account.refund(budget::ACCEPTANCE.times(accepted));
        // A later client with the same id (the transport reuses them) starts with nobody's
        // consent.
        for other in self.clients.values_mut() {
            if other.accepts_from.remove(&client) {
                other.account.refund(budget::ACCEPTANCE);
            }
        }
        let left = self.clients.remove(client).expect("checked").account.used;
        debug_assert_eq!(left, Usage::default(), "everything {client:?} was charged is returned");
        Ok(())
    }
}
