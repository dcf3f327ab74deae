//! The run lock: one write command of a kind at a time per database.
//!
//! Every write command takes an exclusive `flock(2)` on
//! `<db>.corescope-<command>.lock` beside the database, so that `prune` and
//! `build-edges` may overlap but two `build-edges` may not. The application
//! decides which commands lock (the command line's list of write commands)
//! and passes a [`Spec`] (command name, `--wait`) in the open options; the
//! store knows no command-line type. `WriteDb::open` takes the lock right
//! after it has checked that the file is a CoreScope database and before anything is written (so a
//! mistyped path or a wrong file leaves no lock file behind, and a dry run,
//! which never opens the database for writing, takes no lock). Once taken,
//! the lock is held until the process exits (through the metrics write);
//! opening the database again in the same run reuses it. The holder writes its pid into the file (for the
//! "held by" message). The kernel releases the lock when the holder exits or
//! dies, so there is never a stale lock to clean up; the file itself stays
//! (deleting a lock file races with the next run and would allow two holders).
//!
//! Correctness never depends on this lock (the SQLite transactions guarantee
//! it); it only avoids wasted work. So when the lock file cannot be created
//! (read-only directory, a filesystem without flock) the command logs a
//! warning and runs without it.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::Failure;

/// How often a bounded `--wait SECONDS` polls the lock.
const POLL: Duration = Duration::from_millis(100);

/// A held run lock; released when dropped or when the process exits.
#[derive(Debug)]
pub struct RunLock {
    // Held only for its file descriptor: closing it releases the flock.
    _file: File,
    path: PathBuf,
}

impl RunLock {
    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The run locks this process holds (until it exits).
static HELD: Mutex<Vec<RunLock>> = Mutex::new(Vec::new());

/// Which run lock a write command takes, carried in `Ctx` to `WriteDb::open`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub command: &'static str,
    pub wait: Wait,
}

impl Spec {
    /// The lock a command takes: write commands only. `name` is the
    /// subcommand's name (it names the lock file), `writes` whether it
    /// writes the database, `wait` the `--wait` flag as parsed.
    pub fn for_command(
        name: &'static str,
        writes: bool,
        wait: Option<Option<u64>>,
    ) -> Option<Spec> {
        writes.then(|| Spec {
            command: name,
            wait: Wait::from_flag(wait),
        })
    }
}

/// Take the run lock of `spec` on `db` for the rest of the process (called by
/// `WriteDb::open`); a second call for the same lock is a no-op.
pub fn hold(db: &Path, spec: &Spec) -> anyhow::Result<()> {
    let path = lock_path(db, spec.command);
    let mut held = HELD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if held.iter().any(|l| l.path == path) {
        return Ok(());
    }
    if let Some(lock) = acquire(db, spec.command, spec.wait)? {
        held.push(lock);
    }
    Ok(())
}

/// What `--wait` asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// No `--wait`: a held lock means exit 75 at once.
    No,
    /// `--wait` without a value: block until the lock is free.
    Forever,
    /// `--wait SECONDS`: poll up to this long, then exit 75.
    Up(Duration),
}

impl Wait {
    pub fn from_flag(flag: Option<Option<u64>>) -> Wait {
        match flag {
            None => Wait::No,
            Some(None) => Wait::Forever,
            Some(Some(s)) => Wait::Up(Duration::from_secs(s)),
        }
    }
}

/// `<db>.corescope-<command>.lock`, beside the database.
pub fn lock_path(db: &Path, command: &str) -> PathBuf {
    let mut s = db.as_os_str().to_os_string();
    s.push(format!(".corescope-{command}.lock"));
    PathBuf::from(s)
}

enum Try {
    Got,
    Held,
}

fn try_flock(file: &File, block: bool) -> io::Result<Try> {
    let op = if block {
        libc::LOCK_EX
    } else {
        libc::LOCK_EX | libc::LOCK_NB
    };
    loop {
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
        if rc == 0 {
            return Ok(Try::Got);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::EWOULDBLOCK) => return Ok(Try::Held),
            _ => return Err(err),
        }
    }
}

