//! Issue 19: build-edges is exactly once also when observations change after
//! they were counted. Interleavings of build-edges ticks, partial and killed
//! backfills, migrate's observer_idx repair (of rows an older writer left
//! as text) and SIGKILLs all end, after the backfills complete and one more
//! tick, with `neighbor_edges` equal (every row and column) to a clean
//! `--rebuild` over the same final observations.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rusqlite::Connection;
use serde_json::Value;

use crate::harness::common::{count, json_of};
use crate::harness::edges_common::{edges, state, EdgeRow};
use crate::harness::support::{copy_db, integrity, kill_at, run, run_ok};

/// A seed-schema database like an old CoreScope's: 30 % of observations
/// without `path_json` (with a `raw_hex` to decode), 30 % of ADVERTs
/// without `from_pubkey`, and every 9th observation with a text
/// `observer_idx`; then `migrate` (which maps the text values back).
fn base(dir: &Path) -> PathBuf {
    let db = dir.join("base.db");
    let out = crate::harness::bin()
        .args(["synth", "-q", "--schema", "seed", "--nodes", "60"])
        .args(["--observers", "8", "--transmissions", "300", "--seed", "19"])
        .args(["--null-path-json", "0.3", "--null-from-pubkey", "0.3"])
        .args(["--end", "2026-05-01T00:00:00Z", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // Half of the ADVERTs without from_pubkey also lack decoded_json.pubKey:
    // build-edges reads no originator for them until the from-pubkey
    // backfill takes the key from raw_hex.
    let c = Connection::open(&db).unwrap();
    let stripped = c
        .execute(
            "UPDATE transmissions SET decoded_json = json_remove(decoded_json, '$.pubKey')
              WHERE payload_type = 4 AND from_pubkey IS NULL AND id % 2 = 0",
            [],
        )
        .unwrap();
    assert!(stripped > 5, "{stripped}");
    drop(c);
    text_observer_idx(&db, 9, 0);
    run_ok(&["migrate", "-q"], &db, 0);
    let c = Connection::open(&db).unwrap();
    assert!(
        count(
            &c,
            "SELECT count(*) FROM observations WHERE path_json IS NULL AND raw_hex <> ''"
        ) > 200
    );
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM observations WHERE typeof(observer_idx) = 'text'"
        ),
        0
    );
    db
}

/// What an older writer left: the observer id as text in `observer_idx` on
/// every observation with `id % k = r` (build-edges then sees no observer)
/// that build-edges has not counted yet (a writer adds rows; it does not
/// rewrite the ones counted).
fn text_observer_idx(db: &Path, k: i64, r: i64) {
    let c = Connection::open(db).unwrap();
    let wm: i64 = state(db, "build_edges.watermark").map_or(0, |w| w.parse().unwrap());
    c.execute(
        "UPDATE observations SET observer_idx = (SELECT id FROM observers WHERE rowid = observations.observer_idx)
          WHERE id % ?1 = ?2 AND id > ?3 AND typeof(observer_idx) = 'integer'",
        [k, r, wm],
    )
    .unwrap();
}

/// A database whose `_migrations` does not record migrate's observer_idx
/// repair (as one an older corescope, without that repair, kept up to
/// date): not ready until `migrate` has mapped the text values, which
/// build-edges may have counted already.
fn forget_repair(db: &Path) {
    let c = Connection::open(db).unwrap();
    c.execute(
        "DELETE FROM _migrations WHERE name = 'corescope_observer_idx_rowid_v1'",
        [],
    )
    .unwrap();
}

#[derive(Debug, Clone, Copy)]
enum Step {
    /// One build-edges timer tick.
    Tick,
    /// A tick killed after this many ms.
    TickKilled(u64),
    /// `backfill path-json from-pubkey` stopped after one batch of 40 rows
    /// per task.
    Backfill,
    /// `backfill path-json` to the end (from-pubkey not yet).
    PathJsonOnly,
    /// The default `backfill`, killed after this many ms.
    BackfillKilled(u64),
    /// An older writer leaves text observer_idx on ids ≡ r (mod k).
    OldWriter(i64, i64),
    /// The database forgets that migrate's repair ran ([`forget_repair`]).
    ForgetRepair,
    /// `migrate` (repairs the text observer_idx).
    Migrate,
    /// `migrate` killed after this many ms.
    MigrateKilled(u64),
}

