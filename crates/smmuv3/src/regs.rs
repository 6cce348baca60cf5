//! SMMUv3 programming interface registers (IHI 0070, chapter 6 "Memory map and registers").
//!
//! Offsets are in bytes from the SMMU base. Page 0 holds everything; the queue PROD/CONS pairs are
//! also mirrored in page 1 (base + 64 KiB), which is where the specification says the event and
//! PRI queue pointers live so that they can be mapped to a different agent. This driver uses the
//! page-1 copies of EVENTQ_PROD/CONS. (QEMU treats the two pages as exact aliases, a CONSTRAINED
//! UNPREDICTABLE choice the spec allows, so either works there.)
//!
//! ID registers are read with 32-bit accesses only: the specification defines them as 32-bit
//! registers and QEMU answers a 64-bit read of them with zero.

use hwio::bits::{get, with};

/// Register offsets (spec section 6.3, "Register formats").
pub mod offset {
    pub const IDR0: usize = 0x00;
    pub const IDR1: usize = 0x04;
    pub const IDR2: usize = 0x08;
    pub const IDR3: usize = 0x0C;
    pub const IDR4: usize = 0x10;
    pub const IDR5: usize = 0x14;
    pub const IIDR: usize = 0x18;
    pub const AIDR: usize = 0x1C;
    pub const CR0: usize = 0x20;
    pub const CR0ACK: usize = 0x24;
    pub const CR1: usize = 0x28;
    pub const CR2: usize = 0x2C;
    pub const STATUSR: usize = 0x40;
    pub const GBPA: usize = 0x44;
    pub const IRQ_CTRL: usize = 0x50;
    pub const IRQ_CTRLACK: usize = 0x54;
    pub const GERROR: usize = 0x60;
    pub const GERRORN: usize = 0x64;
    /// 64-bit.
    pub const STRTAB_BASE: usize = 0x80;
    pub const STRTAB_BASE_CFG: usize = 0x88;
    /// 64-bit.
    pub const CMDQ_BASE: usize = 0x90;
    pub const CMDQ_PROD: usize = 0x98;
    pub const CMDQ_CONS: usize = 0x9C;
    /// 64-bit.
    pub const EVENTQ_BASE: usize = 0xA0;
    /// Page-1 copy of EVENTQ_PROD (page-0 alias at 0xA8).
    pub const EVENTQ_PROD: usize = 0x1_00A8;
    /// Page-1 copy of EVENTQ_CONS (page-0 alias at 0xAC).
    pub const EVENTQ_CONS: usize = 0x1_00AC;
    /// 64-bit.
    pub const PRIQ_BASE: usize = 0xC0;
    /// Page-1 copy of PRIQ_PROD (page-0 alias at 0xC8).
    pub const PRIQ_PROD: usize = 0x1_00C8;
    /// Page-1 copy of PRIQ_CONS (page-0 alias at 0xCC).
    pub const PRIQ_CONS: usize = 0x1_00CC;
    /// Distance between the page-0 and page-1 copies of the queue pointers.
    pub const PAGE1: usize = 0x1_0000;
}

/// Translation table formats an SMMU walks (IDR0.TTF, bits [3:2]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFormats {
    AArch32Only,
    AArch64Only,
    Both,
    Reserved,
}

/// Hardware translation table update support (IDR0.HTTU, bits [7:6]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Httu {
    None,
    AccessFlag,
    AccessFlagAndDirty,
    Reserved,
}

/// The decoded identification registers SMMU_IDR0..5 (spec 6.3.1 to 6.3.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRegisters {
    pub idr: [u32; 6],
}

impl IdRegisters {
    fn bits(&self, idr: usize, lo: u32, width: u32) -> u32 {
        get(self.idr[idr] as u64, lo, width) as u32
    }
    fn bit(&self, idr: usize, bit: u32) -> bool {
        self.bits(idr, bit, 1) == 1
    }

