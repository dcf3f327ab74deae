//! `check`'s job state (build-edges lag, backfill cursors, prune, vacuum),
//! `schema_newer`, `--strict` / `--allow` / `corescope.checkAllow` and
//! `--max-edges-lag`, each figure compared with SQL run by the test on the
//! same file.

use std::path::{Path, PathBuf};

use rusqlite::Connection;
use serde_json::Value;

use crate::harness::common::{count, sha256};
use crate::harness::Corescope;

const NOW: &str = "2026-05-17T18:12:00Z";

/// A small latest-schema synthetic database.
fn synth(dir: &Path) -> PathBuf {
    let db = dir.join("c.db");
    Corescope::new()
        .args(["synth", "--seed", "3", "--observations", "2000"])
        .args([
            "--transmissions",
            "600",
            "--nodes",
            "40",
            "--observers",
            "5",
        ])
        .args(["--days", "5", "--end", NOW])
        .db(&db)
        .expect_code(0)
        .run();
    db
}

fn check(db: &Path, args: &[&str], code: i32) -> Value {
    Corescope::new()
        .args(["--json", "check"])
        .args(args)
        .db(db)
        .expect_code(code)
        .json()
}

fn state(c: &Connection, key: &str) -> Option<String> {
    c.query_row(
        "SELECT value FROM _corescope_state WHERE key = ?1",
        [key],
        |r| r.get(0),
    )
    .ok()
}

