//! `migrate` repairs the indexes that break CoreScope statements (a dedup
//! index the ingestor's UPSERT cannot name, a partial index without its
//! `WHERE`), shows them in `--dry-run`, leaves harmless differences alone,
//! and reports what it cannot repair (a column of the wrong type) with the
//! manual procedure.

use std::path::Path;

use serde_json::Value;

use crate::harness::common::count;
use crate::harness::Corescope;
use crate::schema_diff::{alter, created, diff, edit_schema};

/// The CoreScope ingestor's observation insert (its UPSERT names the dedup
/// index's exact expression).
const UPSERT: &str = "INSERT INTO observations (transmission_id, observer_idx, path_json, snr, timestamp) \
     VALUES (?1, ?2, ?3, ?4, 1767225600) \
     ON CONFLICT(transmission_id, observer_idx, COALESCE(path_json, '')) DO UPDATE SET snr = COALESCE(excluded.snr, snr)";

fn json(db: &Path, args: &[&str], code: i32) -> Value {
    Corescope::new()
        .db(db)
        .args(args)
        .args(["--json"])
        .expect_code(code)
        .json()
}

fn planned(db: &Path) -> Vec<(String, String)> {
    let before = std::fs::read(db).unwrap();
    let j = json(db, &["migrate", "--dry-run"], 0);
    assert_eq!(std::fs::read(db).unwrap(), before, "dry run wrote the file");
    j["planned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["what"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn ingestor_upsert_works(db: &Path) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.execute_batch(
        "INSERT OR IGNORE INTO transmissions (id, raw_hex, hash, first_seen) VALUES (1, '00', 'h1', '2026-01-01T00:00:00Z')",
    )
    .unwrap();
    let before = count(&c, "SELECT count(*) FROM observations");
    c.execute(UPSERT, rusqlite::params![1, 7, Option::<String>::None, 1.5])
        .unwrap();
    c.execute(UPSERT, rusqlite::params![1, 7, Option::<String>::None, 2.5])
        .unwrap();
    assert_eq!(
        count(&c, "SELECT count(*) FROM observations"),
        before + 1,
        "the second UPSERT of the same key must update, not insert"
    );
}

#[test]
fn wrong_dedup_index_is_not_ready_and_migrate_merges_and_recreates_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = created(dir.path());
    // Without COALESCE, NULL paths never collide: the ingestor's UPSERT
    // cannot be prepared, and duplicates slip in.
    alter(
        &db,
        "DROP INDEX idx_observations_dedup;
         CREATE UNIQUE INDEX idx_observations_dedup ON observations(transmission_id, observer_idx, path_json);
         INSERT INTO transmissions (id, raw_hex, hash, first_seen) VALUES (1, '00', 'h1', '2026-01-01T00:00:00Z');
         INSERT INTO observations (id, transmission_id, observer_idx, path_json, snr, timestamp) VALUES
           (10, 1, 3, NULL, NULL, 1767225600), (11, 1, 3, NULL, 4.5, 1767225601), (12, 1, 4, '[\"ab\"]', 1.0, 1767225602);",
    );
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        let Err(e) = c.prepare(UPSERT) else {
            panic!("the UPSERT must not prepare without the right dedup index")
        };
        assert!(e.to_string().contains("ON CONFLICT"), "{e}");
    }
    let check = json(&db, &["check"], 3);
    assert_eq!(check["ready"], false);
    assert!(
        check["missing"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m == "index:idx_observations_dedup"),
        "{check}"
    );
    let steps = planned(&db);
    let names: Vec<&str> = steps.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "merge:duplicate_observations",
            "index:idx_observations_dedup"
        ]
    );
    assert!(
        steps[1]
            .1
            .starts_with("drop and re-create index idx_observations_dedup on observations"),
        "{}",
        steps[1].1
    );

    let j = json(&db, &["migrate"], 0);
    assert_eq!(j["ready"], true, "{j}");
    assert_eq!(j["merged_observations"]["rows"], 1, "{j}");
    assert_eq!(j["not_repaired"], serde_json::json!([]));
    assert_eq!(diff(&db, 0), Vec::<Value>::new());
    let c = rusqlite::Connection::open(&db).unwrap();
    // The lowest id is kept and filled from the later copy, as the UPSERT would.
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM observations WHERE id = 10 AND snr = 4.5"
        ),
        1
    );
    assert_eq!(count(&c, "SELECT count(*) FROM observations"), 2);
    assert_eq!(
        count(&c, "SELECT count(*) FROM _corescope_merged_observations WHERE id = 11 AND merged_into = 10"),
        1
    );
    drop(c);
    ingestor_upsert_works(&db);
    // Repaired for good: nothing left to do.
    assert_eq!(planned(&db), vec![]);
}

