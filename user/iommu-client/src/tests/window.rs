//! The window transport end to end on the host: the typed client over [`WindowTransport`],
//! whose system calls reach a simulated kernel with the server's side of `kernel_ipc` behind
//! the endpoint (the window lent at connect, each request read from it and answered into it)
//! and `iommu_core::dispatch` with the fake backend behind that.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::cell::RefCell;

use hwio::SharedWords;
use iommu_abi::kernel_ipc;
use iommu_abi::wire::{IovaChoice, Message, MESSAGE_WORDS};
use iommu_abi::{Error, IovaRange, Perm, UnitCaps, UnitKind};
use iommu_core::fake::{Call, CallLog, FakeBackend, FakeMemory, FakeObject, FakeUnit};
use iommu_core::{
    dispatch, CapabilityVerifier, AddressSpace, ClientId, DeviceGrant, MemoryObjectId, RequesterId, ObjectModel,
    ServerConfig, UnitId, UnitInfo,
};
use kernel_abi::{Rights, NO_CAP};

use crate::window::{CallReply, SystemCalls, WindowPlace, WindowTransport};
use crate::{HwptOptions, Iommu};

const ENDPOINT: u64 = 1;
/// The client's slots: its device and its memory object, as the root task gave them.
const DEVICE_SLOT: u64 = 2;
const MEMORY_SLOT: u64 = 3;
const PLACE_SLOTS: (u64, u64) = (10, 11);

/// What a capability the client holds names, as the server's kernel interface would resolve it.
const DEVICE: u64 = 500;
const MEMORY: u64 = 100;
const WINDOW: u64 = 900;

const CLIENT: ClientId = ClientId(1);
const UNIT: UnitId = UnitId(0);
const RID: RequesterId = RequesterId(0x10);

/// The server's view of the capabilities a request brings: the device and nothing else.
struct Verifier;

impl CapabilityVerifier for Verifier {
    fn device_grant(&mut self, client: ClientId, cap: u64) -> Result<DeviceGrant, Error> {
        match (client, cap) {
            (CLIENT, DEVICE) => Ok(DeviceGrant { unit: UNIT, rid: RID, pasid_bits: 20 }),
            _ => Err(Error::BadCapability),
        }
    }

    fn address_space(&mut self, _client: ClientId, _cap: u64) -> Result<AddressSpace, Error> {
        Err(Error::BadCapability)
    }
}

/// The kernel as the client sees it, with the server behind `ENDPOINT`.
struct SimulatedKernel {
    /// The client's capability space: slot -> what the capability names.
    slots: BTreeMap<u64, u64>,
    /// The server's window page, which it lends at connect (`Rc`: it outlives the connection).
    window: Rc<RefCell<Box<[u64; 512]>>>,
    connected: bool,
    /// The server is a new instance that replaced the one the client connected to
    /// (`start::RESTARTED`).
    restarted: bool,
    /// Words of every `call` that reached the server, and what capability came with each.
    calls: Vec<([u64; 4], Option<u64>)>,
    /// The next `call` fails in the kernel with this error, reaching no server.
    fail_next_call: Option<kernel_abi::Error>,
    server: ObjectModel<FakeBackend, FakeMemory>,
    log: CallLog,
}

impl SimulatedKernel {
    fn new() -> Self {
        let log: CallLog = Rc::new(RefCell::new(Vec::new()));
        let mut backend = FakeBackend::new(log.clone());
        backend.add_unit(
            UNIT,
            FakeUnit {
                info: UnitInfo { kind: UnitKind::IntelVtd, caps: UnitCaps::default() },
                aperture: IovaRange { start: 0, last: (1 << 48) - 1 },
                page_sizes: (1 << 12) | (1 << 21),
                reserved: BTreeMap::new(),
            },
        );
        let mut memory = FakeMemory::new(log.clone());
        let object = FakeObject { id: MemoryObjectId(1), owner: CLIENT, size: 0x10_0000, writable: true, phys_base: 0x8000_0000, scattered: false };
        memory.add_object(MEMORY, object);
        let mut server = ObjectModel::new(backend, memory, ServerConfig::default());
        assert!(server.open_client(CLIENT));
        SimulatedKernel {
            slots: BTreeMap::from([(DEVICE_SLOT, DEVICE), (MEMORY_SLOT, MEMORY)]),
            window: Rc::new(RefCell::new(Box::new([0; 512]))),
            connected: false,
            restarted: false,
            calls: Vec::new(),
            fail_next_call: None,
            server,
            log,
        }
    }

    fn window_address(&self) -> u64 {
        self.window.borrow().as_ptr() as u64
    }

