//! System-call dispatch. Every argument is untrusted: unknown numbers, bad slots, wrong object
//! types, missing rights, out-of-range lengths and bad pointers get an error status, never a
//! kernel fault, and a failed call changes nothing.

#[cfg(target_arch = "aarch64")]
pub mod msi;
use crate::arch::{self, MapFlags, UserContext, PAGE_SIZE, USER_TOP};
use crate::cap::Capability;
use crate::object::{Charge, Endpoint, IrqLine, MemoryObject, MmioRegion, Notification, Object, PendingCall, KERNEL_OBJECT_PAGES};
use crate::process::{self, Continuation, ExitReason, Kernel, Next, Pid, Process, ThreadState, Tid};
use crate::usermem::UserSlice;
use alloc::rc::Rc;
use core::cell::RefCell;
use alloc::vec::Vec;
use kernel_abi::{Error, MemFlags, MAX_CONTIGUOUS_PAGES, MAX_PIN_RANGE, ObjectType, Rights, Syscall, WaitFlags, MAX_DEBUG_WRITE, MAX_MEMORY_OBJECT_PAGES, MAX_PINS, MAX_REVOCATION_RECORDS, NO_CAP, REVOCATION_RECORD_WORDS};

/// What the calling thread does next, or the error it gets.
type Outcome = Result<Continuation, Error>;

/// Status 0 and up to three values (zero where the call has fewer) for the first four result
/// registers: a fixed count is written without a loop or a variable-length copy.
fn values(v: &[u64]) -> Outcome {
    let mut out = [0; 4];
    out[1..=v.len()].copy_from_slice(v);
    Ok(Continuation::Return(out))
}

/// Carries out system call `number` with `args`, which thread `tid` of process `pid`, at
/// `priority`, issued; returns the thread that runs next. Inlined into the scheduler loop, its
/// one caller.
#[inline(always)]
pub fn handle(kernel: &mut Kernel, pid: Pid, tid: Tid, priority: u8, number: u64, a: [u64; 6]) -> Next<'_> {
    const CALL: u64 = Syscall::Call as u64;
    const RECV: u64 = Syscall::Recv as u64;
    const REPLY_RECV: u64 = Syscall::ReplyRecv as u64;
    // IPC is matched on the raw number, ahead of the decoding the other calls need, and picks
    // the thread that runs next itself: as a rule the partner it woke.
    let outcome = match number {
        CALL => return call_endpoint(kernel, pid, tid, a[0], a[1]),
        RECV | REPLY_RECV => return receive(kernel, pid, tid, a[0], a[1], number == REPLY_RECV),
        _ => match Syscall::from_number(number) {
            Some(call) => dispatch(kernel, pid, tid, call, a),
            None => Err(Error::UnknownSyscall),
        },
    };
    match outcome {
        Ok(continuation) => kernel.proceed(pid, tid, priority, continuation),
        Err(e) => kernel.resume(tid, &failure(e)),
    }
}

/// The results of a call that failed with `e`.
fn failure(e: Error) -> [u64; 4] {
    [e as u64, 0, 0, 0]
}

fn cap(kernel: &Kernel, pid: Pid, slot: u64) -> Result<Capability, Error> {
    kernel.processes[pid].cspace.get(slot).cloned()
}

/// The capability in `slot`, which must name an object of `kind` with `rights`.
fn cap_of(kernel: &Kernel, pid: Pid, slot: u64, kind: ObjectType, rights: Rights) -> Result<Capability, Error> {
    let c = cap(kernel, pid, slot)?;
    if c.object.kind() != kind {
        return Err(Error::WrongType);
    }
    if !c.rights.contains(rights) {
        return Err(Error::MissingRights);
    }
    Ok(c)
}

