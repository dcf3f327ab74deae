//! Classification of SQLite errors into one-line messages that name the
//! file and the fix, with the exit code of their [`Failure`] kind.
//!
//! One rule for all of it (`rule`), applied at three stages by thin entry
//! points: [`classify`]/[`classify_on`] for a `rusqlite::Error` from opening
//! or using a handle, [`classify_anyhow`] for the error a write transaction
//! returned, [`classify_final`] as the last pass over a command's error
//! (called once by the application), for a SQLite error deep in a chain
//! that no layer classified.

use std::path::Path;

use rusqlite::Connection;

use super::open::sidecar;
use super::precheck::{free_bytes, header_says_wal, path_too_long, LOW_SPACE_BYTES};
use crate::error::Failure;

/// "16 KiB", "3.2 MiB", "12.0 GiB".
fn human_bytes(n: u64) -> String {
    const K: f64 = 1024.0;
    let f = n as f64;
    if f < K * K {
        format!("{} KiB", (f / K).round() as u64)
    } else if f < K * K * K {
        format!("{:.1} MiB", f / K / K)
    } else {
        format!("{:.1} GiB", f / K / K / K)
    }
}

/// The name of a SQLite extended I/O error code, for messages.
fn ioerr_name(ext: i32) -> String {
    use rusqlite::ffi as f;
    let name = match ext {
        f::SQLITE_IOERR_READ => "IOERR_READ",
        f::SQLITE_IOERR_SHORT_READ => "IOERR_SHORT_READ",
        f::SQLITE_IOERR_WRITE => "IOERR_WRITE",
        f::SQLITE_IOERR_FSYNC => "IOERR_FSYNC",
        f::SQLITE_IOERR_DIR_FSYNC => "IOERR_DIR_FSYNC",
        f::SQLITE_IOERR_TRUNCATE => "IOERR_TRUNCATE",
        f::SQLITE_IOERR_FSTAT => "IOERR_FSTAT",
        f::SQLITE_IOERR_SHMOPEN => "IOERR_SHMOPEN",
        f::SQLITE_IOERR_SHMSIZE => "IOERR_SHMSIZE",
        f::SQLITE_IOERR_SHMMAP => "IOERR_SHMMAP",
        f::SQLITE_IOERR_MMAP => "IOERR_MMAP",
        f::SQLITE_IOERR_NOMEM => "IOERR_NOMEM",
        f::SQLITE_FULL => "FULL",
        _ => return format!("code {ext}"),
    };
    format!("SQLITE_{name}")
}

/// A SQLITE_FULL or SQLITE_IOERR_* error: disk full when SQLite says so or
/// the filesystem has (almost) no space left, else an I/O error; both with
/// the free space, SQLite's words and its extended code.
fn storage_failure(
    path: &Path,
    detail: &str,
    ext: i32,
    writing: bool,
    errno: Option<i32>,
) -> Failure {
    let p = path.display();
    let free = free_bytes(path);
    let mut free_text = free.map_or_else(
        || "free space unknown".to_string(),
        |n| format!("{} free on its filesystem", human_bytes(n)),
    );
    if let Some(n) = errno.filter(|n| *n != 0) {
        free_text.push_str(&format!(
            "; the system said: {}",
            std::io::Error::from_raw_os_error(n)
        ));
    }
    let full = ext & 0xff == rusqlite::ffi::SQLITE_FULL
        || matches!(errno, Some(libc::ENOSPC | libc::EDQUOT))
        || free.is_some_and(|n| n < LOW_SPACE_BYTES);
    if full && !writing {
        Failure::Fatal(format!(
            "disk full on the filesystem of {p} ({free_text}; SQLite: {detail}, {}): even reading needs room beside it \
             (a WAL database's {p}-shm); free space and run again. Nothing was changed",
            ioerr_name(ext)
        ))
    } else if full {
        Failure::Fatal(format!(
            "disk full while writing {p} ({free_text}; SQLite: {detail}, {}); free space and run again (completed batches are kept, the rest resumes)",
            ioerr_name(ext)
        ))
    } else {
        Failure::Fatal(format!(
            "I/O error on {p} (SQLite: {detail}, {}; {free_text}); check the storage (kernel log) and run again",
            ioerr_name(ext)
        ))
    }
}

