//! Byte building for synthetic MeshCore packets and the JSON CoreScope
//! stores for them.
//!
//! Everything that turns fields into packet bytes goes through [`packet_bytes`] and
//! [`content_hash`], so the generator can be switched to the project's shared packet
//! encoder in one place.

/// Payload type numbers (defined once, in `packet.rs`; short names here).
pub use crate::packet::{
    PAYLOAD_ACK as ACK, PAYLOAD_ADVERT as ADVERT, PAYLOAD_ANON_REQ as ANON_REQ,
    PAYLOAD_CONTROL as CONTROL, PAYLOAD_GRP_DATA as GRP_DATA, PAYLOAD_GRP_TXT as GRP_TXT,
    PAYLOAD_PATH as PATH, PAYLOAD_REQ as REQ, PAYLOAD_RESPONSE as RESPONSE, PAYLOAD_TRACE as TRACE,
    PAYLOAD_TXT_MSG as TXT_MSG,
};

/// Header byte: route type in bits 1–0, payload type in 5–2, version in 7–6.
pub fn header_byte(route_type: u8, payload_type: u8, version: u8) -> u8 {
    (route_type & 0x03) | ((payload_type & 0x0F) << 2) | ((version & 0x03) << 6)
}

/// Path length byte: hash size (1–3) in bits 7–6 as size−1, hop count in 5–0.
pub fn path_len_byte(hash_size: usize, hash_count: usize) -> u8 {
    ((((hash_size.clamp(1, 4)) - 1) as u8) << 6) | ((hash_count as u8) & 0x3F)
}

/// Route types 0 (TRANSPORT_FLOOD) and 3 (TRANSPORT_DIRECT) carry transport codes.
pub fn has_transport(route_type: u8) -> bool {
    route_type == 0 || route_type == 3
}

/// The complete packet: header, optional transport codes, path length byte, path
/// bytes, payload.
pub fn packet_bytes(
    header: u8,
    transport: Option<[u8; 4]>,
    path_len: u8,
    path: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(6 + path.len() + payload.len());
    out.push(header);
    if let Some(t) = transport {
        out.extend_from_slice(&t);
    }
    out.push(path_len);
    out.extend_from_slice(path);
    out.extend_from_slice(payload);
    out
}

/// Content hash of a packet built from these parts: the shared
/// rule of `packet::content_hash_parts`.
pub fn content_hash(payload_type: u8, path_len: u8, payload: &[u8]) -> String {
    crate::packet::content_hash_parts(payload_type, path_len, payload)
}

/// Hops rendered as CoreScope stores them in `path_json` (upper-case hex).
pub fn path_json(path: &[u8], hash_size: usize) -> String {
    if path.is_empty() || hash_size == 0 {
        return "[]".to_string();
    }
    let mut s = String::with_capacity(2 + path.len() * 2 + path.len() / hash_size * 3);
    s.push('[');
    for (i, hop) in path.chunks(hash_size).enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push('"');
        s.push_str(&hex::encode_upper(hop));
        s.push('"');
    }
    s.push(']');
    s
}

/// JSON string literal (quotes and escapes).
pub fn js(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// A float as JSON (shortest round-trip form, like Go's encoding/json).
pub fn jf(v: f64) -> String {
    if v.is_finite() {
        let s = format!("{v}");
        s
    } else {
        "null".to_string()
    }
}

/// RFC 3339 with `.000Z` as in `decoded_json.timestampISO`.
pub fn iso_millis(epoch: i64) -> String {
    match chrono::DateTime::from_timestamp(epoch, 0) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S.000Z").to_string(),
        None => "1970-01-01T00:00:00.000Z".to_string(),
    }
}

pub use crate::timeutil::{rfc3339, sqlite_datetime};

/// RFC 3339 with milliseconds (legacy Node.js rows).
pub fn rfc3339_ms(epoch: i64, ms: u32) -> String {
    match chrono::DateTime::from_timestamp(epoch, 0) {
        Some(t) => format!("{}.{:03}Z", t.format("%Y-%m-%dT%H:%M:%S"), ms % 1000),
        None => "1970-01-01T00:00:00.000Z".to_string(),
    }
}

