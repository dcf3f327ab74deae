//! `--metrics-file PATH`: Prometheus text-format metrics for node_exporter's
//! textfile collector (operators' monitoring of the timer runs).
//!
//! One file may be shared by all commands (recommended:
//! `/var/lib/prometheus/node-exporter/corescope.prom`): every series carries a
//! `command` label, and a run rewrites only its own command's series, keeping
//! the other commands' series as they are. Giving each command its own file
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
//! - rows processed, added to the counter `corescope_rows_total{kind}` (write
//!   commands only, never for `"dry_run": true`): every integer of
//!   `deleted.<kind>`; `tasks.<task>.scanned`/`.updated` as kind
//!   `<task>.scanned`/`<task>.updated`; the length of `applied` as kind
//!   `applied`; top-level integers whose key ends in one of [`ROW_SUFFIXES`]
//!   (`observations_scanned`, `edges_upserted`, `edges_new`,
//!   `vacuumed_pages`, ...), kind = the key.
//!
//! A failed run (no report) updates the run timestamp, duration and exit code,
//! keeps `corescope_last_success_timestamp_seconds` (0 if the command never
//! succeeded, so an age alert fires) and keeps the other series of the
//! previous run.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::store::outfile::{check_output, open_lock, write_atomic, Guard, LockOpenError};
use serde_json::{Map, Value};

/// Top-level JSON keys ending in one of these count processed rows.
pub const ROW_SUFFIXES: &[&str] = &[
    "_scanned",
    "_upserted",
    "_new",
    "_inserted",
    "_updated",
    "_deleted",
    "_moved",
    "_pages",
];

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
];

/// What one run hands to the metrics writer.
#[derive(Debug)]
pub struct RunInfo<'a> {
    pub command: &'a str,
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
            ("applied", Value::Array(a)) => out.push(("applied".to_string(), a.len() as u64)),
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
    out
}

/// The new series of `run.command`, given that command's previous series.
pub fn derive(run: &RunInfo<'_>, previous: &[Sample]) -> Vec<Sample> {
    let cmd = run.command;
    let prev_value = |name: &str| {
        previous
            .iter()
            .find(|s| s.name == name && s.labels.len() == 1)
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
        out.extend(state_samples(cmd, json))
    } else {
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
    out
}

// ---------------------------------------------------------------------------
// Text format (pure).

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        format!("{v}")
    }
}

fn format_sample(s: &Sample) -> String {
    let labels: Vec<String> = s
        .labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
        .collect();
    if labels.is_empty() {
        format!("{} {}", s.name, format_value(s.value))
    } else {
        format!(
            "{}{{{}}} {}",
            s.name,
            labels.join(","),
            format_value(s.value)
        )
    }
}

/// Render samples grouped by family (HELP/TYPE first, known families in
/// [`FAMILIES`] order, samples sorted by labels; unknown names last, untyped).
pub fn render(samples: &[Sample]) -> String {
    let mut out = String::new();
    let mut by_name: BTreeMap<&str, Vec<&Sample>> = BTreeMap::new();
    for s in samples {
        by_name.entry(s.name.as_str()).or_default().push(s);
    }
    for v in by_name.values_mut() {
        v.sort_by(|a, b| a.labels.cmp(&b.labels));
        v.dedup_by(|a, b| a.labels == b.labels);
    }
    for (name, ty, help) in FAMILIES {
        if let Some(v) = by_name.remove(name) {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {ty}\n"));
            for s in v {
                out.push_str(&format_sample(s));
                out.push('\n');
            }
        }
    }
    for v in by_name.values() {
        for s in v {
            out.push_str(&format_sample(s));
            out.push('\n');
        }
    }
    out
}

/// Parse one sample line (`name{k="v",...} value [timestamp]`).
pub fn parse_sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = &line[..name_end];
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(r) = rest.strip_prefix('{') {
        let mut chars = r.char_indices().peekable();
        let end;
        loop {
            // Skip separators.
            while let Some((_, c)) = chars.peek() {
                if *c == ',' || c.is_whitespace() {
                    chars.next();
                } else {
                    break;
                }
            }
            match chars.peek() {
                Some((i, '}')) => {
                    end = *i + 1;
                    break;
                }
                None => return None,
                _ => {}
            }
            let mut key = String::new();
            for (_, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return None;
            }
            let mut val = String::new();
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => match chars.next().map(|(_, c)| c) {
                        Some('n') => val.push('\n'),
                        Some(o) => val.push(o),
                        None => return None,
                    },
                    '"' => {
                        closed = true;
                        break;
                    }
                    o => val.push(o),
                }
            }
            if !closed {
                return None;
            }
            labels.insert(key.trim().to_string(), val);
        }
        rest = &r[end..];
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse::<f64>().ok()?,
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_sample).collect()
}

// ---------------------------------------------------------------------------
// The file.

fn sibling(path: &Path, prefix: &str, suffix: &str) -> anyhow::Result<PathBuf> {
    let name = path
        .file_name()
        .with_context(|| format!("metrics file {} has no file name", path.display()))?;
    let mut n = std::ffi::OsString::from(prefix);
    n.push(name);
    n.push(suffix);
    Ok(path.with_file_name(n))
}

/// Hidden lock file of the metrics file: `.<name>.lock` in the same directory.
pub fn lock_path(path: &Path) -> anyhow::Result<PathBuf> {
    sibling(path, ".", ".lock")
}

