//! Online `migrate`: index builds on large tables through a shadow table
//! beside a live ingestor, equal to an `--offline` migrate plus the
//! writer's rows; kills, `--max-seconds`, `check`'s warning, `--dry-run`,
//! the disk-space check.

use crate::harness::common;
use crate::harness::support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rusqlite::{params, Connection};
use support::*;

/// Forces the online path on small test databases (default: 500 rows per
/// ms of lock budget).
const FORCE: &str = "--online-min-rows";

/// A database of the seed schema (what `migrate` upgrades from in the
/// benchmarks): `transmissions` transmissions, about 4 observations each.
fn seed_db(dir: &Path, transmissions: usize) -> PathBuf {
    let db = dir.join("seed.db");
    run_ok(
        &[
            "synth",
            "--schema",
            "seed",
            "--transmissions",
            &transmissions.to_string(),
            "--end",
            "2026-05-01T00:00:00Z",
        ],
        &db,
        0,
    );
    Connection::open(&db)
        .unwrap()
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))
        .unwrap();
    db
}

/// The ingestor's observation insert (an UPSERT on the dedup key).
const OBS_UPSERT: &str = "INSERT INTO observations (transmission_id, observer_idx, direction, snr, rssi, score, path_json, timestamp)
  VALUES (?1, ?2, 'rx', ?3, ?4, ?5, ?6, ?7)
  ON CONFLICT(transmission_id, observer_idx, COALESCE(path_json, '')) DO UPDATE SET
    snr = COALESCE(excluded.snr, snr), rssi = COALESCE(excluded.rssi, rssi),
    score = COALESCE(excluded.score, score), raw_hex = COALESCE(excluded.raw_hex, raw_hex),
    resolved_path = COALESCE(excluded.resolved_path, resolved_path)";

const TX_INSERT: &str = "INSERT INTO transmissions (raw_hex, hash, first_seen, route_type, payload_type, payload_version, decoded_json)
  VALUES (?1, ?2, ?3, 1, 2, 1, '{\"type\":\"REQ\"}')";

/// One write of the simulated ingestor, replayable on another database.
#[derive(Debug, Clone)]
enum Op {
    /// A new packet: transmission + its observation (UPSERT, insert path).
    Packet {
        hash: String,
        observer: i64,
        ts: i64,
    },
    /// The UPSERT on an existing key (update path): new snr/rssi.
    Again {
        tx: i64,
        observer: i64,
        path: Option<String>,
        snr: f64,
    },
    /// Retention-like delete of one observation.
    Delete { id: i64 },
}

