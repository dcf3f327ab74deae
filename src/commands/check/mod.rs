//! `corescope check`: strictly read-only readiness report (schema, pending
//! migrations and backfills, job state, data anomalies, vacuum/WAL health).
//! Every warning code is explained in docs/database.md, "Anomalies `check`
//! reports".
//!
//! By default only work whose cost does not grow with the number of rows
//! runs (catalog, migrations, state, pragmas, row ids, index lookups); the
//! whole-table anomaly scans run with `--deep`.

mod anomalies;
mod diff;
mod jobs;
mod newer;
mod plan;
mod report;

use crate::cli::CheckArgs;
use crate::context::Ctx;
use crate::error::Failure;
use crate::report::Outcome;
use crate::store::maintenance::FreeSpace;
use crate::store::probe;
use crate::store::ReadOnlyDb;

use anomalies::{Scans, Warning};
use report::{CheckReport, Integrity};

/// The warning codes docs/database.md explains (its `### code` sections
/// under "Anomalies `check` reports"): what `--allow` accepts.
pub fn known_codes() -> Vec<&'static str> {
    let doc = include_str!("../../../docs/database.md");
    let section = doc
        .split("\n## Anomalies `check` reports")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .unwrap_or("");
    section
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .map(str::trim)
        .collect()
}

/// The codes `--allow` and `corescope.checkAllow` accept; an unknown code
/// is a usage error (a typo would otherwise accept nothing, silently).
fn allowed_codes(ctx: &Ctx, args: &CheckArgs) -> anyhow::Result<Vec<String>> {
    let known = known_codes();
    let mut out: Vec<String> = Vec::new();
    let from_cfg = ctx
        .config
        .corescope
        .check_allow
        .iter()
        .map(|c| (c, "corescope.checkAllow"));
    for (code, source) in args.allow.iter().map(|c| (c, "--allow")).chain(from_cfg) {
        let code = code.trim();
        if !known.contains(&code) {
            return Err(Failure::Usage(format!(
                "{source} {code:?}: not a warning code of check; known codes: {}",
                known.join(", ")
            ))
            .into());
        }
        if !out.iter().any(|c| c == code) {
            out.push(code.to_string());
        }
    }
    Ok(out)
}

pub fn run(ctx: &Ctx, args: &CheckArgs) -> anyhow::Result<Outcome> {
    let allow = allowed_codes(ctx, args)?;
    if args.max_edges_lag < 0 {
        return Err(Failure::Usage(format!(
            "--max-edges-lag {}: expected a number of observations >= 0",
            args.max_edges_lag
        ))
        .into());
    }
    let ro = ReadOnlyDb::open(&ctx.db_path, ctx.busy_timeout_ms)?;
    if args.diff {
        let entries = diff::diff(ro.reader(), args.target)?;
        log::info!("schema differences: {}", entries.len());
        return Outcome::from_report(&diff::DiffReport::new(args.target, entries));
    }
    let report = collect(ctx, args, &ro, allow)?;
    if let Some(i) = report.integrity.as_ref().filter(|i| i.corrupt()) {
        return Err(Failure::Fatal(format!(
            "{} failed PRAGMA quick_check: {}; restore from a backup (e.g. one taken with `corescope backup`)",
            ctx.db_path.display(),
            i.quick_check
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        ))
        .into());
    }
    Outcome::from_report(&report)
}

