use super::testkeys::{key, keys};
use super::*;

fn pair(a: &str, b: &str) -> (String, String) {
    let (a, b) = canonical_pair(a, b).unwrap();
    (a.to_string(), b.to_string())
}

#[test]
fn index_lower_cases_and_dedups() {
    let a = key("ABCDEF");
    let idx = PrefixIndex::new([a.clone(), a.to_lowercase(), String::new()]);
    assert_eq!(idx.len(), 1);
    assert_eq!(idx.resolve("ab"), Resolution::Unique(&key("abcdef")));
    assert_eq!(idx.resolve("AB"), Resolution::Unique(&key("abcdef")));
    assert_eq!(idx.resolve("AbCd"), Resolution::Unique(&key("abcdef")));
}

#[test]
fn index_prefix_lengths() {
    let k = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let idx = PrefixIndex::new([k]);
    for n in PREFIX_HEX_LENS {
        assert_eq!(idx.resolve(&k[..n]), Resolution::Unique(k), "len {n}");
    }
    // Lengths the firmware never uses are not indexed.
    for n in [1, 3, 5, 10, 14, 18, 64] {
        assert_eq!(idx.resolve(&k[..n]), Resolution::None, "len {n}");
    }
    assert_eq!(idx.resolve(""), Resolution::None);
    assert_eq!(idx.resolve("ff"), Resolution::None);
}

#[test]
fn one_byte_collision_is_ambiguous_longer_prefix_unique() {
    let ([a, b], idx) = keys(["aa11", "aa22"]);
    assert_eq!(idx.resolve("AA"), Resolution::Ambiguous);
    assert_eq!(idx.candidates("aa"), vec![a.as_str(), b.as_str()]);
    assert_eq!(idx.resolve("AA11"), Resolution::Unique(&a));
    assert_eq!(idx.resolve("aa22"), Resolution::Unique(&b));
    assert!(idx.candidates("aa33").is_empty());
}

#[test]
fn short_keys_indexed_only_where_long_enough() {
    let idx = PrefixIndex::new(["abcd"]);
    assert_eq!(idx.resolve("ab"), Resolution::Unique("abcd"));
    assert_eq!(idx.resolve("abcd"), Resolution::Unique("abcd"));
    assert_eq!(idx.resolve("abcd00"), Resolution::None);
}

#[test]
fn non_hex_keys_still_resolve_by_prefix() {
    let idx = PrefixIndex::new(["ZZ-garbage-key", "zy0000"]);
    assert_eq!(idx.resolve("zz"), Resolution::Unique("zz-garbage-key"));
    assert_eq!(idx.resolve("ZZ-G"), Resolution::Unique("zz-garbage-key"));
    assert_eq!(idx.resolve("zy00"), Resolution::Unique("zy0000"));
    assert_eq!(idx.resolve("00"), Resolution::None);
}

/// The index against the rule written out: the candidates of a hop are the
/// keys whose first `hop.len()` bytes are the hop lower-cased, for the
/// indexed lengths only. Keys drawn so that buckets hold many keys, share
/// long prefixes, sit at the ends of the byte range and are not all hex.
#[test]
fn lookup_matches_the_rule_on_many_keys() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let alphabet = b"0123456789abcdefABCDEFz-\x7f";
    let mut raw: Vec<String> = Vec::new();
    for _ in 0..3000 {
        let len = 1 + (next() % 20) as usize;
        let k: String = (0..len)
            .map(|_| {
                alphabet[(next() % 5) as usize * (next() % 6) as usize % alphabet.len()] as char
            })
            .collect();
        raw.push(k);
    }
    raw.push("\u{1}0".into());
    raw.push("\u{7f}ffff".into());
    let idx = PrefixIndex::new(&raw);
    let folded: std::collections::BTreeSet<String> = raw
        .iter()
        .map(|k| crate::keys::fold_id(k))
        .filter(|k| !k.is_empty())
        .collect();
    assert_eq!(idx.len(), folded.len());
    let mut hops: Vec<String> = raw.iter().take(500).cloned().collect();
    for k in raw.iter().take(500) {
        for n in 1..=k.len().min(17) {
            hops.push(k[..n].to_uppercase());
        }
    }
    hops.extend(["", "z", "zz", "\u{7f}f", "\u{1}0", "ffffffffffffffff"].map(String::from));
    let mut checked_multi = 0;
    for hop in &hops {
        let want: Vec<&str> = if PREFIX_HEX_LENS.contains(&hop.len()) {
            let h = hop.to_ascii_lowercase();
            folded
                .iter()
                .filter(|k| k.as_bytes().starts_with(h.as_bytes()))
                .map(String::as_str)
                .collect()
        } else {
            Vec::new()
        };
        checked_multi += usize::from(want.len() > 1);
        assert_eq!(idx.candidates(hop), want, "hop {hop:?}");
    }
    assert!(
        checked_multi > 100,
        "{checked_multi} hops with several keys"
    );
}

