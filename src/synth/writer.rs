//! Bulk writer: creates the file, streams the generator's rows into it in large
//! transactions with journaling off, builds the indexes after the data and switches
//! the file to WAL at the end. The file is built under a temporary name beside the
//! target and renamed into place only when complete.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use anyhow::{Context, Result};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, Statement};

use super::gen::{Generator, MetricsGen, ObserverRef, Packet, Tail};
use super::{Config, Schema};
use crate::catalog::{self, Target};

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

fn columns(conn: &Connection, table: &str) -> Result<Vec<String>> {
    let mut st = conn.prepare(&format!("PRAGMA table_info(\"{table}\")"))?;
    let cols = st
        .query_map([], |r| r.get::<_, String>(1))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(cols)
}

/// An INSERT over the known columns the table actually has.
struct Insert<'c> {
    stmt: Statement<'c>,
    cols: Vec<usize>,
}

impl<'c> Insert<'c> {
    fn new(
        conn: &'c Connection,
        table: &str,
        known: &[&str],
        extra: &str,
    ) -> Result<Option<Insert<'c>>> {
        let have = columns(conn, table)?;
        if have.is_empty() {
            return Ok(None);
        }
        let cols: Vec<usize> = (0..known.len())
            .filter(|i| {
                known[*i] == "rowid" || have.iter().any(|c| c.eq_ignore_ascii_case(known[*i]))
            })
            .collect();
        let names: Vec<&str> = cols.iter().map(|i| known[*i]).collect();
        let marks: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
        let sql = format!(
            "INSERT {extra} INTO \"{table}\" ({}) VALUES ({})",
            names.join(", "),
            marks.join(", ")
        );
        let stmt = conn
            .prepare(&sql)
            .with_context(|| format!("preparing {sql}"))?;
        Ok(Some(Insert { stmt, cols }))
    }

    fn run<'r>(&mut self, value: impl Fn(usize) -> ToSqlOutput<'r>) -> Result<()> {
        for (pos, c) in self.cols.iter().enumerate() {
            self.stmt.raw_bind_parameter(pos + 1, value(*c))?;
        }
        self.stmt.raw_execute()?;
        Ok(())
    }
}

fn t(s: &str) -> ToSqlOutput<'_> {
    ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes()))
}
fn i(v: i64) -> ToSqlOutput<'static> {
    ToSqlOutput::Borrowed(ValueRef::Integer(v))
}
fn r(v: f64) -> ToSqlOutput<'static> {
    ToSqlOutput::Borrowed(ValueRef::Real(v))
}
fn null() -> ToSqlOutput<'static> {
    ToSqlOutput::Borrowed(ValueRef::Null)
}
fn ot(v: &Option<String>) -> ToSqlOutput<'_> {
    v.as_deref().map_or(null(), t)
}
fn oi(v: Option<i64>) -> ToSqlOutput<'static> {
    v.map_or(null(), i)
}
fn or(v: Option<f64>) -> ToSqlOutput<'static> {
    v.map_or(null(), r)
}

const TX_COLS: &[&str] = &[
    "id",
    "raw_hex",
    "hash",
    "first_seen",
    "route_type",
    "payload_type",
    "payload_version",
    "decoded_json",
    "from_pubkey",
    "created_at",
    "channel_hash",
    "last_seen",
    "scope_name",
];
const OBS_COLS: &[&str] = &[
    "id",
    "transmission_id",
    "observer_idx",
    "direction",
    "snr",
    "rssi",
    "score",
    "path_json",
    "timestamp",
    "raw_hex",
    "resolved_path",
];
const NODE_COLS: &[&str] = &[
    "public_key",
    "name",
    "role",
    "lat",
    "lon",
    "last_seen",
    "first_seen",
    "advert_count",
    "battery_mv",
    "temperature_c",
    "foreign_advert",
    "multibyte_sup",
];
const OBSERVER_COLS: &[&str] = &[
    "rowid",
    "id",
    "name",
    "iata",
    "last_seen",
    "first_seen",
    "packet_count",
    "model",
    "firmware",
    "client_version",
    "radio",
    "battery_mv",
    "uptime_secs",
    "noise_floor",
    "inactive",
    "last_packet_at",
];
const METRIC_COLS: &[&str] = &[
    "observer_id",
    "timestamp",
    "noise_floor",
    "tx_air_secs",
    "rx_air_secs",
    "recv_errors",
    "battery_mv",
    "packets_sent",
    "packets_recv",
];
const DROPPED_COLS: &[&str] = &[
    "hash",
    "raw_hex",
    "reason",
    "observer_id",
    "observer_name",
    "node_pubkey",
    "node_name",
    "dropped_at",
];
const EDGE_COLS: &[&str] = &["node_a", "node_b", "count", "last_seen"];

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

fn insert_nodes(conn: &Connection, tail: &Tail, s: &mut Summary) -> Result<()> {
    if let Some(mut ins) = Insert::new(conn, "nodes", NODE_COLS, "")? {
        for n in &tail.nodes {
            ins.run(|c| match c {
                0 => t(&n.public_key),
                1 => t(&n.name),
                2 => t(&n.role),
                3 => or(n.lat),
                4 => or(n.lon),
                5 => t(&n.last_seen),
                6 => t(&n.first_seen),
                7 => i(n.advert_count),
                8 => oi(n.battery_mv),
                9 => or(n.temperature_c),
                10 => i(0),
                _ => i(n.multibyte_sup),
            })?;
            s.rows.nodes += 1;
        }
    }
    Ok(())
}

