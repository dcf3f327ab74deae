//! `check --diff`: one database per difference class, each made by
//! `migrate --create` and then altered the way real databases drift.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::harness::{Corescope, Fixture};

pub(crate) fn created(dir: &Path) -> PathBuf {
    let db = dir.join("d.db");
    Corescope::new()
        .db(&db)
        .args(["migrate", "--create"])
        .expect_code(0)
        .run();
    db
}

pub(crate) fn alter(db: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute_batch(sql).unwrap();
}

/// Change a stored CREATE statement in place (SQLite cannot alter a
/// column's type or constraints).
pub(crate) fn edit_schema(db: &Path, name: &str, from: &str, to: &str) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute_batch("PRAGMA writable_schema = ON").unwrap();
    let n = conn
        .execute(
            "UPDATE sqlite_master SET sql = replace(sql, ?2, ?3) WHERE name = ?1",
            [name, from, to],
        )
        .unwrap();
    assert_eq!(n, 1);
    conn.execute_batch("PRAGMA writable_schema = OFF").unwrap();
    drop(conn);
    let conn = rusqlite::Connection::open(db).unwrap();
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
}

/// `check --diff --json` with the expected exit code: its `diff` entries.
pub(crate) fn diff(db: &Path, code: i32) -> Vec<Value> {
    let before = std::fs::read(db).unwrap();
    let j = Corescope::new()
        .db(db)
        .args(["check", "--diff", "--json"])
        .expect_code(code)
        .json();
    assert_eq!(
        std::fs::read(db).unwrap(),
        before,
        "check --diff wrote the file"
    );
    assert_eq!(j["target"], "latest");
    j["diff"].as_array().unwrap().clone()
}

fn entry(object: &str, expected: &str, actual: &str, severity: &str) -> Value {
    json!({"object": object, "expected": expected, "actual": actual, "severity": severity})
}

/// The entries without their fix text (asserted separately where it matters).
fn without_fix(entries: &[Value]) -> Vec<Value> {
    entries
        .iter()
        .map(|e| {
            let mut e = e.clone();
            assert!(!e["fix"].as_str().unwrap().is_empty());
            e.as_object_mut().unwrap().remove("fix");
            e
        })
        .collect()
}

#[test]
fn diff_created_database_has_no_entries() {
    let dir = tempfile::tempdir().unwrap();
    let db = created(dir.path());
    assert_eq!(diff(&db, 0), Vec::<Value>::new());
    let human = Corescope::new()
        .db(&db)
        .args(["check", "--diff"])
        .expect_code(0)
        .stdout();
    assert!(human.contains("no differences"), "{human}");
}

#[test]
fn diff_schema_sql_applied_to_an_empty_file_is_identical() {
    let dir = tempfile::tempdir().unwrap();
    let sql = Corescope::new()
        .args(["schema", "--target", "latest", "--format", "sql"])
        .expect_code(0)
        .stdout();
    let db = dir.path().join("applied.db");
    alter(&db, &sql);
    assert_eq!(diff(&db, 0), Vec::<Value>::new());
}

#[test]
fn diff_migrated_legacy_fixture_has_no_entries() {
    let dir = tempfile::tempdir().unwrap();
    let db = Fixture::Legacy.copy_to(dir.path());
    // Before migrate: differences that break CoreScope, exit 3.
    let before = diff(&db, 3);
    assert!(before
        .iter()
        .any(|e| e["object"] == "index:idx_observations_dedup" && e["severity"] == "breaks"));
    Corescope::new()
        .db(&db)
        .args(["migrate"])
        .expect_code(0)
        .run();
    assert_eq!(diff(&db, 0), Vec::<Value>::new());
}

#[test]
fn diff_wrong_column_type_breaks() {
    let dir = tempfile::tempdir().unwrap();
    let db = created(dir.path());
    edit_schema(&db, "nodes", "lat REAL", "lat TEXT");
    let d = diff(&db, 3);
    assert_eq!(
        without_fix(&d),
        vec![entry("column:nodes.lat", "REAL", "TEXT", "breaks")]
    );
    assert!(d[0]["fix"].as_str().unwrap().contains("rebuild nodes"));
}

#[test]
fn diff_same_affinity_other_type_name_is_drift() {
    let dir = tempfile::tempdir().unwrap();
    let db = created(dir.path());
    edit_schema(&db, "nodes", "lat REAL", "lat DOUBLE");
    assert_eq!(
        without_fix(&diff(&db, 0)),
        vec![entry("column:nodes.lat", "REAL", "DOUBLE", "drift")]
    );
}

#[test]
fn diff_missing_not_null_and_default_breaks() {
    let dir = tempfile::tempdir().unwrap();
    let db = created(dir.path());
    edit_schema(
        &db,
        "nodes",
        "multibyte_sup INTEGER NOT NULL DEFAULT 0",
        "multibyte_sup INTEGER",
    );
    assert_eq!(
        without_fix(&diff(&db, 3)),
        vec![entry(
            "column:nodes.multibyte_sup",
            "INTEGER NOT NULL DEFAULT 0",
            "INTEGER",
            "breaks"
        )]
    );
}

#[test]
fn diff_extra_column_in_nodes_breaks_inactive_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let db = created(dir.path());
    alter(&db, "ALTER TABLE nodes ADD COLUMN scope TEXT");
    let d = diff(&db, 3);
    let cols = "public_key, name, role, lat, lon, last_seen, first_seen, advert_count, battery_mv, temperature_c, foreign_advert, default_scope, multibyte_sup, multibyte_evidence";
    assert_eq!(
        without_fix(&d),
        vec![
            entry(
                "table:inactive_nodes",
                &format!("the columns of nodes, in order: {cols}, scope"),
                cols,
                "breaks"
            ),
            entry("column:nodes.scope", "-", "TEXT", "extra"),
        ]
    );
    assert!(d[0]["fix"].as_str().unwrap().contains("corescope migrate"));
}

