//! Repairs of older databases: `migrate` merges duplicate observations the way
//! the ingestor's UPSERT would have, and keeps `inactive_nodes` in step with
//! `nodes`. Runs the real binary on real SQLite files.

use crate::harness::common;
use crate::harness::support;

use std::collections::BTreeMap;

use common::*;
use rusqlite::types::Value;
use rusqlite::{params, Connection};

const AUDIT: &str = "_corescope_merged_observations";
const MERGE_STEP: &str = "merge:duplicate_observations";

/// The ingestor's observation insert, replayed into `table`.
fn upsert_sql(table: &str, cols: &[String]) -> String {
    let list = cols.join(", ");
    let params = (1..=cols.len())
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let merged: Vec<String> = ["snr", "rssi", "score", "raw_hex", "resolved_path"]
        .iter()
        .filter(|c| cols.iter().any(|x| x == *c))
        .map(|c| format!("{c} = COALESCE(excluded.{c}, {c})"))
        .collect();
    format!(
        "INSERT INTO {table} ({list}) VALUES ({params})
         ON CONFLICT(transmission_id, observer_idx, COALESCE(path_json, '')) DO UPDATE SET {}",
        merged.join(", ")
    )
}

/// The rows the ingestor would have kept: every observation, in id order,
/// through the real UPSERT into a fresh table with the dedup index and the
/// same declared column types.
fn expected_by_replay(db: &std::path::Path) -> (Vec<String>, Vec<Vec<Value>>) {
    let c = Connection::open(db).unwrap();
    let cols = columns(&c, "observations");
    let types: Vec<(String, String)> = {
        let mut st = c
            .prepare("SELECT name, type FROM pragma_table_info('observations')")
            .unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    };
    let rows = dump(&c, "observations", Some(&cols));
    let m = Connection::open_in_memory().unwrap();
    let defs: Vec<String> = types
        .iter()
        .map(|(n, t)| {
            if n == "id" {
                "id INTEGER PRIMARY KEY".to_string()
            } else {
                format!("{n} {t}")
            }
        })
        .collect();
    m.execute_batch(&format!(
        "CREATE TABLE exp ({});
         CREATE UNIQUE INDEX exp_dedup ON exp(transmission_id, observer_idx, COALESCE(path_json, ''));",
        defs.join(", ")
    ))
    .unwrap();
    let sql = upsert_sql("exp", &cols);
    for r in &rows {
        m.execute(&sql, rusqlite::params_from_iter(r.iter()))
            .unwrap();
    }
    let want = dump(&m, "exp", Some(&cols));
    (cols, want)
}

