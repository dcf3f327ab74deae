//! Opening a database: open what SQLite can open and say why not, even
//! with -q; one definition of a CoreScope database; the FIFO, long-path and
//! disk-full messages. How corescope opens a database and reports a failure.
//!
//! - A main file shorter than its header says while the `-wal` holds the
//!   pages (mid-checkpoint, after a crash or a full disk) opens, and every
//!   command gives the result it gives on the checkpointed file.
//! - A write command SIGKILLed again and again, with nothing opening the
//!   file in between, completes with the result of one clean run.
//! - `check` run 200 times beside a writer that forces checkpoints never fails.
//! - A hot rollback journal: read-only commands say so and change nothing;
//!   the next write command rolls it back.

use crate::harness::common;
use crate::harness::support;

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rusqlite::{params, Connection};
use support::*;

/// Copy `db` and whichever of its -wal/-journal exist (never the -shm).
fn copy_with_sidecars(src: &Path, dst: &Path) {
    std::fs::copy(src, dst).unwrap();
    for s in ["-wal", "-journal"] {
        let from = sidecar(src, s);
        if from.exists() {
            std::fs::copy(&from, sidecar(dst, s)).unwrap();
        }
    }
}

/// (page size, pages the header says, file size) of a database file.
fn header_pages(db: &Path) -> (u64, u64, u64) {
    let b = std::fs::read(db).unwrap();
    let ps = u16::from_be_bytes([b[16], b[17]]) as u64;
    let ps = if ps == 1 { 65_536 } else { ps };
    let pages = u32::from_be_bytes([b[28], b[29], b[30], b[31]]) as u64;
    (ps, pages, b.len() as u64)
}

/// The main file is shorter than its header says.
fn short_main_file(db: &Path) -> bool {
    let (ps, pages, len) = header_pages(db);
    len < ps * pages
}

fn quick_check(db: &Path) -> String {
    let c = Connection::open(db).unwrap();
    c.query_row("PRAGMA quick_check", [], |r| r.get::<_, String>(0))
        .unwrap()
}

/// Rows of about 3 KB for `dropped_packets`: they make the file grow by many pages.
fn grow(c: &Connection, rows: usize, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    c.execute_batch("BEGIN").unwrap();
    for _ in 0..rows {
        let blob: Vec<u8> = (0..1500).map(|_| rng.gen()).collect();
        c.execute(
            "INSERT INTO dropped_packets (hash, raw_hex, reason, dropped_at) VALUES (?1, ?2, 'sig', '2026-05-17 18:00:00')",
            params![format!("{:016x}", rng.gen::<u64>()), hex::encode(blob)],
        )
        .unwrap();
    }
    c.execute_batch("COMMIT").unwrap();
}

