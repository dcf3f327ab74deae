//! `corescope gen-man DIR` (hidden): the man pages, generated from the clap
//! definition with clap_mangen plus the sections clap does not know about
//! (EXIT STATUS, ENVIRONMENT, FILES, SEE ALSO). The pages in `man/` are
//! committed; `tests/man.rs` fails when they are stale. Regenerate with
//! `cargo run -- gen-man man`.

use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;
use clap_mangen::roff::{bold, italic, roman, Roff};
use clap_mangen::Man;

use crate::cli::{Cli, GenManArgs, METRICS_COMMANDS, WRITE_COMMANDS};
use crate::report::{Outcome, Report};

pub fn run(args: &GenManArgs) -> anyhow::Result<Outcome> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let pages = generate(&args.dir)?;
    Outcome::from_report(&GenManReport {
        pages,
        dir: &args.dir,
    })
}

/// The pages written (file names in `dir`).
#[derive(serde::Serialize)]
struct GenManReport<'a> {
    pages: Vec<String>,
    #[serde(skip)]
    dir: &'a Path,
}

impl Report for GenManReport<'_> {
    fn human(&self) -> String {
        self.pages
            .iter()
            .map(|p| format!("wrote {}\n", self.dir.join(p).display()))
            .collect::<Vec<_>>()
            .concat()
    }
}

/// Write every page into `dir`; returns the file names.
pub fn generate(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut root = Cli::command().disable_help_subcommand(true);
    root.build();
    let mut pages = Vec::new();
    let subs: Vec<clap::Command> = root
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    let see_also: Vec<String> = subs.iter().flat_map(page_names).collect();
    pages.push(write_page(dir, &root, Kind::Root, &see_also)?);
    for sub in &subs {
        let kind = kind_of(sub.get_name());
        write_tree(dir, sub, kind, &mut pages)?;
    }
    Ok(pages)
}

/// The page names (without section) of a subcommand and its own subcommands.
fn page_names(cmd: &clap::Command) -> Vec<String> {
    let mut v = vec![display(cmd)];
    for s in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        v.extend(page_names(s));
    }
    v
}

fn display(cmd: &clap::Command) -> String {
    cmd.get_display_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_string()
}

fn write_tree(
    dir: &Path,
    cmd: &clap::Command,
    kind: Kind,
    pages: &mut Vec<String>,
) -> anyhow::Result<()> {
    pages.push(write_page(dir, cmd, kind, &["corescope".to_string()])?);
    for s in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_tree(dir, s, kind, pages)?;
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Root,
    Write,
    Metrics,
    Other,
}

fn kind_of(name: &str) -> Kind {
    if WRITE_COMMANDS.contains(&name) {
        Kind::Write
    } else if METRICS_COMMANDS.contains(&name) {
        Kind::Metrics
    } else {
        Kind::Other
    }
}

fn write_page(
    dir: &Path,
    cmd: &clap::Command,
    kind: Kind,
    see_also: &[String],
) -> anyhow::Result<String> {
    let man = Man::new(cmd.clone())
        .manual("corescope manual")
        .source(format!("corescope {}", env!("CARGO_PKG_VERSION")));
    let file = man.get_filename();
    let mut buf: Vec<u8> = Vec::new();
    render(&man, cmd, kind, see_also, &mut buf)?;
    let path = dir.join(&file);
    std::fs::write(&path, &buf).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(file)
}

/// Pages every page refers to besides corescope's own.
const SEE_ALSO_OTHERS: &[&str] = &["systemd.timer(5)", "flock(2)"];

fn render(
    man: &Man,
    cmd: &clap::Command,
    kind: Kind,
    see_also: &[String],
    w: &mut Vec<u8>,
) -> std::io::Result<()> {
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(w)?;
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(w)?;
    }
    if kind != Kind::Root && (cmd.get_after_help().is_some() || cmd.get_after_long_help().is_some())
    {
        let mut extra = Vec::new();
        man.render_extra_section(&mut extra)?;
        let text = String::from_utf8_lossy(&extra).replacen(".SH EXTRA", ".SH NOTES", 1);
        w.extend_from_slice(text.as_bytes());
    }
    // JSON OUTPUT: the keys of the command's --json object, from docs/json.md.
    w.extend_from_slice(
        crate::cli::json_doc::json_section(&display(cmd))
            .unwrap_or_default()
            .as_bytes(),
    );
    let mut roff = Roff::default();
    exit_status(&mut roff, kind);
    environment(&mut roff);
    files(&mut roff, kind, cmd);
    roff.control("SH", ["SEE ALSO"]);
    let mut refs: Vec<String> = see_also.iter().map(|n| format!("{n}(1)")).collect();
    refs.extend(SEE_ALSO_OTHERS.iter().map(|r| (*r).to_string()));
    roff.text(bold_list(refs));
    roff.to_writer(w)?;
    man.render_version_section(w)?;
    Ok(())
}
/// Bold names separated by roman ", ".
fn bold_list(names: impl IntoIterator<Item = String>) -> Vec<clap_mangen::roff::Inline> {
    let mut line = Vec::new();
    for (i, n) in names.into_iter().enumerate() {
        if i > 0 {
            line.push(roman(", "));
        }
        line.push(bold(n));
    }
    line
}

