//! The firmware-table override (`fwcfg::table_override`): a DMAR (x86) or IORT (arm) handed to
//! the machine as a fw_cfg file is used instead of the machine's own table when it describes
//! the same units; the decision is logged and published in `status::TABLE_OVERRIDE`.
//!
//! On x86 fw_cfg is reached through the I/O-port capability in `slots::FW_CFG` (the selector
//! and data ports, nothing else); on arm through the MMIO capability the IORT is read from.

use alloc::vec::Vec;
use core::fmt::Display;
use fwcfg::table_override::{choose, Source};
use fwcfg::{FwCfg, Transport};
use fwtables::sdt::Signature;
use userlib::println;

use crate::status::{self, StatusPage};

/// The contents of fw_cfg file `name`, if the device has one; `None` (said why) otherwise.
pub fn read_file<T: Transport>(device: &FwCfg<T>, name: &str) -> Option<Vec<u8>> {
    match device.read_file(name) {
        Ok(bytes) => Some(bytes),
        Err(fwcfg::Error::FileNotFound { .. }) => None,
        Err(error) => {
            println!("iommu-server: fw_cfg {name} unreadable: {error}");
            None
        }
    }
}

/// fw_cfg through its x86 I/O ports (`slots::FW_CFG`). An empty slot reads as no device.
#[cfg(target_arch = "x86_64")]
pub struct FwCfgPorts;

#[cfg(target_arch = "x86_64")]
impl fwcfg::PortIo for FwCfgPorts {
    fn in8(&self, port: u16) -> u8 {
        userlib::syscall::ioport_read(crate::slots::FW_CFG, u64::from(port), 1).unwrap_or(0) as u8
    }
    fn out16(&self, port: u16, value: u16) {
        let _ = userlib::syscall::ioport_write(crate::slots::FW_CFG, u64::from(port), 2, u64::from(value));
    }
}

/// The override file `name` through the x86 fw_cfg ports; `None` without a device or file.
#[cfg(target_arch = "x86_64")]
pub fn read_x86(name: &str) -> Option<Vec<u8>> {
    let device = FwCfg::probe(fwcfg::Ports(FwCfgPorts)).ok()?;
    read_file(&device, name)
}

/// Chooses between the override `offered` (a fw_cfg file's name and contents) and the
/// machine's own `machine` table, logs the decision (and the firmware bugs of a taken
/// override) and publishes it.
pub fn apply<T, E: Display>(
    status: &StatusPage,
    signature: Signature,
    offered: Option<(&str, Vec<u8>)>,
    machine: Option<T>,
    parse: impl Fn(&[u8]) -> Result<T, E>,
    same_units: impl Fn(&T, &T) -> Result<(), alloc::string::String>,
    warnings: impl Fn(&T) -> &[fwtables::Warning],
) -> Option<T> {
    let chosen = choose(signature, offered.as_ref().map(|(name, bytes)| (*name, bytes.as_slice())), machine, parse, same_units);
    for message in &chosen.messages {
        println!("iommu-server: {message}");
    }
    let outcome = match (offered.is_some(), chosen.source) {
        (false, _) => status::TABLE_OVERRIDE_NONE,
        (true, Source::Override) => status::TABLE_OVERRIDE_TAKEN,
        (true, Source::Machine) => status::TABLE_OVERRIDE_REJECTED,
    };
    status.set(status::TABLE_OVERRIDE, outcome);
    if let (Source::Override, Some(table)) = (chosen.source, chosen.table.as_ref()) {
        for warning in warnings(table) {
            println!("iommu-server: firmware bug in the override: {warning}");
        }
    }
    chosen.table
}
