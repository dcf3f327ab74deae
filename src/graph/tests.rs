use super::*;
use serde_json::{json, Value};

fn parse(s: &str) -> Option<i64> {
    // Test stand-in: integer text or "T<n>".
    s.strip_prefix('T').unwrap_or(s).parse().ok()
}

fn fmt(t: i64) -> String {
    format!("T{t}")
}

fn raw(a: &str, b: &str, c: Option<i64>, t: Option<&str>) -> RawEdge {
    RawEdge {
        node_a: Some(a.into()),
        node_b: Some(b.into()),
        count: c,
        last_seen: t.map(Into::into),
    }
}

fn edge(a: &str, b: &str, c: i64, t: Option<i64>) -> Edge {
    Edge {
        source: a.into(),
        target: b.into(),
        count: c,
        last_seen: t,
    }
}

#[test]
fn normalize_merges_skips_and_orders() {
    let rows = vec![
        raw("bb", "aa", Some(2), Some("10")),
        raw("AA", "BB", Some(3), Some("20")),
        raw("", "aa", Some(1), Some("5")),
        raw("cc", "CC", Some(1), None),
        raw("aa", "dd", None, None),
        raw("aa", "cc", Some(1), Some("junk")),
        RawEdge::default(),
    ];
    let (edges, rep) = normalize_edges(rows, &parse);
    assert_eq!(
        edges,
        vec![edge("aa", "bb", 5, Some(20)), edge("aa", "cc", 1, None)]
    );
    assert_eq!(
        rep,
        NormalizeReport {
            rows: 7,
            skipped_empty_endpoint: 2,
            skipped_self_loop: 1,
            skipped_null_count: 1,
            merged_duplicates: 1,
        }
    );
}

fn dir() -> Directory {
    let mut d = Directory::default();
    d.nodes.insert(
        "aa".into(),
        NodeRow {
            name: Some("Alpha \"A\" <&>".into()),
            role: Some("repeater".into()),
            lat: Some(37.5),
            lon: Some(-122.25),
            last_seen: Some("100".into()),
        },
    );
    d.inactive.insert(
        "bb".into(),
        NodeRow {
            name: Some("Bravo".into()),
            lat: Some(0.0),
            lon: Some(0.0),
            ..Default::default()
        },
    );
    d.inactive.insert(
        "aa".into(),
        NodeRow {
            name: Some("old alpha".into()),
            ..Default::default()
        },
    );
    d.observers.insert("cc".into(), Some("Obs\\C".into()));
    d.nodes.insert(
        "ee".into(),
        NodeRow {
            lat: Some(38.0),
            lon: Some(-121.0),
            ..Default::default()
        },
    );
    d
}

fn sample() -> Graph {
    let edges = vec![
        edge("aa", "bb", 5, Some(20)),
        edge("aa", "cc", 1, None),
        edge("aa", "ee", 2, Some(30)),
        edge("dd", "ff", 7, Some(40)),
    ];
    Graph::from_edges(edges, &dir(), &parse)
}

#[test]
fn node_attributes() {
    let g = sample();
    let ids: Vec<&str> = g.nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, ["aa", "bb", "cc", "dd", "ee", "ff"]);
    let a = &g.nodes[0];
    assert_eq!(a.name.as_deref(), Some("Alpha \"A\" <&>"));
    assert!(!a.inactive && a.known && !a.is_observer);
    assert_eq!(a.last_seen, Some(100));
    assert_eq!(a.position(), Some((-122.25, 37.5)));
    let b = &g.nodes[1];
    assert!(b.inactive && b.known);
    assert_eq!(b.position(), None, "(0,0) is no fix");
    let c = &g.nodes[2];
    assert!(c.is_observer && !c.known);
    assert_eq!(c.name.as_deref(), Some("Obs\\C"));
    let d = &g.nodes[3];
    assert!(!d.known && !d.is_observer);
    assert_eq!(d.label(), "dd");
}