    /// IDR0.S2P (bit 0): stage 2 translation.
    pub fn stage2(&self) -> bool {
        self.bit(0, 0)
    }
    /// IDR0.S1P (bit 1): stage 1 translation.
    pub fn stage1(&self) -> bool {
        self.bit(0, 1)
    }
    /// IDR0.TTF (bits [3:2]).
    pub fn table_formats(&self) -> TableFormats {
        match self.bits(0, 2, 2) {
            0b01 => TableFormats::AArch32Only,
            0b10 => TableFormats::AArch64Only,
            0b11 => TableFormats::Both,
            _ => TableFormats::Reserved,
        }
    }
    /// IDR0.COHACC (bit 4): table walks and queue accesses are IO-coherent.
    pub fn coherent(&self) -> bool {
        self.bit(0, 4)
    }
    /// IDR0.BTM (bit 5): broadcast TLB maintenance.
    pub fn broadcast_tlb_maintenance(&self) -> bool {
        self.bit(0, 5)
    }
    /// IDR0.HTTU (bits [7:6]).
    pub fn httu(&self) -> Httu {
        match self.bits(0, 6, 2) {
            0 => Httu::None,
            1 => Httu::AccessFlag,
            2 => Httu::AccessFlagAndDirty,
            _ => Httu::Reserved,
        }
    }
    /// IDR0.HYP (bit 9): EL2 translation regime (STE.STRW = EL2).
    pub fn hyp(&self) -> bool {
        self.bit(0, 9)
    }
    /// IDR0.ATS (bit 10): PCIe ATS.
    pub fn ats(&self) -> bool {
        self.bit(0, 10)
    }
    /// Number of ASID bits: 16 with IDR0.ASID16 (bit 12), otherwise 8.
    pub fn asid_bits(&self) -> u32 {
        if self.bit(0, 12) {
            16
        } else {
            8
        }
    }
    /// IDR0.MSI (bit 13): message-signalled interrupts.
    pub fn msi(&self) -> bool {
        self.bit(0, 13)
    }
    /// IDR0.PRI (bit 16): page request interface and PRI queue.
    pub fn pri(&self) -> bool {
        self.bit(0, 16)
    }
    /// Number of VMID bits: 16 with IDR0.VMID16 (bit 18), otherwise 8.
    pub fn vmid_bits(&self) -> u32 {
        if self.bit(0, 18) {
            16
        } else {
            8
        }
    }
    /// IDR0.CD2L (bit 19): two-level context descriptor tables.
    pub fn cd_two_level(&self) -> bool {
        self.bit(0, 19)
    }
    /// IDR0.TTENDIAN (bits [22:21]) allows little-endian tables (0b00 mixed, 0b10 LE only).
    pub fn little_endian_tables(&self) -> bool {
        matches!(self.bits(0, 21, 2), 0b00 | 0b10)
    }
    /// IDR0.STALL_MODEL (bits [25:24]) == 0b01: stalling faults are not supported.
    pub fn stall_unsupported(&self) -> bool {
        self.bits(0, 24, 2) == 0b01
    }
    /// IDR0.ST_LEVEL (bits [28:27]) == 0b01: 2-level stream tables in addition to linear.
    pub fn two_level_stream_table(&self) -> bool {
        self.bits(0, 27, 2) == 0b01
    }

    /// IDR1.SIDSIZE (bits [5:0]): StreamID width in bits.
    pub fn sid_bits(&self) -> u32 {
        self.bits(1, 0, 6)
    }
    /// IDR1.SSIDSIZE (bits [10:6]): SubstreamID width in bits; 0 means no substreams (no PASID).
    pub fn ssid_bits(&self) -> u32 {
        self.bits(1, 6, 5)
    }
    /// IDR1.PRIQS (bits [15:11]): log2 of the largest PRI queue.
    pub fn priq_log2_max(&self) -> u32 {
        self.bits(1, 11, 5)
    }
    /// IDR1.EVENTQS (bits [20:16]): log2 of the largest event queue.
    pub fn eventq_log2_max(&self) -> u32 {
        self.bits(1, 16, 5)
    }
    /// IDR1.CMDQS (bits [25:21]): log2 of the largest command queue.
    pub fn cmdq_log2_max(&self) -> u32 {
        self.bits(1, 21, 5)
    }
    /// IDR1.TABLES_PRESET (bit 30): stream table base is fixed by the implementation.
    pub fn tables_preset(&self) -> bool {
        self.bit(1, 30)
    }
    /// IDR1.QUEUES_PRESET (bit 29): queue bases are fixed by the implementation.
    pub fn queues_preset(&self) -> bool {
        self.bit(1, 29)
    }

