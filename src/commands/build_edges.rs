//! `corescope build-edges [--rebuild]`: exactly-once incremental neighbor
//! graph (spec corescope-db.md §6.8, §8.1; design notes in docs/build-edges.md).
//!
//! Invariant kept by every committed transaction: `neighbor_edges` holds
//! exactly the candidates of all observations with `id <= watermark`
//! (`_corescope_state` key `build_edges.watermark`). Each batch:
//! 1. reads the watermark `w` and scans the next observations `id > w` in id
//!    order **outside** the write lock (a plain read), aggregating candidates
//!    per pair in memory;
//! 2. in one `BEGIN IMMEDIATE` transaction re-reads the watermark; if another
//!    run moved it meanwhile the batch is discarded (never counted twice),
//!    otherwise upserts the aggregated pairs and sets the watermark to the last
//!    id scanned — in the same transaction.
//!
//! So a crash, `kill -9`, `--max-seconds` or an overlapping run can neither
//! double-count nor skip an observation.
//!
//! `--rebuild` runs the same loop into a staging table with its own
//! watermark (`build_edges.rebuild_watermark`; an interrupted rebuild resumes),
//! then swaps it in with one short transaction (`DROP` + `ALTER TABLE RENAME`)
//! that also sets the main watermark.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, Transaction};
use serde_json::{json, Value};

use crate::cli::BuildEdgesArgs;
use crate::context::Ctx;
use crate::db::{self, Batcher, Deadline, WriteDb};
use crate::edges::{self, ObsInput, PrefixIndex, PAYLOAD_TRACE};
use crate::error::Failure;
use crate::report::Outcome;
use crate::timeutil;

/// State key of the incremental watermark (last observation id counted).
pub const WATERMARK_KEY: &str = "build_edges.watermark";
/// State key of the rebuild's staging watermark.
pub const REBUILD_KEY: &str = "build_edges.rebuild_watermark";
/// The rebuild's staging table.
pub const STAGING_TABLE: &str = "_corescope_edges_rebuild";

const EDGES_TABLE: &str = "neighbor_edges";

/// Same shape as `neighbor_edges` (spec §1.2).
const STAGING_DDL: &str = "CREATE TABLE _corescope_edges_rebuild (\n  node_a    TEXT NOT NULL,\n  node_b    TEXT NOT NULL,\n  count     INTEGER DEFAULT 1,\n  last_seen TEXT,\n  PRIMARY KEY (node_a, node_b)\n)";

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

/// Where a pass writes: the live table or the rebuild's staging table.
#[derive(Debug, Clone, Copy)]
struct Dest {
    table: &'static str,
    key: &'static str,
}

const LIVE: Dest = Dest {
    table: EDGES_TABLE,
    key: WATERMARK_KEY,
};
const STAGING: Dest = Dest {
    table: STAGING_TABLE,
    key: REBUILD_KEY,
};

/// Aggregated candidates of one batch: pair → (count, latest epoch).
type Agg = HashMap<(String, String), (i64, Option<i64>)>;

#[derive(Debug, Default)]
struct Batch {
    rows: u64,
    candidates: u64,
    trace_skipped: u64,
    last_id: i64,
    agg: Agg,
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
}

fn text(v: ValueRef<'_>) -> Option<&str> {
    match v {
        ValueRef::Text(t) => std::str::from_utf8(t).ok(),
        _ => None,
    }
}

/// Observation time as epoch seconds; tolerant of legacy storage classes.
fn epoch(v: ValueRef<'_>) -> Option<i64> {
    match v {
        ValueRef::Integer(i) => Some(i),
        ValueRef::Real(f) if f.is_finite() => Some(f.floor() as i64),
        ValueRef::Text(_) => text(v).and_then(timeutil::parse_instant),
        _ => None,
    }
}

fn int(v: ValueRef<'_>) -> Option<i64> {
    match v {
        ValueRef::Integer(i) => Some(i),
        _ => None,
    }
}

