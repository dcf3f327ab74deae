//! End-to-end tests of `corescope build-edges` on real SQLite files.

use crate::harness::{common, edges_common};

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use edges_common::*;
use rand::{Rng, SeedableRng};
use rusqlite::types::Value as Sql;
use rusqlite::Connection;

/// The known world of `known_rows`.
struct World {
    f1: String,
    f2: String,
    o1: String,
    a1: String,
    b2: String,
    c1: String,
}

/// Every table's rows, without the `jobs.*` run times of the state table
/// (each run records when it ran).
fn content_but_run_times(db: &Path) -> Vec<(String, Vec<Vec<Sql>>)> {
    let c = Connection::open(db).unwrap();
    common::tables(&c)
        .into_iter()
        .map(|t| {
            let mut rows = common::dump(&c, &t, None);
            if t == "_corescope_state" {
                rows.retain(|r| !matches!(&r[0], Sql::Text(k) if k.starts_with("jobs.")));
            }
            (t, rows)
        })
        .collect()
}

fn known_db(dir: &Path) -> (std::path::PathBuf, World) {
    let db = fresh_db(dir, "known.db");
    let w = World {
        f1: key("f1"),
        f2: key("f2"),
        o1: key("0b01"),
        a1: key("a1"),
        b2: key("b2"),
        c1: key("cc01"),
    };
    let c = Connection::open(&db).unwrap();
    for k in [&w.f1, &w.f2, &w.a1, &w.b2, &w.c1] {
        add_node(&c, k, Some("n"), None, None);
    }
    add_node(&c, &key("cc02"), Some("collides"), None, None);
    // Observer ids are upper-case in the wild.
    let o1 = add_observer(&c, &w.o1.to_uppercase(), "obs one");
    let comp = add_observer(&c, "companion", "bridge");
    let advert_f1 = add_tx(&c, 4, Some(&w.f1), None);
    let advert_f1b = add_tx(&c, 4, Some(&w.f1.to_uppercase()), None);
    let grp = add_tx(&c, 5, None, None);
    let grp2 = add_tx(&c, 5, None, None);
    let trace = add_tx(&c, 9, None, None);
    let dj = format!(
        "{{\"type\":\"ADVERT\",\"pubKey\":\"{}\"}}",
        w.f2.to_uppercase()
    );
    let advert_f2 = add_tx(&c, 4, None, Some(&dj));
    let i = Sql::Integer;
    // 1. zero-hop ADVERT f1 heard by o1 at 1000 → (f1, o1)
    add_obs(&c, advert_f1, i(o1), Some("[]"), 1000);
    // 2. ADVERT f1 via A1, B2 at 2000 → (f1, a1), (o1, b2)
    add_obs(&c, advert_f1, i(o1), Some("[\"A1\",\"B2\"]"), 2000);
    // 3. GRP_TXT last hop B2 at 1500 → (o1, b2)
    add_obs(&c, grp, i(o1), Some("[\"B2\"]"), 1500);
    // 4. ambiguous 1-byte hop CC → nothing
    add_obs(&c, grp, i(o1), Some("[\"CC\"]"), 1600);
    // 5. 2-byte hop CC01 at 3000 → (o1, c1)
    add_obs(&c, grp, i(o1), Some("[\"CC01\"]"), 3000);
    // 6. TRACE → nothing
    add_obs(&c, trace, i(o1), Some("[\"B2\"]"), 3100);
    // 7. ADVERT (upper-case from_pubkey) via A1 heard by a non-key observer at 2500 → (f1, a1)
    add_obs(&c, advert_f1b, i(comp), Some("[\"A1\"]"), 2500);
    // 8. no observer row → no observer edge
    add_obs(&c, grp2, Sql::Null, Some("[\"A1\"]"), 3200);
    // 9. text observer_idx (legacy importer) → joins nothing
    add_obs(
        &c,
        grp2,
        Sql::Text(w.o1.to_uppercase()),
        Some("[\"A1\"]"),
        3300,
    );
    // 10. ADVERT with NULL from_pubkey, pubKey from decoded_json, zero hops → (f2, o1)
    add_obs(&c, advert_f2, i(o1), Some("[]"), 4000);
    // 11. invalid path_json → nothing
    add_obs(&c, grp2, i(o1), Some("garbage"), 4100);
    // 12. f2 zero-hop again (NULL path_json) at 0 (1970): count 2, time stays 4000
    add_obs(&c, advert_f2, i(o1), None, 0);
    drop(c);
    (db, w)
}

