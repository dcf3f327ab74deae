//! What build-edges refuses before any write, and where a first run on
//! edges built by CoreScope starts counting.

use rusqlite::Connection;
use serde::Serialize;

use super::staging::once;
use super::EDGES_TABLE;
use crate::error::Failure;
use crate::store::edge_state::{read_watermark, watermark_ahead, WATERMARK_KEY};
use crate::store::engine::Engine;
use crate::store::values::text;
use crate::store::{self};
use crate::timeutil;

/// Columns, indexes and triggers of `neighbor_edges` that the catalog does
/// not define (the rebuilt table has the catalog's shape only).
pub fn foreign_objects(conn: &Connection) -> anyhow::Result<Vec<String>> {
    let mut found = Vec::new();
    let known: Vec<&str> = crate::catalog::table(EDGES_TABLE)
        .map(|t| t.columns.iter().map(|c| c.name).collect())
        .unwrap_or_default();
    for c in store::columns(conn, EDGES_TABLE)? {
        if !known.iter().any(|k| k.eq_ignore_ascii_case(&c)) {
            found.push(format!("column {EDGES_TABLE}.{c}"));
        }
    }
    let mut st = conn.prepare(
        "SELECT type, name FROM sqlite_master
          WHERE tbl_name = ?1 AND type IN ('index', 'trigger')
            AND name NOT LIKE 'sqlite_autoindex_%'
          ORDER BY type, name",
    )?;
    let rows = st.query_map([EDGES_TABLE], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    for row in rows {
        let (kind, name) = row?;
        let owned = kind == "index"
            && crate::catalog::INDEXES
                .iter()
                .any(|i| i.name == name && i.table == EDGES_TABLE);
        if !owned {
            found.push(format!("{kind} {name}"));
        }
    }
    Ok(found)
}

/// A `--rebuild` replaces `neighbor_edges` by a table of the catalog's shape:
/// refuse (before any write) when the table has anything else, which the
/// swap would silently drop.
/// `stale`: the reasons the graph is marked stale (a plain run rebuilds
/// then, and cannot fall back to the incremental build).
pub fn refuse_foreign_objects(
    conn: &Connection,
    path: &std::path::Path,
    stale: &[String],
) -> anyhow::Result<()> {
    let found = foreign_objects(conn)?;
    if found.is_empty() {
        return Ok(());
    }
    let choice = if stale.is_empty() {
        "Either keep them and run `corescope build-edges` without --rebuild (the incremental build keeps them), or save what you need, remove them (ALTER TABLE neighbor_edges DROP COLUMN ..., DROP INDEX ..., DROP TRIGGER ...) and run the rebuild again".to_string()
    } else {
        format!(
            "The graph is marked stale ({}), so every `corescope build-edges` rebuilds it until a rebuild succeeds: save what you need, remove them (ALTER TABLE neighbor_edges DROP COLUMN ..., DROP INDEX ..., DROP TRIGGER ...) and run `corescope build-edges` again",
            stale.join("; ")
        )
    };
    Err(Failure::Fatal(format!(
        "refusing `build-edges --rebuild` on {}: neighbor_edges has {} that corescope does not manage ({}); the rebuild replaces the table with its standard shape and would drop them (a column with its data). Nothing was changed. {choice}",
        path.display(),
        if found.len() == 1 { "an object" } else { "objects" },
        found.join(", ")
    ))
    .into())
}

/// Refuse (before any write) an incremental run whose watermark is ahead of
/// every observation: it would silently skip new rows.
pub fn refuse_watermark_ahead(conn: &Connection, path: &std::path::Path) -> anyhow::Result<()> {
    if let Some((w, ceiling)) = watermark_ahead(conn)? {
        return Err(Failure::Fatal(format!(
            "the build-edges watermark of {p} is observation {w}, above the highest observation id there is or was ({ceiling}): \
             the database was restored from an older backup or observations was rebuilt, and new observations with ids up to {w} would never be counted. \
             Nothing was changed. Run `corescope build-edges --rebuild --db {p}` to recount every edge from the observations (it resets the watermark)",
            p = path.display()
        ))
        .into());
    }
    Ok(())
}

/// Where the first run on edges built by CoreScope starts counting.
#[derive(Debug, Serialize)]
pub struct Seeded {
    pub existing_edges: i64,
    pub max_last_seen: Option<String>,
    pub start_after_id: i64,
}

/// The latest `last_seen` of `neighbor_edges`, compared as instants.
fn max_last_seen(conn: &Connection) -> anyhow::Result<Option<i64>> {
    let mut max_seen: Option<i64> = None;
    let mut st = conn.prepare("SELECT last_seen FROM neighbor_edges")?;
    let mut it = st.query([])?;
    while let Some(r) = it.next()? {
        if let Some(t) = text(r.get_ref(0)?).and_then(timeutil::parse_instant) {
            max_seen = Some(max_seen.map_or(t, |m: i64| m.max(t)));
        }
    }
    Ok(max_seen)
}

/// First incremental run on a table CoreScope filled: start after the last
/// observation whose timestamp is ≤ MAX(last_seen) (compared as instants).
pub fn seed_from_existing(engine: &mut Engine<'_>) -> anyhow::Result<Option<Seeded>> {
    let conn = engine.conn();
    if read_watermark(conn, WATERMARK_KEY)?.is_some() {
        return Ok(None);
    }
    let rows: i64 = conn.query_row("SELECT count(*) FROM neighbor_edges", [], |r| r.get(0))?;
    if rows == 0 {
        return Ok(None);
    }
    let max_seen = max_last_seen(conn)?;
    let start: i64 = match max_seen {
        Some(t) => conn
            .query_row(
                "SELECT MAX(id) FROM observations WHERE timestamp <= ?1",
                [t],
                |r| r.get::<_, Option<i64>>(0),
            )?
            .unwrap_or(0),
        None => 0,
    };
    let applied = once(engine, |tx| {
        if read_watermark(tx, WATERMARK_KEY)?.is_some() {
            return Ok(false);
        }
        store::state_set(tx, WATERMARK_KEY, &start.to_string())?;
        Ok(true)
    })?;
    Ok(applied.then(|| Seeded {
        existing_edges: rows,
        max_last_seen: max_seen.map(timeutil::rfc3339),
        start_after_id: start,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::edge_state::observation_ceiling;

    fn edges_db() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE TABLE observations (id INTEGER PRIMARY KEY AUTOINCREMENT, x);
             CREATE TABLE neighbor_edges (node_a TEXT NOT NULL, node_b TEXT NOT NULL, count INTEGER DEFAULT 1, last_seen TEXT, PRIMARY KEY (node_a, node_b));
             CREATE TABLE _corescope_state (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at TEXT NOT NULL);
             INSERT INTO observations (x) VALUES (1), (2), (3);",
        )
        .unwrap();
        c
    }

    #[test]
    fn foreign_objects_lists_what_the_catalog_does_not_define() {
        let c = edges_db();
        assert!(foreign_objects(&c).unwrap().is_empty());
        c.execute_batch(
            "ALTER TABLE neighbor_edges ADD COLUMN note TEXT;
             CREATE INDEX ix ON neighbor_edges(last_seen);
             CREATE TRIGGER tr AFTER DELETE ON neighbor_edges BEGIN SELECT 1; END;",
        )
        .unwrap();
        assert_eq!(
            foreign_objects(&c).unwrap(),
            vec!["column neighbor_edges.note", "index ix", "trigger tr"]
        );
    }

    #[test]
    fn watermark_ahead_uses_the_autoincrement_counter() {
        let c = edges_db();
        store::state_set(&c, WATERMARK_KEY, "3").unwrap();
        assert_eq!(watermark_ahead(&c).unwrap(), None);
        // The newest rows deleted: their ids are still taken.
        c.execute("DELETE FROM observations WHERE id >= 2", [])
            .unwrap();
        assert_eq!(observation_ceiling(&c).unwrap(), 3);
        assert_eq!(watermark_ahead(&c).unwrap(), None);
        store::state_set(&c, WATERMARK_KEY, "4").unwrap();
        assert_eq!(watermark_ahead(&c).unwrap(), Some((4, 3)));
    }

    #[test]
    fn max_last_seen_compares_instants() {
        let c = edges_db();
        c.execute_batch(
            "INSERT INTO neighbor_edges VALUES ('a', 'b', 1, '1970-01-01T00:00:10.000Z'),
                                              ('a', 'c', 1, '1970-01-01T00:00:09Z'),
                                              ('a', 'd', 1, 'junk');",
        )
        .unwrap();
        assert_eq!(max_last_seen(&c).unwrap(), Some(10));
    }
}
