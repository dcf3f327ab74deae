#!/usr/bin/env python3
"""Line up the live-writer probe's per-packet trace with corescope's own log.

What it answers: when a packet waited long, what was corescope doing, and
which part of the packet's transaction was slow (waiting for the lock, or
its own COMMIT, where SQLite runs the writer's automatic checkpoint).

Two steps (both clocks are CLOCK_MONOTONIC, shared by all processes):

  # 1. run a command beside the probe, its -vv log stamped line by line
  python3 bench/live_writer.py --db DB --out probe.json --trace probe.csv &
  RUST_LOG=trace corescope --db DB -vv prune ... 2>&1 >/dev/null \\
      | python3 bench/trace_report.py stamp corescope.log
  kill -TERM %1; wait

  # 2. the report
  python3 bench/trace_report.py report --probe probe.json --trace probe.csv --log corescope.log

The report counts the probe's packets that arrived while the command ran:
their delay, lock wait and COMMIT times; corescope's transactions (lock
holds), the time it left the lock free (pause, then yielding), its
checkpoints (each with the catch-up rounds that follow it); the packets
whose COMMIT took over 20 ms, by whether a corescope transaction or
checkpoint overlapped it; and, for every
corescope checkpoint, whether the probe committed during it and whether the
probe's next COMMIT after it was slow. `--show N` prints the N slowest
packets with corescope's events around them.
"""

import argparse
import bisect
import csv
import json
import re
import sys
import time

from live_writer import percentile

HOLD = re.compile(r"held the lock ([\d.]+) ms")
FREE = re.compile(r"lock left free for ([\d.]+) ms \(pause (\d+) ms, then ([\d.]+) ms")
CKPT = re.compile(r"left (\d+) WAL frames: (-?\d+) of (-?\d+) copied in ([\d.]+) ms")
CATCH_UP = re.compile(r"(\d+) catch-up checkpoint\(s\) .* ([\d.]+) ms since the first began: (-?\d+) of (-?\d+) copied")
SLOW_COMMIT_MS = 20.0


def stamp(out):
    with open(out, "w") as f:
        for line in sys.stdin:
            f.write(f"{time.monotonic():.6f} {line}")
            f.flush()


def summary(name, values):
    if not values:
        return f"{name}: none"
    s = sorted(values)
    return (
        f"{name}: n={len(s)} p50={percentile(s, 50):.1f} p90={percentile(s, 90):.1f} "
        f"p99={percentile(s, 99):.1f} max={s[-1]:.1f} ms"
    )


