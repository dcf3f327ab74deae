//! Fuzz targets (issue 8 §6), proptest-based. Each target runs a small case
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

use crate::commands::prune::{self, canonical_date_prefix, window_bound, Class};
use crate::config;
use crate::timeutil::{
    parse_duration_secs, parse_instant, parse_user_time, rfc3339, sqlite_datetime,
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
        let class = prune::classify(&Value::Text(v.clone()), cutoff);
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
        let _ = prune::instant_of(&v);
        let _ = prune::classify(&v, cutoff);
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
#[ignore]
fn fuzz_long_time_parsing() {
    long("time parsing", time_target);
}

#[test]
#[ignore]
fn fuzz_long_time_roundtrip() {
    long("time roundtrip", roundtrip_target);
}

#[test]
#[ignore]
fn fuzz_long_prune_window() {
    long("prune window bound", window_target);
}

#[test]
#[ignore]
fn fuzz_long_stored_values() {
    long("stored time values", stored_value_target);
}

#[test]
#[ignore]
fn fuzz_long_config() {
    long("config parsing", config_target);
}
