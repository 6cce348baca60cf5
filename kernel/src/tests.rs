//! The kernel's own tests (run with `test=<filter>` on the command line).

use crate::arch::{self, MapFlags, Trap};
use crate::ktest::{Test, TestResult};
use crate::process::{ExitReason, Kernel};
use crate::user_images::{IMAGES, USERTEST};
use crate::object::Object;
use crate::{ensure, mm};
use kernel_abi::Rights;

/// Scenario numbers and slots of user/usertest.
use usertest_contract as scenario;
use scenario::ENDPOINT_SLOT;

fn new_endpoint() -> Object {
    Object::Endpoint(alloc::rc::Rc::new(core::cell::RefCell::new(crate::object::Endpoint::default())))
}

/// Creates a usertest process with the endpoint in its slot 1, and starts it.
fn start_with_endpoint(kernel: &mut Kernel, arg: u64, ep: &Object, rights: Rights, badge: u64) -> Result<crate::process::Pid, alloc::string::String> {
    let pid = kernel.create_process("usertest", USERTEST, arg, TEST_QUOTA).map_err(|e| alloc::format!("{e:?}"))?;
    kernel.install(pid, ENDPOINT_SLOT, ep.clone(), rights, badge).map_err(|e| alloc::format!("{e:?}"))?;
    kernel.start_process(pid).map_err(|e| alloc::format!("{e:?}"))?;
    Ok(pid)
}

fn client_rights() -> Rights {
    Rights::WRITE.union(Rights::GRANT)
}

fn ipc_server_serves_clients() -> TestResult {
    server_with_clients(scenario::IPC_SERVER, scenario::IPC_CLIENT, 3)
}

/// `reply_lend` between processes (scenarios LENDER, BORROWER): refused with no caller, into
/// an occupied slot and without GRANT, each refusal answered; lent copies work and go with
/// their holders' deletes; the server serves throughout, and nothing leaks.
fn ipc_reply_lends_capability() -> TestResult {
    server_with_clients(scenario::LENDER, scenario::BORROWER, 2)
}

/// Runs a server scenario and `clients` client scenarios (badges 1.., also in the start
/// argument's second byte) on one endpoint: every client must exit with 0, the server must
/// still run, and no frame may leak once the kernel state is gone.
fn server_with_clients(server_scenario: u64, client_scenario: u64, clients: u64) -> TestResult {
    let before = mm::FRAMES.lock().free_frames();
    {
        let mut kernel = Kernel::new(IMAGES);
        let ep = new_endpoint();
        let server = start_with_endpoint(&mut kernel, server_scenario, &ep, Rights::READ, 0)?;
        let mut pids = alloc::vec::Vec::new();
        for badge in 1..=clients {
            pids.push(start_with_endpoint(&mut kernel, client_scenario | badge << 8, &ep, client_rights(), badge)?);
        }
        kernel.run_until_exited(&pids);
        for c in pids {
            let reason = kernel.take_exit(c);
            ensure!(reason == Some(ExitReason::Exited(0)), "client {c} ended with {reason:?}");
        }
        ensure!(!kernel.has_exited(server), "server ended with {:?}", kernel.take_exit(server));
    }
    let after = mm::FRAMES.lock().free_frames();
    ensure!(after == before, "leaked {} frames", before as i64 - after as i64);
    Ok(())
}

/// Threads of one process calling each other at different priorities (see the scenario): the
/// thread a call or a reply wakes runs at once unless a higher-priority thread is ready; calls
/// queue with their capabilities before the server waits. The process ends with a call and its
/// capability still queued: nothing may remain of either.
fn ipc_switches_by_priority_and_queues_calls() -> TestResult {
    let before = mm::FRAMES.lock().free_frames();
    {
        let mut kernel = Kernel::new(IMAGES);
        let pid = kernel.spawn("ipc-scheduling", USERTEST, scenario::IPC_SCHEDULING, TEST_QUOTA).map_err(|e| alloc::format!("{e:?}"))?;
        kernel.run_until_exited(&[pid]);
        let r = kernel.take_exit(pid);
        ensure!(r == Some(ExitReason::Exited(0)), "scenario ended with {r:?}");
        ensure!(kernel.tree.len() == 0, "derivation tree still holds {} capabilities after the process ended", kernel.tree.len());
    }
    let after = mm::FRAMES.lock().free_frames();
    ensure!(after == before, "leaked {} frames", before as i64 - after as i64);
    Ok(())
}

/// Two servers wait on one endpoint; the one that waited last, which takes the next call, is
/// killed while it waits. The call goes to the other: nothing of the killed one stays queued.
fn ipc_waiting_receiver_leaves_with_its_process() -> TestResult {
    let mut kernel = Kernel::new(IMAGES);
    let ep = new_endpoint();
    let first = start_with_endpoint(&mut kernel, scenario::IPC_SERVER, &ep, Rights::READ, 0)?;
    let last = start_with_endpoint(&mut kernel, scenario::IPC_SERVER, &ep, Rights::READ, 0)?;
    // Both run, in start order, until they wait.
    while kernel.run_queue.highest().is_some() {
        kernel.run_once();
    }
    kernel.kill(last, ExitReason::Killed);
    let client = start_with_endpoint(&mut kernel, scenario::IPC_CLIENT | 1 << 8, &ep, client_rights(), 1)?;
    kernel.run_until_exited(&[client]);
    let r = kernel.take_exit(client);
    ensure!(r == Some(ExitReason::Exited(0)), "client ended with {r:?}");
    ensure!(!kernel.has_exited(first), "the remaining server died");
    Ok(())
}

