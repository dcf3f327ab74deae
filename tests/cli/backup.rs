//! `corescope backup PATH` (and `migrate --backup`, `vacuum --full
//! --backup`): a copy equal to the source as of one instant while a writer
//! inserts, checked with quick_check; the output-path rules; the disk-space
//! check.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use rusqlite::types::Value;
use rusqlite::Connection;

use crate::harness::common::{fresh_db, legacy_copy, listing, sha256};
use crate::harness::support::{LiveWriter, WriterOpts};
use crate::harness::Corescope;

fn synth(dir: &Path) -> std::path::PathBuf {
    let db = dir.join("mesh.db");
    Corescope::new()
        .args([
            "synth",
            "--transmissions",
            "3000",
            "--observations",
            "12000",
            "-q",
        ])
        .db(&db)
        .run();
    db
}

fn user_tables(c: &Connection) -> Vec<String> {
    let mut st = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .unwrap();
    let v: Vec<String> = st
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    v
}

/// Every row of `table` (all columns, in rowid order).
fn rows(c: &Connection, table: &str, filter: &str) -> Vec<Vec<Value>> {
    let mut st = c
        .prepare(&format!(
            "SELECT * FROM \"{table}\" {filter} ORDER BY rowid"
        ))
        .unwrap();
    let n = st.column_count();
    let v: Vec<Vec<Value>> = st
        .query_map([], |r| (0..n).map(|i| r.get::<_, Value>(i)).collect())
        .unwrap()
        .map(Result::unwrap)
        .collect();
    v
}

fn max_id(c: &Connection, table: &str) -> i64 {
    c.query_row(
        &format!("SELECT COALESCE(MAX(id), 0) FROM {table}"),
        [],
        |r| r.get(0),
    )
    .unwrap()
}

fn quick_check(p: &Path) -> String {
    let c = Connection::open(p).unwrap();
    c.query_row("PRAGMA quick_check", [], |r| r.get(0)).unwrap()
}

