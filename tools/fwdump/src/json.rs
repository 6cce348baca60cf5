//! A small JSON tree whose leaves remember where in the table they came from.
//!
//! fwdump prints this tree as JSON, and the iasl comparison walks the same tree's located
//! leaves, so the comparison checks exactly what the JSON reports. (A hand-rolled tree keeps
//! the tool free of dependencies; the output needs only objects, arrays, strings, integers,
//! booleans and null.)

use std::fmt::Write;

/// Where a leaf's value sits in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Source {
    /// Byte offset from the start of the table.
    pub offset: usize,
    /// Width in bytes.
    pub width: usize,
}

/// A JSON value.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    /// A count, length, offset, index, revision or width: printed as a JSON number. Located
    /// when read from the table.
    Int(u64, Option<Source>),
    /// An address, address-range size, ID, flag word or type code: printed as a "0x…" string.
    /// Located when read from the table.
    Hex(u64, Option<Source>),
    /// A string; located when read from the table (OEM IDs, device names).
    Str(String, Option<Source>),
    Array(Vec<Json>),
    Object(Vec<(&'static str, Json)>),
}

impl Json {
    /// A derived number (computed by fwdump, not read from one field).
    pub fn number(value: impl Into<u64>) -> Json {
        Json::Int(value.into(), None)
    }

    /// A derived value printed as hex (a decoded multi-bit code).
    pub fn hex(value: impl Into<u64>) -> Json {
        Json::Hex(value.into(), None)
    }

    /// A table field at `offset` of `width` bytes holding the number `value`.
    pub fn number_field(value: impl Into<u64>, offset: usize, width: usize) -> Json {
        Json::Int(value.into(), Some(Source { offset, width }))
    }

    /// A table field at `offset` of `width` bytes holding `value`, printed as hex.
    pub fn field(value: impl Into<u64>, offset: usize, width: usize) -> Json {
        Json::Hex(value.into(), Some(Source { offset, width }))
    }

    /// A string read from `width` bytes at `offset`.
    pub fn text(value: &str, offset: usize, width: usize) -> Json {
        Json::Str(value.to_owned(), Some(Source { offset, width }))
    }

    /// A derived string.
    pub fn label(value: &str) -> Json {
        Json::Str(value.to_owned(), None)
    }

    /// Renders as indented JSON.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, 0);
        out.push('\n');
        out
    }

    fn write(&self, out: &mut String, depth: usize) {
        let indent = |out: &mut String, d: usize| out.extend(std::iter::repeat_n("  ", d));
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Int(n, _) => {
                let _ = write!(out, "{n}");
            }
            Json::Hex(n, _) => {
                let _ = write!(out, "\"{n:#x}\"");
            }
            Json::Str(s, _) => write_string(out, s),
            Json::Array(items) if items.is_empty() => out.push_str("[]"),
            Json::Array(items) => {
                out.push_str("[\n");
                for (i, item) in items.iter().enumerate() {
                    indent(out, depth + 1);
                    item.write(out, depth + 1);
                    out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
                }
                indent(out, depth);
                out.push(']');
            }
            Json::Object(members) => {
                out.push_str("{\n");
                for (i, (key, value)) in members.iter().enumerate() {
                    indent(out, depth + 1);
                    write_string(out, key);
                    out.push_str(": ");
                    value.write(out, depth + 1);
                    out.push_str(if i + 1 < members.len() { ",\n" } else { "\n" });
                }
                indent(out, depth);
                out.push('}');
            }
        }
    }

    /// Every located leaf with its JSON path (e.g. `structures[0].scopes[1].path[0].device`).
    pub fn located_leaves(&self) -> Vec<(String, Source, LeafValue)> {
        let mut leaves = Vec::new();
        self.collect(String::new(), &mut leaves);
        leaves
    }

    fn collect(&self, path: String, leaves: &mut Vec<(String, Source, LeafValue)>) {
        match self {
            Json::Hex(n, Some(src)) | Json::Int(n, Some(src)) => leaves.push((path, *src, LeafValue::Int(*n))),
            Json::Str(s, Some(src)) => leaves.push((path, *src, LeafValue::Text(s.clone()))),
            Json::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    item.collect(format!("{path}[{i}]"), leaves);
                }
            }
            Json::Object(members) => {
                for (key, value) in members {
                    let child = if path.is_empty() { (*key).to_owned() } else { format!("{path}.{key}") };
                    value.collect(child, leaves);
                }
            }
            _ => {}
        }
    }
}

/// The value of a located leaf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeafValue {
    Int(u64),
    Text(String),
}

impl LeafValue {
    /// The leaf as the little-endian bytes it occupies in the table.
    pub fn bytes(&self, width: usize) -> Vec<u8> {
        match self {
            LeafValue::Int(n) => n.to_le_bytes().into_iter().chain(std::iter::repeat(0)).take(width).collect(),
            LeafValue::Text(s) => s.bytes().take(width).collect(),
        }
    }
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}
