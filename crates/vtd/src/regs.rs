//! Register map of one VT-d remapping unit (VT-d spec chapter 11, "Translation Hardware
//! Interface") and typed decoders for the capability registers.
//!
//! Access width matters: QEMU's model aborts the whole VM on an 8-byte access to a 32-bit
//! register (FSTS, FECTL, ICS, ...). Every offset below is documented with its width, and the
//! unit only ever uses `read32`/`write32` on the 32-bit ones. The 64-bit registers (CAP, ECAP,
//! RTADDR, CCMD, IOTLB, IQH/IQT/IQA, IRTA, fault records) may be accessed with 8 bytes.

use hwio::bits::get;

/// Version register (32-bit), spec 11.4.1; fields in [`ver`].
pub const VER: usize = 0x000;
/// Capability register (64-bit), spec 11.4.2.
pub const CAP: usize = 0x008;
/// Extended capability register (64-bit), spec 11.4.3.
pub const ECAP: usize = 0x010;
/// Global command register (32-bit, write), spec 11.4.4.
pub const GCMD: usize = 0x018;
/// Global status register (32-bit, read), spec 11.4.5.
pub const GSTS: usize = 0x01c;
/// Root table address register (64-bit), spec 11.4.6.
pub const RTADDR: usize = 0x020;
/// Context command register (64-bit), spec 11.4.7.
pub const CCMD: usize = 0x028;
/// Fault status register (32-bit), spec 11.4.9.1.
pub const FSTS: usize = 0x034;
/// Fault event control register (32-bit), spec 11.4.9.2.
pub const FECTL: usize = 0x038;
/// Fault event data register (32-bit), spec 11.4.9.3.
pub const FEDATA: usize = 0x03c;
/// Fault event address register (32-bit), spec 11.4.9.4.
pub const FEADDR: usize = 0x040;
/// Fault event upper address register (32-bit), spec 11.4.9.5.
pub const FEUADDR: usize = 0x044;
/// Protected memory enable register (32-bit), spec 11.4.13.1.
pub const PMEN: usize = 0x064;
/// Invalidation queue head (64-bit), spec 11.4.10.1.
pub const IQH: usize = 0x080;
/// Invalidation queue tail (64-bit), spec 11.4.10.2.
pub const IQT: usize = 0x088;
/// Invalidation queue address (64-bit), spec 11.4.10.3.
pub const IQA: usize = 0x090;
/// Invalidation completion status (32-bit), spec 11.4.10.4.
pub const ICS: usize = 0x09c;
/// Invalidation completion event control (32-bit), spec 11.4.10.5.
pub const IECTL: usize = 0x0a0;
/// Interrupt remapping table address (64-bit), spec 11.4.11.1.
pub const IRTA: usize = 0x0b8;
/// Page request queue head (64-bit), spec 11.4.12.
pub const PQH: usize = 0x0c0;
/// Page request queue tail (64-bit).
pub const PQT: usize = 0x0c8;
/// Page request queue address (64-bit).
pub const PQA: usize = 0x0d0;
/// Page request status (32-bit).
pub const PRS: usize = 0x0dc;
/// Page request event control (32-bit): IM bit 31, IP bit 30, as [`event_control`].
pub const PECTL: usize = 0x0e0;
/// Page request event data (32-bit).
pub const PEDATA: usize = 0x0e4;
/// Page request event address (32-bit).
pub const PEADDR: usize = 0x0e8;
/// Page request event upper address (32-bit).
pub const PEUADDR: usize = 0x0ec;

/// Offset of the IOTLB registers from the IRO field: IVA at `iro`, IOTLB_REG at `iro + 8`
/// (spec 11.4.8). Both are 64-bit.
pub const IVA_FROM_IRO: usize = 0x0;
/// See [`IVA_FROM_IRO`].
pub const IOTLB_FROM_IRO: usize = 0x8;
/// Size of one fault recording register (128-bit), spec 11.4.14.
pub const FAULT_RECORD_SIZE: usize = 16;

/// VER fields (spec 11.4.1).
pub mod ver {
    use hwio::bits::Field;
    /// MAX, bits 7:4: major version.
    pub const MAJOR: Field = Field::new(4, 4);
    /// MIN, bits 3:0: minor version.
    pub const MINOR: Field = Field::new(0, 4);
}

