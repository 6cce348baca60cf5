//! x86: a driver's MSIs through the server (`msi_alloc`), the only way a device gets an
//! interrupt once interrupt remapping is on.
//!
//! The root task gives the server a pool of MSI IRQ capabilities (`slots::MSI_POOL_FIRST`).
//! For `msi_alloc(device, count, first_slot)` the server checks the caller may attach the
//! device, takes `count` free lines, writes one IRTE per line naming the line's vector and
//! accepting the interrupt only from the device's requester ID (`VtdBackend::route_msis`),
//! programs the device's MSI capability in remappable format (it owns configuration space;
//! drivers never write it), and copies the lines' capabilities into the caller's slots with
//! CONTROL only (bind and acknowledge, nothing more).
//!
//! A route lives as long as the device stays bound: after every `destroy` and every client
//! teardown the server releases the routes of devices no longer bound, in the order that
//! leaves no interrupt behind: the device's MSI off, the IRTEs cleared and invalidated, the
//! driver's capabilities revoked, the lines unbound from its notification and back in the pool.

use alloc::vec::Vec;
use iommu_abi::wire::{Message, Reply, Request};
use iommu_abi::Error;
use iommu_core::{ClientId, RequesterId, UnitId};
use kernel_abi::Rights;
use userlib::{println, syscall};

use crate::slots;
use crate::state::State;
use crate::vtd_backend::MsiRoute;

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
    route: MsiRoute,
    lines: Vec<usize>,
}

/// The pool and the routes handed out.
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

    /// Whether any device has MSIs routed (only then can a teardown release one).
    pub fn has_routes(&self) -> bool {
        !self.grants.is_empty()
    }
}

impl State {
    /// Answers an `msi_alloc` request (module documentation). Out of line: the request path
    /// of every other operation stays as it was.
    #[cold]
    #[inline(never)]
    pub(crate) fn msi_alloc_request(&mut self, badge: u64, message: &Message, cap: Option<u64>) -> Message {
        let result = match Request::decode(message, cap.is_some()) {
            Ok(Request::MsiAlloc { device, count, first_slot }) => self.msi_alloc(badge, device, count, first_slot),
            Ok(_) => Err(Error::UnknownOpcode),
            Err(error) => Err(error),
        };
        match result {
            Ok(()) => Reply::Empty.encode(),
            Err(error) => Reply::encode_error(error),
        }
    }

    fn msi_alloc(&mut self, badge: u64, device: iommu_abi::Handle, count: u32, first_slot: u64) -> Result<(), Error> {
        let (unit, rid) = self.server.device_interrupt_source(ClientId(badge), device)?;
        if self.msis.grants.iter().any(|grant| grant.unit == unit && grant.rid == rid) {
            // One block per device: its MSI capability holds one address.
            return Err(Error::Busy);
        }
        let free: Vec<usize> = (0..self.msis.pool.len()).filter(|&i| !self.msis.pool[i].taken).take(count as usize).collect();
        if free.len() < count as usize {
            return Err(Error::NoResources);
        }
        let vectors: Vec<u8> = free.iter().map(|&i| self.msis.pool[i].vector).collect();
        let route = self.server.backend_mut().route_msis(unit, rid, &vectors)?;
        if let Err(error) = self.devices.program_msi(rid, route.msi.address, route.msi.data as u16, count) {
            self.server.backend_mut().release_msis(route);
            return Err(error);
        }
        let process = slots::CLIENT_PROCESS_BASE + badge;
        for (offset, &line) in free.iter().enumerate() {
            let granted = syscall::cap_grant(process, self.msis.pool[line].slot, first_slot.wrapping_add(offset as u64), Rights::CONTROL);
            if granted.is_err() {
                // The slot is taken or out of range: undo everything this request did.
                for &given in &free[..offset] {
                    let _ = syscall::cap_revoke(self.msis.pool[given].slot);
                }
                self.devices.disable_msi(rid);
                self.server.backend_mut().release_msis(route);
                return Err(Error::BadCapability);
            }
        }
        for &line in &free {
            self.msis.pool[line].taken = true;
        }
        println!(
            "iommu-server: device {:#06x}: {count} MSI(s) through IRTE {}.. (vectors {vectors:x?}), remappable address {:#x}",
            rid.0, route.first, route.msi.address
        );
        self.msis.grants.push(MsiGrant { unit, rid, route, lines: free });
        Ok(())
    }

    /// Releases the routes of devices no client has bound any more (module documentation).
    #[cold]
    #[inline(never)]
    pub(crate) fn release_unbound_msis(&mut self) {
        let mut index = 0;
        while index < self.msis.grants.len() {
            let grant = &self.msis.grants[index];
            if self.server.is_bound(grant.unit, grant.rid) {
                index += 1;
                continue;
            }
            let grant = self.msis.grants.swap_remove(index);
            self.devices.disable_msi(grant.rid);
            self.server.backend_mut().release_msis(grant.route);
            for line in grant.lines {
                let pool_line = &mut self.msis.pool[line];
                // Revoke first: from here on no driver holds the line to bind it again.
                let _ = syscall::cap_revoke(pool_line.slot);
                let _ = syscall::irq_unbind(pool_line.slot);
                pool_line.taken = false;
            }
            println!("iommu-server: device {:#06x} unbound: its MSI routes and lines released", grant.rid.0);
        }
    }
}
