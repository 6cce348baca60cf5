//! `contract::direct::SCENARIO`: the device has a firmware-required identity map (an RMRR or
//! IORT RMR the firmware-table override gives it, `kernel/src/tests_rmrr.rs`). Attached to the
//! driver's domain, the region is reserved in `ioas_iova_ranges`, a map over any part of it is
//! refused with `ReservedRegion`, and the device reads and writes it at IOVA == physical
//! address next to the driver's own mapping; after a replace the same holds in the new domain,
//! and the IOAS it left no longer reserves the region. The starter wrote the region's first
//! page before the server started and checks the second after the driver ends.

use iommu_abi::{Error, IoasId, IovaChoice, IovaRange, Perm, PAGE_SIZE};
use iommu_client::HwptOptions;
use userlib::println;

use crate::contract::direct;
use crate::edu::{self, Edu};
use crate::{buffer, check, connect_first, expect_error, expect_no_fault, open_device, same_bytes, slot, Client, Outcome};

/// Where the driver maps its own two buffer pages: a page to read into, a page to write from.
const BUFFER_IOVA: u64 = 0x2000_0000;
const PAGE: usize = PAGE_SIZE as usize;

fn region() -> IovaRange {
    IovaRange { start: direct::REGION, last: direct::REGION + direct::REGION_PAGES * PAGE_SIZE - 1 }
}

/// The usable ranges of `ioas` leave the region out, and reach right up to it on both sides.
fn reserved_in(iommu: &mut Client, ioas: IoasId, code: u64) -> Outcome {
    let page = iommu.ioas_iova_ranges(ioas, 0).map_err(|_| (code, "ioas_iova_ranges"))?;
    let ranges = page.ranges.as_slice();
    let region = region();
    for range in ranges {
        println!("edu-driver: usable IOVA range {:#x}..={:#x}", range.start, range.last);
    }
    check(ranges.iter().all(|range| !range.intersects(&region)), code, "a usable IOVA range covers the direct region")?;
    check(ranges.iter().any(|range| range.last == region.start - 1), code + 1, "no usable range ends right below the direct region")?;
    check(ranges.iter().any(|range| range.start == region.last + 1), code + 2, "no usable range starts right above the direct region")
}

/// Maps at the region's start, inside it, and across either of its edges: each refused.
fn maps_refused(iommu: &mut Client, ioas: IoasId, code: u64) -> Outcome {
    let region = region();
    for (iova, length, what) in [
        (region.start, 2 * PAGE_SIZE, "map at the direct region's start"),
        (region.start + PAGE_SIZE, PAGE_SIZE, "map a page inside the direct region"),
        (region.start - PAGE_SIZE, 2 * PAGE_SIZE, "map across the direct region's start"),
        (region.last + 1 - PAGE_SIZE, 2 * PAGE_SIZE, "map across the direct region's end"),
    ] {
        let result = iommu.ioas_map(ioas, slot::BUFFER, 0, length, IovaChoice::Fixed(iova), Perm::READ_WRITE);
        expect_error(result, Error::ReservedRegion, code, what)?;
    }
    Ok(())
}

/// The device reads the region's first page (the starter's pattern) into the driver's page 0,
/// then writes the driver's page 1, filled by `byte`, into the region's second page and reads
/// that back into page 0.
fn read_and_write_region(edu: &Edu, memory: &mut [u8], byte: fn(usize) -> u8, code: u64) -> Outcome {
    let (first, second) = (direct::REGION, direct::REGION + PAGE_SIZE);
    let expected: [u8; PAGE] = core::array::from_fn(direct::first_page_byte);
    memory[..PAGE].fill(0);
    dma(edu, first, BUFFER_IOVA, code)?;
    check(same_bytes("the region's first page, read by the device", &expected, &memory[..PAGE]), code, "the device did not read the region at IOVA == physical address")?;
    let written: [u8; PAGE] = core::array::from_fn(byte);
    memory[PAGE..].copy_from_slice(&written);
    dma(edu, BUFFER_IOVA + PAGE_SIZE, second, code + 1)?;
    memory[..PAGE].fill(0);
    dma(edu, second, BUFFER_IOVA, code + 2)?;
    check(same_bytes("the region's second page, written and read back by the device", &written, &memory[..PAGE]), code + 2, "the device's write to the region did not land there")
}

