//! The observations of one transmission: how many receptions, which
//! observers hear it, the path each copy took and the `observations` rows
//! (with the per-observation anomalies). The random draws happen in one
//! fixed order, so the output for a seed is unchanged by how the work is
//! split into functions.

use super::packet::{has, Head};
use super::payload::Extras;
use super::*;

/// One planned observation: observer index, header path bytes, hop size.
pub(super) type ObsSpec = (u32, Vec<u8>, usize);

impl Generator {
    /// How many receptions transmission `i` gets, so that the total comes
    /// out at `--observations` exactly.
    pub(super) fn reception_count(&mut self, i: u64, anoms: &[Anom]) -> u64 {
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
        if has(anoms, Anom::LongPath) {
            k.min(1)
        } else {
            k
        }
    }

    /// Up to `k` observers in range of node `f` at `t` (busy and near ones
    /// first), as (observer, relay distance), nearest first.
    pub(super) fn choose_observers(&mut self, f: usize, t: i64, k: u64) -> Vec<(u32, u8)> {
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
        chosen
    }

    /// One observation per chosen observer, more copies on other paths if
    /// `k` asks for more; never two with the same observer and path.
    pub(super) fn observation_specs(
        &mut self,
        head: &Head,
        anoms: &[Anom],
        extras: &Extras,
        chosen: &[(u32, u8)],
        k: u64,
    ) -> Vec<ObsSpec> {
        let (ptype, hash_size) = (head.ptype, head.hash_size);
        let mut obs_specs: Vec<ObsSpec> = Vec::new();
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
                extras.trace_snr.clone()
            } else if has(anoms, Anom::LongPath) {
                self.long_path()
            } else {
                let further = attempt > chosen.len() + 1;
                let detour = attempt > chosen.len() || self.rng.gen_bool(0.15);
                self.relay_path(head, o as usize, d, detour, further)
            };
            let hop_size = if ptype == enc::TRACE { 1 } else { hash_size };
            let pj = if ptype == enc::TRACE {
                enc::path_json(&extras.trace_route, 1)
            } else {
                enc::path_json(&path, hash_size)
            };
            if keys.insert((o, pj)) {
                obs_specs.push((o, path, hop_size));
            }
        }
        obs_specs
    }

    /// A path of 37 two-byte hops (longer than CoreScope's decoder accepts).
    fn long_path(&mut self) -> Vec<u8> {
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
    }

    /// The header path bytes of a copy from the sender to observer `o` at
    /// relay distance `d`; a `further` copy took an extra relay on the way;
    /// a few hops carry a random (unresolvable) hash.
    fn relay_path(&mut self, head: &Head, o: usize, d: u8, detour: bool, further: bool) -> Vec<u8> {
        let hash_size = head.hash_size;
        let mut relays = self.world.route(head.f, o, d, detour, &mut self.rng);
        if further && !self.world.relay_nodes.is_empty() {
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
    }

    /// The `observations` rows of one transmission, and the raw hex of its
    /// first copy (the transmission's own `raw_hex`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn observation_rows(
        &mut self,
        head: &Head,
        header: u8,
        anoms: &[Anom],
        extras: &Extras,
        specs: &[ObsSpec],
        tx_id: i64,
        payload: &[u8],
    ) -> (Vec<ObsRow>, Option<String>) {
        let t = head.t;
        let payload_hex = hex::encode(payload);
        let mut obs_rows: Vec<ObsRow> = Vec::with_capacity(specs.len());
        let mut tx_raw: Option<String> = None;
        let mut ts = t;
        let mut null_path_keys: HashSet<u32> = HashSet::new();
        for (n, spec) in specs.iter().enumerate() {
            if n > 0 {
                ts = (ts + self.rng.gen_range(0..4)).min(self.cfg.end.max(t));
            }
            let copy = Reception {
                n,
                spec,
                ts,
                header,
                tx_id,
                payload_hex: &payload_hex,
            };
            let (mut row, raw) =
                self.observation_row(head, anoms, extras, &copy, &mut null_path_keys);
            if tx_raw.is_none() {
                tx_raw = Some(raw);
            }
            let o = spec.0 as usize;
            self.mark_obs_anomalies(&mut row, n, o, anoms);
            let oo = &mut self.world.observers[o];
            oo.packets += 1;
            oo.last_packet = Some(oo.last_packet.map_or(ts, |x| x.max(ts)));
            if has(anoms, Anom::DuplicateObs) && n == 0 {
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
        (obs_rows, tx_raw)
    }

    /// Row `n` of a transmission (before the per-row anomalies) and its raw
    /// hex as the observer uploaded it.
    fn observation_row(
        &mut self,
        head: &Head,
        anoms: &[Anom],
        extras: &Extras,
        c: &Reception<'_>,
        null_path_keys: &mut HashSet<u32>,
    ) -> (ObsRow, String) {
        let (o, path, hop_size) = (c.spec.0, &c.spec.1, c.spec.2);
        let (ptype, hash_size) = (head.ptype, head.hash_size);
        let hop_count = path.len() / hash_size.max(1);
        let plb = if ptype == enc::TRACE {
            enc::path_len_byte(1, path.len())
        } else {
            enc::path_len_byte(hash_size, hop_count)
        };
        let bytes = enc::packet_bytes(c.header, head.transport, plb, path, &[]);
        let raw = if self.world.observers[o as usize].upper_hex {
            hex::encode_upper(&bytes) + &c.payload_hex.to_ascii_uppercase()
        } else {
            hex::encode(&bytes) + c.payload_hex
        };
        let (path_json, hops_for_resolve): (String, Vec<&[u8]>) = if ptype != enc::TRACE {
            (
                enc::path_json(path, hop_size),
                path.chunks(hop_size).collect(),
            )
        } else if has(anoms, Anom::TraceSnrPath) {
            (enc::path_json(path, 1), path.chunks(1).collect())
        } else {
            let route = &extras.trace_route;
            (enc::path_json(route, 1), route.chunks(1).collect())
        };
        let originator = (ptype == enc::ADVERT).then_some(head.f);
        let resolved = self.resolved_path(&hops_for_resolve, originator, anoms, c.n);
        let mut path_json = Some(path_json);
        if self.cfg.null_path_json > 0.0
            && ptype != enc::TRACE
            && self.rng.gen_bool(self.cfg.null_path_json.min(1.0))
            && null_path_keys.insert(o)
        {
            path_json = None;
        }
        let mut raw_hex = (self.cfg.obs_raw_hex >= 1.0
            || self.rng.gen_bool(self.cfg.obs_raw_hex.clamp(0.0, 1.0)))
        .then(|| raw.clone());
        if has(anoms, Anom::ObsNoRawDiffPath) && c.n > 0 {
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
        let row = ObsRow {
            id: self.next_obs_id,
            transmission_id: c.tx_id,
            observer: ObserverRef::Idx(i64::from(o) + 1),
            direction: Some("rx"),
            snr: Some(snr),
            rssi: Some(rssi),
            score: Some(score),
            path_json,
            timestamp: c.ts,
            raw_hex,
            resolved_path: resolved,
        };
        self.next_obs_id += 1;
        (row, raw)
    }

    /// `resolved_path` of copy `n`: the world's resolution of its hops,
    /// NULL for `--null-resolved-path`, all-null for the anomaly.
    fn resolved_path(
        &mut self,
        hops: &[&[u8]],
        originator: Option<usize>,
        anoms: &[Anom],
        n: usize,
    ) -> Option<String> {
        let mut resolved = self.world.resolve(hops, originator);
        if self.cfg.null_resolved_path > 0.0
            && self.rng.gen_bool(self.cfg.null_resolved_path.min(1.0))
        {
            resolved = None;
        }
        if has(anoms, Anom::AllNullResolved) && !hops.is_empty() && n == 0 {
            resolved = Some(format!("[{}]", vec!["null"; hops.len()].join(",")));
            *self
                .made
                .entry(anom_name(Anom::AllNullResolved))
                .or_default() += 1;
        }
        resolved
    }

    /// The anomalies of the first row of a transmission (NULL radio
    /// figures, observer id as text, zero timestamp) and the legacy
    /// importer's quirks on every row.
    fn mark_obs_anomalies(&mut self, row: &mut ObsRow, n: usize, o: usize, anoms: &[Anom]) {
        let obs_id = &self.world.observers[o].id;
        if has(anoms, Anom::NullRadio) && n == 0 {
            row.direction = None;
            row.snr = None;
            row.rssi = None;
            row.score = None;
            *self.made.entry(anom_name(Anom::NullRadio)).or_default() += 1;
        }
        if has(anoms, Anom::TextObserverIdx) && n == 0 {
            row.observer = ObserverRef::Text(obs_id.clone());
            *self
                .made
                .entry(anom_name(Anom::TextObserverIdx))
                .or_default() += 1;
        }
        if has(anoms, Anom::ZeroTimestamp) && n == 0 {
            row.timestamp = 0;
            *self.made.entry(anom_name(Anom::ZeroTimestamp)).or_default() += 1;
        }
        if self.cfg.schema == Schema::Legacy {
            // The fixture's importer quirks; it stored no
            // radio figures either.
            row.observer = ObserverRef::Text(obs_id.clone());
            row.timestamp = 0;
            row.direction = None;
            row.snr = None;
            row.rssi = None;
            row.score = None;
        }
    }
}

/// One copy of a transmission being turned into a row.
struct Reception<'a> {
    /// Index of the copy (0: the first reception).
    n: usize,
    spec: &'a ObsSpec,
    /// Reception time.
    ts: i64,
    header: u8,
    tx_id: i64,
    payload_hex: &'a str,
}
