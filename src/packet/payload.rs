//! Decoding of the ADVERT and TRACE payloads (the two payloads corescope
//! reads), and the originator key of an ADVERT from raw bytes.

use super::*;

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
        role_name(self.node_type())
    }
}

/// Node type (ADVERT flags, low nibble): a companion (chat client).
pub const NODE_COMPANION: u8 = 1;
/// Node type: a repeater.
pub const NODE_REPEATER: u8 = 2;
/// Node type: a room server.
pub const NODE_ROOM: u8 = 3;
/// Node type: a sensor.
pub const NODE_SENSOR: u8 = 4;

/// A node type as stored in `nodes.role`.
pub fn role_name(node_type: u8) -> String {
    match node_type {
        0 => "none".into(),
        NODE_COMPANION => "companion".into(),
        NODE_REPEATER => "repeater".into(),
        NODE_ROOM => "room".into(),
        NODE_SENSOR => "sensor".into(),
        n => format!("type-{n}"),
    }
}

/// The little-endian u16 at `*off`, moving `*off` past it; `None` (and
/// `*off` unchanged) when the bytes end first.
fn take_u16(b: &[u8], off: &mut usize) -> Option<u16> {
    let v = read_u16(b, *off)?;
    *off += 2;
    Some(v)
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
        let Some(v) = take_u16(app, &mut off) else {
            return Ok(adv);
        };
        adv.feat1 = Some(v);
    }
    if flags.has_feat2() {
        let Some(v) = take_u16(app, &mut off) else {
            return Ok(adv);
        };
        adv.feat2 = Some(v);
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
