//! The five output formats of `graph dump` (JSON, DOT, CSV, GraphML,
//! GeoJSON): rendering only, from the normalised graph.

use std::io::{self, Write};

use serde_json::{json, Map, Value};

use super::*;

/// Output formats of `graph dump`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Dot,
    Csv,
    Graphml,
    Geojson,
}

fn opt_time(t: Option<i64>, fmt: &dyn Fn(i64) -> String) -> Value {
    t.map_or(Value::Null, |t| Value::String(fmt(t)))
}

fn opt_f64(v: Option<f64>) -> Value {
    v.and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

fn opt_str(v: &Option<String>) -> Value {
    v.as_ref().map_or(Value::Null, |s| Value::String(s.clone()))
}

fn node_props(n: &Node, fmt: &dyn Fn(i64) -> String) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("id".into(), Value::String(n.id.clone()));
    m.insert("name".into(), opt_str(&n.name));
    m.insert("role".into(), opt_str(&n.role));
    m.insert("lat".into(), opt_f64(n.lat));
    m.insert("lon".into(), opt_f64(n.lon));
    m.insert("last_seen".into(), opt_time(n.last_seen, fmt));
    m.insert("is_observer".into(), Value::Bool(n.is_observer));
    m.insert("inactive".into(), Value::Bool(n.inactive));
    m.insert("known".into(), Value::Bool(n.known));
    m
}

fn edge_props(e: &Edge, fmt: &dyn Fn(i64) -> String) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("source".into(), Value::String(e.source.to_string()));
    m.insert("target".into(), Value::String(e.target.to_string()));
    m.insert("count".into(), Value::from(e.count));
    m.insert("last_seen".into(), opt_time(e.last_seen, fmt));
    m
}

/// `{"nodes":[…],"edges":[…]}`, one line, newline-terminated.
pub fn write_json(g: &Graph, w: &mut dyn Write, fmt: &dyn Fn(i64) -> String) -> io::Result<()> {
    // Streamed object by object: a million-edge graph never exists as one
    // JSON value in memory.
    w.write_all(b"{\"nodes\":[")?;
    for (i, n) in g.nodes.iter().enumerate() {
        if i > 0 {
            w.write_all(b",")?;
        }
        serde_json::to_writer(&mut *w, &node_props(n, fmt))?;
    }
    w.write_all(b"],\"edges\":[")?;
    for (i, e) in g.edges.iter().enumerate() {
        if i > 0 {
            w.write_all(b",")?;
        }
        serde_json::to_writer(&mut *w, &edge_props(e, fmt))?;
    }
    w.write_all(b"]}\n")
}

/// Escapes a DOT double-quoted string: `\` and `"` are backslash-escaped,
/// newlines become `\n`, other control characters are dropped.
pub fn dot_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Undirected DOT graph; ids quoted, labels are names. When any node has a
/// fix, every node gets a pinned position (`pos="x,y!"` in points, see
/// [`super::layout`]) and the graph asks for neato, which keeps them; else
/// it asks for sfdp without overlaps. Either way `dot -Tsvg` draws it with
/// the engine the graph names (the `layout` attribute), and with positions
/// `neato -n2 -Tsvg` draws it without any layout work.
pub fn write_dot(g: &Graph, w: &mut dyn Write, fmt: &dyn Fn(i64) -> String) -> io::Result<()> {
    writeln!(w, "graph corescope {{")?;
    let positions = super::layout::positions(g);
    if positions.is_some() {
        writeln!(
            w,
            "  graph [layout=neato, inputscale=72, overlap=true, splines=false, outputorder=edgesfirst];"
        )?;
    } else {
        writeln!(
            w,
            "  graph [layout=sfdp, overlap=prism, splines=false, outputorder=edgesfirst];"
        )?;
    }
    writeln!(
        w,
        "  node [shape=box, style=rounded, fontsize=10, margin=\"0.04,0.02\", width=0, height=0];"
    )?;
    writeln!(w, "  edge [color=\"#00000060\"];")?;
    for (i, n) in g.nodes.iter().enumerate() {
        write!(
            w,
            "  \"{}\" [label=\"{}\"",
            dot_escape(&n.id),
            dot_escape(&n.label())
        )?;
        if let Some((x, y, placed)) = positions.as_ref().and_then(|p| p.get(i)) {
            write!(w, ", pos=\"{x:.1},{y:.1}!\"")?;
            if *placed != super::layout::Placed::Geo {
                write!(w, ", style=\"rounded,dashed\"")?;
            }
        }
        if let Some(r) = &n.role {
            write!(w, ", role=\"{}\"", dot_escape(r))?;
        }
        if let Some((lon, lat)) = n.position() {
            write!(w, ", lat=\"{lat}\", lon=\"{lon}\"")?;
        }
        if n.is_observer {
            write!(w, ", is_observer=\"true\"")?;
        }
        if n.inactive {
            write!(w, ", inactive=\"true\"")?;
        }
        writeln!(w, "];")?;
    }
    for e in &g.edges {
        write!(
            w,
            "  \"{}\" -- \"{}\" [weight={}, count={}",
            dot_escape(&e.source),
            dot_escape(&e.target),
            e.count.max(1),
            e.count
        )?;
        if let Some(t) = e.last_seen {
            write!(w, ", last_seen=\"{}\"", fmt(t))?;
        }
        writeln!(w, "];")?;
    }
    writeln!(w, "}}")
}

