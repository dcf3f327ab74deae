//! The read-only guarantee of `check` (and the dry runs), on a
//! live WAL database and on read-only files/directories, as root and as an
//! unprivileged user. What SQLite itself does with `-shm`/`-wal` is asserted
//! exactly (and documented in RELIABILITY.md).

use crate::harness::common;
use crate::harness::support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use rusqlite::Connection;
use support::*;

const NOBODY: u32 = 65534;

/// The read-only command lines (all must leave the files alone).
fn read_only_commands() -> Vec<Vec<&'static str>> {
    vec![
        vec!["check"],
        vec!["check", "--json", "--deep"],
        vec!["check", "--integrity", "--json"],
        vec!["migrate", "--dry-run"],
        vec!["prune", "--dry-run", "--now", NOW, "--packet-days", "20"],
        vec!["backfill", "--dry-run"],
        vec!["graph", "stats", "--now", NOW],
        vec!["graph", "dump"],
        vec!["graph", "dump", "--format", "dot"],
    ]
}

/// Run as uid 65534 (via setpriv when root); None when that is impossible.
fn as_nobody(args: &[&str], db: &Path) -> Option<(i32, String)> {
    let bin = assert_cmd::cargo::cargo_bin("corescope");
    // SAFETY: geteuid has no preconditions.
    let mut c = if unsafe { libc::geteuid() } != 0 {
        Command::new(bin)
    } else {
        let ok = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "true"])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            println!("SKIPPED: root without a working setpriv; cannot drop privileges");
            return None;
        }
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(bin);
        c
    };
    let out = c
        .args(args)
        .arg("--db")
        .arg(db)
        .env_remove("CORESCOPE_DB")
        .env_remove("CORESCOPE_CONFIG")
        .output()
        .unwrap();
    Some((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// tempdir/data, enterable by everyone.
fn data_dir() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    chmod(d.path(), 0o755);
    let sub = d.path().join("data");
    std::fs::create_dir(&sub).unwrap();
    chmod(&sub, 0o755);
    (d, sub)
}

/// A live writer connection: one committed ADVERT still in the -wal (no
/// checkpoint), and an open write transaction with an uncommitted one.
fn live_writer(db: &Path) -> Connection {
    let w = Connection::open(db).unwrap();
    w.execute_batch(
        "PRAGMA wal_autocheckpoint = 0;
         INSERT INTO transmissions (raw_hex, hash, first_seen, payload_type) VALUES ('1140', 'aaaa', '2026-05-17T18:12:01Z', 4);
         BEGIN IMMEDIATE;
         INSERT INTO transmissions (raw_hex, hash, first_seen, payload_type) VALUES ('1140', 'bbbb', '2026-05-17T18:12:02Z', 4);",
    )
    .unwrap();
    w
}

fn shm_bytes_ignored(l: &[(String, u64, String)]) -> Vec<(String, u64, String)> {
    l.iter()
        .map(|(n, s, h)| {
            if n.ends_with("-shm") {
                (n.clone(), *s, String::new())
            } else {
                (n.clone(), *s, h.clone())
            }
        })
        .collect()
}

#[test]
fn live_wal_database_every_file_byte_identical_as_root_and_as_nobody() {
    let (_d, sub) = data_dir();
    let db = fresh_db(&sub, "live.db");
    // The run lock of migrate --create stays beside it; not part of the test.
    for e in std::fs::read_dir(&sub).unwrap() {
        let p = e.unwrap().path();
        if p.to_string_lossy().ends_with(".lock") {
            std::fs::remove_file(p).unwrap();
        }
    }
    let writer = live_writer(&db);
    let before = listing(&sub);
    let names: Vec<&str> = before.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(names, ["live.db", "live.db-shm", "live.db-wal"]);
    for args in read_only_commands() {
        let r = run(&args, &db);
        assert_eq!(r.code, Some(0), "{args:?}: {}", r.stderr);
        if args.contains(&"--deep") && args[0] == "check" {
            // The committed ADVERT is seen, the uncommitted one is not.
            assert_eq!(
                json_of(r.stdout.as_bytes())["pending_backfills"]["from-pubkey"],
                1
            );
        }
        // As a user who may write the -shm (root here, or the ingestor's
        // user): the database and -wal are byte-identical; the -shm is
        // SQLite's shared lock memory, where every reader records its read
        // mark, so its bytes may change (never its size).
        assert_eq!(
            shm_bytes_ignored(&listing(&sub)),
            shm_bytes_ignored(&before),
            "root: {args:?} changed a file"
        );
        let before_nobody = listing(&sub);
        if let Some((code, err)) = as_nobody(&args, &db) {
            // Without write access to -shm, SQLite maps it read-only: every
            // file, the -shm included, stays byte-identical.
            assert_eq!(code, 0, "nobody: {args:?}: {err}");
            assert_eq!(
                listing(&sub),
                before_nobody,
                "nobody: {args:?} changed a file"
            );
        }
    }
    writer.execute_batch("ROLLBACK").unwrap();
}

#[test]
fn rollback_journal_database_0444_in_a_0555_directory_as_nobody() {
    let (_d, sub) = data_dir();
    let db = legacy_copy(&sub);
    run_ok(&["migrate", "-q"], &db, 0);
    for e in std::fs::read_dir(&sub).unwrap() {
        let p = e.unwrap().path();
        if p.to_string_lossy().ends_with(".lock") {
            std::fs::remove_file(p).unwrap();
        }
    }
    chmod(&db, 0o444);
    chmod(&sub, 0o555);
    let before = listing(&sub);
    for args in read_only_commands() {
        let Some((code, err)) = as_nobody(&args, &db) else {
            break;
        };
        assert_eq!(code, 0, "{args:?}: {err}");
        assert_eq!(listing(&sub), before, "{args:?}");
        let r = run(&args, &db);
        assert_eq!(r.code, Some(0), "root {args:?}: {}", r.stderr);
        assert_eq!(listing(&sub), before, "root {args:?}");
    }
    chmod(&sub, 0o755);
}

/// A WAL database whose writer is stopped (no -wal, no -shm), 0444 in a 0555
/// directory. SQLite cannot read a WAL database without a -shm:
/// - as a user who cannot create files there, the open fails; corescope says
///   why and what to do, and nothing is created;
/// - as root (directory permissions do not apply), SQLite creates an empty
///   `-wal` and a 32 KiB `-shm`, with the database file's mode and owner
///   (SQLite fchown()s them to the database owner when running as root), and
///   leaves them; the database file itself stays byte-identical.
#[test]
fn stopped_wal_database_in_an_unwritable_directory() {
    let (_d, sub) = data_dir();
    let db = fresh_db(&sub, "w.db");
    for e in std::fs::read_dir(&sub).unwrap() {
        let p = e.unwrap().path();
        if p.to_string_lossy().ends_with(".lock") {
            std::fs::remove_file(p).unwrap();
        }
    }
    assert!(!sidecar(&db, "-wal").exists() && !sidecar(&db, "-shm").exists());
    std::os::unix::fs::chown(&db, Some(NOBODY), Some(NOBODY)).ok();
    chmod(&db, 0o444);
    chmod(&sub, 0o555);
    let before = listing(&sub);
    let db_sha = sha256(&db);
    if let Some((code, err)) = as_nobody(&["check"], &db) {
        assert_eq!(code, 1, "{err}");
        let line = err.lines().find(|l| l.contains(": error: ")).unwrap();
        assert!(line.contains(&db.display().to_string()), "{line}");
        assert!(line.contains("-shm") && line.contains("ingestor"), "{line}");
        assert!(line.contains("cannot read"), "{line}");
        assert_eq!(listing(&sub), before);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let r = run(&["check", "-q"], &db);
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        assert_eq!(sha256(&db), db_sha, "database file unchanged");
        let names: Vec<String> = listing(&sub).into_iter().map(|e| e.0).collect();
        assert_eq!(names, ["w.db", "w.db-shm", "w.db-wal"]);
        let wal = std::fs::metadata(sidecar(&db, "-wal")).unwrap();
        let shm = std::fs::metadata(sidecar(&db, "-shm")).unwrap();
        let main = std::fs::metadata(&db).unwrap();
        assert_eq!(wal.len(), 0);
        assert_eq!(shm.len(), 32768);
        for m in [&wal, &shm] {
            assert_eq!(m.mode() & 0o777, main.mode() & 0o777);
            assert_eq!(m.uid(), main.uid());
        }
        println!(
            "root + stopped WAL db in 0555 dir: SQLite created -wal (0 bytes) and -shm (32768 bytes), mode {:o}, uid {}",
            shm.mode() & 0o777,
            shm.uid()
        );
    }
    chmod(&sub, 0o755);
}
