//! Event queue records (IHI 0070, section 7.3). Each record is 32 bytes:
//!
//! * word 0: EventID [7:0], SSV [11], SubstreamID [31:12], StreamID [63:32];
//! * word 1: STAG [15:0], Stall [31], PnU [33], InD [34], RnW [35], S2 [39], CLASS [41:40];
//! * word 2: InputAddr [63:0];
//! * word 3: IPA [51:12] for stage-2 faults, or FetchAddr [51:3] for fetch aborts.
//!
//! Which fields are meaningful depends on the event type (spec 7.3.2 to 7.3.20);
//! [`DecodedEvent`] exposes only those, as `Option`s.
//!
//! QEMU notes: QEMU 10.0.2 fills CLASS only for F_WALK_EABT (stage-1 faults come out as CLASS = 0
//! = CD), records F_CD_FETCH's address in the InputAddr word instead of FetchAddr, and never
//! produces F_BAD_ATS_TREQ, F_TLB_CONFLICT or E_PAGE_REQUEST. The decoder follows the spec.

use hwio::{flag_fields, numeric_fields};

/// Event type numbers (spec table 7-3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// 0x01 Unsupported upstream transaction.
    UnsupportedUpstreamTransaction,
    /// 0x02 C_BAD_STREAMID: StreamID outside the stream table (or an invalid L1 descriptor).
    BadStreamId,
    /// 0x03 F_STE_FETCH: external abort fetching an STE.
    SteFetch,
    /// 0x04 C_BAD_STE: STE invalid (V = 0) or malformed.
    BadSte,
    /// 0x05 F_BAD_ATS_TREQ: ATS translation request not allowed.
    BadAtsTranslationRequest,
    /// 0x06 F_STREAM_DISABLED: non-substream traffic with S1DSS = terminate.
    StreamDisabled,
    /// 0x07 F_TRANSL_FORBIDDEN: ATS-translated traffic where it isn't allowed.
    TranslationForbidden,
    /// 0x08 C_BAD_SUBSTREAMID: SubstreamID out of range or substreams disabled.
    BadSubstreamId,
    /// 0x09 F_CD_FETCH: external abort fetching a CD.
    CdFetch,
    /// 0x0A C_BAD_CD: CD invalid or malformed.
    BadCd,
    /// 0x0B F_WALK_EABT: external abort during a table walk.
    WalkExternalAbort,
    /// 0x10 F_TRANSLATION.
    Translation,
    /// 0x11 F_ADDR_SIZE.
    AddressSize,
    /// 0x12 F_ACCESS: access flag fault.
    Access,
    /// 0x13 F_PERMISSION.
    Permission,
    /// 0x20 F_TLB_CONFLICT.
    TlbConflict,
    /// 0x21 F_CFG_CONFLICT.
    ConfigConflict,
    /// 0x24 E_PAGE_REQUEST: speculative page request hint.
    PageRequest,
    /// 0x25 F_VMS_FETCH: external abort fetching a VMS (SMMUv3.2).
    VmsFetch,
    /// Any other number (IMPLEMENTATION DEFINED or reserved).
    Other(u8),
}

impl EventType {
    pub const fn from_id(id: u8) -> EventType {
        match id {
            0x01 => EventType::UnsupportedUpstreamTransaction,
            0x02 => EventType::BadStreamId,
            0x03 => EventType::SteFetch,
            0x04 => EventType::BadSte,
            0x05 => EventType::BadAtsTranslationRequest,
            0x06 => EventType::StreamDisabled,
            0x07 => EventType::TranslationForbidden,
            0x08 => EventType::BadSubstreamId,
            0x09 => EventType::CdFetch,
            0x0A => EventType::BadCd,
            0x0B => EventType::WalkExternalAbort,
            0x10 => EventType::Translation,
            0x11 => EventType::AddressSize,
            0x12 => EventType::Access,
            0x13 => EventType::Permission,
            0x20 => EventType::TlbConflict,
            0x21 => EventType::ConfigConflict,
            0x24 => EventType::PageRequest,
            0x25 => EventType::VmsFetch,
            other => EventType::Other(other),
        }
    }