const DEDUP: &str = "CREATE UNIQUE INDEX idx_observations_dedup ON observations(transmission_id, observer_idx, COALESCE(path_json, ''))";

#[test]
fn diff_dedup_index_without_coalesce_breaks() {
    let dir = tempfile::tempdir().unwrap();
    let db = created(dir.path());
    alter(
        &db,
        "DROP INDEX idx_observations_dedup; CREATE UNIQUE INDEX idx_observations_dedup ON observations(transmission_id, observer_idx, path_json)",
    );
    let d = diff(&db, 3);
    assert_eq!(
        without_fix(&d),
        vec![entry(
            "index:idx_observations_dedup",
            DEDUP,
            "CREATE UNIQUE INDEX idx_observations_dedup ON observations(transmission_id, observer_idx, path_json)",
            "breaks"
        )]
    );
    assert!(d[0]["fix"]
        .as_str()
        .unwrap()
        .starts_with("run `corescope migrate` (it drops and re-creates idx_observations_dedup"));
}

#[test]
fn diff_non_unique_dedup_index_breaks() {
    let dir = tempfile::tempdir().unwrap();
    let db = created(dir.path());
    alter(
        &db,
        "DROP INDEX idx_observations_dedup; CREATE INDEX idx_observations_dedup ON observations(transmission_id, observer_idx, COALESCE(path_json, ''))",
    );
    assert_eq!(
        without_fix(&diff(&db, 3)),
        vec![entry(
            "index:idx_observations_dedup",
            DEDUP,
            "CREATE INDEX idx_observations_dedup ON observations(transmission_id, observer_idx, COALESCE(path_json, ''))",
            "breaks"
        )]
    );
}

#[test]
fn diff_partial_index_without_where_breaks() {
    let dir = tempfile::tempdir().unwrap();
    let db = created(dir.path());
    alter(
        &db,
        "DROP INDEX idx_tx_channel_hash; CREATE INDEX idx_tx_channel_hash ON transmissions(channel_hash)",
    );
    assert_eq!(
        without_fix(&diff(&db, 3)),
        vec![entry(
            "index:idx_tx_channel_hash",
            "CREATE INDEX idx_tx_channel_hash ON transmissions(channel_hash) WHERE payload_type = 5",
            "CREATE INDEX idx_tx_channel_hash ON transmissions(channel_hash)",
            "breaks"
        )]
    );
}

#[test]
fn diff_old_view_sql_breaks_and_migrate_repairs_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = created(dir.path());
    alter(
        &db,
        "DROP VIEW packets_v; CREATE VIEW packets_v AS SELECT o.id, o.raw_hex FROM observations o",
    );
    let d = diff(&db, 3);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0]["object"], "view:packets_v");
    assert_eq!(d[0]["severity"], "breaks");
    assert_eq!(
        d[0]["actual"],
        "CREATE VIEW packets_v AS SELECT o.id, o.raw_hex FROM observations o"
    );
    assert!(d[0]["expected"].as_str().unwrap().starts_with(
        "CREATE VIEW packets_v AS SELECT o.id, COALESCE(o.raw_hex, t.raw_hex) AS raw_hex,"
    ));
    Corescope::new()
        .db(&db)
        .args(["migrate"])
        .expect_code(0)
        .run();
    assert_eq!(diff(&db, 0), Vec::<Value>::new());
}

#[test]
fn diff_extra_trigger_is_extra_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let db = created(dir.path());
    alter(
        &db,
        "CREATE TRIGGER trg_nodes_audit AFTER INSERT ON nodes BEGIN SELECT 1; END",
    );
    let d = diff(&db, 0);
    assert_eq!(
        without_fix(&d),
        vec![entry(
            "trigger:trg_nodes_audit",
            "-",
            "CREATE TRIGGER trg_nodes_audit AFTER INSERT ON nodes BEGIN SELECT 1; END",
            "extra"
        )]
    );
}

#[test]
fn diff_quiet_names_what_breaks_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let db = created(dir.path());
    edit_schema(&db, "nodes", "lat REAL", "lat TEXT");
    let out = Corescope::new()
        .db(&db)
        .args(["check", "--diff", "-q"])
        .expect_code(3)
        .run();
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("1 difference that breaks CoreScope (column:nodes.lat)"),
        "{err}"
    );
}

#[test]
fn diff_leaves_the_metrics_file_of_check_alone() {
    let dir = tempfile::tempdir().unwrap();
    let db = created(dir.path());
    let prom = dir.path().join("corescope.prom");
    Corescope::new()
        .db(&db)
        .arg("check")
        .arg("--metrics-file")
        .arg(&prom)
        .expect_code(0)
        .run();
    let before = std::fs::read(&prom).unwrap();
    assert!(
        String::from_utf8_lossy(&before).contains("corescope_schema_ready{command=\"check\"} 1")
    );
    edit_schema(&db, "nodes", "lat REAL", "lat TEXT");
    let out = Corescope::new()
        .db(&db)
        .args(["check", "--diff"])
        .arg("--metrics-file")
        .arg(&prom)
        .expect_code(3)
        .run();
    assert_eq!(std::fs::read(&prom).unwrap(), before);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--metrics-file is ignored by check"));
}
