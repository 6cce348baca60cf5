//! Raw system calls (see `kernel_abi` for the convention).

use kernel_abi::{Error, Syscall};


/// Issues system call `number` with up to six arguments; returns the status and the first
/// result word.
#[inline(always)]
fn raw(number: u64, args: [u64; 6]) -> (u64, u64) {
    let status: u64;
    let value: u64;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SYSCALL transfers to the kernel, which preserves every register but the
    // caller-saved ones, all named here (rcx and r11 are the instruction's own); memory is only
    // read or written as the call's contract says.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") number => status,
            inlateout("rdi") args[0] => value,
            inlateout("rsi") args[1] => _,
            inlateout("rdx") args[2] => _,
            inlateout("r10") args[3] => _,
            inlateout("r8") args[4] => _,
            inlateout("r9") args[5] => _,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: SVC transfers to the kernel, which preserves every register but the caller-saved
    // x0..x18, all named here; memory is only read or written as the call's contract says.
    unsafe {
        core::arch::asm!(
            "svc #0",
            inlateout("x8") number => _,
            inlateout("x0") args[0] => status,
            inlateout("x1") args[1] => value,
            inlateout("x2") args[2] => _,
            inlateout("x3") args[3] => _,
            inlateout("x4") args[4] => _,
            inlateout("x5") args[5] => _,
            lateout("x6") _, lateout("x7") _, lateout("x9") _, lateout("x10") _, lateout("x11") _,
            lateout("x12") _, lateout("x13") _, lateout("x14") _, lateout("x15") _, lateout("x16") _,
            lateout("x17") _, lateout("x18") _,
            options(nostack),
        );
    }
    (status, value)
}

fn check(status: u64) -> Result<(), Error> {
    match status {
        0 => Ok(()),
        s => Err(Error::from_status(s).unwrap_or(Error::InvalidArgument)),
    }
}

pub fn debug_write(bytes: &[u8]) -> Result<(), Error> {
    check(raw(Syscall::DebugWrite as u64, [bytes.as_ptr() as u64, bytes.len() as u64, 0, 0, 0, 0]).0)
}

/// `debug_write` with an arbitrary pointer, for tests that hand the kernel bad addresses.
pub fn debug_write_raw(ptr: u64, len: u64) -> Result<(), Error> {
    check(raw(Syscall::DebugWrite as u64, [ptr, len, 0, 0, 0, 0]).0)
}

pub fn exit(code: u64) -> ! {
    raw(Syscall::Exit as u64, [code, 0, 0, 0, 0, 0]);
    unreachable!("exit returned")
}

pub fn yield_now() {
    raw(Syscall::Yield as u64, [0; 6]);
}

/// Issues an arbitrary system call number, for tests of the kernel's argument checking.
pub fn raw_call(number: u64, args: [u64; 6]) -> u64 {
    raw(number, args).0
}

/// Results of `call` and `recv`: the sender's badge, the message words, and whether a
/// capability arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub badge: u64,
    pub words: [u64; 4],
    pub cap_received: bool,
}

