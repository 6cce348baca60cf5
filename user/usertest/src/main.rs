//! Scenarios for the kernel's user-mode tests. The start argument selects one; the exit code
//! tells the test what happened (0 = the scenario's own checks passed).
#![no_std]
#![no_main]

use hwio::SharedWords;
use kernel_abi::{Error, Syscall};
use userlib::{println, syscall};

userlib::entry!(main);

use usertest_contract as scenario;

/// Capability slots the kernel tests fill before starting a scenario.
mod slot {
    pub const ENDPOINT: u64 = super::scenario::ENDPOINT_SLOT;
    /// Where a client allocates its memory object.
    pub const MEMORY: u64 = 2;
    /// Where a client derives the copy it sends.
    pub const MEMORY_COPY: u64 = 3;
    /// Where a client receives the page the server lends it.
    pub const LENT: u64 = 4;
    /// Where the server receives capabilities.
    pub const RECEIVED: u64 = 10;
    /// The server's page it lends to clients, and a copy of it without GRANT.
    pub const SERVER_PAGE: u64 = 11;
    pub const SERVER_PAGE_NO_GRANT: u64 = 12;
}

/// Server operations (message word 0).
mod op {
    pub const DOUBLE: u64 = 1;
    pub const SUM_AND_DROP: u64 = 2;
    pub const CHECK_RECEIVED: u64 = 3;
    pub const TOUCH_RECEIVED: u64 = 4;
    pub const SUM_AND_KEEP: u64 = 6;
    pub const NOTHING: u64 = 7;
    /// Lend the client a copy of the server's page (READ, WRITE) into the slot in word 1; word
    /// 2 non-zero: lend the copy without GRANT (refused). The answer carries the page's sum and
    /// the badge, or the kernel's refusal.
    pub const LEND: u64 = 8;
}

const SERVER_WINDOW: u64 = 0x1000_0000;
const CLIENT_WINDOW: u64 = 0x2000_0000;
const LENT_WINDOW: u64 = 0x3000_0000;
const SERVER_PAGE_VA: u64 = 0x1010_0000;

fn main(arg: u64) -> u64 {
    let (scenario, param) = (arg & 0xFF, arg >> 8);
    match scenario {
        scenario::HELLO => {
            println!("hello from user mode");
            42
        }
        scenario::NULL_WRITE => {
            // SAFETY: deliberately invalid: the kernel must kill this process.
            unsafe { core::ptr::write_volatile(core::ptr::null_mut::<u64>(), 1) };
            1
        }
        scenario::ILLEGAL_INSTRUCTION => {
            // SAFETY: deliberately undefined instruction: the kernel must kill this process.
            unsafe {
                #[cfg(target_arch = "x86_64")]
                core::arch::asm!("ud2");
                #[cfg(target_arch = "aarch64")]
                core::arch::asm!("udf #0");
            }
            1
        }
        scenario::BAD_POINTERS => bad_pointers(),
        scenario::SPIN => loop {
            core::hint::spin_loop();
        },
        scenario::HOSTILE_SYSCALLS => hostile_syscalls(),
        scenario::KERNEL_READ => {
            // SAFETY: deliberately reads kernel memory: the kernel must kill this process.
            unsafe { core::ptr::read_volatile(0xFFFF_FFFF_8020_0000 as *const u64) }
        }
        scenario::BAD_STACK => bad_stack(),
        scenario::IPC_SERVER => ipc_server(),
        scenario::IPC_CLIENT => ipc_client(param),
        scenario::REVOKER => revoker(),
        scenario::BENCH_CLIENT => bench_client(),
        scenario::EDU_IRQ => edu_irq(),
        scenario::MEM_QUERIES => mem_queries(),
        scenario::PRIORITIES => priorities(),
        scenario::IO_PORTS => io_ports(),
        scenario::KERNEL_OBJECT_QUOTA => kernel_object_quota(),
        scenario::IPC_SCHEDULING => ipc_scheduling::run(),
        scenario::MAP_MANY if param == 1 => map_one(),
        scenario::MAP_MANY => map_many(),
        scenario::EDU_EXCEPTION_VECTORS => edu_exception_vectors(),
        scenario::LENDER => lender(),
        scenario::BORROWER => borrow_server_page(param),
        _ => 2,
    }
}

/// The first 64 words of the page mapped at `va`, which another process may share.
///
/// # Safety
/// One page must be mapped at `va` (readable; writable too if written) while the words are used.
unsafe fn shared_words(va: u64) -> SharedWords<64> {
    // SAFETY: the caller's contract; a page holds 512 words.
    unsafe { SharedWords::at_address(va as usize) }
}

fn sum_window(va: u64) -> u64 {
    // SAFETY: the caller mapped one readable page at `va`.
    let words = unsafe { shared_words(va) };
    (0..words.len()).map(|i| words.read(i)).fold(0, u64::wrapping_add)
}

/// Answers the caller by lending it a copy of the server's page (see `op::LEND`), or, if the
/// kernel refuses, the answer to send instead.
fn lend(dst: u64, without_grant: bool, sum: u64, badge: u64) -> Option<[u64; 4]> {
    let source = if without_grant { slot::SERVER_PAGE_NO_GRANT } else { slot::SERVER_PAGE };
    match syscall::reply_lend(source, dst, kernel_abi::Rights::READ.union(kernel_abi::Rights::WRITE), [sum, badge, 0]) {
        Ok(()) => None,
        // A refused lend answers nobody: the caller learns why in the ordinary answer.
        Err(error) => Some([error as u64, 0, 0, 0]),
    }
}

/// Serves requests forever: the kernel test kills it when done.
fn ipc_server() -> u64 {
    let mut answer: Option<[u64; 4]> = None;
    let mut holding_capability = false;
    loop {
        // While it still holds a received capability, it takes no new one.
        let recv_slot = if holding_capability { kernel_abi::NO_CAP } else { slot::RECEIVED };
        let received = match answer {
            Some(words) => syscall::reply_recv(slot::ENDPOINT, recv_slot, words),
            None => syscall::recv(slot::ENDPOINT, recv_slot),
        };
        let Ok(m) = received else { return 50 };
        answer = Some(match m.words[0] {
            op::DOUBLE => [m.words[1] * 2, m.badge, 0, 0],
            op::SUM_AND_DROP | op::SUM_AND_KEEP if m.cap_received => {
                if syscall::mem_map(slot::RECEIVED, SERVER_WINDOW, 0, 1, kernel_abi::MapFlags::empty()).is_err() {
                    return 51;
                }
                let sum = sum_window(SERVER_WINDOW);
                if m.words[0] == op::SUM_AND_DROP {
                    if syscall::cap_delete(slot::RECEIVED).is_err() {
                        return 52;
                    }
                } else {
                    holding_capability = true;
                }
                [sum, m.badge, 0, 0]
            }
            op::CHECK_RECEIVED => [syscall::cap_info(slot::RECEIVED).err().map_or(0, |e| e as u64), 0, 0, 0],
            op::TOUCH_RECEIVED => [sum_window(SERVER_WINDOW), 0, 0, 0],
            op::NOTHING => [0; 4],
            _ => [u64::MAX, 0, 0, 0],
        });
    }
}

