//! Safety of every target a command writes (the database, output files,
//! lock and metrics files, and the config's shape): no command can destroy
//! what it was not asked to touch, and no input makes it panic.
//! Every case runs the real binary and asserts the exit code, the message,
//! and that the database and every existing target stay byte-identical
//! where nothing may change.

use crate::harness::common;
use crate::harness::support;

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::*;
use support::*;

/// Exactly one `: error: ` line on stderr, containing every needle; no panic.
fn error_line(stderr: &str, needles: &[&str]) {
    assert!(!stderr.contains("panicked"), "{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(": error: ") || l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    for n in needles {
        assert!(errors[0].contains(n), "says {n:?}: {stderr}");
    }
}

/// A migrated database with data (times over the 40 days before NOW) and its edges built.
fn data_db(dir: &Path, name: &str) -> PathBuf {
    let db = synthetic_current(dir, name, 300, 7);
    run_ok(&["build-edges", "-q"], &db, 0);
    db
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

// ---------------------------------------------------------------------------
// 1. Output files of read-only commands.

#[test]
fn graph_output_never_replaces_the_database_or_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let db = data_db(dir.path(), "x.db");
    std::fs::write(sidecar(&db, "-wal"), b"").unwrap(); // an (empty) WAL beside it
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::hard_link(&db, dir.path().join("hard.json")).unwrap();
    std::os::unix::fs::symlink(&db, dir.path().join("soft.json")).unwrap();
    let before = listing(dir.path());
    let d = dir.path().display().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        // (arguments, what the message says the target is)
        (
            vec![
                "--format".into(),
                "json".into(),
                "-o".into(),
                format!("{d}/x.db"),
            ],
            "is the database",
        ),
        (
            vec!["--nodes-csv".into(), format!("{d}/x.db")],
            "is the database",
        ),
        (
            vec![
                "--format".into(),
                "csv".into(),
                "-o".into(),
                format!("{d}/x.db-wal"),
            ],
            "write-ahead log (-wal)",
        ),
        // Names of sidecars that do not exist (yet) are refused too.
        (
            vec!["-o".into(), format!("{d}/x.db-shm")],
            "shared-memory file (-shm)",
        ),
        (
            vec!["-o".into(), format!("{d}/x.db-journal")],
            "rollback journal (-journal)",
        ),
        // Another spelling, a hard link and a symlink: compared by identity.
        (
            vec!["-o".into(), format!("{d}/sub/../x.db")],
            "is the database",
        ),
        (
            vec!["-o".into(), format!("{d}/hard.json")],
            "is the database",
        ),
        (
            vec!["--nodes-csv".into(), format!("{d}/soft.json")],
            "is the database",
        ),
        // --force never applies to the database itself.
        (
            vec!["--force".into(), "-o".into(), format!("{d}/x.db")],
            "is the database",
        ),
    ];
    for (args, says) in cases {
        let mut all = vec!["graph".to_string(), "dump".to_string()];
        all.extend(args.iter().cloned());
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let r = run(&all, &db);
        assert_eq!(r.code, Some(2), "{args:?}: {}", r.stderr);
        let target = args.last().unwrap();
        error_line(&r.stderr, &[target, says, "choose another file"]);
        assert_eq!(listing(dir.path()), before, "{args:?} changed a file");
    }
    // The same through --json: the error is also the JSON report.
    let r = run(
        &["--json", "graph", "dump", "-o", &format!("{d}/x.db")],
        &db,
    );
    assert_eq!(r.code, Some(2));
    assert_eq!(json_of(r.stdout.as_bytes())["exit_code"], 2);
    assert_eq!(listing(dir.path()), before);
}