fn apply(db: &Path, step: Step) -> Option<Value> {
    let ms = Duration::from_millis;
    match step {
        Step::Tick => {
            let r = run(&["build-edges", "--json"], db);
            match r.code {
                Some(0) => return Some(json_of(r.stdout.as_bytes())),
                // Not ready: migrate's repair has not run yet.
                Some(3) => assert!(r.stderr.contains("migrate"), "{}", r.stderr),
                c => panic!("build-edges exit {c:?}: {}", r.stderr),
            }
        }
        Step::TickKilled(t) => {
            kill_at(&["build-edges", "-q", "--max-lock-ms", "20"], db, ms(t));
        }
        Step::Backfill => {
            let args = [
                "backfill",
                "-q",
                "path-json",
                "from-pubkey",
                "--batch-size",
                "40",
                "--max-batches",
                "1",
            ];
            run_ok(&args, db, 0);
        }
        Step::PathJsonOnly => {
            run_ok(&["backfill", "-q", "path-json"], db, 0);
        }
        Step::BackfillKilled(t) => {
            kill_at(&["backfill", "-q", "--max-lock-ms", "20"], db, ms(t));
        }
        Step::OldWriter(k, r) => text_observer_idx(db, k, r),
        Step::ForgetRepair => forget_repair(db),
        Step::Migrate => {
            run_ok(&["migrate", "-q"], db, 0);
        }
        Step::MigrateKilled(t) => {
            kill_at(&["migrate", "-q", "--max-lock-ms", "20"], db, ms(t));
        }
    }
    integrity(db).unwrap_or_else(|e| panic!("after {step:?}: {e}"));
    None
}

/// A clean `--rebuild` of a copy of `db`: the graph of its observations.
fn clean_graph(db: &Path) -> Vec<EdgeRow> {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("clean.db");
    copy_db(db, &copy);
    run_ok(&["build-edges", "--rebuild", "-q"], &copy, 0);
    edges(&copy)
}

/// Runs `steps` on a copy of `base`, then what an operator's timers do at
/// the end (migrate for a repair left unfinished, the backfills to the end,
/// one more tick) and compares with a clean rebuild.
fn interleaving(base: &Path, name: &str, steps: &[Step]) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("run.db");
    copy_db(base, &db);
    let mut repair_forgotten = false;
    for s in steps {
        apply(&db, *s);
        repair_forgotten |= matches!(s, Step::ForgetRepair);
        if !repair_forgotten {
            // build-edges waited for the backfills: nothing it counted changes,
            // so nothing ever marks the graph stale.
            assert_eq!(
                state(&db, "build_edges.needs_rebuild"),
                None,
                "{name}: after {s:?}"
            );
        }
    }
    run_ok(&["migrate", "-q"], &db, 0);
    run_ok(&["backfill", "-q"], &db, 0);
    let last = apply(&db, Step::Tick).unwrap();
    assert_eq!(last["complete"], true, "{name}: {last}");
    assert_eq!(
        last["waiting_for_backfill"],
        serde_json::json!({}),
        "{name}: {last}"
    );
    let out = run_ok(&["check", "--deep", "--json"], &db, 0);
    let chk = json_of(out.stdout.as_bytes());
    assert_eq!(chk["pending_backfills"]["path-json"], 0, "{name}");
    assert_eq!(chk["pending_backfills"]["from-pubkey"], 0, "{name}");
    assert_eq!(
        state(&db, "build_edges.needs_rebuild"),
        None,
        "{name}: the tick rebuilt a stale graph"
    );
    let c = Connection::open(&db).unwrap();
    let max_id = count(&c, "SELECT max(id) FROM observations");
    assert_eq!(
        state(&db, "build_edges.watermark"),
        Some(max_id.to_string()),
        "{name}"
    );
    drop(c);
    let got = edges(&db);
    let want = clean_graph(&db);
    assert!(!want.is_empty());
    if got != want {
        let only_got: Vec<_> = got.iter().filter(|e| !want.contains(e)).take(5).collect();
        let only_want: Vec<_> = want.iter().filter(|e| !got.contains(e)).take(5).collect();
        panic!(
            "{name}: {} edges, a clean rebuild has {}; only here: {only_got:?}; only in the clean build: {only_want:?}",
            got.len(),
            want.len()
        );
    }
}

