//! Server death and takeover (issue 13): what an ended IOMMU server pinned stays out of the
//! free pool (the kernel's quarantine) until a new server has put every unit into a blocking
//! state over its own tables and released it.
//!
//! * `mem::pins_of_an_ended_pinner_quarantined`: the kernel alone. A pinner's end moves its
//!   pinned objects into the quarantine (counted, not freed); only `quarantine_release`,
//!   which needs the DMA authority, returns them.
//! * `iommu::server_killed_device_blocked_after_takeover`: a driver's device attached and
//!   mapped; the server is killed. The device still reaches its page through the dead
//!   server's tables, which the quarantine keeps. A new server takes the unit over and
//!   releases the quarantine (the pages counted on both sides); then every free frame, the
//!   released ones among them, is filled with canaries, the device writes to its old IOVA
//!   again, and every canary must be intact.

pub use restart_tests::TESTS;
/// What the quarantine tests (`tests_quarantine.rs`) take from these.
pub(crate) use restart_tests::{device_writes, Canaries};

mod restart_tests {
    use crate::ktest::{Test, TestResult};
    use crate::object::{MemoryObject, Object};
    use crate::process::{ExitReason, Kernel};
    use crate::tests_iommu::shared::*;
    use crate::user_images::{IMAGES, USERTEST};
    use crate::{ensure, mm};
    use alloc::format;
    use alloc::vec::Vec;
    use edu_contract::{report, scenario};
    use iommu_server_contract::status;
    use kernel_abi::Rights;

    const CANARY: u8 = 0x6b;
    /// What the device writes: the edu's internal buffer, holding the driver's source page.
    const SOURCE_FIRST_BYTE: u8 = 0x21;

    /// A pinner that ends leaves its pinned objects in quarantine: their frames stay out of
    /// the pool until a DMA authority releases them; memory it had not pinned is freed.
    fn pins_of_an_ended_pinner_quarantined() -> TestResult {
        let mut kernel = Kernel::new(IMAGES);
        let pinner = kernel.create_process("pinner", USERTEST, 0, 64).map_err(|e| format!("{e:?}"))?;
        let releaser = kernel.create_process("releaser", USERTEST, 0, 64).map_err(|e| format!("{e:?}"))?;
        let quota = kernel.processes[pinner].quota.clone();
        let pinned = MemoryObject::allocate(3, &quota).ok_or("no memory")?;
        let unpinned = MemoryObject::allocate(2, &quota).ok_or("no memory")?;
        kernel.install(pinner, 10, Object::Memory(pinned.clone()), Rights::all(), 0).map_err(|e| format!("{e:?}"))?;
        kernel.install(pinner, 11, Object::Memory(unpinned), Rights::all(), 0).map_err(|e| format!("{e:?}"))?;
        let cap = kernel.processes[pinner].cspace.get(10).cloned().map_err(|e| format!("{e:?}"))?;
        // Two pins of one object: it is held once.
        kernel.pin(pinner, &cap, Some(pinned.clone()), 0, 1).map_err(|e| format!("{e:?}"))?;
        kernel.pin(pinner, &cap, Some(pinned.clone()), 2, 1).map_err(|e| format!("{e:?}"))?;
        drop((cap, pinned));
        let free = || mm::FRAMES.lock().free_frames();
        kernel.kill(pinner, ExitReason::Killed);
        // The pinner's image, stack, tables and unpinned memory are free now; the release
        // below frees exactly the pinned object, so it was not freed before.
        let before = free();
        ensure!((kernel.quarantine.pages(), kernel.quarantine.objects()) == (3, 1), "quarantine holds {} pages in {} objects, expected 3 in 1", kernel.quarantine.pages(), kernel.quarantine.objects());
        // Releasing needs a DmaAuthority with CONTROL.
        let refused = crate::syscall::quarantine_release(&mut kernel, releaser, 7);
        ensure!(refused == Err(kernel_abi::Error::InvalidCapability), "release without any capability: {refused:?}");
        kernel.install(releaser, 7, Object::DmaAuthority, Rights::READ, 0).map_err(|e| format!("{e:?}"))?;
        let refused = crate::syscall::quarantine_release(&mut kernel, releaser, 7);
        ensure!(refused == Err(kernel_abi::Error::MissingRights), "release without CONTROL: {refused:?}");
        ensure!(free() == before && kernel.quarantine.pages() == 3, "a refused release let frames go");
        kernel.install(releaser, 8, Object::DmaAuthority, Rights::all(), 0).map_err(|e| format!("{e:?}"))?;
        let released = crate::syscall::quarantine_release(&mut kernel, releaser, 8);
        ensure!(released == Ok([3, 1]), "release answered {released:?}, expected 3 pages in 1 object");
        ensure!(free() == before + 3, "the release freed {} frames, expected the pinned object's 3", free() as i64 - before as i64);
        ensure!(kernel.quarantine.pages() == 0, "the quarantine still holds {} pages", kernel.quarantine.pages());
        Ok(())
    }

