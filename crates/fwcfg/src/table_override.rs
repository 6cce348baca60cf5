//! The firmware-table override: a DMAR or IORT handed to the machine as a fw_cfg file
//! (`-fw_cfg name=opt/iommu-os/dmar,file=...`), taken instead of the machine's own table, as
//! Linux's ACPI table upgrade takes tables from the initrd. It lets a test give QEMU's machine
//! what QEMU cannot describe itself (RMRRs, IORT RMR nodes) and lets a user work around a
//! firmware bug.
//!
//! An override replaces the description of the machine, not the machine: it is taken only if
//! it parses, is exactly as long as its header says, and describes the same IOMMU units as the
//! machine's own table (for a DMAR every DRHD with its flags, segment, register base and device
//! scopes; for an IORT every SMMUv3 with its base and interrupts). Anything else is rejected
//! with a message and the machine's own table is used.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Display;

use fwtables::dmar::{DeviceScope, Dmar};
use fwtables::iort::{Iort, NodeBody};
use fwtables::sdt::{SdtHeader, Signature};

/// The fw_cfg file of the DMAR override.
pub const DMAR_FILE: &str = "opt/iommu-os/dmar";
/// The fw_cfg file of the IORT override.
pub const IORT_FILE: &str = "opt/iommu-os/iort";

/// Where the chosen table came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The override file.
    Override,
    /// The machine's own table (no override, or one that was rejected).
    Machine,
}

/// The outcome of [`choose`]: the table to use (none if the machine has none and no override
/// was taken), where it came from, and what to log.
#[derive(Debug)]
pub struct Chosen<T> {
    pub table: Option<T>,
    pub source: Source,
    /// One line per decision worth logging: an override taken, or rejected and why.
    pub messages: Vec<String>,
}

/// Chooses between the override `file` (its name and contents, if the machine has one) and the
/// machine's own table `machine`. `parse` decodes a table; `same_units` says how an override
/// describes different hardware than the machine's table does.
pub fn choose<T, E: Display>(
    signature: Signature,
    file: Option<(&str, &[u8])>,
    machine: Option<T>,
    parse: impl Fn(&[u8]) -> Result<T, E>,
    same_units: impl Fn(&T, &T) -> Result<(), String>,
) -> Chosen<T> {
    let Some((name, bytes)) = file else { return Chosen { table: machine, source: Source::Machine, messages: Vec::new() } };
    let sig = signature;
    let rejected = |why: String, machine: Option<T>| {
        let fallback = if machine.is_some() { format!("the machine's own {sig} is used") } else { format!("the machine has no {sig}") };
        Chosen { table: machine, source: Source::Machine, messages: Vec::from([format!("fw_cfg {name}: {sig} override rejected: {why}; {fallback}")]) }
    };
    let table = match parse(bytes) {
        Ok(table) => table,
        Err(error) => return rejected(format!("{error}"), machine),
    };
    // The header's length was read by `parse`; a file longer than its table is not a table.
    let declared = SdtHeader::parse(bytes).map(|(header, _)| header.length as usize).unwrap_or(0);
    if declared != bytes.len() {
        return rejected(format!("the file has {} bytes, its table {declared}", bytes.len()), machine);
    }
    let Some(own) = machine.as_ref() else {
        return rejected(format!("there is no {sig} of the machine's to compare its units with"), machine);
    };
    if let Err(why) = same_units(&table, own) {
        return rejected(why, machine);
    }
    Chosen { table: Some(table), source: Source::Override, messages: Vec::from([format!("fw_cfg {name}: {sig} override taken instead of the machine's own ({} bytes)", bytes.len())]) }
}

/// A device scope as the hardware sees it (its offset in the table left out).
fn scope_key(scope: &DeviceScope) -> String {
    let path: Vec<(u8, u8)> = scope.path.iter().map(|entry| (entry.device, entry.function)).collect();
    format!("{:?} bus {:#x} path {path:x?} enumeration id {}", scope.scope_type, scope.start_bus, scope.enumeration_id)
}

/// Whether two DMARs describe the same remapping units: the same DRHDs in the same order,
/// each with the same flags, segment, register base and device scopes. RMRRs, ATSRs and the
/// rest may differ.
pub fn dmar_same_units(override_table: &Dmar, machine: &Dmar) -> Result<(), String> {
    let (ours, theirs): (Vec<_>, Vec<_>) = (override_table.drhds().collect(), machine.drhds().collect());
    if ours.len() != theirs.len() {
        return Err(format!("it has {} DRHDs, the machine {}", ours.len(), theirs.len()));
    }
    for (index, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        if (a.flags, a.segment, a.register_base) != (b.flags, b.segment, b.register_base) {
            return Err(format!(
                "DRHD {index} is (flags {:#x}, segment {}, registers {:#x}), the machine's (flags {:#x}, segment {}, registers {:#x})",
                a.flags, a.segment, a.register_base, b.flags, b.segment, b.register_base
            ));
        }
        let (sa, sb): (Vec<String>, Vec<String>) = (a.scopes.iter().map(scope_key).collect(), b.scopes.iter().map(scope_key).collect());
        if sa != sb {
            return Err(format!("DRHD {index} at {:#x} has device scopes {sa:?}, the machine's {sb:?}", a.register_base));
        }
    }
    Ok(())
}

/// Whether two IORTs describe the same SMMUv3s: the same register bases and interrupts, in
/// the same order. Other nodes (RMRs above all) may differ; the server checks the StreamIDs
/// against the device tree either way.
pub fn iort_same_units(override_table: &Iort, machine: &Iort) -> Result<(), String> {
    let smmus = |iort: &Iort| -> Vec<(u64, u32, u32, u32, u32)> {
        iort.nodes
            .iter()
            .filter(|node| !iort.ignored(node.offset as usize))
            .filter_map(|node| match &node.body {
                NodeBody::SmmuV3(s) => Some((s.base_address, s.event_gsiv, s.pri_gsiv, s.gerr_gsiv, s.sync_gsiv)),
                _ => None,
            })
            .collect()
    };
    let (ours, theirs) = (smmus(override_table), smmus(machine));
    if ours != theirs {
        return Err(format!("its SMMUv3s (base, event, PRI, gerror, sync) are {ours:x?}, the machine's {theirs:x?}"));
    }
    Ok(())
}
