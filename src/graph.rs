//! Pure neighbor-graph model for `graph dump` / `graph stats`: normalisation
//! of `neighbor_edges` rows, node attributes, filters, statistics and the
//! five output formats. No SQL here; `commands/graph.rs` loads the rows.
//!
//! Normalisation: endpoints are lower-cased and
//! put in canonical order; rows with an empty endpoint, a self-loop or a NULL
//! count are skipped (and counted); rows that map to the same pair are merged
//! (counts summed, latest `last_seen` compared as instants). `last_seen` is
//! rendered as RFC 3339 `YYYY-MM-DDTHH:MM:SSZ` (NULL/unparseable → null).
//!
//! Order is deterministic: nodes by id, edges by (source, target).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io::{self, Write};
use std::rc::Rc;

use crate::edges::FnvMap;
use crate::keys::{canonical_pair, PairReject};

use serde_json::{json, Map, Value};

/// One `neighbor_edges` row as stored.
#[derive(Debug, Clone, Default)]
pub struct RawEdge {
    pub node_a: Option<String>,
    pub node_b: Option<String>,
    pub count: Option<i64>,
    pub last_seen: Option<String>,
}

/// A normalised, merged edge.
#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    /// Node ids are shared between edges (`Rc<str>`): a million-edge graph
    /// holds each id once.
    pub source: Rc<str>,
    pub target: Rc<str>,
    pub count: i64,
    /// Epoch seconds of `last_seen` (None when NULL or unparseable).
    pub last_seen: Option<i64>,
}

/// What normalisation did to the stored rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NormalizeReport {
    pub rows: u64,
    pub skipped_empty_endpoint: u64,
    pub skipped_self_loop: u64,
    pub skipped_null_count: u64,
    pub merged_duplicates: u64,
}

/// A canonical (smaller, larger) pair of shared node ids.
type Pair = (Rc<str>, Rc<str>);

/// Lower-cases, canonicalises, filters and merges stored rows.
/// `parse` turns a stored time into epoch seconds.
pub fn normalize_edges<I>(
    rows: I,
    parse: &dyn Fn(&str) -> Option<i64>,
) -> (Vec<Edge>, NormalizeReport)
where
    I: IntoIterator<Item = RawEdge>,
{
    let mut rep = NormalizeReport::default();
    let mut ids: FnvMap<String, Rc<str>> = FnvMap::default();
    let mut intern = |s: String| -> Rc<str> {
        if let Some(r) = ids.get(&s) {
            return r.clone();
        }
        let r: Rc<str> = Rc::from(s.as_str());
        ids.insert(s, r.clone());
        r
    };
    let mut map: FnvMap<Pair, (i64, Option<i64>)> = FnvMap::default();
    for r in rows {
        rep.rows += 1;
        let a = r.node_a.unwrap_or_default().trim().to_ascii_lowercase();
        let b = r.node_b.unwrap_or_default().trim().to_ascii_lowercase();
        let (a, b) = match canonical_pair(a, b) {
            Ok(p) => p,
            Err(PairReject::EmptyEndpoint) => {
                rep.skipped_empty_endpoint += 1;
                continue;
            }
            Err(PairReject::SelfLoop) => {
                rep.skipped_self_loop += 1;
                continue;
            }
        };
        let Some(count) = r.count else {
            rep.skipped_null_count += 1;
            continue;
        };
        let ts = r.last_seen.as_deref().and_then(parse);
        let key = (intern(a), intern(b));
        match map.get_mut(&key) {
            Some((c, t)) => {
                rep.merged_duplicates += 1;
                *c = c.saturating_add(count);
                *t = max_opt(*t, ts);
            }
            None => {
                map.insert(key, (count, ts));
            }
        }
    }
    let mut edges: Vec<Edge> = map
        .into_iter()
        .map(|((source, target), (count, last_seen))| Edge {
            source,
            target,
            count,
            last_seen,
        })
        .collect();
    edges.sort_unstable_by(|x, y| (&x.source, &x.target).cmp(&(&y.source, &y.target)));
    (edges, rep)
}

fn max_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// A row of `nodes` / `inactive_nodes`.
#[derive(Debug, Clone, Default)]
pub struct NodeRow {
    pub name: Option<String>,
    pub role: Option<String>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub last_seen: Option<String>,
}