/// Deterministic mid-checkpoint state: `snap.db` is the main file from
/// before a checkpoint that grows the file, with page 1 of the checkpointed
/// file written over it (a checkpoint writes the header page first), and
/// `snap.db-wal` is the WAL from before the checkpoint. Returns (snap,
/// checkpointed reference).
fn mid_checkpoint(dir: &Path) -> (PathBuf, PathBuf) {
    let base = synthetic_current(dir, "base.db", 300, 7);
    let c = Connection::open(&base).unwrap();
    c.execute_batch("PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;")
        .unwrap();
    grow(&c, 300, 1);
    let snap = dir.join("snap.db");
    std::fs::copy(&base, &snap).unwrap();
    std::fs::copy(sidecar(&base, "-wal"), sidecar(&snap, "-wal")).unwrap();
    let (ps, _, _) = header_pages(&base);
    let (busy, log, done): (i64, i64, i64) = c
        .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert_eq!((busy, log), (0, done), "checkpoint complete");
    let page1 = std::fs::read(&base).unwrap()[..ps as usize].to_vec();
    let mut old = std::fs::read(&snap).unwrap();
    old[..ps as usize].copy_from_slice(&page1);
    std::fs::write(&snap, &old).unwrap();
    drop(c);
    let reference = dir.join("reference.db");
    std::fs::copy(&base, &reference).unwrap();
    assert!(!sidecar(&base, "-wal").exists() || file_len(&sidecar(&base, "-wal")) == 0);
    (snap, reference)
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

#[test]
fn mid_checkpoint_state_opens_and_every_command_gives_the_checkpointed_result() {
    let dir = tempfile::tempdir().unwrap();
    let (snap, reference) = mid_checkpoint(dir.path());
    let (ps, pages, len) = header_pages(&snap);
    assert!(
        len < ps * pages,
        "setup: main file {len} bytes, header {pages} pages of {ps}"
    );
    assert!(file_len(&sidecar(&snap, "-wal")) > 0);

    // Read-only commands: same report as on the checkpointed file, and the
    // main file and its -wal stay byte-identical.
    let (db_sha, wal_sha) = (sha256(&snap), sha256(&sidecar(&snap, "-wal")));
    for args in [
        vec!["check", "--json"],
        vec!["graph", "stats", "--json"],
        vec!["migrate", "--dry-run", "--json"],
    ] {
        let got = run_ok(&args, &snap, 0);
        let want = run_ok(&args, &reference, 0);
        let strip = |s: &str| {
            let mut j = json_of(s.as_bytes());
            let o = j.as_object_mut().unwrap();
            o.remove("db");
            o.remove("elapsed_ms");
            // check's WAL-size warning looks at file sizes, which differ.
            if let Some(w) = o.get_mut("warnings").and_then(|w| w.as_array_mut()) {
                w.retain(|x| x["code"] != "wal_larger_than_db");
            }
            j
        };
        assert_eq!(strip(&got.stdout), strip(&want.stdout), "{args:?}");
        assert!(got.stderr.is_empty(), "{args:?}: {}", got.stderr);
    }
    assert_eq!(sha256(&snap), db_sha);
    assert_eq!(sha256(&sidecar(&snap, "-wal")), wal_sha);

    // Write commands, each on its own copy of the state: the result equals
    // the same command on the checkpointed file.
    let prune = [
        "prune",
        "--now",
        NOW,
        "--packet-days",
        "20",
        "--node-days",
        "7",
        "--edge-days",
        "5",
    ];
    for (i, args) in [
        vec!["migrate"],
        vec!["backfill"],
        vec!["build-edges"],
        prune.to_vec(),
        vec!["vacuum"],
    ]
    .into_iter()
    .enumerate()
    {
        let a = dir.path().join(format!("a{i}.db"));
        let b = dir.path().join(format!("b{i}.db"));
        copy_with_sidecars(&snap, &a);
        copy_with_sidecars(&reference, &b);
        let mut q = args.clone();
        q.push("-q");
        run_ok(&q, &a, 0);
        run_ok(&q, &b, 0);
        assert_eq!(quick_check(&a), "ok", "{args:?}");
        integrity(&a).unwrap();
        assert_eq!(
            diff_states(&full_state(&b, &[]), &full_state(&a, &[])),
            None,
            "{args:?}"
        );
    }
    assert_eq!(quick_check(&snap), "ok");
}

#[test]
fn truly_truncated_files_are_still_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (snap, _) = mid_checkpoint(dir.path());
    // Without the WAL the missing pages are nowhere: refused, nothing changed.
    let cut = dir.path().join("cut.db");
    std::fs::copy(&snap, &cut).unwrap();
    let before = sha256(&cut);
    for args in [vec!["check"], vec!["migrate"]] {
        let r = run(&args, &cut);
        assert_eq!(r.code, Some(1), "{args:?}: {}", r.stderr);
        assert!(
            r.stderr.contains("truncated") && r.stderr.contains("no WAL"),
            "{}",
            r.stderr
        );
        assert_eq!(r.stderr.trim_end().lines().count(), 1, "{}", r.stderr);
    }
    assert_eq!(sha256(&cut), before);
    // An empty -wal holds nothing either.
    std::fs::write(sidecar(&cut, "-wal"), b"").unwrap();
    let r = run(&["check"], &cut);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("truncated"), "{}", r.stderr);
    assert_eq!(sha256(&cut), before);
    // A real WAL that does not hold the lost pages (the main file cut in
    // half): opened, and SQLite itself finds the damage.
    let half = dir.path().join("half.db");
    let bytes = std::fs::read(&snap).unwrap();
    std::fs::write(&half, &bytes[..bytes.len() / 2]).unwrap();
    std::fs::copy(sidecar(&snap, "-wal"), sidecar(&half, "-wal")).unwrap();
    for args in [vec!["check"], vec!["migrate"]] {
        let r = run(&args, &half);
        assert_eq!(r.code, Some(1), "{args:?}: {}", r.stderr);
        assert_eq!(r.stderr.trim_end().lines().count(), 1, "{}", r.stderr);
        assert!(
            r.stderr.contains("is corrupt")
                && r.stderr
                    .contains("restore from a backup (e.g. one taken with `corescope backup`)"),
            "{args:?}: {}",
            r.stderr
        );
    }
}