#[test]
fn non_unique_dedup_index_without_duplicates_is_recreated_unique() {
    let dir = tempfile::tempdir().unwrap();
    let db = created(dir.path());
    alter(
        &db,
        "DROP INDEX idx_observations_dedup;
         CREATE INDEX idx_observations_dedup ON observations(transmission_id, observer_idx, COALESCE(path_json, ''));",
    );
    let steps = planned(&db);
    assert_eq!(steps.len(), 1, "{steps:?}");
    assert_eq!(steps[0].0, "index:idx_observations_dedup");
    json(&db, &["migrate"], 0);
    assert_eq!(diff(&db, 0), Vec::<Value>::new());
    ingestor_upsert_works(&db);
}

#[test]
fn partial_index_without_where_is_recreated_and_ready_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let db = created(dir.path());
    alter(
        &db,
        "DROP INDEX idx_tx_channel_hash; CREATE INDEX idx_tx_channel_hash ON transmissions(channel_hash)",
    );
    // No ingestor statement fails on it: ready, but --diff and migrate see it.
    assert_eq!(json(&db, &["check"], 0)["ready"], true);
    let steps = planned(&db);
    assert_eq!(
        steps,
        vec![(
            "index:idx_tx_channel_hash".to_string(),
            "drop and re-create index idx_tx_channel_hash on transmissions (its definition breaks a CoreScope statement; `corescope check --diff` shows it)".to_string()
        )]
    );
    let j = json(&db, &["migrate"], 0);
    assert_eq!(
        j["applied"],
        serde_json::json!(["index:idx_tx_channel_hash"])
    );
    assert_eq!(diff(&db, 0), Vec::<Value>::new());
    let c = rusqlite::Connection::open(&db).unwrap();
    let sql: String = c
        .query_row(
            "SELECT sql FROM sqlite_master WHERE name = 'idx_tx_channel_hash'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(sql.ends_with("WHERE payload_type = 5"), "{sql}");
}

#[test]
fn harmless_index_difference_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let db = created(dir.path());
    alter(
        &db,
        "DROP INDEX idx_tx_channel_hash; CREATE INDEX idx_tx_channel_hash ON transmissions(channel_hash) WHERE payload_type=5",
    );
    let d = diff(&db, 0);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0]["severity"], "drift");
    assert_eq!(planned(&db), vec![]);
    let before = std::fs::read(&db).unwrap();
    json(&db, &["migrate"], 0);
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "migrate changed a harmless index"
    );
}

#[test]
fn wrong_column_type_is_reported_with_the_manual_procedure() {
    let dir = tempfile::tempdir().unwrap();
    let db = created(dir.path());
    edit_schema(&db, "nodes", "lat REAL", "lat TEXT");
    let dry = json(&db, &["migrate", "--dry-run"], 0);
    let entries = dry["not_repaired"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{dry}");
    assert_eq!(entries[0]["object"], "column:nodes.lat");
    assert_eq!(entries[0]["actual"], "TEXT");
    assert_eq!(entries[0]["expected"], "REAL");
    let fix = entries[0]["fix"].as_str().unwrap();
    assert!(
        fix.contains("rebuild nodes") && fix.contains("A column of the wrong type"),
        "{fix}"
    );

    let before = std::fs::read(&db).unwrap();
    let human = Corescope::new()
        .db(&db)
        .args(["migrate"])
        .expect_code(0)
        .stdout();
    assert!(
        human.contains(
            "NOT REPAIRED column:nodes.lat: the database has TEXT, the catalog wants REAL"
        ),
        "{human}"
    );
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "nothing to do, nothing written"
    );
    assert_eq!(
        json(&db, &["migrate"], 0)["not_repaired"][0]["object"],
        "column:nodes.lat"
    );
}
