//! End-to-end tests of `corescope vacuum` and the vacuum/checkpoint step of
//! `prune`.

use crate::harness::common;

use std::path::Path;
use std::time::Duration;

use common::*;
use rusqlite::{params, Connection};

const FREE_ENV: &str = "CORESCOPE_TEST_FREE_BYTES";

fn open(p: &Path) -> Connection {
    let c = Connection::open(p).unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c
}

fn pragma(c: &Connection, name: &str) -> i64 {
    c.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
        .unwrap()
}

/// A migrated database with `n` old transmissions (2 observations each) and
/// five observers with a rowid gap; `auto_vacuum` NONE unless `incremental`.
fn build(dir: &Path, name: &str, n: usize, incremental: bool) -> std::path::PathBuf {
    let db = fresh_db(dir, name);
    let c = open(&db);
    if !incremental {
        c.execute_batch("PRAGMA auto_vacuum = NONE; VACUUM;")
            .unwrap();
        assert_eq!(pragma(&c, "auto_vacuum"), 0);
    }
    let tx = c.unchecked_transaction().unwrap();
    for i in 0..6 {
        tx.execute(
            "INSERT INTO observers (id, name, last_seen) VALUES (?1, ?1, '2026-05-17T00:00:00Z')",
            [format!("OBS{i}")],
        )
        .unwrap();
    }
    tx.execute("DELETE FROM observers WHERE id = 'OBS1'", [])
        .unwrap();
    let raw = "ab".repeat(200);
    for i in 0..n {
        tx.execute(
            "INSERT INTO transmissions (raw_hex, hash, first_seen) VALUES (?1, ?2, '2026-01-01T00:00:00Z')",
            params![raw, format!("h{i:06}")],
        )
        .unwrap();
        let id = tx.last_insert_rowid();
        for o in 0..2 {
            tx.execute(
                "INSERT INTO observations (transmission_id, observer_idx, path_json, timestamp, raw_hex) VALUES (?1, ?2, '[]', 1767225600, ?3)",
                params![id, o, raw],
            )
            .unwrap();
        }
    }
    tx.commit().unwrap();
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    db
}

fn run_json(db: &Path, args: &[&str], env: Option<(&str, String)>) -> serde_json::Value {
    let mut cmd = bin();
    cmd.args(args).arg("--json").arg("--db").arg(db);
    if let Some((k, v)) = env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    json_of(&out.stdout)
}

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn wal(p: &Path) -> std::path::PathBuf {
    let mut s = p.as_os_str().to_os_string();
    s.push("-wal");
    s.into()
}

