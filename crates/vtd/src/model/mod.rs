//! A software model of one VT-d remapping unit, for host tests of the driver and of the IOMMU
//! server built on it (feature `model`).
//!
//! The model implements [`hwio::Registers`] with the semantics the driver depends on, written
//! independently from the driver's encoders (its own bit extraction, straight from the spec):
//! * register widths as QEMU enforces them: an 8-byte access to a 32-bit register panics, as
//!   QEMU aborts the VM;
//! * GCMD→GSTS handshake, one command bit per write (a write changing several panics: spec
//!   11.4.4 forbids it), SRTP/SIRTP latching RTADDR/IRTA, TE/SRTP flushing all caches;
//! * register-based invalidation (CCMD, IOTLB_REG with IAIG/CAIG reporting) and queued
//!   invalidation processed synchronously on IQT writes, like QEMU; a wait descriptor with
//!   both SW and IF panics as QEMU aborts; unknown descriptors, and PASID-granular ones while
//!   the root table is in legacy mode, set FSTS.IQE and stop the queue;
//! * caches that only invalidation empties, each dropped only by the requests the spec says
//!   drop it (6.5.2): a context cache (by requester id; domain-selective invalidation drops
//!   legacy entries of that domain-id, device-selective those of the source-id and function
//!   mask), a PASID cache (by requester id and PASID, tagged with the entry's domain-id), an
//!   IOTLB (by domain-id, PASID tag, page and access), paging-structure caches (the non-leaf
//!   entries of each walk) and an interrupt entry cache (IRTEs by index). IOTLB and
//!   paging-structure entries remember whether they came from first-level (PGTT 001) or nested
//!   translation: those are PASID-granular, so only PASID-based IOTLB invalidation (6.5.2.6)
//!   drops them, and plain IOTLB invalidation (6.5.2.4) only the second-level and pass-through
//!   ones. Paging-structure entries survive a page-selective invalidation with IH = 1. A
//!   driver that forgets an invalidation keeps translating through stale entries here, as on
//!   hardware. Faults are cached only under CAP.CM, which lets hardware cache not-present
//!   entries (6.1): context, PASID and leaf entries, so a map without the flush CM requires
//!   keeps faulting;
//! * walks that do not snoop (ECAP.C = 0): every structure the unit reads (root, context,
//!   PASID, page tables, IRTEs, queue descriptors) is read from the device view of
//!   [`PhysMemory`], which only the driver's `flush_for_device` updates;
//! * DMA translation ([`VtdModel::translate`]; [`VtdModel::dma_write`] and
//!   [`VtdModel::dma_read`] move bytes through it) walking root, context, PASID directory/table and
//!   first-level, second-level, nested or pass-through tables in [`PhysMemory`];
//! * fault recording in CAP.NFR records with F/PPF/PFO/FRI semantics and a fault event MSI
//!   (recorded in [`VtdModel::fault_interrupts`]) unless FECTL.IM;
//! * interrupt remapping ([`VtdModel::remap_interrupt`]) with source-id validation;
//! * the page request queue, page group responses and a device with PRI ([`page_requests`]).
//!
//! Fault codes follow QEMU 10 (see [`crate::fault::fault_reason_name`]): 01h/02h for root and
//! context not present in both modes, 05h/06h for second-level permission faults, 51h/59h for
//! PASID directory/table entries not present, 5Bh for an invalid PASID entry (including a
//! PGTT the unit does not support, e.g. nested on QEMU), 71h/81h/85h for first-level faults,
//! the spec's scalable-mode second-stage codes (78h/79h/7Ah, 84h-86h) for the second stage of
//! nested translation (QEMU runs none),
//! 0Ah/0Bh for reserved bits (as [`crate::tables`] declares them) set in a legacy root or
//! context entry.
//! Two model decisions where the spec leaves detail to hardware: a request with PASID in
//! legacy mode, or to a context entry with PASIDE clear, is blocked with reason 0 and not
//! recorded; a table pointer outside memory reports the "cannot access" code of its level.

pub mod memory;
pub mod page_requests;
pub mod page_tables;

use alloc::collections::BTreeMap;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;

use hwio::bits::Layout;
use hwio::Registers;

pub use memory::{FakeDma, FlushObserver, PhysMemory, StepClock, POISON};
pub use page_requests::{PageGroupResponse, PriDevice, PriOutcome};
pub use page_tables::{TableFormat, TestPageTable};

use crate::fault::FaultRecord;
use crate::irq::{msi_address, InterruptRemapEntry, SVT_REQUESTER_ID};
use crate::descriptors::{
    kind, ContextCacheDescriptor, Descriptor128, DeviceTlbDescriptor, InterruptEntryDescriptor, Invalidation,
    IotlbDescriptor, PageGroupResponseDescriptor, PasidCacheDescriptor, PasidDeviceTlbDescriptor, PasidIotlbDescriptor,
    WaitDescriptor,
};
use crate::regs::{self, Capability, ExtendedCapability};
use crate::tables::{ContextEntry, RootEntry};
use crate::RequesterId;

/// CAP/ECAP values of QEMU 10.0.2's intel-iommu in the configurations the project uses.
pub mod qemu {
    /// Default CAP: 16-bit domain-ids, SAGAW 39+48, one fault record at 0x220, PSI, MAMV 18.
    pub const CAP: u64 = 0x00d2_008c_222f_0606;
    /// CAP with `aw-bits=39`.
    pub const CAP_AW39: u64 = 0x00d2_008c_2226_0206;
    /// CAP with `x-scalable-mode=on,x-flts=on` (adds FL1GP).
    pub const CAP_FLTS: u64 = 0x01d2_008c_222f_0606;
    /// Legacy ECAP: QI, IR, PT, IRO 0xf0, not coherent.
    pub const ECAP_LEGACY: u64 = 0x0000_0000_00f0_0f4a;
    /// ECAP with `x-scalable-mode=on`: SMTS, SLTS, SRS.
    pub const ECAP_SCALABLE: u64 = 0x0000_4800_80f0_0f4a;
    /// ECAP with `x-scalable-mode=on,x-flts=on`: SMTS, FLTS, no SLTS.
    pub const ECAP_FLTS: u64 = 0x0000_8800_00f0_0f4a;
    /// ECAP bit `x-pasid-mode=on` adds (PASID, bit 40).
    pub const ECAP_PASID: u64 = 1 << 40;
    /// CAP bit `caching-mode=on` adds (CM, bit 7).
    pub const CAP_CM: u64 = 1 << 7;
}

/// One register write as the model saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegisterWrite {
    pub offset: usize,
    pub value: u64,
    /// Access width in bytes (4 or 8).
    pub width: u8,
}

/// What a cached context entry resolved to.
#[derive(Debug, Clone, Copy)]
enum CachedContext {
    Legacy { did: u16, translation_type: u64, table: u64, levels: u8, fault_processing_disabled: bool },
    Scalable {
        pasid_directory: u64,
        directory_entries: u64,
        rid_pasid: u32,
        pasid_enabled: bool,
        page_requests_enabled: bool,
        fault_processing_disabled: bool,
    },
    /// CAP.CM only: a root or context entry found not present (reason 01h/02h). Hardware tags
    /// these with domain-id 0 (spec 6.1), which is why CM reserves that domain-id.
    NotPresent { reason: u8 },
}

/// A PASID-cache entry: a present PASID entry, or (CAP.CM only) one found not present.
#[derive(Debug, Clone, Copy)]
enum PasidCacheEntry {
    Present(CachedPasidEntry),
    NotPresent { reason: u8, fault_processing_disabled: bool },
}

/// An IOTLB entry: the page frame (or, under CAP.CM, the fault) a walk produced.
#[derive(Debug, Clone, Copy)]
struct IotlbEntry {
    result: Result<u64, u8>,
    /// From first-level or nested translation: dropped only by PASID-based invalidation.
    first_level: bool,
}

/// Key of a paging-structure-cache entry: (domain-id, PASID tag, level of the non-leaf entry,
/// input address bits above what that entry maps).
type PagingKey = (u16, u32, u8, u64);

/// A cached non-leaf entry, used instead of reading it from memory.
#[derive(Debug, Clone, Copy)]
struct PagingEntry {
    raw: u64,
    first_level: bool,
}

