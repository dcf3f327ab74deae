//! `corescope backfill [TASK...]`: resumable, terminating, never-clobbering
//! data backfills with CoreScope's rules (design notes in docs/backfill.md).
//!
//! Row tasks (`from-pubkey`, `path-json`, `resolved-path`) walk their table
//! by row id. Each batch is read and derived outside the write lock, then
//! written in one `BEGIN IMMEDIATE` transaction together with the task's
//! cursor (`_corescope_state` key `backfill.<task>.cursor` = last row id
//! visited). Every UPDATE re-checks the candidate condition, so a value
//! written meanwhile by the ingestor (or another run) is never overwritten.
//! A run visits each candidate at most once, up to the highest id that
//! existed when the task started; the next run resumes from the cursor and
//! also picks up rows inserted since.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use rusqlite::{params, Connection};
use serde_json::{json, Map, Value};

use crate::cli::{BackfillArgs, BackfillTask};
use crate::context::Ctx;
use crate::derive::{self, Derived};
use crate::edges::PrefixIndex;
use crate::error::Failure;
use crate::report::{self, Outcome};
use crate::resolve::{self, Adjacency};
use crate::store::backfill_state::{
    self, pending_counts, FROM_PUBKEY_WHERE, PATH_JSON_FROM, PATH_JSON_WHERE, RESOLVED_FROM,
    RESOLVED_WHERE,
};
use crate::store::engine;
use crate::store::values::{text_lossy, whole_int};
use crate::store::{self, table_exists, Batcher, Deadline, ReadOnlyDb, WriteDb};

/// `_migrations` row CoreScope's own path_json backfill writes when a pass
/// finished; recorded so its startup backfill stays off.
pub const PATH_JSON_MARKER: &str = "backfill_path_json_from_raw_hex_v1";

/// Every task, in the order a run without TASK executes them: the quick
/// blacklist first, then `from_pubkey` and `path_json`, which the
/// resolved-path task reads (originator, hops).
pub const ALL_TASKS: [BackfillTask; 4] = [
    BackfillTask::ObserverBlacklist,
    BackfillTask::FromPubkey,
    BackfillTask::PathJson,
    BackfillTask::ResolvedPath,
];

impl BackfillTask {
    /// The name as written on the command line (report key).
    pub fn cli_name(self) -> &'static str {
        match self {
            BackfillTask::FromPubkey => "from-pubkey",
            BackfillTask::PathJson => "path-json",
            BackfillTask::ResolvedPath => "resolved-path",
            BackfillTask::ObserverBlacklist => "observer-blacklist",
        }
    }
}

/// `_corescope_state` key of a task's cursor.
pub fn cursor_key(task: BackfillTask) -> String {
    backfill_state::cursor_key(task.cli_name())
}

/// The stored cursor of a task (0 when none or unparsable).
fn read_cursor(conn: &Connection, task: BackfillTask) -> anyhow::Result<i64> {
    backfill_state::read_cursor(conn, task.cli_name())
}

// ---------------------------------------------------------------------------
// Per-task report.

#[derive(Debug, Default, Clone)]
struct TaskReport {
    /// Candidate rows visited by this run.
    scanned: u64,
    /// Rows given a value derived from their data.
    updated: u64,
    /// Rows visited but given no derived value (sentinel written, left NULL,
    /// or changed by someone else meanwhile).
    skipped: u64,
    /// Rows that still match the task's selection after its cursor.
    remaining: i64,
    /// path-json: UPDATEs refused by `idx_observations_dedup`.
    conflicts: u64,
    /// path-json: observations without path_json and without raw bytes of
    /// their own (never derived, see docs/backfill.md).
    without_raw_hex: i64,
    /// observer-blacklist: ids that matched no observer.
    unmatched: Vec<String>,
    /// The task ran to its end (not stopped by --max-seconds).
    complete: bool,
    ran: bool,
}

