//! Codec tests: every request and reply round-trips, every malformed message is refused
//! with its own error.

use crate::wire::*;
use crate::*;

fn h(value: u32) -> Handle {
    Handle(value)
}

fn stage1() -> Stage1Config {
    Stage1Config { format: Stage1Format::VtdFirstLevel, table_root: 0x7000, address_width: 57, table_entries_log2: 0 }
}

/// One request per opcode, with non-trivial field values (so a swapped word is caught).
fn sample_requests() -> Vec<Request> {
    vec![
        Request::IoasAlloc,
        Request::IoasMap { ioas: h(3), iova: IovaChoice::Fixed(0x10_0000), perm: Perm::READ_WRITE, offset: 0x2000, length: 0x4000 },
        Request::IoasMap { ioas: h(3), iova: IovaChoice::Auto, perm: Perm::READ, offset: 0, length: 0x1000 },
        Request::IoasUnmap { ioas: h(3), iova: 0x10_0000, length: 0x4000 },
        Request::IoasUnmapAll { ioas: h(4) },
        Request::IoasCopy { dst: h(5), dst_iova: IovaChoice::Fixed(0x9000), src: h(6), src_iova: 0x3000, length: 0x2000, perm: Perm::WRITE },
        Request::IoasCopy { dst: h(5), dst_iova: IovaChoice::Auto, src: h(6), src_iova: 0x3000, length: 0x2000, perm: Perm::READ },
        Request::IoasIovaRanges { ioas: h(7), first: 2 },
        Request::IoasAllowIovas {
            ioas: h(7),
            ranges: RangeList::new(&[IovaRange::new(0x1000, 0x1fff).unwrap(), IovaRange::new(0x8000, u64::MAX).unwrap()]).unwrap(),
        },
        Request::IoasAllowIovas { ioas: h(7), ranges: RangeList::EMPTY },
        Request::HwptAlloc { device: h(1), ioas: h(2), fault: Some(h(9)), nest_parent: true, dirty_tracking: false },
        Request::HwptAlloc { device: h(1), ioas: h(2), fault: None, nest_parent: false, dirty_tracking: true },
        Request::HwptAllocNested { device: h(1), parent: h(8), fault: Some(h(9)), stage1: stage1() },
        Request::HwptAllocNested {
            device: h(1),
            parent: h(8),
            fault: None,
            stage1: Stage1Config { format: Stage1Format::SmmuV3ContextDescriptors, table_root: 0x4000, address_width: 0, table_entries_log2: 5 },
        },
        Request::DeviceBind,
        Request::DeviceAttach { device: h(1), hwpt: h(8), pasid: None },
        Request::DeviceAttach { device: h(1), hwpt: h(8), pasid: Some(PASID_MAX) },
        Request::DeviceReplace { device: h(1), hwpt: h(10), pasid: Some(7) },
        Request::DeviceDetach { device: h(1), pasid: Some(7) },
        Request::DeviceDetach { device: h(1), pasid: None },
        Request::PasidAlloc,
        Request::PasidFree { pasid: 12 },
        Request::SvaBind { device: h(1), pasid: 12, fault: Some(h(9)) },
        Request::SvaUnbind { device: h(1), pasid: 12 },
        Request::FaultAlloc,
        Request::FaultRead { fault: h(9) },
        Request::FaultRespond { fault: h(9), cookie: 44, code: PageResponseCode::Invalid },
        Request::HwptInvalidate { hwpt: h(8), offset: 0x30, count: INVALIDATIONS_PER_CALL },
        Request::HwptSetDirtyTracking { hwpt: h(8), enable: true },
        Request::HwptSetDirtyTracking { hwpt: h(8), enable: false },
        Request::HwptGetDirtyBitmap { target: h(8), iova: 0x20_0000, length: 0x10_0000, page_size: 0x1000, no_clear: false },
        Request::HwptGetDirtyBitmap { target: h(8), iova: 0x20_0000, length: 0x10_0000, page_size: 0x1000, no_clear: true },
        Request::HwptGetDirtyBitmapInto { target: h(8), iova: 0, length: 1 << 30, page_size: 0x1000, no_clear: false },
        Request::HwptGetDirtyBitmapInto { target: h(3), iova: 1 << 30, length: 1 << 21, page_size: 1 << 21, no_clear: true },
        Request::HandleDerive { handle: h(2), rights: Rights::MAP.union(Rights::UNMAP), recipient: 77 },
        Request::HandleAccept { from: 78, accept: true },
        Request::HandleAccept { from: 79, accept: false },
        Request::HandleRevoke { handle: h(11) },
        Request::Destroy { handle: h(12) },
        Request::GetInfo { device: h(1) },
        Request::MsiAlloc { device: h(1), count: 4, first_slot: 40 },
        Request::MemoryRegister,
        Request::IoasMapRegistered { ioas: h(3), memory: h(13), iova: IovaChoice::Fixed(0x20_0000), perm: Perm::WRITE, offset: 0x3000, length: 0x5000 },
        Request::IoasMapRegistered { ioas: h(3), memory: h(13), iova: IovaChoice::Auto, perm: Perm::READ, offset: 0, length: 0x1000 },
    ]
}