/// Lends a copy of its page to whoever asks (`op::LEND`), doubles (`op::DOUBLE`); forever.
fn lender() -> u64 {
    // The page it lends, filled with a pattern, and a copy of it that may not be lent.
    if syscall::mem_alloc(1, slot::SERVER_PAGE, kernel_abi::MemFlags::empty()).is_err() || syscall::mem_map(slot::SERVER_PAGE, SERVER_PAGE_VA, 0, 1, kernel_abi::MapFlags::WRITE).is_err() {
        return 53;
    }
    // SAFETY: the page was just mapped writable there.
    let page = unsafe { shared_words(SERVER_PAGE_VA) };
    (0..page.len()).for_each(|i| page.write(i, 4200 + i as u64));
    let lent_sum = sum_window(SERVER_PAGE_VA);
    let no_grant = kernel_abi::Rights::READ.union(kernel_abi::Rights::WRITE).union(kernel_abi::Rights::DERIVE);
    if syscall::cap_derive(slot::SERVER_PAGE, slot::SERVER_PAGE_NO_GRANT, no_grant, 0).is_err() {
        return 53;
    }
    // With no caller to answer there is nothing to lend to.
    if syscall::reply_lend(slot::SERVER_PAGE, slot::LENT, kernel_abi::Rights::READ, [0; 3]) != Err(Error::InvalidState) {
        return 54;
    }
    let mut answer: Option<[u64; 4]> = None;
    loop {
        let received = match answer {
            Some(words) => syscall::reply_recv(slot::ENDPOINT, kernel_abi::NO_CAP, words),
            None => syscall::recv(slot::ENDPOINT, kernel_abi::NO_CAP),
        };
        let Ok(m) = received else { return 50 };
        answer = match m.words[0] {
            op::LEND => lend(m.words[1], m.words[2] != 0, lent_sum, m.badge),
            op::DOUBLE => Some([m.words[1] * 2, m.badge, 0, 0]),
            _ => Some([u64::MAX, 0, 0, 0]),
        };
    }
}

/// Fills a fresh page with a pattern and returns its checksum.
fn make_pattern_page(seed: u64) -> Result<u64, u64> {
    syscall::mem_alloc(1, slot::MEMORY, kernel_abi::MemFlags::empty()).map_err(|_| 60u64)?;
    syscall::mem_map(slot::MEMORY, CLIENT_WINDOW, 0, 1, kernel_abi::MapFlags::WRITE).map_err(|_| 61u64)?;
    // SAFETY: one writable page is mapped at CLIENT_WINDOW.
    let page = unsafe { shared_words(CLIENT_WINDOW) };
    (0..page.len()).for_each(|i| page.write(i, seed * 1000 + i as u64));
    Ok(sum_window(CLIENT_WINDOW))
}

fn ipc_client(badge: u64) -> u64 {
    for value in [5, 21] {
        match syscall::call(slot::ENDPOINT, kernel_abi::NO_CAP, [op::DOUBLE, value, 0, 0]) {
            Ok(r) if r.words[0] == value * 2 && r.words[1] == badge => {}
            _ => return 70,
        }
    }
    let expected = match make_pattern_page(badge) {
        Ok(sum) => sum,
        Err(code) => return code,
    };
    let read_only = kernel_abi::Rights::READ.union(kernel_abi::Rights::GRANT);
    if syscall::cap_derive(slot::MEMORY, slot::MEMORY_COPY, read_only, 0).is_err() {
        return 71;
    }
    match syscall::call(slot::ENDPOINT, slot::MEMORY_COPY, [op::SUM_AND_DROP, 0, 0, 0]) {
        Ok(r) if r.words[0] == expected => {}
        _ => return 72,
    }
    // The copy moved to the server: the slot is empty now.
    if syscall::cap_info(slot::MEMORY_COPY) != Err(Error::InvalidCapability) {
        return 73;
    }
    0
}

/// Has the server lend a copy of its page (`op::LEND`): refused into an occupied slot and for
/// a capability without GRANT, answered either way; lent, the copy has the rights the server
/// chose, shows the server's page, and goes with a delete without disturbing the server.
fn borrow_server_page(badge: u64) -> u64 {
    let ask_lend = |dst: u64, without_grant: u64| syscall::call(slot::ENDPOINT, kernel_abi::NO_CAP, [op::LEND, dst, without_grant, 0]);
    match ask_lend(slot::ENDPOINT, 0) {
        Ok(r) if r.words[0] == Error::SlotOccupied as u64 && !r.cap_received => {}
        _ => return 74,
    }
    match ask_lend(slot::LENT, 1) {
        Ok(r) if r.words[0] == Error::MissingRights as u64 && !r.cap_received => {}
        _ => return 75,
    }
    if syscall::cap_info(slot::LENT) != Err(Error::InvalidCapability) {
        return 75;
    }
    let Ok(lent) = ask_lend(slot::LENT, 0) else { return 76 };
    if !lent.cap_received || lent.words[1] != badge {
        return 76;
    }
    let read_write = kernel_abi::Rights::READ.union(kernel_abi::Rights::WRITE);
    if syscall::cap_info(slot::LENT) != Ok((kernel_abi::ObjectType::Memory as u64, read_write.bits(), 0)) {
        return 77;
    }
    if syscall::mem_map(slot::LENT, LENT_WINDOW, 0, 1, kernel_abi::MapFlags::empty()).is_err() || sum_window(LENT_WINDOW) != lent.words[0] {
        return 78;
    }
    // Without DERIVE the copy cannot be revoked by its holder; deleted, it takes only the
    // holder's mapping with it, and the server serves on.
    if syscall::cap_revoke(slot::LENT) != Err(Error::MissingRights) || syscall::cap_delete(slot::LENT).is_err() {
        return 79;
    }
    if syscall::unmap(LENT_WINDOW, 1) != Err(Error::NotMapped) {
        return 79;
    }
    match syscall::call(slot::ENDPOINT, kernel_abi::NO_CAP, [op::DOUBLE, 4, 0, 0]) {
        Ok(r) if r.words[0] == 8 => 0,
        _ => 79,
    }
}

