#!/usr/bin/env bash
# corescope benchmark harness (run by hand, not in CI). See bench/README.md.
#
#   bench/run.sh [--sizes "1M 10M"] [--runs 3 | --runs "3 1"] [--no-probe] [--only "migrate check"] [--out FILE]
#   (--runs: runs per size; a list gives each size its own, in the order of --sizes;
#    0: the live-writer probes alone)
#   (CORESCOPE_BIN=path benchmarks that binary instead of building this checkout)
#
# For each size: creates (once, cached in bench/cache/) synthetic databases with
# `corescope synth`, then for every command this build has, alternating run by
# run: corescope's time vs the sqlite3 CLI doing the equivalent SQL, their ratio,
# peak RSS (bench/timed.rs: wall clock and wait4), max_lock_hold_ms (--json), the 1-minute load average
# at each run, and a live-writer probe (bench/live_writer.py: packets arriving
# at 100/s into a queue written one transaction each, busy_timeout 5000) while
# each one runs; per-packet traces in bench/cache/traces/.
# Prints a markdown report and writes it to bench/results-<date>.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SIZES="1M"
RUNS=3
PROBE=1
OUT=""
ONLY=""
while [ $# -gt 0 ]; do
    case "$1" in
        --sizes) SIZES="$2"; shift 2 ;;
        --runs) RUNS="$2"; shift 2 ;;
        --no-probe) PROBE=0; shift ;;
        --out) OUT="$2"; shift 2 ;;
        --only) ONLY="$2"; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

need() { command -v "$1" >/dev/null 2>&1 || { echo "bench: $1 is required ($2)" >&2; exit 1; }; }
need sqlite3 "apt-get install sqlite3"
need python3 "for the live-writer probe and the report"
need rustc "to compile bench/timed.rs (comes with cargo)"
[ -x /usr/bin/time ] || { echo "bench: /usr/bin/time is required (apt-get install time)" >&2; exit 1; }

echo "== building release binary" >&2
cargo build --release --quiet
CACHE="$ROOT/bench/cache"
mkdir -p "$CACHE"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/corescope-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
# This checkout's binary creates the databases; CORESCOPE_BIN (copied, so a
# rebuild during the run cannot change it) may be benchmarked instead.
SYNTH_BIN="$WORK/corescope-synth"
cp "$ROOT/target/release/corescope" "$SYNTH_BIN"
BIN="$WORK/corescope"
cp "${CORESCOPE_BIN:-$ROOT/target/release/corescope}" "$BIN"
# Wall time and peak RSS of each command (std-only Rust, no crate needed).
TIMED="$WORK/timed"
rustc -O --edition 2021 "$ROOT/bench/timed.rs" -o "$TIMED"
RAW="$WORK/raw.tsv"      # size cmd side run seconds rss_kb lock_ms load1
PROBES="$WORK/probe.tsv" # size cmd side json
SYNTH="$WORK/synth.tsv"  # size kind seconds bytes
: >"$RAW"; : >"$PROBES"; : >"$SYNTH"

# The data window ends here (fixed, so cached databases stay valid and `--now` replays).
END="2026-05-01T00:00:00Z"
END_EPOCH=1777593600
cutoff() { date -u -d "@$((END_EPOCH - $1 * 86400))" +%Y-%m-%dT%H:%M:%SZ; }
sqlcutoff() { date -u -d "@$((END_EPOCH - $1 * 86400))" '+%Y-%m-%d %H:%M:%S'; }

# Subcommands of this build (clap's "Commands:" section).
COMMANDS=$("$BIN" --help | awk '/^Commands:/{on=1;next} on&&/^[^ ]/{on=0} on&&/^  [a-z]/{print $1}')
have() { grep -qx "$1" <<<"$COMMANDS" && { [ -z "$ONLY" ] || grep -qw -- "$1" <<<"$ONLY"; }; }
echo "== commands in this build: $(echo $COMMANDS)" >&2

size_args() {
    case "$1" in
        1M) echo "--nodes 3000 --observers 80 --transmissions 250000 --observations 1000000" ;;
        10M) echo "--nodes 6000 --observers 150 --transmissions 2500000 --observations 10000000" ;;
        100K) echo "--nodes 1000 --observers 40 --transmissions 25000 --observations 100000" ;;
        *) echo "bench: unknown size $1 (100K, 1M, 10M)" >&2; exit 2 ;;
    esac
}