#[test]
fn stdout_or_stderr_redirected_into_the_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = data_db(dir.path(), "x.db");
    let before = listing(dir.path());
    let append = || std::fs::OpenOptions::new().append(true).open(&db).unwrap();
    // `corescope graph dump >> x.db`, `check --json >> x.db`
    for args in [&["graph", "dump"][..], &["check", "--json"]] {
        let out = command(args, &db).stdout(append()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        error_line(
            &stderr,
            &["stdout is the database", "redirect stdout elsewhere"],
        );
        assert_eq!(listing(dir.path()), before, "{args:?}");
    }
    // `corescope check 2>> x.db`: not even the error line is written.
    let out = command(&["check"], &db).stderr(append()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert_eq!(listing(dir.path()), before);
}

#[test]
fn graph_output_other_sqlite_files_devices_and_links() {
    let dir = tempfile::tempdir().unwrap();
    let db = data_db(dir.path(), "x.db");
    let other = fresh_db(dir.path(), "other.db");
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "keep me\n").unwrap();
    std::os::unix::fs::symlink(&victim, dir.path().join("link.json")).unwrap();
    let before = listing(dir.path());
    let p = |n: &str| dir.path().join(n).display().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["-o".into(), p("other.db")],
            "is an existing SQLite database",
        ),
        (vec!["--nodes-csv".into(), p("other.db")], "use --force"),
        (vec!["-o".into(), p("link.json")], "is a symbolic link"),
        (
            vec!["-o".into(), "/dev/null".into()],
            "is a character device",
        ),
        (vec!["-o".into(), p("")], "directory"),
        (
            vec![
                "-o".into(),
                p("g.json"),
                "--nodes-csv".into(),
                p("./g.json"),
            ],
            "are the same file",
        ),
    ];
    for (args, says) in cases {
        let mut all = vec!["graph".to_string(), "dump".to_string()];
        all.extend(args.iter().cloned());
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let r = run(&all, &db);
        assert_eq!(r.code, Some(2), "{args:?}: {}", r.stderr);
        error_line(&r.stderr, &[says]);
        assert_eq!(listing(dir.path()), before, "{args:?} changed a file");
    }
    assert!(std::fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device_like());

    // With --force another database is replaced (atomically, mode ≤ 0644, no temp file left).
    let r = run(&["graph", "dump", "--force", "-o", &p("other.db")], &db);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let text = std::fs::read_to_string(&other).unwrap();
    assert!(
        text.starts_with('{'),
        "JSON written: {}",
        &text[..20.min(text.len())]
    );
    assert_eq!(mode(&other) & !0o644, 0, "{:o}", mode(&other));
    // A normal output: written, and nothing else appears in the directory.
    let r = run(
        &[
            "graph",
            "dump",
            "-o",
            &p("g.json"),
            "--nodes-csv",
            &p("n.csv"),
        ],
        &db,
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let names: Vec<String> = listing(dir.path()).into_iter().map(|e| e.0).collect();
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
    assert!(std::fs::read_to_string(p("n.csv"))
        .unwrap()
        .starts_with("id,name,role"));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me\n");
}

/// `FileType::is_char_device` through the Unix extension, named for the assert above.
trait CharDevice {
    fn is_char_device_like(&self) -> bool;
}
impl CharDevice for std::fs::FileType {
    fn is_char_device_like(&self) -> bool {
        use std::os::unix::fs::FileTypeExt;
        self.is_char_device()
    }
}

#[test]
fn metrics_file_may_not_be_the_database_or_a_link() {
    let dir = tempfile::tempdir().unwrap();
    let db = data_db(dir.path(), "x.db");
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "keep me\n").unwrap();
    std::os::unix::fs::symlink(&victim, dir.path().join("link.prom")).unwrap();
    fresh_db(dir.path(), "other.db");
    let before = listing(dir.path());
    for (cmd, target, says) in [
        (&["check"][..], "x.db", "is the database"),
        (&["check"][..], "x.db-wal", "write-ahead log"),
        (&["build-edges"][..], "x.db", "is the database"),
        (
            &["prune", "--now", NOW][..],
            "x.db-journal",
            "rollback journal",
        ),
        (&["check"][..], "link.prom", "is a symbolic link"),
        (
            &["check"][..],
            "other.db",
            "existing SQLite database; refusing to replace it (choose another file)",
        ),
    ] {
        let m = dir.path().join(target).display().to_string();
        let mut args = cmd.to_vec();
        args.extend(["--metrics-file", &m]);
        let r = run(&args, &db);
        assert_eq!(r.code, Some(2), "{args:?}: {}", r.stderr);
        error_line(&r.stderr, &["--metrics-file", &m, says]);
        // Refused before the command ran: no run lock, no change at all.
        assert_eq!(listing(dir.path()), before, "{args:?}");
    }
}

