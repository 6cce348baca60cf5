//! Shared virtual addressing on the emulated IOMMUs (VT-d with first-stage translation, SMMUv3):
//! a driver binds another process's address space to its edu device and the device works at
//! that process's virtual addresses, through the process's own page tables (edu scenario
//! `SVA_BOUND_PROCESS`). The test plays the root task and the bound process, which it creates
//! but never starts: it maps the process's pages and unmaps one, checks every byte through the
//! process's own translation, reuses the unmapped frame only once the kernel released it (after
//! the server's invalidation and acknowledgement) and ends the process.

use crate::ktest::{Test, TestResult};
use crate::mm;
use crate::object::{MemoryObject, Object};
use crate::process::{ExitReason, Kernel, Pid};
use crate::tests_iommu::iommu_tests::{
    direct, discovery_agrees, EduDevice, ServerUnderTest, err, exit_of, give_report_page, page_word, run_until, server_and_driver, skip_without_iommu, with_kernel,
};
use crate::user_images::USERTEST;
use crate::{arch, ensure};
use alloc::format;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use edu_contract::{report, scenario, sva};
use iommu_server_contract::status;
use kernel_abi::Rights;

/// The benchmark runs the same scenario: its figure is the time from the process's unmap to
/// the server's acknowledgement after the IOMMU invalidation (`scripts/bench.sh`).
pub const TESTS: &[Test] = &[
    Test { name: "sva::bound_process_reached_unmapped_and_ended", run: bound_process },
    Test { name: "bench::sva_unmap_to_invalidation", run: bound_process },
];

/// Quota of the bound process: its image, stack and the pages the test maps.
const BOUND_QUOTA: u64 = 256;
/// Slots of the bound process's memory capabilities (source, destination, marker).
pub(crate) const FIRST_MEMORY_SLOT: u64 = 100;
pub(crate) const SOURCE_BYTE: u8 = 0x3c;
const CANARY: u8 = 0xc5;

/// The server's mode codes of units whose domains cannot be process tables: VT-d legacy and
/// scalable second-level (SVA needs first-level translation).
#[cfg(target_arch = "x86_64")]
pub(crate) const MODES_WITHOUT_SVA: [u64; 2] = [1, 2];
#[cfg(target_arch = "aarch64")]
pub(crate) const MODES_WITHOUT_SVA: [u64; 0] = [];

pub(crate) fn frame_bytes(phys: u64) -> &'static [u8] {
    // SAFETY: a page of RAM in the direct map; the test reads it while the memory object or the
    // test itself keeps the frame alive.
    unsafe { core::slice::from_raw_parts(direct::<u8>(phys), 4096) }
}

/// The frame the bound process maps at `va`: the process's own translation.
pub(crate) fn translate(kernel: &Kernel, pid: Pid, va: u64) -> Result<u64, String> {
    let process = kernel.processes.get(pid).ok_or("the bound process is gone")?;
    process.space.translate(va).map(|(phys, _)| phys).ok_or_else(|| format!("the bound process maps nothing at {va:#x}"))
}

/// Creates the bound process (not started) with one-page memory objects at the source,
/// destination and marker addresses; returns its pid and the objects.
pub(crate) fn bound_process_with_pages(kernel: &mut Kernel) -> Result<(Pid, Vec<Rc<MemoryObject>>), String> {
    let pid = kernel.create_process("bound", USERTEST, 0, BOUND_QUOTA).map_err(err("create the bound process"))?;
    let quota = kernel.processes[pid].quota.clone();
    let flags = arch::MapFlags { writable: true, executable: false, device: false };
    let mut objects = Vec::new();
    for (index, (va, byte)) in [(sva::SOURCE_VA, SOURCE_BYTE), (sva::DESTINATION_VA, 0), (sva::MARKER_VA, sva::MARKER_BYTE)].into_iter().enumerate() {
        let object = MemoryObject::allocate(1, &quota).ok_or("no memory for the bound process")?;
        // SAFETY: the object's only frame, through the direct map; nothing maps it yet.
        unsafe { core::ptr::write_bytes(direct::<u8>(object.frames[0]), byte, 4096) };
        let slot = FIRST_MEMORY_SLOT + index as u64;
        kernel.install(pid, slot, Object::Memory(object.clone()), Rights::READ.union(Rights::WRITE), 0).map_err(err("memory capability"))?;
        let process = kernel.processes.get_mut(pid).expect("created above");
        let via = process.cspace.get(slot).map_err(err("memory capability"))?.clone();
        process.map_page(va, object.frames[0], flags, &via).map_err(err("map a page of the bound process"))?;
        objects.push(object);
    }
    Ok((pid, objects))
}

/// Claims frames from the pool until `frame` comes back (then fills it with canaries and keeps
/// it) or `tries` frames went by; the others go back.
fn claim(frame: u64, tries: usize) -> Result<Option<u64>, String> {
    let mut passed: Vec<u64> = Vec::new();
    let mut found = None;
    while found.is_none() && passed.len() < tries {
        let Some(next) = mm::FRAMES.lock().alloc() else { break };
        if next == frame {
            // SAFETY: a frame this test owns now, through the direct map.
            unsafe { core::ptr::write_bytes(direct::<u8>(next), CANARY, 4096) };
            found = Some(next);
        } else {
            passed.push(next);
        }
    }
    let mut pool = mm::FRAMES.lock();
    passed.into_iter().for_each(|f| pool.free(f));
    Ok(found)
}

/// What the SVA scenarios start from: a server, an edu driver (not started) running its
/// scenario with a report page, and a bound process with its pages whose address-space
/// capability the driver holds.
pub(crate) struct SvaRig {
    pub server: ServerUnderTest,
    pub driver_pid: Pid,
    pub device: EduDevice,
    pub report_page: Rc<MemoryObject>,
    pub bound: Pid,
    pub objects: Vec<Rc<MemoryObject>>,
}

