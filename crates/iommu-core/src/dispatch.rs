//! The server side of the IPC protocol: the handler of each operation the protocol declares
//! (`iommu_abi::wire::Handler`), run against the [`ObjectModel`] for one client; decoding and
//! encoding follow from the declarations (`iommu_abi::wire::serve`). The server's main loop is
//! then
//!
//! ```text
//! loop { let (client, msg, cap) = receive(); reply(dispatch(&mut server, &mut kernel, client, &msg, cap)); }
//! ```
//!
//! Capabilities arriving with `device_bind` and `sva_bind` are turned into verified values
//! by a [`CapabilityVerifier`] (the kernel interface), so the object model only ever sees
//! grants the kernel vouched for. Memory capabilities go to the server's `MemorySource`.

use iommu_abi::wire::{self, FaultBatch, Handler, IovaChoice, Message, RangeList, DIRTY_BITMAP_WORDS, FAULTS_PER_MESSAGE, RANGES_PER_MESSAGE};
use iommu_abi::{DeviceInfo, Error, Handle, PageResponseCode, Perm, Rights, Stage1Config};

use crate::backend::{AddressSpace, IommuBackend, RequesterId, UnitId};
use crate::memory::MemorySource;
use crate::model::{DeviceGrant, HwptAllocOptions, IsolationGroup, ObjectModel};
use crate::ClientId;

/// Turns transferred capabilities into kernel-verified values.
pub trait CapabilityVerifier {
    /// The device the capability grants, or `BadCapability`.
    fn device_grant(&mut self, client: ClientId, cap: u64) -> Result<DeviceGrant, Error>;
    /// The isolation group of the device `device_grant` just verified, where the platform
    /// knows groups (`ObjectModel::device_bind_in_group`); by default each device is its own.
    fn device_group(&self, _grant: &DeviceGrant) -> Option<IsolationGroup> {
        None
    }
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
    server: &mut ObjectModel<B, M>,
    verifier: &mut V,
    client: ClientId,
    msg: &Message,
    cap: Option<u64>,
) -> Message {
    wire::serve(&mut Call { server, verifier, client }, msg, cap)
}

/// One request of `client`, with what its handlers need.
struct Call<'a, B: IommuBackend, M: MemorySource, V: CapabilityVerifier> {
    server: &'a mut ObjectModel<B, M>,
    verifier: &'a mut V,
    client: ClientId,
}