/// A CSV table on `w`: the header, then one record per item of `rows`.
fn write_csv<I, R>(w: &mut dyn Write, header: &[&str], rows: I) -> io::Result<()>
where
    I: IntoIterator<Item = R>,
    R: IntoIterator,
    R::Item: AsRef<[u8]>,
{
    let mut c = csv::Writer::from_writer(w);
    c.write_record(header).map_err(io::Error::other)?;
    for r in rows {
        c.write_record(r).map_err(io::Error::other)?;
    }
    c.flush()
}

/// Edges as CSV: `source,target,count,last_seen`.
pub fn write_edges_csv(
    g: &Graph,
    w: &mut dyn Write,
    fmt: &dyn Fn(i64) -> String,
) -> io::Result<()> {
    write_csv(
        w,
        &["source", "target", "count", "last_seen"],
        g.edges.iter().map(|e| {
            [
                e.source.to_string(),
                e.target.to_string(),
                e.count.to_string(),
                e.last_seen.map(fmt).unwrap_or_default(),
            ]
        }),
    )
}

/// Nodes as CSV: `id,name,role,lat,lon,last_seen,is_observer,inactive,known`.
pub fn write_nodes_csv(
    g: &Graph,
    w: &mut dyn Write,
    fmt: &dyn Fn(i64) -> String,
) -> io::Result<()> {
    let f = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
    write_csv(
        w,
        &[
            "id",
            "name",
            "role",
            "lat",
            "lon",
            "last_seen",
            "is_observer",
            "inactive",
            "known",
        ],
        g.nodes.iter().map(|n| {
            [
                n.id.clone(),
                n.name.clone().unwrap_or_default(),
                n.role.clone().unwrap_or_default(),
                f(n.lat),
                f(n.lon),
                n.last_seen.map(fmt).unwrap_or_default(),
                n.is_observer.to_string(),
                n.inactive.to_string(),
                n.known.to_string(),
            ]
        }),
    )
}

/// Escapes XML text and attribute values; drops characters XML 1.0 forbids.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