    /// The server's side of one transport call (`kernel_ipc`): the reply's status word.
    fn serve(&mut self, words: [u64; 4], cap: Option<u64>) -> u64 {
        match words[0] {
            kernel_ipc::CONNECT if self.connected => kernel_ipc::STATUS_BAD_WINDOW,
            kernel_ipc::CONNECT => match self.slots.contains_key(&words[1]) {
                true => kernel_ipc::STATUS_BAD_WINDOW,
                false => {
                    self.slots.insert(words[1], WINDOW);
                    self.connected = true;
                    0
                }
            },
            kernel_ipc::REQUEST if !self.connected && self.restarted => kernel_ipc::STATUS_SERVER_RESTARTED,
            kernel_ipc::REQUEST if !self.connected => kernel_ipc::STATUS_NOT_CONNECTED,
            kernel_ipc::REQUEST => {
                let page = self.window.borrow().as_ptr() as usize;
                // SAFETY: the page is alive as long as the kernel, and aligned.
                let window: SharedWords<MESSAGE_WORDS> = unsafe { SharedWords::at_address(page) };
                let request: Message = window.read_array();
                let reply = dispatch(&mut self.server, &mut Verifier, CLIENT, &request, cap);
                window.write_slice(&reply);
                reply[0]
            }
            kernel_ipc::DISCONNECT => {
                self.connected = false;
                0
            }
            _ => kernel_ipc::STATUS_BAD_TRANSPORT,
        }
    }
}

impl SystemCalls for SimulatedKernel {
    fn call(&mut self, endpoint: u64, cap: u64, words: [u64; 4]) -> Result<CallReply, kernel_abi::Error> {
        if let Some(error) = self.fail_next_call.take() {
            return Err(error);
        }
        assert_eq!(endpoint, ENDPOINT);
        // The call moves the capability to the server.
        let sent = match cap {
            NO_CAP => None,
            slot => Some(self.slots.remove(&slot).ok_or(kernel_abi::Error::InvalidCapability)?),
        };
        self.calls.push((words, sent));
        let status = self.serve(words, sent);
        Ok(CallReply { words: [status, 0, 0, 0], cap_received: false })
    }

    fn map_page(&mut self, memory: u64, virt: u64) -> Result<(), kernel_abi::Error> {
        // The one page this kernel can map is the window, where the server's page is.
        match self.slots.get(&memory) {
            Some(&WINDOW) if virt == self.window_address() => Ok(()),
            _ => Err(kernel_abi::Error::InvalidCapability),
        }
    }

    fn cap_derive(&mut self, source: u64, destination: u64, _rights: Rights) -> Result<(), kernel_abi::Error> {
        let named = *self.slots.get(&source).ok_or(kernel_abi::Error::InvalidCapability)?;
        if self.slots.contains_key(&destination) {
            return Err(kernel_abi::Error::SlotOccupied);
        }
        self.slots.insert(destination, named);
        Ok(())
    }

    fn cap_delete(&mut self, slot: u64) -> Result<(), kernel_abi::Error> {
        self.slots.remove(&slot).map(|_| ()).ok_or(kernel_abi::Error::InvalidCapability)
    }
}

fn connect() -> Iommu<WindowTransport<SimulatedKernel>> {
    let kernel = SimulatedKernel::new();
    let place = WindowPlace { window_slot: PLACE_SLOTS.0, outgoing_slot: PLACE_SLOTS.1, virt: kernel.window_address() };
    match WindowTransport::connect_with(kernel, ENDPOINT, &place) {
        Ok(iommu) => iommu,
        Err(status) => panic!("connect refused: {status:#x}"),
    }
}

fn kernel(iommu: &mut Iommu<WindowTransport<SimulatedKernel>>) -> &mut SimulatedKernel {
    iommu.transport_mut().kernel_mut()
}

#[test]
fn map_and_unmap_through_the_window() {
    let mut iommu = connect();
    let ioas = iommu.ioas_alloc().unwrap();
    let device = iommu.device_bind(DEVICE_SLOT).unwrap();
    let hwpt = iommu.hwpt_alloc(device, ioas, HwptOptions::default()).unwrap();
    iommu.device_attach(device, hwpt, None).unwrap();
    let iova = iommu.ioas_map(ioas, MEMORY_SLOT, 0x2000, 0x3000, IovaChoice::Fixed(0x40_0000), Perm::READ_WRITE).unwrap();
    assert_eq!(iova, 0x40_0000);
    assert_eq!(iommu.ioas_unmap(ioas, iova, 0x3000), Ok(0x3000));

    let kernel = kernel(&mut iommu);
    // Each capability went as a copy, moved by its call; the originals stay the client's.
    let sent: Vec<Option<u64>> = kernel.calls.iter().map(|&(_, cap)| cap).collect();
    assert_eq!(sent, [None, None, Some(DEVICE), None, None, Some(MEMORY), None]);
    assert!(kernel.calls[1..].iter().all(|&(words, _)| words == [kernel_ipc::REQUEST, 0, 0, 0]));
    assert_eq!(kernel.slots.get(&DEVICE_SLOT), Some(&DEVICE));
    assert_eq!(kernel.slots.get(&MEMORY_SLOT), Some(&MEMORY));
    assert_eq!(kernel.slots.get(&PLACE_SLOTS.1), None, "the outgoing slot is empty again");
    let backend_calls: Vec<Call> = kernel.log.borrow().iter().copied().filter(|call| matches!(call, Call::Map { .. } | Call::Unmap { .. })).collect();
    assert!(
        matches!(backend_calls[..], [Call::Map { iova: 0x40_0000, phys: 0x8000_2000, length: 0x3000, .. }, Call::Unmap { iova: 0x40_0000, length: 0x3000, .. }]),
        "{backend_calls:?}"
    );
    assert_eq!(kernel.server.pinned_pages(), 0);
}

