//! Scenarios with two devices or two I/O address spaces: both edu devices in one IOAS, each in
//! its own IOAS, and one device moved between IOASes with `device_replace`. The devices copy
//! pages with their DMA engines (RAM → device → RAM) and every byte of every page involved is
//! checked: the pages that must change and the pages that must not.

use crate::edu::{self, Edu};
use crate::{
    await_write_fault, buffer, check, connect_first, copy_page, expect_error, expect_no_fault, fill_pattern, open_device,
    open_device_at, same_bytes, slot, va, Client, Outcome, RefusedWrite,
};
use iommu_abi::{DeviceId, Error, FaultId, HwptId, IoasId, IovaChoice, Perm, PAGE_SIZE};
use iommu_client::HwptOptions;
use userlib::println;

const PAGE: usize = PAGE_SIZE as usize;
/// Where the scenarios map their pages: inside every aperture QEMU offers (39 bits and up),
/// away from the interrupt windows the server reserves.
const BASE_IOVA: u64 = 0x2000_0000;
/// What a page is filled with to show afterwards that no DMA wrote it.
const UNTOUCHED: u8 = 0x5a;

fn page(memory: &[u8], index: usize) -> &[u8] {
    &memory[index * PAGE..(index + 1) * PAGE]
}

fn page_mut(memory: &mut [u8], index: usize) -> &mut [u8] {
    &mut memory[index * PAGE..(index + 1) * PAGE]
}

fn untouched(memory: &[u8], index: usize) -> bool {
    page(memory, index).iter().all(|&b| b == UNTOUCHED)
}

/// Whether `page` still holds `fill_pattern`'s pattern for `seed`.
fn has_pattern(page: &[u8], seed: u8) -> bool {
    page.iter().enumerate().all(|(i, &b)| b == (i as u8).wrapping_mul(7).wrapping_add(seed))
}

fn faults_of(queue: FaultId) -> HwptOptions {
    HwptOptions { fault: Some(queue), ..Default::default() }
}

/// Both edu devices, opened and bound.
type BothDevices = ([Edu; 2], [DeviceId; 2]);

/// Opens and binds both edu devices the root task gave this driver.
fn bind_both(iommu: &mut Client, code: u64) -> Result<BothDevices, (u64, &'static str)> {
    let edus = [open_device()?, open_device_at(slot::SECOND_DEVICE, va::SECOND_DEVICE)?];
    let first = iommu.device_bind(slot::DEVICE).map_err(|_| (code, "bind the first device"))?;
    let second = iommu.device_bind(slot::SECOND_DEVICE).map_err(|_| (code, "bind the second device"))?;
    println!("edu-driver: bound both edu devices, as handles {} and {}", first.0 .0, second.0 .0);
    Ok((edus, [first, second]))
}

/// Reads `queue` until it is empty; every record must report one of `allowed` (repeats of a
/// burst, see `await_write_fault`): a record of any other device means a misrouted fault.
fn drain_faults(iommu: &mut Client, queue: FaultId, allowed: &[RefusedWrite], code: u64) -> Outcome {
    loop {
        let batch = iommu.fault_read(queue).map_err(|_| (code, "fault_read"))?;
        if batch.is_empty() {
            return Ok(());
        }
        for record in batch.records() {
            if !allowed.iter().any(|write| write.reported_by(record, false)) {
                println!("edu-driver: fault record of device {} at {:#x} in the wrong queue", record.device.0, record.iova);
                return Err((code, "a fault record reached a queue it does not belong to"));
            }
        }
    }
}

