//! Pure per-row derivations of the `backfill` tasks (rules in
//! docs/backfill.md). No SQL here; `commands/backfill.rs` feeds rows in and
//! writes the results.

use crate::edges::{self, PrefixIndex};
use crate::keys::normalize_key;
use crate::packet;
use crate::resolve::{self, Adjacency};

/// What a backfill derives for one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Derived {
    /// A value derived from the row's data: write it.
    Value(String),
    /// Nothing derivable: write the task's sentinel (`''` for `from_pubkey`,
    /// `'[]'` for `path_json`) so the row leaves the selection for good.
    Sentinel(&'static str),
    /// Leave the row as it is (resolved_path all-null, TRACE found by the
    /// header byte).
    Leave,
}

/// `from_pubkey` sentinel (CoreScope's own: "no key could be found").
pub const FROM_PUBKEY_SENTINEL: &str = "";
/// `path_json` sentinel.
pub const PATH_JSON_SENTINEL: &str = "[]";

/// `from_pubkey` of an ADVERT transmission whose `from_pubkey` is NULL:
/// `decoded_json.pubKey` when it is a 64-hex string (the caller may
/// pass it pre-extracted), else the key decoded from `raw_hex`, else
/// the sentinel `''`. Always lower-case.
pub fn from_pubkey(decoded_pubkey: Option<&str>, raw_hex: Option<&str>) -> Derived {
    if let Some(k) = decoded_pubkey.and_then(normalize_key) {
        return Derived::Value(k);
    }
    if let Some(k) = raw_hex
        .and_then(|h| packet::parse_hex(h).ok())
        .and_then(|b| packet::advert_pubkey(&b).ok())
    {
        return Derived::Value(k);
    }
    Derived::Sentinel(FROM_PUBKEY_SENTINEL)
}

/// Payload type of a row: the stored column, else the header byte of the raw
/// packet (the header is authoritative).
pub fn payload_type(column: Option<i64>, raw_hex: Option<&str>) -> Option<i64> {
    column.or_else(|| {
        let h = raw_hex?;
        let b = packet::parse_hex(h.get(..2)?).ok()?;
        Some(i64::from(
            packet::Header::from_byte(*b.first()?).payload_type,
        ))
    })
}

/// `path_json` of an observation from its **own** `raw_hex`: the
/// packetpath helper's hops (no validity checks, so an over-long path keeps
/// all its hops, exactly as CoreScope stores it); `'[]'` for a zero-hop
/// packet (a value) or an undecodable one (the sentinel). TRACE packets —
/// by the header byte of these very bytes — are left alone: their header
/// path bytes are SNR values, not hops.
pub fn path_json(raw_hex: &str) -> Derived {
    let bytes = match packet::parse_hex(raw_hex) {
        Ok(b) => b,
        Err(_) => return Derived::Sentinel(PATH_JSON_SENTINEL),
    };
    if let Some(&h) = bytes.first() {
        if packet::Header::from_byte(h).payload_type == packet::PAYLOAD_TRACE {
            return Derived::Leave;
        }
    }
    match packet::packetpath_hops(&bytes) {
        Ok(hops) => Derived::Value(packet::hops_json(&hops)),
        Err(_) => Derived::Sentinel(PATH_JSON_SENTINEL),
    }
}

/// The columns of one observation (joined to its transmission) that the
/// resolved-path task reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct ResolveInput<'a> {
    /// Effective payload type (see [`payload_type`]).
    pub payload_type: Option<i64>,
    /// `transmissions.from_pubkey` (NULL → `None`).
    pub from_pubkey: Option<&'a str>,
    /// `decoded_json.pubKey` when `from_pubkey` is NULL.
    pub decoded_pubkey: Option<&'a str>,
    /// `transmissions.raw_hex` when `from_pubkey` is NULL.
    pub tx_raw_hex: Option<&'a str>,
    /// `observations.path_json`.
    pub path_json: &'a str,
}

/// Originator for resolved_path: ADVERTs only. A stored `from_pubkey` is used when it
/// is a 64-hex key (the sentinel `''` means "unknown"); when it is still
/// NULL the key is derived exactly as the from-pubkey task would derive it, so
/// the result does not depend on which task ran first.
pub fn originator(inp: &ResolveInput<'_>) -> Option<String> {
    if packet::stored_payload_type(inp.payload_type) != Some(packet::PAYLOAD_ADVERT) {
        return None;
    }
    match inp.from_pubkey {
        Some(k) => normalize_key(k),
        None => match from_pubkey(inp.decoded_pubkey, inp.tx_raw_hex) {
            Derived::Value(k) => Some(k),
            _ => None,
        },
    }
}