impl TaskReport {
    fn json(&self, task: BackfillTask) -> Value {
        let mut m = Map::new();
        m.insert("scanned".into(), json!(self.scanned));
        m.insert("updated".into(), json!(self.updated));
        m.insert("remaining".into(), json!(self.remaining));
        m.insert("skipped".into(), json!(self.skipped));
        m.insert("complete".into(), json!(self.complete));
        if task == BackfillTask::PathJson {
            m.insert("conflicts".into(), json!(self.conflicts));
            m.insert("without_raw_hex".into(), json!(self.without_raw_hex));
        }
        if task == BackfillTask::ObserverBlacklist {
            m.insert("unmatched".into(), json!(self.unmatched));
        }
        Value::Object(m)
    }
}

// ---------------------------------------------------------------------------
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

// ---------------------------------------------------------------------------
// The row-task engine.

/// One candidate row: its id and the columns the task derives from.
struct Row {
    id: i64,
    /// from-pubkey: decoded pubKey; path-json: observation raw_hex;
    /// resolved-path: path_json.
    a: Option<String>,
    /// from-pubkey: raw_hex (only when the decoded key is not usable);
    /// resolved-path: from_pubkey.
    b: Option<String>,
    /// resolved-path: decoded pubKey (from_pubkey NULL).
    c: Option<String>,
    /// resolved-path: transmissions.raw_hex (from_pubkey NULL or no type).
    d: Option<String>,
    /// effective payload type column.
    ptype: Option<i64>,
}

/// 64 hex characters as a GLOB pattern (decoded keys usable without raw_hex).
fn hex64_glob() -> String {
    "[0-9a-fA-F]".repeat(64)
}

fn fetch(
    conn: &Connection,
    task: BackfillTask,
    after: i64,
    upto: i64,
    limit: usize,
) -> anyhow::Result<Vec<Row>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = match task {
        BackfillTask::FromPubkey => {
            let sql = format!(
                "SELECT id, pk, CASE WHEN typeof(pk) = 'text' AND length(pk) = 64 AND pk GLOB ?4 \
                 THEN NULL ELSE raw_hex END \
                 FROM (SELECT id, raw_hex, CASE WHEN json_valid(decoded_json) \
                       THEN json_extract(decoded_json, '$.pubKey') END AS pk \
                       FROM transmissions WHERE id > ?1 AND id <= ?2 AND {FROM_PUBKEY_WHERE} \
                       ORDER BY id LIMIT ?3)"
            );
            let mut st = conn.prepare_cached(&sql)?;
            let it = st.query_map(params![after, upto, limit, hex64_glob()], |r| {
                Ok(Row {
                    id: r.get(0)?,
                    a: text_lossy(r, 1)?,
                    b: text_lossy(r, 2)?,
                    c: None,
                    d: None,
                    ptype: Some(4),
                })
            })?;
            it.collect::<Result<Vec<_>, _>>()?
        }
        BackfillTask::PathJson => {
            let sql = format!(
                "SELECT o.id, o.raw_hex, t.payload_type FROM {PATH_JSON_FROM} \
                 WHERE o.id > ?1 AND o.id <= ?2 AND {PATH_JSON_WHERE} ORDER BY o.id LIMIT ?3"
            );
            let mut st = conn.prepare_cached(&sql)?;
            let it = st.query_map(params![after, upto, limit], |r| {
                Ok(Row {
                    id: r.get(0)?,
                    a: text_lossy(r, 1)?,
                    b: None,
                    c: None,
                    d: None,
                    ptype: whole_int(r, 2)?,
                })
            })?;
            it.collect::<Result<Vec<_>, _>>()?
        }
        BackfillTask::ResolvedPath => {
            let sql = format!(
                "SELECT o.id, o.path_json, t.payload_type, t.from_pubkey, \
                 CASE WHEN t.from_pubkey IS NULL AND (t.payload_type = 4 OR t.payload_type IS NULL) \
                      AND json_valid(t.decoded_json) THEN json_extract(t.decoded_json, '$.pubKey') END, \
                 CASE WHEN t.from_pubkey IS NULL AND (t.payload_type = 4 OR t.payload_type IS NULL) \
                      OR t.payload_type IS NULL THEN t.raw_hex END \
                 FROM {RESOLVED_FROM} WHERE o.id > ?1 AND o.id <= ?2 AND {RESOLVED_WHERE} \
                 ORDER BY o.id LIMIT ?3"
            );
            let mut st = conn.prepare_cached(&sql)?;
            let it = st.query_map(params![after, upto, limit], |r| {
                Ok(Row {
                    id: r.get(0)?,
                    a: text_lossy(r, 1)?,
                    ptype: whole_int(r, 2)?,
                    b: text_lossy(r, 3)?,
                    c: text_lossy(r, 4)?,
                    d: text_lossy(r, 5)?,
                })
            })?;
            it.collect::<Result<Vec<_>, _>>()?
        }
        BackfillTask::ObserverBlacklist => Vec::new(),
    };
    Ok(rows)
}

