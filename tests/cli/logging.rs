//! Logging on stderr: under systemd (JOURNAL_STREAM names stderr) lines carry
//! sd-daemon priority prefixes and no timestamps; otherwise env_logger's
//! format, without colour when stderr is not a terminal.

use crate::harness::common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::*;

/// Run corescope with stderr redirected to a file; `journal`: set
/// JOURNAL_STREAM to that file's device:inode (as systemd does).
fn stderr_of(args: &[&str], db: &Path, journal: bool, dir: &Path) -> (i32, String) {
    let log = dir.join("stderr.log");
    let f = std::fs::File::create(&log).unwrap();
    let md = f.metadata().unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_corescope"));
    cmd.args(args)
        .arg("--db")
        .arg(db)
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .env_remove("CORESCOPE_METRICS_FILE")
        .stdout(std::process::Stdio::null())
        .stderr(f);
    if journal {
        cmd.env("JOURNAL_STREAM", format!("{}:{}", md.dev(), md.ino()));
    } else {
        cmd.env_remove("JOURNAL_STREAM");
    }
    let status = cmd.status().unwrap();
    (
        status.code().unwrap(),
        std::fs::read_to_string(&log).unwrap(),
    )
}

fn has_timestamp(line: &str) -> bool {
    // env_logger: "[2026-11-27T10:00:00Z INFO  corescope] ..."
    line.starts_with('[') && contains_timestamp(line)
}

#[test]
fn journal_stream_gives_priority_prefixes_without_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    // The legacy database: migrate has steps to log (and debug lines).
    let db = legacy_copy(dir.path());
    let (code, err) = stderr_of(&["migrate", "-vv"], &db, true, dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(!err.is_empty());
    for line in err.lines() {
        assert!(
            line.starts_with("<6>") || line.starts_with("<7>") || line.starts_with("<4>"),
            "no priority prefix: {line}"
        );
        assert!(!line.contains("\x1b["), "colour under journald: {line}");
        assert!(
            !contains_timestamp(line),
            "timestamp under journald: {line}"
        );
    }
    // -v logs what was opened: path, mode, journal mode.
    assert!(
        err.lines().any(|l| l.starts_with("<6>opened ")
            && l.contains(&db.display().to_string())
            && l.contains("read-write")
            && l.contains("journal_mode=")),
        "{err}"
    );
    // ... and each step it takes.
    assert!(err.lines().any(|l| l.starts_with("<6>applied ")), "{err}");
    assert!(
        err.lines().any(|l| l.starts_with("<7>")),
        "debug lines: {err}"
    );

    // A failure: the error line gets <3>.
    let bad = dir.path().join("bad.db");
    std::fs::write(&bad, "x".repeat(200)).unwrap();
    let (code, err) = stderr_of(&["check"], &bad, true, dir.path());
    assert_eq!(code, 1);
    assert!(err.starts_with("<3>corescope check: error: "), "{err}");

    // Read-only open is logged too.
    let fresh = fresh_db(dir.path(), "fresh.db");
    let (code, err) = stderr_of(&["check", "-v"], &fresh, true, dir.path());
    assert_eq!(code, 0);
    assert!(
        err.lines()
            .any(|l| l.starts_with("<6>opened ") && l.contains("read-only (journal_mode=wal)")),
        "{err}"
    );
}

/// Any `YYYY-MM-DDTHH:MM:SS` in the line.
fn contains_timestamp(line: &str) -> bool {
    let b = line.as_bytes();
    let pat = b"dddd-dd-ddTdd:dd:dd";
    b.windows(pat.len()).any(|w| {
        w.iter().zip(pat).all(|(c, p)| match p {
            b'd' => c.is_ascii_digit(),
            o => c == o,
        })
    })
}

#[test]
fn without_journal_env_logger_format_and_no_colour_off_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_db(dir.path(), "a.db");
    let (code, err) = stderr_of(&["migrate", "-v"], &db, false, dir.path());
    assert_eq!(code, 0);
    assert!(!err.is_empty());
    for line in err.lines() {
        assert!(has_timestamp(line), "env_logger format expected: {line}");
        assert!(!line.starts_with('<'), "{line}");
        assert!(!line.contains("\x1b["), "colour off a terminal: {line}");
    }
    // A JOURNAL_STREAM that names another file is ignored.
    let other = dir.path().join("other");
    std::fs::write(&other, "").unwrap();
    let md = std::fs::metadata(&other).unwrap();
    let log = dir.path().join("stderr2.log");
    let f = std::fs::File::create(&log).unwrap();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_corescope"))
        .args(["check", "-v", "--db"])
        .arg(&db)
        .env_remove("RUST_LOG")
        .env("JOURNAL_STREAM", format!("{}:{}", md.dev(), md.ino()))
        .stdout(std::process::Stdio::null())
        .stderr(f)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(err.lines().all(has_timestamp), "{err}");
}

#[test]
fn quiet_logs_nothing_on_success() {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_db(dir.path(), "a.db");
    let (code, err) = stderr_of(&["migrate", "-q"], &db, true, dir.path());
    assert_eq!(code, 0);
    assert_eq!(err, "");
}
