#!/usr/bin/env bash
# Scrape cost side by side, one run: the same host with 1 and with 8 GPUs, each served by
#   - gpuscout, cache off  (`serve --scrape-cache 0`: every scrape reads sysfs),
#   - gpuscout, cache on   (default 500 ms cache),
#   - node_exporter        (drm + hwmon collectors on the same sysfs tree),
# and per target: system calls and files read per scrape (scripts/bench-syscalls.sh, strace),
# CPU per scrape (utime+stime of the server from /proc/PID/stat over CPU_REQS sequential
# scrapes), scrape latency p50/p99 at 1 and 50 concurrent clients (examples/scrape_load, one
# connection per request) and peak RSS (VmHWM, read after the 50-client run).
#
# The host is the AMD fixture tests/fixtures/metrics/amd-rx7900xtx-talos, copied, with its GPU
# cloned behind bridges of its own to make 8 (device directory, bus and driver links, DRM card
# and render node, hwmon with its /sys/class/hwmon link): node_exporter's hwmon collector
# reads it (its drm collector fails on it, as on the original fixture, and is counted anyway).
#
# gpuscout runs with GPUSCOUT_KEEP_OPEN=any: the generated tree is a normal directory, where
# gpuscout would open every attribute again on each scrape (a removed file stays readable
# through a kept descriptor there); on a node, /sys is sysfs and descriptors are kept. The
# variable makes the bench measure the node's code path. A fourth row, `gpuscout cache off,
# reopen`, shows the fixture path without it.
#
# NOPIE_BIN=path adds a row `gpuscout cache off, non-PIE` for a binary built with
# GPUSCOUT_NO_PIE=1 (build.rs), to show what the PIE relocations cost in memory.
#
#   scripts/bench-scrape.sh            # writes $WORK/scrape-matrix.{md,json}
#   GPUS="1 8" CPU_REQS=3000 REQS_1=1000 REQS_50=40 scripts/bench-scrape.sh
#
# A benchmark, never a test. Needs a release build (it builds one), python3, strace and
# Debian prometheus-node-exporter.
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=${WORK:-target/bench}
GPUS=${GPUS:-1 8}
CPU_REQS=${CPU_REQS:-3000}
REQS_1=${REQS_1:-1000}
REQS_50=${REQS_50:-40}
SYSCALL_SCRAPES=${SYSCALL_SCRAPES:-100}
NODE_EXPORTER=${NODE_EXPORTER:-$(command -v prometheus-node-exporter || command -v node_exporter || true)}
[ -n "$NODE_EXPORTER" ] || { echo "bench-scrape: node_exporter not found; apt-get install prometheus-node-exporter" >&2; exit 1; }
command -v strace >/dev/null || { echo "bench-scrape: strace not found; apt-get install strace" >&2; exit 1; }
mkdir -p "$WORK"
if [ -z "${NO_BUILD:-}" ]; then
  cargo build --release --locked --quiet --bin gpuscout --example scrape_load
fi

NOPIE_BIN=${NOPIE_BIN:-}
export WORK GPUS CPU_REQS REQS_1 REQS_50 SYSCALL_SCRAPES NODE_EXPORTER NOPIE_BIN
python3 - <<'PY'
import json, os, re, shutil, socket, subprocess, sys, time

W = os.environ["WORK"]
R = "target/release"
LOAD = f"{R}/examples/scrape_load"
NE = os.environ["NODE_EXPORTER"]
CPU_REQS = int(os.environ["CPU_REQS"])
REQS_1, REQS_50 = int(os.environ["REQS_1"]), int(os.environ["REQS_50"])
CLK = os.sysconf("SC_CLK_TCK")

FIXTURE = "tests/fixtures/metrics/amd-rx7900xtx-talos"
GPU0 = "sys/devices/pci0000:00/0000:00:01.1/0000:03:00.0"

def make_host(dst, n):
    """The fixture with its GPU cloned to n GPUs, links rewritten for each clone."""
    shutil.copytree(FIXTURE, dst, symlinks=True)
    def ln(path, target):
        p = os.path.join(dst, path)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        if os.path.lexists(p):
            os.remove(p)
        os.symlink(target, p)
    for k in range(1, n):
        bridge, bdf = f"0000:00:{1 + k:02x}.1", f"0000:{3 + k:02x}:00.0"
        d = f"sys/devices/pci0000:00/{bridge}/{bdf}"
        shutil.copytree(os.path.join(dst, GPU0), os.path.join(dst, d), symlinks=True)
        card, render, hw = f"card{1 + k}", f"renderD{128 + k}", f"hwmon{3 + k}"
        for old, new in [("drm/card1", f"drm/{card}"), ("drm/renderD128", f"drm/{render}"), ("hwmon/hwmon3", f"hwmon/{hw}")]:
            os.rename(os.path.join(dst, d, old), os.path.join(dst, d, new))
        for sub in [f"drm/{card}", f"drm/{render}", f"hwmon/{hw}"]:
            ln(f"{d}/{sub}/device", f"../../../{bdf}")
        ln(f"sys/bus/pci/devices/{bdf}", f"../../../devices/pci0000:00/{bridge}/{bdf}")
        ln(f"sys/bus/pci/drivers/amdgpu/{bdf}", os.path.relpath(d, "sys/bus/pci/drivers/amdgpu"))
        for sub in [card, render]:
            ln(f"sys/class/drm/{sub}", f"../../devices/pci0000:00/{bridge}/{bdf}/drm/{sub}")
        ln(f"sys/class/hwmon/{hw}", f"../../devices/pci0000:00/{bridge}/{bdf}/hwmon/{hw}")

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def load(port, clients, per):
    out = subprocess.run([LOAD, f"127.0.0.1:{port}", "/metrics", str(clients), str(per)],
                         capture_output=True, text=True, check=True).stdout
    return dict(kv.split("=", 1) for kv in out.split())

