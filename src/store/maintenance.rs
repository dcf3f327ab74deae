//! Space and WAL maintenance on an open write handle: incremental vacuum
//! under the lock budget and WAL checkpoints (shared by `vacuum` and
//! `prune`).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};

use super::{file_len, wal_path, WriteDb};
use crate::error::is_busy;

/// `PRAGMA auto_vacuum` value as a name.
pub fn auto_vacuum_name(v: i64) -> &'static str {
    match v {
        0 => "none",
        1 => "full",
        2 => "incremental",
        _ => "unknown",
    }
}

/// Result of one incremental vacuum.
#[derive(Debug, Clone, Default)]
pub struct VacuumResult {
    pub auto_vacuum: i64,
    pub pages_requested: i64,
    pub vacuumed_pages: i64,
    pub freed_bytes: i64,
    pub freelist_after: i64,
    pub busy: bool,
    pub ran: bool,
    pub note: Option<String>,
}

impl VacuumResult {
    pub fn to_json(&self) -> Value {
        json!({
            "auto_vacuum": auto_vacuum_name(self.auto_vacuum),
            "pages_requested": self.pages_requested,
            "vacuumed_pages": self.vacuumed_pages,
            "freed_bytes": self.freed_bytes,
            "freelist_pages_after": self.freelist_after,
            "busy": self.busy,
            "ran": self.ran,
            "note": self.note,
        })
    }
}

pub fn pragma_i64(db: &WriteDb, name: &str) -> anyhow::Result<i64> {
    db.conn()
        .query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
        .with_context(|| format!("reading PRAGMA {name}"))
}

/// The note for a database that is not in INCREMENTAL mode.
pub fn conversion_note(auto_vacuum: i64, path: &Path) -> String {
    match auto_vacuum {
        1 => format!(
            "auto_vacuum is FULL: SQLite returns free pages at every commit, incremental vacuum is not needed; \
             `corescope vacuum --full --db {}` converts it to INCREMENTAL (CoreScope's mode)",
            path.display()
        ),
        _ => format!(
            "auto_vacuum is NONE: deleted rows never shrink the file and incremental vacuum does nothing; \
             convert once with `corescope vacuum --full --db {}` (needs about 2x the database size free)",
            path.display()
        ),
    }
}

/// `PRAGMA incremental_vacuum` for up to `pages` pages, in adaptive chunks of
/// write transactions under `max_lock_ms` (their lock holds are measured),
/// only when auto_vacuum is INCREMENTAL. A busy database is reported, not an
/// error.
pub fn incremental(db: &mut WriteDb, pages: i64, max_lock_ms: u64) -> anyhow::Result<VacuumResult> {
    let av = pragma_i64(db, "auto_vacuum")?;
    let mut r = VacuumResult {
        auto_vacuum: av,
        pages_requested: pages,
        ..VacuumResult::default()
    };
    r.freelist_after = pragma_i64(db, "freelist_count")?;
    if av != 2 {
        r.note = Some(conversion_note(av, db.path()));
        return Ok(r);
    }
    if pages <= 0 {
        r.note = Some("incremental vacuum skipped (0 pages requested)".into());
        return Ok(r);
    }
    let page_size = pragma_i64(db, "page_size")?;
    let before = pragma_i64(db, "page_count")?;
    // In chunks, each its own write transaction, so the lock hold stays
    // under `max_lock_ms` however large the file: the chunk doubles while a
    // transaction takes under a quarter of the budget and halves above half.
    let budget = Duration::from_millis(max_lock_ms.max(1));
    let mut chunk: i64 = pages.min(64);
    let mut remaining = pages;
    while remaining > 0 {
        let n = chunk.min(remaining);
        let sql = format!("PRAGMA incremental_vacuum({n})");
        let t0 = Instant::now();
        let freed = match db.write(|tx| {
            // The pragma yields one row per freed page: step it to the end.
            let mut st = tx.prepare(&sql)?;
            let mut rows = st.query([])?;
            let mut k = 0i64;
            while rows.next()?.is_some() {
                k += 1;
            }
            Ok(k)
        }) {
            Ok(k) => k,
            Err(e) if crate::error::exit_code(&e) == crate::error::EXIT_BUSY => {
                r.busy = true;
                r.note = Some("incremental vacuum stopped: the database was busy (another writer held the lock past the busy timeout); the next run vacuums".into());
                break;
            }
            Err(e) => return Err(e.context("incremental vacuum")),
        };
        r.ran = true;
        remaining -= n;
        let el = t0.elapsed();
        if freed < n {
            break; // freelist exhausted
        }
        if el < budget / 4 {
            chunk = (chunk * 2).min(1024);
        } else if el > budget / 2 {
            chunk = (chunk / 2).max(8);
        }
    }
    let after = pragma_i64(db, "page_count")?;
    r.vacuumed_pages = (before - after).max(0);
    r.freed_bytes = r.vacuumed_pages * page_size;
    r.freelist_after = pragma_i64(db, "freelist_count")?;
    Ok(r)
}

