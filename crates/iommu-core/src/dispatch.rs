//! The server side of the IPC protocol: decode one request, run it against the
//! [`Server`], encode the reply. The server's main loop is then
//!
//! ```text
//! loop { let (client, msg, cap) = receive(); reply(dispatch(&mut server, &mut kernel, client, &msg, cap)); }
//! ```
//!
//! Capabilities arriving with `device_bind` and `sva_bind` are turned into verified values
//! by a [`CapabilityVerifier`] (the kernel interface), so the object model only ever sees
//! grants the kernel vouched for. Memory capabilities go to the server's `MemorySource`.

use iommu_abi::wire::{FaultBatch, Message, RangeList, Reply, Request, DIRTY_BITMAP_WORDS, FAULTS_PER_MESSAGE, RANGES_PER_MESSAGE};
use iommu_abi::Error;

use crate::backend::{AddressSpace, IommuBackend, RequesterId, UnitId};
use crate::memory::MemorySource;
use crate::server::{DeviceGrant, HwptAllocOptions, Server};
use crate::ClientId;

/// Turns transferred capabilities into kernel-verified values.
pub trait CapabilityVerifier {
    /// The device the capability grants, or `BadCapability`.
    fn device_grant(&mut self, client: ClientId, cap: u64) -> Result<DeviceGrant, Error>;
    /// The process address space the capability designates, or `BadCapability`.
    fn address_space(&mut self, client: ClientId, cap: u64) -> Result<AddressSpace, Error>;
    /// Gives `client` `count` MSIs of the device `rid` on `unit` (whose handle it holds with
    /// ATTACH): interrupt lines, routed with `backend.route_msis`, the device's MSI
    /// capability programmed, IRQ capabilities from `first_slot` of the client's capability
    /// space. A platform without it keeps this default.
    fn msi_alloc<B: IommuBackend>(&mut self, _backend: &mut B, _client: ClientId, _unit: UnitId, _rid: RequesterId, _count: u32, _first_slot: u64) -> Result<(), Error> {
        Err(Error::NotSupported)
    }
}

/// Handle one request from `client`; returns the reply message (replies never carry a
/// capability).
pub fn dispatch<B: IommuBackend, M: MemorySource, V: CapabilityVerifier>(
    server: &mut Server<B, M>,
    verifier: &mut V,
    client: ClientId,
    msg: &Message,
    cap: Option<u64>,
) -> Message {
    execute(server, verifier, client, msg, cap).unwrap_or_else(Reply::encode_error)
}