/// The pid the current holder wrote into the lock file, if readable.
fn holder(path: &Path) -> String {
    let read = super::outfile::open_lock(path, false)
        .map_err(|_| ())
        .and_then(|mut f| {
            let mut s = String::new();
            io::Read::read_to_string(&mut f, &mut s).map_err(|_| ())?;
            Ok(s)
        });
    match read {
        Ok(s) => match s.trim().parse::<u32>() {
            Ok(pid) => format!("pid {pid}"),
            Err(_) => "pid unknown".to_string(),
        },
        Err(()) => "pid unknown".to_string(),
    }
}

fn busy(command: &str, path: &Path, waited: Option<Duration>) -> anyhow::Error {
    let who = holder(path);
    let msg = match waited {
        None => format!(
            "another corescope {command} holds {} ({who}); try again next run, or use --wait",
            path.display()
        ),
        Some(d) => format!(
            "another corescope {command} still holds {} ({who}) after waiting {} s",
            path.display(),
            d.as_secs()
        ),
    };
    Failure::Busy(msg).into()
}

/// Open the lock file: read-write (created if missing), else read-only if it
/// already exists (flock works on any descriptor). Never through a symlink
/// and only a regular file with one link (`outfile::open_lock`): anything
/// else is refused (exit 1), since the pid write could land in another file.
/// `Ok(None)`: cannot lock here (logged), run without the lock.
fn open_lock_file(path: &Path) -> anyhow::Result<Option<(File, bool)>> {
    use super::outfile::{open_lock, LockOpenError};
    match open_lock(path, true) {
        Ok(f) => Ok(Some((f, true))),
        Err(LockOpenError::Unsafe(m)) => Err(Failure::Fatal(m).into()),
        Err(LockOpenError::Io(e)) => match open_lock(path, false) {
            Ok(f) => {
                log::debug!(
                    "lock file {} is not writable ({e}); locking it read-only",
                    path.display()
                );
                Ok(Some((f, false)))
            }
            Err(LockOpenError::Unsafe(m)) => Err(Failure::Fatal(m).into()),
            Err(LockOpenError::Io(_)) => {
                log::warn!(
                    "cannot create the run lock {} ({e}); running without the run lock (the database stays consistent, overlapping runs only waste work)",
                    path.display()
                );
                Ok(None)
            }
        },
    }
}

