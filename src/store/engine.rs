//! The batch engine every write command runs its batches through.
//!
//! It owns what each batched write job needs and what must behave the same
//! in all of them:
//! - the transaction: each [`Engine::batch`] is one `BEGIN IMMEDIATE`
//!   transaction on the write handle (commit on `Ok`, roll back on `Err`),
//!   its lock hold measured; the [`Batcher`] is fed that hold, not the wall
//!   time around it;
//! - the fairness pause after each transaction ([`fairness_pause`]);
//! - a dry run: on [`Target::DryRun`] the same closure runs on the read-only
//!   handle, outside any transaction (SQLite refuses any write there);
//! - the `--max-seconds` deadline ([`Engine::expired`]);
//! - the WAL checkpoint policy ([`CHECKPOINT_WAL_GROWTH`]);
//! - progress reporting ([`Engine::show_progress`] counts the rows of every
//!   batch; [`progress_bar`] for jobs that count themselves; one style for
//!   every command, `crate::progress`);
//! - the stats every write report carries ([`Stats`]).

use std::path::PathBuf;
use std::time::Duration;

use rusqlite::{Connection, Transaction, TransactionBehavior};

use super::batch::{Batcher, Deadline};
use super::open::{file_len, wal_path};
use super::{ReadOnlyDb, WriteDb};

/// Where a job's batches go: the write handle, or (dry run) the read-only
/// handle, on which the same statements can only read. The engine borrows
/// the handle for the batched phase of a job; the command keeps it for the
/// work before and after.
pub enum Target<'a> {
    Write(&'a mut WriteDb),
    DryRun(&'a ReadOnlyDb),
}

impl Target<'_> {
    /// The connection for reads outside a batch.
    pub fn conn(&self) -> &Connection {
        match self {
            Target::Write(db) => db.conn(),
            Target::DryRun(db) => db.reader(),
        }
    }

    pub fn is_dry_run(&self) -> bool {
        matches!(self, Target::DryRun(_))
    }

    /// The same target for a shorter borrow: a job that runs several
    /// engines one after the other (one per task, each with its own batch
    /// sizing) hands each of them this.
    pub fn reborrow(&mut self) -> Target<'_> {
        match self {
            Target::Write(db) => Target::Write(db),
            Target::DryRun(db) => Target::DryRun(db),
        }
    }
}

/// Leave the write lock free for as long as a transaction held it (at least
/// 2 ms) before taking it again. A waiting writer (the ingestor) retries
/// from SQLite's busy handler, which sleeps between attempts; back-to-back
/// transactions leave it no window, and it would wait out whole
/// multi-second data steps (measured against a live writer: waits of
/// 330-1640 ms with 40-300 ms holds; with this pause about 40 ms). Costs at
/// most twice the run time of a write phase.
pub fn fairness_pause(held: Duration) {
    std::thread::sleep(held.max(Duration::from_millis(2)));
}

/// The checkpoint policy: after a commit, a PASSIVE checkpoint (outside any
/// transaction; it waits for nobody and never fails the run) when the
/// `-wal` file has grown by this much since the last checkpoint (or since
/// the job started). 4 MiB is SQLite's own auto-checkpoint threshold (1000
/// pages of 4 KiB), which batch jobs turn off on their connection
/// ([`WriteDb::tune_for_batches`]) because it would run inside a commit and
/// lengthen the lock hold. The file's size is a high-water mark (a
/// checkpoint lets SQLite reuse the file from its start without shrinking
/// it), so the WAL never grows more than this past its largest size.
pub const CHECKPOINT_WAL_GROWTH: u64 = 4 << 20;

/// Settings of one job (from `--max-lock-ms`, `--max-seconds`).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub max_lock_ms: u64,
    /// Stop at a batch boundary after `--max-seconds` (started by the
    /// command, so that its work before the batches counts too).
    pub deadline: Deadline,
}

