//! arm: MSIs through the GICv3 ITS, handed to drivers by the IOMMU server (`msi_alloc`), and
//! what a hostile device can and cannot raise with them. The helpers are the IOMMU tests'
//! (`tests_iommu`): the test plays the root task and, through configuration space, the
//! attacker.

#[cfg(target_arch = "aarch64")]
pub use its_tests::bench_msi_latency;
pub use its_tests::TESTS;

#[cfg(target_arch = "aarch64")]
mod its_tests {
    use crate::ktest::{Test, TestResult};
    use crate::object::{IrqLine, MemoryObject};
    use crate::process::{ExitReason, Kernel, Pid};
    use crate::tests_iommu::iommu_tests::platform::ConfigSpace;
    use crate::tests_iommu::iommu_tests::{
        aim_msi, direct, discovery_agrees, edu_devices, err, exit_of, give_report_page, page_word, page_words, run_until, server_and_driver_with_devices, set_bus_master, skip_without_iommu, with_kernel, EduDevice, SERVER_STAGE2,
    };
    use crate::{arch, ensure};
    use alloc::format;
    use alloc::rc::Rc;
    use alloc::string::String;
    use core::cell::RefCell;
    use edu_contract::{report, scenario, FORGED_ADDRESSES, MSIS_REFUSED};
    use iommu_server_contract::status;

    /// Both SMMU domain formats: stage 1 (default) and stage 2.
    const DOMAIN_FORMATS: [u64; 2] = [0, SERVER_STAGE2];

    /// Scheduler slices given to a forged MSI to show up; QEMU's ITS translates during the
    /// device's write, so a raised LPI is pending before the first. A raised LPI shows either
    /// as taken (`lpis_taken`) or, if disabled, in the pending table (`lpis_pending`).
    const SETTLE_SLICES: u32 = 20;

    fn raise(device: &EduDevice) {
        // SAFETY: the edu's interrupt-raise register in BAR0 (direct map).
        unsafe { core::ptr::write_volatile(direct::<u32>(device.bar0 + 0x60), 1) }
    }

    fn acknowledge(device: &EduDevice) {
        // SAFETY: the edu's interrupt-acknowledge register in BAR0 (direct map).
        unsafe { core::ptr::write_volatile(direct::<u32>(device.bar0 + 0x64), 1) }
    }

    /// Command register (offset 04h) bit 2: Bus Master Enable.
    fn settle(kernel: &mut Kernel) {
        for _ in 0..SETTLE_SLICES {
            kernel.run_once();
        }
    }

    /// The IRQ object of event 0 of the device routed as DeviceID `rid` (`msi-map` on `virt`
    /// is the identity).
    fn routed_line(kernel: &Kernel, rid: u16) -> Result<Rc<RefCell<IrqLine>>, String> {
        let lines = kernel.msi_routes.get(&u32::from(rid)).ok_or(format!("no MSI route for DeviceID {rid:#x}"))?;
        lines.first().and_then(|line| line.upgrade()).ok_or(format!("the IRQ object of DeviceID {rid:#x} is gone"))
    }

    /// The edu driver takes its DMA-done interrupt through `msi_alloc` over the ITS, on both
    /// SMMU stages; destroying the device takes its events out of the ITS at once, after which
    /// the device (bound to nobody, its MSI aimed at GITS_TRANSLATER again) raises nothing. On
    /// a GICv2 machine the server refuses the MSI (GICv2m cannot tell devices apart).
    fn driver_msi_through_the_its() -> TestResult {
        for format in DOMAIN_FORMATS {
            driver_msi_with(format)?;
        }
        Ok(())
    }

