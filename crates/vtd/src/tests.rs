//! The driver against the software model: bring-up, attach/detach in every mode, invalidation
//! and its necessity (the model caches until told otherwise), faults, interrupt remapping.

use alloc::rc::Rc;
use alloc::vec::Vec;

use hwio::bits::ReservedBitsSet;
use hwio::{DmaAllocator, Registers};

use crate::descriptors::{DeviceTlbRange, Invalidation, DEVICE_TLB_ALL};
use crate::dma::DmaTable;
use crate::fault::{AccessKind, FaultKind};
use crate::irq::ApicMode;
use crate::model::{qemu, FakeDma, PhysMemory, StepClock, TableFormat, TestPageTable, VtdModel};
use crate::regs::{self, gcmd};
use crate::tables::{ContextEntry, LegacyTranslationType};
use crate::unit::{Mode, Translation, VtdUnit};
use crate::{RequesterId, VtdError, WaitTarget};

const MEMORY_BASE: u64 = 0x1000_0000;
const ECAP_COHERENT: u64 = 1 << 0;
const ECAP_QI: u64 = 1 << 1;
const ECAP_DEVICE_TLB: u64 = 1 << 2;
const ECAP_NEST: u64 = 1 << 26;
const ECAP_SLTS: u64 = 1 << 46;

struct Rig {
    dma: FakeDma,
    unit: VtdUnit<VtdModel, StepClock>,
}

impl Rig {
    fn new(cap: u64, ecap: u64) -> Self {
        let memory: Rc<PhysMemory> = PhysMemory::new(MEMORY_BASE, 8 << 20);
        let dma = FakeDma::new(memory.clone());
        let unit = VtdUnit::new(VtdModel::new(memory, cap, ecap), StepClock::new(1_000));
        Self { dma, unit }
    }

    fn initialized(cap: u64, ecap: u64, mode: Mode) -> Self {
        let mut rig = Self::new(cap, ecap);
        rig.unit.init(mode, &mut rig.dma).expect("init");
        rig
    }

    fn model(&self) -> &VtdModel {
        self.unit.registers()
    }

    fn page(&mut self) -> u64 {
        self.dma.alloc_zeroed(4096, 4096).unwrap().phys
    }

    fn table(&mut self, format: TableFormat, levels: u8) -> TestPageTable {
        TestPageTable::new(&mut self.dma, format, levels)
    }

    /// A second-level table mapping `iova` to a fresh page; returns (table, page).
    fn second_level_mapping(&mut self, iova: u64, writable: bool) -> (TestPageTable, u64) {
        let mut table = self.table(TableFormat::SecondLevel, 4);
        let page = self.page();
        table.map_4k(&mut self.dma, iova, page, writable);
        (table, page)
    }

    fn first_level_mapping(&mut self, iova: u64) -> (TestPageTable, u64) {
        let mut table = self.table(TableFormat::FirstLevel, 4);
        let page = self.page();
        table.map_4k(&mut self.dma, iova, page, true);
        (table, page)
    }

    fn invalidations_since(&self, start: usize) -> Vec<Invalidation> {
        self.model().invalidations()[start..].to_vec()
    }
}

const DEVICE: RequesterId = RequesterId(0x0018); // 00:03.0
const OTHER_DEVICE: RequesterId = RequesterId(0x0020); // 00:04.0

fn offsets_written(rig: &Rig) -> Vec<usize> {
    rig.model().register_writes().iter().map(|write| write.offset).collect()
}

#[test]
fn legacy_init_order_and_default_deny() {
    let mut rig = Rig::initialized(qemu::CAP, qemu::ECAP_LEGACY, Mode::Legacy);
    let writes = rig.model().register_writes();
    let position = |offset: usize, value_bit: u64| {
        writes.iter().position(|write| write.offset == offset && write.value & value_bit == value_bit).unwrap()
    };
    let rtaddr = position(regs::RTADDR, 0);
    let srtp = position(regs::GCMD, gcmd::SRTP as u64);
    let iqa = position(regs::IQA, 0);
    let qie = position(regs::GCMD, gcmd::QIE as u64);
    let te = position(regs::GCMD, gcmd::TE as u64);
    assert!(rtaddr < srtp && srtp < iqa && iqa < qie && qie < te, "order: {writes:?}");
    assert_eq!(te, writes.iter().rposition(|write| write.offset == regs::GCMD).unwrap());
    // Legacy TTM, 128-bit descriptors.
    assert_eq!(writes[rtaddr].value & 0xc00, 0);
    assert_eq!(writes[iqa].value & regs::iqa::DW_256, 0);
    // 32-bit registers were only ever written with 4-byte accesses.
    assert!(writes.iter().filter(|write| write.offset == regs::GCMD).all(|write| write.width == 4));
    assert_eq!(rig.model().invalidations(), [Invalidation::ContextGlobal, Invalidation::IotlbGlobal]);
    assert_eq!(rig.model().srtp_count(), 1);
    let status = rig.model().global_status();
    assert_eq!(status & (gcmd::TE | gcmd::QIE), gcmd::TE | gcmd::QIE);
    assert_eq!(rig.unit.mode(), Some(Mode::Legacy));

    for requester in [RequesterId::new(0, 0, 0), DEVICE, RequesterId::new(0xff, 31, 7)] {
        assert_eq!(rig.model().translate(requester, None, 0x1000, false), Err(0x01));
    }
    // One record: the first fault is kept, the others overflow.
    let report = rig.unit.drain_faults();
    assert_eq!(report.faults.len(), 1);
    assert_eq!(report.faults[0].requester, RequesterId::new(0, 0, 0));
    assert_eq!(report.faults[0].reason, 0x01);
    assert!(report.overflowed);
    assert!(rig.unit.drain_faults().faults.is_empty());
    assert!(!rig.unit.drain_faults().overflowed);
}

#[test]
fn scalable_init_uses_scalable_root_and_wide_descriptors() {
    let rig = Rig::initialized(qemu::CAP, qemu::ECAP_SCALABLE, Mode::Scalable);
    let writes = rig.model().register_writes();
    let rtaddr = writes.iter().find(|write| write.offset == regs::RTADDR).unwrap();
    assert_eq!(rtaddr.value & 0xc00, regs::rtaddr::TTM_SCALABLE);
    let iqa = writes.iter().find(|write| write.offset == regs::IQA).unwrap();
    assert_eq!(iqa.value & regs::iqa::DW_256, regs::iqa::DW_256);
    assert_eq!(
        rig.model().invalidations(),
        [Invalidation::ContextGlobal, Invalidation::PasidCacheGlobal, Invalidation::IotlbGlobal]
    );
    assert_eq!(rig.model().translate(DEVICE, None, 0, true), Err(0x01));
}

#[test]
fn mode_choice_follows_smts() {
    let mut legacy = Rig::new(qemu::CAP, qemu::ECAP_LEGACY);
    assert_eq!(legacy.unit.preferred_mode(), Mode::Legacy);
    assert_eq!(
        legacy.unit.init(Mode::Scalable, &mut legacy.dma),
        Err(VtdError::Unsupported("scalable mode needs ECAP.SMTS"))
    );
    assert_eq!(Rig::new(qemu::CAP, qemu::ECAP_SCALABLE).unit.preferred_mode(), Mode::Scalable);
    assert_eq!(legacy.unit.attach(DEVICE, 1, Translation::PassThrough, &mut legacy.dma), Err(VtdError::NotInitialized));
}

#[test]
fn global_status_that_never_follows_times_out() {
    let mut rig = Rig::new(qemu::CAP, qemu::ECAP_LEGACY);
    rig.model().stall_global_command();
    assert_eq!(rig.unit.init(Mode::Legacy, &mut rig.dma), Err(VtdError::Timeout(WaitTarget::GlobalStatus(gcmd::SRTP))));
}

#[test]
fn invalidation_wait_that_never_completes_times_out() {
    let mut rig = Rig::new(qemu::CAP, qemu::ECAP_LEGACY);
    rig.model().stall_queue();
    rig.unit.set_timeout_ns(1_000_000);
    assert_eq!(rig.unit.init(Mode::Legacy, &mut rig.dma), Err(VtdError::Timeout(WaitTarget::InvalidationWait)));
    // Translation was never enabled.
    assert_eq!(rig.model().global_status() & gcmd::TE, 0);
}

#[test]
fn register_based_invalidation_without_qi() {
    let mut rig = Rig::initialized(qemu::CAP, qemu::ECAP_LEGACY & !ECAP_QI, Mode::Legacy);
    assert_eq!(rig.model().invalidations(), [Invalidation::ContextGlobal, Invalidation::IotlbGlobal]);
    assert!(!offsets_written(&rig).contains(&regs::IQA));
    let (table, page) = rig.second_level_mapping(0x4000, true);
    rig.unit.attach(DEVICE, 3, Translation::SecondLevel { root: table.root(), levels: 4 }, &mut rig.dma).unwrap();
    assert_eq!(rig.model().translate(DEVICE, None, 0x4010, true), Ok(page + 0x10));
    table.unmap_4k(&rig.dma, 0x4000);
    assert_eq!(rig.model().translate(DEVICE, None, 0x4010, true), Ok(page + 0x10), "cached until flushed");
    let start = rig.model().invalidations().len();
    rig.unit.flush_iotlb_range(3, 0x4000, 0x2000, &rig.dma).unwrap();
    assert_eq!(rig.model().dma_write(DEVICE, None, 0x4010, &[1]), Err(0x05));
    // IVA carries address and mask, IOTLB_REG the DID; drain bits follow CAP.DRD/DWD.
    assert_eq!(
        rig.invalidations_since(start),
        [Invalidation::IotlbPages { did: 3, address: 0x4000, address_mask: 1, leaf_only: false }]
    );
    let iotlb_write = rig.model().register_writes().into_iter().rfind(|write| write.offset == 0xf8).unwrap();
    assert_eq!(iotlb_write.value, 1 << 63 | 3 << 60 | 1 << 49 | 1 << 48 | 3 << 32);
    assert_eq!(
        rig.unit.flush_pasid(3, 1, None, &rig.dma),
        Err(VtdError::Unsupported("PASID-based invalidation needs scalable mode"))
    );
}