#[test]
fn non_ascii_key_does_not_panic() {
    let idx = PrefixIndex::new(["aé€xyzéé€€€€€€€€€€"]);
    assert_eq!(idx.resolve("aé"), Resolution::None);
}

#[test]
fn path_json_tolerant() {
    assert!(parse_path_json("").is_empty());
    assert!(parse_path_json("[]").is_empty());
    assert!(parse_path_json("  ").is_empty());
    assert!(parse_path_json("not json").is_empty());
    assert!(parse_path_json("[\"AB\",").is_empty());
    assert!(parse_path_json("{\"a\":1}").is_empty());
    assert!(parse_path_json("[1,2]").is_empty());
    assert!(parse_path_json("null").is_empty());
    assert_eq!(
        parse_path_json("[\"59\",\"20\",\"1D\"]"),
        vec!["59", "20", "1D"]
    );
    assert_eq!(parse_path_json(" [\"7D1D\"] "), vec!["7D1D"]);
}

#[test]
fn path_ends_matches_full_parse() {
    let cases = [
        "",
        "[]",
        " [ ] ",
        "[\"A\"]",
        "[\"A\",\"B\",\"C\"]",
        " [ \"a\" , \"b\" ] \n",
        "[\"A\",]",
        "[,\"A\"]",
        "[\"A\" \"B\"]",
        "[\"A\"] x",
        "[\"A",
        "[\"\\u0041\",\"B\"]",
        "[\"A\\\"\"]",
        "[\"a\tb\"]",
        "[1]",
        "null",
        "{}",
        "[\"é\",\"ü\"]",
        "\u{a0}[\"A\"]",
        "[\"\"]",
    ];
    for c in cases {
        let full = parse_path_json(c);
        let ends = path_ends(c).map(|(a, b)| (a.into_owned(), b.into_owned()));
        let expect = full.first().cloned().zip(full.last().cloned());
        assert_eq!(ends, expect, "{c:?}");
    }
    assert!(fast_path_ends("[\"A\",\"B\"]").is_some());
    assert!(fast_path_ends("[\"\\u0041\"]").is_none());
}

#[test]
fn hasher_is_deterministic_and_length_aware() {
    let h = |b: &[u8]| {
        let mut x = Fnv::default();
        x.write(b);
        x.finish()
    };
    assert_eq!(h(b"abc"), h(b"abc"));
    assert_ne!(h(b"abc"), h(b"abd"));
    assert_ne!(h(b"\0"), h(b"\0\0"));
    assert_ne!(h(&[7u8; 64]), h(&[7u8; 63]));
}

#[test]
fn decoded_pubkey_tolerant() {
    assert_eq!(decoded_pubkey("{\"pubKey\":\"AB\"}"), Some("AB".into()));
    assert_eq!(decoded_pubkey("{\"pubKey\":1}"), None);
    assert_eq!(decoded_pubkey("{}"), None);
    assert_eq!(decoded_pubkey("garbage"), None);
    assert_eq!(decoded_pubkey("[]"), None);
}

/// The extraction as it was: a full `serde_json::Value`.
fn full_parse_pubkey(decoded_json: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(decoded_json).ok()?;
    v.get("pubKey")?.as_str().map(|s| s.to_string())
}

