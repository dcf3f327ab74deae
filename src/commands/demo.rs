//! `corescope demo`: a synthetic database (the shape the CoreScope seed ingestor
//! leaves, with backfill work pending) run through the maintenance cycle a timer
//! would run, printing each report; then where the database is and what to try.
//! The database (about 230 MB at the default size) and a directory the demo
//! created are removed at the end unless `--keep` is given (or a step failed:
//! then they are kept for a look, and the error says where).
//!
//! The cycle is the list [`CYCLE`]; a step whose subcommand is not part of this
//! build is skipped, so commands join the demo as they land. Each step runs this
//! same binary as a child process, exactly as an operator would type it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::time::Instant;

use clap::CommandFactory;
use serde::Serialize;
use serde_json::Value;

use crate::cli::{Cli, DemoArgs};
use crate::context::Ctx;
use crate::error::Failure;
use crate::report::{Outcome, Report};
use crate::synth::create::create;
use crate::synth::report::shell_quote;
use crate::synth::{Config, Schema};
use crate::timeutil;

/// One step of the cycle: the command line after `corescope --db PATH`, and the
/// exit codes that count as expected.
pub struct Step {
    pub args: &'static [&'static str],
    pub expect: &'static [i32],
    pub why: &'static str,
}

pub const CYCLE: &[Step] = &[
    Step {
        args: &["check"],
        expect: &[3],
        why: "the database as the CoreScope seed ingestor left it: not ready for the latest server",
    },
    Step {
        args: &["migrate"],
        expect: &[0],
        why: "bring the schema to the latest target",
    },
    Step {
        args: &["backfill"],
        expect: &[0],
        why: "fill from_pubkey, path_json and resolved_path left NULL by older ingestors",
    },
    Step {
        args: &["build-edges"],
        expect: &[0],
        why: "build the neighbor graph from the observations",
    },
    Step {
        args: &["backfill", "resolved-path"],
        expect: &[0],
        why: "resolve hop prefixes against the graph build-edges has just built",
    },
    Step {
        args: &["prune", "--dry-run"],
        expect: &[0],
        why: "what daily retention would delete",
    },
    Step {
        args: &["check"],
        expect: &[0],
        why: "ready now",
    },
    Step {
        args: &["graph", "stats"],
        expect: &[0],
        why: "the mesh graph",
    },
];

/// Subcommands compiled into this binary.
fn available() -> Vec<String> {
    Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect()
}

/// The synthetic database of the demo: `size` observations.
pub fn demo_config(size: u64, now: i64) -> Config {
    let transmissions = (size / 4).max(1);
    Config {
        seed: 2026,
        nodes: ((size / 500) as usize).clamp(60, 1500),
        observers: ((size / 12_000) as usize).clamp(6, 40),
        transmissions,
        observations: size.max(1),
        days: 21.0,
        end: now - now.rem_euclid(60),
        schema: Schema::Seed,
        null_from_pubkey: 0.25,
        null_path_json: 0.05,
        null_resolved_path: 1.0,
        obs_raw_hex: 1.0,
        anomalies: false,
        metrics_interval: 300,
    }
}

/// The demo directory, and whether the demo created it.
fn demo_dir(args: &DemoArgs) -> anyhow::Result<(PathBuf, bool)> {
    let dir = if let Some(d) = &args.dir {
        d.clone()
    } else {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        std::env::temp_dir().join(format!("corescope-demo-{}-{nanos:x}", std::process::id()))
    };
    let created = !dir.exists();
    std::fs::create_dir_all(&dir)
        .map_err(|e| Failure::Fatal(format!("cannot create {}: {e}", dir.display())))?;
    Ok((dir, created))
}