/// Pages: the source of each device (0, 1), then the destination of each (2, 3). The four
/// pages are mapped once into `ioas`; each device copies its source to its destination, then
/// after the unmap each device's write faults into `queues[i]` and changes nothing.
fn both_copy_through_one_map(iommu: &mut Client, ioas: IoasId, edus: &[Edu; 2], devices: [DeviceId; 2], queues: [FaultId; 2], memory: &mut [u8], code: u64) -> Outcome {
    for i in 0..2 {
        fill_pattern(page_mut(memory, i), i as u8 + 1);
        page_mut(memory, 2 + i).fill(UNTOUCHED);
    }
    let length = 4 * PAGE_SIZE;
    let iova = iommu.ioas_map(ioas, slot::BUFFER, 0, length, IovaChoice::Fixed(BASE_IOVA), Perm::READ_WRITE).map_err(|_| (code, "map the four pages"))?;
    for (i, edu) in edus.iter().enumerate() {
        copy_page(edu, iova + i as u64 * PAGE_SIZE, iova + (2 + i as u64) * PAGE_SIZE, code + 1)?;
    }
    check(same_bytes("first device's copy", page(memory, 0), page(memory, 2)), code + 2, "the first device's copy differs from its source")?;
    check(same_bytes("second device's copy", page(memory, 1), page(memory, 3)), code + 2, "the second device's copy differs from its source")?;
    for queue in queues {
        expect_no_fault(iommu, queue, code + 3)?;
    }
    println!("edu-driver: both devices copied a page through the one mapping, every byte right");

    check(iommu.ioas_unmap(ioas, iova, length) == Ok(length), code + 4, "unmap the four pages")?;
    page_mut(memory, 2).fill(UNTOUCHED);
    page_mut(memory, 3).fill(UNTOUCHED);
    let refused = [RefusedWrite::unmapped(devices[0], iova + 2 * PAGE_SIZE), RefusedWrite::unmapped(devices[1], iova + 3 * PAGE_SIZE)];
    for (i, edu) in edus.iter().enumerate() {
        edu.dma(edu::BUFFER, refused[i].iova, PAGE_SIZE, true).map_err(|why| (code + 5, why))?;
        // One after the other: QEMU's SMMU reports one event per 4-byte access, and two pages
        // at once would overflow the event queue.
        let earlier: &[RefusedWrite] = if queues[i] == queues[0] { &refused[..i] } else { &[] };
        await_write_fault(iommu, queues[i], refused[i], earlier, code + 6)?;
    }
    check(untouched(memory, 2) && untouched(memory, 3), code + 7, "DMA after the unmap changed memory")?;
    for (i, queue) in queues.into_iter().enumerate() {
        let allowed: &[RefusedWrite] = if queues[0] == queues[1] { &refused } else { &refused[i..=i] };
        drain_faults(iommu, queue, allowed, code + 8)?;
    }
    println!("edu-driver: after the unmap both devices' writes faulted, each reported with its own device handle; memory untouched");
    Ok(())
}

/// Both devices in one IOAS: first attached to one shared HWPT, then to one HWPT each (with a
/// fault queue each) over the same IOAS.
pub fn two_devices_one_ioas() -> Outcome {
    let mut iommu = connect_first()?;
    let (edus, devices) = bind_both(&mut iommu, 110)?;
    let ioas = iommu.ioas_alloc().map_err(|_| (111, "ioas_alloc"))?;
    let memory = buffer(slot::BUFFER, 4, kernel_abi::MemFlags::empty())?;

    let shared_queue = iommu.fault_alloc().map_err(|_| (112, "fault_alloc"))?;
    let shared = iommu.hwpt_alloc(devices[0], ioas, faults_of(shared_queue)).map_err(|_| (113, "hwpt_alloc"))?;
    for device in devices {
        iommu.device_attach(device, shared, None).map_err(|_| (114, "attach both devices to one HWPT"))?;
    }
    println!("edu-driver: both devices attached to one HWPT of the IOAS");
    both_copy_through_one_map(&mut iommu, ioas, &edus, devices, [shared_queue, shared_queue], memory, 115)?;

    for device in devices {
        iommu.device_detach(device, None).map_err(|_| (124, "detach"))?;
    }
    iommu.destroy(shared.handle()).map_err(|_| (125, "destroy the shared HWPT"))?;
    let queues = [shared_queue, iommu.fault_alloc().map_err(|_| (126, "fault_alloc"))?];
    for (device, queue) in devices.into_iter().zip(queues) {
        let hwpt = iommu.hwpt_alloc(device, ioas, faults_of(queue)).map_err(|_| (127, "hwpt_alloc"))?;
        iommu.device_attach(device, hwpt, None).map_err(|_| (128, "attach"))?;
    }
    println!("edu-driver: each device attached to an HWPT of its own over the same IOAS");
    both_copy_through_one_map(&mut iommu, ioas, &edus, devices, queues, memory, 129)
}

