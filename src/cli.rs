//! The command-line definition (clap derive). man pages and completions are
//! generated from this, so every flag's help text is user documentation.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::catalog::Target;

mod common;
mod env;
pub mod examples;
pub mod json_doc;
mod tools;
pub use common::{move_leading_options, DbArgs, MetricsArgs, RunLockArgs, MAX_BUSY_TIMEOUT_MS};
pub use env::{parse, From as ArgFrom, Sources};
pub use tools::{CompletionsArgs, DemoArgs, GenManArgs, SynthArgs};

const AFTER_HELP: &str = "\
Each command takes its own options (corescope COMMAND --help). Commands that open a database take it as --db PATH, \
else CORESCOPE_DB, else dbPath from the config file (--config / CORESCOPE_CONFIG).

Exit codes: 0 success (also a run stopped by --max-seconds); 1 error (cannot open, not a database, corrupt, I/O, SQL);
2 usage error; 3 schema not ready or migrations pending (write commands refuse to run); 75 busy, try again next run.";

/// `corescope --version`: the version and the CoreScope schema targets
/// this build knows (the catalog records no upstream commit for them).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\nschema targets: seed (what the CoreScope server of the seed version asserts at start), \
     latest (everything newer CoreScope versions use; default); \
     the catalog records no upstream commit for either"
);

#[derive(Debug, Parser)]
#[command(
    name = "corescope",
    version = VERSION,
    about = "Maintenance toolkit for the SQLite database of CoreScope (MeshCore mesh analyzer)",
    long_about = "Maintenance toolkit for the SQLite database of CoreScope (MeshCore mesh analyzer): schema migrations, \
                  read-only readiness checks, and the maintenance jobs that timers run beside a live ingestor.",
    after_help = AFTER_HELP,
    after_long_help = examples::help_with(AFTER_HELP, ""),
    propagate_version = true
)]
pub struct Cli {
    /// Print exactly one JSON object on stdout instead of the human report
    #[arg(long, global = true, help_heading = "Output")]
    pub json: bool,

    /// More log output on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count, help_heading = "Output")]
    pub verbose: u8,

    /// No report and no progress; errors, and a not-ready verdict, as one line on stderr; the exit code carries the result
    #[arg(
        short,
        long,
        global = true,
        conflicts_with = "verbose",
        help_heading = "Output"
    )]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,

    /// Where the path options came from (set by [`parse`]).
    #[arg(skip)]
    pub sources: Sources,
}

impl Cli {
    /// Parse the process's arguments (see [`parse`]).
    pub fn parse_args() -> Cli {
        parse()
    }
}

#[derive(Debug, Subcommand)]
// Parsed once per process; boxing the larger argument structs buys nothing.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Bring the schema to the target: tables, columns, indexes, view and named one-shot migrations
    #[command(after_long_help = examples::help("migrate"))]
    Migrate(MigrateArgs),
    /// Read-only: schema readiness, pending migrations and backfills, data anomalies, vacuum/WAL health
    #[command(after_long_help = examples::help("check"))]
    Check(CheckArgs),
    /// Resumable data backfills: from-pubkey, path-json, resolved-path, observer-blacklist
    #[command(after_long_help = examples::help_with(BACKFILL_NOTES, "backfill"))]
    Backfill(BackfillArgs),
    /// Incremental, exactly-once neighbor-edge build from observations not yet counted
    #[command(after_long_help = examples::help("build-edges"))]
    #[command(name = "build-edges")]
    BuildEdges(BuildEdgesArgs),
    /// Retention: old packets, stale nodes and observers, metrics, dropped packets, old neighbor edges; then incremental vacuum and a WAL checkpoint
    #[command(after_long_help = examples::help("prune"))]
    Prune(PruneArgs),
    /// Incremental vacuum and WAL checkpoint; --full converts auto_vacuum to INCREMENTAL with a full VACUUM after checking free disk space
    #[command(after_long_help = examples::help("vacuum"))]
    Vacuum(VacuumArgs),
    /// A consistent copy of the database while the ingestor writes, checked with quick_check
    #[command(after_long_help = examples::help("backup"))]
    Backup(BackupArgs),
    /// Read-only: export the neighbor graph (dump) or summarise it (stats)
    #[command(after_long_help = examples::help("graph"))]
    Graph(GraphArgs),
    /// Create a new, realistic synthetic CoreScope database (demos, tests, benchmarks)
    #[command(after_long_help = examples::help("synth"))]
    Synth(SynthArgs),
    /// A synthetic database run through the whole maintenance cycle, for a first look
    #[command(after_long_help = examples::help("demo"))]
    Demo(DemoArgs),
    /// Read-only: print the catalog of a target, or a database's actual schema (--from-db), as normalised SQL or JSON
    #[command(after_long_help = examples::help("schema"))]
    Schema(SchemaArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout
    #[command(after_long_help = examples::help("completions"))]
    Completions(CompletionsArgs),
    /// Generate the man pages (corescope.1 and one per subcommand) into DIR
    #[command(hide = true)]
    GenMan(GenManArgs),
}