def ticks(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])

def hwm(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmHWM:"):
            return int(l.split()[1]) / 1024

def smaps(pid):
    """Rss and Private_Dirty (KiB) by mapping: the binary, [heap], [stack], anonymous, libraries."""
    out, cur = {}, None
    for l in open(f"/proc/{pid}/smaps"):
        c = l.split()
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", l):
            path = c[5] if len(c) > 5 else "[anon]"
            cur = out.setdefault(os.path.basename(path) if path.startswith("/") else path, [0, 0])
        elif c[0] == "Rss:":
            cur[0] += int(c[1])
        elif c[0] == "Private_Dirty:":
            cur[1] += int(c[1])
    return dict(sorted(out.items(), key=lambda kv: -kv[1][0])[:6])

def measure(name, cmd, env, port, host):
    p = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                load(port, 1, 1); break
            except subprocess.CalledProcessError:
                time.sleep(0.1)
        load(port, 1, 200)  # warm-up
        sc = subprocess.run(["scripts/bench-syscalls.sh", str(p.pid), str(port), host, os.environ["SYSCALL_SCRAPES"]],
                            capture_output=True, text=True, env={**os.environ, "LOAD": LOAD})
        m = dict(kv.split("=", 1) for kv in sc.stdout.split())
        a = ticks(p.pid)
        load(port, 1, CPU_REQS)
        cpu = (ticks(p.pid) - a) / CLK / CPU_REQS * 1e6
        time.sleep(1)
        one = load(port, 1, REQS_1)
        time.sleep(1)
        fifty = load(port, 50, REQS_50)
        return {
            "target": name,
            "syscalls": float(m.get("syscalls_per_scrape", "nan")),
            "files": float(m.get("files_per_scrape", "nan")),
            "top": m.get("top", ""),
            "cpu_us": cpu,
            "p50_1": float(one["p50_ms"]), "p99_1": float(one["p99_ms"]),
            "p50_50": float(fifty["p50_ms"]), "p99_50": float(fifty["p99_ms"]),
            "failed": int(one["failed"]) + int(fifty["failed"]),
            "rss_mib": hwm(p.pid),
            "smaps": smaps(p.pid),
            "threads": len(os.listdir(f"/proc/{p.pid}/task")),
        }
    finally:
        p.terminate(); p.wait()

rows = {}
for n in os.environ["GPUS"].split():
    host = os.path.abspath(f"{W}/host-{n}gpu")
    shutil.rmtree(host, ignore_errors=True)
    make_host(host, int(n))
    out = []
    runs = [
        ("gpuscout cache off", f"{R}/gpuscout", {"GPUSCOUT_KEEP_OPEN": "any"}, ["--scrape-cache", "0"]),
        ("gpuscout cache on", f"{R}/gpuscout", {"GPUSCOUT_KEEP_OPEN": "any"}, []),
        ("gpuscout cache off, reopen", f"{R}/gpuscout", {}, ["--scrape-cache", "0"]),
    ]
    if os.environ.get("NOPIE_BIN"):
        runs.append(("gpuscout cache off, non-PIE", os.environ["NOPIE_BIN"], {"GPUSCOUT_KEEP_OPEN": "any"}, ["--scrape-cache", "0"]))
    for name, binary, env, extra in runs:
        port = free_port()
        cmd = [binary, "--root", host, "serve", "--listen", f"127.0.0.1:{port}", *extra]
        print(f"bench-scrape: {n} GPU(s), {name}", file=sys.stderr)
        out.append(measure(name, cmd, {"RUST_LOG": "warn", **env}, port, host))
    port = free_port()
    cmd = [NE, f"--path.sysfs={host}/sys", f"--path.procfs={host}/proc", "--collector.disable-defaults",
           "--collector.drm", "--collector.hwmon", "--web.max-requests=0",
           f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]
    print(f"bench-scrape: {n} GPU(s), node_exporter", file=sys.stderr)
    out.append(measure("node_exporter", cmd, {}, port, host))
    rows[n] = out

json.dump(rows, open(f"{W}/scrape-matrix.json", "w"), indent=1)
L = []
L.append("| GPUs | target | syscalls / scrape | files read / scrape | CPU / scrape (µs) | p50 1 client (ms) | p99 1 client (ms) | p50 50 clients (ms) | p99 50 clients (ms) | failed | peak RSS (MiB) |")
L.append("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for n, out in rows.items():
    for r in out:
        L.append(f"| {n} | {r['target']} | {r['syscalls']:.1f} | {r['files']:.1f} | {r['cpu_us']:.0f} | {r['p50_1']:.3f} | {r['p99_1']:.3f} | {r['p50_50']:.3f} | {r['p99_50']:.3f} | {r['failed']} | {r['rss_mib']:.1f} |")
L.append("")
L.append("Most frequent system calls per scrape (strace -c -f):")
L.append("")
for n, out in rows.items():
    for r in out:
        L.append(f"- {n} GPU(s), {r['target']}: {r['top'].replace(',', ', ')}")
L.append("")
L.append("Where the resident memory is after the 50-client run (/proc/PID/smaps: Rss / private dirty, KiB, largest mappings; threads alive then):")
L.append("")
for n, out in rows.items():
    for r in out:
        m = ", ".join(f"{k} {v[0]}/{v[1]}" for k, v in r["smaps"].items())
        L.append(f"- {n} GPU(s), {r['target']} ({r['threads']} threads): {m}")
open(f"{W}/scrape-matrix.md", "w").write("\n".join(L) + "\n")
print("\n".join(L))
PY
