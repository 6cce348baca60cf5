//! Tests of the user-level IOMMU server (iommu-server/) and the edu driver (drivers/edu), with
//! the test acting as the root task: it hands out the boot capabilities, starts the processes,
//! observes the server through its status page and the kernel's own records (pins), and plays
//! the attacker by programming devices directly.
//!
//! Every test detects from the hardware whether an IOMMU is present (x86: the VT-d CAP register
//! at 0xFED90000; arm: an SMMUv3 in the device tree, whose ID registers it then reads) and checks
//! that the server's discovery agrees; without one (`--iommu none`) the tests that need
//! translation report why they have nothing more to check, after that check. The few
//! differences between the architectures live in `platform`.

pub use iommu_tests::TESTS;
/// Helpers the restart tests (`tests_restart.rs`) share.
pub(crate) use iommu_tests::shared;
/// The harness other kernel test files of the IOMMU server use.
#[cfg(target_arch = "aarch64")]
pub(crate) use iommu_tests::{discovery_agrees, err, exit_of, run_until, server_and_driver, skip_without_iommu, with_kernel};

/// The server's capability slots (the tests, acting as root task, fill a subset), its address
/// space (where it maps client windows) and its status-page words.
use iommu_server_contract::{layout as server_layout, slots as server_slot, status};

/// The edu driver's scenarios, slots and report words.
use edu_contract as driver;

pub(crate) mod iommu_tests {
    use crate::ktest::{Test, TestResult};
    use crate::mm;
    use crate::object::{MemoryObject, MmioRegion, Object, QuotaAccount};
    use crate::platform::boot_caps;
    use crate::process::{ExitReason, Kernel, Pid};
    use crate::user_images::{EDU_DRIVER, IMAGES, IOMMU_SERVER};
    use crate::{arch, ensure};
    use alloc::format;
    use alloc::rc::Rc;
    use alloc::string::String;
    use alloc::vec::Vec;
    use hwio::SharedWords;
    use kernel_abi::Rights;
    use platform::ConfigSpace;

    #[cfg(target_arch = "x86_64")]
    use super::driver;
    use super::driver::{report, scenario, slot as driver_slot};
    use super::{server_layout, server_slot, status};

    /// Server start arguments (`iommu_server_contract::start`).
    const SERVER_BENCH: u64 = iommu_server_contract::start::BENCH;
    #[cfg(target_arch = "aarch64")]
    pub(crate) const SERVER_STAGE2: u64 = iommu_server_contract::start::STAGE2;
    #[cfg(target_arch = "aarch64")]
    pub(crate) const SERVER_ALLOW_UNISOLATED_MSI: u64 = iommu_server_contract::start::ALLOW_UNISOLATED_MSI;
    const SERVER_QUOTA: u64 = 4096;
    const DRIVER_QUOTA: u64 = 1024;
    /// Pages the HOLD scenario maps.
    const HOLD_PAGES: u64 = 16;
    /// Counter ticks any wait may take (tens of seconds on TCG, 60 s of virtual time with icount).
    const WAIT_BUDGET: u64 = 60_000_000_000;

    const EDU_ID: u32 = 0x11e8_1234;
    pub(crate) const EDU_BUFFER: u64 = 0x40000;

    pub(crate) fn direct<T>(phys: u64) -> *mut T {
        mm::phys_to_virt(phys) as *mut T
    }

    pub(crate) fn err<E: core::fmt::Debug>(what: &'static str) -> impl Fn(E) -> String {
        move |e| format!("{what}: {e:?}")
    }

    /// What differs between the machines: where the IOMMU's identification registers are and
    /// what mode the server must choose, how the IOMMU is stopped after a test killed its
    /// server, which boot capability goes to which server slot, how configuration space is
    /// reached.
    #[cfg(target_arch = "x86_64")]
    pub(crate) mod platform {
        use super::{direct, server_slot};
        use crate::platform::BootCap;
        use alloc::string::String;

        const VTD_BASE: u64 = 0xFED9_0000;
        const ECAM_BASE: u64 = 0xB000_0000;

        /// CAP and ECAP of the VT-d unit, read from the hardware, if there is one.
        pub fn iommu_hardware() -> Option<(u64, u64)> {
            // SAFETY: the direct map covers the first 4 GiB; with a VT-d unit these are its
            // read-only CAP/ECAP registers, without one the address reads as unassigned.
            let (cap, ecap) = unsafe { (core::ptr::read_volatile(direct::<u64>(VTD_BASE + 0x08)), core::ptr::read_volatile(direct::<u64>(VTD_BASE + 0x10))) };
            (cap != 0 && cap != u64::MAX).then_some((cap, ecap))
        }

        /// The mode ECAP calls for: 1 legacy, 2 scalable second-level, 3 scalable first-level.
        pub fn expected_mode(_cap: u64, ecap: u64, _server_arg: u64) -> u64 {
            let (scalable, second_level, first_level) = (ecap >> 43 & 1 == 1, ecap >> 46 & 1 == 1, ecap >> 47 & 1 == 1);
            match (scalable, second_level, first_level) {
                (false, _, _) => 1,
                (true, true, _) => 2,
                (true, false, true) => 3,
                _ => 0,
            }
        }

        pub const IOMMU_NAME: &str = "VT-d unit";

        /// Checks that the server left interrupt remapping on with compatibility-format
        /// interrupts blocked and a table in place: GSTS (0x1C) IRES bit 25 and IRTPS bit 24
        /// set, CFIS bit 23 clear; IRTA (0xB8) with a table address (63:12) and the size
        /// field S (3:0) the server uses, 7 (2^8 entries).
        pub fn check_interrupt_remapping() -> Result<(), String> {
            // SAFETY: VT-d registers through the direct map; GSTS is 32-bit (4-byte access),
            // IRTA 64-bit.
            let (status, table) = unsafe { (core::ptr::read_volatile(direct::<u32>(VTD_BASE + 0x1C)), core::ptr::read_volatile(direct::<u64>(VTD_BASE + 0xB8))) };
            let (enabled, pointer_set, compatibility) = (status >> 25 & 1 == 1, status >> 24 & 1 == 1, status >> 23 & 1 == 1);
            crate::ensure!(enabled && pointer_set && !compatibility, "GSTS {status:#x}: interrupt remapping not on with compatibility format blocked");
            crate::ensure!(table & !0xFFF != 0 && table & 0xF == 7, "IRTA {table:#x}: no 256-entry table");
            Ok(())
        }

        /// Stops translation and masks the fault event after a test killed the server, so the
        /// next test (or nothing) does not run with a unit walking freed tables.
        pub fn reset_iommu() {
            if iommu_hardware().is_some() {
                // SAFETY: VT-d registers through the direct map: GCMD (0x18) = 0 turns
                // translation, queued invalidation and interrupt remapping off; FECTL (0x38) bit
                // 31 masks the fault event. Both are 32-bit registers written 4 bytes wide.
                unsafe {
                    core::ptr::write_volatile(direct::<u32>(VTD_BASE + 0x18), 0);
                    core::ptr::write_volatile(direct::<u32>(VTD_BASE + 0x38), 1 << 31);
                }
            }
        }

        /// Which server slot a boot capability goes to.
        #[derive(Default)]
        pub struct SlotPlacer {
            msi_given: bool,
            pool_given: u64,
        }

        impl SlotPlacer {
            pub fn slot(&mut self, cap: &BootCap) -> Option<u64> {
                match cap.name {
                    "vtd" => Some(server_slot::IOMMU_REGISTERS),
                    "ecam" => Some(server_slot::ECAM),
                    "pci-mmio" => Some(server_slot::PCI_MMIO),
                    // The first MSI line (vector 0x50) is the one the server programs for faults.
                    "msi" if !self.msi_given => {
                        self.msi_given = true;
                        Some(server_slot::FAULT_IRQ)
                    }
                    // The next lines: the pool the server gives drivers their MSIs from.
                    "msi" if self.pool_given < POOL_LINES => {
                        self.pool_given += 1;
                        Some(server_slot::MSI_POOL_FIRST + self.pool_given - 1)
                    }
                    _ => None,
                }
            }
        }

        /// MSI lines the tests give the server's pool (lines 1001..=1004); the tests that
        /// play root with lines of their own use lines after them.
        pub const POOL_LINES: u64 = 4;

        /// Rights of a client's process capability in the server: watch (READ), and grant
        /// it its MSIs' IRQ capabilities (CONTROL).
        pub const CLIENT_PROCESS: kernel_abi::Rights = kernel_abi::Rights::READ.union(kernel_abi::Rights::CONTROL);

        /// Bus 0's configuration space, through the direct map.
        pub struct ConfigSpace;

        impl ConfigSpace {
            pub fn open() -> Result<ConfigSpace, String> {
                Ok(ConfigSpace)
            }
            pub fn register(&self, devfn: u64, offset: u64) -> *mut u32 {
                direct::<u32>(ECAM_BASE + (devfn << 12) + offset)
            }
        }
    }

    #[cfg(target_arch = "aarch64")]
    pub(crate) mod platform {
        use super::{direct, err, server_slot};
        use crate::arch::paging::{AddressSpace, Root};
        use crate::arch::MapFlags;
        use crate::mm;
        use crate::object::Object;
        use crate::platform::BootCap;
        use alloc::string::String;

        /// SMMU_CR0 / SMMU_CR0ACK / SMMU_IRQ_CTRL (IHI 0070 6.3).
        const SMMU_CR0: u64 = 0x20;
        const SMMU_CR0ACK: u64 = 0x24;
        const SMMU_IRQ_CTRL: u64 = 0x50;
        /// IDR0.S1P (bit 1): stage-1 translation supported.
        const IDR0_S1P: u64 = 1 << 1;
        /// virt's SMMU interrupts: eventq is SPI 74, gerror SPI 77 (INTIDs 106, 109); the
        /// server checks them against the device tree.
        const EVENTQ_INTID: u32 = 106;
        const GERROR_INTID: u32 = 109;
        /// Where the test maps configuration space: the high ECAM is above the
        /// kernel's 4 GiB direct map.
        const CONFIG_WINDOW: u64 = 0x10_0000_0000;
        /// Buses 0 to 3 (the root ports' buses in `qemu-run.sh --topology bridges`).
        const BUS_PAGES: u64 = 4 * 256;

        /// The SMMUv3 register base the device tree describes, if any.
        fn smmu_base() -> Option<u64> {
            crate::firmware::iommus(crate::boot_info()).into_iter().find(|(kind, _)| *kind == "smmuv3").map(|(_, base)| base)
        }

        /// IDR0 and IDR1 of the SMMU the device tree describes, read from the hardware.
        pub fn iommu_hardware() -> Option<(u64, u64)> {
            let base = smmu_base()?;
            // SAFETY: the device tree puts an SMMUv3 here, inside the direct map's first GiB
            // (Device memory); IDR0 (0x0) and IDR1 (0x4) are read-only 32-bit registers.
            let (idr0, idr1) = unsafe { (core::ptr::read_volatile(direct::<u32>(base)), core::ptr::read_volatile(direct::<u32>(base + 4))) };
            Some((u64::from(idr0), u64::from(idr1)))
        }