fn revoke_removes_derived_caps_and_mappings() -> TestResult {
    let mut kernel = Kernel::new(IMAGES);
    let ep = new_endpoint();
    let server = start_with_endpoint(&mut kernel, scenario::IPC_SERVER, &ep, Rights::READ, 0)?;
    let revoker = start_with_endpoint(&mut kernel, scenario::REVOKER, &ep, client_rights(), 9)?;
    kernel.run_until_exited(&[revoker, server]);
    let r = kernel.take_exit(revoker);
    ensure!(r == Some(ExitReason::Exited(0)), "revoker ended with {r:?}");
    let s = kernel.take_exit(server);
    ensure!(
        matches!(s, Some(ExitReason::Faulted(Trap::PageFault { addr: 0x1000_0000, write: false, .. }))),
        "server should have faulted on the revoked mapping, ended with {s:?}"
    );
    ensure!(kernel.tree.len() == 0, "derivation tree still holds {} capabilities after both processes ended", kernel.tree.len());
    Ok(())
}

/// Acts as the root task for a user-level edu driver: gives it the PCI configuration space, the
/// PCI MMIO window, a notification and the interrupt lines, and expects it to receive and
/// acknowledge the device's interrupt twice.
fn edu_interrupt_reaches_user_driver() -> TestResult {
    let r = run_edu_scenario(scenario::EDU_IRQ)?;
    ensure!(r == ExitReason::Exited(0), "edu driver ended with {r:?}");
    Ok(())
}

/// Runs an edu `scenario` with the capabilities a driver of the device gets (see above).
fn run_edu_scenario(scenario: u64) -> Result<ExitReason, alloc::string::String> {
    let caps = crate::platform::boot_caps(crate::boot_info());
    let find = |name: &'static str| caps.iter().filter(move |c| c.name == name);
    let mut kernel = Kernel::new(IMAGES);
    let pid = kernel.create_process("edu-irq", USERTEST, scenario, TEST_QUOTA).map_err(|e| alloc::format!("{e:?}"))?;
    let install = |kernel: &mut Kernel, slot: u64, cap: &crate::platform::BootCap| {
        kernel.install(pid, slot, cap.object.clone(), cap.rights, 0).map(|_| ()).map_err(|e| alloc::format!("{e:?}"))
    };
    install(&mut kernel, 1, find("ecam").next().ok_or("no ECAM capability")?)?;
    install(&mut kernel, 2, find("pci-mmio").next().ok_or("no PCI MMIO capability")?)?;
    let notification = Object::Notification(alloc::rc::Rc::new(core::cell::RefCell::new(Default::default())));
    kernel.install(pid, 3, notification, Rights::all(), 0).map_err(|e| alloc::format!("{e:?}"))?;
    // MSIs where the machine has them (x86 always; arm with virt's GICv2m frame).
    let lines = if find("msi").next().is_some() { "msi" } else { "pci-intx" };
    for (i, cap) in find(lines).take(4).enumerate() {
        install(&mut kernel, 4 + i as u64, cap)?;
    }
    kernel.start_process(pid).map_err(|e| alloc::format!("{e:?}"))?;
    kernel.run_until_exited(&[pid]);
    kernel.take_exit(pid).ok_or_else(|| "no exit recorded".into())
}

/// x86: an interrupt on an exception vector (0-31) is counted as spurious, whether a self-IPI
/// raises it while the kernel idles or a device's MSI while a user thread runs; neither stops
/// the machine or kills the thread, and a real page fault still kills its process.
#[cfg(target_arch = "x86_64")]
fn exception_vectors_from_devices_are_spurious() -> TestResult {
    // Error-code vectors (8, 13, 14, 17, 30: the frame differs) and others (2, 6, 18).
    const SELF_SENT: [u8; 8] = [14, 13, 8, 17, 30, 2, 6, 18];
    let before = arch::interrupts_on_exception_vectors();
    for vector in SELF_SENT {
        arch::send_self_interrupt(vector);
    }
    // The interrupts are pending until the idle loop enables interrupts; a tick ends it.
    for _ in 0..3 {
        arch::wait_for_interrupt();
    }
    let counted = arch::interrupts_on_exception_vectors() - before;
    ensure!(counted == SELF_SENT.len() as u64, "{counted} of {} self-sent interrupts on exception vectors counted", SELF_SENT.len());
    let before = arch::interrupts_on_exception_vectors();
    let r = run_edu_scenario(scenario::EDU_EXCEPTION_VECTORS)?;
    ensure!(
        matches!(r, ExitReason::Faulted(Trap::PageFault { addr: 0, write: false, .. })),
        "edu scenario ended with {r:?}, expected its page fault at 0"
    );
    let counted = arch::interrupts_on_exception_vectors() - before;
    let raised = scenario::EXCEPTION_VECTORS_RAISED.len() as u64;
    ensure!(counted == raised, "{counted} of the device's {raised} MSIs on exception vectors counted");
    Ok(())
}