/// GCMD/GSTS bit positions (spec 11.4.4/11.4.5). The command bit and its status bit share a
/// position.
pub mod gcmd {
    /// Translation enable / TES.
    pub const TE: u32 = 1 << 31;
    /// Set root table pointer (one-shot) / RTPS.
    pub const SRTP: u32 = 1 << 30;
    /// Set fault log (one-shot, deprecated) / FLS.
    pub const SFL: u32 = 1 << 29;
    /// Enable advanced fault logging / AFLS.
    pub const EAFL: u32 = 1 << 28;
    /// Write buffer flush (one-shot) / WBFS (status clears when done).
    pub const WBF: u32 = 1 << 27;
    /// Queued invalidation enable / QIES.
    pub const QIE: u32 = 1 << 26;
    /// Interrupt remapping enable / IRES.
    pub const IRE: u32 = 1 << 25;
    /// Set interrupt remap table pointer (one-shot) / IRTPS.
    pub const SIRTP: u32 = 1 << 24;
    /// Compatibility format interrupt / CFIS.
    pub const CFI: u32 = 1 << 23;
    /// The status bits that mirror persistent enables. The one-shot ones (RTPS, FLS, WBFS,
    /// IRTPS) must be masked out when GSTS is turned back into a GCMD value, or every command
    /// write would re-issue them.
    pub const PERSISTENT: u32 = TE | EAFL | QIE | IRE | CFI;
}

/// RTADDR fields (spec 11.4.6).
pub mod rtaddr {
    use hwio::bits::{Field, addr_mask};
    /// RTA, bits 63:12: root table address (4 KiB aligned).
    pub const ADDRESS: u64 = addr_mask(12, 63);
    /// TTM, bits 11:10: translation table mode, 00 legacy, 01 scalable, 11 abort-DMA.
    pub const TTM: Field = Field::new(10, 2);
    /// RTADDR with TTM = 00, in place.
    pub const TTM_LEGACY: u64 = TTM.place(0b00);
    /// RTADDR with TTM = 01, in place.
    pub const TTM_SCALABLE: u64 = TTM.place(0b01);
}

/// CCMD fields (spec 11.4.7).
pub mod ccmd {
    use hwio::bits::Field;
    /// ICC, bit 63: invalidate context cache; set by software, cleared by hardware on completion.
    pub const ICC: u64 = 1 << 63;
    /// CIRG, bits 62:61: context invalidation request granularity.
    pub const CIRG: Field = Field::new(61, 2);
    /// CAIG, bits 60:59: actual granularity reported by hardware (00 = request not performed).
    pub const CAIG: Field = Field::new(59, 2);
    /// FM, bits 33:32: function mask.
    pub const FM: Field = Field::new(32, 2);
    /// SID, bits 31:16: source-id.
    pub const SID: Field = Field::new(16, 16);
    /// DID, bits 15:0: domain-id.
    pub const DID: Field = Field::new(0, 16);
    /// Granularities (CIRG / CAIG values).
    pub const GLOBAL: u64 = 1;
    pub const DOMAIN: u64 = 2;
    pub const DEVICE: u64 = 3;
}

/// IOTLB_REG and IVA_REG fields (spec 11.4.8.1/11.4.8.2).
pub mod iotlb {
    use hwio::bits::{Field, addr_mask};
    /// IVT, bit 63: invalidate IOTLB; set by software, cleared by hardware on completion.
    pub const IVT: u64 = 1 << 63;
    /// IIRG, bits 61:60: request granularity.
    pub const IIRG: Field = Field::new(60, 2);
    /// IAIG, bits 58:57: actual granularity (00 = request not performed).
    pub const IAIG: Field = Field::new(57, 2);
    /// DR (bit 49) and DW (bit 48): drain reads and writes, honoured when CAP.DRD/DWD.
    pub const DR: u64 = 1 << 49;
    pub const DW: u64 = 1 << 48;
    /// DID, bits 47:32: domain-id.
    pub const DID: Field = Field::new(32, 16);
    /// Granularities (IIRG / IAIG values).
    pub const GLOBAL: u64 = 1;
    pub const DOMAIN: u64 = 2;
    pub const PAGE: u64 = 3;
    /// IVA_REG ADDR, bits 63:12: the page-aligned address to invalidate.
    pub const IVA_ADDRESS: u64 = addr_mask(12, 63);
    /// IVA_REG IH, bit 6: invalidation hint (leaf entries only).
    pub const IVA_IH: u64 = 1 << 6;
    /// IVA_REG AM, bits 5:0: address mask (2^AM pages).
    pub const IVA_AM: Field = Field::new(0, 6);
}

