//! Bad-input cases beyond tests/cli/bad_input.rs — corrupt pages,
//! permissions (as an unprivileged user), read-only directories, disk full,
//! unparseable --now, and malformed values inside otherwise valid databases.
//! Each asserts the exit code, a one-line message naming the path, and that
//! nothing was created or modified where nothing may be.

use crate::harness::common;
use crate::harness::support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use rusqlite::Connection;
use support::*;

const NOBODY: u32 = 65534;

/// Exactly one error line on stderr (log warnings may precede it), naming
/// `db` and containing `needle`.
fn one_line_naming(stderr: &str, db: &Path, needle: &str) {
    assert!(!stderr.contains("panicked"), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains(": error: ")).collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    let line = errors[0];
    assert!(
        line.contains(&db.display().to_string()),
        "names the path: {stderr}"
    );
    assert!(line.contains(needle), "says '{needle}': {stderr}");
}

/// The directory listing without corescope's run-lock files (they are
/// created by design beside the database on every write run and persist;
/// see src/runlock.rs).
fn listing_nolock(dir: &Path) -> Vec<(String, u64, String)> {
    listing(dir)
        .into_iter()
        .filter(|e| !e.0.contains(".corescope-") || !e.0.ends_with(".lock"))
        .collect()
}

/// A leaf page of `table` (or index) in the middle of its b-tree.
fn leaf_page(db: &Path, name: &str) -> i64 {
    let c = Connection::open(db).unwrap();
    let pages: Vec<i64> = c
        .prepare("SELECT pageno FROM dbstat WHERE name = ?1 AND pagetype = 'leaf' ORDER BY pageno")
        .unwrap()
        .query_map([name], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert!(!pages.is_empty(), "no leaf pages of {name}");
    pages[pages.len() / 2]
}

/// Overwrite the first 64 bytes of `page` (its b-tree header) with 0xA5.
fn corrupt_page(db: &Path, page: i64) {
    use std::io::{Seek, SeekFrom, Write};
    let ps = count(&Connection::open(db).unwrap(), "PRAGMA page_size");
    let mut f = std::fs::OpenOptions::new().write(true).open(db).unwrap();
    f.seek(SeekFrom::Start(((page - 1) * ps) as u64)).unwrap();
    f.write_all(&[0xA5; 64]).unwrap();
}

/// A migrated copy of the legacy fixture, journal mode delete, no -wal.
fn migrated(dir: &Path) -> PathBuf {
    let db = legacy_copy(dir);
    run_ok(&["migrate", "-q"], &db, 0);
    db
}

const PRUNE: &[&str] = &[
    "prune",
    "--now",
    "2026-05-17T00:00:00Z",
    "--packet-days",
    "30",
];

#[test]
fn corrupt_data_page_read_only_commands_report_it_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = migrated(dir.path());
    corrupt_page(&db, leaf_page(&db, "transmissions"));
    let before = listing(dir.path());
    // Plain `check` reads no data page (it cannot see this damage); the
    // modes that read the data do.
    for args in [&["check", "--deep"][..], &["check", "--integrity"][..]] {
        let r = run(args, &db);
        assert_eq!(r.code, Some(1), "{args:?}: {}", r.stderr);
        one_line_naming(&r.stderr, &db, "is corrupt");
        assert!(
            r.stderr
                .contains("restore from a backup (e.g. one taken with `corescope backup`)"),
            "{}",
            r.stderr
        );
        assert_eq!(listing(dir.path()), before, "{args:?}");
    }
    // Dry runs read what they need and never write: exit 0 when they did
    // not touch the page, else 1 with the same message.
    let mut dry = PRUNE.to_vec();
    dry.push("--dry-run");
    for args in [
        &["migrate", "--dry-run"][..],
        &dry[..],
        &["backfill", "--dry-run"][..],
        &["graph", "stats"][..],
        &["graph", "dump"][..],
    ] {
        let r = run(args, &db);
        assert!(
            matches!(r.code, Some(0) | Some(1)),
            "{args:?}: {}",
            r.stderr
        );
        if r.code == Some(1) {
            one_line_naming(&r.stderr, &db, "is corrupt");
        }
        assert_eq!(listing(dir.path()), before, "{args:?}");
    }
}