#[test]
fn a_tick_before_the_backfill_waits_and_the_result_equals_a_clean_build() {
    let dir = tempfile::tempdir().unwrap();
    let base = base(dir.path());
    let db = dir.path().join("one.db");
    copy_db(&base, &db);
    let first = apply(&db, Step::Tick).unwrap();
    // It stopped before the first observation the backfills will change.
    let at = first["waiting_at_id"].as_i64().unwrap();
    assert_eq!(first["watermark"].as_i64().unwrap_or(0), at - 1, "{first}");
    assert!(first["waiting_for_backfill"]["path-json"].as_i64().unwrap() > 200);
    let c = Connection::open(&db).unwrap();
    let first_null = count(
        &c,
        "SELECT min(o.id) FROM observations o JOIN transmissions t ON t.id = o.transmission_id
          WHERE (o.path_json IS NULL AND o.raw_hex <> '' AND t.payload_type <> 9)
             OR (t.payload_type = 4 AND t.from_pubkey IS NULL AND json_extract(t.decoded_json, '$.pubKey') IS NULL)",
    );
    assert_eq!(at, first_null);
    drop(c);
    // check names the wait and the command that ends it.
    let out = run_ok(&["check", "--deep", "--json"], &db, 0);
    let chk = json_of(out.stdout.as_bytes());
    let w = chk["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["code"] == "edges_waiting_for_backfill")
        .unwrap_or_else(|| panic!("{chk}"))
        .to_string();
    assert!(
        w.contains("corescope backfill from-pubkey path-json") && w.contains(" for from-pubkey"),
        "{w}"
    );
    interleaving(&base, "tick before backfill", &[Step::Tick]);
}

#[test]
fn ticks_between_partial_backfills() {
    let dir = tempfile::tempdir().unwrap();
    let base = base(dir.path());
    use Step::*;
    interleaving(
        &base,
        "ticks between partial backfills",
        &[
            Tick, Backfill, Tick, Backfill, Tick, Backfill, Backfill, Tick,
        ],
    );
}

#[test]
fn a_tick_waits_for_adverts_whose_key_only_raw_hex_has() {
    let dir = tempfile::tempdir().unwrap();
    let base = base(dir.path());
    let db = dir.path().join("fp.db");
    copy_db(&base, &db);
    apply(&db, Step::PathJsonOnly);
    let first = apply(&db, Step::Tick).unwrap();
    assert!(
        first["waiting_for_backfill"]["from-pubkey"]
            .as_i64()
            .unwrap()
            > 0,
        "{first}"
    );
    assert!(first["waiting_for_backfill"].get("path-json").is_none());
    use Step::*;
    interleaving(
        &base,
        "path-json first, from-pubkey later",
        &[PathJsonOnly, Tick, Backfill, Tick],
    );
}

#[test]
fn kills_during_ticks_backfills_and_migrate() {
    let dir = tempfile::tempdir().unwrap();
    let base = base(dir.path());
    use Step::*;
    for (i, t) in [5u64, 20, 45, 90].into_iter().enumerate() {
        interleaving(
            &base,
            &format!("kills at {t} ms"),
            &[
                Backfill,
                TickKilled(t),
                Tick,
                BackfillKilled(t),
                Tick,
                OldWriter(4, i as i64),
                TickKilled(t),
                Tick,
                ForgetRepair,
                MigrateKilled(t),
                Tick,
                BackfillKilled(2 * t),
                TickKilled(t),
            ],
        );
    }
}

#[test]
fn observer_idx_repair_below_the_watermark_triggers_an_automatic_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let base = base(dir.path());
    let db = dir.path().join("repair.db");
    copy_db(&base, &db);
    run_ok(&["backfill", "-q"], &db, 0);
    // An older writer left text observer_idx; the tick counts those rows
    // as heard by no observer.
    text_observer_idx(&db, 5, 1);
    let first = apply(&db, Step::Tick).unwrap();
    let wm = first["watermark"].as_i64().unwrap();
    let before = edges(&db);
    assert_eq!(before, clean_graph(&db));
    // The database comes from a corescope without the repair: migrate maps
    // the text values of rows the graph has counted.
    forget_repair(&db);
    run_ok(&["migrate", "-q"], &db, 0);
    let reasons = state(&db, "build_edges.needs_rebuild").expect("marked stale");
    assert!(reasons.contains("observer_idx"), "{reasons}");
    assert_eq!(
        edges(&db),
        before,
        "migrate itself does not touch the graph"
    );
    let out = run_ok(&["check", "--deep", "--json"], &db, 0);
    let chk = json_of(out.stdout.as_bytes());
    let w = chk["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["code"] == "edges_need_rebuild")
        .unwrap_or_else(|| panic!("{chk}"))
        .to_string();
    assert!(
        w.contains("observer_idx") && w.contains("next `corescope build-edges`"),
        "{w}"
    );
    // The next plain tick rebuilds and says why.
    let r = run_ok(&["build-edges", "--json"], &db, 0);
    let rep = json_of(r.stdout.as_bytes());
    assert_eq!(rep["mode"], "rebuild", "{rep}");
    assert_eq!(rep["automatic_rebuild"], true);
    assert_eq!(rep["rebuild"]["swapped"], true);
    assert!(rep["stale_reasons"][0]
        .as_str()
        .unwrap()
        .contains("observer_idx"));
    assert_eq!(rep["watermark"].as_i64(), Some(wm));
    assert_eq!(state(&db, "build_edges.needs_rebuild"), None);
    let r = run(&["build-edges"], &db);
    assert!(r.stdout.contains("build-edges: scanned 0"), "{}", r.stdout);
    assert_ne!(edges(&db), before, "the mapped observers count now");
    assert_eq!(edges(&db), clean_graph(&db));
}

#[test]
fn a_killed_automatic_rebuild_is_finished_by_the_next_tick() {
    let dir = tempfile::tempdir().unwrap();
    let base = base(dir.path());
    use Step::*;
    for t in [3u64, 15, 40] {
        interleaving(
            &base,
            &format!("automatic rebuild killed at {t} ms"),
            &[
                Tick,
                Backfill,
                Tick,
                OldWriter(3, 0),
                Tick,
                ForgetRepair,
                Migrate,
                TickKilled(t),
                TickKilled(t / 2),
                Tick,
            ],
        );
    }
}

#[test]
fn backfill_reaching_rows_an_older_run_had_counted_marks_the_graph_stale() {
    // A watermark set without the wait (an older corescope, or a `--reset`):
    // the backfill cursors claim every row visited, the tick counts the NULL
    // path_json rows as heard directly, then `--reset path-json` fills them.
    let dir = tempfile::tempdir().unwrap();
    let base = base(dir.path());
    let db = dir.path().join("reset.db");
    copy_db(&base, &db);
    run_ok(&["backfill", "-q", "from-pubkey"], &db, 0);
    let c = Connection::open(&db).unwrap();
    c.execute_batch(
        "INSERT OR REPLACE INTO _corescope_state (key, value, updated_at)
           SELECT 'backfill.path-json.cursor', max(id), 'x' FROM observations;",
    )
    .unwrap();
    drop(c);
    let first = apply(&db, Step::Tick).unwrap();
    assert_eq!(first["waiting_for_backfill"], serde_json::json!({}));
    run_ok(
        &["backfill", "-q", "path-json", "--reset", "path-json"],
        &db,
        0,
    );
    let reasons = state(&db, "build_edges.needs_rebuild").expect("marked stale");
    assert!(reasons.contains("path-json"), "{reasons}");
    let rep = apply(&db, Step::Tick).unwrap();
    assert_eq!(rep["automatic_rebuild"], true, "{rep}");
    assert_eq!(edges(&db), clean_graph(&db));
}

#[test]
fn sampled_interleavings() {
    let dir = tempfile::tempdir().unwrap();
    let base = base(dir.path());
    let mut rng = ChaCha8Rng::seed_from_u64(19);
    for round in 0..3 {
        let steps: Vec<Step> = (0..8)
            .map(|_| match rng.gen_range(0..8) {
                0 | 1 => Step::Tick,
                2 => Step::TickKilled(rng.gen_range(2..60)),
                3 => Step::Backfill,
                4 => Step::BackfillKilled(rng.gen_range(2..60)),
                5 => Step::OldWriter(rng.gen_range(3..7), rng.gen_range(0..3)),
                6 => Step::ForgetRepair,
                _ => Step::MigrateKilled(rng.gen_range(2..60)),
            })
            .collect();
        interleaving(&base, &format!("sample {round}: {steps:?}"), &steps);
    }
}

#[test]
fn with_nothing_pending_a_tick_scans_only_the_new_rows() {
    let dir = tempfile::tempdir().unwrap();
    let base = base(dir.path());
    let db = dir.path().join("new.db");
    copy_db(&base, &db);
    run_ok(&["backfill", "-q"], &db, 0);
    let first = apply(&db, Step::Tick).unwrap();
    let total = {
        let c = Connection::open(&db).unwrap();
        count(&c, "SELECT count(*) FROM observations")
    };
    assert_eq!(first["observations_scanned"].as_i64(), Some(total));
    // 25 new observations as the ingestor writes them (path_json filled).
    let c = Connection::open(&db).unwrap();
    c.execute_batch(
        "INSERT INTO observations (transmission_id, observer_idx, path_json, raw_hex, timestamp)
           SELECT transmission_id, observer_idx, '[\"ZZ\"]', raw_hex, timestamp + 1
             FROM observations WHERE path_json <> '[\"ZZ\"]' ORDER BY id LIMIT 25",
    )
    .unwrap();
    drop(c);
    let second = apply(&db, Step::Tick).unwrap();
    assert_eq!(second["observations_scanned"], 25, "{second}");
    assert_eq!(second["waiting_for_backfill"], serde_json::json!({}));
    assert_eq!(second["watermark"].as_i64(), Some(total + 25));
    let third = apply(&db, Step::Tick).unwrap();
    assert_eq!(third["observations_scanned"], 0);
}
