//! Command results and their output (README, "Commands": human table, `--json`, `-q`).
//!
//! A command returns a typed report: a `#[derive(Serialize)]` struct that
//! implements [`Report`] (its fields are the keys of `--json` and feed
//! `--metrics-file`; [`Report::human`] is the text without `--json`).
//! [`Outcome::from_report`] turns it into the [`Outcome`] the application
//! renders ([`render`]); commands not yet ported build an `Outcome` by hand.

use serde_json::{Map, Value};

/// A command's typed report.
pub trait Report: serde::Serialize {
    /// The report as text for a human (one or more lines).
    fn human(&self) -> String;
    /// The exit code of a run that produced this report (0: done; see the
    /// README's exit codes).
    fn exit_code(&self) -> i32 {
        0
    }
}

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

    /// The outcome of a typed report: its fields as the JSON object, its
    /// human text and exit code.
    pub fn from_report<R: Report>(r: &R) -> anyhow::Result<Outcome> {
        let json = match serde_json::to_value(r)? {
            Value::Object(m) => m,
            other => anyhow::bail!("internal error: a report serialised to {other}, not an object"),
        };
        Ok(Outcome {
            json,
            human: r.human(),
            exit_code: r.exit_code(),
        })
    }

    pub fn set(&mut self, key: &str, v: impl Into<Value>) -> &mut Self {
        self.json.insert(key.to_string(), v.into());
        self
    }
}

/// The text printed on stdout for a finished command: with `json` the one
/// JSON object (`command`, `db`, `ok`, `elapsed_ms` and the report's keys),
/// else the human report ending in a newline (nothing when it is empty).
pub fn render(command: &str, db: &str, elapsed_ms: f64, outcome: Outcome, json: bool) -> String {
    if json {
        let mut obj = Map::new();
        obj.insert("command".into(), command.into());
        obj.insert("db".into(), db.into());
        obj.insert("ok".into(), (outcome.exit_code == 0).into());
        obj.insert("elapsed_ms".into(), elapsed_ms.into());
        for (k, v) in outcome.json {
            obj.insert(k, v);
        }
        format!("{}\n", Value::Object(obj))
    } else if outcome.human.is_empty() {
        String::new()
    } else {
        let mut text = outcome.human;
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text
    }
}

/// A table for human reports: plain ASCII when NO_COLOR is set or stdout is
/// not a terminal (cron mail, journald), UTF-8 borders otherwise; as wide as
/// [`table_width`] says.
pub fn table(header: &[&str]) -> comfy_table::Table {
    use std::io::IsTerminal;
    let mut t = comfy_table::Table::new();
    let tty = std::io::stdout().is_terminal();
    // What comfy-table reads from the terminal (None without one).
    let detected = if tty { t.width() } else { None };
    if tty && std::env::var_os("NO_COLOR").is_none() {
        t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    } else {
        t.load_preset(comfy_table::presets::ASCII_MARKDOWN);
        t.force_no_tty();
    }
    t.set_width(table_width(
        std::env::var("COLUMNS").ok().as_deref(),
        tty,
        detected,
    ));
    t.set_content_arrangement(comfy_table::ContentArrangement::Dynamic);
    t.set_header(header.iter().copied());
    t
}

/// Narrower than this, a table cannot show its columns: a terminal that
/// reports less (0×0 under `script`, some `docker exec -t`, CI) reports
/// nothing useful.
pub const MIN_TABLE_WIDTH: u16 = 20;
/// The width on a terminal that reports no usable size.
pub const FALLBACK_TABLE_WIDTH: u16 = 100;
/// The width when stdout is not a terminal (cron mail, journald, a file).
pub const PIPE_TABLE_WIDTH: u16 = 120;

