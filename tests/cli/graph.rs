//! End-to-end tests of `corescope graph dump` / `graph stats` (read-only).

use crate::harness::edges_common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use edges_common::*;
use quick_xml::events::Event;
use rusqlite::Connection;
use serde_json::{json, Value};

struct G {
    db: PathBuf,
    a: String,
    b: String,
    c: String,
    d: String,
    o: String,
}

/// Small graph: a–b (merged from two stored rows), a–c, b–o, d–x (unknown x),
/// plus rows that must be skipped (empty endpoint, self-loop, NULL count).
fn graph_db(dir: &Path) -> G {
    let db = fresh_db(dir, "graph.db");
    let (a, b, c, d, o) = (key("aa"), key("bb"), key("cc"), key("dd"), key("0e"));
    let x = key("ee");
    let conn = Connection::open(&db).unwrap();
    add_node(
        &conn,
        &a,
        Some("Alpha \"A\" <&> \\ end"),
        Some(37.5),
        Some(-122.25),
    );
    add_node(
        &conn,
        &b,
        Some("Bravo, the second\nline"),
        Some(0.0),
        Some(0.0),
    );
    add_node(&conn, &c, None, None, None);
    conn.execute(
        "INSERT INTO inactive_nodes (public_key, name, role, lat, lon, last_seen) VALUES (?1, 'Delta', 'room', 38.0, -121.5, '2026-05-01T00:00:00.000Z')",
        [&d],
    )
    .unwrap();
    add_observer(&conn, &o.to_uppercase(), "Obs <O>");
    let ins = |x: &str, y: &str, n: Option<i64>, t: Option<&str>| {
        conn.execute(
            "INSERT INTO neighbor_edges (node_a, node_b, count, last_seen) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![x, y, n, t],
        )
        .unwrap();
    };
    ins(&a, &b, Some(3), Some("2026-05-17T10:00:00Z"));
    ins(
        &b.to_uppercase(),
        &a,
        Some(2),
        Some("2026-05-17T12:00:00.000Z"),
    );
    ins(&a, &c, Some(1), Some("2026-05-10T00:00:00Z"));
    ins(&b, &o, Some(7), Some("2026-05-17 11:00:00"));
    ins(&d, &x, Some(4), None);
    ins("", &a, Some(9), Some("2026-05-17T00:00:00Z"));
    ins(&c, &c, Some(9), Some("2026-05-17T00:00:00Z"));
    ins(&c, &d, None, Some("2026-05-17T00:00:00Z"));
    drop(conn);
    // Leave only the main file (no -wal/-shm), as after a clean shutdown.
    let conn = Connection::open(&db).unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    drop(conn);
    G { db, a, b, c, d, o }
}

fn dump(db: &Path, args: &[&str]) -> std::process::Output {
    bin()
        .args(["graph", "dump", "--db"])
        .arg(db)
        .args(args)
        .output()
        .unwrap()
}

type Edges = BTreeSet<(String, String, i64, String)>;
type Edges3 = BTreeSet<(String, String, i64)>;
type Ids = BTreeSet<String>;
type Names = BTreeMap<String, String>;

fn json_graph(v: &Value) -> (BTreeSet<String>, Edges) {
    let nodes = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect();
    let edges = v["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["source"].as_str().unwrap().to_string(),
                e["target"].as_str().unwrap().to_string(),
                e["count"].as_i64().unwrap(),
                e["last_seen"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    (nodes, edges)
}

fn dir_snapshot(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            use sha2::Digest;
            let h = sha2::Sha256::digest(std::fs::read(&p).unwrap());
            (
                p.file_name().unwrap().to_string_lossy().to_string(),
                hex::encode(h),
            )
        })
        .collect()
}

