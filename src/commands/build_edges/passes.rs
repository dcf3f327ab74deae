//! The two passes of build-edges through the batch engine: the incremental
//! pass into `neighbor_edges` and the rebuild pass into the staging table.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use super::agg::{Agg, IdRow};
use super::rows::{write_rows, Write};
use super::scan::{load_index, max_observation_id, read, scan, RowBatch, Totals};
use super::staging::{check_owner, once};
use super::EDGES_TABLE;
use crate::edges::PrefixIndex;
use crate::store::edge_state::{read_watermark, REBUILD_KEY, STAGING_TABLE, WATERMARK_KEY};
use crate::store::engine::Engine;
use crate::store::{self};

/// Rows per scan batch of a rebuild (scans hold no write lock).
const REBUILD_SCAN_ROWS: usize = 50_000;
/// A rebuild flushes its aggregate to staging beyond this many distinct pairs
/// (keeps memory bounded: about 60 bytes per pair at the peak).
const REBUILD_MAX_PAIRS: usize = 400_000;

pub struct Run<'e, 'db> {
    pub engine: &'e mut Engine<'db>,
    /// The prefix index of the nodes' keys, loaded when the first batch has
    /// observations to extract (an idle tick never builds it).
    pub idx: Option<PrefixIndex>,
    /// `--batch-size`: observations per batch instead of the adaptive size.
    pub fixed_batch: Option<usize>,
    pub totals: Totals,
    pub progress: Option<indicatif::ProgressBar>,
    /// The staging table was created empty by this run and not yet written.
    pub staging_fresh: bool,
    pub max_lock_ms: u64,
    /// The incremental pass recorded the run (`jobs.build_edges.*`, as
    /// complete) in its last transaction: a timer's tick is then one write
    /// transaction.
    pub logged: bool,
}

impl Run<'_, '_> {
    fn tick(&self, rows: u64) {
        if let Some(p) = &self.progress {
            p.inc(rows);
        }
    }

    /// Incremental pass into `neighbor_edges`. Returns true when caught up,
    /// false when stopped by the deadline (always after at least one batch).
    pub fn drain_live(&mut self) -> anyhow::Result<bool> {
        // The scan runs outside the lock; a batch holds it only to upsert
        // its distinct pairs (about one per ten observations on the bench
        // databases, 0.6–10 ms for 1 000 observations): start at 25 rows
        // per ms of budget (5 000 at 200 ms), so that a timer's tick of a
        // minute's observations is one transaction.
        let initial = (self.max_lock_ms.saturating_mul(25)).clamp(500, 10_000) as usize;
        self.engine.restart_batching_at(self.max_lock_ms, initial);
        let mut agg = Agg::default();
        loop {
            let wm = read_watermark(self.engine.conn(), WATERMARK_KEY)?.unwrap_or(0);
            let size = self
                .fixed_batch
                .unwrap_or_else(|| self.engine.batch_size())
                .max(1);
            agg.clear();
            let idx = match self.idx.take() {
                Some(idx) => idx,
                None if max_observation_id(self.engine.conn())? <= wm => {
                    self.totals.waiting = None;
                    return Ok(true);
                }
                None => load_index(self.engine.conn())?,
            };
            let batch = scan(self.engine.conn(), &idx, wm, size, &mut agg);
            self.idx = Some(idx);
            let batch = batch?;
            if batch.rows == 0 {
                self.totals.waiting = batch.waiting;
                return Ok(true);
            }
            let (names, rows) = agg.take_sorted();
            // A short batch (or one that stops to wait for a backfill) is
            // the last: it records the run too, as complete.
            let last = (batch.rows as usize) < size || batch.waiting.is_some();
            // The batcher is fed the rows of an applied batch only (a
            // discarded one says nothing about the cost of a batch).
            let applied = self.engine.batch(|tx| {
                if read_watermark(tx, WATERMARK_KEY)?.unwrap_or(0) != wm {
                    return Ok((None, 0));
                }
                let r = write_rows(tx, EDGES_TABLE, Write::Upsert, &names, &rows)?;
                store::state_set(tx, WATERMARK_KEY, &batch.last_id.to_string())?;
                if last {
                    store::state::record_run(tx, "build_edges", true)?;
                }
                Ok((Some(r), batch.rows as usize))
            })?;
            self.totals.transactions += 1;
            match applied {
                Some(written) => {
                    self.totals.add_scan(&batch);
                    self.totals.add_written(written);
                    self.tick(batch.rows);
                    if last {
                        self.logged = true;
                        return Ok(true);
                    }
                }
                // Another run advanced the watermark: rescan from it.
                None => self.totals.discarded += 1,
            }
            if self.engine.expired() {
                return Ok(false);
            }
        }
    }