# Cached synthetic database: regenerated when the binary's synth arguments change.
cached_db() { # size kind(latest|seed) -> path
    local size=$1 kind=$2
    local db="$CACHE/$kind-$size.db"
    local args="--seed 1 --days 30 --end $END $(size_args "$size") --schema $kind --null-from-pubkey 1 --null-path-json 0.1 --null-resolved-path 1"
    local key="$args $("$SYNTH_BIN" --version)"
    if [ ! -f "$db" ] || [ "$(cat "$db.args" 2>/dev/null)" != "$key" ]; then
        echo "== synth $kind $size (cached in $db)" >&2
        rm -f "$db" "$db.args"
        /usr/bin/time -f "%e %M" -o "$WORK/synth.time" "$SYNTH_BIN" --db "$db" synth --force -q $args
        read -r secs _ <"$WORK/synth.time"
        printf '%s\t%s\t%s\t%s\n' "$size" "$kind" "$secs" "$(stat -c %s "$db")" >>"$SYNTH"
        echo "$key" >"$db.args"
    fi
    echo "$db"
}

copy_db() { # src dst
    rm -f "$2" "$2-wal" "$2-shm" "$2.lock"
    cp --reflink=auto "$1" "$2"
    # Flush the copy: otherwise its write-back stalls the next fsync (the
    # probe's first commits waited up to 250 ms before the command started).
    sync "$2" 2>/dev/null || sync
}

# Run a command under bench/timed.rs; record seconds, RSS and (corescope) max_lock_hold_ms.
measure() { # size cmd side run -- command...
    local size=$1 cmd=$2 side=$3 run=$4; shift 5
    local out="$WORK/out.$$" lock="" secs rss
    "$TIMED" "$WORK/time.$$" "$@" >"$out" 2>"$WORK/err.$$" || {
        local rc=$?
        echo "bench: '$*' exited $rc:" >&2; tail -5 "$WORK/err.$$" >&2; tail -5 "$out" >&2
        return 0
    }
    read -r secs rss <"$WORK/time.$$"
    if [ "$side" = corescope ]; then
        lock=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d.get("max_lock_hold_ms",""))' "$out" 2>/dev/null || true)
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$size" "$cmd" "$side" "$run" "$secs" "$rss" "$lock" "$(cut -d' ' -f1 /proc/loadavg)" >>"$RAW"
}

# Run a command while the live-writer probe inserts; record the probe's figures.
TRACES="$CACHE/traces"
mkdir -p "$TRACES"
probe() { # size cmd side db -- command...
    local size=$1 cmd=$2 side=$3 db=$4; shift 5
    rm -f "$WORK/ready" "$WORK/probe.json"
    local trace="$TRACES/$size-$(tr -c 'a-zA-Z0-9-' '_' <<<"$cmd")-$side.csv"
    python3 "$ROOT/bench/live_writer.py" --db "$db" --rate 100 --start-epoch $((END_EPOCH + 3600)) \
        --out "$WORK/probe.json" --ready "$WORK/ready" --trace "$trace" &
    local pid=$!
    for _ in $(seq 100); do [ -f "$WORK/ready" ] && break; sleep 0.05; done
    sleep 1
    "$@" >/dev/null 2>"$WORK/perr.$$" || echo "bench: probe run of '$*' exited $?: $(tail -1 "$WORK/perr.$$")" >&2
    sleep 1
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" || true
    printf '%s\t%s\t%s\t%s\n' "$size" "$cmd" "$side" "$(cat "$WORK/probe.json" 2>/dev/null || echo '{}')" >>"$PROBES"
}

# ---- the commands: prepare a database, corescope's command line, the sqlite3 baseline ----

CS() { "$BIN" --db "$1" --json "${@:2}"; }
SQL() { sqlite3 -bail -cmd ".timeout 5000" "$1" "$2"; }

SCAN_SQL="SELECT COUNT(*), SUM(length(o.path_json)), SUM(length(ob.id)), SUM(length(t.from_pubkey)),
  SUM(length(CASE WHEN t.payload_type = 4 THEN t.decoded_json END)), SUM(o.timestamp)
  FROM observations o JOIN transmissions t ON t.id = o.transmission_id
  LEFT JOIN observers ob ON ob.rowid = o.observer_idx;"
PUBKEY_SQL="UPDATE transmissions SET from_pubkey = json_extract(decoded_json, '\$.pubKey')
  WHERE from_pubkey IS NULL AND payload_type = 4;"