const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// The database file is byte-identical; no file other than SQLite's -wal/-shm
/// appeared, and a -wal that did not exist before is empty. (SQLite itself
/// creates empty -wal/-shm when a read-only connection opens a WAL database
/// whose -shm is missing.)
fn assert_read_only(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) {
    for (name, hash) in before {
        if !name.ends_with("-shm") {
            assert_eq!(after.get(name), Some(hash), "{name} changed");
        }
    }
    for (name, hash) in after {
        if !before.contains_key(name) {
            assert!(
                name.ends_with("-shm") || name.ends_with("-wal"),
                "new file {name}"
            );
            if name.ends_with("-wal") {
                assert_eq!(hash, EMPTY_SHA256, "{name} not empty");
            }
        }
    }
}

#[test]
fn json_dump_exact_and_read_only() {
    let tmp = tempfile::tempdir().unwrap();
    let dbdir = tmp.path().join("db");
    std::fs::create_dir(&dbdir).unwrap();
    let g = graph_db(&dbdir);
    let before = dir_snapshot(&dbdir);
    let out = dump(&g.db, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_read_only(&before, &dir_snapshot(&dbdir));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let x = key("ee");
    let mut ids = vec![
        g.a.clone(),
        g.b.clone(),
        g.c.clone(),
        g.d.clone(),
        g.o.clone(),
        x.clone(),
    ];
    ids.sort();
    let got: Vec<&str> = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, ids);
    let e = v["edges"].as_array().unwrap();
    assert_eq!(
        e,
        &vec![
            json!({"source": g.a, "target": g.b, "count": 5, "last_seen": "2026-05-17T12:00:00Z"}),
            json!({"source": g.a, "target": g.c, "count": 1, "last_seen": "2026-05-10T00:00:00Z"}),
            json!({"source": g.o, "target": g.b, "count": 7, "last_seen": "2026-05-17T11:00:00Z"}),
            json!({"source": g.d, "target": x, "count": 4, "last_seen": null}),
        ]
        .into_iter()
        .map(|mut j| {
            // canonical order: smaller id first
            let (s, t) = (
                j["source"].as_str().unwrap().to_string(),
                j["target"].as_str().unwrap().to_string(),
            );
            if s > t {
                j["source"] = json!(t);
                j["target"] = json!(s);
            }
            j
        })
        .collect::<Vec<_>>()
        .tap_sort()
    );
    let node = |id: &str| {
        v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(node(&g.a)["name"], "Alpha \"A\" <&> \\ end");
    assert_eq!(node(&g.a)["lat"], 37.5);
    assert_eq!(node(&g.a)["role"], "repeater");
    assert_eq!(node(&g.d)["inactive"], true);
    assert_eq!(node(&g.d)["name"], "Delta");
    assert_eq!(node(&g.d)["last_seen"], "2026-05-01T00:00:00Z");
    assert_eq!(node(&g.o)["is_observer"], true);
    assert_eq!(node(&g.o)["name"], "Obs <O>");
    assert_eq!(node(&x)["known"], false);
    assert_eq!(node(&x)["name"], Value::Null);
}

trait TapSort {
    fn tap_sort(self) -> Self;
}

impl TapSort for Vec<Value> {
    /// Sorted by (source, target), the dump order.
    fn tap_sort(mut self) -> Self {
        self.sort_by_key(|j| {
            (
                j["source"].as_str().unwrap().to_string(),
                j["target"].as_str().unwrap().to_string(),
            )
        });
        self
    }
}

/// Minimal DOT reader for what `write_dot` emits.
fn dot_graph(s: &str) -> (Ids, Names, Edges3) {
    fn quoted(s: &str) -> Option<(String, &str)> {
        let s = s.trim_start().strip_prefix('"')?;
        let mut out = String::new();
        let mut it = s.char_indices();
        while let Some((i, ch)) = it.next() {
            match ch {
                '\\' => match it.next()?.1 {
                    'n' => out.push('\n'),
                    other => out.push(other),
                },
                '"' => return Some((out, &s[i + 1..])),
                c => out.push(c),
            }
        }
        None
    }
    let mut nodes = BTreeSet::new();
    let mut labels = BTreeMap::new();
    let mut edges = BTreeSet::new();
    assert!(s.starts_with("graph corescope {"));
    for line in s.lines().skip(1) {
        let l = line.trim();
        if l == "}"
            || l.is_empty()
            || ["graph [", "node [", "edge ["]
                .iter()
                .any(|p| l.starts_with(p))
        {
            continue;
        }
        let (first, rest) = quoted(l).unwrap();
        if let Some(rest) = rest.trim_start().strip_prefix("--") {
            let (second, attrs) = quoted(rest).unwrap();
            let count = attrs
                .split("count=")
                .nth(1)
                .unwrap()
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse()
                .unwrap();
            edges.insert((first, second, count));
        } else {
            let label = quoted(rest.split_once("label=").unwrap().1).unwrap().0;
            labels.insert(first.clone(), label);
            nodes.insert(first);
        }
    }
    (nodes, labels, edges)
}

fn graphml_graph(s: &str) -> (Ids, Edges3, Names) {
    let mut reader = quick_xml::Reader::from_str(s);
    let mut nodes = BTreeSet::new();
    let mut edges = BTreeSet::new();
    let mut names = BTreeMap::new();
    let mut cur_node: Option<String> = None;
    let mut cur_edge: Option<(String, String)> = None;
    let mut cur_key: Option<String> = None;
    let mut keys = BTreeMap::new();
    loop {
        match reader.read_event().unwrap() {
            Event::Eof => break,
            Event::Start(e) | Event::Empty(e) => {
                let attr = |n: &str| {
                    e.attributes()
                        .map(|a| a.unwrap())
                        .find(|a| a.key.as_ref() == n.as_bytes())
                        .map(|a| a.unescape_value().unwrap().into_owned())
                };
                match e.name().as_ref() {
                    b"key" => {
                        keys.insert(attr("id").unwrap(), attr("attr.type").unwrap());
                    }
                    b"node" => {
                        let id = attr("id").unwrap();
                        nodes.insert(id.clone());
                        cur_node = Some(id);
                    }
                    b"edge" => cur_edge = Some((attr("source").unwrap(), attr("target").unwrap())),
                    b"data" => cur_key = attr("key"),
                    _ => {}
                }
            }
            Event::Text(t) => {
                let text = t.unescape().unwrap().into_owned();
                match (cur_key.as_deref(), &cur_node, &cur_edge) {
                    (Some("name"), Some(n), None) => {
                        names.insert(n.clone(), text);
                    }
                    (Some("count"), _, Some((s, t))) => {
                        edges.insert((s.clone(), t.clone(), text.parse().unwrap()));
                    }
                    _ => {}
                }
            }
            Event::End(e) => match e.name().as_ref() {
                b"node" => cur_node = None,
                b"edge" => cur_edge = None,
                b"data" => cur_key = None,
                _ => {}
            },
            _ => {}
        }
    }
    assert_eq!(keys.get("count").map(String::as_str), Some("long"));
    assert_eq!(keys.get("lat").map(String::as_str), Some("double"));
    assert_eq!(keys.get("is_observer").map(String::as_str), Some("boolean"));
    (nodes, edges, names)
}

/// Dumps `db` in every format and checks each parses back to the JSON graph.
fn every_format_round_trips(db: &Path, out_dir: &Path) -> (BTreeSet<String>, Edges) {
    let jpath = out_dir.join("g.json");
    let o = dump(
        db,
        &["--format", "json", "--output", jpath.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&std::fs::read(&jpath).unwrap()).unwrap();
    let (nodes, edges) = json_graph(&v);
    let names: BTreeMap<String, Value> = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap().to_string(), n["name"].clone()))
        .collect();
    let edges3: BTreeSet<(String, String, i64)> = edges
        .iter()
        .map(|e| (e.0.clone(), e.1.clone(), e.2))
        .collect();

    // csv (edges) + --nodes-csv
    let cpath = out_dir.join("g.csv");
    let npath = out_dir.join("n.csv");
    let o = dump(
        db,
        &[
            "--format",
            "csv",
            "--output",
            cpath.to_str().unwrap(),
            "--nodes-csv",
            npath.to_str().unwrap(),
        ],
    );
    assert!(o.status.success());
    let mut r = csv::Reader::from_path(&cpath).unwrap();
    assert_eq!(
        r.headers().unwrap(),
        vec!["source", "target", "count", "last_seen"]
    );
    let got: Edges = r
        .records()
        .map(|x| {
            let x = x.unwrap();
            (
                x[0].to_string(),
                x[1].to_string(),
                x[2].parse().unwrap(),
                x[3].to_string(),
            )
        })
        .collect();
    assert_eq!(got, edges);
    let mut r = csv::Reader::from_path(&npath).unwrap();
    let mut got_nodes = BTreeSet::new();
    for rec in r.records() {
        let rec = rec.unwrap();
        assert_eq!(
            Value::from(rec[1].to_string()),
            names[&rec[0]].as_str().map_or(json!(""), |s| json!(s))
        );
        got_nodes.insert(rec[0].to_string());
    }
    assert_eq!(got_nodes, nodes);

    // dot
    let dpath = out_dir.join("g.dot");
    assert!(dump(
        db,
        &["--format", "dot", "--output", dpath.to_str().unwrap()]
    )
    .status
    .success());
    let (dn, labels, de) = dot_graph(&std::fs::read_to_string(&dpath).unwrap());
    assert_eq!(dn, nodes);
    assert_eq!(de, edges3);
    for (id, name) in &names {
        if let Some(n) = name.as_str().filter(|n| !n.trim().is_empty()) {
            assert_eq!(
                &labels[id],
                &n.chars()
                    .filter(|c| !c.is_control() || *c == '\n')
                    .collect::<String>()
            );
        }
    }

    // graphml
    let gpath = out_dir.join("g.graphml");
    assert!(dump(
        db,
        &["--format", "graphml", "--output", gpath.to_str().unwrap()]
    )
    .status
    .success());
    let (gn, ge, gnames) = graphml_graph(&std::fs::read_to_string(&gpath).unwrap());
    assert_eq!(gn, nodes);
    assert_eq!(ge, edges3);
    for (id, name) in &gnames {
        assert_eq!(names[id].as_str(), Some(name.as_str()));
    }

    // geojson
    let geo = out_dir.join("g.geojson");
    assert!(dump(
        db,
        &["--format", "geojson", "--output", geo.to_str().unwrap()]
    )
    .status
    .success());
    let v: Value = serde_json::from_slice(&std::fs::read(&geo).unwrap()).unwrap();
    assert_eq!(v["type"], "FeatureCollection");
    let mut gnodes = BTreeSet::new();
    let mut gedges = Edges::new();
    for f in v["features"].as_array().unwrap() {
        assert_eq!(f["type"], "Feature");
        let p = &f["properties"];
        let geom = &f["geometry"];
        if p["kind"] == "node" {
            gnodes.insert(p["id"].as_str().unwrap().to_string());
            if !geom.is_null() {
                assert_eq!(geom["type"], "Point");
                let c = geom["coordinates"].as_array().unwrap();
                assert_eq!(c[0], p["lon"]);
                assert_eq!(c[1], p["lat"]);
                assert!(!(c[0] == 0.0 && c[1] == 0.0));
            }
        } else {
            assert_eq!(p["kind"], "edge");
            if !geom.is_null() {
                assert_eq!(geom["type"], "LineString");
                assert_eq!(geom["coordinates"].as_array().unwrap().len(), 2);
            }
            gedges.insert((
                p["source"].as_str().unwrap().to_string(),
                p["target"].as_str().unwrap().to_string(),
                p["count"].as_i64().unwrap(),
                p["last_seen"].as_str().unwrap_or("").to_string(),
            ));
        }
    }
    assert_eq!(gnodes, nodes);
    assert_eq!(gedges, edges);
    (nodes, edges)
}

