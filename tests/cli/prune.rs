//! End-to-end tests of `corescope prune` against real SQLite files.

use crate::harness::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;
use std::time::Duration;

use chrono::{FixedOffset, TimeZone, Utc};
use common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rusqlite::types::Value;
use rusqlite::{params, Connection};

/// `--now` of the boundary tests: late evening UTC, so that with offsets the
/// local date differs from the UTC date of the cutoff.
const NOW: &str = "2026-05-17T23:30:00Z";
const NOW_EPOCH: i64 = 1_779_060_600;
const DAY: i64 = 86_400;

fn open(p: &Path) -> Connection {
    let c = Connection::open(p).unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c
}

/// A stored time format: name and rendering of an epoch.
type Format = (&'static str, fn(i64) -> Value);

/// Every stored time format (docs/database.md), as a function of the epoch.
fn formats() -> Vec<Format> {
    fn utc(t: i64) -> chrono::DateTime<Utc> {
        Utc.timestamp_opt(t, 0).unwrap()
    }
    vec![
        ("rfc3339", |t| {
            Value::Text(utc(t).format("%Y-%m-%dT%H:%M:%SZ").to_string())
        }),
        ("fraction", |t| {
            // .250 s after the second: still on the same side of the cutoff.
            Value::Text(utc(t).format("%Y-%m-%dT%H:%M:%S.250Z").to_string())
        }),
        ("offset_plus", |t| {
            let tz = FixedOffset::east_opt(2 * 3600).unwrap();
            Value::Text(utc(t).with_timezone(&tz).to_rfc3339())
        }),
        ("offset_minus", |t| {
            let tz = FixedOffset::west_opt(5 * 3600 + 30 * 60).unwrap();
            Value::Text(utc(t).with_timezone(&tz).to_rfc3339())
        }),
        ("sqlite_datetime", |t| {
            Value::Text(utc(t).format("%Y-%m-%d %H:%M:%S").to_string())
        }),
        ("epoch_integer", Value::Integer),
        ("epoch_text", |t| Value::Text(t.to_string())),
    ]
}

/// Insert one row of `kind` labelled `label` with time `v`.
fn insert(c: &Connection, kind: &str, label: &str, v: &Value) {
    match kind {
        "packets" => {
            c.execute(
                "INSERT INTO transmissions (raw_hex, hash, first_seen) VALUES ('0011', ?1, ?2)",
                params![label, v],
            )
            .unwrap();
            let id = c.last_insert_rowid();
            for obs in 0..2 {
                c.execute(
                    "INSERT INTO observations (transmission_id, observer_idx, path_json, timestamp) VALUES (?1, ?2, '[]', ?3)",
                    params![id, obs, NOW_EPOCH],
                )
                .unwrap();
            }
        }
        "nodes" => {
            c.execute(
                "INSERT INTO nodes (public_key, name, last_seen) VALUES (?1, ?1, ?2)",
                params![label, v],
            )
            .unwrap();
        }
        "observers" => {
            c.execute(
                "INSERT INTO observers (id, name, last_seen) VALUES (?1, ?1, ?2)",
                params![label, v],
            )
            .unwrap();
        }
        "metrics" => {
            c.execute(
                "INSERT INTO observer_metrics (observer_id, timestamp, noise_floor) VALUES (?1, ?2, -110.0)",
                params![label, v],
            )
            .unwrap();
        }
        "dropped" => {
            c.execute(
                "INSERT INTO dropped_packets (reason, observer_id, dropped_at) VALUES ('bad signature', ?1, ?2)",
                params![label, v],
            )
            .unwrap();
        }
        "edges" => {
            c.execute(
                "INSERT INTO neighbor_edges (node_a, node_b, count, last_seen) VALUES (?1, 'peer', 3, ?2)",
                params![label, v],
            )
            .unwrap();
        }
        "client_receptions" => {
            c.execute(
                "INSERT INTO client_receptions (rx_pubkey, heard_key, heard_keylen, lat, lon, rx_at, ingested_at, src) \
                 VALUES (?1, 'ab', 1, 37.0, -122.0, ?2, '2026-05-17T00:00:00Z', 'app')",
                params![label, v],
            )
            .unwrap();
        }
        "client_observers" => {
            c.execute(
                "INSERT INTO client_observers (pubkey, name, last_seen) VALUES (?1, ?1, ?2)",
                params![label, v],
            )
            .unwrap();
        }
        _ => panic!("kind {kind}"),
    }
}

/// Labels of the rows that survive as "still active" for a kind.
fn survivors(c: &Connection, kind: &str) -> Vec<String> {
    let sql = match kind {
        "packets" => "SELECT hash FROM transmissions",
        "nodes" => "SELECT public_key FROM nodes",
        "observers" => "SELECT id FROM observers WHERE COALESCE(inactive, 0) = 0",
        "metrics" => "SELECT observer_id FROM observer_metrics",
        "dropped" => "SELECT observer_id FROM dropped_packets",
        "edges" => "SELECT node_a FROM neighbor_edges",
        "client_receptions" => "SELECT rx_pubkey FROM client_receptions",
        "client_observers" => "SELECT pubkey FROM client_observers",
        _ => panic!("kind {kind}"),
    };
    let mut st = c.prepare(sql).unwrap();
    let mut v: Vec<String> = st
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    v.sort();
    v
}

const ALL_DAYS: [&str; 14] = [
    "--packet-days",
    "7",
    "--node-days",
    "7",
    "--observer-days",
    "7",
    "--metrics-days",
    "7",
    "--dropped-days",
    "7",
    "--edge-days",
    "7",
    "--client-days",
    "7",
];

fn prune_json(db: &Path, extra: &[&str]) -> serde_json::Value {
    let out = bin()
        .args(["prune", "--json", "--db"])
        .arg(db)
        .args(extra)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "prune {extra:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    json_of(&out.stdout)
}

const KINDS: [&str; 8] = [
    "packets",
    "nodes",
    "observers",
    "metrics",
    "dropped",
    "edges",
    "client_receptions",
    "client_observers",
];

#[test]
fn one_second_around_the_cutoff_for_every_kind_and_format() {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_db(dir.path(), "b.db");
    let cutoff = NOW_EPOCH - 7 * DAY;
    {
        let c = open(&db);
        for kind in KINDS {
            for (fmt, f) in formats() {
                insert(&c, kind, &format!("{fmt}-old"), &f(cutoff - 1));
                insert(&c, kind, &format!("{fmt}-new"), &f(cutoff + 1));
                // Exactly at the cutoff is not older: kept (CoreScope's `<`).
                insert(&c, kind, &format!("{fmt}-at"), &f(cutoff));
            }
        }
    }
    let mut args = vec!["--now", NOW];
    args.extend(ALL_DAYS);
    let dry = prune_json(&db, &[&args[..], &["--dry-run"][..]].concat());
    let real = prune_json(&db, &args);
    assert_eq!(dry["deleted"], real["deleted"], "dry run equals real run");
    assert_eq!(real["complete"], true);
    assert_eq!(real["cutoffs"]["nodes"], "2026-05-10T23:30:00Z");

    let c = open(&db);
    let n = formats().len() as i64;
    for kind in KINDS {
        let mut expected: Vec<String> = formats()
            .iter()
            .flat_map(|(fmt, _)| [format!("{fmt}-new"), format!("{fmt}-at")])
            .collect();
        expected.sort();
        assert_eq!(survivors(&c, kind), expected, "{kind}");
    }
    let d = &real["deleted"];
    assert_eq!(d["packets"], n);
    assert_eq!(
        real["kinds"]["packets"]["also_deleted"]["observations"],
        2 * n
    );
    assert_eq!(d["nodes"], n);
    assert_eq!(d["observers"], n);
    assert_eq!(d["metrics"], n);
    assert_eq!(d["dropped"], n);
    assert_eq!(d["edges"], n);
    assert_eq!(d["clients"], n);
    assert_eq!(
        real["kinds"]["clients"]["also_deleted"]["client_observers"],
        n
    );
    // Moved nodes are in inactive_nodes, observers kept (soft delete).
    let mut moved: Vec<String> = {
        let mut st = c.prepare("SELECT public_key FROM inactive_nodes").unwrap();
        st.query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    };
    moved.sort();
    let mut exp: Vec<String> = formats().iter().map(|(f, _)| format!("{f}-old")).collect();
    exp.sort();
    assert_eq!(moved, exp);
    assert_eq!(count(&c, "SELECT count(*) FROM observers"), 3 * n);
    assert_eq!(
        count(&c, "SELECT count(*) FROM observations o LEFT JOIN transmissions t ON t.id = o.transmission_id WHERE t.id IS NULL"),
        0
    );
    assert_eq!(count(&c, "SELECT count(*) FROM observations"), 4 * n);

    // Idempotent: a second run deletes nothing.
    let again = prune_json(&db, &args);
    for (k, v) in again["deleted"].as_object().unwrap() {
        assert_eq!(v, 0, "second run deleted {k}");
    }
}

#[test]
fn dropped_packets_on_the_cutoff_day_after_the_cutoff_are_kept() {
    // CoreScope compares '2026-05-10 18:00:00' < '2026-05-10T12:00:00Z' as
    // text and deletes the whole cutoff day; corescope must not.
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_db(dir.path(), "d.db");
    {
        let c = open(&db);
        for (label, at) in [
            ("early-day", "2026-05-10 06:00:00"),
            ("just-before", "2026-05-10 11:59:59"),
            ("at-cutoff", "2026-05-10 12:00:00"),
            ("just-after", "2026-05-10 12:00:01"),
            ("late-day", "2026-05-10 18:00:00"),
            ("last-second", "2026-05-10 23:59:59"),
            ("day-before", "2026-05-09 23:59:59"),
        ] {
            insert(&c, "dropped", label, &Value::Text(at.into()));
        }
    }
    let j = prune_json(&db, &["--now", "2026-06-09T12:00:00Z", "--only", "dropped"]);
    assert_eq!(j["cutoffs"]["dropped"], "2026-05-10T12:00:00Z");
    assert_eq!(j["deleted"]["dropped"], 3);
    let c = open(&db);
    assert_eq!(
        survivors(&c, "dropped"),
        vec!["at-cutoff", "just-after", "last-second", "late-day"]
    );
}

#[test]
fn null_and_unparseable_times_are_kept_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_db(dir.path(), "u.db");
    let odd: Vec<(&str, Value, bool)> = vec![
        // (label, value, due?)
        ("null", Value::Null, false),
        ("garbage", Value::Text("garbage".into()), false),
        ("empty", Value::Text(String::new()), false),
        (
            "bad-date",
            Value::Text("2026-13-45T00:00:00Z".into()),
            false,
        ),
        ("yesterday", Value::Text("yesterday".into()), false),
        (
            "leading-space",
            Value::Text(" 2026-04-01T00:00:00Z".into()),
            true,
        ),
        // Old, but sorts above the index window as text: found by the skip-scan.
        ("epoch9", Value::Text("999999999".into()), true),
        ("unpadded", Value::Text("2026-5-1 00:00:00".into()), true),
        (
            "future-unpadded",
            Value::Text("2026-5-30 00:00:00".into()),
            false,
        ),
        ("old", Value::Text("2026-04-01T00:00:00Z".into()), true),
        ("new", Value::Text("2026-05-17T00:00:00Z".into()), false),
    ];
    {
        let c = open(&db);
        for kind in ["nodes", "edges", "observers"] {
            for (label, v, _) in &odd {
                insert(&c, kind, label, v);
            }
        }
    }
    let args = [
        "--now",
        NOW,
        "--only",
        "nodes,edges,observers",
        "--node-days",
        "7",
        "--edge-days",
        "7",
        "--observer-days",
        "7",
    ];
    let dry = prune_json(&db, &[&args[..], &["--dry-run"][..]].concat());
    let j = prune_json(&db, &args);
    assert_eq!(dry["deleted"], j["deleted"]);
    assert_eq!(dry["unparseable"], j["unparseable"]);
    let due = odd.iter().filter(|o| o.2).count() as i64;
    assert_eq!(j["deleted"]["nodes"], due);
    assert_eq!(j["deleted"]["edges"], due);
    assert_eq!(j["deleted"]["observers"], due);
    for kind in ["nodes", "edges", "observers"] {
        assert_eq!(j["unparseable"][kind], 4, "{kind}: {}", j["unparseable"]);
        assert_eq!(j["null_times"][kind], 1, "{kind}");
    }
    let c = open(&db);
    let mut kept: Vec<String> = odd
        .iter()
        .filter(|o| !o.2)
        .map(|o| o.0.to_string())
        .collect();
    kept.sort();
    assert_eq!(survivors(&c, "nodes"), kept);
    assert_eq!(survivors(&c, "edges"), kept);
    assert_eq!(survivors(&c, "observers"), kept);
    // Stored values are never rewritten.
    let v: String = c
        .query_row(
            "SELECT last_seen FROM nodes WHERE public_key = 'bad-date'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(v, "2026-13-45T00:00:00Z");
}

#[test]
fn node_move_uses_column_names_not_positions() {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_db(dir.path(), "c.db");
    let c = open(&db);
    // Rebuild both tables with the same columns in different orders (as
    // upgraded databases have them), plus a column only `nodes` has.
    let info: Vec<(String, String, bool, Option<String>, bool)> = {
        let mut st = c
            .prepare(
                "SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_info('nodes')",
            )
            .unwrap();
        st.query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get::<_, i64>(2)? != 0,
                r.get(3)?,
                r.get::<_, i64>(4)? != 0,
            ))
        })
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
    };
    let decl = |i: &(String, String, bool, Option<String>, bool)| {
        let mut s = format!("{} {}", i.0, i.1);
        if i.4 {
            s.push_str(" PRIMARY KEY");
        }
        if i.2 {
            s.push_str(" NOT NULL");
        }
        if let Some(d) = &i.3 {
            s.push_str(&format!(" DEFAULT {d}"));
        }
        s
    };
    let mut nodes_order: Vec<_> = info.iter().collect();
    nodes_order.rotate_left(5);
    let mut inactive_order: Vec<_> = info.iter().collect();
    inactive_order.reverse();
    let nodes_sql = format!(
        "CREATE TABLE nodes ({}, legacy_only TEXT)",
        nodes_order
            .iter()
            .map(|i| decl(i))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let inactive_sql = format!(
        "CREATE TABLE inactive_nodes ({})",
        inactive_order
            .iter()
            .map(|i| decl(i))
            .collect::<Vec<_>>()
            .join(", ")
    );
    c.execute_batch(&format!(
        "DROP TABLE nodes; DROP TABLE inactive_nodes; {nodes_sql}; {inactive_sql};
         CREATE INDEX idx_nodes_last_seen ON nodes(last_seen);
         CREATE INDEX idx_inactive_nodes_last_seen ON inactive_nodes(last_seen);"
    ))
    .unwrap();
    let cols = columns(&c, "inactive_nodes");
    assert_ne!(
        columns(&c, "nodes")[..cols.len()],
        cols[..],
        "orders differ"
    );

    let row = |key: &str, last_seen: &str| -> Vec<(&'static str, Value)> {
        vec![
            ("public_key", Value::Text(key.into())),
            ("name", Value::Text(format!("name-{key}"))),
            ("role", Value::Text("repeater".into())),
            ("lat", Value::Real(37.25)),
            ("lon", Value::Real(-122.5)),
            ("last_seen", Value::Text(last_seen.into())),
            ("first_seen", Value::Text("2026-01-02T03:04:05.678Z".into())),
            ("advert_count", Value::Integer(42)),
            ("battery_mv", Value::Integer(3711)),
            ("temperature_c", Value::Real(21.5)),
            ("foreign_advert", Value::Integer(1)),
            ("default_scope", Value::Text("#bay".into())),
            ("multibyte_sup", Value::Integer(2)),
            ("multibyte_evidence", Value::Text("ev".into())),
        ]
    };
    let ins = |table: &str, r: &[(&str, Value)]| {
        let names: Vec<&str> = r.iter().map(|x| x.0).collect();
        let qs: Vec<String> = (1..=r.len()).map(|i| format!("?{i}")).collect();
        let vals: Vec<&Value> = r.iter().map(|x| &x.1).collect();
        c.execute(
            &format!(
                "INSERT INTO {table} ({}) VALUES ({})",
                names.join(", "),
                qs.join(", ")
            ),
            rusqlite::params_from_iter(vals),
        )
        .unwrap();
    };
    let old = row("aa01", "2026-05-01T00:00:00Z");
    ins("nodes", &old);
    c.execute(
        "UPDATE nodes SET legacy_only = 'x' WHERE public_key = 'aa01'",
        [],
    )
    .unwrap();
    let fresh = row("aa02", "2026-05-17T00:00:00Z");
    ins("nodes", &fresh);
    // A stale copy of the same key in inactive_nodes is replaced.
    let mut stale = row("aa01", "2025-01-01T00:00:00Z");
    stale[1].1 = Value::Text("stale".into());
    ins("inactive_nodes", &stale);

    let j = prune_json(&db, &["--now", NOW, "--only", "nodes"]);
    assert_eq!(j["deleted"]["nodes"], 1);
    for (name, v) in &old {
        let got: Value = c
            .query_row(
                &format!("SELECT {name} FROM inactive_nodes WHERE public_key = 'aa01'"),
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(&got, v, "inactive_nodes.{name}");
    }
    assert_eq!(count(&c, "SELECT count(*) FROM inactive_nodes"), 1);
    assert_eq!(
        count(&c, "SELECT count(*) FROM nodes WHERE public_key = 'aa02'"),
        1
    );
    assert_eq!(count(&c, "SELECT count(*) FROM nodes"), 1);
}

#[test]
fn observers_soft_deleted_and_metrics_of_inactive_observers_removed() {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_db(dir.path(), "o.db");
    let c = open(&db);
    for (id, last_seen, inactive) in [
        ("OBS-STALE", "2026-04-01T00:00:00Z", 0),
        ("OBS-LIVE", "2026-05-17T00:00:00Z", 0),
        ("OBS-BLACKLISTED", "2026-05-17T00:00:00Z", 1),
        ("OBS-NULL", "", 0),
    ] {
        let v = if last_seen.is_empty() {
            Value::Null
        } else {
            Value::Text(last_seen.into())
        };
        c.execute(
            "INSERT INTO observers (id, name, last_seen, inactive) VALUES (?1, ?1, ?2, ?3)",
            params![id, v, inactive],
        )
        .unwrap();
        for i in 0..5 {
            c.execute(
                "INSERT INTO observer_metrics (observer_id, timestamp) VALUES (?1, ?2)",
                params![id, format!("2026-05-1{i}T00:00:00Z")],
            )
            .unwrap();
        }
    }
    let rowids_before = dump(&c, "observers", Some(&["rowid".into(), "id".into()]));
    // observerDays -1 keeps them forever.
    let j = prune_json(
        &db,
        &["--now", NOW, "--only", "observers", "--observer-days", "-1"],
    );
    assert_eq!(j["deleted"]["observers"], 0);
    assert_eq!(j["kinds"]["observers"]["status"], "disabled");
    assert_eq!(count(&c, "SELECT count(*) FROM observer_metrics"), 20);

    let dry = prune_json(
        &db,
        &["--now", NOW, "--only", "observers,metrics", "--dry-run"],
    );
    let j = prune_json(&db, &["--now", NOW, "--only", "observers,metrics"]);
    assert_eq!(dry["deleted"], j["deleted"]);
    assert_eq!(j["deleted"]["observers"], 1);
    // Metrics of the newly inactive and of the blacklisted observer.
    assert_eq!(j["kinds"]["observers"]["also_deleted"]["metrics"], 10);
    assert_eq!(j["deleted"]["metrics"], 10);
    assert_eq!(
        count(&c, "SELECT count(*) FROM observers WHERE inactive = 1"),
        2
    );
    assert_eq!(count(&c, "SELECT count(*) FROM observer_metrics"), 10);
    assert_eq!(
        count(&c, "SELECT count(*) FROM observer_metrics WHERE observer_id IN ('OBS-STALE','OBS-BLACKLISTED')"),
        0
    );
    // Observers are never deleted and keep their rowids.
    assert_eq!(
        dump(&c, "observers", Some(&["rowid".into(), "id".into()])),
        rowids_before
    );
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM _corescope_state WHERE key LIKE 'prune.%'"
        ),
        0
    );

    // A run killed after inactivating an observer but before deleting the
    // metrics leaves the pending mark; the next run finishes the step.
    c.execute_batch(
        "UPDATE observers SET inactive = 1 WHERE id = 'OBS-LIVE';
         INSERT INTO _corescope_state (key, value, updated_at)
         VALUES ('prune.observer_metrics_pending', '1', '2026-05-17T00:00:00Z');",
    )
    .unwrap();
    let dry = prune_json(&db, &["--now", NOW, "--only", "observers", "--dry-run"]);
    let j = prune_json(&db, &["--now", NOW, "--only", "observers"]);
    assert_eq!(dry["deleted"], j["deleted"]);
    assert_eq!(j["deleted"]["observers"], 0);
    assert_eq!(j["kinds"]["observers"]["also_deleted"]["metrics"], 5);
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM observer_metrics WHERE observer_id = 'OBS-LIVE'"
        ),
        0
    );
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM _corescope_state WHERE key LIKE 'prune.%'"
        ),
        0
    );
}

