//! ACPI common structures: the System Description Table header, the RSDP, and walking the
//! RSDT/XSDT to find tables in physical memory.
//!
//! Parsers here never touch memory themselves. The IOMMU server copies bytes out of physical
//! memory and hands them in through the [`PhysicalMemory`] trait (a closure works), so the same
//! code runs in the server, in the kernel and in host tests over byte arrays.
//!
//! [`SdtHeader::parse`] reports a bad checksum ([`SdtHeader::checksum_valid`]) rather than
//! rejecting it, so a walk can still look at such a table's header; the table parsers (DMAR,
//! IORT, MCFG) then reject it with [`SdtHeader::require_checksum`], as ACPI §5.2.6 requires
//! every table's bytes to sum to zero.

use alloc::vec::Vec;
use core::fmt;

use crate::error::{ParseError, Problem};
use crate::layout::View;

/// A four-character table signature such as `DMAR`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 4]);

impl Signature {
    /// DMA Remapping table (Intel VT-d §8.1).
    pub const DMAR: Signature = Signature(*b"DMAR");
    /// IO Remapping Table (Arm DEN0049).
    pub const IORT: Signature = Signature(*b"IORT");
    /// PCI Express memory-mapped configuration table (PCI Firmware Spec §4.1.2).
    pub const MCFG: Signature = Signature(*b"MCFG");
    /// Root System Description Table (ACPI §5.2.7), 32-bit entries.
    pub const RSDT: Signature = Signature(*b"RSDT");
    /// Extended System Description Table (ACPI §5.2.8), 64-bit entries.
    pub const XSDT: Signature = Signature(*b"XSDT");
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in &self.0 {
            if (0x20..0x7f).contains(&b) {
                write!(f, "{}", b as char)?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature(\"{self}\")")
    }
}

/// System Description Table header layout, ACPI 6.5 §5.2.6 Table 5.4.
pub mod header_layout {
    use crate::layout::Field;
    pub const SIGNATURE: Field<[u8; 4]> = Field::new(0, "Signature");
    pub const LENGTH: Field<u32> = Field::new(4, "Length");
    pub const REVISION: Field<u8> = Field::new(8, "Revision");
    pub const CHECKSUM: Field<u8> = Field::new(9, "Checksum");
    pub const OEM_ID: Field<[u8; 6]> = Field::new(10, "OEMID");
    pub const OEM_TABLE_ID: Field<[u8; 8]> = Field::new(16, "OEM Table ID");
    pub const OEM_REVISION: Field<u32> = Field::new(24, "OEM Revision");
    pub const CREATOR_ID: Field<[u8; 4]> = Field::new(28, "Creator ID");
    pub const CREATOR_REVISION: Field<u32> = Field::new(32, "Creator Revision");
    /// Size of the header; table-specific fields start here.
    pub const SIZE: usize = 36;
    const _: () = assert!(CREATOR_REVISION.end() == SIZE);
}

/// The header every ACPI table except the RSDP and FACS starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SdtHeader {
    pub signature: Signature,
    /// Length of the whole table including this header.
    pub length: u32,
    pub revision: u8,
    pub checksum: u8,
    /// Whether all `length` bytes sum to zero modulo 256, as ACPI §5.2.6 requires.
    pub checksum_valid: bool,
    pub oem_id: [u8; 6],
    pub oem_table_id: [u8; 8],
    pub oem_revision: u32,
    pub creator_id: [u8; 4],
    pub creator_revision: u32,
}

impl SdtHeader {
    /// Size of the header in bytes.
    pub const SIZE: usize = header_layout::SIZE;

    /// Parses the header of the table in `bytes` and returns it together with the table cut to
    /// its declared length. Bytes past the declared length (padding in a dump) are ignored; a
    /// declared length past the end of `bytes` is an error.
    pub fn parse(bytes: &[u8]) -> Result<(SdtHeader, &[u8]), ParseError> {
        let signature = Signature(bytes.first_chunk::<4>().copied().unwrap_or([0; 4]));
        Self::parse_as(bytes, signature)
    }

