//! man pages (committed in man/, generated from the clap definition) and
//! shell completions, the operator's documentation generated from the CLI.

use crate::harness::common;

use std::path::Path;

use common::*;

const REGENERATE: &str = "regenerate with `cargo run -- gen-man man` and commit man/";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn committed_man_pages_are_current() {
    let tmp = tempfile::tempdir().unwrap();
    bin()
        .args(["gen-man", "-q"])
        .arg(tmp.path())
        .assert()
        .code(0);
    let committed = repo().join("man");
    assert!(committed.is_dir(), "man/ is missing: {REGENERATE}");
    let fresh = files(tmp.path());
    assert_eq!(
        files(&committed),
        fresh,
        "man pages added or removed: {REGENERATE}"
    );
    for name in &fresh {
        let a = std::fs::read_to_string(committed.join(name)).unwrap();
        let b = std::fs::read_to_string(tmp.path().join(name)).unwrap();
        assert!(a == b, "man/{name} is stale: {REGENERATE}");
    }
}

#[test]
fn a_page_for_every_command_with_exit_status_environment_files() {
    let man = repo().join("man");
    let root = std::fs::read_to_string(man.join("corescope.1")).unwrap();
    for section in [
        ".SH \"EXIT STATUS\"",
        ".SH ENVIRONMENT",
        ".SH FILES",
        ".SH SUBCOMMANDS",
    ] {
        assert!(root.contains(section), "corescope.1 lacks {section}");
    }
    for var in [
        "CORESCOPE_DB",
        "CORESCOPE_CONFIG",
        "RUST_LOG",
        "NO_COLOR",
        "JOURNAL_STREAM",
    ] {
        assert!(root.contains(var), "corescope.1 lacks {var}");
    }
    assert!(
        root.contains(".corescope\\-COMMAND.lock"),
        "lock file in FILES"
    );
    assert!(
        root.contains("\\-\\-metrics\\-file"),
        "metrics file in FILES"
    );
    // Every visible subcommand of the help has its page.
    let help = bin().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let commands: Vec<&str> = help
        .split("Commands:")
        .nth(1)
        .unwrap()
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter(|l| !l[2..].starts_with(' '))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(commands.contains(&"migrate") && commands.contains(&"check"));
    for c in commands {
        let page = man.join(format!("corescope-{c}.1"));
        let text = std::fs::read_to_string(&page)
            .unwrap_or_else(|_| panic!("no man page for {c}: {REGENERATE}"));
        assert!(text.contains(".SH \"EXIT STATUS\""), "{c}");
        assert!(text.contains(".SH ENVIRONMENT"), "{c}");
    }
    let migrate = std::fs::read_to_string(man.join("corescope-migrate.1")).unwrap();
    assert!(migrate.contains(".corescope\\-migrate.lock"));
    let check = std::fs::read_to_string(man.join("corescope-check.1")).unwrap();
    assert!(
        !check.contains(".corescope\\-check.lock"),
        "check takes no run lock"
    );
    assert!(check.contains("\\-\\-metrics\\-file"));
}

#[test]
fn man_renders_the_pages() {
    if std::process::Command::new("man")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("SKIP man rendering: man is not installed");
        return;
    }
    for name in files(&repo().join("man")) {
        let out = std::process::Command::new("man")
            .arg("-l")
            .arg(repo().join("man").join(&name))
            .env("MANWIDTH", "80")
            .env("MAN_KEEP_FORMATTING", "0")
            .env_remove("MANPAGER")
            .env("PAGER", "cat")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "man -l man/{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("warning"),
            "man -l man/{name} warns: {stderr}"
        );
        // Drop overstrike formatting ("N\x08N" is a bold N).
        let mut plain = String::new();
        for c in text.chars() {
            if c == '\x08' {
                plain.pop();
            } else {
                plain.push(c);
            }
        }
        assert!(plain.contains("NAME"), "man/{name}: {text}");
        assert!(plain.contains("EXIT STATUS"), "man/{name}: {text}");
        assert!(plain.contains("ENVIRONMENT"), "man/{name}: {text}");
    }
}

#[test]
fn completions_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = bin().args(["completions", shell]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.len() > 500, "{shell}: {text}");
        assert!(text.contains("corescope"), "{shell}");
        assert!(text.contains("migrate"), "{shell}");
        assert!(text.contains("metrics-file"), "{shell}");
    }
    // The bash script is valid bash.
    let out = bin().args(["completions", "bash"]).output().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("corescope.bash");
    std::fs::write(&f, &out.stdout).unwrap();
    match std::process::Command::new("bash")
        .arg("-n")
        .arg(&f)
        .output()
    {
        Ok(o) => assert!(
            o.status.success(),
            "bash -n: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(_) => println!("SKIP bash -n: bash not found"),
    }
    // No database needed, unknown shells are usage errors.
    bin().args(["completions", "tcsh"]).assert().code(2);
}

