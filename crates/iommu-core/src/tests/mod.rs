//! Host tests of the object model against the recording fake backend and memory.

mod direct;
mod e2e;
mod faults;
mod groups;
mod hwpt;
mod inject;
mod ioas;
mod lifecycle;
mod page_requests;
mod random;
mod limits;
mod registered;
mod revoke;
mod sva;

use alloc::collections::BTreeMap;
use alloc::rc::Rc;
use core::cell::RefCell;
use iommu_abi::{Error, FaultRecord, Handle, IovaChoice, IovaRange, Perm, UnitCaps, UnitKind};

use crate::fake::{Call, CallLog, FakeBackend, FakeMemory, FakeObject, FakeUnit};
use crate::*;

pub const A: ClientId = ClientId(1);
pub const B: ClientId = ClientId(2);

/// A VT-d unit with every feature and a 48-bit aperture.
pub const VTD: UnitId = UnitId(0);
/// An SMMUv3 unit with no optional feature and a 32-bit aperture.
pub const SMMU: UnitId = UnitId(1);

pub const DEV: RequesterId = RequesterId(0x10);
pub const DEV2: RequesterId = RequesterId(0x18);
/// A device with an RMRR (direct) region at [1 MiB, 2 MiB).
pub const RMRR_DEV: RequesterId = RequesterId(0x20);
pub const SMMU_DEV: RequesterId = RequesterId(0x30);

pub const MSI_WINDOW: IovaRange = IovaRange { start: 0xfee0_0000, last: 0xfeef_ffff };
pub const RMRR: IovaRange = IovaRange { start: 0x10_0000, last: 0x1f_ffff };
pub const VTD_APERTURE_LAST: u64 = (1 << 48) - 1;

/// 1 MiB writable memory of client A (object 1, contiguous).
pub const MEM: u64 = 100;
/// 64 KiB read-only memory of A (object 2).
pub const MEM_RO: u64 = 101;
/// 64 KiB of A whose pages are physically scattered (object 3).
pub const MEM_SCATTERED: u64 = 102;
/// 4 MiB writable memory of A (object 4, contiguous).
pub const MEM_4M: u64 = 103;
/// Object 1 again, through client B's own capability.
pub const MEM_OF_B: u64 = 200;

pub const MIB: u64 = 1 << 20;

/// What one read of a fault queue gave: its records, oldest first, and the overflow count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Readout {
    pub records: Vec<FaultRecord>,
    pub overflow: u64,
}

/// `fault_read` collecting the records, as the tests compare them.
pub trait ReadFaults {
    fn read_faults(&mut self, client: ClientId, fault: Handle, max: usize) -> Result<Readout, Error>;
}

impl ReadFaults for ObjectModel<FakeBackend, FakeMemory> {
    fn read_faults(&mut self, client: ClientId, fault: Handle, max: usize) -> Result<Readout, Error> {
        let mut records = Vec::new();
        let overflow = self.fault_read(client, fault, max, |record| records.push(record))?;
        Ok(Readout { records, overflow })
    }
}

pub struct Harness {
    pub server: ObjectModel<FakeBackend, FakeMemory>,
    pub log: CallLog,
}

pub fn harness() -> Harness {
    harness_with(ServerConfig::default())
}

pub fn harness_with(config: ServerConfig) -> Harness {
    let log: CallLog = Rc::new(RefCell::new(Vec::new()));
    let mut backend = FakeBackend::new(log.clone());
    let msi = ReservedRegion { range: MSI_WINDOW, kind: ReservedKind::Msi };
    let mut reserved = BTreeMap::new();
    reserved.insert(DEV, vec![msi]);
    reserved.insert(DEV2, vec![msi]);
    reserved.insert(RMRR_DEV, vec![msi, ReservedRegion { range: RMRR, kind: ReservedKind::Direct }]);
    let all_caps = UnitCaps::NESTING
        .union(UnitCaps::DIRTY_TRACKING)
        .union(UnitCaps::PASID)
        .union(UnitCaps::SVA)
        .union(UnitCaps::PAGE_REQUESTS);
    backend.add_unit(
        VTD,
        FakeUnit {
            info: UnitInfo { kind: UnitKind::IntelVtd, caps: all_caps },
            aperture: IovaRange { start: 0, last: VTD_APERTURE_LAST },
            page_sizes: (1 << 12) | (1 << 21) | (1 << 30),
            reserved,
        },
    );
    backend.add_unit(
        SMMU,
        FakeUnit {
            info: UnitInfo { kind: UnitKind::ArmSmmuV3, caps: UnitCaps::default() },
            aperture: IovaRange { start: 0, last: 0xffff_ffff },
            page_sizes: (1 << 12) | (1 << 21),
            reserved: BTreeMap::new(),
        },
    );
    let mut memory = FakeMemory::new(log.clone());
    let object = |id, owner, size, writable, phys_base, scattered| FakeObject {
        id: MemoryObjectId(id),
        owner,
        size,
        writable,
        phys_base,
        scattered,
    };
    memory.add_object(MEM, object(1, A, MIB, true, 0x8000_0000, false));
    memory.add_object(MEM_RO, object(2, A, 0x1_0000, false, 0x9000_0000, false));
    memory.add_object(MEM_SCATTERED, object(3, A, 0x1_0000, true, 0xa000_0000, true));
    memory.add_object(MEM_4M, object(4, A, 4 * MIB, true, 0xc000_0000, false));
    memory.add_object(MEM_OF_B, object(1, B, MIB, true, 0x8000_0000, false));
    let mut server = ObjectModel::new(backend, memory, config);
    assert!(server.open_client(A));
    assert!(server.open_client(B));
    // B takes handles from A (the tests share A's objects with B); A takes none from B.
    server.handle_accept(B, A, true).unwrap();
    Harness { server, log }
}

impl Harness {
    pub fn calls(&self) -> Vec<Call> {
        self.log.borrow().clone()
    }

    pub fn clear_log(&self) {
        self.log.borrow_mut().clear();
    }

    /// Neither fake saw an unsafe or invalid request, and the server's pin table agrees
    /// with the kernel's view.
    pub fn assert_clean(&self) {
        assert_eq!(self.server.backend().violations(), &[] as &[String]);
        assert_eq!(self.server.memory().violations(), &[] as &[String]);
        assert_eq!(self.server.pinned_pages(), self.server.memory().pinned_pages());
    }

    pub fn bind(&mut self, client: ClientId, unit: UnitId, rid: RequesterId) -> Handle {
        self.server.device_bind(client, DeviceGrant { unit, rid, pasid_bits: 20 }).unwrap()
    }

    pub fn map(&mut self, client: ClientId, ioas: Handle, cap: u64, offset: u64, length: u64, iova: IovaChoice) -> Result<u64, iommu_abi::Error> {
        self.server.ioas_map(client, ioas, cap, offset, length, iova, Perm::READ_WRITE)
    }

    /// An IOAS of A with a paging HWPT on VTD, and DEV bound and attached to it.
    pub fn attached_setup(&mut self) -> (Handle, Handle, Handle) {
        let ioas = self.server.ioas_alloc(A).unwrap();
        let device = self.bind(A, VTD, DEV);
        let hwpt = self.server.hwpt_alloc(A, device, ioas, HwptAllocOptions::default()).unwrap();
        self.server.device_attach(A, device, hwpt, None).unwrap();
        (ioas, device, hwpt)
    }
}