    /// IDR3.HAD (bit 2): hierarchical attribute disables in CDs.
    pub fn hierarchical_attribute_disable(&self) -> bool {
        self.bit(3, 2)
    }
    /// IDR3.RIL (bit 10): range invalidation (TLBI with NUM/SCALE/TG).
    pub fn range_invalidation(&self) -> bool {
        self.bit(3, 10)
    }

    /// IDR5.OAS (bits [2:0]) as a number of address bits.
    pub fn oas_bits(&self) -> u32 {
        address_size_bits(self.bits(5, 0, 3) as u64).unwrap_or(48)
    }
    /// IDR5.GRAN4K (bit 4).
    pub fn granule_4k(&self) -> bool {
        self.bit(5, 4)
    }
    /// IDR5.GRAN16K (bit 5).
    pub fn granule_16k(&self) -> bool {
        self.bit(5, 5)
    }
    /// IDR5.GRAN64K (bit 6).
    pub fn granule_64k(&self) -> bool {
        self.bit(5, 6)
    }
    /// Whether the translation granule `granule` is supported (IDR5.GRANxx).
    pub fn supports_granule(&self, granule: Granule) -> bool {
        match granule {
            Granule::Size4K => self.granule_4k(),
            Granule::Size16K => self.granule_16k(),
            Granule::Size64K => self.granule_64k(),
        }
    }
}

/// Address-size encoding used by IDR5.OAS, CD.IPS and STE.S2PS (spec 6.3.6): 0 => 32 bits,
/// 1 => 36, 2 => 40, 3 => 42, 4 => 44, 5 => 48, 6 => 52.
pub const fn address_size_bits(encoding: u64) -> Option<u32> {
    match encoding {
        0 => Some(32),
        1 => Some(36),
        2 => Some(40),
        3 => Some(42),
        4 => Some(44),
        5 => Some(48),
        6 => Some(52),
        _ => None,
    }
}

/// Inverse of [`address_size_bits`]: the encoding of exactly `bits` address bits.
pub const fn address_size_encoding(bits: u32) -> Option<u64> {
    match bits {
        32 => Some(0),
        36 => Some(1),
        40 => Some(2),
        42 => Some(3),
        44 => Some(4),
        48 => Some(5),
        52 => Some(6),
        _ => None,
    }
}

/// Translation granule, shared by CD.TG0 and STE.S2TG (encoding 0b00 4K, 0b01 64K, 0b10 16K).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granule {
    Size4K,
    Size16K,
    Size64K,
}

impl Granule {
    /// log2 of the granule size in bytes.
    pub const fn shift(self) -> u32 {
        match self {
            Granule::Size4K => 12,
            Granule::Size16K => 14,
            Granule::Size64K => 16,
        }
    }
    /// Size in bytes.
    pub const fn size(self) -> u64 {
        1 << self.shift()
    }
    /// Encoding in CD.TG0 / STE.S2TG.
    pub const fn tg_encoding(self) -> u64 {
        match self {
            Granule::Size4K => 0b00,
            Granule::Size64K => 0b01,
            Granule::Size16K => 0b10,
        }
    }
    /// Encoding in the TG field of range TLBI commands (spec 4.4.1.1): 0b01 4K, 0b10 16K,
    /// 0b11 64K (0b00 means "not a range").
    pub const fn tlbi_tg(self) -> u64 {
        match self {
            Granule::Size4K => 0b01,
            Granule::Size16K => 0b10,
            Granule::Size64K => 0b11,
        }
    }
    /// Decodes CD.TG0 / STE.S2TG; 0b11 is reserved.
    pub const fn from_tg_encoding(tg: u64) -> Option<Granule> {
        match tg {
            0b00 => Some(Granule::Size4K),
            0b01 => Some(Granule::Size64K),
            0b10 => Some(Granule::Size16K),
            _ => None,
        }
    }
}

/// Cacheability of SMMU accesses to tables and queues, as encoded by CR1, STE.S1CIR/S1COR,
/// STE.S2IR0/S2OR0 and CD.IR0/OR0: 0b00 non-cacheable, 0b01 write-back (read/write allocate),
/// 0b10 write-through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cacheability {
    NonCacheable = 0,
    WriteBack = 1,
    WriteThrough = 2,
}

