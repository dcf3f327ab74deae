//! Opening a database: the only place that opens SQLite files.
//!
//! Two handle types keep the read-only guarantee structural:
//! - [`ReadOnlyDb`] is opened with `SQLITE_OPEN_READ_ONLY` (never `immutable`,
//!   never creating anything), sets `PRAGMA query_only`, and its `prepare`
//!   refuses any statement SQLite does not classify as read-only. It exposes
//!   no `Connection`, so read-only commands have no way to write.
//! - [`WriteDb`] is opened read-write with an explicit busy timeout; every
//!   write goes through [`WriteDb::write`], one `BEGIN IMMEDIATE` transaction
//!   whose lock hold time is measured (`max_lock_hold_ms`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, Params, Row, Statement, Transaction};

use super::error::{classify, classify_anyhow, classify_on, system_errno};
use super::precheck::precheck;
use super::probe::{columns, table_exists};
use super::state::{state_table_sql, STATE_TABLE};
use crate::error::Failure;

#[derive(Debug, Clone)]
pub struct OpenOptions {
    pub busy_timeout_ms: u64,
    /// Allow creating a new file (only `migrate --create` and `synth`).
    pub create: bool,
    /// The run lock to take once the file is known to be a database (`runlock`).
    pub run_lock: Option<super::runlock::Spec>,
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
// What a CoreScope database is: the one definition every command uses.

/// The core of every CoreScope database: these tables with these key
/// columns exist in every database CoreScope has written, from the oldest
/// captures (March 2026: no `_migrations`, no secondary tables) to today's.
/// Everything else is added by migrations and may be missing. A file
/// without them is refused before anything is written.
pub const CORE_SCHEMA: [(&str, &[&str]); 4] = [
    ("transmissions", &["id", "raw_hex", "hash", "first_seen"]),
    ("observations", &["id", "transmission_id", "timestamp"]),
    ("nodes", &["public_key"]),
    ("observers", &["id"]),
];

/// `transmissions(id, raw_hex, hash, first_seen), observations(…), …`
fn core_schema_text() -> String {
    CORE_SCHEMA
        .iter()
        .map(|(t, cols)| format!("{t}({})", cols.join(", ")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What keeps `conn` from being a CoreScope database: the missing core
/// tables, then the missing key columns (`table.column`) of the others.
pub(crate) fn core_missing(
    conn: &Connection,
) -> rusqlite::Result<(Vec<&'static str>, Vec<String>)> {
    let mut tables = Vec::new();
    let mut cols = Vec::new();
    for (table, keys) in CORE_SCHEMA {
        if !table_exists(conn, table)? {
            tables.push(table);
            continue;
        }
        let have = columns(conn, table)?;
        for k in keys {
            if !have.iter().any(|c| c.eq_ignore_ascii_case(k)) {
                cols.push(format!("{table}.{k}"));
            }
        }
    }
    Ok((tables, cols))
}

/// Verify SQLite can read the schema (detects NOTADB/CORRUPT early) and that
/// this is a CoreScope database ([`CORE_SCHEMA`]). With `allow_empty` (only
/// `migrate --create`) a SQLite file without any table passes; returns
/// whether the schema is empty.
fn verify(
    conn: &Connection,
    path: &Path,
    writing: bool,
    allow_empty: bool,
) -> anyhow::Result<bool> {
    let objects: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(|e| classify_on(conn, path, e, writing))?;
    if objects == 0 && allow_empty {
        return Ok(true);
    }
    let (tables, cols) = core_missing(conn).map_err(|e| classify_on(conn, path, e, writing))?;
    if tables.is_empty() && cols.is_empty() {
        return Ok(false);
    }
    let mut what = Vec::new();
    if !tables.is_empty() {
        what.push(format!("missing core tables {}", tables.join(", ")));
    }
    if !cols.is_empty() {
        what.push(format!("missing key columns {}", cols.join(", ")));
    }
    Err(Failure::Fatal(format!(
        "{} is a SQLite database but not a CoreScope database: {} (every CoreScope database has {}); wrong path? Nothing was changed",
        path.display(),
        what.join("; "),
        core_schema_text()
    ))
    .into())
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
            .map_err(|e| classify_on(&conn, path, e, false))?;
        conn.pragma_update(None, "query_only", true)
            .map_err(|e| classify_on(&conn, path, e, false))?;
        verify(&conn, path, false, false)?;
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

    /// Tests only: the connection, to install a statement trace.
    #[cfg(test)]
    pub(crate) fn reader_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

/// What a write handle keeps about its last transaction until its next one
/// ([`WriteDb::wait_for_turn`]).
struct Turn {
    /// When the lock became free.
    free_since: Instant,
    /// How long to leave it free at least ([`super::engine::fairness_pause`]).
    pause: Duration,
    /// `PRAGMA data_version` right after the commit.
    seen: Option<i64>,
}

/// What one PASSIVE checkpoint reports: another connection's checkpoint
/// was running (SQLite's `busy`), frames in the WAL, frames copied.
pub type CheckpointResult = (bool, i64, i64);

/// A read-write handle. All writes go through [`WriteDb::write`].
pub struct WriteDb {
    conn: Connection,
    path: PathBuf,
    created: bool,
    max_hold: Duration,
    last_hold: Duration,
    transactions: u64,
    busy_timeout_ms: u64,
    /// Frames in the WAL after this connection's last commit, set by the
    /// WAL hook [`WriteDb::tune_for_batches`] installs. Boxed so that its
    /// address (the hook's argument) never moves; declared after `conn`,
    /// so the connection (and its hook) is dropped first.
    wal_frames: Box<AtomicU32>,
    /// After a transaction: when the lock became free, how long to leave
    /// it free and `data_version` then. The next transaction waits for
    /// its turn ([`WriteDb::wait_for_turn`]); the last one of a run never
    /// waits for nothing.
    turn: Option<Turn>,
}

/// SQLite's WAL hook: called after each commit of the connection with the
/// number of frames in the WAL; stores it for [`WriteDb::wal_frames`].
/// Replaces the connection's auto-checkpoint (which is this same hook with
/// a checkpoint inside it): the batch engine decides when to checkpoint.
unsafe extern "C" fn record_wal_frames(
    arg: *mut std::os::raw::c_void,
    _db: *mut rusqlite::ffi::sqlite3,
    _name: *const std::os::raw::c_char,
    frames: std::os::raw::c_int,
) -> std::os::raw::c_int {
    // SAFETY: `arg` is the address of the `AtomicU32` boxed in the WriteDb
    // that owns the connection; the box is dropped only after the
    // connection is closed, so it is valid whenever SQLite calls the hook.
    let cell = unsafe { &*arg.cast::<AtomicU32>() };
    cell.store(u32::try_from(frames).unwrap_or(0), Ordering::Relaxed);
    rusqlite::ffi::SQLITE_OK
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
            .map_err(|e| classify_on(&conn, path, e, true))?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(|e| classify_on(&conn, path, e, true))?;
        // An existing file without any table is new to `migrate --create`
        // (e.g. one killed before its first table).
        let empty = if exists {
            verify(&conn, path, true, opts.create)?
        } else {
            true
        };
        if let Some(spec) = &opts.run_lock {
            super::runlock::hold(path, spec)?;
        }
        test_hook_disk_full(&conn).map_err(|e| classify_on(&conn, path, e, true))?;
        let jm: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .map_err(|e| classify_on(&conn, path, e, true))?;
        log::info!(
            "opened {} read-write (journal_mode={jm}{})",
            path.display(),
            if empty { ", new file" } else { "" }
        );
        Ok(WriteDb {
            conn,
            path: path.to_path_buf(),
            created: empty,
            max_hold: Duration::ZERO,
            last_hold: Duration::ZERO,
            transactions: 0,
            busy_timeout_ms: opts.busy_timeout_ms,
            wal_frames: Box::new(AtomicU32::new(0)),
            turn: None,
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
    /// is recorded as a lock hold. The lock is then left free for others
    /// before corescope's next transaction ([`WriteDb::wait_for_turn`]).
    pub fn write<T>(
        &mut self,
        f: impl FnOnce(&Transaction<'_>) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        self.write_unpaused(f)
    }

    /// Before a transaction: leave the write lock free until the pause
    /// after the previous one has passed ([`super::engine::fairness_pause`]:
    /// long enough for a writer waiting in SQLite's busy handler to retry;
    /// whatever corescope did in between counts), then while another
    /// connection keeps writing ([`super::engine::yield_to_other_writers`]).
    fn wait_for_turn(&mut self) {
        let Some(Turn {
            free_since,
            pause,
            seen,
        }) = self.turn.take()
        else {
            return;
        };
        std::thread::sleep(pause.saturating_sub(free_since.elapsed()));
        let yielded = super::engine::yield_to_other_writers(self, seen, free_since);
        log::trace!(
            "lock left free for {:.1} ms (pause {:.0} ms, then {:.1} ms yielding to another writer)",
            free_since.elapsed().as_secs_f64() * 1000.0,
            pause.as_secs_f64() * 1000.0,
            yielded.as_secs_f64() * 1000.0,
        );
    }

    /// [`WriteDb::write`] (the same; kept for the batch engine).
    pub(super) fn write_unpaused<T>(
        &mut self,
        f: impl FnOnce(&Transaction<'_>) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        self.wait_for_turn();
        let path = self.path.clone();
        let tx = Transaction::new_unchecked(&self.conn, rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| classify(&path, e, true))?;
        let start = Instant::now();
        let result = f(&tx);
        let outcome = match result {
            Ok(v) => tx
                .commit()
                .map(|()| v)
                .map_err(|e| classify_on(&self.conn, &path, e, true)),
            Err(err) => {
                let errno = system_errno(&self.conn);
                let _ = tx.rollback();
                Err(classify_anyhow(&path, err, errno))
            }
        };
        let held = start.elapsed();
        self.turn = Some(Turn {
            free_since: Instant::now(),
            pause: super::engine::fairness_pause(held),
            seen: self.data_version(),
        });
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
    /// watermark) and, instead of SQLite's automatic checkpoint inside our
    /// `COMMIT`, a WAL hook that records the WAL's frame count after each
    /// commit ([`WriteDb::wal_frames`]), so that the batch engine runs the
    /// checkpoint itself after the commit (outside the measured lock hold).
    /// Returns whether the database is in WAL mode.
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
            let arg: *const AtomicU32 = &*self.wal_frames;
            // SAFETY: the handle is this open connection's; the argument
            // points into `self.wal_frames`, which outlives the connection
            // (see the field), and `record_wal_frames` only stores into it.
            // Registering replaces the auto-checkpoint hook turned off above.
            unsafe {
                rusqlite::ffi::sqlite3_wal_hook(
                    self.conn.handle(),
                    Some(record_wal_frames),
                    arg.cast_mut().cast(),
                );
            }
        }
        Ok(wal)
    }

    /// `PRAGMA data_version`: changes whenever another connection commits
    /// (this connection's own commits leave it alone). None on an error.
    pub fn data_version(&self) -> Option<i64> {
        self.conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .ok()
    }

    /// True when no other connection holds the write lock right now: a
    /// `BEGIN IMMEDIATE` that does not wait (busy timeout 0 for that one
    /// statement), rolled back at once. Any error other than "busy" counts
    /// as free, so that the real transaction reports it.
    pub fn write_lock_free(&self) -> bool {
        if self.conn.busy_timeout(Duration::ZERO).is_err() {
            return true;
        }
        let begun = self.conn.execute_batch("BEGIN IMMEDIATE");
        let _ = self
            .conn
            .busy_timeout(Duration::from_millis(self.busy_timeout_ms));
        match begun {
            Ok(()) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                true
            }
            Err(e) => e.sqlite_error_code() != Some(rusqlite::ErrorCode::DatabaseBusy),
        }
    }

    /// Frames in the WAL after this connection's last commit (0 until
    /// [`WriteDb::tune_for_batches`] installed the hook, or when not in WAL
    /// mode). SQLite's auto-checkpoint compares the same number with
    /// `wal_autocheckpoint` (1000 by default, the ingestor's setting).
    pub fn wal_frames(&self) -> u32 {
        self.wal_frames.load(Ordering::Relaxed)
    }

    /// `PRAGMA wal_checkpoint(PASSIVE)` outside any transaction: waits for
    /// nobody, never fails the run (a problem is logged). Returns its
    /// [`CheckpointResult`] (None on an error).
    pub fn checkpoint_passive(&self) -> Option<CheckpointResult> {
        match self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((
                    r.get::<_, i64>(0)? != 0,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            }) {
            Ok(v) => Some(v),
            Err(e) => {
                log::debug!("passive checkpoint of {}: {e}", self.path.display());
                None
            }
        }
    }

    /// Refuse (exit 3) unless every table and column of the latest target
    /// exists; then make sure corescope's state table exists.
    pub fn require_ready(&mut self) -> anyhow::Result<()> {
        require_structure(&self.conn, &self.path, true)?;
        if !self.table_exists(STATE_TABLE)? {
            self.write(|tx| {
                tx.execute_batch(&state_table_sql())?;
                Ok(())
            })?;
        }
        Ok(())
    }
}

/// TEST-ONLY HOOK (for the "disk full during a write command" test): when the
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

/// Exit 3 with the missing tables/columns unless the structure of the
/// latest target is there.
fn require_structure(conn: &Connection, path: &Path, writing: bool) -> anyhow::Result<()> {
    let missing = super::probe::missing_structure(conn, crate::catalog::Target::Latest)
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

/// The `-wal` file beside a database (byte-exact, also for non-UTF-8 paths).
pub fn wal_path(db: &Path) -> PathBuf {
    sidecar(db, "-wal")
}

/// `PATH<suffix>` (`-wal`, `-shm`, `-journal`), byte-exact.
pub fn sidecar(db: &Path, suffix: &str) -> PathBuf {
    let mut s = db.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// Size of a file, 0 when it does not exist.
pub fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

#[cfg(test)]
pub(crate) mod tests;
