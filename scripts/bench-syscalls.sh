#!/usr/bin/env bash
# System calls and files read per scrape of one running `gpuscout serve` (or node_exporter),
# counted with strace. Prints one line:
#   syscalls_per_scrape=.. files_per_scrape=.. top=name:count/scrape,...
#
#   scripts/bench-syscalls.sh PID PORT FIXTURE [SCRAPES]
#
# strace attaches to every thread of PID (-f) for SCRAPES sequential scrapes (default 100, one
# connection each, examples/scrape_load), after 20 warm-up scrapes. syscalls_per_scrape is every
# system call of the server process during the run divided by SCRAPES (accept, request and
# response I/O, epoll, futex included). files_per_scrape counts the reads (read/pread64) that
# returned data from a file below FIXTURE (strace -y names each descriptor's path), divided by
# SCRAPES: one per attribute file a scrape reads. A benchmark, not a test; needs strace
# (apt-get install strace) and ptrace permission.
set -euo pipefail
cd "$(dirname "$0")/.."
PID=$1; PORT=$2; FIXTURE=$3; N=${4:-100}
LOAD=${LOAD:-target/release/examples/scrape_load}
command -v strace >/dev/null || { echo "bench-syscalls: strace not found; apt-get install strace" >&2; exit 1; }
ROOT=$(realpath "$FIXTURE")
TMP=$(mktemp -d)
"$LOAD" "127.0.0.1:$PORT" /metrics 1 20 >/dev/null 2>&1 || true
# Two runs of N scrapes: the count table (-c), then the reads with their descriptors' paths
# (-y), one file per thread (-ff) so that no call is split across lines.
traced() { # strace options...
  strace -qq -p "$PID" "$@" &
  local st=$!
  sleep 1
  "$LOAD" "127.0.0.1:$PORT" /metrics 1 "$N" >/dev/null
  sleep 0.5
  kill -INT "$st"; wait "$st" 2>/dev/null || true
}
traced -f -c -o "$TMP/count"
traced -ff -y -e trace=read,pread64 -o "$TMP/reads"
python3 - "$TMP" "$N" "$ROOT" <<'PY'
import re, sys
tmp, n, root = sys.argv[1], int(sys.argv[2]), sys.argv[3]
import glob
total, calls = 0, {}
for l in open(f"{tmp}/count"):
    c = l.split()
    # % time, seconds, usecs/call, calls, [errors], syscall
    if len(c) in (5, 6) and re.fullmatch(r"[\d.]+", c[0]) and c[-1] != "total":
        k = int(c[3]); calls[c[-1]] = k; total += k
files = 0
for l in (l for f in glob.glob(f"{tmp}/reads*") for l in open(f)):
    m = re.search(r"(?:read|pread64)\(\d+<([^>]*)>.*\)\s+=\s+(\d+)", l)
    if m and m.group(1).startswith(root + "/") and int(m.group(2)) > 0:
        files += 1
top = ",".join(f"{k}:{v / n:.1f}" for k, v in sorted(calls.items(), key=lambda kv: -kv[1])[:8])
print(f"syscalls_per_scrape={total / n:.1f} files_per_scrape={files / n:.1f} top={top}")
PY
rm -rf "$TMP"
