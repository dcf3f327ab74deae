//! `corescope prune`: CoreScope's retention in short, batched
//! write transactions, comparing stored times as instants.
//!
//! Design (docs/prune.md has the long form):
//! - Cutoffs are computed once from `--now` and compared as epoch seconds
//!   (`timeutil::parse_instant`), never as text. NULL and unparseable values
//!   are never deleted and are counted.
//! - Selection: when the time column leads a BINARY index, rows are walked in
//!   index order over the text range `col < U`, U = the cutoff's date + 2
//!   days. Every value that could be older than the cutoff lies there, except
//!   values that do not start with a valid `YYYY-MM-DD` date (a 9-digit epoch
//!   as text, garbage); those are found above U by an index skip-scan that
//!   jumps over whole canonical date blocks (one probe per calendar day).
//!   Without such an index the table is walked in rowid order.
//! - Every batch is one `BEGIN IMMEDIATE` transaction that reads its rows and
//!   acts on them (so a value changed by the ingestor in between is never
//!   acted on stale); a packet batch deletes transmissions together with all
//!   their observations; a node batch copies by column name and deletes.
//! - `--dry-run` walks exactly the same rows on a read-only handle and counts.

use std::time::{Duration, Instant};

use anyhow::Context;
use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Map, Value as Json};

use crate::cli::{PruneArgs, PruneKind};
use crate::config::Config;
use crate::context::Ctx;
use crate::error::Failure;
use crate::report::{self, Outcome};
use crate::retention::{
    canonical_date_prefix, classify, cutoff_for, move_columns, prefix_successor, window_bound,
    Class,
};
use crate::store::maintenance as vacuum;
use crate::store::{self, Batcher, Deadline, ReadOnlyDb, WriteDb};
use crate::timeutil;

/// Set in the transaction that inactivates the first observer; cleared when
/// the metrics of every inactive observer are deleted (so an interrupted run
/// finishes that step next time, as one clean run would).
pub const OBSERVER_METRICS_PENDING: &str = "prune.observer_metrics_pending";
/// Most rows read into memory for one batch (bounds memory and the read
/// part of a transaction; the batch size itself adapts below this).
const MAX_FETCH: usize = 20_000;
/// Largest accepted retention, in days (about 2700 years).
const MAX_DAYS: i64 = 1_000_000;

/// The order CoreScope runs its retention at startup.
pub const ORDER: [PruneKind; 7] = [
    PruneKind::Nodes,
    PruneKind::Observers,
    PruneKind::Metrics,
    PruneKind::Dropped,
    PruneKind::Packets,
    PruneKind::Edges,
    PruneKind::Clients,
];

// ---------------------------------------------------------------------------
// Settings (the retention rules themselves are in `retention.rs`).

/// Retention settings after config and flags (flags win).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub packet_days: Option<i64>,
    pub node_days: i64,
    pub observer_days: Option<i64>,
    pub metrics_days: i64,
    pub dropped_days: i64,
    pub edge_days: i64,
    pub client_days: Option<i64>,
    pub vacuum_pages: i64,
}

impl Settings {
    /// Days for a kind; None = disabled / keep forever.
    pub fn days(&self, k: PruneKind) -> Option<i64> {
        match k {
            PruneKind::Packets => self.packet_days,
            PruneKind::Nodes => Some(self.node_days),
            PruneKind::Observers => self.observer_days,
            PruneKind::Metrics => Some(self.metrics_days),
            PruneKind::Dropped => Some(self.dropped_days),
            PruneKind::Edges => Some(self.edge_days),
            PruneKind::Clients => self.client_days,
        }
    }
}

fn positive(flag: &str, v: i64) -> Result<i64, String> {
    if (1..=MAX_DAYS).contains(&v) {
        Ok(v)
    } else {
        Err(format!(
            "{flag} {v}: expected a number of days from 1 to {MAX_DAYS}"
        ))
    }
}

/// Flag values override the config accessors (which carry CoreScope's
/// defaults and special values, listed in docs/database.md).
pub fn resolve_settings(cfg: &Config, a: &PruneArgs) -> Result<Settings, String> {
    let packet_days = match a.packet_days {
        None => cfg.packet_days(),
        Some(0) => None,
        Some(v) => Some(positive("--packet-days", v).map_err(|e| format!("{e} (0 disables)"))?),
    };
    let node_days = match a.node_days {
        None => cfg.node_days(),
        Some(v) => positive("--node-days", v)?,
    };
    let observer_days = match a.observer_days {
        None => cfg.observer_days(),
        Some(v) if v <= -1 => None,
        Some(v) => Some(
            positive("--observer-days", v)
                .map_err(|e| format!("{e} (-1 keeps observers forever)"))?,
        ),
    };
    let metrics_days = match a.metrics_days {
        None => cfg.metrics_days(),
        Some(v) => positive("--metrics-days", v)?,
    };
    let dropped_days = match a.dropped_days {
        None => metrics_days,
        Some(v) => positive("--dropped-days", v)?,
    };
    let edge_days = match a.edge_days {
        None => cfg.edge_days(),
        Some(v) => positive("--edge-days", v)?,
    };
    let client_days = match a.client_days {
        None => cfg.client_rx_days(),
        Some(0) => None,
        Some(v) => Some(positive("--client-days", v).map_err(|e| format!("{e} (0 disables)"))?),
    };
    let vacuum_pages = match a.vacuum_pages {
        None => cfg.vacuum_pages(),
        Some(v) if v >= 0 => v,
        Some(v) => {
            return Err(format!(
                "--vacuum-pages {v}: expected a page count >= 0 (0 skips the incremental vacuum)"
            ))
        }
    };
    Ok(Settings {
        packet_days,
        node_days,
        observer_days,
        metrics_days,
        dropped_days,
        edge_days,
        client_days,
        vacuum_pages,
    })
}

