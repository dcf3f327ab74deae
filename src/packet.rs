//! MeshCore packet decoding and encoding as CoreScope does it (byte layout
//! in docs/database.md, "Packet bytes in raw_hex"). Pure code: no SQL, no
//! I/O, never panics on any input.
//!
//! # Decoding
//!
//! - [`parse_hex`]: hex text (any case) → bytes; odd length or a non-hex
//!   character is a typed [`PacketError`].
//! - [`decode`] / [`decode_hex`]: the strict ("seed") decoder:
//!   header byte, transport codes (route types 0 and 3), path length byte,
//!   path, payload. Rejects a reserved hash size (bits `11`), a path over 64
//!   bytes, a path running past the end and a payload over 184 bytes.
//!   The resulting [`Packet`] offers [`Packet::header_hops`] (the path bytes as
//!   upper-case hex hops), [`Packet::hops`] (the decoder's hop list, with the
//!   TRACE exception), [`Packet::advert`] and
//!   [`Packet::trace`].
//! - [`packetpath_hops`] / [`packetpath_hops_hex`]: the lenient helper
//!   used by the path_json backfill: no validity checks, returns whatever
//!   complete hops fit in the buffer (hash size 4 is taken literally, an
//!   over-long path still yields its hops). It only fails when the buffer
//!   cannot even hold the header, the transport codes or the path length byte.
//! - [`advert_pubkey`]: the originator key of an ADVERT recovered from raw
//!   bytes (strict header/path decode, then the next 32 bytes), lower-case.
//! - [`content_hash`] / [`content_hash_hex`]: `transmissions.hash`.
//! - [`hops_json`]: the compact JSON array stored in `observations.path_json`.
//!
//! # Encoding (for tests and the synthetic-database generator)
//!
//! - [`encode_packet`]`(&PacketSpec) -> Vec<u8>`: header, optional transport
//!   codes, path length byte (from `hash_size` and the number of hops), the hop
//!   bytes and the payload. Field values are masked to their bit widths; each hop
//!   should be `hash_size` bytes long (it is written as given). For TRACE the
//!   "hops" are the SNR bytes (`hash_size` 1).
//! - [`encode_advert_payload`]`(pubkey, timestamp, flags, lat_lon, name)`: an
//!   ADVERT payload with a zero signature. The location (`0x10`) and name
//!   (`0x80`) flag bits are set exactly when `lat_lon` / `name` are given; the
//!   feature bits (`0x20`, `0x40`) are cleared (no feature fields written).
//! - [`encode_trace_payload`]`(tag, auth_code, flags, route)`: a TRACE payload.
//! - `hex::encode(bytes)` / `hex::encode_upper(bytes)` turn the result into
//!   `raw_hex` text.

use sha2::{Digest, Sha256};
use thiserror::Error;

/// Route type: transport flood (carries transport codes).
pub const ROUTE_TRANSPORT_FLOOD: u8 = 0;
/// Route type: flood.
pub const ROUTE_FLOOD: u8 = 1;
/// Route type: direct.
pub const ROUTE_DIRECT: u8 = 2;
/// Route type: transport direct (carries transport codes).
pub const ROUTE_TRANSPORT_DIRECT: u8 = 3;

/// Payload type of a request to one node.
pub const PAYLOAD_REQ: u8 = 0;
/// Payload type of a response to a request.
pub const PAYLOAD_RESPONSE: u8 = 1;
/// Payload type of a direct text message.
pub const PAYLOAD_TXT_MSG: u8 = 2;
/// Payload type of an acknowledgement.
pub const PAYLOAD_ACK: u8 = 3;
/// Payload type of a node advertisement.
pub const PAYLOAD_ADVERT: u8 = 4;
/// Payload type of a group (channel) text message.
pub const PAYLOAD_GRP_TXT: u8 = 5;
/// Payload type of a group (channel) datagram.
pub const PAYLOAD_GRP_DATA: u8 = 6;
/// Payload type of an anonymous request (carries an ephemeral key).
pub const PAYLOAD_ANON_REQ: u8 = 7;
/// Payload type of a returned path.
pub const PAYLOAD_PATH: u8 = 8;
/// Payload type of a trace packet (header path bytes are SNR values).
pub const PAYLOAD_TRACE: u8 = 9;
/// Payload type of a control packet.
pub const PAYLOAD_CONTROL: u8 = 11;

