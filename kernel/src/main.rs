//! The kernel: capabilities, address spaces, threads, IPC and interrupts for user-level
//! drivers and the IOMMU server.
#![no_std]
#![no_main]

extern crate alloc;

mod acpi_dump;
mod arch;
#[macro_use]
mod console;
mod elf;
mod firmware;
mod heap;
mod ktest;
mod mm;
mod cap;
mod object;
mod platform;
mod process;
mod root;
mod sched;
mod sva;
mod syscall;
mod tests;
mod tests_iommu;
mod tests_dirty;
mod tests_its;
mod tests_gicv2m;
mod tests_nesting;
mod tests_reset;
mod tests_pasid;
mod tests_quarantine;
mod tests_restart;
mod tests_sva;
mod tests_rmrr;
mod tests_sva_protect;
mod tests_sva_watches;
mod tests_topology;
mod user_images;
mod usermem;

use boot::{BootInfo, Firmware};

const TIMER_HZ: u32 = 100;
const HEAP_BYTES: u64 = 8 << 20;

static BOOT_INFO: spin::Once<&'static BootInfo> = spin::Once::new();

/// What the boot path reported (for tests that act as the root task).
pub fn boot_info() -> &'static BootInfo {
    BOOT_INFO.get().expect("set at the start of kernel_main")
}

#[no_mangle]
fn kernel_main(info: &'static BootInfo) -> ! {
    BOOT_INFO.call_once(|| info);
    let main_count = arch::instruction_counter();
    console::init_logging(log::LevelFilter::Info);
    arch::init_cpu();
    println!("\niommu-os kernel booting on {}", if cfg!(target_arch = "x86_64") { "x86_64" } else { "aarch64" });
    let heap = mm::init(info, HEAP_BYTES);
    heap::init(heap);
    arch::paging::protect_kernel_image(&mut mm::FRAMES.lock());
    report_boot(info, main_count);
    firmware::report_iommus(info);
    if let Some(signature) = option(info.cmdline(), "dump-acpi") {
        arch::exit_qemu(acpi_dump::dump(info, signature));
    }
    arch::init_interrupts();
    #[cfg(target_arch = "aarch64")]
    arch::init_its(firmware::its_base(info));
    arch::start_timer(TIMER_HZ);
    // A kernel built by `cargo test` runs every test unless the command line picks some.
    if let Some(filter) = option(info.cmdline(), "test").or(cfg!(test).then_some("all")) {
        // In the order they run when a kernel built by `cargo test` runs them all in one boot.
        let suites = [
            tests::TESTS,
            tests_iommu::TESTS,
            tests_its::TESTS,
            tests_gicv2m::TESTS,
            tests_sva::TESTS,
            tests_sva_protect::TESTS,
            tests_sva_watches::TESTS,
            tests_topology::TESTS,
            tests_dirty::TESTS,
            tests_restart::TESTS,
            tests_quarantine::TESTS,
            tests_nesting::TESTS,
            tests_pasid::TESTS,
            tests_reset::TESTS,
            tests_rmrr::TESTS,
        ];
        let all: alloc::vec::Vec<ktest::Test> = suites.iter().flat_map(|suite| suite.iter()).map(|t| ktest::Test { name: t.name, run: t.run }).collect();
        ktest::run(filter, &all);
    }
    run_system();
    let mut ticks = 0;
    while ticks < 5 {
        if arch::wait_for_interrupt() == arch::Trap::Timer {
            ticks += 1;
        }
    }
    println!("timer: {} ticks at {} Hz", ticks, TIMER_HZ);
    arch::exit_qemu(true);
}

/// Starts the root task and runs the system it starts until the root task ends (it stays
/// only as long as its drivers run) or a generous budget is spent.
fn run_system() {
    const BUDGET: u64 = 60_000_000_000;
    let mut kernel = process::Kernel::new(user_images::IMAGES);
    let root = match root::create(&mut kernel) {
        Ok(root) => root,
        Err(why) => {
            println!("root task: not started: {why}");
            return;
        }
    };
    if let Err(error) = kernel.start_process(root) {
        println!("root task: not started: {error:?}");
        return;
    }
    let start = arch::instruction_counter();
    while !kernel.has_exited(root) && arch::instruction_counter().wrapping_sub(start) < BUDGET {
        kernel.run_once();
    }
    match kernel.take_exit(root) {
        Some(reason) => println!("root task: ended: {reason:?}"),
        None => println!("root task: still running after its budget; stopping the system"),
    }
}

/// The value of `key=value` on the kernel command line.
pub fn option<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline.split_whitespace().find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
}

fn report_boot(info: &BootInfo, main_count: u64) {
    println!("boot: command line \"{}\"", info.cmdline());
    if cfg!(target_arch = "aarch64") {
        println!("boot: entered at EL{}", info.entry_el);
    }
    let usable: u64 = info.usable_regions().iter().map(|r| r.size()).sum();
    println!(
        "memory: {} MiB RAM, {} MiB free in {} regions, kernel image {:#x}..{:#x}",
        info.ram_bytes >> 20,
        usable >> 20,
        info.usable_count,
        info.kernel_image.start,
        info.kernel_image.end
    );
    for r in info.usable_regions() {
        println!("  free {:#012x}..{:#012x} ({} KiB)", r.start, r.end, r.size() >> 10);
    }
    match info.firmware {
        Firmware::Acpi { rsdp } => println!("firmware: ACPI RSDP at {:#x}", rsdp),
        Firmware::DeviceTree { dtb, size } => println!("firmware: device tree at {:#x} ({} bytes)", dtb, size),
    }
    println!("bench: boot-to-kernel_main {} guest instructions", main_count - info.boot_start_count);
}

#[panic_handler]
fn panic(panic: &core::panic::PanicInfo) -> ! {
    match panic.location() {
        Some(at) => println!("KERNEL PANIC at {}:{}: {}", at.file(), at.line(), panic.message()),
        None => println!("KERNEL PANIC: {}", panic.message()),
    }
    arch::exit_qemu(false);
}
