//! Synthetic CoreScope databases for demos, tests and benchmarks: a
//! deterministic generator of a realistic mesh and its traffic (`gen`, pure),
//! the MeshCore byte building it uses (`encode`), the geometric topology
//! (`topo`), and the bulk SQLite writer (`writer`).

pub mod create;
pub mod encode;
pub mod gen;
pub mod report;
pub mod topo;
pub mod writer;

pub use writer::write_database;

/// Shape of the database to create.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Schema {
    /// Every table and column of newer CoreScope versions (catalog target `latest`), fully migrated.
    Latest,
    /// What the CoreScope ingestor of the seed commit creates (catalog target `seed`):
    /// not ready for the `latest` server until `corescope migrate`.
    Seed,
    /// The shape and quirks of the shared `legacy-2026-03.db` fixture.
    Legacy,
}

impl Schema {
    pub fn name(self) -> &'static str {
        match self {
            Schema::Latest => "latest",
            Schema::Seed => "seed",
            Schema::Legacy => "legacy",
        }
    }
}

/// Everything that determines the generated database.
#[derive(Clone, Debug)]
pub struct Config {
    pub seed: u64,
    pub nodes: usize,
    pub observers: usize,
    pub transmissions: u64,
    pub observations: u64,
    pub days: f64,
    /// Epoch seconds of the end of the time window (the newest packet).
    pub end: i64,
    pub schema: Schema,
    /// Fraction of ADVERT transmissions whose `from_pubkey` is left NULL.
    pub null_from_pubkey: f64,
    /// Fraction of observations whose `path_json` is left NULL.
    pub null_path_json: f64,
    /// Fraction of observations whose `resolved_path` is left NULL.
    pub null_resolved_path: f64,
    /// Fraction of observations that carry their own `raw_hex`.
    pub obs_raw_hex: f64,
    /// Add a few rows of every anomaly kind seen in real databases.
    pub anomalies: bool,
    /// Seconds between `observer_metrics` samples.
    pub metrics_interval: i64,
}

impl Config {
    pub fn start(&self) -> i64 {
        self.end - (self.days * 86_400.0).round() as i64
    }

    /// Problems with the sizes, as a usage message.
    pub fn validate(&self) -> Result<(), String> {
        let frac = |name: &str, v: f64| -> Result<(), String> {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(format!(
                    "{name} must be a fraction between 0 and 1, got {v}"
                ))
            }
        };
        frac("--null-from-pubkey", self.null_from_pubkey)?;
        frac("--null-path-json", self.null_path_json)?;
        frac("--null-resolved-path", self.null_resolved_path)?;
        frac("--obs-raw-hex", self.obs_raw_hex)?;
        if !(self.days > 0.0 && self.days.is_finite()) {
            return Err(format!("--days must be positive, got {}", self.days));
        }
        if self.transmissions > 0 && self.nodes == 0 {
            return Err("--nodes must be at least 1 when there are transmissions".into());
        }
        if self.observations > 0 && self.observers == 0 {
            return Err("--observers must be at least 1 when there are observations".into());
        }
        if self.observations > 0 && self.transmissions == 0 {
            return Err("observations need transmissions: --transmissions is 0".into());
        }
        if self.days > 3650.0 {
            return Err(format!("--days {} is more than ten years", self.days));
        }
        if (self.nodes as u128) * (self.observers.max(1) as u128) > 20_000_000 {
            return Err(format!(
                "--nodes {} × --observers {} is too large (the route tables need nodes × observers ≤ 20 000 000)",
                self.nodes, self.observers
            ));
        }
        if self.end < 86_400 * 365 {
            return Err("--end is before 1971".into());
        }
        Ok(())
    }
}
