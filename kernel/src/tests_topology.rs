//! Tests of PCI topology on the machine `qemu-run.sh --topology bridges` builds: an edu device
//! behind a PCIe root port (00:10.0) and two behind a PCIe-to-PCI bridge (00:11.0). The root
//! task carries out a system description that names devices by location through bridges
//! (`user/root/src/system.rs`); the drivers DMA through their domains with every byte
//! checked, and the root task checks that each driver's fault came with the requester ID its
//! device's DMA carries (behind the PCI bridge: the bridge's alias, secondary bus and devfn
//! 0, which the server must have attached for the DMA to succeed at all). On a machine
//! without those bridges on bus 0 the tests skip.

use alloc::format;
use alloc::string::String;
use kernel_abi::boot_directory::description;

use crate::ensure;
use crate::ktest::{Test, TestResult};
use crate::process::ExitReason;
use crate::tests_iommu::iommu_tests::platform::ConfigSpace;
use crate::tests_iommu::iommu_tests::{err, run_until, with_kernel};

/// Where `qemu-run.sh --topology bridges` puts the bridges on bus 0 (devfn), and their IDs
/// (vendor 1b36, QEMU's generic devices: 000c PCIe root port, 000e PCIe-to-PCI bridge).
const ROOT_PORT: (u64, u32) = (0x10 << 3, 0x000c_1b36);
const PCI_BRIDGE: (u64, u32) = (0x11 << 3, 0x000e_1b36);

pub const TESTS: &[Test] = &[
    Test { name: "topology::bridged_devices_dma_through_their_domains", run: bridged_devices_dma },
    Test { name: "topology::one_group_two_drivers_refused", run: one_group_two_drivers_refused },
];

/// Whether bus 0 holds the root port and the PCI bridge the descriptions name.
fn has_bridges() -> Result<bool, String> {
    let config = ConfigSpace::open()?;
    // SAFETY: bus 0's configuration space, mapped by `config`; offset 0 is the ID register.
    let id = |devfn| unsafe { core::ptr::read_volatile(config.register(devfn, 0)) };
    Ok(id(ROOT_PORT.0) == ROOT_PORT.1 && id(PCI_BRIDGE.0) == PCI_BRIDGE.1)
}

/// Runs the root task with description `number` to its end; its exit status.
fn root_task_exit(number: u64) -> Result<u64, String> {
    with_kernel(|kernel| {
        let root = crate::root::create_with_description(kernel, number)?;
        kernel.start_process(root).map_err(err("start the root task"))?;
        run_until(kernel, "the root task", |k| k.has_exited(root))?;
        match kernel.take_exit(root) {
            Some(ExitReason::Exited(status)) => Ok(status),
            other => Err(format!("root task ended with {other:?}")),
        }
    })
}

fn skip_without_bridges() {
    crate::ktest::skip(String::from("this machine has no edu devices behind bridges (qemu-run.sh --topology bridges builds one)"));
}

/// The edu behind the root port and the second one behind the PCI bridge, each given to its
/// own driver by location: both run their DMA scenario to the end (on x86 the copy back ends
/// with the device's MSI, which the server must program into that function's own capability,
/// not the first one's with the same alias), and each fault carries the requester ID the root
/// task computed for the device (its own, or the bridge's alias).
fn bridged_devices_dma() -> TestResult {
    if !has_bridges()? {
        skip_without_bridges();
        return Ok(());
    }
    let status = root_task_exit(description::BRIDGES)?;
    ensure!(status == 0, "root task exited with {status} (its messages above say why)");
    Ok(())
}

/// The two functions behind the PCI bridge given to two drivers: the root task refuses the
/// description before starting any driver.
fn one_group_two_drivers_refused() -> TestResult {
    if !has_bridges()? {
        skip_without_bridges();
        return Ok(());
    }
    let status = root_task_exit(description::ONE_GROUP_TWO_DRIVERS)?;
    ensure!(status == description::REFUSED, "root task exited with {status}, not {} (refused)", description::REFUSED);
    Ok(())
}