/// Gives the server a read-only copy of a page, revokes it, and checks that the server lost
/// both the capability and the mapping (touching it kills the server).
fn revoker() -> u64 {
    let expected = match make_pattern_page(7) {
        Ok(sum) => sum,
        Err(code) => return code,
    };
    let read_only = kernel_abi::Rights::READ.union(kernel_abi::Rights::GRANT);
    if syscall::cap_derive(slot::MEMORY, slot::MEMORY_COPY, read_only, 0).is_err() {
        return 80;
    }
    match syscall::call(slot::ENDPOINT, slot::MEMORY_COPY, [op::SUM_AND_KEEP, 0, 0, 0]) {
        Ok(r) if r.words[0] == expected => {}
        _ => return 81,
    }
    if syscall::cap_revoke(slot::MEMORY).is_err() {
        return 82;
    }
    // Our own capability and mapping stay: revoke removes only what was derived.
    if sum_window(CLIENT_WINDOW) != expected {
        return 83;
    }
    match syscall::call(slot::ENDPOINT, kernel_abi::NO_CAP, [op::CHECK_RECEIVED, 0, 0, 0]) {
        Ok(r) if r.words[0] == Error::InvalidCapability as u64 => {}
        _ => return 84,
    }
    // The server's mapping went with its capability: this request kills it.
    match syscall::call(slot::ENDPOINT, kernel_abi::NO_CAP, [op::TOUCH_RECEIVED, 0, 0, 0]) {
        Err(Error::PeerGone) => 0,
        _ => 85,
    }
}

/// Prints the guest-instruction cost of a null system call and of an IPC call + reply.
fn bench_client() -> u64 {
    const ROUNDS: u64 = 1000;
    let start = syscall::instruction_counter();
    for _ in 0..ROUNDS {
        let _ = syscall::null();
    }
    let null_cost = (syscall::instruction_counter() - start) / ROUNDS;
    let start = syscall::instruction_counter();
    for _ in 0..ROUNDS {
        if syscall::call(slot::ENDPOINT, kernel_abi::NO_CAP, [op::NOTHING, 1, 2, 3]).is_err() {
            return 90;
        }
    }
    let ipc_cost = (syscall::instruction_counter() - start) / ROUNDS;
    println!("bench: null system call {} guest instructions", null_cost);
    println!("bench: IPC call+reply (4 words) {} guest instructions", ipc_cost);
    0
}

/// A null system call on a stack pointer user code may not use (see `scenario::BAD_STACK`).
fn bad_stack() -> u64 {
    // SAFETY: deliberately leaves the stack pointer unusable: the process never returns from
    // this block, the kernel kills it.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        core::arch::asm!(
            "mov rsp, {bad}",
            "syscall",
            "test rax, rax",
            "jz 2f",
            "ud2",
            "2:",
            "push rax",
            bad = in(reg) scenario::BAD_STACK_POINTER,
            in("rax") Syscall::Null as u64,
            options(noreturn),
        );
        #[cfg(target_arch = "aarch64")]
        core::arch::asm!(
            "mov sp, {bad}",
            "svc #0",
            "cbz x0, 2f",
            "udf #0",
            "2:",
            "str x0, [sp, #-16]!",
            bad = in(reg) scenario::BAD_STACK_POINTER,
            in("x8") Syscall::Null as u64,
            options(noreturn),
        );
    }
}

/// Every pointer the kernel must refuse with BadAddress, not crash on.
fn bad_pointers() -> u64 {
    let cases: [(u64, u64); 6] = [
        (0, 8),                         // null page
        (0xFFFF_FFFF_8020_0000, 16),    // kernel image
        (0xFFFF_8000_0000_0000, 16),    // direct map
        (0x0000_7FFF_FFFF_FFF0, 0x100), // runs past the top of user space
        (u64::MAX - 4, 16),             // wraps around
        (0x10_0000_0000, 8),            // unmapped user address
    ];
    for (i, (ptr, len)) in cases.iter().enumerate() {
        if syscall::debug_write_raw(*ptr, *len) != Err(Error::BadAddress) {
            return 10 + i as u64;
        }
    }
    if syscall::debug_write_raw(0x40_0000, kernel_abi::MAX_DEBUG_WRITE as u64 + 1) != Err(Error::InvalidArgument) {
        return 20;
    }
    0
}

/// A bounded stream of pseudo-random and boundary arguments at every system call number (and
/// unknown ones). Exit is excluded (it would end the test) except with its real semantics at
/// the end. The kernel must answer each with an error or a success, never crash or hang.
fn hostile_syscalls() -> u64 {
    // User code may set RFLAGS.NT at will; the kernel must not take it in with a system call
    // (an IRETQ with NT set faults) nor hand it back.
    #[cfg(target_arch = "x86_64")]
    {
        let flags: u64;
        // SAFETY: sets the nested-task flag, which only IRET consults, and this program has none.
        unsafe { core::arch::asm!("pushfq", "orq $0x4000, (%rsp)", "popfq", options(att_syntax)) };
        let status = syscall::null();
        // SAFETY: reads RFLAGS.
        unsafe { core::arch::asm!("pushfq", "popq {}", out(reg) flags, options(att_syntax)) };
        if status.is_err() || flags & 0x4000 != 0 {
            return 31;
        }
    }
    if let Err(code) = hostile_arithmetic() {
        return code;
    }
    const BOUNDARY: [u64; 8] = [0, 1, 0xFFF, 0x1000, 0x7FFF_FFFF_FFFF, 0xFFFF_8000_0000_0000, u64::MAX - 1, u64::MAX];
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..2000u64 {
        let mut args = [0u64; 6];
        for a in args.iter_mut() {
            let r = next();
            *a = if r & 1 == 0 { BOUNDARY[(r >> 1) as usize % BOUNDARY.len()] } else { r };
        }
        let number = match i % 4 {
            0 => Syscall::DebugWrite as u64,
            1 => Syscall::ALL[(next() % Syscall::ALL.len() as u64) as usize] as u64,
            2 => next() % 64,
            _ => next(),
        };
        // Exit would end the test; a thread started at a random address would fault and,
        // correctly, take the whole process with it.
        // Recv, ReplyRecv, Call and NotifyWait on objects this loop created may block forever,
        // which is the caller's right but would stall the test.
        const SKIPPED: [Syscall; 6] = [Syscall::Exit, Syscall::ThreadCreate, Syscall::Recv, Syscall::ReplyRecv, Syscall::Call, Syscall::NotifyWait];
        if SKIPPED.iter().any(|s| *s as u64 == number) {
            continue;
        }
        let status = syscall::raw_call(number, args);
        if status != 0 && Error::from_status(status).is_none() {
            return 30;
        }
    }
    0
}

