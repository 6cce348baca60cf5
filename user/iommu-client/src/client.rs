//! Typed IPC stubs for drivers.
//!
//! [`Iommu`] turns each operation into one [`Request`], sends it over a [`Transport`] (the
//! kernel's call-and-wait IPC in a real driver, a loopback into the server in tests) and
//! decodes the reply with the layout the opcode prescribes. A reply that does not match
//! that layout, or that carries a capability, is reported as [`Error::MalformedReply`]
//! rather than trusted.

use iommu_abi::error::Error;
use iommu_abi::types::{
    DeviceId, DeviceInfo, FaultId, Handle, HwptId, IoasId, IovaRange, MemoryId, PageResponseCode, Perm, Rights,
    Stage1Config,
};
use iommu_abi::wire::{FaultBatch, IovaChoice, Message, RangeList, Reply, ReplyShape, Request, DIRTY_BITMAP_WORDS};

/// One synchronous IPC round trip: send eight words and an optional capability, receive
/// eight words and an optional capability.
pub trait Transport {
    /// Send `msg` (and `cap`, if any) to the server and wait for its reply.
    fn call(&mut self, msg: &Message, cap: Option<u64>) -> (Message, Option<u64>);
}

/// Options of a paging HWPT.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HwptOptions {
    /// May serve as stage 2 of nested HWPTs.
    pub nest_parent: bool,
    /// Supports dirty tracking.
    pub dirty_tracking: bool,
    /// Fault queue receiving faults of devices attached to the HWPT.
    pub fault: Option<FaultId>,
}

/// What a dirty-bitmap read does with the bits it reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirtyBits {
    /// Clear them, so that only later writes are reported next time.
    Clear,
    /// Leave them set (iommufd's NO_CLEAR).
    Keep,
}

/// One page of usable IOVA ranges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IovaRangesPage {
    /// How many usable ranges the IOAS has in total.
    pub total: u32,
    /// The ranges starting at the index asked for.
    pub ranges: RangeList,
}

/// The client side of the IOMMU server protocol.
pub struct Iommu<T: Transport> {
    transport: T,
}

impl<T: Transport> Iommu<T> {
    /// Talk to the server over `transport`.
    pub fn new(transport: T) -> Self {
        Iommu { transport }
    }

    /// The transport (e.g. to inspect a test loopback).
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    fn call(&mut self, request: Request, cap: Option<u64>) -> Result<Reply, Error> {
        let (reply, reply_cap) = self.transport.call(&request.encode(), cap);
        if reply_cap.is_some() {
            return Err(Error::MalformedReply);
        }
        Reply::decode(request.opcode(), &reply)
    }

    /// `call` for the opcodes whose reply is at most one word (see `Reply::decode_word`).
    fn call_word(&mut self, request: Request, cap: Option<u64>) -> Result<u64, Error> {
        let (reply, reply_cap) = self.transport.call(&request.encode(), cap);
        if reply_cap.is_some() {
            return Err(Error::MalformedReply);
        }
        Reply::decode_word(request.opcode(), &reply)
    }

    fn call_handle(&mut self, request: Request, cap: Option<u64>) -> Result<Handle, Error> {
        debug_assert_eq!(request.opcode().reply_shape(), ReplyShape::Handle);
        // `decode_word` checked the handle is a non-zero u32.
        self.call_word(request, cap).map(|word| Handle(word as u32))
    }

    fn call_u64(&mut self, request: Request) -> Result<u64, Error> {
        debug_assert!(matches!(request.opcode().reply_shape(), ReplyShape::Iova | ReplyShape::Length));
        self.call_word(request, None)
    }

    fn call_empty(&mut self, request: Request, cap: Option<u64>) -> Result<(), Error> {
        debug_assert_eq!(request.opcode().reply_shape(), ReplyShape::Empty);
        self.call_word(request, cap).map(|_| ())
    }

    /// Allocate an empty IOAS.
    pub fn ioas_alloc(&mut self) -> Result<IoasId, Error> {
        self.call_handle(Request::IoasAlloc, None).map(IoasId)
    }