#[test]
fn full_refuses_without_twice_the_database_size_free() {
    let dir = tempfile::tempdir().unwrap();
    let db = build(dir.path(), "r.db", 200, false);
    let total = size(&db) + size(&wal(&db));
    let out = bin()
        .args(["vacuum", "--full", "--db"])
        .arg(&db)
        .env(FREE_ENV, (2 * total - 1).to_string())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing VACUUM"), "{err}");
    assert!(
        err.contains(&(2 * total).to_string()),
        "names the need: {err}"
    );
    assert!(
        err.contains(&(2 * total - 1).to_string()),
        "names the free space: {err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1);
    assert_eq!(pragma(&open(&db), "auto_vacuum"), 0, "nothing converted");

    // Exactly twice is enough.
    let j = run_json(
        &db,
        &["vacuum", "--full"],
        Some((FREE_ENV, (2 * total).to_string())),
    );
    assert_eq!(j["auto_vacuum_after"], "incremental");
}

#[test]
fn full_converts_and_the_file_shrinks_after_a_prune() {
    let dir = tempfile::tempdir().unwrap();
    let db = build(dir.path(), "f.db", 3000, false);
    let rowids = dump(
        &open(&db),
        "observers",
        Some(&["rowid".into(), "id".into()]),
    );
    let grown = size(&db);

    // Pruning a NONE database frees nothing on disk and says so.
    let p = run_json(
        &db,
        &[
            "prune",
            "--now",
            "2026-05-17T00:00:00Z",
            "--packet-days",
            "30",
        ],
        None,
    );
    assert_eq!(p["deleted"]["packets"], 3000);
    assert_eq!(p["vacuumed_pages"], 0);
    assert_eq!(p["vacuum"]["auto_vacuum"], "none");
    assert!(p["vacuum"]["note"]
        .as_str()
        .unwrap()
        .contains("vacuum --full"));
    let after_prune = size(&db) + size(&wal(&db));
    assert!(after_prune >= grown);

    let j = run_json(
        &db,
        &["vacuum", "--full"],
        Some((FREE_ENV, u64::MAX.to_string())),
    );
    assert_eq!(j["auto_vacuum_before"], "none");
    assert_eq!(j["auto_vacuum_after"], "incremental");
    assert_eq!(j["complete"], true);
    let c = open(&db);
    assert_eq!(pragma(&c, "auto_vacuum"), 2);
    let ok: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let now = size(&db) + size(&wal(&db));
    assert!(now < after_prune / 2, "{now} < {after_prune} / 2");
    assert!(j["file_bytes_after"].as_u64().unwrap() < j["file_bytes_before"].as_u64().unwrap());
    // observers.rowid is referenced by observations: unchanged, gap included.
    assert_eq!(
        dump(&c, "observers", Some(&["rowid".into(), "id".into()])),
        rowids
    );
}

#[test]
fn incremental_vacuum_and_truncate_checkpoint_after_prune() {
    let dir = tempfile::tempdir().unwrap();
    let db = build(dir.path(), "i.db", 2000, true);
    let before = size(&db);
    let j = run_json(
        &db,
        &[
            "prune",
            "--now",
            "2026-05-17T00:00:00Z",
            "--packet-days",
            "30",
            "--vacuum-pages",
            "8",
            "--truncate-wal",
        ],
        None,
    );
    assert_eq!(j["vacuum"]["auto_vacuum"], "incremental");
    assert_eq!(j["vacuumed_pages"], 8);
    let page_size = pragma(&open(&db), "page_size");
    assert_eq!(j["freed_bytes"], 8 * page_size);
    assert_eq!(j["checkpoint"]["mode"], "truncate");
    assert_eq!(j["checkpoint"]["busy"], false);
    assert_eq!(j["checkpoint"]["wal_bytes_after"], 0);

    // `vacuum` returns the rest (default 1024 pages per call).
    let mut freed = 0;
    for _ in 0..50 {
        let v = run_json(&db, &["vacuum"], None);
        let n = v["vacuumed_pages"].as_i64().unwrap();
        freed += n;
        if n == 0 {
            break;
        }
    }
    assert!(freed > 0);
    assert_eq!(pragma(&open(&db), "freelist_count"), 0);
    assert!(size(&db) < before / 2, "{} < {before} / 2", size(&db));
}

#[test]
fn plain_vacuum_on_none_reports_a_conversion_and_busy_checkpoint_is_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = build(dir.path(), "n.db", 50, false);
    let j = run_json(&db, &["vacuum"], None);
    assert_eq!(j["auto_vacuum_after"], "none");
    assert_eq!(j["vacuumed_pages"], 0);
    assert!(j["notes"][0].as_str().unwrap().contains("vacuum --full"));

    // A reader holding a snapshot blocks the TRUNCATE checkpoint: reported, exit 0.
    let writer = open(&db);
    writer.execute_batch("PRAGMA journal_mode = WAL").unwrap();
    writer
        .execute("UPDATE observers SET name = 'x' WHERE id = 'OBS0'", [])
        .unwrap();
    let reader = open(&db);
    reader.execute_batch("BEGIN").unwrap();
    let _: i64 = reader
        .query_row("SELECT count(*) FROM observers", [], |r| r.get(0))
        .unwrap();
    let j = run_json(
        &db,
        &["vacuum", "--truncate-wal", "--busy-timeout", "200"],
        None,
    );
    assert_eq!(j["checkpoint"]["busy"], true, "{}", j["checkpoint"]);
    reader.execute_batch("COMMIT").unwrap();
}

#[test]
fn vacuum_refuses_unmigrated_database() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = legacy_copy(dir.path());
    let out = bin()
        .args(["vacuum", "--full", "--db"])
        .arg(&legacy)
        .env(FREE_ENV, u64::MAX.to_string())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
}

// ---- SQLite's temporary directory, and a TRUNCATE checkpoint beside a reader ----

