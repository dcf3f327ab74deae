//! `corescope vacuum`: incremental vacuum and WAL checkpoint, and (`--full`)
//! the one-time conversion of `auto_vacuum` to INCREMENTAL with a full
//! `VACUUM` after checking free disk space.
//!
//! The incremental vacuum and checkpoint helpers are shared with `prune`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use serde_json::{json, Value};

use crate::cli::VacuumArgs;
use crate::context::Ctx;
use crate::error::{is_busy, Failure};
use crate::report::{self, Outcome};
use crate::store::maintenance::{
    auto_vacuum_name, checkpoint, incremental, pragma_i64, VacuumResult,
};
use crate::store::{file_len, wal_path, WriteDb};

/// Hidden test hook: pretend the filesystem has this many bytes free.
pub const FREE_BYTES_ENV: &str = "CORESCOPE_TEST_FREE_BYTES";

/// Lock budget of the standalone `vacuum` command (the default of `--max-lock-ms`).
const DEFAULT_MAX_LOCK_MS: u64 = 200;

/// Free bytes for unprivileged users on the filesystem holding `dir`.
#[allow(clippy::unnecessary_cast)]
pub fn free_bytes(dir: &Path) -> anyhow::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    if let Ok(v) = std::env::var(FREE_BYTES_ENV) {
        return v.trim().parse::<u64>().map_err(|_| {
            Failure::Usage(format!("{FREE_BYTES_ENV}={v} is not a byte count")).into()
        });
    }
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| Failure::Fatal(format!("path {} contains a NUL byte", dir.display())))?;
    // SAFETY: statvfs only writes into the zeroed struct we pass; the path is NUL-terminated.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path that outlives the call; `s` is a valid out-pointer.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut s) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return Err(Failure::Fatal(format!(
            "cannot read the free space of {}: {e}",
            dir.display()
        ))
        .into());
    }
    Ok((s.f_bavail as u64).saturating_mul(s.f_frsize as u64))
}

/// Hidden test hook: pretend SQLite's temporary directory is on a
/// filesystem of its own with this many bytes free.
pub const TMP_FREE_BYTES_ENV: &str = "CORESCOPE_TEST_TMP_FREE_BYTES";

/// Where SQLite puts its temporary files (the copy a `VACUUM` builds), and
/// why: SQLite's own order on Unix is `SQLITE_TMPDIR`, `TMPDIR`, `/var/tmp`,
/// `/usr/tmp`, `/tmp`, then `.`, taking the first that is a directory this
/// process may write and search. corescope never sets
/// `PRAGMA temp_store_directory`.
pub fn sqlite_temp_dir() -> (PathBuf, String) {
    use std::os::unix::ffi::OsStrExt;
    let usable = |p: &Path| -> bool {
        if !p.is_dir() {
            return false;
        }
        let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) else {
            return false;
        };
        // SAFETY: access() only reads the NUL-terminated path.
        unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
    };
    for var in ["SQLITE_TMPDIR", "TMPDIR"] {
        if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            let p = PathBuf::from(&v);
            if usable(&p) {
                return (p, format!("from {var}"));
            }
        }
    }
    for d in ["/var/tmp", "/usr/tmp", "/tmp"] {
        let p = PathBuf::from(d);
        if usable(&p) {
            return (
                p,
                "SQLite's default; SQLITE_TMPDIR and TMPDIR are unset or unusable".into(),
            );
        }
    }
    (
        PathBuf::from("."),
        "the current directory (no usable temporary directory)".into(),
    )
}

/// Free bytes in SQLite's temporary directory, and whether it is on the
/// same filesystem as `db_dir` (then one free-space rule covers both).
fn temp_space(tmp: &Path, db_dir: &Path) -> anyhow::Result<(u64, bool)> {
    use std::os::unix::fs::MetadataExt;
    if let Ok(v) = std::env::var(TMP_FREE_BYTES_ENV) {
        let n = v
            .trim()
            .parse::<u64>()
            .map_err(|_| Failure::Usage(format!("{TMP_FREE_BYTES_ENV}={v} is not a byte count")))?;
        return Ok((n, false));
    }
    let same = match (std::fs::metadata(tmp), std::fs::metadata(db_dir)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev(),
        _ => false,
    };
    Ok((free_bytes(tmp)?, same))
}

/// Directory holding the database file.
pub fn db_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The free-space rule of `--full`: at least twice the database (file + WAL).
pub fn enough_space(db_bytes: u64, free: u64) -> bool {
    free >= db_bytes.saturating_mul(2)
}