#[cfg(target_arch = "x86_64")]
fn io_ports_through_capability() -> TestResult {
    let caps = crate::platform::boot_caps(crate::boot_info());
    let cap = |name: &str| caps.iter().find(|c| c.name == name).ok_or(alloc::format!("no {name} capability"));
    let mut kernel = Kernel::new(IMAGES);
    let pid = kernel.create_process("ioports", USERTEST, scenario::IO_PORTS, TEST_QUOTA).map_err(|e| alloc::format!("{e:?}"))?;
    for (slot, name) in [(scenario::IO_PORTS_SLOT, "pci-config-ports"), (scenario::IO_PORTS_ECAM_SLOT, "ecam")] {
        let c = cap(name)?;
        kernel.install(pid, slot, c.object.clone(), c.rights, 0).map_err(|e| alloc::format!("{e:?}"))?;
    }
    kernel.start_process(pid).map_err(|e| alloc::format!("{e:?}"))?;
    kernel.run_until_exited(&[pid]);
    let r = kernel.take_exit(pid);
    ensure!(r == Some(ExitReason::Exited(0)), "scenario ended with {r:?}");
    Ok(())
}

fn mem_pins_and_queries() -> TestResult {
    let before = mm::FRAMES.lock().free_frames();
    {
        let mut kernel = Kernel::new(IMAGES);
        let pid = kernel.create_process("mem", USERTEST, scenario::MEM_QUERIES, TEST_QUOTA).map_err(|e| alloc::format!("{e:?}"))?;
        kernel.install(pid, scenario::AUTHORITY_SLOT, Object::DmaAuthority, Rights::all(), 0).map_err(|e| alloc::format!("{e:?}"))?;
        kernel.start_process(pid).map_err(|e| alloc::format!("{e:?}"))?;
        kernel.run_until_exited(&[pid]);
        let r = kernel.take_exit(pid);
        ensure!(r == Some(ExitReason::Exited(0)), "scenario ended with {r:?}");
    }
    let after = mm::FRAMES.lock().free_frames();
    ensure!(after == before, "leaked {} frames", before as i64 - after as i64);
    Ok(())
}

