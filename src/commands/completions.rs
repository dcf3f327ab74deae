//! `corescope completions SHELL`: a shell completion script on stdout.

use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs};
use crate::report::Outcome;

pub fn run(args: &CompletionsArgs) -> anyhow::Result<Outcome> {
    let mut cmd = Cli::command();
    let mut buf: Vec<u8> = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "corescope", &mut buf);
    let mut out = Outcome::new();
    out.human = String::from_utf8_lossy(&buf).into_owned();
    out.set("shell", args.shell.to_string());
    Ok(out)
}