fn execute<B: IommuBackend, M: MemorySource, V: CapabilityVerifier>(
    server: &mut Server<B, M>,
    verifier: &mut V,
    client: ClientId,
    msg: &Message,
    cap: Option<u64>,
) -> Result<Message, Error> {
    let request = Request::decode(msg, cap.is_some())?;
    // `decode` guarantees a capability is present exactly for the opcodes that take one.
    let cap = cap.unwrap_or(0);
    let reply = match request {
        Request::IoasAlloc => Reply::Handle(server.ioas_alloc(client)?),
        Request::IoasMap { ioas, iova, perm, offset, length } => {
            Reply::Iova(server.ioas_map(client, ioas, cap, offset, length, iova, perm)?)
        }
        Request::MemoryRegister => Reply::Handle(server.memory_register(client, cap)?),
        Request::IoasMapRegistered { ioas, memory, iova, perm, offset, length } => {
            Reply::Iova(server.ioas_map_registered(client, ioas, memory, offset, length, iova, perm)?)
        }
        Request::IoasUnmap { ioas, iova, length } => Reply::Length(server.ioas_unmap(client, ioas, iova, length)?),
        Request::IoasUnmapAll { ioas } => Reply::Length(server.ioas_unmap_all(client, ioas)?),
        Request::IoasCopy { dst, dst_iova, src, src_iova, length, perm } => {
            Reply::Iova(server.ioas_copy(client, dst, dst_iova, src, src_iova, length, perm)?)
        }
        Request::IoasIovaRanges { ioas, first } => {
            let ranges = server.ioas_iova_ranges(client, ioas)?;
            let total = u32::try_from(ranges.len()).map_err(|_| Error::NoResources)?;
            let page: &[_] = ranges.get(first as usize..).unwrap_or(&[]);
            let page = &page[..page.len().min(RANGES_PER_MESSAGE)];
            Reply::IovaRanges { total, ranges: RangeList::new(page)? }
        }
        Request::IoasAllowIovas { ioas, ranges } => {
            server.ioas_allow_iovas(client, ioas, ranges.as_slice())?;
            Reply::Empty
        }
        Request::HwptAlloc { device, ioas, fault, nest_parent, dirty_tracking } => {
            let options = HwptAllocOptions { nest_parent, dirty_tracking, fault };
            Reply::Handle(server.hwpt_alloc(client, device, ioas, options)?)
        }
        Request::HwptAllocNested { device, parent, fault, stage1 } => {
            Reply::Handle(server.hwpt_alloc_nested(client, device, parent, stage1, fault)?)
        }
        Request::DeviceBind => {
            let grant = verifier.device_grant(client, cap)?;
            Reply::Handle(server.device_bind(client, grant)?)
        }
        Request::DeviceAttach { device, hwpt, pasid } => {
            server.device_attach(client, device, hwpt, pasid)?;
            Reply::Empty
        }
        Request::DeviceReplace { device, hwpt, pasid } => {
            server.device_replace(client, device, hwpt, pasid)?;
            Reply::Empty
        }
        Request::DeviceDetach { device, pasid } => {
            server.device_detach(client, device, pasid)?;
            Reply::Empty
        }
        Request::PasidAlloc => Reply::Pasid(server.pasid_alloc(client)?),
        Request::PasidFree { pasid } => {
            server.pasid_free(client, pasid)?;
            Reply::Empty
        }
        Request::SvaBind { device, pasid, fault } => {
            let address_space = verifier.address_space(client, cap)?;
            server.sva_bind(client, device, pasid, address_space, fault)?;
            Reply::Empty
        }
        Request::SvaUnbind { device, pasid } => {
            server.sva_unbind(client, device, pasid)?;
            Reply::Empty
        }
        Request::FaultAlloc => Reply::Handle(server.fault_alloc(client)?),
        Request::FaultRead { fault } => {
            let readout = server.fault_read(client, fault, FAULTS_PER_MESSAGE)?;
            let overflow = u32::try_from(readout.overflow).unwrap_or(u32::MAX);
            let batch = FaultBatch::new(overflow, &readout.records).expect("read at most FAULTS_PER_MESSAGE records");
            Reply::Faults(batch)
        }
        Request::FaultRespond { fault, cookie, code } => {
            server.fault_respond(client, fault, cookie, code)?;
            Reply::Empty
        }
        Request::HwptSetDirtyTracking { hwpt, enable } => {
            server.hwpt_set_dirty_tracking(client, hwpt, enable)?;
            Reply::Empty
        }
        Request::HwptGetDirtyBitmap { target, iova, length, page_size } => {
            let bitmap = server.get_dirty_bitmap(client, target, iova, length, page_size)?;
            let mut words = [0u64; DIRTY_BITMAP_WORDS];
            // `decode` bounded the page count by the reply's capacity.
            words[..bitmap.len()].copy_from_slice(&bitmap);
            Reply::DirtyBitmap(words)
        }
        Request::HandleDerive { handle, rights, recipient } => {
            Reply::Handle(server.handle_derive(client, handle, rights, ClientId(recipient))?)
        }
        Request::HandleAccept { from, accept } => {
            server.handle_accept(client, ClientId(from), accept)?;
            Reply::Empty
        }
        Request::HandleRevoke { handle } => {
            server.handle_revoke(client, handle)?;
            Reply::Empty
        }
        Request::Destroy { handle } => {
            server.destroy(client, handle)?;
            Reply::Empty
        }
        Request::GetInfo { device } => Reply::Info(server.get_info(client, device)?),
        Request::MsiAlloc { device, count, first_slot } => {
            let (unit, rid) = server.device_interrupt_source(client, device)?;
            verifier.msi_alloc(server.backend_mut(), client, unit, rid, count, first_slot)?;
            Reply::Empty
        }
    };
    // Encoded here, where the reply's variant is known, rather than moved out as a `Reply`.
    Ok(reply.encode())
}
