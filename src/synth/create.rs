//! Writing a synthetic database at a path and reporting it (shared by the
//! `synth` and `demo` commands).

use serde_json::{json, Map, Value};

use super::{Config, Schema};
use crate::context::Ctx;
use crate::error::Failure;
use crate::report::{self, Outcome};
use crate::store::engine::progress_bar;
use crate::synth;
use crate::timeutil;

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

    let bar = ctx
        .progress_allowed()
        .then(|| progress_bar(cfg.observations, "synth", "observations"));
    let progress = |done: u64, _total: u64, phase: &str| {
        if let Some(b) = &bar {
            b.set_position(done);
            let label = format!("synth {phase}");
            if b.prefix() != label {
                b.set_prefix(label);
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

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/tmp/a.db"), "/tmp/a.db");
        assert_eq!(shell_quote("/tmp/my db's.db"), "'/tmp/my db'\\''s.db'");
    }
}