// ---------------------------------------------------------------------------
// 2. --now.

#[test]
fn now_far_from_the_clock_or_in_milliseconds_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let db = data_db(dir.path(), "x.db");
    let before = listing(dir.path());
    for (now, says) in [
        ("1779000000000", "milliseconds"),
        ("9223372036854775807", "out of range"),
        ("-1", "out of range"),
        (
            "2999-01-01T00:00:00Z",
            "more than a day ahead of the system clock",
        ),
        ("2019-06-01T00:00:00Z", "before 2020-01-01"),
    ] {
        for extra in [&["--packet-days", "30"][..], &["--dry-run"][..]] {
            let flag = format!("--now={now}");
            let mut args = vec!["prune", flag.as_str()];
            args.extend(extra);
            let r = run(&args, &db);
            assert_eq!(r.code, Some(2), "{args:?}: {}", r.stderr);
            error_line(
                &r.stderr,
                &["--now", now, says, "accepted forms", "epoch seconds"],
            );
            assert_eq!(listing(dir.path()), before, "{args:?}");
        }
        let r = run(&["graph", "stats", &format!("--now={now}")], &db);
        assert_eq!(r.code, Some(2), "graph --now {now}: {}", r.stderr);
        error_line(&r.stderr, &["--now", says]);
    }
    // The millisecond hint gives the seconds value.
    let r = run(&["prune", "--now", "1779000000000"], &db);
    assert!(
        r.stderr
            .contains("give seconds: 1779000000 (2026-05-17T06:40:00Z)"),
        "{}",
        r.stderr
    );
    // Bounds that are only caution can be confirmed; the range cannot.
    let r = run(
        &[
            "prune",
            "--dry-run",
            "--json",
            "--now",
            "2019-06-01T00:00:00Z",
            "--allow-any-now",
        ],
        &db,
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(json_of(r.stdout.as_bytes())["now"], "2019-06-01T00:00:00Z");
    let r = run(
        &[
            "prune",
            "--dry-run",
            "--now",
            "1779000000000",
            "--allow-any-now",
        ],
        &db,
    );
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    // Epoch seconds are a documented form.
    let secs = NOW_EPOCH.to_string();
    let r = run(&["prune", "--dry-run", "--json", "--now", &secs], &db);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(json_of(r.stdout.as_bytes())["now"], NOW);
    // --allow-any-now without --now is a usage error.
    let r = run(&["prune", "--dry-run", "--allow-any-now"], &db);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    // The dry runs above read the database (SQLite may add an empty -wal and
    // a -shm beside a WAL database); the database itself never changed.
    assert_eq!(listing(dir.path())[0], before[0]);
}

// ---------------------------------------------------------------------------
// 4. Lock files never follow links.

#[test]
fn run_lock_symlink_or_hard_link_is_refused_and_its_target_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let db = data_db(dir.path(), "x.db");
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "keep me\n").unwrap();
    let lock = dir.path().join("x.db.corescope-build-edges.lock");
    let _ = std::fs::remove_file(&lock);
    let created = dir.path().join("created-by-link");

    let link_kinds: [(&str, &dyn Fn()); 3] = [
        ("symbolic link", &|| {
            std::os::unix::fs::symlink(&victim, &lock).unwrap();
        }),
        ("symbolic link", &|| {
            std::os::unix::fs::symlink(&created, &lock).unwrap();
        }),
        ("hard links", &|| {
            std::fs::hard_link(&victim, &lock).unwrap();
        }),
    ];
    for (says, plant) in link_kinds {
        let before = without_run_locks(listing(dir.path()));
        let db_sha = sha256(&db);
        plant();
        let r = run(&["build-edges"], &db);
        assert_eq!(r.code, Some(1), "{says}: {}", r.stderr);
        error_line(&r.stderr, &[&lock.display().to_string(), says, "remove it"]);
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me\n");
        assert!(!created.exists(), "a dangling link's target was created");
        assert_eq!(sha256(&db), db_sha);
        std::fs::remove_file(&lock).unwrap();
        assert_eq!(without_run_locks(listing(dir.path())), before);
    }
    // A normal run creates the lock file with mode 0644 or tighter.
    run_ok(&["build-edges", "-q"], &db, 0);
    assert_eq!(mode(&lock) & !0o644, 0, "{:o}", mode(&lock));
}

