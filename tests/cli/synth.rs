//! End-to-end tests of `corescope synth` and `corescope demo`: realistic
//! synthetic databases of every schema, reproducible from a seed.

use crate::harness::common;

use std::collections::HashMap;
use std::path::Path;

use common::bin;
use rusqlite::types::Value;
use rusqlite::Connection;
use sha2::{Digest, Sha256};

const END: &str = "2026-05-01T00:00:00Z";

fn synth(db: &Path, extra: &[&str]) {
    bin()
        .arg("--db")
        .arg(db)
        .args([
            "synth",
            "--end",
            END,
            "--nodes",
            "300",
            "--observers",
            "10",
            "--transmissions",
            "1500",
            "--observations",
            "5000",
            "--days",
            "10",
            "-q",
        ])
        .args(extra)
        .assert()
        .success();
}

/// Every row of every table (and the schema), in a stable order.
fn dump(db: &Path) -> Vec<String> {
    let conn = Connection::open(db).unwrap();
    let mut out = Vec::new();
    let mut st = conn
        .prepare("SELECT type, name, COALESCE(sql, '') FROM sqlite_master ORDER BY type, name")
        .unwrap();
    let objs: Vec<(String, String, String)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    for (kind, name, sql) in objs {
        out.push(format!("{kind} {name}: {sql}"));
        if kind != "table" {
            continue;
        }
        let mut q = conn
            .prepare(&format!("SELECT rowid, * FROM \"{name}\" ORDER BY rowid"))
            .or_else(|_| conn.prepare(&format!("SELECT * FROM \"{name}\" ORDER BY 1, 2")))
            .unwrap();
        let n = q.column_count();
        let rows: Vec<String> = q
            .query_map([], |r| {
                let vals: Vec<Value> = (0..n).map(|i| r.get::<_, Value>(i).unwrap()).collect();
                Ok(format!("{vals:?}"))
            })
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        out.push(format!("{name}: {} rows", rows.len()));
        out.extend(rows);
    }
    out
}

#[test]
fn same_arguments_give_identical_tables() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.db");
    let b = dir.path().join("b.db");
    let c = dir.path().join("c.db");
    let knobs = [
        "--null-from-pubkey",
        "0.3",
        "--null-path-json",
        "0.1",
        "--anomalies",
    ];
    synth(&a, &knobs);
    synth(&b, &knobs);
    let (da, db) = (dump(&a), dump(&b));
    assert!(da.len() > 5000);
    assert_eq!(da, db);
    synth(&c, &[&knobs[..], &["--seed", "2"]].concat());
    assert_ne!(da, dump(&c));
}

#[test]
fn refuses_an_existing_file_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("x.db");
    std::fs::write(&db, b"not mine").unwrap();
    bin()
        .arg("--db")
        .arg(&db)
        .args(["synth", "--transmissions", "10"])
        .assert()
        .code(2);
    assert_eq!(std::fs::read(&db).unwrap(), b"not mine");
    bin()
        .arg("--db")
        .arg(&db)
        .args(["synth", "--transmissions", "10", "--force", "-q"])
        .assert()
        .success();
    let conn = Connection::open(&db).unwrap();
    let n: i64 = conn
        .query_row("SELECT COUNT(*) FROM transmissions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 10);
    // No temporary file left behind.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(names.iter().all(|n| !n.contains("synth-tmp")), "{names:?}");
}

#[test]
fn never_writes_to_a_database_found_through_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("prod.db");
    std::fs::write(&db, b"production").unwrap();
    bin()
        .env("CORESCOPE_DB", &db)
        .args(["synth", "--force", "--transmissions", "10"])
        .assert()
        .code(2);
    assert_eq!(std::fs::read(&db).unwrap(), b"production");
}

