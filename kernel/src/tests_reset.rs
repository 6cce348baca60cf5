//! A device is reset before it goes to another owner (issue 13), on the machine
//! `qemu-run.sh --topology bridges` builds; on a machine without its root ports the tests skip.
//!
//! * `reset::device_reset_between_owners`: the edu behind the PCIe root port at 00:10.0 is
//!   alone on the port's secondary bus, so the server resets it with a secondary bus reset (edu
//!   is a conventional PCI device: no FLR, no power management).
//! * `reset::function_level_reset_spares_its_sibling`: function 0 of the two-function
//!   virtio-rng behind the root port at 00:12.0 (PCI Express, FLR capable) is reset by an FLR;
//!   function 1 shares the bus, so a bus reset is out, and it keeps what was written into it.
//!
//! What QEMU 10.0.2 resets in the edu (`pci_do_device_reset`): the writable bits of the command
//! register, the BARs, the interrupt line, and the MSI capability (enable, address, data). It
//! has no reset handler of its own: its DMA buffer and MMIO registers survive a reset, so the
//! test checks configuration space only.

pub use reset_tests::TESTS;

mod reset_tests {
    use crate::ensure;
    use crate::ktest::{Test, TestResult};
    use crate::object::{Endpoint, MmioRegion, Object};
    use crate::process::ExitReason;
    use crate::tests_iommu::shared::*;
    use crate::user_images::EDU_DRIVER;
    use alloc::format;
    use alloc::rc::Rc;
    use alloc::string::String;
    use core::cell::RefCell;
    use edu_contract::{report, scenario, slot as driver_slot};
    use iommu_server_contract::status;
    use kernel_abi::Rights;

    /// The root port of `qemu-run.sh --topology bridges` (devfn on bus 0, QEMU's ID for it).
    const ROOT_PORT: (u64, u32) = (0x10 << 3, 0x000c_1b36);
    const EDU_ID: u32 = 0x11e8_1234;
    const DRIVER_QUOTA: u64 = 1024;
    /// Written into the edu's interrupt line register (a register the server does not own)
    /// while the first owner holds it: only a reset of the device clears it.
    const MARKER: u32 = 0x5a;

    /// The second root port (devfn on bus 0), and the vendor of the virtio-rng below it.
    const SECOND_ROOT_PORT: (u64, u32) = (0x12 << 3, 0x000c_1b36);
    const VIRTIO_VENDOR: u32 = 0x1af4;

    pub const TESTS: &[Test] = &[
        Test { name: "reset::device_reset_between_owners", run: device_reset_between_owners },
        Test { name: "reset::function_level_reset_spares_its_sibling", run: function_level_reset_spares_its_sibling },
    ];

    /// A configuration register of the function at `devfn` of bus `bus`.
    fn read(config: &ConfigSpace, bus: u64, devfn: u64, offset: u64) -> u32 {
        // SAFETY: configuration space mapped by `config` (buses 0 and 1); offset 4-byte aligned.
        unsafe { core::ptr::read_volatile(config.register(bus << 8 | devfn, offset)) }
    }

    fn write(config: &ConfigSpace, bus: u64, devfn: u64, offset: u64, value: u32) {
        // SAFETY: as in `read`.
        unsafe { core::ptr::write_volatile(config.register(bus << 8 | devfn, offset), value) }
    }

    /// The edu's MSI capability (PCI 3.0, 6.8.1): enabled, message address, message data.
    fn msi(config: &ConfigSpace, bus: u64) -> Result<(bool, u32, u32), String> {
        let mut cap = u64::from(read(config, bus, 0, 0x34) & 0xfc);
        while cap != 0 && read(config, bus, 0, cap) & 0xff != 0x05 {
            cap = u64::from(read(config, bus, 0, cap) >> 8 & 0xfc);
        }
        ensure!(cap != 0, "the edu has no MSI capability");
        let control = read(config, bus, 0, cap) >> 16;
        let data = if control & 1 << 7 != 0 { cap + 12 } else { cap + 8 };
        Ok((control & 1 != 0, read(config, bus, 0, cap + 4), read(config, bus, 0, data) & 0xffff))
    }