/// ADVERT appdata fields.
pub struct AdvertData<'a> {
    pub pubkey: &'a [u8; 32],
    pub timestamp: u32,
    pub signature: &'a [u8; 64],
    /// Node type 0–15 (low nibble of the flags byte).
    pub node_type: u8,
    /// Micro-degrees.
    pub location: Option<(i32, i32)>,
    pub feat1: Option<u16>,
    pub feat2: Option<u16>,
    pub name: Option<&'a str>,
    /// Sensor extras: battery mV and temperature in 1/100 °C.
    pub sensor: Option<(u16, i16)>,
}

impl AdvertData<'_> {
    pub fn flags(&self) -> u8 {
        let mut f = self.node_type & 0x0F;
        if self.location.is_some() {
            f |= 0x10;
        }
        if self.feat1.is_some() {
            f |= 0x20;
        }
        if self.feat2.is_some() {
            f |= 0x40;
        }
        if self.name.is_some() {
            f |= 0x80;
        }
        f
    }

    /// The ADVERT payload bytes.
    pub fn payload(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(140);
        p.extend_from_slice(self.pubkey);
        p.extend_from_slice(&self.timestamp.to_le_bytes());
        p.extend_from_slice(self.signature);
        p.push(self.flags());
        if let Some((lat, lon)) = self.location {
            p.extend_from_slice(&lat.to_le_bytes());
            p.extend_from_slice(&lon.to_le_bytes());
        }
        if let Some(f) = self.feat1 {
            p.extend_from_slice(&f.to_le_bytes());
        }
        if let Some(f) = self.feat2 {
            p.extend_from_slice(&f.to_le_bytes());
        }
        if let Some(n) = self.name {
            p.extend_from_slice(n.as_bytes());
        }
        if let Some((mv, t)) = self.sensor {
            if self.name.is_some() {
                // The name runs to the first 0x00: terminate it before the extras.
                p.push(0);
            }
            p.extend_from_slice(&mv.to_le_bytes());
            p.extend_from_slice(&t.to_le_bytes());
        }
        p
    }

    /// `decoded_json` of the current decoder; `old_decoder` gives the shape of older
    /// rows (no `hasFeat1`/`hasFeat2`, no `signatureValid`).
    pub fn decoded_json(&self, old_decoder: bool) -> String {
        let f = self.flags();
        let t = self.node_type;
        let mut s = String::with_capacity(512);
        s.push_str("{\"type\":\"ADVERT\",\"pubKey\":\"");
        s.push_str(&hex::encode(self.pubkey));
        s.push_str("\",\"timestamp\":");
        s.push_str(&self.timestamp.to_string());
        s.push_str(",\"timestampISO\":\"");
        s.push_str(&iso_millis(self.timestamp as i64));
        s.push_str("\",\"signature\":\"");
        s.push_str(&hex::encode(self.signature));
        s.push('"');
        if !old_decoder {
            s.push_str(",\"signatureValid\":true");
        }
        s.push_str(&format!(
            ",\"flags\":{{\"raw\":{f},\"type\":{t},\"chat\":{},\"repeater\":{},\"room\":{},\"sensor\":{},\"hasLocation\":{}",
            t == 1,
            t == 2,
            t == 3,
            t == 4,
            self.location.is_some()
        ));
        if !old_decoder {
            s.push_str(&format!(
                ",\"hasFeat1\":{},\"hasFeat2\":{}",
                self.feat1.is_some(),
                self.feat2.is_some()
            ));
        }
        s.push_str(&format!(",\"hasName\":{}}}", self.name.is_some()));
        if let Some((lat, lon)) = self.location {
            s.push_str(&format!(
                ",\"lat\":{},\"lon\":{}",
                jf(lat as f64 / 1_000_000.0),
                jf(lon as f64 / 1_000_000.0)
            ));
        }
        if let Some(n) = self.name {
            s.push_str(",\"name\":");
            s.push_str(&js(n));
        }
        if let Some(v) = self.feat1 {
            s.push_str(&format!(",\"feat1\":{v}"));
        }
        if let Some(v) = self.feat2 {
            s.push_str(&format!(",\"feat2\":{v}"));
        }
        if let Some((mv, tc)) = self.sensor {
            if (1..=10_000).contains(&mv) {
                s.push_str(&format!(",\"battery_mv\":{mv}"));
            }
            let c = tc as f64 / 100.0;
            if (-50.0..=100.0).contains(&c) {
                s.push_str(&format!(",\"temperature_c\":{}", jf(c)));
            }
        }
        s.push('}');
        s
    }
}

