//! A consistent online copy of a database (`corescope backup`, and the
//! `--backup PATH` of `migrate` and `vacuum --full`), with SQLite's online
//! backup API.
//!
//! - WAL databases (CoreScope's mode): the source connection opens one read
//!   transaction and keeps it for the whole copy, so every page comes from
//!   the same snapshot: the copy is the database as of that instant, and
//!   writes of the ingestor (another connection) never restart it. In WAL
//!   mode a reader never blocks the writer; what a long read transaction
//!   does hold back is the checkpoint: frames committed after the snapshot
//!   cannot be copied back past it until the copy ends, so the `-wal` grows
//!   meanwhile (reported as `snapshot_ms`).
//! - Rollback-journal databases: a reader's shared lock blocks every commit,
//!   so the copy runs in steps sized to the lock budget, with the lock left
//!   free between steps for as long as it was held. A commit by another
//!   connection restarts the copy (SQLite's rule); after [`MAX_RESTARTS`]
//!   restarts it gives up with exit 75 (try again when the database is
//!   quieter, or stop the writer).
//!
//! The copy is written to a new temporary file beside the target, checked
//! with `PRAGMA quick_check`, fsynced and renamed into place; on any failure
//! the temporary file is removed and the target is left as it was.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use super::batch::Batcher;
use super::engine::{fairness_pause, progress_bar};
use super::outfile::{check_output, Guard, FILE_MODE};
use super::precheck::dir_free_bytes;
use super::ReadOnlyDb;
use crate::error::Failure;

/// Hidden test hook: pretend the target's filesystem has this many bytes free.
pub const FREE_BYTES_ENV: &str = "CORESCOPE_TEST_FREE_BYTES";

/// The copy is flushed to disk every this many bytes while it grows.
const SYNC_EVERY: u64 = 8 << 20;

/// Restarts of a stepped copy (rollback-journal mode) before giving up.
pub const MAX_RESTARTS: u32 = 20;

/// What a backup is asked to do.
#[derive(Debug, Clone)]
pub struct Settings<'a> {
    /// The file to write.
    pub dest: &'a Path,
    /// How the destination was given, for messages (`backup PATH`, `--backup`).
    pub flag: &'a str,
    /// Replace an existing file at `dest`.
    pub force: bool,
    /// Lock budget of one step in rollback-journal mode.
    pub max_lock_ms: u64,
    /// Show a progress bar (a terminal, not `--json`/`-q`).
    pub progress: bool,
}

/// The result of one backup (the `backup` report, and the `backup` object
/// of `migrate --backup` / `vacuum --full --backup`).
#[derive(Debug, Clone, Serialize)]
pub struct BackupResult {
    /// The copy (absolute path).
    pub path: String,
    pub bytes: u64,
    pub pages: i64,
    pub page_size: i64,
    /// The source's journal mode (the copy keeps it).
    pub journal_mode: String,
    /// `snapshot` (WAL: one read transaction) or `stepped` (rollback journal).
    pub method: &'static str,
    pub steps: u64,
    /// Times a commit of another connection restarted a stepped copy.
    pub restarts: u32,
    /// WAL: how long the read transaction stayed open.
    pub snapshot_ms: Option<f64>,
    /// The longest a step held the source's shared lock (rollback journal:
    /// the writer could not commit meanwhile); 0 in WAL mode, where the copy
    /// never blocks the writer.
    pub max_lock_hold_ms: f64,
    /// `PRAGMA quick_check` of the copy.
    pub quick_check: String,
    /// Free space on the copy's filesystem before the copy (named like
    /// `vacuum --full`'s disk check).
    #[serde(rename = "disk_free_bytes")]
    pub free_bytes: u64,
    #[serde(rename = "disk_required_bytes")]
    pub required_free_bytes: u64,
}

/// Free bytes on the filesystem of `dir` (with the test hook).
fn free_bytes(dir: &Path) -> anyhow::Result<u64> {
    if let Ok(v) = std::env::var(FREE_BYTES_ENV) {
        return v.trim().parse::<u64>().map_err(|_| {
            Failure::Usage(format!("{FREE_BYTES_ENV}={v} is not a byte count")).into()
        });
    }
    dir_free_bytes(dir).map_err(|e| {
        Failure::Fatal(format!(
            "cannot read the free space of {}: {e}",
            dir.display()
        ))
        .into()
    })
}

