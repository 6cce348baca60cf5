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
//! Memory to map is named by a memory-object capability transferred *with the `ioas_map`
//! call itself*: there is no registration step and no server-side memory handle table, so a
//! driver cannot name memory it does not currently hold a capability for. The server pins
//! the pages while mapped and identifies the object by the kernel's identity of it (not by
//! the capability slot), so the same memory sent twice is pinned once. `device_bind` and
//! `sva_bind` likewise carry the device / address-space capability. All other operations
//! must come without a capability.
//!
//! Decoding is total: every bit pattern either decodes to exactly one [`Request`] or yields
//! a distinct [`Error`] (unknown opcode, reserved bits, bad enumeration value, missing or
//! unexpected capability, too many ranges, oversize bitmap).

use crate::error::Error;
use crate::types::{
    Access, DeviceInfo, FaultReason, FaultRecord, Handle, IovaRange, PageResponseCode, Perm,
    Rights, Stage1Config, Stage1Format, UnitCaps, UnitKind, PAGE_SIZE,
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

/// Operation numbers (request word 0, bits 0..16). Stable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Opcode {
    /// Allocate an empty IOAS.
    IoasAlloc = 1,
    /// Map memory (capability) into an IOAS.
    IoasMap = 2,
    /// Unmap whole mappings in a range.
    IoasUnmap = 3,
    /// Unmap everything.
    IoasUnmapAll = 4,
    /// Map pages already mapped in one IOAS into another (or elsewhere in the same).
    IoasCopy = 5,
    /// Page through the usable IOVA ranges.
    IoasIovaRanges = 6,
    /// Restrict the IOVAs that may be mapped.
    IoasAllowIovas = 7,
    /// Allocate a paging HWPT over an IOAS.
    HwptAlloc = 8,
    /// Allocate a nested HWPT over a parent HWPT.
    HwptAllocNested = 9,
    /// Bind a device from its capability.
    DeviceBind = 10,
    /// Attach a device (or one of its PASIDs) to an HWPT.
    DeviceAttach = 11,
    /// Switch an attached device (or PASID) to another HWPT without a blocked window.
    DeviceReplace = 12,
    /// Detach: the device (or PASID) is blocked.
    DeviceDetach = 13,
    /// Allocate a PASID.
    PasidAlloc = 14,
    /// Free a PASID.
    PasidFree = 15,
    /// Bind a process address space (capability) to a device PASID.
    SvaBind = 16,
    /// Undo `sva_bind`.
    SvaUnbind = 17,
    /// Allocate a fault queue.
    FaultAlloc = 18,
    /// Read fault records.
    FaultRead = 19,
    /// Answer a page request.
    FaultRespond = 20,
    /// Switch dirty tracking of an HWPT.
    HwptSetDirtyTracking = 21,
    /// Read and clear dirty bits.
    HwptGetDirtyBitmap = 22,
    /// Derive a handle with fewer rights into a client's table.
    HandleDerive = 23,
    /// Revoke a handle and every handle derived from it.
    HandleRevoke = 24,
    /// Destroy an object.
    Destroy = 25,
    /// Describe a device's IOMMU unit.
    GetInfo = 26,
    /// Register a memory object (capability) for mapping without a transfer each time.
    MemoryRegister = 27,
    /// Map registered memory into an IOAS.
    IoasMapRegistered = 28,
    /// Consent to (or withdraw consent from) handles another client derives into this one.
    HandleAccept = 29,
    /// Give the caller interrupt lines for a device's MSIs (x86 with interrupt remapping).
    MsiAlloc = 30,
}

impl Opcode {
    /// Every opcode, in numeric order.
    pub const ALL: [Opcode; 30] = [
        Opcode::IoasAlloc,
        Opcode::IoasMap,
        Opcode::IoasUnmap,
        Opcode::IoasUnmapAll,
        Opcode::IoasCopy,
        Opcode::IoasIovaRanges,
        Opcode::IoasAllowIovas,
        Opcode::HwptAlloc,
        Opcode::HwptAllocNested,
        Opcode::DeviceBind,
        Opcode::DeviceAttach,
        Opcode::DeviceReplace,
        Opcode::DeviceDetach,
        Opcode::PasidAlloc,
        Opcode::PasidFree,
        Opcode::SvaBind,
        Opcode::SvaUnbind,
        Opcode::FaultAlloc,
        Opcode::FaultRead,
        Opcode::FaultRespond,
        Opcode::HwptSetDirtyTracking,
        Opcode::HwptGetDirtyBitmap,
        Opcode::HandleDerive,
        Opcode::HandleRevoke,
        Opcode::Destroy,
        Opcode::GetInfo,
        Opcode::MemoryRegister,
        Opcode::IoasMapRegistered,
        Opcode::HandleAccept,
        Opcode::MsiAlloc,
    ];

