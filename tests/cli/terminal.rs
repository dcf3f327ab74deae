//! What a person at a terminal sees: progress on every long job (only on a
//! terminal, never with `--json`/`-q`, one style with short rates) and
//! tables as wide as `COLUMNS` says, or a sane width when the terminal
//! reports 0×0. The terminal is util-linux `script`'s pseudo-terminal, whose
//! size is 0×0 when its own stdin is not a terminal (as here); tests that
//! need it are skipped where `script` is missing.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::harness::{bin, exe, scrub, Corescope, Fixture};

/// `script` can run a command on a pseudo-terminal here.
fn have_script() -> bool {
    let ok = Command::new("script")
        .args(["-qec", "true", "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        println!("SKIP: util-linux script is not available");
    }
    ok
}

/// Run corescope with `args` on a pseudo-terminal of size 0×0 (stdout and
/// stderr both on it); returns the transcript and the exit code.
fn on_terminal(args: &[&str], env: &[(&str, &str)]) -> (String, i32) {
    let line = std::iter::once(exe().display().to_string())
        .chain(args.iter().map(|a| (*a).to_string()))
        .map(|w| format!("'{}'", w.replace('\'', "'\\''")))
        .collect::<Vec<_>>()
        .join(" ");
    let mut cmd = Command::new("script");
    scrub(&mut cmd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .args(["-qec", &line, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("run script");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

/// A seed-schema database with work for migrate, the backfills,
/// build-edges and prune.
fn work_db(dir: &Path) -> std::path::PathBuf {
    let db = dir.join("work.db");
    Corescope::new()
        .args(["synth", "-q", "--schema", "seed", "--seed", "3"])
        .args(["--transmissions", "1500", "--observations", "5000"])
        .args(["--nodes", "80", "--observers", "5", "--days", "3"])
        .args(["--null-from-pubkey", "0.5", "--end", "2026-05-17T18:12:00Z"])
        .db(&db)
        .run();
    db
}

/// Bytes that only a progress line writes (carriage return, ANSI escapes,
/// a rate).
fn has_progress(s: &str) -> bool {
    s.contains('\r') && s.contains("/s") || s.contains("\x1b[")
}

#[test]
fn no_progress_bytes_without_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let db = work_db(dir.path());
    let s = |p: &Path| p.display().to_string();
    for args in [
        vec!["migrate"],
        vec!["backfill"],
        vec!["build-edges", "--rebuild"],
        vec!["prune", "--now", "2026-06-30T00:00:00Z", "--node-days", "1"],
        vec!["vacuum", "--full"],
        vec!["check", "--deep"],
    ] {
        let out = bin().args(&args).arg("--db").arg(s(&db)).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            !has_progress(&stderr) && !stderr.contains("/s "),
            "{args:?} stderr: {stderr:?}"
        );
        assert!(!has_progress(&stdout), "{args:?} stdout: {stdout:?}");
    }
}

#[test]
fn every_long_job_shows_progress_on_a_terminal_in_one_style() {
    if !have_script() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let seed = work_db(dir.path());
    let migrated = dir.path().join("migrated.db");
    std::fs::copy(&seed, &migrated).unwrap();
    Corescope::new().args(["migrate", "-q"]).db(&migrated).run();
    let now = "2026-06-30T00:00:00Z";
    let jobs: &[(&[&str], &str)] = &[
        (&["migrate"], "migrate"),
        (&["backfill", "from-pubkey"], "from-pubkey"),
        (&["build-edges", "--rebuild"], "build-edges"),
        (
            &["prune", "--dry-run", "--node-days", "1"],
            "prune --dry-run",
        ),
        (&["prune", "--node-days", "1"], "prune"),
    ];
    let mut n = 0;
    // A fresh copy with the job's work still to do.
    let mut copy = |args: &[&str]| {
        n += 1;
        let db = dir.path().join(format!("run{n}.db"));
        std::fs::copy(
            if args[0] == "migrate" {
                &seed
            } else {
                &migrated
            },
            &db,
        )
        .unwrap();
        db.display().to_string()
    };
    for (args, label) in jobs {
        let mut a: Vec<String> = args.iter().map(|s| (*s).to_string()).collect();
        if args[0] == "prune" {
            a.extend(["--now".to_string(), now.to_string()]);
        }
        let with = |db: String, extra: Option<&str>| {
            let mut v: Vec<String> = a.clone();
            v.extend(["--db".to_string(), db]);
            v.extend(extra.map(str::to_string));
            v
        };
        let run = |v: Vec<String>| {
            let refs: Vec<&str> = v.iter().map(String::as_str).collect();
            on_terminal(&refs, &[])
        };
        let (text, code) = run(with(copy(args), None));
        assert_eq!(code, 0, "{args:?}: {text}");
        // The job's name, a count and a short rate ("12.3k rows/s", never
        // a long fraction).
        let line = text
            .split(['\r', '\n'])
            .find(|l| l.contains(label) && l.contains("/s"))
            .unwrap_or_else(|| panic!("{args:?}: no progress line in {text:?}"));
        let rate = line
            .split("  ")
            .find(|p| p.ends_with("/s"))
            .unwrap_or_else(|| panic!("{args:?}: no rate in {line:?}"));
        let number = rate.split(' ').next().unwrap();
        assert!(
            number.len() <= 5 && !number.contains(','),
            "{args:?}: rate {rate:?} in {line:?}"
        );
        // ... and never with --json or -q (the same work to do).
        for quiet in ["--json", "-q"] {
            let (text, code) = run(with(copy(args), Some(quiet)));
            assert_eq!(code, 0, "{args:?} {quiet}: {text}");
            assert!(
                !has_progress(&text) && !text.contains("/s "),
                "{args:?} {quiet}: {text:?}"
            );
        }
    }
    let db = copy(&["vacuum"]);
    // vacuum --full: one statement, a spinner with the elapsed time.
    let (text, code) = on_terminal(&["vacuum", "--full", "--db", &db], &[]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("vacuum --full") && text.contains("VACUUM: rewriting"),
        "{text:?}"
    );
    let (text, code) = on_terminal(&["vacuum", "--full", "-q", "--db", &db], &[]);
    assert_eq!(code, 0, "{text}");
    assert!(text.is_empty(), "vacuum --full -q: {text:?}");
}

/// Lines of a table rendering, widths in characters.
fn widths(text: &str) -> Vec<usize> {
    text.split(['\r', '\n'])
        .filter(|l| !l.is_empty())
        .map(|l| l.chars().count())
        .collect()
}

#[test]
fn tables_honour_columns() {
    let dir = tempfile::tempdir().unwrap();
    let db = Fixture::Legacy.copy_to(dir.path());
    let run = |columns: Option<&str>| {
        let mut c = Corescope::new().args(["check"]).db(&db).expect_code(3);
        if let Some(c2) = columns {
            c = c.env("COLUMNS", c2);
        }
        c.stdout()
    };
    let narrow = run(Some("60"));
    let w = widths(&narrow);
    assert!(w.iter().all(|n| *n <= 60), "COLUMNS=60: {w:?}\n{narrow}");
    assert!(narrow.contains("schema ready"), "{narrow}");
    // Without COLUMNS and without a terminal: 120, wider than 60.
    let piped = run(None);
    let w = widths(&piped);
    assert!(w.iter().all(|n| *n <= 120), "{w:?}");
    assert!(w.iter().any(|n| *n > 60), "{w:?}");
    // A nonsense COLUMNS is ignored.
    assert_eq!(run(Some("0")), piped);
}

#[test]
fn tables_on_a_terminal_of_size_0x0_keep_a_sane_width() {
    if !have_script() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = Fixture::Legacy.copy_to(dir.path()).display().to_string();
    let (text, code) = on_terminal(&["check", "--db", &db], &[]);
    assert_eq!(code, 3, "{text}");
    let w = widths(&text);
    // Not one character per column: lines as wide as the fallback of 100.
    assert!(w.iter().all(|n| *n <= 100), "{w:?}\n{text}");
    assert!(w.iter().filter(|n| **n > 80).count() > 5, "{w:?}\n{text}");
    assert!(text.contains("schema ready"), "{text}");
    // COLUMNS wins on a terminal too.
    let (text, _) = on_terminal(&["check", "--db", &db], &[("COLUMNS", "70")]);
    let w = widths(&text);
    assert!(w.iter().all(|n| *n <= 70), "{w:?}\n{text}");
    assert!(w.iter().any(|n| *n > 60), "{w:?}\n{text}");
}