    /// Like [`SdtHeader::parse`], but errors unless the signature is `expected`.
    pub fn parse_expecting(bytes: &[u8], expected: Signature) -> Result<(SdtHeader, &[u8]), ParseError> {
        let (header, table) = Self::parse_as(bytes, expected)?;
        if header.signature != expected {
            let view = View::table(table, expected, "table header");
            return Err(view.error(
                header_layout::SIGNATURE.name,
                0,
                Problem::WrongSignature { expected, found: header.signature },
            ));
        }
        Ok((header, table))
    }

    /// Errors unless `table` (this header's table, cut to its length) sums to zero; the error
    /// names the Checksum field.
    pub fn require_checksum(&self, table: &[u8]) -> Result<(), ParseError> {
        if self.checksum_valid {
            return Ok(());
        }
        let sum = table.iter().fold(0u8, |sum, &b| sum.wrapping_add(b));
        Err(View::table(table, self.signature, "table header").error(
            header_layout::CHECKSUM.name,
            header_layout::CHECKSUM.offset,
            Problem::ChecksumMismatch { sum },
        ))
    }

    fn parse_as(bytes: &[u8], label: Signature) -> Result<(SdtHeader, &[u8]), ParseError> {
        use header_layout as l;
        let view = View::table(bytes, label, "table header");
        let length = view.get(l::LENGTH)?;
        let declared = length as usize;
        view.require_min_len(l::LENGTH.offset, l::LENGTH.name, declared, Self::SIZE)?;
        let table = view.range(0, declared, l::LENGTH.name).map_err(|mut error| {
            // The Length field, not the table start, is what overruns the bytes.
            error.offset = l::LENGTH.offset;
            error
        })?;
        let view = View::table(table, label, "table header");
        Ok((
            SdtHeader {
                signature: Signature(view.get(l::SIGNATURE)?),
                length,
                revision: view.get(l::REVISION)?,
                checksum: view.get(l::CHECKSUM)?,
                checksum_valid: checksum_is_zero(table),
                oem_id: view.get(l::OEM_ID)?,
                oem_table_id: view.get(l::OEM_TABLE_ID)?,
                oem_revision: view.get(l::OEM_REVISION)?,
                creator_id: view.get(l::CREATOR_ID)?,
                creator_revision: view.get(l::CREATOR_REVISION)?,
            },
            table,
        ))
    }
}

/// Whether `bytes` sum to zero modulo 256 (the ACPI checksum rule).
pub fn checksum_is_zero(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |sum, &b| sum.wrapping_add(b)) == 0
}

/// Root System Description Pointer layout, ACPI 6.5 §5.2.5.3 Table 5.3.
pub mod rsdp_layout {
    use crate::layout::Field;
    pub const SIGNATURE: Field<[u8; 8]> = Field::new(0, "Signature");
    pub const CHECKSUM: Field<u8> = Field::new(8, "Checksum");
    pub const OEM_ID: Field<[u8; 6]> = Field::new(9, "OEMID");
    pub const REVISION: Field<u8> = Field::new(15, "Revision");
    pub const RSDT_ADDRESS: Field<u32> = Field::new(16, "RsdtAddress");
    /// Size of the revision-0 (ACPI 1.0) structure; the checksum covers exactly these bytes.
    pub const V1_SIZE: usize = 20;
    const _: () = assert!(RSDT_ADDRESS.end() == V1_SIZE);
    pub const LENGTH: Field<u32> = Field::new(20, "Length");
    pub const XSDT_ADDRESS: Field<u64> = Field::new(24, "XsdtAddress");
    pub const EXTENDED_CHECKSUM: Field<u8> = Field::new(32, "Extended Checksum");
    pub const RESERVED: Field<[u8; 3]> = Field::new(33, "Reserved");
    /// Size of the revision-2 structure.
    pub const V2_SIZE: usize = 36;
    const _: () = assert!(RESERVED.end() == V2_SIZE);
}

/// The RSDP, revision 0 (ACPI 1.0, RSDT only) or 2 and later (adds the XSDT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rsdp {
    pub oem_id: [u8; 6],
    pub revision: u8,
    pub rsdt_address: u32,
    /// Present for revision 2 and later.
    pub xsdt_address: Option<u64>,
    /// Present for revision 2 and later: the structure's length as it declares it.
    pub length: Option<u32>,
    /// Whether the first 20 bytes sum to zero.
    pub checksum_valid: bool,
    /// For revision 2 and later, whether all `length` bytes sum to zero.
    pub extended_checksum_valid: Option<bool>,
}

