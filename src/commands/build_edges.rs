//! `corescope build-edges [--rebuild]`: exactly-once incremental neighbor
//! graph (design notes in docs/build-edges.md).
//!
//! Invariant kept by every committed transaction: `neighbor_edges` holds
//! exactly the candidates of all observations with `id <= watermark`
//! (`_corescope_state` key `build_edges.watermark`).
//!
//! Incremental pass, per batch:
//! 1. read the watermark `w` and scan the next observations `id > w` in id
//!    order **outside** the write lock (a plain read), aggregating candidates
//!    per pair in memory;
//! 2. in one `BEGIN IMMEDIATE` transaction re-read the watermark; if another
//!    run moved it meanwhile the batch is discarded (never counted twice),
//!    otherwise upsert the aggregated pairs and set the watermark to the last
//!    id scanned — in the same transaction.
//!
//! So a crash, `kill -9`, `--max-seconds` or an overlapping run can neither
//! double-count nor skip an observation.
//!
//! `--rebuild` scans everything outside the lock into one in-memory
//! aggregate (interned node ids, bounded by the number of distinct edges),
//! writes it in key order into a staging table in short transactions, and
//! swaps the staging table in with one short transaction (`DROP` + `ALTER
//! TABLE RENAME`) that also sets the watermark. The staging table is
//! consistent only while `build_edges.rebuild_watermark` is set (it is
//! cleared before a flush and set again after), so an interrupted rebuild
//! resumes from its last complete flush or starts over. A run owns the
//! staging table through `build_edges.rebuild_owner`; a second rebuild takes
//! it over and the first one stops with exit 75.

use std::time::Instant;

use anyhow::Context;
use rusqlite::{Connection, Transaction};
use serde::Serialize;
use serde_json::{json, Value};

use crate::cli::BuildEdgesArgs;
use crate::context::Ctx;
use crate::edges::{self, FnvMap, ObsInput, PrefixIndex};
use crate::error::Failure;
use crate::packet;
use crate::report::{Outcome, Report};
use crate::store::edge_state::{
    interrupted_rebuild, old_tables, read_watermark, watermark_ahead, NEEDS_REBUILD_KEY,
    OLD_TABLE_PREFIX, OWNER_KEY, REBUILD_KEY, STAGING_TABLE, WATERMARK_KEY,
};
use crate::store::engine::{self, Engine, Target};
use crate::store::values::{epoch, int, text};
use crate::store::{self, Batcher, Deadline, WriteDb};
use crate::timeutil;

const EDGES_TABLE: &str = "neighbor_edges";

/// `CREATE TABLE` of the staging table: the catalog's `neighbor_edges`
/// under the staging name (the swap renames it to `neighbor_edges`).
fn staging_ddl() -> anyhow::Result<String> {
    let t = crate::catalog::table(EDGES_TABLE)
        .ok_or_else(|| anyhow::anyhow!("internal error: the catalog has no {EDGES_TABLE}"))?;
    let sql = crate::catalog::create_table_sql(t, crate::catalog::Target::Latest);
    Ok(sql.replacen(
        &format!("CREATE TABLE IF NOT EXISTS {EDGES_TABLE} "),
        &format!("CREATE TABLE {STAGING_TABLE} "),
        1,
    ))
}

const SCAN_SQL: &str = "SELECT o.id, o.timestamp, o.path_json, t.payload_type,
       CASE WHEN t.payload_type = 4 THEN t.from_pubkey END,
       CASE WHEN t.payload_type = 4 AND (t.from_pubkey IS NULL OR t.from_pubkey = '')
            THEN t.decoded_json END,
       ob.id
  FROM observations o
  LEFT JOIN transmissions t ON t.id = o.transmission_id
  LEFT JOIN observers ob ON ob.rowid = o.observer_idx
 WHERE o.id > ?1
 ORDER BY o.id
 LIMIT ?2";

/// Rows per scan batch of a rebuild (scans hold no write lock).
const REBUILD_SCAN_ROWS: usize = 50_000;
/// A rebuild flushes its aggregate to staging beyond this many distinct pairs
/// (keeps memory bounded: about 60 bytes per pair at the peak).
const REBUILD_MAX_PAIRS: usize = 400_000;

/// "No time" marker inside [`Agg`] (keeps an entry at 24 bytes).
const NO_TIME: i64 = i64::MIN;

/// (a, b, count, latest epoch or NO_TIME) with interned ids.
type IdRow = (u32, u32, i64, i64);

/// Candidates aggregated per pair, with interned node ids.
#[derive(Debug, Default)]
struct Agg {
    ids: FnvMap<String, u32>,
    names: Vec<String>,
    /// (a, b) interned, a's name < b's name → (count, latest epoch or NO_TIME).
    pairs: FnvMap<(u32, u32), (i64, i64)>,
}

