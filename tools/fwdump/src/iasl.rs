//! Cross-checking fwdump against ACPICA's disassembler.
//!
//! `iasl -d` prints every field it decodes as `[OFFh DEC LENh]  Name : Value`. [`compare`]
//! takes each located leaf of fwdump's JSON (value, table offset, width) and finds the iasl
//! field covering those bytes; the bytes iasl's value stands for must equal fwdump's. iasl
//! sometimes prints coarser fields than fwdump (a PCI path hop as one 2-byte "PCI Path : 1C,04";
//! an SMMUv2 context interrupt as one 8-byte value), so a leaf is compared with the matching
//! slice of the narrowest covering iasl field whose value is numeric, a byte list or a string.
//! A fwdump leaf that no iasl field covers is a mismatch too: it means the two disagree about
//! where the structure is.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::json::Json;

/// One field of iasl's disassembly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IaslField {
    pub offset: usize,
    pub width: usize,
    pub name: String,
    /// The bytes the printed value stands for (little-endian for numbers), when decodable.
    pub bytes: Option<Vec<u8>>,
}

/// Parses the `[OFFh DEC LENh] Name : Value` lines of an iasl disassembly (.dsl).
pub fn parse_disassembly(dsl: &str) -> Vec<IaslField> {
    dsl.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<IaslField> {
    let rest = line.trim_start().strip_prefix('[')?;
    let (location, rest) = rest.split_once(']')?;
    let mut parts = location.split_whitespace();
    let offset = usize::from_str_radix(parts.next()?.strip_suffix('h')?, 16).ok()?;
    let _decimal = parts.next()?;
    let width = usize::from_str_radix(parts.next()?.strip_suffix('h')?, 16).ok()?;
    let (name, value) = rest.split_once(" : ")?;
    Some(IaslField { offset, width, name: name.trim().to_owned(), bytes: value_bytes(value.trim(), width) })
}

/// Decodes an iasl value: `"TEXT"`, a hex number, or hex bytes separated by spaces or commas.
fn value_bytes(value: &str, width: usize) -> Option<Vec<u8>> {
    if let Some(quoted) = value.strip_prefix('"') {
        let text = quoted.split('"').next()?;
        let mut bytes = text.as_bytes().to_vec();
        bytes.resize(width.max(bytes.len()), 0);
        return Some(bytes);
    }
    // Drop annotations such as "[Hardware Unit Definition]" or "/* comment */".
    let value = value.split(['[', '/']).next()?.trim();
    let tokens: Vec<&str> = value.split([' ', ',']).filter(|t| !t.is_empty()).collect();
    if tokens.len() > 1 && tokens.len() == width && tokens.iter().all(|t| t.len() == 2) {
        return tokens.iter().map(|t| u8::from_str_radix(t, 16).ok()).collect();
    }
    if tokens.len() == 1 {
        let number = u64::from_str_radix(tokens[0], 16).ok()?;
        return Some(number.to_le_bytes().into_iter().chain(std::iter::repeat(0)).take(width).collect());
    }
    None
}

/// One disagreement between fwdump and iasl.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// JSON path of fwdump's leaf.
    pub path: String,
    pub offset: usize,
    pub fwdump: Vec<u8>,
    /// The covering iasl field and its bytes for the same range, if one was found.
    pub iasl: Option<(String, Vec<u8>)>,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at table offset {:#x}: fwdump {:02x?}", self.path, self.offset, self.fwdump)?;
        match &self.iasl {
            Some((name, bytes)) => write!(f, ", iasl \"{name}\" {bytes:02x?}"),
            None => write!(f, ", no iasl field covers it"),
        }
    }
}

/// Result of a comparison: how many leaves matched, and every mismatch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Comparison {
    pub matched: usize,
    pub mismatches: Vec<Mismatch>,
}

/// Compares every located leaf of `decoded` with the iasl fields.
pub fn compare(decoded: &Json, fields: &[IaslField]) -> Comparison {
    let mut result = Comparison::default();
    for (path, source, value) in decoded.located_leaves() {
        let ours = value.bytes(source.width);
        let covering = fields
            .iter()
            .filter(|f| f.bytes.is_some() && f.offset <= source.offset && source.offset + source.width <= f.offset + f.width)
            .min_by_key(|f| f.width);
        let theirs = covering.and_then(|f| {
            let start = source.offset - f.offset;
            f.bytes.as_ref().and_then(|b| b.get(start..start + source.width)).map(|b| (f.name.clone(), b.to_vec()))
        });
        match theirs {
            Some((_, ref bytes)) if *bytes == ours => result.matched += 1,
            other => result.mismatches.push(Mismatch { path, offset: source.offset, fwdump: ours, iasl: other }),
        }
    }
    result
}

/// How long iasl may run: it loops forever on some malformed DMARs.
pub const IASL_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `iasl -d` on `table` (in a scratch directory) and returns the disassembly text.
pub fn disassemble(iasl: &Path, table: &[u8]) -> Result<String, String> {
    let dir = scratch_dir()?;
    let input = dir.join("table.dat");
    std::fs::write(&input, table).map_err(|e| format!("writing {}: {e}", input.display()))?;
    let mut child = Command::new(iasl)
        .arg("-d")
        .arg(&input)
        .current_dir(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", iasl.display()))?;
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if started.elapsed() > IASL_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&dir);
            return Err(format!("iasl -d did not finish within {} s", IASL_TIMEOUT.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let dsl = std::fs::read_to_string(dir.join("table.dsl"));
    let _ = std::fs::remove_dir_all(&dir);
    match dsl {
        Ok(text) => Ok(text),
        Err(e) => Err(format!("iasl -d exited with {status} and wrote no disassembly: {e}")),
    }
}

fn scratch_dir() -> Result<PathBuf, String> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!("fwdump-iasl-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    Ok(dir)
}

/// Decodes `table` with fwdump, disassembles it with `iasl`, and compares the two.
pub fn check_against_iasl(iasl: &Path, table: &[u8]) -> Result<Comparison, String> {
    let decoded = crate::decode(table)?;
    let dsl = disassemble(iasl, table)?;
    let fields = parse_disassembly(&dsl);
    if fields.is_empty() {
        return Err("iasl's disassembly contains no fields".to_owned());
    }
    Ok(compare(&decoded, &fields))
}