#[test]
fn refuses_unmigrated_database_and_bad_now() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = legacy_copy(dir.path());
    let before = sha256(&legacy);
    for extra in [&[][..], &["--dry-run"][..]] {
        let out = bin()
            .args(["prune", "--db"])
            .arg(&legacy)
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3), "{extra:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("corescope migrate"));
    }
    assert_eq!(sha256(&legacy), before);

    let db = fresh_db(dir.path(), "n.db");
    for bad in [
        vec!["--now", "last tuesday"],
        vec!["--node-days", "0"],
        vec!["--observer-days", "0"],
        vec!["--only", "bananas"],
        vec!["--packet-days", "-2"],
    ] {
        let out = bin()
            .args(["prune", "--db"])
            .arg(&db)
            .args(&bad)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
    }
}

#[test]
fn packets_are_off_by_default_and_max_seconds_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_db(dir.path(), "p.db");
    {
        let c = open(&db);
        for i in 0..50 {
            insert(
                &c,
                "packets",
                &format!("h{i:03}"),
                &Value::Text("2026-01-01T00:00:00Z".into()),
            );
        }
    }
    let j = prune_json(&db, &["--now", NOW]);
    assert_eq!(j["deleted"]["packets"], 0);
    assert_eq!(j["kinds"]["packets"]["status"], "disabled");
    assert_eq!(j["cutoffs"]["packets"], serde_json::Value::Null);

    let j = prune_json(
        &db,
        &["--now", NOW, "--packet-days", "30", "--max-seconds", "0"],
    );
    assert_eq!(j["complete"], false);
    assert_eq!(j["deleted"]["packets"], 0);
    let j = prune_json(&db, &["--now", NOW, "--packet-days", "30"]);
    assert_eq!(j["complete"], true);
    assert_eq!(j["deleted"]["packets"], 50);
    assert_eq!(j["kinds"]["packets"]["also_deleted"]["observations"], 100);
    // Config file values apply; a flag overrides them.
    let cfg = dir.path().join("config.json");
    std::fs::write(&cfg, r#"{"retention":{"nodeDays":1}}"#).unwrap();
    {
        let c = open(&db);
        insert(
            &c,
            "nodes",
            "two-days",
            &Value::Text("2026-05-15T23:00:00Z".into()),
        );
    }
    let mut out = bin()
        .args([
            "prune",
            "--json",
            "--dry-run",
            "--now",
            NOW,
            "--only",
            "nodes",
            "--config",
        ])
        .arg(&cfg)
        .arg("--db")
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(json_of(&out.stdout)["deleted"]["nodes"], 1);
    out = bin()
        .args([
            "prune",
            "--json",
            "--dry-run",
            "--now",
            NOW,
            "--only",
            "nodes",
            "--node-days",
            "3",
            "--config",
        ])
        .arg(&cfg)
        .arg("--db")
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(json_of(&out.stdout)["deleted"]["nodes"], 0);
}