/// Each device in its own IOAS, the same IOVAs mapped to different pages in each: each device's
/// DMA reaches only its own pages; an IOVA mapped in one IOAS only faults for the other device.
pub fn two_devices_two_ioas() -> Outcome {
    let mut iommu = connect_first()?;
    let (edus, devices) = bind_both(&mut iommu, 140)?;
    // Pages: source and destination of the first device (0, 1), of the second (2, 3), and a
    // page only the first IOAS maps (4).
    let memory = buffer(slot::BUFFER, 5, kernel_abi::MemFlags::empty())?;
    let mut ioases = [IoasId(iommu_abi::Handle(0)); 2];
    let mut queues = [FaultId(iommu_abi::Handle(0)); 2];
    for i in 0..2 {
        ioases[i] = iommu.ioas_alloc().map_err(|_| (141, "ioas_alloc"))?;
        queues[i] = iommu.fault_alloc().map_err(|_| (142, "fault_alloc"))?;
        let hwpt = iommu.hwpt_alloc(devices[i], ioases[i], faults_of(queues[i])).map_err(|_| (143, "hwpt_alloc"))?;
        iommu.device_attach(devices[i], hwpt, None).map_err(|_| (144, "attach"))?;
        fill_pattern(page_mut(memory, 2 * i), i as u8 + 1);
        page_mut(memory, 2 * i + 1).fill(UNTOUCHED);
        let offset = 2 * i as u64 * PAGE_SIZE;
        let iova = iommu.ioas_map(ioases[i], slot::BUFFER, offset, 2 * PAGE_SIZE, IovaChoice::Fixed(BASE_IOVA), Perm::READ_WRITE);
        check(iova == Ok(BASE_IOVA), 145, "map a source and a destination page at the same IOVAs in each IOAS")?;
    }
    for edu in &edus {
        copy_page(edu, BASE_IOVA, BASE_IOVA + PAGE_SIZE, 146)?;
    }
    check(same_bytes("first device's copy", page(memory, 0), page(memory, 1)), 147, "the first device did not copy its own source to its own destination")?;
    check(same_bytes("second device's copy", page(memory, 2), page(memory, 3)), 148, "the second device did not copy its own source to its own destination")?;
    check(has_pattern(page(memory, 0), 1) && has_pattern(page(memory, 2), 2), 149, "a source page changed")?;
    for queue in queues {
        expect_no_fault(&mut iommu, queue, 150)?;
    }
    println!("edu-driver: same IOVAs in two IOASes: each device read and wrote only its own pages");

    let only_first = BASE_IOVA + 0x10_0000;
    page_mut(memory, 4).fill(UNTOUCHED);
    iommu
        .ioas_map(ioases[0], slot::BUFFER, 4 * PAGE_SIZE, PAGE_SIZE, IovaChoice::Fixed(only_first), Perm::READ_WRITE)
        .map_err(|_| (151, "map a page in the first IOAS only"))?;
    let refused = RefusedWrite::unmapped(devices[1], only_first);
    edus[1].dma(edu::BUFFER, only_first, PAGE_SIZE, true).map_err(|why| (152, why))?;
    await_write_fault(&mut iommu, queues[1], refused, &[], 153)?;
    check(untouched(memory, 4), 154, "the second device wrote a page mapped only in the first IOAS")?;
    drain_faults(&mut iommu, queues[1], &[refused], 155)?;
    expect_no_fault(&mut iommu, queues[0], 156)?;
    edus[0].dma(edu::BUFFER, only_first, PAGE_SIZE, true).map_err(|why| (157, why))?;
    check(same_bytes("first device's write", page(memory, 0), page(memory, 4)), 158, "the first device's write through its own IOAS did not arrive")?;
    expect_no_fault(&mut iommu, queues[0], 159)?;
    println!("edu-driver: an IOVA mapped only in the first IOAS faulted for the second device and worked for the first");
    Ok(())
}