/// Issues a call returning all seven result registers.
#[inline(always)]
fn raw7(number: u64, args: [u64; 6]) -> [u64; 7] {
    let mut r = [0u64; 7];
    #[cfg(target_arch = "x86_64")]
    // SAFETY: as in `raw`.
    unsafe {
        core::arch::asm!("syscall",
            inlateout("rax") number => r[0], inlateout("rdi") args[0] => r[1], inlateout("rsi") args[1] => r[2],
            inlateout("rdx") args[2] => r[3], inlateout("r10") args[3] => r[4], inlateout("r8") args[4] => r[5],
            inlateout("r9") args[5] => r[6], lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: as in `raw`.
    unsafe {
        core::arch::asm!("svc #0", inlateout("x8") number => _,
            inlateout("x0") args[0] => r[0], inlateout("x1") args[1] => r[1], inlateout("x2") args[2] => r[2],
            inlateout("x3") args[3] => r[3], inlateout("x4") args[4] => r[4], inlateout("x5") args[5] => r[5],
            lateout("x6") r[6], lateout("x7") _, lateout("x9") _, lateout("x10") _, lateout("x11") _,
            lateout("x12") _, lateout("x13") _, lateout("x14") _, lateout("x15") _, lateout("x16") _,
            lateout("x17") _, lateout("x18") _, options(nostack));
    }
    r
}

fn received(r: [u64; 7]) -> Result<Received, Error> {
    check(r[0])?;
    Ok(Received { badge: r[1], words: [r[2], r[3], r[4], r[5]], cap_received: r[6] != 0 })
}

/// Sends `words` (and moves the capability in `cap`, or `NO_CAP`) and waits for the reply.
pub fn call(ep: u64, cap: u64, words: [u64; 4]) -> Result<Received, Error> {
    received(raw7(Syscall::Call as u64, [ep, cap, words[0], words[1], words[2], words[3]]))
}

/// Waits for a message on `ep`; a transferred capability lands in `recv_slot`.
pub fn recv(ep: u64, recv_slot: u64) -> Result<Received, Error> {
    received(raw7(Syscall::Recv as u64, [ep, recv_slot, 0, 0, 0, 0]))
}

pub fn reply(words: [u64; 4]) -> Result<(), Error> {
    check(raw(Syscall::Reply as u64, [words[0], words[1], words[2], words[3], 0, 0]).0)
}

/// Answers the pending caller with `words` after lending it a copy of the capability in `src`
/// with `rights`, into the empty slot `dst` of the caller's process (see
/// `kernel_abi::Syscall::ReplyLend`). On an error the caller still awaits a reply.
pub fn reply_lend(src: u64, dst: u64, rights: kernel_abi::Rights, words: [u64; 3]) -> Result<(), Error> {
    check(raw(Syscall::ReplyLend as u64, [src, dst, rights.bits(), words[0], words[1], words[2]]).0)
}

/// Replies to the pending caller (if any) and waits for the next message.
pub fn reply_recv(ep: u64, recv_slot: u64, words: [u64; 4]) -> Result<Received, Error> {
    received(raw7(Syscall::ReplyRecv as u64, [ep, recv_slot, words[0], words[1], words[2], words[3]]))
}

pub fn null() -> Result<(), Error> {
    check(raw(Syscall::Null as u64, [0; 6]).0)
}

pub fn cap_derive(src: u64, dst: u64, rights: kernel_abi::Rights, badge: u64) -> Result<(), Error> {
    check(raw(Syscall::CapDerive as u64, [src, dst, rights.bits(), badge, 0, 0]).0)
}

pub fn cap_delete(slot: u64) -> Result<(), Error> {
    check(raw(Syscall::CapDelete as u64, [slot, 0, 0, 0, 0, 0]).0)
}

pub fn cap_revoke(slot: u64) -> Result<(), Error> {
    check(raw(Syscall::CapRevoke as u64, [slot, 0, 0, 0, 0, 0]).0)
}

/// `(type, rights, badge)` of the capability in `slot`.
pub fn cap_info(slot: u64) -> Result<(u64, u64, u64), Error> {
    let r = raw7(Syscall::CapInfo as u64, [slot, 0, 0, 0, 0, 0]);
    check(r[0]).map(|_| (r[1], r[2], r[3]))
}

/// `flags` empty for ordinary memory.
pub fn mem_alloc(pages: u64, dst: u64, flags: kernel_abi::MemFlags) -> Result<(), Error> {
    check(raw(Syscall::MemAlloc as u64, [pages, dst, flags.bits(), 0, 0, 0]).0)
}

pub fn mem_map(mem: u64, vaddr: u64, first_page: u64, pages: u64, flags: kernel_abi::MapFlags) -> Result<(), Error> {
    check(raw(Syscall::MemMap as u64, [mem, vaddr, first_page, pages, flags.bits(), 0]).0)
}

pub fn unmap(vaddr: u64, pages: u64) -> Result<(), Error> {
    check(raw(Syscall::Unmap as u64, [vaddr, pages, 0, 0, 0, 0]).0)
}

/// `(pin, phys)`.
pub fn mem_pin(authority: u64, mem: u64, page: u64) -> Result<(u64, u64), Error> {
    let r = raw7(Syscall::MemPin as u64, [authority, mem, page, 0, 0, 0]);
    check(r[0]).map(|_| (r[1], r[2]))
}

/// Pins `phys.len()` pages starting at `first_page` under one pin, filling `phys` with their
/// physical addresses; returns the pin.
pub fn mem_pin_range(authority: u64, mem: u64, first_page: u64, phys: &mut [u64]) -> Result<u64, Error> {
    // SAFETY: an initialized slice viewed as possibly-uninitialized words: the kernel only
    // writes whole u64 values into it, so it stays initialized.
    let out = unsafe { &mut *(core::ptr::from_mut(phys) as *mut [core::mem::MaybeUninit<u64>]) };
    mem_pin_range_uninit(authority, mem, first_page, out)
}

/// `mem_pin_range` into memory not yet initialized (a vector's spare capacity): on success
/// every word of `phys` is written.
pub fn mem_pin_range_uninit(authority: u64, mem: u64, first_page: u64, phys: &mut [core::mem::MaybeUninit<u64>]) -> Result<u64, Error> {
    let (status, pin) = raw(
        Syscall::MemPinRange as u64,
        [authority, mem, first_page, phys.len() as u64, phys.as_mut_ptr() as u64, 0],
    );
    check(status).map(|_| pin)
}

/// `(serial, pages, rights)` of a memory object and this capability to it.
pub fn mem_info(mem: u64) -> Result<(u64, u64, kernel_abi::Rights), Error> {
    let r = raw7(Syscall::MemInfo as u64, [mem, 0, 0, 0, 0, 0]);
    check(r[0]).map(|_| (r[1], r[2], kernel_abi::Rights::from_bits_retain(r[3])))
}

/// The interrupt line an IRQ capability serves.
pub fn irq_info(irq: u64) -> Result<u64, Error> {
    let (status, line) = raw(Syscall::IrqInfo as u64, [irq, 0, 0, 0, 0, 0]);
    check(status).map(|_| line)
}

pub fn mem_unpin(pin: u64) -> Result<(), Error> {
    check(raw(Syscall::MemUnpin as u64, [pin, 0, 0, 0, 0, 0]).0)
}

pub fn mmio_map(mmio: u64, vaddr: u64, first_page: u64, pages: u64) -> Result<(), Error> {
    check(raw(Syscall::MmioMap as u64, [mmio, vaddr, first_page, pages, 0, 0]).0)
}

/// A capability in `dst` to `pages` pages of the MMIO region in `mmio` from `first_page` on,
/// with `rights` ∩ the source's rights.
pub fn mmio_carve(mmio: u64, first_page: u64, pages: u64, dst: u64, rights: kernel_abi::Rights) -> Result<(), Error> {
    check(raw(Syscall::MmioCarve as u64, [mmio, first_page, pages, dst, rights.bits(), 0]).0)
}

/// `(phys_base, size)` of a device region.
pub fn mmio_info(mmio: u64) -> Result<(u64, u64), Error> {
    let r = raw7(Syscall::MmioInfo as u64, [mmio, 0, 0, 0, 0, 0]);
    check(r[0]).map(|_| (r[1], r[2]))
}

pub fn notification_create(dst: u64) -> Result<(), Error> {
    check(raw(Syscall::NotificationCreate as u64, [dst, 0, 0, 0, 0, 0]).0)
}

pub fn endpoint_create(dst: u64) -> Result<(), Error> {
    check(raw(Syscall::EndpointCreate as u64, [dst, 0, 0, 0, 0, 0]).0)
}

pub fn notify_signal(ntfn: u64, bits: u64) -> Result<(), Error> {
    check(raw(Syscall::NotifySignal as u64, [ntfn, bits, 0, 0, 0, 0]).0)
}

/// The notification's bits, cleared, or 0 at once if none is set.
pub fn notify_poll(ntfn: u64) -> Result<u64, Error> {
    let (status, bits) = raw(Syscall::NotifyPoll as u64, [ntfn, 0, 0, 0, 0, 0]);
    check(status).map(|_| bits)
}

pub fn notify_wait(ntfn: u64) -> Result<u64, Error> {
    let (status, bits) = raw(Syscall::NotifyWait as u64, [ntfn, 0, 0, 0, 0, 0]);
    check(status).map(|_| bits)
}

pub fn irq_bind(irq: u64, ntfn: u64, bit: u64) -> Result<(), Error> {
    check(raw(Syscall::IrqBind as u64, [irq, ntfn, bit, 0, 0, 0]).0)
}

pub fn irq_unbind(irq: u64) -> Result<(), Error> {
    check(raw(Syscall::IrqUnbind as u64, [irq, 0, 0, 0, 0, 0]).0)
}

/// Has `1 << bit` signalled on `ntfn` whenever one of this process's pins is revoked.
pub fn revocation_watch(authority: u64, ntfn: u64, bit: u64) -> Result<(), Error> {
    check(raw(Syscall::RevocationWatch as u64, [authority, ntfn, bit, 0, 0, 0]).0)
}

/// One record of a revoked pin (`Syscall::RevocationRead`), laid out as the kernel writes it.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RevocationRecord {
    pub pin: u64,
    /// The memory object's serial (`mem_info`), 0 for a `cap_watch`.
    pub serial: u64,
    pub first_page: u64,
    pub pages: u64,
}

/// Moves pending records of revoked pins into `out` (at most `MAX_REVOCATION_RECORDS`);
/// returns how many were written.
pub fn revocation_read(authority: u64, out: &mut [RevocationRecord]) -> Result<usize, Error> {
    const _: () = assert!(core::mem::size_of::<RevocationRecord>() == 8 * kernel_abi::REVOCATION_RECORD_WORDS);
    let (status, count) = raw(Syscall::RevocationRead as u64, [authority, out.as_mut_ptr() as u64, out.len() as u64, 0, 0, 0]);
    check(status).map(|_| count as usize)
}

/// A pin of no memory, revoked when the lender of the capability in `cap` goes.
pub fn cap_watch(authority: u64, cap: u64) -> Result<u64, Error> {
    let (status, pin) = raw(Syscall::CapWatch as u64, [authority, cap, 0, 0, 0, 0]);
    check(status).map(|_| pin)
}

/// arm: maps `count` events of ITS device `device_id` to LPIs, one IRQ capability each in
/// `first_slot..`; returns the INTID of event 0.
pub fn msi_route(authority: u64, device_id: u32, count: u32, first_slot: u64) -> Result<u64, Error> {
    let (status, intid) = raw(Syscall::MsiRoute as u64, [authority, u64::from(device_id), u64::from(count), first_slot, 0, 0]);
    check(status).map(|_| intid)
}

/// arm: the ITS forgets every event of `device_id`; the IRQ objects of its route are retired.
pub fn msi_unroute(authority: u64, device_id: u32) -> Result<(), Error> {
    check(raw(Syscall::MsiUnroute as u64, [authority, u64::from(device_id), 0, 0, 0, 0]).0)
}

/// A capability in `dst` to the address space of the process in slot `process` (CONTROL
/// needed), or of the caller with `process` = `NO_CAP`, to share with devices.
pub fn address_space_cap(process: u64, dst: u64) -> Result<(), Error> {
    check(raw(Syscall::AddressSpaceCap as u64, [process, dst, 0, 0, 0, 0]).0)
}

/// What `address_space_watch` tells the IOMMU server about a process's address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchedAddressSpace {
    /// The watch: its changes come as `revocation_read` records naming it; `mem_unpin` ends it.
    pub pin: u64,
    /// Physical address of the top-level table.
    pub root: u64,
    /// The memory attributes the tables are walked with (aarch64: MAIR_EL1; x86: 0).
    pub attributes: u64,
}