    /// Map `length` bytes at `offset` of the memory object `memory` (a capability the
    /// kernel transfers with the call) into `ioas`; returns the IOVA.
    pub fn ioas_map(
        &mut self,
        ioas: IoasId,
        memory: u64,
        offset: u64,
        length: u64,
        iova: IovaChoice,
        perm: Perm,
    ) -> Result<u64, Error> {
        let request = Request::IoasMap { ioas: ioas.handle(), iova, perm, offset, length };
        match self.call(request, Some(memory))? {
            Reply::Iova(iova) => Ok(iova),
            _ => Err(Error::MalformedReply),
        }
    }

    /// Register the memory object `memory` (a capability the kernel transfers with the call):
    /// the server verifies it and pins it whole once, and `ioas_map_registered` then maps from
    /// it with no transfer and no kernel call. The pages stay pinned until the registration is
    /// destroyed and the last mapping from it is gone.
    pub fn memory_register(&mut self, memory: u64) -> Result<MemoryId, Error> {
        self.call_handle(Request::MemoryRegister, Some(memory)).map(MemoryId)
    }

    /// Map `length` bytes at `offset` of registered memory into `ioas`; returns the IOVA.
    pub fn ioas_map_registered(
        &mut self,
        ioas: IoasId,
        memory: MemoryId,
        offset: u64,
        length: u64,
        iova: IovaChoice,
        perm: Perm,
    ) -> Result<u64, Error> {
        self.call_u64(Request::IoasMapRegistered { ioas: ioas.handle(), memory: memory.handle(), iova, perm, offset, length })
    }

    /// Unmap every mapping inside `[iova, iova + length)`; returns the bytes unmapped.
    pub fn ioas_unmap(&mut self, ioas: IoasId, iova: u64, length: u64) -> Result<u64, Error> {
        self.call_u64(Request::IoasUnmap { ioas: ioas.handle(), iova, length })
    }

    /// Unmap everything; returns the bytes unmapped.
    pub fn ioas_unmap_all(&mut self, ioas: IoasId) -> Result<u64, Error> {
        self.call_u64(Request::IoasUnmapAll { ioas: ioas.handle() })
    }

    /// Map the pages mapped at `[src_iova, src_iova + length)` of `src` into `dst`; returns
    /// the destination IOVA.
    pub fn ioas_copy(
        &mut self,
        dst: IoasId,
        dst_iova: IovaChoice,
        src: IoasId,
        src_iova: u64,
        length: u64,
        perm: Perm,
    ) -> Result<u64, Error> {
        self.call_u64(Request::IoasCopy { dst: dst.handle(), dst_iova, src: src.handle(), src_iova, length, perm })
    }

    /// The usable IOVA ranges of `ioas`, starting at index `first`.
    pub fn ioas_iova_ranges(&mut self, ioas: IoasId, first: u32) -> Result<IovaRangesPage, Error> {
        match self.call(Request::IoasIovaRanges { ioas: ioas.handle(), first }, None)? {
            Reply::IovaRanges { total, ranges } => Ok(IovaRangesPage { total, ranges }),
            _ => Err(Error::MalformedReply),
        }
    }

    /// Restrict mappings of `ioas` to `ranges` (at most three; empty lifts the restriction).
    pub fn ioas_allow_iovas(&mut self, ioas: IoasId, ranges: &[IovaRange]) -> Result<(), Error> {
        let ranges = RangeList::new(ranges)?;
        self.call_empty(Request::IoasAllowIovas { ioas: ioas.handle(), ranges }, None)
    }

    /// Allocate a paging HWPT on `device`'s IOMMU unit, mirroring `ioas`.
    pub fn hwpt_alloc(&mut self, device: DeviceId, ioas: IoasId, options: HwptOptions) -> Result<HwptId, Error> {
        let request = Request::HwptAlloc {
            device: device.handle(),
            ioas: ioas.handle(),
            fault: options.fault.map(FaultId::handle),
            nest_parent: options.nest_parent,
            dirty_tracking: options.dirty_tracking,
        };
        self.call_handle(request, None).map(HwptId)
    }

