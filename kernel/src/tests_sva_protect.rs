//! A permission downgrade of a process address space shared with a device (SVA), on the
//! emulated IOMMUs (VT-d with first-stage translation, SMMUv3; edu scenario
//! `SVA_PROTECTED_PAGE`). The device writes a page of the bound process, so the IOMMU may cache
//! write permission for it; the process then makes the page read-only (`mem_protect`'s kernel
//! half), which is done only once the server invalidated and acknowledged. The device can
//! still read the page; its write faults into the bind's queue and leaves the page unchanged.

use crate::ktest::{Test, TestResult};
use crate::process::{ExitReason, Kernel};
use crate::tests_iommu::iommu_tests::{direct, err, exit_of, page_word, run_until, with_kernel};
use crate::tests_sva::{frame_bytes, sva_rig, translate, SvaRig, SOURCE_BYTE};
use crate::{arch, ensure};
use edu_contract::{report, scenario, sva, sva_protect};
use kernel_abi::Error;

pub const TESTS: &[Test] = &[Test { name: "sva::downgraded_page_read_not_written", run: downgraded_page }];

fn downgraded_page() -> TestResult {
    with_kernel(|kernel| {
        let Some(SvaRig { server, driver_pid, device, report_page, bound, objects }) = sva_rig(kernel, scenario::SVA_PROTECTED_PAGE)? else { return Ok(()) };
        kernel.start_process(driver_pid).map_err(err("start driver"))?;
        let phase = |k: &Kernel, want: u64| page_word(&report_page, report::PHASE) == want || k.has_exited(driver_pid);
        run_until(kernel, "the device's write to the page", |k| phase(k, sva_protect::WRITTEN))?;
        ensure!(!kernel.has_exited(driver_pid), "driver ended early: {:?}", kernel.take_exit(driver_pid));
        let protected = translate(kernel, bound, sva::DESTINATION_VA)?;
        ensure!(frame_bytes(protected).iter().all(|&b| b == SOURCE_BYTE), "the device's write did not reach the page");

        // The downgrade is done only once the server acknowledged it.
        let read_only = arch::MapFlags { writable: false, executable: false, device: false };
        let downgrade = kernel.protect(bound, sva::DESTINATION_VA, 1, read_only).map_err(err("mem_protect"))?.ok_or("a watched downgrade yielded nothing to wait for")?;
        ensure!(downgrade.outcome().is_none(), "the downgrade was done before the server saw it");
        let writable = kernel.processes.get(bound).and_then(|p| p.space.translate(sva::DESTINATION_VA)).map(|(_, flags)| flags.writable);
        ensure!(writable == Some(false), "the CPU's mapping kept write permission: {writable:?}");
        run_until(kernel, "the server to acknowledge the downgrade", |k| downgrade.outcome().is_some() || k.has_exited(server.pid))?;
        ensure!(downgrade.outcome() == Some(Ok(())), "the downgrade ended with {:?}", downgrade.outcome());
        let regrant = kernel.protect(bound, sva::DESTINATION_VA, 1, arch::MapFlags { writable: true, ..read_only });
        ensure!(matches!(regrant, Err(Error::MissingRights)), "mem_protect gave write permission back");
        // SAFETY: the destination's frame, which the bound process's memory object keeps; the
        // device may read it, and must not write it.
        unsafe { core::ptr::write_bytes(direct::<u8>(protected), sva_protect::PROTECTED_BYTE, 4096) };
        // SAFETY: word COMMAND of the report page, which the driver polls.
        unsafe { core::ptr::write_volatile(direct::<u64>(report_page.frames[0]).add(report::COMMAND), sva_protect::DOWNGRADED) };
        run_until(kernel, "the driver", |k| k.has_exited(driver_pid))?;
        let exit = exit_of(kernel, driver_pid);
        ensure!(exit == Some(ExitReason::Exited(0)), "driver ended with {exit:?}");
        ensure!(page_word(&report_page, report::PHASE) == sva_protect::FAULTED, "the driver did not see the write fault");
        ensure!(frame_bytes(objects[0].frames[0]).iter().all(|&b| b == sva_protect::PROTECTED_BYTE), "the device's read of the read-only page did not arrive");
        ensure!(frame_bytes(protected).iter().all(|&b| b == sva_protect::PROTECTED_BYTE), "the device wrote the page after the downgrade");

        kernel.kill(bound, ExitReason::Killed);
        run_until(kernel, "the server to release the ended process's address space", |k| k.exited_spaces.is_empty() || k.has_exited(server.pid))?;
        ensure!(!kernel.has_exited(server.pid), "server died: {:?}", kernel.take_exit(server.pid));
        crate::println!("sva: the edu device {:#x} read a page its bound process made read-only, and its write there faulted", device.rid);
        Ok(())
    })
}
