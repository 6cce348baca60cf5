//! WINDOW_TAKEN: a driver that does to its message windows whatever it can — revoke and delete
//! the window capability the server lent it, before its requests, while a second thread races
//! them, and after them — and checks that the server keeps answering. The window is the
//! server's page, mapped through the server's own capability: the driver only ever loses its
//! own view of it, and requests it makes without a view are still read from and answered into
//! the server's page (a client can only garble its own requests that way).

use iommu_client::WindowPlace;
use crate::{check, slot, va, Client, Outcome};
use core::sync::atomic::{AtomicU64, Ordering::SeqCst};
use iommu_abi::{kernel_ipc, Error, IoasId, PAGE_SIZE};
use iommu_client::IovaRangesPage;
use kernel_abi::{MapFlags, ObjectType, Rights, NO_CAP};
use userlib::{println, syscall};

/// Requests the main thread makes while the racer takes the window away, and how many of them
/// at least must come after the racer finished.
const RACE_REQUESTS: u64 = 200;
const REQUESTS_AFTER_RACE: u64 = 8;
/// Requests made with no view of the window left.
const BLIND_REQUESTS: u64 = 8;
const RACER_STACK_PAGES: u64 = 16;
/// Instructions to wait for the racer at any one step.
const WAIT_TIMEOUT: u64 = 20_000_000_000;

/// The racer's progress (`racer`), read by the main thread.
static RACER: AtomicU64 = AtomicU64::new(racer::WAITING);

mod racer {
    pub const WAITING: u64 = 0;
    pub const RUNNING: u64 = 1;
    pub const DONE: u64 = 2;
    /// Failed step `n`: `FAILED + n`.
    pub const FAILED: u64 = 100;
}

/// The place of connection `n` (0..3): endpoint slot, window slot, outgoing slot, address.
fn connection(n: usize) -> (u64, WindowPlace) {
    let endpoints = [slot::SERVER, slot::SECOND_SERVER, slot::THIRD_SERVER];
    let windows = [slot::WINDOW, slot::SECOND_WINDOW, slot::THIRD_WINDOW];
    let outgoing = [slot::OUTGOING, slot::SECOND_OUTGOING, slot::THIRD_OUTGOING];
    let addresses = [va::WINDOW, va::SECOND_WINDOW, va::THIRD_WINDOW];
    (endpoints[n], WindowPlace { window_slot: windows[n], outgoing_slot: outgoing[n], virt: addresses[n] })
}

fn connect(n: usize, code: u64) -> Result<Client, (u64, &'static str)> {
    let (endpoint, place) = connection(n);
    iommu_client::connect(endpoint, &place).map_err(|status| {
        println!("edu-driver: connection {n}: connect failed with status {status:#x}");
        (code, "connect")
    })
}

/// One raw transport call: the IPC reply status, or the kernel's error (`PeerGone` if the
/// server died).
fn raw(endpoint: u64, words: [u64; 4]) -> Result<u64, kernel_abi::Error> {
    syscall::call(endpoint, NO_CAP, words).map(|reply| reply.words[0])
}

/// A request made with no view of the window: whatever the server's page holds is dispatched.
/// The server must answer, with success or an object-model error, never a transport status.
fn blind_request(endpoint: u64, code: u64) -> Outcome {
    match raw(endpoint, [kernel_ipc::REQUEST, 0, 0, 0]) {
        Ok(status) if status == 0 || Error::from_code(status as u32).is_some() => Ok(()),
        other => {
            println!("edu-driver: request without a window view: {other:?}");
            Err((code, "the server did not answer a request made without a view of the window"))
        }
    }
}

/// Whether `slot` is empty (its capability was deleted or revoked).
fn empty(slot: u64) -> bool {
    syscall::cap_info(slot) == Err(kernel_abi::Error::InvalidCapability)
}

/// Whether nothing is mapped at `virt` any more (the kernel removed the mapping with the
/// capability it was made through).
fn unmapped(virt: u64) -> bool {
    syscall::unmap(virt, 1) == Err(kernel_abi::Error::NotMapped)
}

pub fn window_taken() -> Outcome {
    let mut first = connect(0, 300)?;

    // What the server lends: its page, READ, WRITE and DERIVE, never GRANT.
    let (kind, rights, _) = syscall::cap_info(slot::WINDOW).map_err(|_| (301, "cap_info of the lent window"))?;
    let expected = Rights::READ.union(Rights::WRITE).union(Rights::DERIVE);
    check(ObjectType::from_u64(kind) == Some(ObjectType::Memory) && Rights::from_bits(rights) == Some(expected), 301, "the lent window is not memory with READ, WRITE and DERIVE only")?;
    let sent = syscall::call(slot::SERVER, slot::WINDOW, [kernel_ipc::REQUEST, 0, 0, 0]);
    check(sent.err() == Some(kernel_abi::Error::MissingRights), 302, "the lent window could be sent on")?;
    check(raw(slot::SERVER, [kernel_ipc::CONNECT, slot::WINDOW_CHILD, 0, 0]) == Ok(kernel_ipc::STATUS_BAD_WINDOW), 303, "a second connect on one connection accepted")?;
    check(empty(slot::WINDOW_CHILD), 303, "a refused connect lent a window")?;

    before_requests()?;
    during_requests(&mut first)?;
    after_requests()?;
    println!("edu-driver: the windows were revoked and deleted before, during and after requests; the server answered every request");
    Ok(())
}

