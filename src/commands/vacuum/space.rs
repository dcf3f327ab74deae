//! Free space for `vacuum --full`: the filesystem of the database, SQLite's
//! temporary directory, and the rule that decides whether there is room.

use std::path::{Path, PathBuf};

use crate::error::Failure;

/// Hidden test hook: pretend the filesystem has this many bytes free.
pub const FREE_BYTES_ENV: &str = "CORESCOPE_TEST_FREE_BYTES";

/// Free bytes for unprivileged users on the filesystem holding `dir`.
pub fn free_bytes(dir: &Path) -> anyhow::Result<u64> {
    if let Ok(v) = std::env::var(FREE_BYTES_ENV) {
        return v.trim().parse::<u64>().map_err(|_| {
            Failure::Usage(format!("{FREE_BYTES_ENV}={v} is not a byte count")).into()
        });
    }
    crate::store::precheck::dir_free_bytes(dir).map_err(|e| {
        Failure::Fatal(format!(
            "cannot read the free space of {}: {e}",
            dir.display()
        ))
        .into()
    })
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
pub fn temp_space(tmp: &Path, db_dir: &Path) -> anyhow::Result<(u64, bool)> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::maintenance::{auto_vacuum_name, conversion_note, truncate_wait_ms};
    use crate::store::wal_path;

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