/// Shares the address space named by `cap` with the IOMMU (see
/// `kernel_abi::Syscall::AddressSpaceWatch`).
pub fn address_space_watch(authority: u64, cap: u64) -> Result<WatchedAddressSpace, Error> {
    let [status, pin, root, attributes, ..] = raw7(Syscall::AddressSpaceWatch as u64, [authority, cap, 0, 0, 0, 0]);
    check(status).map(|_| WatchedAddressSpace { pin, root, attributes })
}

/// The IOMMU no longer caches what the records read of watch `pin` named: their frames may be
/// reused.
pub fn address_space_ack(authority: u64, pin: u64) -> Result<(), Error> {
    check(raw(Syscall::AddressSpaceAck as u64, [authority, pin, 0, 0, 0, 0]).0)
}

/// Takes rights away from the caller's mappings of `pages` pages at `vaddr`: each keeps only
/// `flags` (see `kernel_abi::Syscall::MemProtect`). Returns once every IOMMU sharing the
/// address space dropped the old rights.
pub fn mem_protect(vaddr: u64, pages: u64, flags: kernel_abi::MapFlags) -> Result<(), Error> {
    check(raw(Syscall::MemProtect as u64, [vaddr, pages, flags.bits(), 0, 0, 0]).0)
}

/// Returns the frames the kernel quarantined when pinners ended to the free pool: the caller
/// states that no IOMMU unit can reach them any more. Returns (pages, objects) released.
pub fn quarantine_release(authority: u64) -> Result<(u64, u64), Error> {
    let [status, pages, objects, ..] = raw7(Syscall::QuarantineRelease as u64, [authority, 0, 0, 0, 0, 0]);
    check(status).map(|_| (pages, objects))
}

