//! The x86 platform: ACPI (DMAR, MCFG), PCI as the firmware assigned it, VT-d units with
//! interrupt remapping, and the units' fault event interrupt.

use alloc::vec::Vec;
use fwcfg::table_override::dmar_same_units;
use fwtables::dmar::Dmar;
use fwtables::sdt::Signature;
use hwio::VolatileRegion;
use iommu_backends::vtd::{Unit, VtdBackend};
use userlib::{println, syscall};

use crate::discovery::{self, Ecam, FirmwareMemory};
use crate::hw::{DmaPool, Kernel, TscClock};
use crate::kernel_iface::DeviceRegistry;
use crate::layout::{self, PAGE};
use crate::slots;
use crate::state::Platform;
use crate::status::{self, StatusPage};
use crate::table_override;

pub fn bring_up(status: &StatusPage) -> Result<Platform, &'static str> {
    let firmware_memory = FirmwareMemory::from_slots();
    println!("iommu-server: {} firmware regions", firmware_memory.region_count());
    let mut firmware = discovery::read_firmware(&firmware_memory)?;
    // A DMAR handed over through fw_cfg replaces the machine's if it describes the same units.
    let dmar_file = fwcfg::table_override::DMAR_FILE;
    let offered = table_override::read_x86(dmar_file).map(|bytes| (dmar_file, bytes));
    firmware.dmar = table_override::apply(status, Signature::DMAR, offered, firmware.dmar, Dmar::parse, dmar_same_units, |d| &d.warnings);
    let mut ecam = match firmware.mcfg.as_ref() {
        Some(mcfg) => Some(Ecam::new(mcfg)?),
        None => None,
    };
    let mut functions = ecam.as_mut().map(|e| e.enumerate(discovery::BusNumbers::Firmware)).unwrap_or_default();
    // The firmware assigns BARs on x86; one it left without an address cannot be used.
    for function in functions.iter_mut() {
        function.bars.retain(|bar| bar.base != 0);
    }
    status.set(status::PCI_FUNCTIONS, functions.len() as u64);
    let mut dma = DmaPool::new(slots::DMA_AUTHORITY, layout::DMA);
    let mut units: Vec<Unit<Kernel>> = Vec::new();
    match firmware.dmar.as_ref() {
        None => println!("iommu-server: no DMAR table: this machine has no VT-d unit, DMA is not remapped"),
        Some(dmar) => {
            status.set(status::IOMMU_DESCRIBED, 1);
            let (vtd_base, vtd_size) = syscall::mmio_info(slots::IOMMU_REGISTERS).map_err(|_| "no VT-d register capability")?;
            let output_bits = dmar.dma_address_width().min(52) as u8;
            // DRHD index → unit index, for matching devices.
            let mut unit_of_drhd: Vec<Option<usize>> = Vec::new();
            for (index, drhd) in dmar.drhds().enumerate() {
                println!(
                    "iommu-server: DRHD {index}: registers {:#x}, segment {}, {}, {} scopes",
                    drhd.register_base,
                    drhd.segment,
                    if drhd.include_pci_all() { "INCLUDE_PCI_ALL" } else { "explicit scope" },
                    drhd.scopes.len()
                );
                let inside = drhd.register_base >= vtd_base && drhd.register_base + PAGE <= vtd_base + vtd_size;
                if !inside || !units.is_empty() {
                    // One register capability, one mapping window: a second unit would need its own.
                    println!("iommu-server: DRHD {index}: no register capability for it; its devices stay as firmware left them");
                    unit_of_drhd.push(None);
                    continue;
                }
                let first_page = (drhd.register_base - vtd_base) / PAGE;
                syscall::mmio_map(slots::IOMMU_REGISTERS, layout::IOMMU_REGISTERS, first_page, 1).map_err(|_| "cannot map VT-d registers")?;
                // SAFETY: the page (page-aligned, not 0) was just mapped and stays mapped for the server's life.
                let regs = unsafe { VolatileRegion::at_address(layout::IOMMU_REGISTERS as usize, PAGE as usize) };
                let unit = Unit::bring_up(regs, TscClock, output_bits, &mut dma).map_err(|e| {
                    println!("iommu-server: DRHD {index}: bring-up failed: {e:?}");
                    "VT-d bring-up failed"
                })?;
                let (cap, ecap) = (unit.hw.capability().0, unit.hw.extended_capability().0);
                let (major, minor) = unit.hw.version();
                println!(
                    "iommu-server: unit {}: VT-d {major}.{minor} CAP {cap:#018x} ECAP {ecap:#018x}, {} translation, caching mode {}, all DMA and interrupts blocked",
                    units.len(),
                    unit.kind.name(),
                    unit.hw.caching_mode()
                );
                if units.is_empty() {
                    status.set(status::UNIT0_CAP, cap);
                    status.set(status::UNIT0_ECAP, ecap);
                    status.set(status::UNIT0_MODE, unit.kind.code());
                }
                unit_of_drhd.push(Some(units.len()));
                units.push(unit);
            }
            if let Some(ecam) = ecam.as_mut() {
                let topology = discovery::EcamTopology { ecam: core::cell::RefCell::new(ecam) };
                for function in functions.iter_mut() {
                    let matched = dmar.drhd_for_requester(function.address, &topology);
                    let drhd_index = matched.and_then(|m| dmar.drhds().position(|d| core::ptr::eq(d, m.drhd)));
                    function.unit = drhd_index.and_then(|i| unit_of_drhd.get(i).copied().flatten());
                    if let Some(unit) = function.unit {
                        let rmrrs = discovery::rmrrs_for(dmar, function.address, &topology);
                        if !rmrrs.is_empty() {
                            println!("iommu-server: pci {} (rid {:#06x}): RMRR {rmrrs:x?} identity-mapped from takeover on", function.address, function.requester_id());
                            units[unit].rmrrs.insert(function.requester_id(), rmrrs);
                        }
                    }
                }
            }
        }
    }
    discovery::print_functions(&functions);
    status.set(status::UNITS, units.len() as u64);

    let mut backend = VtdBackend::new(dma);
    backend.units = units;
    // Before any client exists, devices with RMRRs get their identity maps (in a blocking
    // domain of their own), and keep them in every domain they are attached to.
    let direct_devices: usize = backend.units.iter().map(|unit| unit.rmrrs.len()).sum();
    backend.install_direct_maps().map_err(|error| {
        println!("iommu-server: RMRR identity maps failed: {error:?}");
        "cannot map RMRRs"
    })?;
    status.set(status::DIRECT_DEVICES, direct_devices as u64);
    if !backend.units.is_empty() {
        let vector = slots::MSI_VECTOR_BASE + slots::FAULT_MSI_INDEX;
        for (index, unit) in backend.units.iter_mut().enumerate() {
            unit.hw.enable_fault_interrupts(slots::MSI_ADDRESS, vector);
            if unit.route_page_request_event(slots::MSI_ADDRESS, vector) {
                println!("iommu-server: unit {index}: page request events raise the fault interrupt");
            }
        }
        syscall::irq_bind(slots::FAULT_IRQ, slots::EVENTS, slots::FAULT_EVENT_BIT).map_err(|_| "cannot bind the fault IRQ")?;
    }
    let devices = DeviceRegistry { functions, ecam, pci_window: syscall::mmio_info(slots::PCI_MMIO).ok(), watches: Vec::new(), address_spaces: Vec::new(), handovers: Default::default(), msis: crate::msi::Msis::from_slots() };
    Ok(Platform { backend, devices, iommu_described: firmware.dmar.is_some() })
}
