//! `corescope graph dump` / `corescope graph stats` (read-only).
//!
//! Loads `neighbor_edges` plus node attributes from `nodes`,
//! `inactive_nodes` and `observers` through the read-only handle, and hands
//! them to the pure model in `graph.rs`. The database file is never written.

use std::io::{self, BufWriter, Write};

use rusqlite::types::ValueRef;
use serde_json::{json, Map, Value};

use crate::cli::{GraphCmd, GraphDumpArgs, GraphFilterArgs, GraphFormat, GraphStatsArgs};
use crate::context::Ctx;
use crate::error::Failure;
use crate::graph::{self, Directory, Filter, Format, Graph, NodeRow, NormalizeReport, RawEdge};
use crate::report::{self, Outcome};
use crate::store::outfile;
use crate::store::values::{real, text_or_number};
use crate::store::ReadOnlyDb;
use crate::timeutil;

pub fn run(ctx: &Ctx, cmd: &GraphCmd) -> anyhow::Result<Outcome> {
    match cmd {
        GraphCmd::Dump(a) => dump(ctx, a),
        GraphCmd::Stats(a) => stats(ctx, a),
    }
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
        let Some(key) = text_or_number(r.get_ref(0)?) else {
            continue;
        };
        let key = key.trim().to_ascii_lowercase();
        if key.is_empty() {
            continue;
        }
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
            let Some(id) = text_or_number(r.get_ref(0)?) else {
                continue;
            };
            let id = id.trim().to_ascii_lowercase();
            if id.is_empty() {
                continue;
            }
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
fn load_graph(ctx: &Ctx, f: &GraphFilterArgs) -> anyhow::Result<(Graph, NormalizeReport, i64)> {
    let (filter, now) = parse_filter(f)?;
    let db = ReadOnlyDb::open(&ctx.db_path, ctx.busy_timeout_ms)?;
    let (edges, rep) = load_edges(&db)?;
    let edges = graph::filter_edges(edges, &filter).map_err(|e| Failure::Usage(e.to_string()))?;
    let dir = load_directory(&db)?;
    Ok((
        Graph::from_edges(edges, &dir, &timeutil::parse_instant),
        rep,
        now,
    ))
}

fn skipped_json(rep: &NormalizeReport) -> Value {
    json!({
        "rows": rep.rows,
        "empty_endpoint": rep.skipped_empty_endpoint,
        "self_loop": rep.skipped_self_loop,
        "null_count": rep.skipped_null_count,
        "merged_duplicates": rep.merged_duplicates,
    })
}

fn format_of(f: GraphFormat) -> Format {
    match f {
        GraphFormat::Json => Format::Json,
        GraphFormat::Dot => Format::Dot,
        GraphFormat::Csv => Format::Csv,
        GraphFormat::Graphml => Format::Graphml,
        GraphFormat::Geojson => Format::Geojson,
    }
}

fn dump(ctx: &Ctx, a: &GraphDumpArgs) -> anyhow::Result<Outcome> {
    if ctx.json && a.output.is_none() {
        return Err(Failure::Usage(
            "graph dump writes the graph to stdout; with --json give --output FILE (the JSON report then goes to stdout)".into(),
        )
        .into());
    }
    // Decide about the output files before reading anything.
    let guard = outfile::Guard {
        db: Some(&ctx.db_path),
        force: a.force,
    };
    if let Some(p) = &a.output {
        outfile::check_output(p, "--output", guard)?;
    }
    if let Some(p) = &a.nodes_csv {
        outfile::check_output(p, "--nodes-csv", guard)?;
    }
    if let (Some(o), Some(n)) = (&a.output, &a.nodes_csv) {
        outfile::check_distinct((o, "--output"), (n, "--nodes-csv"))?;
    }
    let (g, rep, _now) = load_graph(ctx, &a.filter)?;
    let fmt = format_of(a.format);
    let tfmt = |t: i64| timeutil::rfc3339(t);
    if let Some(p) = &a.nodes_csv {
        outfile::write_atomic(p, "--nodes-csv", guard, |w| {
            graph::write_nodes_csv(&g, w, &tfmt)
        })?;
    }
    if let Some(p) = &a.output {
        outfile::write_atomic(p, "--output", guard, |w| graph::write(&g, fmt, w, &tfmt))?;
    } else {
        let stdout = io::stdout();
        let mut w = BufWriter::new(stdout.lock());
        let r = graph::write(&g, fmt, &mut w, &tfmt).and_then(|()| w.flush());
        match r {
            Ok(()) => {}
            // `corescope graph dump | head`: the reader went away.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
            Err(e) => return Err(Failure::Fatal(format!("writing to stdout: {e}")).into()),
        }
    }
    let mut out = Outcome::new();
    out.set("format", format!("{:?}", a.format).to_lowercase());
    out.set("nodes", g.nodes.len());
    out.set("edges", g.edges.len());
    out.set(
        "output",
        a.output
            .as_ref()
            .map_or(Value::Null, |p| Value::from(p.display().to_string())),
    );
    out.set(
        "nodes_csv",
        a.nodes_csv
            .as_ref()
            .map_or(Value::Null, |p| Value::from(p.display().to_string())),
    );
    out.set("stored_rows", skipped_json(&rep));
    if let Some(p) = &a.output {
        out.human = format!(
            "graph dump: {} nodes, {} edges written to {} ({})\n",
            g.nodes.len(),
            g.edges.len(),
            p.display(),
            format!("{:?}", a.format).to_lowercase()
        );
    }
    Ok(out)
}

/// Degree distribution folded into ranges 0, 1, 2, 3-4, 5-8, 9-16, ...
fn degree_ranges(dist: &std::collections::BTreeMap<usize, usize>) -> Vec<(String, usize)> {
    let mut out: Vec<(usize, usize, usize)> = Vec::new(); // (lo, hi, nodes)
    for (&d, &n) in dist {
        let (lo, hi) = if d <= 2 {
            (d, d)
        } else {
            let hi = d.next_power_of_two();
            (hi / 2 + 1, hi)
        };
        match out.last_mut() {
            Some(last) if last.0 == lo => last.2 += n,
            _ => out.push((lo, hi, n)),
        }
    }
    out.into_iter()
        .map(|(lo, hi, n)| {
            (
                if lo == hi {
                    lo.to_string()
                } else {
                    format!("{lo}-{hi}")
                },
                n,
            )
        })
        .collect()
}

fn stats(ctx: &Ctx, a: &GraphStatsArgs) -> anyhow::Result<Outcome> {
    let (g, rep, now) = load_graph(ctx, &a.filter)?;
    let s = graph::stats(&g, now, a.top);
    let mut out = Outcome::new();
    out.set("nodes", s.nodes);
    out.set("edges", s.edges);
    out.set("components", s.components);
    out.set("largest_components", s.largest_components.clone());
    let mut dd = Map::new();
    for (d, n) in &s.degree_distribution {
        dd.insert(d.to_string(), Value::from(*n));
    }
    out.set("degree_distribution", Value::Object(dd));
    out.set("max_degree", s.max_degree);
    out.set("mean_degree", (s.mean_degree * 100.0).round() / 100.0);
    // JSON: the node's name or null (the human table shows the label).
    let names: std::collections::HashMap<&str, Option<&str>> = g
        .nodes
        .iter()
        .map(|n| (n.id.as_str(), n.name.as_deref()))
        .collect();
    out.set(
        "hubs",
        s.hubs
            .iter()
            .map(|(id, _, d)| json!({"id": id, "name": names.get(id.as_str()).copied().flatten(), "degree": d}))
            .collect::<Vec<_>>(),
    );
    let mut ages = Map::new();
    for (k, v) in &s.age_buckets {
        ages.insert((*k).to_string(), Value::from(*v));
    }
    out.set("edges_by_age", Value::Object(ages));
    out.set("unknown_nodes", s.unknown_nodes);
    out.set("edges_with_unknown_endpoint", s.edges_with_unknown_endpoint);
    out.set("observers", s.observers);
    out.set("inactive_nodes", s.inactive_nodes);
    out.set("now", timeutil::rfc3339(now));
    out.set("stored_rows", skipped_json(&rep));

    let mut h = String::new();
    h.push_str(&format!(
        "graph: {} nodes, {} edges, {} connected components (largest: {})\n",
        s.nodes,
        s.edges,
        s.components,
        s.largest_components
            .iter()
            .map(std::string::ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    ));
    h.push_str(&format!(
        "degree: max {}, mean {:.2}; {} observers, {} inactive nodes, {} unknown nodes ({} edges touch one)\n",
        s.max_degree, s.mean_degree, s.observers, s.inactive_nodes, s.unknown_nodes, s.edges_with_unknown_endpoint
    ));
    let skipped = rep.skipped_empty_endpoint + rep.skipped_self_loop + rep.skipped_null_count;
    if skipped > 0 || rep.merged_duplicates > 0 {
        h.push_str(&format!(
            "stored rows: {} read, {} skipped (empty endpoint {}, self-loop {}, NULL count {}), {} merged case/order duplicates\n",
            rep.rows,
            skipped,
            rep.skipped_empty_endpoint,
            rep.skipped_self_loop,
            rep.skipped_null_count,
            rep.merged_duplicates
        ));
    }
    let mut t = report::table(&["hub", "name", "degree"]);
    for (id, label, d) in &s.hubs {
        t.add_row(vec![
            id.chars().take(16).collect::<String>(),
            label.clone(),
            d.to_string(),
        ]);
    }
    h.push_str(&format!("{t}\n"));
    let mut t = report::table(&["last seen", "edges"]);
    for (k, v) in &s.age_buckets {
        t.add_row(vec![(*k).to_string(), v.to_string()]);
    }
    h.push_str(&format!("{t}\n"));
    // Human table in power-of-two ranges (JSON has every degree).
    let mut t = report::table(&["degree", "nodes"]);
    for (label, n) in degree_ranges(&s.degree_distribution) {
        t.add_row(vec![label, n.to_string()]);
    }
    h.push_str(&format!("{t}\n"));
    out.human = h;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::degree_ranges;
    use std::collections::BTreeMap;

    #[test]
    fn degree_ranges_fold_powers_of_two() {
        let d = BTreeMap::from([
            (1, 4),
            (2, 3),
            (3, 1),
            (4, 2),
            (5, 1),
            (8, 1),
            (9, 2),
            (40, 1),
        ]);
        let r = degree_ranges(&d);
        assert_eq!(
            r,
            vec![
                ("1".to_string(), 4),
                ("2".to_string(), 3),
                ("3-4".to_string(), 3),
                ("5-8".to_string(), 2),
                ("9-16".to_string(), 2),
                ("33-64".to_string(), 1)
            ]
        );
    }
}
