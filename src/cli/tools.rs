//! The arguments of the commands that do not maintain a database: `synth`,
//! `demo`, `completions` and the hidden `gen-man`.

use std::path::PathBuf;

use clap::Args;

use super::f64_in;

/// `--obs-per-tx`: more than 0, at most 1000 receptions per packet.
fn obs_per_tx(s: &str) -> Result<f64, String> {
    let v = f64_in(s, 0.0, 1000.0)?;
    if v > 0.0 {
        Ok(v)
    } else {
        Err(format!(
            "{s} must be more than 0 (allowed: above 0 to 1000)"
        ))
    }
}

/// Parse a fraction 0..=1.
fn fraction(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not a fraction between 0 and 1"))
    }
}

fn positive_f64(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number"))?;
    if v > 0.0 && v.is_finite() {
        Ok(v)
    } else {
        Err(format!("{v} must be positive"))
    }
}

#[derive(Debug, Args, Clone)]
pub struct SynthArgs {
    /// The new database file to write
    #[arg(long, env = "CORESCOPE_DB", value_name = "PATH")]
    pub db: Option<PathBuf>,

    /// Replace the file if it exists (otherwise synth refuses to touch it)
    #[arg(long)]
    pub force: bool,

    /// Random seed: the same arguments (with a fixed --end) give the same database
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Mesh nodes (random 64-hex keys; 1-byte hop prefixes collide above ~256)
    #[arg(long, default_value_t = 1000)]
    pub nodes: usize,

    /// Observers (MQTT gateways, upper-case ids; most are also nodes)
    #[arg(long, default_value_t = 40)]
    pub observers: usize,

    /// Unique packets (transmissions rows)
    #[arg(long, default_value_t = 50_000)]
    pub transmissions: u64,

    /// Total receptions (observations rows); default: --obs-per-tx × --transmissions
    #[arg(long, conflicts_with = "obs_per_tx")]
    pub observations: Option<u64>,

    /// Average receptions per packet
    #[arg(long, value_name = "F", default_value_t = 4.0, value_parser = obs_per_tx)]
    pub obs_per_tx: f64,

    /// Length of the time window in days
    #[arg(long, default_value_t = 30.0, value_parser = positive_f64)]
    pub days: f64,

    /// End of the time window (RFC 3339); default: now, to the minute. Fix it for reproducible output
    #[arg(long, value_name = "TIME")]
    pub end: Option<String>,

    /// Schema: latest (fully migrated), seed (CoreScope seed ingestor; needs migrate), legacy (like legacy-2026-03.db)
    #[arg(long, value_enum, default_value_t = crate::synth::Schema::Latest)]
    pub schema: crate::synth::Schema,

    /// Leave from_pubkey NULL on this fraction of ADVERTs (no value: all) — work for `backfill from-pubkey`
    #[arg(long, value_name = "FRACTION", num_args = 0..=1, default_missing_value = "1", default_value_t = 0.0, value_parser = fraction)]
    pub null_from_pubkey: f64,

    /// Leave path_json NULL on this fraction of observations — work for `backfill path-json`
    #[arg(long, value_name = "FRACTION", default_value_t = 0.0, value_parser = fraction)]
    pub null_path_json: f64,

    /// Leave resolved_path NULL on this fraction of observations (no value: all) — work for `backfill resolved-path`
    #[arg(long, value_name = "FRACTION", num_args = 0..=1, default_missing_value = "1", default_value_t = 0.0, value_parser = fraction)]
    pub null_resolved_path: f64,

    /// Fraction of observations that carry their own raw_hex
    #[arg(long, value_name = "FRACTION", default_value_t = 1.0, value_parser = fraction)]
    pub obs_raw_hex: f64,

    /// Add a few rows of every anomaly kind seen in real databases; implies no dedup index, journal_mode=delete, auto_vacuum=NONE
    #[arg(long)]
    pub anomalies: bool,

    /// Seconds between observer_metrics samples (60 to 86400)
    #[arg(long, value_name = "SECS", default_value_t = 300, value_parser = clap::value_parser!(i64).range(60..=86_400))]
    pub metrics_interval: i64,
}

#[derive(Debug, Args, Clone)]
pub struct DemoArgs {
    /// Directory for the demo database (default: a new directory under the system temp dir)
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// Keep the demo database (and a directory the demo created) at the end, to explore it; by default they are removed
    #[arg(long)]
    pub keep: bool,

    /// Observations in the demo database (for tests)
    #[arg(long, hide = true, default_value_t = 400_000)]
    pub size: u64,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// Shell to generate the completion script for
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct GenManArgs {
    /// Directory to write the pages into (created if missing)
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}
