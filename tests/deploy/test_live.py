"""Dashboards and alert rules against a real Prometheus scraping real `gpuscout serve` agents.

One agent per fixture host root (tests/fixtures/hosts/*), each on its own loopback port and
labelled like the chart's monitors label it (job="gpuscout", node=<profile>, cluster="test").
Prometheus (Debian's, 127.0.0.1 only) scrapes them every second and evaluates the chart's rules
file. Then:
- every panel query and every template-variable query of dashboards/*.json is sent to
  /api/v1/query and must return data;
- the alerts Prometheus holds (pending: their `for:` has not elapsed) are exactly the ones the
  agents' own `gpuscout discover` verdicts call for, with the real label names and values;
- XIDs reach the H100 agent while it runs (the NVML double delivers them only once the test
  opens its gate, after Prometheus has scraped the agent), and GpuscoutGpuXidErrors fires for
  exactly the hardware XIDs the agent's own /metrics counts.

Queries that cannot return data on fixture hosts are listed in NO_DATA_ON_FIXTURES with the
reason; the test also fails when one of them does return data (the list must not go stale).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO, RULES, tool

import dashboard_lint

HOSTS = REPO / "tests" / "fixtures" / "hosts"
DASHBOARDS = sorted((REPO / "dashboards").glob("*.json"))

# Panel title -> why no fixture host root can feed it. Empty: the H100 agent loads the NVML test
# double (tests/nvml-double, with ECC counts, and XIDs that arrive while the agent runs) and the
# Strix Halo agent syncs its
# labels to an NFD features file, so XID, ECC and label-sync panels have data too.
NO_DATA_ON_FIXTURES: dict[str, str] = {
    # gpuscout-pods.json: fixture agents have no kubelet socket. tests/integration/pods.rs runs
    # every panel of that dashboard against a real Prometheus with a fake kubelet.
    "Device-plugin allocations": "no kubelet PodResources socket on fixture hosts",
    "Busy pods without an allocation": "no kubelet PodResources socket on fixture hosts",
}

# Host roots with pods using their GPUs (tests/fixtures/pods): the per-pod panels' data.
POD_HOSTS = REPO / "tests" / "fixtures" / "pods"


def agent_roots() -> list[Path]:
    """Every fixture host root an agent runs on: tests/fixtures/hosts/* and tests/fixtures/pods/*."""
    return sorted(p for d in (HOSTS, POD_HOSTS) for p in d.iterdir() if p.is_dir())

# The NVML double's script for the nvidia-h100-mig fixture (format: tests/nvml-double/nvml_double.c).
H100_NVML = """driver_version=550.127.05
cuda_version=12040
gpu.0.bus_id=00000000:1B:00.0
gpu.0.name=NVIDIA H100 80GB HBM3
gpu.0.uuid=GPU-8f0c2a5e-1d3b-4c7a-9e21-0b6d4f8a2c11
gpu.0.pci_device_id=0x233010de
gpu.0.mem_total=85520809984
gpu.0.mem_used=1048576000
gpu.0.util_gpu=12
gpu.0.temp=41
gpu.0.power_mw=91000
gpu.0.power_limit_mw=700000
gpu.0.energy_mj=123456789
gpu.0.clock_graphics=1980
gpu.0.clock_sm=1980
gpu.0.clock_mem=2619
gpu.0.cc=9.0
gpu.0.arch=9
gpu.0.mig_current=1
gpu.0.mig_devices=2
gpu.0.ecc_mode=1
gpu.0.ecc_corrected=5
gpu.0.ecc_uncorrected=2
gpu.0.xid=79,48,13
xid_gate=xid-now
"""
# XIDs NVIDIA attributes to applications; the XID alert leaves them out.
APPLICATION_XIDS = {"13", "31", "43", "45"}


def nvml_double(tmp) -> Path:
    """Build the NVML test double with the system cc, scripted for the H100 fixture."""
    d = tmp / "nvml"
    d.mkdir()
    lib = d / "libnvidia-ml.so.1"
    cc = subprocess.run(["cc", "-shared", "-fPIC", "-O1", "-o", str(lib),
                         str(REPO / "tests" / "nvml-double" / "nvml_double.c")],
                        capture_output=True, text=True)
    assert cc.returncode == 0, cc.stderr
    (d / "nvml_double.conf").write_text(H100_NVML)
    return lib


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)


def query(base: str, expr: str) -> list:
    body = get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    assert body["status"] == "success", body
    return body["data"]["result"]


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    binary = os.environ.get("GPUSCOUT_BINARY") or str(REPO / "target" / "debug" / "gpuscout")
    if not os.path.exists(binary):
        pytest.fail(f"no gpuscout binary at {binary}: set GPUSCOUT_BINARY (cargo test sets it)")
    prom_bin = tool("promtool").replace("promtool", "prometheus")
    if not os.path.exists(prom_bin):
        pytest.fail("prometheus is not installed; apt-get install -y --no-install-recommends prometheus")
    tmp = tmp_path_factory.mktemp("live")
    procs: list[subprocess.Popen] = []
    targets = []
    agents: dict[str, str] = {}
    try:
        nvml_lib = nvml_double(tmp)
        for host in agent_roots():
            port = free_port()
            log = open(tmp / f"agent-{host.name}.log", "w")
            extra = []
            if host.name == "nvidia-h100-mig":
                extra = ["--nvml-lib", str(nvml_lib)]
            if host.name == "talos-strixhalo-apu":
                extra = ["--labels", "nfd-file", "--nfd-file", str(tmp / "nfd-features")]
            procs.append(subprocess.Popen(
                [binary, "serve", "--root", str(host), "--listen", f"127.0.0.1:{port}",
                 "--discovery-interval", "2s", *extra],
                stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "RUST_LOG": "warn", "KUBERNETES_SERVICE_HOST": ""}))
            targets.append({"targets": [f"127.0.0.1:{port}"],
                            "labels": {"node": host.name, "cluster": "test"}})
            agents[host.name] = f"http://127.0.0.1:{port}"
        cfg = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
               "rule_files": [str(RULES)],
               "scrape_configs": [{"job_name": "gpuscout", "static_configs": targets}]}
        (tmp / "prometheus.yml").write_text(json.dumps(cfg))
        pport = free_port()
        plog = open(tmp / "prometheus.log", "w")
        procs.append(subprocess.Popen(
            [prom_bin, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{pport}", "--log.level=warn"],
            stdout=plog, stderr=subprocess.STDOUT))
        base = f"http://127.0.0.1:{pport}"
        # Bounded wait (Prometheus 2.42 applies new targets only every 5 s): every target up, and
        # enough samples for rate() over the dashboards' 30s windows.
        deadline = time.monotonic() + 60
        first_ok = None
        while time.monotonic() < deadline:
            try:
                up = query(base, 'up{job="gpuscout"} == 1')
                if len(up) == len(targets):
                    first_ok = first_ok or time.monotonic()
                    if time.monotonic() - first_ok >= 8:
                        break
            except (OSError, AssertionError):
                pass
            time.sleep(0.5)
        else:
            logs = "\n".join(p.read_text()[-2000:] for p in tmp.glob("*.log"))
            pytest.fail(f"not every agent was up in Prometheus within 60 s:\n{logs}")
        # Prometheus has scraped the H100 agent without XIDs; now they happen (the agent drains
        # NVML's event sets every second), and the XID panels get data.
        assert not query(base, "gpuscout_gpu_xid_errors_total"), "XIDs before the gate opened"
        (nvml_lib.parent / "xid-now").write_text("")
        deadline = time.monotonic() + 30
        while not query(base, "gpuscout_gpu_xid_errors_total"):
            if time.monotonic() > deadline:
                pytest.fail("the XIDs never reached Prometheus")
            time.sleep(0.5)
        yield {"base": base, "binary": binary, "agents": agents}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def live_substitute(expr: str) -> str:
    # the dashboards' variables: all clusters, nodes and GPUs; a rate window that holds samples
    return re.sub(r"\$__rate_interval", "30s", expr).replace("$cluster", ".*").replace(
        "$node", ".*").replace("$gpu", ".*")


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_panel_query_returns_data(prometheus, path):
    prometheus = prometheus["base"]
    d = json.loads(path.read_text())
    empty, unexpected = [], []
    for panel, t in dashboard_lint.targets(d):
        result = query(prometheus, live_substitute(t["expr"]))
        title = panel["title"]
        print(f"{path.name}: {title} [{t['refId']}]: {len(result)} series")
        if title in NO_DATA_ON_FIXTURES:
            if result:
                unexpected.append(title)
        elif not result:
            empty.append(f"{title}: {t['expr']}")
    assert not empty, "panel queries without data:\n" + "\n".join(empty)
    assert not unexpected, f"listed as no-data but returned data (update NO_DATA_ON_FIXTURES): {unexpected}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_variable_has_values(prometheus, path):
    prometheus = prometheus["base"]
    d = json.loads(path.read_text())
    for v in d["templating"]["list"]:
        if v["type"] != "query":
            continue
        m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", v["query"]["query"])
        series = query(prometheus, live_substitute(m.group(1)))
        values = {s["metric"].get(m.group(2)) for s in series} - {None}
        assert values, f"variable {v['name']} has no values"


def expected_alerts(binary: str) -> set[tuple[str, str, str]]:
    """(alertname, node, gpu) the rules must hold, from each fixture's own discover verdicts."""
    want = set()
    for host in agent_roots():
        out = subprocess.run([binary, "discover", "--root", str(host), "--format", "json"],
                             capture_output=True, text=True, env={**os.environ, "RUST_LOG": "warn"})
        assert out.returncode == 0, out.stderr
        for g in json.loads(out.stdout)["gpus"]:
            if g["status"] == "extension-missing":
                want.add(("GpuscoutTalosExtensionMissing", host.name, g["pci_address"]))
            elif g["status"] not in ("ok", "bound-to-other-driver"):
                want.add(("GpuscoutDriverNotReady", host.name, g["pci_address"]))
    return want


def agent_xids(agents: dict[str, str]) -> set[tuple[str, str, str]]:
    """(node, gpu, xid) of every XID series the agents' own /metrics exports."""
    out = set()
    for node, url in agents.items():
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
            text = r.read().decode()
        for line in text.splitlines():
            if line.startswith("gpuscout_gpu_xid_errors_total{"):
                labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
                out.add((node, labels["gpu"], labels["xid"]))
    return out


def test_first_xids_after_start_fire_the_xid_alert(prometheus):
    """The XIDs arrived after the agent had been scraped without them: the agent's first series
    for each starts at 1. Every hardware XID the agent exports fires GpuscoutGpuXidErrors."""
    base = prometheus["base"]
    xids = agent_xids(prometheus["agents"])
    assert {x for _, _, x in xids} == {"79", "48", "13"}, xids
    want = {(n, g, x) for n, g, x in xids if x not in APPLICATION_XIDS}
    deadline = time.monotonic() + 30
    while True:
        got = {(a["labels"]["node"], a["labels"]["gpu"], a["labels"]["xid"])
               for a in get(f"{base}/api/v1/alerts")["data"]["alerts"]
               if a["labels"]["alertname"] == "GpuscoutGpuXidErrors"}
        if got == want or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert got == want


def test_alerts_follow_the_agents_verdicts(prometheus):
    base = prometheus["base"]
    want = expected_alerts(prometheus["binary"])
    # the agent-level and hardware alerts that must stay silent on healthy fixture agents (the
    # H100's ECC counts are lifetime counts that do not change while the agent runs; its XIDs
    # are checked by test_first_xids_after_start_fire_the_xid_alert)
    silent = {"GpuscoutAgentDown", "GpuscoutAgentAbsent", "GpuscoutGpuCountDropped",
              "GpuscoutLabelSyncFailing", "GpuscoutGpuUncorrectedEccErrors"}
    deadline = time.monotonic() + 30
    while True:
        alerts = get(f"{base}/api/v1/alerts")["data"]["alerts"]
        got = {(a["labels"]["alertname"], a["labels"].get("node"), a["labels"].get("gpu"))
               for a in alerts
               if a["labels"]["alertname"] in ("GpuscoutDriverNotReady", "GpuscoutTalosExtensionMissing")}
        if got == want or time.monotonic() > deadline:
            break
        time.sleep(1)
    print(f"expected driver alerts: {sorted(want)}")
    assert got == want
    for a in alerts:
        assert a["labels"]["alertname"] not in silent, a
        assert a["labels"]["severity"] in ("critical", "warning", "info")
        assert a["annotations"]["runbook_url"].endswith(a["labels"]["alertname"].lower() + ".md")
    # a failing source shows up as a pending GpuscoutSourceFailing with the source's name
    failing = {(s["metric"]["node"], s["metric"]["source"])
               for s in query(base, 'gpuscout_scrape_source_success{job="gpuscout"} == 0')}
    pending = {(a["labels"]["node"], a["labels"]["source"]) for a in alerts
               if a["labels"]["alertname"] == "GpuscoutSourceFailing"}
    assert pending == failing


# The env vars the chart sets that are read by someone else than gpuscout's flag parser.
FOREIGN_ENV = {"RUST_LOG", "NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES"}


@pytest.mark.parametrize("scenario", sorted((REPO / "charts" / "gpuscout" / "ci").glob("*-values.yaml")),
                         ids=lambda p: p.name.removesuffix("-values.yaml"))
def test_chart_flags_and_env_are_the_agents(scenario):
    """Every flag the DaemonSet passes is accepted by the real `gpuscout serve`, and every
    GPUSCOUT_* / NODE_NAME variable it sets is one the agent documents."""
    from conftest import container, load_scenario

    binary = os.environ.get("GPUSCOUT_BINARY") or str(REPO / "target" / "debug" / "gpuscout")
    c = container(load_scenario(str(scenario)))
    # clap stops at the first unknown flag, before it sees --help
    r = subprocess.run([binary, *c["args"], "--help"], capture_output=True, text=True)
    assert r.returncode == 0, f"{c['args']}: {r.stderr}"
    documented = set(re.findall(r"\[env: ([A-Z_]+)=", r.stdout))
    for e in c["env"]:
        if e["name"] not in FOREIGN_ENV:
            assert e["name"] in documented, f"{e['name']} is not a gpuscout serve setting"
