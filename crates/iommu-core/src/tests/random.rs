//! A randomized multi-client test: three clients send valid and invalid requests through
//! `dispatch` (other clients' handles, stale handles, overlapping and partial ranges, copies,
//! attach / replace / detach, destroy, derive / accept / revoke, disconnect and reconnect),
//! and after every step the server is checked against a reference model of the handle tables
//! and against what its own areas imply:
//!
//! * isolation: each client's handle table is exactly what the model says it was given (by
//!   creating objects, or by a consented derive), and a handle it was not given never works;
//! * pins: the pinned pages are exactly the distinct pages of the areas and registrations;
//! * translations: every live entry of every domain is a page of an area of the IOAS the
//!   domain mirrors, with that page's frame and permission, and every such page is mapped;
//! * accounting: every client's usage matches its handles and areas, and the global counter
//!   is their sum;
//! * after every client has left, nothing remains.
//!
//! Seeded and bounded; `IOMMU_RANDOM_SEEDS` (a count) and `IOMMU_RANDOM_STEPS` widen it,
//! `IOMMU_RANDOM_TRACE` prints every request and its outcome.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::String;
use iommu_abi::wire::{IovaChoice, Message, Request};
use iommu_abi::{Error, Handle, Opcode, Perm, Rights, PAGE_SIZE};

use super::*;
use crate::fake::{FakeBackend, FakeMemory};
use crate::objects::ObjectId;

const C: ClientId = ClientId(3);
const CLIENTS: [ClientId; 3] = [A, B, C];
const DEVICE_CAP: u64 = 500;
/// Where fixed mappings, unmaps and copies aim: 64 pages from 1 MiB, so they collide often.
const WINDOW: u64 = 0x10_0000;
const WINDOW_PAGES: u64 = 64;
/// Default seeds and steps of a `cargo test` run.
const SEEDS: [u64; 6] = [1, 2, 3, 42, 0x5eed, 0xdead_beef];
const STEPS: usize = 400;

/// xorshift64*: small, deterministic, good enough to pick requests.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        (!items.is_empty()).then(|| items[self.below(items.len() as u64) as usize])
    }
}

/// The devices of the clients: each has one, on the VT-d unit.
struct Kernel;

impl CapabilityVerifier for Kernel {
    fn device_grant(&mut self, client: ClientId, cap: u64) -> Result<DeviceGrant, Error> {
        let rid = match (client, cap) {
            (A, DEVICE_CAP) => DEV,
            (B, DEVICE_CAP) => DEV2,
            (C, DEVICE_CAP) => RequesterId(0x40),
            _ => return Err(Error::BadCapability),
        };
        Ok(DeviceGrant { unit: VTD, rid, pasid_bits: 20 })
    }

    fn address_space(&mut self, _client: ClientId, _cap: u64) -> Result<AddressSpace, Error> {
        Err(Error::BadCapability)
    }
}

/// The memory capabilities of each client. Object 1 is held by all three (one object, one
/// pin per page however many map it).
fn memory_caps(client: ClientId) -> &'static [u64] {
    match client {
        A => &[MEM, MEM_RO, MEM_SCATTERED, MEM_4M],
        B => &[MEM_OF_B, 201],
        _ => &[300, 301],
    }
}

fn random_harness() -> Harness {
    let mut h = harness_with(ServerConfig { limits: ClientLimits { areas: 48, ..ClientLimits::default() }, ..ServerConfig::default() });
    h.server.handle_accept(B, A, false).unwrap();
    assert!(h.server.open_client(C));
    let object = |id, owner, size, phys_base, scattered| FakeObject { id: MemoryObjectId(id), owner, size, writable: true, phys_base, scattered };
    let memory = h.server.memory_mut();
    memory.add_object(201, object(5, B, 0x1_0000, 0xb000_0000, true));
    memory.add_object(300, object(6, C, MIB, 0xd000_0000, false));
    memory.add_object(301, object(1, C, MIB, 0x8000_0000, false));
    h
}

