//! The README's timer setup, run as written into a temporary root: the
//! install script creates the user, the state directory, the env file and
//! the units; the installed units verify; the command of every enabled
//! timer's service succeeds with the installed env file and no config file.
//! Also the path and environment rules of that setup: a missing config from
//! `CORESCOPE_CONFIG` is all defaults, `--config` missing is an error, empty
//! variables are unset, a relative `dbPath` is relative to the config file,
//! and unknown config keys are warned about once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::harness::{self, Corescope};

const INSTALLED: &str = "/usr/local/bin/corescope";

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The indented command block of the README's "Running from timers".
fn readme_steps() -> Vec<String> {
    let readme = std::fs::read_to_string(manifest().join("README.md")).unwrap();
    let section = readme
        .split("## Running from timers")
        .nth(1)
        .expect("README has \"Running from timers\"");
    let mut steps = Vec::new();
    for line in section.lines() {
        if let Some(cmd) = line.strip_prefix("    ") {
            steps.push(cmd.trim().to_string());
        } else if !steps.is_empty() {
            break;
        }
    }
    assert!(!steps.is_empty(), "no command block in Running from timers");
    steps
}

/// `KEY=value` lines of an env file.
fn env_file(p: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && l.contains('='))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect()
}

fn unit_values(text: &str, key: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
        .collect()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn have(tool: &str) -> bool {
    std::process::Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn readme_timer_setup_runs_as_written_into_a_temporary_root() {
    if !is_root() || !have("systemd-sysusers") || !have("systemd-tmpfiles") {
        println!("SKIP README setup: needs root and systemd-sysusers/systemd-tmpfiles (the install script creates a user and chowns /var/lib/corescope)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    let mut timers: Vec<String> = Vec::new();
    let mut ran = Vec::new();
    for step in readme_steps() {
        let words: Vec<&str> = step.split_whitespace().collect();
        match words.as_slice() {
            ["cargo", "install", "--path", ".", "--root", "/usr/local"] => {
                // The binary under test stands in for the installed one.
                let bin = root.join("usr/local/bin");
                std::fs::create_dir_all(&bin).unwrap();
                std::fs::copy(harness::exe(), bin.join("corescope")).unwrap();
            }
            ["contrib/systemd/install.sh"] => {
                let out = std::process::Command::new(manifest().join("contrib/systemd/install.sh"))
                    .arg("--root")
                    .arg(&root)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "install.sh: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                assert!(String::from_utf8_lossy(&out.stdout).contains("now edit"));
            }
            ["$EDITOR", "/etc/corescope/corescope.env"] => {
                // The shipped values are kept: the database at the default
                // place, a config file that does not exist.
                assert!(root.join("etc/corescope/corescope.env").is_file());
            }
            ["systemctl", "enable", "--now", units @ ..] => {
                timers.extend(units.iter().map(|u| u.to_string()));
            }
            _ => panic!("README step the setup test does not know (teach it): {step}"),
        }
        ran.push(step);
    }
    assert_eq!(ran.len(), 4, "{ran:?}");

    // The user and the state directory.
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    let line = passwd
        .lines()
        .find(|l| l.starts_with("corescope:"))
        .unwrap_or_else(|| panic!("no corescope user: {passwd}"));
    let uid: u32 = line.split(':').nth(2).unwrap().parse().unwrap();
    let state = root.join("var/lib/corescope");
    let meta = std::fs::metadata(&state).expect("state directory");
    use std::os::unix::fs::MetadataExt;
    assert!(meta.is_dir());
    assert_eq!(meta.uid(), uid, "state directory owned by corescope");
    assert_eq!(meta.mode() & 0o777, 0o750);

    // Every timer the README enables is installed, with its service; the
    // services verify (with the binary path inside the root).
    let sysdir = root.join("etc/systemd/system");
    let shipped: Vec<String> = std::fs::read_dir(manifest().join("contrib/systemd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".timer"))
        .collect();
    for t in &shipped {
        assert!(timers.contains(t), "README does not enable {t}");
    }
    let staged = tmp.path().join("verify");
    std::fs::create_dir(&staged).unwrap();
    let bin = root.join("usr/local/bin/corescope");
    let mut files = Vec::new();
    let mut services = Vec::new();
    for t in &timers {
        let service = t.replace(".timer", ".service");
        for u in [t.clone(), service.clone()] {
            let text = std::fs::read_to_string(sysdir.join(&u))
                .unwrap_or_else(|e| panic!("{u} not installed: {e}"));
            let dst = staged.join(&u);
            std::fs::write(&dst, text.replace(INSTALLED, bin.to_str().unwrap())).unwrap();
            files.push(dst);
        }
        services.push(std::fs::read_to_string(sysdir.join(&service)).unwrap());
    }
    if have("systemd-analyze") {
        let out = std::process::Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .args(&files)
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "systemd-analyze verify: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The services' commands with the installed env file, paths inside the
    // root: no config file exists.
    let env = env_file(&root.join("etc/corescope/corescope.env"));
    let inside = |v: &str| root.join(v.trim_start_matches('/'));
    let db = inside(&env["CORESCOPE_DB"]);
    let config = inside(&env["CORESCOPE_CONFIG"]);
    let metrics = inside(&env["CORESCOPE_METRICS_FILE"]);
    assert!(!config.exists());
    std::fs::create_dir_all(metrics.parent().unwrap()).unwrap();
    Corescope::new()
        .args([
            "synth",
            "--transmissions",
            "400",
            "--observations",
            "1600",
            "-q",
        ])
        .db(&db)
        .run();
    for (t, text) in timers.iter().zip(&services) {
        for exec in unit_values(text, "ExecStart") {
            let mut words = exec.split_whitespace();
            assert_eq!(words.next(), Some(INSTALLED), "{t}");
            let out = harness::scrub(&mut std::process::Command::new(&bin))
                .args(words)
                .env("CORESCOPE_DB", &db)
                .env("CORESCOPE_CONFIG", &config)
                .env("CORESCOPE_METRICS_FILE", &metrics)
                .output()
                .unwrap();
            let success: Vec<i32> = std::iter::once(0)
                .chain(
                    unit_values(text, "SuccessExitStatus")
                        .iter()
                        .map(|c| c.parse().unwrap()),
                )
                .collect();
            assert!(
                success.contains(&out.status.code().unwrap_or(-1)),
                "{t}: `{exec}` exited {:?}: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                !String::from_utf8_lossy(&out.stderr).contains("config"),
                "{t}: a missing config file is not worth a word: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    assert!(metrics.is_file(), "metrics written");

    // A second install keeps the edited env file.
    let envp = root.join("etc/corescope/corescope.env");
    std::fs::write(&envp, "CORESCOPE_DB=/srv/m.db\n").unwrap();
    let out = std::process::Command::new(manifest().join("contrib/systemd/install.sh"))
        .arg("--root")
        .arg(&root)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        std::fs::read_to_string(&envp).unwrap(),
        "CORESCOPE_DB=/srv/m.db\n"
    );
    assert!(root.join("etc/corescope/corescope.env.new").is_file());
}

#[test]
fn missing_config_from_the_environment_is_defaults_but_from_the_flag_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let db = harness::common::fresh_db(tmp.path(), "m.db");
    let missing = tmp.path().join("etc/config.json");
    let out = Corescope::new()
        .args(["check", "--json"])
        .db(&db)
        .env("CORESCOPE_CONFIG", &missing)
        .run();
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = Corescope::new()
        .args(["check"])
        .db(&db)
        .arg("--config")
        .arg(&missing)
        .expect_code(1)
        .stderr();
    assert!(
        err.contains(&missing.display().to_string()) && err.contains("(from --config)"),
        "{err}"
    );
    // A config the environment names that exists but is malformed is still an error.
    std::fs::create_dir_all(missing.parent().unwrap()).unwrap();
    std::fs::write(&missing, "{ nope").unwrap();
    let err = Corescope::new()
        .args(["check"])
        .db(&db)
        .env("CORESCOPE_CONFIG", &missing)
        .expect_code(1)
        .stderr();
    assert!(
        err.contains("invalid config file") && err.contains("line 1"),
        "{err}"
    );
}

#[test]
fn empty_environment_variables_count_as_unset() {
    let tmp = tempfile::tempdir().unwrap();
    let db = harness::common::fresh_db(tmp.path(), "m.db");
    let out = Corescope::new()
        .args(["check", "--json"])
        .db(&db)
        .env("CORESCOPE_METRICS_FILE", "")
        .env("CORESCOPE_CONFIG", "")
        .run();
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files = harness::common::listing(tmp.path());
    assert!(
        files.iter().all(|(name, _, _)| name.starts_with("m.db")),
        "no metrics file: {files:?}"
    );
    // CORESCOPE_DB= is unset too: no database given is the usage error.
    let err = Corescope::new()
        .args(["check"])
        .env("CORESCOPE_DB", "")
        .expect_code(2)
        .stderr();
    assert!(err.contains("no database given"), "{err}");
    // A metrics path from the environment is named as such when refused.
    let err = Corescope::new()
        .args(["check"])
        .db(&db)
        .env("CORESCOPE_METRICS_FILE", &db)
        .expect_code(2)
        .stderr();
    assert!(
        err.contains(&format!(
            "CORESCOPE_METRICS_FILE {}: is the database",
            db.display()
        )),
        "{err}"
    );
}

#[test]
fn relative_db_path_is_relative_to_the_config_file_and_errors_name_the_source() {
    let tmp = tempfile::tempdir().unwrap();
    let etc = tmp.path().join("etc");
    std::fs::create_dir_all(etc.join("data")).unwrap();
    harness::common::fresh_db(&etc.join("data"), "m.db");
    let config = etc.join("config.json");
    std::fs::write(&config, r#"{"dbPath": "data/m.db"}"#).unwrap();
    // The working directory is elsewhere (systemd's is /).
    let v = Corescope::new()
        .args(["check", "--json"])
        .arg("--config")
        .arg(&config)
        .json();
    assert_eq!(v["ready"], true, "{v}");
    assert!(v["db"].as_str().unwrap().ends_with("etc/data/m.db"), "{v}");

    std::fs::write(&config, r#"{"dbPath": "data/typo.db"}"#).unwrap();
    let err = Corescope::new()
        .args(["check"])
        .env("CORESCOPE_CONFIG", &config)
        .expect_code(1)
        .stderr();
    assert!(
        err.contains("typo.db does not exist")
            && err.contains(&format!(
                "database path from dbPath \"data/typo.db\" in {}",
                config.display()
            )),
        "{err}"
    );
    let err = Corescope::new()
        .args(["check"])
        .env("CORESCOPE_DB", tmp.path().join("env.db"))
        .expect_code(1)
        .stderr();
    assert!(err.contains("[database path from CORESCOPE_DB]"), "{err}");
}

#[test]
fn unknown_config_keys_are_warned_about_once_never_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let db = harness::common::fresh_db(tmp.path(), "m.db");
    let config = tmp.path().join("config.json");
    std::fs::write(
        &config,
        r#"{"retention": {"nodDays": 3}, "mqtt": {"broker": "x"}, "port": 3000}"#,
    )
    .unwrap();
    for json in [false, true] {
        let mut c = Corescope::new()
            .args(["prune", "--dry-run"])
            .db(&db)
            .arg("--config")
            .arg(&config);
        if json {
            c = c.arg("--json");
        }
        let err = c.stderr();
        let want = format!(
            "unknown key retention.nodDays in {}; did you mean nodeDays?",
            config.display()
        );
        assert_eq!(err.matches(&want).count(), 1, "json={json}: {err}");
        assert!(!err.contains("mqtt") && !err.contains("port"), "{err}");
    }
}

/// `cargo install` builds the release profile: no debug info, symbols
/// stripped; the profiling profile is the same with debug info.
#[test]
fn release_profile_is_stripped_and_profiling_keeps_debug_info() {
    let toml = std::fs::read_to_string(manifest().join("Cargo.toml")).unwrap();
    let section = |name: &str| -> Vec<String> {
        toml.split(&format!("[profile.{name}]\n"))
            .nth(1)
            .unwrap_or_else(|| panic!("no [profile.{name}]"))
            .lines()
            .take_while(|l| !l.starts_with('['))
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| l.replace(' ', ""))
            .collect()
    };
    let release = section("release");
    assert!(release.contains(&"debug=false".to_string()), "{release:?}");
    assert!(
        release.contains(&"strip=\"symbols\"".to_string()),
        "{release:?}"
    );
    let profiling = section("profiling");
    for want in ["inherits=\"release\"", "debug=true", "strip=\"none\""] {
        assert!(
            profiling.contains(&want.to_string()),
            "{want}: {profiling:?}"
        );
    }
}