/// REQ/RESPONSE/TXT_MSG/PATH share dest(1) src(1) mac(2) data.
pub fn addressed_payload(dest: u8, src: u8, mac: [u8; 2], data: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(4 + data.len());
    p.push(dest);
    p.push(src);
    p.extend_from_slice(&mac);
    p.extend_from_slice(data);
    p
}

pub fn addressed_json(type_name: &str, dest: u8, src: u8, mac: [u8; 2], data: &[u8]) -> String {
    let data_key = if type_name == "PATH" {
        "pathData"
    } else {
        "encryptedData"
    };
    format!(
        "{{\"type\":\"{type_name}\",\"destHash\":\"{:02x}\",\"srcHash\":\"{:02x}\",\"mac\":\"{}\",\"{data_key}\":\"{}\"}}",
        dest,
        src,
        hex::encode(mac),
        hex::encode(data)
    )
}

/// ANON_REQ: dest(1) ephemeral key(32) mac(2) data.
pub fn anon_req_payload(dest: u8, eph: &[u8; 32], mac: [u8; 2], data: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(35 + data.len());
    p.push(dest);
    p.extend_from_slice(eph);
    p.extend_from_slice(&mac);
    p.extend_from_slice(data);
    p
}

pub fn anon_req_json(dest: u8, eph: &[u8; 32], mac: [u8; 2], data: &[u8]) -> String {
    format!(
        "{{\"type\":\"ANON_REQ\",\"destHash\":\"{:02x}\",\"mac\":\"{}\",\"encryptedData\":\"{}\",\"ephemeralPubKey\":\"{}\"}}",
        dest,
        hex::encode(mac),
        hex::encode(data),
        hex::encode(eph)
    )
}

/// ACK: 4-byte checksum.
pub fn ack_json(crc: [u8; 4]) -> String {
    format!(
        "{{\"type\":\"ACK\",\"extraHash\":\"{:08x}\"}}",
        u32::from_le_bytes(crc)
    )
}

/// GRP_TXT / GRP_DATA: channel hash(1) mac(2) ciphertext.
pub fn group_payload(channel_hash: u8, mac: [u8; 2], data: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(3 + data.len());
    p.push(channel_hash);
    p.extend_from_slice(&mac);
    p.extend_from_slice(data);
    p
}

/// Not decrypted group message (key order of a real CoreScope capture).
pub fn group_encrypted_json(
    type_name: &str,
    channel_hash: u8,
    mac: [u8; 2],
    data: &[u8],
    status: &str,
) -> String {
    let mut s = format!(
        "{{\"type\":\"{type_name}\",\"mac\":\"{}\",\"encryptedData\":\"{}\"",
        hex::encode(mac),
        hex::encode(data)
    );
    if channel_hash != 0 {
        s.push_str(&format!(",\"channelHash\":{channel_hash}"));
    }
    s.push_str(&format!(
        ",\"channelHashHex\":\"{channel_hash:02X}\",\"decryptionStatus\":\"{status}\"}}"
    ));
    s
}

