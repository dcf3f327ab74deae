//! `corescope synth`: a new, realistic synthetic CoreScope database.
//!
//! Unlike the other write commands it creates the file (the one place a
//! missing path is expected) and refuses an existing one unless `--force`. The file
//! is built under a temporary name and renamed into place when complete.

use serde_json::{json, Map, Value};

use crate::cli::SynthArgs;
use crate::context::Ctx;
use crate::error::Failure;
use crate::report::{self, Outcome};
use crate::synth::{self, Config, Schema};
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
    create(ctx, &cfg, args.force)
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

/// Writes the database for `cfg` at `ctx.db_path` and reports it.
pub fn create(ctx: &Ctx, cfg: &Config, force: bool) -> anyhow::Result<Outcome> {
    let path = &ctx.db_path;
    if path.as_os_str().is_empty() {
        return Err(Failure::Usage("synth needs --db PATH".into()).into());
    }
    if path.is_dir() {
        return Err(Failure::Usage(format!(
            "{} is a directory; give the path of the new database file",
            path.display()
        ))
        .into());
    }
    if path.exists() && !force {
        return Err(Failure::Usage(format!(
            "{} already exists; synth only creates new files (use --force to replace it)",
            path.display()
        ))
        .into());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            return Err(Failure::Fatal(format!(
                "directory {} does not exist; create it first",
                dir.display()
            ))
            .into());
        }
    }

    let bar = ctx.progress_allowed().then(|| {
        let b = indicatif::ProgressBar::new(cfg.observations);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "synth {msg:8} {bar:40} {human_pos}/{human_len} observations  {per_sec}  eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let progress = |done: u64, _total: u64, phase: &str| {
        if let Some(b) = &bar {
            b.set_position(done);
            if b.message() != phase {
                b.set_message(phase.to_string());
            }
        }
    };
    let summary = synth::write_database(cfg, path, force, &progress)?;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }

    let mut out = Outcome::new();
    out.set("created", path.display().to_string())
        .set("schema", cfg.schema.name())
        .set("seed", cfg.seed)
        .set("start", timeutil::rfc3339(cfg.start()))
        .set("end", timeutil::rfc3339(cfg.end))
        .set(
            "rows",
            json!({
                "nodes": summary.nodes,
                "observers": summary.observers,
                "transmissions": summary.transmissions,
                "observations": summary.observations,
                "observer_metrics": summary.observer_metrics,
                "dropped_packets": summary.dropped_packets,
                "neighbor_edges": summary.neighbor_edges,
            }),
        )
        .set(
            "anomalies",
            Value::Object(
                summary
                    .anomalies
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::from(*v)))
                    .collect::<Map<String, Value>>(),
            ),
        )
        .set("indexes", summary.indexes)
        .set("journal_mode", summary.journal_mode.clone())
        .set("file_bytes", summary.file_bytes)
        .set("rows_seconds", (summary.seconds_rows * 10.0).round() / 10.0)
        .set(
            "index_seconds",
            (summary.seconds_indexes * 10.0).round() / 10.0,
        );

    let mut t = report::table(&["table", "rows"]);
    for (name, n) in [
        ("nodes", summary.nodes),
        ("observers", summary.observers),
        ("transmissions", summary.transmissions),
        ("observations", summary.observations),
        ("observer_metrics", summary.observer_metrics),
        ("dropped_packets", summary.dropped_packets),
        ("neighbor_edges", summary.neighbor_edges),
    ] {
        t.add_row(vec![name.to_string(), n.to_string()]);
    }
    let mut human = format!(
        "created {} ({} schema, seed {}, {} .. {}, {:.1} MB, journal_mode={})\n{t}\n",
        path.display(),
        cfg.schema.name(),
        cfg.seed,
        timeutil::rfc3339(cfg.start()),
        timeutil::rfc3339(cfg.end),
        summary.file_bytes as f64 / 1e6,
        summary.journal_mode,
    );
    if !summary.anomalies.is_empty() {
        let list: Vec<String> = summary
            .anomalies
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        human.push_str(&format!("anomalies: {}\n", list.join(", ")));
    }
    human.push_str(&format!(
        "rows in {:.1} s, {} indexes in {:.1} s\n",
        summary.seconds_rows, summary.indexes, summary.seconds_indexes
    ));
    if cfg.schema != Schema::Latest {
        human.push_str(&format!(
            "next: corescope --db {} migrate\n",
            shell_quote(&path.display().to_string())
        ));
    }
    out.human = human;
    Ok(out)
}

/// Quote a path for a shell command line when needed.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:@%,".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
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

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/tmp/a.db"), "/tmp/a.db");
        assert_eq!(shell_quote("/tmp/my db's.db"), "'/tmp/my db'\\''s.db'");
    }
}