#[test]
fn filters() {
    let g = sample();
    let f = Filter {
        min_count: Some(2),
        ..Default::default()
    };
    let e = filter_edges(g.edges.clone(), &f).unwrap();
    assert_eq!(e.len(), 3);
    let f = Filter {
        since: Some(25),
        ..Default::default()
    };
    let e = filter_edges(g.edges.clone(), &f).unwrap();
    assert_eq!(
        e,
        vec![edge("aa", "ee", 2, Some(30)), edge("dd", "ff", 7, Some(40))]
    );
    let f = Filter {
        node: Some(("B".into(), 1)),
        ..Default::default()
    };
    let e = filter_edges(g.edges.clone(), &f).unwrap();
    assert_eq!(e, vec![edge("aa", "bb", 5, Some(20))]);
    let f = Filter {
        node: Some(("bb".into(), 2)),
        ..Default::default()
    };
    assert_eq!(filter_edges(g.edges.clone(), &f).unwrap().len(), 3);
    let f = Filter {
        node: Some(("bb".into(), 0)),
        ..Default::default()
    };
    assert!(filter_edges(g.edges.clone(), &f).unwrap().is_empty());
    let f = Filter {
        node: Some(("99".into(), 1)),
        ..Default::default()
    };
    assert_eq!(
        filter_edges(g.edges.clone(), &f),
        Err(SelectError::NoMatch("99".into()))
    );
    let f = Filter {
        node: Some(("zz".into(), 1)),
        ..Default::default()
    };
    assert!(matches!(
        filter_edges(g.edges.clone(), &f),
        Err(SelectError::Invalid(_))
    ));
    let edges = vec![edge("a1", "a2", 1, None), edge("a2", "b", 1, None)];
    let f = Filter {
        node: Some(("a".into(), 1)),
        ..Default::default()
    };
    assert!(matches!(
        filter_edges(edges.clone(), &f),
        Err(SelectError::Ambiguous(_, _))
    ));
    // Exact id wins even when it is a prefix of another id.
    let edges = vec![edge("ab", "abc", 1, None), edge("abc", "d0", 1, None)];
    let f = Filter {
        node: Some(("ab".into(), 1)),
        ..Default::default()
    };
    assert_eq!(filter_edges(edges, &f).unwrap().len(), 1);
}

#[test]
fn stats_of_sample() {
    let g = sample();
    let s = stats(&g, 40 + 3600, 3);
    assert_eq!(s.nodes, 6);
    assert_eq!(s.edges, 4);
    assert_eq!(s.components, 2);
    assert_eq!(s.largest_components, vec![4, 2]);
    assert_eq!(s.degree_distribution, BTreeMap::from([(1, 5), (3, 1)]));
    assert_eq!(s.max_degree, 3);
    assert_eq!(s.hubs[0], ("aa".into(), "Alpha \"A\" <&>".into(), 3));
    assert_eq!(s.hubs[1].0, "bb");
    assert_eq!(s.hubs.len(), 3);
    assert_eq!(
        s.age_buckets,
        vec![
            ("<1h", 0),
            ("1h-24h", 3),
            ("1d-7d", 0),
            ("7d-30d", 0),
            (">30d", 0),
            ("unknown", 1)
        ]
    );
    assert_eq!(s.unknown_nodes, 2);
    assert_eq!(s.edges_with_unknown_endpoint, 1);
    assert_eq!(s.observers, 1);
    assert_eq!(s.inactive_nodes, 1);
    let empty = stats(&Graph::default(), 0, 10);
    assert_eq!((empty.nodes, empty.edges, empty.components), (0, 0, 0));
}

fn render(f: Format) -> String {
    let mut buf = Vec::new();
    write(&sample(), f, &mut buf, &fmt).unwrap();
    String::from_utf8(buf).unwrap()
}

