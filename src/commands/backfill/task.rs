//! One row task (`from-pubkey`, `path-json`, `resolved-path`): walk the
//! candidates by row id, derive outside the write lock, write each batch on
//! the engine together with the task's cursor.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use rusqlite::{params, Connection, Transaction};

use crate::cli::BackfillTask;
use crate::derive::Derived;
use crate::store::backfill_state::{
    self, pending_counts, FROM_PUBKEY_WHERE, PATH_JSON_FROM, PATH_JSON_WHERE, RESOLVED_FROM,
    RESOLVED_WHERE,
};
use crate::store::edge_state::{
    read_watermark, rows_rewritten, watermark_covers, REBUILD_KEY, WATERMARK_KEY,
};
use crate::store::engine::{self, Engine};
use crate::store::{self, table_exists};

use super::report::{TaskReport, WaitingForEdges};
use super::rows::{derive_row, fetch, load_resolve_ctx, write_row, Row};

/// Reason recorded with the build-edges marker when this task gives hops to
/// an observation the graph had already counted.
const PATH_JSON_REASON: &str =
    "backfill path-json gave hops to observations that neighbor_edges had already counted without them";

/// Reason recorded with the build-edges marker when this task finds the
/// originator of ADVERTs the graph had already counted without one.
const FROM_PUBKEY_REASON: &str =
    "backfill from-pubkey found the originator of ADVERTs that neighbor_edges had already counted without one";

/// `_migrations` row CoreScope's own path_json backfill writes when a pass
/// finished; recorded so its startup backfill stays off.
const PATH_JSON_MARKER: &str = "backfill_path_json_from_raw_hex_v1";

/// `_corescope_state` key of a task's cursor.
pub(super) fn cursor_key(task: BackfillTask) -> String {
    backfill_state::cursor_key(task.cli_name())
}

/// The stored cursor of a task (0 when none or unparsable).
pub(super) fn read_cursor(conn: &Connection, task: BackfillTask) -> anyhow::Result<i64> {
    backfill_state::read_cursor(conn, task.cli_name())
}

/// Rows `task` still has to visit, as `check` counts them.
pub(super) fn pending(conn: &Connection, task: BackfillTask) -> anyhow::Result<i64> {
    let key = match task {
        BackfillTask::FromPubkey => "from_pubkey",
        BackfillTask::PathJson => "path_json",
        _ => "resolved_path",
    };
    Ok(pending_counts(conn)?.get(key).copied().unwrap_or(0))
}

/// Moves a cursor forward to `to`, unless somebody else moved it since we
/// read `expected`: then the lower of the two wins, so a cursor lowered by
/// the path-json task (or a `--reset` of a concurrent run) is kept and rows
/// are visited again rather than skipped.
pub(super) fn advance_cursor(
    tx: &Connection,
    task: BackfillTask,
    expected: i64,
    to: i64,
) -> anyhow::Result<i64> {
    let key = cursor_key(task);
    let stored = store::state_get(tx, &key)?.and_then(|v| v.trim().parse::<i64>().ok());
    let new = match stored {
        Some(s) if s != expected => s.min(to),
        _ => to,
    };
    store::state_set(tx, &key, &new.to_string())?;
    Ok(new)
}

/// The table a task walks and its candidate count between two ids
/// (?1 exclusive, ?2 inclusive).
fn task_sql(task: BackfillTask) -> anyhow::Result<(&'static str, String)> {
    Ok(match task {
        BackfillTask::FromPubkey => (
            "transmissions",
            format!("SELECT COUNT(*) FROM transmissions WHERE id > ?1 AND id <= ?2 AND {FROM_PUBKEY_WHERE}"),
        ),
        BackfillTask::PathJson => (
            "observations",
            format!(
                "SELECT COUNT(*) FROM {PATH_JSON_FROM} WHERE o.id > ?1 AND o.id <= ?2 AND {PATH_JSON_WHERE}"
            ),
        ),
        BackfillTask::ResolvedPath => (
            "observations",
            format!(
                "SELECT COUNT(*) FROM {RESOLVED_FROM} WHERE o.id > ?1 AND o.id <= ?2 AND {RESOLVED_WHERE}"
            ),
        ),
        BackfillTask::ObserverBlacklist => {
            anyhow::bail!("observer-blacklist is not a row task")
        }
    })
}

/// What one written batch did.
#[derive(Debug, Default)]
struct Written {
    updated: u64,
    skipped: u64,
    conflicts: u64,
    cursor: i64,
}

/// Run a row task on `e` (a new engine per task: the cost of a row differs
/// between tasks, so each sizes its own batches).
/// How a row task runs.
pub(super) struct Options {
    /// `--reset` of this task.
    pub reset: bool,
    pub show_bar: bool,
    /// Hidden `--batch-size`: rows per batch instead of the adaptive size.
    pub batch_size: Option<usize>,
    /// Hidden `--max-batches`: stop (incomplete) after this many batches.
    pub max_batches: Option<u64>,
}