/// Shareability, as encoded by CR1, STE.S1CSH/S2SH0 and CD.SH0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shareability {
    NonShareable = 0,
    OuterShareable = 2,
    InnerShareable = 3,
}

/// Memory attributes of the SMMU's own accesses: write-back inner-shareable where the SMMU snoops
/// CPU caches (IDR0.COHACC), otherwise non-cacheable outer-shareable so that no stale line can be
/// read by either side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkAttributes {
    pub inner: Cacheability,
    pub outer: Cacheability,
    pub shareability: Shareability,
}

impl WalkAttributes {
    pub const fn for_coherency(coherent: bool) -> WalkAttributes {
        if coherent {
            WalkAttributes {
                inner: Cacheability::WriteBack,
                outer: Cacheability::WriteBack,
                shareability: Shareability::InnerShareable,
            }
        } else {
            WalkAttributes {
                inner: Cacheability::NonCacheable,
                outer: Cacheability::NonCacheable,
                shareability: Shareability::OuterShareable,
            }
        }
    }
}

/// SMMU_CR0 / SMMU_CR0ACK bits (spec 6.3.9).
pub mod cr0 {
    pub const SMMUEN: u32 = 1 << 0;
    pub const PRIQEN: u32 = 1 << 1;
    pub const EVENTQEN: u32 = 1 << 2;
    pub const CMDQEN: u32 = 1 << 3;
    pub const ATSCHK: u32 = 1 << 4;
}

/// SMMU_CR1 (spec 6.3.11): attributes of queue accesses (bits [5:0]) and of stream/CD table
/// accesses (bits [11:6]).
pub const fn cr1_value(queues: WalkAttributes, tables: WalkAttributes) -> u32 {
    let mut v = 0u64;
    v = with(v, 0, 2, queues.inner as u64); // QUEUE_IC
    v = with(v, 2, 2, queues.outer as u64); // QUEUE_OC
    v = with(v, 4, 2, queues.shareability as u64); // QUEUE_SH
    v = with(v, 6, 2, tables.inner as u64); // TABLE_IC
    v = with(v, 8, 2, tables.outer as u64); // TABLE_OC
    v = with(v, 10, 2, tables.shareability as u64); // TABLE_SH
    v as u32
}

/// SMMU_CR2 bits (spec 6.3.12).
pub mod cr2 {
    /// E2H: EL2 host regime uses ASIDs (only meaningful with STRW = EL2).
    pub const E2H: u32 = 1 << 0;
    /// RECINVSID: record C_BAD_STREAMID for out-of-range StreamIDs.
    pub const RECINVSID: u32 = 1 << 1;
    /// PTM: private TLB maintenance, ignore broadcast TLB invalidations from the CPUs.
    pub const PTM: u32 = 1 << 2;
}

/// SMMU_GBPA bits (spec 6.3.14): what happens to traffic while SMMUEN = 0.
pub mod gbpa {
    /// Written as 1 to request an update; reads 1 until the update has taken effect.
    pub const UPDATE: u32 = 1 << 31;
    /// Abort all incoming transactions while the SMMU is disabled (no event is recorded).
    pub const ABORT: u32 = 1 << 20;
}

/// SMMU_IRQ_CTRL / SMMU_IRQ_CTRLACK bits (spec 6.3.15).
pub mod irq_ctrl {
    pub const GERROR_IRQEN: u32 = 1 << 0;
    pub const PRIQ_IRQEN: u32 = 1 << 1;
    pub const EVENTQ_IRQEN: u32 = 1 << 2;
}

/// Active global errors: the bits that differ between SMMU_GERROR and SMMU_GERRORN (spec 6.3.17).
/// An error is acknowledged by toggling its GERRORN bit to equal GERROR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GlobalErrors(pub u32);

