//! `corescope prune`: CoreScope's retention in short, batched
//! write transactions, comparing stored times as instants.
//!
//! Design (docs/prune.md has the long form):
//! - Cutoffs are computed once from `--now` and compared as epoch seconds
//!   (`timeutil::parse_instant`), never as text. NULL and unparseable values
//!   are never deleted and are counted.
//! - Each kind walks its table in batches on the store's engine ([`walk`]);
//!   a packet batch deletes transmissions together with all their
//!   observations; a node batch copies by column name and deletes.
//! - `--dry-run` walks exactly the same rows on a read-only handle and counts.
//!
//! Files: [`settings`] (config and flags), [`kinds`] (what each kind walks
//! and does), [`walk`] (the batched walk), [`report`] (the report).

mod kinds;
mod report;
mod settings;
mod walk;

use std::path::Path;
use std::time::Instant;

use anyhow::Context;

use self::kinds::{KindReport, Runner};
use self::report::{PruneReport, Space};
pub use self::settings::{resolve_settings, selected_kinds, Settings, ORDER};
pub use self::walk::OBSERVER_METRICS_PENDING;
use crate::cli::{PruneArgs, PruneKind};
use crate::context::Ctx;
use crate::error::Failure;
use crate::report::{ms, Outcome};
use crate::retention::cutoff_for;
use crate::store::engine::{self, Engine, Target};
use crate::store::maintenance::{checkpoint, incremental, FileSizes, FreeSpace, VacuumResult};
use crate::store::{Deadline, ReadOnlyDb, WriteDb};
use crate::timeutil;

/// prune's page cache on the write connection, in KiB (16 MiB).
const PRUNE_CACHE_KIB: u32 = 16 * 1024;

/// What the kinds of one run did, in CoreScope's order.
struct KindsDone {
    rows: Vec<(PruneKind, KindReport)>,
    complete: bool,
    /// The incremental vacuum after the kinds (real runs only).
    vacuum: Option<VacuumResult>,
}

pub fn run(ctx: &Ctx, args: &PruneArgs) -> anyhow::Result<Outcome> {
    let settings = resolve_settings(&ctx.config, args).map_err(Failure::Usage)?;
    let now = timeutil::parse_now(
        args.now.as_deref(),
        timeutil::now_epoch(),
        args.allow_any_now,
    )
    .map_err(|e| Failure::Usage(format!("--now: {e}")))?;
    let kinds = selected_kinds(&args.only, &args.skip);
    let path = &ctx.db_path;
    let shown = crate::report::display_path(path);
    let (done, space) = if args.dry_run {
        let db = ReadOnlyDb::open(path, ctx.busy_timeout_ms)?;
        db.require_ready()?;
        let mut space = Space {
            sizes: FileSizes::before(path),
            ..Space::default()
        };
        let done = run_kinds(
            path,
            Target::DryRun(&db),
            args,
            &settings,
            &kinds,
            now,
            ctx.progress_allowed(),
        )?;
        space.sizes.measure_after(path);
        space.free_space = FreeSpace::measure(|p| db.pragma_i64(p), settings.vacuum_pages, &shown)?;
        (done, space)
    } else {
        let mut db = WriteDb::open(path, &ctx.open_options(false))?;
        db.require_ready()?;
        let sizes = FileSizes::before(path);
        let done = run_kinds(
            path,
            Target::Write(&mut db),
            args,
            &settings,
            &kinds,
            now,
            ctx.progress_allowed(),
        )?;
        db.write(|tx| crate::store::state::record_run(tx, "prune", done.complete))?;
        let mut space = Space {
            vacuum: done.vacuum.clone(),
            checkpoint: Some(checkpoint(
                &mut db,
                args.truncate_wal,
                args.write.max_lock_ms,
            )?),
            max_lock_hold_ms: db.max_lock_hold_ms(),
            sizes,
            free_space: FreeSpace::measure(
                |p| crate::store::maintenance::pragma_i64(db.conn(), p),
                settings.vacuum_pages,
                &shown,
            )?,
        };
        space.sizes.measure_after(path);
        (done, space)
    };
    let report = PruneReport::new(shown, args.dry_run, now, done.rows, done.complete, space);
    Outcome::from_report(&report)
}

