//! Command queue entries (IHI 0070, chapter 4 "Commands"). Each command is 16 bytes: the opcode in
//! bits [7:0] of word 0, operands in the rest of word 0 and in word 1.
//!
//! The encoders cover what this driver issues and what QEMU 10.0.2 executes: CMD_SYNC,
//! CMD_PREFETCH_CONFIG, CMD_CFGI_STE(_RANGE), CMD_CFGI_CD(_ALL), CMD_TLBI_NH_ALL/ASID/VA/VAA,
//! CMD_TLBI_S12_VMALL, CMD_TLBI_S2_IPA and CMD_TLBI_NSNH_ALL. QEMU flags any other opcode as
//! CERROR_ILL. The getters decode any command (the software model executes with them).

use hwio::{address_fields, flag_fields, numeric_fields};

/// Command opcodes (spec 4.1 to 4.7).
pub mod opcode {
    pub const PREFETCH_CONFIG: u8 = 0x01;
    pub const PREFETCH_ADDR: u8 = 0x02;
    pub const CFGI_STE: u8 = 0x03;
    /// CMD_CFGI_ALL is CMD_CFGI_STE_RANGE with Range = 31.
    pub const CFGI_STE_RANGE: u8 = 0x04;
    pub const CFGI_CD: u8 = 0x05;
    pub const CFGI_CD_ALL: u8 = 0x06;
    /// SMMUv3.2 CMD_CFGI_VMS_PIDM; not implemented by QEMU (CERROR_ILL).
    pub const CFGI_VMS_PIDM: u8 = 0x07;
    pub const TLBI_NH_ALL: u8 = 0x10;
    pub const TLBI_NH_ASID: u8 = 0x11;
    pub const TLBI_NH_VA: u8 = 0x12;
    pub const TLBI_NH_VAA: u8 = 0x13;
    pub const TLBI_EL3_ALL: u8 = 0x18;
    pub const TLBI_EL3_VA: u8 = 0x1A;
    pub const TLBI_EL2_ALL: u8 = 0x20;
    pub const TLBI_EL2_ASID: u8 = 0x21;
    pub const TLBI_EL2_VA: u8 = 0x22;
    pub const TLBI_EL2_VAA: u8 = 0x23;
    pub const TLBI_S12_VMALL: u8 = 0x28;
    pub const TLBI_S2_IPA: u8 = 0x2A;
    pub const TLBI_NSNH_ALL: u8 = 0x30;
    pub const ATC_INV: u8 = 0x40;
    pub const PRI_RESP: u8 = 0x41;
    pub const RESUME: u8 = 0x44;
    pub const STALL_TERM: u8 = 0x45;
    pub const SYNC: u8 = 0x46;
}

/// CMD_SYNC completion signal, CS field (word 0 bits [13:12]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncSignal {
    /// 0b00: nothing; completion is observed by polling CMDQ_CONS.
    None = 0,
    /// 0b01: raise the CMD_SYNC interrupt (a wired SPI on QEMU virt; MSI fields are ignored).
    Irq = 1,
    /// 0b10: send a WFE wake-up event.
    Sev = 2,
}

/// CMD_CFGI_STE_RANGE Range value that covers every StreamID (CMD_CFGI_ALL).
pub const RANGE_ALL: u64 = 31;

/// One 16-byte command.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
#[repr(C, align(16))]
pub struct Command {
    pub words: [u64; 2],
}

const _: () = assert!(core::mem::size_of::<Command>() == 16);

impl core::fmt::Debug for Command {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Command(op={:#04x}, {:016x?})", self.opcode(), self.words)
    }
}

impl Command {
    /// Size of a command in bytes.
    pub const SIZE: usize = 16;

    fn with_opcode(op: u8) -> Command {
        let mut cmd = Command::default();
        cmd.set_opcode(op as u64);
        cmd
    }

    /// CMD_SYNC (spec 4.7.3): completes when every earlier command has completed.
    pub fn sync(signal: SyncSignal) -> Command {
        let mut cmd = Command::with_opcode(opcode::SYNC);
        cmd.set_sync_cs(signal as u64);
        cmd
    }

    /// CMD_PREFETCH_CONFIG (spec 4.2.1): hint to fetch the STE/CD of `sid`.
    pub fn prefetch_config(sid: u32) -> Command {
        let mut cmd = Command::with_opcode(opcode::PREFETCH_CONFIG);
        cmd.set_stream_id(sid as u64);
        cmd
    }

