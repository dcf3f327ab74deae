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
//!
//! Every transaction goes through the batch engine (lock budget, fairness
//! pause, deadline, checkpoint policy).

mod agg;
mod guard;
mod passes;
mod report;
mod rows;
mod scan;
mod staging;

use std::time::Instant;

use crate::cli::BuildEdgesArgs;
use crate::context::Ctx;
use crate::report::Outcome;
use crate::store::backfill_state;
use crate::store::edge_state::{read_watermark, rebuild_reasons, REBUILD_KEY, WATERMARK_KEY};
use crate::store::engine::{self, Engine, Target};
use crate::store::{Deadline, WriteDb};

use report::{BuildEdgesReport, RebuildReport};

const EDGES_TABLE: &str = "neighbor_edges";

/// Where a run starts: the watermark and what it found on the way.
struct Start {
    watermark: i64,
    seeded: Option<guard::Seeded>,
    resumed_from: Option<i64>,
    leftover: Option<staging::LeftStaging>,
}

/// Refusals, then the rebuild's staging table or the incremental run's
/// leftovers and seed.
fn start(
    engine: &mut Engine<'_>,
    ctx: &Ctx,
    rebuild: bool,
    stale: &[String],
    token: &str,
) -> anyhow::Result<Start> {
    if rebuild {
        guard::refuse_foreign_objects(engine.conn(), &ctx.db_path, stale)?;
        let (w, resumed) = staging::prepare_staging(engine, token)?;
        return Ok(Start {
            watermark: w,
            seeded: None,
            resumed_from: resumed.then_some(w),
            leftover: None,
        });
    }
    guard::refuse_watermark_ahead(engine.conn(), &ctx.db_path)?;
    let leftover = staging::handle_leftover_staging(engine, token)?;
    let seeded = guard::seed_from_existing(engine)?;
    Ok(Start {
        watermark: read_watermark(engine.conn(), WATERMARK_KEY)?.unwrap_or(0),
        seeded,
        resumed_from: None,
        leftover,
    })
}

pub fn run(ctx: &Ctx, args: &BuildEdgesArgs) -> anyhow::Result<Outcome> {
    Outcome::from_report(&build(ctx, args)?)
}

fn build(ctx: &Ctx, args: &BuildEdgesArgs) -> anyhow::Result<BuildEdgesReport> {
    let mut db = WriteDb::open(&ctx.db_path, &ctx.open_options(false))?;
    db.require_ready()?;
    // The engine sets synchronous = NORMAL (WAL mode): a power loss can only
    // drop the latest transactions, each of which carries its own
    // watermark, so nothing is double-counted or lost.
    let mut engine = Engine::new(
        Target::Write(&mut db),
        engine::Settings {
            max_lock_ms: args.write.max_lock_ms,
            deadline: Deadline::new(args.write.max_seconds),
        },
    )?;
    // 8 MiB page cache (SQLite's default is 2 MiB): upserts into a large
    // edge table touch pages all over its two B-trees.
    engine.conn().execute_batch("PRAGMA cache_size = -8192")?;
    let token = format!("{}-{:016x}", std::process::id(), rand::random::<u64>());
    // A graph marked stale (a rewrite of rows it had counted) is rebuilt by
    // the next run, exactly as `--rebuild`.
    let stale = rebuild_reasons(engine.conn())?;
    let rebuild = args.rebuild || !stale.is_empty();
    if rebuild && !args.rebuild {
        log::info!(
            "the graph is marked stale ({}): rebuilding",
            stale.join("; ")
        );
    }
    let start = start(&mut engine, ctx, rebuild, &stale, &token)?;
    let backlog = (scan::max_observation_id(engine.conn())? - start.watermark).max(0) as u64;
    // A timer's incremental run of a few batches needs no bar; a rebuild
    // (all observations) always shows one.
    let progress = (ctx.progress_allowed() && (rebuild || backlog >= 200_000))
        .then(|| engine::progress_bar(backlog, "build-edges", "observations"));

    let mut runner = passes::Run {
        engine: &mut engine,
        idx: None,
        fixed_batch: args.batch_size.map(|n| n.min(1_000_000) as usize),
        totals: scan::Totals::default(),
        progress,
        staging_fresh: rebuild && start.resumed_from.is_none(),
        max_lock_ms: args.write.max_lock_ms,
        logged: false,
    };
    let (complete, staging_wm) = if rebuild {
        let w = runner.drain_rebuild(&token, start.watermark)?;
        (w.is_some(), w)
    } else {
        (runner.drain_live()?, None)
    };
    let totals = std::mem::take(&mut runner.totals);
    let run_logged = runner.logged;
    if let Some(p) = runner.progress.take() {
        p.finish_and_clear();
    }
    engine.checkpoint();
    let swapped = rebuild && staging_wm.is_some();
    if swapped {
        let t0 = Instant::now();
        staging::swap_in(&mut engine, &token, &stale)?;
        log::info!(
            "rebuild: swapped in ({:.0} ms)",
            t0.elapsed().as_secs_f64() * 1000.0
        );
    }
    // Old tables of this or an earlier (interrupted) swap.
    let old_rows_deleted = staging::drop_old_tables(&mut engine, args.write.max_lock_ms)?;
    engine.checkpoint();
    let report = finish(engine.conn(), rebuild, swapped, &start)?;
    let waiting_for_backfill = match totals.waiting {
        Some(_) => {
            backfill_state::edges_waiting(engine.conn(), report.watermark.unwrap_or(0))?.counts
        }
        None => std::collections::BTreeMap::new(),
    };
    // An incremental run that caught up recorded itself in its last batch
    // (a tick is one write transaction); anything else records now.
    if !(run_logged && old_rows_deleted == 0) {
        engine.batch(|tx| {
            Ok((
                crate::store::state::record_run(tx, "build_edges", complete)?,
                1,
            ))
        })?;
    }
    Ok(BuildEdgesReport {
        observations_scanned: totals.scanned,
        candidates: totals.candidates,
        edges_upserted: totals.upserted,
        edges_new: totals.new,
        complete,
        max_lock_hold_ms: engine.stats(complete).max_lock_hold_ms,
        batches: totals.batches,
        batches_discarded: totals.discarded,
        transactions: totals.transactions,
        trace_rows_skipped: totals.trace_skipped,
        old_table_rows_deleted: old_rows_deleted,
        seeded: start.seeded,
        interrupted_rebuild: (!rebuild).then_some(start.leftover),
        waiting_for_backfill,
        waiting_at_id: totals.waiting.map(|(_, id)| id),
        stale_reasons: stale,
        automatic_rebuild: rebuild && !args.rebuild,
        ..report
    })
}

/// The parts of the report read from the database at the end (the rest is
/// filled in by the caller).
fn finish(
    conn: &rusqlite::Connection,
    rebuild: bool,
    swapped: bool,
    start: &Start,
) -> anyhow::Result<BuildEdgesReport> {
    // Counting the table costs a full index scan: only after a rebuild.
    let edges_total: Option<i64> = if swapped {
        Some(conn.query_row("SELECT count(*) FROM neighbor_edges", [], |r| r.get(0))?)
    } else {
        None
    };
    Ok(BuildEdgesReport {
        mode: if rebuild { "rebuild" } else { "incremental" },
        watermark: read_watermark(conn, WATERMARK_KEY)?,
        edges_total,
        rebuild: if rebuild {
            Some(RebuildReport {
                resumed_after_id: start.resumed_from,
                swapped,
                staging_watermark: read_watermark(conn, REBUILD_KEY)?,
            })
        } else {
            None
        },
        ..BuildEdgesReport::default()
    })
}