        /// 4 stage-1, 5 stage-2: what the server must use given its start argument.
        pub fn expected_mode(idr0: u64, _idr1: u64, server_arg: u64) -> u64 {
            if server_arg & super::SERVER_STAGE2 != 0 || idr0 & IDR0_S1P == 0 {
                5
            } else {
                4
            }
        }

        pub const IOMMU_NAME: &str = "SMMUv3";

        /// Rights of a client's process capability in the server: watch (READ), and grant
        /// it its MSIs' IRQ capabilities (CONTROL).
        pub const CLIENT_PROCESS: kernel_abi::Rights = kernel_abi::Rights::READ.union(kernel_abi::Rights::CONTROL);

        /// Turns the SMMU off (SMMUEN = 0: with the GBPA.ABORT the server set, all DMA then
        /// aborts) and its interrupts too, after a test killed the server whose tables it
        /// walked.
        pub fn reset_iommu() {
            let Some(base) = smmu_base() else { return };
            // SAFETY: the SMMU's CR0 and IRQ_CTRL through the direct map (Device memory),
            // 32-bit registers written 4 bytes wide; CR0ACK is read until it shows the write.
            unsafe {
                core::ptr::write_volatile(direct::<u32>(base + SMMU_CR0), 0);
                core::ptr::write_volatile(direct::<u32>(base + SMMU_IRQ_CTRL), 0);
                let start = crate::arch::instruction_counter();
                while core::ptr::read_volatile(direct::<u32>(base + SMMU_CR0ACK)) != 0 && crate::arch::instruction_counter().wrapping_sub(start) < super::WAIT_BUDGET {
                    core::hint::spin_loop();
                }
            }
        }

        /// Which server slot a boot capability goes to.
        #[derive(Default)]
        pub struct SlotPlacer;

        impl SlotPlacer {
            pub fn slot(&mut self, cap: &BootCap) -> Option<u64> {
                let line = match &cap.object {
                    Object::Irq(irq) => Some(irq.borrow().line),
                    _ => None,
                };
                match (cap.name, line) {
                    ("smmuv3", _) => Some(server_slot::IOMMU_REGISTERS),
                    ("ecam", _) => Some(server_slot::ECAM),
                    ("pci-mmio", _) => Some(server_slot::PCI_MMIO),
                    ("fw-cfg", _) => Some(server_slot::FW_CFG),
                    ("smmu", Some(EVENTQ_INTID)) => Some(server_slot::FAULT_IRQ),
                    ("smmu", Some(GERROR_INTID)) => Some(server_slot::GERROR_IRQ),
                    _ => None,
                }
            }
        }

        /// Bus 0's configuration space, mapped (Device-nGnRE) into an address space of the
        /// test's own that is made current for each access: running a process switches away.
        pub struct ConfigSpace {
            space: Option<AddressSpace>,
        }

        impl ConfigSpace {
            pub fn open() -> Result<ConfigSpace, String> {
                let ecam = crate::platform::boot_caps(crate::boot_info())
                    .into_iter()
                    .find_map(|cap| match (cap.name, cap.object) {
                        ("ecam", Object::Mmio(region)) => Some(region.base),
                        _ => None,
                    })
                    .ok_or("no ecam boot capability")?;
                let mut frames = mm::FRAMES.lock();
                let mut space = AddressSpace::new(&mut frames).ok_or("no frame for the configuration window")?;
                let flags = MapFlags { writable: true, executable: false, device: true };
                for page in 0..BUS_PAGES {
                    let mapped = space.map(CONFIG_WINDOW + page * 4096, ecam + page * 4096, flags, &mut frames).map_err(err("map configuration space"));
                    if let Err(error) = mapped {
                        space.destroy(&mut frames);
                        return Err(error);
                    }
                }
                Ok(ConfigSpace { space: Some(space) })
            }

            pub fn register(&self, devfn: u64, offset: u64) -> *mut u32 {
                if let Some(space) = self.space.as_ref().filter(|space| space.root() != Root::current()) {
                    // SAFETY: `self` owns the address space; it is destroyed only on drop.
                    unsafe { space.root().activate() };
                }
                (CONFIG_WINDOW + (devfn << 12) + offset) as *mut u32
            }
        }

        impl Drop for ConfigSpace {
            fn drop(&mut self) {
                if let Some(space) = self.space.take() {
                    space.destroy(&mut mm::FRAMES.lock());
                }
            }
        }
    }

    /// An edu device on bus 0: its requester ID and BAR0.
    #[derive(Clone, Copy)]
    pub(crate) struct EduDevice {
        pub(crate) rid: u16,
        pub(crate) bar0: u64,
    }

    /// The edu devices, with the BARs as they are now (on arm the server assigns them: call
    /// after it is ready).
    pub(crate) fn edu_devices(config: &ConfigSpace) -> Vec<EduDevice> {
        (0..256u64)
            .filter_map(|devfn| {
                // SAFETY: bus 0's configuration space, mapped by `config`.
                let id = unsafe { core::ptr::read_volatile(config.register(devfn, 0)) };
                // SAFETY: as above.
                let bar = unsafe { core::ptr::read_volatile(config.register(devfn, 0x10)) };
                (id == EDU_ID).then_some(EduDevice { rid: devfn as u16, bar0: u64::from(bar & !0xf) })
            })
            .collect()
    }

    impl EduDevice {
        fn reg64(&self, offset: u64) -> *mut u64 {
            direct::<u64>(self.bar0 + offset)
        }

        /// What an attacker controlling the device does: enable bus mastering and start a DMA.
        pub(crate) fn start_dma(&self, config: &ConfigSpace, source: u64, destination: u64, to_ram: bool) {
            // SAFETY: the device's command register and its DMA registers (BAR0 lies in the
            // 32-bit PCI window, inside the direct map); the test owns this device (no driver
            // was given it, or its driver is dead).
            unsafe {
                let command = config.register(u64::from(self.rid), 0x04);
                core::ptr::write_volatile(command, (core::ptr::read_volatile(command) & 0xffff) | 0x6);
                core::ptr::write_volatile(self.reg64(0x80), source);
                core::ptr::write_volatile(self.reg64(0x88), destination);
                core::ptr::write_volatile(self.reg64(0x90), 4096);
                core::ptr::write_volatile(self.reg64(0x98), 1 | if to_ram { 2 } else { 0 });
            }
        }

        pub(crate) fn dma_running(&self) -> bool {
            // SAFETY: as in `start_dma`.
            unsafe { core::ptr::read_volatile(self.reg64(0x98)) & 1 != 0 }
        }
    }

    /// A kernel frame filled with `byte`, freed on drop.
    struct Frame(u64);

    impl Frame {
        fn filled(byte: u8) -> Result<Frame, String> {
            let frame = mm::FRAMES.lock().alloc().ok_or("no frame")?;
            // SAFETY: a frame we own, through the direct map.
            unsafe { core::ptr::write_bytes(mm::phys_to_virt(frame), byte, 4096) };
            Ok(Frame(frame))
        }
        fn all(&self, byte: u8) -> bool {
            // SAFETY: as in `filled`.
            unsafe { core::slice::from_raw_parts(mm::phys_to_virt(self.0), 4096) }.iter().all(|&b| b == byte)
        }
    }

    impl Drop for Frame {
        fn drop(&mut self) {
            mm::FRAMES.lock().free(self.0);
        }
    }

    /// The server process, its endpoint, its status page and its start argument.
    pub(crate) struct ServerUnderTest {
        pub(crate) pid: Pid,
        pub(crate) endpoint: Object,
        status: Rc<MemoryObject>,
        arg: u64,
    }

    impl ServerUnderTest {
        pub(crate) fn word(&self, index: usize) -> u64 {
            page_word(&self.status, index)
        }
    }

    /// Word `index` of the first page of `page`, as its user process last wrote it.
    /// A page the driver reports through (`driver::report`), installed in its REPORT slot.
    pub(crate) fn give_report_page(kernel: &mut Kernel, driver_pid: Pid) -> Result<Rc<MemoryObject>, String> {
        let page = MemoryObject::allocate(1, &QuotaAccount::new(1)).ok_or("no report page")?;
        kernel
            .install(driver_pid, driver_slot::REPORT, Object::Memory(page.clone()), Rights::READ.union(Rights::WRITE), 0)
            .map_err(err("report page"))?;
        Ok(page)
    }

    pub(crate) fn page_word(page: &MemoryObject, index: usize) -> u64 {
        assert!(index < 512, "word {index} is beyond the page");
        page_words(page).read(index)
    }

    /// The first page of `page` as the words its user process shares, through the direct map.
    pub(crate) fn page_words(page: &MemoryObject) -> SharedWords<512> {
        // SAFETY: frame 0 of the memory object is a page of RAM in the direct map, alive while
        // `page` is; every caller uses the words while it holds `page`.
        unsafe { SharedWords::at_address(direct::<u64>(page.frames[0]) as usize) }
    }

    fn new_endpoint() -> Object {
        Object::Endpoint(Rc::new(core::cell::RefCell::new(crate::object::Endpoint::default())))
    }

    /// Creates the server with every boot capability it needs, watching `clients` (pid, badge).
    fn create_server(kernel: &mut Kernel, arg: u64, clients: &[(Pid, u64)]) -> Result<ServerUnderTest, String> {
        create_server_serving(kernel, arg, clients, new_endpoint())
    }

    /// `create_server`, receiving on `endpoint` (a server that replaces an ended one serves
    /// the endpoint its clients hold).
    pub(crate) fn create_server_serving(kernel: &mut Kernel, arg: u64, clients: &[(Pid, u64)], endpoint: Object) -> Result<ServerUnderTest, String> {
        let pid = kernel.create_process("iommu-server", IOMMU_SERVER, arg, SERVER_QUOTA).map_err(err("create server"))?;
        kernel.install(pid, server_slot::REQUESTS, endpoint.clone(), Rights::READ, 0).map_err(err("endpoint"))?;
        let mut firmware = server_slot::FIRMWARE_FIRST;
        // A unit struct on arm, which has no per-boot placement state.
        #[allow(clippy::default_constructed_unit_structs)]
        let mut placer = platform::SlotPlacer::default();
        for cap in boot_caps(crate::boot_info()) {
            let slot = match cap.name {
                "firmware" if firmware < server_slot::FIRMWARE_FIRST + server_slot::FIRMWARE_COUNT => {
                    firmware += 1;
                    firmware - 1
                }
                "dma-authority" => server_slot::DMA_AUTHORITY,
                _ => match placer.slot(&cap) {
                    Some(slot) => slot,
                    None => continue,
                },
            };
            kernel.install(pid, slot, cap.object, cap.rights, 0).map_err(err("boot capability"))?;
        }
        let status = MemoryObject::allocate(1, &QuotaAccount::new(1)).ok_or("no status page")?;
        kernel
            .install(pid, server_slot::STATUS_PAGE, Object::Memory(status.clone()), Rights::READ.union(Rights::WRITE), 0)
            .map_err(err("status page"))?;
        for &(client, badge) in clients {
            kernel
                .install(pid, server_slot::CLIENT_PROCESS_BASE + badge, Object::Process(client), platform::CLIENT_PROCESS, 0)
                .map_err(err("client process"))?;
        }
        Ok(ServerUnderTest { pid, endpoint, status, arg })
    }

