//! What an operator reads: the same names for the same things in every
//! report and metric, free space with the days it needs and the command
//! that returns it now, readable sizes and rows instead of raw values.

use std::collections::BTreeSet;
use std::path::Path;

use rusqlite::Connection;
use serde_json::Value;

use crate::harness::Corescope;

const NOW: &str = "2026-05-17T18:12:00Z";

/// A seed-schema synth database with work for every backfill, migrated.
fn seed_db(dir: &Path, name: &str, transmissions: &str) -> std::path::PathBuf {
    let db = dir.join(name);
    Corescope::new()
        .args([
            "-q", "synth", "--schema", "seed", "--seed", "11", "--end", NOW,
        ])
        .args([
            "--nodes",
            "30",
            "--observers",
            "4",
            "--transmissions",
            transmissions,
        ])
        .args([
            "--days",
            "6",
            "--null-from-pubkey",
            "0.5",
            "--null-path-json",
            "0.3",
        ])
        .args(["--null-resolved-path", "0.5"])
        .db(&db)
        .run();
    Corescope::new().args(["-q", "migrate"]).db(&db).run();
    db
}

fn pragma(db: &Path, name: &str) -> i64 {
    Connection::open(db)
        .unwrap()
        .query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
        .unwrap()
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_string()).collect()
}

#[test]
fn task_and_kind_names_are_the_same_in_every_report_and_metric() {
    let dir = tempfile::tempdir().unwrap();
    let db = seed_db(dir.path(), "n.db", "300");
    let row_tasks = set(&["from-pubkey", "path-json", "resolved-path"]);

    let deep = Corescope::new()
        .args(["--json", "check", "--deep"])
        .db(&db)
        .json();
    assert_eq!(keys(&deep["pending_backfills"]), row_tasks);
    assert_eq!(keys(&deep["jobs"]["backfill"]), row_tasks);
    let prom = dir.path().join("m.prom");
    let b = Corescope::new()
        .args(["--json", "backfill", "--metrics-file"])
        .arg(&prom)
        .db(&db)
        .json();
    let mut with_blacklist = row_tasks.clone();
    with_blacklist.insert("observer-blacklist".into());
    assert_eq!(keys(&b["tasks"]), with_blacklist);
    // Every task name in the metric labels is one of them.
    let text = std::fs::read_to_string(&prom).unwrap();
    let labels: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.split("task=\"").nth(1))
        .filter_map(|r| r.split('"').next())
        .map(str::to_string)
        .collect();
    assert_eq!(labels, with_blacklist, "{text}");

    // prune: deleted, kinds, cutoffs and the names --only takes.
    let kinds = set(&[
        "packets",
        "nodes",
        "observers",
        "metrics",
        "dropped",
        "edges",
        "clients",
    ]);
    let p = Corescope::new()
        .args(["--json", "prune", "--dry-run", "--now", NOW])
        .db(&db)
        .json();
    assert_eq!(keys(&p["deleted"]), kinds);
    assert_eq!(keys(&p["kinds"]), kinds);
    assert_eq!(keys(&p["cutoffs"]), kinds);
    assert_eq!(keys(&deep["jobs"]["prune"]["kinds"]), kinds);
    for k in &kinds {
        Corescope::new()
            .args(["-q", "prune", "--dry-run", "--now", NOW, "--only", k])
            .db(&db)
            .run();
    }
    // WAL sizes in one place: under checkpoint.
    let real = Corescope::new()
        .args(["--json", "prune", "--now", NOW])
        .db(&db)
        .json();
    assert!(real.get("wal_bytes_before").is_none(), "{real}");
    assert!(real["checkpoint"]["wal_bytes_before"].is_u64(), "{real}");
    let v = Corescope::new().args(["--json", "vacuum"]).db(&db).json();
    assert!(v.get("wal_bytes_before").is_none(), "{v}");
    assert!(v["checkpoint"]["wal_bytes_after"].is_u64(), "{v}");
}

