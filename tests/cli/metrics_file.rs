//! `--metrics-file` for node_exporter's textfile collector: valid Prometheus text (promtool where
//! installed), shared by commands, last success kept on failure, replaced
//! atomically under a concurrent reader.

use crate::harness::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;

/// `name{labels}` → value, from the file (labels as written, without the
/// `db` label, which must be an absolute path).
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (without_db(k), v.parse::<f64>().unwrap())
        })
        .collect()
}

/// A series name with its `db="..."` label removed (asserted absolute).
fn without_db(series: &str) -> String {
    let Some(at) = series.find(",db=\"") else {
        return series.to_string();
    };
    let rest = &series[at + 5..];
    let end = rest.find('"').expect("closing quote of the db label");
    assert!(rest.starts_with('/'), "db label is not absolute: {series}");
    format!("{}{}", &series[..at], &rest[end + 1..])
}

fn run(args: &[&str], db: &Path, metrics: &Path) -> i32 {
    let out = bin()
        .env_remove("CORESCOPE_METRICS_FILE")
        .args(args)
        .arg("--db")
        .arg(db)
        .arg("--metrics-file")
        .arg(metrics)
        .output()
        .unwrap();
    out.status.code().unwrap()
}

fn promtool_check(path: &Path) {
    let Ok(found) = std::process::Command::new("promtool")
        .arg("--version")
        .output()
    else {
        println!("SKIP promtool check: promtool not installed (Debian package prometheus; .ci/run installs it)");
        return;
    };
    assert!(found.status.success());
    let out = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(path).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(path).unwrap()
    );
}

