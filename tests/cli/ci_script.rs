//! docs/ci.md's script, contrib/ci/schema-check.sh, run against copies of
//! the legacy fixture: passes on the fixture, fails on a broken copy, and
//! never modifies the database it is given.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::harness::Fixture;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/ci/schema-check.sh")
}

fn run_script(dir: &Path, db: &Path) -> Output {
    std::process::Command::new("sh")
        .arg(script())
        .arg(db)
        .env("CORESCOPE", env!("CARGO_BIN_EXE_corescope"))
        .env("SCHEMA_DIFF_JSON", dir.join("report.json"))
        .env_remove("CORESCOPE_DB")
        .env_remove("CORESCOPE_CONFIG")
        .env_remove("CORESCOPE_METRICS_FILE")
        .current_dir(dir)
        .output()
        .unwrap()
}

fn report(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap()
}

#[test]
fn ci_script_passes_on_the_fixture_and_leaves_it_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let db = Fixture::Legacy.copy_to(dir.path());
    let before = std::fs::read(&db).unwrap();
    let out = run_script(dir.path(), &db);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&db).unwrap(), before);
    let j = report(dir.path());
    assert_eq!(j["diff"], serde_json::json!([]));
    assert_eq!(j["counts"]["breaks"], 0);
}

#[test]
fn ci_script_fails_on_a_broken_copy() {
    let dir = tempfile::tempdir().unwrap();
    let db = Fixture::Legacy.copy_to(dir.path());
    {
        // nodes.lat as TEXT: migrate cannot repair it.
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("PRAGMA writable_schema = ON").unwrap();
        let n = conn
            .execute(
                "UPDATE sqlite_master SET sql = replace(sql, 'lat REAL', 'lat TEXT') WHERE name = 'nodes'",
                [],
            )
            .unwrap();
        assert_eq!(n, 1);
        conn.execute_batch("PRAGMA writable_schema = OFF").unwrap();
    }
    let out = run_script(dir.path(), &db);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("a difference breaks CoreScope"), "{stderr}");
    let j = report(dir.path());
    assert_eq!(j["counts"]["breaks"], 1, "{j}");
    assert_eq!(j["diff"][0]["object"], "column:nodes.lat");
}

#[test]
fn ci_script_names_a_missing_database() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_script(dir.path(), &dir.path().join("nope.db"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.db: no such file"));
}

/// One step of the GitHub Actions job in docs/ci.md.
#[derive(Debug, Default)]
struct Step {
    name: String,
    uses: Option<String>,
    run: Option<String>,
    env: Vec<(String, String)>,
}

/// The steps of the first ```yaml block of docs/ci.md (the job's shape is
/// simple: `- name:`, `uses:`, `env:` maps and `run:` scalars or `|` blocks).
fn workflow_steps() -> Vec<Step> {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ci.md")).unwrap();
    let start = doc.find("```yaml\n").expect("docs/ci.md has a yaml block") + 8;
    let block = &doc[start..start + doc[start..].find("```").unwrap()];
    let mut steps: Vec<Step> = Vec::new();
    let mut lines = block.lines().peekable();
    let indent = |l: &str| l.len() - l.trim_start().len();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if let Some(name) = t.strip_prefix("- name: ") {
            steps.push(Step {
                name: name.to_string(),
                ..Step::default()
            });
            continue;
        }
        if let Some(uses) = t.strip_prefix("- uses: ") {
            steps.push(Step {
                name: uses.to_string(),
                uses: Some(uses.to_string()),
                ..Step::default()
            });
            continue;
        }
        let Some(step) = steps.last_mut() else {
            continue;
        };
        if let Some(uses) = t.strip_prefix("uses: ") {
            step.uses = Some(uses.to_string());
        } else if t == "env:" {
            let own = indent(line);
            while lines.peek().is_some_and(|l| indent(l) > own) {
                let l = lines.next().unwrap().trim();
                let (k, v) = l.split_once(": ").unwrap();
                step.env.push((k.to_string(), v.to_string()));
            }
        } else if t == "run: |" {
            let own = indent(line);
            let mut body = String::new();
            while lines.peek().is_some_and(|l| indent(l) > own) {
                body.push_str(lines.next().unwrap().trim_start_matches(' '));
                body.push('\n');
            }
            step.run = Some(body);
        } else if let Some(cmd) = t.strip_prefix("run: ") {
            step.run = Some(cmd.to_string());
        }
    }
    steps
}