/// Revocation reaches pins (issue 13): a pin taken by a "server" through a copy of a
/// "client's" memory capability is lent through the client's capability. Revoking that
/// capability (by the client, or by the grantor above it), deleting it or ending the client
/// revokes the pin: one record per pin, a signal on the server's watch, and the frames stay
/// held until the server unpins. A pin nobody lent is never revoked; the server deleting its
/// own copy revokes nothing.
fn pins_revoked_with_their_lender() -> TestResult {
    use crate::cap::Capability;
    use crate::object::{MemoryObject, Notification};
    use crate::process::Pid;
    use alloc::format;
    use alloc::rc::Rc;
    use core::cell::RefCell;
    const GRANTED: u64 = 10;
    const CLIENT: u64 = 11;
    const SENT: u64 = 12;
    const OWN: u64 = 13;
    let before = mm::FRAMES.lock().free_frames();
    {
        let mut kernel = Kernel::new(IMAGES);
        let mut spawn = |name| kernel.create_process(name, USERTEST, 0, TEST_QUOTA).map_err(|e| format!("{e:?}"));
        let (root, client, server) = (spawn("root")?, spawn("client")?, spawn("server")?);
        let watch = Rc::new(RefCell::new(Notification::default()));
        kernel.processes.get_mut(server).expect("created").revocation_watch = Some((watch.clone(), 3));
        let cap_in = |kernel: &Kernel, pid: Pid, slot: u64| -> Result<Capability, alloc::string::String> {
            kernel.processes[pid].cspace.get(slot).cloned().map_err(|e| format!("{e:?}"))
        };
        // The root task grants memory to the client, which sends the server a derived copy.
        let lend = |kernel: &mut Kernel| -> Result<(u64, Rc<MemoryObject>), alloc::string::String> {
            let quota = kernel.processes[root].quota.clone();
            let memory = MemoryObject::allocate(2, &quota).ok_or("no memory")?;
            let id = kernel.install(root, GRANTED, Object::Memory(memory.clone()), Rights::all(), 0).map_err(|e| format!("{e:?}"))?;
            let granted = cap_in(kernel, root, GRANTED)?;
            kernel.install_derived(client, CLIENT, &granted, Rights::all(), 0).map_err(|e| format!("{e:?}"))?;
            let lender = cap_in(kernel, client, CLIENT)?;
            kernel.install_derived(server, SENT, &lender, Rights::all(), 0).map_err(|e| format!("{e:?}"))?;
            let sent = cap_in(kernel, server, SENT)?;
            let pin = kernel.pin(server, &sent, Some(memory.clone()), 0, 2).map_err(|e| format!("{e:?}"))?;
            ensure!(kernel.processes[server].pins[&pin].lender == Some(lender.id), "the pin is lent through the client's capability, not {id}");
            // The server keeps no capability: deleting its copy revokes nothing.
            kernel.delete_cap(server, SENT).map_err(|e| format!("{e:?}"))?;
            ensure!(kernel.processes[server].revoked_pins.is_empty(), "deleting the server's own copy revoked its pin");
            Ok((pin, memory))
        };
        let revoked = |kernel: &mut Kernel, pin: u64| -> TestResult {
            let pending: alloc::vec::Vec<u64> = kernel.processes[server].revoked_pins.iter().copied().collect();
            ensure!(pending == [pin], "pending records {pending:?}, expected exactly pin {pin}");
            let bits = core::mem::take(&mut watch.borrow_mut().bits);
            ensure!(bits == 1 << 3, "watch bits {bits:#x}, expected bit 3");
            ensure!(kernel.processes[server].pins[&pin].lender.is_none(), "a revoked pin still names its lender");
            kernel.processes.get_mut(server).expect("alive").revoked_pins.clear();
            Ok(())
        };
        let free = || mm::FRAMES.lock().free_frames();

        // 1. The client revokes its own capability: the pin is revoked, the client keeps the
        // memory; a second revoke adds no second record.
        let (pin, memory) = lend(&mut kernel)?;
        drop(memory);
        kernel.revoke(client, CLIENT).map_err(|e| format!("{e:?}"))?;
        revoked(&mut kernel, pin)?;
        kernel.revoke(client, CLIENT).map_err(|e| format!("{e:?}"))?;
        ensure!(kernel.processes[server].revoked_pins.is_empty(), "a pin was revoked twice");
        kernel.unpin(server, pin).map_err(|e| format!("{e:?}"))?;
        kernel.delete_cap(client, CLIENT).map_err(|e| format!("{e:?}"))?;
        ensure!(watch.borrow().bits == 0, "deleting a lender whose pins are gone signalled");
        kernel.delete_cap(root, GRANTED).map_err(|e| format!("{e:?}"))?;

        // 2. The grantor revokes what it granted: the client's capability goes, and with it the
        // pin; the frames stay held by the pin alone until the server unpins.
        let (pin, memory) = lend(&mut kernel)?;
        drop(memory);
        kernel.revoke(root, GRANTED).map_err(|e| format!("{e:?}"))?;
        kernel.delete_cap(root, GRANTED).map_err(|e| format!("{e:?}"))?;
        revoked(&mut kernel, pin)?;
        let held = free();
        kernel.unpin(server, pin).map_err(|e| format!("{e:?}"))?;
        ensure!(free() == held + 2, "unpinning the last holder freed {} frames, not 2", free() - held);

        // 3. The client deletes its capability.
        let (pin, memory) = lend(&mut kernel)?;
        drop(memory);
        kernel.delete_cap(root, GRANTED).map_err(|e| format!("{e:?}"))?;
        ensure!(kernel.processes[server].revoked_pins.is_empty(), "the grantor deleting its own capability revoked the client's lending");
        kernel.delete_cap(client, CLIENT).map_err(|e| format!("{e:?}"))?;
        revoked(&mut kernel, pin)?;
        kernel.unpin(server, pin).map_err(|e| format!("{e:?}"))?;

        // 4. The client ends.
        let (pin, memory) = lend(&mut kernel)?;
        drop(memory);
        kernel.delete_cap(root, GRANTED).map_err(|e| format!("{e:?}"))?;
        kernel.kill(client, ExitReason::Killed);
        revoked(&mut kernel, pin)?;
        kernel.unpin(server, pin).map_err(|e| format!("{e:?}"))?;

        // 5. Memory the server allocated itself is lent by nobody: never revoked.
        let quota = kernel.processes[server].quota.clone();
        let own = MemoryObject::allocate(1, &quota).ok_or("no memory")?;
        kernel.install(server, OWN, Object::Memory(own.clone()), Rights::all(), 0).map_err(|e| format!("{e:?}"))?;
        let own_cap = cap_in(&kernel, server, OWN)?;
        let pin = kernel.pin(server, &own_cap, Some(own), 0, 1).map_err(|e| format!("{e:?}"))?;
        ensure!(kernel.processes[server].pins[&pin].lender.is_none(), "the server's own memory has a lender");
        kernel.revoke(server, OWN).map_err(|e| format!("{e:?}"))?;
        kernel.delete_cap(server, OWN).map_err(|e| format!("{e:?}"))?;
        ensure!(kernel.processes[server].revoked_pins.is_empty(), "the server's own memory was revoked");
    }
    let after = mm::FRAMES.lock().free_frames();
    ensure!(after == before, "leaked {} frames", before as i64 - after as i64);
    Ok(())
}

