//! A geometric mesh: repeaters ("relays") linked to their nearest neighbours plus a
//! few long links (hill-top sites), other nodes attached to nearby relays, and for
//! every observer the shortest relay route from every relay towards it.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

pub const UNREACHABLE: u8 = u8::MAX;

/// Spatial grid over relay positions for nearest-neighbour queries.
pub struct Grid {
    lat0: f64,
    lon0: f64,
    cell: f64,
    n: usize,
    cells: Vec<Vec<u32>>,
}

impl Grid {
    pub fn new(points: &[(f64, f64)], bbox: (f64, f64, f64, f64)) -> Grid {
        let (lat0, lat1, lon0, lon1) = bbox;
        let n = ((points.len() as f64 / 3.0).sqrt().ceil() as usize).max(1);
        let cell = ((lat1 - lat0).max(lon1 - lon0) / n as f64).max(1e-9);
        let mut cells = vec![Vec::new(); n * n];
        let mut g = Grid {
            lat0,
            lon0,
            cell,
            n,
            cells: Vec::new(),
        };
        for (i, p) in points.iter().enumerate() {
            let (cx, cy) = g.cell_of(*p);
            cells[cy * n + cx].push(i as u32);
        }
        g.cells = cells;
        g
    }

    fn cell_of(&self, p: (f64, f64)) -> (usize, usize) {
        let cx = ((p.1 - self.lon0) / self.cell).floor();
        let cy = ((p.0 - self.lat0) / self.cell).floor();
        let clamp = |v: f64| -> usize {
            if v < 0.0 {
                0
            } else {
                (v as usize).min(self.n - 1)
            }
        };
        (clamp(cx), clamp(cy))
    }

    /// Up to `k` nearest points to `p` (excluding `skip`), nearest first.
    pub fn nearest(
        &self,
        points: &[(f64, f64)],
        p: (f64, f64),
        k: usize,
        skip: Option<u32>,
    ) -> Vec<u32> {
        if k == 0 || points.is_empty() {
            return Vec::new();
        }
        let (cx, cy) = self.cell_of(p);
        let mut found: Vec<(f64, u32)> = Vec::new();
        let mut ring = 0usize;
        loop {
            let x0 = cx.saturating_sub(ring);
            let y0 = cy.saturating_sub(ring);
            let x1 = (cx + ring).min(self.n - 1);
            let y1 = (cy + ring).min(self.n - 1);
            for y in y0..=y1 {
                for x in x0..=x1 {
                    // Only cells at Chebyshev distance exactly `ring` are new.
                    if x.abs_diff(cx).max(y.abs_diff(cy)) != ring {
                        continue;
                    }
                    for &i in &self.cells[y * self.n + x] {
                        if Some(i) == skip {
                            continue;
                        }
                        let q = points[i as usize];
                        let d = (q.0 - p.0).powi(2) + (q.1 - p.1).powi(2);
                        found.push((d, i));
                    }
                }
            }
            let covered_all = x0 == 0 && y0 == 0 && x1 == self.n - 1 && y1 == self.n - 1;
            if covered_all {
                break;
            }
            if found.len() >= k {
                // Every unseen point is at least `ring * cell` away.
                found.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                let reach = ring as f64 * self.cell;
                if found[k - 1].0 <= reach * reach {
                    break;
                }
            }
            ring += 1;
        }
        found.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        found.truncate(k);
        found.into_iter().map(|(_, i)| i).collect()
    }
}

