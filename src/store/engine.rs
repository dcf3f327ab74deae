//! The batch engine every write command runs its batches through.
//!
//! It owns what each batched write job needs and what must behave the same
//! in all of them:
//! - the transaction: each [`Engine::batch`] is one `BEGIN IMMEDIATE`
//!   transaction on the write handle (commit on `Ok`, roll back on `Err`),
//!   its lock hold measured; the [`Batcher`] is fed that hold, not the wall
//!   time around it;
//! - the fairness pause between transactions ([`fairness_pause`], derived
//!   from SQLite's busy-handler schedule, applied by the write handle before
//!   its next transaction, then [`yield_to_other_writers`]);
//! - a dry run: on [`Target::DryRun`] the same closure runs on the read-only
//!   handle, outside any transaction (SQLite refuses any write there);
//! - the `--max-seconds` deadline ([`Engine::expired`]);
//! - the WAL checkpoint policy ([`CHECKPOINT_FRAMES`]: corescope checkpoints
//!   its own pages, after its commit, before the ingestor's commit would,
//!   and then [`catch_up`] on what the ingestor committed meanwhile);
//! - progress reporting ([`Engine::show_progress`] counts the rows of every
//!   batch; [`progress_bar`] for jobs that count themselves; one style for
//!   every command, `crate::progress`);
//! - the stats every write report carries ([`Stats`]).

use std::time::{Duration, Instant};

use rusqlite::{Connection, Transaction, TransactionBehavior};

use super::batch::{Batcher, Deadline};
use super::open::CheckpointResult;
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

/// The sleeps of SQLite's default busy handler (`sqliteDefaultBusyCallback`,
/// used whenever a busy timeout is set: by the CoreScope ingestor's driver,
/// Python's `sqlite3` and the sqlite3 CLI), in milliseconds: before the
/// first retry 1 ms, then 2, 5, ... and from the twelfth retry on 100 ms
/// each time.
pub const BUSY_HANDLER_SLEEPS_MS: [u64; 12] = [1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100];

/// Added to the busy handler's step in [`fairness_pause`]: a sleeping
/// waiter wakes a little late (timer slack, a loaded machine) and then
/// needs to take the lock.
pub const PAUSE_SLACK: Duration = Duration::from_millis(3);

/// How long a writer that has been waiting in SQLite's busy handler for
/// `waited` may sleep before its next retry: the step of
/// [`BUSY_HANDLER_SLEEPS_MS`] it is in (100 ms once it waited 228 ms).
pub fn busy_handler_step(waited: Duration) -> Duration {
    let waited = waited.as_millis();
    let mut total: u128 = 0;
    for ms in BUSY_HANDLER_SLEEPS_MS {
        total += u128::from(ms);
        if waited < total {
            return Duration::from_millis(ms);
        }
    }
    Duration::from_millis(100)
}

/// How long to leave the write lock free after a transaction that held it
/// for `held`, so that a writer (the ingestor) blocked in its busy handler
/// gets in before corescope's next transaction. Such a writer started
/// waiting during the hold, so it has waited at most `held`, and its next
/// retry comes at most one busy-handler step later
/// ([`busy_handler_step`]): the pause is that step plus [`PAUSE_SLACK`] —
/// 4 ms after a 1 ms hold, 28 ms after 100 ms, 53 ms after 200 ms, never
/// more than 103 ms. (It used to be as long as the hold: longer than needed
/// once holds exceed ~100 ms, and the time of a batch job doubled.)
/// Once the writer is in, it keeps the lock for its whole backlog (each of
/// its transactions starts right after the previous one, while corescope
/// retries from its own busy handler), so its queue drains.
pub fn fairness_pause(held: Duration) -> Duration {
    busy_handler_step(held) + PAUSE_SLACK
}

/// After the pause, while another connection keeps committing (the
/// ingestor draining the packets that queued up during corescope's
/// transaction), corescope waits in steps of this length and takes the lock
/// only after a step in which nobody committed and the lock is free
/// ([`yield_to_other_writers`]). Without it corescope's own busy handler
/// retried into the sub-millisecond gap between two of the ingestor's
/// transactions and cut its catch-up short (probe traces: a packet written,
/// then 80 ms waiting again).
pub const YIELD_STEP: Duration = Duration::from_millis(5);

