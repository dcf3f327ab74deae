#!/usr/bin/env python3
"""Benchmark of `corescope backfill` (issue 4). Not a test.

Builds a synthetic CoreScope database (seed core tables upgraded by
`corescope migrate`, WAL mode) with N ADVERT transmissions whose
`from_pubkey` is NULL, each with one observation carrying its own `raw_hex`
and no `path_json`, then reports:
  - `backfill from-pubkey` wall time ÷ the time of one
    `UPDATE transmissions SET from_pubkey = json_extract(decoded_json,'$.pubKey') WHERE …`
    in the sqlite3 CLI on an identical copy (goal <= 2.0);
  - `backfill path-json` rows/s;
  - `backfill resolved-path` rows/s (against 3 000 nodes, no edges);
  - peak RSS of each run (goal <= 64 MB) via GNU time;
  - max_lock_hold_ms of each run (goal <= 200).

Usage: scripts/bench_backfill.py [--rows 1000000] [--bin target/release/corescope]
       [--dir /tmp/cs-bench-backfill] [--keep]
"""
import argparse
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time

SEED_CORE = """
CREATE TABLE nodes (public_key TEXT PRIMARY KEY, name TEXT, role TEXT, lat REAL, lon REAL, last_seen TEXT, first_seen TEXT, advert_count INTEGER DEFAULT 0, battery_mv INTEGER, temperature_c REAL, foreign_advert INTEGER DEFAULT 0);
CREATE TABLE observers (id TEXT PRIMARY KEY, name TEXT, iata TEXT, last_seen TEXT, first_seen TEXT, packet_count INTEGER DEFAULT 0, model TEXT, firmware TEXT, client_version TEXT, radio TEXT, battery_mv INTEGER, uptime_secs INTEGER, noise_floor REAL, inactive INTEGER DEFAULT 0, last_packet_at TEXT DEFAULT NULL);
CREATE TABLE transmissions (id INTEGER PRIMARY KEY AUTOINCREMENT, raw_hex TEXT NOT NULL, hash TEXT NOT NULL UNIQUE, first_seen TEXT NOT NULL, route_type INTEGER, payload_type INTEGER, payload_version INTEGER, decoded_json TEXT, from_pubkey TEXT, created_at TEXT DEFAULT (datetime('now')));
CREATE TABLE observations (id INTEGER PRIMARY KEY AUTOINCREMENT, transmission_id INTEGER NOT NULL REFERENCES transmissions(id), observer_idx INTEGER, direction TEXT, snr REAL, rssi REAL, score INTEGER, path_json TEXT, timestamp INTEGER NOT NULL, raw_hex TEXT);
"""

UPDATE_SQL = ("UPDATE transmissions SET from_pubkey = json_extract(decoded_json,'$.pubKey') "
              "WHERE payload_type = 4 AND from_pubkey IS NULL;")


def advert(rng, key, hops, size):
    name = ("node %d" % rng.randrange(10000)).encode()
    body = bytes.fromhex(key) + (1774805580).to_bytes(4, "little") + bytes(rng.getrandbits(8) for _ in range(64))
    app = bytes([0x92]) + (37658604).to_bytes(4, "little", signed=True) + (-122058554).to_bytes(4, "little", signed=True) + name
    path = b"".join(hops)
    return bytes([0x11, ((size - 1) << 6) | len(hops)]) + path + body + app