/// The paging-structure cache as one walk sees it: its tags and the input address.
struct PagingCursor<'a> {
    cache: &'a mut BTreeMap<PagingKey, PagingEntry>,
    did: u16,
    tag: u32,
    first_level: bool,
    iova: u64,
}

impl PagingCursor<'_> {
    fn key(&self, level: u8) -> PagingKey {
        (self.did, self.tag, level, self.iova >> level_shift(level))
    }

    fn get(&self, level: u8) -> Option<u64> {
        self.cache.get(&self.key(level)).filter(|entry| entry.first_level == self.first_level).map(|entry| entry.raw)
    }

    fn put(&mut self, level: u8, raw: u64) {
        let key = self.key(level);
        self.cache.insert(key, PagingEntry { raw, first_level: self.first_level });
    }
}

/// Input address bits below those a level-`level` entry selects by.
fn level_shift(level: u8) -> u32 {
    12 + 9 * (level as u32 - 1)
}

/// Memory as the unit's walker sees it: the CPU view when walks snoop (ECAP.C = 1), the
/// flushed device view otherwise.
#[derive(Clone, Copy)]
struct Walker<'a> {
    memory: &'a PhysMemory,
    coherent: bool,
}

impl Walker<'_> {
    fn read_u64(&self, phys: u64) -> Option<u64> {
        if self.coherent {
            self.memory.read_u64(phys)
        } else {
            self.memory.device_read_u64(phys)
        }
    }

    /// The walker's atomic update of an entry it read as `entry` (second-stage A/D, spec
    /// 3.7.3 with SSADE): `bits` are set in memory, which the CPU then sees as it is.
    fn set_bits(&self, phys: u64, entry: u64, bits: u64) -> Option<()> {
        if entry & bits == bits {
            return Some(());
        }
        self.memory.write_u64(phys, self.read_u64(phys)? | bits)
    }
}

/// Second-level entry A (bit 8) and D (bit 9), which the walker sets under SSADE.
const SECOND_LEVEL_ACCESSED: u64 = 1 << 8;
const SECOND_LEVEL_DIRTY: u64 = 1 << 9;

/// A cached scalable-mode PASID entry (the fields translation needs).
#[derive(Debug, Clone, Copy)]
struct CachedPasidEntry {
    did: u16,
    pgtt: u64,
    second_level_root: u64,
    second_level_levels: u8,
    first_level_root: u64,
    five_level: bool,
    /// The width the AW field names (30 + 9 × AW bits).
    address_width_bits: u32,
    fault_processing_disabled: bool,
    /// SSADE (bit 9): second-level walks set A and D.
    second_level_access_dirty: bool,
}

/// IOTLB tag for requests translated without a PASID in legacy mode.
const NO_PASID_TAG: u32 = u32::MAX;
const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

#[derive(Debug)]
struct ModelState {
    cap: Capability,
    ecap: ExtendedCapability,
    gsts: u32,
    rtaddr: u64,
    active_root: u64,
    ccmd: u64,
    iva: u64,
    iotlb_command: u64,
    fsts: u32,
    fectl: u32,
    fedata: u32,
    feaddr: u32,
    feuaddr: u32,
    pmen: u32,
    iqh: u64,
    iqt: u64,
    iqa: u64,
    ics: u32,
    iectl: u32,
    irta: u64,
    active_irta: u64,
    records: Vec<[u64; 2]>,
    next_record: usize,
    context_cache: BTreeMap<u16, CachedContext>,
    pasid_cache: BTreeMap<(u16, u32), PasidCacheEntry>,
    iotlb: BTreeMap<(u16, u32, u64, bool), IotlbEntry>,
    paging_cache: BTreeMap<PagingKey, PagingEntry>,
    /// Interrupt entry cache: IRTE words by index.
    interrupt_cache: BTreeMap<u16, (u64, u64)>,
    writes: Vec<RegisterWrite>,
    processed: Vec<Invalidation>,
    waits: Vec<(u64, u32)>,
    fault_interrupts: Vec<(u64, u32)>,
    gcmd_stalled: bool,
    queue_stalled: bool,
    register_invalidation_stalled: bool,
    srtp_count: usize,
    page_walks: usize,
    prq: page_requests::PageRequestState,
    /// Posted writes translated but not yet done (physical address, bytes): a queued IOTLB
    /// invalidation completes them first when it drains writes.
    writes_in_flight: Vec<(u64, Vec<u8>)>,
    /// Whether, since DMA was last kept from memory (translation on, or protected memory
    /// enabled), a register write left both off: untranslated DMA could reach everything.
    dma_exposed: bool,
}

/// The model of one VT-d unit over `PhysMemory`.
#[derive(Debug)]
pub struct VtdModel {
    memory: Rc<PhysMemory>,
    state: RefCell<ModelState>,
}

const ONE_SHOT: u32 = regs::gcmd::SRTP | regs::gcmd::SFL | regs::gcmd::WBF | regs::gcmd::SIRTP;

impl VtdModel {
    /// A unit in its reset state (everything disabled, FECTL.IM=1) with the given CAP/ECAP.
    pub fn new(memory: Rc<PhysMemory>, cap: u64, ecap: u64) -> Self {
        let cap = Capability(cap);
        let state = ModelState {
            cap,
            ecap: ExtendedCapability(ecap),
            gsts: 0,
            rtaddr: 0,
            active_root: 0,
            ccmd: 0,
            iva: 0,
            iotlb_command: 0,
            fsts: 0,
            fectl: regs::event_control::IM,
            fedata: 0,
            feaddr: 0,
            feuaddr: 0,
            pmen: 0,
            iqh: 0,
            iqt: 0,
            iqa: 0,
            ics: 0,
            iectl: regs::event_control::IM,
            irta: 0,
            active_irta: 0,
            records: Vec::from_iter(core::iter::repeat_n([0, 0], cap.fault_record_count())),
            next_record: 0,
            context_cache: BTreeMap::new(),
            pasid_cache: BTreeMap::new(),
            iotlb: BTreeMap::new(),
            paging_cache: BTreeMap::new(),
            interrupt_cache: BTreeMap::new(),
            writes: Vec::new(),
            processed: Vec::new(),
            waits: Vec::new(),
            fault_interrupts: Vec::new(),
            gcmd_stalled: false,
            queue_stalled: false,
            register_invalidation_stalled: false,
            srtp_count: 0,
            page_walks: 0,
            prq: page_requests::PageRequestState::default(),
            writes_in_flight: Vec::new(),
            dma_exposed: false,
        };
        Self { memory, state: RefCell::new(state) }
    }

    /// GSTS stops following GCMD (a hung unit).
    pub fn stall_global_command(&self) {
        self.state.borrow_mut().gcmd_stalled = true;
    }

    /// IQT writes are accepted but the queue is never processed.
    pub fn stall_queue(&self) {
        self.state.borrow_mut().queue_stalled = true;
    }

    /// CCMD.ICC and IOTLB_REG.IVT never clear.
    pub fn stall_register_invalidation(&self) {
        self.state.borrow_mut().register_invalidation_stalled = true;
    }

    /// Every register write so far, in order.
    pub fn register_writes(&self) -> Vec<RegisterWrite> {
        self.state.borrow().writes.clone()
    }

    /// Every invalidation request processed so far (queued or register-based), in order.
    pub fn invalidations(&self) -> Vec<Invalidation> {
        self.state.borrow().processed.clone()
    }

    /// Every status-write wait descriptor processed: (status address, status data).
    pub fn waits(&self) -> Vec<(u64, u32)> {
        self.state.borrow().waits.clone()
    }

    /// Fault event MSIs sent: (address, data).
    pub fn fault_interrupts(&self) -> Vec<(u64, u32)> {
        self.state.borrow().fault_interrupts.clone()
    }

    /// How many SRTP commands were executed.
    pub fn srtp_count(&self) -> usize {
        self.state.borrow().srtp_count
    }

    /// How many translations missed the IOTLB and walked page tables.
    pub fn page_walks(&self) -> usize {
        self.state.borrow().page_walks
    }

    pub fn global_status(&self) -> u32 {
        self.state.borrow().gsts
    }

    /// Records a fault as hardware would: in the next fault record if free, else sets PFO.
    /// For interrupt-remapping reasons (20h-26h) `address` carries the interrupt index.
    pub fn inject_fault(&self, requester: RequesterId, address: u64, write: bool, reason: u8, pasid: Option<u32>) {
        self.state.borrow_mut().record_fault(requester, address, write, reason, pasid);
    }