/// Decrypted channel message (`type` CHAN).
pub fn chan_json(
    channel_hash: u8,
    channel: &str,
    sender: &str,
    message: &str,
    sender_ts: i64,
) -> String {
    let mut s = String::from("{\"type\":\"CHAN\"");
    if channel_hash != 0 {
        s.push_str(&format!(",\"channelHash\":{channel_hash}"));
    }
    s.push_str(&format!(
        ",\"channelHashHex\":\"{channel_hash:02X}\",\"decryptionStatus\":\"decrypted\",\"channel\":{},\"text\":{},\"sender\":{},\"sender_timestamp\":{sender_ts}}}",
        js(channel),
        js(&format!("{sender}: {message}")),
        js(sender)
    ));
    s
}

/// TRACE payload: tag, auth code (uint32 LE), flags, route hops.
pub fn trace_payload(tag: u32, auth: u32, flags: u8, route: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(9 + route.len());
    p.extend_from_slice(&tag.to_le_bytes());
    p.extend_from_slice(&auth.to_le_bytes());
    p.push(flags);
    p.extend_from_slice(route);
    p
}

pub fn trace_json(tag: u32, auth: u32, flags: u8, route: &[u8], snr: &[u8]) -> String {
    let snrs: Vec<String> = snr.iter().map(|b| jf(f64::from(*b as i8) / 4.0)).collect();
    let mut s = format!("{{\"type\":\"TRACE\",\"tag\":{tag}");
    if auth != 0 {
        s.push_str(&format!(",\"authCode\":{auth}"));
    }
    s.push_str(&format!(",\"traceFlags\":{flags}"));
    if !route.is_empty() {
        s.push_str(&format!(",\"pathData\":\"{}\"", hex::encode(route)));
    }
    if !snrs.is_empty() {
        s.push_str(&format!(",\"snrValues\":[{}]", snrs.join(",")));
    }
    s.push('}');
    s
}

/// CONTROL (current decoder) or, for older rows, `UNKNOWN` with the raw payload.
pub fn control_json(payload: &[u8], old_decoder: bool) -> String {
    if old_decoder || payload.is_empty() {
        return format!(
            "{{\"type\":\"UNKNOWN\",\"raw\":\"{}\"}}",
            hex::encode(payload)
        );
    }
    let flags = payload[0];
    format!(
        "{{\"type\":\"CONTROL\",\"ctrlFlags\":{flags},\"ctrlZeroHop\":{},\"ctrlLength\":{},\"raw\":\"{}\"}}",
        flags & 0x80 != 0,
        payload.len(),
        hex::encode(payload)
    )
}

/// Obsolete TRACE row shape of an older decoder.
pub fn trace_too_short_json(payload: &[u8]) -> String {
    format!(
        "{{\"type\":\"TRACE\",\"raw\":\"{}\",\"error\":\"too short\"}}",
        hex::encode(payload)
    )
}

#[cfg(test)]
// The test vectors are real coordinates, timestamps and tags, written as the
// packets and the protocol documents show them.
#[allow(clippy::unreadable_literal)]
mod tests {
    use super::*;

    #[test]
    fn header_and_path_bytes_match_spec_examples() {
        // Example A: 0x11 = FLOOD ADVERT v0; path byte 0x42 = size 2, two hops.
        assert_eq!(header_byte(1, ADVERT, 0), 0x11);
        assert_eq!(path_len_byte(2, 2), 0x42);
        // Example B: 0x15 GRP_TXT flood; path 0x03.
        assert_eq!(header_byte(1, GRP_TXT, 0), 0x15);
        assert_eq!(path_len_byte(1, 3), 0x03);
        // Example C: 0x26 DIRECT TRACE.
        assert_eq!(header_byte(2, TRACE, 0), 0x26);
        // Example D: 0xD6 DIRECT GRP_TXT version 3; 0x65 = size 2, 37 hops.
        assert_eq!(header_byte(2, GRP_TXT, 3), 0xD6);
        assert_eq!(path_len_byte(2, 37), 0x65);
        assert_eq!(path_len_byte(2, 0), 0x40);
    }

