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

// Parts of this API (the encoder, some accessors) serve tests, `synth` and
// `check`; not every item is used by every build of the binary.
#![allow(dead_code)]

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

    /// "Transport-scoped" per #899: route type 0 or 3 and `code1 != "0000"`.
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

/// ADVERT appdata flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdvertFlags {
    pub raw: u8,
}

impl AdvertFlags {
    pub const HAS_LOCATION: u8 = 0x10;
    pub const HAS_FEAT1: u8 = 0x20;
    pub const HAS_FEAT2: u8 = 0x40;
    pub const HAS_NAME: u8 = 0x80;

    /// Node type, the low nibble: 0 none, 1 companion, 2 repeater, 3 room, 4 sensor.
    pub fn node_type(&self) -> u8 {
        self.raw & 0x0F
    }
    pub fn has_location(&self) -> bool {
        self.raw & Self::HAS_LOCATION != 0
    }
    pub fn has_feat1(&self) -> bool {
        self.raw & Self::HAS_FEAT1 != 0
    }
    pub fn has_feat2(&self) -> bool {
        self.raw & Self::HAS_FEAT2 != 0
    }
    pub fn has_name(&self) -> bool {
        self.raw & Self::HAS_NAME != 0
    }
    /// Role as stored in `nodes.role`.
    pub fn role(&self) -> String {
        match self.node_type() {
            0 => "none".into(),
            1 => "companion".into(),
            2 => "repeater".into(),
            3 => "room".into(),
            4 => "sensor".into(),
            n => format!("type-{n}"),
        }
    }
}

/// A decoded ADVERT payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Advert {
    /// 64 lower-case hex characters.
    pub pub_key: String,
    pub timestamp: u32,
    /// 128 lower-case hex characters.
    pub signature: String,
    /// `None` when the payload has no appdata at all.
    pub flags: Option<AdvertFlags>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub feat1: Option<u16>,
    pub feat2: Option<u16>,
    pub name: Option<String>,
    pub battery_mv: Option<u16>,
    pub temperature_c: Option<f64>,
}

fn read_u16(b: &[u8], off: usize) -> Option<u16> {
    let s = b.get(off..off.checked_add(2)?)?;
    Some(u16::from_le_bytes([s[0], s[1]]))
}

fn read_i32(b: &[u8], off: usize) -> Option<i32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(i32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn read_u32(b: &[u8], off: usize) -> Option<u32> {
    read_i32(b, off).map(|v| v as u32)
}

/// Cleans an advert name: control characters stripped, at most 32 bytes
/// (cut at a character boundary).
fn clean_name(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::new();
    for c in text.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > MAX_NAME_BYTES {
            break;
        }
        out.push(c);
    }
    out
}

/// Decodes an ADVERT payload. Shorter than 100 bytes → error; fields
/// flagged but truncated are left out.
pub fn decode_advert_payload(p: &[u8]) -> Result<Advert, PacketError> {
    if p.len() < ADVERT_MIN_PAYLOAD {
        return Err(PacketError::TooShort {
            what: "ADVERT payload",
            need: ADVERT_MIN_PAYLOAD,
            have: p.len(),
        });
    }
    let mut adv = Advert {
        pub_key: hex::encode(&p[0..32]),
        timestamp: u32::from_le_bytes([p[32], p[33], p[34], p[35]]),
        signature: hex::encode(&p[36..100]),
        flags: None,
        lat: None,
        lon: None,
        feat1: None,
        feat2: None,
        name: None,
        battery_mv: None,
        temperature_c: None,
    };
    let app = &p[100..];
    let Some(&fl) = app.first() else {
        return Ok(adv);
    };
    let flags = AdvertFlags { raw: fl };
    adv.flags = Some(flags);
    let mut off = 1usize;
    if flags.has_location() {
        match (read_i32(app, off), read_i32(app, off + 4)) {
            (Some(la), Some(lo)) => {
                adv.lat = Some(f64::from(la) / 1_000_000.0);
                adv.lon = Some(f64::from(lo) / 1_000_000.0);
                off += 8;
            }
            _ => return Ok(adv),
        }
    }
    if flags.has_feat1() {
        match read_u16(app, off) {
            Some(v) => {
                adv.feat1 = Some(v);
                off += 2;
            }
            None => return Ok(adv),
        }
    }
    if flags.has_feat2() {
        match read_u16(app, off) {
            Some(v) => {
                adv.feat2 = Some(v);
                off += 2;
            }
            None => return Ok(adv),
        }
    }
    if flags.has_name() {
        let rest = app.get(off..).unwrap_or(&[]);
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        adv.name = Some(clean_name(&rest[..end]));
        // Sensor data can only follow a terminated name.
        off += if end < rest.len() { end + 1 } else { end };
    }
    if flags.node_type() == 4 {
        if let Some(mv) = read_u16(app, off) {
            if (1..=10_000).contains(&mv) {
                adv.battery_mv = Some(mv);
            }
            if let Some(t) = read_u16(app, off + 2) {
                let c = f64::from(t as i16) / 100.0;
                if (-50.0..=100.0).contains(&c) {
                    adv.temperature_c = Some(c);
                }
            }
        }
    }
    Ok(adv)
}