/// Connection 1: refused connects, then the window taken away before any request.
fn before_requests() -> Outcome {
    let (endpoint, place) = connection(1);
    // A connect must name an empty slot of the client; a refused one leaves nothing behind.
    check(raw(endpoint, [kernel_ipc::CONNECT, slot::WINDOW, 0, 0]) == Ok(kernel_ipc::STATUS_BAD_WINDOW), 310, "connect naming an occupied slot accepted")?;
    check(raw(endpoint, [kernel_ipc::CONNECT, 1 << 20, 0, 0]) == Ok(kernel_ipc::STATUS_BAD_WINDOW), 311, "connect naming no slot accepted")?;
    check(raw(endpoint, [kernel_ipc::CONNECT, place.window_slot, 1, 0]) == Ok(kernel_ipc::STATUS_BAD_TRANSPORT), 312, "connect with a stray word accepted")?;
    check(raw(endpoint, [kernel_ipc::REQUEST, 0, 0, 0]) == Ok(kernel_ipc::STATUS_NOT_CONNECTED), 313, "a refused connect left the client connected")?;
    let _second = connect(1, 314)?;

    // A copy of the driver's own, mapped too; a revoke takes it and its mapping, a delete the
    // lent capability and the driver's mapping. Neither reaches the server's mapping.
    syscall::cap_derive(place.window_slot, slot::WINDOW_CHILD, Rights::READ.union(Rights::WRITE), 0).map_err(|_| (315, "derive a copy of the window"))?;
    syscall::mem_map(slot::WINDOW_CHILD, va::WINDOW_CHILD, 0, 1, MapFlags::WRITE).map_err(|_| (315, "map the copy"))?;
    syscall::cap_revoke(place.window_slot).map_err(|_| (316, "revoke the lent window"))?;
    check(empty(slot::WINDOW_CHILD) && unmapped(va::WINDOW_CHILD), 316, "the revoke left the copy or its mapping")?;
    syscall::cap_delete(place.window_slot).map_err(|_| (317, "delete the lent window"))?;
    check(unmapped(place.virt), 317, "the delete left the driver's mapping")?;
    for _ in 0..BLIND_REQUESTS {
        blind_request(endpoint, 318)?;
    }
    check(raw(endpoint, [kernel_ipc::DISCONNECT, 0, 0, 0]) == Ok(0), 319, "disconnect without a window")?;
    check(raw(endpoint, [kernel_ipc::REQUEST, 0, 0, 0]) == Ok(kernel_ipc::STATUS_NOT_CONNECTED), 320, "a request after disconnect accepted")?;

    // The connection can be made again, and the server takes its loan back at disconnect.
    let mut again = connect(1, 321)?;
    let ioas = again.ioas_alloc().map_err(|_| (322, "ioas_alloc after reconnecting"))?;
    again.destroy(ioas.handle()).map_err(|_| (322, "destroy after reconnecting"))?;
    check(again.transport_mut().disconnect() == 0, 323, "disconnect after reconnecting")?;
    check(empty(place.window_slot) && unmapped(place.virt), 324, "the server left its window with the driver after disconnect")?;
    Ok(())
}

/// The racer: takes the window away while the main thread's requests go on. The main thread
/// sees the window through `WINDOW_VIEW`, a copy of the lent capability: deleting the lent
/// capability moves the view under the server's original (the kernel re-parents it), so the
/// main thread keeps its view and can check every reply; the racer's own copy, derived from the
/// view, goes with a revoke of the view.
extern "C" fn racer(_arg: u64) -> ! {
    RACER.store(racer::RUNNING, SeqCst);
    let steps: [&dyn Fn() -> bool; 3] = [
        // A copy of the racer's own, mapped, derived from the view.
        &|| {
            syscall::cap_derive(slot::WINDOW_VIEW, slot::WINDOW_CHILD, Rights::READ.union(Rights::WRITE), 0).is_ok()
                && syscall::mem_map(slot::WINDOW_CHILD, va::WINDOW_CHILD, 0, 1, MapFlags::WRITE).is_ok()
        },
        &|| syscall::cap_delete(slot::WINDOW).is_ok() && empty(slot::WINDOW),
        &|| syscall::cap_revoke(slot::WINDOW_VIEW).is_ok() && empty(slot::WINDOW_CHILD) && unmapped(va::WINDOW_CHILD),
    ];
    for (index, step) in steps.iter().enumerate() {
        if !step() {
            RACER.store(racer::FAILED + index as u64, SeqCst);
            idle();
        }
        syscall::yield_now();
    }
    RACER.store(racer::DONE, SeqCst);
    idle()
}

