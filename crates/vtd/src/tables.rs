//! In-memory translation structures the unit walks (VT-d spec chapter 9): root entries,
//! context entries (legacy and scalable), PASID directory and PASID table entries.
//!
//! Every type is `#[repr(C)]` over little-endian 64-bit words with a compile-time size check,
//! its fields and reserved bits named by position in the [`hwio::bits`] convention (bit
//! positions within the entry's 64-bit word; the spec numbers bits across the whole entry, so
//! entry bit 72 is word 1 bit 8). Word 0 always holds the Present bit at bit 0, which
//! [`crate::dma::DmaTable::publish`] relies on to write an entry so that hardware never sees a
//! half-written present entry; the same writer refuses an entry with a reserved bit set.

use core::mem::size_of;

use hwio::bits::Layout;
use hwio::{address_fields, flag_fields, numeric_fields, reserved_bits};

/// An entry hardware reads as an array of 64-bit words, word 0 holding Present at bit 0.
pub trait HardwareEntry: Copy + Layout {
    /// Number of 64-bit words.
    const WORDS: usize;
    fn words(&self) -> &[u64];
    fn from_words(words: &[u64]) -> Self;
    fn is_present(&self) -> bool {
        self.words()[0] & 1 != 0
    }
}

/// Implements [`HardwareEntry`] and checks the size of a `words: [u64; N]` entry.
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
pub(crate) use hardware_entry;

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
reserved_bits! {
    RootEntry, words 2:
    /// R, bits 11:1.
    word 0, bits 11:1;
    /// R, bits 127:64.
    word 1, bits 63:0;
}

impl RootEntry {
    flag_fields! {
        /// P, bit 0.
        present, set_present: word 0, bit 0;
    }
    address_fields! {
        /// CTP, bits 63:12: the bus's context table.
        context_table, set_context_table: word 0, bits 63:12;
    }

