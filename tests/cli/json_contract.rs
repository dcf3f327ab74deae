//! The JSON output contract (docs/json.md): the real `--json` output of
//! every command, on a synthetic database, a copy of the legacy fixture and
//! a synthetic database with anomalies, is checked key by key against the
//! documented tables. A key the contract does not list, a value of another
//! type, or a missing key the contract says is always there fails the test;
//! so does a documented key that no run printed (a stale contract), unless
//! it is in [`RARELY_SEEN`].

use std::collections::BTreeSet;
use std::path::Path;

use corescope::cli::json_doc::{self, Field, Section};
use serde_json::{json, Value};

use crate::harness::{Corescope, Fixture};

const NOW: &str = "2026-05-17T18:12:00Z";

/// Documented keys the runs of this test do not produce, and why.
const RARELY_SEEN: &[&str] = &[
    // build-edges: a stopped rebuild's staging table, or the first run on
    // edges CoreScope itself built (tests/cli/build_edges.rs covers both).
    "interrupted_rebuild.staging_rows",
    "interrupted_rebuild.resumable_after_id",
    "interrupted_rebuild.action",
    "seeded.existing_edges",
    "seeded.max_last_seen",
    "seeded.start_after_id",
    // migrate: the duplicate merge and a step that could not be applied
    // need duplicate observations (tests/cli/migrate_repairs.rs).
    "planned[].groups",
    "skipped[].name",
    "skipped[].reason",
    // migrate leaving the database not ready, or with a note.
    "notes[]",
    "missing[]",
    "pending_migrations[]",
    // build-edges on a graph marked stale (tests/cli/edges_exactly_once.rs).
    "stale_reasons[]",
    // demo: every command of its cycle exists in this build.
    "skipped[]",
    // observer-blacklist with an id that matches nothing.
    "tasks.<task>.unmatched[]",
    // a build-edges run that waits for a backfill.
    "waiting_for_backfill.<task>",
    // demo: steps that printed no report / a non-zero accepted code.
    "steps[].elapsed_ms",
    // check: accepted warnings and unknown objects.
    "allowed_warnings[].code",
    "allowed_warnings[].message",
    "schema_newer[]",
];

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn show(path: &[String]) -> String {
    let mut s = String::new();
    for t in path {
        if t != "[]" && !s.is_empty() {
            s.push('.');
        }
        s.push_str(t);
    }
    s
}

/// The documented field for an actual path: literal keys win over `<name>`.
fn field_for<'a>(fields: &'a [(Field, Vec<String>)], path: &[String]) -> Option<&'a Field> {
    fields
        .iter()
        .filter(|(_, toks)| {
            toks.len() == path.len()
                && toks
                    .iter()
                    .zip(path)
                    .all(|(c, a)| json_doc::token_matches(c, a))
        })
        .min_by_key(|(_, toks)| toks.iter().filter(|t| t.starts_with('<')).count())
        .map(|(f, _)| f)
}

struct Checker<'a> {
    fields: Vec<(Field, Vec<String>)>,
    errors: Vec<String>,
    seen: &'a mut BTreeSet<String>,
    what: String,
}

