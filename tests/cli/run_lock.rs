//! The run lock of write commands on a database: a held lock gives exit 75 with the holder's pid,
//! `--wait` waits until it is released, killing the holder frees it at once,
//! and bad paths or dry runs leave no lock file behind.

use crate::harness::common;

use std::ffi::CString;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::*;

fn lock_file(db: &Path, cmd: &str) -> PathBuf {
    let mut s = db.as_os_str().to_os_string();
    s.push(format!(".corescope-{cmd}.lock"));
    PathBuf::from(s)
}

/// Hold the run lock from this test process, as another corescope would.
fn hold(path: &Path, pid: u32) -> File {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap();
    // SAFETY: flock on the descriptor of `f`, which is open for this call.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    assert_eq!(rc, 0, "test could not take {}", path.display());
    writeln!(f, "{pid}").unwrap();
    f
}

#[test]
fn held_lock_exits_75_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_db(dir.path(), "a.db");
    let lock = lock_file(&db, "migrate");
    let held = hold(&lock, 4242);
    let out = bin().args(["migrate", "--db"]).arg(&db).output().unwrap();
    assert_eq!(out.status.code(), Some(75));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "another corescope migrate holds {} (pid 4242)",
            lock.display()
        )),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(out.stdout.is_empty());

    let out = bin()
        .args(["migrate", "--json", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(75));
    let j = json_of(&out.stdout);
    assert_eq!(j["ok"], false);
    assert_eq!(j["exit_code"], 75);

    // Read-only commands and dry runs do not take the lock.
    bin()
        .args(["check", "-q", "--db"])
        .arg(&db)
        .assert()
        .code(0);
    bin()
        .args(["migrate", "--dry-run", "-q", "--db"])
        .arg(&db)
        .assert()
        .code(0);

    // Another command's lock does not block migrate (prune may overlap it).
    drop(held);
    let _prune = hold(&lock_file(&db, "prune"), 4343);
    bin()
        .args(["migrate", "-q", "--db"])
        .arg(&db)
        .assert()
        .code(0);
}

#[test]
fn wait_waits_until_the_holder_releases() {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_db(dir.path(), "a.db");
    let held = hold(&lock_file(&db, "migrate"), 4242);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_corescope"))
        .args(["migrate", "-v", "--wait", "--json", "--db"])
        .arg(&db)
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = err.read_line(&mut line).unwrap();
        assert!(n > 0, "corescope ended without waiting: {seen}");
        seen.push_str(&line);
        if line.contains("waiting for the run lock") {
            assert!(line.contains("pid 4242"), "{line}");
            break;
        }
    }
    // It is blocked on the lock now; release it.
    drop(held);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{seen}{rest}");
    assert!(rest.contains("took the run lock"), "{rest}");
    assert_eq!(json_of(&out.stdout)["ok"], true);
}

#[test]
fn wait_with_a_limit_gives_up_with_75() {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_db(dir.path(), "a.db");
    let _held = hold(&lock_file(&db, "migrate"), 4242);
    let out = bin()
        .args(["migrate", "--wait", "1", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(75));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("still holds"), "{err}");
    assert!(err.contains("(pid 4242) after waiting 1 s"), "{err}");
}

#[test]
fn killing_the_holder_frees_the_lock_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_db(dir.path(), "a.db");
    let lock = lock_file(&db, "migrate");
    let cpath = CString::new(lock.as_os_str().as_bytes()).unwrap();
    let mut fds = [0i32; 2];
    // SAFETY: pipe writes two descriptors into the two-element array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // A separate holder process: only async-signal-safe calls after fork.
    // SAFETY: the child only makes async-signal-safe calls and never returns
    // into the test harness (it exits or pauses until killed).
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // SAFETY: async-signal-safe calls on a NUL-terminated path that lives
        // until the child ends, and on the pipe's write end.
        unsafe {
            let fd = libc::open(cpath.as_ptr(), libc::O_RDWR | libc::O_CREAT, 0o644);
            if fd < 0 || libc::flock(fd, libc::LOCK_EX) != 0 {
                libc::_exit(1);
            }
            libc::write(fds[1], b"x".as_ptr().cast(), 1);
            loop {
                libc::pause();
            }
        }
    }
    // SAFETY: closes the parent's copy of the write end, owned by this test.
    unsafe { libc::close(fds[1]) };
    let mut b = [0u8; 1];
    assert_eq!(
        // SAFETY: reads at most one byte into the one-byte buffer.
        unsafe { libc::read(fds[0], b.as_mut_ptr().cast(), 1) },
        1,
        "holder did not take the lock"
    );
    bin()
        .args(["migrate", "-q", "--db"])
        .arg(&db)
        .assert()
        .code(75);
    // kill -9 the holder: no cleanup runs, the kernel releases the lock.
    // SAFETY: signals and reaps the child forked above, then closes the read
    // end this test owns.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        libc::close(fds[0]);
    }
    let out = bin().args(["migrate", "--db"]).arg(&db).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The new holder wrote its own pid.
    let content = std::fs::read_to_string(&lock).unwrap();
    assert!(content.trim().parse::<u32>().is_ok(), "{content:?}");
}

