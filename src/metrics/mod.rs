//! `--metrics-file PATH`: Prometheus text-format metrics for node_exporter's
//! textfile collector (operators' monitoring of the timer runs).
//!
//! One file may be shared by all commands and databases (recommended:
//! `/var/lib/prometheus/node-exporter/corescope.prom`): every series carries a
//! `command` label and a `db` label (the database's absolute path), and a run
//! rewrites only the series of its own command on its own database, keeping
//! the others as they are. Giving each command its own file
//! works the same way (the file then only holds that command's series). The
//! read-modify-write happens under an exclusive flock on a hidden lock file in
//! the same directory (`.<name>.lock`), and the file is replaced atomically:
//! written to a hidden temp file in the same directory, fsynced, renamed over
//! the old one. A reader (node_exporter) therefore sees the old or the new
//! file, never a partial one. No sample carries a timestamp.
//!
//! Everything is derived from the command's JSON report, generically, so a new
//! command needs no code here:
//! - `max_lock_hold_ms` → `corescope_max_lock_hold_seconds`
//! - `ready` (bool) → `corescope_schema_ready`; a run that failed with exit 3
//!   (schema not ready) → 0
//! - `complete` (bool) → `corescope_run_complete`
//! - `pending_migrations` (list) → `corescope_pending_migrations` (its length)
//! - `warnings` (list) → `corescope_warnings` (its length)
//! - `pending_backfills` (task → rows) and `tasks.<task>.remaining` →
//!   `corescope_pending_backfill_rows{task}` (task names as on the command
//!   line, `from-pubkey`)
//! - `free_space.free_pages`, `.free_bytes`, `.days_to_return` (prune,
//!   vacuum, check) → `corescope_free_pages`, `corescope_free_bytes`,
//!   `corescope_vacuum_runs_to_return`
//! - `jobs` (check's job state): `jobs.build_edges.lag` →
//!   `corescope_build_edges_lag_observations`;
//!   `jobs.backfill.<task>.rows_past_cursor` / `.skipped` →
//!   `corescope_backfill_rows_past_cursor{task}` /
//!   `corescope_backfill_rows_skipped{task}`;
//!   `jobs.prune.kinds.<kind>.due_now` → `corescope_prune_due{kind}`; each
//!   job's `last_run` / `last_complete` →
//!   `corescope_job_last_run_timestamp_seconds{job}` /
//!   `corescope_job_last_run_complete{job}` (a job that never ran: no series)
//! - rows processed, added to the counter `corescope_rows_total{kind}` (write
//!   commands only, never for `"dry_run": true`): every integer of
//!   `deleted.<kind>`; every integer of `kinds.<kind>.also_deleted.<table>`
//!   as kind `<kind>.<table>` (unless `<table>` is a kind in `deleted`:
//!   counted there); `tasks.<task>.scanned`/`.updated` as kind
//!   `<task>.scanned`/`<task>.updated`; the length of `applied` as kind
//!   `applied`; top-level integers whose key ends in one of [`ROW_SUFFIXES`]
//!   (`observations_scanned`, `edges_upserted`, `edges_new`, ...) and the
//!   pages actually freed ([`PAGE_COUNTS`]: `vacuumed_pages`), kind = the key.
//!
//! A failed run (no report) updates the run timestamp, duration and exit code,
//! keeps `corescope_last_success_timestamp_seconds` (0 if the command never
//! succeeded, so an age alert fires) and keeps the other series of the
//! previous run.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value};

mod file;
mod text;

pub use file::{after_run, lock_path, write};
pub use text::{parse, parse_sample, render};

/// Top-level JSON keys ending in one of these count processed rows.
pub const ROW_SUFFIXES: &[&str] = &[
    "_scanned",
    "_upserted",
    "_new",
    "_inserted",
    "_updated",
    "_deleted",
    "_moved",
];

/// Top-level JSON keys that count pages a run gave back to the filesystem
/// (pages actually freed, never a configured amount).
pub const PAGE_COUNTS: &[&str] = &["vacuumed_pages"];

const LAST_RUN: &str = "corescope_last_run_timestamp_seconds";
const LAST_SUCCESS: &str = "corescope_last_success_timestamp_seconds";
const EXIT_CODE: &str = "corescope_last_exit_code";
const DURATION: &str = "corescope_run_duration_seconds";
const COMPLETE: &str = "corescope_run_complete";
const ROWS: &str = "corescope_rows_total";
const LOCK_HOLD: &str = "corescope_max_lock_hold_seconds";
const READY: &str = "corescope_schema_ready";
const PENDING_MIGRATIONS: &str = "corescope_pending_migrations";
const PENDING_BACKFILL: &str = "corescope_pending_backfill_rows";
const WARNINGS: &str = "corescope_warnings";
const EDGES_LAG: &str = "corescope_build_edges_lag_observations";
const PAST_CURSOR: &str = "corescope_backfill_rows_past_cursor";
const SKIPPED: &str = "corescope_backfill_rows_skipped";
const FREE_PAGES: &str = "corescope_free_pages";
const FREE_BYTES: &str = "corescope_free_bytes";
const FREE_DAYS: &str = "corescope_vacuum_runs_to_return";
const PRUNE_DUE: &str = "corescope_prune_due";
const JOB_LAST_RUN: &str = "corescope_job_last_run_timestamp_seconds";
const JOB_COMPLETE: &str = "corescope_job_last_run_complete";