fn expected_known(w: &World) -> Vec<EdgeRow> {
    let mut m: BTreeMap<(String, String), (i64, String)> = BTreeMap::new();
    let mut add = |a: &str, b: &str, n: i64, t: &str| {
        m.insert(pair(a, b), (n, t.to_string()));
    };
    add(&w.f1, &w.o1, 1, "1970-01-01T00:16:40Z");
    add(&w.f1, &w.a1, 2, "1970-01-01T00:41:40Z");
    add(&w.o1, &w.b2, 2, "1970-01-01T00:33:20Z");
    add(&w.o1, &w.c1, 1, "1970-01-01T00:50:00Z");
    add(&w.f2, &w.o1, 2, "1970-01-01T01:06:40Z");
    m.into_iter()
        .map(|((a, b), (n, t))| (a, b, n, Some(t)))
        .collect()
}

#[test]
fn known_rows_exact() {
    let dir = tempfile::tempdir().unwrap();
    let (db, w) = known_db(dir.path());
    let r = build(&db, &[]);
    assert_eq!(r["observations_scanned"], 12);
    assert_eq!(r["candidates"], 8);
    assert_eq!(r["edges_upserted"], 5);
    assert_eq!(r["edges_new"], 5);
    assert_eq!(r["watermark"], 12);
    assert_eq!(r["complete"], true);
    assert_eq!(r["trace_rows_skipped"], 1);
    assert!(r["max_lock_hold_ms"].is_number());
    assert!(r["elapsed_ms"].is_number());
    assert_eq!(edges(&db), expected_known(&w));
    assert_eq!(state(&db, "build_edges.watermark").as_deref(), Some("12"));

    // A second run with nothing new changes nothing and reports 0 (but the
    // time of its run, `jobs.*` in the state table).
    let before = content_but_run_times(&db);
    let r = build(&db, &[]);
    assert_eq!(r["observations_scanned"], 0);
    assert_eq!(r["candidates"], 0);
    assert_eq!(r["edges_upserted"], 0);
    assert_eq!(r["edges_new"], 0);
    assert_eq!(r["watermark"], 12);
    assert_eq!(r["complete"], true);
    assert_eq!(edges(&db), expected_known(&w));
    assert_eq!(content_but_run_times(&db), before);

    // New observations are added on top, exactly once.
    let c = Connection::open(&db).unwrap();
    let o1: i64 = c
        .query_row(
            "SELECT rowid FROM observers WHERE id = ?1",
            [w.o1.to_uppercase()],
            |r| r.get(0),
        )
        .unwrap();
    let t = add_tx(&c, 2, None, None);
    add_obs(&c, t, Sql::Integer(o1), Some("[\"b2\"]"), 900); // late, older time
    drop(c);
    let r = build(&db, &[]);
    assert_eq!(r["observations_scanned"], 1);
    assert_eq!(r["edges_upserted"], 1);
    assert_eq!(r["edges_new"], 0);
    let mut exp = expected_known(&w);
    for e in exp.iter_mut() {
        if (e.0.clone(), e.1.clone()) == pair(&w.o1, &w.b2) {
            e.2 += 1; // count grows, last_seen keeps the later time
        }
    }
    assert_eq!(edges(&db), exp);
}

#[test]
fn human_report_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _) = known_db(dir.path());
    let out = bin()
        .args(["build-edges", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(out.status.success());
    let s = String::from_utf8(out.stdout).unwrap();
    assert_eq!(s.lines().count(), 1, "{s}");
    assert!(s.contains("scanned 12 observations"), "{s}");
}

#[test]
fn refuses_unmigrated_database() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("legacy.db");
    std::fs::copy(crate::harness::Fixture::Legacy.path(), &p).unwrap();
    let before = std::fs::read(&p).unwrap();
    let out = bin()
        .args(["build-edges", "--db"])
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("corescope migrate"));
    assert_eq!(std::fs::read(&p).unwrap(), before);
}

