//! The in-server benchmark: the backend's cost of map + unmap (with the IOTLB invalidation
//! unmap waits for) and of one invalidation, without IPC or the object model. Lines are
//! `bench: <what> <N> guest instructions` (meaningful under `-icount shift=0`).

use hwio::DmaAllocator;
use iommu_abi::Perm;
use iommu_core::{DomainConfig, IommuBackend, UnitId};
use kernel_abi::mem_flags;
use userlib::{println, syscall};

use crate::layout::PAGE;
use crate::slots;
use crate::state::State;

const TWO_MIB: u64 = 2 << 20;

pub fn in_server(state: &mut State) {
    if state.server.backend().units.is_empty() {
        println!("bench: in-server benchmark skipped: no IOMMU unit");
        return;
    }
    let kind = state.server.backend().units[0].kind.name();
    // 2 MiB of contiguous memory, 2 MiB aligned (contiguous objects are size-aligned), so the
    // 2 MiB case can use one large leaf.
    let pages = TWO_MIB / PAGE;
    if syscall::mem_alloc(pages, slots::BENCH_MEMORY, mem_flags::CONTIGUOUS).is_err() {
        println!("bench: in-server benchmark skipped: no 2 MiB contiguous memory");
        return;
    }
    let Ok((pin, phys)) = syscall::mem_pin(slots::DMA_AUTHORITY, slots::BENCH_MEMORY, 0) else {
        println!("bench: in-server benchmark skipped: cannot pin");
        let _ = syscall::cap_delete(slots::BENCH_MEMORY);
        return;
    };
    let backend = state.server.backend_mut();
    let domain = match backend.domain_alloc(UnitId(0), &DomainConfig::Paging { nest_parent: false, dirty_tracking: false }) {
        Ok(domain) => domain.id,
        Err(error) => {
            println!("bench: in-server benchmark skipped: domain_alloc {error:?}");
            let _ = syscall::mem_unpin(pin);
            let _ = syscall::cap_delete(slots::BENCH_MEMORY);
            return;
        }
    };
    let base = 0x4000_0000u64;
    let measure = |label: &str, iova: u64, length: u64, pieces: u64, backend: &mut crate::vtd_backend::VtdBackend| {
        let piece = length / pieces;
        let start = syscall::instruction_counter();
        for i in 0..pieces {
            if let Err(error) = backend.map(domain, iova + i * piece, phys + i * piece, piece, Perm::READ_WRITE) {
                println!("bench: {label}: map failed: {error:?}");
                return;
            }
        }
        for i in 0..pieces {
            backend.unmap(domain, iova + i * piece, piece);
        }
        let spent = syscall::instruction_counter() - start;
        println!("bench: server vtd ({kind}) map+unmap {label} {spent} guest instructions");
    };
    // The first round also pays for allocating the page tables (the driver's IPC benchmark
    // does the same); the domain keeps them for reuse afterwards, so measure the second.
    measure("4KiB (cold)", base, PAGE, 1, backend);
    measure("4KiB", base, PAGE, 1, backend);
    measure("2MiB", base, TWO_MIB, 1, backend);
    // 256 pages in one map call: 1 MiB cannot use a 2 MiB leaf, so these are 256 4 KiB entries.
    measure("256x4KiB", base, 256 * PAGE, 1, backend);
    let start = syscall::instruction_counter();
    let flushed = backend.flush_all(domain);
    let spent = syscall::instruction_counter() - start;
    match flushed {
        Ok(()) => println!("bench: server vtd ({kind}) one IOTLB invalidation with wait {spent} guest instructions"),
        Err(error) => println!("bench: IOTLB invalidation failed: {error:?}"),
    }
    let start = syscall::instruction_counter();
    let table = backend.dma.alloc_zeroed(8192, 4096);
    let spent = syscall::instruction_counter() - start;
    if let Some(table) = table {
        backend.dma.free(table);
        println!("bench: server table allocation (8 KiB, zeroed, flushed) {spent} guest instructions");
    }
    backend.domain_free(domain);
    let _ = syscall::mem_unpin(pin);
    let _ = syscall::cap_delete(slots::BENCH_MEMORY);
}
