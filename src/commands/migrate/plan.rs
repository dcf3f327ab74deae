//! The plan of a migration: the steps that bring a database to its target,
//! in order, derived from the catalog and the database as it is.
//!
//! Phases:
//! 1. missing tables (full target shape), then missing indexes that belong to
//!    no named migration and whose columns exist (so data steps have them);
//! 2. pending named migrations in `catalog::migration_order`: their columns
//!    and indexes, then their data step, then the record;
//! 3. whatever is still missing (columns whose migration was recorded without
//!    effect, the `nodes`/`inactive_nodes` pair rebuilt when it drifted,
//!    indexes on new columns, the duplicate merge and then the dedup index,
//!    the view) and indexes the target drops.

use std::collections::HashMap;

use rusqlite::Connection;

use crate::catalog::{self, ColumnDef, DataOp, IndexDef, MigrationDef, TableDef, Target, ViewDef};
use crate::store::probe;
use crate::store::{self};

use super::data::count_data;

#[derive(Debug)]
pub(super) enum Action {
    CreateTable(&'static TableDef),
    /// `inactive_nodes` created with the live columns of `nodes`, in order.
    CreateInactiveLikeNodes,
    CreateIndex(&'static IndexDef),
    Migration(&'static MigrationDef),
    AddColumn(&'static str, &'static ColumnDef),
    /// Merge groups of observations sharing the dedup key, as the
    /// ingestor's UPSERT would have (before the dedup index).
    MergeDuplicates {
        groups: i64,
    },
    /// Rebuild `inactive_nodes` in the shape of `nodes` (drifted pair).
    SyncInactiveNodes,
    DedupIndex,
    View(&'static ViewDef),
    DropIndex(&'static str),
}

#[derive(Debug)]
pub(super) struct Step {
    pub action: Action,
    pub label: String,
    pub detail: String,
    /// Rows a data step would touch (dry-run estimate / exact count).
    pub rows: Option<i64>,
}

/// Plain column names inside the index's parentheses (expressions ignored).
pub(super) fn index_columns(sql: &str) -> Vec<String> {
    let lower = sql.to_ascii_lowercase();
    let Some(on) = lower.find(" on ") else {
        return Vec::new();
    };
    let rest = &sql[on..];
    let (Some(open), Some(close)) = (rest.find('('), rest.rfind(')')) else {
        return Vec::new();
    };
    if close <= open {
        return Vec::new();
    }
    let mut cols: Vec<String> = rest[open + 1..close]
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .map(std::string::ToString::to_string)
        .collect();
    // Columns named in a partial index's WHERE clause.
    if let Some(w) = rest.to_ascii_lowercase().find(" where ") {
        for word in rest[w + 7..].split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            let is_ident = word
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
            let keyword = ["is", "not", "null", "and", "or", "in", "like"]
                .contains(&word.to_ascii_lowercase().as_str());
            if is_ident && !keyword && !cols.iter().any(|c| c == word) {
                cols.push(word.to_string());
            }
        }
    }
    cols
}

/// The steps that bring the database behind `conn` to `target`. With
/// `counts`, data steps carry the rows they would touch (dry run).
pub(super) fn plan(conn: &Connection, target: Target, counts: bool) -> anyhow::Result<Vec<Step>> {
    let mut p = Planner {
        conn,
        target,
        counts,
        pending: probe::pending_migrations(conn, target)?,
        steps: Vec::new(),
        new_tables: Vec::new(),
        cols_now: HashMap::new(),
        planned_idx: Vec::new(),
    };
    p.tables()?;
    p.free_indexes()?;
    p.migrations()?;
    p.leftover_columns();
    p.node_pair()?;
    p.leftover_indexes()?;
    p.views()?;
    p.dropped_indexes()?;
    Ok(p.steps)
}

struct Planner<'c> {
    conn: &'c Connection,
    target: Target,
    counts: bool,
    pending: Vec<&'static MigrationDef>,
    steps: Vec<Step>,
    /// Tables the plan creates (they get every column and index).
    new_tables: Vec<&'static str>,
    /// Columns of each existing table now (inactive_nodes: as it will be created).
    cols_now: HashMap<&'static str, Vec<String>>,
    /// Indexes already planned.
    planned_idx: Vec<&'static str>,
}

impl Planner<'_> {
    fn push(&mut self, action: Action, label: String, detail: String, rows: Option<i64>) {
        self.steps.push(Step {
            action,
            label,
            detail,
            rows,
        });
    }

    fn has_col(&self, table: &str, c: &str) -> bool {
        self.new_tables.contains(&table)
            || self
                .cols_now
                .get(table)
                .is_some_and(|v| v.iter().any(|x| x == c))
    }

    /// Missing, or there under its name with a definition that breaks a
    /// CoreScope statement (then it is dropped and re-created).
    fn index_missing(&self, i: &IndexDef) -> anyhow::Result<bool> {
        Ok(self.new_tables.contains(&i.table)
            || probe::index_missing(self.conn, i)?
            || self.index_breaks(i)?)
    }

    fn index_breaks(&self, i: &IndexDef) -> anyhow::Result<bool> {
        Ok(!self.new_tables.contains(&i.table) && probe::index_breaks(self.conn, i)?)
    }

    fn create_index(&mut self, i: &'static IndexDef) -> anyhow::Result<()> {
        self.planned_idx.push(i.name);
        let detail = if self.index_breaks(i)? {
            replace_detail(i)
        } else {
            format!("create index {} on {}", i.name, i.table)
        };
        self.push(
            Action::CreateIndex(i),
            format!("index:{}", i.name),
            detail,
            None,
        );
        Ok(())
    }

    /// Phase 1: missing tables.
    fn tables(&mut self) -> anyhow::Result<()> {
        let nodes_cols = store::columns(self.conn, "nodes")?;
        let target = self.target;
        for t in catalog::TABLES.iter().filter(|t| target.includes(t.since)) {
            let cols = store::columns(self.conn, t.name)?;
            if cols.is_empty() && t.name == "inactive_nodes" && !nodes_cols.is_empty() {
                // Same columns as nodes, in nodes' order; later additions go to
                // both tables alike (planned below as for an existing table).
                self.push(
                    Action::CreateInactiveLikeNodes,
                    format!("table:{}", t.name),
                    format!(
                        "create table {} with the {} columns of nodes, in their order",
                        t.name,
                        nodes_cols.len()
                    ),
                    None,
                );
                self.cols_now.insert(t.name, nodes_cols.clone());
                continue;
            }
            if cols.is_empty() {
                self.new_tables.push(t.name);
                self.push(
                    Action::CreateTable(t),
                    format!("table:{}", t.name),
                    format!("create table {}", t.name),
                    None,
                );
            }
            self.cols_now.insert(t.name, cols);
        }
        Ok(())
    }

    /// Phase 1: missing indexes of no named migration whose columns exist.
    fn free_indexes(&mut self) -> anyhow::Result<()> {
        let claimed: Vec<&str> = catalog::migration_order(self.target)
            .iter()
            .flat_map(|m| m.indexes.iter().copied())
            .collect();
        let target = self.target;
        for i in catalog::INDEXES.iter().filter(|i| target.includes(i.since)) {
            if claimed.contains(&i.name) || i.unique_check.is_some() || !self.index_missing(i)? {
                continue;
            }
            if index_columns(i.sql)
                .iter()
                .all(|c| self.has_col(i.table, c))
            {
                self.create_index(i)?;
            }
        }
        Ok(())
    }

    /// Phase 2: the pending named migrations.
    fn migrations(&mut self) -> anyhow::Result<()> {
        for m in self.pending.clone() {
            let mut what: Vec<String> = Vec::new();
            for c in m.columns {
                if let Some((t, col)) = c.split_once('.') {
                    if !self.has_col(t, col) && !self.cols_now.get(t).is_some_and(Vec::is_empty) {
                        what.push(format!("add {c}"));
                    }
                }
            }
            for i in m.indexes {
                if let Some(def) = catalog::index(i) {
                    if self.index_breaks(def)? {
                        what.push(replace_detail(def));
                        self.planned_idx.push(def.name);
                    } else if self.index_missing(def)? {
                        what.push(format!("index {i}"));
                        self.planned_idx.push(def.name);
                    }
                }
            }
            let rows = if self.counts {
                count_data(self.conn, m.data)?
            } else {
                None
            };
            if m.data != DataOp::None {
                what.push(m.summary.to_string());
            }
            if what.is_empty() {
                what.push("record as done (nothing to change)".into());
            }
            self.push(
                Action::Migration(m),
                m.name.to_string(),
                what.join("; "),
                rows,
            );
        }
        Ok(())
    }

    /// Phase 3: columns still missing from existing tables.
    fn leftover_columns(&mut self) {
        let claimed: Vec<&str> = self
            .pending
            .iter()
            .flat_map(|m| m.columns.iter().copied())
            .collect();
        let target = self.target;
        for t in catalog::TABLES.iter().filter(|t| target.includes(t.since)) {
            if self.new_tables.contains(&t.name) {
                continue;
            }
            let cols = self.cols_now.get(t.name).cloned().unwrap_or_default();
            for c in t.columns.iter().filter(|c| target.includes(c.since)) {
                let key = format!("{}.{}", t.name, c.name);
                if cols.iter().any(|x| x == c.name) || claimed.contains(&key.as_str()) {
                    continue;
                }
                let detail = if c.alter {
                    format!("add column {key} {}", c.decl)
                } else {
                    format!("cannot add {key} ({}) to an existing table", c.decl)
                };
                self.push(Action::AddColumn(t.name, c), key, detail, None);
            }
        }
    }

    /// nodes and inactive_nodes as they will be after the column steps
    /// above: a pair that still differs is rebuilt before the indexes.
    fn node_pair(&mut self) -> anyhow::Result<()> {
        let Some(drift) = probe::drift_of(
            predicted_columns(&self.steps, "nodes", &self.cols_now),
            predicted_columns(&self.steps, "inactive_nodes", &self.cols_now),
        ) else {
            return Ok(());
        };
        let rows = if self.counts && store::table_exists(self.conn, "inactive_nodes")? {
            Some(
                self.conn
                    .query_row("SELECT count(*) FROM inactive_nodes", [], |r| r.get(0))?,
            )
        } else {
            None
        };
        self.push(
            Action::SyncInactiveNodes,
            "rebuild:inactive_nodes".into(),
            format!(
                "rebuild inactive_nodes with the columns of nodes in nodes' order, copying its rows by column name ({})",
                drift.describe()
            ),
            rows,
        );
        Ok(())
    }

    /// Phase 3: indexes still missing; the dedup index after the merge of
    /// the duplicates that would stop it.
    fn leftover_indexes(&mut self) -> anyhow::Result<()> {
        let target = self.target;
        for i in catalog::INDEXES.iter().filter(|i| target.includes(i.since)) {
            if self.planned_idx.contains(&i.name) || !self.index_missing(i)? {
                continue;
            }
            if i.unique_check.is_none() {
                self.create_index(i)?;
                continue;
            }
            self.merge_duplicates(i)?;
            let detail = if self.index_breaks(i)? {
                format!("{} (after checking for duplicate keys)", replace_detail(i))
            } else {
                format!(
                    "create unique index {} (after checking for duplicate keys)",
                    i.name
                )
            };
            self.push(
                Action::DedupIndex,
                format!("index:{}", i.name),
                detail,
                None,
            );
        }
        Ok(())
    }

    /// The merge step before the unique index `i`, when rows share its key.
    fn merge_duplicates(&mut self, i: &IndexDef) -> anyhow::Result<()> {
        let (groups, surplus) = if self.new_tables.contains(&i.table) {
            (0, 0)
        } else if self
            .pending
            .iter()
            .any(|m| m.data == DataOp::ObserverIdxRowid)
        {
            // The repair runs first and can join groups.
            probe::duplicate_dedup_groups_after_repair(self.conn)?
        } else {
            probe::duplicate_dedup_groups(self.conn)?
        };
        if groups > 0 {
            self.push(
                Action::MergeDuplicates { groups },
                MERGE_STEP.into(),
                format!(
                    "merge {groups} groups of observations sharing (transmission_id, observer_idx, path_json) as the ingestor's UPSERT would have: \
                     {} rows into {groups}, {surplus} removed, each copied first into {}",
                    groups + surplus,
                    catalog::MERGED_OBSERVATIONS
                ),
                Some(surplus),
            );
        }
        Ok(())
    }

    /// Phase 3: the views, created or re-created when their text differs.
    fn views(&mut self) -> anyhow::Result<()> {
        let target = self.target;
        for v in catalog::VIEWS.iter().filter(|v| target.includes(v.since)) {
            let stored = probe::stored_sql(self.conn, "view", v.name)?;
            let ok = stored
                .as_deref()
                .is_some_and(|s| probe::norm_sql(s) == probe::norm_sql(v.sql));
            if !ok {
                let detail = if stored.is_some() {
                    format!("re-create view {} (definition differs)", v.name)
                } else {
                    format!("create view {}", v.name)
                };
                self.push(Action::View(v), format!("view:{}", v.name), detail, None);
            }
        }
        Ok(())
    }

    /// Phase 3: indexes the target drops.
    fn dropped_indexes(&mut self) -> anyhow::Result<()> {
        for (name, t) in catalog::DROPPED_INDEXES {
            if self.target.includes(*t) && store::object_exists(self.conn, "index", name)? {
                self.push(
                    Action::DropIndex(name),
                    format!("drop:index:{name}"),
                    format!("drop index {name} (removed upstream)"),
                    None,
                );
            }
        }
        Ok(())
    }
}

/// What a step that replaces a wrong index does.
fn replace_detail(i: &IndexDef) -> String {
    format!(
        "drop and re-create index {} on {} (its definition breaks a CoreScope statement; `corescope check --diff` shows it)",
        i.name, i.table
    )
}

/// Label of the duplicate-observation merge step.
pub(super) const MERGE_STEP: &str = "merge:duplicate_observations";

/// The columns `table` will have after the planned steps (names, in order):
/// its columns now, then those each planned migration or column step adds.
fn predicted_columns(
    steps: &[Step],
    table: &str,
    cols_now: &HashMap<&str, Vec<String>>,
) -> Vec<String> {
    let mut cols = cols_now.get(table).cloned().unwrap_or_default();
    if cols.is_empty() {
        return cols;
    }
    let add = |c: &str, cols: &mut Vec<String>| {
        if !cols.iter().any(|x| x.eq_ignore_ascii_case(c)) {
            cols.push(c.to_string());
        }
    };
    for s in steps {
        match &s.action {
            Action::Migration(m) => {
                for c in m.columns {
                    if let Some((t, col)) = c.split_once('.') {
                        if t == table {
                            add(col, &mut cols);
                        }
                    }
                }
            }
            Action::AddColumn(t, c) if *t == table && c.alter => add(c.name, &mut cols),
            _ => {}
        }
    }
    cols
}
