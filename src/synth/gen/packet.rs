//! One transmission: its header fields, a payload with a content hash not
//! used before, and the `transmissions` row (the observations are built in
//! `observe.rs`). The random draws happen in one fixed order, so the output
//! for a seed is unchanged by how the work is split into functions.

use super::payload::Extras;
use super::*;

/// True when the transmission carries anomaly `a`.
pub(super) fn has(anoms: &[Anom], a: Anom) -> bool {
    anoms.contains(&a)
}

/// The fields of one transmission decided before its payload.
pub(super) struct Head {
    /// Time of the first reception.
    pub t: i64,
    pub ptype: u8,
    pub route_type: u8,
    pub version: u8,
    pub payload_version: Option<i64>,
    /// Sending node.
    pub f: usize,
    /// Hop hash size of the paths, in bytes.
    pub hash_size: usize,
    pub transport: Option<[u8; 4]>,
    pub scope_name: Option<String>,
}

impl Generator {
    /// The next packet, or `None` when all transmissions are generated.
    pub fn next_packet(&mut self) -> Option<Packet> {
        if self.tx_done >= self.cfg.transmissions || self.world.nodes.is_empty() {
            return None;
        }
        let i = self.tx_done;
        let anoms = self.anoms.remove(&i).unwrap_or_default();
        let jitter: f64 = self.rng.gen();
        let t = self
            .schedule
            .at(i, self.cfg.transmissions, jitter, self.cfg.end);
        let head = self.head(t, &anoms);
        let mut extras = Extras::default();
        let (payload, decoded) = self.unique_payload(&head, &anoms, &mut extras);
        let header = enc::header_byte(head.route_type, head.ptype, head.version);
        let k = self.reception_count(i, &anoms);
        let chosen = self.choose_observers(head.f, t, k);
        let specs = self.observation_specs(&head, &anoms, &extras, &chosen, k);
        let tx_id = self.take_tx_id();
        let (obs_rows, tx_raw) =
            self.observation_rows(&head, header, &anoms, &extras, &specs, tx_id, &payload);
        self.obs_left = self.obs_left.saturating_sub(specs.len() as u64);
        let last_ts = obs_rows
            .iter()
            .map(|o| o.timestamp)
            .max()
            .unwrap_or(t)
            .max(t);
        self.max_obs_ts = self.max_obs_ts.max(last_ts);

        let raw_hex = tx_raw.unwrap_or_else(|| {
            let plb = enc::path_len_byte(head.hash_size, 0);
            hex::encode(enc::packet_bytes(
                header,
                head.transport,
                plb,
                &[],
                &payload,
            ))
        });
        let hash = self.tx_hash(&head, &anoms, &extras, &payload, &raw_hex);
        self.count_tx_anomalies(&anoms);
        let mut from_pubkey = extras.from_pubkey;
        if head.ptype == enc::ADVERT {
            self.advert_sent(&head, header, &payload, &mut from_pubkey);
        }
        let tx = TxRow {
            id: tx_id,
            raw_hex,
            hash,
            first_seen: enc::rfc3339(t),
            route_type: i64::from(head.route_type),
            payload_type: i64::from(head.ptype),
            payload_version: head.payload_version,
            decoded_json: decoded,
            from_pubkey,
            created_at: enc::sqlite_datetime(t + self.rng.gen_range(0..3)),
            channel_hash: extras.channel_hash,
            last_seen: last_ts,
            scope_name: head.scope_name,
        };
        self.tx_done += 1;
        Some(Packet { tx, obs: obs_rows })
    }

    /// Payload type (some anomalies force one), route type, version,
    /// sender, hash size, transport codes and scope.
    fn head(&mut self, t: i64, anoms: &[Anom]) -> Head {
        let has = |a: Anom| has(anoms, a);
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
        let route_type = if has(Anom::LongPath) {
            2
        } else {
            route_type_for(ptype, r)
        };
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
        let (transport, scope_name) = self.transport(route_type);
        Head {
            t,
            ptype,
            route_type,
            version,
            payload_version,
            f,
            hash_size,
            transport,
            scope_name,
        }
    }