/// Everything known about node ids, keyed by lower-case id.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    pub nodes: HashMap<String, NodeRow>,
    pub inactive: HashMap<String, NodeRow>,
    /// observer id (lower-case) → observer name.
    pub observers: HashMap<String, Option<String>>,
}

/// A graph node with its attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub id: String,
    pub name: Option<String>,
    pub role: Option<String>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    /// Epoch seconds of the node's `last_seen`.
    pub last_seen: Option<i64>,
    pub is_observer: bool,
    /// Known only from `inactive_nodes`.
    pub inactive: bool,
    /// Present in `nodes` or `inactive_nodes`.
    pub known: bool,
}

impl Node {
    /// `(lon, lat)` when the node has a real fix: both set, in range, and not
    /// (0, 0), which means "no fix".
    pub fn position(&self) -> Option<(f64, f64)> {
        let (lat, lon) = (self.lat?, self.lon?);
        if !lat.is_finite() || !lon.is_finite() {
            return None;
        }
        if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
            return None;
        }
        if lat == 0.0 && lon == 0.0 {
            return None;
        }
        Some((lon, lat))
    }

    /// Display label: name, else observer name, else the first 8 id chars.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) if !n.trim().is_empty() => n.clone(),
            _ => self.id.chars().take(8).collect(),
        }
    }
}

impl Directory {
    /// Attributes of `id` (lower-case). `nodes` wins over `inactive_nodes`;
    /// the observer name fills a missing node name.
    pub fn node(&self, id: &str, parse: &dyn Fn(&str) -> Option<i64>) -> Node {
        let (row, inactive) = match self.nodes.get(id) {
            Some(r) => (Some(r), false),
            None => match self.inactive.get(id) {
                Some(r) => (Some(r), true),
                None => (None, false),
            },
        };
        let observer = self.observers.get(id);
        let name = row
            .and_then(|r| r.name.clone())
            .filter(|n| !n.is_empty())
            .or_else(|| observer.cloned().flatten().filter(|n| !n.is_empty()));
        Node {
            id: id.to_string(),
            name,
            role: row.and_then(|r| r.role.clone()),
            lat: row.and_then(|r| r.lat),
            lon: row.and_then(|r| r.lon),
            last_seen: row.and_then(|r| r.last_seen.as_deref()).and_then(parse),
            is_observer: observer.is_some(),
            inactive,
            known: row.is_some(),
        }
    }
}

/// Nodes and edges, both sorted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
}

impl Graph {
    /// The graph of `edges` (sorted by (source, target)) with the endpoint nodes.
    pub fn from_edges(
        mut edges: Vec<Edge>,
        dir: &Directory,
        parse: &dyn Fn(&str) -> Option<i64>,
    ) -> Graph {
        edges.sort_by(|x, y| (&x.source, &x.target).cmp(&(&y.source, &y.target)));
        let mut ids: Vec<&str> = edges
            .iter()
            .flat_map(|e| [&*e.source, &*e.target])
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let nodes = ids.into_iter().map(|id| dir.node(id, parse)).collect();
        Graph { nodes, edges }
    }
}

/// Why a `--node` selection failed.
#[derive(Debug, Clone, PartialEq)]
pub enum SelectError {
    /// The prefix is empty or not hexadecimal.
    Invalid(String),
    /// No node of the graph matches.
    NoMatch(String),
    /// Several nodes match (up to 10 listed).
    Ambiguous(String, Vec<String>),
}

impl std::fmt::Display for SelectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SelectError::Invalid(p) => write!(f, "--node {p:?} is not a hex key or prefix"),
            SelectError::NoMatch(p) => {
                write!(f, "--node {p}: no node of the (filtered) graph matches")
            }
            SelectError::Ambiguous(p, ids) => write!(
                f,
                "--node {p} matches several nodes ({}{}); give a longer prefix",
                ids.join(", "),
                if ids.len() >= 10 { ", ..." } else { "" }
            ),
        }
    }
}

