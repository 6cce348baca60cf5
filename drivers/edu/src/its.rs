//! arm: MSIs through the GICv3 ITS (ITS_MSI, FORGED_ITS_MSIS).
//!
//! ITS_MSI: the driver asks the server for its device's MSI (`msi_alloc`, the call x86 uses),
//! takes its DMA-done interrupt through it, then destroys the device, after which the server
//! must have unmapped the device's events in the ITS; the root task checks that while the
//! driver waits. On a GICv2 machine the server has no isolated MSIs to give and must refuse.
//!
//! FORGED_ITS_MSIS: over two connections the driver plays a victim (the first edu device, its
//! MSI from the server) and the owner of a hostile device (the second, attached with a fault
//! queue, its own MSI from the server). The root task, which can write configuration space,
//! aims the hostile device's MSI at forged targets (module docs of `contract::scenario`); the
//! driver reads the records of those that fault, in order, each with the hostile device, a
//! write and the forged address, while the victim's notification stays quiet. Then the victim
//! takes its own DMA-done interrupt and the hostile device its own MSI. (As on x86, the root
//! task sends the forgeries through the device's MSI logic: QEMU 10.0.2 tags MSI writes with
//! the requester ID, which is all the ITS and the SMMU go by.)

use crate::contract::{report, FORGED_ADDRESSES, MSIS_REFUSED};
use crate::edu;
use crate::{buffer, check, connect_first, dma_awaiting_interrupt, open_device, open_device_at, report_page, slot, take_msi, va, Outcome, FAULT_TIMEOUT};
use iommu_abi::{Access, Error, FaultReason, IovaChoice, Perm, PAGE_SIZE};
use iommu_client::{HwptOptions, WindowPlace};
use kernel_abi::{MapFlags, MemFlags};
use userlib::{println, syscall};

/// Where the device's DMA writes (the driver's own mapping).
const DMA_IOVA: u64 = 0x2000_0000;

/// The hostile device's own MSI and its notification.
const HOSTILE_MSI: u64 = 30;
const HOSTILE_NOTIFICATION: u64 = 31;