// ---------------------------------------------------------------------------
// A mixed database for the dry-run and kill tests.

fn build_mixed(path: &Path, seed: u64, nodes: usize, transmissions: usize) {
    let c = open(path);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let fmts = formats();
    let now = NOW_EPOCH;
    let tx = c.unchecked_transaction().unwrap();
    for i in 0..40 {
        let t = now - rng.gen_range(0..30 * DAY);
        let f = &fmts[rng.gen_range(0..fmts.len())].1;
        tx.execute(
            "INSERT INTO observers (id, name, last_seen, inactive) VALUES (?1, ?1, ?2, ?3)",
            params![format!("OBS{i:02}"), f(t), i32::from(i % 13 == 0)],
        )
        .unwrap();
        for k in 0..20 {
            let m = now - rng.gen_range(0..60 * DAY);
            tx.execute(
                "INSERT OR IGNORE INTO observer_metrics (observer_id, timestamp) VALUES (?1, ?2)",
                params![format!("OBS{i:02}"), fmts[k % fmts.len()].1(m)],
            )
            .unwrap();
        }
    }
    for i in 0..nodes {
        let t = now - rng.gen_range(0..20 * DAY);
        let f = &fmts[rng.gen_range(0..fmts.len())].1;
        tx.execute(
            "INSERT INTO nodes (public_key, name, last_seen, advert_count) VALUES (?1, ?1, ?2, ?3)",
            params![format!("{i:064x}"), f(t), i],
        )
        .unwrap();
        let e = now - rng.gen_range(0..10 * DAY);
        tx.execute(
            "INSERT OR IGNORE INTO neighbor_edges (node_a, node_b, count, last_seen) VALUES (?1, ?2, 1, ?3)",
            params![format!("{i:064x}"), format!("{:064x}", i + 1), f(e)],
        )
        .unwrap();
        let d = now - rng.gen_range(0..60 * DAY);
        tx.execute(
            "INSERT INTO dropped_packets (reason, dropped_at) VALUES ('sig', ?1)",
            params![Value::Text(
                Utc.timestamp_opt(d, 0)
                    .unwrap()
                    .format("%Y-%m-%d %H:%M:%S")
                    .to_string()
            )],
        )
        .unwrap();
    }
    for i in 0..transmissions {
        let t = now - rng.gen_range(0..40 * DAY);
        let f = &fmts[rng.gen_range(0..fmts.len())].1;
        tx.execute(
            "INSERT INTO transmissions (raw_hex, hash, first_seen) VALUES ('11223344', ?1, ?2)",
            params![format!("hash{i:06}"), f(t)],
        )
        .unwrap();
        let id = tx.last_insert_rowid();
        for o in 0..rng.gen_range(1..5) {
            tx.execute(
                "INSERT INTO observations (transmission_id, observer_idx, path_json, timestamp) VALUES (?1, ?2, '[]', ?3)",
                params![id, o, t],
            )
            .unwrap();
        }
    }
    tx.commit().unwrap();
}

