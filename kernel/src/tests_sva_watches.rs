//! Several watches of one address space (SVA: one per device binding it), played by the kernel
//! on behalf of processes it never starts, so no IOMMU is needed. Each watch gets every change
//! and acknowledges on its own; an unmapped page's memory returns only with the last
//! acknowledgement; a watch over the limit is refused; a downgrade is done once every watch
//! acknowledged it, a watch its living watcher releases counts as acknowledged, and one whose
//! watcher ends makes the downgrade unconfirmed (PeerGone). A process calling `mem_protect`
//! waits in the kernel until then, and gets the outcome.

use crate::arch;
use crate::ensure;
use crate::ktest::{Test, TestResult};
use crate::object::{MemoryObject, Object};
use crate::process::{ExitReason, Kernel, Pid, ThreadState};
use crate::tests_iommu::iommu_tests::{err, exit_of, give_report_page, run_until, with_kernel};
use crate::user_images::{EDU_DRIVER, USERTEST};
use edu_contract::{scenario, sva_protect};
use alloc::format;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use kernel_abi::{Error, Rights, ADDRESS_SPACE_CHANGE, MAX_ADDRESS_SPACE_WATCHES};

pub const TESTS: &[Test] = &[
    Test { name: "sva::watches_acknowledge_separately", run: watches_acknowledge_separately },
    Test { name: "sva::downgrade_waits_for_every_watch", run: downgrade_waits_for_every_watch },
    Test { name: "sva::mem_protect_caller_waits_for_the_watcher", run: mem_protect_caller_waits },
];

const PAGES_VA: u64 = 0x5000_0000;
const PAGE: u64 = arch::PAGE_SIZE;
const SPACE_SLOT: u64 = 60;
const MEMORY_SLOT: u64 = 61;

/// A process (not started) with `pages` writable pages of one memory object at `PAGES_VA`.
fn watched_process(kernel: &mut Kernel, pages: u64) -> Result<(Pid, Rc<MemoryObject>), String> {
    let pid = kernel.create_process("watched", USERTEST, 0, 64).map_err(err("create the watched process"))?;
    let quota = kernel.processes[pid].quota.clone();
    let object = MemoryObject::allocate(pages, &quota).ok_or("no memory")?;
    kernel.install(pid, MEMORY_SLOT, Object::Memory(object.clone()), Rights::READ.union(Rights::WRITE), 0).map_err(err("memory capability"))?;
    let process = kernel.processes.get_mut(pid).expect("created above");
    let via = process.cspace.get(MEMORY_SLOT).map_err(err("memory capability"))?.clone();
    let flags = arch::MapFlags { writable: true, executable: false, device: false };
    for page in 0..pages {
        process.map_page(PAGES_VA + page * PAGE, object.frames[page as usize], flags, &via).map_err(err("map"))?;
    }
    Ok((pid, object))
}

/// A watcher process (not started) holding a watch of `watched`'s address space: its pid and
/// pin.
fn watcher(kernel: &mut Kernel, watched: Pid) -> Result<(Pid, Result<u64, Error>), String> {
    let pid = kernel.create_process("watcher", USERTEST, 0, 16).map_err(err("create a watcher"))?;
    kernel.install(pid, SPACE_SLOT, Object::AddressSpace(watched), Rights::CONTROL, 0).map_err(err("address-space capability"))?;
    let cap = kernel.processes[pid].cspace.get(SPACE_SLOT).map_err(err("address-space capability"))?.clone();
    Ok((pid, crate::sva::address_space_watch(kernel, pid, &cap).map(|[pin, ..]| pin)))
}

/// What `watcher` reads (`revocation_read`'s address-space half): its records, now awaiting
/// its acknowledgement.
fn read_changes(kernel: &mut Kernel, watcher: Pid) -> Vec<[u64; 4]> {
    let changes = kernel.address_space_changes(watcher, 64);
    let read: Vec<(Pid, u64)> = changes.iter().map(|(pid, record)| (*pid, record[0])).collect();
    kernel.address_space_changes_read(watcher, &read);
    changes.into_iter().map(|(_, record)| record).collect()
}

fn watches_acknowledge_separately() -> TestResult {
    with_kernel(|kernel| {
        let (watched, object) = watched_process(kernel, 2)?;
        let mut watches = Vec::new();
        for _ in 0..MAX_ADDRESS_SPACE_WATCHES {
            let (pid, pin) = watcher(kernel, watched)?;
            watches.push((pid, pin.map_err(err("a watch within the limit"))?));
        }
        let (_, over) = watcher(kernel, watched)?;
        ensure!(over == Err(Error::InvalidState), "a watch over the limit of {MAX_ADDRESS_SPACE_WATCHES}: {over:?}");

        // The process unmaps its second page and drops its capability: the object lives on in
        // what the watches hold.
        let weak = Rc::downgrade(&object);
        drop(object);
        let object = weak;
        kernel.delete_cap(watched, MEMORY_SLOT).map_err(err("delete the memory capability"))?;
        kernel.processes.get_mut(watched).expect("alive").unmap_page(PAGES_VA + PAGE);
        kernel.notify_address_space_watcher(watched);
        kernel.processes.get_mut(watched).expect("alive").unmap_page(PAGES_VA);
        ensure!(object.strong_count() > 0, "the unmapped memory went back before any watch acknowledged");
        let first_page = PAGES_VA / PAGE;
        for (index, &(pid, pin)) in watches.iter().enumerate() {
            let records = read_changes(kernel, pid);
            ensure!(records == [[pin, ADDRESS_SPACE_CHANGE, first_page, 2]], "watch {index} read {records:?}");
            ensure!(object.strong_count() > 0, "the memory went back after {index} acknowledgements of {}", watches.len());
            kernel.address_space_ack(pid, pin).map_err(err("address_space_ack"))?;
            ensure!(read_changes(kernel, pid).is_empty(), "watch {index} read its records twice");
        }
        ensure!(object.strong_count() == 0, "the memory stayed held after every watch acknowledged");
        // A fifth watch fits once one ended.
        let (first, pin) = watches[0];
        kernel.unpin(first, pin).map_err(err("release a watch"))?;
        let (_, again) = watcher(kernel, watched)?;
        ensure!(again.is_ok(), "a watch after one ended: {again:?}");
        kernel.kill(watched, ExitReason::Killed);
        ensure!(kernel.exited_spaces.len() == MAX_ADDRESS_SPACE_WATCHES, "{} watches hold the ended process, expected {MAX_ADDRESS_SPACE_WATCHES}", kernel.exited_spaces.len());
        Ok(())
    })
}