/// Start `args`, SIGKILL it at `at` unless it ended by itself before (then
/// it must have exited 0). True when the kill hit a running process.
fn kill_or_finish(args: &[&str], db: &Path, at: Duration) -> bool {
    let mut child = command(args, db).spawn().unwrap();
    let t0 = Instant::now();
    while t0.elapsed() < at {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            assert_eq!(
                status.code(),
                Some(0),
                "{args:?} after earlier kills: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().ok();
    child.wait().unwrap();
    true
}

/// SIGKILL the same copy again and again at random instants, with nothing
/// opening the file in between (no recovery by anyone else, as on a server
/// whose only writer is this timer), then let it finish: the result equals
/// one clean run and `quick_check` is ok.
fn killed_repeatedly_converges(name: &str, setup: &Path, args: &[&str], trials: usize, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference.db");
    copy_db(setup, &reference);
    let t = run_ok(args, &reference, 0).elapsed;
    let want = full_state(&reference, &[]);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut mid, mut short) = (0, 0);
    for trial in 0..trials {
        let db = dir.path().join(format!("kill{trial}.db"));
        copy_db(setup, &db);
        for _ in 0..8 {
            // Early instants: a run after a kill has less left to do.
            if kill_or_finish(args, &db, t.mul_f64(rng.gen_range(0.05..0.7))) {
                mid += 1;
            }
            if short_main_file(&db) && file_len(&sidecar(&db, "-wal")) > 0 {
                short += 1;
            }
        }
        let r = run(args, &db);
        assert_eq!(r.code, Some(0), "{name}: final run: {}", r.stderr);
        assert_eq!(quick_check(&db), "ok", "{name}");
        integrity(&db).unwrap();
        if let Some(d) = diff_states(&want, &full_state(&db, &[])) {
            panic!("{name}: trial {trial} did not converge:\n{d}");
        }
    }
    println!(
        "{name}: {trials}/{trials} converged after 8 kills each ({mid} landed mid-run; {short} left a main file shorter than its header with a -wal)"
    );
}

#[test]
fn write_commands_killed_repeatedly_then_complete_like_one_clean_run() {
    let dir = tempfile::tempdir().unwrap();
    // migrate grows the file by whole tables and indexes, and its commits
    // checkpoint (SQLite's automatic checkpoint in WAL mode): kills land in
    // checkpoints that extend the main file.
    let legacy = dir.path().join("legacy.db");
    synthetic_legacy(&legacy, 10_000, 5);
    Connection::open(&legacy)
        .unwrap()
        .execute_batch("PRAGMA journal_mode = WAL;")
        .unwrap();
    killed_repeatedly_converges(
        "migrate (synthetic legacy, WAL)",
        &legacy,
        &["migrate", "-q", "--max-lock-ms", "20"],
        kills_or(2),
        3,
    );
    // build-edges --rebuild fills a new table, with a PASSIVE checkpoint
    // between its transactions.
    let setup = synthetic_backfill(dir.path(), "bf.db", 1_500, 11);
    run_ok(&["backfill", "-q"], &setup, 0);
    killed_repeatedly_converges(
        "build-edges --rebuild",
        &setup,
        &["build-edges", "-q", "--rebuild", "--max-lock-ms", "20"],
        kills_or(2),
        4,
    );
}

#[test]
fn check_200_times_beside_a_writer_that_forces_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let db = synthetic_current(dir.path(), "live.db", 200, 9);
    run_ok(&["check", "-q"], &db, 0);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (db, stop) = (db.clone(), stop.clone());
        std::thread::spawn(move || {
            let c = Connection::open(&db).unwrap();
            c.busy_timeout(Duration::from_secs(5)).unwrap();
            c.execute_batch("PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;")
                .unwrap();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                grow(&c, 20, n);
                n += 1;
                let mode = if n % 2 == 0 { "PASSIVE" } else { "TRUNCATE" };
                // A checkpoint may find a reader in the way (busy): that is
                // fine, the next one catches up.
                let _ = c.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(()));
            }
            n
        })
    };
    let mut failures = Vec::new();
    for i in 0..200 {
        let r = run(&["check", "-q"], &db);
        if r.code != Some(0) || !r.stderr.is_empty() || !r.stdout.is_empty() {
            failures.push(format!("run {i}: exit {:?}: {}", r.code, r.stderr));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let batches = writer.join().unwrap();
    println!("check 200 times beside {batches} writer transactions, each followed by a checkpoint");
    assert!(batches > 0);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(quick_check(&db), "ok");
}

#[test]
fn hot_rollback_journal_read_only_commands_say_so_then_a_write_command_rolls_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = legacy_copy(dir.path());
    // A writer killed in the middle of a transaction that spilled to the
    // file: the files copied while it is open are what a crash leaves.
    let crashed = dir.path().join("crashed.db");
    {
        let c = Connection::open(&legacy).unwrap();
        let jm: String = c
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(jm, "delete");
        c.execute_batch(
            "PRAGMA cache_size = 5; BEGIN;
             UPDATE observations SET path_json = '[\"FF\"]', snr = -99;
             UPDATE nodes SET name = 'crashed';",
        )
        .unwrap();
        copy_with_sidecars(&legacy, &crashed);
        c.execute_batch("ROLLBACK").unwrap();
    }
    let journal = sidecar(&crashed, "-journal");
    assert!(file_len(&journal) > 0, "setup: a hot journal");
    let before = listing(dir.path());
    for args in [
        vec!["check"],
        vec!["check", "-q"],
        vec!["graph", "stats"],
        vec!["migrate", "--dry-run"],
    ] {
        let r = run(&args, &crashed);
        assert_eq!(r.code, Some(1), "{args:?}: {}", r.stderr);
        assert!(r.stdout.is_empty(), "{args:?}");
        assert_eq!(r.stderr.trim_end().lines().count(), 1, "{}", r.stderr);
        assert!(
            r.stderr.contains("hot rollback journal")
                && r.stderr.contains(&journal.display().to_string())
                && r.stderr.contains("corescope migrate --db")
                && !r.stderr.contains("-shm"),
            "{args:?}: {}",
            r.stderr
        );
        assert_eq!(listing(dir.path()), before, "{args:?} changed a file");
    }
    // The next write command rolls the transaction back, then migrates: the
    // same result as migrate on the untouched fixture.
    run_ok(&["migrate", "-q"], &crashed, 0);
    assert!(!journal.exists());
    let reference = dir.path().join("reference.db");
    std::fs::copy(&legacy, &reference).unwrap();
    run_ok(&["migrate", "-q"], &reference, 0);
    assert_eq!(
        diff_states(&full_state(&reference, &[]), &full_state(&crashed, &[])),
        None
    );
    run_ok(&["check", "-q"], &crashed, 0);
}