/// Scan up to `limit` observations after `after`, extract and aggregate.
fn scan(conn: &Connection, idx: &PrefixIndex, after: i64, limit: usize) -> anyhow::Result<Batch> {
    let mut st = conn.prepare_cached(SCAN_SQL)?;
    let mut rows = st.query(rusqlite::params![after, limit as i64])?;
    let mut b = Batch {
        last_id: after,
        ..Default::default()
    };
    while let Some(r) = rows.next()? {
        let id: i64 = r.get(0)?;
        b.rows += 1;
        b.last_id = id;
        let payload_type = int(r.get_ref(3)?);
        if payload_type == Some(PAYLOAD_TRACE) {
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
        let cands = edges::extract(&obs, idx);
        if cands.is_empty() {
            continue;
        }
        let ts = epoch(r.get_ref(1)?);
        for pair in cands {
            b.candidates += 1;
            let e = b.agg.entry(pair).or_insert((0, None));
            e.0 += 1;
            e.1 = match (e.1, ts) {
                (Some(x), Some(y)) => Some(x.max(y)),
                (x, None) => x,
                (None, y) => y,
            };
        }
    }
    Ok(b)
}

fn read_watermark(conn: &Connection, key: &str) -> anyhow::Result<Option<i64>> {
    match db::state_get(conn, key)? {
        None => Ok(None),
        Some(v) => v.trim().parse::<i64>().map(Some).map_err(|_| {
            Failure::Fatal(format!(
                "corrupt state: {key} = {v:?} is not an observation id; run `corescope build-edges --rebuild`"
            ))
            .into()
        }),
    }
}

/// What one batch transaction did.
#[derive(Debug)]
enum Applied {
    /// Counted: (edges upserted, edges new).
    Done(u64, u64),
    /// Another run moved the watermark first; nothing written.
    Moved,
    /// The staging table is gone: a concurrent rebuild already swapped it in.
    Gone,
}

/// Upserts one batch if the watermark is still `expected`.
fn apply(tx: &Transaction<'_>, dest: Dest, expected: i64, b: &Batch) -> anyhow::Result<Applied> {
    let current = read_watermark(tx, dest.key)?;
    if dest.table == STAGING_TABLE && (current.is_none() || !db::table_exists(tx, STAGING_TABLE)?) {
        return Ok(Applied::Gone);
    }
    if current.unwrap_or(0) != expected {
        return Ok(Applied::Moved);
    }
    let mut upd = tx.prepare_cached(&format!(
        "UPDATE {} SET count = COALESCE(count, 0) + ?3,
                last_seen = CASE WHEN ?4 IS NOT NULL
                                  AND (unixepoch(last_seen) IS NULL OR unixepoch(last_seen) < unixepoch(?4))
                                 THEN ?4 ELSE last_seen END
          WHERE node_a = ?1 AND node_b = ?2",
        dest.table
    ))?;
    let mut ins = tx.prepare_cached(&format!(
        "INSERT INTO {} (node_a, node_b, count, last_seen) VALUES (?1, ?2, ?3, ?4)",
        dest.table
    ))?;
    let (mut upserted, mut new) = (0u64, 0u64);
    // Sorted so that the write order (and the table's page layout) is
    // deterministic across runs.
    let mut pairs: Vec<_> = b.agg.iter().collect();
    pairs.sort_unstable_by(|x, y| x.0.cmp(y.0));
    for ((a, bb), (count, ts)) in pairs {
        let ls = ts.map(timeutil::rfc3339);
        let n = upd.execute(rusqlite::params![a, bb, count, ls])?;
        if n == 0 {
            ins.execute(rusqlite::params![a, bb, count, ls])?;
            new += 1;
        }
        upserted += 1;
    }
    db::state_set(tx, dest.key, &b.last_id.to_string())?;
    Ok(Applied::Done(upserted, new))
}

struct Run<'a> {
    db: &'a mut WriteDb,
    idx: PrefixIndex,
    batcher: Batcher,
    fixed_batch: Option<usize>,
    deadline: Deadline,
    totals: Totals,
    progress: Option<indicatif::ProgressBar>,
}

