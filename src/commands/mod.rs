//! One module per subcommand; `dispatch` maps the parsed command to its `run`.

pub mod build_edges;
pub mod check;
pub mod graph;
pub mod migrate;

use crate::cli::Command;
use crate::context::Ctx;
use crate::report::Outcome;

pub fn dispatch(ctx: &Ctx, command: &Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Migrate(a) => migrate::run(ctx, a),
        Command::Check(a) => check::run(ctx, a),
        Command::BuildEdges(a) => build_edges::run(ctx, a),
        Command::Graph(a) => graph::run(ctx, &a.cmd),
    }
}
