#!/usr/bin/env python3
"""Benchmark of `corescope build-edges` (issue 3). Not a test.

Builds a synthetic CoreScope database with N observations (seed core tables
upgraded by `corescope migrate`), then reports in one run:
  - `build-edges --rebuild` wall time ÷ the time the sqlite3 CLI takes to
    output the same joined SELECT (goal <= 1.5);
  - one incremental tick with 1 000 new observations, as a fraction of the
    full scan (goal <= 1 %);
  - peak RSS of the rebuild (goal <= 64 MB), via /usr/bin/time -v or
    getrusage of the child;
  - max_lock_hold_ms reported by the rebuild and the tick (goal <= 200).

Usage: scripts/bench_build_edges.py [--observations 1000000] [--topology mesh|random]
       [--bin target/release/corescope] [--dir /tmp/cs-bench] [--keep]
"""
import argparse
import json
import os
import random
import sqlite3
import subprocess
import sys
import time

SEED_CORE = """
CREATE TABLE nodes (public_key TEXT PRIMARY KEY, name TEXT, role TEXT, lat REAL, lon REAL, last_seen TEXT, first_seen TEXT, advert_count INTEGER DEFAULT 0, battery_mv INTEGER, temperature_c REAL, foreign_advert INTEGER DEFAULT 0);
CREATE TABLE observers (id TEXT PRIMARY KEY, name TEXT, iata TEXT, last_seen TEXT, first_seen TEXT, packet_count INTEGER DEFAULT 0, model TEXT, firmware TEXT, client_version TEXT, radio TEXT, battery_mv INTEGER, uptime_secs INTEGER, noise_floor REAL, inactive INTEGER DEFAULT 0, last_packet_at TEXT DEFAULT NULL);
CREATE TABLE transmissions (id INTEGER PRIMARY KEY AUTOINCREMENT, raw_hex TEXT NOT NULL, hash TEXT NOT NULL UNIQUE, first_seen TEXT NOT NULL, route_type INTEGER, payload_type INTEGER, payload_version INTEGER, decoded_json TEXT, from_pubkey TEXT, created_at TEXT DEFAULT (datetime('now')));
CREATE TABLE observations (id INTEGER PRIMARY KEY AUTOINCREMENT, transmission_id INTEGER NOT NULL REFERENCES transmissions(id), observer_idx INTEGER, direction TEXT, snr REAL, rssi REAL, score INTEGER, path_json TEXT, timestamp INTEGER NOT NULL);
CREATE UNIQUE INDEX idx_observations_dedup ON observations(transmission_id, observer_idx, COALESCE(path_json, ''));
"""

# The scan of build-edges (src/commands/build_edges.rs SCAN_SQL) without the
# id range, i.e. the same joined rows.
JOINED_SELECT = """SELECT o.id, o.timestamp, o.path_json, t.payload_type,
       CASE WHEN t.payload_type = 4 THEN t.from_pubkey END,
       CASE WHEN t.payload_type = 4 AND (t.from_pubkey IS NULL OR t.from_pubkey = '') THEN t.decoded_json END,
       ob.id
  FROM observations o
  LEFT JOIN transmissions t ON t.id = o.transmission_id
  LEFT JOIN observers ob ON ob.rowid = o.observer_idx
 ORDER BY o.id;"""


def rand_key(rng):
    return "%064x" % rng.getrandbits(256)


def mesh(rng, n, k=6, n_obs=60):
    """Positions in a unit square, k nearest neighbours (symmetric), and for
    every node its 2 nearest observers (observers = the first n_obs nodes)."""
    pos = [(rng.random(), rng.random()) for _ in range(n)]
    cell = 0.05
    grid = {}
    for i, (x, y) in enumerate(pos):
        grid.setdefault((int(x / cell), int(y / cell)), []).append(i)

    def near(i, pool_filter, want):
        x, y = pos[i]
        r = 1
        while True:
            cx, cy = int(x / cell), int(y / cell)
            cand = [j for gx in range(cx - r, cx + r + 1) for gy in range(cy - r, cy + r + 1)
                    for j in grid.get((gx, gy), []) if j != i and pool_filter(j)]
            if len(cand) >= want or r > 25:
                cand.sort(key=lambda j: (pos[j][0] - x) ** 2 + (pos[j][1] - y) ** 2)
                return cand[:want]
            r += 1

    nbrs = [set() for _ in range(n)]
    for i in range(n):
        for j in near(i, lambda j: True, k):
            nbrs[i].add(j)
            nbrs[j].add(i)
    nearest_obs = [near(i, lambda j: j < n_obs, 2) or [0] for i in range(n)]
    return pos, [sorted(s) for s in nbrs], nearest_obs


