//! fwdump: decode a DMAR or IORT into JSON, and check the decoding against `iasl -d`.
//!
//! Input is one raw table (as `iasl -c`/`-p` or `acpidump -b` write it) or a text hex dump of
//! one (see [`read_table_bytes`]), so a table printed on a serial console can be fed straight
//! in. The table kind is chosen by its signature.

pub mod decode;
pub mod iasl;
pub mod json;

use fwtables::dmar::Dmar;
use fwtables::iort::Iort;
use fwtables::Signature;

use json::Json;

/// Turns file contents into table bytes. Binary files pass through unchanged. A file made only
/// of text is read as a hex dump: whitespace-separated tokens of hex digit pairs (an optional
/// `0x` prefix per token is allowed; `44 4d 41 52` and `444d4152` are the same bytes). Tokens
/// ending in `:` are offset labels and skipped, and `//` or `#` start a comment to the end of
/// the line, so `iasl -d`'s "Raw Table Data" and typical console dumps read as-is.
pub fn read_table_bytes(contents: &[u8]) -> Result<Vec<u8>, String> {
    let looks_binary = contents.len() >= 4 && contents[..4].iter().all(u8::is_ascii_uppercase) && {
        // A hex dump cannot start with four uppercase letters other than A-F.
        !contents[..4].iter().all(u8::is_ascii_hexdigit)
    };
    if looks_binary || !contents.iter().all(|b| b.is_ascii() && (b.is_ascii_graphic() || b.is_ascii_whitespace())) {
        return Ok(contents.to_vec());
    }
    let text = std::str::from_utf8(contents).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.split("//").next().unwrap_or("").split('#').next().unwrap_or("");
        for token in line.split_whitespace() {
            if token.ends_with(':') {
                continue;
            }
            let digits = token.strip_prefix("0x").or_else(|| token.strip_prefix("0X")).unwrap_or(token);
            if digits.len() % 2 != 0 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("hex dump line {}: \"{token}\" is not a sequence of hex byte pairs", number + 1));
            }
            for pair in digits.as_bytes().chunks(2) {
                let pair = std::str::from_utf8(pair).map_err(|e| e.to_string())?;
                bytes.push(u8::from_str_radix(pair, 16).map_err(|e| e.to_string())?);
            }
        }
    }
    if bytes.is_empty() {
        return Err("the file holds no table bytes".to_owned());
    }
    Ok(bytes)
}

/// Decodes a DMAR or IORT (chosen by signature) into the JSON tree fwdump prints.
pub fn decode(table: &[u8]) -> Result<Json, String> {
    decode_with_warnings(table).map(|(json, _)| json)
}

/// Like [`decode`], and also returns the firmware bugs found (the JSON's `warnings`) as
/// messages. A table that is structurally broken, or an IORT whose references dangle or form a
/// cycle, is an error whose message names the field, its offset and the node.
pub fn decode_with_warnings(table: &[u8]) -> Result<(Json, Vec<String>), String> {
    let signature = table.first_chunk::<4>().map(|s| Signature(*s));
    let messages = |list: &[fwtables::Warning]| list.iter().map(ToString::to_string).collect::<Vec<_>>();
    match signature {
        Some(Signature::DMAR) => {
            Dmar::parse(table).map(|d| (decode::dmar(&d), messages(&d.warnings))).map_err(|e| e.to_string())
        }
        Some(Signature::IORT) => {
            Iort::parse(table).map(|t| (decode::iort(&t), messages(&t.warnings))).map_err(|e| e.to_string())
        }
        Some(other) => Err(format!("unsupported table signature \"{other}\" (fwdump decodes DMAR and IORT)")),
        None => Err(format!("{} bytes is too short to hold a table signature", table.len())),
    }
}
