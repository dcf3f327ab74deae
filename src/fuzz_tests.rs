//! Fuzz targets for the pure decoders and rules, proptest-based. Each target runs a small case
//! count in CI (`cargo test fuzz_`), and a large one in the ignored variants:
//!
//! ```text
//! FUZZ_CASES=2000000 nice -n 19 cargo test --release --bin corescope fuzz_ -- --ignored --test-threads 1
//! ```
//!
//! Properties: no panic on any input, plus the invariants each target names.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use rusqlite::types::Value;

use crate::config;
use crate::derive;
use crate::edges::{self, PrefixIndex};
use crate::packet::{self, encode_packet, PacketSpec};
use crate::resolve;
use crate::retention::{self, canonical_date_prefix, window_bound, Class};
use crate::timeutil::{
    parse_duration_secs, parse_instant, parse_now, parse_user_time, rfc3339, sqlite_datetime,
    NOW_EARLIEST, NOW_MAX_AHEAD_SECS, TIME_MAX,
};

/// Years 0001..=9999 in epoch seconds: the range every format can write.
const MIN_EPOCH: i64 = -62_135_596_800;
const MAX_EPOCH: i64 = 253_402_300_799;

fn cases(ci: u32) -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ci)
}

fn runner(n: u32) -> TestRunner {
    TestRunner::new(Config {
        cases: n,
        failure_persistence: None,
        max_shrink_iters: 2048,
        ..Config::default()
    })
}

/// Text that looks like a stored time, with every part optionally damaged.
fn time_like() -> impl Strategy<Value = String> {
    let date = "[0-9]{1,5}-[0-9]{1,3}-[0-9]{1,3}";
    let sep = prop_oneof![Just("T"), Just(" "), Just("t"), Just(""), Just("_")];
    let clock = "[0-9]{1,2}(:[0-9]{1,2}(:[0-9]{1,2})?)?";
    let frac = prop_oneof![Just(String::new()), "\\.[0-9]{0,15}", ",[0-9]{1,3}"];
    let zone = prop_oneof![
        Just(String::new()),
        Just("Z".to_string()),
        Just("z".to_string()),
        "[+-][0-9]{1,2}(:?[0-9]{1,2})?",
        " ?[A-Z]{1,4}",
    ];
    let tail = prop_oneof![Just(String::new()), ".{0,6}"];
    (date, sep, clock, frac, zone, tail)
        .prop_map(|(d, s, c, f, z, t)| format!("{d}{s}{c}{f}{z}{t}"))
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => time_like(),
        2 => any::<String>(),
        1 => "-?[0-9]{0,25}",
        1 => "[ \\t\\n]*[0-9: TZ+.-]{0,40}[ \\t\\n]*",
    ]
}

fn time_target(n: u32) -> u64 {
    let mut r = runner(n);
    r.run(&any_text(), |s| {
        let a = parse_instant(&s);
        let b = parse_user_time(&s);
        prop_assert_eq!(a, b.as_ref().ok().copied());
        if let Err(msg) = b {
            prop_assert!(msg.contains("invalid time"));
        }
        // --now: whatever is accepted parsed the same and lies in its bounds.
        let clock = 1_779_041_521;
        for allow in [false, true] {
            match parse_now(Some(&s), clock, allow) {
                Ok(v) => {
                    prop_assert_eq!(Some(v), a);
                    prop_assert!((0..=TIME_MAX).contains(&v));
                    if !allow {
                        prop_assert!((NOW_EARLIEST..=clock + NOW_MAX_AHEAD_SECS).contains(&v));
                    }
                }
                Err(msg) => prop_assert!(msg.contains("accepted forms"), "{}", msg),
            }
        }
        let _ = parse_duration_secs(&s);
        if let Some(e) = a {
            // Formatting whatever parsed never panics either.
            let _ = rfc3339(e);
            let _ = sqlite_datetime(e);
        }
        Ok(())
    })
    .unwrap();
    u64::from(n)
}

