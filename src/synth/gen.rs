//! The synthetic mesh and its traffic: pure generation, no SQL.
//!
//! Everything is drawn from one ChaCha8 stream seeded by `--seed` (metrics use a
//! second stream derived from it), in a fixed order, so the same configuration
//! always yields the same rows.

use std::collections::{BTreeMap, HashMap, HashSet};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::encode::{self as enc, AdvertData};
use super::topo::{self, Grid, UNREACHABLE};
use super::{Config, Schema};

/// Farthest relay distance at which an observer still hears a packet.
const MAX_HEAR_DIST: u8 = 10;
/// Bounding box of the synthetic mesh (San Francisco Bay Area, like the fixture).
const BBOX: (f64, f64, f64, f64) = (37.10, 38.20, -122.60, -121.60);

pub const ROLE_COMPANION: u8 = 1;
pub const ROLE_REPEATER: u8 = 2;
pub const ROLE_ROOM: u8 = 3;
pub const ROLE_SENSOR: u8 = 4;

pub fn role_name(t: u8) -> String {
    match t {
        0 => "none".into(),
        1 => "companion".into(),
        2 => "repeater".into(),
        3 => "room".into(),
        4 => "sensor".into(),
        n => format!("type-{n}"),
    }
}

/// A node of the synthetic mesh.
pub struct Node {
    pub key: [u8; 32],
    pub name: String,
    pub node_type: u8,
    /// Micro-degrees as sent in the ADVERT.
    pub location: Option<(i32, i32)>,
    pub pos: (f64, f64),
    pub sensor: Option<(u16, i16)>,
    pub hash_size: usize,
    pub weight: f64,
    pub active: (i64, i64),
    pub relay: Option<u32>,
    /// Relays this node is heard by / sends through.
    pub attach: Vec<u32>,
    pub old_first_seen: i64,
    pub adverts: i64,
    pub last_advert: Option<i64>,
    pub first_advert: Option<i64>,
    pub ms_first_seen: Option<u32>,
}

pub struct Observer {
    pub id: String,
    pub node: Option<usize>,
    pub name: String,
    pub iata: &'static str,
    pub ears: Vec<u32>,
    pub active: (i64, i64),
    pub upper_hex: bool,
    pub busy: f64,
    pub client_version: &'static str,
    pub has_metrics: bool,
    pub first_seen: i64,
    pub ms_first_seen: Option<u32>,
    pub packets: i64,
    pub last_packet: Option<i64>,
    pub null_last_packet_at: bool,
}

#[derive(Clone, Debug)]
pub enum ObserverRef {
    Idx(i64),
    Text(String),
}

/// One `transmissions` row (every column any schema may have).
#[derive(Clone, Debug)]
pub struct TxRow {
    pub id: i64,
    pub raw_hex: String,
    pub hash: String,
    pub first_seen: String,
    pub route_type: i64,
    pub payload_type: i64,
    pub payload_version: Option<i64>,
    pub decoded_json: String,
    pub from_pubkey: Option<String>,
    pub created_at: String,
    pub channel_hash: Option<String>,
    pub last_seen: i64,
    pub scope_name: Option<String>,
}

#[derive(Clone, Debug)]
pub struct ObsRow {
    pub id: i64,
    pub transmission_id: i64,
    pub observer: ObserverRef,
    pub direction: Option<&'static str>,
    pub snr: Option<f64>,
    pub rssi: Option<f64>,
    pub score: Option<i64>,
    pub path_json: Option<String>,
    pub timestamp: i64,
    pub raw_hex: Option<String>,
    pub resolved_path: Option<String>,
}

pub struct Packet {
    pub tx: TxRow,
    pub obs: Vec<ObsRow>,
}

pub struct NodeRow {
    pub public_key: String,
    pub name: String,
    pub role: String,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub last_seen: String,
    pub first_seen: String,
    pub advert_count: i64,
    pub battery_mv: Option<i64>,
    pub temperature_c: Option<f64>,
    pub multibyte_sup: i64,
}

pub struct ObserverRow {
    pub rowid: i64,
    pub id: String,
    pub name: String,
    pub iata: String,
    pub last_seen: String,
    pub first_seen: String,
    pub packet_count: i64,
    pub model: Option<String>,
    pub firmware: Option<String>,
    pub client_version: String,
    pub radio: String,
    pub battery_mv: Option<i64>,
    pub uptime_secs: Option<i64>,
    pub noise_floor: Option<f64>,
    pub last_packet_at: Option<String>,
}

pub struct MetricRow {
    pub observer_id: String,
    pub timestamp: String,
    pub noise_floor: f64,
    pub tx_air_secs: i64,
    pub rx_air_secs: i64,
    pub recv_errors: i64,
    pub battery_mv: Option<i64>,
    pub packets_sent: i64,
    pub packets_recv: i64,
}

pub struct DroppedRow {
    pub hash: String,
    pub raw_hex: String,
    pub reason: String,
    pub observer_id: String,
    pub observer_name: String,
    pub node_pubkey: String,
    pub node_name: String,
    pub dropped_at: String,
}

pub struct EdgeRow {
    pub node_a: String,
    pub node_b: String,
    pub count: i64,
    pub last_seen: String,
}

/// Everything written after the packets.
pub struct Tail {
    pub nodes: Vec<NodeRow>,
    pub observers: Vec<ObserverRow>,
    pub dropped: Vec<DroppedRow>,
    pub edges: Vec<EdgeRow>,
    /// `sqlite_sequence` values above the highest ids.
    pub seq_bump: Option<(i64, i64)>,
    pub anomalies_made: BTreeMap<&'static str, u64>,
}

/// Anomaly kinds placed on chosen transmissions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Anom {
    VersionNull,      // #4
    TraceSnrPath,     // #6 (+ #9 too-short JSON, #10 raw-prefix hash)
    LongPath,         // #8
    OldAdvertJson,    // #9
    ControlUnknown,   // #9
    HashRawPrefix,    // #10
    HashRandom,       // #10
    PublicLower,      // #14
    ObsNoRawDiffPath, // #5
    AllNullResolved,  // #7
    NullRadio,        // #20
    DuplicateObs,     // #2
    TextObserverIdx,  // #23
    ZeroTimestamp,    // #24
}

const TX_ANOMS: [Anom; 14] = [
    Anom::VersionNull,
    Anom::TraceSnrPath,
    Anom::LongPath,
    Anom::OldAdvertJson,
    Anom::ControlUnknown,
    Anom::HashRawPrefix,
    Anom::HashRandom,
    Anom::PublicLower,
    Anom::ObsNoRawDiffPath,
    Anom::AllNullResolved,
    Anom::NullRadio,
    Anom::DuplicateObs,
    Anom::TextObserverIdx,
    Anom::ZeroTimestamp,
];

fn anom_name(a: Anom) -> &'static str {
    match a {
        Anom::VersionNull => "payload_version_null",
        Anom::TraceSnrPath => "trace_snr_path_json",
        Anom::LongPath => "path_over_64_bytes",
        Anom::OldAdvertJson => "old_advert_json",
        Anom::ControlUnknown => "control_as_unknown",
        Anom::HashRawPrefix => "hash_raw_prefix",
        Anom::HashRandom => "hash_old_rule",
        Anom::PublicLower => "channel_hash_public_lower",
        Anom::ObsNoRawDiffPath => "obs_without_raw_other_path",
        Anom::AllNullResolved => "all_null_resolved_path",
        Anom::NullRadio => "null_direction_snr_rssi_score",
        Anom::DuplicateObs => "duplicate_dedup_key",
        Anom::TextObserverIdx => "text_observer_idx",
        Anom::ZeroTimestamp => "zero_timestamp",
    }
}