/// GraphML with typed keys (undirected).
pub fn write_graphml(g: &Graph, w: &mut dyn Write, fmt: &dyn Fn(i64) -> String) -> io::Result<()> {
    writeln!(w, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>")?;
    writeln!(
        w,
        "<graphml xmlns=\"http://graphml.graphdrawing.org/xmlns\" \
         xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
         xsi:schemaLocation=\"http://graphml.graphdrawing.org/xmlns \
         http://graphml.graphdrawing.org/xmlns/1.0/graphml.xsd\">"
    )?;
    let keys: [(&str, &str, &str); 11] = [
        ("name", "node", "string"),
        ("role", "node", "string"),
        ("lat", "node", "double"),
        ("lon", "node", "double"),
        ("last_seen", "node", "string"),
        ("is_observer", "node", "boolean"),
        ("inactive", "node", "boolean"),
        ("known", "node", "boolean"),
        ("count", "edge", "long"),
        ("edge_last_seen", "edge", "string"),
        ("label", "node", "string"),
    ];
    for (id, dom, ty) in keys {
        let name = if id == "edge_last_seen" {
            "last_seen"
        } else {
            id
        };
        writeln!(
            w,
            "  <key id=\"{id}\" for=\"{dom}\" attr.name=\"{name}\" attr.type=\"{ty}\"/>"
        )?;
    }
    writeln!(w, "  <graph id=\"corescope\" edgedefault=\"undirected\">")?;
    for n in &g.nodes {
        writeln!(w, "    <node id=\"{}\">", xml_escape(&n.id))?;
        writeln!(
            w,
            "      <data key=\"label\">{}</data>",
            xml_escape(&n.label())
        )?;
        if let Some(v) = &n.name {
            writeln!(w, "      <data key=\"name\">{}</data>", xml_escape(v))?;
        }
        if let Some(v) = &n.role {
            writeln!(w, "      <data key=\"role\">{}</data>", xml_escape(v))?;
        }
        if let Some(v) = n.lat.filter(|x| x.is_finite()) {
            writeln!(w, "      <data key=\"lat\">{v}</data>")?;
        }
        if let Some(v) = n.lon.filter(|x| x.is_finite()) {
            writeln!(w, "      <data key=\"lon\">{v}</data>")?;
        }
        if let Some(t) = n.last_seen {
            writeln!(w, "      <data key=\"last_seen\">{}</data>", fmt(t))?;
        }
        writeln!(
            w,
            "      <data key=\"is_observer\">{}</data>",
            n.is_observer
        )?;
        writeln!(w, "      <data key=\"inactive\">{}</data>", n.inactive)?;
        writeln!(w, "      <data key=\"known\">{}</data>", n.known)?;
        writeln!(w, "    </node>")?;
    }
    for e in &g.edges {
        writeln!(
            w,
            "    <edge source=\"{}\" target=\"{}\">",
            xml_escape(&e.source),
            xml_escape(&e.target)
        )?;
        writeln!(w, "      <data key=\"count\">{}</data>", e.count)?;
        if let Some(t) = e.last_seen {
            writeln!(w, "      <data key=\"edge_last_seen\">{}</data>", fmt(t))?;
        }
        writeln!(w, "    </edge>")?;
    }
    writeln!(w, "  </graph>")?;
    writeln!(w, "</graphml>")
}

/// RFC 7946 FeatureCollection: nodes as Points `[lon, lat]` (null geometry
/// without a real fix), edges as LineStrings when both ends have a position
/// (null geometry otherwise). Features carry `"kind": "node" | "edge"`.
pub fn write_geojson(g: &Graph, w: &mut dyn Write, fmt: &dyn Fn(i64) -> String) -> io::Result<()> {
    let pos: HashMap<&str, (f64, f64)> = g
        .nodes
        .iter()
        .filter_map(|n| n.position().map(|p| (n.id.as_str(), p)))
        .collect();
    // Streamed feature by feature.
    w.write_all(b"{\"type\":\"FeatureCollection\",\"features\":[")?;
    let mut first = true;
    let mut sep = |w: &mut dyn Write| -> io::Result<()> {
        if !std::mem::take(&mut first) {
            w.write_all(b",")?;
        }
        Ok(())
    };
    for n in &g.nodes {
        let mut props = node_props(n, fmt);
        props.insert("kind".into(), Value::String("node".into()));
        let geometry = match n.position() {
            Some((lon, lat)) => json!({"type": "Point", "coordinates": [lon, lat]}),
            None => Value::Null,
        };
        sep(w)?;
        serde_json::to_writer(
            &mut *w,
            &json!({"type": "Feature", "id": n.id, "geometry": geometry, "properties": props}),
        )?;
    }
    for e in &g.edges {
        let mut props = edge_props(e, fmt);
        props.insert("kind".into(), Value::String("edge".into()));
        let geometry = match (pos.get(&*e.source), pos.get(&*e.target)) {
            (Some(a), Some(b)) => {
                json!({"type": "LineString", "coordinates": [[a.0, a.1], [b.0, b.1]]})
            }
            _ => Value::Null,
        };
        sep(w)?;
        serde_json::to_writer(
            &mut *w,
            &json!({"type": "Feature", "geometry": geometry, "properties": props}),
        )?;
    }
    w.write_all(b"]}\n")
}

/// Writes `g` in format `f`.
pub fn write(
    g: &Graph,
    f: Format,
    w: &mut dyn Write,
    fmt: &dyn Fn(i64) -> String,
) -> io::Result<()> {
    match f {
        Format::Json => write_json(g, w, fmt),
        Format::Dot => write_dot(g, w, fmt),
        Format::Csv => write_edges_csv(g, w, fmt),
        Format::Graphml => write_graphml(g, w, fmt),
        Format::Geojson => write_geojson(g, w, fmt),
    }
}
