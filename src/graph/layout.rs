//! Where the nodes of a DOT dump go, so that `dot -Tsvg` (or `neato -n2`)
//! draws a map instead of a 25 000-point strip.
//!
//! Nodes with a fix (see [`Node::position`]) are placed by an
//! equirectangular projection (longitude scaled by the cosine of the map's
//! middle latitude, north up), scaled so the map's larger side is
//! [`extent`] points. A node without a fix is placed next to its placed
//! neighbours (their mean, offset by a small, per-node angle), repeated
//! outward; nodes with no placed node within reach go on a grid below the
//! map. Every position is pinned, so the picture does not depend on a
//! layout run. The few nodes far outside the bulk of the mesh (a wrong fix
//! on the other side of the world) are drawn at the map's border rather
//! than shrinking everything else to a dot.

use std::collections::HashMap;

use super::{Edge, Graph};

/// How a node's position was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// From its latitude and longitude.
    Geo,
    /// Next to its placed neighbours.
    Neighbours,
    /// On the grid below the map (no placed node within reach).
    Grid,
}

/// Positions in points (x to the east, y to the north), in the order of
/// `g.nodes`; `None` when no node of the graph has a fix (then the dump
/// leaves the layout to Graphviz).
pub fn positions(g: &Graph) -> Option<Vec<(f64, f64, Placed)>> {
    let geo: Vec<Option<(f64, f64)>> = g.nodes.iter().map(|n| n.position()).collect();
    let fixes: Vec<(f64, f64)> = geo.iter().flatten().copied().collect();
    if fixes.is_empty() {
        return None;
    }
    let proj = Projection::fit(&fixes, extent(g.nodes.len()));
    let mut out: Vec<Option<(f64, f64, Placed)>> = geo
        .iter()
        .map(|p| {
            p.map(|(lon, lat)| {
                let (x, y) = proj.point(lon, lat);
                (x, y, Placed::Geo)
            })
        })
        .collect();
    let index: HashMap<&str, usize> = g
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    let adj = adjacency(&g.edges, &index, g.nodes.len());
    let step = proj.extent / 60.0;
    // Outward from the placed nodes, one ring of neighbours per round; the
    // positions of a round are computed from the previous rounds only, so
    // the result does not depend on the order within a round.
    // Each round looks only at the unplaced neighbours of the nodes the
    // previous round placed (linear in the size of the graph).
    let mut frontier: Vec<usize> = (0..out.len()).filter(|&i| out[i].is_some()).collect();
    loop {
        let mut candidates: Vec<usize> = frontier
            .iter()
            .flat_map(|&i| adj[i].iter().copied())
            .filter(|&j| out[j].is_none())
            .collect();
        candidates.sort_unstable();
        candidates.dedup();
        let mut next: Vec<(usize, (f64, f64))> = Vec::new();
        for i in candidates {
            let placed: Vec<(f64, f64)> = adj[i]
                .iter()
                .filter_map(|&j| out[j].map(|(x, y, _)| (x, y)))
                .collect();
            let n = placed.len() as f64;
            let (mx, my) = placed
                .iter()
                .fold((0.0, 0.0), |(a, b), (x, y)| (a + x / n, b + y / n));
            let angle = f64::from(hash(&g.nodes[i].id) % 360).to_radians();
            next.push((i, (mx + step * angle.cos(), my + step * angle.sin())));
        }
        if next.is_empty() {
            break;
        }
        frontier = next.iter().map(|(i, _)| *i).collect();
        for (i, (x, y)) in next {
            out[i] = Some((x, y, Placed::Neighbours));
        }
    }
    // The rest: a grid below the map, in id order.
    let rest: Vec<usize> = (0..out.len()).filter(|&i| out[i].is_none()).collect();
    let cols = ((rest.len() as f64).sqrt().ceil() as usize).max(1);
    let gap = proj.extent / 30.0;
    let top = proj.min_y - 2.0 * gap;
    for (k, i) in rest.into_iter().enumerate() {
        let (row, col) = (k / cols, k % cols);
        out[i] = Some((
            proj.min_x + col as f64 * gap,
            top - row as f64 * gap,
            Placed::Grid,
        ));
    }
    Some(
        out.into_iter()
            .map(|p| p.unwrap_or((0.0, 0.0, Placed::Grid)))
            .collect(),
    )
}

