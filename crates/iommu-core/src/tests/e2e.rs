//! End to end: the typed client of `iommu-client` over a loopback transport into the
//! dispatcher and the object model with the fake backend.

use iommu_abi::wire::{IovaChoice, Message};
use iommu_abi::{FaultStage, Access, DeviceId, Error, FaultReason, IovaRange, PageResponseCode, Perm, UnitCaps, UnitKind};
use iommu_client::{HwptOptions, Iommu, Transport};

use super::*;
use crate::fake::{Call, FakeBackend, FakeMemory};

const DEVICE_CAP: u64 = 500;

/// The kernel's view of device capabilities: cap 500 of client A is DEV on VTD.
struct Kernel;

impl CapabilityVerifier for Kernel {
    fn device_grant(&mut self, client: ClientId, cap: u64) -> Result<DeviceGrant, Error> {
        if client == A && cap == DEVICE_CAP {
            Ok(DeviceGrant { unit: VTD, rid: DEV, pasid_bits: 20 })
        } else {
            Err(Error::BadCapability)
        }
    }

    fn address_space(&mut self, _client: ClientId, _cap: u64) -> Result<AddressSpace, Error> {
        Err(Error::BadCapability)
    }
}

/// Calls go straight into the dispatcher, as client A.
struct Loopback {
    server: ObjectModel<FakeBackend, FakeMemory>,
}

impl Transport for Loopback {
    fn call(&mut self, msg: &Message, cap: Option<u64>) -> (Message, Option<u64>) {
        (dispatch(&mut self.server, &mut Kernel, A, msg, cap), None)
    }
}

#[test]
fn map_fault_and_unmap_through_the_protocol() {
    let h = harness();
    let log = h.log.clone();
    let mut iommu = Iommu::new(Loopback { server: h.server });

    let ioas = iommu.ioas_alloc().unwrap();
    assert_eq!(iommu.device_bind(DEVICE_CAP + 1), Err(Error::BadCapability));
    let device: DeviceId = iommu.device_bind(DEVICE_CAP).unwrap();
    let info = iommu.get_info(device).unwrap();
    assert_eq!((info.unit, info.kind, info.pasid_bits), (VTD.0, UnitKind::IntelVtd, 20));
    assert!(info.caps.contains(UnitCaps::PAGE_REQUESTS));
    let fault = iommu.fault_alloc().unwrap();
    let hwpt = iommu.hwpt_alloc(device, ioas, HwptOptions { fault: Some(fault), ..HwptOptions::default() }).unwrap();
    iommu.device_attach(device, hwpt, None).unwrap();

    let iova = iommu.ioas_map(ioas, MEM, 0x2000, 0x3000, IovaChoice::Auto, Perm::READ_WRITE).unwrap();
    assert_eq!(iova, 0x1000);
    let server = &iommu.transport_mut().server;
    assert_eq!(server.backend().translate(HwDomainId(1), iova + 0x1008), Some((0x8000_3008, Perm::READ_WRITE)));
    assert_eq!(server.pinned_pages(), 3);

    let page = iommu.ioas_iova_ranges(ioas, 0).unwrap();
    assert_eq!(page.total, 2, "the MSI window splits the space");
    assert_eq!(page.ranges.as_slice()[0], IovaRange::new(0, MSI_WINDOW.start - 1).unwrap());
    assert_eq!(iommu.ioas_iova_ranges(ioas, 5).unwrap().ranges.as_slice(), &[], "past the end");

    // The device faults; the driver reads the record and answers the page request.
    let server = &mut iommu.transport_mut().server;
    let fault_at = |reason, group| FaultEvent { unit: VTD, rid: DEV, pasid: None, iova: 0x9000, access: Access::READ, reason, group, stage: FaultStage::Unspecified };
    assert_eq!(server.deliver_fault(fault_at(FaultReason::Translation, 0)), FaultDelivery::Queued { owner: A });
    assert_eq!(server.deliver_fault(fault_at(FaultReason::PageRequest, 6)), FaultDelivery::Queued { owner: A });
    assert_eq!(server.deliver_fault(fault_at(FaultReason::Permission, 0)), FaultDelivery::Queued { owner: A });
    let batch = iommu.fault_read(fault).unwrap();
    let records: Vec<_> = batch.records().copied().collect();
    assert_eq!(records.len(), 2, "two records per message");
    assert_eq!((records[0].device, records[0].reason), (device.handle(), FaultReason::Translation));
    assert_eq!(records[1].reason, FaultReason::PageRequest);
    iommu.fault_respond(fault, records[1].cookie, PageResponseCode::Success).unwrap();
    assert_eq!(iommu.fault_respond(fault, records[1].cookie, PageResponseCode::Success), Err(Error::NoSuchFault));
    assert!(log.borrow().contains(&Call::PageResponse { unit: VTD, rid: DEV, pasid: None, group: 6, code: PageResponseCode::Success }));
    let rest = iommu.fault_read(fault).unwrap();
    assert_eq!(rest.len(), 1);
    assert!(iommu.fault_read(fault).unwrap().is_empty());

    // Errors travel as their codes; nothing changes.
    assert_eq!(iommu.ioas_unmap(ioas, iova, 0x1000), Err(Error::PartialUnmap));
    assert_eq!(iommu.destroy(hwpt.handle()), Err(Error::Busy));
    assert_eq!(iommu.ioas_unmap(ioas, iova, 0x3000), Ok(0x3000));
    assert_eq!(iommu.transport_mut().server.pinned_pages(), 0);
    assert_eq!(iommu.transport_mut().server.backend().total_mapped_pages(), 0);

    iommu.device_detach(device, None).unwrap();
    iommu.destroy(hwpt.handle()).unwrap();
    iommu.destroy(device.handle()).unwrap();
    iommu.destroy(fault.handle()).unwrap();
    iommu.destroy(ioas.handle()).unwrap();
    let server = &iommu.transport_mut().server;
    assert_eq!(server.object_count(), 0);
    assert_eq!(server.backend().live_domains(), 0);
    assert!(server.backend().violations().is_empty() && server.memory().violations().is_empty());
}

#[test]
fn malformed_requests_are_refused_by_the_dispatcher() {
    let mut loopback = Loopback { server: harness().server };
    let mut bad_opcode = [0u64; 8];
    bad_opcode[0] = 200;
    assert_eq!(loopback.call(&bad_opcode, None).0[0], u64::from(Error::UnknownOpcode.code()));
    let alloc = iommu_abi::Request::IoasAlloc.encode();
    assert_eq!(loopback.call(&alloc, Some(3)).0[0], u64::from(Error::UnexpectedCapability.code()));
    assert_eq!(loopback.server.object_count(), 0);
    let (reply, cap) = loopback.call(&alloc, None);
    assert_eq!((reply[0], reply[1], cap), (0, 1, None));
}
