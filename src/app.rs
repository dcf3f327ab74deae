//! The program behind `corescope`: resolve config and database, dispatch the
//! parsed command, print the report, write metrics and map errors to the exit
//! codes listed in the README. `main.rs` only parses and exits with the code.

use std::path::PathBuf;
use std::time::Instant;

use crate::cli::Cli;
use crate::config::Config;
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
        None => match build_ctx(cli).and_then(|ctx| {
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
            Ok(ctx)
        }) {
            Ok(ctx) => {
                let shown = report::display_path(&ctx.db_path);
                db_path = Some(ctx.db_path.clone());
                log::info!(
                    "corescope {} {command} on {shown}",
                    env!("CARGO_PKG_VERSION")
                );
                (
                    shown,
                    commands::dispatch(&ctx, &cli.command)
                        .map_err(|e| store::classify_final(&ctx.db_path, e)),
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
    outfile::check_output(
        p,
        "--metrics-file",
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
/// `dbPath` of the config).
fn build_ctx(cli: &Cli) -> anyhow::Result<Ctx> {
    let config = match cli.command.config() {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    let db_path: PathBuf = match (cli.command.db(), &config.db_path) {
        (Some(p), _) => p.to_path_buf(),
        (None, Some(p)) if !p.trim().is_empty() => PathBuf::from(p),
        _ if !cli.command.needs_db() => PathBuf::new(),
        _ => {
            return Err(Failure::Usage(
                "no database given: use --db PATH, set CORESCOPE_DB, or give a config file with dbPath (--config / CORESCOPE_CONFIG)"
                    .into(),
            )
            .into())
        }
    };
    Ok(Ctx {
        db_path,
        json: cli.json,
        quiet: cli.quiet,
        busy_timeout_ms: cli.command.busy_timeout(),
        config,
        // ops: write commands take their run lock when they open the database.
        run_lock: runlock::Spec::for_command(
            cli.command.name(),
            cli.command.is_write(),
            cli.command.wait(),
        ),
    })
}