const TMP_FREE_ENV: &str = "CORESCOPE_TEST_TMP_FREE_BYTES";

fn vacuum_full(db: &Path, envs: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = bin();
    cmd.args(["vacuum", "--full", "--json", "--db"])
        .arg(db)
        .env_remove("SQLITE_TMPDIR")
        .env_remove("TMPDIR");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn full_checks_the_temp_directory_sqlite_uses_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = build(dir.path(), "t.db", 200, false);
    let tmp = dir.path().join("sqlite-tmp");
    let other = dir.path().join("other-tmp");
    std::fs::create_dir(&tmp).unwrap();
    std::fs::create_dir(&other).unwrap();
    let tmp_s = tmp.to_str().unwrap();
    let before = sha256(&db);
    let need = size(&db) + size(&wal(&db));

    // The temporary directory (SQLITE_TMPDIR) lacks room for the copy.
    let (code, out, err) = vacuum_full(
        &db,
        &[
            ("SQLITE_TMPDIR", tmp_s),
            (TMP_FREE_ENV, &(need - 1).to_string()),
        ],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("refusing VACUUM"), "{err}");
    assert!(
        err.contains(tmp_s) && err.contains("from SQLITE_TMPDIR"),
        "{err}"
    );
    assert!(err.contains(&(need - 1).to_string()), "{err}");
    assert!(err.contains("Nothing was changed"), "{err}");
    assert_eq!(sha256(&db), before, "database changed");
    assert_eq!(pragma(&open(&db), "auto_vacuum"), 0);

    // SQLite's order: SQLITE_TMPDIR before TMPDIR; an unusable entry is skipped.
    let missing = dir.path().join("missing");
    let (code, out, err) = vacuum_full(
        &db,
        &[
            ("SQLITE_TMPDIR", missing.to_str().unwrap()),
            ("TMPDIR", other.to_str().unwrap()),
            (TMP_FREE_ENV, &(need - 1).to_string()),
        ],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(other.to_str().unwrap()) && err.contains("from TMPDIR"),
        "{err}"
    );
    assert_eq!(sha256(&db), before);

    // Room for the copy: converts, and the report says where the copy went.
    let (code, out, err) = vacuum_full(
        &db,
        &[("SQLITE_TMPDIR", tmp_s), (TMP_FREE_ENV, &need.to_string())],
    );
    assert_eq!(code, 0, "{err}");
    let j = json_of(out.as_bytes());
    assert_eq!(j["temp_dir"]["path"], tmp_s);
    assert_eq!(j["temp_dir"]["chosen"], "from SQLITE_TMPDIR");
    assert_eq!(j["auto_vacuum_after"], "incremental");
}

#[test]
fn full_disk_full_names_the_temp_directory_and_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = build(dir.path(), "d.db", 200, false);
    let tmp = dir.path().join("sqlite-tmp");
    std::fs::create_dir(&tmp).unwrap();
    let before = sha256(&db);
    // The conversion to INCREMENTAL adds pointer-map pages: a database that
    // may not grow by a single page fails as a full disk does.
    let (code, out, err) = vacuum_full(
        &db,
        &[
            ("SQLITE_TMPDIR", tmp.to_str().unwrap()),
            ("CORESCOPE_TEST_DISK_FULL_AFTER_PAGES", "0"),
        ],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("disk full during VACUUM"), "{err}");
    assert!(
        err.contains(tmp.to_str().unwrap()) && err.contains("SQLITE_TMPDIR"),
        "{err}"
    );
    assert!(err.contains("d.db-wal"), "{err}");
    assert_eq!(sha256(&db), before, "database changed");
    assert_eq!(pragma(&open(&db), "auto_vacuum"), 0);
}

