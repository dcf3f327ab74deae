//! Packet encoding (tests and the synthetic-database generator): header,
//! transport codes, path and payload bytes; ADVERT and TRACE payloads.

use super::*;

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