    /// Whether a register write ever turned off the last of translation and protected memory
    /// (PMEN) while the other was off: a window in which DMA went untranslated to any address.
    /// Firmware hands a unit over with protected memory on; translation must be on before it
    /// goes off (spec 10.4.16).
    pub fn dma_was_exposed(&self) -> bool {
        self.state.borrow().dma_exposed
    }

    /// Translates one DMA request as the unit would: `Ok(physical address)` or
    /// `Err(fault reason)` (recorded unless fault processing is disabled or the reason is 0).
    /// With translation off, DMA passes untranslated, unless protected memory is on (the model
    /// protects all of memory: it has no PLMBASE/PHMBASE ranges), which blocks it unrecorded.
    pub fn translate(&self, requester: RequesterId, pasid: Option<u32>, iova: u64, write: bool) -> Result<u64, u8> {
        let mut state = self.state.borrow_mut();
        if state.gsts & regs::gcmd::TE == 0 {
            return if state.pmen & regs::pmen::PRS != 0 { Err(0) } else { Ok(iova) };
        }
        let walker = state.walker(&self.memory);
        match state.translate(walker, requester, pasid, iova, write) {
            Ok(address) => Ok(address),
            Err((reason, fault_processing_disabled)) => {
                if reason != 0 && !fault_processing_disabled {
                    state.record_fault(requester, iova, write, reason, pasid);
                }
                Err(reason)
            }
        }
    }

    /// A device's DMA write of `data` to `iova`, page by page through [`VtdModel::translate`]:
    /// `Err(fault reason)` at the first page that does not translate (earlier pages were
    /// written, as a real device's posted writes would be).
    pub fn dma_write(&self, requester: RequesterId, pasid: Option<u32>, iova: u64, data: &[u8]) -> Result<(), u8> {
        let mut done = 0;
        while done < data.len() {
            let address = iova + done as u64;
            let chunk = (0x1000 - (address & 0xfff) as usize).min(data.len() - done);
            let phys = self.translate(requester, pasid, address, true)?;
            self.memory.write_bytes(phys, &data[done..done + chunk]).ok_or(0x07u8)?;
            done += chunk;
        }
        Ok(())
    }

    /// A device's posted write of `data` (within one page) at `iova`: translated now, done
    /// later, either by the next queued IOTLB invalidation that drains writes (DW, or every
    /// one on a unit without CAP.DWD, which orders writes itself) or by
    /// [`VtdModel::complete_writes_in_flight`] (the device's write reaching memory late).
    pub fn posted_write(&self, requester: RequesterId, pasid: Option<u32>, iova: u64, data: &[u8]) -> Result<(), u8> {
        assert!((iova & 0xfff) as usize + data.len() <= 0x1000, "a posted write within one page");
        let phys = self.translate(requester, pasid, iova, true)?;
        self.state.borrow_mut().writes_in_flight.push((phys, data.to_vec()));
        Ok(())
    }

    /// Lets every posted write still in flight reach memory; how many there were.
    pub fn complete_writes_in_flight(&self) -> usize {
        let writes = core::mem::take(&mut self.state.borrow_mut().writes_in_flight);
        for (phys, data) in &writes {
            self.memory.write_bytes(*phys, data).expect("a translated address inside memory");
        }
        writes.len()
    }

    /// A device's DMA read of `len` bytes at `iova` through [`VtdModel::translate`].
    pub fn dma_read(&self, requester: RequesterId, pasid: Option<u32>, iova: u64, len: usize) -> Result<Vec<u8>, u8> {
        let mut bytes = Vec::with_capacity(len);
        while bytes.len() < len {
            let address = iova + bytes.len() as u64;
            let chunk = (0x1000 - (address & 0xfff) as usize).min(len - bytes.len());
            let phys = self.translate(requester, pasid, address, false)?;
            bytes.extend(self.memory.read_bytes(phys, chunk).ok_or(0x07u8)?);
        }
        Ok(bytes)
    }

    /// Delivers an MSI write from `requester`: `Ok((vector, destination field))` or
    /// `Err(fault reason)` (recorded). A compatibility-format MSI (address bit 4 clear) passes
    /// unchanged while IRE is off or CFIS is set (spec 5.1.2.1; its APIC id, address bits
    /// 19:12, reported in the xAPIC position of the destination field), else faults 25h.
    pub fn remap_interrupt(&self, requester: RequesterId, address: u32, data: u32) -> Result<(u8, u32), u8> {
        let mut state = self.state.borrow_mut();
        let msi = address as u64;
        let compatibility = msi & msi_address::REMAPPABLE == 0;
        if compatibility && state.gsts & (regs::gcmd::IRE | regs::gcmd::CFI) != regs::gcmd::IRE {
            return Ok((data as u8, (msi_address::DESTINATION.get(msi) as u32) << 8));
        }
        if state.gsts & regs::gcmd::IRE == 0 {
            return Err(0x25);
        }
        let mut handle = msi_address::HANDLE_LOW.get(msi) | msi_address::HANDLE_HIGH.get(msi) << 15;
        // SHV: the data register's low 16 bits are a sub-handle added to the handle.
        if msi & msi_address::SUBHANDLE_VALID != 0 {
            handle += (data & 0xffff) as u64;
        }
        let result = (|| {
            if compatibility {
                return Err(0x25);
            }
            let entries = 2u64 << regs::irta::S.get(state.active_irta);
            if handle >= entries {
                return Err(0x21);
            }
            let (low, high) = match state.interrupt_cache.get(&(handle as u16)) {
                Some(&cached) => cached,
                None => {
                    let walker = state.walker(&self.memory);
                    let base = state.active_irta & regs::irta::ADDRESS;
                    let low = walker.read_u64(base + handle * 16).ok_or(0x23u8)?;
                    let high = walker.read_u64(base + handle * 16 + 8).ok_or(0x23u8)?;
                    if low & 1 == 0 {
                        return Err(0x22);
                    }
                    // Only present entries are cached: a not-present IRTE is looked up again.
                    state.interrupt_cache.insert(handle as u16, (low, high));
                    (low, high)
                }
            };
            let entry = InterruptRemapEntry { words: [low, high] };
            // SVT=01: requester id must match SID, ignoring the function bits SQ names.
            if entry.source_validation() == SVT_REQUESTER_ID {
                let ignored = match entry.source_qualifier() {
                    0 => 0,
                    1 => 0b100,
                    2 => 0b110,
                    _ => 0b111,
                };
                if (requester.0 ^ entry.source_id().0) & !ignored != 0 {
                    return Err(0x26);
                }
            }
            Ok((entry.vector(), entry.destination_field()))
        })();
        if let Err(reason) = result {
            state.record_fault(requester, handle << 48, true, reason, None);
        }
        result
    }
}