#[test]
fn metrics_lock_symlink_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let db = data_db(dir.path(), "x.db");
    let prom = dir.path().join("m.prom");
    let created = dir.path().join("created-by-link");
    std::os::unix::fs::symlink(&created, dir.path().join(".m.prom.lock")).unwrap();
    let m = prom.display().to_string();
    // Metrics failures are logged and keep the command's exit code.
    let r = run(&["check", "--metrics-file", &m], &db);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stderr.contains("metrics not written") && r.stderr.contains("symbolic link"),
        "{}",
        r.stderr
    );
    assert!(!created.exists(), "the dangling link's target was created");
    assert!(!prom.exists());
    // Without the link: written, mode 0644 or tighter, no temp file left.
    std::fs::remove_file(dir.path().join(".m.prom.lock")).unwrap();
    let r = run(&["check", "--metrics-file", &m], &db);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(std::fs::read_to_string(&prom)
        .unwrap()
        .contains("corescope_"));
    assert_eq!(mode(&prom) & !0o644, 0, "{:o}", mode(&prom));
    let names: Vec<String> = listing(dir.path()).into_iter().map(|e| e.0).collect();
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
}

// ---------------------------------------------------------------------------
// 6. Numbers out of range, closed or full stdout.

#[test]
fn out_of_range_numbers_are_usage_errors_naming_the_range() {
    let dir = tempfile::tempdir().unwrap();
    let db = data_db(dir.path(), "x.db");
    let before = listing(dir.path());
    let commands: [&[&str]; 8] = [
        &["check"],
        &["migrate"],
        &["backfill"],
        &["build-edges"],
        &["prune", "--now", NOW],
        &["vacuum"],
        &["graph", "stats"],
        &["graph", "dump"],
    ];
    for cmd in commands {
        let mut args = cmd.to_vec();
        args.extend(["--busy-timeout", "2147483648"]);
        let r = run(&args, &db);
        assert_eq!(r.code, Some(2), "{args:?}: {}", r.stderr);
        error_line(&r.stderr, &["--busy-timeout", "0..=2147483647"]);
        assert_eq!(listing(dir.path()), before, "{args:?}");
    }
    for cmd in [
        &["build-edges"][..],
        &["backfill"],
        &["prune", "--now", NOW],
    ] {
        for v in ["1e19", "1e300", "inf", "nan", "-1", "31536001"] {
            let flag = format!("--max-seconds={v}");
            let mut args = cmd.to_vec();
            args.push(&flag);
            let r = run(&args, &db);
            assert_eq!(r.code, Some(2), "{args:?}: {}", r.stderr);
            error_line(&r.stderr, &["--max-seconds", "allowed: 0 to 31536000"]);
            assert_eq!(listing(dir.path()), before, "{args:?}");
        }
    }
    // The largest allowed values run normally.
    run_ok(&["check", "-q", "--busy-timeout", "2147483647"], &db, 0);
    // synth values that used to overflow: refused, no file created.
    for (flag, v, says) in [
        ("--obs-per-tx", "1e300", "allowed: 0 to 1000"),
        ("--metrics-interval", "9223372036854775807", "60..=86400"),
    ] {
        let out = dir.path().join("s.db");
        let r = run(
            &["synth", "--nodes", "5", "--transmissions", "5", flag, v],
            &out,
        );
        assert_eq!(r.code, Some(2), "{flag} {v}: {}", r.stderr);
        error_line(&r.stderr, &[flag, says]);
        assert!(!out.exists());
    }
}

