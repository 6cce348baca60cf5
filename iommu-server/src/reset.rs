//! Devices between owners: nothing one driver left in a device reaches the next.
//!
//! When a device leaves its owner (an unbind, its owner's disconnect or end, the revocation of
//! the capability it was bound with) the server, which owns configuration space, quiesces it
//! (bus mastering off, MSI and MSI-X off), resets it with the best method it has (`pci::reset`:
//! PCI Express FLR, Advanced Features FLR, D3hot → D0, or a secondary bus reset when it is
//! alone below its bridge) and writes back the configuration it set up (BARs, command
//! register, PCI Express control). MSIs are reprogrammed by the next `msi_alloc`. All of this
//! happens before the device can be bound again: the bind, the unbind and this run under the
//! one state lock, and the check runs right after each request that removed an object, after
//! each teardown and after each revocation.
//!
//! A device with no reset method is quiesced only, and may still go to another owner (as
//! Linux's VFIO allows): its internal state (buffers, registers) may reach that owner, but its
//! DMA still reaches only what the new owner maps. The server logs this once per device and
//! counts it (`status::QUIESCED_WITHOUT_RESET`); resets are counted in `status::RESETS`.
//!
//! A server that takes over from an ended one (`start::RESTARTED`) does not know which devices
//! had owners: it treats every translated endpoint with bus mastering on as one that had
//! (firmware may have turned it on too; such a device is blocked by the IOMMU anyway).

use alloc::vec::Vec;
use iommu_core::{IommuBackend, MemorySource, ObjectId, ObjectModel, RequesterId, UnitId};
use pci::reset::{Delay, Outcome};
use userlib::{println, syscall};

use crate::kernel_iface::DeviceRegistry;
use crate::status::{self, StatusPage};

/// A device handed out by `device_grant`: the function (its index in
/// `DeviceRegistry::functions`), as what it is bound, and the device object once bound.
#[derive(Clone, Copy)]
struct HandedOut {
    function: usize,
    unit: UnitId,
    rid: RequesterId,
    device: Option<ObjectId>,
}

/// The devices handed out and the ones logged as not resettable.
#[derive(Default)]
pub struct Handovers {
    handed_out: Vec<HandedOut>,
    logged_without_method: Vec<usize>,
}

impl Handovers {
    /// `device_grant` turned the function's bus mastering on for a bind.
    pub fn granted(&mut self, function: usize, unit: UnitId, rid: RequesterId) {
        self.handed_out.push(HandedOut { function, unit, rid, device: None });
    }

    /// A grant whose bind has not been seen yet.
    pub fn unsettled(&self) -> bool {
        self.handed_out.iter().any(|handed| handed.device.is_none())
    }
}

/// Waits on the instruction counter, which counts nanoseconds as `crate::hw::TscClock` does,
/// yielding meanwhile.
struct InstructionClock;

impl Delay for InstructionClock {
    fn wait_ms(&mut self, milliseconds: u32) {
        let start = syscall::instruction_counter();
        let span = u64::from(milliseconds) * 1_000_000;
        while syscall::instruction_counter().wrapping_sub(start) < span {
            syscall::yield_now();
        }
    }
}

/// Follows the devices handed out: a bind adopts its device; a device no longer bound left its
/// owner and is reset (or, if its bind never succeeded, only quiesced again).
pub fn settle<B: IommuBackend, M: MemorySource>(server: &ObjectModel<B, M>, devices: &mut DeviceRegistry, page: &StatusPage) {
    let mut index = 0;
    while index < devices.handovers.handed_out.len() {
        let handed = devices.handovers.handed_out[index];
        match (handed.device, server.bound_device(handed.unit, handed.rid)) {
            (Some(mine), Some(now)) if mine == now => index += 1,
            (_, Some(now)) => {
                // A bind of a device someone else holds, refused: that holder's entry follows it.
                let held = devices.handovers.handed_out.iter().enumerate().any(|(other, h)| other != index && h.device == Some(now));
                if held {
                    devices.handovers.handed_out.swap_remove(index);
                } else {
                    devices.handovers.handed_out[index].device = Some(now);
                    index += 1;
                }
            }
            (owned, None) => {
                devices.handovers.handed_out.swap_remove(index);
                let still_granted = devices.handovers.handed_out.iter().any(|h| h.function == handed.function);
                if owned.is_some() {
                    reset(devices, handed.function, page);
                } else if !still_granted {
                    // Its bind failed: no owner had it, but the grant turned bus mastering on.
                    quiesce(devices, handed.function);
                }
            }
        }
    }
}

/// A new server taking over from an ended one: every translated endpoint with bus mastering on
/// had an owner (the ended server turned it on at the bind) and is reset.
pub fn take_over(devices: &mut DeviceRegistry, page: &StatusPage) {
    for function in 0..devices.functions.len() {
        let Some(ecam) = devices.ecam.as_mut() else { return };
        let address = devices.functions[function].address;
        let header = ecam.read32(address, pci::regs::HEADER_DWORD) >> pci::regs::HEADER_SHIFT;
        let endpoint = header as u8 & pci::regs::HEADER_LAYOUT == 0;
        let mastering = ecam.read32(address, pci::regs::COMMAND) & pci::regs::command::BUS_MASTER != 0;
        if devices.functions[function].unit.is_some() && endpoint && mastering {
            reset(devices, function, page);
        }
    }
}

fn quiesce(devices: &mut DeviceRegistry, function: usize) {
    let address = devices.functions[function].address;
    if let Some(ecam) = devices.ecam.as_mut() {
        pci::reset::quiesce(ecam, pci_address(address));
    }
}

/// Quiesces, resets and restores the function, counting the outcome.
fn reset(devices: &mut DeviceRegistry, function: usize, page: &StatusPage) {
    let Some(ecam) = devices.ecam.as_mut() else { return };
    let address = devices.functions[function].address;
    match ecam.reset_function(function, &mut InstructionClock) {
        Outcome::Reset { method, pending } => {
            page.add(status::RESETS, 1);
            let pending = if pending { " (transactions still pending when it started)" } else { "" };
            println!("iommu-server: pci {address}: reset ({method}){pending} and its configuration restored before its next owner");
        }
        Outcome::NoMethod => {
            page.add(status::QUIESCED_WITHOUT_RESET, 1);
            if !devices.handovers.logged_without_method.contains(&function) {
                devices.handovers.logged_without_method.push(function);
                println!("iommu-server: pci {address}: no reset method; quiesced only (bus mastering and MSI off), so its next owner may find what the last one left in the device");
            }
        }
        Outcome::Failed { method, error } => {
            page.add(status::QUIESCED_WITHOUT_RESET, 1);
            println!("iommu-server: pci {address}: reset ({method}) failed: {error:?}; quiesced, configuration written back");
        }
    }
}

fn pci_address(address: fwtables::dmar::pci::PciAddress) -> pci::Address {
    pci::Address::new(address.segment, address.bus, address.device, address.function)
}