    #[test]
    fn advert_example_a_hash_and_json() {
        // A real ADVERT row: recompute the stored content hash from the raw bytes.
        let raw = hex::decode("11427d1d1f5d300ddc9e145dbe6cb4d6c2d93c74e9f862f5e247783f64ef89a4732e68dd473c4c62c9697f70e27d27e4a0d3f001c4032a262c390f868b2c7df763b2171969f29dde33a01785f01b6e37e7a1d7ba39735cb6013ad3a7f00c76ae84623ef286f99c3ee60292ec9f3e02c688b9f852352d443420333030442052616b").unwrap();
        let payload = &raw[6..];
        assert_eq!(content_hash(ADVERT, 0x42, payload), "09f282f70cc1ff60");
        let mut key = [0u8; 32];
        key.copy_from_slice(&payload[..32]);
        let mut sig = [0u8; 64];
        sig.copy_from_slice(&payload[36..100]);
        let ad = AdvertData {
            pubkey: &key,
            timestamp: 1774805580,
            signature: &sig,
            node_type: 2,
            location: Some((37658604, -122058554)),
            feat1: None,
            feat2: None,
            name: Some("R5-D4 300D Rak"),
            sensor: None,
        };
        assert_eq!(ad.payload(), payload);
        let rebuilt = packet_bytes(0x11, None, 0x42, &raw[2..6], &ad.payload());
        assert_eq!(rebuilt, raw);
        let j: serde_json::Value = serde_json::from_str(&ad.decoded_json(true)).unwrap();
        assert_eq!(j["lat"], 37.658604);
        assert_eq!(j["lon"], -122.058554);
        assert_eq!(j["timestampISO"], "2026-03-29T17:33:00.000Z");
        assert_eq!(j["flags"]["raw"], 146);
        assert!(j.get("signatureValid").is_none());
        let j2: serde_json::Value = serde_json::from_str(&ad.decoded_json(false)).unwrap();
        assert_eq!(j2["signatureValid"], true);
        assert_eq!(j2["flags"]["hasFeat1"], false);
    }

    #[test]
    fn trace_hash_includes_path_len() {
        // A real TRACE row: raw 26 01 0f ba74e45d 00000000 00 27.
        let payload = trace_payload(0x5DE474BA, 0, 0, &[0x27]);
        assert_eq!(hex::encode(&payload), "ba74e45d000000000027");
        assert_ne!(
            content_hash(TRACE, 0x01, &payload),
            content_hash(TRACE, 0x02, &payload)
        );
        let j: serde_json::Value =
            serde_json::from_str(&trace_json(0x5DE474BA, 0, 0, &[0x27], &[0x0F])).unwrap();
        assert_eq!(j["snrValues"][0], 3.75);
        assert_eq!(j["pathData"], "27");
    }

    #[test]
    fn path_json_renders_upper_hops() {
        assert_eq!(
            path_json(&[0x7d, 0x1d, 0x1f, 0x5d], 2),
            r#"["7D1D","1F5D"]"#
        );
        assert_eq!(path_json(&[], 1), "[]");
        assert_eq!(path_json(&[0x59, 0xd6, 0x95], 1), r#"["59","D6","95"]"#);
    }

    #[test]
    fn json_helpers_produce_valid_json() {
        for s in [
            addressed_json("REQ", 0x8b, 0x1f, [0xba, 0xb5], &[1, 2, 3]),
            addressed_json("PATH", 0xad, 0x2e, [0x74, 0x25], &[1, 2, 3]),
            anon_req_json(0xad, &[7; 32], [1, 2], &[9; 16]),
            ack_json([1, 2, 3, 4]),
            group_encrypted_json("GRP_TXT", 0x6e, [1, 2], &[3; 48], "no_key"),
            chan_json(0x81, "#wardriving", "XMD \"Tag\" 1", "hello", 1774805359),
            control_json(&[0x92, 1, 2], false),
            control_json(&[0x92, 1, 2], true),
            trace_too_short_json(&[1, 2, 3]),
        ] {
            let v: serde_json::Value = serde_json::from_str(&s).unwrap();
            assert!(v["type"].is_string(), "{s}");
        }
        let v: serde_json::Value = serde_json::from_str(&ack_json([1, 2, 3, 4])).unwrap();
        assert_eq!(v["extraHash"], "04030201");
    }
}