/// Endpoints and notifications cost their creator quota: a process can make exactly as many
/// as its remaining quota pays for, and the pages come back when they go.
fn kernel_objects_charged_to_quota() -> TestResult {
    let before = mm::FRAMES.lock().free_frames();
    {
        let mut kernel = Kernel::new(IMAGES);
        const QUOTA: u64 = 64;
        let pid = kernel.create_process("quota", USERTEST, scenario::KERNEL_OBJECT_QUOTA, QUOTA).map_err(|e| alloc::format!("{e:?}"))?;
        let quota = kernel.processes[pid].quota.clone();
        let affordable = (quota.limit.get() - quota.used.get()) / crate::object::KERNEL_OBJECT_PAGES;
        ensure!(affordable > 0, "the image and stack left no quota");
        kernel.start_process(pid).map_err(|e| alloc::format!("{e:?}"))?;
        kernel.run_until_exited(&[pid]);
        let r = kernel.take_exit(pid);
        let expected = ExitReason::Exited(scenario::KERNEL_OBJECTS_MADE + affordable);
        ensure!(r == Some(expected), "scenario ended with {r:?}, expected {expected:?} (the quota paid for {affordable} objects)");
        ensure!(quota.used.get() == 0, "{} quota pages still charged after the process ended", quota.used.get());
    }
    let after = mm::FRAMES.lock().free_frames();
    ensure!(after == before, "leaked {} frames", before as i64 - after as i64);
    Ok(())
}

/// Page tables and mapping records cost the mapping process quota: mapping one page at address
/// after address ends in OutOfMemory for that process alone (another allocates and maps), and
/// every charge comes back on unmap and at exit, as do the frames.
fn mappings_charged_to_quota() -> TestResult {
    let before = mm::FRAMES.lock().free_frames();
    {
        let mut kernel = Kernel::new(IMAGES);
        const QUOTA: u64 = 256;
        let pid = kernel.create_process("map-many", USERTEST, scenario::MAP_MANY, QUOTA).map_err(|e| alloc::format!("{e:?}"))?;
        let go_on = alloc::rc::Rc::new(core::cell::RefCell::new(crate::object::Notification::default()));
        kernel
            .install(pid, scenario::MAP_MANY_NOTIFICATION_SLOT, Object::Notification(go_on.clone()), Rights::all(), 0)
            .map_err(|e| alloc::format!("{e:?}"))?;
        let quota = kernel.processes[pid].quota.clone();
        kernel.start_process(pid).map_err(|e| alloc::format!("{e:?}"))?;
        // It runs until it waits, its quota spent.
        while kernel.run_queue.highest().is_some() {
            kernel.run_once();
        }
        ensure!(!kernel.has_exited(pid), "the mapper ended with {:?} before it waited", kernel.take_exit(pid));
        // A mapping 1 GiB from the last needs two new tables and a record: less than three pages.
        ensure!(quota.available() < 3, "the mapper was refused with {} quota pages left", quota.available());
        let bystander = kernel.spawn("bystander", USERTEST, scenario::MAP_MANY | 1 << 8, TEST_QUOTA).map_err(|e| alloc::format!("{e:?}"))?;
        kernel.run_until_exited(&[bystander]);
        let r = kernel.take_exit(bystander);
        ensure!(r == Some(ExitReason::Exited(0)), "the bystander ended with {r:?}");
        kernel.signal(&go_on, 1);
        kernel.run_until_exited(&[pid]);
        let r = kernel.take_exit(pid);
        let Some(ExitReason::Exited(code)) = r else { return Err(alloc::format!("the mapper ended with {r:?}")) };
        let made = code.checked_sub(scenario::MAPPINGS_MADE).ok_or(alloc::format!("the mapper exited with {code}"))?;
        // Each mapping costs at least its two tables: unpaid, far more would fit.
        ensure!((QUOTA / 4..=QUOTA / 2).contains(&made), "{made} mappings fit in a quota of {QUOTA} pages");
        ensure!(quota.used.get() == 0, "{} quota pages still charged after the mapper ended", quota.used.get());
    }
    let after = mm::FRAMES.lock().free_frames();
    ensure!(after == before, "leaked {} frames", before as i64 - after as i64);
    Ok(())
}

/// HOSTILE_SYSCALLS with the capabilities its fixed cases need: on x86 the PCI configuration
/// ports, and an MMIO page above 4 GiB.
fn user_hostile_syscalls() -> TestResult {
    let before = mm::FRAMES.lock().free_frames();
    {
        let mut kernel = Kernel::new(IMAGES);
        let pid = kernel.create_process("hostile", USERTEST, scenario::HOSTILE_SYSCALLS, TEST_QUOTA).map_err(|e| alloc::format!("{e:?}"))?;
        #[cfg(target_arch = "x86_64")]
        kernel
            .install(pid, scenario::IO_PORTS_SLOT, Object::IoPorts { base: 0xCF8, count: 8 }, Rights::READ.union(Rights::WRITE), 0)
            .map_err(|e| alloc::format!("{e:?}"))?;
        let high = crate::object::MmioRegion { base: scenario::HIGH_MMIO_BASE, size: arch::PAGE_SIZE };
        let rights = Rights::READ.union(Rights::WRITE).union(Rights::DERIVE);
        kernel.install(pid, scenario::HIGH_MMIO_SLOT, Object::Mmio(alloc::rc::Rc::new(high)), rights, 0).map_err(|e| alloc::format!("{e:?}"))?;
        kernel.start_process(pid).map_err(|e| alloc::format!("{e:?}"))?;
        kernel.run_until_exited(&[pid]);
        let r = kernel.take_exit(pid);
        ensure!(r == Some(ExitReason::Exited(0)), "scenario ended with {r:?}");
    }
    let after = mm::FRAMES.lock().free_frames();
    ensure!(after == before, "leaked {} frames", before as i64 - after as i64);
    Ok(())
}

