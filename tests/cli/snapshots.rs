//! Pinned behaviour: what users, scripts and `--metrics-file` see must not
//! change when the code is moved around.
//!
//! - `json_shapes.json`: the keys and JSON types (not the values: timings,
//!   paths and timestamps vary) of the `--json` report of every command, and
//!   its exit code, on a small synthetic database with a fixed seed.
//! - `metrics.txt`: the metric names, types and label sets each write
//!   command (and `check`) writes to `--metrics-file`.
//! - `synth_golden.json`: a SHA-256 of a canonical dump of every table (and
//!   the schema and database settings) that `synth` creates for a fixed seed,
//!   size and `--end`, with the row counts to help read a mismatch.
//!
//! The files are under `tests/cli/snapshots/`. After an intended change,
//! rewrite them with `UPDATE_SNAPSHOTS=1 cargo test --test cli snapshots::`
//! and review the diff.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::harness::Corescope;

/// "Now" of every command that has `--now`, and synth's `--end`.
const NOW: &str = "2026-05-17T18:12:00Z";

fn snapshot_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/cli/snapshots")
        .join(name)
}

/// Compare `got` with the checked-in snapshot `name`, or rewrite it when
/// `UPDATE_SNAPSHOTS` is set.
fn assert_snapshot(name: &str, got: &str) {
    let path = snapshot_path(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some_and(|v| !v.is_empty()) {
        std::fs::create_dir_all(path.parent().expect("snapshot directory"))
            .expect("create tests/cli/snapshots");
        std::fs::write(&path, got).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "read {}: {e}; create it with UPDATE_SNAPSHOTS=1 cargo test --test cli snapshots::",
            path.display()
        )
    });
    if want != got {
        let first = want
            .lines()
            .zip(got.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(want.lines().count().min(got.lines().count()));
        panic!(
            "{} differs from this build's output from line {} on:\n  want: {:?}\n  got:  {:?}\n\
             If the change is intended, rewrite it with \
             UPDATE_SNAPSHOTS=1 cargo test --test cli snapshots:: and review the diff.\n\
             Whole output:\n{got}",
            path.display(),
            first + 1,
            want.lines().nth(first),
            got.lines().nth(first)
        );
    }
}

/// The type skeleton of a JSON value: objects keep their keys, scalars
/// become their type name ("string", "integer", "number" (a float), "bool",
/// "null"), arrays list the distinct shapes of their elements (elements of
/// the same kind are merged: objects with the same keys key by key, scalars
/// as "a|b").
fn shape(v: &Value) -> Value {
    match v {
        Value::Null => json!("null"),
        Value::Bool(_) => json!("bool"),
        Value::Number(n) if n.is_f64() => json!("number"),
        Value::Number(_) => json!("integer"),
        Value::String(_) => json!("string"),
        Value::Array(items) => {
            let shapes: Vec<Value> = items.iter().map(shape).collect();
            shape_of_shapes(shapes.iter())
        }
        // A map keyed by data (a degree distribution: "1", "2", "3-4", ...)
        // has one shape for all its keys: which keys appear depends on the
        // data (the demo's window ends now).
        Value::Object(m)
            if !m.is_empty()
                && m.keys()
                    .all(|k| k.starts_with(|c: char| c.is_ascii_digit())) =>
        {
            let shapes: Vec<Value> = m.values().map(shape).collect();
            let merged = shape_of_shapes(shapes.iter());
            let one = match merged {
                Value::Array(mut kinds) if kinds.len() == 1 => kinds.remove(0),
                other => other,
            };
            json!({ "<data key>": one })
        }
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
    }
}

/// Whether two element shapes are merged into one: objects with the same
/// keys, two arrays, or two scalars.
fn same_kind(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => x.keys().eq(y.keys()),
        (Value::Array(_), Value::Array(_)) => true,
        (Value::String(_), Value::String(_)) => true,
        _ => false,
    }
}

