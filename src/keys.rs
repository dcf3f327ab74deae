//! Node-key rules shared by every derivation: what counts as a node public
//! key (64 hex characters after trimming, compared lower-case), how other
//! stored node ids are compared (trimmed, lower-case), and the canonical
//! order of an edge pair (smaller key first, never an empty endpoint, never
//! a self-edge). Pure functions; no SQL here.

/// Length of a node public key in hex characters.
pub const KEY_HEX_LEN: usize = 64;

/// Lower-cases a 64-hex key into `buf` and returns it; `None` unless `s` is
/// exactly 64 hex characters after trimming. (No allocation: the edge
/// extraction calls this once or twice per observation.)
pub fn lower_key<'b>(s: &str, buf: &'b mut [u8; KEY_HEX_LEN]) -> Option<&'b str> {
    let t = s.trim().as_bytes();
    if t.len() != KEY_HEX_LEN {
        return None;
    }
    for (d, c) in buf.iter_mut().zip(t) {
        if !c.is_ascii_hexdigit() {
            return None;
        }
        *d = c.to_ascii_lowercase();
    }
    std::str::from_utf8(&buf[..]).ok()
}

/// [`lower_key`] as an owned string.
pub fn normalize_key(s: &str) -> Option<String> {
    let mut buf = [0u8; KEY_HEX_LEN];
    lower_key(s, &mut buf).map(str::to_owned)
}

/// A stored node id as corescope compares ids that are not validated as
/// keys (`neighbor_edges` endpoints, `nodes.public_key`, an originator):
/// trimmed and ASCII lower-cased.
pub fn fold_id(s: &str) -> String {
    s.trim().to_ascii_lowercase()
}

/// Why two endpoints make no edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairReject {
    /// One endpoint is the empty string.
    EmptyEndpoint,
    /// Both endpoints are the same.
    SelfLoop,
}

/// The canonical edge pair: the lexicographically smaller endpoint first
/// (`node_a`), the other second (`node_b`). Endpoints are compared as given
/// (callers lower-case them first).
pub fn canonical_pair<T: AsRef<str>>(a: T, b: T) -> Result<(T, T), PairReject> {
    let (sa, sb) = (a.as_ref(), b.as_ref());
    if sa.is_empty() || sb.is_empty() {
        return Err(PairReject::EmptyEndpoint);
    }
    if sa == sb {
        return Err(PairReject::SelfLoop);
    }
    if sa < sb {
        Ok((a, b))
    } else {
        Ok((b, a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_key_validates() {
        let mut buf = [0u8; KEY_HEX_LEN];
        let k = "AB".repeat(32);
        assert_eq!(lower_key(&k, &mut buf), Some("ab".repeat(32).as_str()));
        assert_eq!(
            lower_key(&format!(" {k} "), &mut buf),
            Some("ab".repeat(32).as_str())
        );
        assert_eq!(lower_key("ab", &mut buf), None);
        assert_eq!(lower_key(&"zz".repeat(32), &mut buf), None);
        assert_eq!(lower_key(&"é".repeat(32), &mut buf), None);
    }

    #[test]
    fn normalize_key_is_lower_key_owned() {
        let k = "Ab".repeat(32);
        assert_eq!(normalize_key(&format!("\t{k}\n")), Some("ab".repeat(32)));
        assert_eq!(normalize_key(&"a".repeat(63)), None);
        assert_eq!(normalize_key(&"a".repeat(65)), None);
        assert_eq!(normalize_key(""), None);
    }

    #[test]
    fn fold_id_trims_and_lower_cases_only() {
        assert_eq!(fold_id(" AbC\t"), "abc");
        assert_eq!(fold_id("ÄB"), "Äb");
        assert_eq!(fold_id("  "), "");
    }

    #[test]
    fn canonical_order_and_rejections() {
        assert_eq!(canonical_pair("b", "a"), Ok(("a", "b")));
        assert_eq!(canonical_pair("a", "b"), Ok(("a", "b")));
        assert_eq!(canonical_pair("a", "a"), Err(PairReject::SelfLoop));
        assert_eq!(canonical_pair("", "a"), Err(PairReject::EmptyEndpoint));
        assert_eq!(canonical_pair("a", ""), Err(PairReject::EmptyEndpoint));
        assert_eq!(canonical_pair("", ""), Err(PairReject::EmptyEndpoint));
    }
}
