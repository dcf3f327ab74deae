//! corescope's own bookkeeping table `_corescope_state` (watermarks,
//! cursors, run markers): get, set, delete. Its DDL is the catalog's
//! definition of the table.

use rusqlite::Connection;

use super::probe::table_exists;
use crate::catalog::{self, Target};

/// corescope's own bookkeeping table (watermarks and cursors).
pub const STATE_TABLE: &str = "_corescope_state";

/// `CREATE TABLE IF NOT EXISTS _corescope_state (...)`, from the catalog.
pub fn state_table_sql() -> String {
    match catalog::table(STATE_TABLE) {
        Some(t) => catalog::create_table_sql(t, Target::Latest),
        // The catalog defines the table (pinned by a unit test); this arm
        // only keeps the function total.
        None => String::new(),
    }
}

pub fn state_get(conn: &Connection, key: &str) -> anyhow::Result<Option<String>> {
    if !table_exists(conn, STATE_TABLE)? {
        return Ok(None);
    }
    let v = conn
        .query_row(
            "SELECT value FROM _corescope_state WHERE key = ?1",
            [key],
            |r| r.get::<_, String>(0),
        )
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })?;
    Ok(v)
}

pub fn state_set(conn: &Connection, key: &str, value: &str) -> anyhow::Result<()> {
    conn.execute(
        "INSERT INTO _corescope_state (key, value, updated_at) VALUES (?1, ?2, strftime('%Y-%m-%dT%H:%M:%SZ','now'))
         ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        [key, value],
    )?;
    Ok(())
}

pub fn state_delete(conn: &Connection, key: &str) -> anyhow::Result<()> {
    if table_exists(conn, STATE_TABLE)? {
        conn.execute("DELETE FROM _corescope_state WHERE key = ?1", [key])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::open::tests::tmpdb;
    use crate::store::{OpenOptions, WriteDb};

    #[test]
    fn state_table_ddl_comes_from_the_catalog() {
        let sql = state_table_sql();
        assert!(
            sql.starts_with("CREATE TABLE IF NOT EXISTS _corescope_state ("),
            "{sql}"
        );
        assert!(
            sql.contains("key TEXT PRIMARY KEY") && sql.contains("updated_at TEXT NOT NULL"),
            "{sql}"
        );
    }

    #[test]
    fn state_roundtrip() {
        let (_d, p) = tmpdb();
        let mut db = WriteDb::open(&p, &OpenOptions::default()).unwrap();
        assert_eq!(state_get(db.conn(), "k").unwrap(), None);
        db.write(|tx| {
            tx.execute_batch(&state_table_sql())?;
            state_set(tx, "k", "1")?;
            state_set(tx, "k", "2")?;
            Ok(())
        })
        .unwrap();
        assert_eq!(state_get(db.conn(), "k").unwrap().as_deref(), Some("2"));
    }
}