/// Edge filters, applied in this order: min count, since, neighbourhood.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub min_count: Option<i64>,
    /// Keep edges whose `last_seen` is at or after this epoch (NULL dropped).
    pub since: Option<i64>,
    /// Key or prefix of the centre node, and the number of hops around it.
    pub node: Option<(String, usize)>,
}

/// Applies `f` to `edges`.
pub fn filter_edges(edges: Vec<Edge>, f: &Filter) -> Result<Vec<Edge>, SelectError> {
    let mut edges: Vec<Edge> = edges
        .into_iter()
        .filter(|e| f.min_count.map_or(true, |m| e.count >= m))
        .filter(|e| match f.since {
            None => true,
            Some(s) => e.last_seen.is_some_and(|t| t >= s),
        })
        .collect();
    if let Some((prefix, hops)) = &f.node {
        let p = prefix.trim().to_ascii_lowercase();
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(SelectError::Invalid(prefix.clone()));
        }
        let mut matches: Vec<&str> = edges
            .iter()
            .flat_map(|e| [&*e.source, &*e.target])
            .filter(|id| id.starts_with(&p))
            .collect();
        matches.sort_unstable();
        matches.dedup();
        // An exact key wins over longer keys sharing it as a prefix.
        let centre = if matches.contains(&p.as_str()) {
            p.clone()
        } else {
            match matches.as_slice() {
                [] => return Err(SelectError::NoMatch(prefix.clone())),
                [one] => one.to_string(),
                many => {
                    return Err(SelectError::Ambiguous(
                        prefix.clone(),
                        many.iter().take(10).map(|s| s.to_string()).collect(),
                    ))
                }
            }
        };
        let keep = neighbourhood(&edges, &centre, *hops);
        edges.retain(|e| keep.contains(&*e.source) && keep.contains(&*e.target));
    }
    Ok(edges)
}

fn adjacency(edges: &[Edge]) -> HashMap<&str, Vec<&str>> {
    let mut adj: HashMap<&str, Vec<&str>> = HashMap::new();
    for e in edges {
        adj.entry(&e.source).or_default().push(&e.target);
        adj.entry(&e.target).or_default().push(&e.source);
    }
    adj
}

/// Ids within `hops` hops of `centre` (including it).
pub fn neighbourhood(edges: &[Edge], centre: &str, hops: usize) -> HashSet<String> {
    let adj = adjacency(edges);
    let mut seen: HashSet<String> = HashSet::new();
    seen.insert(centre.to_string());
    let mut queue = VecDeque::from([(centre, 0usize)]);
    while let Some((id, d)) = queue.pop_front() {
        if d >= hops {
            continue;
        }
        for &n in adj.get(id).map(|v| v.as_slice()).unwrap_or(&[]) {
            if seen.insert(n.to_string()) {
                queue.push_back((n, d + 1));
            }
        }
    }
    seen
}

// ---------------------------------------------------------------- stats

/// Statistics of a graph (`graph stats`).
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    pub nodes: usize,
    pub edges: usize,
    pub components: usize,
    /// Sizes (node counts) of the largest components, largest first (≤ 10).
    pub largest_components: Vec<usize>,
    /// degree → number of nodes with that degree.
    pub degree_distribution: BTreeMap<usize, usize>,
    pub max_degree: usize,
    pub mean_degree: f64,
    /// Top hubs: (id, label, degree), by degree desc then id (≤ `top`).
    pub hubs: Vec<(String, String, usize)>,
    /// (bucket label, edges) — `last_seen` age relative to `now`.
    pub age_buckets: Vec<(&'static str, usize)>,
    /// Nodes in none of nodes / inactive_nodes / observers.
    pub unknown_nodes: usize,
    /// Edges with at least one such endpoint.
    pub edges_with_unknown_endpoint: usize,
    pub observers: usize,
    pub inactive_nodes: usize,
}

/// Age bucket labels, in order.
pub const AGE_BUCKETS: [&str; 6] = ["<1h", "1h-24h", "1d-7d", "7d-30d", ">30d", "unknown"];

fn age_bucket(last_seen: Option<i64>, now: i64) -> usize {
    match last_seen {
        None => 5,
        Some(t) => {
            let age = now.saturating_sub(t);
            if age < 3600 {
                0
            } else if age < 86_400 {
                1
            } else if age < 7 * 86_400 {
                2
            } else if age < 30 * 86_400 {
                3
            } else {
                4
            }
        }
    }
}

