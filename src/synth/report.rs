//! The report of a created synthetic database (`synth`, and the first step of
//! `demo`): its `--json` keys and its human text.

use std::collections::BTreeMap;

use serde::Serialize;

use super::writer::{Rows, Summary};
use super::{Config, Schema};
use crate::report::{self, Report};
use crate::timeutil;

/// What `synth` created.
#[derive(Debug, Serialize)]
pub struct SynthReport {
    /// The new database's path.
    pub created: String,
    pub schema: &'static str,
    pub seed: u64,
    /// First and last moment of the generated traffic (RFC 3339).
    pub start: String,
    pub end: String,
    pub rows: Rows,
    /// Planted anomalies: kind → count.
    pub anomalies: BTreeMap<String, u64>,
    pub indexes: u64,
    pub journal_mode: String,
    pub file_bytes: u64,
    /// Seconds spent writing rows and building indexes (one decimal).
    pub rows_seconds: f64,
    pub index_seconds: f64,
    /// The anomalies in the order they were planted, for the human text.
    #[serde(skip)]
    anomaly_order: Vec<(String, u64)>,
    #[serde(skip)]
    seconds: (f64, f64),
    #[serde(skip)]
    needs_migrate: bool,
}

/// `x` rounded to one decimal.
fn tenths(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

impl SynthReport {
    pub fn new(created: String, cfg: &Config, summary: Summary) -> SynthReport {
        SynthReport {
            // Absolute, like `db`.
            created: crate::report::display_path(std::path::Path::new(&created)),
            schema: cfg.schema.name(),
            seed: cfg.seed,
            start: timeutil::rfc3339(cfg.start()),
            end: timeutil::rfc3339(cfg.end),
            rows: summary.rows,
            anomalies: summary.anomalies.iter().cloned().collect(),
            indexes: summary.indexes,
            journal_mode: summary.journal_mode,
            file_bytes: summary.file_bytes,
            rows_seconds: tenths(summary.seconds_rows),
            index_seconds: tenths(summary.seconds_indexes),
            anomaly_order: summary.anomalies,
            seconds: (summary.seconds_rows, summary.seconds_indexes),
            needs_migrate: cfg.schema != Schema::Latest,
        }
    }
}

impl Report for SynthReport {
    fn human(&self) -> String {
        let mut t = report::table(&["table", "rows"]);
        for (name, n) in self.rows.table() {
            t.add_row(vec![name.to_string(), n.to_string()]);
        }
        let mut human = format!(
            "created {} ({} schema, seed {}, {} .. {}, {:.1} MB, journal_mode={})\n{t}\n",
            self.created,
            self.schema,
            self.seed,
            self.start,
            self.end,
            self.file_bytes as f64 / 1e6,
            self.journal_mode,
        );
        if !self.anomaly_order.is_empty() {
            let list: Vec<String> = self
                .anomaly_order
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            human.push_str(&format!("anomalies: {}\n", list.join(", ")));
        }
        human.push_str(&format!(
            "rows in {:.1} s, {} indexes in {:.1} s\n",
            self.seconds.0, self.indexes, self.seconds.1
        ));
        if self.needs_migrate {
            human.push_str(&format!(
                "next: corescope --db {} migrate\n",
                shell_quote(&self.created)
            ));
        }
        human
    }
}

/// Quote a path for a shell command line when needed.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:@%,".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/tmp/a.db"), "/tmp/a.db");
        assert_eq!(shell_quote("/tmp/my db's.db"), "'/tmp/my db'\\''s.db'");
    }
}
