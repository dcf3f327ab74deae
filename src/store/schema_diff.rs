//! Every difference between a database's schema and the catalog of a
//! target, one entry each, with CoreScope's semantics: a difference `breaks`
//! when a statement of the ingestor or server would fail or behave
//! differently, is `drift` when harmless, `extra` when the catalog does not
//! know the object. Reads only `sqlite_master` and schema pragmas. Shown by
//! `check --diff`; `migrate` reports what is left after its repairs.

use std::collections::BTreeMap;

use rusqlite::Connection;

use super::probe::{self, normalise_sql};
use crate::catalog::{self, Target};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Breaks,
    Drift,
    Extra,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Breaks => "breaks",
            Severity::Drift => "drift",
            Severity::Extra => "extra",
        }
    }
}

/// One difference.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DiffEntry {
    /// `table:T`, `column:T.C`, `index:I`, `view:V`, `trigger:X`.
    pub object: String,
    /// What the catalog wants (`-` when the catalog does not have it).
    pub expected: String,
    /// What the database has (`-` when it is missing).
    pub actual: String,
    pub severity: Severity,
    pub fix: String,
}

/// A column as `PRAGMA table_info` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Col {
    name: String,
    decl_type: String,
    notnull: bool,
    default: Option<String>,
    pk: i64,
}

impl Col {
    fn describe(&self) -> String {
        let mut s = if self.decl_type.is_empty() {
            "(no type)".to_string()
        } else {
            self.decl_type.clone()
        };
        if self.pk > 0 {
            s.push_str(" PRIMARY KEY");
        }
        if self.notnull {
            s.push_str(" NOT NULL");
        }
        if let Some(d) = &self.default {
            s.push_str(&format!(" DEFAULT {d}"));
        }
        s
    }
}

fn columns(conn: &Connection, table: &str) -> rusqlite::Result<Vec<Col>> {
    let mut st = conn.prepare(&format!(
        "PRAGMA table_info({})",
        catalog::quote_ident(table)
    ))?;
    let cols = st
        .query_map([], |r| {
            Ok(Col {
                name: r.get(1)?,
                decl_type: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                notnull: r.get::<_, i64>(3)? != 0,
                default: r.get(4)?,
                pk: r.get(5)?,
            })
        })?
        .collect();
    cols
}

/// SQLite's column affinity of a declared type (the rules of "Determination
/// of Column Affinity").
pub fn affinity(decl: &str) -> &'static str {
    let t = decl.to_ascii_uppercase();
    if t.contains("INT") {
        "INTEGER"
    } else if t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT") {
        "TEXT"
    } else if t.contains("BLOB") || t.is_empty() {
        "BLOB"
    } else if t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB") {
        "REAL"
    } else {
        "NUMERIC"
    }
}

/// `type → name → sql` of a connection's schema (no `sqlite_%`, no
/// automatic indexes).
fn objects(conn: &Connection) -> rusqlite::Result<BTreeMap<(String, String), (String, String)>> {
    let mut st = conn.prepare(
        "SELECT type, name, tbl_name, sql FROM sqlite_master \
         WHERE type IN ('table', 'index', 'view', 'trigger') AND sql IS NOT NULL \
         AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
    )?;
    let rows = st
        .query_map([], |r| {
            Ok((
                (r.get::<_, String>(0)?, r.get::<_, String>(1)?),
                (r.get::<_, String>(2)?, r.get::<_, String>(3)?),
            ))
        })?
        .collect();
    rows
}

/// corescope's own objects (merge log, staging, state): never `extra`.
fn own(name: &str) -> bool {
    name.starts_with("_corescope_")
}

const MIGRATE: &str = "run `corescope migrate`";

fn rebuild_fix(table: &str) -> String {
    format!(
        "not repaired by migrate: take a backup, stop the ingestor, rebuild {table} with the catalog's definition (`corescope schema` prints it): create it under a new name, INSERT … SELECT the rows, drop the old table, rename, re-create its indexes; then run `corescope migrate` (docs/migrate.md, \"A column of the wrong type\")"
    )
}

