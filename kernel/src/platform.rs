//! The devices of the platform, as capabilities the root task (or a test acting as one) hands
//! out: MMIO regions, interrupt lines, firmware tables, and the DMA authority that only the
//! IOMMU server gets.
//!
//! The list is static per machine (q35 / virt, as qemu-run.sh configures them). The IOMMU
//! server still discovers the IOMMUs and devices from the firmware tables; this list only
//! bounds which physical ranges user code can ever be given.

use crate::object::{MmioRegion, Object};
use crate::syscall::irq_object;
use alloc::rc::Rc;
use alloc::vec::Vec;
use boot::BootInfo;
use kernel_abi::Rights;

/// One boot capability: a name the system description uses, the object, the rights.
pub struct BootCap {
    pub name: &'static str,
    pub object: Object,
    pub rights: Rights,
}

fn mmio(name: &'static str, base: u64, size: u64, rights: Rights) -> BootCap {
    BootCap { name, object: Object::Mmio(Rc::new(MmioRegion { base, size })), rights }
}

fn irq(name: &'static str, line: u32, edge: bool) -> BootCap {
    BootCap { name, object: irq_object(line, edge), rights: Rights::all() }
}

const READ_ONLY: Rights = Rights::READ.union(Rights::GRANT).union(Rights::DERIVE);
const READ_WRITE: Rights = Rights::READ.union(Rights::WRITE).union(Rights::GRANT).union(Rights::DERIVE);

pub fn boot_caps(info: &BootInfo) -> Vec<BootCap> {
    let mut caps = Vec::new();
    for region in info.firmware_regions() {
        caps.push(mmio("firmware", region.start, region.size(), READ_ONLY));
    }
    if let boot::Firmware::DeviceTree { dtb, size } = info.firmware {
        let start = dtb & !0xFFF;
        let end = (dtb + size + 0xFFF) & !0xFFF;
        caps.push(mmio("firmware", start, end - start, READ_ONLY));
    }
    caps.push(BootCap { name: "dma-authority", object: Object::DmaAuthority, rights: Rights::all() });
    arch_caps(&mut caps);
    caps
}

#[cfg(target_arch = "x86_64")]
fn arch_caps(caps: &mut Vec<BootCap>) {
    use crate::arch::{MSI_LINE_BASE, MSI_LINES};
    caps.push(mmio("vtd", 0xFED9_0000, 0x1000, READ_WRITE));
    // PCI configuration mechanism #1 (CONFIG_ADDRESS 0xCF8, CONFIG_DATA 0xCFC..0xCFF).
    caps.push(BootCap { name: "pci-config-ports", object: Object::IoPorts { base: 0xCF8, count: 8 }, rights: READ_WRITE });
    // QEMU's fw_cfg (selector 0x510, data 0x511, DMA address 0x514-0x51b): the IOMMU server
    // reads the firmware-table override there.
    caps.push(BootCap { name: "fw-cfg", object: Object::IoPorts { base: 0x510, count: 12 }, rights: READ_WRITE });
    caps.push(mmio("ecam", 0xB000_0000, 0x1000_0000, READ_WRITE));
    // q35 with < 2.75 GiB RAM: SeaBIOS assigns 32-bit BARs between 0xC0000000 and the I/O APIC.
    caps.push(mmio("pci-mmio", 0xC000_0000, 0x3EC0_0000, READ_WRITE));
    for line in 16..24 {
        caps.push(irq("pci-intx", line, false));
    }
    for line in MSI_LINE_BASE..MSI_LINE_BASE + MSI_LINES {
        caps.push(irq("msi", line, true));
    }
}

/// MSI lines handed out on arm (the GICv2m frame of `virt` serves 64).
#[cfg(target_arch = "aarch64")]
const MSI_CAPS: u32 = 8;

#[cfg(target_arch = "aarch64")]
fn arch_caps(caps: &mut Vec<BootCap>) {
    caps.push(mmio("smmuv3", 0x0905_0000, 0x2_0000, READ_WRITE));
    // fw_cfg carries QEMU's ACPI tables (IORT) on `virt`, reachable without UEFI.
    caps.push(mmio("fw-cfg", 0x0902_0000, 0x1000, READ_WRITE));
    // virt's PCIe: ECAM high (highmem, the default) and low, and the 32-bit MMIO window.
    caps.push(mmio("ecam", 0x40_1000_0000, 0x1000_0000, READ_WRITE));
    caps.push(mmio("ecam-low", 0x3F00_0000, 0x100_0000, READ_WRITE));
    caps.push(mmio("pci-mmio", 0x1000_0000, 0x2EFF_0000, READ_WRITE));
    // PCI INTA..INTD (SPI 3..6) and the SMMU's wired interrupts: eventq, priq, cmdq-sync, gerror.
    for line in 35..39 {
        caps.push(irq("pci-intx", line, false));
    }
    for line in 106..110 {
        caps.push(irq("smmu", line, true));
    }
    // MSIs: the first SPIs of the GICv2m frame (edge-triggered: an MSI is a single write).
    if let Some((first, count)) = crate::arch::msi_spis() {
        for line in first..first + count.min(MSI_CAPS) {
            caps.push(irq("msi", line, true));
        }
    }
}
