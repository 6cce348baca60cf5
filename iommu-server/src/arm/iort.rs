//! The second description of the machine: the ACPI IORT QEMU builds for `virt`, read through
//! fw_cfg (without UEFI nobody installs the tables in memory; the `fwcfg` crate plays the
//! firmware's table loader on private copies). The server translates with the device tree's
//! description and checks the IORT says the same: the same SMMUs with the same interrupts, and
//! for every enumerated function the same SMMU and StreamID.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use fwcfg::table_override::iort_same_units;
use fwtables::iort::{Iort, NodeBody, NodeType};
use fwtables::sdt::Signature;
use hwio::VolatileRegion;
use userlib::{println, syscall};

use crate::layout;
use crate::slots;
use crate::status::StatusPage;
use crate::table_override;

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

/// Reads QEMU's ACPI tables through the fw_cfg capability, and the IORT override if fw_cfg
/// carries one (`table_override`); `Ok(None)` when neither is there.
pub fn read(status: &StatusPage) -> Result<Option<IortDescription>, &'static str> {
    syscall::mmio_map(slots::FW_CFG, layout::FW_CFG, 0, 1).map_err(|_| "no fw_cfg capability")?;
    // SAFETY: the page (page-aligned, not 0) was just mapped and stays mapped for the server's
    // life.
    let registers = unsafe { VolatileRegion::at_address(layout::FW_CFG as usize, layout::PAGE as usize) };
    let device = fwcfg::FwCfg::probe(FwCfgRegisters(registers)).map_err(|_| "fw_cfg signature missing")?;
    let loaded = device.load_acpi().map_err(|error| {
        println!("iommu-server: fw_cfg ACPI tables: {error:?}");
        "fw_cfg ACPI tables unreadable"
    })?;
    let machine = match loaded.find_table(Signature::IORT).map_err(|_| "ACPI root table unreadable")? {
        Some(bytes) => Some(crate::discovery::parse_reporting(Iort::parse(&bytes), |t| &t.warnings).ok_or("IORT malformed")?),
        None => None,
    };
    let name = fwcfg::table_override::IORT_FILE;
    let offered = table_override::read_file(&device, name).map(|bytes| (name, bytes));
    let chosen = table_override::apply(status, Signature::IORT, offered, machine, Iort::parse, iort_same_units, |t| &t.warnings);
    let Some(iort) = chosen else { return Ok(None) };
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

/// More StreamIDs than this in one RMR ID mapping is taken as a firmware bug (a real RMR
/// names the few streams of one device).
const MAX_RMR_STREAMS: u64 = 256;

impl IortDescription {
    /// The memory ranges (inclusive) IORT RMR nodes require identity-mapped, by (SMMU register
    /// base, StreamID): an RMR's ID mappings name the StreamIDs (output IDs) at the SMMU
    /// their output reference names (DEN0049 RMR node).
    pub fn reserved_ranges(&self) -> BTreeMap<(u64, u32), Vec<(u64, u64)>> {
        let mut reserved: BTreeMap<(u64, u32), Vec<(u64, u64)>> = BTreeMap::new();
        for node in self.iort.nodes.iter().filter(|node| !self.iort.ignored(node.offset as usize)) {
            let NodeBody::Rmr(rmr) = &node.body else { continue };
            let ranges: Vec<(u64, u64)> = rmr.ranges.iter().filter(|r| r.length != 0).map(|r| (r.base, r.base + (r.length - 1))).collect();
            for mapping in &node.id_mappings {
                let Some(NodeBody::SmmuV3(smmu)) = self.iort.node_at(mapping.output_reference).map(|target| &target.body) else {
                    println!("iommu-server: IORT RMR at {:#x}: a mapping that leads to no SMMUv3 is ignored", node.offset);
                    continue;
                };
                if mapping.id_count() > MAX_RMR_STREAMS {
                    println!("iommu-server: IORT RMR at {:#x}: {} StreamIDs in one mapping, ignored", node.offset, mapping.id_count());
                    continue;
                }
                for sid in (0..mapping.id_count()).map(|i| mapping.output_base.wrapping_add(i as u32)) {
                    reserved.entry((smmu.base_address, sid)).or_default().extend_from_slice(&ranges);
                }
            }
        }
        reserved
    }


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