impl GlobalErrors {
    /// Command queue error: CMDQ_CONS.ERR says why; the queue is stopped until acknowledged.
    pub const CMDQ_ERR: u32 = 1 << 0;
    /// An event queue write aborted (QEMU also reports a full event queue this way).
    pub const EVENTQ_ABT_ERR: u32 = 1 << 2;
    pub const PRIQ_ABT_ERR: u32 = 1 << 3;
    pub const MSI_CMDQ_ABT_ERR: u32 = 1 << 4;
    pub const MSI_EVENTQ_ABT_ERR: u32 = 1 << 5;
    pub const MSI_PRIQ_ABT_ERR: u32 = 1 << 6;
    pub const MSI_GERROR_ABT_ERR: u32 = 1 << 7;
    /// Service failure mode: the SMMU stopped; only a reset recovers.
    pub const SFM_ERR: u32 = 1 << 8;

    /// The errors active given the two register values.
    pub const fn active(gerror: u32, gerrorn: u32) -> GlobalErrors {
        GlobalErrors(gerror ^ gerrorn)
    }
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub const fn contains(self, bit: u32) -> bool {
        self.0 & bit != 0
    }
    /// Spec names of the active errors, for logs.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        const NAMES: [(u32, &str); 8] = [
            (GlobalErrors::CMDQ_ERR, "CMDQ_ERR"),
            (GlobalErrors::EVENTQ_ABT_ERR, "EVENTQ_ABT_ERR"),
            (GlobalErrors::PRIQ_ABT_ERR, "PRIQ_ABT_ERR"),
            (GlobalErrors::MSI_CMDQ_ABT_ERR, "MSI_CMDQ_ABT_ERR"),
            (GlobalErrors::MSI_EVENTQ_ABT_ERR, "MSI_EVENTQ_ABT_ERR"),
            (GlobalErrors::MSI_PRIQ_ABT_ERR, "MSI_PRIQ_ABT_ERR"),
            (GlobalErrors::MSI_GERROR_ABT_ERR, "MSI_GERROR_ABT_ERR"),
            (GlobalErrors::SFM_ERR, "SFM_ERR"),
        ];
        NAMES.into_iter().filter(move |(bit, _)| self.contains(*bit)).map(|(_, name)| name)
    }
}

/// Stream table format (STRTAB_BASE_CFG.FMT, bits [17:16]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamTableFormat {
    Linear = 0,
    TwoLevel = 1,
}

/// SMMU_STRTAB_BASE_CFG (spec 6.3.24).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StrtabBaseCfg {
    pub format: StreamTableFormat,
    /// LOG2SIZE (bits [5:0]): log2 of the number of StreamIDs covered.
    pub log2size: u32,
    /// SPLIT (bits [10:6]): StreamID bits resolved by each level-2 table (2-level only).
    pub split: u32,
}

impl StrtabBaseCfg {
    pub const fn encode(self) -> u32 {
        let mut v = 0u64;
        v = with(v, 0, 6, self.log2size as u64);
        v = with(v, 6, 5, self.split as u64);
        v = with(v, 16, 2, self.format as u64);
        v as u32
    }
    pub const fn decode(value: u32) -> StrtabBaseCfg {
        let v = value as u64;
        StrtabBaseCfg {
            format: if get(v, 16, 2) == 1 { StreamTableFormat::TwoLevel } else { StreamTableFormat::Linear },
            log2size: get(v, 0, 6) as u32,
            split: get(v, 6, 5) as u32,
        }
    }
}

/// SMMU_STRTAB_BASE (spec 6.3.23): ADDR bits [51:6], RA (read-allocate hint) bit 62.
pub const fn strtab_base_value(table_phys: u64) -> u64 {
    (table_phys & hwio::bits::addr_mask(6, 51)) | (1 << 62)
}

/// SMMU_CMDQ_BASE / SMMU_EVENTQ_BASE (spec 6.3.25, 6.3.28): LOG2SIZE bits [4:0], ADDR bits
/// [51:5], RA/WA (allocate hint) bit 62.
pub const fn queue_base_value(queue_phys: u64, log2_entries: u32) -> u64 {
    (queue_phys & hwio::bits::addr_mask(5, 51)) | (log2_entries as u64 & 0x1F) | (1 << 62)
}

/// Decodes the ADDR field of a queue base register.
pub const fn queue_base_addr(value: u64) -> u64 {
    value & hwio::bits::addr_mask(5, 51)
}

/// Decodes the LOG2SIZE field of a queue base register.
pub const fn queue_base_log2size(value: u64) -> u32 {
    (value & 0x1F) as u32
}

