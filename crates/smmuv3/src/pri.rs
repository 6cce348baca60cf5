//! Recoverable faults on SMMUv3: the PRI queue (IHI 0070, 8.1 "PRI queue entry format") with
//! CMD_PRI_RESP (4.7.1), and stalled transactions (an event with Stall = 1 and a STAG) resumed
//! or terminated with CMD_RESUME (4.7.2).
//!
//! * A device with PCIe PRI whose ATS translation failed sends a page request; the SMMU writes
//!   a 16-byte entry into the PRI queue. Software answers each page request group once, with
//!   CMD_PRI_RESP, after its last request (Last = 1).
//! * A stage-1 translation fault of a stream whose CD has S = 1 (and STE.S1STALLD = 0) stalls
//!   the transaction: the event record carries Stall = 1 and a STAG, and the transaction waits
//!   for CMD_RESUME naming (StreamID, STAG): Retry translates it again, Terminate aborts it.

use hwio::{address_fields, flag_fields, numeric_fields};

use crate::cmd::{opcode, Command};

/// One PRI queue entry (16 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PriEntry {
    pub words: [u64; 2],
}

impl PriEntry {
    /// Size of an entry in bytes.
    pub const SIZE: usize = 16;

    numeric_fields! {
        /// StreamID (word 0 bits [31:0]).
        stream_id, set_stream_id: word 0, bits 0, width 32;
        /// SubstreamID (word 0 bits [51:32]), valid with SSV.
        substream_id, set_substream_id: word 0, bits 32, width 20;
        /// PRG index (word 1 bits [8:0]): the page request group.
        group, set_group: word 1, bits 0, width 9;
    }
    flag_fields! {
        /// Priv (word 0 bit 58): privileged access requested.
        privileged, set_privileged: word 0, bit 58;
        /// Exec (word 0 bit 59): execute access requested.
        execute, set_execute: word 0, bit 59;
        /// Read (word 0 bit 60).
        read, set_read: word 0, bit 60;
        /// Write (word 0 bit 61).
        write, set_write: word 0, bit 61;
        /// Last (word 0 bit 62): the last request of its group.
        last, set_last: word 0, bit 62;
        /// SSV (word 0 bit 63): SubstreamID valid.
        ssv, set_ssv: word 0, bit 63;
    }
    address_fields! {
        /// Page address (word 1 bits [63:12]).
        address, set_address: word 1, bits 63:12;
    }

    /// The request this entry carries.
    pub fn decode(&self) -> PageRequest {
        PageRequest {
            stream_id: self.stream_id() as u32,
            substream_id: self.ssv().then_some(self.substream_id() as u32),
            address: self.address(),
            read: self.read(),
            write: self.write(),
            last: self.last(),
            group: self.group() as u16,
        }
    }
}

/// A decoded page request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub stream_id: u32,
    pub substream_id: Option<u32>,
    /// The page asked for.
    pub address: u64,
    pub read: bool,
    pub write: bool,
    /// The last request of its group: the response is due once it is seen.
    pub last: bool,
    /// The page request group index (9 bits).
    pub group: u16,
}

impl PageRequest {
    /// The entry an SMMU writes for this request.
    pub fn encode(&self) -> PriEntry {
        let mut entry = PriEntry::default();
        entry
            .set_stream_id(self.stream_id as u64)
            .set_read(self.read)
            .set_write(self.write)
            .set_last(self.last)
            .set_group(self.group as u64 & 0x1ff)
            .set_address(self.address & hwio::bits::addr_mask(12, 63));
        if let Some(ssid) = self.substream_id {
            entry.set_ssv(true).set_substream_id(ssid as u64 & 0xf_ffff);
        }
        entry
    }
}

/// CMD_PRI_RESP's Resp field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriResponse {
    /// 0b00 Deny: PCIe "Invalid Request"; the device fails these accesses.
    Deny = 0,
    /// 0b01 Fail: PCIe "Response Failure"; the device stops issuing page requests.
    Fail = 1,
    /// 0b10 Success: the pages are there; the device retries.
    Success = 2,
}

/// CMD_RESUME's Action field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeAction {
    /// 0b00 Terminate: the stalled transaction is aborted (the device sees an abort).
    Terminate = 0,
    /// 0b01 Retry: the transaction is translated again.
    Retry = 1,
}

/// PRI and stall fields of [`Command`].
impl Command {
    numeric_fields! {
        /// Resp (word 0 bits [13:12]) of CMD_RESUME: the [`ResumeAction`].
        resume_action, set_resume_action: word 0, bits 12, width 2;
        /// STAG (word 1 bits [15:0]) of CMD_RESUME.
        stall_tag, set_stall_tag: word 1, bits 0, width 16;
        /// PRGIndex (word 1 bits [8:0]) of CMD_PRI_RESP.
        pri_group, set_pri_group: word 1, bits 0, width 9;
        /// Resp (word 1 bits [13:12]) of CMD_PRI_RESP: the [`PriResponse`].
        pri_response, set_pri_response: word 1, bits 12, width 2;
    }

    /// CMD_PRI_RESP: answers page request group `group` of `sid` (at `ssid` if its requests
    /// carried one).
    pub fn pri_resp(sid: u32, ssid: Option<u32>, group: u16, response: PriResponse) -> Command {
        let mut cmd = Command::default();
        cmd.set_opcode(opcode::PRI_RESP as u64).set_stream_id(sid as u64);
        if let Some(ssid) = ssid {
            cmd.set_ssv(true).set_substream_id(ssid as u64 & 0xf_ffff);
        }
        cmd.set_pri_group(group as u64 & 0x1ff).set_pri_response(response as u64);
        cmd
    }

    /// CMD_RESUME: resumes (`Retry`) or aborts (`Terminate`) the transaction of `sid` stalled
    /// with tag `stag`.
    pub fn resume(sid: u32, stag: u16, action: ResumeAction) -> Command {
        let mut cmd = Command::default();
        cmd.set_opcode(opcode::RESUME as u64).set_stream_id(sid as u64);
        cmd.set_resume_action(action as u64).set_stall_tag(stag as u64);
        cmd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_and_command_layouts() {
        let request = PageRequest { stream_id: 0x0108, substream_id: Some(0x12345), address: 0x8765_4000, read: true, write: true, last: true, group: 0x1a5 };
        let entry = request.encode();
        // SID [31:0], SSID [51:32], Read 60, Write 61, Last 62, SSV 63; PRGI [8:0], address [63:12].
        assert_eq!(entry.words, [0xf001_2345_0000_0108, 0x8765_4000 | 0x1a5]);
        assert_eq!(entry.decode(), request);
        let response = Command::pri_resp(0x0108, Some(0x12345), 0x1a5, PriResponse::Success);
        // Opcode 0x41, SSV bit 11, SSID [31:12], SID [63:32]; PRGI [8:0], Resp [13:12].
        assert_eq!(response.words, [0x0000_0108_1234_5841, 0x21a5]);
        let resume = Command::resume(0x0108, 0xbeef, ResumeAction::Retry);
        // Opcode 0x44, Action [13:12], SID [63:32]; STAG [15:0].
        assert_eq!(resume.words, [0x0000_0108_0000_1044, 0xbeef]);
    }
}