/// The large, rarely used handlers are `#[inline(never)]`: inlined, their buffers would grow
/// this function's frame (and stack probing), which every system call pays for.
fn dispatch(kernel: &mut Kernel, pid: Pid, tid: Tid, call: Syscall, a: [u64; 6]) -> Outcome {
    match call {
        Syscall::Null => values(&[]),
        Syscall::DebugWrite => debug_write(kernel, pid, a[0], a[1]),
        Syscall::Exit => Ok(Continuation::Exit(a[0])),
        Syscall::Yield => {
            kernel.threads.get_mut(tid).expect("caller").context.set_syscall_result(&[0]);
            Ok(Continuation::Yield)
        }
        Syscall::CapDerive => cap_derive(kernel, pid, a[0], a[1], a[2], a[3]),
        Syscall::CapDelete => kernel.delete_cap(pid, a[0]).and_then(|_| values(&[])),
        Syscall::CapRevoke => {
            let c = cap(kernel, pid, a[0])?;
            if !c.rights.contains(Rights::DERIVE) {
                return Err(Error::MissingRights);
            }
            kernel.revoke(pid, a[0]).and_then(|_| values(&[]))
        }
        Syscall::CapInfo => {
            let c = cap(kernel, pid, a[0])?;
            values(&[c.object.kind() as u64, c.rights.bits(), c.badge])
        }
        Syscall::Call | Syscall::Recv | Syscall::ReplyRecv => unreachable!("`handle` carries out IPC"),
        Syscall::Reply => {
            let caller = kernel.threads.get_mut(tid).expect("caller").reply_to.take().ok_or(Error::InvalidState)?;
            let answered = process::answer(&mut kernel.threads, tid, caller, &[0, 0, a[0], a[1], a[2], a[3], 0]).ok_or(Error::PeerGone)?;
            // The answered caller runs next in its level (at once if it outranks this thread).
            kernel.run_queue.push_front(caller, answered.priority);
            values(&[])
        }
        Syscall::ReplyLend => reply_lend(kernel, pid, tid, a[0], a[1], a[2], a[3], a[4], a[5]),
        Syscall::NotifySignal => {
            let n = notification(kernel, pid, a[0], Rights::WRITE)?;
            kernel.signal(&n, a[1]);
            values(&[])
        }
        Syscall::NotifyWait | Syscall::NotifyPoll => {
            let n = notification(kernel, pid, a[0], Rights::READ)?;
            let flags = WaitFlags::from_bits(a[1]).ok_or(Error::InvalidArgument)?;
            if flags.contains(WaitFlags::ACK_IRQ) {
                acknowledge_irq(kernel, pid, a[2])?;
            }
            let bits = core::mem::take(&mut n.borrow_mut().bits);
            if bits != 0 || call == Syscall::NotifyPoll {
                return values(&[bits]);
            }
            n.borrow_mut().waiters.push_back(tid);
            block(kernel, tid, ThreadState::Waiting { notification: n });
            Ok(Continuation::Block)
        }
        Syscall::MemAlloc => {
            let (pages, dst) = (a[0], a[1]);
            let flags = MemFlags::from_bits(a[2]).ok_or(Error::InvalidArgument)?;
            let contiguous = flags.contains(MemFlags::CONTIGUOUS);
            let limit = if contiguous { MAX_CONTIGUOUS_PAGES } else { MAX_MEMORY_OBJECT_PAGES };
            if pages == 0 || pages > limit {
                return Err(Error::InvalidArgument);
            }
            kernel.processes[pid].cspace.check_empty(dst)?;
            let quota = kernel.processes[pid].quota.clone();
            let memory = if contiguous {
                MemoryObject::allocate_contiguous(pages, &quota)
            } else {
                MemoryObject::allocate(pages, &quota)
            };
            let memory = memory.ok_or(Error::OutOfMemory)?;
            kernel.install(pid, dst, Object::Memory(memory), Rights::all().intersection(mem_rights()), 0)?;
            values(&[])
        }
        Syscall::MemMap => mem_map(kernel, pid, a[0], a[1], a[2], a[3], a[4]),
        Syscall::Unmap => unmap(kernel, pid, a[0], a[1]),
        Syscall::MemPin => mem_pin(kernel, pid, a[0], a[1], a[2]),
        Syscall::MemUnpin => kernel.unpin(pid, a[0]).and_then(|_| values(&[])),
        Syscall::MemPinRange => mem_pin_range(kernel, pid, a[0], a[1], a[2], a[3], a[4]),
        Syscall::MemInfo => {
            let cap = cap_of(kernel, pid, a[0], ObjectType::Memory, Rights::READ)?;
            match cap.object {
                Object::Memory(m) => values(&[m.serial, m.frames.len() as u64, cap.rights.bits()]),
                _ => unreachable!("type checked"),
            }
        }
        Syscall::IrqInfo => match cap_of(kernel, pid, a[0], ObjectType::Irq, Rights::CONTROL)?.object {
            Object::Irq(irq) => values(&[irq.borrow().line as u64]),
            _ => unreachable!("type checked"),
        },
        Syscall::IoPortRead | Syscall::IoPortWrite => io_port(kernel, pid, call, a[0], a[1], a[2], a[3]),
        Syscall::MmioCarve => mmio_carve(kernel, pid, a[0], a[1], a[2], a[3], a[4]),
        Syscall::MmioMap => mmio_map(kernel, pid, a[0], a[1], a[2], a[3]),
        Syscall::MmioInfo => match cap_of(kernel, pid, a[0], ObjectType::Mmio, Rights::READ)?.object {
            Object::Mmio(m) => values(&[m.base, m.size]),
            _ => unreachable!("type checked"),
        },
        Syscall::IrqBind => irq_bind(kernel, pid, a[0], a[1], a[2]),
        Syscall::IrqUnbind => irq_unbind(kernel, pid, a[0]),
        Syscall::IrqAck => {
            acknowledge_irq(kernel, pid, a[0])?;
            values(&[])
        }
        Syscall::ThreadCreate => {
            let (entry, stack, arg, priority) = (a[0], a[1], a[2], a[3]);
            if entry == 0 || entry >= USER_TOP || stack > USER_TOP {
                return Err(Error::BadAddress);
            }
            // A thread can create threads up to its own priority, never above.
            if priority > kernel.threads[tid].priority as u64 {
                return Err(Error::InvalidArgument);
            }
            let t = kernel.add_thread(pid, UserContext::new(entry, stack, arg), priority as u8)?;
            values(&[t as u64])
        }
        Syscall::EndpointCreate => {
            let charge = Some(object_charge(kernel, pid)?);
            create(kernel, pid, a[0], Object::Endpoint(Rc::new(RefCell::new(Endpoint { charge, ..Endpoint::default() }))))
        }
        Syscall::NotificationCreate => {
            let charge = Some(object_charge(kernel, pid)?);
            create(kernel, pid, a[0], Object::Notification(Rc::new(RefCell::new(Notification { charge, ..Notification::default() }))))
        }
        Syscall::ProcessKill => {
            let target = process(kernel, pid, a[0], Rights::CONTROL)?;
            if target == pid {
                return Ok(Continuation::Exit(0));
            }
            kernel.kill(target, ExitReason::Killed);
            values(&[])
        }
        Syscall::ProcessWatch => {
            let target = process(kernel, pid, a[0], Rights::READ)?;
            let n = notification(kernel, pid, a[1], Rights::WRITE)?;
            if a[2] >= 64 {
                return Err(Error::InvalidArgument);
            }
            match kernel.processes.get_mut(target) {
                Some(p) => p.watchers.push((n, a[2])),
                None => kernel.signal(&n, 1 << a[2]),
            }
            values(&[])
        }
        Syscall::CapGrant => {
            let target = process(kernel, pid, a[0], Rights::CONTROL)?;
            let src = cap(kernel, pid, a[1])?;
            if !src.rights.contains(Rights::GRANT) {
                return Err(Error::MissingRights);
            }
            let rights = requested_rights(a[3])?.intersection(src.rights);
            kernel.processes.get(target).ok_or(Error::PeerGone)?;
            kernel.install_derived(target, a[2], &src, rights, src.badge)?;
            values(&[])
        }
        Syscall::ProcessCreate => process_create(kernel, pid, a[0], a[1], a[2], a[3]),
        Syscall::ProcessStart => {
            let target = process(kernel, pid, a[0], Rights::CONTROL)?;
            kernel.start_process(target).and_then(|_| values(&[]))
        }
        Syscall::RevocationWatch => {
            cap_of(kernel, pid, a[0], ObjectType::DmaAuthority, Rights::CONTROL)?;
            let n = notification(kernel, pid, a[1], Rights::WRITE)?;
            if a[2] >= 64 {
                return Err(Error::InvalidArgument);
            }
            kernel.processes.get_mut(pid).expect("caller").revocation_watch = Some((n, a[2]));
            values(&[])
        }
        Syscall::RevocationRead => revocation_read(kernel, pid, a[0], a[1], a[2]),
        #[cfg(target_arch = "aarch64")]
        Syscall::MsiRoute => msi::msi_route(kernel, pid, a[0], a[1], a[2], a[3]),
        #[cfg(target_arch = "aarch64")]
        Syscall::MsiUnroute => msi::msi_unroute(kernel, pid, a[0], a[1]),
        // x86 routes MSIs through VT-d interrupt remapping, which the IOMMU server programs.
        #[cfg(not(target_arch = "aarch64"))]
        Syscall::MsiRoute | Syscall::MsiUnroute => {
            cap_of(kernel, pid, a[0], ObjectType::DmaAuthority, Rights::CONTROL)?;
            Err(Error::InvalidState)
        }
        Syscall::CapWatch => {
            cap_of(kernel, pid, a[0], ObjectType::DmaAuthority, Rights::CONTROL)?;
            let c = cap(kernel, pid, a[1])?;
            let pin = kernel.pin(pid, &c, None, 0, 0)?;
            values(&[pin])
        }
        Syscall::AddressSpaceCap => crate::sva::address_space_cap(kernel, pid, a[0], a[1]).and_then(|_| values(&[])),
        Syscall::AddressSpaceWatch => {
            cap_of(kernel, pid, a[0], ObjectType::DmaAuthority, Rights::CONTROL)?;
            let c = cap_of(kernel, pid, a[1], ObjectType::AddressSpace, Rights::CONTROL)?;
            values(&crate::sva::address_space_watch(kernel, pid, &c)?)
        }
        Syscall::AddressSpaceAck => {
            cap_of(kernel, pid, a[0], ObjectType::DmaAuthority, Rights::CONTROL)?;
            kernel.address_space_ack(pid, a[1]).and_then(|_| values(&[]))
        }
        Syscall::QuarantineRelease => values(&quarantine_release(kernel, pid, a[0])?),
        Syscall::MemProtect => mem_protect(kernel, pid, tid, a[0], a[1], a[2]),
    }
}