fn extended_code(e: &rusqlite::Error) -> i32 {
    match e {
        rusqlite::Error::SqliteFailure(f, _) => f.extended_code,
        _ => 0,
    }
}

/// The errno of the last failed system call SQLite made on `conn`, if any.
pub(super) fn system_errno(conn: &Connection) -> Option<i32> {
    // SAFETY: the handle is valid for the life of `conn`; the call only reads it.
    let n = unsafe { rusqlite::ffi::sqlite3_system_errno(conn.handle()) };
    (n != 0).then_some(n)
}

/// Where a SQLite error is classified; the same code reads a little
/// differently at each stage (a transaction never meets a failed open, and
/// the last pass does not know whether the command was writing).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Opening a handle or its first use, reading or writing.
    Open { writing: bool },
    /// The error a write transaction returned.
    Transaction,
    /// The last pass over a command's error chain, once per run.
    Final,
}

/// The one rule: the classified [`Failure`] for SQLite error `e` on `path`
/// at `stage`, or `None` when the code is not one that names a fix (the
/// caller keeps SQLite's own words). `detail` is the error text quoted in
/// the message; `errno` the failed system call's, when known.
fn rule(
    path: &Path,
    e: &rusqlite::Error,
    detail: &str,
    stage: Stage,
    errno: Option<i32>,
) -> Option<Failure> {
    use rusqlite::ErrorCode as C;
    let p = path.display();
    let ext = extended_code(e);
    let writing = stage != Stage::Open { writing: false };
    let at_handle = stage != Stage::Final;
    let failure = match e.sqlite_error_code()? {
        C::NotADatabase if at_handle => Failure::Fatal(format!(
            "{p} is not a SQLite database (file is encrypted or not a database)"
        )),
        C::NotADatabase => Failure::Fatal(format!(
            "{p} is not a SQLite database or is damaged ({detail}); restore from a backup (e.g. one taken with `corescope backup`)"
        )),
        C::DatabaseCorrupt => Failure::Fatal(format!(
            "{p} is corrupt ({detail}); run `corescope check --integrity`, and restore from a backup (e.g. one taken with `corescope backup`)"
        )),
        C::DatabaseBusy | C::DatabaseLocked if at_handle => Failure::Busy(format!(
            "{p} is locked by another writer beyond the busy timeout; try again next run (or raise --busy-timeout)"
        )),
        C::ReadOnly if at_handle && ext == rusqlite::ffi::SQLITE_READONLY_ROLLBACK => {
            Failure::Fatal(format!(
                "cannot read {p} yet: {} is a hot rollback journal, left by a writer that stopped in the middle of a transaction (killed, crashed, power loss). \
                 SQLite must roll that transaction back before anyone can read the database, which writes to it, and a read-only command never writes. \
                 The next read-write open rolls it back: start the CoreScope ingestor, or run `corescope migrate --db {p}` (it also brings the schema up to date); \
                 then run this again. Nothing was changed",
                sidecar(path, "-journal").display()
            ))
        }
        C::ReadOnly if !writing && header_says_wal(path) => Failure::Fatal(format!(
            "cannot read {p}: it is a WAL database and SQLite must create or initialise {p}-shm beside it to read it, but cannot (directory or -shm not writable); \
             run while the ingestor has the database open (its -shm then exists), or as the user that owns the database"
        )),
        C::ReadOnly if !writing => Failure::Fatal(format!(
            "cannot read {p}: SQLite was refused write access it needs to read it ({detail}, extended code {ext}); run as the user that owns the database"
        )),
        C::ReadOnly if at_handle => Failure::Fatal(format!(
            "cannot write {p}: the file or its directory is read-only (run as the user that owns the database, or fix permissions; SQLite also needs to create {p}-wal/-journal beside it)"
        )),
        C::ReadOnly => Failure::Fatal(format!(
            "cannot write {p}: the file or its directory is read-only ({detail}); run as the user that owns the database, or fix permissions"
        )),
        C::CannotOpen if matches!(stage, Stage::Open { .. }) => {
            path_too_long(path).unwrap_or_else(|| {
                Failure::Fatal(format!(
                    "cannot open {p} ({detail}); check the path and the permissions of the file and its directory"
                ))
            })
        }
        C::PermissionDenied if matches!(stage, Stage::Open { .. }) => Failure::Fatal(format!(
            "permission denied on {p} (run as the user that owns the database)"
        )),
        C::SystemIoFailure | C::DiskFull => storage_failure(path, detail, ext, writing, errno),
        _ => return None,
    };
    Some(failure)
}