pub fn diff(conn: &Connection, target: Target) -> anyhow::Result<Vec<DiffEntry>> {
    let want_conn = probe::catalog_in_memory(target)?;
    let want = objects(&want_conn)?;
    let have = objects(conn)?;
    let mut out = Vec::new();
    let entry =
        |object: String, expected: String, actual: String, severity: Severity, fix: String| {
            DiffEntry {
                object,
                expected,
                actual,
                severity,
                fix,
            }
        };

    // Tables and their columns.
    for ((kind, name), (_, sql)) in want.iter().filter(|((k, _), _)| k == "table") {
        let required = catalog::table(name).is_some_and(|t| t.required);
        if !have.contains_key(&(kind.clone(), name.clone())) {
            out.push(entry(
                format!("table:{name}"),
                normalise_sql(sql),
                "-".into(),
                if required {
                    Severity::Breaks
                } else {
                    Severity::Drift
                },
                MIGRATE.into(),
            ));
            continue;
        }
        let want_cols = columns(&want_conn, name)?;
        let have_cols = columns(conn, name)?;
        for w in &want_cols {
            let object = format!("column:{name}.{}", w.name);
            let Some(h) = have_cols
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(&w.name))
            else {
                out.push(entry(
                    object,
                    w.describe(),
                    "-".into(),
                    Severity::Breaks,
                    MIGRATE.into(),
                ));
                continue;
            };
            if h == w {
                continue;
            }
            let severity = if affinity(&h.decl_type) != affinity(&w.decl_type)
                || (h.pk > 0) != (w.pk > 0)
                || h.notnull != w.notnull
                || (w.default.is_some() && h.default != w.default)
            {
                Severity::Breaks
            } else {
                Severity::Drift
            };
            let fix = if severity == Severity::Breaks {
                rebuild_fix(name)
            } else {
                "harmless; nothing to do (or rebuild the table with the catalog's definition)"
                    .into()
            };
            out.push(entry(object, w.describe(), h.describe(), severity, fix));
        }
        for h in have_cols.iter().filter(|h| {
            !want_cols
                .iter()
                .any(|w| w.name.eq_ignore_ascii_case(&h.name))
        }) {
            out.push(entry(
                format!("column:{name}.{}", h.name),
                "-".into(),
                h.describe(),
                Severity::Extra,
                "unknown to this corescope (a newer CoreScope, or a local change): upgrade corescope, or drop the column if nothing uses it".into(),
            ));
        }
    }
    // inactive_nodes must mirror nodes column for column: the ingestor's
    // retention copies with `INSERT OR REPLACE INTO inactive_nodes SELECT * FROM nodes`.
    let key = |n: &str| ("table".to_string(), n.to_string());
    if have.contains_key(&key("nodes")) && have.contains_key(&key("inactive_nodes")) {
        let shape =
            |cols: Vec<Col>| -> Vec<String> { cols.iter().map(|c| c.name.clone()).collect() };
        let nodes = shape(columns(conn, "nodes")?);
        let inactive = shape(columns(conn, "inactive_nodes")?);
        if nodes != inactive {
            out.push(entry(
                "table:inactive_nodes".into(),
                format!("the columns of nodes, in order: {}", nodes.join(", ")),
                inactive.join(", "),
                Severity::Breaks,
                "run `corescope migrate` (rebuilds inactive_nodes with the columns of nodes, copying rows by name)".into(),
            ));
        }
    }

    // Indexes.
    for ((_, name), (table, sql)) in want.iter().filter(|((k, _), _)| k == "index") {
        let expected = normalise_sql(sql);
        let Some((_, have_sql)) = have.get(&("index".to_string(), name.clone())) else {
            let breaks = name == catalog::DEDUP_INDEX;
            let table_there = have.contains_key(&key(table));
            if !table_there {
                continue; // the missing table is the entry
            }
            out.push(entry(
                format!("index:{name}"),
                expected,
                "-".into(),
                if breaks {
                    Severity::Breaks
                } else {
                    Severity::Drift
                },
                MIGRATE.into(),
            ));
            continue;
        };
        let actual = normalise_sql(have_sql);
        let severity = match probe::index_diff(name, sql, have_sql) {
            probe::IndexDiff::Same => continue,
            probe::IndexDiff::Harmless => Severity::Drift,
            probe::IndexDiff::Breaks => Severity::Breaks,
        };
        let fix = if severity == Severity::Breaks {
            format!(
                "run `corescope migrate` (it drops and re-creates {name}{})",
                if name == catalog::DEDUP_INDEX {
                    " after merging duplicate observations"
                } else {
                    ""
                }
            )
        } else {
            format!(
                "harmless; to match the catalog: DROP INDEX {name}; then run `corescope migrate`"
            )
        };
        out.push(entry(
            format!("index:{name}"),
            expected,
            actual,
            severity,
            fix,
        ));
    }

    // Views: compared like migrate compares them (whitespace and case).
    for ((_, name), (_, sql)) in want.iter().filter(|((k, _), _)| k == "view") {
        match have.get(&("view".to_string(), name.clone())) {
            Some((_, h)) if probe::norm_sql(h) == probe::norm_sql(sql) => {}
            other => out.push(entry(
                format!("view:{name}"),
                normalise_sql(sql),
                other.map_or("-".to_string(), |(_, h)| normalise_sql(h)),
                Severity::Breaks,
                "run `corescope migrate` (re-creates the view)".into(),
            )),
        }
    }

    // Objects the catalog does not know.
    for ((kind, name), (table, sql)) in &have {
        if want.contains_key(&(kind.clone(), name.clone())) || own(name) || own(table) {
            continue;
        }
        if kind == "index"
            && catalog::DROPPED_INDEXES
                .iter()
                .any(|(n, since)| n == name && target.includes(*since))
        {
            out.push(entry(
                format!("index:{name}"),
                "-".into(),
                normalise_sql(sql),
                Severity::Drift,
                "run `corescope migrate` (the target drops this index)".into(),
            ));
            continue;
        }
        if kind == "index" && !want.contains_key(&key(table)) && have.contains_key(&key(table)) {
            // An index of an unknown table: the table's entry covers it.
            continue;
        }
        out.push(entry(
            format!("{kind}:{name}"),
            "-".into(),
            normalise_sql(sql),
            Severity::Extra,
            format!(
                "unknown to this corescope (a newer CoreScope, or a local change): upgrade corescope, or DROP {} {name} if nothing uses it",
                kind.to_ascii_uppercase()
            ),
        ));
    }
    out.sort_by(|a, b| (a.severity, &a.object).cmp(&(b.severity, &b.object)));
    Ok(out)
}