/// Apply `op` in one `BEGIN IMMEDIATE` transaction; the ids it inserted.
fn apply(c: &Connection, op: &Op) -> rusqlite::Result<Vec<i64>> {
    c.execute_batch("BEGIN IMMEDIATE")?;
    let r = (|| -> rusqlite::Result<Vec<i64>> {
        match op {
            Op::Packet { hash, observer, ts } => {
                c.prepare_cached(TX_INSERT)?.execute(params![
                    format!("0200{hash}"),
                    hash,
                    "2026-05-01T00:00:00Z"
                ])?;
                let tx = c.last_insert_rowid();
                c.prepare_cached(OBS_UPSERT)?
                    .execute(params![tx, observer, 4.5, -100.0, 1, "[]", ts])?;
                Ok(vec![tx, c.last_insert_rowid()])
            }
            Op::Again {
                tx,
                observer,
                path,
                snr,
            } => {
                c.prepare_cached(OBS_UPSERT)?.execute(params![
                    tx,
                    observer,
                    snr,
                    -snr,
                    Option::<i64>::None,
                    path,
                    1
                ])?;
                Ok(vec![])
            }
            Op::Delete { id } => {
                c.execute("DELETE FROM observations WHERE id = ?1", [id])?;
                Ok(vec![])
            }
        }
    })();
    match r {
        Ok(v) => {
            c.execute_batch("COMMIT")?;
            Ok(v)
        }
        Err(e) => {
            let _ = c.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

fn writer_conn(db: &Path) -> Connection {
    let c = Connection::open(db).unwrap();
    c.busy_timeout(Duration::from_millis(5000)).unwrap();
    c.execute_batch("PRAGMA foreign_keys = ON").unwrap();
    c
}

/// The writes of one test, decided up front from the database: new
/// packets, UPSERTs of existing keys spread over the whole id range (rows
/// before and after the copy cursor), deletes of existing rows.
fn script(db: &Path, n: usize) -> Vec<Op> {
    let c = Connection::open(db).unwrap();
    let keys: Vec<(i64, i64, i64, Option<String>)> = {
        let mut st = c
            .prepare(
                "SELECT id, transmission_id, observer_idx, path_json FROM observations
                 WHERE observer_idx IS NOT NULL AND id % 37 = 0 ORDER BY (id * 7919) % 1009",
            )
            .unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    };
    let observers: Vec<i64> = {
        let mut st = c
            .prepare("SELECT rowid FROM observers ORDER BY rowid")
            .unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    };
    assert!(keys.len() > 20 && !observers.is_empty());
    let mut ops = Vec::new();
    for i in 0..n {
        let (id, tx, observer, path) = keys[i % keys.len()].clone();
        ops.push(match i % 4 {
            1 => Op::Again {
                tx,
                observer,
                path,
                snr: 10.0 + i as f64,
            },
            3 if i % 12 == 3 => Op::Delete { id },
            _ => Op::Packet {
                hash: format!("{:016x}", 0xfeed_0000_u64 + i as u64),
                observer: observers[i % observers.len()],
                ts: 1_777_600_000 + i as i64,
            },
        });
    }
    ops
}

struct Writer {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<(usize, Vec<String>, Duration)>,
}

/// Run `ops` at 100 per second on their own connection until stopped (or
/// all done): (ops applied, failures, longest op).
fn start_writer(db: &Path, ops: Vec<Op>) -> Writer {
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let path = db.to_path_buf();
    let handle = std::thread::spawn(move || {
        let c = writer_conn(&path);
        let t0 = Instant::now();
        let mut failures = Vec::new();
        let mut longest = Duration::ZERO;
        let mut done = 0;
        for (i, op) in ops.iter().enumerate() {
            if s2.load(Ordering::SeqCst) {
                break;
            }
            let due = t0 + Duration::from_millis(10) * i as u32;
            if let Some(w) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(w);
            }
            let t = Instant::now();
            if let Err(e) = apply(&c, op) {
                failures.push(format!("{op:?}: {e}"));
            }
            longest = longest.max(t.elapsed());
            done += 1;
        }
        (done, failures, longest)
    });
    Writer { stop, handle }
}

/// Every object, every row (by rowid), `sqlite_sequence`, and the rows of
/// `packets_v`, as comparable text.
fn snapshot(db: &Path) -> Vec<String> {
    let c = Connection::open(db).unwrap();
    let mut out = Vec::new();
    let q = |sql: &str, out: &mut Vec<String>| {
        let mut st = c.prepare(sql).unwrap();
        let n = st.column_count();
        let rows = st
            .query_map([], |r| {
                Ok((0..n)
                    .map(|i| format!("{:?}", r.get::<_, rusqlite::types::Value>(i).unwrap()))
                    .collect::<Vec<_>>()
                    .join("|"))
            })
            .unwrap();
        for r in rows {
            out.push(format!("{sql} => {}", r.unwrap()));
        }
    };
    q(
        "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE '_corescope_state%' ORDER BY type, name",
        &mut out,
    );
    q(
        "SELECT name, seq FROM sqlite_sequence ORDER BY name",
        &mut out,
    );
    for t in ["observations", "transmissions", "observers", "nodes"] {
        let cols: Vec<String> = columns(&c, t)
            .into_iter()
            // last_seen: filled by the tx_last_seen backfill from whichever
            // observations existed when it ran; created_at: the clock of
            // the insert (timing, not the build).
            .filter(|x| !(t == "transmissions" && (x == "last_seen" || x == "created_at")))
            .map(|x| format!("\"{x}\""))
            .collect();
        q(
            &format!("SELECT rowid, {} FROM {t} ORDER BY rowid", cols.join(", ")),
            &mut out,
        );
    }
    q(
        "SELECT id, raw_hex, timestamp, observer_id, observer_name, direction, snr, rssi, score, hash, route_type,
                payload_type, payload_version, path_json, decoded_json FROM packets_v ORDER BY id",
        &mut out,
    );
    out
}

fn first_difference(a: &[String], b: &[String]) -> Option<String> {
    if a == b {
        return None;
    }
    let i = a
        .iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    Some(format!(
        "{} vs {} lines; first difference at {i}:\n  online:  {:?}\n  offline: {:?}",
        a.len(),
        b.len(),
        a.get(i),
        b.get(i)
    ))
}

/// No object of an online build is left.
fn no_leftovers(db: &Path) {
    let c = Connection::open(db).unwrap();
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM sqlite_master WHERE name LIKE '\\_corescope\\_online%' ESCAPE '\\'"
        ),
        0
    );
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM _corescope_state WHERE key LIKE 'online_build.%'"
        ),
        0
    );
}

