//! DIRTY_TRACKING and DIRTY_UNSUPPORTED: what a device writes, as the dirty bitmap reports it.
//!
//! DIRTY_TRACKING (a unit whose walks set dirty bits: VT-d first-level on QEMU): a 1 GiB IOAS
//! window holds 16 data pages; the device writes some before tracking is on (switching on
//! must forget those), then reads one page and writes three. The bitmap of the whole GiB,
//! read in one request into the driver's memory, must name exactly the three written pages
//! (the page read is not dirty); a second read is empty; a write after the read shows again,
//! which it can only if the read invalidated the IOTLB entry that cached the page as dirty.
//! Reads that keep the bits (NO_CLEAR) report the same page twice.
//!
//! With `DIRTY_BENCH` the driver then times the GiB's bitmap read (the device having written
//! the three pages again before each) and prints the mean as a `bench:` line.
//!
//! DIRTY_UNSUPPORTED (every other unit QEMU offers): `get_info` shows no dirty tracking, and
//! the server refuses to allocate or switch on what the unit cannot do.

use crate::edu;
use crate::{buffer, check, connect_first, expect_error, fill_pattern, open_device, same_bytes, Outcome};
use iommu_abi::{Error, IovaChoice, Perm, UnitCaps, PAGE_SIZE};
use iommu_client::{DirtyBits, HwptOptions};
use kernel_abi::{MapFlags, MemFlags};
use userlib::{println, syscall};

/// Slots of this scenario's memory: the data pages (mapped at `va::BUFFER` by `buffer`) and
/// the memory the server writes the bitmap into.
const DATA_SLOT: u64 = 40;
const BITMAP_SLOT: u64 = 41;
/// Where the driver reads the bitmap.
const BITMAP_VA: u64 = 0x2800_0000;

/// The window whose bitmap is read: 1 GiB at 1 GiB.
const WINDOW_IOVA: u64 = 1 << 30;
const WINDOW_LENGTH: u64 = 1 << 30;
/// Bitmap words of the window at 4 KiB pages (2^18 bits, 32 KiB).
const WINDOW_WORDS: usize = (WINDOW_LENGTH / PAGE_SIZE / 64) as usize;
/// The data pages, inside the window.
const DATA_IOVA: u64 = WINDOW_IOVA + 0x1234_5000;
const DATA_PAGES: u64 = 16;
/// Bit of data page 0 in the window's bitmap.
const DATA_FIRST_BIT: u64 = (DATA_IOVA - WINDOW_IOVA) / PAGE_SIZE;

/// The page the device reads, the pages it writes, the page it writes before tracking is on.
const READ_PAGE: u64 = 0;
const WRITTEN_PAGES: [u64; 3] = [2, 7, 11];
const WRITTEN_BEFORE_TRACKING: u64 = 9;
/// The page written again after the read.
const WRITTEN_AGAIN: u64 = 7;

fn iova_of(page: u64) -> u64 {
    DATA_IOVA + page * PAGE_SIZE
}

/// The window's bitmap words, as the server wrote them.
fn window_bitmap() -> &'static [u64] {
    // SAFETY: BITMAP_SLOT's WINDOW_WORDS * 8 bytes are mapped readable at BITMAP_VA for the
    // rest of the program; the server writes them only while the driver waits in a request.
    unsafe { core::slice::from_raw_parts(BITMAP_VA as *const u64, WINDOW_WORDS) }
}

/// The data pages the window's bitmap names; any other bit set fails `code`.
fn dirty_data_pages(code: u64) -> Result<u64, (u64, &'static str)> {
    let mut pages = 0u64;
    for (index, word) in window_bitmap().iter().enumerate() {
        // SAFETY: a word of the mapped bitmap (see `window_bitmap`); volatile, as the server
        // wrote it through its own mapping.
        let mut rest = unsafe { core::ptr::read_volatile(word) };
        while rest != 0 {
            let bit = index as u64 * 64 + u64::from(rest.trailing_zeros());
            rest &= rest - 1;
            if !(DATA_FIRST_BIT..DATA_FIRST_BIT + DATA_PAGES).contains(&bit) {
                println!("edu-driver: the bitmap names page {bit} of the window, which nothing maps");
                return Err((code, "a page outside the data is reported dirty"));
            }
            pages |= 1 << (bit - DATA_FIRST_BIT);
        }
    }
    Ok(pages)
}

