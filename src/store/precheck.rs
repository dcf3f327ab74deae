//! Checks of a database path before SQLite sees it: file type, size,
//! header, truncation, hot journal, path length; free space.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::open::{sidecar, wal_path};
use crate::error::Failure;

/// SQLite's unix VFS builds the full path of a database (working directory
/// prepended, `.`/`..` collapsed, symlinks resolved) in a buffer of 512
/// bytes that must also hold the `-journal` suffix: a full path longer than
/// this cannot be opened (pinned by a unit test).
pub const SQLITE_MAX_PATH: usize = 504;

/// Below this much free space on the database's filesystem an I/O error is
/// reported as "disk full" (SQLite reports ENOSPC in some paths as a plain
/// "disk I/O error").
pub(super) const LOW_SPACE_BYTES: u64 = 1 << 20;

/// The absolute path SQLite will use for `path` (symlinks resolved where
/// they exist), for the length check.
pub(super) fn full_path(path: &Path) -> PathBuf {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map_or_else(|_| path.to_path_buf(), |d| d.join(path))
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

pub(super) fn path_too_long(path: &Path) -> Option<Failure> {
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
        // The header first, then the size: a writer that grows the file
        // writes the new page count before (or while) it extends the file,
        // so a size read after the header is never older than the header.
        let mut bytes = [0u8; 100];
        let len =
            read_up_to(f, &mut bytes).with_context(|| format!("cannot read {}", path.display()))?;
        let size = f
            .metadata()
            .with_context(|| format!("cannot read {}", path.display()))?
            .len();
        Ok(Header { bytes, len, size })
    }

    fn page_size(&self) -> u64 {
        let raw = u64::from(u16::from_be_bytes([self.bytes[16], self.bytes[17]]));
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
        u64::from(u32::from_be_bytes([b[28], b[29], b[30], b[31]]))
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
    let len = f.metadata().map_or(0, |m| m.len());
    let mut b = [0u8; 56];
    if read_up_to(&mut f, &mut b).unwrap_or(0) < b.len() {
        return 0;
    }
    let magic = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let ps = u64::from(u32::from_be_bytes([b[8], b[9], b[10], b[11]]));
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
pub(super) fn header_says_wal(path: &Path) -> bool {
    let Ok(mut f) = File::open(path) else {
        return false;
    };
    let mut b = [0u8; 20];
    read_up_to(&mut f, &mut b).unwrap_or(0) == 20 && (b[18] == 2 || b[19] == 2)
}

/// What a file that is not a regular file is, for messages ("is a socket,
/// not a ...").
pub(super) fn file_kind(ft: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
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
pub(super) fn precheck(path: &Path, allow_missing: bool) -> anyhow::Result<bool> {
    if let Some(f) = path_too_long(path) {
        return Err(f.into());
    }
    let Some(meta) = existing(path, allow_missing)? else {
        return Ok(false);
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
            file_kind(meta.file_type())
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
    let h = Header::read(path, &mut f)?;
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
            "{} is a truncated SQLite database ({} bytes; restore it from a backup, e.g. one taken with `corescope backup`)",
            path.display(),
            h.size
        ))
        .into());
    }
    if h.short() {
        short_main_file(path, &mut f, &h)?;
    }
    Ok(true)
}

/// The metadata of an existing `path`; `None` when it is missing and may be
/// created (`allow_missing`, with its directory there); else an error that
/// says what is wrong with the path.
fn existing(path: &Path, allow_missing: bool) -> anyhow::Result<Option<std::fs::Metadata>> {
    let e = match std::fs::metadata(path) {
        Ok(m) => return Ok(Some(m)),
        Err(e) => e,
    };
    let message = if e.kind() == std::io::ErrorKind::NotFound {
        if allow_missing {
            let parent = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            if parent.is_dir() {
                return Ok(None);
            }
            format!(
                "cannot create {}: directory {} does not exist (create it first)",
                path.display(),
                parent.display()
            )
        } else {
            format!(
                "database {} does not exist (check --db / CORESCOPE_DB; to create a new database use `corescope migrate --create`)",
                path.display()
            )
        }
    } else if e.raw_os_error() == Some(libc::ENAMETOOLONG) {
        format!(
            "the path {} is too long ({e}); SQLite opens at most {SQLITE_MAX_PATH} bytes as a full path: use a shorter path",
            path.display()
        )
    } else {
        format!(
            "cannot access {}: {e} (check the path and its permissions)",
            path.display()
        )
    };
    Err(Failure::Fatal(message).into())
}

/// A main file shorter than its header says: fine when a WAL or a hot
/// rollback journal beside it holds the rest, else truncated or damaged.
fn short_main_file(path: &Path, f: &mut File, h: &Header) -> anyhow::Result<()> {
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
        return Ok(());
    }
    // (A `-journal` beside a WAL database is never rolled back.)
    let wal_mode = h.bytes[18] == 2 || h.bytes[19] == 2;
    if let Some(n) = hot_journal_bytes(path).filter(|_| !wal_mode) {
        log::info!(
            "{}: shorter than its header says, with a {n}-byte rollback journal beside it: letting SQLite recover it",
            path.display()
        );
        return Ok(());
    }
    // A checkpoint may have finished (and reset the WAL), or a writer in
    // rollback-journal mode committed (and removed its journal), between the
    // reads: look at the main file again, a few times over ~50 ms, before
    // calling it damaged.
    let mut h = Header::read(path, f)?;
    for _ in 0..5 {
        if !h.short() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        h = Header::read(path, f)?;
    }
    if h.short() {
        return Err(Failure::Fatal(format!(
            "{} is a truncated or damaged SQLite database ({} bytes, header says {} pages of {}, and no WAL or journal beside it holds the rest; restore it from a backup, e.g. one taken with `corescope backup`)",
            path.display(),
            h.size,
            h.pages(),
            h.page_size()
        ))
        .into());
    }
    Ok(())
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
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    dir_free_bytes(dir).ok()
}

/// Free bytes for unprivileged users on the filesystem of the directory
/// `dir` (`statvfs`: available blocks × fragment size).
#[allow(clippy::unnecessary_cast)] // the field types differ between platforms
pub fn dir_free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statvfs fills a zeroed struct from a NUL-terminated path; read only on success.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path that outlives the call; `st` is a valid out-pointer.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}