fn roundtrip_target(n: u32) -> u64 {
    let mut r = runner(n);
    r.run(&(MIN_EPOCH..=MAX_EPOCH), |e| {
        prop_assert_eq!(parse_instant(&rfc3339(e)), Some(e));
        prop_assert_eq!(parse_instant(&sqlite_datetime(e)), Some(e));
        prop_assert_eq!(parse_instant(&e.to_string()), Some(e));
        Ok(())
    })
    .unwrap();
    u64::from(n)
}

/// prune's index walk skips every value at or above the window bound U that
/// starts with a canonical date: such a value must never be due.
fn window_target(n: u32) -> u64 {
    let mut r = runner(n);
    let cutoff = prop_oneof![
        MIN_EPOCH..=MAX_EPOCH,
        1_700_000_000i64..1_900_000_000,
        Just(0i64),
        any::<i64>(),
    ];
    let value = prop_oneof![
        time_like(),
        "[0-9]{4}-[0-9]{2}-[0-9]{2}.{0,30}",
        "[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?([+-][0-9]{2}:[0-9]{2}|Z)?",
    ];
    r.run(&(cutoff, value), |(cutoff, v)| {
        let class = retention::classify(&Value::Text(v.clone()), cutoff);
        if let (Some(u), Some(p)) = (window_bound(cutoff), canonical_date_prefix(&v)) {
            if p.as_bytes() >= u.as_bytes() {
                prop_assert!(
                    !matches!(class, Class::Due),
                    "{v:?} >= bound {u} is due for cutoff {cutoff}"
                );
            }
        }
        // A value that parses is due exactly when it is before the cutoff.
        match parse_instant(&v) {
            Some(t) => prop_assert_eq!(matches!(class, Class::Due), t < cutoff),
            None => prop_assert!(matches!(class, Class::Unparseable)),
        }
        Ok(())
    })
    .unwrap();
    u64::from(n)
}

fn value_strategy() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::Integer),
        any::<f64>().prop_map(Value::Real),
        prop_oneof![
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(9.3e18),
            Just(-9.3e18)
        ]
        .prop_map(Value::Real),
        any_text().prop_map(Value::Text),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::Blob),
        time_like().prop_map(|s| Value::Blob(s.into_bytes())),
    ]
}

fn stored_value_target(n: u32) -> u64 {
    let mut r = runner(n);
    r.run(&(value_strategy(), any::<i64>()), |(v, cutoff)| {
        let _ = retention::instant_of(&v);
        let _ = retention::classify(&v, cutoff);
        Ok(())
    })
    .unwrap();
    u64::from(n)
}

/// JSON-ish config text: valid documents with random types in every known
/// key, and damaged ones.
fn config_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_string()),
        Just("true".to_string()),
        any::<i64>().prop_map(|i| i.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        ".{0,12}".prop_map(|s| serde_json::Value::String(s).to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("[\" a \", \"\", 3]".to_string()),
        Just("9999999999999999999999".to_string()),
    ];
    let key = prop_oneof![
        Just("dbPath"),
        Just("neighborEdgesMaxAgeDays"),
        Just("observerBlacklist"),
        Just("retention"),
        Just("db"),
        Just("nodeDays"),
        Just("observerDays"),
        Just("metricsDays"),
        Just("packetDays"),
        Just("clientRxDays"),
        Just("incrementalVacuumPages"),
        Just("vacuumOnStartup"),
        Just("mqtt"),
    ];
    let pair = (key, leaf.clone()).prop_map(|(k, v)| format!("\"{k}\": {v}"));
    let obj =
        proptest::collection::vec(pair.clone(), 0..6).prop_map(|v| format!("{{{}}}", v.join(", ")));
    let nested = (
        proptest::collection::vec(pair, 0..4),
        obj.clone(),
        obj.clone(),
    )
        .prop_map(|(top, r, d)| {
            let mut v = top;
            v.push(format!("\"retention\": {r}"));
            v.push(format!("\"db\": {d}"));
            format!("{{{}}}", v.join(", "))
        });
    let damaged =
        (nested.clone(), any::<prop::sample::Index>(), ".{0,3}").prop_map(|(s, i, junk)| {
            let cut = i.index(s.len() + 1);
            let cut = (0..=cut)
                .rev()
                .find(|c| s.is_char_boundary(*c))
                .unwrap_or(0);
            format!("{}{}", &s[..cut], junk)
        });
    prop_oneof![3 => nested, 1 => obj, 2 => damaged, 1 => any::<String>()]
}

