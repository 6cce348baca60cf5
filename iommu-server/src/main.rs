//! The user-level IOMMU server.
//!
//! Start-up: discover the machine from firmware (ACPI DMAR and MCFG through the firmware
//! capabilities), enumerate PCI over ECAM, bring every remapping unit up with all DMA blocked,
//! route the units' fault interrupt to an event thread, watch the client processes. Then serve
//! the iommufd-like protocol (`iommu-abi`, carried as `iommu_abi::kernel_ipc` describes) with
//! the object model of `iommu-core` on the VT-d backend. Architecture: docs/iommu-server.md.
//!
//! Start argument bit 0: run the in-server benchmark after bring-up.
#![no_std]
#![no_main]

extern crate alloc;

mod bench;
mod discovery;
mod heap;
mod hw;
mod kernel_iface;
mod layout;
mod slots;
mod state;
mod status;
mod vtd_backend;

use userlib::println;

userlib::entry!(main);

/// Start-argument bit: run the in-server benchmark after bring-up.
const ARG_BENCH: u64 = 1 << 0;

fn main(arg: u64) -> u64 {
    if let Err(error) = heap::init() {
        println!("iommu-server: no heap: {error:?}");
        return 1;
    }
    let status = state::map_status_page();
    let state = match state::bring_up(status) {
        Ok(state) => state,
        Err(why) => {
            println!("iommu-server: bring-up failed: {why}");
            state::report_failure();
            return 2;
        }
    };
    state::install(state);
    if let Err(error) = state::start_event_thread() {
        println!("iommu-server: no event thread: {error:?}");
        state::report_failure();
        return 3;
    }
    if arg & ARG_BENCH != 0 {
        state::with(bench::in_server);
    }
    state::with(|state| state.mark_ready());
    state::serve()
}

