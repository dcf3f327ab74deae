//! Per-run context shared by all commands.

use std::path::PathBuf;

use crate::config::Config;

#[derive(Debug, Clone)]
pub struct Ctx {
    /// The database path (from --db, CORESCOPE_DB or dbPath of the config).
    pub db_path: PathBuf,
    pub json: bool,
    pub quiet: bool,
    pub busy_timeout_ms: u64,
    pub config: Config,
    /// The run lock `WriteDb::open` takes (write commands; see `runlock`).
    pub run_lock: Option<crate::store::runlock::Spec>,
}

impl Ctx {
    pub fn open_options(&self, create: bool) -> crate::store::OpenOptions {
        crate::store::OpenOptions {
            busy_timeout_ms: self.busy_timeout_ms,
            create,
            run_lock: self.run_lock.clone(),
        }
    }

    /// Progress bars only on a terminal, never with --json or --quiet.
    pub fn progress_allowed(&self) -> bool {
        use std::io::IsTerminal;
        !self.json && !self.quiet && std::io::stderr().is_terminal()
    }
}
