//! `corescope migrate`: bring the schema to the target, step by step, each in
//! its own short transaction together with its `_migrations` row.
//!
//! Phases (all derived from the catalog):
//! 1. missing tables (full target shape), then missing indexes that belong to
//!    no named migration and whose columns exist (so data steps have them);
//! 2. pending named migrations in `catalog::migration_order`: their columns
//!    and indexes, then their data step in bounded batches, then the record;
//! 3. whatever is still missing (columns whose migration was recorded without
//!    effect, indexes on new columns, the dedup index unless duplicates
//!    exist, the view) and indexes the target drops.
//!
//! A database with nothing to do gets no write transaction at all.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::Context;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Value};

use crate::catalog::{
    self, ColumnDef, DataOp, IndexDef, MigrationDef, Record, TableDef, Target, ViewDef,
};
use crate::cli::MigrateArgs;
use crate::context::Ctx;
use crate::error::{Failure, EXIT_NOT_READY, EXIT_OK};
use crate::report::{self, Outcome};
use crate::store::edge_state::{
    NEEDS_REBUILD_KEY, OWNER_KEY as REBUILD_OWNER_KEY, REBUILD_KEY, WATERMARK_KEY,
};
use crate::store::probe::{self, ObsShape};
use crate::store::{self, Batcher, ReadOnlyDb, WriteDb};