impl Agg {
    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.ids.get(s) {
            return i;
        }
        let i = self.names.len() as u32;
        self.names.push(s.to_string());
        self.ids.insert(s.to_string(), i);
        i
    }

    fn add(&mut self, a: &str, b: &str, ts: Option<i64>) {
        let (a, b) = (self.intern(a), self.intern(b));
        let e = self.pairs.entry((a, b)).or_insert((0, NO_TIME));
        e.0 += 1;
        if let Some(t) = ts {
            e.1 = e.1.max(t);
        }
    }

    fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Empties the aggregate into (names, rows sorted by key), rows as
    /// (a, b, count, latest epoch or NO_TIME). Sorted so that writes append
    /// to the B-trees in key order; the hash map is freed before writing.
    fn take_sorted(&mut self) -> (Vec<String>, Vec<IdRow>) {
        let names = std::mem::take(&mut self.names);
        let pairs = std::mem::take(&mut self.pairs);
        self.ids = FnvMap::default();
        let mut v: Vec<IdRow> = pairs
            .into_iter()
            .map(|((a, b), (n, t))| (a, b, n, t))
            .collect();
        v.sort_unstable_by(|x, y| {
            (names[x.0 as usize].as_str(), names[x.1 as usize].as_str())
                .cmp(&(names[y.0 as usize].as_str(), names[y.1 as usize].as_str()))
        });
        (names, v)
    }

    fn clear(&mut self) {
        *self = Agg::default();
    }
}

/// What one scan batch saw.
#[derive(Debug, Default)]
struct Scanned {
    rows: u64,
    candidates: u64,
    trace_skipped: u64,
    last_id: i64,
}

#[derive(Debug, Default)]
struct Totals {
    scanned: u64,
    candidates: u64,
    trace_skipped: u64,
    upserted: u64,
    new: u64,
    batches: u64,
    discarded: u64,
    transactions: u64,
}

impl Totals {
    fn add_scan(&mut self, s: &Scanned) {
        self.scanned += s.rows;
        self.candidates += s.candidates;
        self.trace_skipped += s.trace_skipped;
        self.batches += 1;
    }
}

/// Scans up to `limit` observations after `after` into `agg`.
fn scan(
    conn: &Connection,
    idx: &PrefixIndex,
    after: i64,
    limit: usize,
    agg: &mut Agg,
) -> anyhow::Result<Scanned> {
    let mut st = conn.prepare_cached(SCAN_SQL)?;
    let mut rows = st.query(rusqlite::params![after, limit as i64])?;
    let mut b = Scanned {
        last_id: after,
        ..Default::default()
    };
    while let Some(r) = rows.next()? {
        let id: i64 = r.get(0)?;
        b.rows += 1;
        b.last_id = id;
        let payload_type = int(r.get_ref(3)?);
        if packet::stored_payload_type(payload_type) == Some(packet::PAYLOAD_TRACE) {
            b.trace_skipped += 1;
            continue;
        }
        let obs = ObsInput {
            payload_type,
            from_pubkey: text(r.get_ref(4)?),
            decoded_json: text(r.get_ref(5)?),
            observer_id: text(r.get_ref(6)?),
            path_json: text(r.get_ref(2)?),
        };
        let ts = epoch(r.get_ref(1)?);
        let mut n = 0u64;
        edges::extract_each(&obs, idx, |x, y| {
            n += 1;
            agg.add(x, y, ts);
        });
        b.candidates += n;
    }
    Ok(b)
}