/// Payload-type mix (per mille), shaped after a real capture.
const MIX: [(u8, u32); 11] = [
    (enc::GRP_TXT, 300),
    (enc::ADVERT, 210),
    (enc::RESPONSE, 140),
    (enc::REQ, 110),
    (enc::TXT_MSG, 90),
    (enc::ACK, 40),
    (enc::PATH, 40),
    (enc::ANON_REQ, 30),
    (enc::TRACE, 15),
    (enc::CONTROL, 10),
    (enc::GRP_DATA, 5),
];

const CHANNELS: [(&str, u8); 5] = [
    ("Public", 0x11),
    ("#wardriving", 0x81),
    ("#bayarea", 0x3c),
    ("#test", 0xd9),
    ("#emergency", 0x52),
];

const PLACES: [&str; 24] = [
    "Oakland",
    "Berkeley",
    "SanJose",
    "Fremont",
    "Hayward",
    "Dublin",
    "Kennedy",
    "Diablo",
    "Tam",
    "Palo Alto",
    "Sunnyvale",
    "Marin",
    "Richmond",
    "Concord",
    "Livermore",
    "Milpitas",
    "Alameda",
    "Skyline",
    "Saratoga",
    "Pleasanton",
    "Novato",
    "Vallejo",
    "Walnut",
    "Castro",
];
const FIRST: [&str; 20] = [
    "Alex", "Sam", "Jo", "Kim", "Lee", "Max", "Ana", "Ben", "Eva", "Tom", "Ivy", "Raj", "Mia",
    "Leo", "Zoe", "Kai", "Ari", "Nia", "Oz", "Uma",
];
const MESSAGES: [&str; 12] = [
    "anyone on?",
    "test from the hills",
    "good signal here",
    "@[MapperBot] ping",
    "heading out now",
    "copy that",
    "new repeater is up",
    "73",
    "checking coverage downtown",
    "who hears this?",
    "battery low, signing off",
    "morning mesh!",
];
const CLIENTS: [&str; 4] = [
    "meshcoretomqtt/1.0.6.3-6415650",
    "pyMC_repeater/1.0.6.dev140+gdd7f3b21f",
    "meshcore-packet-capture/1.2-1bd909c",
    "meshcoretomqtt/1.0.7.0-a1b2c3d",
];
const IATAS: [&str; 4] = ["SJC", "OAK", "SFO", "SMF"];

/// The mesh: nodes, relays, observers and their routes.
pub struct World {
    pub nodes: Vec<Node>,
    pub observers: Vec<Observer>,
    relay_nodes: Vec<usize>,
    adj: Vec<Vec<u32>>,
    /// Per observer: distance from each relay (flat, observers × relays).
    dist: Vec<u8>,
    next: Vec<u32>,
    /// Per node: observers that can hear it, with the relay distance (0 = zero hop).
    hearers: Vec<Vec<(u32, u8)>>,
    advert_cum: Vec<f64>,
    chat_cum: Vec<f64>,
    /// Prefix (size, value) → nodes whose key starts with it.
    prefixes: HashMap<(u8, u32), Vec<u32>>,
}

fn key_prefix(key: &[u8], size: usize) -> u32 {
    key.iter()
        .take(size)
        .fold(0u32, |a, b| (a << 8) | u32::from(*b))
}

fn cumulative(weights: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut acc = 0.0;
    weights
        .map(|w| {
            acc += w;
            acc
        })
        .collect()
}

fn pick_cum(cum: &[f64], rng: &mut ChaCha8Rng) -> usize {
    let total = cum.last().copied().unwrap_or(0.0);
    if total <= 0.0 || cum.is_empty() {
        return 0;
    }
    let x = rng.gen::<f64>() * total;
    cum.partition_point(|c| *c <= x).min(cum.len() - 1)
}

fn micro(v: f64) -> i32 {
    (v * 1_000_000.0).round() as i32
}

