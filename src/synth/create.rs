//! Writing a synthetic database at a path (shared by the
//! `synth` and `demo` commands).

use super::report::SynthReport;
use super::Config;
use crate::context::Ctx;
use crate::error::Failure;
use crate::store::engine::progress_bar;
use crate::synth;

/// Writes the database for `cfg` at `ctx.db_path` and reports it.
pub fn create(ctx: &Ctx, cfg: &Config, force: bool) -> anyhow::Result<SynthReport> {
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

    Ok(SynthReport::new(path.display().to_string(), cfg, summary))
}