#[test]
fn shared_file_valid_and_failures_keep_last_success() {
    let dir = tempfile::tempdir().unwrap();
    let db = legacy_copy(dir.path());
    let m = dir.path().join("corescope.prom");

    // Legacy database: not ready.
    assert_eq!(run(&["check", "-q", "--deep"], &db, &m), 3);
    let s = samples(&std::fs::read_to_string(&m).unwrap());
    assert_eq!(s[r#"corescope_schema_ready{command="check"}"#], 0.0);
    assert_eq!(s[r#"corescope_last_exit_code{command="check"}"#], 3.0);
    assert_eq!(
        s[r#"corescope_last_success_timestamp_seconds{command="check"}"#],
        0.0
    );
    assert!(s[r#"corescope_pending_migrations{command="check"}"#] > 0.0);

    assert_eq!(run(&["migrate", "-q"], &db, &m), 0);
    // --deep: the exact pending backfill counts (a whole-table scan).
    assert_eq!(run(&["check", "-q", "--deep"], &db, &m), 0);
    let text = std::fs::read_to_string(&m).unwrap();
    promtool_check(&m);
    assert!(!text.contains("\r"));
    let s = samples(&text);
    assert_eq!(s[r#"corescope_schema_ready{command="check"}"#], 1.0);
    assert_eq!(s[r#"corescope_schema_ready{command="migrate"}"#], 1.0);
    let applied = s[r#"corescope_rows_total{command="migrate",kind="applied"}"#];
    assert!(applied > 0.0);
    assert!(s.contains_key(r#"corescope_max_lock_hold_seconds{command="migrate"}"#));
    assert!(s.contains_key(r#"corescope_run_duration_seconds{command="migrate"}"#));
    assert!(
        s.contains_key(r#"corescope_pending_backfill_rows{command="check",task="from-pubkey"}"#)
    );
    let success = s[r#"corescope_last_success_timestamp_seconds{command="check"}"#];
    assert!(success > 1.7e9);
    assert_eq!(
        s[r#"corescope_last_run_timestamp_seconds{command="check"}"#],
        success
    );

    // A failed run (not a database) updates the run, keeps the last success
    // and the other command's series.
    // The same database path (series are per database): the file is
    // moved aside and garbage put in its place for one run.
    let aside = dir.path().join("aside");
    std::fs::create_dir(&aside).unwrap();
    let name = db.file_name().unwrap().to_string_lossy().into_owned();
    let sidecars = [name.clone(), format!("{name}-wal"), format!("{name}-shm")];
    for f in &sidecars {
        let _ = std::fs::rename(dir.path().join(f), aside.join(f));
    }
    std::fs::write(&db, "not a database\n".repeat(20)).unwrap();
    assert_eq!(run(&["check", "-q"], &db, &m), 1);
    for f in &sidecars {
        let _ = std::fs::remove_file(dir.path().join(f));
        let _ = std::fs::rename(aside.join(f), dir.path().join(f));
    }
    let text = std::fs::read_to_string(&m).unwrap();
    promtool_check(&m);
    let s2 = samples(&text);
    assert_eq!(s2[r#"corescope_last_exit_code{command="check"}"#], 1.0);
    assert_eq!(
        s2[r#"corescope_last_success_timestamp_seconds{command="check"}"#],
        success
    );
    assert!(s2[r#"corescope_last_run_timestamp_seconds{command="check"}"#] >= success);
    assert_eq!(s2[r#"corescope_schema_ready{command="check"}"#], 1.0);
    assert_eq!(
        s2[r#"corescope_rows_total{command="migrate",kind="applied"}"#],
        applied
    );
    // Counters add up over runs; a no-op migrate adds 0.
    assert_eq!(run(&["migrate", "-q"], &db, &m), 0);
    let s3 = samples(&std::fs::read_to_string(&m).unwrap());
    assert_eq!(
        s3[r#"corescope_rows_total{command="migrate",kind="applied"}"#],
        applied
    );

    // No timestamps on samples: exactly "name{labels} value".
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert_eq!(line.split(' ').count(), 2, "{line}");
    }
    // Nothing but the file and its hidden lock file was added to the directory.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("prom"))
        .collect();
    names.sort();
    assert_eq!(names, vec![".corescope.prom.lock", "corescope.prom"]);
}

#[test]
fn a_reader_never_sees_a_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_db(dir.path(), "a.db");
    let m = dir.path().join("corescope.prom");
    // Series of another command make the file big (~300 KB), so that a
    // non-atomic rewrite would be caught in the middle.
    let other: String = (0..6000)
        .map(|i| format!("corescope_rows_total{{command=\"other\",kind=\"k{i}\"}} {i}\n"))
        .collect();
    std::fs::write(&m, other).unwrap();
    assert_eq!(run(&["check", "-q"], &db, &m), 0);
    let complete = std::fs::read_to_string(&m).unwrap();
    let families = complete.matches("# TYPE ").count();
    let lines = complete.lines().count();
    assert!(lines > 6000);

    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        let m = m.clone();
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let text = std::fs::read_to_string(&m).unwrap();
                assert!(text.ends_with('\n'), "partial file: {text:?}");
                assert!(
                    text.matches("# TYPE ").count() >= families && text.lines().count() >= lines,
                    "partial file ({} bytes)",
                    text.len()
                );
                // Every sample line is whole.
                let _ = samples(&text);
                reads += 1;
            }
            reads
        })
    };
    for i in 0..12 {
        let cmd = if i % 2 == 0 { "check" } else { "migrate" };
        assert_eq!(run(&[cmd, "-q"], &db, &m), 0);
    }
    stop.store(true, Ordering::Relaxed);
    let reads = reader.join().expect("reader saw a partial file");
    assert!(reads > 0);
    promtool_check(&m);
    // The other command's series survived every rewrite.
    let s = samples(&std::fs::read_to_string(&m).unwrap());
    assert_eq!(
        s[r#"corescope_rows_total{command="other",kind="k5999"}"#],
        5999.0
    );
}

#[test]
fn metrics_file_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_db(dir.path(), "a.db");
    let m = dir.path().join("env.prom");
    bin()
        .env("CORESCOPE_METRICS_FILE", &m)
        .args(["check", "-q", "--db"])
        .arg(&db)
        .assert()
        .code(0);
    let s = samples(&std::fs::read_to_string(&m).unwrap());
    assert_eq!(s[r#"corescope_schema_ready{command="check"}"#], 1.0);
}

#[test]
fn an_unwritable_metrics_path_is_logged_and_keeps_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_db(dir.path(), "a.db");
    let out = bin()
        .env_remove("CORESCOPE_METRICS_FILE")
        .args(["check", "-q", "--db"])
        .arg(&db)
        .arg("--metrics-file")
        .arg(dir.path().join("missing-dir/corescope.prom"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("metrics not written"), "{err}");
}

/// Every series of a file with the `db` label kept (`name{labels}` → value).
fn raw_samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse::<f64>().unwrap())
        })
        .collect()
}

#[test]
fn two_databases_share_one_file_and_counters_count_freed_pages() {
    let dir = tempfile::tempdir().unwrap();
    let a = fresh_db(dir.path(), "a.db");
    let b = fresh_db(dir.path(), "b.db");
    let (ca, cb) = (
        std::fs::canonicalize(&a).unwrap(),
        std::fs::canonicalize(&b).unwrap(),
    );
    let m = dir.path().join("shared.prom");
    let ready = |db: &Path| {
        format!(
            "corescope_schema_ready{{command=\"check\",db=\"{}\"}}",
            db.display()
        )
    };
    assert_eq!(run(&["check", "-q"], &a, &m), 0);
    assert_eq!(run(&["check", "-q"], &b, &m), 0);
    promtool_check(&m);
    let s = raw_samples(&std::fs::read_to_string(&m).unwrap());
    assert_eq!(s.get(&ready(&ca)), Some(&1.0), "{s:#?}");
    assert_eq!(s.get(&ready(&cb)), Some(&1.0), "{s:#?}");
    // Every series names its database.
    assert!(s.keys().all(|k| k.contains(",db=\"/")), "{s:#?}");
    // A run on a replaces a's series only.
    let b_before: BTreeMap<String, f64> = s
        .iter()
        .filter(|(k, _)| k.contains(&format!("db=\"{}\"", cb.display())))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    assert_eq!(run(&["check", "-q"], &a, &m), 0);
    let s2 = raw_samples(&std::fs::read_to_string(&m).unwrap());
    for (k, v) in &b_before {
        assert_eq!(s2.get(k), Some(v), "{k}");
    }
    // a's series are there once each (replaced, not appended).
    let a_lines = std::fs::read_to_string(&m)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("corescope_schema_ready") && l.contains(&*ca.to_string_lossy()))
        .count();
    assert_eq!(a_lines, 1);
    assert_eq!(s2.len(), s.len());

    // corescope_rows_total{kind="vacuumed_pages"} adds the pages each run
    // actually freed (here none: nothing is free), never the page budget.
    for _ in 0..2 {
        assert_eq!(run(&["vacuum", "-q", "--pages", "500"], &a, &m), 0);
    }
    let s3 = raw_samples(&std::fs::read_to_string(&m).unwrap());
    let key = format!(
        "corescope_rows_total{{command=\"vacuum\",db=\"{}\",kind=\"vacuumed_pages\"}}",
        ca.display()
    );
    assert_eq!(s3.get(&key), Some(&0.0), "{s3:#?}");
    assert!(
        !s3.keys().any(|k| k.contains("kind=\"vacuum_pages\"")),
        "{s3:#?}"
    );
    let free = format!(
        "corescope_free_pages{{command=\"vacuum\",db=\"{}\"}}",
        ca.display()
    );
    assert_eq!(s3.get(&free), Some(&0.0), "{s3:#?}");
    promtool_check(&m);
}