    /// Runs the scheduler until `done` holds, or fails after the wait budget.
    pub(crate) fn run_until(kernel: &mut Kernel, what: &str, mut done: impl FnMut(&Kernel) -> bool) -> TestResult {
        let start = arch::instruction_counter();
        while !done(kernel) {
            if arch::instruction_counter().wrapping_sub(start) > WAIT_BUDGET {
                return Err(format!("timed out waiting for {what}"));
            }
            kernel.run_once();
        }
        Ok(())
    }

    pub(crate) fn wait_ready(kernel: &mut Kernel, server: &ServerUnderTest) -> TestResult {
        run_until(kernel, "the server to come up", |k| server.word(status::STATE) != 0 || k.has_exited(server.pid))?;
        ensure!(!kernel.has_exited(server.pid), "server ended during bring-up: {:?}", kernel.take_exit(server.pid));
        let state = server.word(status::STATE);
        ensure!(state != status::STATE_FAILED, "server reported its bring-up failed");
        ensure!(state == status::STATE_READY, "server status page holds unknown state {state}");
        Ok(())
    }

    /// Whether the machine has an IOMMU, after checking that the server's discovery agrees
    /// with the hardware either way.
    pub(crate) fn discovery_agrees(server: &ServerUnderTest) -> Result<bool, String> {
        match platform::iommu_hardware() {
            Some((cap, ecap)) => {
                ensure!(server.word(status::IOMMU_DESCRIBED) == 1, "{} registers answer but the server found none in the firmware", platform::IOMMU_NAME);
                ensure!(server.word(status::UNITS) == 1, "server brought up {} units, expected 1", server.word(status::UNITS));
                ensure!(server.word(status::UNIT0_CAP) == cap, "server read ID register {:#x}, hardware has {cap:#x}", server.word(status::UNIT0_CAP));
                ensure!(server.word(status::UNIT0_ECAP) == ecap, "server read ID register {:#x}, hardware has {ecap:#x}", server.word(status::UNIT0_ECAP));
                let expected = platform::expected_mode(cap, ecap, server.arg);
                ensure!(server.word(status::UNIT0_MODE) == expected, "server chose mode {}, the hardware and start argument call for {expected}", server.word(status::UNIT0_MODE));
                Ok(true)
            }
            None => {
                ensure!(server.word(status::IOMMU_DESCRIBED) == 0, "no {} but the server found one in the firmware", platform::IOMMU_NAME);
                ensure!(server.word(status::UNITS) == 0, "no {} but the server brought up a unit", platform::IOMMU_NAME);
                Ok(false)
            }
        }
    }

    pub(crate) fn skip_without_iommu() {
        crate::ktest::skip(String::from("no IOMMU on this machine (firmware describes none, server agrees): nothing to translate, DMA isolation not checkable"));
    }

    pub(crate) fn exit_of(kernel: &mut Kernel, pid: Pid) -> Option<ExitReason> {
        kernel.take_exit(pid)
    }

    /// Kernel pins of memory the server holds (its own and its clients').
    pub(crate) fn server_kernel_pins(kernel: &Kernel, server: &ServerUnderTest) -> usize {
        kernel.processes.get(server.pid).map_or(0, |p| p.pins.values().filter(|pin| pin.memory.is_some()).count())
    }

    /// The server's `cap_watch` pins: one per device capability it watches.
    fn server_watches(kernel: &Kernel, server: &ServerUnderTest) -> usize {
        kernel.processes.get(server.pid).map_or(0, |p| p.pins.values().filter(|pin| pin.memory.is_none()).count())
    }

    /// Runs `body` on a fresh kernel state, then stops the IOMMU the killed server leaves.
    pub(crate) fn with_kernel<T>(body: impl FnOnce(&mut Kernel) -> Result<T, String>) -> Result<T, String> {
        let result = {
            let mut kernel = Kernel::new(IMAGES);
            body(&mut kernel)
        };
        platform::reset_iommu();
        result
    }

    fn discovery() -> TestResult {
        with_kernel(|kernel| {
            let server = create_server(kernel, 0, &[])?;
            kernel.start_process(server.pid).map_err(err("start"))?;
            wait_ready(kernel, &server)?;
            let present = discovery_agrees(&server)?;
            // The server read the IORT through fw_cfg and found it telling the device tree's
            // story (with or without an SMMU).
            #[cfg(target_arch = "aarch64")]
            ensure!(server.word(status::IORT_CHECK) == status::IORT_AGREES, "server's IORT check says {} (1: agrees with the device tree)", server.word(status::IORT_CHECK));
            let edus = edu_devices(&ConfigSpace::open()?);
            ensure!(edus.iter().all(|e| e.bar0 != 0), "an edu device has no BAR0 address after the server came up");
            ensure!(server.word(status::PCI_FUNCTIONS) as usize > edus.len(), "server found {} PCI functions, fewer than the {} edu devices plus host bridge", server.word(status::PCI_FUNCTIONS), edus.len());
            #[cfg(target_arch = "x86_64")]
            if present {
                platform::check_interrupt_remapping()?;
            }
            if present {
                crate::println!(
                    "iommu: server found the {}: ID registers {:#x} {:#x} mode {}, {} PCI functions",
                    platform::IOMMU_NAME,
                    server.word(status::UNIT0_CAP),
                    server.word(status::UNIT0_ECAP),
                    server.word(status::UNIT0_MODE),
                    server.word(status::PCI_FUNCTIONS)
                );
            } else {
                crate::println!("iommu: the firmware describes no IOMMU, as the hardware says; {} PCI functions", server.word(status::PCI_FUNCTIONS));
            }
            Ok(())
        })
    }

    /// Starts the server and one driver (watched as client `badges[0]`, and more badges),
    /// and gives the driver the first edu device once the server is up (on arm the server
    /// gives BARs their addresses).
    pub(crate) fn server_and_driver(kernel: &mut Kernel, server_arg: u64, scenario: u64, badges: &[u64]) -> Result<(ServerUnderTest, Pid, EduDevice), String> {
        let (server, driver_pid, devices) = server_and_driver_with_devices(kernel, server_arg, scenario, badges, 1)?;
        Ok((server, driver_pid, devices[0]))
    }

    /// `server_and_driver`, giving the driver the first `count` edu devices (a test driver that
    /// uses two; the edu driver proper is only ever given its own).
    pub(crate) fn server_and_driver_with_devices(kernel: &mut Kernel, server_arg: u64, scenario: u64, badges: &[u64], count: usize) -> Result<(ServerUnderTest, Pid, Vec<EduDevice>), String> {
        // The driver exists first so the server can be given its process capability.
        let driver_pid = kernel.create_process("edu-driver", EDU_DRIVER, scenario, DRIVER_QUOTA).map_err(err("create driver"))?;
        let clients: Vec<(Pid, u64)> = badges.iter().map(|&b| (driver_pid, b)).collect();
        let server = create_server(kernel, server_arg, &clients)?;
        let client = Rights::WRITE.union(Rights::GRANT);
        let endpoint_slots = [driver_slot::SERVER, driver_slot::SECOND_SERVER, driver_slot::THIRD_SERVER];
        let device_slots = [driver_slot::DEVICE, driver_slot::SECOND_DEVICE];
        ensure!(badges.len() <= endpoint_slots.len(), "the driver has endpoint slots for {} clients, not {}", endpoint_slots.len(), badges.len());
        ensure!(count <= device_slots.len(), "the driver has slots for {} devices, not {count}", device_slots.len());
        for (&badge, slot) in badges.iter().zip(endpoint_slots) {
            kernel.install(driver_pid, slot, server.endpoint.clone(), client, badge).map_err(err("driver endpoint"))?;
        }
        kernel.start_process(server.pid).map_err(err("start server"))?;
        wait_ready(kernel, &server)?;
        let devices: Vec<EduDevice> = edu_devices(&ConfigSpace::open()?).into_iter().take(count).collect();
        ensure!(devices.len() == count, "found {} edu devices, the driver needs {count} (qemu-run.sh adds two)", devices.len());
        let rights = Rights::READ.union(Rights::WRITE).union(Rights::GRANT).union(Rights::DERIVE);
        for (device, slot) in devices.iter().zip(device_slots) {
            let bar = Object::Mmio(Rc::new(MmioRegion { base: device.bar0, size: 1 << 20 }));
            kernel.install(driver_pid, slot, bar, rights, 0).map_err(err("device capability"))?;
        }
        Ok((server, driver_pid, devices))
    }

    fn edu_dma_with(server_arg: u64) -> TestResult {
        with_kernel(|kernel| {
            let (server, driver_pid, device) = server_and_driver(kernel, server_arg, scenario::DMA, &[1])?;
            if !discovery_agrees(&server)? {
                skip_without_iommu();
                return Ok(());
            }
            kernel.start_process(driver_pid).map_err(err("start driver"))?;
            run_until(kernel, "the driver", |k| k.has_exited(driver_pid))?;
            let exit = exit_of(kernel, driver_pid);
            ensure!(exit == Some(ExitReason::Exited(0)), "driver ended with {exit:?}");
            ensure!(server.word(status::FAULTS) >= 1, "the server saw no DMA fault");
            ensure!(server.word(status::LAST_FAULT_RID) == u64::from(device.rid), "server's last fault came from {:#x}, not the edu {:#x}", server.word(status::LAST_FAULT_RID), device.rid);
            run_until(kernel, "the server to reap the driver", |_| server.word(status::CLIENTS_REAPED) == 1)?;
            ensure!(server.word(status::PINNED_PAGES) == 0, "{} pages still pinned after the driver ended", server.word(status::PINNED_PAGES));
            ensure!(!kernel.has_exited(server.pid), "server died");
            Ok(())
        })
    }

    fn edu_dma() -> TestResult {
        edu_dma_with(0)
    }

    /// The same through stage-2 SMMU domains (VMID and VTTBR in the STE, no context descriptor).
    #[cfg(target_arch = "aarch64")]
    fn edu_dma_stage2() -> TestResult {
        edu_dma_with(SERVER_STAGE2)
    }

    fn unbound_device_blocked() -> TestResult {
        with_kernel(|kernel| {
            let server = create_server(kernel, 0, &[])?;
            kernel.start_process(server.pid).map_err(err("start"))?;
            wait_ready(kernel, &server)?;
            if !discovery_agrees(&server)? {
                skip_without_iommu();
                return Ok(());
            }
            let edus = edu_devices(&ConfigSpace::open()?);
            ensure!(edus.len() >= 2, "need a second edu device that no driver is given; found {}", edus.len());
            attack(kernel, &server, edus[1])
        })
    }