#[test]
fn corrupt_index_page_is_found_by_check_integrity() {
    let dir = tempfile::tempdir().unwrap();
    let db = migrated(dir.path());
    corrupt_page(&db, leaf_page(&db, "idx_transmissions_first_seen"));
    let before = listing(dir.path());
    let r = run(&["check", "--integrity", "--json"], &db);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    one_line_naming(&r.stderr, &db, "quick_check");
    assert_eq!(listing(dir.path()), before);
}

/// Write commands stop with exit 1 and the corruption message as soon as they
/// reach a corrupt page. They do not scan the whole file first (that would
/// be a full read on every timer run), so batches committed before that point
/// stay committed — see RELIABILITY.md, "Not covered / known gaps".
#[test]
fn corrupt_page_write_command_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let db = migrated(dir.path());
    corrupt_page(&db, leaf_page(&db, "transmissions"));
    let r = run(PRUNE, &db);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    one_line_naming(&r.stderr, &db, "is corrupt");
    // No stray files beside it (journal rolled back or committed).
    let names: Vec<String> = listing(dir.path()).into_iter().map(|e| e.0).collect();
    assert!(names.iter().all(|n| !n.ends_with("-journal")), "{names:?}");
}

// ---------------------------------------------------------------------------
// Permissions: as an unprivileged user (root bypasses file modes).

/// A command that runs the binary as uid/gid 65534 when we are root (via
/// util-linux setpriv), or as ourselves otherwise. None: cannot drop
/// privileges here (the test prints why and skips).
fn unprivileged(args: &[&str], db: &Path) -> Option<Command> {
    let bin = assert_cmd::cargo::cargo_bin("corescope");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        let mut c = Command::new(bin);
        c.args(args).arg("--db").arg(db);
        return Some(c);
    }
    let probe = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "true"])
        .status();
    if !matches!(probe, Ok(s) if s.success()) {
        println!(
            "SKIPPED: running as root and `setpriv` is unavailable; cannot test file permissions"
        );
        return None;
    }
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin)
        .args(args)
        .arg("--db")
        .arg(db)
        .env_remove("CORESCOPE_DB")
        .env_remove("CORESCOPE_CONFIG")
        .env_remove("RUST_LOG");
    Some(c)
}

