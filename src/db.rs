//! Database access, the only place that opens SQLite files.
//!
//! Two handle types keep the read-only guarantee structural:
//! - [`ReadOnlyDb`] is opened with `SQLITE_OPEN_READ_ONLY` (never `immutable`,
//!   never creating anything), sets `PRAGMA query_only`, and its `prepare`
//!   refuses any statement SQLite does not classify as read-only. It exposes
//!   no `Connection`, so read-only commands have no way to write.
//! - [`WriteDb`] is opened read-write with an explicit busy timeout; every
//!   write goes through [`WriteDb::write`], one `BEGIN IMMEDIATE` transaction
//!   whose lock hold time is measured (`max_lock_hold_ms`).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use rusqlite::{Connection, OpenFlags, Params, Row, Statement, Transaction};

use crate::error::{is_busy, Failure};

/// Tables without which a file is not a CoreScope database.
pub const CORE_TABLES: [&str; 4] = ["transmissions", "observations", "nodes", "observers"];

/// corescope's own bookkeeping table (watermarks and cursors).
pub const STATE_TABLE: &str = "_corescope_state";
pub const STATE_TABLE_SQL: &str = "CREATE TABLE IF NOT EXISTS _corescope_state (\n  key        TEXT PRIMARY KEY,\n  value      TEXT NOT NULL,\n  updated_at TEXT NOT NULL\n)";

#[derive(Debug, Clone)]
pub struct OpenOptions {
    pub busy_timeout_ms: u64,
    /// Allow creating a new file (only `migrate --create` and `synth`).
    pub create: bool,
    /// The run lock to take once the file is known to be a database (`runlock`).
    pub run_lock: Option<crate::runlock::Spec>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            busy_timeout_ms: 5000,
            create: false,
            run_lock: None,
        }
    }
}

// ---------------------------------------------------------------------------
// Pre-open checks: classify files before SQLite sees them.

/// What the file looks like before SQLite opens it.
fn precheck(path: &Path, allow_missing: bool) -> anyhow::Result<bool> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if allow_missing {
                let parent = match path.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                if !parent.is_dir() {
                    return Err(Failure::Fatal(format!(
                        "cannot create {}: directory {} does not exist (create it first)",
                        path.display(),
                        parent.display()
                    ))
                    .into());
                }
                return Ok(false);
            }
            return Err(Failure::Fatal(format!(
                "database {} does not exist (check --db / CORESCOPE_DB; to create a new database use `corescope migrate --create`)",
                path.display()
            ))
            .into());
        }
        Err(e) => {
            return Err(Failure::Fatal(format!(
                "cannot access {}: {e} (check the path and its permissions)",
                path.display()
            ))
            .into())
        }
    };
    if meta.is_dir() {
        return Err(Failure::Fatal(format!(
            "{} is a directory, not a database file (give the path of the .db file)",
            path.display()
        ))
        .into());
    }
    let mut f = File::open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            Failure::Fatal(format!(
                "permission denied reading {} (run as the user that owns the database, or fix its permissions)",
                path.display()
            ))
        } else {
            Failure::Fatal(format!("cannot open {}: {e}", path.display()))
        }
    })?;
    let size = meta.len();
    if size == 0 {
        return Err(Failure::Fatal(format!(
            "{} is an empty file, not a SQLite database (wrong path? a CoreScope database is created by its ingestor or by `corescope migrate --create` on a new path)",
            path.display()
        ))
        .into());
    }
    let mut header = [0u8; 100];
    let n = read_up_to(&mut f, &mut header)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if n < 16 || &header[..16] != b"SQLite format 3\0" {
        return Err(Failure::Fatal(format!(
            "{} is not a SQLite database (no SQLite header; wrong path?)",
            path.display()
        ))
        .into());
    }
    if n < 100 {
        return Err(Failure::Fatal(format!(
            "{} is a truncated SQLite database ({size} bytes; restore it from a backup)",
            path.display()
        ))
        .into());
    }
    let raw_ps = u16::from_be_bytes([header[16], header[17]]) as u64;
    let page_size = if raw_ps == 1 { 65_536 } else { raw_ps };
    let change_counter = &header[24..28];
    let valid_for = &header[92..96];
    let header_pages = u32::from_be_bytes([header[28], header[29], header[30], header[31]]) as u64;
    let truncated = page_size < 512
        || size < page_size
        || (change_counter == valid_for && header_pages > 0 && size < header_pages * page_size);
    if truncated {
        return Err(Failure::Fatal(format!(
            "{} is a truncated or damaged SQLite database ({size} bytes, header says {header_pages} pages of {page_size}; restore it from a backup)",
            path.display()
        ))
        .into());
    }
    Ok(true)
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut total = 0;
    while total < buf.len() {
        let n = f.read(&mut buf[total..])?;
        if n == 0 {
            break;
        }
        total += n;
    }
    Ok(total)
}