/// FSTS bits (spec 11.4.9.1). PFO, IQE, ICE and ITE are write-1-to-clear.
pub mod fsts {
    /// Primary fault overflow.
    pub const PFO: u32 = 1 << 0;
    /// Primary pending fault (read-only mirror of the records' F bits).
    pub const PPF: u32 = 1 << 1;
    /// Invalidation queue error.
    pub const IQE: u32 = 1 << 4;
    /// Invalidation completion error.
    pub const ICE: u32 = 1 << 5;
    /// Invalidation time-out error.
    pub const ITE: u32 = 1 << 6;
    /// FRI, bits 15:8: fault record index.
    pub const FRI: hwio::bits::Field = hwio::bits::Field::new(8, 8);
}

/// FECTL/IECTL bits (spec 11.4.9.2, 11.4.10.5).
pub mod event_control {
    /// Interrupt mask. Resets to 1 (masked).
    pub const IM: u32 = 1 << 31;
    /// Interrupt pending.
    pub const IP: u32 = 1 << 30;
}

/// PMEN bits (spec 11.4.13.1).
pub mod pmen {
    /// Enable protected memory.
    pub const EPM: u32 = 1 << 31;
    /// Protected region status.
    pub const PRS: u32 = 1 << 0;
}

/// IQA fields (spec 11.4.10.3).
pub mod iqa {
    use hwio::bits::{Field, addr_mask};
    /// IQA, bits 63:12: queue base address (4 KiB aligned).
    pub const ADDRESS: u64 = addr_mask(12, 63);
    /// DW, bit 11: descriptor width, 0 = 128-bit, 1 = 256-bit (only valid with ECAP.SMTS).
    pub const DW_256: u64 = 1 << 11;
    /// QS, bits 2:0: queue size, the queue holds 2^QS pages.
    pub const QS: Field = Field::new(0, 3);
}

/// ICS bits (spec 11.4.10.4).
pub mod ics {
    /// Invalidation wait descriptor complete (set by a wait descriptor with IF=1).
    pub const IWC: u32 = 1 << 0;
}

/// IRTA fields (spec 11.4.11.1).
pub mod irta {
    use hwio::bits::{Field, addr_mask};
    /// IRTA, bits 63:12: table base address (4 KiB aligned).
    pub const ADDRESS: u64 = addr_mask(12, 63);
    /// EIME, bit 11: extended interrupt mode enable (x2APIC 32-bit destination IDs).
    pub const EIME: u64 = 1 << 11;
    /// S, bits 3:0: table size, the table holds 2^(S+1) entries.
    pub const S: Field = Field::new(0, 4);
}

/// Capability register, decoded (spec 11.4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capability(pub u64);

impl Capability {
    fn bit(self, n: u32) -> bool {
        get(self.0, n, 1) == 1
    }
    fn field(self, shift: u32, width: u32) -> u64 {
        get(self.0, shift, width)
    }