    fn device_reset_between_owners() -> TestResult {
        let config = ConfigSpace::open()?;
        if read(&config, 0, ROOT_PORT.0, 0) != ROOT_PORT.1 {
            crate::ktest::skip(String::from("no edu behind a PCIe root port on this machine (qemu-run.sh --topology bridges builds one)"));
            return Ok(());
        }
        with_kernel(|kernel| {
            let first = kernel.create_process("edu-driver", EDU_DRIVER, scenario::RESET_FIRST_OWNER, DRIVER_QUOTA).map_err(err("create the first owner"))?;
            let next = kernel.create_process("edu-driver", EDU_DRIVER, scenario::RESET_NEXT_OWNER, DRIVER_QUOTA).map_err(err("create the next owner"))?;
            let endpoint = Object::Endpoint(Rc::new(RefCell::new(Endpoint::default())));
            let server = create_server_serving(kernel, 0, &[(first, 1), (next, 2)], endpoint.clone())?;
            for (driver, badge) in [(first, 1), (next, 2)] {
                kernel.install(driver, driver_slot::SERVER, endpoint.clone(), Rights::WRITE.union(Rights::GRANT), badge).map_err(err("driver endpoint"))?;
            }
            kernel.start_process(server.pid).map_err(err("start the server"))?;
            wait_ready(kernel, &server)?;
            if !discovery_agrees(&server)? {
                skip_without_iommu();
                return Ok(());
            }
            // The edu on the root port's secondary bus (bus 1 on both machines: it is the
            // first bridge firmware or the server numbers), with BAR0 as the server left it.
            let bus = u64::from((read(&config, 0, ROOT_PORT.0, 0x18) >> 8) & 0xff);
            ensure!(bus == 1, "the root port's secondary bus is {bus}, the test maps buses 0 and 1 only");
            ensure!(read(&config, bus, 0, 0) == EDU_ID, "no edu at {bus:02x}:00.0");
            let bar0 = read(&config, bus, 0, 0x10);
            ensure!(bar0 & !0xf != 0, "the edu behind the root port has no BAR0");
            let bar = Object::Mmio(Rc::new(MmioRegion { base: u64::from(bar0 & !0xf), size: 1 << 20 }));
            let rights = Rights::READ.union(Rights::WRITE).union(Rights::GRANT).union(Rights::DERIVE);
            for driver in [first, next] {
                kernel.install(driver, driver_slot::DEVICE, bar.clone(), rights, 0).map_err(err("device capability"))?;
            }
            let report_page = give_report_page(kernel, first)?;

            // The first owner sets the device up: its MSI is programmed (x86: a remappable
            // address naming its IRTE, data 0; arm: GITS_TRANSLATER and its EventID).
            kernel.start_process(first).map_err(err("start the first owner"))?;
            run_until(kernel, "the first owner to set the device up", |k| k.has_exited(first) || page_word(&report_page, report::PHASE) == report::RESET_OWNER_SET_UP)?;
            ensure!(!kernel.has_exited(first), "the first owner ended early: {:?}", kernel.take_exit(first));
            let (enabled, address, data) = msi(&config, bus)?;
            ensure!(enabled && address != 0, "the first owner's MSI is not set up: enabled {enabled}, address {address:#x}, data {data:#x}");
            let command = read(&config, bus, 0, 0x04) & 0xffff;
            ensure!(command & 0x6 == 0x6, "the owned edu does not decode memory and master the bus (command {command:#x})");
            let line = read(&config, bus, 0, 0x3c);
            write(&config, bus, 0, 0x3c, (line & !0xff) | MARKER);
            ensure!(read(&config, bus, 0, 0x3c) & 0xff == MARKER, "the edu's interrupt line register did not take the marker");
            ensure!(server.word(status::RESETS) == 0, "the server counted {} resets before any owner left", server.word(status::RESETS));

            // It leaves; the server tears it down and must reset the device.
            page_words(&report_page).write(report::COMMAND, report::LEAVE);
            run_until(kernel, "the first owner to leave", |k| k.has_exited(first))?;
            let exit = kernel.take_exit(first);
            ensure!(exit == Some(ExitReason::Exited(0)), "the first owner ended with {exit:?}");
            run_until(kernel, "the server to reap the first owner", |_| server.word(status::CLIENTS_REAPED) == 1)?;
            ensure!(server.word(status::RESETS) == 1, "the server counted {} resets after the owner left, expected 1", server.word(status::RESETS));
            ensure!(server.word(status::QUIESCED_WITHOUT_RESET) == 0, "the server found no way to reset the edu behind the root port");
            // What the first owner left is gone (the marker in a register the server does not
            // touch shows the device itself was reset); what the server set up is back; bus
            // mastering waits for the next bind.
            let (enabled, address, data) = msi(&config, bus)?;
            ensure!(!enabled && address == 0 && data == 0, "the first owner's MSI survived: enabled {enabled}, address {address:#x}, data {data:#x}");
            ensure!(read(&config, bus, 0, 0x3c) & 0xff == 0, "the interrupt line still holds {:#x}: the device was not reset", read(&config, bus, 0, 0x3c) & 0xff);
            ensure!(read(&config, bus, 0, 0x10) == bar0, "BAR0 is {:#x}, the server had placed it at {bar0:#x}", read(&config, bus, 0, 0x10));
            let command = read(&config, bus, 0, 0x04) & 0xffff;
            ensure!(command & 0x6 == 0x2, "command {command:#x} after the reset: expected memory decoding (bit 1) restored, bus mastering (bit 2) off");

            // The next owner finds the device working: BAR, DMA, its own MSI.
            kernel.start_process(next).map_err(err("start the next owner"))?;
            run_until(kernel, "the next owner", |k| k.has_exited(next))?;
            let exit = kernel.take_exit(next);
            ensure!(exit == Some(ExitReason::Exited(0)), "the next owner ended with {exit:?}");
            run_until(kernel, "the server to reap the next owner", |_| server.word(status::CLIENTS_REAPED) == 2)?;
            ensure!(server.word(status::RESETS) == 2, "the server counted {} resets after both owners left, expected 2", server.word(status::RESETS));
            ensure!(!kernel.has_exited(server.pid), "the server died");
            crate::println!("reset: edu {bus:02x}:00.0 reset by a secondary bus reset after each owner; MSI, interrupt line cleared, BAR0 {bar0:#x} restored, the next owner DMAs and takes its MSI");
            Ok(())
        })
    }