#[test]
fn every_request_round_trips() {
    let samples = sample_requests();
    for opcode in Opcode::ALL {
        assert!(samples.iter().any(|r| r.opcode() == opcode), "no sample for {opcode:?}");
    }
    for request in samples {
        let msg = request.encode();
        assert_eq!(msg[0] & 0xffff, request.opcode() as u64);
        let decoded = Request::decode(&msg, request.opcode().takes_capability());
        assert_eq!(decoded, Ok(request), "{msg:x?}");
    }
}

#[test]
fn capability_presence_is_checked_both_ways() {
    let map = Request::IoasMap { ioas: h(1), iova: IovaChoice::Auto, perm: Perm::READ, offset: 0, length: 0x1000 };
    assert_eq!(Request::decode(&map.encode(), false), Err(Error::MissingCapability));
    assert_eq!(Request::decode(&Request::DeviceBind.encode(), false), Err(Error::MissingCapability));
    assert_eq!(Request::decode(&Request::MemoryRegister.encode(), false), Err(Error::MissingCapability));
    let registered = Request::IoasMapRegistered { ioas: h(1), memory: h(2), iova: IovaChoice::Auto, perm: Perm::READ, offset: 0, length: 0x1000 };
    assert_eq!(Request::decode(&registered.encode(), true), Err(Error::UnexpectedCapability));
    assert_eq!(Request::decode(&Request::IoasAlloc.encode(), true), Err(Error::UnexpectedCapability));
    let unmap = Request::IoasUnmapAll { ioas: h(1) };
    assert_eq!(Request::decode(&unmap.encode(), true), Err(Error::UnexpectedCapability));
}

#[test]
fn unknown_opcodes_are_refused() {
    // 0, the first number after the highest operation, and the largest.
    let highest = Opcode::ALL.iter().map(|&opcode| opcode as u64).max().unwrap_or(0);
    for opcode in [0u64, highest + 1, 0xffff] {
        let mut msg = [0u64; 8];
        msg[0] = opcode;
        assert_eq!(Request::decode(&msg, false), Err(Error::UnknownOpcode), "opcode {opcode}");
    }
}

#[test]
fn msi_counts_other_than_powers_of_two_up_to_32_are_refused() {
    for count in [0u64, 3, 6, 64, 1 << 32 | 1] {
        let mut msg = Request::MsiAlloc { device: h(1), count: 1, first_slot: 40 }.encode();
        msg[2] = count;
        assert_eq!(Request::decode(&msg, false), Err(Error::InvalidRange), "count {count}");
    }
    let mut msg = Request::MsiAlloc { device: h(1), count: 32, first_slot: 40 }.encode();
    assert_eq!(Request::decode(&msg, false), Ok(Request::MsiAlloc { device: h(1), count: 32, first_slot: 40 }));
    msg[4] = 1;
    assert_eq!(Request::decode(&msg, false), Err(Error::ReservedBitsSet), "word after the slot");
}