    /// ND, bits 2:0: the unit supports 2^(4 + 2 * ND) domain-ids.
    pub fn domain_id_bits(self) -> u32 {
        4 + 2 * self.field(0, 3) as u32
    }
    /// Number of domain-ids, including any reserved ones.
    pub fn domain_count(self) -> u32 {
        1 << self.domain_id_bits()
    }
    /// AFL, bit 3: advanced fault logging.
    pub fn advanced_fault_logging(self) -> bool {
        self.bit(3)
    }
    /// RWBF, bit 4: software must flush the write buffer after table updates.
    pub fn requires_write_buffer_flush(self) -> bool {
        self.bit(4)
    }
    /// PLMR, bit 5: protected low-memory region supported.
    pub fn protected_low_region(self) -> bool {
        self.bit(5)
    }
    /// PHMR, bit 6: protected high-memory region supported.
    pub fn protected_high_region(self) -> bool {
        self.bit(6)
    }
    /// CM, bit 7: caching mode. Hardware (typically a virtual IOMMU) may cache not-present and
    /// erroneous entries, so every not-present to present change needs an invalidation too,
    /// and domain-id 0 is reserved (spec 6.1).
    pub fn caching_mode(self) -> bool {
        self.bit(7)
    }
    /// SAGAW, bits 12:8, raw. Bit 1: 39-bit/3-level, bit 2: 48-bit/4-level, bit 3:
    /// 57-bit/5-level.
    pub fn sagaw(self) -> u8 {
        self.field(8, 5) as u8
    }
    /// Whether second-level tables with `levels` levels (3, 4 or 5) are supported.
    pub fn supports_second_level_levels(self, levels: u8) -> bool {
        matches!(levels, 3..=5) && self.sagaw() >> (levels - 2) & 1 == 1
    }
    /// MGAW, bits 21:16: maximum guest address width in bits (field + 1).
    pub fn max_guest_address_width(self) -> u32 {
        self.field(16, 6) as u32 + 1
    }
    /// ZLR, bit 22: zero-length reads supported.
    pub fn zero_length_read(self) -> bool {
        self.bit(22)
    }
    /// FRO, bits 33:24: byte offset of the first fault recording register (field * 16).
    pub fn fault_recording_offset(self) -> usize {
        self.field(24, 10) as usize * 16
    }
    /// SLLPS, bits 37:34: second-level large page sizes (bit 0: 2 MiB, bit 1: 1 GiB).
    pub fn second_level_large_pages(self) -> u8 {
        self.field(34, 4) as u8
    }
    pub fn second_level_2m(self) -> bool {
        self.second_level_large_pages() & 1 != 0
    }
    pub fn second_level_1g(self) -> bool {
        self.second_level_large_pages() & 2 != 0
    }
    /// PSI, bit 39: page-selective IOTLB invalidation supported.
    pub fn page_selective_invalidation(self) -> bool {
        self.bit(39)
    }
    /// NFR, bits 47:40: number of fault recording registers (field + 1).
    pub fn fault_record_count(self) -> usize {
        self.field(40, 8) as usize + 1
    }
    /// MAMV, bits 53:48: largest address mask a page-selective invalidation accepts.
    pub fn max_address_mask(self) -> u8 {
        self.field(48, 6) as u8
    }
    /// DWD, bit 54: write draining.
    pub fn write_draining(self) -> bool {
        self.bit(54)
    }
    /// DRD, bit 55: read draining.
    pub fn read_draining(self) -> bool {
        self.bit(55)
    }
    /// FL1GP, bit 56: first-level 1 GiB pages.
    pub fn first_level_1g(self) -> bool {
        self.bit(56)
    }
    /// PI, bit 59: posted interrupts.
    pub fn posted_interrupts(self) -> bool {
        self.bit(59)
    }
    /// FL5LP, bit 60: first-level 5-level paging.
    pub fn first_level_5_level(self) -> bool {
        self.bit(60)
    }
    /// ESIRTPS, bit 62: SIRTP also invalidates the interrupt entry cache.
    pub fn sirtp_invalidates(self) -> bool {
        self.bit(62)
    }
    /// ESRTPS, bit 63: SRTP also invalidates all translation caches.
    pub fn srtp_invalidates(self) -> bool {
        self.bit(63)
    }
}

/// Extended capability register, decoded (spec 11.4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtendedCapability(pub u64);

impl ExtendedCapability {
    fn bit(self, n: u32) -> bool {
        get(self.0, n, 1) == 1
    }
    fn field(self, shift: u32, width: u32) -> u64 {
        get(self.0, shift, width)
    }

