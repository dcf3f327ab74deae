//! `corescope schema`: the catalog of a target, or a database's actual
//! schema, as normalised SQL or JSON. Both sides use one form (one statement
//! a line, whitespace collapsed, `IF NOT EXISTS` dropped as SQLite does when
//! it stores a statement, tables then indexes, views, triggers, each by
//! name), so an ordinary `diff` of the two is meaningful.

use std::path::Path;

use crate::catalog::{self, Target};
use crate::cli::{SchemaArgs, SchemaFormat};
use crate::report::{Outcome, Report};
use crate::store::probe::normalise_sql;
use crate::store::ReadOnlyDb;

/// One schema object in normalised form.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SchemaObject {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub table: String,
    pub sql: String,
}

#[derive(serde::Serialize)]
struct SchemaReport {
    /// `target:latest`, `target:seed` or `db:PATH`.
    source: String,
    format: SchemaFormat,
    objects: Vec<SchemaObject>,
}

impl Report for SchemaReport {
    fn human(&self) -> String {
        match self.format {
            SchemaFormat::Sql => render_sql(&self.objects),
            SchemaFormat::Json => render_json(&self.source, &self.objects),
        }
    }
}

pub fn run(args: &SchemaArgs, busy_timeout_ms: u64) -> anyhow::Result<Outcome> {
    let (source, objects) = match &args.from_db {
        Some(path) => (
            format!("db:{}", path.display()),
            from_db(path, busy_timeout_ms)?,
        ),
        None => (
            format!("target:{}", args.target.name()),
            from_catalog(args.target),
        ),
    };
    Outcome::from_report(&SchemaReport {
        source,
        format: args.format,
        objects,
    })
}

fn kind_rank(kind: &str) -> u8 {
    match kind {
        "table" => 0,
        "index" => 1,
        "view" => 2,
        "trigger" => 3,
        _ => 4,
    }
}

fn sort(objects: &mut [SchemaObject]) {
    objects.sort_by(|a, b| (kind_rank(&a.kind), &a.name).cmp(&(kind_rank(&b.kind), &b.name)));
}

/// The objects `migrate --create` builds at `target`.
pub fn from_catalog(target: Target) -> Vec<SchemaObject> {
    let mut out = Vec::new();
    for t in catalog::TABLES.iter().filter(|t| target.includes(t.since)) {
        out.push(SchemaObject {
            kind: "table".into(),
            name: t.name.into(),
            table: t.name.into(),
            sql: normalise_sql(&catalog::create_table_sql(t, target)),
        });
    }
    for i in catalog::INDEXES.iter().filter(|i| target.includes(i.since)) {
        out.push(SchemaObject {
            kind: "index".into(),
            name: i.name.into(),
            table: i.table.into(),
            sql: normalise_sql(i.sql),
        });
    }
    for v in catalog::VIEWS.iter().filter(|v| target.includes(v.since)) {
        out.push(SchemaObject {
            kind: "view".into(),
            name: v.name.into(),
            table: v.name.into(),
            sql: normalise_sql(v.sql),
        });
    }
    sort(&mut out);
    out
}

/// The objects of a database (read-only), without SQLite's internals
/// (`sqlite_%` and automatic indexes, which have no SQL).
pub fn from_db(path: &Path, busy_timeout_ms: u64) -> anyhow::Result<Vec<SchemaObject>> {
    let db = ReadOnlyDb::open(path, busy_timeout_ms)?;
    let mut st = db.prepare(
        "SELECT type, name, tbl_name, sql FROM sqlite_master \
         WHERE type IN ('table', 'index', 'view', 'trigger') AND sql IS NOT NULL \
         AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
    )?;
    let mut out = st
        .query_map([], |r| {
            Ok(SchemaObject {
                kind: r.get(0)?,
                name: r.get(1)?,
                table: r.get(2)?,
                sql: normalise_sql(&r.get::<_, String>(3)?),
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    sort(&mut out);
    Ok(out)
}

/// One statement a line, each ending in `;`.
pub fn render_sql(objects: &[SchemaObject]) -> String {
    objects.iter().map(|o| format!("{};\n", o.sql)).collect()
}

fn render_json(source: &str, objects: &[SchemaObject]) -> String {
    let v = serde_json::json!({ "source": source, "objects": objects });
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalise_collapses_whitespace_and_drops_if_not_exists() {
        assert_eq!(
            normalise_sql("CREATE TABLE IF NOT EXISTS t (\n  a TEXT ,\n  b  INTEGER\n)"),
            "CREATE TABLE t (a TEXT, b INTEGER)"
        );
        assert_eq!(
            normalise_sql("CREATE UNIQUE INDEX IF NOT EXISTS i ON t(a, COALESCE(b, '  '))"),
            "CREATE UNIQUE INDEX i ON t(a, COALESCE(b, '  '))"
        );
    }

    #[test]
    fn catalog_order_is_tables_indexes_views_by_name() {
        let objs = from_catalog(Target::Latest);
        let ranks: Vec<u8> = objs.iter().map(|o| kind_rank(&o.kind)).collect();
        let mut sorted = ranks.clone();
        sorted.sort();
        assert_eq!(ranks, sorted);
        assert!(objs.iter().any(|o| o.name == catalog::DEDUP_INDEX));
        assert!(objs.iter().all(|o| !o.sql.contains("IF NOT EXISTS")));
    }
}