/// The width of human tables: `COLUMNS` when it is a whole number of at
/// least [`MIN_TABLE_WIDTH`]; else on a terminal its width when it reports
/// a usable one, [`FALLBACK_TABLE_WIDTH`] when not; else [`PIPE_TABLE_WIDTH`].
pub fn table_width(columns: Option<&str>, tty: bool, detected: Option<u16>) -> u16 {
    if let Some(c) = columns.and_then(|c| c.trim().parse::<u16>().ok()) {
        if c >= MIN_TABLE_WIDTH {
            return c;
        }
    }
    if !tty {
        return PIPE_TABLE_WIDTH;
    }
    match detected {
        Some(w) if w >= MIN_TABLE_WIDTH => w,
        _ => FALLBACK_TABLE_WIDTH,
    }
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

/// A byte count for people: `6.0 MiB (6340712 bytes)`, or `512 bytes` below
/// one KiB (the exact count stays, a script or a careful operator needs it).
pub fn bytes(n: u64) -> String {
    if n < 1024 {
        format!("{n} bytes")
    } else {
        format!("{} ({n} bytes)", indicatif::HumanBytes(n))
    }
}

/// [`bytes`] of a signed count (negative counts are shown as 0 bytes).
pub fn bytes_i(n: i64) -> String {
    bytes(u64::try_from(n).unwrap_or(0))
}

/// The database path as every report and metric names it: absolute and
/// canonical (symbolic links and `..` resolved) when the file exists,
/// else absolute against the current directory (a database `migrate
/// --create` has not created yet).
pub fn display_path(p: &std::path::Path) -> String {
    if p.as_os_str().is_empty() {
        return String::new();
    }
    let abs = std::fs::canonicalize(p).unwrap_or_else(|_| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            std::env::current_dir().map_or_else(|_| p.to_path_buf(), |d| d.join(p))
        }
    });
    abs.display().to_string()
}

/// Round milliseconds to one decimal for reports.
pub fn ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