#[test]
fn every_format_parses_back() {
    let tmp = tempfile::tempdir().unwrap();
    let g = graph_db(tmp.path());
    let outs = tmp.path().join("out");
    std::fs::create_dir(&outs).unwrap();
    let (nodes, edges) = every_format_round_trips(&g.db, &outs);
    assert_eq!(nodes.len(), 6);
    assert_eq!(edges.len(), 4);
    // geojson specifics: (0,0) → null geometry; a–d line only when both positioned.
    let v: Value = serde_json::from_slice(&std::fs::read(outs.join("g.geojson")).unwrap()).unwrap();
    let f = v["features"].as_array().unwrap();
    let feat = |id: &str| f.iter().find(|x| x["properties"]["id"] == id).unwrap();
    assert_eq!(feat(&g.b)["geometry"], Value::Null);
    assert_eq!(
        feat(&g.a)["geometry"],
        json!({"type": "Point", "coordinates": [-122.25, 37.5]})
    );
    assert_eq!(
        feat(&g.d)["geometry"],
        json!({"type": "Point", "coordinates": [-121.5, 38.0]})
    );
    // No temporary files left beside the outputs.
    let names: Vec<String> = std::fs::read_dir(&outs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp")), "{names:?}");
}

#[test]
fn filters() {
    let tmp = tempfile::tempdir().unwrap();
    let g = graph_db(tmp.path());
    let edges_of = |args: &[&str]| {
        let o = dump(&g.db, args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        json_graph(&serde_json::from_slice(&o.stdout).unwrap())
    };
    let (_, e) = edges_of(&["--min-count", "5"]);
    let mut counts: Vec<i64> = e.iter().map(|x| x.2).collect();
    counts.sort();
    assert_eq!(counts, vec![5, 7]);
    let (n, e) = edges_of(&["--since", "2026-05-17T00:00:00Z"]);
    assert_eq!(e.len(), 2);
    assert_eq!(n.len(), 3);
    let (_, e) = edges_of(&["--since", "1d", "--now", "2026-05-18T00:00:00Z"]);
    assert_eq!(e.len(), 2);
    let (_, e) = edges_of(&["--since", "30d", "--now", "2026-05-18T00:00:00Z"]);
    assert_eq!(e.len(), 3, "NULL last_seen is excluded by --since");
    // Neighbourhood of a (prefix, any case): a–b, a–c; 2 hops adds b–o.
    let (n, e) = edges_of(&["--node", "AA"]);
    assert_eq!(e.len(), 2);
    assert_eq!(
        n,
        [g.a.clone(), g.b.clone(), g.c.clone()]
            .into_iter()
            .collect()
    );
    let (_, e) = edges_of(&["--node", &g.a, "--hops", "2"]);
    assert_eq!(e.len(), 3);
    // Usage errors: unknown node, non-hex prefix, --hops without --node, bad --since.
    for args in [
        vec!["--node", "99"],
        vec!["--node", "zz"],
        vec!["--hops", "2"],
        vec!["--since", "yesterday"],
        vec!["--format", "xml"],
    ] {
        assert_eq!(dump(&g.db, &args).status.code(), Some(2), "{args:?}");
    }
    // --json without --output: the report and the graph cannot share stdout.
    let o = bin()
        .args(["--json", "graph", "dump", "--db"])
        .arg(&g.db)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    // --json with --output: one JSON report.
    let p = tmp.path().join("x.json");
    let o = bin()
        .args(["--json", "graph", "dump", "--db"])
        .arg(&g.db)
        .args(["--output", p.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success());
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["command"], "graph dump");
    assert_eq!(r["nodes"], 6);
    assert_eq!(r["edges"], 4);
    assert_eq!(r["stored_rows"]["rows"], 8);
    assert_eq!(r["stored_rows"]["empty_endpoint"], 1);
    assert_eq!(r["stored_rows"]["self_loop"], 1);
    assert_eq!(r["stored_rows"]["null_count"], 1);
    assert_eq!(r["stored_rows"]["merged_duplicates"], 1);
}

#[test]
fn dump_is_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    let g = graph_db(tmp.path());
    for f in ["json", "dot", "csv", "graphml", "geojson"] {
        let a = dump(&g.db, &["--format", f]).stdout;
        let b = dump(&g.db, &["--format", f]).stdout;
        assert!(!a.is_empty());
        assert_eq!(a, b, "{f}");
    }
}

#[test]
fn stats() {
    let tmp = tempfile::tempdir().unwrap();
    let g = graph_db(tmp.path());
    let before = dir_snapshot(tmp.path());
    let o = bin()
        .args([
            "--json",
            "graph",
            "stats",
            "--now",
            "2026-05-17T12:30:00Z",
            "--db",
        ])
        .arg(&g.db)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_read_only(&before, &dir_snapshot(tmp.path()));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["command"], "graph stats");
    assert_eq!(v["nodes"], 6);
    assert_eq!(v["edges"], 4);
    assert_eq!(v["components"], 2);
    assert_eq!(v["largest_components"], json!([4, 2]));
    assert_eq!(v["degree_distribution"], json!({"1": 4, "2": 2}));
    // Ties broken by id.
    assert_eq!(
        v["hubs"][0],
        json!({"id": g.a, "name": "Alpha \"A\" <&> \\ end", "degree": 2})
    );
    assert_eq!(
        v["hubs"][1],
        json!({"id": g.b, "name": "Bravo, the second\nline", "degree": 2})
    );
    assert_eq!(
        v["edges_by_age"],
        json!({"<1h": 1, "1h-24h": 1, "1d-7d": 0, "7d-30d": 1, ">30d": 0, "unknown": 1})
    );
    assert_eq!(v["unknown_nodes"], 1);
    assert_eq!(v["edges_with_unknown_endpoint"], 1);
    assert_eq!(v["observers"], 1);
    assert_eq!(v["inactive_nodes"], 1);
    // Human report.
    let o = bin()
        .args(["graph", "stats", "--db"])
        .arg(&g.db)
        .output()
        .unwrap();
    assert!(o.status.success());
    let s = String::from_utf8(o.stdout).unwrap();
    assert!(
        s.starts_with("graph: 6 nodes, 4 edges, 2 connected components"),
        "{s}"
    );
}

