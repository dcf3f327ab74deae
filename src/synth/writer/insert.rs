//! The rows of a synthetic database into SQLite: one prepared INSERT per
//! table over the columns the schema has, the value of each column of each
//! generated row, and the batches they are committed in.

use anyhow::{Context, Result};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, Statement};

use super::Summary;
use crate::synth::gen::{MetricsGen, ObserverRef, Packet, Tail};

pub(super) fn columns(conn: &Connection, table: &str) -> Result<Vec<String>> {
    let mut st = conn.prepare(&format!("PRAGMA table_info(\"{table}\")"))?;
    let cols = st
        .query_map([], |r| r.get::<_, String>(1))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(cols)
}

/// An INSERT over the known columns the table actually has.
pub(super) struct Insert<'c> {
    stmt: Statement<'c>,
    cols: Vec<usize>,
}

impl<'c> Insert<'c> {
    pub(super) fn new(
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

pub(super) const TX_COLS: &[&str] = &[
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
pub(super) const OBS_COLS: &[&str] = &[
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

/// Insert `rows` into `table` (the columns of `cols` it has; none when the
/// table is missing), counting each row in `count`. `value(row, c)` is the
/// value of column `cols[c]`.
fn insert_rows<T>(
    conn: &Connection,
    (table, cols, extra): (&str, &[&str], &str),
    rows: &[T],
    count: &mut u64,
    value: impl for<'r> Fn(&'r T, usize) -> ToSqlOutput<'r>,
) -> Result<()> {
    if let Some(mut ins) = Insert::new(conn, table, cols, extra)? {
        for row in rows {
            ins.run(|c| value(row, c))?;
            *count += 1;
        }
    }
    Ok(())
}

pub(super) fn insert_nodes(conn: &Connection, tail: &Tail, s: &mut Summary) -> Result<()> {
    let target = ("nodes", NODE_COLS, "");
    insert_rows(
        conn,
        target,
        &tail.nodes,
        &mut s.rows.nodes,
        |n, c| match c {
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
        },
    )
}

pub(super) fn insert_observers(conn: &Connection, tail: &Tail, s: &mut Summary) -> Result<()> {
    let target = ("observers", OBSERVER_COLS, "");
    insert_rows(
        conn,
        target,
        &tail.observers,
        &mut s.rows.observers,
        |o, c| match c {
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
        },
    )
}

pub(super) fn insert_dropped_and_edges(
    conn: &Connection,
    tail: &Tail,
    s: &mut Summary,
) -> Result<()> {
    let target = ("dropped_packets", DROPPED_COLS, "");
    insert_rows(
        conn,
        target,
        &tail.dropped,
        &mut s.rows.dropped_packets,
        |d, c| match c {
            0 => t(&d.hash),
            1 => t(&d.raw_hex),
            2 => t(&d.reason),
            3 => t(&d.observer_id),
            4 => t(&d.observer_name),
            5 => t(&d.node_pubkey),
            6 => t(&d.node_name),
            _ => t(&d.dropped_at),
        },
    )?;
    let target = ("neighbor_edges", EDGE_COLS, "OR IGNORE");
    insert_rows(
        conn,
        target,
        &tail.edges,
        &mut s.rows.neighbor_edges,
        |e, c| match c {
            0 => t(&e.node_a),
            1 => t(&e.node_b),
            2 => i(e.count),
            _ => t(&e.last_seen),
        },
    )
}

/// `observer_metrics`, committed every 100 000 rows.
pub(super) fn insert_metrics(
    conn: &Connection,
    metrics: MetricsGen,
    s: &mut Summary,
) -> Result<()> {
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

/// One chunk of packets in one transaction; returns the observations written.
pub(super) fn insert_chunk(
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