#[test]
fn truncate_wal_beside_an_active_reader_waits_a_bounded_time_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let db = build(dir.path(), "w.db", 50, true);
    let writer = open(&db);
    let reader = open(&db);
    writer
        .execute_batch("UPDATE observations SET path_json = '[\"AA\"]' WHERE id % 2 = 0")
        .unwrap();
    // A reader inside a read transaction (the CoreScope server, a backup).
    reader.execute_batch("BEGIN").unwrap();
    let _: i64 = reader
        .query_row("SELECT count(*) FROM observations", [], |r| r.get(0))
        .unwrap();
    writer
        .execute_batch("UPDATE observations SET path_json = '[]' WHERE id % 2 = 0")
        .unwrap();

    let j = run_json(&db, &["vacuum", "--truncate-wal"], None);
    let ck = &j["checkpoint"];
    assert_eq!(ck["mode"], "truncate");
    assert_eq!(ck["truncated"], false, "{ck}");
    assert_eq!(ck["busy"], true);
    assert_eq!(ck["wait_limit_ms"], 100.0, "half of vacuum's 200 ms budget");
    assert!(
        ck["reason"]
            .as_str()
            .unwrap()
            .starts_with("a reader is active"),
        "{ck}"
    );
    assert!(size(&wal(&db)) > 0);

    // prune's wait follows its --max-lock-ms; the human report says why.
    let out = bin()
        .args([
            "prune",
            "--only",
            "metrics",
            "--truncate-wal",
            "--max-lock-ms",
            "50",
            "--db",
        ])
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("WAL checkpoint (truncate): not truncated: a reader is active")
            && text.contains("waited 25 ms"),
        "{text}"
    );

    // Once the reader is done, the same command truncates.
    reader.execute_batch("COMMIT").unwrap();
    let j = run_json(&db, &["vacuum", "--truncate-wal"], None);
    assert_eq!(j["checkpoint"]["truncated"], true, "{}", j["checkpoint"]);
    assert_eq!(j["checkpoint"]["reason"], serde_json::Value::Null);
    assert_eq!(size(&wal(&db)), 0);
}

/// A migrated (INCREMENTAL) database with `pages` free pages.
fn with_free_pages(dir: &Path, pages: i64) -> std::path::PathBuf {
    let db = fresh_db(dir, "free.db");
    let c = open(&db);
    c.execute_batch("CREATE TABLE filler(b BLOB)").unwrap();
    for _ in 0..pages {
        c.execute("INSERT INTO filler VALUES (zeroblob(4000))", [])
            .unwrap();
    }
    c.execute_batch("DROP TABLE filler; PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    assert!(pragma(&c, "freelist_count") >= pages);
    db
}

#[test]
fn vacuum_takes_max_seconds_and_max_lock_ms() {
    let dir = tempfile::tempdir().unwrap();
    let db = with_free_pages(dir.path(), 300);
    let free = pragma(&open(&db), "freelist_count");
    // --max-seconds 0: stops before the first batch, incomplete, nothing freed.
    let v = run_json(&db, &["vacuum", "--max-seconds", "0"], None);
    assert_eq!(v["complete"], false, "{v}");
    assert_eq!(v["vacuumed_pages"], 0, "{v}");
    assert_eq!(pragma(&open(&db), "freelist_count"), free);
    assert!(
        v["notes"].to_string().contains("stopped by --max-seconds"),
        "{v}"
    );
    // The smallest budget and a generous deadline: everything requested is freed.
    let v = run_json(
        &db,
        &[
            "vacuum",
            "--max-seconds",
            "600",
            "--max-lock-ms",
            "20",
            "--pages",
            "250",
        ],
        None,
    );
    assert_eq!(v["complete"], true, "{v}");
    assert_eq!(v["vacuumed_pages"], 250, "{v}");
    assert_eq!(pragma(&open(&db), "freelist_count"), free - 250);
    let v = run_json(&db, &["vacuum"], None);
    assert_eq!(v["complete"], true, "{v}");
    assert_eq!(pragma(&open(&db), "freelist_count"), 0);

    // Below the minimum budget: a usage error naming it.
    let err = crate::harness::Corescope::new()
        .args(["vacuum", "--max-lock-ms", "5"])
        .db(&db)
        .expect_code(2)
        .stderr();
    assert!(err.contains("below the minimum of 20 ms"), "{err}");
    // --full is one VACUUM: neither a deadline nor a lock budget can apply.
    for flag in [["--max-seconds", "10"], ["--max-lock-ms", "100"]] {
        let err = crate::harness::Corescope::new()
            .args(["vacuum", "--full"])
            .args(flag)
            .db(&db)
            .expect_code(2)
            .stderr();
        assert!(err.contains("cannot be used with"), "{flag:?}: {err}");
    }
}