/// The files of the demo database: the file, SQLite's sidecars and the run
/// locks of the steps.
fn demo_files(dir: &Path, db: &Path) -> Vec<PathBuf> {
    let Some(name) = db.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Vec::new();
    };
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().is_some_and(|f| {
                let f = f.to_string_lossy();
                f == name.as_str()
                    || ["-wal", "-shm", "-journal"]
                        .iter()
                        .any(|s| f == format!("{name}{s}"))
                    || (f.starts_with(&format!("{name}.corescope-")) && f.ends_with(".lock"))
            })
        })
        .collect()
}

/// Remove the demo's files, and its directory when the demo created it and
/// nothing else is in it. Returns whether everything went.
fn remove_demo(dir: &Path, db: &Path, created_dir: bool) -> bool {
    let mut ok = true;
    for f in demo_files(dir, db) {
        if let Err(e) = std::fs::remove_file(&f) {
            log::warn!("demo: cannot remove {}: {e}", f.display());
            ok = false;
        }
    }
    if created_dir {
        // remove_dir fails on a directory that is not empty: only ours goes.
        if let Err(e) = std::fs::remove_dir(dir) {
            log::warn!("demo: cannot remove {}: {e}", dir.display());
            ok = false;
        }
    }
    ok
}

/// How to call this binary in a hint: `corescope` when that is what PATH
/// finds, else its full path (e.g. `target/release/corescope` after `cargo run`).
fn invocation(exe: &Path) -> String {
    let me = std::fs::canonicalize(exe).unwrap_or_else(|_| exe.to_path_buf());
    let on_path = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths)
            .any(|d| std::fs::canonicalize(d.join("corescope")).is_ok_and(|p| p == me))
    });
    if on_path {
        "corescope".to_string()
    } else {
        shell_quote(&me.display().to_string())
    }
}

pub fn run(ctx: &Ctx, args: &DemoArgs) -> anyhow::Result<Outcome> {
    let (dir, created_dir) = demo_dir(args)?;
    let db = dir.join("corescope-demo.db");
    let human = !ctx.json && !ctx.quiet;
    let say = |s: &str| {
        if human {
            // A closed stdout must not stop (or crash) the demo half-way.
            let _ = crate::report::write_stdout(&format!("{s}\n"));
        }
    };

    say(&format!(
        "==> demo files in {} ({}); about {} MB at this size",
        dir.display(),
        if args.keep {
            "kept at the end: --keep"
        } else {
            "removed at the end; --keep keeps them"
        },
        (args.size * 580).div_ceil(1_000_000)
    ));
    say(&format!(
        "==> corescope synth: a synthetic mesh of {} observations in {}",
        args.size,
        db.display()
    ));
    let cfg = demo_config(args.size, timeutil::now_epoch());
    let mut sctx = ctx.clone();
    sctx.db_path.clone_from(&db);
    let synth_started = Instant::now();
    let synth_out = create(&sctx, &cfg, true)?;
    say(synth_out.human().trim_end());
    say(&format!("({:.1} s)", synth_started.elapsed().as_secs_f64()));

    let exe = std::env::current_exe()
        .map_err(|e| Failure::Fatal(format!("cannot find the corescope binary: {e}")))?;
    let me = invocation(&exe);
    let have = available();
    let mut steps = vec![StepReport {
        command: "synth".into(),
        exit_code: 0,
        expected: None,
        elapsed_ms: None,
        report: serde_json::to_value(&synth_out)?,
    }];
    let mut skipped: Vec<String> = Vec::new();
    for step in CYCLE {
        let line = step.args.join(" ");
        if !have.iter().any(|h| h == step.args[0]) {
            skipped.push(line);
            continue;
        }
        say(&format!("\n==> corescope {line}    # {}", step.why));
        let started = Instant::now();
        let mut cmd = Process::new(&exe);
        cmd.arg("--db").arg(&db);
        if ctx.json {
            cmd.arg("--json");
        }
        cmd.args(step.args);
        cmd.env_remove("CORESCOPE_CONFIG");
        let output = cmd
            .output()
            .map_err(|e| Failure::Fatal(format!("cannot run {}: {e}", exe.display())))?;
        let code = output.status.code().unwrap_or(-1);
        let stdout = String::from_utf8_lossy(&output.stdout);
        if human {
            let _ = crate::report::write_stdout(&format!(
                "{stdout}({:.1} s, exit {code})\n",
                started.elapsed().as_secs_f64()
            ));
        }
        if !output.stderr.is_empty() && !ctx.quiet {
            let _ = std::io::stderr().write_all(&output.stderr);
        }
        let report: Value = if ctx.json {
            serde_json::from_str(stdout.trim()).unwrap_or(Value::Null)
        } else {
            Value::Null
        };
        steps.push(StepReport {
            command: line.clone(),
            exit_code: code,
            expected: Some(step.expect),
            elapsed_ms: Some(crate::report::ms(started.elapsed())),
            report,
        });
        if !step.expect.contains(&code) {
            return Err(Failure::Fatal(format!(
                "demo step `corescope {line}` exited {code} (expected {:?}); the database is kept at {} (remove it when done)",
                step.expect,
                db.display()
            ))
            .into());
        }
    }

    let removed = !args.keep && remove_demo(&dir, &db, created_dir);
    Outcome::from_report(&DemoReport {
        dir: dir.display().to_string(),
        database: db.display().to_string(),
        kept: !removed,
        steps,
        explore: explore_text(&me, &db, &have, &skipped, !removed),
        skipped,
    })
}

