//! Reliability of `build-edges` (incremental and --rebuild): crash
//! convergence, overlapping runs with and without the run lock, and the live
//! ingestor-like writer, after which the incremental result equals a clean
//! `--rebuild` recomputation.

use crate::harness::common;
use crate::harness::support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use rusqlite::Connection;
use support::*;

/// A database with filled path_json/from_pubkey (backfill done) and, when
/// `empty_edges`, no neighbor_edges yet.
fn edges_setup(dir: &Path, name: &str, tx: usize, seed: u64, empty_edges: bool) -> PathBuf {
    let db = synthetic_backfill(dir, name, tx, seed);
    run_ok(&["backfill", "-q"], &db, 0);
    let c = Connection::open(&db).unwrap();
    if empty_edges {
        c.execute_batch("DELETE FROM neighbor_edges").unwrap();
    }
    // Observers with node-key ids, so (F, O) edges exist too.
    c.execute_batch(
        "UPDATE observers SET id = lower((SELECT public_key FROM nodes WHERE nodes.rowid = observers.rowid * 7))",
    )
    .unwrap();
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    drop(c);
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.to_string_lossy().ends_with(".lock") {
            std::fs::remove_file(p).ok();
        }
    }
    db
}

#[test]
fn build_edges_converges_after_kills() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = edges_setup(dir.path(), "fresh.db", 1_500, 51, true);
    let seeded = edges_setup(dir.path(), "seeded.db", 1_500, 52, false);
    let n = count(
        &Connection::open(&fresh).unwrap(),
        "SELECT count(*) FROM observations WHERE path_json NOT IN ('', '[]')",
    );
    assert!(n > 1000, "{n} observations with hops");
    for (i, (name, setup, args)) in [
        (
            "build-edges (empty table)",
            &fresh,
            vec!["build-edges", "-q", "--max-lock-ms", "20"],
        ),
        (
            "build-edges (existing edges, seeded)",
            &seeded,
            vec!["build-edges", "-q", "--max-lock-ms", "20"],
        ),
        (
            "build-edges --rebuild",
            &seeded,
            vec!["build-edges", "-q", "--rebuild", "--max-lock-ms", "20"],
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let rep = crash_convergence(&Crash {
            name,
            setup,
            args: &args,
            kills: kills_or(3),
            seed: 0x5eed_0400 + i as u64,
            exclude: &[],
            code: 0,
        });
        assert_eq!(rep.converged, rep.trials);
    }
}

#[test]
#[ignore]
fn build_edges_large_converges_after_many_kills() {
    let dir = tempfile::tempdir().unwrap();
    let seeded = edges_setup(dir.path(), "seeded.db", 30_000, 53, false);
    let kills = std::env::var("RELIABILITY_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    for (i, args) in [
        vec!["build-edges", "-q"],
        vec!["build-edges", "-q", "--rebuild"],
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("{} 30k", args.join(" "));
        let rep = crash_convergence(&Crash {
            name: &name,
            setup: &seeded,
            args: &args,
            kills,
            seed: 0x5eed_0500 + i as u64,
            exclude: &[],
            code: 0,
        });
        assert_eq!(rep.converged, rep.trials);
    }
}

#[test]
fn two_build_edges_at_once_equal_one() {
    let dir = tempfile::tempdir().unwrap();
    let setup = edges_setup(dir.path(), "e.db", 1_000, 54, true);
    for args in [
        vec!["build-edges", "-q", "--max-lock-ms", "20"],
        vec!["build-edges", "-q", "--rebuild", "--max-lock-ms", "20"],
    ] {
        for bypass in [false, true] {
            let rep = overlap(
                &args.join(" "),
                &setup,
                &args,
                0,
                &[],
                &[
                    Duration::ZERO,
                    Duration::from_millis(10),
                    Duration::from_millis(40),
                ],
                bypass,
            );
            assert_eq!(rep.converged, rep.rounds);
        }
    }
}

#[test]
fn build_edges_beside_a_live_writer_equals_a_clean_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let db = edges_setup(dir.path(), "live.db", 3_000, 55, true);
    // The writer upserts existing nodes and observers: the set of node keys
    // decides hop resolution, and a rebuild only equals the incremental
    // result when it is the same (docs/build-edges.md).
    let writer = LiveWriter::start(
        &db,
        WriterOpts {
            reuse_existing: true,
            ..WriterOpts::default()
        },
    );
    let r = run_ok(&["build-edges", "--json", "--max-lock-ms", "50"], &db, 0);
    std::thread::sleep(Duration::from_millis(50));
    let rep = writer.stop();
    let j = json_of(r.stdout.as_bytes());
    println!(
        "live writer during build-edges: {}; build-edges max_lock_hold_ms {}",
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
    // Catch up with what the writer added after the run, then compare the
    // incremental result with a clean rebuild of the same observations.
    run_ok(&["build-edges", "-q"], &db, 0);
    let clean = dir.path().join("clean.db");
    copy_db(&db, &clean);
    run_ok(&["build-edges", "-q", "--rebuild"], &clean, 0);
    let a = Connection::open(&db).unwrap();
    let b = Connection::open(&clean).unwrap();
    let edges_a = dump(&a, "neighbor_edges", None);
    assert!(!edges_a.is_empty());
    let edges_b = dump(&b, "neighbor_edges", None);
    let only_a: Vec<_> = edges_a.iter().filter(|r| !edges_b.contains(r)).collect();
    let only_b: Vec<_> = edges_b.iter().filter(|r| !edges_a.contains(r)).collect();
    assert!(
        only_a.is_empty() && only_b.is_empty(),
        "incremental-only {} rows: {:?}\nrebuild-only {} rows: {:?}",
        only_a.len(),
        &only_a[..only_a.len().min(4)],
        only_b.len(),
        &only_b[..only_b.len().min(4)]
    );
    // The writer's ADVERTs (no hops) produced (originator, observer) edges.
    assert!(
        count(
            &a,
            "SELECT count(*) FROM neighbor_edges WHERE last_seen >= '2026-05-28'"
        ) > 0
            || count(&a, "SELECT count(*) FROM neighbor_edges") > 0
    );
}