prune_sql() {
    local c; c=$(cutoff 20)
    echo "PRAGMA foreign_keys = ON; BEGIN;
      DELETE FROM observations WHERE transmission_id IN (SELECT id FROM transmissions WHERE first_seen < '$c');
      DELETE FROM transmissions WHERE first_seen < '$c';
      INSERT OR REPLACE INTO inactive_nodes SELECT * FROM nodes WHERE last_seen < '$(cutoff 7)';
      DELETE FROM nodes WHERE last_seen < '$(cutoff 7)';
      UPDATE observers SET inactive = 1 WHERE last_seen < '$(cutoff 14)' AND (inactive IS NULL OR inactive = 0);
      DELETE FROM observer_metrics WHERE timestamp < '$c';
      DELETE FROM dropped_packets WHERE dropped_at < '$(sqlcutoff 20)';
      DELETE FROM neighbor_edges WHERE last_seen < '$(cutoff 5)';
      COMMIT; PRAGMA incremental_vacuum(1024);"
}
PRUNE_ARGS=(prune --now "$END" --packet-days 20 --metrics-days 20 --dropped-days 20 --node-days 7 --observer-days 14 --edge-days 5)
# New observations for an incremental tick: 1 000 copies of recent ones on another path.
TICK_SQL="INSERT INTO observations (transmission_id, observer_idx, direction, snr, rssi, score, path_json, timestamp)
  SELECT transmission_id, observer_idx, direction, snr, rssi, score, '[\"00\",' || substr(path_json, 2), timestamp + 60
  FROM observations WHERE path_json LIKE '[\"%' ORDER BY id DESC LIMIT 1000;"