    /// Allocate a nested HWPT: the user stage-1 table `stage1` over `parent`.
    pub fn hwpt_alloc_nested(
        &mut self,
        device: DeviceId,
        parent: HwptId,
        stage1: Stage1Config,
        fault: Option<FaultId>,
    ) -> Result<HwptId, Error> {
        let request = Request::HwptAllocNested {
            device: device.handle(),
            parent: parent.handle(),
            fault: fault.map(FaultId::handle),
            stage1,
        };
        self.call_handle(request, None).map(HwptId)
    }

    /// Carry out the `count` stage-1 invalidations (`iommu_abi::Invalidation`) the caller wrote
    /// at byte `offset` of the memory object `memory` (a capability transferred with the call)
    /// on the nested HWPT `hwpt`; returns how many were done (fewer than `count`: the entry at
    /// that index was invalid, and nothing after it was done).
    pub fn hwpt_invalidate(&mut self, hwpt: HwptId, memory: u64, offset: u64, count: u32) -> Result<u64, Error> {
        match self.call(Request::HwptInvalidate { hwpt: hwpt.handle(), offset, count }, Some(memory))? {
            Reply::Length(done) => Ok(done),
            _ => Err(Error::MalformedReply),
        }
    }

        /// Bind the device whose capability `device_cap` is transferred with the call.
    pub fn device_bind(&mut self, device_cap: u64) -> Result<DeviceId, Error> {
        self.call_handle(Request::DeviceBind, Some(device_cap)).map(DeviceId)
    }

    /// Attach `device` (or its `pasid`) to `hwpt`.
    pub fn device_attach(&mut self, device: DeviceId, hwpt: HwptId, pasid: Option<u32>) -> Result<(), Error> {
        self.call_empty(Request::DeviceAttach { device: device.handle(), hwpt: hwpt.handle(), pasid }, None)
    }

    /// Move an attached `device` (or its `pasid`) to `hwpt`: never a window of access to memory
    /// neither maps, though DMA may fault while the switch is under way (docs/ipc-api.md).
    pub fn device_replace(&mut self, device: DeviceId, hwpt: HwptId, pasid: Option<u32>) -> Result<(), Error> {
        self.call_empty(Request::DeviceReplace { device: device.handle(), hwpt: hwpt.handle(), pasid }, None)
    }

    /// Detach `device` (or its `pasid`): its DMA is blocked afterwards.
    pub fn device_detach(&mut self, device: DeviceId, pasid: Option<u32>) -> Result<(), Error> {
        self.call_empty(Request::DeviceDetach { device: device.handle(), pasid }, None)
    }

    /// Allocate a PASID (server-wide unique).
    pub fn pasid_alloc(&mut self) -> Result<u32, Error> {
        match self.call(Request::PasidAlloc, None)? {
            Reply::Pasid(pasid) => Ok(pasid),
            _ => Err(Error::MalformedReply),
        }
    }

    /// Free a PASID.
    pub fn pasid_free(&mut self, pasid: u32) -> Result<(), Error> {
        self.call_empty(Request::PasidFree { pasid }, None)
    }

    /// Share the process address space `address_space_cap` with `device` at `pasid`.
    pub fn sva_bind(
        &mut self,
        device: DeviceId,
        pasid: u32,
        address_space_cap: u64,
        fault: Option<FaultId>,
    ) -> Result<(), Error> {
        let request = Request::SvaBind { device: device.handle(), pasid, fault: fault.map(FaultId::handle) };
        self.call_empty(request, Some(address_space_cap))
    }

    /// Undo `sva_bind`.
    pub fn sva_unbind(&mut self, device: DeviceId, pasid: u32) -> Result<(), Error> {
        self.call_empty(Request::SvaUnbind { device: device.handle(), pasid }, None)
    }

    /// Allocate a fault queue.
    pub fn fault_alloc(&mut self) -> Result<FaultId, Error> {
        self.call_handle(Request::FaultAlloc, None).map(FaultId)
    }

    /// Read up to two fault records and the overflow count.
    pub fn fault_read(&mut self, fault: FaultId) -> Result<FaultBatch, Error> {
        match self.call(Request::FaultRead { fault: fault.handle() }, None)? {
            Reply::Faults(batch) => Ok(batch),
            _ => Err(Error::MalformedReply),
        }
    }

