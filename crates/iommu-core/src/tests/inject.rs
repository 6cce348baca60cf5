//! Failure injection: every request of the protocol, through `dispatch`, with the Nth
//! allocation failing for every N until the request succeeds. Allocations fail at four gates:
//! the client's budget (every allocation the object model makes passes it first), the
//! backend's fallible calls (domain allocation, map (page-table pages), attach, replace, dirty
//! tracking), and the memory source's identify and pin. A failed request must change nothing
//! (a full snapshot of counters, translations, attachments, domains and pins is compared) and
//! leak nothing (every client then leaves and everything must be back to zero).

use alloc::format;
use alloc::string::String;
use iommu_abi::wire::{IovaChoice, Message, RangeList, Request};
use iommu_abi::{FaultStage, Access, Error, FaultReason, Handle, IovaRange, Opcode, PageResponseCode, Perm, Rights, Stage1Config, Stage1Format};

use super::*;
use crate::budget::injection;
use crate::fake::{AttachSlot, FakeBackend, FakeMemory};

const DEVICE_CAP: u64 = 500;
const ADDRESS_SPACE_CAP: u64 = 600;
const C: ClientId = ClientId(3);

/// The kernel's view of the capabilities the requests carry.
pub(super) struct Kernel;

impl CapabilityVerifier for Kernel {
    fn device_grant(&mut self, client: ClientId, cap: u64) -> Result<DeviceGrant, Error> {
        match (client, cap) {
            (A, DEVICE_CAP) => Ok(DeviceGrant { unit: SMMU, rid: SMMU_DEV, pasid_bits: 0 }),
            _ => Err(Error::BadCapability),
        }
    }

    fn address_space(&mut self, client: ClientId, cap: u64) -> Result<AddressSpace, Error> {
        match (client, cap) {
            (A, ADDRESS_SPACE_CAP) => Ok(AddressSpace { id: 9, root: 0x5_0000, mair: 0 }),
            _ => Err(Error::BadCapability),
        }
    }

    /// As the x86 server does, less the kernel's part: one route per MSI, refused while the
    /// device has its MSIs.
    fn msi_alloc<Backend: IommuBackend>(&mut self, backend: &mut Backend, _client: ClientId, unit: UnitId, rid: RequesterId, count: u32, _first_slot: u64) -> Result<(), Error> {
        if backend.msis_routed(unit, rid) {
            return Err(Error::Busy);
        }
        let vectors: Vec<u8> = (0..count as u8).map(|i| 0x60 + i).collect();
        backend.route_msis(unit, rid, &vectors).map(|_| ())
    }
}

/// What the world holds, named for the requests.
pub(super) struct World {
    pub(super) h: Harness,
    ioas: Handle,
    copy_target: Handle,
    lone_ioas: Handle,
    device: Handle,
    spare_device: Handle,
    fault: Handle,
    hwpt: Handle,
    nested: Handle,
    other_hwpt: Handle,
    target_hwpt: Handle,
    registration: Handle,
    restricted: Handle,
    attach_pasid: u32,
    free_pasid: u32,
    bind_pasid: u32,
    bound_pasid: u32,
    cookie: u32,
}