impl Command {
    /// The command name used in reports (`"command"` key).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Migrate(_) => "migrate",
            Command::Check(_) => "check",
            Command::BuildEdges(_) => "build-edges",
            Command::Graph(g) => match g.cmd {
                GraphCmd::Dump(_) => "graph dump",
                GraphCmd::Stats(_) => "graph stats",
            },
            Command::Backfill(_) => "backfill",
            Command::Backup(_) => "backup",
            Command::Synth(_) => "synth",
            Command::Demo(_) => "demo",
            Command::Schema(_) => "schema",
            Command::Completions(_) => "completions",
            Command::GenMan(_) => "gen-man",
            Command::Prune(_) => "prune",
            Command::Vacuum(_) => "vacuum",
        }
    }

    /// Commands that work without a database path (they create their own).
    pub fn needs_db(&self) -> bool {
        !matches!(self, Command::Demo(_))
    }

    /// `--db`, `--config`, `--busy-timeout` of a command that opens a
    /// CoreScope database (`None` for the others).
    pub fn database(&self) -> Option<&DbArgs> {
        match self {
            Command::Migrate(a) => Some(&a.database),
            Command::Check(a) => Some(&a.database),
            Command::Backfill(a) => Some(&a.database),
            Command::BuildEdges(a) => Some(&a.database),
            Command::Prune(a) => Some(&a.database),
            Command::Vacuum(a) => Some(&a.database),
            Command::Backup(a) => Some(&a.database),
            Command::Graph(g) => match &g.cmd {
                GraphCmd::Dump(a) => Some(&a.filter.database),
                GraphCmd::Stats(a) => Some(&a.filter.database),
            },
            Command::Synth(_)
            | Command::Demo(_)
            | Command::Schema(_)
            | Command::Completions(_)
            | Command::GenMan(_) => None,
        }
    }

    /// The database path given on the command line or by `CORESCOPE_DB`
    /// (`synth` takes only `--db`).
    pub fn db(&self) -> Option<&std::path::Path> {
        match self {
            Command::Synth(a) => a.db.as_deref(),
            _ => self.database().and_then(|d| d.db.as_deref()),
        }
    }

    /// `--config` / `CORESCOPE_CONFIG`.
    pub fn config(&self) -> Option<&std::path::Path> {
        self.database().and_then(|d| d.config.as_deref())
    }

    /// `--busy-timeout` (its default where the command has none).
    pub fn busy_timeout(&self) -> u64 {
        match self {
            Command::Schema(a) => a.busy_timeout,
            _ => self.database().map_or(5000, |d| d.busy_timeout),
        }
    }

    /// `--wait` of a command that takes a run lock.
    pub fn wait(&self) -> Option<Option<u64>> {
        match self {
            Command::Migrate(a) => a.lock.wait,
            Command::Backfill(a) => a.lock.wait,
            Command::BuildEdges(a) => a.lock.wait,
            Command::Prune(a) => a.lock.wait,
            Command::Vacuum(a) => a.lock.wait,
            Command::Backup(a) => a.lock.wait,
            _ => None,
        }
    }

    /// `--metrics-file` / `CORESCOPE_METRICS_FILE` of a command that writes metrics.
    pub fn metrics_file(&self) -> Option<&std::path::Path> {
        let m = match self {
            Command::Migrate(a) => &a.metrics,
            Command::Check(a) => &a.metrics,
            Command::Backfill(a) => &a.metrics,
            Command::BuildEdges(a) => &a.metrics,
            Command::Prune(a) => &a.metrics,
            Command::Vacuum(a) => &a.metrics,
            _ => return None,
        };
        m.metrics_file.as_deref()
    }

    /// Write commands take the per-command run lock (`runlock`); see [`WRITE_COMMANDS`].
    pub fn is_write(&self) -> bool {
        WRITE_COMMANDS.contains(&self.name())
    }

    /// Commands that take a run lock: the write commands and `backup`
    /// (which only reads the database).
    pub fn takes_run_lock(&self) -> bool {
        self.is_write() || matches!(self, Command::Backup(_))
    }

    /// Commands that honour `--metrics-file`; see [`METRICS_COMMANDS`].
    pub fn writes_metrics(&self) -> bool {
        // `check --diff` reports no readiness, warnings or job state: writing
        // its (empty) state would replace what the timer's `check` wrote.
        if matches!(self, Command::Check(a) if a.diff) {
            return false;
        }
        self.is_write() || METRICS_COMMANDS.contains(&self.name())
    }
}

