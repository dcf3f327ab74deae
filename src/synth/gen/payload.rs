//! The payload and `decoded_json` of one packet, per payload type.

use super::*;

impl Generator {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn payload(
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
}