/// `PATH` as an operator can paste it into a shell (single-quoted when it
/// holds anything but plain path characters).
pub fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Up to `max` items joined with ", ", then "…" when there are more.
fn some_of(items: &[String], max: usize) -> String {
    let mut s = items
        .iter()
        .take(max)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > max {
        s.push_str(", …");
    }
    s
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The one stderr line of a run that ended without error but not OK (a
/// not-ready verdict, exit 3), printed even with `-q` so that journald and
/// cron record why: what is missing and the command that fixes it.
pub fn verdict_line(command: &str, db: &str, out: &Outcome) -> String {
    let j = &out.json;
    if let Some(diff) = j.get("diff").and_then(|d| d.as_array()) {
        // check --diff: the objects whose difference breaks CoreScope.
        let breaks: Vec<String> = diff
            .iter()
            .filter(|e| e.get("severity").and_then(|s| s.as_str()) == Some("breaks"))
            .filter_map(|e| e.get("object").and_then(|o| o.as_str()).map(str::to_string))
            .collect();
        return format!(
            "corescope {command}: schema differs from the catalog: {} difference{} that break{} CoreScope ({}); what to do for each: corescope check --diff --db {}",
            breaks.len(),
            if breaks.len() == 1 { "" } else { "s" },
            if breaks.len() == 1 { "s" } else { "" },
            some_of(&breaks, 5),
            shell_word(db)
        );
    }
    let missing = strings(j.get("missing"));
    let pending = strings(j.get("pending_migrations"));
    let mut parts = Vec::new();
    for (items, noun, shown) in [
        (&missing, "missing object", 5),
        (&pending, "pending migration", 3),
    ] {
        if !items.is_empty() {
            parts.push(format!(
                "{} {noun}{} ({})",
                items.len(),
                if items.len() == 1 { "" } else { "s" },
                some_of(items, shown)
            ));
        }
    }
    let dbw = shell_word(db);
    if !parts.is_empty() {
        let fix = if command == "migrate" {
            // migrate already ran: what stopped it is in its skipped steps.
            let skipped: Vec<String> = j
                .get("skipped")
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|s| {
                            Some(format!(
                                "{}: {}",
                                s.get("name")?.as_str()?,
                                s.get("reason")?.as_str()?
                            ))
                        })
                        .collect()
                })
                .unwrap_or_default();
            if skipped.is_empty() {
                format!(
                    "run: corescope migrate --db {dbw} again; details: corescope check --db {dbw}"
                )
            } else {
                format!(
                    "skipped {}; details: corescope check --db {dbw}",
                    some_of(&skipped, 2)
                )
            }
        } else {
            format!("run: corescope migrate --db {dbw}")
        };
        return format!(
            "corescope {command}: not ready: {}; {fix}",
            parts.join(", ")
        );
    }
    let mut warnings: Vec<String> = Vec::new();
    for w in j
        .get("warnings")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
    {
        if let Some(code) = w.get("code").and_then(|c| c.as_str()) {
            if !warnings.iter().any(|x| x == code) {
                warnings.push(code.to_string());
            }
        }
    }
    let total = j
        .get("warnings")
        .and_then(|v| v.as_array())
        .map_or(0, std::vec::Vec::len);
    if !warnings.is_empty() {
        return format!(
            "corescope {command}: not ready (--strict): {total} warning{} ({}); what each means and what to do: corescope {command} --db {dbw}",
            if total == 1 { "" } else { "s" },
            some_of(&warnings, 5)
        );
    }
    format!(
        "corescope {command}: exit {} (run without -q for the report: corescope {command} --db {dbw})",
        out.exit_code
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn outcome(j: Value, code: i32) -> Outcome {
        let mut o = Outcome::new();
        o.exit_code = code;
        if let Value::Object(m) = j {
            o.json = m;
        }
        o
    }

    #[test]
    fn verdict_names_what_is_missing_and_the_fix() {
        let o = outcome(
            json!({"missing": ["table:neighbor_edges", "observers.iata", "index:idx_x"],
                   "pending_migrations": ["a_v1", "b_v1"], "warnings": []}),
            3,
        );
        assert_eq!(
            verdict_line("check", "/var/lib/c s/x.db", &o),
            "corescope check: not ready: 3 missing objects (table:neighbor_edges, observers.iata, index:idx_x), \
             2 pending migrations (a_v1, b_v1); run: corescope migrate --db '/var/lib/c s/x.db'"
        );
        let many: Vec<String> = (0..7).map(|i| format!("t.c{i}")).collect();
        let o = outcome(json!({"missing": many}), 3);
        let l = verdict_line("check", "/x.db", &o);
        assert!(
            l.contains("7 missing objects (t.c0, t.c1, t.c2, t.c3, t.c4, …)"),
            "{l}"
        );
        let o = outcome(
            json!({"missing": [], "pending_migrations": [], "warnings": [{"code": "journal_mode_not_wal", "message": "m"}]}),
            3,
        );
        assert_eq!(
            verdict_line("check", "/x.db", &o),
            "corescope check: not ready (--strict): 1 warning (journal_mode_not_wal); what each means and what to do: corescope check --db /x.db"
        );
        let o = outcome(
            json!({"missing": ["index:idx_observations_dedup"], "skipped": [{"name": "index idx_observations_dedup", "reason": "2 duplicate groups"}]}),
            3,
        );
        let l = verdict_line("migrate", "/x.db", &o);
        assert!(l.starts_with("corescope migrate: not ready: 1 missing object (index:idx_observations_dedup); skipped index idx_observations_dedup: 2 duplicate groups"), "{l}");
    }

    #[test]
    fn table_widths() {
        // COLUMNS wins wherever it is usable.
        assert_eq!(table_width(Some("60"), true, Some(200)), 60);
        assert_eq!(table_width(Some(" 60 "), false, None), 60);
        // A terminal that reports 0×0, or nothing: the fallback.
        assert_eq!(table_width(None, true, Some(0)), FALLBACK_TABLE_WIDTH);
        assert_eq!(table_width(None, true, None), FALLBACK_TABLE_WIDTH);
        assert_eq!(table_width(Some("0"), true, Some(0)), FALLBACK_TABLE_WIDTH);
        assert_eq!(table_width(Some("wide"), true, Some(150)), 150);
        // No terminal: the pipe width.
        assert_eq!(table_width(None, false, None), PIPE_TABLE_WIDTH);
        assert_eq!(table_width(Some("5"), false, None), PIPE_TABLE_WIDTH);
    }

    #[test]
    fn shell_words() {
        assert_eq!(
            shell_word("/var/lib/corescope/a.db"),
            "/var/lib/corescope/a.db"
        );
        assert_eq!(shell_word("it's.db"), "'it'\\''s.db'");
        assert_eq!(bytes(512), "512 bytes");
        assert_eq!(bytes(6_340_712), "6.05 MiB (6340712 bytes)");
        assert_eq!(bytes_i(-1), "0 bytes");
        assert_eq!(shell_word(""), "''");
    }
}
