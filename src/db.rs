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

// ---------------------------------------------------------------------------
// Pre-open checks: classify files before SQLite sees them.

/// SQLite's unix VFS builds the full path of a database (working directory
/// prepended, `.`/`..` collapsed, symlinks resolved) in a buffer of 512
/// bytes that must also hold the `-journal` suffix: a full path longer than
/// this cannot be opened (pinned by a unit test).
pub const SQLITE_MAX_PATH: usize = 504;

/// Below this much free space on the database's filesystem an I/O error is
/// reported as "disk full" (SQLite reports ENOSPC in some paths as a plain
/// "disk I/O error").
const LOW_SPACE_BYTES: u64 = 1 << 20;

/// The absolute path SQLite will use for `path` (symlinks resolved where
/// they exist), for the length check.
fn full_path(path: &Path) -> PathBuf {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    };
    if let Ok(p) = std::fs::canonicalize(&abs) {
        return p;
    }
    match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) => std::fs::canonicalize(parent)
            .map(|p| p.join(name))
            .unwrap_or(abs),
        _ => abs,
    }
}

fn path_too_long(path: &Path) -> Option<Failure> {
    let full = full_path(path);
    let n = full.as_os_str().len();
    if n <= SQLITE_MAX_PATH {
        return None;
    }
    Some(Failure::Fatal(format!(
        "the path {} is too long for SQLite: {n} bytes as a full path (symlinks and relative parts resolved), SQLite opens at most {SQLITE_MAX_PATH}; \
         move the database to a shorter path or bind-mount its directory at one",
        path.display()
    )))
}

/// The first bytes of the database file.
struct Header {
    bytes: [u8; 100],
    len: usize,
    size: u64,
}

impl Header {
    fn read(path: &Path, f: &mut File) -> anyhow::Result<Header> {
        use std::io::Seek;
        f.rewind()
            .with_context(|| format!("cannot read {}", path.display()))?;
        let size = f
            .metadata()
            .with_context(|| format!("cannot read {}", path.display()))?
            .len();
        let mut bytes = [0u8; 100];
        let len =
            read_up_to(f, &mut bytes).with_context(|| format!("cannot read {}", path.display()))?;
        Ok(Header { bytes, len, size })
    }

    fn page_size(&self) -> u64 {
        let raw = u16::from_be_bytes([self.bytes[16], self.bytes[17]]) as u64;
        if raw == 1 {
            65_536
        } else {
            raw
        }
    }

    /// Pages the header says the database has (0 when that field is not valid).
    fn pages(&self) -> u64 {
        let b = &self.bytes;
        if b[24..28] != b[92..96] {
            return 0;
        }
        u32::from_be_bytes([b[28], b[29], b[30], b[31]]) as u64
    }

    /// The main file is shorter than the header says (or than one page).
    fn short(&self) -> bool {
        let ps = self.page_size();
        ps < 512 || self.size < ps || (self.pages() > 0 && self.size < self.pages() * ps)
    }
}

