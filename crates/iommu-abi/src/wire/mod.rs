//! The message layout: requests and replies as eight 64-bit words, plus an optional
//! capability carried by the kernel IPC next to them.
//!
//! ```text
//! request word 0:  bits  0..16 opcode | bits 16..32 flags (per opcode) | bits 32..64 zero
//! request words 1..8: arguments (per opcode); every word or bit not listed must be zero
//! reply word 0:    bits  0..32 status (0 = success, else an `Error` code) | 32..64 zero
//! reply words 1..8: results on success (per opcode), all zero on error
//! ```
//!
//! Handles travel in the low 32 bits of a word (upper half zero). PASIDs are 20-bit.
//!
//! Every operation is declared once, in the table below: its number, name, the capability
//! it carries (if any), each argument with the words and flag bits it occupies and the rights
//! a handle argument needs, and the shape of its reply. [`Opcode`], [`Request`], the encoder,
//! the decoder and the server's [`Handler`] trait (with [`serve`]) are written from it, so
//! adding an operation is one entry here plus its handler in the server.
//!
//! Capabilities: memory to map is named either by a memory-object capability transferred
//! *with the `ioas_map` call itself* (the server pins the pages while mapped), or by a
//! MEMORY handle that `memory_register` returned for such a capability (transferred once;
//! `ioas_map_registered` then maps from it with no transfer). The server identifies a memory
//! object by the kernel's identity of it, not by the capability slot, so the same memory sent
//! twice is pinned once. `device_bind` and `sva_bind` carry the device / address-space
//! capability. All other operations must come without a capability.
//!
//! Decoding is total: every bit pattern either decodes to exactly one [`Request`] or yields
//! a distinct [`Error`] (unknown opcode, reserved bits, bad enumeration value, missing or
//! unexpected capability, too many ranges, oversize bitmap).

#[macro_use]
mod declare;
mod args;
mod reply;

pub use args::Claim;
pub use reply::{Reply, ReplyShape};

use crate::error::Error;
use crate::types::{DeviceInfo, FaultRecord, Handle, IovaRange, PageResponseCode, Perm, Rights, Stage1Config};
use args::{
    Arg, DirtyPageSize, FixedIova, Flag, FlagClear, HandleIf, HandleWord, MapPerm, MsiCount, PasidIf, PasidWord, Ranges,
    ResponseCode, RightsWord, Stage1, U32Word, Word,
};

/// Words in one IPC message.
pub const MESSAGE_WORDS: usize = 8;
/// One IPC message.
pub type Message = [u64; MESSAGE_WORDS];

/// Ranges one `ioas_iova_ranges` reply or `ioas_allow_iovas` request carries.
pub const RANGES_PER_MESSAGE: usize = 3;
/// Fault records one `fault_read` reply carries.
pub const FAULTS_PER_MESSAGE: usize = 2;
/// Words of dirty bitmap one `hwpt_get_dirty_bitmap` reply carries.
pub const DIRTY_BITMAP_WORDS: usize = 6;
/// Pages one `hwpt_get_dirty_bitmap` call covers at most.
pub const DIRTY_BITMAP_MAX_PAGES: u64 = (DIRTY_BITMAP_WORDS * 64) as u64;
/// MSIs one `msi_alloc` asks for at most (PCI multiple-message MSI: 32 vectors).
pub const MSI_MAX: u32 = 32;
/// Largest PASID value (PCIe PASIDs are 20 bits wide).
pub const PASID_MAX: u32 = (1 << 20) - 1;

/// A handle argument any holder may use.
const ANY: Rights = Rights::empty();

