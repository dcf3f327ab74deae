//! Pure neighbor-edge extraction (rules in docs/build-edges.md). No SQL here.
//!
//! API:
//! - [`PrefixIndex::new`] builds the hop-prefix index from `nodes.public_key`
//!   values (lower-cased, de-duplicated; prefixes of 1, 2, 3, 4, 6 and 8 bytes,
//!   i.e. 2/4/6/8/12/16 hex characters).
//! - [`PrefixIndex::resolve`] applies the unique-candidate rule to one hop;
//!   [`PrefixIndex::candidates`] lists every key with that prefix (used by the
//!   context-aware resolver in `resolve.rs`).
//! - [`parse_path_json`] reads an `observations.path_json` value tolerantly.
//! - [`extract`] returns the edge candidates of one observation as
//!   canonical-ordered, lower-case `(node_a, node_b)` pairs.
//!
//! Deliberate differences from CoreScope (documented in docs/build-edges.md):
//! - keys that differ only in case are one key (CoreScope would count the
//!   lower-cased twin twice and call the prefix ambiguous);
//! - an originator or observer id that is not a 64-hex public key is treated
//!   as empty (such an id is no node key);
//! - TRACE observations (payload type 9) yield no candidates: their
//!   `path_json` may hold SNR bytes instead of hops, and even a
//!   correct TRACE hop list is the intended route, not who transmitted;
//! - an empty endpoint or a self-edge is never produced.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::keys::{canonical_pair, fold_id, lower_key, KEY_HEX_LEN};
use crate::packet;

/// A fast, deterministic hasher for the hot path (FxHash-style: one
/// multiply-rotate per 8 bytes). Not DoS-resistant, which does not matter for
/// local data.
#[derive(Debug, Default, Clone, Copy)]
pub struct Fnv(u64);

const FX_K: u64 = 0x517c_c1b7_2722_0a95;

impl Fnv {
    #[inline]
    fn mix(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(FX_K);
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.mix(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.mix(i as u64);
    }
    fn write_u32(&mut self, i: u32) {
        self.mix(i as u64);
    }
    fn write_u64(&mut self, i: u64) {
        self.mix(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.mix(i as u64);
    }
}

/// `HashMap` with [`Fnv`].
pub type FnvMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;

/// Prefix lengths, in hex characters, that the index knows.
pub const PREFIX_HEX_LENS: [usize; 6] = [2, 4, 6, 8, 12, 16];

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
///
/// The keys are kept sorted, so the keys that start with a hop are one run
/// of consecutive keys, found by binary search within the keys of the hop's
/// first byte (about a 256th of them). Building it is a sort: a hash map of
/// every prefix of every key cost about 2 ms for 3 000 keys, most of an idle
/// timer tick, and was no faster to look up.
#[derive(Debug, Default, Clone)]
pub struct PrefixIndex {
    keys: Vec<String>,
    /// `keys[first[b]..first[b + 1]]` are the keys whose first byte is `b`.
    first: Vec<usize>,
}

/// Orders `key`'s first `hop.len()` bytes against `hop` lower-cased (ASCII),
/// a key shorter than the hop before the hop: `Equal` means "starts with".
fn cmp_prefix(key: &[u8], hop: &[u8]) -> std::cmp::Ordering {
    for (i, &h) in hop.iter().enumerate() {
        match key.get(i) {
            None => return std::cmp::Ordering::Less,
            Some(&k) => match k.cmp(&h.to_ascii_lowercase()) {
                std::cmp::Ordering::Equal => {}
                o => return o,
            },
        }
    }
    std::cmp::Ordering::Equal
}

impl PrefixIndex {
    /// Builds the index. Keys are lower-cased; empty keys are ignored and keys
    /// that differ only in case count once.
    pub fn new<I, S>(public_keys: I) -> PrefixIndex
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut keys: Vec<String> = public_keys
            .into_iter()
            .map(|k| fold_id(k.as_ref()))
            .filter(|k| !k.is_empty())
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let mut first = vec![0usize; 257];
        for k in &keys {
            first[usize::from(k.as_bytes()[0]) + 1] += 1;
        }
        for b in 1..first.len() {
            first[b] += first[b - 1];
        }
        PrefixIndex { keys, first }
    }

    /// Number of distinct keys indexed.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key is indexed.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys with prefix `hop` (any case), sorted; none when the hop's
    /// length is not one of [`PREFIX_HEX_LENS`].
    fn lookup(&self, hop: &str) -> &[String] {
        let hop = hop.as_bytes();
        if !PREFIX_HEX_LENS.contains(&hop.len()) || self.keys.is_empty() {
            return &[];
        }
        let b = usize::from(hop[0].to_ascii_lowercase());
        let bucket = &self.keys[self.first[b]..self.first[b + 1]];
        let start = bucket.partition_point(|k| cmp_prefix(k.as_bytes(), hop).is_lt());
        let end =
            start + bucket[start..].partition_point(|k| cmp_prefix(k.as_bytes(), hop).is_eq());
        &bucket[start..end]
    }

    /// Every indexed key that starts with `hop` (compared lower-case), sorted.
    /// Empty when the hop length is not one of [`PREFIX_HEX_LENS`].
    pub fn candidates(&self, hop: &str) -> Vec<&str> {
        self.lookup(hop).iter().map(String::as_str).collect()
    }

    /// The unique-candidate rule: a hop resolves only when exactly one key has
    /// that prefix.
    pub fn resolve(&self, hop: &str) -> Resolution<'_> {
        match self.lookup(hop) {
            [] => Resolution::None,
            [one] => Resolution::Unique(one.as_str()),
            _ => Resolution::Ambiguous,
        }
    }
}