    /// Present entry pointing at a 4 KiB context table.
    pub fn new(context_table: u64) -> Self {
        let mut entry = Self::default();
        entry.set_context_table(context_table).set_present(true);
        entry
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
reserved_bits! {
    ScalableRootEntry, words 2:
    /// R, bits 11:1.
    word 0, bits 11:1;
    /// R, bits 75:65.
    word 1, bits 11:1;
}

impl ScalableRootEntry {
    flag_fields! {
        /// LP, bit 0: the lower context table is present.
        lower_present, set_lower_present: word 0, bit 0;
        /// UP, bit 64: the upper context table is present.
        upper_present, set_upper_present: word 1, bit 0;
    }
    address_fields! {
        /// LCTP, bits 63:12: context table of devfn 0-127.
        lower_context_table, set_lower_context_table: word 0, bits 63:12;
        /// UCTP, bits 127:76: context table of devfn 128-255.
        upper_context_table, set_upper_context_table: word 1, bits 63:12;
    }

    /// The halves that are given, present.
    pub fn new(lower: Option<u64>, upper: Option<u64>) -> Self {
        let mut entry = Self::default();
        if let Some(table) = lower {
            entry.set_lower_context_table(table).set_lower_present(true);
        }
        if let Some(table) = upper {
            entry.set_upper_context_table(table).set_upper_present(true);
        }
        entry
    }
    /// Which word of the entry serves `devfn`.
    pub fn word_for(devfn: u8) -> usize {
        (devfn >> 7) as usize
    }
    pub fn context_table(&self, devfn: u8) -> Option<u64> {
        if devfn < 128 {
            self.lower_present().then_some(self.lower_context_table())
        } else {
            self.upper_present().then_some(self.upper_context_table())
        }
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
reserved_bits! {
    ContextEntry, words 2:
    /// R, bits 11:4.
    word 0, bits 11:4;
    /// R, bit 71 (IGN, bits 70:67, is ignored, not reserved).
    word 1, bits 7:7;
    /// R, bits 127:88.
    word 1, bits 63:24;
}

impl ContextEntry {
    flag_fields! {
        /// P, bit 0.
        present, set_present: word 0, bit 0;
        /// FPD, bit 1: fault processing disabled.
        fault_processing_disabled, set_fault_processing_disabled: word 0, bit 1;
    }
    numeric_fields! {
        /// TT, bits 3:2, see [`LegacyTranslationType`].
        translation_type, set_translation_type: word 0, bits 2, width 2;
        /// AW, bits 66:64, see [`address_width_code`].
        address_width, set_address_width: word 1, bits 0, width 3;
        /// DID, bits 87:72.
        did, set_did: word 1, bits 8, width 16;
    }
    address_fields! {
        /// SLPTPTR, bits 63:12: the second-level table (ignored for pass-through).
        second_level_root, set_second_level_root: word 0, bits 63:12;
    }

    /// P=1, TT, SLPTPTR, AW and DID.
    ///
    /// For pass-through, SLPTPTR is ignored by hardware but AW must still name a supported
    /// width, so callers pass the width they would use for translated domains.
    pub fn new(kind: LegacyTranslationType, second_level_root: u64, levels: u8, did: u16) -> Self {
        let mut entry = Self::default();
        entry
            .set_second_level_root(second_level_root)
            .set_translation_type(kind as u64)
            .set_address_width(address_width_code(levels))
            .set_did(did as u64)
            .set_present(true);
        entry
    }
    pub fn domain_id(&self) -> u16 {
        self.did() as u16
    }
}

/// Scalable-mode context entry (spec 9.4), 256 bits.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScalableContextEntry {
    pub words: [u64; 4],
}
hardware_entry!(ScalableContextEntry, 4);
reserved_bits! {
    ScalableContextEntry, words 4:
    /// R, bits 127:85.
    word 1, bits 63:21;
    /// R, bits 255:128.
    word 2, bits 63:0;
    word 3, bits 63:0;
}

impl ScalableContextEntry {
    flag_fields! {
        /// P, bit 0.
        present, set_present: word 0, bit 0;
        /// DTE, bit 2: device-TLB enable.
        device_tlb_enabled, set_device_tlb_enabled: word 0, bit 2;
        /// PASIDE, bit 3: requests-with-PASID are allowed.
        pasid_enabled, set_pasid_enabled: word 0, bit 3;
        /// PRE, bit 4: page requests from the device are queued (else answered "invalid").
        page_requests_enabled, set_page_requests_enabled: word 0, bit 4;
    }
    numeric_fields! {
        /// PDTS, bits 11:9: the PASID directory has 2^(PDTS + 7) entries.
        pdts, set_pdts: word 0, bits 9, width 3;
        /// RID_PASID, bits 83:64.
        rid_pasid_field, set_rid_pasid_field: word 1, bits 0, width 20;
    }
    address_fields! {
        /// PASIDDIRPTR, bits 63:12.
        pasid_directory, set_pasid_directory: word 0, bits 63:12;
    }

    /// P=1, PASID directory pointer, PDTS, PASIDE, DTE and RID_PASID.
    pub fn new(
        pasid_directory: u64,
        directory_entries_log2: u32,
        rid_pasid: u32,
        pasid_enable: bool,
        device_tlb: bool,
    ) -> Self {
        let mut entry = Self::default();
        entry
            .set_pasid_directory(pasid_directory)
            .set_pdts((directory_entries_log2 - 7) as u64)
            .set_pasid_enabled(pasid_enable)
            .set_device_tlb_enabled(device_tlb)
            .set_rid_pasid_field(rid_pasid as u64)
            .set_present(true);
        entry
    }
    pub fn directory_entries(&self) -> usize {
        1 << (self.pdts() + 7)
    }
    pub fn rid_pasid(&self) -> u32 {
        self.rid_pasid_field() as u32
    }
}

/// Scalable-mode PASID directory entry (spec 9.5), 64 bits: one per 64 PASIDs.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PasidDirectoryEntry {
    pub words: [u64; 1],
}
hardware_entry!(PasidDirectoryEntry, 1);
reserved_bits! {
    PasidDirectoryEntry, words 1:
    /// R, bits 11:2.
    word 0, bits 11:2;
}

impl PasidDirectoryEntry {
    flag_fields! {
        /// P, bit 0.
        present, set_present: word 0, bit 0;
    }
    address_fields! {
        /// SMPTBLPTR, bits 63:12: a 4 KiB table of 64 PASID entries.
        pasid_table, set_pasid_table: word 0, bits 63:12;
    }

    pub fn new(pasid_table: u64) -> Self {
        let mut entry = Self::default();
        entry.set_pasid_table(pasid_table).set_present(true);
        entry
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

/// Scalable-mode PASID table entry (spec 9.6), 512 bits.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PasidEntry {
    pub words: [u64; 8],
}
hardware_entry!(PasidEntry, 8);
reserved_bits! {
    PasidEntry, words 8:
    /// R, bits 11:10.
    word 0, bits 11:10;
    /// R, bits 511:256.
    word 4, bits 63:0;
    word 5, bits 63:0;
    word 6, bits 63:0;
    word 7, bits 63:0;
}

impl PasidEntry {
    flag_fields! {
        /// P, bit 0.
        present, set_present: word 0, bit 0;
        /// SSADE, bit 9: second-stage accessed/dirty enable (valid with ECAP.SSADS): the walker
        /// sets A (bit 8) in the second-level entries it uses and D (bit 9) in leaves it writes.
        second_level_access_dirty, set_second_level_access_dirty: word 0, bit 9;
        /// PWSNP, bit 87: page walks snoop CPU caches (valid with ECAP.SMPWCS).
        page_walk_snoop, set_page_walk_snoop: word 1, bit 23;
        /// PGSNP, bit 88: page snoop.
        page_snoop, set_page_snoop: word 1, bit 24;
        /// SRE, bit 128: supervisor requests allowed.
        supervisor_requests, set_supervisor_requests: word 2, bit 0;
        /// ERE, bit 129: execute requests allowed.
        execute_requests, set_execute_requests: word 2, bit 1;
    }
    numeric_fields! {
        /// AW, bits 4:2, see [`address_width_code`].
        address_width, set_address_width: word 0, bits 2, width 3;
        /// PGTT, bits 8:6, see [`PasidTranslationType`].
        translation_type, set_translation_type: word 0, bits 6, width 3;
        /// DID, bits 79:64.
        did, set_did: word 1, bits 0, width 16;
        /// FLPM, bits 131:130: 0 = 4-level, 1 = 5-level first-level paging.
        first_level_paging_mode, set_first_level_paging_mode: word 2, bits 2, width 2;
    }
    address_fields! {
        /// SSPTPTR (SLPTPTR), bits 63:12.
        second_level_root, set_second_level_root: word 0, bits 63:12;
        /// FSPTPTR (FLPTPTR), bits 191:140.
        first_level_root, set_first_level_root: word 2, bits 63:12;
    }

    fn with_type(kind: PasidTranslationType, did: u16) -> Self {
        let mut entry = Self::default();
        entry.set_translation_type(kind as u64).set_did(did as u64).set_present(true);
        entry
    }
    /// PGTT=010: DMA walks the second-level table at `root` with `levels` levels.
    pub fn second_level(did: u16, root: u64, levels: u8) -> Self {
        let mut entry = Self::with_type(PasidTranslationType::SecondLevel, did);
        entry.set_second_level_root(root).set_address_width(address_width_code(levels));
        entry
    }
    /// PGTT=010 with SSADE: as `second_level`, the walker recording accesses and writes in
    /// the table's A/D bits.
    pub fn second_level_tracked(did: u16, root: u64, levels: u8) -> Self {
        let mut entry = Self::second_level(did, root, levels);
        entry.set_second_level_access_dirty(true);
        entry
    }
    /// PGTT=001: DMA walks the IA-32e-format first-level table at `root` (FLPM 0 = 4-level,
    /// 1 = 5-level). AW names the same width as the paging mode (48 or 57 bits), as Linux
    /// sets it: QEMU bounds first-level input addresses by AW as well, and with AW = 0 would
    /// fault every IOVA from 2^29 up as non-canonical.
    pub fn first_level(did: u16, root: u64, five_level: bool) -> Self {
        let mut entry = Self::with_type(PasidTranslationType::FirstLevel, did);
        let levels = if five_level { 5 } else { 4 };
        entry
            .set_address_width(address_width_code(levels))
            .set_first_level_root(root)
            .set_first_level_paging_mode(five_level as u64);
        entry
    }
    /// PGTT=011: first-level table pointers and outputs are guest-physical addresses that are
    /// themselves translated by the second-level table (spec 3.8).
    pub fn nested(did: u16, first_root: u64, five_level: bool, second_root: u64, second_levels: u8) -> Self {
        let mut entry = Self::with_type(PasidTranslationType::Nested, did);
        entry
            .set_second_level_root(second_root)
            .set_address_width(address_width_code(second_levels))
            .set_first_level_root(first_root)
            .set_first_level_paging_mode(five_level as u64);
        entry
    }
    /// PGTT=100: DMA passes through untranslated. AW must still name a supported width.
    pub fn pass_through(did: u16, levels: u8) -> Self {
        let mut entry = Self::with_type(PasidTranslationType::PassThrough, did);
        entry.set_address_width(address_width_code(levels));
        entry
    }
    /// PWSNP: page walks through this entry snoop CPU caches (valid with ECAP.SMPWCS).
    pub fn with_page_walk_snoop(mut self) -> Self {
        self.set_page_walk_snoop(true);
        self
    }
    /// SRE: requests-with-PASID carrying supervisor privilege are allowed (ECAP.SRS).
    pub fn with_supervisor_requests(mut self) -> Self {
        self.set_supervisor_requests(true);
        self
    }
    pub fn domain_id(&self) -> u16 {
        self.did() as u16
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hwio::bits::ReservedBitsSet;

    const WIDEST_ADDRESS: u64 = !0xfff;

    #[test]
    fn every_field_at_its_widest_leaves_the_reserved_bits_clear() {
        let root = RootEntry::new(WIDEST_ADDRESS);
        let scalable_root = ScalableRootEntry::new(Some(WIDEST_ADDRESS), Some(WIDEST_ADDRESS));
        let mut context = ContextEntry::new(LegacyTranslationType::PassThrough, WIDEST_ADDRESS, 9, 0xffff);
        context.set_fault_processing_disabled(true).set_translation_type(0b11);
        let scalable_context = ScalableContextEntry::new(WIDEST_ADDRESS, 14, 0xf_ffff, true, true);
        let directory = PasidDirectoryEntry::new(WIDEST_ADDRESS);
        let mut pasid = PasidEntry::nested(0xffff, WIDEST_ADDRESS, true, WIDEST_ADDRESS, 9)
            .with_page_walk_snoop()
            .with_supervisor_requests();
        pasid.set_page_snoop(true).set_execute_requests(true).set_translation_type(0b111).set_first_level_paging_mode(0b11);
        assert_eq!(root.reserved_bits_set(), None);
        assert_eq!(scalable_root.reserved_bits_set(), None);
        assert_eq!(context.reserved_bits_set(), None);
        assert_eq!(scalable_context.reserved_bits_set(), None);
        assert_eq!(directory.reserved_bits_set(), None);
        assert_eq!(pasid.reserved_bits_set(), None);
    }

    #[test]
    fn reserved_bits_are_reported_by_word() {
        let mut context = ContextEntry::new(LegacyTranslationType::Untranslated, 0x1000, 4, 1);
        context.words[0] |= 1 << 4;
        assert_eq!(context.reserved_bits_set(), Some(ReservedBitsSet { word: 0, bits: 1 << 4 }));
        let mut pasid = PasidEntry::pass_through(1, 4);
        pasid.words[7] = 1 << 63;
        assert_eq!(pasid.reserved_bits_set(), Some(ReservedBitsSet { word: 7, bits: 1 << 63 }));
        let mut root = RootEntry::new(0x1000);
        root.words[1] = 1;
        assert_eq!(root.reserved_bits_set(), Some(ReservedBitsSet { word: 1, bits: 1 }));
    }

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
