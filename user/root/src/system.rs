//! The system: which process runs which image and gets which capabilities. The root task
//! carries one of these descriptions out at boot (its start argument picks it,
//! `kernel_abi::boot_directory::description`); `check` runs at build time (a `const` item),
//! so a description that grants a slot twice, a device to two processes, a badge twice on one
//! endpoint or a capability of a process that does not exist, or that has no IOMMU server
//! with a status page, does not compile. What only the machine can tell (where a device
//! sits, which functions share an isolation group) is checked when the root task loads the
//! description, before any driver starts.

use iommu_server_contract::limits::{check_budgets, Budget, Limits, Refusal};
use kernel_abi::boot_directory::image;
use kernel_abi::Rights;

use crate::driver::{scenario, slot as driver_slot};
use crate::server_slot;

/// Where a granted capability comes from.
#[derive(Clone, Copy)]
pub enum Source {
    /// The boot capability of this name (`kernel_abi::boot_directory`); with `line`, the IRQ
    /// capability of that line among those of the name.
    Boot { name: &'static str, line: Option<u64> },
    /// Every boot capability of this name, into consecutive slots from the grant's (at most
    /// `max`).
    BootAll { name: &'static str, max: u64 },
    /// The endpoint the root task creates under this name, badged.
    Endpoint { name: &'static str, badge: u64 },
    /// A page the IOMMU server reports its state and counters in
    /// (`iommu_server_contract::status`); the root task maps it too, to see the server come up.
    StatusPage,
    /// The page of each client connection's limits (`iommu_server_contract::limits`), which
    /// the root task fills from the drivers' `limits` for the IOMMU server.
    ClientLimits,
    /// The process capability of another process of the description.
    Process { name: &'static str },
    /// A memory BAR of a PCI function, carved out of the PCI window after the IOMMU server
    /// enumerated (on arm: numbered and assigned) the hierarchy. `size` is the BAR's size,
    /// which the IOMMU server checks against what it enumerated when the driver binds.
    PciBar { function: PciFunction, bar: u8, size: u64 },
}

/// Which PCI function a device grant names, wherever it sits in the hierarchy.
#[derive(Clone, Copy)]
pub enum PciFunction {
    /// By location: the segment, the bridges on the way down from the host bridge's bus (each
    /// as device and function on its bus), then device and function on the last bus. Bus
    /// numbers are not part of it: firmware (or, on arm, the IOMMU server) chooses them.
    At { segment: u16, bridges: &'static [(u8, u8)], device: u8, function: u8 },
    /// By match: the `instance`-th function with these IDs, in enumeration order (depth
    /// first from the host bridge's bus).
    Matching { vendor: u16, device: u16, instance: u8 },
}

impl PciFunction {
    const fn same(&self, other: &PciFunction) -> bool {
        match (*self, *other) {
            (PciFunction::At { segment, bridges, device, function }, PciFunction::At { segment: s, bridges: b, device: d, function: f }) => {
                if segment != s || device != d || function != f || bridges.len() != b.len() {
                    return false;
                }
                let mut i = 0;
                while i < bridges.len() {
                    if bridges[i].0 != b[i].0 || bridges[i].1 != b[i].1 {
                        return false;
                    }
                    i += 1;
                }
                true
            }
            (PciFunction::Matching { vendor, device, instance }, PciFunction::Matching { vendor: v, device: d, instance: i }) => {
                vendor == v && device == d && instance == i
            }
            // One by location, one by match: only the machine can tell (checked at load).
            _ => false,
        }
    }
}

/// One capability for one slot of a process.
#[derive(Clone, Copy)]
pub struct Grant {
    pub slot: u64,
    pub source: Source,
    pub rights: Rights,
}

/// What a process is to the root task: the IOMMU server starts first and must report ready;
/// drivers start after it and the root task waits for them to end.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Role {
    IommuServer,
    Driver,
}

#[derive(Clone, Copy)]
pub struct Process {
    pub name: &'static str,
    pub image: u64,
    pub arg: u64,
    pub quota_pages: u64,
    pub role: Role,
    pub grants: &'static [Grant],
    /// A driver's limits in the IOMMU server, for each connection it holds (`Limits::DEFAULT`
    /// unless the description says otherwise, e.g. `Limits::SMALL`); the IOMMU server's own
    /// are not used. Their memory budgets and the server's reserve must fit its heap (`check`).
    pub limits: Limits,
}

const fn grant(slot: u64, source: Source, rights: Rights) -> Grant {
    Grant { slot, source, rights }
}

const fn boot(name: &'static str) -> Source {
    Source::Boot { name, line: None }
}

const READ: Rights = Rights::READ;
const READ_WRITE: Rights = Rights::READ.union(Rights::WRITE);
/// A client's endpoint: call (WRITE) and send capabilities with requests (GRANT).
const CLIENT: Rights = Rights::WRITE.union(Rights::GRANT);
/// A device BAR: the driver maps it and hands a copy to the IOMMU server to bind the device.
const DEVICE: Rights = Rights::READ.union(Rights::WRITE).union(Rights::GRANT).union(Rights::DERIVE);

/// A client's process, to the IOMMU server: watch it end (READ) and put the IRQ capabilities
/// of its MSIs into it (CONTROL, for `cap_grant`).
const CLIENT_PROCESS: Rights = Rights::READ.union(Rights::CONTROL);

const EDU: (u16, u16) = (0x1234, 0x11e8);
const EDU_BAR0_SIZE: u64 = 1 << 20;

/// The IOMMU server's capabilities common to both architectures.
macro_rules! iommu_server_grants {
    ($($arch:expr),* $(,)?) => {
        &[
            grant(server_slot::REQUESTS, Source::Endpoint { name: "iommu", badge: 0 }, READ),
            grant(server_slot::DMA_AUTHORITY, boot("dma-authority"), Rights::all()),
            grant(server_slot::ECAM, boot("ecam"), READ_WRITE),
            grant(server_slot::PCI_MMIO, boot("pci-mmio"), READ_WRITE),
            grant(server_slot::STATUS_PAGE, Source::StatusPage, READ_WRITE),
            grant(server_slot::CLIENT_LIMITS, Source::ClientLimits, READ),
            grant(server_slot::FIRMWARE_FIRST, Source::BootAll { name: "firmware", max: server_slot::FIRMWARE_COUNT }, READ),
            grant(server_slot::CLIENT_PROCESS_BASE + 1, Source::Process { name: "edu-driver-0" }, CLIENT_PROCESS),
            grant(server_slot::CLIENT_PROCESS_BASE + 2, Source::Process { name: "edu-driver-1" }, CLIENT_PROCESS),
            $($arch,)*
        ]
    };
}

#[cfg(target_arch = "x86_64")]
const IOMMU_SERVER_GRANTS: &[Grant] = iommu_server_grants![
    grant(server_slot::IOMMU_REGISTERS, boot("vtd"), READ_WRITE),
    // fw_cfg's I/O ports, for the firmware-table override (a DMAR handed over as a file).
    grant(server_slot::FW_CFG, boot("fw-cfg"), READ_WRITE),
    // The first MSI line: the one the server programs for the VT-d fault event.
    grant(server_slot::FAULT_IRQ, Source::Boot { name: "msi", line: Some(1000 + server_slot::FAULT_MSI_INDEX as u64) }, Rights::all()),
    // The lines the server hands drivers through `msi_alloc` (it routes them with interrupt
    // remapping; no driver gets an MSI line from here directly).
    msi_pool_line(0),
    msi_pool_line(1),
    msi_pool_line(2),
    msi_pool_line(3),
];

/// The `index`-th line of the server's MSI pool: the lines after the fault event's.
#[cfg(target_arch = "x86_64")]
const fn msi_pool_line(index: u64) -> Grant {
    grant(server_slot::MSI_POOL_FIRST + index, Source::Boot { name: "msi", line: Some(1001 + index) }, Rights::all())
}

#[cfg(target_arch = "aarch64")]
const IOMMU_SERVER_GRANTS: &[Grant] = iommu_server_grants![
    grant(server_slot::IOMMU_REGISTERS, boot("smmuv3"), READ_WRITE),
    grant(server_slot::FW_CFG, boot("fw-cfg"), READ_WRITE),
    // virt's SMMU event-queue and global-error SPIs (74 and 77).
    grant(server_slot::FAULT_IRQ, Source::Boot { name: "smmu", line: Some(106) }, Rights::all()),
    grant(server_slot::GERROR_IRQ, Source::Boot { name: "smmu", line: Some(109) }, Rights::all()),
];

/// An edu driver running its DMA scenario (bind, map, DMA, unmap, DMA again and see the fault
/// arrive in its fault queue) on the device and connection its grants name.
const fn edu_driver(name: &'static str, grants: &'static [Grant]) -> Process {
    Process { name, image: image::EDU_DRIVER, arg: scenario::DMA, quota_pages: 1024, role: Role::Driver, grants, limits: Limits::DEFAULT }
}

/// An edu driver (DMA scenario) with its connection (badge) and this device's BAR0.
macro_rules! edu_driver_on {
    ($name:literal, $badge:literal, $function:expr) => {
        edu_driver($name, &[
            grant(driver_slot::SERVER, Source::Endpoint { name: "iommu", badge: $badge }, CLIENT),
            grant(driver_slot::DEVICE, Source::PciBar { function: $function, bar: 0, size: EDU_BAR0_SIZE }, DEVICE),
        ])
    };
}

/// The description `kernel_abi::boot_directory::description` numbers `number`.
pub fn description(number: u64) -> Option<&'static [Process]> {
    use kernel_abi::boot_directory::description;
    match number {
        description::FLAT => Some(SYSTEM),
        description::BRIDGES => Some(BRIDGES),
        description::ONE_GROUP_TWO_DRIVERS => Some(ONE_GROUP_TWO_DRIVERS),
        _ => None,
    }
}

const IOMMU_SERVER: Process = Process {
    name: "iommu-server",
    image: image::IOMMU_SERVER,
    // The server's start argument: `iommu_server_contract::start` names its bits. None is
    // set here: Stage-1 domains, the default per-client limits, and on arm with GICv2m no
    // MSIs for attached devices (GICv2m cannot tell devices apart; a description that
    // accepts that sets `start::ALLOW_UNISOLATED_MSI`).
    arg: 0,
    quota_pages: 4096,
    role: Role::IommuServer,
    grants: IOMMU_SERVER_GRANTS,
    limits: Limits::DEFAULT,
};

/// `qemu-run.sh --topology bridges`: a PCIe root port at 00:10.0 with an edu device, and a
/// PCIe-to-PCI bridge at 00:11.0 with edu devices at 01.0 and 02.0 of its bus.
const ROOT_PORT: (u8, u8) = (0x10, 0);
const PCI_BRIDGE: (u8, u8) = (0x11, 0);

/// The edu behind the root port (by location) and the second behind the PCI bridge (by
/// location too; its DMA carries the bridge's alias, which the first shares: its MSI must still
/// be programmed into its own capability).
pub const BRIDGES: &[Process] = &[
    IOMMU_SERVER,
    edu_driver_on!("edu-driver-0", 1, PciFunction::At { segment: 0, bridges: &[ROOT_PORT], device: 0, function: 0 }),
    edu_driver_on!("edu-driver-1", 2, PciFunction::At { segment: 0, bridges: &[PCI_BRIDGE], device: 2, function: 0 }),
];

/// Both functions behind the PCI bridge, to two drivers: they share the bridge's alias, so
/// the IOMMU cannot keep them apart. Refused when loaded.
pub const ONE_GROUP_TWO_DRIVERS: &[Process] = &[
    IOMMU_SERVER,
    edu_driver_on!("edu-driver-0", 1, PciFunction::At { segment: 0, bridges: &[PCI_BRIDGE], device: 1, function: 0 }),
    edu_driver_on!("edu-driver-1", 2, PciFunction::At { segment: 0, bridges: &[PCI_BRIDGE], device: 2, function: 0 }),
];

pub const SYSTEM: &[Process] = &[
    IOMMU_SERVER,
    edu_driver_on!("edu-driver-0", 1, PciFunction::Matching { vendor: EDU.0, device: EDU.1, instance: 0 }),
    edu_driver_on!("edu-driver-1", 2, PciFunction::Matching { vendor: EDU.0, device: EDU.1, instance: 1 }),
];

const _: () = check(SYSTEM);
const _: () = check(BRIDGES);
const _: () = check(ONE_GROUP_TWO_DRIVERS);

const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

const fn has_process(system: &[Process], name: &str) -> bool {
    let mut i = 0;
    while i < system.len() {
        if same(system[i].name, name) {
            return true;
        }
        i += 1;
    }
    false
}

/// The rules a description must keep; a violation stops the build with its message.
pub const fn check(system: &[Process]) {
    let mut servers = 0;
    let mut status_pages = 0;
    let mut p = 0;
    while p < system.len() {
        let process = &system[p];
        if matches!(process.role, Role::IommuServer) {
            servers += 1;
        }
        let mut q = p + 1;
        while q < system.len() {
            assert!(!same(process.name, system[q].name), "two processes share a name");
            q += 1;
        }
        let mut g = 0;
        while g < process.grants.len() {
            let grant = &process.grants[g];
            assert!(grant.slot < kernel_abi::CSPACE_SLOTS, "a grant names a slot beyond the capability space");
            let mut h = g + 1;
            while h < process.grants.len() {
                assert!(grant.slot != process.grants[h].slot, "a process gets two capabilities in one slot");
                h += 1;
            }
            match grant.source {
                Source::ClientLimits => assert!(matches!(process.role, Role::IommuServer), "only the IOMMU server gets the client limits"),
                Source::StatusPage => {
                    assert!(matches!(process.role, Role::IommuServer), "only the IOMMU server gets a status page");
                    status_pages += 1;
                }
                Source::Process { name } => assert!(has_process(system, name), "a grant names a process the system does not have"),
                Source::PciBar { function, .. } => {
                    assert!(matches!(process.role, Role::Driver), "only drivers get devices");
                    // No device goes to two processes (nor twice to one) under one name; under
                    // two names (location and match) and for functions of one isolation group,
                    // the root task checks when it loads the description.
                    let mut other = 0;
                    while other < system.len() {
                        let mut k = 0;
                        while k < system[other].grants.len() {
                            if let Source::PciBar { function: f, .. } = system[other].grants[k].source {
                                let itself = other == p && k == g;
                                assert!(itself || !function.same(&f), "a PCI device is granted twice");
                            }
                            k += 1;
                        }
                        other += 1;
                    }
                }
                Source::Endpoint { name, badge } => {
                    // The server tells its clients apart by badge: one badge, one client.
                    let mut other = 0;
                    while other < system.len() {
                        let mut k = 0;
                        while k < system[other].grants.len() {
                            if let Source::Endpoint { name: n, badge: b } = system[other].grants[k].source {
                                let itself = other == p && k == g;
                                assert!(itself || !(same(n, name) && b == badge), "two grants of one endpoint carry the same badge");
                            }
                            k += 1;
                        }
                        other += 1;
                    }
                }
                _ => {}
            }
            g += 1;
        }
        p += 1;
    }
    assert!(servers == 1, "the system needs exactly one IOMMU server");
    assert!(status_pages == 1, "the IOMMU server needs one status page: the root task watches it come up");
    if let Err(refusal) = budgets_fit(system) {
        refuse_budget(refusal);
    }
}

/// The endpoint the IOMMU server receives requests on.
pub const fn server_endpoint(system: &[Process]) -> Option<&'static str> {
    let mut p = 0;
    while p < system.len() {
        if matches!(system[p].role, Role::IommuServer) {
            let mut g = 0;
            while g < system[p].grants.len() {
                if let (crate::server_slot::REQUESTS, Source::Endpoint { name, .. }) = (system[p].grants[g].slot, system[p].grants[g].source) {
                    return Some(name);
                }
                g += 1;
            }
        }
        p += 1;
    }
    None
}

/// Whether the budgets of every client connection (each badged grant of the server's endpoint
/// to a driver, under that driver's limits) and the server's reserve fit its heap
/// (`iommu_server_contract::limits::check_budgets`).
pub const fn budgets_fit(system: &[Process]) -> Result<(), Refusal> {
    let Some(endpoint) = server_endpoint(system) else { return Ok(()) };
    let mut budgets = [Budget { client: "", limits: Limits::DEFAULT }; crate::server_slot::MAX_CLIENTS as usize];
    let mut count = 0;
    let mut p = 0;
    while p < system.len() {
        let mut g = 0;
        while g < system[p].grants.len() {
            if let Source::Endpoint { name, badge } = system[p].grants[g].source {
                if same(name, endpoint) && badge != 0 {
                    assert!(count < budgets.len(), "more client connections than the IOMMU server serves");
                    budgets[count] = Budget { client: system[p].name, limits: system[p].limits };
                    count += 1;
                }
            }
            g += 1;
        }
        p += 1;
    }
    check_budgets(budgets.split_at(count).0)
}

/// Stops the build with a message naming the driver and the resource.
const fn refuse_budget(refusal: Refusal) -> ! {
    let mut message = [0u8; 160];
    let mut length = 0;
    let parts = ["the IOMMU server's heap cannot hold the budgets of the description: ", refusal.client, "'s ", refusal.resource, " does not fit"];
    let mut i = 0;
    while i < parts.len() {
        let bytes = parts[i].as_bytes();
        let mut b = 0;
        while b < bytes.len() && length < message.len() {
            message[length] = bytes[b];
            length += 1;
            b += 1;
        }
        i += 1;
    }
    match core::str::from_utf8(message.split_at(length).0) {
        Ok(text) => panic!("{}", text),
        Err(_) => panic!("the IOMMU server's heap cannot hold the budgets of the description"),
    }
}
