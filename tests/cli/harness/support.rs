//! Reliability harness (see RELIABILITY.md): crash convergence, overlap, live writer,
//! full-database comparison. Used by the `reliability_*` modules; builds on
//! `common`.
//!
//! Every helper runs the real `corescope` binary on copies of a database and
//! compares complete dumps of every table (and of `sqlite_master`, without
//! `rootpage`), leaving out only the bookkeeping timestamps listed in
//! [`BOOKKEEPING`].
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rusqlite::types::Value;
use rusqlite::{params, Connection, OpenFlags};

use super::common;

/// State keys compared as present or absent only: the time a job's last
/// run ended (`jobs.<job>.last_run`, bookkeeping like `updated_at`) and a
/// backfill task's count of skipped visits (`jobs.backfill.<task>.skipped`:
/// a row visited again, after overlapping runs lowered the cursor, counts
/// again).
pub fn is_run_time_key(key: &Value) -> bool {
    matches!(key, Value::Text(k) if k.starts_with("jobs.") && (k.ends_with(".last_run") || k.ends_with(".skipped")))
}

/// Columns that hold "when did this bookkeeping happen" and may differ
/// between two otherwise identical runs (documented in RELIABILITY.md).
pub const BOOKKEEPING: &[(&str, &str)] = &[
    ("_corescope_state", "updated_at"),
    ("_async_migrations", "started_at"),
    ("_async_migrations", "ended_at"),
];

/// The whole database as data: table name → sorted rows. The entry
/// `sqlite_master` holds (type, name, tbl_name, sql) of every object.
pub type State = BTreeMap<String, Vec<Vec<Value>>>;

fn excluded(exclude: &[(&str, &str)], table: &str, col: &str) -> bool {
    BOOKKEEPING
        .iter()
        .chain(exclude.iter())
        .any(|(t, c)| *t == table && *c == col)
}

/// Dump every table of `db` (all columns except bookkeeping ones).
pub fn full_state(db: &Path, exclude: &[(&str, &str)]) -> State {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .unwrap_or_else(|e| panic!("open {}: {e}", db.display()));
    let mut state = State::new();
    let mut st = conn
        .prepare(
            "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name, tbl_name, sql",
        )
        .unwrap();
    let schema: Vec<Vec<Value>> = st
        .query_map([], |r| (0..4).map(|i| r.get::<_, Value>(i)).collect())
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    drop(st);
    state.insert("sqlite_master".into(), schema);
    for t in common::tables(&conn) {
        let cols: Vec<String> = common::columns(&conn, &t)
            .into_iter()
            .filter(|c| !excluded(exclude, &t, c))
            .collect();
        let rows = if cols.is_empty() {
            vec![vec![Value::Integer(common::count(
                &conn,
                &format!("SELECT count(*) FROM \"{t}\""),
            ))]]
        } else {
            let mut rows = common::dump(&conn, &t, Some(&cols));
            if t == "_corescope_state" {
                for r in rows
                    .iter_mut()
                    .filter(|r| r.len() > 1 && is_run_time_key(&r[0]))
                {
                    r[1] = Value::Text("<bookkeeping>".into());
                }
            }
            rows
        };
        state.insert(t, rows);
    }
    state
}

/// A human description of the first differences between two states, or None.
pub fn diff_states(want: &State, got: &State) -> Option<String> {
    let mut out = Vec::new();
    let names: BTreeSet<&String> = want.keys().chain(got.keys()).collect();
    for n in names {
        match (want.get(n), got.get(n)) {
            (Some(a), Some(b)) if a == b => {}
            (Some(a), Some(b)) => {
                let first = a
                    .iter()
                    .zip(b.iter())
                    .position(|(x, y)| x != y)
                    .unwrap_or(a.len().min(b.len()));
                out.push(format!(
                    "table {n}: {} vs {} rows; first difference at sorted row {first}: want {:?} got {:?}",
                    a.len(),
                    b.len(),
                    a.get(first),
                    b.get(first)
                ));
            }
            (Some(_), None) => out.push(format!("table {n} missing")),
            (None, Some(_)) => out.push(format!("table {n} unexpected")),
            (None, None) => {}
        }
    }
    if out.is_empty() {
        None
    } else {
        Some(out.join("\n"))
    }
}

/// `PRAGMA integrity_check` = ok and `foreign_key_check` empty. Opening
/// read-write performs SQLite's crash recovery (hot journal / WAL), exactly
/// as the next process to open the file would.
pub fn integrity(db: &Path) -> Result<(), String> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(|e| format!("open: {e}"))?;
    let mut st = conn
        .prepare("PRAGMA integrity_check")
        .map_err(|e| e.to_string())?;
    let rows: Vec<String> = st
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(|e| e.to_string())?
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    if rows != ["ok"] {
        return Err(format!("integrity_check: {rows:?}"));
    }
    let fk: i64 = conn
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .map_err(|e| e.to_string())?;
    if fk != 0 {
        return Err(format!("foreign_key_check: {fk} violations"));
    }
    Ok(())
}

