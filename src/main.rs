#[allow(dead_code)]
mod synth;

fn main() {
    // Temporary driver until the foundation CLI lands.
    let a: Vec<String> = std::env::args().collect();
    if a.len() >= 4 && a[1] == "synth-dev" {
        let obs: u64 = a[3].parse().unwrap_or(1000);
        let cfg = synth::Config {
            seed: 1,
            nodes: a.get(4).and_then(|s| s.parse().ok()).unwrap_or(1000),
            observers: a.get(5).and_then(|s| s.parse().ok()).unwrap_or(40),
            transmissions: obs / 4,
            observations: obs,
            days: 30.0,
            end: 1_780_000_000,
            schema: if a.get(6).map(|s| s.as_str()) == Some("legacy") {
                synth::Schema::Legacy
            } else {
                synth::Schema::Latest
            },
            null_from_pubkey: 0.2,
            null_path_json: 0.05,
            null_resolved_path: 0.0,
            obs_raw_hex: 1.0,
            anomalies: a.get(7).is_some(),
            metrics_interval: 300,
        };
        let t = std::time::Instant::now();
        match synth::write_database(&cfg, std::path::Path::new(&a[2]), true, &|_, _| {}) {
            Ok(s) => println!("{s:?} {:?}", t.elapsed()),
            Err(e) => println!("error: {e:#}"),
        }
        return;
    }
    println!("corescope");
}