operations! {
    /// Allocate an empty IOAS.
    1 IoasAlloc ioas_alloc -> Handle;

    /// Map memory (the capability) into an IOAS; the reply is the IOVA.
    2 IoasMap ioas_map (capability memory) {
        ioas: Handle = HandleWord(1, Rights::MAP),
        iova: IovaChoice = FixedIova(2),
        offset: u64 = Word(3),
        length: u64 = Word(4),
        perm: Perm = MapPerm,
    } -> Iova;

    /// Unmap whole mappings in a range; the reply is the bytes unmapped.
    3 IoasUnmap ioas_unmap {
        ioas: Handle = HandleWord(1, Rights::UNMAP),
        iova: u64 = Word(2),
        length: u64 = Word(3),
    } -> Length;

    /// Unmap everything; the reply is the bytes unmapped.
    4 IoasUnmapAll ioas_unmap_all {
        ioas: Handle = HandleWord(1, Rights::UNMAP),
    } -> Length;

    /// Map pages already mapped in one IOAS (`src`) into another (`dst`, or elsewhere in the
    /// same); the reply is the destination IOVA.
    5 IoasCopy ioas_copy {
        dst: Handle = HandleWord(1, Rights::MAP),
        src: Handle = HandleWord(2, Rights::COPY_FROM),
        dst_iova: IovaChoice = FixedIova(3),
        src_iova: u64 = Word(4),
        length: u64 = Word(5),
        perm: Perm = MapPerm,
    } -> Iova;

    /// Page through the usable IOVA ranges, from index `first` on.
    6 IoasIovaRanges ioas_iova_ranges {
        ioas: Handle = HandleWord(1, ANY),
        first: u32 = U32Word(2),
    } -> IovaRanges;

    /// Restrict the IOVAs that may be mapped (no range: lift the restriction).
    7 IoasAllowIovas ioas_allow_iovas {
        ioas: Handle = HandleWord(1, Rights::MAP),
        ranges: RangeList = Ranges(2),
    } -> Empty;

    /// Allocate a paging HWPT over an IOAS on the device's unit.
    8 HwptAlloc hwpt_alloc {
        device: Handle = HandleWord(1, Rights::ATTACH),
        ioas: Handle = HandleWord(2, Rights::ATTACH),
        fault: Option<Handle> = HandleIf { at: 3, valid: HwptFlags::FAULT_VALID.bits(), rights: Rights::ATTACH },
        nest_parent: bool = Flag(HwptFlags::NEST_PARENT.bits()),
        dirty_tracking: bool = Flag(HwptFlags::DIRTY_TRACKING.bits()),
    } -> Handle;

    /// Allocate a nested HWPT: the caller's stage-1 table over a parent HWPT.
    9 HwptAllocNested hwpt_alloc_nested {
        device: Handle = HandleWord(1, Rights::ATTACH),
        parent: Handle = HandleWord(2, Rights::ATTACH),
        fault: Option<Handle> = HandleIf { at: 3, valid: FAULT_VALID, rights: Rights::ATTACH },
        stage1: Stage1Config = Stage1(4),
    } -> Handle;

    /// Bind a device from its capability.
    10 DeviceBind device_bind (capability device) -> Handle;

    /// Attach a device (or one of its PASIDs) to an HWPT.
    11 DeviceAttach device_attach {
        device: Handle = HandleWord(1, Rights::ATTACH),
        hwpt: Handle = HandleWord(2, Rights::ATTACH),
        pasid: Option<u32> = PasidIf { at: 3, valid: PASID_VALID },
    } -> Empty;

    /// Switch an attached device (or PASID) to another HWPT without a blocked window.
    12 DeviceReplace device_replace {
        device: Handle = HandleWord(1, Rights::ATTACH),
        hwpt: Handle = HandleWord(2, Rights::ATTACH),
        pasid: Option<u32> = PasidIf { at: 3, valid: PASID_VALID },
    } -> Empty;

    /// Detach: the device (or PASID) is blocked.
    13 DeviceDetach device_detach {
        device: Handle = HandleWord(1, Rights::ATTACH),
        pasid: Option<u32> = PasidIf { at: 3, valid: PASID_VALID },
    } -> Empty;

    /// Allocate a PASID.
    14 PasidAlloc pasid_alloc -> Pasid;

    /// Free a PASID.
    15 PasidFree pasid_free {
        pasid: u32 = PasidWord(1),
    } -> Empty;

    /// Bind a process address space (the capability) to a device PASID.
    16 SvaBind sva_bind (capability address_space) {
        device: Handle = HandleWord(1, Rights::ATTACH),
        pasid: u32 = PasidWord(2),
        fault: Option<Handle> = HandleIf { at: 3, valid: FAULT_VALID, rights: Rights::ATTACH },
    } -> Empty;

    /// Undo `sva_bind`.
    17 SvaUnbind sva_unbind {
        device: Handle = HandleWord(1, Rights::ATTACH),
        pasid: u32 = PasidWord(2),
    } -> Empty;

    /// Allocate a fault queue.
    18 FaultAlloc fault_alloc -> Handle;

    /// Read fault records.
    19 FaultRead fault_read {
        fault: Handle = HandleWord(1, Rights::READ_FAULTS),
    } -> Faults;

    /// Answer a page request.
    20 FaultRespond fault_respond {
        fault: Handle = HandleWord(1, Rights::READ_FAULTS),
        cookie: u32 = U32Word(2),
        code: PageResponseCode = ResponseCode(3),
    } -> Empty;

    /// Switch dirty tracking of an HWPT.
    21 HwptSetDirtyTracking hwpt_set_dirty_tracking {
        hwpt: Handle = HandleWord(1, Rights::DIRTY),
        enable: bool = Flag(DIRTY_ENABLE),
    } -> Empty;

    /// Read and clear dirty bits of an HWPT, or of every HWPT of an IOAS.
    22 HwptGetDirtyBitmap hwpt_get_dirty_bitmap {
        target: Handle = HandleWord(1, Rights::DIRTY),
        iova: u64 = Word(2),
        length: u64 = Word(3),
        page_size: u64 = DirtyPageSize { at: 4, length_at: 3 },
        no_clear: bool = Flag(DIRTY_NO_CLEAR),
    } -> DirtyBitmap;

    /// Derive a handle with fewer rights into a client's table (the `recipient` client ID).
    23 HandleDerive handle_derive {
        handle: Handle = HandleWord(1, Rights::GRANT),
        rights: Rights = RightsWord(2),
        recipient: u64 = Word(3),
    } -> Handle;

    /// Revoke a handle and every handle derived from it.
    24 HandleRevoke handle_revoke {
        handle: Handle = HandleWord(1, ANY),
    } -> Empty;

    /// Destroy an object.
    25 Destroy destroy {
        handle: Handle = HandleWord(1, Rights::DESTROY),
    } -> Empty;

    /// Describe a device's IOMMU unit.
    26 GetInfo get_info {
        device: Handle = HandleWord(1, ANY),
    } -> Info;

    /// Register a memory object (the capability) for mapping without a transfer each time.
    27 MemoryRegister memory_register (capability memory) -> Handle;

    /// Map registered memory (the MEMORY handle `memory`) into an IOAS; the reply is the IOVA.
    28 IoasMapRegistered ioas_map_registered {
        ioas: Handle = HandleWord(1, Rights::MAP),
        iova: IovaChoice = FixedIova(2),
        offset: u64 = Word(3),
        length: u64 = Word(4),
        memory: Handle = HandleWord(5, Rights::MAP),
        perm: Perm = MapPerm,
    } -> Iova;

    /// Consent to handles client `from` derives into this one (`accept`), or withdraw it.
    29 HandleAccept handle_accept {
        from: u64 = Word(1),
        accept: bool = FlagClear(ACCEPT_WITHDRAW),
    } -> Empty;

    /// Give the caller interrupt lines for `count` MSIs of a device (x86 with interrupt
    /// remapping), as IRQ capabilities in its slots from `first_slot` on.
    30 MsiAlloc msi_alloc {
        device: Handle = HandleWord(1, Rights::ATTACH),
        count: u32 = MsiCount(2),
        first_slot: u64 = Word(3),
    } -> Empty;

    /// Carry out the cache invalidations of a nested HWPT's stage 1 that `count` entries
    /// (`Invalidation`, 16 bytes each) at byte `offset` of the memory object (the capability)
    /// describe, in order, stopping at the first invalid one; the reply is how many were done.
    31 HwptInvalidate hwpt_invalidate (capability memory) {
        hwpt: Handle = HandleWord(1, Rights::ATTACH),
        offset: u64 = Word(2),
        count: u32 = U32Word(3),
    } -> Length;

    /// Read and clear dirty bits as `hwpt_get_dirty_bitmap` does, for a range of any size:
    /// the bitmap is written into memory (the capability) from its start; the reply is the
    /// bytes reported dirty.
    32 HwptGetDirtyBitmapInto hwpt_get_dirty_bitmap_into (capability memory) {
        target: Handle = HandleWord(1, Rights::DIRTY),
        iova: u64 = Word(2),
        length: u64 = Word(3),
        page_size: u64 = Word(4),
        no_clear: bool = Flag(DIRTY_NO_CLEAR),
    } -> Length;
}