/// `resolved_path` for one observation: `Value` with the JSON array,
/// or `Leave` when there are no hops, the packet is a TRACE or no
/// hop resolves (never `''`, never an all-null array).
pub fn resolved_path(inp: &ResolveInput<'_>, adj: &Adjacency, idx: &PrefixIndex) -> Derived {
    if packet::stored_payload_type(inp.payload_type) == Some(packet::PAYLOAD_TRACE) {
        return Derived::Leave;
    }
    let hops = edges::parse_path_json(inp.path_json);
    if hops.is_empty() {
        return Derived::Leave;
    }
    let origin = originator(inp).unwrap_or_default();
    match resolve::resolve_path(&hops, &origin, adj, idx) {
        Some(rp) => Derived::Value(resolve::to_json(&rp)),
        None => Derived::Leave,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edges::testkeys::{key, keys};
    use crate::packet::{encode_advert_payload, encode_packet, PacketSpec};

    fn advert_hex(k: &[u8; 32], hops: Vec<Vec<u8>>, hash_size: u8) -> String {
        hex::encode_upper(encode_packet(&PacketSpec {
            route_type: packet::ROUTE_FLOOD,
            payload_type: packet::PAYLOAD_ADVERT,
            hash_size,
            hops,
            payload: encode_advert_payload(k, 1, 2, None, Some("n")),
            ..Default::default()
        }))
    }

    #[test]
    fn from_pubkey_rules() {
        let k = [0xC3u8; 32];
        let raw = advert_hex(&k, vec![vec![1, 2]], 2);
        let lower = "c3".repeat(32);
        // decoded_json wins, lower-cased
        assert_eq!(
            from_pubkey(Some(&key("AB")), Some(&raw)),
            Derived::Value(key("ab"))
        );
        // invalid decoded key → raw
        assert_eq!(
            from_pubkey(Some("abc"), Some(&raw)),
            Derived::Value(lower.clone())
        );
        assert_eq!(from_pubkey(None, Some(&raw)), Derived::Value(lower));
        // neither → sentinel
        assert_eq!(from_pubkey(None, Some("zz")), Derived::Sentinel(""));
        assert_eq!(from_pubkey(None, Some("")), Derived::Sentinel(""));
        assert_eq!(from_pubkey(None, None), Derived::Sentinel(""));
        // raw that is not an ADVERT → sentinel
        assert_eq!(
            from_pubkey(None, Some("150359d69581d166")),
            Derived::Sentinel("")
        );
        // truncated ADVERT (key incomplete) → sentinel
        assert_eq!(from_pubkey(None, Some(&raw[..40])), Derived::Sentinel(""));
    }

    #[test]
    fn decoded_pubkey_tolerant() {
        assert_eq!(
            edges::decoded_pubkey(r#"{"type":"ADVERT","pubKey":"AbC"}"#).as_deref(),
            Some("AbC")
        );
        assert_eq!(edges::decoded_pubkey(r#"{"pubKey":5}"#), None);
        assert_eq!(edges::decoded_pubkey("not json"), None);
        assert_eq!(edges::decoded_pubkey("[]"), None);
    }

    #[test]
    fn path_json_rules() {
        // example B
        assert_eq!(
            path_json("150359d69581d1666fd2"),
            Derived::Value(r#"["59","D6","95"]"#.into())
        );
        // zero hops → '[]' as a value
        assert_eq!(path_json("1140AA"), Derived::Value("[]".into()));
        // undecodable → sentinel
        assert_eq!(path_json("zz"), Derived::Sentinel("[]"));
        assert_eq!(path_json("1"), Derived::Sentinel("[]"));
        assert_eq!(path_json(""), Derived::Sentinel("[]"));
        assert_eq!(path_json("11"), Derived::Sentinel("[]"));
        // TRACE by header → leave
        assert_eq!(path_json("26010FBA74E45D000000000027"), Derived::Leave);
        // over-long path: all 37 hops (example D's shape)
        let mut b = vec![0xD6u8, 0x65];
        b.extend((0..74u8).map(|i| i.wrapping_mul(3)));
        b.extend([0x63, 0xb8, 0x56]);
        match path_json(&hex::encode(&b)) {
            Derived::Value(v) => {
                let hops: Vec<String> = serde_json::from_str(&v).unwrap();
                assert_eq!(hops.len(), 37);
                assert_eq!(hops[0], "0003");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn payload_type_from_header() {
        assert_eq!(payload_type(Some(5), Some("1140")), Some(5));
        assert_eq!(payload_type(None, Some("1140")), Some(4));
        assert_eq!(payload_type(None, Some("26")), Some(9));
        assert_eq!(payload_type(None, Some("x")), None);
        assert_eq!(payload_type(None, Some("é")), None);
        assert_eq!(payload_type(None, None), None);
    }

    #[test]
    fn resolved_path_chain_anchored_on_originator() {
        // Every hop is a 1-byte collision; each is resolved by adjacency to
        // the key resolved before it, starting from the ADVERT originator.
        let ([f, a1, a2, b1, b2, c1, c2], idx) =
            keys(["f0", "aa01", "aa02", "bb01", "bb02", "cc01", "cc02"]);
        let adj = resolve::adjacency_from_edges([
            (f.as_str(), a1.as_str()),
            (a1.as_str(), b2.as_str()),
            (b2.as_str(), c1.as_str()),
            // decoys not adjacent to the chain
            (a2.as_str(), b1.as_str()),
            (b1.as_str(), c2.as_str()),
        ]);
        let inp = ResolveInput {
            payload_type: Some(4),
            from_pubkey: Some(&f),
            path_json: r#"["AA","BB","CC"]"#,
            ..Default::default()
        };
        assert_eq!(
            resolved_path(&inp, &adj, &idx),
            Derived::Value(format!(r#"["{a1}","{b2}","{c1}"]"#))
        );
        // Without the originator the chain never starts: all null → leave.
        let no_origin = ResolveInput {
            payload_type: Some(5),
            ..inp
        };
        assert_eq!(resolved_path(&no_origin, &adj, &idx), Derived::Leave);
        // A broken link: hop 1 unresolved, so hop 2 has no anchor.
        let adj2 =
            resolve::adjacency_from_edges([(f.as_str(), a1.as_str()), (b2.as_str(), c1.as_str())]);
        assert_eq!(
            resolved_path(&inp, &adj2, &idx),
            Derived::Value(format!(r#"["{a1}",null,null]"#))
        );
    }

    #[test]
    fn resolved_path_rules() {
        let ([f, _a1, a2, b], idx) = keys(["f0", "aa01", "aa02", "bb"]);
        let adj = resolve::adjacency_from_edges([(f.as_str(), a2.as_str())]);
        // ADVERT: originator anchors the 1-byte collision on hop 0
        let inp = ResolveInput {
            payload_type: Some(4),
            from_pubkey: Some(&f),
            path_json: r#"["AA","BB"]"#,
            ..Default::default()
        };
        assert_eq!(
            resolved_path(&inp, &adj, &idx),
            Derived::Value(format!(r#"["{a2}","{b}"]"#))
        );
        // same path on a non-ADVERT: no anchor → hop 0 null
        let inp2 = ResolveInput {
            payload_type: Some(5),
            ..inp
        };
        assert_eq!(
            resolved_path(&inp2, &adj, &idx),
            Derived::Value(format!(r#"[null,"{b}"]"#))
        );
        // from_pubkey NULL: originator derived from decoded_json
        let inp3 = ResolveInput {
            from_pubkey: None,
            decoded_pubkey: Some(&f),
            ..inp
        };
        assert_eq!(
            resolved_path(&inp3, &adj, &idx),
            resolved_path(&inp, &adj, &idx)
        );
        // sentinel '' → no originator
        let inp4 = ResolveInput {
            from_pubkey: Some(""),
            ..inp
        };
        assert_eq!(
            resolved_path(&inp4, &adj, &idx),
            Derived::Value(format!(r#"[null,"{b}"]"#))
        );
        // unresolvable → leave
        let inp5 = ResolveInput {
            path_json: r#"["AA","CC"]"#,
            ..inp2
        };
        assert_eq!(resolved_path(&inp5, &adj, &idx), Derived::Leave);
        // TRACE, empty, invalid → leave
        for (pt, pj) in [
            (Some(9), r#"["BB"]"#),
            (Some(5), "[]"),
            (Some(5), "x"),
            (Some(5), ""),
        ] {
            let i = ResolveInput {
                payload_type: pt,
                path_json: pj,
                ..Default::default()
            };
            assert_eq!(resolved_path(&i, &adj, &idx), Derived::Leave);
        }
    }
}
