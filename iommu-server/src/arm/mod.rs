//! The aarch64 platform: discovery from the device tree, PCI enumeration with BAR assignment,
//! SMMUv3 bring-up, and the SMMU's event and global-error interrupts.
//!
//! Bring-up order: every SMMU is brought up (all streams denied) and every known stream is
//! attached to the blocking domain *before* any BAR is given an address or any function is
//! let decode memory, and bus mastering is only enabled when a client binds the device.

mod devicetree;
mod iort;
pub mod msi;

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use hwio::VolatileRegion;
use iommu_backends::smmuv3::{DomainStage, SmmuBackend};
use userlib::{println, syscall};

use crate::discovery::{self, Ecam, FirmwareMemory, MemoryWindow, PciFunction};
use crate::hw::{DmaPool, TscClock};
use crate::kernel_iface::DeviceRegistry;
use crate::layout::{self, PAGE};
use crate::slots;
use crate::state::Platform;
use crate::status::{self, StatusPage};

/// Checks that the IRQ capability in `slot` serves `intid` and binds it to `bit` of the
/// events notification.
fn bind_interrupt(slot: u64, intid: Option<u32>, bit: u64, what: &str) -> Result<(), &'static str> {
    let intid = intid.ok_or("the device tree names no SMMU interrupt the server needs")?;
    let line = syscall::irq_info(slot).map_err(|_| "no IRQ capability for an SMMU interrupt")?;
    if line != u64::from(intid) {
        println!("iommu-server: the {what} IRQ capability serves line {line}, the device tree says {intid}");
        return Err("SMMU IRQ capability does not match the device tree");
    }
    syscall::irq_bind(slot, slots::EVENTS, bit).map_err(|_| "cannot bind an SMMU interrupt")
}

/// Binds the PRI queue's interrupt of `unit`, which has PRI, to the event thread. Without it
/// the unit still works: its page requests are drained with the next event-queue interrupt,
/// later than they could be, which the console says.
fn bind_priq_interrupt(unit: usize, intid: Option<u32>) {
    match bind_interrupt(slots::PRIQ_IRQ, intid, slots::PRIQ_EVENT_BIT, "PRI queue") {
        Ok(()) => println!("iommu-server: unit {unit}: PRI queue interrupt bound"),
        Err(why) => println!("iommu-server: unit {unit}: PRI queue interrupt not bound ({why}): page requests wait for the next event-queue interrupt"),
    }
}

