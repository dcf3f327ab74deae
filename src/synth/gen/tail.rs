//! What is written after the packets: node, observer, dropped-packet and
//! edge-anomaly rows, and the observer metrics stream.

use super::*;

impl Generator {
    /// Final rows of nodes, observers, dropped packets and edge anomalies.
    pub fn finish(mut self) -> Tail {
        self.mark_first_seen_ms();
        let mut made = std::mem::take(&mut self.made);
        let nodes = self.node_rows(&mut made);
        let observers = self.observer_rows();
        let edges = self.edge_anomalies(&mut made);
        let anomalies = self.cfg.anomalies;
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

    /// Milliseconds in `first_seen`: a few rows as an anomaly, every row in
    /// the legacy schema (the Node.js server wrote them).
    fn mark_first_seen_ms(&mut self) {
        let rng = &mut self.rng;
        if self.cfg.anomalies {
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
        if self.cfg.schema == Schema::Legacy {
            // Legacy Node.js rows carry milliseconds in first_seen.
            for n in self.world.nodes.iter_mut() {
                n.ms_first_seen = Some(rng.gen_range(0..1000));
            }
            for o in self.world.observers.iter_mut() {
                o.ms_first_seen = Some(rng.gen_range(0..1000));
            }
        }
    }

    /// The `nodes` rows; with anomalies a few at (0, 0) and a few with an
    /// advert count that does not match their adverts.
    fn node_rows(&mut self, made: &mut BTreeMap<&'static str, u64>) -> Vec<NodeRow> {
        let rng = &mut self.rng;
        let anomalies = self.cfg.anomalies;
        let mut pick_three = || -> HashSet<usize> {
            if anomalies {
                (0..3)
                    .map(|_| rng.gen_range(0..self.world.nodes.len().max(1)))
                    .collect()
            } else {
                HashSet::new()
            }
        };
        let zero_pos = pick_three();
        let bad_count = pick_three();
        let mut nodes = Vec::with_capacity(self.world.nodes.len());
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
        nodes
    }

    /// The `observers` rows (rowid = index + 1).
    fn observer_rows(&mut self) -> Vec<ObserverRow> {
        let rng = &mut self.rng;
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
        observers
    }

    /// Anomaly: `neighbor_edges` rows with an empty endpoint, as an older
    /// CoreScope server left them.
    fn edge_anomalies(&mut self, made: &mut BTreeMap<&'static str, u64>) -> Vec<EdgeRow> {
        let rng = &mut self.rng;
        let mut edges = Vec::new();
        if self.cfg.anomalies && self.world.nodes.len() > 1 {
            for _ in 0..3 {
                let n = &self.world.nodes[rng.gen_range(0..self.world.nodes.len())];
                edges.push(EdgeRow {
                    node_a: String::new(),
                    node_b: hex::encode(n.key),
                    count: rng.gen_range(1..50),
                    last_seen: enc::rfc3339(self.cfg.end - rng.gen_range(0..86_400)),
                });
            }
            made.insert("empty_edge_endpoint", 3);
        }
        edges
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