/// A quiet check (nobody committed, no checkpoint running, lock free) is
/// confirmed by a second one this much later before corescope takes the
/// lock: a single check could fall into the sub-millisecond gap between two
/// of the ingestor's transactions (probe traces: after a long commit of
/// packet N, packet N+1 waited a whole corescope transaction).
pub const CONFIRM_STEP: Duration = Duration::from_millis(2);

/// The longest corescope yields to another writer after one transaction,
/// so that a writer that never stops (or a busy server) cannot stall a job:
/// after this, the next transaction waits for the lock as usual.
pub const YIELD_CAP: Duration = Duration::from_secs(1);

/// A writer that commits all the time but leaves the lock free between its
/// commits (a steady 200 packets/s, one short transaction each) is never
/// quiet by `data_version`; corescope takes the lock once this many checks
/// in a row, [`CONFIRM_STEP`] apart, find the lock free and no checkpoint
/// running. A writer catching up on a backlog holds the lock nearly all the
/// time (its transactions follow each other with sub-millisecond gaps), so
/// three free checks in a row do not happen while it catches up.
pub const FREE_CHECKS: u32 = 3;

/// True when another connection is running a checkpoint: a PASSIVE
/// checkpoint of ours reports `busy` (else it copies what the WAL has
/// beyond the last checkpoint, usually nothing or the ingestor's last
/// few pages, and waits for nobody).
fn other_checkpoint_running(db: &WriteDb) -> bool {
    matches!(db.checkpoint_passive(), Some((true, _, _)))
}

/// Wait while another connection is writing: return once a check finds
/// that nobody committed since the last one (`PRAGMA data_version`,
/// starting from `seen`, read right after corescope's commit), no other
/// connection is checkpointing (the ingestor's auto-checkpoint runs inside
/// its `COMMIT` statement after the lock is released: its next packet is
/// due right after it) and the write lock is free — twice in a row
/// [`CONFIRM_STEP`] apart once another connection has committed since
/// corescope's commit —, or once [`FREE_CHECKS`] checks in a row find the
/// lock free and no checkpoint running (a writer that keeps committing but
/// is not catching up), or after [`YIELD_CAP`] from `since`. Returns how
/// long it waited.
pub(super) fn yield_to_other_writers(
    db: &WriteDb,
    mut seen: Option<i64>,
    since: Instant,
) -> Duration {
    let start = Instant::now();
    // Nobody committed since corescope's commit: no writer is catching up
    // (a writer that got in during the pause has committed), so one quiet
    // check is enough.
    // Only then can another connection's checkpoint be running (the
    // ingestor's runs after its commit), so only then is it looked for.
    let mut active = db.data_version() != seen;
    let mut quiet_before = !active;
    let mut free_run = 0;
    loop {
        let now = db.data_version();
        active |= now != seen;
        let free = !(active && other_checkpoint_running(db)) && db.write_lock_free();
        let quiet = now == seen && free;
        free_run = if free { free_run + 1 } else { 0 };
        if (quiet && quiet_before) || free_run >= FREE_CHECKS {
            break;
        }
        if since.elapsed() >= YIELD_CAP {
            break;
        }
        seen = now;
        std::thread::sleep(if free { CONFIRM_STEP } else { YIELD_STEP });
        quiet_before = quiet;
    }
    start.elapsed()
}

/// The checkpoint policy: after a commit that leaves at least this many
/// frames (pages) in the WAL, the engine runs a PASSIVE checkpoint itself
/// (outside the transaction, during the fairness pause; it waits for
/// nobody and never fails the run).
///
/// Why: SQLite's auto-checkpoint runs inside the `COMMIT` of whichever
/// connection's commit leaves 1000 frames or more in the WAL (the default
/// `wal_autocheckpoint`, the ingestor's). If corescope's batches filled the
/// WAL and stopped short of that, the ingestor's next one-packet commit
/// would copy all of corescope's pages into the database — a latency spike
/// for that packet. With corescope's own threshold well below 1000, a
/// corescope commit checkpoints first; a fully checkpointed WAL is then
/// restarted from its beginning by the next writer, so the ingestor's own
/// commits stay far from 1000 frames ([`catch_up`] sees to "fully" when the
/// ingestor commits during the checkpoint). Batch jobs turn the auto-checkpoint
/// off on their own connection ([`WriteDb::tune_for_batches`]), because it
/// would run inside corescope's `COMMIT` and count as lock hold.
pub const CHECKPOINT_FRAMES: u32 = 250;