#[test]
fn register_invalidation_that_never_completes_times_out() {
    let mut rig = Rig::new(qemu::CAP, qemu::ECAP_LEGACY & !ECAP_QI);
    rig.model().stall_register_invalidation();
    assert_eq!(rig.unit.init(Mode::Legacy, &mut rig.dma), Err(VtdError::Timeout(WaitTarget::ContextCommand)));
}

#[test]
fn legacy_attach_translates_and_checks_permissions() {
    let mut rig = Rig::initialized(qemu::CAP, qemu::ECAP_LEGACY, Mode::Legacy);
    let (mut table, page) = rig.second_level_mapping(0x4000, true);
    let read_only = rig.page();
    table.map_4k(&mut rig.dma, 0x8000, read_only, false);
    rig.unit.attach(DEVICE, 1, Translation::SecondLevel { root: table.root(), levels: 4 }, &mut rig.dma).unwrap();
    assert_eq!(rig.unit.attached_domain(DEVICE), Some(1));

    assert_eq!(rig.model().translate(DEVICE, None, 0x4abc, false), Ok(page + 0xabc));
    assert_eq!(rig.model().translate(DEVICE, None, 0x4abc, true), Ok(page + 0xabc));
    assert_eq!(rig.model().translate(DEVICE, None, 0x8000, false), Ok(read_only));
    assert_eq!(rig.model().translate(DEVICE, None, 0x8000, true), Err(0x05));
    assert_eq!(rig.model().translate(DEVICE, None, 0xc000, false), Err(0x06));
    assert_eq!(rig.model().translate(DEVICE, None, 1 << 48, false), Err(0x04));
    // Same bus, other device: its context entry is still not present.
    assert_eq!(rig.model().translate(OTHER_DEVICE, None, 0x4000, false), Err(0x02));
    // No PASID support in legacy mode.
    assert!(rig.unit.attach_pasid(DEVICE, 1, 1, Translation::PassThrough, &mut rig.dma).is_err());
    assert_eq!(
        rig.unit.attach(DEVICE, 1, Translation::FirstLevel { root: table.root(), five_level: false }, &mut rig.dma),
        Err(VtdError::Unsupported("first-level and nested translation need scalable mode"))
    );
    // 5-level second-level tables are not in QEMU's SAGAW.
    assert!(rig.unit.attach(DEVICE, 1, Translation::SecondLevel { root: table.root(), levels: 5 }, &mut rig.dma).is_err());
}

#[test]
fn legacy_detach_blocks_and_invalidates() {
    let mut rig = Rig::initialized(qemu::CAP, qemu::ECAP_LEGACY, Mode::Legacy);
    let (table, page) = rig.second_level_mapping(0x4000, true);
    rig.unit.attach(DEVICE, 9, Translation::SecondLevel { root: table.root(), levels: 4 }, &mut rig.dma).unwrap();
    assert_eq!(rig.model().translate(DEVICE, None, 0x4000, false), Ok(page));
    let start = rig.model().invalidations().len();
    rig.unit.detach(DEVICE, &mut rig.dma).unwrap();
    assert_eq!(
        rig.invalidations_since(start),
        [Invalidation::ContextDevice { did: 9, source: DEVICE.0, function_mask: 0 }, Invalidation::IotlbDomain { did: 9 }]
    );
    assert_eq!(rig.model().translate(DEVICE, None, 0x4000, false), Err(0x02));
    assert_eq!(rig.unit.detach(DEVICE, &mut rig.dma), Err(VtdError::NotAttached));
    assert_eq!(rig.unit.attached_domain(DEVICE), None);
}

#[test]
fn legacy_replace_switches_domains_without_stale_translations() {
    let mut rig = Rig::initialized(qemu::CAP, qemu::ECAP_LEGACY, Mode::Legacy);
    let (first, first_page) = rig.second_level_mapping(0x4000, true);
    let (second, second_page) = rig.second_level_mapping(0x4000, true);
    rig.unit.attach(DEVICE, 1, Translation::SecondLevel { root: first.root(), levels: 4 }, &mut rig.dma).unwrap();
    assert_eq!(rig.model().translate(DEVICE, None, 0x4000, false), Ok(first_page));
    rig.unit.attach(DEVICE, 2, Translation::SecondLevel { root: second.root(), levels: 4 }, &mut rig.dma).unwrap();
    assert_eq!(rig.model().translate(DEVICE, None, 0x4000, false), Ok(second_page));
    assert!(rig.model().invalidations().contains(&Invalidation::ContextDevice { did: 1, source: DEVICE.0, function_mask: 0 }));
}

#[test]
fn entries_with_reserved_bits_are_refused_by_the_writer_and_faulted_by_the_unit() {
    let mut rig = Rig::initialized(qemu::CAP, qemu::ECAP_LEGACY, Mode::Legacy);
    let (table, page) = rig.second_level_mapping(0x4000, true);
    rig.unit.attach(DEVICE, 1, Translation::SecondLevel { root: table.root(), levels: 4 }, &mut rig.dma).unwrap();
    assert_eq!(rig.model().translate(DEVICE, None, 0x4000, false), Ok(page));

    // The writer refuses a context entry with R (bit 71) set and leaves the slot untouched.
    let mut wrong = ContextEntry::new(LegacyTranslationType::Untranslated, table.root(), 4, 1);
    wrong.words[1] |= 1 << 7;
    let scratch = DmaTable::allocate(&mut rig.dma, 4096, true).unwrap();
    assert_eq!(
        scratch.publish(&rig.dma, 0, &wrong),
        Err(VtdError::ReservedBitsSet(ReservedBitsSet { word: 1, bits: 1 << 7 }))
    );
    assert_eq!((scratch.read_word(0), scratch.read_word(8)), (0, 0));

    // Written behind the driver's back, the unit faults on it: 0Bh, reserved bits in context entry.
    let memory = rig.dma.memory();
    let root = rig.model().read64(regs::RTADDR) & !0xfff;
    let context_table = memory.read_u64(root + DEVICE.bus() as u64 * 16).unwrap() & !0xfff;
    let slot = context_table + DEVICE.devfn() as u64 * 16;
    memory.write_u64(slot + 8, wrong.words[1]).unwrap();
    rig.unit.invalidate(&[Invalidation::ContextGlobal, Invalidation::IotlbGlobal], &rig.dma).unwrap();
    assert_eq!(rig.model().translate(DEVICE, None, 0x4000, false), Err(0x0b));
}

#[test]
fn legacy_pass_through() {
    let mut rig = Rig::initialized(qemu::CAP, qemu::ECAP_LEGACY, Mode::Legacy);
    rig.unit.attach(DEVICE, 4, Translation::PassThrough, &mut rig.dma).unwrap();
    assert_eq!(rig.model().translate(DEVICE, None, 0x1234_5678, true), Ok(0x1234_5678));
    let without_pt = Rig::initialized(qemu::CAP, qemu::ECAP_LEGACY & !(1 << 6), Mode::Legacy);
    let mut without_pt = without_pt;
    assert_eq!(
        without_pt.unit.attach(DEVICE, 4, Translation::PassThrough, &mut without_pt.dma),
        Err(VtdError::Unsupported("pass-through needs ECAP.PT"))
    );
}

#[test]
fn unmap_needs_the_iotlb_flush() {
    let mut rig = Rig::initialized(qemu::CAP, qemu::ECAP_LEGACY, Mode::Legacy);
    let (table, page) = rig.second_level_mapping(0x4000, true);
    rig.unit.attach(DEVICE, 5, Translation::SecondLevel { root: table.root(), levels: 4 }, &mut rig.dma).unwrap();
    assert_eq!(rig.model().translate(DEVICE, None, 0x4000, false), Ok(page));
    table.unmap_4k(&rig.dma, 0x4000);
    // The IOTLB still holds the translation, exactly what a missing flush would leave.
    assert_eq!(rig.model().translate(DEVICE, None, 0x4000, false), Ok(page));
    let start = rig.model().invalidations().len();
    rig.unit.flush_iotlb_range(5, 0x4000, 0x1000, &rig.dma).unwrap();
    assert_eq!(
        rig.invalidations_since(start),
        [Invalidation::IotlbPages { did: 5, address: 0x4000, address_mask: 0, leaf_only: false }]
    );
    assert_eq!(rig.model().translate(DEVICE, None, 0x4000, false), Err(0x06));
    // A block beyond MAMV (18) falls back to domain-selective.
    let start = rig.model().invalidations().len();
    rig.unit.flush_iotlb_range(5, 0, 1 << 40, &rig.dma).unwrap();
    assert_eq!(rig.invalidations_since(start), [Invalidation::IotlbDomain { did: 5 }]);
    let start = rig.model().invalidations().len();
    rig.unit.flush_domain(5, &rig.dma).unwrap();
    assert_eq!(rig.invalidations_since(start), [Invalidation::IotlbDomain { did: 5 }]);
    // Every queued batch ended in a status-write wait.
    assert!(rig.model().waits().len() >= 4);
}

#[test]
fn non_coherent_walks_get_flushed_coherent_ones_do_not() {
    let mut rig = Rig::initialized(qemu::CAP, qemu::ECAP_LEGACY, Mode::Legacy);
    let before = rig.dma.flush_count();
    rig.unit.attach(DEVICE, 1, Translation::PassThrough, &mut rig.dma).unwrap();
    assert!(rig.dma.flush_count() > before);

    let mut coherent = Rig::initialized(qemu::CAP, qemu::ECAP_LEGACY | ECAP_COHERENT, Mode::Legacy);
    assert_eq!(coherent.dma.flush_count(), 0);
    coherent.unit.attach(DEVICE, 1, Translation::PassThrough, &mut coherent.dma).unwrap();
    assert_eq!(coherent.dma.flush_count(), 0);
}