/// `mem_protect(va, pages, flags)`: see `Syscall::MemProtect`. The caller waits while a
/// watcher of its address space has not acknowledged the downgrade.
#[inline(never)]
fn mem_protect(kernel: &mut Kernel, pid: Pid, tid: Tid, va: u64, pages: u64, flags: u64) -> Outcome {
    let flags = kernel_abi::MapFlags::from_bits(flags).ok_or(Error::InvalidArgument)?;
    user_range(va, pages)?;
    let kept = MapFlags { writable: flags.contains(kernel_abi::MapFlags::WRITE), executable: flags.contains(kernel_abi::MapFlags::EXECUTE), device: false };
    let Some(downgrade) = kernel.protect(pid, va, pages, kept)? else { return values(&[]) };
    if let Some(outcome) = downgrade.outcome() {
        return outcome.and_then(|_| values(&[]));
    }
    let done = downgrade.done().clone();
    done.borrow_mut().waiters.push_back(tid);
    block(kernel, tid, ThreadState::Waiting { notification: done });
    Ok(Continuation::Block)
}

/// `quarantine_release(authority) -> (pages, objects)`: see `Syscall::QuarantineRelease`.
pub fn quarantine_release(kernel: &mut Kernel, pid: Pid, authority: u64) -> Result<[u64; 2], Error> {
    cap_of(kernel, pid, authority, ObjectType::DmaAuthority, Rights::CONTROL)?;
    let (pages, objects) = kernel.release_quarantine();
    Ok([pages, objects])
}

