//! Parsing the command line together with the environment: empty
//! `CORESCOPE_*` variables count as unset, and where the database and
//! config paths came from is kept for messages.

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};

use super::Cli;

/// Where a path option came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum From {
    /// Not given.
    #[default]
    None,
    /// The command-line flag.
    Flag,
    /// The environment variable.
    Env,
}

/// Where `--db`, `--config` and `--metrics-file` came from, and the empty
/// `CORESCOPE_*` variables that were treated as unset.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub db: From,
    pub config: From,
    pub metrics_file: From,
    pub empty_env: Vec<String>,
}

/// Remove every `CORESCOPE_*` variable whose value is empty, so that
/// `CORESCOPE_METRICS_FILE=` in an env file means "no metrics file" instead
/// of a usage error. Returns their names. Runs before any thread exists.
fn scrub_empty_env() -> Vec<String> {
    let empty: Vec<String> = std::env::vars_os()
        .filter(|(k, v)| v.is_empty() && k.to_string_lossy().starts_with("CORESCOPE_"))
        .map(|(k, _)| k.to_string_lossy().into_owned())
        .collect();
    for k in &empty {
        std::env::remove_var(k);
    }
    empty
}

/// Where the argument `id` came from, in the matches of the subcommand
/// that has it (the path options belong to the subcommands).
fn source(m: &ArgMatches, id: &str) -> From {
    let mut cur = m;
    while cur.try_contains_id(id).is_err() {
        match cur.subcommand() {
            Some((_, sub)) => cur = sub,
            None => return From::None,
        }
    }
    match cur.value_source(id) {
        Some(ValueSource::CommandLine) => From::Flag,
        Some(ValueSource::EnvVariable) => From::Env,
        _ => From::None,
    }
}

/// Parse `std::env::args` (exits with clap's message and code 2 on a usage
/// error, like `Cli::parse`).
pub fn parse() -> Cli {
    let empty_env = scrub_empty_env();
    // Built once: building the command tree is most of clap's share of a
    // run's start (about 0.15 ms each time).
    let root = Cli::command();
    let nested: Vec<&str> = root
        .get_subcommands()
        .filter(|s| s.has_subcommands())
        .map(clap::Command::get_name)
        .collect();
    // Options that were global flags once may still come before the
    // subcommand (`corescope --db x check`).
    let args = super::move_leading_options(std::env::args_os(), &nested);
    let matches = root.get_matches_from(args);
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    cli.sources = Sources {
        db: source(&matches, "db"),
        config: source(&matches, "config"),
        metrics_file: source(&matches, "metrics_file"),
        empty_env,
    };
    cli
}
