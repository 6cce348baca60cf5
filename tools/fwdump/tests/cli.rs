//! fwdump against the committed fixtures: JSON content, hex-dump input, error exits, and the
//! field-by-field comparison with `iasl -d` (run when IASL names an iasl binary).

use std::path::{Path, PathBuf};
use std::process::Command;

use fwdump::iasl::{compare, parse_disassembly, IaslField};
use fwdump::json::Json;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fwtables").join(name)
}

/// The `.dat` files are tables QEMU built (see the matching `.asl` headers).
const FIXTURES: [&str; 6] =
    ["dmar-full.aml", "dmar-qemu-q35.aml", "dmar-qemu-q35.dat", "iort-full.aml", "iort-qemu-virt.aml", "iort-qemu-virt.dat"];

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fwdump")).args(args).output().expect("fwdump runs");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn dmar_json_names_every_structure_and_scope() {
    let (ok, json, _) = run(&[fixture("dmar-full.aml").to_str().unwrap()]);
    assert!(ok);
    for expected in [
        "\"register_base\": \"0xfed90000\"",
        "\"register_set_bytes\": 8192",
        "\"kind\": \"rmrr\"",
        "\"limit\": \"0x7c7fffff\"",
        "\"kind\": \"atsr\"",
        "\"proximity_domain\": \"0x1\"",
        "\"object_name\": \"\\\\_SB.PCI0.I2C0\"",
        "\"atc_required\": true",
        "\"kind\": \"sidp\"",
        "\"kind\": \"acpi_namespace_device\"",
        "\"kind\": \"hpet\"",
        "\"dma_ctrl_platform_opt_in\": true",
    ] {
        assert!(json.contains(expected), "missing {expected}");
    }
}

#[test]
fn iort_json_resolves_references_to_node_indices() {
    let (ok, json, _) = run(&[fixture("iort-qemu-virt.aml").to_str().unwrap()]);
    assert!(ok);
    let compact: String = json.split_whitespace().collect();
    assert!(json.contains("\"base_address\": \"0x9050000\""));
    assert!(json.contains("\"event_gsiv\": \"0x6a\""));
    // The root complex (node 2) maps to the SMMUv3 (node 1), which maps to the ITS (node 0).
    assert!(compact.contains("\"output_reference\":72,\"output_node_index\":1"), "{json}");
    assert!(compact.contains("\"output_reference\":48,\"output_node_index\":0"), "{json}");
    assert!(json.contains("\"id_count\": 65536"));
}

