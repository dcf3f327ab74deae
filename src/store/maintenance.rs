//! Space and WAL maintenance on an open write handle: incremental vacuum
//! in batches of the engine and WAL checkpoints under the lock budget
//! (shared by `vacuum` and `prune`).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use rusqlite::Connection;

use super::engine::Engine;
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

// serde hands `serialize_with` functions a reference.
#[allow(clippy::trivially_copy_pass_by_ref)]
fn serialize_auto_vacuum<S: serde::Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(auto_vacuum_name(*v))
}

/// The sizes of the database file and its `-wal` before and after a
/// maintenance run (the file sizes are keys of the `prune` and `vacuum`
/// reports; the WAL sizes are reported once, by the checkpoint, as
/// `checkpoint.wal_bytes_before` / `_after`).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct FileSizes {
    pub file_bytes_before: u64,
    pub file_bytes_after: u64,
    #[serde(skip)]
    pub wal_bytes_before: u64,
    #[serde(skip)]
    pub wal_bytes_after: u64,
}

/// Free pages in the database file and what returns them to the filesystem
/// (the `free_space` object of the `prune`, `vacuum` and `check` reports).
/// Pragmas only: `freelist_count`, `page_count`, `page_size`, `auto_vacuum`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FreeSpace {
    pub free_pages: i64,
    pub free_bytes: i64,
    pub page_size: i64,
    /// `page_count` × `page_size`: the file without its `-wal`.
    pub file_bytes: i64,
    /// Free bytes as a percentage of `file_bytes`, one decimal.
    pub free_percent: f64,
    /// `PRAGMA auto_vacuum` as a name.
    pub auto_vacuum: &'static str,
    /// Pages one incremental vacuum returns (`db.incrementalVacuumPages`
    /// or the command's flag); the shipped timers run one a day.
    pub pages_per_day: i64,
    /// Days the daily incremental vacuum needs to return every free page
    /// (null: auto_vacuum is not INCREMENTAL, or the rate is 0: it never
    /// returns them).
    pub days_to_return: Option<i64>,
    /// The command that returns them now (null: nothing is free).
    pub return_now: Option<String>,
}

impl FreeSpace {
    /// Measure with `pragma` (a read of `PRAGMA name` as a number) for the
    /// database shown as `db`.
    pub fn measure(
        pragma: impl Fn(&str) -> anyhow::Result<i64>,
        pages_per_day: i64,
        db: &str,
    ) -> anyhow::Result<FreeSpace> {
        let free_pages = pragma("freelist_count")?;
        let page_size = pragma("page_size")?;
        let page_count = pragma("page_count")?;
        let av = pragma("auto_vacuum")?;
        let file_bytes = page_count.saturating_mul(page_size);
        let free_bytes = free_pages.saturating_mul(page_size);
        let free_percent = if file_bytes > 0 {
            (free_bytes as f64 * 1000.0 / file_bytes as f64).round() / 10.0
        } else {
            0.0
        };
        let days_to_return = (av == 2 && pages_per_day > 0)
            .then(|| (free_pages + pages_per_day - 1) / pages_per_day);
        let dbw = crate::report::shell_word(db);
        let return_now = (free_pages > 0).then(|| {
            if av == 2 {
                format!("corescope vacuum --pages {free_pages} --db {dbw}")
            } else {
                format!("corescope vacuum --full --db {dbw}")
            }
        });
        Ok(FreeSpace {
            free_pages,
            free_bytes,
            page_size,
            file_bytes,
            free_percent,
            auto_vacuum: auto_vacuum_name(av),
            pages_per_day,
            days_to_return,
            return_now,
        })
    }

    /// One line for the human report.
    pub fn summary(&self) -> String {
        if self.free_pages <= 0 {
            return "free space: none (no free pages in the file)".to_string();
        }
        let mut s = format!(
            "free space: {} in {} free pages, {:.1} % of the file",
            crate::report::bytes_i(self.free_bytes),
            self.free_pages,
            self.free_percent
        );
        match self.days_to_return {
            Some(d) => s.push_str(&format!(
                "; at {} pages a day (one incremental vacuum a day) it is returned in {d} day{}",
                self.pages_per_day,
                if d == 1 { "" } else { "s" }
            )),
            None if self.auto_vacuum == "incremental" => {
                s.push_str("; the incremental vacuum is off (0 pages a run)");
            }
            None => s.push_str(&format!(
                "; auto_vacuum is {}: the incremental vacuum never returns it",
                self.auto_vacuum.to_ascii_uppercase()
            )),
        }
        if let Some(cmd) = &self.return_now {
            s.push_str(&format!("; to return it now: {cmd}"));
            if cmd.contains("--full") {
                s.push_str(" (rewrites the file, needs about twice its size free)");
            }
        }
        s
    }
}

