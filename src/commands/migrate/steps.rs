//! Applying the steps of a plan, each in its own short transaction on the
//! batch engine (data steps in batches, see [`super::data`]).

use rusqlite::{Connection, Transaction};

use crate::catalog::{self, ColumnDef, DataOp, IndexDef, MigrationDef, Record, Target, ViewDef};
use crate::store::engine::Engine;
use crate::store::probe;
use crate::store::{self};

use super::data::run_data;
use super::plan::{index_columns, Action, Step};
use super::repairs::{merge_duplicates, sync_inactive_nodes, MergeStats};

pub(super) enum Applied {
    Done(i64),
    Skipped(String),
}

/// One transaction on the engine that sizes no batch (DDL, records).
pub(super) fn once<T>(
    e: &mut Engine<'_>,
    f: impl FnOnce(&Transaction<'_>) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    e.batch(|tx| Ok((f(tx)?, 0)))
}

/// Run `sql` (DDL) in one transaction; a done step.
fn ddl(e: &mut Engine<'_>, sql: &str) -> anyhow::Result<Applied> {
    once(e, |tx| Ok(tx.execute_batch(sql)?))?;
    Ok(Applied::Done(0))
}

/// Apply one step. What the duplicate merge did is added to `merged`; a
/// skipped step's details that help the operator go to `notes`.
pub(super) fn apply(
    e: &mut Engine<'_>,
    step: &Step,
    notes: &mut Vec<String>,
    merged: &mut MergeStats,
) -> anyhow::Result<Applied> {
    match &step.action {
        Action::CreateInactiveLikeNodes => {
            once(e, |tx| {
                if !store::table_exists(tx, "inactive_nodes")? {
                    tx.execute_batch(&probe::node_table_like_nodes_sql(tx, "inactive_nodes")?)?;
                }
                Ok(())
            })?;
            Ok(Applied::Done(0))
        }
        Action::MergeDuplicates { .. } => {
            let m = merge_duplicates(e)?;
            merged.add(&m);
            Ok(Applied::Done(m.rows))
        }
        Action::SyncInactiveNodes => Ok(Applied::Done(sync_inactive_nodes(e)?)),
        // Create the full catalog shape of the target the table belongs to.
        Action::CreateTable(t) => ddl(e, &catalog::create_table_sql(t, Target::Latest)),
        Action::CreateIndex(i) => create_index(e, i),
        Action::AddColumn(table, c) => add_column(e, table, c),
        Action::DedupIndex => dedup_index(e, notes),
        Action::View(v) => view(e, v),
        Action::DropIndex(name) => ddl(e, &format!("DROP INDEX IF EXISTS {name}")),
        Action::Migration(m) => apply_migration(e, m),
    }
}

fn create_index(e: &mut Engine<'_>, i: &IndexDef) -> anyhow::Result<Applied> {
    let cols = store::columns(e.conn(), i.table)?;
    let needed = index_columns(i.sql);
    if !needed.iter().all(|c| cols.iter().any(|x| x == c)) {
        return Ok(Applied::Skipped(format!(
            "table {} lacks a column of the index ({})",
            i.table,
            needed.join(", ")
        )));
    }
    once(e, |tx| {
        // Decided again inside the transaction (an overlapping run may have
        // done it).
        if let Some(sql) = index_ddl(tx, i)? {
            tx.execute_batch(&sql)?;
        }
        Ok(())
    })?;
    Ok(Applied::Done(0))
}

fn add_column(e: &mut Engine<'_>, table: &str, c: &ColumnDef) -> anyhow::Result<Applied> {
    if !c.alter {
        return Ok(Applied::Skipped(format!(
            "{table}.{} ({}) cannot be added to an existing table by ALTER TABLE; the table must be rebuilt by hand",
            c.name, c.decl
        )));
    }
    let sql = catalog::add_column_sql(table, c);
    once(e, |tx| {
        if !store::columns(tx, table)?.iter().any(|x| x == c.name) {
            tx.execute_batch(&sql)?;
        }
        Ok(())
    })?;
    Ok(Applied::Done(0))
}

fn dedup_index(e: &mut Engine<'_>, notes: &mut Vec<String>) -> anyhow::Result<Applied> {
    let (groups, surplus) = probe::duplicate_dedup_groups(e.conn())?;
    if groups > 0 {
        let sample = probe::duplicate_dedup_sample(e.conn(), 5)?;
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
    let Some(i) = catalog::index(catalog::DEDUP_INDEX) else {
        return Ok(Applied::Skipped(format!(
            "{} is not in the catalog",
            catalog::DEDUP_INDEX
        )));
    };
    create_index(e, i)
}

fn view(e: &mut Engine<'_>, v: &ViewDef) -> anyhow::Result<Applied> {
    once(e, |tx| {
        tx.execute_batch(&format!("DROP VIEW IF EXISTS {};", v.name))?;
        tx.execute_batch(v.sql)?;
        Ok(())
    })?;
    Ok(Applied::Done(0))
}

/// Add the migration's missing columns and indexes (one transaction, with
/// the record when there is no data step), then its data step in batches,
/// then the record.
fn apply_migration(e: &mut Engine<'_>, m: &'static MigrationDef) -> anyhow::Result<Applied> {
    // What is missing is decided again inside the write transaction: another
    // run (overlapping without the run lock) may have added it meanwhile.
    let ddl = migration_ddl(e.conn(), m)?;
    let no_data = m.data == DataOp::None;
    if !ddl.is_empty() || no_data {
        once(e, |tx| {
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
    let rows = run_data(e, m.data)?;
    once(e, |tx| {
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
            ddl.extend(index_ddl(conn, def)?);
        }
    }
    Ok(ddl)
}

/// The statement that gives the database the catalog's index `i`: create it
/// when missing; drop and re-create it (in the same transaction) when an
/// index of that name breaks a CoreScope statement; nothing when it is fine
/// or its table does not want it.
fn index_ddl(conn: &Connection, i: &IndexDef) -> anyhow::Result<Option<String>> {
    if probe::index_breaks(conn, i)? {
        return Ok(Some(format!(
            "DROP INDEX {};\n{}",
            catalog::quote_ident(i.name),
            i.sql
        )));
    }
    Ok(probe::index_missing(conn, i)?.then(|| i.sql.to_string()))
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