const RSDP_SIGNATURE: [u8; 8] = *b"RSD PTR ";

impl Rsdp {
    /// Parses an RSDP from bytes copied out of memory (at least 20, or 36 for revision 2+).
    pub fn parse(bytes: &[u8]) -> Result<Rsdp, ParseError> {
        use rsdp_layout as l;
        let label = Signature(*b"RSDP");
        let view = View::table(bytes, label, "RSDP");
        let signature = view.get(l::SIGNATURE)?;
        if signature != RSDP_SIGNATURE {
            let found = Signature(signature.first_chunk::<4>().copied().unwrap_or([0; 4]));
            return Err(view.error(l::SIGNATURE.name, 0, Problem::WrongSignature { expected: label, found }));
        }
        let v1 = view.range(0, l::V1_SIZE, l::SIGNATURE.name)?;
        let revision = view.get(l::REVISION)?;
        let mut rsdp = Rsdp {
            oem_id: view.get(l::OEM_ID)?,
            revision,
            rsdt_address: view.get(l::RSDT_ADDRESS)?,
            xsdt_address: None,
            length: None,
            checksum_valid: checksum_is_zero(v1),
            extended_checksum_valid: None,
        };
        // ACPI 1.0 RSDPs have revision 0; revision 1 was never defined, so anything >= 2 has
        // the extended fields.
        if revision >= 2 {
            let length = view.get(l::LENGTH)?;
            view.require_min_len(l::LENGTH.offset, l::LENGTH.name, length as usize, l::V2_SIZE)?;
            let whole = view.range(0, length as usize, l::LENGTH.name)?;
            rsdp.length = Some(length);
            rsdp.xsdt_address = Some(view.get(l::XSDT_ADDRESS)?);
            rsdp.extended_checksum_valid = Some(checksum_is_zero(whole));
        }
        Ok(rsdp)
    }

    /// Physical address of the root table to use: the XSDT when present and non-zero (ACPI
    /// §5.2.5.3 says an OS must prefer it), otherwise the RSDT.
    pub fn root_table_address(&self) -> (Signature, u64) {
        match self.xsdt_address {
            Some(xsdt) if xsdt != 0 => (Signature::XSDT, xsdt),
            _ => (Signature::RSDT, u64::from(self.rsdt_address)),
        }
    }
}

/// Source of physical-memory bytes for walking the root tables.
pub trait PhysicalMemory {
    /// Fills `buf` with the bytes at physical `address`; returns false if they cannot be read.
    fn read(&mut self, address: u64, buf: &mut [u8]) -> bool;
}

impl<F: FnMut(u64, &mut [u8]) -> bool> PhysicalMemory for F {
    fn read(&mut self, address: u64, buf: &mut [u8]) -> bool {
        self(address, buf)
    }
}

/// Largest table [`read_table`] will copy. Real DMAR/IORT tables are a few KiB; the cap keeps a
/// corrupt length field from turning into a huge allocation.
pub const MAX_TABLE_LEN: u32 = 1 << 20;

/// Why walking tables in physical memory failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkError {
    /// The memory reader refused `length` bytes at `address`.
    Unreadable { address: u64, length: usize },
    /// The table at `address` declares a length above [`MAX_TABLE_LEN`].
    TooLarge { address: u64, length: u32 },
    /// The table at `address` is malformed.
    Malformed { address: u64, error: ParseError },
}

impl fmt::Display for WalkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalkError::Unreadable { address, length } => {
                write!(f, "cannot read {length} bytes at physical address {address:#x}")
            }
            WalkError::TooLarge { address, length } => write!(
                f,
                "table at {address:#x} declares length {length}, above the {MAX_TABLE_LEN}-byte limit"
            ),
            WalkError::Malformed { address, error } => write!(f, "table at {address:#x}: {error}"),
        }
    }
}

