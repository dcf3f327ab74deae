//! Help and man pages per command: each command lists, and accepts, only
//! the options it uses; its man page has DESCRIPTION, OPTIONS, EXAMPLES
//! (the same as `--help`) and an EXIT STATUS for that command; `check`'s
//! page lists every warning code with what to do.

use std::path::Path;

use crate::harness::{bin, Corescope, Fixture};

fn help(args: &[&str]) -> String {
    let out = bin().args(args).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{args:?} --help");
    String::from_utf8(out.stdout).unwrap()
}

fn page(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("man")
        .join(format!("{name}.1"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The options of a command's help (`--name`), sorted.
fn options(help: &str) -> Vec<String> {
    let mut v: Vec<String> = help
        .lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let l = l
                .strip_prefix("-q, ")
                .or(l.strip_prefix("-v, "))
                .unwrap_or(l);
            let l = l.split_once(", ").map_or(l, |(_, rest)| rest);
            l.starts_with("--").then(|| {
                let o = l.split([' ', '=', '[', '<']).next().unwrap_or("");
                o.trim_end_matches("...").to_string()
            })
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

const WRITE_ONLY: &[&str] = &["--wait", "--max-lock-ms", "--max-seconds", "--dry-run"];
const DB: &[&str] = &["--db", "--config", "--busy-timeout"];

#[test]
fn each_command_lists_only_the_options_it_uses() {
    for cmd in [
        &["check"][..],
        &["graph", "dump"],
        &["graph", "stats"],
        &["schema"],
        &["completions"],
        &["demo"],
        &["synth"],
    ] {
        let opts = options(&help(cmd));
        for o in WRITE_ONLY.iter().chain(["--metrics-file"].iter()) {
            if *o == "--metrics-file" && cmd == ["check"] {
                continue;
            }
            assert!(
                !opts.contains(&o.to_string()),
                "{cmd:?} --help lists {o}: {opts:?}"
            );
        }
    }
    for cmd in [&["completions"][..], &["demo"]] {
        let opts = options(&help(cmd));
        for o in DB {
            assert!(
                !opts.contains(&o.to_string()),
                "{cmd:?} --help lists {o}: {opts:?}"
            );
        }
        assert!(opts.contains(&"--json".to_string()), "{cmd:?}: {opts:?}");
    }
    // The write commands list what they use, under their own headings.
    for cmd in ["backfill", "build-edges", "prune"] {
        let h = help(&[cmd]);
        let opts = options(&h);
        for o in [
            "--db",
            "--config",
            "--busy-timeout",
            "--wait",
            "--metrics-file",
            "--max-lock-ms",
            "--max-seconds",
        ] {
            assert!(
                opts.contains(&o.to_string()),
                "{cmd} --help lacks {o}: {opts:?}"
            );
        }
        assert!(
            h.contains("\nDatabase:\n") && h.contains("\nTimers:\n"),
            "{cmd}: {h}"
        );
    }
    let check = options(&help(&["check"]));
    for o in [
        "--db",
        "--config",
        "--busy-timeout",
        "--metrics-file",
        "--json",
        "--quiet",
    ] {
        assert!(
            check.contains(&o.to_string()),
            "check --help lacks {o}: {check:?}"
        );
    }
    // The root help lists only what applies to every command.
    let root = help(&[]);
    let opts = options(root.split("Commands:").nth(1).unwrap_or(""));
    assert_eq!(
        opts,
        ["--help", "--json", "--quiet", "--verbose", "--version"],
        "{root}"
    );
    // The man pages say the same.
    let check = page("corescope-check");
    assert!(!check.contains("\\-\\-wait") && !check.contains("\\-\\-max\\-lock\\-ms"));
    assert!(check.contains("\\-\\-busy\\-timeout"));
    let completions = page("corescope-completions");
    assert!(!completions.contains("\\-\\-db") && !completions.contains("CORESCOPE_DB"));
    let demo = page("corescope-demo");
    assert!(!demo.contains("\\-\\-db "), "demo page lists --db");
}

#[test]
fn options_a_command_does_not_use_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let db = Fixture::Legacy.copy_to(dir.path());
    let before = std::fs::read(&db).unwrap();
    let cases: &[&[&str]] = &[
        &["check", "--wait", "5"],
        &["check", "--wait"],
        &["check", "--max-lock-ms", "100"],
        &["check", "--max-seconds", "5"],
        &["check", "--dry-run"],
        &["graph", "stats", "--wait", "5"],
        &["graph", "dump", "--max-seconds", "5"],
        &["graph", "dump", "--metrics-file", "x.prom"],
        &["schema", "--db", "x.db"],
        &["completions", "bash", "--db", "x.db"],
        &["demo", "--db", "x.db"],
    ];
    for args in cases {
        let out = Corescope::new().args(*args).db(&db).expect_code(2).run();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("unexpected argument"), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    // Also when written before the command, as the global flags once were.
    let out = bin()
        .args(["--wait", "5", "check", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = bin()
        .args(["--db", "x.db", "completions", "bash"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(std::fs::read(&db).unwrap(), before, "nothing was written");
}

#[test]
fn database_options_before_the_command_and_from_the_environment_still_work() {
    let dir = tempfile::tempdir().unwrap();
    let db = Fixture::Legacy.copy_to(dir.path());
    let json = |out: std::process::Output| {
        let mut v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v.as_object_mut().unwrap().remove("elapsed_ms");
        (out.status.code(), v)
    };
    let after = json(
        bin()
            .args(["check", "--json", "--busy-timeout", "100", "--db"])
            .arg(&db)
            .output()
            .unwrap(),
    );
    assert_eq!(after.0, Some(3), "the legacy fixture is not ready");
    let before = json(
        bin()
            .args(["--db"])
            .arg(&db)
            .args(["--busy-timeout", "100", "--json", "check"])
            .output()
            .unwrap(),
    );
    assert_eq!(before, after);
    let env = json(
        bin()
            .args(["check", "--json"])
            .env("CORESCOPE_DB", &db)
            .output()
            .unwrap(),
    );
    assert_eq!(env, after);
    // graph: the options move behind the nested subcommand.
    let fresh = crate::harness::common::fresh_db(dir.path(), "fresh.db");
    let out = bin()
        .arg("--db")
        .arg(&fresh)
        .args(["graph", "stats", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // --wait before a write command keeps its optional value.
    let out = bin()
        .args(["--wait", "1", "--db"])
        .arg(&fresh)
        .args(["prune", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `.SH NAME` sections of a page, in order.
fn sections(page: &str) -> Vec<String> {
    page.lines()
        .filter_map(|l| l.strip_prefix(".SH "))
        .map(|s| s.trim_matches('"').to_string())
        .collect()
}

#[test]
fn man_pages_have_examples_and_their_own_exit_status() {
    for name in [
        "migrate",
        "check",
        "backfill",
        "build-edges",
        "prune",
        "vacuum",
        "graph-dump",
        "graph-stats",
        "synth",
        "demo",
        "schema",
        "completions",
    ] {
        let text = page(&format!("corescope-{name}"));
        let s = sections(&text);
        for want in [
            "NAME",
            "SYNOPSIS",
            "DESCRIPTION",
            "OPTIONS",
            "EXAMPLES",
            "EXIT STATUS",
        ] {
            assert!(
                s.iter().any(|x| x == want),
                "corescope-{name}.1 lacks {want}: {s:?}"
            );
        }
        // The examples are those of --help.
        let path: Vec<&str> = name.splitn(2, '-').collect();
        let args: Vec<&str> = if name.starts_with("graph-") {
            path
        } else {
            vec![name]
        };
        let h = help(&args);
        let examples = h
            .split("Examples:\n")
            .nth(1)
            .unwrap_or_else(|| panic!("{name} --help has no examples"));
        for line in examples
            .lines()
            .filter(|l| l.starts_with("  corescope") || l.starts_with("  diff"))
        {
            let roff = line.trim().replace('-', "\\-");
            assert!(
                text.contains(&roff),
                "corescope-{name}.1 lacks the example {line:?}"
            );
        }
        // EXIT STATUS names --max-seconds only where the command has it.
        let exit = text
            .split(".SH \"EXIT STATUS\"")
            .nth(1)
            .unwrap()
            .split(".SH")
            .next()
            .unwrap();
        let has_max_seconds = options(&h).contains(&"--max-seconds".to_string());
        assert_eq!(
            exit.contains("max\\-seconds"),
            has_max_seconds,
            "corescope-{name}.1 EXIT STATUS: {exit}"
        );
        // Busy (75) only where a CoreScope database is opened.
        assert_eq!(
            exit.contains("\\fB75\\fR"),
            options(&h).contains(&"--config".to_string()),
            "{name}: {exit}"
        );
    }
    // Only check exits 3 for a not-ready verdict; completions has no 3 at all.
    let completions = page("corescope-completions");
    assert!(!completions.contains("\\fB3\\fR"));
    let check = page("corescope-check");
    assert!(
        check.contains("\\fB3\\fR\nNot ready"),
        "check: exit 3 is the verdict"
    );
}

#[test]
fn check_man_page_lists_every_warning_code_with_what_to_do() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/database.md"))
            .unwrap();
    let anomalies = doc
        .split("## Anomalies `check` reports")
        .nth(1)
        .unwrap()
        .split("\n## ")
        .next()
        .unwrap();
    let codes: Vec<&str> = anomalies
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .collect();
    assert!(codes.len() >= 20, "{codes:?}");
    let text = page("corescope-check");
    let warnings = text
        .split(".SH WARNINGS")
        .nth(1)
        .expect("a WARNINGS section")
        .split("\n.SH")
        .next()
        .unwrap();
    for code in &codes {
        let roff = code.replace('-', "\\-");
        let at = warnings
            .find(&format!("\\fB{roff}\\fR"))
            .unwrap_or_else(|| panic!("WARNINGS lacks {code}"));
        // Followed by its description, not just the name.
        assert!(warnings[at..].len() > roff.len() + 40, "{code}");
    }
    assert!(
        warnings.contains("corescope build\\-edges \\-\\-rebuild"),
        "what to do is there"
    );
}