    /// Makes `device` read a kernel page and write another, as an attacker owning it would,
    /// and checks both are blocked and reported.
    fn attack(kernel: &mut Kernel, server: &ServerUnderTest, device: EduDevice) -> TestResult {
        let config = ConfigSpace::open()?;
        let secret = Frame::filled(0x3c)?;
        let victim = Frame::filled(0xa5)?;
        for (source, destination, to_ram, target, access) in [(secret.0, EDU_BUFFER, false, secret.0, 1u64), (EDU_BUFFER, victim.0, true, victim.0, 2u64)] {
            let before = server.word(status::UNROUTED_FAULTS);
            device.start_dma(&config, source, destination, to_ram);
            run_until(kernel, "the blocked DMA to be reported", |_| !device.dma_running() && server.word(status::UNROUTED_FAULTS) > before)?;
            ensure!(server.word(status::LAST_FAULT_RID) == u64::from(device.rid), "fault from {:#x}, expected the edu at {:#x}", server.word(status::LAST_FAULT_RID), device.rid);
            ensure!(server.word(status::LAST_FAULT_ADDRESS) == target, "fault at {:#x}, expected {target:#x}", server.word(status::LAST_FAULT_ADDRESS));
            ensure!(server.word(status::LAST_FAULT_ACCESS) == access, "fault access {}, expected {access}", server.word(status::LAST_FAULT_ACCESS));
        }
        ensure!(victim.all(0xa5), "the blocked device wrote kernel memory");
        crate::println!("iommu: device {:#x} nobody was given: read and write of kernel pages blocked, both faults recorded as unrouted", device.rid);
        Ok(())
    }

    fn hostile_driver() -> TestResult {
        with_kernel(|kernel| {
            let (server, driver_pid, _device) = server_and_driver(kernel, 0, scenario::HOSTILE, &[1, 2])?;
            if !discovery_agrees(&server)? {
                skip_without_iommu();
                return Ok(());
            }
            let baseline = server_kernel_pins(kernel, &server);
            kernel.start_process(driver_pid).map_err(err("start driver"))?;
            run_until(kernel, "the driver", |k| k.has_exited(driver_pid))?;
            let exit = exit_of(kernel, driver_pid);
            ensure!(exit == Some(ExitReason::Exited(0)), "hostile driver ended with {exit:?}");
            ensure!(!kernel.has_exited(server.pid), "server died");
            ensure!(server.word(status::PINNED_PAGES) == 0 && server.word(status::KERNEL_PINS) == 0, "refused requests left pins");
            ensure!(server_kernel_pins(kernel, &server) == baseline, "kernel pins of the server went from {baseline} to {}", server_kernel_pins(kernel, &server));
            Ok(())
        })
    }

    fn killed_driver() -> TestResult {
        with_kernel(|kernel| {
            let (server, driver_pid, device) = server_and_driver(kernel, 0, scenario::HOLD, &[1])?;
            if !discovery_agrees(&server)? {
                skip_without_iommu();
                return Ok(());
            }
            let baseline = server_kernel_pins(kernel, &server);
            kernel.start_process(driver_pid).map_err(err("start driver"))?;
            run_until(kernel, "the driver's mapping", |k| server.word(status::PINNED_PAGES) == HOLD_PAGES || k.has_exited(driver_pid))?;
            ensure!(!kernel.has_exited(driver_pid), "driver ended early: {:?}", kernel.take_exit(driver_pid));
            // However the server groups pages into kernel pins, it holds more now, exactly the
            // ones it reports for client memory.
            let held = server_kernel_pins(kernel, &server);
            ensure!(held > baseline && held == baseline + server.word(status::KERNEL_PINS) as usize, "server holds {held} kernel pins, baseline {baseline}, {} for client memory", server.word(status::KERNEL_PINS));
            kernel.kill(driver_pid, ExitReason::Killed);
            run_until(kernel, "the server to reap the killed driver", |_| server.word(status::CLIENTS_REAPED) == 1)?;
            ensure!(server.word(status::PINNED_PAGES) == 0, "{} pages still pinned in the object model", server.word(status::PINNED_PAGES));
            ensure!(server.word(status::OPEN_CLIENTS) == 0, "client still open");
            ensure!(server_kernel_pins(kernel, &server) == baseline, "server still holds {} kernel pins, baseline {baseline}", server_kernel_pins(kernel, &server));
            // The device the dead driver owned is blocked again.
            attack(kernel, &server, device)
        })
    }

    /// Where the edu's MSI goes: x86's interrupt range (APIC 0), or `virt`'s GICv2m frame,
    /// register MSI_SETSPI_NS. On arm the write is translated by the SMMU like any DMA.
    #[cfg(target_arch = "x86_64")]
    const MSI_ADDRESS: u32 = 0xFEE0_0000;
    #[cfg(target_arch = "aarch64")]
    const MSI_ADDRESS: u32 = 0x0802_0040;

    /// Aims the edu's MSI capability at `line` (x86: vector 0x50 + n for line 1000 + n; arm:
    /// the SPI's INTID) and enables it, or disables it.
    fn program_msi(config: &ConfigSpace, device: &EduDevice, line: u32, enable: bool) -> TestResult {
        let data = if cfg!(target_arch = "x86_64") { 0x50 + (line - 1000) } else { line };
        aim_msi(config, device, MSI_ADDRESS, data, enable).map(|_| ())
    }

    /// Writes `address` and `data` into the edu's MSI capability and enables it, or disables
    /// it; returns the address and data it held before.
    pub(crate) fn aim_msi(config: &ConfigSpace, device: &EduDevice, address: u32, data: u32, enable: bool) -> Result<(u32, u32), String> {
        let register = |offset: u64| config.register(u64::from(device.rid), offset);
        // SAFETY: the edu's configuration space (mapped by `config`); PCI 3.0 §6.8.1 MSI
        // capability layout.
        unsafe {
            let mut cap = u64::from(core::ptr::read_volatile(register(0x34)) & 0xFC);
            while cap != 0 && core::ptr::read_volatile(register(cap)) & 0xFF != 0x05 {
                cap = u64::from((core::ptr::read_volatile(register(cap)) >> 8) & 0xFC);
            }
            ensure!(cap != 0, "the edu has no MSI capability");
            let header = core::ptr::read_volatile(register(cap));
            let control = header >> 16;
            let data_offset = if control & (1 << 7) != 0 { 12 } else { 8 };
            let before = (core::ptr::read_volatile(register(cap + 4)), core::ptr::read_volatile(register(cap + data_offset)));
            if enable {
                core::ptr::write_volatile(register(cap + 4), address);
                if data_offset == 12 {
                    core::ptr::write_volatile(register(cap + 8), 0);
                }
                core::ptr::write_volatile(register(cap + data_offset), data);
            }
            let enabled = if enable { control | 1 } else { control & !1 };
            core::ptr::write_volatile(register(cap), enabled << 16 | (header & 0xFFFF));
            Ok(before)
        }
    }

    /// On arm, a device attached to a driver's HWPT raises its MSI and the CPU takes it: the
    /// server maps the GICv2m doorbell into every paging domain (SMMUv3 translates MSI writes).
    /// Once the driver is gone and the device blocked, its MSI faults at the doorbell and never
    /// reaches the GIC. On x86 the server runs VT-d interrupt remapping with compatibility
    /// format blocked (GSTS.CFIS clear, checked by discovery), so by spec 5.1.2.1 the
    /// compatibility-format MSI this test aims the device at directly should fault (25h);
    /// QEMU 10.0.2 passes it through whatever CFI says, so on x86 this test shows only that
    /// remapping leaves such an MSI deliverable on QEMU.
    /// On arm each domain format twice: by default the server keeps the GICv2m doorbell (which
    /// cannot tell devices apart) out of domains and an attached device's MSI faults; started
    /// with ALLOW_UNISOLATED_MSI it maps it and the MSI reaches the CPU.
    fn attached_device_msi() -> TestResult {
        for &format in DOMAIN_FORMATS {
            attached_device_msi_with(format)?;
            #[cfg(target_arch = "aarch64")]
            attached_device_msi_with(format | SERVER_ALLOW_UNISOLATED_MSI)?;
        }
        Ok(())
    }