/// Run the job's shell steps the way a runner would: in a checkout that has
/// the built binary at target/release/corescope (the build step itself is
/// `cargo build --release`, not repeated here) and `RUNNER_TEMP` set.
fn run_workflow(checkout: &Path, temp: &Path) -> Vec<(String, Output)> {
    std::fs::create_dir_all(checkout.join("target/release")).unwrap();
    std::fs::create_dir_all(checkout.join("contrib/ci")).unwrap();
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_corescope"),
        checkout.join("target/release/corescope"),
    )
    .unwrap();
    std::os::unix::fs::symlink(script(), checkout.join("contrib/ci/schema-check.sh")).unwrap();
    let mut outs = Vec::new();
    for step in workflow_steps() {
        let Some(run) = &step.run else {
            assert!(step.uses.is_some(), "step {} does nothing", step.name);
            continue;
        };
        if run.starts_with("cargo build --release") {
            continue;
        }
        let mut cmd = std::process::Command::new("bash");
        cmd.args(["-eo", "pipefail", "-c", run])
            .current_dir(checkout)
            .env("RUNNER_TEMP", temp)
            .env_remove("CORESCOPE_DB")
            .env_remove("CORESCOPE_CONFIG")
            .env_remove("CORESCOPE_METRICS_FILE");
        for (k, v) in &step.env {
            cmd.env(
                k,
                v.replace("${{ runner.temp }}", &temp.display().to_string()),
            );
        }
        let out = cmd.output().unwrap();
        let failed = !out.status.success();
        outs.push((step.name.clone(), out));
        if failed {
            break;
        }
    }
    outs
}

#[test]
fn ci_md_github_actions_job_runs_on_a_fresh_database() {
    let steps = workflow_steps();
    assert!(steps
        .iter()
        .any(|s| s.uses.as_deref() == Some("actions/checkout@v4")));
    assert!(steps
        .iter()
        .any(|s| s.run.as_deref() == Some("cargo build --release --locked")));
    let checkout = tempfile::tempdir().unwrap();
    let temp = tempfile::tempdir().unwrap();
    let outs = run_workflow(checkout.path(), temp.path());
    let names: Vec<&str> = outs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "Database to check",
            "Schema check (migrate, check --diff, fail on breaks)"
        ]
    );
    for (name, out) in &outs {
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let j: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(temp.path().join("schema-diff.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(j["counts"]["breaks"], 0, "{j}");
}

#[test]
fn ci_md_github_actions_job_fails_on_a_kept_database_that_breaks() {
    let checkout = tempfile::tempdir().unwrap();
    let temp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(checkout.path().join("testdata")).unwrap();
    let db = Fixture::Legacy.copy_to(checkout.path());
    std::fs::rename(&db, checkout.path().join("testdata/meshcore.db")).unwrap();
    // A column of the wrong type: migrate cannot repair it, the job fails.
    let kept = checkout.path().join("testdata/meshcore.db");
    {
        let c = rusqlite::Connection::open(&kept).unwrap();
        c.execute_batch(
            "PRAGMA writable_schema = ON;
             UPDATE sqlite_master SET sql = replace(sql, 'lat REAL', 'lat TEXT') WHERE name = 'nodes';
             PRAGMA writable_schema = OFF;",
        )
        .unwrap();
    }
    let before = std::fs::read(&kept).unwrap();
    let outs = run_workflow(checkout.path(), temp.path());
    let (name, last) = outs.last().unwrap();
    assert_eq!(name, "Schema check (migrate, check --diff, fail on breaks)");
    assert_eq!(
        last.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&last.stderr)
    );
    assert_eq!(
        std::fs::read(&kept).unwrap(),
        before,
        "the kept database changed"
    );
    let j: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(temp.path().join("schema-diff.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(j["diff"][0]["object"], "column:nodes.lat", "{j}");
}
