#!/usr/bin/env bash
# Soak test: MINUTES (default 30) of RATE (default 20) scrapes/s against the release build of
# `gpuscout serve` on a generated 8-GPU AMD host root, with Kubernetes label sync running
# against the API stand-in (tests/support/src/standin, as examples/standin). Every WINDOW
# (30 s) seconds it samples the agent's VmRSS, VmHWM, open fds and the window's scrape latency
# p50/p99/max into a CSV, then prints the growth and writes the table into OUT (docs/SOAK.md
# when run with OUT=docs/SOAK.md; by default target/soak/SOAK.md so a trial does not touch docs).
#
#   scripts/soak.sh                      # 30 minutes
#   MINUTES=5 scripts/soak.sh            # a trial
#   SKIP_BUILD=1 OUT=docs/SOAK.md scripts/soak.sh
#
# The agent: `gpuscout serve --kubeconfig ... --node-name ...` when the binary has those flags;
# until then examples/serve_labels.rs, which wires the same library parts (Daemon + LabelSync)
# the way `serve` does. Verdict: RSS growth (last sample vs the first sample after warm-up)
# < 1 MiB, no fd growth, p99 of the last third within 2x of the first third.
# Needs: cargo, python3, /proc.
set -euo pipefail
cd "$(dirname "$0")/.."

MINUTES=${MINUTES:-30}
RATE=${RATE:-20}
WINDOW=${WINDOW:-30}
GPUS=${GPUS:-8}
WORK=${WORK:-target/soak}
OUT=${OUT:-$WORK/SOAK.md}

if [ -z "${SKIP_BUILD:-}" ]; then
  cargo build --release --quiet --bin gpuscout --example standin --example synth_host \
    --example serve_labels --example soak_load
fi
R=target/release
mkdir -p "$WORK"
RUN=$(mktemp -d "$WORK/run.XXXXXX")
CSV=$RUN/samples.csv
"$R/examples/synth_host" "$RUN/host" "$GPUS"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

"$R/examples/standin" --node soak-node --kubeconfig "$RUN/kubeconfig" --stats "$RUN/api.stats" \
  --stats-every "$WINDOW" > "$RUN/standin.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do [ -s "$RUN/kubeconfig" ] && break; sleep 0.1; done
[ -s "$RUN/kubeconfig" ] || { echo "soak: the stand-in did not start" >&2; exit 1; }

PORT=$(free_port)
if "$R/gpuscout" serve --help 2>/dev/null | grep -q -- '--kubeconfig'; then
  AGENT="gpuscout serve (release)"
  RUST_LOG=warn "$R/gpuscout" --root "$RUN/host" serve --listen "127.0.0.1:$PORT" \
    --kubeconfig "$RUN/kubeconfig" --node-name soak-node > "$RUN/agent.log" 2>&1 &
else
  AGENT="examples/serve_labels (release; serve's library parts + LabelSync, as serve wires them)"
  RUST_LOG=warn "$R/examples/serve_labels" "$RUN/host" "127.0.0.1:$PORT" "$RUN/kubeconfig" \
    soak-node > "$RUN/agent.log" 2>&1 &
fi
AGENT_PID=$!; PIDS+=("$AGENT_PID")
for _ in $(seq 1 100); do
  python3 -c 'import sys,urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
    "http://127.0.0.1:$PORT/readyz" 2>/dev/null && break
  sleep 0.2
done

START=$(date -u +%FT%TZ)
echo "soak: $AGENT on :$PORT (pid $AGENT_PID), $RATE scrapes/s for $MINUTES min, samples in $CSV"
"$R/examples/soak_load" "127.0.0.1:$PORT" /metrics "$RATE" $((MINUTES * 60)) "$WINDOW" \
  "$AGENT_PID" "$CSV" 2> "$RUN/load.err"
