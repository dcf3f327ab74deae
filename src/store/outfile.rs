//! Files corescope writes besides the database: output files
//! (`graph dump --output`, `--nodes-csv`), the metrics file, and the lock
//! files of the run lock and the metrics file.
//!
//! One place decides what such a path may be ([`check_output`]) and how it
//! is written ([`write_atomic`], [`open_lock`]):
//!
//! - An output path may never be the database or its `-wal`, `-shm` or
//!   `-journal` file, compared both by name (after resolving the directory
//!   and the database's symlinks) and by identity (device and inode, so a
//!   hard link or another path to the same file is caught too). It may not
//!   be a symbolic link, a directory, a device, a FIFO or a socket (the file
//!   is replaced by a rename, which would replace the link or fail), and an
//!   existing SQLite database is only replaced with `--force`.
//! - Output files are written to a new temporary file in the same directory
//!   (unique name, `O_CREAT|O_EXCL`, so a planted symlink is never
//!   followed), fsynced and renamed into place.
//! - Lock files are opened with `O_NOFOLLOW` and must be regular files with
//!   a single link: a planted symlink or hard link cannot make corescope
//!   write a pid into another file, even when it runs as root in a
//!   directory another user can write.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::precheck::file_kind;
use crate::error::Failure;

/// Mode of output, metrics and lock files (before the umask).
pub const FILE_MODE: u32 = 0o644;

/// The first 16 bytes of every SQLite 3 database file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// The sidecar files SQLite keeps beside a database.
const SIDECARS: &[(&str, &str)] = &[
    ("", "the database"),
    ("-wal", "the write-ahead log (-wal) of the database"),
    ("-shm", "the shared-memory file (-shm) of the database"),
    (
        "-journal",
        "the rollback journal (-journal) of the database",
    ),
];

/// What an output path is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Guard<'a> {
    /// The database of this run (None: commands without one).
    pub db: Option<&'a Path>,
    /// `--force`: an existing SQLite database other than `db` may be replaced.
    pub force: bool,
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// `path` with its directory resolved (the last component kept as is), so
/// two spellings of the same directory compare equal. None when the
/// directory does not exist.
fn resolved_name(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    Some(std::fs::canonicalize(dir).ok()?.join(name))
}

/// The database's own files: (name, role) for every spelling of its path
/// (as given, directory resolved, fully resolved through symlinks; SQLite
/// keeps `-wal`/`-shm` beside the resolved file).
fn protected_names(db: &Path) -> Vec<(PathBuf, &'static str)> {
    let mut bases = vec![db.to_path_buf()];
    bases.extend(resolved_name(db));
    bases.extend(std::fs::canonicalize(db).ok());
    let mut out = Vec::new();
    for b in &bases {
        for (suffix, role) in SIDECARS {
            out.push((with_suffix(b, suffix), *role));
        }
    }
    out
}

/// True when the regular file at `path` starts with SQLite's header.
fn is_sqlite_file(path: &Path) -> bool {
    let Ok(mut f) = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    else {
        return false;
    };
    let mut head = [0u8; 16];
    f.read_exact(&mut head).is_ok() && &head == SQLITE_MAGIC
}

/// Decide whether `path` (given as `flag`) may be written as an output
/// file. Every refusal is a usage error (exit 2) naming the path and why;
/// nothing is created or changed.
pub fn check_output(path: &Path, flag: &str, guard: Guard<'_>) -> Result<(), Failure> {
    let shown = path.display();
    let refuse = |why: String| Failure::Usage(format!("{flag} {shown}: {why}"));
    if path.as_os_str().is_empty() || path.file_name().is_none() {
        return Err(refuse(
            "not a file path (give a file name, not a directory)".into(),
        ));
    }
    if let Some(db) = guard.db.filter(|d| !d.as_os_str().is_empty()) {
        let why = |role: &str| {
            format!(
                "is {role} {}; corescope never writes output there (it would destroy the database); choose another file",
                db.display()
            )
        };
        // By name: catches a sidecar that does not exist yet.
        let mine: Vec<PathBuf> = [Some(path.to_path_buf()), resolved_name(path)]
            .into_iter()
            .flatten()
            .collect();
        for (name, role) in protected_names(db) {
            if mine.contains(&name) {
                return Err(refuse(why(role)));
            }
        }
        // By identity: another path, a hard link or a symlink to the same file.
        if let Ok(target) = std::fs::metadata(path) {
            for (suffix, role) in SIDECARS {
                if let Ok(md) = std::fs::metadata(with_suffix(db, suffix)) {
                    if md.dev() == target.dev() && md.ino() == target.ino() {
                        return Err(refuse(why(role)));
                    }
                }
            }
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(md) if md.file_type().is_symlink() => Err(refuse(
            "is a symbolic link; the output replaces the file by a rename, which would replace the link, not its target; give the target's own path".into(),
        )),
        Ok(md) if !md.file_type().is_file() => Err(refuse(format!(
            "is {}, not a regular file; the output replaces the file by a rename; give a regular file (or leave out the option and redirect stdout)",
            file_kind(md.file_type())
        ))),
        Ok(_) if !guard.force && is_sqlite_file(path) => Err(refuse(format!(
            "is an existing SQLite database; refusing to replace it ({})",
            if flag == "--metrics-file" || flag == "CORESCOPE_METRICS_FILE" {
                "choose another file"
            } else {
                "use --force if it really is to be replaced"
            }
        ))),
        _ => Ok(()),
    }
}

/// Which of the database's files the open descriptor `fd` is (stdout or
/// stderr redirected into it: `corescope ... >> x.db`), if any.
pub fn fd_is_database_file(fd: i32, db: &Path) -> Option<&'static str> {
    // SAFETY: fstat fills a zeroed stat struct for an fd we do not own; we only read it on success.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat only reads the descriptor; `st` is a valid out-pointer.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return None;
    }
    SIDECARS.iter().find_map(|(suffix, role)| {
        let md = std::fs::metadata(with_suffix(db, suffix)).ok()?;
        (md.dev() == st.st_dev as u64 && md.ino() == st.st_ino as u64).then_some(*role)
    })
}

