//! Bulk writer: creates the file, streams the generator's rows into it in large
//! transactions with journaling off, builds the indexes after the data and switches
//! the file to WAL at the end. The file is built under a temporary name beside the
//! target and renamed into place only when complete.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use anyhow::{Context, Result};
use rusqlite::Connection;

use super::gen::{Generator, MetricsGen, Packet};
use super::{Config, Schema};
use crate::catalog::{self, Target};

mod insert;
use insert::{
    columns, insert_chunk, insert_dropped_and_edges, insert_metrics, insert_nodes,
    insert_observers, Insert, OBS_COLS, TX_COLS,
};

/// Rows per write transaction (observations).
const CHUNK_OBS: usize = 20_000;

/// Rows written per table (in report order).
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct Rows {
    pub nodes: u64,
    pub observers: u64,
    pub transmissions: u64,
    pub observations: u64,
    pub observer_metrics: u64,
    pub dropped_packets: u64,
    pub neighbor_edges: u64,
}

impl Rows {
    /// (table, rows) in report order.
    pub fn table(&self) -> [(&'static str, u64); 7] {
        [
            ("nodes", self.nodes),
            ("observers", self.observers),
            ("transmissions", self.transmissions),
            ("observations", self.observations),
            ("observer_metrics", self.observer_metrics),
            ("dropped_packets", self.dropped_packets),
            ("neighbor_edges", self.neighbor_edges),
        ]
    }
}

/// What was written.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub rows: Rows,
    pub anomalies: Vec<(String, u64)>,
    pub indexes: u64,
    pub journal_mode: String,
    pub file_bytes: u64,
    pub seconds_rows: f64,
    pub seconds_indexes: f64,
}

/// Schema DDL of a fresh database: tables and views first, indexes separately so
/// they can be built after the data.
pub struct Ddl {
    pub tables: Vec<String>,
    pub indexes: Vec<String>,
}

fn split_ddl(stmts: Vec<String>) -> Ddl {
    let mut tables = Vec::new();
    let mut indexes = Vec::new();
    for s in stmts {
        let up = s.trim_start().to_ascii_uppercase();
        if up.starts_with("CREATE INDEX") || up.starts_with("CREATE UNIQUE INDEX") {
            indexes.push(s);
        } else {
            tables.push(s);
        }
    }
    Ddl { tables, indexes }
}

/// The DDL for a schema. `latest` and `seed` come from the schema catalog; `legacy`
/// reproduces the shared legacy fixture exactly.
pub fn schema_ddl(schema: Schema) -> Ddl {
    split_ddl(match schema {
        Schema::Latest => catalog::create_schema_sql(Target::Latest),
        Schema::Seed => catalog::create_schema_sql(Target::Seed),
        Schema::Legacy => LEGACY_DDL.iter().map(|s| s.to_string()).collect(),
    })
}

const LEGACY_DDL: &[&str] = &[
    "CREATE TABLE nodes (\n    public_key TEXT PRIMARY KEY,\n    name TEXT,\n    role TEXT,\n    lat REAL,\n    lon REAL,\n    last_seen TEXT,\n    first_seen TEXT,\n    advert_count INTEGER DEFAULT 0,\n    battery_mv INTEGER,\n    temperature_c REAL\n)",
    "CREATE TABLE observers (\n    id TEXT PRIMARY KEY,\n    name TEXT,\n    iata TEXT,\n    last_seen TEXT,\n    first_seen TEXT,\n    packet_count INTEGER DEFAULT 0,\n    model TEXT,\n    firmware TEXT,\n    client_version TEXT,\n    radio TEXT,\n    battery_mv INTEGER,\n    uptime_secs INTEGER,\n    noise_floor REAL\n)",
    "CREATE TABLE transmissions (\n    id INTEGER PRIMARY KEY AUTOINCREMENT,\n    raw_hex TEXT NOT NULL,\n    hash TEXT NOT NULL UNIQUE,\n    first_seen TEXT NOT NULL,\n    route_type INTEGER,\n    payload_type INTEGER,\n    payload_version INTEGER,\n    decoded_json TEXT,\n    created_at TEXT DEFAULT (datetime('now'))\n)",
    "CREATE TABLE observations (\n    id INTEGER PRIMARY KEY AUTOINCREMENT,\n    transmission_id INTEGER NOT NULL REFERENCES transmissions(id),\n    observer_idx INTEGER,\n    direction TEXT,\n    snr REAL,\n    rssi REAL,\n    score INTEGER,\n    path_json TEXT,\n    timestamp INTEGER NOT NULL\n)",
];

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".synth-tmp");
    path.with_file_name(name)
}

fn remove_db_files(path: &Path) -> Result<()> {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = path.as_os_str().to_os_string();
        p.push(suffix);
        let p = PathBuf::from(p);
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", p.display())),
        }
    }
    Ok(())
}