/// What every write report carries about its transactions.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Stats {
    /// Write transactions committed or rolled back by the engine.
    pub transactions: u64,
    /// Longest lock hold of the run, in milliseconds (0 on a dry run).
    pub max_lock_hold_ms: f64,
    /// The job ran to its end (not stopped by `--max-seconds`).
    pub complete: bool,
}

pub struct Engine<'a> {
    target: Target<'a>,
    batcher: Batcher,
    deadline: Deadline,
    /// WAL mode on the write handle (checkpoints only then).
    wal: bool,
    wal_path: PathBuf,
    /// `-wal` size at the last checkpoint (or the start).
    wal_mark: u64,
    transactions: u64,
    /// Counts the rows of every batch ([`Engine::show_progress`]).
    progress: Option<indicatif::ProgressBar>,
}

impl Drop for Engine<'_> {
    fn drop(&mut self) {
        self.finish_progress();
    }
}

impl<'a> Engine<'a> {
    /// An engine for `target`. On a write handle it tunes the connection for
    /// batches (`synchronous = NORMAL` and no auto-checkpoint in WAL mode).
    pub fn new(target: Target<'a>, settings: Settings) -> anyhow::Result<Engine<'a>> {
        let (wal, path) = match &target {
            Target::Write(db) => (db.tune_for_batches()?, db.path().to_path_buf()),
            Target::DryRun(db) => (false, db.path().to_path_buf()),
        };
        let wal_path = wal_path(&path);
        Ok(Engine {
            wal_mark: file_len(&wal_path),
            wal_path,
            target,
            batcher: Batcher::new(settings.max_lock_ms),
            deadline: settings.deadline,
            wal,
            transactions: 0,
            progress: None,
        })
    }

    /// Count the rows every batch handles on `progress` (a counter or bar of
    /// `crate::progress`; `None`: no progress, e.g. not on a terminal).
    pub fn show_progress(&mut self, progress: Option<indicatif::ProgressBar>) {
        self.finish_progress();
        self.progress = progress;
    }

    /// What the job is doing now, shown after the count (a step, a kind).
    pub fn progress_message(&self, msg: &str) {
        if let Some(p) = &self.progress {
            p.set_message(msg.to_string());
        }
    }

    /// Remove the progress line (also when the engine is dropped).
    pub fn finish_progress(&mut self) {
        if let Some(p) = self.progress.take() {
            p.finish_and_clear();
        }
    }

    fn count_progress(&self, rows: usize) {
        if let Some(p) = &self.progress {
            p.inc(rows as u64);
        }
    }

    pub fn target(&self) -> &Target<'a> {
        &self.target
    }

    /// The connection for reads outside a batch.
    pub fn conn(&self) -> &Connection {
        self.target.conn()
    }

    /// Rows the next batch should take (adapted to the lock budget).
    pub fn batch_size(&self) -> usize {
        self.batcher.size().max(1)
    }

    /// Start batch sizing over under a budget of `max_lock_ms` (a phase
    /// whose rows cost differently from the previous one: start small
    /// rather than overshoot the lock budget).
    pub fn restart_batching(&mut self, max_lock_ms: u64) {
        self.batcher = Batcher::new(max_lock_ms);
    }

    /// True once `--max-seconds` has passed: stop at this batch boundary.
    pub fn expired(&self) -> bool {
        self.deadline.expired()
    }

