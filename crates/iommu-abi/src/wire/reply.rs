//! Replies: a status word, then the words of the reply's shape (the operation table gives each
//! operation its shape). Decoding checks every word the shape leaves unused is zero, so a
//! reply can be trusted no further than its layout allows.

use super::{
    check_unused, FaultBatch, Message, Opcode, RangeList, DIRTY_BITMAP_WORDS, FAULTS_PER_MESSAGE, MESSAGE_WORDS, PASID_MAX,
    RANGES_PER_MESSAGE,
};
use crate::error::Error;
use crate::types::{Access, DeviceInfo, FaultReason, FaultRecord, FaultStage, Handle, IovaRange, UnitCaps, UnitKind};

/// Layout of a success reply, chosen by the opcode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReplyShape {
    /// Nothing.
    Empty,
    /// w1: a handle.
    Handle,
    /// w1: an IOVA.
    Iova,
    /// w1: bytes unmapped.
    Length,
    /// w1: total number of ranges; w2..w8: up to three (start, last) pairs.
    IovaRanges,
    /// w1: a PASID.
    Pasid,
    /// w1: bits 0..8 record count, 32..64 overflow; w2..w5 and w5..w8: records.
    Faults,
    /// w1..w7: the bitmap, bit `i` = page `i` of the range.
    DirtyBitmap,
    /// w1 unit index, w2 unit kind, w3 capability bits, w4 PASID bits.
    Info,
}

/// A decoded success reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reply {
    /// No result.
    Empty,
    /// A new handle.
    Handle(Handle),
    /// The IOVA of a new mapping.
    Iova(u64),
    /// Bytes unmapped.
    Length(u64),
    /// A page of usable IOVA ranges.
    IovaRanges { total: u32, ranges: RangeList },
    /// A new PASID.
    Pasid(u32),
    /// Fault records.
    Faults(FaultBatch),
    /// Dirty bits.
    DirtyBitmap([u64; DIRTY_BITMAP_WORDS]),
    /// Device information.
    Info(DeviceInfo),
}

const FAULT_PASID_SHIFT: u32 = 32;
const FAULT_PASID_VALID: u64 = 1 << 52;
const FAULT_ACCESS_SHIFT: u32 = 53;
const FAULT_REASON_SHIFT: u32 = 57;
const FAULT_STAGE_SHIFT: u32 = 60;
const FAULT_RESERVED: u64 = !((1 << 62) - 1);

fn encode_fault(record: &FaultRecord, words: &mut [u64]) {
    let pasid = record.pasid.map_or(0, |p| (u64::from(p) << FAULT_PASID_SHIFT) | FAULT_PASID_VALID);
    words[0] = u64::from(record.device.0)
        | pasid
        | (u64::from(record.access.bits()) << FAULT_ACCESS_SHIFT)
        | ((record.reason as u64) << FAULT_REASON_SHIFT)
        | ((record.stage as u64) << FAULT_STAGE_SHIFT);
    words[1] = record.iova;
    words[2] = u64::from(record.cookie);
}

impl FaultBatch {
    /// The message of a success reply carrying this batch: what `Reply::Faults(batch).encode()`
    /// gives, for the server, which encodes the batch where the handler built it (moving it
    /// into a `Reply` costs two copies of it on the fault path).
    pub(super) fn encode(&self) -> Message {
        let mut msg = [0u64; MESSAGE_WORDS];
        msg[1] = self.len() as u64 | (u64::from(self.overflow) << 32);
        for (index, record) in self.records().enumerate() {
            encode_fault(record, &mut msg[2 + 3 * index..5 + 3 * index]);
        }
        msg
    }
}

