//! Pure neighbor-edge extraction (spec corescope-db.md §6.8). No SQL here.
//!
//! API:
//! - [`PrefixIndex::new`] builds the hop-prefix index from `nodes.public_key`
//!   values (lower-cased, de-duplicated; prefixes of 1, 2, 3, 4, 6 and 8 bytes,
//!   i.e. 2/4/6/8/12/16 hex characters).
//! - [`PrefixIndex::resolve`] applies the unique-candidate rule to one hop;
//!   [`PrefixIndex::candidates`] lists every key with that prefix (used by the
//!   context-aware resolver in `resolve.rs`, spec §6.9).
//! - [`parse_path_json`] reads an `observations.path_json` value tolerantly.
//! - [`extract`] returns the edge candidates of one observation as
//!   canonical-ordered, lower-case `(node_a, node_b)` pairs.
//!
//! Deliberate differences from CoreScope (documented in docs/build-edges.md):
//! - keys that differ only in case are one key (CoreScope would count the
//!   lower-cased twin twice and call the prefix ambiguous);
//! - an originator or observer id that is not a 64-hex public key is treated
//!   as empty (spec §10 #13: such an id is no node key);
//! - TRACE observations (payload type 9) yield no candidates: their
//!   `path_json` may hold SNR bytes instead of hops (spec §10 #6), and even a
//!   correct TRACE hop list is the intended route, not who transmitted;
//! - an empty endpoint or a self-edge is never produced (spec §10 #1).

use std::collections::HashMap;

/// Payload type of ADVERT packets (spec §4.3).
pub const PAYLOAD_ADVERT: i64 = 4;
/// Payload type of TRACE packets (spec §4.3, §4.7).
pub const PAYLOAD_TRACE: i64 = 9;

/// Prefix lengths, in hex characters, that the index knows (spec §6.8).
pub const PREFIX_HEX_LENS: [usize; 6] = [2, 4, 6, 8, 12, 16];

/// True when `s` is a 64-character hexadecimal public key (any case).
pub fn is_node_key(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Outcome of resolving one hop against the prefix index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution<'a> {
    /// No key has this prefix (or the hop length is not an indexed length).
    None,
    /// Exactly one key has this prefix.
    Unique(&'a str),
    /// Several keys have this prefix.
    Ambiguous,
}

/// Hop-prefix → node keys, built once per run from `nodes.public_key`.
#[derive(Debug, Default, Clone)]
pub struct PrefixIndex {
    keys: Vec<String>,
    by_prefix: HashMap<String, Vec<u32>>,
}

impl PrefixIndex {
    /// Builds the index. Keys are lower-cased; empty keys are ignored and keys
    /// that differ only in case count once. A key shorter than a prefix length
    /// is not indexed under that length.
    pub fn new<I, S>(public_keys: I) -> PrefixIndex
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut keys: Vec<String> = public_keys
            .into_iter()
            .map(|k| k.as_ref().trim().to_ascii_lowercase())
            .filter(|k| !k.is_empty())
            .collect();
        keys.sort();
        keys.dedup();
        let mut by_prefix: HashMap<String, Vec<u32>> = HashMap::new();
        for (i, key) in keys.iter().enumerate() {
            for &n in PREFIX_HEX_LENS.iter() {
                // `get` also guards against slicing inside a multi-byte char.
                if let Some(prefix) = key.get(..n) {
                    by_prefix
                        .entry(prefix.to_string())
                        .or_default()
                        .push(i as u32);
                }
            }
        }
        PrefixIndex { keys, by_prefix }
    }

    /// Number of distinct keys indexed.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key is indexed.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Every indexed key that starts with `hop` (compared lower-case), sorted.
    /// Empty when the hop length is not one of [`PREFIX_HEX_LENS`].
    pub fn candidates(&self, hop: &str) -> Vec<&str> {
        let hop = hop.to_ascii_lowercase();
        match self.by_prefix.get(&hop) {
            Some(ids) => ids
                .iter()
                .map(|&i| self.keys[i as usize].as_str())
                .collect(),
            None => Vec::new(),
        }
    }

    /// The unique-candidate rule of spec §6.8.
    pub fn resolve(&self, hop: &str) -> Resolution<'_> {
        let hop = hop.to_ascii_lowercase();
        match self.by_prefix.get(&hop).map(|v| v.as_slice()) {
            None | Some([]) => Resolution::None,
            Some([one]) => Resolution::Unique(self.keys[*one as usize].as_str()),
            Some(_) => Resolution::Ambiguous,
        }
    }
}