    fn attached_device_msi_with(server_arg: u64) -> TestResult {
        with_kernel(|kernel| {
            // x86: not the fault event's line nor the server's pool.
            #[cfg(target_arch = "x86_64")]
            let skip = 1 + platform::POOL_LINES as usize;
            #[cfg(target_arch = "aarch64")]
            let skip = 0;
            let Some(msi) = boot_caps(crate::boot_info()).into_iter().filter(|cap| cap.name == "msi").nth(skip) else {
                // A GICv3 machine: its MSIs go through the ITS (`its::` tests).
                crate::ktest::skip(String::from("no GICv2m MSI lines on this machine (a GICv3: see the its:: tests)"));
                return Ok(());
            };
            let Object::Irq(irq) = msi.object else { return Err("the msi capability is no IRQ line".into()) };
            let (server, driver_pid, device) = server_and_driver(kernel, server_arg, scenario::HOLD, &[1])?;
            if !discovery_agrees(&server)? {
                skip_without_iommu();
                return Ok(());
            }
            kernel.start_process(driver_pid).map_err(err("start driver"))?;
            run_until(kernel, "the driver's mapping", |k| server.word(status::PINNED_PAGES) == HOLD_PAGES || k.has_exited(driver_pid))?;
            ensure!(!kernel.has_exited(driver_pid), "driver ended early: {:?}", kernel.take_exit(driver_pid));
            // The line as a driver's irq_bind would set it up.
            let notification = Rc::new(core::cell::RefCell::new(Default::default()));
            let (line, edge) = (irq.borrow().line, irq.borrow().edge);
            irq.borrow_mut().bound = Some((notification, 0));
            kernel.irqs.insert(line, Rc::downgrade(&irq));
            arch::irq_configure(line, edge);
            arch::irq_set_enabled(line, true);
            let config = ConfigSpace::open()?;
            program_msi(&config, &device, line, true)?;
            let raise = |status: u32| {
                // SAFETY: the edu's interrupt-raise register in BAR0 (direct map).
                unsafe { core::ptr::write_volatile(direct::<u32>(device.bar0 + 0x60), status) }
            };
            let acknowledge = || {
                // SAFETY: the edu's interrupt status and acknowledge registers.
                unsafe {
                    let status = core::ptr::read_volatile(direct::<u32>(device.bar0 + 0x24));
                    core::ptr::write_volatile(direct::<u32>(device.bar0 + 0x64), status);
                }
            };
            #[cfg(target_arch = "x86_64")]
            let doorbell_mapped = true;
            #[cfg(target_arch = "aarch64")]
            let doorbell_mapped = server_arg & SERVER_ALLOW_UNISOLATED_MSI != 0;
            if doorbell_mapped {
                let faults_before = server.word(status::UNROUTED_FAULTS);
                raise(1);
                run_until(kernel, "the attached device's MSI", |_| irq.borrow().last_fired_at != 0)?;
                acknowledge();
                ensure!(server.word(status::UNROUTED_FAULTS) == faults_before, "the MSI write faulted in the IOMMU");
                crate::println!("iommu: MSI of the attached edu (line {line}) reached the CPU through the IOMMU");
            } else {
                let faults_before = server.word(status::FAULTS);
                raise(1);
                run_until(kernel, "the attached device's MSI to fault", |_| server.word(status::FAULTS) > faults_before)?;
                acknowledge();
                let doorbell_page = u64::from(MSI_ADDRESS) & !0xFFF;
                ensure!(server.word(status::LAST_FAULT_ADDRESS) & !0xFFF == doorbell_page, "fault at {:#x}, expected the doorbell page {doorbell_page:#x}", server.word(status::LAST_FAULT_ADDRESS));
                ensure!(irq.borrow().last_fired_at == 0, "an attached device's MSI reached the GIC through an unisolated doorbell the server was not allowed to map");
                crate::println!("iommu: GICv2m doorbell not mapped by default: the attached edu's MSI faulted and never reached the GIC");
            }

            kernel.kill(driver_pid, ExitReason::Killed);
            run_until(kernel, "the server to reap the killed driver", |_| server.word(status::CLIENTS_REAPED) == 1)?;
            if cfg!(target_arch = "aarch64") {
                // The server quiesced the device when its owner went (bus mastering and MSI
                // off): the attacker holding it turns both on again.
                program_msi(&config, &device, line, true)?;
                let command = config.register(u64::from(device.rid), 0x04);
                // SAFETY: the edu's command register, mapped by `config`; the status half is
                // write-one-to-clear, written as zeros.
                unsafe { core::ptr::write_volatile(command, (core::ptr::read_volatile(command) & 0xffff) | 0x4) };
                let fired = irq.borrow().last_fired_at;
                let faults_before = server.word(status::UNROUTED_FAULTS);
                raise(2);
                run_until(kernel, "the blocked MSI to be reported", |_| server.word(status::UNROUTED_FAULTS) > faults_before)?;
                acknowledge();
                let doorbell_page = u64::from(MSI_ADDRESS) & !0xFFF;
                ensure!(server.word(status::LAST_FAULT_ADDRESS) & !0xFFF == doorbell_page, "fault at {:#x}, expected the doorbell page {doorbell_page:#x}", server.word(status::LAST_FAULT_ADDRESS));
                ensure!(irq.borrow().last_fired_at == fired, "the blocked device's MSI reached the GIC");
                crate::println!("iommu: MSI of the blocked edu faulted at the doorbell and never reached the GIC");
            }
            program_msi(&config, &device, line, false)?;
            arch::irq_set_enabled(line, false);
            kernel.irqs.remove(&line);
            Ok(())
        })
    }

    /// Server start arguments the scenarios with DMA run under: on arm both SMMU domain
    /// formats, stage 1 (with a context descriptor) and stage 2.
    const DOMAIN_FORMATS: &[u64] = &[
        0,
        #[cfg(target_arch = "aarch64")]
        SERVER_STAGE2,
    ];

    /// Checks that the server holds no object, no client page and no kernel pin beyond
    /// `baseline` (its own tables and queues).
    fn server_holds_nothing(kernel: &Kernel, server: &ServerUnderTest, baseline: usize) -> TestResult {
        ensure!(server.word(status::OBJECTS) == 0, "{} objects left in the server", server.word(status::OBJECTS));
        ensure!(server.word(status::PINNED_PAGES) == 0, "{} client pages still pinned in the object model", server.word(status::PINNED_PAGES));
        ensure!(server.word(status::KERNEL_PINS) == 0, "{} kernel pins still held for client memory", server.word(status::KERNEL_PINS));
        let pins = server_kernel_pins(kernel, server);
        ensure!(pins == baseline, "the server holds {pins} kernel pins, {baseline} before the driver ran");
        Ok(())
    }

    /// Runs driver `scenario` (which ends by itself) with the first `devices` edu devices under
    /// each domain format: it must pass its own checks, the server must have counted a number
    /// of DMA faults in `faults`, all of them routed to a fault queue, and once the driver is
    /// reaped the server must hold nothing of it.
    fn scenario_with_devices(scenario: u64, devices: usize, faults: core::ops::RangeInclusive<u64>) -> TestResult {
        for &server_arg in DOMAIN_FORMATS {
            let translated = with_kernel(|kernel| {
                let (server, driver_pid, _) = server_and_driver_with_devices(kernel, server_arg, scenario, &[1], devices)?;
                if !discovery_agrees(&server)? {
                    skip_without_iommu();
                    return Ok(false);
                }
                let baseline = server_kernel_pins(kernel, &server);
                kernel.start_process(driver_pid).map_err(err("start driver"))?;
                run_until(kernel, "the driver", |k| k.has_exited(driver_pid))?;
                let exit = exit_of(kernel, driver_pid);
                ensure!(exit == Some(ExitReason::Exited(0)), "driver ended with {exit:?} (server argument {server_arg})");
                run_until(kernel, "the server to reap the driver", |_| server.word(status::CLIENTS_REAPED) == 1)?;
                ensure!(!kernel.has_exited(server.pid), "server died");
                ensure!(faults.contains(&server.word(status::FAULTS)), "the server counted {} DMA faults, expected {faults:?}", server.word(status::FAULTS));
                ensure!(server.word(status::UNROUTED_FAULTS) == 0, "{} faults reached no fault queue", server.word(status::UNROUTED_FAULTS));
                server_holds_nothing(kernel, &server, baseline)?;
                Ok(true)
            })?;
            if !translated {
                break;
            }
        }
        Ok(())
    }

    /// One server with a good driver (`good_scenario`, badge 1, given the first edu device) and
    /// a hostile one (`hostile_scenario`, one connection per (badge, endpoint slot), given the
    /// second edu device if `hostile_device`), the server up; `None` without an IOMMU (the
    /// test is then reported skipped). The drivers are created, not started.
    fn good_and_hostile_drivers(
        kernel: &mut Kernel,
        server_arg: u64,
        good_scenario: u64,
        hostile_scenario: u64,
        hostile_connections: &[(u64, u64)],
        hostile_device: bool,
    ) -> Result<Option<(ServerUnderTest, Pid, Pid)>, String> {
        let good = kernel.create_process("edu-driver", EDU_DRIVER, good_scenario, DRIVER_QUOTA).map_err(err("create the good driver"))?;
        let hostile = kernel.create_process("edu-driver", EDU_DRIVER, hostile_scenario, DRIVER_QUOTA).map_err(err("create the hostile driver"))?;
        let mut clients: Vec<(Pid, u64)> = Vec::from([(good, 1)]);
        clients.extend(hostile_connections.iter().map(|&(badge, _)| (hostile, badge)));
        let server = create_server(kernel, server_arg, &clients)?;
        let client = Rights::WRITE.union(Rights::GRANT);
        kernel.install(good, driver_slot::SERVER, server.endpoint.clone(), client, 1).map_err(err("good driver's endpoint"))?;
        for &(badge, slot) in hostile_connections {
            kernel.install(hostile, slot, server.endpoint.clone(), client, badge).map_err(err("hostile driver's endpoint"))?;
        }
        kernel.start_process(server.pid).map_err(err("start server"))?;
        wait_ready(kernel, &server)?;
        if !discovery_agrees(&server)? {
            skip_without_iommu();
            return Ok(None);
        }
        let devices = edu_devices(&ConfigSpace::open()?);
        ensure!(devices.len() >= 2, "found {} edu devices, the test needs two (qemu-run.sh adds two)", devices.len());
        let rights = Rights::READ.union(Rights::WRITE).union(Rights::GRANT).union(Rights::DERIVE);
        let owners = if hostile_device { &[good, hostile][..] } else { &[good][..] };
        for (&pid, device) in owners.iter().zip(&devices) {
            let bar = Object::Mmio(Rc::new(MmioRegion { base: device.bar0, size: 1 << 20 }));
            kernel.install(pid, driver_slot::DEVICE, bar, rights, 0).map_err(err("device capability"))?;
        }
        Ok(Some((server, good, hostile)))
    }

    /// Seeds of the hostile request streams (one boot of the server each).
    const STREAM_SEEDS: [u64; 2] = [0x5eed_0001, 0x5eed_0002];

    /// A hostile driver throws a seeded random request stream at the server (its own device
    /// DMAing at random IOVAs meanwhile) while a good driver, a separate process, copies pages
    /// through its device and checks every byte: the good driver sees no wrong byte and no
    /// fault, the hostile one gets only success or defined errors, the server carries on, and
    /// once both are reaped it holds nothing of either.
    fn hostile_stream_beside_good_driver() -> TestResult {
        for seed in STREAM_SEEDS {
            let translated = with_kernel(|kernel| {
                let stream = scenario::HOSTILE_STREAM | seed << 8;
                let Some((server, good, hostile)) = good_and_hostile_drivers(kernel, 0, scenario::DMA_ROUNDS, stream, &[(2, driver_slot::SERVER)], true)? else {
                    return Ok(false);
                };
                let baseline = server_kernel_pins(kernel, &server);
                kernel.start_process(good).map_err(err("start the good driver"))?;
                kernel.start_process(hostile).map_err(err("start the hostile driver"))?;
                run_until(kernel, "both drivers", |k| k.has_exited(good) && k.has_exited(hostile))?;
                let (good_exit, hostile_exit) = (exit_of(kernel, good), exit_of(kernel, hostile));
                ensure!(good_exit == Some(ExitReason::Exited(0)), "the good driver ended with {good_exit:?} beside stream {seed:#x}");
                ensure!(hostile_exit == Some(ExitReason::Exited(0)), "the hostile driver ended with {hostile_exit:?} (stream {seed:#x})");
                ensure!(!kernel.has_exited(server.pid), "server died under stream {seed:#x}");
                run_until(kernel, "the server to reap both drivers", |_| server.word(status::CLIENTS_REAPED) == 2)?;
                server_holds_nothing(kernel, &server, baseline)?;
                Ok(true)
            })?;
            if !translated {
                break;
            }
        }
        Ok(())
    }

    /// The status words a client's whole life must leave as they were: objects, pinned pages,
    /// kernel pins of client memory, open clients, and what all clients hold against their
    /// limits (handles, areas, PASIDs, fault queues, HWPTs, estimated heap bytes).
    const COUNTERS: [(usize, &str); 10] = [
        (status::OBJECTS, "objects"),
        (status::PINNED_PAGES, "pinned pages"),
        (status::KERNEL_PINS, "kernel pins of client memory"),
        (status::OPEN_CLIENTS, "open clients"),
        (status::CHARGED_HANDLES, "charged handles"),
        (status::CHARGED_AREAS, "charged areas"),
        (status::CHARGED_PASIDS, "charged PASIDs"),
        (status::CHARGED_FAULT_QUEUES, "charged fault queues"),
        (status::CHARGED_DOMAINS, "charged HWPTs"),
        (status::CHARGED_BYTES, "charged heap bytes"),
    ];

