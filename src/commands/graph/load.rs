//! Reading the graph through the read-only handle: `neighbor_edges`
//! (streamed into the pure normaliser in `graph.rs`) and the node
//! attributes of `nodes`, `inactive_nodes` and `observers`; and the
//! `--now`/`--since` filter.

use rusqlite::types::ValueRef;

use crate::cli::GraphFilterArgs;
use crate::context::Ctx;
use crate::error::Failure;
use crate::graph::{self, Directory, Filter, Graph, NodeRow, NormalizeReport, RawEdge};
use crate::store::values::{real, text_or_number};
use crate::store::ReadOnlyDb;
use crate::timeutil;

/// A node or observer id as the graph keys it (trimmed, lower-case), or
/// None when it is empty.
fn node_key(v: ValueRef<'_>) -> Option<String> {
    let key = text_or_number(v)?.trim().to_ascii_lowercase();
    (!key.is_empty()).then_some(key)
}

fn load_edges(db: &ReadOnlyDb) -> anyhow::Result<(Vec<graph::Edge>, NormalizeReport)> {
    if !db.table_exists("neighbor_edges")? {
        return Err(Failure::NotReady(format!(
            "{} has no neighbor_edges table; run `corescope migrate` and `corescope build-edges` first",
            db.path().display()
        ))
        .into());
    }
    let mut st = db.prepare("SELECT node_a, node_b, count, last_seen FROM neighbor_edges")?;
    let mut rows = st.query([])?;
    // Streamed into the normaliser: the stored rows are never all in memory.
    let mut failed: Option<rusqlite::Error> = None;
    let iter = std::iter::from_fn(|| {
        let r = match rows.next() {
            Ok(Some(r)) => r,
            Ok(None) => return None,
            Err(e) => {
                failed = Some(e);
                return None;
            }
        };
        let get = |i: usize| r.get_ref(i).ok();
        Some(RawEdge {
            node_a: get(0).and_then(text_or_number),
            node_b: get(1).and_then(text_or_number),
            count: match get(2) {
                Some(ValueRef::Integer(i)) => Some(i),
                Some(ValueRef::Real(f)) if f.is_finite() => Some(f as i64),
                _ => None,
            },
            last_seen: get(3).and_then(text_or_number),
        })
    });
    let out = graph::normalize_edges(iter, &timeutil::parse_instant);
    if let Some(e) = failed {
        return Err(anyhow::Error::new(e).context("reading neighbor_edges"));
    }
    Ok(out)
}

fn load_node_table(
    db: &ReadOnlyDb,
    table: &str,
) -> anyhow::Result<std::collections::HashMap<String, NodeRow>> {
    let mut out = std::collections::HashMap::new();
    if !db.table_exists(table)? {
        return Ok(out);
    }
    let mut st = db.prepare(&format!(
        "SELECT public_key, name, role, lat, lon, last_seen FROM {table} ORDER BY public_key"
    ))?;
    let mut rows = st.query([])?;
    while let Some(r) = rows.next()? {
        let Some(key) = node_key(r.get_ref(0)?) else {
            continue;
        };
        out.entry(key).or_insert(NodeRow {
            name: text_or_number(r.get_ref(1)?),
            role: text_or_number(r.get_ref(2)?),
            lat: real(r.get_ref(3)?),
            lon: real(r.get_ref(4)?),
            last_seen: text_or_number(r.get_ref(5)?),
        });
    }
    Ok(out)
}

fn load_directory(db: &ReadOnlyDb) -> anyhow::Result<Directory> {
    let mut dir = Directory {
        nodes: load_node_table(db, "nodes")?,
        inactive: load_node_table(db, "inactive_nodes")?,
        ..Default::default()
    };
    if db.table_exists("observers")? {
        let mut st = db.prepare("SELECT id, name FROM observers ORDER BY id")?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let Some(id) = node_key(r.get_ref(0)?) else {
                continue;
            };
            dir.observers
                .entry(id)
                .or_insert(text_or_number(r.get_ref(1)?));
        }
    }
    Ok(dir)
}

fn parse_filter(f: &GraphFilterArgs) -> anyhow::Result<(Filter, i64)> {
    let now = timeutil::parse_now(f.now.as_deref(), timeutil::now_epoch(), f.allow_any_now)
        .map_err(|m| Failure::Usage(format!("--now: {m}")))?;
    let since = match &f.since {
        None => None,
        Some(s) => Some(
            timeutil::parse_duration_secs(s)
                .and_then(|d| now.checked_sub(d))
                .or_else(|| timeutil::parse_instant(s))
                .ok_or_else(|| {
                    Failure::Usage(format!(
                        "--since {s:?}: expected a duration (90s, 30m, 24h, 7d, 2w) or a time (RFC 3339, e.g. 2026-05-17T18:12:01Z)"
                    ))
                })?,
        ),
    };
    Ok((
        Filter {
            min_count: f.min_count,
            since,
            node: f.node.clone().map(|n| (n, f.hops)),
        },
        now,
    ))
}

/// Loads, normalises and filters the graph.
pub fn load_graph(ctx: &Ctx, f: &GraphFilterArgs) -> anyhow::Result<(Graph, NormalizeReport, i64)> {
    let (filter, now) = parse_filter(f)?;
    let db = ReadOnlyDb::open(&ctx.db_path, ctx.busy_timeout_ms)?;
    let (edges, rep) = load_edges(&db)?;
    let dir = load_directory(&db)?;
    let edges =
        graph::filter_edges_in(edges, &filter, &dir).map_err(|e| Failure::Usage(e.to_string()))?;
    if let (Some((query, _)), true) = (&filter.node, edges.is_empty()) {
        log::warn!("--node {query}: the node has no edges (after --since/--min-count); the result is empty");
    }
    Ok((
        Graph::from_edges(edges, &dir, &timeutil::parse_instant),
        rep,
        now,
    ))
}