pub fn bring_up(status: &StatusPage, stage: DomainStage, allow_unisolated_msi: bool) -> Result<Platform, &'static str> {
    let firmware = FirmwareMemory::from_slots();
    println!("iommu-server: {} firmware regions", firmware.region_count());
    let tree = devicetree::read(&firmware)?;
    for smmu in &tree.smmus {
        println!(
            "iommu-server: device tree: SMMUv3 at {:#x} size {:#x}, eventq INTID {:?}, gerror INTID {:?}, {}",
            smmu.base,
            smmu.size,
            smmu.eventq_intid,
            smmu.gerror_intid,
            if smmu.coherent { "dma-coherent" } else { "not coherent" }
        );
    }
    let host = tree.pci.as_ref().ok_or("no PCIe host bridge (pci-host-ecam-generic) in the device tree")?;
    println!(
        "iommu-server: device tree: PCIe ECAM {:#x} size {:#x}, buses {}..={}, 32-bit window {:x?}, iommu-map {:x?}",
        host.ecam_base, host.ecam_size, host.first_bus, host.last_bus, host.memory_32, host.iommu_map
    );
    if !tree.smmus.is_empty() {
        status.set(status::IOMMU_DESCRIBED, 1);
    }

    let mut ecam = Ecam::for_window(host.ecam_base, host.first_bus, host.last_bus)?;
    let mut functions = ecam.enumerate(discovery::BusNumbers::Assign);
    status.set(status::PCI_FUNCTIONS, functions.len() as u64);

    let iort = iort::read(status);
    let mut disputed_device_ids = Vec::new();
    let iort_check = match &iort {
        Err(why) => {
            println!("iommu-server: IORT not read: {why}");
            status::IORT_UNREAD
        }
        Ok(description) => {
            if let (Some(iort), Some(host)) = (description.as_ref(), tree.pci.as_ref()) {
                disputed_device_ids = disputed_msi_device_ids(&host.msi_map, &functions, iort);
            }
            match cross_check(&tree, &functions, description.as_ref()) {
                true => status::IORT_AGREES,
                false => status::IORT_DISAGREES,
            }
        }
    };
    status.set(status::IORT_CHECK, iort_check);
    // IORT RMR ranges by (SMMU, StreamID): identity-mapped for their devices from takeover on.
    let reserved = iort.ok().flatten().map(|description| description.reserved_ranges()).unwrap_or_default();

    let mut backend = SmmuBackend::new(DmaPool::new(slots::DMA_AUTHORITY, layout::DMA), TscClock);
    // An ITS the host bridge's msi-map names: each device raises only the EventIDs the kernel
    // mapped for its DeviceID, so the one page holding GITS_TRANSLATER (and nothing else of
    // the GIC) goes into every paging domain.
    let its = tree.its.iter().find(|its| its.phandle.is_some() && host.msi_map.iter().any(|entry| Some(entry.controller) == its.phandle));
    let mut translater = None;
    if let Some(its) = its {
        let doorbell = its.base + msi::GITS_TRANSLATER_OFFSET;
        if backend.add_msi_doorbell(doorbell) {
            println!("iommu-server: device tree: ITS at {:#x}, msi-map {:x?}: its doorbell page {:#x} goes into domains", its.base, host.msi_map, doorbell & !(PAGE - 1));
            translater = Some(doorbell);
        } else {
            println!("iommu-server: ITS doorbell {doorbell:#x} lies outside the IOVA window kept for doorbells: drivers get no MSIs");
        }
    }
    // GICv2m has one doorbell for every device and cannot tell them apart: a device that can
    // write it can raise any other device's MSI. Its doorbell goes into domains only when the
    // system description allows unisolated MSIs, and drivers get no MSIs from the server.
    if !tree.msi_frames.is_empty() && !allow_unisolated_msi {
        println!("iommu-server: GICv2m cannot tell devices apart: its doorbell stays unmapped, MSIs of attached devices fault (start argument ALLOW_UNISOLATED_MSI maps it)");
    }
    for &frame in tree.msi_frames.iter().filter(|_| allow_unisolated_msi) {
        if !backend.add_msi_doorbell(frame) {
            println!("iommu-server: GICv2m frame {frame:#x} lies outside the IOVA window kept for doorbells: MSIs of attached devices stay blocked");
        }
    }
    let (register_base, register_size) = syscall::mmio_info(slots::IOMMU_REGISTERS).unwrap_or((0, 0));
    for (index, node) in tree.smmus.iter().enumerate() {
        let inside = node.base >= register_base && node.base + node.size <= register_base + register_size;
        if !inside || !backend.units.is_empty() {
            // One register capability, one mapping window: a second SMMU would need its own.
            println!("iommu-server: SMMUv3 {index} at {:#x}: no register capability for it; its devices stay untranslated", node.base);
            continue;
        }
        let Some(phandle) = node.phandle else {
            println!("iommu-server: SMMUv3 {index} has no phandle: no device can name it");
            continue;
        };
        // Requester ID → StreamID of every enumerated function this SMMU translates.
        let mut streams = BTreeMap::new();
        let mut rmrs = BTreeMap::new();
        for function in functions.iter_mut() {
            let rid = u32::from(function.requester_id());
            let mapped = host.iommu_map.iter().filter(|e| e.iommu == phandle).find_map(|e| e.stream_of(rid));
            if let Some(sid) = mapped {
                streams.insert(rid, sid);
                function.unit = Some(backend.units.len());
                if let Some(ranges) = reserved.get(&(node.base, sid)) {
                    println!("iommu-server: pci {} (StreamID {sid:#x}): IORT RMR {ranges:x?} identity-mapped from takeover on", function.address);
                    rmrs.insert(rid, ranges.clone());
                }
            }
        }
        let pages = node.size.div_ceil(PAGE);
        syscall::mmio_map(slots::IOMMU_REGISTERS, layout::IOMMU_REGISTERS, (node.base - register_base) / PAGE, pages).map_err(|_| "cannot map SMMU registers")?;
        // SAFETY: the register frame (page-aligned, not 0) was just mapped and stays mapped for the
        // server's life.
        let regs = unsafe { VolatileRegion::at_address(layout::IOMMU_REGISTERS as usize, node.size as usize) };
        let stream_count = streams.len();
        let unit = backend.add_unit(regs, node.base, stage, streams)?;
        backend.units[unit].rmrs = rmrs;
        let smmu = &backend.units[unit];
        let id = smmu.hw.id_registers();
        println!(
            "iommu-server: unit {unit}: SMMUv3 at {:#x} IDR0 {:#010x} IDR1 {:#010x} IDR5 {:#010x}, {}-bit output, {} stream table, {} domains; {stream_count} streams attached to the blocking domain, all DMA blocked",
            smmu.base,
            id.idr[0],
            id.idr[1],
            id.idr[5],
            id.oas_bits(),
            match smmu.hw.stream_table_format() {
                smmuv3::regs::StreamTableFormat::Linear => "linear",
                smmuv3::regs::StreamTableFormat::TwoLevel => "2-level",
            },
            smmu.stage.name()
        );
        if id.coherent() != node.coherent {
            println!("iommu-server: unit {unit}: IDR0.COHACC and the device tree's dma-coherent disagree");
        }
        status.set(status::UNIT0_CAP, u64::from(id.idr[0]));
        status.set(status::UNIT0_ECAP, u64::from(id.idr[1]));
        status.set(status::UNIT0_MODE, smmu.stage.code());
        bind_interrupt(slots::FAULT_IRQ, node.eventq_intid, slots::FAULT_EVENT_BIT, "event queue")?;
        bind_interrupt(slots::GERROR_IRQ, node.gerror_intid, slots::GERROR_EVENT_BIT, "global error")?;
        if backend.units[unit].hw.page_requests_enabled() {
            bind_priq_interrupt(unit, node.priq_intid);
        }
    }
    status.set(status::UNITS, backend.units.len() as u64);
    // Before any client exists, devices with RMRs get their identity maps (in a blocking domain
    // of their own), and keep them in every domain they are attached to.
    backend.install_direct_maps().map_err(|error| {
        println!("iommu-server: IORT RMR identity maps failed: {error:?}");
        "cannot map IORT RMRs"
    })?;
    status.set(status::DIRECT_DEVICES, backend.units.iter().map(|unit| unit.rmrs.len()).sum::<usize>() as u64);

    // Only now, with every translated stream blocked, do devices get addresses to decode.
    let pci_window = syscall::mmio_info(slots::PCI_MMIO).ok();
    let window = match (host.memory_32, pci_window) {
        (Some((cpu, pci, size)), Some((cap_base, cap_size))) if cpu == pci => {
            let start = cpu.max(cap_base);
            let end = (cpu + size).min(cap_base + cap_size);
            (start < end).then_some(MemoryWindow { start, end })
        }
        _ => None,
    };
    match window {
        Some(window) => ecam.assign_bars(&mut functions, window),
        None => println!("iommu-server: no identity-mapped 32-bit PCI window inside the pci-mmio capability: BARs stay unassigned"),
    }
    discovery::print_functions(&functions);
    let msis = msi::ItsMsis::new(translater, host.msi_map.clone(), disputed_device_ids);
    Ok(Platform { backend, devices: DeviceRegistry { functions, ecam: Some(ecam), pci_window, watches: Vec::new(), address_spaces: Vec::new(), handovers: Default::default(), msis }, iommu_described: !tree.smmus.is_empty() })
}

