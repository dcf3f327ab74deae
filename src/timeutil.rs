//! Time parsing and formatting for every format CoreScope stores.
//! All comparisons in corescope are done on epoch seconds, never on text.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};

/// Epoch seconds of a stored time value, or None when it does not parse.
///
/// Accepts RFC 3339 (`Z` or an offset, with or without fractional seconds),
/// `YYYY-MM-DD HH:MM:SS` (UTC, SQLite `datetime('now')`, optionally with a
/// fraction), `YYYY-MM-DDTHH:MM:SS` without zone (taken as UTC) and integer
/// epoch seconds as text. Fractions are truncated toward the earlier second.
pub fn parse_instant(s: &str) -> Option<i64> {
    let t = s.trim();
    if t.is_empty() {
        return None;
    }
    if t.bytes().all(|b| b.is_ascii_digit())
        || (t.starts_with('-') && t.len() > 1 && t[1..].bytes().all(|b| b.is_ascii_digit()))
    {
        return t.parse::<i64>().ok();
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Some(dt.timestamp());
    }
    // RFC 3339 with a space instead of T and a zone.
    if let Ok(dt) = DateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f%:z") {
        return Some(dt.timestamp());
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(ndt) = NaiveDateTime::parse_from_str(t, fmt) {
            return Some(ndt.and_utc().timestamp());
        }
    }
    if let Some(stripped) = t.strip_suffix('Z') {
        if let Ok(ndt) = NaiveDateTime::parse_from_str(stripped, "%Y-%m-%d %H:%M:%S%.f") {
            return Some(ndt.and_utc().timestamp());
        }
    }
    None
}

/// Parse a value the user typed for `--now`/`--end` (strict RFC 3339, or the
/// other stored formats). Returns an error message naming the value.
pub fn parse_user_time(s: &str) -> Result<i64, String> {
    parse_instant(s)
        .ok_or_else(|| format!("invalid time '{s}': expected RFC 3339, e.g. 2026-05-17T18:12:01Z"))
}

/// `YYYY-MM-DDTHH:MM:SSZ` for an epoch (the format CoreScope writes).
pub fn rfc3339(epoch: i64) -> String {
    match Utc.timestamp_opt(epoch, 0).single() {
        Some(dt) => dt.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        None => "1970-01-01T00:00:00Z".to_string(),
    }
}

/// `YYYY-MM-DD HH:MM:SS` (SQLite `datetime()` format) for an epoch.
pub fn sqlite_datetime(epoch: i64) -> String {
    match Utc.timestamp_opt(epoch, 0).single() {
        Some(dt) => dt.format("%Y-%m-%d %H:%M:%S").to_string(),
        None => "1970-01-01 00:00:00".to_string(),
    }
}

/// Current time in epoch seconds.
pub fn now_epoch() -> i64 {
    Utc::now().timestamp()
}

/// Parse a duration such as `90s`, `15m`, `6h`, `7d`, `2w` (or plain seconds).
pub fn parse_duration_secs(s: &str) -> Option<i64> {
    let t = s.trim();
    if t.is_empty() {
        return None;
    }
    let (num, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&t[..i], &t[i..]),
        None => (t, "s"),
    };
    let n: i64 = num.parse().ok()?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let base = 1_779_041_521; // 2026-05-17T18:12:01Z
        assert_eq!(parse_instant("2026-05-17T18:12:01Z"), Some(base));
        assert_eq!(parse_instant("2026-05-17T18:12:01.999Z"), Some(base));
        assert_eq!(parse_instant("2026-05-17T18:12:01.000Z"), Some(base));
        assert_eq!(parse_instant("2026-05-17T20:12:01+02:00"), Some(base));
        assert_eq!(parse_instant("2026-05-17 18:12:01"), Some(base));
        assert_eq!(parse_instant("2026-05-17T18:12:01"), Some(base));
        assert_eq!(parse_instant("1779041521"), Some(base));
        assert_eq!(parse_instant(""), None);
        assert_eq!(parse_instant("yesterday"), None);
        assert_eq!(parse_instant("2026-13-45T00:00:00Z"), None);
    }

    #[test]
    fn format_roundtrip() {
        assert_eq!(rfc3339(1_779_041_521), "2026-05-17T18:12:01Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(sqlite_datetime(1_779_041_521), "2026-05-17 18:12:01");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_secs("7d"), Some(604_800));
        assert_eq!(parse_duration_secs("90"), Some(90));
        assert_eq!(parse_duration_secs("2w"), Some(1_209_600));
        assert_eq!(parse_duration_secs("x"), None);
        assert_eq!(parse_duration_secs("5y"), None);
    }
}