    /// A hostile driver (LIMITS_EXHAUSTED) runs a server with small limits
    /// (`small_limits`) out of each per-client limit, every one ending in `NoResources`; at
    /// its limits it waits while a good driver, a separate process, does its DMA rounds with
    /// every byte checked. The counts granted before each refusal must be the limits (the
    /// server memory step: fewer areas than the area limit, so memory, not areas, refused),
    /// the server must charge exactly the limits while the hostile driver holds them, and once
    /// both are reaped, every counter (and the server's kernel pins) is back at its snapshot.
    fn limits_exhausted_beside_good_driver() -> TestResult {
        use iommu_server_contract::small_limits as limit;
        with_kernel(|kernel| {
            let hostile_connections = [(2, driver_slot::SERVER)];
            let Some((server, good, hostile)) =
                good_and_hostile_drivers(kernel, iommu_server_contract::start::SMALL_LIMITS, scenario::DMA_ROUNDS, scenario::LIMITS_EXHAUSTED, &hostile_connections, true)?
            else {
                return Ok(());
            };
            let report_page = give_report_page(kernel, hostile)?;
            let snapshot: Vec<u64> = COUNTERS.iter().map(|&(word, _)| server.word(word)).collect();
            let pins = server_kernel_pins(kernel, &server);
            kernel.start_process(hostile).map_err(err("start the hostile driver"))?;
            run_until(kernel, "the hostile driver to reach its limits", |k| page_word(&report_page, report::PHASE) == report::AT_LIMITS || k.has_exited(hostile))?;
            ensure!(!kernel.has_exited(hostile), "the hostile driver ended early: {:?}", kernel.take_exit(hostile));
            // Held before the IOAS step: its device, first IOAS, fault queues and HWPTs.
            let handles_before_ioases = 2 + limit::FAULT_QUEUES + limit::DOMAINS;
            let expected = [
                ("fault queues", limit::FAULT_QUEUES),
                ("HWPTs", limit::DOMAINS),
                ("PASIDs", limit::PASIDS),
                ("one-page areas", limit::AREAS),
                ("IOASes", limit::HANDLES - handles_before_ioases),
            ];
            for (step, (what, limit)) in expected.into_iter().enumerate() {
                let count = page_word(&report_page, report::LIMIT_COUNTS + step);
                ensure!(count == limit, "{count} {what} granted before NoResources, the limit is {limit}");
            }
            let large = page_word(&report_page, report::LIMIT_COUNTS + expected.len());
            ensure!(
                (1..limit::AREAS).contains(&large),
                "{large} large areas granted before NoResources: server memory should refuse before the area limit ({})",
                limit::AREAS
            );
            let at_limits = [
                (status::CHARGED_HANDLES, limit::HANDLES, "handles"),
                (status::CHARGED_PASIDS, limit::PASIDS, "PASIDs"),
                (status::CHARGED_FAULT_QUEUES, limit::FAULT_QUEUES, "fault queues"),
                (status::CHARGED_DOMAINS, limit::DOMAINS, "HWPTs"),
                (status::CHARGED_AREAS, large, "areas"),
            ];
            for (word, held, what) in at_limits {
                ensure!(server.word(word) == held, "the server charges {} {what} to the hostile driver, it holds {held}", server.word(word));
            }
            ensure!(server.word(status::CHARGED_BYTES) <= limit::MEMORY_BYTES, "{} heap bytes charged, over the limit", server.word(status::CHARGED_BYTES));

            // The good driver's rounds, all of them while the hostile one holds its limits.
            kernel.start_process(good).map_err(err("start the good driver"))?;
            run_until(kernel, "the good driver", |k| k.has_exited(good))?;
            let good_exit = exit_of(kernel, good);
            ensure!(good_exit == Some(ExitReason::Exited(0)), "the good driver ended with {good_exit:?} beside a driver at its limits");
            ensure!(!kernel.has_exited(hostile), "the hostile driver left before the good one finished: {:?}", kernel.take_exit(hostile));

            page_words(&report_page).write(report::COMMAND, report::LEAVE);
            run_until(kernel, "the hostile driver to leave", |k| k.has_exited(hostile))?;
            let hostile_exit = exit_of(kernel, hostile);
            ensure!(hostile_exit == Some(ExitReason::Exited(0)), "the hostile driver ended with {hostile_exit:?}");
            run_until(kernel, "the server to reap both drivers", |_| server.word(status::CLIENTS_REAPED) == 2)?;
            ensure!(!kernel.has_exited(server.pid), "the server died");
            for (&(word, what), &before) in COUNTERS.iter().zip(&snapshot) {
                ensure!(server.word(word) == before, "{what}: {} after both drivers left, {before} before", server.word(word));
            }
            let pins_after = server_kernel_pins(kernel, &server);
            ensure!(pins_after == pins, "the server holds {pins_after} kernel pins, {pins} before the drivers ran");
            Ok(())
        })
    }

    /// x86: a hostile device sends forged interrupt requests. The driver's FORGED_INTERRUPTS
    /// scenario sets up a victim (first edu, its MSI from the server: entry 0) and the owner of
    /// the second edu (attached, with a fault queue, its own MSI: entry 1). The test then aims
    /// the second edu's MSI capability at crafted remappable-format requests (QEMU attributes
    /// MSIs, not DMA writes, to a requester: see the scenario) and raises it: the victim's
    /// entry (source-id check, 26h), an entry nobody was given (22h), an index beyond the table
    /// (21h). Each is recorded with the hostile device's requester ID and index, reaches a
    /// fault queue (the driver checks it is the hostile device's, with reason `Interrupt`) and
    /// no CPU (the victim's line never fires). The driver then checks both devices' own MSIs.
    /// Once the driver is gone, the unbound second edu, aimed at the entry it had, faults 22h
    /// unrouted, and every pool line is unbound.
    #[cfg(target_arch = "x86_64")]
    fn forged_interrupts() -> TestResult {
        with_kernel(|kernel| {
            let (server, driver_pid, devices) = server_and_driver_with_devices(kernel, 0, scenario::FORGED_INTERRUPTS, &[1, 2], 2)?;
            if !discovery_agrees(&server)? {
                skip_without_iommu();
                return Ok(());
            }
            let report = give_report_page(kernel, driver_pid)?;
            kernel.start_process(driver_pid).map_err(err("start driver"))?;
            run_until(kernel, "the driver to set up", |k| page_word(&report, report::PHASE) == report::FORGERY_TARGETS_READY || k.has_exited(driver_pid))?;
            ensure!(!kernel.has_exited(driver_pid), "driver ended early: {:?}", kernel.take_exit(driver_pid));
            let victim_line = kernel.irqs.get(&1001).and_then(|line| line.upgrade()).ok_or("the victim's MSI line 1001 is not bound")?;
            let hostile = &devices[1];
            let config = ConfigSpace::open()?;
            let raise = |device: &EduDevice| {
                // SAFETY: the edu's interrupt-raise register in BAR0 (direct map).
                unsafe { core::ptr::write_volatile(direct::<u32>(device.bar0 + 0x60), 1) }
            };
            let acknowledge = |device: &EduDevice| {
                // SAFETY: the edu's interrupt acknowledge register.
                unsafe { core::ptr::write_volatile(direct::<u32>(device.bar0 + 0x64), 1) }
            };
            let mut programmed = None;
            for (index, reason) in driver::FORGERY_INDICES.into_iter().zip([0x26, 0x22, 0x21]) {
                // Remappable format (spec 5.1.5.2): 0xFEE, handle 14:0 in 19:5, bit 4 set.
                let address = 0xFEE0_0000 | (index as u32 & 0x7fff) << 5 | 1 << 4;
                let (faults, unrouted) = (server.word(status::FAULTS), server.word(status::UNROUTED_FAULTS));
                let before = aim_msi(&config, hostile, address, 0, true)?;
                programmed = programmed.or(Some(before));
                raise(hostile);
                run_until(kernel, "the forged request to be refused", |_| server.word(status::FAULTS) > faults)?;
                acknowledge(hostile);
                let (rid, code, named) = (server.word(status::LAST_FAULT_RID), server.word(status::LAST_FAULT_REASON), server.word(status::LAST_FAULT_ADDRESS));
                ensure!(rid == u64::from(hostile.rid) && code == reason && named == index, "refusal from {rid:#x} reason {code:#x} index {named:#x}, expected {:#x} {reason:#x} {index:#x}", hostile.rid);
                ensure!(server.word(status::UNROUTED_FAULTS) == unrouted, "the refusal of index {index:#x} reached no fault queue");
                ensure!(victim_line.borrow().last_fired_at == 0, "the request naming index {index:#x} reached the victim's line");
                crate::println!("iommu: forged request {address:#x} from the hostile edu refused with {reason:#x}, victim untouched");
            }
            // What the server programmed goes back: the driver checks the device's own MSI next.
            let (address, data) = programmed.ok_or("no forged request sent")?;
            ensure!(address == 0xFEE0_0000 | 1 << 5 | 1 << 4 && data == 0, "the server programmed the hostile edu with {address:#x}/{data:#x}, expected entry 1 in remappable format");
            aim_msi(&config, hostile, address, data, true)?;
            run_until(kernel, "the driver", |k| k.has_exited(driver_pid))?;
            let exit = exit_of(kernel, driver_pid);
            ensure!(exit == Some(ExitReason::Exited(0)), "driver ended with {exit:?}");
            ensure!(victim_line.borrow().last_fired_at != 0, "the victim's own DMA-done interrupt never fired");
            run_until(kernel, "the server to reap the driver", |_| server.word(status::CLIENTS_REAPED) == 2)?;
            ensure!((1001..=1004).all(|line| !kernel.irqs.contains_key(&line)), "a pool line is still bound after its driver ended");

            // The second edu belongs to nobody now; the entry it had was cleared at unbind. Its
            // bus mastering went off when it left its owner: the attacker turns it on again.
            let command = config.register(u64::from(hostile.rid), 0x04);
            // SAFETY: the edu's command register, mapped by `config`; the status half is
            // write-one-to-clear, written as zeros.
            unsafe { core::ptr::write_volatile(command, (core::ptr::read_volatile(command) & 0xffff) | 0x4) };
            let before = server.word(status::UNROUTED_FAULTS);
            aim_msi(&config, hostile, 0xFEE0_0000 | 1 << 5 | 1 << 4, 0, true)?;
            raise(hostile);
            run_until(kernel, "the unbound device's MSI to be refused", |_| server.word(status::UNROUTED_FAULTS) > before)?;
            acknowledge(hostile);
            aim_msi(&config, hostile, 0, 0, false)?;
            let (rid, reason, index) = (server.word(status::LAST_FAULT_RID), server.word(status::LAST_FAULT_REASON), server.word(status::LAST_FAULT_ADDRESS));
            ensure!(rid == u64::from(hostile.rid) && reason == 0x22 && index == 1, "refusal from {rid:#x} reason {reason:#x} index {index}, expected {:#x} 22h index 1", hostile.rid);
            crate::println!("iommu: the unbound device's MSI through its former entry faulted 22h and reached nobody");
            Ok(())
        })
    }