impl ModelState {
    fn walker<'a>(&self, memory: &'a PhysMemory) -> Walker<'a> {
        Walker { memory, coherent: self.ecap.coherent() }
    }

    fn iotlb_offset(&self) -> usize {
        self.ecap.iotlb_register_offset()
    }

    fn fault_record_range(&self) -> core::ops::Range<usize> {
        let start = self.cap.fault_recording_offset();
        start..start + self.records.len() * regs::FAULT_RECORD_SIZE
    }

    fn is_64bit_register(&self, offset: usize) -> bool {
        matches!(offset, regs::CAP | regs::ECAP | regs::RTADDR | regs::CCMD | regs::IQH | regs::IQT | regs::IQA | regs::IRTA)
            || offset == self.iotlb_offset() + regs::IVA_FROM_IRO
            || offset == self.iotlb_offset() + regs::IOTLB_FROM_IRO
            || self.fault_record_range().contains(&offset) && offset.is_multiple_of(8)
            || page_requests::PageRequestState::is_64bit_register(offset)
    }

    fn read64(&self, offset: usize) -> u64 {
        if self.fault_record_range().contains(&offset) {
            let relative = offset - self.fault_record_range().start;
            return self.records[relative / 16][relative % 16 / 8];
        }
        if let Some(value) = self.prq.read64(offset) {
            return value;
        }
        match offset {
            regs::CAP => self.cap.0,
            regs::ECAP => self.ecap.0,
            regs::RTADDR => self.rtaddr,
            regs::CCMD => self.ccmd,
            regs::IQH => self.iqh,
            regs::IQT => self.iqt,
            regs::IQA => self.iqa,
            regs::IRTA => self.irta,
            _ if offset == self.iotlb_offset() + regs::IVA_FROM_IRO => self.iva,
            _ if offset == self.iotlb_offset() + regs::IOTLB_FROM_IRO => self.iotlb_command,
            _ => unreachable!("caller checked is_64bit_register"),
        }
    }

    fn read32(&self, offset: usize) -> u32 {
        if self.is_64bit_register(offset & !7) {
            return (self.read64(offset & !7) >> ((offset & 4) * 8)) as u32;
        }
        if let Some(value) = self.prq.read32(offset) {
            return value;
        }
        match offset {
            regs::VER => 0x10,
            regs::GSTS => self.gsts,
            regs::FSTS => self.fsts,
            regs::FECTL => self.fectl,
            regs::FEDATA => self.fedata,
            regs::FEADDR => self.feaddr,
            regs::FEUADDR => self.feuaddr,
            regs::PMEN => self.pmen,
            regs::ICS => self.ics,
            regs::IECTL => self.iectl,
            // GCMD reads as zero; unimplemented registers too.
            _ => 0,
        }
    }

    /// What enabling translation or a new root table drops. The interrupt entry cache is not
    /// among them: SIRTP leaves it to software's global IEC invalidation (spec 6.5.2.5).
    fn flush_all_caches(&mut self) {
        self.context_cache.clear();
        self.pasid_cache.clear();
        self.iotlb.clear();
        self.paging_cache.clear();
    }

    fn global_command(&mut self, value: u32) {
        use regs::gcmd;
        let persistent = self.gsts & gcmd::PERSISTENT;
        let toggled = (value ^ persistent) & gcmd::PERSISTENT;
        let one_shot = value & ONE_SHOT;
        assert!(
            toggled.count_ones() + one_shot.count_ones() <= 1,
            "GCMD write {value:#x} changes more than one command (GSTS {:#x})",
            self.gsts
        );
        if self.gcmd_stalled {
            return;
        }
        if toggled & gcmd::TE != 0 {
            self.gsts ^= gcmd::TE;
            self.flush_all_caches();
        }
        if toggled & gcmd::QIE != 0 {
            self.gsts ^= gcmd::QIE;
            if self.gsts & gcmd::QIE != 0 {
                self.iqh = 0;
            }
        }
        if toggled & (gcmd::IRE | gcmd::CFI | gcmd::EAFL) != 0 {
            self.gsts ^= toggled;
        }
        if one_shot & gcmd::SRTP != 0 {
            self.active_root = self.rtaddr;
            self.gsts |= gcmd::SRTP;
            self.srtp_count += 1;
            self.flush_all_caches();
        }
        if one_shot & gcmd::SIRTP != 0 {
            self.active_irta = self.irta;
            self.gsts |= gcmd::SIRTP;
        }
    }

    /// Translation or protected memory keeps DMA from memory.
    fn dma_guarded(&self) -> bool {
        self.gsts & regs::gcmd::TE != 0 || self.pmen & regs::pmen::PRS != 0
    }

    fn write64(&mut self, memory: &PhysMemory, offset: usize, value: u64) {
        if self.fault_record_range().contains(&offset) {
            // Only F (bit 127) is writable: write 1 to clear.
            let relative = offset - self.fault_record_range().start;
            if relative % 16 == 8 && value & crate::fault::record::F != 0 {
                self.records[relative / 16][1] &= !crate::fault::record::F;
                self.update_pending_fault();
            }
            return;
        }
        if self.prq.write64(offset, value) {
            return;
        }
        match offset {
            regs::RTADDR => self.rtaddr = value,
            regs::CCMD => {
                self.ccmd = value;
                if value & regs::ccmd::ICC != 0 && self.gsts & regs::gcmd::QIE == 0 && !self.register_invalidation_stalled {
                    self.context_command(value);
                }
            }
            regs::IQT => {
                self.iqt = value;
                if self.gsts & regs::gcmd::QIE != 0 && !self.queue_stalled {
                    self.process_queue(memory);
                }
            }
            regs::IQA => self.iqa = value,
            regs::IRTA => self.irta = value,
            _ if offset == self.iotlb_offset() + regs::IVA_FROM_IRO => self.iva = value,
            _ if offset == self.iotlb_offset() + regs::IOTLB_FROM_IRO => {
                self.iotlb_command = value;
                if value & regs::iotlb::IVT != 0 && self.gsts & regs::gcmd::QIE == 0 && !self.register_invalidation_stalled {
                    self.iotlb_register_command(value);
                }
            }
            _ => {}
        }
    }

    fn write32(&mut self, memory: &PhysMemory, offset: usize, value: u32) {
        if self.is_64bit_register(offset & !7) {
            // Merge into the 64-bit register; side effects fire on the half holding the
            // trigger (ICC/IVT/F in the high half, the IQT index in the low half), as in QEMU.
            let base = offset & !7;
            let shift = (offset & 4) * 8;
            let merged = self.read64(base) & !(0xffff_ffffu64 << shift) | (value as u64) << shift;
            let triggers_high = base == regs::CCMD
                || base == self.iotlb_offset() + regs::IOTLB_FROM_IRO
                || self.fault_record_range().contains(&base);
            if triggers_high == (shift == 32) {
                self.write64(memory, base, merged);
            } else if !self.fault_record_range().contains(&base) {
                self.store_without_side_effects(base, merged);
            }
            return;
        }
        if self.prq.write32(offset, value) {
            return;
        }
        match offset {
            regs::GCMD => self.global_command(value),
            regs::FSTS => {
                // PFO, IQE, ICE, ITE are write-1-to-clear.
                let clearable = regs::fsts::PFO | regs::fsts::IQE | regs::fsts::ICE | regs::fsts::ITE;
                self.fsts &= !(value & clearable);
                self.clear_serviced_interrupt();
            }
            regs::FECTL => {
                self.fectl = self.fectl & regs::event_control::IP | value & regs::event_control::IM;
                if self.fectl & regs::event_control::IM == 0 && self.fectl & regs::event_control::IP != 0 {
                    self.fectl &= !regs::event_control::IP;
                    self.send_fault_interrupt();
                }
            }
            regs::FEDATA => self.fedata = value,
            regs::FEADDR => self.feaddr = value,
            regs::FEUADDR => self.feuaddr = value,
            regs::PMEN => {
                self.pmen = value & regs::pmen::EPM | if value & regs::pmen::EPM != 0 { regs::pmen::PRS } else { 0 };
            }
            regs::ICS => self.ics &= !(value & regs::ics::IWC),
            regs::IECTL => self.iectl = value & regs::event_control::IM,
            _ => {}
        }
    }

    fn store_without_side_effects(&mut self, base: usize, value: u64) {
        match base {
            regs::RTADDR => self.rtaddr = value,
            regs::CCMD => self.ccmd = value,
            regs::IQT => self.iqt = value,
            regs::IQA => self.iqa = value,
            regs::IRTA => self.irta = value,
            _ if self.prq.write64(base, value) => {}
            _ if base == self.iotlb_offset() + regs::IVA_FROM_IRO => self.iva = value,
            _ if base == self.iotlb_offset() + regs::IOTLB_FROM_IRO => self.iotlb_command = value,
            _ => {}
        }
    }

    fn context_command(&mut self, value: u64) {
        use regs::ccmd;
        let granularity = ccmd::CIRG.get(value);
        let did = ccmd::DID.get(value) as u16;
        let request = match granularity {
            ccmd::GLOBAL => Invalidation::ContextGlobal,
            ccmd::DOMAIN => Invalidation::ContextDomain { did },
            _ => Invalidation::ContextDevice {
                did,
                source: ccmd::SID.get(value) as u16,
                function_mask: ccmd::FM.get(value) as u8,
            },
        };
        self.apply(request);
        // Done: ICC clears, CAIG reports the granularity performed.
        self.ccmd = ccmd::CAIG.with(value & !ccmd::ICC, granularity);
    }

    fn iotlb_register_command(&mut self, value: u64) {
        use regs::iotlb;
        let granularity = iotlb::IIRG.get(value);
        let did = iotlb::DID.get(value) as u16;
        let request = match granularity {
            iotlb::GLOBAL => Invalidation::IotlbGlobal,
            iotlb::DOMAIN => Invalidation::IotlbDomain { did },
            _ => Invalidation::IotlbPages {
                did,
                address: self.iva & iotlb::IVA_ADDRESS,
                address_mask: iotlb::IVA_AM.get(self.iva) as u8,
                leaf_only: self.iva & iotlb::IVA_IH != 0,
            },
        };
        self.apply(request);
        self.iotlb_command = iotlb::IAIG.with(value & !iotlb::IVT, granularity);
    }

    fn process_queue(&mut self, memory: &PhysMemory) {
        let wide = self.iqa & regs::iqa::DW_256 != 0;
        let descriptor_bytes = if wide { 32 } else { 16 };
        let queue_bytes = 4096u64 << regs::iqa::QS.get(self.iqa);
        let base = self.iqa & regs::iqa::ADDRESS;
        let walker = self.walker(memory);
        while self.iqh != self.iqt && self.fsts & regs::fsts::IQE == 0 {
            let address = base + self.iqh;
            let (Some(low), Some(high)) = (walker.read_u64(address), walker.read_u64(address + 8)) else {
                self.fsts |= regs::fsts::IQE;
                return;
            };
            if !self.process_descriptor(memory, low, high) {
                self.fsts |= regs::fsts::IQE;
                return;
            }
            self.iqh = (self.iqh + descriptor_bytes) % queue_bytes;
        }
    }

    /// Decodes and performs one descriptor; false if it is invalid, as hardware reports a
    /// descriptor of an unknown type or with a reserved bit set (IQE).
    fn process_descriptor(&mut self, memory: &PhysMemory, low: u64, high: u64) -> bool {
        let words = [low, high];
        let descriptor = Descriptor128 { words };
        if descriptor.reserved_bits_set().is_some() {
            return false;
        }
        // PASID-granular descriptors (types 6-8) only exist for scalable-mode translation.
        let scalable = self.active_root & regs::rtaddr::TTM.mask() == regs::rtaddr::TTM_SCALABLE;
        if matches!(descriptor.kind(), kind::PASID_IOTLB | kind::PASID_CACHE | kind::PASID_DEVICE_TLB | kind::PAGE_GROUP_RESPONSE) && !scalable {
            return false;
        }
        let request = match descriptor.kind() {
            kind::CONTEXT_CACHE => {
                let context = ContextCacheDescriptor { words };
                let did = context.did() as u16;
                match context.granularity() {
                    1 => Invalidation::ContextGlobal,
                    2 => Invalidation::ContextDomain { did },
                    3 => Invalidation::ContextDevice {
                        did,
                        source: context.source() as u16,
                        function_mask: context.function_mask() as u8,
                    },
                    _ => return false,
                }
            }
            kind::IOTLB => {
                let iotlb = IotlbDescriptor { words };
                // A unit reporting DWD drains writes only when the descriptor asks (DW).
                if iotlb.drain_writes() || !self.cap.write_draining() {
                    for (phys, data) in core::mem::take(&mut self.writes_in_flight) {
                        memory.write_bytes(phys, &data).expect("a translated address inside memory");
                    }
                }
                let did = iotlb.did() as u16;
                match iotlb.granularity() {
                    1 => Invalidation::IotlbGlobal,
                    2 => Invalidation::IotlbDomain { did },
                    3 => Invalidation::IotlbPages {
                        did,
                        address: iotlb.address(),
                        address_mask: iotlb.address_mask() as u8,
                        leaf_only: iotlb.leaf_only(),
                    },
                    _ => return false,
                }
            }
            kind::DEVICE_TLB => {
                let device = DeviceTlbDescriptor { words };
                Invalidation::DeviceTlb {
                    source: device.source() as u16,
                    physical_function: device.physical_function(),
                    queue_depth: device.queue_depth() as u8,
                    range: decode_device_tlb_range(device.address(), device.sized()),
                }
            }
            kind::INTERRUPT_ENTRY_CACHE => {
                let entries = InterruptEntryDescriptor { words };
                if entries.index_selective() {
                    Invalidation::InterruptEntries { index: entries.index() as u16, index_mask: entries.index_mask() as u8 }
                } else {
                    Invalidation::InterruptEntryGlobal
                }
            }
            kind::WAIT => {
                let wait = WaitDescriptor { words };
                assert!(!(wait.interrupt() && wait.status_write()), "wait descriptor with SW and IF: QEMU 10.0.2 aborts");
                if wait.status_write() {
                    let status = wait.status_data() as u32;
                    if memory.write_u32(wait.status_address(), status).is_none() {
                        return false;
                    }
                    self.waits.push((wait.status_address(), status));
                }
                if wait.interrupt() {
                    self.ics |= regs::ics::IWC;
                }
                return true;
            }
            kind::PASID_IOTLB => {
                let iotlb = PasidIotlbDescriptor { words };
                let (did, pasid) = (iotlb.did() as u16, iotlb.pasid() as u32);
                match iotlb.granularity() {
                    2 => Invalidation::PasidIotlbAll { did, pasid },
                    3 => Invalidation::PasidIotlbPages {
                        did,
                        pasid,
                        address: iotlb.address(),
                        address_mask: iotlb.address_mask() as u8,
                        leaf_only: iotlb.leaf_only(),
                    },
                    _ => return false,
                }
            }
            kind::PASID_CACHE => {
                let cache = PasidCacheDescriptor { words };
                let did = cache.did() as u16;
                match cache.granularity() {
                    0 => Invalidation::PasidCacheDomain { did },
                    1 => Invalidation::PasidCachePasid { did, pasid: cache.pasid() as u32 },
                    3 => Invalidation::PasidCacheGlobal,
                    _ => return false,
                }
            }
            kind::PASID_DEVICE_TLB => {
                let device = PasidDeviceTlbDescriptor { words };
                Invalidation::PasidDeviceTlb {
                    source: device.source() as u16,
                    physical_function: device.physical_function(),
                    pasid: device.pasid() as u32,
                    queue_depth: device.queue_depth() as u8,
                    range: decode_device_tlb_range(device.address(), device.sized()),
                }
            }
            kind::PAGE_GROUP_RESPONSE => {
                let response = PageGroupResponseDescriptor { words };
                self.prq.respond(&response);
                Invalidation::PageGroupResponse {
                    requester: response.requester() as u16,
                    pasid: response.pasid_present().then_some(response.pasid() as u32),
                    group: response.group() as u16,
                    code: response.response_code() as u8,
                }
            }
            _ => return false,
        };
        self.apply(request);
        true
    }

    /// Drops cached state as `request` says and logs it.
    fn apply(&mut self, request: Invalidation) {
        // Whether a page (or a paging-structure entry at `level`) lies in the 2^mask-page block
        // at `address`: compared at the coarser of the two granularities.
        let in_block = |page: u64, address: u64, mask: u8| page >> mask == (address >> 12) >> mask;
        let overlaps = |key: &PagingKey, address: u64, mask: u8| {
            let shift = level_shift(key.2).max(12 + mask as u32);
            (key.3 << level_shift(key.2)) >> shift == address >> shift
        };
        match request {
            Invalidation::ContextGlobal => self.context_cache.clear(),
            Invalidation::ContextDomain { did: target } => self.context_cache.retain(|_, cached| match cached {
                CachedContext::Legacy { did, .. } => *did != target,
                CachedContext::NotPresent { .. } => target != 0,
                CachedContext::Scalable { .. } => true,
            }),
            Invalidation::ContextDevice { source, function_mask, .. } => {
                let ignored: u16 = match function_mask {
                    0 => 0,
                    1 => 0b100,
                    2 => 0b110,
                    _ => 0b111,
                };
                self.context_cache.retain(|requester, _| (requester ^ source) & !ignored != 0);
            }
            // Plain IOTLB invalidation (6.5.2.4) covers second-level and pass-through
            // translations only; first-level and nested ones are PASID-granular.
            Invalidation::IotlbGlobal => {
                self.iotlb.retain(|_, entry| entry.first_level);
                self.paging_cache.retain(|_, entry| entry.first_level);
            }
            Invalidation::IotlbDomain { did } => {
                self.iotlb.retain(|key, entry| entry.first_level || key.0 != did);
                self.paging_cache.retain(|key, entry| entry.first_level || key.0 != did);
            }
            Invalidation::IotlbPages { did, address, address_mask, leaf_only } => {
                self.iotlb
                    .retain(|key, entry| entry.first_level || !(key.0 == did && in_block(key.2, address, address_mask)));
                // IH = 1: only leaf entries changed, the paging-structure caches may stay.
                if !leaf_only {
                    self.paging_cache.retain(|key, entry| {
                        entry.first_level || !(key.0 == did && overlaps(key, address, address_mask))
                    });
                }
            }
            Invalidation::PasidCacheDomain { did } => self.pasid_cache.retain(|_, entry| match entry {
                PasidCacheEntry::Present(entry) => entry.did != did,
                PasidCacheEntry::NotPresent { .. } => true,
            }),
            // A not-present entry has no domain-id of its own: any PASID-selective request for
            // its PASID drops it.
            Invalidation::PasidCachePasid { did, pasid } => self.pasid_cache.retain(|key, entry| match entry {
                PasidCacheEntry::Present(entry) => !(entry.did == did && key.1 == pasid),
                PasidCacheEntry::NotPresent { .. } => key.1 != pasid,
            }),
            Invalidation::PasidCacheGlobal => self.pasid_cache.clear(),
            // PASID-based IOTLB invalidation (6.5.2.6) covers first-level and nested
            // translations only.
            Invalidation::PasidIotlbAll { did, pasid } => {
                self.iotlb.retain(|key, entry| !(entry.first_level && key.0 == did && key.1 == pasid));
                self.paging_cache.retain(|key, entry| !(entry.first_level && key.0 == did && key.1 == pasid));
            }
            Invalidation::PasidIotlbPages { did, pasid, address, address_mask, leaf_only } => {
                self.iotlb.retain(|key, entry| {
                    !(entry.first_level && key.0 == did && key.1 == pasid && in_block(key.2, address, address_mask))
                });
                if !leaf_only {
                    self.paging_cache.retain(|key, entry| {
                        !(entry.first_level && key.0 == did && key.1 == pasid && overlaps(key, address, address_mask))
                    });
                }
            }
            Invalidation::InterruptEntryGlobal => self.interrupt_cache.clear(),
            Invalidation::InterruptEntries { index, index_mask } => {
                let mask = index_mask.min(16) as u32;
                self.interrupt_cache.retain(|&cached, _| cached as u32 >> mask != index as u32 >> mask)
            }
            // Device-TLBs live in devices: nothing to drop here; a page group response went to
            // its device as it was decoded.
            Invalidation::DeviceTlb { .. } | Invalidation::PasidDeviceTlb { .. } | Invalidation::PageGroupResponse { .. } => {}
        }
        self.processed.push(request);
    }

    fn update_pending_fault(&mut self) {
        if self.records.iter().any(|record| record[1] >> 63 != 0) {
            self.fsts |= regs::fsts::PPF;
        } else {
            self.fsts &= !regs::fsts::PPF;
        }
        self.clear_serviced_interrupt();
    }

    /// A pending (masked) fault event is withdrawn once software has serviced every fault:
    /// no record F bit and no PFO left (spec 7.3.1; QEMU does the same).
    fn clear_serviced_interrupt(&mut self) {
        if self.fsts & (regs::fsts::PPF | regs::fsts::PFO) == 0 {
            self.fectl &= !regs::event_control::IP;
        }
    }

    fn record_fault(&mut self, requester: RequesterId, address: u64, write: bool, reason: u8, pasid: Option<u32>) {
        let index = self.next_record;
        if self.records[index][1] >> 63 != 0 {
            self.fsts |= regs::fsts::PFO;
            return;
        }
        let mut record = FaultRecord::default();
        record
            .set_fault(true)
            .set_reason(reason as u64)
            .set_source(requester.0 as u64)
            .set_read(!write)
            .set_fault_info(address & hwio::bits::addr_mask(12, 63));
        if let Some(pasid) = pasid {
            record.set_pasid_present(true).set_pasid(pasid as u64 & 0xf_ffff);
        }
        self.records[index] = record.words;
        if self.fsts & regs::fsts::PPF == 0 {
            self.fsts = regs::fsts::FRI.with(self.fsts.into(), index as u64) as u32;
        }
        self.next_record = (index + 1) % self.records.len();
        self.update_pending_fault();
        if self.fectl & regs::event_control::IM != 0 {
            self.fectl |= regs::event_control::IP;
        } else {
            self.send_fault_interrupt();
        }
    }

    fn send_fault_interrupt(&mut self) {
        let address = (self.feuaddr as u64) << 32 | self.feaddr as u64;
        self.fault_interrupts.push((address, self.fedata));
    }

    /// Root and context lookup (through the context cache). Errors carry (reason, FPD).
    fn context(&mut self, memory: Walker, requester: RequesterId) -> Result<CachedContext, (u8, bool)> {
        match self.context_cache.get(&requester.0) {
            Some(CachedContext::NotPresent { reason }) => return Err((*reason, false)),
            Some(cached) => return Ok(*cached),
            None => {}
        }
        let result = self.fetch_context(memory, requester);
        match result {
            Ok(cached) => {
                self.context_cache.insert(requester.0, cached);
            }
            Err((reason @ (0x01 | 0x02), _)) if self.cap.caching_mode() => {
                self.context_cache.insert(requester.0, CachedContext::NotPresent { reason });
            }
            Err(_) => {}
        }
        result
    }

    fn fetch_context(&self, memory: Walker, requester: RequesterId) -> Result<CachedContext, (u8, bool)> {
        let scalable = self.active_root & regs::rtaddr::TTM.mask() == regs::rtaddr::TTM_SCALABLE;
        let root = self.active_root & regs::rtaddr::ADDRESS;
        let bus = requester.bus() as u64;
        let devfn = requester.devfn() as u64;
        let root_low = memory.read_u64(root + bus * 16).ok_or((0x08, false))?;
        let root_high = memory.read_u64(root + bus * 16 + 8).ok_or((0x08, false))?;
        let cached = if scalable {
            let half = if devfn < 128 { root_low } else { root_high };
            if half & 1 == 0 {
                return Err((0x01, false));
            }
            let entry = (half & ADDRESS_MASK) + (devfn & 0x7f) * 32;
            let low = memory.read_u64(entry).ok_or((0x09, false))?;
            let word1 = memory.read_u64(entry + 8).ok_or((0x09, false))?;
            if low & 1 == 0 {
                return Err((0x02, false));
            }
            CachedContext::Scalable {
                pasid_directory: low & ADDRESS_MASK,
                directory_entries: 1 << ((low >> 9 & 7) + 7),
                rid_pasid: (word1 & 0xf_ffff) as u32,
                pasid_enabled: low >> 3 & 1 != 0,
                page_requests_enabled: low >> 4 & 1 != 0,
                fault_processing_disabled: low >> 1 & 1 != 0,
            }
        } else {
            if root_low & 1 == 0 {
                return Err((0x01, false));
            }
            if (RootEntry { words: [root_low, root_high] }).reserved_bits_set().is_some() {
                return Err((0x0a, false));
            }
            let entry = (root_low & ADDRESS_MASK) + devfn * 16;
            let low = memory.read_u64(entry).ok_or((0x09, false))?;
            let high = memory.read_u64(entry + 8).ok_or((0x09, false))?;
            if low & 1 == 0 {
                return Err((0x02, false));
            }
            if (ContextEntry { words: [low, high] }).reserved_bits_set().is_some() {
                return Err((0x0b, false));
            }
            let fault_processing_disabled = low >> 1 & 1 != 0;
            let levels = (high & 7) as u8 + 2;
            let translation_type = low >> 2 & 3;
            let valid = match translation_type {
                0 | 1 => self.cap.supports_second_level_levels(levels),
                2 => self.ecap.pass_through(),
                _ => false,
            };
            if !valid {
                return Err((0x03, fault_processing_disabled));
            }
            CachedContext::Legacy {
                did: (high >> 8) as u16,
                translation_type,
                table: low & ADDRESS_MASK,
                levels,
                fault_processing_disabled,
            }
        };
        Ok(cached)
    }

    /// PASID directory and table lookup (through the PASID cache).
    fn pasid_entry(
        &mut self,
        memory: Walker,
        requester: RequesterId,
        directory: u64,
        directory_entries: u64,
        pasid: u32,
        context_fpd: bool,
    ) -> Result<CachedPasidEntry, (u8, bool)> {
        match self.pasid_cache.get(&(requester.0, pasid)) {
            Some(PasidCacheEntry::Present(cached)) => return Ok(*cached),
            Some(PasidCacheEntry::NotPresent { reason, fault_processing_disabled }) => {
                return Err((*reason, *fault_processing_disabled))
            }
            None => {}
        }
        let result = self.fetch_pasid_entry(memory, directory, directory_entries, pasid, context_fpd);
        match result {
            Ok(cached) => {
                self.pasid_cache.insert((requester.0, pasid), PasidCacheEntry::Present(cached));
            }
            Err((reason @ (0x51 | 0x59), fault_processing_disabled)) if self.cap.caching_mode() => {
                self.pasid_cache.insert((requester.0, pasid), PasidCacheEntry::NotPresent { reason, fault_processing_disabled });
            }
            Err(_) => {}
        }
        result
    }

    fn fetch_pasid_entry(
        &self,
        memory: Walker,
        directory: u64,
        directory_entries: u64,
        pasid: u32,
        context_fpd: bool,
    ) -> Result<CachedPasidEntry, (u8, bool)> {
        let directory_index = (pasid >> 6) as u64;
        if directory_index >= directory_entries {
            return Err((0x5b, context_fpd));
        }
        let directory_entry = memory.read_u64(directory + directory_index * 8).ok_or((0x50, context_fpd))?;
        if directory_entry & 1 == 0 {
            return Err((0x51, context_fpd || directory_entry >> 1 & 1 != 0));
        }
        let entry = (directory_entry & ADDRESS_MASK) + (pasid as u64 & 0x3f) * 64;
        let mut words = [0u64; 3];
        for (index, word) in words.iter_mut().enumerate() {
            *word = memory.read_u64(entry + index as u64 * 8).ok_or((0x58, context_fpd))?;
        }
        let fault_processing_disabled = context_fpd || words[0] >> 1 & 1 != 0;
        if words[0] & 1 == 0 {
            return Err((0x59, fault_processing_disabled));
        }
        let pgtt = words[0] >> 6 & 7;
        let second_level_levels = (words[0] >> 2 & 7) as u8 + 2;
        let five_level = words[2] >> 2 & 3 == 1;
        let supported = match pgtt {
            0b001 => self.ecap.first_level() && (!five_level || self.cap.first_level_5_level()),
            0b010 => self.ecap.second_level() && self.cap.supports_second_level_levels(second_level_levels),
            0b011 => {
                self.ecap.nested()
                    && self.ecap.first_level()
                    && self.ecap.second_level()
                    && self.cap.supports_second_level_levels(second_level_levels)
            }
            0b100 => self.ecap.pass_through(),
            _ => false,
        };
        // SSADE needs ECAP.SSADS and a second-level walk; otherwise the entry is invalid.
        let second_level_access_dirty = words[0] >> 9 & 1 != 0;
        let access_dirty_valid = !second_level_access_dirty || (self.ecap.second_level_dirty() && pgtt == 0b010);
        if !supported || !access_dirty_valid {
            return Err((0x5b, fault_processing_disabled));
        }
        let cached = CachedPasidEntry {
            did: words[1] as u16,
            pgtt,
            second_level_root: words[0] & ADDRESS_MASK,
            second_level_levels,
            first_level_root: words[2] & ADDRESS_MASK,
            five_level,
            address_width_bits: 30 + 9 * (words[0] >> 2 & 7) as u32,
            fault_processing_disabled,
            second_level_access_dirty,
        };
        Ok(cached)
    }

    fn translate(
        &mut self,
        memory: Walker,
        requester: RequesterId,
        pasid: Option<u32>,
        iova: u64,
        write: bool,
    ) -> Result<u64, (u8, bool)> {
        let context = self.context(memory, requester)?;
        let (did, tag, walk) = match context {
            CachedContext::Legacy { did, translation_type, table, levels, fault_processing_disabled } => {
                if pasid.is_some() {
                    return Err((0, true));
                }
                if translation_type == 2 {
                    return Ok(iova);
                }
                (did, NO_PASID_TAG, Walk::SecondLevel { root: table, levels, fpd: fault_processing_disabled, access_dirty: false })
            }
            CachedContext::Scalable {
                pasid_directory,
                directory_entries,
                rid_pasid,
                pasid_enabled,
                fault_processing_disabled,
                ..
            } => {
                if pasid.is_some() && !pasid_enabled {
                    return Err((0, true));
                }
                let effective = pasid.unwrap_or(rid_pasid);
                let entry = self.pasid_entry(
                    memory,
                    requester,
                    pasid_directory,
                    directory_entries,
                    effective,
                    fault_processing_disabled,
                )?;
                let fpd = entry.fault_processing_disabled;
                let walk = match entry.pgtt {
                    // As QEMU does, a first-level-only entry's AW field bounds the input
                    // address too: the canonical check is made at the narrower of the AW width
                    // and the paging width (an AW of 0 leaves 30 bits).
                    0b001 => Walk::FirstLevel {
                        root: entry.first_level_root,
                        five_level: entry.five_level,
                        input_bits: first_level_width(entry.five_level).min(entry.address_width_bits),
                        nested: None,
                        fpd,
                    },
                    0b010 => Walk::SecondLevel {
                        root: entry.second_level_root,
                        levels: entry.second_level_levels,
                        fpd,
                        access_dirty: entry.second_level_access_dirty,
                    },
                    0b011 => Walk::FirstLevel {
                        root: entry.first_level_root,
                        five_level: entry.five_level,
                        input_bits: first_level_width(entry.five_level),
                        nested: Some((entry.second_level_root, entry.second_level_levels)),
                        fpd,
                    },
                    _ => return Ok(iova),
                };
                (entry.did, effective, walk)
            }
            CachedContext::NotPresent { .. } => unreachable!("`context` turns cached not-present entries into faults"),
        };
        let page = iova >> 12;
        let (first_level, fpd) = match walk {
            Walk::SecondLevel { fpd, .. } => (false, fpd),
            Walk::FirstLevel { fpd, .. } => (true, fpd),
        };
        // A cached entry of the other kind is not used: plain and PASID-based invalidation
        // would each leave it alone, so a hit on it could never be undone.
        if let Some(entry) = self.iotlb.get(&(did, tag, page, write)).filter(|entry| entry.first_level == first_level) {
            return entry.result.map(|frame| frame | iova & 0xfff).map_err(|reason| (reason, fpd));
        }
        self.page_walks += 1;
        let mut paging = PagingCursor { cache: &mut self.paging_cache, did, tag, first_level, iova };
        let result = match walk {
            Walk::SecondLevel { root, levels, access_dirty, .. } => {
                let paging = Some(&mut paging);
                walk_second_level(memory, self.cap, root, levels, iova, write, paging, access_dirty).map_err(|fault| fault.legacy_code(write))
            }
            Walk::FirstLevel { root, five_level, input_bits, nested, .. } => {
                walk_first_level(memory, self.cap, root, five_level, input_bits, nested, iova, write, &mut paging)
            }
        };
        match result {
            Ok(address) => {
                self.iotlb.insert((did, tag, page, write), IotlbEntry { result: Ok(address & !0xfff), first_level });
            }
            Err(reason) if self.cap.caching_mode() => {
                self.iotlb.insert((did, tag, page, write), IotlbEntry { result: Err(reason), first_level });
            }
            Err(_) => {}
        }
        result.map_err(|reason| (reason, fpd))
    }
}