impl Run<'_> {
    /// Drains the backlog into `dest`. Returns true when caught up, false
    /// when stopped by the deadline (always after at least one batch).
    fn drain(&mut self, dest: Dest) -> anyhow::Result<bool> {
        loop {
            let wm = read_watermark(self.db.conn(), dest.key)?.unwrap_or(0);
            let size = self
                .fixed_batch
                .unwrap_or_else(|| self.batcher.size())
                .max(1);
            let batch = scan(self.db.conn(), &self.idx, wm, size)?;
            if batch.rows == 0 {
                return Ok(true);
            }
            let res = self.db.write(|tx| {
                let start = Instant::now();
                let r = apply(tx, dest, wm, &batch)?;
                Ok((r, start.elapsed()))
            })?;
            match res {
                (Applied::Done(upserted, new), held) => {
                    self.totals.batches += 1;
                    self.totals.scanned += batch.rows;
                    self.totals.candidates += batch.candidates;
                    self.totals.trace_skipped += batch.trace_skipped;
                    self.totals.upserted += upserted;
                    self.totals.new += new;
                    self.batcher
                        .observe(batch.rows as usize, held.max(Duration::from_micros(1)));
                    if let Some(p) = &self.progress {
                        p.inc(batch.rows);
                    }
                }
                (Applied::Moved, _) => {
                    // Another run advanced the watermark: rescan from it.
                    self.totals.discarded += 1;
                }
                (Applied::Gone, _) => return Ok(true),
            }
            if self.deadline.expired() {
                return Ok(false);
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
        db::state_set(tx, WATERMARK_KEY, &start.to_string())?;
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

/// Creates the staging table (or finds a resumable one). Returns the id the
/// staging pass resumes after, or None for a fresh start.
fn prepare_staging(db: &mut WriteDb) -> anyhow::Result<Option<i64>> {
    let exists = db.table_exists(STAGING_TABLE)?;
    if exists {
        if let Some(w) = read_watermark(db.conn(), REBUILD_KEY)? {
            return Ok(Some(w));
        }
    }
    db.write(|tx| {
        tx.execute_batch(&format!("DROP TABLE IF EXISTS {STAGING_TABLE}"))?;
        tx.execute_batch(STAGING_DDL)?;
        db::state_set(tx, REBUILD_KEY, "0")?;
        Ok(())
    })?;
    Ok(None)
}

/// Swaps the staging table in. Returns the new watermark, or None when a
/// concurrent run already swapped it.
fn swap_in(db: &mut WriteDb) -> anyhow::Result<Option<i64>> {
    db.write(|tx| {
        if !db::table_exists(tx, STAGING_TABLE)? {
            return Ok(None);
        }
        let Some(w) = read_watermark(tx, REBUILD_KEY)? else {
            return Ok(None);
        };
        // legacy_alter_table: RENAME must not re-check views/triggers that
        // mention neighbor_edges while it is momentarily absent.
        tx.pragma_update(None, "legacy_alter_table", true)?;
        let r = (|| -> anyhow::Result<()> {
            tx.execute_batch(&format!(
                "DROP TABLE IF EXISTS {EDGES_TABLE};
                 ALTER TABLE {STAGING_TABLE} RENAME TO {EDGES_TABLE};"
            ))?;
            db::state_set(tx, WATERMARK_KEY, &w.to_string())?;
            db::state_delete(tx, REBUILD_KEY)?;
            Ok(())
        })();
        let _ = tx.pragma_update(None, "legacy_alter_table", false);
        r?;
        Ok(Some(w))
    })
}

pub fn run(ctx: &Ctx, args: &BuildEdgesArgs) -> anyhow::Result<Outcome> {
    let mut db = WriteDb::open(&ctx.db_path, &ctx.open_options(false))?;
    db.require_ready()?;
    let idx = load_index(db.conn()).context("loading the node prefix index")?;
    let batcher = Batcher::new(args.write.max_lock_ms);
    let deadline = Deadline::new(args.write.max_seconds);
    let mut out = Outcome::new();

    let mut seeded = None;
    let mut resumed_from = None;
    let dest = if args.rebuild {
        resumed_from = prepare_staging(&mut db)?;
        STAGING
    } else {
        seeded = seed_from_existing(&mut db)?;
        LIVE
    };

    let start_wm = read_watermark(db.conn(), dest.key)?.unwrap_or(0);
    let max_id: i64 =
        db.conn()
            .query_row("SELECT COALESCE(MAX(id), 0) FROM observations", [], |r| {
                r.get(0)
            })?;
    let backlog = (max_id - start_wm).max(0) as u64;
    let progress = (ctx.progress_allowed() && backlog >= 100_000).then(|| {
        let p = indicatif::ProgressBar::new(backlog);
        p.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} build-edges {bar:40} {pos}/{len} ids ({per_sec}, eta {eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        p
    });

    let mut runner = Run {
        db: &mut db,
        idx,
        batcher,
        fixed_batch: args.batch_size.map(|n| n.min(1_000_000) as usize),
        deadline,
        totals: Totals::default(),
        progress,
    };
    let caught_up = runner.drain(dest)?;
    let totals = std::mem::take(&mut runner.totals);
    if let Some(p) = runner.progress.take() {
        p.finish_and_clear();
    }

    let mut swapped = None;
    if args.rebuild && caught_up {
        swapped = Some(swap_in(&mut db)?.is_some());
    }
    let watermark = read_watermark(db.conn(), WATERMARK_KEY)?;
    let complete = caught_up;
    let edges_total: i64 = db
        .conn()
        .query_row("SELECT count(*) FROM neighbor_edges", [], |r| r.get(0))?;

    out.set(
        "mode",
        if args.rebuild {
            "rebuild"
        } else {
            "incremental"
        },
    );
    out.set("observations_scanned", totals.scanned);
    out.set("candidates", totals.candidates);
    out.set("edges_upserted", totals.upserted);
    out.set("edges_new", totals.new);
    out.set("watermark", watermark.map_or(Value::Null, Value::from));
    out.set("complete", complete);
    out.set("max_lock_hold_ms", db.max_lock_hold_ms());
    out.set("batches", totals.batches);
    out.set("batches_discarded", totals.discarded);
    out.set("trace_rows_skipped", totals.trace_skipped);
    out.set("edges_total", edges_total);
    out.set("seeded", seeded.clone().unwrap_or(Value::Null));
    if args.rebuild {
        let staging_wm = read_watermark(db.conn(), REBUILD_KEY)?;
        out.set(
            "rebuild",
            json!({
                "resumed_after_id": resumed_from,
                "swapped": swapped.unwrap_or(false),
                "staging_watermark": staging_wm,
            }),
        );
    }

    let mut human = format!(
        "build-edges{}: scanned {} observations, {} candidates, {} edges upserted ({} new), watermark {}, {}",
        if args.rebuild { " --rebuild" } else { "" },
        totals.scanned,
        totals.candidates,
        totals.upserted,
        totals.new,
        watermark.map_or("none".to_string(), |w| w.to_string()),
        if complete { "complete" } else { "incomplete (stopped by --max-seconds; run again to continue)" },
    );
    if let Some(s) = &seeded {
        human.push_str(&format!(
            "; first run on edges built by CoreScope: counting starts after observation {} (last with timestamp <= {})",
            s["start_after_id"],
            s["max_last_seen"].as_str().unwrap_or("unknown")
        ));
    }
    if let Some(r) = resumed_from {
        human.push_str(&format!(
            "; resumed an interrupted rebuild after observation {r}"
        ));
    }
    if args.rebuild && complete {
        human.push_str(&format!("; {edges_total} edges swapped in"));
    }
    human.push('\n');
    out.human = human;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