/// The cases the kernel once got wrong or could: ranges that wrap, user memory that is not user
/// RAM, counts no quota pays for. Each is refused with its error code; the capabilities the
/// kernel test gave (I/O ports on x86, an MMIO page above 4 GiB) are deleted afterwards, out of
/// the random stream's reach.
fn hostile_arithmetic() -> Result<(), u64> {
    const HIGH_WINDOW: u64 = 0x6000_0000;
    let expect = |code: u64, got: Result<(), Error>, wanted: Error| {
        if got == Err(wanted) {
            Ok(())
        } else {
            println!("usertest: hostile case {code}: {got:?}, expected {wanted:?}");
            Err(code)
        }
    };
    #[cfg(target_arch = "x86_64")]
    {
        // port + width wraps past 2^64 to a port below the range's end.
        let ports = scenario::IO_PORTS_SLOT;
        expect(200, syscall::ioport_read(ports, u64::MAX - 1, 4).map(|_| ()), Error::OutOfRange)?;
        expect(201, syscall::ioport_write(ports, u64::MAX - 3, 4, 0), Error::OutOfRange)?;
        expect(202, syscall::ioport_read(ports, u64::MAX, 1).map(|_| ()), Error::OutOfRange)?;
        // The range's last port, one byte wide, is inside (a check that is too strict fails here).
        expect(203, syscall::ioport_read(ports, 0xCFF, 2).map(|_| ()), Error::OutOfRange)?;
        if syscall::ioport_read(ports, 0xCFF, 1).is_err() {
            return Err(204);
        }
        if syscall::cap_delete(ports).is_err() {
            return Err(205);
        }
    }
    // Device memory above 4 GiB: mappable, but the kernel never reads it for a system call.
    let high = scenario::HIGH_MMIO_SLOT;
    if syscall::mmio_map(high, HIGH_WINDOW, 0, 1).is_err() {
        return Err(210);
    }
    expect(211, syscall::debug_write_raw(HIGH_WINDOW, 16), Error::BadAddress)?;
    expect(212, syscall::debug_write_raw(HIGH_WINDOW + 4090, 16), Error::BadAddress)?;
    expect(213, syscall::mmio_map(high, HIGH_WINDOW + 0x1000, u64::MAX, 2), Error::OutOfRange)?;
    expect(214, syscall::mmio_map(high, HIGH_WINDOW + 0x1000, 1, u64::MAX), Error::InvalidArgument)?;
    expect(215, syscall::mmio_carve(high, u64::MAX, 2, 40, kernel_abi::Rights::READ), Error::OutOfRange)?;
    if syscall::unmap(HIGH_WINDOW, 1).is_err() || syscall::cap_delete(high).is_err() {
        return Err(216);
    }
    // Unmapped, kernel, wrapping and huge.
    expect(220, syscall::debug_write_raw(HIGH_WINDOW, 16), Error::BadAddress)?;
    expect(221, syscall::debug_write_raw(0xFFFF_8000_0000_0000, 16), Error::BadAddress)?;
    expect(222, syscall::debug_write_raw(0xFFFF_FFFF_8020_0000, 16), Error::BadAddress)?;
    expect(223, syscall::debug_write_raw(0x0000_7FFF_FFFF_FFF8, 16), Error::BadAddress)?;
    expect(224, syscall::debug_write_raw(0x1000, u64::MAX), Error::InvalidArgument)?;
    expect(225, syscall::unmap(0x1000, u64::MAX), Error::InvalidArgument)?;
    expect(226, syscall::unmap(0x1000, 1 << 40), Error::BadAddress)?;
    expect(227, syscall::unmap(u64::MAX - 0xFFF, 1), Error::BadAddress)?;
    if syscall::mem_alloc(1, slot::MEMORY, kernel_abi::MemFlags::empty()).is_err() {
        return Err(230);
    }
    expect(231, syscall::mem_map(slot::MEMORY, 0x1000, u64::MAX, 2, kernel_abi::MapFlags::empty()), Error::OutOfRange)?;
    expect(232, syscall::mem_map(slot::MEMORY, u64::MAX - 0xFFF, 0, 1, kernel_abi::MapFlags::empty()), Error::BadAddress)?;
    // mem_protect takes rights away only, and only from the caller's own mappings.
    let none = kernel_abi::MapFlags::empty();
    expect(290, syscall::mem_protect(0x1000, u64::MAX, none), Error::InvalidArgument)?;
    expect(291, syscall::mem_protect(0x1000, 1 << 40, none), Error::BadAddress)?;
    expect(292, syscall::mem_protect(u64::MAX - 0xFFF, 1, none), Error::BadAddress)?;
    expect(293, syscall::mem_protect(0xFFFF_8000_0000_0000, 1, none), Error::BadAddress)?;
    expect(294, syscall::mem_protect(HIGH_WINDOW, 1, none), Error::NotMapped)?;
    let unknown_flags = syscall::raw_call(Syscall::MemProtect as u64, [HIGH_WINDOW, 1, 1 << 40, 0, 0, 0]);
    expect(295, Error::from_status(unknown_flags).map_or(Ok(()), Err), Error::InvalidArgument)?;
    if syscall::mem_map(slot::MEMORY, HIGH_WINDOW, 0, 1, none).is_err() {
        return Err(296);
    }
    expect(297, syscall::mem_protect(HIGH_WINDOW, 1, kernel_abi::MapFlags::WRITE), Error::MissingRights)?;
    expect(298, syscall::mem_protect(HIGH_WINDOW, 2, none), Error::NotMapped)?;
    if syscall::mem_protect(HIGH_WINDOW, 1, none).is_err() || syscall::unmap(HIGH_WINDOW, 1).is_err() {
        return Err(299);
    }
    // One page mapped again and again: the page tables and records run the quota out.
    let made = map_until_refused(slot::MEMORY)?;
    if made < 16 {
        return Err(233);
    }
    unmap_all(made)?;
    // Every charge came back: exactly as many fit again.
    if map_until_refused(slot::MEMORY)? != made {
        return Err(234);
    }
    unmap_all(made)?;
    if syscall::cap_delete(slot::MEMORY).is_err() {
        return Err(235);
    }
    Ok(())
}

/// MAP_MANY's addresses: 1 GiB apart, so that each mapping needs tables of its own.
const MAP_MANY_BASE: u64 = 0x100_0000_0000;
const MAP_MANY_STRIDE: u64 = 1 << 30;
const MAP_MANY_LIMIT: u64 = 16_384;

/// Maps page 0 of `memory` read-only at MAP_MANY_BASE + i * MAP_MANY_STRIDE, i = 0, 1, ...
/// until the kernel refuses; how many it made, if the refusal was OutOfMemory.
fn map_until_refused(memory: u64) -> Result<u64, u64> {
    for made in 0..MAP_MANY_LIMIT {
        match syscall::mem_map(memory, MAP_MANY_BASE + made * MAP_MANY_STRIDE, 0, 1, kernel_abi::MapFlags::empty()) {
            Ok(()) => {}
            Err(Error::OutOfMemory) => return Ok(made),
            Err(e) => {
                println!("usertest: mapping {made} refused with {e:?}");
                return Err(240);
            }
        }
    }
    Err(241)
}

fn unmap_all(made: u64) -> Result<(), u64> {
    (0..made).try_for_each(|i| syscall::unmap(MAP_MANY_BASE + i * MAP_MANY_STRIDE, 1)).map_err(|_| 242)
}