enum Walk {
    SecondLevel { root: u64, levels: u8, fpd: bool, access_dirty: bool },
    FirstLevel { root: u64, five_level: bool, input_bits: u32, nested: Option<(u64, u8)>, fpd: bool },
}

fn decode_device_tlb_range(address: u64, sized: bool) -> crate::descriptors::DeviceTlbRange {
    if !sized {
        return crate::descriptors::DeviceTlbRange { base: address, pages_log2: 0 };
    }
    let ones = (address >> 12).trailing_ones() as u8;
    let pages_log2 = ones + 1;
    let base = if pages_log2 >= 52 { 0 } else { (address >> 12 >> pages_log2 << pages_log2) << 12 };
    crate::descriptors::DeviceTlbRange { base, pages_log2 }
}

/// One entry of a walk: from the paging-structure cache for a non-leaf level when it holds
/// one, else from memory (`None`: memory cannot be read).
fn read_entry(memory: Walker, paging: &Option<&mut PagingCursor>, level: u8, slot: u64) -> Option<u64> {
    match paging.as_ref().and_then(|paging| if level > 1 { paging.get(level) } else { None }) {
        Some(raw) => Some(raw),
        None => memory.read_u64(slot),
    }
}

/// Why a second-level walk failed. The reason code depends on the translation the walk
/// served: second-level translation reports it as QEMU does, nested translation with the
/// scalable-mode codes that name the second stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SecondLevelFault {
    /// The input address is beyond the table's width.
    BeyondWidth,
    /// An entry lacks the permission the access needs; `present`: it grants some access
    /// (R or W set).
    Denied { present: bool },
    /// An entry could not be read or updated.
    EntryAccess,
    /// A large page where the unit supports none of that size.
    LargePage,
}

