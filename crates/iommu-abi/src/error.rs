//! The error codes shared by the wire protocol and the server's object model.
//!
//! Every failure a driver can observe has its own code, so a driver (or a test) can tell
//! *why* a request was refused. The numbers are part of the ABI: they never change and are
//! never reused. `0` is not an error; it is the "success" status of a reply (see
//! [`crate::wire`]). A failed request never changes server state: objects are created
//! completely or not at all.

/// Why a request failed. `#[repr(u32)]` with stable numbers: the value travels in the status
/// word of a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum Error {
    /// The opcode in the request header is not one the server knows.
    UnknownOpcode = 1,
    /// A bit the protocol reserves (in the header, a flags field, a rights mask or an unused
    /// argument word) was set. Reserved bits must be zero so they can gain meaning later.
    ReservedBitsSet = 2,
    /// A field that holds an enumeration (stage-1 format, page-response code, ...) carries a
    /// value outside the enumeration.
    BadEnumValue = 3,
    /// The operation needs a capability transferred with the call (a memory object, a device
    /// or an address space) and none came.
    MissingCapability = 4,
    /// A capability was transferred with an operation that takes none.
    UnexpectedCapability = 5,
    /// The transferred capability is not a valid memory object / device / address space of
    /// the calling client (the kernel refused to vouch for it).
    BadCapability = 6,
    /// The calling client, or the recipient named by `handle_derive`, is not connected.
    NoSuchClient = 7,
    /// The handle does not name a live object in the caller's handle table (never issued,
    /// destroyed, or revoked).
    NoSuchObject = 8,
    /// The handle names an object of another type than the operation needs.
    WrongType = 9,
    /// The handle lacks a right the operation needs.
    MissingRight = 10,
    /// `handle_derive` asked for rights the source handle does not hold.
    RightsEscalation = 11,
    /// The object is in use by another object (an IOAS with HWPTs, an HWPT with attached
    /// devices or nested children, a fault queue used by an HWPT, a device with attachments,
    /// a PASID with attachments) and cannot be destroyed.
    Busy = 12,
    /// A length of zero.
    ZeroLength = 13,
    /// An address, offset or length is not a multiple of the page size it must align to.
    Unaligned = 14,
    /// `start + length` wraps around the 64-bit address space.
    Overflow = 15,
    /// The requested IOVA range overlaps an existing mapping.
    Overlap = 16,
    /// The requested IOVA range is not inside the usable space: the aperture of every
    /// domain of the IOAS intersected with the IOAS's allowed ranges.
    OutsideAperture = 17,
    /// The requested IOVA range intersects a reserved region (a direct-mapped RMRR/RMR
    /// region or the MSI window) of a device attached through the IOAS.
    ReservedRegion = 18,
    /// An unmap range cuts an existing mapping; only whole mappings can be unmapped.
    PartialUnmap = 19,
    /// No mapping lies in the given range (unmap, copy source with a hole, dirty range).
    NotMapped = 20,
    /// No free IOVA range of the requested size and alignment exists.
    NoIovaSpace = 21,
    /// `ioas_allow_iovas` would leave an existing mapping outside the allowed ranges.
    AreasOutsideAllowed = 22,
    /// Attaching the device (or a new domain) would put an existing mapping inside a
    /// device's reserved region, or an existing mapping outside the new domain's aperture.
    ReservedConflict = 23,
    /// A range whose start lies above its last address.
    InvalidRange = 24,
    /// More ranges than one message can carry.
    TooManyRanges = 25,
    /// A mapping must be readable, writable or both.
    BadPermissions = 26,
    /// The mapping asks for more access than the memory allows (writable mapping of
    /// read-only memory, copy wider than the source mapping).
    PermissionDenied = 27,
    /// `offset + length` lies beyond the end of the memory object.
    OutOfObjectRange = 28,
    /// The device is already bound (by this or another client).
    DeviceAlreadyBound = 29,
    /// The device and the domain belong to different IOMMU units.
    IncompatibleUnit = 30,
    /// The IOMMU unit or device lacks the feature (nesting, dirty tracking, PASID, SVA,
    /// page requests), or the domain was not allocated with it.
    NotSupported = 31,
    /// The device (or the device's PASID) is already attached; use replace.
    AlreadyAttached = 32,
    /// The device (or the device's PASID) has no attachment of the requested kind.
    NotAttached = 33,
    /// The PASID is not allocated to the calling client.
    NoSuchPasid = 34,
    /// The server has no free PASID left.
    PasidExhausted = 35,
    /// The PASID is wider than the device supports.
    PasidOutOfRange = 36,
    /// A nested domain's parent was not allocated as a nesting parent, or is itself nested.
    NotNestParent = 37,
    /// The fault cookie does not name a page request awaiting a response in this queue.
    NoSuchFault = 38,
    /// Dirty bitmap requested from a domain whose dirty tracking is off.
    DirtyTrackingOff = 39,
    /// The dirty-tracking page size is not a power of two of at least 4 KiB.
    InvalidPageSize = 40,
    /// The dirty bitmap for that range and page size does not fit the reply.
    BitmapTooLarge = 41,
    /// The server ran out of object IDs, handles or memory.
    NoResources = 42,
    /// The IOMMU hardware (or its driver) failed the operation; nothing was changed.
    HardwareFailure = 43,
    /// Client side only: the reply was malformed (unknown status, reserved bits set,
    /// out-of-range fields). Never sent by a correct server.
    MalformedReply = 44,
    /// `handle_derive` named a recipient that has not accepted handles from the caller
    /// (`handle_accept`); the recipient's table is unchanged.
    NotAccepted = 45,
    /// Client side: the server this connection was made with ended and a new instance took
    /// over. The connection and every handle of it are gone, and the client's devices are
    /// blocked until it reconnects (`iommu_client::reconnect`) and sets them up again.
    ServerRestarted = 46,
    /// `device_bind`: the device shares an isolation group with a device another client
    /// holds (a DMA alias, or peer-to-peer without ACS): the IOMMU cannot keep their DMA
    /// apart, so a group goes to one client. The caller's table is unchanged.
    IsolationGroupHeld = 52,
}

