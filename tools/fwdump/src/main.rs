//! `fwdump <file>`: print a DMAR or IORT as JSON.
//! `fwdump --check-iasl <file>`: compare fwdump's decoding with `iasl -d` (binary from $IASL).
//! See README.md for the JSON layout and the input formats.

use std::path::PathBuf;
use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!("usage: fwdump <table.aml|table.dat|hexdump.txt>");
    eprintln!("       fwdump --check-iasl <table>    (compares with `$IASL -d`)");
    ExitCode::from(2)
}

fn load(path: &str) -> Result<Vec<u8>, String> {
    let contents = std::fs::read(path).map_err(|e| e.to_string())?;
    fwdump::read_table_bytes(&contents)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [flag, path] if flag == "--check-iasl" => {
            let Some(iasl) = std::env::var_os("IASL").map(PathBuf::from) else {
                eprintln!("fwdump: --check-iasl needs IASL set to an iasl binary (scripts/get-iasl.sh prints one)");
                return ExitCode::from(2);
            };
            let result = load(path).and_then(|table| fwdump::iasl::check_against_iasl(&iasl, &table));
            match result {
                Ok(cmp) if cmp.mismatches.is_empty() => {
                    println!("{path}: all {} fields agree with iasl", cmp.matched);
                    ExitCode::SUCCESS
                }
                Ok(cmp) => {
                    for m in &cmp.mismatches {
                        eprintln!("{path}: mismatch: {m}");
                    }
                    eprintln!("{path}: {} fields agree, {} differ", cmp.matched, cmp.mismatches.len());
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("fwdump: {path}: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        [path] if !path.starts_with("--") => match load(path).and_then(|t| fwdump::decode_with_warnings(&t)) {
            Ok((json, warnings)) => {
                print!("{}", json.render());
                for warning in warnings {
                    eprintln!("fwdump: {path}: firmware bug: {warning}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("fwdump: {path}: malformed or unsupported table: {e}");
                ExitCode::FAILURE
            }
        },
        _ => usage(),
    }
}