// ---- operations under timers: command kinds. A new write command adds its name here
// (one line) and gets the run lock, --wait, --metrics-file and the FILES
// section of its man page; nothing else is needed.
/// Commands that write the database: run lock + metrics.
pub const WRITE_COMMANDS: &[&str] = &["migrate", "backfill", "prune", "vacuum", "build-edges"];
/// Read-only commands that also honour `--metrics-file`.
pub const METRICS_COMMANDS: &[&str] = &["check"];
// ---- end ops ----

/// The smallest accepted `--max-lock-ms`. One write transaction has a
/// fixed cost (taking the lock, the watermark or cursor bookkeeping, the
/// commit: 0.2-2 ms, and the first batch to a cold page cache up to about
/// 10 ms, measured on a loaded 2-core machine; in rollback-journal mode the
/// commit's fsyncs add more on real disks). Below 20 ms that cost and the
/// scheduler's jitter are as large as the budget itself: no batch size can
/// honour it, and batches of a row or two only multiply the transactions.
pub const MIN_MAX_LOCK_MS: u64 = 20;

/// `--max-lock-ms`: a whole number of milliseconds, at least [`MIN_MAX_LOCK_MS`].
fn parse_max_lock_ms(s: &str) -> Result<u64, String> {
    let v: u64 = s.trim().parse().map_err(|_| {
        format!("expected a whole number of milliseconds, {MIN_MAX_LOCK_MS} or more")
    })?;
    if v < MIN_MAX_LOCK_MS {
        return Err(format!(
            "{v} ms is below the minimum of {MIN_MAX_LOCK_MS} ms: one write transaction has a fixed cost of a few ms (lock, bookkeeping, commit), so no batch can stay under a smaller budget; use {MIN_MAX_LOCK_MS} or more (default 200)"
        ));
    }
    Ok(v)
}

/// Options shared by the long-running write commands.
#[derive(Debug, Args, Clone)]
pub struct WriteOpts {
    /// Stop cleanly at a batch boundary after S seconds (0 to 31536000, fractions allowed); the next run resumes
    #[arg(long, value_name = "S", value_parser = max_seconds)]
    pub max_seconds: Option<f64>,

    /// No single write transaction may hold SQLite's write lock longer than this (at least 20)
    #[arg(long, value_name = "MS", default_value_t = 200, value_parser = parse_max_lock_ms)]
    pub max_lock_ms: u64,
}

/// `schema --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SchemaFormat {
    Sql,
    Json,
}