/// A payload type read from SQL (`transmissions.payload_type`: an INTEGER
/// that may be NULL or out of range) as the header's `u8`, to compare with
/// the `PAYLOAD_*` constants; `None` when it is NULL or no byte value (such a
/// value equals no payload type).
pub fn stored_payload_type(column: Option<i64>) -> Option<u8> {
    column.and_then(|c| u8::try_from(c).ok())
}

/// Longest path the strict decoder accepts, in bytes.
pub const MAX_PATH_BYTES: usize = 64;
/// Longest payload the strict decoder accepts, in bytes.
pub const MAX_PAYLOAD_BYTES: usize = 184;
/// Minimum ADVERT payload: key, timestamp, signature.
pub const ADVERT_MIN_PAYLOAD: usize = 100;
/// Minimum TRACE payload: tag, auth code, flags.
pub const TRACE_MIN_PAYLOAD: usize = 9;
/// Longest advert name kept, in bytes.
pub const MAX_NAME_BYTES: usize = 32;

/// Why a packet (or its hex text) could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PacketError {
    #[error("hex text has odd length {0}")]
    OddLength(usize),
    #[error("invalid hex character at offset {0}")]
    InvalidHex(usize),
    #[error("packet too short: {what} needs {need} bytes, {have} available")]
    TooShort {
        what: &'static str,
        need: usize,
        have: usize,
    },
    #[error("reserved hash size in path length byte {0:#04x}")]
    ReservedHashSize(u8),
    #[error("path of {0} bytes exceeds the {MAX_PATH_BYTES}-byte limit")]
    PathTooLong(usize),
    #[error("payload of {0} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte limit")]
    PayloadTooLong(usize),
    #[error("payload type {found} is not {expected}")]
    WrongPayloadType { found: u8, expected: &'static str },
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Parses hex text of any case. Odd length and non-hex characters are errors
/// (no whitespace is skipped).
pub fn parse_hex(s: &str) -> Result<Vec<u8>, PacketError> {
    let b = s.as_bytes();
    if b.len() % 2 != 0 {
        return Err(PacketError::OddLength(b.len()));
    }
    let mut out = Vec::with_capacity(b.len() / 2);
    for (i, pair) in b.chunks_exact(2).enumerate() {
        let hi = hex_val(pair[0]).ok_or(PacketError::InvalidHex(2 * i))?;
        let lo = hex_val(pair[1]).ok_or(PacketError::InvalidHex(2 * i + 1))?;
        out.push((hi << 4) | lo);
    }
    Ok(out)
}

/// Upper-case hex of a byte slice (hop rendering).
pub fn upper_hex(bytes: &[u8]) -> String {
    hex::encode_upper(bytes)
}

/// Name of a payload type as CoreScope writes it in `decoded_json.type`.
pub fn payload_type_name(t: u8) -> &'static str {
    match t {
        0 => "REQ",
        1 => "RESPONSE",
        2 => "TXT_MSG",
        3 => "ACK",
        4 => "ADVERT",
        5 => "GRP_TXT",
        6 => "GRP_DATA",
        7 => "ANON_REQ",
        8 => "PATH",
        9 => "TRACE",
        10 => "MULTIPART",
        11 => "CONTROL",
        15 => "RAW_CUSTOM",
        _ => "UNKNOWN",
    }
}

/// Fields of the header byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub route_type: u8,
    pub payload_type: u8,
    pub payload_version: u8,
}

impl Header {
    pub fn from_byte(b: u8) -> Header {
        Header {
            route_type: b & 0x03,
            payload_type: (b >> 2) & 0x0F,
            payload_version: (b >> 6) & 0x03,
        }
    }

    /// Route types 0 and 3 carry 4 bytes of transport codes.
    pub fn has_transport_codes(&self) -> bool {
        self.route_type == ROUTE_TRANSPORT_FLOOD || self.route_type == ROUTE_TRANSPORT_DIRECT
    }
}

/// Hash size encoded in a path length byte: 1..=4 (4 is reserved).
pub fn hash_size_of(path_len_byte: u8) -> usize {
    usize::from(path_len_byte >> 6) + 1
}