/// Take the run lock of `command` on `db`. `Ok(None)`: running without a lock
/// (the database does not exist yet, or the lock file cannot be made; logged).
/// `Err(Failure::Busy)`: another run holds it (and `--wait` did not help).
pub fn acquire(db: &Path, command: &str, wait: Wait) -> anyhow::Result<Option<RunLock>> {
    if !db.exists() {
        // The command will report the missing database itself; do not leave a
        // lock file behind for a mistyped path.
        log::debug!("{} does not exist: no run lock taken", db.display());
        return Ok(None);
    }
    let path = lock_path(db, command);
    let Some((file, writable)) = open_lock_file(&path)? else {
        return Ok(None);
    };
    let started = Instant::now();
    let unusable = |e: io::Error| {
        log::warn!(
            "cannot lock {} ({e}); running without the run lock",
            path.display()
        );
    };
    match try_flock(&file, false) {
        Ok(Try::Got) => {}
        Ok(Try::Held) => match wait {
            Wait::No => return Err(busy(command, &path, None)),
            Wait::Forever => {
                log::info!(
                    "waiting for the run lock {} ({}) with no time limit",
                    path.display(),
                    holder(&path)
                );
                match try_flock(&file, true) {
                    Ok(_) => {}
                    Err(e) => {
                        unusable(e);
                        return Ok(None);
                    }
                }
            }
            Wait::Up(limit) => {
                log::info!(
                    "waiting for the run lock {} ({}) up to {} s",
                    path.display(),
                    holder(&path),
                    limit.as_secs()
                );
                loop {
                    if started.elapsed() >= limit {
                        return Err(busy(command, &path, Some(limit)));
                    }
                    std::thread::sleep(POLL.min(limit.saturating_sub(started.elapsed())));
                    match try_flock(&file, false) {
                        Ok(Try::Got) => break,
                        Ok(Try::Held) => {}
                        Err(e) => {
                            unusable(e);
                            return Ok(None);
                        }
                    }
                }
            }
        },
        Err(e) => {
            unusable(e);
            return Ok(None);
        }
    }
    if writable {
        // Overwrite in place (never truncate first): a reader sees an old or
        // the new pid, not an empty file.
        let pid = format!("{}\n", std::process::id());
        let written = file
            .write_all_at(pid.as_bytes(), 0)
            .and_then(|()| file.set_len(pid.len() as u64));
        if let Err(e) = written {
            log::debug!("cannot write the pid into {}: {e}", path.display());
        }
    }
    let waited = started.elapsed();
    if wait != Wait::No && waited > POLL {
        log::info!(
            "took the run lock {} after waiting {:.1} s",
            path.display(),
            waited.as_secs_f64()
        );
    } else {
        log::info!("took the run lock {}", path.display());
    }
    Ok(Some(RunLock { _file: file, path }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_path_is_beside_the_database() {
        assert_eq!(
            lock_path(Path::new("/var/lib/cs/meshcore.db"), "build-edges"),
            PathBuf::from("/var/lib/cs/meshcore.db.corescope-build-edges.lock")
        );
        assert_eq!(
            lock_path(Path::new("x.db"), "prune"),
            PathBuf::from("x.db.corescope-prune.lock")
        );
    }

    /// A database file (any content) in a fresh directory.
    fn some_db() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        std::fs::write(&db, b"x").unwrap();
        (dir, db)
    }

    #[test]
    fn wait_flag() {
        assert_eq!(Wait::from_flag(None), Wait::No);
        assert_eq!(Wait::from_flag(Some(None)), Wait::Forever);
        assert_eq!(
            Wait::from_flag(Some(Some(3))),
            Wait::Up(Duration::from_secs(3))
        );
    }

    #[test]
    fn second_acquire_is_busy_and_release_frees() {
        let (_dir, db) = some_db();
        let first = acquire(&db, "prune", Wait::No).unwrap().unwrap();
        let content = std::fs::read_to_string(first.path()).unwrap();
        assert_eq!(content.trim(), std::process::id().to_string());
        let err = acquire(&db, "prune", Wait::No).unwrap_err();
        assert_eq!(crate::error::exit_code(&err), 75);
        let msg = err.to_string();
        assert!(msg.contains("another corescope prune holds"), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        // Another command's lock is independent.
        let other = acquire(&db, "build-edges", Wait::No).unwrap();
        assert!(other.is_some());
        drop(first);
        assert!(acquire(&db, "prune", Wait::No).unwrap().is_some());
    }

    #[test]
    fn missing_database_takes_no_lock_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("typo.db");
        assert!(acquire(&db, "prune", Wait::No).unwrap().is_none());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn bounded_wait_times_out_busy() {
        let (_dir, db) = some_db();
        let _held = acquire(&db, "vacuum", Wait::No).unwrap().unwrap();
        let err = acquire(&db, "vacuum", Wait::Up(Duration::ZERO)).unwrap_err();
        assert_eq!(crate::error::exit_code(&err), 75);
        assert!(err.to_string().contains("after waiting 0 s"), "{err}");
    }

    #[test]
    fn unwritable_directory_runs_without_the_lock() {
        // procfs: the file exists, nothing can be created beside it (even as root).
        let db = Path::new("/proc/version");
        if !db.exists() {
            println!("SKIP: no /proc/version");
            return;
        }
        assert!(acquire(db, "prune", Wait::No).unwrap().is_none());
    }

    #[test]
    fn hold_is_reentrant_within_the_process() {
        let (_dir, db) = some_db();
        let spec = Spec {
            command: "backfill",
            wait: Wait::No,
        };
        hold(&db, &spec).unwrap();
        // A second open of the database in the same run reuses the lock...
        hold(&db, &spec).unwrap();
        // ...while another holder (a new open file description) is refused.
        let err = acquire(&db, "backfill", Wait::No).unwrap_err();
        assert_eq!(crate::error::exit_code(&err), 75);
    }
}
