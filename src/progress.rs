//! Progress on stderr, in one style for every long job: a bar when the
//! total is known ([`bar`]), a counter with a spinner when it is not
//! ([`counter`]), a spinner with the elapsed time for one long statement
//! ([`spinner`]). Each line starts with the job's name, right-aligned, and
//! shows rates in a readable form (`12.3k rows/s`, never `118,136.6155/s`).
//!
//! Callers create one only when progress is allowed: stderr is a terminal
//! and neither `--json` nor `-q` was given (`Ctx::progress_allowed`).

use std::time::Duration;

use indicatif::{ProgressBar, ProgressState, ProgressStyle};

/// How often a counter or spinner redraws without new progress (a long
/// batch or statement still shows that the job is alive).
const TICK: Duration = Duration::from_millis(200);

/// The job's name column.
const PREFIX: &str = "{prefix:>18}";

fn style(template: &str) -> ProgressStyle {
    let s = ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar());
    s.with_key("rate", |st: &ProgressState, w: &mut dyn std::fmt::Write| {
        let _ = write!(w, "{}", rate_text(st.per_sec()));
    })
    .with_key(
        "count",
        |st: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{}", count_text(st.pos()));
        },
    )
    .with_key(
        "total",
        |st: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{}", count_text(st.len().unwrap_or(0)));
        },
    )
    .progress_chars("=> ")
    .tick_chars("|/-\\ ")
}

/// A bar for a job of `len` `unit`s (`label` names the job).
pub fn bar(len: u64, label: &str, unit: &str) -> ProgressBar {
    ProgressBar::new(len)
        .with_style(style(&format!(
            "{PREFIX} [{{bar:30}}] {{count}}/{{total}} {unit}  {{rate}} {unit}/s  ETA {{eta}}  {{msg}}"
        )))
        .with_prefix(label.to_string())
}

/// A counter of `unit`s for a job whose total is not known in advance.
pub fn counter(label: &str, unit: &str) -> ProgressBar {
    let p = ProgressBar::new_spinner()
        .with_style(style(&format!(
            "{PREFIX} {{spinner}} {{count}} {unit}  {{rate}} {unit}/s  {{elapsed}}  {{msg}}"
        )))
        .with_prefix(label.to_string());
    p.enable_steady_tick(TICK);
    p
}

/// A spinner with the elapsed time, for one statement that reports no
/// progress of its own (`VACUUM`); `msg` says what it is doing.
pub fn spinner(label: &str, msg: &str) -> ProgressBar {
    let p = ProgressBar::new_spinner()
        .with_style(style(&format!("{PREFIX} {{spinner}} {{msg}}  {{elapsed}}")))
        .with_prefix(label.to_string())
        .with_message(msg.to_string());
    p.enable_steady_tick(TICK);
    p
}

/// A count for humans: `950`, `12.3k`, `4.56M`, `1.2G`.
pub fn count_text(n: u64) -> String {
    scaled(n as f64)
}

/// A rate for humans (per second): `0`, `950`, `12.3k`, `4.56M`.
pub fn rate_text(per_sec: f64) -> String {
    if per_sec.is_finite() && per_sec >= 0.0 {
        scaled(per_sec)
    } else {
        "0".to_string()
    }
}

/// Three significant digits at most, with k, M, G (powers of 1000).
fn scaled(v: f64) -> String {
    if v < 999.5 {
        return format!("{v:.0}");
    }
    let mut v = v;
    for unit in ["k", "M", "G", "T"] {
        v /= 1000.0;
        if v < 999.5 || unit == "T" {
            return if v < 9.995 {
                format!("{v:.2}{unit}")
            } else if v < 99.95 {
                format!("{v:.1}{unit}")
            } else {
                format!("{v:.0}{unit}")
            };
        }
    }
    format!("{v:.0}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_counts_are_short() {
        assert_eq!(rate_text(118_136.615_5), "118k");
        assert_eq!(rate_text(12_345.6), "12.3k");
        assert_eq!(rate_text(1_234.0), "1.23k");
        assert_eq!(rate_text(999.4), "999");
        assert_eq!(rate_text(999.6), "1.00k");
        assert_eq!(rate_text(0.4), "0");
        assert_eq!(rate_text(4_560_000.0), "4.56M");
        assert_eq!(rate_text(f64::NAN), "0");
        assert_eq!(rate_text(f64::INFINITY), "0");
        assert_eq!(rate_text(-3.0), "0");
        assert_eq!(count_text(160_203), "160k");
        assert_eq!(count_text(1_000_000), "1.00M");
        assert_eq!(count_text(7), "7");
        assert_eq!(count_text(u64::MAX), "18446744T");
    }

    #[test]
    fn the_templates_parse() {
        // A template error would silently fall back to the default style.
        for t in [
            format!("{PREFIX} [{{bar:30}}] {{count}}/{{total}} rows  {{rate}} rows/s  ETA {{eta}}  {{msg}}"),
            format!("{PREFIX} {{spinner}} {{count}} rows  {{rate}} rows/s  {{elapsed}}  {{msg}}"),
            format!("{PREFIX} {{spinner}} {{msg}}  {{elapsed}}"),
        ] {
            assert!(ProgressStyle::with_template(&t).is_ok(), "{t}");
        }
    }
}