/// Result of a WAL checkpoint.
#[derive(Debug, Clone, Default)]
pub struct CheckpointResult {
    pub mode: &'static str,
    pub journal_mode: String,
    pub busy: bool,
    /// TRUNCATE only: whether the WAL was reset to zero bytes.
    pub truncated: Option<bool>,
    /// Why a TRUNCATE did not truncate (None when it did, or for PASSIVE).
    pub reason: Option<String>,
    /// TRUNCATE only: the longest it may wait for readers and the writer
    /// (its busy timeout), derived from the lock budget.
    pub wait_limit_ms: Option<u64>,
    pub log_frames: i64,
    pub checkpointed_frames: i64,
    pub wal_bytes_before: u64,
    pub wal_bytes_after: u64,
}

impl CheckpointResult {
    /// One line for the human report.
    pub fn summary(&self) -> String {
        if self.journal_mode != "wal" {
            format!(
                "WAL checkpoint: nothing to do (journal_mode is {})",
                self.journal_mode
            )
        } else if let (Some(false), Some(why)) = (self.truncated, &self.reason) {
            format!(
                "WAL checkpoint (truncate): not truncated: {why}; WAL {} -> {} bytes",
                self.wal_bytes_before, self.wal_bytes_after
            )
        } else if self.busy {
            format!(
                "WAL checkpoint ({}): busy (a reader still uses old frames; a later checkpoint resets the WAL); WAL {} -> {} bytes",
                self.mode, self.wal_bytes_before, self.wal_bytes_after
            )
        } else {
            format!(
                "WAL checkpoint ({}): done{}; WAL {} -> {} bytes",
                self.mode,
                if self.truncated == Some(true) {
                    ", truncated"
                } else {
                    ""
                },
                self.wal_bytes_before,
                self.wal_bytes_after
            )
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "mode": self.mode,
            "journal_mode": self.journal_mode,
            "busy": self.busy,
            "truncated": self.truncated,
            "reason": self.reason,
            "wait_limit_ms": self.wait_limit_ms,
            "log_frames": self.log_frames,
            "checkpointed_frames": self.checkpointed_frames,
            "wal_bytes_before": self.wal_bytes_before,
            "wal_bytes_after": self.wal_bytes_after,
        })
    }
}

/// How long a TRUNCATE checkpoint may wait (its busy timeout) under a lock
/// budget: half of it, so waiting for readers plus the copy of the last
/// frames and the reset stay inside the budget; never longer than the
/// `--busy-timeout`.
pub fn truncate_wait_ms(max_lock_ms: u64, busy_timeout_ms: u64) -> u64 {
    (max_lock_ms / 2).max(1).min(busy_timeout_ms.max(1))
}

fn run_checkpoint(db: &WriteDb, sql: &str) -> rusqlite::Result<(i64, i64, i64)> {
    db.conn().query_row(sql, [], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, i64>(2)?,
        ))
    })
}