/// Columns, indexes and triggers of `neighbor_edges` that the catalog does
/// not define (the rebuilt table has the catalog's shape only).
fn foreign_objects(conn: &Connection) -> anyhow::Result<Vec<String>> {
    let mut found = Vec::new();
    let known: Vec<&str> = crate::catalog::table(EDGES_TABLE)
        .map(|t| t.columns.iter().map(|c| c.name).collect())
        .unwrap_or_default();
    for c in store::columns(conn, EDGES_TABLE)? {
        if !known.iter().any(|k| k.eq_ignore_ascii_case(&c)) {
            found.push(format!("column {EDGES_TABLE}.{c}"));
        }
    }
    let mut st = conn.prepare(
        "SELECT type, name FROM sqlite_master
          WHERE tbl_name = ?1 AND type IN ('index', 'trigger')
            AND name NOT LIKE 'sqlite_autoindex_%'
          ORDER BY type, name",
    )?;
    let rows = st.query_map([EDGES_TABLE], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    for row in rows {
        let (kind, name) = row?;
        let owned = kind == "index"
            && crate::catalog::INDEXES
                .iter()
                .any(|i| i.name == name && i.table == EDGES_TABLE);
        if !owned {
            found.push(format!("{kind} {name}"));
        }
    }
    Ok(found)
}

/// A `--rebuild` replaces `neighbor_edges` by a table of the catalog's shape:
/// refuse (before any write) when the table has anything else, which the
/// swap would silently drop.
fn refuse_foreign_objects(conn: &Connection, path: &std::path::Path) -> anyhow::Result<()> {
    let found = foreign_objects(conn)?;
    if found.is_empty() {
        return Ok(());
    }
    Err(Failure::Fatal(format!(
        "refusing `build-edges --rebuild` on {}: neighbor_edges has {} that corescope does not manage ({}); the rebuild replaces the table with its standard shape and would drop them (a column with its data). Nothing was changed. \
         Either keep them and run `corescope build-edges` without --rebuild (the incremental build keeps them), or save what you need, remove them (ALTER TABLE neighbor_edges DROP COLUMN ..., DROP INDEX ..., DROP TRIGGER ...) and run the rebuild again",
        path.display(),
        if found.len() == 1 { "an object" } else { "objects" },
        found.join(", ")
    ))
    .into())
}

/// Refuse (before any write) an incremental run whose watermark is ahead of
/// every observation: it would silently skip new rows.
fn refuse_watermark_ahead(conn: &Connection, path: &std::path::Path) -> anyhow::Result<()> {
    if let Some((w, ceiling)) = watermark_ahead(conn)? {
        return Err(Failure::Fatal(format!(
            "the build-edges watermark of {p} is observation {w}, above the highest observation id there is or was ({ceiling}): \
             the database was restored from an older backup or observations was rebuilt, and new observations with ids up to {w} would never be counted. \
             Nothing was changed. Run `corescope build-edges --rebuild --db {p}` to recount every edge from the observations (it resets the watermark)",
            p = path.display()
        ))
        .into());
    }
    Ok(())
}

fn time_text(t: i64) -> Option<String> {
    (t != NO_TIME).then(|| timeutil::rfc3339(t))
}

/// Inserts `rows` into a table known not to hold any of them (a fresh
/// staging table); returns (upserted, new).
fn insert_new(
    tx: &Transaction<'_>,
    table: &str,
    names: &[String],
    rows: &[IdRow],
) -> anyhow::Result<(u64, u64)> {
    let mut ins = tx.prepare_cached(&format!(
        "INSERT INTO {table} (node_a, node_b, count, last_seen) VALUES (?1, ?2, ?3, ?4)"
    ))?;
    for &(a, b, count, t) in rows {
        ins.execute(rusqlite::params![
            names[a as usize],
            names[b as usize],
            count,
            time_text(t)
        ])?;
    }
    Ok((rows.len() as u64, rows.len() as u64))
}

/// Upserts `rows` into `table`; returns (upserted, new). The later
/// `last_seen` wins, compared as instants (stored values may be `….000Z`).
fn upsert(
    tx: &Transaction<'_>,
    table: &str,
    names: &[String],
    rows: &[IdRow],
) -> anyhow::Result<(u64, u64)> {
    let mut upd = tx.prepare_cached(&format!(
        "UPDATE {table} SET count = COALESCE(count, 0) + ?3,
                last_seen = CASE WHEN ?4 IS NOT NULL
                                  AND (unixepoch(last_seen) IS NULL OR unixepoch(last_seen) < unixepoch(?4))
                                 THEN ?4 ELSE last_seen END
          WHERE node_a = ?1 AND node_b = ?2"
    ))?;
    let mut ins = tx.prepare_cached(&format!(
        "INSERT INTO {table} (node_a, node_b, count, last_seen) VALUES (?1, ?2, ?3, ?4)"
    ))?;
    let (mut upserted, mut new) = (0u64, 0u64);
    for &(a, b, count, t) in rows {
        let (a, b, ls) = (&names[a as usize], &names[b as usize], time_text(t));
        if upd.execute(rusqlite::params![a, b, count, ls])? == 0 {
            ins.execute(rusqlite::params![a, b, count, ls])?;
            new += 1;
        }
        upserted += 1;
    }
    Ok((upserted, new))
}

struct Run<'a> {
    db: &'a mut WriteDb,
    idx: PrefixIndex,
    batcher: Batcher,
    fixed_batch: Option<usize>,
    deadline: Deadline,
    totals: Totals,
    progress: Option<indicatif::ProgressBar>,
    /// The staging table was created empty by this run and not yet written.
    staging_fresh: bool,
    /// WAL mode: checkpoint (PASSIVE) between transactions.
    wal: bool,
    max_lock_ms: u64,
    commits_since_checkpoint: u32,
}