#[test]
fn reserved_header_flag_and_word_bits_are_refused() {
    let mut msg = Request::IoasUnmapAll { ioas: h(1) }.encode();
    msg[0] |= 1 << 40;
    assert_eq!(Request::decode(&msg, false), Err(Error::ReservedBitsSet), "header");

    let mut msg = Request::IoasUnmapAll { ioas: h(1) }.encode();
    msg[0] |= 1 << 16;
    assert_eq!(Request::decode(&msg, false), Err(Error::ReservedBitsSet), "flags");

    let mut msg = Request::IoasUnmapAll { ioas: h(1) }.encode();
    msg[7] = 1;
    assert_eq!(Request::decode(&msg, false), Err(Error::ReservedBitsSet), "unused word");

    let mut msg = Request::IoasUnmapAll { ioas: h(1) }.encode();
    msg[1] |= 1 << 32;
    assert_eq!(Request::decode(&msg, false), Err(Error::ReservedBitsSet), "handle upper half");

    let map = Request::IoasMap { ioas: h(1), iova: IovaChoice::Auto, perm: Perm::READ, offset: 0, length: 0x1000 };
    let mut msg = map.encode();
    msg[0] |= 1 << (16 + 3);
    assert_eq!(Request::decode(&msg, true), Err(Error::ReservedBitsSet), "undefined map flag");
    let mut msg = map.encode();
    msg[2] = 0x5000;
    assert_eq!(Request::decode(&msg, true), Err(Error::ReservedBitsSet), "IOVA without FIXED_IOVA");

    let hwpt = Request::HwptAlloc { device: h(1), ioas: h(2), fault: None, nest_parent: false, dirty_tracking: false };
    let mut msg = hwpt.encode();
    msg[3] = 9;
    assert_eq!(Request::decode(&msg, false), Err(Error::ReservedBitsSet), "fault word without FAULT_VALID");

    let detach = Request::DeviceDetach { device: h(1), pasid: None };
    let mut msg = detach.encode();
    msg[3] = 4;
    assert_eq!(Request::decode(&msg, false), Err(Error::ReservedBitsSet), "PASID word without PASID_VALID");
    let mut msg = detach.encode();
    msg[2] = 4;
    assert_eq!(Request::decode(&msg, false), Err(Error::ReservedBitsSet), "HWPT word in detach");

    let nested = Request::HwptAllocNested { device: h(1), parent: h(2), fault: None, stage1: stage1() };
    let mut msg = nested.encode();
    msg[6] |= 1 << 16;
    assert_eq!(Request::decode(&msg, false), Err(Error::ReservedBitsSet), "stage-1 config word");

    let derive = Request::HandleDerive { handle: h(1), rights: Rights::MAP, recipient: 2 };
    let mut msg = derive.encode();
    msg[2] = 1 << 8;
    assert_eq!(Request::decode(&msg, false), Err(Error::ReservedBitsSet), "undefined right");

    let accept = Request::HandleAccept { from: 3, accept: true };
    let mut msg = accept.encode();
    msg[0] |= 1 << 17;
    assert_eq!(Request::decode(&msg, false), Err(Error::ReservedBitsSet), "undefined accept flag");

    let respond = Request::FaultRespond { fault: h(1), cookie: 1, code: PageResponseCode::Success };
    let mut msg = respond.encode();
    msg[2] = 1 << 32;
    assert_eq!(Request::decode(&msg, false), Err(Error::ReservedBitsSet), "cookie upper half");

    let ranges = Request::IoasIovaRanges { ioas: h(1), first: 0 };
    let mut msg = ranges.encode();
    msg[2] = 1 << 32;
    assert_eq!(Request::decode(&msg, false), Err(Error::ReservedBitsSet), "range index upper half");

    let allow = Request::IoasAllowIovas { ioas: h(1), ranges: RangeList::new(&[IovaRange::new(0, 0xfff).unwrap()]).unwrap() };
    let mut msg = allow.encode();
    msg[4] = 0x1000;
    assert_eq!(Request::decode(&msg, false), Err(Error::ReservedBitsSet), "range beyond count");
}