/// One page from IOVA `source` to IOVA `destination` through the edu's buffer.
fn dma(edu: &Edu, source: u64, destination: u64, code: u64) -> Outcome {
    edu.dma(source, edu::BUFFER, PAGE_SIZE, false).map_err(|why| (code, why))?;
    edu.dma(edu::BUFFER, destination, PAGE_SIZE, true).map_err(|why| (code, why))
}

pub fn direct_region() -> Outcome {
    let mut iommu = connect_first()?;
    let edu = open_device()?;
    let device = iommu.device_bind(slot::DEVICE).map_err(|_| (900, "device_bind"))?;
    let queue = iommu.fault_alloc().map_err(|_| (901, "fault_alloc"))?;
    let memory = buffer(slot::BUFFER, 2, kernel_abi::MemFlags::empty())?;
    let options = || HwptOptions { fault: Some(queue), ..Default::default() };

    let ioas_a = iommu.ioas_alloc().map_err(|_| (902, "ioas_alloc"))?;
    let hwpt_a = iommu.hwpt_alloc(device, ioas_a, options()).map_err(|_| (903, "hwpt_alloc"))?;
    let mapped = iommu.ioas_map(ioas_a, slot::BUFFER, 0, 2 * PAGE_SIZE, IovaChoice::Fixed(BUFFER_IOVA), Perm::READ_WRITE);
    check(mapped == Ok(BUFFER_IOVA), 904, "map the driver's pages in IOAS A")?;
    iommu.device_attach(device, hwpt_a, None).map_err(|_| (905, "device_attach"))?;
    reserved_in(&mut iommu, ioas_a, 906)?;
    maps_refused(&mut iommu, ioas_a, 910)?;
    read_and_write_region(&edu, memory, direct::attached_byte, 911)?;
    expect_no_fault(&mut iommu, queue, 915)?;
    println!("edu-driver: attached: the direct region is reserved, refused to maps, and the device reads and writes it at IOVA == physical address");

    let ioas_b = iommu.ioas_alloc().map_err(|_| (920, "ioas_alloc"))?;
    let hwpt_b = iommu.hwpt_alloc(device, ioas_b, options()).map_err(|_| (921, "hwpt_alloc"))?;
    let mapped = iommu.ioas_map(ioas_b, slot::BUFFER, 0, 2 * PAGE_SIZE, IovaChoice::Fixed(BUFFER_IOVA), Perm::READ_WRITE);
    check(mapped == Ok(BUFFER_IOVA), 922, "map the driver's pages in IOAS B")?;
    iommu.device_replace(device, hwpt_b, None).map_err(|_| (923, "device_replace"))?;
    reserved_in(&mut iommu, ioas_b, 924)?;
    maps_refused(&mut iommu, ioas_b, 928)?;
    read_and_write_region(&edu, memory, direct::replaced_byte, 929)?;
    expect_no_fault(&mut iommu, queue, 933)?;
    // IOAS A lost its only device: the region is usable there again, and its domain no longer
    // maps it (the server would refuse a map over the identity map it kept).
    let freed = iommu.ioas_map(ioas_a, slot::BUFFER, 0, PAGE_SIZE, IovaChoice::Fixed(direct::REGION), Perm::READ);
    check(freed == Ok(direct::REGION), 934, "after the replace, IOAS A still reserves the direct region")?;
    iommu.ioas_unmap(ioas_a, direct::REGION, PAGE_SIZE).map_err(|_| (935, "ioas_unmap"))?;
    println!("edu-driver: replaced: the same in the new domain, and the old IOAS maps the region's addresses again");

    iommu.device_detach(device, None).map_err(|_| (936, "device_detach"))?;
    Ok(())
}
