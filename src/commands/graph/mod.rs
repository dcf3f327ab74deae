//! `corescope graph dump` / `corescope graph stats` (read-only).
//!
//! Loads `neighbor_edges` plus node attributes from `nodes`,
//! `inactive_nodes` and `observers` through the read-only handle, and hands
//! them to the pure model in `graph.rs`. The database file is never written.

mod load;
mod report;

use std::io::{self, BufWriter, Write};

use crate::cli::{GraphCmd, GraphDumpArgs, GraphFormat, GraphStatsArgs};
use crate::context::Ctx;
use crate::error::Failure;
use crate::graph::{self, Format};
use crate::report::Outcome;
use crate::store::outfile;
use crate::timeutil;

use report::{DumpReport, StatsReport, StoredRows};

pub fn run(ctx: &Ctx, cmd: &GraphCmd) -> anyhow::Result<Outcome> {
    match cmd {
        GraphCmd::Dump(a) => Outcome::from_report(&dump(ctx, a)?),
        GraphCmd::Stats(a) => Outcome::from_report(&stats(ctx, a)?),
    }
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

/// Refuses output files that are unsafe to write, before anything is read.
fn check_outputs(a: &GraphDumpArgs, guard: outfile::Guard<'_>) -> anyhow::Result<()> {
    if let Some(p) = &a.output {
        outfile::check_output(p, "--output", guard)?;
    }
    if let Some(p) = &a.nodes_csv {
        outfile::check_output(p, "--nodes-csv", guard)?;
    }
    if let (Some(o), Some(n)) = (&a.output, &a.nodes_csv) {
        outfile::check_distinct((o, "--output"), (n, "--nodes-csv"))?;
    }
    Ok(())
}

fn dump(ctx: &Ctx, a: &GraphDumpArgs) -> anyhow::Result<DumpReport> {
    if ctx.json && a.output.is_none() {
        return Err(Failure::Usage(
            "graph dump writes the graph to stdout; with --json give --output FILE (the JSON report then goes to stdout)".into(),
        )
        .into());
    }
    let guard = outfile::Guard {
        db: Some(&ctx.db_path),
        force: a.force,
    };
    check_outputs(a, guard)?;
    let (g, rep, _now) = load::load_graph(ctx, &a.filter)?;
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
    Ok(DumpReport {
        format: format!("{:?}", a.format).to_lowercase(),
        nodes: g.nodes.len(),
        edges: g.edges.len(),
        output: a.output.as_ref().map(|p| p.display().to_string()),
        nodes_csv: a.nodes_csv.as_ref().map(|p| p.display().to_string()),
        stored_rows: StoredRows::from(&rep),
    })
}

fn stats(ctx: &Ctx, a: &GraphStatsArgs) -> anyhow::Result<StatsReport> {
    let (g, rep, now) = load::load_graph(ctx, &a.filter)?;
    let s = graph::stats(&g, now, a.top);
    let names: std::collections::HashMap<&str, Option<&str>> = g
        .nodes
        .iter()
        .map(|n| (n.id.as_str(), n.name.as_deref()))
        .collect();
    Ok(StatsReport::new(
        s,
        |id| names.get(id).copied().flatten().map(str::to_string),
        timeutil::rfc3339(now),
        StoredRows::from(&rep),
    ))
}
