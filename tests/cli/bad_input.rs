//! Bad inputs: each gives its exit code and a one-line error naming the path,
//! and no file is created or modified.

use crate::harness::common;

use std::path::Path;

use common::*;

/// Run `args` against `db` for check and migrate; assert exit code, one line
/// naming the path with `needle`, and an unchanged directory.
fn refused(dir: &Path, db: &Path, code: i32, needle: &str) {
    let before = listing(dir);
    for cmd in [
        vec!["check"],
        vec!["migrate"],
        vec!["migrate", "--dry-run"],
        vec!["check", "--json"],
    ] {
        let out = bin().args(&cmd).arg("--db").arg(db).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(code),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{cmd:?} one line: {err}");
        assert!(
            err.contains(&db.display().to_string()),
            "{cmd:?} names the path: {err}"
        );
        assert!(err.contains(needle), "{cmd:?} says '{needle}': {err}");
        if cmd.contains(&"--json") {
            let j = json_of(&out.stdout);
            assert_eq!(j["ok"], false);
            assert_eq!(j["exit_code"], code);
        } else {
            assert!(out.stdout.is_empty());
        }
        assert_eq!(listing(dir), before, "{cmd:?} changed the directory");
    }
}

#[test]
fn missing_path() {
    let d = tempfile::tempdir().unwrap();
    refused(d.path(), &d.path().join("typo.db"), 1, "does not exist");
}

#[test]
fn empty_file() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("empty.db");
    std::fs::write(&p, b"").unwrap();
    refused(d.path(), &p, 1, "empty file");
}

#[test]
fn text_file() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("notes.txt");
    std::fs::write(&p, "dbPath = /var/lib/corescope\n".repeat(100)).unwrap();
    refused(d.path(), &p, 1, "not a SQLite database");
}

#[test]
fn random_bytes() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("random.db");
    let bytes: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&p, bytes).unwrap();
    refused(d.path(), &p, 1, "not a SQLite database");
}

#[test]
fn truncated_database() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("cut.db");
    let bytes = std::fs::read(fixture()).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    refused(d.path(), &p, 1, "truncated");
}

#[test]
fn database_of_another_application() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("other.db");
    rusqlite::Connection::open(&p)
        .unwrap()
        .execute_batch("CREATE TABLE songs (id INTEGER PRIMARY KEY, title TEXT); INSERT INTO songs (title) VALUES ('x');")
        .unwrap();
    refused(d.path(), &p, 1, "not a CoreScope database: missing core tables transmissions, observations, nodes, observers");
}

#[test]
fn a_directory() {
    let d = tempfile::tempdir().unwrap();
    let sub = d.path().join("data");
    std::fs::create_dir(&sub).unwrap();
    refused(d.path(), &sub, 1, "is a directory");
}

#[test]
fn no_database_given_is_a_usage_error() {
    let out = bin().arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no database given"));
}

#[test]
fn unknown_flag_and_bad_values_are_usage_errors() {
    bin()
        .args(["check", "--frobnicate", "--db", "x.db"])
        .assert()
        .code(2);
    bin()
        .args(["check", "--target", "newest", "--db", "x.db"])
        .assert()
        .code(2);
    bin()
        .args(["migrate", "--max-lock-ms", "0", "--db", "x.db"])
        .assert()
        .code(2);
    bin().args(["bogus-command"]).assert().code(2);
}

#[test]
fn malformed_config_names_file_line_and_column() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("config.json");
    std::fs::write(
        &cfg,
        "{\n  \"dbPath\": \"x.db\",\n  \"retention\": {\"nodeDays\": 7,,}\n}\n",
    )
    .unwrap();
    let out = bin()
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&cfg.display().to_string())
            && err.contains("line 3")
            && err.contains("column"),
        "{err}"
    );
    // A wrong type is an error too.
    std::fs::write(&cfg, "{\"retention\": {\"nodeDays\": \"seven\"}}").unwrap();
    let out = bin()
        .args(["check", "--db", "x.db", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1"));
}

#[test]
fn database_from_config_and_environment() {
    let d = tempfile::tempdir().unwrap();
    let db = fresh_db(d.path(), "cfg.db");
    let cfg = d.path().join("config.json");
    std::fs::write(
        &cfg,
        format!(
            "{{\"dbPath\": {:?}, \"mqtt\": {{\"broker\": \"x\"}}}}",
            db.display().to_string()
        ),
    )
    .unwrap();
    bin()
        .args(["check", "-q", "--config"])
        .arg(&cfg)
        .assert()
        .code(0);
    bin()
        .args(["check", "-q"])
        .env("CORESCOPE_CONFIG", &cfg)
        .assert()
        .code(0);
    bin()
        .args(["check", "-q"])
        .env("CORESCOPE_DB", &db)
        .assert()
        .code(0);
    // --db wins over the environment.
    bin()
        .args(["check", "-q", "--db"])
        .arg(d.path().join("nope.db"))
        .env("CORESCOPE_DB", &db)
        .assert()
        .code(1);
}

#[test]
fn path_with_spaces_and_unicode() {
    let d = tempfile::tempdir().unwrap();
    let sub = d.path().join("mesh data ü");
    std::fs::create_dir(&sub).unwrap();
    let db = sub.join("core scope é.db");
    bin()
        .args(["migrate", "--create", "-q", "--db"])
        .arg(&db)
        .assert()
        .code(0);
    bin()
        .args(["check", "-q", "--db"])
        .arg(&db)
        .assert()
        .code(0);
}