impl SecondLevelFault {
    /// QEMU's codes for second-level translation, legacy and scalable (spec 7.1.3, legacy
    /// table): 04h beyond the width, 05h/06h a missing write/read permission (also of an entry
    /// that is not present), 07h an entry not readable, 0Ch a large page not supported.
    fn legacy_code(self, write: bool) -> u8 {
        match self {
            SecondLevelFault::BeyondWidth => 0x04,
            SecondLevelFault::Denied { .. } if write => 0x05,
            SecondLevelFault::Denied { .. } => 0x06,
            SecondLevelFault::EntryAccess => 0x07,
            SecondLevelFault::LargePage => 0x0c,
        }
    }

    /// The scalable-mode codes of a second-stage fault in nested translation (spec 7.1.3,
    /// scalable-mode table): SGN.5 84h input beyond the second stage's width, SSS.2 79h an
    /// entry with R = W = 0, SGN.6 85h / SGN.7 86h a missing write / read permission, SSS.1
    /// 78h an entry not readable, SSS.3 7Ah a reserved (large-page) bit set.
    fn nested_code(self, write: bool) -> u8 {
        match self {
            SecondLevelFault::BeyondWidth => 0x84,
            SecondLevelFault::Denied { present: false } => 0x79,
            SecondLevelFault::Denied { .. } if write => 0x85,
            SecondLevelFault::Denied { .. } => 0x86,
            SecondLevelFault::EntryAccess => 0x78,
            SecondLevelFault::LargePage => 0x7a,
        }
    }
}

