//! One module per subcommand; `dispatch` maps the parsed command to its `run`.

pub mod backfill;
pub mod backup;
pub mod build_edges;
pub mod check;
pub mod completions;
pub mod demo;
pub mod graph;
pub mod man;
pub mod migrate;
pub mod prune;
pub mod schema;
pub mod synth;
pub mod vacuum;

use crate::cli::Command;
use crate::context::Ctx;
use crate::report::Outcome;

pub fn dispatch(ctx: &Ctx, command: &Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Migrate(a) => migrate::run(ctx, a),
        Command::Check(a) => check::run(ctx, a),
        Command::BuildEdges(a) => build_edges::run(ctx, a),
        Command::Graph(a) => graph::run(ctx, &a.cmd),
        Command::Backfill(a) => backfill::run(ctx, a),
        Command::Backup(a) => backup::run(ctx, a),
        Command::Synth(a) => synth::run(ctx, a),
        Command::Demo(a) => demo::run(ctx, a),
        Command::Prune(a) => prune::run(ctx, a),
        Command::Vacuum(a) => vacuum::run(ctx, a),
        Command::Completions(_) | Command::GenMan(_) | Command::Schema(_) => {
            match standalone(command, ctx.busy_timeout_ms) {
                Some(r) => r,
                None => Err(anyhow::anyhow!(
                    "internal: {} has no runner",
                    command.name()
                )),
            }
        }
    }
}

/// Commands that need no database: run before the database is resolved.
pub fn standalone(command: &Command, busy_timeout_ms: u64) -> Option<anyhow::Result<Outcome>> {
    match command {
        Command::Completions(a) => Some(completions::run(a)),
        Command::GenMan(a) => Some(man::run(a)),
        Command::Schema(a) => Some(schema::run(a, busy_timeout_ms)),
        _ => None,
    }
}
