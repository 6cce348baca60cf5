//! `dump-acpi=<SIG>`: prints one ACPI table of the machine as hex on the console, so host tools
//! (`fwdump --check-iasl`, run by scripts/qemu-tests.py) can compare their decoding of QEMU's
//! real tables with `iasl -d`.
//!
//! x86 reads the table in memory, through the RSDP the boot path found. On aarch64 `virt`
//! booted without UEFI nobody has loaded the tables into memory, so they come from QEMU's
//! fw_cfg device with the `fwcfg` crate running QEMU's table loader.
//!
//! Output, one item per line: `ACPI-DUMP <SIG> <length>`, the table as lines of up to
//! [`BYTES_PER_LINE`] space-separated hex bytes, then `ACPI-DUMP END`.

use alloc::string::String;
use alloc::vec::Vec;
use boot::BootInfo;
use core::fmt::Write;
use fwtables::sdt::Signature;

/// Hex bytes per output line.
const BYTES_PER_LINE: usize = 16;

/// Prints the table with signature `signature` (four characters, e.g. `DMAR`); false (after
/// saying why) when it is absent or cannot be read.
pub fn dump(info: &BootInfo, signature: &str) -> bool {
    let Ok(name) = <[u8; 4]>::try_from(signature.as_bytes()) else {
        crate::println!("ACPI-DUMP error: \"{signature}\" is not a four-character table signature");
        return false;
    };
    match read_table(info, Signature(name)) {
        Ok(Some(table)) => {
            crate::println!("ACPI-DUMP {signature} {}", table.len());
            for line in table.chunks(BYTES_PER_LINE) {
                let mut text = String::with_capacity(3 * BYTES_PER_LINE);
                for byte in line {
                    if !text.is_empty() {
                        text.push(' ');
                    }
                    // Writing to a String cannot fail.
                    let _ = write!(text, "{byte:02x}");
                }
                crate::println!("{text}");
            }
            crate::println!("ACPI-DUMP END");
            true
        }
        Ok(None) => {
            crate::println!("ACPI-DUMP error: the firmware has no {signature} table");
            false
        }
        Err(e) => {
            crate::println!("ACPI-DUMP error: {e}");
            false
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn read_table(info: &BootInfo, signature: Signature) -> Result<Option<Vec<u8>>, String> {
    match info.firmware {
        boot::Firmware::Acpi { rsdp } => crate::firmware::find_table(rsdp, signature),
        boot::Firmware::DeviceTree { .. } => Err("booted with a device tree, not ACPI".into()),
    }
}

#[cfg(target_arch = "aarch64")]
fn read_table(_info: &BootInfo, signature: Signature) -> Result<Option<Vec<u8>>, String> {
    let device = fwcfg::FwCfg::probe(VirtFwCfg).map_err(|e| alloc::format!("fw_cfg: {e}"))?;
    let loaded = device.load_acpi().map_err(|e| alloc::format!("fw_cfg: {e}"))?;
    loaded.find_table(signature).map_err(|e| alloc::format!("fw_cfg: {e}"))
}

/// The registers of `virt`'s MMIO fw_cfg, through the direct map (which maps the first GiB,
/// `virt`'s MMIO space, as Device memory).
#[cfg(target_arch = "aarch64")]
struct VirtFwCfg;

#[cfg(target_arch = "aarch64")]
impl VirtFwCfg {
    /// Physical address of the register at `offset`.
    fn register(offset: usize) -> u64 {
        fwcfg::device::VIRT_MMIO_BASE + offset as u64
    }
}

#[cfg(target_arch = "aarch64")]
impl fwcfg::Mmio for VirtFwCfg {
    fn read64(&self, offset: usize) -> u64 {
        // SAFETY: fwcfg passes register offsets inside the device's 0x18-byte window, which lies
        // in the direct map; the data register is 8-byte aligned and reading it has no effect
        // beyond advancing the selected item's stream.
        unsafe { crate::mm::device_register::<u64>(Self::register(offset)) }.read()
    }

    fn write16(&self, offset: usize, value: u16) {
        // SAFETY: as for `read64`; the selector register is 2-byte aligned and only selects
        // which item the data register streams.
        unsafe { crate::mm::device_register::<u16>(Self::register(offset)) }.write(value)
    }
}