/// Prints the null-syscall and IPC round-trip costs (meaningful under `-icount shift=0`).
fn ipc_benchmark() -> TestResult {
    let mut kernel = Kernel::new(IMAGES);
    let ep = new_endpoint();
    start_with_endpoint(&mut kernel, scenario::IPC_SERVER, &ep, Rights::READ, 0)?;
    let client = start_with_endpoint(&mut kernel, scenario::BENCH_CLIENT, &ep, client_rights(), 1)?;
    kernel.run_until_exited(&[client]);
    let r = kernel.take_exit(client);
    ensure!(r == Some(ExitReason::Exited(0)), "bench client ended with {r:?}");
    Ok(())
}

/// Memory quota of test processes, in pages.
const TEST_QUOTA: u64 = 1024;

fn run_scenario(arg: u64) -> Result<ExitReason, alloc::string::String> {
    let mut scheduler = Kernel::new(IMAGES);
    let pid = scheduler.spawn("usertest", USERTEST, arg, TEST_QUOTA).map_err(|e| alloc::format!("spawn: {e:?}"))?;
    scheduler.run_until_exited(&[pid]);
    scheduler.take_exit(pid).ok_or_else(|| "no exit recorded".into())
}

fn user_exits_with(arg: u64, code: u64) -> TestResult {
    let reason = run_scenario(arg)?;
    ensure!(reason == ExitReason::Exited(code), "scenario {arg}: {reason:?}, expected exit {code}");
    Ok(())
}

fn user_hello_exit_code() -> TestResult {
    user_exits_with(scenario::HELLO, 42)
}

fn user_killed(arg: u64) -> TestResult {
    let before = mm::FRAMES.lock().free_frames();
    let reason = run_scenario(arg)?;
    let expected = match arg {
        scenario::ILLEGAL_INSTRUCTION => matches!(reason, ExitReason::Faulted(Trap::IllegalInstruction { .. })),
        scenario::NULL_WRITE => matches!(reason, ExitReason::Faulted(Trap::PageFault { addr: 0, write: true, .. })),
        // The write just below the bad stack pointer (x86 `push`, arm `str` with pre-index).
        scenario::BAD_STACK => matches!(reason, ExitReason::Faulted(Trap::PageFault { addr, write: true, .. })
            if (scenario::BAD_STACK_POINTER - 16..scenario::BAD_STACK_POINTER).contains(&addr)),
        _ => matches!(reason, ExitReason::Faulted(Trap::PageFault { write: false, .. })),
    };
    ensure!(expected, "scenario {arg} ended with {reason:?}");
    let after = mm::FRAMES.lock().free_frames();
    ensure!(after == before, "killed process leaked {} frames", before as i64 - after as i64);
    Ok(())
}

fn user_preemption_of_spinner() -> TestResult {
    let mut scheduler = Kernel::new(IMAGES);
    let spinner = scheduler.spawn("spinner", USERTEST, scenario::SPIN, TEST_QUOTA).map_err(|e| alloc::format!("{e:?}"))?;
    let hello = scheduler.spawn("hello", USERTEST, scenario::HELLO, TEST_QUOTA).map_err(|e| alloc::format!("{e:?}"))?;
    // Only the timer can take the CPU away from the spinner.
    scheduler.run_until_exited(&[hello]);
    ensure!(scheduler.take_exit(hello) == Some(ExitReason::Exited(42)), "hello did not finish");
    scheduler.kill(spinner, ExitReason::Killed);
    ensure!(scheduler.take_exit(spinner) == Some(ExitReason::Killed), "spinner not reaped");
    Ok(())
}

fn user_create_destroy_cycles_no_leak() -> TestResult {
    let before = mm::FRAMES.lock().free_frames();
    for _ in 0..20 {
        user_exits_with(scenario::HELLO, 42)?;
        let reason = run_scenario(scenario::NULL_WRITE)?;
        ensure!(matches!(reason, ExitReason::Faulted(_)), "fault scenario survived");
    }
    let after = mm::FRAMES.lock().free_frames();
    ensure!(after == before, "20 cycles leaked {} frames", before as i64 - after as i64);
    Ok(())
}