/// `revocation_read(authority, out, max) -> count`: see `Syscall::RevocationRead`.
#[inline(never)]
fn revocation_read(kernel: &mut Kernel, pid: Pid, authority: u64, out: u64, max: u64) -> Outcome {
    cap_of(kernel, pid, authority, ObjectType::DmaAuthority, Rights::CONTROL)?;
    let max = max.min(MAX_REVOCATION_RECORDS);
    // Changes of watched address spaces first: their frames wait for the acknowledgement.
    let changes = kernel.address_space_changes(pid, max as usize);
    let process = kernel.processes.get_mut(pid).expect("caller");
    let revoked = (max - changes.len() as u64).min(process.revoked_pins.len() as u64);
    let count = changes.len() as u64 + revoked;
    if count == 0 {
        return values(&[0]);
    }
    let words = count * REVOCATION_RECORD_WORDS as u64;
    let buffer = UserSlice::new(out, words * 8)?;
    let mut records: Vec<u64> = Vec::new();
    records.try_reserve_exact(words as usize).map_err(|_| Error::OutOfMemory)?;
    for (_, record) in &changes {
        records.extend_from_slice(record);
    }
    for &pin in process.revoked_pins.iter().take(revoked as usize) {
        let held = &process.pins[&pin];
        let serial = held.memory.as_ref().map_or(0, |m| m.serial);
        records.extend_from_slice(&[pin, serial, held.first_page, held.pages]);
    }
    buffer.write_words(&process.space, &records)?;
    // Handed out only once written: a bad buffer loses no record.
    for record in records.chunks(REVOCATION_RECORD_WORDS).skip(changes.len()) {
        process.revoked_pins.remove(&record[0]);
    }
    let watched: Vec<(Pid, u64)> = changes.iter().map(|(watched, record)| (*watched, record[0])).collect();
    kernel.address_space_changes_read(pid, &watched);
    values(&[count])
}

/// Rights a fresh memory object's capability gets.
const fn mem_rights() -> Rights {
    Rights::READ.union(Rights::WRITE).union(Rights::EXECUTE).union(Rights::GRANT).union(Rights::DERIVE)
}

fn requested_rights(bits: u64) -> Result<Rights, Error> {
    Rights::from_bits(bits).ok_or(Error::InvalidArgument)
}

fn notification(kernel: &Kernel, pid: Pid, slot: u64, rights: Rights) -> Result<Rc<RefCell<Notification>>, Error> {
    match cap_of(kernel, pid, slot, ObjectType::Notification, rights)?.object {
        Object::Notification(n) => Ok(n),
        _ => unreachable!("type checked"),
    }
}

fn process(kernel: &Kernel, pid: Pid, slot: u64, rights: Rights) -> Result<Pid, Error> {
    match cap_of(kernel, pid, slot, ObjectType::Process, rights)?.object {
        Object::Process(p) => Ok(p),
        _ => unreachable!("type checked"),
    }
}

/// The creator's payment for a new endpoint or notification (`KERNEL_OBJECT_PAGES`).
fn object_charge(kernel: &Kernel, pid: Pid) -> Result<Charge, Error> {
    Charge::take(&kernel.processes[pid].quota, KERNEL_OBJECT_PAGES).ok_or(Error::OutOfMemory)
}

fn create(kernel: &mut Kernel, pid: Pid, dst: u64, object: Object) -> Outcome {
    let rights = Rights::READ.union(Rights::WRITE).union(Rights::GRANT).union(Rights::DERIVE);
    kernel.install(pid, dst, object, rights, 0)?;
    values(&[])
}

#[inline(never)]
fn debug_write(kernel: &Kernel, pid: Pid, ptr: u64, len: u64) -> Outcome {
    if len > MAX_DEBUG_WRITE as u64 {
        return Err(Error::InvalidArgument);
    }
    let slice = UserSlice::new(ptr, len)?;
    let mut buf = [0u8; MAX_DEBUG_WRITE];
    slice.copy_into(&kernel.processes[pid].space, &mut buf[..len as usize])?;
    arch::console_write(&buf[..len as usize]);
    values(&[])
}

/// Re-enables the line of the IRQ capability in `slot` (needs CONTROL).
fn acknowledge_irq(kernel: &Kernel, pid: Pid, slot: u64) -> Result<(), Error> {
    match cap_of(kernel, pid, slot, ObjectType::Irq, Rights::CONTROL)?.object {
        Object::Irq(irq) => {
            arch::irq_set_enabled(irq.borrow().line, true);
            Ok(())
        }
        _ => unreachable!("type checked"),
    }
}