def report(a):
    t0 = json.load(open(a.probe))["t0_monotonic"]
    # holds: (start, end); frees: (free, pause, yielding); ckpts: (start, end, text); ms since the probe's start
    holds, frees, ckpts = [], [], []
    for line in open(a.log):
        ts, _, rest = line.partition(" ")
        try:
            t = (float(ts) - t0) * 1000.0
        except ValueError:
            continue
        if m := HOLD.search(rest):
            holds.append((t - float(m.group(1)), t))
        elif m := FREE.search(rest):
            frees.append((float(m.group(1)), float(m.group(2)), float(m.group(3))))
        elif m := CKPT.search(rest):
            ckpts.append((t - float(m.group(4)), t, f"{m.group(2)} of {m.group(3)} frames"))
        elif (m := CATCH_UP.search(rest)) and ckpts:
            # The catch-up rounds right after a checkpoint: one span with it.
            s, _, txt = ckpts[-1]
            ckpts[-1] = (s, t, f"{txt}, then {m.group(1)} catch-up round(s): {m.group(3)} of {m.group(4)}")
    if not holds:
        sys.exit("trace_report: no 'held the lock' lines in the log (run corescope with -vv)")
    first, last = holds[0][0], holds[-1][1]
    packets = []
    for r in csv.DictReader(open(a.trace)):
        start = float(r["start_ms"])
        locked = start + float(r["begin_wait_ms"])
        commit = locked + float(r["insert_ms"])
        packets.append(
            {
                "seq": int(r["seq"]),
                "arrival": float(r["arrival_ms"]),
                "start": start,
                "commit": commit,
                "end": commit + float(r["commit_ms"]),
                "wait": float(r["begin_wait_ms"]),
                "commit_ms": float(r["commit_ms"]),
                "delay": float(r["delay_ms"]),
                "backlog": int(r["backlog"]),
            }
        )
    during = [p for p in packets if first <= p["arrival"] <= last]
    print(f"corescope ran {(last - first) / 1000:.1f} s: {len(holds)} transactions, {len(ckpts)} checkpoints")
    print(summary("  lock hold", [e - s for s, e in holds]))
    if frees:
        print(summary("  lock left free", [f[0] for f in frees]))
        print(summary("    of which the pause", [f[1] for f in frees]))
        print(summary("    of which yielding", [f[2] for f in frees]))
    print(summary("  checkpoint", [e - s for s, e, _ in ckpts]))
    print(f"probe: {len(during)} packets arrived meanwhile")
    print(summary("  delay (arrival to commit)", [p["delay"] for p in during]))
    print(summary("  waiting for the lock", [p["wait"] for p in during]))
    print(summary("  COMMIT", [p["commit_ms"] for p in during]))
    over = [p for p in during if p["delay"] > 100.0]
    print(f"  delay over 100 ms: {len(over)} packets ({100.0 * len(over) / max(1, len(during)):.2f} %)")

    spans = sorted([(s, e, "corescope transaction") for s, e in holds] + [(s, e, "corescope checkpoint") for s, e, _ in ckpts])
    kinds = {}
    for p in during:
        if p["commit_ms"] <= SLOW_COMMIT_MS:
            continue
        overlap = sorted({k for s, e, k in spans if s < p["end"] and e > p["commit"]}) or ["nothing of corescope's"]
        key = " and ".join(overlap)
        kinds[key] = kinds.get(key, 0) + 1
    n_slow = sum(kinds.values())
    print(f"probe COMMITs over {SLOW_COMMIT_MS:.0f} ms: {n_slow}")
    for k, n in sorted(kinds.items(), key=lambda kv: -kv[1]):
        print(f"  overlapping {k}: {n}")

    # One writer: the probe's COMMITs follow each other, so their starts
    # and ends are both in order.
    commits = sorted((p["commit"], p["end"], p["commit_ms"]) for p in packets)
    starts = [c[0] for c in commits]
    ends = [c[1] for c in commits]
    table = {}
    for s, e, _ in ckpts:
        committed_during = bisect.bisect_right(ends, e) > bisect.bisect_right(ends, s)
        i = bisect.bisect_left(starts, e)
        next_slow = i < len(commits) and commits[i][2] > SLOW_COMMIT_MS
        key = (committed_during, next_slow)
        table[key] = table.get(key, 0) + 1
    print("corescope checkpoints, by whether the probe committed during one / its next COMMIT after it was slow:")
    for (during_ck, slow), n in sorted(table.items()):
        print(f"  committed during: {'yes' if during_ck else 'no '}  next COMMIT slow: {'yes' if slow else 'no '}  {n}")

    if a.show:
        events = sorted(
            [(s, f"corescope transaction {s:9.1f} - {e:9.1f} ({e - s:.1f} ms)") for s, e in holds]
            + [(s, f"corescope checkpoint  {s:9.1f} - {e:9.1f} ({e - s:.1f} ms, {txt})") for s, e, txt in ckpts]
        )
        times = [t for t, _ in events]
        for p in sorted(during, key=lambda p: -p["delay"])[: a.show]:
            print(
                f"\npacket {p['seq']}: arrived {p['arrival']:.1f}, started {p['start']:.1f}, "
                f"lock after {p['wait']:.1f} ms, COMMIT {p['commit']:.1f} - {p['end']:.1f} ({p['commit_ms']:.1f} ms), "
                f"delay {p['delay']:.1f} ms, backlog {p['backlog']}"
            )
            i = bisect.bisect_left(times, p["arrival"] - 150.0)
            j = bisect.bisect_right(times, p["end"] + 20.0)
            for _, text in events[i:j]:
                print(f"    {text}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    st = sub.add_parser("stamp", help="copy stdin to FILE, each line prefixed with CLOCK_MONOTONIC seconds")
    st.add_argument("file")
    rp = sub.add_parser("report", help="line up a probe trace with a stamped corescope -vv log")
    rp.add_argument("--probe", required=True, help="the probe's --out JSON (for its start time)")
    rp.add_argument("--trace", required=True, help="the probe's --trace CSV")
    rp.add_argument("--log", required=True, help="corescope's -vv log, stamped by 'stamp'")
    rp.add_argument("--show", type=int, default=0, help="print the N slowest packets with corescope's events around them")
    a = ap.parse_args()
    if a.cmd == "stamp":
        stamp(a.file)
    else:
        report(a)


if __name__ == "__main__":
    main()