/// Everything `check` finds on the open database.
fn collect(
    ctx: &Ctx,
    args: &CheckArgs,
    ro: &ReadOnlyDb,
    allow: Vec<String>,
) -> anyhow::Result<CheckReport> {
    let conn = ro.reader();
    let missing = probe::missing_objects(conn, args.target)?;
    log::info!(
        "schema objects for target {}: {} missing",
        args.target.name(),
        missing.len()
    );
    let pending = if args.deep {
        probe::pending_migrations(conn, args.target)?
    } else {
        probe::pending_migrations_cheap(conn, args.target)?
    };
    let pending: Vec<String> = pending.iter().map(|m| m.name.to_string()).collect();
    log::info!("named migrations pending: {}", pending.len());
    let vacuum_on_startup = ctx.config.db.vacuum_on_startup.unwrap_or(false);
    let mut scans = Scans::new(args.deep, ctx.progress_allowed());
    let mut warnings = anomalies::anomalies(ro, conn, vacuum_on_startup, &mut scans)?;
    let free_space = FreeSpace::measure(
        |p| ro.pragma_i64(p),
        ctx.config.vacuum_pages(),
        &crate::report::display_path(&ctx.db_path),
    )?;
    if let Some(w) = free_space_warning(&free_space) {
        warnings.push(w);
    }
    log::info!("data and health checks: {} warnings", warnings.len());
    // The backfill command's own counting (the same selections, after each
    // task's cursor): a scan of every row after the cursor.
    let backfills = if scans.wants("pending_backfill") {
        // Keyed by the task's name as on the command line (`from-pubkey`),
        // like `backfill`'s `tasks` and check's `jobs.backfill`.
        let b: std::collections::BTreeMap<String, i64> =
            crate::store::backfill_state::pending_counts(conn)?
                .into_iter()
                .map(|(k, n)| (k.replace('_', "-"), n))
                .collect();
        log::info!("backfill rows pending: {b:?}");
        Some(b)
    } else {
        None
    };
    scans.finish();
    for (task, n) in backfills.iter().flatten() {
        if *n > 0 {
            warnings.push(Warning {
                code: "pending_backfill",
                message: format!(
                    "{n} rows wait for the {task} backfill; run `corescope backfill {task}` (resumable, safe beside the ingestor)"
                ),
            });
        }
    }
    let newer = newer::unknown_objects(conn)?;
    if !newer.is_empty() {
        warnings.push(Warning {
            code: "schema_newer",
            message: format!(
                "the database has objects this corescope does not know ({}): a newer CoreScope wrote them; corescope leaves them alone, but `ready` only speaks for the schema it knows: upgrade corescope",
                newer.join(", ")
            ),
        });
    }
    let jobs = jobs::jobs(conn, &ctx.config, crate::timeutil::now_epoch(), args.deep)?;
    let edges = &jobs.build_edges;
    if edges.lag > args.max_edges_lag {
        warnings.push(Warning {
            code: "edges_lag",
            message: format!(
                "up to {} observations (ids {} to {}) are not counted into neighbor_edges yet, more than --max-edges-lag {}{}: run `corescope build-edges` (resumable, safe beside the ingestor)",
                edges.lag,
                edges.watermark.unwrap_or(0) + 1,
                edges.max_observation_id,
                args.max_edges_lag,
                if edges.watermark.is_none() { "; build-edges has never run on this database" } else { "" }
            ),
        });
    }
    let integrity = if args.integrity {
        log::info!("running quick_check and foreign_key_check");
        Some(integrity_check(ro, &mut warnings)?)
    } else {
        None
    };
    let (allowed, warnings): (Vec<Warning>, Vec<Warning>) = warnings
        .into_iter()
        .partition(|w| allow.iter().any(|a| a == w.code));
    let server_missing: Vec<String> = crate::catalog::assert_ready_items(args.target)
        .into_iter()
        .filter(|i| missing.contains(i))
        .collect();
    Ok(CheckReport {
        database: crate::report::display_path(&ctx.db_path),
        strict: args.strict,
        target: args.target.name(),
        ready: missing.is_empty() && pending.is_empty(),
        missing,
        server_missing,
        pending_migrations: pending,
        pending_backfills: backfills,
        deep: args.deep,
        scans_run: scans.ran,
        not_scanned: scans.not_scanned,
        schema_newer: newer,
        jobs,
        warnings,
        allowed_warnings: allowed,
        integrity,
        free_space,
    })
}

/// More than this share of the file free ...
const LARGE_FREE_PERCENT: f64 = 25.0;
/// ... and the daily incremental vacuum needs more than this many days.
const LARGE_FREE_DAYS: i64 = 7;

/// `free_space_large`: a quarter of the file is free pages and the daily
/// incremental vacuum needs more than a week to return them (a database
/// not in INCREMENTAL mode has `auto_vacuum_not_incremental` instead).
fn free_space_warning(f: &FreeSpace) -> Option<Warning> {
    let days = f.days_to_return?;
    if f.free_percent <= LARGE_FREE_PERCENT || days <= LARGE_FREE_DAYS {
        return None;
    }
    Some(Warning {
        code: "free_space_large",
        message: format!(
            "{:.1} % of the file, {}, is free pages; at {} pages a day the daily incremental vacuum needs {days} days to return them; return them now with `{}` (short batches under the lock budget), or raise db.incrementalVacuumPages",
            f.free_percent,
            crate::report::bytes_i(f.free_bytes),
            f.pages_per_day,
            f.return_now.as_deref().unwrap_or("corescope vacuum")
        ),
    })
}