/// Copies the whole table at `address`: reads its header for the length, then the table.
pub fn read_table(memory: &mut impl PhysicalMemory, address: u64) -> Result<Vec<u8>, WalkError> {
    let mut header = [0u8; SdtHeader::SIZE];
    if !memory.read(address, &mut header) {
        return Err(WalkError::Unreadable { address, length: header.len() });
    }
    let length = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if length > MAX_TABLE_LEN {
        return Err(WalkError::TooLarge { address, length });
    }
    // A length below the header size still allocates the header; parse then rejects it.
    let mut table = alloc::vec![0u8; (length as usize).max(SdtHeader::SIZE)];
    table[..SdtHeader::SIZE].copy_from_slice(&header);
    if length as usize > SdtHeader::SIZE {
        let rest_ok = address
            .checked_add(SdtHeader::SIZE as u64)
            .is_some_and(|rest| memory.read(rest, &mut table[SdtHeader::SIZE..]));
        if !rest_ok {
            return Err(WalkError::Unreadable { address, length: length as usize });
        }
    }
    SdtHeader::parse(&table).map_err(|error| WalkError::Malformed { address, error })?;
    Ok(table)
}

/// A parsed RSDT or XSDT: the physical addresses of every other table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootTable {
    pub header: SdtHeader,
    /// Table addresses in table order (RSDT entries widened to 64 bits).
    pub entries: Vec<u64>,
}

impl RootTable {
    /// Parses an RSDT (4-byte entries, ACPI §5.2.7) or XSDT (8-byte entries, ACPI §5.2.8).
    /// Trailing bytes that do not form a whole entry are an error.
    pub fn parse(bytes: &[u8]) -> Result<RootTable, ParseError> {
        let (header, table) = SdtHeader::parse(bytes)?;
        let entry_size = match header.signature {
            Signature::RSDT => 4,
            Signature::XSDT => 8,
            found => {
                let view = View::table(table, found, "root table");
                return Err(view.error(
                    header_layout::SIGNATURE.name,
                    0,
                    Problem::WrongSignature { expected: Signature::XSDT, found },
                ));
            }
        };
        let view = View::table(table, header.signature, "root table");
        let body = table.len() - SdtHeader::SIZE;
        if !body.is_multiple_of(entry_size) {
            return Err(view.error(
                header_layout::LENGTH.name,
                header_layout::LENGTH.offset,
                Problem::InvalidValue { value: u64::from(header.length), expected: "36 plus a whole number of entries" },
            ));
        }
        let mut entries = Vec::with_capacity(body / entry_size);
        for index in 0..body / entry_size {
            let at = SdtHeader::SIZE + index * entry_size;
            let address = if entry_size == 4 {
                u64::from(view.read_at::<u32>(at, "Entry")?)
            } else {
                view.read_at::<u64>(at, "Entry")?
            };
            entries.push(address);
        }
        Ok(RootTable { header, entries })
    }

    /// Reads and parses the root table the RSDP points at.
    pub fn load(rsdp: &Rsdp, memory: &mut impl PhysicalMemory) -> Result<RootTable, WalkError> {
        let (_, address) = rsdp.root_table_address();
        let bytes = read_table(memory, address)?;
        RootTable::parse(&bytes).map_err(|error| WalkError::Malformed { address, error })
    }

    /// Copies every table with `signature` (there may be several, e.g. SSDTs), with its address.
    /// Tables whose headers cannot be read are errors, not silently skipped.
    pub fn find_all(
        &self,
        memory: &mut impl PhysicalMemory,
        signature: Signature,
    ) -> Result<Vec<(u64, Vec<u8>)>, WalkError> {
        let mut found = Vec::new();
        for &address in &self.entries {
            let mut sig = [0u8; 4];
            if !memory.read(address, &mut sig) {
                return Err(WalkError::Unreadable { address, length: sig.len() });
            }
            if Signature(sig) == signature {
                found.push((address, read_table(memory, address)?));
            }
        }
        Ok(found)
    }

    /// Copies the first table with `signature`, if any.
    pub fn find(&self, memory: &mut impl PhysicalMemory, signature: Signature) -> Result<Option<(u64, Vec<u8>)>, WalkError> {
        Ok(self.find_all(memory, signature)?.into_iter().next())
    }
}