/// A fresh, migrated database whose observations hold duplicate groups of
/// 2-5 rows with NULLs spread over the five merged columns (and values of
/// odd storage classes), after dropping the dedup index as an older
/// ingestor would never have created it. Returns (groups, surplus rows).
fn database_with_duplicates(dir: &std::path::Path) -> (std::path::PathBuf, i64, i64) {
    let db = fresh_db(dir, "dups.db");
    let c = Connection::open(&db).unwrap();
    c.execute_batch(
        "DROP INDEX idx_observations_dedup;
         INSERT INTO observers (id, name) VALUES ('aa', 'one'), ('bb', 'two'), ('cc', 'three');",
    )
    .unwrap();
    for t in 1..=6 {
        c.execute(
            "INSERT INTO transmissions (raw_hex, hash, first_seen, payload_type) VALUES ('00', ?1, '2026-05-01T00:00:00Z', 2)",
            [format!("h{t}")],
        )
        .unwrap();
    }
    // (transmission, observer rowid, path_json, direction, snr, rssi, score, raw_hex, resolved_path, timestamp)
    type Row = (
        i64,
        Option<i64>,
        Option<&'static str>,
        &'static str,
        Value,
        Value,
        Value,
        Value,
        Value,
        i64,
    );
    use Value::{Blob, Integer as I, Null as N, Real as R, Text as T};
    let t = |s: &str| T(s.to_string());
    let rows: Vec<Row> = vec![
        // group A (2 rows): later snr wins, first rssi kept, later raw_hex wins
        (
            1,
            Some(1),
            Some("[\"AA\"]"),
            "rx",
            N,
            R(-90.0),
            I(1),
            N,
            N,
            100,
        ),
        (
            1,
            Some(1),
            Some("[\"AA\"]"),
            "tx",
            R(5.5),
            N,
            N,
            t("beef"),
            N,
            101,
        ),
        // a unique row in between
        (
            1,
            Some(2),
            Some("[]"),
            "rx",
            R(1.0),
            R(-80.0),
            I(3),
            t("aa"),
            N,
            102,
        ),
        // group B (3 rows, path NULL and '' share the key): mixed NULLs
        (2, Some(1), None, "rx", R(1.0), N, N, N, t("[null]"), 103),
        (2, Some(1), Some(""), "rx", N, R(-70.0), N, N, N, 104),
        (2, Some(1), None, "rx", R(2.0), N, I(7), t("cafe"), N, 105),
        // group C (5 rows): every column NULL in some rows, odd storage classes
        (
            3,
            Some(3),
            Some("[\"01\",\"02\"]"),
            "rx",
            N,
            N,
            N,
            N,
            N,
            106,
        ),
        (
            3,
            Some(3),
            Some("[\"01\",\"02\"]"),
            "rx",
            t("12abc"),
            N,
            N,
            N,
            N,
            107,
        ),
        (
            3,
            Some(3),
            Some("[\"01\",\"02\"]"),
            "rx",
            N,
            t("weak"),
            N,
            Blob(vec![0, 255]),
            N,
            108,
        ),
        (
            3,
            Some(3),
            Some("[\"01\",\"02\"]"),
            "rx",
            R(3.25),
            N,
            I(9),
            N,
            t("[\"ab\",null]"),
            109,
        ),
        (
            3,
            Some(3),
            Some("[\"01\",\"02\"]"),
            "rx",
            N,
            N,
            N,
            N,
            N,
            110,
        ),
        // group D (4 rows), interleaved with E
        (4, Some(2), Some("[\"FF\"]"), "rx", N, N, N, N, N, 111),
        (
            5,
            Some(2),
            Some("[]"),
            "rx",
            R(0.5),
            R(-100.0),
            I(2),
            t("01"),
            N,
            112,
        ),
        (4, Some(2), Some("[\"FF\"]"), "rx", R(-1.0), N, N, N, N, 113),
        (5, Some(2), Some("[]"), "rx", N, N, N, N, t("[]"), 114),
        (
            4,
            Some(2),
            Some("[\"FF\"]"),
            "rx",
            N,
            R(-99.0),
            N,
            N,
            N,
            115,
        ),
        (
            4,
            Some(2),
            Some("[\"FF\"]"),
            "rx",
            N,
            N,
            I(4),
            t("dd"),
            t("[\"x\"]"),
            116,
        ),
        // NULL observer_idx: never a conflict for a UNIQUE index, left alone
        (6, None, Some("[]"), "rx", R(1.0), N, N, N, N, 117),
        (6, None, Some("[]"), "rx", R(2.0), N, N, N, N, 118),
        // same transmission and observer, different path: not a group
        (6, Some(1), Some("[\"01\"]"), "rx", N, N, N, N, N, 119),
        (6, Some(1), Some("[\"02\"]"), "rx", N, N, N, N, N, 120),
    ];
    for r in &rows {
        c.execute(
            "INSERT INTO observations (transmission_id, observer_idx, path_json, direction, snr, rssi, score, raw_hex, resolved_path, timestamp)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7, r.8, r.9],
        )
        .unwrap();
    }
    // Groups A, B, C, D, E: 2+3+5+4+2 = 16 rows into 5.
    (db, 5, 11)
}

fn planned_merge(db: &std::path::Path) -> Option<serde_json::Value> {
    let out = bin()
        .args(["migrate", "--dry-run", "--json", "--db"])
        .arg(db)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let j = json_of(&out.stdout);
    j["planned"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == MERGE_STEP)
        .cloned()
}

/// Columns no other step of `migrate` rewrites on a legacy database (its
/// observer_idx repair maps text ids, and it adds resolved_path/raw_hex).
const STABLE: &[&str] = &[
    "id",
    "transmission_id",
    "direction",
    "snr",
    "rssi",
    "score",
    "path_json",
    "timestamp",
];