/// Union of two shapes of the same kind (see [`same_kind`]); anything else
/// becomes `{"one_of": [a, b]}`.
fn merge(a: &Value, b: &Value) -> Value {
    match (a, b) {
        _ if a == b => a.clone(),
        (Value::Object(x), Value::Object(y)) if x.keys().eq(y.keys()) => Value::Object(
            x.iter()
                .map(|(k, v)| (k.clone(), merge(v, &y[k])))
                .collect(),
        ),
        (Value::Array(x), Value::Array(y)) => shape_of_shapes(x.iter().chain(y.iter())),
        (Value::String(x), Value::String(y)) => {
            let mut parts: Vec<&str> = x.split('|').chain(y.split('|')).collect();
            parts.sort_unstable();
            parts.dedup();
            json!(parts.join("|"))
        }
        _ => {
            let mut alts: Vec<Value> = Vec::new();
            for v in [a, b] {
                match v.get("one_of").and_then(Value::as_array) {
                    Some(inner) => alts.extend(inner.iter().cloned()),
                    None => alts.push(v.clone()),
                }
            }
            alts.dedup();
            json!({ "one_of": alts })
        }
    }
}

/// The array shape of already-computed element shapes.
fn shape_of_shapes<'a>(shapes: impl Iterator<Item = &'a Value>) -> Value {
    let mut kinds: Vec<Value> = Vec::new();
    for s in shapes {
        match kinds.iter_mut().find(|k| same_kind(k, s)) {
            Some(k) => *k = merge(k, s),
            None => kinds.push(s.clone()),
        }
    }
    Value::Array(kinds)
}

/// One command line of the pinned run: its exit code and report shape.
fn case(shapes: &mut BTreeMap<String, Value>, name: &str, code: i32, report: &Value) {
    shapes.insert(
        name.to_string(),
        json!({"exit_code": code, "shape": shape(report)}),
    );
}

/// Metric names, types and label sets of a metrics file (values dropped),
/// in file order.
fn metric_skeleton(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with("# HELP"))
        .map(|l| match l.strip_prefix('#') {
            Some(_) => l.to_string(),
            None => {
                let series = l.rsplit_once(' ').map_or(l, |(series, _value)| series);
                // The db label's value is a temporary path: keep the label.
                match series.find(",db=\"") {
                    Some(at) => {
                        let rest = &series[at + 5..];
                        let end = rest.find('"').map_or(rest.len(), |e| e + 1);
                        format!("{},db=<db>{}", &series[..at], &rest[end..])
                    }
                    None => series.to_string(),
                }
            }
        })
        .collect()
}

