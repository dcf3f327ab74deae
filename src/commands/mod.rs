//! One module per subcommand; `dispatch` maps the parsed command to its `run`.

pub mod check;
pub mod demo;
pub mod migrate;
pub mod synth;

use crate::cli::Command;
use crate::context::Ctx;
use crate::report::Outcome;

pub fn dispatch(ctx: &Ctx, command: &Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Migrate(a) => migrate::run(ctx, a),
        Command::Check(a) => check::run(ctx, a),
        Command::Synth(a) => synth::run(ctx, a),
        Command::Demo(a) => demo::run(ctx, a),
    }
}