    /// Answer the page request with `cookie`.
    pub fn fault_respond(&mut self, fault: FaultId, cookie: u32, code: PageResponseCode) -> Result<(), Error> {
        self.call_empty(Request::FaultRespond { fault: fault.handle(), cookie, code }, None)
    }

    /// Switch dirty tracking of `hwpt`.
    pub fn hwpt_set_dirty_tracking(&mut self, hwpt: HwptId, enable: bool) -> Result<(), Error> {
        self.call_empty(Request::HwptSetDirtyTracking { hwpt: hwpt.handle(), enable }, None)
    }

    /// Read (and with `DirtyBits::Clear`, clear) the dirty bits of `[iova, iova + length)` at
    /// `page_size` granularity from an HWPT or (all HWPTs of) an IOAS. At most 384 pages per
    /// call.
    pub fn hwpt_get_dirty_bitmap(
        &mut self,
        target: Handle,
        iova: u64,
        length: u64,
        page_size: u64,
        bits: DirtyBits,
    ) -> Result<[u64; DIRTY_BITMAP_WORDS], Error> {
        let request = Request::HwptGetDirtyBitmap { target, iova, length, page_size, no_clear: bits == DirtyBits::Keep };
        match self.call(request, None)? {
            Reply::DirtyBitmap(words) => Ok(words),
            _ => Err(Error::MalformedReply),
        }
    }

    /// As `hwpt_get_dirty_bitmap`, for a range of any size (up to 2^24 pages): the server
    /// writes the bitmap into the memory object the capability in slot `memory` designates,
    /// `ceil(pages / 64)` words from its start. Returns the bytes reported dirty.
    pub fn hwpt_get_dirty_bitmap_into(
        &mut self,
        target: Handle,
        iova: u64,
        length: u64,
        page_size: u64,
        bits: DirtyBits,
        memory: u64,
    ) -> Result<u64, Error> {
        let request = Request::HwptGetDirtyBitmapInto { target, iova, length, page_size, no_clear: bits == DirtyBits::Keep };
        match self.call(request, Some(memory))? {
            Reply::Length(bytes) => Ok(bytes),
            _ => Err(Error::MalformedReply),
        }
    }

    /// Put a handle to the same object with `rights` (a subset) into `recipient`'s table;
    /// returns the new handle as numbered in the recipient's table.
    pub fn handle_derive(&mut self, handle: Handle, rights: Rights, recipient: u64) -> Result<Handle, Error> {
        self.call_handle(Request::HandleDerive { handle, rights, recipient }, None)
    }

    /// Let client `from` derive handles into this client's table (`accept`), or no longer.
    /// Deriving into another client fails with `NotAccepted` without it.
    pub fn handle_accept(&mut self, from: u64, accept: bool) -> Result<(), Error> {
        self.call_empty(Request::HandleAccept { from, accept }, None)
    }

    /// Revoke `handle` and every handle derived from it.
    pub fn handle_revoke(&mut self, handle: Handle) -> Result<(), Error> {
        self.call_empty(Request::HandleRevoke { handle }, None)
    }

    /// Destroy the object `handle` names.
    pub fn destroy(&mut self, handle: Handle) -> Result<(), Error> {
        self.call_empty(Request::Destroy { handle }, None)
    }

    /// Ask for `count` MSIs of `device` (a power of two the device's MSI capability
    /// supports): the server routes them (x86: one interrupt-remapping entry each, accepted
    /// only from the device), programs the device's MSI capability and puts one IRQ capability
    /// per MSI (CONTROL) into the caller's empty slots `first_slot..first_slot + count`, to
    /// be bound with `irq_bind`. They stay the caller's until the device is destroyed or
    /// the caller disconnects. Needs ATTACH on the device.
    pub fn msi_alloc(&mut self, device: DeviceId, count: u32, first_slot: u64) -> Result<(), Error> {
        self.call_empty(Request::MsiAlloc { device: device.handle(), count, first_slot }, None)
    }

    /// Describe `device`'s IOMMU unit.
    pub fn get_info(&mut self, device: DeviceId) -> Result<DeviceInfo, Error> {
        match self.call(Request::GetInfo { device: device.handle() }, None)? {
            Reply::Info(info) => Ok(info),
            _ => Err(Error::MalformedReply),
        }
    }
}