fn page_set(pages: &[u64]) -> u64 {
    pages.iter().fold(0, |set, page| set | 1 << page)
}

/// Timed reads of the window's bitmap in the benchmark.
const BENCH_ROUNDS: u64 = 4;

pub fn dirty_tracking(bench: bool) -> Outcome {
    let mut iommu = connect_first()?;
    let edu = open_device()?;
    let device = iommu.device_bind(crate::slot::DEVICE).map_err(|_| (210, "device_bind"))?;
    let info = iommu.get_info(device).map_err(|_| (211, "get_info"))?;
    check(info.caps.contains(UnitCaps::DIRTY_TRACKING), 212, "get_info shows no dirty tracking on this unit")?;
    let ioas = iommu.ioas_alloc().map_err(|_| (213, "ioas_alloc"))?;
    let hwpt = iommu
        .hwpt_alloc(device, ioas, HwptOptions { dirty_tracking: true, ..Default::default() })
        .map_err(|_| (214, "hwpt_alloc with dirty tracking"))?;
    iommu.device_attach(device, hwpt, None).map_err(|_| (215, "device_attach"))?;
    let data = buffer(DATA_SLOT, DATA_PAGES, MemFlags::empty())?;
    iommu
        .ioas_map(ioas, DATA_SLOT, 0, DATA_PAGES * PAGE_SIZE, IovaChoice::Fixed(DATA_IOVA), Perm::READ_WRITE)
        .map_err(|_| (216, "map the data pages"))?;
    syscall::mem_alloc(WINDOW_WORDS as u64 * 8 / PAGE_SIZE, BITMAP_SLOT, MemFlags::empty()).map_err(|_| (217, "allocate the bitmap memory"))?;
    syscall::mem_map(BITMAP_SLOT, BITMAP_VA, 0, WINDOW_WORDS as u64 * 8 / PAGE_SIZE, MapFlags::empty()).map_err(|_| (218, "map the bitmap memory"))?;
    let read_window = |iommu: &mut crate::Client, bits| {
        iommu.hwpt_get_dirty_bitmap_into(hwpt.handle(), WINDOW_IOVA, WINDOW_LENGTH, PAGE_SIZE, bits, BITMAP_SLOT)
    };
    expect_error(read_window(&mut iommu, DirtyBits::Clear), Error::DirtyTrackingOff, 219, "a bitmap read before tracking is on")?;

    // A write before tracking is on: switching on starts clean.
    edu.dma(edu::BUFFER, iova_of(WRITTEN_BEFORE_TRACKING), PAGE_SIZE, true).map_err(|why| (220, why))?;
    iommu.hwpt_set_dirty_tracking(hwpt, true).map_err(|_| (221, "switch dirty tracking on"))?;
    check(read_window(&mut iommu, DirtyBits::Clear) == Ok(0), 222, "a write before tracking was switched on is reported")?;

    fill_pattern(&mut data[..PAGE_SIZE as usize], 0x21);
    edu.dma(iova_of(READ_PAGE), edu::BUFFER, PAGE_SIZE, false).map_err(|why| (223, why))?;
    for page in WRITTEN_PAGES {
        edu.dma(edu::BUFFER, iova_of(page), PAGE_SIZE, true).map_err(|why| (224, why))?;
    }
    let (source, rest) = data.split_at(PAGE_SIZE as usize);
    for page in WRITTEN_PAGES {
        let at = ((page - 1) * PAGE_SIZE) as usize;
        check(same_bytes("a page the device wrote", source, &rest[at..at + PAGE_SIZE as usize]), 225, "the device's write did not land")?;
    }

    // The whole GiB in one request: exactly the written pages.
    let reported = read_window(&mut iommu, DirtyBits::Clear).map_err(|_| (226, "read the window's bitmap"))?;
    let dirty = dirty_data_pages(227)?;
    println!("edu-driver: dirty bitmap of 1 GiB in one request: data pages {dirty:#06x}, {reported} bytes");
    check(dirty & 1 << READ_PAGE == 0, 228, "the page the device only read is reported dirty")?;
    check(dirty == page_set(&WRITTEN_PAGES), 229, "the bitmap does not name exactly the written pages")?;
    check(reported == WRITTEN_PAGES.len() as u64 * PAGE_SIZE, 230, "the reply's dirty bytes disagree with the bitmap")?;
    check(read_window(&mut iommu, DirtyBits::Clear) == Ok(0), 231, "a second read without new writes is not empty")?;
    check(dirty_data_pages(232)? == 0, 232, "a second read without new writes left bits in the bitmap")?;

    // A write after the read shows again: the read invalidated what the IOTLB held.
    edu.dma(edu::BUFFER, iova_of(WRITTEN_AGAIN), PAGE_SIZE, true).map_err(|why| (233, why))?;
    for _ in 0..2 {
        let words = iommu
            .hwpt_get_dirty_bitmap(hwpt.handle(), DATA_IOVA, DATA_PAGES * PAGE_SIZE, PAGE_SIZE, DirtyBits::Keep)
            .map_err(|_| (234, "read the data pages' bitmap in the reply, keeping the bits"))?;
        check(words[0] == 1 << WRITTEN_AGAIN, 235, "a write after the read is not reported (or a NO_CLEAR read cleared it)")?;
    }
    check(read_window(&mut iommu, DirtyBits::Clear) == Ok(PAGE_SIZE), 236, "the write after the read is not in the window's bitmap")?;
    check(dirty_data_pages(237)? == 1 << WRITTEN_AGAIN, 237, "the window's bitmap names other pages than the one written again")?;
    check(read_window(&mut iommu, DirtyBits::Clear) == Ok(0), 238, "the last read did not clear")?;
    println!("edu-driver: dirty tracking reports exactly the pages the device wrote, and a write after a read again");
    if bench {
        let mut total = 0;
        for _ in 0..BENCH_ROUNDS {
            for page in WRITTEN_PAGES {
                edu.dma(edu::BUFFER, iova_of(page), PAGE_SIZE, true).map_err(|why| (239, why))?;
            }
            let start = syscall::instruction_counter();
            let reported = read_window(&mut iommu, DirtyBits::Clear);
            total += syscall::instruction_counter() - start;
            check(reported == Ok(WRITTEN_PAGES.len() as u64 * PAGE_SIZE), 239, "a timed read missed the written pages")?;
        }
        println!(
            "bench: dirty bitmap of 1GiB into memory (16 pages mapped, 3 dirty) {} guest instructions (mean of {BENCH_ROUNDS})",
            total / BENCH_ROUNDS
        );
    }
    Ok(())
}

