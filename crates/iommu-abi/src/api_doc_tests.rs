//! `docs/ipc-api.md` against the operation table: its overview table (number, name,
//! capability, rights, reply) and the heading of each operation's entry must say what the
//! declarations say, so the reference cannot drift from the protocol.

use std::string::{String, ToString};
use std::vec::Vec;

use crate::wire::{Opcode, ReplyShape};

const API_DOC: &str = include_str!("../../../docs/ipc-api.md");
const TABLE_HEADER: &str = "| Opcode | Operation | Capability | Rights | Reply |";

fn reply_words(shape: ReplyShape) -> &'static str {
    match shape {
        ReplyShape::Empty => "—",
        ReplyShape::Handle => "handle",
        ReplyShape::Iova => "IOVA",
        ReplyShape::Length => "length",
        ReplyShape::IovaRanges => "IOVA ranges",
        ReplyShape::Pasid => "PASID",
        ReplyShape::Faults => "fault records",
        ReplyShape::DirtyBitmap => "dirty bitmap",
        ReplyShape::Info => "unit information",
    }
}

/// The overview row the declaration of `opcode` calls for.
fn expected_row(opcode: Opcode) -> String {
    let capability = opcode.capability().map_or("—".to_string(), |what| what.replace('_', " "));
    let rights: Vec<String> = opcode
        .arguments()
        .as_slice()
        .iter()
        .filter_map(|argument| argument.rights.filter(|rights| !rights.is_empty()).map(|rights| (argument.name, rights)))
        .map(|(name, rights)| {
            let names: Vec<&str> = rights.iter_names().map(|(name, _)| name).collect();
            format!("`{name}` {}", names.join("+"))
        })
        .collect();
    let rights = if rights.is_empty() { "—".to_string() } else { rights.join(", ") };
    format!("| {} | `{}` | {} | {} | {} |", opcode as u16, opcode.name(), capability, rights, reply_words(opcode.reply_shape()))
}

/// Every way `doc` disagrees with the declarations (empty when it agrees).
fn disagreements(doc: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut lines = doc.lines().skip_while(|line| line.trim() != TABLE_HEADER);
    if lines.next().is_none() {
        return vec![format!("no table headed {TABLE_HEADER}")];
    }
    let rows: Vec<&str> = lines.skip(1).take_while(|line| line.starts_with('|')).map(str::trim).collect();
    if rows.len() != Opcode::COUNT {
        found.push(format!("the table has {} rows for {} operations", rows.len(), Opcode::COUNT));
    }
    let mut by_number: Vec<Opcode> = Opcode::ALL.to_vec();
    by_number.sort_by_key(|opcode| *opcode as u16);
    for (row, opcode) in rows.iter().zip(&by_number) {
        let expected = expected_row(*opcode);
        if *row != expected {
            found.push(format!("row\n    {row}\nshould read\n    {expected}"));
        }
    }
    for opcode in Opcode::ALL {
        let heading = format!("**{} ({})**", opcode.name(), opcode as u16);
        let entries: Vec<&str> = doc.match_indices(&heading).map(|(at, _)| &doc[at + heading.len()..]).collect();
        match entries.as_slice() {
            [entry] => {
                let marked = entry.starts_with(" **cap**");
                if marked != opcode.takes_capability() {
                    found.push(format!("{heading} is {}marked **cap**", if marked { "" } else { "not " }));
                }
            }
            _ => found.push(format!("{heading} appears {} times", entries.len())),
        }
    }
    found
}

#[test]
fn the_api_reference_matches_the_declarations() {
    let found = disagreements(API_DOC);
    assert!(found.is_empty(), "docs/ipc-api.md disagrees with the operation table:\n{}", found.join("\n"));
}

/// The check itself: a reference with a wrong number, a capability dropped from a heading and
/// a right missing is caught, each.
#[test]
fn a_drifted_api_reference_is_caught() {
    let drifted = API_DOC
        .replacen("| 3 | `ioas_unmap` |", "| 3 | `ioas_unmap_range` |", 1)
        .replacen("**device_bind (10)** **cap**", "**device_bind (10)**", 1)
        .replacen("| `handle` GRANT |", "| — |", 1);
    let found = disagreements(&drifted);
    assert_eq!(found.len(), 3, "{found:#?}");
    assert!(found[0].contains("ioas_unmap_range"), "{found:#?}");
    assert!(found[1].contains("handle_derive"), "{found:#?}");
    assert_eq!(found[2], "**device_bind (10)** is not marked **cap**");
}