/// Turn a SQLite error from opening or first use into a classified message.
fn classify(path: &Path, e: rusqlite::Error, writing: bool) -> anyhow::Error {
    use rusqlite::ErrorCode as C;
    let p = path.display();
    match e.sqlite_error_code() {
        Some(C::NotADatabase) => Failure::Fatal(format!("{p} is not a SQLite database (file is encrypted or not a database)")).into(),
        Some(C::DatabaseCorrupt) => Failure::Fatal(format!(
            "{p} is corrupt ({e}); run `corescope check --integrity`, and restore from a backup"
        ))
        .into(),
        Some(C::DatabaseBusy) | Some(C::DatabaseLocked) => Failure::Busy(format!(
            "{p} is locked by another writer beyond the busy timeout; try again next run (or raise --busy-timeout)"
        ))
        .into(),
        Some(C::ReadOnly) if !writing => Failure::Fatal(format!(
            "cannot read {p}: it is a WAL database and SQLite must create or initialise {p}-shm beside it to read it, but cannot (directory or -shm not writable); \
             run while the ingestor has the database open (its -shm then exists), or as the user that owns the database"
        ))
        .into(),
        Some(C::ReadOnly) if writing => Failure::Fatal(format!(
            "cannot write {p}: the file or its directory is read-only (run as the user that owns the database, or fix permissions; SQLite also needs to create {p}-wal/-journal beside it)"
        ))
        .into(),
        Some(C::CannotOpen) => Failure::Fatal(format!(
            "cannot open {p} ({e}); check the path and the permissions of the file and its directory"
        ))
        .into(),
        Some(C::PermissionDenied) => Failure::Fatal(format!(
            "permission denied on {p} (run as the user that owns the database)"
        ))
        .into(),
        Some(C::SystemIoFailure) => Failure::Fatal(format!("I/O error on {p}: {e}")).into(),
        Some(C::DiskFull) => Failure::Fatal(format!(
            "disk full while writing {p}; free space and run again (completed batches are kept, the rest resumes)"
        ))
        .into(),
        _ => anyhow::Error::new(e).context(format!("database {p}")),
    }
}

