//! `corescope synth`: a new, realistic synthetic CoreScope database.
//!
//! Unlike the other write commands it creates the file (the one place a
//! missing path is expected) and refuses an existing one unless `--force`. The file
//! is built under a temporary name and renamed into place when complete.

use crate::cli::SynthArgs;
use crate::context::Ctx;
use crate::error::Failure;
use crate::report::Outcome;
use crate::synth::create::create;
use crate::synth::Config;
use crate::timeutil;

/// The generator configuration for these arguments (`now` = default end).
pub fn config(args: &SynthArgs, now: i64) -> anyhow::Result<Config> {
    let end = match &args.end {
        Some(s) => timeutil::parse_user_time(s).map_err(Failure::Usage)?,
        None => now - now.rem_euclid(60),
    };
    let observations = match args.observations {
        Some(n) => n,
        None => (args.transmissions as f64 * args.obs_per_tx).round() as u64,
    };
    let cfg = Config {
        seed: args.seed,
        nodes: args.nodes,
        observers: args.observers,
        transmissions: args.transmissions,
        observations,
        days: args.days,
        end,
        schema: args.schema,
        null_from_pubkey: args.null_from_pubkey,
        null_path_json: args.null_path_json,
        null_resolved_path: args.null_resolved_path,
        obs_raw_hex: args.obs_raw_hex,
        anomalies: args.anomalies,
        metrics_interval: args.metrics_interval,
    };
    cfg.validate().map_err(Failure::Usage)?;
    Ok(cfg)
}

pub fn run(ctx: &Ctx, args: &SynthArgs) -> anyhow::Result<Outcome> {
    // The database a maintenance command finds through CORESCOPE_DB or the
    // config is the production one: synth only writes where --db points.
    if !db_on_command_line(std::env::args_os().skip(1)) {
        return Err(Failure::Usage(
            "synth writes only to a path given with --db on the command line (not CORESCOPE_DB or the config's dbPath)".into(),
        )
        .into());
    }
    let cfg = config(args, timeutil::now_epoch())?;
    Outcome::from_report(&create(ctx, &cfg, args.force)?)
}

/// Whether `--db` was given on the command line (before a `--` separator).
fn db_on_command_line(args: impl Iterator<Item = std::ffi::OsString>) -> bool {
    for a in args {
        let a = a.to_string_lossy();
        if a == "--" {
            return false;
        }
        if a == "--db" || a.starts_with("--db=") {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> impl Iterator<Item = std::ffi::OsString> {
        v.iter()
            .map(std::ffi::OsString::from)
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn db_must_be_on_the_command_line() {
        assert!(db_on_command_line(os(&["--db", "x.db", "synth"])));
        assert!(db_on_command_line(os(&["synth", "--db=x.db"])));
        assert!(!db_on_command_line(os(&["synth", "--force"])));
        assert!(!db_on_command_line(os(&["synth", "--", "--db"])));
        assert!(!db_on_command_line(os(&["synth", "--dbx"])));
    }
}