fn as_nobody(args: &[&str], db: &Path) -> Option<(i32, String)> {
    let out = unprivileged(args, db)?.output().unwrap();
    Some((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn chown(p: &Path, uid: u32) {
    std::os::unix::fs::chown(p, Some(uid), Some(uid)).ok();
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A directory the unprivileged user can enter, holding a database.
fn open_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o755);
    let sub = dir.path().join("data");
    std::fs::create_dir(&sub).unwrap();
    (dir, sub)
}

#[test]
fn no_read_permission() {
    let (_d, sub) = open_dir();
    let db = migrated(&sub);
    chmod(&sub, 0o755);
    chmod(&db, 0o000);
    let before = listing(&sub);
    for args in [
        &["check"][..],
        &["migrate"][..],
        &["migrate", "--dry-run"][..],
        PRUNE,
        &["vacuum"][..],
        &["backfill"][..],
        &["build-edges"][..],
        &["graph", "stats"][..],
    ] {
        let Some((code, err)) = as_nobody(args, &db) else {
            return;
        };
        assert_eq!(code, 1, "{args:?}: {err}");
        one_line_naming(&err, &db, "permission denied");
        assert_eq!(listing(&sub), before, "{args:?}");
    }
}

#[test]
fn read_only_directory_for_write_commands() {
    let (_d, sub) = open_dir();
    // A legacy copy (rollback journal: migrate needs <db>-journal) and a
    // migrated WAL database (write commands need -wal and -shm), both owned
    // by the unprivileged user, in a directory it cannot write.
    let legacy = legacy_copy(&sub);
    let wal = fresh_db(&sub, "wal.db");
    for p in [&legacy, &wal] {
        chown(p, NOBODY);
        chmod(p, 0o644);
    }
    chmod(&sub, 0o555);
    let before = listing(&sub);
    for (db, args) in [
        (&legacy, &["migrate"][..]),
        (&wal, PRUNE),
        (&wal, &["vacuum"][..]),
        (&wal, &["backfill"][..]),
        (&wal, &["build-edges"][..]),
    ] {
        let Some((code, err)) = as_nobody(args, db) else {
            chmod(&sub, 0o755);
            return;
        };
        assert_eq!(code, 1, "{args:?}: {err}");
        one_line_naming(&err, db, "read-only");
        assert_eq!(listing(&sub), before, "{args:?}");
    }
    chmod(&sub, 0o755);
}

#[test]
fn read_only_file_for_write_commands() {
    let (_d, sub) = open_dir();
    let legacy = legacy_copy(&sub);
    chown(&sub, NOBODY);
    chown(&legacy, NOBODY);
    chmod(&legacy, 0o444);
    let before = listing(&sub);
    let Some((code, err)) = as_nobody(&["migrate"], &legacy) else {
        return;
    };
    assert_eq!(code, 1, "{err}");
    one_line_naming(&err, &legacy, "read-only");
    // The database is untouched; the run lock file may have been created.
    assert_eq!(listing_nolock(&sub), before);
    assert_eq!(std::fs::metadata(&legacy).unwrap().uid(), NOBODY);
}

// ---------------------------------------------------------------------------
// Disk full (simulated with the test-only hook in src/db.rs).

#[test]
fn disk_full_during_migrate_fails_cleanly_and_the_next_run_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let setup = dir.path().join("setup.db");
    synthetic_legacy(&setup, 6_000, 31);
    let reference = dir.path().join("reference.db");
    copy_db(&setup, &reference);
    run_ok(&["migrate", "-q"], &reference, 0);
    let want = full_state(&reference, &[]);

    let db = dir.path().join("full.db");
    copy_db(&setup, &db);
    let out = command(&["migrate", "--max-lock-ms", "20"], &db)
        .env("CORESCOPE_TEST_DISK_FULL_AFTER_PAGES", "8")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let last = err.trim_end().lines().last().unwrap_or("").to_string();
    one_line_naming(&last, &db, "disk full");
    assert!(last.contains("run again"), "{last}");
    integrity(&db).unwrap();
    assert!(!sidecar(&db, "-journal").exists());
    // Not ready yet (the work stopped part-way); the next run finishes it.
    let c = run(&["check", "-q"], &db);
    assert_eq!(c.code, Some(3), "{}", c.stderr);
    run_ok(&["migrate", "-q"], &db, 0);
    assert_eq!(diff_states(&want, &full_state(&db, &[])), None);
}

#[test]
fn unparseable_now_is_a_usage_error_that_names_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_db(dir.path(), "n.db");
    let before = listing(dir.path());
    for bad in ["yesterday", "2026-13-45T00:00:00Z", "", "17/05/2026"] {
        let out = bin()
            .args(["prune", "--now", bad, "--db"])
            .arg(&db)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "--now {bad:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--now") || err.contains(bad), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(listing(dir.path()), before);
    }
}

// ---------------------------------------------------------------------------
// Malformed values inside otherwise valid databases.