    fn driver_msi_with(server_arg: u64) -> TestResult {
        with_kernel(|kernel| {
            let (server, driver_pid, devices) = server_and_driver_with_devices(kernel, server_arg, scenario::ITS_MSI, &[1], 1)?;
            if !discovery_agrees(&server)? {
                skip_without_iommu();
                return Ok(());
            }
            let device = devices[0];
            let report_page = give_report_page(kernel, driver_pid)?;
            kernel.start_process(driver_pid).map_err(err("start driver"))?;
            let Some(translater) = arch::msi_translater() else {
                run_until(kernel, "the driver", |k| k.has_exited(driver_pid))?;
                let exit = exit_of(kernel, driver_pid);
                ensure!(exit == Some(ExitReason::Exited(MSIS_REFUSED)), "without an ITS the driver ended with {exit:?}, expected the server's refusal ({MSIS_REFUSED})");
                crate::println!("its: GICv2: the server refused the driver's MSI (GICv2m cannot tell devices apart)");
                return Ok(());
            };
            let taken_before = arch::lpis_taken();
            run_until(kernel, "the driver's MSI and destroy", |k| page_word(&report_page, report::PHASE) == report::DEVICE_GONE || k.has_exited(driver_pid))?;
            ensure!(!kernel.has_exited(driver_pid), "driver ended early: {:?}", kernel.take_exit(driver_pid));
            ensure!(arch::lpis_taken() > taken_before, "the driver's DMA-done interrupt was not an LPI");
            ensure!(kernel.msi_routes.is_empty(), "the destroyed device's events are still mapped in the ITS");

            // The device belongs to nobody now, and the second edu never had a driver: aimed at
            // the ITS as the server had programmed the first, the MSI of each is stopped by the
            // SMMU (blocked stream) and raises no LPI.
            let config = ConfigSpace::open()?;
            let never_given = *edu_devices(&config).get(1).ok_or("no second edu device")?;
            // Their bus mastering is off (the server enables it at bind and turns it off when a
            // device leaves its owner): turned on here, the MSI write leaves the device and the
            // SMMU's blocking is what stops it.
            set_bus_master(&config, &device, true);
            set_bus_master(&config, &never_given, true);
            for (unbound, what) in [(device, "the destroyed device"), (never_given, "the device no driver was given")] {
                let unrouted = server.word(status::UNROUTED_FAULTS);
                let taken = arch::lpis_taken();
                aim_msi(&config, &unbound, translater as u32, 0, true)?;
                raise(&unbound);
                run_until(kernel, "the unbound device's MSI to be refused", |_| server.word(status::UNROUTED_FAULTS) > unrouted)?;
                acknowledge(&unbound);
                aim_msi(&config, &unbound, 0, 0, false)?;
                settle(kernel);
                ensure!(arch::lpis_taken() == taken && arch::lpis_pending() == 0, "{what} raised an LPI");
                let (rid, address) = (server.word(status::LAST_FAULT_RID), server.word(status::LAST_FAULT_ADDRESS));
                ensure!(rid == u64::from(unbound.rid) && address == translater & !0xFFF, "refusal from {rid:#x} at {address:#x}, expected {:#x} at the doorbell page", unbound.rid);
                crate::println!("its: the MSI of {what} to GITS_TRANSLATER was blocked by the SMMU; no LPI");
            }
            set_bus_master(&config, &device, false);
            set_bus_master(&config, &never_given, false);

            page_words(&report_page).write(report::COMMAND, report::LEAVE);
            run_until(kernel, "the driver", |k| k.has_exited(driver_pid))?;
            let exit = exit_of(kernel, driver_pid);
            ensure!(exit == Some(ExitReason::Exited(0)), "driver ended with {exit:?}");
            Ok(())
        })
    }

    /// A hostile device, attached with its own MSI, writes forged MSIs: EventIDs it was not
    /// given (1, and 0x1234 beyond its ITT), the victim's EventID (0, which for its DeviceID is
    /// its own), an address in the doorbell page other than GITS_TRANSLATER, and addresses
    /// outside the doorbell page (`FORGED_ADDRESSES`). The first three raise no LPI, the
    /// fourth only the hostile device's own, the last fault into the hostile driver's queue
    /// (the driver checks the records). The victim hears nothing and still takes its own
    /// interrupt, as does the hostile device.
    fn forged_msis_dropped() -> TestResult {
        for format in DOMAIN_FORMATS {
            forged_msis_with(format)?;
        }
        Ok(())
    }