fn config_target(n: u32) -> u64 {
    let mut r = runner(n);
    let path = std::path::Path::new("/etc/corescope/config.json");
    r.run(&config_text(), |text| {
        match config::Config::parse(&text, path) {
            Ok(c) => {
                // Accessors never panic and apply their documented floors.
                prop_assert!(c.node_days() > 0);
                prop_assert!(c.metrics_days() > 0);
                prop_assert!(c.edge_days() > 0);
                let _ = (
                    c.observer_days(),
                    c.packet_days(),
                    c.client_rx_days(),
                    c.vacuum_pages(),
                );
                prop_assert!(c
                    .observer_blacklist
                    .iter()
                    .all(|s| !s.is_empty() && s.trim() == s));
            }
            Err(e) => {
                let msg = format!("{e:#}");
                prop_assert!(msg.contains("/etc/corescope/config.json"), "{}", msg);
                prop_assert!(!msg.contains('\n'), "{}", msg);
            }
        }
        Ok(())
    })
    .unwrap();
    u64::from(n)
}

// ---------------------------------------------------------------------------
// Packet decoder, path_json / decoded_json handling, hop resolution.

/// A packet built from its parts, possibly truncated or extended.
fn packet_bytes() -> impl Strategy<Value = (PacketSpec, Vec<u8>)> {
    let spec = (
        0u8..4,
        0u8..16,
        0u8..4,
        proptest::option::of(any::<[u8; 4]>()),
        1u8..=4,
        0usize..70,
        proptest::collection::vec(any::<u8>(), 0..160),
    )
        .prop_flat_map(|(route, ptype, version, codes, size, nhops, payload)| {
            let hop = proptest::collection::vec(any::<u8>(), size as usize);
            proptest::collection::vec(hop, nhops).prop_map(move |hops| PacketSpec {
                route_type: route,
                payload_type: ptype,
                version,
                // Route types 0 and 3 carry transport codes, 1 and 2 never do.
                transport_codes: if route == 0 || route == 3 {
                    codes.or(Some([0; 4]))
                } else {
                    None
                },
                hash_size: size,
                hops,
                payload: payload.clone(),
            })
        });
    (spec, any::<prop::sample::Index>(), 0u8..3).prop_map(|(spec, cut, mode)| {
        let mut b = encode_packet(&spec);
        match mode {
            0 => {}
            1 => {
                let n = cut.index(b.len() + 1);
                b.truncate(n);
            }
            _ => b.extend_from_slice(&[0xFF, 0x00, 0x7E]),
        }
        (spec, b)
    })
}

fn any_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        packet_bytes().prop_map(|(_, b)| b),
    ]
}

fn hex_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => any_bytes().prop_map(|b| {
            let h = hex::encode(&b);
            if b.first().is_some_and(|x| x % 2 == 0) { h.to_uppercase() } else { h }
        }),
        1 => any::<String>(),
        1 => "[0-9a-fA-FxzZ ]{0,80}",
        1 => any_bytes().prop_map(|b| format!("{}{}", hex::encode(b), "a")),
    ]
}