    /// CMD_CFGI_STE (spec 4.3.1). `leaf_only` = Leaf: invalidate only the STE, not the CDs and
    /// other structures cached through it.
    pub fn cfgi_ste(sid: u32, leaf_only: bool) -> Command {
        let mut cmd = Command::with_opcode(opcode::CFGI_STE);
        cmd.set_stream_id(sid as u64).set_leaf(leaf_only);
        cmd
    }

    /// CMD_CFGI_STE_RANGE (spec 4.3.2): the 2^(range+1) StreamIDs aligned around `sid`.
    pub fn cfgi_ste_range(sid: u32, range: u64) -> Command {
        let mut cmd = Command::with_opcode(opcode::CFGI_STE_RANGE);
        cmd.set_stream_id(sid as u64).set_range(range);
        cmd
    }

    /// CMD_CFGI_ALL (spec 4.3.3): every cached STE and CD.
    pub fn cfgi_all() -> Command {
        Command::cfgi_ste_range(0, RANGE_ALL)
    }

    /// CMD_CFGI_CD (spec 4.3.4): the CD of `(sid, ssid)`.
    pub fn cfgi_cd(sid: u32, ssid: u32, leaf_only: bool) -> Command {
        let mut cmd = Command::with_opcode(opcode::CFGI_CD);
        cmd.set_stream_id(sid as u64).set_substream_id(ssid as u64).set_leaf(leaf_only);
        cmd
    }

    /// CMD_CFGI_CD_ALL (spec 4.3.5): every CD of `sid`.
    pub fn cfgi_cd_all(sid: u32) -> Command {
        let mut cmd = Command::with_opcode(opcode::CFGI_CD_ALL);
        cmd.set_stream_id(sid as u64);
        cmd
    }

    /// CMD_TLBI_NH_ALL (spec 4.4.2): every stage-1 entry tagged with `vmid`.
    pub fn tlbi_nh_all(vmid: u16) -> Command {
        let mut cmd = Command::with_opcode(opcode::TLBI_NH_ALL);
        cmd.set_vmid(vmid as u64);
        cmd
    }

    /// CMD_TLBI_NH_ASID (spec 4.4.3): stage-1 entries of `(vmid, asid)`.
    pub fn tlbi_nh_asid(vmid: u16, asid: u16) -> Command {
        let mut cmd = Command::with_opcode(opcode::TLBI_NH_ASID);
        cmd.set_vmid(vmid as u64).set_asid(asid as u64);
        cmd
    }

    /// CMD_TLBI_NH_VA (spec 4.4.4): stage-1 entries of `(vmid, asid)` for the page holding `va`.
    /// `leaf_only`: only last-level entries changed, walk caches may be kept. TG = 0 (no range).
    pub fn tlbi_nh_va(vmid: u16, asid: u16, va: u64, leaf_only: bool) -> Command {
        let mut cmd = Command::with_opcode(opcode::TLBI_NH_VA);
        cmd.set_vmid(vmid as u64).set_asid(asid as u64).set_va(va & !0xFFF).set_leaf(leaf_only);
        cmd
    }

    /// CMD_TLBI_NH_VAA (spec 4.4.5): like NH_VA for every ASID of `vmid`.
    pub fn tlbi_nh_vaa(vmid: u16, va: u64, leaf_only: bool) -> Command {
        let mut cmd = Command::with_opcode(opcode::TLBI_NH_VAA);
        cmd.set_vmid(vmid as u64).set_va(va & !0xFFF).set_leaf(leaf_only);
        cmd
    }

    /// CMD_TLBI_S12_VMALL (spec 4.4.7): every stage-1 and stage-2 entry of `vmid`.
    pub fn tlbi_s12_vmall(vmid: u16) -> Command {
        let mut cmd = Command::with_opcode(opcode::TLBI_S12_VMALL);
        cmd.set_vmid(vmid as u64);
        cmd
    }