/// The larger side of the map in points: about an inch per node along the
/// side of a square of all nodes, at least 10 and at most 100 inches.
pub fn extent(nodes: usize) -> f64 {
    ((nodes as f64).sqrt() * 72.0).clamp(720.0, 7200.0)
}

/// Neighbour lists by node index.
fn adjacency(edges: &[Edge], index: &HashMap<&str, usize>, n: usize) -> Vec<Vec<usize>> {
    let mut adj = vec![Vec::new(); n];
    for e in edges {
        if let (Some(&a), Some(&b)) = (index.get(&*e.source), index.get(&*e.target)) {
            adj[a].push(b);
            adj[b].push(a);
        }
    }
    adj
}

/// FNV-1a of a node id: a stable angle per node.
fn hash(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Longitude/latitude to points.
#[derive(Debug, Clone, Copy)]
struct Projection {
    /// Middle of the map (degrees).
    lon0: f64,
    lat0: f64,
    /// cos(lat0): degrees of longitude are this much shorter.
    kx: f64,
    /// Points per degree of latitude.
    scale: f64,
    /// Half the map's box in projected degrees (outliers are clamped to it).
    half_w: f64,
    half_h: f64,
    extent: f64,
    min_x: f64,
    min_y: f64,
}

impl Projection {
    /// A projection of `fixes` ((lon, lat) pairs) whose larger side is
    /// `extent` points. With 20 or more fixes the box is that of the middle
    /// 96 % in each direction (widened by a tenth), so a few wrong fixes far
    /// away do not shrink the mesh; they are drawn on the border.
    fn fit(fixes: &[(f64, f64)], extent: f64) -> Projection {
        let mut lons: Vec<f64> = fixes.iter().map(|p| p.0).collect();
        let mut lats: Vec<f64> = fixes.iter().map(|p| p.1).collect();
        lons.sort_by(f64::total_cmp);
        lats.sort_by(f64::total_cmp);
        let trim = if fixes.len() >= 20 {
            (fixes.len() / 50).max(1)
        } else {
            0
        };
        let span = |v: &[f64]| {
            let (lo, hi) = (v[trim], v[v.len() - 1 - trim]);
            let pad = if trim > 0 { (hi - lo) * 0.05 } else { 0.0 };
            (lo - pad, hi + pad)
        };
        let (lon_lo, lon_hi) = span(&lons);
        let (lat_lo, lat_hi) = span(&lats);
        let lat0 = (lat_lo + lat_hi) / 2.0;
        let lon0 = (lon_lo + lon_hi) / 2.0;
        let kx = lat0.to_radians().cos().max(0.01);
        let w = (lon_hi - lon_lo) * kx;
        let h = lat_hi - lat_lo;
        let larger = w.max(h);
        // All fixes at one point: a degree is an inch.
        let scale = if larger > 1e-9 { extent / larger } else { 72.0 };
        let (half_w, half_h) = (w / 2.0, h / 2.0);
        Projection {
            lon0,
            lat0,
            kx,
            scale,
            half_w,
            half_h,
            extent,
            min_x: -half_w * scale,
            min_y: -half_h * scale,
        }
    }

    /// (x, y) in points of a fix, clamped to the map's box.
    fn point(&self, lon: f64, lat: f64) -> (f64, f64) {
        let x = ((lon - self.lon0) * self.kx).clamp(-self.half_w, self.half_w);
        let y = (lat - self.lat0).clamp(-self.half_h, self.half_h);
        (x * self.scale, y * self.scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Node;
    use std::rc::Rc;

    fn node(id: &str, pos: Option<(f64, f64)>) -> Node {
        Node {
            id: id.into(),
            name: None,
            role: None,
            lat: pos.map(|p| p.1),
            lon: pos.map(|p| p.0),
            last_seen: None,
            is_observer: false,
            inactive: false,
            known: true,
        }
    }

    fn edge(a: &str, b: &str) -> Edge {
        Edge {
            source: Rc::from(a),
            target: Rc::from(b),
            count: 1,
            last_seen: None,
        }
    }

    #[test]
    fn fixes_are_projected_north_up_and_the_rest_placed_near_them() {
        // a west of b, c north of a; d has no fix but neighbours a and b;
        // e hangs off d; f and g are a component without any fix.
        let g = Graph {
            nodes: vec![
                node("a", Some((-122.0, 37.0))),
                node("b", Some((-121.0, 37.0))),
                node("c", Some((-122.0, 38.0))),
                node("d", None),
                node("e", None),
                node("f", None),
                node("g", Some((0.0, 0.0))),
            ],
            edges: vec![
                edge("a", "d"),
                edge("b", "d"),
                edge("d", "e"),
                edge("f", "g"),
            ],
        };
        let p = positions(&g).unwrap();
        let (a, b, c, d, e) = (p[0], p[1], p[2], p[3], p[4]);
        assert_eq!([a.2, b.2, c.2], [Placed::Geo; 3]);
        assert!(
            b.0 > a.0 && (b.1 - a.1).abs() < 1e-9,
            "east is right: {a:?} {b:?}"
        );
        assert!(c.1 > a.1 && (c.0 - a.0).abs() < 1e-9, "north is up: {c:?}");
        // A degree of longitude at 37.5° is cos(37.5°) of a degree of latitude.
        let ratio = (b.0 - a.0) / (c.1 - a.1);
        assert!(
            (ratio - 37.5_f64.to_radians().cos()).abs() < 1e-9,
            "{ratio}"
        );
        // The larger side is the extent.
        assert!(((c.1 - a.1) - extent(7)).abs() < 1e-6);
        assert_eq!(d.2, Placed::Neighbours);
        let mid = ((a.0 + b.0) / 2.0, (a.1 + b.1) / 2.0);
        assert!(((d.0 - mid.0).hypot(d.1 - mid.1) - extent(7) / 60.0).abs() < 1e-6);
        assert_eq!(e.2, Placed::Neighbours);
        // f, g: no fix ((0, 0) is none) anywhere in reach: below the map.
        assert_eq!([p[5].2, p[6].2], [Placed::Grid; 2]);
        assert!(p[5].1 < a.1.min(b.1) && p[6].1 < a.1.min(b.1));
        // Deterministic.
        assert_eq!(positions(&g).unwrap(), p);
    }

    #[test]
    fn no_fix_no_positions_and_outliers_stay_on_the_map() {
        let g = Graph {
            nodes: vec![node("a", None), node("b", None)],
            edges: vec![edge("a", "b")],
        };
        assert!(positions(&g).is_none());
        // 30 nodes in a 1° box and one on the other side of the world.
        let mut nodes: Vec<Node> = (0..30)
            .map(|i| {
                node(
                    &format!("n{i:02}"),
                    Some((10.0 + f64::from(i) / 30.0, 50.0 + f64::from(i % 5) / 50.0)),
                )
            })
            .collect();
        nodes.push(node("z", Some((-150.0, -40.0))));
        let g = Graph {
            nodes,
            edges: vec![],
        };
        let p = positions(&g).unwrap();
        let xs: Vec<f64> = p.iter().map(|q| q.0).collect();
        let width = xs.iter().copied().fold(f64::MIN, f64::max)
            - xs.iter().copied().fold(f64::MAX, f64::min);
        assert!(
            width <= extent(31) * 1.000_001,
            "the outlier does not stretch the map: {width}"
        );
        assert!(width >= extent(31) * 0.8, "the bulk fills it: {width}");
    }
}