#[inline(never)]
fn cap_derive(kernel: &mut Kernel, pid: Pid, src: u64, dst: u64, rights: u64, badge: u64) -> Outcome {
    let parent = cap(kernel, pid, src)?;
    if !parent.rights.contains(Rights::DERIVE) {
        return Err(Error::MissingRights);
    }
    let rights = requested_rights(rights)?.intersection(parent.rights);
    let badge = match badge {
        0 => parent.badge,
        b if parent.object.kind() == ObjectType::Endpoint && parent.badge == 0 => b,
        _ => return Err(Error::InvalidArgument),
    };
    kernel.install_derived(pid, dst, &parent, rights, badge)?;
    values(&[])
}

/// `reply_lend(src, dst, rights, w0, w1, w2)`: see `Syscall::ReplyLend`. Everything is checked
/// before anything changes, so that a refused lend leaves the caller awaiting a reply.
#[inline(never)]
#[allow(clippy::too_many_arguments, reason = "the system call's words, passed as the other handlers take theirs")]
fn reply_lend(kernel: &mut Kernel, pid: Pid, tid: Tid, src: u64, dst: u64, rights: u64, w0: u64, w1: u64, w2: u64) -> Outcome {
    let lent = cap(kernel, pid, src)?;
    if !lent.rights.contains(Rights::GRANT) {
        return Err(Error::MissingRights);
    }
    let rights = requested_rights(rights)?.intersection(lent.rights);
    let caller = kernel.threads.get(tid).expect("caller").reply_to.ok_or(Error::InvalidState)?;
    let caller_pid = match kernel.threads.get(caller) {
        Some(thread) if matches!(thread.state, ThreadState::AwaitingReply { server } if server == tid) => thread.pid,
        _ => return Err(Error::PeerGone),
    };
    kernel.install_derived(caller_pid, dst, &lent, rights, lent.badge)?;
    kernel.threads.get_mut(tid).expect("caller").reply_to = None;
    let answered = process::answer(&mut kernel.threads, tid, caller, &[0, 0, w0, w1, w2, 0, 1]).expect("checked to await this reply");
    // As with `reply`: the answered caller runs next in its level.
    kernel.run_queue.push_front(caller, answered.priority);
    values(&[])
}

/// The endpoint in `slot` and the capability's badge, if it carries `rights` (the IPC paths'
/// variant of `cap_of`, which borrows the capability instead of cloning it).
fn endpoint(process: &Process, slot: u64, rights: Rights) -> Result<(&Rc<RefCell<Endpoint>>, u64), Error> {
    let c = process.cspace.get(slot)?;
    match &c.object {
        Object::Endpoint(ep) if c.rights.contains(rights) => Ok((ep, c.badge)),
        Object::Endpoint(_) => Err(Error::MissingRights),
        _ => Err(Error::WrongType),
    }
}

/// `call`: sends the message words (and moves the capability in `cap_slot`) through the
/// endpoint in `ep_slot`. A waiting receiver takes the message and runs next; without one, the
/// call waits in the endpoint's queue.
fn call_endpoint(kernel: &mut Kernel, pid: Pid, tid: Tid, ep_slot: u64, cap_slot: u64) -> Next<'_> {
    let moves_cap = cap_slot != NO_CAP;
    let (ep, badge) = match call_target(&kernel.processes[pid], ep_slot, moves_cap.then_some(cap_slot)) {
        Ok(target) => target,
        Err(e) => return kernel.resume(tid, &failure(e)),
    };
    let receiver = ep.borrow_mut().receivers.pop();
    // Validated: from here on the call succeeds. The endpoint is borrowed from the caller's
    // capability space, which taking the capability changes (it may even move the endpoint's
    // own capability): a waiting call keeps its own reference.
    let Some(receiver) = receiver else {
        let ep = ep.clone();
        let cap = moves_cap.then(|| take_checked(kernel, pid, cap_slot));
        ep.borrow_mut().senders.push_back(PendingCall { caller: tid, badge, cap });
        block(kernel, tid, ThreadState::Sending { ep });
        return kernel.run_next();
    };
    let cap = moves_cap.then(|| take_checked(kernel, pid, cap_slot));
    kernel.deliver(tid, receiver, badge, cap)
}

/// The endpoint a call goes to and the capability's badge: WRITE on the endpoint, and GRANT on
/// the capability in `cap_slot` if the call moves one.
fn call_target(process: &Process, ep_slot: u64, cap_slot: Option<u64>) -> Result<(&Rc<RefCell<Endpoint>>, u64), Error> {
    let target = endpoint(process, ep_slot, Rights::WRITE)?;
    if let Some(slot) = cap_slot {
        if !process.cspace.get(slot)?.rights.contains(Rights::GRANT) {
            return Err(Error::MissingRights);
        }
    }
    Ok(target)
}

/// Takes the capability in `slot` of the caller `pid`, which the call has found there.
fn take_checked(kernel: &mut Kernel, pid: Pid, slot: u64) -> Capability {
    kernel.processes.get_mut(pid).expect("caller").cspace.take(slot).expect("checked by the call")
}

