//! Attachments of an inbound message: validation, and the metadata kept in their place.
//!
//! A message may carry up to [`MAX_ATTACHMENTS`] files as base64 (`{"name", "content_type",
//! "data"}`), at most [`MAX_TOTAL_BYTES`] decoded in total; the host moves such large bodies to
//! blobs, so the handler sees them whole. Nothing downstream gets the data: the conversation
//! record (kv values are limited to 350 KiB) and the emitted messages carry [`Attachment`]
//! metadata only. The data is decoded in one pass that counts and hashes the bytes without
//! allocating them, so a large message needs no more guest memory than its body's JSON.

use levee_sdk::{Error, Fields, describe, quote};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Most attachments one message may carry.
pub const MAX_ATTACHMENTS: usize = 20;
/// Most decoded bytes all attachments of one message may hold together (8 MiB).
pub const MAX_TOTAL_BYTES: u64 = 8 * 1024 * 1024;
/// Longest attachment name, in bytes of UTF-8 (the usual file-system limit). Counted in bytes,
/// not characters, so that 10 recent messages' metadata always fit one kv value.
pub const MAX_NAME_BYTES: usize = 255;
/// Longest content type (`type/subtype`), in characters.
pub const MAX_CONTENT_TYPE_CHARS: usize = 127;

const FIELDS: [&str; 3] = ["name", "content_type", "data"];

/// What is kept of an attachment: everything but its data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// File name, trimmed.
    pub name: String,
    /// Lowercase media type, `type/subtype`.
    pub content_type: String,
    /// Decoded size.
    pub bytes: u64,
    /// FNV-1a 64 of the decoded bytes, 16 lowercase hex digits: enough to tell copies apart,
    /// not a security hash.
    pub checksum: String,
}

/// Validates the optional `attachments` field of `f`; absent or null means none.
pub fn parse(f: &Fields<'_>) -> Result<Vec<Attachment>, Error> {
    if f.get("attachments").is_none() {
        return Ok(Vec::new());
    }
    let items = f.array("attachments")?;
    if items.len() > MAX_ATTACHMENTS {
        return Err(f.invalid(
            "attachments",
            &format!("at most {MAX_ATTACHMENTS} attachments"),
            format!("{} attachments", items.len()),
        ));
    }
    let mut total = 0u64;
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let path = format!("attachments[{i}]");
        let a = Fields::nested(item, &path)?;
        a.deny_unknown(&FIELDS)?;
        let name = parse_name(&a)?;
        let content_type = parse_content_type(&a)?;
        let data = match a.get("data") {
            Some(Value::String(s)) => s.as_str(),
            Some(other) => return Err(a.invalid("data", "a base64 string", describe(other))),
            None => return Err(a.invalid("data", "a base64 string", "nothing (missing)")),
        };
        let bad_base64 = |got: String| a.invalid("data", BASE64, got);
        // The size follows from the length, so an oversized total is refused before decoding.
        total += decoded_len(data).map_err(bad_base64)?;
        if total > MAX_TOTAL_BYTES {
            return Err(f.invalid(
                "attachments",
                &format!("at most {MAX_TOTAL_BYTES} bytes (8 MiB) of decoded data in total"),
                format!("{total} bytes in attachments[0] to attachments[{i}]"),
            ));
        }
        let digest = digest(data).map_err(bad_base64)?;
        out.push(Attachment {
            name: name.to_string(),
            content_type,
            bytes: digest.bytes,
            checksum: format!("{:016x}", digest.fnv1a64),
        });
    }
    Ok(out)
}

fn parse_name<'a>(a: &Fields<'a>) -> Result<&'a str, Error> {
    let name = a.str("name")?;
    if name.len() > MAX_NAME_BYTES
        || name == "."
        || name == ".."
        || name.chars().any(|c| c == '/' || c.is_control())
    {
        return Err(a.invalid(
            "name",
            &format!(
                "a file name of 1 to {MAX_NAME_BYTES} bytes of UTF-8 without '/' or control \
                 characters, not \".\" or \"..\""
            ),
            quote(name),
        ));
    }
    Ok(name)
}