// ---------------------------------------------------------------------------
// One definition of a CoreScope database.

#[test]
fn a_file_with_only_transmissions_is_refused_before_any_write() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("other.db");
    Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE transmissions (id INTEGER PRIMARY KEY); INSERT INTO transmissions VALUES (1);")
        .unwrap();
    let before = listing(dir.path());
    for args in [
        vec!["migrate"],
        vec!["migrate", "--create"],
        vec!["migrate", "--dry-run"],
        vec!["check"],
        vec!["build-edges"],
        vec!["graph", "stats"],
    ] {
        let r = run(&args, &db);
        assert_eq!(r.code, Some(1), "{args:?}: {}", r.stderr);
        assert_eq!(r.stderr.trim_end().lines().count(), 1, "{}", r.stderr);
        assert!(
            r.stderr.contains("not a CoreScope database")
                && r.stderr.contains("missing core tables observations, nodes, observers")
                && r.stderr.contains("missing key columns transmissions.raw_hex, transmissions.hash, transmissions.first_seen")
                && !r.stderr.contains("no such table"),
            "{args:?}: {}",
            r.stderr
        );
        // Byte-identical, and not even a run-lock file beside it.
        assert_eq!(listing(dir.path()), before, "{args:?}");
    }
    // All four tables, but observations without its key columns.
    let db2 = dir.path().join("other2.db");
    Connection::open(&db2)
        .unwrap()
        .execute_batch(
            "CREATE TABLE transmissions (id INTEGER PRIMARY KEY, raw_hex TEXT, hash TEXT, first_seen TEXT);
             CREATE TABLE observations (id INTEGER PRIMARY KEY, note TEXT);
             CREATE TABLE nodes (public_key TEXT PRIMARY KEY);
             CREATE TABLE observers (id TEXT PRIMARY KEY);",
        )
        .unwrap();
    let sha = sha256(&db2);
    let r = run(&["migrate"], &db2);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("missing key columns observations.transmission_id, observations.timestamp"),
        "{}",
        r.stderr
    );
    assert_eq!(sha256(&db2), sha);
}