    /// Every frame of both pools, filled with `CANARY`, until dropped.
    pub(crate) struct Canaries {
        frames: Vec<u64>,
        contiguous: Vec<u64>,
    }

    impl Canaries {
        pub(crate) fn fill_all_free_memory() -> Result<Canaries, alloc::string::String> {
            let mut canaries = Canaries { frames: Vec::new(), contiguous: Vec::new() };
            let (free, free_contiguous) = (mm::FRAMES.lock().free_frames() as usize, mm::CONTIGUOUS.lock().free_frames());
            canaries.frames.try_reserve_exact(free).map_err(|_| "no heap for the frame list")?;
            canaries.contiguous.try_reserve_exact(free_contiguous).map_err(|_| "no heap for the frame list")?;
            while let Some(frame) = mm::FRAMES.lock().alloc() {
                canaries.frames.push(frame);
            }
            while let Some(frame) = mm::CONTIGUOUS.lock().alloc(1) {
                canaries.contiguous.push(frame);
            }
            for &frame in canaries.frames.iter().chain(&canaries.contiguous) {
                // SAFETY: a frame this test took from a pool and owns until `drop`, in the
                // direct map.
                unsafe { core::ptr::write_bytes(mm::phys_to_virt(frame), CANARY, 4096) };
            }
            Ok(canaries)
        }

        /// The first frame whose canary is gone.
        pub(crate) fn first_damaged(&self) -> Option<u64> {
            self.frames.iter().chain(&self.contiguous).copied().find(|&frame| {
                // SAFETY: as in `fill_all_free_memory`.
                unsafe { core::slice::from_raw_parts(mm::phys_to_virt(frame), 4096) }.iter().any(|&b| b != CANARY)
            })
        }

        pub(crate) fn contains(&self, frame: u64) -> bool {
            self.frames.contains(&frame) || self.contiguous.contains(&frame)
        }
    }

    impl Drop for Canaries {
        fn drop(&mut self) {
            let mut frames = mm::FRAMES.lock();
            self.frames.iter().for_each(|&f| frames.free(f));
            let mut contiguous = mm::CONTIGUOUS.lock();
            self.contiguous.iter().for_each(|&f| contiguous.free(f, 1));
        }
    }

    /// Has the device write its buffer to `iova` and waits until the DMA is over.
    pub(crate) fn device_writes(kernel: &mut Kernel, config: &ConfigSpace, device: &EduDevice, iova: u64) -> TestResult {
        device.start_dma(config, EDU_BUFFER, iova, true);
        run_until(kernel, "the device's DMA to end", |_| !device.dma_running())
    }

    fn first_byte(frame: u64) -> u8 {
        // SAFETY: a frame of RAM in the direct map that something still holds (the caller's
        // claim); read once.
        unsafe { core::ptr::read_volatile(mm::phys_to_virt(frame)) }
    }