/// Kinds to run, in CoreScope's order: `--only` (or all) minus `--skip`.
pub fn selected_kinds(only: &[PruneKind], skip: &[PruneKind]) -> Vec<PruneKind> {
    ORDER
        .iter()
        .copied()
        .filter(|k| only.is_empty() || only.contains(k))
        .filter(|k| !skip.contains(k))
        .collect()
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

// ---------------------------------------------------------------------------
// Execution on a real (write) or dry-run (read-only) handle.

enum Handle<'a> {
    Real(&'a mut WriteDb),
    Dry(&'a ReadOnlyDb),
}

impl Handle<'_> {
    fn dry(&self) -> bool {
        matches!(self, Handle::Dry(_))
    }

    fn conn(&self) -> &Connection {
        match self {
            Handle::Real(db) => db.conn(),
            Handle::Dry(ro) => ro.reader(),
        }
    }

    /// One batch: a `BEGIN IMMEDIATE` transaction on the real handle, plain
    /// reads on the dry-run handle.
    fn batch<T>(&mut self, f: impl FnOnce(&Connection) -> anyhow::Result<T>) -> anyhow::Result<T> {
        match self {
            Handle::Real(db) => db.write(|tx| f(tx)),
            Handle::Dry(ro) => f(ro.reader()),
        }
    }

    /// How long the last batch held the write lock (the dry run holds none:
    /// its read time since `t0` stands in, so both size batches alike).
    fn held(&self, t0: Instant) -> Duration {
        match self {
            Handle::Real(db) => db.last_hold(),
            Handle::Dry(_) => t0.elapsed(),
        }
    }
}

/// What happens to one due row.
#[derive(Debug, Clone)]
enum Action {
    /// Delete the transmission and all its observations.
    Packet,
    /// `INSERT OR REPLACE INTO inactive_nodes (cols) SELECT cols FROM nodes`, then delete.
    MoveNode { cols: String },
    /// `inactive = 1` (never deleted: observations reference observers.rowid).
    InactivateObserver,
    /// Plain delete by rowid.
    Delete,
}

#[derive(Debug, Clone)]
struct Sel {
    table: &'static str,
    column: &'static str,
    /// Extra SQL condition (`" AND ..."`) on the table's own columns.
    filter: String,
}

#[derive(Debug, Default, Clone)]
struct Stats {
    examined: u64,
    deleted: u64,
    /// Observations deleted with their transmissions.
    secondary: u64,
    nulls: u64,
    unparseable: u64,
    /// Rowids of observers a dry run would inactivate.
    due_rowids: Vec<i64>,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.examined += o.examined;
        self.deleted += o.deleted;
        self.secondary += o.secondary;
        self.nulls += o.nulls;
        self.unparseable += o.unparseable;
        self.due_rowids.extend_from_slice(&o.due_rowids);
    }
}

struct Runtime {
    batcher: Batcher,
    deadline: Deadline,
    /// Stop acting inside a batch once it held the lock this long.
    budget: Duration,
    /// WAL size above which a PASSIVE checkpoint runs between batches.
    wal_limit: u64,
    wal_path: std::path::PathBuf,
}

/// Bytes of WAL after which prune checkpoints between batches (SQLite's
/// default auto-checkpoint is 1000 pages, about 4 MB).
const WAL_CHECKPOINT_BYTES: u64 = 4 << 20;

impl Runtime {
    /// Called after every committed batch. SQLite's auto-checkpoint runs
    /// inside `COMMIT` (after the write lock is released, but inside the
    /// measured hold); prune disables it on its connection and checkpoints
    /// PASSIVE here instead, outside any transaction: this never blocks the
    /// ingestor and keeps the WAL bounded.
    fn after_batch(&self, h: &Handle) -> anyhow::Result<()> {
        if h.dry() || store::file_len(&self.wal_path) < self.wal_limit {
            return Ok(());
        }
        match h
            .conn()
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0))
        {
            Ok(_) => Ok(()),
            Err(e) if crate::error::is_busy(&e) => Ok(()),
            Err(e) => Err(anyhow::Error::new(e).context("WAL checkpoint between batches")),
        }
    }
}

