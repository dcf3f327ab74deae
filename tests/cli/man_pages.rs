//! man pages (committed in man/, generated from the clap definition) and
//! shell completions (issue 7).

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