#[test]
fn migrate_create_accepts_an_empty_file_and_a_schema_without_tables() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    // Without --create an empty file is refused.
    let r = run(&["migrate"], &empty);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("empty file"), "{}", r.stderr);
    // The dry run plans against an empty schema and leaves the file empty.
    let plan = run_ok(&["migrate", "--create", "--dry-run", "--json"], &empty, 0);
    assert!(!json_of(plan.stdout.as_bytes())["planned"]
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(file_len(&empty), 0);
    run_ok(&["migrate", "--create", "-q"], &empty, 0);
    run_ok(&["check", "-q"], &empty, 0);
    // A SQLite file with a header but no table (a --create killed early).
    let bare = dir.path().join("bare.db");
    Connection::open(&bare)
        .unwrap()
        .execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE x(a); DROP TABLE x;")
        .unwrap();
    let r = run(&["migrate"], &bare);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr.contains("not a CoreScope database"),
        "{}",
        r.stderr
    );
    run_ok(&["migrate", "--create", "-q"], &bare, 0);
    run_ok(&["check", "-q"], &bare, 0);
}

// ---------------------------------------------------------------------------
// -q still says why.

#[test]
fn check_quiet_on_a_not_ready_database_prints_one_line_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let db = legacy_copy(dir.path());
    let r = run(&["check", "-q"], &db);
    assert_eq!(r.code, Some(3));
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", r.stderr);
    let l = lines[0];
    assert!(l.starts_with("corescope check: not ready: "), "{l}");
    assert!(l.contains(" missing objects ("), "{l}");
    assert!(l.contains(" pending migrations ("), "{l}");
    assert!(
        l.ends_with(&format!("; run: corescope migrate --db {}", db.display())),
        "{l}"
    );
    // The counts are the report's.
    let j = json_of(run(&["check", "--json"], &db).stdout.as_bytes());
    let n = j["missing"].as_array().unwrap().len();
    let m = j["pending_migrations"].as_array().unwrap().len();
    let first = j["missing"][0].as_str().unwrap();
    let pending = j["pending_migrations"][0].as_str().unwrap();
    assert!(
        l.contains(&format!(": {n} missing objects ({first}, ")),
        "{l}"
    );
    assert!(
        l.contains(&format!(", {m} pending migrations ({pending}, ")),
        "{l}"
    );

    // --strict on a migrated database with warnings: one line naming them.
    run_ok(&["migrate", "-q"], &db, 0);
    run_ok(&["check", "-q"], &db, 0);
    let r = run(&["check", "-q", "--strict"], &db);
    assert_eq!(r.code, Some(3));
    assert!(r.stdout.is_empty());
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr
            .starts_with("corescope check: not ready (--strict): ")
            && r.stderr.contains("auto_vacuum_not_incremental"),
        "{}",
        r.stderr
    );
}