#[test]
fn caching_mode_reserves_did_zero_and_invalidates_on_present() {
    let mut rig = Rig::initialized(qemu::CAP | qemu::CAP_CM, qemu::ECAP_LEGACY, Mode::Legacy);
    assert!(rig.unit.caching_mode());
    assert_eq!(
        rig.unit.attach(DEVICE, 0, Translation::PassThrough, &mut rig.dma),
        Err(VtdError::InvalidArgument("domain-id 0 is reserved in caching mode"))
    );
    let start = rig.model().invalidations().len();
    rig.unit.attach(DEVICE, 6, Translation::PassThrough, &mut rig.dma).unwrap();
    assert_eq!(
        rig.invalidations_since(start),
        [Invalidation::ContextDevice { did: 0, source: DEVICE.0, function_mask: 0 }, Invalidation::IotlbDomain { did: 6 }]
    );
    let page = rig.page();
    assert_eq!(dma_lands(rig.model(), rig.dma.memory(), None, page, page), Ok(vec![0x5a; 16]));
    assert_eq!(
        rig.unit.attach(DEVICE, 1 << 15, Translation::PassThrough, &mut rig.dma),
        Ok(())
    );
}

#[test]
fn scalable_second_level_attach_and_detach_frees_pasid_tables() {
    let mut rig = Rig::initialized(qemu::CAP, qemu::ECAP_SCALABLE, Mode::Scalable);
    let (table, page) = rig.second_level_mapping(0x7000, true);
    let live_before = rig.dma.live_allocations();
    rig.unit.attach(DEVICE, 11, Translation::SecondLevel { root: table.root(), levels: 4 }, &mut rig.dma).unwrap();
    assert_eq!(rig.model().translate(DEVICE, None, 0x7008, true), Ok(page + 8));
    assert_eq!(rig.model().translate(DEVICE, None, 0x9000, true), Err(0x05));
    // Context table for bus 0 lower half + PASID directory + PASID table.
    assert_eq!(rig.dma.live_allocations(), live_before + 3);
    // A device above devfn 127 uses the upper context table.
    let high_device = RequesterId::new(0, 20, 0);
    rig.unit.attach(high_device, 12, Translation::PassThrough, &mut rig.dma).unwrap();
    assert_eq!(rig.model().translate(high_device, None, 0xabc000, false), Ok(0xabc000));

    let start = rig.model().invalidations().len();
    rig.unit.detach(DEVICE, &mut rig.dma).unwrap();
    assert_eq!(
        rig.invalidations_since(start),
        [
            Invalidation::PasidCachePasid { did: 11, pasid: 0 },
            Invalidation::IotlbDomain { did: 11 },
            Invalidation::ContextDevice { did: 0, source: DEVICE.0, function_mask: 0 },
        ]
    );
    assert_eq!(rig.model().translate(DEVICE, None, 0x7000, false), Err(0x02));
    // Directory and table freed; the high device's are still live.
    assert_eq!(rig.dma.live_allocations(), live_before + 1 + 3);
    assert_eq!(rig.model().translate(high_device, None, 0x1000, false), Ok(0x1000));
}

#[test]
fn scalable_replace_invalidates_the_old_domain() {
    let mut rig = Rig::initialized(qemu::CAP, qemu::ECAP_SCALABLE, Mode::Scalable);
    let (first, first_page) = rig.second_level_mapping(0x7000, true);
    let mut three_level = rig.table(TableFormat::SecondLevel, 3);
    let second_page = rig.page();
    three_level.map_4k(&mut rig.dma, 0x7000, second_page, true);
    rig.unit.attach(DEVICE, 1, Translation::SecondLevel { root: first.root(), levels: 4 }, &mut rig.dma).unwrap();
    assert_eq!(rig.model().translate(DEVICE, None, 0x7000, false), Ok(first_page));
    let start = rig.model().invalidations().len();
    rig.unit.attach(DEVICE, 2, Translation::SecondLevel { root: three_level.root(), levels: 3 }, &mut rig.dma).unwrap();
    assert_eq!(
        rig.invalidations_since(start),
        [Invalidation::PasidCachePasid { did: 1, pasid: 0 }, Invalidation::IotlbDomain { did: 1 }]
    );
    assert_eq!(rig.model().translate(DEVICE, None, 0x7000, false), Ok(second_page));
    assert_eq!(rig.unit.attached_domain(DEVICE), Some(2));
}

#[test]
fn scalable_pass_through() {
    let mut rig = Rig::initialized(qemu::CAP, qemu::ECAP_SCALABLE, Mode::Scalable);
    rig.unit.attach(DEVICE, 3, Translation::PassThrough, &mut rig.dma).unwrap();
    assert_eq!(rig.model().translate(DEVICE, None, 0xdead_b000, true), Ok(0xdead_b000));
}

#[test]
fn first_level_translation_and_user_bit() {
    let mut rig = Rig::initialized(qemu::CAP_FLTS, qemu::ECAP_FLTS, Mode::Scalable);
    let (table, page) = rig.first_level_mapping(0x5000);
    rig.unit.attach(DEVICE, 1, Translation::FirstLevel { root: table.root(), five_level: false }, &mut rig.dma).unwrap();
    assert_eq!(rig.model().translate(DEVICE, None, 0x5123, true), Ok(page + 0x123));
    assert_eq!(rig.model().translate(DEVICE, None, 0x6000, false), Err(0x71));
    // Non-canonical input address.
    assert_eq!(rig.model().translate(DEVICE, None, 0x0001_0000_0000_0000, false), Err(0x80));
    // The whole 48-bit lower half translates: the entry's AW names 48 bits (with AW = 0 the
    // model, like QEMU, would take everything from 2^29 up as non-canonical).
    let (high, high_page) = rig.first_level_mapping(0x7fff_ffff_f000);
    rig.unit.attach(DEVICE, 1, Translation::FirstLevel { root: high.root(), five_level: false }, &mut rig.dma).unwrap();
    assert_eq!(rig.model().translate(DEVICE, None, 0x7fff_ffff_f008, false), Ok(high_page + 8));
    assert_eq!(rig.model().translate(DEVICE, None, 0x2000_0000, false), Err(0x71));

    let mut supervisor = TestPageTable::new(&mut rig.dma, TableFormat::FirstLevel, 4).supervisor_only();
    let page = rig.page();
    supervisor.map_4k(&mut rig.dma, 0x5000, page, true);
    rig.unit.attach(OTHER_DEVICE, 2, Translation::FirstLevel { root: supervisor.root(), five_level: false }, &mut rig.dma).unwrap();
    assert_eq!(rig.model().translate(OTHER_DEVICE, None, 0x5000, false), Err(0x81));

    // x-flts units have no second-level translation.
    assert_eq!(
        rig.unit.attach(DEVICE, 1, Translation::SecondLevel { root: table.root(), levels: 4 }, &mut rig.dma),
        Err(VtdError::Unsupported("second-level translation needs ECAP.SLTS"))
    );
    assert!(rig.unit.attach(DEVICE, 1, Translation::FirstLevel { root: table.root(), five_level: true }, &mut rig.dma).is_err());
}

#[test]
fn pasid_attach_translates_only_that_pasid() {
    let mut rig = Rig::initialized(qemu::CAP_FLTS, qemu::ECAP_FLTS | qemu::ECAP_PASID, Mode::Scalable);
    let (untagged, untagged_page) = rig.first_level_mapping(0x5000);
    let (tagged, tagged_page) = rig.first_level_mapping(0x5000);
    rig.unit.attach(DEVICE, 1, Translation::FirstLevel { root: untagged.root(), five_level: false }, &mut rig.dma).unwrap();
    rig.unit.attach_pasid(DEVICE, 5, 2, Translation::FirstLevel { root: tagged.root(), five_level: false }, &mut rig.dma).unwrap();

    assert_eq!(rig.model().translate(DEVICE, None, 0x5000, false), Ok(untagged_page));
    assert_eq!(rig.model().translate(DEVICE, Some(5), 0x5000, true), Ok(tagged_page));
    // Same PASID table, entry not present.
    assert_eq!(rig.model().translate(DEVICE, Some(6), 0x5000, false), Err(0x59));
    // Another directory entry, not present.
    assert_eq!(rig.model().translate(DEVICE, Some(1000), 0x5000, false), Err(0x51));
    // Another device has no context entry at all.
    assert_eq!(rig.model().translate(OTHER_DEVICE, Some(5), 0x5000, false), Err(0x02));

    let faults = rig.unit.drain_faults().faults;
    assert_eq!(faults[0].pasid, Some(6));
    assert_eq!(faults[0].reason, 0x59);

    let start = rig.model().invalidations().len();
    rig.unit.detach_pasid(DEVICE, 5, &mut rig.dma).unwrap();
    assert_eq!(
        rig.invalidations_since(start),
        [Invalidation::PasidCachePasid { did: 2, pasid: 5 }, Invalidation::PasidIotlbAll { did: 2, pasid: 5 }]
    );
    assert_eq!(rig.model().translate(DEVICE, Some(5), 0x5000, false), Err(0x59));
    // Untagged DMA is unaffected.
    assert_eq!(rig.model().translate(DEVICE, None, 0x5000, false), Ok(untagged_page));
    assert_eq!(rig.unit.detach_pasid(DEVICE, 5, &mut rig.dma), Err(VtdError::NotAttached));
    assert!(rig.unit.attach_pasid(DEVICE, crate::unit::MAX_PASID, 2, Translation::PassThrough, &mut rig.dma).is_err());
}

#[test]
fn pasid_only_device_keeps_context_until_last_pasid_goes() {
    let mut rig = Rig::initialized(qemu::CAP_FLTS, qemu::ECAP_FLTS | qemu::ECAP_PASID, Mode::Scalable);
    let (table, page) = rig.first_level_mapping(0x5000);
    rig.unit.attach_pasid(DEVICE, 70, 4, Translation::FirstLevel { root: table.root(), five_level: false }, &mut rig.dma).unwrap();
    assert_eq!(rig.model().translate(DEVICE, Some(70), 0x5000, false), Ok(page));
    // RID_PASID's entry is not present: untagged DMA is blocked.
    assert_eq!(rig.model().translate(DEVICE, None, 0x5000, false), Err(0x51));
    rig.unit.detach_pasid(DEVICE, 70, &mut rig.dma).unwrap();
    assert_eq!(rig.model().translate(DEVICE, Some(70), 0x5000, false), Err(0x02));
}

