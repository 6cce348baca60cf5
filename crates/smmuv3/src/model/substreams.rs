//! The model's substreams (beyond QEMU 10.0.2, which has none): with IDR1.SSIDSIZE > 0 a
//! stage-1 STE may have S1CDMax > 0 and point at a CD table, linear (S1Fmt = 0b00) or
//! two-level with 4 KiB leaves of 64 CDs (S1Fmt = 0b01, needs IDR0.CD2L), as spec 5.4 lays
//! them out. A transaction with a SubstreamID at or beyond 2^S1CDMax, or to a stream without
//! substreams, is C_BAD_SUBSTREAMID; one without a SubstreamID follows S1DSS (terminate with
//! F_STREAM_DISABLED, bypass stage 1, or use CD 0). Substream CDs are cached by (StreamID,
//! SubstreamID) and dropped by CMD_CFGI_CD naming them, CMD_CFGI_CD_ALL and the STE
//! invalidations of their stream.

use crate::cd::ContextDescriptor;
use crate::event::{EventType, FaultClass};
use crate::ste::{DefaultSubstream, Ste, StreamConfig};

use super::walk::Fault;
use super::{config_fault, fetch_fault, Outcome, SmmuModel, State};

/// CDs per leaf table of a two-level CD table.
const CDS_PER_LEAF_LOG2: u32 = 6;

/// What a stage-1 stream with a CD table does with a transaction.
pub(super) enum SubstreamCd {
    /// Translate with this CD.
    Cd(ContextDescriptor),
    /// S1DSS = bypass: stage 1 is skipped.
    Bypass,
}

impl SmmuModel {
    /// Whether an STE's substream fields are acceptable on this SMMU.
    pub(super) fn substreams_valid(&self, ste: &Ste, stream: StreamConfig) -> bool {
        let id = self.id();
        let max = ste.s1_cd_max() as u32;
        if max == 0 {
            return true;
        }
        let format_ok = match ste.s1_fmt() {
            0b00 => true,
            0b01 => id.cd_two_level(),
            _ => false,
        };
        // Nested streams with CD tables are not modelled.
        stream == StreamConfig::Stage1 && max <= id.ssid_bits() && format_ok && ste.s1dss() != 0b11
    }

    /// The CD of `ssid` (or of traffic without one) on a stream whose STE has S1CDMax > 0.
    pub(super) fn substream_cd(&self, state: &mut State, ste: &Ste, sid: u32, ssid: Option<u32>) -> Result<SubstreamCd, Outcome> {
        let ssid = match ssid {
            Some(ssid) if ssid >> ste.s1_cd_max() != 0 => return Err(config_fault(EventType::BadSubstreamId)),
            Some(ssid) => ssid,
            None => match ste.s1dss() {
                x if x == DefaultSubstream::Terminate as u64 => return Err(config_fault(EventType::StreamDisabled)),
                x if x == DefaultSubstream::Bypass as u64 => return Ok(SubstreamCd::Bypass),
                _ => 0,
            },
        };
        if let Some(cd) = state.substream_cds.get(&(sid, ssid)) {
            return Ok(SubstreamCd::Cd(*cd));
        }
        let memory = self.view();
        let table = ste.s1_context_ptr();
        let cd_addr = if ste.s1_fmt() == 0b00 {
            table + ssid as u64 * ContextDescriptor::SIZE as u64
        } else {
            let l1_addr = table + (ssid >> CDS_PER_LEAF_LOG2) as u64 * 8;
            let l1 = memory.read_u64(l1_addr).ok_or(fetch_fault(EventType::CdFetch, l1_addr))?;
            // An invalid level-1 descriptor makes every CD under it invalid (C_BAD_CD).
            if l1 & 1 == 0 {
                return Err(config_fault(EventType::BadCd));
            }
            (l1 & hwio::bits::addr_mask(12, 51)) + (ssid as u64 & ((1 << CDS_PER_LEAF_LOG2) - 1)) * ContextDescriptor::SIZE as u64
        };
        let mut cd = ContextDescriptor::default();
        for (i, word) in cd.words.iter_mut().enumerate() {
            *word = memory.read_u64(cd_addr + 8 * i as u64).ok_or(fetch_fault(EventType::CdFetch, cd_addr))?;
        }
        if !super::cd_valid(&cd, &self.id()) {
            return Err(Outcome::Fault { fault: Fault::new(EventType::BadCd, false, FaultClass::ContextDescriptor, 0), record_allowed: true });
        }
        state.substream_cds.insert((sid, ssid), cd);
        Ok(SubstreamCd::Cd(cd))
    }
}
