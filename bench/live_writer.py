#!/usr/bin/env python3
"""Live-writer probe: behaves like the CoreScope ingestor while a command runs.

One connection, WAL, busy_timeout 5000 ms. Every 1/RATE seconds it writes one
packet in one BEGIN IMMEDIATE transaction: a transmissions row (a valid MeshCore
REQ packet with its content hash) and 1-3 observations of it. It measures each
transaction from BEGIN to COMMIT (lock wait included) and counts failures
(SQLITE_BUSY after the timeout, or any other error).

Stops on SIGTERM/SIGINT or after --seconds, then writes one JSON object:
{"inserted", "failures", "max_ms", "p99_ms", "p50_ms", "seconds", "rate", "errors"}
to --out (or stdout). --ready FILE is created once the first insert committed.
"""

import argparse
import hashlib
import json
import os
import random
import signal
import sqlite3
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--seconds", type=float, default=3600.0)
    ap.add_argument("--out")
    ap.add_argument("--ready")
    ap.add_argument("--start-epoch", type=int, default=int(time.time()))
    a = ap.parse_args()

    stop = {"flag": False}

    def on_signal(_sig, _frm):
        stop["flag"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    conn = sqlite3.connect(a.db, timeout=5.0, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA foreign_keys = ON")
    n_observers = conn.execute("SELECT COUNT(*) FROM observers").fetchone()[0] or 1

    rnd = random.Random(os.getpid())
    lat = []
    failures = 0
    errors = {}
    inserted = 0
    interval = 1.0 / a.rate
    t0 = time.monotonic()
    i = 0
    while not stop["flag"] and time.monotonic() - t0 < a.seconds:
        due = t0 + i * interval
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
            if stop["flag"]:
                break
        i += 1
        payload = bytes([rnd.randrange(256) for _ in range(20)])
        raw = bytes([0x02, 0x00]) + payload  # DIRECT REQ, zero hops
        h = hashlib.sha256(bytes([0]) + payload).hexdigest()[:16]
        ts = a.start_epoch + i // int(max(a.rate, 1))
        first_seen = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
        decoded = json.dumps(
            {
                "type": "REQ",
                "destHash": payload[0:1].hex(),
                "srcHash": payload[1:2].hex(),
                "mac": payload[2:4].hex(),
                "encryptedData": payload[4:].hex(),
            },
            separators=(",", ":"),
        )
        started = time.monotonic()
        try:
            conn.execute("BEGIN IMMEDIATE")
            cur = conn.execute(
                "INSERT INTO transmissions (raw_hex, hash, first_seen, route_type, payload_type, payload_version, decoded_json) "
                "VALUES (?, ?, ?, 2, 0, 0, ?)",
                (raw.hex(), h, first_seen, decoded),
            )
            tx_id = cur.lastrowid
            for k in range(rnd.randint(1, 3)):
                conn.execute(
                    "INSERT INTO observations (transmission_id, observer_idx, direction, snr, rssi, score, path_json, timestamp) "
                    "VALUES (?, ?, 'rx', ?, ?, 500, ?, ?)",
                    (
                        tx_id,
                        1 + (rnd.randrange(n_observers) + k) % n_observers,
                        rnd.randint(-60, 48) / 4.0,
                        float(rnd.randint(-125, -50)),
                        json.dumps(["%02X" % rnd.randrange(256)]) if k else "[]",
                        ts,
                    ),
                )
            conn.execute("COMMIT")
            inserted += 1
            if inserted == 1 and a.ready:
                open(a.ready, "w").close()
        except sqlite3.Error as e:
            failures += 1
            key = str(e)
            errors[key] = errors.get(key, 0) + 1
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
        lat.append((time.monotonic() - started) * 1000.0)

    elapsed = time.monotonic() - t0
    s = sorted(lat)

    def pct(p):
        if not s:
            return 0.0
        return round(s[min(len(s) - 1, int(p / 100.0 * len(s)))], 1)

    out = {
        "inserted": inserted,
        "failures": failures,
        "max_ms": round(s[-1], 1) if s else 0.0,
        "p99_ms": pct(99),
        "p50_ms": pct(50),
        "seconds": round(elapsed, 1),
        "rate": round(len(lat) / elapsed, 1) if elapsed > 0 else 0.0,
        "errors": errors,
    }
    text = json.dumps(out)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    else:
        print(text)
    conn.close()


if __name__ == "__main__":
    sys.exit(main())