#[test]
fn pasid_flush_drops_only_that_pasid() {
    let mut rig = Rig::initialized(qemu::CAP_FLTS, qemu::ECAP_FLTS | qemu::ECAP_PASID, Mode::Scalable);
    let (table, page) = rig.first_level_mapping(0x5000);
    rig.unit.attach_pasid(DEVICE, 5, 2, Translation::FirstLevel { root: table.root(), five_level: false }, &mut rig.dma).unwrap();
    assert_eq!(rig.model().translate(DEVICE, Some(5), 0x5000, false), Ok(page));
    table.unmap_4k(&rig.dma, 0x5000);
    assert_eq!(rig.model().translate(DEVICE, Some(5), 0x5000, false), Ok(page));
    let start = rig.model().invalidations().len();
    rig.unit.flush_pasid(2, 5, Some((0x5000, 0x1000)), &rig.dma).unwrap();
    assert_eq!(
        rig.invalidations_since(start),
        [Invalidation::PasidIotlbPages { did: 2, pasid: 5, address: 0x5000, address_mask: 0, leaf_only: false }]
    );
    assert_eq!(rig.model().translate(DEVICE, Some(5), 0x5000, false), Err(0x71));
    let start = rig.model().invalidations().len();
    rig.unit.flush_pasid(2, 5, None, &rig.dma).unwrap();
    assert_eq!(rig.invalidations_since(start), [Invalidation::PasidIotlbAll { did: 2, pasid: 5 }]);
}

#[test]
fn nested_translation_on_a_unit_with_nest() {
    let ecap = qemu::ECAP_FLTS | ECAP_SLTS | ECAP_NEST;
    let mut rig = Rig::initialized(qemu::CAP_FLTS, ecap, Mode::Scalable);
    // Guest-physical = host-physical + 1 GiB, mapped back by the second-level table.
    let bias = 1 << 30;
    let mut first = TestPageTable::new(&mut rig.dma, TableFormat::FirstLevel, 4).with_pointer_bias(bias);
    let data = rig.page();
    first.map_4k(&mut rig.dma, 0x5000, data + bias, true);
    let mut second = rig.table(TableFormat::SecondLevel, 4);
    let mut guest_pages: Vec<u64> = first.table_pages().to_vec();
    guest_pages.push(data);
    for host in guest_pages {
        second.map_4k(&mut rig.dma, host + bias, host, true);
    }
    let nested = Translation::Nested {
        first_level_root: first.root() + bias,
        five_level: false,
        second_level_root: second.root(),
        second_level_levels: 4,
    };
    rig.unit.attach(DEVICE, 3, nested, &mut rig.dma).unwrap();
    assert_eq!(rig.model().translate(DEVICE, None, 0x5040, true), Ok(data + 0x40));
    assert_eq!(rig.model().translate(DEVICE, None, 0x6000, false), Err(0x71));

    // QEMU 10.0.2 has no ECAP.NEST: the driver refuses rather than programming a PGTT that
    // would fault with 5Bh.
    let mut qemu_rig = Rig::initialized(qemu::CAP_FLTS, qemu::ECAP_FLTS, Mode::Scalable);
    assert_eq!(
        qemu_rig.unit.attach(DEVICE, 3, nested, &mut qemu_rig.dma),
        Err(VtdError::Unsupported("nested translation needs ECAP.NEST and SLTS"))
    );
}

#[test]
fn fault_records_decode_and_clear() {
    let mut rig = Rig::initialized(qemu::CAP_FLTS, qemu::ECAP_FLTS | qemu::ECAP_PASID, Mode::Scalable);
    let (table, _) = rig.first_level_mapping(0x5000);
    rig.unit.attach_pasid(DEVICE, 9, 2, Translation::FirstLevel { root: table.root(), five_level: false }, &mut rig.dma).unwrap();
    assert_eq!(rig.model().translate(DEVICE, Some(9), 0x0012_3456, true), Err(0x71));
    let report = rig.unit.drain_faults();
    assert!(!report.overflowed);
    let fault = report.faults[0];
    assert_eq!(fault.requester, DEVICE);
    assert_eq!(fault.address, 0x0012_3000);
    assert_eq!(fault.access, AccessKind::Write);
    assert_eq!(fault.pasid, Some(9));
    assert_eq!(fault.kind, FaultKind::Dma);
    assert_eq!(fault.reason_name(), "first-level paging entry not present");
    // F was cleared: the record is free again for the next fault.
    assert_eq!(rig.model().translate(OTHER_DEVICE, None, 0x1000, false), Err(0x02));
    let next = rig.unit.drain_faults().faults;
    assert_eq!((next[0].requester, next[0].access, next[0].pasid), (OTHER_DEVICE, AccessKind::Read, None));
    // FSTS was only ever touched with 4-byte accesses (the model panics otherwise).
    assert!(rig.model().register_writes().iter().filter(|write| write.offset == regs::FSTS).all(|write| write.width == 4));
}

#[test]
fn fault_interrupt_is_delivered_once_unmasked() {
    let mut rig = Rig::initialized(qemu::CAP, qemu::ECAP_LEGACY, Mode::Legacy);
    rig.model().translate(DEVICE, None, 0, false).unwrap_err();
    assert!(rig.model().fault_interrupts().is_empty(), "FECTL resets masked");
    rig.unit.drain_faults();
    rig.unit.enable_fault_interrupts(0xfee0_1000, 0x4031);
    rig.model().translate(DEVICE, None, 0, false).unwrap_err();
    assert_eq!(rig.model().fault_interrupts(), [(0xfee0_1000, 0x4031)]);
    rig.unit.mask_fault_interrupts();
    rig.unit.drain_faults();
    rig.model().translate(DEVICE, None, 0, false).unwrap_err();
    assert_eq!(rig.model().fault_interrupts().len(), 1);
}

#[test]
fn interrupt_remapping_validates_the_source() {
    let mut rig = Rig::initialized(qemu::CAP, qemu::ECAP_LEGACY, Mode::Legacy);
    rig.unit.enable_interrupt_remapping(8, ApicMode::XApic, &mut rig.dma).unwrap();
    let irta = rig.model().register_writes().into_iter().find(|write| write.offset == regs::IRTA).unwrap();
    assert_eq!(irta.value & 0xfff, 7);
    assert_eq!(rig.model().global_status() & gcmd::IRE, gcmd::IRE);
    assert!(rig.model().invalidations().contains(&Invalidation::InterruptEntryGlobal));

    let msi = rig.unit.program_irte(3, 0x41, 2, DEVICE, &mut rig.dma).unwrap();
    assert_eq!(msi.address, 0xfee0_0070);
    assert!(rig.model().invalidations().ends_with(&[Invalidation::InterruptEntries { index: 3, index_mask: 0 }]));
    assert_eq!(rig.model().remap_interrupt(DEVICE, msi.address, msi.data), Ok((0x41, 2 << 8)));
    // Another device replaying the handle is refused.
    assert_eq!(rig.model().remap_interrupt(OTHER_DEVICE, msi.address, msi.data), Err(0x26));
    let fault = rig.unit.drain_faults().faults[0];
    assert_eq!(fault.kind, FaultKind::InterruptRemap { index: 3 });
    assert_eq!(fault.requester, OTHER_DEVICE);

    // Reprogramming clears, invalidates, rewrites.
    rig.unit.program_irte(3, 0x42, 1, DEVICE, &mut rig.dma).unwrap();
    assert_eq!(rig.model().remap_interrupt(DEVICE, msi.address, 0), Ok((0x42, 1 << 8)));
    rig.unit.clear_irte(3, &mut rig.dma).unwrap();
    assert_eq!(rig.model().remap_interrupt(DEVICE, msi.address, 0), Err(0x22));
    assert_eq!(rig.unit.clear_irte(3, &mut rig.dma), Err(VtdError::NotAttached));
    assert!(rig.unit.program_irte(256, 0x41, 0, DEVICE, &mut rig.dma).is_err());
    assert!(rig.unit.program_irte(4, 0x41, 0x100, DEVICE, &mut rig.dma).is_err());
    assert_eq!(
        rig.unit.enable_interrupt_remapping(8, ApicMode::X2Apic, &mut rig.dma),
        Err(VtdError::Unsupported("x2APIC destinations need ECAP.EIM"))
    );
    // The one-shot SIRTP did not re-issue SRTP.
    assert_eq!(rig.model().srtp_count(), 1);
}

#[test]
fn interrupt_remapping_blocks_compatibility_format_left_open_by_firmware() {
    let memory = PhysMemory::new(MEMORY_BASE, 1 << 20);
    let mut dma = FakeDma::new(memory.clone());
    let model = VtdModel::new(memory, qemu::CAP, qemu::ECAP_LEGACY);
    // "Firmware" lets compatibility-format interrupts through (CFI, bit 23).
    model.write32(regs::GCMD, gcmd::CFI);
    assert_eq!(model.remap_interrupt(DEVICE, 0xfee0_0000, 0x31), Ok((0x31, 0)));
    let mut unit = VtdUnit::new(&model, StepClock::new(1_000));
    unit.init(Mode::Legacy, &mut dma).unwrap();
    let before = model.register_writes().len();
    unit.enable_interrupt_remapping(8, ApicMode::XApic, &mut dma).unwrap();
    assert_eq!(model.global_status() & (gcmd::IRE | gcmd::CFI), gcmd::IRE);
    // A compatibility-format MSI (address bit 4 clear) naming vector 0x31 now faults 25h.
    assert_eq!(model.remap_interrupt(DEVICE, 0xfee0_0000, 0x31), Err(0x25));
    // Spec 11.4.4: IRTA, then SIRTP, then the global IEC invalidation, then IRE; CFI is
    // cleared before IRE comes on, so no compatibility interrupt slips through meanwhile.
    let writes = model.register_writes()[before..].to_vec();
    let commands: Vec<u64> = writes.iter().filter(|write| write.offset == regs::GCMD).map(|write| write.value).collect();
    let irta_at = writes.iter().position(|write| write.offset == regs::IRTA).unwrap();
    let sirtp_at = writes.iter().position(|write| write.offset == regs::GCMD && write.value & gcmd::SIRTP as u64 != 0).unwrap();
    assert!(irta_at < sirtp_at);
    let ire_on = commands.iter().position(|&command| command & gcmd::IRE as u64 != 0).unwrap();
    let cfi_off = commands.iter().position(|&command| command & gcmd::CFI as u64 == 0).unwrap();
    assert!(cfi_off < ire_on, "GCMD writes {commands:x?}");
    assert_eq!(commands[ire_on] & gcmd::CFI as u64, 0);
    assert!(model.invalidations().contains(&Invalidation::InterruptEntryGlobal));
}