#[derive(Clone)]
struct ModelHandle {
    object: ObjectId,
    kind: ObjectKind,
    rights: Rights,
    /// The handle this one was derived from.
    parent: Option<(ClientId, u32)>,
    derived: Vec<(ClientId, u32)>,
}

/// What each client should hold, by the rules of the protocol.
#[derive(Default)]
struct Model {
    open: BTreeSet<ClientId>,
    handles: BTreeMap<ClientId, BTreeMap<u32, ModelHandle>>,
    owners: BTreeMap<ObjectId, ClientId>,
    /// The IOAS each HWPT mirrors: it goes with the IOAS, whoever owns it.
    hwpt_over: BTreeMap<ObjectId, ObjectId>,
    accepts: BTreeMap<ClientId, BTreeSet<ClientId>>,
    /// Handle numbers that were valid once, to send again.
    retired: Vec<(ClientId, u32)>,
}

impl Model {
    fn holds(&self, client: ClientId, handle: Handle) -> Option<&ModelHandle> {
        self.handles.get(&client)?.get(&handle.0)
    }

    fn add(&mut self, client: ClientId, number: u32, object: ObjectId, kind: ObjectKind, rights: Rights, parent: Option<(ClientId, u32)>) {
        self.handles.entry(client).or_default().insert(number, ModelHandle { object, kind, rights, parent, derived: Vec::new() });
        if let Some((parent_client, parent_number)) = parent {
            let parent = self.handles.get_mut(&parent_client).and_then(|table| table.get_mut(&parent_number)).expect("a live parent");
            parent.derived.push((client, number));
        }
    }

    /// Remove one handle, and its entry in its parent's list: a client that reconnects
    /// numbers its handles afresh, so a stale entry would name a new handle.
    fn remove_handle(&mut self, client: ClientId, number: u32) -> Option<ModelHandle> {
        let removed = self.handles.get_mut(&client)?.remove(&number)?;
        if let Some((parent_client, parent_number)) = removed.parent {
            if let Some(parent) = self.handles.get_mut(&parent_client).and_then(|table| table.get_mut(&parent_number)) {
                parent.derived.retain(|&child| child != (client, number));
            }
        }
        self.retired.push((client, number));
        Some(removed)
    }

    fn revoke(&mut self, client: ClientId, number: u32) {
        if let Some(entry) = self.remove_handle(client, number) {
            for (child_client, child) in entry.derived {
                self.revoke(child_client, child);
            }
        }
    }

    fn destroy_object(&mut self, object: ObjectId) {
        self.owners.remove(&object);
        self.hwpt_over.remove(&object);
        let doomed: Vec<(ClientId, u32)> = self
            .handles
            .iter()
            .flat_map(|(&client, table)| table.iter().filter(|(_, entry)| entry.object == object).map(move |(&number, _)| (client, number)))
            .collect();
        for (client, number) in doomed {
            self.remove_handle(client, number);
        }
    }

    fn close(&mut self, client: ClientId) {
        let numbers: Vec<u32> = self.handles.get(&client).map_or_else(Vec::new, |table| table.keys().copied().collect());
        for number in numbers {
            self.revoke(client, number);
        }
        let mut owned: Vec<ObjectId> = self.owners.iter().filter(|(_, &owner)| owner == client).map(|(&object, _)| object).collect();
        // Other clients' HWPTs over the closing client's IOASes are torn down with them.
        let mirrors: Vec<ObjectId> = self.hwpt_over.iter().filter(|(_, ioas)| owned.contains(ioas)).map(|(&hwpt, _)| hwpt).collect();
        owned.extend(mirrors);
        for object in owned {
            self.destroy_object(object);
        }
        self.accepts.remove(&client);
        for senders in self.accepts.values_mut() {
            senders.remove(&client);
        }
        self.open.remove(&client);
    }

