//! The in-memory aggregate of edge candidates: per canonical pair, the
//! number of candidates and the latest time, with interned node ids.

use crate::edges::FnvMap;
use crate::timeutil;

/// "No time" marker inside [`Agg`] (keeps an entry at 24 bytes).
pub const NO_TIME: i64 = i64::MIN;

/// (a, b, count, latest epoch or NO_TIME) with interned ids.
pub type IdRow = (u32, u32, i64, i64);

/// Candidates aggregated per pair, with interned node ids.
#[derive(Debug, Default)]
pub struct Agg {
    ids: FnvMap<String, u32>,
    names: Vec<String>,
    /// (a, b) interned, a's name < b's name → (count, latest epoch or NO_TIME).
    pairs: FnvMap<(u32, u32), (i64, i64)>,
}

impl Agg {
    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.ids.get(s) {
            return i;
        }
        let i = self.names.len() as u32;
        self.names.push(s.to_string());
        self.ids.insert(s.to_string(), i);
        i
    }

    pub fn add(&mut self, a: &str, b: &str, ts: Option<i64>) {
        let (a, b) = (self.intern(a), self.intern(b));
        let e = self.pairs.entry((a, b)).or_insert((0, NO_TIME));
        e.0 += 1;
        if let Some(t) = ts {
            e.1 = e.1.max(t);
        }
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Empties the aggregate into (names, rows sorted by key), rows as
    /// (a, b, count, latest epoch or NO_TIME). Sorted so that writes append
    /// to the B-trees in key order; the hash map is freed before writing.
    pub fn take_sorted(&mut self) -> (Vec<String>, Vec<IdRow>) {
        let names = std::mem::take(&mut self.names);
        let pairs = std::mem::take(&mut self.pairs);
        self.ids = FnvMap::default();
        let mut v: Vec<IdRow> = pairs
            .into_iter()
            .map(|((a, b), (n, t))| (a, b, n, t))
            .collect();
        v.sort_unstable_by(|x, y| {
            (names[x.0 as usize].as_str(), names[x.1 as usize].as_str())
                .cmp(&(names[y.0 as usize].as_str(), names[y.1 as usize].as_str()))
        });
        (names, v)
    }

    pub fn clear(&mut self) {
        *self = Agg::default();
    }
}

/// The stored `last_seen` of an aggregated time (NULL for no time).
pub fn time_text(t: i64) -> Option<String> {
    (t != NO_TIME).then(|| timeutil::rfc3339(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_per_pair_in_key_order() {
        let mut agg = Agg::default();
        agg.add("b", "c", Some(5));
        agg.add("a", "b", None);
        agg.add("b", "c", Some(3));
        assert_eq!(agg.len(), 2);
        let (names, rows) = agg.take_sorted();
        let named: Vec<(&str, &str, i64, i64)> = rows
            .iter()
            .map(|&(a, b, n, t)| (names[a as usize].as_str(), names[b as usize].as_str(), n, t))
            .collect();
        assert_eq!(named, vec![("a", "b", 1, NO_TIME), ("b", "c", 2, 5)]);
        assert_eq!(agg.len(), 0);
        assert_eq!(time_text(NO_TIME), None);
    }
}