/// Every file under `rel` (a file or a directory, recursively), sorted.
fn doc_files(rel: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![repo().join(rel)];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        } else if p.is_file() {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// What a user who clones the repository reads: the docs, the man pages,
/// every message and help text (src/), the shipped units and rules.
const USER_FACING: &[&str] = &[
    "README.md",
    "RELIABILITY.md",
    "BENCHMARKS.md",
    "docs",
    "man",
    "src",
    "contrib",
    "bench",
];

#[test]
fn user_facing_files_do_not_cite_the_external_spec() {
    // The specification the project was built from is not part of the
    // repository: nothing a user reads may send them to it.
    let forbidden = ["spec §", "shared/spec", "corescope-db.md"];
    let mut hits = Vec::new();
    for rel in USER_FACING {
        let files = doc_files(rel);
        assert!(!files.is_empty(), "{rel} is missing");
        for f in files {
            let Ok(text) = std::fs::read_to_string(&f) else {
                continue; // not text
            };
            for (n, line) in text.lines().enumerate() {
                let lower = line.to_lowercase();
                if forbidden.iter().any(|p| lower.contains(p)) {
                    hits.push(format!(
                        "{}:{}: {}",
                        f.strip_prefix(repo()).unwrap_or(&f).display(),
                        n + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(
        hits.is_empty(),
        "say the rule in words or link docs/database.md / docs/decisions.md instead:\n{}",
        hits.join("\n")
    );
}

/// GitHub's anchor for a heading: lower-case, punctuation other than `-` and
/// `_` dropped, spaces as `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(markdown: &str) -> Vec<String> {
    let mut in_code = false;
    let mut out = Vec::new();
    for line in markdown.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            out.push(anchor(line.trim_start_matches('#')));
        }
    }
    out
}

/// Relative links `[text](target)` of a markdown file, outside code blocks.
fn relative_links(markdown: &str) -> Vec<String> {
    let mut in_code = false;
    let mut out = Vec::new();
    for line in markdown.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            rest = &rest[i + 2..];
            let Some(end) = rest.find(')') else { break };
            let target = &rest[..end];
            if !target.contains("://") && !target.starts_with("mailto:") {
                out.push(target.to_string());
            }
            rest = &rest[end..];
        }
    }
    out
}

#[test]
fn links_between_docs_resolve() {
    let mut md: Vec<std::path::PathBuf> = ["README.md", "RELIABILITY.md", "BENCHMARKS.md"]
        .iter()
        .map(|f| repo().join(f))
        .collect();
    for dir in ["docs", "bench", "contrib"] {
        md.extend(
            doc_files(dir)
                .into_iter()
                .filter(|p| p.extension().is_some_and(|e| e == "md")),
        );
    }
    let mut bad = Vec::new();
    let mut checked = 0;
    for f in &md {
        let text = std::fs::read_to_string(f).unwrap();
        let base = f.parent().unwrap();
        for link in relative_links(&text) {
            checked += 1;
            let (path, frag) = match link.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (link.as_str(), None),
            };
            let target = if path.is_empty() {
                f.clone()
            } else {
                base.join(path)
            };
            let name = f.strip_prefix(repo()).unwrap_or(f).display().to_string();
            if !target.exists() {
                bad.push(format!("{name}: {link}: no such file"));
                continue;
            }
            if let Some(frag) = frag {
                let t = std::fs::read_to_string(&target).unwrap_or_default();
                if !anchors(&t).iter().any(|a| a == frag) {
                    bad.push(format!("{name}: {link}: no such heading"));
                }
            }
        }
    }
    assert!(checked > 20, "only {checked} links found");
    assert!(bad.is_empty(), "broken links:\n{}", bad.join("\n"));
}

#[test]
fn every_check_warning_code_is_documented() {
    // Every source file of the check command (its warnings live there).
    let mut check = String::new();
    for e in std::fs::read_dir(repo().join("src/commands/check")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "rs") {
            check.push_str(&std::fs::read_to_string(p).unwrap());
        }
    }
    let db = std::fs::read_to_string(repo().join("docs/database.md")).unwrap();
    let mut codes: Vec<&str> = check
        .split("code: \"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .collect();
    codes.sort();
    codes.dedup();
    assert!(codes.len() >= 10, "{codes:?}");
    let missing: Vec<&&str> = codes
        .iter()
        .filter(|c| !db.lines().any(|l| l == format!("### {c}")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/database.md has no \"### CODE\" section for {missing:?}"
    );
}