/// A's IOAS with two pinned areas and a registered one, mirrored by a nest-parent, dirty-tracking
/// HWPT (with a fault queue, DEV attached) and a second HWPT; a second IOAS with an HWPT of an
/// unattached device; PASIDs in each state; an SVA binding; a page request awaiting its answer
/// and two records queued; C accepts handles from A.
pub(super) fn world() -> World {
    let mut h = harness();
    let s = &mut h.server;
    assert!(s.open_client(C));
    s.handle_accept(C, A, true).unwrap();
    let ioas = s.ioas_alloc(A).unwrap();
    let device = s.device_bind(A, DeviceGrant { unit: VTD, rid: DEV, pasid_bits: 20 }).unwrap();
    let spare_device = s.device_bind(A, DeviceGrant { unit: VTD, rid: DEV2, pasid_bits: 20 }).unwrap();
    let fault = s.fault_alloc(A).unwrap();
    let options = HwptAllocOptions { nest_parent: true, dirty_tracking: true, fault: Some(fault) };
    let hwpt = s.hwpt_alloc(A, device, ioas, options).unwrap();
    let other_hwpt = s.hwpt_alloc(A, device, ioas, HwptAllocOptions::default()).unwrap();
    s.device_attach(A, device, hwpt, None).unwrap();
    s.ioas_map(A, ioas, MEM, 0, 0x4000, IovaChoice::Fixed(0x10_0000), Perm::READ_WRITE).unwrap();
    s.ioas_map(A, ioas, MEM_SCATTERED, 0, 0x4000, IovaChoice::Fixed(0x20_0000), Perm::READ_WRITE).unwrap();
    let stage1 = Stage1Config { format: Stage1Format::VtdFirstLevel, table_root: 0x10_1000, address_width: 48, table_entries_log2: 0 };
    let nested = s.hwpt_alloc_nested(A, device, hwpt, stage1, None).unwrap();
    let registration = s.memory_register(A, MEM_4M).unwrap();
    s.ioas_map_registered(A, ioas, registration, 0, 0x2000, IovaChoice::Fixed(0x30_0000), Perm::READ).unwrap();
    let copy_target = s.ioas_alloc(A).unwrap();
    let target_hwpt = s.hwpt_alloc(A, spare_device, copy_target, HwptAllocOptions::default()).unwrap();
    let lone_ioas = s.ioas_alloc(A).unwrap();
    s.ioas_map(A, lone_ioas, MEM, 0x8000, 0x2000, IovaChoice::Auto, Perm::READ).unwrap();
    let restricted = s.handle_derive(A, ioas, Rights::MAP, A).unwrap();
    let attach_pasid = s.pasid_alloc(A).unwrap();
    let free_pasid = s.pasid_alloc(A).unwrap();
    let bind_pasid = s.pasid_alloc(A).unwrap();
    let bound_pasid = s.pasid_alloc(A).unwrap();
    let space = AddressSpace { id: 8, root: 0x6_0000, mair: 0 };
    s.sva_bind(A, device, bound_pasid, space, Some(fault)).unwrap();
    s.hwpt_set_dirty_tracking(A, hwpt, true).unwrap();
    let event = |reason, group| FaultEvent { unit: VTD, rid: DEV, pasid: None, iova: 0x10_0000, access: Access::WRITE, reason, group, stage: FaultStage::Unspecified };
    assert_eq!(s.deliver_fault(event(FaultReason::PageRequest, 5)), FaultDelivery::Queued { owner: A });
    let cookie = s.read_faults(A, fault, 1).unwrap().records[0].cookie;
    s.deliver_fault(event(FaultReason::Translation, 0));
    s.deliver_fault(event(FaultReason::Permission, 0));
    World {
        h,
        ioas,
        copy_target,
        lone_ioas,
        device,
        spare_device,
        fault,
        hwpt,
        nested,
        other_hwpt,
        target_hwpt,
        registration,
        restricted,
        attach_pasid,
        free_pasid,
        bind_pasid,
        bound_pasid,
        cookie,
    }
}