    /// Both edu devices of one driver in one IOAS (one shared HWPT, then one HWPT each): one
    /// map serves both devices' DMA; after the unmap each device's write faults (four in all).
    fn two_devices_one_ioas() -> TestResult {
        scenario_with_devices(scenario::TWO_DEVICES_ONE_IOAS, 2, 4..=u64::MAX)
    }

    /// Each device in its own IOAS, the same IOVAs mapped to different memory; the second
    /// device's write to an IOVA only the first IOAS maps faults (once).
    fn two_devices_two_ioases() -> TestResult {
        scenario_with_devices(scenario::TWO_DEVICES_TWO_IOAS, 2, 1..=u64::MAX)
    }

    /// A device moved between HWPTs of two IOASes with `device_replace`; no DMA of the
    /// scenario may fault.
    fn replace_moves_device() -> TestResult {
        scenario_with_devices(scenario::REPLACE, 1, 0..=0)
    }

    /// A driver's thread maps and unmaps while another destroys the IOAS and HWPT under it
    /// (the driver checks every reply); afterwards the server holds exactly what the driver
    /// kept (its device and fault queue, nothing pinned), and nothing once it is killed.
    fn destroy_races_map() -> TestResult {
        for &server_arg in DOMAIN_FORMATS {
            let translated = with_kernel(|kernel| {
                let badges = [1, 2, 3];
                let (server, driver_pid, _) = server_and_driver_with_devices(kernel, server_arg, scenario::DESTROY_RACES_MAP, &badges, 1)?;
                let report_page = give_report_page(kernel, driver_pid)?;
                if !discovery_agrees(&server)? {
                    skip_without_iommu();
                    return Ok(false);
                }
                let baseline = server_kernel_pins(kernel, &server);
                kernel.start_process(driver_pid).map_err(err("start driver"))?;
                run_until(kernel, "the race to end", |k| page_word(&report_page, report::PHASE) == report::RACE_DONE || k.has_exited(driver_pid))?;
                ensure!(!kernel.has_exited(driver_pid), "driver ended with {:?} (server argument {server_arg})", kernel.take_exit(driver_pid));
                ensure!(!kernel.has_exited(server.pid), "server died");
                ensure!(server.word(status::OPEN_CLIENTS) == 1, "{} clients open; only the driver's main connection should be", server.word(status::OPEN_CLIENTS));
                ensure!(server.word(status::OBJECTS) == report::OBJECTS_KEPT, "the server holds {} objects, the driver kept {}", server.word(status::OBJECTS), report::OBJECTS_KEPT);
                ensure!(server.word(status::PINNED_PAGES) == 0 && server.word(status::KERNEL_PINS) == 0, "pins left after the race: {} pages, {} kernel pins", server.word(status::PINNED_PAGES), server.word(status::KERNEL_PINS));
                ensure!(server_kernel_pins(kernel, &server) == baseline, "the server holds {} kernel pins, {baseline} before the race", server_kernel_pins(kernel, &server));
                kernel.kill(driver_pid, ExitReason::Killed);
                run_until(kernel, "the server to reap the driver's connections", |_| server.word(status::CLIENTS_REAPED) == badges.len() as u64)?;
                ensure!(server.word(status::OPEN_CLIENTS) == 0, "client still open");
                server_holds_nothing(kernel, &server, baseline)?;
                Ok(true)
            })?;
            if !translated {
                break;
            }
        }
        Ok(())
    }

    fn bench_with(server_arg: u64) -> TestResult {
        with_kernel(|kernel| {
            let (server, driver_pid, _device) = server_and_driver(kernel, server_arg, scenario::BENCH, &[1])?;
            let report_page = give_report_page(kernel, driver_pid)?;
            if !discovery_agrees(&server)? {
                skip_without_iommu();
                return Ok(());
            }
            kernel.start_process(driver_pid).map_err(err("start driver"))?;
            #[cfg(target_arch = "x86_64")]
            bench_msi_latency(kernel, &report_page, driver_pid, &_device)?;
            #[cfg(target_arch = "aarch64")]
            crate::tests_its::bench_msi_latency(kernel, &report_page, driver_pid, &_device)?;
            run_until(kernel, "the benchmark driver", |k| k.has_exited(driver_pid))?;
            let exit = exit_of(kernel, driver_pid);
            ensure!(exit == Some(ExitReason::Exited(0)), "benchmark driver ended with {exit:?}");
            let held_at = page_word(&report_page, report::FAULT_HELD_AT);
            let fired_at = iommu_interrupt_before(kernel, &server, held_at)?;
            crate::println!("bench: fault delivery (IOMMU interrupt in the kernel to the driver holding the record) {} guest instructions", held_at - fired_at);
            Ok(())
        })
    }

    /// x86: MSI latency, from the moment the kernel takes the device's MSI (`last_fired_at` of
    /// its line) to the driver's `notify_wait` returning (the driver reads the counter right
    /// after, one system call included), first as the server routed it (remappable format
    /// through an IRTE), then without interrupt remapping: the test, as root, aims the edu's
    /// MSI at the same vector in compatibility format and turns GCMD.IRE off. Each figure is
    /// the last of four rounds.
    #[cfg(target_arch = "x86_64")]
    fn bench_msi_latency(kernel: &mut Kernel, report_page: &MemoryObject, driver_pid: Pid, device: &EduDevice) -> TestResult {
        const VTD_GCMD: u64 = 0xFED9_0018;
        const VTD_GSTS: u64 = 0xFED9_001C;
        /// GSTS bits mirroring persistent GCMD enables: TE 31, EAFL 28, QIE 26, IRE 25, CFI 23.
        const PERSISTENT: u32 = 1 << 31 | 1 << 28 | 1 << 26 | 1 << 25 | 1 << 23;
        const IRE: u32 = 1 << 25;
        let set_word = |index: usize, value: u64| page_words(report_page).write(index, value);
        run_until(kernel, "the driver's MSI", |k| page_word(report_page, report::PHASE) == report::MSI_READY || k.has_exited(driver_pid))?;
        ensure!(!kernel.has_exited(driver_pid), "benchmark driver ended early: {:?}", kernel.take_exit(driver_pid));
        // The driver's MSI is the first line of the pool: 1001, vector 0x51.
        let line = kernel.irqs.get(&1001).and_then(|line| line.upgrade()).ok_or("the driver's MSI line 1001 is not bound")?;
        let measure = |kernel: &mut Kernel| -> Result<u64, String> {
            let mut latency = 0;
            for _ in 0..4 {
                set_word(report::MSI_COMMAND, report::MEASURE_MSI);
                run_until(kernel, "the driver to take its MSI", |k| page_word(report_page, report::MSI_COMMAND) == 0 || k.has_exited(driver_pid))?;
                ensure!(!kernel.has_exited(driver_pid), "benchmark driver ended: {:?}", kernel.take_exit(driver_pid));
                latency = page_word(report_page, report::MSI_WOKEN_AT) - line.borrow().last_fired_at;
            }
            Ok(latency)
        };
        let remapped = measure(kernel)?;
        let config = ConfigSpace::open()?;
        aim_msi(&config, device, MSI_ADDRESS, 0x51, true)?;
        // SAFETY: VT-d GCMD/GSTS through the direct map, 32-bit registers written 4 bytes wide;
        // one enable changed per write (spec 11.4.4), here IRE off.
        unsafe {
            let status = core::ptr::read_volatile(direct::<u32>(VTD_GSTS));
            core::ptr::write_volatile(direct::<u32>(VTD_GCMD), status & PERSISTENT & !IRE);
            ensure!(core::ptr::read_volatile(direct::<u32>(VTD_GSTS)) & IRE == 0, "interrupt remapping did not turn off");
        }
        let compatibility = measure(kernel)?;
        set_word(report::MSI_COMMAND, report::END);
        crate::println!("bench: MSI to the driver's wait returning, remapped (IRTE) {remapped} guest instructions");
        crate::println!("bench: MSI to the driver's wait returning, compatibility format (no remapping) {compatibility} guest instructions");
        Ok(())
    }

    /// When the last interrupt bound to the server's event notification (the IOMMU's fault
    /// interrupt) reached the kernel before `moment`.
    fn iommu_interrupt_before(kernel: &Kernel, server: &ServerUnderTest, moment: u64) -> Result<u64, String> {
        let events = match kernel.processes.get(server.pid).and_then(|p| p.cspace.get(server_slot::EVENTS).ok()) {
            Some(cap) => match &cap.object {
                Object::Notification(notification) => notification.clone(),
                _ => return Err("the server's event slot holds no notification".into()),
            },
            None => return Err("the server has no event notification".into()),
        };
        let fired = kernel
            .irqs
            .values()
            .filter_map(|line| line.upgrade())
            .filter(|irq| irq.borrow().bound.as_ref().is_some_and(|(notification, _)| Rc::ptr_eq(notification, &events)))
            .map(|irq| irq.borrow().last_fired_at)
            .filter(|&at| at != 0 && at <= moment)
            .max();
        fired.ok_or_else(|| "no IOMMU interrupt reached the kernel before the driver held the fault".into())
    }

    fn bench() -> TestResult {
        bench_with(SERVER_BENCH)?;
        // Both SMMU domain formats: stage 1 above, stage 2 here.
        #[cfg(target_arch = "aarch64")]
        bench_with(SERVER_BENCH | SERVER_STAGE2)?;
        Ok(())
    }

    /// The root task carries out the system description (user/root/src/system.rs): the server
    /// comes up, each edu driver gets its own device only, DMAs through the IOMMU and sees its
    /// refused DMA in its fault queue; the root task checks that the server saw every fault and
    /// tore every client down, and ends with status 0 only if all of that held.
    fn root_task_runs_the_system() -> TestResult {
        with_kernel(|kernel| {
            let root = crate::root::create(kernel)?;
            kernel.start_process(root).map_err(err("start the root task"))?;
            run_until(kernel, "the root task", |k| k.has_exited(root))?;
            let exit = exit_of(kernel, root);
            ensure!(exit == Some(ExitReason::Exited(0)), "root task ended with {exit:?}");
            Ok(())
        })
    }

