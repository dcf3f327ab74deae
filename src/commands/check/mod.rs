//! `corescope check`: strictly read-only readiness report (schema, pending
//! migrations and backfills, data anomalies, vacuum/WAL health). Every
//! warning code is explained in docs/database.md, "Anomalies `check` reports".

mod anomalies;
mod report;

use crate::cli::CheckArgs;
use crate::context::Ctx;
use crate::error::Failure;
use crate::report::Outcome;
use crate::store::probe;
use crate::store::ReadOnlyDb;

use anomalies::Warning;
use report::{CheckReport, Integrity};

pub fn run(ctx: &Ctx, args: &CheckArgs) -> anyhow::Result<Outcome> {
    let ro = ReadOnlyDb::open(&ctx.db_path, ctx.busy_timeout_ms)?;
    let conn = ro.reader();
    let missing = probe::missing_objects(conn, args.target)?;
    log::info!(
        "schema objects for target {}: {} missing",
        args.target.name(),
        missing.len()
    );
    let pending: Vec<String> = probe::pending_migrations(conn, args.target)?
        .iter()
        .map(|m| m.name.to_string())
        .collect();
    log::info!("named migrations pending: {}", pending.len());
    // The backfill command's own counting (the same selections, after each
    // task's cursor).
    let backfills = crate::store::backfill_state::pending_counts(conn)?;
    log::info!("backfill rows pending: {backfills:?}");
    let vacuum_on_startup = ctx.config.db.vacuum_on_startup.unwrap_or(false);
    let mut warnings = anomalies::anomalies(&ro, conn, vacuum_on_startup)?;
    log::info!("data and health checks: {} warnings", warnings.len());
    for (task, n) in &backfills {
        if *n > 0 {
            warnings.push(Warning {
                code: "pending_backfill",
                message: format!(
                    "{n} rows wait for the {task} backfill; run `corescope backfill {}` (resumable, safe beside the ingestor)",
                    task.replace('_', "-")
                ),
            });
        }
    }
    let integrity = if args.integrity {
        log::info!("running quick_check and foreign_key_check");
        Some(integrity_check(&ro, &mut warnings)?)
    } else {
        None
    };
    let server_missing: Vec<String> = crate::catalog::assert_ready_items(args.target)
        .into_iter()
        .filter(|i| missing.contains(i))
        .collect();
    let report = CheckReport {
        database: ctx.db_path.display().to_string(),
        strict: args.strict,
        target: args.target.name(),
        ready: missing.is_empty() && pending.is_empty(),
        missing,
        server_missing,
        pending_migrations: pending,
        pending_backfills: backfills,
        warnings,
        integrity,
    };
    if let Some(i) = report.integrity.as_ref().filter(|i| i.corrupt()) {
        return Err(Failure::Fatal(format!(
            "{} failed PRAGMA quick_check: {}; restore from a backup",
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