/// Odd rows the field has produced (or could): malformed path_json and
/// decoded_json, odd-length/non-hex raw_hex, a 5 000-hop path, NULLs and
/// wrong types where CoreScope's code assumes values.
fn add_odd_rows(db: &Path) -> i64 {
    let c = Connection::open(db).unwrap();
    let long_path = format!(
        "[{}]",
        (0..5000)
            .map(|i| format!("\"{:04X}\"", i))
            .collect::<Vec<_>>()
            .join(",")
    );
    let decoded = [
        "not json",
        "",
        "{\"type\":\"ADVERT\",\"pubKey\":5}",
        "{\"type\":\"ADVERT\",\"pubKey\":null}",
        "{\"type\":\"ADVERT\"}",
        "[1,2,3]",
        "{\"type\":\"GRP_TXT\",\"channelHash\":{\"x\":1}}",
        "{\"type\":\"ADVERT\",\"pubKey\":\"ZZ\u{e9}\"}",
    ];
    let raw = ["abc", "zz11", "", "11", "%%%%"];
    let paths = [
        "[",
        "{\"a\":1}",
        "[\"ZZ\"",
        "[1,2,null]",
        "[\"\"]",
        "null",
        long_path.as_str(),
    ];
    let mut n = 0;
    for (i, d) in decoded.iter().enumerate() {
        for (j, r) in raw.iter().enumerate() {
            let pt: Option<i64> = match (i + j) % 4 {
                0 => Some(4),
                1 => Some(5),
                2 => None,
                _ => Some(99),
            };
            c.execute(
                "INSERT INTO transmissions (raw_hex, hash, first_seen, route_type, payload_type, decoded_json) VALUES (?1, ?2, ?3, NULL, ?4, ?5)",
                rusqlite::params![r, format!("odd{i}_{j}"), if j == 0 { "garbage time" } else { "2026-03-29T17:33:34Z" }, pt, d],
            )
            .unwrap();
            let tx = c.last_insert_rowid();
            for (k, p) in paths.iter().enumerate() {
                let idx: rusqlite::types::Value = match k % 4 {
                    0 => rusqlite::types::Value::Null,
                    1 => rusqlite::types::Value::Text("no-such-observer".into()),
                    2 => rusqlite::types::Value::Real(1.5),
                    _ => rusqlite::types::Value::Blob(vec![1, 2, 3]),
                };
                c.execute(
                    "INSERT INTO observations (transmission_id, observer_idx, path_json, timestamp) VALUES (?1, ?2, ?3, ?4)",
                    rusqlite::params![tx, idx, p, k as i64 * 1000],
                )
                .unwrap();
                n += 1;
            }
        }
    }
    c.execute_batch(
        "INSERT INTO transmissions (raw_hex, hash, first_seen, decoded_json) VALUES ('11', 'odd-null-decoded', '2026-03-29T17:33:34Z', NULL);
         INSERT INTO nodes (public_key, name, last_seen, advert_count) VALUES (NULL, 'null key', NULL, NULL);
         INSERT INTO nodes (public_key, name, last_seen, advert_count) VALUES ('UPPERCASEKEY', NULL, 'not a time', 'many');
         INSERT INTO observers (id, name, last_seen, noise_floor) VALUES (NULL, 'null id', NULL, 'loud');
         INSERT INTO observers (id, name, last_seen) VALUES ('', 'empty id', '');",
    )
    .unwrap();
    n
}

fn assert_no_crash(r: &RunResult, args: &[&str], ok: &[i32]) {
    assert!(
        r.code.is_some_and(|c| ok.contains(&c)),
        "{args:?} exited {:?}: {}",
        r.code,
        r.stderr
    );
    assert!(!r.stderr.contains("panicked"), "{args:?}: {}", r.stderr);
}