#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// Schema target whose catalog is printed (what `migrate --create` builds)
    #[arg(long, value_enum, default_value_t = Target::Latest, conflicts_with = "from_db")]
    pub target: Target,

    /// Print this database's actual schema instead, in the same normalised form (opened read-only)
    #[arg(long, value_name = "PATH")]
    pub from_db: Option<PathBuf>,

    /// Output: one normalised statement a line (sql) or a JSON document (json)
    #[arg(long, value_enum, default_value_t = SchemaFormat::Sql)]
    pub format: SchemaFormat,

    /// With --from-db: how long to wait for SQLite's lock before giving up with exit 75 (0 to 2147483647)
    #[arg(long, value_name = "MS", default_value_t = 5000, requires = "from_db", value_parser = clap::value_parser!(u64).range(0..=MAX_BUSY_TIMEOUT_MS))]
    pub busy_timeout: u64,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Schema target
    #[arg(long, value_enum, default_value_t = Target::Latest)]
    pub target: Target,

    /// Print the plan (steps, rows each data step would touch) and change nothing
    #[arg(long)]
    pub dry_run: bool,

    /// Allow creating a new database file (auto_vacuum=INCREMENTAL, WAL, full schema)
    #[arg(long)]
    pub create: bool,

    /// No single write transaction holds the write lock longer than this, index builds on large tables included (at least 20)
    #[arg(long, value_name = "MS", default_value_t = 200, value_parser = parse_max_lock_ms)]
    pub max_lock_ms: u64,

    #[command(flatten)]
    pub database: DbArgs,

    #[command(flatten)]
    pub lock: RunLockArgs,

    #[command(flatten)]
    pub metrics: MetricsArgs,

    /// First copy the database to PATH (as `corescope backup PATH`; a new file), then migrate
    #[arg(long, value_name = "PATH", conflicts_with = "dry_run")]
    pub backup: Option<PathBuf>,
    /// The ingestor is stopped: build each missing index with one CREATE INDEX (faster; holds the write lock for the whole build)
    #[arg(long)]
    pub offline: bool,

    /// Stop cleanly at a batch boundary after S seconds (0 to 31536000, fractions allowed); the next run resumes
    #[arg(long, value_name = "S", value_parser = max_seconds)]
    pub max_seconds: Option<f64>,

    /// Build indexes online on tables with at least N rows (default: 500 per ms of --max-lock-ms) (testing, tuning)
    #[arg(long, value_name = "N", hide = true)]
    pub online_min_rows: Option<u64>,
}

#[derive(Debug, Args)]
// Independent command-line flags, not a state machine.
#[allow(clippy::struct_excessive_bools)]
pub struct CheckArgs {
    /// Schema target
    #[arg(long, value_enum, default_value_t = Target::Latest)]
    pub target: Target,

    /// Exit 3 on any warning, not only when the schema is not ready
    #[arg(long)]
    pub strict: bool,

    /// Also run PRAGMA quick_check and foreign_key_check (reads the whole file)
    #[arg(long)]
    pub integrity: bool,

    /// Also run the anomaly scans that read whole tables (time grows with the data)
    #[arg(long)]
    pub deep: bool,

    /// Accept warning CODE under --strict (repeatable; adds to corescope.checkAllow)
    #[arg(long, value_name = "CODE")]
    pub allow: Vec<String>,

    /// Warn (edges_lag) when more observations than this wait for build-edges
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub max_edges_lag: i64,

    /// Only compare the schema with the target's catalog, one entry per difference (breaks, drift, extra); exit 3 on any breaks
    #[arg(long, conflicts_with_all = ["deep", "integrity", "strict"])]
    pub diff: bool,

    #[command(flatten)]
    pub database: DbArgs,

    #[command(flatten)]
    pub metrics: MetricsArgs,
}

/// A backfill task of `corescope backfill`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum BackfillTask {
    /// transmissions.from_pubkey of ADVERTs, from decoded_json.pubKey or raw_hex
    FromPubkey,
    /// observations.path_json from the observation's own raw_hex (TRACE excluded)
    PathJson,
    /// observations.resolved_path from path_json hops, node prefixes and neighbor edges
    ResolvedPath,
    /// Soft-delete (inactive = 1) observers listed by --observer / observerBlacklist
    ObserverBlacklist,
}

/// What `backfill --help` says besides its options and examples.
const BACKFILL_NOTES: &str = "Without TASK all four run, in the order observer-blacklist, from-pubkey, path-json, \
resolved-path. Each row task keeps a cursor (last row id visited) in corescope's state table, so every run \
ends and the next one resumes; rows that cannot be filled are not visited again (use --reset to retry).";