/// Puts the calling thread, which is running and so `Runnable`, into a blocked `state`.
fn block(kernel: &mut Kernel, tid: Tid, state: ThreadState) {
    kernel.threads.get_mut(tid).expect("caller").leave_plain_state(state);
}

/// `recv` and `reply_recv`: waits on the endpoint in `ep_slot` for a message; a capability
/// that comes with it goes to `recv_slot`. The caller this thread received from last, if it
/// still awaits the answer, gets the answer (`reply_recv`: the call's last four arguments) and
/// runs next, or, left unanswered by `recv`, learns that it will not be answered.
fn receive(kernel: &mut Kernel, pid: Pid, tid: Tid, ep_slot: u64, recv_slot: u64, replies: bool) -> Next<'_> {
    // Validate first: a failed call changes nothing.
    let ep = match receive_endpoint(&kernel.processes[pid], ep_slot, recv_slot) {
        Ok(ep) => ep.clone(),
        Err(e) => return kernel.resume(tid, &failure(e)),
    };
    let pending = {
        let mut endpoint = ep.borrow_mut();
        let pending = endpoint.senders.pop_front();
        if pending.is_none() {
            endpoint.receivers.push(tid);
        }
        pending
    };
    let me = kernel.threads.get_mut(tid).expect("caller");
    let caller = me.reply_to.take();
    // Receiving even with a sender queued: `deliver` hands its message over from that state.
    me.leave_plain_state(ThreadState::Receiving { ep, recv_slot });
    // `reply_recv`'s answer, read where it is needed rather than carried through the call.
    let [.., w0, w1, w2, w3] = me.context.syscall_args();
    match (caller, replies) {
        (Some(caller), true) => {
            let reply = [0, 0, w0, w1, w2, w3, 0];
            if pending.is_none() {
                // Nothing waits: the answered caller runs next.
                return process::answer(&mut kernel.threads, tid, caller, &reply)
                    .and_then(|answered| process::switch_to(&mut kernel.run_queue, caller, answered));
            }
            // A message waits: this thread takes it and runs on, the answered caller waits at
            // the front of its level.
            if let Some(answered) = process::answer(&mut kernel.threads, tid, caller, &reply) {
                kernel.run_queue.push_front(caller, answered.priority);
            }
        }
        (Some(caller), false) => {
            if let Some(unanswered) = process::answer(&mut kernel.threads, tid, caller, &[Error::PeerGone as u64]) {
                kernel.run_queue.push_back(caller, unanswered.priority);
            }
        }
        (None, _) => {}
    }
    let Some(PendingCall { caller: sender, badge, cap }) = pending else { return kernel.run_next() };
    let state = core::mem::replace(&mut kernel.threads.get_mut(sender).expect("queued").state, ThreadState::Runnable);
    let ThreadState::Sending { .. } = state else { unreachable!("queued callers are sending") };
    kernel.deliver(sender, tid, badge, cap)
}

/// The endpoint a receive waits on (READ), if `recv_slot` can take a capability.
fn receive_endpoint(process: &Process, ep_slot: u64, recv_slot: u64) -> Result<&Rc<RefCell<Endpoint>>, Error> {
    let (ep, _) = endpoint(process, ep_slot, Rights::READ)?;
    if recv_slot != NO_CAP {
        process.cspace.check_empty(recv_slot)?;
    }
    Ok(ep)
}

/// Validates a user range of `pages` pages at `va`: aligned, non-empty, no wrap, below USER_TOP.
fn user_range(va: u64, pages: u64) -> Result<u64, Error> {
    let len = pages.checked_mul(PAGE_SIZE).ok_or(Error::InvalidArgument)?;
    let end = va.checked_add(len).ok_or(Error::BadAddress)?;
    if pages == 0 || !va.is_multiple_of(PAGE_SIZE) || va == 0 || end > USER_TOP {
        return Err(if pages == 0 { Error::InvalidArgument } else { Error::BadAddress });
    }
    Ok(end)
}

/// Maps `pages` pages at `va` in `pid` through capability `via`, page `i` to physical page
/// `frame(i)`; all or nothing. A count the quota could not pay records for is refused before
/// anything is looked at: the quota bounds the work a call makes the kernel do.
fn map_pages(kernel: &mut Kernel, pid: Pid, va: u64, pages: u64, frame: impl Fn(u64) -> u64, flags: MapFlags, via: &Capability) -> Outcome {
    let process = kernel.processes.get_mut(pid).expect("caller");
    let records = process.mappings.len();
    let record_pages = process::mapping_record_pages(records + pages) - process::mapping_record_pages(records);
    if record_pages > process.quota.available() {
        return Err(Error::OutOfMemory);
    }
    if (0..pages).any(|i| process.space.translate(va + i * PAGE_SIZE).is_some()) {
        return Err(Error::AlreadyMapped);
    }
    for i in 0..pages {
        if let Err(e) = process.map_page(va + i * PAGE_SIZE, frame(i), flags, via) {
            for undo in 0..i {
                process.unmap_page(va + undo * PAGE_SIZE);
            }
            return Err(e);
        }
    }
    values(&[])
}

