//! `msi_route` and `msi_unroute` (arm, GICv3 ITS): the IOMMU server, which knows each device's
//! DeviceID and owns its configuration space, asks for a device's MSIs here and hands the IRQ
//! capabilities to the device's driver. See `kernel_abi::Syscall::MsiRoute`.

use super::{cap_of, values, Outcome};
use crate::arch;
use crate::object::{IrqLine, Object};
use crate::process::{Kernel, Pid};
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;
use kernel_abi::{Error, ObjectType, Rights, MAX_MSI_EVENTS};

/// The line of an IRQ object whose route is gone: no interrupt has it, so binding the object
/// again delivers nothing.
pub const RETIRED_LINE: u32 = u32::MAX;

#[inline(never)]
pub(super) fn msi_route(kernel: &mut Kernel, pid: Pid, authority: u64, device_id: u64, count: u64, first_slot: u64) -> Outcome {
    cap_of(kernel, pid, authority, ObjectType::DmaAuthority, Rights::CONTROL)?;
    let device_id = u32::try_from(device_id).map_err(|_| Error::InvalidArgument)?;
    if !count.is_power_of_two() || count > MAX_MSI_EVENTS {
        return Err(Error::InvalidArgument);
    }
    let slots = first_slot..first_slot.checked_add(count).ok_or(Error::InvalidArgument)?;
    let cspace = &kernel.processes.get(pid).ok_or(Error::PeerGone)?.cspace;
    for slot in slots.clone() {
        cspace.check_empty(slot)?;
    }
    let first_intid = arch::msi_route(device_id, count as u32).map_err(|error| match error {
        arch::MsiRouteError::NoIts | arch::MsiRouteError::Busy => Error::InvalidState,
        arch::MsiRouteError::Invalid => Error::InvalidArgument,
        arch::MsiRouteError::Exhausted => Error::OutOfMemory,
    })?;
    let mut made = Vec::with_capacity(count as usize);
    for (event, slot) in slots.enumerate() {
        let line = Rc::new(RefCell::new(IrqLine { line: first_intid + event as u32, edge: true, bound: None, binder: 0, last_fired_at: 0 }));
        made.push(Rc::downgrade(&line));
        // The slots were checked empty and nothing ran since.
        kernel.install(pid, slot, Object::Irq(line), Rights::all(), 0).expect("slot checked empty");
    }
    kernel.msi_routes.insert(device_id, made);
    values(&[u64::from(first_intid)])
}

#[inline(never)]
pub(super) fn msi_unroute(kernel: &mut Kernel, pid: Pid, authority: u64, device_id: u64) -> Outcome {
    cap_of(kernel, pid, authority, ObjectType::DmaAuthority, Rights::CONTROL)?;
    let device_id = u32::try_from(device_id).map_err(|_| Error::InvalidArgument)?;
    let lines = kernel.msi_routes.remove(&device_id).ok_or(Error::InvalidState)?;
    retire(kernel, lines);
    arch::msi_unroute(device_id);
    values(&[])
}

/// Unbinds the IRQ objects of a route that is going and gives them `RETIRED_LINE`, so that no
/// capability to them, wherever it is, delivers the LPIs once they are routed for someone else.
fn retire(kernel: &mut Kernel, lines: Vec<alloc::rc::Weak<RefCell<IrqLine>>>) {
    for line in lines.iter().filter_map(|line| line.upgrade()) {
        let intid = line.borrow().line;
        if kernel.irqs.get(&intid).is_some_and(|bound| bound.as_ptr() == Rc::as_ptr(&line)) {
            kernel.irqs.remove(&intid);
        }
        let mut line = line.borrow_mut();
        line.bound = None;
        line.line = RETIRED_LINE;
    }
}

/// Every route goes with the kernel state that made it (each kernel test builds its own).
pub fn unroute_all(kernel: &mut Kernel) {
    let routes = core::mem::take(&mut kernel.msi_routes);
    for (device_id, lines) in routes {
        retire(kernel, lines);
        arch::msi_unroute(device_id);
    }
}