fn downgrade_waits_for_every_watch() -> TestResult {
    with_kernel(|kernel| {
        let (watched, _object) = watched_process(kernel, 2)?;
        let read_only = arch::MapFlags { writable: false, executable: false, device: false };
        let (a, pin_a) = watcher(kernel, watched)?;
        let (b, pin_b) = watcher(kernel, watched)?;
        let (pin_a, pin_b) = (pin_a.map_err(err("watch"))?, pin_b.map_err(err("watch"))?);

        // Acknowledged by one watch, released by the other's living watcher: done.
        let downgrade = kernel.protect(watched, PAGES_VA, 1, read_only).map_err(err("protect"))?.ok_or("nothing to wait for")?;
        ensure!(read_changes(kernel, a) == [[pin_a, ADDRESS_SPACE_CHANGE, PAGES_VA / PAGE, 1]], "watch A did not read the downgrade");
        kernel.address_space_ack(a, pin_a).map_err(err("ack"))?;
        ensure!(downgrade.outcome().is_none(), "done before watch B acknowledged");
        kernel.unpin(b, pin_b).map_err(err("release watch B"))?;
        ensure!(downgrade.outcome() == Some(Ok(())), "released by its living watcher: {:?}", downgrade.outcome());
        // A page that is read-only already changes nothing: nothing to wait for.
        let again = kernel.protect(watched, PAGES_VA, 1, read_only).map_err(err("protect"))?;
        ensure!(again.is_none(), "a downgrade that took nothing away waits");

        // The other watch's watcher ends before acknowledging: not confirmed.
        let (c, pin_c) = watcher(kernel, watched)?;
        pin_c.map_err(err("watch"))?;
        let downgrade = kernel.protect(watched, PAGES_VA + PAGE, 1, read_only).map_err(err("protect"))?.ok_or("nothing to wait for")?;
        read_changes(kernel, a);
        kernel.address_space_ack(a, pin_a).map_err(err("ack"))?;
        ensure!(downgrade.outcome().is_none(), "done before watch C answered");
        kernel.kill(c, ExitReason::Killed);
        let outcome = downgrade.outcome();
        ensure!(outcome == Some(Err(Error::PeerGone)), "{}", format!("a watch ended with its watcher unacknowledged: {outcome:?}"));
        kernel.kill(watched, ExitReason::Killed);
        Ok(())
    })
}

/// The edu driver's SVA_PROTECT_WAITS run while its address space is watched: started, it
/// downgrades its report page and waits; it returns 0 after the acknowledgement, and
/// `UNCONFIRMED` when the watcher ends instead.
fn mem_protect_caller_waits() -> TestResult {
    with_kernel(|kernel| {
        for watcher_ends in [false, true] {
            let pid = kernel.create_process("protector", EDU_DRIVER, scenario::SVA_PROTECT_WAITS, 64).map_err(err("create the process"))?;
            let _report = give_report_page(kernel, pid)?;
            let (watcher_pid, pin) = watcher(kernel, pid)?;
            let pin = pin.map_err(err("watch"))?;
            kernel.start_process(pid).map_err(err("start"))?;
            let tid = kernel.processes[pid].threads[0];
            let waits = |k: &Kernel| matches!(k.threads.get(tid).map(|t| &t.state), Some(ThreadState::Waiting { .. }));
            run_until(kernel, "mem_protect to wait", |k| waits(k) || k.has_exited(pid))?;
            ensure!(!kernel.has_exited(pid), "mem_protect returned before the watcher answered: {:?}", exit_of(kernel, pid));
            let writable = kernel.processes[pid].space.translate(sva_protect::OWN_PAGE_VA).map(|(_, flags)| flags.writable);
            ensure!(writable == Some(false), "the waiting caller's page is still writable for the CPU: {writable:?}");
            let records = read_changes(kernel, watcher_pid);
            ensure!(records == [[pin, ADDRESS_SPACE_CHANGE, sva_protect::OWN_PAGE_VA / PAGE, 1]], "the watcher read {records:?}");
            ensure!(waits(kernel), "the caller ran on when the watcher read the record");
            let expected = if watcher_ends {
                kernel.kill(watcher_pid, ExitReason::Killed);
                ExitReason::Exited(sva_protect::UNCONFIRMED)
            } else {
                kernel.address_space_ack(watcher_pid, pin).map_err(err("ack"))?;
                ExitReason::Exited(0)
            };
            run_until(kernel, "the caller to end", |k| k.has_exited(pid))?;
            let exit = exit_of(kernel, pid);
            ensure!(exit == Some(expected), "{}", format!("watcher ended: {watcher_ends}: the caller ended with {exit:?}, expected {expected:?}"));
        }
        Ok(())
    })
}