    /// The first 32-bit memory BAR of function `devfn` of bus `bus` that has an address: base
    /// and size (sized by writing all ones with memory decoding off, PCI 3.0, 6.2.5.1; the
    /// caller makes sure nobody uses the function meanwhile).
    fn memory_bar(config: &ConfigSpace, bus: u64, devfn: u64) -> Result<(u64, u64), String> {
        for offset in (0x10..0x28).step_by(4) {
            let low = read(config, bus, devfn, offset);
            if low & 0x7 != 0 || low & !0xf == 0 {
                continue;
            }
            let command = read(config, bus, devfn, 0x04) & 0xffff;
            write(config, bus, devfn, 0x04, command & !0x2);
            write(config, bus, devfn, offset, u32::MAX);
            let mask = read(config, bus, devfn, offset) & !0xf;
            write(config, bus, devfn, offset, low);
            write(config, bus, devfn, 0x04, command);
            return Ok((u64::from(low & !0xf), u64::from((!mask).wrapping_add(1))));
        }
        Err(format!("{bus:02x}:{:02x}.{} has no placed 32-bit memory BAR", devfn >> 3, devfn & 7))
    }

    /// Device Capabilities of the function's PCI Express capability (PCI Express 4.0, 7.5.3.3).
    fn express_device_capabilities(config: &ConfigSpace, bus: u64, devfn: u64) -> Option<u32> {
        let mut cap = u64::from(read(config, bus, devfn, 0x34) & 0xfc);
        for _ in 0..48 {
            if cap == 0 {
                return None;
            }
            if read(config, bus, devfn, cap) & 0xff == 0x10 {
                return Some(read(config, bus, devfn, cap + 4));
            }
            cap = u64::from(read(config, bus, devfn, cap) >> 8 & 0xfc);
        }
        None
    }

