//! The program behind `corescope`: resolve config and database, dispatch the
//! parsed command, print the report, write metrics and map errors to the exit
//! codes listed in the README. `main.rs` only parses and exits with the code.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::cli::{ArgFrom, Cli};
use crate::config::{Config, ConfigFrom};
use crate::context::Ctx;
use crate::error::{exit_code, Failure};
use crate::store::{self, outfile, runlock};
use crate::{commands, error, logging, metrics, report};

/// Run one parsed command line: resolve the database, dispatch, print the
/// report and return the process exit code (see the README's exit codes).
pub fn run(cli: &Cli) -> i32 {
    logging::init(cli.verbose, cli.quiet);
    let started = Instant::now();
    let command = cli.command.name();
    // The database path, once known: output files are checked against it.
    let mut db_path: Option<PathBuf> = None;
    // --metrics-file, once it has passed the output-path rules.
    let mut metrics_path: Option<&std::path::Path> = None;
    // stdout is the database itself (`>> x.db`): print nothing there.
    let mut stdout_is_db = false;
    // Commands that open no database by --db (schema reads --from-db).
    let (db_display, result) = match commands::standalone(&cli.command, cli.command.busy_timeout())
    {
        Some(result) => (String::new(), result),
        None => match build_ctx(cli).and_then(|(ctx, db_from)| {
            if outfile::fd_is_database_file(libc::STDERR_FILENO, &ctx.db_path).is_some() {
                // stderr is the database (`2>> x.db`): even the error line
                // would damage it, so exit without a word.
                return Err(SilentExit.into());
            }
            if let Err(e) = outfile::check_stdout(&ctx.db_path) {
                stdout_is_db = true;
                return Err(e.into());
            }
            metrics_path = checked_metrics_path(cli, &ctx.db_path)?;
            Ok((ctx, db_from))
        }) {
            Ok((ctx, db_from)) => {
                let shown = report::display_path(&ctx.db_path);
                db_path = Some(ctx.db_path.clone());
                log::info!(
                    "corescope {} {command} on {shown}",
                    env!("CARGO_PKG_VERSION")
                );
                (
                    shown,
                    commands::dispatch(&ctx, &cli.command).map_err(|e| {
                        with_db_source(
                            store::classify_final(&ctx.db_path, e),
                            &ctx.db_path,
                            &db_from,
                        )
                    }),
                )
            }
            Err(e) if e.is::<SilentExit>() => return error::EXIT_USAGE,
            Err(e) => (
                cli.command
                    .db()
                    .map(report::display_path)
                    .unwrap_or_default(),
                Err(e),
            ),
        },
    };
    let elapsed_ms = report::ms(started.elapsed());
    // ops: --metrics-file, derived from the report (or the failure).
    metrics::after_run(
        metrics_path,
        db_path.as_deref(),
        &cli.command,
        match &result {
            Ok(o) => o.exit_code,
            Err(e) => exit_code(e),
        },
        result.as_ref().ok().map(|o| &o.json),
        started.elapsed(),
    );
    let code = match result {
        Ok(outcome) => {
            if cli.quiet && outcome.exit_code != 0 {
                // -q keeps stdout empty, but a not-ready verdict still says
                // why on stderr, in one line (journald, cron mail).
                logging::print_error(&report::verdict_line(command, &db_display, &outcome));
            }
            let code = outcome.exit_code;
            let text = if cli.quiet {
                String::new()
            } else {
                report::render(command, &db_display, elapsed_ms, outcome, cli.json)
            };
            report::print_report(command, &text, code)
        }
        Err(e) => {
            let code = exit_code(&e);
            let msg = one_line(&e);
            logging::print_error(&format!("corescope {command}: error: {msg}"));
            if cli.json && !cli.quiet && !stdout_is_db {
                let obj = serde_json::json!({
                    "command": command,
                    "db": db_display,
                    "ok": false,
                    "elapsed_ms": elapsed_ms,
                    "error": msg,
                    "exit_code": code,
                });
                // The error line is already on stderr; a failed stdout changes nothing.
                let _ = report::write_stdout(&format!("{obj}\n"));
            }
            code
        }
    };
    code
}