    fn handle_count(&self, client: ClientId) -> usize {
        self.handles.get(&client).map_or(0, BTreeMap::len)
    }
}

type TestServer = ObjectModel<FakeBackend, FakeMemory>;

struct Run {
    h: Harness,
    model: Model,
    rng: Rng,
    succeeded: usize,
    refused: usize,
}

impl Run {
    /// A handle for `client` to send where a `kind` object is wanted: mostly one of its own of
    /// that kind, sometimes another client's number, a stale one or any number.
    fn handle_for(&mut self, client: ClientId, kind: ObjectKind) -> Handle {
        let own: Vec<u32> = self
            .model
            .handles
            .get(&client)
            .map_or_else(Vec::new, |table| table.iter().filter(|(_, entry)| entry.kind == kind).map(|(&number, _)| number).collect());
        let roll = self.rng.below(100);
        let number = if roll < 65 && !own.is_empty() {
            self.rng.pick(&own).expect("not empty")
        } else if roll < 80 {
            let others: Vec<u32> = self.model.handles.iter().filter(|(&c, _)| c != client).flat_map(|(_, table)| table.keys().copied()).collect();
            self.rng.pick(&others).unwrap_or(1)
        } else if roll < 92 {
            let retired = self.model.retired.clone();
            self.rng.pick(&retired).map_or(2, |(_, number)| number)
        } else {
            1 + self.rng.below(40) as u32
        };
        Handle(number)
    }

    fn handle_of_any_kind(&mut self, client: ClientId) -> Handle {
        let kind = self.rng.pick(&[ObjectKind::Ioas, ObjectKind::Hwpt, ObjectKind::Device, ObjectKind::Fault, ObjectKind::Memory]).expect("kinds");
        self.handle_for(client, kind)
    }

    fn window_iova(&mut self) -> u64 {
        WINDOW + self.rng.below(WINDOW_PAGES) * PAGE_SIZE
    }

    fn pages(&mut self, most: u64) -> u64 {
        (1 + self.rng.below(most)) * PAGE_SIZE
    }

    fn perm(&mut self) -> Perm {
        if self.rng.chance(50) {
            Perm::READ
        } else {
            Perm::READ_WRITE
        }
    }