pub fn msi_through_the_its() -> Outcome {
    syscall::mem_map(slot::REPORT, va::REPORT, 0, 1, MapFlags::WRITE).map_err(|_| (160, "map the report page"))?;
    // SAFETY: the report page is mapped writable at va::REPORT (above) and stays mapped.
    let report_page = unsafe { report_page() };
    let mut iommu = connect_first()?;
    let edu = open_device()?;
    let device = iommu.device_bind(slot::DEVICE).map_err(|_| (161, "device_bind"))?;
    let ioas = iommu.ioas_alloc().map_err(|_| (162, "ioas_alloc"))?;
    let hwpt = iommu.hwpt_alloc(device, ioas, HwptOptions::default()).map_err(|_| (163, "hwpt_alloc"))?;
    iommu.device_attach(device, hwpt, None).map_err(|_| (164, "device_attach"))?;
    let memory = buffer(slot::BUFFER, 1, MemFlags::empty())?;
    let iova = iommu.ioas_map(ioas, slot::BUFFER, 0, PAGE_SIZE, IovaChoice::Fixed(DMA_IOVA), Perm::READ_WRITE).map_err(|_| (165, "map"))?;
    match iommu.msi_alloc(device, 1, slot::MSI) {
        Err(Error::NotSupported) => {
            println!("edu-driver: the server refuses MSIs (no interrupt controller that tells devices apart)");
            return Err((MSIS_REFUSED, "msi_alloc refused"));
        }
        Err(error) => {
            println!("edu-driver: msi_alloc failed: {error:?}");
            return Err((166, "msi_alloc"));
        }
        // take_msi below asks again and expects Busy; it binds the capability this one left.
        Ok(()) => syscall::cap_delete(slot::MSI).map_err(|_| (167, "no capability from msi_alloc"))?,
    }
    // The first grant went with its capability only: the server still holds the route, so a
    // second msi_alloc is refused; destroy and bind again for a clean grant.
    crate::expect_error(iommu.msi_alloc(device, 1, slot::MSI), Error::Busy, 168, "msi_alloc while the device has its MSI")?;
    iommu.device_detach(device, None).map_err(|_| (174, "device_detach"))?;
    iommu.destroy(device.handle()).map_err(|_| (169, "destroy the device"))?;
    let device = iommu.device_bind(slot::DEVICE).map_err(|_| (161, "device_bind again"))?;
    iommu.device_attach(device, hwpt, None).map_err(|_| (164, "device_attach again"))?;
    take_msi(&mut iommu, device)?;

    // RAM -> device (polled), then device -> RAM ending with the DMA-done interrupt.
    let pattern = |i: usize| (i * 7 + 3) as u8;
    memory.iter_mut().enumerate().for_each(|(i, byte)| *byte = pattern(i));
    edu.dma(iova, edu::BUFFER, PAGE_SIZE, false).map_err(|why| (175, why))?;
    memory.fill(0x5a);
    let (status, _) = dma_awaiting_interrupt(&edu, edu::BUFFER, iova)?;
    check(memory.iter().enumerate().all(|(i, &byte)| byte == pattern(i)), 170, "the copy that ended with the interrupt differs")?;
    println!("edu-driver: DMA-done interrupt (status {status:#x}) taken through the MSI the ITS routed");

    iommu.device_detach(device, None).map_err(|_| (174, "device_detach"))?;
    iommu.destroy(device.handle()).map_err(|_| (169, "destroy the device"))?;
    report_page.write(report::PHASE, report::DEVICE_GONE);
    let start = syscall::instruction_counter();
    while report_page.read(report::COMMAND) != report::LEAVE {
        check(syscall::instruction_counter() - start < FAULT_TIMEOUT, 172, "no command from the root task")?;
        syscall::yield_now();
    }
    check(syscall::notify_poll(slot::IRQ_NOTIFICATION) == Ok(0), 173, "the destroyed device's MSI reached the driver")?;
    Ok(())
}