#[test]
fn bad_enumeration_values_are_refused() {
    let nested = Request::HwptAllocNested { device: h(1), parent: h(2), fault: None, stage1: stage1() };
    let mut msg = nested.encode();
    msg[4] = 3;
    assert_eq!(Request::decode(&msg, false), Err(Error::BadEnumValue), "stage-1 format");

    let respond = Request::FaultRespond { fault: h(1), cookie: 1, code: PageResponseCode::Success };
    let mut msg = respond.encode();
    msg[3] = 3;
    assert_eq!(Request::decode(&msg, false), Err(Error::BadEnumValue), "response code");
}

#[test]
fn pasids_wider_than_20_bits_are_refused() {
    let msg = Request::PasidFree { pasid: PASID_MAX + 1 }.encode();
    assert_eq!(Request::decode(&msg, false), Err(Error::PasidOutOfRange));
    let msg = Request::DeviceAttach { device: h(1), hwpt: h(2), pasid: Some(1 << 20) }.encode();
    assert_eq!(Request::decode(&msg, false), Err(Error::PasidOutOfRange));
    let msg = Request::SvaUnbind { device: h(1), pasid: u32::MAX }.encode();
    assert_eq!(Request::decode(&msg, false), Err(Error::PasidOutOfRange));
}

#[test]
fn range_lists_are_bounded_and_ordered() {
    let mut msg = Request::IoasAllowIovas { ioas: h(1), ranges: RangeList::EMPTY }.encode();
    msg[0] |= 4 << 16;
    assert_eq!(Request::decode(&msg, false), Err(Error::TooManyRanges));
    let mut msg = Request::IoasAllowIovas { ioas: h(1), ranges: RangeList::EMPTY }.encode();
    msg[0] |= 1 << 16;
    msg[2] = 0x2000;
    msg[3] = 0x1fff;
    assert_eq!(Request::decode(&msg, false), Err(Error::InvalidRange));
    assert_eq!(RangeList::new(&[IovaRange::ALL; 4]), Err(Error::TooManyRanges));
}

#[test]
fn dirty_bitmap_requests_must_fit_the_reply() {
    let request = |length, page_size| Request::HwptGetDirtyBitmap { target: h(1), iova: 0, length, page_size, no_clear: false }.encode();
    assert_eq!(Request::decode(&request(384 * 4096, 4096), false).map(|r| r.opcode()), Ok(Opcode::HwptGetDirtyBitmap));
    assert_eq!(Request::decode(&request(385 * 4096, 4096), false), Err(Error::BitmapTooLarge));
    assert_eq!(Request::decode(&request(4096, 2048), false), Err(Error::InvalidPageSize));
    assert_eq!(Request::decode(&request(4096, 0x3000), false), Err(Error::InvalidPageSize));
    assert_eq!(Request::decode(&request(4096, 0), false), Err(Error::InvalidPageSize));
}

fn record(device: u32, pasid: Option<u32>, reason: FaultReason, cookie: u32) -> FaultRecord {
    FaultRecord { device: h(device), pasid, iova: 0xdead_b000, access: Access::READ.union(Access::PRIV), reason, cookie, stage: FaultStage::Stage2 }
}