    pub const fn id(self) -> u8 {
        match self {
            EventType::UnsupportedUpstreamTransaction => 0x01,
            EventType::BadStreamId => 0x02,
            EventType::SteFetch => 0x03,
            EventType::BadSte => 0x04,
            EventType::BadAtsTranslationRequest => 0x05,
            EventType::StreamDisabled => 0x06,
            EventType::TranslationForbidden => 0x07,
            EventType::BadSubstreamId => 0x08,
            EventType::CdFetch => 0x09,
            EventType::BadCd => 0x0A,
            EventType::WalkExternalAbort => 0x0B,
            EventType::Translation => 0x10,
            EventType::AddressSize => 0x11,
            EventType::Access => 0x12,
            EventType::Permission => 0x13,
            EventType::TlbConflict => 0x20,
            EventType::ConfigConflict => 0x21,
            EventType::PageRequest => 0x24,
            EventType::VmsFetch => 0x25,
            EventType::Other(id) => id,
        }
    }

    /// The spec's name, for logs.
    pub const fn name(self) -> &'static str {
        match self {
            EventType::UnsupportedUpstreamTransaction => "F_UUT",
            EventType::BadStreamId => "C_BAD_STREAMID",
            EventType::SteFetch => "F_STE_FETCH",
            EventType::BadSte => "C_BAD_STE",
            EventType::BadAtsTranslationRequest => "F_BAD_ATS_TREQ",
            EventType::StreamDisabled => "F_STREAM_DISABLED",
            EventType::TranslationForbidden => "F_TRANSL_FORBIDDEN",
            EventType::BadSubstreamId => "C_BAD_SUBSTREAMID",
            EventType::CdFetch => "F_CD_FETCH",
            EventType::BadCd => "C_BAD_CD",
            EventType::WalkExternalAbort => "F_WALK_EABT",
            EventType::Translation => "F_TRANSLATION",
            EventType::AddressSize => "F_ADDR_SIZE",
            EventType::Access => "F_ACCESS",
            EventType::Permission => "F_PERMISSION",
            EventType::TlbConflict => "F_TLB_CONFLICT",
            EventType::ConfigConflict => "F_CFG_CONFLICT",
            EventType::PageRequest => "E_PAGE_REQUEST",
            EventType::VmsFetch => "F_VMS_FETCH",
            EventType::Other(_) => "IMPDEF/reserved",
        }
    }

    /// Faults whose record is suppressed unless CD.R (stage 1) or STE.S2R (stage 2) is set.
    pub const fn is_translation_class(self) -> bool {
        matches!(self, EventType::Translation | EventType::AddressSize | EventType::Access | EventType::Permission)
    }
}

/// CLASS (word 1 bits [41:40]): what the SMMU was doing when the fault happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultClass {
    /// 0b00: fetching a CD (through stage 2 when nested).
    ContextDescriptor,
    /// 0b01: walking stage-1 translation tables (through stage 2 when nested).
    TranslationTable,
    /// 0b10: translating the input address itself.
    Input,
    /// 0b11: reserved.
    Reserved,
}

impl FaultClass {
    pub const fn from_bits(bits: u64) -> FaultClass {
        match bits {
            0 => FaultClass::ContextDescriptor,
            1 => FaultClass::TranslationTable,
            2 => FaultClass::Input,
            _ => FaultClass::Reserved,
        }
    }
}

/// One raw 32-byte event record.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
#[repr(C, align(32))]
pub struct EventRecord {
    pub words: [u64; 4],
}

const _: () = assert!(core::mem::size_of::<EventRecord>() == 32);

impl core::fmt::Debug for EventRecord {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "EventRecord{:016x?}", self.words)
    }
}

impl EventRecord {
    /// Size of a record in bytes.
    pub const SIZE: usize = 32;