/// The rig for edu `scenario`; `None`, the test reported skipped, where there is no IOMMU or
/// the unit walks no process tables.
pub(crate) fn sva_rig(kernel: &mut Kernel, scenario: u64) -> Result<Option<SvaRig>, String> {
    let (server, driver_pid, device) = server_and_driver(kernel, 0, scenario, &[1])?;
    if !discovery_agrees(&server)? {
        skip_without_iommu();
        return Ok(None);
    }
    if MODES_WITHOUT_SVA.contains(&server.word(status::UNIT0_MODE)) {
        crate::ktest::skip(String::from("the unit translates second-level tables only: no process tables (SVA is model-tested there)"));
        return Ok(None);
    }
    let report_page = give_report_page(kernel, driver_pid)?;
    let (bound, objects) = bound_process_with_pages(kernel)?;
    let rights = Rights::CONTROL.union(Rights::GRANT).union(Rights::DERIVE);
    kernel.install(driver_pid, sva::ADDRESS_SPACE_SLOT, Object::AddressSpace(bound), rights, 0).map_err(err("address-space capability"))?;
    Ok(Some(SvaRig { server, driver_pid, device, report_page, bound, objects }))
}

fn bound_process() -> TestResult {
    with_kernel(|kernel| {
        let Some(SvaRig { server, driver_pid, device, report_page, bound, mut objects }) = sva_rig(kernel, scenario::SVA_BOUND_PROCESS)? else { return Ok(()) };
        kernel.start_process(driver_pid).map_err(err("start driver"))?;
        let phase = |k: &Kernel, want: u64| page_word(&report_page, report::PHASE) == want || k.has_exited(driver_pid);
        run_until(kernel, "the copy between the bound process's pages", |k| phase(k, sva::COPIED))?;
        ensure!(!kernel.has_exited(driver_pid), "driver ended early: {:?}", kernel.take_exit(driver_pid));
        let (source, destination) = (translate(kernel, bound, sva::SOURCE_VA)?, translate(kernel, bound, sva::DESTINATION_VA)?);
        ensure!(frame_bytes(destination).iter().all(|&b| b == SOURCE_BYTE), "the device's copy did not reach the process's destination page intact");
        ensure!(frame_bytes(source).iter().all(|&b| b == SOURCE_BYTE), "the source page changed");

        // The process unmaps the destination (its capability goes with the mapping): the frame
        // must stay out of the pool until the server invalidated and acknowledged.
        drop(objects.remove(1));
        kernel.delete_cap(bound, FIRST_MEMORY_SLOT + 1).map_err(err("unmap the destination"))?;
        ensure!(claim(destination, 4096)?.is_none(), "the unmapped frame was free before the IOMMU was invalidated");
        // Nothing else ran since the unmap: the kernel runs one thing at a time.
        let unmapped_at = arch::instruction_counter();
        let holds = |k: &Kernel| k.processes.get(bound).and_then(|p| p.sva.first()).is_some_and(|watch| watch.holds_frames());
        run_until(kernel, "the server to acknowledge the unmap", |k| !holds(k) || k.has_exited(server.pid))?;
        let invalidated_in = arch::instruction_counter() - unmapped_at;
        crate::println!("bench: sva: a bound process's unmap to the IOMMU invalidation done {invalidated_in} guest instructions");
        let claimed = claim(destination, 4096)?.ok_or("the unmapped frame did not come back after the acknowledgement")?;
        let faults = server.word(status::FAULTS);
        // SAFETY: word COMMAND of the report page, which the driver polls.
        unsafe { core::ptr::write_volatile(direct::<u64>(report_page.frames[0]).add(report::COMMAND), sva::RETRY_DMA) };
        run_until(kernel, "the faults through the binding", |k| phase(k, sva::FAULTED))?;
        ensure!(!kernel.has_exited(driver_pid), "driver ended: {:?}", kernel.take_exit(driver_pid));
        ensure!(server.word(status::FAULTS) >= faults + 2, "the server saw {} faults, expected the unmapped page's and the kernel address's", server.word(status::FAULTS) - faults);
        ensure!(frame_bytes(claimed).iter().all(|&b| b == CANARY), "the device wrote the unmapped frame after it was reused");

        // The process ends: the server blocks the device; the frames the test keeps show whether
        // the device still reached them.
        kernel.kill(bound, ExitReason::Killed);
        ensure!(kernel.exited_spaces.len() == 1, "the ended process's address space was not held for the server");
        run_until(kernel, "the server to release the ended process's address space", |k| k.exited_spaces.is_empty() || k.has_exited(server.pid))?;
        ensure!(!kernel.has_exited(server.pid), "server died: {:?}", kernel.take_exit(server.pid));
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(direct::<u64>(report_page.frames[0]).add(report::COMMAND), sva::PROCESS_ENDED) };
        run_until(kernel, "the driver", |k| k.has_exited(driver_pid))?;
        let exit = exit_of(kernel, driver_pid);
        ensure!(exit == Some(ExitReason::Exited(0)), "driver ended with {exit:?}");
        ensure!(frame_bytes(objects[0].frames[0]).iter().all(|&b| b == SOURCE_BYTE), "the device wrote the ended process's page");
        mm::FRAMES.lock().free(claimed);
        crate::println!(
            "sva: the edu device {:#x} copied in a bound process's address space; its unmapped page faulted and its frame was reused only after the invalidation; a kernel address faulted; the process's end blocked the device",
            device.rid
        );
        Ok(())
    })
}