/// Originator key of an ADVERT from raw bytes ("Recovering a public
/// key"): strict header/path decode, the header must say ADVERT, then the
/// first 32 payload bytes as lower-case hex.
pub fn advert_pubkey(bytes: &[u8]) -> Result<String, PacketError> {
    let p = decode(bytes)?;
    if p.header.payload_type != PAYLOAD_ADVERT {
        return Err(PacketError::WrongPayloadType {
            found: p.header.payload_type,
            expected: "ADVERT",
        });
    }
    match p.payload.get(0..32) {
        Some(k) => Ok(hex::encode(k)),
        None => Err(PacketError::TooShort {
            what: "ADVERT public key",
            need: 32,
            have: p.payload.len(),
        }),
    }
}

/// A decoded TRACE payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    pub tag: u32,
    pub auth_code: u32,
    pub flags: u8,
    /// Intended route: hops of `1 << (flags & 3)` bytes, upper-case hex.
    pub route: Vec<String>,
    /// SNR per completed hop in dB (header path bytes ÷ 4); empty when
    /// decoded from a bare payload.
    pub snr_values: Vec<f64>,
}

/// Decodes a TRACE payload; fewer than 9 bytes → error. Trailing bytes that
/// do not make a complete hop are ignored.
pub fn decode_trace_payload(p: &[u8]) -> Result<Trace, PacketError> {
    if p.len() < TRACE_MIN_PAYLOAD {
        return Err(PacketError::TooShort {
            what: "TRACE payload",
            need: TRACE_MIN_PAYLOAD,
            have: p.len(),
        });
    }
    let flags = p[8];
    let size = 1usize << (flags & 0x03);
    Ok(Trace {
        tag: u32::from_le_bytes([p[0], p[1], p[2], p[3]]),
        auth_code: u32::from_le_bytes([p[4], p[5], p[6], p[7]]),
        flags,
        route: p[9..].chunks_exact(size).map(upper_hex).collect(),
        snr_values: Vec::new(),
    })
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

/// What [`encode_packet`] writes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PacketSpec {
    /// 0..=3 (masked).
    pub route_type: u8,
    /// 0..=15 (masked).
    pub payload_type: u8,
    /// 0..=3 (masked).
    pub version: u8,
    /// Written only when `Some` (it should be for route types 0 and 3).
    pub transport_codes: Option<[u8; 4]>,
    /// Bytes per hop, 1..=4 (4 is the reserved value; masked to 2 bits).
    pub hash_size: u8,
    /// Hop bytes, each `hash_size` long; at most 63 hops are counted.
    pub hops: Vec<Vec<u8>>,
    pub payload: Vec<u8>,
}