#[test]
fn failing_commands_with_quiet_print_one_line_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = legacy_copy(dir.path());
    // A write command refused on a database that is not migrated (exit 3).
    let r = run(&["build-edges", "-q"], &legacy);
    assert_eq!(r.code, Some(3), "{}", r.stderr);
    assert!(r.stdout.is_empty());
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.starts_with("corescope build-edges: error: ")
            && r.stderr.contains("corescope migrate --db"),
        "{}",
        r.stderr
    );
    // A write command that fails (exit 1) and one that is refused as not CoreScope.
    let text = dir.path().join("notes.db");
    std::fs::write(&text, "not sqlite\n".repeat(20)).unwrap();
    for args in [
        vec!["migrate", "-q"],
        vec!["prune", "-q", "--packet-days", "3"],
    ] {
        let r = run(&args, &text);
        assert_eq!(r.code, Some(1), "{args:?}: {}", r.stderr);
        assert!(r.stdout.is_empty());
        assert_eq!(r.stderr.lines().count(), 1, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains("not a SQLite database"), "{}", r.stderr);
    }
}

// ---------------------------------------------------------------------------
// Paths SQLite cannot use, and a full disk.

#[test]
fn a_fifo_as_database_is_refused_without_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe.db");
    let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    for args in [
        vec!["check"],
        vec!["migrate"],
        vec!["graph", "stats"],
        vec!["build-edges"],
    ] {
        let mut child = command(&args, &fifo).spawn().unwrap();
        let t0 = Instant::now();
        // A guard against a hang (not a timing assertion): the refusal
        // itself takes milliseconds.
        while child.try_wait().unwrap().is_none() {
            if t0.elapsed() > Duration::from_secs(60) {
                child.kill().ok();
                panic!("{args:?} hangs on a FIFO");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(
            err.contains("is a FIFO (named pipe), not a database file")
                && err.contains(&fifo.display().to_string()),
            "{err}"
        );
    }
    // Nothing was created beside it.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn a_path_over_sqlites_limit_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let mut deep = std::fs::canonicalize(dir.path()).unwrap();
    while deep.as_os_str().len() < 560 {
        deep = deep.join("d".repeat(120));
    }
    std::fs::create_dir_all(&deep).unwrap();
    let db = deep.join("corescope.db");
    std::fs::copy(fixture(), &db).unwrap();
    for args in [vec!["check"], vec!["migrate"], vec!["graph", "stats"]] {
        let r = run(&args, &db);
        assert_eq!(r.code, Some(1), "{args:?}: {}", r.stderr);
        assert_eq!(r.stderr.trim_end().lines().count(), 1, "{}", r.stderr);
        assert!(
            r.stderr.contains("too long for SQLite")
                && r.stderr.contains("at most 504")
                && !r.stderr.contains("permissions"),
            "{args:?}: {}",
            r.stderr
        );
    }
    let missing = deep.join("new.db");
    let r = run(&["migrate", "--create"], &missing);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("too long for SQLite"), "{}", r.stderr);
    assert!(!missing.exists());
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount(size: &str) -> Option<SmallFs> {
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        ok.then_some(SmallFs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn free(&self) -> u64 {
        let c = std::ffi::CString::new(self.path().as_os_str().as_bytes()).unwrap();
        // SAFETY: statvfs on a NUL-terminated path into a zeroed struct.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `c` is NUL-terminated and `st` is a valid, writable statvfs.
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
        st.f_bavail as u64 * st.f_frsize as u64
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).output();
    }
}

/// One `migrate` on a copy of `setup` in `fs` with `free` bytes left:
/// exit 0, or exit 1 with one line saying "disk full"; meanwhile `check`
/// opens or says disk full, never "truncated" or a bare I/O error; with the
/// space back, `check` opens and `migrate` finishes with `want`. Returns
/// whether the failed run left a main file shorter than its header with a
/// -wal (the state a checkpoint cut short by the full disk leaves).
fn disk_full_round(fs: &SmallFs, setup: &Path, free: u64, want: &State) -> (Option<i32>, bool) {
    let db = fs.path().join("full.db");
    for s in ["", "-wal", "-shm", "-journal"] {
        std::fs::remove_file(sidecar(&db, s)).ok();
    }
    std::fs::copy(setup, &db).unwrap();
    let filler = fs.path().join("filler");
    let room = fs.free();
    std::fs::write(&filler, vec![0u8; room.saturating_sub(free) as usize]).unwrap();
    let r = run(&["migrate"], &db);
    println!(
        "migrate with {free} bytes free: exit {:?}: {}",
        r.code,
        r.stderr.trim_end()
    );
    let errors: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains(": error: "))
        .collect();
    match r.code {
        Some(0) => assert!(errors.is_empty(), "{}", r.stderr),
        Some(1) => {
            assert_eq!(errors.len(), 1, "{}", r.stderr);
            assert!(
                errors[0].contains("disk full while writing")
                    && errors[0].contains(&db.display().to_string())
                    && errors[0].contains("free on its filesystem"),
                "{}",
                r.stderr
            );
            // Where SQLite only says "disk I/O error", the errno says why.
            if errors[0].contains("SQLITE_IOERR") {
                assert!(
                    errors[0].contains("No space left on device"),
                    "{}",
                    r.stderr
                );
            }
        }
        c => panic!("migrate on a full disk exited {c:?}: {}", r.stderr),
    }
    let short = short_main_file(&db) && file_len(&sidecar(&db, "-wal")) > 0;
    // Still full: check opens the file, or says the disk is full.
    let c = run(&["check", "-q"], &db);
    println!(
        "check, disk still full: exit {:?}: {}",
        c.code,
        c.stderr.trim_end()
    );
    assert_eq!(
        c.stderr.lines().count(),
        1.min(c.code.unwrap_or(1) as usize),
        "{}",
        c.stderr
    );
    match c.code {
        Some(0) | Some(3) => {}
        Some(1) => assert!(
            c.stderr.contains("disk full on the filesystem of"),
            "{}",
            c.stderr
        ),
        other => panic!("check exited {other:?}: {}", c.stderr),
    }
    // Space again: every later command opens, and migrate finishes.
    std::fs::remove_file(&filler).unwrap();
    let c = run(&["check", "-q"], &db);
    assert!(matches!(c.code, Some(0) | Some(3)), "{}", c.stderr);
    run_ok(&["migrate", "-q"], &db, 0);
    run_ok(&["check", "-q"], &db, 0);
    assert_eq!(quick_check(&db), "ok");
    assert_eq!(diff_states(want, &full_state(&db, &[])), None);
    (r.code, short)
}