#[test]
fn decoded_pubkey_matches_the_full_parse_on_edge_cases() {
    let cases = [
        r#"{"pubKey":"ab"}"#,
        r#"{"type":"ADVERT","pubKey":"AbCd","flags":{"raw":145,"chat":true},"lat":1.5e3,"name":"x\u00e9\n"}"#,
        r#"{"pubKey":"a","pubKey":"b"}"#,
        r#"{"pubKey":"a","pubKey":1}"#,
        r#"{"pubKey":1,"pubKey":"b"}"#,
        r#"{"pubKey":null}"#,
        r#"{"pubKey":["ab"]}"#,
        r#"{"pubKey":{"pubKey":"ab"}}"#,
        r#"{"inner":{"pubKey":"ab"}}"#,
        r#"{"pub\u004bey":"escaped key"}"#,
        r#"{"pubKey":"esc\"aped\u0041"}"#,
        r#"{"pubKey":"ab"} "#,
        r#"{"pubKey":"ab"} x"#,
        r#"{"pubKey":"ab"}{"pubKey":"cd"}"#,
        r#"{"pubKey":"ab","big":1e999}"#,
        r#"{"pubKey":"ab","neg":-0,"n":18446744073709551616}"#,
        r#"{"pubKey":"ab","s":"\ud800"}"#,
        r#"{"pubKey":"ab","s":"\ud83d\ude00"}"#,
        r#"{"pubKey":"ab","ctl":"a	b"}"#,
        r#"{"pubKey":"ab",}"#,
        r#"{"pubKey":"ab""#,
        r#"["pubKey","ab"]"#,
        r#""pubKey""#,
        "123",
        "null",
        "true",
        "",
        "   ",
        "{broken",
        r#"{"pubKey":"","x":[[[[]]]]}"#,
    ];
    for c in cases {
        assert_eq!(decoded_pubkey(c), full_parse_pubkey(c), "{c:?}");
    }
    // Nesting deeper than serde_json's limit fails in both.
    let deep = format!(
        r#"{{"pubKey":"ab","x":{}{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    assert_eq!(decoded_pubkey(&deep), full_parse_pubkey(&deep));
    assert_eq!(decoded_pubkey(&deep), None);
}

#[test]
fn decoded_pubkey_matches_the_full_parse_on_every_fixture_row() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/legacy-2026-03.db");
    let c =
        rusqlite::Connection::open_with_flags(&fixture, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut st = c
        .prepare(
            "SELECT payload_type, decoded_json FROM transmissions WHERE decoded_json IS NOT NULL",
        )
        .unwrap();
    let rows: Vec<(Option<i64>, String)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert!(!rows.is_empty());
    let mut adverts_with_key = 0;
    for (pt, dj) in &rows {
        let got = decoded_pubkey(dj);
        assert_eq!(got, full_parse_pubkey(dj), "{dj}");
        if *pt == Some(4) && got.is_some() {
            adverts_with_key += 1;
        }
    }
    assert!(
        adverts_with_key > 0,
        "the fixture has ADVERTs with a pubKey"
    );
}

struct World {
    f: String,
    o: String,
    h1: String,
    h2: String,
    idx: PrefixIndex,
}

const ADVERT: i64 = packet::PAYLOAD_ADVERT as i64;

/// An observation of a transmission of `payload_type` (no decoded JSON).
fn input<'a>(
    payload_type: i64,
    from_pubkey: Option<&'a str>,
    observer_id: Option<&'a str>,
    path_json: Option<&'a str>,
) -> ObsInput<'a> {
    ObsInput {
        payload_type: Some(payload_type),
        from_pubkey,
        observer_id,
        path_json,
        decoded_json: None,
    }
}

impl World {
    /// The edges of an observation (see [`input`]).
    fn edges(
        &self,
        payload_type: i64,
        from_pubkey: Option<&str>,
        observer_id: Option<&str>,
        path_json: Option<&str>,
    ) -> Vec<(String, String)> {
        let obs = input(payload_type, from_pubkey, observer_id, path_json);
        extract(&obs, &self.idx)
    }
}

fn world() -> World {
    let ([f, o, h1, h2], idx) = keys(["f0f0", "0b0b", "1111", "2222"]);
    World { f, o, h1, h2, idx }
}

#[test]
fn zero_hop_advert_links_originator_and_observer() {
    let w = world();
    let upper_o = w.o.to_uppercase();
    for path in [None, Some(""), Some("[]"), Some("garbage")] {
        assert_eq!(
            w.edges(ADVERT, Some(&w.f), Some(&upper_o), path,),
            vec![pair(&w.f, &w.o)],
            "{path:?}"
        );
    }
}

#[test]
fn zero_hop_non_advert_gives_nothing() {
    let w = world();
    assert!(w.edges(5, Some(&w.f), Some(&w.o), Some("[]")).is_empty());
}