fn insert_observers(conn: &Connection, tail: &Tail, s: &mut Summary) -> Result<()> {
    if let Some(mut ins) = Insert::new(conn, "observers", OBSERVER_COLS, "")? {
        for o in &tail.observers {
            ins.run(|c| match c {
                0 => i(o.rowid),
                1 => t(&o.id),
                2 => t(&o.name),
                3 => t(&o.iata),
                4 => t(&o.last_seen),
                5 => t(&o.first_seen),
                6 => i(o.packet_count),
                7 => ot(&o.model),
                8 => ot(&o.firmware),
                9 => t(&o.client_version),
                10 => t(&o.radio),
                11 => oi(o.battery_mv),
                12 => oi(o.uptime_secs),
                13 => or(o.noise_floor),
                14 => i(0),
                _ => ot(&o.last_packet_at),
            })?;
            s.rows.observers += 1;
        }
    }
    Ok(())
}

fn insert_dropped_and_edges(conn: &Connection, tail: &Tail, s: &mut Summary) -> Result<()> {
    if let Some(mut ins) = Insert::new(conn, "dropped_packets", DROPPED_COLS, "")? {
        for d in &tail.dropped {
            ins.run(|c| match c {
                0 => t(&d.hash),
                1 => t(&d.raw_hex),
                2 => t(&d.reason),
                3 => t(&d.observer_id),
                4 => t(&d.observer_name),
                5 => t(&d.node_pubkey),
                6 => t(&d.node_name),
                _ => t(&d.dropped_at),
            })?;
            s.rows.dropped_packets += 1;
        }
    }
    if let Some(mut ins) = Insert::new(conn, "neighbor_edges", EDGE_COLS, "OR IGNORE")? {
        for e in &tail.edges {
            ins.run(|c| match c {
                0 => t(&e.node_a),
                1 => t(&e.node_b),
                2 => i(e.count),
                _ => t(&e.last_seen),
            })?;
            s.rows.neighbor_edges += 1;
        }
    }
    Ok(())
}

/// `observer_metrics`, committed every 100 000 rows.
fn insert_metrics(conn: &Connection, metrics: MetricsGen, s: &mut Summary) -> Result<()> {
    let Some(mut ins) = Insert::new(conn, "observer_metrics", METRIC_COLS, "")? else {
        return Ok(());
    };
    let mut n = 0usize;
    conn.execute_batch("BEGIN")?;
    for m in metrics {
        ins.run(|c| match c {
            0 => t(&m.observer_id),
            1 => t(&m.timestamp),
            2 => r(m.noise_floor),
            3 => i(m.tx_air_secs),
            4 => i(m.rx_air_secs),
            5 => i(m.recv_errors),
            6 => oi(m.battery_mv),
            7 => i(m.packets_sent),
            _ => i(m.packets_recv),
        })?;
        s.rows.observer_metrics += 1;
        n += 1;
        if n % 100_000 == 0 {
            conn.execute_batch("COMMIT; BEGIN")?;
        }
    }
    conn.execute_batch("COMMIT")?;
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

/// One chunk of packets in one transaction; returns the observations written.
fn insert_chunk(
    conn: &Connection,
    tx_ins: &mut Insert<'_>,
    obs_ins: &mut Insert<'_>,
    chunk: &[Packet],
    s: &mut Summary,
) -> Result<u64> {
    let mut written = 0u64;
    conn.execute_batch("BEGIN")?;
    for p in chunk {
        let x = &p.tx;
        tx_ins.run(|c| match c {
            0 => i(x.id),
            1 => t(&x.raw_hex),
            2 => t(&x.hash),
            3 => t(&x.first_seen),
            4 => i(x.route_type),
            5 => i(x.payload_type),
            6 => oi(x.payload_version),
            7 => t(&x.decoded_json),
            8 => ot(&x.from_pubkey),
            9 => t(&x.created_at),
            10 => ot(&x.channel_hash),
            11 => i(x.last_seen),
            _ => ot(&x.scope_name),
        })?;
        for o in &p.obs {
            obs_ins.run(|c| match c {
                0 => i(o.id),
                1 => i(o.transmission_id),
                2 => match &o.observer {
                    ObserverRef::Idx(v) => i(*v),
                    ObserverRef::Text(v) => t(v),
                },
                3 => o.direction.map_or(null(), t),
                4 => or(o.snr),
                5 => or(o.rssi),
                6 => oi(o.score),
                7 => ot(&o.path_json),
                8 => i(o.timestamp),
                9 => ot(&o.raw_hex),
                _ => ot(&o.resolved_path),
            })?;
        }
        s.rows.transmissions += 1;
        s.rows.observations += p.obs.len() as u64;
        written += p.obs.len() as u64;
    }
    conn.execute_batch("COMMIT")?;
    Ok(written)
}