/// Computes [`Stats`]; `now` is epoch seconds, `top` the number of hubs.
pub fn stats(g: &Graph, now: i64, top: usize) -> Stats {
    let adj = adjacency(&g.edges);
    let degree = |id: &str| adj.get(id).map_or(0, |v| v.len());
    let mut degree_distribution = BTreeMap::new();
    for n in &g.nodes {
        *degree_distribution.entry(degree(&n.id)).or_insert(0) += 1;
    }
    let max_degree = degree_distribution.keys().next_back().copied().unwrap_or(0);
    let mean_degree = if g.nodes.is_empty() {
        0.0
    } else {
        2.0 * g.edges.len() as f64 / g.nodes.len() as f64
    };
    // Connected components (BFS, visiting nodes in id order).
    let mut seen: HashSet<&str> = HashSet::new();
    let mut sizes = Vec::new();
    for n in &g.nodes {
        if !seen.insert(n.id.as_str()) {
            continue;
        }
        let mut size = 0usize;
        let mut queue = VecDeque::from([n.id.as_str()]);
        while let Some(id) = queue.pop_front() {
            size += 1;
            for &m in adj.get(id).map(|v| v.as_slice()).unwrap_or(&[]) {
                if seen.insert(m) {
                    queue.push_back(m);
                }
            }
        }
        sizes.push(size);
    }
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    let components = sizes.len();
    sizes.truncate(10);
    let mut hubs: Vec<(String, String, usize)> = g
        .nodes
        .iter()
        .map(|n| (n.id.clone(), n.label(), degree(&n.id)))
        .collect();
    hubs.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
    hubs.truncate(top);
    let mut ages = [0usize; 6];
    for e in &g.edges {
        ages[age_bucket(e.last_seen, now)] += 1;
    }
    let unknown: HashSet<&str> = g
        .nodes
        .iter()
        .filter(|n| !n.known && !n.is_observer)
        .map(|n| n.id.as_str())
        .collect();
    let edges_with_unknown_endpoint = g
        .edges
        .iter()
        .filter(|e| unknown.contains(&*e.source) || unknown.contains(&*e.target))
        .count();
    Stats {
        nodes: g.nodes.len(),
        edges: g.edges.len(),
        components,
        largest_components: sizes,
        degree_distribution,
        max_degree,
        mean_degree,
        hubs,
        age_buckets: AGE_BUCKETS.iter().copied().zip(ages).collect(),
        unknown_nodes: unknown.len(),
        edges_with_unknown_endpoint,
        observers: g.nodes.iter().filter(|n| n.is_observer).count(),
        inactive_nodes: g.nodes.iter().filter(|n| n.inactive).count(),
    }
}

// ---------------------------------------------------------------- formats

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

