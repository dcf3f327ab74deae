//! Which index steps of a plan run online, and running them: before such a
//! step, the table is rebuilt through [`crate::store::shadow`] with the
//! step's indexes (and every other missing index of the target whose
//! columns exist, so a table is copied as few times as possible); the step
//! itself then finds its index in place and only records what it records.
//!
//! A table below the row threshold keeps the direct `CREATE INDEX`: on a
//! table of that size the statement ends well inside the lock budget, and
//! a copy would cost more than it saves. `--offline` builds every index
//! directly (the operator says nothing else writes).

use rusqlite::Connection;
use serde::Serialize;

use crate::catalog::{self, IndexDef, Target};
use crate::cli::MigrateArgs;
use crate::error::Failure;
use crate::store::engine::Engine;
use crate::store::shadow::{self, Budget, NamedIndex, Phase};
use crate::store::{self, probe, Deadline};

use super::plan::{index_columns, Action, Step};

/// Rows per millisecond of lock budget below which a table keeps the
/// direct `CREATE INDEX`. Measured: one index over 1 M observations takes
/// 0.3-0.5 s (2-3 M rows/s); 500 rows per ms leaves a margin of four.
pub(super) const ROWS_PER_LOCK_MS: u64 = 500;

/// One online build of a run (JSON `online_builds`).
#[derive(Debug, Serialize)]
pub(super) struct OnlineBuild {
    pub table: String,
    /// Indexes the table got (final names).
    pub indexes: Vec<String>,
    /// Rows this run copied into the new table.
    pub rows_copied: i64,
    /// Rows this run removed from the replaced table.
    pub old_rows_removed: i64,
    /// Swapped and the old table removed (false: stopped, the next run goes on).
    pub complete: bool,
}

pub(super) struct Online {
    offline: bool,
    min_rows: u64,
    target: Target,
    pub budget: Budget,
    pub builds: Vec<OnlineBuild>,
}

impl Online {
    pub fn new(args: &MigrateArgs, deadline: Deadline) -> Online {
        Online {
            offline: args.offline,
            min_rows: args
                .online_min_rows
                .unwrap_or(args.max_lock_ms.saturating_mul(ROWS_PER_LOCK_MS)),
            target: args.target,
            budget: Budget {
                max_lock_ms: args.max_lock_ms,
                deadline,
            },
            builds: Vec::new(),
        }
    }

    /// At least `min_rows` rows in `table` (reads at most that many).
    fn large(&self, conn: &Connection, table: &str) -> anyhow::Result<bool> {
        if self.offline || !store::table_exists(conn, table)? {
            return Ok(false);
        }
        let n: i64 = conn.query_row(
            &format!(
                "SELECT count(*) FROM (SELECT 1 FROM {} LIMIT ?1)",
                catalog::quote_ident(table)
            ),
            [i64::try_from(self.min_rows).unwrap_or(i64::MAX)],
            |r| r.get(0),
        )?;
        Ok(u64::try_from(n).unwrap_or(0) >= self.min_rows.max(1))
    }