    pub const fn event_type(&self) -> EventType {
        EventType::from_id(self.event_id() as u8)
    }

    flag_fields! {
        /// SSV (word 0 bit 11): SubstreamID valid.
        ssv, set_ssv: word 0, bit 11;
        /// Stall (word 1 bit 31): the transaction is stalled awaiting CMD_RESUME.
        stall, set_stall: word 1, bit 31;
        /// PnU (word 1 bit 33): privileged (1) or unprivileged (0) transaction.
        privileged, set_privileged: word 1, bit 33;
        /// InD (word 1 bit 34): instruction (1) or data (0) transaction.
        instruction, set_instruction: word 1, bit 34;
        /// RnW (word 1 bit 35): read (1) or write (0).
        read, set_read: word 1, bit 35;
        /// S2 (word 1 bit 39): the fault happened at stage 2.
        stage2, set_stage2: word 1, bit 39;
    }

    numeric_fields! {
        /// EventID (word 0 bits [7:0]).
        event_id, set_event_id: word 0, bits 0, width 8;
        /// SubstreamID (word 0 bits [31:12]).
        substream_id, set_substream_id: word 0, bits 12, width 20;
        /// StreamID (word 0 bits [63:32]).
        stream_id, set_stream_id: word 0, bits 32, width 32;
        /// STAG (word 1 bits [15:0]): stall tag.
        stag, set_stag: word 1, bits 0, width 16;
        /// CLASS (word 1 bits [41:40]), see [`FaultClass`].
        class_bits, set_class_bits: word 1, bits 40, width 2;
        /// InputAddr (word 2).
        input_addr, set_input_addr: word 2, bits 0, width 64;
    }

    /// IPA (word 3 bits [51:12]) of a stage-2 fault.
    pub const fn ipa(&self) -> u64 {
        self.words[3] & hwio::bits::addr_mask(12, 51)
    }
    pub fn set_ipa(&mut self, ipa: u64) -> &mut Self {
        self.words[3] = ipa & hwio::bits::addr_mask(12, 51);
        self
    }
    /// FetchAddr (word 3 bits [51:3]) of F_STE_FETCH, F_CD_FETCH, F_WALK_EABT, F_VMS_FETCH.
    pub const fn fetch_addr(&self) -> u64 {
        self.words[3] & hwio::bits::addr_mask(3, 51)
    }
    pub fn set_fetch_addr(&mut self, addr: u64) -> &mut Self {
        self.words[3] = addr & hwio::bits::addr_mask(3, 51);
        self
    }

    /// The meaningful fields of this record, per event type. Inlined: a caller that reads
    /// only some fields (the fault path) does not pay for the others.
    #[inline]
    pub fn decode(&self) -> DecodedEvent {
        let kind = self.event_type();
        // Field groups per spec 7.3: which event types carry which fields.
        let has_substream = !matches!(
            kind,
            EventType::StreamDisabled | EventType::TranslationForbidden | EventType::VmsFetch | EventType::Other(_)
        );
        let has_input = matches!(
            kind,
            EventType::UnsupportedUpstreamTransaction
                | EventType::BadAtsTranslationRequest
                | EventType::TranslationForbidden
                | EventType::WalkExternalAbort
                | EventType::Translation
                | EventType::AddressSize
                | EventType::Access
                | EventType::Permission
                | EventType::TlbConflict
                | EventType::ConfigConflict
                | EventType::PageRequest
        );
        let has_access_kind = has_input;
        let has_stage_and_class = matches!(kind, EventType::WalkExternalAbort | EventType::TlbConflict)
            || kind.is_translation_class();
        let has_fetch = matches!(
            kind,
            EventType::SteFetch | EventType::CdFetch | EventType::WalkExternalAbort | EventType::VmsFetch
        );
        let stage2 = has_stage_and_class && self.stage2();
        DecodedEvent {
            kind,
            stream_id: self.stream_id() as u32,
            substream_id: (has_substream && self.ssv()).then(|| self.substream_id() as u32),
            input_addr: has_input.then(|| self.input_addr()),
            // The IPA word is valid for stage-2 translation-class faults only.
            ipa: (stage2 && kind.is_translation_class()).then(|| self.ipa()),
            fetch_addr: has_fetch.then(|| self.fetch_addr()),
            read: has_access_kind.then(|| self.read()),
            instruction: has_access_kind.then(|| self.instruction()),
            privileged: has_access_kind.then(|| self.privileged()),
            stage2,
            class: has_stage_and_class.then(|| FaultClass::from_bits(self.class_bits())),
            stall_tag: (has_stage_and_class && self.stall()).then(|| self.stag() as u16),
        }
    }
}