/// A device moved with `device_replace` from HWPT A (over IOAS A) to HWPT B (over IOAS B), the
/// same IOVAs mapped to other pages in each: afterwards its DMA reaches B's pages, never A's;
/// A can be destroyed, B cannot; replace to a wrong object or a destroyed HWPT is refused and
/// leaves the device working through B.
pub fn replace_moves_device() -> Outcome {
    let mut iommu = connect_first()?;
    let edu = open_device()?;
    let device = iommu.device_bind(slot::DEVICE).map_err(|_| (170, "device_bind"))?;
    let queue = iommu.fault_alloc().map_err(|_| (171, "fault_alloc"))?;
    // Pages: source and destination in IOAS A (0, 1), in IOAS B (2, 3).
    let memory = buffer(slot::BUFFER, 4, kernel_abi::MemFlags::empty())?;
    let mut ioases = [IoasId(iommu_abi::Handle(0)); 2];
    let mut hwpts = [HwptId(iommu_abi::Handle(0)); 2];
    for i in 0..2 {
        ioases[i] = iommu.ioas_alloc().map_err(|_| (172, "ioas_alloc"))?;
        hwpts[i] = iommu.hwpt_alloc(device, ioases[i], faults_of(queue)).map_err(|_| (173, "hwpt_alloc"))?;
        fill_pattern(page_mut(memory, 2 * i), i as u8 + 1);
        page_mut(memory, 2 * i + 1).fill(UNTOUCHED);
        let offset = 2 * i as u64 * PAGE_SIZE;
        let iova = iommu.ioas_map(ioases[i], slot::BUFFER, offset, 2 * PAGE_SIZE, IovaChoice::Fixed(BASE_IOVA), Perm::READ_WRITE);
        check(iova == Ok(BASE_IOVA), 174, "map a source and a destination page at the same IOVAs in each IOAS")?;
    }
    let [(ioas_a, hwpt_a), (ioas_b, hwpt_b)] = [(ioases[0], hwpts[0]), (ioases[1], hwpts[1])];

    iommu.device_attach(device, hwpt_a, None).map_err(|_| (175, "attach to HWPT A"))?;
    copy_page(&edu, BASE_IOVA, BASE_IOVA + PAGE_SIZE, 176)?;
    check(same_bytes("copy through A", page(memory, 0), page(memory, 1)), 177, "the copy through HWPT A differs")?;
    check(untouched(memory, 3), 178, "DMA through HWPT A wrote IOAS B's page")?;

    page_mut(memory, 1).fill(UNTOUCHED);
    iommu.device_replace(device, hwpt_b, None).map_err(|_| (179, "replace HWPT A by HWPT B"))?;
    copy_page(&edu, BASE_IOVA, BASE_IOVA + PAGE_SIZE, 180)?;
    check(same_bytes("copy through B", page(memory, 2), page(memory, 3)), 181, "after replace, the copy did not go from B's source to B's destination")?;
    check(untouched(memory, 1), 182, "after replace, DMA still wrote IOAS A's page")?;
    check(has_pattern(page(memory, 0), 1), 183, "after replace, IOAS A's source changed")?;
    expect_no_fault(&mut iommu, queue, 184)?;
    println!("edu-driver: after replace the device's DMA reads and writes IOAS B's pages, never A's");

    expect_error(iommu.destroy(hwpt_b.handle()), Error::Busy, 185, "destroy HWPT B, which the device is attached to")?;
    expect_error(iommu.destroy(ioas_b.handle()), Error::Busy, 186, "destroy IOAS B, which HWPT B is built on")?;
    iommu.destroy(hwpt_a.handle()).map_err(|_| (187, "destroy HWPT A, no longer in use"))?;
    iommu.destroy(ioas_a.handle()).map_err(|_| (188, "destroy IOAS A, no longer in use"))?;

    expect_error(iommu.device_replace(device, HwptId(ioas_b.handle()), None), Error::WrongType, 189, "replace with an IOAS as the HWPT")?;
    expect_error(iommu.device_replace(device, HwptId(queue.handle()), None), Error::WrongType, 190, "replace with a fault queue as the HWPT")?;
    expect_error(iommu.device_replace(device, hwpt_a, None), Error::NoSuchObject, 191, "replace with the destroyed HWPT A")?;
    page_mut(memory, 3).fill(UNTOUCHED);
    copy_page(&edu, BASE_IOVA, BASE_IOVA + PAGE_SIZE, 192)?;
    check(same_bytes("copy through B after refused replaces", page(memory, 2), page(memory, 3)), 193, "a refused replace disturbed the attachment to HWPT B")?;
    expect_no_fault(&mut iommu, queue, 194)?;

    iommu.device_detach(device, None).map_err(|_| (195, "detach"))?;
    expect_error(iommu.device_replace(device, hwpt_b, None), Error::NotAttached, 196, "replace on a detached device")?;
    println!("edu-driver: refused replaces left the device working through HWPT B");
    Ok(())
}
