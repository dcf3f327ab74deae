//! One transmission and its observations: header, receptions, paths and rows.

use super::*;

impl Generator {
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
}
