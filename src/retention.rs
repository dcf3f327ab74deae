//! Retention rules: the cut-off arithmetic of `prune`, how one stored time
//! (any storage class) compares with a cut-off, the text bounds of the
//! index walk over canonical `YYYY-MM-DD...` values, and which node columns
//! move to `inactive_nodes`. Pure functions; no SQL here
//! (`commands/prune.rs` runs them against the database).

use chrono::{Duration as ChronoDuration, NaiveDate, TimeZone, Utc};
use rusqlite::types::Value;

use crate::timeutil;

/// Seconds in one retention day.
pub const DAY: i64 = 86_400;

/// How one stored time compares with the cutoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Null,
    Unparseable,
    /// Strictly older than the cutoff: pruned.
    Due,
    Keep,
}

/// Epoch seconds of a stored value of any storage class.
pub fn instant_of(v: &Value) -> Option<i64> {
    match v {
        Value::Null => None,
        Value::Integer(i) => Some(*i),
        Value::Real(f) if f.is_finite() && f.abs() < 9.0e18 => Some(f.floor() as i64),
        Value::Real(_) => None,
        Value::Text(s) => timeutil::parse_instant(s),
        Value::Blob(b) => std::str::from_utf8(b)
            .ok()
            .and_then(timeutil::parse_instant),
    }
}

pub fn classify(v: &Value, cutoff: i64) -> Class {
    if matches!(v, Value::Null) {
        return Class::Null;
    }
    match instant_of(v) {
        None => Class::Unparseable,
        Some(t) if t < cutoff => Class::Due,
        Some(_) => Class::Keep,
    }
}

/// Upper text bound U of the index range: the cutoff's UTC date plus two
/// days, `YYYY-MM-DD`. A value starting with a valid date D >= U means an
/// instant >= D 00:00 - 24 h (the largest UTC offset) > cutoff. None when the
/// date has no 4-digit year (the walk falls back to a full scan).
pub fn window_bound(cutoff: i64) -> Option<String> {
    let dt = Utc.timestamp_opt(cutoff, 0).single()?;
    let d = dt
        .date_naive()
        .checked_add_signed(ChronoDuration::days(2))?;
    let s = d.format("%Y-%m-%d").to_string();
    if s.len() == 10 && canonical_date_prefix(&s).is_some() {
        Some(s)
    } else {
        None
    }
}