impl Checker<'_> {
    fn walk(&mut self, v: &Value, path: &mut Vec<String>) {
        if !path.is_empty() {
            let implicit_element = path.last().is_some_and(|t| t == "[]")
                && v.is_object()
                && self.fields.iter().any(|(_, toks)| {
                    toks.len() > path.len()
                        && toks
                            .iter()
                            .zip(path.iter())
                            .all(|(c, a)| json_doc::token_matches(c, a))
                });
            let found = field_for(&self.fields, path).cloned();
            if found.is_none() && implicit_element {
                // `a[].b` documents the keys of objects in `a`.
                if let Value::Object(m) = v {
                    self.object(m, path);
                }
                return;
            }
            let Some(f) = found else {
                self.errors.push(format!(
                    "{}: key {} is not in docs/json.md",
                    self.what,
                    show(path)
                ));
                return;
            };
            self.seen.insert(f.path.clone());
            let t = json_type(v);
            if !f.types.iter().any(|x| x == t) {
                self.errors.push(format!(
                    "{}: {} is {t}, docs/json.md says {}",
                    self.what,
                    show(path),
                    f.types.join(" or ")
                ));
            }
            if f.opaque {
                return;
            }
        }
        match v {
            Value::Object(m) => self.object(m, path),
            Value::Array(a) => {
                for x in a {
                    path.push("[]".into());
                    self.walk(x, path);
                    path.pop();
                }
            }
            _ => {}
        }
    }

    fn object(&mut self, m: &serde_json::Map<String, Value>, path: &mut Vec<String>) {
        {
            {
                let required: Vec<String> = self
                    .fields
                    .iter()
                    .filter(|(f, toks)| {
                        !f.optional
                            && toks.len() == path.len() + 1
                            && toks
                                .iter()
                                .zip(path.iter())
                                .all(|(c, a)| json_doc::token_matches(c, a))
                            && toks
                                .last()
                                .is_some_and(|t| !t.starts_with('<') && t != "[]")
                    })
                    .filter_map(|(_, toks)| toks.last().cloned())
                    .collect();
                for k in required {
                    if !m.contains_key(&k) {
                        let mut p = path.clone();
                        p.push(k);
                        self.errors.push(format!(
                            "{}: {} is missing (docs/json.md lists it as always present)",
                            self.what,
                            show(&p)
                        ));
                    }
                }
                for (k, x) in m {
                    path.push(k.clone());
                    self.walk(x, path);
                    path.pop();
                }
            }
        }
    }
}

/// Check `v` against `section` (plus the keys of every report unless it
/// is a raw output); errors as lines.
fn check_against(
    sections: &[Section],
    section: &str,
    v: &Value,
    seen: &mut BTreeSet<(String, String)>,
) -> Vec<String> {
    let sec = sections
        .iter()
        .find(|s| s.name == section)
        .unwrap_or_else(|| panic!("docs/json.md has no section `{section}`"));
    let mut fields: Vec<Field> = sec.fields.clone();
    if !sec.raw() && sec.name != json_doc::ERROR {
        let common = sections
            .iter()
            .find(|s| s.name == json_doc::COMMON)
            .expect("common section");
        fields.extend(common.fields.iter().cloned());
    }
    let mut seen_here = BTreeSet::new();
    let mut c = Checker {
        fields: fields
            .into_iter()
            .map(|f| {
                let t = f.tokens();
                (f, t)
            })
            .collect(),
        errors: Vec::new(),
        seen: &mut seen_here,
        what: section.to_string(),
    };
    c.walk(v, &mut Vec::new());
    let errors = c.errors;
    for p in seen_here {
        let own = sec.fields.iter().any(|f| f.path == p);
        let name = if own { section } else { json_doc::COMMON };
        seen.insert((name.to_string(), p));
    }
    errors
}

/// One command line and the contract section its output belongs to.
struct Run {
    section: &'static str,
    args: Vec<String>,
    code: i32,
    /// `--json` is added (a raw output is printed without it).
    json: bool,
}

fn run(section: &'static str, args: &[&str], code: i32) -> Run {
    Run {
        section,
        args: args.iter().map(|s| (*s).to_string()).collect(),
        code,
        json: true,
    }
}

fn raw(section: &'static str, args: &[&str]) -> Run {
    Run {
        json: false,
        ..run(section, args, 0)
    }
}

fn output(db: &Path, r: &Run) -> Value {
    let mut c = Corescope::new();
    if r.json {
        c = c.arg("--json");
    }
    c = c.args(&r.args);
    // `schema` opens no database by --db (it takes --from-db).
    if r.args.first().map(String::as_str) != Some("schema") {
        c = c.db(db);
    }
    c.expect_code(r.code).json()
}