/// Hop count encoded in a path length byte: 0..=63.
pub fn hash_count_of(path_len_byte: u8) -> usize {
    usize::from(path_len_byte & 0x3F)
}

/// Offset of the path length byte, after the header and transport codes.
fn path_len_offset(bytes: &[u8]) -> Result<(Header, usize), PacketError> {
    let first = *bytes.first().ok_or(PacketError::TooShort {
        what: "header",
        need: 1,
        have: 0,
    })?;
    let header = Header::from_byte(first);
    let off = if header.has_transport_codes() { 5 } else { 1 };
    if bytes.len() < off + 1 {
        return Err(PacketError::TooShort {
            what: if header.has_transport_codes() {
                "transport codes and path length"
            } else {
                "path length"
            },
            need: off + 1,
            have: bytes.len(),
        });
    }
    Ok((header, off))
}

/// A packet decoded by the strict decoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub header_byte: u8,
    pub header: Header,
    /// The 4 transport-code bytes (route types 0 and 3 only).
    pub transport_codes: Option<[u8; 4]>,
    pub path_len_byte: u8,
    /// Bytes per hop: 1, 2 or 3.
    pub hash_size: usize,
    /// Number of hops (for TRACE: number of SNR bytes).
    pub hash_count: usize,
    /// The raw path bytes (`hash_size × hash_count`).
    pub path: Vec<u8>,
    /// Everything after the path.
    pub payload: Vec<u8>,
}

/// Strict decode of raw packet bytes.
pub fn decode(bytes: &[u8]) -> Result<Packet, PacketError> {
    let (header, off) = path_len_offset(bytes)?;
    let transport_codes = if header.has_transport_codes() {
        let mut c = [0u8; 4];
        c.copy_from_slice(&bytes[1..5]);
        Some(c)
    } else {
        None
    };
    let plb = bytes[off];
    let hash_size = hash_size_of(plb);
    if hash_size == 4 {
        return Err(PacketError::ReservedHashSize(plb));
    }
    let hash_count = hash_count_of(plb);
    let path_bytes = hash_size * hash_count;
    if path_bytes > MAX_PATH_BYTES {
        return Err(PacketError::PathTooLong(path_bytes));
    }
    let path_start = off + 1;
    let path_end = path_start + path_bytes;
    if bytes.len() < path_end {
        return Err(PacketError::TooShort {
            what: "path",
            need: path_end,
            have: bytes.len(),
        });
    }
    let payload = &bytes[path_end..];
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(PacketError::PayloadTooLong(payload.len()));
    }
    Ok(Packet {
        header_byte: bytes[0],
        header,
        transport_codes,
        path_len_byte: plb,
        hash_size,
        hash_count,
        path: bytes[path_start..path_end].to_vec(),
        payload: payload.to_vec(),
    })
}

/// Strict decode of hex text.
pub fn decode_hex(raw_hex: &str) -> Result<Packet, PacketError> {
    decode(&parse_hex(raw_hex)?)
}

impl Packet {
    /// The two transport codes as upper-case hex (`code1`, `code2`).
    pub fn transport_code_strings(&self) -> Option<(String, String)> {
        self.transport_codes
            .map(|c| (upper_hex(&c[0..2]), upper_hex(&c[2..4])))
    }

    /// "Transport-scoped" as CoreScope defines it for `scope_name`: route type
    /// 0 or 3 and `code1 != "0000"`.
    pub fn is_transport_scoped(&self) -> bool {
        matches!(self.transport_codes, Some(c) if c[0] != 0 || c[1] != 0)
    }

    /// The header path bytes as upper-case hex hops of `hash_size` bytes.
    pub fn header_hops(&self) -> Vec<String> {
        self.path
            .chunks_exact(self.hash_size)
            .map(upper_hex)
            .collect()
    }

    /// The decoder's hop list: the header hops, except for TRACE where the
    /// payload's intended route replaces them when it carries any hops.
    pub fn hops(&self) -> Vec<String> {
        if self.header.payload_type == PAYLOAD_TRACE {
            if let Ok(t) = self.trace() {
                if !t.route.is_empty() {
                    return t.route;
                }
            }
        }
        self.header_hops()
    }

