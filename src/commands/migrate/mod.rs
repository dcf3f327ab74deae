//! `corescope migrate`: bring the schema to the target, step by step, each in
//! its own short transaction together with its `_migrations` row.
//!
//! - [`plan`]: the steps, derived from the catalog and the database;
//! - [`steps`]: applying a step (tables, columns, indexes, views, named
//!   migrations);
//! - [`data`]: the data steps of named migrations, in batches;
//! - [`repairs`]: text `observer_idx`, the duplicate merge, `inactive_nodes`;
//! - [`online`]: which index builds run online, beside a live ingestor;
//! - [`report`]: the reports of a run and a dry run.
//!
//! Every write goes through the batch engine. Its tuning for batch jobs
//! applies here too: in WAL mode `synchronous = NORMAL` (a commit stays
//! atomic; after a power loss the last commits may be lost, and the next
//! run redoes them, because every step and every data batch re-checks what
//! is still to do and a migration is recorded in the transaction that
//! finishes it) and no automatic checkpoint inside a commit, a PASSIVE one
//! by WAL growth instead. A database with nothing to do gets no write
//! transaction at all.

mod data;
mod online;
mod plan;
mod repairs;
mod report;
mod steps;

use std::time::Instant;

use anyhow::Context;
use rusqlite::Connection;

use crate::catalog::{self, DataOp, Record, Target};
use crate::cli::MigrateArgs;
use crate::context::Ctx;
use crate::error::Failure;
use crate::report::{ms, Outcome};
use crate::store::edge_state::NEEDS_REBUILD_KEY;
use crate::store::engine::{self, Engine};
use crate::store::probe::{self, ObsShape};
use crate::store::shadow::{self, Phase};
use crate::store::{self, Deadline, ReadOnlyDb, WriteDb};

use plan::{plan, Action, Step};
use repairs::MergeStats;
use report::{
    Common, Done, DryRunReport, Merged, MigrateReport, Planned, Skipped, StepDone, Verdict,
};
use steps::{apply, Applied};

/// `migrate`, after the copy of `--backup PATH` (taken only when the
/// database exists: a new file has nothing to lose; refused with --dry-run).
pub fn run(ctx: &Ctx, args: &MigrateArgs) -> anyhow::Result<Outcome> {
    let mut taken = None;
    if let Some(dest) = &args.backup {
        let s = store::backup::Settings {
            dest,
            flag: "--backup",
            force: false,
            max_lock_ms: args.max_lock_ms,
            progress: ctx.progress_allowed(),
        };
        store::backup::check_dest(&ctx.db_path, &s)?;
        if ctx.db_path.exists() && store::file_len(&ctx.db_path) > 0 {
            taken = Some(store::backup::take(
                &ctx.db_path,
                ctx.busy_timeout_ms,
                ctx.run_lock.as_ref(),
                &s,
            )?);
        } else {
            log::info!(
                "--backup: {} is new, nothing to copy",
                ctx.db_path.display()
            );
        }
    }
    let mut out = migrate(ctx, args)?;
    if let Some(b) = taken {
        out.human
            .push_str(&format!("{}\n", store::backup::summary(&b)));
        out.set("backup", serde_json::to_value(&b)?);
    }
    Ok(out)
}