/// An event record reduced to the fields its type defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodedEvent {
    pub kind: EventType,
    pub stream_id: u32,
    /// SubstreamID when SSV = 1.
    pub substream_id: Option<u32>,
    /// Input (IOVA) address of the faulting transaction.
    pub input_addr: Option<u64>,
    /// Faulting IPA of a stage-2 translation-class fault (page aligned: bits [51:12]).
    pub ipa: Option<u64>,
    /// Physical address whose fetch aborted.
    pub fetch_addr: Option<u64>,
    /// RnW: true for reads.
    pub read: Option<bool>,
    /// InD: true for instruction fetches.
    pub instruction: Option<bool>,
    /// PnU: true for privileged transactions.
    pub privileged: Option<bool>,
    /// S2: the fault was raised by stage 2.
    pub stage2: bool,
    pub class: Option<FaultClass>,
    /// STAG of a stalled transaction.
    pub stall_tag: Option<u16>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_round_trips_through_its_id() {
        for id in 0..=0xFFu8 {
            assert_eq!(EventType::from_id(id).id(), id);
        }
        assert_eq!(EventType::from_id(0x25), EventType::VmsFetch);
        assert_eq!(EventType::from_id(0x0C), EventType::Other(0x0C));
    }

    #[test]
    fn decodes_a_stage2_permission_fault() {
        let mut rec = EventRecord::default();
        rec.set_event_id(0x13).set_stream_id(0x0010).set_read(false).set_stage2(true).set_class_bits(1);
        rec.set_input_addr(0x1234_5678).set_ipa(0x8_0000_3000);
        let ev = rec.decode();
        assert_eq!(ev.kind, EventType::Permission);
        assert_eq!(ev.stream_id, 0x10);
        assert_eq!(ev.substream_id, None);
        assert_eq!(ev.input_addr, Some(0x1234_5678));
        assert_eq!(ev.ipa, Some(0x8_0000_3000));
        assert_eq!(ev.read, Some(false));
        assert!(ev.stage2);
        assert_eq!(ev.class, Some(FaultClass::TranslationTable));
        assert_eq!(ev.fetch_addr, None);
        // Raw layout: EventID and StreamID in word 0, S2 at bit 39 and CLASS at 41:40 of word 1.
        assert_eq!(rec.words[0], 0x0000_0010_0000_0013);
        assert_eq!(rec.words[1], 1 << 39 | 1 << 40);
    }

    #[test]
    fn decodes_fetch_aborts_and_config_errors_without_address_fields() {
        let mut rec = EventRecord::default();
        rec.set_event_id(0x03).set_stream_id(7).set_ssv(true).set_substream_id(3).set_fetch_addr(0x4000_0048);
        let ev = rec.decode();
        assert_eq!(ev.kind, EventType::SteFetch);
        assert_eq!(ev.fetch_addr, Some(0x4000_0048));
        assert_eq!(ev.substream_id, Some(3));
        assert_eq!((ev.input_addr, ev.read, ev.class), (None, None, None));

        let mut bad = EventRecord::default();
        bad.set_event_id(0x04).set_stream_id(9).set_input_addr(0xdead);
        let ev = bad.decode();
        assert_eq!((ev.kind, ev.stream_id, ev.input_addr), (EventType::BadSte, 9, None));
    }
}