#[test]
fn json_reports_and_metrics_keep_their_shape() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("snap.db");
    let mut shapes = BTreeMap::new();
    let mut metrics = BTreeMap::new();

    // A seed-schema database with work for migrate and every backfill.
    let v = Corescope::new()
        .args([
            "--json", "synth", "--schema", "seed", "--seed", "7", "--end", NOW,
        ])
        .args([
            "--nodes",
            "30",
            "--observers",
            "5",
            "--transmissions",
            "300",
        ])
        .args([
            "--days",
            "5",
            "--null-from-pubkey",
            "0.5",
            "--null-path-json",
            "0.3",
        ])
        .args(["--null-resolved-path", "0.5"])
        .db(&db)
        .json();
    case(&mut shapes, "synth", 0, &v);

    // Every command line, with the exit code it has at that point.
    let steps: &[(&str, &[&str], i32)] = &[
        ("check (schema not ready)", &["check"], 3),
        ("migrate --dry-run", &["migrate", "--dry-run"], 0),
        ("migrate", &["migrate"], 0),
        ("check (backfills pending)", &["check"], 0),
        ("backfill --dry-run", &["backfill", "--dry-run"], 0),
        ("backfill", &["backfill"], 0),
        ("check", &["check"], 0),
        ("check --integrity", &["check", "--integrity"], 0),
        ("build-edges", &["build-edges"], 0),
        ("build-edges (nothing new)", &["build-edges"], 0),
        ("build-edges --rebuild", &["build-edges", "--rebuild"], 0),
        ("graph stats", &["graph", "stats", "--now", NOW], 0),
        ("prune --dry-run", &["prune", "--dry-run", "--now", NOW], 0),
        ("prune", &["prune", "--now", NOW], 0),
        ("vacuum", &["vacuum"], 0),
        ("vacuum --full", &["vacuum", "--full"], 0),
    ];
    for (i, (name, args, code)) in steps.iter().enumerate() {
        let prom = dir.path().join(format!("{i:02}.prom"));
        // graph is read-only and takes no --metrics-file; every other command writes metrics.
        let mut run = Corescope::new().arg("--json").args(*args);
        if args[0] != "graph" {
            run = run.arg("--metrics-file").arg(&prom);
        }
        let v = run.db(&db).expect_code(*code).json();
        case(&mut shapes, name, *code, &v);
        let text = std::fs::read_to_string(&prom).unwrap_or_default();
        assert_eq!(text.is_empty(), args[0] == "graph", "{name}: metrics file");
        if !text.is_empty() {
            metrics.insert(name.to_string(), metric_skeleton(&text));
        }
    }

    let v = Corescope::new()
        .args(["--json", "backup"])
        .arg(dir.path().join("snap-copy.db"))
        .db(&db)
        .json();
    case(&mut shapes, "backup", 0, &v);

    // graph dump's JSON is the graph itself (no --json needed).
    let out = Corescope::new()
        .args(["graph", "dump", "--format", "json", "--now", NOW])
        .db(&db)
        .stdout();
    let v: Value = serde_json::from_str(&out).expect("graph dump --format json is JSON");
    case(&mut shapes, "graph dump --format json", 0, &v);

    let created = dir.path().join("created.db");
    let prom = dir.path().join("create.prom");
    let v = Corescope::new()
        .args(["--json", "migrate", "--create", "--metrics-file"])
        .arg(&prom)
        .db(&created)
        .json();
    case(&mut shapes, "migrate --create", 0, &v);
    let text = std::fs::read_to_string(&prom).expect("migrate --create writes metrics");
    metrics.insert("migrate --create".into(), metric_skeleton(&text));

    let demo = dir.path().join("demo");
    std::fs::create_dir(&demo).unwrap();
    let v = Corescope::new()
        .args(["--json", "demo", "--size", "2000", "--dir"])
        .arg(&demo)
        .json();
    case(&mut shapes, "demo", 0, &v);

    let mut text = serde_json::to_string_pretty(&shapes).expect("serialise shapes");
    text.push('\n');
    assert_snapshot("json_shapes.json", &text);

    let mut text = String::new();
    for (name, lines) in &metrics {
        text.push_str(&format!("== {name}\n"));
        for l in lines {
            text.push_str(l);
            text.push('\n');
        }
    }
    assert_snapshot("metrics.txt", &text);
}

/// One SQL value, typed and unambiguous.
fn canonical(v: ValueRef<'_>) -> String {
    match v {
        ValueRef::Null => "NULL".into(),
        ValueRef::Integer(i) => format!("i:{i}"),
        ValueRef::Real(f) => format!("r:{f:?}"),
        ValueRef::Text(t) => format!("t:{}", json!(String::from_utf8_lossy(t))),
        ValueRef::Blob(b) => format!("b:{}", hex::encode(b)),
    }
}