#[test]
fn odd_values_in_a_legacy_database_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let db = legacy_copy(dir.path());
    let odd = add_odd_rows(&db);
    let c = Connection::open(&db).unwrap();
    let obs_before = count(&c, "SELECT count(*) FROM observations");
    let tx_before = count(&c, "SELECT count(*) FROM transmissions");
    drop(c);
    let r = run(&["check", "--json"], &db);
    assert_no_crash(&r, &["check"], &[3]);
    json_of(r.stdout.as_bytes());
    let r = run(&["migrate", "--dry-run", "--json"], &db);
    assert_no_crash(&r, &["migrate", "--dry-run"], &[0]);
    let r = run(&["migrate", "--json"], &db);
    assert_no_crash(&r, &["migrate"], &[0, 3]);
    let j = json_of(r.stdout.as_bytes());
    println!(
        "migrate on odd rows: exit {:?}, notes {}",
        r.code, j["notes"]
    );
    // Nothing lost: every row is still there (no transmission has an empty
    // hash or first_seen, so the legacy cleanup deletes nothing).
    let c = Connection::open(&db).unwrap();
    assert_eq!(count(&c, "SELECT count(*) FROM observations"), obs_before);
    assert_eq!(count(&c, "SELECT count(*) FROM transmissions"), tx_before);
    assert!(odd > 0);
    drop(c);
    for args in [
        &["check", "--json"][..],
        &["check", "--integrity", "--json"][..],
        &["migrate", "--json"][..],
    ] {
        let r = run(args, &db);
        assert_no_crash(&r, args, &[0, 3]);
        json_of(r.stdout.as_bytes());
    }
    integrity(&db).unwrap();
}

#[test]
fn odd_values_in_a_current_database_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let db = synthetic_current(dir.path(), "odd.db", 300, 33);
    add_odd_rows(&db);
    // Give half of the odd observations the odd raw_hex of their
    // transmission and no path_json, so path-json decodes them.
    Connection::open(&db)
        .unwrap()
        .execute_batch(
            "UPDATE OR IGNORE observations SET path_json = NULL,
               raw_hex = (SELECT raw_hex FROM transmissions t WHERE t.id = transmission_id)
             WHERE id % 2 = 0 AND transmission_id IN (SELECT id FROM transmissions WHERE hash LIKE 'odd%');
             UPDATE observations SET raw_hex = '11' || substr('00000000', 1, 1) WHERE id % 5 = 0 AND raw_hex IS NULL;",
        )
        .unwrap();
    let mut prune = vec![
        "prune",
        "--json",
        "--now",
        NOW,
        "--packet-days",
        "20",
        "--node-days",
        "7",
        "--observer-days",
        "14",
        "--metrics-days",
        "30",
        "--edge-days",
        "5",
    ];
    let mut dry = prune.clone();
    dry.push("--dry-run");
    for args in [
        &["check", "--json"][..],
        &["check", "--integrity", "--json"][..],
        &["migrate", "--json"][..],
        &["backfill", "--dry-run", "--json"][..],
        &["backfill", "--json", "--max-lock-ms", "20"][..],
        &["backfill", "--json"][..],
        &["build-edges", "--json", "--max-lock-ms", "20"][..],
        &["build-edges", "--json", "--rebuild"][..],
        &["graph", "stats", "--json", "--now", NOW][..],
        &["graph", "dump", "--format", "graphml"][..],
        &dry[..],
        &prune[..],
        &["vacuum", "--json"][..],
    ] {
        let r = run(args, &db);
        assert_no_crash(&r, args, &[0, 3]);
        if !args.contains(&"--json") {
            continue;
        }
        let j = json_of(r.stdout.as_bytes());
        if args[0] == "build-edges" {
            println!("build-edges on odd rows: {j}");
        }
        if args[0] == "backfill" {
            println!("backfill on odd rows: {}", j["tasks"]);
        }
        if args[0] == "prune" {
            println!(
                "prune on odd rows: unparseable {} null_times {}",
                j["unparseable"], j["null_times"]
            );
        }
    }
    prune.push("--max-lock-ms");
    prune.push("20");
    let r = run(&prune, &db);
    assert_no_crash(&r, &prune, &[0]);
    integrity(&db).unwrap();
}