fn project(cols: &[String], rows: &[Vec<Value>], keep: Option<&[&str]>) -> Vec<Vec<Value>> {
    let Some(keep) = keep else {
        return rows.to_vec();
    };
    let idx: Vec<usize> = keep
        .iter()
        .map(|k| cols.iter().position(|c| c == k).unwrap())
        .collect();
    rows.iter()
        .map(|r| idx.iter().map(|&i| r[i].clone()).collect())
        .collect()
}

/// Run the whole acceptance on `db` (which holds `groups` groups with
/// `surplus` rows to remove). `compare`: the columns compared (all when None).
fn merge_acceptance(db: &std::path::Path, groups: i64, surplus: i64, compare: Option<&[&str]>) {
    let before = {
        let c = Connection::open(db).unwrap();
        let cols = columns(&c, "observations");
        (cols.clone(), dump(&c, "observations", Some(&cols)))
    };
    let (cols, want) = expected_by_replay(db);
    let sha_before = sha256(db);

    // --dry-run prints the exact counts and changes nothing.
    if groups > 0 {
        let step = planned_merge(db).expect("merge step planned");
        assert_eq!(step["rows_estimated"], surplus, "{step}");
        assert_eq!(step["groups"], groups, "{step}");
        let what = step["what"].as_str().unwrap();
        assert!(
            what.contains(&format!(
                "merge {groups} groups of observations sharing (transmission_id, observer_idx, path_json)"
            )) && what.contains(&format!("{} rows into {groups}, {surplus} removed", groups + surplus)),
            "{what}"
        );
        let human = bin()
            .args(["migrate", "--dry-run", "--db"])
            .arg(db)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&human.stdout);
        assert!(text.contains(MERGE_STEP), "{text}");
        assert!(text.contains(&format!("merge {groups} groups")), "{text}");
    } else {
        assert!(planned_merge(db).is_none());
    }
    assert_eq!(sha256(db), sha_before, "dry run changed nothing");

    let out = bin()
        .args(["migrate", "--json", "--db"])
        .arg(db)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let j = json_of(&out.stdout);
    assert_eq!(j["merged_observations"]["groups"], groups, "{j}");
    assert_eq!(j["merged_observations"]["rows"], surplus, "{j}");
    assert_eq!(j["merged_observations"]["audit_table"], AUDIT);
    assert_eq!(j["ready"], true);

    let c = Connection::open(db).unwrap();
    // The surviving rows are exactly what the UPSERT would have produced.
    let now_cols = columns(&c, "observations");
    assert_eq!(
        project(
            &now_cols,
            &dump(&c, "observations", Some(&now_cols)),
            compare
        ),
        project(&cols, &want, compare)
    );
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM sqlite_master WHERE name = 'idx_observations_dedup'"
        ),
        1
    );
    // The audit table holds every removed row byte-for-byte (same storage
    // classes), with the id it was merged into.
    let after_ids: Vec<i64> = want
        .iter()
        .map(|r| match r[0] {
            Value::Integer(i) => i,
            _ => panic!("id"),
        })
        .collect();
    let removed: Vec<&Vec<Value>> = before
        .1
        .iter()
        .filter(|r| matches!(r[0], Value::Integer(i) if !after_ids.contains(&i)))
        .collect();
    assert_eq!(removed.len() as i64, surplus);
    if surplus == 0 {
        assert!(
            !tables(&c).contains(&AUDIT.to_string()),
            "created only when needed"
        );
    } else {
        let audit = dump(&c, AUDIT, Some(&before.0));
        let want_audit: Vec<Vec<Value>> = removed.iter().map(|r| (*r).clone()).collect();
        assert_eq!(
            project(&before.0, &audit, compare),
            project(&before.0, &want_audit, compare)
        );
        let typed = |table: &str| -> Vec<Vec<Value>> {
            let list = before
                .0
                .iter()
                .map(|c| format!("typeof({c}), hex({c})"))
                .collect::<Vec<_>>()
                .join(", ");
            let mut st = c
                .prepare(&format!(
                    "SELECT {list} FROM {table} WHERE id IN ({}) ORDER BY id",
                    {
                        removed
                            .iter()
                            .map(|r| match r[0] {
                                Value::Integer(i) => i.to_string(),
                                _ => unreachable!(),
                            })
                            .collect::<Vec<_>>()
                            .join(",")
                    }
                ))
                .unwrap();
            let n = before.0.len() * 2;
            st.query_map([], |r| (0..n).map(|i| r.get::<_, Value>(i)).collect())
                .unwrap()
                .map(|r| r.unwrap())
                .collect()
        };
        if compare.is_none() {
            // Storage classes and bytes, column by column.
            let want_typed = {
                let m = Connection::open_in_memory().unwrap();
                let list = before
                    .0
                    .iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(", ");
                m.execute_batch(&format!("CREATE TABLE {AUDIT} ({list})"))
                    .unwrap();
                for r in &want_audit {
                    m.execute(
                        &format!(
                            "INSERT INTO {AUDIT} VALUES ({})",
                            (1..=r.len())
                                .map(|i| format!("?{i}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        rusqlite::params_from_iter(r.iter()),
                    )
                    .unwrap();
                }
                let list = before
                    .0
                    .iter()
                    .map(|c| format!("typeof({c}), hex({c})"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let mut st = m
                    .prepare(&format!("SELECT {list} FROM {AUDIT} ORDER BY id"))
                    .unwrap();
                let n = before.0.len() * 2;
                let v: Vec<Vec<Value>> = st
                    .query_map([], |r| (0..n).map(|i| r.get::<_, Value>(i)).collect())
                    .unwrap()
                    .map(|r| r.unwrap())
                    .collect();
                v
            };
            assert_eq!(typed(AUDIT), want_typed);
        }
        assert_eq!(typed(AUDIT).len() as i64, surplus);
        // merged_into is the lowest id of the row's group.
        let key = |r: &Vec<Value>, cols: &[String]| {
            let g = |n: &str| r[cols.iter().position(|c| c == n).unwrap()].clone();
            let p = match g("path_json") {
                Value::Null => Value::Text(String::new()),
                v => v,
            };
            format!("{:?}|{:?}|{:?}", g("transmission_id"), g("observer_idx"), p)
        };
        let mut keeper: BTreeMap<String, i64> = BTreeMap::new();
        for r in &before.1 {
            if let Value::Integer(i) = r[0] {
                keeper.entry(key(r, &before.0)).or_insert(i);
            }
        }
        let mut st = c
            .prepare(&format!("SELECT merged_into, id FROM {AUDIT} ORDER BY id"))
            .unwrap();
        let pairs: Vec<(i64, i64)> = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        for (into, id) in pairs {
            let r = before
                .1
                .iter()
                .find(|r| r[0] == Value::Integer(id))
                .unwrap();
            assert_eq!(keeper[&key(r, &before.0)], into, "row {id}");
        }
    }
    drop(c);
    // check is ready and reports no duplicate group any more.
    let out = bin()
        .args(["check", "--json", "--db"])
        .arg(db)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let j = json_of(&out.stdout);
    assert!(!j["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w["code"] == "duplicate_dedup_keys"));
    // A second migrate changes nothing.
    let sha = sha256(db);
    bin()
        .args(["migrate", "-q", "--db"])
        .arg(db)
        .assert()
        .code(0);
    assert_eq!(sha256(db), sha, "second migrate is a no-op");
}

#[test]
fn duplicate_groups_are_merged_as_the_ingestor_upsert_would_have() {
    let dir = tempfile::tempdir().unwrap();
    let (db, groups, surplus) = database_with_duplicates(dir.path());
    // check reports the groups before (not ready: the dedup index is missing).
    let out = bin()
        .args(["check", "--json", "--deep", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let j = json_of(&out.stdout);
    let w = j["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["code"] == "duplicate_dedup_keys")
        .expect("duplicate warning")
        .clone();
    assert!(
        w["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{groups} groups ({surplus} surplus rows)")),
        "{w}"
    );
    merge_acceptance(&db, groups, surplus, None);
}

#[test]
fn every_fixture_migrates_with_and_without_added_duplicates() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures");
    let mut seen = 0;
    for e in std::fs::read_dir(&fixtures).unwrap() {
        let p = e.unwrap().path();
        if p.extension().and_then(|x| x.to_str()) != Some("db") {
            continue;
        }
        seen += 1;
        // As it is.
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("copy.db");
        std::fs::copy(&p, &db).unwrap();
        let c = Connection::open(&db).unwrap();
        let (g, s): (i64, i64) = c
            .query_row(
                "SELECT count(*), coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM observations
                  WHERE transmission_id IS NOT NULL AND observer_idx IS NOT NULL
                  GROUP BY transmission_id, observer_idx, COALESCE(path_json, '') HAVING count(*) > 1)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        drop(c);
        merge_acceptance(&db, g, s, Some(STABLE));
        // With duplicate groups added: copies of existing rows with some of
        // the merged columns NULL and others changed (2-4 rows per group).
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("dups.db");
        std::fs::copy(&p, &db).unwrap();
        let c = Connection::open(&db).unwrap();
        let cols = columns(&c, "observations");
        let has = |n: &str| cols.iter().any(|c| c == n);
        assert!(has("snr") && has("rssi") && has("score"));
        c.execute_batch(
            "CREATE TEMP TABLE pick AS SELECT id, row_number() OVER (ORDER BY id) AS k FROM observations
              WHERE observer_idx IS NOT NULL ORDER BY id LIMIT 12;
             INSERT INTO observations (transmission_id, observer_idx, direction, snr, rssi, score, path_json, timestamp)
               SELECT transmission_id, observer_idx, 'dup1', NULL, -1.5 * k, NULL, path_json, timestamp + 1
                 FROM observations JOIN pick USING (id);
             INSERT INTO observations (transmission_id, observer_idx, direction, snr, rssi, score, path_json, timestamp)
               SELECT transmission_id, observer_idx, 'dup2', k + 0.25, NULL, NULL, path_json, timestamp + 2
                 FROM observations JOIN pick USING (id) WHERE k % 2 = 0;
             INSERT INTO observations (transmission_id, observer_idx, direction, snr, rssi, score, path_json, timestamp)
               SELECT transmission_id, observer_idx, 'dup3', NULL, NULL, k, path_json, timestamp + 3
                 FROM observations JOIN pick USING (id) WHERE k % 3 = 0;",
        )
        .unwrap();
        drop(c);
        // Groups are counted after migrate's observer_idx repair maps text
        // values (the legacy fixture): compare with what the plan counts.
        let step = planned_merge(&db).expect("merge planned");
        let rows = step["rows_estimated"].as_i64().unwrap();
        assert!(rows >= 12 + 6 + 4, "{step}");
        // The plan counts before the observer_idx repair; the repair maps
        // whole groups alike, so the counts hold.
        let groups = step["groups"].as_i64().unwrap();
        merge_acceptance(&db, groups, rows, Some(STABLE));
    }
    assert!(seen >= 1, "no fixture found in {}", fixtures.display());
}

#[test]
fn merge_marks_the_graph_stale_when_build_edges_had_counted_removed_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _, surplus) = database_with_duplicates(dir.path());
    let c = Connection::open(&db).unwrap();
    // build-edges has counted everything up to the last observation, and an
    // unfinished rebuild left its staging watermark.
    c.execute_batch(
        "INSERT INTO _corescope_state (key, value, updated_at)
           SELECT 'build_edges.watermark', max(id), 'x' FROM observations;
         INSERT INTO _corescope_state (key, value, updated_at) VALUES
           ('build_edges.rebuild_watermark', '3', 'x'), ('build_edges.rebuild_owner', 'someone', 'x');",
    )
    .unwrap();
    drop(c);
    let out = bin()
        .args(["migrate", "--json", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let j = json_of(&out.stdout);
    assert_eq!(j["merged_observations"]["rows"], surplus);
    assert_eq!(j["build_edges_rebuild_needed"], true);
    let notes = j["notes"].to_string();
    assert!(notes.contains("build-edges --rebuild"), "{notes}");
    let c = Connection::open(&db).unwrap();
    assert_eq!(
        count(&c, "SELECT count(*) FROM _corescope_state WHERE key IN ('build_edges.rebuild_watermark', 'build_edges.rebuild_owner')"),
        0,
        "the unfinished rebuild starts over"
    );
    drop(c);
    let warn = |db: &std::path::Path| -> bool {
        let out = bin()
            .args(["check", "--json", "--db"])
            .arg(db)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        json_of(&out.stdout)["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["code"] == "edges_need_rebuild")
    };
    assert!(warn(&db));
    bin()
        .args(["build-edges", "--rebuild", "-q", "--db"])
        .arg(&db)
        .assert()
        .code(0);
    assert!(!warn(&db), "the rebuild clears the marker");
}

#[test]
fn merge_without_counted_rows_needs_no_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _, _) = database_with_duplicates(dir.path());
    let c = Connection::open(&db).unwrap();
    // build-edges counted only observations before every duplicate.
    c.execute_batch(
        "INSERT INTO _corescope_state (key, value, updated_at) VALUES ('build_edges.watermark', '0', 'x');",
    )
    .unwrap();
    drop(c);
    let out = bin()
        .args(["migrate", "--json", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(json_of(&out.stdout)["build_edges_rebuild_needed"], false);
}

/// 600 more groups of 2-4 rows, so that the merge takes many batches under
/// a 5 ms lock budget and kills or a second instance land between them.
fn add_bulk_groups(db: &std::path::Path) {
    let c = Connection::open(db).unwrap();
    c.execute_batch(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 600)
         INSERT INTO transmissions (raw_hex, hash, first_seen, payload_type)
           SELECT '00', 'bulk' || i, '2026-05-01T00:00:00Z', 2 FROM n;
         WITH RECURSIVE k(j) AS (SELECT 1 UNION ALL SELECT j + 1 FROM k WHERE j < 4)
         INSERT INTO observations (transmission_id, observer_idx, path_json, direction, snr, rssi, score, timestamp)
           SELECT t.id, 1 + t.id % 3, CASE WHEN j % 2 = 0 THEN '' END, 'rx',
                  CASE WHEN (t.id + j) % 3 = 0 THEN NULL ELSE j * 1.5 END,
                  CASE WHEN (t.id * j) % 4 = 1 THEN -j END,
                  CASE WHEN j = 3 THEN t.id END, 1000 + j
             FROM transmissions t JOIN k ON j <= 2 + t.id % 3
            WHERE t.hash LIKE 'bulk%' ORDER BY j, t.id;",
    )
    .unwrap();
}

#[test]
fn two_merging_migrates_at_once_equal_one() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _, _) = database_with_duplicates(dir.path());
    add_bulk_groups(&db);
    let args = ["migrate", "-q", "--max-lock-ms", "20"];
    let staggers = [
        std::time::Duration::from_millis(0),
        std::time::Duration::from_millis(40),
        std::time::Duration::from_millis(150),
    ];
    let exclude = [(AUDIT, "merged_at")];
    for bypass in [false, true] {
        let rep = support::overlap(
            "migrate merging duplicates",
            &db,
            &args,
            0,
            &exclude,
            &staggers,
            bypass,
        );
        assert_eq!(rep.converged, rep.rounds);
    }
}

#[test]
fn merge_converges_after_kills() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _, _) = database_with_duplicates(dir.path());
    add_bulk_groups(&db);
    let rep = support::crash_convergence(&support::Crash {
        name: "migrate merging duplicate observations",
        setup: &db,
        args: &["migrate", "-q", "--max-lock-ms", "20"],
        kills: support::kills_or(4),
        seed: 11,
        exclude: &[(AUDIT, "merged_at")],
        code: 0,
    });
    assert_eq!(rep.converged, rep.trials);
}

// ---------------------------------------------------------------------------
// inactive_nodes in step with nodes.

/// Fill one node with a distinct value in every column, copy it with the
/// ingestor's positional statement, and compare column by column.
fn retention_copies_every_column(db: &std::path::Path) {
    let c = Connection::open(db).unwrap();
    let nodes = columns(&c, "nodes");
    assert_eq!(
        columns(&c, "inactive_nodes"),
        nodes,
        "same columns, same order"
    );
    let vals: Vec<Value> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            if n == "public_key" {
                Value::Text("ee".repeat(32))
            } else {
                Value::Integer(1000 + i as i64)
            }
        })
        .collect();
    c.execute(
        &format!(
            "INSERT INTO nodes ({}) VALUES ({})",
            nodes
                .iter()
                .map(|n| format!("\"{n}\""))
                .collect::<Vec<_>>()
                .join(", "),
            (1..=nodes.len())
                .map(|i| format!("?{i}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        rusqlite::params_from_iter(vals.iter()),
    )
    .unwrap();
    c.execute(
        "INSERT OR REPLACE INTO inactive_nodes SELECT * FROM nodes WHERE public_key = ?1",
        ["ee".repeat(32)],
    )
    .expect("the ingestor's node retention statement");
    for n in &nodes {
        let q = |t: &str| -> Value {
            c.query_row(
                &format!("SELECT \"{n}\" FROM {t} WHERE public_key = ?1"),
                ["ee".repeat(32)],
                |r| r.get(0),
            )
            .unwrap()
        };
        assert_eq!(q("inactive_nodes"), q("nodes"), "column {n}");
    }
}

#[test]
fn inactive_nodes_is_created_with_the_columns_of_nodes() {
    // Extra column at the end of a current nodes table.
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_db(dir.path(), "end.db");
    let c = Connection::open(&db).unwrap();
    c.execute_batch("DROP TABLE inactive_nodes; ALTER TABLE nodes ADD COLUMN scope TEXT;")
        .unwrap();
    drop(c);
    bin()
        .args(["migrate", "-q", "--db"])
        .arg(&db)
        .assert()
        .code(0);
    retention_copies_every_column(&db);
    bin()
        .args(["check", "-q", "--db"])
        .arg(&db)
        .assert()
        .code(0);

    // The real capture's case on the legacy fixture: nodes gains `scope`
    // before migrate appends the catalog's later columns, so the extra
    // column sits before the catalog's last ones.
    let db = legacy_copy(dir.path());
    let c = Connection::open(&db).unwrap();
    c.execute_batch("ALTER TABLE nodes ADD COLUMN scope TEXT DEFAULT 'x';")
        .unwrap();
    drop(c);
    let out = bin()
        .args(["migrate", "--dry-run", "--json", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    let j = json_of(&out.stdout);
    assert!(!j["planned"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["name"] == "rebuild:inactive_nodes"));
    bin()
        .args(["migrate", "-q", "--db"])
        .arg(&db)
        .assert()
        .code(0);
    let c = Connection::open(&db).unwrap();
    let nodes = columns(&c, "nodes");
    let pos = |n: &str| nodes.iter().position(|x| x == n).unwrap();
    assert!(pos("scope") < pos("multibyte_evidence"), "{nodes:?}");
    drop(c);
    retention_copies_every_column(&db);
    let sha = sha256(&db);
    bin()
        .args(["migrate", "-q", "--db"])
        .arg(&db)
        .assert()
        .code(0);
    assert_eq!(sha256(&db), sha);
    bin()
        .args(["check", "-q", "--db"])
        .arg(&db)
        .assert()
        .code(0);
}

#[test]
fn a_drifted_inactive_nodes_is_reported_and_rebuilt_with_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_db(dir.path(), "drift.db");
    let c = Connection::open(&db).unwrap();
    // nodes gained `scope`; inactive_nodes has another order and a column
    // of its own, and holds rows.
    c.execute_batch(
        "ALTER TABLE nodes ADD COLUMN scope TEXT;
         DROP TABLE inactive_nodes;
         CREATE TABLE inactive_nodes (
           name TEXT, public_key TEXT PRIMARY KEY, role TEXT, lat REAL, lon REAL, last_seen TEXT,
           first_seen TEXT, advert_count INTEGER DEFAULT 0, battery_mv INTEGER, temperature_c REAL,
           foreign_advert INTEGER DEFAULT 0, default_scope TEXT DEFAULT NULL,
           multibyte_sup INTEGER NOT NULL DEFAULT 0, multibyte_evidence TEXT, legacy_note TEXT);
         CREATE INDEX idx_inactive_nodes_last_seen ON inactive_nodes(last_seen);
         INSERT INTO inactive_nodes (name, public_key, role, lat, lon, last_seen, advert_count, multibyte_sup, legacy_note)
           VALUES ('n1', 'aa', 'repeater', 1.5, 2.5, '2026-01-01T00:00:00Z', 3, 1, 'kept'),
                  ('n2', 'bb', NULL, NULL, NULL, NULL, 0, 0, NULL);",
    )
    .unwrap();
    let old_cols = columns(&c, "inactive_nodes");
    let old_rows = dump(&c, "inactive_nodes", Some(&old_cols));
    drop(c);
    // check reports the drift (a warning: the schema is otherwise ready).
    let out = bin()
        .args(["check", "--json", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let j = json_of(&out.stdout);
    let w = j["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["code"] == "inactive_nodes_drift")
        .expect("drift warning")
        .clone();
    let msg = w["message"].as_str().unwrap();
    assert!(msg.contains("only in nodes: scope"), "{msg}");
    assert!(msg.contains("only in inactive_nodes: legacy_note"), "{msg}");
    assert!(
        msg.contains("first difference at column 1: nodes.public_key vs inactive_nodes.name"),
        "{msg}"
    );
    // The dry run shows the rebuild with the rows it copies.
    let out = bin()
        .args(["migrate", "--dry-run", "--json", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    let j = json_of(&out.stdout);
    let step = j["planned"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "rebuild:inactive_nodes")
        .expect("rebuild planned")
        .clone();
    assert_eq!(step["rows_estimated"], 2);
    bin()
        .args(["migrate", "-q", "--db"])
        .arg(&db)
        .assert()
        .code(0);
    let c = Connection::open(&db).unwrap();
    let nodes = columns(&c, "nodes");
    assert_eq!(nodes.last().map(String::as_str), Some("legacy_note"));
    assert_eq!(columns(&c, "inactive_nodes"), nodes);
    // Every row and every value kept, by column name.
    assert_eq!(dump(&c, "inactive_nodes", Some(&old_cols)), old_rows);
    assert_eq!(
        count(&c, "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'idx_inactive_nodes_last_seen' AND tbl_name = 'inactive_nodes'"),
        1
    );
    drop(c);
    retention_copies_every_column(&db);
    let out = bin()
        .args(["check", "--json", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(!json_of(&out.stdout)["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w["code"] == "inactive_nodes_drift"));
    let sha = sha256(&db);
    bin()
        .args(["migrate", "-q", "--db"])
        .arg(&db)
        .assert()
        .code(0);
    assert_eq!(sha256(&db), sha);
}

#[test]
fn groups_formed_by_the_observer_idx_repair_are_merged_in_the_same_run() {
    // Legacy rows hold the observer id as text; a copy holding the
    // observer's rowid is the same key once the repair maps the text.
    let dir = tempfile::tempdir().unwrap();
    let db = legacy_copy(dir.path());
    let c = Connection::open(&db).unwrap();
    c.execute_batch(
        "INSERT INTO observations (transmission_id, observer_idx, direction, snr, rssi, score, path_json, timestamp)
         SELECT o.transmission_id, b.rowid, o.direction, 7.5, NULL, NULL, o.path_json, o.timestamp
           FROM observations o JOIN observers b ON lower(b.id) = lower(o.observer_idx)
          WHERE o.id IN (SELECT min(id) FROM observations GROUP BY observer_idx LIMIT 3);",
    )
    .unwrap();
    let n = count(&c, "SELECT count(*) FROM observations");
    drop(c);
    let step = planned_merge(&db).expect("merge planned from the mapped keys");
    assert_eq!(step["rows_estimated"], 3, "{step}");
    assert_eq!(step["groups"], 3, "{step}");
    let out = bin()
        .args(["migrate", "--json", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let j = json_of(&out.stdout);
    assert_eq!(j["merged_observations"]["groups"], 3);
    let c = Connection::open(&db).unwrap();
    assert_eq!(count(&c, "SELECT count(*) FROM observations"), n - 3);
    // The later copy's snr was merged into the surviving (first) row.
    assert_eq!(
        count(&c, "SELECT count(*) FROM observations o JOIN _corescope_merged_observations m ON m.merged_into = o.id WHERE o.snr = 7.5"),
        3
    );
    drop(c);
    bin()
        .args(["check", "-q", "--db"])
        .arg(&db)
        .assert()
        .code(0);
}
