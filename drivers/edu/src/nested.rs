//! NESTED_STAGE1 (arm, SMMUv3): the driver owns its device's stage 1. It writes a context
//! descriptor and VMSAv8-64 stage-1 tables into its own memory, maps that memory into a stage-2
//! nest parent (so every table address it writes is an IPA of the parent), and attaches the
//! device to a nested HWPT over the parent. The server owns stage 2 and the STE; whatever the
//! driver writes into the CD or its tables reaches only what the parent maps.

use crate::{buffer, check, connect_first, expect_error, fill_pattern, open_device, same_bytes, slot, Client, Outcome, FAULT_TIMEOUT};
use core::sync::atomic::{fence, Ordering::SeqCst};
use iommu_abi::{
    Access, DeviceId, Error, FaultId, FaultReason, FaultRecord, FaultStage, Invalidation, IovaChoice, Perm, Stage1Config, Stage1Format,
    UnitCaps, PAGE_SIZE,
};
use iommu_client::HwptOptions;
use kernel_abi::MemFlags;
use userlib::{println, syscall};

/// VMSAv8-64 stage-1 descriptor bits (Arm ARM D8.3), 4 KiB granule. The driver has no heap, so
/// it writes its descriptors itself rather than through the server's table crates.
mod descriptor {
    /// Bit 0: valid; bit 1: table (levels 1-2) or page (level 3).
    pub const TABLE_OR_PAGE: u64 = 0b11;
    /// AttrIndx[2:0], bits 4:2, holding 0: MAIR attribute 0 (normal write-back memory).
    pub const NORMAL_MEMORY: u64 = 0;
    /// AP[1], bit 6: unprivileged (device) accesses allowed; AP[2] (bit 7) clear: writable.
    pub const AP_UNPRIVILEGED: u64 = 1 << 6;
    /// SH[1:0], bits 9:8 = 0b11: inner shareable.
    pub const INNER_SHAREABLE: u64 = 0b11 << 8;
    /// AF, bit 10: QEMU's SMMU has no hardware access-flag update, so AF = 0 faults.
    pub const ACCESS_FLAG: u64 = 1 << 10;
    /// Output address, bits 47:12.
    pub const ADDRESS: u64 = ((1 << 48) - 1) & !0xfff;
}

/// Context descriptor fields (IHI 0070, 5.4): word 0 is the "TCR", word 1 TTB0, word 3 MAIR.
mod cd {
    /// T0SZ, word 0 bits 5:0.
    pub const T0SZ_SHIFT: u32 = 0;
    /// IR0 (9:8) and OR0 (11:10) = 0b01: write-back walks; SH0 (13:12) = 0b11: inner shareable.
    pub const WALK_ATTRIBUTES: u64 = 0b01 << 8 | 0b01 << 10 | 0b11 << 12;
    /// EPD1, bit 30: no walks through TTB1.
    pub const EPD1: u64 = 1 << 30;
    /// V, bit 31.
    pub const VALID: u64 = 1 << 31;
    /// IPS, bits 34:32.
    pub const IPS_SHIFT: u32 = 32;
    /// AA64, bit 41: VMSAv8-64 tables.
    pub const AA64: u64 = 1 << 41;
    /// R, bit 45: record faults (QEMU records translation faults only with R).
    pub const RECORD: u64 = 1 << 45;
    /// A, bit 46: abort faulting transactions (QEMU refuses A = 0).
    pub const ABORT: u64 = 1 << 46;
    /// ASID, bits 63:48.
    pub const ASID_SHIFT: u32 = 48;
    /// TTB0 in word 1, bits 51:4.
    pub const TTB0: u64 = ((1 << 52) - 1) & !0xf;
    /// MAIR (word 3): attribute 0 normal write-back (0xff), 1 device-nGnRE (0x04).
    pub const MAIR: u64 = 0x0000_0000_0044_04ff;
    /// Words of a CD.
    pub const WORDS: usize = 8;
}

/// The driver's memory, page by page: its CD, its three stage-1 tables (levels 1, 2, 3), the
/// source page, two destination pages and the page of invalidation entries.
mod page {
    pub const CD: u64 = 0;
    pub const LEVEL1: u64 = 1;
    pub const LEVEL2: u64 = 2;
    pub const LEVEL3: u64 = 3;
    pub const SOURCE: u64 = 4;
    pub const FIRST_DESTINATION: u64 = 5;
    pub const SECOND_DESTINATION: u64 = 6;
    pub const INVALIDATIONS: u64 = 7;
    pub const COUNT: u64 = 8;
}