pub fn forged_msis() -> Outcome {
    syscall::mem_map(slot::REPORT, va::REPORT, 0, 1, MapFlags::WRITE).map_err(|_| (180, "map the report page"))?;
    let mut victim = connect_first()?;
    let victim_edu = open_device()?;
    let victim_device = victim.device_bind(slot::DEVICE).map_err(|_| (181, "victim: device_bind"))?;
    let ioas = victim.ioas_alloc().map_err(|_| (182, "victim: ioas_alloc"))?;
    let hwpt = victim.hwpt_alloc(victim_device, ioas, HwptOptions::default()).map_err(|_| (183, "victim: hwpt_alloc"))?;
    victim.device_attach(victim_device, hwpt, None).map_err(|_| (184, "victim: device_attach"))?;
    let _memory = buffer(slot::BUFFER, 1, MemFlags::empty())?;
    let victim_iova = victim.ioas_map(ioas, slot::BUFFER, 0, PAGE_SIZE, IovaChoice::Fixed(DMA_IOVA), Perm::READ_WRITE).map_err(|_| (185, "victim: map"))?;
    take_msi(&mut victim, victim_device)?;

    let place = WindowPlace { window_slot: slot::SECOND_WINDOW, outgoing_slot: slot::SECOND_OUTGOING, virt: va::SECOND_WINDOW };
    let mut hostile = iommu_client::connect(slot::SECOND_SERVER, &place).map_err(|_| (186, "hostile: connect"))?;
    let hostile_edu = open_device_at(slot::SECOND_DEVICE, va::SECOND_DEVICE)?;
    let hostile_device = hostile.device_bind(slot::SECOND_DEVICE).map_err(|_| (187, "hostile: device_bind"))?;
    let hostile_ioas = hostile.ioas_alloc().map_err(|_| (188, "hostile: ioas_alloc"))?;
    let faults = hostile.fault_alloc().map_err(|_| (189, "hostile: fault_alloc"))?;
    let options = HwptOptions { fault: Some(faults), ..Default::default() };
    let hostile_hwpt = hostile.hwpt_alloc(hostile_device, hostile_ioas, options).map_err(|_| (190, "hostile: hwpt_alloc"))?;
    hostile.device_attach(hostile_device, hostile_hwpt, None).map_err(|_| (191, "hostile: device_attach"))?;
    syscall::notification_create(slot::FAULT_NOTIFICATION).map_err(|_| (192, "notification_create"))?;
    check(hostile.transport_mut().subscribe_faults(slot::FAULT_NOTIFICATION) == 0, 193, "hostile: subscribe_faults")?;
    hostile.msi_alloc(hostile_device, 1, HOSTILE_MSI).map_err(|_| (194, "hostile: msi_alloc"))?;
    syscall::notification_create(HOSTILE_NOTIFICATION).map_err(|_| (195, "hostile: notification_create"))?;
    syscall::irq_bind(HOSTILE_MSI, HOSTILE_NOTIFICATION, 0).map_err(|_| (196, "hostile: irq_bind"))?;

    // SAFETY: the report page is mapped writable at va::REPORT (above) and stays mapped.
    unsafe { report_page() }.write(report::PHASE, report::FORGERY_TARGETS_READY);
    println!("edu-driver: victim and hostile device ready; waiting for the forged MSIs");

    let mut reported = 0;
    while reported < FORGED_ADDRESSES.len() {
        syscall::notify_wait(slot::FAULT_NOTIFICATION).map_err(|_| (197, "wait for fault records"))?;
        let batch = hostile.fault_read(faults).map_err(|_| (198, "fault_read"))?;
        for record in batch.records() {
            println!("edu-driver: fault record: device {} address {:#x} access {:#x} reason {:?}", record.device.0, record.iova, record.access.bits(), record.reason);
            let expected = FORGED_ADDRESSES.get(reported).copied();
            let right = record.device == hostile_device.handle() && record.reason == FaultReason::Translation && Some(record.iova) == expected && record.access == Access::WRITE;
            check(right, 199, "a forged MSI's fault names another device, reason, address or access")?;
            reported += 1;
        }
        check(batch.overflow == 0, 200, "fault records lost to overflow")?;
    }
    check(syscall::notify_poll(slot::IRQ_NOTIFICATION) == Ok(0), 201, "a forged MSI reached the victim's notification")?;
    println!("edu-driver: {} forged MSIs outside the doorbell page faulted into the hostile device's queue; the victim heard nothing", FORGED_ADDRESSES.len());

    // Both devices' own interrupts still arrive, each on its own line.
    dma_awaiting_interrupt(&victim_edu, edu::BUFFER, victim_iova)?;
    // The root task's forgery of the victim's EventID raised the hostile device's own LPI
    // (the ITS goes by DeviceID): take that one first.
    let _ = syscall::notify_poll(HOSTILE_NOTIFICATION);
    let _ = syscall::irq_ack(HOSTILE_MSI);
    hostile_edu.raise_interrupt(1);
    let bits = syscall::notify_wait(HOSTILE_NOTIFICATION).map_err(|_| (202, "hostile: wait for its own MSI"))?;
    check(bits == 1 && hostile_edu.interrupt_status() == 1, 203, "the hostile device's own MSI did not arrive")?;
    hostile_edu.acknowledge_interrupt(1);
    check(syscall::notify_poll(slot::IRQ_NOTIFICATION) == Ok(0), 204, "the hostile device's MSI reached the victim")?;
    println!("edu-driver: the victim took its DMA-done interrupt and the hostile device its own MSI");
    Ok(())
}