#[derive(Debug, Args)]
#[command(after_help = BACKFILL_NOTES)]
pub struct BackfillArgs {
    /// Tasks to run (default: all)
    #[arg(value_enum, value_name = "TASK")]
    pub tasks: Vec<BackfillTask>,

    /// Read and derive everything, write nothing; report how many rows each task would update
    #[arg(long)]
    pub dry_run: bool,

    /// Restart TASK's cursor from the beginning (repeatable), e.g. to retry unresolved paths after build-edges
    #[arg(long, value_enum, value_name = "TASK")]
    pub reset: Vec<BackfillTask>,

    /// Observer id to soft-delete (repeatable; added to observerBlacklist of the config; case-insensitive)
    #[arg(long = "observer", value_name = "ID")]
    pub observers: Vec<String>,

    /// Fixed number of candidate rows per batch instead of the adaptive size (testing, tuning)
    #[arg(long, value_name = "N", hide = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: Option<u64>,

    /// Stop each row task after N batches, reported as incomplete like a --max-seconds stop (testing)
    #[arg(long, value_name = "N", hide = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_batches: Option<u64>,

    #[command(flatten)]
    pub write: WriteOpts,

    #[command(flatten)]
    pub database: DbArgs,

    #[command(flatten)]
    pub lock: RunLockArgs,

    #[command(flatten)]
    pub metrics: MetricsArgs,
}

/// The longest `--max-seconds`: one year.
pub const MAX_SECONDS: f64 = 31_536_000.0;

/// A finite f64 in `lo..=hi`; the error names the allowed range.
fn f64_in(s: &str, lo: f64, hi: f64) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number (allowed: {lo} to {hi})"))?;
    if v.is_finite() && (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{s} is out of range (allowed: {lo} to {hi})"))
    }
}

/// `--max-seconds`: 0 to one year.
fn max_seconds(s: &str) -> Result<f64, String> {
    f64_in(s, 0.0, MAX_SECONDS)
}

/// What `prune` can prune (`--only` / `--skip`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum PruneKind {
    /// transmissions older than packetDays (by first_seen) with all their observations
    Packets,
    /// nodes not seen for nodeDays, moved to inactive_nodes
    Nodes,
    /// observers not seen for observerDays, soft-deleted (inactive = 1) with their metrics removed
    Observers,
    /// observer_metrics older than metricsDays
    Metrics,
    /// dropped_packets older than metricsDays (or --dropped-days)
    Dropped,
    /// neighbor_edges not seen for neighborEdgesMaxAgeDays
    Edges,
    /// client_receptions and client_observers older than clientRxDays
    Clients,
}

impl PruneKind {
    pub fn name(self) -> &'static str {
        match self {
            PruneKind::Packets => "packets",
            PruneKind::Nodes => "nodes",
            PruneKind::Observers => "observers",
            PruneKind::Metrics => "metrics",
            PruneKind::Dropped => "dropped",
            PruneKind::Edges => "edges",
            PruneKind::Clients => "clients",
        }
    }
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Report exactly what a real run with the same --now would delete; change nothing
    #[arg(long)]
    pub dry_run: bool,

    /// Fix "now" so a run can be replayed: RFC 3339 (2026-05-17T18:12:01Z), 'YYYY-MM-DD HH:MM:SS' (UTC) or epoch seconds; from 2020-01-01 to a day ahead of the clock; default: the clock
    #[arg(long, value_name = "TIME")]
    pub now: Option<String>,

    /// Accept a --now before 2020-01-01 or more than a day ahead of the system clock
    #[arg(long, requires = "now")]
    pub allow_any_now: bool,

    /// Prune only these kinds (comma-separated or repeated)
    #[arg(long, value_enum, num_args = 1.., value_delimiter = ',', value_name = "KIND")]
    pub only: Vec<PruneKind>,

    /// Do not prune these kinds (comma-separated or repeated)
    #[arg(long, value_enum, num_args = 1.., value_delimiter = ',', value_name = "KIND")]
    pub skip: Vec<PruneKind>,

    /// Checkpoint the WAL with TRUNCATE instead of PASSIVE; waits at most half of --max-lock-ms for readers, then reports that it did not truncate and why (a reader is active)
    #[arg(long)]
    pub truncate_wal: bool,

    /// Delete transmissions (and their observations) first seen more than N days ago; 0 disables [config retention.packetDays, default disabled]
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub packet_days: Option<i64>,

    /// Move nodes not seen for N days to inactive_nodes [config retention.nodeDays, default 7]
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub node_days: Option<i64>,

    /// Soft-delete observers not seen for N days; -1 keeps them forever [config retention.observerDays, default 14]
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub observer_days: Option<i64>,

    /// Delete observer_metrics older than N days [config retention.metricsDays, default 30]
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub metrics_days: Option<i64>,

    /// Delete dropped_packets older than N days [default: the metrics retention]
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub dropped_days: Option<i64>,

    /// Delete neighbor_edges not seen for N days [config neighborEdgesMaxAgeDays, default 5]
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub edge_days: Option<i64>,

    /// Delete client_receptions/client_observers older than N days; 0 disables [config retention.clientRxDays, default disabled]
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub client_days: Option<i64>,

    /// Pages for the incremental vacuum after pruning; 0 skips it [config db.incrementalVacuumPages, default 1024]
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub vacuum_pages: Option<i64>,

    #[command(flatten)]
    pub write: WriteOpts,

    #[command(flatten)]
    pub database: DbArgs,

    #[command(flatten)]
    pub lock: RunLockArgs,

    #[command(flatten)]
    pub metrics: MetricsArgs,
}