fn apply(
    conn: &Connection,
    table: &str,
    action: &Action,
    rowid: i64,
    dry: bool,
    st: &mut Stats,
) -> anyhow::Result<()> {
    match action {
        Action::Packet => {
            if dry {
                let n: i64 = conn
                    .prepare_cached("SELECT count(*) FROM observations WHERE transmission_id = ?1")?
                    .query_row([rowid], |r| r.get(0))?;
                st.secondary += n as u64;
            } else {
                let n = conn
                    .prepare_cached("DELETE FROM observations WHERE transmission_id = ?1")?
                    .execute([rowid])?;
                st.secondary += n as u64;
                conn.prepare_cached("DELETE FROM transmissions WHERE rowid = ?1")?
                    .execute([rowid])?;
            }
        }
        Action::MoveNode { cols } => {
            if !dry {
                conn.prepare_cached(&format!(
                    "INSERT OR REPLACE INTO inactive_nodes ({cols}) SELECT {cols} FROM nodes WHERE rowid = ?1"
                ))?
                .execute([rowid])?;
                conn.prepare_cached("DELETE FROM nodes WHERE rowid = ?1")?
                    .execute([rowid])?;
            }
        }
        Action::InactivateObserver => {
            if dry {
                st.due_rowids.push(rowid);
            } else {
                let n = conn
                    .prepare_cached("UPDATE observers SET inactive = 1 WHERE rowid = ?1")?
                    .execute([rowid])?;
                if n > 0 {
                    store::state_set(conn, OBSERVER_METRICS_PENDING, "1")?;
                }
            }
        }
        Action::Delete => {
            if !dry {
                // `table` is one of ours, never user input.
                conn.prepare_cached(&format!("DELETE FROM {} WHERE rowid = ?1", quote(table)))?
                    .execute([rowid])?;
            }
        }
    }
    st.deleted += 1;
    Ok(())
}

/// Handle one examined row: classify, act when due.
fn examine(
    conn: &Connection,
    job: &Job,
    rowid: i64,
    v: &Value,
    dry: bool,
    st: &mut Stats,
) -> anyhow::Result<()> {
    st.examined += 1;
    match classify(v, job.cutoff) {
        Class::Null => st.nulls += 1,
        Class::Unparseable => st.unparseable += 1,
        Class::Keep => {}
        Class::Due => apply(conn, job.sel.table, job.action, rowid, dry, st)?,
    }
    Ok(())
}

/// One selection with its cutoff and what to do with due rows.
struct Job<'a> {
    sel: &'a Sel,
    action: &'a Action,
    cutoff: i64,
}

/// Reads the next rows (rowid, stored time) of a batch, at most `limit`.
type Fetch<'a> = dyn Fn(&Connection, usize) -> anyhow::Result<Vec<(i64, Value)>> + 'a;

