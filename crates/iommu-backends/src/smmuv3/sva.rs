//! Shared virtual addressing on SMMUv3: a context descriptor whose TTB0 is a process's own
//! AArch64 table (the CPU's TTBR0_EL1 table), under an ASID of the server's own.
//!
//! Untagged DMA: the CD is the stream's SubstreamID 0, so the device's DMA without a PASID
//! walks the process's tables. On QEMU 10.0.2 (no substreams) that CD is the stream's only
//! one. On a unit with substreams (IDR1.SSIDSIZE > 0) every stream has a CD table from
//! takeover (see `substreams`), and a binding at a PASID is that SubstreamID's CD, written
//! with the table's break-before-make sequence (CD.V cleared, CFGI_CD, CD written, CFGI_CD,
//! each followed by CMD_SYNC); other substreams of the stream are untouched.
//!
//! The CD covers the process's half only: T0SZ = 16 as the kernel's TCR_EL1, EPD1 = 1 and no
//! TTB1, so a kernel address (TTBR1_EL1's half) is a translation fault. MAIR is the CPU's, so
//! the tables' AttrIndx means the same to the SMMU; AFFD stays 0 (the kernel sets AF in every
//! descriptor). When the process's tables shrink, `invalidate_address_space` sends
//! TLBI_NH_VA for the range under the binding's ASID (not leaf-only: table pages may have been
//! freed) and waits for CMD_SYNC. An unbind first makes the CD unreachable (the stream back
//! to its blocking domain, or the substream's CD invalid, with CFGI_CD), then invalidates and
//! frees the ASID: a walk after the TLB invalidation cannot refill it from the process.

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

/// Where a binding lives: the stream's requester ID on its unit, and the SubstreamID (0 for
/// DMA without a PASID).
pub(super) type BindingKey = (UnitId, RequesterId, u32);

impl<E: Environment> SmmuBackend<E> {
    /// Points substream `pasid` (none: the untagged DMA) of the stream of `rid` at a CD
    /// walking `space.root` under a fresh ASID. On error the stream keeps its configuration.
    /// A PASID needs a unit with substreams (refused with `NotSupported` on QEMU's SMMU).
    pub(super) fn bind_address_space(&mut self, unit: UnitId, rid: RequesterId, pasid: Option<u32>, space: AddressSpace) -> Result<(), Error> {
        let (index, sid) = self.stream(unit, rid).ok_or(Error::IncompatibleUnit)?;
        let bits = self.units[index].substream_bits();
        let ssid = pasid.unwrap_or(0);
        if pasid.is_some() && (bits == 0 || ssid >> bits != 0) {
            return Err(Error::NotSupported);
        }
        if self.sva.contains_key(&(unit, rid, ssid)) {
            return Err(Error::AlreadyAttached);
        }
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
        // A unit with substreams gave every stream its CD table at takeover: the binding is one
        // of its CDs. Without, the stream's STE points at the binding's single CD.
        let installed = if bits != 0 { hw.set_substream(&mut env, sid, ssid, Some(&config)) } else { hw.attach_stage1(&mut env, sid, &config) };
        if let Err(error) = installed {
            let _ = hw.free_asid(&mut env, asid);
            return Err(hardware::<E>(error));
        }
        self.sva.insert((unit, rid, ssid), Binding { asid });
        Ok(())
    }

    /// Removes the binding at substream `pasid` (none: the untagged DMA) of `rid`, if there is
    /// one: the untagged DMA goes back to the blocking domain, a PASID's CD is made invalid
    /// (CFGI_CD, CMD_SYNC); then the ASID is invalidated and freed. Returns whether there was
    /// a binding.
    pub(super) fn unbind_address_space(&mut self, unit: UnitId, rid: RequesterId, pasid: Option<u32>) -> bool {
        let Some(binding) = self.sva.remove(&(unit, rid, pasid.unwrap_or(0))) else { return false };
        let Some((index, sid)) = self.stream(unit, rid) else { return true };
        match pasid {
            Some(pasid) => self.block_pasid(unit, rid, pasid),
            None => {
                let blocking = self.units[index].blocking;
                if let Err(error) = self.install(index, sid, blocking) {
                    Self::fail_closed("blocking an unbound stream", error);
                }
            }
        }
        self.release_asid(index, binding);
        true
    }

    /// The untagged DMA of `rid` was switched from a binding to a domain (`replace`): the
    /// binding's ASID, no longer reachable, is invalidated and freed.
    pub(super) fn forget_replaced_binding(&mut self, unit: UnitId, rid: RequesterId, pasid: Option<u32>) {
        if let Some(binding) = self.sva.remove(&(unit, rid, pasid.unwrap_or(0))) {
            self.release_asid(unit.0 as usize, binding);
        }
    }

    fn release_asid(&mut self, index: usize, binding: Binding) {
        let mut env = Env { dma: &mut self.dma, clock: &self.clock };
        if let Err(error) = self.units[index].hw.free_asid(&mut env, binding.asid) {
            Self::fail_closed("invalidation of an unbound address space", error);
        }
    }

    /// TLBI_NH_VA of `[iova, iova + length)` under the ASID of the binding at `pasid` (none:
    /// untagged), then CMD_SYNC, waited for. An SMMU that does not complete it stops the
    /// server before the kernel is told the frames are free.
    pub(super) fn invalidate_binding(&mut self, unit: UnitId, rid: RequesterId, pasid: Option<u32>, iova: u64, length: u64) {
        let Some(binding) = self.sva.get(&(unit, rid, pasid.unwrap_or(0))) else { return };
        let index = unit.0 as usize;
        let mut env = Env { dma: &mut self.dma, clock: &self.clock };
        let scope = TlbScope::Stage1 { asid: binding.asid };
        if let Err(error) = self.units[index].hw.tlbi_range(&mut env, scope, iova, length, Granule::Size4K, false) {
            Self::fail_closed("TLB invalidation of a bound address space", error);
        }
    }
}