/// Blocks the calling thread for good (on a notification nobody signals).
fn idle() -> ! {
    loop {
        let _ = syscall::notify_wait(slot::MAPPER_IDLE);
    }
}

fn start_racer() -> Outcome {
    syscall::notification_create(slot::MAPPER_IDLE).map_err(|_| (330, "create the racer's idle notification"))?;
    syscall::mem_alloc(RACER_STACK_PAGES, slot::MAPPER_STACK, kernel_abi::MemFlags::empty()).map_err(|_| (330, "allocate the racer's stack"))?;
    syscall::mem_map(slot::MAPPER_STACK, va::MAPPER_STACK, 0, RACER_STACK_PAGES, MapFlags::WRITE).map_err(|_| (330, "map the racer's stack"))?;
    let stack_top = va::MAPPER_STACK + RACER_STACK_PAGES * PAGE_SIZE;
    syscall::thread_create(racer, stack_top, 0, kernel_abi::START_PRIORITY).map_err(|_| (330, "create the racer thread"))?;
    Ok(())
}

/// Connection 0: requests with every reply checked while the racer revokes and deletes.
fn during_requests(first: &mut Client) -> Outcome {
    // The main thread's view: the lent window mapped again through a copy.
    syscall::cap_derive(slot::WINDOW, slot::WINDOW_VIEW, Rights::READ.union(Rights::WRITE).union(Rights::DERIVE), 0).map_err(|_| (331, "derive the view"))?;
    syscall::unmap(va::WINDOW, 1).map_err(|_| (331, "unmap the lent window"))?;
    syscall::mem_map(slot::WINDOW_VIEW, va::WINDOW, 0, 1, MapFlags::WRITE).map_err(|_| (331, "map the view"))?;
    let ioas: IoasId = first.ioas_alloc().map_err(|_| (332, "ioas_alloc"))?;
    let expected: IovaRangesPage = first.ioas_iova_ranges(ioas, 0).map_err(|_| (333, "ioas_iova_ranges"))?;
    check(expected.total >= 1, 333, "an IOAS without usable IOVA ranges")?;

    start_racer()?;
    let (mut requests, mut after) = (0, 0);
    let start = syscall::instruction_counter();
    while requests < RACE_REQUESTS || after < REQUESTS_AFTER_RACE {
        let state = RACER.load(SeqCst);
        if state >= racer::FAILED {
            println!("edu-driver: racer step {} failed", state - racer::FAILED);
            return Err((334, "the racer could not take the window away"));
        }
        let page = first.ioas_iova_ranges(ioas, 0);
        if page != Ok(expected) {
            println!("edu-driver: request {requests} during the race answered {page:?}");
            return Err((335, "a request during the race was not answered as before"));
        }
        requests += 1;
        if state == racer::DONE {
            after += 1;
        }
        check(syscall::instruction_counter() - start < WAIT_TIMEOUT, 336, "the racer did not finish")?;
        syscall::yield_now();
    }
    println!("edu-driver: {requests} requests answered, {} of them before the racer had revoked and deleted the window capabilities", requests - after);
    first.destroy(ioas.handle()).map_err(|_| (337, "destroy after the race"))?;
    // The server takes back what it lent, also the view the delete moved under its capability.
    check(first.transport_mut().disconnect() == 0, 338, "disconnect after the race")?;
    check(empty(slot::WINDOW_VIEW) && unmapped(va::WINDOW), 339, "the server left the view of its window with the driver")?;
    Ok(())
}

/// Connection 2: requests, then the window revoked and deleted, then requests without it.
fn after_requests() -> Outcome {
    let (endpoint, place) = connection(2);
    let mut third = connect(2, 340)?;
    let ioas = third.ioas_alloc().map_err(|_| (341, "ioas_alloc"))?;
    third.ioas_iova_ranges(ioas, 0).map_err(|_| (341, "ioas_iova_ranges"))?;
    syscall::cap_revoke(place.window_slot).map_err(|_| (342, "revoke the lent window"))?;
    check(!empty(place.window_slot), 342, "a revoke deleted the capability itself")?;
    syscall::cap_delete(place.window_slot).map_err(|_| (343, "delete the lent window"))?;
    check(unmapped(place.virt), 343, "the delete left the driver's mapping")?;
    for _ in 0..BLIND_REQUESTS {
        blind_request(endpoint, 344)?;
    }
    check(raw(endpoint, [kernel_ipc::DISCONNECT, 0, 0, 0]) == Ok(0), 345, "disconnect without a window")?;
    let mut again = connect(2, 346)?;
    let ioas = again.ioas_alloc().map_err(|_| (347, "ioas_alloc after reconnecting"))?;
    again.destroy(ioas.handle()).map_err(|_| (347, "destroy after reconnecting"))?;
    check(again.transport_mut().disconnect() == 0, 348, "disconnect after reconnecting")
}