#[test]
fn first_run_on_corescope_table_seeds_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_db(dir.path(), "seed.db");
    let (f, o, h) = (key("f1"), key("0b"), key("a1"));
    let c = Connection::open(&db).unwrap();
    for k in [&f, &h] {
        add_node(&c, k, None, None, None);
    }
    let ob = add_observer(&c, &o.to_uppercase(), "o");
    let t = add_tx(&c, 5, None, None);
    // CoreScope counted these (timestamps <= its MAX(last_seen) = 300).
    for (i, ts) in [100, 200, 300].iter().enumerate() {
        add_obs(
            &c,
            t,
            Sql::Integer(ob),
            Some(&format!("[\"{:02X}\",\"A1\"]", i + 1)),
            *ts,
        );
    }
    // Not yet counted.
    add_obs(&c, t, Sql::Integer(ob), Some("[\"A1\"]"), 400);
    add_obs(&c, t, Sql::Integer(ob), Some("[\"09\",\"A1\"]"), 500);
    let (a, b) = pair(&o, &h);
    // Legacy millisecond format; same instant as observation 3.
    c.execute(
        "INSERT INTO neighbor_edges VALUES (?1, ?2, 3, '1970-01-01T00:05:00.000Z')",
        [&a, &b],
    )
    .unwrap();
    drop(c);
    let r = build(&db, &[]);
    assert_eq!(r["seeded"]["start_after_id"], 3);
    assert_eq!(r["seeded"]["max_last_seen"], "1970-01-01T00:05:00Z");
    assert_eq!(r["seeded"]["existing_edges"], 1);
    assert_eq!(r["observations_scanned"], 2);
    assert_eq!(r["watermark"], 5);
    // Later instant replaces the .000Z value; counts add up.
    assert_eq!(
        edges(&db),
        vec![(a.clone(), b.clone(), 5, Some("1970-01-01T00:08:20Z".into()))]
    );
    let out = bin()
        .args(["build-edges", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("CoreScope"));
}

#[test]
fn equal_instant_keeps_stored_value() {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_db(dir.path(), "eq.db");
    let (o, h) = (key("0b"), key("a1"));
    let c = Connection::open(&db).unwrap();
    add_node(&c, &h, None, None, None);
    let ob = add_observer(&c, &o, "o");
    let t = add_tx(&c, 5, None, None);
    add_obs(&c, t, Sql::Integer(ob), Some("[\"A1\"]"), 300);
    c.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS _corescope_state (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at TEXT NOT NULL);
         INSERT INTO _corescope_state VALUES ('build_edges.watermark', '0', 'x');
         INSERT INTO neighbor_edges VALUES ('{}', '{}', 7, '1970-01-01T00:05:00.000Z');",
        pair(&o, &h).0,
        pair(&o, &h).1
    ))
    .unwrap();
    drop(c);
    let r = build(&db, &[]);
    assert_eq!(r["seeded"], serde_json::Value::Null);
    let (a, b) = pair(&o, &h);
    assert_eq!(
        edges(&db),
        vec![(a, b, 8, Some("1970-01-01T00:05:00.000Z".into()))]
    );
}

#[test]
fn rebuild_recomputes_and_drops_bad_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (db, w) = known_db(dir.path());
    let c = Connection::open(&db).unwrap();
    c.execute_batch(&format!(
        "INSERT INTO neighbor_edges VALUES ('', '{f}', 9, '2026-01-01T00:00:00Z');
         INSERT INTO neighbor_edges VALUES ('{f}', '{f}', 9, '2026-01-01T00:00:00Z');
         INSERT INTO neighbor_edges VALUES ('{u}', '{f}', 9, NULL);",
        f = w.f1,
        u = w.a1.to_uppercase()
    ))
    .unwrap();
    drop(c);
    let r = build(&db, &["--rebuild"]);
    assert_eq!(r["mode"], "rebuild");
    assert_eq!(r["complete"], true);
    assert_eq!(r["rebuild"]["swapped"], true);
    assert_eq!(r["watermark"], 12);
    assert_eq!(r["observations_scanned"], 12);
    assert_eq!(edges(&db), expected_known(&w));
    let c = Connection::open(&db).unwrap();
    let staging: i64 = c
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name LIKE '%edges_rebuild%' OR name LIKE '%edges_old%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(staging, 0);
    drop(c);
    assert_eq!(state(&db, "build_edges.rebuild_watermark"), None);
    // The schema has everything afterwards (the swapped-in table counts as
    // neighbor_edges; check's other complaints are about the test data).
    let out = bin()
        .args(["--json", "check", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["missing"], serde_json::json!([]), "{v}");
    // Incremental after rebuild: nothing to do.
    let r = build(&db, &[]);
    assert_eq!(r["observations_scanned"], 0);
    assert_eq!(edges(&db), expected_known(&w));
    // Rebuild again: identical.
    build(&db, &["--rebuild"]);
    assert_eq!(edges(&db), expected_known(&w));
}

#[test]
fn rebuild_interrupted_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let (db, w) = known_db(dir.path());
    let r = build(
        &db,
        &["--rebuild", "--batch-size", "2", "--max-seconds", "0"],
    );
    assert_eq!(r["complete"], false);
    assert_eq!(r["rebuild"]["swapped"], false);
    assert_eq!(r["observations_scanned"], 2);
    // The live table is untouched (empty) until the swap.
    assert!(edges(&db).is_empty());
    let r = build(
        &db,
        &["--rebuild", "--batch-size", "2", "--max-seconds", "0"],
    );
    assert_eq!(r["rebuild"]["resumed_after_id"], 2);
    let r = build(&db, &["--rebuild"]);
    assert_eq!(r["complete"], true);
    assert_eq!(r["observations_scanned"], 8);
    assert_eq!(edges(&db), expected_known(&w));
}

