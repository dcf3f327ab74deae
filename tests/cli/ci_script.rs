//! docs/ci.md's script, contrib/ci/schema-check.sh, run against copies of
//! the legacy fixture: passes on the fixture, fails on a broken copy, and
//! never modifies the database it is given.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::harness::Fixture;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/ci/schema-check.sh")
}

fn run_script(dir: &Path, db: &Path) -> Output {
    std::process::Command::new("sh")
        .arg(script())
        .arg(db)
        .env("CORESCOPE", env!("CARGO_BIN_EXE_corescope"))
        .env("SCHEMA_DIFF_JSON", dir.join("report.json"))
        .env_remove("CORESCOPE_DB")
        .env_remove("CORESCOPE_CONFIG")
        .env_remove("CORESCOPE_METRICS_FILE")
        .current_dir(dir)
        .output()
        .unwrap()
}

fn report(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap()
}

#[test]
fn ci_script_passes_on_the_fixture_and_leaves_it_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let db = Fixture::Legacy.copy_to(dir.path());
    let before = std::fs::read(&db).unwrap();
    let out = run_script(dir.path(), &db);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&db).unwrap(), before);
    let j = report(dir.path());
    assert_eq!(j["diff"], serde_json::json!([]));
    assert_eq!(j["counts"]["breaks"], 0);
}

#[test]
fn ci_script_fails_on_a_broken_copy() {
    let dir = tempfile::tempdir().unwrap();
    let db = Fixture::Legacy.copy_to(dir.path());
    {
        // nodes.lat as TEXT: migrate cannot repair it.
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("PRAGMA writable_schema = ON").unwrap();
        let n = conn
            .execute(
                "UPDATE sqlite_master SET sql = replace(sql, 'lat REAL', 'lat TEXT') WHERE name = 'nodes'",
                [],
            )
            .unwrap();
        assert_eq!(n, 1);
        conn.execute_batch("PRAGMA writable_schema = OFF").unwrap();
    }
    let out = run_script(dir.path(), &db);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("a difference breaks CoreScope"), "{stderr}");
    let j = report(dir.path());
    assert_eq!(j["counts"]["breaks"], 1, "{j}");
    assert_eq!(j["diff"][0]["object"], "column:nodes.lat");
}

#[test]
fn ci_script_names_a_missing_database() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_script(dir.path(), &dir.path().join("nope.db"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.db: no such file"));
}
