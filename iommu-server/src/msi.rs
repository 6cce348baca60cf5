//! x86: a driver's MSIs through the server (`msi_alloc`), the only way a device gets an
//! interrupt once interrupt remapping is on.
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
//! [`DeviceRegistry::release_stale_msis`] at the next `msi_alloc` and at every client
//! teardown: the device's MSI off, the driver's capabilities revoked, the lines unbound from
//! its notification and back in the pool. Kept off the request path of other operations.

use alloc::vec::Vec;
use iommu_abi::Error;
use iommu_core::{ClientId, IommuBackend, RequesterId, UnitId};
use kernel_abi::Rights;
use userlib::{println, syscall};

use crate::kernel_iface::DeviceRegistry;
use crate::slots;

/// One line of the pool.
struct PoolLine {
    slot: u64,
    vector: u8,
    taken: bool,
}

/// A device's routed MSIs and the pool lines serving them.
struct MsiGrant {
    unit: UnitId,
    rid: RequesterId,
    lines: Vec<usize>,
}

/// The pool and the lines handed out.
pub struct Msis {
    pool: Vec<PoolLine>,
    grants: Vec<MsiGrant>,
}

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
}

impl DeviceRegistry {
    /// `msi_alloc` (module documentation).
    pub(crate) fn allocate_msis<B: IommuBackend>(&mut self, backend: &mut B, client: ClientId, unit: UnitId, rid: RequesterId, count: u32, first_slot: u64) -> Result<(), Error> {
        self.release_stale_msis(backend);
        let free: Vec<usize> = (0..self.msis.pool.len()).filter(|&i| !self.msis.pool[i].taken).take(count as usize).collect();
        if free.len() < count as usize {
            return Err(Error::NoResources);
        }
        let vectors: Vec<u8> = free.iter().map(|&i| self.msis.pool[i].vector).collect();
        // Refused with Busy if the device has its MSIs already: its capability holds one address.
        let message = backend.route_msis(unit, rid, &vectors)?;
        if let Err(error) = self.program_msi(rid, message.address, message.data as u16, count) {
            backend.release_msis(unit, rid);
            return Err(error);
        }
        let process = slots::CLIENT_PROCESS_BASE + client.0;
        for (offset, &line) in free.iter().enumerate() {
            let granted = syscall::cap_grant(process, self.msis.pool[line].slot, first_slot.wrapping_add(offset as u64), Rights::CONTROL);
            if granted.is_err() {
                // The slot is taken or out of range: undo everything this request did.
                for &given in &free[..offset] {
                    let _ = syscall::cap_revoke(self.msis.pool[given].slot);
                }
                self.disable_msi(rid);
                backend.release_msis(unit, rid);
                return Err(Error::BadCapability);
            }
        }
        for &line in &free {
            self.msis.pool[line].taken = true;
        }
        self.msis.grants.push(MsiGrant { unit, rid, lines: free });
        Ok(())
    }

    /// Finishes releasing the MSIs of devices whose routes the backend dropped (module
    /// documentation), in the order that leaves nothing behind: MSI off, capabilities
    /// revoked (no driver can bind the line again), lines unbound and back in the pool.
    pub(crate) fn release_stale_msis<B: IommuBackend>(&mut self, backend: &B) {
        let mut index = 0;
        while index < self.msis.grants.len() {
            let grant = &self.msis.grants[index];
            if backend.msis_routed(grant.unit, grant.rid) {
                index += 1;
                continue;
            }
            let grant = self.msis.grants.swap_remove(index);
            self.disable_msi(grant.rid);
            for line in grant.lines {
                let pool_line = &mut self.msis.pool[line];
                let _ = syscall::cap_revoke(pool_line.slot);
                let _ = syscall::irq_unbind(pool_line.slot);
                pool_line.taken = false;
            }
            println!("iommu-server: device {:#06x}: its MSI lines are back in the pool", grant.rid.0);
        }
    }
}