/// One request of each kind the protocol has (some kinds twice, for their different paths),
/// each valid in `world()`, with the capability it carries.
pub(super) fn requests(w: &World) -> Vec<(&'static str, Request, Option<u64>)> {
    let stage1 = Stage1Config { format: Stage1Format::VtdFirstLevel, table_root: 0x10_0000, address_width: 48, table_entries_log2: 0 };
    let ranges = RangeList::new(&[IovaRange::new(0x1000, 0x3fff_ffff).unwrap(), IovaRange::new(0x8000_0000, 0x8fff_ffff).unwrap()]).unwrap();
    vec![
        ("ioas_alloc", Request::IoasAlloc, None),
        // Pages 2 and 3 are pinned already, 4 and 5 are not: a shared use and a new pin.
        ("ioas_map", Request::IoasMap { ioas: w.ioas, iova: IovaChoice::Auto, perm: Perm::READ_WRITE, offset: 0x2000, length: 0x4000 }, Some(MEM)),
        ("ioas_map scattered", Request::IoasMap { ioas: w.ioas, iova: IovaChoice::Fixed(0x40_0000), perm: Perm::READ, offset: 0x4000, length: 0x3000 }, Some(MEM_SCATTERED)),
        ("ioas_unmap", Request::IoasUnmap { ioas: w.ioas, iova: 0x10_0000, length: 0x4000 }, None),
        ("ioas_unmap_all", Request::IoasUnmapAll { ioas: w.ioas }, None),
        ("ioas_copy", Request::IoasCopy { dst: w.copy_target, dst_iova: IovaChoice::Auto, src: w.ioas, src_iova: 0x20_0000, length: 0x4000, perm: Perm::READ }, None),
        ("ioas_iova_ranges", Request::IoasIovaRanges { ioas: w.ioas, first: 0 }, None),
        ("ioas_allow_iovas", Request::IoasAllowIovas { ioas: w.ioas, ranges }, None),
        ("hwpt_alloc", Request::HwptAlloc { device: w.device, ioas: w.ioas, fault: Some(w.fault), nest_parent: false, dirty_tracking: true }, None),
        ("hwpt_alloc_nested", Request::HwptAllocNested { device: w.device, parent: w.hwpt, fault: Some(w.fault), stage1 }, None),
        ("device_bind", Request::DeviceBind, Some(DEVICE_CAP)),
        ("device_attach", Request::DeviceAttach { device: w.device, hwpt: w.other_hwpt, pasid: Some(w.attach_pasid) }, None),
        ("device_attach spare", Request::DeviceAttach { device: w.spare_device, hwpt: w.target_hwpt, pasid: None }, None),
        ("device_replace", Request::DeviceReplace { device: w.device, hwpt: w.other_hwpt, pasid: None }, None),
        ("device_detach", Request::DeviceDetach { device: w.device, pasid: None }, None),
        ("pasid_alloc", Request::PasidAlloc, None),
        ("pasid_free", Request::PasidFree { pasid: w.free_pasid }, None),
        ("sva_bind", Request::SvaBind { device: w.device, pasid: w.bind_pasid, fault: Some(w.fault) }, Some(ADDRESS_SPACE_CAP)),
        ("sva_unbind", Request::SvaUnbind { device: w.device, pasid: w.bound_pasid }, None),
        ("fault_alloc", Request::FaultAlloc, None),
        ("fault_read", Request::FaultRead { fault: w.fault }, None),
        ("fault_respond", Request::FaultRespond { fault: w.fault, cookie: w.cookie, code: PageResponseCode::Success }, None),
        ("hwpt_set_dirty_tracking", Request::HwptSetDirtyTracking { hwpt: w.hwpt, enable: false }, None),
        ("hwpt_get_dirty_bitmap", Request::HwptGetDirtyBitmap { target: w.hwpt, iova: 0x10_0000, length: 0x10_0000, page_size: 0x1_0000, no_clear: false }, None),
        ("hwpt_get_dirty_bitmap_into", Request::HwptGetDirtyBitmapInto { target: w.hwpt, iova: 0, length: 1 << 30, page_size: 0x1000, no_clear: false }, Some(MEM)),
        ("handle_derive", Request::HandleDerive { handle: w.ioas, rights: Rights::MAP.union(Rights::UNMAP), recipient: C.0 }, None),
        ("handle_revoke", Request::HandleRevoke { handle: w.restricted }, None),
        ("destroy", Request::Destroy { handle: w.lone_ioas }, None),
        ("get_info", Request::GetInfo { device: w.device }, None),
        ("memory_register", Request::MemoryRegister, Some(MEM_RO)),
        ("ioas_map_registered", Request::IoasMapRegistered { ioas: w.ioas, memory: w.registration, iova: IovaChoice::Auto, perm: Perm::READ_WRITE, offset: 0x1000, length: 0x3000 }, None),
        ("handle_accept", Request::HandleAccept { from: B.0, accept: true }, None),
        ("msi_alloc", Request::MsiAlloc { device: w.device, count: 2, first_slot: 40 }, None),
        ("hwpt_invalidate", Request::HwptInvalidate { hwpt: w.nested, offset: 0x100, count: 1 }, Some(MEM)),
    ]
}

