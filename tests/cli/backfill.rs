//! End-to-end tests of `corescope backfill` on the legacy fixture and on
//! small databases built here (created with `corescope migrate --create`).

use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Stdio};
use std::time::Duration;

use crate::harness::packets as corescope_test_support;
use crate::harness::{bin, copy_writable, Corescope, Fixture};
use rand::{Rng, SeedableRng};
use rusqlite::{params, Connection};
use serde_json::Value;

/// Copies the read-only fixture to a writable file.
fn copy_fixture(to: &Path) {
    copy_writable(&Fixture::Legacy.path(), to);
}

const EX_A: &str = "11427d1d1f5d300ddc9e145dbe6cb4d6c2d93c74e9f862f5e247783f64ef89a4732e68dd473c4c62c9697f70e27d27e4a0d3f001c4032a262c390f868b2c7df763b2171969f29dde33a01785f01b6e37e7a1d7ba39735cb6013ad3a7f00c76ae84623ef286f99c3ee60292ec9f3e02c688b9f852352d443420333030442052616b";
const EX_B: &str = "150359d69581d1666fd2abd32988b6ad68a307882c574a852481d99c18a0f6e249544a879182f8bb38375903332082b91043a0a4b189f9bbc6d8cc4bc94ca88d8e92d0d14664e87e";
const EX_C: &str = "26010FBA74E45D000000000027";
const EX_D: &str = "D665EBB4F9780C68AF308B6BA794DCB86C9B3DA0543D90483C2E051BAA44D20B15E43845C969EBD256833C6A3E3859D3C79E6DA3A9F9DB068C6D8CCEA85CFEA9DF7120224DE05F88A218126763B856F11CE1CB27603CE2EC653C414CAF67B7890BB60207680A920BB60207680A9200000000000000004C416237";
const EX_D_PATH: &str = r#"["EBB4","F978","0C68","AF30","8B6B","A794","DCB8","6C9B","3DA0","543D","9048","3C2E","051B","AA44","D20B","15E4","3845","C969","EBD2","5683","3C6A","3E38","59D3","C79E","6DA3","A9F9","DB06","8C6D","8CCE","A85C","FEA9","DF71","2022","4DE0","5F88","A218","1267"]"#;
const EX_ZERO: &str = "11401f5dd36fdd499d6c0a2772093028fe52ae695a15ff0dd0a4d9c752bf2763243533d44b6669c5178b93fbe683b01ddd7e4dcf347dcebe5ee98f00a9a8d2f65abc87cd4e78bf582685338b18418cd5230e96d57a520119ae5bf26c3c0645ea8042f093f10f9248054202e435b6f84b657920526f75746520482d42524b20f09f979defb88f";

fn migrate(db: &Path) {
    Corescope::new().arg("migrate").db(db).run();
}

/// A migrated, empty database: a migrated copy of the legacy fixture with
/// every row deleted (independent of `migrate --create`).
fn fresh(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    copy_fixture(&p);
    migrate(&p);
    let c = open(&p);
    // Production databases are in WAL mode (the fixture copies stay in
    // rollback-journal mode, so both are exercised).
    c.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
        .unwrap();
    c.execute_batch(
        "DELETE FROM observations; DELETE FROM transmissions; DELETE FROM nodes;
         DELETE FROM observers; DELETE FROM neighbor_edges; DELETE FROM _migrations
         WHERE name = 'backfill_path_json_from_raw_hex_v1';",
    )
    .unwrap();
    p
}

/// A migrated copy of the legacy fixture.
fn fixture_copy(dir: &Path) -> PathBuf {
    let p = dir.join("legacy.db");
    copy_fixture(&p);
    migrate(&p);
    p
}