    /// The table `step` builds indexes on online, and the indexes; None
    /// when the step builds no index or its table is small.
    fn wanted(
        &self,
        conn: &Connection,
        step: &Step,
    ) -> anyhow::Result<Option<(&'static str, Vec<&'static IndexDef>)>> {
        let step_idx: Vec<&'static IndexDef> = match &step.action {
            Action::CreateIndex(i) => vec![*i],
            Action::DedupIndex => catalog::index(catalog::DEDUP_INDEX).into_iter().collect(),
            Action::Migration(m) => m.indexes.iter().filter_map(|n| catalog::index(n)).collect(),
            _ => Vec::new(),
        };
        let mut missing: Vec<&'static IndexDef> = Vec::new();
        for i in step_idx {
            if needed(conn, i)? && store::table_exists(conn, i.table)? {
                missing.push(i);
            }
        }
        let Some(table) = missing.first().map(|i| i.table) else {
            return Ok(None);
        };
        if !self.large(conn, table)? {
            return Ok(None);
        }
        if matches!(step.action, Action::DedupIndex) && probe::duplicate_dedup_groups(conn)?.0 > 0 {
            // The step reports the duplicates and is skipped.
            return Ok(None);
        }
        // The other missing indexes of the target on this table whose
        // columns exist now (not a UNIQUE index with a duplicate check:
        // that one waits for its merge step).
        let cols = store::columns(conn, table)?;
        let has = |i: &IndexDef| {
            index_columns(i.sql)
                .iter()
                .all(|c| cols.iter().any(|x| x == c))
        };
        let mut all: Vec<&'static IndexDef> = missing
            .iter()
            .copied()
            .filter(|i| i.table == table)
            .collect();
        for i in catalog::INDEXES
            .iter()
            .filter(|i| self.target.includes(i.since) && i.table == table)
        {
            if i.unique_check.is_none()
                && !all.iter().any(|x| x.name == i.name)
                && needed(conn, i)?
                && has(i)
            {
                all.push(i);
            }
        }
        Ok(Some((table, all)))
    }

    /// Before `step`: its index builds on a large table, online. Columns the
    /// step's migration adds to that table are added first (one short
    /// transaction), so its indexes can be built with the rows.
    pub fn before_step(&mut self, e: &mut Engine<'_>, step: &Step) -> anyhow::Result<Phase> {
        if self.offline {
            return Ok(Phase::Done);
        }
        if let Action::Migration(m) = &step.action {
            if self.wanted_after_columns(e.conn(), m)? {
                add_migration_columns(e, m)?;
            }
        }
        let Some((table, idx)) = self.wanted(e.conn(), step)? else {
            return Ok(Phase::Done);
        };
        let cols = store::columns(e.conn(), table)?;
        let idx: Vec<&IndexDef> = idx
            .into_iter()
            .filter(|i| {
                index_columns(i.sql)
                    .iter()
                    .all(|c| cols.iter().any(|x| x == c))
            })
            .collect();
        if idx.is_empty() {
            return Ok(Phase::Done);
        }
        check_space(e, table)?;
        let new: Vec<NamedIndex> = idx
            .iter()
            .map(|i| NamedIndex::from_catalog(i.name, i.sql))
            .collect();
        log::info!(
            "{}: building {} on {table} online",
            step.label,
            new.iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let r = shadow::rebuild(e, table, &new, self.budget)?;
        self.builds.push(OnlineBuild {
            table: table.to_string(),
            indexes: new.into_iter().map(|i| i.name).collect(),
            rows_copied: r.copied,
            old_rows_removed: r.removed,
            complete: r.complete,
        });
        Ok(if r.complete {
            Phase::Done
        } else {
            Phase::Stopped
        })
    }

    /// A migration whose indexes would be built online on a table that
    /// lacks one of the migration's columns.
    fn wanted_after_columns(
        &self,
        conn: &Connection,
        m: &catalog::MigrationDef,
    ) -> anyhow::Result<bool> {
        for n in m.indexes {
            let Some(i) = catalog::index(n) else { continue };
            if !needed(conn, i)? {
                continue;
            }
            let cols = store::columns(conn, i.table)?;
            let lacks = index_columns(i.sql)
                .iter()
                .any(|c| !cols.iter().any(|x| x == c));
            if lacks && self.large(conn, i.table)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Dry run: the step's detail and rows when it will run online.
    pub fn annotate(&self, conn: &Connection, step: &mut Step) -> anyhow::Result<bool> {
        if self.offline {
            return Ok(false);
        }
        let (table, idx) = match &step.action {
            Action::Migration(m) => {
                // Its columns are added first; judge by the table alone.
                let idx: Vec<&'static IndexDef> = m
                    .indexes
                    .iter()
                    .filter_map(|n| catalog::index(n))
                    .filter(|i| needed(conn, i).unwrap_or(false))
                    .collect();
                match idx.first() {
                    Some(i) if self.large(conn, i.table)? => (i.table, idx),
                    _ => return Ok(false),
                }
            }
            _ => match self.wanted(conn, step)? {
                Some(w) => w,
                None => return Ok(false),
            },
        };
        let rows: i64 = conn.query_row(
            &format!("SELECT count(*) FROM {}", catalog::quote_ident(table)),
            [],
            |r| r.get(0),
        )?;
        let names: Vec<&str> = idx.iter().map(|i| i.name).collect();
        step.detail = format!(
            "{}; online: {rows} rows of {table} copied in batches into a new table with its indexes ({}), then swapped",
            step.detail,
            names.join(", ")
        );
        step.rows = Some(rows);
        Ok(true)
    }
}

/// Missing, or there with a definition that breaks a CoreScope statement
/// (rebuilt with the catalog's definition under the same name) — unless
/// an index of that name belongs to another table: that one is replaced
/// by the step's direct `DROP INDEX` + `CREATE INDEX`.
fn needed(conn: &Connection, i: &IndexDef) -> anyhow::Result<bool> {
    if probe::index_missing(conn, i)? {
        return Ok(true);
    }
    let on_table: bool = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = ?1 AND tbl_name = ?2",
        [i.name, i.table],
        |r| r.get::<_, i64>(0),
    )? > 0;
    Ok(on_table && probe::index_breaks(conn, i)?)
}

/// Add the columns `m` declares that are missing (one transaction).
fn add_migration_columns(e: &mut Engine<'_>, m: &catalog::MigrationDef) -> anyhow::Result<()> {
    super::steps::once(e, |tx| {
        for c in m.columns {
            let Some((t, col)) = c.split_once('.') else {
                continue;
            };
            let cols = store::columns(tx, t)?;
            if cols.is_empty() || cols.iter().any(|x| x == col) {
                continue;
            }
            if let Some(def) = catalog::column(t, col) {
                tx.execute_batch(&catalog::add_column_sql(t, def))?;
            }
        }
        Ok(())
    })
}

/// Test hook: pretend the filesystem of the database has this many bytes free.
const FREE_BYTES_ENV: &str = "CORESCOPE_TEST_FREE_BYTES";

/// The copy needs room for the table with its indexes, and the WAL grows
/// by what the batches write until a checkpoint. The used size of the
/// whole file bounds the first (no per-table size is known without reading
/// every page); the current `-wal` is added, plus 10 % for the new
/// indexes. A pending build's copy already holds some of it.
fn check_space(e: &Engine<'_>, table: &str) -> anyhow::Result<()> {
    let conn = e.conn();
    if store::table_exists(conn, &shadow::shadow_name(table))? {
        return Ok(());
    }
    let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    let path = conn
        .path()
        .map(std::path::PathBuf::from)
        .unwrap_or_default();
    let used = u64::try_from((pages - free).max(0) * page_size).unwrap_or(0);
    let wal = store::file_len(&store::wal_path(&path));
    let need = used + used / 10 + wal;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let avail = match std::env::var(FREE_BYTES_ENV) {
        Ok(v) => v
            .trim()
            .parse::<u64>()
            .map_err(|_| Failure::Usage(format!("{FREE_BYTES_ENV}={v} is not a byte count")))?,
        Err(_) => store::precheck::dir_free_bytes(&dir).map_err(|err| {
            Failure::Fatal(format!(
                "cannot read the free space of {}: {err}",
                dir.display()
            ))
        })?,
    };
    // Pages on the free list are reused before the file grows.
    let reusable = u64::try_from(free * page_size).unwrap_or(0);
    if avail + reusable < need {
        return Err(Failure::Fatal(format!(
            "not enough free disk space for the online index build of {table} in {}: it copies the table with its indexes \
             and needs about {} MiB ({} bytes: the database's {} MiB in use plus 10 % plus the {} MiB WAL), \
             {} MiB are free (plus {} MiB free pages inside the file). Free disk space, or stop the ingestor and run \
             `corescope migrate --offline`, which builds the indexes in place",
            dir.display(),
            need.div_ceil(1 << 20),
            need,
            used >> 20,
            wal >> 20,
            avail >> 20,
            reusable >> 20
        ))
        .into());
    }
    Ok(())
}
