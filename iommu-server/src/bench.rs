//! The in-server benchmark: the backend's cost of map + unmap (with the IOTLB invalidation
//! unmap waits for) and of one whole-domain invalidation, without IPC or the object model.
//! Both backends run the same cases through `iommu_backends::Measured`, so the figures compare. Lines are
//! `bench: server <backend> (<mode>) <what> <N> guest instructions` (meaningful under
//! `-icount shift=0`).

use iommu_abi::Perm;
use iommu_backends::Measured;
use iommu_core::{DomainConfig, HwDomainId, IommuBackend, UnitId};
use kernel_abi::MemFlags;
use userlib::{println, syscall};

use crate::hw::Backend;
use crate::layout::PAGE;
use crate::slots;

const TWO_MIB: u64 = 2 << 20;
/// IOVA of the measured mappings: 1 GiB, inside every aperture and clear of the MSI windows.
const BENCH_IOVA: u64 = 0x4000_0000;

/// Cycles a steady-state figure is the mean of (as the kernel's benchmarks do), so that reading
/// the instruction counter, itself a system call, weighs little.
const ROUNDS: u64 = 16;

/// Maps `length` bytes at `BENCH_IOVA` in `pieces` equal calls and unmaps them the same way,
/// `rounds` times, and prints the mean cost of one such cycle.
#[allow(clippy::too_many_arguments)]
fn measure(backend: &mut Backend, domain: HwDomainId, phys: u64, name: (&str, &str), label: &str, length: u64, pieces: u64, rounds: u64) {
    let piece = length / pieces;
    let start = syscall::instruction_counter();
    for _ in 0..rounds {
        for i in 0..pieces {
            if let Err(error) = backend.map(domain, BENCH_IOVA + i * piece, phys + i * piece, piece, Perm::READ_WRITE) {
                println!("bench: {label}: map failed: {error:?}");
                return;
            }
        }
        for i in 0..pieces {
            backend.unmap(domain, BENCH_IOVA + i * piece, piece);
        }
    }
    let spent = (syscall::instruction_counter() - start) / rounds;
    if rounds > 1 {
        println!("bench: server {} ({}) map+unmap {label} {spent} guest instructions (mean of {rounds})", name.0, name.1);
    } else {
        println!("bench: server {} ({}) map+unmap {label} {spent} guest instructions", name.0, name.1);
    }
}

pub fn in_server(backend: &mut Backend) {
    let Some(name) = backend.describe() else {
        println!("bench: in-server benchmark skipped: no IOMMU unit");
        return;
    };
    // 2 MiB of contiguous memory, 2 MiB aligned (contiguous objects are size-aligned), so the
    // 2 MiB case can use one large leaf.
    if syscall::mem_alloc(TWO_MIB / PAGE, slots::BENCH_MEMORY, MemFlags::CONTIGUOUS).is_err() {
        println!("bench: in-server benchmark skipped: no 2 MiB contiguous memory");
        return;
    }
    let Ok((pin, phys)) = syscall::mem_pin(slots::DMA_AUTHORITY, slots::BENCH_MEMORY, 0) else {
        println!("bench: in-server benchmark skipped: cannot pin");
        let _ = syscall::cap_delete(slots::BENCH_MEMORY);
        return;
    };
    match backend.domain_alloc(UnitId(0), &DomainConfig::Paging { nest_parent: false, dirty_tracking: false }) {
        Ok(domain) => {
            let domain = domain.id;
            // The first round also pays for allocating the page tables (the driver's IPC
            // benchmark does the same); the domain keeps them for reuse, so measure the second.
            measure(backend, domain, phys, name, "4KiB (cold)", PAGE, 1, 1);
            measure(backend, domain, phys, name, "4KiB", PAGE, 1, ROUNDS);
            // The first 2 MiB leaf goes where the 4 KiB cycle left its emptied tables linked:
            // it pays for unlinking them (an invalidation); later ones find the way clear.
            measure(backend, domain, phys, name, "2MiB (after 4KiB)", TWO_MIB, 1, 1);
            measure(backend, domain, phys, name, "2MiB", TWO_MIB, 1, ROUNDS);
            // 1 MiB in one call cannot use a 2 MiB leaf: 256 4 KiB entries, one invalidation.
            measure(backend, domain, phys, name, "256x4KiB", 256 * PAGE, 1, ROUNDS);
            let start = syscall::instruction_counter();
            let invalidated = (0..ROUNDS).all(|_| backend.invalidate_domain(domain));
            let spent = (syscall::instruction_counter() - start) / ROUNDS;
            if invalidated {
                println!("bench: server {} ({}) one IOTLB invalidation with wait {spent} guest instructions (mean of {ROUNDS})", name.0, name.1);
            }
            backend.domain_free(domain);
        }
        Err(error) => println!("bench: in-server benchmark skipped: domain_alloc {error:?}"),
    }
    let _ = syscall::mem_unpin(pin);
    let _ = syscall::cap_delete(slots::BENCH_MEMORY);
}