#[test]
fn leftover_old_tables_are_emptied_and_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (db, w) = known_db(dir.path());
    let c = Connection::open(&db).unwrap();
    c.execute_batch(
        "CREATE TABLE _corescope_edges_old_1234_ab (node_a TEXT NOT NULL, node_b TEXT NOT NULL, count INTEGER DEFAULT 1, last_seen TEXT, PRIMARY KEY (node_a, node_b));
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
         INSERT INTO _corescope_edges_old_1234_ab SELECT printf('a%05d', i), printf('b%05d', i), 1, NULL FROM n;",
    )
    .unwrap();
    drop(c);
    let r = build(&db, &["--max-lock-ms", "20"]);
    assert_eq!(r["old_table_rows_deleted"], 3000);
    let c = Connection::open(&db).unwrap();
    let left: i64 = c
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name LIKE '%edges_old%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(left, 0);
    drop(c);
    assert_eq!(edges(&db), expected_known(&w));
}

// ------------------------------------------------------------ convergence

/// A random but reproducible database: ~60 nodes with 1- and 2-byte prefix
/// collisions, 6 observers, `n` observations of mixed types and paths.
fn random_db(dir: &Path, name: &str, n: usize, seed: u64) -> std::path::PathBuf {
    let db = fresh_db(dir, name);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut c = Connection::open(&db).unwrap();
    let txn = c.transaction().unwrap();
    let mut keys = Vec::new();
    for i in 0..60u32 {
        // Deliberate collisions: only 24 distinct first bytes.
        let k = format!("{:02x}{:02x}", (i % 24) * 10, i);
        let k = key(&k);
        add_node(
            &txn,
            &k,
            Some(&format!("node {i}")),
            Some(37.0 + i as f64 / 100.0),
            Some(-122.0),
        );
        keys.push(k);
    }
    let mut observers = Vec::new();
    for i in 0..6 {
        observers.push(add_observer(
            &txn,
            &keys[i * 7].to_uppercase(),
            &format!("obs {i}"),
        ));
    }
    let mut txs = Vec::new();
    for _ in 0..(n / 3).max(1) {
        let pt = [4i64, 4, 5, 2, 9, 1][rng.gen_range(0..6)];
        let from = (pt == 4).then(|| keys[rng.gen_range(0..keys.len())].clone());
        txs.push(add_tx(&txn, pt, from.as_deref(), None));
    }
    let mut used = std::collections::HashSet::new();
    let mut made = 0;
    while made < n {
        let t = txs[rng.gen_range(0..txs.len())];
        let ob = observers[rng.gen_range(0..observers.len())];
        let hops: Vec<String> = (0..rng.gen_range(0..4))
            .map(|_| {
                let k = &keys[rng.gen_range(0..keys.len())];
                let len = [2, 2, 4, 6][rng.gen_range(0..4)];
                k[..len].to_uppercase()
            })
            .collect();
        let pj = serde_json::to_string(&hops).unwrap();
        if !used.insert((t, ob, pj.clone())) {
            continue;
        }
        add_obs(
            &txn,
            t,
            Sql::Integer(ob),
            Some(&pj),
            1_779_000_000 + rng.gen_range(0..100_000),
        );
        made += 1;
    }
    txn.commit().unwrap();
    db
}

fn copy_db(src: &Path, dst: &Path) {
    // Checkpoint so that the main file alone holds everything.
    let c = Connection::open(src).unwrap();
    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    drop(c);
    std::fs::copy(src, dst).unwrap();
}