/// Second-level walk (spec 3.7): permission is checked at every level, as QEMU does. Non-leaf
/// entries go through `paging` (the paging-structure cache) when given; the second-level walks
/// of nested translation run without it. With `access_dirty` (SSADE, spec 3.7.3) the walk sets
/// A in every entry it uses and D in the leaf of a write.
#[allow(clippy::too_many_arguments)]
fn walk_second_level(
    memory: Walker,
    cap: Capability,
    root: u64,
    levels: u8,
    iova: u64,
    write: bool,
    mut paging: Option<&mut PagingCursor>,
    access_dirty: bool,
) -> Result<u64, SecondLevelFault> {
    if iova >> (12 + 9 * levels as u32) != 0 {
        return Err(SecondLevelFault::BeyondWidth);
    }
    let needed = if write { 1 << 1 } else { 1 << 0 };
    let mut table = root;
    for level in (1..=levels).rev() {
        let shift = level_shift(level);
        let slot = table + (iova >> shift & 0x1ff) * 8;
        let entry = read_entry(memory, &paging, level, slot).ok_or(SecondLevelFault::EntryAccess)?;
        if entry & needed == 0 {
            return Err(SecondLevelFault::Denied { present: entry & 0b11 != 0 });
        }
        let address = entry & ADDRESS_MASK;
        let large = level > 1 && entry >> 7 & 1 != 0;
        if access_dirty {
            let leaf = level == 1 || large;
            let bits = SECOND_LEVEL_ACCESSED | if leaf && write { SECOND_LEVEL_DIRTY } else { 0 };
            memory.set_bits(slot, entry, bits).ok_or(SecondLevelFault::EntryAccess)?;
        }
        if level > 1 && !large {
            if let Some(paging) = paging.as_mut() {
                paging.put(level, entry);
            }
        }
        if large {
            let allowed = match level {
                2 => cap.second_level_2m(),
                3 => cap.second_level_1g(),
                _ => false,
            };
            if !allowed {
                return Err(SecondLevelFault::LargePage);
            }
        }
        if level == 1 || large {
            let page_mask = (1u64 << shift) - 1;
            return Ok(address & !page_mask | iova & page_mask);
        }
        table = address;
    }
    unreachable!("the loop returns at level 1")
}