#[test]
fn db_is_the_absolute_canonical_path_however_it_was_given() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let db = seed_db(&sub, "a.db", "50");
    let canonical = std::fs::canonicalize(&db).unwrap();
    std::os::unix::fs::symlink(&sub, dir.path().join("link")).unwrap();
    for given in ["sub/a.db", "./sub/../sub/a.db", "link/a.db"] {
        let out = crate::harness::command()
            .current_dir(dir.path())
            .args(["--json", "check", "--db", given])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{given}");
        let j = crate::harness::common::json_of(&out.stdout);
        assert_eq!(j["db"], canonical.to_str().unwrap(), "{given}");
        // The human report names it the same way.
        let out = crate::harness::command()
            .current_dir(dir.path())
            .args(["vacuum", "--db", given])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains(given), "{given}: {text}");
    }
    // The environment variable, and a database that does not exist yet.
    let out = crate::harness::command()
        .current_dir(dir.path())
        .env("CORESCOPE_DB", "sub/new.db")
        .args(["--json", "migrate", "--create"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let j = crate::harness::common::json_of(&out.stdout);
    assert_eq!(
        j["db"],
        std::fs::canonicalize(sub.join("new.db"))
            .unwrap()
            .to_str()
            .unwrap()
    );
}

#[test]
fn prune_vacuum_and_check_report_free_space_and_how_to_return_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = seed_db(dir.path(), "f.db", "1500");
    let abs = std::fs::canonicalize(&db).unwrap();
    let page = pragma(&db, "page_size");
    assert_eq!(pragma(&db, "auto_vacuum"), 2, "synth creates INCREMENTAL");

    // A prune that returns 4 pages leaves the rest free.
    let p = Corescope::new()
        .args(["--json", "prune", "--now", NOW, "--packet-days", "1"])
        .args(["--vacuum-pages", "4"])
        .db(&db)
        .json();
    let free = pragma(&db, "freelist_count");
    assert!(free > 40, "the prune freed only {free} pages");
    let f = &p["free_space"];
    assert_eq!(f["free_pages"], free);
    assert_eq!(f["free_bytes"], free * page);
    assert_eq!(f["page_size"], page);
    assert_eq!(f["file_bytes"], pragma(&db, "page_count") * page);
    assert_eq!(f["pages_per_day"], 4);
    assert_eq!(f["days_to_return"], (free + 3) / 4);
    let cmd = format!("corescope vacuum --pages {free} --db {}", abs.display());
    assert_eq!(f["return_now"], cmd.as_str());
    assert_eq!(p["vacuumed_pages"], 4);

    // Human: the amount, the share, the days and the command.
    let human = Corescope::new()
        .args(["prune", "--dry-run", "--now", NOW, "--vacuum-pages", "4"])
        .db(&db)
        .stdout();
    assert!(
        human.contains(&format!("in {free} free pages"))
            && human.contains(&format!("it is returned in {} days", (free + 3) / 4))
            && human.contains(&format!("to return it now: {cmd}")),
        "{human}"
    );

    // check: the configured rate (1 page a day) needs more than a week
    // for more than a quarter of the file: warning free_space_large.
    let cfg = dir.path().join("config.json");
    std::fs::write(&cfg, r#"{"db": {"incrementalVacuumPages": 1}}"#).unwrap();
    let c = Corescope::new()
        .args(["--json", "check", "--config"])
        .arg(&cfg)
        .db(&db)
        .json();
    assert_eq!(c["free_space"]["free_pages"], free);
    assert_eq!(c["free_space"]["days_to_return"], free);
    let pct = c["free_space"]["free_percent"].as_f64().unwrap();
    assert!(pct > 25.0, "{pct}");
    let w: Vec<&Value> = c["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["code"] == "free_space_large")
        .collect();
    assert_eq!(w.len(), 1, "{c}");
    assert!(w[0]["message"].as_str().unwrap().contains(&cmd), "{}", w[0]);
    // At the default rate (1024 pages a day) it is returned within a day:
    // no warning.
    let c = Corescope::new().args(["--json", "check"]).db(&db).json();
    assert_eq!(c["free_space"]["days_to_return"], 1);
    assert!(
        !c["warnings"].to_string().contains("free_space_large"),
        "{c}"
    );

    // The suggested command returns it all now.
    let words: Vec<&str> = cmd.split(' ').skip(1).collect();
    let v = crate::harness::command()
        .arg("--json")
        .args(&words)
        .output()
        .unwrap();
    assert_eq!(v.status.code(), Some(0));
    let v = crate::harness::common::json_of(&v.stdout);
    // Every free page, and the pointer-map pages that are no longer needed.
    let n = v["vacuumed_pages"].as_i64().unwrap();
    assert!(n >= free && n <= free + 2, "{n} {free}");
    assert_eq!(v["freed_bytes"], n * page);
    assert_eq!(pragma(&db, "freelist_count"), 0);
    assert_eq!(v["free_space"]["free_pages"], 0);
    assert_eq!(v["free_space"]["return_now"], Value::Null);
    let c = Corescope::new()
        .args(["--json", "check", "--config"])
        .arg(&cfg)
        .db(&db)
        .json();
    assert!(
        !c["warnings"].to_string().contains("free_space_large"),
        "{c}"
    );

    // A database that is not INCREMENTAL: only vacuum --full returns it.
    let none = dir.path().join("none.db");
    Corescope::new()
        .args(["-q", "migrate", "--create"])
        .db(&none)
        .run();
    {
        let conn = Connection::open(&none).unwrap();
        conn.execute_batch(
            "PRAGMA auto_vacuum = NONE; VACUUM; CREATE TABLE pad(x); \
             INSERT INTO pad SELECT zeroblob(3000) FROM (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 200) SELECT i FROM n); \
             DROP TABLE pad;",
        )
        .unwrap();
    }
    assert_eq!(pragma(&none, "auto_vacuum"), 0);
    let c = Corescope::new().args(["--json", "check"]).db(&none).json();
    let f = &c["free_space"];
    assert!(f["free_pages"].as_i64().unwrap() > 0, "{f}");
    assert_eq!(f["days_to_return"], Value::Null);
    let full = format!(
        "corescope vacuum --full --db {}",
        std::fs::canonicalize(&none).unwrap().display()
    );
    assert_eq!(f["return_now"], full.as_str());
}

#[test]
fn human_reports_show_sizes_rows_and_estimates() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("h.db");
    Corescope::new()
        .args([
            "-q", "synth", "--schema", "seed", "--seed", "5", "--end", NOW,
        ])
        .args([
            "--nodes",
            "20",
            "--observers",
            "3",
            "--transmissions",
            "200",
        ])
        .db(&db)
        .run();
    let dry = Corescope::new()
        .args(["migrate", "--dry-run"])
        .db(&db)
        .stdout();
    assert!(dry.contains("rows (estimate)"), "{dry}");
    assert!(dry.contains("row counts are estimates"), "{dry}");
    Corescope::new().args(["-q", "migrate"]).db(&db).run();

    let check = Corescope::new()
        .args(["check", "--integrity"])
        .db(&db)
        .stdout();
    let row = |name: &str| {
        check
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("no row {name}:\n{check}"))
            .to_string()
    };
    assert!(row("integrity: quick_check").contains("| ok"), "{check}");
    assert!(
        row("integrity: foreign_key_violations").contains("| 0"),
        "{check}"
    );
    assert!(!check.contains("{\""), "a JSON blob in the table:\n{check}");
    assert!(row("free space").contains("free"), "{check}");

    let v = Corescope::new()
        .args(["vacuum", "--truncate-wal"])
        .db(&db)
        .stdout();
    let bytes = std::fs::metadata(&db).unwrap().len();
    // `N.N KiB (N bytes)` / `MiB`: a unit and the exact count.
    let size = format!("({bytes} bytes)");
    assert!(row_of(&v, "file size").contains(&size), "{v}");
    assert!(
        row_of(&v, "file size").contains("KiB (") || row_of(&v, "file size").contains("MiB ("),
        "{v}"
    );
    let wal = row_of(&v, "WAL checkpoint");
    assert!(
        wal.contains("WAL ") && (wal.contains(" -> ") || wal.contains("unchanged")),
        "{v}"
    );
    assert!(v.contains("free space: "), "{v}");
}

fn row_of(text: &str, name: &str) -> String {
    text.lines()
        .find(|l| l.contains(name))
        .unwrap_or_else(|| panic!("no line {name}:\n{text}"))
        .to_string()
}
