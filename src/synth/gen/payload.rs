//! The payload and `decoded_json` of one packet, one function per payload
//! type. Every function draws from the generator's stream in the order the
//! original single function did, so the output for a seed is unchanged.

use super::*;
use crate::packet;

/// What a payload sets besides its bytes and `decoded_json`. Kept across the
/// retries of one packet (a retry overwrites what its payload type sets).
#[derive(Default)]
pub(super) struct Extras {
    pub from_pubkey: Option<String>,
    pub channel_hash: Option<String>,
    /// TRACE: the intended route (one byte per hop).
    pub trace_route: Vec<u8>,
    /// TRACE: SNR bytes of the hops so far (the header path of a TRACE).
    pub trace_snr: Vec<u8>,
}

impl Generator {
    /// Payload bytes and `decoded_json` of a `ptype` packet sent by node `f`
    /// at `t`.
    pub(super) fn payload(
        &mut self,
        ptype: u8,
        f: usize,
        t: i64,
        anoms: &[Anom],
        extras: &mut Extras,
    ) -> (Vec<u8>, String) {
        let mut mac = [0u8; 2];
        self.rng.fill(&mut mac[..]);
        let src = self.world.nodes[f].key[0];
        match ptype {
            enc::ADVERT => self.advert(f, t, anoms, extras),
            enc::REQ | enc::RESPONSE | enc::TXT_MSG | enc::PATH => self.addressed(ptype, src, mac),
            enc::ANON_REQ => self.anon_req(mac),
            enc::ACK => {
                let mut crc = [0u8; 4];
                self.rng.fill(&mut crc[..]);
                (crc.to_vec(), enc::ack_json(crc))
            }
            enc::GRP_TXT | enc::GRP_DATA => self.group(ptype, f, t, mac, anoms, extras),
            enc::TRACE => self.trace(anoms, extras),
            _ => self.control(anoms),
        }
    }

    fn advert(
        &mut self,
        f: usize,
        t: i64,
        anoms: &[Anom],
        extras: &mut Extras,
    ) -> (Vec<u8>, String) {
        let rng = &mut self.rng;
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
        extras.from_pubkey = Some(hex::encode(n.key));
        let old = anoms.contains(&Anom::OldAdvertJson);
        (ad.payload(), ad.decoded_json(old))
    }

    /// REQ, RESPONSE, TXT_MSG and PATH: destination and source hash, MAC,
    /// encrypted data.
    fn addressed(&mut self, ptype: u8, src: u8, mac: [u8; 2]) -> (Vec<u8>, String) {
        let dest = self.some_node_byte();
        let rng = &mut self.rng;
        let mut data = vec![0u8; 16 * rng.gen_range(1..=2)];
        rng.fill(&mut data[..]);
        let name = packet::payload_type_name(ptype);
        (
            enc::addressed_payload(dest, src, mac, &data),
            enc::addressed_json(name, dest, src, mac, &data),
        )
    }

    fn anon_req(&mut self, mac: [u8; 2]) -> (Vec<u8>, String) {
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

    /// GRP_TXT (decrypted with a known channel key, or not) and GRP_DATA.
    fn group(
        &mut self,
        ptype: u8,
        f: usize,
        t: i64,
        mac: [u8; 2],
        anoms: &[Anom],
        extras: &mut Extras,
    ) -> (Vec<u8>, String) {
        let rng = &mut self.rng;
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
            extras.channel_hash = Some(name.to_string());
            return (
                enc::group_payload(h, mac, &data),
                enc::chan_json(h, name, sender, msg, t - rng.gen_range(0..30)),
            );
        }
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
        let name = packet::payload_type_name(ptype);
        if ptype == enc::GRP_TXT {
            extras.channel_hash = Some(format!("enc_{h:02X}"));
        }
        (
            enc::group_payload(h, mac, &data),
            enc::group_encrypted_json(name, h, mac, &data, status),
        )
    }

    /// TRACE: tag, auth code and the route; fills `trace_route` and
    /// `trace_snr`.
    fn trace(&mut self, anoms: &[Anom], extras: &mut Extras) -> (Vec<u8>, String) {
        let rng = &mut self.rng;
        let tag: u32 = rng.gen();
        let auth: u32 = if rng.gen_bool(0.5) { 0 } else { rng.gen() };
        let nr = self.world.relay_nodes.len();
        let hops = rng.gen_range(1..=4);
        let (route, snr) = (&mut extras.trace_route, &mut extras.trace_snr);
        route.clear();
        snr.clear();
        for _ in 0..hops {
            let b = if nr > 0 {
                self.world.relay_key(rng.gen_range(0..nr) as u32)[0]
            } else {
                rng.gen()
            };
            route.push(b);
        }
        for _ in 0..rng.gen_range(1..=hops) {
            snr.push(rng.gen_range(-40i8..60) as u8);
        }
        let p = enc::trace_payload(tag, auth, 0, route);
        let j = if anoms.contains(&Anom::TraceSnrPath) {
            enc::trace_too_short_json(&p)
        } else {
            enc::trace_json(tag, auth, 0, route, snr)
        };
        (p, j)
    }

    /// CONTROL (and any other type): random bytes with a control flag.
    fn control(&mut self, anoms: &[Anom]) -> (Vec<u8>, String) {
        let rng = &mut self.rng;
        let mut p = vec![0u8; rng.gen_range(10..36)];
        rng.fill(&mut p[..]);
        p[0] = 0x90 | (p[0] & 0x03);
        let old = anoms.contains(&Anom::ControlUnknown);
        let j = enc::control_json(&p, old);
        (p, j)
    }
}
