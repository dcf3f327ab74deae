//! Pure `observations.resolved_path` resolution with the ingestor's
//! rules (docs/backfill.md, "resolved-path").
//! No SQL here.
//!
//! API (for the `backfill resolved-path` task and anyone else):
//!
//! ```ignore
//! let idx = edges::PrefixIndex::new(node_keys);            // from nodes.public_key
//! let adj = resolve::adjacency_from_edges(edge_rows);      // from neighbor_edges (node_a, node_b)
//! let hops = edges::parse_path_json(path_json);
//! let origin = /* lower-cased from_pubkey for ADVERTs, "" otherwise */;
//! match resolve::resolve_path(&hops, origin, &adj, &idx) {
//!     None => /* store NULL (never '' and never [null, …]) */,
//!     Some(rp) => /* store resolve::to_json(&rp) */,
//! }
//! ```
//!
//! Rules, per hop left to right:
//! 1. candidates = keys with this prefix ([`PrefixIndex::candidates`]);
//! 2. none → null; exactly one → that key unless already excluded (then null);
//! 3. several → keep candidates not excluded and adjacent to the anchor;
//!    exactly one survivor → it, else null; no anchor → null.
//!
//! Anchor for hop 0 = the originator (only ADVERTs have one); for hop i = the
//! key resolved for hop i−1 (empty after an unresolved hop). Exclusion set =
//! originator plus every key already resolved on this path.
//! Result: `None` when there are no hops or every hop is null.

use std::collections::{HashMap, HashSet};

use crate::edges::PrefixIndex;
use crate::keys::{canonical_pair, fold_id};

/// Undirected adjacency snapshot: lower-case key → lower-case neighbours.
pub type Adjacency = HashMap<String, HashSet<String>>;

/// Builds the adjacency snapshot from `neighbor_edges` endpoint pairs:
/// endpoints lower-cased, empty endpoints and self-loops ignored.
pub fn adjacency_from_edges<I, A, B>(edges: I) -> Adjacency
where
    I: IntoIterator<Item = (A, B)>,
    A: AsRef<str>,
    B: AsRef<str>,
{
    let mut adj = Adjacency::new();
    for (a, b) in edges {
        let (a, b) = (fold_id(a.as_ref()), fold_id(b.as_ref()));
        if canonical_pair(&a, &b).is_err() {
            continue;
        }
        adj.entry(a.clone()).or_default().insert(b.clone());
        adj.entry(b).or_default().insert(a);
    }
    adj
}

fn adjacent(adj: &Adjacency, a: &str, b: &str) -> bool {
    adj.get(a).is_some_and(|n| n.contains(b))
}

/// Resolves every hop of a path. `originator` is the lower-case (any case is
/// accepted) ADVERT originator key, or `""` for other packets. Returns `None`
/// when `hops` is empty or no hop resolves; otherwise one entry per hop.
pub fn resolve_path(
    hops: &[String],
    originator: &str,
    adjacency: &Adjacency,
    idx: &PrefixIndex,
) -> Option<Vec<Option<String>>> {
    let origin = fold_id(originator);
    let mut excluded: HashSet<String> = HashSet::new();
    if !origin.is_empty() {
        excluded.insert(origin.clone());
    }
    let mut anchor: Option<String> = (!origin.is_empty()).then_some(origin);
    let mut out: Vec<Option<String>> = Vec::with_capacity(hops.len());
    for hop in hops {
        let cands = idx.candidates(hop);
        let chosen: Option<String> = match cands.as_slice() {
            [] => None,
            [one] => (!excluded.contains(*one)).then(|| one.to_string()),
            several => match &anchor {
                None => None,
                Some(a) => {
                    let mut survivors = several
                        .iter()
                        .filter(|c| !excluded.contains(**c) && adjacent(adjacency, a, c));
                    match (survivors.next(), survivors.next()) {
                        (Some(only), None) => Some(only.to_string()),
                        _ => None,
                    }
                }
            },
        };
        if let Some(k) = &chosen {
            excluded.insert(k.clone());
        }
        anchor = chosen.clone();
        out.push(chosen);
    }
    if out.iter().all(Option::is_none) {
        None
    } else {
        Some(out)
    }
}