    /// Decode, or [`Error::UnknownOpcode`].
    pub fn from_u16(value: u16) -> Result<Opcode, Error> {
        let index = usize::from(value.checked_sub(1).ok_or(Error::UnknownOpcode)?);
        Opcode::ALL.get(index).copied().ok_or(Error::UnknownOpcode)
    }

    /// Whether the operation carries a capability transfer.
    pub const fn takes_capability(self) -> bool {
        matches!(self, Opcode::IoasMap | Opcode::DeviceBind | Opcode::SvaBind | Opcode::MemoryRegister)
    }

    /// The layout of the success reply.
    pub const fn reply_shape(self) -> ReplyShape {
        match self {
            Opcode::IoasAlloc
            | Opcode::HwptAlloc
            | Opcode::HwptAllocNested
            | Opcode::DeviceBind
            | Opcode::FaultAlloc
            | Opcode::HandleDerive
            | Opcode::MemoryRegister => ReplyShape::Handle,
            Opcode::IoasMap | Opcode::IoasCopy | Opcode::IoasMapRegistered => ReplyShape::Iova,
            Opcode::IoasUnmap | Opcode::IoasUnmapAll => ReplyShape::Length,
            Opcode::IoasIovaRanges => ReplyShape::IovaRanges,
            Opcode::PasidAlloc => ReplyShape::Pasid,
            Opcode::FaultRead => ReplyShape::Faults,
            Opcode::HwptGetDirtyBitmap => ReplyShape::DirtyBitmap,
            Opcode::GetInfo => ReplyShape::Info,
            Opcode::IoasAllowIovas
            | Opcode::DeviceAttach
            | Opcode::DeviceReplace
            | Opcode::DeviceDetach
            | Opcode::PasidFree
            | Opcode::SvaBind
            | Opcode::SvaUnbind
            | Opcode::FaultRespond
            | Opcode::HwptSetDirtyTracking
            | Opcode::HandleRevoke
            | Opcode::HandleAccept
            | Opcode::Destroy
            | Opcode::MsiAlloc => ReplyShape::Empty,
        }
    }
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
/// Flag bit of `hwpt_set_dirty_tracking`: switch on (clear: switch off).
pub const DIRTY_ENABLE: u16 = 1 << 0;
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

/// A decoded request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Request {
    /// `ioas_alloc()`: words 1..8 zero.
    IoasAlloc,
    /// `ioas_map`: w1 IOAS, w2 IOVA (0 unless FIXED_IOVA), w3 offset in the memory object,
    /// w4 length; flags [`MapFlags`]; memory-object capability transferred.
    IoasMap { ioas: Handle, iova: IovaChoice, perm: Perm, offset: u64, length: u64 },
    /// `ioas_map_registered`: w1 IOAS, w2 IOVA (0 unless FIXED_IOVA), w3 offset in the
    /// registered memory, w4 length, w5 the MEMORY handle; flags [`MapFlags`].
    IoasMapRegistered { ioas: Handle, memory: Handle, iova: IovaChoice, perm: Perm, offset: u64, length: u64 },
    /// `memory_register`: words 1..8 zero; memory-object capability transferred.
    MemoryRegister,
    /// `ioas_unmap`: w1 IOAS, w2 IOVA, w3 length.
    IoasUnmap { ioas: Handle, iova: u64, length: u64 },
    /// `ioas_unmap_all`: w1 IOAS.
    IoasUnmapAll { ioas: Handle },
    /// `ioas_copy`: w1 destination IOAS, w2 source IOAS, w3 destination IOVA (0 unless
    /// FIXED_IOVA), w4 source IOVA, w5 length; flags [`MapFlags`].
    IoasCopy { dst: Handle, dst_iova: IovaChoice, src: Handle, src_iova: u64, length: u64, perm: Perm },
    /// `ioas_iova_ranges`: w1 IOAS, w2 index of the first range wanted.
    IoasIovaRanges { ioas: Handle, first: u32 },
    /// `ioas_allow_iovas`: w1 IOAS; flags = number of ranges (0..=3; 0 lifts the
    /// restriction); w2..w8 pairs (start, last).
    IoasAllowIovas { ioas: Handle, ranges: RangeList },
    /// `hwpt_alloc`: w1 device, w2 IOAS, w3 fault queue (with FAULT_VALID); flags
    /// [`HwptFlags`].
    HwptAlloc { device: Handle, ioas: Handle, fault: Option<Handle>, nest_parent: bool, dirty_tracking: bool },
    /// `hwpt_alloc_nested`: w1 device, w2 parent HWPT, w3 fault queue (with FAULT_VALID),
    /// w4 stage-1 format, w5 stage-1 table root, w6 bits 0..8 address width, 8..16 log2
    /// entries; flags [`FAULT_VALID`].
    HwptAllocNested { device: Handle, parent: Handle, fault: Option<Handle>, stage1: Stage1Config },
    /// `device_bind()`: device capability transferred.
    DeviceBind,
    /// `device_attach`: w1 device, w2 HWPT, w3 PASID (with PASID_VALID).
    DeviceAttach { device: Handle, hwpt: Handle, pasid: Option<u32> },
    /// `device_replace`: as `device_attach`.
    DeviceReplace { device: Handle, hwpt: Handle, pasid: Option<u32> },
    /// `device_detach`: w1 device, w3 PASID (with PASID_VALID).
    DeviceDetach { device: Handle, pasid: Option<u32> },
    /// `pasid_alloc()`.
    PasidAlloc,
    /// `pasid_free`: w1 PASID.
    PasidFree { pasid: u32 },
    /// `sva_bind`: w1 device, w2 PASID, w3 fault queue (with FAULT_VALID); address-space
    /// capability transferred.
    SvaBind { device: Handle, pasid: u32, fault: Option<Handle> },
    /// `sva_unbind`: w1 device, w2 PASID.
    SvaUnbind { device: Handle, pasid: u32 },
    /// `fault_alloc()`.
    FaultAlloc,
    /// `fault_read`: w1 fault queue.
    FaultRead { fault: Handle },
    /// `fault_respond`: w1 fault queue, w2 cookie, w3 response code.
    FaultRespond { fault: Handle, cookie: u32, code: PageResponseCode },
    /// `hwpt_set_dirty_tracking`: w1 HWPT; flags [`DIRTY_ENABLE`].
    HwptSetDirtyTracking { hwpt: Handle, enable: bool },
    /// `hwpt_get_dirty_bitmap`: w1 HWPT or IOAS, w2 IOVA, w3 length, w4 page size.
    HwptGetDirtyBitmap { target: Handle, iova: u64, length: u64, page_size: u64 },
    /// `handle_derive`: w1 handle, w2 rights, w3 recipient client ID.
    HandleDerive { handle: Handle, rights: Rights, recipient: u64 },
    /// `handle_accept`: w1 the client ID whose derived handles this client accepts; flags
    /// [`ACCEPT_WITHDRAW`] (set: accept no longer).
    HandleAccept { from: u64, accept: bool },
    /// `handle_revoke`: w1 handle.
    HandleRevoke { handle: Handle },
    /// `destroy`: w1 handle.
    Destroy { handle: Handle },
    /// `get_info`: w1 device.
    GetInfo { device: Handle },
    /// `msi_alloc`: w1 device, w2 count (a power of two, 1..=[`MSI_MAX`]), w3 the caller's
    /// capability slot for the first IRQ capability (the others follow consecutively).
    MsiAlloc { device: Handle, count: u32, first_slot: u64 },
}

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

