//! `schema_newer`: tables, columns, indexes, views, triggers and named
//! migrations in the database that corescope's catalog does not know. A
//! newer CoreScope wrote them; corescope leaves them alone, but its
//! readiness verdict only speaks for the schema it knows.

use rusqlite::Connection;

use crate::catalog::{self, Record};
use crate::store::{self, probe};

/// `_migrations` names CoreScope records that are not schema migrations of
/// the catalog: markers of background data jobs (the path_json backfill's
/// completion, also written by `corescope backfill path-json`; the
/// default-scope backfill, only when region keys are configured).
const KNOWN_MARKERS: &[&str] = &[
    "backfill_path_json_from_raw_hex_v1",
    "backfill_default_scope_v1",
];

/// Names corescope itself creates besides the catalog's tables and indexes
/// (merge log, rebuild staging and old edge tables, state): never "newer".
fn own(name: &str) -> bool {
    name.starts_with("_corescope_") || name.starts_with("sqlite_")
}

/// Everything the catalog does not know, as `table:x`, `column:t.c`,
/// `index:x`, `view:x`, `trigger:x`, `migration:x`, `async_migration:x`.
pub fn unknown_objects(conn: &Connection) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut st = conn.prepare(
        "SELECT type, name, tbl_name FROM sqlite_master WHERE type IN ('table', 'index', 'view', 'trigger') ORDER BY type, name",
    )?;
    let objects = st
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (kind, name, table) in objects {
        if own(&name) {
            continue;
        }
        let known = match kind.as_str() {
            "table" => catalog::table(&name).is_some(),
            "index" => {
                catalog::index(&name).is_some()
                    || catalog::DROPPED_INDEXES.iter().any(|(n, _)| *n == name)
                    || own(&table)
            }
            "view" => catalog::VIEWS.iter().any(|v| v.name == name),
            _ => own(&table),
        };
        if !known {
            out.push(format!("{kind}:{name}"));
            continue;
        }
        if kind == "table" {
            if let Some(t) = catalog::table(&name) {
                for c in probe::columns(conn, &name)? {
                    let in_catalog = t.columns.iter().any(|d| d.name.eq_ignore_ascii_case(&c));
                    // inactive_nodes mirrors nodes, whatever nodes has.
                    let mirrors_nodes = name == "inactive_nodes"
                        && probe::columns(conn, "nodes")?
                            .iter()
                            .any(|n| n.eq_ignore_ascii_case(&c));
                    if !in_catalog && !mirrors_nodes && !legacy_column(&name, &c) {
                        out.push(format!("column:{name}.{c}"));
                    }
                }
            }
        }
    }
    for name in probe::recorded_migrations(conn)? {
        if !catalog::MIGRATIONS
            .iter()
            .any(|m| m.record == Record::Migrations && m.name == name)
            && !KNOWN_MARKERS.contains(&name.as_str())
        {
            out.push(format!("migration:{name}"));
        }
    }
    if store::table_exists(conn, "_async_migrations")? {
        let mut st = conn.prepare("SELECT name FROM _async_migrations ORDER BY name")?;
        let names = st
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for name in names {
            if !catalog::MIGRATIONS
                .iter()
                .any(|m| m.record == Record::AsyncMigrations && m.name == name)
            {
                out.push(format!("async_migration:{name}"));
            }
        }
    }
    Ok(out)
}

/// Columns older CoreScope versions had that the catalog does not describe
/// (the retired v2 observations shape has its own warning).
fn legacy_column(table: &str, column: &str) -> bool {
    table == "observations" && column.eq_ignore_ascii_case("observer_id")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_what_the_catalog_does_not_know() {
        let c = Connection::open_in_memory().unwrap();
        for sql in catalog::create_schema_sql(catalog::Target::Latest) {
            c.execute_batch(&sql).unwrap();
        }
        c.execute_batch(&store::state_table_sql()).unwrap();
        assert_eq!(unknown_objects(&c).unwrap(), Vec::<String>::new());
        c.execute_batch(
            "CREATE TABLE future_things (x);
             ALTER TABLE observations ADD COLUMN future_col TEXT;
             CREATE INDEX idx_future ON observations(future_col);
             INSERT INTO _migrations (name) VALUES ('future_migration_v9'), ('backfill_path_json_from_raw_hex_v1');",
        )
        .unwrap();
        assert_eq!(
            unknown_objects(&c).unwrap(),
            vec![
                "index:idx_future",
                "table:future_things",
                "column:observations.future_col",
                "migration:future_migration_v9"
            ]
        );
    }
}