#[test]
fn convergence_one_run_many_runs_kills_and_concurrent() {
    let dir = tempfile::tempdir().unwrap();
    let base = random_db(dir.path(), "base.db", 1500, 7);
    let mk = |name: &str| {
        let p = dir.path().join(name);
        copy_db(&base, &p);
        p
    };

    // (a) one uninterrupted run.
    let a = mk("a.db");
    let r = build(&a, &[]);
    assert_eq!(r["complete"], true);
    let reference = edges(&a);
    assert!(reference.len() > 50, "{}", reference.len());

    // (b) many tiny runs, each stopped after one batch.
    let b = mk("b.db");
    let mut runs = 0;
    loop {
        let r = build(&b, &["--batch-size", "7", "--max-seconds", "0"]);
        runs += 1;
        if r["complete"] == true {
            break;
        }
        assert!(runs < 1000);
    }
    assert!(runs > 100);
    assert_eq!(edges(&b), reference, "many runs");
    assert_eq!(
        state(&b, "build_edges.watermark"),
        state(&a, "build_edges.watermark")
    );

    // (b') small lock budget instead of a fixed batch size.
    let b2 = mk("b2.db");
    loop {
        let r = build(&b2, &["--max-lock-ms", "20", "--max-seconds", "0"]);
        if r["complete"] == true {
            break;
        }
    }
    assert_eq!(edges(&b2), reference, "max-lock-ms 20");

    // (c) SIGKILL at random points, then re-run.
    let c = mk("c.db");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(99);
    let mut mid_run = 0;
    for _ in 0..8 {
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("corescope"))
            .args(["build-edges", "--batch-size", "1", "--db"])
            .arg(&c)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.gen_range(5..250)));
        let _ = child.kill(); // SIGKILL on Unix
        let status = child.wait().unwrap();
        if status.code().is_none() {
            mid_run += 1;
        }
    }
    eprintln!("convergence: {mid_run} of 8 runs were killed before finishing");
    build(&c, &[]);
    assert_eq!(edges(&c), reference, "after SIGKILLs");

    // (c') SIGKILL during --rebuild, then re-run --rebuild.
    let c2 = mk("c2.db");
    build(&c2, &[]);
    for _ in 0..6 {
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("corescope"))
            .args([
                "build-edges",
                "--rebuild",
                "--batch-size",
                "3",
                "--max-lock-ms",
                "20",
                "--db",
            ])
            .arg(&c2)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.gen_range(5..150)));
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(edges(&c2), reference, "live table intact during rebuild");
    }
    build(&c2, &["--rebuild"]);
    assert_eq!(edges(&c2), reference, "after rebuild SIGKILLs");

    // (d) two runs started at once (twice: incremental, and incremental + rebuild).
    // The run lock would make the second one exit 75 at once; correctness must
    // not depend on it, so it is disabled here: a directory where the lock file
    // should be makes corescope run without the lock (runlock.rs).
    for (name, second) in [("d.db", vec![]), ("d2.db", vec!["--rebuild"])] {
        let d = mk(name);
        std::fs::create_dir(format!("{}.corescope-build-edges.lock", d.display())).unwrap();
        let spawn = |extra: &[&str]| {
            std::process::Command::new(assert_cmd::cargo::cargo_bin("corescope"))
                .args(["build-edges", "--batch-size", "5", "--db"])
                .arg(&d)
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let p1 = spawn(&[]);
        let p2 = spawn(&second);
        for p in [p1, p2] {
            let out = p.wait_with_output().unwrap();
            let code = out.status.code();
            assert!(
                code == Some(0) || code == Some(75),
                "{code:?} {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        build(&d, &[]);
        if !second.is_empty() {
            build(&d, &["--rebuild"]);
        }
        assert_eq!(edges(&d), reference, "two at once ({name})");
    }
}

#[test]
fn legacy_fixture_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let db = migrated_fixture(dir.path());
    let r = build(&db, &["--rebuild"]);
    assert_eq!(r["complete"], true);
    assert_eq!(r["observations_scanned"], 500);
    let rows = edges(&db);
    assert!(!rows.is_empty());
    for (a, b, n, t) in &rows {
        assert!(!a.is_empty() && !b.is_empty() && a < b);
        assert_eq!(a, &a.to_lowercase());
        assert_eq!(b, &b.to_lowercase());
        assert!(*n >= 1);
        // Every observation timestamp is 0: edges keep 1970.
        assert_eq!(t.as_deref(), Some("1970-01-01T00:00:00Z"));
    }
    assert_eq!(r["edges_total"], rows.len());
    // Incremental afterwards: nothing.
    let r = build(&db, &[]);
    assert_eq!(r["observations_scanned"], 0);
}

// ---- write-engine edge cases: foreign objects, watermark ahead, stopped
// rebuilds, lock budgets ----

/// Runs `corescope ARGS --db DB`; returns (exit code, stdout, stderr).
fn run_raw(db: &Path, args: &[&str]) -> (i32, String, String) {
    let out = bin().args(args).arg("--db").arg(db).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The main file alone holds everything (no -wal beside it), so its hash
/// covers the whole database.
fn settle(db: &Path) -> String {
    let c = Connection::open(db).unwrap();
    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    drop(c);
    common::sha256(db)
}

fn warning_codes(db: &Path) -> Vec<String> {
    let (code, out, err) = run_raw(db, &["--json", "check"]);
    assert!(code == 0 || code == 3, "check: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["code"].as_str().unwrap().to_string())
        .collect()
}

fn tables_like(db: &Path, pattern: &str) -> Vec<String> {
    let c = Connection::open(db).unwrap();
    let mut st = c
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE ?1 ORDER BY name",
        )
        .unwrap();
    let v = st
        .query_map([pattern], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    v
}

#[test]
fn rebuild_refuses_a_table_with_objects_it_does_not_own() {
    let cases: [(&str, &str, &str); 3] = [
        (
            "column",
            "ALTER TABLE neighbor_edges ADD COLUMN note TEXT; UPDATE neighbor_edges SET note = 'keep ' || node_a;",
            "column neighbor_edges.note",
        ),
        (
            "index",
            "CREATE INDEX idx_edges_last_seen ON neighbor_edges(last_seen);",
            "index idx_edges_last_seen",
        ),
        (
            "trigger",
            "CREATE TABLE edge_audit (a TEXT); CREATE TRIGGER edges_audit AFTER INSERT ON neighbor_edges BEGIN INSERT INTO edge_audit VALUES (new.node_a); END;",
            "trigger edges_audit",
        ),
    ];
    for (what, ddl, named) in cases {
        let dir = tempfile::tempdir().unwrap();
        let (db, w) = known_db(dir.path());
        build(&db, &[]);
        Connection::open(&db).unwrap().execute_batch(ddl).unwrap();
        let before = settle(&db);
        let (code, out, err) = run_raw(&db, &["build-edges", "--rebuild"]);
        assert_eq!(code, 1, "{what}: {out}{err}");
        assert!(err.contains(named), "{what}: {err}");
        assert!(
            err.contains("Nothing was changed") && err.contains("without --rebuild"),
            "{what}: {err}"
        );
        assert_eq!(common::sha256(&db), before, "{what}: database changed");
        assert!(
            !Path::new(&format!("{}-wal", db.display())).exists(),
            "{what}: a -wal was left"
        );
        // The incremental build keeps the object and works on.
        let r = build(&db, &[]);
        assert_eq!(r["observations_scanned"], 0, "{what}");
        assert_eq!(edges(&db), expected_known(&w), "{what}");
        if what == "column" {
            let c = Connection::open(&db).unwrap();
            let kept: i64 = c
                .query_row(
                    "SELECT count(*) FROM neighbor_edges WHERE note = 'keep ' || node_a",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(kept, 5);
        }
    }
}

#[test]
fn watermark_ahead_of_every_observation_is_refused_and_rebuild_repairs_it() {
    let dir = tempfile::tempdir().unwrap();
    let (db, w) = known_db(dir.path());
    build(&db, &[]);
    // Deleting the newest observations (as retention may) is not "ahead":
    // AUTOINCREMENT never hands their ids out again.
    {
        let c = Connection::open(&db).unwrap();
        c.execute("DELETE FROM observations WHERE id = 12", [])
            .unwrap();
    }
    let r = build(&db, &[]);
    assert_eq!(r["watermark"], 12);
    assert!(!warning_codes(&db).contains(&"edges_watermark_ahead".to_string()));
    // A watermark no observation id reaches: a restored backup.
    Connection::open(&db)
        .unwrap()
        .execute(
            "UPDATE _corescope_state SET value = '5000' WHERE key = 'build_edges.watermark'",
            [],
        )
        .unwrap();
    let before = settle(&db);
    let (code, _, err) = run_raw(&db, &["build-edges"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("watermark") && err.contains("5000") && err.contains("(12)"),
        "{err}"
    );
    assert!(
        err.contains("Nothing was changed") && err.contains("build-edges --rebuild"),
        "{err}"
    );
    assert_eq!(common::sha256(&db), before);
    assert!(warning_codes(&db).contains(&"edges_watermark_ahead".to_string()));
    let (code, _, _) = run_raw(&db, &["check", "--strict"]);
    assert_eq!(code, 3);
    assert_eq!(common::sha256(&db), before, "check wrote");
    // The fix the message names.
    let r = build(&db, &["--rebuild"]);
    assert_eq!(r["complete"], true);
    assert_eq!(r["watermark"], 11);
    assert!(!warning_codes(&db).contains(&"edges_watermark_ahead".to_string()));
    // New rows are counted again: observation 13 → (f1, o1) once more.
    {
        let c = Connection::open(&db).unwrap();
        let o1: i64 = c
            .query_row(
                "SELECT rowid FROM observers WHERE name = 'obs one'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let t = add_tx(&c, 4, Some(&w.f1), None);
        add_obs(&c, t, Sql::Integer(o1), Some("[]"), 5000);
    }
    let r = build(&db, &[]);
    assert_eq!(r["observations_scanned"], 1);
    assert_eq!(r["watermark"], 13);
    let e = edges(&db);
    let (a, b) = pair(&w.f1, &w.o1);
    assert!(e.iter().any(|x| x.0 == a && x.1 == b && x.2 == 2), "{e:?}");
}

#[test]
fn stopped_rebuild_is_reported_by_check_and_handled_by_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let (db, w) = known_db(dir.path());
    build(&db, &[]);
    let stop = ["--rebuild", "--batch-size", "3", "--max-seconds", "0"];

    // 1. Stopped after a complete flush: resumable. check says so; a plain
    //    run keeps it; --rebuild resumes and finishes it.
    let r = build(&db, &stop);
    assert_eq!(r["complete"], false);
    let codes = warning_codes(&db);
    assert!(
        codes.contains(&"interrupted_edges_rebuild".to_string()),
        "{codes:?}"
    );
    let (_, out, _) = run_raw(&db, &["check"]);
    assert!(out.contains("consistent up to observation 3"), "{out}");
    let r = build(&db, &[]);
    assert_eq!(r["interrupted_rebuild"]["action"], "kept");
    assert_eq!(r["interrupted_rebuild"]["resumable_after_id"], 3);
    assert_eq!(
        tables_like(&db, "_corescope_edges_rebuild"),
        vec!["_corescope_edges_rebuild"]
    );
    let (code, out, _) = run_raw(&db, &["build-edges"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("`corescope build-edges --rebuild` resumes"),
        "{out}"
    );
    let r = build(&db, &["--rebuild"]);
    assert_eq!(r["rebuild"]["resumed_after_id"], 3);
    assert_eq!(r["complete"], true);
    assert_eq!(edges(&db), expected_known(&w));
    assert!(tables_like(&db, "_corescope_edges%").is_empty());
    assert!(!warning_codes(&db).contains(&"interrupted_edges_rebuild".to_string()));

    // 2. Killed inside a flush (staging watermark cleared): not resumable.
    //    A plain run drops it; so does --rebuild, which then starts over.
    for rebuild in [false, true] {
        build(&db, &stop);
        Connection::open(&db)
            .unwrap()
            .execute(
                "DELETE FROM _corescope_state WHERE key = 'build_edges.rebuild_watermark'",
                [],
            )
            .unwrap();
        let (_, out, _) = run_raw(&db, &["check"]);
        assert!(
            out.contains("interrupted_edges_rebuild") && out.contains("not resumable"),
            "{out}"
        );
        let r = if rebuild {
            let r = build(&db, &["--rebuild"]);
            assert_eq!(r["rebuild"]["resumed_after_id"], serde_json::Value::Null);
            assert_eq!(r["observations_scanned"], 12);
            r
        } else {
            let r = build(&db, &[]);
            assert_eq!(r["interrupted_rebuild"]["action"], "dropped");
            r
        };
        assert_eq!(r["complete"], true);
        assert!(r["old_table_rows_deleted"].as_u64().unwrap() > 0, "{r}");
        assert!(
            tables_like(&db, "_corescope_edges%").is_empty(),
            "rebuild={rebuild}"
        );
        assert_eq!(edges(&db), expected_known(&w), "rebuild={rebuild}");
        let codes = warning_codes(&db);
        assert!(
            !codes.contains(&"interrupted_edges_rebuild".to_string()),
            "{codes:?}"
        );
        assert!(!codes.contains(&"old_edge_tables".to_string()), "{codes:?}");
    }
}

#[test]
fn lock_budget_below_the_minimum_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _) = known_db(dir.path());
    let before = settle(&db);
    for cmd in ["migrate", "backfill", "build-edges", "prune"] {
        for ms in ["0", "5", "19"] {
            let (code, out, err) = run_raw(&db, &[cmd, "--max-lock-ms", ms]);
            assert_eq!(code, 2, "{cmd} {ms}: {out}{err}");
            assert!(err.contains("minimum of 20 ms"), "{cmd} {ms}: {err}");
            assert_eq!(common::sha256(&db), before, "{cmd} {ms}");
        }
    }
    let r = build(&db, &["--max-lock-ms", "20"]);
    assert_eq!(r["complete"], true);
}

#[test]
fn smallest_budget_still_writes_in_batches() {
    // Before batches were sized by the real lock hold, a small budget shrank
    // every batch to one observation (a transaction per row).
    let dir = tempfile::tempdir().unwrap();
    let db = random_db(dir.path(), "r.db", 3000, 5);
    let r = build(&db, &["--max-lock-ms", "20"]);
    assert_eq!(r["observations_scanned"], 3000);
    assert_eq!(r["complete"], true);
    let tx = r["transactions"].as_u64().unwrap();
    assert!(
        tx * 10 <= 3000,
        "{tx} transactions for 3000 observations: {r}"
    );
}

/// The write transactions a `-vv` run logged ("write transaction held the
/// lock …", one line per transaction).
fn write_transactions(stderr: &str) -> usize {
    stderr
        .lines()
        .filter(|l| l.contains("write transaction held the lock"))
        .count()
}

#[test]
fn a_tick_is_one_write_transaction_that_also_records_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let db = random_db(dir.path(), "tick.db", 300, 17);
    let (code, _, err) = run_raw(&db, &["-q", "build-edges"]);
    assert_eq!(code, 0, "{err}");
    let c = Connection::open(&db).unwrap();
    c.execute_batch(
        "UPDATE _corescope_state SET value = 'x' WHERE key = 'jobs.build_edges.last_run'",
    )
    .unwrap();
    // 40 new observations (copies of recent ones on another path).
    c.execute_batch(
        "INSERT INTO observations (transmission_id, observer_idx, path_json, timestamp)
         SELECT transmission_id, observer_idx, '[\"EE\",\"' || id || '\"]', timestamp + 60
           FROM observations ORDER BY id DESC LIMIT 40",
    )
    .unwrap();
    let max: i64 = c
        .query_row("SELECT max(id) FROM observations", [], |r| r.get(0))
        .unwrap();
    let (code, out, err) = run_raw(&db, &["-vv", "--json", "build-edges"]);
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["observations_scanned"], 40);
    assert_eq!(j["watermark"], max);
    // The upserts, the watermark and the run record: one transaction.
    assert_eq!(write_transactions(&err), 1, "{err}");
    let state = |k: &str| -> String {
        c.query_row(
            "SELECT value FROM _corescope_state WHERE key = ?1",
            [k],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert_ne!(state("jobs.build_edges.last_run"), "x");
    assert_eq!(state("jobs.build_edges.last_complete"), "true");
    // Nothing new: the run record alone, again one transaction.
    c.execute_batch(
        "UPDATE _corescope_state SET value = 'x' WHERE key = 'jobs.build_edges.last_run'",
    )
    .unwrap();
    let (code, _, err) = run_raw(&db, &["-vv", "build-edges"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(write_transactions(&err), 1, "{err}");
    assert_ne!(state("jobs.build_edges.last_run"), "x");
}

/// The rebuild reads rows on one thread and extracts edges on another, in
/// chunks of a few thousand rows: on a synthetic network like the
/// benchmark's (every ADVERT key only in `decoded_json`, the from-pubkey
/// backfill not run), a rebuild in one read batch, a rebuild in many small
/// ones and incremental ticks from nothing give the same rows, the same
/// counts and the same watermark.
#[test]
fn rebuild_in_chunks_equals_small_batches_and_incremental_ticks() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.db");
    crate::harness::bin()
        .args(["synth", "-q", "--seed", "7", "--days", "3"])
        .args(["--end", "2026-05-01T00:00:00Z", "--nodes", "300"])
        .args(["--observers", "12", "--transmissions", "3000"])
        .args(["--observations", "12000", "--null-from-pubkey", "1"])
        .arg("--db")
        .arg(&base)
        .assert()
        .success();
    let copy = |name: &str| {
        let p = dir.path().join(name);
        std::fs::copy(&base, &p).unwrap();
        p
    };
    let (one, small, ticks) = (copy("one.db"), copy("small.db"), copy("ticks.db"));

    let r1 = build(&one, &["--rebuild"]);
    assert_eq!(r1["complete"], true, "{r1}");
    assert_eq!(r1["observations_scanned"], 12000, "{r1}");
    assert_eq!(r1["batches"], 1, "{r1}");
    let r2 = build(&small, &["--rebuild", "--batch-size", "700"]);
    assert_eq!(r2["batches"], 18, "{r2}");
    let mut tick_candidates = 0;
    for _ in 0..40 {
        let r = build(&ticks, &["--batch-size", "3000", "--max-seconds", "0"]);
        tick_candidates += r["candidates"].as_i64().unwrap();
        if r["observations_scanned"] == 0 {
            break;
        }
    }

    let want = edges(&one);
    assert!(want.len() > 100, "{}", want.len());
    // Originators read from decoded_json: ADVERT edges exist.
    let c = Connection::open(&one).unwrap();
    assert!(
        common::count(
            &c,
            "SELECT count(*) FROM transmissions WHERE payload_type = 4 AND from_pubkey IS NULL"
        ) > 100
    );
    drop(c);
    assert_eq!(edges(&small), want);
    assert_eq!(edges(&ticks), want);
    let total: i64 = want.iter().map(|e| e.2).sum();
    assert_eq!(r1["candidates"].as_i64(), Some(total), "{r1}");
    assert_eq!(r2["candidates"], r1["candidates"]);
    assert_eq!(tick_candidates, total);
    for db in [&one, &small, &ticks] {
        assert_eq!(state(db, "build_edges.watermark").as_deref(), Some("12000"));
    }
}
