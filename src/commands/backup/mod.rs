//! `corescope backup PATH`: a consistent online copy of the database while
//! the ingestor writes (the store's [`crate::store::backup`]), checked with
//! `PRAGMA quick_check`, written atomically beside PATH.

use serde::Serialize;

use crate::cli::BackupArgs;
use crate::context::Ctx;
use crate::report::{Outcome, Report};
use crate::store::backup::{self, BackupResult, Settings};
use crate::store::{runlock, ReadOnlyDb};

/// The report: the copy's keys at the top level.
#[derive(Debug, Serialize)]
struct BackupReport {
    #[serde(flatten)]
    backup: BackupResult,
    complete: bool,
}

impl Report for BackupReport {
    fn human(&self) -> String {
        let b = &self.backup;
        let mut h = format!("{}\n", backup::summary(b));
        h.push_str(&format!(
            "journal_mode {}, method {}; free before the copy: {} bytes (needed {})\n",
            b.journal_mode, b.method, b.free_bytes, b.required_free_bytes
        ));
        if b.method == "stepped" {
            h.push_str(&format!(
                "longest shared-lock hold {} ms\n",
                b.max_lock_hold_ms
            ));
        }
        h
    }
}

pub fn run(ctx: &Ctx, args: &BackupArgs) -> anyhow::Result<Outcome> {
    let settings = Settings {
        dest: &args.path,
        flag: "backup",
        force: args.force,
        max_lock_ms: args.max_lock_ms,
        progress: ctx.progress_allowed(),
    };
    // The output path is refused before the database is read.
    backup::check_dest(&ctx.db_path, &settings)?;
    let src = ReadOnlyDb::open(&ctx.db_path, ctx.busy_timeout_ms)?;
    // Two backups of one database at once would only race for the disk.
    if let Some(spec) = &ctx.run_lock {
        runlock::hold(&ctx.db_path, spec)?;
    }
    let r = backup::backup(&src, &settings)?;
    Outcome::from_report(&BackupReport {
        backup: r,
        complete: true,
    })
}
