//! QEMU's firmware configuration device (fw_cfg) and the ACPI table loader it carries, so code
//! that runs without UEFI or SeaBIOS (the kernel's boot report, the IOMMU server on arm `virt`)
//! can read the ACPI tables QEMU built for the machine.
//!
//! QEMU does not place ACPI tables in guest memory itself: it exports them as fw_cfg *files*
//! (`etc/acpi/tables`, `etc/acpi/rsdp`) plus a script (`etc/table-loader`) telling firmware
//! where to put them, which pointers inside them to patch with the addresses it chose, and
//! which checksums to recompute. This crate plays the firmware's part on copies of those
//! files, in a private address space, and then walks RSDP → XSDT/RSDT with
//! [`fwtables::sdt`] like any other ACPI consumer.
//!
//! # Use
//!
//! ```text
//! let device = fwcfg::FwCfg::probe(my_mmio)?;          // checks the "QEMU" signature
//! let loaded = device.load_acpi()?;                    // etc/table-loader + the files it names
//! let iort = loaded.find_table(fwtables::Signature::IORT)?;  // Option<Vec<u8>>, checksummed
//! ```
//!
//! `my_mmio` implements [`Mmio`] over the device's registers: on the arm `virt` machine they sit
//! at [`device::VIRT_MMIO_BASE`] (see [`device::register`] for the layout). On x86 the device
//! is behind I/O ports ([`device::port`]): wrap a [`PortIo`] in [`Ports`] instead.
//! [`table_override`] chooses between a DMAR or IORT handed over as a fw_cfg file and the
//! machine's own. Host code and tests
//! can drive the pieces separately: [`FwCfg::files`] and [`FwCfg::read_file`] for the file
//! directory, [`loader::Script::parse`] and [`loader::Script::run`] for the loader on file
//! contents obtained any other way.
//!
//! # Robustness
//!
//! Everything read from the device is untrusted: directory counts, file sizes, every offset,
//! length and pointer width in the loader script. Each is bounds-checked and a bad one is an
//! [`Error`] naming what was wrong; no input makes this crate panic or read out of bounds.
//! There is no `unsafe` here; the [`Mmio`] implementation owns the register accesses.
//!
//! References: QEMU's `docs/specs/fw_cfg.rst` (device), `hw/acpi/bios-linker-loader.c` (the
//! loader script's command format).

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod device;
pub mod error;
pub mod loader;
pub mod table_override;

pub use device::{File, FwCfg, Mmio, PortIo, Ports, Transport};
pub use error::{Error, LoaderProblem};
pub use loader::{AcpiTable, LoadedFiles};
