//! The machine as the device tree describes it: the SMMUv3 nodes (`arm,smmu-v3`: registers,
//! wired interrupts), the GICv2m MSI frames (`arm,gic-v2m-frame`), the GICv3 ITSes
//! (`arm,gic-v3-its`) and the PCIe host bridge (`pci-host-ecam-generic`: ECAM, bus range, memory
//! windows, `iommu-map`, which says which SMMU translates which requester IDs and as which
//! StreamIDs, and `msi-map`, which says as which DeviceIDs an MSI controller sees them).
//! Bindings: Linux `Documentation/devicetree/bindings/iommu/arm,smmu-v3.yaml`,
//! `.../pci/host-generic-pci.yaml`, `.../pci/pci-iommu.txt` and `.../pci/pci-msi.txt`.
//!
//! QEMU's `virt` places the blob at the start of RAM; the root task hands the server its pages
//! as a read-only `firmware` capability.

use alloc::vec::Vec;
use fdt::node::FdtNode;
use fdt::Fdt;

use crate::discovery::FirmwareMemory;

/// FDT header magic (big-endian at offset 0) and the offset of `totalsize`.
const FDT_MAGIC: u32 = 0xd00d_feed;
const FDT_TOTALSIZE_OFFSET: u64 = 4;
/// Blobs larger than this are not read (QEMU's are a few KiB to 1 MiB).
const FDT_MAX_SIZE: u32 = 2 << 20;

/// GIC interrupt specifier (3 cells): type SPI (0) / PPI (1), number, flags. INTIDs of SPIs
/// start at 32, of PPIs at 16 (GIC architecture).
const GIC_SPI: u32 = 0;
const GIC_PPI: u32 = 1;
const GIC_SPI_BASE: u32 = 32;
const GIC_PPI_BASE: u32 = 16;

/// PCI `ranges` child address, cell 0 (phys.hi) bits 25:24: the address space.
const PCI_SPACE_SHIFT: u32 = 24;
const PCI_SPACE_MEMORY_32: u32 = 0b10;

/// One `arm,smmu-v3` node.
#[derive(Clone, Debug)]
pub struct SmmuNode {
    pub phandle: Option<u32>,
    pub base: u64,
    pub size: u64,
    /// GIC INTIDs of the wired interrupts, by `interrupt-names`.
    pub eventq_intid: Option<u32>,
    pub gerror_intid: Option<u32>,
    pub priq_intid: Option<u32>,
    /// `dma-coherent`: table walks and queue accesses snoop the CPU caches.
    pub coherent: bool,
}

/// One `iommu-map` entry: requester IDs `rid_base..rid_base + length` of the host bridge are
/// StreamIDs `sid_base..` of the IOMMU with phandle `iommu`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IommuMapEntry {
    pub rid_base: u32,
    pub iommu: u32,
    pub sid_base: u32,
    pub length: u32,
}

impl IommuMapEntry {
    pub fn stream_of(&self, rid: u32) -> Option<u32> {
        let offset = rid.checked_sub(self.rid_base)?;
        (offset < self.length).then(|| self.sid_base + offset)
    }
}

/// One `msi-map` entry: requester IDs `rid_base..rid_base + length` of the host bridge reach
/// the MSI controller with phandle `controller` as DeviceIDs `device_base..`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsiMapEntry {
    pub rid_base: u32,
    pub controller: u32,
    pub device_base: u32,
    pub length: u32,
}

impl MsiMapEntry {
    pub fn device_of(&self, rid: u32) -> Option<u32> {
        let offset = rid.checked_sub(self.rid_base)?;
        (offset < self.length).then(|| self.device_base + offset)
    }
}

/// One `arm,gic-v3-its` node: its registers (GITS_TRANSLATER at `base + 0x10040`).
#[derive(Clone, Copy, Debug)]
pub struct ItsNode {
    pub phandle: Option<u32>,
    pub base: u64,
}