    /// A request for `client` (valid or not) and the capability it carries; `None` for a
    /// disconnect or reconnect, done here.
    fn request(&mut self, client: ClientId) -> Option<(Request, Option<u64>)> {
        let reconnect = !self.model.open.contains(&client) && self.rng.chance(50);
        let choice = if reconnect { 23 } else { self.rng.below(24) };
        let request = match choice {
            0 | 1 => Request::IoasAlloc,
            2..=4 => {
                let caps = memory_caps(if self.rng.chance(85) { client } else { self.rng.pick(&CLIENTS).expect("clients") });
                let cap = self.rng.pick(caps).expect("caps");
                let iova = if self.rng.chance(30) { IovaChoice::Auto } else { IovaChoice::Fixed(self.window_iova()) };
                let (offset, length) = (self.rng.below(20) * PAGE_SIZE, self.pages(6));
                let ioas = self.handle_for(client, ObjectKind::Ioas);
                let perm = self.perm();
                return Some((Request::IoasMap { ioas, iova, perm, offset, length }, Some(cap)));
            }
            5 => {
                let caps = memory_caps(client);
                return Some((Request::MemoryRegister, Some(self.rng.pick(caps).expect("caps"))));
            }
            6 | 7 => {
                let iova = if self.rng.chance(30) { IovaChoice::Auto } else { IovaChoice::Fixed(self.window_iova()) };
                let (ioas, memory) = (self.handle_for(client, ObjectKind::Ioas), self.handle_for(client, ObjectKind::Memory));
                let (offset, length) = (self.rng.below(8) * PAGE_SIZE, self.pages(4));
                Request::IoasMapRegistered { ioas, memory, iova, perm: self.perm(), offset, length }
            }
            8 | 9 => {
                let (ioas, iova, length) = (self.handle_for(client, ObjectKind::Ioas), self.window_iova(), self.pages(12));
                Request::IoasUnmap { ioas, iova, length }
            }
            10 => Request::IoasUnmapAll { ioas: self.handle_for(client, ObjectKind::Ioas) },
            11 => {
                let (dst, src) = (self.handle_for(client, ObjectKind::Ioas), self.handle_for(client, ObjectKind::Ioas));
                let dst_iova = if self.rng.chance(50) { IovaChoice::Auto } else { IovaChoice::Fixed(self.window_iova()) };
                let (src_iova, length) = (self.window_iova(), self.pages(4));
                Request::IoasCopy { dst, dst_iova, src, src_iova, length, perm: Perm::READ }
            }
            12 => Request::HwptAlloc { device: self.handle_for(client, ObjectKind::Device), ioas: self.handle_for(client, ObjectKind::Ioas), fault: None, nest_parent: false, dirty_tracking: false },
            13 => Request::DeviceAttach { device: self.handle_for(client, ObjectKind::Device), hwpt: self.handle_for(client, ObjectKind::Hwpt), pasid: None },
            14 => Request::DeviceReplace { device: self.handle_for(client, ObjectKind::Device), hwpt: self.handle_for(client, ObjectKind::Hwpt), pasid: None },
            15 => Request::DeviceDetach { device: self.handle_for(client, ObjectKind::Device), pasid: None },
            16 => Request::Destroy { handle: self.handle_of_any_kind(client) },
            17 | 18 => {
                let rights = Rights::from_bits(self.rng.next() as u32 & Rights::all().bits()).expect("defined bits");
                let recipient = self.rng.pick(&CLIENTS).expect("clients").0;
                Request::HandleDerive { handle: self.handle_of_any_kind(client), rights, recipient }
            }
            19 => Request::HandleAccept { from: self.rng.pick(&CLIENTS).expect("clients").0, accept: self.rng.chance(80) },
            20 => Request::HandleRevoke { handle: self.handle_of_any_kind(client) },
            21 => return Some((Request::DeviceBind, Some(DEVICE_CAP))),
            22 => Request::FaultAlloc,
            _ => {
                if std::env::var_os("IOMMU_RANDOM_TRACE").is_some() {
                    std::println!("{client:?} disconnects or reconnects");
                }
                if self.model.open.contains(&client) {
                    self.h.server.close_client(client).unwrap();
                    self.model.close(client);
                } else {
                    assert!(self.h.server.open_client(client));
                    self.model.open.insert(client);
                }
                return None;
            }
        };
        Some((request, None))
    }

    /// The handles a request names, which must all be the caller's for it to succeed.
    fn named_handles(request: &Request) -> Vec<Handle> {
        match *request {
            Request::IoasMap { ioas, .. } | Request::IoasUnmap { ioas, .. } | Request::IoasUnmapAll { ioas } => vec![ioas],
            Request::IoasMapRegistered { ioas, memory, .. } => vec![ioas, memory],
            Request::IoasCopy { dst, src, .. } => vec![dst, src],
            Request::HwptAlloc { device, ioas, .. } => vec![device, ioas],
            Request::DeviceAttach { device, hwpt, .. } | Request::DeviceReplace { device, hwpt, .. } => vec![device, hwpt],
            Request::DeviceDetach { device, .. } => vec![device],
            Request::Destroy { handle } | Request::HandleRevoke { handle } | Request::HandleDerive { handle, .. } => vec![handle],
            _ => Vec::new(),
        }
    }