/// The outputs of every command, each with its section.
fn all_outputs(dir: &Path) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    let mut push = |db: &Path, r: Run| {
        let v = output(db, &r);
        out.push((r.section.to_string(), r.args.join(" "), v));
    };

    // A seed-schema database with work for migrate and every backfill.
    let s = dir.join("synth.db");
    push(
        &s,
        run(
            "synth",
            &[
                "synth",
                "--schema",
                "seed",
                "--seed",
                "7",
                "--end",
                NOW,
                "--nodes",
                "30",
                "--observers",
                "5",
                "--transmissions",
                "300",
                "--days",
                "5",
                "--null-from-pubkey",
                "0.5",
                "--null-path-json",
                "0.3",
                "--null-resolved-path",
                "0.5",
            ],
            0,
        ),
    );
    let (backup_a, backup_b) = (dir.join("copy-a.db"), dir.join("copy-b.db"));
    let (backup_a, backup_b) = (
        backup_a.to_str().expect("UTF-8 temp path"),
        backup_b.to_str().expect("UTF-8 temp path"),
    );
    let backup_c = dir.join("copy-c.db");
    let backup_c = backup_c.to_str().expect("UTF-8 temp path");
    let graph_out = dir.join("graph.json");
    let graph_out = graph_out.to_str().expect("UTF-8 temp path");
    for r in [
        run("check", &["check"], 3),
        run("migrate --dry-run", &["migrate", "--dry-run"], 0),
        run("migrate", &["migrate"], 0),
        run("check", &["check", "--deep", "--integrity"], 0),
        run("backfill", &["backfill", "--dry-run"], 0),
        run("backfill", &["backfill"], 0),
        run("build-edges", &["build-edges"], 0),
        run("build-edges", &["build-edges"], 0),
        run("build-edges", &["build-edges", "--rebuild"], 0),
        run("graph stats", &["graph", "stats", "--now", NOW], 0),
        run(
            "graph dump",
            &[
                "graph", "dump", "--format", "json", "--now", NOW, "--output", graph_out,
            ],
            0,
        ),
        raw(
            "graph dump --format json (stdout)",
            &["graph", "dump", "--format", "json", "--now", NOW],
        ),
        run("prune", &["prune", "--dry-run", "--now", NOW], 0),
        run("prune", &["prune", "--now", NOW, "--packet-days", "2"], 0),
        run("check", &["check"], 0),
        run("vacuum", &["vacuum", "--pages", "4"], 0),
        run("vacuum", &["vacuum", "--full", "--truncate-wal"], 0),
        run("backup", &["backup", backup_a], 0),
        run("vacuum", &["vacuum", "--full", "--backup", backup_b], 0),
        run("check --diff", &["check", "--diff"], 0),
        run("schema", &["schema"], 0),
        raw(
            "schema --format json (stdout)",
            &["schema", "--format", "json"],
        ),
    ] {
        push(&s, r);
    }
    let from_db = [
        "schema",
        "--format",
        "json",
        "--from-db",
        s.to_str().expect("UTF-8"),
    ];
    push(&s, run("schema", &from_db, 0));

    // The legacy fixture: a real old database with everything to do.
    let l = Fixture::Legacy.copy_to(dir);
    for r in [
        run("check --diff", &["check", "--diff"], 3),
        run("check", &["check", "--deep"], 3),
        run("migrate --dry-run", &["migrate", "--dry-run"], 0),
        run("migrate", &["migrate", "--backup", backup_c], 0),
        run("backfill", &["backfill"], 0),
        run("build-edges", &["build-edges"], 0),
        run("check", &["check", "--deep", "--integrity"], 0),
        run("prune", &["prune", "--now", NOW], 0),
    ] {
        push(&l, r);
    }

    // Anomalies: warnings of every kind check finds.
    let a = dir.join("anomalies.db");
    push(
        &a,
        run(
            "synth",
            &[
                "synth",
                "--schema",
                "legacy",
                "--anomalies",
                "--seed",
                "3",
                "--end",
                NOW,
                "--nodes",
                "20",
                "--observers",
                "3",
                "--transmissions",
                "100",
            ],
            0,
        ),
    );
    push(&a, run("check", &["check", "--deep"], 3));

    // A new database, and a failed run.
    let n = dir.join("new.db");
    push(&n, run("migrate", &["migrate", "--create"], 0));
    // A column of the wrong type: migrate reports it as not repaired.
    crate::schema_diff::edit_schema(&n, "nodes", "lat REAL", "lat TEXT");
    push(&n, run("migrate --dry-run", &["migrate", "--dry-run"], 0));
    push(&n, run("migrate", &["migrate"], 0));
    // An index built online (forced on a small table).
    {
        let c = rusqlite::Connection::open(&n).expect("open new.db");
        c.execute_batch(
            "INSERT INTO transmissions (id, raw_hex, hash, first_seen) VALUES (1, '00', 'h1', '2026-01-01T00:00:00Z');
             INSERT INTO observations (transmission_id, observer_idx, timestamp) VALUES (1, 1, 1767225600), (1, 2, 1767225601);
             DROP INDEX idx_observations_transmission_id;",
        )
        .expect("drop an index");
    }
    let online = ["--online-min-rows", "1"];
    push(
        &n,
        run(
            "migrate --dry-run",
            &["migrate", "--dry-run", online[0], online[1]],
            0,
        ),
    );
    push(&n, run("migrate", &["migrate", online[0], online[1]], 0));
    push(&dir.join("missing.db"), run(json_doc::ERROR, &["check"], 1));
    out
}