def populate(db, n, rng):
    c = sqlite3.connect(db)
    c.execute("PRAGMA synchronous = OFF")
    c.executescript(SEED_CORE)
    keys = ["%064x" % rng.getrandbits(256) for _ in range(3000)]
    c.executemany("INSERT INTO nodes (public_key, name) VALUES (?, 'n')", [(k,) for k in keys])
    c.execute("INSERT INTO observers (id, name) VALUES (?, 'o')", (keys[0].upper(),))
    batch_t, batch_o = [], []
    for i in range(1, n + 1):
        k = rng.choice(keys)
        size = rng.choice([1, 1, 2])
        hops = [bytes.fromhex(rng.choice(keys)[: 2 * size]) for _ in range(rng.randrange(0, 6))]
        raw = advert(rng, k, hops, size).hex().upper()
        dj = json.dumps({"type": "ADVERT", "pubKey": k, "timestamp": 1774805580,
                         "timestampISO": "2026-03-29T17:33:00.000Z", "signature": "00" * 64,
                         "flags": {"raw": 146, "type": 2, "chat": False, "repeater": True, "room": False,
                                   "sensor": False, "hasLocation": True, "hasName": True},
                         "lat": 37.658604, "lon": -122.058554, "name": "node"}, separators=(",", ":"))
        batch_t.append((i, raw, "%016x" % i, "2026-03-29T17:33:00Z", dj))
        batch_o.append((i, i, raw))
        if len(batch_t) >= 50_000:
            flush(c, batch_t, batch_o)
            batch_t, batch_o = [], []
    flush(c, batch_t, batch_o)
    c.commit()
    c.close()


def flush(c, bt, bo):
    c.executemany("INSERT INTO transmissions (id, raw_hex, hash, first_seen, route_type, payload_type, decoded_json) "
                  "VALUES (?,?,?,?,1,4,?)", bt)
    c.executemany("INSERT INTO observations (id, transmission_id, observer_idx, path_json, timestamp, raw_hex) "
                  "VALUES (?,?,1,NULL,1774805580,?)", bo)


def run_timed(cmd, stdin=None):
    rss_file = "/tmp/cs-bench-backfill-rss.%d" % os.getpid()
    wrapped = (["/usr/bin/time", "-f", "%M", "-o", rss_file] + cmd) if os.path.exists("/usr/bin/time") else cmd
    t0 = time.perf_counter()
    p = subprocess.run(wrapped, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit("failed: %s\n%s" % (" ".join(cmd), p.stderr.decode()))
    rss = None
    if os.path.exists(rss_file):
        with open(rss_file) as f:
            rss = int(f.read().strip().splitlines()[-1])
        os.remove(rss_file)
    return dt, p, rss


def copy_db(src, dst):
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(dst + suffix):
            os.remove(dst + suffix)
    shutil.copyfile(src, dst)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--bin", default="target/release/corescope")
    ap.add_argument("--dir", default="/tmp/cs-bench-backfill")
    ap.add_argument("--keep", action="store_true", help="reuse an existing base database of the same size")
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    base = os.path.join(a.dir, "base-%d.db" % a.rows)
    if not (a.keep and os.path.exists(base)):
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(base + suffix):
                os.remove(base + suffix)
        t0 = time.perf_counter()
        populate(base, a.rows, random.Random(42))
        subprocess.run([a.bin, "migrate", "--db", base, "-q"], check=True)
        c = sqlite3.connect(base)
        c.execute("PRAGMA journal_mode = WAL")
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        c.close()
        print("built %s (%d ADVERTs) in %.1f s" % (base, a.rows, time.perf_counter() - t0))

    work = os.path.join(a.dir, "work.db")
    ref = os.path.join(a.dir, "ref.db")
    copy_db(base, ref)
    t_sql, _, rss_sql = run_timed(["sqlite3", ref], stdin=UPDATE_SQL.encode())
    copy_db(base, work)
    results = {"rows": a.rows, "sqlite3_update_s": round(t_sql, 3), "sqlite3_rss_kib": rss_sql}
    for task in ["from-pubkey", "path-json", "resolved-path"]:
        dt, p, rss = run_timed([a.bin, "--json", "backfill", task, "--db", work])
        rep = json.loads(p.stdout)
        t = rep["tasks"][task]
        results[task] = {
            "seconds": round(dt, 3),
            "rows_per_s": round(t["scanned"] / dt) if dt > 0 else None,
            "scanned": t["scanned"],
            "updated": t["updated"],
            "max_lock_hold_ms": rep["max_lock_hold_ms"],
            "peak_rss_kib": rss,
        }
    results["from_pubkey_ratio"] = round(results["from-pubkey"]["seconds"] / t_sql, 2) if t_sql > 0 else None
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