/// Snapshots the resolved-path task resolves against.
struct ResolveCtx {
    idx: PrefixIndex,
    adj: Adjacency,
}

fn load_resolve_ctx(conn: &Connection) -> anyhow::Result<ResolveCtx> {
    let mut st = conn.prepare("SELECT public_key FROM nodes WHERE public_key IS NOT NULL")?;
    let keys = st
        .query_map([], |r| text_lossy(r, 0))?
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten();
    let idx = PrefixIndex::new(keys);
    let adj = if table_exists(conn, "neighbor_edges")? {
        let mut st = conn.prepare("SELECT node_a, node_b FROM neighbor_edges")?;
        let pairs = st
            .query_map([], |r| Ok((text_lossy(r, 0)?, text_lossy(r, 1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        resolve::adjacency_from_edges(
            pairs
                .into_iter()
                .map(|(a, b)| (a.unwrap_or_default(), b.unwrap_or_default())),
        )
    } else {
        Adjacency::new()
    };
    log::info!(
        "resolved-path: {} node keys, {} nodes with neighbor edges",
        idx.len(),
        adj.len()
    );
    Ok(ResolveCtx { idx, adj })
}

fn derive_row(task: BackfillTask, row: &Row, rctx: Option<&ResolveCtx>) -> Derived {
    match task {
        BackfillTask::FromPubkey => derive::from_pubkey(row.a.as_deref(), row.b.as_deref()),
        BackfillTask::PathJson => match row.a.as_deref() {
            Some(h) => derive::path_json(h),
            None => Derived::Sentinel(derive::PATH_JSON_SENTINEL),
        },
        BackfillTask::ResolvedPath => {
            let Some(rc) = rctx else {
                return Derived::Leave;
            };
            let inp = derive::ResolveInput {
                payload_type: derive::payload_type(row.ptype, row.d.as_deref()),
                from_pubkey: row.b.as_deref(),
                decoded_pubkey: row.c.as_deref(),
                tx_raw_hex: row.d.as_deref(),
                path_json: row.a.as_deref().unwrap_or(""),
            };
            derive::resolved_path(&inp, &rc.adj, &rc.idx)
        }
        BackfillTask::ObserverBlacklist => Derived::Leave,
    }
}

/// Writes one value; returns whether the row changed. Every statement
/// re-checks the candidate condition (never clobber).
fn write_row(tx: &Connection, task: BackfillTask, row: &Row, value: &str) -> anyhow::Result<bool> {
    let n = match task {
        BackfillTask::FromPubkey => tx
            .prepare_cached(
                "UPDATE transmissions SET from_pubkey = ?1 WHERE id = ?2 AND from_pubkey IS NULL",
            )?
            .execute(params![value, row.id])?,
        BackfillTask::PathJson => tx
            .prepare_cached(
                "UPDATE OR IGNORE observations SET path_json = ?1 \
                 WHERE id = ?2 AND (path_json IS NULL OR path_json = '')",
            )?
            .execute(params![value, row.id])?,
        BackfillTask::ResolvedPath => tx
            .prepare_cached(
                "UPDATE observations SET resolved_path = ?1 WHERE id = ?2 \
                 AND (resolved_path IS NULL OR resolved_path = '') AND path_json = ?3",
            )?
            .execute(params![value, row.id, row.a])?,
        BackfillTask::ObserverBlacklist => 0,
    };
    Ok(n > 0)
}

/// Moves a cursor forward to `to`, unless somebody else moved it since we
/// read `expected`: then the lower of the two wins, so a cursor lowered by
/// the path-json task (or a `--reset` of a concurrent run) is kept and rows
/// are visited again rather than skipped.
fn advance_cursor(
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

/// The database: read-write for a run, read-only for `--dry-run` (which
/// takes no run lock and creates nothing, not even the state table).
enum Handle {
    Write(WriteDb),
    Read(ReadOnlyDb),
}

impl Handle {
    fn conn(&self) -> &Connection {
        match self {
            Handle::Write(w) => w.conn(),
            Handle::Read(r) => r.reader(),
        }
    }

    fn write<T>(
        &mut self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        match self {
            Handle::Write(w) => w.write(f),
            Handle::Read(_) => Err(Failure::Fatal(
                "internal error: a write was attempted during --dry-run".to_string(),
            )
            .into()),
        }
    }

    /// Lock hold of the last write (none on the dry-run handle).
    fn last_hold(&self) -> Duration {
        match self {
            Handle::Write(w) => w.last_hold(),
            Handle::Read(_) => Duration::ZERO,
        }
    }

    fn max_lock_hold_ms(&self) -> f64 {
        match self {
            Handle::Write(w) => w.max_lock_hold_ms(),
            Handle::Read(_) => 0.0,
        }
    }
}

/// WAL bookkeeping of a read-write run: in WAL mode `synchronous = NORMAL`
/// (a commit stays atomic; after a power loss the last batches may be
/// redone, which the cursor makes harmless) and no automatic checkpoint
/// inside our commits (it would lengthen a lock hold); instead a PASSIVE
/// checkpoint, which waits for nobody, every few commits and at the end.
struct Wal {
    on: bool,
    commits: u32,
}

const CHECKPOINT_EVERY: u32 = 8;

impl Wal {
    fn setup(h: &Handle) -> anyhow::Result<Wal> {
        let Handle::Write(w) = h else {
            return Ok(Wal {
                on: false,
                commits: 0,
            });
        };
        let on = w.tune_for_batches()?;
        Ok(Wal { on, commits: 0 })
    }

    fn committed(&mut self, h: &Handle) {
        self.commits += 1;
        if self.commits >= CHECKPOINT_EVERY {
            self.checkpoint(h);
        }
    }

    fn checkpoint(&mut self, h: &Handle) {
        self.commits = 0;
        if let (true, Handle::Write(w)) = (self.on, h) {
            w.checkpoint_passive();
        }
    }
}

struct Env<'a> {
    db: &'a mut Handle,
    wal: Wal,
    max_lock_ms: u64,
    deadline: Deadline,
    dry_run: bool,
    show_bar: bool,
}

fn run_row_task(env: &mut Env<'_>, task: BackfillTask, reset: bool) -> anyhow::Result<TaskReport> {
    let mut rep = TaskReport {
        ran: true,
        ..Default::default()
    };
    let (table, total_sql) = match task {
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
    };
    if reset && !env.dry_run {
        env.db
            .write(|tx| store::state_delete(tx, &cursor_key(task)))?;
        log::info!("backfill {}: cursor reset", task.cli_name());
    }
    let mut cursor = if reset {
        0
    } else {
        read_cursor(env.db.conn(), task)?
    };
    let upto: i64 = env.db.conn().query_row(
        &format!("SELECT COALESCE(MAX(id), 0) FROM {table}"),
        [],
        |r| r.get(0),
    )?;
    let total: i64 = env
        .db
        .conn()
        .query_row(&total_sql, params![cursor, upto], |r| r.get(0))?;
    let rctx = if task == BackfillTask::ResolvedPath && total > 0 {
        Some(load_resolve_ctx(env.db.conn())?)
    } else {
        None
    };
    let mut progress = Progress::new(
        env.show_bar,
        task.cli_name(),
        u64::try_from(total).unwrap_or(0),
    );
    // Per task: the cost of a row differs between tasks (path_json is in
    // the dedup index, resolved_path is not). The Batcher aims at half the
    // budget it is given; on large tables the hold of equal-sized batches
    // varies about ±2× (page-cache misses on the from_pubkey / dedup
    // indexes), so it gets two thirds of --max-lock-ms and aims at a third.
    let mut batcher = Batcher::new((env.max_lock_ms * 2 / 3).max(1));
    rep.complete = true;
    loop {
        if env.deadline.expired() {
            rep.complete = false;
            break;
        }
        let rows = fetch(env.db.conn(), task, cursor, upto, batcher.size())
            .with_context(|| format!("backfill {}: reading candidates", task.cli_name()))?;
        let Some(last) = rows.last().map(|r| r.id) else {
            break;
        };
        let derived: Vec<Derived> = rows
            .iter()
            .map(|r| derive_row(task, r, rctx.as_ref()))
            .collect();
        rep.scanned += rows.len() as u64;
        if env.dry_run {
            for d in &derived {
                match d {
                    Derived::Value(_) => rep.updated += 1,
                    _ => rep.skipped += 1,
                }
            }
            cursor = last;
            progress.inc(rows.len() as u64);
            continue;
        }
        let expected = cursor;
        let (updated, skipped, conflicts, new_cursor) = env.db.write(|tx| {
            let (mut up, mut sk, mut cf) = (0u64, 0u64, 0u64);
            // Lowest observation id given hops by path-json in this batch.
            let mut min_hops_id: Option<i64> = None;
            for (row, d) in rows.iter().zip(&derived) {
                match d {
                    Derived::Value(v) => {
                        if write_row(tx, task, row, v)? {
                            up += 1;
                            if task == BackfillTask::PathJson && v != "[]" {
                                min_hops_id = Some(min_hops_id.map_or(row.id, |m| m.min(row.id)));
                            }
                        } else {
                            sk += 1;
                            if task == BackfillTask::PathJson {
                                cf += 1;
                            }
                        }
                    }
                    Derived::Sentinel(s) => {
                        if !write_row(tx, task, row, s)? && task == BackfillTask::PathJson {
                            cf += 1;
                        }
                        sk += 1;
                    }
                    Derived::Leave => sk += 1,
                }
            }
            if let Some(m) = min_hops_id {
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
            let nc = advance_cursor(tx, task, expected, last)?;
            Ok((up, sk, cf, nc))
        })?;
        batcher.observe(rows.len(), env.db.last_hold());
        env.wal.committed(env.db);
        rep.updated += updated;
        rep.skipped += skipped;
        rep.conflicts += conflicts;
        cursor = new_cursor;
        progress.inc(rows.len() as u64);
    }
    progress.finish();
    if rep.complete && !env.dry_run {
        // Every candidate up to `upto` was visited: move the cursor there so
        // the next run does not re-read non-candidates, and record
        // CoreScope's marker for path-json.
        let expected = cursor;
        let marker = task == BackfillTask::PathJson && table_exists(env.db.conn(), "_migrations")?;
        if upto > cursor || marker {
            env.db.write(|tx| {
                if upto > expected {
                    advance_cursor(tx, task, expected, upto)?;
                }
                if marker {
                    tx.execute(
                        "INSERT OR IGNORE INTO _migrations (name) VALUES (?1)",
                        [PATH_JSON_MARKER],
                    )?;
                }
                Ok(())
            })?;
        }
    }
    if task == BackfillTask::PathJson {
        rep.without_raw_hex = env.db.conn().query_row(
            "SELECT COUNT(*) FROM observations WHERE (path_json IS NULL OR path_json = '') \
             AND (raw_hex IS NULL OR raw_hex = '')",
            [],
            |r| r.get(0),
        )?;
    }
    rep.remaining = if env.dry_run {
        let key = match task {
            BackfillTask::FromPubkey => "from_pubkey",
            BackfillTask::PathJson => "path_json",
            _ => "resolved_path",
        };
        pending_counts(env.db.conn())?
            .get(key)
            .copied()
            .unwrap_or(0)
    } else {
        let after = read_cursor(env.db.conn(), task)?;
        env.db
            .conn()
            .query_row(&total_sql, params![after, i64::MAX], |r| r.get(0))?
    };
    Ok(rep)
}

// ---------------------------------------------------------------------------
// observer-blacklist.

/// Trimmed, non-empty ids, de-duplicated case-insensitively (first spelling kept).
fn blacklist_ids(cli: &[String], config: &[String]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for id in cli.iter().chain(config) {
        let t = id.trim();
        if !t.is_empty() && seen.insert(t.to_lowercase()) {
            out.push(t.to_string());
        }
    }
    out
}

fn run_blacklist(env: &mut Env<'_>, ids: &[String]) -> anyhow::Result<TaskReport> {
    let mut rep = TaskReport {
        ran: true,
        complete: true,
        ..Default::default()
    };
    if ids.is_empty() {
        log::info!("backfill observer-blacklist: no ids (--observer or observerBlacklist)");
        return Ok(rep);
    }
    if env.deadline.expired() {
        rep.complete = false;
    }
    let mut matched: Vec<(String, i64, i64)> = Vec::new(); // id, rows, active rows
    {
        let conn = env.db.conn();
        let mut st = conn.prepare(
            "SELECT COUNT(*), COALESCE(SUM(COALESCE(inactive, 0) <> 1), 0) \
             FROM observers WHERE lower(id) = lower(?1)",
        )?;
        for id in ids {
            let (n, active): (i64, i64) = st.query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))?;
            matched.push((id.clone(), n, active));
        }
    }
    rep.unmatched = matched
        .iter()
        .filter(|(_, n, _)| *n == 0)
        .map(|(id, _, _)| id.clone())
        .collect();
    rep.scanned = matched.iter().map(|(_, n, _)| *n as u64).sum();
    let active: i64 = matched.iter().map(|(_, _, a)| *a).sum();
    if env.dry_run || !rep.complete {
        rep.updated = if env.dry_run { active as u64 } else { 0 };
        rep.remaining = active;
        return Ok(rep);
    }
    let updated = env.db.write(|tx| {
        let mut st = tx.prepare(
            "UPDATE observers SET inactive = 1 WHERE lower(id) = lower(?1) AND COALESCE(inactive, 0) <> 1",
        )?;
        let mut n = 0u64;
        for id in ids {
            n += st.execute([id])? as u64;
        }
        Ok(n)
    })?;
    rep.updated = updated;
    rep.skipped = rep.scanned.saturating_sub(updated);
    for id in &rep.unmatched {
        log::warn!("observer-blacklist: id {id} matches no observer");
    }
    Ok(rep)
}

// ---------------------------------------------------------------------------
// The command.

pub fn run(ctx: &Ctx, args: &BackfillArgs) -> anyhow::Result<Outcome> {
    // Tasks in execution order; report keys as written on the command line.
    let selected: Vec<BackfillTask> = if args.tasks.is_empty() {
        ALL_TASKS.to_vec()
    } else {
        ALL_TASKS
            .iter()
            .copied()
            .filter(|t| args.tasks.contains(t))
            .collect()
    };
    if !args.observers.is_empty() && !selected.contains(&BackfillTask::ObserverBlacklist) {
        return Err(Failure::Usage(
            "--observer only applies to the observer-blacklist task".to_string(),
        )
        .into());
    }
    for r in &args.reset {
        if *r == BackfillTask::ObserverBlacklist {
            return Err(Failure::Usage(
                "--reset observer-blacklist: that task has no cursor".to_string(),
            )
            .into());
        }
        if !selected.contains(r) {
            return Err(Failure::Usage(format!(
                "--reset {}: that task is not selected in this run",
                r.cli_name()
            ))
            .into());
        }
    }

    let mut wdb = if args.dry_run {
        let ro = ReadOnlyDb::open(&ctx.db_path, ctx.busy_timeout_ms)?;
        ro.require_ready()?;
        Handle::Read(ro)
    } else {
        let mut w = WriteDb::open(&ctx.db_path, &ctx.open_options(false))?;
        w.require_ready()?;
        Handle::Write(w)
    };
    let ids = blacklist_ids(&args.observers, &ctx.config.observer_blacklist);
    let wal = Wal::setup(&wdb)?;
    let mut env = Env {
        db: &mut wdb,
        wal,
        max_lock_ms: args.write.max_lock_ms,
        deadline: Deadline::new(args.write.max_seconds),
        dry_run: args.dry_run,
        show_bar: ctx.progress_allowed(),
    };

    let mut reports: Vec<(BackfillTask, TaskReport)> = Vec::new();
    for &task in &selected {
        let rep = if task == BackfillTask::ObserverBlacklist {
            run_blacklist(&mut env, &ids)?
        } else if env.deadline.expired() {
            // Not started: report what is still pending.
            let key = match task {
                BackfillTask::FromPubkey => "from_pubkey",
                BackfillTask::PathJson => "path_json",
                _ => "resolved_path",
            };
            TaskReport {
                remaining: pending_counts(env.db.conn())?
                    .get(key)
                    .copied()
                    .unwrap_or(0),
                ..Default::default()
            }
        } else {
            run_row_task(&mut env, task, args.reset.contains(&task))?
        };
        reports.push((task, rep));
    }

    env.wal.checkpoint(env.db);
    let complete = reports.iter().all(|(_, r)| r.complete);
    let max_hold = wdb.max_lock_hold_ms();

    let mut tasks = Map::new();
    for (t, r) in &reports {
        tasks.insert(t.cli_name().to_string(), r.json(*t));
    }
    let mut out = Outcome::new();
    out.set("tasks", Value::Object(tasks));
    out.set("dry_run", args.dry_run);
    out.set("complete", complete);
    out.set("max_lock_hold_ms", max_hold);

    let mut table = report::table(&[
        "task",
        "scanned",
        "updated",
        "skipped",
        "remaining",
        "status",
    ]);
    for (t, r) in &reports {
        let status = if !r.ran {
            "not started (--max-seconds)"
        } else if !r.complete {
            "stopped (--max-seconds)"
        } else {
            "done"
        };
        table.add_row(vec![
            t.cli_name().to_string(),
            r.scanned.to_string(),
            r.updated.to_string(),
            r.skipped.to_string(),
            r.remaining.to_string(),
            status.to_string(),
        ]);
    }
    let mut human = String::new();
    if args.dry_run {
        human.push_str("dry run: nothing was written; `updated` is what a run would update\n");
    }
    human.push_str(&table.to_string());
    human.push('\n');
    for (t, r) in &reports {
        if *t == BackfillTask::ObserverBlacklist && !r.unmatched.is_empty() {
            human.push_str(&format!(
                "observer ids matching no observer: {}\n",
                r.unmatched.join(", ")
            ));
        }
        if r.conflicts > 0 {
            human.push_str(&format!(
                "path-json: {} rows left NULL because their path would duplicate another observation (idx_observations_dedup)\n",
                r.conflicts
            ));
        }
    }
    human.push_str(&format!(
        "{}; longest write-lock hold {:.1} ms\n",
        if complete {
            "complete"
        } else {
            "incomplete: stopped by --max-seconds, the next run resumes"
        },
        max_hold
    ));
    out.human = human;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blacklist_ids_trim_dedup() {
        let ids = blacklist_ids(
            &[" AbC ".into(), String::new(), "x".into()],
            &["abc".into(), "  ".into(), "Y".into()],
        );
        assert_eq!(ids, vec!["AbC", "x", "Y"]);
    }

    fn fixture_ro() -> Connection {
        let p = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/fixtures/legacy-2026-03.db"
        );
        Connection::open_with_flags(p, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap()
    }

    #[test]
    fn pending_counts_on_unmigrated_legacy_database() {
        let c = fixture_ro();
        let m = pending_counts(&c).unwrap();
        let adverts: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM transmissions WHERE payload_type = 4",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let with_hops: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM observations o LEFT JOIN transmissions t ON t.id = o.transmission_id \
                 WHERE o.path_json IS NOT NULL AND o.path_json NOT IN ('', '[]') \
                 AND (t.payload_type IS NULL OR t.payload_type <> 9)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(m["from_pubkey"], adverts);
        assert_eq!(m["path_json"], 0, "no observations.raw_hex column");
        assert_eq!(m["resolved_path"], with_hops);
        assert!(adverts > 0 && with_hops > 0);
    }

    #[test]
    fn pending_counts_follow_the_cursor() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE TABLE transmissions (id INTEGER PRIMARY KEY, raw_hex TEXT, payload_type INTEGER,
                 decoded_json TEXT, from_pubkey TEXT);
             CREATE TABLE observations (id INTEGER PRIMARY KEY, transmission_id INTEGER,
                 path_json TEXT, raw_hex TEXT, resolved_path TEXT);
             CREATE TABLE _corescope_state (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at TEXT NOT NULL);
             INSERT INTO transmissions VALUES (1, '11', 4, NULL, NULL), (2, '11', 4, NULL, NULL),
                 (3, '26', 9, NULL, NULL), (4, '15', 5, NULL, NULL);
             INSERT INTO observations VALUES (1, 1, NULL, '1100', NULL), (2, 2, '', '1100', NULL),
                 (3, 3, NULL, '2601', NULL), (4, 4, '[\"AA\"]', NULL, NULL),
                 (5, 3, '[\"0F\"]', NULL, NULL), (6, 4, '[]', NULL, NULL), (7, 4, NULL, NULL, NULL);",
        )
        .unwrap();
        let m = pending_counts(&c).unwrap();
        assert_eq!(
            (m["from_pubkey"], m["path_json"], m["resolved_path"]),
            (2, 2, 1)
        );
        for t in [
            BackfillTask::FromPubkey,
            BackfillTask::PathJson,
            BackfillTask::ResolvedPath,
        ] {
            store::state_set(&c, &cursor_key(t), "1").unwrap();
        }
        let m = pending_counts(&c).unwrap();
        assert_eq!(
            (m["from_pubkey"], m["path_json"], m["resolved_path"]),
            (1, 1, 1)
        );
        store::state_set(&c, &cursor_key(BackfillTask::ResolvedPath), "4").unwrap();
        assert_eq!(pending_counts(&c).unwrap()["resolved_path"], 0);
    }

    #[test]
    fn advance_cursor_keeps_a_cursor_lowered_meanwhile() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE TABLE _corescope_state (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at TEXT NOT NULL);",
        )
        .unwrap();
        let t = BackfillTask::ResolvedPath;
        // no cursor yet
        assert_eq!(advance_cursor(&c, t, 0, 50).unwrap(), 50);
        // nobody else moved it
        assert_eq!(advance_cursor(&c, t, 50, 90).unwrap(), 90);
        // lowered meanwhile (path-json gave hops to row 10): the lower wins
        store::state_set(&c, &cursor_key(t), "9").unwrap();
        assert_eq!(advance_cursor(&c, t, 90, 120).unwrap(), 9);
        assert_eq!(read_cursor(&c, t).unwrap(), 9);
        // moved forward by another run: ours (lower) wins, rows are re-read, never skipped
        store::state_set(&c, &cursor_key(t), "500").unwrap();
        assert_eq!(advance_cursor(&c, t, 9, 120).unwrap(), 120);
        // garbage in the state table reads as 0
        store::state_set(&c, &cursor_key(t), "x").unwrap();
        assert_eq!(read_cursor(&c, t).unwrap(), 0);
    }

    #[test]
    fn cursor_keys() {
        assert_eq!(
            cursor_key(BackfillTask::PathJson),
            "backfill.path-json.cursor"
        );
        assert_eq!(
            cursor_key(BackfillTask::FromPubkey),
            "backfill.from-pubkey.cursor"
        );
    }
}