fn flock_exclusive(f: &File) -> std::io::Result<()> {
    loop {
        // SAFETY: flock on a file descriptor we own.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        if rc == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// After a run (called by `main`): write the metrics when `--metrics-file`
/// was given and the command supports it. A failure to write is logged as an
/// error and does not change the exit code (the age alerts on
/// `corescope_last_success_timestamp_seconds` catch a file that stops
/// updating).
pub fn after_run(
    path: Option<&Path>,
    db: Option<&Path>,
    command: &crate::cli::Command,
    exit_code: i32,
    json: Option<&Map<String, Value>>,
    duration: Duration,
) {
    let Some(path) = path.filter(|p| !p.as_os_str().is_empty()) else {
        return;
    };
    if !command.writes_metrics() {
        if std::env::var_os("CORESCOPE_METRICS_FILE").is_none() {
            log::warn!(
                "--metrics-file is ignored by {} (only write commands and check write metrics)",
                command.name()
            );
        }
        return;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let run = RunInfo {
        command: command.name(),
        is_write: command.is_write(),
        exit_code,
        json,
        duration,
        now,
    };
    let guard = Guard { db, force: false };
    if let Err(e) = write(path, guard, &run) {
        log::error!("metrics not written: {e:#}");
    }
}

/// Rewrite this run's series in `path`, keeping other commands' series.
/// `path` must pass `outfile::check_output` (never the database, a symlink
/// or a device); the lock file is opened without following links.
pub fn write(path: &Path, guard: Guard<'_>, run: &RunInfo<'_>) -> anyhow::Result<()> {
    check_output(path, "--metrics-file", guard)?;
    let lock_file = lock_path(path)?;
    let lock = match open_lock(&lock_file, true) {
        Ok(f) => f,
        Err(LockOpenError::Unsafe(m)) => anyhow::bail!(m),
        Err(LockOpenError::Io(e)) => {
            return Err(e).with_context(|| format!("cannot create {}", lock_file.display()))
        }
    };
    flock_exclusive(&lock).with_context(|| format!("cannot lock {}", lock_file.display()))?;

    // Checked again under the lock; read without following a link.
    check_output(path, "--metrics-file", guard)?;
    let existing = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(mut f) => {
            let mut s = String::new();
            f.read_to_string(&mut s)
                .with_context(|| format!("cannot read {}", path.display()))?;
            s
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let (mine, mut all): (Vec<Sample>, Vec<Sample>) = parse(&existing)
        .into_iter()
        .partition(|s| s.command() == Some(run.command));
    all.extend(derive(run, &mine));
    let text = render(&all);

    write_atomic(path, "--metrics-file", guard, |w| {
        w.write_all(text.as_bytes())
    })?;
    log::info!("wrote metrics for {} to {}", run.command, path.display());
    drop(lock);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    #[test]
    fn rows_from_reports() {
        let prune = obj(json!({"deleted": {"transmissions": 5, "observations": 12},
            "vacuumed_pages": 3, "max_lock_hold_ms": 12.5, "complete": true}));
        let mut r = row_counts(&prune);
        r.sort();
        assert_eq!(
            r,
            vec![
                ("observations".to_string(), 12),
                ("transmissions".to_string(), 5),
                ("vacuumed_pages".to_string(), 3)
            ]
        );
        let edges = obj(
            json!({"observations_scanned": 100, "candidates": 40, "edges_upserted": 30,
            "edges_new": 2, "watermark": 999, "edges_total": 50, "elapsed_ms": 3}),
        );
        let mut r = row_counts(&edges);
        r.sort();
        assert_eq!(
            r,
            vec![
                ("edges_new".to_string(), 2),
                ("edges_upserted".to_string(), 30),
                ("observations_scanned".to_string(), 100)
            ]
        );
        let backfill =
            obj(json!({"tasks": {"from-pubkey": {"scanned": 9, "updated": 7, "remaining": 1}}}));
        assert_eq!(
            row_counts(&backfill),
            vec![
                ("from-pubkey.scanned".to_string(), 9),
                ("from-pubkey.updated".to_string(), 7)
            ]
        );
        let migrate = obj(json!({"applied": ["a", "b"], "already": 4}));
        assert_eq!(row_counts(&migrate), vec![("applied".to_string(), 2)]);
        let dry = obj(json!({"deleted": {"transmissions": 5}, "dry_run": true}));
        assert!(row_counts(&dry).is_empty());
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
        assert_eq!(
            value(&first, ROWS, Some(("kind", "transmissions"))),
            Some(5.0)
        );
        assert_eq!(value(&first, LOCK_HOLD, None), Some(0.25));
        assert_eq!(
            value(&first, PENDING_BACKFILL, Some(("task", "path-json"))),
            Some(8.0)
        );

        let mut second_run = run("prune", 0, Some(&j));
        second_run.now = 2000.0;
        let second = derive(&second_run, &first);
        assert_eq!(
            value(&second, ROWS, Some(("kind", "transmissions"))),
            Some(10.0)
        );

        let mut failed = run("prune", 75, None);
        failed.now = 3000.0;
        let third = derive(&failed, &second);
        assert_eq!(value(&third, LAST_RUN, None), Some(3000.0));
        assert_eq!(value(&third, LAST_SUCCESS, None), Some(2000.0));
        assert_eq!(value(&third, EXIT_CODE, None), Some(75.0));
        assert_eq!(
            value(&third, ROWS, Some(("kind", "transmissions"))),
            Some(10.0)
        );
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
}