/// Hops of an `observations.path_json` value. `''`, `'[]'`, NULL, invalid JSON
/// or anything that is not an array of strings → no hops.
pub fn parse_path_json(s: &str) -> Vec<String> {
    let s = s.trim();
    if s.is_empty() || s == "[]" {
        return Vec::new();
    }
    serde_json::from_str::<Vec<String>>(s).unwrap_or_default()
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// Fast path of [`parse_path_json`] for arrays of plain strings (no escapes,
/// no control characters): the first and last hop, or `Some(None)` for no
/// hops. `None` means "not that simple shape" (caller falls back).
fn fast_path_ends(s: &str) -> Option<Option<(&str, &str)>> {
    let b = s.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'[') {
        return None;
    }
    i = skip_ws(b, i + 1);
    let mut first: Option<&str> = None;
    let mut last: Option<&str> = None;
    if b.get(i) == Some(&b']') {
        i += 1;
    } else {
        loop {
            if b.get(i) != Some(&b'"') {
                return None;
            }
            let start = i + 1;
            let mut j = start;
            loop {
                match b.get(j) {
                    None => return None,
                    Some(b'"') => break,
                    Some(b'\\') => return None,
                    Some(c) if *c < 0x20 => return None,
                    Some(_) => j += 1,
                }
            }
            let hop = s.get(start..j)?;
            first.get_or_insert(hop);
            last = Some(hop);
            i = skip_ws(b, j + 1);
            match b.get(i) {
                Some(b',') => i = skip_ws(b, i + 1),
                Some(b']') => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    if skip_ws(b, i) != b.len() {
        return None;
    }
    Some(first.zip(last))
}

/// First and last hop of a `path_json` value (same rules as
/// [`parse_path_json`]); `None` when there are no hops.
pub fn path_ends(s: &str) -> Option<(Cow<'_, str>, Cow<'_, str>)> {
    match fast_path_ends(s) {
        Some(ends) => ends.map(|(a, b)| (Cow::Borrowed(a), Cow::Borrowed(b))),
        None => {
            let mut hops = parse_path_json(s);
            let last = hops.pop()?;
            let first = if hops.is_empty() {
                last.clone()
            } else {
                hops.swap_remove(0)
            };
            Some((Cow::Owned(first), Cow::Owned(last)))
        }
    }
}

/// `decoded_json.pubKey` when it is a JSON string, else `None`: exactly
/// what parsing the whole text into a `serde_json::Value` and reading
/// `v.get("pubKey")?.as_str()` gives (invalid JSON, a non-object, a
/// missing or non-string `pubKey` → `None`; of duplicate keys the last
/// wins), without building the value: the document is walked by
/// `deserialize_any` like `Value` does (same number, string and escape
/// checks, same depth limit), but only the `pubKey` string is kept.
/// build-edges calls this for every ADVERT row whose `from_pubkey` is not
/// filled yet; the full parse was most of the scan's time then.
pub fn decoded_pubkey(decoded_json: &str) -> Option<String> {
    let mut de = serde_json::Deserializer::from_str(decoded_json);
    let found = serde::Deserializer::deserialize_any(&mut de, pubkey::TopLevel).ok()?;
    de.end().ok()?;
    found
}

/// True when `doc` certainly passes the from-pubkey wait rule's test of
/// `decoded_json` (`store::backfill_state::decoded_key_usable`, which
/// SQLite's JSON functions evaluate): valid JSON whose top-level `pubKey`
/// is a string of exactly 64 hex digits. Decided here only where SQLite and
/// [`decoded_pubkey`] cannot read the document differently: it has no
/// backslash (no escaped key or string), the text `"pubKey"` occurs once
/// (no duplicate key, of which SQLite reads the first and `decoded_pubkey`
/// the last), and `decoded_pubkey`'s strict RFC 8259 parse accepts it (so
/// SQLite's `json_valid` does too). Anything else gives false, and the
/// caller asks SQLite. build-edges asks this once per ADVERT transmission
/// whose `from_pubkey` the backfill has still to fill; the SQL test cost
/// about a fifth of a timer tick's scan.
pub fn decoded_key_certainly_usable(doc: &str) -> bool {
    !doc.contains('\\')
        && doc.matches("\"pubKey\"").count() == 1
        && decoded_pubkey(doc)
            .is_some_and(|k| k.len() == KEY_HEX_LEN && k.bytes().all(|c| c.is_ascii_hexdigit()))
}

/// The visitors of [`decoded_pubkey`].
mod pubkey {
    use std::fmt;

    use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

    /// Accepts any JSON value and keeps nothing (parsed as `Value` would be).
    pub struct Skip;

    impl<'de> de::Deserialize<'de> for Skip {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Skip, D::Error> {
            d.deserialize_any(SkipVisitor)
        }
    }

    struct SkipVisitor;

    impl<'de> Visitor<'de> for SkipVisitor {
        type Value = Skip;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
            Ok(Skip)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
            Ok(Skip)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
            Ok(Skip)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
            Ok(Skip)
        }
        fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
            Ok(Skip)
        }
        fn visit_unit<E>(self) -> Result<Skip, E> {
            Ok(Skip)
        }
        fn visit_none<E>(self) -> Result<Skip, E> {
            Ok(Skip)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Skip, D::Error> {
            d.deserialize_any(SkipVisitor)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
            while seq.next_element::<Skip>()?.is_some() {}
            Ok(Skip)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
            while map.next_entry::<Skip, Skip>()?.is_some() {}
            Ok(Skip)
        }
    }

    /// A value kept only when it is a string.
    struct MaybeString;

    impl<'de> DeserializeSeed<'de> for MaybeString {
        type Value = Option<String>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<String>, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for MaybeString {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_str<E>(self, v: &str) -> Result<Option<String>, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_bool<E>(self, _: bool) -> Result<Option<String>, E> {
            Ok(None)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Option<String>, E> {
            Ok(None)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Option<String>, E> {
            Ok(None)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Option<String>, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Option<String>, E> {
            Ok(None)
        }
        fn visit_none<E>(self) -> Result<Option<String>, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<String>, D::Error> {
            d.deserialize_any(self)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Option<String>, A::Error> {
            SkipVisitor.visit_seq(seq).map(|_| None)
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Option<String>, A::Error> {
            SkipVisitor.visit_map(map).map(|_| None)
        }
    }

    /// A key, compared after unescaping (as `Value`'s map keys are).
    struct IsPubKey;

    impl<'de> DeserializeSeed<'de> for IsPubKey {
        type Value = bool;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
            d.deserialize_str(self)
        }
    }

    impl Visitor<'_> for IsPubKey {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a key")
        }
        fn visit_str<E>(self, v: &str) -> Result<bool, E> {
            Ok(v == "pubKey")
        }
    }

    /// The document: `pubKey` of a top-level object (the last one when the
    /// key repeats); any other document is parsed through and gives None.
    pub struct TopLevel;

    impl<'de> Visitor<'de> for TopLevel {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<String>, A::Error> {
            let mut found = None;
            while let Some(is_pubkey) = map.next_key_seed(IsPubKey)? {
                if is_pubkey {
                    found = map.next_value_seed(MaybeString)?;
                } else {
                    map.next_value::<Skip>()?;
                }
            }
            Ok(found)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Option<String>, A::Error> {
            SkipVisitor.visit_seq(seq).map(|_| None)
        }
        fn visit_str<E>(self, _: &str) -> Result<Option<String>, E> {
            Ok(None)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Option<String>, E> {
            Ok(None)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Option<String>, E> {
            Ok(None)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Option<String>, E> {
            Ok(None)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Option<String>, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Option<String>, E> {
            Ok(None)
        }
    }
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

/// The originator of an ADVERT: `from_pubkey`, else `decoded_json.pubKey`,
/// lower-cased into `buf`; `None` unless a 64-hex key.
fn originator_key<'b>(obs: &ObsInput<'_>, buf: &'b mut [u8; 64]) -> Option<&'b str> {
    match obs.from_pubkey.map(str::trim).filter(|s| !s.is_empty()) {
        Some(s) => lower_key(s, buf),
        None => {
            let decoded = obs.decoded_json.and_then(decoded_pubkey)?;
            lower_key(&decoded, buf)
        }
    }
}

/// Calls `f(node_a, node_b)` for every edge candidate of one observation:
/// lower-case, canonical order, never an empty endpoint or a
/// self-edge. The same pair may come twice (once per rule); each counts.
///
/// An endpoint key is read (validated, lower-cased, for an ADVERT without
/// `from_pubkey` parsed out of `decoded_json`) only when its rule can still
/// produce a candidate: most observations yield none, because their hop
/// does not resolve to one node.
pub fn extract_each(obs: &ObsInput<'_>, idx: &PrefixIndex, mut f: impl FnMut(&str, &str)) {
    let payload_type = packet::stored_payload_type(obs.payload_type);
    if payload_type == Some(packet::PAYLOAD_TRACE) {
        return;
    }
    let is_advert = payload_type == Some(packet::PAYLOAD_ADVERT);
    let mut emit = |a: &str, b: &str| {
        if let Ok((a, b)) = canonical_pair(a, b) {
            f(a, b);
        }
    };
    let (mut fbuf, mut obuf) = ([0u8; 64], [0u8; 64]);
    match obs.path_json.and_then(path_ends) {
        None => {
            if !is_advert {
                return;
            }
            let Some(ok) = obs.observer_id.and_then(|o| lower_key(o, &mut obuf)) else {
                return;
            };
            if let Some(fk) = originator_key(obs, &mut fbuf) {
                emit(fk, ok);
            }
        }
        Some((first, last)) => {
            if is_advert {
                if let Resolution::Unique(h0) = idx.resolve(&first) {
                    if let Some(fk) = originator_key(obs, &mut fbuf) {
                        emit(fk, h0);
                    }
                }
            }
            if let Resolution::Unique(hl) = idx.resolve(&last) {
                if let Some(ok) = obs.observer_id.and_then(|o| lower_key(o, &mut obuf)) {
                    emit(ok, hl);
                }
            }
        }
    }
}

/// Edge candidates of one observation, lower-case and canonical.
/// The same pair may appear twice (once per rule); each counts. (Collecting
/// form of [`extract_each`], for tests.)
#[cfg(test)]
pub fn extract(obs: &ObsInput<'_>, idx: &PrefixIndex) -> Vec<(String, String)> {
    let mut out = Vec::new();
    extract_each(obs, idx, |a, b| out.push((a.to_string(), b.to_string())));
    out
}

#[cfg(test)]
mod tests;

/// Keys and prefix indexes for the tests of edges, resolve and derive.
#[cfg(test)]
pub mod testkeys {
    use super::PrefixIndex;

    /// A 64-character key that starts with `prefix` (padded with `0`).
    pub fn key(prefix: &str) -> String {
        format!("{prefix:0<64}")
    }

    /// The keys of `prefixes` and the prefix index of all of them.
    pub fn keys<const N: usize>(prefixes: [&str; N]) -> ([String; N], PrefixIndex) {
        let keys = prefixes.map(key);
        let idx = PrefixIndex::new(&keys);
        (keys, idx)
    }
}