pub const TESTS: &[Test] = &[
    Test { name: "mm::frames_alloc_free_roundtrip", run: frames_alloc_free_roundtrip },
    Test { name: "mm::heap_alloc_free", run: heap_alloc_free },
    Test { name: "mm::contiguous_objects_aligned_and_returned", run: contiguous_objects_aligned_and_returned },
    Test { name: "paging::user_map_translate_unmap", run: user_map_translate_unmap },
    Test { name: "paging::destroy_reclaims_tables", run: destroy_reclaims_tables },
    Test { name: "timer::ticks", run: timer_ticks },
    Test { name: "firmware::iommus_match_machine", run: iommus_match_machine },
    Test { name: "user::hello_exit_code", run: user_hello_exit_code },
    Test { name: "user::null_write_killed", run: || user_killed(scenario::NULL_WRITE) },
    Test { name: "user::illegal_instruction_killed", run: || user_killed(scenario::ILLEGAL_INSTRUCTION) },
    Test { name: "user::kernel_read_killed", run: || user_killed(scenario::KERNEL_READ) },
    Test { name: "user::bad_stack_pointer_killed", run: || user_killed(scenario::BAD_STACK) },
    Test { name: "user::bad_pointers_refused", run: || user_exits_with(scenario::BAD_POINTERS, 0) },
    Test { name: "user::hostile_syscalls_survived", run: user_hostile_syscalls },
    Test { name: "user::preemption_of_spinner", run: user_preemption_of_spinner },
    Test { name: "sched::strict_priorities_and_thread_creation", run: || user_exits_with(scenario::PRIORITIES, 0) },
    Test { name: "user::create_destroy_cycles_no_leak", run: user_create_destroy_cycles_no_leak },
    Test { name: "ipc::server_serves_clients_with_badges_and_caps", run: ipc_server_serves_clients },
    Test { name: "ipc::switch_by_priority_and_queued_calls", run: ipc_switches_by_priority_and_queues_calls },
    Test { name: "ipc::waiting_receiver_leaves_with_its_process", run: ipc_waiting_receiver_leaves_with_its_process },
    Test { name: "ipc::reply_lends_a_derived_capability", run: ipc_reply_lends_capability },
    Test { name: "cap::revoke_removes_derived_caps_and_mappings", run: revoke_removes_derived_caps_and_mappings },
    Test { name: "irq::edu_interrupt_reaches_user_driver", run: edu_interrupt_reaches_user_driver },
    Test { name: "mem::pins_and_queries", run: mem_pins_and_queries },
    Test { name: "mem::pins_revoked_with_their_lender", run: pins_revoked_with_their_lender },
    Test { name: "mem::kernel_objects_charged_to_quota", run: kernel_objects_charged_to_quota },
    Test { name: "mem::mappings_charged_to_quota", run: mappings_charged_to_quota },
    #[cfg(target_arch = "x86_64")]
    Test { name: "irq::exception_vectors_from_devices_are_spurious", run: exception_vectors_from_devices_are_spurious },
    #[cfg(target_arch = "x86_64")]
    Test { name: "ioport::pci_config_through_port_capability", run: io_ports_through_capability },
    Test { name: "bench::ipc", run: ipc_benchmark },
    Test { name: "selftest::intentional_failure", run: intentional_failure },
    Test { name: "selftest::intentional_hang", run: intentional_hang },
    Test { name: "selftest::intentional_crash", run: intentional_crash },
];

fn frames_alloc_free_roundtrip() -> TestResult {
    let mut frames = mm::FRAMES.lock();
    let before = frames.free_frames();
    let a = frames.alloc().ok_or("no frame")?;
    let b = frames.alloc().ok_or("no frame")?;
    ensure!(a != b && a % 4096 == 0 && b % 4096 == 0, "frames {a:#x} {b:#x} not distinct/aligned");
    // SAFETY: `a` is a frame we own, mapped in the direct map.
    let zeroed = unsafe { core::slice::from_raw_parts(mm::phys_to_virt(a), 4096) }.iter().all(|&x| x == 0);
    ensure!(zeroed, "allocated frame not zeroed");
    ensure!(frames.free_frames() == before - 2, "free count did not drop by 2");
    frames.free(a);
    frames.free(b);
    ensure!(frames.free_frames() == before, "free count not restored");
    Ok(())
}

fn contiguous_objects_aligned_and_returned() -> TestResult {
    let quota = crate::object::QuotaAccount::new(64);
    let before = mm::CONTIGUOUS.lock().free_frames();
    {
        let a = crate::object::MemoryObject::allocate_contiguous(3, &quota).ok_or("no contiguous memory")?;
        let b = crate::object::MemoryObject::allocate_contiguous(16, &quota).ok_or("no contiguous memory")?;
        ensure!(a.frames[0] % (4 * 4096) == 0, "3-page object at {:#x} not 16 KiB aligned", a.frames[0]);
        ensure!(b.frames[0] % (16 * 4096) == 0, "16-page object at {:#x} not 64 KiB aligned", b.frames[0]);
        ensure!(a.frames.windows(2).all(|w| w[1] == w[0] + 4096), "frames not contiguous");
        ensure!(quota.used.get() == 19, "quota charged {}", quota.used.get());
        ensure!(crate::object::MemoryObject::allocate_contiguous(64, &quota).is_none(), "quota not enforced");
    }
    ensure!(quota.used.get() == 0, "quota not released");
    ensure!(mm::CONTIGUOUS.lock().free_frames() == before, "contiguous frames not returned");
    Ok(())
}

