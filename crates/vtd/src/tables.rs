//! In-memory translation structures the unit walks (VT-d spec chapter 9): root entries,
//! context entries (legacy and scalable), PASID directory and PASID table entries.
//!
//! Every type is `#[repr(C)]` over little-endian 64-bit words with a compile-time size check;
//! word 0 always holds the Present bit at bit 0, which [`crate::dma::DmaTable::publish`] relies
//! on to write an entry so that hardware never sees a half-written present entry.

use core::mem::size_of;

/// An entry hardware reads as an array of 64-bit words, word 0 holding Present at bit 0.
pub trait HardwareEntry: Copy {
    /// Number of 64-bit words.
    const WORDS: usize;
    fn words(&self) -> &[u64];
    fn from_words(words: &[u64]) -> Self;
    fn is_present(&self) -> bool {
        self.words()[0] & 1 != 0
    }
}

macro_rules! hardware_entry {
    ($name:ident, $words:literal) => {
        impl HardwareEntry for $name {
            const WORDS: usize = $words;
            fn words(&self) -> &[u64] {
                &self.words
            }
            fn from_words(words: &[u64]) -> Self {
                let mut out = Self { words: [0; $words] };
                out.words.copy_from_slice(&words[..$words]);
                out
            }
        }
        const _: () = assert!(size_of::<$name>() == $words * 8);
    };
}

const PRESENT: u64 = 1 << 0;
const FPD: u64 = 1 << 1;
const ADDRESS_MASK: u64 = !0xfff;

/// Address-width encoding shared by context and PASID entries (spec 9.3, 9.6): 1 = 39-bit
/// 3-level, 2 = 48-bit 4-level, 3 = 57-bit 5-level second-level tables.
pub fn address_width_code(levels: u8) -> u64 {
    levels as u64 - 2
}

/// Legacy-mode root entry (spec 9.1): one per bus, pointing at that bus's context table.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RootEntry {
    pub words: [u64; 2],
}
hardware_entry!(RootEntry, 2);

impl RootEntry {
    /// Present entry pointing at a 4 KiB context table (CTP, bits 63:12).
    pub fn new(context_table: u64) -> Self {
        Self { words: [context_table & ADDRESS_MASK | PRESENT, 0] }
    }
    pub fn context_table(&self) -> u64 {
        self.words[0] & ADDRESS_MASK
    }
}

/// Scalable-mode root entry (spec 9.2): the lower context table serves devfn 0-127, the upper
/// one devfn 128-255, because scalable context entries are twice as large.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScalableRootEntry {
    pub words: [u64; 2],
}
hardware_entry!(ScalableRootEntry, 2);

impl ScalableRootEntry {
    /// LP (bit 0) + LCTP (bits 63:12) and UP (bit 64) + UCTP (bits 127:76).
    pub fn new(lower: Option<u64>, upper: Option<u64>) -> Self {
        let half = |table: Option<u64>| table.map_or(0, |t| t & ADDRESS_MASK | PRESENT);
        Self { words: [half(lower), half(upper)] }
    }
    /// Which word of the entry serves `devfn`.
    pub fn word_for(devfn: u8) -> usize {
        (devfn >> 7) as usize
    }
    pub fn context_table(&self, devfn: u8) -> Option<u64> {
        let word = self.words[Self::word_for(devfn)];
        (word & PRESENT != 0).then_some(word & ADDRESS_MASK)
    }
}

/// Legacy context-entry translation type, bits 3:2 (spec 9.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegacyTranslationType {
    /// 00: untranslated requests walk the second-level tables; translation requests blocked.
    Untranslated = 0,
    /// 01: as 00, and ATS translation requests allowed (device-TLB).
    WithDeviceTlb = 1,
    /// 10: untranslated requests pass through unmodified (needs ECAP.PT).
    PassThrough = 2,
}

/// Legacy-mode context entry (spec 9.3), 128 bits.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ContextEntry {
    pub words: [u64; 2],
}
hardware_entry!(ContextEntry, 2);