fn decode_fault(words: &[u64]) -> Result<FaultRecord, Error> {
    let first = words[0];
    if first & FAULT_RESERVED != 0 || words[2] > u64::from(u32::MAX) {
        return Err(Error::MalformedReply);
    }
    let pasid_bits = ((first >> FAULT_PASID_SHIFT) & u64::from(PASID_MAX)) as u32;
    let pasid = if first & FAULT_PASID_VALID != 0 {
        Some(pasid_bits)
    } else if pasid_bits != 0 {
        return Err(Error::MalformedReply);
    } else {
        None
    };
    Ok(FaultRecord {
        device: Handle(first as u32),
        pasid,
        iova: words[1],
        access: Access::from_bits(((first >> FAULT_ACCESS_SHIFT) & 0xf) as u8).ok_or(Error::MalformedReply)?,
        reason: FaultReason::from_u8(((first >> FAULT_REASON_SHIFT) & 0x7) as u8).map_err(|_| Error::MalformedReply)?,
        cookie: words[2] as u32,
        stage: FaultStage::from_u8(((first >> FAULT_STAGE_SHIFT) & 0x3) as u8).map_err(|_| Error::MalformedReply)?,
    })
}

/// `Ok` for a success status; the error an error reply carries (with every other word 0);
/// `MalformedReply` otherwise.
fn check_reply_status(msg: &Message) -> Result<(), Error> {
    match msg[0] {
        0 => Ok(()),
        code => {
            let error = u32::try_from(code).ok().and_then(Error::from_code).ok_or(Error::MalformedReply)?;
            if msg[1..].iter().all(|&word| word == 0) {
                Err(error)
            } else {
                Err(Error::MalformedReply)
            }
        }
    }
}

/// The word of a success reply of a one-word `shape` (0 for `Empty`), checked for that shape.
fn word_of_reply(shape: ReplyShape, msg: &Message) -> Result<u64, Error> {
    let used = match shape {
        ReplyShape::Empty => 1,
        ReplyShape::Handle | ReplyShape::Iova | ReplyShape::Length | ReplyShape::Pasid => 2,
        _ => return Err(Error::MalformedReply),
    };
    check_unused(msg, used).map_err(|_| Error::MalformedReply)?;
    let word = if used == 2 { msg[1] } else { 0 };
    let valid = match shape {
        ReplyShape::Handle => word != 0 && word <= u64::from(u32::MAX),
        ReplyShape::Pasid => word != 0 && word <= u64::from(PASID_MAX),
        _ => true,
    };
    if valid {
        Ok(word)
    } else {
        Err(Error::MalformedReply)
    }
}

impl Reply {
    /// The shape this reply has.
    pub const fn shape(&self) -> ReplyShape {
        match self {
            Reply::Empty => ReplyShape::Empty,
            Reply::Handle(_) => ReplyShape::Handle,
            Reply::Iova(_) => ReplyShape::Iova,
            Reply::Length(_) => ReplyShape::Length,
            Reply::IovaRanges { .. } => ReplyShape::IovaRanges,
            Reply::Pasid(_) => ReplyShape::Pasid,
            Reply::Faults(_) => ReplyShape::Faults,
            Reply::DirtyBitmap(_) => ReplyShape::DirtyBitmap,
            Reply::Info(_) => ReplyShape::Info,
        }
    }

    /// The message of a success reply.
    pub fn encode(&self) -> Message {
        let mut msg = [0u64; MESSAGE_WORDS];
        match *self {
            Reply::Empty => {}
            Reply::Handle(handle) => msg[1] = u64::from(handle.0),
            Reply::Iova(value) | Reply::Length(value) => msg[1] = value,
            Reply::IovaRanges { total, ranges } => {
                msg[1] = u64::from(total);
                for (index, range) in ranges.as_slice().iter().enumerate() {
                    msg[2 + 2 * index] = range.start;
                    msg[3 + 2 * index] = range.last;
                }
            }
            Reply::Pasid(pasid) => msg[1] = u64::from(pasid),
            Reply::Faults(ref batch) => return batch.encode(),
            Reply::DirtyBitmap(words) => msg[1..1 + DIRTY_BITMAP_WORDS].copy_from_slice(&words),
            Reply::Info(info) => {
                msg[1] = u64::from(info.unit);
                msg[2] = info.kind as u64;
                msg[3] = u64::from(info.caps.bits());
                msg[4] = u64::from(info.pasid_bits);
            }
        }
        msg
    }