END=$(date -u +%FT%TZ)
kill -0 "$AGENT_PID" 2>/dev/null || { echo "soak: the agent died" >&2; exit 1; }
# Labels on the Node at the end (the stand-in's view through its own API).
LABELS=$(python3 - "$RUN/kubeconfig" <<'PY'
import json, re, sys, urllib.request
server = re.search(r"server: (\S+)", open(sys.argv[1]).read()).group(1)
n = json.load(urllib.request.urlopen(server + "/api/v1/nodes/soak-node"))
print(sum(1 for k in n["metadata"].get("labels", {}) if k.startswith("gpuscout.io/")))
PY
)
sleep 1
python3 - "$CSV" "$RUN/api.stats" "$OUT" "$AGENT" "$MINUTES" "$RATE" "$GPUS" "$START" "$END" "$LABELS" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'PY'
import csv, sys
csvp, statsp, out, agent, minutes, rate, gpus, start, end, labels, cores, load = sys.argv[1:13]
rows = list(csv.DictReader(open(csvp)))
api = [l.split() for l in open(statsp)] if __import__("os").path.exists(statsp) else []
f = lambda r, k: float(r[k]) if r[k] not in ("", "NaN", "nan") else float("nan")
load_rows = [r for r in rows if int(r["requests"]) > 0]
base = load_rows[1] if len(load_rows) > 1 else rows[0]   # first sample after one warm-up window
last = rows[-1]
rss_growth = f(last, "rss_kib") - f(base, "rss_kib")
fd_growth = f(last, "fds") - f(base, "fds")
third = max(1, len(load_rows) // 3)
first_p99 = sorted(f(r, "p99_ms") for r in load_rows[:third])
last_p99 = sorted(f(r, "p99_ms") for r in load_rows[-third:])
med = lambda v: v[len(v) // 2]
p99_ratio = med(last_p99) / med(first_p99) if first_p99 and med(first_p99) > 0 else float("nan")
sent = sum(int(r["requests"]) for r in rows); failed = sum(int(r["failed"]) for r in rows)
ok = lambda b: "PASS" if b else "FAIL"
verdict = [
    ("RSS growth < 1 MiB (last sample − first sample after warm-up)", f"{rss_growth:+.0f} KiB", ok(rss_growth < 1024)),
    ("no fd growth", f"{fd_growth:+.0f}", ok(fd_growth <= 0)),
    ("p99 stable (median p99 of last third ≤ 2× first third)", f"{med(first_p99):.2f} → {med(last_p99):.2f} ms (×{p99_ratio:.2f})", ok(p99_ratio <= 2.0)),
    ("no failed scrapes", f"{failed} of {sent}", ok(failed == 0)),
]
writes = ""
if len(api) >= 2:
    w = int(api[-1][3]) - int(api[0][3]); secs = int(api[-1][0]) - int(api[0][0])
    writes = f"Stand-in: {api[-1][1]} API requests in all, {api[-1][3]} successful writes in all; {w} successful writes in the last {secs} s; {api[-1][4]} open watch(es) at the end.\n"
md = [f"# Soak: `gpuscout serve` under {rate} scrapes/s for {minutes} minutes", "",
      "Generated by `scripts/soak.sh`. Do not edit by hand.", "",
      f"- Agent: {agent}, {gpus}-GPU generated AMD host root (tests/support/src/synth.rs), label sync (mode `node`) against the API stand-in (examples/standin.rs).",
      f"- Run: {start} → {end}, {cores} cores, load average at the end {load}. Scrape cache 500 ms, discovery every 30 s.",
      f"- Load: examples/soak_load.rs, open loop, one TCP connection per scrape; one row per {rows[1]['t_s'] if len(rows)>1 else '?'} s window.",
      f"- Labels `gpuscout.io/*` on the Node at the end: {labels}.", "", writes,
      "## Verdict", "", "| criterion | measured | result |", "|---|---|---|"]
md += [f"| {a} | {b} | {c} |" for a, b, c in verdict]
md += ["", "## Samples", "", "| t (s) | VmRSS (KiB) | VmHWM (KiB) | open fds | scrapes | failed | p50 (ms) | p99 (ms) | max (ms) |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
md += [f"| {r['t_s']} | {r['rss_kib']} | {r['hwm_kib']} | {r['fds']} | {r['requests']} | {r['failed']} | {r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} |" for r in rows]
open(out, "w").write("\n".join(md) + "\n")
print("\n".join(f"{c}: {a}: {b}" for a, b, c in verdict))
print(f"report: {out}")
PY
