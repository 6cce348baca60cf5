//! Stream table entries (IHI 0070, section 5.2) and level-1 stream table descriptors (5.1).
//!
//! An STE is 64 bytes (eight 64-bit words). Word 0 holds V, Config and the stage-1 context pointer;
//! word 1 the stage-1 walk attributes and stream overrides; word 2 the stage-2 "VTCR" fields and
//! VMID; word 3 the stage-2 table base. The SMMU reads each word with 64-bit single-copy atomicity
//! but the STE as a whole without any atomicity, which is why the driver orders its writes (see
//! `Smmu::install_ste`).

use hwio::{address_fields, flag_fields, numeric_fields, reserved_bits};

use crate::regs::Granule;

/// STE.Config (word 0 bits [3:1]): bit 2 enables translation, bit 0 stage 1, bit 1 stage 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamConfig {
    /// 0b000: every transaction is aborted and no event is recorded.
    Abort = 0b000,
    /// 0b100: both stages bypassed.
    Bypass = 0b100,
    /// 0b101: stage 1 translates, stage 2 bypassed.
    Stage1 = 0b101,
    /// 0b110: stage 1 bypassed, stage 2 translates.
    Stage2 = 0b110,
    /// 0b111: stage 1 then stage 2 (nested); CD and stage-1 table addresses are IPAs.
    Nested = 0b111,
}

impl StreamConfig {
    /// Decodes Config; 0b001..0b011 are reserved (C_BAD_STE).
    pub const fn from_bits(bits: u64) -> Option<StreamConfig> {
        match bits {
            0b000 => Some(StreamConfig::Abort),
            0b100 => Some(StreamConfig::Bypass),
            0b101 => Some(StreamConfig::Stage1),
            0b110 => Some(StreamConfig::Stage2),
            0b111 => Some(StreamConfig::Nested),
            _ => None,
        }
    }
    pub const fn stage1(self) -> bool {
        matches!(self, StreamConfig::Stage1 | StreamConfig::Nested)
    }
    pub const fn stage2(self) -> bool {
        matches!(self, StreamConfig::Stage2 | StreamConfig::Nested)
    }
}

/// STE.S1DSS (word 1 bits [1:0]): what non-substream traffic does when S1CDMax > 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultSubstream {
    /// 0b00: terminate (F_STREAM_DISABLED).
    Terminate = 0,
    /// 0b01: stage 1 bypassed.
    Bypass = 1,
    /// 0b10: use the CD of substream 0.
    Substream0 = 2,
}

/// STE.STRW (word 1 bits [31:30]): translation regime of stage 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TranslationRegime {
    /// 0b00: Non-secure EL1 (the only choice with IDR0.HYP = 0).
    NonSecureEl1 = 0,
    /// 0b10: EL2 (needs IDR0.HYP).
    El2 = 2,
}

/// STE.SHCFG value 0b01: use the shareability of the incoming transaction (for bypass streams).
pub const SHCFG_INCOMING: u64 = 0b01;

/// One 64-byte stream table entry.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
#[repr(C, align(64))]
pub struct Ste {
    pub words: [u64; 8],
}

const _: () = assert!(core::mem::size_of::<Ste>() == 64);

reserved_bits! {
    Ste, words 8:
    /// RES0 between S1ContextPtr and S1CDMax (STE[58:52]).
    word 0, bits 58:52;
    /// RES0 above S2TTB (STE[255:244]).
    word 3, bits 63:52;
}

impl core::fmt::Debug for Ste {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Ste{:016x?}", self.words)
    }
}

impl Ste {
    /// Size of an STE in bytes.
    pub const SIZE: usize = 64;

    /// V=1, Config=abort: the driver's default for every StreamID (default deny).
    pub fn abort() -> Ste {
        let mut ste = Ste::default();
        ste.set_valid(true).set_config(StreamConfig::Abort);
        ste
    }

    /// V=1, Config=bypass, shareability taken from the incoming transaction.
    pub fn bypass() -> Ste {
        let mut ste = Ste::default();
        ste.set_valid(true).set_config(StreamConfig::Bypass).set_shcfg(SHCFG_INCOMING);
        ste
    }

    /// Decoded Config, `None` when reserved.
    pub const fn config(&self) -> Option<StreamConfig> {
        StreamConfig::from_bits(self.config_bits())
    }
    pub fn set_config(&mut self, config: StreamConfig) -> &mut Self {
        self.set_config_bits(config as u64)
    }

    /// Whether the SMMU could translate or bypass with this STE: V=1 and Config not abort. Such an
    /// STE must never be observed half-written.
    pub fn is_live(&self) -> bool {
        self.valid() && !matches!(self.config(), Some(StreamConfig::Abort))
    }

    /// Stage-2 translation granule (S2TG), `None` when reserved.
    pub const fn s2_granule(&self) -> Option<Granule> {
        Granule::from_tg_encoding(self.s2tg())
    }