/// The hold a job beside a live ingestor aims at: a quarter of the lock
/// budget (50 ms at the default 200). A transaction that ends by then lets a
/// writer that has waited in SQLite's busy handler since it began in at its
/// 53 ms retry, or, a little over, at the 78 ms one; a writer's first
/// waiting packet then commits within about 80 ms of its arrival. Holds
/// that end just after the 78 ms retry make it wait for the 103 ms one: the
/// backfills' batches, aimed at about 67 ms, often held 75–90 ms (the probe
/// beside the from-pubkey backfill at 10 M: p99 104 ms, now 71 ms). Prune
/// stops a batch at this point; the backfills size their batches for it.
pub fn short_hold(max_lock_ms: u64) -> Duration {
    Duration::from_micros(max_lock_ms.saturating_mul(250))
}

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
    /// A commit since the last checkpoint (nothing to copy otherwise).
    dirty: bool,
    transactions: u64,
    /// The hold batches are sized for when not half the budget
    /// ([`Engine::aim_short_holds`]; kept across restarts).
    aim: Option<Duration>,
    /// Counts the rows of every batch ([`Engine::show_progress`]).
    progress: Option<indicatif::ProgressBar>,
}

impl Drop for Engine<'_> {
    fn drop(&mut self) {
        self.finish_progress();
    }
}

/// A PASSIVE checkpoint on `db`, logged with the frames it found and the
/// time it took, then [`catch_up`] on the frames other connections
/// committed meanwhile.
fn checkpoint_now(db: &WriteDb) {
    let start = Instant::now();
    let frames = db.wal_frames();
    let Some(first) = db.checkpoint_passive() else {
        return;
    };
    let (busy, log, done) = first;
    log::debug!(
        "checkpoint (passive) after a commit left {frames} WAL frames: {done} of {log} copied in {:.1} ms{}",
        start.elapsed().as_secs_f64() * 1000.0,
        if busy { " (another connection was checkpointing)" } else { "" }
    );
    let (rounds, (busy, log, done)) =
        catch_up(first, start, CATCH_UP_CAP, || db.checkpoint_passive());
    if rounds > 0 {
        log::debug!(
            "{rounds} catch-up checkpoint(s) of frames other connections committed meanwhile, {:.1} ms since the first began: {done} of {log} copied{}",
            start.elapsed().as_secs_f64() * 1000.0,
            if busy { " (another connection was checkpointing)" } else { "" }
        );
    }
}

/// The longest [`catch_up`] goes on after corescope's checkpoint began (a
/// writer that never stops committing makes every round find new frames).
/// The lock is free all that time; beside the probe at 10 M the catch-up
/// ended 78 ms p50, at most 137 ms, after the first checkpoint began.
pub const CATCH_UP_CAP: Duration = Duration::from_millis(250);

/// The catch-up after corescope's post-commit checkpoint: another PASSIVE
/// checkpoint right away, and again, for as long as each finds the WAL
/// grown since the previous one (another connection committed during it),
/// until one finds nothing new, another connection's checkpoint running,
/// a restarted (shorter) WAL, or `cap` passed since `start`. Returns the
/// rounds that copied something new and the last report.
///
/// Why: a writer that commits while corescope's checkpoint runs (the
/// ingestor draining the packets that queued during corescope's
/// transaction) finds the checkpoint lock taken and skips its own
/// auto-checkpoint, but its frames lie beyond corescope's, so the WAL is
/// not fully copied and cannot restart. Its next commit after corescope's
/// checkpoint then still finds 1000 frames or more in the WAL and
/// checkpoints inside its `COMMIT`, with a sync of the database file
/// (38–54 ms beside the 10 M prune, after 257 of 569 of corescope's
/// checkpoints): the packets queued behind it waited over 100 ms. Each
/// round keeps the checkpoint lock for as long as the writer drains its
/// queue, copies what it committed and, once it stops, leaves the WAL fully
/// copied, so its next write restarts the WAL. The lock stays free
/// throughout: the rounds cost corescope time, not the writer.
fn catch_up(
    mut last: CheckpointResult,
    start: Instant,
    cap: Duration,
    mut checkpoint: impl FnMut() -> Option<CheckpointResult>,
) -> (u32, CheckpointResult) {
    let mut rounds = 0;
    while !last.0 && start.elapsed() < cap {
        let Some(next) = checkpoint() else {
            break;
        };
        let grew = next.1 > last.1;
        last = next;
        if !grew {
            break;
        }
        rounds += 1;
    }
    (rounds, last)
}