#[test]
fn an_error_reply_comes_back_as_the_servers_error() {
    let mut iommu = connect();
    let ioas = iommu.ioas_alloc().unwrap();
    assert_eq!(iommu.ioas_unmap(ioas, 0x1000, 0), Err(Error::ZeroLength));
    assert_eq!(iommu.transport_mut().last_ipc_status, u64::from(Error::ZeroLength.code()));
}

#[test]
fn a_transport_refusal_is_not_taken_for_a_reply() {
    let mut iommu = connect();
    assert_eq!(iommu.transport_mut().disconnect(), 0);
    // The server refuses in the IPC reply and leaves the window alone: it still holds the
    // request. `ioas_alloc`'s is its opcode 1 and seven zero words, which read as a reply
    // would be the error reply UnknownOpcode.
    assert_eq!(iommu.ioas_alloc(), Err(Error::MalformedReply));
    assert_eq!(iommu.transport_mut().last_ipc_status, kernel_ipc::STATUS_NOT_CONNECTED);
}

#[test]
fn a_capability_the_client_lacks_is_refused_before_sending() {
    let mut iommu = connect();
    let before = kernel(&mut iommu).calls.len();
    assert_eq!(iommu.device_bind(77), Err(Error::BadCapability));
    assert_eq!(kernel(&mut iommu).calls.len(), before, "nothing reached the server");
}

#[test]
fn a_failed_call_leaves_no_copy_behind() {
    let mut iommu = connect();
    kernel(&mut iommu).fail_next_call = Some(kernel_abi::Error::PeerGone);
    assert_eq!(iommu.device_bind(DEVICE_SLOT), Err(Error::MalformedReply));
    let kernel = kernel(&mut iommu);
    assert_eq!(kernel.slots.get(&PLACE_SLOTS.1), None, "the copy made for the call is deleted");
    assert_eq!(kernel.slots.get(&DEVICE_SLOT), Some(&DEVICE));
}

#[test]
fn a_refused_connect_reports_the_status() {
    let kernel = SimulatedKernel::new();
    // The slot the window should go to is taken.
    let place = WindowPlace { window_slot: DEVICE_SLOT, outgoing_slot: PLACE_SLOTS.1, virt: kernel.window_address() };
    assert_eq!(WindowTransport::connect_with(kernel, ENDPOINT, &place).err(), Some(kernel_ipc::STATUS_BAD_WINDOW));
}

/// After the server was restarted, the next request fails with `ServerRestarted` (not taken for
/// a reply), and `reconnect_with` gives up the dead server's window (its slot is still
/// occupied, so a plain connect is refused) and connects to the new server.
#[test]
fn a_restarted_server_is_reported_and_reconnecting_replaces_the_window() {
    let mut iommu = connect();
    iommu.ioas_alloc().unwrap();
    let kernel = kernel(&mut iommu);
    kernel.connected = false;
    kernel.restarted = true;
    assert_eq!(iommu.ioas_alloc(), Err(Error::ServerRestarted));
    assert_eq!(iommu.transport_mut().last_ipc_status, kernel_ipc::STATUS_SERVER_RESTARTED);

    // The client's kernel after the restart: the dead server's window is still in its slot.
    let after_restart = || {
        let mut kernel = SimulatedKernel::new();
        kernel.restarted = true;
        kernel.slots.insert(PLACE_SLOTS.0, WINDOW);
        kernel
    };
    let kernel = after_restart();
    let place = WindowPlace { window_slot: PLACE_SLOTS.0, outgoing_slot: PLACE_SLOTS.1, virt: kernel.window_address() };
    match WindowTransport::connect_with(kernel, ENDPOINT, &place) {
        Err(status) => assert_eq!(status, kernel_ipc::STATUS_BAD_WINDOW),
        Ok(_) => panic!("a connect over the old window's slot was accepted"),
    }
    let kernel = after_restart();
    let place = WindowPlace { virt: kernel.window_address(), ..place };
    let mut iommu = WindowTransport::reconnect_with(kernel, ENDPOINT, &place).unwrap_or_else(|status| panic!("reconnect refused: {status:#x}"));
    iommu.ioas_alloc().expect("the reconnected client is served");
}