#[test]
fn bad_sizes_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("x.db");
    for args in [
        vec!["synth", "--null-path-json", "1.5"],
        vec!["synth", "--end", "yesterday"],
        vec!["synth", "--observers", "0"],
        vec!["synth", "--days", "0"],
    ] {
        bin().arg("--db").arg(&db).args(&args).assert().code(2);
        assert!(!db.exists());
    }
}

/// A small independent MeshCore decoder: header, transport codes, path.
struct Decoded {
    route_type: u8,
    payload_type: u8,
    version: u8,
    path_len: u8,
    hops: Vec<String>,
    payload: Vec<u8>,
}

fn decode(raw_hex: &str) -> Decoded {
    let b = hex::decode(raw_hex).expect("raw_hex is hex");
    let header = b[0];
    let route_type = header & 3;
    let mut i = 1;
    if route_type == 0 || route_type == 3 {
        i += 4;
    }
    let path_len = b[i];
    i += 1;
    let size = usize::from(path_len >> 6) + 1;
    let count = usize::from(path_len & 0x3F);
    assert!(size <= 3, "reserved hash size in {raw_hex}");
    let path = &b[i..i + size * count];
    i += size * count;
    Decoded {
        route_type,
        payload_type: (header >> 2) & 0x0F,
        version: header >> 6,
        path_len,
        hops: path.chunks(size).map(hex::encode_upper).collect(),
        payload: b[i..].to_vec(),
    }
}

fn content_hash(d: &Decoded) -> String {
    let mut h = Sha256::new();
    h.update([d.payload_type]);
    if d.payload_type == 9 {
        h.update([d.path_len, 0]);
    }
    h.update(&d.payload);
    hex::encode(&h.finalize()[..8])
}

fn json_hops(path_json: &str) -> Vec<String> {
    serde_json::from_str(path_json).expect("path_json is a JSON array of strings")
}

