use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::*;
use crate::store::outfile::Guard;

const NO_DB: Guard<'static> = Guard {
    db: None,
    force: false,
};

#[allow(clippy::needless_pass_by_value)] // called with json!(...) temporaries
fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

fn run<'a>(cmd: &'a str, code: i32, json: Option<&'a Map<String, Value>>) -> RunInfo<'a> {
    RunInfo {
        command: cmd,
        db: "",
        is_write: cmd != "check",
        exit_code: code,
        json,
        duration: Duration::from_millis(1500),
        now: 1_000.25,
    }
}

fn value(samples: &[Sample], name: &str, extra: Option<(&str, &str)>) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && match extra {
                    Some((k, v)) => s.labels.get(k).map(String::as_str) == Some(v),
                    None => s.labels.len() == 1,
                }
        })
        .map(|s| s.value)
}

/// The row counts of a report, sorted, as (kind, count) pairs.
#[allow(clippy::needless_pass_by_value)] // called with json!(...) temporaries
fn rows(report: Value) -> Vec<(String, u64)> {
    let mut r = row_counts(&obj(report));
    r.sort();
    r
}

fn pairs(expected: &[(&str, u64)]) -> Vec<(String, u64)> {
    expected
        .iter()
        .map(|(k, n)| ((*k).to_string(), *n))
        .collect()
}

#[test]
fn rows_from_reports() {
    let prune = json!({"deleted": {"packets": 5, "nodes": 0},
        "kinds": {"packets": {"deleted": 5, "also_deleted": {"observations": 12}}},
        "vacuumed_pages": 3, "vacuum_pages": 1024, "max_lock_hold_ms": 12.5, "complete": true,
        "free_space": {"free_pages": 7}});
    assert_eq!(
        rows(prune),
        pairs(&[
            ("nodes", 0),
            ("packets", 5),
            ("packets.observations", 12),
            ("vacuumed_pages", 3)
        ])
    );
    let edges = json!({"observations_scanned": 100, "candidates": 40, "edges_upserted": 30,
        "edges_new": 2, "watermark": 999, "edges_total": 50, "elapsed_ms": 3});
    assert_eq!(
        rows(edges),
        pairs(&[
            ("edges_new", 2),
            ("edges_upserted", 30),
            ("observations_scanned", 100)
        ])
    );
    let backfill = json!({"tasks": {"from-pubkey": {"scanned": 9, "updated": 7, "remaining": 1}}});
    assert_eq!(
        rows(backfill),
        pairs(&[("from-pubkey.scanned", 9), ("from-pubkey.updated", 7)])
    );
    let migrate = json!({"applied": ["a", "b"], "already": 4});
    assert_eq!(rows(migrate), pairs(&[("applied", 2)]));
    let dry = json!({"deleted": {"transmissions": 5}, "dry_run": true});
    assert!(rows(dry).is_empty());
}

/// The transmissions counted in `corescope_rows_total`.
fn tx_rows(samples: &[Sample]) -> Option<f64> {
    value(samples, ROWS, Some(("kind", "transmissions")))
}

#[test]
fn success_then_failure_keeps_last_success_and_state() {
    let j = obj(
        json!({"deleted": {"transmissions": 5}, "max_lock_hold_ms": 250.0,
        "complete": true, "tasks": {"path_json": {"remaining": 8}}}),
    );
    let first = derive(&run("prune", 0, Some(&j)), &[]);
    assert_eq!(value(&first, LAST_SUCCESS, None), Some(1000.0));
    assert_eq!(value(&first, LAST_RUN, None), Some(1000.0));
    assert_eq!(value(&first, DURATION, None), Some(1.5));
    assert_eq!(tx_rows(&first), Some(5.0));
    assert_eq!(value(&first, LOCK_HOLD, None), Some(0.25));
    assert_eq!(
        value(&first, PENDING_BACKFILL, Some(("task", "path-json"))),
        Some(8.0)
    );

    let mut second_run = run("prune", 0, Some(&j));
    second_run.now = 2000.0;
    let second = derive(&second_run, &first);
    assert_eq!(tx_rows(&second), Some(10.0));

    let mut failed = run("prune", 75, None);
    failed.now = 3000.0;
    let third = derive(&failed, &second);
    assert_eq!(value(&third, LAST_RUN, None), Some(3000.0));
    assert_eq!(value(&third, LAST_SUCCESS, None), Some(2000.0));
    assert_eq!(value(&third, EXIT_CODE, None), Some(75.0));
    assert_eq!(tx_rows(&third), Some(10.0));
    assert_eq!(value(&third, LOCK_HOLD, None), Some(0.25));

    let not_ready = derive(&run("prune", 3, None), &[]);
    assert_eq!(value(&not_ready, READY, None), Some(0.0));
    assert_eq!(value(&not_ready, LAST_SUCCESS, None), Some(0.0));
}