fn run_json(db: &Path, args: &[&str]) -> Value {
    let run = || {
        bin()
            .arg("--json")
            .arg("backfill")
            .args(args)
            .arg("--db")
            .arg(db)
            .output()
            .unwrap()
    };
    let mut out = run();
    // Exit 75 means "busy, try again" (README, "Exit codes"): on a loaded machine a run
    // right after a SIGKILLed one may see it; the contract is to retry.
    for _ in 0..3 {
        if out.status.code() != Some(75) {
            break;
        }
        eprintln!(
            "backfill exited 75 (busy), retrying: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(std::time::Duration::from_secs(1));
        out = run();
    }
    assert!(
        out.status.success(),
        "backfill {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn task<'a>(v: &'a Value, name: &str) -> &'a Value {
    &v["tasks"][name]
}

fn n(v: &Value, name: &str, field: &str) -> i64 {
    task(v, name)[field]
        .as_i64()
        .unwrap_or_else(|| panic!("{name}.{field} missing in {v}"))
}

fn open(db: &Path) -> Connection {
    Connection::open(db).unwrap()
}

fn insert_tx(c: &Connection, id: i64, raw: &str, ptype: i64, decoded: Option<&str>) {
    c.execute(
        "INSERT INTO transmissions (id, raw_hex, hash, first_seen, route_type, payload_type, decoded_json)
         VALUES (?1, ?2, ?3, '2026-03-29T17:33:00Z', 1, ?4, ?5)",
        params![id, raw, format!("h{id:015}"), ptype, decoded],
    )
    .unwrap();
}

fn insert_obs(
    c: &Connection,
    id: i64,
    tx: i64,
    observer: i64,
    path: Option<&str>,
    raw: Option<&str>,
) {
    c.execute(
        "INSERT INTO observations (id, transmission_id, observer_idx, path_json, timestamp, raw_hex)
         VALUES (?1, ?2, ?3, ?4, 1774805580, ?5)",
        params![id, tx, observer, path, raw],
    )
    .unwrap();
}

fn col(db: &Path, sql: &str) -> Vec<Option<String>> {
    let c = open(db);
    let mut st = c.prepare(sql).unwrap();
    let v = st
        .query_map([], |r| r.get::<_, Option<String>>(0))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    v
}

/// Table dump for equality comparisons (data tables only).
fn dump(db: &Path) -> Vec<String> {
    let c = open(db);
    let mut out = Vec::new();
    for (t, cols) in [
        ("transmissions", "id, from_pubkey"),
        ("observations", "id, path_json, resolved_path"),
        ("observers", "id, inactive"),
        ("_migrations", "name"),
    ] {
        let mut st = c
            .prepare(&format!("SELECT {cols} FROM {t} ORDER BY 1"))
            .unwrap();
        let ncol = st.column_count();
        let rows = st
            .query_map([], |r| {
                let mut s = String::from(t);
                for i in 0..ncol {
                    let v: rusqlite::types::Value = r.get(i)?;
                    s.push_str(&format!("|{v:?}"));
                }
                Ok(s)
            })
            .unwrap();
        for r in rows {
            out.push(r.unwrap());
        }
    }
    out
}

// ---------------------------------------------------------------------------

#[test]
fn from_pubkey_recovers_fixture_keys_from_decoded_json_and_raw_hex() {
    let dir = tempfile::tempdir().unwrap();
    let db = fixture_copy(dir.path());
    let c = open(&db);
    c.execute("UPDATE transmissions SET from_pubkey = NULL", [])
        .unwrap();
    let adverts: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM transmissions WHERE payload_type = 4",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(adverts > 50, "fixture has ADVERTs");
    let expected = col(
        &db,
        "SELECT lower(json_extract(decoded_json, '$.pubKey')) FROM transmissions WHERE payload_type = 4 ORDER BY id",
    );
    assert!(expected
        .iter()
        .all(|k| k.as_ref().is_some_and(|k| k.len() == 64)));
    drop(c);

    let v = run_json(&db, &["from-pubkey"]);
    assert_eq!(n(&v, "from-pubkey", "scanned"), adverts);
    assert_eq!(n(&v, "from-pubkey", "updated"), adverts);
    assert_eq!(n(&v, "from-pubkey", "remaining"), 0);
    assert_eq!(v["complete"], true);
    assert!(v["max_lock_hold_ms"].is_number());
    let got = col(
        &db,
        "SELECT from_pubkey FROM transmissions WHERE payload_type = 4 ORDER BY id",
    );
    assert_eq!(got, expected);
    // non-ADVERTs untouched
    let others = col(
        &db,
        "SELECT from_pubkey FROM transmissions WHERE payload_type IS NOT 4",
    );
    assert!(others.iter().all(Option::is_none));

    // Second run: nothing to do.
    let v = run_json(&db, &["from-pubkey"]);
    assert_eq!(n(&v, "from-pubkey", "scanned"), 0);

    // Blank decoded_json: the same keys come from raw_hex.
    let c = open(&db);
    c.execute(
        "UPDATE transmissions SET from_pubkey = NULL, decoded_json = NULL WHERE payload_type = 4",
        [],
    )
    .unwrap();
    drop(c);
    let v = run_json(&db, &["from-pubkey", "--reset", "from-pubkey"]);
    assert_eq!(n(&v, "from-pubkey", "updated"), adverts);
    let got = col(
        &db,
        "SELECT from_pubkey FROM transmissions WHERE payload_type = 4 ORDER BY id",
    );
    assert_eq!(got, expected);
}

#[test]
fn from_pubkey_sentinel_and_never_clobber() {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh(dir.path(), "t.db");
    let c = open(&db);
    let upper_key = "AB".repeat(32);
    insert_tx(
        &c,
        1,
        EX_A,
        4,
        Some(&format!(r#"{{"type":"ADVERT","pubKey":"{upper_key}"}}"#)),
    );
    insert_tx(
        &c,
        2,
        "zz",
        4,
        Some(r#"{"type":"ADVERT","error":"too short"}"#),
    );
    insert_tx(&c, 3, EX_A, 4, Some("not json"));
    insert_tx(&c, 4, "1140", 4, None);
    insert_tx(&c, 5, EX_B, 5, None);
    insert_tx(&c, 6, EX_ZERO, 4, None);
    c.execute(
        "UPDATE transmissions SET from_pubkey = 'keep-me' WHERE id = 6",
        [],
    )
    .unwrap();
    drop(c);
    let v = run_json(&db, &["from-pubkey"]);
    assert_eq!(n(&v, "from-pubkey", "scanned"), 4);
    assert_eq!(n(&v, "from-pubkey", "updated"), 2);
    assert_eq!(n(&v, "from-pubkey", "skipped"), 2);
    let got = col(&db, "SELECT from_pubkey FROM transmissions ORDER BY id");
    let a_key = "300ddc9e145dbe6cb4d6c2d93c74e9f862f5e247783f64ef89a4732e68dd473c".to_string();
    assert_eq!(
        got,
        vec![
            Some("ab".repeat(32)),
            Some(String::new()),
            Some(a_key),
            Some(String::new()),
            None,
            Some("keep-me".into()),
        ]
    );
    let v = run_json(&db, &["from-pubkey"]);
    assert_eq!(n(&v, "from-pubkey", "scanned"), 0);
    assert_eq!(n(&v, "from-pubkey", "updated"), 0);
}

#[test]
fn path_json_exact_hops_and_second_run_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh(dir.path(), "p.db");
    let c = open(&db);
    insert_tx(&c, 1, EX_A, 4, None);
    insert_tx(&c, 2, EX_B, 5, None);
    insert_tx(&c, 3, EX_C, 9, None);
    insert_tx(&c, 4, EX_D, 5, None);
    insert_tx(&c, 5, EX_ZERO, 4, None);
    insert_tx(&c, 6, "00", 5, None);
    insert_tx(&c, 7, EX_C, 5, None); // payload_type column wrong: header says TRACE
                                     // observation raw_hex = another copy (different path) than the transmission's
    let other_copy = format!("1146{}{}", "7D1DDA2AEACF1000EC344000", &EX_A[12..]);
    insert_obs(&c, 1, 1, 1, None, Some(&other_copy));
    insert_obs(&c, 2, 2, 1, Some(""), Some(&EX_B.to_uppercase()));
    insert_obs(&c, 3, 3, 1, None, Some(EX_C));
    insert_obs(&c, 4, 4, 1, None, Some(EX_D));
    insert_obs(&c, 5, 5, 1, None, Some(EX_ZERO));
    insert_obs(&c, 6, 6, 1, None, Some("0"));
    insert_obs(&c, 7, 1, 2, None, None); // no raw of its own: stays NULL
    insert_obs(&c, 8, 2, 2, Some(r#"["AA"]"#), Some(EX_B)); // existing value
    insert_obs(&c, 9, 7, 1, None, Some(EX_C));
    insert_obs(&c, 10, 6, 2, None, Some("xyz1"));
    drop(c);

    let v = run_json(&db, &["path-json"]);
    // candidates: 1, 2, 4, 5, 6, 9, 10 (3 is excluded by payload_type = 9,
    // 7 has no raw_hex, 8 has a value)
    assert_eq!(n(&v, "path-json", "scanned"), 7, "{v}");
    assert_eq!(n(&v, "path-json", "updated"), 4);
    assert_eq!(n(&v, "path-json", "skipped"), 3);
    assert_eq!(n(&v, "path-json", "remaining"), 0);
    let got = col(&db, "SELECT path_json FROM observations ORDER BY id");
    let s = |x: &str| Some(x.to_string());
    assert_eq!(
        got,
        vec![
            s(r#"["7D1D","DA2A","EACF","1000","EC34","4000"]"#),
            s(r#"["59","D6","95"]"#),
            None,
            s(EX_D_PATH),
            s("[]"),
            s("[]"),
            None,
            s(r#"["AA"]"#),
            None,
            s("[]"),
        ]
    );
    let marker: i64 = open(&db)
        .query_row(
            "SELECT COUNT(*) FROM _migrations WHERE name = 'backfill_path_json_from_raw_hex_v1'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(marker, 1);
    let before = dump(&db);
    let v = run_json(&db, &["path-json"]);
    assert_eq!(n(&v, "path-json", "scanned"), 0);
    assert_eq!(n(&v, "path-json", "updated"), 0);
    assert_eq!(dump(&db), before);
}

#[test]
fn all_undecodable_terminates_and_second_run_scans_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh(dir.path(), "u.db");
    let c = open(&db);
    insert_tx(&c, 1, "00", 5, None);
    for i in 1..=300 {
        let raw = match i % 3 {
            0 => "zz".to_string(),
            1 => "1".to_string(),
            _ => "11".to_string(),
        };
        insert_obs(&c, i, 1, i, None, Some(&raw));
    }
    drop(c);
    let v = run_json(&db, &["path-json", "--max-lock-ms", "20"]);
    assert_eq!(n(&v, "path-json", "scanned"), 300);
    assert_eq!(n(&v, "path-json", "updated"), 0);
    assert_eq!(v["complete"], true);
    let v = run_json(&db, &["path-json"]);
    assert_eq!(n(&v, "path-json", "scanned"), 0);
    assert_eq!(n(&v, "path-json", "updated"), 0);
}

#[test]
fn path_json_dedup_conflict_is_left_null_and_not_revisited() {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh(dir.path(), "d.db");
    let c = open(&db);
    insert_tx(&c, 1, EX_B, 5, None);
    // Same transmission and observer: the derived path would duplicate row 1.
    insert_obs(&c, 1, 1, 1, Some(r#"["59","D6","95"]"#), Some(EX_B));
    insert_obs(&c, 2, 1, 1, None, Some(EX_B));
    insert_obs(&c, 3, 1, 2, None, None); // no raw: never a candidate
    drop(c);
    let v = run_json(&db, &["path-json"]);
    assert_eq!(n(&v, "path-json", "scanned"), 1, "{v}");
    assert_eq!(n(&v, "path-json", "updated"), 0);
    assert_eq!(n(&v, "path-json", "conflicts"), 1);
    assert_eq!(n(&v, "path-json", "without_raw_hex"), 1);
    assert_eq!(v["complete"], true);
    let got = col(&db, "SELECT path_json FROM observations ORDER BY id");
    assert_eq!(
        got,
        vec![Some(r#"["59","D6","95"]"#.to_string()), None, None]
    );
    let v = run_json(&db, &["path-json"]);
    assert_eq!(n(&v, "path-json", "scanned"), 0);
}

#[test]
fn path_json_matches_generated_packets() {
    // Packets built here byte by byte (route types with and without transport
    // codes, hash sizes 1-3, 0-10 hops, random payload types except TRACE,
    // any hex case); the expected path_json is the hop list we put in.
    let dir = tempfile::tempdir().unwrap();
    let db = fresh(dir.path(), "g.db");
    let mut c = open(&db);
    let t = c.transaction().unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(99);
    let mut expected = Vec::new();
    for id in 1..=400i64 {
        let route: u8 = rng.gen_range(0..4);
        let ptype: u8 = loop {
            let p = rng.gen_range(0..16);
            if p != 9 {
                break p;
            }
        };
        let version: u8 = rng.gen_range(0..4);
        let size: usize = rng.gen_range(1..4);
        let nhops: usize = rng.gen_range(0..11);
        let mut b = vec![route | (ptype << 2) | (version << 6)];
        if route == 0 || route == 3 {
            b.extend((0..4).map(|_| rng.gen::<u8>()));
        }
        b.push((((size - 1) as u8) << 6) | nhops as u8);
        let mut hops = Vec::new();
        for _ in 0..nhops {
            let h: Vec<u8> = (0..size).map(|_| rng.gen()).collect();
            hops.push(h.iter().map(|x| format!("{x:02X}")).collect::<String>());
            b.extend_from_slice(&h);
        }
        b.extend((0..rng.gen_range(0..60)).map(|_| rng.gen::<u8>()));
        let mut raw: String = b.iter().map(|x| format!("{x:02x}")).collect();
        if id % 2 == 0 {
            raw = raw.to_uppercase();
        }
        t.execute(
            "INSERT INTO transmissions (id, raw_hex, hash, first_seen, route_type, payload_type)
             VALUES (?1, ?2, ?3, '2026-01-01T00:00:00Z', ?4, ?5)",
            params![id, raw, format!("g{id:015}"), route, ptype],
        )
        .unwrap();
        t.execute(
            "INSERT INTO observations (id, transmission_id, observer_idx, timestamp, raw_hex)
             VALUES (?1, ?1, 1, 0, ?2)",
            params![id, raw],
        )
        .unwrap();
        expected.push(Some(format!(
            "[{}]",
            hops.iter()
                .map(|h| format!("\"{h}\""))
                .collect::<Vec<_>>()
                .join(",")
        )));
    }
    t.commit().unwrap();
    drop(c);
    let v = run_json(&db, &["path-json"]);
    assert_eq!(n(&v, "path-json", "updated"), 400, "{v}");
    let got = col(&db, "SELECT path_json FROM observations ORDER BY id");
    assert_eq!(got, expected);
}

fn key(prefix: &str) -> String {
    format!("{prefix:0<64}")
}

fn add_node(c: &Connection, k: &str) {
    c.execute("INSERT INTO nodes (public_key, name) VALUES (?1, 'n')", [k])
        .unwrap();
}

#[test]
fn resolved_path_rules_and_unresolvable_rows_terminate() {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh(dir.path(), "r.db");
    let c = open(&db);
    let f = key("f0");
    let a1 = key("aa01");
    let a2 = key("aa02");
    let b = key("bb");
    for k in [&f, &a1, &a2, &b] {
        add_node(&c, k);
    }
    c.execute(
        "INSERT INTO neighbor_edges (node_a, node_b, count, last_seen) VALUES (?1, ?2, 1, '2026-03-29T17:33:00Z')",
        params![a2, f],
    )
    .unwrap();
    c.execute(
        "INSERT INTO neighbor_edges (node_a, node_b, count, last_seen) VALUES ('', ?1, 1, '2026-03-29T17:33:00Z')",
        params![a1],
    )
    .unwrap();
    // 1: ADVERT from f (from_pubkey set, upper-case), path AA,BB → a2 via adjacency, b
    insert_tx(&c, 1, "1100", 4, None);
    c.execute(
        "UPDATE transmissions SET from_pubkey = upper(?1) WHERE id = 1",
        [&f],
    )
    .unwrap();
    // 2: GRP_TXT: no anchor → [null, b]
    insert_tx(&c, 2, "1500", 5, None);
    // 3: ADVERT with from_pubkey NULL: originator from decoded_json
    insert_tx(
        &c,
        3,
        "1100",
        4,
        Some(&format!(r#"{{"type":"ADVERT","pubKey":"{f}"}}"#)),
    );
    // 4: TRACE
    insert_tx(&c, 4, EX_C, 9, None);
    insert_obs(&c, 1, 1, 1, Some(r#"["AA","BB"]"#), None);
    insert_obs(&c, 2, 2, 1, Some(r#"["AA","BB"]"#), None);
    insert_obs(&c, 3, 3, 1, Some(r#"["AA","BB"]"#), None);
    insert_obs(&c, 4, 2, 2, Some(r#"["AA","CC"]"#), None); // unresolvable
    insert_obs(&c, 5, 4, 1, Some(r#"["BB"]"#), None); // TRACE
    insert_obs(&c, 6, 2, 3, Some("[]"), None);
    insert_obs(&c, 7, 2, 4, Some(r#"["BB"]"#), None);
    c.execute(
        "UPDATE observations SET resolved_path = '[null]' WHERE id = 7",
        [],
    )
    .unwrap();
    insert_obs(&c, 8, 2, 5, Some(r#"["F0","AA"]"#), None); // f unique, then a2 adjacent to f
    drop(c);

    let v = run_json(&db, &["resolved-path"]);
    assert_eq!(n(&v, "resolved-path", "scanned"), 5, "{v}");
    assert_eq!(n(&v, "resolved-path", "updated"), 4);
    assert_eq!(n(&v, "resolved-path", "remaining"), 0);
    let got = col(&db, "SELECT resolved_path FROM observations ORDER BY id");
    let s = |x: String| Some(x);
    assert_eq!(
        got,
        vec![
            s(format!(r#"["{a2}","{b}"]"#)),
            s(format!(r#"[null,"{b}"]"#)),
            s(format!(r#"["{a2}","{b}"]"#)),
            None,
            None,
            None,
            s("[null]".to_string()),
            s(format!(r#"["{f}","{a2}"]"#)),
        ]
    );
    // The unresolvable row stays NULL and is not scanned again (#1119).
    let v = run_json(&db, &["resolved-path"]);
    assert_eq!(n(&v, "resolved-path", "scanned"), 0);
    // --reset visits it again (still unresolvable), nothing else changes.
    let before = dump(&db);
    let v = run_json(&db, &["resolved-path", "--reset", "resolved-path"]);
    assert_eq!(n(&v, "resolved-path", "scanned"), 1);
    assert_eq!(n(&v, "resolved-path", "updated"), 0);
    assert_eq!(dump(&db), before);
}

#[test]
fn path_json_hops_reopen_resolved_path_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh(dir.path(), "o.db");
    let c = open(&db);
    add_node(&c, &key("59"));
    insert_tx(&c, 1, EX_B, 5, None);
    insert_obs(&c, 1, 1, 1, None, Some(EX_B));
    insert_obs(&c, 2, 1, 2, Some(r#"["59"]"#), None);
    // A graph CoreScope built itself (no build-edges watermark): resolved-path
    // runs without waiting, so its cursor can pass a row path-json fills later.
    c.execute_batch(&format!(
        "INSERT INTO neighbor_edges (node_a, node_b, count, last_seen) VALUES ('{}', '{}', 1, '2026-01-01T00:00:00Z')",
        key("59"),
        key("60")
    ))
    .unwrap();
    drop(c);
    // resolved-path first: only row 2 has hops.
    let v = run_json(&db, &["resolved-path"]);
    assert_eq!(n(&v, "resolved-path", "updated"), 1);
    let v = run_json(&db, &["path-json"]);
    assert_eq!(n(&v, "path-json", "updated"), 1);
    let v = run_json(&db, &["resolved-path"]);
    assert_eq!(n(&v, "resolved-path", "updated"), 1);
    let got = col(&db, "SELECT resolved_path FROM observations ORDER BY id");
    assert_eq!(got[0], Some(format!(r#"["{}",null,null]"#, key("59"))));
}

#[test]
fn observer_blacklist_soft_deletes_case_insensitively() {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh(dir.path(), "b.db");
    let c = open(&db);
    for id in ["AABB", "ccdd", "EeFf", "keep"] {
        c.execute(
            "INSERT INTO observers (id, name, inactive) VALUES (?1, 'o', 0)",
            [id],
        )
        .unwrap();
    }
    drop(c);
    let cfg = dir.path().join("config.json");
    std::fs::write(&cfg, r#"{"observerBlacklist": [" CCDD ", "", "nobody"]}"#).unwrap();
    let out = bin()
        .args([
            "--json",
            "backfill",
            "observer-blacklist",
            "--observer",
            "aabb",
            "--observer",
            "eeff",
        ])
        .arg("--db")
        .arg(&db)
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(n(&v, "observer-blacklist", "updated"), 3);
    assert_eq!(
        task(&v, "observer-blacklist")["unmatched"],
        serde_json::json!(["nobody"])
    );
    let got = col(
        &db,
        "SELECT id || ':' || inactive FROM observers ORDER BY id",
    );
    let want: Vec<Option<String>> = ["AABB:1", "EeFf:1", "ccdd:1", "keep:0"]
        .iter()
        .map(|s| Some(s.to_string()))
        .collect();
    assert_eq!(got, want);
    // --observer without the task selected is a usage error
    bin()
        .args(["backfill", "from-pubkey", "--observer", "x", "--db"])
        .arg(&db)
        .assert()
        .code(2);
}

#[test]
fn dry_run_writes_nothing_and_max_seconds_zero_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let db = fixture_copy(dir.path());
    let before = dump(&db);
    let bytes = std::fs::read(&db).unwrap();
    let v = run_json(&db, &["--dry-run"]);
    assert_eq!(
        std::fs::read(&db).unwrap(),
        bytes,
        "dry run changed the file"
    );
    assert_eq!(v["dry_run"], true);
    let fp = n(&v, "from-pubkey", "updated");
    assert!(fp > 50);
    assert_eq!(n(&v, "from-pubkey", "remaining"), fp);
    assert_eq!(dump(&db), before);

    let v = run_json(&db, &["--max-seconds", "0"]);
    assert_eq!(v["complete"], false);
    assert_eq!(n(&v, "from-pubkey", "scanned"), 0);
    assert_eq!(n(&v, "from-pubkey", "remaining"), fp);
    let v = run_json(&db, &[]);
    assert_eq!(v["complete"], true);
    assert_eq!(n(&v, "from-pubkey", "updated"), fp);
    // No neighbor graph yet: resolved-path resolves nothing, every candidate
    // waits for build-edges and stays pending.
    let waiting = &v["tasks"]["resolved-path"]["waiting_for_edges"];
    assert_eq!(waiting["edges_upto"], 0);
    assert!(waiting["rows"].as_i64().unwrap() > 0);
    assert_eq!(n(&v, "resolved-path", "scanned"), 0);
    assert_eq!(waiting["rows"], v["tasks"]["resolved-path"]["remaining"]);
    bin()
        .args(["-q", "build-edges", "--db"])
        .arg(&db)
        .assert()
        .code(0);
    let after = run_json(&db, &["resolved-path"]);
    assert_eq!(after["complete"], true);
    assert!(
        after["tasks"]["resolved-path"]
            .get("waiting_for_edges")
            .is_none(),
        "{after}"
    );
    assert!(n(&after, "resolved-path", "updated") > 0);
    // check counts with the same code: nothing pending after a full run,
    // although unresolvable paths stay NULL.
    let out = bin()
        .args(["--json", "check", "--deep", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    let chk: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        chk["pending_backfills"],
        serde_json::json!({"from_pubkey": 0, "path_json": 0, "resolved_path": 0})
    );
    let unresolved: i64 = open(&db)
        .query_row(
            "SELECT COUNT(*) FROM observations WHERE resolved_path IS NULL AND path_json NOT IN ('', '[]')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(unresolved > 0);
    let obj = v["tasks"].as_object().unwrap();
    let mut names: Vec<&String> = obj.keys().collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "from-pubkey",
            "observer-blacklist",
            "path-json",
            "resolved-path"
        ]
    );
}

#[test]
fn not_migrated_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("legacy.db");
    copy_fixture(&p);
    bin().args(["backfill", "--db"]).arg(&p).assert().code(3);
}

/// A database with enough rows for many batches: ADVERTs with NULL
/// from_pubkey, observations with raw bytes and no path_json, nodes and edges.
fn big_db(dir: &Path, name: &str, rows: i64) -> PathBuf {
    use corescope_test_support::*;
    let db = fresh(dir, name);
    let mut c = open(&db);
    let t = c.transaction().unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let keys: Vec<[u8; 32]> = (0..64).map(|_| rng.gen()).collect();
    for k in &keys {
        t.execute(
            "INSERT INTO nodes (public_key, name) VALUES (?1, 'n')",
            [hex_lower(k)],
        )
        .unwrap();
    }
    for i in 0..32 {
        t.execute(
            "INSERT OR IGNORE INTO neighbor_edges (node_a, node_b, count, last_seen) VALUES (?1, ?2, 1, '2026-01-01T00:00:00Z')",
            params![hex_lower(&keys[i]), hex_lower(&keys[(i * 7 + 3) % 64])],
        )
        .unwrap();
    }
    for id in 1..=rows {
        let k = &keys[rng.gen_range(0..64)];
        let nhops = rng.gen_range(0..5);
        let hops: Vec<u8> = (0..nhops).map(|_| keys[rng.gen_range(0..64)][0]).collect();
        let raw = advert_packet(k, &hops);
        let decoded = if id % 5 == 0 {
            None
        } else {
            Some(format!(
                r#"{{"type":"ADVERT","pubKey":"{}"}}"#,
                hex_lower(k)
            ))
        };
        t.execute(
            "INSERT INTO transmissions (id, raw_hex, hash, first_seen, route_type, payload_type, decoded_json)
             VALUES (?1, ?2, ?3, '2026-01-01T00:00:00Z', 1, 4, ?4)",
            params![id, raw, format!("h{id:015}"), decoded],
        )
        .unwrap();
        let obs_raw = if id % 11 == 0 { "zz".to_string() } else { raw };
        t.execute(
            "INSERT INTO observations (id, transmission_id, observer_idx, path_json, timestamp, raw_hex)
             VALUES (?1, ?1, 1, NULL, 1767225600, ?2)",
            params![id, obs_raw],
        )
        .unwrap();
    }
    t.commit().unwrap();
    db
}

#[test]
fn kill_nine_then_rerun_equals_one_clean_run() {
    let dir = tempfile::tempdir().unwrap();
    let clean = big_db(dir.path(), "clean.db", 20000);
    let killed = dir.path().join("killed.db");
    std::fs::copy(&clean, &killed).unwrap();

    run_json(&clean, &[]);
    let want = dump(&clean);

    let exe = assert_cmd::cargo::cargo_bin("corescope");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    for i in 0..6 {
        // Alternate tiny batches (many commits) and the default budget.
        let lock = if i % 2 == 0 { "20" } else { "200" };
        let mut child = StdCommand::new(&exe)
            .args(["backfill", "--max-lock-ms", lock, "--db"])
            .arg(&killed)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.gen_range(20..400)));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
    }
    let v = run_json(&killed, &[]);
    assert_eq!(v["complete"], true);
    assert_eq!(dump(&killed), want);
    // and once more: nothing left
    let v = run_json(&killed, &[]);
    for t in ["from-pubkey", "path-json", "resolved-path"] {
        assert_eq!(n(&v, t, "scanned"), 0, "{t}");
    }
    assert_eq!(dump(&killed), want);
}
