//! Per-client limits: exhausting one gives that client `NoResources`, changes nothing, and no
//! other client notices; everything charged comes back when objects go and when the client
//! leaves.

use iommu_abi::{FaultStage, Access, Error, FaultReason, IovaChoice, Rights};

use super::*;

fn limited(limits: ClientLimits) -> Harness {
    harness_with(ServerConfig { limits, ..ServerConfig::default() })
}

#[test]
fn each_limit_refuses_only_its_client_and_changes_nothing() {
    // One limit at a time at a small value; the operation that would exceed it fails for A,
    // and B, with the same limits, still gets the same operation.
    let small = |f: fn(&mut ClientLimits)| {
        let mut limits = ClientLimits::UNLIMITED;
        f(&mut limits);
        limited(limits)
    };
    let mut h = small(|l| l.handles = 2);
    h.server.ioas_alloc(A).unwrap();
    h.server.fault_alloc(A).unwrap();
    let before = h.server.counters();
    assert_eq!(h.server.ioas_alloc(A), Err(Error::NoResources));
    assert_eq!(h.server.counters(), before, "nothing half-created");
    assert!(h.server.ioas_alloc(B).is_ok(), "B's table is its own");

    let mut h = small(|l| l.areas = 2);
    let ioas = h.server.ioas_alloc(A).unwrap();
    h.map(A, ioas, MEM, 0, 0x1000, IovaChoice::Auto).unwrap();
    h.map(A, ioas, MEM, 0x1000, 0x1000, IovaChoice::Auto).unwrap();
    let before = h.server.counters();
    assert_eq!(h.map(A, ioas, MEM, 0x2000, 0x1000, IovaChoice::Auto), Err(Error::NoResources));
    assert_eq!(h.server.counters(), before);
    let ioas_b = h.server.ioas_alloc(B).unwrap();
    for page in 0..2 {
        h.map(B, ioas_b, MEM_OF_B, page * 0x1000, 0x1000, IovaChoice::Auto).unwrap();
    }
    h.server.ioas_unmap(A, ioas, 0x1000, 0x1000).unwrap();
    assert!(h.map(A, ioas, MEM, 0x2000, 0x1000, IovaChoice::Auto).is_ok(), "an unmap gives the area back");

    let mut h = small(|l| l.pasids = 1);
    h.server.pasid_alloc(A).unwrap();
    assert_eq!(h.server.pasid_alloc(A), Err(Error::NoResources));
    assert_eq!(h.server.allocated_pasids(), 1);
    assert!(h.server.pasid_alloc(B).is_ok());

    let mut h = small(|l| l.fault_queues = 1);
    h.server.fault_alloc(A).unwrap();
    assert_eq!(h.server.fault_alloc(A), Err(Error::NoResources));
    assert!(h.server.fault_alloc(B).is_ok());

    let mut h = small(|l| l.domains = 1);
    let (ioas, device, _) = h.attached_setup();
    let domains = h.server.backend().live_domains();
    assert_eq!(h.server.hwpt_alloc(A, device, ioas, HwptAllocOptions::default()), Err(Error::NoResources));
    assert_eq!(h.server.backend().live_domains(), domains, "refused before the backend allocated");
    let ioas_b = h.server.ioas_alloc(B).unwrap();
    let device_b = h.bind(B, VTD, DEV2);
    assert!(h.server.hwpt_alloc(B, device_b, ioas_b, HwptAllocOptions::default()).is_ok());
    h.assert_clean();
}