#[test]
fn zero_hop_advert_heard_by_itself_is_no_edge() {
    let w = world();
    let upper_f = w.f.to_uppercase();
    assert!(w
        .edges(ADVERT, Some(&w.f), Some(&upper_f), Some("[]"))
        .is_empty());
}

#[test]
fn empty_observer_never_yields_empty_endpoint() {
    let w = world();
    for observer in [None, Some(""), Some("  ")] {
        // Zero-hop ADVERT without an observer: nothing.
        assert!(w.edges(ADVERT, Some(&w.f), observer, Some("[]")).is_empty());
        // ADVERT with hops: only the originator edge.
        assert_eq!(
            w.edges(ADVERT, Some(&w.f), observer, Some("[\"11\",\"22\"]")),
            vec![pair(&w.f, &w.h1)]
        );
        // Non-ADVERT: nothing.
        assert!(w
            .edges(2, Some(&w.f), observer, Some("[\"11\",\"22\"]"))
            .is_empty());
    }
}

#[test]
fn advert_with_hops_gives_both_edges() {
    let w = world();
    // (path, edges): a single hop counts under both rules.
    for (path, want) in [
        (
            "[\"11\",\"22\"]",
            vec![pair(&w.f, &w.h1), pair(&w.o, &w.h2)],
        ),
        ("[\"11\"]", vec![pair(&w.f, &w.h1), pair(&w.o, &w.h1)]),
    ] {
        assert_eq!(
            w.edges(ADVERT, Some(&w.f), Some(&w.o), Some(path)),
            want,
            "{path}"
        );
    }
}

#[test]
fn non_advert_only_observer_last_hop() {
    let w = world();
    let obs = ObsInput {
        payload_type: Some(5),
        from_pubkey: Some(&w.f), // ignored: not an ADVERT
        observer_id: Some(&w.o),
        path_json: Some("[\"11\",\"22\"]"),
        ..Default::default()
    };
    assert_eq!(extract(&obs, &w.idx), vec![pair(&w.o, &w.h2)]);
    let obs = ObsInput {
        payload_type: None,
        ..obs
    };
    assert_eq!(extract(&obs, &w.idx), vec![pair(&w.o, &w.h2)]);
}

#[test]
fn multi_byte_hops_and_case() {
    let w = world();
    let upper_f = w.f.to_uppercase();
    let upper_o = w.o.to_uppercase();
    let obs = input(
        ADVERT,
        Some(&upper_f),
        Some(&upper_o),
        Some("[\"1111\",\"aa\",\"222200\"]"),
    );
    let got = extract(&obs, &w.idx);
    assert_eq!(got, vec![pair(&w.f, &w.h1), pair(&w.o, &w.h2)]);
    for (a, b) in &got {
        assert_eq!(a, &a.to_lowercase());
        assert_eq!(b, &b.to_lowercase());
        assert!(a < b);
    }
}

#[test]
fn ambiguous_or_unknown_hops_are_skipped() {
    let ([f, o, a1, a2], idx) = keys(["f0", "0b", "aa01", "aa02"]);
    let obs = input(ADVERT, Some(&f), Some(&o), Some("[\"AA\",\"CC\"]"));
    assert!(extract(&obs, &idx).is_empty());
    // The longer prefix disambiguates.
    let obs = ObsInput {
        path_json: Some("[\"AA01\",\"AA02\"]"),
        ..obs
    };
    assert_eq!(extract(&obs, &idx), vec![pair(&f, &a1), pair(&o, &a2)]);
}

#[test]
fn no_self_edges_from_hops() {
    let w = world();
    // First hop resolves to the originator, last hop to the observer.
    assert!(w
        .edges(ADVERT, Some(&w.f), Some(&w.o), Some("[\"F0\",\"0B\"]"))
        .is_empty());
}

#[test]
fn originator_falls_back_to_decoded_json() {
    let w = world();
    let dj = format!(
        "{{\"type\":\"ADVERT\",\"pubKey\":\"{}\"}}",
        w.f.to_uppercase()
    );
    for from in [None, Some(""), Some(" ")] {
        let obs = ObsInput {
            payload_type: Some(ADVERT),
            from_pubkey: from,
            decoded_json: Some(&dj),
            observer_id: Some(&w.o),
            path_json: Some("[]"),
        };
        assert_eq!(extract(&obs, &w.idx), vec![pair(&w.f, &w.o)]);
    }
    // Invalid decoded_json: no originator.
    let obs = ObsInput {
        payload_type: Some(ADVERT),
        from_pubkey: Some(""),
        decoded_json: Some("{broken"),
        observer_id: Some(&w.o),
        path_json: Some("[]"),
    };
    assert!(extract(&obs, &w.idx).is_empty());
}