fn codes(j: &Value, key: &str) -> Vec<String> {
    j[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["code"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn build_edges_lag_and_last_run_equal_sql() {
    let dir = tempfile::tempdir().unwrap();
    let db = synth(dir.path());
    // Never ran: the whole table is behind, and the report says so.
    let j = check(&db, &[], 0);
    let e = &j["jobs"]["build_edges"];
    assert_eq!(e["ran"], false);
    assert_eq!(e["watermark"], Value::Null);
    assert_eq!(e["lag"], 2000);
    // A run stopped by --max-seconds: one batch, then the rest is lag.
    Corescope::new()
        .args(["build-edges", "--batch-size", "500", "--max-seconds", "0"])
        .db(&db)
        .expect_code(0)
        .run();
    let c = Connection::open(&db).unwrap();
    let wm: i64 = state(&c, "build_edges.watermark").unwrap().parse().unwrap();
    let max = count(&c, "SELECT max(id) FROM observations");
    assert!(wm > 0 && wm < max, "watermark {wm} of {max}");
    let j = check(&db, &[], 0);
    let e = &j["jobs"]["build_edges"];
    assert_eq!(e["lag"], max - wm);
    assert_eq!(e["last_complete"], false);
    assert_eq!(
        e["last_run"].as_str(),
        state(&c, "jobs.build_edges.last_run").as_deref()
    );
    // A complete run, then 37 new observations: the lag is exactly 37.
    Corescope::new()
        .args(["build-edges"])
        .db(&db)
        .expect_code(0)
        .run();
    c.execute_batch(
        "INSERT INTO observations (transmission_id, observer_idx, path_json, timestamp)
         SELECT transmission_id, observer_idx, '[\"t' || id || '\"]', timestamp
           FROM observations ORDER BY id LIMIT 37",
    )
    .unwrap();
    let wm: i64 = state(&c, "build_edges.watermark").unwrap().parse().unwrap();
    let max = count(&c, "SELECT max(id) FROM observations");
    assert_eq!(max - wm, 37);
    let j = check(&db, &[], 0);
    let e = &j["jobs"]["build_edges"];
    assert_eq!(
        (e["lag"].as_i64(), e["last_complete"].as_bool()),
        (Some(37), Some(true))
    );
    assert_eq!(e["max_observation_id"], max);
    // --max-edges-lag: above it, a warning; --strict makes it exit 3.
    let j = check(&db, &["--strict", "--max-edges-lag", "36"], 3);
    assert_eq!(codes(&j, "warnings"), ["edges_lag"]);
    check(&db, &["--strict", "--max-edges-lag", "37"], 0);
    let out = Corescope::new()
        .args(["check", "--strict", "--max-edges-lag", "10"])
        .db(&db)
        .expect_code(3)
        .stdout();
    assert!(
        out.contains("--strict: exit 3 because of 1 warning(s): edges_lag;"),
        "{out}"
    );
    // Metrics: the lag gauge an operator alerts on.
    let prom = dir.path().join("c.prom");
    Corescope::new()
        .args(["-q", "check", "--metrics-file"])
        .arg(&prom)
        .db(&db)
        .expect_code(0)
        .run();
    let text = std::fs::read_to_string(&prom).unwrap();
    assert!(
        text.lines().any(|l| l
            .starts_with(r#"corescope_build_edges_lag_observations{command="check",db="/"#)
            && l.ends_with("\"} 37")),
        "{text}"
    );
}

#[test]
fn backfill_cursor_and_vacuum_figures_equal_sql() {
    let dir = tempfile::tempdir().unwrap();
    let db = synth(dir.path());
    let c = Connection::open(&db).unwrap();
    let j = check(&db, &[], 0);
    let b = &j["jobs"]["backfill"]["path-json"];
    assert_eq!(b["ran"], false);
    assert_eq!(
        b["rows_past_cursor"],
        count(&c, "SELECT max(id) FROM observations")
    );
    // backfill, build-edges, backfill: resolved-path runs behind the graph.
    for cmd in ["backfill", "build-edges", "backfill"] {
        Corescope::new().args([cmd]).db(&db).expect_code(0).run();
    }
    let j = check(&db, &["--deep"], 0);
    for (task, table) in [
        ("from-pubkey", "transmissions"),
        ("path-json", "observations"),
        ("resolved-path", "observations"),
    ] {
        let b = &j["jobs"]["backfill"][task];
        let cursor: i64 = state(&c, &format!("backfill.{task}.cursor"))
            .unwrap()
            .parse()
            .unwrap();
        let max = count(&c, &format!("SELECT max(id) FROM {table}"));
        assert_eq!(b["cursor"], cursor, "{task}");
        assert_eq!(b["rows_past_cursor"], max - cursor, "{task}");
        assert_eq!(
            (b["ran"].as_bool(), b["last_complete"].as_bool()),
            (Some(true), Some(true))
        );
        let skipped = state(&c, &format!("jobs.backfill.{task}.skipped"))
            .map_or(0, |v| v.parse::<i64>().unwrap());
        assert_eq!(b["skipped"], skipped, "{task}");
    }
    // Free pages after a prune that does not vacuum them away.
    Corescope::new()
        .args([
            "prune",
            "--now",
            NOW,
            "--packet-days",
            "2",
            "--vacuum-pages",
            "0",
        ])
        .db(&db)
        .expect_code(0)
        .run();
    let free = count(&c, "PRAGMA freelist_count");
    let page = count(&c, "PRAGMA page_size");
    assert!(free > 0, "the prune freed no page");
    let j = check(&db, &[], 0);
    let v = &j["free_space"];
    assert_eq!(v["free_pages"], free);
    assert_eq!(v["free_bytes"], free * page);
    assert_eq!(v["pages_per_day"], 1024);
    assert_eq!(v["days_to_return"], (free + 1023) / 1024);
    let p = &j["jobs"]["prune"];
    assert_eq!(
        (p["ran"].as_bool(), p["last_complete"].as_bool()),
        (Some(true), Some(true))
    );
    // The oldest packet now is the oldest first_seen SQL finds.
    let oldest: String = c
        .query_row("SELECT min(first_seen) FROM transmissions", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(p["kinds"]["packets"]["oldest"], oldest);
}

#[test]
fn schema_newer_names_unknown_objects_and_ready_stays_true() {
    let dir = tempfile::tempdir().unwrap();
    let db = synth(dir.path());
    assert!(check(&db, &[], 0)["schema_newer"]
        .as_array()
        .unwrap()
        .is_empty());
    let c = Connection::open(&db).unwrap();
    c.execute_batch(
        "CREATE TABLE region_keys (k TEXT);
         ALTER TABLE observers ADD COLUMN future_flag INTEGER;
         INSERT INTO _migrations (name) VALUES ('future_thing_v1');",
    )
    .unwrap();
    drop(c);
    let sha = sha256(&db);
    let j = check(&db, &[], 0);
    assert_eq!(j["ready"], true);
    assert_eq!(
        j["schema_newer"],
        serde_json::json!([
            "column:observers.future_flag",
            "table:region_keys",
            "migration:future_thing_v1"
        ])
    );
    assert_eq!(codes(&j, "warnings"), ["schema_newer"]);
    let msg = j["warnings"][0]["message"].as_str().unwrap();
    assert!(
        msg.contains("table:region_keys") && msg.contains("newer CoreScope"),
        "{msg}"
    );
    assert_eq!(sha256(&db), sha, "check changed the file");
}

#[test]
fn strict_explains_itself_and_allow_accepts_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let db = synth(dir.path());
    for cmd in ["backfill", "build-edges", "backfill"] {
        Corescope::new().args([cmd]).db(&db).expect_code(0).run();
    }
    let c = Connection::open(&db).unwrap();
    c.execute_batch("UPDATE observations SET timestamp = 0 WHERE id IN (1, 2, 3)")
        .unwrap();
    drop(c);
    // Without --deep the scan does not run: nothing to be strict about.
    let j = check(&db, &["--strict"], 0);
    assert!(j["not_scanned"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c == "zero_timestamp"));
    let j = check(&db, &["--strict", "--deep"], 3);
    assert_eq!(codes(&j, "warnings"), ["zero_timestamp"]);
    assert!(j["scans_run"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c == "zero_timestamp"));
    let out = Corescope::new()
        .args(["check", "--strict", "--deep"])
        .db(&db)
        .expect_code(3)
        .stdout();
    assert!(
        out.contains("--strict: exit 3 because of 1 warning(s): zero_timestamp;"),
        "{out}"
    );
    let j = check(&db, &["--strict", "--deep", "--allow", "zero_timestamp"], 0);
    assert!(j["warnings"].as_array().unwrap().is_empty());
    assert_eq!(codes(&j, "allowed_warnings"), ["zero_timestamp"]);
    // The same from the config file.
    let cfg = dir.path().join("config.json");
    std::fs::write(&cfg, r#"{"corescope": {"checkAllow": ["zero_timestamp"]}}"#).unwrap();
    Corescope::new()
        .args(["check", "--strict", "--deep", "--config"])
        .arg(&cfg)
        .db(&db)
        .expect_code(0)
        .run();
    // A typo is a usage error naming the known codes, not a silent no-op.
    let err = Corescope::new()
        .args(["check", "--allow", "zero_timestamps"])
        .db(&db)
        .expect_code(2)
        .stderr();
    assert!(
        err.contains("--allow \"zero_timestamps\": not a warning code")
            && err.contains("zero_timestamp,"),
        "{err}"
    );
}