fn mixed_args() -> Vec<&'static str> {
    let mut a = vec!["--now", NOW, "--packet-days", "20", "--client-days", "3"];
    a.extend(["--observer-days", "14", "--metrics-days", "30"]);
    a
}

#[test]
fn dry_run_counts_equal_the_real_run_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_db(dir.path(), "m.db");
    build_mixed(&db, 7, 300, 600);
    let before = sha256(&db);
    let snap = snapshot(&db);
    let args = mixed_args();
    let dry = prune_json(&db, &[&args[..], &["--dry-run"][..]].concat());
    // The database is byte-identical and no WAL frame was written. (A
    // read-only open of a WAL file may leave an empty -wal and the -shm.)
    assert_eq!(sha256(&db), before, "dry run changed the database");
    let wal = dir.path().join("m.db-wal");
    assert_eq!(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0), 0);
    assert_eq!(snapshot(&db), snap);
    assert_eq!(dry["dry_run"], true);
    let real = prune_json(&db, &args);
    assert_eq!(dry["deleted"], real["deleted"]);
    assert_eq!(dry["unparseable"], real["unparseable"]);
    assert_eq!(dry["null_times"], real["null_times"]);
    assert_eq!(dry["kinds"], real["kinds"]);
    let d = real["deleted"].as_object().unwrap();
    for k in [
        "packets",
        "nodes",
        "observers",
        "metrics",
        "dropped",
        "edges",
    ] {
        assert!(d[k].as_i64().unwrap() > 0, "{k} should have work: {d:?}");
    }
    assert!(real["kinds"]["packets"]["also_deleted"]["observations"].as_i64() > Some(0));
}