    /// A driver that revokes and deletes the message windows the server lent it, before,
    /// during (from a second thread) and after its requests (WINDOW_TAKEN, three connections),
    /// runs beside one doing edu DMA with every byte checked (DMA). The server maps each window
    /// through its own capability, so it never faults: it serves both to the end, and once both
    /// are reaped it holds no window, mapping or pin.
    fn window_taken() -> TestResult {
        with_kernel(|kernel| {
            let hostile_connections = [(2, driver_slot::SERVER), (3, driver_slot::SECOND_SERVER), (4, driver_slot::THIRD_SERVER)];
            let Some((server, good, hostile)) = good_and_hostile_drivers(kernel, 0, scenario::DMA, scenario::WINDOW_TAKEN, &hostile_connections, false)? else {
                return Ok(());
            };
            let baseline = server_kernel_pins(kernel, &server);
            kernel.start_process(hostile).map_err(err("start the hostile driver"))?;
            kernel.start_process(good).map_err(err("start the good driver"))?;
            run_until(kernel, "both drivers", |k| (k.has_exited(good) && k.has_exited(hostile)) || k.has_exited(server.pid))?;
            ensure!(!kernel.has_exited(server.pid), "server died: {:?}", kernel.take_exit(server.pid));
            let (hostile_exit, good_exit) = (exit_of(kernel, hostile), exit_of(kernel, good));
            ensure!(hostile_exit == Some(ExitReason::Exited(0)), "hostile driver ended with {hostile_exit:?}");
            ensure!(good_exit == Some(ExitReason::Exited(0)), "good driver ended with {good_exit:?}");
            let connections = 1 + hostile_connections.len() as u64;
            run_until(kernel, "the server to reap both drivers", |_| server.word(status::CLIENTS_REAPED) == connections)?;
            ensure!(!kernel.has_exited(server.pid), "server died while reaping");
            ensure!(server.word(status::OPEN_CLIENTS) == 0, "{} clients still open", server.word(status::OPEN_CLIENTS));
            ensure!(server.word(status::PINNED_PAGES) == 0 && server.word(status::KERNEL_PINS) == 0, "pins left: {} pages, {} kernel pins", server.word(status::PINNED_PAGES), server.word(status::KERNEL_PINS));
            ensure!(server_kernel_pins(kernel, &server) == baseline, "the server holds {} kernel pins, {baseline} before", server_kernel_pins(kernel, &server));
            // Every window is gone from the server: its capability and its mapping.
            let process = kernel.processes.get(server.pid).ok_or("server process")?;
            for badge in 1..=server_slot::MAX_CLIENTS {
                ensure!(process.cspace.get(server_slot::WINDOW_BASE + badge - 1).is_err(), "the server still holds client {badge}'s window");
                ensure!(!process.mappings.contains(server_layout::WINDOWS + badge * server_layout::PAGE), "the server still maps client {badge}'s window");
            }
            crate::println!("iommu: a driver took its windows away before, during and after its requests; the server served it and a DMA driver to the end and kept nothing");
            Ok(())
        })
    }

    /// Revocation reaches the IOMMU. The driver maps memory lent through a capability it
    /// derived, DMAs through it, revokes that capability and drops its own: the server removes
    /// the mappings (unmap and invalidation) and unpins, and only then are the frames free.
    /// Once the driver saw the mapping gone, the frames must be back in the pool and the
    /// server's pins back to where they were; the test claims the frames and fills them with
    /// canaries, and the device's retried write to the old IOVA faults into the driver's queue
    /// and leaves every canary. Then the driver revokes its device capability: the server
    /// blocks and unbinds the device at once, and its next DMA is refused.
    fn revoked_memory_and_device() -> TestResult {
        const CANARY: u8 = 0xc5;
        with_kernel(|kernel| {
            let (server, driver_pid, device) = server_and_driver(kernel, 0, scenario::REVOKED_MEMORY_AND_DEVICE, &[1])?;
            if !discovery_agrees(&server)? {
                skip_without_iommu();
                return Ok(());
            }
            let report_page = give_report_page(kernel, driver_pid)?;
            let baseline: Vec<u64> = kernel.processes.get(server.pid).ok_or("server")?.pins.keys().copied().collect();
            ensure!(server_watches(kernel, &server) == 0, "the server watches a device before any is bound");
            kernel.start_process(driver_pid).map_err(err("start driver"))?;
            // The frames of the pins the server takes for the driver's two-page buffer (its probe
            // and last pages are one page each).
            let mut lent_frames: Vec<u64> = Vec::new();
            run_until(kernel, "the server to remove the revoked mappings", |k| {
                if let Some(process) = k.processes.get(server.pid) {
                    for (pin, held) in &process.pins {
                        let Some(memory) = held.memory.as_ref().filter(|m| m.frames.len() == 2 && !baseline.contains(pin)) else { continue };
                        for &frame in &memory.frames[held.first_page as usize..(held.first_page + held.pages) as usize] {
                            if !lent_frames.contains(&frame) {
                                lent_frames.push(frame);
                            }
                        }
                    }
                }
                page_word(&report_page, report::PHASE) == report::MEMORY_REVOKED || k.has_exited(driver_pid)
            })?;
            ensure!(!kernel.has_exited(driver_pid), "driver ended early: {:?}", kernel.take_exit(driver_pid));
            ensure!(lent_frames.len() == 2, "the server pinned {} frames of the driver's two pages", lent_frames.len());
            ensure!(server_kernel_pins(kernel, &server) == baseline.len(), "the server holds {} kernel pins of memory, {} before", server_kernel_pins(kernel, &server), baseline.len());
            ensure!(server_watches(kernel, &server) == 1, "the server holds {} device watches, expected the bound device's", server_watches(kernel, &server));
            ensure!(server.word(status::PINNED_PAGES) == 0, "{} pages still pinned in the object model", server.word(status::PINNED_PAGES));
            // Claim the freed frames (the free list hands out the last freed first) and fill
            // them with canaries; a frame the pool does not give back was not freed.
            let mut claimed: Vec<Frame> = Vec::new();
            let mut passed: Vec<Frame> = Vec::new();
            while claimed.len() < lent_frames.len() && passed.len() < 4096 {
                let frame = Frame(mm::FRAMES.lock().alloc().ok_or("the pool ran out before giving the lent frames back")?);
                if lent_frames.contains(&frame.0) {
                    // SAFETY: a frame this test owns now, through the direct map.
                    unsafe { core::ptr::write_bytes(mm::phys_to_virt(frame.0), CANARY, 4096) };
                    claimed.push(frame);
                } else {
                    passed.push(frame);
                }
            }
            drop(passed);
            // Freed frames are anyone's: with the whole suite running, another allocation may
            // take one before this test does, so at least one must come back (none would mean
            // the pins still held them).
            ensure!(!claimed.is_empty(), "none of the lent frames came back to the free pool");
            let (faults, unrouted) = (server.word(status::FAULTS), server.word(status::UNROUTED_FAULTS));
            // SAFETY: word COMMAND of the report page, which the driver polls.
            unsafe { core::ptr::write_volatile(direct::<u64>(report_page.frames[0]).add(report::COMMAND), report::RETRY_DMA) };
            run_until(kernel, "the driver to revoke its device", |k| page_word(&report_page, report::PHASE) == report::DEVICE_REVOKED || k.has_exited(driver_pid))?;
            ensure!(server.word(status::FAULTS) > faults, "the retried write to the revoked IOVA did not fault");
            ensure!(server_watches(kernel, &server) == 0, "the revoked device's watch is still held");
            run_until(kernel, "the driver", |k| k.has_exited(driver_pid))?;
            let exit = exit_of(kernel, driver_pid);
            ensure!(exit == Some(ExitReason::Exited(0)), "driver ended with {exit:?}");
            ensure!(claimed.iter().all(|frame| frame.all(CANARY)), "the device wrote a frame freed after the revocation");
            // The driver checked that the unbound device's write left memory as it was. QEMU's
            // VT-d may drop that fault (one record per requester while one is pending), so a
            // record is not required, but one recorded must be this device's.
            if server.word(status::UNROUTED_FAULTS) > unrouted {
                ensure!(server.word(status::LAST_FAULT_RID) == u64::from(device.rid), "last fault from {:#x}, expected the edu {:#x}", server.word(status::LAST_FAULT_RID), device.rid);
            }
            run_until(kernel, "the server to reap the driver", |_| server.word(status::CLIENTS_REAPED) == 1)?;
            ensure!(!kernel.has_exited(server.pid), "server died");
            ensure!(server_kernel_pins(kernel, &server) == baseline.len(), "the server kept {} kernel pins of memory, {} before", server_kernel_pins(kernel, &server), baseline.len());
            ensure!(server_watches(kernel, &server) == 0, "the server kept {} device watches", server_watches(kernel, &server));
            crate::println!("iommu: revoked memory unmapped and unpinned before its frames were free (canaries intact); revoked device unbound and blocked");
            Ok(())
        })
    }

    /// What the restart tests (`tests_restart.rs`) take from these.
    pub(crate) mod shared {
        pub(crate) use super::platform::ConfigSpace;
        pub(crate) use super::{
            create_server_serving, discovery_agrees, err, give_report_page, page_word, page_words, run_until, server_and_driver, server_kernel_pins, skip_without_iommu, wait_ready, with_kernel,
            EduDevice, EDU_BUFFER,
        };
    }

    pub const TESTS: &[Test] = &[
        Test { name: "iommu::discovery_finds_units_and_devices", run: discovery },
        Test { name: "iommu::edu_dma_maps_unmaps_and_faults", run: edu_dma },
        #[cfg(target_arch = "aarch64")]
        Test { name: "iommu::edu_dma_stage2_maps_unmaps_and_faults", run: edu_dma_stage2 },
        Test { name: "iommu::unbound_device_cannot_dma", run: unbound_device_blocked },
        Test { name: "iommu::hostile_driver_refused_server_carries_on", run: hostile_driver },
        Test { name: "iommu::killed_driver_torn_down_device_blocked", run: killed_driver },
        Test { name: "iommu::attached_device_msi_reaches_the_cpu", run: attached_device_msi },
        #[cfg(target_arch = "x86_64")]
        Test { name: "iommu::forged_interrupts_refused", run: forged_interrupts },
        Test { name: "iommu::two_devices_one_ioas_dma_and_faults", run: two_devices_one_ioas },
        Test { name: "iommu::two_devices_two_ioases_isolated", run: two_devices_two_ioases },
        Test { name: "iommu::replace_moves_device_between_ioases", run: replace_moves_device },
        Test { name: "iommu::destroy_races_map_nothing_leaks", run: destroy_races_map },
        Test { name: "iommu::hostile_stream_beside_good_driver", run: hostile_stream_beside_good_driver },
        Test { name: "iommu::window_taken_server_carries_on", run: window_taken },
        Test { name: "iommu::revoked_memory_and_device_leave_the_iommu", run: revoked_memory_and_device },
        Test { name: "iommu::limits_exhausted_beside_good_driver", run: limits_exhausted_beside_good_driver },
        Test { name: "root::system_description_runs", run: root_task_runs_the_system },
        Test { name: "bench::iommu", run: bench },
    ];
}