#[test]
fn the_memory_budget_counts_areas_frames_and_registrations() {
    let mut h = limited(ClientLimits { memory_bytes: 64 << 10, ..ClientLimits::UNLIMITED });
    let ioas = h.server.ioas_alloc(A).unwrap();
    let empty = h.server.usage(A).unwrap().bytes;
    h.map(A, ioas, MEM, 0, 0x1000, IovaChoice::Auto).unwrap();
    let one_page = h.server.usage(A).unwrap().bytes - empty;
    h.map(A, ioas, MEM, 0x1000, 0x4000, IovaChoice::Auto).unwrap();
    let four_pages = h.server.usage(A).unwrap().bytes - empty - one_page;
    assert_eq!(four_pages - one_page, 3 * 8, "eight bytes of frame address per pinned page");
    // A 4 MiB registration keeps 1,024 frame addresses: 8 KiB. 4 MiB mapped is 8 KiB too;
    // the 64 KiB budget takes a few such, then refuses.
    let mut registered = Vec::new();
    let refused = loop {
        match h.server.memory_register(A, MEM_4M) {
            Ok(memory) => registered.push(memory),
            Err(error) => break error,
        }
        assert!(registered.len() < 16, "the budget must run out");
    };
    assert_eq!(refused, Error::NoResources);
    assert!(registered.len() >= 5);
    let pinned = h.server.pinned_pages();
    assert_eq!(h.map(A, ioas, MEM_4M, 0, 4 * MIB, IovaChoice::Auto), Err(Error::NoResources));
    assert_eq!(h.server.pinned_pages(), pinned, "refused before pinning");
    // B's budget is untouched.
    let ioas_b = h.server.ioas_alloc(B).unwrap();
    assert!(h.map(B, ioas_b, MEM_OF_B, 0, MIB, IovaChoice::Auto).is_ok());
    for memory in registered {
        h.server.destroy(A, memory).unwrap();
    }
    h.server.ioas_unmap_all(A, ioas).unwrap();
    assert_eq!(h.server.usage(A).unwrap().bytes, empty, "unmaps and destroys return every byte");
    h.assert_clean();
}

#[test]
fn a_full_budget_drops_fault_records_as_overflow() {
    let mut h = limited(ClientLimits::UNLIMITED);
    let fault = h.server.fault_alloc(A).unwrap();
    let ioas = h.server.ioas_alloc(A).unwrap();
    let device = h.bind(A, VTD, DEV);
    let hwpt = h.server.hwpt_alloc(A, device, ioas, HwptAllocOptions { fault: Some(fault), ..Default::default() }).unwrap();
    h.server.device_attach(A, device, hwpt, None).unwrap();
    let used = h.server.usage(A).unwrap().bytes;
    let event = FaultEvent { unit: VTD, rid: DEV, pasid: None, iova: 0x5000, access: Access::READ, reason: FaultReason::Translation, group: 0, stage: FaultStage::Unspecified };
    assert_eq!(h.server.deliver_fault(event), FaultDelivery::Queued { owner: A });
    let record = h.server.usage(A).unwrap().bytes - used;
    assert!(record > 0, "a queued record is charged");
    // Now a budget that the queued record fills exactly: the next one overflows.
    let mut tight = limited(ClientLimits { memory_bytes: used + record, ..ClientLimits::UNLIMITED });
    let fault = tight.server.fault_alloc(A).unwrap();
    let ioas = tight.server.ioas_alloc(A).unwrap();
    let device = tight.bind(A, VTD, DEV);
    let hwpt = tight.server.hwpt_alloc(A, device, ioas, HwptAllocOptions { fault: Some(fault), ..Default::default() }).unwrap();
    tight.server.device_attach(A, device, hwpt, None).unwrap();
    assert_eq!(tight.server.usage(A).unwrap().bytes, used, "the same objects cost the same");
    assert_eq!(tight.server.deliver_fault(event), FaultDelivery::Queued { owner: A });
    assert_eq!(tight.server.deliver_fault(event), FaultDelivery::Overflowed);
    let readout = tight.server.read_faults(A, fault, 8).unwrap();
    assert_eq!((readout.records.len(), readout.overflow), (1, 1));
    assert_eq!(tight.server.usage(A).unwrap().bytes, used, "a read record is refunded");
    assert_eq!(tight.server.deliver_fault(event), FaultDelivery::Queued { owner: A });
}

