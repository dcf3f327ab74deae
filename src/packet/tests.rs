// The test vectors are real coordinates, written as the packets show them.
#![allow(clippy::unreadable_literal)]

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
    let mut bad = vec![0x15, 0x80 | 0x16];
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