/// Hops of an `observations.path_json` value. `''`, `'[]'`, NULL, invalid JSON
/// or anything that is not an array of strings → no hops (spec §6.8).
pub fn parse_path_json(s: &str) -> Vec<String> {
    let s = s.trim();
    if s.is_empty() || s == "[]" {
        return Vec::new();
    }
    serde_json::from_str::<Vec<String>>(s).unwrap_or_default()
}

/// `decoded_json.pubKey` when it is a JSON string, else `None`.
pub fn decoded_pubkey(decoded_json: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(decoded_json).ok()?;
    v.get("pubKey")?.as_str().map(|s| s.to_string())
}

/// The columns of one observation (joined to its transmission and observer)
/// that edge extraction needs.
#[derive(Debug, Clone, Copy, Default)]
pub struct ObsInput<'a> {
    /// `transmissions.payload_type`.
    pub payload_type: Option<i64>,
    /// `transmissions.from_pubkey`.
    pub from_pubkey: Option<&'a str>,
    /// `transmissions.decoded_json` (only read when `from_pubkey` is NULL/'').
    pub decoded_json: Option<&'a str>,
    /// `observers.id` of the row with `rowid = observations.observer_idx`
    /// (None when no observer row matches).
    pub observer_id: Option<&'a str>,
    /// `observations.path_json`.
    pub path_json: Option<&'a str>,
}

impl ObsInput<'_> {
    /// Originator `F` (spec §6.8): lower-cased `from_pubkey`, else
    /// `decoded_json.pubKey`; only for ADVERTs; `None` unless a 64-hex key.
    pub fn originator(&self) -> Option<String> {
        if self.payload_type != Some(PAYLOAD_ADVERT) {
            return None;
        }
        let raw = match self.from_pubkey.map(str::trim).filter(|s| !s.is_empty()) {
            Some(s) => s.to_string(),
            None => decoded_pubkey(self.decoded_json?)?,
        };
        let f = raw.trim().to_ascii_lowercase();
        is_node_key(&f).then_some(f)
    }

    /// Observer `O`: lower-cased `observers.id`; `None` when there is no
    /// observer row or the id is not a 64-hex key (spec §10 #13).
    pub fn observer(&self) -> Option<String> {
        let o = self.observer_id?.trim().to_ascii_lowercase();
        is_node_key(&o).then_some(o)
    }
}

/// Canonical order: the lexicographically smaller string is `node_a`.
/// `None` for an empty endpoint or a self-edge.
pub fn canonical(a: &str, b: &str) -> Option<(String, String)> {
    if a.is_empty() || b.is_empty() || a == b {
        return None;
    }
    if a < b {
        Some((a.to_string(), b.to_string()))
    } else {
        Some((b.to_string(), a.to_string()))
    }
}