fn dir_of(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Check the destination: the output-path rules, an existing file only
/// with `--force`, an existing directory. Nothing is created.
pub fn check_dest(db: &Path, s: &Settings<'_>) -> anyhow::Result<()> {
    // Any existing file is refused below, not only a database.
    check_output(
        s.dest,
        s.flag,
        Guard {
            db: Some(db),
            force: true,
        },
    )?;
    if !s.force && std::fs::symlink_metadata(s.dest).is_ok() {
        return Err(Failure::Usage(format!(
            "{} {}: the file exists; corescope never replaces a file with a backup unless told to: choose a new name{}",
            s.flag,
            s.dest.display(),
            if s.flag == "backup" {
                ", or add --force"
            } else {
                " (or remove the old copy)"
            }
        ))
        .into());
    }
    let dir = dir_of(s.dest);
    if !dir.is_dir() {
        return Err(Failure::Usage(format!(
            "{} {}: directory {} does not exist (create it first)",
            s.flag,
            s.dest.display(),
            dir.display()
        ))
        .into());
    }
    Ok(())
}

/// Open `db` read-only, take the caller's run lock (`run_lock`, once the
/// file is known to be a CoreScope database), and copy it to `s.dest` (the
/// `--backup PATH` of `migrate` and `vacuum --full`).
pub fn take(
    db: &Path,
    busy_timeout_ms: u64,
    run_lock: Option<&super::runlock::Spec>,
    s: &Settings<'_>,
) -> anyhow::Result<BackupResult> {
    check_dest(db, s)?;
    let src = ReadOnlyDb::open(db, busy_timeout_ms)?;
    if let Some(spec) = run_lock {
        super::runlock::hold(db, spec)?;
    }
    backup(&src, s)
}

/// One line for a human report.
pub fn summary(r: &BackupResult) -> String {
    format!(
        "backup: {} ({} bytes, {} pages, quick_check {}{})",
        r.path,
        r.bytes,
        r.pages,
        r.quick_check,
        match r.snapshot_ms {
            Some(ms) => format!(", one read snapshot of {ms:.0} ms"),
            None => format!(", {} steps, {} restarts", r.steps, r.restarts),
        }
    )
}

/// Copy the database `src` to `s.dest`.
pub fn backup(src: &ReadOnlyDb, s: &Settings<'_>) -> anyhow::Result<BackupResult> {
    let db = src.path().to_path_buf();
    check_dest(&db, s)?;
    let conn = src.reader();
    let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    let page_count: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let journal_mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
    let required = (page_size.max(0) as u64).saturating_mul(page_count.max(0) as u64);
    let dir = dir_of(s.dest);
    let free = free_bytes(&dir)?;
    // The copy is as large as the database; keep 1 % (at least 1 MiB) spare
    // for its journal and the filesystem's own needs.
    let needed = required.saturating_add((required / 100).max(1 << 20));
    if free < needed {
        return Err(Failure::Fatal(format!(
            "refusing to back up {} to {}: the copy needs about {needed} bytes ({required} bytes of database and some room), \
             but the filesystem of {} has only {free} bytes free; free space or choose another place. Nothing was written",
            db.display(),
            s.dest.display(),
            dir.display()
        ))
        .into());
    }

    let name = s
        .dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let fail = |e: std::io::Error| -> anyhow::Error {
        Failure::Fatal(format!("cannot write {}: {e}", s.dest.display())).into()
    };
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .permissions(std::fs::Permissions::from_mode(FILE_MODE))
        .tempfile_in(&dir)
        .map_err(fail)?;
    let tmp_path = tmp.path().to_path_buf();
    let cleanup = |p: &Path| {
        for suffix in ["-journal", "-wal", "-shm"] {
            let mut s = p.as_os_str().to_os_string();
            s.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(s));
        }
    };
    let result = copy_into(
        conn,
        &db,
        (&tmp_path, tmp.as_file()),
        &journal_mode,
        page_count,
        s,
    );
    let mut r = match result {
        Ok(r) => r,
        Err(e) => {
            cleanup(&tmp_path);
            return Err(e);
        }
    };
    cleanup(&tmp_path);
    tmp.as_file().sync_all().map_err(fail)?;
    // The target may have appeared while the copy was made.
    if let Err(e) = check_dest(&db, s) {
        cleanup(&tmp_path);
        return Err(e);
    }
    tmp.persist(s.dest).map_err(|e| fail(e.error))?;
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    r.path = std::fs::canonicalize(s.dest)
        .unwrap_or_else(|_| s.dest.to_path_buf())
        .display()
        .to_string();
    r.bytes = super::file_len(s.dest);
    r.free_bytes = free;
    r.required_free_bytes = needed;
    log::info!(
        "backup of {} written to {} ({} bytes, {} steps, {} restarts)",
        db.display(),
        r.path,
        r.bytes,
        r.steps,
        r.restarts
    );
    Ok(r)
}