#[test]
fn json_format() {
    let v: Value = serde_json::from_str(&render(Format::Json)).unwrap();
    assert_eq!(v["nodes"].as_array().unwrap().len(), 6);
    assert_eq!(v["nodes"][0]["id"], "aa");
    assert_eq!(v["nodes"][0]["lat"], 37.5);
    assert_eq!(v["nodes"][3]["name"], Value::Null);
    assert_eq!(
        v["edges"][0],
        json!({"source":"aa","target":"bb","count":5,"last_seen":"T20"})
    );
    assert_eq!(v["edges"][1]["last_seen"], Value::Null);
}

#[test]
fn dot_format_escapes() {
    assert_eq!(dot_escape("a\"b\\c\nd\x01"), "a\\\"b\\\\c\\nd");
    let s = render(Format::Dot);
    assert!(s.starts_with("graph corescope {\n"));
    assert!(s.contains("\"aa\" [label=\"Alpha \\\"A\\\" <&>\""));
    assert!(s.contains("\"cc\" [label=\"Obs\\\\C\""));
    assert!(s.contains("\"aa\" -- \"bb\" [weight=5, count=5, last_seen=\"T20\"];"));
    assert!(s.trim_end().ends_with('}'));
}

#[test]
fn csv_formats() {
    let s = render(Format::Csv);
    let mut r = csv::Reader::from_reader(s.as_bytes());
    let rows: Vec<csv::StringRecord> = r.records().map(|x| x.unwrap()).collect();
    assert_eq!(rows.len(), 4);
    assert_eq!(
        &rows[0],
        &csv::StringRecord::from(vec!["aa", "bb", "5", "T20"])
    );
    assert_eq!(&rows[1][3], "");
    let mut buf = Vec::new();
    write_nodes_csv(&sample(), &mut buf, &fmt).unwrap();
    let mut r = csv::Reader::from_reader(buf.as_slice());
    let rows: Vec<csv::StringRecord> = r.records().map(|x| x.unwrap()).collect();
    assert_eq!(rows.len(), 6);
    assert_eq!(&rows[0][1], "Alpha \"A\" <&>");
    assert_eq!(&rows[1][7], "true");
}

#[test]
fn graphml_format_parses() {
    use quick_xml::events::Event;
    let s = render(Format::Graphml);
    let mut reader = quick_xml::Reader::from_str(&s);
    let (mut nodes, mut edges, mut texts) = (0, 0, Vec::new());
    loop {
        match reader.read_event().unwrap() {
            Event::Eof => break,
            Event::Start(e) if e.name().as_ref() == b"node" => nodes += 1,
            Event::Start(e) if e.name().as_ref() == b"edge" => edges += 1,
            Event::Text(t) => texts.push(t.unescape().unwrap().into_owned()),
            _ => {}
        }
    }
    assert_eq!((nodes, edges), (6, 4));
    assert!(texts.iter().any(|t| t == "Alpha \"A\" <&>"));
    assert_eq!(xml_escape("a<b>&\"'\x02"), "a&lt;b&gt;&amp;&quot;&apos;");
}

#[test]
fn geojson_format() {
    let v: Value = serde_json::from_str(&render(Format::Geojson)).unwrap();
    assert_eq!(v["type"], "FeatureCollection");
    let f = v["features"].as_array().unwrap();
    assert_eq!(f.len(), 10);
    assert_eq!(
        f[0]["geometry"],
        json!({"type":"Point","coordinates":[-122.25,37.5]})
    );
    assert_eq!(f[1]["geometry"], Value::Null, "(0,0) node");
    assert_eq!(f[3]["geometry"], Value::Null, "unknown node");
    // aa–ee: both positioned.
    let ae = f
        .iter()
        .find(|x| x["properties"]["target"] == "ee")
        .unwrap();
    assert_eq!(
        ae["geometry"],
        json!({"type":"LineString","coordinates":[[-122.25,37.5],[-121.0,38.0]]})
    );
    let ab = f
        .iter()
        .find(|x| x["properties"]["target"] == "bb")
        .unwrap();
    assert_eq!(ab["geometry"], Value::Null);
}