    fn function_level_reset_spares_its_sibling() -> TestResult {
        let config = ConfigSpace::open()?;
        if read(&config, 0, SECOND_ROOT_PORT.0, 0) != SECOND_ROOT_PORT.1 {
            crate::ktest::skip(String::from("no virtio-rng behind a second PCIe root port on this machine (qemu-run.sh --topology bridges builds one)"));
            return Ok(());
        }
        with_kernel(|kernel| {
            let arg = scenario::RESET_FIRST_OWNER | scenario::RESET_BIND_ONLY;
            let owner = kernel.create_process("edu-driver", EDU_DRIVER, arg, DRIVER_QUOTA).map_err(err("create the owner"))?;
            let endpoint = Object::Endpoint(Rc::new(RefCell::new(Endpoint::default())));
            let server = create_server_serving(kernel, 0, &[(owner, 1)], endpoint.clone())?;
            kernel.install(owner, driver_slot::SERVER, endpoint, Rights::WRITE.union(Rights::GRANT), 1).map_err(err("driver endpoint"))?;
            kernel.start_process(server.pid).map_err(err("start the server"))?;
            wait_ready(kernel, &server)?;
            if !discovery_agrees(&server)? {
                skip_without_iommu();
                return Ok(());
            }
            let bus = u64::from((read(&config, 0, SECOND_ROOT_PORT.0, 0x18) >> 8) & 0xff);
            ensure!((1..=3).contains(&bus), "the second root port's secondary bus is {bus}, the test maps buses 0 to 3 only");
            for devfn in [0, 1] {
                ensure!(read(&config, bus, devfn, 0) & 0xffff == VIRTIO_VENDOR, "no virtio function at {bus:02x}:00.{devfn}");
            }
            let capabilities = express_device_capabilities(&config, bus, 0).ok_or("the virtio function has no PCI Express capability")?;
            ensure!(capabilities & 1 << 28 != 0, "the virtio function is not FLR capable (Device Capabilities {capabilities:#x})");
            let (base, size) = memory_bar(&config, bus, 0)?;
            let bar = Object::Mmio(Rc::new(MmioRegion { base, size }));
            let rights = Rights::READ.union(Rights::WRITE).union(Rights::GRANT).union(Rights::DERIVE);
            kernel.install(owner, driver_slot::DEVICE, bar, rights, 0).map_err(err("device capability"))?;
            let report_page = give_report_page(kernel, owner)?;
            let bars: alloc::vec::Vec<u32> = (0x10..0x28).step_by(4).map(|offset| read(&config, bus, 0, offset)).collect();

            kernel.start_process(owner).map_err(err("start the owner"))?;
            run_until(kernel, "the owner to bind the device", |k| k.has_exited(owner) || page_word(&report_page, report::PHASE) == report::RESET_OWNER_SET_UP)?;
            ensure!(!kernel.has_exited(owner), "the owner ended early: {:?}", kernel.take_exit(owner));
            ensure!(read(&config, bus, 0, 0x04) & 0x4 != 0, "the bound function does not master the bus");
            for devfn in [0, 1] {
                let line = read(&config, bus, devfn, 0x3c);
                write(&config, bus, devfn, 0x3c, (line & !0xff) | MARKER);
            }
            page_words(&report_page).write(report::COMMAND, report::LEAVE);
            run_until(kernel, "the owner to leave", |k| k.has_exited(owner))?;
            let exit = kernel.take_exit(owner);
            ensure!(exit == Some(ExitReason::Exited(0)), "the owner ended with {exit:?}");
            run_until(kernel, "the server to reap the owner", |_| server.word(status::CLIENTS_REAPED) == 1)?;
            ensure!(server.word(status::RESETS) == 1, "the server counted {} resets after the owner left, expected 1", server.word(status::RESETS));
            ensure!(read(&config, bus, 0, 0x3c) & 0xff == 0, "function 0's interrupt line still holds {:#x}: it was not reset", read(&config, bus, 0, 0x3c) & 0xff);
            ensure!(read(&config, bus, 1, 0x3c) & 0xff == MARKER, "function 1's interrupt line lost its marker: the reset reached the sibling");
            let restored: alloc::vec::Vec<u32> = (0x10..0x28).step_by(4).map(|offset| read(&config, bus, 0, offset)).collect();
            ensure!(restored == bars, "BARs {restored:x?} after the reset, the server had placed them at {bars:x?}");
            let command = read(&config, bus, 0, 0x04) & 0xffff;
            ensure!(command & 0x6 == 0x2, "command {command:#x} after the reset: expected memory decoding restored, bus mastering off");
            crate::println!("reset: virtio {bus:02x}:00.0 reset by its FLR after its owner left; function 1 beside it untouched; BARs restored");
            Ok(())
        })
    }
}