fn migrate(ctx: &Ctx, args: &MigrateArgs) -> anyhow::Result<Outcome> {
    let path = &ctx.db_path;
    // An empty file is as new as a missing one (`--create` fills it).
    let exists = path.exists() && store::file_len(path) > 0;
    if args.dry_run {
        return Outcome::from_report(&dry_run(ctx, args, exists)?);
    }
    let mut db = WriteDb::open(path, &ctx.open_options(args.create))?;
    let created = db.created();
    if created {
        // auto_vacuum must be set before the first table; then WAL.
        db.conn()
            .execute_batch("PRAGMA auto_vacuum = INCREMENTAL;")
            .context("setting auto_vacuum")?;
        let mode: String = db
            .conn()
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .context("setting WAL journal mode")?;
        log::info!(
            "created {} (auto_vacuum=INCREMENTAL, journal_mode={mode})",
            path.display()
        );
    }
    refuse_v2(db.conn(), path)?;
    let deadline = Deadline::new(args.max_seconds);
    let already = count_already(db.conn(), args.target)?;
    let plan = plan(db.conn(), args.target, false)?;
    let mut online = online::Online::new(args, deadline);
    let mut e = Engine::new(
        engine::Target::Write(&mut db),
        engine::Settings {
            max_lock_ms: args.max_lock_ms,
            deadline: Deadline::new(None),
        },
    )?;
    e.show_progress(
        ctx.progress_allowed()
            .then(|| crate::progress::counter("migrate", "rows")),
    );
    let mut rep = MigrateReport {
        common: Common {
            target: args.target.name(),
            applied: Vec::new(),
            already,
            complete: false,
            max_lock_hold_ms: 0.0,
            not_repaired: Vec::new(),
            path: path.display().to_string(),
        },
        done: Done::default(),
        verdict: Verdict::default(),
        merged_observations: Merged {
            groups: 0,
            rows: 0,
            audit_table: catalog::MERGED_OBSERVATIONS,
        },
        build_edges_rebuild_needed: false,
        created,
        online_builds: Vec::new(),
        stopped: false,
    };
    let mut merged = MergeStats::default();
    // A data step, once started, runs to its end; `--max-seconds` stops
    // between steps and between the batches of an online build.
    for step in &plan {
        if online.before_step(&mut e, step)? == Phase::Stopped || deadline.expired() {
            rep.stopped = true;
            break;
        }
        apply_one(&mut e, step, &mut rep, &mut merged)?;
    }
    // Builds no step of this run wanted (the index was created otherwise)
    // are removed, and an old table left by a swap is finished.
    if !rep.stopped && shadow::clean_up(&mut e, online.budget)? == Phase::Stopped {
        rep.stopped = true;
    }
    e.finish_progress();
    rep.online_builds = std::mem::take(&mut online.builds);
    finish(&e, args.target, &mut rep, &merged)?;
    let stats = e.stats(true);
    if stats.transactions > 0 {
        e.checkpoint();
    }
    rep.common.max_lock_hold_ms = stats.max_lock_hold_ms;
    Outcome::from_report(&rep)
}

/// Apply `step` and record it in the report as applied or skipped.
fn apply_one(
    e: &mut Engine<'_>,
    step: &Step,
    rep: &mut MigrateReport,
    merged: &mut MergeStats,
) -> anyhow::Result<()> {
    let t0 = Instant::now();
    e.progress_message(&step.label);
    let res = apply(e, step, &mut rep.done.notes, merged)
        .with_context(|| format!("migration step {}", step.label))?;
    match res {
        Applied::Done(rows) => {
            log::info!(
                "applied {} ({} rows, {:.0} ms)",
                step.label,
                rows,
                ms(t0.elapsed())
            );
            rep.common.applied.push(step.label.clone());
            rep.done.steps.push(StepDone {
                name: step.label.clone(),
                rows,
                ms: ms(t0.elapsed()),
                what: step.detail.clone(),
                shows_rows: matches!(step.action, Action::Migration(m) if m.data != DataOp::None)
                    || matches!(
                        step.action,
                        Action::MergeDuplicates { .. } | Action::SyncInactiveNodes
                    ),
            });
        }
        Applied::Skipped(reason) => {
            log::warn!("skipped {}: {reason}", step.label);
            rep.done.skipped.push(Skipped {
                name: step.label.clone(),
                reason,
            });
        }
    }
    Ok(())
}

/// What is left after the steps (e.g. the dedup index while duplicates
/// exist), and the notes an operator needs.
fn finish(
    e: &Engine<'_>,
    target: Target,
    rep: &mut MigrateReport,
    merged: &MergeStats,
) -> anyhow::Result<()> {
    let conn = e.conn();
    rep.verdict = Verdict::new(
        probe::missing_objects(conn, target)?,
        probe::pending_migrations(conn, target)?
            .iter()
            .map(|m| m.name.to_string())
            .collect(),
    );
    rep.common.not_repaired = store::schema_diff::not_repaired_by_migrate(conn, target)?;
    let (text_total, _) = probe::text_observer_idx(conn)?;
    if text_total > 0 {
        rep.done.notes.push(format!(
            "{text_total} observations keep a text observer_idx that matches no single observer id; left as they are"
        ));
    }
    let needs_rebuild = store::state_get(conn, NEEDS_REBUILD_KEY)?.is_some();
    if merged.groups > 0 {
        rep.done.notes.push(format!(
            "merged {} groups of duplicate observations the way the ingestor's UPSERT would have ({} rows removed); \
             every removed row is kept verbatim in table {}, with merged_into = the id of the observation it was merged into",
            merged.groups,
            merged.rows,
            catalog::MERGED_OBSERVATIONS
        ));
    }
    if merged.staging_reset {
        rep.done.notes.push(
            "an unfinished `build-edges --rebuild` had scanned observations that were merged away: its staging table \
             is discarded, the next `build-edges --rebuild` starts over"
                .into(),
        );
    }
    if needs_rebuild {
        rep.done.notes.push(format!(
            "neighbor_edges counts observations that were changed or merged away since ({}): the next `corescope build-edges` \
             rebuilds it automatically, as `corescope build-edges --rebuild` does \
             (recorded as {NEEDS_REBUILD_KEY} in {}; `corescope check` reports it until the rebuild)",
            crate::store::edge_state::rebuild_reasons(conn)?.join("; "),
            store::STATE_TABLE
        ));
    }
    rep.merged_observations.groups = merged.groups;
    rep.merged_observations.rows = merged.rows;
    rep.build_edges_rebuild_needed = needs_rebuild;
    if rep.stopped {
        rep.done.notes.push(
            "stopped by --max-seconds at a batch boundary; the next `corescope migrate` goes on where this one stopped"
                .into(),
        );
    }
    for b in &rep.online_builds {
        rep.done.notes.push(format!(
            "{}: {} built online ({} rows copied, {} rows of the replaced table removed){}",
            b.table,
            b.indexes.join(", "),
            b.rows_copied,
            b.old_rows_removed,
            if b.complete {
                ""
            } else {
                "; not finished, the next run goes on"
            }
        ));
    }
    rep.common.complete = rep.verdict.ready && !rep.stopped;
    Ok(())
}

