//! Error classes that decide the process exit code (README, "Exit codes").

use thiserror::Error;

/// A failure with a defined exit code. Return it through `anyhow` as
/// `Err(Failure::Busy(msg).into())`; `exit_code` finds it anywhere in the chain.
#[derive(Debug, Error)]
pub enum Failure {
    /// Exit 2: invalid command line or option value, no database given.
    #[error("{0}")]
    Usage(String),
    /// Exit 3: the schema is not ready (or `check --strict` saw a warning).
    #[error("{0}")]
    NotReady(String),
    /// Exit 75: busy, try again next run.
    #[error("{0}")]
    Busy(String),
    /// Exit 1: any other error (cannot open, not a database, corrupt, I/O, SQL).
    #[error("{0}")]
    Fatal(String),
}

pub const EXIT_OK: i32 = 0;
pub const EXIT_ERROR: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_NOT_READY: i32 = 3;
pub const EXIT_BUSY: i32 = 75;

/// The exit code for an error: the first `Failure` in the chain decides; a
/// SQLite BUSY/LOCKED error anywhere in the chain means 75; anything else 1.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    for cause in err.chain() {
        if let Some(f) = cause.downcast_ref::<Failure>() {
            return match f {
                Failure::Usage(_) => EXIT_USAGE,
                Failure::NotReady(_) => EXIT_NOT_READY,
                Failure::Busy(_) => EXIT_BUSY,
                Failure::Fatal(_) => EXIT_ERROR,
            };
        }
        if let Some(e) = cause.downcast_ref::<rusqlite::Error>() {
            if is_busy(e) {
                return EXIT_BUSY;
            }
        }
    }
    EXIT_ERROR
}

/// True for SQLITE_BUSY and SQLITE_LOCKED (another writer held the lock past the busy timeout).
pub fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_codes() {
        let e: anyhow::Error = Failure::Busy("x".into()).into();
        assert_eq!(exit_code(&e), 75);
        let e: anyhow::Error = Failure::Usage("x".into()).into();
        assert_eq!(exit_code(&e), 2);
        let e: anyhow::Error = Failure::NotReady("x".into()).into();
        assert_eq!(exit_code(&e.context("wrapped")), 3);
        let e = anyhow::anyhow!("plain");
        assert_eq!(exit_code(&e), 1);
    }

    #[test]
    fn sqlite_busy_is_75() {
        let e = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        );
        let e: anyhow::Error = anyhow::Error::new(e).context("while migrating");
        assert_eq!(exit_code(&e), 75);
    }
}