#[test]
fn everything_charged_comes_back_when_the_client_leaves() {
    let mut h = harness();
    let c = ClientId(3);
    assert!(h.server.open_client(c));
    h.server.handle_accept(c, A, true).unwrap();
    let (ioas, _, hwpt) = h.attached_setup();
    h.server.pasid_alloc(A).unwrap();
    h.map(A, ioas, MEM, 0, 0x4000, IovaChoice::Auto).unwrap();
    let memory = h.server.memory_register(A, MEM_4M).unwrap();
    h.server.ioas_map_registered(A, ioas, memory, 0, 0x2000, IovaChoice::Auto, iommu_abi::Perm::READ).unwrap();
    h.server.handle_derive(A, ioas, Rights::MAP, A).unwrap();
    let shared = h.server.handle_derive(A, ioas, Rights::all(), B).unwrap();
    h.server.handle_derive(A, hwpt, Rights::ATTACH, c).unwrap();
    let ioas_b = h.server.ioas_alloc(B).unwrap();
    h.map(B, ioas_b, MEM_OF_B, 0, 0x1000, IovaChoice::Auto).unwrap();
    h.server.ioas_copy(B, ioas_b, IovaChoice::Auto, shared, 0x1000, 0x1000, iommu_abi::Perm::READ).unwrap_or_else(|e| panic!("{e:?}"));
    let event = FaultEvent { unit: VTD, rid: DEV, pasid: None, iova: 0x5000, access: Access::READ, reason: FaultReason::Translation, group: 0, stage: FaultStage::Unspecified };
    let with_b_mapping = h.server.usage(B).unwrap();
    assert_eq!(with_b_mapping.handles, 2);
    assert_eq!(with_b_mapping.areas, 2, "B's map and copy into its own IOAS");
    assert_eq!(h.server.deliver_fault(event), FaultDelivery::Unrouted, "the HWPT has no fault queue");
    let total = h.server.counters().charged;
    let sum = [A, B, c].iter().fold(Usage::default(), |sum, &client| sum.plus(h.server.usage(client).unwrap()));
    assert_eq!(total, sum, "the global counter is the sum of the clients'");
    h.server.close_client(A).unwrap();
    let b = h.server.usage(B).unwrap();
    assert_eq!((b.handles, b.areas), (1, 2), "A's handle in B's table went with A's IOAS");
    assert_eq!(h.server.usage(c), Some(Usage::default()), "C's derived handle went with A's HWPT");
    assert_eq!(h.server.usage(A), None);
    h.server.close_client(B).unwrap();
    h.server.close_client(c).unwrap();
    assert_eq!(h.server.counters(), Counters { unrouted_faults: 1, ..Counters::default() });
    h.assert_clean();
}

#[test]
fn the_default_budget_matches_its_documentation() {
    let limits = ClientLimits::default();
    let one_page_area = crate::budget::area_bytes(iommu_abi::PAGE_SIZE, false);
    assert_eq!(one_page_area, 128 + 8, "an area's estimate as the documentation states it");
    let areas = limits.memory_bytes / one_page_area;
    assert!((7_000..8_000).contains(&areas), "{areas} one-page areas fit");
    assert!(limits.memory_bytes * 4 == 4 << 20, "a quarter of the server's heap");
}

#[test]
fn a_client_opened_with_its_own_limits_is_held_to_them_alone() {
    // The configured limits are unlimited; C is opened with one fault queue of its own.
    let mut h = limited(ClientLimits::UNLIMITED);
    let c = ClientId(3);
    let own = ClientLimits { fault_queues: 1, ..ClientLimits::UNLIMITED };
    assert!(h.server.open_client_with_limits(c, own));
    assert_eq!(h.server.limits(c), Some(own));
    assert_eq!(h.server.limits(A), Some(ClientLimits::UNLIMITED), "A keeps the configured limits");
    h.server.fault_alloc(c).unwrap();
    assert_eq!(h.server.fault_alloc(c), Err(Error::NoResources), "C is held to its own limit");
    for _ in 0..3 {
        h.server.fault_alloc(A).unwrap();
    }
    // Reopened after closing, with other limits: the new ones hold.
    h.server.close_client(c).unwrap();
    assert!(h.server.open_client_with_limits(c, ClientLimits { fault_queues: 2, ..ClientLimits::UNLIMITED }));
    h.server.fault_alloc(c).unwrap();
    h.server.fault_alloc(c).unwrap();
    assert_eq!(h.server.fault_alloc(c), Err(Error::NoResources));
    assert!(!h.server.open_client_with_limits(c, ClientLimits::UNLIMITED), "already open");
}
