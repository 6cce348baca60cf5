//! A driver's MSIs through the server (`msi_alloc`): the device's MSI capability, which the
//! server programs on both architectures ([`ConfigSpace`]), and, on x86, the line pool. arm's
//! side (GICv3 ITS) is `crate::arm::msi`.
//!
//! x86: `msi_alloc` is the only way a device gets an interrupt once interrupt remapping is on.
//!
//! The root task gives the server a pool of MSI IRQ capabilities (`slots::MSI_POOL_FIRST`).
//! For `msi_alloc(device, count, first_slot)` the object model checks the caller may attach the
//! device; then the server takes `count` free lines, has the backend write one IRTE per line
//! naming the line's vector and accepting the interrupt only from the device's requester ID
//! (`VtdBackend::route_msis`), programs the device's MSI capability in remappable format (it
//! owns configuration space; drivers never write it), and copies the lines' capabilities into
//! the caller's slots with CONTROL only (bind and acknowledge, nothing more).
//!
//! A route lives as long as the device stays bound. When the device object goes (`destroy`,
//! its owner's disconnect or end) the object model has the backend clear the IRTEs at once
//! (`release_msis`: from then on the device's MSIs fault); the rest is done by
//! [`Msis::release_stale`] at the next `msi_alloc` and at every client
//! teardown: the device's MSI off, the driver's capabilities revoked, the lines unbound from
//! its notification and back in the pool. Kept off the request path of other operations.

#[cfg(target_arch = "x86_64")]
use alloc::vec::Vec;
use fwtables::dmar::pci::PciAddress;
use iommu_abi::Error;
#[cfg(target_arch = "x86_64")]
use iommu_core::RequesterId;
#[cfg(target_arch = "x86_64")]
use iommu_core::{ClientId, IommuBackend, UnitId};
#[cfg(target_arch = "x86_64")]
use kernel_abi::Rights;
#[cfg(target_arch = "x86_64")]
use userlib::{println, syscall};

use crate::discovery::{Ecam, PciFunction};
#[cfg(target_arch = "x86_64")]
use crate::slots;

/// One line of the pool.
#[cfg(target_arch = "x86_64")]
struct PoolLine {
    slot: u64,
    vector: u8,
    taken: bool,
}

/// A device's routed MSIs and the pool lines serving them.
#[cfg(target_arch = "x86_64")]
struct MsiGrant {
    unit: UnitId,
    rid: RequesterId,
    /// The function whose MSI capability was programmed (several may share `rid`).
    function: PciAddress,
    lines: Vec<usize>,
}

/// The pool and the lines handed out.
#[cfg(target_arch = "x86_64")]
pub struct Msis {
    pool: Vec<PoolLine>,
    grants: Vec<MsiGrant>,
}

/// The MSI capability (PCI Local Bus 3.0, 6.8.1): ID 05h; Message Control is the upper half
/// of its first dword: enable bit 0, Multiple Message Capable bits 3:1, Multiple Message
/// Enable bits 6:4, 64-bit address bit 7. Then Message Address (+4), with bit 7 the upper
/// address (+8) and Message Data at +12, else Message Data at +8.
mod msi_capability {
    pub const ID: u32 = 0x05;
    pub const ENABLE: u32 = 1 << 0;
    pub const CAPABLE_SHIFT: u32 = 1;
    pub const ENABLED_SHIFT: u32 = 4;
    pub const ADDRESS_64: u32 = 1 << 7;
    /// Command register (offset 04h) bit 10: INTx disabled.
    pub const INTX_DISABLE: u32 = 1 << 10;
}

/// The configuration space the server owns (it programs MSI capabilities itself; drivers
/// never write them): the enumerated functions and ECAM, borrowed from the device registry.
pub struct ConfigSpace<'a> {
    pub functions: &'a [PciFunction],
    pub ecam: Option<&'a mut Ecam>,
}

impl ConfigSpace<'_> {
    /// The same configuration space, borrowed again for a call that does not keep it.
    #[cfg(target_arch = "x86_64")]
    fn reborrow(&mut self) -> ConfigSpace<'_> {
        ConfigSpace { functions: self.functions, ecam: self.ecam.as_deref_mut() }
    }

    /// The offset of the function's MSI capability, walking the capability list from 34h
    /// (status bit 4 says there is one). By the function's own location: behind a PCIe-to-PCI
    /// bridge every function's DMA (and MSI) carries the bridge's requester ID.
    fn msi_capability(&mut self, address: PciAddress) -> Option<(PciAddress, u16)> {
        self.functions.iter().find(|f| f.address == address)?;
        let ecam = self.ecam.as_deref_mut()?;
        if ecam.read32(address, 0x04) >> 16 & 1 << 4 == 0 {
            return None;
        }
        let mut offset = (ecam.read32(address, 0x34) & 0xfc) as u16;
        // At most 48 capabilities fit in the 192 bytes after the header: a loop stops there.
        for _ in 0..48 {
            if offset == 0 {
                return None;
            }
            let header = ecam.read32(address, offset);
            if header & 0xff == msi_capability::ID {
                return Some((address, offset));
            }
            offset = (header >> 8 & 0xfc) as u16;
        }
        None
    }

    /// Programs the function's MSI capability with `address`/`data` for `count` messages
    /// and enables it (INTx off). The capability is disabled while it is rewritten.
    pub fn program_msi(&mut self, function: PciAddress, address: u32, data: u16, count: u32) -> Result<(), Error> {
        let (function, cap) = self.msi_capability(function).ok_or(Error::NotSupported)?;
        let ecam = self.ecam.as_deref_mut().ok_or(Error::NotSupported)?;
        let header = ecam.read32(function, cap);
        let control = header >> 16;
        if count > 1 << (control >> msi_capability::CAPABLE_SHIFT & 7) {
            return Err(Error::InvalidRange);
        }
        let keep = header & 0xffff;
        let disabled = control & !(msi_capability::ENABLE | 7 << msi_capability::ENABLED_SHIFT);
        ecam.write32(function, cap, disabled << 16 | keep);
        ecam.write32(function, cap + 4, address);
        let data_offset = if control & msi_capability::ADDRESS_64 != 0 {
            ecam.write32(function, cap + 8, 0);
            12
        } else {
            8
        };
        ecam.write32(function, cap + data_offset, u32::from(data));
        let command = ecam.read32(function, 0x04) & 0xffff;
        ecam.write32(function, 0x04, command | msi_capability::INTX_DISABLE);
        let enabled = disabled | msi_capability::ENABLE | count.trailing_zeros() << msi_capability::ENABLED_SHIFT;
        ecam.write32(function, cap, enabled << 16 | keep);
        Ok(())
    }

    /// Turns the function's MSI off and clears its address and data.
    pub fn disable_msi(&mut self, function: PciAddress) {
        let Some((function, cap)) = self.msi_capability(function) else { return };
        let Some(ecam) = self.ecam.as_deref_mut() else { return };
        let header = ecam.read32(function, cap);
        let control = header >> 16 & !(msi_capability::ENABLE | 7 << msi_capability::ENABLED_SHIFT);
        ecam.write32(function, cap, control << 16 | header & 0xffff);
        ecam.write32(function, cap + 4, 0);
    }
}

