//! `vacuum --full`: the one-time conversion of `auto_vacuum` to INCREMENTAL
//! with a full `VACUUM`, after checking free disk space where SQLite needs it.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

use super::space::{db_dir, enough_space, free_bytes, sqlite_temp_dir, temp_space};
use crate::error::{is_busy, Failure};
use crate::store::maintenance::{auto_vacuum_name, pragma_i64};
use crate::store::WriteDb;

/// SQLite's temporary directory as `--full` checked it (the `temp_dir` key).
#[derive(Debug, Clone, Serialize)]
pub struct TempDir {
    pub path: String,
    /// Why SQLite uses this directory.
    pub chosen: String,
    pub same_filesystem: bool,
    pub free_bytes: u64,
    /// Null when on the database's filesystem (the database's rule covers it).
    pub required_free_bytes: Option<u64>,
}

/// What `--full` found about free space before it ran.
#[derive(Debug, Clone)]
pub struct SpaceCheck {
    pub free_bytes: u64,
    pub required_free_bytes: u64,
    pub temp_dir: TempDir,
}

/// Refuse (exit 1, nothing changed) unless the filesystem of the database
/// has twice the database (file + WAL, `db_bytes`) free and SQLite's
/// temporary directory, when elsewhere, has room for one copy.
pub fn check_space(path: &Path, db_bytes: u64) -> anyhow::Result<SpaceCheck> {
    let dir = db_dir(path);
    let free = free_bytes(&dir)?;
    let required = db_bytes.saturating_mul(2);
    if !enough_space(db_bytes, free) {
        return Err(Failure::Fatal(format!(
            "refusing VACUUM of {}: it needs about twice the database size free ({} bytes = 2 x {} bytes of database and WAL), \
             but the filesystem of {} has only {} bytes free; free space (or move the database) and run again. Nothing was changed",
            path.display(),
            required,
            db_bytes,
            dir.display(),
            free
        ))
        .into());
    }
    // VACUUM builds its copy of the database in SQLite's temporary
    // directory: on another filesystem that one needs the room too.
    let (tmp, chosen) = sqlite_temp_dir();
    let (tmp_free, same_fs) = temp_space(&tmp, &dir)?;
    if !same_fs && tmp_free < db_bytes {
        return Err(Failure::Fatal(format!(
            "refusing VACUUM of {}: SQLite writes its temporary copy of the database (about {} bytes) into {} ({}), \
             which has only {} bytes free; set SQLITE_TMPDIR to a directory with room (for example one beside the database) and run again. Nothing was changed",
            path.display(),
            db_bytes,
            tmp.display(),
            chosen,
            tmp_free
        ))
        .into());
    }
    Ok(SpaceCheck {
        free_bytes: free,
        required_free_bytes: required,
        temp_dir: TempDir {
            path: tmp.display().to_string(),
            chosen,
            same_filesystem: same_fs,
            free_bytes: tmp_free,
            required_free_bytes: (!same_fs).then_some(db_bytes),
        },
    })
}

/// Set `auto_vacuum = INCREMENTAL` and run `VACUUM` (its duration counts
/// as a lock hold); returns the note for the report. `tmp` is where SQLite
/// writes its copy (for the disk-full message).
pub fn convert(db: &mut WriteDb, tmp: &TempDir) -> anyhow::Result<String> {
    let path = db.path().to_path_buf();
    // observers.rowid is referenced by observations.observer_idx;
    // SQLite does not document that VACUUM keeps rowids of tables
    // without an INTEGER PRIMARY KEY, so verify it did.
    let before_ids = observer_rowids(db)?;
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
                tmp.path,
                tmp.chosen,
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
    if before_ids != observer_rowids(db)? {
        return Err(Failure::Fatal(format!(
            "VACUUM of {} renumbered observers.rowid, which observations.observer_idx references; restore the database from a backup (e.g. one taken with `corescope backup`; `vacuum --full --backup PATH` takes one first)",
            path.display()
        ))
        .into());
    }
    Ok(format!(
        "full VACUUM done; auto_vacuum is now {}",
        auto_vacuum_name(pragma_i64(db.conn(), "auto_vacuum")?)
    ))
}

fn observer_rowids(db: &WriteDb) -> anyhow::Result<Vec<(i64, rusqlite::types::Value)>> {
    let mut st = db
        .conn()
        .prepare("SELECT rowid, id FROM observers ORDER BY rowid")?;
    let rows = st.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}
