//! A dying server's address-space watches (SVA) join the quarantine (issue 13).
//!
//! `quarantine::sva_watch_of_a_killed_server_held`: a driver binds a process's address space
//! to its edu device (edu scenario `SVA_BOUND_PROCESS`, run up to its first copy) and the
//! server is killed. The PASID or context entry the dead server wrote still points at the
//! process's tables, so the watch goes into the kernel's quarantine instead of ending: the
//! process then unmaps a page and ends, and neither the unmapped frame nor the tables, image
//! and pages of the ended process return to the pool. With every free frame filled with
//! canaries, the device (programmed by the test, as an attacker would) writes through the old
//! binding: it still reaches the process's page through the held tables, and every canary is
//! intact. A new server takes the unit over and releases the quarantine, the watch's pages
//! counted on both sides; then the device's writes at the same addresses leave every canary of
//! a second fill intact.

use crate::ktest::{Test, TestResult};
use crate::object::{MemoryObject, Object};
use crate::user_images::{IMAGES, USERTEST};
use crate::process::{ExitReason, Kernel};
use crate::tests_iommu::shared::*;
use crate::tests_restart::{device_writes, Canaries};
use crate::tests_sva::{frame_bytes, sva_rig, translate, SvaRig, FIRST_MEMORY_SLOT, SOURCE_BYTE};
use crate::{ensure, mm};
use alloc::string::String;
use edu_contract::{report, scenario, sva};
use iommu_server_contract::status;

pub const TESTS: &[Test] = &[
    Test { name: "quarantine::sva_watch_of_a_killed_server_held", run: sva_watch_of_a_killed_server_held },
    Test { name: "quarantine::ended_childs_quota_returns_to_its_parent", run: ended_childs_quota_returns_to_its_parent },
];

/// `process_create` moves the child's quota out of the parent's limit; it comes back once
/// the child has ended and nothing charged to it is left (here a memory object someone else
/// holds, as a quarantine or another process's mapping would): each restart of a server
/// costs its starter nothing for good.
fn ended_childs_quota_returns_to_its_parent() -> TestResult {
    const CHILD_PAGES: u64 = 256;
    const CHILD_SLOT: u64 = 20;
    let mut kernel = Kernel::new(IMAGES);
    let parent = kernel.create_process("parent", USERTEST, 0, 2 * CHILD_PAGES + 64).map_err(err("create the parent"))?;
    let image = IMAGES.iter().position(|&(name, _)| name == "usertest").ok_or("no usertest image")? as u64;
    let quota = kernel.processes[parent].quota.clone();
    let limit = quota.limit.get();
    for round in 0..3 {
        crate::syscall::process_create(&mut kernel, parent, image, 0, CHILD_SLOT, CHILD_PAGES).map_err(err("process_create"))?;
        let child = match kernel.processes[parent].cspace.get(CHILD_SLOT).map_err(err("the child's capability"))?.object {
            Object::Process(child) => child,
            _ => return Err(String::from("process_create put no process capability")),
        };
        ensure!(quota.limit.get() == limit - CHILD_PAGES, "round {round}: the parent's limit is {}, expected {} less the child's {CHILD_PAGES}", quota.limit.get(), limit);
        let held = MemoryObject::allocate(2, &kernel.processes[child].quota).ok_or("no memory for the child")?;
        kernel.kill(child, ExitReason::Killed);
        kernel.delete_cap(parent, CHILD_SLOT).map_err(err("delete the child's capability"))?;
        ensure!(quota.limit.get() == limit - CHILD_PAGES, "round {round}: the child's quota came back while memory charged to it was still held");
        drop(held);
        ensure!(quota.limit.get() == limit, "round {round}: the ended child's {CHILD_PAGES} pages did not come back (the parent's limit is {}, was {limit})", quota.limit.get());
    }
    Ok(())
}

fn clear(frame: u64) {
    // SAFETY: a frame of RAM in the direct map that the quarantine (or a memory object the
    // caller knows of) holds; the test clears it to see whether the device writes it.
    unsafe { core::ptr::write_bytes(mm::phys_to_virt(frame), 0, 4096) };
}