impl Run<'_> {
    /// A PASSIVE checkpoint every `every` commits (and with `every` = 1 after
    /// each); it waits for nobody and holds no write lock.
    fn maybe_checkpoint(&mut self, every: u32) {
        self.commits_since_checkpoint += 1;
        if self.wal && self.commits_since_checkpoint >= every {
            self.commits_since_checkpoint = 0;
            self.db.checkpoint_passive();
        }
    }

    fn tick(&self, rows: u64) {
        if let Some(p) = &self.progress {
            p.inc(rows);
        }
    }

    /// Incremental pass into `neighbor_edges`, through the batch engine
    /// (transaction under the lock budget, fairness pause, checkpoint
    /// policy, deadline). Returns true when caught up, false when stopped by
    /// the deadline (always after at least one batch).
    fn drain_live(&mut self) -> anyhow::Result<bool> {
        let mut engine = Engine::new(
            Target::Write(&mut *self.db),
            engine::Settings {
                max_lock_ms: self.max_lock_ms,
                deadline: self.deadline,
            },
        )?;
        let mut agg = Agg::default();
        loop {
            let wm = read_watermark(engine.conn(), WATERMARK_KEY)?.unwrap_or(0);
            let size = self
                .fixed_batch
                .unwrap_or_else(|| engine.batch_size())
                .max(1);
            agg.clear();
            let batch = scan(engine.conn(), &self.idx, wm, size, &mut agg)?;
            if batch.rows == 0 {
                return Ok(true);
            }
            let (names, rows) = agg.take_sorted();
            // The batcher is fed the rows of an applied batch only (a
            // discarded one says nothing about the cost of a batch).
            let applied = engine.batch(|tx| {
                if read_watermark(tx, WATERMARK_KEY)?.unwrap_or(0) != wm {
                    return Ok((None, 0));
                }
                let r = upsert(tx, EDGES_TABLE, &names, &rows)?;
                store::state_set(tx, WATERMARK_KEY, &batch.last_id.to_string())?;
                Ok((Some(r), batch.rows as usize))
            })?;
            self.totals.transactions += 1;
            match applied {
                Some((upserted, new)) => {
                    self.totals.add_scan(&batch);
                    self.totals.upserted += upserted;
                    self.totals.new += new;
                    if let Some(p) = &self.progress {
                        p.inc(batch.rows);
                    }
                }
                // Another run advanced the watermark: rescan from it.
                None => self.totals.discarded += 1,
            }
            if engine.expired() {
                return Ok(false);
            }
        }
    }

    fn check_owner(tx: &Transaction<'_>, token: &str) -> anyhow::Result<()> {
        if store::state_get(tx, OWNER_KEY)?.as_deref() != Some(token)
            || !store::table_exists(tx, STAGING_TABLE)?
        {
            return Err(Failure::Busy(
                "another `build-edges --rebuild` took over the staging table; this run stops (nothing half-done)".into(),
            )
            .into());
        }
        Ok(())
    }

    /// Writes the aggregate into the staging table and records `wm` as its
    /// watermark. The staging watermark is cleared first, so a crash in
    /// between leaves a staging table that the next rebuild discards.
    fn flush_staging(&mut self, token: &str, agg: &mut Agg, wm: i64) -> anyhow::Result<()> {
        let t0 = Instant::now();
        let (names, rows) = agg.take_sorted();
        // Per-row cost differs from the previous flush (bigger table, other
        // key spread): start small again rather than overshoot the budget,
        // and aim at a quarter of it (bulk work: margin over throughput).
        self.batcher = Batcher::new((self.max_lock_ms / 2).max(1));
        if !rows.is_empty() {
            self.db.write(|tx| {
                Self::check_owner(tx, token)?;
                store::state_delete(tx, REBUILD_KEY)?;
                Ok(())
            })?;
            self.totals.transactions += 1;
            let mut i = 0;
            while i < rows.len() {
                let n = self.batcher.size().max(1).min(rows.len() - i);
                let chunk = &rows[i..i + n];
                let fresh = self.staging_fresh;
                let (upserted, new) = self.db.write(|tx| {
                    Self::check_owner(tx, token)?;
                    if fresh {
                        insert_new(tx, STAGING_TABLE, &names, chunk)
                    } else {
                        upsert(tx, STAGING_TABLE, &names, chunk)
                    }
                })?;
                self.batcher.observe(n, self.db.last_hold());
                self.totals.transactions += 1;
                self.maybe_checkpoint(8);
                self.totals.upserted += upserted;
                self.totals.new += new;
                i += n;
            }
        }
        self.db.write(|tx| {
            Self::check_owner(tx, token)?;
            store::state_set(tx, REBUILD_KEY, &wm.to_string())?;
            Ok(())
        })?;
        self.staging_fresh = false;
        self.totals.transactions += 1;
        log::info!(
            "rebuild: wrote {} pairs to staging up to observation {wm} in {:.0} ms",
            rows.len(),
            t0.elapsed().as_secs_f64() * 1000.0
        );
        Ok(())
    }

    /// Rebuild pass into the staging table from `start`. Returns the
    /// staging watermark when caught up, None when stopped by the deadline.
    fn drain_rebuild(&mut self, token: &str, start: i64) -> anyhow::Result<Option<i64>> {
        let mut agg = Agg::default();
        let mut wm = start;
        let size = self.fixed_batch.unwrap_or(REBUILD_SCAN_ROWS).max(1);
        let t0 = Instant::now();
        loop {
            if agg.len() == 0 {
                log::info!(
                    "rebuild: scanning after observation {wm} ({:.0} ms so far)",
                    t0.elapsed().as_secs_f64() * 1000.0
                );
            }
            let batch = scan(self.db.conn(), &self.idx, wm, size, &mut agg)?;
            if batch.rows == 0 {
                self.flush_staging(token, &mut agg, wm)?;
                return Ok(Some(wm));
            }
            wm = batch.last_id;
            self.totals.add_scan(&batch);
            self.tick(batch.rows);
            if self.deadline.expired() {
                self.flush_staging(token, &mut agg, wm)?;
                return Ok(None);
            }
            if agg.len() >= REBUILD_MAX_PAIRS {
                self.flush_staging(token, &mut agg, wm)?;
            }
        }
    }
}