/// Run every kind in CoreScope's order on one engine: selected kinds with a
/// retention run until `--max-seconds`; the others are reported with why
/// they did not run. A real run then vacuums incrementally. `progress`:
/// count the rows on stderr (a terminal).
// One call site per target; a struct for these would only rename them.
#[allow(clippy::too_many_arguments)]
fn run_kinds(
    path: &Path,
    target: Target,
    args: &PruneArgs,
    settings: &Settings,
    kinds: &[PruneKind],
    now: i64,
    progress: bool,
) -> anyhow::Result<KindsDone> {
    let dry = target.is_dry_run();
    let mut eng = Engine::new(
        target,
        engine::Settings {
            max_lock_ms: args.write.max_lock_ms,
            deadline: Deadline::new(args.write.max_seconds),
        },
    )
    .context("preparing prune's connection for batched writes")?;
    if !dry {
        // A page cache that holds one batch's pages: with SQLite's default
        // (2 MB) a batch spilled dirty pages into the WAL mid-transaction
        // and re-read index pages from the OS (prune's profile). Bounded,
        // so peak RSS stays far below 64 MB at any database size. Statement
        // journals in memory: each multi-row DELETE journals the pages it
        // changes (bounded by one batch), which in a temp file cost a write
        // per page (10 % of prune's profile). Not for other commands: with
        // `temp_store = MEMORY` a CREATE INDEX sorts in memory (migrate's
        // peak RSS grew from 12 to 56 MB at 1 M).
        eng.conn()
            .execute_batch(&format!(
                "PRAGMA cache_size = -{PRUNE_CACHE_KIB}; PRAGMA temp_store = MEMORY;"
            ))
            .context("setting prune's page cache")?;
    }
    eng.show_progress(
        progress.then(|| {
            crate::progress::counter(if dry { "prune --dry-run" } else { "prune" }, "rows")
        }),
    );
    // A batch stops acting after a short hold (a quarter of the budget,
    // 50 ms at the default 200): with its last chunk and the commit the
    // hold then ends near 70 ms, before the 78 ms retry of a writer waiting
    // in SQLite's busy handler; at 0.4 the holds of 80-110 ms made the
    // ingestor's first waiting packet wait for the 103 ms retry (probe p99
    // 116 ms at 1 M and 10 M, then 84-86 and 97 ms; prune 5-10 % slower).
    let mut runner = Runner {
        budget: engine::short_hold(args.write.max_lock_ms),
        dry_excluded_observers: None,
    };
    let mut done = KindsDone {
        rows: Vec::new(),
        complete: true,
        vacuum: None,
    };
    for kind in ORDER {
        let days = settings.days(kind);
        let mut rep = KindReport {
            days,
            cutoff: days.map(|d| cutoff_for(now, d)),
            status: "done",
            ..KindReport::default()
        };
        match rep.cutoff {
            _ if !kinds.contains(&kind) => rep.status = "not selected",
            None => rep.status = "disabled",
            Some(_) if !done.complete => rep.status = "not reached",
            Some(cutoff) => {
                eng.progress_message(kind.name());
                let t0 = Instant::now();
                let finished = runner
                    .run(&mut eng, kind, cutoff, &mut rep)
                    .with_context(|| format!("pruning {}", kind.name()))?;
                log::info!(
                    "{}: {} rows {} in {:.0} ms (cutoff {})",
                    kind.name(),
                    rep.stats.deleted,
                    if dry { "due" } else { "pruned" },
                    ms(t0.elapsed()),
                    timeutil::rfc3339(cutoff)
                );
                if !finished {
                    rep.status = "incomplete";
                    done.complete = false;
                }
            }
        }
        done.rows.push((kind, rep));
    }
    eng.finish_progress();
    if !dry {
        done.vacuum = Some(incremental(&mut eng, path, settings.vacuum_pages)?);
    }
    Ok(done)
}