#[test]
fn graph_on_unmigrated_database_exits_3() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("legacy.db");
    std::fs::copy(crate::harness::Fixture::Legacy.path(), &p).unwrap();
    assert_eq!(dump(&p, &[]).status.code(), Some(3));
}

#[test]
fn legacy_fixture_rebuild_then_every_format() {
    let tmp = tempfile::tempdir().unwrap();
    let db = migrated_fixture(tmp.path());
    build(&db, &["--rebuild"]);
    let stored = edges(&db);
    let outs = tmp.path().join("out");
    std::fs::create_dir(&outs).unwrap();
    let before = std::fs::read(&db).unwrap();
    let (nodes, dumped) = every_format_round_trips(&db, &outs);
    assert_eq!(std::fs::read(&db).unwrap(), before);
    let expect: Edges = stored
        .iter()
        .map(|(a, b, n, t)| (a.clone(), b.clone(), *n, t.clone().unwrap_or_default()))
        .collect();
    assert_eq!(dumped, expect);
    let ends: BTreeSet<String> = stored
        .iter()
        .flat_map(|e| [e.0.clone(), e.1.clone()])
        .collect();
    assert_eq!(nodes, ends);
}

/// The value of attribute `name` in a DOT statement (`name="v"` or `name=v`).
fn dot_attr(line: &str, name: &str) -> Option<String> {
    let at = line
        .find(&format!(" {name}="))
        .or_else(|| line.find(&format!("[{name}=")))?;
    let rest = &line[at + name.len() + 2..];
    Some(match rest.strip_prefix('"') {
        Some(q) => q.split('"').next()?.to_string(),
        None => rest.split([',', ']']).next()?.trim().to_string(),
    })
}