pub fn irq_ack(irq: u64) -> Result<(), Error> {
    check(raw(Syscall::IrqAck as u64, [irq, 0, 0, 0, 0, 0]).0)
}

/// `irq_ack(irq)` then `notify_wait(ntfn)`, in one system call.
pub fn irq_ack_and_wait(irq: u64, ntfn: u64) -> Result<u64, Error> {
    let (status, bits) = raw(Syscall::NotifyWait as u64, [ntfn, kernel_abi::WaitFlags::ACK_IRQ.bits(), irq, 0, 0, 0]);
    check(status).map(|_| bits)
}

/// Starts a thread in this process at `entry(arg)` on `stack_top`, with `priority` (at most the
/// caller's); returns its id.
pub fn thread_create(entry: extern "C" fn(u64) -> !, stack_top: u64, arg: u64, priority: u64) -> Result<u64, Error> {
    let (status, tid) = raw(Syscall::ThreadCreate as u64, [entry as usize as u64, stack_top, arg, priority, 0, 0]);
    check(status).map(|_| tid)
}

/// x86 `in` of `width` bytes (1, 2, 4) from `port`, through an I/O-port capability.
pub fn ioport_read(ports: u64, port: u64, width: u64) -> Result<u64, Error> {
    let (status, value) = raw(Syscall::IoPortRead as u64, [ports, port, width, 0, 0, 0]);
    check(status).map(|_| value)
}

