//! The option groups that several subcommands share, each flattened only
//! into the subcommands that use it (so `--help`, the man pages and the
//! completions of a command list only what it takes, and a flag a command
//! does not use is a usage error instead of being ignored):
//! - [`DbArgs`]: `--db`, `--config`, `--busy-timeout` — commands that open a
//!   CoreScope database;
//! - [`RunLockArgs`]: `--wait` — write commands (the run lock);
//! - [`MetricsArgs`]: `--metrics-file` — write commands and `check`.
//!
//! For scripts written when these were global flags, [`move_leading_options`]
//! moves them from before the subcommand to after it
//! (`corescope --db x.db check` still works, and is parsed exactly as
//! `corescope check --db x.db`).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Args;

/// SQLite keeps the busy timeout in a C int of milliseconds.
pub const MAX_BUSY_TIMEOUT_MS: u64 = i32::MAX as u64;

/// The database of a command that opens one.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Database")]
pub struct DbArgs {
    /// SQLite database file of CoreScope
    #[arg(long, env = "CORESCOPE_DB", value_name = "PATH")]
    pub db: Option<PathBuf>,

    /// CoreScope config.json (dbPath, retention.*, neighborEdgesMaxAgeDays, db.*, observerBlacklist)
    #[arg(long, env = "CORESCOPE_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// How long to wait for SQLite's lock before giving up with exit 75 (0 to 2147483647)
    #[arg(long, value_name = "MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(0..=MAX_BUSY_TIMEOUT_MS))]
    pub busy_timeout: u64,
}

/// The run lock of a write command.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Timers")]
pub struct RunLockArgs {
    /// Wait for the run lock (up to SECONDS; no value: as long as it takes) instead of exiting 75
    #[arg(long, value_name = "SECONDS", num_args = 0..=1)]
    pub wait: Option<Option<u64>>,
}

/// `--metrics-file` of the commands that write metrics.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Timers")]
pub struct MetricsArgs {
    /// Also write Prometheus metrics to PATH (node_exporter textfile, atomic; shareable)
    #[arg(long, env = "CORESCOPE_METRICS_FILE", value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
}

/// The options that were global flags once and may still come before the
/// subcommand: (long name, takes a value: `Some(true)` always, `Some(false)`
/// an optional whole number, as `--wait [SECONDS]`).
const LEADING: &[(&str, bool)] = &[
    ("--db", true),
    ("--config", true),
    ("--busy-timeout", true),
    ("--metrics-file", true),
    ("--wait", false),
];

/// Options of the root command that take no value (they may stand between
/// the leading options and the subcommand).
fn is_root_flag(a: &str) -> bool {
    a == "--json"
        || a == "--quiet"
        || a == "--verbose"
        || (a.len() > 1
            && a.starts_with('-')
            && !a.starts_with("--")
            && a[1..].chars().all(|c| c == 'q' || c == 'v'))
}

/// Move the options of [`LEADING`] written before the subcommand
/// (`corescope --db x.db graph dump`) to just after the subcommand path
/// (`corescope graph dump --db x.db`), where they are defined. `path` gives
/// the subcommands that have subcommands of their own (`graph`). Anything
/// else is left where it is, so clap reports it as usual; an option the
/// subcommand does not take is then a usage error naming it.
pub fn move_leading_options(
    args: impl IntoIterator<Item = OsString>,
    nested: &[&str],
) -> Vec<OsString> {
    let mut args: Vec<OsString> = args.into_iter().collect();
    if args.is_empty() {
        return args;
    }
    let mut moved: Vec<OsString> = Vec::new();
    let mut i = 1;
    while i < args.len() {
        let Some(a) = args[i].to_str().map(str::to_string) else {
            break;
        };
        if is_root_flag(&a) {
            i += 1;
            continue;
        }
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let Some((_, always)) = LEADING.iter().find(|(n, _)| *n == name) else {
            break;
        };
        let mut take = 1;
        if inline.is_none() {
            let next = args.get(i + 1).and_then(|n| n.to_str());
            let value_follows = if *always {
                next.is_some()
            } else {
                next.is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            };
            if value_follows {
                take = 2;
            }
        }
        moved.extend(args.drain(i..i + take));
    }
    if moved.is_empty() {
        return args;
    }
    // `i` is the subcommand (or an option clap will reject); skip the
    // subcommand path.
    let mut at = i;
    if let Some(sub) = args.get(at).and_then(|a| a.to_str()) {
        at += 1;
        if nested.contains(&sub) {
            if let Some(leaf) = args.get(at).and_then(|a| a.to_str()) {
                if !leaf.starts_with('-') {
                    at += 1;
                }
            }
        }
    }
    let at = at.min(args.len());
    args.splice(at..at, moved);
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moved(line: &str) -> String {
        let args = line.split(' ').map(OsString::from);
        move_leading_options(args, &["graph"])
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn leading_options_move_after_the_subcommand() {
        assert_eq!(
            moved("corescope --db x.db check -q"),
            "corescope check --db x.db -q"
        );
        assert_eq!(
            moved("corescope -q --db=x.db --config c.json prune --dry-run"),
            "corescope -q prune --db=x.db --config c.json --dry-run"
        );
        assert_eq!(
            moved("corescope --db x.db graph dump --format dot"),
            "corescope graph dump --db x.db --format dot"
        );
        assert_eq!(
            moved("corescope --wait 5 prune"),
            "corescope prune --wait 5"
        );
        assert_eq!(moved("corescope --wait prune"), "corescope prune --wait");
        assert_eq!(
            moved("corescope --json --db x.db -vv migrate"),
            "corescope --json -vv migrate --db x.db"
        );
        // Nothing to move, or something clap reports itself: unchanged.
        assert_eq!(
            moved("corescope check --db x.db"),
            "corescope check --db x.db"
        );
        assert_eq!(
            moved("corescope --frob --db x check"),
            "corescope --frob --db x check"
        );
        assert_eq!(moved("corescope --db"), "corescope --db");
        assert_eq!(moved("corescope"), "corescope");
    }
}
