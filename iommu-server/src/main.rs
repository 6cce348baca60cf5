//! The user-level IOMMU server.
//!
//! Start-up: discover the machine from firmware (x86: ACPI DMAR and MCFG; arm: the device
//! tree) through the firmware capabilities, enumerate PCI over ECAM (on arm also giving BARs
//! their addresses), bring every IOMMU up with all DMA blocked, route the units' fault
//! interrupts to an event thread, watch the client processes, and release what the kernel
//! quarantined for an ended server (its tables are unreachable once every unit walks this
//! server's, docs/architecture.md "Threat model"). Then serve the iommufd-like
//! protocol (`iommu-abi`, carried as `iommu_abi::kernel_ipc` describes) with the object model
//! of `iommu-core` on the VT-d backend (x86) or the SMMUv3 backend (arm) of `iommu-backends`.
//! Architecture:
//! docs/iommu-server.md.
//!
//! The start argument's bits (benchmark, stage-2 domains, unisolated MSIs, restart) are
//! `iommu_server_contract::start`; each client's limits come from the client limits page
//! (`iommu_server_contract::limits`).
#![no_std]
#![no_main]

extern crate alloc;

#[cfg(target_arch = "aarch64")]
mod arm;
mod bench;
mod discovery;
mod heap;
mod hw;
mod kernel_iface;
mod msi;
mod pasid;
mod reset;
mod revocation;
mod state;
mod status;
mod table_override;
#[cfg(target_arch = "x86_64")]
mod x86;

/// The slots and address space the root task (or a kernel test) and the server agree on.
use iommu_server_contract::{layout, limits::Limits, slots, start};

use userlib::{println, syscall};

userlib::entry!(main);

fn main(arg: u64) -> u64 {
    if let Err(error) = heap::init() {
        println!("iommu-server: no heap: {error:?}");
        return 1;
    }
    let status = state::map_status_page();
    #[cfg(target_arch = "x86_64")]
    let platform = x86::bring_up;
    #[cfg(target_arch = "aarch64")]
    let platform = |status: &status::StatusPage| {
        use iommu_backends::smmuv3::DomainStage;
        let stage = if arg & start::STAGE2 != 0 { DomainStage::Stage2 } else { DomainStage::Stage1 };
        arm::bring_up(status, stage, arg & start::ALLOW_UNISOLATED_MSI != 0)
    };
    // Clients the description names no limits for get these.
    let limits = state::client_limits(Limits::DEFAULT);
    let mut state = match state::bring_up(status, limits, platform) {
        Ok(state) => state,
        Err(why) => {
            println!("iommu-server: bring-up failed: {why}");
            state::report_failure();
            return 2;
        }
    };
    // Every unit now walks this server's tables only, with every device blocked: what an
    // ended server left pinned can no longer be reached and may go back to the pool.
    match syscall::quarantine_release(slots::DMA_AUTHORITY) {
        Ok((pages, objects)) => {
            if pages != 0 {
                println!("iommu-server: took over from an ended server: {pages} quarantined pages ({objects} objects) released");
            }
            state.status.set(status::QUARANTINE_RELEASED, pages);
        }
        Err(error) => println!("iommu-server: cannot release the quarantine: {error:?}"),
    }
    state.replaces_ended_server = arg & start::RESTARTED != 0;
    if state.replaces_ended_server {
        reset::take_over(&mut state.devices, &state.status);
    }
    state.read_client_limits();
    state::install(state);
    if let Err(error) = state::start_event_thread() {
        println!("iommu-server: no event thread: {error:?}");
        state::report_failure();
        return 3;
    }
    if let Err(error) = revocation::watch() {
        println!("iommu-server: cannot watch for revoked pins: {error:?}");
        state::report_failure();
        return 6;
    }
    if arg & start::BENCH != 0 {
        state::with(|state| bench::in_server(state.server.backend_mut()));
    }
    state::with(|state| state.mark_ready());
    state::serve()
}