impl World {
    fn build(cfg: &Config, rng: &mut ChaCha8Rng) -> World {
        let start = cfg.start();
        let end = cfg.end;
        let span = (end - start).max(1);
        let mut keys_seen: HashSet<[u8; 32]> = HashSet::new();
        let mut nodes: Vec<Node> = Vec::with_capacity(cfg.nodes);
        for i in 0..cfg.nodes {
            let mut key = [0u8; 32];
            loop {
                rng.fill(&mut key[..]);
                if key.iter().any(|b| *b != 0) && keys_seen.insert(key) {
                    break;
                }
            }
            let r: f64 = rng.gen();
            let node_type = if i == 0 || r < 0.40 {
                ROLE_REPEATER
            } else if r < 0.85 {
                ROLE_COMPANION
            } else if r < 0.93 {
                ROLE_ROOM
            } else {
                ROLE_SENSOR
            };
            let pos = (rng.gen_range(BBOX.0..BBOX.1), rng.gen_range(BBOX.2..BBOX.3));
            let has_loc = match node_type {
                ROLE_REPEATER | ROLE_ROOM => rng.gen_bool(0.9),
                ROLE_SENSOR => true,
                _ => rng.gen_bool(0.45),
            };
            let location = has_loc.then(|| (micro(pos.0), micro(pos.1)));
            let tag = format!("{:02X}{:02X}", key[0], key[1]);
            let name = match node_type {
                ROLE_REPEATER => format!("{} Rpt {}", PLACES.choose(rng).unwrap_or(&"Mesh"), tag),
                ROLE_ROOM => format!(
                    "{} Room {}",
                    PLACES.choose(rng).unwrap_or(&"Mesh"),
                    &tag[..2]
                ),
                ROLE_SENSOR => format!("WX-{tag}"),
                _ => format!("{} {}", FIRST.choose(rng).unwrap_or(&"Op"), &tag[..2]),
            };
            let sensor = (node_type == ROLE_SENSOR).then(|| {
                (
                    rng.gen_range(3300..4200) as u16,
                    rng.gen_range(500..3500) as i16,
                )
            });
            let hs: f64 = rng.gen();
            let hash_size = if hs < 0.85 {
                1
            } else if hs < 0.97 {
                2
            } else {
                3
            };
            let act: f64 = rng.gen();
            let active = if act < 0.75 || i == 0 {
                (start, end)
            } else if act < 0.90 {
                (
                    start,
                    start + (span as f64 * rng.gen_range(0.1..0.9)) as i64,
                )
            } else {
                (start + (span as f64 * rng.gen_range(0.1..0.9)) as i64, end)
            };
            // Chattiness: a long tail of busy nodes.
            let weight = 0.2 + rng.gen::<f64>().powi(3) * 5.0;
            let old_first_seen = active.0 - rng.gen_range(0..(40 * 86_400));
            nodes.push(Node {
                key,
                name,
                node_type,
                location,
                pos,
                sensor,
                hash_size,
                weight,
                active,
                relay: None,
                attach: Vec::new(),
                old_first_seen,
                adverts: 0,
                last_advert: None,
                first_advert: None,
                ms_first_seen: None,
            });
        }

        // Relays and their graph.
        let relay_nodes: Vec<usize> = (0..nodes.len())
            .filter(|i| nodes[*i].node_type == ROLE_REPEATER)
            .collect();
        for (ri, ni) in relay_nodes.iter().enumerate() {
            nodes[*ni].relay = Some(ri as u32);
        }
        let points: Vec<(f64, f64)> = relay_nodes.iter().map(|i| nodes[*i].pos).collect();
        let grid = Grid::new(&points, BBOX);
        let adj = topo::relay_graph(&points, &grid, 5, 0.15, rng);
        for n in nodes.iter_mut() {
            n.attach = match n.relay {
                Some(r) => adj[r as usize].clone(),
                None => {
                    let k = rng.gen_range(1..=2);
                    grid.nearest(&points, n.pos, k, None)
                }
            };
        }

        // Observers: most are also nodes (repeaters or companions with an uplink).
        let mut observers: Vec<Observer> = Vec::with_capacity(cfg.observers);
        let mut used_nodes: HashSet<usize> = HashSet::new();
        for oi in 0..cfg.observers {
            let as_node = !nodes.is_empty() && rng.gen_bool(0.65);
            let mut node = None;
            if as_node {
                for _ in 0..20 {
                    let cand = if rng.gen_bool(0.8) && !relay_nodes.is_empty() {
                        relay_nodes[rng.gen_range(0..relay_nodes.len())]
                    } else {
                        rng.gen_range(0..nodes.len())
                    };
                    if used_nodes.insert(cand) {
                        node = Some(cand);
                        break;
                    }
                }
            }
            let (id, ears, name) = match node {
                Some(ni) => {
                    let n = &nodes[ni];
                    let name = if n.node_type == ROLE_REPEATER {
                        format!("{} Observer", n.name)
                    } else {
                        format!("{} Capture", n.name)
                    };
                    (hex::encode_upper(n.key), n.attach.clone(), name)
                }
                None => {
                    let mut k = [0u8; 32];
                    rng.fill(&mut k[..]);
                    let pos = (rng.gen_range(BBOX.0..BBOX.1), rng.gen_range(BBOX.2..BBOX.3));
                    let ears = grid.nearest(&points, pos, rng.gen_range(2..=4), None);
                    let name = format!(
                        "{} Gateway {}",
                        PLACES.choose(rng).unwrap_or(&"Mesh"),
                        oi + 1
                    );
                    (hex::encode_upper(k), ears, name)
                }
            };
            let act: f64 = rng.gen();
            let active = if act < 0.8 || oi == 0 {
                (start, end)
            } else if act < 0.9 {
                (
                    start,
                    start + (span as f64 * rng.gen_range(0.2..0.9)) as i64,
                )
            } else {
                (start + (span as f64 * rng.gen_range(0.1..0.8)) as i64, end)
            };
            observers.push(Observer {
                id,
                node,
                name,
                iata: IATAS.choose(rng).copied().unwrap_or("SJC"),
                ears,
                active,
                upper_hex: rng.gen_bool(0.3),
                busy: 0.3 + rng.gen::<f64>().powi(2) * 3.0,
                client_version: CLIENTS.choose(rng).copied().unwrap_or(CLIENTS[0]),
                has_metrics: rng.gen_bool(0.7),
                first_seen: active.0 - rng.gen_range(0..(20 * 86_400)),
                ms_first_seen: None,
                packets: 0,
                last_packet: None,
                null_last_packet_at: false,
            });
        }
        if cfg.anomalies && !observers.is_empty() {
            // #13: an observer whose id is not a public key.
            let pos = (rng.gen_range(BBOX.0..BBOX.1), rng.gen_range(BBOX.2..BBOX.3));
            let ears = grid.nearest(&points, pos, 2, None);
            observers.push(Observer {
                id: "mqtt-bridge-eastbay".to_string(),
                node: None,
                name: "East Bay MQTT bridge".to_string(),
                iata: "OAK",
                ears,
                active: (start, end),
                upper_hex: false,
                busy: 0.5,
                client_version: CLIENTS[0],
                has_metrics: false,
                first_seen: start - 86_400,
                ms_first_seen: None,
                packets: 0,
                last_packet: None,
                null_last_packet_at: false,
            });
        }

        // Routes towards every observer.
        let nr = relay_nodes.len();
        let mut dist = vec![UNREACHABLE; observers.len() * nr];
        let mut next = vec![u32::MAX; observers.len() * nr];
        for (oi, o) in observers.iter().enumerate() {
            let own_relay = o.node.and_then(|n| nodes[n].relay);
            let r = topo::routes_to(&o.ears, &adj, own_relay);
            dist[oi * nr..(oi + 1) * nr].copy_from_slice(&r.dist);
            next[oi * nr..(oi + 1) * nr].copy_from_slice(&r.next);
        }
        // Who hears whom.
        let mut hearers: Vec<Vec<(u32, u8)>> = Vec::with_capacity(nodes.len());
        for (ni, n) in nodes.iter().enumerate() {
            let mut hs: Vec<(u32, u8)> = Vec::new();
            for (oi, o) in observers.iter().enumerate() {
                if o.node == Some(ni) {
                    continue;
                }
                let own_relay = o.node.and_then(|x| nodes[x].relay);
                let zero = n.relay.is_some_and(|r| o.ears.contains(&r))
                    || own_relay.is_some_and(|r| n.attach.contains(&r));
                let d = if zero {
                    0
                } else {
                    n.attach
                        .iter()
                        .map(|s| dist[oi * nr + *s as usize])
                        .min()
                        .unwrap_or(UNREACHABLE)
                };
                if d <= MAX_HEAR_DIST {
                    hs.push((oi as u32, d));
                }
            }
            hs.sort_by_key(|x| (x.1, x.0));
            hearers.push(hs);
        }
        let advert_cum = cumulative(nodes.iter().map(|n| match n.node_type {
            ROLE_REPEATER => 3.0,
            ROLE_ROOM => 2.0,
            ROLE_SENSOR => 1.5,
            _ => 1.0,
        } * (0.5 + n.weight / 4.0)));
        let chat_cum = cumulative(nodes.iter().map(|n| match n.node_type {
            ROLE_COMPANION => 3.0 * n.weight,
            ROLE_ROOM => 1.5 * n.weight,
            ROLE_REPEATER => 0.6 * n.weight,
            _ => 0.2,
        }));
        let mut prefixes: HashMap<(u8, u32), Vec<u32>> = HashMap::new();
        for (ni, n) in nodes.iter().enumerate() {
            for size in 1..=3u8 {
                prefixes
                    .entry((size, key_prefix(&n.key, size as usize)))
                    .or_default()
                    .push(ni as u32);
            }
        }
        World {
            nodes,
            observers,
            relay_nodes,
            adj,
            dist,
            next,
            hearers,
            advert_cum,
            chat_cum,
            prefixes,
        }
    }

    fn relay_key(&self, r: u32) -> &[u8; 32] {
        &self.nodes[self.relay_nodes[r as usize]].key
    }

    /// Relays on the path from node `f` to observer `o` (empty = zero hop).
    fn route(&self, f: usize, o: usize, d: u8, detour: bool, rng: &mut ChaCha8Rng) -> Vec<u32> {
        let nr = self.relay_nodes.len();
        if nr == 0 || (d == 0 && !detour) {
            return Vec::new();
        }
        let n = &self.nodes[f];
        let dist = &self.dist[o * nr..(o + 1) * nr];
        let next = &self.next[o * nr..(o + 1) * nr];
        let best = n
            .attach
            .iter()
            .map(|s| dist[*s as usize])
            .min()
            .unwrap_or(UNREACHABLE);
        if best == UNREACHABLE {
            // Unreachable: a short path of random relays.
            let len = rng.gen_range(1..=3);
            return (0..len).map(|_| rng.gen_range(0..nr) as u32).collect();
        }
        let slack = u8::from(detour);
        let starts: Vec<u32> = n
            .attach
            .iter()
            .copied()
            .filter(|s| dist[*s as usize] <= best.saturating_add(slack))
            .collect();
        let mut cur = match starts.choose(rng) {
            Some(s) => *s,
            None => return Vec::new(),
        };
        let mut path = vec![cur];
        while next[cur as usize] != u32::MAX && path.len() < 63 {
            cur = next[cur as usize];
            path.push(cur);
        }
        if let Some(own) = n.relay {
            path.retain(|r| *r != own);
        }
        path
    }

    /// Whether two nodes are radio neighbours in the synthetic mesh.
    fn adjacent(&self, a: u32, b: u32) -> bool {
        let (na, nb) = (&self.nodes[a as usize], &self.nodes[b as usize]);
        match (na.relay, nb.relay) {
            (Some(ra), Some(rb)) => self.adj[ra as usize].binary_search(&rb).is_ok(),
            (None, Some(rb)) => na.attach.contains(&rb),
            (Some(ra), None) => nb.attach.contains(&ra),
            (None, None) => false,
        }
    }