#[test]
fn multiple_message_msi_uses_a_block_of_entries() {
    let mut rig = Rig::initialized(qemu::CAP, qemu::ECAP_LEGACY, Mode::Legacy);
    rig.unit.enable_interrupt_remapping(8, ApicMode::XApic, &mut rig.dma).unwrap();
    let msi = rig.unit.program_irte(8, 0x51, 0, DEVICE, &mut rig.dma).unwrap().with_subhandles();
    rig.unit.program_irte(9, 0x52, 0, DEVICE, &mut rig.dma).unwrap();
    // Message 1 of the block: the device puts 1 in the data's low bits.
    assert_eq!(rig.model().remap_interrupt(DEVICE, msi.address, msi.data | 1), Ok((0x52, 0)));
    assert_eq!(rig.model().remap_interrupt(DEVICE, msi.address, msi.data), Ok((0x51, 0)));
    assert_eq!(rig.model().remap_interrupt(DEVICE, msi.address, msi.data | 2), Err(0x22), "beyond the block");
}

#[test]
fn interrupt_remapping_needs_queued_invalidation() {
    let mut rig = Rig::initialized(qemu::CAP, qemu::ECAP_LEGACY & !ECAP_QI, Mode::Legacy);
    assert_eq!(
        rig.unit.enable_interrupt_remapping(8, ApicMode::XApic, &mut rig.dma),
        Err(VtdError::Unsupported("interrupt remapping needs queued invalidation"))
    );
}

#[test]
fn device_tlb_users_get_device_tlb_invalidations() {
    let mut rig = Rig::initialized(qemu::CAP, qemu::ECAP_LEGACY | ECAP_DEVICE_TLB, Mode::Legacy);
    let (table, page) = rig.second_level_mapping(0x4000, true);
    rig.unit.enable_device_tlb(DEVICE).unwrap();
    rig.unit.attach(DEVICE, 7, Translation::SecondLevel { root: table.root(), levels: 4 }, &mut rig.dma).unwrap();
    assert_eq!(rig.model().translate(DEVICE, None, 0x4000, false), Ok(page));
    table.unmap_4k(&rig.dma, 0x4000);
    let start = rig.model().invalidations().len();
    rig.unit.flush_iotlb_range(7, 0x4000, 0x4000, &rig.dma).unwrap();
    assert_eq!(rig.model().dma_read(DEVICE, None, 0x4000, 8), Err(0x06));
    assert_eq!(
        rig.invalidations_since(start),
        [
            Invalidation::IotlbPages { did: 7, address: 0x4000, address_mask: 2, leaf_only: false },
            Invalidation::DeviceTlb {
                source: DEVICE.0,
                physical_function: DEVICE.0,
                queue_depth: 0,
                range: DeviceTlbRange { base: 0x4000, pages_log2: 2 },
            },
        ]
    );
    let start = rig.model().invalidations().len();
    rig.unit.detach(DEVICE, &mut rig.dma).unwrap();
    assert_eq!(
        rig.invalidations_since(start)[2],
        Invalidation::DeviceTlb { source: DEVICE.0, physical_function: DEVICE.0, queue_depth: 0, range: DEVICE_TLB_ALL }
    );
    assert_eq!(
        Rig::initialized(qemu::CAP, qemu::ECAP_LEGACY, Mode::Legacy).unit.enable_device_tlb(DEVICE),
        Err(VtdError::Unsupported("device-TLBs need ECAP.DT"))
    );
}

#[test]
fn firmware_left_translation_on_stays_on_while_the_root_table_changes() {
    let memory = PhysMemory::new(MEMORY_BASE, 1 << 20);
    let mut dma = FakeDma::new(memory.clone());
    let model = VtdModel::new(memory, qemu::CAP, qemu::ECAP_LEGACY);
    // "Firmware" brings the unit up and leaves TE and QIE on.
    VtdUnit::new(&model, StepClock::new(1_000)).init(Mode::Legacy, &mut dma).unwrap();
    let firmware_writes = model.register_writes().len();
    VtdUnit::new(&model, StepClock::new(1_000)).init(Mode::Legacy, &mut dma).unwrap();
    let writes = model.register_writes()[firmware_writes..].to_vec();
    let commands: Vec<u64> = writes.iter().filter(|write| write.offset == regs::GCMD).map(|write| write.value).collect();
    // QIE off (TE kept), then the new root table latched with TE still set (bring_up.rs).
    assert_eq!(commands[0], gcmd::TE as u64);
    assert_eq!(commands[1], (gcmd::TE | gcmd::SRTP) as u64);
    assert_eq!(model.global_status() & (gcmd::TE | gcmd::QIE), gcmd::TE | gcmd::QIE);
}

#[test]
fn queue_error_is_reported_and_the_queue_recovers() {
    let mut rig = Rig::initialized(qemu::CAP, qemu::ECAP_LEGACY, Mode::Legacy);
    let error = rig.unit.invalidate(&[Invalidation::PasidCacheGlobal], &rig.dma).unwrap_err();
    let VtdError::InvalidationQueueError { fault_status, head } = error else {
        panic!("expected a queue error, got {error:?}");
    };
    assert_ne!(fault_status & regs::fsts::IQE, 0);
    // Head stopped at the offending descriptor.
    assert_eq!(rig.model().read64(regs::IQT), head);
    assert_eq!(rig.model().read32(regs::FSTS) & regs::fsts::IQE, 0);
    // The queue works again.
    rig.unit.flush_domain(1, &rig.dma).unwrap();
    assert_eq!(rig.model().invalidations().last(), Some(&Invalidation::IotlbDomain { did: 1 }));
}

#[test]
fn long_batches_wrap_the_ring() {
    for (ecap, mode) in [(qemu::ECAP_LEGACY, Mode::Legacy), (qemu::ECAP_SCALABLE, Mode::Scalable)] {
        let mut rig = Rig::initialized(qemu::CAP, ecap, mode);
        // A translation of domain 599 is cached, then unmapped: only the batch's last
        // chunk (past the ring's wrap) drops it.
        let (table, page) = rig.second_level_mapping(0x4000, true);
        rig.unit.attach(DEVICE, 599, Translation::SecondLevel { root: table.root(), levels: 4 }, &mut rig.dma).unwrap();
        assert_eq!(dma_lands(rig.model(), rig.dma.memory(), None, 0x4000, page), Ok(vec![0x5a; 16]));
        table.unmap_4k(&rig.dma, 0x4000);
        let batch: Vec<Invalidation> = (0..600).map(|did| Invalidation::IotlbDomain { did }).collect();
        let waits_before = rig.model().waits().len();
        rig.unit.invalidate(&batch, &rig.dma).unwrap();
        assert_eq!(rig.model().dma_write(DEVICE, None, 0x4000, &[1]), Err(0x05));
        assert_eq!(rig.invalidations_since(rig.model().invalidations().len() - 600), batch);
        // One status-write wait per chunk, each with a fresh status value.
        let waits = rig.model().waits()[waits_before..].to_vec();
        assert!(waits.len() >= 5);
        assert!(waits.windows(2).all(|pair| pair[0].1 != pair[1].1));
    }
}

#[test]
fn protected_memory_regions_are_disabled() {
    let plmr = 1 << 5;
    let rig = Rig::initialized(qemu::CAP | plmr, qemu::ECAP_LEGACY, Mode::Legacy);
    let pmen = rig.model().register_writes().into_iter().find(|write| write.offset == regs::PMEN).unwrap();
    assert_eq!((pmen.value, pmen.width), (0, 4));
    assert!(!offsets_written(&Rig::initialized(qemu::CAP, qemu::ECAP_LEGACY, Mode::Legacy)).contains(&regs::PMEN));
}

#[test]
#[should_panic(expected = "8-byte read of 32-bit register 0x34")]
fn model_rejects_wide_access_to_fault_status() {
    let rig = Rig::new(qemu::CAP, qemu::ECAP_LEGACY);
    rig.model().read64(regs::FSTS);
}

#[test]
#[should_panic(expected = "wait descriptor with SW and IF")]
fn model_aborts_on_wait_with_status_write_and_interrupt() {
    let rig = Rig::initialized(qemu::CAP, qemu::ECAP_LEGACY, Mode::Legacy);
    let model = rig.model();
    let queue = model.read64(regs::IQA) & !0xfff;
    let tail = model.read64(regs::IQT);
    let memory = rig.dma.memory();
    memory.write_u64(queue + tail, 0x5 | 1 << 4 | 1 << 5).unwrap();
    memory.write_u64(queue + tail + 8, queue + 0x800).unwrap();
    model.write64(regs::IQT, tail + 16);
}

