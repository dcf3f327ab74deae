//! Helpers shared by the end-to-end tests (formerly `tests/common`; not
//! every module uses every helper).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use rusqlite::types::Value;
use rusqlite::Connection;
use sha2::{Digest, Sha256};

pub use super::bin;

pub fn fixture() -> PathBuf {
    super::Fixture::Legacy.path()
}

/// Copy the legacy fixture into `dir` (never write the original).
pub fn legacy_copy(dir: &Path) -> PathBuf {
    let dst = dir.join("legacy.db");
    super::copy_writable(&fixture(), &dst);
    dst
}

/// A fresh, migrated database created by the binary itself.
pub fn fresh_db(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    super::Corescope::new()
        .args(["migrate", "--create", "-q"])
        .db(&p)
        .run();
    p
}

pub fn sha256(path: &Path) -> String {
    let bytes = std::fs::read(path).expect("read file");
    hex::encode(Sha256::digest(bytes))
}

/// (name, size, sha256) of every entry of a directory, sorted.
pub fn listing(dir: &Path) -> Vec<(String, u64, String)> {
    let mut v: Vec<(String, u64, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let p = e.path();
            let md = std::fs::metadata(&p).unwrap();
            let sha = if md.is_file() {
                sha256(&p)
            } else {
                String::new()
            };
            (e.file_name().to_string_lossy().to_string(), md.len(), sha)
        })
        .collect();
    v.sort();
    v
}

/// A listing without corescope's run-lock files (`<db>.corescope-<cmd>.lock`):
/// each run writes its pid into them, bookkeeping that is not a change.
pub fn without_run_locks(v: Vec<(String, u64, String)>) -> Vec<(String, u64, String)> {
    v.into_iter()
        .filter(|(name, ..)| !(name.contains(".corescope-") && name.ends_with(".lock")))
        .collect()
}

pub fn columns(conn: &Connection, table: &str) -> Vec<String> {
    let mut st = conn
        .prepare("SELECT name FROM pragma_table_info(?1)")
        .unwrap();
    st.query_map([table], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

pub fn tables(conn: &Connection) -> Vec<String> {
    let mut st = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap();
    st.query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

/// Every row of `table` (the given columns, or all), ordered by rowid or by
/// all columns for WITHOUT ROWID-like tables.
pub fn dump(conn: &Connection, table: &str, cols: Option<&[String]>) -> Vec<Vec<Value>> {
    let cols: Vec<String> = match cols {
        Some(c) => c.to_vec(),
        None => columns(conn, table),
    };
    let list = cols
        .iter()
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let order = (1..=cols.len())
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!("SELECT {list} FROM \"{table}\" ORDER BY {order}");
    let mut st = conn.prepare(&sql).unwrap();
    let n = cols.len();
    st.query_map([], |r| (0..n).map(|i| r.get::<_, Value>(i)).collect())
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

pub fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

pub fn json_of(out: &[u8]) -> serde_json::Value {
    serde_json::from_slice(out).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}): {}",
            String::from_utf8_lossy(out)
        )
    })
}