pub(super) fn run_row_task(
    e: &mut Engine<'_>,
    task: BackfillTask,
    opts: Options,
) -> anyhow::Result<TaskReport> {
    let (reset, show_bar) = (opts.reset, opts.show_bar);
    let mut batches = 0u64;
    let mut rep = TaskReport::new(task, true);
    let (table, total_sql) = task_sql(task)?;
    let dry_run = e.target().is_dry_run();
    if reset && !dry_run {
        e.batch(|tx| {
            store::state_delete(tx, &cursor_key(task))?;
            store::state_delete(
                tx,
                &crate::store::backfill_state::skipped_key(task.cli_name()),
            )?;
            Ok(((), 0))
        })?;
        log::info!("backfill {}: cursor reset", task.cli_name());
    }
    let mut cursor = if reset {
        0
    } else {
        read_cursor(e.conn(), task)?
    };
    let mut upto: i64 = e.conn().query_row(
        &format!("SELECT COALESCE(MAX(id), 0) FROM {table}"),
        [],
        |r| r.get(0),
    )?;
    if task == BackfillTask::ResolvedPath {
        // Rows build-edges has not counted yet wait for it (see
        // `resolve_ceiling`); they stay candidates after the cursor.
        if let Some(ceiling) = crate::store::backfill_state::resolve_ceiling(e.conn())? {
            if ceiling < upto {
                let waiting: i64 =
                    e.conn()
                        .query_row(&total_sql, params![cursor.max(ceiling), upto], |r| r.get(0))?;
                rep.waiting_for_edges = Some(WaitingForEdges {
                    rows: waiting,
                    edges_upto: ceiling,
                });
                upto = ceiling.max(cursor);
            }
        }
    }
    let total: i64 = e
        .conn()
        .query_row(&total_sql, params![cursor, upto], |r| r.get(0))?;
    let rctx = if task == BackfillTask::ResolvedPath && total > 0 {
        Some(load_resolve_ctx(e.conn())?)
    } else {
        None
    };
    let mut progress = Progress::new(show_bar, task.cli_name(), u64::try_from(total).unwrap_or(0));
    rep.complete = true;
    loop {
        if e.expired() || opts.max_batches.is_some_and(|m| batches >= m) {
            rep.complete = false;
            break;
        }
        batches += 1;
        let size = opts.batch_size.unwrap_or_else(|| e.batch_size());
        let rows = fetch(e.conn(), task, cursor, upto, size)
            .with_context(|| format!("backfill {}: reading candidates", task.cli_name()))?;
        let Some(last) = rows.last().map(|r| r.id) else {
            break;
        };
        let derived: Vec<Derived> = rows
            .iter()
            .map(|r| derive_row(task, r, rctx.as_ref()))
            .collect();
        rep.scanned += rows.len() as u64;
        let w = if dry_run {
            would_write(&derived, last)
        } else {
            let expected = cursor;
            e.batch(|tx| {
                Ok((
                    write_batch(tx, task, &rows, &derived, expected, last)?,
                    rows.len(),
                ))
            })?
        };
        rep.updated += w.updated;
        rep.skipped += w.skipped;
        if let Some(c) = rep.conflicts.as_mut() {
            *c += w.conflicts;
        }
        cursor = w.cursor;
        progress.inc(rows.len() as u64);
    }
    progress.finish();
    if rep.complete && !dry_run {
        finish_task(e, task, cursor, upto)?;
    }
    if task == BackfillTask::PathJson {
        rep.without_raw_hex = Some(e.conn().query_row(
            "SELECT COUNT(*) FROM observations WHERE (path_json IS NULL OR path_json = '') \
             AND (raw_hex IS NULL OR raw_hex = '')",
            [],
            |r| r.get(0),
        )?);
    }
    rep.remaining = if dry_run {
        pending(e.conn(), task)?
    } else {
        let after = read_cursor(e.conn(), task)?;
        e.conn()
            .query_row(&total_sql, params![after, i64::MAX], |r| r.get(0))?
    };
    Ok(rep)
}

/// A dry run's count of what a batch would write.
fn would_write(derived: &[Derived], last: i64) -> Written {
    let updated = derived
        .iter()
        .filter(|d| matches!(d, Derived::Value(_)))
        .count() as u64;
    Written {
        updated,
        skipped: derived.len() as u64 - updated,
        conflicts: 0,
        cursor: last,
    }
}