impl ContextEntry {
    /// P=1, TT, SLPTPTR (bits 63:12), AW (bits 66:64), DID (bits 87:72).
    ///
    /// For pass-through, SLPTPTR is ignored by hardware but AW must still name a supported
    /// width, so callers pass the width they would use for translated domains.
    pub fn new(kind: LegacyTranslationType, second_level_root: u64, levels: u8, did: u16) -> Self {
        let lo = second_level_root & ADDRESS_MASK | (kind as u64) << 2 | PRESENT;
        let hi = address_width_code(levels) | (did as u64) << 8;
        Self { words: [lo, hi] }
    }
    pub fn fault_processing_disabled(&self) -> bool {
        self.words[0] & FPD != 0
    }
    pub fn translation_type(&self) -> u64 {
        self.words[0] >> 2 & 3
    }
    pub fn second_level_root(&self) -> u64 {
        self.words[0] & ADDRESS_MASK
    }
    pub fn address_width(&self) -> u64 {
        self.words[1] & 7
    }
    pub fn domain_id(&self) -> u16 {
        (self.words[1] >> 8) as u16
    }
}

/// Scalable-mode context entry (spec 9.4), 256 bits.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScalableContextEntry {
    pub words: [u64; 4],
}
hardware_entry!(ScalableContextEntry, 4);

/// Bits of scalable context entry word 0.
pub mod sm_context {
    /// Device-TLB enable.
    pub const DTE: u64 = 1 << 2;
    /// PASID enable: requests-with-PASID are allowed.
    pub const PASIDE: u64 = 1 << 3;
    /// Page request enable.
    pub const PRE: u64 = 1 << 4;
    /// PASID directory size, bits 11:9: 2^(PDTS + 7) directory entries.
    pub const PDTS_SHIFT: u32 = 9;
    /// RID_PASID, word 1 bits 19:0.
    pub const RID_PASID_MASK: u64 = 0xf_ffff;
}

impl ScalableContextEntry {
    /// P=1, PASID directory pointer (bits 63:12), PDTS, PASIDE, DTE and RID_PASID (bits 83:64).
    pub fn new(
        pasid_directory: u64,
        directory_entries_log2: u32,
        rid_pasid: u32,
        pasid_enable: bool,
        device_tlb: bool,
    ) -> Self {
        let mut lo = pasid_directory & ADDRESS_MASK | PRESENT;
        lo |= ((directory_entries_log2 - 7) as u64) << sm_context::PDTS_SHIFT;
        if pasid_enable {
            lo |= sm_context::PASIDE;
        }
        if device_tlb {
            lo |= sm_context::DTE;
        }
        Self { words: [lo, rid_pasid as u64 & sm_context::RID_PASID_MASK, 0, 0] }
    }
    pub fn pasid_directory(&self) -> u64 {
        self.words[0] & ADDRESS_MASK
    }
    pub fn directory_entries(&self) -> usize {
        1 << ((self.words[0] >> sm_context::PDTS_SHIFT & 7) + 7)
    }
    pub fn rid_pasid(&self) -> u32 {
        (self.words[1] & sm_context::RID_PASID_MASK) as u32
    }
    pub fn pasid_enabled(&self) -> bool {
        self.words[0] & sm_context::PASIDE != 0
    }
    pub fn device_tlb_enabled(&self) -> bool {
        self.words[0] & sm_context::DTE != 0
    }
}

/// Scalable-mode PASID directory entry (spec 9.5), 64 bits: one per 64 PASIDs.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PasidDirectoryEntry {
    pub words: [u64; 1],
}
hardware_entry!(PasidDirectoryEntry, 1);

impl PasidDirectoryEntry {
    /// P=1 and SMPTBLPTR (bits 63:12), a 4 KiB table of 64 PASID entries.
    pub fn new(pasid_table: u64) -> Self {
        Self { words: [pasid_table & ADDRESS_MASK | PRESENT] }
    }
    pub fn pasid_table(&self) -> u64 {
        self.words[0] & ADDRESS_MASK
    }
}

/// PASIDs served by one directory entry (one 4 KiB PASID table of 64-byte entries).
pub const PASIDS_PER_TABLE: u32 = 64;

/// PASID-granular translation type, PASID entry bits 8:6 (spec 9.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasidTranslationType {
    FirstLevel = 0b001,
    SecondLevel = 0b010,
    Nested = 0b011,
    PassThrough = 0b100,
}

