//! `corescope completions SHELL`: a shell completion script on stdout.

use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs};
use crate::report::{Outcome, Report};

pub fn run(args: &CompletionsArgs) -> anyhow::Result<Outcome> {
    let mut cmd = Cli::command();
    let mut buf: Vec<u8> = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "corescope", &mut buf);
    Outcome::from_report(&CompletionsReport {
        shell: args.shell.to_string(),
        script: String::from_utf8_lossy(&buf).into_owned(),
    })
}

/// The shell the script is for; the script itself is the human output.
#[derive(serde::Serialize)]
struct CompletionsReport {
    shell: String,
    #[serde(skip)]
    script: String,
}

impl Report for CompletionsReport {
    fn human(&self) -> String {
        self.script.clone()
    }
}