fn load_index(conn: &Connection) -> anyhow::Result<PrefixIndex> {
    let mut st = conn.prepare("SELECT public_key FROM nodes")?;
    let mut rows = st.query([])?;
    let mut keys = Vec::new();
    while let Some(r) = rows.next()? {
        if let Some(k) = text(r.get_ref(0)?) {
            keys.push(k.to_string());
        }
    }
    Ok(PrefixIndex::new(keys))
}

/// First incremental run on a table CoreScope filled: start after the last
/// observation whose timestamp is ≤ MAX(last_seen) (compared as instants).
fn seed_from_existing(db: &mut WriteDb) -> anyhow::Result<Option<Value>> {
    if read_watermark(db.conn(), WATERMARK_KEY)?.is_some() {
        return Ok(None);
    }
    let rows: i64 = db
        .conn()
        .query_row("SELECT count(*) FROM neighbor_edges", [], |r| r.get(0))?;
    if rows == 0 {
        return Ok(None);
    }
    let mut max_seen: Option<i64> = None;
    {
        let mut st = db.conn().prepare("SELECT last_seen FROM neighbor_edges")?;
        let mut it = st.query([])?;
        while let Some(r) = it.next()? {
            if let Some(t) = text(r.get_ref(0)?).and_then(timeutil::parse_instant) {
                max_seen = Some(max_seen.map_or(t, |m: i64| m.max(t)));
            }
        }
    }
    let start: i64 = match max_seen {
        Some(t) => db
            .conn()
            .query_row(
                "SELECT MAX(id) FROM observations WHERE timestamp <= ?1",
                [t],
                |r| r.get::<_, Option<i64>>(0),
            )?
            .unwrap_or(0),
        None => 0,
    };
    let applied = db.write(|tx| {
        if read_watermark(tx, WATERMARK_KEY)?.is_some() {
            return Ok(false);
        }
        store::state_set(tx, WATERMARK_KEY, &start.to_string())?;
        Ok(true)
    })?;
    if !applied {
        return Ok(None);
    }
    Ok(Some(json!({
        "existing_edges": rows,
        "max_last_seen": max_seen.map(timeutil::rfc3339),
        "start_after_id": start,
    })))
}

/// Takes ownership of the staging table: resumes a consistent one, else
/// creates it empty. Returns the id the staging pass resumes after, and
/// whether it was a resume.
fn prepare_staging(db: &mut WriteDb, token: &str) -> anyhow::Result<(i64, bool)> {
    db.write(|tx| {
        let left = interrupted_rebuild(tx)?;
        store::state_set(tx, OWNER_KEY, token)?;
        if let Some(w) = left.as_ref().and_then(|l| l.resumable_after) {
            return Ok((w, true));
        }
        if left.is_some() {
            // Not consistent: set aside (a cheap rename) and emptied in short
            // batches with the old tables, never one long DROP under the lock.
            retire_staging(tx, token)?;
        }
        tx.execute_batch(&staging_ddl()?)?;
        store::state_set(tx, REBUILD_KEY, "0")?;
        Ok((0, false))
    })
}

