//! Command results and their output (README, "Commands": human table, `--json`, `-q`).

use serde_json::{Map, Value};

/// What a command hands back to `main`, which adds `command`, `db`, `ok`,
/// `elapsed_ms` and prints either the JSON object (`--json`) or `human`.
#[derive(Debug, Default)]
pub struct Outcome {
    pub json: Map<String, Value>,
    pub human: String,
    pub exit_code: i32,
}

impl Outcome {
    pub fn new() -> Outcome {
        Outcome::default()
    }

    pub fn set(&mut self, key: &str, v: impl Into<Value>) -> &mut Self {
        self.json.insert(key.to_string(), v.into());
        self
    }
}

/// A table for human reports: plain ASCII when NO_COLOR is set or stdout is
/// not a terminal (cron mail, journald), UTF-8 borders otherwise.
pub fn table(header: &[&str]) -> comfy_table::Table {
    use std::io::IsTerminal;
    let mut t = comfy_table::Table::new();
    if std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none() {
        t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    } else {
        t.load_preset(comfy_table::presets::ASCII_MARKDOWN);
        t.force_no_tty();
        t.set_width(120);
    }
    t.set_content_arrangement(comfy_table::ContentArrangement::Dynamic);
    t.set_header(header.iter().copied());
    t
}

/// Round milliseconds to one decimal for reports.
pub fn ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}