/// Encodes a packet (see the module documentation).
pub fn encode_packet(spec: &PacketSpec) -> Vec<u8> {
    let header =
        (spec.route_type & 0x03) | ((spec.payload_type & 0x0F) << 2) | ((spec.version & 0x03) << 6);
    let mut out = vec![header];
    if let Some(c) = spec.transport_codes {
        out.extend_from_slice(&c);
    }
    let size_bits = spec.hash_size.max(1).wrapping_sub(1) & 0x03;
    let count = spec.hops.len().min(63) as u8;
    out.push((size_bits << 6) | count);
    for h in spec.hops.iter().take(63) {
        out.extend_from_slice(h);
    }
    out.extend_from_slice(&spec.payload);
    out
}

/// Encodes an ADVERT payload with a zero signature (see the module docs).
pub fn encode_advert_payload(
    pubkey: &[u8; 32],
    timestamp: u32,
    flags: u8,
    lat_lon: Option<(f64, f64)>,
    name: Option<&str>,
) -> Vec<u8> {
    let mut f = flags & !(AdvertFlags::HAS_FEAT1 | AdvertFlags::HAS_FEAT2);
    f = if lat_lon.is_some() {
        f | AdvertFlags::HAS_LOCATION
    } else {
        f & !AdvertFlags::HAS_LOCATION
    };
    f = if name.is_some() {
        f | AdvertFlags::HAS_NAME
    } else {
        f & !AdvertFlags::HAS_NAME
    };
    let mut out = Vec::with_capacity(100 + 9 + 32);
    out.extend_from_slice(pubkey);
    out.extend_from_slice(&timestamp.to_le_bytes());
    out.extend_from_slice(&[0u8; 64]);
    out.push(f);
    if let Some((lat, lon)) = lat_lon {
        out.extend_from_slice(&((lat * 1_000_000.0).round() as i32).to_le_bytes());
        out.extend_from_slice(&((lon * 1_000_000.0).round() as i32).to_le_bytes());
    }
    if let Some(n) = name {
        out.extend_from_slice(n.as_bytes());
    }
    out
}

