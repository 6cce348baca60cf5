//! Nested translation through the IOMMU server on QEMU: on arm, the edu driver's own context
//! descriptor and stage-1 tables over a stage-2 parent of the server (SMMUv3 Config = S1+S2).

pub use nesting_tests::TESTS;

mod nesting_tests {
    use crate::ktest::Test;
    #[cfg(target_arch = "aarch64")]
    use crate::ktest::TestResult;
    #[cfg(target_arch = "aarch64")]
    use crate::ensure;
    #[cfg(target_arch = "aarch64")]
    use crate::process::ExitReason;
    #[cfg(target_arch = "aarch64")]
    use crate::tests_iommu::{discovery_agrees, err, exit_of, run_until, server_and_driver, skip_without_iommu, with_kernel};
    #[cfg(target_arch = "aarch64")]
    use edu_contract::scenario;
    #[cfg(target_arch = "aarch64")]
    use iommu_server_contract::status;

    /// NESTED_STAGE1 (edu scenario 23): the driver's checks are the test's (copy through stage
    /// 1 then 2, invalidation, fault stages, hostile CD and invalidations); here the server
    /// must survive it, see the faults, and let go of every page once the driver is gone.
    #[cfg(target_arch = "aarch64")]
    fn nested_stage1_over_stage2() -> TestResult {
        with_kernel(|kernel| {
            let (server, driver_pid, device) = server_and_driver(kernel, 0, scenario::NESTED_STAGE1, &[1])?;
            if !discovery_agrees(&server)? {
                skip_without_iommu();
                return Ok(());
            }
            kernel.start_process(driver_pid).map_err(err("start driver"))?;
            run_until(kernel, "the driver", |k| k.has_exited(driver_pid))?;
            let exit = exit_of(kernel, driver_pid);
            ensure!(exit == Some(ExitReason::Exited(0)), "driver ended with {exit:?}");
            ensure!(server.word(status::FAULTS) >= 3, "the server saw {} faults, the driver caused three", server.word(status::FAULTS));
            ensure!(server.word(status::LAST_FAULT_RID) == u64::from(device.rid), "the server's last fault came from {:#x}, not the edu {:#x}", server.word(status::LAST_FAULT_RID), device.rid);
            run_until(kernel, "the server to reap the driver", |_| server.word(status::CLIENTS_REAPED) == 1)?;
            ensure!(server.word(status::PINNED_PAGES) == 0, "{} pages still pinned after the driver ended", server.word(status::PINNED_PAGES));
            ensure!(!kernel.has_exited(server.pid), "server died");
            crate::println!("nesting: the driver's stage 1 over the server's stage 2 translated, followed hwpt_invalidate, reported both stages' faults");
            Ok(())
        })
    }

    pub const TESTS: &[Test] = &[
        #[cfg(target_arch = "aarch64")]
        Test { name: "nesting::smmu_driver_stage1_over_server_stage2", run: nested_stage1_over_stage2 },
    ];
}