    /// `resolved_path` as the ingestor writes it: a unique prefix
    /// resolves; an ambiguous one only when exactly one candidate is adjacent to the
    /// anchor (the originator for hop 0 of an ADVERT, else the previous resolved
    /// hop); resolved keys are excluded from later hops; all-null → NULL.
    fn resolve(&self, hops: &[&[u8]], originator: Option<usize>) -> Option<String> {
        let mut excluded: Vec<u32> = originator.map(|o| vec![o as u32]).unwrap_or_default();
        let mut anchor: Option<u32> = originator.map(|o| o as u32);
        let mut out: Vec<Option<u32>> = Vec::with_capacity(hops.len());
        for hop in hops {
            let cands: &[u32] = if hop.len() <= 3 {
                self.prefixes
                    .get(&(hop.len() as u8, key_prefix(hop, hop.len())))
                    .map(|v| v.as_slice())
                    .unwrap_or(&[])
            } else {
                &[]
            };
            let r = match cands {
                [] => None,
                [one] => (!excluded.contains(one)).then_some(*one),
                many => match anchor {
                    None => None,
                    Some(a) => {
                        let mut keep = many
                            .iter()
                            .filter(|c| !excluded.contains(c) && self.adjacent(a, **c));
                        match (keep.next(), keep.next()) {
                            (Some(c), None) => Some(*c),
                            _ => None,
                        }
                    }
                },
            };
            if let Some(n) = r {
                excluded.push(n);
            }
            anchor = r;
            out.push(r);
        }
        if out.iter().all(|x| x.is_none()) {
            return None;
        }
        let mut s = String::from("[");
        for (i, r) in out.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            match r {
                Some(n) => {
                    s.push('"');
                    s.push_str(&hex::encode(self.nodes[*n as usize].key));
                    s.push('"');
                }
                None => s.push_str("null"),
            }
        }
        s.push(']');
        Some(s)
    }
}

/// Transmission times: hourly buckets with a day/night rhythm, spread over the window.
struct Schedule {
    start: i64,
    cum: Vec<f64>,
    bucket: usize,
}

impl Schedule {
    fn new(start: i64, end: i64) -> Schedule {
        let hours = (((end - start) as f64) / 3600.0).ceil().max(1.0) as usize;
        let cum = cumulative((0..hours).map(|h| {
            let t = start + h as i64 * 3600;
            let hod = ((t.rem_euclid(86_400)) as f64) / 3600.0;
            // Pacific time busy in the evening, quiet before dawn.
            let local = (hod - 8.0).rem_euclid(24.0);
            let w = 1.0 + 0.6 * ((local - 13.0) / 24.0 * std::f64::consts::TAU).cos();
            w * (1.0 + 0.3 * h as f64 / hours as f64)
        }));
        Schedule {
            start,
            cum,
            bucket: 0,
        }
    }

