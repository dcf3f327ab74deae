//! corescope: maintenance toolkit for the SQLite database of CoreScope.
//! main parses the command line, resolves the database, dispatches, prints
//! the report and maps errors to the exit codes listed in the README.

mod catalog;
mod cli;
mod commands;
mod config;
mod context;
mod db;
mod derive;
mod edges;
mod error;
#[cfg(test)]
mod fuzz_tests;
mod graph;
mod keys;
mod logging;
mod metrics;
mod outfile;
mod packet;
mod report;
mod resolve;
mod retention;
mod runlock;
mod schema;
mod synth;
mod timeutil;

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use serde_json::Value;

use crate::cli::Cli;
use crate::config::Config;
use crate::context::Ctx;
use crate::error::{exit_code, Failure};

fn main() {
    let cli = Cli::parse();
    logging::init(cli.verbose, cli.quiet);
    let started = Instant::now();
    let command = cli.command.name();
    // The database path, once known: output files are checked against it.
    let mut db_path: Option<PathBuf> = None;
    // --metrics-file, once it has passed the output-path rules.
    let mut metrics_path: Option<&std::path::Path> = None;
    // stdout is the database itself (`>> x.db`): print nothing there.
    let mut stdout_is_db = false;
    let (db_display, result) = match commands::standalone(&cli.command) {
        Some(result) => (String::new(), result),
        None => match build_ctx(&cli).and_then(|ctx| {
            if outfile::fd_is_database_file(libc::STDERR_FILENO, &ctx.db_path).is_some() {
                // stderr is the database (`2>> x.db`): even the error line
                // would damage it, so exit without a word.
                std::process::exit(error::EXIT_USAGE);
            }
            if let Err(e) = outfile::check_stdout(&ctx.db_path) {
                stdout_is_db = true;
                return Err(e.into());
            }
            metrics_path = checked_metrics_path(&cli, &ctx.db_path)?;
            Ok(ctx)
        }) {
            Ok(ctx) => {
                let shown = ctx.db_path.display().to_string();
                db_path = Some(ctx.db_path.clone());
                log::info!(
                    "corescope {} {command} on {shown}",
                    env!("CARGO_PKG_VERSION")
                );
                (
                    shown,
                    commands::dispatch(&ctx, &cli.command)
                        .map_err(|e| db::classify_final(&ctx.db_path, e)),
                )
            }
            Err(e) => (
                cli.db
                    .as_ref()
                    .map(|p| p.display().to_string())
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
            let mut text = String::new();
            if cli.quiet && outcome.exit_code != 0 {
                // -q keeps stdout empty, but a not-ready verdict still says
                // why on stderr, in one line (journald, cron mail).
                logging::print_error(&report::verdict_line(command, &db_display, &outcome));
            }
            if !cli.quiet {
                if cli.json {
                    let mut obj = serde_json::Map::new();
                    obj.insert("command".into(), command.into());
                    obj.insert("db".into(), db_display.into());
                    obj.insert("ok".into(), (outcome.exit_code == 0).into());
                    obj.insert("elapsed_ms".into(), elapsed_ms.into());
                    for (k, v) in outcome.json {
                        obj.insert(k, v);
                    }
                    text = format!("{}\n", Value::Object(obj));
                } else if !outcome.human.is_empty() {
                    text = outcome.human;
                    if !text.ends_with('\n') {
                        text.push('\n');
                    }
                }
            }
            report::print_report(command, &text, outcome.exit_code)
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
    std::process::exit(code);
}

/// `--metrics-file` of a command that writes metrics, checked against the
/// output-path rules before the command runs (a path that is the database
/// or one of its files is a usage error, exit 2, and nothing runs).
fn checked_metrics_path<'a>(
    cli: &'a Cli,
    db: &std::path::Path,
) -> anyhow::Result<Option<&'a std::path::Path>> {
    let Some(p) = cli.metrics_file.as_deref() else {
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
    let config = match &cli.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    let db_path: PathBuf = match (&cli.db, &config.db_path) {
        (Some(p), _) => p.clone(),
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
        busy_timeout_ms: cli.busy_timeout,
        config,
        // ops: write commands take their run lock when they open the database.
        run_lock: runlock::Spec::for_command(&cli.command, cli.wait),
    })
}