#[test]
fn x2apic_interrupt_remapping() {
    let extended_interrupt_mode = 1 << 4;
    let mut rig = Rig::initialized(qemu::CAP, qemu::ECAP_LEGACY | extended_interrupt_mode, Mode::Legacy);
    rig.unit.enable_interrupt_remapping(1, ApicMode::X2Apic, &mut rig.dma).unwrap();
    let irta = rig.model().register_writes().into_iter().find(|write| write.offset == regs::IRTA).unwrap();
    assert_eq!(irta.value & 0xfff, regs::irta::EIME);
    let msi = rig.unit.program_irte(1, 0x50, 0x1_0002, DEVICE, &mut rig.dma).unwrap();
    assert_eq!(rig.model().remap_interrupt(DEVICE, msi.address, msi.data), Ok((0x50, 0x1_0002)));
    assert!(rig.unit.program_irte(2, 0x50, 0, DEVICE, &mut rig.dma).is_err(), "table holds 2 entries");
    assert_eq!(rig.unit.version(), (1, 0));
}

// ----- The model holds the driver to the spec: each test below runs a deliberately wrong
// ----- driver step next to the right one and asserts what the device then observes.

/// The unit as a driver that misreads its capabilities sees it: `cap_clear` bits read as 0 in
/// CAP, `ecap_set` bits read as 1 in ECAP. The model itself behaves by its real CAP/ECAP.
struct MisreadCapabilities<'a> {
    model: &'a VtdModel,
    cap_clear: u64,
    ecap_set: u64,
}

impl Registers for MisreadCapabilities<'_> {
    fn read32(&self, offset: usize) -> u32 {
        self.model.read32(offset)
    }
    fn write32(&self, offset: usize, value: u32) {
        self.model.write32(offset, value)
    }
    fn read64(&self, offset: usize) -> u64 {
        match offset {
            regs::CAP => self.model.read64(offset) & !self.cap_clear,
            regs::ECAP => self.model.read64(offset) | self.ecap_set,
            _ => self.model.read64(offset),
        }
    }
    fn write64(&self, offset: usize, value: u64) {
        self.model.write64(offset, value)
    }
}

/// Device DMA: writes `pattern` at `iova` and returns the bytes at `page` afterwards, or the
/// fault the write took.
fn dma_lands(model: &VtdModel, memory: &PhysMemory, pasid: Option<u32>, iova: u64, page: u64) -> Result<Vec<u8>, u8> {
    model.dma_write(DEVICE, pasid, iova, &[0x5a; 16])?;
    Ok(memory.read_bytes(page + (iova & 0xfff), 16).unwrap())
}

#[test]
fn plain_iotlb_invalidation_leaves_first_level_translations_cached() {
    let mut rig = Rig::initialized(qemu::CAP_FLTS, qemu::ECAP_FLTS | qemu::ECAP_PASID, Mode::Scalable);
    let (table, page) = rig.first_level_mapping(0x5000);
    rig.unit.attach(DEVICE, 2, Translation::FirstLevel { root: table.root(), five_level: false }, &mut rig.dma).unwrap();
    rig.dma.memory().write_bytes(page, b"first-level data").unwrap();
    assert_eq!(rig.model().dma_read(DEVICE, None, 0x5000, 16), Ok(b"first-level data".to_vec()));
    table.unmap_4k(&rig.dma, 0x5000);

    // Wrong: the second-level flushes (page-selective, then domain-selective, then global)
    // leave PASID-granular first-level entries alone (spec 6.5.2.4): the device still reads
    // the unmapped page.
    rig.unit.flush_iotlb_range(2, 0x5000, 0x1000, &rig.dma).unwrap();
    rig.unit.flush_domain(2, &rig.dma).unwrap();
    rig.unit.invalidate(&[Invalidation::IotlbGlobal], &rig.dma).unwrap();
    assert_eq!(rig.model().dma_read(DEVICE, None, 0x5000, 16), Ok(b"first-level data".to_vec()));
    assert!(rig.unit.drain_faults().faults.is_empty());

    // Right: PASID-based invalidation (6.5.2.6) of RID_PASID drops it.
    rig.unit.flush_pasid(2, crate::unit::RID_PASID, Some((0x5000, 0x1000)), &rig.dma).unwrap();
    assert_eq!(rig.model().dma_read(DEVICE, None, 0x5000, 16), Err(0x71));
    let faults = rig.unit.drain_faults().faults;
    assert_eq!((faults[0].address, faults[0].reason), (0x5000, 0x71));
}

#[test]
fn pasid_invalidation_leaves_second_level_translations_cached() {
    let mut rig = Rig::initialized(qemu::CAP, qemu::ECAP_SCALABLE, Mode::Scalable);
    let (table, page) = rig.second_level_mapping(0x7000, true);
    rig.unit.attach(DEVICE, 3, Translation::SecondLevel { root: table.root(), levels: 4 }, &mut rig.dma).unwrap();
    assert_eq!(dma_lands(rig.model(), rig.dma.memory(), None, 0x7000, page), Ok(vec![0x5a; 16]));
    table.unmap_4k(&rig.dma, 0x7000);
    // Wrong: a PASID-based flush for a second-level domain.
    rig.unit.flush_pasid(3, crate::unit::RID_PASID, None, &rig.dma).unwrap();
    assert_eq!(rig.model().translate(DEVICE, None, 0x7000, true), Ok(page));
    // Right: the domain's IOTLB invalidation.
    rig.unit.flush_iotlb_range(3, 0x7000, 0x1000, &rig.dma).unwrap();
    assert_eq!(rig.model().dma_write(DEVICE, None, 0x7000, &[1]), Err(0x05));
}

#[test]
fn caching_mode_keeps_not_present_entries_until_invalidated() {
    let mut rig = Rig::initialized(qemu::CAP | qemu::CAP_CM, qemu::ECAP_LEGACY, Mode::Legacy);
    let mut table = rig.table(TableFormat::SecondLevel, 4);
    rig.unit.attach(DEVICE, 6, Translation::SecondLevel { root: table.root(), levels: 4 }, &mut rig.dma).unwrap();
    // The device touches the page before it is mapped: CM caches the not-present leaf.
    assert_eq!(rig.model().dma_write(DEVICE, None, 0x4000, &[1]), Err(0x05));
    let page = rig.page();
    table.map_4k(&mut rig.dma, 0x4000, page, true);
    // Wrong: no flush after the map. The cached fault stands (and is reported again).
    assert_eq!(rig.model().dma_write(DEVICE, None, 0x4000, &[1]), Err(0x05));
    assert_eq!(rig.unit.drain_faults().faults.len(), 1, "one record; the second fault overflowed");
    // Right: the flush caching mode asks for after creating mappings.
    rig.unit.flush_iotlb_range(6, 0x4000, 0x1000, &rig.dma).unwrap();
    assert_eq!(dma_lands(rig.model(), rig.dma.memory(), None, 0x4000, page), Ok(vec![0x5a; 16]));

    // Without CM nothing not-present is cached: the same map works without a flush.
    let mut plain = Rig::initialized(qemu::CAP, qemu::ECAP_LEGACY, Mode::Legacy);
    let mut table = plain.table(TableFormat::SecondLevel, 4);
    plain.unit.attach(DEVICE, 6, Translation::SecondLevel { root: table.root(), levels: 4 }, &mut plain.dma).unwrap();
    assert_eq!(plain.model().dma_write(DEVICE, None, 0x4000, &[1]), Err(0x05));
    let page = plain.page();
    table.map_4k(&mut plain.dma, 0x4000, page, true);
    assert_eq!(dma_lands(plain.model(), plain.dma.memory(), None, 0x4000, page), Ok(vec![0x5a; 16]));
}

#[test]
fn caching_mode_context_entries_need_the_invalidation_on_present() {
    // Right: the driver sees CAP.CM and invalidates the cached not-present context entry.
    let mut rig = Rig::initialized(qemu::CAP | qemu::CAP_CM, qemu::ECAP_LEGACY, Mode::Legacy);
    assert_eq!(rig.model().dma_write(DEVICE, None, 0x3000, &[7]), Err(0x01));
    rig.unit.attach(DEVICE, 6, Translation::PassThrough, &mut rig.dma).unwrap();
    let page = rig.page();
    assert_eq!(dma_lands(rig.model(), rig.dma.memory(), None, page, page & !0xfff), Ok(vec![0x5a; 16]));

    // Wrong: a driver that ignores CAP.CM skips that invalidation; the device stays blocked
    // by the cached "root entry not present".
    let memory = PhysMemory::new(MEMORY_BASE, 1 << 20);
    let mut dma = FakeDma::new(memory.clone());
    let model = VtdModel::new(memory.clone(), qemu::CAP | qemu::CAP_CM, qemu::ECAP_LEGACY);
    let misread = MisreadCapabilities { model: &model, cap_clear: qemu::CAP_CM, ecap_set: 0 };
    let mut unit = VtdUnit::new(misread, StepClock::new(1_000));
    unit.init(Mode::Legacy, &mut dma).unwrap();
    assert_eq!(model.dma_write(DEVICE, None, 0x3000, &[7]), Err(0x01));
    unit.attach(DEVICE, 6, Translation::PassThrough, &mut dma).unwrap();
    let page = dma.alloc_zeroed(4096, 4096).unwrap().phys;
    assert_eq!(dma_lands(&model, &memory, None, page, page), Err(0x01));
}

