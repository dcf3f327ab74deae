//! `corescope gen-man DIR` (hidden): the man pages, generated from the clap
//! definition with clap_mangen plus the sections clap does not know about:
//! NOTES (the command's short `after_help`), EXAMPLES (the table of
//! `cli::examples`, which `--help` shows too), for `check` WARNINGS (every
//! warning code and what to do, from the "### code" sections of
//! docs/database.md), and EXIT STATUS, ENVIRONMENT and FILES as they apply to
//! the command (from the options it has), SEE ALSO. The pages in `man/` are
//! committed; `tests/cli/man_pages.rs` fails when they are stale. Regenerate
//! with `cargo run -- gen-man man`.

use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;
use clap_mangen::roff::{bold, italic, roman, Roff};
use clap_mangen::Man;

use crate::cli::{examples, Cli, GenManArgs, METRICS_COMMANDS, WRITE_COMMANDS};
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
    pages.push(write_page(dir, &root, Kind::Root, "", &see_also)?);
    for sub in &subs {
        let kind = kind_of(sub.get_name());
        write_tree(dir, sub, kind, sub.get_name(), &mut pages)?;
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

/// The page of `cmd` (`path`: its name under corescope, e.g. `graph dump`)
/// and of its own subcommands.
fn write_tree(
    dir: &Path,
    cmd: &clap::Command,
    kind: Kind,
    path: &str,
    pages: &mut Vec<String>,
) -> anyhow::Result<()> {
    pages.push(write_page(
        dir,
        cmd,
        kind,
        path,
        &["corescope".to_string()],
    )?);
    for s in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_tree(dir, s, kind, &format!("{path} {}", s.get_name()), pages)?;
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
    path: &str,
    see_also: &[String],
) -> anyhow::Result<String> {
    let man = Man::new(cmd.clone())
        .manual("corescope manual")
        .source(format!("corescope {}", env!("CARGO_PKG_VERSION")));
    let file = man.get_filename();
    let mut buf: Vec<u8> = Vec::new();
    let page = Page { cmd, kind, path };
    render(&man, &page, see_also, &mut buf)?;
    let path = dir.join(&file);
    std::fs::write(&path, &buf).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(file)
}

/// Pages every page refers to besides corescope's own.
const SEE_ALSO_OTHERS: &[&str] = &["systemd.timer(5)", "flock(2)"];

/// The command a page is about.
struct Page<'a> {
    cmd: &'a clap::Command,
    kind: Kind,
    /// Its name under corescope (`""` for corescope itself, `graph dump`).
    path: &'a str,
}

impl Page<'_> {
    /// The command has the option whose id (field name) is `id`.
    fn has(&self, id: &str) -> bool {
        self.cmd.get_arguments().any(|a| a.get_id() == id)
    }
}

fn render(man: &Man, page: &Page, see_also: &[String], w: &mut Vec<u8>) -> std::io::Result<()> {
    let cmd = page.cmd;
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
    let mut roff = Roff::default();
    if page.kind != Kind::Root {
        if let Some(notes) = cmd.get_after_help() {
            roff.control("SH", ["NOTES"]);
            roff.text([roman(notes.to_string())]);
        }
    }
    examples_section(&mut roff, page.path);
    if page.path == "check" {
        warnings_section(&mut roff);
    }
    roff.to_writer(w)?;
    // JSON OUTPUT: the keys of the command's --json object, from docs/json.md.
    w.extend_from_slice(
        crate::cli::json_doc::json_section(&display(cmd))
            .unwrap_or_default()
            .as_bytes(),
    );
    let mut roff = Roff::default();
    exit_status(&mut roff, page);
    environment(&mut roff, page);
    files(&mut roff, page.kind, cmd);
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

/// EXAMPLES: the same table `--help` shows.
fn examples_section(roff: &mut Roff, path: &str) {
    let list = examples::of(path);
    if list.is_empty() {
        return;
    }
    roff.control("SH", ["EXAMPLES"]);
    for (line, what) in list {
        tp(roff, vec![bold(*line)], what);
    }
}

/// docs/database.md, whose "### code" sections under "## Anomalies `check`
/// reports" are the one description of every warning of `check`.
const DATABASE_MD: &str = include_str!("../../docs/database.md");

/// The warning codes of `check` and their description (markdown turned into
/// plain paragraphs), in the order of docs/database.md.
pub fn warning_codes() -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    let mut inside = false;
    let mut para = String::new();
    let flush = |out: &mut Vec<(String, Vec<String>)>, para: &mut String| {
        if let Some(last) = out.last_mut() {
            if !para.trim().is_empty() {
                last.1.push(plain(para.trim()));
            }
        }
        para.clear();
    };
    for line in DATABASE_MD.lines() {
        if line.starts_with("## ") {
            if inside {
                flush(&mut out, &mut para);
                break;
            }
            inside = line.starts_with("## Anomalies");
            continue;
        }
        if !inside {
            continue;
        }
        if let Some(code) = line.strip_prefix("### ") {
            flush(&mut out, &mut para);
            out.push((code.trim().to_string(), Vec::new()));
        } else if line.trim().is_empty() {
            flush(&mut out, &mut para);
        } else if !out.is_empty() {
            if !para.is_empty() {
                para.push(' ');
            }
            para.push_str(line.trim());
        }
    }
    out
}