    /// Run one batch: `f` gets the write transaction (`BEGIN IMMEDIATE`;
    /// on a dry run a read transaction on the read-only handle, always
    /// rolled back) and returns its result and the number of rows it
    /// handled, which with the measured lock hold sizes the next batch.
    /// After a commit the engine pauses for fairness and applies the
    /// checkpoint policy.
    pub fn batch<T>(
        &mut self,
        f: impl FnOnce(&Transaction<'_>) -> anyhow::Result<(T, usize)>,
    ) -> anyhow::Result<T> {
        match &mut self.target {
            Target::DryRun(db) => {
                let tx = Transaction::new_unchecked(db.reader(), TransactionBehavior::Deferred)?;
                let result = f(&tx);
                tx.rollback()?;
                let (v, rows) = result?;
                self.count_progress(rows);
                Ok(v)
            }
            Target::Write(db) => {
                let result = db.write_unpaused(f);
                let held = db.last_hold();
                self.transactions += 1;
                fairness_pause(held);
                let (v, rows) = result?;
                self.batcher.observe(rows, held);
                self.count_progress(rows);
                self.after_commit();
                Ok(v)
            }
        }
    }

    /// The checkpoint policy ([`CHECKPOINT_WAL_GROWTH`]).
    fn after_commit(&mut self) {
        if !self.wal {
            return;
        }
        let size = file_len(&self.wal_path);
        if size >= self.wal_mark.saturating_add(CHECKPOINT_WAL_GROWTH) {
            self.checkpoint();
            self.wal_mark = size;
        }
    }

    /// A PASSIVE checkpoint now (WAL mode, write handle only); jobs call it
    /// once at their end.
    pub fn checkpoint(&self) {
        if let (true, Target::Write(db)) = (self.wal, &self.target) {
            db.checkpoint_passive();
        }
    }

    /// The stats of the run so far.
    pub fn stats(&self, complete: bool) -> Stats {
        Stats {
            transactions: self.transactions,
            max_lock_hold_ms: match &self.target {
                Target::Write(db) => db.max_lock_hold_ms(),
                Target::DryRun(_) => 0.0,
            },
            complete,
        }
    }
}

/// A progress bar in the one style of all commands (`label` names the job,
/// `unit` what is counted); see `crate::progress`. Only call it when
/// progress is allowed (a terminal, not `--json`/`-q`).
pub fn progress_bar(len: u64, label: &str, unit: &str) -> indicatif::ProgressBar {
    crate::progress::bar(len, label, unit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::open::tests::tmpdb;
    use crate::store::OpenOptions;

    #[test]
    fn batches_commit_roll_back_and_count() {
        let (_d, p) = tmpdb();
        let mut db = WriteDb::open(&p, &OpenOptions::default()).unwrap();
        let mut e = Engine::new(
            Target::Write(&mut db),
            Settings {
                max_lock_ms: 200,
                deadline: Deadline::new(None),
            },
        )
        .unwrap();
        e.batch(|c| {
            c.execute("INSERT INTO transmissions(x) VALUES ('b')", [])?;
            Ok(((), 1))
        })
        .unwrap();
        let r: anyhow::Result<()> = e.batch(|c| {
            c.execute("INSERT INTO transmissions(x) VALUES ('c')", [])?;
            anyhow::bail!("boom")
        });
        assert!(r.is_err());
        let n: i64 = e
            .conn()
            .query_row("SELECT count(*) FROM transmissions", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2);
        let s = e.stats(true);
        assert_eq!((s.transactions, s.complete), (2, true));
        assert!(!e.expired());
    }

    /// An engine on the dry-run target with the default budget.
    fn dry_engine(db: &ReadOnlyDb, max_seconds: Option<f64>) -> Engine<'_> {
        Engine::new(
            Target::DryRun(db),
            Settings {
                max_lock_ms: 200,
                deadline: Deadline::new(max_seconds),
            },
        )
        .unwrap()
    }

    #[test]
    fn a_dry_run_cannot_write() {
        let (_d, p) = tmpdb();
        let db = ReadOnlyDb::open(&p, 1000).unwrap();
        let mut e = dry_engine(&db, Some(0.0));
        assert!(e.target().is_dry_run());
        let r: anyhow::Result<()> = e.batch(|c| {
            c.execute("INSERT INTO transmissions(x) VALUES ('b')", [])?;
            Ok(((), 1))
        });
        assert!(r.is_err());
        assert_eq!(e.stats(false).transactions, 0);
        assert!(e.expired());
    }

    #[test]
    fn batch_sizing_restarts_under_a_new_budget() {
        let (_d, p) = tmpdb();
        let db = ReadOnlyDb::open(&p, 1000).unwrap();
        let mut e = dry_engine(&db, None);
        assert_eq!(e.batch_size(), 500);
        e.restart_batching(20);
        assert_eq!(e.batch_size(), 100);
    }
}