/// Compact JSON array of keys and `null`s, the stored `resolved_path` form.
pub fn to_json(rp: &[Option<String>]) -> String {
    serde_json::Value::Array(
        rp.iter()
            .map(|k| match k {
                Some(k) => serde_json::Value::String(k.clone()),
                None => serde_json::Value::Null,
            })
            .collect(),
    )
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edges::testkeys::{key, keys};

    fn hops(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn empty_hops_is_none() {
        let idx = PrefixIndex::new([key("aa")]);
        assert_eq!(resolve_path(&[], "", &Adjacency::new(), &idx), None);
    }

    #[test]
    fn unique_hops_resolve_case_insensitively() {
        let a = key("aa");
        let b = key("bbcc");
        let idx = PrefixIndex::new([a.to_uppercase(), b.clone()]);
        let rp = resolve_path(&hops(&["AA", "BBCC", "EE"]), "", &Adjacency::new(), &idx);
        assert_eq!(rp, Some(vec![Some(a.clone()), Some(b.clone()), None]));
        assert_eq!(
            to_json(rp.as_deref().unwrap()),
            format!("[\"{a}\",\"{b}\",null]")
        );
    }

    #[test]
    fn all_null_is_none() {
        let idx = PrefixIndex::new([key("aa01"), key("aa02")]);
        assert_eq!(
            resolve_path(&hops(&["AA", "CC"]), "", &Adjacency::new(), &idx),
            None
        );
    }

    #[test]
    fn one_byte_collision_without_anchor_is_null() {
        let ([x, a1, _a2], idx) = keys(["11", "aa01", "aa02"]);
        let adj = adjacency_from_edges([(x.as_str(), a1.as_str())]);
        // No anchor for hop 0 (not an ADVERT): ambiguous hop stays null.
        let rp = resolve_path(&hops(&["AA", "11"]), "", &adj, &idx);
        assert_eq!(rp, Some(vec![None, Some(x.clone())]));
    }

    #[test]
    fn adjacency_disambiguates_from_previous_hop() {
        let ([x, a1, a2], idx) = keys(["11", "aa01", "aa02"]);
        let adj = adjacency_from_edges([(a2.to_uppercase().as_str(), x.as_str())]);
        let rp = resolve_path(&hops(&["11", "AA"]), "", &adj, &idx);
        assert_eq!(rp, Some(vec![Some(x.clone()), Some(a2.clone())]));
        // Without adjacency: null.
        let rp = resolve_path(&hops(&["11", "AA"]), "", &Adjacency::new(), &idx);
        assert_eq!(rp, Some(vec![Some(x.clone()), None]));
        // Both adjacent: still ambiguous → null.
        let adj2 = adjacency_from_edges([(a1.as_str(), x.as_str()), (a2.as_str(), x.as_str())]);
        let rp = resolve_path(&hops(&["11", "AA"]), "", &adj2, &idx);
        assert_eq!(rp, Some(vec![Some(x), None]));
    }

    #[test]
    fn originator_anchors_hop_zero() {
        let ([f, a1, _a2], idx) = keys(["f0", "aa01", "aa02"]);
        let adj = adjacency_from_edges([(f.as_str(), a1.as_str())]);
        let rp = resolve_path(&hops(&["AA"]), &f.to_uppercase(), &adj, &idx);
        assert_eq!(rp, Some(vec![Some(a1.clone())]));
        // Same path for a non-ADVERT (no originator): null → None.
        assert_eq!(resolve_path(&hops(&["AA"]), "", &adj, &idx), None);
    }

    #[test]
    fn anchor_lost_after_unresolved_hop_until_unique_hop() {
        let ([x, y, a1, _a2, b1, b2], idx) = keys(["11", "22", "aa01", "aa02", "bb01", "bb02"]);
        let adj = adjacency_from_edges([
            (x.as_str(), a1.as_str()),
            (a1.as_str(), b1.as_str()),
            (y.as_str(), b2.as_str()),
        ]);
        // 11 → AA(a1 via x) → BB(b1 via a1)
        let rp = resolve_path(&hops(&["11", "AA", "BB"]), "", &adj, &idx);
        assert_eq!(
            rp,
            Some(vec![Some(x.clone()), Some(a1.clone()), Some(b1.clone())])
        );
        // CC unresolved → anchor empty → AA null → BB null; then 22 unique,
        // anchors BB → b2.
        let rp = resolve_path(&hops(&["CC", "AA", "BB", "22", "BB"]), "", &adj, &idx);
        assert_eq!(
            rp,
            Some(vec![None, None, None, Some(y.clone()), Some(b2.clone())])
        );
    }

    #[test]
    fn exclusion_set_blocks_revisits() {
        let ([f, x, a1, a2], idx) = keys(["f0", "11", "aa01", "aa02"]);
        // Unique hop equal to the originator → null.
        let rp = resolve_path(&hops(&["F0", "11"]), &f, &Adjacency::new(), &idx);
        assert_eq!(rp, Some(vec![None, Some(x.clone())]));
        // Unique hop already resolved earlier on the path → null.
        let rp = resolve_path(&hops(&["11", "11"]), "", &Adjacency::new(), &idx);
        assert_eq!(rp, Some(vec![Some(x.clone()), None]));
        // Ambiguous hop: the excluded candidate is dropped, leaving one.
        // a1 resolved at hop 0 (unique long prefix), then AA with anchor a1:
        // a2 adjacent to a1 and a1 excluded → a2.
        let adj = adjacency_from_edges([(a1.as_str(), a2.as_str())]);
        let rp = resolve_path(&hops(&["AA01", "AA"]), "", &adj, &idx);
        assert_eq!(rp, Some(vec![Some(a1.clone()), Some(a2.clone())]));
        // Originator excluded among ambiguous candidates: f0.. and f0ab..
        let f2 = key("f0ab");
        let idx2 = PrefixIndex::new([&f, &f2]);
        let adj2 = adjacency_from_edges([(f.as_str(), f2.as_str())]);
        let rp = resolve_path(&hops(&["F0"]), &f, &adj2, &idx2);
        assert_eq!(rp, Some(vec![Some(f2)]));
    }

    #[test]
    fn adjacency_ignores_empty_and_self_loops() {
        let adj = adjacency_from_edges([("", "ab"), ("AB", "ab"), ("Ab", "cd"), ("cd", " ")]);
        assert_eq!(adj.len(), 2);
        assert!(adjacent(&adj, "ab", "cd"));
        assert!(adjacent(&adj, "cd", "ab"));
        assert!(!adj.contains_key(""));
    }

    #[test]
    fn to_json_shapes() {
        assert_eq!(to_json(&[]), "[]");
        assert_eq!(to_json(&[None, Some("ab".into())]), "[null,\"ab\"]");
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            /// One entry per hop; every key is a candidate of its hop; no key
            /// twice; the originator never; all-null is None.
            #[test]
            fn resolution_invariants(
                hops in prop::collection::vec("[0-9a-f]{2,4}", 0..7),
                origin_i in prop::option::of(0usize..30),
                edges in prop::collection::vec((0usize..30, 0usize..30), 0..60),
            ) {
                let keys: Vec<String> = (0..30u32).map(|i| format!("{:02x}{:062x}", (i * 5) % 16, i)).collect();
                let idx = PrefixIndex::new(&keys);
                let adj = adjacency_from_edges(edges.iter().map(|&(a, b)| (keys[a].as_str(), keys[b].as_str())));
                let origin = origin_i.map(|i| keys[i].clone()).unwrap_or_default();
                match resolve_path(&hops, &origin, &adj, &idx) {
                    None => {
                        for (i, h) in hops.iter().enumerate() {
                            // A unique, unexcluded first candidate would have resolved.
                            let c = idx.candidates(h);
                            if i == 0 && c.len() == 1 {
                                prop_assert_eq!(c[0], origin.as_str());
                            }
                        }
                    }
                    Some(rp) => {
                        prop_assert_eq!(rp.len(), hops.len());
                        prop_assert!(rp.iter().any(Option::is_some));
                        let mut seen = std::collections::HashSet::new();
                        for (h, r) in hops.iter().zip(&rp) {
                            if let Some(k) = r {
                                prop_assert!(idx.candidates(h).contains(&k.as_str()));
                                prop_assert!(seen.insert(k.clone()), "{} twice", k);
                                prop_assert_ne!(k, &origin);
                            }
                        }
                    }
                }
            }
        }
    }
}