bitflags::bitflags! {
    /// Flag bits of `ioas_map`, `ioas_map_registered` and `ioas_copy`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct MapFlags: u16 {
        /// Map at the IOVA given; otherwise the server chooses and the IOVA word must be 0.
        const FIXED_IOVA = 1 << 0;
        /// Devices may read.
        const READ = 1 << 1;
        /// Devices may write.
        const WRITE = 1 << 2;
    }

    /// Flag bits of `hwpt_alloc`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct HwptFlags: u16 {
        /// The HWPT may be the parent (stage 2) of nested HWPTs.
        const NEST_PARENT = 1 << 0;
        /// The HWPT supports dirty tracking (still off until switched on).
        const DIRTY_TRACKING = 1 << 1;
        /// Word 3 names a fault queue for faults of devices attached to this HWPT.
        const FAULT_VALID = 1 << 2;
    }
}

// The other opcodes with flags define one bit each, so they stay plain constants.
/// Flag bit of `device_attach`, `device_replace` and `device_detach`: word 3 holds a PASID.
pub const PASID_VALID: u16 = 1 << 0;
/// Flag bit of `hwpt_alloc_nested` and `sva_bind`: word 3 names a fault queue.
pub const FAULT_VALID: u16 = 1 << 0;
/// The PASID word of `sva_bind` / `sva_unbind` naming the device's DMA without a PASID
/// (VT-d's RID_PASID entry, SMMUv3's SubstreamID 0): `pasid_alloc` never hands out 0.
pub const SVA_UNTAGGED: u32 = 0;
/// Flag bit of `hwpt_set_dirty_tracking`: switch on (clear: switch off).
pub const DIRTY_ENABLE: u16 = 1 << 0;
/// Flag bit of `hwpt_get_dirty_bitmap` and `hwpt_get_dirty_bitmap_into`: report without
/// clearing (iommufd's NO_CLEAR).
pub const DIRTY_NO_CLEAR: u16 = 1 << 0;
/// Flag bit of `handle_accept`: withdraw the consent instead of giving it.
pub const ACCEPT_WITHDRAW: u16 = 1 << 0;