/// Number of frames at the start of `PATH-wal` that belong to the current
/// WAL (valid magic, the database's page size, the header's salt), 0 when
/// there is no such WAL. SQLite itself verifies checksums on recovery.
fn wal_frames(path: &Path, page_size: u64) -> u64 {
    let wal = wal_path(path);
    let Ok(mut f) = File::open(&wal) else {
        return 0;
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut b = [0u8; 56];
    if read_up_to(&mut f, &mut b).unwrap_or(0) < b.len() {
        return 0;
    }
    let magic = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let ps = u32::from_be_bytes([b[8], b[9], b[10], b[11]]) as u64;
    let ps = if ps == 1 { 65_536 } else { ps };
    if !(magic == 0x377f_0682 || magic == 0x377f_0683) || ps != page_size {
        return 0;
    }
    // The first frame header (at 32) repeats the WAL header's salt (16..24).
    if b[40..48] != b[16..24] {
        return 0;
    }
    (len - 32) / (24 + page_size)
}

/// `PATH-journal` is a hot rollback journal candidate (non-empty, header not
/// zeroed); SQLite decides for sure.
fn hot_journal_bytes(path: &Path) -> Option<u64> {
    let j = sidecar(path, "-journal");
    let mut f = File::open(&j).ok()?;
    let len = f.metadata().ok()?.len();
    let mut b = [0u8; 1];
    (len > 0 && read_up_to(&mut f, &mut b).ok()? == 1 && b[0] != 0).then_some(len)
}

/// The database file is in WAL mode (header write/read versions 2).
fn header_says_wal(path: &Path) -> bool {
    let Ok(mut f) = File::open(path) else {
        return false;
    };
    let mut b = [0u8; 20];
    read_up_to(&mut f, &mut b).unwrap_or(0) == 20 && (b[18] == 2 || b[19] == 2)
}

fn file_kind(ft: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_fifo() {
        "a FIFO (named pipe)"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else {
        "not a regular file"
    }
}

/// What the file looks like before SQLite opens it. `Ok(true)`: an existing
/// SQLite file; `Ok(false)`: SQLite may create it (only with `allow_missing`,
/// i.e. `migrate --create`: a missing or empty file).
fn precheck(path: &Path, allow_missing: bool) -> anyhow::Result<bool> {
    if let Some(f) = path_too_long(path) {
        return Err(f.into());
    }
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
        Err(e) if e.raw_os_error() == Some(libc::ENAMETOOLONG) => {
            return Err(Failure::Fatal(format!(
                "the path {} is too long ({e}); SQLite opens at most {SQLITE_MAX_PATH} bytes as a full path: use a shorter path",
                path.display()
            ))
            .into())
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
    if !meta.is_file() {
        // Never open it: reading a FIFO blocks until a writer appears, a
        // device may never end.
        return Err(Failure::Fatal(format!(
            "{} is {}, not a database file (give the path of the .db file)",
            path.display(),
            file_kind(&meta.file_type())
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
    let mut h = Header::read(path, &mut f)?;
    if h.size == 0 {
        if allow_missing {
            // An empty file is an empty SQLite database: `migrate --create`
            // creates the schema in it (e.g. after a run killed at its start).
            return Ok(false);
        }
        return Err(Failure::Fatal(format!(
            "{} is an empty file, not a SQLite database (wrong path? a CoreScope database is created by its ingestor or by `corescope migrate --create` on a new path)",
            path.display()
        ))
        .into());
    }
    if h.len < 16 || &h.bytes[..16] != b"SQLite format 3\0" {
        return Err(Failure::Fatal(format!(
            "{} is not a SQLite database (no SQLite header; wrong path?)",
            path.display()
        ))
        .into());
    }
    if h.len < 100 {
        return Err(Failure::Fatal(format!(
            "{} is a truncated SQLite database ({} bytes; restore it from a backup)",
            path.display(),
            h.size
        ))
        .into());
    }
    if h.short() {
        // A main file shorter than its header says is normal while a
        // checkpoint copies pages back from the WAL (the header page is
        // written first), or after one was cut short (crash, disk full):
        // the pages are in the WAL and SQLite reads them from there. A hot
        // rollback journal likewise holds what SQLite restores.
        let frames = wal_frames(path, h.page_size());
        if frames > 0 {
            log::info!(
                "{}: {} bytes, the header says {} pages of {}; the WAL beside it holds {frames} frames: letting SQLite read them",
                path.display(),
                h.size,
                h.pages(),
                h.page_size()
            );
            return Ok(true);
        }
        // (A `-journal` beside a WAL database is never rolled back.)
        let wal_mode = h.bytes[18] == 2 || h.bytes[19] == 2;
        if let Some(n) = hot_journal_bytes(path).filter(|_| !wal_mode) {
            log::info!(
                "{}: shorter than its header says, with a {n}-byte rollback journal beside it: letting SQLite recover it",
                path.display()
            );
            return Ok(true);
        }
        // A checkpoint may have finished (and reset the WAL) between the
        // two reads: look at the main file once more.
        h = Header::read(path, &mut f)?;
        if h.short() {
            return Err(Failure::Fatal(format!(
                "{} is a truncated or damaged SQLite database ({} bytes, header says {} pages of {}, and no WAL or journal beside it holds the rest; restore it from a backup)",
                path.display(),
                h.size,
                h.pages(),
                h.page_size()
            ))
            .into());
        }
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

/// Free bytes for unprivileged users on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs fills a zeroed struct from a NUL-terminated path; read only on success.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

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
    let mut free_text = free
        .map(|n| format!("{} free on its filesystem", human_bytes(n)))
        .unwrap_or_else(|| "free space unknown".to_string());
    if let Some(n) = errno.filter(|n| *n != 0) {
        free_text.push_str(&format!(
            "; the system said: {}",
            std::io::Error::from_raw_os_error(n)
        ));
    }
    let full = ext & 0xff == rusqlite::ffi::SQLITE_FULL
        || matches!(errno, Some(libc::ENOSPC) | Some(libc::EDQUOT))
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
fn system_errno(conn: &Connection) -> Option<i32> {
    // SAFETY: the handle is valid for the life of `conn`; the call only reads it.
    let n = unsafe { rusqlite::ffi::sqlite3_system_errno(conn.handle()) };
    (n != 0).then_some(n)
}

/// [`classify`] with the errno of the failed call on `conn` (ENOSPC makes
/// an I/O error a full disk, whatever the free space says afterwards).
fn classify_on(conn: &Connection, path: &Path, e: rusqlite::Error, writing: bool) -> anyhow::Error {
    classify_with(path, e, writing, system_errno(conn))
}

/// Turn a SQLite error from opening or first use into a classified message.
fn classify(path: &Path, e: rusqlite::Error, writing: bool) -> anyhow::Error {
    classify_with(path, e, writing, None)
}

fn classify_with(
    path: &Path,
    e: rusqlite::Error,
    writing: bool,
    errno: Option<i32>,
) -> anyhow::Error {
    use rusqlite::ErrorCode as C;
    let p = path.display();
    let ext = extended_code(&e);
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
        Some(C::ReadOnly) if ext == rusqlite::ffi::SQLITE_READONLY_ROLLBACK => {
            let j = sidecar(path, "-journal");
            Failure::Fatal(format!(
                "cannot read {p} yet: {} is a hot rollback journal, left by a writer that stopped in the middle of a transaction (killed, crashed, power loss). \
                 SQLite must roll that transaction back before anyone can read the database, which writes to it, and a read-only command never writes. \
                 The next read-write open rolls it back: start the CoreScope ingestor, or run `corescope migrate --db {p}` (it also brings the schema up to date); \
                 then run this again. Nothing was changed",
                j.display()
            ))
            .into()
        }
        Some(C::ReadOnly) if !writing && header_says_wal(path) => Failure::Fatal(format!(
            "cannot read {p}: it is a WAL database and SQLite must create or initialise {p}-shm beside it to read it, but cannot (directory or -shm not writable); \
             run while the ingestor has the database open (its -shm then exists), or as the user that owns the database"
        ))
        .into(),
        Some(C::ReadOnly) if !writing => Failure::Fatal(format!(
            "cannot read {p}: SQLite was refused write access it needs to read it ({e}, extended code {ext}); run as the user that owns the database"
        ))
        .into(),
        Some(C::ReadOnly) => Failure::Fatal(format!(
            "cannot write {p}: the file or its directory is read-only (run as the user that owns the database, or fix permissions; SQLite also needs to create {p}-wal/-journal beside it)"
        ))
        .into(),
        Some(C::CannotOpen) => match path_too_long(path) {
            Some(f) => f.into(),
            None => Failure::Fatal(format!(
                "cannot open {p} ({e}); check the path and the permissions of the file and its directory"
            ))
            .into(),
        },
        Some(C::PermissionDenied) => Failure::Fatal(format!(
            "permission denied on {p} (run as the user that owns the database)"
        ))
        .into(),
        Some(C::SystemIoFailure) | Some(C::DiskFull) => {
            storage_failure(path, &e.to_string(), ext, writing, errno).into()
        }
        _ => anyhow::Error::new(e).context(format!("database {p}")),
    }
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
            crate::runlock::hold(path, spec)?;
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
            Ok(v) => tx
                .commit()
                .map(|_| v)
                .map_err(|e| classify_on(&self.conn, &path, e, true)),
            Err(err) => {
                let errno = system_errno(&self.conn);
                let _ = tx.rollback();
                Err(classify_anyhow(&path, err, errno))
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
    let Some(sqlite_err) = err
        .chain()
        .find_map(|c| c.downcast_ref::<rusqlite::Error>())
    else {
        return err;
    };
    let Some(code) = sqlite_err.sqlite_error_code() else {
        return err;
    };
    let ext = extended_code(sqlite_err);
    let p = path.display();
    let detail = format!("{err:#}").replace('\n', " ");
    let msg = match code {
        C::DatabaseCorrupt => format!(
            "{p} is corrupt ({detail}); run `corescope check --integrity`, and restore from a backup"
        ),
        C::NotADatabase => {
            format!("{p} is not a SQLite database or is damaged ({detail}); restore from a backup")
        }
        C::DiskFull | C::SystemIoFailure => {
            return storage_failure(path, &detail, ext, true, None).into()
        }
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
fn classify_anyhow(path: &Path, err: anyhow::Error, errno: Option<i32>) -> anyhow::Error {
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
                        | Some(rusqlite::ErrorCode::SystemIoFailure)
                        | Some(rusqlite::ErrorCode::ReadOnly)
                        | Some(rusqlite::ErrorCode::NotADatabase)
                )
            {
                classify_with(path, e, true, errno)
            } else {
                anyhow::Error::new(e).context(format!("database {}", path.display()))
            }
        }
        Err(other) => other,
    }
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
            "CREATE TABLE transmissions(id INTEGER PRIMARY KEY, raw_hex TEXT, hash TEXT, first_seen TEXT, x TEXT);
             CREATE TABLE observations(id INTEGER PRIMARY KEY, transmission_id INTEGER, timestamp INTEGER);
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

    /// A directory path whose full form is exactly `len` bytes with `name`.
    fn path_of_len(base: &Path, len: usize) -> PathBuf {
        let mut p = std::fs::canonicalize(base).unwrap();
        loop {
            let left = len - p.as_os_str().len() - 1;
            if left <= 200 {
                return p.join("f".repeat(left));
            }
            p = p.join("d".repeat(100));
            std::fs::create_dir_all(&p).unwrap();
        }
    }

    #[test]
    fn sqlite_path_limit_is_pinned() {
        let dir = tempfile::tempdir().unwrap();
        let ok = path_of_len(dir.path(), SQLITE_MAX_PATH);
        assert_eq!(ok.as_os_str().len(), SQLITE_MAX_PATH);
        assert!(path_too_long(&ok).is_none());
        Connection::open(&ok)
            .and_then(|c| c.execute_batch("CREATE TABLE t(a)"))
            .unwrap();
        let long = path_of_len(dir.path(), SQLITE_MAX_PATH + 1);
        assert!(Connection::open(&long)
            .and_then(|c| c.execute_batch("CREATE TABLE t(a)"))
            .is_err());
        let e = path_too_long(&long).unwrap().to_string();
        assert!(e.contains("too long") && e.contains("505 bytes"), "{e}");
        // Refused before SQLite sees it: nothing is created.
        let e = WriteDb::open(
            &long,
            &OpenOptions {
                create: true,
                ..Default::default()
            },
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("too long for SQLite"), "{e}");
        assert!(!long.exists());
    }

    #[test]
    fn core_schema_is_what_a_legacy_database_has() {
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/legacy-2026-03.db");
        let c = Connection::open_with_flags(&fixture, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        assert_eq!(core_missing(&c).unwrap(), (vec![], vec![]));
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE TABLE transmissions(id INTEGER PRIMARY KEY);
             CREATE TABLE nodes(public_key TEXT PRIMARY KEY);",
        )
        .unwrap();
        let (tables, cols) = core_missing(&c).unwrap();
        assert_eq!(tables, ["observations", "observers"]);
        assert_eq!(
            cols,
            [
                "transmissions.raw_hex",
                "transmissions.hash",
                "transmissions.first_seen"
            ]
        );
    }

    #[test]
    fn short_file_without_wal_is_truncated_with_a_garbage_wal_too() {
        let (d, p) = tmpdb();
        let c = Connection::open(&p).unwrap();
        c.execute_batch("CREATE TABLE pad(x); INSERT INTO pad VALUES (zeroblob(20000));")
            .unwrap();
        drop(c);
        let bytes = std::fs::read(&p).unwrap();
        let cut = d.path().join("cut.db");
        std::fs::write(&cut, &bytes[..bytes.len() - 4096]).unwrap();
        let e = ReadOnlyDb::open(&cut, 100).err().unwrap().to_string();
        assert!(e.contains("truncated") && e.contains("no WAL"), "{e}");
        // A -wal that is not a WAL (or an empty one) does not hold the pages.
        std::fs::write(wal_path(&cut), vec![7u8; 9000]).unwrap();
        let e = ReadOnlyDb::open(&cut, 100).err().unwrap().to_string();
        assert!(e.contains("truncated"), "{e}");
        std::fs::write(wal_path(&cut), b"").unwrap();
        let e = ReadOnlyDb::open(&cut, 100).err().unwrap().to_string();
        assert!(e.contains("truncated"), "{e}");
    }

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