/// Field positions of the scalable-mode PASID table entry (spec 9.6).
pub mod pasid_entry {
    /// Word 0: AW bits 4:2, PGTT bits 8:6, SLPTPTR bits 63:12.
    pub const AW_SHIFT: u32 = 2;
    pub const PGTT_SHIFT: u32 = 6;
    /// Word 1: DID bits 15:0 (entry bits 79:64), PWSNP bit 23 (87), PGSNP bit 24 (88).
    pub const PWSNP: u64 = 1 << 23;
    pub const PGSNP: u64 = 1 << 24;
    /// Word 2: SRE bit 0 (128), ERE bit 1 (129), FLPM bits 3:2 (131:130), FLPTPTR bits 63:12.
    pub const SRE: u64 = 1 << 0;
    pub const ERE: u64 = 1 << 1;
    pub const FLPM_SHIFT: u32 = 2;
}

/// Scalable-mode PASID table entry (spec 9.6), 512 bits.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PasidEntry {
    pub words: [u64; 8],
}
hardware_entry!(PasidEntry, 8);

impl PasidEntry {
    fn with_type(kind: PasidTranslationType, did: u16) -> Self {
        let mut words = [0; 8];
        words[0] = PRESENT | (kind as u64) << pasid_entry::PGTT_SHIFT;
        words[1] = did as u64;
        Self { words }
    }
    /// PGTT=010: DMA walks the second-level table at `root` with `levels` levels.
    pub fn second_level(did: u16, root: u64, levels: u8) -> Self {
        let mut entry = Self::with_type(PasidTranslationType::SecondLevel, did);
        entry.words[0] |= root & ADDRESS_MASK | address_width_code(levels) << pasid_entry::AW_SHIFT;
        entry
    }
    /// PGTT=001: DMA walks the IA-32e-format first-level table at `root` (FLPM 0 = 4-level,
    /// 1 = 5-level). AW names the same width as the paging mode (48 or 57 bits), as Linux
    /// sets it: QEMU bounds first-level input addresses by AW as well, and with AW = 0 would
    /// fault every IOVA from 2^29 up as non-canonical.
    pub fn first_level(did: u16, root: u64, five_level: bool) -> Self {
        let mut entry = Self::with_type(PasidTranslationType::FirstLevel, did);
        let levels = if five_level { 5 } else { 4 };
        entry.words[0] |= address_width_code(levels) << pasid_entry::AW_SHIFT;
        entry.words[2] = root & ADDRESS_MASK | (five_level as u64) << pasid_entry::FLPM_SHIFT;
        entry
    }
    /// PGTT=011: first-level table pointers and outputs are guest-physical addresses that are
    /// themselves translated by the second-level table (spec 3.8).
    pub fn nested(did: u16, first_root: u64, five_level: bool, second_root: u64, second_levels: u8) -> Self {
        let mut entry = Self::with_type(PasidTranslationType::Nested, did);
        entry.words[0] |=
            second_root & ADDRESS_MASK | address_width_code(second_levels) << pasid_entry::AW_SHIFT;
        entry.words[2] = first_root & ADDRESS_MASK | (five_level as u64) << pasid_entry::FLPM_SHIFT;
        entry
    }
    /// PGTT=100: DMA passes through untranslated. AW must still name a supported width.
    pub fn pass_through(did: u16, levels: u8) -> Self {
        let mut entry = Self::with_type(PasidTranslationType::PassThrough, did);
        entry.words[0] |= address_width_code(levels) << pasid_entry::AW_SHIFT;
        entry
    }
    /// PWSNP: page walks through this entry snoop CPU caches (valid with ECAP.SMPWCS).
    pub fn with_page_walk_snoop(mut self) -> Self {
        self.words[1] |= pasid_entry::PWSNP;
        self
    }
    /// SRE: requests-with-PASID carrying supervisor privilege are allowed (ECAP.SRS).
    pub fn with_supervisor_requests(mut self) -> Self {
        self.words[2] |= pasid_entry::SRE;
        self
    }
    pub fn translation_type(&self) -> u64 {
        self.words[0] >> pasid_entry::PGTT_SHIFT & 7
    }
    pub fn domain_id(&self) -> u16 {
        self.words[1] as u16
    }
    pub fn second_level_root(&self) -> u64 {
        self.words[0] & ADDRESS_MASK
    }
    pub fn first_level_root(&self) -> u64 {
        self.words[2] & ADDRESS_MASK
    }
    pub fn address_width(&self) -> u64 {
        self.words[0] >> pasid_entry::AW_SHIFT & 7
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_entry_layout() {
        let entry = RootEntry::new(0x1234_5000);
        assert_eq!(entry.words, [0x1234_5001, 0]);
        assert!(entry.is_present());
        assert_eq!(entry.context_table(), 0x1234_5000);
    }

    #[test]
    fn scalable_root_entry_halves() {
        let entry = ScalableRootEntry::new(Some(0x10_0000), Some(0x20_0000));
        assert_eq!(entry.words, [0x10_0001, 0x20_0001]);
        assert_eq!(entry.context_table(0x7f), Some(0x10_0000));
        assert_eq!(entry.context_table(0x80), Some(0x20_0000));
        let lower_only = ScalableRootEntry::new(Some(0x10_0000), None);
        assert_eq!(lower_only.context_table(0xff), None);
    }

    #[test]
    fn legacy_context_entry_layout() {
        let entry = ContextEntry::new(LegacyTranslationType::Untranslated, 0xabc_d000, 4, 0x1234);
        // P at bit 0, TT 00 at 3:2, SLPTPTR at 63:12.
        assert_eq!(entry.words[0], 0xabc_d001);
        // AW=2 (48-bit) at bits 66:64, DID at bits 87:72.
        assert_eq!(entry.words[1], 0x12_3402);
        assert_eq!(entry.domain_id(), 0x1234);
        assert_eq!(entry.address_width(), 2);
        let pt = ContextEntry::new(LegacyTranslationType::PassThrough, 0, 3, 7);
        assert_eq!(pt.words, [0b1001, 0x701]);
        assert_eq!(pt.translation_type(), 2);
        assert!(!pt.fault_processing_disabled());
    }

    #[test]
    fn scalable_context_entry_layout() {
        let entry = ScalableContextEntry::new(0x55_5000, 9, 0, true, false);
        // P, PASIDE (bit 3), PDTS = 9 - 7 = 2 at bits 11:9.
        assert_eq!(entry.words[0], 0x55_5000 | 1 | 1 << 3 | 2 << 9);
        assert_eq!(entry.words[1..], [0, 0, 0]);
        assert_eq!(entry.directory_entries(), 512);
        let tagged = ScalableContextEntry::new(0x55_5000, 9, 0xabcde, false, true);
        assert_eq!(tagged.words[1], 0xabcde);
        assert_eq!(tagged.rid_pasid(), 0xabcde);
        assert!(tagged.device_tlb_enabled() && !tagged.pasid_enabled());
    }

    #[test]
    fn pasid_directory_entry_layout() {
        assert_eq!(PasidDirectoryEntry::new(0x9000).words, [0x9001]);
    }

    #[test]
    fn pasid_entry_second_level() {
        let entry = PasidEntry::second_level(0x42, 0x7_7000, 4);
        // P, AW=2 at 4:2, PGTT=010 at 8:6.
        assert_eq!(entry.words[0], 0x7_7000 | 1 | 2 << 2 | 2 << 6);
        assert_eq!(entry.words[1], 0x42);
        assert_eq!(entry.words[2..], [0; 6]);
    }

    #[test]
    fn pasid_entry_first_level_and_nested() {
        let fl = PasidEntry::first_level(3, 0x8000, true);
        // P, AW=3 (57-bit, the 5-level width) at 4:2, PGTT=001 at 8:6.
        assert_eq!(fl.words[0], 1 | 3 << 2 | 1 << 6);
        assert_eq!(PasidEntry::first_level(3, 0x8000, false).address_width(), 2);
        // FLPM=01 (5-level) at bits 131:130, FLPTPTR at 191:140.
        assert_eq!(fl.words[2], 0x8000 | 1 << 2);
        let nested = PasidEntry::nested(9, 0x8000, false, 0x9000, 3);
        assert_eq!(nested.words[0], 0x9000 | 1 | 1 << 2 | 3 << 6);
        assert_eq!(nested.words[2], 0x8000);
        assert_eq!(nested.first_level_root(), 0x8000);
        assert_eq!(nested.second_level_root(), 0x9000);
        assert_eq!(nested.translation_type(), 3);
    }

    #[test]
    fn pasid_entry_pass_through_and_flags() {
        let pt = PasidEntry::pass_through(1, 4).with_page_walk_snoop().with_supervisor_requests();
        assert_eq!(pt.words[0], 1 | 2 << 2 | 4 << 6);
        assert_eq!(pt.words[1], 1 | 1 << 23);
        assert_eq!(pt.words[2], 1);
        assert_eq!(pt.address_width(), 2);
        assert_eq!(pt.domain_id(), 1);
    }
}
