//! The metrics file on disk: the hidden lock file, the read-modify-write
//! under an exclusive flock, and the atomic replacement.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde_json::{Map, Value};

use super::{derive, parse, render, RunInfo, Sample};
use crate::store::outfile::{check_output, open_lock, write_atomic, Guard, LockOpenError};

fn sibling(path: &Path, prefix: &str, suffix: &str) -> anyhow::Result<PathBuf> {
    let name = path
        .file_name()
        .with_context(|| format!("metrics file {} has no file name", path.display()))?;
    let mut n = std::ffi::OsString::from(prefix);
    n.push(name);
    n.push(suffix);
    Ok(path.with_file_name(n))
}

/// Hidden lock file of the metrics file: `.<name>.lock` in the same directory.
pub fn lock_path(path: &Path) -> anyhow::Result<PathBuf> {
    sibling(path, ".", ".lock")
}

fn flock_exclusive(f: &File) -> std::io::Result<()> {
    loop {
        // SAFETY: flock on a file descriptor we own.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        if rc == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// After a run (called by `main`): write the metrics when `--metrics-file`
/// was given and the command supports it. A failure to write is logged as an
/// error and does not change the exit code (the age alerts on
/// `corescope_last_success_timestamp_seconds` catch a file that stops
/// updating).
pub fn after_run(
    path: Option<&Path>,
    db: Option<&Path>,
    command: &crate::cli::Command,
    exit_code: i32,
    json: Option<&Map<String, Value>>,
    duration: Duration,
) {
    let Some(path) = path.filter(|p| !p.as_os_str().is_empty()) else {
        return;
    };
    if !command.writes_metrics() {
        if std::env::var_os("CORESCOPE_METRICS_FILE").is_none() {
            log::warn!(
                "--metrics-file is ignored by {} (only write commands and check without --diff write metrics)",
                command.name()
            );
        }
        return;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let shown = db.map(crate::report::display_path).unwrap_or_default();
    let run = RunInfo {
        command: command.name(),
        db: &shown,
        is_write: command.is_write(),
        exit_code,
        json,
        duration,
        now,
    };
    let guard = Guard { db, force: false };
    if let Err(e) = write(path, guard, &run) {
        log::error!("metrics not written: {e:#}");
    }
}

/// Rewrite this run's series in `path`, keeping the series of other
/// commands and of other databases.
/// `path` must pass `outfile::check_output` (never the database, a symlink
/// or a device); the lock file is opened without following links.
pub fn write(path: &Path, guard: Guard<'_>, run: &RunInfo<'_>) -> anyhow::Result<()> {
    check_output(path, "--metrics-file", guard)?;
    let lock_file = lock_path(path)?;
    let lock = match open_lock(&lock_file, true) {
        Ok(f) => f,
        Err(LockOpenError::Unsafe(m)) => anyhow::bail!(m),
        Err(LockOpenError::Io(e)) => {
            return Err(e).with_context(|| format!("cannot create {}", lock_file.display()))
        }
    };
    flock_exclusive(&lock).with_context(|| format!("cannot lock {}", lock_file.display()))?;

    // Checked again under the lock; read without following a link.
    check_output(path, "--metrics-file", guard)?;
    let existing = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(mut f) => {
            let mut s = String::new();
            f.read_to_string(&mut s)
                .with_context(|| format!("cannot read {}", path.display()))?;
            s
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let (mine, mut all): (Vec<Sample>, Vec<Sample>) = parse(&existing)
        .into_iter()
        .partition(|s| s.belongs_to(run.command, run.db));
    all.extend(derive(run, &mine));
    let text = render(&all);

    write_atomic(path, "--metrics-file", guard, |w| {
        w.write_all(text.as_bytes())
    })?;
    log::info!("wrote metrics for {} to {}", run.command, path.display());
    drop(lock);
    Ok(())
}
