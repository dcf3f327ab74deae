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

/// The earliest `--now` accepted without `--allow-any-now`: 2020-01-01T00:00:00Z
/// (CoreScope and MeshCore did not exist before; an older value is a typo or
/// a wrong clock and would make prune keep or delete the wrong rows).
pub const NOW_EARLIEST: i64 = 1_577_836_800;
/// How far ahead of the system clock `--now` may be without `--allow-any-now`.
pub const NOW_MAX_AHEAD_SECS: i64 = 86_400;
/// The last second any time value may name: 9999-12-31T23:59:59Z (the
/// formats corescope reads and writes have four-digit years).
pub const TIME_MAX: i64 = 253_402_300_799;

/// The forms `--now` accepts, for error messages.
pub const NOW_FORMS: &str =
    "accepted forms: RFC 3339 (2026-05-17T18:12:01Z or 2026-05-17T20:12:01+02:00), \
'YYYY-MM-DD HH:MM:SS' in UTC, or epoch seconds (1779041521)";

/// The one parser of `--now` (prune, graph). `value` None: the system clock.
///
/// Refused (the message names the value, the reason and the accepted
/// forms): anything unparseable; an epoch in milliseconds or microseconds
/// (13 or more digits: it would be read as seconds thousands of years
/// ahead); a time outside 1970-01-01..9999-12-31; and, unless `allow_any`
/// (`--allow-any-now`), a time before 2020-01-01 or more than a day ahead
/// of the system clock `clock`.
pub fn parse_now(value: Option<&str>, clock: i64, allow_any: bool) -> Result<i64, String> {
    let Some(s) = value else {
        return Ok(clock);
    };
    let t = s.trim();
    let digits = t.strip_prefix('-').unwrap_or(t);
    let is_epoch = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    if is_epoch && digits.len() >= 13 {
        // 13 digits: milliseconds since 2001-09-09; 16: microseconds.
        let secs = t.parse::<i128>().map(|v| v / 1000).ok();
        return Err(match secs.and_then(|v| i64::try_from(v).ok()) {
            Some(v) if (0..=TIME_MAX).contains(&v) => format!(
                "'{s}' looks like an epoch in milliseconds, not seconds (as seconds it is thousands of years away); if it is milliseconds, give seconds: {v} ({}); {NOW_FORMS}",
                rfc3339(v)
            ),
            _ => format!(
                "'{s}' is out of range: times from 1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z; {NOW_FORMS}"
            ),
        });
    }
    let v = parse_instant(t).ok_or_else(|| format!("invalid time '{s}'; {NOW_FORMS}"))?;
    if !(0..=TIME_MAX).contains(&v) {
        return Err(format!(
            "'{s}' is out of range: times from 1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z; {NOW_FORMS}"
        ));
    }
    if allow_any {
        return Ok(v);
    }
    if v > clock.saturating_add(NOW_MAX_AHEAD_SECS) {
        return Err(format!(
            "'{s}' ({}) is more than a day ahead of the system clock ({}); a --now in the future makes prune delete rows that are not old yet. Check the value (seconds, not milliseconds) and the clock, or confirm with --allow-any-now; {NOW_FORMS}",
            rfc3339(v),
            rfc3339(clock)
        ));
    }
    if v < NOW_EARLIEST {
        return Err(format!(
            "'{s}' ({}) is before 2020-01-01, older than any CoreScope data; check the value, or confirm with --allow-any-now; {NOW_FORMS}",
            rfc3339(v)
        ));
    }
    Ok(v)
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
    fn now_bounds() {
        let clock = 1_779_041_521; // 2026-05-17T18:12:01Z
        assert_eq!(parse_now(None, clock, false), Ok(clock));
        assert_eq!(
            parse_now(Some("2026-05-17T00:00:00Z"), clock, false),
            Ok(1_778_976_000)
        );
        assert_eq!(parse_now(Some("1779041521"), clock, false), Ok(clock));
        // Up to a day ahead is fine (clock skew between hosts), more is not.
        assert!(parse_now(Some("1779127921"), clock, false).is_ok());
        let e = parse_now(Some("1779127922"), clock, false).unwrap_err();
        assert!(
            e.contains("more than a day ahead") && e.contains("--allow-any-now"),
            "{e}"
        );
        assert!(parse_now(Some("1779127922"), clock, true).is_ok());
        // Before 2020.
        let e = parse_now(Some("2019-12-31T23:59:59Z"), clock, false).unwrap_err();
        assert!(e.contains("before 2020-01-01"), "{e}");
        assert_eq!(
            parse_now(Some("2019-12-31T23:59:59Z"), clock, true),
            Ok(1_577_836_799)
        );
        // Milliseconds: never read as seconds, with or without the override.
        for allow in [false, true] {
            let e = parse_now(Some("1779000000000"), clock, allow).unwrap_err();
            assert!(
                e.contains("milliseconds") && e.contains("1779000000 (2026-05-17T06:40:00Z)"),
                "{e}"
            );
            let e = parse_now(Some("9223372036854775807"), clock, allow).unwrap_err();
            assert!(e.contains("out of range"), "{e}");
            let e = parse_now(Some("99999999999999999999999"), clock, allow).unwrap_err();
            assert!(e.contains("out of range"), "{e}");
            let e = parse_now(Some("-1"), clock, allow).unwrap_err();
            assert!(e.contains("out of range"), "{e}");
            let e = parse_now(Some("99999-01-01 00:00:00"), clock, allow).unwrap_err();
            assert!(e.contains("RFC 3339"), "{e}");
        }
        let e = parse_now(Some("yesterday"), clock, false).unwrap_err();
        assert!(
            e.contains("invalid time 'yesterday'") && e.contains("epoch seconds"),
            "{e}"
        );
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
