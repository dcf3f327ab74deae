//! Reliability of `migrate`: crash convergence, overlapping runs, and a
//! live ingestor-like writer while it runs.

use crate::harness::common;
use crate::harness::support;

use std::time::Duration;

use common::*;
use rusqlite::Connection;
use support::*;

const MIGRATE: &[&str] = &["migrate", "-q"];

fn kills() -> usize {
    std::env::var("RELIABILITY_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12)
}

#[test]
fn migrate_legacy_fixture_converges_after_kills() {
    let dir = tempfile::tempdir().unwrap();
    let setup = legacy_copy(dir.path());
    let rep = crash_convergence(&Crash {
        name: "migrate legacy fixture",
        setup: &setup,
        args: MIGRATE,
        kills: kills_or(4),
        seed: 0x5eed_0001,
        exclude: &[],
        code: 0,
    });
    assert_eq!(rep.converged, rep.trials);
}

#[test]
fn migrate_synthetic_legacy_converges_after_kills() {
    let dir = tempfile::tempdir().unwrap();
    let setup = dir.path().join("synthetic.db");
    synthetic_legacy(&setup, 10_000, 7);
    // Smaller batches (--max-lock-ms 50) so a kill lands inside a data step
    // with some batches committed and others not.
    let rep = crash_convergence(&Crash {
        name: "migrate synthetic legacy 10k observations",
        setup: &setup,
        args: &["migrate", "-q", "--max-lock-ms", "50"],
        kills: kills_or(3),
        seed: 0x5eed_0002,
        exclude: &[],
        code: 0,
    });
    assert_eq!(rep.converged, rep.trials);
}

/// Benchmark variant: RELIABILITY_KILLS (default 12) kills on 200 000 observations.
#[test]
#[ignore]
fn migrate_large_converges_after_many_kills() {
    let dir = tempfile::tempdir().unwrap();
    let setup = dir.path().join("synthetic.db");
    synthetic_legacy(&setup, 200_000, 9);
    for (name, args) in [
        ("migrate 200k default batches", vec!["migrate", "-q"]),
        (
            "migrate 200k --max-lock-ms 20",
            vec!["migrate", "-q", "--max-lock-ms", "20"],
        ),
    ] {
        let rep = crash_convergence(&Crash {
            name,
            setup: &setup,
            args: &args,
            kills: kills(),
            seed: 0x5eed_0003,
            exclude: &[],
            code: 0,
        });
        assert_eq!(rep.converged, rep.trials);
    }
    let legacy = legacy_copy(dir.path());
    let rep = crash_convergence(&Crash {
        name: "migrate legacy fixture (many kills)",
        setup: &legacy,
        args: MIGRATE,
        kills: kills(),
        seed: 0x5eed_0004,
        exclude: &[],
        code: 0,
    });
    assert_eq!(rep.converged, rep.trials);
}

#[test]
fn two_migrates_at_once_equal_one() {
    let dir = tempfile::tempdir().unwrap();
    let setup = dir.path().join("synthetic.db");
    synthetic_legacy(&setup, 4_000, 11);
    let legacy = legacy_copy(dir.path());
    for bypass in [false, true] {
        let rep = overlap(
            "migrate synthetic legacy 4k",
            &setup,
            &["migrate", "-q", "--max-lock-ms", "20"],
            0,
            &[],
            &[
                Duration::ZERO,
                Duration::from_millis(5),
                Duration::from_millis(15),
                Duration::from_millis(40),
                Duration::from_millis(90),
            ],
            bypass,
        );
        assert_eq!(rep.converged, rep.rounds);
        let rep = overlap(
            "migrate legacy fixture",
            &legacy,
            MIGRATE,
            0,
            &[],
            &[Duration::ZERO, Duration::from_millis(5)],
            bypass,
        );
        assert_eq!(rep.converged, rep.rounds);
    }
}

/// The live writer keeps inserting (as the ingestor would) while migrate
/// upgrades a legacy-shaped database with 20 000 observations: none of its
/// statements fails, every row it committed exists, and the migrated
/// advert counts still equal a clean recomputation (they include the
/// writer's ADVERTs).
#[test]
fn migrate_beside_a_live_writer_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("live.db");
    synthetic_legacy(&db, 20_000, 13);
    let writer = LiveWriter::start(&db, WriterOpts::default());
    let r = run_ok(&["migrate", "--json", "--max-lock-ms", "50"], &db, 0);
    let j = json_of(r.stdout.as_bytes());
    std::thread::sleep(Duration::from_millis(50));
    let rep = writer.stop();
    println!(
        "live writer during migrate: {}; migrate max_lock_hold_ms {}",
        rep.summary(),
        j["max_lock_hold_ms"]
    );
    assert!(
        rep.failures.is_empty(),
        "writer failures: {:?}",
        rep.failures
    );
    assert!(rep.packets > 0);
    let missing = verify_writer(&db, &rep);
    assert!(missing.is_empty(), "lost rows: {missing:?}");
    integrity(&db).unwrap();
    // Ready, and a second migrate (writer stopped) recomputes nothing new.
    run_ok(&["check", "-q"], &db, 0);
    let c = Connection::open(&db).unwrap();
    let wrong = count(
        &c,
        "SELECT count(*) FROM nodes n WHERE advert_count != (SELECT count(*) FROM transmissions t WHERE t.payload_type = 4
           AND lower(COALESCE(NULLIF(t.from_pubkey, ''), json_extract(t.decoded_json, '$.pubKey'))) = n.public_key)",
    );
    assert_eq!(wrong, 0, "advert_count differs from a clean recomputation");
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM observations WHERE typeof(observer_idx) = 'text'"
        ),
        0
    );
}