#[test]
fn every_raw_hex_decodes_to_the_stored_columns() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("d.db");
    synth(&db, &["--null-from-pubkey", "0.2"]);
    let conn = Connection::open(&db).unwrap();

    // Transmissions: header fields, content hash, ADVERT key.
    let mut st = conn
        .prepare("SELECT id, raw_hex, hash, route_type, payload_type, payload_version, decoded_json, from_pubkey, channel_hash FROM transmissions")
        .unwrap();
    let mut rows = st.query([]).unwrap();
    let mut n_tx = 0;
    let mut n_advert = 0;
    let mut types: HashMap<u8, u32> = HashMap::new();
    while let Some(r) = rows.next().unwrap() {
        let raw: String = r.get(1).unwrap();
        let d = decode(&raw);
        let decoded: serde_json::Value =
            serde_json::from_str(&r.get::<_, String>(6).unwrap()).unwrap();
        assert_eq!(i64::from(d.route_type), r.get::<_, i64>(3).unwrap());
        assert_eq!(i64::from(d.payload_type), r.get::<_, i64>(4).unwrap());
        assert_eq!(
            Some(i64::from(d.version)),
            r.get::<_, Option<i64>>(5).unwrap()
        );
        assert_eq!(
            content_hash(&d),
            r.get::<_, String>(2).unwrap(),
            "hash of {raw}"
        );
        *types.entry(d.payload_type).or_default() += 1;
        if d.payload_type == 4 {
            n_advert += 1;
            let key = hex::encode(&d.payload[..32]);
            assert_eq!(decoded["pubKey"], key.as_str());
            assert_eq!(decoded["type"], "ADVERT");
            if let Some(fp) = r.get::<_, Option<String>>(7).unwrap() {
                assert_eq!(fp, key);
            }
        } else {
            assert_eq!(r.get::<_, Option<String>>(7).unwrap(), None);
        }
        if d.payload_type == 5 {
            let ch: String = r.get(8).unwrap();
            if decoded["type"] == "CHAN" {
                assert_eq!(decoded["channel"], ch.as_str());
            } else {
                assert_eq!(
                    format!("enc_{}", decoded["channelHashHex"].as_str().unwrap()),
                    ch
                );
            }
            assert_eq!(
                decoded["channelHash"].as_u64().unwrap_or(0),
                u64::from(d.payload[0])
            );
        }
        n_tx += 1;
    }
    assert_eq!(n_tx, 1500);
    assert!(n_advert > 100, "{n_advert} adverts");
    assert!(types.len() >= 9, "payload mix {types:?}");

    // Observations: own raw_hex → path_json; TRACE → payload hops.
    let mut st = conn
        .prepare(
            "SELECT o.raw_hex, o.path_json, t.payload_type, t.raw_hex,
                    o.id = (SELECT MIN(id) FROM observations WHERE transmission_id = t.id)
             FROM observations o JOIN transmissions t ON t.id = o.transmission_id",
        )
        .unwrap();
    let mut rows = st.query([]).unwrap();
    let mut n_obs = 0;
    let mut multi_byte = 0;
    while let Some(r) = rows.next().unwrap() {
        let raw: String = r.get(0).unwrap();
        let path_json: String = r.get(1).unwrap();
        let ptype: i64 = r.get(2).unwrap();
        let d = decode(&raw);
        assert_eq!(i64::from(d.payload_type), ptype);
        let hops = json_hops(&path_json);
        if ptype == 9 {
            // TRACE: tag(4) auth(4) flags(1), then 1-byte route hops.
            let want: Vec<String> = d.payload[9..].iter().map(|b| format!("{b:02X}")).collect();
            assert_eq!(hops, want);
        } else {
            assert_eq!(hops, d.hops, "path_json of {raw}");
            if d.hops.first().is_some_and(|h| h.len() > 2) {
                multi_byte += 1;
            }
        }
        if r.get::<_, bool>(4).unwrap() {
            // The transmission keeps the first reception's copy.
            assert_eq!(raw, r.get::<_, String>(3).unwrap());
        }
        n_obs += 1;
    }
    assert_eq!(n_obs, 5000);
    assert!(multi_byte > 0, "some paths use 2- or 3-byte hops");

    // Hops are mostly real key prefixes.
    let (real, all): (i64, i64) = conn
        .query_row(
            "SELECT SUM(EXISTS (SELECT 1 FROM nodes n WHERE upper(substr(n.public_key, 1, length(j.value))) = j.value)), COUNT(*)
             FROM observations o, json_each(o.path_json) j
             JOIN transmissions t ON t.id = o.transmission_id WHERE t.payload_type != 9",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(
        real * 100 > all * 90,
        "{real} of {all} hops are key prefixes"
    );
    assert!(real < all, "some hops are random");

    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let fk: i64 = conn
        .query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(fk, 0);
    let jm: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(jm, "wal");
    let av: i64 = conn
        .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
        .unwrap();
    assert_eq!(av, 2);
    // Observer ids are upper-case; observer_idx points at observers.rowid.
    let bad: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM observations o LEFT JOIN observers ob ON ob.rowid = o.observer_idx WHERE ob.id IS NULL OR ob.id != upper(ob.id)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(bad, 0);
}

#[test]
fn latest_database_is_ready() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("l.db");
    synth(&db, &[]);
    bin()
        .arg("--db")
        .arg(&db)
        .args(["check", "-q"])
        .assert()
        .code(0);
}

#[test]
fn legacy_output_is_migrated_then_checked() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("legacy.db");
    synth(&db, &["--schema", "legacy"]);
    let conn = Connection::open(&db).unwrap();
    // The fixture's shape: text observer_idx, timestamp 0, no later columns/tables.
    let (text_idx, zero_ts): (i64, i64) = conn
        .query_row(
            "SELECT SUM(typeof(observer_idx) = 'text'), SUM(timestamp = 0) FROM observations",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((text_idx, zero_ts), (5000, 5000));
    assert!(!common::columns(&conn, "transmissions").contains(&"from_pubkey".to_string()));
    let tables: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE name IN ('_migrations', 'neighbor_edges', 'observer_metrics', 'dropped_packets', 'inactive_nodes')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 0);
    drop(conn);
    bin()
        .arg("--db")
        .arg(&db)
        .args(["check", "-q"])
        .assert()
        .code(3);
    bin()
        .arg("--db")
        .arg(&db)
        .args(["migrate", "-q"])
        .assert()
        .success();
    bin()
        .arg("--db")
        .arg(&db)
        .args(["check", "-q"])
        .assert()
        .code(0);
}