def populate(db, n_obs, rng, topology="mesh", start_ts=1_779_000_000):
    c = sqlite3.connect(db)
    c.execute("PRAGMA synchronous = OFF")
    keys = [rand_key(rng) for _ in range(3000)]
    pos, nbrs, nearest_obs = mesh(rng, len(keys))
    c.executemany(
        "INSERT INTO nodes (public_key, name, role, lat, lon, last_seen, first_seen) VALUES (?,?,?,?,?,?,?)",
        [(k, "node %d" % i, "repeater", 37 + pos[i][1], -122 + pos[i][0],
          "2026-05-17T18:12:01Z", "2026-05-01T00:00:00Z") for i, k in enumerate(keys)],
    )
    obs_keys = keys[:60]
    c.executemany(
        "INSERT INTO observers (id, name, last_seen, first_seen) VALUES (?,?,?,?)",
        [(k.upper(), "obs %d" % i, "2026-05-17T18:12:01Z", "2026-05-01T00:00:00Z") for i, k in enumerate(obs_keys)],
    )
    n_tx = max(1, n_obs // 4)
    txs = []
    srcs = []
    for i in range(n_tx):
        pt = rng.choice([4, 4, 5, 5, 5, 2, 1, 9])
        src = rng.randrange(len(keys))
        srcs.append(src)
        frm = keys[src] if pt == 4 else None
        txs.append(("11", "%016x" % (i + 1), "2026-05-17T18:12:01Z", 1, pt, None, frm))
    c.executemany(
        "INSERT INTO transmissions (raw_hex, hash, first_seen, route_type, payload_type, decoded_json, from_pubkey) VALUES (?,?,?,?,?,?,?)",
        txs,
    )
    batch = []
    made = 0
    seen = set()
    while made < n_obs:
        t = made // 4 + 1
        size = rng.choice([1, 1, 1, 2, 2, 3])
        if topology == "mesh":
            # A random walk from the originator; heard by an observer near the last hop.
            node = srcs[t - 1]
            hops = []
            for _ in range(rng.randrange(0, 6)):
                node = rng.choice(nbrs[node])
                hops.append(keys[node][: 2 * size].upper())
            ob = rng.choice(nearest_obs[node]) + 1
        else:
            ob = rng.randrange(1, len(obs_keys) + 1)
            hops = [rng.choice(keys)[: 2 * size].upper() for _ in range(rng.randrange(0, 6))]
        pj = json.dumps(hops, separators=(",", ":"))
        if (t, ob, pj) in seen:
            continue
        seen.add((t, ob, pj))
        batch.append((t, ob, pj, start_ts + made // 10))
        made += 1
        if len(batch) >= 50_000:
            c.executemany("INSERT INTO observations (transmission_id, observer_idx, path_json, timestamp) VALUES (?,?,?,?)", batch)
            batch = []
            seen = set()
    if batch:
        c.executemany("INSERT INTO observations (transmission_id, observer_idx, path_json, timestamp) VALUES (?,?,?,?)", batch)
    c.commit()
    c.close()
    return keys, n_tx


def add_new(db, n, rng):
    """n new observations (of n/4 new transmissions), like one minute of traffic."""
    c = sqlite3.connect(db)
    keys = [r[0] for r in c.execute("SELECT public_key FROM nodes LIMIT 3000")]
    max_tx = c.execute("SELECT MAX(id) FROM transmissions").fetchone()[0]
    max_ts = c.execute("SELECT MAX(timestamp) FROM observations").fetchone()[0]
    n_tx = max(1, n // 4)
    c.executemany(
        "INSERT INTO transmissions (raw_hex, hash, first_seen, route_type, payload_type, from_pubkey) VALUES (?,?,?,?,?,?)",
        [("11", "new%013x" % (max_tx + i + 1), "2026-05-17T18:12:01Z", 1, 4 if i % 3 == 0 else 5,
          rng.choice(keys) if i % 3 == 0 else None) for i in range(n_tx)],
    )
    rows, seen = [], set()
    while len(rows) < n:
        t = max_tx + 1 + rng.randrange(n_tx)
        ob = rng.randrange(1, 61)
        hops = [rng.choice(keys)[: 2 * rng.choice([1, 1, 2])].upper() for _ in range(rng.randrange(0, 5))]
        pj = json.dumps(hops, separators=(",", ":"))
        if (t, ob, pj) in seen:
            continue
        seen.add((t, ob, pj))
        rows.append((t, ob, pj, max_ts + 1 + len(rows) // 20))
    c.executemany("INSERT INTO observations (transmission_id, observer_idx, path_json, timestamp) VALUES (?,?,?,?)", rows)
    c.commit()
    c.close()


def run_timed(cmd, stdout=subprocess.PIPE):
    """Wall time, the completed process, and peak RSS in KiB (GNU time)."""
    rss_file = "/tmp/cs-bench-rss.%d" % os.getpid()
    wrapped = (["/usr/bin/time", "-f", "%M", "-o", rss_file] + cmd) if os.path.exists("/usr/bin/time") else cmd
    t0 = time.perf_counter()
    p = subprocess.run(wrapped, stdout=stdout, stderr=subprocess.PIPE, check=False)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit("failed: %s\n%s" % (" ".join(cmd), p.stderr.decode()))
    rss = None
    if os.path.exists(rss_file):
        with open(rss_file) as f:
            rss = int(f.read().strip().splitlines()[-1])
        os.remove(rss_file)
    return dt, p, rss


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--observations", type=int, default=1_000_000)
    ap.add_argument("--bin", default="target/release/corescope")
    ap.add_argument("--dir", default="/tmp/cs-bench")
    ap.add_argument("--keep", action="store_true", help="reuse an existing database of the same size")
    ap.add_argument("--topology", choices=["mesh", "random"], default="mesh",
                    help="mesh: random walks over a 6-nearest-neighbour graph (realistic edge counts); "
                         "random: every hop a random node (worst case: very many distinct edges)")
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    db = os.path.join(a.dir, "bench-%s-%d.db" % (a.topology, a.observations))
    rng = random.Random(42)
    if not (a.keep and os.path.exists(db)):
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(db + suffix):
                os.remove(db + suffix)
        c = sqlite3.connect(db)
        c.execute("PRAGMA journal_mode = WAL")
        c.executescript(SEED_CORE)
        c.close()
        t0 = time.perf_counter()
        populate(db, a.observations, rng, a.topology)
        subprocess.run([a.bin, "migrate", "--db", db], check=True, stdout=subprocess.DEVNULL)
        print("built %s (%d observations) in %.1f s" % (db, a.observations, time.perf_counter() - t0))
    # Warm the page cache once for both contenders.
    subprocess.run(["sqlite3", db, "SELECT count(*) FROM observations;"], check=True, stdout=subprocess.DEVNULL)

    t_cli, _, _ = run_timed(["sqlite3", db, JOINED_SELECT], stdout=subprocess.DEVNULL)
    t_cli2, _, _ = run_timed(["sqlite3", db, JOINED_SELECT], stdout=subprocess.DEVNULL)
    t_cli = min(t_cli, t_cli2)

    # Work on a copy so that --keep reruns start from the same state.
    work = os.path.join(a.dir, "work.db")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(work + suffix):
            os.remove(work + suffix)
    subprocess.run(["sqlite3", db, "PRAGMA wal_checkpoint(TRUNCATE);"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cp", db, work], check=True)
    db = work
    t_rb, p, rss = run_timed([a.bin, "--json", "build-edges", "--rebuild", "--db", db])
    rb = json.loads(p.stdout)
    add_new(db, 1000, rng)
    t_tick, p, _ = run_timed([a.bin, "--json", "build-edges", "--db", db])
    tick = json.loads(p.stdout)

    print("observations:            %d (%s topology)" % (a.observations, a.topology))
    print("sqlite3 CLI joined SELECT: %.2f s" % t_cli)
    print("build-edges --rebuild:   %.2f s  (ratio %.2f, goal <= 1.5)" % (t_rb, t_rb / t_cli))
    print("  edges: %s, batches: %s, max_lock_hold_ms: %s (goal <= 200)" % (rb["edges_total"], rb["batches"], rb["max_lock_hold_ms"]))
    print("  peak RSS: %s (goal <= 64 MB)" % ("%.1f MB" % (rss / 1024) if rss else "n/a"))
    print("incremental tick (1000 new): %.3f s (%.2f %% of the rebuild, goal <= 1 %%), %s candidates, %s edges upserted, max_lock_hold_ms %s" % (
        t_tick, 100 * t_tick / t_rb, tick["candidates"], tick["edges_upserted"], tick["max_lock_hold_ms"]))
    print(json.dumps({"observations": a.observations, "topology": a.topology, "cli_s": round(t_cli, 3), "rebuild_s": round(t_rb, 3),
                      "ratio": round(t_rb / t_cli, 3), "tick_s": round(t_tick, 4),
                      "tick_pct": round(100 * t_tick / t_rb, 3), "rebuild_max_lock_hold_ms": rb["max_lock_hold_ms"],
                      "tick_max_lock_hold_ms": tick["max_lock_hold_ms"],
                      "peak_rss_mb": round(rss / 1024, 1) if rss else None}))


if __name__ == "__main__":
    main()