impl<B: IommuBackend, M: MemorySource, V: CapabilityVerifier> Handler for Call<'_, B, M, V> {
    fn ioas_alloc(&mut self) -> Result<Handle, Error> {
        self.server.ioas_alloc(self.client)
    }

    fn ioas_map(&mut self, ioas: Handle, iova: IovaChoice, offset: u64, length: u64, perm: Perm, memory: u64) -> Result<u64, Error> {
        self.server.ioas_map(self.client, ioas, memory, offset, length, iova, perm)
    }

    fn ioas_unmap(&mut self, ioas: Handle, iova: u64, length: u64) -> Result<u64, Error> {
        self.server.ioas_unmap(self.client, ioas, iova, length)
    }

    fn ioas_unmap_all(&mut self, ioas: Handle) -> Result<u64, Error> {
        self.server.ioas_unmap_all(self.client, ioas)
    }

    fn ioas_copy(&mut self, dst: Handle, src: Handle, dst_iova: IovaChoice, src_iova: u64, length: u64, perm: Perm) -> Result<u64, Error> {
        self.server.ioas_copy(self.client, dst, dst_iova, src, src_iova, length, perm)
    }

    fn ioas_iova_ranges(&mut self, ioas: Handle, first: u32) -> Result<(u32, RangeList), Error> {
        let ranges = self.server.ioas_iova_ranges(self.client, ioas)?;
        let total = u32::try_from(ranges.len()).map_err(|_| Error::NoResources)?;
        let page: &[_] = ranges.get(first as usize..).unwrap_or(&[]);
        let page = &page[..page.len().min(RANGES_PER_MESSAGE)];
        Ok((total, RangeList::new(page)?))
    }

    fn ioas_allow_iovas(&mut self, ioas: Handle, ranges: RangeList) -> Result<(), Error> {
        self.server.ioas_allow_iovas(self.client, ioas, ranges.as_slice())
    }

    fn hwpt_alloc(&mut self, device: Handle, ioas: Handle, fault: Option<Handle>, nest_parent: bool, dirty_tracking: bool) -> Result<Handle, Error> {
        let options = HwptAllocOptions { nest_parent, dirty_tracking, fault };
        self.server.hwpt_alloc(self.client, device, ioas, options)
    }

    fn hwpt_alloc_nested(&mut self, device: Handle, parent: Handle, fault: Option<Handle>, stage1: Stage1Config) -> Result<Handle, Error> {
        self.server.hwpt_alloc_nested(self.client, device, parent, stage1, fault)
    }

    fn device_bind(&mut self, device: u64) -> Result<Handle, Error> {
        let grant = self.verifier.device_grant(self.client, device)?;
        let group = self.verifier.device_group(&grant);
        self.server.device_bind_in_group(self.client, grant, group)
    }

    fn device_attach(&mut self, device: Handle, hwpt: Handle, pasid: Option<u32>) -> Result<(), Error> {
        self.server.device_attach(self.client, device, hwpt, pasid)
    }

    fn device_replace(&mut self, device: Handle, hwpt: Handle, pasid: Option<u32>) -> Result<(), Error> {
        self.server.device_replace(self.client, device, hwpt, pasid)
    }

    fn device_detach(&mut self, device: Handle, pasid: Option<u32>) -> Result<(), Error> {
        self.server.device_detach(self.client, device, pasid)
    }

    fn pasid_alloc(&mut self) -> Result<u32, Error> {
        self.server.pasid_alloc(self.client)
    }

    fn pasid_free(&mut self, pasid: u32) -> Result<(), Error> {
        self.server.pasid_free(self.client, pasid)
    }

    fn sva_bind(&mut self, device: Handle, pasid: u32, fault: Option<Handle>, address_space: u64) -> Result<(), Error> {
        let address_space = self.verifier.address_space(self.client, address_space)?;
        self.server.sva_bind(self.client, device, pasid, address_space, fault)
    }

    fn sva_unbind(&mut self, device: Handle, pasid: u32) -> Result<(), Error> {
        self.server.sva_unbind(self.client, device, pasid)
    }

    fn fault_alloc(&mut self) -> Result<Handle, Error> {
        self.server.fault_alloc(self.client)
    }

    fn fault_read(&mut self, fault: Handle) -> Result<FaultBatch, Error> {
        let mut batch = FaultBatch::new(0, &[]).expect("an empty batch");
        let overflow = self.server.fault_read(self.client, fault, FAULTS_PER_MESSAGE, |record| {
            let taken = batch.push(record);
            debug_assert!(taken, "read at most FAULTS_PER_MESSAGE records");
        })?;
        batch.overflow = u32::try_from(overflow).unwrap_or(u32::MAX);
        Ok(batch)
    }

    fn fault_respond(&mut self, fault: Handle, cookie: u32, code: PageResponseCode) -> Result<(), Error> {
        self.server.fault_respond(self.client, fault, cookie, code)
    }

    fn hwpt_set_dirty_tracking(&mut self, hwpt: Handle, enable: bool) -> Result<(), Error> {
        self.server.hwpt_set_dirty_tracking(self.client, hwpt, enable)
    }

    fn hwpt_get_dirty_bitmap(&mut self, target: Handle, iova: u64, length: u64, page_size: u64, no_clear: bool) -> Result<[u64; DIRTY_BITMAP_WORDS], Error> {
        let bitmap = self.server.get_dirty_bitmap(self.client, target, iova, length, page_size, !no_clear)?;
        let mut words = [0u64; DIRTY_BITMAP_WORDS];
        // The decoder bounded the page count by the reply's capacity.
        words[..bitmap.len()].copy_from_slice(&bitmap);
        Ok(words)
    }

    fn handle_derive(&mut self, handle: Handle, rights: Rights, recipient: u64) -> Result<Handle, Error> {
        self.server.handle_derive(self.client, handle, rights, ClientId(recipient))
    }

    fn handle_revoke(&mut self, handle: Handle) -> Result<(), Error> {
        self.server.handle_revoke(self.client, handle)
    }

    fn destroy(&mut self, handle: Handle) -> Result<(), Error> {
        self.server.destroy(self.client, handle)
    }

    fn get_info(&mut self, device: Handle) -> Result<DeviceInfo, Error> {
        self.server.get_info(self.client, device)
    }

    fn memory_register(&mut self, memory: u64) -> Result<Handle, Error> {
        self.server.memory_register(self.client, memory)
    }

    fn ioas_map_registered(&mut self, ioas: Handle, iova: IovaChoice, offset: u64, length: u64, memory: Handle, perm: Perm) -> Result<u64, Error> {
        self.server.ioas_map_registered(self.client, ioas, memory, offset, length, iova, perm)
    }

    fn handle_accept(&mut self, from: u64, accept: bool) -> Result<(), Error> {
        self.server.handle_accept(self.client, ClientId(from), accept)
    }

    fn hwpt_invalidate(&mut self, hwpt: Handle, offset: u64, count: u32, memory: u64) -> Result<u64, Error> {
        self.server.hwpt_invalidate(self.client, hwpt, memory, offset, count)
    }

    fn msi_alloc(&mut self, device: Handle, count: u32, first_slot: u64) -> Result<(), Error> {
        let (unit, rid) = self.server.device_interrupt_source(self.client, device)?;
        self.verifier.msi_alloc(self.server.backend_mut(), self.client, unit, rid, count, first_slot)
    }

    fn hwpt_get_dirty_bitmap_into(&mut self, target: Handle, iova: u64, length: u64, page_size: u64, no_clear: bool, memory: u64) -> Result<u64, Error> {
        self.server.get_dirty_bitmap_into(self.client, target, iova, length, page_size, !no_clear, memory)
    }
}