impl<'a> Engine<'a> {
    /// An engine for `target`. On a write handle it tunes the connection for
    /// batches (`synchronous = NORMAL` and no auto-checkpoint in WAL mode).
    pub fn new(target: Target<'a>, settings: Settings) -> anyhow::Result<Engine<'a>> {
        let wal = match &target {
            Target::Write(db) => db.tune_for_batches()?,
            Target::DryRun(_) => false,
        };
        Ok(Engine {
            target,
            batcher: Batcher::new(settings.max_lock_ms),
            deadline: settings.deadline,
            wal,
            dirty: false,
            transactions: 0,
            aim: None,
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
        self.set_batcher(Batcher::new(max_lock_ms));
    }

    /// Size batches for [`short_hold`] of the budget instead of half of it,
    /// from now on (also after a restart of batch sizing).
    pub fn aim_short_holds(&mut self, max_lock_ms: u64) {
        let aim = short_hold(max_lock_ms);
        self.aim = Some(aim);
        self.batcher.aim_at(aim);
    }

    fn set_batcher(&mut self, mut batcher: Batcher) {
        if let Some(aim) = self.aim {
            batcher.aim_at(aim);
        }
        self.batcher = batcher;
    }

    /// Start batch sizing over at `initial` rows under a budget of
    /// `max_lock_ms` (a job that knows its rows are cheap under the lock
    /// starts bigger than [`Batcher::new`]'s 500).
    pub fn restart_batching_at(&mut self, max_lock_ms: u64, initial: usize) {
        let b = Batcher::with_bounds(max_lock_ms, initial, 1, 200_000);
        self.set_batcher(b);
    }

    /// True once `--max-seconds` has passed: stop at this batch boundary.
    pub fn expired(&self) -> bool {
        self.deadline.expired()
    }

    /// Run one batch: `f` gets the write transaction (`BEGIN IMMEDIATE`;
    /// on a dry run a read transaction on the read-only handle, always
    /// rolled back) and returns its result and the number of rows it
    /// handled, which with the measured lock hold sizes the next batch.
    /// After a commit the engine applies the checkpoint policy; the write
    /// handle leaves the lock free before its next transaction (the
    /// checkpoint's time, and the caller's work in between, count).
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
                // The checkpoint runs while the lock is free anyway: the
                // pause before the next transaction counts it.
                self.dirty |= result.is_ok();
                if result.is_ok() && self.wal && db.wal_frames() >= CHECKPOINT_FRAMES {
                    checkpoint_now(db);
                    self.dirty = false;
                }
                let (v, rows) = result?;
                self.batcher.observe(rows, held);
                self.count_progress(rows);
                Ok(v)
            }
        }
    }