/// The acceptance test: the ingestor's UPSERT at 100/s during an online
/// migrate from the seed schema: no failure, nothing lost, every lock hold
/// inside the budget, and the result equals an `--offline` migrate of the
/// same database followed by the same writes.
#[test]
fn online_migrate_beside_the_ingestors_upsert_equals_offline() {
    let dir = tempfile::tempdir().unwrap();
    let seed = seed_db(dir.path(), 1500);
    let online = dir.path().join("online.db");
    let offline = dir.path().join("offline.db");
    copy_db(&seed, &online);
    copy_db(&seed, &offline);
    let ops = script(&seed, 3000);

    let w = start_writer(&online, ops.clone());
    std::thread::sleep(Duration::from_millis(100));
    let r = run_ok(
        &[
            "migrate",
            "--json",
            "-vv",
            "--max-lock-ms",
            "200",
            FORCE,
            "1000",
        ],
        &online,
        0,
    );
    let lines: Vec<&str> = r.stderr.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        if let Some(v) = l.split("held the lock ").nth(1) {
            let ms: f64 = v.split(' ').next().unwrap().parse().unwrap();
            if ms > 100.0 {
                eprintln!("LONG {ms}: {}", lines[i.saturating_sub(3)..i].join("\n"));
            }
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    w.stop.store(true, Ordering::SeqCst);
    let (done, failures, longest) = w.handle.join().unwrap();
    let j = json_of(r.stdout.as_bytes());
    println!(
        "online migrate: {} writes beside it, longest {longest:?}; max_lock_hold_ms {}; builds {}",
        done, j["max_lock_hold_ms"], j["online_builds"]
    );
    assert!(failures.is_empty(), "writer failures: {failures:?}");
    assert!(done > 20, "the writer ran during migrate ({done} writes)");
    let hold = j["max_lock_hold_ms"].as_f64().unwrap();
    assert!(hold <= 200.0, "max_lock_hold_ms {hold}");
    let tables: Vec<&str> = j["online_builds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["table"].as_str().unwrap())
        .collect();
    assert!(
        tables.contains(&"observations") && tables.contains(&"transmissions"),
        "{tables:?}"
    );
    assert_eq!(j["complete"], true);
    integrity(&online).unwrap();
    no_leftovers(&online);

    // Offline migrate of the same database, then the same writes in order.
    let r = run_ok(&["migrate", "--json", "--offline"], &offline, 0);
    assert!(json_of(r.stdout.as_bytes()).get("online_builds").is_none());
    let c = writer_conn(&offline);
    for op in &ops[..done] {
        apply(&c, op).unwrap();
    }
    drop(c);
    if let Some(d) = first_difference(&snapshot(&online), &snapshot(&offline)) {
        panic!("online and offline migrate differ: {d}");
    }
    run_ok(&["check", "-q"], &online, 0);
    // The writer's UPSERTs of existing keys are in the final table.
    let c = Connection::open(&online).unwrap();
    for op in &ops[..done] {
        if let Op::Again {
            tx, observer, path, ..
        } = op
        {
            let n = c
                .query_row(
                    "SELECT count(*) FROM observations WHERE transmission_id = ?1 AND observer_idx = ?2 AND COALESCE(path_json, '') = COALESCE(?3, '')",
                    params![tx, observer, path],
                    |r| r.get::<_, i64>(0),
                )
                .unwrap();
            assert!(n <= 1);
        }
    }
    // A second run has nothing to do and leaves the file as it is.
    let before = sha256(&online);
    run_ok(&["migrate", "-q", FORCE, "1000"], &online, 0);
    assert_eq!(sha256(&online), before);
}

/// A database of the latest schema that lacks only `idx_observations_tx_ts`.
fn one_index_missing(dir: &Path) -> PathBuf {
    let db = dir.join("latest.db");
    run_ok(
        &[
            "synth",
            "--schema",
            "latest",
            "--transmissions",
            "800",
            "--end",
            "2026-05-01T00:00:00Z",
        ],
        &db,
        0,
    );
    let c = Connection::open(&db).unwrap();
    c.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))
        .unwrap();
    c.execute_batch("DROP INDEX idx_observations_tx_ts")
        .unwrap();
    db
}