#[derive(Debug)]
enum Action {
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
struct Step {
    action: Action,
    label: String,
    detail: String,
    /// Rows a data step would touch (dry-run estimate / exact count).
    rows: Option<i64>,
}

pub fn run(ctx: &Ctx, args: &MigrateArgs) -> anyhow::Result<Outcome> {
    let path = &ctx.db_path;
    // An empty file is as new as a missing one (`--create` fills it).
    let exists = path.exists() && store::file_len(path) > 0;
    if args.dry_run {
        return dry_run(ctx, args, exists);
    }
    let mut db = WriteDb::open(path, &ctx.open_options(args.create))?;
    if db.created() {
        // auto_vacuum must be set before the first table; then WAL.
        db.conn()
            .execute_batch("PRAGMA auto_vacuum = INCREMENTAL;")
            .context("setting auto_vacuum")?;
        let mode: String = db
            .conn()
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .context("setting WAL journal mode")?;
        log::info!(
            "created {} (auto_vacuum=INCREMENTAL, journal_mode={mode})",
            path.display()
        );
    }
    refuse_v2(db.conn(), path)?;
    let already = count_already(db.conn(), args.target)?;
    let plan = plan(db.conn(), args.target, false)?;
    let mut applied: Vec<String> = Vec::new();
    let mut steps_json: Vec<Value> = Vec::new();
    let mut skipped: Vec<Value> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut done_rows: HashMap<String, i64> = HashMap::new();
    let mut batcher = Batcher::new(args.max_lock_ms);
    let mut merged = MergeStats::default();
    for step in &plan {
        let t0 = Instant::now();
        let res = apply(&mut db, step, &mut batcher, &mut notes, &mut merged)
            .with_context(|| format!("migration step {}", step.label))?;
        match res {
            Applied::Done(rows) => {
                done_rows.insert(step.label.clone(), rows);
                log::info!(
                    "applied {} ({} rows, {:.0} ms)",
                    step.label,
                    rows,
                    report::ms(t0.elapsed())
                );
                applied.push(step.label.clone());
                steps_json.push(
                    json!({"name": step.label, "rows": rows, "ms": report::ms(t0.elapsed())}),
                );
            }
            Applied::Skipped(reason) => {
                log::warn!("skipped {}: {reason}", step.label);
                skipped.push(json!({"name": step.label, "reason": reason}));
            }
        }
    }
    // What is left (e.g. the dedup index while duplicates exist).
    let missing = probe::missing_objects(db.conn(), args.target)?;
    let pending: Vec<String> = probe::pending_migrations(db.conn(), args.target)?
        .iter()
        .map(|m| m.name.to_string())
        .collect();
    let (text_total, _) = probe::text_observer_idx(db.conn())?;
    if text_total > 0 {
        notes.push(format!(
            "{text_total} observations keep a text observer_idx that matches no single observer id; left as they are"
        ));
    }
    let needs_rebuild = store::state_get(db.conn(), NEEDS_REBUILD_KEY)?.is_some();
    if merged.groups > 0 {
        notes.push(format!(
            "merged {} groups of duplicate observations the way the ingestor's UPSERT would have ({} rows removed); \
             every removed row is kept verbatim in table {}, with merged_into = the id of the observation it was merged into",
            merged.groups,
            merged.rows,
            catalog::MERGED_OBSERVATIONS
        ));
    }
    if merged.staging_reset {
        notes.push(
            "an unfinished `build-edges --rebuild` had scanned observations that were merged away: its staging table \
             is discarded, the next `build-edges --rebuild` starts over"
                .into(),
        );
    }
    if needs_rebuild {
        notes.push(format!(
            "neighbor_edges counts observations that were merged away: run `corescope build-edges --rebuild` \
             (recorded as {NEEDS_REBUILD_KEY} in {}; `corescope check` reports it until the rebuild)",
            store::STATE_TABLE
        ));
    }
    let ready = missing.is_empty() && pending.is_empty();
    let mut out = Outcome::new();
    out.exit_code = if ready { EXIT_OK } else { EXIT_NOT_READY };
    out.set("target", args.target.name());
    out.set("applied", applied.clone());
    out.set("already", already);
    out.set("steps", steps_json);
    out.set("skipped", skipped.clone());
    out.set("notes", notes.clone());
    out.set("missing", missing.clone());
    out.set("pending_migrations", pending.clone());
    out.set(
        "merged_observations",
        json!({
            "groups": merged.groups,
            "rows": merged.rows,
            "audit_table": catalog::MERGED_OBSERVATIONS,
        }),
    );
    out.set("build_edges_rebuild_needed", needs_rebuild);
    out.set("ready", ready);
    out.set("complete", ready);
    out.set("max_lock_hold_ms", db.max_lock_hold_ms());
    out.set("created", db.created());
    let mut h = String::new();
    if applied.is_empty() && skipped.is_empty() {
        h.push_str(&format!(
            "{}: schema is up to date for target {} ({} named migrations already applied); nothing to do\n",
            path.display(),
            args.target.name(),
            already
        ));
    } else {
        let mut t = report::table(&["step", "what", "rows changed"]);
        for (s, r) in plan
            .iter()
            .filter_map(|s| done_rows.get(&s.label).map(|r| (s, r)))
        {
            let rows = if matches!(s.action, Action::Migration(m) if m.data != DataOp::None)
                || matches!(
                    s.action,
                    Action::MergeDuplicates { .. } | Action::SyncInactiveNodes
                ) {
                r.to_string()
            } else {
                String::new()
            };
            t.add_row(vec![s.label.clone(), s.detail.clone(), rows]);
        }
        h.push_str(&format!("{t}\n"));
        h.push_str(&format!(
            "{}: applied {} steps for target {} ({} named migrations were already applied); longest write-lock hold {} ms\n",
            path.display(),
            applied.len(),
            args.target.name(),
            already,
            db.max_lock_hold_ms()
        ));
    }
    for s in &skipped {
        h.push_str(&format!(
            "skipped {}: {}\n",
            s["name"].as_str().unwrap_or(""),
            s["reason"].as_str().unwrap_or("")
        ));
    }
    for n in &notes {
        h.push_str(&format!("note: {n}\n"));
    }
    if !ready {
        h.push_str(&format!(
            "NOT READY: still missing {}{}\n",
            if missing.is_empty() {
                "nothing".to_string()
            } else {
                missing.join(", ")
            },
            if pending.is_empty() {
                String::new()
            } else {
                format!("; pending migrations {}", pending.join(", "))
            }
        ));
    }
    out.human = h;
    Ok(out)
}

fn dry_run(ctx: &Ctx, args: &MigrateArgs, exists: bool) -> anyhow::Result<Outcome> {
    let (plan, already) = if !exists && args.create {
        // Plan against an empty schema; nothing is created.
        let conn = Connection::open_in_memory()?;
        (plan(&conn, args.target, true)?, 0)
    } else {
        let ro = ReadOnlyDb::open(&ctx.db_path, ctx.busy_timeout_ms)?;
        refuse_v2(ro.reader(), &ctx.db_path)?;
        (
            plan(ro.reader(), args.target, true)?,
            count_already(ro.reader(), args.target)?,
        )
    };
    let mut out = Outcome::new();
    let planned: Vec<Value> = plan
        .iter()
        .map(|s| {
            let mut v = json!({"name": s.label, "what": s.detail, "rows": s.rows});
            if let Action::MergeDuplicates { groups } = s.action {
                v["groups"] = json!(groups);
            }
            v
        })
        .collect();
    out.set("target", args.target.name());
    out.set("planned", planned);
    out.set("applied", Vec::<String>::new());
    out.set("already", already);
    out.set("complete", true);
    out.set("max_lock_hold_ms", 0.0);
    out.set("dry_run", true);
    if plan.is_empty() {
        out.human = format!(
            "{}: nothing to do for target {} (dry run)\n",
            ctx.db_path.display(),
            args.target.name()
        );
    } else {
        let mut t = report::table(&["step", "what", "rows"]);
        for s in &plan {
            t.add_row(vec![
                s.label.clone(),
                s.detail.clone(),
                s.rows.map(|r| r.to_string()).unwrap_or_default(),
            ]);
        }
        out.human = format!(
            "{t}\n{}: {} steps planned for target {} (dry run: nothing was changed)\n",
            ctx.db_path.display(),
            plan.len(),
            args.target.name()
        );
    }
    Ok(out)
}

fn refuse_v2(conn: &Connection, path: &std::path::Path) -> anyhow::Result<()> {
    if probe::observations_shape(conn)? == ObsShape::V2 {
        return Err(Failure::Fatal(format!(
            "{}: the observations table has the v2 shape of the retired Node.js backend (observer_id, text timestamps); \
             CoreScope's Go ingestor cannot run on it and corescope does not convert it. Convert it with the \
             CoreScope v3 upgrade first",
            path.display()
        ))
        .into());
    }
    Ok(())
}

fn count_already(conn: &Connection, target: Target) -> anyhow::Result<i64> {
    let recorded = probe::recorded_migrations(conn)?;
    let done_async = probe::done_async_migrations(conn)?;
    Ok(catalog::migration_order(target)
        .iter()
        .filter(|m| match m.record {
            Record::Migrations => recorded.iter().any(|n| n == m.name),
            Record::AsyncMigrations => done_async.iter().any(|n| n == m.name),
        })
        .count() as i64)
}

/// Plain column names inside the index's parentheses (expressions ignored).
fn index_columns(sql: &str) -> Vec<String> {
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

fn plan(conn: &Connection, target: Target, counts: bool) -> anyhow::Result<Vec<Step>> {
    let mut steps = Vec::new();
    let pending = probe::pending_migrations(conn, target)?;
    let claimed_idx: Vec<&str> = catalog::migration_order(target)
        .iter()
        .flat_map(|m| m.indexes.iter().copied())
        .collect();
    let claimed_cols: Vec<&str> = pending
        .iter()
        .flat_map(|m| m.columns.iter().copied())
        .collect();
    let mut new_tables: Vec<&str> = Vec::new();
    let mut cols_now: HashMap<&str, Vec<String>> = HashMap::new();
    let nodes_cols = store::columns(conn, "nodes")?;
    for t in catalog::TABLES.iter().filter(|t| target.includes(t.since)) {
        let cols = store::columns(conn, t.name)?;
        if cols.is_empty() && t.name == "inactive_nodes" && !nodes_cols.is_empty() {
            // Same columns as nodes, in nodes' order; later additions go to
            // both tables alike (planned below as for an existing table).
            steps.push(Step {
                action: Action::CreateInactiveLikeNodes,
                label: format!("table:{}", t.name),
                detail: format!(
                    "create table {} with the {} columns of nodes, in their order",
                    t.name,
                    nodes_cols.len()
                ),
                rows: None,
            });
            cols_now.insert(t.name, nodes_cols.clone());
            continue;
        }
        if cols.is_empty() {
            new_tables.push(t.name);
            steps.push(Step {
                action: Action::CreateTable(t),
                label: format!("table:{}", t.name),
                detail: format!("create table {}", t.name),
                rows: None,
            });
        }
        cols_now.insert(t.name, cols);
    }
    let has_col =
        |table: &str, c: &str, cols_now: &HashMap<&str, Vec<String>>, new_tables: &[&str]| {
            new_tables.contains(&table)
                || cols_now
                    .get(table)
                    .is_some_and(|v| v.iter().any(|x| x == c))
        };
    // Phase 1 indexes.
    let mut planned_idx: Vec<&str> = Vec::new();
    for i in catalog::INDEXES.iter().filter(|i| target.includes(i.since)) {
        if claimed_idx.contains(&i.name) || i.unique_check.is_some() {
            continue;
        }
        let missing = new_tables.contains(&i.table) || probe::index_missing(conn, i)?;
        if !missing {
            continue;
        }
        let cols = index_columns(i.sql);
        if cols
            .iter()
            .all(|c| has_col(i.table, c, &cols_now, &new_tables))
        {
            planned_idx.push(i.name);
            steps.push(Step {
                action: Action::CreateIndex(i),
                label: format!("index:{}", i.name),
                detail: format!("create index {} on {}", i.name, i.table),
                rows: None,
            });
        }
    }
    // Phase 2: named migrations.
    for m in &pending {
        let mut what: Vec<String> = Vec::new();
        for c in m.columns {
            if let Some((t, col)) = c.split_once('.') {
                if !new_tables.contains(&t)
                    && !has_col(t, col, &cols_now, &new_tables)
                    && !cols_now.get(t).is_some_and(std::vec::Vec::is_empty)
                {
                    what.push(format!("add {c}"));
                }
            }
        }
        for i in m.indexes {
            if let Some(def) = catalog::index(i) {
                if new_tables.contains(&def.table) || probe::index_missing(conn, def)? {
                    what.push(format!("index {i}"));
                    planned_idx.push(def.name);
                }
            }
        }
        let rows = if counts {
            count_data(conn, m.data)?
        } else {
            None
        };
        if m.data != DataOp::None {
            what.push(m.summary.to_string());
        }
        if what.is_empty() {
            what.push("record as done (nothing to change)".into());
        }
        steps.push(Step {
            action: Action::Migration(m),
            label: m.name.to_string(),
            detail: what.join("; "),
            rows,
        });
    }
    // Phase 3: leftovers.
    for t in catalog::TABLES.iter().filter(|t| target.includes(t.since)) {
        if new_tables.contains(&t.name) {
            continue;
        }
        let cols = &cols_now[t.name];
        for c in t.columns.iter().filter(|c| target.includes(c.since)) {
            let key = format!("{}.{}", t.name, c.name);
            if cols.iter().any(|x| x == c.name) || claimed_cols.contains(&key.as_str()) {
                continue;
            }
            steps.push(Step {
                action: Action::AddColumn(t.name, c),
                label: key.clone(),
                detail: if c.alter {
                    format!("add column {key} {}", c.decl)
                } else {
                    format!("cannot add {key} ({}) to an existing table", c.decl)
                },
                rows: None,
            });
        }
    }
    // nodes and inactive_nodes as they will be after the column steps
    // above: a pair that still differs is rebuilt before the indexes.
    if let Some(drift) = probe::drift_of(
        predicted_columns(&steps, "nodes", &cols_now),
        predicted_columns(&steps, "inactive_nodes", &cols_now),
    ) {
        let rows = if counts && store::table_exists(conn, "inactive_nodes")? {
            Some(conn.query_row("SELECT count(*) FROM inactive_nodes", [], |r| r.get(0))?)
        } else {
            None
        };
        steps.push(Step {
            action: Action::SyncInactiveNodes,
            label: "rebuild:inactive_nodes".into(),
            detail: format!(
                "rebuild inactive_nodes with the columns of nodes in nodes' order, copying its rows by column name ({})",
                drift.describe()
            ),
            rows,
        });
    }
    for i in catalog::INDEXES.iter().filter(|i| target.includes(i.since)) {
        if planned_idx.contains(&i.name) {
            continue;
        }
        let missing = new_tables.contains(&i.table) || probe::index_missing(conn, i)?;
        if !missing {
            continue;
        }
        if i.unique_check.is_some() {
            let (groups, surplus) = if new_tables.contains(&i.table) {
                (0, 0)
            } else if pending.iter().any(|m| m.data == DataOp::ObserverIdxRowid) {
                // The repair runs first and can join groups.
                probe::duplicate_dedup_groups_after_repair(conn)?
            } else {
                probe::duplicate_dedup_groups(conn)?
            };
            if groups > 0 {
                steps.push(Step {
                    action: Action::MergeDuplicates { groups },
                    label: MERGE_STEP.into(),
                    detail: format!(
                        "merge {groups} groups of observations sharing (transmission_id, observer_idx, path_json) as the ingestor's UPSERT would have: \
                         {} rows into {groups}, {surplus} removed, each copied first into {}",
                        groups + surplus,
                        catalog::MERGED_OBSERVATIONS
                    ),
                    rows: Some(surplus),
                });
            }
            steps.push(Step {
                action: Action::DedupIndex,
                label: format!("index:{}", i.name),
                detail: format!(
                    "create unique index {} (after checking for duplicate keys)",
                    i.name
                ),
                rows: None,
            });
        } else {
            steps.push(Step {
                action: Action::CreateIndex(i),
                label: format!("index:{}", i.name),
                detail: format!("create index {} on {}", i.name, i.table),
                rows: None,
            });
        }
    }
    for v in catalog::VIEWS.iter().filter(|v| target.includes(v.since)) {
        let stored = probe::stored_sql(conn, "view", v.name)?;
        let ok = stored
            .as_deref()
            .is_some_and(|s| probe::norm_sql(s) == probe::norm_sql(v.sql));
        if !ok {
            steps.push(Step {
                action: Action::View(v),
                label: format!("view:{}", v.name),
                detail: if stored.is_some() {
                    format!("re-create view {} (definition differs)", v.name)
                } else {
                    format!("create view {}", v.name)
                },
                rows: None,
            });
        }
    }
    for (name, t) in catalog::DROPPED_INDEXES {
        if target.includes(*t) && store::object_exists(conn, "index", name)? {
            steps.push(Step {
                action: Action::DropIndex(name),
                label: format!("drop:index:{name}"),
                detail: format!("drop index {name} (removed upstream)"),
                rows: None,
            });
        }
    }
    Ok(steps)
}

/// Label of the duplicate-observation merge step.
pub const MERGE_STEP: &str = "merge:duplicate_observations";

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

enum Applied {
    Done(i64),
    Skipped(String),
}

fn apply(
    db: &mut WriteDb,
    step: &Step,
    batcher: &mut Batcher,
    notes: &mut Vec<String>,
    merged: &mut MergeStats,
) -> anyhow::Result<Applied> {
    match &step.action {
        Action::CreateInactiveLikeNodes => {
            db.write(|tx| {
                if !store::table_exists(tx, "inactive_nodes")? {
                    tx.execute_batch(&crate::store::probe::node_table_like_nodes_sql(
                        tx,
                        "inactive_nodes",
                    )?)?;
                }
                Ok(())
            })?;
            Ok(Applied::Done(0))
        }
        Action::MergeDuplicates { .. } => {
            let m = merge_duplicates(db, batcher)?;
            merged.groups += m.groups;
            merged.rows += m.rows;
            merged.needs_rebuild |= m.needs_rebuild;
            merged.staging_reset |= m.staging_reset;
            Ok(Applied::Done(m.rows))
        }
        Action::SyncInactiveNodes => Ok(Applied::Done(sync_inactive_nodes(db)?)),
        Action::CreateTable(t) => {
            let sql = catalog::create_table_sql(t, Target::Latest);
            // Create the full catalog shape of the target the table belongs to.
            db.write(|tx| {
                tx.execute_batch(&sql)?;
                Ok(())
            })?;
            Ok(Applied::Done(0))
        }
        Action::CreateIndex(i) => {
            let cols = db.columns(i.table)?;
            let needed = index_columns(i.sql);
            if !needed.iter().all(|c| cols.iter().any(|x| x == c)) {
                return Ok(Applied::Skipped(format!(
                    "table {} lacks a column of the index ({})",
                    i.table,
                    needed.join(", ")
                )));
            }
            db.write(|tx| {
                tx.execute_batch(i.sql)?;
                Ok(())
            })?;
            Ok(Applied::Done(0))
        }
        Action::AddColumn(table, c) => {
            if !c.alter {
                return Ok(Applied::Skipped(format!(
                    "{table}.{} ({}) cannot be added to an existing table by ALTER TABLE; the table must be rebuilt by hand",
                    c.name, c.decl
                )));
            }
            let sql = catalog::add_column_sql(table, c);
            let table = *table;
            let name = c.name;
            db.write(|tx| {
                if !store::columns(tx, table)?.iter().any(|x| x == name) {
                    tx.execute_batch(&sql)?;
                }
                Ok(())
            })?;
            Ok(Applied::Done(0))
        }
        Action::DedupIndex => {
            let (groups, surplus) = probe::duplicate_dedup_groups(db.conn())?;
            if groups > 0 {
                let sample = probe::duplicate_dedup_sample(db.conn(), 5)?;
                notes.push(format!(
                    "{groups} duplicate observation dedup keys ({surplus} surplus rows), e.g. {}",
                    sample.join("; ")
                ));
                return Ok(Applied::Skipped(format!(
                    "{groups} groups of observations still share a dedup key (transmission_id, observer_idx, path_json) \
                     after the merge step (written while it ran); the UNIQUE index cannot be created and the CoreScope \
                     ingestor cannot start without it: run `corescope migrate` again to merge them"
                )));
            }
            let sql = catalog::index(catalog::DEDUP_INDEX)
                .map(|i| i.sql)
                .unwrap_or_default();
            db.write(|tx| {
                tx.execute_batch(sql)?;
                Ok(())
            })?;
            Ok(Applied::Done(0))
        }
        Action::View(v) => {
            let name = v.name;
            let sql = v.sql;
            db.write(|tx| {
                tx.execute_batch(&format!("DROP VIEW IF EXISTS {name};"))?;
                tx.execute_batch(sql)?;
                Ok(())
            })?;
            Ok(Applied::Done(0))
        }
        Action::DropIndex(name) => {
            let name = *name;
            db.write(|tx| {
                tx.execute_batch(&format!("DROP INDEX IF EXISTS {name}"))?;
                Ok(())
            })?;
            Ok(Applied::Done(0))
        }
        Action::Migration(m) => apply_migration(db, m, batcher),
    }
}

/// Add the migration's missing columns and indexes (one transaction, with
/// the record when there is no data step), then its data step in batches,
/// then the record.
fn apply_migration(
    db: &mut WriteDb,
    m: &'static MigrationDef,
    batcher: &mut Batcher,
) -> anyhow::Result<Applied> {
    // What is missing is decided again inside the write transaction: another
    // run (overlapping without the run lock) may have added it meanwhile.
    let ddl = migration_ddl(db.conn(), m)?;
    let no_data = m.data == DataOp::None;
    if !ddl.is_empty() || no_data {
        db.write(|tx| {
            for s in &migration_ddl(tx, m)? {
                tx.execute_batch(s)?;
            }
            if no_data {
                record(tx, m)?;
            }
            Ok(())
        })?;
    }
    if no_data {
        return Ok(Applied::Done(0));
    }
    let rows = run_data(db, m.data, batcher)?;
    db.write(|tx| {
        record(tx, m)?;
        if m.own {
            store::state_delete(tx, &probe::own_started_key(m.name))?;
        }
        Ok(())
    })?;
    Ok(Applied::Done(rows))
}

/// The DDL a migration still needs: its missing columns and indexes.
fn migration_ddl(conn: &Connection, m: &'static MigrationDef) -> anyhow::Result<Vec<String>> {
    let mut ddl: Vec<String> = Vec::new();
    for c in m.columns {
        if let Some((t, col)) = c.split_once('.') {
            let cols = store::columns(conn, t)?;
            if cols.is_empty() {
                continue; // table absent (not in this target)
            }
            if !cols.iter().any(|x| x == col) {
                if let Some(def) = catalog::column(t, col) {
                    ddl.push(catalog::add_column_sql(t, def));
                }
            }
        }
    }
    for i in m.indexes {
        if let Some(def) = catalog::index(i) {
            if probe::index_missing(conn, def)? {
                ddl.push(def.sql.to_string());
            }
        }
    }
    Ok(ddl)
}

fn record(tx: &Connection, m: &MigrationDef) -> anyhow::Result<()> {
    match m.record {
        Record::Migrations => {
            tx.execute(
                "INSERT OR IGNORE INTO _migrations (name) VALUES (?1)",
                [m.name],
            )?;
        }
        Record::AsyncMigrations => {
            tx.execute(
                "INSERT INTO _async_migrations (name, status, started_at, ended_at, error)
                 VALUES (?1, 'done', datetime('now'), datetime('now'), NULL)
                 ON CONFLICT(name) DO UPDATE SET status = 'done', ended_at = datetime('now'), error = NULL",
                [m.name],
            )?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Data steps.

/// Guarded JSON extraction (json_extract raises an error on malformed JSON).
fn jx(col: &str, path: &str) -> String {
    format!("(CASE WHEN json_valid({col}) THEN json_extract({col}, '{path}') END)")
}

fn has_column(conn: &Connection, table: &str, col: &str) -> anyhow::Result<bool> {
    Ok(store::columns(conn, table)?.iter().any(|c| c == col))
}

/// The ADVERT originator key expression (from_pubkey, else decoded_json.pubKey).
fn advert_key_expr(conn: &Connection) -> anyhow::Result<String> {
    let pk = jx("decoded_json", "$.pubKey");
    Ok(if has_column(conn, "transmissions", "from_pubkey")? {
        format!("lower(COALESCE(NULLIF(from_pubkey, ''), {pk}))")
    } else {
        format!("lower({pk})")
    })
}

fn advert_counts(
    conn: &Connection,
    id_cond: &str,
    id: i64,
) -> anyhow::Result<HashMap<String, i64>> {
    let key = advert_key_expr(conn)?;
    let sql = format!(
        "SELECT k, count(*) FROM (SELECT {key} AS k FROM transmissions WHERE payload_type = 4 AND id {id_cond} ?1) WHERE k IS NOT NULL AND k != '' GROUP BY k"
    );
    let mut st = conn.prepare(&sql)?;
    let rows = st.query_map([id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    let mut map = HashMap::new();
    for r in rows {
        let (k, n) = r?;
        map.insert(k, n);
    }
    Ok(map)
}

/// Rows a data step would touch (dry-run and plan display).
fn count_data(conn: &Connection, op: DataOp) -> anyhow::Result<Option<i64>> {
    let q = |sql: &str| -> anyhow::Result<Option<i64>> {
        Ok(Some(conn.query_row(sql, [], |r| r.get::<_, i64>(0))?))
    };
    let tables: &[&str] = match op {
        DataOp::None => return Ok(None),
        DataOp::ObserverIdxRowid | DataOp::LastPacketAtBackfill => &["observers", "observations"],
        DataOp::AdvertCount => &["nodes", "transmissions"],
        DataOp::NoiseFloorReal => &["observers"],
        DataOp::ChannelHashBackfill | DataOp::ChannelHashCasing => &["transmissions"],
        DataOp::CleanupLegacyNullHashTs | DataOp::TxLastSeenBackfill => {
            &["transmissions", "observations"]
        }
    };
    for t in tables {
        if !store::table_exists(conn, t)? {
            return Ok(Some(0)); // created empty by this migration
        }
    }
    match op {
        DataOp::None => Ok(None),
        DataOp::ObserverIdxRowid => Ok(Some(probe::text_observer_idx(conn)?.1)),
        DataOp::AdvertCount => {
            let counts = advert_counts(conn, ">", i64::MIN)?;
            let mut st = conn.prepare("SELECT lower(public_key), CASE WHEN typeof(advert_count) = 'integer' THEN advert_count END FROM nodes")?;
            let rows = st.query_map([], |r| Ok((r.get::<_, Option<String>>(0)?, r.get::<_, Option<i64>>(1)?)))?;
            let mut n = 0;
            for r in rows {
                let (k, c) = r?;
                let want = k.and_then(|k| counts.get(&k).copied()).unwrap_or(0);
                if c != Some(want) {
                    n += 1;
                }
            }
            Ok(Some(n))
        }
        DataOp::NoiseFloorReal => q("SELECT count(*) FROM observers WHERE typeof(noise_floor) = 'integer'"),
        DataOp::ChannelHashBackfill => {
            let null_cond = if has_column(conn, "transmissions", "channel_hash")? { "AND channel_hash IS NULL" } else { "" };
            q(&format!(
                "SELECT count(*) FROM transmissions WHERE payload_type = 5 {null_cond} AND {} IN ('CHAN', 'GRP_TXT')",
                jx("decoded_json", "$.type")
            ))
        }
        DataOp::LastPacketAtBackfill => {
            let null_cond = if has_column(conn, "observers", "last_packet_at")? { "AND last_packet_at IS NULL" } else { "" };
            q(&format!(
                "SELECT count(*) FROM observers WHERE last_seen IS NOT NULL {null_cond}
                 AND (rowid IN (SELECT observer_idx FROM observations WHERE typeof(observer_idx) = 'integer')
                      OR lower(id) IN (SELECT lower(observer_idx) FROM observations WHERE observer_idx >= '' AND typeof(observer_idx) = 'text'))"
            ))
        }
        DataOp::CleanupLegacyNullHashTs => q(
            "SELECT (SELECT count(*) FROM transmissions WHERE hash = '' OR first_seen = '')
                  + (SELECT count(*) FROM observations WHERE transmission_id IN (SELECT id FROM transmissions WHERE hash = '' OR first_seen = ''))",
        ),
        DataOp::ChannelHashCasing => {
            if has_column(conn, "transmissions", "channel_hash")? {
                q("SELECT count(*) FROM transmissions WHERE channel_hash = 'public' AND payload_type = 5")
            } else {
                Ok(Some(0))
            }
        }
        DataOp::TxLastSeenBackfill => {
            // Candidates (last_seen still 0); counting exact matches would
            // need a correlated scan per row before the indexes exist.
            if has_column(conn, "transmissions", "last_seen")? {
                q("SELECT count(*) FROM transmissions WHERE last_seen = 0")
            } else {
                q("SELECT count(*) FROM transmissions")
            }
        }
    }
}

fn run_data(db: &mut WriteDb, op: DataOp, batcher: &mut Batcher) -> anyhow::Result<i64> {
    match op {
        DataOp::None => Ok(0),
        DataOp::ObserverIdxRowid => observer_idx_rowid(db, batcher),
        DataOp::AdvertCount => advert_count(db, batcher),
        DataOp::NoiseFloorReal => by_rowid_ranges(
            db,
            batcher,
            "observers",
            "UPDATE observers SET noise_floor = CAST(noise_floor AS REAL) WHERE rowid >= ?1 AND rowid < ?2 AND typeof(noise_floor) = 'integer'",
        ),
        DataOp::ChannelHashBackfill => {
            let ty = jx("decoded_json", "$.type");
            let sql = format!(
                "UPDATE transmissions SET channel_hash = CASE {ty} WHEN 'CHAN' THEN {ch} WHEN 'GRP_TXT' THEN 'enc_' || {hx} END
                 WHERE rowid >= ?1 AND rowid < ?2 AND payload_type = 5 AND channel_hash IS NULL
                   AND (CASE {ty} WHEN 'CHAN' THEN {ch} WHEN 'GRP_TXT' THEN 'enc_' || {hx} END) IS NOT NULL",
                ch = jx("decoded_json", "$.channel"),
                hx = jx("decoded_json", "$.channelHashHex"),
            );
            by_rowid_ranges(db, batcher, "transmissions", &sql)
        }
        DataOp::LastPacketAtBackfill => last_packet_at(db, batcher),
        DataOp::CleanupLegacyNullHashTs => cleanup_legacy(db, batcher),
        DataOp::ChannelHashCasing => {
            let mut total = 0i64;
            loop {
                let n = batcher.size();
                let changed = db.write(|tx| {
                    Ok(tx.execute(
                        "UPDATE transmissions SET channel_hash = 'Public' WHERE rowid IN
                           (SELECT rowid FROM transmissions WHERE payload_type = 5 AND channel_hash = 'public' LIMIT ?1)",
                        [n as i64],
                    )?)
                })?;
                batcher.observe(changed.max(1), db.last_hold());
                total += changed as i64;
                if changed < n {
                    break;
                }
            }
            Ok(total)
        }
        DataOp::TxLastSeenBackfill => by_rowid_ranges(
            db,
            batcher,
            "transmissions",
            "UPDATE transmissions SET last_seen = (SELECT MAX(timestamp) FROM observations WHERE transmission_id = transmissions.id)
             WHERE rowid >= ?1 AND rowid < ?2 AND last_seen = 0
               AND COALESCE((SELECT MAX(timestamp) FROM observations WHERE transmission_id = transmissions.id), 0) != 0",
        ),
    }
}

/// Run `sql` (with ?1 = lower rowid inclusive, ?2 = upper exclusive) over the
/// whole table in adaptive rowid ranges, one transaction each.
fn by_rowid_ranges(
    db: &mut WriteDb,
    batcher: &mut Batcher,
    table: &str,
    sql: &str,
) -> anyhow::Result<i64> {
    let (lo, hi): (Option<i64>, Option<i64>) = db.conn().query_row(
        &format!("SELECT min(rowid), max(rowid) FROM {table}"),
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let (Some(mut lo), Some(hi)) = (lo, hi) else {
        return Ok(0);
    };
    let mut total = 0i64;
    while lo <= hi {
        let n = batcher.size() as i64;
        let end = lo.saturating_add(n);
        let changed = db.write(|tx| Ok(tx.execute(sql, params![lo, end])?))?;
        batcher.observe(n as usize, db.last_hold());
        total += changed as i64;
        lo = end;
    }
    Ok(total)
}

/// Walk a table by a rowid cursor in adaptive batches, one write transaction
/// each: `step(tx, after, limit)` handles up to `limit` rows after `after`
/// and returns (last rowid seen, rows seen, rows changed). Ends at the first
/// short batch; returns the rows changed.
fn by_cursor(
    db: &mut WriteDb,
    batcher: &mut Batcher,
    mut step: impl FnMut(
        &rusqlite::Transaction<'_>,
        i64,
        usize,
    ) -> anyhow::Result<(Option<i64>, usize, i64)>,
) -> anyhow::Result<i64> {
    let mut cursor = i64::MIN;
    let mut total = 0i64;
    loop {
        let n = batcher.size();
        let (last, scanned, changed) = db.write(|tx| step(tx, cursor, n))?;
        batcher.observe(scanned.max(1), db.last_hold());
        total += changed;
        match last {
            Some(l) if scanned == n => cursor = l,
            _ => return Ok(total),
        }
    }
}

/// Map text observer_idx to observers.rowid where the text
/// equals exactly one observer id case-insensitively; leave the rest.
fn observer_idx_rowid(db: &mut WriteDb, batcher: &mut Batcher) -> anyhow::Result<i64> {
    let mut map: HashMap<String, Option<i64>> = HashMap::new();
    {
        let mut st = db.conn().prepare("SELECT rowid, id FROM observers")?;
        let rows = st.query_map([], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Option<String>>(1)?))
        })?;
        for r in rows {
            let (rowid, id) = r?;
            if let Some(id) = id {
                map.entry(id.to_lowercase())
                    .and_modify(|v| *v = None) // ambiguous: two observers differ only in case
                    .or_insert(Some(rowid));
            }
        }
    }
    let map_ref = &map;
    by_cursor(db, batcher, |tx, cursor, n| {
        let mut sel = tx.prepare(
                "SELECT id, observer_idx FROM observations WHERE id > ?1 AND typeof(observer_idx) = 'text' ORDER BY id LIMIT ?2",
            )?;
        let rows: Vec<(i64, String)> = sel
            .query_map(params![cursor, n as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        store::state_set(
            tx,
            &probe::own_started_key(catalog::OBSERVER_IDX_MIGRATION),
            "1",
        )?;
        let mut upd = tx.prepare(
                "UPDATE OR IGNORE observations SET observer_idx = ?1 WHERE id = ?2 AND typeof(observer_idx) = 'text'",
            )?;
        let mut changed = 0i64;
        for (id, text) in &rows {
            if let Some(Some(rowid)) = map_ref.get(&text.to_lowercase()) {
                changed += upd.execute(params![rowid, id])? as i64;
            }
        }
        Ok((rows.last().map(|r| r.0), rows.len(), changed))
    })
}

/// advert_count_unique_v1 done right: counts from `from_pubkey`, falling back
/// to `decoded_json.pubKey` where from_pubkey is not filled yet, so counts are
/// never zeroed by an unfilled column. Counts of
/// ADVERTs up to a snapshot id are read outside the write lock; each batch
/// adds the ADVERTs inserted since, inside its transaction, so the result is
/// exact even while the ingestor inserts.
fn advert_count(db: &mut WriteDb, batcher: &mut Batcher) -> anyhow::Result<i64> {
    let snap: i64 =
        db.conn()
            .query_row("SELECT COALESCE(max(id), 0) FROM transmissions", [], |r| {
                r.get(0)
            })?;
    let base = advert_counts(db.conn(), "<=", snap)?;
    let base_ref = &base;
    by_cursor(db, batcher, |tx, cursor, n| {
        let newer = advert_counts(tx, ">", snap)?;
        let mut sel = tx.prepare(
                "SELECT rowid, lower(public_key), CASE WHEN typeof(advert_count) = 'integer' THEN advert_count END
                 FROM nodes WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
            )?;
        let rows: Vec<(i64, Option<String>, Option<i64>)> = sel
            .query_map(params![cursor, n as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut upd = tx.prepare("UPDATE nodes SET advert_count = ?1 WHERE rowid = ?2")?;
        let mut changed = 0i64;
        for (rowid, key, current) in &rows {
            let want = key.as_ref().map_or(0, |k| {
                base_ref.get(k).copied().unwrap_or(0) + newer.get(k).copied().unwrap_or(0)
            });
            if *current != Some(want) {
                changed += upd.execute(params![want, rowid])? as i64;
            }
        }
        Ok((rows.last().map(|r| r.0), rows.len(), changed))
    })
}

/// CoreScope's rule: last_packet_at = last_seen for observers with observations.
/// The set of observers with observations is read outside the write lock.
fn last_packet_at(db: &mut WriteDb, batcher: &mut Batcher) -> anyhow::Result<i64> {
    let ids: Vec<i64> = {
        let mut st = db.conn().prepare(
            "SELECT DISTINCT observer_idx FROM observations WHERE typeof(observer_idx) = 'integer'",
        )?;
        let rows = st.query_map([], |r| r.get::<_, i64>(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let mut total = 0i64;
    for chunk in ids.chunks(batcher.size().max(1)) {
        let changed = db.write(|tx| {
            let mut upd = tx.prepare(
                "UPDATE observers SET last_packet_at = last_seen WHERE rowid = ?1 AND last_packet_at IS NULL AND last_seen IS NOT NULL",
            )?;
            let mut c = 0i64;
            for id in chunk {
                c += upd.execute([id])? as i64;
            }
            Ok(c)
        })?;
        batcher.observe(chunk.len(), db.last_hold());
        total += changed;
    }
    Ok(total)
}

/// What the duplicate merge did.
#[derive(Debug, Default, Clone, Copy)]
struct MergeStats {
    groups: i64,
    rows: i64,
    /// The build-edges marker was set: removed rows had been counted.
    needs_rebuild: bool,
    /// An unfinished `build-edges --rebuild` staging table was discarded.
    staging_reset: bool,
}

/// Merge every group of observations that share the dedup key
/// (`transmission_id`, `observer_idx`, `COALESCE(path_json, '')`, both ids
/// non-NULL) exactly as the ingestor's UPSERT would have, had the index
/// existed: the lowest id survives with all its columns, and each later row,
/// in id order, overwrites [`catalog::UPSERT_MERGED_COLUMNS`] where its value
/// is not NULL (columns the table does not have yet are NULL in every row,
/// so they need no merge). Every later row is copied verbatim into the audit
/// table, then deleted. Groups are found by one read outside the lock; each
/// batch of groups is one transaction that re-reads its groups, so a killed
/// run leaves whole groups merged or untouched and the next run finishes.
fn merge_duplicates(db: &mut WriteDb, batcher: &mut Batcher) -> anyhow::Result<MergeStats> {
    let keepers: Vec<i64> = {
        let mut st = db.conn().prepare(
            "SELECT min(id) FROM observations
              WHERE transmission_id IS NOT NULL AND observer_idx IS NOT NULL
              GROUP BY transmission_id, observer_idx, COALESCE(path_json, '')
             HAVING count(*) > 1 ORDER BY 1",
        )?;
        let rows = st.query_map([], |r| r.get::<_, i64>(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let mut stats = MergeStats::default();
    let mut min_removed: Option<i64> = None;
    let mut i = 0;
    while i < keepers.len() {
        let n = batcher.size().max(1).min(keepers.len() - i);
        let chunk = &keepers[i..i + n];
        let t0 = Instant::now();
        let b = db.write(|tx| merge_batch(tx, chunk))?;
        batcher.observe(b.rows_seen.max(1), t0.elapsed());
        stats.groups += b.groups;
        stats.rows += b.removed;
        stats.needs_rebuild |= b.marked;
        stats.staging_reset |= b.staging_reset;
        if let Some(m) = b.min_removed {
            min_removed = Some(min_removed.map_or(m, |x: i64| x.min(m)));
        }
        i += n;
    }
    // A build-edges run that read a removed row before its batch was merged
    // may have committed it since: if the watermark has passed the lowest
    // removed id by now, the graph is stale too.
    if let Some(m) = min_removed {
        let wm = store::state_get(db.conn(), WATERMARK_KEY)?;
        if watermark_covers(wm.as_deref(), m)
            && store::state_get(db.conn(), NEEDS_REBUILD_KEY)?.is_none()
        {
            db.write(|tx| {
                store::state_set(tx, NEEDS_REBUILD_KEY, NEEDS_REBUILD_VALUE)?;
                Ok(())
            })?;
            stats.needs_rebuild = true;
        }
    }
    Ok(stats)
}

/// Value of the build-edges marker (fixed text: the same whichever run sets it).
const NEEDS_REBUILD_VALUE: &str =
    "migrate merged away duplicate observations that neighbor_edges had already counted; run `corescope build-edges --rebuild`";

/// Has the build-edges watermark (stored text) counted observation `id`?
/// An unparseable watermark counts everything (build-edges itself asks for
/// a rebuild then).
fn watermark_covers(wm: Option<&str>, id: i64) -> bool {
    match wm {
        None => false,
        Some(v) => v.trim().parse::<i64>().map_or(true, |w| id <= w),
    }
}

#[derive(Debug, Default)]
struct MergeBatch {
    groups: i64,
    removed: i64,
    rows_seen: usize,
    min_removed: Option<i64>,
    marked: bool,
    staging_reset: bool,
}

fn merge_batch(tx: &rusqlite::Transaction<'_>, keepers: &[i64]) -> anyhow::Result<MergeBatch> {
    use rusqlite::types::Value;
    let obs_cols = store::columns(tx, "observations")?;
    let merge_cols: Vec<&str> = catalog::UPSERT_MERGED_COLUMNS
        .iter()
        .copied()
        .filter(|c| obs_cols.iter().any(|x| x == c))
        .collect();
    let audit = catalog::MERGED_OBSERVATIONS;
    tx.execute_batch(&catalog::merged_observations_sql())?;
    let audit_cols = store::columns(tx, audit)?;
    for c in &obs_cols {
        if !audit_cols.iter().any(|x| x.eq_ignore_ascii_case(c)) {
            tx.execute_batch(&format!(
                "ALTER TABLE {audit} ADD COLUMN {}",
                catalog::quote_ident(c)
            ))?;
        }
    }
    let col_list = obs_cols
        .iter()
        .map(|c| catalog::quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ");
    let mut key_st = tx.prepare_cached(
        "SELECT transmission_id, observer_idx, COALESCE(path_json, '') FROM observations WHERE id = ?1",
    )?;
    let sel_cols: String = merge_cols
        .iter()
        .map(|c| format!(", {}", catalog::quote_ident(c)))
        .collect::<Vec<_>>()
        .concat();
    let mut group_st = tx.prepare_cached(&format!(
        "SELECT id{sel_cols} FROM observations
          WHERE transmission_id = ?1 AND observer_idx = ?2 AND COALESCE(path_json, '') = ?3
          ORDER BY id"
    ))?;
    let mut copy_st = tx.prepare_cached(&format!(
        "INSERT INTO {audit} (merged_into, merged_at, {col_list})
         SELECT ?1, strftime('%Y-%m-%dT%H:%M:%SZ', 'now'), {col_list} FROM observations WHERE id = ?2"
    ))?;
    let mut del_st = tx.prepare_cached("DELETE FROM observations WHERE id = ?1")?;
    let set_list: String = merge_cols
        .iter()
        .enumerate()
        .map(|(j, c)| format!("{} = ?{}", catalog::quote_ident(c), j + 2))
        .collect::<Vec<_>>()
        .join(", ");
    let mut b = MergeBatch::default();
    for &k in keepers {
        let key: Option<(Value, Value, Value)> = key_st
            .query_row([k], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        let Some((t, o, p)) = key else {
            continue; // merged away by another run meanwhile
        };
        if matches!(t, Value::Null) || matches!(o, Value::Null) {
            continue;
        }
        let rows: Vec<(i64, Vec<Value>)> = group_st
            .query_map(rusqlite::params![t, o, p], |r| {
                let id: i64 = r.get(0)?;
                let vals = (0..merge_cols.len())
                    .map(|j| r.get::<_, Value>(j + 1))
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok((id, vals))
            })?
            .collect::<rusqlite::Result<_>>()?;
        b.rows_seen += rows.len();
        let Some(((keep, first), later)) = rows.split_first().map(|(f, l)| (f.clone(), l)) else {
            continue;
        };
        if later.is_empty() {
            continue;
        }
        // The UPSERT: COALESCE(excluded.c, c) for each later row, in id order.
        let mut vals = first.clone();
        for (_, v) in later {
            for (j, x) in v.iter().enumerate() {
                if !matches!(x, Value::Null) {
                    vals[j] = x.clone();
                }
            }
        }
        for (id, _) in later {
            copy_st.execute(rusqlite::params![keep, id])?;
            del_st.execute([id])?;
            b.removed += 1;
            b.min_removed = Some(b.min_removed.map_or(*id, |m: i64| m.min(*id)));
        }
        if vals != first && !merge_cols.is_empty() {
            let mut params: Vec<Value> = vec![Value::Integer(keep)];
            params.extend(vals);
            tx.execute(
                &format!("UPDATE observations SET {set_list} WHERE id = ?1"),
                rusqlite::params_from_iter(params),
            )?;
        }
        b.groups += 1;
    }
    if let Some(m) = b.min_removed {
        tx.execute_batch(&store::state_table_sql())?;
        if watermark_covers(store::state_get(tx, WATERMARK_KEY)?.as_deref(), m) {
            store::state_set(tx, NEEDS_REBUILD_KEY, NEEDS_REBUILD_VALUE)?;
            b.marked = true;
        }
        // An unfinished rebuild may hold removed rows in its staging table
        // (or in memory): take its ownership away, so it stops and the next
        // rebuild starts over from the merged observations.
        if store::state_get(tx, REBUILD_OWNER_KEY)?.is_some()
            || store::state_get(tx, REBUILD_KEY)?.is_some()
        {
            store::state_delete(tx, REBUILD_OWNER_KEY)?;
            store::state_delete(tx, REBUILD_KEY)?;
            b.staging_reset = true;
        }
    }
    Ok(b)
}

/// Rebuild `inactive_nodes` with exactly the columns of `nodes`, in nodes'
/// order, in one transaction: columns only `inactive_nodes` has are first
/// added to `nodes` (so no value is lost), then the rows are copied by
/// column name into a new table that replaces the old one, and its indexes
/// are re-created. Returns the rows copied; does nothing when the pair
/// already matches.
fn sync_inactive_nodes(db: &mut WriteDb) -> anyhow::Result<i64> {
    db.write(|tx| {
        if probe::nodes_drift(tx)?.is_none() {
            return Ok(0);
        }
        let nodes = crate::store::probe::live_columns(tx, "nodes")?;
        let inactive = crate::store::probe::live_columns(tx, "inactive_nodes")?;
        for c in &inactive {
            if !nodes.iter().any(|n| n.name.eq_ignore_ascii_case(&c.name)) {
                tx.execute_batch(&catalog::add_to_nodes_sql(c))?;
            }
        }
        let nodes = crate::store::probe::live_columns(tx, "nodes")?;
        let before: i64 = tx.query_row("SELECT count(*) FROM inactive_nodes", [], |r| r.get(0))?;
        let indexes: Vec<String> = {
            let mut st = tx.prepare(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'inactive_nodes' AND sql IS NOT NULL",
            )?;
            let rows = st.query_map([], |r| r.get::<_, String>(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let tmp = "_corescope_inactive_nodes_new";
        tx.execute_batch(&format!("DROP TABLE IF EXISTS {tmp}"))?;
        tx.execute_batch(&crate::store::probe::node_table_like_nodes_sql(tx, tmp)?)?;
        // (name in the new table, name in the old one) of every column both have.
        let (to, from): (Vec<String>, Vec<String>) = nodes
            .iter()
            .filter_map(|n| {
                inactive
                    .iter()
                    .find(|c| c.name.eq_ignore_ascii_case(&n.name))
                    .map(|c| (catalog::quote_ident(&n.name), catalog::quote_ident(&c.name)))
            })
            .unzip();
        let (to_list, from_list) = (to.join(", "), from.join(", "));
        let copied = tx.execute(
            &format!("INSERT INTO {tmp} ({to_list}) SELECT {from_list} FROM inactive_nodes"),
            [],
        )? as i64;
        if copied != before {
            anyhow::bail!(
                "rebuilding inactive_nodes copied {copied} of {before} rows; nothing was changed"
            );
        }
        // legacy_alter_table: the RENAME must not re-check views and
        // triggers elsewhere in the schema (an old view naming a column that
        // does not exist yet would fail it).
        tx.pragma_update(None, "legacy_alter_table", true)?;
        let renamed = tx.execute_batch(&format!(
            "DROP TABLE inactive_nodes; ALTER TABLE {tmp} RENAME TO inactive_nodes;"
        ));
        let _ = tx.pragma_update(None, "legacy_alter_table", false);
        renamed?;
        for sql in &indexes {
            tx.execute_batch(sql)?;
        }
        Ok(copied)
    })
}

/// cleanup_legacy_null_hash_ts (#994): observations of transmissions with an
/// empty hash or first_seen, then those transmissions, batch by batch.
fn cleanup_legacy(db: &mut WriteDb, batcher: &mut Batcher) -> anyhow::Result<i64> {
    let mut total = 0i64;
    loop {
        let n = batcher.size();
        let (ids, deleted) = db.write(|tx| {
            let mut sel = tx.prepare(
                "SELECT id FROM transmissions WHERE hash = '' OR first_seen = '' LIMIT ?1",
            )?;
            let ids: Vec<i64> = sel
                .query_map([n as i64], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let mut del_o = tx.prepare("DELETE FROM observations WHERE transmission_id = ?1")?;
            let mut del_t = tx.prepare("DELETE FROM transmissions WHERE id = ?1")?;
            let mut d = 0i64;
            for id in &ids {
                d += del_o.execute([id])? as i64;
                d += del_t.execute([id])? as i64;
            }
            Ok((ids.len(), d))
        })?;
        batcher.observe(ids.max(1), db.last_hold());
        total += deleted;
        if ids < n {
            break;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_columns_parsing() {
        assert_eq!(
            index_columns("CREATE INDEX IF NOT EXISTS i ON t(a, b)"),
            vec!["a".to_string(), "b".to_string()]
        );
        assert_eq!(
            index_columns("CREATE INDEX x ON transmissions(channel_hash) WHERE payload_type = 5"),
            vec!["channel_hash".to_string(), "payload_type".to_string()]
        );
        assert_eq!(
            index_columns("CREATE INDEX z ON transmissions(id) WHERE last_seen=0"),
            vec!["id".to_string(), "last_seen".to_string()]
        );
        assert_eq!(
            index_columns("CREATE UNIQUE INDEX d ON observations(transmission_id, observer_idx, COALESCE(path_json, ''))"),
            vec!["transmission_id".to_string(), "observer_idx".to_string()]
        );
    }

    fn legacy_like() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE TABLE nodes (public_key TEXT PRIMARY KEY, name TEXT, role TEXT, lat REAL, lon REAL, last_seen TEXT, first_seen TEXT, advert_count INTEGER DEFAULT 0, battery_mv INTEGER, temperature_c REAL);
             CREATE TABLE observers (id TEXT PRIMARY KEY, name TEXT, iata TEXT, last_seen TEXT, first_seen TEXT, packet_count INTEGER DEFAULT 0, model TEXT, firmware TEXT, client_version TEXT, radio TEXT, battery_mv INTEGER, uptime_secs INTEGER, noise_floor REAL);
             CREATE TABLE transmissions (id INTEGER PRIMARY KEY AUTOINCREMENT, raw_hex TEXT NOT NULL, hash TEXT NOT NULL UNIQUE, first_seen TEXT NOT NULL, route_type INTEGER, payload_type INTEGER, payload_version INTEGER, decoded_json TEXT, created_at TEXT DEFAULT (datetime('now')));
             CREATE TABLE observations (id INTEGER PRIMARY KEY AUTOINCREMENT, transmission_id INTEGER NOT NULL REFERENCES transmissions(id), observer_idx INTEGER, direction TEXT, snr REAL, rssi REAL, score INTEGER, path_json TEXT, timestamp INTEGER NOT NULL);",
        )
        .unwrap();
        c
    }

    #[test]
    fn plan_on_legacy_shape_orders_phases() {
        let c = legacy_like();
        let steps = plan(&c, Target::Latest, true).unwrap();
        let labels: Vec<&str> = steps.iter().map(|s| s.label.as_str()).collect();
        let pos = |l: &str| {
            labels
                .iter()
                .position(|x| *x == l)
                .unwrap_or_else(|| panic!("{l} in {labels:?}"))
        };
        assert!(pos("table:neighbor_edges") < pos("from_pubkey_v1"));
        assert!(pos("from_pubkey_v1") < pos("advert_count_unique_v1"));
        assert!(pos("index:idx_observations_transmission_id") < pos("tx_last_seen_backfill_v1"));
        assert!(pos("tx_last_seen_backfill_v1") < pos("index:idx_tx_last_seen_zero"));
        assert!(pos("index:idx_observations_dedup") > pos("advert_count_unique_v1"));
        assert_eq!(labels.last(), Some(&"view:packets_v"));
        // Own migration absent: no text observer_idx rows here.
        assert!(!labels.contains(&catalog::OBSERVER_IDX_MIGRATION));
    }

    #[test]
    fn watermark_coverage() {
        assert!(!watermark_covers(None, 1));
        assert!(watermark_covers(Some("10"), 10));
        assert!(!watermark_covers(Some(" 10 "), 11));
        assert!(
            watermark_covers(Some("garbage"), 11),
            "unparseable: assume counted"
        );
    }

    #[test]
    fn plan_creates_inactive_nodes_like_nodes_and_adds_columns_to_both() {
        let c = legacy_like();
        c.execute_batch("ALTER TABLE nodes ADD COLUMN scope TEXT")
            .unwrap();
        let steps = plan(&c, Target::Latest, true).unwrap();
        let labels: Vec<&str> = steps.iter().map(|s| s.label.as_str()).collect();
        assert!(labels.contains(&"table:inactive_nodes"));
        assert!(
            labels.contains(&"inactive_nodes.multibyte_sup"),
            "{labels:?}"
        );
        assert!(!labels.contains(&"rebuild:inactive_nodes"), "{labels:?}");
        assert!(!labels.contains(&MERGE_STEP));
    }

    #[test]
    fn advert_counts_fall_back_to_decoded_json() {
        let c = legacy_like();
        c.execute_batch(
            r#"INSERT INTO transmissions (raw_hex, hash, first_seen, payload_type, decoded_json) VALUES
               ('', 'a', 't', 4, '{"pubKey":"AB"}'), ('', 'b', 't', 4, '{"pubKey":"ab"}'),
               ('', 'c', 't', 4, 'not json'), ('', 'd', 't', 5, '{"pubKey":"ab"}');"#,
        )
        .unwrap();
        let m = advert_counts(&c, ">", i64::MIN).unwrap();
        assert_eq!(m.get("ab"), Some(&2));
        assert_eq!(m.len(), 1);
    }
}