/// `token` as a table-name suffix.
fn name_suffix(token: &str) -> String {
    token
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Renames the staging table of an interrupted rebuild to an old table
/// ([`drop_old_tables`] empties and drops it) and forgets its state.
fn retire_staging(tx: &Transaction<'_>, token: &str) -> anyhow::Result<()> {
    // legacy_alter_table: the rename must not re-check unrelated views and
    // triggers (one broken view would make it fail).
    tx.pragma_update(None, "legacy_alter_table", true)?;
    let r = tx.execute_batch(&format!(
        "ALTER TABLE {STAGING_TABLE} RENAME TO {OLD_TABLE_PREFIX}staging_{}",
        name_suffix(token)
    ));
    let _ = tx.pragma_update(None, "legacy_alter_table", false);
    r?;
    store::state_delete(tx, REBUILD_KEY)?;
    Ok(())
}

/// An incremental run that finds the staging table of a stopped rebuild:
/// a consistent one is kept for `--rebuild` to resume (it may stand for a
/// long scan) and reported; one that is not consistent is set aside to be
/// dropped. Returns the report entry.
fn handle_leftover_staging(db: &mut WriteDb, token: &str) -> anyhow::Result<Option<Value>> {
    let Some(left) = interrupted_rebuild(db.conn())? else {
        return Ok(None);
    };
    if let Some(w) = left.resumable_after {
        return Ok(Some(json!({
            "staging_rows": left.staging_rows,
            "resumable_after_id": w,
            "action": "kept",
        })));
    }
    let retired = db.write(|tx| {
        // Re-check under the lock: a rebuild may have taken it over meanwhile.
        match interrupted_rebuild(tx)? {
            Some(l) if l.resumable_after.is_none() => {
                retire_staging(tx, token)?;
                store::state_delete(tx, OWNER_KEY)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    })?;
    Ok(retired.then(|| {
        json!({
            "staging_rows": left.staging_rows,
            "resumable_after_id": Value::Null,
            "action": "dropped",
        })
    }))
}

/// Swaps the staging table in; sets the watermark to the staging watermark.
/// The old table is renamed (cheap), not dropped, inside the transaction.
fn swap_in(db: &mut WriteDb, token: &str) -> anyhow::Result<i64> {
    let old: String = format!("{OLD_TABLE_PREFIX}{}", name_suffix(token));
    db.write(|tx| {
        Run::check_owner(tx, token)?;
        let Some(w) = read_watermark(tx, REBUILD_KEY)? else {
            return Err(Failure::Fatal(
                "internal error: staging table is not consistent at swap time".into(),
            )
            .into());
        };
        // legacy_alter_table: RENAME must not rewrite or re-check views and
        // triggers that mention neighbor_edges.
        tx.pragma_update(None, "legacy_alter_table", true)?;
        let r = (|| -> anyhow::Result<()> {
            tx.execute_batch(&format!(
                "ALTER TABLE {EDGES_TABLE} RENAME TO {old};
                 ALTER TABLE {STAGING_TABLE} RENAME TO {EDGES_TABLE};"
            ))?;
            store::state_set(tx, WATERMARK_KEY, &w.to_string())?;
            store::state_delete(tx, REBUILD_KEY)?;
            store::state_delete(tx, OWNER_KEY)?;
            store::state_delete(tx, NEEDS_REBUILD_KEY)?;
            Ok(())
        })();
        let _ = tx.pragma_update(None, "legacy_alter_table", false);
        r?;
        Ok(w)
    })
}

/// Empties and drops the old tables left by swaps, in transactions sized to
/// the lock budget. Stops at the deadline (after at least one batch); a later
/// run continues. Returns the rows deleted.
fn drop_old_tables(db: &mut WriteDb, max_lock_ms: u64, deadline: &Deadline) -> anyhow::Result<u64> {
    let names = old_tables(db.conn())?;
    let mut batcher = Batcher::new((max_lock_ms / 2).max(1));
    let mut deleted = 0u64;
    for name in names {
        loop {
            let n = batcher.size().max(1);
            let gone = db.write(|tx| {
                if !store::table_exists(tx, &name)? {
                    return Ok(0usize);
                }
                let gone = tx.execute(
                    &format!("DELETE FROM \"{name}\" WHERE rowid IN (SELECT rowid FROM \"{name}\" ORDER BY rowid LIMIT ?1)"),
                    [n as i64],
                )?;
                if gone == 0 {
                    tx.execute_batch(&format!("DROP TABLE IF EXISTS \"{name}\""))?;
                }
                Ok(gone)
            })?;
            batcher.observe(gone, db.last_hold());
            deleted += gone as u64;
            if gone == 0 {
                break;
            }
            if deadline.expired() {
                return Ok(deleted);
            }
        }
    }
    Ok(deleted)
}

pub fn run(ctx: &Ctx, args: &BuildEdgesArgs) -> anyhow::Result<Outcome> {
    let mut db = WriteDb::open(&ctx.db_path, &ctx.open_options(false))?;
    db.require_ready()?;
    // In WAL mode NORMAL skips the fsync per commit but never breaks
    // atomicity: a power loss can only drop the latest transactions, each of
    // which carries its own watermark, so nothing is double-counted or lost.
    // Checkpoints run explicitly (PASSIVE, outside any transaction) instead
    // of inside our commits, so a checkpoint never lengthens a lock hold.
    let wal = db.tune_for_batches()?;
    // 8 MiB page cache (SQLite's default is 2 MiB): upserts into a large
    // edge table touch pages all over its two B-trees.
    db.conn().execute_batch("PRAGMA cache_size = -8192")?;
    let idx = load_index(db.conn()).context("loading the node prefix index")?;
    let batcher = Batcher::new(args.write.max_lock_ms);
    let deadline = Deadline::new(args.write.max_seconds);
    let token = format!("{}-{:016x}", std::process::id(), rand::random::<u64>());

    let mut seeded = None;
    let mut resumed_from = None;
    let mut leftover = None;
    let start_wm = if args.rebuild {
        refuse_foreign_objects(db.conn(), &ctx.db_path)?;
        let (w, resumed) = prepare_staging(&mut db, &token)?;
        if resumed {
            resumed_from = Some(w);
        }
        w
    } else {
        refuse_watermark_ahead(db.conn(), &ctx.db_path)?;
        leftover = handle_leftover_staging(&mut db, &token)?;
        seeded = seed_from_existing(&mut db)?;
        read_watermark(db.conn(), WATERMARK_KEY)?.unwrap_or(0)
    };
    let max_id: i64 =
        db.conn()
            .query_row("SELECT COALESCE(MAX(id), 0) FROM observations", [], |r| {
                r.get(0)
            })?;
    let backlog = (max_id - start_wm).max(0) as u64;
    let progress = (ctx.progress_allowed() && backlog >= 200_000)
        .then(|| engine::progress_bar(backlog, "build-edges", "observations"));

    let mut runner = Run {
        db: &mut db,
        idx,
        batcher,
        fixed_batch: args.batch_size.map(|n| n.min(1_000_000) as usize),
        deadline,
        totals: Totals::default(),
        progress,
        staging_fresh: args.rebuild && resumed_from.is_none(),
        wal,
        max_lock_ms: args.write.max_lock_ms,
        commits_since_checkpoint: 0,
    };
    let (complete, staging_wm) = if args.rebuild {
        match runner.drain_rebuild(&token, start_wm)? {
            Some(w) => (true, Some(w)),
            None => (false, None),
        }
    } else {
        (runner.drain_live()?, None)
    };
    runner.maybe_checkpoint(1);
    let totals = std::mem::take(&mut runner.totals);
    if let Some(p) = runner.progress.take() {
        p.finish_and_clear();
    }
    let mut swapped = false;
    if args.rebuild && staging_wm.is_some() {
        let t0 = Instant::now();
        swap_in(&mut db, &token)?;
        log::info!(
            "rebuild: swapped in ({:.0} ms)",
            t0.elapsed().as_secs_f64() * 1000.0
        );
        swapped = true;
    }
    // Old tables of this or an earlier (interrupted) swap.
    let old_rows_deleted = drop_old_tables(&mut db, args.write.max_lock_ms, &deadline)?;
    if wal {
        db.checkpoint_passive();
    }
    let watermark = read_watermark(db.conn(), WATERMARK_KEY)?;
    // Counting the table costs a full index scan: only after a rebuild.
    let edges_total: Option<i64> = if swapped {
        Some(
            db.conn()
                .query_row("SELECT count(*) FROM neighbor_edges", [], |r| r.get(0))?,
        )
    } else {
        None
    };

    let report = BuildEdgesReport {
        mode: if args.rebuild {
            "rebuild"
        } else {
            "incremental"
        },
        observations_scanned: totals.scanned,
        candidates: totals.candidates,
        edges_upserted: totals.upserted,
        edges_new: totals.new,
        watermark,
        complete,
        max_lock_hold_ms: db.max_lock_hold_ms(),
        batches: totals.batches,
        batches_discarded: totals.discarded,
        transactions: totals.transactions,
        trace_rows_skipped: totals.trace_skipped,
        old_table_rows_deleted: old_rows_deleted,
        edges_total,
        seeded,
        interrupted_rebuild: (!args.rebuild).then(|| leftover.unwrap_or(Value::Null)),
        rebuild: if args.rebuild {
            Some(RebuildReport {
                resumed_after_id: resumed_from,
                swapped,
                staging_watermark: read_watermark(db.conn(), REBUILD_KEY)?,
            })
        } else {
            None
        },
    };
    Outcome::from_report(&report)
}

/// The report of `build-edges`: its fields are the keys of `--json` (and
/// of the metrics file).
#[derive(Debug, Serialize)]
struct BuildEdgesReport {
    mode: &'static str,
    observations_scanned: u64,
    candidates: u64,
    edges_upserted: u64,
    edges_new: u64,
    watermark: Option<i64>,
    complete: bool,
    max_lock_hold_ms: f64,
    batches: u64,
    batches_discarded: u64,
    transactions: u64,
    trace_rows_skipped: u64,
    old_table_rows_deleted: u64,
    /// Counted after a swap only (a full index scan).
    edges_total: Option<i64>,
    /// The first run on edges built by CoreScope: where counting starts.
    seeded: Option<Value>,
    /// Incremental runs only: the staging table a stopped rebuild left.
    #[serde(skip_serializing_if = "Option::is_none")]
    interrupted_rebuild: Option<Value>,
    /// `--rebuild` runs only.
    #[serde(skip_serializing_if = "Option::is_none")]
    rebuild: Option<RebuildReport>,
}

#[derive(Debug, Serialize)]
struct RebuildReport {
    resumed_after_id: Option<i64>,
    swapped: bool,
    staging_watermark: Option<i64>,
}

impl Report for BuildEdgesReport {
    fn human(&self) -> String {
        let rebuild = self.rebuild.as_ref();
        let mut human = format!(
            "build-edges{}: scanned {} observations, {} candidates, {} edges upserted ({} new), watermark {}, {}",
            if rebuild.is_some() { " --rebuild" } else { "" },
            self.observations_scanned,
            self.candidates,
            self.edges_upserted,
            self.edges_new,
            self.watermark.map_or("none".to_string(), |w| w.to_string()),
            if self.complete { "complete" } else { "incomplete (stopped by --max-seconds; run again to continue)" },
        );
        if let Some(s) = &self.seeded {
            human.push_str(&format!(
                "; first run on edges built by CoreScope: counting starts after observation {} (last with timestamp <= {})",
                s["start_after_id"],
                s["max_last_seen"].as_str().unwrap_or("unknown")
            ));
        }
        if let Some(r) = rebuild.and_then(|r| r.resumed_after_id) {
            human.push_str(&format!(
                "; resumed an interrupted rebuild after observation {r}"
            ));
        }
        if rebuild.is_some_and(|r| r.swapped) {
            human.push_str(&format!(
                "; {} edges swapped in",
                self.edges_total.unwrap_or(0)
            ));
        }
        if let Some(l) = self.interrupted_rebuild.as_ref().filter(|l| !l.is_null()) {
            if l["action"] == "kept" {
                human.push_str(&format!(
                    "; note: a stopped `build-edges --rebuild` left its staging table ({} rows, consistent up to observation {}): `corescope build-edges --rebuild` resumes and finishes it",
                    l["staging_rows"], l["resumable_after_id"]
                ));
            } else {
                human.push_str(&format!(
                    "; note: dropped the unfinished staging table of a stopped `build-edges --rebuild` ({} rows, not resumable)",
                    l["staging_rows"]
                ));
            }
        }
        human.push('\n');
        human
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::edge_state::observation_ceiling;
    use rusqlite::types::ValueRef;

    #[test]
    fn staging_table_is_the_catalogs_neighbor_edges() {
        assert_eq!(
            staging_ddl().unwrap(),
            "CREATE TABLE _corescope_edges_rebuild (\n  node_a TEXT NOT NULL,\n  node_b TEXT NOT NULL,\n  count INTEGER DEFAULT 1,\n  last_seen TEXT,\n  PRIMARY KEY (node_a, node_b)\n)"
        );
    }

    fn edges_db() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE TABLE observations (id INTEGER PRIMARY KEY AUTOINCREMENT, x);
             CREATE TABLE neighbor_edges (node_a TEXT NOT NULL, node_b TEXT NOT NULL, count INTEGER DEFAULT 1, last_seen TEXT, PRIMARY KEY (node_a, node_b));
             CREATE TABLE _corescope_state (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at TEXT NOT NULL);
             INSERT INTO observations (x) VALUES (1), (2), (3);",
        )
        .unwrap();
        c
    }

    #[test]
    fn foreign_objects_lists_what_the_catalog_does_not_define() {
        let c = edges_db();
        assert!(foreign_objects(&c).unwrap().is_empty());
        c.execute_batch(
            "ALTER TABLE neighbor_edges ADD COLUMN note TEXT;
             CREATE INDEX ix ON neighbor_edges(last_seen);
             CREATE TRIGGER tr AFTER DELETE ON neighbor_edges BEGIN SELECT 1; END;",
        )
        .unwrap();
        assert_eq!(
            foreign_objects(&c).unwrap(),
            vec!["column neighbor_edges.note", "index ix", "trigger tr"]
        );
    }

    #[test]
    fn watermark_ahead_uses_the_autoincrement_counter() {
        let c = edges_db();
        store::state_set(&c, WATERMARK_KEY, "3").unwrap();
        assert_eq!(watermark_ahead(&c).unwrap(), None);
        // The newest rows deleted: their ids are still taken.
        c.execute("DELETE FROM observations WHERE id >= 2", [])
            .unwrap();
        assert_eq!(observation_ceiling(&c).unwrap(), 3);
        assert_eq!(watermark_ahead(&c).unwrap(), None);
        store::state_set(&c, WATERMARK_KEY, "4").unwrap();
        assert_eq!(watermark_ahead(&c).unwrap(), Some((4, 3)));
    }

    #[test]
    fn epoch_tolerates_storage_classes() {
        assert_eq!(epoch(ValueRef::Integer(5)), Some(5));
        assert_eq!(epoch(ValueRef::Real(5.9)), Some(5));
        assert_eq!(epoch(ValueRef::Text(b"1970-01-01T00:00:10Z")), Some(10));
        assert_eq!(epoch(ValueRef::Text(b"junk")), None);
        assert_eq!(epoch(ValueRef::Null), None);
        assert_eq!(text(ValueRef::Blob(b"x")), None);
        assert_eq!(text(ValueRef::Text(b"x")), Some("x"));
        assert_eq!(text(ValueRef::Text(&[0xff, 0xfe])), None);
    }
}
