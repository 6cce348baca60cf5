//! Detach at the requester's untagged slot on QEMU (issue 16): on VT-d scalable mode
//! (`vtd-sm`, `vtd-flts`) that is the PASID entry at RID_PASID (and, the device's last
//! attachment gone, its scalable context entry), in legacy mode the context entry, on SMMUv3 the stream's STE, which goes back to the unit's blocking domain.
//!
//! `pasid::detach_stops_dma_attach_restores` (edu scenario DETACH_STOPS_DMA): the driver
//! detaches its device from an HWPT whose IOAS still maps the device's pages; the device's
//! write and read there must each fault, reported by the unit with its "not present" reason
//! for the device, page and direction, and reach no queue: the fault queue was the HWPT's, and
//! a detached device has none, so the server counts the fault as unrouted and logs it (as an
//! operating system logs the faults of a device in a blocking domain). No byte reaches the
//! destination, nothing is read from the source; attached again, the device copies.

pub use pasid_tests::TESTS;

mod pasid_tests {
    use crate::ensure;
    use crate::ktest::{Test, TestResult};
    use crate::object::MemoryObject;
    use crate::process::{ExitReason, Kernel, Pid};
    use crate::tests_iommu::iommu_tests::{
        discovery_agrees, err, exit_of, give_report_page, page_word, page_words, run_until, server_and_driver, skip_without_iommu, with_kernel, ServerUnderTest,
    };
    use edu_contract::{detach, report, scenario};
    use iommu_server_contract::status;

    /// The reason code the unit records for DMA of a requester with nothing attached at its
    /// untagged slot, by the server's `UNIT0_MODE`.
    fn detached_reason(mode: u64) -> Result<u64, alloc::string::String> {
        match mode {
            // VT-d, legacy or scalable mode: fault reason 2h, "the Present field of the
            // context entry is clear" (VT-d spec 7.1.3). In scalable mode the detach clears
            // the PASID entry at RID_PASID and, the device's last attachment gone, the
            // scalable context entry too; QEMU checks the context entry first.
            1..=3 => Ok(0x02),
            // SMMUv3, stage 1 or 2: the STE names the blocking domain, which maps nothing:
            // F_TRANSLATION (event 10h).
            4 | 5 => Ok(0x10),
            _ => Err(alloc::format!("unit 0 runs in unknown mode {mode}")),
        }
    }

    /// Waits for the driver to reach `phase`; the driver ending first fails.
    fn await_phase(kernel: &mut Kernel, report_page: &MemoryObject, driver_pid: Pid, phase: u64, what: &str) -> TestResult {
        run_until(kernel, what, |k| page_word(report_page, report::PHASE) == phase || k.has_exited(driver_pid))?;
        ensure!(!kernel.has_exited(driver_pid), "driver ended before {what}: {:?}", kernel.take_exit(driver_pid));
        Ok(())
    }

    /// Waits for the fault of the device's refused access to reach the server as unrouted and
    /// checks its record: requester, page, direction (1 read, 2 write) and reason.
    fn await_unrouted_fault(kernel: &mut Kernel, server: &ServerUnderTest, before: u64, rid: u16, page: u64, access: u64, reason: u64) -> TestResult {
        run_until(kernel, "the detached device's fault", |_| server.word(status::UNROUTED_FAULTS) > before)?;
        let (got_rid, got_page, got_access, got_reason) =
            (server.word(status::LAST_FAULT_RID), server.word(status::LAST_FAULT_ADDRESS), server.word(status::LAST_FAULT_ACCESS), server.word(status::LAST_FAULT_REASON));
        ensure!(got_rid == u64::from(rid), "the fault came from {got_rid:#x}, not the edu {rid:#x}");
        ensure!(got_page == page, "the fault names page {got_page:#x}, the device accessed {page:#x}");
        ensure!(got_access == access, "the fault's access is {got_access}, expected {access}");
        ensure!(got_reason == reason, "the fault's reason is {got_reason:#x}, expected {reason:#x} (nothing attached)");
        Ok(())
    }

    fn detach_stops_dma() -> TestResult {
        with_kernel(|kernel| {
            let (server, driver_pid, device) = server_and_driver(kernel, 0, scenario::DETACH_STOPS_DMA, &[1])?;
            let report_page = give_report_page(kernel, driver_pid)?;
            if !discovery_agrees(&server)? {
                skip_without_iommu();
                return Ok(());
            }
            let reason = detached_reason(server.word(status::UNIT0_MODE))?;
            let command = |word: u64| page_words(&report_page).write(report::COMMAND, word);
            kernel.start_process(driver_pid).map_err(err("start driver"))?;
            await_phase(kernel, &report_page, driver_pid, detach::DETACHED, "the driver's detach")?;
            ensure!(server.word(status::UNROUTED_FAULTS) == 0, "{} faults reached no queue while the device was attached", server.word(status::UNROUTED_FAULTS));

            let before = server.word(status::UNROUTED_FAULTS);
            command(detach::WRITE);
            await_phase(kernel, &report_page, driver_pid, detach::WRITE_REFUSED, "the detached device's write")?;
            await_unrouted_fault(kernel, &server, before, device.rid, detach::DESTINATION_IOVA, 2, reason)?;

            let before = server.word(status::UNROUTED_FAULTS);
            command(detach::READ);
            await_phase(kernel, &report_page, driver_pid, detach::READ_REFUSED, "the detached device's read")?;
            await_unrouted_fault(kernel, &server, before, device.rid, detach::SOURCE_IOVA, 1, reason)?;

            let (faults, unrouted) = (server.word(status::FAULTS), server.word(status::UNROUTED_FAULTS));
            command(detach::REATTACH);
            run_until(kernel, "the driver", |k| k.has_exited(driver_pid))?;
            let exit = exit_of(kernel, driver_pid);
            ensure!(exit == Some(ExitReason::Exited(0)), "driver ended with {exit:?}");
            ensure!(server.word(status::FAULTS) == faults && server.word(status::UNROUTED_FAULTS) == unrouted, "the DMA after attaching again faulted");
            run_until(kernel, "the server to reap the driver", |_| server.word(status::CLIENTS_REAPED) == 1)?;
            ensure!(server.word(status::PINNED_PAGES) == 0, "{} pages still pinned after the driver ended", server.word(status::PINNED_PAGES));
            ensure!(!kernel.has_exited(server.pid), "server died");
            crate::println!("pasid: detached, the device's write and read faulted as {reason:#x}, unrouted, memory untouched; attached again it copies");
            Ok(())
        })
    }

    pub const TESTS: &[Test] = &[Test { name: "pasid::detach_stops_dma_attach_restores", run: detach_stops_dma }];
}