#[test]
fn interrupt_entry_cache_holds_irtes_until_invalidated() {
    let mut rig = Rig::initialized(qemu::CAP, qemu::ECAP_LEGACY, Mode::Legacy);
    rig.unit.enable_interrupt_remapping(8, ApicMode::XApic, &mut rig.dma).unwrap();
    let msi = rig.unit.program_irte(3, 0x41, 2, DEVICE, &mut rig.dma).unwrap();
    let other = rig.unit.program_irte(5, 0x45, 2, DEVICE, &mut rig.dma).unwrap();
    assert_eq!(rig.model().remap_interrupt(DEVICE, msi.address, msi.data), Ok((0x41, 2 << 8)));
    assert_eq!(rig.model().remap_interrupt(DEVICE, other.address, other.data), Ok((0x45, 2 << 8)));
    let irta = rig.model().read64(regs::IRTA) & !0xfff;
    let memory = rig.dma.memory().clone();

    // Wrong: the IRTEs are cleared (Present is bit 0 of the low word) without the interrupt
    // entry cache invalidation: the cached entries still deliver.
    memory.write_u64(irta + 3 * 16, 0).unwrap();
    memory.write_u64(irta + 5 * 16, 0).unwrap();
    assert_eq!(rig.model().remap_interrupt(DEVICE, msi.address, msi.data), Ok((0x41, 2 << 8)));
    // An index-selective invalidation drops its block only: index 2 with mask 1 is 2-3.
    rig.unit.invalidate(&[Invalidation::InterruptEntries { index: 2, index_mask: 1 }], &rig.dma).unwrap();
    assert_eq!(rig.model().remap_interrupt(DEVICE, msi.address, msi.data), Err(0x22));
    assert_eq!(rig.model().remap_interrupt(DEVICE, other.address, other.data), Ok((0x45, 2 << 8)));
    // The global one drops everything.
    rig.unit.invalidate(&[Invalidation::InterruptEntryGlobal], &rig.dma).unwrap();
    assert_eq!(rig.model().remap_interrupt(DEVICE, other.address, other.data), Err(0x22));
    // QEMU's unit has one fault record: the first fault is kept, the second overflows.
    let report = rig.unit.drain_faults();
    assert_eq!(report.faults.iter().map(|fault| fault.kind).collect::<Vec<_>>(), [FaultKind::InterruptRemap { index: 3 }]);
    assert!(report.overflowed);
}

#[test]
fn context_invalidation_must_name_the_cached_domain() {
    let mut rig = Rig::initialized(qemu::CAP, qemu::ECAP_LEGACY, Mode::Legacy);
    let (first, first_page) = rig.second_level_mapping(0x4000, true);
    let (second, second_page) = rig.second_level_mapping(0x4000, true);
    let (other, other_page) = rig.second_level_mapping(0x4000, true);
    rig.unit.attach(DEVICE, 1, Translation::SecondLevel { root: first.root(), levels: 4 }, &mut rig.dma).unwrap();
    rig.unit.attach(OTHER_DEVICE, 4, Translation::SecondLevel { root: other.root(), levels: 4 }, &mut rig.dma).unwrap();
    assert_eq!(dma_lands(rig.model(), rig.dma.memory(), None, 0x4000, first_page), Ok(vec![0x5a; 16]));
    assert_eq!(rig.model().translate(OTHER_DEVICE, None, 0x4000, false), Ok(other_page));

    // A hand-made move of DEVICE to domain 2: clear, publish the new entry, then invalidate.
    let root = rig.model().read64(regs::RTADDR) & !0xfff;
    let memory = rig.dma.memory().clone();
    let context_table = memory.read_u64(root).unwrap() & !0xfff;
    let slot = context_table + DEVICE.devfn() as u64 * 16;
    let entry = crate::tables::ContextEntry::new(crate::tables::LegacyTranslationType::Untranslated, second.root(), 4, 2);
    memory.write_u64(slot + 8, entry.words[1]).unwrap();
    memory.write_u64(slot, entry.words[0]).unwrap();
    // Wrong: domain-selective context invalidation of the new domain-id (and of the other
    // device's) leaves the entry cached under the old one; so does a device-selective one for
    // another function (00:03.1 with no function mask).
    let sibling = RequesterId::new(0, 3, 1);
    rig.unit
        .invalidate(
            &[
                Invalidation::ContextDomain { did: 2 },
                Invalidation::ContextDevice { did: 1, source: sibling.0, function_mask: 0 },
                Invalidation::IotlbDomain { did: 1 },
            ],
            &rig.dma,
        )
        .unwrap();
    assert_eq!(dma_lands(rig.model(), rig.dma.memory(), None, 0x4000, first_page), Ok(vec![0x5a; 16]));
    assert_eq!(rig.dma.memory().read_bytes(second_page, 16).unwrap(), [0; 16]);
    // Right: the old domain-id. The other device keeps its cached entry.
    rig.unit.invalidate(&[Invalidation::ContextDomain { did: 1 }], &rig.dma).unwrap();
    assert_eq!(dma_lands(rig.model(), rig.dma.memory(), None, 0x4000, second_page), Ok(vec![0x5a; 16]));
    let other_slot = context_table + OTHER_DEVICE.devfn() as u64 * 16;
    memory.write_u64(other_slot, 0).unwrap();
    assert_eq!(rig.model().translate(OTHER_DEVICE, None, 0x4000, false), Ok(other_page));
    // A device-selective invalidation with the function mask covering 00:04.0 drops it.
    let masked = RequesterId::new(0, 4, 5);
    rig.unit.invalidate(&[Invalidation::ContextDevice { did: 4, source: masked.0, function_mask: 3 }], &rig.dma).unwrap();
    assert_eq!(rig.model().translate(OTHER_DEVICE, None, 0x4000, false), Err(0x02));
}

#[test]
fn pasid_cache_invalidation_must_name_the_cached_domain() {
    let mut rig = Rig::initialized(qemu::CAP, qemu::ECAP_SCALABLE, Mode::Scalable);
    let (first, first_page) = rig.second_level_mapping(0x7000, true);
    let (second, second_page) = rig.second_level_mapping(0x7000, true);
    rig.unit.attach(DEVICE, 1, Translation::SecondLevel { root: first.root(), levels: 4 }, &mut rig.dma).unwrap();
    assert_eq!(dma_lands(rig.model(), rig.dma.memory(), None, 0x7000, first_page), Ok(vec![0x5a; 16]));

    // Find RID_PASID's entry: root → context (scalable, 32-byte entries) → directory → table.
    let memory = rig.dma.memory().clone();
    let root = rig.model().read64(regs::RTADDR) & !0xfff;
    let context = (memory.read_u64(root).unwrap() & !0xfff) + DEVICE.devfn() as u64 * 32;
    let directory = memory.read_u64(context).unwrap() & !0xfff;
    let pasid_table = memory.read_u64(directory).unwrap() & !0xfff;
    let entry = crate::tables::PasidEntry::second_level(2, second.root(), 4);
    for (index, word) in entry.words.iter().enumerate().rev() {
        memory.write_u64(pasid_table + index as u64 * 8, *word).unwrap();
    }
    // Wrong: PASID-selective invalidation with the new domain-id, and a domain-selective one
    // of another domain: the PASID cache keeps the entry tagged with domain-id 1.
    rig.unit
        .invalidate(
            &[
                Invalidation::PasidCachePasid { did: 2, pasid: 0 },
                Invalidation::PasidCacheDomain { did: 3 },
                Invalidation::IotlbDomain { did: 1 },
            ],
            &rig.dma,
        )
        .unwrap();
    assert_eq!(dma_lands(rig.model(), rig.dma.memory(), None, 0x7000, first_page), Ok(vec![0x5a; 16]));
    // Right: the old domain-id.
    rig.unit.invalidate(&[Invalidation::PasidCacheDomain { did: 1 }], &rig.dma).unwrap();
    assert_eq!(dma_lands(rig.model(), rig.dma.memory(), None, 0x7000, second_page), Ok(vec![0x5a; 16]));
}

#[test]
fn invalidation_hint_keeps_paging_structure_caches() {
    for leaf_only in [true, false] {
        let mut rig = Rig::initialized(qemu::CAP, qemu::ECAP_LEGACY, Mode::Legacy);
        let (mut table, old_page) = rig.second_level_mapping(0x4000, true);
        rig.unit.attach(DEVICE, 5, Translation::SecondLevel { root: table.root(), levels: 4 }, &mut rig.dma).unwrap();
        assert_eq!(dma_lands(rig.model(), rig.dma.memory(), None, 0x4000, old_page), Ok(vec![0x5a; 16]));
        // The level-2 entry now links a new leaf table mapping 0x4000 elsewhere: a non-leaf
        // entry changed, as when an unmap frees a table and a map builds another.
        table.relink(&mut rig.dma, 0x4000, 2);
        let new_page = rig.page();
        table.map_4k(&mut rig.dma, 0x4000, new_page, true);
        let flush = Invalidation::IotlbPages { did: 5, address: 0x4000, address_mask: 0, leaf_only };
        rig.unit.invalidate(&[flush], &rig.dma).unwrap();
        let landed = rig.model().dma_read(DEVICE, None, 0x4000, 16).unwrap();
        if leaf_only {
            // Wrong: IH = 1 after a non-leaf change. The cached level-2 entry still leads to
            // the old leaf table: the device reads the old page.
            assert_eq!(landed, [0x5a; 16]);
        } else {
            // Right (what `flush_iotlb_range` issues): IH = 0 drops the non-leaf entries too.
            assert_eq!(landed, [0; 16]);
            assert_eq!(dma_lands(rig.model(), rig.dma.memory(), None, 0x4000, new_page), Ok(vec![0x5a; 16]));
        }
    }
}