/// Records a checkpoint's result in `r`: busy, or the frames in the log
/// and checkpointed; a busy database is reported, not an error.
fn record_checkpoint(
    r: &mut CheckpointResult,
    res: rusqlite::Result<(i64, i64, i64)>,
) -> anyhow::Result<()> {
    match res {
        Ok((busy, log, done)) => {
            r.busy = busy != 0;
            r.log_frames = log;
            r.checkpointed_frames = done;
        }
        Err(e) if is_busy(&e) => r.busy = true,
        Err(e) => return Err(anyhow::Error::new(e).context("WAL checkpoint")),
    }
    Ok(())
}

/// `PRAGMA wal_checkpoint(PASSIVE|TRUNCATE)`. Busy is reported, never an
/// error.
///
/// TRUNCATE blocks the writer while it waits for readers, so its wait is
/// bounded by the lock budget: a PASSIVE checkpoint first copies every frame
/// it can without waiting for anybody, then TRUNCATE runs with a busy timeout
/// of [`truncate_wait_ms`]; its duration is recorded as a lock hold. When a
/// reader keeps it from resetting the WAL the result says so (`truncated`
/// false, `reason`) instead of holding the lock until the reader finishes.
pub fn checkpoint(
    db: &mut WriteDb,
    truncate: bool,
    max_lock_ms: u64,
) -> anyhow::Result<CheckpointResult> {
    let wal = wal_path(db.path());
    let journal_mode: String = db
        .conn()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .context("reading PRAGMA journal_mode")?;
    let mut r = CheckpointResult {
        mode: if truncate { "truncate" } else { "passive" },
        journal_mode: journal_mode.to_ascii_lowercase(),
        wal_bytes_before: file_len(&wal),
        log_frames: -1,
        checkpointed_frames: -1,
        ..CheckpointResult::default()
    };
    if !truncate || r.journal_mode != "wal" {
        record_checkpoint(&mut r, run_checkpoint(db, "PRAGMA wal_checkpoint(PASSIVE)"))?;
        r.wal_bytes_after = file_len(&wal);
        return Ok(r);
    }
    // Copy what can be copied without waiting (no lock, no busy handler).
    if let Err(e) = run_checkpoint(db, "PRAGMA wal_checkpoint(PASSIVE)") {
        if !is_busy(&e) {
            return Err(anyhow::Error::new(e).context("WAL checkpoint (passive, before truncate)"));
        }
    }
    let normal = db.busy_timeout_ms();
    let wait = truncate_wait_ms(max_lock_ms, normal);
    r.wait_limit_ms = Some(wait);
    db.conn().busy_timeout(Duration::from_millis(wait))?;
    let t0 = Instant::now();
    let res = run_checkpoint(db, "PRAGMA wal_checkpoint(TRUNCATE)");
    let held = t0.elapsed();
    db.conn().busy_timeout(Duration::from_millis(normal))?;
    db.record_hold(held);
    record_checkpoint(&mut r, res)?;
    r.wal_bytes_after = file_len(&wal);
    // Not busy: SQLite reset the WAL to zero bytes (a writer may have
    // appended new frames since; `wal_bytes_after` shows them).
    r.truncated = Some(!r.busy);
    if r.truncated == Some(false) {
        r.reason = Some(
            if r.log_frames >= 0 && r.log_frames == r.checkpointed_frames {
                format!(
                "a reader is active: every frame was copied into the database, but another connection still has the WAL open in a read transaction, so it cannot be reset (waited {wait} ms, half the lock budget); the next checkpoint with idle readers truncates it"
            )
            } else if r.log_frames >= 0 {
                format!(
                "a reader is active: another connection still reads older frames ({} of {} copied), or the ingestor held the write lock (waited {wait} ms, half the lock budget); the next checkpoint with idle readers truncates it",
                r.checkpointed_frames.max(0),
                r.log_frames
            )
            } else {
                format!(
                "the database was busy: another connection held the write lock or a read transaction (waited {wait} ms, half the lock budget); the next checkpoint with idle readers truncates it"
            )
            },
        );
    }
    Ok(r)
}