/// Every metric family corescope writes: name, type, help (in file order).
pub const FAMILIES: &[(&str, &str, &str)] = &[
    (LAST_RUN, "gauge", "Unix time the last run of the command ended."),
    (
        LAST_SUCCESS,
        "gauge",
        "Unix time the last successful (exit 0) run of the command ended; 0 if none yet.",
    ),
    (
        EXIT_CODE,
        "gauge",
        "Exit code of the last run (0 ok, 1 error, 2 usage, 3 schema not ready, 75 busy).",
    ),
    (DURATION, "gauge", "Wall-clock duration of the last run in seconds."),
    (
        COMPLETE,
        "gauge",
        "1 if the last run finished its work, 0 if it stopped early (--max-seconds) and resumes next run.",
    ),
    (
        ROWS,
        "counter",
        "Rows processed by the command, summed over runs (reset when the metrics file is recreated).",
    ),
    (
        LOCK_HOLD,
        "gauge",
        "Longest time one write transaction of the last run held SQLite's write lock, in seconds.",
    ),
    (
        READY,
        "gauge",
        "1 if the schema was ready for the CoreScope server at the last run, else 0.",
    ),
    (
        PENDING_MIGRATIONS,
        "gauge",
        "Named migrations still pending at the last run.",
    ),
    (
        PENDING_BACKFILL,
        "gauge",
        "Rows a backfill task still has to process, as of the last run.",
    ),
    (WARNINGS, "gauge", "Warnings reported by the last run."),
    (
        EDGES_LAG,
        "gauge",
        "Observations not counted into neighbor_edges yet (max id minus the build-edges watermark; an upper bound).",
    ),
    (
        PAST_CURSOR,
        "gauge",
        "Rows after a backfill task's cursor (max id minus the cursor; an upper bound of its work).",
    ),
    (
        SKIPPED,
        "gauge",
        "Rows a backfill task visited but could not fill, since its last --reset.",
    ),
    (FREE_PAGES, "gauge", "Free pages in the database file."),
    (FREE_BYTES, "gauge", "Bytes of free pages in the database file."),
    (
        FREE_DAYS,
        "gauge",
        "Daily incremental vacuums (db.incrementalVacuumPages each) it takes to return the free pages; no series when auto_vacuum is not INCREMENTAL.",
    ),
    (
        PRUNE_DUE,
        "gauge",
        "1 if the oldest row of a retention kind is older than its cut-off (a prune now removes rows).",
    ),
    (
        JOB_LAST_RUN,
        "gauge",
        "Unix time the last run of a job ended, as the job recorded it in the database.",
    ),
    (
        JOB_COMPLETE,
        "gauge",
        "1 if the last run of a job finished its work, 0 if it stopped early.",
    ),
];

/// Families that describe the state seen by the last run; carried over when
/// a run fails without a report.
const STATE_FAMILIES: &[&str] = &[
    COMPLETE,
    LOCK_HOLD,
    READY,
    PENDING_MIGRATIONS,
    PENDING_BACKFILL,
    WARNINGS,
    EDGES_LAG,
    PAST_CURSOR,
    SKIPPED,
    FREE_PAGES,
    FREE_BYTES,
    FREE_DAYS,
    PRUNE_DUE,
    JOB_LAST_RUN,
    JOB_COMPLETE,
];