fn sva_watch_of_a_killed_server_held() -> TestResult {
    with_kernel(|kernel| {
        let Some(SvaRig { server, driver_pid, device, report_page, bound, objects }) = sva_rig(kernel, scenario::SVA_BOUND_PROCESS)? else { return Ok(()) };
        // Opened before the canaries take every free frame (on arm it maps the window).
        let config = ConfigSpace::open()?;
        kernel.start_process(driver_pid).map_err(err("start driver"))?;
        run_until(kernel, "the copy between the bound process's pages", |k| page_word(&report_page, report::PHASE) == sva::COPIED || k.has_exited(driver_pid))?;
        ensure!(!kernel.has_exited(driver_pid), "driver ended early: {:?}", kernel.take_exit(driver_pid));
        let (source, destination) = (translate(kernel, bound, sva::SOURCE_VA)?, translate(kernel, bound, sva::DESTINATION_VA)?);
        let root = kernel.processes[bound].space.root().phys();
        // From here only the process (and the quarantine) holds its pages.
        drop(objects);
        ensure!(kernel.quarantined_pages() == 0, "the quarantine holds {} pages before any server ended", kernel.quarantined_pages());

        // The server dies with the binding live; its watch is quarantined, not ended. The
        // driver goes too: the device stays bound in the dead server's tables.
        kernel.kill(server.pid, ExitReason::Killed);
        ensure!(kernel.quarantine.watches() == 1, "the killed server's address-space watch was not quarantined ({} watches held)", kernel.quarantine.watches());
        kernel.kill(driver_pid, ExitReason::Killed);
        // The process unmaps its destination page (with its capability) and ends.
        kernel.delete_cap(bound, FIRST_MEMORY_SLOT + 1).map_err(err("unmap the destination"))?;
        kernel.kill(bound, ExitReason::Killed);
        let quarantined = kernel.quarantined_pages();
        let objects_only = kernel.quarantine.pages();
        ensure!(quarantined > objects_only, "the quarantine counts nothing for the watch ({quarantined} pages, {objects_only} of them the server's objects)");

        // Every free frame gets a canary; none of the frames the binding reaches is among them.
        let canaries = Canaries::fill_all_free_memory()?;
        let reachable = [("the process's table root", root), ("the unmapped destination page", destination), ("the ended process's source page", source)];
        if let Some((what, frame)) = reachable.iter().find(|(_, frame)| canaries.contains(*frame)) {
            return Err(alloc::format!("{what} (frame {frame:#x}) was in the free pool while the dead server's binding could reach it"));
        }
        // The device writes through the old binding: at the page still mapped when the
        // process ended (through the held tables), and at the unmapped one (which the unit may
        // still have cached).
        clear(source);
        device_writes(kernel, &config, &device, sva::SOURCE_VA)?;
        device_writes(kernel, &config, &device, sva::DESTINATION_VA)?;
        let reached = frame_bytes(source).iter().all(|&b| b == SOURCE_BYTE);
        let damaged = canaries.first_damaged();
        drop(canaries);
        ensure!(reached, "the device did not reach the ended process's page through the dead server's binding: the test shows nothing");
        ensure!(damaged.is_none(), "the device wrote free frame {:#x} through the dead server's binding", damaged.unwrap_or(0));

        // A new server takes the unit over with every device blocked and releases the
        // quarantine, the watch's pages counted.
        let successor = create_server_serving(kernel, iommu_server_contract::start::RESTARTED, &[], server.endpoint.clone())?;
        kernel.start_process(successor.pid).map_err(err("start the new server"))?;
        wait_ready(kernel, &successor)?;
        ensure!(successor.word(status::QUARANTINE_RELEASED) == quarantined, "the new server released {} pages, the quarantine held {quarantined}", successor.word(status::QUARANTINE_RELEASED));
        ensure!(kernel.quarantined_pages() == 0 && kernel.quarantine.watches() == 0, "{} pages ({} watches) still in quarantine after the takeover", kernel.quarantined_pages(), kernel.quarantine.watches());
        ensure!(kernel.exited_spaces.is_empty(), "the ended process's address space outlived the release");

        // The released frames may be in use again (the new server allocates after its release);
        // the blocked device's writes leave every free frame's canary.
        let canaries = Canaries::fill_all_free_memory()?;
        device_writes(kernel, &config, &device, sva::SOURCE_VA)?;
        device_writes(kernel, &config, &device, sva::DESTINATION_VA)?;
        let damaged = canaries.first_damaged();
        drop(canaries);
        ensure!(damaged.is_none(), "the device wrote free frame {:#x} after the takeover", damaged.unwrap_or(0));
        ensure!(!kernel.has_exited(successor.pid), "the new server died: {:?}", kernel.take_exit(successor.pid));
        crate::println!(
            "quarantine: the killed server's SVA watch held the bound process's unmapped page and its ended address space ({} pages with the server's {objects_only}); the device still reached the process's page through the old binding and no canary changed; the new server released {quarantined} pages after blocking every device",
            quarantined - objects_only
        );
        Ok(())
    })
}