#[inline(never)]
fn mem_map(kernel: &mut Kernel, pid: Pid, slot: u64, va: u64, first: u64, pages: u64, flags: u64) -> Outcome {
    let flags = kernel_abi::MapFlags::from_bits(flags).ok_or(Error::InvalidArgument)?;
    let mut needed = Rights::READ;
    if flags.contains(kernel_abi::MapFlags::WRITE) {
        needed = needed.union(Rights::WRITE);
    }
    if flags.contains(kernel_abi::MapFlags::EXECUTE) {
        needed = needed.union(Rights::EXECUTE);
    }
    let c = cap_of(kernel, pid, slot, ObjectType::Memory, needed)?;
    let Object::Memory(memory) = &c.object else { unreachable!("type checked") };
    user_range(va, pages)?;
    let end = first.checked_add(pages).ok_or(Error::OutOfRange)?;
    let frames = memory.frames.get(first as usize..end as usize).ok_or(Error::OutOfRange)?;
    let map = MapFlags {
        writable: flags.contains(kernel_abi::MapFlags::WRITE),
        executable: flags.contains(kernel_abi::MapFlags::EXECUTE),
        device: false,
    };
    map_pages(kernel, pid, va, pages, |i| frames[i as usize], map, &c)
}

#[inline(never)]
fn mmio_map(kernel: &mut Kernel, pid: Pid, slot: u64, va: u64, first: u64, pages: u64) -> Outcome {
    let c = cap_of(kernel, pid, slot, ObjectType::Mmio, Rights::READ)?;
    let Object::Mmio(region) = &c.object else { unreachable!("type checked") };
    user_range(va, pages)?;
    let end = first.checked_add(pages).ok_or(Error::OutOfRange)?;
    if end > region.size / PAGE_SIZE {
        return Err(Error::OutOfRange);
    }
    let map = MapFlags { writable: c.rights.contains(Rights::WRITE), executable: false, device: true };
    map_pages(kernel, pid, va, pages, |i| region.base + (first + i) * PAGE_SIZE, map, &c)
}

#[inline(never)]
fn mmio_carve(kernel: &mut Kernel, pid: Pid, slot: u64, first: u64, pages: u64, dst: u64, rights: u64) -> Outcome {
    let parent = cap_of(kernel, pid, slot, ObjectType::Mmio, Rights::DERIVE)?;
    let Object::Mmio(region) = &parent.object else { unreachable!("type checked") };
    let end = first.checked_add(pages).ok_or(Error::OutOfRange)?;
    if pages == 0 || end > region.size / PAGE_SIZE {
        return Err(if pages == 0 { Error::InvalidArgument } else { Error::OutOfRange });
    }
    let rights = requested_rights(rights)?.intersection(parent.rights);
    kernel.processes[pid].cspace.check_empty(dst)?;
    let carved = Capability {
        object: Object::Mmio(Rc::new(MmioRegion { base: region.base + first * PAGE_SIZE, size: pages * PAGE_SIZE })),
        ..parent.clone()
    };
    kernel.install_derived(pid, dst, &carved, rights, 0)?;
    values(&[])
}

#[inline(never)]
fn unmap(kernel: &mut Kernel, pid: Pid, va: u64, pages: u64) -> Outcome {
    user_range(va, pages)?;
    let process = kernel.processes.get_mut(pid).expect("caller");
    if (0..pages).any(|i| !process.mappings.contains(va + i * PAGE_SIZE)) {
        return Err(Error::NotMapped);
    }
    for i in 0..pages {
        process.unmap_page(va + i * PAGE_SIZE);
    }
    kernel.notify_address_space_watcher(pid);
    values(&[])
}

fn mem_pin(kernel: &mut Kernel, pid: Pid, authority: u64, slot: u64, page: u64) -> Outcome {
    cap_of(kernel, pid, authority, ObjectType::DmaAuthority, Rights::CONTROL)?;
    let c = cap_of(kernel, pid, slot, ObjectType::Memory, Rights::READ)?;
    let Object::Memory(memory) = &c.object else { unreachable!("type checked") };
    let phys = *memory.frames.get(page as usize).ok_or(Error::OutOfRange)?;
    let pin = kernel.pin(pid, &c, Some(memory.clone()), page, 1)?;
    values(&[pin, phys])
}

#[inline(never)]
fn mem_pin_range(kernel: &mut Kernel, pid: Pid, authority: u64, slot: u64, first: u64, pages: u64, out: u64) -> Outcome {
    cap_of(kernel, pid, authority, ObjectType::DmaAuthority, Rights::CONTROL)?;
    let c = cap_of(kernel, pid, slot, ObjectType::Memory, Rights::READ)?;
    let Object::Memory(memory) = &c.object else { unreachable!("type checked") };
    if pages == 0 || pages > MAX_PIN_RANGE {
        return Err(Error::InvalidArgument);
    }
    let end = first.checked_add(pages).ok_or(Error::OutOfRange)?;
    let frames = memory.frames.get(first as usize..end as usize).ok_or(Error::OutOfRange)?;
    let buffer = UserSlice::new(out, pages * 8)?;
    let process = kernel.processes.get_mut(pid).expect("caller");
    if process.pins.len() >= MAX_PINS {
        return Err(Error::OutOfMemory);
    }
    buffer.write_words(&process.space, frames)?;
    let pin = kernel.pin(pid, &c, Some(memory.clone()), first, pages)?;
    values(&[pin])
}