fn map_many() -> u64 {
    if syscall::mem_alloc(1, slot::MEMORY, kernel_abi::MemFlags::empty()).is_err() {
        return 243;
    }
    let made = match map_until_refused(slot::MEMORY) {
        Ok(made) => made,
        Err(code) => return code,
    };
    // The kernel test runs another process now.
    if syscall::notify_wait(scenario::MAP_MANY_NOTIFICATION_SLOT).is_err() {
        return 244;
    }
    if let Err(code) = unmap_all(made) {
        return code;
    }
    // Left mapped: the exit returns these charges.
    match map_until_refused(slot::MEMORY) {
        Ok(again) if again == made => scenario::MAPPINGS_MADE + made,
        Ok(_) => 245,
        Err(code) => code,
    }
}

/// MAP_MANY's bystander: its own quota is untouched by the other's exhaustion.
fn map_one() -> u64 {
    if make_pattern_page(3).is_err() {
        return 246;
    }
    0
}

/// Slots of the EDU_IRQ scenario: the PCI configuration space (ECAM), the PCI MMIO window, a
/// notification, and from `EDU_IRQ_LINES` on the interrupt lines it may use (x86: one MSI
/// line; aarch64: INTA..INTD).
mod edu_slot {
    pub const ECAM: u64 = 1;
    pub const PCI_MMIO: u64 = 2;
    pub const NOTIFICATION: u64 = 3;
    pub const IRQ_LINES: u64 = 4;
    /// Where the driver carves its BAR's capability (the lines take 4..8).
    pub const BAR: u64 = 10;
}

const ECAM_WINDOW: u64 = 0x3000_0000;
const EDU_WINDOW: u64 = 0x3100_0000;
const EDU_ID: u32 = 0x11e8_1234;

fn mmio_read32(va: u64) -> u32 {
    // SAFETY: callers pass addresses inside MMIO pages this program mapped.
    unsafe { core::ptr::read_volatile(va as *const u32) }
}

fn mmio_write32(va: u64, value: u32) {
    // SAFETY: callers pass addresses inside MMIO pages this program mapped writable.
    unsafe { core::ptr::write_volatile(va as *mut u32, value) }
}

/// Where a device writes an MSI: x86's interrupt range (to the boot CPU, fixed destination);
/// on arm `virt`'s GICv2m frame, register MSI_SETSPI_NS.
#[cfg(target_arch = "x86_64")]
const MSI_ADDRESS: u32 = 0xFEE0_0000;
#[cfg(target_arch = "aarch64")]
const MSI_ADDRESS: u32 = 0x0802_0040;

/// A user-level driver that takes the edu device's interrupt through an IRQ capability and a
/// notification: finds the device on bus 0, assigns its BAR where no firmware did (aarch64),
/// routes its interrupt (an MSI where the root task gave MSI lines: x86 vector 0x50 = line 1000,
/// arm a GICv2m SPI; else arm's INTx swizzled onto SPIs 3..6), raises it twice through register
/// 0x60 and acknowledges each.
fn edu_irq() -> u64 {
    match edu_irq_rounds() {
        Ok(()) => 0,
        Err(code) => code,
    }
}

/// The edu device, found and set up by `edu_open`.
struct Edu {
    /// Where its configuration space is mapped.
    config: u64,
    /// Its slot on bus 0.
    dev: u64,
    /// Whether it signals by MSI (bus mastering on, INTx off) rather than INTx.
    use_msi: bool,
}

/// Finds the edu device on bus 0, assigns its BAR where no firmware did (aarch64), carves a
/// capability to the BAR and maps it at EDU_WINDOW; enables bus mastering if it will use MSI.
fn edu_open() -> Result<Edu, u64> {
    // Bus 0: 32 devices x 8 functions x 4 KiB of configuration space.
    if syscall::mmio_map(edu_slot::ECAM, ECAM_WINDOW, 0, 256).is_err() {
        return Err(100);
    }
    let Some(dev) = (0..32u64).find(|d| mmio_read32(ECAM_WINDOW + (d << 15)) == EDU_ID) else { return Err(101) };
    let config = ECAM_WINDOW + (dev << 15);
    let Ok((window_base, window_size)) = syscall::mmio_info(edu_slot::PCI_MMIO) else { return Err(102) };
    let mut bar = (mmio_read32(config + 0x10) & !0xF) as u64;
    if bar == 0 {
        // No firmware assigned BARs (aarch64 virt): BAR0 is 1 MiB, put it at the window's base.
        bar = window_base;
        mmio_write32(config + 0x10, bar as u32);
    }
    if bar < window_base || bar >= window_base + window_size {
        return Err(103);
    }
    const MEMORY_SPACE: u32 = 1 << 1;
    const BUS_MASTER: u32 = 1 << 2;
    const INTX_DISABLE: u32 = 1 << 10;
    let command = mmio_read32(config + 0x04) & 0xFFFF;
    // The root task gives MSI lines where the machine has them (x86; arm with virt's GICv2m),
    // else virt's PCI INTx lines (SPIs 3..6, INTIDs 35..38).
    let Ok(first_line) = syscall::irq_info(edu_slot::IRQ_LINES) else { return Err(112) };
    let use_msi = cfg!(target_arch = "x86_64") || !(35..39).contains(&first_line);
    // An MSI is a memory write by the device: it needs bus mastering. No IOMMU translates for
    // this device here (nobody enabled it), and interrupt remapping is off.
    let msi_bits = if use_msi { BUS_MASTER | INTX_DISABLE } else { 0 };
    mmio_write32(config + 0x04, command | MEMORY_SPACE | msi_bits);
    // The driver keeps a capability to its BAR only, carved out of the PCI window.
    const BAR_PAGES: u64 = 256;
    let first_page = (bar - window_base) / 4096;
    let rw = kernel_abi::Rights::READ.union(kernel_abi::Rights::WRITE);
    if syscall::mmio_carve(edu_slot::PCI_MMIO, first_page, BAR_PAGES, edu_slot::BAR, rw).is_err()
        || syscall::mmio_info(edu_slot::BAR) != Ok((bar, BAR_PAGES * 4096))
        || syscall::mmio_carve(edu_slot::PCI_MMIO, window_size / 4096, 1, edu_slot::BAR + 1, rw) != Err(Error::OutOfRange)
        || syscall::mmio_carve(edu_slot::BAR, 0, 1, edu_slot::BAR + 1, rw) != Err(Error::MissingRights)
    {
        return Err(113);
    }
    if syscall::mmio_map(edu_slot::BAR, EDU_WINDOW, 0, 1).is_err() {
        return Err(104);
    }
    if mmio_read32(EDU_WINDOW) != 0x0100_00ed {
        return Err(105);
    }
    Ok(Edu { config, dev, use_msi })
}

/// Finds the device's MSI capability (ID 5, PCI 3.0 §6.8.1), aims it at MSI_ADDRESS with
/// `data` and enables it; returns where the data register is, for `data` to be changed.
fn edu_enable_msi(config: u64, data: u32) -> Result<u64, u64> {
    let mut cap = mmio_read32(config + 0x34) as u64 & 0xFC;
    while cap != 0 && mmio_read32(config + cap) & 0xFF != 0x05 {
        cap = (mmio_read32(config + cap) >> 8) as u64 & 0xFC;
    }
    if cap == 0 {
        return Err(106);
    }
    let control = mmio_read32(config + cap) >> 16;
    let is_64bit = control & (1 << 7) != 0;
    mmio_write32(config + cap + 4, MSI_ADDRESS);
    let data_offset = if is_64bit {
        mmio_write32(config + cap + 8, 0);
        12
    } else {
        8
    };
    mmio_write32(config + cap + data_offset, data);
    mmio_write32(config + cap, (control | 1) << 16 | (mmio_read32(config + cap) & 0xFFFF));
    Ok(config + cap + data_offset)
}