/// Where `ioas_map` / `ioas_copy` place the mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IovaChoice {
    /// At exactly this IOVA.
    Fixed(u64),
    /// Wherever the server finds room (aligned to the largest page size that fits).
    Auto,
}

/// Up to [`RANGES_PER_MESSAGE`] IOVA ranges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RangeList {
    ranges: [IovaRange; RANGES_PER_MESSAGE],
    len: u8,
}

impl RangeList {
    /// An empty list.
    pub const EMPTY: RangeList = RangeList { ranges: [IovaRange { start: 0, last: 0 }; RANGES_PER_MESSAGE], len: 0 };

    /// The list of `ranges`, or [`Error::TooManyRanges`].
    pub fn new(ranges: &[IovaRange]) -> Result<RangeList, Error> {
        if ranges.len() > RANGES_PER_MESSAGE {
            return Err(Error::TooManyRanges);
        }
        let mut list = RangeList::EMPTY;
        list.ranges[..ranges.len()].copy_from_slice(ranges);
        list.len = ranges.len() as u8;
        Ok(list)
    }

    /// The ranges.
    pub fn as_slice(&self) -> &[IovaRange] {
        &self.ranges[..usize::from(self.len)]
    }
}

/// Up to [`FAULTS_PER_MESSAGE`] fault records and the overflow count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FaultBatch {
    /// Faults dropped because the queue was full since the previous read (saturating).
    pub overflow: u32,
    records: [Option<FaultRecord>; FAULTS_PER_MESSAGE],
}

