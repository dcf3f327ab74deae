//! One module per subcommand; `dispatch` maps the parsed command to its `run`.

pub mod backfill;
pub mod check;
pub mod migrate;

use crate::cli::Command;
use crate::context::Ctx;
use crate::report::Outcome;

pub fn dispatch(ctx: &Ctx, command: &Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Migrate(a) => migrate::run(ctx, a),
        Command::Check(a) => check::run(ctx, a),
        Command::Backfill(a) => backfill::run(ctx, a),
    }
}