/// Everything a request may change, in full.
#[derive(Debug, PartialEq)]
struct Snapshot {
    counters: Counters,
    usage: Vec<Option<Usage>>,
    handles: Vec<usize>,
    entries: Vec<(HwDomainId, u64, u64, Perm)>,
    attachments: Vec<(AttachSlot, Translation)>,
    domains: Vec<HwDomainId>,
    msi_routes: Vec<((UnitId, RequesterId), usize)>,
    /// Pinned pages as runs (object, first page, last page), so a difference reads well.
    pinned: Vec<(MemoryObjectId, u64, u64)>,
    /// The object model's own state, in full.
    model: Vec<String>,
}

fn pinned_runs(pages: &[(MemoryObjectId, u64)]) -> Vec<(MemoryObjectId, u64, u64)> {
    let mut runs: Vec<(MemoryObjectId, u64, u64)> = Vec::new();
    for &(object, page) in pages {
        match runs.last_mut() {
            Some((last_object, _, last)) if *last_object == object && *last + 1 == page => *last = page,
            _ => runs.push((object, page, page)),
        }
    }
    runs
}

fn snapshot(server: &ObjectModel<FakeBackend, FakeMemory>) -> Snapshot {
    Snapshot {
        counters: server.counters(),
        usage: [A, B, C].iter().map(|&client| server.usage(client)).collect(),
        handles: [A, B, C].iter().map(|&client| server.handle_count(client)).collect(),
        entries: server.backend().entries(),
        attachments: server.backend().attachments(),
        domains: server.backend().domain_ids(),
        msi_routes: server.backend().msi_routes(),
        pinned: pinned_runs(&server.memory().pinned()),
        model: server.state_digest(),
    }
}

/// Where an allocation is made to fail.
#[derive(Clone, Copy, Debug)]
enum Gate {
    Budget,
    Backend,
    Pin,
    Identify,
}

impl Gate {
    const ALL: [Gate; 4] = [Gate::Budget, Gate::Backend, Gate::Pin, Gate::Identify];

    fn arm(self, server: &mut ObjectModel<FakeBackend, FakeMemory>, n: usize) {
        match self {
            Gate::Budget => injection::fail_nth_charge(Some(n)),
            Gate::Backend => server.backend_mut().fail_nth_call(n),
            Gate::Pin => server.memory_mut().fail_nth_pin(n),
            Gate::Identify => server.memory_mut().fail_nth_identify(n),
        }
    }

    fn pending(self, server: &ObjectModel<FakeBackend, FakeMemory>) -> bool {
        match self {
            Gate::Budget => injection::armed(),
            Gate::Backend => server.backend().failure_pending(),
            Gate::Pin | Gate::Identify => server.memory().failure_pending(),
        }
    }

    fn error(self) -> Error {
        match self {
            Gate::Backend => Error::HardwareFailure,
            Gate::Budget | Gate::Pin | Gate::Identify => Error::NoResources,
        }
    }
}