    flag_fields! {
        /// V (word 0 bit 0): the STE is valid; V=0 gives C_BAD_STE.
        valid, set_valid: word 0, bit 0;
        /// MEV (word 1 bit 19): merge events arising from the same fault.
        mev, set_mev: word 1, bit 19;
        /// S1STALLD (word 1 bit 27): stall disable for stage-1 faults.
        s1_stall_disable, set_s1_stall_disable: word 1, bit 27;
        /// S2AA64 (word 2 bit 51): stage-2 tables are VMSAv8-64. Must be 1: QEMU aborts on an STE
        /// with stage 2 enabled and S2AA64=0.
        s2_aa64, set_s2_aa64: word 2, bit 51;
        /// S2ENDI (word 2 bit 52): big-endian stage-2 tables.
        s2_endi, set_s2_endi: word 2, bit 52;
        /// S2AFFD (word 2 bit 53): access flag fault disable for stage 2.
        s2_affd, set_s2_affd: word 2, bit 53;
        /// S2PTW (word 2 bit 54): protected table walk (stage-1 walks to device memory fault).
        s2_ptw, set_s2_ptw: word 2, bit 54;
        /// S2HD (word 2 bit 55): hardware dirty-state update at stage 2.
        s2_hd, set_s2_hd: word 2, bit 55;
        /// S2HA (word 2 bit 56): hardware access-flag update at stage 2.
        s2_ha, set_s2_ha: word 2, bit 56;
        /// S2S (word 2 bit 57): stall stage-2 faults.
        s2_stall, set_s2_stall: word 2, bit 57;
        /// S2R (word 2 bit 58): record stage-2 translation-class faults in the event queue.
        s2_record, set_s2_record: word 2, bit 58;
    }

    numeric_fields! {
        /// Config (word 0 bits [3:1]), raw.
        config_bits, set_config_bits: word 0, bits 1, width 3;
        /// S1Fmt (word 0 bits [5:4]): 0b00 = linear CD table (or single CD when S1CDMax = 0).
        s1_fmt, set_s1_fmt: word 0, bits 4, width 2;
        /// S1CDMax (word 0 bits [63:59]): log2 of the number of CDs; must be 0 on QEMU.
        s1_cd_max, set_s1_cd_max: word 0, bits 59, width 5;
        /// S1DSS (word 1 bits [1:0]), see [`DefaultSubstream`].
        s1dss, set_s1dss: word 1, bits 0, width 2;
        /// S1CIR (word 1 bits [3:2]): inner cacheability of CD fetches.
        s1_cir, set_s1_cir: word 1, bits 2, width 2;
        /// S1COR (word 1 bits [5:4]): outer cacheability of CD fetches.
        s1_cor, set_s1_cor: word 1, bits 4, width 2;
        /// S1CSH (word 1 bits [7:6]): shareability of CD fetches.
        s1_csh, set_s1_csh: word 1, bits 6, width 2;
        /// EATS (word 1 bits [29:28]): ATS behaviour; 0 = ATS translation requests aborted.
        eats, set_eats: word 1, bits 28, width 2;
        /// STRW (word 1 bits [31:30]), see [`TranslationRegime`].
        strw, set_strw: word 1, bits 30, width 2;
        /// SHCFG (word 1 bits [45:44]): shareability override for bypassed traffic.
        shcfg, set_shcfg: word 1, bits 44, width 2;
        /// S2VMID (word 2 bits [15:0]). Also tags stage-1-only TLB entries when IDR0.S2P = 1.
        s2vmid, set_s2vmid: word 2, bits 0, width 16;
        /// S2T0SZ (word 2 bits [37:32]): IPA size is 64 - S2T0SZ bits.
        s2t0sz, set_s2t0sz: word 2, bits 32, width 6;
        /// S2SL0 (word 2 bits [39:38]): starting level, encoded relative to the granule.
        s2sl0, set_s2sl0: word 2, bits 38, width 2;
        /// S2IR0 (word 2 bits [41:40]): inner cacheability of stage-2 walks.
        s2ir0, set_s2ir0: word 2, bits 40, width 2;
        /// S2OR0 (word 2 bits [43:42]): outer cacheability of stage-2 walks.
        s2or0, set_s2or0: word 2, bits 42, width 2;
        /// S2SH0 (word 2 bits [45:44]): shareability of stage-2 walks.
        s2sh0, set_s2sh0: word 2, bits 44, width 2;
        /// S2TG (word 2 bits [47:46]): stage-2 granule.
        s2tg, set_s2tg: word 2, bits 46, width 2;
        /// S2PS (word 2 bits [50:48]): stage-2 output (physical) address size, IDR5.OAS encoding.
        s2ps, set_s2ps: word 2, bits 48, width 3;
    }

    address_fields! {
        /// S1ContextPtr (word 0 bits [51:6]): address of the CD (an IPA when nested).
        s1_context_ptr, set_s1_context_ptr: word 0, bits 51:6;
        /// S2TTB (word 3 bits [51:4]): stage-2 translation table base.
        s2ttb, set_s2ttb: word 3, bits 51:4;
    }
}

/// A level-1 stream table descriptor (spec 5.1, 8 bytes): Span [4:0], L2Ptr [51:6].
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
#[repr(transparent)]
pub struct L1Descriptor {
    pub words: [u64; 1],
}

