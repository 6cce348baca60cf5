//! The boot report's view of the platform's IOMMUs: the DMAR units (x86) or the SMMUv3 nodes of
//! the device tree (aarch64). The IOMMU server does its own, complete discovery; this only
//! tells the person booting the system what the firmware describes.

use boot::{BootInfo, Firmware, EARLY_DIRECT_MAP_SIZE};
use fwtables::sdt::Signature;

/// Copies physical memory below 4 GiB through the direct map.
fn read_physical(address: u64, buf: &mut [u8]) -> bool {
    match address.checked_add(buf.len() as u64) {
        Some(end) if end <= EARLY_DIRECT_MAP_SIZE => {
            // SAFETY: the range lies in the direct map; firmware tables are not written
            // concurrently (single CPU, nothing else touches them).
            let src = unsafe { core::slice::from_raw_parts(crate::mm::phys_to_virt(address), buf.len()) };
            buf.copy_from_slice(src);
            true
        }
        _ => false,
    }
}

/// Kind and register base of every IOMMU the firmware describes.
pub fn iommus(info: &BootInfo) -> alloc::vec::Vec<(&'static str, u64)> {
    match info.firmware {
        Firmware::Acpi { rsdp } => match find_table(rsdp, Signature::DMAR).ok().flatten().map(|b| fwtables::dmar::Dmar::parse(&b)) {
            Some(Ok(dmar)) => dmar.drhds().map(|d| ("vtd", d.register_base)).collect(),
            _ => alloc::vec::Vec::new(),
        },
        Firmware::DeviceTree { dtb, .. } => smmus_in_device_tree(dtb),
    }
}

pub fn report_iommus(info: &BootInfo) {
    match info.firmware {
        Firmware::Acpi { rsdp } => report_dmar(rsdp),
        Firmware::DeviceTree { dtb, .. } => {
            let smmus = smmus_in_device_tree(dtb);
            for (_, base) in &smmus {
                crate::println!("iommu: SMMUv3 at {base:#x} (device tree)");
            }
            if smmus.is_empty() {
                crate::println!("iommu: no SMMUv3 in the device tree");
            }
        }
    }
}

/// The bytes of the first table with `signature` the root table lists, if there is one.
pub(crate) fn find_table(rsdp: u64, signature: Signature) -> Result<Option<alloc::vec::Vec<u8>>, alloc::string::String> {
    let mut raw = [0u8; 36];
    if !read_physical(rsdp, &mut raw) {
        return Err("RSDP not readable".into());
    }
    let rsdp = fwtables::sdt::Rsdp::parse(&raw).map_err(|e| alloc::format!("RSDP: {e:?}"))?;
    let mut memory = read_physical;
    let root = fwtables::sdt::RootTable::load(&rsdp, &mut memory).map_err(|e| alloc::format!("root table: {e:?}"))?;
    let table = root.find(&mut memory, signature).map_err(|e| alloc::format!("{signature}: {e:?}"))?;
    Ok(table.map(|(_, bytes)| bytes))
}

fn report_dmar(rsdp: u64) {
    let bytes = match find_table(rsdp, Signature::DMAR) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return crate::println!("iommu: no DMAR table (no VT-d unit)"),
        Err(e) => return crate::println!("iommu: cannot read ACPI tables: {e}"),
    };
    match fwtables::dmar::Dmar::parse(&bytes) {
        Ok(dmar) => {
            crate::println!(
                "iommu: DMAR: host address width {} bits, interrupt remapping {}",
                dmar.host_address_width as u32 + 1,
                if dmar.flags.intr_remap() { "supported" } else { "not supported" }
            );
            for drhd in dmar.drhds() {
                crate::println!(
                    "iommu: VT-d unit at {:#x}, segment {}, {} device scopes{}",
                    drhd.register_base,
                    drhd.segment,
                    drhd.scopes.len(),
                    if drhd.include_pci_all() { ", all other PCI devices" } else { "" }
                );
            }
        }
        Err(e) => crate::println!("iommu: malformed DMAR: {e:?}"),
    }
}

#[cfg(target_arch = "aarch64")]
fn smmus_in_device_tree(dtb: u64) -> alloc::vec::Vec<(&'static str, u64)> {
    // SAFETY: the boot path validated the DTB header at this address; it lies in the direct map
    // and is never written.
    let Ok(fdt) = (unsafe { fdt::Fdt::from_ptr(crate::mm::phys_to_virt(dtb)) }) else {
        return alloc::vec::Vec::new();
    };
    fdt.all_nodes()
        .filter(|n| n.compatible().is_some_and(|c| c.all().any(|c| c == "arm,smmu-v3")))
        .map(|n| ("smmuv3", n.reg().and_then(|mut r| r.next()).map_or(0, |r| r.starting_address as u64)))
        .collect()
}

/// The register base of the GICv3 ITS the device tree names (`arm,gic-v3-its`), if any.
#[cfg(target_arch = "aarch64")]
pub fn its_base(info: &BootInfo) -> Option<u64> {
    let Firmware::DeviceTree { dtb, .. } = info.firmware else { return None };
    // SAFETY: as in `smmus_in_device_tree`.
    let fdt = unsafe { fdt::Fdt::from_ptr(crate::mm::phys_to_virt(dtb)) }.ok()?;
    let its = fdt.all_nodes().find(|n| n.compatible().is_some_and(|c| c.all().any(|c| c == "arm,gic-v3-its")))?;
    its.reg().and_then(|mut r| r.next()).map(|r| r.starting_address as u64)
}

#[cfg(target_arch = "x86_64")]
fn smmus_in_device_tree(_dtb: u64) -> alloc::vec::Vec<(&'static str, u64)> {
    alloc::vec::Vec::new()
}