pub fn run(ctx: &Ctx, args: &VacuumArgs) -> anyhow::Result<Outcome> {
    let pages = match args.pages {
        Some(p) if p < 0 => {
            return Err(Failure::Usage(format!(
                "--pages {p}: expected a page count >= 0 (0 skips the incremental vacuum)"
            ))
            .into())
        }
        Some(p) => p,
        None => ctx.config.vacuum_pages(),
    };
    let mut db = WriteDb::open(&ctx.db_path, &ctx.open_options(false))?;
    db.require_ready()?;
    let path = db.path().to_path_buf();
    let wal = wal_path(&path);
    let file_before = file_len(&path);
    let wal_before = file_len(&wal);
    let av_before = pragma_i64(&db, "auto_vacuum")?;
    let mut out = Outcome::new();
    let mut h = String::new();
    out.set("full", args.full);
    out.set("auto_vacuum_before", auto_vacuum_name(av_before));
    out.set("file_bytes_before", file_before);
    out.set("wal_bytes_before", wal_before);

    let mut vac = VacuumResult::default();
    let mut notes: Vec<String> = Vec::new();
    if args.full {
        let dir = db_dir(&path);
        let need_base = file_before + wal_before;
        let free = free_bytes(&dir)?;
        out.set("free_bytes", free);
        out.set("required_free_bytes", need_base.saturating_mul(2));
        if !enough_space(need_base, free) {
            return Err(Failure::Fatal(format!(
                "refusing VACUUM of {}: it needs about twice the database size free ({} bytes = 2 x {} bytes of database and WAL), \
                 but the filesystem of {} has only {} bytes free; free space (or move the database) and run again. Nothing was changed",
                path.display(),
                need_base.saturating_mul(2),
                need_base,
                dir.display(),
                free
            ))
            .into());
        }
        // VACUUM builds its copy of the database in SQLite's temporary
        // directory: on another filesystem that one needs the room too.
        let (tmp, tmp_why) = sqlite_temp_dir();
        let (tmp_free, same_fs) = temp_space(&tmp, &dir)?;
        out.set(
            "temp_dir",
            json!({
                "path": tmp.display().to_string(),
                "chosen": tmp_why,
                "same_filesystem": same_fs,
                "free_bytes": tmp_free,
                "required_free_bytes": if same_fs { Value::Null } else { Value::from(need_base) },
            }),
        );
        if !same_fs && tmp_free < need_base {
            return Err(Failure::Fatal(format!(
                "refusing VACUUM of {}: SQLite writes its temporary copy of the database (about {} bytes) into {} ({}), \
                 which has only {} bytes free; set SQLITE_TMPDIR to a directory with room (for example one beside the database) and run again. Nothing was changed",
                path.display(),
                need_base,
                tmp.display(),
                tmp_why,
                tmp_free
            ))
            .into());
        }
        // observers.rowid is referenced by observations.observer_idx;
        // SQLite does not document that VACUUM keeps rowids of tables
        // without an INTEGER PRIMARY KEY, so verify it did.
        let before_ids = observer_rowids(&db)?;
        db.conn()
            .execute_batch("PRAGMA auto_vacuum = INCREMENTAL")
            .context("setting auto_vacuum = INCREMENTAL")?;
        let t0 = Instant::now();
        let res = db.conn().execute_batch("VACUUM");
        db.record_hold(t0.elapsed());
        res.map_err(|e| {
            if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
                anyhow::Error::from(Failure::Fatal(format!(
                    "disk full during VACUUM of {}: SQLite writes its temporary copy into {} ({}) and the rewritten pages into {}-wal; \
                     free space on both filesystems (or set SQLITE_TMPDIR to a directory with room) and run again. The database is unchanged (VACUUM is all or nothing)",
                    path.display(),
                    tmp.display(),
                    tmp_why,
                    path.display()
                )))
            } else if is_busy(&e) {
                anyhow::Error::from(Failure::Busy(format!(
                    "VACUUM of {} could not get exclusive access (another connection is writing or reading); try again when the ingestor is idle, or stop it for the conversion",
                    path.display()
                )))
            } else {
                anyhow::Error::new(e).context("VACUUM")
            }
        })?;
        let after_ids = observer_rowids(&db)?;
        if before_ids != after_ids {
            return Err(Failure::Fatal(format!(
                "VACUUM of {} renumbered observers.rowid, which observations.observer_idx references; restore the database from a backup",
                path.display()
            ))
            .into());
        }
        notes.push(format!(
            "full VACUUM done; auto_vacuum is now {}",
            auto_vacuum_name(pragma_i64(&db, "auto_vacuum")?)
        ));
    } else {
        vac = incremental(&mut db, pages, DEFAULT_MAX_LOCK_MS)?;
        if let Some(n) = &vac.note {
            notes.push(n.clone());
        }
    }
    // After a full VACUUM in WAL mode the rewritten pages sit in the WAL: only
    // a TRUNCATE checkpoint lets the file shrink and resets the WAL.
    let ck = checkpoint(&mut db, args.truncate_wal || args.full, DEFAULT_MAX_LOCK_MS)?;
    let av_after = pragma_i64(&db, "auto_vacuum")?;
    let file_after = file_len(&path);
    let wal_after = file_len(&wal);
    out.set("auto_vacuum", auto_vacuum_name(av_after));
    out.set("auto_vacuum_after", auto_vacuum_name(av_after));
    out.set("file_bytes_after", file_after);
    out.set("wal_bytes_after", wal_after);
    out.set("vacuumed_pages", vac.vacuumed_pages);
    out.set("freed_bytes", vac.freed_bytes);
    if !args.full {
        out.set("vacuum", vac.to_json());
    }
    out.set("checkpoint", ck.to_json());
    out.set("notes", notes.clone());
    out.set("complete", true);
    out.set("max_lock_hold_ms", db.max_lock_hold_ms());

    let mut t = report::table(&["", "before", "after"]);
    t.add_row(vec![
        "auto_vacuum".to_string(),
        auto_vacuum_name(av_before).to_string(),
        auto_vacuum_name(av_after).to_string(),
    ]);
    t.add_row(vec![
        "file bytes".to_string(),
        file_before.to_string(),
        file_after.to_string(),
    ]);
    t.add_row(vec![
        "WAL bytes".to_string(),
        wal_before.to_string(),
        wal_after.to_string(),
    ]);
    h.push_str(&format!("{t}\n"));
    if !args.full {
        h.push_str(&format!(
            "incremental vacuum: {} pages freed ({} bytes)\n",
            vac.vacuumed_pages, vac.freed_bytes
        ));
    }
    h.push_str(&ck.summary());
    h.push('\n');
    for n in &notes {
        h.push_str(&format!("note: {n}\n"));
    }
    h.push_str(&format!(
        "longest write-lock hold {} ms\n",
        db.max_lock_hold_ms()
    ));
    out.human = h;
    Ok(out)
}