/// Markdown inline text as plain text: links keep their text (a link to
/// another part of docs/database.md also says where that is), code spans
/// and emphasis lose their marks.
fn plain(md: &str) -> String {
    let mut s = String::new();
    let mut rest = md;
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        let link = after.find("](").and_then(|close| {
            after[close + 2..]
                .find(')')
                .map(|end| (close, close + 2 + end))
        });
        match link {
            Some((close, end)) => {
                s.push_str(&rest[..open]);
                let text = &after[..close];
                if after[close + 2..].starts_with('#') {
                    match text {
                        "above" | "below" => s.push_str("see docs/database.md"),
                        _ => s.push_str(&format!("{text}, in docs/database.md")),
                    }
                } else {
                    s.push_str(text);
                }
                rest = &after[end + 1..];
            }
            None => {
                s.push_str(&rest[..=open]);
                rest = after;
            }
        }
    }
    s.push_str(rest);
    s.replace("**", "").replace('`', "")
}

/// WARNINGS of `check`: every code, what it means and what to do.
fn warnings_section(roff: &mut Roff) {
    roff.control("SH", ["WARNINGS"]);
    roff.text([roman(
        "Each finding is a warning with a code (the code field of --json) and a message that says what to do. Warnings do not make a database not ready; with --strict any warning exits 3, except the codes accepted with --allow CODE or the config key corescope.checkAllow. Without --deep the codes that need a whole-table scan are not looked for (the report names them). The codes:",
    )]);
    for (code, paras) in warning_codes() {
        roff.control("TP", []);
        roff.text([bold(code)]);
        for (i, p) in paras.iter().enumerate() {
            if i > 0 {
                roff.control("IP", []);
            }
            roff.text([roman(p.as_str())]);
        }
    }
}

/// EXIT STATUS of corescope itself: every code any command uses.
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

/// The exit codes of one command and what each means for it.
fn exit_codes(page: &Page) -> Vec<(&'static str, String)> {
    if page.kind == Kind::Root {
        return EXIT_STATUS
            .iter()
            .map(|(c, m)| (*c, (*m).to_string()))
            .collect();
    }
    let name = page.path;
    // graph itself only dispatches to dump and stats, which open one.
    let opens_db = page.has("config") || name == "graph";
    let mut v = Vec::new();
    v.push((
        "0",
        if name == "check" {
            "Ready: every object of the target's catalog exists and no named migration is pending (warnings alone do not change this without --strict).".to_string()
        } else if page.has("max_seconds") {
            "Success, also a run stopped by --max-seconds (reported as incomplete; the next run resumes).".to_string()
        } else {
            "Success.".to_string()
        },
    ));
    v.push((
        "1",
        match name {
            "synth" => "Error: the database could not be created or written.".to_string(),
            "demo" => "Error: the demo database could not be made, or a step of the cycle ended with an unexpected exit code (the message names the step and where the database is kept).".to_string(),
            "schema" => "Error: the --from-db file cannot be opened or is not a SQLite database, or the output could not be written.".to_string(),
            _ if opens_db => "Error: cannot open, not a SQLite or CoreScope database, corrupt, I/O or SQL failure, malformed config.".to_string(),
            _ => "Error: the output could not be written.".to_string(),
        },
    ));
    v.push((
        "2",
        if opens_db {
            "Usage error: an unknown option or one this command does not take, an invalid or out-of-range value (the message names the allowed range), no database given, an output path that may not be written.".to_string()
        } else {
            "Usage error: an unknown option or one this command does not take, an invalid or out-of-range value.".to_string()
        },
    ));
    let three = match name {
        "check" => Some("Not ready: objects of the target are missing or named migrations are pending; with --strict also any warning not accepted (--allow, corescope.checkAllow); with --diff a difference that breaks CoreScope. The report, and with -q one stderr line, says what is missing and the command that fixes it."),
        "migrate" => Some("Something could not be applied (the report names each skipped step and why); the schema is not ready yet."),
        "graph" | "graph dump" | "graph stats" => Some("The database has no neighbor_edges table: run corescope migrate, then corescope build-edges."),
        _ if page.kind == Kind::Write => Some("Refused: the schema is not migrated (run corescope migrate first). Nothing was changed."),
        _ => None,
    };
    if let Some(m) = three {
        v.push(("3", m.to_string()));
    }
    if page.has("wait") {
        v.push(("75", format!("Busy, try again next run: another corescope {name} holds the run lock on this database (--wait waits instead), or another writer held SQLite's write lock longer than --busy-timeout. Nothing was half-done. The systemd units treat it as success (SuccessExitStatus=75).")));
    } else if opens_db {
        v.push(("75", "Busy, try again: a writer held SQLite's lock longer than --busy-timeout (possible on rollback-journal databases). Nothing was read half-way.".to_string()));
    }
    v
}

fn exit_status(roff: &mut Roff, page: &Page) {
    roff.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in exit_codes(page) {
        tp(roff, vec![bold(code)], &meaning);
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
        &["COLUMNS"],
        "The width of human tables when stdout is a terminal (default: the terminal's width; 100 when the terminal reports none, as under script(1) or some docker exec -t). When stdout is not a terminal tables are 120 columns wide unless COLUMNS says otherwise.",
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

fn environment(roff: &mut Roff, page: &Page) {
    roff.control("SH", ["ENVIRONMENT"]);
    let root = page.kind == Kind::Root;
    for (names, meaning) in ENVIRONMENT {
        let applies = match names[0] {
            "CORESCOPE_DB" => root || page.has("db"),
            "CORESCOPE_CONFIG" => root || page.has("config"),
            "CORESCOPE_METRICS_FILE" => root || page.has("metrics_file"),
            "SQLITE_TMPDIR" => root || page.path == "vacuum",
            "COLUMNS" => root || page.has("db"),
            _ => true,
        };
        if !applies {
            continue;
        }
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