/// The copy itself, into the new file `tmp`; checked with quick_check.
fn copy_into(
    conn: &Connection,
    db: &Path,
    (tmp, file): (&Path, &std::fs::File),
    journal_mode: &str,
    page_count: i64,
    s: &Settings<'_>,
) -> anyhow::Result<BackupResult> {
    let mut dst = Connection::open_with_flags(
        tmp,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| anyhow::Error::new(e).context(format!("opening {}", tmp.display())))?;
    // The copy is a new private file, discarded on any failure and fsynced
    // by the caller: no journal, no syncs of SQLite's own.
    dst.execute_batch("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;")
        .map_err(|e| anyhow::Error::new(e).context(format!("setting up {}", tmp.display())))?;
    let wal = journal_mode.eq_ignore_ascii_case("wal");
    let mut r = BackupResult {
        path: String::new(),
        bytes: 0,
        pages: page_count,
        page_size: 0,
        journal_mode: journal_mode.to_string(),
        method: if wal { "snapshot" } else { "stepped" },
        steps: 0,
        restarts: 0,
        snapshot_ms: None,
        max_lock_hold_ms: 0.0,
        quick_check: String::new(),
        free_bytes: 0,
        required_free_bytes: 0,
    };
    let bar = s
        .progress
        .then(|| progress_bar(page_count.max(0) as u64, "backup", "pages"));
    let snapshot_started = Instant::now();
    if wal {
        // One read transaction for the whole copy: a fixed snapshot.
        conn.execute_batch("BEGIN DEFERRED; SELECT count(*) FROM sqlite_master;")
            .map_err(|e| anyhow::Error::new(e).context("opening the read transaction"))?;
    }
    let copied = (|| -> anyhow::Result<()> {
        let b = Backup::new(conn, &mut dst)?;
        let mut sizer = Batcher::with_bounds(s.max_lock_ms, 256, 16, 1 << 20);
        let mut last_remaining: Option<i32> = None;
        let mut busy_since: Option<Instant> = None;
        let page_bytes: u64 = conn
            .query_row("PRAGMA page_size", [], |row| row.get::<_, i64>(0))?
            .max(0) as u64;
        let mut synced: u64 = 0;
        loop {
            let n = i32::try_from(sizer.size()).unwrap_or(i32::MAX);
            let t0 = Instant::now();
            let step = b.step(n)?;
            let held = t0.elapsed();
            r.steps += 1;
            let p = b.progress();
            match step {
                StepResult::Busy | StepResult::Locked => {
                    // Another connection holds a lock the step needs.
                    let since = *busy_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_secs(30) {
                        return Err(Failure::Busy(format!(
                            "backup of {}: the database stayed locked for 30 s; try again later",
                            db.display()
                        ))
                        .into());
                    }
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                _ => busy_since = None,
            }
            if !wal {
                r.max_lock_hold_ms = r.max_lock_hold_ms.max(crate::report::ms(held));
            }
            sizer.observe(n as usize, held);
            if let Some(prev) = last_remaining {
                if p.remaining > prev {
                    r.restarts += 1;
                    if r.restarts > MAX_RESTARTS {
                        return Err(Failure::Busy(format!(
                            "backup of {}: another connection wrote the database {} times during the copy, and each write restarts a copy of a database in rollback-journal mode; \
                             try again when it is quieter, stop the writer for the copy, or convert the database to WAL (CoreScope's mode). Nothing was written",
                            db.display(),
                            r.restarts
                        ))
                        .into());
                    }
                }
            }
            last_remaining = Some(p.remaining);
            if let Some(bar) = &bar {
                bar.set_length(p.pagecount.max(0) as u64);
                bar.set_position((p.pagecount - p.remaining).max(0) as u64);
            }
            if step == StepResult::Done {
                return Ok(());
            }
            // Write the copy out as it grows: one flush of the whole file at
            // the end would stall the ingestor's commits (measured: 590 ms
            // at 580 MB, 260 ms for a plain cp + sync).
            let written = (p.pagecount - p.remaining).max(0) as u64 * page_bytes;
            if written >= synced + SYNC_EVERY {
                file.sync_data().map_err(|e| {
                    anyhow::Error::from(Failure::Fatal(format!(
                        "cannot write {}: {e}",
                        tmp.display()
                    )))
                })?;
                synced = written;
            }
            if !wal {
                // Leave the lock free for the writer as long as it was held.
                fairness_pause(held);
            }
        }
    })();
    if wal {
        let _ = conn.execute_batch("COMMIT");
        r.snapshot_ms = Some(crate::report::ms(snapshot_started.elapsed()));
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    copied.map_err(|e| {
        if e.chain().any(|c| c.downcast_ref::<Failure>().is_some()) {
            e
        } else {
            e.context(format!("backup of {} into {}", db.display(), tmp.display()))
        }
    })?;
    r.page_size = dst.query_row("PRAGMA page_size", [], |row| row.get(0))?;
    r.pages = dst.query_row("PRAGMA page_count", [], |row| row.get(0))?;
    let check: Vec<String> = {
        let mut st = dst.prepare("PRAGMA quick_check")?;
        let rows = st.query_map([], |row| row.get::<_, String>(0))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()?
    };
    r.quick_check = check.join("; ");
    if r.quick_check != "ok" {
        return Err(Failure::Fatal(format!(
            "backup of {}: PRAGMA quick_check of the copy failed ({}); the copy was removed. Run `corescope check --integrity` on the database",
            db.display(),
            r.quick_check
        ))
        .into());
    }
    dst.close()
        .map_err(|(_, e)| anyhow::Error::new(e).context("closing the copy"))?;
    Ok(r)
}
