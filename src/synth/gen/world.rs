//! The mesh itself: building nodes, relays and observers, and routing a
//! packet from a node to an observer through the relays.

use super::*;

impl World {
    pub(super) fn build(cfg: &Config, rng: &mut ChaCha8Rng) -> World {
        let win = Window::of(cfg);
        let mut keys_seen: HashSet<[u8; 32]> = HashSet::new();
        let mut nodes: Vec<Node> = Vec::with_capacity(cfg.nodes);
        for i in 0..cfg.nodes {
            nodes.push(make_node(i, &win, &mut keys_seen, rng));
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
        let relays = Relays {
            nodes: &relay_nodes,
            points: &points,
            grid: &grid,
        };

        // Observers: most are also nodes (repeaters or companions with an uplink).
        let mut observers: Vec<Observer> = Vec::with_capacity(cfg.observers);
        let mut used_nodes: HashSet<usize> = HashSet::new();
        for oi in 0..cfg.observers {
            let o = make_observer(oi, &nodes, &relays, &mut used_nodes, &win, rng);
            observers.push(o);
        }
        if cfg.anomalies && !observers.is_empty() {
            observers.push(bridge_observer(&relays, &win, rng));
        }

        let nr = relay_nodes.len();
        let (dist, next) = routes(&nodes, &observers, &adj, nr);
        let hearers = hearers(&nodes, &observers, &dist, nr);
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
        let prefixes = prefix_index(&nodes);
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

    pub(super) fn relay_key(&self, r: u32) -> &[u8; 32] {
        &self.nodes[self.relay_nodes[r as usize]].key
    }

    /// Relays on the path from node `f` to observer `o` (empty = zero hop).
    pub(super) fn route(
        &self,
        f: usize,
        o: usize,
        d: u8,
        detour: bool,
        rng: &mut ChaCha8Rng,
    ) -> Vec<u32> {
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
    pub(super) fn adjacent(&self, a: u32, b: u32) -> bool {
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
    pub(super) fn resolve(&self, hops: &[&[u8]], originator: Option<usize>) -> Option<String> {
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

/// The time window of the generated traffic.
struct Window {
    start: i64,
    end: i64,
    span: i64,
}

impl Window {
    fn of(cfg: &Config) -> Window {
        let start = cfg.start();
        Window {
            start,
            end: cfg.end,
            span: (cfg.end - start).max(1),
        }
    }

    /// Active the whole window with probability `full`, else from the start
    /// to a cut in `early`, else from a cut in `late` to the end.
    fn active(
        &self,
        rng: &mut ChaCha8Rng,
        always: bool,
        full: f64,
        partial: f64,
        early: std::ops::Range<f64>,
        late: std::ops::Range<f64>,
    ) -> (i64, i64) {
        let act: f64 = rng.gen();
        if act < full || always {
            (self.start, self.end)
        } else if act < partial {
            (
                self.start,
                self.start + (self.span as f64 * rng.gen_range(early)) as i64,
            )
        } else {
            (
                self.start + (self.span as f64 * rng.gen_range(late)) as i64,
                self.end,
            )
        }
    }
}

/// The relays: their node indexes, positions and the grid over them.
struct Relays<'a> {
    nodes: &'a [usize],
    points: &'a [(f64, f64)],
    grid: &'a Grid,
}

/// Node `i`: a new non-zero key, role, position, name, hash size, active
/// span and chattiness.
fn make_node(
    i: usize,
    win: &Window,
    keys_seen: &mut HashSet<[u8; 32]>,
    rng: &mut ChaCha8Rng,
) -> Node {
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
    let name = node_name(node_type, &key, rng);
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
    let active = win.active(rng, i == 0, 0.75, 0.90, 0.1..0.9, 0.1..0.9);
    // Chattiness: a long tail of busy nodes.
    let weight = 0.2 + rng.gen::<f64>().powi(3) * 5.0;
    let old_first_seen = active.0 - rng.gen_range(0..(40 * 86_400));
    Node {
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
    }
}

/// A node name in the style of its role, tagged with its first key bytes.
fn node_name(node_type: u8, key: &[u8; 32], rng: &mut ChaCha8Rng) -> String {
    let tag = format!("{:02X}{:02X}", key[0], key[1]);
    match node_type {
        ROLE_REPEATER => format!("{} Rpt {}", PLACES.choose(rng).unwrap_or(&"Mesh"), tag),
        ROLE_ROOM => format!(
            "{} Room {}",
            PLACES.choose(rng).unwrap_or(&"Mesh"),
            &tag[..2]
        ),
        ROLE_SENSOR => format!("WX-{tag}"),
        _ => format!("{} {}", FIRST.choose(rng).unwrap_or(&"Op"), &tag[..2]),
    }
}

/// Observer `oi`: usually a node not used by another observer (mostly a
/// repeater), else a gateway of its own with a few relays in earshot.
fn make_observer(
    oi: usize,
    nodes: &[Node],
    relays: &Relays<'_>,
    used_nodes: &mut HashSet<usize>,
    win: &Window,
    rng: &mut ChaCha8Rng,
) -> Observer {
    let as_node = !nodes.is_empty() && rng.gen_bool(0.65);
    let mut node = None;
    if as_node {
        for _ in 0..20 {
            let cand = if rng.gen_bool(0.8) && !relays.nodes.is_empty() {
                relays.nodes[rng.gen_range(0..relays.nodes.len())]
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
            let ears = relays
                .grid
                .nearest(relays.points, pos, rng.gen_range(2..=4), None);
            let name = format!(
                "{} Gateway {}",
                PLACES.choose(rng).unwrap_or(&"Mesh"),
                oi + 1
            );
            (hex::encode_upper(k), ears, name)
        }
    };
    let active = win.active(rng, oi == 0, 0.8, 0.9, 0.2..0.9, 0.1..0.8);
    Observer {
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
    }
}

/// Anomaly: an observer whose id is not a public key (an MQTT bridge).
fn bridge_observer(relays: &Relays<'_>, win: &Window, rng: &mut ChaCha8Rng) -> Observer {
    let pos = (rng.gen_range(BBOX.0..BBOX.1), rng.gen_range(BBOX.2..BBOX.3));
    let ears = relays.grid.nearest(relays.points, pos, 2, None);
    Observer {
        id: "mqtt-bridge-eastbay".to_string(),
        node: None,
        name: "East Bay MQTT bridge".to_string(),
        iata: "OAK",
        ears,
        active: (win.start, win.end),
        upper_hex: false,
        busy: 0.5,
        client_version: CLIENTS[0],
        has_metrics: false,
        first_seen: win.start - 86_400,
        ms_first_seen: None,
        packets: 0,
        last_packet: None,
        null_last_packet_at: false,
    }
}

/// Routes towards every observer: per observer and relay, the distance and
/// the next relay (flat, observers × relays).
fn routes(
    nodes: &[Node],
    observers: &[Observer],
    adj: &[Vec<u32>],
    nr: usize,
) -> (Vec<u8>, Vec<u32>) {
    let mut dist = vec![UNREACHABLE; observers.len() * nr];
    let mut next = vec![u32::MAX; observers.len() * nr];
    for (oi, o) in observers.iter().enumerate() {
        let own_relay = o.node.and_then(|n| nodes[n].relay);
        let r = topo::routes_to(&o.ears, adj, own_relay);
        dist[oi * nr..(oi + 1) * nr].copy_from_slice(&r.dist);
        next[oi * nr..(oi + 1) * nr].copy_from_slice(&r.next);
    }
    (dist, next)
}

/// Per node: the observers that hear it, with the relay distance (0 = zero
/// hop), nearest first.
fn hearers(nodes: &[Node], observers: &[Observer], dist: &[u8], nr: usize) -> Vec<Vec<(u32, u8)>> {
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
    hearers
}

/// Key prefixes of 1 to 3 bytes → the nodes whose key starts with them.
fn prefix_index(nodes: &[Node]) -> HashMap<(u8, u32), Vec<u32>> {
    let mut prefixes: HashMap<(u8, u32), Vec<u32>> = HashMap::new();
    for (ni, n) in nodes.iter().enumerate() {
        for size in 1..=3u8 {
            prefixes
                .entry((size, key_prefix(&n.key, size as usize)))
                .or_default()
                .push(ni as u32);
        }
    }
    prefixes
}
