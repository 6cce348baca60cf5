//! arm with GICv2m: the MSI latency figure without interrupt isolation, the "before" next to
//! the ITS figure of `bench::iommu`. GICv2m cannot tell devices apart, so the server hands
//! drivers no MSIs there; for this benchmark it is started with ALLOW_UNISOLATED_MSI (the
//! doorbell goes into the device's domain) and the test, as the root task, gives the driver a
//! GICv2m line and aims the device's MSI at it.

pub use gicv2m_tests::TESTS;

#[cfg(target_arch = "aarch64")]
mod gicv2m_tests {
    use crate::ktest::{Test, TestResult};
    use crate::object::Object;
    use crate::platform::boot_caps;
    use crate::process::ExitReason;
    use crate::tests_iommu::iommu_tests::platform::ConfigSpace;
    use crate::tests_iommu::iommu_tests::{
        discovery_agrees, err, exit_of, give_report_page, page_word, page_words, program_msi, run_until, server_and_driver, skip_without_iommu, with_kernel, SERVER_ALLOW_UNISOLATED_MSI,
    };
    use crate::ensure;
    use alloc::string::String;
    use edu_contract::{report, scenario, slot};
    use kernel_abi::Rights;

    /// From the moment the kernel takes the device's SPI (`last_fired_at` of the GICv2m line)
    /// to the driver's `notify_wait` returning (the driver reads the counter right after, one
    /// system call included); the last of four rounds, as the ITS and x86 figures.
    fn bench_msi_gicv2m() -> TestResult {
        // The last GICv2m line: `iommu::attached_device_msi_reaches_the_cpu` uses the first, and
        // a line's firing time outlives the test that used it.
        let Some(msi) = boot_caps(crate::boot_info()).into_iter().filter(|cap| cap.name == "msi").last() else {
            crate::ktest::skip(String::from("no GICv2m MSI lines on this machine (a GICv3: the ITS figure is bench::iommu's)"));
            return Ok(());
        };
        let Object::Irq(irq) = msi.object.clone() else { return Err("the msi capability is no IRQ line".into()) };
        with_kernel(|kernel| {
            let (server, driver_pid, device) = server_and_driver(kernel, SERVER_ALLOW_UNISOLATED_MSI, scenario::BENCH, &[1])?;
            let report_page = give_report_page(kernel, driver_pid)?;
            if !discovery_agrees(&server)? {
                skip_without_iommu();
                return Ok(());
            }
            kernel.install(driver_pid, slot::UNISOLATED_MSI, msi.object.clone(), Rights::CONTROL, 0).map_err(err("the GICv2m line"))?;
            kernel.start_process(driver_pid).map_err(err("start driver"))?;
            run_until(kernel, "the driver's MSI", |k| page_word(&report_page, report::PHASE) == report::MSI_READY || k.has_exited(driver_pid))?;
            ensure!(!kernel.has_exited(driver_pid), "benchmark driver ended early: {:?}", kernel.take_exit(driver_pid));
            let config = ConfigSpace::open()?;
            let line = irq.borrow().line;
            program_msi(&config, &device, line, true)?;
            let mut latency = 0;
            for _ in 0..4 {
                let fired_before = irq.borrow().last_fired_at;
                page_words(&report_page).write(report::MSI_COMMAND, report::MEASURE_MSI);
                run_until(kernel, "the driver to take its MSI", |k| page_word(&report_page, report::MSI_COMMAND) == 0 || k.has_exited(driver_pid))?;
                ensure!(!kernel.has_exited(driver_pid), "benchmark driver ended: {:?}", kernel.take_exit(driver_pid));
                let fired_at = irq.borrow().last_fired_at;
                ensure!(fired_at != fired_before, "the driver woke without the GICv2m line {line} firing");
                latency = page_word(&report_page, report::MSI_WOKEN_AT) - fired_at;
            }
            page_words(&report_page).write(report::MSI_COMMAND, report::END);
            run_until(kernel, "the benchmark driver", |k| k.has_exited(driver_pid))?;
            let exit = exit_of(kernel, driver_pid);
            program_msi(&config, &device, line, false)?;
            ensure!(exit == Some(ExitReason::Exited(0)), "benchmark driver ended with {exit:?}");
            crate::println!("bench: MSI to the driver's wait returning, GICv2m (SPI, not isolated) {latency} guest instructions");
            Ok(())
        })
    }

    pub const TESTS: &[Test] = &[Test { name: "bench::msi_gicv2m", run: bench_msi_gicv2m }];
}

#[cfg(not(target_arch = "aarch64"))]
mod gicv2m_tests {
    pub const TESTS: &[crate::ktest::Test] = &[];
}