    fn server_killed_device_blocked_after_takeover() -> TestResult {
        with_kernel(|kernel| {
            let (server, driver_pid, device) = server_and_driver(kernel, 0, scenario::SERVER_RESTART, &[1])?;
            if !discovery_agrees(&server)? {
                skip_without_iommu();
                return Ok(());
            }
            let report_page = give_report_page(kernel, driver_pid)?;
            // Opened before the canaries take every free frame (on arm it maps the window).
            let config = ConfigSpace::open()?;
            kernel.start_process(driver_pid).map_err(err("start driver"))?;
            let phase = |kernel: &Kernel| if kernel.has_exited(driver_pid) { None } else { Some(page_word(&report_page, report::PHASE)) };
            run_until(kernel, "the driver's DMA and mapping", |k| phase(k) != Some(0))?;
            ensure!(phase(kernel) == Some(report::RESTART_MAPPED), "driver ended early: {:?}", kernel.take_exit(driver_pid));
            // The page the device may write: the second page of the driver's two-page buffer,
            // which the server pinned.
            let (buffer, page) = {
                let process = kernel.processes.get(server.pid).ok_or("server")?;
                let buffer = process.pins.values().filter_map(|pin| pin.memory.as_ref()).find(|m| m.frames.len() == 2).ok_or("the server pinned no two-page buffer")?;
                (buffer.frames.clone(), buffer.frames[1])
            };
            let pinned = server_kernel_pins(kernel, &server);
            ensure!(kernel.quarantine.pages() == 0, "the quarantine holds {} pages before any server ended", kernel.quarantine.pages());

            // The server dies with the device attached: what it pinned goes into quarantine.
            kernel.kill(server.pid, ExitReason::Killed);
            let (pages, objects) = (kernel.quarantine.pages(), kernel.quarantine.objects());
            ensure!(objects as usize >= pinned.min(1) && pages >= objects, "the killed server's {pinned} pins left {pages} pages in {objects} objects in quarantine");
            // What only the quarantine holds (not the driver's buffer): the dead server's tables.
            let tables: Vec<u64> = kernel.quarantine.frames().filter(|f| !buffer.contains(f)).collect();
            ensure!(!tables.is_empty(), "the quarantine holds none of the dead server's own memory");
            // The unit still walks the dead server's tables: the device reaches the page.
            // SAFETY: the driver's page, held by the driver and the quarantine; the test
            // clears it to see the device's write.
            unsafe { core::ptr::write_bytes(mm::phys_to_virt(page), 0, 4096) };
            device_writes(kernel, &config, &device, scenario::RESTART_IOVA)?;
            ensure!(first_byte(page) == SOURCE_FIRST_BYTE, "the device did not reach its page through the dead server's tables (byte {:#x}): the test shows nothing", first_byte(page));

            // A new server takes the unit over, on the endpoint the driver holds, and releases
            // the quarantine.
            let successor = create_server_serving(kernel, iommu_server_contract::start::RESTARTED, &[(driver_pid, 1)], server.endpoint.clone())?;
            kernel.start_process(successor.pid).map_err(err("start the new server"))?;
            wait_ready(kernel, &successor)?;
            ensure!(successor.word(status::QUARANTINE_RELEASED) == pages, "the new server released {} pages, the quarantine held {pages}", successor.word(status::QUARANTINE_RELEASED));
            ensure!(kernel.quarantine.pages() == 0, "{} pages still in quarantine after the takeover", kernel.quarantine.pages());
            // The device had an owner: the new server quiesced it (this edu has no reset method).
            let handled = successor.word(status::RESETS) + successor.word(status::QUIESCED_WITHOUT_RESET);
            // SAFETY: the edu's command register, mapped by `config`.
            let command = unsafe { core::ptr::read_volatile(config.register(u64::from(device.rid), 0x04)) };
            ensure!(handled >= 1 && command & 0x4 == 0, "the new server left the owned device mastering the bus (command {command:#x}, {handled} devices reset or quiesced)");

            // Every free frame, the dead server's tables among them, gets a canary; the
            // driver's page is cleared. The device writes to its old IOVA again.
            let canaries = Canaries::fill_all_free_memory()?;
            let missing = tables.iter().filter(|f| !canaries.contains(**f)).count();
            // SAFETY: as above (the driver still holds its page).
            unsafe { core::ptr::write_bytes(mm::phys_to_virt(page), 0, 4096) };
            let faults = successor.word(status::FAULTS);
            device_writes(kernel, &config, &device, scenario::RESTART_IOVA)?;
            // Let the new server's event thread see a fault record, if the unit wrote one.
            for _ in 0..64 {
                kernel.run_once();
            }
            let damaged = canaries.first_damaged();
            let recorded = successor.word(status::FAULTS) > faults;
            let free = mm::FRAMES.lock().free_frames() + canaries.frames.len() as u64;
            drop(canaries);
            ensure!(missing == 0, "{missing} of the {} released table frames did not come back to the free pool", tables.len());
            ensure!(damaged.is_none(), "the device wrote free frame {:#x} after the takeover", damaged.unwrap_or(0));
            ensure!(first_byte(page) == 0, "the device still reached its page after the takeover");
            if recorded {
                ensure!(successor.word(status::LAST_FAULT_RID) == u64::from(device.rid), "fault from {:#x}, expected the edu {:#x}", successor.word(status::LAST_FAULT_RID), device.rid);
            }

            // The driver learns of the restart, reconnects and DMAs again.
            // SAFETY: word COMMAND of the report page, which the driver polls.
            unsafe { core::ptr::write_volatile((mm::phys_to_virt(report_page.frames[0]) as *mut u64).add(report::COMMAND), report::RECONNECT) };
            run_until(kernel, "the driver to reconnect", |k| k.has_exited(driver_pid))?;
            let exit = kernel.take_exit(driver_pid);
            ensure!(exit == Some(ExitReason::Exited(0)), "driver ended with {exit:?}");
            ensure!(page_word(&report_page, report::PHASE) == report::RESTART_RECONNECTED, "the driver did not report its reconnect");
            ensure!(!kernel.has_exited(successor.pid), "the new server died");
            crate::println!(
                "restart: the killed server left {pages} pages ({objects} objects) in quarantine, which the device still reached; the new server released them after blocking every device; the write to the old IOVA was refused {}; {free} free frames kept their canaries; the driver got ServerRestarted, reconnected and DMAs again",
                if recorded { "with a fault record" } else { "without a fault record" },
            );
            Ok(())
        })
    }