/// Input address bits of 4- or 5-level first-level paging.
fn first_level_width(five_level: bool) -> u32 {
    if five_level {
        57
    } else {
        48
    }
}

/// First-level walk (spec 3.6) in IA-32e format of input addresses canonical at `input_bits`;
/// with `nested`, every table pointer and the output are guest-physical and go through the
/// second-level table first (spec 3.8).
#[allow(clippy::too_many_arguments)]
fn walk_first_level(
    memory: Walker,
    cap: Capability,
    root: u64,
    five_level: bool,
    input_bits: u32,
    nested: Option<(u64, u8)>,
    iova: u64,
    write: bool,
    paging: &mut PagingCursor,
) -> Result<u64, u8> {
    let levels: u8 = if five_level { 5 } else { 4 };
    // Canonical: bits above input_bits-1 must copy bit input_bits-1.
    let upper = (iova as i64) >> (input_bits - 1);
    if upper != 0 && upper != -1 {
        return Err(0x80);
    }
    let to_host = |guest: u64, write: bool| match nested {
        Some((second_root, second_levels)) => {
            walk_second_level(memory, cap, second_root, second_levels, guest, write, None, false).map_err(|fault| fault.nested_code(write))
        }
        None => Ok(guest),
    };
    // Nested walks keep no paging-structure cache here: a cached first-level entry holds a
    // guest-physical pointer whose second-level translation would need caching too.
    let mut paging = if nested.is_none() { Some(paging) } else { None };
    let mut table = to_host(root, false)?;
    for level in (1..=levels).rev() {
        let shift = level_shift(level);
        let entry = read_entry(memory, &paging, level, table + (iova >> shift & 0x1ff) * 8).ok_or(0x70u8)?;
        if entry & 1 == 0 {
            return Err(0x71);
        }
        if entry >> 2 & 1 == 0 {
            return Err(0x81);
        }
        if write && entry >> 1 & 1 == 0 {
            return Err(0x85);
        }
        let address = entry & ADDRESS_MASK;
        let large = level > 1 && entry >> 7 & 1 != 0;
        if large && !(level == 2 || level == 3 && cap.first_level_1g()) {
            return Err(0x72);
        }
        if level > 1 && !large {
            if let Some(paging) = paging.as_mut() {
                paging.put(level, entry);
            }
        }
        if level == 1 || large {
            let page_mask = (1u64 << shift) - 1;
            return to_host(address & !page_mask | iova & page_mask, write);
        }
        table = to_host(address, false)?;
    }
    unreachable!("the loop returns at level 1")
}

impl Registers for VtdModel {
    fn read32(&self, offset: usize) -> u32 {
        self.state.borrow().read32(offset)
    }

    fn write32(&self, offset: usize, value: u32) {
        let mut state = self.state.borrow_mut();
        state.writes.push(RegisterWrite { offset, value: value as u64, width: 4 });
        let guarded = state.dma_guarded();
        state.write32(&self.memory, offset, value);
        state.dma_exposed |= guarded && !state.dma_guarded();
    }

    fn read64(&self, offset: usize) -> u64 {
        let state = self.state.borrow();
        assert!(state.is_64bit_register(offset), "8-byte read of 32-bit register {offset:#x}: QEMU aborts");
        state.read64(offset)
    }

    fn write64(&self, offset: usize, value: u64) {
        let mut state = self.state.borrow_mut();
        assert!(state.is_64bit_register(offset), "8-byte write of 32-bit register {offset:#x}: QEMU aborts");
        state.writes.push(RegisterWrite { offset, value, width: 8 });
        state.write64(&self.memory, offset, value);
    }
}