fn parse_content_type(a: &Fields<'_>) -> Result<String, Error> {
    let raw = a.str("content_type")?;
    let content_type = raw.to_ascii_lowercase();
    // RFC 6838 restricted-name: a letter or digit, then letters, digits and !#$&-^_.+
    let restricted_name = |s: &str| {
        s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    let valid = content_type.len() <= MAX_CONTENT_TYPE_CHARS
        && content_type
            .split_once('/')
            .is_some_and(|(t, sub)| restricted_name(t) && restricted_name(sub));
    if !valid {
        return Err(a.invalid(
            "content_type",
            &format!(
                "a media type like \"image/png\" (type/subtype, at most \
                 {MAX_CONTENT_TYPE_CHARS} characters, no parameters)"
            ),
            quote(raw),
        ));
    }
    Ok(content_type)
}

const BASE64: &str = "base64 (standard alphabet, '=' padded)";

/// Decoded size and hash of base64 data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digest {
    /// How many bytes the data decodes to.
    pub bytes: u64,
    /// FNV-1a 64 of those bytes.
    pub fnv1a64: u64,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64 of `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET, |h, &b| fnv_step(h, b))
}

fn fnv_step(hash: u64, byte: u8) -> u64 {
    (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
}

const INVALID: u8 = 0xff;

/// Sextet value of each base64 character, [`INVALID`] for every other byte.
const SEXTETS: [u8; 256] = {
    let mut table = [INVALID; 256];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut i = 0;
    while i < alphabet.len() {
        table[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// Size `data` decodes to, from its length and padding alone; the error says what is wrong
/// (for an error message's "got" part).
fn decoded_len(data: &str) -> Result<u64, String> {
    let len = data.len();
    if !len.is_multiple_of(4) {
        // A stray character explains a bad length better than the count does.
        if let Some(at) = data
            .bytes()
            .position(|b| b != b'=' && SEXTETS[b as usize] == INVALID)
        {
            return Err(bad_char(data, at));
        }
        return Err(format!(
            "{} characters, not a multiple of 4",
            data.chars().count()
        ));
    }
    let pad = data.bytes().rev().take_while(|&b| b == b'=').count();
    if pad > 2 {
        return Err(format!("{pad} '=' at the end, at most 2 allowed"));
    }
    Ok((len / 4 * 3 - pad) as u64)
}

/// Decodes strict base64 (standard alphabet, padding required, no whitespace, unused bits
/// zero, so each byte string has exactly one encoding), counting and hashing the bytes instead
/// of keeping them. The error says what is wrong, for an error message's "got" part.
pub fn digest(data: &str) -> Result<Digest, String> {
    let bytes = decoded_len(data)?;
    let raw = data.as_bytes();
    let pad = raw.iter().rev().take_while(|&&b| b == b'=').count();
    let body = &raw[..raw.len() - pad];
    let mut hash = FNV_OFFSET;
    for (n, chunk) in body.chunks(4).enumerate() {
        let mut acc = 0u32;
        for (k, &c) in chunk.iter().enumerate() {
            let v = SEXTETS[c as usize];
            if v == INVALID {
                return Err(bad_char(data, n * 4 + k));
            }
            acc = acc << 6 | u32::from(v);
        }
        // A short final group holds 2 or 3 characters (12 or 18 bits) for 1 or 2 bytes; the
        // bits past the last byte must be zero.
        let (acc, out) = match chunk.len() {
            4 => (acc, 3),
            3 => (acc << 6, 2),
            _ => (acc << 12, 1),
        };
        let [_, b0, b1, b2] = acc.to_be_bytes();
        let decoded = [b0, b1, b2];
        if decoded[out..].iter().any(|&b| b != 0) {
            return Err(format!(
                "non-zero unused bits in the last group at offset {}",
                n * 4
            ));
        }
        hash = decoded[..out].iter().fold(hash, |h, &b| fnv_step(h, b));
    }
    Ok(Digest {
        bytes,
        fnv1a64: hash,
    })
}

fn bad_char(data: &str, offset: usize) -> String {
    // Every byte before `offset` is base64 or '=', hence ASCII, so `offset` is a char boundary.
    match data[offset..].chars().next() {
        Some('=') => format!("'=' at offset {offset}, before the end"),
        Some(c) => format!("{c:?} at offset {offset}"),
        None => format!("end of data at offset {offset}"),
    }
}

#[cfg(test)]
/// Standard padded base64, written independently of the decoder under test.
pub(crate) fn encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_4648_vectors_decode() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(encode(plain.as_bytes()), encoded);
            let d = digest(encoded).unwrap();
            assert_eq!(d.bytes, plain.len() as u64, "{encoded}");
            assert_eq!(d.fnv1a64, fnv1a64(plain.as_bytes()), "{encoded}");
        }
    }

    #[test]
    fn fnv1a64_matches_published_values() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn every_byte_value_round_trips() {
        let all: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        for len in [all.len(), all.len() - 1, all.len() - 2] {
            let d = digest(&encode(&all[..len])).unwrap();
            assert_eq!(d.bytes, len as u64);
            assert_eq!(d.fnv1a64, fnv1a64(&all[..len]));
        }
    }

    #[test]
    fn malformed_base64_says_what_is_wrong() {
        assert_eq!(
            digest("Zm9").unwrap_err(),
            "3 characters, not a multiple of 4"
        );
        assert_eq!(digest("Zm9v*A==").unwrap_err(), "'*' at offset 4");
        assert_eq!(
            digest("Zm9-").unwrap_err(),
            "'-' at offset 3",
            "the URL-safe alphabet is not accepted"
        );
        assert_eq!(
            digest("Zg==Zg==").unwrap_err(),
            "'=' at offset 2, before the end"
        );
        assert_eq!(
            digest("Z===").unwrap_err(),
            "3 '=' at the end, at most 2 allowed"
        );
        assert_eq!(digest("Zm9v\nZm9v").unwrap_err(), "'\\n' at offset 4");
        assert_eq!(
            digest("Zm9vZ").unwrap_err(),
            "5 characters, not a multiple of 4"
        );
        assert_eq!(digest("Zm9v Zm9").unwrap_err(), "' ' at offset 4");
        assert_eq!(digest("Zmé=").unwrap_err(), "'é' at offset 2");
        assert_eq!(
            digest("Zh==").unwrap_err(),
            "non-zero unused bits in the last group at offset 0"
        );
        assert_eq!(
            digest("Zm9=").unwrap_err(),
            "non-zero unused bits in the last group at offset 0"
        );
    }
}
