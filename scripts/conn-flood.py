#!/usr/bin/env python3
"""Idle-connection flood against `gpuscout serve` on 127.0.0.1, bounded in count and time.

Starts the given binary as a standalone exporter on a fixture host root, opens N idle TCP
connections (default 20,000) from helper processes (at most 9,000 each, so no process needs
more descriptors than a default hard limit allows) and holds them, then reports the server's
open descriptors and RSS before, during and after, and whether /healthz, /readyz and /metrics
answer meanwhile. Raises RLIMIT_NOFILE as far as the hard limit allows.

Usage: scripts/conn-flood.py [--bin target/release/gpuscout] [--conns 20000] [--root DIR]
"""

import argparse
import multiprocessing
import os
import resource
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, n)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, PermissionError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def get_body(port, path, timeout=5.0):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        return head, body.decode(errors="replace")
    except OSError:
        return b"", ""


def get(port, path, timeout=5.0):
    """(status, seconds) of one HTTP/1.0 GET; status 0 on failure."""
    t0 = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
    except OSError:
        status = 0
    return status, time.monotonic() - t0


def holder(port, count, conn):
    """Open `count` idle connections, report how many opened, hold them until told to close."""
    raise_nofile(count + 256)
    held, t0 = [], time.monotonic()
    for _ in range(count):
        if time.monotonic() - t0 > 120:
            break
        try:
            held.append(socket.create_connection(("127.0.0.1", port), timeout=2))
        except OSError:
            pass
    conn.send(len(held))
    conn.recv()
    for s in held:
        s.close()
    conn.send("closed")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(REPO, "target/release/gpuscout"))
    ap.add_argument("--conns", type=int, default=20000)
    ap.add_argument("--root", default=os.path.join(REPO, "tests/fixtures/hosts/dual-vendor"))
    ap.add_argument("--extra", default="", help="extra serve flags, space separated")
    a = ap.parse_args()
    n = min(a.conns, 50000)  # bounded
    limit = raise_nofile(4096)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [a.bin, "--root", a.root, "serve", "--listen", f"127.0.0.1:{port}", "--labels", "off"]
    cmd += a.extra.split()
    env = dict(os.environ, RUST_LOG="warn")
    env.pop("KUBERNETES_SERVICE_HOST", None)
    srv = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           preexec_fn=lambda: raise_nofile(n + 2048))
    try:
        for _ in range(200):
            if get(port, "/readyz", 1.0)[0] == 200:
                break
            time.sleep(0.1)
        else:
            sys.exit("server not ready")
        get(port, "/metrics")
        rows = [("idle, before", fds(srv.pid), rss_kib(srv.pid), "", "", "")]
        per = 9000
        pipes, procs = [], []
        t0 = time.monotonic()
        for i in range(0, n, per):
            parent, child = multiprocessing.Pipe()
            p = multiprocessing.Process(target=holder, args=(port, min(per, n - i), child))
            p.start()
            pipes.append(parent)
            procs.append(p)
        opened_n = sum(c.recv() for c in pipes)
        failed = n - opened_n
        opened = time.monotonic() - t0
        time.sleep(2)
        probes = [get(port, p) for p in ("/healthz", "/readyz", "/metrics")]
        rows.append((f"{opened_n} idle connections held", fds(srv.pid), rss_kib(srv.pid),
                     *(f"{c} ({t * 1000:.0f} ms)" for c, t in probes)))
        for c in pipes:
            c.send("close")
        for c in pipes:
            c.recv()
        for p in procs:
            p.join(10)
        time.sleep(3)
        probes = [get(port, p) for p in ("/healthz", "/readyz", "/metrics")]
        rows.append(("3 s after closing them", fds(srv.pid), rss_kib(srv.pid),
                     *(f"{c} ({t * 1000:.0f} ms)" for c, t in probes)))
        _, metrics = get_body(port, "/metrics")
        conn_lines = [l for l in metrics.splitlines()
                      if l.startswith("gpuscout_http_connections")]
        print(f"server: {' '.join(cmd)}")
        print(f"RLIMIT_NOFILE {limit}; {n} connects asked, {failed} failed, "
              f"{opened:.1f} s to open")
        print()
        print("| phase | server fds | server RSS (MiB) | /healthz | /readyz | /metrics |")
        print("|---|---:|---:|---|---|---|")
        for r in rows:
            print(f"| {r[0]} | {r[1]} | {r[2] / 1024:.1f} | {r[3]} | {r[4]} | {r[5]} |")
        print()
        print("\n".join(conn_lines))
    finally:
        srv.terminate()
        try:
            srv.wait(10)
        except subprocess.TimeoutExpired:
            srv.kill()
        err = srv.stderr.read().decode(errors="replace").strip().splitlines()
        if err:
            print(f"\nserver log: {len(err)} lines; last: {err[-1][:300]}")


if __name__ == "__main__":
    main()