/// Refuse a run whose stdout is the database or one of its files: the
/// report would be appended to it.
pub fn check_stdout(db: &Path) -> Result<(), Failure> {
    match fd_is_database_file(libc::STDOUT_FILENO, db) {
        Some(role) => Err(Failure::Usage(format!(
            "stdout is {role} {}; corescope never writes its report there (it would damage the database); redirect stdout elsewhere",
            db.display()
        ))),
        None => Ok(()),
    }
}

/// Refuse two output options that name the same file.
pub fn check_distinct(a: (&Path, &str), b: (&Path, &str)) -> Result<(), Failure> {
    let same_name = a.0 == b.0
        || matches!((resolved_name(a.0), resolved_name(b.0)), (Some(x), Some(y)) if x == y);
    let same_file = match (std::fs::metadata(a.0), std::fs::metadata(b.0)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    };
    if same_name || same_file {
        return Err(Failure::Usage(format!(
            "{} {} and {} {} are the same file; give two different files",
            a.1,
            a.0.display(),
            b.1,
            b.0.display()
        )));
    }
    Ok(())
}

/// Write `path` atomically after [`check_output`]: a new temporary file
/// beside it (unique name, created exclusively, mode 0644 before the umask),
/// fsync, checked again, renamed into place, directory fsynced. On any
/// failure the temporary file is removed and `path` is left as it was.
pub fn write_atomic(
    path: &Path,
    flag: &str,
    guard: Guard<'_>,
    f: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> anyhow::Result<()> {
    check_output(path, flag, guard)?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let fail = |e: io::Error| -> anyhow::Error {
        Failure::Fatal(format!("cannot write {}: {e}", path.display())).into()
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .permissions(std::fs::Permissions::from_mode(FILE_MODE))
        .tempfile_in(&dir)
        .map_err(fail)?;
    {
        let mut w = BufWriter::new(tmp.as_file_mut());
        f(&mut w).map_err(fail)?;
        w.flush().map_err(fail)?;
    }
    tmp.as_file().sync_all().map_err(fail)?;
    // The target may have changed while the output was produced.
    check_output(path, flag, guard)?;
    tmp.persist(path).map_err(|e| fail(e.error))?;
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Why a lock file could not be opened.
#[derive(Debug)]
pub enum LockOpenError {
    /// The path is a symlink, not a regular file, or has other hard links:
    /// refuse (someone may be redirecting the write).
    Unsafe(String),
    /// An ordinary I/O error (read-only directory, ...).
    Io(io::Error),
}

/// Open (creating it if missing, mode 0644) the lock file `path` without
/// following a symlink. With `write` false it is opened read-only and not
/// created. The result is a regular file with exactly one link; a
/// directory at `path` is an ordinary error (nothing can be written through
/// it), anything else that is not such a file is [`LockOpenError::Unsafe`].
pub fn open_lock(path: &Path, write: bool) -> Result<File, LockOpenError> {
    let mut o = OpenOptions::new();
    o.read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC);
    if write {
        o.write(true).create(true).truncate(false).mode(FILE_MODE);
    }
    let file = match o.open(path) {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(LockOpenError::Unsafe(format!(
                "lock file {} is a symbolic link; corescope never follows links for its lock files (the link could make it overwrite another file); remove it (rm {}) and run again",
                path.display(),
                path.display()
            )))
        }
        Err(e) => return Err(LockOpenError::Io(e)),
    };
    let md = file.metadata().map_err(LockOpenError::Io)?;
    if md.is_dir() {
        // Nothing can be written through a directory: "cannot create the
        // lock file here", like a read-only directory (the caller decides).
        return Err(LockOpenError::Io(io::Error::from_raw_os_error(
            libc::EISDIR,
        )));
    }
    if !md.file_type().is_file() {
        return Err(LockOpenError::Unsafe(format!(
            "lock file {} is {}; remove it and run again",
            path.display(),
            file_kind(md.file_type())
        )));
    }
    if md.nlink() > 1 {
        return Err(LockOpenError::Unsafe(format!(
            "lock file {} has {} hard links (another file would be written through it); remove it and run again",
            path.display(),
            md.nlink()
        )));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(db: &Path) -> Guard<'_> {
        Guard {
            db: Some(db),
            force: false,
        }
    }

    /// The guard of a run with `--force`.
    fn forced(db: &Path) -> Guard<'_> {
        Guard {
            force: true,
            ..guard(db)
        }
    }

    fn sqlite_file(p: &Path) {
        let c = rusqlite::Connection::open(p).unwrap();
        c.execute_batch("CREATE TABLE t(x)").unwrap();
    }

    #[test]
    fn database_and_sidecars_refused_by_name_and_identity() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        sqlite_file(&db);
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let p = with_suffix(&db, suffix);
            let e = check_output(&p, "--output", guard(&db)).unwrap_err();
            assert!(matches!(e, Failure::Usage(_)), "{e}");
            assert!(e.to_string().contains("never writes output there"), "{e}");
        }
        // Another spelling of the same path.
        let other = dir.path().join(".").join("x.db-wal");
        assert!(check_output(&other, "-o", guard(&db)).is_err());
        // A hard link and a symlink to the database.
        let hard = dir.path().join("hard.json");
        std::fs::hard_link(&db, &hard).unwrap();
        let e = check_output(&hard, "-o", guard(&db)).unwrap_err();
        assert!(e.to_string().contains("is the database"), "{e}");
        let soft = dir.path().join("soft.json");
        std::os::unix::fs::symlink(&db, &soft).unwrap();
        let e = check_output(&soft, "-o", guard(&db)).unwrap_err();
        assert!(e.to_string().contains("is the database"), "{e}");
        // Even with --force.
        let forced = forced(&db);
        assert!(check_output(&db, "-o", forced).is_err());
        // An ordinary new file is fine.
        assert!(check_output(&dir.path().join("g.json"), "-o", guard(&db)).is_ok());
    }

    #[test]
    fn other_sqlite_files_need_force_and_odd_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        let other = dir.path().join("other.db");
        sqlite_file(&other);
        let e = check_output(&other, "--nodes-csv", guard(&db)).unwrap_err();
        assert!(e.to_string().contains("existing SQLite database"), "{e}");
        let forced = forced(&db);
        assert!(check_output(&other, "--nodes-csv", forced).is_ok());
        let e = check_output(dir.path(), "-o", guard(&db)).unwrap_err();
        assert!(e.to_string().contains("not a file path") || e.to_string().contains("directory"));
        let link = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &link).unwrap();
        let e = check_output(&link, "-o", guard(&db)).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        let e = check_output(Path::new("/dev/null"), "-o", guard(&db)).unwrap_err();
        assert!(e.to_string().contains("character device"), "{e}");
    }

    #[test]
    fn write_atomic_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.txt");
        std::fs::write(&p, "old").unwrap();
        let g = Guard {
            db: None,
            force: false,
        };
        write_atomic(&p, "-o", g, |w| w.write_all(b"new")).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new");
        let e = write_atomic(&p, "-o", g, |_| Err(io::Error::other("boom"))).unwrap_err();
        assert!(e.to_string().contains("boom"), "{e}");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o644, 0, "{mode:o}");
    }

    #[test]
    fn lock_files_never_follow_links() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let link = dir.path().join("x.lock");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(matches!(
            open_lock(&link, true),
            Err(LockOpenError::Unsafe(m)) if m.contains("symbolic link")
        ));
        let dangling = dir.path().join("d.lock");
        std::os::unix::fs::symlink(dir.path().join("created"), &dangling).unwrap();
        assert!(matches!(
            open_lock(&dangling, true),
            Err(LockOpenError::Unsafe(_))
        ));
        assert!(!dir.path().join("created").exists());
        let hard = dir.path().join("h.lock");
        std::fs::hard_link(&victim, &hard).unwrap();
        assert!(matches!(
            open_lock(&hard, true),
            Err(LockOpenError::Unsafe(m)) if m.contains("hard links")
        ));
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        let sub = dir.path().join("dir.lock");
        std::fs::create_dir(&sub).unwrap();
        assert!(matches!(open_lock(&sub, true), Err(LockOpenError::Io(_))));
        assert!(matches!(open_lock(&sub, false), Err(LockOpenError::Io(_))));
        let ok = dir.path().join("ok.lock");

        assert!(open_lock(&ok, true).is_ok());
        let mode = std::fs::metadata(&ok).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o644, 0, "{mode:o}");
    }
}
