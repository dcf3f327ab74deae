//! The reports of `graph dump` and `graph stats`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::graph::{NormalizeReport, Stats};
use crate::report::{self, Report};

/// What the normaliser did with the stored rows (`stored_rows`).
#[derive(Debug, Serialize)]
pub struct StoredRows {
    pub rows: u64,
    pub empty_endpoint: u64,
    pub self_loop: u64,
    pub null_count: u64,
    pub merged_duplicates: u64,
}

impl From<&NormalizeReport> for StoredRows {
    fn from(r: &NormalizeReport) -> StoredRows {
        StoredRows {
            rows: r.rows,
            empty_endpoint: r.skipped_empty_endpoint,
            self_loop: r.skipped_self_loop,
            null_count: r.skipped_null_count,
            merged_duplicates: r.merged_duplicates,
        }
    }
}

impl StoredRows {
    /// The human line about skipped and merged rows, when there were any.
    fn line(&self) -> Option<String> {
        let skipped = self.empty_endpoint + self.self_loop + self.null_count;
        (skipped > 0 || self.merged_duplicates > 0).then(|| format!(
            "stored rows: {} read, {} skipped (empty endpoint {}, self-loop {}, NULL count {}), {} merged case/order duplicates\n",
            self.rows, skipped, self.empty_endpoint, self.self_loop, self.null_count, self.merged_duplicates
        ))
    }
}

/// The report of `graph dump` (the graph itself goes to `--output` or
/// stdout).
#[derive(Debug, Serialize)]
pub struct DumpReport {
    pub format: String,
    pub nodes: usize,
    pub edges: usize,
    pub output: Option<String>,
    pub nodes_csv: Option<String>,
    pub stored_rows: StoredRows,
}

impl Report for DumpReport {
    /// A line when the graph went to a file; nothing when it went to stdout.
    fn human(&self) -> String {
        self.output.as_ref().map_or_else(String::new, |p| {
            format!(
                "graph dump: {} nodes, {} edges written to {p} ({})\n",
                self.nodes, self.edges, self.format
            )
        })
    }
}

/// A hub in the JSON: the node's name or null (the human table shows the
/// label).
#[derive(Debug, Serialize)]
pub struct Hub {
    pub id: String,
    pub name: Option<String>,
    pub degree: usize,
    #[serde(skip)]
    pub label: String,
}

/// The report of `graph stats`: the graph's statistics and the hubs by
/// name.
#[derive(Debug, Serialize)]
pub struct StatsReport {
    #[serde(flatten)]
    pub stats: Stats,
    pub hubs: Vec<Hub>,
    pub now: String,
    pub stored_rows: StoredRows,
}

impl StatsReport {
    /// The report of `s`; `name_of` gives a hub's name.
    pub fn new(
        s: Stats,
        name_of: impl Fn(&str) -> Option<String>,
        now: String,
        stored_rows: StoredRows,
    ) -> StatsReport {
        let hubs = s
            .hubs
            .iter()
            .map(|(id, label, degree)| Hub {
                name: name_of(id),
                id: id.clone(),
                degree: *degree,
                label: label.clone(),
            })
            .collect();
        StatsReport {
            stats: s,
            hubs,
            now,
            stored_rows,
        }
    }

    /// The hub, age and degree tables.
    fn tables(&self) -> String {
        let mut t = report::table(&["hub", "name", "degree"]);
        for h in &self.hubs {
            t.add_row(vec![
                h.id.chars().take(16).collect::<String>(),
                h.label.clone(),
                h.degree.to_string(),
            ]);
        }
        let mut a = report::table(&["last seen", "edges"]);
        for (k, v) in &self.stats.age_buckets {
            a.add_row(vec![(*k).to_string(), v.to_string()]);
        }
        // Human table in power-of-two ranges (JSON has every degree).
        let mut d = report::table(&["degree", "nodes"]);
        for (label, n) in degree_ranges(&self.stats.degree_distribution) {
            d.add_row(vec![label, n.to_string()]);
        }
        format!("{t}\n{a}\n{d}\n")
    }
}

impl Report for StatsReport {
    fn human(&self) -> String {
        let s = &self.stats;
        let mut h = format!(
            "graph: {} nodes, {} edges, {} connected components (largest: {})\n",
            s.nodes,
            s.edges,
            s.components,
            s.largest_components
                .iter()
                .map(std::string::ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        h.push_str(&format!(
            "degree: max {}, mean {:.2}; {} observers, {} inactive nodes, {} unknown nodes ({} edges touch one)\n",
            s.max_degree, s.mean_degree, s.observers, s.inactive_nodes, s.unknown_nodes, s.edges_with_unknown_endpoint
        ));
        if let Some(l) = self.stored_rows.line() {
            h.push_str(&l);
        }
        h.push_str(&self.tables());
        h
    }
}

/// Degree distribution folded into ranges 0, 1, 2, 3-4, 5-8, 9-16, ...
fn degree_ranges(dist: &BTreeMap<usize, usize>) -> Vec<(String, usize)> {
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn ages_and_degrees_serialise_as_objects() {
        let r = StatsReport::new(
            Stats {
                nodes: 2,
                edges: 1,
                components: 1,
                largest_components: vec![2],
                degree_distribution: BTreeMap::from([(1, 2)]),
                max_degree: 1,
                mean_degree: 1.0 / 3.0,
                hubs: vec![("ab".into(), "A (ab)".into(), 1)],
                age_buckets: vec![("<1h", 1), ("unknown", 0)],
                unknown_nodes: 0,
                edges_with_unknown_endpoint: 0,
                observers: 0,
                inactive_nodes: 0,
            },
            |_| Some("A".into()),
            "1970-01-01T00:00:00Z".into(),
            StoredRows::from(&NormalizeReport::default()),
        );
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(
            j["edges_by_age"],
            serde_json::json!({"<1h": 1, "unknown": 0})
        );
        assert_eq!(j["degree_distribution"], serde_json::json!({"1": 2}));
        assert_eq!(j["mean_degree"], serde_json::json!(0.33));
        assert_eq!(
            j["hubs"],
            serde_json::json!([{"id": "ab", "name": "A", "degree": 1}])
        );
        assert!(r.human().contains("mean 0.33;"));
    }
}
