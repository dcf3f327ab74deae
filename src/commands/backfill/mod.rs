//! `corescope backfill [TASK...]`: resumable, terminating, never-clobbering
//! data backfills with CoreScope's rules (design notes in docs/backfill.md).
//!
//! Row tasks (`from-pubkey`, `path-json`, `resolved-path`) walk their table
//! by row id. Each batch is read and derived outside the write lock, then
//! written in one `BEGIN IMMEDIATE` transaction on the batch engine together
//! with the task's cursor (`_corescope_state` key `backfill.<task>.cursor` =
//! last row id visited). Every UPDATE re-checks the candidate condition, so
//! a value written meanwhile by the ingestor (or another run) is never
//! overwritten. A run visits each candidate at most once, up to the highest
//! id that existed when the task started; the next run resumes from the
//! cursor and also picks up rows inserted since.
//!
//! - [`rows`]: reading, deriving and writing candidate rows;
//! - [`task`]: one row task on the engine, its cursor and progress;
//! - [`blacklist`]: the `observer-blacklist` task;
//! - [`report`]: the typed report.

mod blacklist;
mod report;
mod rows;
mod task;

use crate::cli::{BackfillArgs, BackfillTask};
use crate::context::Ctx;
use crate::error::Failure;
use crate::report::Outcome;
use crate::store::engine::{Engine, Settings, Target};
use crate::store::{Deadline, ReadOnlyDb, WriteDb};

use blacklist::{blacklist_ids, run_blacklist};
use report::{BackfillReport, TaskReport};
use task::{pending, run_row_task};

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

/// The tasks of this run in execution order, after checking that
/// `--observer` and `--reset` fit them.
fn selected_tasks(args: &BackfillArgs) -> anyhow::Result<Vec<BackfillTask>> {
    let selected: Vec<BackfillTask> = if args.tasks.is_empty() {
        ALL_TASKS.to_vec()
    } else {
        ALL_TASKS
            .iter()
            .copied()
            .filter(|t| args.tasks.contains(t))
            .collect()
    };
    let usage = |m: String| Err(Failure::Usage(m).into());
    if !args.observers.is_empty() && !selected.contains(&BackfillTask::ObserverBlacklist) {
        return usage("--observer only applies to the observer-blacklist task".to_string());
    }
    for r in &args.reset {
        if *r == BackfillTask::ObserverBlacklist {
            return usage("--reset observer-blacklist: that task has no cursor".to_string());
        }
        if !selected.contains(r) {
            return usage(format!(
                "--reset {}: that task is not selected in this run",
                r.cli_name()
            ));
        }
    }
    Ok(selected)
}

pub fn run(ctx: &Ctx, args: &BackfillArgs) -> anyhow::Result<Outcome> {
    let selected = selected_tasks(args)?;
    let report = if args.dry_run {
        // Read-only: no run lock, nothing created, not even the state table.
        let ro = ReadOnlyDb::open(&ctx.db_path, ctx.busy_timeout_ms)?;
        ro.require_ready()?;
        run_tasks(ctx, args, &selected, Target::DryRun(&ro))?
    } else {
        let mut w = WriteDb::open(&ctx.db_path, &ctx.open_options(false))?;
        w.require_ready()?;
        run_tasks(ctx, args, &selected, Target::Write(&mut w))?
    };
    Outcome::from_report(&report)
}

fn run_tasks(
    ctx: &Ctx,
    args: &BackfillArgs,
    selected: &[BackfillTask],
    mut target: Target<'_>,
) -> anyhow::Result<BackfillReport> {
    let ids = blacklist_ids(&args.observers, &ctx.config.observer_blacklist);
    let deadline = Deadline::new(args.write.max_seconds);
    // Per task: the cost of a row differs between tasks (path_json is in
    // the dedup index, resolved_path is not). On large tables the hold of
    // equal-sized batches varies about ±2× (page-cache misses on the
    // from_pubkey / dedup indexes), so the Batcher gets two thirds of
    // --max-lock-ms as its limit (a batch over it shrinks the next one at
    // once) and aims at a short hold (a quarter of --max-lock-ms, 50 ms by
    // default; see `short_hold`): aimed at a third, holds of 75-90 ms made
    // the ingestor's first waiting packet wait for its 103 ms retry.
    let settings = Settings {
        max_lock_ms: (args.write.max_lock_ms * 2 / 3).max(1),
        deadline,
    };
    let mut tasks: Vec<(BackfillTask, TaskReport)> = Vec::new();
    let mut max_hold = 0.0f64;
    for &task in selected {
        let mut e = Engine::new(target.reborrow(), settings)?;
        e.aim_short_holds(args.write.max_lock_ms);
        let rep = if task == BackfillTask::ObserverBlacklist {
            run_blacklist(&mut e, &ids)?
        } else if e.expired() {
            // Not started: report what is still pending.
            let mut rep = TaskReport::new(task, false);
            rep.remaining = pending(e.conn(), task)?;
            rep
        } else {
            run_row_task(
                &mut e,
                task,
                task::Options {
                    reset: args.reset.contains(&task),
                    show_bar: ctx.progress_allowed(),
                    batch_size: args.batch_size.map(|n| n.min(1_000_000) as usize),
                    max_batches: args.max_batches,
                },
            )?
        };
        if rep.ran && !e.target().is_dry_run() {
            let job = format!("backfill.{}", task.cli_name());
            e.batch(|tx| Ok((crate::store::state::record_run(tx, &job, rep.complete)?, 1)))?;
        }
        let stats = e.stats(rep.complete);
        if stats.transactions > 0 {
            e.checkpoint();
        }
        max_hold = max_hold.max(stats.max_lock_hold_ms);
        tasks.push((task, rep));
    }
    Ok(BackfillReport {
        complete: tasks.iter().all(|(_, r)| r.complete),
        tasks,
        dry_run: args.dry_run,
        max_lock_hold_ms: max_hold,
    })
}

#[cfg(test)]
mod tests {
    use super::task::{advance_cursor, cursor_key, read_cursor};
    use super::*;
    use crate::store;
    use crate::store::backfill_state::pending_counts;
    use rusqlite::Connection;

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
