//! Shared virtual addressing on SMMUv3: a context descriptor whose TTB0 is a process's own
//! AArch64 table (the CPU's TTBR0_EL1 table), under an ASID of the server's own.
//!
//! The CD is the stream's SubstreamID 0 (QEMU 10.0.2 has no substreams, and this driver gives
//! every stream one CD), so the device's untagged DMA walks the process's tables. The CD
//! covers the process's half only: T0SZ = 16 as the kernel's TCR_EL1, EPD1 = 1 and no TTB1,
//! so a kernel address (TTBR1_EL1's half) is a translation fault. MAIR is the CPU's, so the
//! tables' AttrIndx means the same to the SMMU; AFFD stays 0 (the kernel sets AF in every
//! descriptor). When the process's tables shrink, `invalidate_address_space` sends
//! TLBI_NH_VA for the range under the binding's ASID (not leaf-only: table pages may have been
//! freed) and waits for CMD_SYNC.

use iommu_abi::Error;
use iommu_core::{AddressSpace, RequesterId, UnitId};
use smmuv3::{Env, Granule, Stage1Config, TlbScope};

use super::{hardware, SmmuBackend};
use crate::Environment;

/// The process's input size: 48-bit virtual addresses (TCR_EL1.T0SZ = 16).
const PROCESS_T0SZ: u8 = 16;

/// What the backend keeps of one binding: the ASID that tags its TLB entries.
pub(super) struct Binding {
    asid: u16,
}

/// Where a binding lives: the stream's requester ID on its unit.
pub(super) type BindingKey = (UnitId, RequesterId);

impl<E: Environment> SmmuBackend<E> {
    /// Points the stream of `rid` at a CD walking `space.root` under a fresh ASID. On error
    /// the stream keeps its configuration. Substreams (`pasid`) are not offered.
    pub(super) fn bind_address_space(&mut self, unit: UnitId, rid: RequesterId, pasid: Option<u32>, space: AddressSpace) -> Result<(), Error> {
        if pasid.is_some() {
            return Err(Error::NotSupported);
        }
        if self.sva.contains_key(&(unit, rid)) {
            return Err(Error::AlreadyAttached);
        }
        let (index, sid) = self.stream(unit, rid).ok_or(Error::IncompatibleUnit)?;
        // A process's tables cannot hold the identity maps its RMRs need.
        if self.units[index].rmrs.get(&rid.0).is_some_and(|r| !r.is_empty()) {
            return Err(Error::NotSupported);
        }
        let output_bits = u32::from(self.units[index].output_bits);
        let hw = &mut self.units[index].hw;
        if !hw.id_registers().stage1() {
            return Err(Error::NotSupported);
        }
        let asid = hw.alloc_asid().ok_or(Error::NoResources)?;
        let config = Stage1Config {
            mair: space.mair,
            output_bits,
            ..Stage1Config::new(asid, space.root, PROCESS_T0SZ, Granule::Size4K)
        };
        let mut env = Env { dma: &mut self.dma, clock: &self.clock };
        if let Err(error) = hw.attach_stage1(&mut env, sid, &config) {
            let _ = hw.free_asid(&mut env, asid);
            return Err(hardware::<E>(error));
        }
        self.sva.insert((unit, rid), Binding { asid });
        Ok(())
    }

    /// Removes the binding of `rid`, if there is one: the stream goes back to the blocking
    /// domain, then the ASID is invalidated and freed. Returns whether there was a binding.
    pub(super) fn unbind_address_space(&mut self, unit: UnitId, rid: RequesterId) -> bool {
        let Some(binding) = self.sva.remove(&(unit, rid)) else { return false };
        let Some((index, sid)) = self.stream(unit, rid) else { return true };
        let blocking = self.units[index].blocking;
        if let Err(error) = self.install(index, sid, blocking) {
            Self::fail_closed("blocking an unbound stream", error);
        }
        let mut env = Env { dma: &mut self.dma, clock: &self.clock };
        if let Err(error) = self.units[index].hw.free_asid(&mut env, binding.asid) {
            Self::fail_closed("invalidation of an unbound address space", error);
        }
        true
    }

    /// TLBI_NH_VA of `[iova, iova + length)` under the binding's ASID, then CMD_SYNC, waited
    /// for. An SMMU that does not complete it stops the server before the kernel is told the
    /// frames are free.
    pub(super) fn invalidate_binding(&mut self, unit: UnitId, rid: RequesterId, iova: u64, length: u64) {
        let Some(binding) = self.sva.get(&(unit, rid)) else { return };
        let index = unit.0 as usize;
        let mut env = Env { dma: &mut self.dma, clock: &self.clock };
        let scope = TlbScope::Stage1 { asid: binding.asid };
        if let Err(error) = self.units[index].hw.tlbi_range(&mut env, scope, iova, length, Granule::Size4K, false) {
            Self::fail_closed("TLB invalidation of a bound address space", error);
        }
    }
}