/// x86 `out` of `width` bytes (1, 2, 4) to `port`, through an I/O-port capability.
pub fn ioport_write(ports: u64, port: u64, width: u64, value: u64) -> Result<(), Error> {
    check(raw(Syscall::IoPortWrite as u64, [ports, port, width, value, 0, 0]).0)
}

/// Guest instructions so far under `-icount shift=0` (TSC / CNTVCT_EL0).
#[inline(always)]
pub fn instruction_counter() -> u64 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: RDTSC is permitted in ring 3 (CR4.TSD clear) and has no side effects.
    unsafe {
        core::arch::x86_64::_rdtsc()
    }
    #[cfg(target_arch = "aarch64")]
    {
        let v: u64;
        // SAFETY: CNTVCT_EL0 is readable at EL0 (the kernel sets CNTKCTL_EL1.EL0VCTEN).
        unsafe { core::arch::asm!("isb", "mrs {}, cntvct_el0", out(reg) v, options(nomem, nostack)) };
        v
    }
}

/// A process from boot image number `image` (`kernel_abi::boot_directory::image`), not yet
/// running, with `quota_pages` of the caller's memory quota; its capability goes to `dst`.
pub fn process_create(image: u64, arg: u64, dst: u64, quota_pages: u64) -> Result<(), Error> {
    check(raw(Syscall::ProcessCreate as u64, [image, arg, dst, quota_pages, 0, 0]).0)
}

/// Copies the capability in `src` into slot `dst` of `process` with `rights` ∩ its rights.
pub fn cap_grant(process: u64, src: u64, dst: u64, rights: kernel_abi::Rights) -> Result<(), Error> {
    check(raw(Syscall::CapGrant as u64, [process, src, dst, rights.bits(), 0, 0]).0)
}

pub fn process_start(process: u64) -> Result<(), Error> {
    check(raw(Syscall::ProcessStart as u64, [process, 0, 0, 0, 0, 0]).0)
}

/// Signals `1 << bit` on `ntfn` when `process` ends.
pub fn process_watch(process: u64, ntfn: u64, bit: u64) -> Result<(), Error> {
    check(raw(Syscall::ProcessWatch as u64, [process, ntfn, bit, 0, 0, 0]).0)
}

pub fn process_kill(process: u64) -> Result<(), Error> {
    check(raw(Syscall::ProcessKill as u64, [process, 0, 0, 0, 0, 0]).0)
}
