//! Readers of SQLite values of any storage class: the one place that says
//! how a stored value becomes text, an integer, a number or an instant.
//!
//! CoreScope's columns hold whatever its writers stored over the years
//! (numbers as text, text as numbers, bytes that are not UTF-8). Each reader
//! states what it accepts; anything else is "no value" (`None`), never an
//! error and never a panic. Text that is not valid UTF-8:
//! - [`text`] and [`text_or_number`] treat it as no value (a key, id or
//!   JSON that is not UTF-8 cannot be one);
//! - [`text_lossy`] keeps it with U+FFFD in place of the invalid bytes (for
//!   derivations that must see every row, e.g. backfill reading decoded
//!   JSON, and then decide themselves).

use rusqlite::types::ValueRef;
use rusqlite::Row;

use crate::timeutil;

/// TEXT as a `&str`; any other storage class or invalid UTF-8: `None`.
pub fn text(v: ValueRef<'_>) -> Option<&str> {
    match v {
        ValueRef::Text(t) => std::str::from_utf8(t).ok(),
        _ => None,
    }
}

/// TEXT as a `String` (INTEGER and REAL as their decimal text, as stored by
/// writers that did not quote numbers); invalid UTF-8, NULL, BLOB: `None`.
pub fn text_or_number(v: ValueRef<'_>) -> Option<String> {
    match v {
        ValueRef::Text(t) => std::str::from_utf8(t).ok().map(str::to_string),
        ValueRef::Integer(i) => Some(i.to_string()),
        ValueRef::Real(f) => Some(f.to_string()),
        _ => None,
    }
}

/// Column `i` of `row` as TEXT, invalid UTF-8 replaced by U+FFFD; other
/// storage classes: `None`.
pub fn text_lossy(row: &Row<'_>, i: usize) -> rusqlite::Result<Option<String>> {
    Ok(match row.get_ref(i)? {
        ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
        _ => None,
    })
}

/// INTEGER only; anything else: `None`.
pub fn int(v: ValueRef<'_>) -> Option<i64> {
    match v {
        ValueRef::Integer(i) => Some(i),
        _ => None,
    }
}

/// Column `i` of `row` as an integer: INTEGER, or a REAL without a
/// fractional part (`4.0`); anything else: `None`.
pub fn whole_int(row: &Row<'_>, i: usize) -> rusqlite::Result<Option<i64>> {
    Ok(match row.get_ref(i)? {
        ValueRef::Integer(v) => Some(v),
        ValueRef::Real(v) if v.fract() == 0.0 => Some(v as i64),
        _ => None,
    })
}

/// A finite number: REAL, INTEGER, or TEXT that parses as a number
/// (surrounding spaces allowed); anything else: `None`.
pub fn real(v: ValueRef<'_>) -> Option<f64> {
    match v {
        ValueRef::Real(f) => Some(f),
        ValueRef::Integer(i) => Some(i as f64),
        ValueRef::Text(t) => std::str::from_utf8(t).ok()?.trim().parse().ok(),
        _ => None,
    }
    .filter(|f: &f64| f.is_finite())
}

/// An instant as epoch seconds: INTEGER as is, a finite REAL floored, TEXT in
/// any stored time format ([`timeutil::parse_instant`]); anything else:
/// `None`.
pub fn epoch(v: ValueRef<'_>) -> Option<i64> {
    match v {
        ValueRef::Integer(i) => Some(i),
        ValueRef::Real(f) if f.is_finite() => Some(f.floor() as i64),
        ValueRef::Text(_) => text(v).and_then(timeutil::parse_instant),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reader_says_what_it_accepts() {
        let bad = ValueRef::Text(b"a\xffb");
        assert_eq!(text(ValueRef::Text(b"ab")), Some("ab"));
        assert_eq!(text(bad), None);
        assert_eq!(text(ValueRef::Integer(3)), None);
        assert_eq!(text_or_number(ValueRef::Integer(3)).as_deref(), Some("3"));
        assert_eq!(text_or_number(bad), None);
        assert_eq!(int(ValueRef::Integer(7)), Some(7));
        assert_eq!(int(ValueRef::Real(7.0)), None);
        assert_eq!(real(ValueRef::Text(b" 1.5 ")), Some(1.5));
        assert_eq!(real(ValueRef::Real(f64::NAN)), None);
        assert_eq!(epoch(ValueRef::Real(10.7)), Some(10));
        assert_eq!(epoch(ValueRef::Text(b"1970-01-01T00:01:00Z")), Some(60));
        assert_eq!(epoch(ValueRef::Null), None);
        let c = rusqlite::Connection::open_in_memory().unwrap();
        let (t, w, f): (Option<String>, Option<i64>, Option<i64>) = c
            .query_row("SELECT CAST(x'61ff62' AS TEXT), 4.0, 4.5", [], |r| {
                Ok((text_lossy(r, 0)?, whole_int(r, 1)?, whole_int(r, 2)?))
            })
            .unwrap();
        assert_eq!(t.as_deref(), Some("a\u{fffd}b"));
        assert_eq!((w, f), (Some(4), None));
    }
}