/// What one run hands to the metrics writer.
#[derive(Debug)]
pub struct RunInfo<'a> {
    pub command: &'a str,
    /// The database as reports name it (absolute): the `db` label of every
    /// series, so that runs on two databases can share one file. Empty: no
    /// `db` label.
    pub db: &'a str,
    /// Write command: its report's row counts feed `corescope_rows_total`.
    pub is_write: bool,
    pub exit_code: i32,
    /// The report's JSON; `None` when the run failed without a report.
    pub json: Option<&'a Map<String, Value>>,
    pub duration: Duration,
    /// Unix time the run ended.
    pub now: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    /// Sorted by label name; always includes `command`.
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    fn new(name: &str, command: &str, extra: Option<(&str, &str)>, value: f64) -> Sample {
        let mut labels = BTreeMap::new();
        labels.insert("command".to_string(), command.to_string());
        if let Some((k, v)) = extra {
            labels.insert(k.to_string(), v.to_string());
        }
        Sample {
            name: name.to_string(),
            labels,
            value,
        }
    }

    fn command(&self) -> Option<&str> {
        self.labels.get("command").map(String::as_str)
    }

    /// Whether this series belongs to runs of `command` on `db`. A series
    /// without a `db` label (written before the label existed) belongs to
    /// every database of the command, so the first run replaces it.
    pub fn belongs_to(&self, command: &str, db: &str) -> bool {
        self.command() == Some(command)
            && self
                .labels
                .get("db")
                .map_or(true, |d| d == db || db.is_empty())
    }
}

// ---------------------------------------------------------------------------
// Derivation (pure).

fn as_count(v: &Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
}

/// `(kind, rows)` processed by a run, from its report (module doc).
pub fn row_counts(json: &Map<String, Value>) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    if json.get("dry_run").and_then(Value::as_bool) == Some(true) {
        return out;
    }
    for (key, v) in json {
        match (key.as_str(), v) {
            ("deleted", Value::Object(m)) => {
                for (kind, n) in m {
                    if let Some(n) = as_count(n) {
                        out.push((kind.clone(), n));
                    }
                }
            }
            ("tasks", Value::Object(m)) => {
                for (task, t) in m {
                    for field in ["scanned", "updated"] {
                        if let Some(n) = t.get(field).and_then(as_count) {
                            out.push((format!("{task}.{field}"), n));
                        }
                    }
                }
            }
            ("kinds", Value::Object(m)) => {
                // Tables that are a kind of their own are in `deleted`.
                let counted = json.get("deleted").and_then(Value::as_object);
                for (kind, k) in m {
                    for (table, n) in k
                        .get("also_deleted")
                        .and_then(Value::as_object)
                        .into_iter()
                        .flatten()
                    {
                        if counted.is_some_and(|d| d.contains_key(table)) {
                            continue;
                        }
                        if let Some(n) = as_count(n) {
                            out.push((format!("{kind}.{table}"), n));
                        }
                    }
                }
            }
            ("applied", Value::Array(a)) => out.push(("applied".to_string(), a.len() as u64)),
            (k, Value::Number(_)) if PAGE_COUNTS.contains(&k) => {
                if let Some(n) = as_count(v) {
                    out.push((k.to_string(), n));
                }
            }
            (k, Value::Number(_)) if ROW_SUFFIXES.iter().any(|s| k.ends_with(s)) => {
                if let Some(n) = as_count(v) {
                    out.push((k.to_string(), n));
                }
            }
            _ => {}
        }
    }
    out
}

/// Backfill task names as on the command line (`from_pubkey` → `from-pubkey`).
fn task_label(key: &str) -> String {
    key.replace('_', "-")
}

/// The state series of a report (everything except the run bookkeeping and rows).
fn state_samples(command: &str, json: &Map<String, Value>) -> Vec<Sample> {
    let mut out = Vec::new();
    let mut push = |name: &str, extra: Option<(&str, &str)>, v: f64| {
        out.push(Sample::new(name, command, extra, v));
    };
    if let Some(ms) = json.get("max_lock_hold_ms").and_then(Value::as_f64) {
        push(LOCK_HOLD, None, ms / 1000.0);
    }
    if let Some(b) = json.get("ready").and_then(Value::as_bool) {
        push(READY, None, f64::from(u8::from(b)));
    }
    if let Some(b) = json.get("complete").and_then(Value::as_bool) {
        push(COMPLETE, None, f64::from(u8::from(b)));
    }
    if let Some(a) = json.get("pending_migrations").and_then(Value::as_array) {
        push(PENDING_MIGRATIONS, None, a.len() as f64);
    }
    if let Some(a) = json.get("warnings").and_then(Value::as_array) {
        push(WARNINGS, None, a.len() as f64);
    }
    let mut pending: BTreeMap<String, u64> = BTreeMap::new();
    if let Some(m) = json.get("pending_backfills").and_then(Value::as_object) {
        for (task, n) in m {
            if let Some(n) = as_count(n) {
                pending.insert(task_label(task), n);
            }
        }
    }
    if let Some(m) = json.get("tasks").and_then(Value::as_object) {
        for (task, t) in m {
            if let Some(n) = t.get("remaining").and_then(as_count) {
                pending.insert(task_label(task), n);
            }
        }
    }
    for (task, n) in pending {
        push(PENDING_BACKFILL, Some(("task", &task)), n as f64);
    }
    if let Some(f) = json.get("free_space") {
        for (name, key) in [
            (FREE_PAGES, "free_pages"),
            (FREE_BYTES, "free_bytes"),
            (FREE_DAYS, "days_to_return"),
        ] {
            if let Some(n) = f.get(key).and_then(Value::as_f64) {
                push(name, None, n);
            }
        }
    }
    if let Some(jobs) = json.get("jobs").and_then(Value::as_object) {
        job_samples(jobs, &mut push);
    }
    out
}

