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

/// State key of the UTC time (`YYYY-MM-DDTHH:MM:SSZ`) the last run of
/// `job` ended (`jobs.build_edges.last_run`).
pub fn last_run_key(job: &str) -> String {
    format!("jobs.{job}.last_run")
}

/// State key saying whether the last run of `job` finished its work
/// (`"true"`) or stopped early at `--max-seconds` (`"false"`).
pub fn last_complete_key(job: &str) -> String {
    format!("jobs.{job}.last_complete")
}

/// Record, at the end of a run of `job`, when it ended and whether it was
/// complete (one short write; creates the state table if needed). `check`
/// reads both keys back with [`last_run`].
pub fn record_run(conn: &Connection, job: &str, complete: bool) -> anyhow::Result<()> {
    conn.execute_batch(&state_table_sql())?;
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    state_set(conn, &last_run_key(job), &now)?;
    state_set(
        conn,
        &last_complete_key(job),
        if complete { "true" } else { "false" },
    )
}

/// What [`record_run`] stored for `job`: `None` when it never ran (or ran
/// only with a corescope that did not record runs).
pub fn last_run(conn: &Connection, job: &str) -> anyhow::Result<Option<(String, bool)>> {
    let Some(at) = state_get(conn, &last_run_key(job))? else {
        return Ok(None);
    };
    let complete = state_get(conn, &last_complete_key(job))?.as_deref() == Some("true");
    Ok(Some((at, complete)))
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
        assert_eq!(last_run(db.conn(), "vacuum").unwrap(), None);
        db.write(|tx| record_run(tx, "vacuum", false)).unwrap();
        let (at, complete) = last_run(db.conn(), "vacuum").unwrap().unwrap();
        assert!(!complete && at.ends_with('Z') && at.len() == 20, "{at}");
    }
}
