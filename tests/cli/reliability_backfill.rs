//! Reliability of `backfill` (every task and all together): crash
//! convergence, overlapping runs with and without the run lock, and the live
//! ingestor-like writer, after which the result equals a clean recomputation.

use crate::harness::common;
use crate::harness::support;

use std::time::Duration;

use common::*;
use rusqlite::Connection;
use support::*;

const TASKS: [&str; 4] = ["", "from-pubkey", "path-json", "resolved-path"];

fn args(task: &'static str, extra: &[&'static str]) -> Vec<&'static str> {
    let mut a = vec!["backfill", "-q"];
    if !task.is_empty() {
        a.push(task);
    }
    a.extend_from_slice(extra);
    a
}

#[test]
fn backfill_every_task_converges_after_kills() {
    let dir = tempfile::tempdir().unwrap();
    let setup = synthetic_backfill(dir.path(), "bf.db", 1_500, 41);
    // resolved-path alone starts where the other tasks left off (it reads
    // the hops path-json fills).
    let filled = dir.path().join("filled.db");
    copy_db(&setup, &filled);
    let r = run_ok(
        &["backfill", "--json", "from-pubkey", "path-json"],
        &filled,
        0,
    );
    println!("setup for resolved-path: {}", r.stdout.trim());
    for (i, task) in TASKS.iter().enumerate() {
        let a = args(task, &["--max-lock-ms", "20"]);
        let name = format!(
            "backfill {}",
            if task.is_empty() { "(all tasks)" } else { task }
        );
        let rep = crash_convergence(&Crash {
            name: &name,
            setup: if *task == "resolved-path" {
                &filled
            } else {
                &setup
            },
            args: &a,
            kills: kills_or(3),
            seed: 0x5eed_0200 + i as u64,
            exclude: &[],
            code: 0,
        });
        assert_eq!(rep.converged, rep.trials);
    }
}

#[test]
#[ignore]
fn backfill_large_converges_after_many_kills() {
    let dir = tempfile::tempdir().unwrap();
    let setup = synthetic_backfill(dir.path(), "bf.db", 30_000, 42);
    let filled = dir.path().join("filled.db");
    copy_db(&setup, &filled);
    run_ok(&["backfill", "-q", "from-pubkey", "path-json"], &filled, 0);
    let kills = std::env::var("RELIABILITY_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    for (i, task) in TASKS.iter().enumerate() {
        let a = args(task, &[]);
        let name = format!(
            "backfill 30k {}",
            if task.is_empty() { "(all tasks)" } else { task }
        );
        let rep = crash_convergence(&Crash {
            name: &name,
            setup: if *task == "resolved-path" {
                &filled
            } else {
                &setup
            },
            args: &a,
            kills,
            seed: 0x5eed_0300 + i as u64,
            exclude: &[],
            code: 0,
        });
        assert_eq!(rep.converged, rep.trials);
    }
}

#[test]
fn two_backfills_at_once_equal_one() {
    let dir = tempfile::tempdir().unwrap();
    let setup = synthetic_backfill(dir.path(), "bf.db", 1_000, 43);
    for bypass in [false, true] {
        let rep = overlap(
            "backfill (all tasks)",
            &setup,
            &args("", &["--max-lock-ms", "20"]),
            0,
            &[],
            &[Duration::ZERO, Duration::from_millis(20)],
            bypass,
        );
        assert_eq!(rep.converged, rep.rounds);
    }
}

/// Null every backfilled value and forget the cursors: what a clean
/// recomputation starts from.
fn reset_backfills(db: &std::path::Path) {
    let c = Connection::open(db).unwrap();
    c.execute_batch(
        "UPDATE transmissions SET from_pubkey = NULL;
         UPDATE observations SET path_json = NULL WHERE raw_hex IS NOT NULL AND raw_hex <> '';
         UPDATE observations SET resolved_path = NULL;
         DELETE FROM _corescope_state WHERE key LIKE 'backfill.%';
         DELETE FROM _migrations WHERE name = 'backfill_path_json_from_raw_hex_v1';",
    )
    .unwrap();
}

#[test]
fn backfill_beside_a_live_writer_loses_nothing_and_equals_a_clean_recomputation() {
    let dir = tempfile::tempdir().unwrap();
    let db = synthetic_backfill(dir.path(), "live.db", 3_000, 44);
    let writer = LiveWriter::start(&db, WriterOpts::default());
    let r = run_ok(&["backfill", "--json", "--max-lock-ms", "50"], &db, 0);
    std::thread::sleep(Duration::from_millis(50));
    let rep = writer.stop();
    let j = json_of(r.stdout.as_bytes());
    println!(
        "live writer during backfill: {}; backfill max_lock_hold_ms {}",
        rep.summary(),
        j["max_lock_hold_ms"]
    );
    assert!(
        rep.failures.is_empty(),
        "writer failures: {:?}",
        rep.failures
    );
    let missing = verify_writer(&db, &rep);
    assert!(missing.is_empty(), "lost rows: {missing:?}");
    integrity(&db).unwrap();
    // Finish rows the writer added after the cursors passed, then compare
    // with a clean recomputation of the same final rows.
    run_ok(&["backfill", "-q"], &db, 0);
    let got = full_state(&db, &[]);
    let clean = dir.path().join("clean.db");
    copy_db(&db, &clean);
    reset_backfills(&clean);
    run_ok(&["backfill", "-q"], &clean, 0);
    let want = full_state(&clean, &[]);
    let strip = |mut s: State| {
        s.remove("_corescope_state");
        s
    };
    assert_eq!(diff_states(&strip(want), &strip(got)), None);
}