/// Where the parent maps the driver's memory: page `n` is at IPA `IPA_BASE + n pages`.
const IPA_BASE: u64 = 0x4000_0000;
/// An IPA the parent does not map.
const IPA_HOLE: u64 = 0x9000_0000;
/// The device's addresses, which the driver's stage 1 translates (all under one level-3 table).
const VA_SOURCE: u64 = 0x1000_0000;
const VA_DESTINATION: u64 = 0x1000_1000;
/// Nothing in stage 1.
const VA_STAGE1_HOLE: u64 = 0x1000_2000;
/// Stage 1 maps it to `IPA_HOLE`.
const VA_STAGE2_HOLE: u64 = 0x1000_3000;
/// The driver's ASID: any value of the unit's width, since the server gives every nested HWPT
/// a VMID of its own.
const ASID: u16 = 7;
/// CD.T0SZ: 39-bit VAs, so the walk starts at level 1.
const T0SZ: u64 = 25;
/// CD.IPS for QEMU's 44-bit OAS (IDR5.OAS encoding 4); QEMU aborts on IPS = 6.
const IPS_44_BITS: u64 = 4;
/// Bytes the faulting DMAs write (few, so QEMU's per-access events stay few).
const FAULTING_BYTES: u64 = 8;

fn ipa(page: u64) -> u64 {
    IPA_BASE + page * PAGE_SIZE
}