/// The series of check's job state (module doc).
fn job_samples(jobs: &Map<String, Value>, push: &mut impl FnMut(&str, Option<(&str, &str)>, f64)) {
    let num = |v: Option<&Value>| v.and_then(Value::as_f64);
    let at = |o: &Value, path: &[&str]| path.iter().try_fold(o, |v, k| v.get(k)).cloned();
    let root = Value::Object(jobs.clone());
    if let Some(n) = num(at(&root, &["build_edges", "lag"]).as_ref()) {
        push(EDGES_LAG, None, n);
    }
    let mut runs: Vec<(String, &Value)> = Vec::new();
    for name in ["build_edges", "prune", "vacuum"] {
        if let Some(j) = jobs.get(name) {
            runs.push((name.to_string(), j));
        }
    }
    if let Some(tasks) = jobs.get("backfill").and_then(Value::as_object) {
        for (task, t) in tasks {
            if let Some(n) = num(t.get("rows_past_cursor")) {
                push(PAST_CURSOR, Some(("task", task)), n);
            }
            if let Some(n) = num(t.get("skipped")) {
                push(SKIPPED, Some(("task", task)), n);
            }
            runs.push((format!("backfill.{task}"), t));
        }
    }
    if let Some(kinds) = at(&root, &["prune", "kinds"]) {
        for (kind, k) in kinds.as_object().into_iter().flatten() {
            if let Some(b) = k.get("due_now").and_then(Value::as_bool) {
                push(PRUNE_DUE, Some(("kind", kind)), f64::from(u8::from(b)));
            }
        }
    }
    for (job, j) in runs {
        if let Some(t) = j
            .get("last_run")
            .and_then(Value::as_str)
            .and_then(crate::timeutil::parse_instant)
        {
            push(JOB_LAST_RUN, Some(("job", &job)), t as f64);
        }
        if let Some(b) = j.get("last_complete").and_then(Value::as_bool) {
            push(JOB_COMPLETE, Some(("job", &job)), f64::from(u8::from(b)));
        }
    }
}

/// The new series of `run.command`, given that command's previous series.
pub fn derive(run: &RunInfo<'_>, previous: &[Sample]) -> Vec<Sample> {
    let cmd = run.command;
    let prev_value = |name: &str| {
        previous
            .iter()
            .find(|s| s.name == name && s.labels.keys().all(|k| k == "command" || k == "db"))
            .map(|s| s.value)
    };
    let mut out = vec![
        Sample::new(LAST_RUN, cmd, None, run.now.floor()),
        Sample::new(
            LAST_SUCCESS,
            cmd,
            None,
            if run.exit_code == 0 {
                run.now.floor()
            } else {
                prev_value(LAST_SUCCESS).unwrap_or(0.0)
            },
        ),
        Sample::new(EXIT_CODE, cmd, None, f64::from(run.exit_code)),
        Sample::new(
            DURATION,
            cmd,
            None,
            (run.duration.as_secs_f64() * 1000.0).round() / 1000.0,
        ),
    ];
    // Counters: previous totals plus this run's rows.
    let mut rows: BTreeMap<String, f64> = previous
        .iter()
        .filter(|s| s.name == ROWS)
        .filter_map(|s| s.labels.get("kind").map(|k| (k.clone(), s.value)))
        .collect();
    if let (Some(json), true) = (run.json, run.is_write) {
        for (kind, n) in row_counts(json) {
            *rows.entry(kind).or_insert(0.0) += n as f64;
        }
    }
    for (kind, v) in &rows {
        out.push(Sample::new(ROWS, cmd, Some(("kind", kind)), *v));
    }
    if let Some(json) = run.json {
        out.extend(state_samples(cmd, json));
    } else {
        // Carried over from the previous run (already labelled).
        for s in previous {
            if STATE_FAMILIES.contains(&s.name.as_str()) {
                let mut s = s.clone();
                if s.name == READY && run.exit_code == crate::error::EXIT_NOT_READY {
                    s.value = 0.0;
                }
                out.push(s);
            }
        }
        if run.exit_code == crate::error::EXIT_NOT_READY && !out.iter().any(|s| s.name == READY) {
            out.push(Sample::new(READY, cmd, None, 0.0));
        }
    }
    if !run.db.is_empty() {
        for s in &mut out {
            s.labels.insert("db".to_string(), run.db.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests;
