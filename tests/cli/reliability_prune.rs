//! Reliability of `prune` and `vacuum`: crash convergence, overlapping
//! runs (with and without the run lock), a live ingestor-like writer.

use crate::harness::common;
use crate::harness::support;

use std::time::Duration;

use common::*;
use support::*;

fn prune_args(extra: &[&'static str]) -> Vec<&'static str> {
    let mut a = vec![
        "prune",
        "-q",
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
        "--client-days",
        "3",
    ];
    a.extend_from_slice(extra);
    a
}

#[test]
fn prune_converges_after_kills() {
    let dir = tempfile::tempdir().unwrap();
    let setup = synthetic_current(dir.path(), "current.db", 3_000, 21);
    let args = prune_args(&["--max-lock-ms", "20"]);
    let rep = crash_convergence(&Crash {
        name: "prune 3k transmissions",
        setup: &setup,
        args: &args,
        kills: kills_or(3),
        seed: 0x5eed_0101,
        exclude: &[],
        code: 0,
    });
    assert_eq!(rep.converged, rep.trials);
}

#[test]
#[ignore]
fn prune_large_converges_after_many_kills() {
    let dir = tempfile::tempdir().unwrap();
    let setup = synthetic_current(dir.path(), "current.db", 60_000, 22);
    let kills = std::env::var("RELIABILITY_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    for extra in [&[][..], &["--max-lock-ms", "20"][..]] {
        let args = prune_args(extra);
        let rep = crash_convergence(&Crash {
            name: &format!("prune 60k transmissions {extra:?}"),
            setup: &setup,
            args: &args,
            kills,
            seed: 0x5eed_0102,
            exclude: &[],
            code: 0,
        });
        assert_eq!(rep.converged, rep.trials);
    }
}

#[test]
fn two_prunes_at_once_equal_one() {
    let dir = tempfile::tempdir().unwrap();
    let setup = synthetic_current(dir.path(), "current.db", 2_000, 23);
    let args = prune_args(&["--max-lock-ms", "20"]);
    for bypass in [false, true] {
        let rep = overlap(
            "prune 2k transmissions",
            &setup,
            &args,
            0,
            &[],
            &[Duration::ZERO, Duration::from_millis(30)],
            bypass,
        );
        assert_eq!(rep.converged, rep.rounds);
    }
}

#[test]
fn vacuum_converges_after_kills_and_overlaps() {
    let dir = tempfile::tempdir().unwrap();
    let setup = synthetic_current(dir.path(), "current.db", 2_000, 24);
    // Free some pages first so the incremental vacuum has work.
    run_ok(&prune_args(&["--vacuum-pages", "0"]), &setup, 0);
    let rep = crash_convergence(&Crash {
        name: "vacuum (incremental)",
        setup: &setup,
        args: &["vacuum", "-q"],
        kills: kills_or(3),
        seed: 0x5eed_0103,
        exclude: &[],
        code: 0,
    });
    assert_eq!(rep.converged, rep.trials);
    for bypass in [false, true] {
        let rep = overlap(
            "vacuum (incremental)",
            &setup,
            &["vacuum", "-q"],
            0,
            &[],
            &[Duration::ZERO],
            bypass,
        );
        assert_eq!(rep.converged, rep.rounds);
    }
}

/// prune beside the live writer: nothing the writer committed is deleted
/// (its rows are newer than the cutoffs), none of its statements fails, and
/// afterwards a dry run with the same --now finds nothing left to prune.
#[test]
fn prune_beside_a_live_writer_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = synthetic_current(dir.path(), "live.db", 6_000, 25);
    let writer = LiveWriter::start(&db, WriterOpts::default());
    let mut args = prune_args(&["--max-lock-ms", "50"]);
    args.retain(|a| *a != "-q");
    args.push("--json");
    let r = run_ok(&args, &db, 0);
    std::thread::sleep(Duration::from_millis(50));
    let rep = writer.stop();
    let j = json_of(r.stdout.as_bytes());
    println!(
        "live writer during prune: {}; prune max_lock_hold_ms {}",
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
    // Same result as a clean run: a second real run deletes nothing.
    let before = full_state(&db, &[]);
    run_ok(&prune_args(&["--vacuum-pages", "0"]), &db, 0);
    assert_eq!(diff_states(&before, &full_state(&db, &[])), None);
}