    /// C, bit 0: page walks snoop CPU caches. When clear (QEMU's default), every table write
    /// must be flushed to memory before hardware may read it.
    pub fn coherent(self) -> bool {
        self.bit(0)
    }
    /// QI, bit 1: queued invalidation.
    pub fn queued_invalidation(self) -> bool {
        self.bit(1)
    }
    /// DT, bit 2: device-TLBs (ATS).
    pub fn device_tlb(self) -> bool {
        self.bit(2)
    }
    /// IR, bit 3: interrupt remapping.
    pub fn interrupt_remapping(self) -> bool {
        self.bit(3)
    }
    /// EIM, bit 4: extended (x2APIC) interrupt mode.
    pub fn extended_interrupt_mode(self) -> bool {
        self.bit(4)
    }
    /// PT, bit 6: pass-through translation type.
    pub fn pass_through(self) -> bool {
        self.bit(6)
    }
    /// SC, bit 7: snoop control.
    pub fn snoop_control(self) -> bool {
        self.bit(7)
    }
    /// IRO, bits 17:8: byte offset of IVA_REG (field * 16); IOTLB_REG follows at +8.
    pub fn iotlb_register_offset(self) -> usize {
        self.field(8, 10) as usize * 16
    }
    /// MHMV, bits 23:20: largest interrupt-entry-cache handle mask.
    pub fn max_handle_mask(self) -> u8 {
        self.field(20, 4) as u8
    }
    /// MTS, bit 25: memory type support.
    pub fn memory_type(self) -> bool {
        self.bit(25)
    }
    /// NEST, bit 26: nested (first-level over second-level) translation.
    pub fn nested(self) -> bool {
        self.bit(26)
    }
    /// PRS, bit 29: page requests.
    pub fn page_requests(self) -> bool {
        self.bit(29)
    }
    /// ERS, bit 30: execute requests.
    pub fn execute_requests(self) -> bool {
        self.bit(30)
    }
    /// SRS, bit 31: supervisor requests.
    pub fn supervisor_requests(self) -> bool {
        self.bit(31)
    }
    /// NWFS, bit 33: no write flag.
    pub fn no_write_flag(self) -> bool {
        self.bit(33)
    }
    /// EAFS, bit 34: extended accessed flag.
    pub fn extended_accessed_flag(self) -> bool {
        self.bit(34)
    }
    /// PSS, bits 39:35: supported PASID width in bits (field + 1).
    ///
    /// QEMU 10.0.2 quirk: `x-pasid-mode=on` sets ECAP.PASID but leaves PSS at 0, which read
    /// literally means 1-bit PASIDs; the unit therefore bounds PASIDs by its own PASID directory
    /// size, not by this field.
    pub fn pasid_width(self) -> u32 {
        self.field(35, 5) as u32 + 1
    }
    /// PASID, bit 40: requests-with-PASID.
    pub fn pasid(self) -> bool {
        self.bit(40)
    }
    /// DIT, bit 41: device-TLB invalidation throttling.
    pub fn devtlb_throttling(self) -> bool {
        self.bit(41)
    }
    /// PDS, bit 42: page-request drain.
    pub fn page_drain(self) -> bool {
        self.bit(42)
    }
    /// SMTS, bit 43: scalable-mode translation.
    pub fn scalable_mode(self) -> bool {
        self.bit(43)
    }
    /// VCS, bit 44: virtual command.
    pub fn virtual_command(self) -> bool {
        self.bit(44)
    }
    /// SLADS, bit 45: second-level accessed/dirty (dirty tracking).
    pub fn second_level_dirty(self) -> bool {
        self.bit(45)
    }
    /// SLTS, bit 46: second-level translation in scalable mode.
    pub fn second_level(self) -> bool {
        self.bit(46)
    }
    /// FLTS, bit 47: first-level translation in scalable mode.
    pub fn first_level(self) -> bool {
        self.bit(47)
    }
    /// SMPWCS, bit 48: scalable-mode page-walk coherency.
    pub fn scalable_walk_coherent(self) -> bool {
        self.bit(48)
    }
    /// RPS, bit 49: RID_PASID field supported (otherwise RID_PASID is fixed at 0).
    pub fn rid_pasid(self) -> bool {
        self.bit(49)
    }
}

/// PQH and PQT: a byte offset into the queue, in whole 32-byte descriptors.
pub mod page_queue_index {
    use hwio::bits::addr_mask;
    /// PQH / PQT, bits 18:5: the descriptor offset (bytes; the low 5 bits are zero).
    pub const OFFSET: u64 = addr_mask(5, 18);
}

/// PQA bits.
pub mod pqa {
    use hwio::bits::{addr_mask, Field};
    /// PQA, bits 63:12: 4 KiB-aligned queue base.
    pub const ADDRESS: u64 = addr_mask(12, 63);
    /// PQS, bits 2:0: the queue has 2^PQS 4 KiB pages.
    pub const PQS: Field = Field::new(0, 3);
}

