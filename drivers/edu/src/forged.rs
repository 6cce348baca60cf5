//! x86: forged interrupt requests (FORGED_INTERRUPTS). Over two client connections the driver
//! plays a victim (the first edu device, its MSI from the server) and the owner of a hostile
//! device (the second edu device, attached with a fault queue and a fault subscription, its own
//! MSI from the server). Once both are set up it says so on the report page and waits: the
//! kernel test, which can write configuration space, makes the hostile device send interrupt
//! requests of its own making (remappable format naming the victim's entry, an entry nobody
//! was given, an index beyond the table). Each must be refused and reported to the hostile
//! device's owner: this scenario reads [`FORGERIES`] records, each with the hostile device,
//! reason `Interrupt`, a write and the index the request named, while the victim's
//! notification stays quiet. Then the victim takes its own DMA-done interrupt and the hostile
//! device its own MSI.
//!
//! Why the test and not this driver makes the requests: real hardware tags a device's DMA
//! writes into the interrupt window with its requester ID like its MSIs, so a driver's DMA
//! forgery is the same attack; QEMU 10.0.2 tags only MSIs (DMA carries no requester ID, so
//! it skips source-id verification and cannot attribute the fault), so the test sends the
//! forged requests through the device's MSI logic, which QEMU does tag.

use crate::edu;
use crate::{buffer, check, connect_first, contract, dma_awaiting_interrupt, open_device, open_device_at, report_page, slot, take_msi, va, Outcome};
use iommu_abi::{Access, FaultReason, IovaChoice, Perm, PAGE_SIZE};
use iommu_client::{HwptOptions, WindowPlace};
use kernel_abi::{MapFlags, MemFlags};
use userlib::{println, syscall};

/// The hostile device's own MSI and its notification.
const HOSTILE_MSI: u64 = 30;
const HOSTILE_NOTIFICATION: u64 = 31;

/// Where the victim's DMA writes (its own mapping).
const VICTIM_IOVA: u64 = 0x2000_0000;

use crate::contract::FORGERY_INDICES as FORGERIES;

pub fn forged_interrupts() -> Outcome {
    syscall::mem_map(slot::REPORT, va::REPORT, 0, 1, MapFlags::WRITE).map_err(|_| (120, "map the report page"))?;
    // The victim: device 0, its MSI through the server (the first: IRTE 0).
    let mut victim = connect_first()?;
    let victim_edu = open_device()?;
    let victim_device = victim.device_bind(slot::DEVICE).map_err(|_| (121, "victim: device_bind"))?;
    let ioas = victim.ioas_alloc().map_err(|_| (122, "victim: ioas_alloc"))?;
    let hwpt = victim.hwpt_alloc(victim_device, ioas, HwptOptions::default()).map_err(|_| (123, "victim: hwpt_alloc"))?;
    victim.device_attach(victim_device, hwpt, None).map_err(|_| (124, "victim: device_attach"))?;
    let _memory = buffer(slot::BUFFER, 1, MemFlags::empty())?;
    let victim_iova = victim
        .ioas_map(ioas, slot::BUFFER, 0, PAGE_SIZE, IovaChoice::Fixed(VICTIM_IOVA), Perm::READ_WRITE)
        .map_err(|_| (125, "victim: map"))?;
    take_msi(&mut victim, victim_device)?;

    // The hostile device: device 1 as another client, with a fault queue it is told about.
    let place = WindowPlace { window_slot: slot::SECOND_WINDOW, outgoing_slot: slot::SECOND_OUTGOING, virt: va::SECOND_WINDOW };
    let mut hostile = iommu_client::connect(slot::SECOND_SERVER, &place).map_err(|_| (126, "hostile: connect"))?;
    let hostile_edu = open_device_at(slot::SECOND_DEVICE, va::SECOND_DEVICE)?;
    let hostile_device = hostile.device_bind(slot::SECOND_DEVICE).map_err(|_| (127, "hostile: device_bind"))?;
    let hostile_ioas = hostile.ioas_alloc().map_err(|_| (128, "hostile: ioas_alloc"))?;
    let faults = hostile.fault_alloc().map_err(|_| (129, "hostile: fault_alloc"))?;
    let options = HwptOptions { fault: Some(faults), ..Default::default() };
    let hostile_hwpt = hostile.hwpt_alloc(hostile_device, hostile_ioas, options).map_err(|_| (130, "hostile: hwpt_alloc"))?;
    hostile.device_attach(hostile_device, hostile_hwpt, None).map_err(|_| (131, "hostile: device_attach"))?;
    syscall::notification_create(slot::FAULT_NOTIFICATION).map_err(|_| (132, "notification_create"))?;
    check(hostile.transport_mut().subscribe_faults(slot::FAULT_NOTIFICATION) == 0, 133, "hostile: subscribe_faults")?;
    hostile.msi_alloc(hostile_device, 1, HOSTILE_MSI).map_err(|_| (134, "hostile: msi_alloc"))?;
    syscall::notification_create(HOSTILE_NOTIFICATION).map_err(|_| (135, "hostile: notification_create"))?;
    syscall::irq_bind(HOSTILE_MSI, HOSTILE_NOTIFICATION, 0).map_err(|_| (136, "hostile: irq_bind"))?;

    // SAFETY: the report page is mapped writable at va::REPORT (above) and stays mapped.
    unsafe { report_page() }.write(contract::report::PHASE, contract::report::FORGERY_TARGETS_READY);
    println!("edu-driver: victim and hostile device ready; waiting for the forged requests to be reported");

    let mut reported = 0;
    while reported < FORGERIES.len() {
        syscall::notify_wait(slot::FAULT_NOTIFICATION).map_err(|_| (140, "wait for fault records"))?;
        let batch = hostile.fault_read(faults).map_err(|_| (141, "fault_read"))?;
        for record in batch.records() {
            println!("edu-driver: fault record: device {} index {:#x} access {:#x} reason {:?}", record.device.0, record.iova, record.access.bits(), record.reason);
            let expected = FORGERIES.get(reported).copied();
            let right = record.device == hostile_device.handle() && record.reason == FaultReason::Interrupt && Some(record.iova) == expected && record.access == Access::WRITE;
            check(right, 142, "a refusal names another device, reason, index or access")?;
            reported += 1;
        }
        check(batch.overflow == 0, 143, "refusals lost to overflow")?;
    }
    check(syscall::notify_poll(slot::IRQ_NOTIFICATION) == Ok(0), 144, "a forged request reached the victim's notification")?;
    check(syscall::notify_poll(HOSTILE_NOTIFICATION) == Ok(0), 145, "a forged request was delivered to the hostile device's line")?;
    println!("edu-driver: {} forged interrupt requests refused and reported to the hostile device's owner; the victim heard nothing", FORGERIES.len());

    // Both devices' own interrupts still arrive, each on its own line.
    dma_awaiting_interrupt(&victim_edu, edu::BUFFER, victim_iova)?;
    hostile_edu.raise_interrupt(1);
    let bits = syscall::notify_wait(HOSTILE_NOTIFICATION).map_err(|_| (146, "hostile: wait for its own MSI"))?;
    check(bits == 1 && hostile_edu.interrupt_status() == 1, 147, "the hostile device's own MSI did not arrive")?;
    hostile_edu.acknowledge_interrupt(1);
    check(syscall::notify_poll(slot::IRQ_NOTIFICATION) == Ok(0), 148, "the hostile device's MSI reached the victim")?;
    println!("edu-driver: the victim took its DMA-done interrupt and the hostile device its own MSI");
    Ok(())
}