    /// [`decode`](Self::decode) for the opcodes whose reply is at most one word (a handle, an
    /// IOVA, a length, a PASID; nothing: 0), returning that word without building a `Reply`:
    /// the stubs of the frequent operations take this path.
    pub fn decode_word(opcode: Opcode, msg: &Message) -> Result<u64, Error> {
        check_reply_status(msg)?;
        word_of_reply(opcode.reply_shape(), msg)
    }

    /// The message of an error reply.
    pub fn encode_error(error: Error) -> Message {
        let mut msg = [0u64; MESSAGE_WORDS];
        msg[0] = u64::from(error.code());
        msg
    }

    /// Decode a reply to a request with `opcode`: `Err(e)` for an error status `e`, or
    /// [`Error::MalformedReply`] if the message is not a well-formed reply of that shape.
    pub fn decode(opcode: Opcode, msg: &Message) -> Result<Reply, Error> {
        check_reply_status(msg)?;
        let unused_from = |from: usize| -> Result<(), Error> {
            check_unused(msg, from).map_err(|_| Error::MalformedReply)
        };
        let shape = opcode.reply_shape();
        let reply = match shape {
            ReplyShape::Empty => {
                word_of_reply(shape, msg)?;
                Reply::Empty
            }
            ReplyShape::Handle => Reply::Handle(Handle(word_of_reply(shape, msg)? as u32)),
            ReplyShape::Iova => Reply::Iova(word_of_reply(shape, msg)?),
            ReplyShape::Length => Reply::Length(word_of_reply(shape, msg)?),
            ReplyShape::IovaRanges => {
                let total = u32::try_from(msg[1]).map_err(|_| Error::MalformedReply)?;
                // The reply carries as many ranges as are non-empty pairs; a pair (0, 0) is
                // a valid one-byte range only when it comes first, which cannot happen
                // because ranges are page-granular. So trailing zero pairs mark the end.
                let mut ranges = [IovaRange::ALL; RANGES_PER_MESSAGE];
                let mut count = 0;
                for index in 0..RANGES_PER_MESSAGE {
                    let (start, last) = (msg[2 + 2 * index], msg[3 + 2 * index]);
                    if start == 0 && last == 0 {
                        unused_from(2 + 2 * index)?;
                        break;
                    }
                    ranges[index] = IovaRange::new(start, last).map_err(|_| Error::MalformedReply)?;
                    count += 1;
                }
                Reply::IovaRanges { total, ranges: RangeList::new(&ranges[..count])? }
            }
            ReplyShape::Pasid => Reply::Pasid(word_of_reply(shape, msg)? as u32),
            ReplyShape::Faults => {
                let count = (msg[1] & 0xff) as usize;
                if count > FAULTS_PER_MESSAGE || msg[1] & 0xffff_ff00 != 0 {
                    return Err(Error::MalformedReply);
                }
                unused_from(2 + 3 * count)?;
                let mut records = [None; FAULTS_PER_MESSAGE];
                for (index, slot) in records.iter_mut().take(count).enumerate() {
                    *slot = Some(decode_fault(&msg[2 + 3 * index..5 + 3 * index])?);
                }
                Reply::Faults(FaultBatch { overflow: (msg[1] >> 32) as u32, records })
            }
            ReplyShape::DirtyBitmap => {
                unused_from(1 + DIRTY_BITMAP_WORDS)?;
                let mut words = [0u64; DIRTY_BITMAP_WORDS];
                words.copy_from_slice(&msg[1..1 + DIRTY_BITMAP_WORDS]);
                Reply::DirtyBitmap(words)
            }
            ReplyShape::Info => {
                unused_from(5)?;
                let malformed = |_| Error::MalformedReply;
                let caps = u32::try_from(msg[3]).map_err(|_| Error::MalformedReply)?;
                Reply::Info(DeviceInfo {
                    unit: u32::try_from(msg[1]).map_err(|_| Error::MalformedReply)?,
                    kind: UnitKind::from_u64(msg[2]).map_err(malformed)?,
                    caps: UnitCaps::from_bits(caps).ok_or(Error::MalformedReply)?,
                    pasid_bits: u8::try_from(msg[4]).ok().filter(|&bits| bits <= 20).ok_or(Error::MalformedReply)?,
                })
            }
        };
        Ok(reply)
    }
}