/// Edge candidates of one observation (spec §6.8), lower-case and canonical.
/// The same pair may appear twice (once per rule); each counts.
pub fn extract(obs: &ObsInput<'_>, idx: &PrefixIndex) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if obs.payload_type == Some(PAYLOAD_TRACE) {
        return out;
    }
    let is_advert = obs.payload_type == Some(PAYLOAD_ADVERT);
    let f = obs.originator();
    let o = obs.observer();
    let hops = obs.path_json.map(parse_path_json).unwrap_or_default();

    if hops.is_empty() {
        if is_advert {
            if let (Some(f), Some(o)) = (&f, &o) {
                out.extend(canonical(f, o));
            }
        }
        return out;
    }
    if let Some(f) = &f {
        if let Resolution::Unique(h0) = idx.resolve(&hops[0]) {
            out.extend(canonical(f, h0));
        }
    }
    if let (Some(o), Some(last)) = (&o, hops.last()) {
        if let Resolution::Unique(hl) = idx.resolve(last) {
            out.extend(canonical(o, hl));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(prefix: &str) -> String {
        let mut k = prefix.to_string();
        while k.len() < 64 {
            k.push('0');
        }
        k
    }

    fn pair(a: &str, b: &str) -> (String, String) {
        canonical(a, b).unwrap()
    }

    #[test]
    fn index_lower_cases_and_dedups() {
        let a = key("ABCDEF");
        let idx = PrefixIndex::new([a.clone(), a.to_lowercase(), String::new()]);
        assert_eq!(idx.len(), 1);
        assert_eq!(idx.resolve("ab"), Resolution::Unique(&key("abcdef")));
        assert_eq!(idx.resolve("AB"), Resolution::Unique(&key("abcdef")));
        assert_eq!(idx.resolve("AbCd"), Resolution::Unique(&key("abcdef")));
    }

    #[test]
    fn index_prefix_lengths() {
        let k = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let idx = PrefixIndex::new([k]);
        for n in PREFIX_HEX_LENS {
            assert_eq!(idx.resolve(&k[..n]), Resolution::Unique(k), "len {n}");
        }
        // Lengths the firmware never uses are not indexed.
        for n in [1, 3, 5, 10, 14, 18, 64] {
            assert_eq!(idx.resolve(&k[..n]), Resolution::None, "len {n}");
        }
        assert_eq!(idx.resolve(""), Resolution::None);
        assert_eq!(idx.resolve("ff"), Resolution::None);
    }

    #[test]
    fn one_byte_collision_is_ambiguous_longer_prefix_unique() {
        let a = key("aa11");
        let b = key("aa22");
        let idx = PrefixIndex::new([&a, &b]);
        assert_eq!(idx.resolve("AA"), Resolution::Ambiguous);
        assert_eq!(idx.candidates("aa"), vec![a.as_str(), b.as_str()]);
        assert_eq!(idx.resolve("AA11"), Resolution::Unique(&a));
        assert_eq!(idx.resolve("aa22"), Resolution::Unique(&b));
        assert!(idx.candidates("aa33").is_empty());
    }

    #[test]
    fn short_keys_indexed_only_where_long_enough() {
        let idx = PrefixIndex::new(["abcd"]);
        assert_eq!(idx.resolve("ab"), Resolution::Unique("abcd"));
        assert_eq!(idx.resolve("abcd"), Resolution::Unique("abcd"));
        assert_eq!(idx.resolve("abcd00"), Resolution::None);
    }

    #[test]
    fn non_ascii_key_does_not_panic() {
        let idx = PrefixIndex::new(["aé€xyzéé€€€€€€€€€€"]);
        assert_eq!(idx.resolve("aé"), Resolution::None);
    }

    #[test]
    fn path_json_tolerant() {
        assert!(parse_path_json("").is_empty());
        assert!(parse_path_json("[]").is_empty());
        assert!(parse_path_json("  ").is_empty());
        assert!(parse_path_json("not json").is_empty());
        assert!(parse_path_json("[\"AB\",").is_empty());
        assert!(parse_path_json("{\"a\":1}").is_empty());
        assert!(parse_path_json("[1,2]").is_empty());
        assert!(parse_path_json("null").is_empty());
        assert_eq!(
            parse_path_json("[\"59\",\"20\",\"1D\"]"),
            vec!["59", "20", "1D"]
        );
        assert_eq!(parse_path_json(" [\"7D1D\"] "), vec!["7D1D"]);
    }

    #[test]
    fn decoded_pubkey_tolerant() {
        assert_eq!(decoded_pubkey("{\"pubKey\":\"AB\"}"), Some("AB".into()));
        assert_eq!(decoded_pubkey("{\"pubKey\":1}"), None);
        assert_eq!(decoded_pubkey("{}"), None);
        assert_eq!(decoded_pubkey("garbage"), None);
        assert_eq!(decoded_pubkey("[]"), None);
    }

    #[test]
    fn canonical_order_and_rejections() {
        assert_eq!(canonical("b", "a"), Some(("a".into(), "b".into())));
        assert_eq!(canonical("a", "b"), Some(("a".into(), "b".into())));
        assert_eq!(canonical("a", "a"), None);
        assert_eq!(canonical("", "a"), None);
        assert_eq!(canonical("a", ""), None);
    }

    struct World {
        f: String,
        o: String,
        h1: String,
        h2: String,
        idx: PrefixIndex,
    }

    fn world() -> World {
        let f = key("f0f0");
        let o = key("0b0b");
        let h1 = key("1111");
        let h2 = key("2222");
        let idx = PrefixIndex::new([&f, &o, &h1, &h2]);
        World { f, o, h1, h2, idx }
    }

    #[test]
    fn zero_hop_advert_links_originator_and_observer() {
        let w = world();
        let upper_o = w.o.to_uppercase();
        for path in [None, Some(""), Some("[]"), Some("garbage")] {
            let obs = ObsInput {
                payload_type: Some(PAYLOAD_ADVERT),
                from_pubkey: Some(&w.f),
                observer_id: Some(&upper_o),
                path_json: path,
                ..Default::default()
            };
            assert_eq!(extract(&obs, &w.idx), vec![pair(&w.f, &w.o)], "{path:?}");
        }
    }

    #[test]
    fn zero_hop_non_advert_gives_nothing() {
        let w = world();
        let obs = ObsInput {
            payload_type: Some(5),
            from_pubkey: Some(&w.f),
            observer_id: Some(&w.o),
            path_json: Some("[]"),
            ..Default::default()
        };
        assert!(extract(&obs, &w.idx).is_empty());
    }

    #[test]
    fn zero_hop_advert_heard_by_itself_is_no_edge() {
        let w = world();
        let obs = ObsInput {
            payload_type: Some(PAYLOAD_ADVERT),
            from_pubkey: Some(&w.f),
            observer_id: Some(&w.f.to_uppercase()),
            path_json: Some("[]"),
            ..Default::default()
        };
        assert!(extract(&obs, &w.idx).is_empty());
    }

    #[test]
    fn empty_observer_never_yields_empty_endpoint() {
        let w = world();
        for observer in [None, Some(""), Some("  ")] {
            // Zero-hop ADVERT without an observer: nothing.
            let obs = ObsInput {
                payload_type: Some(PAYLOAD_ADVERT),
                from_pubkey: Some(&w.f),
                observer_id: observer,
                path_json: Some("[]"),
                ..Default::default()
            };
            assert!(extract(&obs, &w.idx).is_empty());
            // ADVERT with hops: only the originator edge.
            let obs = ObsInput {
                path_json: Some("[\"11\",\"22\"]"),
                ..obs
            };
            assert_eq!(extract(&obs, &w.idx), vec![pair(&w.f, &w.h1)]);
            // Non-ADVERT: nothing.
            let obs = ObsInput {
                payload_type: Some(2),
                ..obs
            };
            assert!(extract(&obs, &w.idx).is_empty());
        }
    }

    #[test]
    fn advert_with_hops_gives_both_edges() {
        let w = world();
        let obs = ObsInput {
            payload_type: Some(PAYLOAD_ADVERT),
            from_pubkey: Some(&w.f),
            observer_id: Some(&w.o),
            path_json: Some("[\"11\",\"22\"]"),
            ..Default::default()
        };
        assert_eq!(
            extract(&obs, &w.idx),
            vec![pair(&w.f, &w.h1), pair(&w.o, &w.h2)]
        );
    }

    #[test]
    fn single_hop_advert_counts_both_rules() {
        let w = world();
        let obs = ObsInput {
            payload_type: Some(PAYLOAD_ADVERT),
            from_pubkey: Some(&w.f),
            observer_id: Some(&w.o),
            path_json: Some("[\"11\"]"),
            ..Default::default()
        };
        assert_eq!(
            extract(&obs, &w.idx),
            vec![pair(&w.f, &w.h1), pair(&w.o, &w.h1)]
        );
    }

    #[test]
    fn non_advert_only_observer_last_hop() {
        let w = world();
        let obs = ObsInput {
            payload_type: Some(5),
            from_pubkey: Some(&w.f), // ignored: not an ADVERT
            observer_id: Some(&w.o),
            path_json: Some("[\"11\",\"22\"]"),
            ..Default::default()
        };
        assert_eq!(extract(&obs, &w.idx), vec![pair(&w.o, &w.h2)]);
        let obs = ObsInput {
            payload_type: None,
            ..obs
        };
        assert_eq!(extract(&obs, &w.idx), vec![pair(&w.o, &w.h2)]);
    }

    #[test]
    fn multi_byte_hops_and_case() {
        let w = world();
        let upper_f = w.f.to_uppercase();
        let upper_o = w.o.to_uppercase();
        let obs = ObsInput {
            payload_type: Some(PAYLOAD_ADVERT),
            from_pubkey: Some(&upper_f),
            observer_id: Some(&upper_o),
            path_json: Some("[\"1111\",\"aa\",\"222200\"]"),
            ..Default::default()
        };
        let got = extract(&obs, &w.idx);
        assert_eq!(got, vec![pair(&w.f, &w.h1), pair(&w.o, &w.h2)]);
        for (a, b) in &got {
            assert_eq!(a, &a.to_lowercase());
            assert_eq!(b, &b.to_lowercase());
            assert!(a < b);
        }
    }

    #[test]
    fn ambiguous_or_unknown_hops_are_skipped() {
        let f = key("f0");
        let o = key("0b");
        let a1 = key("aa01");
        let a2 = key("aa02");
        let idx = PrefixIndex::new([&f, &o, &a1, &a2]);
        let obs = ObsInput {
            payload_type: Some(PAYLOAD_ADVERT),
            from_pubkey: Some(&f),
            observer_id: Some(&o),
            path_json: Some("[\"AA\",\"CC\"]"),
            ..Default::default()
        };
        assert!(extract(&obs, &idx).is_empty());
        // The longer prefix disambiguates.
        let obs = ObsInput {
            path_json: Some("[\"AA01\",\"AA02\"]"),
            ..obs
        };
        assert_eq!(extract(&obs, &idx), vec![pair(&f, &a1), pair(&o, &a2)]);
    }

    #[test]
    fn no_self_edges_from_hops() {
        let w = world();
        // First hop resolves to the originator, last hop to the observer.
        let obs = ObsInput {
            payload_type: Some(PAYLOAD_ADVERT),
            from_pubkey: Some(&w.f),
            observer_id: Some(&w.o),
            path_json: Some("[\"F0\",\"0B\"]"),
            ..Default::default()
        };
        assert!(extract(&obs, &w.idx).is_empty());
    }

    #[test]
    fn originator_falls_back_to_decoded_json() {
        let w = world();
        let dj = format!(
            "{{\"type\":\"ADVERT\",\"pubKey\":\"{}\"}}",
            w.f.to_uppercase()
        );
        for from in [None, Some(""), Some(" ")] {
            let obs = ObsInput {
                payload_type: Some(PAYLOAD_ADVERT),
                from_pubkey: from,
                decoded_json: Some(&dj),
                observer_id: Some(&w.o),
                path_json: Some("[]"),
            };
            assert_eq!(extract(&obs, &w.idx), vec![pair(&w.f, &w.o)]);
        }
        // Invalid decoded_json: no originator.
        let obs = ObsInput {
            payload_type: Some(PAYLOAD_ADVERT),
            from_pubkey: Some(""),
            decoded_json: Some("{broken"),
            observer_id: Some(&w.o),
            path_json: Some("[]"),
        };
        assert!(extract(&obs, &w.idx).is_empty());
    }

    #[test]
    fn non_key_ids_are_not_endpoints() {
        let w = world();
        // Non-hex observer id (spec §10 #13) and a truncated originator.
        let obs = ObsInput {
            payload_type: Some(PAYLOAD_ADVERT),
            from_pubkey: Some("f0f0"),
            observer_id: Some("companion"),
            path_json: Some("[\"11\",\"22\"]"),
            ..Default::default()
        };
        assert!(extract(&obs, &w.idx).is_empty());
        let obs = ObsInput {
            from_pubkey: Some(&w.f),
            path_json: Some("[]"),
            ..obs
        };
        assert!(extract(&obs, &w.idx).is_empty());
    }

    #[test]
    fn trace_rows_are_skipped() {
        let w = world();
        let obs = ObsInput {
            payload_type: Some(PAYLOAD_TRACE),
            observer_id: Some(&w.o),
            path_json: Some("[\"22\"]"),
            ..Default::default()
        };
        assert!(extract(&obs, &w.idx).is_empty());
    }

    #[test]
    fn empty_index_gives_only_zero_hop_edges() {
        let w = world();
        let idx = PrefixIndex::new(Vec::<String>::new());
        assert!(idx.is_empty());
        let obs = ObsInput {
            payload_type: Some(PAYLOAD_ADVERT),
            from_pubkey: Some(&w.f),
            observer_id: Some(&w.o),
            path_json: Some("[\"11\"]"),
            ..Default::default()
        };
        assert!(extract(&obs, &idx).is_empty());
        let obs = ObsInput {
            path_json: Some("[]"),
            ..obs
        };
        assert_eq!(extract(&obs, &idx), vec![pair(&w.f, &w.o)]);
    }
}