/// The requester IDs whose MSI DeviceID the device tree's `msi-map` and the IORT's ITS group
/// mappings disagree on, each reported as a firmware warning. The server routes MSIs by
/// `msi-map`; for these the safe choice is to route none (`msi_alloc` refuses them): a wrong
/// DeviceID would give the driver events another device can raise, or none of its own.
fn disputed_msi_device_ids(msi_map: &[devicetree::MsiMapEntry], functions: &[PciFunction], iort: &iort::IortDescription) -> Vec<u32> {
    let mut disputed = Vec::new();
    for function in functions {
        let rid = function.requester_id();
        let from_tree = msi_map.iter().find_map(|entry| entry.device_of(u32::from(rid)));
        let from_iort = iort.its_device_id(rid);
        if from_tree != from_iort {
            println!("iommu-server: firmware warning: rid {rid:#06x}: msi-map gives DeviceID {from_tree:x?}, the IORT's ITS mappings {from_iort:x?}: it gets no MSIs");
            disputed.push(u32::from(rid));
        }
    }
    if disputed.is_empty() {
        println!("iommu-server: IORT ITS mappings and msi-map agree on the DeviceIDs of {} functions", functions.len());
    }
    disputed
}

/// Prints what the IORT says next to what the device tree says (SMMUs with their interrupts,
/// and each function's SMMU and StreamID) and whether they agree. No IORT describes no SMMU.
fn cross_check(tree: &devicetree::DeviceTree, functions: &[PciFunction], iort: Option<&iort::IortDescription>) -> bool {
    let mut agree = true;
    let dt_smmus: Vec<iort::IortSmmu> = tree
        .smmus
        .iter()
        .map(|n| iort::IortSmmu { base: n.base, event_intid: n.eventq_intid.unwrap_or(0), gerror_intid: n.gerror_intid.unwrap_or(0) })
        .collect();
    let iort_smmus = iort.map(|d| d.smmus.clone()).unwrap_or_default();
    println!("iommu-server: SMMUs: device tree {dt_smmus:x?}, IORT {iort_smmus:x?}{}", if iort.is_none() { " (no IORT)" } else { "" });
    agree &= dt_smmus.len() == iort_smmus.len() && dt_smmus.iter().all(|s| iort_smmus.contains(s));
    let host = tree.pci.as_ref();
    for function in functions {
        let rid = function.requester_id();
        let from_tree = host.and_then(|h| {
            h.iommu_map.iter().find_map(|e| {
                let sid = e.stream_of(u32::from(rid))?;
                let smmu = tree.smmus.iter().find(|n| n.phandle == Some(e.iommu))?;
                Some((smmu.base, sid))
            })
        });
        let from_iort = iort.and_then(|d| d.stream_of(rid));
        if from_tree != from_iort {
            println!("iommu-server: rid {rid:#06x}: device tree says (SMMU, StreamID) {from_tree:x?}, IORT says {from_iort:x?}");
            agree = false;
        }
    }
    println!(
        "iommu-server: IORT (through fw_cfg) and device tree {} on {} SMMUs and the StreamIDs of {} functions",
        if agree { "agree" } else { "DISAGREE" },
        dt_smmus.len(),
        functions.len()
    );
    agree
}