    /// Writes the aggregated `rows` into the staging table and records
    /// `wm` as its watermark. The staging watermark is cleared first, so a
    /// crash in between leaves a staging table that the next rebuild
    /// discards.
    fn flush_staging(&mut self, token: &str, flushed: Flushed, wm: i64) -> anyhow::Result<()> {
        let t0 = Instant::now();
        let Flushed {
            names,
            rows,
            candidates,
        } = flushed;
        self.totals.candidates += candidates;
        // Per-row cost differs from the previous flush (bigger table, other
        // key spread): start small again rather than overshoot the budget,
        // and aim at a quarter of it (bulk work: margin over throughput).
        self.engine.restart_batching((self.max_lock_ms / 2).max(1));
        if !rows.is_empty() {
            once(self.engine, |tx| {
                check_owner(tx, token)?;
                store::state_delete(tx, REBUILD_KEY)
            })?;
            self.totals.transactions += 1;
            let how = if self.staging_fresh {
                Write::InsertNew
            } else {
                Write::Upsert
            };
            let mut i = 0;
            while i < rows.len() {
                let n = self.engine.batch_size().min(rows.len() - i);
                let chunk = &rows[i..i + n];
                let written = self.engine.batch(|tx| {
                    check_owner(tx, token)?;
                    Ok((write_rows(tx, STAGING_TABLE, how, &names, chunk)?, n))
                })?;
                self.totals.transactions += 1;
                self.totals.add_written(written);
                i += n;
            }
        }
        once(self.engine, |tx| {
            check_owner(tx, token)?;
            store::state_set(tx, REBUILD_KEY, &wm.to_string())
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
    ///
    /// Two threads: this one reads the observations (the connection stays
    /// here) and writes the flushes; an extractor thread turns the rows
    /// into candidates and aggregates them, so SQLite's scan and the graph
    /// work overlap. Between them a bounded channel of row chunks (memory
    /// stays bounded); a flush asks the extractor for its aggregate of every
    /// row sent so far.
    pub fn drain_rebuild(&mut self, token: &str, start: i64) -> anyhow::Result<Option<i64>> {
        let idx = match self.idx.take() {
            Some(idx) => idx,
            None => load_index(self.engine.conn())?,
        };
        let pairs = AtomicUsize::new(0);
        let result = std::thread::scope(|s| {
            let (to_worker, inbox) = mpsc::sync_channel::<ToWorker>(CHANNEL_CHUNKS);
            let (reply, replies) = mpsc::sync_channel::<Flushed>(1);
            let (recycle, spares) = mpsc::sync_channel::<RowBatch>(CHANNEL_CHUNKS + 2);
            let worker = std::thread::Builder::new()
                .name("build-edges-extract".into())
                .spawn_scoped(s, || extract_worker(&idx, inbox, reply, recycle, &pairs))?;
            let mut link = Link {
                to_worker,
                replies,
                spares,
                pairs: &pairs,
            };
            let r = self.rebuild_loop(token, start, &mut link);
            drop(link);
            if worker.join().is_err() {
                anyhow::bail!("internal error: the build-edges extractor thread panicked");
            }
            r
        });
        self.idx = Some(idx);
        result
    }

    fn rebuild_loop(
        &mut self,
        token: &str,
        start: i64,
        link: &mut Link<'_>,
    ) -> anyhow::Result<Option<i64>> {
        let mut wm = start;
        let mut pending = false;
        let size = self.fixed_batch.unwrap_or(REBUILD_SCAN_ROWS).max(1);
        let t0 = Instant::now();
        loop {
            if !pending {
                log::info!(
                    "rebuild: scanning after observation {wm} ({:.0} ms so far)",
                    t0.elapsed().as_secs_f64() * 1000.0
                );
            }
            let batch = read(self.engine.conn(), wm, size, |rows| link.send(rows))?;
            if batch.rows == 0 {
                self.totals.waiting = batch.waiting;
                self.flush_staging(token, link.flush()?, wm)?;
                return Ok(Some(wm));
            }
            pending = true;
            wm = batch.last_id;
            self.totals.add_scan(&batch);
            self.tick(batch.rows);
            if batch.waiting.is_some() {
                // Swapped in up to here; incremental runs go on once the
                // backfill has passed.
                self.flush_staging(token, link.flush()?, wm)?;
                return Ok(Some(wm));
            }
            if self.engine.expired() {
                self.flush_staging(token, link.flush()?, wm)?;
                return Ok(None);
            }
            // The extractor's count lags by the chunks still in the
            // channel: at most a few thousand rows' pairs more.
            if link.pairs.load(Ordering::Relaxed) >= REBUILD_MAX_PAIRS {
                self.flush_staging(token, link.flush()?, wm)?;
                pending = false;
            }
        }
    }
}

/// Row chunks in the channel between the reader and the extractor.
const CHANNEL_CHUNKS: usize = 4;

enum ToWorker {
    Rows(RowBatch),
    /// Send back the aggregate of every row so far and start a new one.
    Flush,
}

/// An aggregate taken from the extractor.
struct Flushed {
    names: Vec<String>,
    rows: Vec<IdRow>,
    /// Candidates counted into it.
    candidates: u64,
}

/// The reader's ends of the channels to the extractor.
struct Link<'p> {
    to_worker: mpsc::SyncSender<ToWorker>,
    replies: mpsc::Receiver<Flushed>,
    /// Chunks the extractor is done with (emptied, their buffers kept): no
    /// new allocation and no regrowing per chunk.
    spares: mpsc::Receiver<RowBatch>,
    /// Distinct pairs in the extractor's aggregate.
    pairs: &'p AtomicUsize,
}

fn worker_gone() -> anyhow::Error {
    anyhow::anyhow!("internal error: the build-edges extractor thread stopped")
}

impl Link<'_> {
    fn send(&mut self, rows: &mut RowBatch) -> anyhow::Result<()> {
        let spare = self.spares.try_recv().unwrap_or_default();
        self.to_worker
            .send(ToWorker::Rows(std::mem::replace(rows, spare)))
            .map_err(|_| worker_gone())
    }

    fn flush(&mut self) -> anyhow::Result<Flushed> {
        self.to_worker
            .send(ToWorker::Flush)
            .map_err(|_| worker_gone())?;
        self.replies.recv().map_err(|_| worker_gone())
    }
}

/// The extractor: aggregates the candidates of every chunk received, hands
/// the aggregate over (sorted) on each flush; ends when the reader hangs up.
fn extract_worker(
    idx: &PrefixIndex,
    inbox: mpsc::Receiver<ToWorker>,
    reply: mpsc::SyncSender<Flushed>,
    recycle: mpsc::SyncSender<RowBatch>,
    pairs: &AtomicUsize,
) {
    let mut agg = Agg::default();
    let mut candidates = 0u64;
    for msg in inbox {
        match msg {
            ToWorker::Rows(mut rows) => {
                candidates += rows.extract(idx, &mut agg);
                pairs.store(agg.len(), Ordering::Relaxed);
                if rows.reusable() {
                    rows.clear();
                    // A full channel (or a reader gone): this one is dropped.
                    let _ = recycle.try_send(rows);
                }
            }
            ToWorker::Flush => {
                let (names, rows) = agg.take_sorted();
                pairs.store(0, Ordering::Relaxed);
                let flushed = Flushed {
                    names,
                    rows,
                    candidates: std::mem::take(&mut candidates),
                };
                if reply.send(flushed).is_err() {
                    return;
                }
            }
        }
    }
}