    fn step(&mut self, step: usize) {
        let client = self.rng.pick(&CLIENTS).expect("clients");
        let Some((request, cap)) = self.request(client) else { return };
        let context = format!("step {step}: {client:?} sends {request:?}");
        let reply: Message = dispatch(&mut self.h.server, &mut Kernel, client, &request.encode(), cap);
        let outcome = match Error::from_code(reply[0] as u32) {
            None => Ok(reply),
            Some(error) => Err(error),
        };
        if std::env::var_os("IOMMU_RANDOM_TRACE").is_some() {
            std::println!("{context} -> {:?}", outcome.map(|reply| reply[1]));
        }
        // What the model predicts regardless of the rest of the state.
        if !self.model.open.contains(&client) {
            assert_eq!(outcome.map(|_| ()), Err(Error::NoSuchClient), "{context}");
            self.refused += 1;
            return;
        }
        let foreign = Self::named_handles(&request).into_iter().find(|&handle| self.model.holds(client, handle).is_none());
        if let Some(handle) = foreign {
            assert!(outcome.is_err(), "{context}: succeeded with {handle:?}, which the client was never given");
            if Self::named_handles(&request).len() == 1 {
                assert_eq!(outcome.map(|_| ()), Err(Error::NoSuchObject), "{context}");
            }
        }
        if let Request::HandleDerive { handle, rights, recipient } = request {
            let recipient = ClientId(recipient);
            let held = self.model.holds(client, handle).map(|entry| entry.rights);
            let admissible = held.is_some_and(|held| held.contains(Rights::GRANT) && held.contains(rights));
            let consented = recipient == client || self.model.accepts.get(&recipient).is_some_and(|senders| senders.contains(&client));
            if admissible && self.model.open.contains(&recipient) && !consented {
                assert_eq!(outcome.map(|_| ()), Err(Error::NotAccepted), "{context}");
            }
        }
        let Ok(reply) = outcome else {
            self.refused += 1;
            return;
        };
        self.succeeded += 1;
        self.apply(client, &request, &reply);
    }

    fn object_of(server: &TestServer, client: ClientId, number: u32) -> (ObjectId, Rights) {
        let (_, object, rights) = server.handle_table(client).into_iter().find(|(n, _, _)| *n == number).expect("a returned handle is in the table");
        (object, rights)
    }

    /// Bring the model up to date with a request that succeeded.
    fn apply(&mut self, client: ClientId, request: &Request, reply: &Message) {
        match *request {
            Request::IoasAlloc | Request::MemoryRegister | Request::HwptAlloc { .. } | Request::DeviceBind | Request::FaultAlloc => {
                let number = reply[1] as u32;
                let (object, rights) = Self::object_of(&self.h.server, client, number);
                assert_eq!(rights, Rights::all(), "the creator gets every right");
                assert!(self.model.owners.insert(object, client).is_none(), "a new object");
                let kind = match request {
                    Request::IoasAlloc => ObjectKind::Ioas,
                    Request::MemoryRegister => ObjectKind::Memory,
                    Request::HwptAlloc { .. } => ObjectKind::Hwpt,
                    Request::DeviceBind => ObjectKind::Device,
                    _ => ObjectKind::Fault,
                };
                self.model.add(client, number, object, kind, Rights::all(), None);
                if let Request::HwptAlloc { ioas, .. } = *request {
                    let over = self.model.holds(client, ioas).expect("resolved by the server").object;
                    self.model.hwpt_over.insert(object, over);
                }
            }
            Request::HandleDerive { handle, rights, recipient } => {
                let recipient = ClientId(recipient);
                let number = reply[1] as u32;
                let held = self.model.holds(client, handle).expect("checked");
                let (object, kind) = (held.object, held.kind);
                assert_eq!(Self::object_of(&self.h.server, recipient, number), (object, rights), "the derived handle names the same object");
                self.model.add(recipient, number, object, kind, rights, Some((client, handle.0)));
            }
            Request::HandleAccept { from, accept } => {
                let senders = self.model.accepts.entry(client).or_default();
                if accept {
                    senders.insert(ClientId(from));
                } else {
                    senders.remove(&ClientId(from));
                }
            }
            Request::HandleRevoke { handle } => self.model.revoke(client, handle.0),
            Request::Destroy { handle } => {
                let object = self.model.holds(client, handle).expect("checked").object;
                self.model.destroy_object(object);
            }
            _ => {}
        }
    }

