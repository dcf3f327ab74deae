//! Pure neighbor-graph model for `graph dump` / `graph stats`: normalisation
//! of `neighbor_edges` rows, node attributes, filters, statistics and the
//! five output formats. No SQL here; `commands/graph/load.rs` loads the rows.
//!
//! Normalisation: endpoints are lower-cased and
//! put in canonical order; rows with an empty endpoint, a self-loop or a NULL
//! count are skipped (and counted); rows that map to the same pair are merged
//! (counts summed, latest `last_seen` compared as instants). `last_seen` is
//! rendered as RFC 3339 `YYYY-MM-DDTHH:MM:SSZ` (NULL/unparseable → null).
//!
//! Order is deterministic: nodes by id, edges by (source, target).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::rc::Rc;

use crate::edges::FnvMap;
use crate::keys::{canonical_pair, fold_id, PairReject};

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
        let a = fold_id(r.node_a.as_deref().unwrap_or_default());
        let b = fold_id(r.node_b.as_deref().unwrap_or_default());
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
    /// No node has this name, and it is not a hex key or prefix.
    Invalid(String),
    /// No node of the graph matches.
    NoMatch(String),
    /// Several nodes match (up to 10 listed).
    Ambiguous(String, Vec<String>),
    /// Several nodes have this name (up to 10 listed as `name (key)`).
    AmbiguousName(String, Vec<String>),
}

impl std::fmt::Display for SelectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SelectError::Invalid(p) => write!(
                f,
                "--node {p:?}: no node, inactive node or observer has this name, and it is not a hex key or prefix"
            ),
            SelectError::NoMatch(p) => {
                write!(f, "--node {p}: no node has this name or a key starting with it")
            }
            SelectError::AmbiguousName(p, c) => write!(
                f,
                "--node {p:?}: several nodes have this name: {}{}; give a key prefix instead",
                c.join(", "),
                if c.len() >= 10 { ", ..." } else { "" }
            ),
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

/// Applies `f` to `edges`, `--node` resolved among the ids of `edges` only.
pub fn filter_edges(edges: Vec<Edge>, f: &Filter) -> Result<Vec<Edge>, SelectError> {
    filter_edges_in(edges, f, &Directory::default())
}

/// Applies `f` to `edges`; `--node` is resolved by [`resolve_node`] among
/// the ids of `edges` and of `dir`. A node that resolves but has no edge
/// left (after the other filters) gives no edges.
pub fn filter_edges_in(
    edges: Vec<Edge>,
    f: &Filter,
    dir: &Directory,
) -> Result<Vec<Edge>, SelectError> {
    let mut edges: Vec<Edge> = edges
        .into_iter()
        .filter(|e| f.min_count.map_or(true, |m| e.count >= m))
        .filter(|e| match f.since {
            None => true,
            Some(s) => e.last_seen.is_some_and(|t| t >= s),
        })
        .collect();
    if let Some((query, hops)) = &f.node {
        let centre = resolve_node(query, &edges, dir)?;
        let keep = neighbourhood(&edges, &centre, *hops);
        edges.retain(|e| keep.contains(&*e.source) && keep.contains(&*e.target));
    }
    Ok(edges)
}

/// The node `--node QUERY` means, in this order: a full key (any case);
/// else the node, inactive node or observer whose name is QUERY (exact,
/// case-insensitive; several: [`SelectError::AmbiguousName`]); else the one
/// key starting with QUERY (hex, any case) among the ids of `edges` and
/// `dir` (several: [`SelectError::Ambiguous`]).
pub fn resolve_node(query: &str, edges: &[Edge], dir: &Directory) -> Result<String, SelectError> {
    let p = query.trim().to_ascii_lowercase();
    let mut ids: Vec<&str> = edges
        .iter()
        .flat_map(|e| [&*e.source, &*e.target])
        .chain(dir.nodes.keys().map(String::as_str))
        .chain(dir.inactive.keys().map(String::as_str))
        .chain(dir.observers.keys().map(String::as_str))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    if !p.is_empty() && ids.binary_search(&p.as_str()).is_ok() {
        return Ok(p);
    }
    // Names: nodes and inactive nodes, then observers (an observer that is
    // also a node with the same name counts once).
    let wanted = query.trim().to_lowercase();
    let mut named: Vec<(String, &str)> = Vec::new();
    if !wanted.is_empty() {
        let rows = dir.nodes.iter().chain(dir.inactive.iter());
        for (id, row) in rows {
            if let Some(n) = &row.name {
                if n.trim().to_lowercase() == wanted {
                    named.push((n.clone(), id));
                }
            }
        }
        for (id, name) in &dir.observers {
            if let Some(n) = name {
                if n.trim().to_lowercase() == wanted {
                    named.push((n.clone(), id));
                }
            }
        }
    }
    named.sort_by(|a, b| a.1.cmp(b.1));
    named.dedup_by(|a, b| a.1 == b.1);
    match named.as_slice() {
        [(_, id)] => return Ok((*id).to_string()),
        [] => {}
        many => {
            return Err(SelectError::AmbiguousName(
                query.to_string(),
                many.iter()
                    .take(10)
                    .map(|(n, id)| format!("{n} ({id})"))
                    .collect(),
            ))
        }
    }
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(SelectError::Invalid(query.to_string()));
    }
    let matches: Vec<&str> = ids.into_iter().filter(|id| id.starts_with(&p)).collect();
    match matches.as_slice() {
        [] => Err(SelectError::NoMatch(query.to_string())),
        [one] => Ok((*one).to_string()),
        many => Err(SelectError::Ambiguous(
            query.to_string(),
            many.iter().take(10).map(|s| (*s).to_string()).collect(),
        )),
    }
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

/// Statistics of a graph (`graph stats`); serialised, its fields are keys
/// of the `graph stats` report (hubs are reported with their names).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Stats {
    pub nodes: usize,
    pub edges: usize,
    pub components: usize,
    /// Sizes (node counts) of the largest components, largest first (≤ 10).
    pub largest_components: Vec<usize>,
    /// degree → number of nodes with that degree.
    pub degree_distribution: BTreeMap<usize, usize>,
    pub max_degree: usize,
    /// Serialised rounded to two decimals.
    #[serde(serialize_with = "two_decimals")]
    pub mean_degree: f64,
    /// Top hubs: (id, label, degree), by degree desc then id (≤ `top`).
    #[serde(skip)]
    pub hubs: Vec<(String, String, usize)>,
    /// (bucket label, edges) — `last_seen` age relative to `now`;
    /// serialised as an object.
    #[serde(rename = "edges_by_age", serialize_with = "as_object")]
    pub age_buckets: Vec<(&'static str, usize)>,
    /// Nodes in none of nodes / inactive_nodes / observers.
    pub unknown_nodes: usize,
    /// Edges with at least one such endpoint.
    pub edges_with_unknown_endpoint: usize,
    pub observers: usize,
    pub inactive_nodes: usize,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's serialize_with passes a reference
fn two_decimals<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((v * 100.0).round() / 100.0)
}

fn as_object<S: serde::Serializer>(v: &[(&'static str, usize)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(v.iter().map(|(k, n)| (k, n)))
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

pub mod layout;
mod render;
#[cfg(test)]
mod tests;

pub use render::*;