/// The PCIe host bridge.
#[derive(Clone, Debug)]
pub struct PciHost {
    pub ecam_base: u64,
    pub ecam_size: u64,
    pub first_bus: u8,
    pub last_bus: u8,
    /// The 32-bit memory window: (CPU address, PCI address, size).
    pub memory_32: Option<(u64, u64, u64)>,
    pub iommu_map: Vec<IommuMapEntry>,
    pub msi_map: Vec<MsiMapEntry>,
}

pub struct DeviceTree {
    pub smmus: Vec<SmmuNode>,
    pub pci: Option<PciHost>,
    /// Register frames of the GICv2m MSI controllers (`arm,gic-v2m-frame`): the doorbells
    /// devices write their MSIs to.
    pub msi_frames: Vec<u64>,
    pub its: Vec<ItsNode>,
}

/// Big-endian 32-bit cells of a property value.
fn cells(value: &[u8]) -> impl Iterator<Item = u32> + '_ {
    value.chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
}

/// A number of `count` cells (1 or 2) starting at `at`.
fn number(cells: &[u32], at: usize, count: usize) -> Option<u64> {
    match count {
        1 => cells.get(at).map(|&c| u64::from(c)),
        2 => Some(u64::from(*cells.get(at)?) << 32 | u64::from(*cells.get(at + 1)?)),
        _ => None,
    }
}

fn u32_property(node: FdtNode<'_, '_>, name: &str) -> Option<u32> {
    node.property(name).and_then(|p| cells(p.value).next())
}

/// Copies the blob out of the firmware capabilities: the first region whose first page holds
/// the FDT magic at an 8-byte aligned offset (the alignment the format requires).
fn read_blob(memory: &FirmwareMemory) -> Option<Vec<u8>> {
    for (base, size) in memory.regions() {
        let mut page = alloc::vec![0u8; size.min(crate::layout::PAGE) as usize];
        if !memory.read(base, &mut page) {
            continue;
        }
        for offset in (0..page.len().saturating_sub(8)).step_by(8) {
            let magic = u32::from_be_bytes([page[offset], page[offset + 1], page[offset + 2], page[offset + 3]]);
            if magic != FDT_MAGIC {
                continue;
            }
            let at = base + offset as u64;
            let mut total = [0u8; 4];
            if !memory.read(at + FDT_TOTALSIZE_OFFSET, &mut total) {
                continue;
            }
            let total = u32::from_be_bytes(total);
            if total > FDT_MAX_SIZE {
                continue;
            }
            let mut blob = alloc::vec![0u8; total as usize];
            if memory.read(at, &mut blob) {
                return Some(blob);
            }
        }
    }
    None
}

pub fn read(memory: &FirmwareMemory) -> Result<DeviceTree, &'static str> {
    let blob = read_blob(memory).ok_or("no device tree in the firmware capabilities")?;
    let fdt = Fdt::new(&blob).map_err(|_| "device tree header malformed")?;
    let root = fdt.find_node("/").ok_or("device tree has no root node")?;
    let interrupt_cells = root.interrupt_parent().and_then(|gic| gic.interrupt_cells()).unwrap_or(3);
    let smmus = fdt
        .all_nodes()
        .filter(|n| n.compatible().is_some_and(|c| c.all().any(|c| c == "arm,smmu-v3")))
        .filter_map(|node| smmu_node(node, interrupt_cells))
        .collect();
    let pci = fdt.all_nodes().find(|n| n.compatible().is_some_and(|c| c.all().any(|c| c == "pci-host-ecam-generic"))).and_then(|node| pci_host(node, root));
    let msi_frames = fdt
        .all_nodes()
        .filter(|n| n.compatible().is_some_and(|c| c.all().any(|c| c == "arm,gic-v2m-frame")))
        .filter_map(|node| Some(node.reg()?.next()?.starting_address as u64))
        .collect();
    let its = fdt
        .all_nodes()
        .filter(|n| n.compatible().is_some_and(|c| c.all().any(|c| c == "arm,gic-v3-its")))
        .filter_map(|node| Some(ItsNode { phandle: u32_property(node, "phandle"), base: node.reg()?.next()?.starting_address as u64 }))
        .collect();
    Ok(DeviceTree { smmus, pci, msi_frames, its })
}