#[test]
fn hex_dump_input_decodes_like_the_binary() {
    let binary = std::fs::read(fixture("iort-full.aml")).unwrap();
    // Console style: offset labels, 16 bytes a line, a comment.
    let mut text = String::from("# IORT dumped over serial\n");
    for (i, chunk) in binary.chunks(16).enumerate() {
        text.push_str(&format!("{:04x}:", i * 16));
        for b in chunk {
            text.push_str(&format!(" {b:02x}"));
        }
        text.push('\n');
    }
    let path = std::env::temp_dir().join(format!("fwdump-hex-{}.txt", std::process::id()));
    std::fs::write(&path, text).unwrap();
    let (ok_text, from_text, _) = run(&[path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    let (ok_bin, from_binary, _) = run(&[fixture("iort-full.aml").to_str().unwrap()]);
    assert!(ok_text && ok_bin);
    assert_eq!(from_text, from_binary);
    assert_eq!(fwdump::read_table_bytes(b"0x44 0x4d41 52").unwrap(), b"DMAR");
    assert!(fwdump::read_table_bytes(b"44 4g").unwrap_err().contains("\"4g\""));
}

#[test]
fn malformed_table_exits_nonzero_with_the_problem() {
    let mut bytes = std::fs::read(fixture("dmar-qemu-q35.aml")).unwrap();
    bytes[0x32] = 4; // DRHD Length below its 16-byte fixed part
    let path = std::env::temp_dir().join(format!("fwdump-bad-{}.dat", std::process::id()));
    std::fs::write(&path, &bytes).unwrap();
    let (ok, stdout, stderr) = run(&[path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    assert!(!ok);
    assert!(stdout.is_empty());
    assert!(stderr.contains("DRHD") && stderr.contains("Length") && stderr.contains("0x32"), "{stderr}");
    bytes[..4].copy_from_slice(b"FACP");
    std::fs::write(&path, &bytes).unwrap();
    let (ok, _, stderr) = run(&[path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    assert!(!ok && stderr.contains("unsupported table signature \"FACP\""), "{stderr}");
}

#[test]
fn comparison_flags_a_field_that_disagrees() {
    let table = std::fs::read(fixture("dmar-qemu-q35.aml")).unwrap();
    let decoded = fwdump::decode(&table).unwrap();
    let iasl = vec![
        IaslField { offset: 0x38, width: 8, name: "Register Base Address".into(), bytes: Some(0xfed9_0000u64.to_le_bytes().to_vec()) },
        IaslField { offset: 0x46, width: 2, name: "PCI Path".into(), bytes: Some(vec![0x00, 0x00]) },
    ];
    let cmp = compare(&decoded, &iasl);
    // Those two iasl fields cover three fwdump leaves (base, device, function); all others
    // are uncovered and reported.
    assert_eq!(cmp.matched, 3);
    let wrong = compare(
        &Json::Object(vec![("register_base", Json::field(0xfed9_1000u64, 0x38, 8))]),
        &iasl,
    );
    assert_eq!(wrong.matched, 0);
    assert_eq!(wrong.mismatches.len(), 1);
    assert!(wrong.mismatches[0].to_string().contains("Register Base Address"));
}

#[test]
fn disassembly_lines_parse() {
    let fields = parse_disassembly(
        "[030h 0048 002h]               Subtable Type : 0000 [Hardware Unit Definition]\n\
         [046h 0070 002h]                    PCI Path : 1C,04\n\
         [00Ah 0010 006h]                      Oem ID : \"BOCHS \"\n\
                                   Size (pages, log2) : 0\n",
    );
    assert_eq!(fields.len(), 3);
    assert_eq!((fields[0].offset, fields[0].width, fields[0].bytes.clone()), (0x30, 2, Some(vec![0, 0])));
    assert_eq!(fields[1].bytes, Some(vec![0x1c, 0x04]));
    assert_eq!(fields[2].bytes, Some(b"BOCHS ".to_vec()));
}

/// Every fixture: every field fwdump reports must equal what `iasl -d` says for those bytes.
#[test]
fn every_fixture_field_agrees_with_iasl() {
    let Some(iasl) = std::env::var_os("IASL").map(PathBuf::from) else {
        println!("SKIPPED every_fixture_field_agrees_with_iasl: IASL is not set (IASL=$(scripts/get-iasl.sh) enables it)");
        return;
    };
    for name in FIXTURES {
        let table = std::fs::read(fixture(name)).unwrap();
        let cmp = fwdump::iasl::check_against_iasl(&iasl, &table).unwrap_or_else(|e| panic!("{name}: {e}"));
        let listing: Vec<String> = cmp.mismatches.iter().map(ToString::to_string).collect();
        assert!(cmp.mismatches.is_empty(), "{name}:\n{}", listing.join("\n"));
        assert!(cmp.matched > 50, "{name}: only {} fields compared", cmp.matched);
    }
}

// ---- Tables with firmware bugs, built by the fwtables test support ----

use fwtables::testing as support;

/// Runs fwdump on `table` written to a temporary file named after `name`.
fn run_on(name: &str, table: &[u8]) -> (bool, String, String) {
    let path = std::env::temp_dir().join(format!("fwdump-{name}-{}.dat", std::process::id()));
    std::fs::write(&path, table).unwrap();
    let result = run(&[path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    result
}

/// A DMAR whose second structure (at 0x40) is an RMRR ending below its base.
fn dmar_rmrr_end_below_base() -> Vec<u8> {
    use support::*;
    dmar(&[drhd(1, 0, 0xfed9_0000, &[]), rmrr(0, 0x8000_0000, 0x7fff_ffff, &[scope(1, 0, &[(2, 0)])])])
}

/// An IORT whose root complex (node 2) maps to `output` instead of the SMMU; with `its_loop`
/// the ITS group also maps back to the SMMU, which maps to the ITS group: a cycle.
fn iort_variant(output: support::Output, its_loop: bool) -> (Vec<u8>, Vec<u32>) {
    use support::*;
    let mut nodes = iort_nodes_ok();
    nodes[2].mappings[0].output = output;
    if its_loop {
        nodes[0].mappings = vec![range(0, 0x100, 0, Output::Node(1))];
    }
    (iort(&nodes), iort_offsets(&nodes))
}

#[test]
fn a_dmar_with_an_rmrr_ending_below_its_base_prints_with_a_warning() {
    let (ok, json, stderr) = run_on("rmrr", &dmar_rmrr_end_below_base());
    assert!(ok, "{stderr}");
    let compact: String = json.split_whitespace().collect();
    // The decoding is all there, the bad RMRR included ...
    assert!(compact.contains("\"offset\":64,\"kind\":\"rmrr\""), "{json}");
    assert!(json.contains("\"limit\": \"0x7fffffff\""));
    // ... followed by the warning that locates the bug.
    assert!(
        compact.contains("\"kind\":\"rmrr_limit_below_base\",\"entry\":64,\"field\":\"ReservedMemoryRegionLimitAddress\",\"offset\":80,\"entry_ignored\":true"),
        "{json}"
    );
    assert!(stderr.contains("firmware bug: DMAR RMRR at 0x40") && stderr.contains("lies below base"), "{stderr}");
    // The same table without the bug prints no warning.
    let clean = support::dmar(&[support::drhd(1, 0, 0xfed9_0000, &[])]);
    let (ok, json, stderr) = run_on("clean", &clean);
    assert!(ok && json.contains("\"warnings\": []") && stderr.is_empty(), "{json}{stderr}");
}

#[test]
fn an_iort_with_a_dangling_reference_fails_naming_the_node() {
    let (good, offsets) = iort_variant(support::Output::Node(1), false);
    assert!(run_on("iort-good", &good).0);
    let rc = offsets[2];
    for (name, reference, problem) in [
        ("outside", 0x1000, "past the end of the table"),
        ("inside", offsets[1] + 8, &*format!("inside the node at {:#x}", offsets[1])),
    ] {
        let (table, _) = iort_variant(support::Output::Offset(reference), false);
        let (ok, stdout, stderr) = run_on(name, &table);
        assert!(!ok && stdout.is_empty(), "{stdout}");
        assert!(stderr.contains(&format!("the node at {rc:#x} references {reference:#x}")), "{stderr}");
        assert!(stderr.contains(problem) && stderr.contains("\"Output reference\""), "{stderr}");
    }
}

#[test]
fn an_iort_with_a_mapping_cycle_fails_naming_the_nodes() {
    let (table, offsets) = iort_variant(support::Output::Node(1), true);
    let (ok, stdout, stderr) = run_on("cycle", &table);
    assert!(!ok && stdout.is_empty(), "{stdout}");
    let expected = format!("cycle of 2 nodes: the node at {:#x} maps back to the node at {:#x}", offsets[1], offsets[0]);
    assert!(stderr.contains(&expected), "{stderr}");
}

/// The documented type letters of each key in README.md's key listing.
fn documented_keys(readme: &str) -> Vec<(String, String)> {
    let listing = &readme[readme.find("Every key fwdump can print").unwrap()..readme.find("Scope kinds").unwrap()];
    let words: Vec<String> =
        listing.replace([',', '{', '}', '(', ')'], " ").split_whitespace().map(str::to_owned).collect();
    words
        .windows(2)
        .filter(|w| ["N", "H", "B", "S", "N|null", "H|null"].contains(&w[1].as_str()))
        .map(|w| (w[0].trim_end_matches("[]").to_owned(), w[1].clone()))
        .collect()
}

/// Checks every leaf of `json` against the documented keys; `key` is the nearest object key.
fn check_leaves(json: &Json, key: &str, documented: &[(String, String)], readme: &str) {
    let letters: Vec<&str> = documented.iter().filter(|(k, _)| k == key).map(|(_, t)| t.as_str()).collect();
    let allowed = |letter: &str| letters.iter().any(|t| t.split('|').any(|p| p == letter));
    match json {
        Json::Object(members) => {
            for (k, v) in members {
                check_leaves(v, k, documented, readme);
            }
        }
        Json::Array(items) => items.iter().for_each(|item| check_leaves(item, key, documented, readme)),
        Json::Null => assert!(allowed("null"), "{key}: null printed but not documented"),
        Json::Bool(_) => assert!(allowed("B"), "{key}: boolean printed, documented {letters:?}"),
        Json::Int(..) => assert!(allowed("N"), "{key}: number printed, documented {letters:?}"),
        Json::Hex(..) => assert!(allowed("H"), "{key}: hex printed, documented {letters:?}"),
        Json::Str(value, _) => {
            assert!(allowed("S"), "{key}: string printed, documented {letters:?}");
            if key == "kind" || key == "table" {
                assert!(value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'), "{key}: \"{value}\" is not lower_snake_case");
                let word = |w: &str| w.trim_matches(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) == value;
                assert!(readme.split_whitespace().any(word), "{key} value \"{value}\" is not documented");
            }
        }
    }
}

/// Every key and kind name fwdump prints, over every fixture and the firmware-bug tables, is
/// documented in README.md with the type it is printed as.
#[test]
fn every_printed_value_follows_the_documented_conventions() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let documented = documented_keys(&readme);
    assert!(documented.len() > 100, "only {} keys parsed from README.md", documented.len());
    let mut tables: Vec<Vec<u8>> = FIXTURES.iter().map(|name| fwdump::read_table_bytes(&std::fs::read(fixture(name)).unwrap()).unwrap()).collect();
    tables.push(dmar_rmrr_end_below_base());
    let mut warned = support::iort_nodes_ok();
    warned[1] = support::smmu_v3(0).with(warned[1].mappings.clone());
    tables.push(support::iort(&warned));
    for table in &tables {
        check_leaves(&fwdump::decode(table).unwrap(), "", &documented, &readme);
    }
}