const _: () = assert!(core::mem::size_of::<L1Descriptor>() == 8);

reserved_bits! {
    L1Descriptor, words 1:
    /// RES0 between Span and L2Ptr.
    word 0, bits 5:5;
    /// RES0 above L2Ptr.
    word 0, bits 63:52;
}

impl L1Descriptor {
    /// A descriptor covering a level-2 table of 2^`split` STEs at `l2_phys`.
    pub fn new(l2_phys: u64, split: u32) -> L1Descriptor {
        let mut d = L1Descriptor::default();
        // Span = n means the level-2 table holds 2^(n-1) STEs; Span = 0 marks the descriptor invalid.
        d.set_span(split as u64 + 1).set_l2_ptr(l2_phys);
        d
    }

    numeric_fields! {
        /// Span (bits [4:0]): the level-2 table holds 2^(Span-1) STEs; 0 = invalid.
        span, set_span: word 0, bits 0, width 5;
    }
    address_fields! {
        /// L2Ptr (bits [51:6]): level-2 table address, aligned to the table's size.
        l2_ptr, set_l2_ptr: word 0, bits 51:6;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hwio::bits::{Layout, ReservedBitsSet};

    #[test]
    fn abort_and_bypass_entries_have_spec_encodings() {
        assert_eq!(Ste::abort().words[0], 0b0001);
        assert!(!Ste::abort().is_live());
        let bypass = Ste::bypass();
        assert_eq!(bypass.words[0], 0b1001);
        assert_eq!(bypass.words[1], 1 << 44);
        assert!(bypass.is_live());
    }

    #[test]
    fn stage2_fields_land_in_word2() {
        let mut ste = Ste::default();
        ste.set_s2vmid(0x1234)
            .set_s2t0sz(24)
            .set_s2sl0(1)
            .set_s2tg(Granule::Size16K.tg_encoding())
            .set_s2ps(4)
            .set_s2_aa64(true)
            .set_s2_record(true)
            .set_s2ttb(0x8_1234_5000);
        assert_eq!(ste.words[2], 0x1234 | 24 << 32 | 1 << 38 | 0b10 << 46 | 4 << 48 | 1 << 51 | 1 << 58);
        assert_eq!(ste.words[3], 0x8_1234_5000);
        assert_eq!(ste.s2_granule(), Some(Granule::Size16K));
        assert_eq!(ste.s2t0sz(), 24);
    }

    #[test]
    fn config_and_context_pointer_share_word0() {
        let mut ste = Ste::default();
        ste.set_valid(true).set_config(StreamConfig::Nested).set_s1_context_ptr(0x4000_0040).set_s1_cd_max(0);
        assert_eq!(ste.words[0], 0x4000_0040 | 0b1111);
        assert_eq!(ste.config(), Some(StreamConfig::Nested));
        ste.set_config_bits(0b010);
        assert_eq!(ste.config(), None);
        assert_eq!(ste.s1_context_ptr(), 0x4000_0040);
    }

    #[test]
    fn every_field_at_its_widest_leaves_the_reserved_bits_clear() {
        let mut ste = Ste::default();
        ste.set_valid(true)
            .set_config_bits(0b111)
            .set_s1_fmt(0b11)
            .set_s1_cd_max(0x1f)
            .set_s1_context_ptr(hwio::bits::addr_mask(6, 51))
            .set_s1dss(0b11)
            .set_s1_cir(0b11)
            .set_s1_cor(0b11)
            .set_s1_csh(0b11)
            .set_mev(true)
            .set_s1_stall_disable(true)
            .set_eats(0b11)
            .set_strw(0b11)
            .set_shcfg(0b11)
            .set_s2vmid(0xffff)
            .set_s2t0sz(0x3f)
            .set_s2sl0(0b11)
            .set_s2ir0(0b11)
            .set_s2or0(0b11)
            .set_s2sh0(0b11)
            .set_s2tg(0b11)
            .set_s2ps(0b111)
            .set_s2_aa64(true)
            .set_s2_endi(true)
            .set_s2_affd(true)
            .set_s2_ptw(true)
            .set_s2_hd(true)
            .set_s2_ha(true)
            .set_s2_stall(true)
            .set_s2_record(true)
            .set_s2ttb(hwio::bits::addr_mask(4, 51));
        assert_eq!(ste.reserved_bits_set(), None);
        ste.words[3] |= 1 << 60;
        assert_eq!(ste.reserved_bits_set(), Some(ReservedBitsSet { word: 3, bits: 1 << 60 }));
        let mut l1 = L1Descriptor::new(hwio::bits::addr_mask(6, 51), 30);
        assert_eq!(l1.reserved_bits_set(), None);
        l1.words[0] |= 1 << 5;
        assert_eq!(l1.reserved_bits_set(), Some(ReservedBitsSet { word: 0, bits: 1 << 5 }));
    }

    #[test]
    fn l1_descriptor_span_covers_split() {
        let d = L1Descriptor::new(0x4001_0000, 8);
        assert_eq!(d.words[0], 0x4001_0000 | 9);
        assert_eq!(d.span(), 9);
        assert_eq!(d.l2_ptr(), 0x4001_0000);
    }
}