    fn check(&self, context: &str) {
        let server = &self.h.server;
        self.h.assert_clean();
        // Isolation: every table is exactly what the model handed out.
        for client in CLIENTS {
            let mut table: Vec<(u32, ObjectId, Rights)> = server.handle_table(client);
            table.sort_by_key(|&(number, _, _)| number);
            let expected: Vec<(u32, ObjectId, Rights)> =
                self.model.handles.get(&client).map_or_else(Vec::new, |t| t.iter().map(|(&n, e)| (n, e.object, e.rights)).collect());
            assert_eq!(table, expected, "{context}: {client:?}'s handle table");
        }
        // Pins are exactly the distinct pages of areas (not from registrations) and registrations.
        let areas = server.all_areas();
        let mut pages: BTreeSet<(MemoryObjectId, u64)> = BTreeSet::new();
        for (_, _, area) in &areas {
            if area.registration.is_none() {
                pages.extend((0..area.length() / PAGE_SIZE).map(|i| (area.object, area.offset / PAGE_SIZE + i)));
            }
        }
        for (object, size) in server.registrations() {
            pages.extend((0..size / PAGE_SIZE).map(|page| (object, page)));
        }
        assert_eq!(server.memory().pinned(), pages.iter().copied().collect::<Vec<_>>(), "{context}: pinned pages");
        assert_eq!(server.pinned_pages(), pages.len(), "{context}: the pin table's count");
        // Every domain entry is a page of an area of the IOAS it mirrors, and the reverse.
        let mut entries = Vec::new();
        for (domain, ioas) in server.paging_domains() {
            for (_, _, area) in areas.iter().filter(|(id, _, _)| *id == ioas) {
                for i in 0..area.length() / PAGE_SIZE {
                    let frame = server.memory().frame_of(area.object, area.offset / PAGE_SIZE + i).expect("a known object");
                    entries.push((domain, area.range.start + i * PAGE_SIZE, frame, area.perm));
                }
            }
        }
        entries.sort_by_key(|&(domain, iova, _, _)| (domain, iova));
        assert_eq!(server.backend().entries(), entries, "{context}: domain entries");
        // Accounting.
        let mut sum = Usage::default();
        for client in CLIENTS {
            let Some(usage) = server.usage(client) else { continue };
            assert_eq!(usage.handles as usize, self.model.handle_count(client), "{context}: {client:?}'s handles");
            let owned_areas = areas.iter().filter(|(_, owner, _)| *owner == client).count();
            assert_eq!(usage.areas as usize, owned_areas, "{context}: {client:?}'s areas");
            sum = sum.plus(usage);
        }
        assert_eq!(server.counters().charged, sum, "{context}: the global counter is the sum");
    }
}