/// The `breaks` differences `migrate` does not repair: existing columns
/// whose type, NOT NULL, default or key differ from the catalog's (SQLite
/// cannot alter a column; rebuilding a large table beside the ingestor is
/// the manual procedure of each entry's fix).
pub fn not_repaired_by_migrate(
    conn: &Connection,
    target: Target,
) -> anyhow::Result<Vec<DiffEntry>> {
    Ok(diff(conn, target)?
        .into_iter()
        .filter(|e| {
            e.severity == Severity::Breaks && e.object.starts_with("column:") && e.actual != "-"
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affinity_follows_sqlite_rules() {
        assert_eq!(affinity("INTEGER"), "INTEGER");
        assert_eq!(affinity("BIGINT"), "INTEGER");
        assert_eq!(affinity("VARCHAR(10)"), "TEXT");
        assert_eq!(affinity("REAL"), "REAL");
        assert_eq!(affinity("DOUBLE"), "REAL");
        assert_eq!(affinity(""), "BLOB");
        assert_eq!(affinity("NUMERIC"), "NUMERIC");
        assert_eq!(affinity("DATETIME"), "NUMERIC");
    }

    #[test]
    fn the_catalog_has_no_difference_with_itself() {
        for t in [Target::Seed, Target::Latest] {
            let conn = probe::catalog_in_memory(t).unwrap();
            assert_eq!(diff(&conn, t).unwrap(), vec![]);
        }
    }
}
