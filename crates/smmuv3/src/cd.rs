//! Context descriptors (IHI 0070, section 5.4): the stage-1 translation configuration of a stream.
//!
//! A CD is 64 bytes. Word 0 is the "TCR" (sizes, granules, walk attributes, V, IPS, ASID and the
//! fault-handling bits A/R/S); words 1 and 2 the TTB0/TTB1 bases; word 3 MAIR; word 4 AMAIR.
//!
//! This driver gives every stage-1 stream exactly one CD (STE.S1CDMax = 0), because QEMU 10.0.2
//! implements no substreams (IDR1.SSIDSIZE = 0) and rejects S1CDMax != 0 with C_BAD_STE. Only the
//! TTB0 half of the input range is used: EPD1 = 1 disables walks through TTB1 (QEMU validates
//! T1SZ unless EPD1 is set).

use hwio::{address_fields, flag_fields, numeric_fields, reserved_bits};
use crate::config::Stage1Config;
use crate::regs::{address_size_encoding, Granule, WalkAttributes};

/// One 64-byte context descriptor.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
#[repr(C, align(64))]
pub struct ContextDescriptor {
    pub words: [u64; 8],
}

const _: () = assert!(core::mem::size_of::<ContextDescriptor>() == 64);

reserved_bits! {
    ContextDescriptor, words 8:
    /// RES0 between TTB1 and DS (CD[185:184]).
    word 2, bits 57:56;
    /// RES0 above PMG (CD[383:376]).
    word 5, bits 63:56;
}

impl core::fmt::Debug for ContextDescriptor {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "ContextDescriptor{:016x?}", self.words)
    }
}

impl ContextDescriptor {
    /// Size of a CD in bytes.
    pub const SIZE: usize = 64;

    /// The CD for a validated stage-1 configuration. `output_bits` is the IPS actually programmed
    /// (already clamped to the SMMU's OAS by the caller); `walk` the attributes of table walks.
    ///
    /// Fixed choices, each required by the hardware we target:
    /// * AA64 = 1: VMSAv8-64 tables (IDR0.TTF is AArch64-only on QEMU).
    /// * A = 1: faulting transactions are aborted rather than answered with RAZ/WI (required
    ///   because IDR0.TERM_MODEL = 1 on QEMU; QEMU rejects A = 0 with C_BAD_CD).
    /// * S = 0: no stalls (IDR0.STALL_MODEL = 0b01).
    /// * HA = HD = `cfg.hardware_dirty` (validated against IDR0.HTTU; QEMU has none).
    /// * EPD1 = 1: TTB1 unused.
    pub fn for_stage1(cfg: &Stage1Config, output_bits: u32, walk: WalkAttributes) -> ContextDescriptor {
        let mut cd = ContextDescriptor::default();
        cd.set_t0sz(cfg.t0sz as u64)
            .set_tg0(cfg.granule.tg_encoding())
            .set_ir0(walk.inner as u64)
            .set_or0(walk.outer as u64)
            .set_sh0(walk.shareability as u64)
            .set_epd0(false)
            .set_epd1(true)
            .set_endi(false)
            .set_ips(address_size_encoding(output_bits).unwrap_or(0))
            .set_affd(false)
            .set_aa64(true)
            .set_abort_faults(true)
            .set_record_faults(cfg.record_faults)
            .set_stall(false)
            .set_ha(cfg.hardware_dirty)
            .set_hd(cfg.hardware_dirty)
            .set_asid(cfg.asid as u64)
            .set_ttb0(cfg.ttb0)
            .set_mair(cfg.mair)
            .set_valid(true);
        cd
    }

    /// TG0 decoded, `None` when reserved.
    pub const fn granule0(&self) -> Option<Granule> {
        Granule::from_tg_encoding(self.tg0())
    }

    flag_fields! {
        /// EPD0 (word 0 bit 14): walks through TTB0 disabled (translation fault).
        epd0, set_epd0: word 0, bit 14;
        /// ENDI (word 0 bit 15): big-endian tables.
        endi, set_endi: word 0, bit 15;
        /// EPD1 (word 0 bit 30): walks through TTB1 disabled.
        epd1, set_epd1: word 0, bit 30;
        /// V (word 0 bit 31): the CD is valid; V=0 gives C_BAD_CD.
        valid, set_valid: word 0, bit 31;
        /// AFFD (word 0 bit 35): access flag fault disable (AF=0 treated as AF=1).
        affd, set_affd: word 0, bit 35;
        /// WXN (word 0 bit 36): writable implies execute-never.
        wxn, set_wxn: word 0, bit 36;
        /// UWXN (word 0 bit 37): unprivileged writable implies privileged execute-never.
        uwxn, set_uwxn: word 0, bit 37;
        /// PAN (word 0 bit 40): privileged access never.
        pan, set_pan: word 0, bit 40;
        /// AA64 (word 0 bit 41): VMSAv8-64 translation tables.
        aa64, set_aa64: word 0, bit 41;
        /// HD (word 0 bit 42): hardware dirty-state update.
        hd, set_hd: word 0, bit 42;
        /// HA (word 0 bit 43): hardware access-flag update.
        ha, set_ha: word 0, bit 43;
        /// S (word 0 bit 44): stall stage-1 faults.
        stall, set_stall: word 0, bit 44;
        /// R (word 0 bit 45): record stage-1 translation-class faults in the event queue.
        record_faults, set_record_faults: word 0, bit 45;
        /// A (word 0 bit 46): abort faulting transactions (rather than RAZ/WI them).
        abort_faults, set_abort_faults: word 0, bit 46;
        /// ASET (word 0 bit 47): the ASID is not shared with CPU broadcast invalidation.
        aset, set_aset: word 0, bit 47;
    }