run_size() {
    local size=$1 RUNS=$2 base seed
    local w="$WORK/db.db"
    base=$(cached_db "$size" latest)
    seed=$(cached_db "$size" seed)
    for run in $(seq "$RUNS"); do
        echo "== $size run $run/$RUNS" >&2
        if have check; then
            measure "$size" check corescope "$run" -- "$BIN" --db "$base" --json check
            measure "$size" check sqlite3 "$run" -- sqlite3 -readonly "$base" "SELECT count(*) FROM observations"
            measure "$size" "check -q" corescope "$run" -- "$BIN" --db "$base" -q check
            measure "$size" "check --deep" corescope "$run" -- "$BIN" --db "$base" --json check --deep
        fi
        if have migrate; then
            copy_db "$seed" "$w"; measure "$size" "migrate (seed → latest)" corescope "$run" -- "$BIN" --db "$w" --json migrate
            copy_db "$seed" "$w"; measure "$size" "migrate --offline (seed → latest)" corescope "$run" -- "$BIN" --db "$w" --json migrate --offline
        fi
        if have build-edges; then
            # As the README's cadence does: the path-json backfill runs before
            # the graph is built (build-edges waits for rows it will still fill).
            copy_db "$base" "$w"; "$BIN" --db "$w" -q backfill path-json
            measure "$size" "build-edges --rebuild" corescope "$run" -- "$BIN" --db "$w" --json build-edges --rebuild
            measure "$size" "build-edges --rebuild" sqlite3 "$run" -- sqlite3 -readonly -cmd ".timeout 5000" "$base" "$SCAN_SQL"
            # tick: everything counted, then 1 000 new observations
            SQL "$w" "$TICK_SQL"
            measure "$size" "build-edges (tick, 1 000 new)" corescope "$run" -- "$BIN" --db "$w" --json build-edges
            measure "$size" "build-edges (tick, nothing new)" corescope "$run" -- "$BIN" --db "$w" --json build-edges
            # The same tick while another connection keeps the database open,
            # as the ingestor does: the WAL exists and corescope's close does
            # not checkpoint it (the last connection to close does).
            SQL "$w" "$TICK_SQL"
            python3 -c 'import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1]); c.execute("SELECT count(*) FROM nodes").fetchall()
open(sys.argv[2], "w").close(); time.sleep(600)' "$w" "$WORK/held" &
            local holder=$!
            for _ in $(seq 200); do [ -f "$WORK/held" ] && break; sleep 0.05; done
            measure "$size" "build-edges (tick, 1 000 new, ingestor connected)" corescope "$run" -- "$BIN" --db "$w" --json build-edges
            kill "$holder" 2>/dev/null || true; wait "$holder" 2>/dev/null || true; rm -f "$WORK/held"
            if have graph; then
                measure "$size" "graph stats" corescope "$run" -- "$BIN" --db "$w" --json graph stats
                measure "$size" "graph dump" corescope "$run" -- "$BIN" --db "$w" graph dump --format json
            fi
        fi
        if have backfill; then
            copy_db "$base" "$w"; measure "$size" "backfill from-pubkey" corescope "$run" -- "$BIN" --db "$w" --json backfill from-pubkey
            copy_db "$base" "$w"; measure "$size" "backfill from-pubkey" sqlite3 "$run" -- sqlite3 -bail -cmd ".timeout 5000" "$w" "$PUBKEY_SQL"
            copy_db "$base" "$w"; measure "$size" "backfill path-json" corescope "$run" -- "$BIN" --db "$w" --json backfill path-json
            if have build-edges; then
                copy_db "$base" "$w"; "$BIN" --db "$w" -q build-edges
                measure "$size" "backfill resolved-path" corescope "$run" -- "$BIN" --db "$w" --json backfill resolved-path
            fi
        fi
        if have prune; then
            copy_db "$base" "$w"; measure "$size" prune corescope "$run" -- "$BIN" --db "$w" --json "${PRUNE_ARGS[@]}"
            copy_db "$base" "$w"; measure "$size" prune sqlite3 "$run" -- sqlite3 -bail -cmd ".timeout 5000" "$w" "$(prune_sql)"
            if have vacuum; then
                # after a prune: pages to free (the corescope prune's copy)
                copy_db "$base" "$w"; "$BIN" --db "$w" -q "${PRUNE_ARGS[@]}" --vacuum-pages 0
                measure "$size" vacuum corescope "$run" -- "$BIN" --db "$w" --json vacuum
            fi
        fi
    done
    [ "$PROBE" = 1 ] || return 0
    echo "== $size live-writer probes" >&2
    if have migrate; then
        copy_db "$seed" "$w"; sqlite3 "$w" "PRAGMA journal_mode=WAL" >/dev/null
        probe "$size" "migrate (seed → latest)" corescope "$w" -- "$BIN" --db "$w" -q migrate
        copy_db "$seed" "$w"; sqlite3 "$w" "PRAGMA journal_mode=WAL" >/dev/null
        probe "$size" "migrate --offline (seed → latest)" corescope "$w" -- "$BIN" --db "$w" -q migrate --offline
    fi
    if have build-edges; then
        copy_db "$base" "$w"; "$BIN" --db "$w" -q backfill path-json
        probe "$size" "build-edges --rebuild" corescope "$w" -- "$BIN" --db "$w" -q build-edges --rebuild
        SQL "$w" "$TICK_SQL"
        probe "$size" "build-edges (tick, 1 000 new)" corescope "$w" -- "$BIN" --db "$w" -q build-edges
        copy_db "$base" "$w"; probe "$size" "build-edges --rebuild" sqlite3 "$w" -- sqlite3 -bail -cmd ".timeout 5000" "$w" "BEGIN IMMEDIATE; $SCAN_SQL COMMIT;"
    fi
    if have backfill; then
        copy_db "$base" "$w"; probe "$size" "backfill from-pubkey" corescope "$w" -- "$BIN" --db "$w" -q backfill from-pubkey
        copy_db "$base" "$w"; probe "$size" "backfill from-pubkey" sqlite3 "$w" -- sqlite3 -bail -cmd ".timeout 5000" "$w" "$PUBKEY_SQL"
        copy_db "$base" "$w"; probe "$size" "backfill path-json" corescope "$w" -- "$BIN" --db "$w" -q backfill path-json
        if have build-edges; then
            copy_db "$base" "$w"; "$BIN" --db "$w" -q build-edges
            probe "$size" "backfill resolved-path" corescope "$w" -- "$BIN" --db "$w" -q backfill resolved-path
        fi
    fi
    if have prune; then
        copy_db "$base" "$w"; probe "$size" prune corescope "$w" -- "$BIN" --db "$w" -q "${PRUNE_ARGS[@]}"
        copy_db "$base" "$w"; probe "$size" prune sqlite3 "$w" -- sqlite3 -bail -cmd ".timeout 5000" "$w" "$(prune_sql)"
        if have vacuum; then
            copy_db "$base" "$w"; "$BIN" --db "$w" -q "${PRUNE_ARGS[@]}" --vacuum-pages 0
            probe "$size" vacuum corescope "$w" -- "$BIN" --db "$w" -q vacuum
        fi
    fi
    rm -f "$w" "$w-wal" "$w-shm"
}

RUNS_LIST=($RUNS)
i=0
for size in $SIZES; do
    # the i-th number of --runs, or its last one
    n=${RUNS_LIST[$i]:-${RUNS_LIST[-1]}}
    run_size "$size" "$n"
    i=$((i + 1))
done

# ---- report ----
[ -n "$OUT" ] || OUT="$ROOT/bench/results-$(date -u +%Y%m%d-%H%M).md"
python3 "$ROOT/bench/report.py" --raw "$RAW" --probes "$PROBES" --synth "$SYNTH" \
    --bin "$BIN" --runs "$RUNS" | tee "$OUT"
echo "== written to $OUT" >&2