/// The driver part of EDU_IRQ: the device's interrupt, raised twice, reaches the notification.
fn edu_irq_rounds() -> Result<(), u64> {
    let Edu { config, dev, use_msi } = edu_open()?;
    let Ok(first_line) = syscall::irq_info(edu_slot::IRQ_LINES) else { return Err(112) };
    let irq_slot = if use_msi {
        // x86: the vector (line 1000 is vector 0x50); GICv2m: the SPI's INTID.
        let data = if cfg!(target_arch = "x86_64") { 0x50 } else { first_line as u32 };
        edu_enable_msi(config, data)?;
        edu_slot::IRQ_LINES
    } else {
        // virt's interrupt-map: slot d, pin p (1 = INTA) -> SPI 3 + (d + p - 1) % 4.
        let pin = (mmio_read32(config + 0x3C) >> 8) as u64 & 0xFF;
        if pin == 0 {
            return Err(107);
        }
        edu_slot::IRQ_LINES + (dev + pin - 1) % 4
    };
    // x86: MSI line 1000 (vector 0x50); arm: virt's GICv2m SPIs (INTIDs 80..143) or INTx.
    let expected_lines = match (use_msi, cfg!(target_arch = "x86_64")) {
        (true, true) => 1000..1001,
        (true, false) => 80..144,
        (false, _) => 35..39,
    };
    let Ok(line) = syscall::irq_info(irq_slot) else { return Err(112) };
    if !expected_lines.contains(&line) {
        return Err(112);
    }
    if syscall::irq_bind(irq_slot, edu_slot::NOTIFICATION, 0).is_err() {
        return Err(108);
    }
    // Round 1 is acknowledged with `irq_ack`, round 2 with the wait of round 3 (`notify_wait`
    // with ACK_IRQ; a bit signalled by hand makes that wait return at once): round 3's
    // interrupt arrives only if that acknowledged the line.
    for round in 1..=3u32 {
        mmio_write32(EDU_WINDOW + 0x60, round);
        match syscall::notify_wait(edu_slot::NOTIFICATION) {
            Ok(bits) if bits & 1 != 0 => {}
            _ => return Err(109),
        }
        let status = mmio_read32(EDU_WINDOW + 0x24);
        if status != round {
            return Err(110);
        }
        mmio_write32(EDU_WINDOW + 0x64, status);
        match round {
            1 => syscall::irq_ack(irq_slot).map_err(|_| 111u64)?,
            2 => edu_acknowledge_with_wait(irq_slot)?,
            _ => {}
        }
    }
    println!("edu driver: interrupt ({} on line {line}) received three times, acknowledged alone and with a wait", if use_msi { "MSI" } else { "INTx" });
    Ok(())
}

/// Acknowledges `irq` with a `notify_wait` that returns at once (a bit signalled first), after
/// checking that flags it does not know and an acknowledgement naming no IRQ capability are
/// refused without waiting (the notification has no bit set then: a wait would not return).
fn edu_acknowledge_with_wait(irq: u64) -> Result<(), u64> {
    let notification = edu_slot::NOTIFICATION;
    let unknown_flag = syscall::raw_call(Syscall::NotifyWait as u64, [notification, 1 << 1, irq, 0, 0, 0]);
    if unknown_flag != Error::InvalidArgument as u64 {
        return Err(120);
    }
    if syscall::irq_ack_and_wait(notification, notification) != Err(Error::WrongType) {
        return Err(121);
    }
    syscall::notify_signal(notification, 1 << 1).map_err(|_| 122u64)?;
    match syscall::irq_ack_and_wait(irq, notification) {
        Ok(bits) if bits == 1 << 1 => Ok(()),
        _ => Err(123),
    }
}

/// EDU_EXCEPTION_VECTORS: the device's MSI names exception vectors, which the kernel must take
/// as spurious interrupts (this process runs on); then a real page fault ends the process.
fn edu_exception_vectors() -> u64 {
    let setup = edu_open().and_then(|edu| edu_enable_msi(edu.config, 0x50));
    let data_register = match setup {
        Ok(register) => register,
        Err(code) => return code,
    };
    for vector in scenario::EXCEPTION_VECTORS_RAISED {
        mmio_write32(data_register, vector as u32);
        mmio_write32(EDU_WINDOW + 0x60, 1);
        // The MSI arrives while this thread runs user code (or a later system call).
        for _ in 0..10 {
            syscall::yield_now();
        }
        mmio_write32(EDU_WINDOW + 0x64, mmio_read32(EDU_WINDOW + 0x24));
    }
    // SAFETY: deliberately reads address 0: the kernel must kill this process.
    unsafe { core::ptr::read_volatile(core::ptr::null::<u64>()) }
}

/// Memory-object queries the IOMMU server relies on: identity and size, range pins with their
/// physical addresses, and the refusals.
fn mem_queries() -> u64 {
    const AUTHORITY: u64 = scenario::AUTHORITY_SLOT;
    if syscall::mem_alloc(3, slot::MEMORY, kernel_abi::MemFlags::empty()).is_err() {
        return 120;
    }
    let Ok((serial, pages, rights)) = syscall::mem_info(slot::MEMORY) else { return 121 };
    if pages != 3 || serial == 0 || !rights.contains(kernel_abi::Rights::WRITE) {
        return 122;
    }
    let read_only = kernel_abi::Rights::READ.union(kernel_abi::Rights::GRANT);
    if syscall::cap_derive(slot::MEMORY, slot::MEMORY_COPY, read_only, 0).is_err()
        || syscall::mem_info(slot::MEMORY_COPY) != Ok((serial, 3, read_only))
    {
        return 123;
    }
    let mut phys = [0u64; 3];
    let Ok(range_pin) = syscall::mem_pin_range(AUTHORITY, slot::MEMORY, 0, &mut phys) else { return 124 };
    if phys.iter().any(|p| *p == 0 || p % 4096 != 0) || phys[0] == phys[1] || phys[1] == phys[2] {
        return 125;
    }
    let Ok((page_pin, phys1)) = syscall::mem_pin(AUTHORITY, slot::MEMORY, 1) else { return 126 };
    if phys1 != phys[1] {
        return 127;
    }
    let mut too_many = [0u64; 2];
    if syscall::mem_pin_range(AUTHORITY, slot::MEMORY, 2, &mut too_many) != Err(Error::OutOfRange) {
        return 128;
    }
    // The output buffer must be writable user memory: code is not.
    let code = mem_queries as fn() -> u64 as usize as u64;
    let status = syscall::raw_call(Syscall::MemPinRange as u64, [AUTHORITY, slot::MEMORY, 0, 1, code, 0]);
    if status != Error::BadAddress as u64 {
        return 129;
    }
    // Only a DMA authority lets a process pin.
    if syscall::mem_pin_range(slot::MEMORY, slot::MEMORY, 0, &mut phys) != Err(Error::WrongType) {
        return 130;
    }
    if syscall::mem_unpin(range_pin).is_err() || syscall::mem_unpin(page_pin).is_err() || syscall::mem_unpin(page_pin).is_ok() {
        return 131;
    }
    0
}