/// Relay adjacency: each relay linked to its `k` nearest relays (symmetric), plus a
/// long link with probability `long_p`.
pub fn relay_graph(
    points: &[(f64, f64)],
    grid: &Grid,
    k: usize,
    long_p: f64,
    rng: &mut ChaCha8Rng,
) -> Vec<Vec<u32>> {
    let n = points.len();
    let mut adj: Vec<Vec<u32>> = vec![Vec::new(); n];
    let link = |adj: &mut Vec<Vec<u32>>, a: u32, b: u32| {
        if a != b && !adj[a as usize].contains(&b) {
            adj[a as usize].push(b);
            adj[b as usize].push(a);
        }
    };
    for i in 0..n {
        for j in grid.nearest(points, points[i], k, Some(i as u32)) {
            link(&mut adj, i as u32, j);
        }
        if n > 1 && rng.gen_bool(long_p) {
            let j = rng.gen_range(0..n) as u32;
            link(&mut adj, i as u32, j);
        }
    }
    // Connect components so every relay can reach every observer.
    let mut comp = vec![u32::MAX; n];
    let mut reps: Vec<u32> = Vec::new();
    for s in 0..n {
        if comp[s] != u32::MAX {
            continue;
        }
        let c = reps.len() as u32;
        reps.push(s as u32);
        let mut stack = vec![s as u32];
        comp[s] = c;
        while let Some(v) = stack.pop() {
            for &w in &adj[v as usize] {
                if comp[w as usize] == u32::MAX {
                    comp[w as usize] = c;
                    stack.push(w);
                }
            }
        }
    }
    for w in reps.windows(2) {
        link(&mut adj, w[0], w[1]);
    }
    for a in adj.iter_mut() {
        a.sort_unstable();
    }
    adj
}

/// Shortest routes towards one observer: `dist[r]` = number of relays on the path
/// from relay `r` to the observer (an "ear" that hears the observer directly has 1),
/// `next[r]` = the following relay (`u32::MAX` for ears).
pub struct Routes {
    pub dist: Vec<u8>,
    pub next: Vec<u32>,
}

pub fn routes_to(ears: &[u32], adj: &[Vec<u32>], exclude: Option<u32>) -> Routes {
    let n = adj.len();
    let mut dist = vec![UNREACHABLE; n];
    let mut next = vec![u32::MAX; n];
    let mut queue = std::collections::VecDeque::new();
    for &e in ears {
        if Some(e) == exclude {
            continue;
        }
        if dist[e as usize] == UNREACHABLE {
            dist[e as usize] = 1;
            queue.push_back(e);
        }
    }
    while let Some(v) = queue.pop_front() {
        let d = dist[v as usize];
        if d >= UNREACHABLE - 1 {
            continue;
        }
        for &w in &adj[v as usize] {
            if Some(w) == exclude {
                continue;
            }
            if dist[w as usize] == UNREACHABLE {
                dist[w as usize] = d + 1;
                next[w as usize] = v;
                queue.push_back(w);
            }
        }
    }
    Routes { dist, next }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn nearest_is_exact_on_small_sets() {
        let pts: Vec<(f64, f64)> = (0..50).map(|i| ((i % 7) as f64, (i / 7) as f64)).collect();
        let grid = Grid::new(&pts, (0.0, 7.0, 0.0, 8.0));
        for (i, p) in pts.iter().enumerate() {
            let got = grid.nearest(&pts, *p, 3, Some(i as u32));
            let mut all: Vec<(f64, u32)> = pts
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(j, q)| ((q.0 - p.0).powi(2) + (q.1 - p.1).powi(2), j as u32))
                .collect();
            all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let want_d: Vec<f64> = all[..3].iter().map(|x| x.0).collect();
            let got_d: Vec<f64> = got
                .iter()
                .map(|j| {
                    let q = pts[*j as usize];
                    (q.0 - p.0).powi(2) + (q.1 - p.1).powi(2)
                })
                .collect();
            assert_eq!(got_d, want_d);
        }
    }

    #[test]
    fn graph_is_connected_and_routes_follow_edges() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let pts: Vec<(f64, f64)> = (0..200)
            .map(|_| (rng.gen::<f64>(), rng.gen::<f64>()))
            .collect();
        let grid = Grid::new(&pts, (0.0, 1.0, 0.0, 1.0));
        let adj = relay_graph(&pts, &grid, 3, 0.05, &mut rng);
        let r = routes_to(&[0, 1], &adj, None);
        for v in 0..200u32 {
            let d = r.dist[v as usize];
            assert_ne!(d, UNREACHABLE);
            let mut cur = v;
            let mut hops = 1;
            while r.next[cur as usize] != u32::MAX {
                let nx = r.next[cur as usize];
                assert!(adj[cur as usize].contains(&nx));
                cur = nx;
                hops += 1;
            }
            assert!(cur == 0 || cur == 1);
            assert_eq!(hops, d);
        }
    }
}
