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