#[test]
fn seed_output_needs_migrate_then_is_ready() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("seed.db");
    synth(
        &db,
        &[
            "--schema",
            "seed",
            "--null-path-json",
            "0.1",
            "--null-resolved-path",
        ],
    );
    bin()
        .arg("--db")
        .arg(&db)
        .args(["check", "-q"])
        .assert()
        .code(3);
    bin()
        .arg("--db")
        .arg(&db)
        .args(["migrate", "-q"])
        .assert()
        .success();
    bin()
        .arg("--db")
        .arg(&db)
        .args(["check", "-q"])
        .assert()
        .code(0);
    let conn = Connection::open(&db).unwrap();
    let (null_paths, null_resolved, n): (i64, i64, i64) = conn
        .query_row(
            "SELECT SUM(path_json IS NULL), SUM(resolved_path IS NULL), COUNT(*) FROM observations",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(null_resolved, n);
    assert!(null_paths > 200 && null_paths < 800, "{null_paths}");
}

#[test]
fn anomalies_are_present_and_check_survives_them() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    synth(&db, &["--anomalies"]);
    let conn = Connection::open(&db).unwrap();
    let q = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert!(q("SELECT COUNT(*) FROM neighbor_edges WHERE node_a = ''") > 0);
    assert!(q("SELECT COUNT(*) FROM (SELECT 1 FROM observations GROUP BY transmission_id, observer_idx, COALESCE(path_json, '') HAVING COUNT(*) > 1)") > 0);
    assert!(q("SELECT COUNT(*) FROM transmissions WHERE payload_version IS NULL") > 0);
    assert!(q("SELECT COUNT(*) FROM observations WHERE typeof(observer_idx) = 'text'") > 0);
    assert!(q("SELECT COUNT(*) FROM observations WHERE timestamp = 0") > 0);
    assert!(q("SELECT COUNT(*) FROM observations WHERE resolved_path LIKE '[null%' AND resolved_path NOT LIKE '%\"%'") > 0);
    assert!(q("SELECT COUNT(*) FROM transmissions WHERE channel_hash = 'public'") > 0);
    assert!(
        q("SELECT COUNT(*) FROM observers WHERE id NOT GLOB '[0-9A-F]*' OR length(id) != 64") > 0
    );
    assert!(q("SELECT COUNT(*) FROM nodes WHERE lat = 0 AND lon = 0") > 0);
    assert!(q("SELECT COUNT(*) FROM nodes WHERE first_seen LIKE '%.___Z'") > 0);
    assert!(
        q("SELECT MAX(seq) FROM sqlite_sequence WHERE name = 'transmissions'")
            > q("SELECT MAX(id) FROM transmissions")
    );
    assert!(q("SELECT COUNT(*) FROM transmissions WHERE decoded_json LIKE '%\"too short\"%'") > 0);
    assert_eq!(q("PRAGMA auto_vacuum"), 0);
    drop(conn);
    // Not ready (the dedup index cannot exist), but check reports rather than crashes.
    bin()
        .arg("--db")
        .arg(&db)
        .args(["check", "-q"])
        .assert()
        .code(3);
    // migrate merges the duplicates (keeping the removed rows in its audit
    // table) and creates the dedup index: the database becomes ready.
    let surplus = {
        let c = Connection::open(&db).unwrap();
        let n: i64 = c
            .query_row(
                "SELECT COALESCE(SUM(n - 1), 0) FROM (SELECT COUNT(*) AS n FROM observations
                  WHERE observer_idx IS NOT NULL
                  GROUP BY transmission_id, observer_idx, COALESCE(path_json, '') HAVING COUNT(*) > 1)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        n
    };
    let n_obs = {
        let c = Connection::open(&db).unwrap();
        let n: i64 = c
            .query_row("SELECT COUNT(*) FROM observations", [], |r| r.get(0))
            .unwrap();
        n
    };
    bin()
        .arg("--db")
        .arg(&db)
        .args(["migrate", "-q"])
        .assert()
        .code(0);
    let c = Connection::open(&db).unwrap();
    let kept: i64 = c
        .query_row(
            "SELECT (SELECT COUNT(*) FROM observations), (SELECT COUNT(*) FROM _corescope_merged_observations)",
            [],
            |r| Ok(r.get::<_, i64>(0)? + r.get::<_, i64>(1)?),
        )
        .unwrap();
    assert_eq!(kept, n_obs, "nothing lost");
    let audited: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM _corescope_merged_observations",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(audited > 0 && audited <= surplus, "{audited} of {surplus}");
    drop(c);
    bin()
        .arg("--db")
        .arg(&db)
        .args(["check", "-q"])
        .assert()
        .code(0);
}