fn sample_replies() -> Vec<(Opcode, Reply)> {
    let two_ranges =
        RangeList::new(&[IovaRange::new(0x1000, 0xfee0_0000 - 1).unwrap(), IovaRange::new(0xfef0_0000, u64::MAX).unwrap()]).unwrap();
    vec![
        (Opcode::Destroy, Reply::Empty),
        (Opcode::IoasAlloc, Reply::Handle(h(17))),
        (Opcode::IoasMap, Reply::Iova(0x4000_0000)),
        (Opcode::IoasUnmap, Reply::Length(0x3000)),
        (Opcode::IoasIovaRanges, Reply::IovaRanges { total: 5, ranges: two_ranges }),
        (Opcode::IoasIovaRanges, Reply::IovaRanges { total: 0, ranges: RangeList::EMPTY }),
        (Opcode::PasidAlloc, Reply::Pasid(PASID_MAX)),
        (
            Opcode::FaultRead,
            Reply::Faults(
                FaultBatch::new(3, &[record(2, Some(5), FaultReason::PageRequest, 9), record(4, None, FaultReason::Permission, 0)])
                    .unwrap(),
            ),
        ),
        (Opcode::FaultRead, Reply::Faults(FaultBatch::new(0, &[]).unwrap())),
        // A refused interrupt request: reason 5, the interrupt index where the IOVA goes.
        (
            Opcode::FaultRead,
            Reply::Faults(
                FaultBatch::new(0, &[FaultRecord { device: h(3), pasid: None, iova: 0x91a, access: Access::WRITE, reason: FaultReason::Interrupt, cookie: 0, stage: FaultStage::Unspecified }]).unwrap(),
            ),
        ),
        (Opcode::HwptGetDirtyBitmap, Reply::DirtyBitmap([1, 0, u64::MAX, 0, 0, 1 << 63])),
        (
            Opcode::GetInfo,
            Reply::Info(DeviceInfo {
                unit: 2,
                kind: UnitKind::ArmSmmuV3,
                caps: UnitCaps::NESTING.union(UnitCaps::PAGE_REQUESTS),
                pasid_bits: 20,
            }),
        ),
    ]
}

#[test]
fn every_reply_shape_round_trips() {
    let samples = sample_replies();
    for opcode in Opcode::ALL {
        assert!(samples.iter().any(|(_, reply)| reply.shape() == opcode.reply_shape()));
    }
    for (opcode, reply) in samples {
        assert_eq!(opcode.reply_shape(), reply.shape());
        assert_eq!(Reply::decode(opcode, &reply.encode()), Ok(reply));
        let word = match reply {
            Reply::Empty => Ok(0),
            Reply::Handle(handle) => Ok(u64::from(handle.0)),
            Reply::Iova(value) | Reply::Length(value) => Ok(value),
            Reply::Pasid(pasid) => Ok(u64::from(pasid)),
            _ => Err(Error::MalformedReply),
        };
        assert_eq!(Reply::decode_word(opcode, &reply.encode()), word, "{reply:?} as one word");
    }
}

#[test]
fn error_replies_carry_their_code() {
    for error in Error::ALL {
        assert_eq!(Reply::decode(Opcode::IoasMap, &Reply::encode_error(error)), Err(error));
        assert_eq!(Reply::decode_word(Opcode::IoasUnmap, &Reply::encode_error(error)), Err(error));
    }
}

#[test]
fn malformed_replies_are_detected() {
    let mut msg = Reply::encode_error(Error::Busy);
    msg[1] = 1;
    assert_eq!(Reply::decode(Opcode::Destroy, &msg), Err(Error::MalformedReply), "payload on error");
    let mut msg = [0u64; 8];
    msg[0] = 999;
    assert_eq!(Reply::decode(Opcode::Destroy, &msg), Err(Error::MalformedReply), "unknown status");
    assert_eq!(Reply::decode(Opcode::IoasAlloc, &[0u64; 8]), Err(Error::MalformedReply), "handle 0");
    assert_eq!(Reply::decode_word(Opcode::IoasAlloc, &[0u64; 8]), Err(Error::MalformedReply), "handle 0, one word");
    let mut msg = Reply::Handle(h(1)).encode();
    msg[1] = 1 << 32;
    assert_eq!(Reply::decode_word(Opcode::IoasAlloc, &msg), Err(Error::MalformedReply), "handle wider than 32 bits");
    let mut msg = Reply::Pasid(1).encode();
    msg[1] = u64::from(PASID_MAX) + 1;
    assert_eq!(Reply::decode_word(Opcode::PasidAlloc, &msg), Err(Error::MalformedReply), "PASID out of range");
    let mut msg = Reply::Empty.encode();
    msg[3] = 1;
    assert_eq!(Reply::decode(Opcode::Destroy, &msg), Err(Error::MalformedReply), "payload on empty");
    assert_eq!(Reply::decode_word(Opcode::Destroy, &msg), Err(Error::MalformedReply), "payload on empty, one word");
    let mut msg = Reply::Length(8).encode();
    msg[2] = 1;
    assert_eq!(Reply::decode_word(Opcode::IoasUnmap, &msg), Err(Error::MalformedReply), "a second word on a length");
    let mut msg = Reply::Faults(FaultBatch::new(0, &[]).unwrap()).encode();
    msg[1] = 3;
    assert_eq!(Reply::decode(Opcode::FaultRead, &msg), Err(Error::MalformedReply), "three records");
    let mut msg = Reply::Faults(FaultBatch::new(0, &[record(1, None, FaultReason::Translation, 0)]).unwrap()).encode();
    msg[2] |= 7 << 57;
    assert_eq!(Reply::decode(Opcode::FaultRead, &msg), Err(Error::MalformedReply), "fault reason 7");
    let mut msg = Reply::Info(DeviceInfo { unit: 0, kind: UnitKind::IntelVtd, caps: UnitCaps::default(), pasid_bits: 0 }).encode();
    msg[2] = 9;
    assert_eq!(Reply::decode(Opcode::GetInfo, &msg), Err(Error::MalformedReply), "unit kind");
}