    fn forged_msis_with(server_arg: u64) -> TestResult {
        with_kernel(|kernel| {
            let (server, driver_pid, devices) = server_and_driver_with_devices(kernel, server_arg, scenario::FORGED_ITS_MSIS, &[1, 2], 2)?;
            if !discovery_agrees(&server)? {
                skip_without_iommu();
                return Ok(());
            }
            let Some(translater) = arch::msi_translater() else {
                crate::ktest::skip(String::from("no ITS (GICv2): MSIs are not handed to drivers"));
                return Ok(());
            };
            let report_page = give_report_page(kernel, driver_pid)?;
            kernel.start_process(driver_pid).map_err(err("start driver"))?;
            run_until(kernel, "the driver to set up", |k| page_word(&report_page, report::PHASE) == report::FORGERY_TARGETS_READY || k.has_exited(driver_pid))?;
            ensure!(!kernel.has_exited(driver_pid), "driver ended early: {:?}", kernel.take_exit(driver_pid));
            let (victim, hostile) = (devices[0], devices[1]);
            let victim_line = routed_line(kernel, victim.rid)?;
            let hostile_line = routed_line(kernel, hostile.rid)?;
            let config = ConfigSpace::open()?;

            let mut programmed = None;
            let doorbell_elsewhere = (translater & !0xFFF) + 0x80;
            for (address, data, what) in [(translater, 1, "EventID 1 (not given)"), (translater, 0x1234, "EventID 0x1234 (beyond its ITT)"), (doorbell_elsewhere, 0, "the doorbell page off GITS_TRANSLATER")] {
                let (faults, taken) = (server.word(status::FAULTS), arch::lpis_taken());
                let before = aim_msi(&config, &hostile, address as u32, data, true)?;
                programmed = programmed.or(Some(before));
                raise(&hostile);
                settle(kernel);
                acknowledge(&hostile);
                ensure!(arch::lpis_taken() == taken, "the forged MSI to {what} raised an LPI");
                ensure!(arch::lpis_pending() == 0, "the forged MSI to {what} left an LPI pending");
                ensure!(server.word(status::FAULTS) == faults, "the forged MSI to {what} faulted in the SMMU (the doorbell page is mapped)");
                crate::println!("its: forged MSI from the hostile edu to {what}: dropped by the ITS, no LPI");
            }
            ensure!(victim_line.borrow().last_fired_at == 0 && hostile_line.borrow().last_fired_at == 0, "a dropped forgery fired a routed line");

            // The victim's EventID from the hostile device: the ITS goes by DeviceID, so this
            // is the hostile device's own event.
            aim_msi(&config, &hostile, translater as u32, 0, true)?;
            raise(&hostile);
            run_until(kernel, "the hostile device's own LPI", |_| hostile_line.borrow().last_fired_at != 0)?;
            acknowledge(&hostile);
            ensure!(victim_line.borrow().last_fired_at == 0, "the hostile device's EventID 0 reached the victim's line");
            crate::println!("its: the victim's EventID written by the hostile edu raised only the hostile edu's own LPI");

            for address in FORGED_ADDRESSES {
                let (faults, unrouted, taken) = (server.word(status::FAULTS), server.word(status::UNROUTED_FAULTS), arch::lpis_taken());
                aim_msi(&config, &hostile, address as u32, 0, true)?;
                raise(&hostile);
                run_until(kernel, "the forged MSI to fault", |_| server.word(status::FAULTS) > faults)?;
                acknowledge(&hostile);
                let (rid, page) = (server.word(status::LAST_FAULT_RID), server.word(status::LAST_FAULT_ADDRESS));
                ensure!(rid == u64::from(hostile.rid) && page == address & !0xFFF, "fault from {rid:#x} at {page:#x}, expected {:#x} at {:#x}", hostile.rid, address & !0xFFF);
                ensure!(server.word(status::UNROUTED_FAULTS) == unrouted, "the fault of the forged MSI to {address:#x} reached no fault queue");
                ensure!(arch::lpis_taken() == taken && arch::lpis_pending() == 0, "the forged MSI to {address:#x} raised an LPI");
                crate::println!("its: forged MSI from the hostile edu to {address:#x} (outside the doorbell page) faulted into its owner's queue");
            }
            ensure!(victim_line.borrow().last_fired_at == 0, "a forged MSI reached the victim's line");

            // What the server programmed goes back: the driver checks the device's own MSI next.
            let (address, data) = programmed.ok_or("no forged MSI sent")?;
            ensure!(u64::from(address) == translater && data == 0, "the server programmed the hostile edu with {address:#x}/{data:#x}, expected GITS_TRANSLATER {translater:#x} and EventID 0");
            aim_msi(&config, &hostile, address, data, true)?;
            run_until(kernel, "the driver", |k| k.has_exited(driver_pid))?;
            let exit = exit_of(kernel, driver_pid);
            ensure!(exit == Some(ExitReason::Exited(0)), "driver ended with {exit:?}");
            ensure!(victim_line.borrow().last_fired_at != 0, "the victim's own DMA-done interrupt never fired");
            run_until(kernel, "the server to reap the driver", |k| server.word(status::CLIENTS_REAPED) == 2 && k.msi_routes.is_empty())?;
            ensure!(!kernel.has_exited(server.pid), "the server died");
            Ok(())
        })
    }

    /// MSI latency through the ITS, from the moment the kernel takes the device's LPI
    /// (`last_fired_at` of its line) to the driver's `notify_wait` returning (the driver reads
    /// the counter right after, one system call included); the last of four rounds, as on x86.
    pub fn bench_msi_latency(kernel: &mut Kernel, report_page: &MemoryObject, driver_pid: Pid, device: &EduDevice) -> TestResult {
        run_until(kernel, "the driver's MSI", |k| page_word(report_page, report::PHASE) == report::MSI_READY || k.has_exited(driver_pid))?;
        ensure!(!kernel.has_exited(driver_pid), "benchmark driver ended early: {:?}", kernel.take_exit(driver_pid));
        let line = routed_line(kernel, device.rid)?;
        let mut latency = 0;
        for _ in 0..4 {
            page_words(report_page).write(report::MSI_COMMAND, report::MEASURE_MSI);
            run_until(kernel, "the driver to take its MSI", |k| page_word(report_page, report::MSI_COMMAND) == 0 || k.has_exited(driver_pid))?;
            ensure!(!kernel.has_exited(driver_pid), "benchmark driver ended: {:?}", kernel.take_exit(driver_pid));
            latency = page_word(report_page, report::MSI_WOKEN_AT) - line.borrow().last_fired_at;
        }
        page_words(report_page).write(report::MSI_COMMAND, report::END);
        crate::println!("bench: MSI to the driver's wait returning, ITS (LPI) {latency} guest instructions");
        Ok(())
    }

    pub const TESTS: &[Test] = &[
        Test { name: "its::driver_msi_through_the_its", run: driver_msi_through_the_its },
        Test { name: "its::forged_msis_dropped", run: forged_msis_dropped },
    ];
}

#[cfg(not(target_arch = "aarch64"))]
mod its_tests {
    pub const TESTS: &[crate::ktest::Test] = &[];
}
