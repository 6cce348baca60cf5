//! The second description of the machine: the ACPI IORT QEMU builds for `virt`, read through
//! fw_cfg (without UEFI nobody installs the tables in memory; the `fwcfg` crate plays the
//! firmware's table loader on private copies). The server translates with the device tree's
//! description and checks the IORT says the same: the same SMMUs with the same interrupts, and
//! for every enumerated function the same SMMU and StreamID.

use alloc::vec::Vec;
use fwtables::iort::{Iort, NodeBody, NodeType};
use fwtables::sdt::Signature;
use hwio::VolatileRegion;
use userlib::{println, syscall};

use crate::layout;
use crate::slots;

/// GSIVs in the IORT are GIC INTIDs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IortSmmu {
    pub base: u64,
    pub event_intid: u32,
    pub gerror_intid: u32,
}

pub struct IortDescription {
    iort: Iort,
    pub smmus: Vec<IortSmmu>,
}

/// The fw_cfg registers: the page at `layout::FW_CFG`, once `read` has mapped it.
struct FwCfgRegisters(VolatileRegion);

impl fwcfg::Mmio for FwCfgRegisters {
    fn read64(&self, offset: usize) -> u64 {
        // One 8-byte load, as the device requires.
        self.0.at::<u64>(offset).read()
    }
    fn write16(&self, offset: usize, value: u16) {
        // One 2-byte store (QEMU ignores the selector written wider).
        self.0.at::<u16>(offset).write(value)
    }
}

/// Reads QEMU's ACPI tables through the fw_cfg capability; `Ok(None)` when they have no IORT.
pub fn read() -> Result<Option<IortDescription>, &'static str> {
    syscall::mmio_map(slots::FW_CFG, layout::FW_CFG, 0, 1).map_err(|_| "no fw_cfg capability")?;
    // SAFETY: the page (page-aligned, not 0) was just mapped and stays mapped for the server's
    // life.
    let registers = unsafe { VolatileRegion::at_address(layout::FW_CFG as usize, layout::PAGE as usize) };
    let device = fwcfg::FwCfg::probe(FwCfgRegisters(registers)).map_err(|_| "fw_cfg signature missing")?;
    let loaded = device.load_acpi().map_err(|error| {
        println!("iommu-server: fw_cfg ACPI tables: {error:?}");
        "fw_cfg ACPI tables unreadable"
    })?;
    let Some(bytes) = loaded.find_table(Signature::IORT).map_err(|_| "ACPI root table unreadable")? else {
        return Ok(None);
    };
    let iort = crate::discovery::parse_reporting(Iort::parse(&bytes), |t| &t.warnings).ok_or("IORT malformed")?;
    let smmus = iort
        .nodes
        .iter()
        .filter(|node| !iort.ignored(node.offset as usize))
        .filter_map(|node| match &node.body {
            NodeBody::SmmuV3(smmu) => Some(IortSmmu { base: smmu.base_address, event_intid: smmu.event_gsiv, gerror_intid: smmu.gerr_gsiv }),
            _ => None,
        })
        .collect();
    Ok(Some(IortDescription { iort, smmus }))
}

impl IortDescription {
    /// The SMMU (register base) and StreamID requester `rid` of PCI segment 0 arrives at.
    pub fn stream_of(&self, rid: u16) -> Option<(u64, u32)> {
        let path = self.iort.map_requester_id(0, rid).ok()?;
        let (node, sid) = path.arrival_at(&self.iort, NodeType::SmmuV3)?;
        if self.iort.ignored(node as usize) {
            return None;
        }
        match &self.iort.node_at(node)?.body {
            NodeBody::SmmuV3(smmu) => Some((smmu.base_address, sid)),
            _ => None,
        }
    }

    /// The DeviceID requester `rid` of PCI segment 0 raises MSIs with at an ITS.
    pub fn its_device_id(&self, rid: u16) -> Option<u32> {
        self.iort.its_device_id(0, rid).map(|(_, device_id)| device_id)
    }
}