#[test]
fn check_series() {
    let j = obj(
        json!({"ready": false, "pending_migrations": ["x"], "warnings": [{"code": "a"}, {"code": "b"}],
        "pending_backfills": {"from_pubkey": 3, "resolved_path": 0}, "deleted_things": 4}),
    );
    let s = derive(&run("check", 3, Some(&j)), &[]);
    assert_eq!(value(&s, READY, None), Some(0.0));
    assert_eq!(value(&s, PENDING_MIGRATIONS, None), Some(1.0));
    assert_eq!(value(&s, WARNINGS, None), Some(2.0));
    assert_eq!(
        value(&s, PENDING_BACKFILL, Some(("task", "from-pubkey"))),
        Some(3.0)
    );
    assert_eq!(
        value(&s, PENDING_BACKFILL, Some(("task", "resolved-path"))),
        Some(0.0)
    );
    // Read-only commands count no rows.
    assert!(!s.iter().any(|x| x.name == ROWS));
}

#[test]
fn render_parse_roundtrip_and_grouping() {
    let j = obj(json!({"deleted": {"a\"b\\c": 1}, "ready": true}));
    let mut all = derive(&run("prune", 0, Some(&j)), &[]);
    all.extend(derive(&run("check", 0, Some(&j)), &[]));
    let text = render(&all);
    assert!(!text.contains("1000.25"), "no fractional timestamps");
    let back = parse(&text);
    assert_eq!(back.len(), all.len());
    for s in &all {
        assert!(back.contains(s), "{s:?} lost in {text}");
    }
    // Each family appears in one contiguous block with one HELP and TYPE.
    let mut seen = Vec::new();
    let mut last = String::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap().to_string();
        if name != last {
            assert!(!seen.contains(&name), "{name} split in {text}");
            seen.push(name.clone());
            last = name;
        }
    }
    for (name, ..) in FAMILIES {
        assert!(text.matches(&format!("# TYPE {name} ")).count() <= 1);
    }
    assert_eq!(
        parse_sample("x_total 5 1700000000000"),
        Some(Sample {
            name: "x_total".into(),
            labels: BTreeMap::new(),
            value: 5.0
        })
    );
    assert_eq!(parse_sample("broken{a=\"x} 1"), None);
}

#[test]
#[allow(clippy::float_cmp)] // the values are small whole numbers, exact in f64
fn shared_file_keeps_other_commands() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corescope.prom");
    let j = obj(json!({"deleted": {"transmissions": 5}}));
    write(&path, NO_DB, &run("prune", 0, Some(&j))).unwrap();
    let c = obj(json!({"ready": true}));
    write(&path, NO_DB, &run("check", 0, Some(&c))).unwrap();
    write(&path, NO_DB, &run("prune", 1, None)).unwrap();
    let s = parse(&std::fs::read_to_string(&path).unwrap());
    let prune_rows = s
        .iter()
        .find(|x| x.name == ROWS && x.command() == Some("prune"))
        .unwrap();
    assert_eq!(prune_rows.value, 5.0);
    let ready = s
        .iter()
        .find(|x| x.name == READY && x.command() == Some("check"))
        .unwrap();
    assert_eq!(ready.value, 1.0);
    let exit = s
        .iter()
        .find(|x| x.name == EXIT_CODE && x.command() == Some("prune"))
        .unwrap();
    assert_eq!(exit.value, 1.0);
    // Only the file and its hidden lock file remain (no temp files).
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec![".corescope.prom.lock", "corescope.prom"]);
}

#[test]
fn every_series_of_a_run_carries_its_db_and_free_space_is_a_gauge() {
    let j = obj(json!({"complete": true, "vacuumed_pages": 4,
        "free_space": {"free_pages": 10, "free_bytes": 40960, "days_to_return": 1}}));
    let mut r = run("vacuum", 0, Some(&j));
    r.db = "/srv/a.db";
    let s = derive(&r, &[]);
    assert!(s
        .iter()
        .all(|x| x.labels.get("db").map(String::as_str) == Some("/srv/a.db")));
    assert!(s.iter().all(|x| x.belongs_to("vacuum", "/srv/a.db")));
    assert!(!s.iter().any(|x| x.belongs_to("vacuum", "/srv/b.db")));
    let gauge = |s: &[Sample], n: &str| s.iter().find(|x| x.name == n).map(|x| x.value);
    assert_eq!(gauge(&s, FREE_PAGES), Some(10.0));
    assert_eq!(gauge(&s, FREE_DAYS), Some(1.0));
    // The second run adds the pages it freed, never the free pages.
    let s2 = derive(&r, &s);
    assert_eq!(
        s2.iter()
            .find(|x| x.name == ROWS
                && x.labels.get("kind").map(String::as_str) == Some("vacuumed_pages"))
            .map(|x| x.value),
        Some(8.0)
    );
    assert_eq!(gauge(&s2, FREE_PAGES), Some(10.0));
}