    /// The root task runs the system description; the test kills the IOMMU server as soon as
    /// it is ready. The root task, watching it, starts a new one from the description, which
    /// takes the unit over (releasing the dead server's quarantine); the drivers then run their
    /// DMA through it and the root task's end-of-run checks hold.
    fn server_restarted_by_the_root_task() -> TestResult {
        with_kernel(|kernel| {
            let root = crate::root::create(kernel)?;
            kernel.start_process(root).map_err(err("start the root task"))?;
            let servers = |kernel: &Kernel| -> Vec<(crate::process::Pid, alloc::rc::Rc<MemoryObject>)> {
                kernel
                    .processes
                    .iter()
                    .filter(|(_, p)| p.name == "iommu-server")
                    .filter_map(|(pid, p)| match p.cspace.get(iommu_server_contract::slots::STATUS_PAGE).map(|c| c.object.clone()) {
                        Ok(Object::Memory(page)) => Some((pid, page)),
                        _ => None,
                    })
                    .collect()
            };
            run_until(kernel, "the IOMMU server to be ready", |k| {
                k.has_exited(root) || servers(k).iter().any(|(_, page)| page_word(page, status::STATE) == status::STATE_READY)
            })?;
            let (first, page) = servers(kernel).pop().ok_or("no server")?;
            // Without an IOMMU the root task starts no driver and may be done already.
            if page_word(&page, status::IOMMU_DESCRIBED) == 0 {
                skip_without_iommu();
                return Ok(());
            }
            ensure!(!kernel.has_exited(root), "the root task ended before the server was ready: {:?}", kernel.take_exit(root));
            kernel.kill(first, ExitReason::Killed);
            let quarantined = kernel.quarantine.pages();
            ensure!(quarantined > 0, "the killed server left nothing in quarantine");
            run_until(kernel, "the root task", |k| k.has_exited(root))?;
            let exit = kernel.take_exit(root);
            ensure!(exit == Some(ExitReason::Exited(0)), "root task ended with {exit:?}");
            let successors = servers(kernel);
            ensure!(successors.len() == 1 && successors[0].0 != first, "{} servers run after the restart, expected one new one", successors.len());
            ensure!(page_word(&page, status::QUARANTINE_RELEASED) == quarantined, "the new server released {} pages, the quarantine held {quarantined}", page_word(&page, status::QUARANTINE_RELEASED));
            ensure!(kernel.quarantine.pages() == 0, "{} pages still in quarantine", kernel.quarantine.pages());
            crate::println!("restart: the root task restarted the killed server, which released {quarantined} quarantined pages; the drivers' DMA ran through the new one");
            Ok(())
        })
    }

    pub const TESTS: &[Test] = &[
        Test { name: "mem::pins_of_an_ended_pinner_quarantined", run: pins_of_an_ended_pinner_quarantined },
        Test { name: "iommu::server_killed_device_blocked_after_takeover", run: server_killed_device_blocked_after_takeover },
        Test { name: "root::server_restarted_by_the_root_task", run: server_restarted_by_the_root_task },
    ];
}