fn dry_run(ctx: &Ctx, args: &MigrateArgs, exists: bool) -> anyhow::Result<DryRunReport> {
    let (plan, already, not_repaired) = if !exists && args.create {
        // Plan against an empty schema; nothing is created.
        let conn = Connection::open_in_memory()?;
        (plan(&conn, args.target, true)?, 0, Vec::new())
    } else {
        let ro = ReadOnlyDb::open(&ctx.db_path, ctx.busy_timeout_ms)?;
        refuse_v2(ro.reader(), &ctx.db_path)?;
        (
            plan(ro.reader(), args.target, true)?,
            count_already(ro.reader(), args.target)?,
            store::schema_diff::not_repaired_by_migrate(ro.reader(), args.target)?,
        )
    };
    let mut plan = plan;
    let mut online_steps = Vec::with_capacity(plan.len());
    {
        let ro;
        let conn = if exists {
            ro = ReadOnlyDb::open(&ctx.db_path, ctx.busy_timeout_ms)?;
            Some(ro.reader())
        } else {
            None
        };
        let on = online::Online::new(args, Deadline::new(None));
        for s in &mut plan {
            online_steps.push(match conn {
                Some(c) => on.annotate(c, s)?,
                None => false,
            });
        }
    }
    let planned = plan
        .into_iter()
        .zip(online_steps)
        .map(|(s, online)| Planned {
            online,
            groups: match s.action {
                Action::MergeDuplicates { groups } => Some(groups),
                _ => None,
            },
            name: s.label,
            what: s.detail,
            rows: s.rows,
        })
        .collect();
    Ok(DryRunReport {
        common: Common {
            target: args.target.name(),
            applied: Vec::new(),
            already,
            complete: true,
            max_lock_hold_ms: 0.0,
            not_repaired,
            path: ctx.db_path.display().to_string(),
        },
        planned,
        dry_run: true,
    })
}
fn refuse_v2(conn: &Connection, path: &std::path::Path) -> anyhow::Result<()> {
    if probe::observations_shape(conn)? == ObsShape::V2 {
        return Err(Failure::Fatal(format!(
            "{}: the observations table has the v2 shape of the retired Node.js backend (observer_id, text timestamps); \
             CoreScope's Go ingestor cannot run on it and corescope does not convert it. Convert it with the \
             CoreScope v3 upgrade first",
            path.display()
        ))
        .into());
    }
    Ok(())
}

fn count_already(conn: &Connection, target: Target) -> anyhow::Result<i64> {
    let recorded = probe::recorded_migrations(conn)?;
    let done_async = probe::done_async_migrations(conn)?;
    Ok(catalog::migration_order(target)
        .iter()
        .filter(|m| match m.record {
            Record::Migrations => recorded.iter().any(|n| n == m.name),
            Record::AsyncMigrations => done_async.iter().any(|n| n == m.name),
        })
        .count() as i64)
}

#[cfg(test)]
mod tests {
    use super::data::advert_counts;
    use super::plan::{index_columns, MERGE_STEP};
    use super::*;