    /// A PASSIVE checkpoint now (WAL mode, write handle only) when the
    /// engine committed since its last one and the WAL holds at least
    /// [`CHECKPOINT_FRAMES`] frames (the same rule as after each commit:
    /// fewer frames cost whoever checkpoints next little, and a timer's
    /// tick of one small transaction then pays no checkpoint and no
    /// fsync); jobs call it at their end.
    pub fn checkpoint(&mut self) {
        if let (true, true, Target::Write(db)) = (self.wal, self.dirty, &self.target) {
            if db.wal_frames() < CHECKPOINT_FRAMES {
                return;
            }
            checkpoint_now(db);
            self.dirty = false;
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
    use rusqlite::Connection;

    #[test]
    fn batches_commit_roll_back_and_count() {
        let (_d, p) = tmpdb();
        let mut db = WriteDb::open(&p, &OpenOptions::default()).unwrap();
        let mut e = write_engine(&mut db);
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

    /// An engine on the write target with the default budget, no deadline.
    fn write_engine(db: &mut WriteDb) -> Engine<'_> {
        Engine::new(
            Target::Write(db),
            Settings {
                max_lock_ms: 200,
                deadline: Deadline::new(None),
            },
        )
        .unwrap()
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

    #[test]
    fn short_holds_are_kept_when_batch_sizing_restarts() {
        let (_d, p) = tmpdb();
        let db = ReadOnlyDb::open(&p, 1000).unwrap();
        let mut e = dry_engine(&db, None);
        assert_eq!(e.batcher.aim(), Duration::from_millis(100));
        e.aim_short_holds(200);
        assert_eq!(e.batcher.aim(), Duration::from_millis(50));
        e.restart_batching(120);
        assert_eq!(e.batcher.aim(), Duration::from_millis(50));
        e.restart_batching_at(20, 1000);
        // Never above the budget: 20 ms, aimed at 50 → 20.
        assert_eq!(e.batcher.aim(), Duration::from_millis(20));
        assert_eq!(short_hold(200), Duration::from_millis(50));
    }

    #[test]
    fn the_pause_follows_the_busy_handler_schedule() {
        let ms = Duration::from_millis;
        // Waited 0 ms: sleeping 1 ms; 1-2: 2 ms; 3-7: 5 ms; ... 178-227: 50 ms.
        for (waited, step) in [
            (0, 1),
            (1, 2),
            (2, 2),
            (3, 5),
            (7, 5),
            (8, 10),
            (17, 10),
            (18, 15),
            (33, 20),
            (53, 25),
            (102, 25),
            (127, 25),
            (128, 50),
            (227, 50),
            (228, 100),
            (5_000, 100),
        ] {
            assert_eq!(
                busy_handler_step(ms(waited)),
                ms(step),
                "waited {waited} ms"
            );
        }
        assert_eq!(fairness_pause(ms(100)), ms(25) + PAUSE_SLACK);
        assert_eq!(fairness_pause(ms(150)), ms(50) + PAUSE_SLACK);
        // Never more than the busy handler's longest sleep (plus slack),
        // however long the hold: the old rule paused as long as the hold.
        assert_eq!(fairness_pause(ms(10_000)), ms(100) + PAUSE_SLACK);
    }

    /// A WAL database with a `seq` table both writers append to.
    fn wal_db_with_seq() -> (tempfile::TempDir, std::path::PathBuf) {
        let (d, p) = tmpdb();
        let c = Connection::open(&p).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE seq(n INTEGER PRIMARY KEY, who TEXT NOT NULL, blob BLOB);",
        )
        .unwrap();
        (d, p)
    }

    /// [`wal_db_with_seq`] and a reader connection that keeps its WAL and
    /// -shm files (the last close would checkpoint and delete them).
    fn wal_db_kept_open() -> (tempfile::TempDir, std::path::PathBuf, Connection) {
        let (d, p) = wal_db_with_seq();
        let keep = Connection::open(&p).unwrap();
        keep.query_row("SELECT count(*) FROM seq", [], |r| r.get::<_, i64>(0))
            .unwrap();
        (d, p, keep)
    }

    fn seq(p: &std::path::Path) -> Vec<String> {
        let c = Connection::open(p).unwrap();
        let mut st = c.prepare("SELECT who FROM seq ORDER BY n").unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    /// The ingestor's case: a writer that starts waiting (BEGIN IMMEDIATE
    /// with a busy timeout, SQLite's default busy handler) while a corescope
    /// batch holds the lock commits before corescope's next batch begins.
    /// Ordering is read from the rows both append to one table.
    #[test]
    fn a_writer_blocked_during_a_batch_gets_in_before_the_next_batch() {
        let (_d, p) = wal_db_with_seq();
        let mut db = WriteDb::open(&p, &OpenOptions::default()).unwrap();
        let mut e = write_engine(&mut db);
        // Holds that end in different steps of the busy handler's schedule
        // (5, 15, 25, 50 and 100 ms sleeps).
        let holds = [5u64, 25, 90, 150, 260];
        for hold in holds {
            let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
            let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
            let wp = p.clone();
            let writer = std::thread::spawn(move || {
                let c = Connection::open(&wp).unwrap();
                c.busy_timeout(Duration::from_secs(5)).unwrap();
                go_rx.recv().unwrap();
                ready_tx.send(()).unwrap();
                c.execute_batch("BEGIN IMMEDIATE; INSERT INTO seq(who) VALUES ('writer'); COMMIT;")
                    .unwrap();
            });
            e.batch(|tx| {
                tx.execute("INSERT INTO seq(who) VALUES ('corescope')", [])?;
                go_tx.send(())?;
                ready_rx.recv()?;
                // The writer is now waiting in its busy handler.
                std::thread::sleep(Duration::from_millis(hold));
                Ok(((), 1))
            })
            .unwrap();
            e.batch(|tx| {
                tx.execute("INSERT INTO seq(who) VALUES ('corescope next')", [])?;
                Ok(((), 1))
            })
            .unwrap();
            writer.join().unwrap();
        }
        let want: Vec<String> = holds
            .iter()
            .flat_map(|_| ["corescope", "writer", "corescope next"])
            .map(String::from)
            .collect();
        assert_eq!(seq(&p), want);
    }

    /// A writer that never stops committing (one short transaction every
    /// 3 ms, like an ingestor at 300 packets/s) but leaves the lock free
    /// between its commits does not stall corescope: its 10 batches all
    /// commit while the writer is still writing (row order). With the
    /// quiet rule alone (no commit for two checks, else up to the 1 s cap),
    /// every batch waited the whole second and came after the writer's
    /// 300 commits.
    #[test]
    fn a_writer_that_never_stops_but_leaves_the_lock_free_does_not_stall_a_job() {
        let (_d, p) = wal_db_with_seq();
        let wp = p.clone();
        let writer = std::thread::spawn(move || {
            let c = Connection::open(&wp).unwrap();
            c.busy_timeout(Duration::from_secs(5)).unwrap();
            for _ in 0..300 {
                c.execute_batch("BEGIN IMMEDIATE; INSERT INTO seq(who) VALUES ('writer'); COMMIT;")
                    .unwrap();
                std::thread::sleep(Duration::from_millis(3));
            }
        });
        let mut db = WriteDb::open(&p, &OpenOptions::default()).unwrap();
        let mut e = write_engine(&mut db);
        for _ in 0..10 {
            e.batch(|tx| {
                tx.execute("INSERT INTO seq(who) VALUES ('corescope')", [])?;
                Ok(((), 1))
            })
            .unwrap();
        }
        drop(e);
        writer.join().unwrap();
        let rows = seq(&p);
        let last_corescope = rows.iter().rposition(|w| w == "corescope").unwrap();
        let last_writer = rows.iter().rposition(|w| w == "writer").unwrap();
        assert_eq!(rows.iter().filter(|w| *w == "corescope").count(), 10);
        assert!(
            last_corescope < last_writer,
            "corescope's batches waited for the writer to stop: {rows:?}"
        );
    }

    /// `mxFrame` (frames in the WAL) and `nBackfill` (frames already copied
    /// into the database) from the `-shm` wal-index header (native byte
    /// order; offsets 16 and 96 of SQLite's WAL-index format).
    fn wal_index(p: &std::path::Path) -> (u32, u32) {
        let shm = std::fs::read(crate::store::open::sidecar(p, "-shm")).unwrap();
        let at = |o: usize| u32::from_ne_bytes(shm[o..o + 4].try_into().unwrap());
        (at(16), at(96))
    }

    /// The catch-up's stopping rule, on made-up checkpoint reports (busy,
    /// frames in the WAL, frames copied): it goes on while each round
    /// finds the WAL grown, and stops at the first round that finds nothing
    /// new, another connection's checkpoint, a restarted WAL or an error,
    /// or at the cap.
    #[test]
    fn the_catch_up_goes_on_while_the_wal_grows() {
        let run = |first: CheckpointResult, reports: Vec<Option<CheckpointResult>>, cap| {
            let mut it = reports.into_iter();
            let mut calls = 0;
            let r = catch_up(first, Instant::now(), cap, || {
                calls += 1;
                it.next().flatten()
            });
            (r, calls)
        };
        let long = Duration::from_secs(600);
        let first = (false, 4000, 4000);
        // Grew twice, then nothing new.
        let grew = vec![
            Some((false, 4010, 4010)),
            Some((false, 4025, 4025)),
            Some((false, 4025, 4025)),
            Some((false, 4040, 4040)),
        ];
        assert_eq!(
            run(first, grew.clone(), long),
            ((2, (false, 4025, 4025)), 3)
        );
        // Another connection's checkpoint was running: nothing to do.
        assert_eq!(
            run((true, 4000, 3000), grew.clone(), long),
            ((0, (true, 4000, 3000)), 0)
        );
        // One started during the first round of catch-up.
        let busy = vec![Some((true, 4010, 4000)), Some((false, 4020, 4020))];
        assert_eq!(run(first, busy, long), ((1, (true, 4010, 4000)), 1));
        // The WAL was fully copied and restarted by another writer.
        let restarted = vec![Some((false, 3, 3)), Some((false, 6, 6))];
        assert_eq!(run(first, restarted, long), ((0, (false, 3, 3)), 1));
        // An error ends it; the last report stays the first.
        assert_eq!(run(first, vec![None], long), ((0, first), 1));
        // Past the cap: no round.
        assert_eq!(run(first, grew, Duration::ZERO), ((0, first), 0));
    }

    /// The ingestor's case: a writer commits while corescope's checkpoint
    /// runs (here: right after it reported), so its frames lie beyond the
    /// copied ones and its next commit past 1000 frames would checkpoint
    /// them inside its COMMIT. The catch-up copies them: the WAL is fully
    /// copied when it returns, and the writer's next write restarts it.
    #[test]
    fn the_catch_up_copies_what_another_writer_committed_during_the_checkpoint() {
        let (_d, p, keep) = wal_db_kept_open();
        let mut db = WriteDb::open(&p, &OpenOptions::default()).unwrap();
        db.write(|tx| {
            for _ in 0..300 {
                tx.execute(
                    "INSERT INTO seq(who, blob) VALUES ('corescope', zeroblob(4000))",
                    [],
                )?;
            }
            Ok(())
        })
        .unwrap();
        // During a real checkpoint the WAL cannot restart because it is not
        // fully copied yet; here a read transaction on the WAL (begun
        // before the checkpoint) keeps it from restarting the same way, so
        // the writer's frames land beyond the copied ones.
        keep.execute_batch("BEGIN").unwrap();
        keep.query_row("SELECT count(*) FROM seq", [], |r| r.get::<_, i64>(0))
            .unwrap();
        let start = Instant::now();
        let first = db.checkpoint_passive().unwrap();
        let writer = Connection::open(&p).unwrap();
        writer
            .execute("INSERT INTO seq(who) VALUES ('writer')", [])
            .unwrap();
        keep.execute_batch("COMMIT").unwrap();
        let (frames, backfilled) = wal_index(&p);
        assert_eq!(i64::from(backfilled), first.2);
        assert!(
            frames > backfilled,
            "the writer's frames: {frames} > {backfilled}"
        );
        let (rounds, last) = catch_up(first, start, Duration::from_secs(600), || {
            db.checkpoint_passive()
        });
        assert_eq!(rounds, 1);
        assert_eq!(last, (false, i64::from(frames), i64::from(frames)));
        assert_eq!(wal_index(&p), (frames, frames));
        // The writer's next write starts the WAL over.
        writer
            .execute("INSERT INTO seq(who) VALUES ('writer')", [])
            .unwrap();
        let (after, _) = wal_index(&p);
        assert!(after < frames, "WAL not restarted: {after} frames");
        drop(keep);
    }

    /// corescope checkpoints its own pages: after each of its commits, a WAL
    /// of CHECKPOINT_FRAMES frames or more is completely copied into the
    /// database before `batch` returns, so another writer's next commit (whose auto-checkpoint
    /// fires at 1000 frames) restarts the WAL instead of checkpointing
    /// corescope's pages inside its own COMMIT.
    #[test]
    fn corescope_checkpoints_its_own_pages_after_its_commit() {
        let (_d, p, keep) = wal_db_kept_open();
        let mut db = WriteDb::open(&p, &OpenOptions::default()).unwrap();
        let mut e = write_engine(&mut db);
        let mut checkpointed = 0;
        for _ in 0..6 {
            // About 300 pages per batch: each commit leaves more than
            // CHECKPOINT_FRAMES frames (the WAL restarts at each batch, as
            // the previous one was copied).
            e.batch(|tx| {
                for _ in 0..300 {
                    tx.execute(
                        "INSERT INTO seq(who, blob) VALUES ('corescope', zeroblob(4000))",
                        [],
                    )?;
                }
                Ok(((), 300))
            })
            .unwrap();
            let (frames, backfilled) = wal_index(&p);
            if frames >= CHECKPOINT_FRAMES {
                assert_eq!(backfilled, frames, "un-checkpointed frames left in the WAL");
                checkpointed += 1;
            }
            assert!(frames < 1000, "{frames} frames in the WAL");
        }
        assert_eq!(checkpointed, 6);
        drop(keep);
    }
}