#[test]
fn every_command_prints_exactly_the_documented_keys() {
    let dir = tempfile::tempdir().unwrap();
    let sections = json_doc::sections();
    let mut seen = BTreeSet::new();
    let mut errors = Vec::new();
    let outputs = all_outputs(dir.path());
    for (section, args, v) in &outputs {
        for e in check_against(&sections, section, v, &mut seen) {
            errors.push(format!("corescope {args}: {e}"));
        }
    }

    // demo: its own keys, and each step's report against its command.
    let demo = dir.path().join("demo");
    std::fs::create_dir(&demo).unwrap();
    let v = Corescope::new()
        .args(["--json", "demo", "--size", "2000", "--dir"])
        .arg(&demo)
        .json();
    errors.extend(check_against(&sections, "demo", &v, &mut seen));
    for step in v["steps"].as_array().expect("demo steps") {
        let report = &step["report"];
        let Some(cmd) = report.get("command").and_then(Value::as_str) else {
            continue;
        };
        let section = if report.get("diff").is_some() {
            "check --diff".to_string()
        } else if report.get("planned").is_some() {
            "migrate --dry-run".to_string()
        } else {
            cmd.to_string()
        };
        for e in check_against(&sections, &section, report, &mut seen) {
            errors.push(format!("demo step {cmd}: {e}"));
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));

    // Every section was exercised, and every documented key printed by
    // some run (else the contract lists a key no command has any more).
    let mut stale = Vec::new();
    for s in &sections {
        let used: Vec<&String> = seen
            .iter()
            .filter(|(sec, _)| sec == &s.name)
            .map(|(_, p)| p)
            .collect();
        assert!(!used.is_empty(), "no run produced section `{}`", s.name);
        for f in &s.fields {
            if !used.contains(&&f.path) && !RARELY_SEEN.contains(&f.path.as_str()) {
                stale.push(format!("{}: {}", s.name, f.path));
            }
        }
    }
    assert!(
        stale.is_empty(),
        "documented in docs/json.md but printed by no run (remove them, or add a run that prints them):\n{}",
        stale.join("\n")
    );
}

#[test]
fn the_checker_finds_unknown_missing_and_mistyped_keys() {
    let sections = json_doc::sections();
    let mut seen = BTreeSet::new();
    let good = json!({
        "command": "backfill", "db": "/x.db", "ok": true, "elapsed_ms": 1.5,
        "tasks": {"from-pubkey": {"scanned": 1, "updated": 1, "remaining": 0,
                  "skipped": 0, "complete": true}},
        "dry_run": false, "complete": true, "max_lock_hold_ms": 0.0
    });
    assert_eq!(
        check_against(&sections, "backfill", &good, &mut seen),
        Vec::<String>::new()
    );
    let mut bad = good.clone();
    bad["surprise"] = json!(1);
    bad["max_lock_hold_ms"] = json!(0);
    bad["tasks"]["from-pubkey"]
        .as_object_mut()
        .unwrap()
        .remove("updated");
    let errors = check_against(&sections, "backfill", &bad, &mut seen);
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(errors
        .iter()
        .any(|e| e.contains("key surprise is not in docs/json.md")));
    assert!(errors
        .iter()
        .any(|e| e.contains("max_lock_hold_ms is integer, docs/json.md says number")));
    assert!(errors
        .iter()
        .any(|e| e.contains("tasks.from-pubkey.updated is missing")));
}