/// True when `column` is the first key column of a non-partial index with
/// BINARY collation on `table`.
fn leading_index(conn: &Connection, table: &str, column: &str) -> anyhow::Result<bool> {
    let mut st =
        conn.prepare("SELECT il.name FROM pragma_index_list(?1) il WHERE il.partial = 0")?;
    let names: Vec<String> = st
        .query_map([table], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<_>>()?;
    for name in names {
        let first: Option<(Option<String>, Option<String>)> = conn
            .query_row(
                "SELECT name, coll FROM pragma_index_xinfo(?1) WHERE seqno = 0",
                [&name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some((Some(c), coll)) = first {
            let binary = coll.map_or(true, |c| c.eq_ignore_ascii_case("BINARY"));
            if c.eq_ignore_ascii_case(column) && binary {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

type BatchResult = (usize, bool);

/// Walk one selection and act on the due rows. Returns false when stopped
/// by the deadline.
fn process(
    h: &mut Handle,
    sel: &Sel,
    cutoff: i64,
    action: &Action,
    rt: &mut Runtime,
    st: &mut Stats,
) -> anyhow::Result<bool> {
    let indexed = leading_index(h.conn(), sel.table, sel.column)?;
    let bound = window_bound(cutoff);
    match (indexed, bound) {
        (true, Some(u)) => process_indexed(h, sel, cutoff, action, rt, st, &u),
        _ => process_scan(h, sel, cutoff, action, rt, st),
    }
}

/// Run one batch with the shared budget logic. `fetch` returns the rows of
/// this batch (rowid, value); rows are examined in order until the budget is
/// used; `advance` is called with the last examined row.
fn run_batches(
    h: &mut Handle,
    job: &Job,
    rt: &mut Runtime,
    st: &mut Stats,
    fetch: &Fetch,
    advance: &mut dyn FnMut(i64, Value),
) -> anyhow::Result<bool> {
    let dry = h.dry();
    loop {
        if rt.deadline.expired() {
            return Ok(false);
        }
        let limit = rt.batcher.size().min(MAX_FETCH);
        let budget = rt.budget;
        let t0 = Instant::now();
        let mut local = Stats::default();
        let (n, exhausted): BatchResult = h.batch(|conn| {
            let rows = fetch(conn, limit)?;
            let fetched = rows.len();
            let start = Instant::now();
            let mut n = 0usize;
            for (rowid, v) in rows {
                examine(conn, job, rowid, &v, dry, &mut local)?;
                advance(rowid, v);
                n += 1;
                if !dry && n < fetched && start.elapsed() >= budget {
                    return Ok((n, false));
                }
            }
            Ok((n, fetched < limit))
        })?;
        st.add(&local);
        rt.batcher.observe(n, h.held(t0));
        rt.after_batch(h)?;
        if exhausted {
            return Ok(true);
        }
    }
}

fn read_rows(
    conn: &Connection,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
) -> anyhow::Result<Vec<(i64, Value)>> {
    let mut st = conn.prepare_cached(sql)?;
    let rows = st.query_map(params, |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Value>(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

fn process_scan(
    h: &mut Handle,
    sel: &Sel,
    cutoff: i64,
    action: &Action,
    rt: &mut Runtime,
    st: &mut Stats,
) -> anyhow::Result<bool> {
    let (t, c, f) = (quote(sel.table), quote(sel.column), &sel.filter);
    let sql = format!("SELECT rowid, {c} FROM {t} WHERE rowid > ?1{f} ORDER BY rowid LIMIT ?2");
    let last = std::cell::Cell::new(i64::MIN);
    let fetch = |conn: &Connection, limit: usize| -> anyhow::Result<Vec<(i64, Value)>> {
        read_rows(conn, &sql, &[&last.get(), &(limit as i64)])
    };
    let mut advance = |rowid: i64, _v: Value| last.set(rowid);
    run_batches(
        h,
        &Job {
            sel,
            action,
            cutoff,
        },
        rt,
        st,
        &fetch,
        &mut advance,
    )
}

#[allow(clippy::too_many_arguments)]
fn process_indexed(
    h: &mut Handle,
    sel: &Sel,
    cutoff: i64,
    action: &Action,
    rt: &mut Runtime,
    st: &mut Stats,
    upper: &str,
) -> anyhow::Result<bool> {
    let (t, c, f) = (quote(sel.table), quote(sel.column), &sel.filter);
    // NULLs are outside every range: count them once.
    let nulls: i64 = h.conn().query_row(
        &format!("SELECT count(*) FROM {t} WHERE {c} IS NULL{f}"),
        [],
        |r| r.get(0),
    )?;
    st.nulls += nulls as u64;

    // Phase 1: the window `col < upper` in (col, rowid) order.
    let first_sql =
        format!("SELECT rowid, {c} FROM {t} WHERE {c} < ?1{f} ORDER BY {c}, rowid LIMIT ?2");
    let next_sql = format!(
        "SELECT rowid, {c} FROM {t} WHERE {c} < ?1 AND ({c}, rowid) > (?3, ?4){f} ORDER BY {c}, rowid LIMIT ?2"
    );
    let cursor: std::cell::RefCell<Option<(Value, i64)>> = std::cell::RefCell::new(None);
    let upper_s = upper.to_string();
    let fetch = |conn: &Connection, limit: usize| -> anyhow::Result<Vec<(i64, Value)>> {
        let lim = limit as i64;
        match &*cursor.borrow() {
            None => read_rows(conn, &first_sql, &[&upper_s, &lim]),
            Some((v, r)) => read_rows(conn, &next_sql, &[&upper_s, &lim, v, r]),
        }
    };
    let mut advance = |rowid: i64, v: Value| *cursor.borrow_mut() = Some((v, rowid));
    if !run_batches(
        h,
        &Job {
            sel,
            action,
            cutoff,
        },
        rt,
        st,
        &fetch,
        &mut advance,
    )? {
        return Ok(false);
    }

    // Phase 2: skip-scan above the window for values without a canonical date
    // prefix (whole calendar days are skipped with one index probe each).
    let ge_sql = format!("SELECT {c} FROM {t} WHERE {c} >= ?1{f} ORDER BY {c} LIMIT 1");
    let gt_sql = format!("SELECT {c} FROM {t} WHERE {c} > ?1{f} ORDER BY {c} LIMIT 1");
    let count_sql = format!("SELECT count(*) FROM {t} WHERE {c} = ?1{f}");
    let rows_sql = format!(
        "SELECT rowid, {c} FROM {t} WHERE {c} = ?1 AND rowid > ?2{f} ORDER BY rowid LIMIT ?3"
    );
    let mut pos = Value::Text(upper.to_string());
    let mut inclusive = true;
    loop {
        if rt.deadline.expired() {
            return Ok(false);
        }
        let next: Option<Value> = h
            .conn()
            .query_row(if inclusive { &ge_sql } else { &gt_sql }, [&pos], |r| {
                r.get(0)
            })
            .optional()?;
        let Some(v) = next else { break };
        if let Value::Text(s) = &v {
            if let Some(p) = canonical_date_prefix(s) {
                pos = Value::Text(prefix_successor(p));
                inclusive = true;
                continue;
            }
        }
        match classify(&v, cutoff) {
            Class::Null | Class::Keep => {
                let n: i64 = h.conn().query_row(&count_sql, [&v], |r| r.get(0))?;
                st.examined += n as u64;
            }
            Class::Unparseable => {
                let n: i64 = h.conn().query_row(&count_sql, [&v], |r| r.get(0))?;
                st.examined += n as u64;
                st.unparseable += n as u64;
            }
            Class::Due => {
                let last = std::cell::Cell::new(i64::MIN);
                let value = v.clone();
                let fetch =
                    |conn: &Connection, limit: usize| -> anyhow::Result<Vec<(i64, Value)>> {
                        read_rows(conn, &rows_sql, &[&value, &last.get(), &(limit as i64)])
                    };
                let mut advance = |rowid: i64, _v: Value| last.set(rowid);
                if !run_batches(
                    h,
                    &Job {
                        sel,
                        action,
                        cutoff,
                    },
                    rt,
                    st,
                    &fetch,
                    &mut advance,
                )? {
                    return Ok(false);
                }
            }
        }
        pos = v;
        inclusive = false;
    }
    Ok(true)
}

// ---------------------------------------------------------------------------
// The kinds.

#[derive(Debug, Default, Clone)]
struct KindReport {
    days: Option<i64>,
    cutoff: Option<i64>,
    status: &'static str,
    stats: Stats,
    /// observer_metrics rows of inactive observers (observers kind).
    metrics_of_inactive: u64,
    /// client_observers (clients kind).
    client_observers: Stats,
}

/// Delete the observer_metrics of every inactive observer when the observer
/// step changed a row in this or an interrupted earlier run (CoreScope's rule).
fn observer_metrics_cleanup(
    h: &mut Handle,
    rt: &mut Runtime,
    due_now: &[i64],
) -> anyhow::Result<(u64, bool)> {
    let pending = store::state_get(h.conn(), OBSERVER_METRICS_PENDING)?.is_some();
    if h.dry() {
        if !pending && due_now.is_empty() {
            return Ok((0, true));
        }
        let ids = inactive_observer_ids(h.conn(), due_now)?;
        let mut total = 0u64;
        for id in ids {
            let n: i64 = h.conn().query_row(
                "SELECT count(*) FROM observer_metrics WHERE observer_id = ?1",
                [&id],
                |r| r.get(0),
            )?;
            total += n as u64;
        }
        return Ok((total, true));
    }
    if !pending {
        return Ok((0, true));
    }
    let ids = inactive_observer_ids(h.conn(), &[])?;
    let mut total = 0u64;
    for id in ids {
        loop {
            if rt.deadline.expired() {
                return Ok((total, false));
            }
            let limit = rt.batcher.size() as i64;
            let t0 = Instant::now();
            let n = h.batch(|conn| {
                Ok(conn
                    .prepare_cached(
                        "DELETE FROM observer_metrics WHERE rowid IN \
                         (SELECT rowid FROM observer_metrics WHERE observer_id = ?1 LIMIT ?2)",
                    )?
                    .execute(params![id, limit])?)
            })?;
            rt.batcher.observe(n, h.held(t0));
            rt.after_batch(h)?;
            total += n as u64;
            if (n as i64) < limit {
                break;
            }
        }
    }
    h.batch(|conn| store::state_delete(conn, OBSERVER_METRICS_PENDING))?;
    Ok((total, true))
}

/// Ids of observers with `inactive = 1`, plus (dry run) those a real run
/// would inactivate.
fn inactive_observer_ids(conn: &Connection, extra_rowids: &[i64]) -> anyhow::Result<Vec<Value>> {
    let extra = rowid_list(extra_rowids);
    let sql = format!(
        "SELECT DISTINCT id FROM observers WHERE id IS NOT NULL AND (inactive = 1{})",
        if extra.is_empty() {
            String::new()
        } else {
            format!(" OR rowid IN ({extra})")
        }
    );
    let mut st = conn.prepare(&sql)?;
    let rows = st.query_map([], |r| r.get::<_, Value>(0))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

fn rowid_list(ids: &[i64]) -> String {
    ids.iter()
        .map(std::string::ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[allow(clippy::too_many_arguments)]
fn run_kind(
    h: &mut Handle,
    kind: PruneKind,
    cutoff: i64,
    rt: &mut Runtime,
    rep: &mut KindReport,
    dry_excluded_observers: &mut Option<Vec<i64>>,
) -> anyhow::Result<bool> {
    let sel = |table: &'static str, column: &'static str, filter: &str| Sel {
        table,
        column,
        filter: filter.to_string(),
    };
    match kind {
        PruneKind::Packets => process(
            h,
            &sel("transmissions", "first_seen", ""),
            cutoff,
            &Action::Packet,
            rt,
            &mut rep.stats,
        ),
        PruneKind::Nodes => {
            let ncols = store::columns(h.conn(), "nodes")?;
            let icols = store::columns(h.conn(), "inactive_nodes")?;
            let cols = move_columns(&ncols, &icols);
            if cols.is_empty() {
                return Err(Failure::Fatal(
                    "nodes and inactive_nodes share no column; cannot move nodes".into(),
                )
                .into());
            }
            let cols = cols.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ");
            process(
                h,
                &sel("nodes", "last_seen", ""),
                cutoff,
                &Action::MoveNode { cols },
                rt,
                &mut rep.stats,
            )
        }
        PruneKind::Observers => {
            let done = process(
                h,
                &sel("observers", "last_seen", " AND COALESCE(inactive, 0) != 1"),
                cutoff,
                &Action::InactivateObserver,
                rt,
                &mut rep.stats,
            )?;
            if !done {
                return Ok(false);
            }
            let due = rep.stats.due_rowids.clone();
            let (n, complete) = observer_metrics_cleanup(h, rt, &due)?;
            rep.metrics_of_inactive = n;
            if h.dry()
                && (n > 0
                    || !due.is_empty()
                    || store::state_get(h.conn(), OBSERVER_METRICS_PENDING)?.is_some())
            {
                *dry_excluded_observers = Some(due);
            }
            Ok(complete)
        }
        PruneKind::Metrics => {
            // A dry run must not count rows the observer step already deleted.
            let filter = match dry_excluded_observers {
                Some(due) => {
                    let extra = rowid_list(due);
                    format!(
                        " AND NOT EXISTS (SELECT 1 FROM observers o WHERE o.id = observer_metrics.observer_id AND (o.inactive = 1{}))",
                        if extra.is_empty() { String::new() } else { format!(" OR o.rowid IN ({extra})") }
                    )
                }
                None => String::new(),
            };
            process(
                h,
                &sel("observer_metrics", "timestamp", &filter),
                cutoff,
                &Action::Delete,
                rt,
                &mut rep.stats,
            )
        }
        PruneKind::Dropped => process(
            h,
            &sel("dropped_packets", "dropped_at", ""),
            cutoff,
            &Action::Delete,
            rt,
            &mut rep.stats,
        ),
        PruneKind::Edges => process(
            h,
            &sel("neighbor_edges", "last_seen", ""),
            cutoff,
            &Action::Delete,
            rt,
            &mut rep.stats,
        ),
        PruneKind::Clients => {
            if store::table_exists(h.conn(), "client_receptions")?
                && !process(
                    h,
                    &sel("client_receptions", "rx_at", ""),
                    cutoff,
                    &Action::Delete,
                    rt,
                    &mut rep.stats,
                )?
            {
                return Ok(false);
            }
            if store::table_exists(h.conn(), "client_observers")? {
                return process(
                    h,
                    &sel("client_observers", "last_seen", ""),
                    cutoff,
                    &Action::Delete,
                    rt,
                    &mut rep.client_observers,
                );
            }
            Ok(true)
        }
    }
}

// ---------------------------------------------------------------------------
// The command.

pub fn run(ctx: &Ctx, args: &PruneArgs) -> anyhow::Result<Outcome> {
    let settings = resolve_settings(&ctx.config, args).map_err(Failure::Usage)?;
    let now = timeutil::parse_now(
        args.now.as_deref(),
        timeutil::now_epoch(),
        args.allow_any_now,
    )
    .map_err(|e| Failure::Usage(format!("--now: {e}")))?;
    let kinds = selected_kinds(&args.only, &args.skip);

    let mut write_db;
    let ro_db;
    let mut handle = if args.dry_run {
        ro_db = ReadOnlyDb::open(&ctx.db_path, ctx.busy_timeout_ms)?;
        ro_db.require_ready()?;
        Handle::Dry(&ro_db)
    } else {
        write_db = WriteDb::open(&ctx.db_path, &ctx.open_options(false))?;
        write_db.require_ready()?;
        Handle::Real(&mut write_db)
    };
    let path = ctx.db_path.clone();
    let wal_before = store::file_len(&store::wal_path(&path));
    let file_before = store::file_len(&path);

    let mut rt = Runtime {
        batcher: Batcher::new(args.write.max_lock_ms),
        deadline: Deadline::new(args.write.max_seconds),
        budget: Duration::from_micros(args.write.max_lock_ms.saturating_mul(400)),
        wal_limit: WAL_CHECKPOINT_BYTES,
        wal_path: store::wal_path(&path),
    };
    if let Handle::Real(db) = &handle {
        // Per connection, not stored in the file; see Runtime::after_batch.
        db.tune_for_batches()
            .context("preparing prune's connection for batched writes")?;
    }
    let mut reports: Vec<(PruneKind, KindReport)> = Vec::new();
    let mut complete = true;
    let mut dry_excluded: Option<Vec<i64>> = None;
    for kind in ORDER {
        let days = settings.days(kind);
        let mut rep = KindReport {
            days,
            cutoff: days.map(|d| cutoff_for(now, d)),
            status: "done",
            ..KindReport::default()
        };
        if !kinds.contains(&kind) {
            rep.status = "not selected";
            reports.push((kind, rep));
            continue;
        }
        let Some(cutoff) = rep.cutoff else {
            rep.status = "disabled";
            reports.push((kind, rep));
            continue;
        };
        if !complete {
            rep.status = "not reached";
            reports.push((kind, rep));
            continue;
        }
        let t0 = Instant::now();
        let done = run_kind(
            &mut handle,
            kind,
            cutoff,
            &mut rt,
            &mut rep,
            &mut dry_excluded,
        )
        .with_context(|| format!("pruning {}", kind.name()))?;
        log::info!(
            "{}: {} rows {} in {:.0} ms (cutoff {})",
            kind.name(),
            rep.stats.deleted,
            if handle.dry() { "due" } else { "pruned" },
            report::ms(t0.elapsed()),
            timeutil::rfc3339(cutoff)
        );
        if !done {
            rep.status = "incomplete";
            complete = false;
        }
        reports.push((kind, rep));
    }

    // Vacuum and checkpoint (real runs only).
    let mut vac: Option<vacuum::VacuumResult> = None;
    let mut ck: Option<vacuum::CheckpointResult> = None;
    let mut max_hold = 0.0;
    if let Handle::Real(db) = &mut handle {
        vac = Some(vacuum::incremental(
            db,
            settings.vacuum_pages,
            args.write.max_lock_ms,
        )?);
        ck = Some(vacuum::checkpoint(
            db,
            args.truncate_wal,
            args.write.max_lock_ms,
        )?);
        max_hold = db.max_lock_hold_ms();
    }
    let wal_after = store::file_len(&store::wal_path(&path));
    let file_after = store::file_len(&path);

    Ok(build_outcome(&BuildInput {
        ctx,
        args,
        settings: &settings,
        now,
        reports: &reports,
        complete,
        vac: vac.as_ref(),
        ck: ck.as_ref(),
        max_hold,
        wal_before,
        wal_after,
        file_before,
        file_after,
    }))
}

struct BuildInput<'a> {
    ctx: &'a Ctx,
    args: &'a PruneArgs,
    settings: &'a Settings,
    now: i64,
    reports: &'a [(PruneKind, KindReport)],
    complete: bool,
    vac: Option<&'a vacuum::VacuumResult>,
    ck: Option<&'a vacuum::CheckpointResult>,
    max_hold: f64,
    wal_before: u64,
    wal_after: u64,
    file_before: u64,
    file_after: u64,
}

fn build_outcome(b: &BuildInput) -> Outcome {
    let get = |k: PruneKind| -> &KindReport {
        b.reports
            .iter()
            .find(|(kk, _)| *kk == k)
            .map_or_else(|| &b.reports[0].1, |(_, r)| r)
    };
    let pk = get(PruneKind::Packets);
    let nd = get(PruneKind::Nodes);
    let ob = get(PruneKind::Observers);
    let me = get(PruneKind::Metrics);
    let dr = get(PruneKind::Dropped);
    let ed = get(PruneKind::Edges);
    let cl = get(PruneKind::Clients);
    let mut deleted = Map::new();
    deleted.insert("transmissions".into(), pk.stats.deleted.into());
    deleted.insert("observations".into(), pk.stats.secondary.into());
    deleted.insert("nodes_moved".into(), nd.stats.deleted.into());
    deleted.insert("observers_inactivated".into(), ob.stats.deleted.into());
    deleted.insert(
        "metrics".into(),
        (me.stats.deleted + ob.metrics_of_inactive).into(),
    );
    deleted.insert(
        "metrics_of_inactive_observers".into(),
        ob.metrics_of_inactive.into(),
    );
    deleted.insert("dropped_packets".into(), dr.stats.deleted.into());
    deleted.insert("neighbor_edges".into(), ed.stats.deleted.into());
    deleted.insert("client_receptions".into(), cl.stats.deleted.into());
    deleted.insert(
        "client_observers".into(),
        cl.client_observers.deleted.into(),
    );

    let mut unparseable = Map::new();
    let mut nulls = Map::new();
    let mut cutoffs = Map::new();
    let mut kinds = Map::new();
    for (k, r) in b.reports {
        let (u, n) = if *k == PruneKind::Clients {
            (
                r.stats.unparseable + r.client_observers.unparseable,
                r.stats.nulls + r.client_observers.nulls,
            )
        } else {
            (r.stats.unparseable, r.stats.nulls)
        };
        unparseable.insert(k.name().into(), u.into());
        nulls.insert(k.name().into(), n.into());
        let active = r.status == "done" || r.status == "incomplete";
        cutoffs.insert(
            k.name().into(),
            match (active, r.cutoff) {
                (true, Some(c)) => Json::from(timeutil::rfc3339(c)),
                _ => Json::Null,
            },
        );
        kinds.insert(
            k.name().into(),
            json!({
                "status": r.status,
                "days": r.days,
                "cutoff": r.cutoff.map(timeutil::rfc3339),
                "examined": r.stats.examined + r.client_observers.examined,
                "deleted": r.stats.deleted + r.client_observers.deleted,
                "null_times": n,
                "unparseable": u,
            }),
        );
    }
    let mut out = Outcome::new();
    out.set("dry_run", b.args.dry_run);
    out.set("now", timeutil::rfc3339(b.now));
    out.set("deleted", Json::Object(deleted));
    out.set("cutoffs", Json::Object(cutoffs));
    out.set("unparseable", Json::Object(unparseable));
    out.set("null_times", Json::Object(nulls));
    out.set("kinds", Json::Object(kinds));
    out.set("vacuumed_pages", b.vac.map_or(0, |v| v.vacuumed_pages));
    out.set("freed_bytes", b.vac.map_or(0, |v| v.freed_bytes));
    out.set(
        "vacuum",
        b.vac.map_or(
            Json::Null,
            super::super::store::maintenance::VacuumResult::to_json,
        ),
    );
    out.set(
        "checkpoint",
        b.ck.map_or(
            Json::Null,
            super::super::store::maintenance::CheckpointResult::to_json,
        ),
    );
    out.set("wal_bytes_before", b.wal_before);
    out.set("wal_bytes_after", b.wal_after);
    out.set("file_bytes_before", b.file_before);
    out.set("file_bytes_after", b.file_after);
    out.set("vacuum_pages", b.settings.vacuum_pages);
    out.set("complete", b.complete);
    out.set("max_lock_hold_ms", b.max_hold);

    // Human report.
    let mut t = report::table(&[
        "kind",
        "days",
        "cutoff",
        if b.args.dry_run {
            "would prune"
        } else {
            "pruned"
        },
        "NULL time",
        "unparseable",
        "status",
    ]);
    for (k, r) in b.reports {
        let what = match k {
            PruneKind::Packets => format!(
                "{} transmissions, {} observations",
                r.stats.deleted, r.stats.secondary
            ),
            PruneKind::Nodes => format!("{} nodes moved to inactive_nodes", r.stats.deleted),
            PruneKind::Observers => format!(
                "{} observers inactivated, {} of their metrics",
                r.stats.deleted, r.metrics_of_inactive
            ),
            PruneKind::Clients => format!(
                "{} receptions, {} client observers",
                r.stats.deleted, r.client_observers.deleted
            ),
            _ => format!("{} rows", r.stats.deleted),
        };
        let days = match (k, r.days) {
            (_, Some(d)) => d.to_string(),
            (PruneKind::Observers, None) => "forever".into(),
            (_, None) => "off".into(),
        };
        let active = r.status == "done" || r.status == "incomplete";
        t.add_row(vec![
            k.name().to_string(),
            days,
            if active {
                r.cutoff.map(timeutil::rfc3339).unwrap_or_default()
            } else {
                String::new()
            },
            if active { what } else { String::new() },
            (r.stats.nulls + r.client_observers.nulls).to_string(),
            (r.stats.unparseable + r.client_observers.unparseable).to_string(),
            r.status.to_string(),
        ]);
    }
    let mut h = format!("{t}\n");
    let path = b.ctx.db_path.display();
    if b.args.dry_run {
        h.push_str(&format!(
            "{path}: dry run with now = {}: nothing was changed\n",
            timeutil::rfc3339(b.now)
        ));
    } else {
        if let Some(v) = b.vac {
            if v.ran {
                h.push_str(&format!(
                    "incremental vacuum: {} pages freed ({} bytes)\n",
                    v.vacuumed_pages, v.freed_bytes
                ));
            }
            if let Some(n) = &v.note {
                h.push_str(&format!("note: {n}\n"));
            }
        }
        if let Some(c) = b.ck {
            h.push_str(&c.summary());
            h.push('\n');
        }
        h.push_str(&format!(
            "{path}: longest write-lock hold {} ms{}\n",
            b.max_hold,
            if b.complete {
                String::new()
            } else {
                "; stopped by --max-seconds (incomplete, the next run continues)".into()
            }
        ));
    }
    let unp: u64 = b
        .reports
        .iter()
        .map(|(_, r)| r.stats.unparseable + r.client_observers.unparseable)
        .sum();
    if unp > 0 {
        h.push_str(&format!(
            "note: {unp} rows have a time that does not parse; they are never pruned (corescope check lists anomalies)\n"
        ));
    }
    out.human = h;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(f: impl FnOnce(&mut PruneArgs)) -> PruneArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct W {
            #[command(flatten)]
            a: PruneArgs,
        }
        let mut a = W::parse_from(["x"]).a;
        f(&mut a);
        a
    }

    #[test]
    fn settings_defaults_config_and_flags() {
        let cfg = Config::default();
        let s = resolve_settings(&cfg, &args(|_| {})).unwrap();
        assert_eq!(
            s,
            Settings {
                packet_days: None,
                node_days: 7,
                observer_days: Some(14),
                metrics_days: 30,
                dropped_days: 30,
                edge_days: 5,
                client_days: None,
                vacuum_pages: 1024,
            }
        );
        let cfg = Config::parse(
            r#"{"retention":{"packetDays":30,"observerDays":-1,"metricsDays":10,"nodeDays":3},"neighborEdgesMaxAgeDays":9,"db":{"incrementalVacuumPages":16}}"#,
            std::path::Path::new("c.json"),
        )
        .unwrap();
        let s = resolve_settings(&cfg, &args(|_| {})).unwrap();
        assert_eq!(s.packet_days, Some(30));
        assert_eq!(s.observer_days, None);
        assert_eq!(s.metrics_days, 10);
        assert_eq!(s.dropped_days, 10);
        assert_eq!(s.node_days, 3);
        assert_eq!(s.edge_days, 9);
        assert_eq!(s.vacuum_pages, 16);
        let s = resolve_settings(
            &cfg,
            &args(|a| {
                a.packet_days = Some(0);
                a.observer_days = Some(2);
                a.metrics_days = Some(4);
                a.dropped_days = Some(1);
                a.client_days = Some(8);
                a.vacuum_pages = Some(0);
            }),
        )
        .unwrap();
        assert_eq!(s.packet_days, None);
        assert_eq!(s.observer_days, Some(2));
        assert_eq!(s.metrics_days, 4);
        assert_eq!(s.dropped_days, 1);
        assert_eq!(s.client_days, Some(8));
        assert_eq!(s.vacuum_pages, 0);
        assert!(resolve_settings(&cfg, &args(|a| a.node_days = Some(0))).is_err());
        assert!(resolve_settings(&cfg, &args(|a| a.observer_days = Some(0))).is_err());
        assert!(resolve_settings(&cfg, &args(|a| a.packet_days = Some(-3))).is_err());
        assert!(resolve_settings(&cfg, &args(|a| a.edge_days = Some(MAX_DAYS + 1))).is_err());
        let s = resolve_settings(&cfg, &args(|a| a.observer_days = Some(-1))).unwrap();
        assert_eq!(s.observer_days, None);
    }

    #[test]
    fn kind_selection_keeps_corescope_order() {
        use PruneKind::*;
        assert_eq!(selected_kinds(&[], &[]), ORDER.to_vec());
        assert_eq!(selected_kinds(&[Packets, Nodes], &[]), vec![Nodes, Packets]);
        assert_eq!(
            selected_kinds(&[], &[Packets, Clients]),
            vec![Nodes, Observers, Metrics, Dropped, Edges]
        );
        assert_eq!(selected_kinds(&[Edges], &[Edges]), vec![]);
    }
}