/// Command queue error codes, SMMU_CMDQ_CONS.ERR bits [30:24] (spec 7.1, table 7-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandErrorCode {
    /// CERROR_NONE.
    None,
    /// CERROR_ILL: unknown opcode or illegal parameters.
    Illegal,
    /// CERROR_ABT: the command fetch aborted.
    Abort,
    /// CERROR_ATC_INV_SYNC: an ATS invalidation timed out before a CMD_SYNC.
    AtcInvalidationSync,
    Other(u8),
}

impl CommandErrorCode {
    pub const fn from_cons(cons: u32) -> CommandErrorCode {
        match (cons >> 24) & 0x7F {
            0 => CommandErrorCode::None,
            1 => CommandErrorCode::Illegal,
            2 => CommandErrorCode::Abort,
            3 => CommandErrorCode::AtcInvalidationSync,
            other => CommandErrorCode::Other(other as u8),
        }
    }
    pub const fn encoding(self) -> u32 {
        match self {
            CommandErrorCode::None => 0,
            CommandErrorCode::Illegal => 1,
            CommandErrorCode::Abort => 2,
            CommandErrorCode::AtcInvalidationSync => 3,
            CommandErrorCode::Other(code) => code as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ID register values QEMU 10.0.2 reports on `-machine virt,iommu=smmuv3` with both stages.
    const QEMU: IdRegisters = IdRegisters { idr: [0x0D44_101B, 0x0273_0010, 0, 0x0000_0404, 0, 0x74] };

    #[test]
    fn decodes_qemu_id_registers() {
        let id = QEMU;
        assert!(id.stage1() && id.stage2());
        assert_eq!(id.table_formats(), TableFormats::AArch64Only);
        assert!(id.coherent());
        assert_eq!(id.httu(), Httu::None);
        assert!(!id.ats() && !id.msi() && !id.pri() && !id.hyp());
        assert_eq!(id.asid_bits(), 16);
        assert_eq!(id.vmid_bits(), 16);
        assert!(id.little_endian_tables());
        assert!(id.stall_unsupported());
        assert!(id.two_level_stream_table());
        assert_eq!(id.sid_bits(), 16);
        assert_eq!(id.ssid_bits(), 0);
        assert_eq!(id.eventq_log2_max(), 19);
        assert_eq!(id.cmdq_log2_max(), 19);
        assert_eq!(id.oas_bits(), 44);
        assert!(id.granule_4k() && id.granule_16k() && id.granule_64k());
        assert!(id.range_invalidation());
    }

    #[test]
    fn encodes_control_registers() {
        let coherent = WalkAttributes::for_coherency(true);
        // QUEUE_IC=WB, QUEUE_OC=WB, QUEUE_SH=ISH, same for tables.
        assert_eq!(cr1_value(coherent, coherent), 0b11_01_01_11_01_01);
        let cfg = StrtabBaseCfg { format: StreamTableFormat::TwoLevel, log2size: 16, split: 8 };
        assert_eq!(cfg.encode(), (1 << 16) | (8 << 6) | 16);
        assert_eq!(StrtabBaseCfg::decode(cfg.encode()), cfg);
        assert_eq!(queue_base_value(0x4000_1000, 8), 0x4000_0000_4000_1008);
        assert_eq!(CommandErrorCode::from_cons(1 << 24 | 5), CommandErrorCode::Illegal);
    }

    #[test]
    fn names_active_global_errors() {
        let active = GlobalErrors::active(0b1_0000_0101, 0b0_0000_0100);
        let names: Vec<_> = active.names().collect();
        assert_eq!(names, ["CMDQ_ERR", "SFM_ERR"]);
    }

    #[test]
    fn granule_and_address_size_encodings_round_trip() {
        for g in [Granule::Size4K, Granule::Size16K, Granule::Size64K] {
            assert_eq!(Granule::from_tg_encoding(g.tg_encoding()), Some(g));
        }
        assert_eq!(Granule::Size16K.tg_encoding(), 0b10);
        for bits in [32, 36, 40, 42, 44, 48, 52] {
            assert_eq!(address_size_bits(address_size_encoding(bits).unwrap()), Some(bits));
        }
        assert_eq!(address_size_encoding(47), None);
    }
}