fn integrity(c: &Connection) {
    let ok: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let fk = count(c, "SELECT count(*) FROM pragma_foreign_key_check");
    assert_eq!(fk, 0, "foreign_key_check");
    assert_eq!(
        count(c, "SELECT count(*) FROM observations WHERE transmission_id NOT IN (SELECT id FROM transmissions)"),
        0,
        "orphan observations"
    );
}

fn snapshot(path: &Path) -> BTreeMap<String, Vec<Vec<Value>>> {
    let c = open(path);
    tables(&c)
        .into_iter()
        .filter(|t| t != "_corescope_state" && t != "sqlite_sequence")
        .map(|t| {
            let d = dump(&c, &t, None);
            (t, d)
        })
        .collect()
}

fn binary() -> PathBuf {
    crate::harness::exe()
}

#[test]
fn killed_at_random_points_then_rerun_equals_one_clean_run() {
    let dir = tempfile::tempdir().unwrap();
    let victim = fresh_db(dir.path(), "victim.db");
    build_mixed(&victim, 11, 600, 3000);
    let clean = dir.path().join("clean.db");
    {
        // Copy through SQLite so the WAL content comes along.
        let c = open(&victim);
        c.execute("VACUUM INTO ?1", [clean.to_str().unwrap()])
            .unwrap();
    }
    let args = mixed_args();
    prune_json(&clean, &args);
    let expected = snapshot(&clean);

    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let mut killed = 0;
    let runs = 8;
    for run in 0..runs {
        let mut child = StdCommand::new(binary())
            .args(["prune", "-q", "--max-lock-ms", "20", "--db"])
            .arg(&victim)
            .args(&args)
            .env_remove("CORESCOPE_DB")
            .env_remove("CORESCOPE_CONFIG")
            .spawn()
            .unwrap();
        // Early runs are cut short (node, observer and metrics steps), later
        // ones deeper into the packet step.
        let ms = if run < runs / 2 {
            rng.gen_range(2..60)
        } else {
            rng.gen_range(50..400)
        };
        std::thread::sleep(Duration::from_millis(ms));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            killed += 1;
        }
        let status = child.wait().unwrap();
        let _ = status;
        let c = open(&victim);
        integrity(&c);
        // A node is always in exactly one of the two tables.
        assert_eq!(
            count(&c, "SELECT count(*) FROM nodes")
                + count(&c, "SELECT count(*) FROM inactive_nodes"),
            600
        );
        assert_eq!(count(&c, "SELECT count(*) FROM observers"), 40);
        eprintln!(
            "after kill at {ms} ms: {} transmissions, {} nodes, {} edges",
            count(&c, "SELECT count(*) FROM transmissions"),
            count(&c, "SELECT count(*) FROM nodes"),
            count(&c, "SELECT count(*) FROM neighbor_edges")
        );
    }
    eprintln!("{killed} of {runs} runs were killed mid-way");
    assert!(killed > 0, "no run was interrupted");
    let final_run = prune_json(&victim, &args);
    assert_eq!(final_run["complete"], true);
    integrity(&open(&victim));
    assert_eq!(snapshot(&victim), expected, "after {killed} kills");
    // Nothing left to do.
    let again = prune_json(&victim, &args);
    for (k, v) in again["deleted"].as_object().unwrap() {
        assert_eq!(v, 0, "{k}");
    }
}

#[test]
fn busy_writer_gives_75_and_a_later_run_completes() {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_db(dir.path(), "busy.db");
    {
        let c = open(&db);
        for i in 0..20 {
            insert(
                &c,
                "nodes",
                &format!("n{i}"),
                &Value::Text("2026-04-01T00:00:00Z".into()),
            );
        }
    }
    let holder = open(&db);
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let out = bin()
        .args(["prune", "--busy-timeout", "100", "--now", NOW, "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(75),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A dry run only reads: it works beside the writer.
    let out = bin()
        .args(["prune", "--json", "--dry-run", "--now", NOW, "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(json_of(&out.stdout)["deleted"]["nodes"], 20);
    holder.execute_batch("ROLLBACK").unwrap();
    let j = prune_json(&db, &["--now", NOW]);
    assert_eq!(j["deleted"]["nodes"], 20);
    integrity(&open(&db));
}
