//! Parsers for the firmware tables an IOMMU manager needs: the ACPI root tables and MCFG, the
//! Intel DMAR (VT-d remapping hardware) and the Arm IORT (SMMU and ITS topology).
//!
//! Design:
//! * Input is the raw bytes of one whole table, header included, exactly as it sits in memory
//!   (or as `acpidump -b` / `iasl -c` write it). Nothing here maps or reads physical memory;
//!   [`sdt::PhysicalMemory`] lets the caller supply bytes when walking RSDT/XSDT.
//! * Every length, offset and count in a table is untrusted. Reads go through bounds-checked
//!   [`layout::Field`] descriptors, so a malformed table yields a [`ParseError`] naming the
//!   structure, field and table offset; no input can make the parsers panic or read out of
//!   bounds. There is no `unsafe` in this crate.
//! * A table is rejected only when it is structurally broken (lengths that overrun, entries on
//!   top of headers, a wrong checksum, IORT references that dangle or loop). Wrong contents in a
//!   sound structure (an RMRR ending below its base, a unit at address zero) decode, with a
//!   [`Warning`] naming the entry and field; consumers skip the entries warnings mark ignored.
//! * Parsers decode into owned values (`alloc`), because the IOMMU server keeps the topology for
//!   its lifetime and the tables are small.
//! * Layouts live in `layout` modules next to each parser, with the specification section of
//!   each structure and a compile-time check that its fields add up to its size. `fwdump`
//!   uses the same constants to print table offsets for its comparison with `iasl`.

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod dmar;
pub mod error;
pub mod iort;
pub mod layout;
#[cfg(feature = "testing")]
pub mod testing;
pub mod mcfg;
pub mod sdt;
pub mod warning;

pub use error::{ParseError, Problem};
pub use sdt::{SdtHeader, Signature};
pub use warning::{Warning, WarningKind};