/// `PRAGMA quick_check` and `PRAGMA foreign_key_check`; violations also
/// become a warning.
fn integrity_check(ro: &ReadOnlyDb, warnings: &mut Vec<Warning>) -> anyhow::Result<Integrity> {
    let mut st = ro.prepare("PRAGMA quick_check")?;
    let qc: Vec<String> = st
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut st = ro.prepare("PRAGMA foreign_key_check")?;
    let fk: Vec<String> = st
        .query_map([], |r| {
            Ok(format!(
                "{} rowid {} -> {}",
                r.get::<_, String>(0)?,
                r.get::<_, Option<i64>>(1)?
                    .map(|v| v.to_string())
                    .unwrap_or_default(),
                r.get::<_, String>(2)?
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    if !fk.is_empty() {
        warnings.push(Warning {
            code: "foreign_key_violations",
            message: format!(
                "{} rows violate foreign keys (e.g. {}); observations without their transmission are orphans",
                fk.len(),
                fk.iter().take(3).cloned().collect::<Vec<_>>().join("; ")
            ),
        });
    }
    Ok(Integrity {
        foreign_key_violations: fk.len(),
        quick_check: qc,
    })
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::config::Config;

    thread_local! {
        static TRACED: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    }

    fn trace(sql: &str) {
        TRACED.with(|t| t.borrow_mut().push(sql.to_string()));
    }

    /// Every statement `check` runs on a synthetic database (latest schema,
    /// with anomalies) or a copy of the real unmigrated fixture, and the
    /// full scans SQLite's plan has for each.
    fn statements_and_scans(deep: bool, legacy: bool) -> Vec<(String, Vec<String>)> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        if legacy {
            let src = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../shared/fixtures/legacy-2026-03.db"
            );
            std::fs::copy(src, &path).unwrap();
            let mut perm = std::fs::metadata(&path).unwrap().permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perm.set_readonly(false);
            std::fs::set_permissions(&path, perm).unwrap();
        } else {
            let mut cfg = crate::commands::demo::demo_config(3000, 1_780_000_000);
            cfg.schema = crate::synth::Schema::Latest;
            cfg.anomalies = true;
            crate::synth::write_database(&cfg, &path, false, &|_, _, _| {}).unwrap();
        }
        let ctx = Ctx {
            db_path: path.clone(),
            json: true,
            quiet: true,
            busy_timeout_ms: 1000,
            config: Config::default(),
            run_lock: None,
        };
        let mut args = {
            use clap::Parser;
            #[derive(Parser)]
            struct W {
                #[command(flatten)]
                a: CheckArgs,
            }
            W::parse_from(["check"]).a
        };
        args.deep = deep;
        let mut ro = ReadOnlyDb::open(&path, 1000).unwrap();
        TRACED.with(|t| t.borrow_mut().clear());
        ro.reader_mut().trace(Some(trace));
        let report = collect(&ctx, &args, &ro, vec![]).unwrap();
        ro.reader_mut().trace(None);
        assert_eq!(report.deep, deep);
        let traced = TRACED.with(|t| t.borrow().clone());
        let plain = rusqlite::Connection::open(&path).unwrap();
        traced
            .into_iter()
            .filter(|s| {
                let s = s.trim_start().to_ascii_uppercase();
                !s.starts_with("EXPLAIN") && !s.starts_with("--")
            })
            .map(|s| {
                let scans = plan::full_scans(&plain, &s)
                    .unwrap_or_else(|e| panic!("EXPLAIN QUERY PLAN {s}: {e}"));
                (s, scans)
            })
            .collect()
    }

    #[test]
    fn default_check_reads_no_table_end_to_end() {
        for legacy in [false, true] {
            let fast = statements_and_scans(false, legacy);
            assert!(fast.len() > 20, "{} statements traced", fast.len());
            let scans: Vec<_> = fast.iter().filter(|(_, s)| !s.is_empty()).collect();
            assert!(
                scans.is_empty(),
                "full scans without --deep (legacy: {legacy}): {scans:#?}"
            );
        }
        // The same check with --deep does read whole tables (so the trace
        // above sees the queries that matter).
        let deep = statements_and_scans(true, false);
        assert!(
            deep.iter()
                .any(|(s, scans)| s.contains("NOT EXISTS") && !scans.is_empty()),
            "{deep:#?}"
        );
    }

    #[test]
    fn known_codes_come_from_the_docs() {
        let codes = known_codes();
        for c in [
            "zero_timestamp",
            "schema_newer",
            "edges_lag",
            "pending_backfill",
        ] {
            assert!(codes.contains(&c), "{c} not in {codes:?}");
        }
    }
}