/// stderr is the database file: exit 2 without writing a word anywhere.
#[derive(Debug)]
struct SilentExit;

impl std::fmt::Display for SilentExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stderr is the database file")
    }
}

impl std::error::Error for SilentExit {}

/// `--metrics-file` of a command that writes metrics, checked against the
/// output-path rules before the command runs (a path that is the database
/// or one of its files is a usage error, exit 2, and nothing runs).
fn checked_metrics_path<'a>(
    cli: &'a Cli,
    db: &std::path::Path,
) -> anyhow::Result<Option<&'a std::path::Path>> {
    let Some(p) = cli.command.metrics_file() else {
        return Ok(None);
    };
    if p.as_os_str().is_empty() || !cli.command.writes_metrics() {
        // after_run explains why it is ignored.
        return Ok(Some(p));
    }
    let flag = match cli.sources.metrics_file {
        ArgFrom::Env => "CORESCOPE_METRICS_FILE",
        _ => "--metrics-file",
    };
    outfile::check_output(
        p,
        flag,
        outfile::Guard {
            db: Some(db),
            force: false,
        },
    )?;
    Ok(Some(p))
}

/// The error chain on one line (the outermost message first).
fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', " ")
}

/// Resolve config and database path (`--db`, else `CORESCOPE_DB`, else
/// `dbPath` of the config); also where the database path came from, for
/// messages about it.
fn build_ctx(cli: &Cli) -> anyhow::Result<(Ctx, String)> {
    for var in &cli.sources.empty_env {
        log::info!("{var} is set but empty: treated as unset");
    }
    let config = match cli.command.config() {
        Some(p) => {
            let from = match cli.sources.config {
                ArgFrom::Env => ConfigFrom::Env,
                _ => ConfigFrom::Flag,
            };
            Config::load_from(p, from)?
        }
        None => Config::default(),
    };
    // Once per run: the config is read once per process.
    for w in &config.warnings {
        log::warn!("{w}");
    }
    let (db_path, db_from): (PathBuf, String) = match (cli.command.db(), config.db_path_resolved()) {
        (Some(p), _) => (
            p.to_path_buf(),
            match cli.sources.db {
                ArgFrom::Env => "CORESCOPE_DB".to_string(),
                _ => "--db".to_string(),
            },
        ),
        (None, Some(p)) => {
            let file = config
                .source
                .as_ref()
                .map(|s| s.display().to_string())
                .unwrap_or_default();
            let raw = config.db_path.clone().unwrap_or_default();
            let from = if Path::new(&raw).is_absolute() {
                format!("dbPath in {file}")
            } else {
                format!("dbPath \"{raw}\" in {file}, relative to that file's directory")
            };
            (p, from)
        }
        _ if !cli.command.needs_db() => (PathBuf::new(), String::new()),
        _ => {
            return Err(Failure::Usage(
                "no database given: use --db PATH, set CORESCOPE_DB, or give a config file with dbPath (--config / CORESCOPE_CONFIG)"
                    .into(),
            )
            .into())
        }
    };
    log::debug!("database {} (from {db_from})", db_path.display());
    Ok((
        Ctx {
            db_path,
            json: cli.json,
            quiet: cli.quiet,
            busy_timeout_ms: cli.command.busy_timeout(),
            config,
            // ops: write commands take their run lock when they open the database.
            run_lock: runlock::Spec::for_command(
                cli.command.name(),
                cli.command.takes_run_lock(),
                cli.command.wait(),
            ),
        },
        db_from,
    ))
}

/// An error that names the database path says where that path came from
/// (a flag, an environment variable, or the config file and its key).
fn with_db_source(e: anyhow::Error, db: &Path, from: &str) -> anyhow::Error {
    if from.is_empty() || from == "--db" || db.as_os_str().is_empty() {
        return e;
    }
    let shown = db.display().to_string();
    if !format!("{e:#}").contains(&shown) {
        return e;
    }
    let code = exit_code(&e);
    let msg = format!("{} [database path from {from}]", one_line(&e));
    match code {
        error::EXIT_USAGE => Failure::Usage(msg).into(),
        error::EXIT_ERROR => Failure::Fatal(msg).into(),
        _ => e,
    }
}
