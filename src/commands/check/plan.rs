//! How `check` keeps its default mode cheap at any size: a query is run
//! there only when SQLite's plan for it reads no table from end to end
//! (`EXPLAIN QUERY PLAN` has no `SCAN <table>` of a data table).

use rusqlite::Connection;

/// Tables whose size does not grow with the traffic: the migration records,
/// corescope's state, and the observers (one row per radio).
const SMALL_TABLES: &[&str] = &[
    "_migrations",
    "_async_migrations",
    "_corescope_state",
    "observers",
];

/// The steps of SQLite's plan for `sql` that read a whole data table or
/// index (`SCAN observations`, `SCAN o USING COVERING INDEX ...`). Virtual
/// tables (`pragma_table_info`), the schema table, constant rows and the
/// [`SMALL_TABLES`] are not counted: their size does not grow with the data.
///
/// A bare `SEARCH t` (no `USING`) is SQLite's min()/max() optimisation: one
/// row read at the end of the rowid B-tree for `max(rowid)`, but a loop over
/// every row for `min(col)` of a column without an index. The bytecode tells
/// them apart: only the loop steps with `Next`.
pub fn full_scans(conn: &Connection, sql: &str) -> rusqlite::Result<Vec<String>> {
    let mut st = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
    let details = st
        .query_map([], |r| r.get::<_, String>(3))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let loops = || -> rusqlite::Result<bool> {
        let mut st = conn.prepare(&format!("EXPLAIN {sql}"))?;
        let ops = st
            .query_map([], |r| r.get::<_, String>(1))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(ops.iter().any(|o| o == "Next"))
    };
    let bare_search = details.iter().any(|d| {
        d.strip_prefix("SEARCH ")
            .is_some_and(|rest| !rest.contains(' ') && !rest.starts_with("sqlite_"))
    });
    let bare_search_loops = bare_search && loops()?;
    Ok(details
        .into_iter()
        .filter(|d| {
            if let Some(rest) = d.strip_prefix("SEARCH ") {
                return bare_search_loops && !rest.contains(' ') && !rest.starts_with("sqlite_");
            }
            let Some(rest) = d.strip_prefix("SCAN ") else {
                return false;
            };
            let name = rest.split_whitespace().next().unwrap_or("");
            !(rest.starts_with("CONSTANT ROW")
                || rest.contains("VIRTUAL TABLE")
                || name.starts_with("sqlite_")
                || name.starts_with("pragma_")
                || SMALL_TABLES.contains(&name))
        })
        .collect())
}

/// `sql` reads no data table from end to end.
pub fn is_cheap(conn: &Connection, sql: &str) -> rusqlite::Result<bool> {
    Ok(full_scans(conn, sql)?.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_lookups_are_cheap_scans_are_not() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b TEXT);
             CREATE INDEX t_a ON t(a);",
        )
        .unwrap();
        assert!(is_cheap(&c, "SELECT max(id) FROM t").unwrap());
        assert!(is_cheap(&c, "SELECT min(a) FROM t").unwrap());
        assert!(is_cheap(&c, "SELECT count(*) FROM t WHERE a = 'x'").unwrap());
        assert!(is_cheap(&c, "SELECT name FROM pragma_table_info('t')").unwrap());
        assert!(is_cheap(&c, "SELECT count(*) FROM sqlite_master").unwrap());
        assert!(is_cheap(&c, "SELECT coalesce(max(rowid), 0) FROM t").unwrap());
        assert!(is_cheap(&c, "SELECT max(id) FROM t").unwrap());
        assert_eq!(
            full_scans(&c, "SELECT min(b) FROM t").unwrap(),
            vec!["SEARCH t".to_string()]
        );
        assert!(!is_cheap(&c, "SELECT min(b) FROM t").unwrap());
        assert!(!is_cheap(&c, "SELECT count(*) FROM t WHERE b = ''").unwrap());
        assert!(!is_cheap(&c, "SELECT count(*) FROM t").unwrap());
    }
}