#[test]
fn two_runs_started_together_converge() {
    let dir = tempfile::tempdir().unwrap();
    let db = legacy_copy(dir.path());
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_corescope"))
            .args(["migrate", "--json", "--db"])
            .arg(&db)
            .env_remove("RUST_LOG")
            .env_remove("JOURNAL_STREAM")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let a = spawn();
    let b = spawn();
    let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
    let codes: Vec<i32> = outs.iter().map(|o| o.status.code().unwrap()).collect();
    // Either they did not overlap (both 0) or one found the lock held (75).
    assert!(codes.contains(&0), "{codes:?}");
    for (o, c) in outs.iter().zip(&codes) {
        assert!(
            *c == 0 || *c == 75,
            "exit {c}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        if *c == 75 {
            assert!(String::from_utf8_lossy(&o.stderr).contains("another corescope migrate holds"));
        }
    }
    // The result is the one of a single run: ready, nothing left to apply.
    let out = bin()
        .args(["migrate", "--json", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    let j = json_of(&out.stdout);
    assert_eq!(j["applied"].as_array().unwrap().len(), 0, "{j}");
    bin()
        .args(["check", "-q", "--db"])
        .arg(&db)
        .assert()
        .code(0);
}

#[test]
fn no_lock_file_for_a_bad_path_a_wrong_file_or_a_dry_run() {
    let dir = tempfile::tempdir().unwrap();
    // A mistyped path.
    bin()
        .args(["migrate", "-q", "--db"])
        .arg(dir.path().join("typo.db"))
        .assert()
        .code(1);
    // A SQLite file of another application.
    let other = dir.path().join("other.db");
    rusqlite::Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE songs (id INTEGER PRIMARY KEY);")
        .unwrap();
    bin()
        .args(["migrate", "-q", "--db"])
        .arg(&other)
        .assert()
        .code(1);
    // A dry run on a real database.
    let db = legacy_copy(dir.path());
    bin()
        .args(["migrate", "--dry-run", "-q", "--db"])
        .arg(&db)
        .assert()
        .code(0);
    let locks: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".lock"))
        .collect();
    assert!(locks.is_empty(), "{locks:?}");
}

/// True when this build has the subcommand (commands land on other branches).
fn has_command(name: &str) -> bool {
    bin()
        .args([name, "--help"])
        .output()
        .unwrap()
        .status
        .success()
}

/// The write commands with arguments that make them open the
/// database (documented flags only).
const WRITE_COMMANDS: &[(&str, &[&str])] = &[
    ("migrate", &[]),
    ("build-edges", &[]),
    ("backfill", &[]),
    ("prune", &["--now", "2026-03-20T00:00:00Z"]),
    ("vacuum", &[]),
];

#[test]
fn every_write_command_takes_its_own_run_lock() {
    let dir = tempfile::tempdir().unwrap();
    let db = legacy_copy(dir.path());
    bin()
        .args(["migrate", "-q", "--db"])
        .arg(&db)
        .assert()
        .code(0);
    for (cmd, extra) in WRITE_COMMANDS {
        if !has_command(cmd) {
            println!("SKIP {cmd}: not in this build yet");
            continue;
        }
        let lock = lock_file(&db, cmd);
        let held = hold(&lock, 4343);
        let out = bin()
            .arg(cmd)
            .args(*extra)
            .arg("--db")
            .arg(&db)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(75),
            "`corescope {cmd}` ran while its run lock was held: add \"{cmd}\" to WRITE_COMMANDS in src/cli.rs \
             (and open the database with ctx.open_options): {err}"
        );
        assert!(
            err.contains(&format!("another corescope {cmd} holds")) && err.contains("(pid 4343)"),
            "{err}"
        );
        drop(held);
    }
}

#[test]
fn two_build_edges_started_together_give_one_runs_table() {
    if !has_command("build-edges") {
        println!("SKIP: build-edges is not in this build yet");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    std::fs::create_dir(&a).unwrap();
    std::fs::create_dir(&b).unwrap();
    let (da, db_) = (legacy_copy(&a), legacy_copy(&b));
    for d in [&da, &db_] {
        bin()
            .args(["migrate", "-q", "--db"])
            .arg(d)
            .assert()
            .code(0);
    }
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_corescope"))
            .args(["build-edges", "-q", "--db"])
            .arg(&da)
            .env_remove("RUST_LOG")
            .env_remove("JOURNAL_STREAM")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (p1, p2) = (spawn(), spawn());
    let outs = [
        p1.wait_with_output().unwrap(),
        p2.wait_with_output().unwrap(),
    ];
    let codes: Vec<i32> = outs.iter().map(|o| o.status.code().unwrap()).collect();
    assert!(codes.contains(&0), "{codes:?}");
    for (o, c) in outs.iter().zip(&codes) {
        assert!(
            *c == 0 || *c == 75,
            "exit {c}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    bin()
        .args(["build-edges", "-q", "--db"])
        .arg(&db_)
        .assert()
        .code(0);
    let edges = |p: &Path| {
        let c = rusqlite::Connection::open(p).unwrap();
        let mut st = c
            .prepare("SELECT node_a, node_b, count, last_seen FROM neighbor_edges ORDER BY 1, 2")
            .unwrap();
        st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, Option<String>>(3)?,
            ))
        })
        .unwrap()
        .map(|r| r.unwrap())
        .collect::<Vec<_>>()
    };
    let (ea, eb) = (edges(&da), edges(&db_));
    assert!(!eb.is_empty());
    assert_eq!(ea, eb, "two overlapping runs differ from one run");
}