#[derive(Debug, Args)]
#[command(
    long_about = "Copy the database to PATH while the ingestor keeps writing, with SQLite's online backup API. \
A WAL database (CoreScope's mode) is copied from one read snapshot: the copy is the database as of one instant, and the \
writer is never blocked (checkpoints wait until the copy is done). A rollback-journal database is copied in steps that \
hold its lock at most --max-lock-ms each; a commit by another connection restarts the copy (exit 75 after 20 restarts). \
The copy goes to a temporary file beside PATH, is checked with PRAGMA quick_check and renamed into place. Refused \
(exit 2) when PATH is the database or one of its -wal/-shm/-journal files, a symlink, a directory, or an existing \
file without --force; refused (exit 1) when its filesystem has less room than the database needs. \
Takes the run lock <db>.corescope-backup.lock: a second backup of the same database exits 75 (--wait waits)."
)]
pub struct BackupArgs {
    /// File to write the copy to (new; an existing file only with --force)
    #[arg(value_name = "PATH")]
    pub path: PathBuf,

    /// Replace an existing file at PATH (never the database or its -wal/-shm/-journal)
    #[arg(long)]
    pub force: bool,

    /// Rollback-journal databases: no step of the copy holds the database's lock longer than this (at least 20)
    #[arg(long, value_name = "MS", default_value_t = 200, value_parser = parse_max_lock_ms)]
    pub max_lock_ms: u64,

    #[command(flatten)]
    pub database: DbArgs,

    #[command(flatten)]
    pub lock: RunLockArgs,
}

#[derive(Debug, Args)]
pub struct VacuumArgs {
    /// Convert auto_vacuum to INCREMENTAL with a full VACUUM (needs about 2x the database size free; blocks the writer while it runs)
    #[arg(long)]
    pub full: bool,

    /// Pages for the incremental vacuum [config db.incrementalVacuumPages, default 1024]
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub pages: Option<i64>,

    /// Checkpoint the WAL with TRUNCATE instead of PASSIVE; waits at most half of --max-lock-ms for readers, then reports that it did not truncate and why (a reader is active)
    #[arg(long)]
    pub truncate_wal: bool,

    #[command(flatten)]
    pub database: DbArgs,

    #[command(flatten)]
    pub lock: RunLockArgs,

    #[command(flatten)]
    pub metrics: MetricsArgs,

    /// --full only: first copy the database to PATH (as `corescope backup PATH`; a new file)
    #[arg(long, value_name = "PATH", requires = "full")]
    pub backup: Option<PathBuf>,

    /// Incremental vacuum: stop at a batch boundary after S seconds (the next run frees the rest). Refused with --full: one VACUUM cannot be split or stopped
    #[arg(long, value_name = "S", value_parser = max_seconds, conflicts_with = "full")]
    pub max_seconds: Option<f64>,