/// Every client leaves; nothing may remain (`close_client` also checks each client's usage
/// came back to zero).
fn assert_all_released(mut h: Harness, context: &str) {
    injection::fail_nth_charge(None);
    h.assert_clean();
    for client in [A, B, C] {
        h.server.close_client(client).unwrap();
    }
    let after = snapshot(&h.server);
    let unrouted = after.counters.unrouted_faults;
    assert_eq!(after.model.len(), 1, "{context}: only the empty PASID and device tables remain");
    let empty = Snapshot {
        counters: Counters { unrouted_faults: unrouted, ..Counters::default() },
        usage: vec![None; 3],
        handles: vec![0; 3],
        entries: Vec::new(),
        attachments: Vec::new(),
        domains: Vec::new(),
        msi_routes: Vec::new(),
        pinned: Vec::new(),
        model: after.model.clone(),
    };
    assert_eq!(after, empty, "{context}: left behind after every client left");
    h.assert_clean();
}

pub(super) fn status(reply: &Message) -> Option<Error> {
    Error::from_code(reply[0] as u32)
}

/// For one request and gate: fail the 1st, 2nd, ... allocation at the gate until the request
/// succeeds; returns how many failure points it had.
fn sweep(index: usize, gate: Gate) -> usize {
    for n in 1..=256 {
        let mut w = world();
        let (name, request, cap) = requests(&w).swap_remove(index);
        let context = format!("{name}, {gate:?} failing at allocation {n}");
        let before = snapshot(&w.h.server);
        gate.arm(&mut w.h.server, n);
        let reply = dispatch(&mut w.h.server, &mut Kernel, A, &request.encode(), cap);
        let reached = !gate.pending(&w.h.server);
        injection::fail_nth_charge(None);
        match status(&reply) {
            None => {
                assert!(!reached, "{context}: the injected failure was swallowed");
                assert_all_released(w.h, &context);
                return n - 1;
            }
            Some(error) => {
                assert!(reached, "{context}: failed with {error:?} without an injected failure");
                assert_eq!(error, gate.error(), "{context}: the injected error is reported");
                assert_eq!(snapshot(&w.h.server), before, "{context}: the failed request changed something");
                assert_all_released(w.h, &context);
            }
        }
    }
    panic!("request {index} did not succeed after 256 injected failures at {gate:?}");
}

#[test]
fn every_request_fails_cleanly_at_every_allocation() {
    let w = world();
    let list = requests(&w);
    for opcode in Opcode::ALL {
        assert!(list.iter().any(|(_, request, _)| request.opcode() == opcode), "no request for {opcode:?}");
    }
    let mut summary = String::new();
    let mut total = 0;
    let mut points_of = BTreeMap::new();
    for (index, (name, _, _)) in list.iter().enumerate() {
        let points: Vec<usize> = Gate::ALL.iter().map(|&gate| sweep(index, gate)).collect();
        total += points.iter().sum::<usize>();
        summary += &format!("{name} {points:?}; ");
        points_of.insert(*name, points);
    }
    std::println!("failure sweep (budget, backend, pin, identify failure points per request): {summary}total {total}");
    // The sweep reached the allocations it is meant to: a new HWPT is one domain and one map
    // per physically contiguous run of the IOAS (1 + 4 scattered + 1 + 1 registered); three
    // scattered pages are three maps into each of two domains; a registration identifies and
    // pins once and charges once.
    assert_eq!(points_of["hwpt_alloc"], [1, 7, 0, 0]);
    assert_eq!(points_of["ioas_map scattered"], [1, 6, 1, 1]);
    assert_eq!(points_of["memory_register"], [1, 0, 1, 1]);
    assert!(total >= 50, "{total} failure points");
}

/// The snapshot comparison is what catches a leak: a pin or a domain the server does not
/// account for, taken behind its back, shows.
#[test]
fn the_snapshot_sees_a_leaked_pin_and_a_leaked_domain() {
    let mut w = world();
    let before = snapshot(&w.h.server);
    w.h.server.memory_mut().pin(A, MEM, 0xf_0000, 0x1000).unwrap();
    assert_ne!(snapshot(&w.h.server), before, "a leaked pin");
    let mut w = world();
    w.h.server.backend_mut().domain_alloc(VTD, &DomainConfig::Paging { nest_parent: false, dirty_tracking: false }).unwrap();
    assert_ne!(snapshot(&w.h.server), before, "a leaked domain");
}
