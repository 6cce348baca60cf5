//! The in-server benchmark on the SMMUv3 backend: map + unmap (with the TLB invalidation and
//! CMD_SYNC unmap waits for) and one whole-domain invalidation, without IPC or the object
//! model. Same lines and cases as the VT-d benchmark (`bench.rs`), so the figures compare:
//! `bench: <what> <N> guest instructions` (meaningful under `-icount shift=0`).

use hwio::DmaAllocator;
use iommu_abi::Perm;
use iommu_core::{DomainConfig, HwDomainId, IommuBackend, UnitId};
use kernel_abi::mem_flags;
use userlib::{println, syscall};

use super::smmu_backend::SmmuBackend;
use crate::layout::PAGE;
use crate::slots;
use crate::state::State;

const TWO_MIB: u64 = 2 << 20;
/// IOVA of the measured mappings: 1 GiB, inside every aperture and clear of the MSI window.
const BENCH_IOVA: u64 = 0x4000_0000;

/// Maps `length` bytes in `pieces` equal parts, unmaps them again, prints the cost.
fn measure(backend: &mut SmmuBackend, domain: HwDomainId, phys: u64, stage: &str, label: &str, length: u64, pieces: u64) {
    let piece = length / pieces;
    let start = syscall::instruction_counter();
    for i in 0..pieces {
        if let Err(error) = backend.map(domain, BENCH_IOVA + i * piece, phys + i * piece, piece, Perm::READ_WRITE) {
            println!("bench: {label}: map failed: {error:?}");
            return;
        }
    }
    for i in 0..pieces {
        backend.unmap(domain, BENCH_IOVA + i * piece, piece);
    }
    let spent = syscall::instruction_counter() - start;
    println!("bench: server smmuv3 ({stage}) map+unmap {label} {spent} guest instructions");
}

pub fn in_server(state: &mut State) {
    if state.server.backend().units.is_empty() {
        println!("bench: in-server benchmark skipped: no IOMMU unit");
        return;
    }
    let stage = state.server.backend().units[0].stage.name();
    // 2 MiB contiguous and (size-aligned) 2 MiB aligned, so the 2 MiB case is one block entry.
    if syscall::mem_alloc(TWO_MIB / PAGE, slots::BENCH_MEMORY, mem_flags::CONTIGUOUS).is_err() {
        println!("bench: in-server benchmark skipped: no 2 MiB contiguous memory");
        return;
    }
    let Ok((pin, phys)) = syscall::mem_pin(slots::DMA_AUTHORITY, slots::BENCH_MEMORY, 0) else {
        println!("bench: in-server benchmark skipped: cannot pin");
        let _ = syscall::cap_delete(slots::BENCH_MEMORY);
        return;
    };
    let backend = state.server.backend_mut();
    match backend.domain_alloc(UnitId(0), &DomainConfig::Paging { nest_parent: false, dirty_tracking: false }) {
        Ok(domain) => {
            let domain = domain.id;
            measure(backend, domain, phys, stage, "4KiB", PAGE, 1);
            measure(backend, domain, phys, stage, "2MiB", TWO_MIB, 1);
            measure(backend, domain, phys, stage, "256x4KiB", 256 * PAGE, 256);
            let start = syscall::instruction_counter();
            let invalidated = backend.invalidate_all(domain);
            let spent = syscall::instruction_counter() - start;
            match invalidated {
                Ok(()) => println!("bench: server smmuv3 ({stage}) one TLB invalidation with CMD_SYNC wait {spent} guest instructions"),
                Err(error) => println!("bench: TLB invalidation failed: {error:?}"),
            }
            let start = syscall::instruction_counter();
            let table = backend.dma.alloc_zeroed(8192, 4096);
            let spent = syscall::instruction_counter() - start;
            if let Some(table) = table {
                backend.dma.free(table);
                println!("bench: server table allocation (8 KiB, zeroed, flushed) {spent} guest instructions");
            }
            backend.domain_free(domain);
        }
        Err(error) => println!("bench: in-server benchmark skipped: domain_alloc {error:?}"),
    }
    let _ = syscall::mem_unpin(pin);
    let _ = syscall::cap_delete(slots::BENCH_MEMORY);
}
