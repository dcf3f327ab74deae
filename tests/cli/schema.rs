//! `corescope schema`: the catalog of a target and a database's actual
//! schema in one normalised form, so `diff` of the two is meaningful.

use std::path::Path;

use crate::harness::{Corescope, Fixture};

fn schema_of_db(db: &Path) -> String {
    Corescope::new()
        .arg("schema")
        .arg("--from-db")
        .arg(db)
        .expect_code(0)
        .stdout()
}

fn target_sql(target: &str) -> String {
    Corescope::new()
        .args(["schema", "--target", target, "--format", "sql"])
        .expect_code(0)
        .stdout()
}

#[test]
fn schema_sql_applied_to_an_empty_file_round_trips_and_equals_migrate_create() {
    let dir = tempfile::tempdir().unwrap();
    let latest = target_sql("latest");
    assert!(latest.contains(
        "CREATE UNIQUE INDEX idx_observations_dedup ON observations(transmission_id, observer_idx, COALESCE(path_json, ''));\n"
    ));
    assert!(!latest.contains("IF NOT EXISTS"));

    // The printed SQL, applied to an empty file, builds the same schema.
    let applied = dir.path().join("applied.db");
    let conn = rusqlite::Connection::open(&applied).unwrap();
    conn.execute_batch(&latest).unwrap();
    drop(conn);
    assert_eq!(schema_of_db(&applied), latest);

    // migrate --create builds exactly that schema too.
    let created = dir.path().join("created.db");
    Corescope::new()
        .db(&created)
        .args(["migrate", "--create"])
        .expect_code(0)
        .run();
    assert_eq!(schema_of_db(&created), latest);
}

#[test]
fn schema_seed_target_is_a_smaller_catalog() {
    let seed = target_sql("seed");
    let latest = target_sql("latest");
    assert!(seed.lines().count() < latest.lines().count());
    assert!(!seed.contains("client_receptions"));
    assert!(latest.contains("CREATE TABLE client_receptions "));
}

#[test]
fn schema_json_parses_and_lists_the_same_statements() {
    let out = Corescope::new()
        .args(["schema", "--format", "json"])
        .expect_code(0)
        .stdout();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["source"], "target:latest");
    let objects = v["objects"].as_array().unwrap();
    let sql: String = objects
        .iter()
        .map(|o| format!("{};\n", o["sql"].as_str().unwrap()))
        .collect();
    assert_eq!(sql, target_sql("latest"));
    let dedup = objects
        .iter()
        .find(|o| o["name"] == "idx_observations_dedup")
        .unwrap();
    assert_eq!(dedup["type"], "index");
    assert_eq!(dedup["table"], "observations");
}

#[test]
fn schema_from_db_is_read_only_and_shows_what_differs() {
    let dir = tempfile::tempdir().unwrap();
    let db = Fixture::Legacy.copy_to(dir.path());
    let before = std::fs::read(&db).unwrap();
    let legacy = schema_of_db(&db);
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "schema --from-db wrote the file"
    );
    // No SQLite internals (the fixture has AUTOINCREMENT: sqlite_sequence).
    assert!(!legacy.contains("sqlite_"));
    assert!(legacy.contains("CREATE TABLE nodes "));
    assert!(!legacy.contains("idx_observations_dedup"));
    assert_ne!(legacy, target_sql("latest"));
}

#[test]
fn schema_from_db_names_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.db");
    let err = Corescope::new()
        .arg("schema")
        .arg("--from-db")
        .arg(&missing)
        .expect_code(1)
        .stderr();
    assert!(err.contains("nope.db"), "{err}");
    assert!(!missing.exists());
}