    /// Time of the `i`-th of `n` events (monotone in `i`).
    fn at(&mut self, i: u64, n: u64, jitter: f64, end: i64) -> i64 {
        let total = self.cum.last().copied().unwrap_or(1.0);
        let u = ((i as f64 + jitter) / n.max(1) as f64).min(1.0) * total;
        while self.bucket + 1 < self.cum.len() && self.cum[self.bucket] <= u {
            self.bucket += 1;
        }
        let lo = if self.bucket == 0 {
            0.0
        } else {
            self.cum[self.bucket - 1]
        };
        let hi = self.cum[self.bucket];
        let frac = if hi > lo {
            ((u - lo) / (hi - lo)).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let t = self.start + self.bucket as i64 * 3600 + (frac * 3600.0) as i64;
        t.min(end)
    }
}

/// Streams packets (a transmission with its observations) in time order.
pub struct Generator {
    cfg: Config,
    rng: ChaCha8Rng,
    pub world: World,
    schedule: Schedule,
    tx_done: u64,
    obs_left: u64,
    next_tx_id: i64,
    next_obs_id: i64,
    hashes: HashSet<u64>,
    anoms: BTreeMap<u64, Vec<Anom>>,
    made: BTreeMap<&'static str, u64>,
    dropped: Vec<DroppedRow>,
    max_obs_ts: i64,
}

fn hash_key(h: &str) -> u64 {
    u64::from_str_radix(&h[..h.len().min(16)], 16).unwrap_or(0)
}

fn poisson(rng: &mut ChaCha8Rng, lambda: f64) -> u64 {
    if lambda <= 0.0 {
        return 0;
    }
    if lambda > 30.0 {
        let z: f64 = {
            let u1: f64 = rng.gen_range(1e-12..1.0);
            let u2: f64 = rng.gen();
            (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
        };
        return (lambda + z * lambda.sqrt()).round().max(0.0) as u64;
    }
    let l = (-lambda).exp();
    let mut k = 0u64;
    let mut p = 1.0;
    loop {
        p *= rng.gen::<f64>();
        if p <= l {
            return k;
        }
        k += 1;
    }
}

impl Generator {
    pub fn new(cfg: &Config) -> Generator {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let world = World::build(cfg, &mut rng);
        let mut anoms: BTreeMap<u64, Vec<Anom>> = BTreeMap::new();
        if cfg.anomalies && cfg.transmissions > 0 {
            for a in TX_ANOMS {
                let times = if cfg.schema == Schema::Legacy
                    && matches!(
                        a,
                        Anom::TextObserverIdx | Anom::ZeroTimestamp | Anom::ObsNoRawDiffPath
                    ) {
                    0
                } else {
                    rng.gen_range(3..=5)
                };
                for _ in 0..times {
                    let i = rng.gen_range(0..cfg.transmissions);
                    anoms.entry(i).or_default().push(a);
                }
            }
        }
        Generator {
            schedule: Schedule::new(cfg.start(), cfg.end),
            cfg: cfg.clone(),
            rng,
            world,
            tx_done: 0,
            obs_left: cfg.observations,
            next_tx_id: 1,
            next_obs_id: 1,
            hashes: HashSet::new(),
            anoms,
            made: BTreeMap::new(),
            dropped: Vec::new(),
            max_obs_ts: 0,
        }
    }

    #[cfg(test)]
    pub fn tx_done(&self) -> u64 {
        self.tx_done
    }

    fn pick_node(&mut self, advert: bool, t: i64) -> usize {
        let cum = if advert {
            &self.world.advert_cum
        } else {
            &self.world.chat_cum
        };
        let mut last = 0;
        for _ in 0..30 {
            let i = pick_cum(cum, &mut self.rng);
            last = i;
            let (a, b) = self.world.nodes[i].active;
            if t >= a && t <= b {
                return i;
            }
        }
        last
    }

    fn some_node_byte(&mut self) -> u8 {
        let n = self.world.nodes.len();
        self.world.nodes[self.rng.gen_range(0..n)].key[0]
    }

    fn unique_hash(&mut self, h: &str) -> bool {
        self.hashes.insert(hash_key(h))
    }

    /// The next packet, or `None` when all transmissions are generated.
    pub fn next_packet(&mut self) -> Option<Packet> {
        if self.tx_done >= self.cfg.transmissions || self.world.nodes.is_empty() {
            return None;
        }
        let i = self.tx_done;
        let anoms = self.anoms.remove(&i).unwrap_or_default();
        let has = |a: Anom| anoms.contains(&a);
        let jitter: f64 = self.rng.gen();
        let t = self
            .schedule
            .at(i, self.cfg.transmissions, jitter, self.cfg.end);

        // Payload type (some anomalies force one).
        let mut ptype = MIX[pick_cum(&cumulative(MIX.iter().map(|m| m.1 as f64)), &mut self.rng)].0;
        if has(Anom::TraceSnrPath) {
            ptype = enc::TRACE;
        } else if has(Anom::LongPath) || has(Anom::PublicLower) {
            ptype = enc::GRP_TXT;
        } else if has(Anom::OldAdvertJson) {
            ptype = enc::ADVERT;
        } else if has(Anom::ControlUnknown) {
            ptype = enc::CONTROL;
        }
        let r: f64 = self.rng.gen();
        let route_type: u8 = match ptype {
            enc::ADVERT | enc::GRP_TXT | enc::GRP_DATA => {
                if r < 0.95 {
                    1
                } else {
                    0
                }
            }
            enc::TRACE | enc::CONTROL => 2,
            enc::ACK => {
                if r < 0.5 {
                    1
                } else {
                    2
                }
            }
            _ => {
                if r < 0.42 {
                    1
                } else if r < 0.97 {
                    2
                } else {
                    3
                }
            }
        };
        let route_type = if has(Anom::LongPath) { 2 } else { route_type };
        let version: u8 = if has(Anom::VersionNull) || has(Anom::LongPath) {
            self.rng.gen_range(1..=3)
        } else {
            0
        };
        let payload_version = if version != 0 || self.cfg.schema == Schema::Legacy {
            None
        } else {
            Some(0)
        };
        let f = self.pick_node(ptype == enc::ADVERT, t);
        let hash_size = if has(Anom::LongPath) {
            2
        } else {
            self.world.nodes[f].hash_size
        };

        // Transport codes and scope (route types 0 and 3).
        let (transport, scope_name) = if enc::has_transport(route_type) {
            let mut c = [0u8; 4];
            self.rng.fill(&mut c[..]);
            if self.rng.gen_bool(0.2) {
                c[0] = 0;
                c[1] = 0;
            }
            let scoped = c[0] != 0 || c[1] != 0;
            let scope = scoped.then(|| {
                if self.rng.gen_bool(0.6) {
                    "#bayarea".to_string()
                } else {
                    String::new()
                }
            });
            (Some(c), scope)
        } else {
            (None, None)
        };

        // Payload, decoded_json, channel_hash, from_pubkey.
        let mut from_pubkey = None;
        let mut channel_hash = None;
        let mut trace_route: Vec<u8> = Vec::new();
        let mut trace_snr: Vec<u8> = Vec::new();
        let (payload, decoded) = loop {
            let (p, d) = self.payload(
                ptype,
                f,
                t,
                &anoms,
                &mut from_pubkey,
                &mut channel_hash,
                &mut trace_route,
                &mut trace_snr,
            );
            let path_len_for_hash = enc::path_len_byte(1, trace_snr.len());
            let h = enc::content_hash(ptype, path_len_for_hash, &p);
            if self.unique_hash(&h) {
                break (p, d);
            }
        };
        let header = enc::header_byte(route_type, ptype, version);

        // How many receptions.
        let tx_left = self.cfg.transmissions - i;
        let k = if tx_left == 1 {
            self.obs_left
        } else {
            let mean = self.obs_left as f64 / tx_left as f64;
            let floor_each = u64::from(self.obs_left >= tx_left);
            let k = floor_each + poisson(&mut self.rng, (mean - floor_each as f64).max(0.0));
            k.min(self.obs_left.saturating_sub(tx_left - 1).max(floor_each))
                .min(self.obs_left)
        };
        let k = if has(Anom::LongPath) { k.min(1) } else { k };

        // Choose the observers.
        let active: Vec<(u32, u8)> = self.world.hearers[f]
            .iter()
            .copied()
            .filter(|(o, _)| {
                let (a, b) = self.world.observers[*o as usize].active;
                t >= a && t <= b
            })
            .collect();
        let mut chosen: Vec<(u32, u8)> = Vec::new();
        let mut pool = active.clone();
        while (chosen.len() as u64) < k && !pool.is_empty() {
            let cum =
                cumulative(pool.iter().map(|(o, d)| {
                    self.world.observers[*o as usize].busy * 0.3f64.powi(i32::from(*d))
                }));
            let j = pick_cum(&cum, &mut self.rng);
            chosen.push(pool.swap_remove(j));
        }
        if chosen.is_empty() && k > 0 && !self.world.observers.is_empty() {
            // Nobody in range: a far observer hears it anyway (long-range link).
            let o = self.rng.gen_range(0..self.world.observers.len()) as u32;
            chosen.push((o, MAX_HEAR_DIST));
        }
        chosen.sort_by_key(|c| c.1);

        // One observation per chosen observer, more copies on other paths if needed.
        let mut obs_specs: Vec<(u32, Vec<u8>, usize)> = Vec::new(); // observer, path bytes, hop size
        let mut keys: HashSet<(u32, String)> = HashSet::new();
        let mut attempt = 0usize;
        while (obs_specs.len() as u64) < k && !chosen.is_empty() && attempt < (k as usize) * 8 + 8 {
            let (o, d) = chosen[if attempt < chosen.len() {
                attempt
            } else {
                self.rng.gen_range(0..chosen.len())
            }];
            attempt += 1;
            let path: Vec<u8> = if ptype == enc::TRACE {
                trace_snr.clone()
            } else if has(Anom::LongPath) {
                let mut p = Vec::with_capacity(74);
                for _ in 0..37 {
                    let r = self.rng.gen_range(0..self.world.relay_nodes.len().max(1)) as u32;
                    if self.world.relay_nodes.is_empty() {
                        p.extend_from_slice(&[self.rng.gen(), self.rng.gen()]);
                    } else {
                        p.extend_from_slice(&self.world.relay_key(r)[..2]);
                    }
                }
                p
            } else {
                let detour = attempt > chosen.len() || self.rng.gen_bool(0.15);
                let mut relays = self.world.route(f, o as usize, d, detour, &mut self.rng);
                if attempt > chosen.len() + 1 && !self.world.relay_nodes.is_empty() {
                    // A further copy: the packet took an extra relay on the way.
                    let pos = self.rng.gen_range(0..=relays.len());
                    let base = if pos > 0 {
                        relays[pos - 1]
                    } else {
                        relays.first().copied().unwrap_or(0)
                    };
                    let nb = &self.world.adj[base as usize];
                    let extra = if nb.is_empty() {
                        base
                    } else {
                        nb[self.rng.gen_range(0..nb.len())]
                    };
                    relays.insert(pos, extra);
                }
                let max_hops = (64 / hash_size).min(63);
                if relays.len() > max_hops {
                    relays.drain(..relays.len() - max_hops);
                }
                let mut bytes = Vec::with_capacity(relays.len() * hash_size);
                for r in relays {
                    if self.rng.gen_bool(0.02) {
                        for _ in 0..hash_size {
                            bytes.push(self.rng.gen());
                        }
                    } else {
                        bytes.extend_from_slice(&self.world.relay_key(r)[..hash_size]);
                    }
                }
                bytes
            };
            let hop_size = if ptype == enc::TRACE { 1 } else { hash_size };
            let pj = if ptype == enc::TRACE {
                enc::path_json(&trace_route, 1)
            } else {
                enc::path_json(&path, hash_size)
            };
            if keys.insert((o, pj)) {
                obs_specs.push((o, path, hop_size));
            }
        }

        // Build rows.
        let tx_id = self.next_tx_id;
        self.next_tx_id += 1;
        if self.cfg.anomalies
            && self
                .rng
                .gen_bool((20.0 / self.cfg.transmissions as f64).min(0.05))
        {
            // #3: ids are not dense.
            self.next_tx_id += self.rng.gen_range(1..=4);
        }
        let payload_hex = hex::encode(&payload);
        let mut obs_rows: Vec<ObsRow> = Vec::with_capacity(obs_specs.len());
        let mut tx_raw: Option<String> = None;
        let mut ts = t;
        let originator = (ptype == enc::ADVERT).then_some(f);
        let mut null_path_keys: HashSet<u32> = HashSet::new();
        for (n, (o, path, hop_size)) in obs_specs.iter().enumerate() {
            if n > 0 {
                ts = (ts + self.rng.gen_range(0..4)).min(self.cfg.end.max(t));
            }
            let hop_count = path.len() / hash_size.max(1);
            let plb = if ptype == enc::TRACE {
                enc::path_len_byte(1, path.len())
            } else {
                enc::path_len_byte(hash_size, hop_count)
            };
            let bytes = enc::packet_bytes(header, transport, plb, path, &[]);
            let obs = &self.world.observers[*o as usize];
            let raw = if obs.upper_hex {
                let mut s = hex::encode_upper(&bytes);
                s.push_str(&payload_hex.to_ascii_uppercase());
                s
            } else {
                let mut s = hex::encode(&bytes);
                s.push_str(&payload_hex);
                s
            };
            if tx_raw.is_none() {
                tx_raw = Some(raw.clone());
            }
            let (path_json, hops_for_resolve): (String, Vec<&[u8]>) = if ptype == enc::TRACE {
                if has(Anom::TraceSnrPath) {
                    (enc::path_json(path, 1), path.chunks(1).collect())
                } else {
                    (
                        enc::path_json(&trace_route, 1),
                        trace_route.chunks(1).collect(),
                    )
                }
            } else {
                (
                    enc::path_json(path, *hop_size),
                    path.chunks(*hop_size).collect(),
                )
            };
            let mut resolved = self.world.resolve(&hops_for_resolve, originator);
            if self.cfg.null_resolved_path > 0.0
                && self.rng.gen_bool(self.cfg.null_resolved_path.min(1.0))
            {
                resolved = None;
            }
            if has(Anom::AllNullResolved) && !hops_for_resolve.is_empty() && n == 0 {
                resolved = Some(format!(
                    "[{}]",
                    vec!["null"; hops_for_resolve.len()].join(",")
                ));
                *self
                    .made
                    .entry(anom_name(Anom::AllNullResolved))
                    .or_default() += 1;
            }
            let mut path_json = Some(path_json);
            if self.cfg.null_path_json > 0.0
                && ptype != enc::TRACE
                && self.rng.gen_bool(self.cfg.null_path_json.min(1.0))
                && null_path_keys.insert(*o)
            {
                path_json = None;
            }
            let mut raw_hex = (self.cfg.obs_raw_hex >= 1.0
                || self.rng.gen_bool(self.cfg.obs_raw_hex.clamp(0.0, 1.0)))
            .then(|| raw.clone());
            if has(Anom::ObsNoRawDiffPath) && n > 0 {
                raw_hex = None;
                *self
                    .made
                    .entry(anom_name(Anom::ObsNoRawDiffPath))
                    .or_default() += 1;
            }
            let snr_q: i32 = self.rng.gen_range(-60..48);
            let snr = f64::from(snr_q) / 4.0;
            let rssi = f64::from(self.rng.gen_range(-125..-50));
            let score = ((snr + 20.0) * 25.0).round() as i64;
            let mut row = ObsRow {
                id: self.next_obs_id,
                transmission_id: tx_id,
                observer: ObserverRef::Idx(i64::from(*o) + 1),
                direction: Some("rx"),
                snr: Some(snr),
                rssi: Some(rssi),
                score: Some(score),
                path_json,
                timestamp: ts,
                raw_hex,
                resolved_path: resolved,
            };
            self.next_obs_id += 1;
            if has(Anom::NullRadio) && n == 0 {
                row.direction = None;
                row.snr = None;
                row.rssi = None;
                row.score = None;
                *self.made.entry(anom_name(Anom::NullRadio)).or_default() += 1;
            }
            if has(Anom::TextObserverIdx) && n == 0 {
                row.observer = ObserverRef::Text(obs.id.clone());
                *self
                    .made
                    .entry(anom_name(Anom::TextObserverIdx))
                    .or_default() += 1;
            }
            if has(Anom::ZeroTimestamp) && n == 0 {
                row.timestamp = 0;
                *self.made.entry(anom_name(Anom::ZeroTimestamp)).or_default() += 1;
            }
            if self.cfg.schema == Schema::Legacy {
                // The fixture's importer quirks; it stored no
                // radio figures either.
                row.observer = ObserverRef::Text(obs.id.clone());
                row.timestamp = 0;
                row.direction = None;
                row.snr = None;
                row.rssi = None;
                row.score = None;
            }
            let dup = has(Anom::DuplicateObs) && n == 0;
            let oo = &mut self.world.observers[*o as usize];
            oo.packets += 1;
            oo.last_packet = Some(oo.last_packet.map_or(ts, |x| x.max(ts)));
            if dup {
                let mut copy = row.clone();
                copy.id = self.next_obs_id;
                self.next_obs_id += 1;
                copy.snr = copy.snr.map(|s| s - 1.5);
                copy.resolved_path = None;
                obs_rows.push(row);
                obs_rows.push(copy);
                *self.made.entry(anom_name(Anom::DuplicateObs)).or_default() += 1;
            } else {
                obs_rows.push(row);
            }
        }
        let produced = obs_specs.len() as u64;
        self.obs_left = self.obs_left.saturating_sub(produced);
        let last_ts = obs_rows
            .iter()
            .map(|o| o.timestamp)
            .max()
            .unwrap_or(t)
            .max(t);
        self.max_obs_ts = self.max_obs_ts.max(last_ts);

        let raw_hex = tx_raw.unwrap_or_else(|| {
            let plb = enc::path_len_byte(hash_size, 0);
            hex::encode(enc::packet_bytes(header, transport, plb, &[], &payload))
        });
        let mut hash = enc::content_hash(ptype, enc::path_len_byte(1, trace_snr.len()), &payload);
        if has(Anom::HashRawPrefix) || has(Anom::TraceSnrPath) || has(Anom::HashRandom) {
            let alt = if has(Anom::HashRandom) {
                format!("{:016x}", self.rng.gen::<u64>())
            } else {
                raw_hex[..16.min(raw_hex.len())].to_string()
            };
            if alt.len() == 16 && self.unique_hash(&alt) {
                hash = alt;
                let a = if has(Anom::HashRandom) {
                    Anom::HashRandom
                } else {
                    Anom::HashRawPrefix
                };
                *self.made.entry(anom_name(a)).or_default() += 1;
            }
        }
        for a in [
            Anom::VersionNull,
            Anom::LongPath,
            Anom::TraceSnrPath,
            Anom::OldAdvertJson,
            Anom::ControlUnknown,
            Anom::PublicLower,
        ] {
            if has(a) {
                *self.made.entry(anom_name(a)).or_default() += 1;
            }
        }
        if ptype == enc::ADVERT {
            let n = &mut self.world.nodes[f];
            n.adverts += 1;
            n.last_advert = Some(n.last_advert.map_or(t, |x| x.max(t)));
            n.first_advert = Some(n.first_advert.map_or(t, |x| x.min(t)));
            if from_pubkey.is_some()
                && self.cfg.null_from_pubkey > 0.0
                && self.rng.gen_bool(self.cfg.null_from_pubkey.min(1.0))
            {
                from_pubkey = None;
            }
            // A few adverts fail signature validation and are dropped.
            if self.rng.gen_bool(0.002) && !self.world.observers.is_empty() {
                let o = &self.world.observers[self.rng.gen_range(0..self.world.observers.len())];
                let mut bad = payload.clone();
                if bad.len() > 40 {
                    bad[40] ^= 0x5a;
                }
                self.dropped.push(DroppedRow {
                    hash: enc::content_hash(enc::ADVERT, 0, &bad),
                    raw_hex: hex::encode(enc::packet_bytes(
                        header,
                        transport,
                        enc::path_len_byte(1, 0),
                        &[],
                        &bad,
                    )),
                    reason: "invalid signature".into(),
                    observer_id: o.id.clone(),
                    observer_name: o.name.clone(),
                    node_pubkey: hex::encode(self.world.nodes[f].key),
                    node_name: self.world.nodes[f].name.clone(),
                    dropped_at: enc::sqlite_datetime(t + 1),
                });
            }
        }
        let tx = TxRow {
            id: tx_id,
            raw_hex,
            hash,
            first_seen: enc::rfc3339(t),
            route_type: i64::from(route_type),
            payload_type: i64::from(ptype),
            payload_version,
            decoded_json: decoded,
            from_pubkey,
            created_at: enc::sqlite_datetime(t + self.rng.gen_range(0..3)),
            channel_hash,
            last_seen: last_ts,
            scope_name,
        };
        self.tx_done += 1;
        Some(Packet { tx, obs: obs_rows })
    }

    #[allow(clippy::too_many_arguments)]
    fn payload(
        &mut self,
        ptype: u8,
        f: usize,
        t: i64,
        anoms: &[Anom],
        from_pubkey: &mut Option<String>,
        channel_hash: &mut Option<String>,
        trace_route: &mut Vec<u8>,
        trace_snr: &mut Vec<u8>,
    ) -> (Vec<u8>, String) {
        let rng = &mut self.rng;
        let mut mac = [0u8; 2];
        rng.fill(&mut mac[..]);
        let src = self.world.nodes[f].key[0];
        match ptype {
            enc::ADVERT => {
                let n = &self.world.nodes[f];
                let mut sig = [0u8; 64];
                rng.fill(&mut sig[..]);
                // Sender clock: mostly right, some drift, a few reset RTCs.
                let clock = if rng.gen_bool(0.01) {
                    1_672_531_200 + rng.gen_range(0..86_400)
                } else {
                    t - rng.gen_range(0..120)
                };
                let ad = AdvertData {
                    pubkey: &n.key,
                    timestamp: clock.clamp(0, u32::MAX as i64) as u32,
                    signature: &sig,
                    node_type: n.node_type,
                    location: n.location,
                    feat1: None,
                    feat2: None,
                    name: Some(&n.name),
                    sensor: n.sensor,
                };
                *from_pubkey = Some(hex::encode(n.key));
                let old = anoms.contains(&Anom::OldAdvertJson);
                (ad.payload(), ad.decoded_json(old))
            }
            enc::REQ | enc::RESPONSE | enc::TXT_MSG | enc::PATH => {
                let dest = self.some_node_byte();
                let rng = &mut self.rng;
                let mut data = vec![0u8; 16 * rng.gen_range(1..=2)];
                rng.fill(&mut data[..]);
                let name = match ptype {
                    enc::REQ => "REQ",
                    enc::RESPONSE => "RESPONSE",
                    enc::TXT_MSG => "TXT_MSG",
                    _ => "PATH",
                };
                (
                    enc::addressed_payload(dest, src, mac, &data),
                    enc::addressed_json(name, dest, src, mac, &data),
                )
            }
            enc::ANON_REQ => {
                let dest = self.some_node_byte();
                let rng = &mut self.rng;
                let mut eph = [0u8; 32];
                rng.fill(&mut eph[..]);
                let mut data = vec![0u8; 16 * rng.gen_range(1..=2)];
                rng.fill(&mut data[..]);
                (
                    enc::anon_req_payload(dest, &eph, mac, &data),
                    enc::anon_req_json(dest, &eph, mac, &data),
                )
            }
            enc::ACK => {
                let mut crc = [0u8; 4];
                rng.fill(&mut crc[..]);
                (crc.to_vec(), enc::ack_json(crc))
            }
            enc::GRP_TXT | enc::GRP_DATA => {
                let mut data = vec![0u8; 16 * rng.gen_range(3..=6)];
                rng.fill(&mut data[..]);
                let public_lower = anoms.contains(&Anom::PublicLower);
                let decrypted = ptype == enc::GRP_TXT && (public_lower || rng.gen_bool(0.7));
                if decrypted {
                    let (name, h) = if public_lower {
                        ("public", 0x11)
                    } else {
                        CHANNELS[rng.gen_range(0..CHANNELS.len())]
                    };
                    let sender = &self.world.nodes[f].name;
                    let msg = MESSAGES[rng.gen_range(0..MESSAGES.len())];
                    *channel_hash = Some(name.to_string());
                    (
                        enc::group_payload(h, mac, &data),
                        enc::chan_json(h, name, sender, msg, t - rng.gen_range(0..30)),
                    )
                } else {
                    let h: u8 = if rng.gen_bool(0.5) {
                        CHANNELS[rng.gen_range(0..CHANNELS.len())].1
                    } else {
                        rng.gen()
                    };
                    let status = if rng.gen_bool(0.5) {
                        "no_key"
                    } else {
                        "decryption_failed"
                    };
                    let name = if ptype == enc::GRP_TXT {
                        "GRP_TXT"
                    } else {
                        "GRP_DATA"
                    };
                    if ptype == enc::GRP_TXT {
                        *channel_hash = Some(format!("enc_{h:02X}"));
                    }
                    (
                        enc::group_payload(h, mac, &data),
                        enc::group_encrypted_json(name, h, mac, &data, status),
                    )
                }
            }
            enc::TRACE => {
                let tag: u32 = rng.gen();
                let auth: u32 = if rng.gen_bool(0.5) { 0 } else { rng.gen() };
                let nr = self.world.relay_nodes.len();
                let hops = rng.gen_range(1..=4);
                trace_route.clear();
                trace_snr.clear();
                for _ in 0..hops {
                    let b = if nr > 0 {
                        self.world.relay_key(rng.gen_range(0..nr) as u32)[0]
                    } else {
                        rng.gen()
                    };
                    trace_route.push(b);
                }
                for _ in 0..rng.gen_range(1..=hops) {
                    trace_snr.push(rng.gen_range(-40i8..60) as u8);
                }
                let p = enc::trace_payload(tag, auth, 0, trace_route);
                let j = if anoms.contains(&Anom::TraceSnrPath) {
                    enc::trace_too_short_json(&p)
                } else {
                    enc::trace_json(tag, auth, 0, trace_route, trace_snr)
                };
                (p, j)
            }
            _ => {
                // CONTROL
                let mut p = vec![0u8; rng.gen_range(10..36)];
                rng.fill(&mut p[..]);
                p[0] = 0x90 | (p[0] & 0x03);
                let old = anoms.contains(&Anom::ControlUnknown);
                let j = enc::control_json(&p, old);
                (p, j)
            }
        }
    }

    /// Final rows of nodes, observers, dropped packets and edge anomalies.
    pub fn finish(mut self) -> Tail {
        let cfg = &self.cfg;
        let rng = &mut self.rng;
        let anomalies = cfg.anomalies;
        if anomalies {
            let nn = self.world.nodes.len();
            for _ in 0..rng.gen_range(3..=6).min(nn) {
                let i = rng.gen_range(0..nn);
                self.world.nodes[i].ms_first_seen = Some(rng.gen_range(0..1000));
            }
            let no = self.world.observers.len();
            for _ in 0..2.min(no) {
                let i = rng.gen_range(0..no);
                self.world.observers[i].ms_first_seen = Some(rng.gen_range(0..1000));
                let j = rng.gen_range(0..no);
                self.world.observers[j].null_last_packet_at = true;
            }
        }
        if cfg.schema == Schema::Legacy {
            // Legacy Node.js rows carry milliseconds in first_seen.
            for n in self.world.nodes.iter_mut() {
                n.ms_first_seen = Some(rng.gen_range(0..1000));
            }
            for o in self.world.observers.iter_mut() {
                o.ms_first_seen = Some(rng.gen_range(0..1000));
            }
        }
        let mut made = std::mem::take(&mut self.made);
        let mut nodes = Vec::with_capacity(self.world.nodes.len());
        let zero_pos: HashSet<usize> = if anomalies {
            (0..3)
                .map(|_| rng.gen_range(0..self.world.nodes.len().max(1)))
                .collect()
        } else {
            HashSet::new()
        };
        let bad_count: HashSet<usize> = if anomalies {
            (0..3)
                .map(|_| rng.gen_range(0..self.world.nodes.len().max(1)))
                .collect()
        } else {
            HashSet::new()
        };
        for (i, n) in self.world.nodes.iter().enumerate() {
            let last = n.last_advert.unwrap_or(n.active.1 - rng.gen_range(0..3600));
            let first = n
                .first_advert
                .map_or(n.old_first_seen, |a| a.min(n.old_first_seen));
            let first_seen = match n.ms_first_seen {
                Some(ms) => enc::rfc3339_ms(first, ms),
                None => enc::rfc3339(first),
            };
            let (lat, lon) = if zero_pos.contains(&i) {
                (Some(0.0), Some(0.0))
            } else {
                match n.location {
                    Some((a, b)) => (Some(f64::from(a) / 1e6), Some(f64::from(b) / 1e6)),
                    None => (None, None),
                }
            };
            let advert_count = if bad_count.contains(&i) {
                n.adverts + 7
            } else {
                n.adverts
            };
            nodes.push(NodeRow {
                public_key: hex::encode(n.key),
                name: n.name.clone(),
                role: role_name(n.node_type),
                lat,
                lon,
                last_seen: enc::rfc3339(last),
                first_seen,
                advert_count,
                battery_mv: n.sensor.map(|s| i64::from(s.0)),
                temperature_c: n.sensor.map(|s| f64::from(s.1) / 100.0),
                multibyte_sup: i64::from(n.hash_size > 1),
            });
        }
        if anomalies {
            made.insert("nodes_at_0_0", zero_pos.len() as u64);
            made.insert("advert_count_off", bad_count.len() as u64);
        }
        let mut observers = Vec::with_capacity(self.world.observers.len());
        for (i, o) in self.world.observers.iter().enumerate() {
            let last = o.last_packet.unwrap_or(o.active.1).max(o.active.0);
            let first_seen = match o.ms_first_seen {
                Some(ms) => enc::rfc3339_ms(o.first_seen, ms),
                None => enc::rfc3339(o.first_seen),
            };
            let node = o.node.map(|n| &self.world.nodes[n]);
            observers.push(ObserverRow {
                rowid: i as i64 + 1,
                id: o.id.clone(),
                name: o.name.clone(),
                iata: o.iata.to_string(),
                last_seen: enc::rfc3339(last),
                first_seen,
                packet_count: o.packets,
                model: node.map(|_| "Heltec V3".to_string()),
                firmware: node.map(|_| "v1.7.2".to_string()),
                client_version: o.client_version.to_string(),
                radio: "910.525,62.5,7,5".to_string(),
                battery_mv: node.map(|_| rng.gen_range(3600..4200)),
                uptime_secs: Some(rng.gen_range(3600..3_000_000)),
                noise_floor: Some(f64::from(rng.gen_range(-115..-95))),
                last_packet_at: if o.null_last_packet_at {
                    None
                } else {
                    o.last_packet.map(enc::rfc3339)
                },
            });
        }
        let mut edges = Vec::new();
        if anomalies && self.world.nodes.len() > 1 {
            // #1: edges with an empty endpoint, left by the pre-#1289 server.
            for _ in 0..3 {
                let n = &self.world.nodes[rng.gen_range(0..self.world.nodes.len())];
                edges.push(EdgeRow {
                    node_a: String::new(),
                    node_b: hex::encode(n.key),
                    count: rng.gen_range(1..50),
                    last_seen: enc::rfc3339(cfg.end - rng.gen_range(0..86_400)),
                });
            }
            made.insert("empty_edge_endpoint", 3);
        }
        let seq_bump = (anomalies && self.next_tx_id > 1)
            .then(|| (self.next_tx_id + 10, self.next_obs_id + 10));
        Tail {
            nodes,
            observers,
            dropped: std::mem::take(&mut self.dropped),
            edges,
            seq_bump,
            anomalies_made: made,
        }
    }
}

/// Observer status samples (`observer_metrics`), on their own random stream.
pub struct MetricsGen {
    rng: ChaCha8Rng,
    items: Vec<(String, i64, i64, bool)>, // id, from, to, battery
    interval: i64,
    cur: usize,
    t: i64,
    counters: [i64; 5],
}

impl MetricsGen {
    pub fn new(cfg: &Config, world: &World) -> MetricsGen {
        let interval = cfg.metrics_interval.max(60);
        let items = world
            .observers
            .iter()
            .filter(|o| o.has_metrics)
            .map(|o| {
                let from = (o.active.0.max(cfg.start()) + interval - 1) / interval * interval;
                (o.id.clone(), from, o.active.1, o.node.is_some())
            })
            .collect();
        MetricsGen {
            rng: ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x6d65_7472_6963_7321),
            items,
            interval,
            cur: 0,
            t: i64::MIN,
            counters: [0; 5],
        }
    }
}

impl Iterator for MetricsGen {
    type Item = MetricRow;
    fn next(&mut self) -> Option<MetricRow> {
        loop {
            let (id, from, to, battery) = self.items.get(self.cur)?.clone();
            if self.t == i64::MIN {
                self.t = from;
                self.counters = [0; 5];
            }
            if self.t > to {
                self.cur += 1;
                self.t = i64::MIN;
                continue;
            }
            let t = self.t;
            self.t += self.interval;
            // Reporting gaps (observer offline for a while).
            if self.rng.gen_bool(0.03) {
                continue;
            }
            if self.rng.gen_bool(0.0005) {
                self.counters = [0; 5]; // reboot
            }
            let r = &mut self.rng;
            self.counters[0] += r.gen_range(0..8);
            self.counters[1] += r.gen_range(5..60);
            self.counters[2] += i64::from(r.gen_bool(0.1));
            self.counters[3] += r.gen_range(0..12);
            self.counters[4] += r.gen_range(10..90);
            return Some(MetricRow {
                observer_id: id,
                timestamp: enc::rfc3339(t),
                noise_floor: f64::from(r.gen_range(-118..-96)),
                tx_air_secs: self.counters[0],
                rx_air_secs: self.counters[1],
                recv_errors: self.counters[2],
                battery_mv: battery.then(|| r.gen_range(3600..4200)),
                packets_sent: self.counters[3],
                packets_recv: self.counters[4],
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(tx: u64, obs: u64) -> Config {
        Config {
            seed: 3,
            nodes: 300,
            observers: 12,
            transmissions: tx,
            observations: obs,
            days: 10.0,
            end: 1_780_000_000,
            schema: Schema::Latest,
            null_from_pubkey: 0.0,
            null_path_json: 0.0,
            null_resolved_path: 0.0,
            obs_raw_hex: 1.0,
            anomalies: false,
            metrics_interval: 300,
        }
    }

    #[test]
    fn exact_counts_and_unique_dedup_keys() {
        let mut g = Generator::new(&cfg(2000, 7000));
        let mut n_obs = 0;
        let mut hashes = HashSet::new();
        let mut last_t = 0;
        while let Some(p) = g.next_packet() {
            assert!(hashes.insert(p.tx.hash.clone()));
            let mut keys = HashSet::new();
            for o in &p.obs {
                let idx = match &o.observer {
                    ObserverRef::Idx(i) => *i,
                    ObserverRef::Text(_) => panic!("text idx"),
                };
                assert!(keys.insert((idx, o.path_json.clone().unwrap_or_default())));
                assert!(o.timestamp >= last_t || o.timestamp >= p.tx.last_seen - 100);
            }
            last_t = p.obs.first().map_or(last_t, |o| o.timestamp);
            n_obs += p.obs.len();
        }
        assert_eq!(n_obs, 7000);
        assert_eq!(g.tx_done(), 2000);
    }

    #[test]
    fn same_seed_same_packets() {
        let a: Vec<String> = {
            let mut g = Generator::new(&cfg(200, 600));
            std::iter::from_fn(|| g.next_packet())
                .map(|p| format!("{:?}{:?}", p.tx, p.obs))
                .collect()
        };
        let b: Vec<String> = {
            let mut g = Generator::new(&cfg(200, 600));
            std::iter::from_fn(|| g.next_packet())
                .map(|p| format!("{:?}{:?}", p.tx, p.obs))
                .collect()
        };
        assert_eq!(a, b);
    }
}