/// The `YYYY-MM-DD` prefix of `s` when it starts with a valid calendar date
/// written with exactly 4-2-2 digits (the shape whose text order is time order).
pub fn canonical_date_prefix(s: &str) -> Option<&str> {
    let b = s.as_bytes();
    if b.len() < 10 {
        return None;
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(|c| c.is_ascii_digit());
    if !(digits(0..4) && b[4] == b'-' && digits(5..7) && b[7] == b'-' && digits(8..10)) {
        return None;
    }
    let p = &s[..10];
    NaiveDate::parse_from_str(p, "%Y-%m-%d").ok()?;
    Some(p)
}

/// The smallest text greater than every text starting with `prefix` (ASCII
/// prefix: its last byte plus one).
pub fn prefix_successor(prefix: &str) -> String {
    let mut b = prefix.as_bytes().to_vec();
    if let Some(last) = b.last_mut() {
        *last += 1;
    }
    String::from_utf8_lossy(&b).into_owned()
}

/// Column list for the node move: the columns of `nodes` that also exist in
/// `inactive_nodes`, named explicitly, in `nodes` order.
pub fn move_columns(nodes: &[String], inactive: &[String]) -> Vec<String> {
    nodes
        .iter()
        .filter(|c| inactive.iter().any(|i| i.eq_ignore_ascii_case(c)))
        .cloned()
        .collect()
}

/// The retention cut-off: `days` whole days before `now` (epoch seconds),
/// saturating at the ends of the range.
pub fn cutoff_for(now: i64, days: i64) -> i64 {
    now.saturating_sub(days.saturating_mul(DAY))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: i64 = 1_779_041_521; // 2026-05-17T18:12:01Z

    #[test]
    fn classify_every_format() {
        let c = BASE;
        let t = |s: &str| Value::Text(s.to_string());
        assert_eq!(classify(&t("2026-05-17T18:12:00Z"), c), Class::Due);
        assert_eq!(classify(&t("2026-05-17T18:12:01Z"), c), Class::Keep);
        assert_eq!(classify(&t("2026-05-17T18:12:00.999Z"), c), Class::Due);
        assert_eq!(classify(&t("2026-05-17T18:12:01.001Z"), c), Class::Keep);
        assert_eq!(classify(&t("2026-05-17T20:12:00+02:00"), c), Class::Due);
        assert_eq!(classify(&t("2026-05-17T20:12:02+02:00"), c), Class::Keep);
        assert_eq!(classify(&t("2026-05-17 18:12:00"), c), Class::Due);
        assert_eq!(classify(&t("2026-05-17 18:12:02"), c), Class::Keep);
        assert_eq!(classify(&Value::Integer(c - 1), c), Class::Due);
        assert_eq!(classify(&Value::Integer(c), c), Class::Keep);
        assert_eq!(classify(&Value::Real(c as f64 - 0.5), c), Class::Due);
        assert_eq!(classify(&t(&(c - 1).to_string()), c), Class::Due);
        assert_eq!(classify(&Value::Null, c), Class::Null);
        // Non-padded dates parse (and sort above the window as text: the
        // skip-scan finds them).
        assert_eq!(classify(&t("2026-5-1 00:00:00"), c), Class::Due);
        assert_eq!(classify(&t("garbage"), c), Class::Unparseable);
        assert_eq!(classify(&t(""), c), Class::Unparseable);
        assert_eq!(classify(&Value::Real(f64::NAN), c), Class::Unparseable);
        assert_eq!(
            classify(&Value::Blob(b"2026-05-17T18:12:00Z".to_vec()), c),
            Class::Due
        );
    }

    #[test]
    fn window_bound_is_two_days_after_the_cutoff_date() {
        assert_eq!(window_bound(BASE).as_deref(), Some("2026-05-19"));
        assert_eq!(window_bound(0).as_deref(), Some("1970-01-03"));
        assert_eq!(window_bound(-100_000_000_000), None);
        // Any valid date prefix >= U means an instant after the cutoff.
        for cutoff in [BASE, BASE + 3600 * 5 + 59, BASE - 18 * 3600 - 721] {
            let u = window_bound(cutoff).unwrap();
            let worst = format!("{u}T00:00:00+23:59");
            assert!(timeutil::parse_instant(&worst).unwrap() > cutoff);
        }
    }

    #[test]
    fn canonical_prefixes() {
        assert_eq!(
            canonical_date_prefix("2026-05-17T00:00:00Z"),
            Some("2026-05-17")
        );
        assert_eq!(canonical_date_prefix("2026-05-17"), Some("2026-05-17"));
        assert_eq!(canonical_date_prefix("2026-5-17 00:00"), None);
        assert_eq!(canonical_date_prefix("2026-13-45T00:00:00Z"), None);
        assert_eq!(canonical_date_prefix("999999999"), None);
        assert_eq!(canonical_date_prefix("yesterday"), None);
        assert_eq!(canonical_date_prefix("2026-02-30"), None);
    }

    #[test]
    fn successor_bounds_the_block() {
        let s = prefix_successor("2026-05-19");
        assert_eq!(s, "2026-05-1:");
        assert!("2026-05-19T23:59:59.999Z" < s.as_str());
        assert!("2026-05-19 zzz" < s.as_str());
        assert!("2026-05-2" >= s.as_str());
        assert!("2026-05-20" > s.as_str());
    }

    #[test]
    fn move_columns_by_name() {
        let n: Vec<String> = ["public_key", "name", "lat", "extra"]
            .map(String::from)
            .to_vec();
        let i: Vec<String> = ["LAT", "public_key", "name", "other"]
            .map(String::from)
            .to_vec();
        assert_eq!(move_columns(&n, &i), vec!["public_key", "name", "lat"]);
    }

    #[test]
    fn cutoff_arithmetic() {
        assert_eq!(cutoff_for(BASE, 7), BASE - 7 * DAY);
        assert_eq!(cutoff_for(i64::MIN + 5, 1_000_000), i64::MIN);
    }
}