#[test]
fn demo_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["demo", "--keep", "--size", "3000", "--dir"])
        .arg(dir.path())
        .assert()
        .success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    let db = dir.path().join("corescope-demo.db");
    assert!(db.exists());
    assert!(text.contains("==> corescope migrate"), "{text}");
    assert!(
        text.contains(&format!(
            "==> demo files in {} (kept at the end: --keep)",
            dir.path().display()
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("The demo database is {} (kept", db.display())),
        "{text}"
    );
    // The hints call this binary by its path (it is not on the test's PATH),
    // and they work as printed.
    let exe = std::fs::canonicalize(crate::harness::exe()).unwrap();
    let hint = text
        .lines()
        .find(|l| l.contains(" check --db "))
        .unwrap_or_else(|| panic!("no check hint: {text}"));
    assert!(
        hint.trim_start().starts_with(&exe.display().to_string()),
        "{hint}"
    );
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(hint.trim())
        .env_remove("CORESCOPE_DB")
        .env_remove("CORESCOPE_CONFIG")
        .env_remove("CORESCOPE_METRICS_FILE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{hint}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The database is left ready after the cycle.
    bin()
        .arg("--db")
        .arg(&db)
        .args(["check", "-q"])
        .assert()
        .code(0);

    // --json: one object with every step.
    let dir2 = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["--json", "demo", "--size", "2000", "--dir"])
        .arg(dir2.path())
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(v["command"], "demo");
    assert_eq!(v["kept"], false);
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(steps[0]["command"], "synth");
    assert_eq!(steps[1]["command"], "check");
    assert_eq!(steps[1]["exit_code"], 3);
    assert!(steps.iter().any(|s| s["command"] == "migrate"));
}

#[test]
fn demo_says_where_its_files_are_and_removes_them() {
    // A directory the demo creates is removed with the database.
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("demo");
    let out = bin()
        .args(["demo", "--size", "2000", "--dir"])
        .arg(&dir)
        .assert()
        .success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(
        text.contains(&format!(
            "==> demo files in {} (removed at the end; --keep keeps them)",
            dir.display()
        )),
        "{text}"
    );
    assert!(
        text.contains("The demo database was removed. To explore one, run `"),
        "{text}"
    );
    assert!(text.contains(" demo --keep`"), "{text}");
    assert!(!dir.exists(), "demo directory left behind");
    // An existing directory stays, with everything that is not the demo's.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mine.txt"), "x").unwrap();
    bin()
        .args(["demo", "-q", "--size", "2000", "--dir"])
        .arg(dir.path())
        .assert()
        .success();
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["mine.txt"]);
}