/// Undirected DOT graph; ids quoted, labels are names.
pub fn write_dot(g: &Graph, w: &mut dyn Write, fmt: &dyn Fn(i64) -> String) -> io::Result<()> {
    writeln!(w, "graph corescope {{")?;
    for n in &g.nodes {
        write!(
            w,
            "  \"{}\" [label=\"{}\"",
            dot_escape(&n.id),
            dot_escape(&n.label())
        )?;
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

fn csv_err(e: csv::Error) -> io::Error {
    io::Error::other(e)
}

/// Edges as CSV: `source,target,count,last_seen`.
pub fn write_edges_csv(
    g: &Graph,
    w: &mut dyn Write,
    fmt: &dyn Fn(i64) -> String,
) -> io::Result<()> {
    let mut c = csv::Writer::from_writer(w);
    c.write_record(["source", "target", "count", "last_seen"])
        .map_err(csv_err)?;
    for e in &g.edges {
        let ls = e.last_seen.map(fmt).unwrap_or_default();
        c.write_record([&*e.source, &*e.target, &e.count.to_string(), &ls])
            .map_err(csv_err)?;
    }
    c.flush()
}

/// Nodes as CSV: `id,name,role,lat,lon,last_seen,is_observer,inactive,known`.
pub fn write_nodes_csv(
    g: &Graph,
    w: &mut dyn Write,
    fmt: &dyn Fn(i64) -> String,
) -> io::Result<()> {
    let mut c = csv::Writer::from_writer(w);
    c.write_record([
        "id",
        "name",
        "role",
        "lat",
        "lon",
        "last_seen",
        "is_observer",
        "inactive",
        "known",
    ])
    .map_err(csv_err)?;
    for n in &g.nodes {
        let f = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
        c.write_record([
            n.id.clone(),
            n.name.clone().unwrap_or_default(),
            n.role.clone().unwrap_or_default(),
            f(n.lat),
            f(n.lon),
            n.last_seen.map(fmt).unwrap_or_default(),
            n.is_observer.to_string(),
            n.inactive.to_string(),
            n.known.to_string(),
        ])
        .map_err(csv_err)?;
    }
    c.flush()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Option<i64> {
        // Test stand-in: integer text or "T<n>".
        s.strip_prefix('T').unwrap_or(s).parse().ok()
    }

    fn fmt(t: i64) -> String {
        format!("T{t}")
    }

    fn raw(a: &str, b: &str, c: Option<i64>, t: Option<&str>) -> RawEdge {
        RawEdge {
            node_a: Some(a.into()),
            node_b: Some(b.into()),
            count: c,
            last_seen: t.map(Into::into),
        }
    }

    fn edge(a: &str, b: &str, c: i64, t: Option<i64>) -> Edge {
        Edge {
            source: a.into(),
            target: b.into(),
            count: c,
            last_seen: t,
        }
    }

    #[test]
    fn normalize_merges_skips_and_orders() {
        let rows = vec![
            raw("bb", "aa", Some(2), Some("10")),
            raw("AA", "BB", Some(3), Some("20")),
            raw("", "aa", Some(1), Some("5")),
            raw("cc", "CC", Some(1), None),
            raw("aa", "dd", None, None),
            raw("aa", "cc", Some(1), Some("junk")),
            RawEdge::default(),
        ];
        let (edges, rep) = normalize_edges(rows, &parse);
        assert_eq!(
            edges,
            vec![edge("aa", "bb", 5, Some(20)), edge("aa", "cc", 1, None)]
        );
        assert_eq!(
            rep,
            NormalizeReport {
                rows: 7,
                skipped_empty_endpoint: 2,
                skipped_self_loop: 1,
                skipped_null_count: 1,
                merged_duplicates: 1,
            }
        );
    }

    fn dir() -> Directory {
        let mut d = Directory::default();
        d.nodes.insert(
            "aa".into(),
            NodeRow {
                name: Some("Alpha \"A\" <&>".into()),
                role: Some("repeater".into()),
                lat: Some(37.5),
                lon: Some(-122.25),
                last_seen: Some("100".into()),
            },
        );
        d.inactive.insert(
            "bb".into(),
            NodeRow {
                name: Some("Bravo".into()),
                lat: Some(0.0),
                lon: Some(0.0),
                ..Default::default()
            },
        );
        d.inactive.insert(
            "aa".into(),
            NodeRow {
                name: Some("old alpha".into()),
                ..Default::default()
            },
        );
        d.observers.insert("cc".into(), Some("Obs\\C".into()));
        d.nodes.insert(
            "ee".into(),
            NodeRow {
                lat: Some(38.0),
                lon: Some(-121.0),
                ..Default::default()
            },
        );
        d
    }

    fn sample() -> Graph {
        let edges = vec![
            edge("aa", "bb", 5, Some(20)),
            edge("aa", "cc", 1, None),
            edge("aa", "ee", 2, Some(30)),
            edge("dd", "ff", 7, Some(40)),
        ];
        Graph::from_edges(edges, &dir(), &parse)
    }

    #[test]
    fn node_attributes() {
        let g = sample();
        let ids: Vec<&str> = g.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["aa", "bb", "cc", "dd", "ee", "ff"]);
        let a = &g.nodes[0];
        assert_eq!(a.name.as_deref(), Some("Alpha \"A\" <&>"));
        assert!(!a.inactive && a.known && !a.is_observer);
        assert_eq!(a.last_seen, Some(100));
        assert_eq!(a.position(), Some((-122.25, 37.5)));
        let b = &g.nodes[1];
        assert!(b.inactive && b.known);
        assert_eq!(b.position(), None, "(0,0) is no fix");
        let c = &g.nodes[2];
        assert!(c.is_observer && !c.known);
        assert_eq!(c.name.as_deref(), Some("Obs\\C"));
        let d = &g.nodes[3];
        assert!(!d.known && !d.is_observer);
        assert_eq!(d.label(), "dd");
    }

    #[test]
    fn filters() {
        let g = sample();
        let f = Filter {
            min_count: Some(2),
            ..Default::default()
        };
        let e = filter_edges(g.edges.clone(), &f).unwrap();
        assert_eq!(e.len(), 3);
        let f = Filter {
            since: Some(25),
            ..Default::default()
        };
        let e = filter_edges(g.edges.clone(), &f).unwrap();
        assert_eq!(
            e,
            vec![edge("aa", "ee", 2, Some(30)), edge("dd", "ff", 7, Some(40))]
        );
        let f = Filter {
            node: Some(("B".into(), 1)),
            ..Default::default()
        };
        let e = filter_edges(g.edges.clone(), &f).unwrap();
        assert_eq!(e, vec![edge("aa", "bb", 5, Some(20))]);
        let f = Filter {
            node: Some(("bb".into(), 2)),
            ..Default::default()
        };
        assert_eq!(filter_edges(g.edges.clone(), &f).unwrap().len(), 3);
        let f = Filter {
            node: Some(("bb".into(), 0)),
            ..Default::default()
        };
        assert!(filter_edges(g.edges.clone(), &f).unwrap().is_empty());
        let f = Filter {
            node: Some(("99".into(), 1)),
            ..Default::default()
        };
        assert_eq!(
            filter_edges(g.edges.clone(), &f),
            Err(SelectError::NoMatch("99".into()))
        );
        let f = Filter {
            node: Some(("zz".into(), 1)),
            ..Default::default()
        };
        assert!(matches!(
            filter_edges(g.edges.clone(), &f),
            Err(SelectError::Invalid(_))
        ));
        let edges = vec![edge("a1", "a2", 1, None), edge("a2", "b", 1, None)];
        let f = Filter {
            node: Some(("a".into(), 1)),
            ..Default::default()
        };
        assert!(matches!(
            filter_edges(edges.clone(), &f),
            Err(SelectError::Ambiguous(_, _))
        ));
        // Exact id wins even when it is a prefix of another id.
        let edges = vec![edge("ab", "abc", 1, None), edge("abc", "d0", 1, None)];
        let f = Filter {
            node: Some(("ab".into(), 1)),
            ..Default::default()
        };
        assert_eq!(filter_edges(edges, &f).unwrap().len(), 1);
    }

    #[test]
    fn stats_of_sample() {
        let g = sample();
        let s = stats(&g, 40 + 3600, 3);
        assert_eq!(s.nodes, 6);
        assert_eq!(s.edges, 4);
        assert_eq!(s.components, 2);
        assert_eq!(s.largest_components, vec![4, 2]);
        assert_eq!(s.degree_distribution, BTreeMap::from([(1, 5), (3, 1)]));
        assert_eq!(s.max_degree, 3);
        assert_eq!(s.hubs[0], ("aa".into(), "Alpha \"A\" <&>".into(), 3));
        assert_eq!(s.hubs[1].0, "bb");
        assert_eq!(s.hubs.len(), 3);
        assert_eq!(
            s.age_buckets,
            vec![
                ("<1h", 0),
                ("1h-24h", 3),
                ("1d-7d", 0),
                ("7d-30d", 0),
                (">30d", 0),
                ("unknown", 1)
            ]
        );
        assert_eq!(s.unknown_nodes, 2);
        assert_eq!(s.edges_with_unknown_endpoint, 1);
        assert_eq!(s.observers, 1);
        assert_eq!(s.inactive_nodes, 1);
        let empty = stats(&Graph::default(), 0, 10);
        assert_eq!((empty.nodes, empty.edges, empty.components), (0, 0, 0));
    }

    fn render(f: Format) -> String {
        let mut buf = Vec::new();
        write(&sample(), f, &mut buf, &fmt).unwrap();
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn json_format() {
        let v: Value = serde_json::from_str(&render(Format::Json)).unwrap();
        assert_eq!(v["nodes"].as_array().unwrap().len(), 6);
        assert_eq!(v["nodes"][0]["id"], "aa");
        assert_eq!(v["nodes"][0]["lat"], 37.5);
        assert_eq!(v["nodes"][3]["name"], Value::Null);
        assert_eq!(
            v["edges"][0],
            json!({"source":"aa","target":"bb","count":5,"last_seen":"T20"})
        );
        assert_eq!(v["edges"][1]["last_seen"], Value::Null);
    }

    #[test]
    fn dot_format_escapes() {
        assert_eq!(dot_escape("a\"b\\c\nd\x01"), "a\\\"b\\\\c\\nd");
        let s = render(Format::Dot);
        assert!(s.starts_with("graph corescope {\n"));
        assert!(s.contains("\"aa\" [label=\"Alpha \\\"A\\\" <&>\""));
        assert!(s.contains("\"cc\" [label=\"Obs\\\\C\""));
        assert!(s.contains("\"aa\" -- \"bb\" [weight=5, count=5, last_seen=\"T20\"];"));
        assert!(s.trim_end().ends_with('}'));
    }

    #[test]
    fn csv_formats() {
        let s = render(Format::Csv);
        let mut r = csv::Reader::from_reader(s.as_bytes());
        let rows: Vec<csv::StringRecord> = r.records().map(|x| x.unwrap()).collect();
        assert_eq!(rows.len(), 4);
        assert_eq!(
            &rows[0],
            &csv::StringRecord::from(vec!["aa", "bb", "5", "T20"])
        );
        assert_eq!(&rows[1][3], "");
        let mut buf = Vec::new();
        write_nodes_csv(&sample(), &mut buf, &fmt).unwrap();
        let mut r = csv::Reader::from_reader(buf.as_slice());
        let rows: Vec<csv::StringRecord> = r.records().map(|x| x.unwrap()).collect();
        assert_eq!(rows.len(), 6);
        assert_eq!(&rows[0][1], "Alpha \"A\" <&>");
        assert_eq!(&rows[1][7], "true");
    }

    #[test]
    fn graphml_format_parses() {
        use quick_xml::events::Event;
        let s = render(Format::Graphml);
        let mut reader = quick_xml::Reader::from_str(&s);
        let (mut nodes, mut edges, mut texts) = (0, 0, Vec::new());
        loop {
            match reader.read_event().unwrap() {
                Event::Eof => break,
                Event::Start(e) if e.name().as_ref() == b"node" => nodes += 1,
                Event::Start(e) if e.name().as_ref() == b"edge" => edges += 1,
                Event::Text(t) => texts.push(t.unescape().unwrap().into_owned()),
                _ => {}
            }
        }
        assert_eq!((nodes, edges), (6, 4));
        assert!(texts.iter().any(|t| t == "Alpha \"A\" <&>"));
        assert_eq!(xml_escape("a<b>&\"'\x02"), "a&lt;b&gt;&amp;&quot;&apos;");
    }

    #[test]
    fn geojson_format() {
        let v: Value = serde_json::from_str(&render(Format::Geojson)).unwrap();
        assert_eq!(v["type"], "FeatureCollection");
        let f = v["features"].as_array().unwrap();
        assert_eq!(f.len(), 10);
        assert_eq!(
            f[0]["geometry"],
            json!({"type":"Point","coordinates":[-122.25,37.5]})
        );
        assert_eq!(f[1]["geometry"], Value::Null, "(0,0) node");
        assert_eq!(f[3]["geometry"], Value::Null, "unknown node");
        // aa–ee: both positioned.
        let ae = f
            .iter()
            .find(|x| x["properties"]["target"] == "ee")
            .unwrap();
        assert_eq!(
            ae["geometry"],
            json!({"type":"LineString","coordinates":[[-122.25,37.5],[-121.0,38.0]]})
        );
        let ab = f
            .iter()
            .find(|x| x["properties"]["target"] == "bb")
            .unwrap();
        assert_eq!(ab["geometry"], Value::Null);
    }
}