fn heap_alloc_free() -> TestResult {
    let before = crate::heap::used_bytes();
    let v: alloc::vec::Vec<u64> = (0..10_000).collect();
    ensure!(v.iter().sum::<u64>() == 49_995_000, "heap data corrupted");
    ensure!(crate::heap::used_bytes() >= before + 80_000, "heap usage not accounted");
    drop(v);
    ensure!(crate::heap::used_bytes() == before, "heap not returned");
    Ok(())
}

fn user_map_translate_unmap() -> TestResult {
    let mut frames = mm::FRAMES.lock();
    let mut space = arch::paging::AddressSpace::new(&mut frames).ok_or("no memory")?;
    let page = frames.alloc().ok_or("no frame")?;
    let va = 0x40_0000;
    let flags = MapFlags { writable: true, executable: false, device: false };
    space.map(va, page, flags, &mut frames).map_err(|e| alloc::format!("{e:?}"))?;
    ensure!(space.map(va, page, flags, &mut frames) == Err(arch::MapError::AlreadyMapped), "double map accepted");
    ensure!(space.map(arch::USER_TOP, page, flags, &mut frames) == Err(arch::MapError::BadAddress), "kernel-half map accepted");
    ensure!(space.map(va + 1, page, flags, &mut frames) == Err(arch::MapError::BadAddress), "unaligned map accepted");
    ensure!(space.translate(va + 0x123) == Some((page + 0x123, flags)), "translate wrong");
    ensure!(space.table_frames() == 3, "{} tables below the root for one page", space.table_frames());
    let free_mapped = frames.free_frames();
    ensure!(space.unmap(va, &mut frames) == Some(page), "unmap returned wrong frame");
    ensure!(space.translate(va).is_none(), "still mapped after unmap");
    // The three tables the page needed were emptied, and freed.
    ensure!(space.table_frames() == 0, "{} tables left after the only page went", space.table_frames());
    ensure!(frames.free_frames() == free_mapped + 3, "unmap freed {} frames, not the 3 tables", frames.free_frames() - free_mapped);
    ensure!(space.unmap(va, &mut frames).is_none(), "unmapped twice");
    space.destroy(&mut frames);
    frames.free(page);
    Ok(())
}

fn destroy_reclaims_tables() -> TestResult {
    let mut frames = mm::FRAMES.lock();
    let before = frames.free_frames();
    let mut space = arch::paging::AddressSpace::new(&mut frames).ok_or("no memory")?;
    let page = frames.alloc().ok_or("no frame")?;
    let flags = MapFlags { writable: false, executable: true, device: false };
    // Spread over several top-level entries so every table level is allocated more than once.
    for va in [0x1000, 0x20_0000, 0x4000_0000, 0x7F00_0000_0000] {
        space.map(va, page, flags, &mut frames).map_err(|e| alloc::format!("{e:?}"))?;
    }
    space.destroy(&mut frames);
    frames.free(page);
    ensure!(frames.free_frames() == before, "leaked {} frames", before as i64 - frames.free_frames() as i64);
    Ok(())
}

/// The runner passes `expect-iommu=vtd|smmuv3|none` for the machine it configured; the
/// firmware tables must describe exactly that (QEMU's intel-iommu sits at 0xfed90000, virt's
/// SMMUv3 at 0x9050000).
fn iommus_match_machine() -> TestResult {
    let info = crate::boot_info();
    let expected = crate::option(info.cmdline(), "expect-iommu").ok_or("no expect-iommu= on the command line")?;
    let found = crate::firmware::iommus(info);
    let wanted: &[(&str, u64)] = match expected {
        "vtd" => &[("vtd", 0xFED9_0000)],
        "smmuv3" => &[("smmuv3", 0x0905_0000)],
        "none" => &[],
        other => return Err(alloc::format!("unknown expect-iommu={other}")),
    };
    ensure!(found == wanted, "firmware describes {found:x?}, expected {wanted:x?}");
    Ok(())
}

fn timer_ticks() -> TestResult {
    let start = arch::instruction_counter();
    let mut ticks = 0;
    for _ in 0..1000 {
        if arch::wait_for_interrupt() == Trap::Timer {
            ticks += 1;
            if ticks == 3 {
                break;
            }
        }
    }
    ensure!(ticks == 3, "only {ticks} timer ticks");
    ensure!(arch::instruction_counter() > start, "instruction counter did not advance");
    Ok(())
}

/// Used by the runner's self-test: must be reported as a failure.
fn intentional_failure() -> TestResult {
    ensure!(1 + 1 == 3, "this test fails on purpose");
    Ok(())
}

/// Used by the runner's self-test: ends QEMU with a success status in the middle of the run,
/// as a kernel that dies on its way out would, with no summary; must be reported as a failure.
fn intentional_crash() -> TestResult {
    arch::exit_qemu(true);
}

/// Used by the runner's self-test: must be detected as a hang by the runner's timeout.
fn intentional_hang() -> TestResult {
    loop {
        arch::wait_for_interrupt();
    }
}