/// Node id → (x, y, pinned) of every node statement with a `pos`.
fn dot_positions(dot: &str) -> BTreeMap<String, (f64, f64, bool)> {
    dot.lines()
        .filter(|l| l.trim_start().starts_with('"') && !l.contains(" -- "))
        .filter_map(|l| {
            let id = l.trim_start()[1..].split('"').next()?.to_string();
            let pos = dot_attr(l, "pos")?;
            let pinned = pos.ends_with('!');
            let (x, y) = pos.trim_end_matches('!').split_once(',')?;
            Some((id, (x.parse().ok()?, y.parse().ok()?, pinned)))
        })
        .collect()
}

/// `tool ARGS` on `input`; None when the tool is not installed.
fn graphviz(tool: &str, args: &[&str], input: &[u8]) -> Option<std::process::Output> {
    use std::io::Write;
    let mut child = std::process::Command::new(tool)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(input).ok()?;
    child.wait_with_output().ok()
}

/// (width, height) in points of an SVG Graphviz wrote.
fn svg_size(svg: &str) -> (f64, f64) {
    let get = |k: &str| -> f64 {
        svg.split(&format!("{k}=\""))
            .nth(1)
            .and_then(|r| r.split("pt\"").next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {k} in the SVG"))
    };
    (get("width"), get("height"))
}

#[test]
fn dot_dump_is_a_map_with_nodes_at_their_positions() {
    let tmp = tempfile::tempdir().unwrap();
    let g = graph_db(tmp.path());
    let o = dump(&g.db, &["--format", "dot"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dot = String::from_utf8(o.stdout).unwrap();
    // The graph names the engine that keeps pinned positions.
    let head = dot.lines().nth(1).unwrap();
    assert_eq!(dot_attr(head, "layout").as_deref(), Some("neato"), "{dot}");
    assert_eq!(dot_attr(head, "inputscale").as_deref(), Some("72"), "{dot}");
    let pos = dot_positions(&dot);
    let (ids, _, _) = dot_graph(&dot);
    // Every node is placed and pinned; a (37.5, -122.25) and d (38.0,
    // -121.5, inactive) by their fix, the others beside their neighbours.
    assert_eq!(pos.keys().cloned().collect::<BTreeSet<_>>(), ids);
    assert!(pos.values().all(|p| p.2), "{pos:?}");
    let (a, d) = (pos[&g.a], pos[&g.d]);
    assert!(d.0 > a.0, "d is east of a: {a:?} {d:?}");
    assert!(d.1 > a.1, "d is north of a (y grows upwards): {a:?} {d:?}");
    // Equirectangular around the middle latitude: 0.75° of longitude at
    // 37.75° against 0.5° of latitude.
    let want = 0.75 * 37.75_f64.to_radians().cos() / 0.5;
    let got = (d.0 - a.0) / (d.1 - a.1);
    assert!((got - want).abs() < 0.01, "aspect {got} (want {want})");
    // The larger side of the map is 10 inches for a graph this small.
    assert!(
        ((d.0 - a.0).max(d.1 - a.1) - 720.0).abs() < 0.2,
        "{a:?} {d:?}"
    );
    // Nodes without a fix ((0, 0) counts as none) are drawn dashed.
    for line in dot
        .lines()
        .filter(|l| l.trim_start().starts_with(&format!("\"{}\" [", g.b)))
    {
        assert!(line.contains("dashed"), "{line}");
    }
    for line in dot
        .lines()
        .filter(|l| l.trim_start().starts_with(&format!("\"{}\" [", g.a)))
    {
        assert!(!line.contains("dashed"), "{line}");
    }
    // Graphviz draws it (the README's command, and neato -n2) as a picture,
    // not a strip: both sides within 2x of each other here.
    for (tool, args) in [("dot", &["-Tsvg"][..]), ("neato", &["-n2", "-Tsvg"][..])] {
        let Some(out) = graphviz(tool, args, dot.as_bytes()) else {
            println!("SKIP {tool}: Graphviz is not installed");
            continue;
        };
        assert!(
            out.status.success(),
            "{tool}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (w, h) = svg_size(&String::from_utf8_lossy(&out.stdout));
        assert!(
            w.max(h) / w.min(h) < 2.5 && w.max(h) < 2000.0,
            "{tool}: {w} x {h} pt"
        );
    }
}

#[test]
fn dot_dump_without_any_fix_asks_for_a_force_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let g = graph_db(tmp.path());
    let conn = Connection::open(&g.db).unwrap();
    conn.execute_batch("UPDATE nodes SET lat = NULL, lon = NULL; UPDATE inactive_nodes SET lat = NULL, lon = NULL;")
        .unwrap();
    drop(conn);
    let o = dump(&g.db, &["--format", "dot"]);
    assert!(o.status.success());
    let dot = String::from_utf8(o.stdout).unwrap();
    let head = dot.lines().nth(1).unwrap();
    assert_eq!(dot_attr(head, "layout").as_deref(), Some("sfdp"), "{dot}");
    assert_eq!(dot_attr(head, "overlap").as_deref(), Some("prism"), "{dot}");
    assert!(dot_positions(&dot).is_empty(), "{dot}");
    if let Some(out) = graphviz("dot", &["-Tsvg"], dot.as_bytes()) {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn node_by_name_or_key_prefix_and_a_node_without_edges() {
    let tmp = tempfile::tempdir().unwrap();
    let g = graph_db(tmp.path());
    let lonely = key("f1");
    let conn = Connection::open(&g.db).unwrap();
    add_node(
        &conn,
        &lonely,
        Some("Lonely Hill"),
        Some(37.0),
        Some(-122.0),
    );
    drop(conn);
    let graph_of = |args: &[&str]| {
        let o = dump(&g.db, args);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        json_graph(&serde_json::from_slice(&o.stdout).unwrap())
    };
    // By name, any case: the inactive node Delta (edge d–x), the observer.
    let (n, e) = graph_of(&["--node", "delta"]);
    assert_eq!(e.len(), 1);
    assert!(n.contains(&g.d), "{n:?}");
    let (n, e) = graph_of(&["--node", "OBS <o>"]);
    assert_eq!(e.len(), 1);
    assert_eq!(n, [g.b.clone(), g.o.clone()].into_iter().collect());
    // The same node by name and by key prefix.
    assert_eq!(
        graph_of(&["--node", "Delta", "--hops", "2"]),
        graph_of(&["--node", &g.d[..6], "--hops", "2"])
    );
    // A known node without edges: an empty result, by name or by key.
    for q in ["lonely hill", &lonely[..8], &lonely] {
        let (n, e) = graph_of(&["--node", q]);
        assert!(n.is_empty() && e.is_empty(), "{q}: {n:?} {e:?}");
        let o = bin()
            .args(["graph", "stats", "--json", "--node", q, "--db"])
            .arg(&g.db)
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{q}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // A node whose edges --since filters away: empty too.
    let (n, e) = graph_of(&["--node", &g.d[..4], "--since", "2026-05-01T00:00:00Z"]);
    assert!(n.is_empty() && e.is_empty());
    // Two nodes of one name: a usage error listing both keys.
    let conn = Connection::open(&g.db).unwrap();
    add_node(&conn, &key("f2"), Some("DELTA"), None, None);
    drop(conn);
    let o = dump(&g.db, &["--node", "Delta"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&g.d) && err.contains(&key("f2")) && err.contains("key prefix"),
        "{err}"
    );
    // Unknown names and prefixes stay usage errors.
    for q in ["nobody", "99"] {
        let o = dump(&g.db, &["--node", q]);
        assert_eq!(o.status.code(), Some(2), "{q}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("--node"), "{q}");
    }
}