fn run(seed: u64, steps: usize) -> (usize, usize) {
    let mut run = Run { h: random_harness(), model: Model::default(), rng: Rng(seed.max(1)), succeeded: 0, refused: 0 };
    run.model.open.extend(CLIENTS);
    for client in CLIENTS {
        let reply = dispatch(&mut run.h.server, &mut Kernel, client, &Request::DeviceBind.encode(), Some(DEVICE_CAP));
        assert_eq!(reply[0], 0);
        run.apply(client, &Request::DeviceBind, &reply);
    }
    for step in 0..steps {
        run.step(step);
        run.check(&format!("seed {seed:#x}, after step {step}"));
    }
    for client in CLIENTS {
        if run.model.open.contains(&client) {
            run.h.server.close_client(client).unwrap();
            run.model.close(client);
        }
    }
    run.check(&format!("seed {seed:#x}, after every client left"));
    let server = &run.h.server;
    assert_eq!(server.counters(), Counters { unrouted_faults: 0, ..Counters::default() }, "seed {seed:#x}: nothing remains");
    assert_eq!((server.backend().live_domains(), server.backend().attached_slots()), (0, 0), "seed {seed:#x}");
    assert_eq!(server.memory().pinned_pages(), 0, "seed {seed:#x}");
    (run.succeeded, run.refused)
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

#[test]
fn random_clients_keep_every_invariant() {
    let steps = env_number("IOMMU_RANDOM_STEPS").map_or(STEPS, |steps| steps as usize);
    let seeds: Vec<u64> = match env_number("IOMMU_RANDOM_SEEDS") {
        Some(count) => (1..=count).collect(),
        None => SEEDS.to_vec(),
    };
    let mut summary = String::new();
    let mut succeeded_overall = 0;
    for &seed in &seeds {
        let (succeeded, refused) = run(seed, steps);
        summary += &format!("seed {seed:#x}: {steps} steps, {succeeded} succeeded, {refused} refused; ");
        // Both kinds must occur, or the run tested little.
        assert!(succeeded > steps / 4 && refused > steps / 5, "seed {seed:#x}: {succeeded} succeeded, {refused} refused");
        succeeded_overall += succeeded;
    }
    std::println!("random clients: {summary}{succeeded_overall} requests succeeded overall");
}

/// The checks must catch a server that lets a handle cross into a client that did not
/// consent: a handle put there behind the model's back is seen.
#[test]
fn the_isolation_check_sees_a_handle_the_model_did_not_grant() {
    let mut run = Run { h: random_harness(), model: Model::default(), rng: Rng(7), succeeded: 0, refused: 0 };
    run.model.open.extend(CLIENTS);
    let ioas = run.h.server.ioas_alloc(A).unwrap();
    let (object, _) = Run::object_of(&run.h.server, A, ioas.0);
    run.model.owners.insert(object, A);
    run.model.add(A, ioas.0, object, ObjectKind::Ioas, Rights::all(), None);
    run.check("consistent");
    // Consent given to the server only, then a derive the model never saw.
    run.h.server.handle_accept(B, A, true).unwrap();
    run.h.server.handle_derive(A, ioas, Rights::MAP, B).unwrap();
    let caught = std::panic::catch_unwind(core::panic::AssertUnwindSafe(|| run.check("after a hidden derive")));
    assert!(caught.is_err(), "an unexpected handle in B's table must fail the check");
}

/// Every request kind the random test sends exists in the protocol (the test is not silently
/// narrower than the opcodes it claims).
#[test]
fn the_random_requests_cover_the_sharing_and_mapping_opcodes() {
    let mut run = Run { h: random_harness(), model: Model::default(), rng: Rng(11), succeeded: 0, refused: 0 };
    run.model.open.extend(CLIENTS);
    let mut seen = BTreeSet::new();
    for _ in 0..2000 {
        if let Some((request, _)) = run.request(A) {
            seen.insert(request.opcode() as u16);
        }
        if !run.model.open.contains(&A) {
            assert!(run.h.server.open_client(A));
            run.model.open.insert(A);
        }
    }
    let wanted = [
        Opcode::IoasAlloc,
        Opcode::IoasMap,
        Opcode::MemoryRegister,
        Opcode::IoasMapRegistered,
        Opcode::IoasUnmap,
        Opcode::IoasUnmapAll,
        Opcode::IoasCopy,
        Opcode::HwptAlloc,
        Opcode::DeviceAttach,
        Opcode::DeviceReplace,
        Opcode::DeviceDetach,
        Opcode::Destroy,
        Opcode::HandleDerive,
        Opcode::HandleAccept,
        Opcode::HandleRevoke,
        Opcode::DeviceBind,
        Opcode::FaultAlloc,
    ];
    for opcode in wanted {
        assert!(seen.contains(&(opcode as u16)), "{opcode:?} is never sent");
    }
}