/// One step of the demo as run: the command line, its exit code and its
/// `--json` report (null without `--json`). The synth step, run in this
/// process, has no expected codes and no timing.
#[derive(Serialize)]
struct StepReport {
    command: String,
    exit_code: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    expected: Option<&'static [i32]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    elapsed_ms: Option<f64>,
    report: Value,
}

/// The demo: where its database is, the steps run and those skipped.
#[derive(Serialize)]
struct DemoReport {
    dir: String,
    database: String,
    /// The database is still there (`--keep`, or it could not be removed).
    kept: bool,
    steps: Vec<StepReport>,
    skipped: Vec<String>,
    /// What to try next (the human text; the steps were printed as they ran).
    #[serde(skip)]
    explore: String,
}

impl Report for DemoReport {
    fn human(&self) -> String {
        self.explore.clone()
    }
}

fn explore_text(me: &str, db: &Path, have: &[String], skipped: &[String], kept: bool) -> String {
    let q = shell_quote(&db.display().to_string());
    let mut s = String::new();
    if !skipped.is_empty() {
        s.push_str(&format!(
            "\n(not in this build, skipped: {})\n",
            skipped.join(", ")
        ));
    }
    if kept {
        s.push_str(&format!(
            "\nThe demo database is {q} (kept; remove it when done)\nExplore it:\n"
        ));
    } else {
        s.push_str(&format!(
            "\nThe demo database was removed. To explore one, run `{me} demo --keep`, then:\n"
        ));
    }
    s.push_str(&format!("  {me} check --db {q}\n"));
    if have.iter().any(|h| h == "graph") {
        s.push_str(&format!("  {me} graph stats --db {q}\n"));
        s.push_str(&format!(
            "  {me} graph dump --db {q} --format dot | dot -Tsvg > mesh.svg\n"
        ));
        s.push_str(&format!(
            "  {me} graph dump --db {q} --format geojson --output mesh.geojson\n"
        ));
    }
    if have.iter().any(|h| h == "prune") {
        s.push_str(&format!("  {me} prune --db {q} --dry-run --node-days 3\n"));
    }
    s.push_str(&format!(
        "  sqlite3 {q} 'SELECT payload_type, COUNT(*) FROM transmissions GROUP BY 1'\n"
    ));
    s.push_str(&format!(
        "  {me} synth --db big.db --transmissions 250000 --observations 1000000   # a bigger one\n"
    ));
    s
}