#[test]
fn backup_beside_a_writer_equals_the_source_as_of_one_instant() {
    let tmp = tempfile::tempdir().unwrap();
    let db = synth(tmp.path());
    let before_tx = max_id(&Connection::open(&db).unwrap(), "transmissions");
    // About 100 packets a second, each its own write transaction.
    let writer = LiveWriter::start(
        &db,
        WriterOpts {
            interval: Duration::from_millis(10),
            ..WriterOpts::default()
        },
    );
    let copy = tmp.path().join("copy.db");
    let v = Corescope::new()
        .args(["backup", "--json"])
        .arg(&copy)
        .db(&db)
        .json();
    // Let the writer commit after the copy, then stop it.
    std::thread::sleep(Duration::from_millis(100));
    let rep = writer.stop();
    assert!(
        rep.failures.is_empty(),
        "writer failures: {:?}",
        rep.failures
    );
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["quick_check"], "ok", "{v}");
    assert_eq!(v["method"], "snapshot", "{v}");
    assert_eq!(v["journal_mode"], "wal", "{v}");
    assert_eq!(v["restarts"], 0, "{v}");
    assert_eq!(
        v["path"].as_str().unwrap(),
        std::fs::canonicalize(&copy).unwrap().to_str().unwrap()
    );
    assert_eq!(quick_check(&copy), "ok");

    let src = Connection::open(&db).unwrap();
    let dst = Connection::open(&copy).unwrap();
    assert_eq!(user_tables(&src), user_tables(&dst));
    // The writer's packets: the copy holds a prefix of them, from the first
    // one committed before the copy, and the source has more.
    let copy_tx = max_id(&dst, "transmissions");
    let copy_obs = max_id(&dst, "observations");
    assert!(
        copy_tx > before_tx,
        "the copy has the writer's first packet"
    );
    assert!(
        max_id(&src, "transmissions") > copy_tx,
        "the writer wrote after the copy"
    );
    for (table, upto) in [("transmissions", copy_tx), ("observations", copy_obs)] {
        assert_eq!(
            rows(&dst, table, ""),
            rows(&src, table, &format!("WHERE id <= {upto}")),
            "{table}: the copy is the source up to id {upto}"
        );
    }
    // One instant: every observation of the copy has its transmission, and
    // the writer's node and observer upserts are there for each packet.
    let orphans: i64 = dst
        .query_row(
            "SELECT COUNT(*) FROM observations o WHERE NOT EXISTS (SELECT 1 FROM transmissions t WHERE t.id = o.transmission_id)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let orphans_src: i64 = src
        .query_row(
            &format!("SELECT COUNT(*) FROM observations o WHERE o.id <= {copy_obs} AND NOT EXISTS (SELECT 1 FROM transmissions t WHERE t.id = o.transmission_id)"),
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(orphans, orphans_src);
    // Tables the writer upserts: same keys as the source, except the
    // writer's keys that appeared after the copy.
    for (table, key) in [("nodes", "public_key"), ("observers", "id")] {
        let keys = |c: &Connection| -> BTreeSet<String> {
            let mut st = c.prepare(&format!("SELECT {key} FROM {table}")).unwrap();
            let v: BTreeSet<String> = st
                .query_map([], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            v
        };
        let (s, d) = (keys(&src), keys(&dst));
        assert!(d.is_subset(&s), "{table}");
        let writer_keys: &BTreeSet<String> = if table == "nodes" {
            &rep.nodes
        } else {
            &rep.observers
        };
        assert!(s.difference(&d).all(|k| writer_keys.contains(k)), "{table}");
    }
    // Every table the writer does not touch is equal row for row.
    for t in user_tables(&src) {
        if ["transmissions", "observations", "nodes", "observers"].contains(&t.as_str()) {
            continue;
        }
        assert_eq!(rows(&src, &t, ""), rows(&dst, &t, ""), "{t}");
    }
    // No temporary file is left beside the copy.
    let names: Vec<String> = listing(tmp.path()).into_iter().map(|(n, _, _)| n).collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
}

#[test]
fn backup_of_a_rollback_journal_database_has_every_row() {
    let tmp = tempfile::tempdir().unwrap();
    let db = legacy_copy(tmp.path());
    let hash = sha256(&db);
    let copy = tmp.path().join("legacy-copy.db");
    let v = Corescope::new()
        .args(["backup", "--json"])
        .arg(&copy)
        .db(&db)
        .json();
    assert_eq!(v["method"], "stepped", "{v}");
    assert_eq!(v["journal_mode"], "delete", "{v}");
    assert_eq!(sha256(&db), hash, "the source is only read");
    let (s, d) = (
        Connection::open(&db).unwrap(),
        Connection::open(&copy).unwrap(),
    );
    for t in user_tables(&s) {
        assert_eq!(rows(&s, &t, ""), rows(&d, &t, ""), "{t}");
    }
    assert_eq!(quick_check(&copy), "ok");
}

#[test]
fn backup_refuses_unsafe_targets_and_a_full_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let db = fresh_db(tmp.path(), "m.db");
    let other = tmp.path().join("notes.txt");
    std::fs::write(&other, "keep me").unwrap();
    for (target, want) in [
        (db.clone(), "is the database"),
        (tmp.path().join("m.db-wal"), "write-ahead log"),
        (tmp.path().join("m.db-shm"), "shared-memory file"),
        (other.clone(), "the file exists"),
        (tmp.path().join("no/such/dir/x.db"), "does not exist"),
    ] {
        let err = Corescope::new()
            .arg("backup")
            .arg(&target)
            .db(&db)
            .expect_code(2)
            .stderr();
        assert!(err.contains(want), "{}: {err}", target.display());
    }
    assert_eq!(std::fs::read_to_string(&other).unwrap(), "keep me");
    std::os::unix::fs::symlink(&other, tmp.path().join("link.db")).unwrap();
    let err = Corescope::new()
        .args(["backup", "--force"])
        .arg(tmp.path().join("link.db"))
        .db(&db)
        .expect_code(2)
        .stderr();
    assert!(err.contains("symbolic link"), "{err}");

    // Not enough room: refused before anything is written.
    let before = listing(tmp.path());
    let err = Corescope::new()
        .arg("backup")
        .arg(tmp.path().join("new.db"))
        .db(&db)
        .env("CORESCOPE_TEST_FREE_BYTES", "4096")
        .expect_code(1)
        .stderr();
    assert!(
        err.contains("only 4096 bytes free") && err.contains("Nothing was written"),
        "{err}"
    );
    let after: Vec<String> = listing(tmp.path()).into_iter().map(|(n, _, _)| n).collect();
    assert!(
        !after.iter().any(|n| n.contains("new.db")),
        "{after:?} (before {before:?})"
    );

    // --force replaces an existing file with a checked copy.
    Corescope::new()
        .args(["backup", "--force", "-q"])
        .arg(&other)
        .db(&db)
        .run();
    assert_eq!(quick_check(&other), "ok");
}

#[test]
fn migrate_and_vacuum_full_take_the_backup_first() {
    let tmp = tempfile::tempdir().unwrap();
    let db = legacy_copy(tmp.path());
    let hash = sha256(&db);
    let orig = tmp.path().join("orig.db");
    std::fs::copy(&db, &orig).unwrap();
    let same_rows = |a: &Path, b: &Path| {
        let (a, b) = (Connection::open(a).unwrap(), Connection::open(b).unwrap());
        assert_eq!(user_tables(&a), user_tables(&b));
        for t in user_tables(&a) {
            assert_eq!(rows(&a, &t, ""), rows(&b, &t, ""), "{t}");
        }
    };
    let copy = tmp.path().join("before-migrate.db");
    let v = Corescope::new()
        .args(["migrate", "--json", "--backup"])
        .arg(&copy)
        .db(&db)
        .json();
    assert_eq!(v["backup"]["quick_check"], "ok", "{v}");
    same_rows(&copy, &orig);
    assert_ne!(sha256(&db), hash, "migrate ran");
    // The backup target is checked before anything runs.
    let err = Corescope::new()
        .args(["migrate", "--backup"])
        .arg(&copy)
        .db(&db)
        .expect_code(2)
        .stderr();
    assert!(err.contains("the file exists"), "{err}");
    Corescope::new()
        .args(["migrate", "--dry-run", "--backup"])
        .arg(tmp.path().join("x.db"))
        .db(&db)
        .expect_code(2)
        .run();

    let vcopy = tmp.path().join("before-vacuum.db");
    std::fs::copy(&db, &orig).unwrap();
    let v = Corescope::new()
        .args(["vacuum", "--full", "--json", "--backup"])
        .arg(&vcopy)
        .db(&db)
        .json();
    assert_eq!(v["backup"]["quick_check"], "ok", "{v}");
    same_rows(&vcopy, &orig);
    // --backup without --full: a usage error (nothing to protect).
    Corescope::new()
        .args(["vacuum", "--backup"])
        .arg(tmp.path().join("y.db"))
        .db(&db)
        .expect_code(2)
        .run();
}

/// Every message that tells the operator to restore from a backup says how
/// to take one.
#[test]
fn restore_from_a_backup_messages_name_corescope_backup() {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    let mut found = 0;
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, line) in text.lines().enumerate() {
            let t = line.trim_start();
            if t.starts_with("//") || !t.to_lowercase().contains("from a backup") {
                continue;
            }
            found += 1;
            assert!(
                line.contains("`corescope backup"),
                "{}:{}: a \"from a backup\" message without `corescope backup`: {line}",
                f.display(),
                i + 1
            );
        }
    }
    assert!(found >= 5, "the messages moved? found {found}");
}

/// Progress on a terminal (a pseudo-terminal from `script`), none otherwise.
#[test]
fn backup_shows_progress_only_on_a_terminal() {
    let have_script = std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let tmp = tempfile::tempdir().unwrap();
    let db = synth(tmp.path());
    let out = Corescope::new()
        .arg("backup")
        .arg(tmp.path().join("plain.db"))
        .db(&db)
        .run();
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if !have_script {
        println!("SKIP progress on a terminal: script(1) not installed (util-linux)");
        return;
    }
    let line = format!(
        "{} backup --db {} {}",
        crate::harness::exe().display(),
        db.display(),
        tmp.path().join("tty.db").display()
    );
    let mut cmd = std::process::Command::new("script");
    crate::harness::scrub(&mut cmd);
    let out = cmd.args(["-qec", &line, "/dev/null"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("backup [") && text.contains(" pages "),
        "{text}"
    );
    assert_eq!(quick_check(&tmp.path().join("tty.db")), "ok");
}