/// Encodes a TRACE payload: tag, auth code, flags, then the route bytes.
pub fn encode_trace_payload(tag: u32, auth_code: u32, flags: u8, route: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + route.len() * 8);
    out.extend_from_slice(&tag.to_le_bytes());
    out.extend_from_slice(&auth_code.to_le_bytes());
    out.push(flags);
    for h in route {
        out.extend_from_slice(h);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EX_A: &str = "11427d1d1f5d300ddc9e145dbe6cb4d6c2d93c74e9f862f5e247783f64ef89a4732e68dd473c4c62c9697f70e27d27e4a0d3f001c4032a262c390f868b2c7df763b2171969f29dde33a01785f01b6e37e7a1d7ba39735cb6013ad3a7f00c76ae84623ef286f99c3ee60292ec9f3e02c688b9f852352d443420333030442052616b";
    const EX_B: &str = "150359d69581d1666fd2abd32988b6ad68a307882c574a852481d99c18a0f6e249544a879182f8bb38375903332082b91043a0a4b189f9bbc6d8cc4bc94ca88d8e92d0d14664e87e";
    const EX_C: &str = "26010FBA74E45D000000000027";
    const EX_D: &str = "D665EBB4F9780C68AF308B6BA794DCB86C9B3DA0543D90483C2E051BAA44D20B15E43845C969EBD256833C6A3E3859D3C79E6DA3A9F9DB068C6D8CCEA85CFEA9DF7120224DE05F88A218126763B856F11CE1CB27603CE2EC653C414CAF67B7890BB60207680A920BB60207680A9200000000000000004C416237";
    const EX_ZERO: &str = "11401f5dd36fdd499d6c0a2772093028fe52ae695a15ff0dd0a4d9c752bf2763243533d44b6669c5178b93fbe683b01ddd7e4dcf347dcebe5ee98f00a9a8d2f65abc87cd4e78bf582685338b18418cd5230e96d57a520119ae5bf26c3c0645ea8042f093f10f9248054202e435b6f84b657920526f75746520482d42524b20f09f979defb88f";

    #[test]
    fn example_a_advert() {
        let p = decode_hex(EX_A).unwrap();
        assert_eq!(p.header.route_type, ROUTE_FLOOD);
        assert_eq!(p.header.payload_type, PAYLOAD_ADVERT);
        assert_eq!(p.header.payload_version, 0);
        assert_eq!(p.hash_size, 2);
        assert_eq!(p.hash_count, 2);
        assert_eq!(p.hops(), vec!["7D1D", "1F5D"]);
        assert_eq!(hops_json(&p.hops()), r#"["7D1D","1F5D"]"#);
        let a = p.advert().unwrap();
        assert_eq!(
            a.pub_key,
            "300ddc9e145dbe6cb4d6c2d93c74e9f862f5e247783f64ef89a4732e68dd473c"
        );
        assert_eq!(a.timestamp, 1_774_805_580);
        assert_eq!(a.signature.len(), 128);
        assert!(a.signature.starts_with("7f70e27d"));
        let f = a.flags.unwrap();
        assert_eq!(f.raw, 0x92);
        assert_eq!(f.node_type(), 2);
        assert_eq!(f.role(), "repeater");
        assert!(f.has_location() && f.has_name() && !f.has_feat1() && !f.has_feat2());
        assert_eq!(a.lat, Some(37.658604));
        assert_eq!(a.lon, Some(-122.058554));
        assert_eq!(a.name.as_deref(), Some("R5-D4 300D Rak"));
        assert_eq!(a.battery_mv, None);
        assert_eq!(content_hash_hex(EX_A), "09f282f70cc1ff60");
        assert_eq!(
            advert_pubkey(&parse_hex(EX_A).unwrap()).unwrap(),
            "300ddc9e145dbe6cb4d6c2d93c74e9f862f5e247783f64ef89a4732e68dd473c"
        );
        assert_eq!(packetpath_hops_hex(EX_A).unwrap(), vec!["7D1D", "1F5D"]);
    }

    #[test]
    fn example_b_grp_txt() {
        let p = decode_hex(EX_B).unwrap();
        assert_eq!(p.header.route_type, ROUTE_FLOOD);
        assert_eq!(p.header.payload_type, PAYLOAD_GRP_TXT);
        assert_eq!(p.hash_size, 1);
        assert_eq!(p.hops(), vec!["59", "D6", "95"]);
        assert_eq!(p.payload[0], 0x81);
        assert_eq!(&p.payload[1..3], &[0xd1, 0x66]);
        assert_eq!(p.payload.len(), 3 + 64);
        assert_eq!(packetpath_hops_hex(EX_B).unwrap(), vec!["59", "D6", "95"]);
        assert!(advert_pubkey(&parse_hex(EX_B).unwrap()).is_err());
    }

    #[test]
    fn example_c_trace() {
        let p = decode_hex(EX_C).unwrap();
        assert_eq!(p.header.route_type, ROUTE_DIRECT);
        assert_eq!(p.header.payload_type, PAYLOAD_TRACE);
        assert_eq!(p.hash_count, 1);
        assert_eq!(p.header_hops(), vec!["0F"]);
        let t = p.trace().unwrap();
        assert_eq!(t.tag, 1_575_253_178);
        assert_eq!(t.tag, 0x5DE4_74BA);
        assert_eq!(t.auth_code, 0);
        assert_eq!(t.flags, 0);
        assert_eq!(t.route, vec!["27"]);
        assert_eq!(t.snr_values, vec![3.75]);
        // The decoder's hop list is the payload route, not the SNR byte.
        assert_eq!(p.hops(), vec!["27"]);
        // The lenient helper knows nothing about TRACE.
        assert_eq!(packetpath_hops_hex(EX_C).unwrap(), vec!["0F"]);
        // Hash includes the path length byte and a zero byte.
        let mut h = Sha256::new();
        h.update([9u8, 0x01, 0x00]);
        h.update(parse_hex("BA74E45D000000000027").unwrap());
        assert_eq!(content_hash_hex(EX_C), hex::encode(&h.finalize()[..8]));
    }

    #[test]
    fn trace_without_route_keeps_snr_bytes() {
        let bytes = encode_packet(&PacketSpec {
            route_type: ROUTE_DIRECT,
            payload_type: PAYLOAD_TRACE,
            hash_size: 1,
            hops: vec![vec![0xF0], vec![0x10]],
            payload: encode_trace_payload(7, 0, 1, &[]),
            ..Default::default()
        });
        let p = decode(&bytes).unwrap();
        assert_eq!(p.hops(), vec!["F0", "10"]);
        assert_eq!(p.trace().unwrap().snr_values, vec![-4.0, 4.0]);
        // Short payload: decode error, hop list stays the header bytes.
        let short = encode_packet(&PacketSpec {
            route_type: ROUTE_DIRECT,
            payload_type: PAYLOAD_TRACE,
            hash_size: 1,
            hops: vec![vec![0x0F]],
            payload: vec![1, 2, 3],
            ..Default::default()
        });
        let p = decode(&short).unwrap();
        assert!(p.trace().is_err());
        assert_eq!(p.hops(), vec!["0F"]);
        // Route hops of 2 bytes (flags & 3 = 1), trailing odd byte ignored.
        let t = decode_trace_payload(&[0, 0, 0, 0, 0, 0, 0, 0, 1, 0xAB, 0xCD, 0xEF]).unwrap();
        assert_eq!(t.route, vec!["ABCD"]);
        // flags & 3 = 3 → 8-byte hops.
        let mut p8 = vec![0u8; 8];
        p8.push(3);
        p8.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            decode_trace_payload(&p8).unwrap().route,
            vec!["0102030405060708"]
        );
    }

    #[test]
    fn example_d_over_long_path() {
        let bytes = parse_hex(EX_D).unwrap();
        assert_eq!(Header::from_byte(bytes[0]).payload_version, 3);
        assert_eq!(Header::from_byte(bytes[0]).route_type, ROUTE_DIRECT);
        assert_eq!(Header::from_byte(bytes[0]).payload_type, PAYLOAD_GRP_TXT);
        assert_eq!(decode(&bytes), Err(PacketError::PathTooLong(74)));
        let hops = packetpath_hops(&bytes).unwrap();
        assert_eq!(hops.len(), 37);
        assert_eq!(hops[0], "EBB4");
        assert_eq!(hops[1], "F978");
        assert_eq!(hops[36], "1267");
        // payload after the path: channel hash 0x63, MAC b856
        assert_eq!(&bytes[2 + 74..2 + 77], &[0x63, 0xb8, 0x56]);
    }

    #[test]
    fn zero_hop_advert() {
        let p = decode_hex(EX_ZERO).unwrap();
        assert_eq!(p.path_len_byte, 0x40);
        assert_eq!(p.hash_size, 2);
        assert_eq!(p.hash_count, 0);
        assert!(p.hops().is_empty());
        assert_eq!(hops_json(&p.hops()), "[]");
        assert_eq!(packetpath_hops_hex(EX_ZERO).unwrap(), Vec::<String>::new());
        assert!(p.advert().is_ok());
    }

    #[test]
    fn hex_parsing() {
        assert_eq!(parse_hex("aBcD").unwrap(), vec![0xab, 0xcd]);
        assert_eq!(parse_hex(""), Ok(vec![]));
        assert_eq!(parse_hex("abc"), Err(PacketError::OddLength(3)));
        assert_eq!(parse_hex("zz"), Err(PacketError::InvalidHex(0)));
        assert_eq!(parse_hex("0g"), Err(PacketError::InvalidHex(1)));
        assert_eq!(parse_hex(" 00"), Err(PacketError::OddLength(3)));
        assert_eq!(parse_hex("é0"), Err(PacketError::OddLength(3)));
        assert_eq!(parse_hex("éé"), Err(PacketError::InvalidHex(0)));
        // Mixed case decodes the same bytes.
        assert_eq!(
            decode_hex(&EX_A.to_uppercase()).unwrap(),
            decode_hex(EX_A).unwrap()
        );
    }

    #[test]
    fn strict_errors() {
        assert!(matches!(decode(&[]), Err(PacketError::TooShort { .. })));
        assert!(matches!(decode(&[0x11]), Err(PacketError::TooShort { .. })));
        // transport route without its 4 bytes
        assert!(matches!(
            decode(&[0x10, 0, 0]),
            Err(PacketError::TooShort { .. })
        ));
        // reserved hash size
        assert_eq!(
            decode(&[0x11, 0xC1, 0xAA]),
            Err(PacketError::ReservedHashSize(0xC1))
        );
        // path past the end
        assert!(matches!(
            decode(&[0x11, 0x03, 0xAA]),
            Err(PacketError::TooShort { what: "path", .. })
        ));
        // 64 path bytes accepted, 65+ rejected
        let mut ok = vec![0x15, 0x40 | 32];
        ok.extend(std::iter::repeat(0xAB).take(64));
        assert_eq!(decode(&ok).unwrap().hops().len(), 32);
        let mut bad = vec![0x15, 0x80 | 22];
        bad.extend(std::iter::repeat(0xAB).take(66));
        assert_eq!(decode(&bad), Err(PacketError::PathTooLong(66)));
        // payload limit
        let mut big = vec![0x15, 0x00];
        big.extend(std::iter::repeat(0).take(185));
        assert_eq!(decode(&big), Err(PacketError::PayloadTooLong(185)));
        big.pop();
        assert!(decode(&big).is_ok());
        // non-zero version is not rejected
        assert_eq!(decode(&[0xD5, 0x00]).unwrap().header.payload_version, 3);
        // ADVERT too short
        let p = decode(&[0x11, 0x00, 1, 2, 3]).unwrap();
        assert!(matches!(p.advert(), Err(PacketError::TooShort { .. })));
        assert!(matches!(
            advert_pubkey(&[0x11, 0x00, 1, 2, 3]),
            Err(PacketError::TooShort { .. })
        ));
    }

    #[test]
    fn lenient_helper() {
        // reserved size taken literally: 4-byte hops
        assert_eq!(
            packetpath_hops(&[0x11, 0xC2, 1, 2, 3, 4, 5, 6, 7, 8, 9]).unwrap(),
            vec!["01020304", "05060708"]
        );
        // only complete hops that fit
        assert_eq!(
            packetpath_hops(&[0x11, 0x43, 1, 2, 3]).unwrap(),
            vec!["0102"]
        );
        assert_eq!(
            packetpath_hops(&[0x11, 0x05]).unwrap(),
            Vec::<String>::new()
        );
        assert!(packetpath_hops(&[0x11]).is_err());
        assert!(packetpath_hops(&[]).is_err());
        // transport codes are skipped
        assert_eq!(
            packetpath_hops(&[0x14, 0xAA, 0xBB, 0xCC, 0xDD, 0x01, 0x7E]).unwrap(),
            vec!["7E"]
        );
        assert!(packetpath_hops(&[0x14, 0xAA, 0xBB, 0xCC, 0xDD]).is_err());
        assert!(packetpath_hops_hex("11x").is_err());
    }

    #[test]
    fn transport_codes() {
        let bytes = encode_packet(&PacketSpec {
            route_type: ROUTE_TRANSPORT_FLOOD,
            payload_type: PAYLOAD_GRP_TXT,
            transport_codes: Some([0x12, 0xAB, 0x00, 0x00]),
            hash_size: 1,
            hops: vec![vec![0x59]],
            payload: vec![0x81, 1, 2],
            ..Default::default()
        });
        let p = decode(&bytes).unwrap();
        assert_eq!(
            p.transport_code_strings(),
            Some(("12AB".to_string(), "0000".to_string()))
        );
        assert!(p.is_transport_scoped());
        assert_eq!(p.hops(), vec!["59"]);
        // route and transport codes do not change the content hash
        let plain = encode_packet(&PacketSpec {
            route_type: ROUTE_FLOOD,
            payload_type: PAYLOAD_GRP_TXT,
            hash_size: 2,
            hops: vec![vec![1, 2], vec![3, 4]],
            payload: vec![0x81, 1, 2],
            ..Default::default()
        });
        assert_eq!(content_hash(&bytes), content_hash(&plain));
        assert!(decode(&plain).unwrap().transport_code_strings().is_none());
    }

    #[test]
    fn content_hash_fallback() {
        assert_eq!(content_hash_hex("11ZZ0102030405060708"), "11ZZ010203040506");
        assert_eq!(content_hash_hex("1105AB"), "1105AB");
        assert_eq!(content_hash(&[0x11, 0x05, 0xAB]), "1105ab");
        assert_eq!(content_hash_hex(""), "");
        assert_eq!(content_hash_hex(EX_A).len(), 16);
    }

    #[test]
    fn advert_round_trip_and_name_rules() {
        let key = [0xABu8; 32];
        let payload = encode_advert_payload(
            &key,
            1_700_000_000,
            0x01,
            Some((51.5, -0.1275)),
            Some("Café\u{7}\tNode"),
        );
        let bytes = encode_packet(&PacketSpec {
            route_type: ROUTE_FLOOD,
            payload_type: PAYLOAD_ADVERT,
            hash_size: 3,
            hops: vec![vec![1, 2, 3]],
            payload,
            ..Default::default()
        });
        let p = decode(&bytes).unwrap();
        assert_eq!(p.hops(), vec!["010203"]);
        let a = p.advert().unwrap();
        assert_eq!(a.pub_key, "ab".repeat(32));
        assert_eq!(a.timestamp, 1_700_000_000);
        assert_eq!(a.signature, "0".repeat(128));
        assert_eq!(a.flags.unwrap().raw, 0x91);
        assert_eq!(a.flags.unwrap().role(), "companion");
        assert_eq!(a.lat, Some(51.5));
        assert_eq!(a.lon, Some(-0.1275));
        assert_eq!(a.name.as_deref(), Some("CaféNode"));
        assert_eq!(advert_pubkey(&bytes).unwrap(), "ab".repeat(32));

        // long name truncated to 32 bytes at a char boundary, stops at NUL
        let long = "é".repeat(20);
        let pl = encode_advert_payload(&key, 0, 2, None, Some(&long));
        let a = decode_advert_payload(&pl).unwrap();
        assert_eq!(a.name.as_deref(), Some("é".repeat(16).as_str()));
        let pl = encode_advert_payload(&key, 0, 2, None, Some("ab\0cd"));
        assert_eq!(
            decode_advert_payload(&pl).unwrap().name.as_deref(),
            Some("ab")
        );
        // no appdata at all
        let a = decode_advert_payload(&pl[..100]).unwrap();
        assert!(a.flags.is_none() && a.name.is_none());
        // flags say location but truncated
        let mut pl = encode_advert_payload(&key, 0, 2, Some((1.0, 2.0)), None);
        pl.truncate(104);
        assert_eq!(decode_advert_payload(&pl).unwrap().lat, None);
    }

    #[test]
    fn sensor_fields() {
        let key = [1u8; 32];
        let mut pl = encode_advert_payload(&key, 0, 4, None, Some("S1"));
        pl.push(0);
        pl.extend_from_slice(&3700u16.to_le_bytes());
        pl.extend_from_slice(&(-1234i16).to_le_bytes());
        let a = decode_advert_payload(&pl).unwrap();
        assert_eq!(a.name.as_deref(), Some("S1"));
        assert_eq!(a.battery_mv, Some(3700));
        assert_eq!(a.temperature_c, Some(-12.34));
        // out-of-range values dropped
        let mut pl = encode_advert_payload(&key, 0, 4, None, None);
        pl.extend_from_slice(&20000u16.to_le_bytes());
        pl.extend_from_slice(&20000i16.to_le_bytes());
        let a = decode_advert_payload(&pl).unwrap();
        assert_eq!(a.battery_mv, None);
        assert_eq!(a.temperature_c, None);
        // feature fields
        let mut pl = encode_advert_payload(&key, 0, 2, None, None);
        pl[100] |= 0x60;
        pl.extend_from_slice(&7u16.to_le_bytes());
        pl.extend_from_slice(&9u16.to_le_bytes());
        let a = decode_advert_payload(&pl).unwrap();
        assert_eq!((a.feat1, a.feat2), (Some(7), Some(9)));
    }

    #[test]
    fn encoder_masks_and_counts() {
        let b = encode_packet(&PacketSpec {
            route_type: 0xFF,
            payload_type: 0xFF,
            version: 0xFF,
            transport_codes: Some([0; 4]),
            hash_size: 2,
            hops: vec![vec![0xAA, 0xBB]],
            payload: vec![],
        });
        assert_eq!(b, vec![0xFF, 0, 0, 0, 0, 0x41, 0xAA, 0xBB]);
        assert_eq!(payload_type_name(12), "UNKNOWN");
        assert_eq!(payload_type_name(4), "ADVERT");
    }

    fn exercise(bytes: &[u8]) {
        let _ = packetpath_hops(bytes);
        let _ = advert_pubkey(bytes);
        let _ = content_hash(bytes);
        if let Ok(p) = decode(bytes) {
            let _ = p.hops();
            let _ = p.header_hops();
            let _ = p.advert();
            let _ = p.trace();
            let _ = p.transport_code_strings();
            assert!(p.path.len() <= MAX_PATH_BYTES);
            assert!(p.payload.len() <= MAX_PAYLOAD_BYTES);
        }
        let _ = decode_advert_payload(bytes);
        let _ = decode_trace_payload(bytes);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            exercise(&bytes);
        }

        #[test]
        fn never_panics_on_text(s in "\\PC{0,80}") {
            let _ = parse_hex(&s);
            let _ = decode_hex(&s);
            let _ = packetpath_hops_hex(&s);
            let _ = content_hash_hex(&s);
        }

        #[test]
        fn never_panics_on_hex(s in "[0-9a-fA-F]{0,400}") {
            let _ = decode_hex(&s);
            let _ = packetpath_hops_hex(&s);
            let _ = content_hash_hex(&s);
            if s.len() % 2 == 0 {
                prop_assert!(parse_hex(&s).is_ok());
            }
        }

        #[test]
        fn advert_packets_with_adversarial_appdata(
            head in proptest::collection::vec(any::<u8>(), 100..101),
            app in proptest::collection::vec(any::<u8>(), 0..60),
        ) {
            let mut p = head;
            p.extend_from_slice(&app);
            let a = decode_advert_payload(&p).unwrap();
            if let Some(n) = a.name {
                prop_assert!(n.len() <= MAX_NAME_BYTES);
                prop_assert!(!n.chars().any(|c| c.is_control()));
            }
        }

        #[test]
        fn encode_decode_round_trip(
            route in 0u8..4,
            ptype in 0u8..16,
            version in 0u8..4,
            size in 1u8..4,
            nhops in 0usize..20,
            payload in proptest::collection::vec(any::<u8>(), 0..100),
            seed in any::<u8>(),
        ) {
            let hops: Vec<Vec<u8>> = (0..nhops)
                .map(|i| (0..size).map(|j| seed.wrapping_add((i * 7 + j as usize) as u8)).collect())
                .collect();
            let transport = if route == 0 || route == 3 { Some([1, 2, 3, 4]) } else { None };
            let spec = PacketSpec {
                route_type: route, payload_type: ptype, version, transport_codes: transport,
                hash_size: size, hops: hops.clone(), payload: payload.clone(),
            };
            let bytes = encode_packet(&spec);
            let expect: Vec<String> = hops.iter().map(|h| upper_hex(h)).collect();
            prop_assert_eq!(packetpath_hops(&bytes).unwrap(), expect.clone());
            if (size as usize) * nhops <= MAX_PATH_BYTES {
                let p = decode(&bytes).unwrap();
                prop_assert_eq!(p.header.route_type, route);
                prop_assert_eq!(p.header.payload_type, ptype);
                prop_assert_eq!(p.header.payload_version, version);
                prop_assert_eq!(p.header_hops(), expect);
                prop_assert_eq!(p.payload, payload);
            }
        }
    }
}