/// Creates the database at `path` (replacing it only when `replace` is set; the
/// caller decides about refusing). `progress` is called with (observations written,
/// total, phase), the phase being `rows`, `tail` (nodes, observers, metrics) or
/// `indexes`.
pub fn write_database(
    cfg: &Config,
    path: &Path,
    replace: bool,
    progress: &dyn Fn(u64, u64, &str),
) -> Result<Summary> {
    let ddl = schema_ddl(cfg.schema);
    let tmp = temp_path(path);
    remove_db_files(&tmp)?;
    let mut summary = Summary::default();
    let started = Instant::now();
    {
        let conn = Connection::open(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        // A fresh ingestor database is INCREMENTAL; the legacy fixture and
        // the anomaly set are NONE.
        if cfg.schema != Schema::Legacy && !cfg.anomalies {
            conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL;")?;
        }
        conn.execute_batch(
            "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA locking_mode = EXCLUSIVE;
             PRAGMA cache_size = -65536; PRAGMA temp_store = FILE; PRAGMA threads = 2;",
        )?;
        for s in &ddl.tables {
            conn.execute_batch(s)
                .with_context(|| format!("creating schema: {s}"))?;
        }
        write_rows(cfg, &conn, &mut summary, progress)?;
        progress(summary.rows.observations, cfg.observations, "indexes");
        summary.seconds_rows = started.elapsed().as_secs_f64();

        let idx_start = Instant::now();
        let skip_dedup = cfg.anomalies;
        for s in &ddl.indexes {
            if skip_dedup && s.contains("idx_observations_dedup") {
                // Duplicate dedup keys make this index impossible.
                continue;
            }
            conn.execute_batch(s)
                .with_context(|| format!("creating index: {s}"))?;
            summary.indexes += 1;
        }
        summary.seconds_indexes = idx_start.elapsed().as_secs_f64();
        let mode = if cfg.schema == Schema::Legacy || cfg.anomalies {
            "DELETE"
        } else {
            "WAL"
        };
        conn.execute_batch("PRAGMA locking_mode = NORMAL;")?;
        summary.journal_mode =
            conn.query_row(&format!("PRAGMA journal_mode = {mode}"), [], |r| {
                r.get::<_, String>(0)
            })?;
        conn.execute_batch("PRAGMA synchronous = FULL;")?;
        conn.close().map_err(|(_, e)| e)?;
    }
    if replace {
        remove_db_files(path)?;
    }
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    summary.file_bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    Ok(summary)
}

fn write_rows(
    cfg: &Config,
    conn: &Connection,
    s: &mut Summary,
    progress: &dyn Fn(u64, u64, &str),
) -> Result<()> {
    let total_obs = cfg.observations;
    let (sender, receiver) = mpsc::sync_channel::<Vec<Packet>>(2);
    let gen_cfg = cfg.clone();
    std::thread::scope(|scope| -> Result<()> {
        let producer = scope.spawn(move || produce(&gen_cfg, &sender));

        let mut tx_ins = Insert::new(conn, "transmissions", TX_COLS, "")?
            .context("the schema has no transmissions table")?;
        let mut obs_ins = Insert::new(conn, "observations", OBS_COLS, "")?
            .context("the schema has no observations table")?;
        let mut written = 0u64;
        let mut failure: Option<anyhow::Error> = None;
        for chunk in receiver.iter() {
            match insert_chunk(conn, &mut tx_ins, &mut obs_ins, &chunk, s) {
                Ok(n) => written += n,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
            progress(written, total_obs, "rows");
        }
        drop(receiver);
        let g = producer
            .join()
            .map_err(|_| anyhow::anyhow!("the generator thread panicked"))?;
        if let Some(e) = failure {
            return Err(e);
        }
        progress(written, total_obs, "tail");
        write_tail(cfg, conn, g, s)
    })
}

fn write_tail(cfg: &Config, conn: &Connection, g: Generator, s: &mut Summary) -> Result<()> {
    let metrics = MetricsGen::new(cfg, &g.world);
    let tail = g.finish();
    conn.execute_batch("BEGIN")?;
    insert_nodes(conn, &tail, s)?;
    insert_observers(conn, &tail, s)?;
    insert_dropped_and_edges(conn, &tail, s)?;
    conn.execute_batch("COMMIT")?;
    insert_metrics(conn, metrics, s)?;
    bookkeeping(cfg, conn, tail.seq_bump)?;
    s.anomalies = tail
        .anomalies_made
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    Ok(())
}

/// Bookkeeping: the catalog marks every migration done; the path_json backfill
/// is not done while rows still wait for it, and times are the data's, not the
/// clock's (deterministic output).
fn bookkeeping(cfg: &Config, conn: &Connection, seq_bump: Option<(i64, i64)>) -> Result<()> {
    conn.execute_batch("BEGIN")?;
    if cfg.null_path_json > 0.0 && !columns(conn, "_migrations")?.is_empty() {
        conn.execute(
            "DELETE FROM _migrations WHERE name = 'backfill_path_json_from_raw_hex_v1'",
            [],
        )?;
    }
    if !columns(conn, "_async_migrations")?.is_empty() {
        let when = super::encode::sqlite_datetime(cfg.start());
        conn.execute(
            "UPDATE _async_migrations SET started_at = ?1, ended_at = ?1",
            [when.as_str()],
        )?;
    }
    if let Some((tx_seq, obs_seq)) = seq_bump {
        conn.execute(
            "UPDATE sqlite_sequence SET seq = ?1 WHERE name = 'transmissions'",
            [tx_seq],
        )?;
        conn.execute(
            "UPDATE sqlite_sequence SET seq = ?1 WHERE name = 'observations'",
            [obs_seq],
        )?;
    }
    conn.execute_batch("COMMIT")?;
    Ok(())
}

/// The generator thread: packets in chunks of about `CHUNK_OBS` rows to the
/// writer; stops early when the writer has gone. Returns the generator for
/// the rows written after the packets.
fn produce(cfg: &Config, sender: &mpsc::SyncSender<Vec<Packet>>) -> Generator {
    let mut g = Generator::new(cfg);
    let mut chunk: Vec<Packet> = Vec::new();
    let mut n = 0usize;
    while let Some(p) = g.next_packet() {
        n += p.obs.len() + 1;
        chunk.push(p);
        if n >= CHUNK_OBS {
            if sender.send(std::mem::take(&mut chunk)).is_err() {
                return g;
            }
            n = 0;
        }
    }
    if !chunk.is_empty() {
        let _ = sender.send(chunk);
    }
    g
}