#[test]
fn disk_full_on_a_small_filesystem_says_disk_full_and_later_commands_open() {
    let Some(fs) = SmallFs::mount("4m") else {
        println!("SKIP: cannot mount a tmpfs here (needs root); disk-full on a real filesystem not tested");
        return;
    };
    let work = tempfile::tempdir().unwrap();
    // The legacy fixture in WAL mode, as the ingestor leaves it.
    let setup = legacy_copy(work.path());
    Connection::open(&setup)
        .unwrap()
        .execute_batch("PRAGMA journal_mode = WAL;")
        .unwrap();
    let reference = work.path().join("reference.db");
    std::fs::copy(&setup, &reference).unwrap();
    run_ok(&["migrate", "-q"], &reference, 0);
    let want = full_state(&reference, &[]);
    let (mut failed, mut shorts) = (0, 0);
    for kib in [16, 48, 96, 160, 256, 384] {
        let (code, short) = disk_full_round(&fs, &setup, kib * 1024, &want);
        println!("{kib} KiB free: migrate exit {code:?}, short main file with -wal left: {short}");
        failed += usize::from(code == Some(1));
        shorts += usize::from(short);
    }
    // The rooms are too small for migrate, and a checkpoint cut short by
    // the full disk left the main file shorter than its header at least
    // once: the state every later command used to refuse as "truncated".
    assert!(failed > 0 && shorts > 0, "{failed} failed, {shorts} short");
}