/// `--max-seconds 0` stops right after the build's first transaction:
/// `complete: false`, exit 0, `check` warns `online_build_pending`; writes
/// in between are mirrored; the next run finishes, equal to an offline
/// migrate with the same writes.
#[test]
fn a_stopped_build_is_reported_by_check_and_finished_by_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let db = one_index_missing(dir.path());
    let offline = dir.path().join("offline.db");
    copy_db(&db, &offline);
    let ops = script(&db, 40);

    let r = run_ok(
        &["migrate", "--json", "--max-seconds", "0", FORCE, "100"],
        &db,
        0,
    );
    let j = json_of(r.stdout.as_bytes());
    assert_eq!(j["complete"], false);
    assert_eq!(j["online_builds"][0]["table"], "observations");
    assert_eq!(j["online_builds"][0]["complete"], false);
    let c = Connection::open(&db).unwrap();
    assert_eq!(
        count(&c, "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'observations'"),
        3
    );
    drop(c);
    integrity(&db).unwrap();
    // Not ready yet (the index is missing), and the pending build is named.
    let ck = run_ok(&["check", "--json"], &db, 3);
    let cj = json_of(ck.stdout.as_bytes());
    let codes: Vec<&str> = cj["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["code"].as_str().unwrap())
        .collect();
    assert!(codes.contains(&"online_build_pending"), "{codes:?}");

    // The ingestor's writes while the build is pending.
    let c = writer_conn(&db);
    for op in &ops {
        apply(&c, op).unwrap();
    }
    drop(c);
    // Partway: a few copy batches under a tiny deadline, then the rest.
    let r = run_ok(&["migrate", "--json", FORCE, "100"], &db, 0);
    let j = json_of(r.stdout.as_bytes());
    assert_eq!(j["complete"], true);
    no_leftovers(&db);
    let ck = run_ok(&["check", "--json"], &db, 0);
    assert!(!ck.stdout.contains("online_build_pending"));

    run_ok(&["migrate", "-q", "--offline"], &offline, 0);
    let c = writer_conn(&offline);
    for op in &ops {
        apply(&c, op).unwrap();
    }
    drop(c);
    if let Some(d) = first_difference(&snapshot(&db), &snapshot(&offline)) {
        panic!("resumed online build differs from offline: {d}");
    }
}

/// A pending build that is no longer needed (the index was created by an
/// offline run) is removed by that run, without a trace.
#[test]
fn an_offline_run_removes_a_pending_build() {
    let dir = tempfile::tempdir().unwrap();
    let db = one_index_missing(dir.path());
    run_ok(
        &["migrate", "-q", "--max-seconds", "0", FORCE, "100"],
        &db,
        0,
    );
    let r = run_ok(&["migrate", "--json", "--offline"], &db, 0);
    assert_eq!(json_of(r.stdout.as_bytes())["complete"], true);
    no_leftovers(&db);
    let c = Connection::open(&db).unwrap();
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM sqlite_master WHERE type = 'trigger'"
        ),
        0
    );
    integrity(&db).unwrap();
}

