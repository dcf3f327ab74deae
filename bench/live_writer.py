#!/usr/bin/env python3
"""Live-writer probe: behaves like the CoreScope ingestor while a command runs.

The ingestor puts each MQTT message into a FIFO and one consumer writes the
packets one transaction each, on one connection (WAL, busy_timeout 5000 ms,
SQLite's default `synchronous`). This probe models exactly that:

- packets *arrive* at a fixed rate (--rate, default 100/s) into a queue,
  whatever happens to the writer;
- one consumer takes the oldest packet and writes it in one BEGIN IMMEDIATE
  transaction (a transmissions row, a valid MeshCore REQ packet with its
  content hash, then 1-3 observations through the ingestor's observation
  UPSERT), as fast as the lock allows; it sleeps only when the queue is empty.

So a writer held up by a lock *falls behind* and must catch up: the figure
that matters is each packet's delay from arrival to commit. After SIGTERM /
SIGINT (or --seconds) no more packets arrive; the queue is drained (at most
--drain-seconds more), then every committed packet is looked up again
(rows lost must be 0), and one JSON object is written to --out (or stdout):

  inserted, failures, lost, max_ms / p99_ms / p50_ms (arrival-to-commit delay
  of committed packets), max_backlog (packets waiting, largest), backlog_at_stop
  (packets waiting when the command had ended and the probe was stopped),
  drained (the queue was empty again before the stop), begin_wait / insert /
  commit {max, p99, mean} ms, seconds, rate, errors, upsert (the observation
  statement was the ingestor's UPSERT; false on a table without the dedup
  index, e.g. a seed database before `migrate`, where a plain INSERT is used),
  t0_monotonic (the probe's start, CLOCK_MONOTONIC seconds: the trace's zero).

--trace FILE writes one CSV line per packet: seq, arrival, start (both ms
since the probe's start), begin_wait_ms, insert_ms, commit_ms, delay_ms,
backlog (at its start), ok. --ready FILE is created once the first packet
committed.
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

# The columns the ingestor's observation UPSERT merges on a dedup-key conflict
# (a later copy's non-NULL value wins); every other column keeps the first row's.
MERGED = ["snr", "rssi", "score", "raw_hex", "resolved_path"]


def observation_sql(conn):
    cols = [r[1] for r in conn.execute("PRAGMA table_info(observations)")]
    names = ["transmission_id", "observer_idx", "direction", "snr", "rssi", "score", "path_json", "timestamp"]
    names += [c for c in ("raw_hex", "resolved_path") if c in cols]
    values = ", ".join("?" for _ in names)
    plain = f"INSERT INTO observations ({', '.join(names)}) VALUES ({values})"
    merged = ", ".join(f"{c} = COALESCE(excluded.{c}, {c})" for c in MERGED if c in cols)
    upsert = plain + f" ON CONFLICT(transmission_id, observer_idx, COALESCE(path_json, '')) DO UPDATE SET {merged}"
    try:
        conn.execute("EXPLAIN " + upsert, [None] * len(names))
        return upsert, names, True
    except sqlite3.Error:
        return plain, names, False


def percentile(s, p):
    """The p-th percentile of the sorted list `s` (0.0 when empty): the
    value at index p % of its length (also used by trace_report.py)."""
    return s[min(len(s) - 1, int(p / 100.0 * len(s)))] if s else 0.0


def stats(xs):
    if not xs:
        return {"max": 0.0, "p99": 0.0, "mean": 0.0}
    s = sorted(xs)
    return {
        "max": round(s[-1], 1),
        "p99": round(percentile(s, 99), 1),
        "mean": round(sum(s) / len(s), 2),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True)
    ap.add_argument("--rate", type=float, default=100.0, help="packets arriving per second")
    ap.add_argument("--seconds", type=float, default=3600.0)
    ap.add_argument("--drain-seconds", type=float, default=30.0)
    ap.add_argument("--out")
    ap.add_argument("--ready")
    ap.add_argument("--trace")
    ap.add_argument("--start-epoch", type=int, default=int(time.time()))
    ap.add_argument(
        "--wal-autocheckpoint",
        type=int,
        help="PRAGMA wal_autocheckpoint for the probe's connection (default: SQLite's 1000, as the ingestor)",
    )
    a = ap.parse_args()

    stop = {"at": None}

    def on_signal(_sig, _frm):
        if stop["at"] is None:
            stop["at"] = time.monotonic()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    # Python's sqlite3 sets the busy timeout through sqlite3_busy_timeout:
    # SQLite's default busy handler, as in the ingestor's driver.
    conn = sqlite3.connect(a.db, timeout=5.0, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA foreign_keys = ON")
    if a.wal_autocheckpoint is not None:
        conn.execute(f"PRAGMA wal_autocheckpoint = {int(a.wal_autocheckpoint)}")
    n_observers = conn.execute("SELECT COUNT(*) FROM observers").fetchone()[0] or 1
    obs_sql, obs_cols, upsert = observation_sql(conn)

    rnd = random.Random(os.getpid())
    interval = 1.0 / a.rate
    t0 = time.monotonic()
    written = 0  # packets taken from the queue (committed or failed)
    committed = []  # hashes
    delays, begin_w, ins_t, com_t = [], [], [], []
    failures = 0
    errors = {}
    max_backlog = 0
    backlog_at_stop = None
    empty_after_stop = False
    trace = open(a.trace, "w") if a.trace else None
    if trace:
        trace.write("seq,arrival_ms,start_ms,begin_wait_ms,insert_ms,commit_ms,delay_ms,backlog,ok\n")

    def arrived(now):
        """Packets arrived by `now` (arrivals stop at the stop signal / --seconds)."""
        end = now
        if stop["at"] is not None:
            end = min(end, stop["at"])
        end = min(end, t0 + a.seconds)
        return int((end - t0) / interval) + 1 if end >= t0 else 0

    while True:
        now = time.monotonic()
        n_arrived = arrived(now)
        stopped = stop["at"] is not None or now - t0 >= a.seconds
        if stopped and backlog_at_stop is None:
            backlog_at_stop = n_arrived - written
        if written >= n_arrived:
            if stopped:
                empty_after_stop = True
                break
            # Queue empty: wait for the next arrival.
            time.sleep(max(0.0, t0 + written * interval - now))
            continue
        if stopped and now - (stop["at"] or now) > a.drain_seconds:
            break
        backlog = n_arrived - written
        max_backlog = max(max_backlog, backlog)
        seq = written
        written += 1
        arrival = t0 + seq * interval
        payload = bytes([rnd.randrange(256) for _ in range(20)])
        raw = bytes([0x02, 0x00]) + payload  # DIRECT REQ, zero hops
        h = hashlib.sha256(bytes([0]) + payload).hexdigest()[:16]
        ts = a.start_epoch + int(seq * interval)
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
        start = time.monotonic()
        t_begin = t_ins = t_com = start
        ok = False
        try:
            conn.execute("BEGIN IMMEDIATE")
            t_begin = time.monotonic()
            cur = conn.execute(
                "INSERT INTO transmissions (raw_hex, hash, first_seen, route_type, payload_type, payload_version, decoded_json) "
                "VALUES (?, ?, ?, 2, 0, 0, ?)",
                (raw.hex(), h, first_seen, decoded),
            )
            tx_id = cur.lastrowid
            for k in range(rnd.randint(1, 3)):
                row = {
                    "transmission_id": tx_id,
                    "observer_idx": 1 + (rnd.randrange(n_observers) + k) % n_observers,
                    "direction": "rx",
                    "snr": rnd.randint(-60, 48) / 4.0,
                    "rssi": float(rnd.randint(-125, -50)),
                    "score": 500,
                    "path_json": json.dumps(["%02X" % rnd.randrange(256)]) if k else "[]",
                    "timestamp": ts,
                    "raw_hex": raw.hex(),
                    "resolved_path": None,
                }
                conn.execute(obs_sql, [row[c] for c in obs_cols])
            t_ins = time.monotonic()
            conn.execute("COMMIT")
            t_com = time.monotonic()
            ok = True
            committed.append(h)
            if len(committed) == 1 and a.ready:
                open(a.ready, "w").close()
        except sqlite3.Error as e:
            failures += 1
            key = str(e)
            errors[key] = errors.get(key, 0) + 1
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
        end = time.monotonic()
        if ok:
            delays.append((end - arrival) * 1000.0)
            begin_w.append((t_begin - start) * 1000.0)
            ins_t.append((t_ins - t_begin) * 1000.0)
            com_t.append((t_com - t_ins) * 1000.0)
        if trace:
            trace.write(
                f"{seq},{(arrival - t0) * 1000:.1f},{(start - t0) * 1000:.1f},{(t_begin - start) * 1000:.2f},"
                f"{(t_ins - t_begin) * 1000:.2f},{(t_com - t_ins) * 1000:.2f},{(end - arrival) * 1000:.1f},{backlog},{int(ok)}\n"
            )

    elapsed = time.monotonic() - t0
    # Rows lost: committed packets that are not in the database any more.
    lost = 0
    for i in range(0, len(committed), 500):
        chunk = committed[i : i + 500]
        q = ",".join("?" for _ in chunk)
        found = conn.execute(f"SELECT count(*) FROM transmissions WHERE hash IN ({q})", chunk).fetchone()[0]
        lost += len(chunk) - found
    s = sorted(delays)

    out = {
        "inserted": len(committed),
        "failures": failures,
        "lost": lost,
        "max_ms": round(s[-1], 1) if s else 0.0,
        "p99_ms": round(percentile(s, 99), 1),
        "p50_ms": round(percentile(s, 50), 1),
        "max_backlog": max_backlog,
        "backlog_at_stop": backlog_at_stop or 0,
        "drained": bool(empty_after_stop and (backlog_at_stop or 0) <= 1),
        "begin_wait": stats(begin_w),
        "insert": stats(ins_t),
        "commit": stats(com_t),
        "seconds": round(elapsed, 1),
        "rate": a.rate,
        "upsert": upsert,
        "errors": errors,
        # The trace's times are milliseconds since this instant
        # (CLOCK_MONOTONIC seconds, as Python's time.monotonic()).
        "t0_monotonic": t0,
    }
    if trace:
        trace.close()
    text = json.dumps(out)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    else:
        print(text)
    conn.close()


if __name__ == "__main__":
    sys.exit(main())
