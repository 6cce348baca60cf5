//! DMA tagged with a PASID on SMMUv3: on a stage-1 unit with substreams (IDR1.SSIDSIZE > 0;
//! not QEMU 10.0.2) every known stream gets a CD table at takeover, CD 0 serving its traffic
//! without a SubstreamID, and each attached PASID its own CD (linear tables, or two-level when
//! IDR0.CD2L).

use iommu_abi::Error;
use iommu_core::{HwDomainId, RequesterId, Translation, UnitId};
use smmuv3::{CdTableLayout, Env, Granule, SmmuError, Stage1Config};

use super::{hardware, DomainStage, SmmuBackend, SmmuUnit, Table};
use crate::Environment;

/// SubstreamIDs a stream's CD table covers at most: 2^8 (a 16 KiB linear table).
const SUBSTREAM_LOG2_MAX: u32 = 8;

impl<R: hwio::Registers> SmmuUnit<R> {
    /// SubstreamID bits of the unit's CD tables, 0 if its streams have none.
    pub(super) fn substream_bits(&self) -> u32 {
        if self.stage == DomainStage::Stage1 {
            self.hw.id_registers().ssid_bits().min(SUBSTREAM_LOG2_MAX)
        } else {
            0
        }
    }
}

impl<E: Environment> SmmuBackend<E> {
    /// The stage-1 configuration of `domain` (a stage-1 domain).
    fn stage1_config(&self, domain: HwDomainId) -> Option<Stage1Config> {
        let d = self.domains.get(domain)?;
        let Table::Stage1(table) = &d.table else { return None };
        Some(Stage1Config::new(d.tag, table.root_phys(), table.format().t0sz(), Granule::Size4K))
    }

    /// Points substream `ssid` of `sid` at `domain` (0: the stream's traffic without a
    /// SubstreamID), giving the stream its CD table first if it has none.
    pub(super) fn install_substream(&mut self, unit: usize, sid: u32, ssid: u32, domain: HwDomainId) -> Result<(), SmmuError> {
        let config = self.stage1_config(domain).ok_or(SmmuError::InvalidConfig("substreams need a stage-1 domain"))?;
        let bits = self.units[unit].substream_bits();
        let two_level = self.units[unit].hw.id_registers().cd_two_level();
        let hw = &mut self.units[unit].hw;
        let mut env = Env { dma: &mut self.dma, clock: &self.clock };
        if !hw.has_substreams(sid) {
            let layout = if two_level { CdTableLayout::TwoLevel } else { CdTableLayout::Linear };
            // A stream's first CD table is made for its traffic without a SubstreamID (at
            // takeover, for the blocking domain), so CD 0 starts out valid.
            let default = (ssid == 0).then_some(&config);
            hw.attach_substreams(&mut env, sid, bits, layout, default)?;
            if ssid == 0 {
                return Ok(());
            }
        }
        hw.set_substream(&mut env, sid, ssid, Some(&config))
    }

    /// Attaches (or switches) DMA of `rid` tagged with `pasid` to `translation`.
    pub(super) fn replace_pasid(&mut self, unit: UnitId, rid: RequesterId, pasid: u32, translation: Translation) -> Result<(), Error> {
        let Translation::Domain(domain) = translation else { return Err(Error::NotSupported) };
        let d = self.domains.get(domain).ok_or(Error::HardwareFailure)?;
        if d.unit != unit.0 as usize {
            return Err(Error::IncompatibleUnit);
        }
        let (index, sid) = self.stream(unit, rid).ok_or(Error::IncompatibleUnit)?;
        let bits = self.units[index].substream_bits();
        if bits == 0 || pasid >> bits != 0 {
            return Err(Error::NotSupported);
        }
        self.install_substream(index, sid, pasid, domain).map_err(hardware::<E>)
    }

    /// Makes substream `pasid` of `rid` invalid again (its DMA then faults, C_BAD_CD).
    pub(super) fn block_pasid(&mut self, unit: UnitId, rid: RequesterId, pasid: u32) {
        let Some((index, sid)) = self.stream(unit, rid) else { return };
        if !self.units[index].hw.has_substreams(sid) || pasid >> self.units[index].substream_bits() != 0 {
            return;
        }
        let mut env = Env { dma: &mut self.dma, clock: &self.clock };
        if let Err(error) = self.units[index].hw.set_substream(&mut env, sid, pasid, None) {
            panic!("FATAL: blocking substream {pasid} of stream {sid:#x} failed ({error:?}); the device may still reach released memory");
        }
    }
}