impl FileSizes {
    /// The sizes now, as the `before` pair.
    pub fn before(path: &Path) -> FileSizes {
        FileSizes {
            file_bytes_before: file_len(path),
            wal_bytes_before: file_len(&wal_path(path)),
            ..FileSizes::default()
        }
    }

    /// Record the sizes now as the `after` pair.
    pub fn measure_after(&mut self, path: &Path) {
        self.file_bytes_after = file_len(path);
        self.wal_bytes_after = file_len(&wal_path(path));
    }
}

/// Result of one incremental vacuum (as JSON: the `vacuum` object of the
/// `prune` and `vacuum` reports).
#[derive(Debug, Clone, Default, Serialize)]
pub struct VacuumResult {
    /// `PRAGMA auto_vacuum`, serialised as its name.
    #[serde(serialize_with = "serialize_auto_vacuum")]
    pub auto_vacuum: i64,
    pub pages_requested: i64,
    pub vacuumed_pages: i64,
    pub freed_bytes: i64,
    #[serde(rename = "freelist_pages_after")]
    pub freelist_after: i64,
    pub busy: bool,
    pub ran: bool,
    pub note: Option<String>,
}

/// `PRAGMA name` as a number.
pub fn pragma_i64(conn: &Connection, name: &str) -> anyhow::Result<i64> {
    conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
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

/// `PRAGMA incremental_vacuum` for up to `pages` pages, in chunks that are
/// batches of the engine (each its own write transaction, sized to the lock
/// budget from the measured holds), only when auto_vacuum is INCREMENTAL.
/// `path` names the database in the note of a database in another mode. A
/// busy database is reported, not an error. The deadline does not apply:
/// freeing pages is short and the next run would only repeat it.
pub fn incremental(eng: &mut Engine, path: &Path, pages: i64) -> anyhow::Result<VacuumResult> {
    let av = pragma_i64(eng.conn(), "auto_vacuum")?;
    let mut r = VacuumResult {
        auto_vacuum: av,
        pages_requested: pages,
        ..VacuumResult::default()
    };
    r.freelist_after = pragma_i64(eng.conn(), "freelist_count")?;
    if av != 2 {
        r.note = Some(conversion_note(av, path));
        return Ok(r);
    }
    if pages <= 0 {
        r.note = Some("incremental vacuum skipped (0 pages requested)".into());
        return Ok(r);
    }
    let page_size = pragma_i64(eng.conn(), "page_size")?;
    let before = pragma_i64(eng.conn(), "page_count")?;
    let mut remaining = pages;
    while remaining > 0 {
        let n = i64::try_from(eng.batch_size())
            .unwrap_or(i64::MAX)
            .min(remaining);
        let sql = format!("PRAGMA incremental_vacuum({n})");
        let freed = match eng.batch(|tx| {
            // The pragma yields one row per freed page: step it to the end.
            let mut st = tx.prepare(&sql)?;
            let mut rows = st.query([])?;
            let mut k = 0usize;
            while rows.next()?.is_some() {
                k += 1;
            }
            Ok((k, k))
        }) {
            Ok(k) => i64::try_from(k)?,
            Err(e) if crate::error::exit_code(&e) == crate::error::EXIT_BUSY => {
                r.busy = true;
                r.note = Some("incremental vacuum stopped: the database was busy (another writer held the lock past the busy timeout); the next run vacuums".into());
                break;
            }
            Err(e) => return Err(e.context("incremental vacuum")),
        };
        r.ran = true;
        remaining -= n;
        if freed < n {
            break; // freelist exhausted
        }
    }
    let after = pragma_i64(eng.conn(), "page_count")?;
    r.vacuumed_pages = (before - after).max(0);
    r.freed_bytes = r.vacuumed_pages * page_size;
    r.freelist_after = pragma_i64(eng.conn(), "freelist_count")?;
    Ok(r)
}

/// Result of a WAL checkpoint (as JSON: the `checkpoint` object of the
/// `prune` and `vacuum` reports).
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckpointResult {
    /// `passive` or `truncate`.
    pub mode: &'static str,
    /// The database's journal mode (a checkpoint does something in `wal` only).
    pub journal_mode: String,
    /// A reader or writer kept the checkpoint from finishing (not an error).
    pub busy: bool,
    /// TRUNCATE only: whether the WAL was reset to zero bytes.
    pub truncated: Option<bool>,
    /// Why a TRUNCATE did not truncate (None when it did, or for PASSIVE).
    pub reason: Option<String>,
    /// TRUNCATE only: the longest it may wait for readers and the writer
    /// (its busy timeout), derived from the lock budget.
    /// Milliseconds, a number like every `_ms` key of the reports.
    pub wait_limit_ms: Option<f64>,
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
                "WAL checkpoint (truncate): not truncated: {why}; {}",
                self.wal_sizes()
            )
        } else if self.busy {
            format!(
                "WAL checkpoint ({}): busy (a reader still uses old frames; a later checkpoint resets the WAL); {}",
                self.mode,
                self.wal_sizes()
            )
        } else {
            format!(
                "WAL checkpoint ({}): done{}; {}",
                self.mode,
                if self.truncated == Some(true) {
                    ", truncated"
                } else {
                    ""
                },
                self.wal_sizes()
            )
        }
    }

    /// `WAL 6.0 MiB (6340712 bytes), unchanged` or `WAL 6.0 MiB (...) -> 0 bytes`.
    pub fn wal_sizes(&self) -> String {
        let before = crate::report::bytes(self.wal_bytes_before);
        if self.wal_bytes_before == self.wal_bytes_after {
            format!("WAL {before}, unchanged")
        } else {
            format!(
                "WAL {before} -> {}",
                crate::report::bytes(self.wal_bytes_after)
            )
        }
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
    r.wait_limit_ms = Some(f64::from(u32::try_from(wait).unwrap_or(u32::MAX)));
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn results_serialise_with_the_report_keys() {
        let v = VacuumResult {
            auto_vacuum: 2,
            pages_requested: 16,
            vacuumed_pages: 3,
            freed_bytes: 12_288,
            freelist_after: 5,
            busy: false,
            ran: true,
            note: None,
        };
        assert_eq!(
            serde_json::to_value(&v).unwrap(),
            json!({"auto_vacuum": "incremental", "pages_requested": 16, "vacuumed_pages": 3,
                   "freed_bytes": 12_288, "freelist_pages_after": 5, "busy": false, "ran": true,
                   "note": null})
        );
        let c = CheckpointResult {
            mode: "truncate",
            journal_mode: "wal".into(),
            truncated: Some(false),
            reason: Some("r".into()),
            wait_limit_ms: Some(100.0),
            log_frames: 4,
            checkpointed_frames: 4,
            wal_bytes_before: 10,
            wal_bytes_after: 11,
            busy: true,
        };
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            json!({"mode": "truncate", "journal_mode": "wal", "busy": true, "truncated": false,
                   "reason": "r", "wait_limit_ms": 100.0, "log_frames": 4, "checkpointed_frames": 4,
                   "wal_bytes_before": 10, "wal_bytes_after": 11})
        );
    }

    #[test]
    fn free_space_days_and_the_command_that_returns_it() {
        let pragmas = |av: i64| {
            move |name: &str| -> anyhow::Result<i64> {
                Ok(match name {
                    "freelist_count" => 2500,
                    "page_size" => 4096,
                    "page_count" => 10_000,
                    "auto_vacuum" => av,
                    _ => anyhow::bail!("unexpected pragma {name}"),
                })
            }
        };
        let f = FreeSpace::measure(pragmas(2), 1024, "/d b.db").unwrap();
        assert_eq!((f.free_bytes, f.file_bytes), (2500 * 4096, 10_000 * 4096));
        assert!((f.free_percent - 25.0).abs() < f64::EPSILON);
        assert_eq!(f.days_to_return, Some(3));
        assert_eq!(
            f.return_now.as_deref(),
            Some("corescope vacuum --pages 2500 --db '/d b.db'")
        );
        let s = f.summary();
        assert!(s.starts_with("free space: 9.77 MiB (10240000 bytes) in 2500 free pages, 25.0 % of the file; at 1024 pages a day"), "{s}");
        assert!(
            s.contains("returned in 3 days; to return it now: corescope vacuum --pages 2500"),
            "{s}"
        );
        let off = FreeSpace::measure(pragmas(2), 0, "/x.db").unwrap();
        assert_eq!(off.days_to_return, None);
        assert!(
            off.summary().contains("the incremental vacuum is off"),
            "{}",
            off.summary()
        );
        let none = FreeSpace::measure(pragmas(0), 1024, "/x.db").unwrap();
        assert_eq!(none.days_to_return, None);
        assert_eq!(
            none.return_now.as_deref(),
            Some("corescope vacuum --full --db /x.db")
        );
        assert!(none
            .summary()
            .contains("auto_vacuum is NONE: the incremental vacuum never returns it"));
        assert!(none.summary().contains("needs about twice its size free"));
    }

    #[test]
    fn file_sizes_measure_the_file_and_its_wal() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.db");
        std::fs::write(&p, [0u8; 7]).unwrap();
        let mut s = FileSizes::before(&p);
        std::fs::write(wal_path(&p), [0u8; 3]).unwrap();
        s.measure_after(&p);
        assert_eq!(
            serde_json::to_value(s).unwrap(),
            json!({"file_bytes_before": 7, "file_bytes_after": 7})
        );
        assert_eq!((s.wal_bytes_before, s.wal_bytes_after), (0, 3));
    }
}