/// Copy a database (and its -wal, if any; never the -shm).
pub fn copy_db(src: &Path, dst: &Path) {
    std::fs::copy(src, dst).unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
    let wal = sidecar(src, "-wal");
    if wal.exists() {
        std::fs::copy(&wal, sidecar(dst, "-wal")).unwrap();
    }
}

pub fn sidecar(db: &Path, suffix: &str) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The binary as a plain `std::process::Command` (so it can be killed).
pub fn command(args: &[&str], db: &Path) -> Command {
    let mut c = super::command();
    c.args(args)
        .arg("--db")
        .arg(db)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

pub struct RunResult {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

pub fn run(args: &[&str], db: &Path) -> RunResult {
    let t0 = Instant::now();
    let out = command(args, db).output().unwrap();
    RunResult {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: t0.elapsed(),
    }
}

fn spawn(args: &[&str], db: &Path) -> Child {
    command(args, db)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Run to completion and require exit `code`.
pub fn run_ok(args: &[&str], db: &Path, code: i32) -> RunResult {
    let r = run(args, db);
    assert_eq!(
        r.code,
        Some(code),
        "{args:?} on {}: stderr {} stdout {}",
        db.display(),
        r.stderr,
        r.stdout
    );
    r
}

// ---------------------------------------------------------------------------
// Crash convergence.

/// Kill trials per crash test: `RELIABILITY_KILLS` when set (stress and
/// benchmark runs), else `default` (CI).
pub fn kills_or(default: usize) -> usize {
    std::env::var("RELIABILITY_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub struct Crash<'a> {
    /// Label printed in the report ("migrate legacy fixture").
    pub name: &'a str,
    /// Database the command starts from (never written).
    pub setup: &'a Path,
    /// Command line without `--db`.
    pub args: &'a [&'a str],
    /// Number of independent kill trials (one kill each); one extra trial
    /// kills the same copy at every instant in turn.
    pub kills: usize,
    pub seed: u64,
    /// Extra (table, column) pairs left out of the comparison.
    pub exclude: &'a [(&'a str, &'a str)],
    /// Exit code of a complete run.
    pub code: i32,
}

#[derive(Debug, Default, Clone)]
pub struct CrashReport {
    pub trials: usize,
    pub converged: usize,
    /// Kills that landed while the process was still running.
    pub mid_run: usize,
    pub reference_ms: f64,
}

/// Kill `c.args` at `c.kills` instants spread over an uninterrupted run,
/// check integrity after each kill, re-run to completion, compare with the
/// uninterrupted result. Panics on the first divergence; prints "N/N converged".
pub fn crash_convergence(c: &Crash) -> CrashReport {
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference.db");
    copy_db(c.setup, &reference);
    let r = run_ok(c.args, &reference, c.code);
    integrity(&reference).unwrap();
    let want = full_state(&reference, c.exclude);
    // A second uninterrupted run: the result must be the same (the command
    // is deterministic), and the shorter of the two durations places the
    // kills (the first run may pay for cold caches).
    let second = dir.path().join("reference2.db");
    copy_db(c.setup, &second);
    let r2 = run_ok(c.args, &second, c.code);
    if let Some(d) = diff_states(&want, &full_state(&second, c.exclude)) {
        panic!("{}: two uninterrupted runs differ:\n{d}", c.name);
    }
    let duration = r.elapsed.min(r2.elapsed);

    let mut rng = ChaCha8Rng::seed_from_u64(c.seed);
    let instants: Vec<Duration> = (0..c.kills)
        .map(|i| duration.mul_f64((i as f64 + rng.gen::<f64>()) / c.kills as f64))
        .collect();
    let mut rep = CrashReport {
        reference_ms: duration.as_secs_f64() * 1000.0,
        ..Default::default()
    };
    // Independent trials: one kill each.
    for (i, at) in instants.iter().enumerate() {
        let db = dir.path().join(format!("kill{i}.db"));
        copy_db(c.setup, &db);
        if kill_at(c.args, &db, *at) {
            rep.mid_run += 1;
        }
        integrity(&db).unwrap_or_else(|e| panic!("{}: after kill {i} at {at:?}: {e}", c.name));
        run_ok(c.args, &db, c.code);
        let got = full_state(&db, c.exclude);
        if let Some(d) = diff_states(&want, &got) {
            panic!("{}: kill {i} at {at:?} did not converge:\n{d}", c.name);
        }
        rep.trials += 1;
        rep.converged += 1;
        std::fs::remove_file(&db).ok();
        std::fs::remove_file(sidecar(&db, "-wal")).ok();
        std::fs::remove_file(sidecar(&db, "-shm")).ok();
    }
    // Chained trial: the same copy killed at every instant in turn.
    let db = dir.path().join("chain.db");
    copy_db(c.setup, &db);
    for (i, at) in instants.iter().enumerate() {
        if kill_at(c.args, &db, *at) {
            rep.mid_run += 1;
        }
        integrity(&db).unwrap_or_else(|e| panic!("{}: chained kill {i} at {at:?}: {e}", c.name));
    }
    run_ok(c.args, &db, c.code);
    if let Some(d) = diff_states(&want, &full_state(&db, c.exclude)) {
        panic!("{}: chained kills did not converge:\n{d}", c.name);
    }
    rep.trials += 1;
    rep.converged += 1;
    println!(
        "crash convergence [{}]: {}/{} converged ({} of {} kills landed mid-run; uninterrupted run {:.0} ms)",
        c.name,
        rep.converged,
        rep.trials,
        rep.mid_run,
        2 * c.kills,
        rep.reference_ms
    );
    rep
}

/// Start the command, SIGKILL it after `at`; true when it was still running.
pub fn kill_at(args: &[&str], db: &Path, at: Duration) -> bool {
    let mut child = spawn(args, db);
    let t0 = Instant::now();
    // Sleep until `at`, but stop waiting as soon as the process exits by
    // itself (later instants of a chained trial often outlast the run).
    loop {
        let left = at.saturating_sub(t0.elapsed());
        if left.is_zero() {
            break;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(left.min(Duration::from_millis(2)));
    }
    let running = child.try_wait().unwrap().is_none();
    child.kill().ok(); // SIGKILL on Unix
    child.wait().unwrap();
    running
}

// ---------------------------------------------------------------------------
// Overlap: two instances at once.

#[derive(Debug, Default, Clone)]
pub struct OverlapReport {
    pub rounds: usize,
    pub converged: usize,
    /// Exit codes seen from the overlapping pairs.
    pub codes: Vec<(i32, i32)>,
}

/// Run two instances of `args` on the same copy, the second started after
/// `stagger` (one round per entry). Each must exit with `code` or 75 (busy,
/// nothing half-done); a busy one is re-run. The result must equal one
/// uninterrupted run.
///
/// With `bypass_lock`, the second instance opens the database through a
/// symlink: SQLite resolves it to the same file (same -wal/-shm/-journal),
/// but corescope's run lock (`<path>.corescope-<cmd>.lock`) is a different
/// file, so both really run at once — correctness must not depend on the lock.
pub fn overlap(
    name: &str,
    setup: &Path,
    args: &[&str],
    code: i32,
    exclude: &[(&str, &str)],
    staggers: &[Duration],
    bypass_lock: bool,
) -> OverlapReport {
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference.db");
    copy_db(setup, &reference);
    run_ok(args, &reference, code);
    let want = full_state(&reference, exclude);
    let mut rep = OverlapReport::default();
    for (i, s) in staggers.iter().enumerate() {
        let db = dir.path().join(format!("overlap{i}.db"));
        copy_db(setup, &db);
        let second = if bypass_lock {
            let link = dir.path().join(format!("link{i}.db"));
            std::os::unix::fs::symlink(&db, &link).unwrap();
            link
        } else {
            db.clone()
        };
        let a = command(args, &db).spawn().unwrap();
        std::thread::sleep(*s);
        let b = command(args, &second).spawn().unwrap();
        let oa = a.wait_with_output().unwrap();
        let ob = b.wait_with_output().unwrap();
        let ca = oa.status.code().unwrap_or(-1);
        let cb = ob.status.code().unwrap_or(-1);
        for (c, o) in [(ca, &oa), (cb, &ob)] {
            assert!(
                c == code || c == 75,
                "{name}: overlapping run exited {c}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        rep.codes.push((ca, cb));
        integrity(&db).unwrap();
        if ca != code || cb != code {
            run_ok(args, &db, code);
        }
        if let Some(d) = diff_states(&want, &full_state(&db, exclude)) {
            panic!("{name}: overlap round {i} (stagger {s:?}) differs:\n{d}");
        }
        rep.rounds += 1;
        rep.converged += 1;
    }
    println!(
        "overlap [{name}{}]: {}/{} rounds equal one run (exit codes {:?})",
        if bypass_lock {
            ", run lock bypassed"
        } else {
            ", with run lock"
        },
        rep.converged,
        rep.rounds,
        rep.codes
    );
    rep
}

// ---------------------------------------------------------------------------
// Live writer: behaves like the CoreScope ingestor.

#[derive(Debug, Default, Clone)]
pub struct WriterReport {
    /// (id, hash) of every committed transmission.
    pub transmissions: Vec<(i64, String)>,
    /// (id, transmission_id) of every committed observation.
    pub observations: Vec<(i64, i64)>,
    pub nodes: BTreeSet<String>,
    pub observers: BTreeSet<String>,
    /// Every failed statement, with its error. Must stay empty.
    pub failures: Vec<String>,
    pub statements: u64,
    pub packets: u64,
    pub max_latency: Duration,
    pub max_latency_stmt: String,
}

pub struct LiveWriter {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<WriterReport>>,
    started: Arc<AtomicBool>,
}

/// Options of the simulated ingestor.
#[derive(Debug, Clone)]
pub struct WriterOpts {
    /// One packet (one transaction) per interval.
    pub interval: Duration,
    pub seed: u64,
    /// Distinct node keys / observer ids it cycles through (upserts).
    pub nodes: usize,
    pub observers: usize,
    /// Upsert existing nodes/observers of the database (keeps the set of
    /// node keys, and so hop resolution, unchanged) instead of new ones.
    pub reuse_existing: bool,
}

impl Default for WriterOpts {
    fn default() -> Self {
        WriterOpts {
            interval: Duration::from_millis(5),
            seed: 8,
            nodes: 16,
            observers: 4,
            reuse_existing: false,
        }
    }
}

impl LiveWriter {
    /// Start writing to `db` on a separate thread with its own connection:
    /// WAL, busy_timeout 5000, foreign_keys ON, one `BEGIN IMMEDIATE`
    /// transaction per packet (observer upsert, ADVERT transmission,
    /// observation, node upsert with advert_count + 1). Returns once the
    /// first packet is committed.
    pub fn start(db: &Path, opts: WriterOpts) -> LiveWriter {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Arc::new(AtomicBool::new(false));
        let (s2, st2) = (stop.clone(), started.clone());
        let path = db.to_path_buf();
        let handle = std::thread::spawn(move || writer_loop(&path, &opts, &s2, &st2));
        let t0 = Instant::now();
        while !started.load(Ordering::SeqCst) {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "writer never started"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        LiveWriter {
            stop,
            handle: Some(handle),
            started,
        }
    }

    pub fn stop(mut self) -> WriterReport {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.take().unwrap().join().expect("writer thread")
    }
}

impl Drop for LiveWriter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn writer_loop(db: &Path, o: &WriterOpts, stop: &AtomicBool, started: &AtomicBool) -> WriterReport {
    let mut rep = WriterReport::default();
    let conn = Connection::open(db).expect("writer open");
    conn.busy_timeout(Duration::from_millis(5000)).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .expect("writer WAL");
    assert_eq!(mode, "wal");
    conn.execute_batch("PRAGMA foreign_keys = ON").unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(o.seed);
    let keys: Vec<String> = (0..o.nodes)
        .map(|_| hex::encode((0..32).map(|_| rng.gen::<u8>()).collect::<Vec<_>>()))
        .collect();
    let observers: Vec<String> = (0..o.observers)
        .map(|_| hex::encode_upper((0..32).map(|_| rng.gen::<u8>()).collect::<Vec<_>>()))
        .collect();
    let (keys, observers) = if o.reuse_existing {
        let pick = |sql: &str| -> Vec<String> {
            let mut st = conn.prepare(sql).unwrap();
            let v: Vec<String> = st
                .query_map([], |r| r.get(0))
                .unwrap()
                .map(|r| r.unwrap())
                .collect();
            v
        };
        let k = pick(&format!(
            "SELECT public_key FROM nodes WHERE public_key IS NOT NULL ORDER BY rowid LIMIT {}",
            o.nodes
        ));
        let b = pick(&format!(
            "SELECT id FROM observers WHERE id IS NOT NULL ORDER BY rowid LIMIT {}",
            o.observers
        ));
        assert!(!k.is_empty() && !b.is_empty(), "nothing to reuse");
        (k, b)
    } else {
        (keys, observers)
    };
    let t0 = Instant::now();
    let mut k: u64 = 0;
    loop {
        if stop.load(Ordering::SeqCst) && k > 0 {
            break;
        }
        let due = t0 + o.interval * k as u32;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let key = &keys[(k as usize) % keys.len()];
        let obs = &observers[(k as usize / 3) % observers.len()];
        let hash = format!("{:016x}", rng.gen::<u64>());
        let ts = 1_780_000_000 + k as i64;
        let iso = format!(
            "2026-05-28T{:02}:{:02}:{:02}Z",
            (k / 3600) % 24,
            (k / 60) % 60,
            k % 60
        );
        match one_packet(&conn, &mut rep, key, obs, &hash, ts, &iso) {
            Ok((tx_id, obs_id)) => {
                rep.transmissions.push((tx_id, hash));
                rep.observations.push((obs_id, tx_id));
                rep.nodes.insert(key.clone());
                rep.observers.insert(obs.clone());
                rep.packets += 1;
            }
            Err(e) => {
                rep.failures.push(e);
                let _ = conn.execute_batch("ROLLBACK");
            }
        }
        started.store(true, Ordering::SeqCst);
        k += 1;
    }
    rep
}

fn timed<T>(
    rep: &mut WriterReport,
    label: &str,
    f: impl FnOnce() -> rusqlite::Result<T>,
) -> Result<T, String> {
    let t = Instant::now();
    let r = f();
    let el = t.elapsed();
    rep.statements += 1;
    if el > rep.max_latency {
        rep.max_latency = el;
        rep.max_latency_stmt = label.to_string();
    }
    r.map_err(|e| format!("{label}: {e}"))
}

fn one_packet(
    conn: &Connection,
    rep: &mut WriterReport,
    key: &str,
    observer: &str,
    hash: &str,
    ts: i64,
    iso: &str,
) -> Result<(i64, i64), String> {
    timed(rep, "BEGIN IMMEDIATE", || {
        conn.execute_batch("BEGIN IMMEDIATE")
    })?;
    timed(rep, "upsert observer", || {
        conn.prepare_cached(
            "INSERT INTO observers (id, name, last_seen, first_seen, packet_count) VALUES (?1, 'live', ?2, ?2, 1)
             ON CONFLICT(id) DO UPDATE SET last_seen = excluded.last_seen, packet_count = packet_count + 1",
        )?
        .execute(params![observer, iso])
    })?;
    let obs_rowid: i64 = timed(rep, "observer rowid", || {
        conn.prepare_cached("SELECT rowid FROM observers WHERE id = ?1")?
            .query_row([observer], |r| r.get(0))
    })?;
    let decoded = format!(r#"{{"type":"ADVERT","pubKey":"{key}","name":"live"}}"#);
    let tx_id = timed(rep, "insert transmission", || {
        conn.prepare_cached(
            "INSERT INTO transmissions (raw_hex, hash, first_seen, route_type, payload_type, payload_version, decoded_json)
             VALUES (?1, ?2, ?3, 1, 4, 1, ?4)",
        )?
        .execute(params![format!("1100{key}"), hash, iso, decoded])?;
        Ok(conn.last_insert_rowid())
    })?;
    let obs_id = timed(rep, "insert observation", || {
        conn.prepare_cached(
            "INSERT INTO observations (transmission_id, observer_idx, direction, snr, rssi, score, path_json, timestamp)
             VALUES (?1, ?2, 'rx', 5.5, -90, 10, '[]', ?3)",
        )?
        .execute(params![tx_id, obs_rowid, ts])?;
        Ok(conn.last_insert_rowid())
    })?;
    timed(rep, "upsert node", || {
        conn.prepare_cached(
            "INSERT INTO nodes (public_key, name, role, last_seen, first_seen, advert_count) VALUES (?1, 'live', 'repeater', ?2, ?2, 1)
             ON CONFLICT(public_key) DO UPDATE SET last_seen = excluded.last_seen, advert_count = advert_count + 1",
        )?
        .execute(params![key, iso])
    })?;
    timed(rep, "COMMIT", || conn.execute_batch("COMMIT"))?;
    Ok((tx_id, obs_id))
}

/// Every row the writer reported as committed exists. Returns the problems.
pub fn verify_writer(db: &Path, rep: &WriterReport) -> Vec<String> {
    let conn = Connection::open(db).unwrap();
    let mut missing = Vec::new();
    for (id, hash) in &rep.transmissions {
        let n = common::count(
            &conn,
            &format!("SELECT count(*) FROM transmissions WHERE id = {id} AND hash = '{hash}'"),
        );
        if n != 1 {
            missing.push(format!("transmission {id} {hash}"));
        }
    }
    for (id, tx) in &rep.observations {
        let n = common::count(
            &conn,
            &format!(
                "SELECT count(*) FROM observations WHERE id = {id} AND transmission_id = {tx}"
            ),
        );
        if n != 1 {
            missing.push(format!("observation {id}"));
        }
    }
    for k in &rep.nodes {
        if common::count(
            &conn,
            &format!("SELECT count(*) FROM nodes WHERE public_key = '{k}'"),
        ) != 1
        {
            missing.push(format!("node {k}"));
        }
    }
    for k in &rep.observers {
        if common::count(
            &conn,
            &format!("SELECT count(*) FROM observers WHERE id = '{k}'"),
        ) != 1
        {
            missing.push(format!("observer {k}"));
        }
    }
    missing
}

impl WriterReport {
    pub fn summary(&self) -> String {
        format!(
            "{} packets, {} statements, {} failed, max statement latency {:.1} ms ({})",
            self.packets,
            self.statements,
            self.failures.len(),
            self.max_latency.as_secs_f64() * 1000.0,
            self.max_latency_stmt
        )
    }
}

// ---------------------------------------------------------------------------
// Synthetic legacy-shaped databases.

/// A database with the legacy fixture's schema (March 2026 shape) and
/// `observations` rows with TEXT observer_idx, like the field data, built
/// deterministically. ADVERT transmissions carry `decoded_json.pubKey`.
pub fn synthetic_legacy(path: &Path, observations: usize, seed: u64) {
    let src =
        Connection::open_with_flags(common::fixture(), OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut st = src
        .prepare("SELECT sql FROM sqlite_master WHERE type = 'table' AND name != 'sqlite_sequence' ORDER BY rowid")
        .unwrap();
    let ddl: Vec<String> = st
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    let conn = Connection::open(path).unwrap();
    for d in &ddl {
        conn.execute_batch(d).unwrap();
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n_nodes = 200usize;
    let n_obs = 30usize;
    let n_tx = (observations / 4).max(1);
    let keys: Vec<String> = (0..n_nodes)
        .map(|_| hex::encode((0..32).map(|_| rng.gen::<u8>()).collect::<Vec<_>>()))
        .collect();
    let observers: Vec<String> = (0..n_obs)
        .map(|_| hex::encode_upper((0..32).map(|_| rng.gen::<u8>()).collect::<Vec<_>>()))
        .collect();
    conn.execute_batch("BEGIN").unwrap();
    for (i, k) in keys.iter().enumerate() {
        conn.execute(
            "INSERT INTO nodes (public_key, name, role, last_seen, first_seen, advert_count) VALUES (?1, ?2, 'repeater', '2026-03-29T17:33:41Z', '2026-03-17T21:47:58.081Z', 0)",
            params![k, format!("node{i}")],
        )
        .unwrap();
    }
    for (i, o) in observers.iter().enumerate() {
        conn.execute(
            "INSERT INTO observers (id, name, iata, last_seen, first_seen, packet_count) VALUES (?1, ?2, 'SJC', '2026-03-29T17:37:14Z', '2026-03-20T09:06:21.535Z', 10)",
            params![o, format!("obs{i}")],
        )
        .unwrap();
    }
    for i in 0..n_tx {
        let advert = i % 4 == 0;
        let key = &keys[rng.gen_range(0..n_nodes)];
        let decoded = if advert {
            format!(r#"{{"type":"ADVERT","pubKey":"{key}","name":"n"}}"#)
        } else {
            r#"{"type":"TXT_MSG","destHash":"1f","srcHash":"5d"}"#.to_string()
        };
        conn.execute(
            "INSERT INTO transmissions (raw_hex, hash, first_seen, route_type, payload_type, payload_version, decoded_json, created_at)
             VALUES (?1, ?2, ?3, 1, ?4, 1, ?5, '2026-03-29 17:37:40')",
            params![
                format!("11{:02x}{key}", i % 256),
                format!("{:016x}", rng.gen::<u64>()),
                format!("2026-03-29T{:02}:{:02}:{:02}Z", (i / 3600) % 24, (i / 60) % 60, i % 60),
                if advert { 4 } else { 2 },
                decoded
            ],
        )
        .unwrap();
    }
    for i in 0..observations {
        let tx = (i % n_tx) as i64 + 1;
        let o = &observers[(i / n_tx + i) % n_obs];
        // A few observers' ids in lower case (the mapping is case-insensitive).
        let text = if i % 7 == 0 {
            o.to_lowercase()
        } else {
            o.clone()
        };
        let path = format!(r#"["{:02X}{:02X}"]"#, rng.gen::<u8>(), rng.gen::<u8>());
        conn.execute(
            "INSERT INTO observations (transmission_id, observer_idx, direction, snr, rssi, score, path_json, timestamp) VALUES (?1, ?2, 'rx', 5.0, -100, 1, ?3, 0)",
            params![tx, text, path],
        )
        .unwrap();
    }
    conn.execute_batch("COMMIT").unwrap();
}

// ---------------------------------------------------------------------------
// Synthetic current-schema databases (for prune, backfill, build-edges).

/// "now" of the synthetic current database (RFC 3339 and epoch).
pub const NOW: &str = "2026-05-17T18:12:01Z";
pub const NOW_EPOCH: i64 = 1_779_041_521;
pub const DAY: i64 = 86_400;

fn fmt_time(epoch: i64, style: usize) -> String {
    let dt = chrono::DateTime::from_timestamp(epoch, 0).unwrap();
    match style % 3 {
        0 => dt.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        1 => dt.format("%Y-%m-%d %H:%M:%S").to_string(),
        _ => dt.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
    }
}

/// A database created by `corescope migrate --create` and filled with
/// deterministic data whose times spread over the 40 days before [`NOW`]:
/// observers (+ metrics), nodes, neighbor edges, dropped packets,
/// transmissions (every 4th an ADVERT with decoded_json.pubKey) with 1–4
/// observations each carrying a path_json of 0–3 hops.
pub fn synthetic_current(dir: &Path, name: &str, transmissions: usize, seed: u64) -> PathBuf {
    let path = common::fresh_db(dir, name);
    let c = Connection::open(&path).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    c.execute_batch("BEGIN").unwrap();
    let n_obs = 30usize;
    let n_nodes = 150usize;
    let keys: Vec<String> = (0..n_nodes)
        .map(|_| hex::encode((0..32).map(|_| rng.gen::<u8>()).collect::<Vec<_>>()))
        .collect();
    for i in 0..n_obs {
        let t = NOW_EPOCH - rng.gen_range(0..30 * DAY);
        c.execute(
            "INSERT INTO observers (id, name, iata, last_seen, first_seen, packet_count) VALUES (?1, ?2, 'SJC', ?3, ?3, 5)",
            params![hex::encode_upper((0..32).map(|_| rng.gen::<u8>()).collect::<Vec<_>>()), format!("obs{i}"), fmt_time(t, i)],
        )
        .unwrap();
        for k in 0..10 {
            let m = NOW_EPOCH - rng.gen_range(0..60 * DAY);
            c.execute(
                "INSERT OR IGNORE INTO observer_metrics (observer_id, timestamp, noise_floor) SELECT id, ?2, -110.5 FROM observers WHERE rowid = ?1",
                params![i as i64 + 1, fmt_time(m, k)],
            )
            .unwrap();
        }
    }
    for (i, k) in keys.iter().enumerate() {
        let t = NOW_EPOCH - rng.gen_range(0..20 * DAY);
        c.execute(
            "INSERT INTO nodes (public_key, name, role, lat, lon, last_seen, first_seen, advert_count) VALUES (?1, ?2, 'repeater', 37.5, -122.1, ?3, ?3, 0)",
            params![k, format!("node{i}"), fmt_time(t, i)],
        )
        .unwrap();
        let e = NOW_EPOCH - rng.gen_range(0..10 * DAY);
        c.execute(
            "INSERT OR IGNORE INTO neighbor_edges (node_a, node_b, count, last_seen) VALUES (?1, ?2, 1, ?3)",
            params![k, keys[(i + 1) % n_nodes], fmt_time(e, 0)],
        )
        .unwrap();
        let d = NOW_EPOCH - rng.gen_range(0..60 * DAY);
        c.execute(
            "INSERT INTO dropped_packets (reason, dropped_at) VALUES ('sig', ?1)",
            params![fmt_time(d, 1)],
        )
        .unwrap();
    }
    for i in 0..transmissions {
        let t = NOW_EPOCH - rng.gen_range(0..40 * DAY);
        let advert = i % 4 == 0;
        let key = &keys[rng.gen_range(0..n_nodes)];
        let decoded = if advert {
            format!(r#"{{"type":"ADVERT","pubKey":"{key}","name":"n"}}"#)
        } else {
            r#"{"type":"TXT_MSG","destHash":"1f","srcHash":"5d"}"#.to_string()
        };
        c.execute(
            "INSERT INTO transmissions (raw_hex, hash, first_seen, route_type, payload_type, payload_version, decoded_json, created_at)
             VALUES (?1, ?2, ?3, 1, ?4, 1, ?5, ?6)",
            params![
                format!("11{:02x}{key}", i % 256),
                format!("{:016x}", rng.gen::<u64>()),
                fmt_time(t, i),
                if advert { 4 } else { 2 },
                decoded,
                fmt_time(t, 1)
            ],
        )
        .unwrap();
        let id = c.last_insert_rowid();
        for o in 0..rng.gen_range(1..5usize) {
            let hops: Vec<String> = (0..rng.gen_range(0..4usize))
                .map(|_| {
                    format!(
                        "\"{}\"",
                        &keys[rng.gen_range(0..n_nodes)][..4].to_uppercase()
                    )
                })
                .collect();
            c.execute(
                "INSERT INTO observations (transmission_id, observer_idx, direction, snr, rssi, score, path_json, timestamp) VALUES (?1, ?2, 'rx', 4.5, -101, 1, ?3, ?4)",
                params![id, (o * 7 + i) % n_obs + 1, format!("[{}]", hops.join(",")), t + o as i64],
            )
            .unwrap();
        }
    }
    c.execute_batch("COMMIT").unwrap();
    drop(c);
    path
}

/// A migrated database with work for every backfill task: ADVERTs without
/// from_pubkey (half with decoded_json.pubKey, half only in raw_hex),
/// observations with their own raw_hex (route types with/without transport
/// codes, 1–3 byte hashes taken from node keys) and no path_json /
/// resolved_path, nodes and neighbor edges to resolve hops against, and a
/// few undecodable raw_hex values.
pub fn synthetic_backfill(dir: &Path, name: &str, transmissions: usize, seed: u64) -> PathBuf {
    let path = common::fresh_db(dir, name);
    let c = Connection::open(&path).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    c.execute_batch("BEGIN").unwrap();
    let n_nodes = 120usize;
    let keys: Vec<Vec<u8>> = (0..n_nodes)
        .map(|_| (0..32).map(|_| rng.gen::<u8>()).collect())
        .collect();
    for (i, k) in keys.iter().enumerate() {
        c.execute(
            "INSERT INTO nodes (public_key, name, role, last_seen, first_seen) VALUES (?1, ?2, 'repeater', '2026-05-17T10:00:00Z', '2026-05-01T10:00:00Z')",
            params![hex::encode(k), format!("n{i}")],
        )
        .unwrap();
        for d in 1..3 {
            let (a, b) = (hex::encode(k), hex::encode(&keys[(i + d) % n_nodes]));
            let (a, b) = if a < b { (a, b) } else { (b, a) };
            c.execute(
                "INSERT OR IGNORE INTO neighbor_edges (node_a, node_b, count, last_seen) VALUES (?1, ?2, 3, '2026-05-17T09:00:00Z')",
                params![a, b],
            )
            .unwrap();
        }
    }
    for i in 0..8 {
        c.execute(
            "INSERT INTO observers (id, name, last_seen) VALUES (?1, ?2, '2026-05-17T10:00:00Z')",
            params![format!("OBSERVER{i:02}"), format!("o{i}")],
        )
        .unwrap();
    }
    for i in 0..transmissions {
        let advert = i % 3 == 0;
        let ptype: u8 = if advert { 4 } else { [1u8, 2, 5, 6][i % 4] };
        let route: u8 = rng.gen_range(0..4);
        let origin = &keys[rng.gen_range(0..n_nodes)];
        let mut payload: Vec<u8> = Vec::new();
        if advert {
            payload.extend_from_slice(origin);
            payload.extend_from_slice(&(1_779_000_000u32 + i as u32).to_le_bytes());
            payload.extend((0..64).map(|_| rng.gen::<u8>()));
            payload.push(0x81);
            payload.extend_from_slice(b"node");
        } else {
            payload.extend((0..rng.gen_range(4..40)).map(|_| rng.gen::<u8>()));
        }
        let packet = |hops: &[Vec<u8>], size: usize, rng: &mut ChaCha8Rng| -> String {
            let mut b = vec![route | (ptype << 2)];
            if route == 0 || route == 3 {
                b.extend((0..4).map(|_| rng.gen::<u8>()));
            }
            b.push((((size - 1) as u8) << 6) | hops.len() as u8);
            for h in hops {
                b.extend_from_slice(&h[..size]);
            }
            b.extend_from_slice(&payload);
            hex::encode(b)
        };
        let tx_raw = packet(&[], 1, &mut rng);
        let decoded = if advert && i % 2 == 0 {
            Some(format!(
                r#"{{"type":"ADVERT","pubKey":"{}"}}"#,
                hex::encode(origin)
            ))
        } else {
            None
        };
        let raw = if i % 97 == 5 {
            "zz".to_string()
        } else {
            tx_raw
        };
        c.execute(
            "INSERT INTO transmissions (raw_hex, hash, first_seen, route_type, payload_type, payload_version, decoded_json)
             VALUES (?1, ?2, '2026-05-17T10:00:00Z', ?3, ?4, 0, ?5)",
            params![raw, format!("{:016x}", rng.gen::<u64>()), route, ptype, decoded],
        )
        .unwrap();
        let tx = c.last_insert_rowid();
        for o in 0..rng.gen_range(1..4usize) {
            let size = rng.gen_range(1..4usize);
            let start = rng.gen_range(0..n_nodes);
            let hops: Vec<Vec<u8>> = (0..rng.gen_range(0..5usize))
                .map(|h| keys[(start + h) % n_nodes].clone())
                .collect();
            let raw = if (i + o) % 89 == 7 {
                "abc".to_string()
            } else {
                packet(&hops, size, &mut rng)
            };
            c.execute(
                "INSERT INTO observations (transmission_id, observer_idx, direction, snr, rssi, timestamp, raw_hex)
                 VALUES (?1, ?2, 'rx', 5.0, -95, ?3, ?4)",
                params![tx, (o % 8) as i64 + 1, 1_779_000_000 + i as i64, raw],
            )
            .unwrap();
        }
    }
    c.execute_batch("COMMIT").unwrap();
    drop(c);
    path
}
