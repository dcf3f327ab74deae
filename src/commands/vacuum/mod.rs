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
use crate::store::{Deadline, WriteDb};

/// Lock budget of the standalone `vacuum` command (the default of `--max-lock-ms`).
const DEFAULT_MAX_LOCK_MS: u64 = 200;

pub fn run(ctx: &Ctx, args: &VacuumArgs) -> anyhow::Result<Outcome> {
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
    if args.full {
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
                max_lock_ms: DEFAULT_MAX_LOCK_MS,
                deadline: Deadline::new(None),
            },
        )?;
        vac = incremental(&mut eng, &path, pages)?;
        notes.extend(vac.note.clone());
    }
    db.write(|tx| crate::store::state::record_run(tx, "vacuum", true))?;
    // After a full VACUUM in WAL mode the rewritten pages sit in the WAL: only
    // a TRUNCATE checkpoint lets the file shrink and resets the WAL.
    let ck = checkpoint(&mut db, args.truncate_wal || args.full, DEFAULT_MAX_LOCK_MS)?;
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
        complete: true,
        max_lock_hold_ms: db.max_lock_hold_ms(),
        free_space,
    };
    Outcome::from_report(&report)
}