#[test]
fn every_undeclared_opcode_is_refused() {
    for number in 0..=u16::MAX {
        let mut msg = [0u64; 8];
        msg[0] = u64::from(number);
        match Opcode::ALL.iter().find(|opcode| **opcode as u16 == number) {
            Some(opcode) => assert_eq!(Opcode::from_u16(number), Ok(*opcode)),
            None => {
                assert_eq!(Opcode::from_u16(number), Err(Error::UnknownOpcode), "opcode {number}");
                for capability in [false, true] {
                    assert_eq!(Request::decode(&msg, capability), Err(Error::UnknownOpcode), "opcode {number}");
                }
            }
        }
    }
}

#[test]
fn declared_arguments_do_not_overlap() {
    for opcode in Opcode::ALL {
        let mut words = 0u8;
        let mut flags = 0u16;
        for argument in opcode.arguments().as_slice() {
            assert_eq!(argument.claim.words & words, 0, "{opcode:?}: {} shares a word", argument.name);
            assert_eq!(argument.claim.flags & flags, 0, "{opcode:?}: {} shares a flag bit", argument.name);
            assert_eq!(argument.claim.words & 1, 0, "{opcode:?}: {} claims the header", argument.name);
            words |= argument.claim.words;
            flags |= argument.claim.flags;
        }
    }
}

/// The declarations, not a list written in the test, say which words and flag bits are
/// reserved: each one set alone in a valid request of every operation is refused.
#[test]
fn every_word_and_flag_bit_no_argument_claims_is_refused() {
    let samples = sample_requests();
    for opcode in Opcode::ALL {
        let request = samples.iter().find(|r| r.opcode() == opcode).expect("a sample per opcode");
        let claim = opcode.arguments().claim();
        let capability = opcode.takes_capability();
        for word in 1..8 {
            if claim.words & (1 << word) == 0 {
                let mut msg = request.encode();
                msg[word] = 1 << (word * 9);
                assert_eq!(Request::decode(&msg, capability), Err(Error::ReservedBitsSet), "{opcode:?} word {word}");
            }
        }
        for bit in 0..16 {
            if claim.flags & (1 << bit) == 0 {
                let mut msg = request.encode();
                msg[0] |= 1 << (16 + bit);
                assert_eq!(Request::decode(&msg, capability), Err(Error::ReservedBitsSet), "{opcode:?} flag bit {bit}");
            }
        }
    }
}

#[test]
fn operation_names_are_unique_and_snake_case() {
    for (index, opcode) in Opcode::ALL.iter().enumerate() {
        let name = opcode.name();
        assert!(name.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{name}");
        assert!(Opcode::ALL[..index].iter().all(|other| other.name() != name), "{name} twice");
    }
}