const OPCODE_MASK: u64 = 0xffff;
const FLAGS_SHIFT: u32 = 16;
const HEADER_RESERVED: u64 = !0xffff_ffff;

fn header(opcode: Opcode, flags: u16) -> u64 {
    opcode as u64 | (u64::from(flags) << FLAGS_SHIFT)
}

fn handle_word(word: u64) -> Result<Handle, Error> {
    u32::try_from(word).map(Handle).map_err(|_| Error::ReservedBitsSet)
}

fn pasid_word(word: u64) -> Result<u32, Error> {
    match u32::try_from(word) {
        Ok(pasid) if pasid <= PASID_MAX => Ok(pasid),
        _ => Err(Error::PasidOutOfRange),
    }
}

fn check_flags(flags: u16, defined: u16) -> Result<(), Error> {
    if flags & !defined != 0 {
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

fn optional_handle(valid: bool, word: u64) -> Result<Option<Handle>, Error> {
    if valid {
        handle_word(word).map(Some)
    } else if word != 0 {
        Err(Error::ReservedBitsSet)
    } else {
        Ok(None)
    }
}

fn optional_pasid(valid: bool, word: u64) -> Result<Option<u32>, Error> {
    if valid {
        pasid_word(word).map(Some)
    } else if word != 0 {
        Err(Error::ReservedBitsSet)
    } else {
        Ok(None)
    }
}

/// The flags of a map or copy, or [`Error::ReservedBitsSet`] for an undefined bit.
fn map_flags(flags: u16) -> Result<MapFlags, Error> {
    MapFlags::from_bits(flags).ok_or(Error::ReservedBitsSet)
}

fn map_perm(flags: MapFlags) -> Perm {
    Perm { read: flags.contains(MapFlags::READ), write: flags.contains(MapFlags::WRITE) }
}

fn perm_flags(perm: Perm) -> u16 {
    let mut flags = MapFlags::empty();
    flags.set(MapFlags::READ, perm.read);
    flags.set(MapFlags::WRITE, perm.write);
    flags.bits()
}

fn iova_choice(flags: MapFlags, word: u64) -> Result<IovaChoice, Error> {
    if flags.contains(MapFlags::FIXED_IOVA) {
        Ok(IovaChoice::Fixed(word))
    } else if word != 0 {
        Err(Error::ReservedBitsSet)
    } else {
        Ok(IovaChoice::Auto)
    }
}

fn iova_choice_words(choice: IovaChoice) -> (u16, u64) {
    match choice {
        IovaChoice::Fixed(iova) => (MapFlags::FIXED_IOVA.bits(), iova),
        IovaChoice::Auto => (0, 0),
    }
}

/// Number of bitmap bits a dirty query of `length` bytes at `page_size` needs, after
/// checking the page size; [`Error::InvalidPageSize`] or [`Error::BitmapTooLarge`] (for the
/// reply's capacity).
fn dirty_pages_fit_reply(length: u64, page_size: u64) -> Result<(), Error> {
    if !page_size.is_power_of_two() || page_size < PAGE_SIZE {
        return Err(Error::InvalidPageSize);
    }
    if length.div_ceil(page_size) > DIRTY_BITMAP_MAX_PAGES {
        return Err(Error::BitmapTooLarge);
    }
    Ok(())
}

impl Request {
    /// The opcode of this request.
    pub const fn opcode(&self) -> Opcode {
        match self {
            Request::IoasAlloc => Opcode::IoasAlloc,
            Request::IoasMap { .. } => Opcode::IoasMap,
            Request::IoasMapRegistered { .. } => Opcode::IoasMapRegistered,
            Request::MemoryRegister => Opcode::MemoryRegister,
            Request::IoasUnmap { .. } => Opcode::IoasUnmap,
            Request::IoasUnmapAll { .. } => Opcode::IoasUnmapAll,
            Request::IoasCopy { .. } => Opcode::IoasCopy,
            Request::IoasIovaRanges { .. } => Opcode::IoasIovaRanges,
            Request::IoasAllowIovas { .. } => Opcode::IoasAllowIovas,
            Request::HwptAlloc { .. } => Opcode::HwptAlloc,
            Request::HwptAllocNested { .. } => Opcode::HwptAllocNested,
            Request::DeviceBind => Opcode::DeviceBind,
            Request::DeviceAttach { .. } => Opcode::DeviceAttach,
            Request::DeviceReplace { .. } => Opcode::DeviceReplace,
            Request::DeviceDetach { .. } => Opcode::DeviceDetach,
            Request::PasidAlloc => Opcode::PasidAlloc,
            Request::PasidFree { .. } => Opcode::PasidFree,
            Request::SvaBind { .. } => Opcode::SvaBind,
            Request::SvaUnbind { .. } => Opcode::SvaUnbind,
            Request::FaultAlloc => Opcode::FaultAlloc,
            Request::FaultRead { .. } => Opcode::FaultRead,
            Request::FaultRespond { .. } => Opcode::FaultRespond,
            Request::HwptSetDirtyTracking { .. } => Opcode::HwptSetDirtyTracking,
            Request::HwptGetDirtyBitmap { .. } => Opcode::HwptGetDirtyBitmap,
            Request::HandleDerive { .. } => Opcode::HandleDerive,
            Request::HandleRevoke { .. } => Opcode::HandleRevoke,
            Request::Destroy { .. } => Opcode::Destroy,
            Request::GetInfo { .. } => Opcode::GetInfo,
            Request::HandleAccept { .. } => Opcode::HandleAccept,
            Request::MsiAlloc { .. } => Opcode::MsiAlloc,
        }
    }

    /// The message for this request. Encoding never fails: every `Request` value has a
    /// representation (fields that cannot be represented, such as a PASID above
    /// [`PASID_MAX`], are encoded as given and refused by `decode`).
    pub fn encode(&self) -> Message {
        let mut msg = [0u64; MESSAGE_WORDS];
        let flags: u16 = match *self {
            Request::IoasAlloc | Request::DeviceBind | Request::PasidAlloc | Request::FaultAlloc | Request::MemoryRegister => 0,
            Request::IoasMapRegistered { ioas, memory, iova, perm, offset, length } => {
                let (fixed, iova_word) = iova_choice_words(iova);
                msg[1] = u64::from(ioas.0);
                msg[2] = iova_word;
                msg[3] = offset;
                msg[4] = length;
                msg[5] = u64::from(memory.0);
                fixed | perm_flags(perm)
            }
            Request::IoasMap { ioas, iova, perm, offset, length } => {
                let (fixed, iova_word) = iova_choice_words(iova);
                msg[1] = u64::from(ioas.0);
                msg[2] = iova_word;
                msg[3] = offset;
                msg[4] = length;
                fixed | perm_flags(perm)
            }
            Request::IoasUnmap { ioas, iova, length } => {
                msg[1] = u64::from(ioas.0);
                msg[2] = iova;
                msg[3] = length;
                0
            }
            Request::IoasUnmapAll { ioas } => {
                msg[1] = u64::from(ioas.0);
                0
            }
            Request::IoasCopy { dst, dst_iova, src, src_iova, length, perm } => {
                let (fixed, iova_word) = iova_choice_words(dst_iova);
                msg[1] = u64::from(dst.0);
                msg[2] = u64::from(src.0);
                msg[3] = iova_word;
                msg[4] = src_iova;
                msg[5] = length;
                fixed | perm_flags(perm)
            }
            Request::IoasIovaRanges { ioas, first } => {
                msg[1] = u64::from(ioas.0);
                msg[2] = u64::from(first);
                0
            }
            Request::IoasAllowIovas { ioas, ranges } => {
                msg[1] = u64::from(ioas.0);
                for (index, range) in ranges.as_slice().iter().enumerate() {
                    msg[2 + 2 * index] = range.start;
                    msg[3 + 2 * index] = range.last;
                }
                u16::from(ranges.len)
            }
            Request::HwptAlloc { device, ioas, fault, nest_parent, dirty_tracking } => {
                msg[1] = u64::from(device.0);
                msg[2] = u64::from(ioas.0);
                msg[3] = fault.map_or(0, |f| u64::from(f.0));
                let mut flags = HwptFlags::empty();
                flags.set(HwptFlags::NEST_PARENT, nest_parent);
                flags.set(HwptFlags::DIRTY_TRACKING, dirty_tracking);
                flags.set(HwptFlags::FAULT_VALID, fault.is_some());
                flags.bits()
            }
            Request::HwptAllocNested { device, parent, fault, stage1 } => {
                msg[1] = u64::from(device.0);
                msg[2] = u64::from(parent.0);
                msg[3] = fault.map_or(0, |f| u64::from(f.0));
                msg[4] = stage1.format as u64;
                msg[5] = stage1.table_root;
                msg[6] = u64::from(stage1.address_width) | (u64::from(stage1.table_entries_log2) << 8);
                if fault.is_some() { FAULT_VALID } else { 0 }
            }
            Request::DeviceAttach { device, hwpt, pasid } | Request::DeviceReplace { device, hwpt, pasid } => {
                msg[1] = u64::from(device.0);
                msg[2] = u64::from(hwpt.0);
                msg[3] = pasid.map_or(0, u64::from);
                if pasid.is_some() { PASID_VALID } else { 0 }
            }
            Request::DeviceDetach { device, pasid } => {
                msg[1] = u64::from(device.0);
                msg[3] = pasid.map_or(0, u64::from);
                if pasid.is_some() { PASID_VALID } else { 0 }
            }
            Request::PasidFree { pasid } => {
                msg[1] = u64::from(pasid);
                0
            }
            Request::SvaBind { device, pasid, fault } => {
                msg[1] = u64::from(device.0);
                msg[2] = u64::from(pasid);
                msg[3] = fault.map_or(0, |f| u64::from(f.0));
                if fault.is_some() { FAULT_VALID } else { 0 }
            }
            Request::SvaUnbind { device, pasid } => {
                msg[1] = u64::from(device.0);
                msg[2] = u64::from(pasid);
                0
            }
            Request::FaultRead { fault } => {
                msg[1] = u64::from(fault.0);
                0
            }
            Request::FaultRespond { fault, cookie, code } => {
                msg[1] = u64::from(fault.0);
                msg[2] = u64::from(cookie);
                msg[3] = code as u64;
                0
            }
            Request::HwptSetDirtyTracking { hwpt, enable } => {
                msg[1] = u64::from(hwpt.0);
                if enable { DIRTY_ENABLE } else { 0 }
            }
            Request::HwptGetDirtyBitmap { target, iova, length, page_size } => {
                msg[1] = u64::from(target.0);
                msg[2] = iova;
                msg[3] = length;
                msg[4] = page_size;
                0
            }
            Request::HandleDerive { handle, rights, recipient } => {
                msg[1] = u64::from(handle.0);
                msg[2] = u64::from(rights.bits());
                msg[3] = recipient;
                0
            }
            Request::HandleAccept { from, accept } => {
                msg[1] = from;
                if accept { 0 } else { ACCEPT_WITHDRAW }
            }
            Request::HandleRevoke { handle } | Request::Destroy { handle } => {
                msg[1] = u64::from(handle.0);
                0
            }
            Request::GetInfo { device } => {
                msg[1] = u64::from(device.0);
                0
            }
            Request::MsiAlloc { device, count, first_slot } => {
                msg[1] = u64::from(device.0);
                msg[2] = u64::from(count);
                msg[3] = first_slot;
                0
            }
        };
        msg[0] = header(self.opcode(), flags);
        msg
    }

    /// Decode and validate a request; `capability_present` tells whether the IPC carried a
    /// capability. Checks, in order: header reserved bits, opcode, capability presence,
    /// flags, then each argument word.
    pub fn decode(msg: &Message, capability_present: bool) -> Result<Request, Error> {
        if msg[0] & HEADER_RESERVED != 0 {
            return Err(Error::ReservedBitsSet);
        }
        let opcode = Opcode::from_u16((msg[0] & OPCODE_MASK) as u16)?;
        let flags = (msg[0] >> FLAGS_SHIFT) as u16;
        match (opcode.takes_capability(), capability_present) {
            (true, false) => return Err(Error::MissingCapability),
            (false, true) => return Err(Error::UnexpectedCapability),
            _ => {}
        }
        let request = match opcode {
            Opcode::IoasAlloc | Opcode::DeviceBind | Opcode::PasidAlloc | Opcode::FaultAlloc | Opcode::MemoryRegister => {
                check_flags(flags, 0)?;
                check_unused(msg, 1)?;
                match opcode {
                    Opcode::IoasAlloc => Request::IoasAlloc,
                    Opcode::DeviceBind => Request::DeviceBind,
                    Opcode::PasidAlloc => Request::PasidAlloc,
                    Opcode::MemoryRegister => Request::MemoryRegister,
                    _ => Request::FaultAlloc,
                }
            }
            Opcode::IoasMapRegistered => {
                let flags = map_flags(flags)?;
                check_unused(msg, 6)?;
                Request::IoasMapRegistered {
                    ioas: handle_word(msg[1])?,
                    memory: handle_word(msg[5])?,
                    iova: iova_choice(flags, msg[2])?,
                    perm: map_perm(flags),
                    offset: msg[3],
                    length: msg[4],
                }
            }
            Opcode::IoasMap => {
                let flags = map_flags(flags)?;
                check_unused(msg, 5)?;
                Request::IoasMap {
                    ioas: handle_word(msg[1])?,
                    iova: iova_choice(flags, msg[2])?,
                    perm: map_perm(flags),
                    offset: msg[3],
                    length: msg[4],
                }
            }
            Opcode::IoasUnmap => {
                check_flags(flags, 0)?;
                check_unused(msg, 4)?;
                Request::IoasUnmap { ioas: handle_word(msg[1])?, iova: msg[2], length: msg[3] }
            }
            Opcode::IoasUnmapAll => {
                check_flags(flags, 0)?;
                check_unused(msg, 2)?;
                Request::IoasUnmapAll { ioas: handle_word(msg[1])? }
            }
            Opcode::IoasCopy => {
                let flags = map_flags(flags)?;
                check_unused(msg, 6)?;
                Request::IoasCopy {
                    dst: handle_word(msg[1])?,
                    src: handle_word(msg[2])?,
                    dst_iova: iova_choice(flags, msg[3])?,
                    src_iova: msg[4],
                    length: msg[5],
                    perm: map_perm(flags),
                }
            }
            Opcode::IoasIovaRanges => {
                check_flags(flags, 0)?;
                check_unused(msg, 3)?;
                let first = u32::try_from(msg[2]).map_err(|_| Error::ReservedBitsSet)?;
                Request::IoasIovaRanges { ioas: handle_word(msg[1])?, first }
            }
            Opcode::IoasAllowIovas => {
                let count = usize::from(flags);
                if count > RANGES_PER_MESSAGE {
                    return Err(Error::TooManyRanges);
                }
                check_unused(msg, 2 + 2 * count)?;
                let mut ranges = [IovaRange::ALL; RANGES_PER_MESSAGE];
                for (index, range) in ranges.iter_mut().take(count).enumerate() {
                    *range = IovaRange::new(msg[2 + 2 * index], msg[3 + 2 * index])?;
                }
                Request::IoasAllowIovas { ioas: handle_word(msg[1])?, ranges: RangeList::new(&ranges[..count])? }
            }
            Opcode::HwptAlloc => {
                let flags = HwptFlags::from_bits(flags).ok_or(Error::ReservedBitsSet)?;
                check_unused(msg, 4)?;
                Request::HwptAlloc {
                    device: handle_word(msg[1])?,
                    ioas: handle_word(msg[2])?,
                    fault: optional_handle(flags.contains(HwptFlags::FAULT_VALID), msg[3])?,
                    nest_parent: flags.contains(HwptFlags::NEST_PARENT),
                    dirty_tracking: flags.contains(HwptFlags::DIRTY_TRACKING),
                }
            }
            Opcode::HwptAllocNested => {
                check_flags(flags, FAULT_VALID)?;
                check_unused(msg, 7)?;
                if msg[6] & !0xffff != 0 {
                    return Err(Error::ReservedBitsSet);
                }
                Request::HwptAllocNested {
                    device: handle_word(msg[1])?,
                    parent: handle_word(msg[2])?,
                    fault: optional_handle(flags & FAULT_VALID != 0, msg[3])?,
                    stage1: Stage1Config {
                        format: Stage1Format::from_u64(msg[4])?,
                        table_root: msg[5],
                        address_width: msg[6] as u8,
                        table_entries_log2: (msg[6] >> 8) as u8,
                    },
                }
            }
            Opcode::DeviceAttach | Opcode::DeviceReplace => {
                check_flags(flags, PASID_VALID)?;
                check_unused(msg, 4)?;
                let device = handle_word(msg[1])?;
                let hwpt = handle_word(msg[2])?;
                let pasid = optional_pasid(flags & PASID_VALID != 0, msg[3])?;
                if opcode == Opcode::DeviceAttach {
                    Request::DeviceAttach { device, hwpt, pasid }
                } else {
                    Request::DeviceReplace { device, hwpt, pasid }
                }
            }
            Opcode::DeviceDetach => {
                check_flags(flags, PASID_VALID)?;
                check_unused(msg, 4)?;
                if msg[2] != 0 {
                    return Err(Error::ReservedBitsSet);
                }
                Request::DeviceDetach {
                    device: handle_word(msg[1])?,
                    pasid: optional_pasid(flags & PASID_VALID != 0, msg[3])?,
                }
            }
            Opcode::PasidFree => {
                check_flags(flags, 0)?;
                check_unused(msg, 2)?;
                Request::PasidFree { pasid: pasid_word(msg[1])? }
            }
            Opcode::SvaBind => {
                check_flags(flags, FAULT_VALID)?;
                check_unused(msg, 4)?;
                Request::SvaBind {
                    device: handle_word(msg[1])?,
                    pasid: pasid_word(msg[2])?,
                    fault: optional_handle(flags & FAULT_VALID != 0, msg[3])?,
                }
            }
            Opcode::SvaUnbind => {
                check_flags(flags, 0)?;
                check_unused(msg, 3)?;
                Request::SvaUnbind { device: handle_word(msg[1])?, pasid: pasid_word(msg[2])? }
            }
            Opcode::FaultRead => {
                check_flags(flags, 0)?;
                check_unused(msg, 2)?;
                Request::FaultRead { fault: handle_word(msg[1])? }
            }
            Opcode::FaultRespond => {
                check_flags(flags, 0)?;
                check_unused(msg, 4)?;
                Request::FaultRespond {
                    fault: handle_word(msg[1])?,
                    cookie: u32::try_from(msg[2]).map_err(|_| Error::ReservedBitsSet)?,
                    code: PageResponseCode::from_u64(msg[3])?,
                }
            }
            Opcode::HwptSetDirtyTracking => {
                check_flags(flags, DIRTY_ENABLE)?;
                check_unused(msg, 2)?;
                Request::HwptSetDirtyTracking { hwpt: handle_word(msg[1])?, enable: flags & DIRTY_ENABLE != 0 }
            }
            Opcode::HwptGetDirtyBitmap => {
                check_flags(flags, 0)?;
                check_unused(msg, 5)?;
                dirty_pages_fit_reply(msg[3], msg[4])?;
                Request::HwptGetDirtyBitmap { target: handle_word(msg[1])?, iova: msg[2], length: msg[3], page_size: msg[4] }
            }
            Opcode::HandleDerive => {
                check_flags(flags, 0)?;
                check_unused(msg, 4)?;
                let rights = u32::try_from(msg[2]).map_err(|_| Error::ReservedBitsSet)?;
                Request::HandleDerive { handle: handle_word(msg[1])?, rights: Rights::from_bits(rights).ok_or(Error::ReservedBitsSet)?, recipient: msg[3] }
            }
            Opcode::HandleAccept => {
                check_flags(flags, ACCEPT_WITHDRAW)?;
                check_unused(msg, 2)?;
                Request::HandleAccept { from: msg[1], accept: flags & ACCEPT_WITHDRAW == 0 }
            }
            Opcode::HandleRevoke | Opcode::Destroy | Opcode::GetInfo => {
                check_flags(flags, 0)?;
                check_unused(msg, 2)?;
                let handle = handle_word(msg[1])?;
                match opcode {
                    Opcode::HandleRevoke => Request::HandleRevoke { handle },
                    Opcode::Destroy => Request::Destroy { handle },
                    _ => Request::GetInfo { device: handle },
                }
            }
            Opcode::MsiAlloc => {
                check_flags(flags, 0)?;
                check_unused(msg, 4)?;
                let count = match u32::try_from(msg[2]) {
                    Ok(count) if count.is_power_of_two() && count <= MSI_MAX => count,
                    _ => return Err(Error::InvalidRange),
                };
                Request::MsiAlloc { device: handle_word(msg[1])?, count, first_slot: msg[3] }
            }
        };
        Ok(request)
    }
}

const FAULT_PASID_SHIFT: u32 = 32;
const FAULT_PASID_VALID: u64 = 1 << 52;
const FAULT_ACCESS_SHIFT: u32 = 53;
const FAULT_REASON_SHIFT: u32 = 57;
const FAULT_RESERVED: u64 = !((1 << 60) - 1);

fn encode_fault(record: &FaultRecord, words: &mut [u64]) {
    let pasid = record.pasid.map_or(0, |p| (u64::from(p) << FAULT_PASID_SHIFT) | FAULT_PASID_VALID);
    words[0] = u64::from(record.device.0)
        | pasid
        | (u64::from(record.access.bits()) << FAULT_ACCESS_SHIFT)
        | ((record.reason as u64) << FAULT_REASON_SHIFT);
    words[1] = record.iova;
    words[2] = u64::from(record.cookie);
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
            Reply::Faults(batch) => {
                msg[1] = batch.len() as u64 | (u64::from(batch.overflow) << 32);
                for (index, record) in batch.records().enumerate() {
                    encode_fault(record, &mut msg[2 + 3 * index..5 + 3 * index]);
                }
            }
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