#[test]
fn dry_run_names_the_online_steps_with_row_counts() {
    let dir = tempfile::tempdir().unwrap();
    let db = one_index_missing(dir.path());
    let rows = count(
        &Connection::open(&db).unwrap(),
        "SELECT count(*) FROM observations",
    );
    let before = sha256(&db);
    let j = json_of(
        run_ok(&["migrate", "--json", "--dry-run", FORCE, "100"], &db, 0)
            .stdout
            .as_bytes(),
    );
    let step = &j["planned"][0];
    assert_eq!(step["name"], "index:idx_observations_tx_ts");
    assert_eq!(step["online"], true);
    assert_eq!(step["rows_estimated"], rows);
    assert!(step["what"].as_str().unwrap().contains("online"));
    // Offline, or a small table under the default threshold: direct.
    for args in [
        &["migrate", "--json", "--dry-run", "--offline", FORCE, "100"][..],
        &["migrate", "--json", "--dry-run"][..],
    ] {
        let j = json_of(run_ok(args, &db, 0).stdout.as_bytes());
        assert!(j["planned"][0].get("online").is_none(), "{args:?}: {j}");
        assert!(j["planned"][0]["rows_estimated"].is_null());
    }
    assert_eq!(sha256(&db), before);
}

#[test]
fn too_little_disk_space_is_refused_before_anything_changes() {
    let dir = tempfile::tempdir().unwrap();
    let db = one_index_missing(dir.path());
    let before = sha256(&db);
    let out = crate::harness::Corescope::new()
        .db(&db)
        .args(["migrate", FORCE, "100"])
        .env("CORESCOPE_TEST_FREE_BYTES", "4096")
        .expect_code(1)
        .stderr();
    assert!(out.contains("not enough free disk space"), "{out}");
    assert!(out.contains("MiB"), "{out}");
    assert!(out.contains("--offline"), "{out}");
    assert_eq!(sha256(&db), before);
}

/// kill -9 at random instants (and the chain of all of them on one copy),
/// then one complete run: the same database as an uninterrupted run.
#[test]
fn online_migrate_converges_after_kills() {
    let dir = tempfile::tempdir().unwrap();
    let seed = seed_db(dir.path(), 600);
    let rep = crash_convergence(&Crash {
        name: "online migrate from seed",
        setup: &seed,
        args: &["migrate", "-q", "--max-lock-ms", "20", FORCE, "500"],
        kills: kills_or(6),
        seed: 0x0411_0015,
        exclude: &[],
        code: 0,
    });
    assert_eq!(rep.converged, rep.trials);
}

/// Indexes with a definition that breaks CoreScope (a UNIQUE dedup index on
/// the wrong key, a partial index without its WHERE) are replaced through
/// the online path on a large table: the result equals an `--offline`
/// migrate (direct DROP + CREATE), and the ingestor's UPSERT works.
#[test]
fn wrong_indexes_are_repaired_online_like_offline() {
    let dir = tempfile::tempdir().unwrap();
    let db = one_index_missing(dir.path());
    Connection::open(&db)
        .unwrap()
        .execute_batch(
            "DROP INDEX idx_observations_dedup;
             CREATE UNIQUE INDEX idx_observations_dedup ON observations(transmission_id, observer_idx, path_json);
             DROP INDEX idx_tx_channel_hash; CREATE INDEX idx_tx_channel_hash ON transmissions(channel_hash);",
        )
        .unwrap();
    let offline = dir.path().join("offline.db");
    copy_db(&db, &offline);
    let j = json_of(
        run_ok(&["migrate", "--json", FORCE, "100"], &db, 0)
            .stdout
            .as_bytes(),
    );
    let built: Vec<String> = j["online_builds"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| {
            b["indexes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i.as_str().unwrap().to_string())
        })
        .collect();
    for want in [
        "idx_observations_dedup",
        "idx_tx_channel_hash",
        "idx_observations_tx_ts",
    ] {
        assert!(
            built.iter().any(|b| b == want),
            "{want} not built online: {built:?}"
        );
    }
    integrity(&db).unwrap();
    no_leftovers(&db);
    run_ok(&["migrate", "-q", "--offline"], &offline, 0);
    if let Some(d) = first_difference(&snapshot(&db), &snapshot(&offline)) {
        panic!("online repair differs from offline: {d}");
    }
    run_ok(&["check", "-q"], &db, 0);
    let ops = script(&db, 8);
    let c = writer_conn(&db);
    for op in &ops {
        apply(&c, op).unwrap();
    }
}