    /// Decodes the payload as an ADVERT.
    pub fn advert(&self) -> Result<Advert, PacketError> {
        if self.header.payload_type != PAYLOAD_ADVERT {
            return Err(PacketError::WrongPayloadType {
                found: self.header.payload_type,
                expected: "ADVERT",
            });
        }
        decode_advert_payload(&self.payload)
    }

    /// Decodes the payload as a TRACE; the SNR values come from the
    /// header path bytes.
    pub fn trace(&self) -> Result<Trace, PacketError> {
        if self.header.payload_type != PAYLOAD_TRACE {
            return Err(PacketError::WrongPayloadType {
                found: self.header.payload_type,
                expected: "TRACE",
            });
        }
        let mut t = decode_trace_payload(&self.payload)?;
        t.snr_values = self
            .path
            .iter()
            .map(|&b| f64::from(b as i8) / 4.0)
            .collect();
        Ok(t)
    }
}

/// The lenient hop helper (CoreScope's `internal/packetpath`): no validity
/// checks; returns the complete hops that fit in the buffer.
pub fn packetpath_hops(bytes: &[u8]) -> Result<Vec<String>, PacketError> {
    let (_, off) = path_len_offset(bytes)?;
    let plb = bytes[off];
    let size = hash_size_of(plb);
    let count = hash_count_of(plb);
    let avail = bytes.len() - (off + 1);
    let n = count.min(avail / size);
    let start = off + 1;
    Ok(bytes[start..start + n * size]
        .chunks_exact(size)
        .map(upper_hex)
        .collect())
}

/// [`packetpath_hops`] on hex text.
pub fn packetpath_hops_hex(raw_hex: &str) -> Result<Vec<String>, PacketError> {
    packetpath_hops(&parse_hex(raw_hex)?)
}

/// Compact JSON array of hop strings, as stored in `observations.path_json`.
pub fn hops_json(hops: &[String]) -> String {
    let mut s = String::with_capacity(2 + hops.len() * 8);
    s.push('[');
    for (i, h) in hops.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        // Hops are hex text: no escaping needed, but stay safe for any input.
        s.push_str(&serde_json::Value::String(h.clone()).to_string());
    }
    s.push(']');
    s
}

/// Content hash of raw packet bytes: 16 lower-case hex characters.
/// When the bytes do not reach the payload, the fallback is the first 8 bytes
/// as lower-case hex (use [`content_hash_hex`] for the exact text fallback).
pub fn content_hash(bytes: &[u8]) -> String {
    match hash_input(bytes) {
        Some(h) => h,
        None => hex::encode(&bytes[..bytes.len().min(8)]),
    }
}

/// Content hash of `raw_hex` text; if the text does not parse or is
/// too short to reach the payload, its first 16 characters, as stored.
pub fn content_hash_hex(raw_hex: &str) -> String {
    match parse_hex(raw_hex).ok().and_then(|b| hash_input(&b)) {
        Some(h) => h,
        None => raw_hex.chars().take(16).collect(),
    }
}

fn hash_input(bytes: &[u8]) -> Option<String> {
    let (header, off) = path_len_offset(bytes).ok()?;
    let plb = bytes[off];
    let start = off + 1 + hash_size_of(plb) * hash_count_of(plb);
    let payload = bytes.get(start..)?;
    Some(content_hash_parts(header.payload_type, plb, payload))
}

/// The content-hash rule on the decoded parts: SHA-256 over the payload type,
/// for TRACE the path length byte and a zero byte, then the payload; the
/// first 8 bytes as 16 lower-case hex characters.
pub fn content_hash_parts(payload_type: u8, path_len_byte: u8, payload: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update([payload_type & 0x0F]);
    if payload_type & 0x0F == PAYLOAD_TRACE {
        h.update([path_len_byte, 0u8]);
    }
    h.update(payload);
    let d = h.finalize();
    hex::encode(&d[..8])
}

mod encode;
mod payload;
#[cfg(test)]
mod tests;

// The encoder serves tests (and, as a library, other users); the binary
// itself does not call it (same reason as the `dead_code` allowance above).
#[allow(unused_imports)]
pub use encode::*;
pub use payload::*;