static LOW_PRIORITY_RAN: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
const PRIORITY_NOTIFICATION: u64 = 20;
const PRIORITY_STACK: u64 = 21;
const LOW_STACK_WINDOW: u64 = 0x4000_0000;

/// The low-priority thread: records that it ran, wakes the main thread, then waits forever.
extern "C" fn low_priority_thread(_arg: u64) -> ! {
    LOW_PRIORITY_RAN.store(1, core::sync::atomic::Ordering::SeqCst);
    let _ = syscall::notify_signal(PRIORITY_NOTIFICATION, 1);
    loop {
        let _ = syscall::notify_wait(PRIORITY_NOTIFICATION);
    }
}

/// Strict priorities: a runnable thread of priority 4 (the start priority) keeps a priority-1
/// thread off the CPU, even across yields; once it blocks, the low thread runs, and its signal
/// hands the CPU straight back. A thread cannot be created above its creator's priority.
fn priorities() -> u64 {
    use core::sync::atomic::Ordering::SeqCst;
    if syscall::notification_create(PRIORITY_NOTIFICATION).is_err()
        || syscall::mem_alloc(4, PRIORITY_STACK, kernel_abi::MemFlags::empty()).is_err()
        || syscall::mem_map(PRIORITY_STACK, LOW_STACK_WINDOW, 0, 4, kernel_abi::MapFlags::WRITE).is_err()
    {
        return 140;
    }
    let stack_top = LOW_STACK_WINDOW + 4 * 4096;
    if syscall::thread_create(low_priority_thread, stack_top, 0, 5) != Err(Error::InvalidArgument) {
        return 141;
    }
    if syscall::thread_create(low_priority_thread, stack_top, 0, 1).is_err() {
        return 142;
    }
    for _ in 0..100 {
        syscall::yield_now();
    }
    if LOW_PRIORITY_RAN.load(SeqCst) != 0 {
        return 143;
    }
    match syscall::notify_wait(PRIORITY_NOTIFICATION) {
        Ok(bits) if bits & 1 != 0 && LOW_PRIORITY_RAN.load(SeqCst) == 1 => 0,
        _ => 144,
    }
}

/// Reads the host bridge's vendor/device ID through the PCI configuration ports (x86 port
/// I/O through a capability) and checks it against ECAM; out-of-range ports and bad widths
/// are refused.
fn io_ports() -> u64 {
    const PORTS: u64 = scenario::IO_PORTS_SLOT;
    const CONFIG_ADDRESS: u64 = 0xCF8;
    const CONFIG_DATA: u64 = 0xCFC;
    if syscall::mmio_map(scenario::IO_PORTS_ECAM_SLOT, ECAM_WINDOW, 0, 1).is_err() {
        return 150;
    }
    let ecam_id = mmio_read32(ECAM_WINDOW) as u64;
    // Enable bit 31, bus 0, device 0, function 0, register 0.
    if syscall::ioport_write(PORTS, CONFIG_ADDRESS, 4, 0x8000_0000).is_err() {
        return 151;
    }
    match syscall::ioport_read(PORTS, CONFIG_DATA, 4) {
        Ok(id) if id == ecam_id && id != 0xFFFF_FFFF => {}
        _ => return 152,
    }
    if syscall::ioport_read(PORTS, 0xCF7, 1) != Err(Error::OutOfRange)
        || syscall::ioport_read(PORTS, 0xCFE, 4) != Err(Error::OutOfRange)
        || syscall::ioport_read(PORTS, CONFIG_DATA, 3) != Err(Error::InvalidArgument)
        || syscall::ioport_read(scenario::IO_PORTS_ECAM_SLOT, CONFIG_DATA, 4) != Err(Error::WrongType)
    {
        return 153;
    }
    0
}

/// Endpoints and notifications are paid from the creator's quota: they can be made until the
/// quota refuses with OutOfMemory, and deleting one pays for another. The exit status tells the
/// kernel test how many were made, to compare with what the quota had left.
fn kernel_object_quota() -> u64 {
    const FIRST: u64 = 100;
    let create = |slot: u64| {
        if slot.is_multiple_of(2) {
            syscall::endpoint_create(slot)
        } else {
            syscall::notification_create(slot)
        }
    };
    let mut made = 0;
    let refusal = loop {
        let slot = FIRST + made;
        if slot >= kernel_abi::CSPACE_SLOTS {
            return 150;
        }
        match create(slot) {
            Ok(()) => made += 1,
            Err(error) => break error,
        }
    };
    if refusal != Error::OutOfMemory {
        println!("usertest: {made} kernel objects made, then {refusal:?}");
        return 151;
    }
    if syscall::cap_delete(FIRST).is_err() || create(FIRST).is_err() {
        return 152;
    }
    if create(FIRST + made).is_ok() {
        return 153;
    }
    scenario::KERNEL_OBJECTS_MADE + made
}

/// IPC_SCHEDULING: the main thread (priority 4) calls a server thread (priority 2) of its own
/// process; other threads show who ran first by what they record.
mod ipc_scheduling {
    use core::sync::atomic::{AtomicU64, Ordering::SeqCst};
    use kernel_abi::{Error, ObjectType, Rights, NO_CAP};
    use userlib::syscall;

    /// Slots (clear of the other scenarios': each scenario runs in a process of its own anyway).
    const ENDPOINT: u64 = 30;
    const PARK: u64 = 31;
    const DONE: u64 = 32;
    const STACKS: u64 = 33;
    const MEMORY: u64 = 34;
    const COPY: u64 = 35;
    const SERVER_RECEIVED: u64 = 36;
    const SECOND_ENDPOINT: u64 = 37;
    const MAIN_RECEIVED: u64 = 38;

    const STACK_WINDOW: u64 = 0x5000_0000;
    const STACK_PAGES: u64 = 4;
    const THREADS: u64 = 5;

    const SERVER_PRIORITY: u64 = 2;

    /// Requests (word 0) and the server's answers.
    const PING: u64 = 1;
    const PONG: u64 = 2;
    const REPORT: u64 = 3;
    const DROP: u64 = 4;
    const HOLD: u64 = 5;

    /// Set by the priority-4 thread and by the thread the server makes, when they first run.
    static READY_THREAD_RAN: AtomicU64 = AtomicU64::new(0);
    static SERVER_THREAD_RAN: AtomicU64 = AtomicU64::new(0);