fn smmu_node(node: FdtNode<'_, '_>, interrupt_cells: usize) -> Option<SmmuNode> {
    let region = node.reg()?.next()?;
    let names: Vec<&str> = node.property("interrupt-names").map(|p| p.value.split(|&b| b == 0).filter(|s| !s.is_empty()).filter_map(|s| core::str::from_utf8(s).ok()).collect()).unwrap_or_default();
    let specifiers: Vec<u32> = node.property("interrupts").map(|p| cells(p.value).collect()).unwrap_or_default();
    let intid = |wanted: &str| -> Option<u32> {
        let index = names.iter().position(|&n| n == wanted)?;
        let specifier = specifiers.get(index * interrupt_cells..(index + 1) * interrupt_cells)?;
        match (interrupt_cells, specifier) {
            (3, [GIC_SPI, number, _]) => Some(GIC_SPI_BASE + number),
            (3, [GIC_PPI, number, _]) => Some(GIC_PPI_BASE + number),
            _ => None,
        }
    };
    Some(SmmuNode {
        phandle: u32_property(node, "phandle"),
        base: region.starting_address as u64,
        size: region.size? as u64,
        eventq_intid: intid("eventq"),
        gerror_intid: intid("gerror"),
        priq_intid: intid("priq"),
        coherent: node.property("dma-coherent").is_some(),
    })
}

fn pci_host(node: FdtNode<'_, '_>, root: FdtNode<'_, '_>) -> Option<PciHost> {
    let ecam = node.reg()?.next()?;
    let bus_range: Vec<u32> = node.property("bus-range").map(|p| cells(p.value).collect()).unwrap_or_else(|| alloc::vec![0, 255]);
    let (first_bus, last_bus) = (*bus_range.first()? as u8, (*bus_range.get(1)?).min(255) as u8);
    // ranges: (child address: 3 cells, parent address: the root's #address-cells, size: the
    // bridge's #size-cells).
    let parent_cells = root.cell_sizes().address_cells;
    let size_cells = node.cell_sizes().size_cells;
    let entry = 3 + parent_cells + size_cells;
    let ranges: Vec<u32> = node.property("ranges").map(|p| cells(p.value).collect()).unwrap_or_default();
    let memory_32 = ranges.chunks_exact(entry).find_map(|r| {
        if (r[0] >> PCI_SPACE_SHIFT) & 0b11 != PCI_SPACE_MEMORY_32 {
            return None;
        }
        let pci = number(r, 1, 2)?;
        let cpu = number(r, 3, parent_cells)?;
        let size = number(r, 3 + parent_cells, size_cells)?;
        Some((cpu, pci, size))
    });
    // iommu-map: (rid-base, iommu phandle, iommu specifier: #iommu-cells = 1 for SMMUv3, length).
    let map: Vec<u32> = node.property("iommu-map").map(|p| cells(p.value).collect()).unwrap_or_default();
    let iommu_map = map.chunks_exact(4).map(|e| IommuMapEntry { rid_base: e[0], iommu: e[1], sid_base: e[2], length: e[3] }).collect();
    // msi-map: (rid-base, controller phandle, msi-base: #msi-cells = 1 for an ITS, length).
    let map: Vec<u32> = node.property("msi-map").map(|p| cells(p.value).collect()).unwrap_or_default();
    let msi_map = map.chunks_exact(4).map(|e| MsiMapEntry { rid_base: e[0], controller: e[1], device_base: e[2], length: e[3] }).collect();
    Some(PciHost { ecam_base: ecam.starting_address as u64, ecam_size: ecam.size? as u64, first_bus, last_bus, memory_32, iommu_map, msi_map })
}