#[test]
fn non_key_ids_are_not_endpoints() {
    let w = world();
    // Non-hex observer id and a truncated originator.
    assert!(w
        .edges(
            ADVERT,
            Some("f0f0"),
            Some("companion"),
            Some("[\"11\",\"22\"]"),
        )
        .is_empty());
    assert!(w
        .edges(ADVERT, Some(&w.f), Some("companion"), Some("[]"))
        .is_empty());
}

#[test]
fn trace_rows_are_skipped() {
    let w = world();
    let obs = ObsInput {
        payload_type: Some(i64::from(packet::PAYLOAD_TRACE)),
        observer_id: Some(&w.o),
        path_json: Some("[\"22\"]"),
        ..Default::default()
    };
    assert!(extract(&obs, &w.idx).is_empty());
}

#[test]
fn empty_index_gives_only_zero_hop_edges() {
    let w = world();
    let idx = PrefixIndex::new(Vec::<String>::new());
    assert!(idx.is_empty());
    let obs = input(ADVERT, Some(&w.f), Some(&w.o), Some("[\"11\"]"));
    assert!(extract(&obs, &idx).is_empty());
    let obs = ObsInput {
        path_json: Some("[]"),
        ..obs
    };
    assert_eq!(extract(&obs, &idx), vec![pair(&w.f, &w.o)]);
}

mod props {
    use super::super::*;
    use proptest::prelude::*;

    proptest! {
        /// The borrowing fast path agrees with the full JSON parse on
        /// arbitrary strings over a JSON-ish alphabet.
        #[test]
        fn path_ends_agrees_with_parse(s in "[\\[\\]\",\\\\ a-fA-F0-9u\t\n]{0,24}") {
            let full = parse_path_json(&s);
            let ends = path_ends(&s).map(|(a, b)| (a.into_owned(), b.into_owned()));
            prop_assert_eq!(ends, full.first().cloned().zip(full.last().cloned()));
        }

        /// Same on well-formed arrays with arbitrary JSON whitespace.
        #[test]
        fn path_ends_agrees_on_arrays(
            hops in prop::collection::vec("[A-Fa-f0-9]{0,4}", 0..5),
            ws in "[ \t\n\r]{0,2}",
        ) {
            let s = format!("{ws}[{ws}{}{ws}]{ws}", hops.iter().map(|h| format!("\"{h}\"")).collect::<Vec<_>>().join(&format!("{ws},{ws}")));
            let full = parse_path_json(&s);
            prop_assert_eq!(&full, &hops);
            prop_assert!(fast_path_ends(&s).is_some());
            let ends = path_ends(&s).map(|(a, b)| (a.into_owned(), b.into_owned()));
            prop_assert_eq!(ends, full.first().cloned().zip(full.last().cloned()));
        }

        /// Every candidate is canonical, lower-case, non-empty and no self-edge.
        #[test]
        fn candidates_are_canonical(
            pt in prop::option::of(0i64..16),
            from in "[0-9a-fA-F]{0,64}",
            obs in "[0-9a-fA-F]{60,66}",
            hops in prop::collection::vec("[0-9a-fA-F]{1,6}", 0..5),
        ) {
            let keys: Vec<String> = (0..40u32).map(|i| format!("{:02x}{:062x}", (i * 7) % 256, i)).collect();
            let idx = PrefixIndex::new(&keys);
            let pj = serde_json::to_string(&hops).unwrap();
            let o = ObsInput {
                payload_type: pt,
                from_pubkey: Some(&from),
                decoded_json: None,
                observer_id: Some(&obs),
                path_json: Some(&pj),
            };
            for (a, b) in extract(&o, &idx) {
                prop_assert!(!a.is_empty() && !b.is_empty());
                prop_assert!(a < b);
                prop_assert_eq!(&a, &a.to_ascii_lowercase());
                prop_assert_eq!(&b, &b.to_ascii_lowercase());
            }
        }
    }
}