/// Verify SQLite can read the schema (detects NOTADB/CORRUPT early) and that
/// this is a CoreScope database.
fn verify(conn: &Connection, path: &Path, writing: bool, require_core: bool) -> anyhow::Result<()> {
    let names: Vec<String> = (|| -> rusqlite::Result<Vec<String>> {
        let mut st = conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table'")?;
        let rows = st.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect()
    })()
    .map_err(|e| classify(path, e, writing))?;
    if require_core && !names.iter().any(|n| n == "transmissions") {
        let missing: Vec<&str> = CORE_TABLES
            .iter()
            .copied()
            .filter(|t| !names.iter().any(|n| n == t))
            .collect();
        return Err(Failure::Fatal(format!(
            "{} is a SQLite database but not a CoreScope database: missing core tables {} (wrong path?)",
            path.display(),
            missing.join(", ")
        ))
        .into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Schema probes shared by both handles (take a Connection, so private to the crate).

pub(crate) fn table_exists(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

pub(crate) fn object_exists(conn: &Connection, kind: &str, name: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = ?1 AND name = ?2",
        [kind, name],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

pub(crate) fn columns(conn: &Connection, table: &str) -> rusqlite::Result<Vec<String>> {
    let mut st = conn.prepare("SELECT name FROM pragma_table_info(?1)")?;
    let rows = st.query_map([table], |r| r.get::<_, String>(0))?;
    rows.collect()
}

// ---------------------------------------------------------------------------

/// A read-only database handle. Has no way to write.
pub struct ReadOnlyDb {
    conn: Connection,
    path: PathBuf,
}

impl ReadOnlyDb {
    /// Open with SQLite's read-only flag. Never creates the file (or a
    /// directory entry), never uses `immutable`, works while another process
    /// writes in WAL mode.
    pub fn open(path: &Path, busy_timeout_ms: u64) -> anyhow::Result<ReadOnlyDb> {
        precheck(path, false)?;
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn =
            Connection::open_with_flags(path, flags).map_err(|e| classify(path, e, false))?;
        conn.busy_timeout(Duration::from_millis(busy_timeout_ms))
            .map_err(|e| classify(path, e, false))?;
        conn.pragma_update(None, "query_only", true)
            .map_err(|e| classify(path, e, false))?;
        verify(&conn, path, false, true)?;
        let jm: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap_or_else(|_| "unknown".to_string());
        log::info!("opened {} read-only (journal_mode={jm})", path.display());
        Ok(ReadOnlyDb {
            conn,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Refuse (exit 3) unless every table and column of the latest target
    /// exists (dry runs of write commands check what the real run would).
    pub fn require_ready(&self) -> anyhow::Result<()> {
        require_structure(&self.conn, &self.path, false)
    }

    /// Prepare a statement; refuses anything SQLite does not classify as read-only.
    pub fn prepare(&self, sql: &str) -> anyhow::Result<Statement<'_>> {
        let st = self
            .conn
            .prepare(sql)
            .map_err(|e| classify(&self.path, e, false))?;
        if !st.readonly() {
            return Err(Failure::Fatal(format!(
                "internal error: refusing a write statement on the read-only handle for {}: {sql}",
                self.path.display()
            ))
            .into());
        }
        Ok(st)
    }

    pub fn query_row<T, P: Params, F: FnOnce(&Row<'_>) -> rusqlite::Result<T>>(
        &self,
        sql: &str,
        params: P,
        f: F,
    ) -> anyhow::Result<T> {
        let mut st = self.prepare(sql)?;
        st.query_row(params, f)
            .map_err(|e| classify(&self.path, e, false))
    }

    pub fn table_exists(&self, name: &str) -> anyhow::Result<bool> {
        table_exists(&self.conn, name).map_err(|e| classify(&self.path, e, false))
    }

    /// Read a PRAGMA value (read-only pragmas such as `auto_vacuum`, `journal_mode`).
    pub fn pragma_i64(&self, name: &str) -> anyhow::Result<i64> {
        self.query_row(&format!("SELECT * FROM pragma_{name}"), [], |r| r.get(0))
    }

    pub fn pragma_text(&self, name: &str) -> anyhow::Result<String> {
        self.query_row(&format!("SELECT * FROM pragma_{name}"), [], |r| r.get(0))
    }

    /// Crate-internal: shared read helpers that take a `&Connection` (catalog
    /// probes, counting code). The connection is opened read-only with
    /// `query_only`, so even these cannot write.
    pub(crate) fn reader(&self) -> &Connection {
        &self.conn
    }
}

/// A read-write handle. All writes go through [`WriteDb::write`].
pub struct WriteDb {
    conn: Connection,
    path: PathBuf,
    created: bool,
    max_hold: Duration,
    last_hold: Duration,
    transactions: u64,
    busy_timeout_ms: u64,
}

impl WriteDb {
    pub fn open(path: &Path, opts: &OpenOptions) -> anyhow::Result<WriteDb> {
        let exists = precheck(path, opts.create)?;
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if !exists {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let conn = Connection::open_with_flags(path, flags).map_err(|e| classify(path, e, true))?;
        conn.busy_timeout(Duration::from_millis(opts.busy_timeout_ms))
            .map_err(|e| classify(path, e, true))?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(|e| classify(path, e, true))?;
        if exists {
            verify(&conn, path, true, true)?;
        }
        if let Some(spec) = &opts.run_lock {
            crate::runlock::hold(path, spec)?;
        }
        test_hook_disk_full(&conn).map_err(|e| classify(path, e, true))?;
        let jm: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .map_err(|e| classify(path, e, true))?;
        log::info!(
            "opened {} read-write (journal_mode={jm}{})",
            path.display(),
            if exists { "" } else { ", new file" }
        );
        Ok(WriteDb {
            conn,
            path: path.to_path_buf(),
            created: !exists,
            max_hold: Duration::ZERO,
            last_hold: Duration::ZERO,
            transactions: 0,
            busy_timeout_ms: opts.busy_timeout_ms,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when this open created the file.
    pub fn created(&self) -> bool {
        self.created
    }

    /// For reads outside a transaction (and for PRAGMAs that must run outside one).
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    pub fn busy_timeout_ms(&self) -> u64 {
        self.busy_timeout_ms
    }

    /// Run `f` inside one `BEGIN IMMEDIATE` transaction: commit on Ok, roll
    /// back on Err. The time from acquiring the write lock to commit/rollback
    /// is recorded as a lock hold.
    pub fn write<T>(
        &mut self,
        f: impl FnOnce(&Transaction<'_>) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let path = self.path.clone();
        let tx = Transaction::new_unchecked(&self.conn, rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| classify(&path, e, true))?;
        let start = Instant::now();
        let result = f(&tx);
        let outcome = match result {
            Ok(v) => tx.commit().map(|_| v).map_err(|e| classify(&path, e, true)),
            Err(err) => {
                let _ = tx.rollback();
                Err(classify_anyhow(&path, err))
            }
        };
        let held = start.elapsed();
        // Leave the write lock free for as long as it was held (at least
        // 2 ms) before this handle can take it again. A waiting writer (the
        // ingestor) retries from SQLite's busy handler, which sleeps between
        // attempts; back-to-back transactions leave it no window, and it
        // waited out whole multi-second data steps (issue 8 live-writer
        // suite: 330-1640 ms waits with 40-300 ms holds; with this pause
        // about 40 ms). Costs at most 2x the run time of a write phase.
        std::thread::sleep(held.max(Duration::from_millis(2)));
        self.transactions += 1;
        self.last_hold = held;
        if held > self.max_hold {
            self.max_hold = held;
        }
        log::debug!(
            "write transaction held the lock {:.1} ms",
            held.as_secs_f64() * 1000.0
        );
        outcome
    }

    /// How long the last [`WriteDb::write`] held the write lock (from
    /// `BEGIN IMMEDIATE` to commit or rollback). This, not the wall time
    /// around `write`, is what a [`Batcher`] must be fed: the wall time also
    /// counts the wait for the lock and the pause after the commit, and a
    /// batcher fed with those shrinks its batches to a single row under a
    /// small budget.
    pub fn last_hold(&self) -> Duration {
        self.last_hold
    }

    /// Longest lock hold of this run, in milliseconds.
    pub fn max_lock_hold_ms(&self) -> f64 {
        (self.max_hold.as_secs_f64() * 1000.0 * 10.0).round() / 10.0
    }

    #[cfg(test)]
    pub fn transactions(&self) -> u64 {
        self.transactions
    }

    /// Record a lock hold measured outside `write` (e.g. a PRAGMA that takes
    /// the write lock by itself, such as incremental_vacuum).
    pub fn record_hold(&mut self, held: Duration) {
        if held > self.max_hold {
            self.max_hold = held;
        }
    }

    pub fn table_exists(&self, name: &str) -> anyhow::Result<bool> {
        table_exists(&self.conn, name).map_err(|e| classify(&self.path, e, true))
    }

    pub fn columns(&self, table: &str) -> anyhow::Result<Vec<String>> {
        columns(&self.conn, table).map_err(|e| classify(&self.path, e, true))
    }

    /// Prepare the connection for a long run of batched write transactions:
    /// in WAL mode `synchronous = NORMAL` (each commit stays atomic; a power
    /// loss can only drop the latest batches, which carry their own cursor or
    /// watermark) and no automatic checkpoint inside our commits (it would
    /// lengthen a lock hold; call [`WriteDb::checkpoint_passive`] between
    /// transactions instead). Returns whether the database is in WAL mode.
    pub fn tune_for_batches(&self) -> anyhow::Result<bool> {
        let mode: String = self
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .map_err(|e| classify(&self.path, e, true))?;
        let wal = mode.eq_ignore_ascii_case("wal");
        if wal {
            self.conn
                .execute_batch("PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0;")
                .map_err(|e| classify(&self.path, e, true))?;
        }
        Ok(wal)
    }

    /// `PRAGMA wal_checkpoint(PASSIVE)` outside any transaction: waits for
    /// nobody, never fails the run (a problem is logged).
    pub fn checkpoint_passive(&self) {
        if let Err(e) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
        {
            log::debug!("passive checkpoint of {}: {e}", self.path.display());
        }
    }

    /// Refuse (exit 3) unless every table and column of the latest target
    /// exists; then make sure corescope's state table exists.
    pub fn require_ready(&mut self) -> anyhow::Result<()> {
        require_structure(&self.conn, &self.path, true)?;
        if !self.table_exists(STATE_TABLE)? {
            self.write(|tx| {
                tx.execute_batch(STATE_TABLE_SQL)?;
                Ok(())
            })?;
        }
        Ok(())
    }
}

/// TEST-ONLY HOOK (issue 8, "disk full during a write command"): when the
/// environment variable `CORESCOPE_TEST_DISK_FULL_AFTER_PAGES=N` is set, cap
/// the write connection at its current page count + N pages
/// (`PRAGMA max_page_count`), so the next growth fails with SQLITE_FULL
/// exactly as a full disk would. Unset (always, in production) it does nothing.
const TEST_DISK_FULL_ENV: &str = "CORESCOPE_TEST_DISK_FULL_AFTER_PAGES";

fn test_hook_disk_full(conn: &Connection) -> rusqlite::Result<()> {
    let Some(extra) = std::env::var(TEST_DISK_FULL_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok())
    else {
        return Ok(());
    };
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let cap: i64 = conn.query_row(
        &format!("PRAGMA max_page_count = {}", pages + extra.max(0)),
        [],
        |r| r.get(0),
    )?;
    log::warn!("{TEST_DISK_FULL_ENV} set: database capped at {cap} pages (test hook)");
    Ok(())
}

/// Final classification of a command's error (called once by main): a
/// SQLite corruption, disk-full, read-only or not-a-database error anywhere
/// in the chain that no layer classified becomes one line naming the path
/// and what to do. Other errors are returned unchanged.
pub fn classify_final(path: &Path, err: anyhow::Error) -> anyhow::Error {
    use rusqlite::ErrorCode as C;
    if err.chain().any(|c| c.downcast_ref::<Failure>().is_some()) {
        return err;
    }
    let Some(code) = err
        .chain()
        .find_map(|c| c.downcast_ref::<rusqlite::Error>())
        .and_then(|e| e.sqlite_error_code())
    else {
        return err;
    };
    let p = path.display();
    let detail = format!("{err:#}").replace('\n', " ");
    let msg = match code {
        C::DatabaseCorrupt => format!(
            "{p} is corrupt ({detail}); run `corescope check --integrity`, and restore from a backup"
        ),
        C::NotADatabase => {
            format!("{p} is not a SQLite database or is damaged ({detail}); restore from a backup")
        }
        C::DiskFull => format!(
            "disk full while writing {p} ({detail}); free space and run again (completed batches are kept, the rest resumes)"
        ),
        C::ReadOnly => format!(
            "cannot write {p}: the file or its directory is read-only ({detail}); run as the user that owns the database, or fix permissions"
        ),
        _ => return err,
    };
    Failure::Fatal(msg).into()
}

/// Exit 3 with the missing tables/columns unless the structure of the
/// latest target is there.
fn require_structure(conn: &Connection, path: &Path, writing: bool) -> anyhow::Result<()> {
    let missing = crate::catalog::missing_structure(conn, crate::catalog::Target::Latest)
        .map_err(|e| classify(path, e, writing))?;
    if !missing.is_empty() {
        return Err(Failure::NotReady(format!(
            "{} is not migrated (missing {}); run `corescope migrate --db {}` first",
            path.display(),
            missing.join(", "),
            path.display()
        ))
        .into());
    }
    Ok(())
}

/// Map a rusqlite error inside an anyhow chain to a classified message,
/// leaving other errors as they are.
fn classify_anyhow(path: &Path, err: anyhow::Error) -> anyhow::Error {
    if err.downcast_ref::<Failure>().is_some() {
        return err;
    }
    match err.downcast::<rusqlite::Error>() {
        Ok(e) => {
            if is_busy(&e)
                || matches!(
                    e.sqlite_error_code(),
                    Some(rusqlite::ErrorCode::DatabaseCorrupt)
                        | Some(rusqlite::ErrorCode::DiskFull)
                        | Some(rusqlite::ErrorCode::ReadOnly)
                        | Some(rusqlite::ErrorCode::NotADatabase)
                )
            {
                classify(path, e, true)
            } else {
                anyhow::Error::new(e).context(format!("database {}", path.display()))
            }
        }
        Err(other) => other,
    }
}

/// The `-wal` file beside a database (byte-exact, also for non-UTF-8 paths).
pub fn wal_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_os_string();
    s.push("-wal");
    PathBuf::from(s)
}

/// Size of a file, 0 when it does not exist.
pub fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

// ---------------------------------------------------------------------------
// State table helpers.

pub fn state_get(conn: &Connection, key: &str) -> anyhow::Result<Option<String>> {
    if !table_exists(conn, STATE_TABLE)? {
        return Ok(None);
    }
    let v = conn
        .query_row(
            "SELECT value FROM _corescope_state WHERE key = ?1",
            [key],
            |r| r.get::<_, String>(0),
        )
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })?;
    Ok(v)
}

pub fn state_set(conn: &Connection, key: &str, value: &str) -> anyhow::Result<()> {
    conn.execute(
        "INSERT INTO _corescope_state (key, value, updated_at) VALUES (?1, ?2, strftime('%Y-%m-%dT%H:%M:%SZ','now'))
         ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        [key, value],
    )?;
    Ok(())
}

pub fn state_delete(conn: &Connection, key: &str) -> anyhow::Result<()> {
    if table_exists(conn, STATE_TABLE)? {
        conn.execute("DELETE FROM _corescope_state WHERE key = ?1", [key])?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Batching and deadlines.

/// Adaptive batch size: keeps one transaction near half of `max_lock_ms`.
#[derive(Debug, Clone)]
pub struct Batcher {
    size: usize,
    min: usize,
    max: usize,
    target: Duration,
    limit: Duration,
}

impl Batcher {
    /// Starts at 500 rows, or fewer under a small budget (5 rows per ms of
    /// budget, at least 50): the first batch has no measurement yet.
    pub fn new(max_lock_ms: u64) -> Batcher {
        let initial = usize::try_from(max_lock_ms.saturating_mul(5))
            .unwrap_or(500)
            .clamp(50, 500);
        Batcher::with_bounds(max_lock_ms, initial, 1, 200_000)
    }

    pub fn with_bounds(max_lock_ms: u64, initial: usize, min: usize, max: usize) -> Batcher {
        let limit = Duration::from_millis(max_lock_ms.max(1));
        Batcher {
            size: initial.clamp(min.max(1), max.max(1)),
            min: min.max(1),
            max: max.max(1),
            target: limit / 2,
            limit,
        }
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Feed back how long a batch of `rows` rows held the lock.
    pub fn observe(&mut self, rows: usize, elapsed: Duration) {
        if rows == 0 {
            return;
        }
        let el = elapsed.as_secs_f64().max(1e-6);
        let per_row = el / rows as f64;
        let ideal = (self.target.as_secs_f64() / per_row).floor();
        let ideal = if ideal.is_finite() {
            ideal as usize
        } else {
            self.max
        };
        let next = if elapsed > self.limit {
            // Over budget: shrink at once, at least halve.
            ideal.min(self.size / 2)
        } else if rows < self.size {
            // A short batch (end of data) says little about speed.
            self.size
        } else {
            // Grow at most 2× per step, shrink to the estimate.
            ideal.min(self.size.saturating_mul(2))
        };
        self.size = next.clamp(self.min, self.max);
    }
}

/// Stop at a batch boundary after `--max-seconds`.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    end: Option<Instant>,
}

impl Deadline {
    pub fn new(max_seconds: Option<f64>) -> Deadline {
        Deadline {
            // The CLI bounds --max-seconds; this never panics anyway (NaN,
            // negative or huge values mean no deadline).
            end: max_seconds
                .and_then(|s| Duration::try_from_secs_f64(s).ok())
                .and_then(|d| Instant::now().checked_add(d)),
        }
    }

    pub fn expired(&self) -> bool {
        matches!(self.end, Some(end) if Instant::now() >= end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdb() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.db");
        let c = Connection::open(&p).unwrap();
        c.execute_batch(
            "CREATE TABLE transmissions(id INTEGER PRIMARY KEY, x TEXT);
             CREATE TABLE observations(id INTEGER PRIMARY KEY);
             CREATE TABLE nodes(public_key TEXT PRIMARY KEY);
             CREATE TABLE observers(id TEXT PRIMARY KEY);
             INSERT INTO transmissions(x) VALUES ('a');",
        )
        .unwrap();
        (dir, p)
    }

    #[test]
    fn read_only_handle_refuses_writes() {
        let (_d, p) = tmpdb();
        let db = ReadOnlyDb::open(&p, 1000).unwrap();
        let e = db
            .prepare("DELETE FROM transmissions")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("refusing a write statement"), "{e}");
        assert!(db
            .prepare("INSERT INTO transmissions(x) VALUES ('b')")
            .is_err());
        assert!(db.prepare("CREATE TABLE z(a)").is_err());
        // Even through the crate-internal reader, SQLite refuses (read-only + query_only).
        assert!(db
            .reader()
            .execute("DELETE FROM transmissions", [])
            .is_err());
        let n: i64 = db
            .query_row("SELECT count(*) FROM transmissions", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn write_records_hold_and_rolls_back() {
        let (_d, p) = tmpdb();
        let mut db = WriteDb::open(&p, &OpenOptions::default()).unwrap();
        let r: anyhow::Result<()> = db.write(|tx| {
            tx.execute("INSERT INTO transmissions(x) VALUES ('b')", [])?;
            anyhow::bail!("boom")
        });
        assert!(r.is_err());
        let n: i64 = db
            .conn()
            .query_row("SELECT count(*) FROM transmissions", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
        db.write(|tx| {
            std::thread::sleep(Duration::from_millis(5));
            tx.execute("INSERT INTO transmissions(x) VALUES ('c')", [])?;
            Ok(())
        })
        .unwrap();
        assert!(db.max_lock_hold_ms() >= 5.0);
        assert_eq!(db.transactions(), 2);
    }

    #[test]
    fn state_roundtrip() {
        let (_d, p) = tmpdb();
        let mut db = WriteDb::open(&p, &OpenOptions::default()).unwrap();
        assert_eq!(state_get(db.conn(), "k").unwrap(), None);
        db.write(|tx| {
            tx.execute_batch(STATE_TABLE_SQL)?;
            state_set(tx, "k", "1")?;
            state_set(tx, "k", "2")?;
            Ok(())
        })
        .unwrap();
        assert_eq!(state_get(db.conn(), "k").unwrap().as_deref(), Some("2"));
    }

    #[test]
    fn batcher_adapts() {
        let mut b = Batcher::with_bounds(200, 1000, 1, 1_000_000);
        b.observe(1000, Duration::from_millis(10)); // 10 µs/row → ideal 10 000, capped at 2×
        assert_eq!(b.size(), 2000);
        b.observe(2000, Duration::from_millis(400)); // over budget: 200 µs/row → 500
        assert_eq!(b.size(), 500);
        b.observe(10, Duration::from_millis(1)); // short batch: unchanged
        assert_eq!(b.size(), 500);
    }

    #[test]
    fn first_batch_scales_with_the_budget() {
        assert_eq!(Batcher::new(20).size(), 100);
        assert_eq!(Batcher::new(200).size(), 500);
        assert_eq!(Batcher::new(5000).size(), 500);
        assert_eq!(Batcher::new(1).size(), 50);
    }

    #[test]
    fn a_fixed_commit_cost_below_the_target_keeps_batches_growing() {
        // 20 ms budget (target 10 ms): 2 ms fixed + 5 us/row.
        let mut b = Batcher::new(20);
        for _ in 0..10 {
            let n = b.size();
            b.observe(n, Duration::from_micros(2000 + 5 * n as u64));
        }
        assert!(b.size() >= 1000, "{}", b.size());
    }

    #[test]
    fn last_hold_is_the_transaction_not_the_pause_after_it() {
        let (_d, p) = tmpdb();
        let mut db = WriteDb::open(&p, &OpenOptions::default()).unwrap();
        let t0 = Instant::now();
        db.write(|tx| {
            std::thread::sleep(Duration::from_millis(30));
            tx.execute("INSERT INTO transmissions(x) VALUES ('d')", [])?;
            Ok(())
        })
        .unwrap();
        let wall = t0.elapsed();
        let held = db.last_hold();
        assert!(held >= Duration::from_millis(30));
        // write() pauses as long as it held the lock after the commit.
        assert!(wall >= held * 2, "{wall:?} vs {held:?}");
    }

    #[test]
    fn deadline() {
        assert!(!Deadline::new(None).expired());
        assert!(Deadline::new(Some(0.0)).expired());
        assert!(!Deadline::new(Some(3600.0)).expired());
        for odd in [1e19, 1e300, f64::INFINITY, f64::NAN, -1.0] {
            assert!(!Deadline::new(Some(odd)).expired(), "{odd}");
        }
    }

    #[test]
    fn classified_open_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.db");
        let e = ReadOnlyDb::open(&missing, 100).err().unwrap().to_string();
        assert!(e.contains("does not exist") && e.contains("nope.db"), "{e}");
        assert!(!missing.exists());
        let e = WriteDb::open(&missing, &OpenOptions::default())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
        assert!(!missing.exists());
        let empty = dir.path().join("empty.db");
        std::fs::write(&empty, b"").unwrap();
        let e = ReadOnlyDb::open(&empty, 100).err().unwrap().to_string();
        assert!(e.contains("empty file"), "{e}");
        let text = dir.path().join("t.txt");
        std::fs::write(&text, b"hello world, this is not sqlite at all").unwrap();
        let e = ReadOnlyDb::open(&text, 100).err().unwrap().to_string();
        assert!(e.contains("not a SQLite database"), "{e}");
        let e = ReadOnlyDb::open(dir.path(), 100).err().unwrap().to_string();
        assert!(e.contains("is a directory"), "{e}");
        let other = dir.path().join("other.db");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE foo(a)")
            .unwrap();
        let e = ReadOnlyDb::open(&other, 100).err().unwrap().to_string();
        assert!(
            e.contains("not a CoreScope database") && e.contains("transmissions"),
            "{e}"
        );
    }
}