impl FaultBatch {
    /// A batch of `records`, or `None` if there are more than [`FAULTS_PER_MESSAGE`].
    pub fn new(overflow: u32, records: &[FaultRecord]) -> Option<FaultBatch> {
        if records.len() > FAULTS_PER_MESSAGE {
            return None;
        }
        let mut slots = [None; FAULTS_PER_MESSAGE];
        for (slot, record) in slots.iter_mut().zip(records) {
            *slot = Some(*record);
        }
        Some(FaultBatch { overflow, records: slots })
    }

    /// Appends `record`; `false` (and nothing changes) if the batch is full.
    pub fn push(&mut self, record: FaultRecord) -> bool {
        match self.records.iter_mut().find(|slot| slot.is_none()) {
            Some(slot) => {
                *slot = Some(record);
                true
            }
            None => false,
        }
    }

    /// The records, oldest first.
    pub fn records(&self) -> impl Iterator<Item = &FaultRecord> {
        self.records.iter().flatten()
    }

    /// How many records the batch holds.
    pub fn len(&self) -> usize {
        self.records().count()
    }

    /// Whether the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.records[0].is_none()
    }
}


/// One argument of an operation, as the table declares it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Argument {
    /// The field's name in [`Request`] (and the handler's parameter).
    pub name: &'static str,
    /// The words and flag bits it occupies.
    pub claim: Claim,
    /// For a handle, the rights it needs (empty: any holder may use it); `None` for an
    /// argument that is no handle.
    pub rights: Option<Rights>,
}

/// The arguments of one operation ([`Opcode::arguments`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arguments {
    list: [Argument; MESSAGE_WORDS],
    len: usize,
}

impl Arguments {
    fn new(arguments: &[Argument]) -> Arguments {
        let mut list = [Argument { name: "", claim: Claim::NONE, rights: None }; MESSAGE_WORDS];
        list[..arguments.len()].copy_from_slice(arguments);
        Arguments { list, len: arguments.len() }
    }

    /// The arguments, in the order declared.
    pub fn as_slice(&self) -> &[Argument] {
        &self.list[..self.len]
    }

    /// What they claim together.
    pub fn claim(&self) -> Claim {
        self.as_slice().iter().fold(Claim::NONE, |all, argument| all.and(argument.claim))
    }
}

const OPCODE_MASK: u64 = 0xffff;
const FLAGS_SHIFT: u32 = 16;
const HEADER_RESERVED: u64 = !0xffff_ffff;

fn header(opcode: Opcode, flags: u16) -> u64 {
    opcode as u64 | (u64::from(flags) << FLAGS_SHIFT)
}

/// Flag bits and argument words outside `claim` must be zero.
fn check_unclaimed(msg: &Message, flags: u16, claim: Claim) -> Result<(), Error> {
    let stray_word = (1..MESSAGE_WORDS).any(|index| claim.words & (1 << index) == 0 && msg[index] != 0);
    if flags & !claim.flags != 0 || stray_word {
        Err(Error::ReservedBitsSet)
    } else {
        Ok(())
    }
}

/// Words `from..` must all be zero.
fn check_unused(msg: &Message, from: usize) -> Result<(), Error> {
    if msg[from..].iter().any(|&word| word != 0) {
        Err(Error::ReservedBitsSet)
    } else {
        Ok(())
    }
}
