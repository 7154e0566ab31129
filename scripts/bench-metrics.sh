#!/usr/bin/env bash
# Benchmark: `gpuscout serve` against node_exporter (drm + hwmon collectors) on the same AMD
# fixture host root, side by side in one run. Writes docs/METRICS-BENCH.md.
#
#   scripts/bench-metrics.sh                 # defaults below
#   FIXTURE=tests/fixtures/hosts/<x> REQS_1=2000 REQS_50=100 scripts/bench-metrics.sh
#
# Needs: cargo, python3 (free ports, sample counts, the report), Debian `prometheus-node-exporter`.
# Load client: examples/scrape_load.rs (std threads, one TCP connection per request).
# Measures per target: scrape latency p50/p99 at 1 and 50 concurrent clients, failed requests,
# and peak RSS (VmHWM from /proc/<pid>/status after all runs), over ROUNDS interleaved rounds. gpuscout runs twice: with its
# default scrape cache (500 ms) and with the cache off (`--scrape-cache 0`: every scrape reads
# sysfs, except scrapes that arrive while a pass is running, which share it).
# node_exporter runs with --web.max-requests=0: its default (40 parallel scrapes) answers 503 to
# part of the 50-client run, which would make it look faster than it is.
set -euo pipefail
cd "$(dirname "$0")/.."

FIXTURE=${FIXTURE:-tests/fixtures/metrics/amd-rx7900xtx-talos}
REQS_1=${REQS_1:-2000}
REQS_50=${REQS_50:-100}
WARMUP=${WARMUP:-200}
ROUNDS=${ROUNDS:-5}
PAUSE=${PAUSE:-2}
OUT=${OUT:-docs/METRICS-BENCH.md}
NODE_EXPORTER=${NODE_EXPORTER:-$(command -v prometheus-node-exporter || command -v node_exporter || true)}
if [ -z "$NODE_EXPORTER" ]; then
  echo "bench-metrics: node_exporter not found; apt-get install prometheus-node-exporter" >&2
  exit 1
fi

cargo build --release --quiet --bin gpuscout --example scrape_load
GPUSCOUT=target/release/gpuscout
LOAD=target/release/examples/scrape_load

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

NE_PORT=$(free_port); GS_PORT=$(free_port); GN_PORT=$(free_port)
"$NODE_EXPORTER" --path.sysfs="$FIXTURE/sys" --path.procfs="$FIXTURE/proc" \
  --collector.disable-defaults --collector.drm --collector.hwmon --web.max-requests=0 \
  --web.listen-address="127.0.0.1:$NE_PORT" --log.level=warn 2>/dev/null &
NE_PID=$!; PIDS+=("$NE_PID")
RUST_LOG=warn "$GPUSCOUT" --root "$FIXTURE" serve --listen "127.0.0.1:$GS_PORT" &
GS_PID=$!; PIDS+=("$GS_PID")
RUST_LOG=warn "$GPUSCOUT" --root "$FIXTURE" serve --listen "127.0.0.1:$GN_PORT" --scrape-cache 0 &
GN_PID=$!; PIDS+=("$GN_PID")

wait_up() {
  for _ in $(seq 1 100); do
    if "$LOAD" "127.0.0.1:$1" /metrics 1 1 >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "bench-metrics: nothing answers on port $1" >&2; exit 1
}
wait_up "$NE_PORT"; wait_up "$GS_PORT"; wait_up "$GN_PORT"

# What each exporter actually exports from the fixture (proof both read it).
fetch() { python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1]).read().decode())' "$1"; }
NE_SERIES=$(fetch "http://127.0.0.1:$NE_PORT/metrics" | grep -cE '^node_(drm|hwmon)_' || true)
GS_SERIES=$(fetch "http://127.0.0.1:$GS_PORT/metrics" | grep -cE '^gpuscout_' || true)

RESULTS=$(mktemp)
LOAD_BEFORE=$(cut -d" " -f1-3 /proc/loadavg)
run() { # name port clients per-client round
  local line; line=$("$LOAD" "127.0.0.1:$2" /metrics "$3" "$4" 2>/dev/null)
  echo "round $5: $1 $line"
  echo "$1 $5 $line" >> "$RESULTS"
}

for t in "$NE_PORT" "$GS_PORT" "$GN_PORT"; do "$LOAD" "127.0.0.1:$t" /metrics 1 "$WARMUP" >/dev/null 2>&1 || true; done
for round in $(seq 1 "$ROUNDS"); do
  for c in 1 50; do
    per=$REQS_1; [ "$c" = 50 ] && per=$REQS_50
    # Interleave targets and rotate their order each round, with a pause between runs, so
    # background load and the previous target's after-effects (Go GC) hit all of them alike.
    order=("node_exporter $NE_PORT" "gpuscout $GS_PORT" "gpuscout_nocache $GN_PORT")
    for i in 0 1 2; do
      set -- ${order[$(( (i + round) % 3 ))]}
      sleep "$PAUSE"
      run "$1" "$2" "$c" "$per" "$round"
    done
  done