/// Benchmark variant: the live writer at 200 packets/s beside migrate on
/// 200 000 observations with the default lock budget; prints max latency.
#[test]
#[ignore]
fn migrate_large_beside_a_live_writer() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("live.db");
    synthetic_legacy(&db, 200_000, 17);
    let writer = LiveWriter::start(&db, WriterOpts::default());
    let r = run_ok(&["migrate", "--json"], &db, 0);
    let rep = writer.stop();
    println!(
        "live writer during migrate (200k): {}; migrate: {}",
        rep.summary(),
        r.stdout.trim()
    );
    assert!(rep.failures.is_empty(), "{:?}", rep.failures);
    assert!(verify_writer(&db, &rep).is_empty());
}

/// Helper for manual runs: write the synthetic legacy database to
/// $SYNTH_OUT ($SYNTH_OBS observations, default 20 000).
#[test]
#[ignore]
fn write_synthetic_legacy() {
    if let Ok(out) = std::env::var("SYNTH_OUT") {
        let n = std::env::var("SYNTH_OBS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20_000);
        synthetic_legacy(std::path::Path::new(&out), n, 7);
    }
}

/// Regression (found by the kill suite): killed after the last batch of
/// corescope's own observer_idx repair but before its record, the re-run saw
/// no work left and never recorded it, so `_migrations` differed from an
/// uninterrupted run. The first batch now leaves a "started" key that keeps
/// the migration pending until it is recorded.
#[test]
fn own_migration_interrupted_before_its_record_is_recorded_by_the_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let reference = legacy_copy(dir.path());
    run_ok(MIGRATE, &reference, 0);
    let want = full_state(&reference, &[]);
    let name = "corescope_observer_idx_rowid_v1";
    let c = Connection::open(&reference).unwrap();
    assert_eq!(
        count(
            &c,
            &format!("SELECT count(*) FROM _migrations WHERE name = '{name}'")
        ),
        1
    );
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM _corescope_state WHERE key LIKE 'migrate.%'"
        ),
        0
    );
    // The state a kill between the last batch and the record leaves.
    c.execute_batch(&format!(
        "DELETE FROM _migrations WHERE name = '{name}';
         INSERT INTO _corescope_state (key, value, updated_at) VALUES ('migrate.{name}.started', '1', '2026-01-01T00:00:00Z');"
    ))
    .unwrap();
    drop(c);
    run_ok(&["check", "-q"], &reference, 3);
    run_ok(MIGRATE, &reference, 0);
    assert_eq!(diff_states(&want, &full_state(&reference, &[])), None);
}