    fn stack(index: u64) -> u64 {
        STACK_WINDOW + (index + 1) * STACK_PAGES * 4096
    }

    fn read_only() -> Rights {
        Rights::READ.union(Rights::GRANT)
    }

    /// Whether `slot` holds a memory capability.
    fn holds_memory(slot: u64) -> bool {
        matches!(syscall::cap_info(slot), Ok((kind, _, _)) if kind == ObjectType::Memory as u64)
    }

    /// Yields until the second caller has taken the capability in COPY into its call, as it
    /// does when it runs (a timer tick may also send it to the back of the queue first).
    fn second_caller_took_copy() -> bool {
        (0..100).any(|_| {
            syscall::yield_now();
            syscall::cap_info(COPY) == Err(Error::InvalidCapability)
        })
    }

    /// Waits forever on a notification nobody signals.
    fn park() -> ! {
        loop {
            let _ = syscall::notify_wait(PARK);
        }
    }

    /// Serves PING (answers PONG if a memory capability came with it), REPORT (whether the
    /// priority-4 thread had run when the message arrived, whether a memory capability came), DROP (leaves the caller
    /// unanswered), HOLD (makes a thread of its own priority, then answers). A received
    /// capability is deleted again. An unexpected message ends the process with code 190.
    extern "C" fn server(_arg: u64) -> ! {
        let mut answer = None;
        loop {
            let received = match answer {
                Some(words) => syscall::reply_recv(ENDPOINT, SERVER_RECEIVED, words),
                None => syscall::recv(ENDPOINT, SERVER_RECEIVED),
            };
            // Read before any other system call: one would let a ready higher-priority thread run.
            let ready_thread_ran = READY_THREAD_RAN.load(SeqCst);
            let Ok(m) = received else { syscall::exit(190) };
            let memory = m.cap_received && holds_memory(SERVER_RECEIVED);
            if m.cap_received && syscall::cap_delete(SERVER_RECEIVED).is_err() {
                syscall::exit(191);
            }
            answer = match m.words[0] {
                PING if memory => Some([PONG, 0, 0, 0]),
                REPORT => Some([ready_thread_ran, memory as u64, 0, 0]),
                DROP => None,
                HOLD => {
                    if syscall::thread_create(server_thread, stack(3), 0, SERVER_PRIORITY).is_err() {
                        syscall::exit(192);
                    }
                    Some([0; 4])
                }
                _ => syscall::exit(193),
            };
        }
    }

    extern "C" fn ready_thread(_arg: u64) -> ! {
        READY_THREAD_RAN.store(1, SeqCst);
        park()
    }

    extern "C" fn server_thread(_arg: u64) -> ! {
        SERVER_THREAD_RAN.store(1, SeqCst);
        park()
    }

    /// Priority 1: calls the server, which makes a thread of priority 2 before it answers;
    /// that thread must run before this one gets the answer. Signals DONE bit 0 if so, bit 1
    /// if not.
    extern "C" fn low_client(_arg: u64) -> ! {
        let answered = syscall::call(ENDPOINT, NO_CAP, [HOLD, 0, 0, 0]).is_ok();
        let bit = if answered && SERVER_THREAD_RAN.load(SeqCst) == 1 { 0 } else { 1 };
        let _ = syscall::notify_signal(DONE, 1 << bit);
        park()
    }

    /// Priority 4, on the second endpoint: its first call carries a capability that is revoked
    /// while it waits; the second carries one and is never answered.
    extern "C" fn second_caller(_arg: u64) -> ! {
        if syscall::call(SECOND_ENDPOINT, COPY, [1, 0, 0, 0]).is_err() {
            syscall::exit(194);
        }
        let _ = syscall::call(SECOND_ENDPOINT, COPY, [2, 0, 0, 0]);
        syscall::exit(195)
    }

    pub fn run() -> u64 {
        if syscall::endpoint_create(ENDPOINT).is_err()
            || syscall::endpoint_create(SECOND_ENDPOINT).is_err()
            || syscall::notification_create(PARK).is_err()
            || syscall::notification_create(DONE).is_err()
            || syscall::mem_alloc(STACK_PAGES * THREADS, STACKS, kernel_abi::MemFlags::empty()).is_err()
            || syscall::mem_map(STACKS, STACK_WINDOW, 0, STACK_PAGES * THREADS, kernel_abi::MapFlags::WRITE).is_err()
            || syscall::mem_alloc(1, MEMORY, kernel_abi::MemFlags::empty()).is_err()
        {
            return 170;
        }
        let copy = || syscall::cap_derive(MEMORY, COPY, read_only(), 0);
        // The server is ready to run but does not wait yet: the call queues with its capability
        // and the server takes both from the queue.
        if syscall::thread_create(server, stack(0), 0, SERVER_PRIORITY).is_err() || copy().is_err() {
            return 171;
        }
        match syscall::call(ENDPOINT, COPY, [PING, 0, 0, 0]) {
            Ok(r) if r.words[0] == PONG => {}
            _ => return 172,
        }
        if syscall::cap_info(COPY) != Err(Error::InvalidCapability) {
            return 173;
        }
        // The server waits now. A thread of this priority is ready: the call wakes the server,
        // but the ready thread runs first.
        if syscall::thread_create(ready_thread, stack(1), 0, kernel_abi::START_PRIORITY).is_err() || copy().is_err() {
            return 174;
        }
        match syscall::call(ENDPOINT, COPY, [REPORT, 0, 0, 0]) {
            Ok(r) if r.words[..2] == [1, 1] => {}
            _ => return 175,
        }
        // A server that receives again without answering leaves its caller with PeerGone.
        if syscall::call(ENDPOINT, NO_CAP, [DROP, 0, 0, 0]) != Err(Error::PeerGone) {
            return 176;
        }
        // The answer to a priority-1 caller waits behind a ready priority-2 thread.
        if syscall::thread_create(low_client, stack(2), 0, 1).is_err() {
            return 177;
        }
        match syscall::notify_wait(DONE) {
            Ok(1) => {}
            _ => return 178,
        }
        // A capability revoked while its call waits in the queue does not arrive.
        if copy().is_err() || syscall::thread_create(second_caller, stack(4), 0, kernel_abi::START_PRIORITY).is_err() {
            return 179;
        }
        if !second_caller_took_copy() || syscall::cap_revoke(MEMORY).is_err() {
            return 180;
        }
        match syscall::recv(SECOND_ENDPOINT, MAIN_RECEIVED) {
            Ok(m) if m.words[0] == 1 && !m.cap_received => {}
            _ => return 181,
        }
        if syscall::cap_info(MAIN_RECEIVED) != Err(Error::InvalidCapability) || copy().is_err() || syscall::reply([0; 4]).is_err() {
            return 182;
        }
        // The second call takes its capability into the queue; the process ends with it there.
        if !second_caller_took_copy() {
            return 183;
        }
        0
    }
}