#[test]
fn non_coherent_walker_sees_only_flushed_table_writes() {
    // Wrong: a driver that takes the unit for coherent (ECAP.C = 1) skips every flush.
    let misread_coherence = |ecap: u64| {
        let memory = PhysMemory::new(MEMORY_BASE, 1 << 20);
        let dma = FakeDma::new(memory.clone());
        (memory.clone(), dma, VtdModel::new(memory, qemu::CAP, ecap))
    };
    // With queued invalidation, bring-up already fails: the walker reads the unflushed (zero)
    // invalidation descriptors and stops the queue.
    let (_, mut dma, model) = misread_coherence(qemu::ECAP_LEGACY);
    let mut unit = VtdUnit::new(MisreadCapabilities { model: &model, cap_clear: 0, ecap_set: ECAP_COHERENT }, StepClock::new(1_000));
    assert!(matches!(unit.init(Mode::Legacy, &mut dma), Err(VtdError::InvalidationQueueError { .. })));
    assert_eq!(dma.flush_count(), 0);

    // With register-based invalidation bring-up works, but the root and context entries of an
    // attach never reach the walker: the device's DMA faults "root entry not present".
    let (memory, mut dma, model) = misread_coherence(qemu::ECAP_LEGACY & !ECAP_QI);
    let mut unit = VtdUnit::new(MisreadCapabilities { model: &model, cap_clear: 0, ecap_set: ECAP_COHERENT }, StepClock::new(1_000));
    unit.init(Mode::Legacy, &mut dma).unwrap();
    let mut table = TestPageTable::new(&mut dma, TableFormat::SecondLevel, 4);
    let page = dma.alloc_zeroed(4096, 4096).unwrap().phys;
    table.map_4k(&mut dma, 0x4000, page, true);
    unit.attach(DEVICE, 1, Translation::SecondLevel { root: table.root(), levels: 4 }, &mut dma).unwrap();
    assert_eq!(dma_lands(&model, &memory, None, 0x4000, page), Err(0x01));
    // The CPU's view has the entries: only the device's is stale.
    let root = model.read64(regs::RTADDR) & !0xfff;
    assert_eq!(memory.read_u64(root).unwrap() & 1, 1);
    assert_eq!(memory.device_read_u64(root).unwrap() & 1, 0);

    // Right: the same driver reading ECAP.C = 0 flushes, and the DMA lands.
    let (memory, mut dma, model) = misread_coherence(qemu::ECAP_LEGACY & !ECAP_QI);
    let mut unit = VtdUnit::new(&model, StepClock::new(1_000));
    unit.init(Mode::Legacy, &mut dma).unwrap();
    let mut table = TestPageTable::new(&mut dma, TableFormat::SecondLevel, 4);
    let page = dma.alloc_zeroed(4096, 4096).unwrap().phys;
    table.map_4k(&mut dma, 0x4000, page, true);
    unit.attach(DEVICE, 1, Translation::SecondLevel { root: table.root(), levels: 4 }, &mut dma).unwrap();
    assert_eq!(dma_lands(&model, &memory, None, 0x4000, page), Ok(vec![0x5a; 16]));
}

/// Runs `update` with the device attempting DMA to 0x4000 after every flush; returns what each
/// attempt observed.
fn observe_during(
    model: &Rc<VtdModel>,
    dma: &mut FakeDma,
    update: impl FnOnce(&mut FakeDma),
) -> Vec<Result<u64, u8>> {
    let seen = Rc::new(core::cell::RefCell::new(Vec::new()));
    let (probe_model, probe_seen) = (model.clone(), seen.clone());
    dma.observe_flushes(alloc::boxed::Box::new(move || {
        probe_seen.borrow_mut().push(probe_model.translate(DEVICE, None, 0x4000, false));
    }));
    update(dma);
    let observed = seen.borrow().clone();
    observed
}

#[test]
fn present_bit_flushed_before_the_rest_of_the_entry_is_seen_torn() {
    let memory = PhysMemory::new(MEMORY_BASE, 1 << 20);
    let mut dma = FakeDma::new(memory.clone());
    let model = Rc::new(VtdModel::new(memory.clone(), qemu::CAP, qemu::ECAP_LEGACY));
    let mut unit = VtdUnit::new(&*model, StepClock::new(1_000));
    unit.init(Mode::Legacy, &mut dma).unwrap();
    let mut table = TestPageTable::new(&mut dma, TableFormat::SecondLevel, 4);
    let page = dma.alloc_zeroed(4096, 4096).unwrap().phys;
    table.map_4k(&mut dma, 0x4000, page, true);
    let translation = Translation::SecondLevel { root: table.root(), levels: 4 };

    // Right: the driver's attach. At every point the walker sees either no entry (root 01h,
    // context 02h) or the whole entry.
    let seen = observe_during(&model, &mut dma, |dma| unit.attach(DEVICE, 1, translation, dma).unwrap());
    assert!(seen.len() >= 3);
    assert!(seen.iter().all(|result| matches!(result, Err(0x01 | 0x02) | Ok(_))), "{seen:x?}");
    assert_eq!(seen.last(), Some(&Ok(page)));

    // Wrong: a context entry for a device on another bus written Present-first (word 0
    // flushed before word 1, which holds AW and the domain-id). In between, the walker reads
    // a present entry with AW = 0 (30 bits, not in SAGAW): "invalid context entry", 03h.
    let model_for_probe = model.clone();
    let device = RequesterId::new(1, 0, 0);
    let seen = Rc::new(core::cell::RefCell::new(Vec::new()));
    let probe_seen = seen.clone();
    dma.observe_flushes(alloc::boxed::Box::new(move || {
        probe_seen.borrow_mut().push(model_for_probe.translate(device, None, 0x4000, false));
    }));
    let context_table = crate::dma::DmaTable::allocate(&mut dma, 4096, false).unwrap();
    let root = model.read64(regs::RTADDR) & !0xfff;
    let root_table_entry = crate::tables::RootEntry::new(context_table.phys());
    memory.write_u64(root + 16 + 8, root_table_entry.words[1]).unwrap();
    memory.write_u64(root + 16, root_table_entry.words[0]).unwrap();
    let entry = crate::tables::ContextEntry::new(crate::tables::LegacyTranslationType::Untranslated, table.root(), 4, 7);
    context_table.write_word(0, entry.words[0]);
    context_table.flush(&dma, 0, 8);
    context_table.write_word(8, entry.words[1]);
    context_table.flush(&dma, 8, 8);
    assert_eq!(*seen.borrow(), [Err(0x03), Ok(page)]);
}

#[test]
fn caching_mode_scalable_attach_drops_cached_not_present_context_and_pasid_entries() {
    let mut rig = Rig::initialized(qemu::CAP | qemu::CAP_CM, qemu::ECAP_SCALABLE | qemu::ECAP_PASID, Mode::Scalable);
    // Touched before attach: the root half and then the PASID entry are cached not present.
    assert_eq!(rig.model().dma_write(DEVICE, None, 0x7000, &[1]), Err(0x01));
    let (table, page) = rig.second_level_mapping(0x7000, true);
    rig.unit.attach(DEVICE, 3, Translation::SecondLevel { root: table.root(), levels: 4 }, &mut rig.dma).unwrap();
    assert_eq!(dma_lands(rig.model(), rig.dma.memory(), None, 0x7000, page), Ok(vec![0x5a; 16]));
    assert_eq!(rig.model().dma_write(DEVICE, Some(5), 0x7000, &[1]), Err(0x59));
    let (tagged, tagged_page) = rig.second_level_mapping(0x7000, true);
    rig.unit.attach_pasid(DEVICE, 5, 4, Translation::SecondLevel { root: tagged.root(), levels: 4 }, &mut rig.dma).unwrap();
    assert_eq!(dma_lands(rig.model(), rig.dma.memory(), Some(5), 0x7000, tagged_page), Ok(vec![0x5a; 16]));
    // Wrong: a PASID entry published without the caching-mode invalidation keeps faulting.
    assert_eq!(rig.model().dma_write(DEVICE, Some(6), 0x7000, &[1]), Err(0x59));
    let memory = rig.dma.memory().clone();
    let root = rig.model().read64(regs::RTADDR) & !0xfff;
    let context = (memory.read_u64(root).unwrap() & !0xfff) + DEVICE.devfn() as u64 * 32;
    let pasid_table = memory.read_u64(memory.read_u64(context).unwrap() & !0xfff).unwrap() & !0xfff;
    let entry = crate::tables::PasidEntry::second_level(4, tagged.root(), 4);
    for (index, word) in entry.words.iter().enumerate().rev() {
        memory.write_u64(pasid_table + 6 * 64 + index as u64 * 8, *word).unwrap();
    }
    assert_eq!(rig.model().dma_write(DEVICE, Some(6), 0x7000, &[1]), Err(0x59));
    rig.unit.invalidate(&[Invalidation::PasidCachePasid { did: 4, pasid: 6 }], &rig.dma).unwrap();
    assert_eq!(dma_lands(rig.model(), rig.dma.memory(), Some(6), 0x7000, tagged_page), Ok(vec![0x5a; 16]));
}

/// A new server takes over a unit an ended server left translating (issue 13): the old tables
/// are still in memory (the kernel quarantines them), and the device attached to them still
/// reaches its page. The new bring-up must block the device without ever turning translation
/// off, since with TE clear the unit passes DMA through untranslated to any address.
#[test]
fn takeover_of_a_translating_unit_blocks_without_turning_translation_off() {
    for (ecap, mode) in [(qemu::ECAP_LEGACY, Mode::Legacy), (qemu::ECAP_SCALABLE, Mode::Scalable)] {
        let mut rig = Rig::initialized(qemu::CAP, ecap, mode);
        let (table, page) = rig.second_level_mapping(0x4000, true);
        rig.unit.attach(DEVICE, 3, Translation::SecondLevel { root: table.root(), levels: 4 }, &mut rig.dma).unwrap();
        assert_eq!(rig.model().translate(DEVICE, None, 0x4000, true), Ok(page));
        let writes_before = rig.model().register_writes().len();

        // The old unit object (the ended server) is forgotten, not torn down.
        let Rig { dma, unit } = &mut rig;
        let mut successor = VtdUnit::new(unit.registers(), StepClock::new(1_000));
        successor.init(mode, dma).expect("takeover");

        let commands: Vec<u64> = rig.model().register_writes()[writes_before..]
            .iter()
            .filter(|write| write.offset == regs::GCMD)
            .map(|write| write.value)
            .collect();
        assert!(
            commands.iter().all(|command| command & gcmd::TE as u64 != 0),
            "{mode:?}: a GCMD write turned translation off during the takeover: {commands:#x?}"
        );
        assert_eq!(rig.model().srtp_count(), 2, "{mode:?}: the new root table was not latched");
        // Root entry not present: the new root table is empty.
        assert_eq!(rig.model().translate(DEVICE, None, 0x4000, true), Err(0x01), "{mode:?}: the device still reaches its old page");
        assert_eq!(rig.model().global_status() & gcmd::TE, gcmd::TE);
    }
}