#[cfg(target_arch = "x86_64")]
impl Msis {
    /// The lines of the pool slots the root task filled (a slot that holds no MSI line, or
    /// the fault event's line, is left out).
    pub fn from_slots() -> Msis {
        let mut pool = Vec::new();
        for slot in slots::MSI_POOL_FIRST..slots::MSI_POOL_FIRST + slots::MSI_POOL_COUNT {
            let Ok(line) = syscall::irq_info(slot) else { continue };
            let index = line.wrapping_sub(slots::MSI_LINE_BASE);
            if index >= slots::MSI_LINES || index == u64::from(slots::FAULT_MSI_INDEX) {
                println!("iommu-server: MSI pool slot {slot} holds line {line}, not a device MSI line: not used");
                continue;
            }
            pool.push(PoolLine { slot, vector: (slots::MSI_VECTOR_BASE as u64 + index) as u8, taken: false });
        }
        Msis { pool, grants: Vec::new() }
    }

    pub fn pool_size(&self) -> usize {
        self.pool.len()
    }

    /// `msi_alloc` (module documentation).
    #[allow(clippy::too_many_arguments)] // the request's fields, plus where to program it
    pub fn allocate<B: IommuBackend>(
        &mut self,
        mut config: ConfigSpace<'_>,
        backend: &mut B,
        client: ClientId,
        (unit, rid, function): (UnitId, RequesterId, PciAddress),
        count: u32,
        first_slot: u64,
    ) -> Result<(), Error> {
        self.release_stale(config.reborrow(), backend);
        let free: Vec<usize> = (0..self.pool.len()).filter(|&i| !self.pool[i].taken).take(count as usize).collect();
        if free.len() < count as usize {
            return Err(Error::NoResources);
        }
        let vectors: Vec<u8> = free.iter().map(|&i| self.pool[i].vector).collect();
        // Refused with Busy if the device has its MSIs already: its capability holds one address.
        let message = backend.route_msis(unit, rid, &vectors)?;
        if let Err(error) = config.program_msi(function, message.address, message.data as u16, count) {
            backend.release_msis(unit, rid);
            return Err(error);
        }
        let process = slots::CLIENT_PROCESS_BASE + client.0;
        for (offset, &line) in free.iter().enumerate() {
            let granted = syscall::cap_grant(process, self.pool[line].slot, first_slot.wrapping_add(offset as u64), Rights::CONTROL);
            if granted.is_err() {
                // The slot is taken or out of range: undo everything this request did.
                for &given in &free[..offset] {
                    let _ = syscall::cap_revoke(self.pool[given].slot);
                }
                config.disable_msi(function);
                backend.release_msis(unit, rid);
                return Err(Error::BadCapability);
            }
        }
        for &line in &free {
            self.pool[line].taken = true;
        }
        self.grants.push(MsiGrant { unit, rid, function, lines: free });
        Ok(())
    }

    /// Finishes releasing the MSIs of devices whose routes the backend dropped (module
    /// documentation), in the order that leaves nothing behind: MSI off, capabilities
    /// revoked (no driver can bind the line again), lines unbound and back in the pool.
    pub fn release_stale<B: IommuBackend>(&mut self, mut config: ConfigSpace<'_>, backend: &B) {
        let mut index = 0;
        while index < self.grants.len() {
            let grant = &self.grants[index];
            if backend.msis_routed(grant.unit, grant.rid) {
                index += 1;
                continue;
            }
            let grant = self.grants.swap_remove(index);
            config.disable_msi(grant.function);
            for line in grant.lines {
                let pool_line = &mut self.pool[line];
                let _ = syscall::cap_revoke(pool_line.slot);
                let _ = syscall::irq_unbind(pool_line.slot);
                pool_line.taken = false;
            }
            println!("iommu-server: device {:#06x}: its MSI lines are back in the pool", grant.rid.0);
        }
    }
}