    #[test]
    fn index_columns_parsing() {
        for (sql, want) in [
            ("CREATE INDEX IF NOT EXISTS i ON t(a, b)", &["a", "b"][..]),
            (
                "CREATE INDEX x ON transmissions(channel_hash) WHERE payload_type = 5",
                &["channel_hash", "payload_type"],
            ),
            (
                "CREATE INDEX z ON transmissions(id) WHERE last_seen=0",
                &["id", "last_seen"],
            ),
            (
                "CREATE UNIQUE INDEX d ON observations(transmission_id, observer_idx, COALESCE(path_json, ''))",
                &["transmission_id", "observer_idx"],
            ),
        ] {
            assert_eq!(index_columns(sql), want, "{sql}");
        }
    }

    fn legacy_like() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE TABLE nodes (public_key TEXT PRIMARY KEY, name TEXT, role TEXT, lat REAL, lon REAL, last_seen TEXT, first_seen TEXT, advert_count INTEGER DEFAULT 0, battery_mv INTEGER, temperature_c REAL);
             CREATE TABLE observers (id TEXT PRIMARY KEY, name TEXT, iata TEXT, last_seen TEXT, first_seen TEXT, packet_count INTEGER DEFAULT 0, model TEXT, firmware TEXT, client_version TEXT, radio TEXT, battery_mv INTEGER, uptime_secs INTEGER, noise_floor REAL);
             CREATE TABLE transmissions (id INTEGER PRIMARY KEY AUTOINCREMENT, raw_hex TEXT NOT NULL, hash TEXT NOT NULL UNIQUE, first_seen TEXT NOT NULL, route_type INTEGER, payload_type INTEGER, payload_version INTEGER, decoded_json TEXT, created_at TEXT DEFAULT (datetime('now')));
             CREATE TABLE observations (id INTEGER PRIMARY KEY AUTOINCREMENT, transmission_id INTEGER NOT NULL REFERENCES transmissions(id), observer_idx INTEGER, direction TEXT, snr REAL, rssi REAL, score INTEGER, path_json TEXT, timestamp INTEGER NOT NULL);",
        )
        .unwrap();
        c
    }

    #[test]
    fn plan_on_legacy_shape_orders_phases() {
        let c = legacy_like();
        let steps = plan(&c, Target::Latest, true).unwrap();
        let labels: Vec<&str> = steps.iter().map(|s| s.label.as_str()).collect();
        let pos = |l: &str| {
            labels
                .iter()
                .position(|x| *x == l)
                .unwrap_or_else(|| panic!("{l} in {labels:?}"))
        };
        assert!(pos("table:neighbor_edges") < pos("from_pubkey_v1"));
        assert!(pos("from_pubkey_v1") < pos("advert_count_unique_v1"));
        assert!(pos("index:idx_observations_transmission_id") < pos("tx_last_seen_backfill_v1"));
        assert!(pos("tx_last_seen_backfill_v1") < pos("index:idx_tx_last_seen_zero"));
        assert!(pos("index:idx_observations_dedup") > pos("advert_count_unique_v1"));
        assert_eq!(labels.last(), Some(&"view:packets_v"));
        // Own migration absent: no text observer_idx rows here.
        assert!(!labels.contains(&catalog::OBSERVER_IDX_MIGRATION));
    }

    #[test]
    fn plan_creates_inactive_nodes_like_nodes_and_adds_columns_to_both() {
        let c = legacy_like();
        c.execute_batch("ALTER TABLE nodes ADD COLUMN scope TEXT")
            .unwrap();
        let steps = plan(&c, Target::Latest, true).unwrap();
        let labels: Vec<&str> = steps.iter().map(|s| s.label.as_str()).collect();
        assert!(labels.contains(&"table:inactive_nodes"));
        assert!(
            labels.contains(&"inactive_nodes.multibyte_sup"),
            "{labels:?}"
        );
        assert!(!labels.contains(&"rebuild:inactive_nodes"), "{labels:?}");
        assert!(!labels.contains(&MERGE_STEP));
    }

    #[test]
    fn advert_counts_fall_back_to_decoded_json() {
        let c = legacy_like();
        c.execute_batch(
            r#"INSERT INTO transmissions (raw_hex, hash, first_seen, payload_type, decoded_json) VALUES
               ('', 'a', 't', 4, '{"pubKey":"AB"}'), ('', 'b', 't', 4, '{"pubKey":"ab"}'),
               ('', 'c', 't', 4, 'not json'), ('', 'd', 't', 5, '{"pubKey":"ab"}');"#,
        )
        .unwrap();
        let m = advert_counts(&c, ">", i64::MIN).unwrap();
        assert_eq!(m.get("ab"), Some(&2));
        assert_eq!(m.len(), 1);
    }
}
