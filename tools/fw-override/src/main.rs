//! Builds the firmware-table override of the RMRR / IORT RMR tests from QEMU's own table.
//!
//!     fw-override --arch x86_64|aarch64 --dump LOG --out FILE
//!
//! LOG is the console of a boot with `dump-acpi=DMAR` (x86_64) or `dump-acpi=IORT` (aarch64):
//! the kernel prints the machine's table as hex between `ACPI-DUMP <SIG> <length>` and
//! `ACPI-DUMP END`. The override is that table, unchanged, plus one entry giving the first edu
//! device the region `edu_contract::direct` names: an RMRR with the device's endpoint scope
//! (DMAR), or an RMR node whose ID mapping names the device's StreamID at the machine's SMMUv3
//! (IORT). Everything else (units, scopes, mappings) stays QEMU's, so the override matches the
//! machine. The result is parsed back and must decode without a firmware-bug warning.
//! `qemu-run.sh --fw-override rmrr` runs this and hands FILE to QEMU as fw_cfg file
//! `opt/iommu-os/dmar` or `opt/iommu-os/iort`.

use std::process::ExitCode;

use edu_contract::direct;
use fwtables::dmar::Dmar;
use fwtables::iort::{Iort, NodeBody};
use fwtables::testing::{self as build, Mapping, Output};

const PAGE: u64 = 4096;
/// DMAR device scope type 1: PCI endpoint device (VT-d 8.3.1).
const SCOPE_ENDPOINT: u8 = 1;

struct Args {
    arch: String,
    dump: String,
    out: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let (mut arch, mut dump, mut out) = (None, None, None);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--arch" => arch = Some(value),
            "--dump" => dump = Some(value),
            "--out" => out = Some(value),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    match (arch, dump, out) {
        (Some(arch), Some(dump), Some(out)) => Ok(Args { arch, dump, out }),
        _ => Err("usage: fw-override --arch x86_64|aarch64 --dump LOG --out FILE".into()),
    }
}

/// The table bytes of `signature` the kernel printed into `log`.
fn extract_dump(log: &str, signature: &str) -> Result<Vec<u8>, String> {
    let lines: Vec<&str> = log.lines().map(|line| line.trim_end_matches('\r')).collect();
    let header = format!("ACPI-DUMP {signature} ");
    let start = lines.iter().position(|line| line.starts_with(&header)).ok_or_else(|| format!("no `{header}<length>` line in the log"))?;
    let length: usize = lines[start][header.len()..].trim().parse().map_err(|_| format!("bad length in {:?}", lines[start]))?;
    let end = lines[start..].iter().position(|line| *line == "ACPI-DUMP END").ok_or("no ACPI-DUMP END line")? + start;
    let mut bytes = Vec::with_capacity(length);
    for word in lines[start + 1..end].iter().flat_map(|line| line.split_whitespace()) {
        bytes.push(u8::from_str_radix(word, 16).map_err(|_| format!("bad hex byte {word:?}"))?);
    }
    if bytes.len() != length {
        return Err(format!("the dump holds {} bytes, its header says {length}", bytes.len()));
    }
    Ok(bytes)
}

/// QEMU's DMAR plus an RMRR giving the edu at `DEVICE_X86_64` the region.
fn dmar_override(mut table: Vec<u8>) -> Result<Vec<u8>, String> {
    Dmar::parse(&table).map_err(|e| format!("QEMU's DMAR does not parse: {e}"))?;
    let (bus, device, function) = direct::DEVICE_X86_64;
    let base = direct::REGION_X86_64;
    let limit = base + direct::REGION_PAGES * PAGE - 1;
    let scope = build::scope(SCOPE_ENDPOINT, bus, &[(device, function)]);
    build::append_dmar_structure(&mut table, &build::rmrr(0, base, limit, &[scope]));
    let parsed = Dmar::parse(&table).map_err(|e| format!("the override does not parse: {e}"))?;
    if !parsed.warnings.is_empty() {
        return Err(format!("the override decodes with warnings: {:?}", parsed.warnings));
    }
    let rmrrs: Vec<(u64, u64)> = parsed.rmrrs().map(|r| (r.base, r.limit)).collect();
    eprintln!("fw-override: DMAR of {} bytes, RMRRs {rmrrs:#x?} for {bus:02x}:{device:02x}.{function}", table.len());
    Ok(table)
}

/// QEMU's IORT plus an RMR node naming the StreamID of the edu at `DEVICE_AARCH64` (on `virt`
/// the StreamID is the requester ID) at the SMMUv3.
fn iort_override(mut table: Vec<u8>) -> Result<Vec<u8>, String> {
    let qemu = Iort::parse(&table).map_err(|e| format!("QEMU's IORT does not parse: {e}"))?;
    let smmu = qemu.nodes.iter().find(|node| matches!(node.body, NodeBody::SmmuV3(_))).ok_or("QEMU's IORT has no SMMUv3 node")?;
    let (bus, device, function) = direct::DEVICE_AARCH64;
    let stream = u32::from(bus) << 8 | u32::from(device) << 3 | u32::from(function);
    let mapping = Mapping { input_base: stream, count_minus_one: 0, output_base: stream, output: Output::Offset(smmu.offset), flags: 0 };
    let node = build::rmr(&[(direct::REGION_AARCH64, direct::REGION_PAGES * PAGE)], vec![mapping]);
    let identifier = qemu.nodes.iter().map(|node| node.identifier).max().map_or(0, |max| max + 1);
    build::append_iort_node(&mut table, &node, identifier);
    let parsed = Iort::parse(&table).map_err(|e| format!("the override does not parse: {e}"))?;
    if !parsed.warnings.is_empty() {
        return Err(format!("the override decodes with warnings: {:?}", parsed.warnings));
    }
    let rmrs = parsed.nodes.iter().filter(|node| matches!(node.body, NodeBody::Rmr(_))).count();
    eprintln!("fw-override: IORT of {} bytes, {rmrs} RMR node(s), StreamID {stream:#x} at the SMMUv3 at table offset {:#x}", table.len(), smmu.offset);
    Ok(table)
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let log = std::fs::read(&args.dump).map_err(|e| format!("{}: {e}", args.dump))?;
    let log = String::from_utf8_lossy(&log);
    let table = match args.arch.as_str() {
        "x86_64" => dmar_override(extract_dump(&log, "DMAR")?)?,
        "aarch64" => iort_override(extract_dump(&log, "IORT")?)?,
        other => return Err(format!("unknown arch {other}")),
    };
    std::fs::write(&args.out, table).map_err(|e| format!("{}: {e}", args.out))
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("fw-override: {why}");
            ExitCode::FAILURE
        }
    }
}