    /// Transport codes and scope name (route types 0 and 3 only).
    fn transport(&mut self, route_type: u8) -> (Option<[u8; 4]>, Option<String>) {
        if !enc::has_transport(route_type) {
            return (None, None);
        }
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
    }

    /// A payload whose content hash no earlier packet has (drawn again until
    /// it is new).
    fn unique_payload(
        &mut self,
        head: &Head,
        anoms: &[Anom],
        extras: &mut Extras,
    ) -> (Vec<u8>, String) {
        loop {
            let (p, d) = self.payload(head.ptype, head.f, head.t, anoms, extras);
            let path_len_for_hash = enc::path_len_byte(1, extras.trace_snr.len());
            let h = enc::content_hash(head.ptype, path_len_for_hash, &p);
            if self.unique_hash(&h) {
                return (p, d);
            }
        }
    }

    /// The transmission's id; now and then the next id skips a few (ids
    /// are not dense in real databases).
    fn take_tx_id(&mut self) -> i64 {
        let tx_id = self.next_tx_id;
        self.next_tx_id += 1;
        if self.cfg.anomalies
            && self
                .rng
                .gen_bool((20.0 / self.cfg.transmissions as f64).min(0.05))
        {
            self.next_tx_id += self.rng.gen_range(1..=4);
        }
        tx_id
    }

    /// The stored `hash`: the content hash, or for some anomalies the
    /// raw-hex prefix or a random value (when that is still unused).
    fn tx_hash(
        &mut self,
        head: &Head,
        anoms: &[Anom],
        extras: &Extras,
        payload: &[u8],
        raw_hex: &str,
    ) -> String {
        let has = |a: Anom| has(anoms, a);
        let path_len = enc::path_len_byte(1, extras.trace_snr.len());
        let mut hash = enc::content_hash(head.ptype, path_len, payload);
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
        hash
    }

    /// Counts the transmission-level anomalies this packet carries.
    fn count_tx_anomalies(&mut self, anoms: &[Anom]) {
        for a in [
            Anom::VersionNull,
            Anom::LongPath,
            Anom::TraceSnrPath,
            Anom::OldAdvertJson,
            Anom::ControlUnknown,
            Anom::PublicLower,
        ] {
            if has(anoms, a) {
                *self.made.entry(anom_name(a)).or_default() += 1;
            }
        }
    }

    /// An ADVERT was sent: the node's advert statistics, `--null-from-pubkey`,
    /// and now and then a copy that failed signature validation (dropped).
    fn advert_sent(
        &mut self,
        head: &Head,
        header: u8,
        payload: &[u8],
        from_pubkey: &mut Option<String>,
    ) {
        let (f, t) = (head.f, head.t);
        let n = &mut self.world.nodes[f];
        n.adverts += 1;
        n.last_advert = Some(n.last_advert.map_or(t, |x| x.max(t)));
        n.first_advert = Some(n.first_advert.map_or(t, |x| x.min(t)));
        if from_pubkey.is_some()
            && self.cfg.null_from_pubkey > 0.0
            && self.rng.gen_bool(self.cfg.null_from_pubkey.min(1.0))
        {
            *from_pubkey = None;
        }
        let fails_validation = self.rng.gen_bool(0.002);
        if !fails_validation || self.world.observers.is_empty() {
            return;
        }
        let o = &self.world.observers[self.rng.gen_range(0..self.world.observers.len())];
        let mut bad = payload.to_vec();
        if bad.len() > 40 {
            bad[40] ^= 0x5a;
        }
        self.dropped.push(DroppedRow {
            hash: enc::content_hash(enc::ADVERT, 0, &bad),
            raw_hex: hex::encode(enc::packet_bytes(
                header,
                head.transport,
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

/// Route type of a packet of type `ptype`, from one uniform draw `r`.
fn route_type_for(ptype: u8, r: f64) -> u8 {
    match ptype {
        enc::ADVERT | enc::GRP_TXT | enc::GRP_DATA => u8::from(r < 0.95),
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
    }
}