/// At a handle: the classified message, or SQLite's words with the path.
fn at_handle(path: &Path, e: rusqlite::Error, stage: Stage, errno: Option<i32>) -> anyhow::Error {
    match rule(path, &e, &e.to_string(), stage, errno) {
        Some(f) => f.into(),
        None => anyhow::Error::new(e).context(format!("database {}", path.display())),
    }
}

/// [`classify`] with the errno of the failed call on `conn` (ENOSPC makes
/// an I/O error a full disk, whatever the free space says afterwards).
pub(super) fn classify_on(
    conn: &Connection,
    path: &Path,
    e: rusqlite::Error,
    writing: bool,
) -> anyhow::Error {
    at_handle(path, e, Stage::Open { writing }, system_errno(conn))
}

/// Turn a SQLite error from opening or first use into a classified message.
pub(super) fn classify(path: &Path, e: rusqlite::Error, writing: bool) -> anyhow::Error {
    at_handle(path, e, Stage::Open { writing }, None)
}

/// The error a write transaction returned: a SQLite error on top of the
/// chain is classified, other errors (already classified, or the
/// command's own) are left as they are.
pub(super) fn classify_anyhow(
    path: &Path,
    err: anyhow::Error,
    errno: Option<i32>,
) -> anyhow::Error {
    if err.downcast_ref::<Failure>().is_some() {
        return err;
    }
    match err.downcast::<rusqlite::Error>() {
        Ok(e) => at_handle(path, e, Stage::Transaction, errno),
        Err(other) => other,
    }
}

/// Final classification of a command's error (called once by the
/// application): a SQLite corruption, disk-full, read-only or
/// not-a-database error anywhere in the chain that no layer classified
/// becomes one line naming the path and what to do. Other errors are
/// returned unchanged.
pub fn classify_final(path: &Path, err: anyhow::Error) -> anyhow::Error {
    if err.chain().any(|c| c.downcast_ref::<Failure>().is_some()) {
        return err;
    }
    let Some(sqlite_err) = err
        .chain()
        .find_map(|c| c.downcast_ref::<rusqlite::Error>())
    else {
        return err;
    };
    let detail = format!("{err:#}").replace('\n', " ");
    match rule(path, sqlite_err, &detail, Stage::Final, None) {
        Some(f) => f.into(),
        None => err,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_errors_say_disk_full_when_space_is_low() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.db");
        let full = storage_failure(&p, "database or disk is full", 13, true, None).to_string();
        let reading = storage_failure(&p, "database or disk is full", 13, false, None).to_string();
        assert!(
            reading.starts_with("disk full on the filesystem of")
                && reading.contains("SQLITE_FULL")
                && reading.contains("Nothing was changed"),
            "{reading}"
        );
        assert!(
            full.starts_with("disk full while writing") && full.contains("free on its filesystem"),
            "{full}"
        );
        assert!(full.contains("SQLITE_FULL"), "{full}");
        // Plenty of space: an I/O error stays an I/O error, with the errno.
        let io = storage_failure(&p, "disk I/O error", 778, true, Some(libc::EIO)).to_string();
        assert!(
            io.starts_with("I/O error on")
                && io.contains("SQLITE_IOERR_WRITE")
                && io.contains("the system said: Input/output error"),
            "{io}"
        );
        // ENOSPC makes an I/O error a full disk whatever the free space.
        let nospc =
            storage_failure(&p, "disk I/O error", 4874, true, Some(libc::ENOSPC)).to_string();
        assert!(
            nospc.starts_with("disk full while writing")
                && nospc.contains("SQLITE_IOERR_SHMSIZE")
                && nospc.contains("No space left on device"),
            "{nospc}"
        );
        assert_eq!(human_bytes(16 * 1024), "16 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 + 300_000), "3.3 MiB");
        assert_eq!(
            ioerr_name(rusqlite::ffi::SQLITE_IOERR_WRITE),
            "SQLITE_IOERR_WRITE"
        );
    }
}
