//! `corescope vacuum`: incremental vacuum and WAL checkpoint, and (`--full`)
//! the one-time conversion of `auto_vacuum` to INCREMENTAL with a full
//! `VACUUM` after checking free disk space.
//!
//! Files: [`space`] (free space and SQLite's temporary directory), [`full`]
//! (the conversion), [`report`] (the report). The incremental vacuum and
//! checkpoint are the store's, shared with `prune`.

mod full;
mod report;
mod space;

use self::report::VacuumReport;
pub use self::space::{
    db_dir, enough_space, free_bytes, sqlite_temp_dir, FREE_BYTES_ENV, TMP_FREE_BYTES_ENV,
};
use crate::cli::VacuumArgs;
use crate::context::Ctx;
use crate::error::Failure;
use crate::report::Outcome;
use crate::store::engine::{self, Engine, Target};
use crate::store::maintenance::{
    auto_vacuum_name, checkpoint, incremental, pragma_i64, FileSizes, FreeSpace, VacuumResult,
};
use crate::store::{backup, Deadline, WriteDb};

/// Lock budget of the standalone `vacuum` command (the default of `--max-lock-ms`).
const DEFAULT_MAX_LOCK_MS: u64 = 200;

pub fn run(ctx: &Ctx, args: &VacuumArgs) -> anyhow::Result<Outcome> {
    let max_lock_ms = args.max_lock_ms.unwrap_or(DEFAULT_MAX_LOCK_MS);
    let backup_settings = args.backup.as_deref().map(|dest| backup::Settings {
        dest,
        flag: "--backup",
        force: false,
        max_lock_ms,
        progress: ctx.progress_allowed(),
    });
    if let Some(s) = &backup_settings {
        // Refused before anything is opened.
        backup::check_dest(&ctx.db_path, s)?;
    }
    let pages = match args.pages {
        Some(p) if p < 0 => {
            return Err(Failure::Usage(format!(
                "--pages {p}: expected a page count >= 0 (0 skips the incremental vacuum)"
            ))
            .into())
        }
        Some(p) => p,
        None => ctx.config.vacuum_pages(),
    };
    let mut db = WriteDb::open(&ctx.db_path, &ctx.open_options(false))?;
    db.require_ready()?;
    let path = db.path().to_path_buf();
    let mut sizes = FileSizes::before(&path);
    let av_before = pragma_i64(db.conn(), "auto_vacuum")?;
    let pages_before = pragma_i64(db.conn(), "page_count")?;

    let mut vac = VacuumResult::default();
    let mut notes: Vec<String> = Vec::new();
    let mut checked = None;
    let mut complete = true;
    let mut backup_taken = None;
    if args.full {
        if let Some(s) = &backup_settings {
            // The copy first: the VACUUM below rewrites every page.
            let r = backup::take(&path, ctx.busy_timeout_ms, ctx.run_lock.as_ref(), s)?;
            notes.push(backup::summary(&r));
            backup_taken = Some(r);
        }
        let check = full::check_space(&path, sizes.file_bytes_before + sizes.wal_bytes_before)?;
        // One VACUUM statement reports no progress: a spinner with the time.
        let spin = ctx.progress_allowed().then(|| {
            crate::progress::spinner("vacuum --full", "VACUUM: rewriting the whole database")
        });
        let converted = full::convert(&mut db, &check.temp_dir);
        if let Some(s) = spin {
            s.finish_and_clear();
        }
        notes.push(converted?);
        checked = Some(check);
    } else {
        let mut eng = Engine::new(
            Target::Write(&mut db),
            engine::Settings {
                max_lock_ms,
                deadline: Deadline::new(args.max_seconds),
            },
        )?;
        (vac, complete) = incremental_until_deadline(&mut eng, &path, pages)?;
        notes.extend(vac.note.clone());
        if !complete {
            notes.push(format!(
                "stopped by --max-seconds with {} free pages left; the next run frees more",
                vac.freelist_after
            ));
        }
    }
    db.write(|tx| crate::store::state::record_run(tx, "vacuum", complete))?;
    // After a full VACUUM in WAL mode the rewritten pages sit in the WAL: only
    // a TRUNCATE checkpoint lets the file shrink and resets the WAL.
    let ck = checkpoint(&mut db, args.truncate_wal || args.full, max_lock_ms)?;
    let av_after = auto_vacuum_name(pragma_i64(db.conn(), "auto_vacuum")?);
    sizes.measure_after(&path);
    if args.full {
        // The pages the rewrite actually gave back (the file shrinks by them
        // once the checkpoint has copied the WAL back).
        let page_size = pragma_i64(db.conn(), "page_size")?;
        vac.vacuumed_pages = (pages_before - pragma_i64(db.conn(), "page_count")?).max(0);
        vac.freed_bytes = vac.vacuumed_pages.saturating_mul(page_size);
    }
    let shown = crate::report::display_path(&path);
    let free_space = FreeSpace::measure(|p| pragma_i64(db.conn(), p), pages, &shown)?;
    let report = VacuumReport {
        full: args.full,
        auto_vacuum_before: auto_vacuum_name(av_before),
        sizes,
        free_bytes: checked.as_ref().map(|c| c.free_bytes),
        required_free_bytes: checked.as_ref().map(|c| c.required_free_bytes),
        temp_dir: checked.map(|c| c.temp_dir),
        auto_vacuum_after: av_after,
        vacuumed_pages: vac.vacuumed_pages,
        freed_bytes: vac.freed_bytes,
        vacuum: (!args.full).then_some(vac),
        checkpoint: ck,
        notes,
        backup: backup_taken,
        complete,
        max_lock_hold_ms: db.max_lock_hold_ms(),
        free_space,
    };
    Outcome::from_report(&report)
}

/// The incremental vacuum of up to `pages` pages, one engine batch per call
/// of the store's `incremental`, stopping at a batch boundary once
/// `--max-seconds` has passed. Returns the summed result and whether it ran
/// to the end (all pages requested, or the freelist exhausted).
fn incremental_until_deadline(
    eng: &mut Engine<'_>,
    path: &std::path::Path,
    pages: i64,
) -> anyhow::Result<(VacuumResult, bool)> {
    if pages <= 0 {
        return Ok((incremental(eng, path, pages)?, true));
    }
    let mut total: Option<VacuumResult> = None;
    let mut remaining = pages;
    loop {
        if eng.expired() {
            let mut t = match total {
                Some(t) => t,
                None => incremental(eng, path, 0)?,
            };
            t.pages_requested = pages;
            let done = t.freelist_after == 0;
            return Ok((t, done));
        }
        let chunk = i64::try_from(eng.batch_size())
            .unwrap_or(i64::MAX)
            .clamp(1, remaining);
        let r = incremental(eng, path, chunk)?;
        remaining -= chunk;
        let last = !r.ran || r.busy || r.vacuumed_pages < chunk || remaining <= 0;
        total = Some(match total {
            None => r,
            Some(mut t) => {
                t.vacuumed_pages += r.vacuumed_pages;
                t.freed_bytes += r.freed_bytes;
                t.freelist_after = r.freelist_after;
                t.busy |= r.busy;
                t.ran |= r.ran;
                t.note = r.note.or(t.note);
                t
            }
        });
        if last {
            let mut t = total.unwrap_or_default();
            t.pages_requested = pages;
            return Ok((t, true));
        }
    }
}