fn packet_target(n: u32) -> u64 {
    let mut r = runner(n);
    r.run(&(any_bytes(), hex_text()), |(bytes, text)| {
        if let Ok(p) = packet::decode(&bytes) {
            prop_assert_eq!(p.header_byte, bytes[0]);
            prop_assert!((1..=3).contains(&p.hash_size) || p.path.len() <= bytes.len());
        }
        let hops = packet::packetpath_hops(&bytes);
        if let Ok(h) = &hops {
            let plb_count = h.len();
            prop_assert!(plb_count <= 63);
            let json = packet::hops_json(h);
            prop_assert_eq!(&edges::parse_path_json(&json), h);
        }
        let _ = packet::decode_advert_payload(&bytes);
        let _ = packet::decode_trace_payload(&bytes);
        let _ = packet::advert_pubkey(&bytes);
        let _ = packet::content_hash(&bytes);
        // Hex text: parse_hex accepts exactly even-length hex, any case,
        // nothing skipped.
        let parsed = packet::parse_hex(&text);
        let valid = text.len() % 2 == 0 && text.bytes().all(|b| b.is_ascii_hexdigit());
        prop_assert_eq!(parsed.is_ok(), valid, "{:?}", text);
        if let Ok(b) = &parsed {
            let again = packet::parse_hex(&packet::upper_hex(b)).ok();
            prop_assert_eq!(again.as_ref(), Some(b));
        }
        let _ = packet::decode_hex(&text);
        let _ = packet::packetpath_hops_hex(&text);
        let _ = packet::content_hash_hex(&text);
        let _ = derive::path_json(&text);
        let _ = derive::payload_type(None, Some(&text));
        let _ = derive::from_pubkey(Some(&text), Some(&text));
        Ok(())
    })
    .unwrap();
    u64::from(n)
}

/// Encoding then decoding gives the hops back (strict decoder and lenient
/// hop helper agree with what was written).
fn packet_roundtrip_target(n: u32) -> u64 {
    let mut r = runner(n);
    r.run(&packet_bytes(), |(spec, bytes)| {
        let full = encode_packet(&spec);
        if bytes != full || spec.hash_size == 4 {
            return Ok(());
        }
        let want: Vec<String> = spec
            .hops
            .iter()
            .take(63)
            .map(|h| packet::upper_hex(h))
            .collect();
        let hops =
            packet::packetpath_hops(&bytes).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        prop_assert_eq!(&hops, &want);
        match derive::path_json(&hex::encode(&bytes)) {
            derive::Derived::Leave => prop_assert_eq!(spec.payload_type, packet::PAYLOAD_TRACE),
            derive::Derived::Value(j) => prop_assert_eq!(j, packet::hops_json(&want)),
            derive::Derived::Sentinel(s) => prop_assert!(false, "sentinel {s} for a valid packet"),
        }
        Ok(())
    })
    .unwrap();
    u64::from(n)
}

fn json_text() -> impl Strategy<Value = String> {
    let hop = prop_oneof!["[0-9A-Fa-f]{1,6}", ".{0,4}"];
    let arr = proptest::collection::vec(hop, 0..80)
        .prop_map(|v| serde_json::to_string(&v).unwrap_or_default());
    let keyish = prop_oneof![
        "[0-9a-fA-F]{64}".prop_map(|k| format!("\"{k}\"")),
        Just("null".to_string()),
        Just("5".to_string()),
        Just("{}".to_string()),
        Just("[\"ab\"]".to_string()),
        ".{0,10}".prop_map(|s| serde_json::Value::String(s).to_string()),
    ];
    let decoded = (keyish, ".{0,20}").prop_map(|(k, extra)| {
        format!(
            "{{\"type\":\"ADVERT\",\"pubKey\":{k},\"name\":{}}}",
            serde_json::Value::String(extra)
        )
    });
    let damaged = (
        prop_oneof![arr.clone(), decoded.clone()],
        any::<prop::sample::Index>(),
    )
        .prop_map(|(s, i)| {
            let cut = i.index(s.len() + 1);
            let cut = (0..=cut)
                .rev()
                .find(|c| s.is_char_boundary(*c))
                .unwrap_or(0);
            s[..cut].to_string()
        });
    prop_oneof![3 => arr, 2 => decoded, 2 => damaged, 1 => any::<String>(), 1 => Just("[1,2,null]".to_string())]
}

