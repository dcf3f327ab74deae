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

// Node types and their `nodes.role` names are defined once, in `packet`.
use crate::packet::{
    role_name, NODE_COMPANION as ROLE_COMPANION, NODE_REPEATER as ROLE_REPEATER,
    NODE_ROOM as ROLE_ROOM, NODE_SENSOR as ROLE_SENSOR,
};

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
    /// `payload_version` NULL although the header carries a version.
    VersionNull,
    /// TRACE `path_json` holding the header SNR bytes (with an old
    /// "too short" `decoded_json` and a raw-prefix hash).
    TraceSnrPath,
    /// A path longer than the 64-byte limit.
    LongPath,
    /// ADVERT `decoded_json` of an older decoder.
    OldAdvertJson,
    /// CONTROL stored as `UNKNOWN` by an older decoder.
    ControlUnknown,
    /// `hash` = the first 16 `raw_hex` characters.
    HashRawPrefix,
    /// `hash` by an older rule (not reproducible).
    HashRandom,
    /// `channel_hash = 'public'` next to `Public`.
    PublicLower,
    /// An observation without `raw_hex` whose path differs from the
    /// transmission's.
    ObsNoRawDiffPath,
    /// An all-null `resolved_path` array.
    AllNullResolved,
    /// NULL direction, SNR, RSSI and score.
    NullRadio,
    /// Two observations with the same dedup key.
    DuplicateObs,
    /// `observer_idx` holding the observer id as text.
    TextObserverIdx,
    /// Observation timestamp 0.
    ZeroTimestamp,
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
}

mod observe;
mod packet;
mod payload;
mod tail;
#[cfg(test)]
mod tests;
mod world;

pub use tail::MetricsGen;