fn tp(roff: &mut Roff, term: Vec<clap_mangen::roff::Inline>, body: &str) {
    roff.control("TP", []);
    roff.text(term);
    roff.text([roman(body)]);
}

/// EXIT STATUS: code and meaning.
const EXIT_STATUS: &[(&str, &str)] = &[
    (
        "0",
        "Success (also a run stopped by --max-seconds, reported as incomplete; the next run resumes).",
    ),
    (
        "1",
        "Error: cannot open, not a SQLite database, corrupt, I/O or SQL failure.",
    ),
    (
        "2",
        "Usage error: unknown flag, invalid option value, no database given.",
    ),
    (
        "3",
        "check found the schema not ready or migrations pending (with --strict: or any warning); a write command refused because the schema is not migrated (run corescope migrate).",
    ),
    (
        "75",
        "Busy, try again next run: another run of the same write command holds the run lock on this database (--wait waits instead), or another writer held SQLite's write lock longer than --busy-timeout. Nothing was half-done. systemd units treat it as success (SuccessExitStatus=75).",
    ),
];

fn exit_status(roff: &mut Roff, kind: Kind) {
    roff.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in EXIT_STATUS {
        tp(roff, vec![bold(*code)], meaning);
    }
    if kind == Kind::Other {
        roff.text([roman(
            "This command does not use the database; it exits 0 unless it cannot write its output.",
        )]);
    }
}

/// ENVIRONMENT: the variables (one entry may name several) and what they do.
const ENVIRONMENT: &[(&[&str], &str)] = &[
    (
        &["CORESCOPE_DB"],
        "The database file when --db is not given.",
    ),
    (
        &["CORESCOPE_CONFIG"],
        "CoreScope's config.json when --config is not given (dbPath, retention.*, neighborEdgesMaxAgeDays, db.*, observerBlacklist).",
    ),
    (
        &["CORESCOPE_METRICS_FILE"],
        "The Prometheus metrics file when --metrics-file is not given.",
    ),
    (
        &["RUST_LOG"],
        "Log filter (env_logger syntax, e.g. info or corescope=debug); overrides -v and -q.",
    ),
    (
        &["SQLITE_TMPDIR", "TMPDIR"],
        "Where SQLite writes temporary files, notably the copy of the database that vacuum --full builds (the first usable of SQLITE_TMPDIR, TMPDIR, /var/tmp, /usr/tmp, /tmp); vacuum --full checks the free space there too and names the directory in its messages.",
    ),
    (
        &["NO_COLOR"],
        "When set to a non-empty value: no colour in logs, plain ASCII tables. Colour is only ever used on a terminal.",
    ),
    (
        &["JOURNAL_STREAM"],
        "Set by systemd. When it names the device and inode of stderr, log lines carry sd-daemon(3) priority prefixes (<3> error, <4> warning, <6> info, <7> debug) and no timestamps, so journald records each line's priority.",
    ),
];

fn environment(roff: &mut Roff) {
    roff.control("SH", ["ENVIRONMENT"]);
    for (names, meaning) in ENVIRONMENT {
        tp(
            roff,
            bold_list(names.iter().map(|n| (*n).to_string())),
            meaning,
        );
    }
}

fn files(roff: &mut Roff, kind: Kind, cmd: &clap::Command) {
    let lock = matches!(kind, Kind::Root | Kind::Write);
    let metrics = matches!(kind, Kind::Root | Kind::Write | Kind::Metrics);
    if !lock && !metrics {
        return;
    }
    roff.control("SH", ["FILES"]);
    if lock {
        let name = if kind == Kind::Root {
            "COMMAND".to_string()
        } else {
            cmd.get_name().to_string()
        };
        roff.control("TP", []);
        roff.text([italic("DB"), bold(format!(".corescope-{name}.lock"))]);
        roff.text([roman(
            "The run lock of a write command, beside the database: an exclusive flock(2) held for the whole run, so two runs of the same command on the same database never overlap (different commands may). It holds the pid of the last holder. The kernel releases it when the holder exits or is killed, so it never goes stale and never needs deleting. If it cannot be created (read-only directory) the command warns and runs without it; correctness never depends on it.",
        )]);
    }
    if metrics {
        roff.control("TP", []);
        roff.text([bold("--metrics-file "), italic("PATH")]);
        roff.text([roman(
            "Prometheus text-format metrics for node_exporter's textfile collector, e.g. /var/lib/prometheus/node-exporter/corescope.prom. One file may be shared by all commands: every series carries a command label and a run rewrites only its own command's series, under an flock on a hidden lock file beside it (.NAME.lock for NAME). The file is replaced atomically (a hidden temp file in the same directory, fsynced, renamed). Metrics: corescope_last_run_timestamp_seconds, corescope_last_success_timestamp_seconds (unchanged by a failed run), corescope_last_exit_code, corescope_run_duration_seconds, corescope_run_complete, corescope_rows_total{kind}, corescope_max_lock_hold_seconds, corescope_schema_ready, corescope_pending_migrations, corescope_pending_backfill_rows{task}, corescope_warnings.",
        )]);
    }
}