done

LOAD_AFTER=$(cut -d" " -f1-3 /proc/loadavg)
hwm() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
NE_HWM=$(hwm "$NE_PID"); GS_HWM=$(hwm "$GS_PID"); GN_HWM=$(hwm "$GN_PID")

CPU=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
NE_VER=$("$NODE_EXPORTER" --version 2>&1 | head -1)
GS_VER=$("$GPUSCOUT" --version)

python3 - "$RESULTS" "$OUT" <<PY
import statistics, sys
results, out = sys.argv[1], sys.argv[2]
rows = {}
for line in open(results):
    parts = line.split()
    name, rnd, kv = parts[0], parts[1], dict(p.split("=", 1) for p in parts[2:])
    rows.setdefault((name, int(kv["clients"])), []).append(kv)
names = {"node_exporter": "node_exporter", "gpuscout": "gpuscout", "gpuscout_nocache": "gpuscout (no cache)"}
def med(name, c, key):
    return statistics.median(float(r[key]) for r in rows[(name, c)])
def total(name, c, key):
    return sum(int(r[key]) for r in rows[(name, c)])
hwm = {"node_exporter": $NE_HWM, "gpuscout": $GS_HWM, "gpuscout_nocache": $GN_HWM}
L = []
L.append("# Metrics benchmark: gpuscout serve vs node_exporter")
L.append("")
L.append("Generated by \`scripts/bench-metrics.sh\` on $(date -u +%Y-%m-%dT%H:%MZ). Do not edit by hand; rerun the script.")
L.append("")
L.append("- Fixture: \`$FIXTURE\`")
L.append("- Machine: $(nproc) CPUs ($CPU), kernel $(uname -r); load average before/after the run: $LOAD_BEFORE / $LOAD_AFTER. On a shared machine the 1-client p99 mostly measures CPU steal (time slices lost to other jobs); p50 is the stable figure.")
L.append("- node_exporter: $NE_VER, \`--path.sysfs=$FIXTURE/sys --collector.disable-defaults --collector.drm --collector.hwmon --web.max-requests=0\` ($NE_SERIES node_drm/node_hwmon samples)")
L.append("- gpuscout: $GS_VER release build, \`serve --root $FIXTURE\` ($GS_SERIES gpuscout samples; default scrape cache 500 ms); \`gpuscout (no cache)\` adds \`--scrape-cache 0\`")
L.append("- Load: \`examples/scrape_load.rs\`, one TCP connection per request, $WARMUP warm-up requests per target; per round 1 client x $REQS_1 requests and 50 clients x $REQS_50 requests; $ROUNDS rounds, targets interleaved in rotating order with a ${PAUSE} s pause between runs. Latencies: median over rounds of each round's percentile; failed: sum over rounds.")
L.append("")
L.append("| target | clients | requests | failed | p50 ms | p99 ms | max ms |")
L.append("|---|---:|---:|---:|---:|---:|---:|")
for c in (1, 50):
    for n in names:
        L.append(f"| {names[n]} | {c} | {total(n, c, 'requests')} | {total(n, c, 'failed')} | {med(n, c, 'p50_ms'):.3f} | {med(n, c, 'p99_ms'):.3f} | {med(n, c, 'max_ms'):.3f} |")
L.append("")
L.append("| peak RSS (VmHWM) | MiB |")
L.append("|---|---:|")
for n in names:
    L.append(f"| {names[n]} | {hwm[n] / 1024:.1f} |")
L.append("")
L.append("Ratios gpuscout / node_exporter. Targets: p99 <= 0.5, RSS < 10 MiB, no failed request at 50 clients.")
L.append("")
L.append("| ratio | gpuscout | gpuscout (no cache) |")
L.append("|---|---:|---:|")
for c in (1, 50):
    for k in ("p50_ms", "p99_ms"):
        base = med("node_exporter", c, k)
        L.append(f"| {k[:3]} at {c} client(s) | {med('gpuscout', c, k) / base:.3f} | {med('gpuscout_nocache', c, k) / base:.3f} |")
L.append(f"| peak RSS | {hwm['gpuscout'] / hwm['node_exporter']:.3f} | {hwm['gpuscout_nocache'] / hwm['node_exporter']:.3f} |")
open(out, "w").write("\n".join(L) + "\n")
PY
rm -f "$RESULTS"
cat "$OUT"