    /// No batch of the incremental vacuum, and no wait of the checkpoint, holds the write lock longer than this (at least 20). Refused with --full: VACUUM holds the lock for its whole run
    #[arg(long, value_name = "MS", value_parser = parse_max_lock_ms, conflicts_with = "full")]
    pub max_lock_ms: Option<u64>,
}

#[derive(Debug, Args)]
#[command(
    long_about = "Count neighbor-edge candidates of every observation not yet counted into neighbor_edges. \
                  Progress is a watermark on observations.id kept in _corescope_state and committed in the same \
                  transaction as the upserts, so interrupted, repeated or overlapping runs count every observation exactly once."
)]
pub struct BuildEdgesArgs {
    /// Recompute the table from all retained observations into a staging table, then swap it in atomically
    #[arg(long)]
    pub rebuild: bool,

    /// Fixed number of observations per batch instead of the adaptive size (testing, tuning)
    #[arg(long, value_name = "N", hide = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: Option<u64>,

    #[command(flatten)]
    pub write: WriteOpts,

    #[command(flatten)]
    pub database: DbArgs,

    #[command(flatten)]
    pub lock: RunLockArgs,

    #[command(flatten)]
    pub metrics: MetricsArgs,
}

#[derive(Debug, Args)]
pub struct GraphArgs {
    #[command(subcommand)]
    pub cmd: GraphCmd,
}

#[derive(Debug, Subcommand)]
pub enum GraphCmd {
    /// Export nodes and edges (json, dot, csv, graphml, geojson); deterministic order
    #[command(after_long_help = examples::help("graph dump"))]
    Dump(GraphDumpArgs),
    /// Node and edge counts, components, degree distribution, hubs, edge ages
    #[command(after_long_help = examples::help("graph stats"))]
    Stats(GraphStatsArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GraphFormat {
    Json,
    Dot,
    Csv,
    Graphml,
    Geojson,
}

/// Edge filters shared by `graph dump` and `graph stats`.
#[derive(Debug, Args, Clone)]
pub struct GraphFilterArgs {
    /// Only edges with at least this count
    #[arg(long, value_name = "N")]
    pub min_count: Option<i64>,

    /// Only edges seen since: a duration back from now (90s, 30m, 24h, 7d, 2w) or a time (RFC 3339)
    #[arg(long, value_name = "DURATION|TIME")]
    pub since: Option<String>,

    /// Only the neighbourhood of this node: its name (exact, any case; nodes, inactive nodes, observers), public key or a unique key prefix; a node without edges gives an empty graph
    #[arg(long, value_name = "NAME|KEY")]
    pub node: Option<String>,

    /// Hops around --node to include
    #[arg(long, value_name = "K", default_value_t = 1, requires = "node")]
    pub hops: usize,

    /// Fix "now" for --since durations and edge ages: RFC 3339, 'YYYY-MM-DD HH:MM:SS' (UTC) or epoch seconds; from 2020-01-01 to a day ahead of the clock
    #[arg(long, value_name = "TIME")]
    pub now: Option<String>,

    /// Accept a --now before 2020-01-01 or more than a day ahead of the system clock
    #[arg(long, requires = "now")]
    pub allow_any_now: bool,

    #[command(flatten)]
    pub database: DbArgs,
}

#[derive(Debug, Args)]
pub struct GraphDumpArgs {
    /// Output format
    #[arg(long, value_enum, default_value_t = GraphFormat::Json)]
    pub format: GraphFormat,

    #[command(flatten)]
    pub filter: GraphFilterArgs,

    /// Write to FILE (atomically: temporary file, then rename) instead of stdout
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Also write the node table as CSV to FILE (atomically)
    #[arg(long, value_name = "FILE")]
    pub nodes_csv: Option<PathBuf>,

    /// Replace an existing SQLite database given as --output/--nodes-csv (never the --db database or its -wal/-shm/-journal)
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct GraphStatsArgs {
    #[command(flatten)]
    pub filter: GraphFilterArgs,

    /// Number of hubs to list
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub top: usize,
}