fn observer_rowids(db: &WriteDb) -> anyhow::Result<Vec<(i64, rusqlite::types::Value)>> {
    let mut st = db
        .conn()
        .prepare("SELECT rowid, id FROM observers ORDER BY rowid")?;
    let rows = st.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::maintenance::{conversion_note, truncate_wait_ms};

    #[test]
    fn space_rule_is_twice_the_database() {
        assert!(enough_space(100, 200));
        assert!(!enough_space(100, 199));
        assert!(enough_space(0, 0));
        assert!(!enough_space(u64::MAX, u64::MAX - 1));
    }

    #[test]
    fn names_and_paths() {
        assert_eq!(auto_vacuum_name(2), "incremental");
        assert_eq!(auto_vacuum_name(0), "none");
        assert_eq!(wal_path(Path::new("/x/y.db")), PathBuf::from("/x/y.db-wal"));
        assert_eq!(db_dir(Path::new("y.db")), PathBuf::from("."));
        assert_eq!(db_dir(Path::new("/a/y.db")), PathBuf::from("/a"));
        assert!(conversion_note(0, Path::new("d.db")).contains("vacuum --full"));
    }

    #[test]
    fn truncate_waits_half_the_budget_and_never_past_the_busy_timeout() {
        assert_eq!(truncate_wait_ms(200, 5000), 100);
        assert_eq!(truncate_wait_ms(50, 5000), 25);
        assert_eq!(truncate_wait_ms(20, 5000), 10);
        assert_eq!(truncate_wait_ms(200, 30), 30);
        assert_eq!(truncate_wait_ms(u64::MAX, 5000), 5000);
    }

    #[test]
    fn temp_dir_is_a_usable_directory() {
        let (p, why) = sqlite_temp_dir();
        assert!(p.is_dir(), "{} ({why})", p.display());
        assert!(!why.is_empty());
    }

    #[test]
    fn statvfs_reads_something() {
        if std::env::var_os(FREE_BYTES_ENV).is_none() {
            assert!(free_bytes(Path::new("/")).is_ok());
        }
    }
}