/// A pipe whose read end is already closed: every write fails with EPIPE.
fn closed_pipe() -> Stdio {
    let mut fds = [0i32; 2];
    // SAFETY: pipe fills two descriptors we then own; the read end is closed at once.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: closes the read end, which nothing else uses.
    unsafe { libc::close(fds[0]) };
    // SAFETY: the write end is open and owned by nothing else; the Stdio takes it.
    Stdio::from(unsafe { OwnedFd::from_raw_fd(fds[1]) })
}

fn edge_state(db: &Path) -> Vec<Vec<rusqlite::types::Value>> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut rows = dump(&c, "neighbor_edges", None);
    let cols = ["key".to_string(), "value".to_string()];
    // Without the `jobs.*` run times: two runs a second apart differ there.
    rows.extend(
        dump(&c, "_corescope_state", Some(cols.as_slice()))
            .into_iter()
            .filter(
                |r| !matches!(&r[0], rusqlite::types::Value::Text(k) if k.starts_with("jobs.")),
            ),
    );
    rows
}

#[test]
fn closed_stdout_keeps_the_result_and_full_stdout_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = synthetic_current(dir.path(), "src.db", 300, 7);
    // The reference: build-edges printed normally.
    let want = dir.path().join("want.db");
    copy_db(&fresh, &want);
    run_ok(&["build-edges", "-q"], &want, 0);
    let want = edge_state(&want);
    assert!(!want.is_empty());

    // Closed pipe (`... --json | head -c 0`): quiet, exit code kept, work committed.
    for args in [&["build-edges", "--json"][..], &["build-edges"][..]] {
        let db = dir.path().join("pipe.db");
        copy_db(&fresh, &db);
        let out = command(args, &db).stdout(closed_pipe()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("error"),
            "{stderr}"
        );
        assert_eq!(edge_state(&db), want);
        std::fs::remove_file(&db).unwrap();
    }
    let out = command(&["check", "--json"], &fresh)
        .stdout(closed_pipe())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Full disk (`> /dev/full`): exit 1 with one line; the work is committed.
    let db = dir.path().join("full.db");
    copy_db(&fresh, &db);
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = command(&["build-edges", "--json"], &db)
        .stdout(full)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    error_line(
        &stderr,
        &[
            "cannot write the report to stdout",
            "No space left on device",
        ],
    );
    assert_eq!(edge_state(&db), want);

    // A full stderr does not turn an error into a panic either.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let missing = dir.path().join("missing.db");
    let out = command(&["check"], &missing).stderr(full).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(!missing.exists());
}

// ---------------------------------------------------------------------------
// 8 (config part). A config file that is not a JSON object.

#[test]
fn config_that_is_not_an_object_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = data_db(dir.path(), "x.db");
    for (text, says) in [
        ("[]", "the top level must be a JSON object"),
        ("null", "not null"),
        ("42", "not a number"),
        (
            r#"{"retention": []}"#,
            "\"retention\" must be a JSON object",
        ),
        (r#"{"db": [1024]}"#, "\"db\" must be a JSON object"),
    ] {
        let cfg = dir.path().join("config.json");
        std::fs::write(&cfg, text).unwrap();
        let before = listing(dir.path());
        let c = cfg.display().to_string();
        for cmd in [&["check"][..], &["prune", "--now", NOW]] {
            let mut args = vec!["--config", &c];
            args.extend(cmd);
            let r = run(&args, &db);
            assert_eq!(r.code, Some(1), "{text} {cmd:?}: {}", r.stderr);
            error_line(&r.stderr, &["invalid config file", &c, says]);
            assert_eq!(listing(dir.path()), before);
        }
    }
}

#[test]
fn output_and_metrics_files_that_are_fifos_are_refused_unopened() {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_db(dir.path(), "x.db");
    let fifo = dir.path().join("pipe.json");
    let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let before = std::fs::read(&db).unwrap();
    let f = fifo.display().to_string();
    for args in [
        vec!["graph", "dump", "-o", f.as_str()],
        vec!["check", "--metrics-file", f.as_str()],
    ] {
        let r = run(&args, &db);
        assert_eq!(r.code, Some(2), "{args:?}: {}", r.stderr);
        error_line(
            &r.stderr,
            &[&f, "is a FIFO (named pipe), not a regular file"],
        );
    }
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(std::fs::read(&db).unwrap(), before);
}