impl Error {
    /// Every error, in numeric order (for exhaustive tests and documentation tables).
    pub const ALL: [Error; 47] = [
        Error::UnknownOpcode,
        Error::ReservedBitsSet,
        Error::BadEnumValue,
        Error::MissingCapability,
        Error::UnexpectedCapability,
        Error::BadCapability,
        Error::NoSuchClient,
        Error::NoSuchObject,
        Error::WrongType,
        Error::MissingRight,
        Error::RightsEscalation,
        Error::Busy,
        Error::ZeroLength,
        Error::Unaligned,
        Error::Overflow,
        Error::Overlap,
        Error::OutsideAperture,
        Error::ReservedRegion,
        Error::PartialUnmap,
        Error::NotMapped,
        Error::NoIovaSpace,
        Error::AreasOutsideAllowed,
        Error::ReservedConflict,
        Error::InvalidRange,
        Error::TooManyRanges,
        Error::BadPermissions,
        Error::PermissionDenied,
        Error::OutOfObjectRange,
        Error::DeviceAlreadyBound,
        Error::IncompatibleUnit,
        Error::NotSupported,
        Error::AlreadyAttached,
        Error::NotAttached,
        Error::NoSuchPasid,
        Error::PasidExhausted,
        Error::PasidOutOfRange,
        Error::NotNestParent,
        Error::NoSuchFault,
        Error::DirtyTrackingOff,
        Error::InvalidPageSize,
        Error::BitmapTooLarge,
        Error::NoResources,
        Error::HardwareFailure,
        Error::MalformedReply,
        Error::NotAccepted,
        Error::ServerRestarted,
        Error::IsolationGroupHeld,
    ];

    /// The wire value.
    pub const fn code(self) -> u32 {
        self as u32
    }

    /// The error with wire value `code`, or `None` for `0` (success) and unknown values.
    pub fn from_code(code: u32) -> Option<Error> {
        // Numbers are assigned per feature, so the table may have gaps: found by its number
        // (only error replies come here).
        Error::ALL.binary_search_by_key(&code, |error| error.code()).ok().map(|index| Error::ALL[index])
    }
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:?} ({})", self, self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_ascending_stable_and_round_trip() {
        for (index, error) in Error::ALL.iter().enumerate() {
            assert!(index == 0 || Error::ALL[index - 1].code() < error.code(), "{error:?} out of order");
            assert_eq!(Error::from_code(error.code()), Some(*error));
        }
        assert_eq!(Error::from_code(0), None);
        assert_eq!(Error::from_code(Error::ALL[Error::ALL.len() - 1].code() + 1), None);
        // A number between two assigned ones.
        let gap = (1..Error::ALL[Error::ALL.len() - 1].code()).find(|&code| Error::ALL.iter().all(|e| e.code() != code));
        if let Some(gap) = gap {
            assert_eq!(Error::from_code(gap), None);
        }
        assert_eq!(Error::from_code(u32::MAX), None);
        // Spot-check numbers that the documentation quotes.
        assert_eq!(Error::Busy.code(), 12);
        assert_eq!(Error::PartialUnmap.code(), 19);
    }
}
