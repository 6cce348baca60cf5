//! What the host tests of the backends share (feature `testing`): the backends' environment on
//! each driver's software model, and a fault read that collects its records.

extern crate std;

use alloc::vec::Vec;
use iommu_abi::{FaultRecord, Handle};
use iommu_core::{ClientId, IommuBackend, MemorySource, ObjectModel};

use crate::Environment;

/// A VT-d backend on the `vtd` model: the unit's registers are the model itself (kept by a
/// test for its own DMA), the DMA allocator hands out the model's memory.
pub struct VtdModelEnv;

impl Environment for VtdModelEnv {
    type Registers = &'static vtd::model::VtdModel;
    type Dma = vtd::model::FakeDma;
    type Clock = vtd::model::StepClock;

    fn log(line: core::fmt::Arguments<'_>) {
        std::println!("{line}");
    }
}

/// An SMMUv3 backend on the `smmuv3` model, in the same way.
pub struct SmmuModelEnv;

impl Environment for SmmuModelEnv {
    type Registers = &'static smmuv3::model::SmmuModel;
    type Dma = smmuv3::model::ModelDma;
    type Clock = smmuv3::model::StepClock;
    /// The model's memory has a device view that only `flush_for_device` updates.
    const CACHE_MAINTENANCE: bool = true;

    fn log(line: core::fmt::Arguments<'_>) {
        std::println!("{line}");
    }
}

/// `ObjectModel::fault_read` with its records collected (up to `max`, oldest first).
pub fn read_faults<B: IommuBackend, M: MemorySource>(server: &mut ObjectModel<B, M>, client: ClientId, fault: Handle, max: usize) -> Vec<FaultRecord> {
    let mut records = Vec::new();
    server.fault_read(client, fault, max, |record| records.push(record)).expect("fault_read");
    records
}