/// Port I/O through an I/O-port capability: the port and its width must lie inside the range.
#[cfg(target_arch = "x86_64")]
fn io_port(kernel: &Kernel, pid: Pid, call: Syscall, slot: u64, port: u64, width: u64, value: u64) -> Outcome {
    let write = call == Syscall::IoPortWrite;
    let rights = if write { Rights::WRITE } else { Rights::READ };
    let Object::IoPorts { base, count } = cap_of(kernel, pid, slot, ObjectType::IoPorts, rights)?.object else {
        unreachable!("type checked")
    };
    if !matches!(width, 1 | 2 | 4) {
        return Err(Error::InvalidArgument);
    }
    // Checked: a port near 2^64 would wrap past the range's end into it.
    let end = port.checked_add(width).ok_or(Error::OutOfRange)?;
    if port < base as u64 || end > base as u64 + count as u64 {
        return Err(Error::OutOfRange);
    }
    if write {
        arch::port_write(port as u16, width as u8, value as u32);
        values(&[])
    } else {
        values(&[arch::port_read(port as u16, width as u8) as u64])
    }
}

/// No I/O-port capability exists on aarch64: the type check is all there is.
#[cfg(not(target_arch = "x86_64"))]
fn io_port(kernel: &Kernel, pid: Pid, _call: Syscall, slot: u64, _port: u64, _width: u64, _value: u64) -> Outcome {
    cap_of(kernel, pid, slot, ObjectType::IoPorts, Rights::empty())?;
    unreachable!("no capability has type IoPorts on aarch64")
}

#[inline(never)]
fn irq_bind(kernel: &mut Kernel, pid: Pid, irq_slot: u64, ntfn_slot: u64, bit: u64) -> Outcome {
    let Object::Irq(irq) = cap_of(kernel, pid, irq_slot, ObjectType::Irq, Rights::CONTROL)?.object else {
        unreachable!("type checked")
    };
    let n = notification(kernel, pid, ntfn_slot, Rights::WRITE)?;
    if bit >= 64 {
        return Err(Error::InvalidArgument);
    }
    // A binding whose binder has ended (say an IOMMU server that a new instance replaces)
    // yields: nobody waits for its notification any more.
    if irq.borrow().bound.is_some() && kernel.processes.contains(irq.borrow().binder) {
        return Err(Error::InvalidState);
    }
    let (line, edge) = (irq.borrow().line, irq.borrow().edge);
    irq.borrow_mut().bound = Some((n, bit));
    irq.borrow_mut().binder = pid;
    kernel.irqs.insert(line, Rc::downgrade(&irq));
    arch::irq_configure(line, edge);
    arch::irq_set_enabled(line, true);
    values(&[])
}

#[inline(never)]
fn irq_unbind(kernel: &mut Kernel, pid: Pid, irq_slot: u64) -> Outcome {
    let Object::Irq(irq) = cap_of(kernel, pid, irq_slot, ObjectType::Irq, Rights::CONTROL)?.object else {
        unreachable!("type checked")
    };
    let line = irq.borrow().line;
    irq.borrow_mut().bound = None;
    // Only this object's registration goes: another object of the same line may be the one
    // bound now.
    if kernel.irqs.get(&line).is_some_and(|bound| bound.as_ptr() == Rc::as_ptr(&irq)) {
        kernel.irqs.remove(&line);
    }
    arch::irq_set_enabled(line, false);
    values(&[])
}

#[inline(never)]
pub(crate) fn process_create(kernel: &mut Kernel, pid: Pid, image: u64, arg: u64, dst: u64, quota: u64) -> Outcome {
    let &(name, bytes) = kernel.images.get(image as usize).ok_or(Error::OutOfRange)?;
    kernel.processes[pid].cspace.check_empty(dst)?;
    let parent_quota = kernel.processes[pid].quota.clone();
    if !parent_quota.charge(quota) {
        return Err(Error::OutOfMemory);
    }
    // The child's pages come out of the parent's limit until the child's quota account goes
    // (the child ended and nothing charged to it is left: `QuotaAccount::returns_to`).
    parent_quota.limit.set(parent_quota.limit.get() - quota);
    parent_quota.release(quota);
    let child = match kernel.create_process(name, bytes, arg, quota) {
        Ok(child) => child,
        Err(_) => {
            parent_quota.limit.set(parent_quota.limit.get() + quota);
            return Err(Error::OutOfMemory);
        }
    };
    kernel.processes[child].quota.returns_to.replace(Some(parent_quota));
    kernel.install(pid, dst, Object::Process(child), Rights::all(), 0)?;
    values(&[child as u64])
}

/// An IRQ object for `line`, for the boot code that creates them.
pub fn irq_object(line: u32, edge: bool) -> Object {
    Object::Irq(Rc::new(RefCell::new(IrqLine { line, edge, bound: None, binder: 0, last_fired_at: 0 })))
}