/// SHA-256 of a canonical dump of the whole database (settings, schema, and
/// every row of every table with its rowid, in sorted order) and the row
/// count of each table.
fn canonical_dump(db: &Path) -> (String, BTreeMap<String, usize>) {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap_or_else(|e| panic!("open {}: {e}", db.display()));
    let mut h = Sha256::new();
    let mut line = |s: String| {
        h.update(s.as_bytes());
        h.update(b"\n");
    };
    for p in [
        "journal_mode",
        "auto_vacuum",
        "user_version",
        "application_id",
        "page_size",
    ] {
        let v: String = conn
            .query_row(
                &format!("SELECT CAST(\"{p}\" AS TEXT) FROM pragma_{p}"),
                [],
                |r| r.get(0),
            )
            .unwrap_or_else(|e| panic!("pragma {p}: {e}"));
        line(format!("pragma {p} = {v}"));
    }
    let mut st = conn
        .prepare(
            "SELECT type, name, tbl_name, COALESCE(sql, '') FROM sqlite_master \
             ORDER BY type, name",
        )
        .unwrap();
    let objects: Vec<(String, String, String, String)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut counts = BTreeMap::new();
    for (kind, name, tbl, sql) in &objects {
        line(format!("{kind} {name} on {tbl}: {sql}"));
    }
    for (kind, name, ..) in &objects {
        if kind != "table" {
            continue;
        }
        let mut q = conn
            .prepare(&format!("SELECT rowid, * FROM \"{name}\""))
            .or_else(|_| conn.prepare(&format!("SELECT * FROM \"{name}\"")))
            .unwrap();
        let n = q.column_count();
        let mut rows: Vec<String> = q
            .query_map([], |r| {
                (0..n)
                    .map(|i| r.get_ref(i).map(canonical))
                    .collect::<Result<Vec<_>, _>>()
                    .map(|v| v.join(","))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        rows.sort();
        line(format!("table {name}: {} rows", rows.len()));
        counts.insert(name.clone(), rows.len());
        for r in rows {
            line(r);
        }
    }
    (hex::encode(h.finalize()), counts)
}

#[test]
fn synth_output_for_a_fixed_seed_is_golden() {
    let dir = tempfile::tempdir().unwrap();
    let size = [
        "--seed",
        "42",
        "--end",
        NOW,
        "--nodes",
        "60",
        "--observers",
        "6",
        "--transmissions",
        "500",
        "--days",
        "3",
    ];
    let variants: &[(&str, &[&str])] = &[
        ("latest", &[]),
        ("seed", &["--schema", "seed", "--null-path-json", "0.2"]),
        (
            "legacy with anomalies",
            &[
                "--schema",
                "legacy",
                "--anomalies",
                "--null-from-pubkey",
                "0.3",
                "--null-resolved-path",
                "0.3",
                "--obs-raw-hex",
                "0.5",
            ],
        ),
    ];
    let mut golden = BTreeMap::new();
    for (i, (name, extra)) in variants.iter().enumerate() {
        let db = dir.path().join(format!("golden{i}.db"));
        Corescope::new()
            .args(["-q", "synth"])
            .args(size)
            .args(*extra)
            .db(&db)
            .run();
        let (sha, rows) = canonical_dump(&db);
        golden.insert(name.to_string(), json!({"sha256": sha, "rows": rows}));
    }
    let mut text = serde_json::to_string_pretty(&golden).expect("serialise golden");
    text.push('\n');
    assert_snapshot("synth_golden.json", &text);
}

#[test]
fn shapes_merge_elements_of_one_kind_and_keep_other_kinds_apart() {
    let v = json!({
        "a": [{"x": 1, "y": null}, {"x": 2.5, "y": "s"}, {"z": true}],
        "b": [],
        "c": [1, "s", [1], [null]],
        "d": [{"x": [1]}, {"x": {"k": 1}}],
    });
    assert_eq!(
        shape(&v),
        json!({
            "a": [{"x": "integer|number", "y": "null|string"}, {"z": "bool"}],
            "b": [],
            "c": ["integer|string", ["integer|null"]],
            "d": [{"x": {"one_of": [["integer"], {"k": "integer"}]}}],
        })
    );
}

#[test]
fn metric_skeleton_drops_values_and_help() {
    let text = "# HELP m Help.\n# TYPE m gauge\nm{command=\"prune\",kind=\"nodes\"} 12.5\n";
    assert_eq!(
        metric_skeleton(text),
        ["# TYPE m gauge", "m{command=\"prune\",kind=\"nodes\"}"]
    );
}