    numeric_fields! {
        /// T0SZ (word 0 bits [5:0]): the TTB0 region is 64 - T0SZ bits (16..39 on QEMU).
        t0sz, set_t0sz: word 0, bits 0, width 6;
        /// TG0 (word 0 bits [7:6]).
        tg0, set_tg0: word 0, bits 6, width 2;
        /// IR0 (word 0 bits [9:8]): inner cacheability of TTB0 walks.
        ir0, set_ir0: word 0, bits 8, width 2;
        /// OR0 (word 0 bits [11:10]): outer cacheability of TTB0 walks.
        or0, set_or0: word 0, bits 10, width 2;
        /// SH0 (word 0 bits [13:12]): shareability of TTB0 walks.
        sh0, set_sh0: word 0, bits 12, width 2;
        /// T1SZ (word 0 bits [21:16]).
        t1sz, set_t1sz: word 0, bits 16, width 6;
        /// IPS (word 0 bits [34:32]): intermediate/output address size, IDR5.OAS encoding. Values
        /// above 5 (48 bits) make QEMU 10.0.2 abort, so the driver never programs them.
        ips, set_ips: word 0, bits 32, width 3;
        /// TBI (word 0 bits [39:38]): top-byte ignore for TTB0/TTB1.
        tbi, set_tbi: word 0, bits 38, width 2;
        /// ASID (word 0 bits [63:48]).
        asid, set_asid: word 0, bits 48, width 16;
        /// MAIR (word 3): MAIR0 in bits [31:0], MAIR1 in bits [63:32].
        mair, set_mair: word 3, bits 0, width 64;
    }

    address_fields! {
        /// TTB0 (word 1 bits [51:4]).
        ttb0, set_ttb0: word 1, bits 51:4;
        /// TTB1 (word 2 bits [51:4]).
        ttb1, set_ttb1: word 2, bits 51:4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hwio::bits::{Layout, ReservedBitsSet};

    #[test]
    fn a_reserved_bit_set_is_reported_and_every_field_at_its_widest_leaves_them_clear() {
        let mut cd = ContextDescriptor::default();
        cd.set_t0sz(0x3f).set_tg0(3).set_ir0(3).set_or0(3).set_sh0(3).set_t1sz(0x3f).set_ips(7).set_tbi(3);
        cd.set_asid(0xffff).set_mair(u64::MAX).set_ttb0(hwio::bits::addr_mask(4, 51)).set_ttb1(hwio::bits::addr_mask(4, 51));
        cd.set_valid(true).set_aa64(true).set_abort_faults(true).set_record_faults(true).set_aset(true);
        assert_eq!(cd.reserved_bits_set(), None);
        cd.words[2] |= 1 << 56;
        assert_eq!(cd.reserved_bits_set(), Some(ReservedBitsSet { word: 2, bits: 1 << 56 }));
        cd.words[2] &= !(1 << 56);
        cd.words[5] |= 1 << 63;
        assert_eq!(cd.reserved_bits_set(), Some(ReservedBitsSet { word: 5, bits: 1 << 63 }));
    }

    #[test]
    fn stage1_descriptor_has_required_bits() {
        let mut cfg = Stage1Config::new(0x42, 0x4000_3000, 25, Granule::Size4K);
        cfg.mair = 0x0044_04FF;
        let cd = ContextDescriptor::for_stage1(&cfg, 44, WalkAttributes::for_coherency(true));
        assert!(cd.valid() && cd.aa64() && cd.abort_faults() && cd.record_faults() && cd.epd1());
        assert!(!cd.epd0() && !cd.ha() && !cd.hd() && !cd.stall());
        assert_eq!(cd.t0sz(), 25);
        assert_eq!(cd.ips(), 4);
        assert_eq!(cd.asid(), 0x42);
        assert_eq!(cd.granule0(), Some(Granule::Size4K));
        // IR0=WB (bits 9:8 = 01), OR0=WB (11:10 = 01), SH0=ISH (13:12 = 11).
        assert_eq!(cd.words[0] & 0x3F00, 0x3500);
        assert_eq!(cd.words[0] >> 48, 0x42);
        assert_eq!(cd.words[1], 0x4000_3000);
        assert_eq!(cd.words[3], 0x0044_04FF);
    }
}
