#!/usr/bin/env python3
"""Markdown report of a bench/run.sh run: medians of the runs, ratios, goals."""

import argparse
import json
import os
import platform
import statistics
import subprocess
import time
from collections import defaultdict

# Goals from the issues, per command (ratio goals are corescope / baseline).
RATIO_GOALS = {
    "build-edges --rebuild": ("≤ 1.5× sqlite3 scan", 1.5),
    "prune": ("≤ 2× bulk DELETE", 2.0),
    "backfill from-pubkey": ("≤ 2× json_extract UPDATE", 2.0),
}
TICK = "build-edges (tick, 1 000 new)"
IDLE_TICK = "build-edges (tick, nothing new)"
HELD_TICK = "build-edges (tick, 1 000 new, ingestor connected)"
# Absolute goals (seconds): the default modes of check at any size.
TIME_GOALS = {"check": 0.2, "check -q": 0.2}
RSS_GOAL_MB = 64
LOCK_GOAL_MS = 200
PROBE_GOAL_MS = 300
PROBE_P99_GOAL_MS = 100


def machine():
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            mem = f"{kb / 1024 / 1024:.0f} GB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{cpu}, {os.cpu_count()} cores, {mem}, {platform.system()} {platform.release()}"


def cmd_out(args):
    try:
        return subprocess.run(args, capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "?"


def fmt(v, nd=2):
    if v is None:
        return "–"
    return f"{v:.{nd + 1 if v < 1 else nd}f}"


def mark(ok):
    return "" if ok is None else (" ✓" if ok else " ✗")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", required=True)
    ap.add_argument("--probes", required=True)
    ap.add_argument("--synth", required=True)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--runs", default="3")
    a = ap.parse_args()

    runs = defaultdict(list)  # (size, cmd, side) -> [(secs, rss_kb, lock)]
    loads = defaultdict(list)  # (size, cmd) -> [load1 at each run]
    order = []
    with open(a.raw) as f:
        for line in f:
            p = line.rstrip("\n").split("\t")
            if len(p) < 7:
                continue
            size, cmd, side, _run, secs, rss, lock = p[:7]
            key = (size, cmd, side)
            if (size, cmd) not in order:
                order.append((size, cmd))
            runs[key].append((float(secs), int(rss), float(lock) if lock else None))
            if len(p) >= 8 and p[7]:
                loads[(size, cmd)].append(float(p[7]))
    probes = {}
    with open(a.probes) as f:
        for line in f:
            p = line.rstrip("\n").split("\t", 3)
            if len(p) == 4:
                try:
                    probes[(p[0], p[1], p[2])] = json.loads(p[3])
                except json.JSONDecodeError:
                    pass
    # Rows measured only by a probe (`--runs 0`: probes alone).
    for (size, cmd, _side) in probes:
        if (size, cmd) not in order:
            order.append((size, cmd))
    synth = []
    with open(a.synth) as f:
        for line in f:
            p = line.rstrip("\n").split("\t")
            if len(p) == 4:
                synth.append(p)

    out = []
    out.append("# corescope benchmark\n")
    out.append(f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    out.append(f"- machine: {machine()}")
    version = (cmd_out([a.bin, "--version"]).splitlines() or [""])[0]
    out.append(f"- corescope: {version} ({cmd_out(['git', 'describe', '--always', '--dirty'])})")
    out.append(f"- sqlite3 CLI: {cmd_out(['sqlite3', '--version']).split(' ')[0]}")
    runs_s = a.runs if len(a.runs.split()) == 1 else f"{a.runs} (per size, in the order of the sizes)"
    out.append(f"- figures: medians of {runs_s} alternating runs (corescope, baseline, corescope, …) on fresh copies")
    out.append("")
    if synth:
        out.append("Synthetic databases created in this run:\n")
        out.append("| size | schema | synth seconds | file MB |")
        out.append("|---|---|---:|---:|")
        for size, kind, secs, nbytes in synth:
            out.append(f"| {size} | {kind} | {float(secs):.1f} | {int(nbytes) / 1e6:.0f} |")
        out.append("")

    out.append("| size | command | corescope s | baseline s | ratio | goal | peak RSS MB | max lock hold ms | load avg | live writer beside corescope: delay max / p99 ms, largest backlog, drained, failed, lost | same beside the baseline |")
    out.append("|---|---|---:|---:|---:|---|---:|---:|---|---|---|")
    scans = {}
    for (size, cmd) in order:
        if cmd == "build-edges --rebuild" and (size, cmd, "sqlite3") in runs:
            scans[size] = statistics.median(r[0] for r in runs[(size, cmd, "sqlite3")])
    for (size, cmd) in order:
        cs = runs.get((size, cmd, "corescope"), [])
        bl = runs.get((size, cmd, "sqlite3"), [])
        t_cs = statistics.median(r[0] for r in cs) if cs else None
        t_bl = statistics.median(r[0] for r in bl) if bl else None
        rss = max(r[1] for r in cs) / 1024 if cs else None
        locks = [r[2] for r in cs if r[2] is not None]
        lock = max(locks) if locks else None
        ratio = None
        goal = ""
        ok = None
        if cmd in RATIO_GOALS and t_cs is not None and t_bl:
            ratio = t_cs / t_bl
            goal, limit = RATIO_GOALS[cmd]
            ok = ratio <= limit
        elif cmd in TIME_GOALS and t_cs is not None:
            goal = f"≤ {TIME_GOALS[cmd]} s"
            ok = t_cs <= TIME_GOALS[cmd]
        elif cmd == TICK and t_cs is not None and scans.get(size):
            ratio = t_cs / scans[size]
            goal = "≤ 1 % of the full scan"
            ok = ratio <= 0.01
        elif cmd in (IDLE_TICK, HELD_TICK) and t_cs is not None and scans.get(size):
            ratio = t_cs / scans[size]
        ratio_s = "–" if ratio is None else (f"{ratio * 100:.2f} %" if cmd in (TICK, IDLE_TICK, HELD_TICK) else f"{ratio:.2f}×")
        rss_s = "–" if rss is None else f"{rss:.0f}{mark(rss <= RSS_GOAL_MB)}"
        lock_s = "–" if lock is None else f"{lock:.0f}{mark(lock <= LOCK_GOAL_MS)}"

        def probe_s(side):
            p = probes.get((size, cmd, side))
            if not p:
                return "–"
            good = (
                p.get("max_ms", 1e9) <= PROBE_GOAL_MS
                and p.get("p99_ms", 1e9) <= PROBE_P99_GOAL_MS
                and p.get("failures", 1) == 0
                and p.get("lost", 1) == 0
                and p.get("drained", False)
            )
            drained = "drained" if p.get("drained") else f"not drained ({p.get('backlog_at_stop')} left)"
            return (
                f"{p.get('max_ms')} / {p.get('p99_ms')}, {p.get('max_backlog')}, {drained}, "
                f"{p.get('failures')}, {p.get('lost')} ({p.get('inserted')} packets){mark(good)}"
            )

        ld = loads.get((size, cmd), [])
        load_s = "–" if not ld else (f"{min(ld):.1f}" if min(ld) == max(ld) else f"{min(ld):.1f}–{max(ld):.1f}")
        out.append(
            f"| {size} | {cmd} | {fmt(t_cs)} | {fmt(t_bl)} | {ratio_s}{mark(ok)} | {goal} | {rss_s} | {lock_s} | {load_s} | {probe_s('corescope')} | {probe_s('sqlite3')} |"
        )
    out.append("")
    errs = [(k, p["errors"]) for k, p in sorted(probes.items()) if p.get("errors")]
    if errs:
        out.append("Live-writer failures:\n")
        for (size, cmd, side), e in errs:
            for msg, n in sorted(e.items()):
                out.append(f"- {size} {cmd} ({side}): {n} × `{msg}`")
        out.append("")
    out.append(
        f"Goals: ratios as in the goal column; peak RSS ≤ {RSS_GOAL_MB} MB; lock hold ≤ {LOCK_GOAL_MS} ms; "
        f"live writer (packets arriving at 100/s into a queue, one transaction each, busy_timeout 5000): "
        f"arrival-to-commit delay max ≤ {PROBE_GOAL_MS} ms and p99 ≤ {PROBE_P99_GOAL_MS} ms, queue drained, 0 failed, 0 lost. "
        "Load avg: the 1-minute load average when each run started (other work on the machine). "
        "✓/✗ mark each figure against its goal. Baselines: the sqlite3 CLI running the equivalent SQL "
        "(build-edges --rebuild: the joined SELECT over all observations; backfill from-pubkey: one json_extract UPDATE; "
        "prune: bulk DELETEs in one transaction). During the build-edges baseline probe the scan runs inside "
        "BEGIN IMMEDIATE, as CoreScope's seed builder held its single writer connection during the scan."
    )
    print("\n".join(out))


if __name__ == "__main__":
    main()
