//! Small helpers to build packets without depending on the binary's modules
//! (formerly inline in the backfill tests as `corescope_test_support`).

pub fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
/// FLOOD ADVERT with 1-byte hops and a minimal appdata (flags 0x82, name "n").
pub fn advert_packet(key: &[u8; 32], hops: &[u8]) -> String {
    let mut b = vec![0x11u8, hops.len() as u8];
    b.extend_from_slice(hops);
    b.extend_from_slice(key);
    b.extend_from_slice(&[1, 0, 0, 0]);
    b.extend_from_slice(&[0u8; 64]);
    b.extend_from_slice(&[0x82, b'n']);
    b.iter().map(|x| format!("{x:02X}")).collect()
}