/// path_json / decoded_json handling and hop resolution on arbitrary text.
fn path_resolution_target(n: u32) -> u64 {
    let mut r = runner(n);
    let keys = proptest::collection::vec("[0-9a-f]{64}", 1..40);
    let strat = (
        json_text(),
        json_text(),
        keys,
        proptest::collection::vec((0usize..40, 0usize..40), 0..60),
        any::<Option<i64>>(),
    );
    r.run(&strat, |(path, decoded, keys, edge_ix, ptype)| {
        let hops = edges::parse_path_json(&path);
        let _ = edges::decoded_pubkey(&decoded);
        let _ = crate::edges::decoded_pubkey(&decoded);
        let idx = PrefixIndex::new(keys.iter().map(std::string::String::as_str));
        let adj = resolve::adjacency_from_edges(
            edge_ix
                .iter()
                .map(|(a, b)| (keys[a % keys.len()].clone(), keys[b % keys.len()].clone())),
        );
        let origin = keys[0].clone();
        if let Some(rp) = resolve::resolve_path(&hops, &origin, &adj, &idx) {
            prop_assert_eq!(rp.len(), hops.len());
            let chosen: Vec<&String> = rp.iter().flatten().collect();
            let mut uniq = chosen.clone();
            uniq.sort();
            uniq.dedup();
            prop_assert_eq!(uniq.len(), chosen.len(), "a node twice in one path");
            for k in &chosen {
                prop_assert!(keys.contains(k) && **k != origin);
            }
            let _ = resolve::to_json(&rp);
        }
        let obs = edges::ObsInput {
            payload_type: ptype.or(Some(4)),
            from_pubkey: None,
            decoded_json: Some(&decoded),
            observer_id: Some(&keys[keys.len() - 1]),
            path_json: Some(&path),
        };
        for (a, b) in edges::extract(&obs, &idx) {
            prop_assert!(!a.is_empty() && a < b);
        }
        let inp = derive::ResolveInput {
            payload_type: ptype,
            from_pubkey: None,
            decoded_pubkey: Some(&decoded),
            tx_raw_hex: Some(&path),
            path_json: &path,
        };
        let _ = derive::originator(&inp);
        let _ = derive::resolved_path(&inp, &adj, &idx);
        Ok(())
    })
    .unwrap();
    u64::from(n)
}

/// `decoded_json` text for the from-pubkey wait rule: objects of members
/// whose labels include `pubKey` (also escaped, repeated, other case),
/// whose values are keys of about 64 hex digits, other scalars, nested
/// objects and escaped strings; also cut short, and the texts of
/// [`json_text`].
fn advert_json() -> impl Strategy<Value = String> {
    let label = prop_oneof![
        4 => Just("pubKey".to_string()),
        1 => Just("pub\\u004bey".to_string()),
        1 => Just("pubkey".to_string()),
        2 => "[a-z]{1,6}",
    ];
    let value = prop_oneof![
        4 => "[0-9a-fA-F]{64}".prop_map(|k| format!("\"{k}\"")),
        1 => "[0-9a-gA-G ]{62,66}".prop_map(|k| format!("\"{k}\"")),
        1 => "[0-9a-fA-F]{64}".prop_map(|k| format!("{{\"pubKey\":\"{k}\"}}")),
        1 => ".{0,12}".prop_map(|s| serde_json::Value::String(s).to_string()),
        1 => prop_oneof![Just("null"), Just("12"), Just("-0.5e3"), Just("true"), Just("[]"), Just("\"pubKey\"")]
            .prop_map(str::to_string),
        1 => "[ -~]{0,8}",
    ];
    let member = (label, value, prop_oneof![Just(""), Just(" "), Just("\n\t")])
        .prop_map(|(l, v, ws)| format!("{ws}\"{l}\"{ws}:{ws}{v}{ws}"));
    let object =
        proptest::collection::vec(member, 0..5).prop_map(|m| format!("{{{}}}", m.join(",")));
    let cut = (object.clone(), any::<prop::sample::Index>()).prop_map(|(s, i)| {
        let at = i.index(s.len() + 1);
        let at = (0..=at).rev().find(|c| s.is_char_boundary(*c)).unwrap_or(0);
        s[..at].to_string()
    });
    prop_oneof![6 => object, 1 => cut, 2 => json_text()]
}