/// PRS_REG bits (both write 1 to clear).
pub mod prs {
    /// PPR, bit 0: pending page request (set when the unit writes a descriptor).
    pub const PPR: u32 = 1 << 0;
    /// PRO, bit 1: page request overflow (a request found the queue full).
    pub const PRO: u32 = 1 << 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    const QEMU_CAP: u64 = 0x00d2_008c_222f_0606;
    const QEMU_CAP_AW39: u64 = 0x00d2_008c_2226_0206;
    const QEMU_CAP_FLTS: u64 = 0x01d2_008c_222f_0606;
    const QEMU_ECAP_LEGACY: u64 = 0x0000_0000_00f0_0f4a;
    const QEMU_ECAP_SCALABLE: u64 = 0x0000_4800_80f0_0f4a;
    const QEMU_ECAP_FLTS: u64 = 0x0000_8800_00f0_0f4a;

    #[test]
    fn qemu_default_cap() {
        let cap = Capability(QEMU_CAP);
        assert_eq!(cap.domain_id_bits(), 16);
        assert_eq!(cap.domain_count(), 65536);
        assert!(!cap.caching_mode());
        assert!(!cap.requires_write_buffer_flush());
        assert!(!cap.protected_low_region() && !cap.protected_high_region());
        assert_eq!(cap.sagaw(), 0b00110);
        assert!(!cap.supports_second_level_levels(2));
        assert!(cap.supports_second_level_levels(3));
        assert!(cap.supports_second_level_levels(4));
        assert!(!cap.supports_second_level_levels(5));
        assert_eq!(cap.max_guest_address_width(), 48);
        assert_eq!(cap.fault_recording_offset(), 0x220);
        assert_eq!(cap.fault_record_count(), 1);
        assert!(cap.second_level_2m() && cap.second_level_1g());
        assert!(cap.page_selective_invalidation());
        assert_eq!(cap.max_address_mask(), 18);
        assert!(cap.write_draining() && cap.read_draining());
        assert!(!cap.first_level_1g());
        assert!(!cap.first_level_5_level());
    }

    #[test]
    fn qemu_aw39_cap() {
        let cap = Capability(QEMU_CAP_AW39);
        assert!(cap.supports_second_level_levels(3));
        assert!(!cap.supports_second_level_levels(4));
        assert_eq!(cap.max_guest_address_width(), 39);
        assert_eq!(cap.fault_recording_offset(), 0x220);
        assert_eq!(cap.domain_id_bits(), 16);
    }

    #[test]
    fn qemu_flts_cap_adds_first_level_1g() {
        let cap = Capability(QEMU_CAP_FLTS);
        assert!(cap.first_level_1g());
        assert_eq!(cap.max_address_mask(), 18);
    }

    #[test]
    fn caching_mode_bit() {
        assert!(Capability(QEMU_CAP | 1 << 7).caching_mode());
    }

    #[test]
    fn qemu_legacy_ecap() {
        let ecap = ExtendedCapability(QEMU_ECAP_LEGACY);
        assert!(!ecap.coherent());
        assert!(ecap.queued_invalidation());
        assert!(!ecap.device_tlb());
        assert!(ecap.interrupt_remapping());
        assert!(!ecap.extended_interrupt_mode());
        assert!(ecap.pass_through());
        assert_eq!(ecap.iotlb_register_offset(), 0xf0);
        assert_eq!(ecap.max_handle_mask(), 0xf);
        assert!(!ecap.scalable_mode());
        assert!(!ecap.pasid());
        assert!(!ecap.first_level() && !ecap.second_level() && !ecap.nested());
    }

    #[test]
    fn qemu_scalable_ecap() {
        let ecap = ExtendedCapability(QEMU_ECAP_SCALABLE);
        assert!(ecap.scalable_mode());
        assert!(ecap.second_level());
        assert!(!ecap.first_level());
        assert!(ecap.supervisor_requests());
        assert!(ecap.queued_invalidation() && ecap.pass_through());
        assert_eq!(ecap.iotlb_register_offset(), 0xf0);
        assert!(!ecap.pasid());
        let with_pasid = ExtendedCapability(QEMU_ECAP_SCALABLE | 1 << 40);
        assert!(with_pasid.pasid());
        // QEMU 10.0.2 leaves PSS at zero even with PASID support.
        assert_eq!(with_pasid.pasid_width(), 1);
    }

    #[test]
    fn qemu_flts_ecap() {
        let ecap = ExtendedCapability(QEMU_ECAP_FLTS);
        assert!(ecap.scalable_mode());
        assert!(ecap.first_level());
        assert!(!ecap.second_level());
        assert!(!ecap.supervisor_requests());
        assert!(!ecap.nested());
    }
}
