//! Shared helpers of the `build_edges` and `graph` modules.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection};
use serde_json::Value;

pub use super::bin;

/// A fresh, fully migrated database made by `corescope migrate --create`.
pub use super::common::fresh_db;

/// A 64-hex key starting with `prefix` (lower-case hex), padded with a
/// pattern derived from the prefix so keys stay distinct.
pub fn key(prefix: &str) -> String {
    let mut k = prefix.to_string();
    let fill = [
        "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "a", "b", "c", "d", "e", "f",
    ];
    let mut i = prefix.len();
    while k.len() < 64 {
        k.push_str(fill[i % 16]);
        i += 1;
    }
    k
}

pub fn add_node(c: &Connection, key: &str, name: Option<&str>, lat: Option<f64>, lon: Option<f64>) {
    c.execute(
        "INSERT INTO nodes (public_key, name, role, lat, lon, last_seen, first_seen)
         VALUES (?1, ?2, 'repeater', ?3, ?4, '2026-05-17T18:12:01Z', '2026-05-01T00:00:00Z')",
        params![key, name, lat, lon],
    )
    .unwrap();
}

/// Inserts an observer, returns its rowid.
pub fn add_observer(c: &Connection, id: &str, name: &str) -> i64 {
    c.execute(
        "INSERT INTO observers (id, name, last_seen, first_seen) VALUES (?1, ?2, '2026-05-17T18:12:01Z', '2026-05-01T00:00:00Z')",
        params![id, name],
    )
    .unwrap();
    c.last_insert_rowid()
}

/// Inserts a transmission, returns its id.
pub fn add_tx(
    c: &Connection,
    payload_type: i64,
    from_pubkey: Option<&str>,
    decoded_json: Option<&str>,
) -> i64 {
    let n: i64 = c
        .query_row(
            "SELECT COALESCE(MAX(id), 0) + 1 FROM transmissions",
            [],
            |r| r.get(0),
        )
        .unwrap();
    c.execute(
        "INSERT INTO transmissions (raw_hex, hash, first_seen, route_type, payload_type, decoded_json, from_pubkey)
         VALUES ('00', ?1, '2026-05-17T18:12:01Z', 1, ?2, ?3, ?4)",
        params![format!("{n:016x}"), payload_type, decoded_json, from_pubkey],
    )
    .unwrap();
    c.last_insert_rowid()
}

/// Inserts an observation, returns its id. `observer_idx` is any SQL value.
pub fn add_obs(
    c: &Connection,
    tx: i64,
    observer_idx: rusqlite::types::Value,
    path_json: Option<&str>,
    ts: i64,
) -> i64 {
    c.execute(
        "INSERT INTO observations (transmission_id, observer_idx, path_json, timestamp) VALUES (?1, ?2, ?3, ?4)",
        params![tx, observer_idx, path_json, ts],
    )
    .unwrap();
    c.last_insert_rowid()
}

pub type EdgeRow = (String, String, i64, Option<String>);

pub fn edges(db: &Path) -> Vec<EdgeRow> {
    let c = Connection::open(db).unwrap();
    let mut st = c
        .prepare(
            "SELECT node_a, node_b, count, last_seen FROM neighbor_edges ORDER BY node_a, node_b",
        )
        .unwrap();
    let rows = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap();
    rows.map(|r| r.unwrap()).collect()
}

pub fn state(db: &Path, k: &str) -> Option<String> {
    let c = Connection::open(db).unwrap();
    c.query_row(
        "SELECT value FROM _corescope_state WHERE key = ?1",
        [k],
        |r| r.get(0),
    )
    .ok()
}

/// Canonical pair: smaller first.
pub fn pair(a: &str, b: &str) -> (String, String) {
    if a < b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    }
}

/// Runs build-edges with `args`, expects success, returns the JSON report.
pub fn build(db: &Path, args: &[&str]) -> Value {
    super::Corescope::new()
        .args(["--json", "build-edges"])
        .args(args)
        .db(db)
        .json()
}

/// Copy of the legacy fixture, migrated.
pub fn migrated_fixture(dir: &Path) -> PathBuf {
    let p = super::common::legacy_copy(dir);
    bin().args(["migrate", "--db"]).arg(&p).assert().success();
    p
}