pub fn dirty_unsupported() -> Outcome {
    let mut iommu = connect_first()?;
    let device = iommu.device_bind(crate::slot::DEVICE).map_err(|_| (240, "device_bind"))?;
    let info = iommu.get_info(device).map_err(|_| (241, "get_info"))?;
    check(!info.caps.contains(UnitCaps::DIRTY_TRACKING), 242, "get_info shows dirty tracking on a unit that sets no dirty bits")?;
    let ioas = iommu.ioas_alloc().map_err(|_| (243, "ioas_alloc"))?;
    let tracking = HwptOptions { dirty_tracking: true, ..Default::default() };
    expect_error(iommu.hwpt_alloc(device, ioas, tracking), Error::NotSupported, 244, "an HWPT with dirty tracking")?;
    let hwpt = iommu.hwpt_alloc(device, ioas, HwptOptions::default()).map_err(|_| (245, "hwpt_alloc"))?;
    expect_error(iommu.hwpt_set_dirty_tracking(hwpt, true), Error::NotSupported, 246, "switching dirty tracking on")?;
    expect_error(
        iommu.hwpt_get_dirty_bitmap(hwpt.handle(), 0, 64 * PAGE_SIZE, PAGE_SIZE, DirtyBits::Clear),
        Error::DirtyTrackingOff,
        247,
        "a bitmap read",
    )?;
    Ok(())
}