/// The driver's memory, mapped at `va::BUFFER`.
struct Memory(&'static mut [u8]);

impl Memory {
    fn page(&mut self, page: u64) -> &mut [u8] {
        let start = (page * PAGE_SIZE) as usize;
        &mut self.0[start..start + PAGE_SIZE as usize]
    }

    /// Writes the 64-bit word at byte `offset` of `page` as the SMMU will read it.
    fn write_word(&mut self, page: u64, offset: u64, value: u64) {
        let word = &mut self.page(page)[offset as usize..offset as usize + 8];
        // SAFETY: `word` is 8 bytes of the driver's own mapped memory, 8-byte aligned (the
        // buffer is page-aligned and every offset used is a multiple of 8).
        unsafe { core::ptr::write_volatile(word.as_mut_ptr().cast::<u64>(), value) };
    }

    /// The level-3 entry of `va` points at `ipa` (read/write, unprivileged, normal memory).
    fn map(&mut self, va: u64, ipa: u64) {
        use descriptor::*;
        let leaf = TABLE_OR_PAGE | NORMAL_MEMORY | AP_UNPRIVILEGED | INNER_SHAREABLE | ACCESS_FLAG;
        self.write_word(page::LEVEL3, ((va >> 12) & 0x1ff) * 8, leaf | (ipa & ADDRESS));
        fence(SeqCst);
    }

    /// The level-1 and level-2 table descriptors on the path of `VA_SOURCE` (the other VAs
    /// share it).
    fn link_tables(&mut self) {
        let table = descriptor::TABLE_OR_PAGE;
        self.write_word(page::LEVEL1, ((VA_SOURCE >> 30) & 0x1ff) * 8, table | ipa(page::LEVEL2));
        self.write_word(page::LEVEL2, ((VA_SOURCE >> 21) & 0x1ff) * 8, table | ipa(page::LEVEL3));
        fence(SeqCst);
    }

    /// The CD: stage-1 tables at the IPA `ttb0`, the driver's ASID, faults aborted and recorded.
    fn write_cd(&mut self, ttb0: u64) {
        // TG0 (bits 7:6) = 0: 4 KiB granule; everything not set here (TTB1, HA/HD, S) is 0.
        let mut words = [0u64; cd::WORDS];
        words[0] = T0SZ << cd::T0SZ_SHIFT
            | cd::WALK_ATTRIBUTES
            | cd::EPD1
            | cd::VALID
            | IPS_44_BITS << cd::IPS_SHIFT
            | cd::AA64
            | cd::RECORD
            | cd::ABORT
            | u64::from(ASID) << cd::ASID_SHIFT;
        words[1] = ttb0 & cd::TTB0;
        words[3] = cd::MAIR;
        for (index, word) in words.iter().enumerate() {
            self.write_word(page::CD, 8 * index as u64, *word);
        }
        fence(SeqCst);
    }

    /// Writes `entries` at the start of the invalidation page.
    fn write_invalidations(&mut self, entries: &[[u64; 2]]) {
        for (index, entry) in entries.iter().enumerate() {
            self.write_word(page::INVALIDATIONS, 16 * index as u64, entry[0]);
            self.write_word(page::INVALIDATIONS, 16 * index as u64 + 8, entry[1]);
        }
        fence(SeqCst);
    }
}

/// `hwpt_invalidate` of the entries written by `write_invalidations`.
fn invalidate(iommu: &mut Client, hwpt: iommu_abi::HwptId, count: u32) -> Result<u64, Error> {
    iommu.hwpt_invalidate(hwpt, slot::BUFFER, page::INVALIDATIONS * PAGE_SIZE, count)
}

/// Waits for the record of the refused write of `FAULTING_BYTES` at `iova` and checks its
/// stage, and its access if `access` names one; records of the same page (QEMU reports a
/// refused transfer once per access) may come with it, any other fails check `code`.
fn await_fault(iommu: &mut Client, faults: FaultId, device: DeviceId, iova: u64, access: Option<Access>, stage: FaultStage, code: u64) -> Outcome {
    let start = syscall::instruction_counter();
    let mut seen: Option<FaultRecord> = None;
    while seen.is_none() {
        let batch = iommu.fault_read(faults).map_err(|_| (code, "fault_read"))?;
        for record in batch.records() {
            println!("edu-driver: fault record: iova {:#x} access {:#x} reason {:?} stage {:?}", record.iova, record.access.bits(), record.reason, record.stage);
            check(record.device == device.handle() && record.iova & !(PAGE_SIZE - 1) == iova, code, "a fault record of another device or page")?;
            seen.get_or_insert(*record);
        }
        check(syscall::instruction_counter() - start < FAULT_TIMEOUT, code, "no fault record for a write the SMMU must refuse")?;
        syscall::yield_now();
    }
    let record = seen.expect("loop ends with a record");
    let access_ok = access.is_none_or(|access| record.access == access);
    check(record.iova == iova && access_ok && record.reason == FaultReason::Translation, code, "the record names another address, access or reason")?;
    check(record.stage == stage, code, "the record names the wrong stage")
}

pub fn nested_stage1() -> Outcome {
    let mut iommu = connect_first()?;
    let edu = open_device()?;
    let device = iommu.device_bind(slot::DEVICE).map_err(|_| (400, "device_bind"))?;
    let info = iommu.get_info(device).map_err(|_| (400, "get_info"))?;
    check(info.caps.contains(UnitCaps::NESTING), 401, "the SMMU does not offer nesting")?;
    let ioas = iommu.ioas_alloc().map_err(|_| (402, "ioas_alloc"))?;
    let faults = iommu.fault_alloc().map_err(|_| (402, "fault_alloc"))?;
    let parent = iommu.hwpt_alloc(device, ioas, HwptOptions { nest_parent: true, fault: Some(faults), ..Default::default() }).map_err(|_| (403, "hwpt_alloc of the nest parent"))?;

    let mut memory = Memory(buffer(slot::BUFFER, page::COUNT, MemFlags::empty())?);
    memory.0.fill(0);
    iommu.ioas_map(ioas, slot::BUFFER, 0, page::COUNT * PAGE_SIZE, IovaChoice::Fixed(IPA_BASE), Perm::READ_WRITE).map_err(|_| (404, "map the driver's memory into the parent"))?;
    memory.link_tables();
    memory.map(VA_SOURCE, ipa(page::SOURCE));
    memory.map(VA_DESTINATION, ipa(page::FIRST_DESTINATION));
    memory.map(VA_STAGE2_HOLE, IPA_HOLE);
    memory.write_cd(ipa(page::LEVEL1));

    // Refused: a CD the parent does not map.
    let stage1 = |root| Stage1Config { format: Stage1Format::SmmuV3ContextDescriptors, table_root: root, address_width: 0, table_entries_log2: 0 };
    expect_error(iommu.hwpt_alloc_nested(device, parent, stage1(IPA_HOLE), Some(faults)), Error::NotMapped, 405, "a nested HWPT whose CD the parent does not map")?;
    let nested = iommu.hwpt_alloc_nested(device, parent, stage1(ipa(page::CD)), Some(faults)).map_err(|_| (406, "hwpt_alloc_nested"))?;
    iommu.device_attach(device, nested, None).map_err(|_| (407, "device_attach to the nested HWPT"))?;

    // The copy: VA → the driver's stage 1 → IPA → the server's stage 2 → memory.
    fill_pattern(memory.page(page::SOURCE), 0x31);
    edu.dma(VA_SOURCE, crate::edu::BUFFER, PAGE_SIZE, false).map_err(|why| (410, why))?;
    edu.dma(crate::edu::BUFFER, VA_DESTINATION, PAGE_SIZE, true).map_err(|why| (410, why))?;
    let mut expected = [0u8; PAGE_SIZE as usize];
    expected.copy_from_slice(memory.page(page::SOURCE));
    check(same_bytes("first destination", &expected, memory.page(page::FIRST_DESTINATION)), 411, "the copy through stage 1 then stage 2 differs")?;
    println!("edu-driver: DMA through the driver's own stage 1 over the server's stage 2: all {PAGE_SIZE} bytes match");

    // The driver moves the destination in its stage 1 and invalidates: the DMA follows.
    memory.page(page::FIRST_DESTINATION).fill(0);
    memory.map(VA_DESTINATION, ipa(page::SECOND_DESTINATION));
    memory.write_invalidations(&[Invalidation::Stage1Range { asid: ASID, va: VA_DESTINATION, pages: 1, leaf_only: true }.encode()]);
    check(invalidate(&mut iommu, nested, 1) == Ok(1), 412, "hwpt_invalidate of one stage-1 page")?;
    edu.dma(crate::edu::BUFFER, VA_DESTINATION, PAGE_SIZE, true).map_err(|why| (413, why))?;
    check(same_bytes("second destination", &expected, memory.page(page::SECOND_DESTINATION)), 414, "the DMA did not follow the changed stage-1 entry")?;
    check(memory.page(page::FIRST_DESTINATION).iter().all(|&b| b == 0), 415, "the DMA still reached the old destination")?;
    println!("edu-driver: stage-1 entry changed and invalidated with hwpt_invalidate: the DMA followed");

    // A stage-1 fault and a stage-2 fault, each with its stage.
    edu.dma(crate::edu::BUFFER, VA_STAGE1_HOLE, FAULTING_BYTES, true).map_err(|why| (420, why))?;
    await_fault(&mut iommu, faults, device, VA_STAGE1_HOLE, Some(Access::WRITE), FaultStage::Stage1, 421)?;
    edu.dma(crate::edu::BUFFER, VA_STAGE2_HOLE, FAULTING_BYTES, true).map_err(|why| (422, why))?;
    await_fault(&mut iommu, faults, device, VA_STAGE2_HOLE, Some(Access::WRITE), FaultStage::Stage2, 423)?;
    println!("edu-driver: a stage-1 fault and a stage-2 fault reached the fault queue with their stage");

    // A CD pointing its tables at an IPA the parent does not map: the walk faults at stage 2.
    memory.page(page::SECOND_DESTINATION).fill(0);
    memory.write_cd(IPA_HOLE);
    memory.write_invalidations(&[Invalidation::ContextDescriptor.encode(), Invalidation::Stage1Asid { asid: ASID }.encode()]);
    check(invalidate(&mut iommu, nested, 2) == Ok(2), 430, "hwpt_invalidate of the CD and the ASID")?;
    edu.dma(crate::edu::BUFFER, VA_DESTINATION, FAULTING_BYTES, true).map_err(|why| (431, why))?;
    // QEMU reports the direction of the failed table read here (RnW = 1), not the write's.
    await_fault(&mut iommu, faults, device, VA_DESTINATION, None, FaultStage::Stage2, 432)?;
    check(memory.page(page::SECOND_DESTINATION).iter().all(|&b| b == 0), 433, "a DMA through tables the parent does not map wrote memory")?;

    // Hostile invalidations: malformed entries stop the batch, the parent is no nested HWPT,
    // and no count or offset outside the memory object is read.
    memory.write_cd(ipa(page::LEVEL1));
    memory.write_invalidations(&[Invalidation::ContextDescriptor.encode(), [3 | 1 << 9, 0], Invalidation::Stage1Asid { asid: ASID }.encode()]);
    check(invalidate(&mut iommu, nested, 3) == Ok(1), 440, "a batch with a malformed second entry was not stopped there")?;
    memory.write_invalidations(&[Invalidation::Stage1Asid { asid: ASID }.encode()]);
    check(invalidate(&mut iommu, nested, 1) == Ok(1), 441, "hwpt_invalidate of the ASID")?;
    expect_error(invalidate(&mut iommu, parent, 1), Error::NotSupported, 442, "hwpt_invalidate of the stage-2 parent")?;
    expect_error(invalidate(&mut iommu, nested, 0), Error::InvalidRange, 443, "hwpt_invalidate of no entry")?;
    expect_error(iommu.hwpt_invalidate(nested, slot::BUFFER, page::COUNT * PAGE_SIZE - 16, 2), Error::OutOfObjectRange, 444, "entries past the memory object")?;

    // The restored CD translates again.
    edu.dma(crate::edu::BUFFER, VA_DESTINATION, PAGE_SIZE, true).map_err(|why| (450, why))?;
    check(same_bytes("second destination, restored", &expected, memory.page(page::SECOND_DESTINATION)), 451, "the restored CD does not translate")?;
    println!("edu-driver: hostile CD and invalidation requests refused or contained at stage 2");

    iommu.device_detach(device, None).map_err(|_| (460, "device_detach"))?;
    iommu.destroy(nested.handle()).map_err(|_| (460, "destroy the nested HWPT"))?;
    iommu.destroy(parent.handle()).map_err(|_| (460, "destroy the parent"))?;
    Ok(())
}
