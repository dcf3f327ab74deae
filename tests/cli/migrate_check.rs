//! migrate and check on the legacy fixture, on new
//! databases, read-only guarantees, busy handling.

use crate::harness::common;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;

use common::*;
use rusqlite::types::Value;
use rusqlite::Connection;

const ORIGINAL_TABLES: [&str; 5] = [
    "nodes",
    "observers",
    "transmissions",
    "observations",
    "sqlite_sequence",
];

#[test]
fn legacy_fixture_upgrade_keeps_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let db = legacy_copy(dir.path());

    // Before: not ready, with the missing items named the CoreScope way.
    let out = bin()
        .args(["check", "--json", "--deep", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let j = json_of(&out.stdout);
    assert_eq!(j["ready"], false);
    assert_eq!(j["ok"], false);
    let missing: Vec<String> = j["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    for m in [
        "table:neighbor_edges",
        "table:inactive_nodes",
        "inactive_nodes.foreign_advert",
        "observers.inactive",
        "observers.last_packet_at",
        "transmissions.from_pubkey",
        "observations.resolved_path",
        "index:idx_observations_dedup",
        "view:packets_v",
    ] {
        assert!(missing.contains(&m.to_string()), "{m} not in {missing:?}");
    }
    // The CoreScope server's own AssertReady list: 1 table + 20 of
    // its 21 latest columns are missing (observers.iata exists in the fixture).
    let server: Vec<&str> = j["server_missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(server.len(), 21, "{server:?}");
    assert!(server.contains(&"table:neighbor_edges") && !server.contains(&"observers.iata"));
    let warnings: Vec<String> = j["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["code"].as_str().unwrap().to_string())
        .collect();
    assert!(
        warnings.contains(&"text_observer_idx".to_string()),
        "{warnings:?}"
    );
    assert!(
        warnings.contains(&"zero_timestamp".to_string()),
        "{warnings:?}"
    );
    assert!(warnings.contains(&"auto_vacuum_not_incremental".to_string()));
    assert!(warnings.contains(&"journal_mode_not_wal".to_string()));

    let before_conn = Connection::open(fixture()).unwrap();
    let mut before: HashMap<&str, (Vec<String>, Vec<Vec<Value>>)> = HashMap::new();
    for t in ORIGINAL_TABLES {
        let cols = columns(&before_conn, t);
        let rows = dump(&before_conn, t, Some(&cols));
        before.insert(t, (cols, rows));
    }

    let out = bin()
        .args(["migrate", "--json", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j = json_of(&out.stdout);
    assert_eq!(j["ok"], true);
    assert_eq!(j["complete"], true);
    assert!(j["max_lock_hold_ms"].as_f64().unwrap() >= 0.0);
    let applied: Vec<&str> = j["applied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for name in [
        "corescope_observer_idx_rowid_v1",
        "from_pubkey_v1",
        "advert_count_unique_v1",
        "channel_hash_v1",
        "tx_last_seen_backfill_v1",
    ] {
        assert!(applied.contains(&name), "{name} not applied: {applied:?}");
    }
    assert_eq!(j["already"], 0);

    for target in ["seed", "latest"] {
        bin()
            .args(["check", "-q", "--target", target, "--db"])
            .arg(&db)
            .assert()
            .code(0);
        let out = bin()
            .args(["check", "--json", "--target", target, "--db"])
            .arg(&db)
            .output()
            .unwrap();
        assert_eq!(
            json_of(&out.stdout)["server_missing"],
            serde_json::json!([])
        );
    }

    // Every pre-existing row is unchanged, except the documented repairs.
    let after = Connection::open(&db).unwrap();
    for t in ORIGINAL_TABLES {
        let (cols, rows) = &before[t];
        let now = dump(&after, t, Some(cols));
        assert_eq!(rows.len(), now.len(), "row count of {t}");
        if t == "observations" || t == "nodes" {
            continue; // checked column by column below
        }
        assert_eq!(rows, &now, "table {t} changed");
    }
    // observations: only observer_idx changed, to the rowid of the observer with that id.
    let obs_cols: Vec<String> = before["observations"]
        .0
        .iter()
        .filter(|c| *c != "observer_idx")
        .cloned()
        .collect();
    assert_eq!(
        dump(&before_conn, "observations", Some(&obs_cols)),
        dump(&after, "observations", Some(&obs_cols))
    );
    let mut st = before_conn
        .prepare("SELECT id, observer_idx FROM observations ORDER BY id")
        .unwrap();
    let orig: Vec<(i64, String)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    for (id, text) in orig {
        let (typ, mapped_id): (String, String) = after
            .query_row(
                "SELECT typeof(o.observer_idx), b.id FROM observations o JOIN observers b ON b.rowid = o.observer_idx WHERE o.id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(typ, "integer");
        assert_eq!(mapped_id.to_lowercase(), text.to_lowercase());
    }
    // nodes: only advert_count changed, to the number of ADVERT transmissions of the node.
    let node_cols: Vec<String> = before["nodes"]
        .0
        .iter()
        .filter(|c| *c != "advert_count")
        .cloned()
        .collect();
    assert_eq!(
        dump(&before_conn, "nodes", Some(&node_cols)),
        dump(&after, "nodes", Some(&node_cols))
    );
    let wrong = count(
        &after,
        "SELECT count(*) FROM nodes n WHERE advert_count != (SELECT count(*) FROM transmissions t WHERE t.payload_type = 4
           AND lower(COALESCE(NULLIF(t.from_pubkey, ''), json_extract(t.decoded_json, '$.pubKey'))) = n.public_key)",
    );
    assert_eq!(wrong, 0);
    // last_packet_at backfilled for observers with observations.
    let n = count(&after, "SELECT count(*) FROM observers WHERE last_packet_at IS NOT NULL AND last_packet_at = last_seen");
    let with_obs = count(
        &after,
        "SELECT count(DISTINCT observer_idx) FROM observations",
    );
    assert_eq!(n, with_obs);
    // journal mode and auto_vacuum of an existing file are never changed.
    let jm: String = after
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(jm, "delete");
    drop(after);

    // Idempotent: a second run changes nothing, not even a byte.
    let sha = sha256(&db);
    let listing_before = without_run_locks(listing(dir.path()));
    let out = bin()
        .args(["migrate", "--json", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let j = json_of(&out.stdout);
    assert_eq!(j["applied"].as_array().unwrap().len(), 0);
    assert_eq!(j["already"].as_i64().unwrap(), 22);
    assert_eq!(sha256(&db), sha);
    assert_eq!(without_run_locks(listing(dir.path())), listing_before);
}

#[test]
fn create_gives_a_ready_incremental_wal_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("new.db");
    bin().args(["migrate", "--db"]).arg(&db).assert().code(1);
    assert!(
        !db.exists(),
        "migrate without --create must not create the file"
    );
    let out = bin()
        .args(["migrate", "--create", "--json", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json_of(&out.stdout)["created"], true);
    for target in ["seed", "latest"] {
        let out = bin()
            .args(["check", "--json", "--target", target, "--db"])
            .arg(&db)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        let j = json_of(&out.stdout);
        assert_eq!(j["ready"], true);
        assert_eq!(j["missing"].as_array().unwrap().len(), 0);
        assert_eq!(j["warnings"].as_array().unwrap().len(), 0, "{j}");
    }
    let c = Connection::open(&db).unwrap();
    assert_eq!(count(&c, "PRAGMA auto_vacuum"), 2);
    let jm: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(jm, "wal");
    // CoreScope's own names are recorded, so its ingestor agrees nothing is pending.
    for name in [
        "advert_count_unique_v1",
        "from_pubkey_v1",
        "channel_hash_casing_v1",
        "obs_observer_ts_idx_v1",
    ] {
        assert_eq!(
            count(
                &c,
                &format!("SELECT count(*) FROM _migrations WHERE name = '{name}'")
            ),
            1,
            "{name}"
        );
    }
    assert_eq!(count(&c, "SELECT count(*) FROM _async_migrations WHERE name = 'tx_last_seen_backfill_v1' AND status = 'done'"), 1);
    // The dedup index exists (the ingestor's UPSERT needs it).
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM sqlite_master WHERE name = 'idx_observations_dedup'"
        ),
        1
    );
}

#[test]
fn dry_run_plans_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = legacy_copy(dir.path());
    let before = listing(dir.path());
    let out = bin()
        .args(["migrate", "--dry-run", "--json", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let j = json_of(&out.stdout);
    let planned = j["planned"].as_array().unwrap();
    let adv = planned
        .iter()
        .find(|p| p["name"] == "corescope_observer_idx_rowid_v1")
        .unwrap();
    assert_eq!(adv["rows_estimated"], 500);
    assert!(planned.iter().any(|p| p["name"] == "table:neighbor_edges"));
    assert_eq!(listing(dir.path()), before);
    // --create --dry-run on a new path plans everything and creates nothing.
    let new = dir.path().join("nope.db");
    let out = bin()
        .args(["migrate", "--create", "--dry-run", "--json", "--db"])
        .arg(&new)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(!json_of(&out.stdout)["planned"]
        .as_array()
        .unwrap()
        .is_empty());
    assert!(!new.exists());
}

#[test]
fn read_only_commands_in_a_read_only_directory() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("ro");
    std::fs::create_dir(&sub).unwrap();
    let db = legacy_copy(&sub);
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o444)).unwrap();
    std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o555)).unwrap();
    let before = listing(&sub);
    bin()
        .args(["check", "-q", "--db"])
        .arg(&db)
        .assert()
        .code(3);
    bin()
        .args(["check", "--integrity", "--json", "--db"])
        .arg(&db)
        .assert()
        .code(3);
    bin()
        .args(["migrate", "--dry-run", "--db"])
        .arg(&db)
        .assert()
        .code(0);
    assert_eq!(listing(&sub), before);
    std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn read_only_commands_beside_a_live_writer_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_db(dir.path(), "live.db");
    let writer = Connection::open(&db).unwrap();
    writer
        .execute_batch(
            "INSERT INTO transmissions (raw_hex, hash, first_seen, payload_type) VALUES ('1140', 'aaaa', '2026-05-17T18:12:01Z', 4);
             BEGIN IMMEDIATE;
             INSERT INTO transmissions (raw_hex, hash, first_seen, payload_type) VALUES ('1140', 'bbbb', '2026-05-17T18:12:02Z', 4);",
        )
        .unwrap();
    let before = listing(dir.path());
    assert!(before.iter().any(|(n, _, _)| n == "live.db-wal"));
    let out = bin()
        .args(["check", "--json", "--deep", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The committed ADVERT is seen (from_pubkey pending), the uncommitted one is not.
    assert_eq!(json_of(&out.stdout)["pending_backfills"]["from-pubkey"], 1);
    bin()
        .args(["migrate", "--dry-run", "--db"])
        .arg(&db)
        .assert()
        .code(0);
    let after = listing(dir.path());
    // The database and its -wal are byte-identical; the -shm is SQLite's
    // shared lock memory, which every reader must map (the read-only rule).
    let strip = |v: &Vec<(String, u64, String)>| {
        v.iter()
            .filter(|(n, _, _)| !n.ends_with("-shm"))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&after), strip(&before));
    assert_eq!(after.len(), before.len());
    writer.execute_batch("ROLLBACK").unwrap();
}

#[test]
fn migrate_waits_then_exits_75_without_partial_work() {
    let dir = tempfile::tempdir().unwrap();
    let db = legacy_copy(dir.path());
    let sha = sha256(&db);
    let holder = Connection::open(&db).unwrap();
    holder
        .execute_batch("BEGIN IMMEDIATE; UPDATE nodes SET name = name WHERE 0;")
        .unwrap();
    let out = bin()
        .args(["migrate", "--busy-timeout", "200", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(75),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&db.display().to_string()) && err.contains("try again"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    holder.execute_batch("ROLLBACK").unwrap();
    drop(holder);
    assert_eq!(sha256(&db), sha, "nothing half-done");
    bin()
        .args(["check", "-q", "--db"])
        .arg(&db)
        .assert()
        .code(3);
}

#[test]
fn duplicate_dedup_keys_are_reported_then_merged_never_lost() {
    let dir = tempfile::tempdir().unwrap();
    let db = legacy_copy(dir.path());
    let c = Connection::open(&db).unwrap();
    c.execute_batch(
        "INSERT INTO observations (transmission_id, observer_idx, direction, snr, rssi, score, path_json, timestamp)
         SELECT transmission_id, observer_idx, direction, snr, rssi, score, path_json, timestamp FROM observations WHERE id = (SELECT min(id) FROM observations);",
    )
    .unwrap();
    let n_obs = count(&c, "SELECT count(*) FROM observations");
    drop(c);
    let out = bin()
        .args(["check", "--json", "--deep", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let j = json_of(&out.stdout);
    assert!(j["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w["code"] == "duplicate_dedup_keys"
            && w["message"]
                .as_str()
                .unwrap()
                .starts_with("1 groups (1 surplus rows)")));
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
    assert_eq!(j["missing"], serde_json::json!([]));
    assert_eq!(j["merged_observations"]["groups"], 1);
    assert_eq!(j["merged_observations"]["rows"], 1);
    let c = Connection::open(&db).unwrap();
    assert_eq!(count(&c, "SELECT count(*) FROM observations"), n_obs - 1);
    assert_eq!(
        count(&c, "SELECT count(*) FROM observations")
            + count(&c, "SELECT count(*) FROM _corescope_merged_observations"),
        n_obs,
        "every removed row is kept in the audit table"
    );
    bin()
        .args(["check", "-q", "--db"])
        .arg(&db)
        .assert()
        .code(0);
}

#[test]
fn a_database_migrated_by_corescope_is_done_for_corescope_ingestor_names() {
    // A database whose _migrations already holds every CoreScope name (as
    // after an ingestor start) gets no named migration from corescope.
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_db(dir.path(), "m.db");
    let out = bin()
        .args(["migrate", "--json", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    let j = json_of(&out.stdout);
    assert_eq!(j["applied"].as_array().unwrap().len(), 0);
    // Remove corescope's own state table: still ready (it is not CoreScope's).
    let c = Connection::open(&db).unwrap();
    c.execute_batch("DROP TABLE _corescope_state").unwrap();
    drop(c);
    bin()
        .args(["check", "-q", "--db"])
        .arg(&db)
        .assert()
        .code(0);
}

#[test]
fn check_strict_and_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let db = legacy_copy(dir.path());
    bin()
        .args(["migrate", "-q", "--db"])
        .arg(&db)
        .assert()
        .code(0);
    // Ready, but warnings (timestamps 0, journal mode): --strict fails.
    let out = bin()
        .args(["check", "-q", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
    bin()
        .args(["check", "-q", "--strict", "--db"])
        .arg(&db)
        .assert()
        .code(3);
    let out = bin()
        .args(["check", "--integrity", "--json", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    let j = json_of(&out.stdout);
    assert_eq!(j["integrity"]["quick_check"], serde_json::json!(["ok"]));
    assert_eq!(j["integrity"]["foreign_key_violations"], 0);
}
