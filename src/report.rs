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

/// Write `text` to stdout and flush it.
pub fn write_stdout(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    if text.is_empty() {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// Print the final report of `command` and return the exit code. A reader
/// that went away (closed pipe: `... --json | head -c 200`) is not an error:
/// the work is done and committed, so the command's own exit code stands
/// and nothing more is printed. Any other failure to write the report (disk
/// full, I/O error) is an error: one line on stderr and exit 1.
pub fn print_report(command: &str, text: &str, code: i32) -> i32 {
    match write_stdout(text) {
        Ok(()) => code,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            log::debug!("stdout was closed before the report was written; exit code {code} kept");
            code
        }
        Err(e) => {
            crate::logging::print_error(&format!(
                "corescope {command}: error: cannot write the report to stdout: {e} (the command itself had finished with exit code {code}; anything it changed is committed)"
            ));
            crate::error::EXIT_ERROR
        }
    }
}

/// Round milliseconds to one decimal for reports.
pub fn ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}