/// Write one batch and move the cursor (inside the batch's transaction).
fn write_batch(
    tx: &Transaction<'_>,
    task: BackfillTask,
    rows: &[Row],
    derived: &[Derived],
    expected: i64,
    last: i64,
) -> anyhow::Result<Written> {
    let mut w = Written::default();
    let path_json = task == BackfillTask::PathJson;
    // Lowest observation id given hops by path-json in this batch.
    let mut min_hops_id: Option<i64> = None;
    for (row, d) in rows.iter().zip(derived) {
        match d {
            Derived::Value(v) => {
                if write_row(tx, task, row, v)? {
                    w.updated += 1;
                    if path_json && v != "[]" {
                        min_hops_id = Some(min_hops_id.map_or(row.id, |m| m.min(row.id)));
                    }
                    if task == BackfillTask::FromPubkey && !row.key_was_decoded() {
                        counted_originator_changed(tx, row.id)?;
                    }
                } else {
                    w.skipped += 1;
                    if path_json {
                        w.conflicts += 1;
                    }
                }
            }
            Derived::Sentinel(s) => {
                if !write_row(tx, task, row, s)? && path_json {
                    w.conflicts += 1;
                }
                w.skipped += 1;
            }
            Derived::Leave => w.skipped += 1,
        }
    }
    if let Some(m) = min_hops_id {
        // Hops for an observation build-edges (or an unfinished rebuild) has
        // already counted as heard directly: the graph is stale. build-edges
        // waits for this task, so only a `--reset` or a watermark set before
        // that rule (an older corescope, CoreScope's own builder) gets here.
        let staged = read_watermark(tx, REBUILD_KEY)?.is_some_and(|w| m <= w);
        if staged || watermark_covers(store::state_get(tx, WATERMARK_KEY)?.as_deref(), m) {
            rows_rewritten(tx, m, PATH_JSON_REASON, staged)?;
        }
        // Observations that just got hops must be (re)visited by the
        // resolved-path task even if its cursor already passed them.
        let rp = read_cursor(tx, BackfillTask::ResolvedPath)?;
        if m <= rp {
            store::state_set(
                tx,
                &cursor_key(BackfillTask::ResolvedPath),
                &(m - 1).to_string(),
            )?;
        }
    }
    w.cursor = advance_cursor(tx, task, expected, last)?;
    if w.skipped > 0 {
        crate::store::backfill_state::add_skipped(tx, task.cli_name(), w.skipped)?;
    }
    Ok(w)
}

/// A key decoded from `raw_hex` for ADVERT transmission `tx_id`: build-edges
/// read no originator for it (it falls back to `decoded_json.pubKey`,
/// which had none), so observations of it the graph has counted make it
/// stale. build-edges waits for this task, so only a watermark set before
/// that rule gets here.
fn counted_originator_changed(tx: &Transaction<'_>, tx_id: i64) -> anyhow::Result<()> {
    let first: Option<i64> = tx.query_row(
        "SELECT MIN(id) FROM observations WHERE transmission_id = ?1",
        [tx_id],
        |r| r.get(0),
    )?;
    if let Some(m) = first {
        if watermark_covers(store::state_get(tx, WATERMARK_KEY)?.as_deref(), m) {
            rows_rewritten(tx, m, FROM_PUBKEY_REASON, false)?;
        }
    }
    Ok(())
}

/// Every candidate up to `upto` was visited: move the cursor there so the
/// next run does not re-read non-candidates, and record CoreScope's marker
/// for path-json.
fn finish_task(
    e: &mut Engine<'_>,
    task: BackfillTask,
    cursor: i64,
    upto: i64,
) -> anyhow::Result<()> {
    let marker = task == BackfillTask::PathJson && table_exists(e.conn(), "_migrations")?;
    if upto <= cursor && !marker {
        return Ok(());
    }
    e.batch(|tx| {
        if upto > cursor {
            advance_cursor(tx, task, cursor, upto)?;
        }
        if marker {
            tx.execute(
                "INSERT OR IGNORE INTO _migrations (name) VALUES (?1)",
                [PATH_JSON_MARKER],
            )?;
        }
        Ok(((), 0))
    })
}

// Progress: a bar per task on a terminal, periodic log lines otherwise.

struct Progress {
    bar: Option<indicatif::ProgressBar>,
    name: &'static str,
    total: u64,
    done: u64,
    start: Instant,
    last_log: Instant,
}

const LOG_EVERY: Duration = Duration::from_secs(10);

impl Progress {
    fn new(show_bar: bool, name: &'static str, total: u64) -> Progress {
        let bar = show_bar.then(|| engine::progress_bar(total, name, "rows"));
        log::info!("backfill {name}: {total} candidate rows");
        Progress {
            bar,
            name,
            total,
            done: 0,
            start: Instant::now(),
            last_log: Instant::now(),
        }
    }

    fn inc(&mut self, n: u64) {
        self.done += n;
        if let Some(b) = &self.bar {
            b.inc(n);
        } else if self.last_log.elapsed() >= LOG_EVERY {
            self.last_log = Instant::now();
            let rate = self.done as f64 / self.start.elapsed().as_secs_f64().max(1e-3);
            log::info!(
                "backfill {}: {}/{} rows, {:.0} rows/s",
                self.name,
                self.done,
                self.total,
                rate
            );
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        log::info!(
            "backfill {}: visited {} rows in {:.1} s",
            self.name,
            self.done,
            self.start.elapsed().as_secs_f64()
        );
    }
}