/// `edges::decoded_key_certainly_usable` never says "usable" where
/// SQLite's rule (`backfill_state::decoded_key_usable`) does not.
fn decoded_key_target(n: u32) -> u64 {
    let mut r = runner(n);
    let c = rusqlite::Connection::open_in_memory().expect("in-memory database");
    r.run(&advert_json(), |doc| {
        if edges::decoded_key_certainly_usable(&doc) {
            let u = crate::store::backfill_state::decoded_key_usable_in_sqlite(
                &c,
                rusqlite::types::ValueRef::Text(doc.as_bytes()),
            )
            .expect("the rule evaluates");
            prop_assert!(u, "{}", doc);
        }
        Ok(())
    })
    .unwrap();
    u64::from(n)
}

// CI smoke variants: a few hundred cases each, well under a second.
#[test]
fn fuzz_smoke_time_parsing() {
    time_target(cases(500));
    roundtrip_target(cases(500));
}

#[test]
fn fuzz_smoke_prune_window_and_values() {
    window_target(cases(500));
    stored_value_target(cases(500));
}

#[test]
fn fuzz_smoke_packets_and_paths() {
    packet_target(cases(300));
    packet_roundtrip_target(cases(300));
    path_resolution_target(cases(200));
    decoded_key_target(cases(1000));
}

#[test]
fn fuzz_smoke_config() {
    config_target(cases(300));
}

// Long runs (FUZZ_CASES per target, default 1 000 000).
fn long(name: &str, f: fn(u32) -> u64) {
    let n = cases(1_000_000);
    let t0 = std::time::Instant::now();
    let done = f(n);
    println!(
        "fuzz {name}: {done} executions, no failure, {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

#[test]
#[ignore = "long fuzz run: cargo test --release -- --ignored fuzz_long"]
fn fuzz_long_time_parsing() {
    long("time parsing", time_target);
}

#[test]
#[ignore = "long fuzz run: cargo test --release -- --ignored fuzz_long"]
fn fuzz_long_time_roundtrip() {
    long("time roundtrip", roundtrip_target);
}

#[test]
#[ignore = "long fuzz run: cargo test --release -- --ignored fuzz_long"]
fn fuzz_long_prune_window() {
    long("prune window bound", window_target);
}

#[test]
#[ignore = "long fuzz run: cargo test --release -- --ignored fuzz_long"]
fn fuzz_long_stored_values() {
    long("stored time values", stored_value_target);
}

#[test]
#[ignore = "long fuzz run: cargo test --release -- --ignored fuzz_long"]
fn fuzz_long_config() {
    long("config parsing", config_target);
}

#[test]
#[ignore = "long fuzz run: cargo test --release -- --ignored fuzz_long"]
fn fuzz_long_packet_decoder() {
    long("packet decoder", packet_target);
}

#[test]
#[ignore = "long fuzz run: cargo test --release -- --ignored fuzz_long"]
fn fuzz_long_packet_roundtrip() {
    long("packet encode/decode roundtrip", packet_roundtrip_target);
}

#[test]
#[ignore = "long fuzz run: cargo test --release -- --ignored fuzz_long"]
fn fuzz_long_path_resolution() {
    long("path_json/decoded_json/resolution", path_resolution_target);
}

#[test]
#[ignore = "long fuzz run: cargo test --release -- --ignored fuzz_long"]
fn fuzz_long_decoded_key() {
    long("decoded_json key shortcut vs SQLite", decoded_key_target);
}