    /// CMD_TLBI_S2_IPA (spec 4.4.8): stage-2 entries of `vmid` for the page holding `ipa`. It does
    /// not remove combined stage-1+2 entries; follow with TLBI_NH_ALL for nested streams.
    pub fn tlbi_s2_ipa(vmid: u16, ipa: u64, leaf_only: bool) -> Command {
        let mut cmd = Command::with_opcode(opcode::TLBI_S2_IPA);
        cmd.set_vmid(vmid as u64).set_ipa(ipa & hwio::bits::addr_mask(12, 51)).set_leaf(leaf_only);
        cmd
    }

    /// CMD_TLBI_NSNH_ALL (spec 4.4.9): every Non-secure non-Hyp entry.
    pub fn tlbi_nsnh_all() -> Command {
        Command::with_opcode(opcode::TLBI_NSNH_ALL)
    }

    /// Opcode as a byte.
    pub const fn op(&self) -> u8 {
        self.opcode() as u8
    }

    flag_fields! {
        /// SSec (word 0 bit 10): Secure StreamID; must be 0 from the Non-secure queue.
        ssec, set_ssec: word 0, bit 10;
        /// SSV (word 0 bit 11): SubstreamID valid.
        ssv, set_ssv: word 0, bit 11;
        /// Leaf (word 1 bit 0) of CFGI_STE, CFGI_CD and the TLBI-by-address commands.
        leaf, set_leaf: word 1, bit 0;
    }

    numeric_fields! {
        /// Opcode (word 0 bits [7:0]).
        opcode, set_opcode: word 0, bits 0, width 8;
        /// SubstreamID (word 0 bits [31:12]) of CFGI_CD and PREFETCH.
        substream_id, set_substream_id: word 0, bits 12, width 20;
        /// StreamID (word 0 bits [63:32]) of the CFGI and PREFETCH commands.
        stream_id, set_stream_id: word 0, bits 32, width 32;
        /// CS (word 0 bits [13:12]) of CMD_SYNC.
        sync_cs, set_sync_cs: word 0, bits 12, width 2;
        /// NUM (word 0 bits [16:12]) of range TLBIs (IDR3.RIL).
        num, set_num: word 0, bits 12, width 5;
        /// SCALE (word 0 bits [24:20]) of range TLBIs.
        scale, set_scale: word 0, bits 20, width 5;
        /// VMID (word 0 bits [47:32]) of TLBI commands.
        vmid, set_vmid: word 0, bits 32, width 16;
        /// ASID (word 0 bits [63:48]) of TLBI commands.
        asid, set_asid: word 0, bits 48, width 16;
        /// Range (word 1 bits [4:0]) of CFGI_STE_RANGE.
        range, set_range: word 1, bits 0, width 5;
        /// TTL (word 1 bits [9:8]) of TLBI-by-address: level hint (needs TG != 0).
        ttl, set_ttl: word 1, bits 8, width 2;
        /// TG (word 1 bits [11:10]) of TLBI-by-address: range granule, 0 = single address.
        tg, set_tg: word 1, bits 10, width 2;
    }

    address_fields! {
        /// Address (word 1 bits [63:12]) of TLBI_NH_VA/VAA.
        va, set_va: word 1, bits 63:12;
        /// Address (word 1 bits [51:12]) of TLBI_S2_IPA.
        ipa, set_ipa: word 1, bits 51:12;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_invalidation_commands_at_spec_positions() {
        let cfg = Command::cfgi_ste(0x0108, true);
        assert_eq!(cfg.words, [0x0000_0108_0000_0003, 1]);
        assert_eq!(Command::cfgi_all().words, [0x04, 31]);
        let va = Command::tlbi_nh_va(3, 0x77, 0xFFFF_8000_1234_5678, true);
        assert_eq!(va.words[0], 0x12 | 3 << 32 | 0x77 << 48);
        assert_eq!(va.words[1], 0xFFFF_8000_1234_5000 | 1);
        let ipa = Command::tlbi_s2_ipa(9, 0x8_4000_1FFF, false);
        assert_eq!(ipa.words, [0x2A | 9 << 32, 0x8_4000_1000]);
        assert_eq!(ipa.ipa(), 0x8_4000_1000);
        assert_eq!(Command::sync(SyncSignal::Irq).words, [0x46 | 1 << 12, 0]);
        let cd = Command::cfgi_cd(5, 0, true);
        assert_eq!((cd.op(), cd.stream_id(), cd.leaf()), (opcode::CFGI_CD, 5, true));
    }
}
