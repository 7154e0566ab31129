"""The optional GpuscoutGpuUnmanagedUse alert: promtool check and unit tests (a firing and a
silent case, and the tests bite), runbook conventions, and the chart adds it only when asked."""

from __future__ import annotations

import re
import subprocess

from conftest import CHART, REPO, manifests, tool, yaml_mod

RULES = CHART / "rules" / "gpuscout-unmanaged-rules.yaml"
TEST = REPO / "tests" / "alerts" / "gpuscout-unmanaged-rules.test.yaml"
NAME = "GpuscoutGpuUnmanagedUse"


def test_promtool_checks_and_tests_the_rule():
    r = subprocess.run([tool("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert r.returncode == 0 and "SUCCESS: 1 rules found" in r.stdout, r.stdout + r.stderr
    r = subprocess.run([tool("promtool"), "test", "rules", TEST.name], capture_output=True, text=True,
                       cwd=TEST.parent)
    assert r.returncode == 0, r.stdout + r.stderr


def test_unit_tests_have_a_firing_and_a_silent_case_and_bite(tmp_path):
    doc = yaml_mod().safe_load(TEST.read_text())
    cases = [c for t in doc["tests"] for c in t["alert_rule_test"]]
    assert any(c["exp_alerts"] for c in cases) and any(not c["exp_alerts"] for c in cases)
    # without the threshold the idle pod fires too: the tests must notice
    broken = RULES.read_text().replace(") > 0.01", ") > 0")
    assert broken != RULES.read_text()
    (tmp_path / "rules.yaml").write_text(broken)
    (tmp_path / "t.yaml").write_text(TEST.read_text().replace(
        "../../charts/gpuscout/rules/gpuscout-unmanaged-rules.yaml", "rules.yaml"))
    r = subprocess.run([tool("promtool"), "test", "rules", "t.yaml"], capture_output=True, text=True,
                       cwd=tmp_path)
    assert r.returncode != 0 and NAME in r.stdout + r.stderr


def test_annotations_and_runbook():
    rule = yaml_mod().safe_load(RULES.read_text())["groups"][0]["rules"][0]
    assert rule["alert"] == NAME and rule["labels"]["severity"] == "warning"
    assert rule["annotations"]["runbook_url"].endswith(f"/docs/runbooks/{NAME.lower()}.md")
    text = (REPO / "docs" / "runbooks" / f"{NAME.lower()}.md").read_text()
    for section in ("## Meaning", "## Impact", "## Diagnosis", "## Mitigation"):
        assert section in text
    assert NAME in (REPO / "docs" / "runbooks" / "README.md").read_text()


def alerts(values) -> set[str]:
    rules = [d for d in manifests(values) if d["kind"] == "PrometheusRule"]
    return {r.get("alert") for d in rules for g in d["spec"]["groups"] for r in g["rules"]}


def test_chart_adds_the_alert_only_when_enabled():
    base = {"monitoring": {"crdCheck": False, "prometheusRule": {"enabled": True}}}
    assert NAME not in alerts(base)
    on = {"monitoring": {"crdCheck": False, "prometheusRule": {"enabled": True,
                                                               "unmanagedGpuUse": {"enabled": True}}}}
    got = alerts(on)
    assert NAME in got and "GpuscoutDriverNotReady" in got
    # the job name substitution applies to this group too
    on["monitoring"]["jobName"] = "gpu-agents"
    text = "\n".join(str(d) for d in manifests(on) if d["kind"] == "PrometheusRule")
    assert 'job="gpu-agents"' in text and not re.search(r'job="gpuscout"', text)


def test_chart_process_metrics_and_pod_resources_mounts():
    def pod(values):
        return next(d for d in manifests(values) if d["kind"] == "DaemonSet")["spec"]["template"]["spec"]

    # off by default: no host path beyond the agent's table, non-root, no capability
    p = pod(None)
    c = p["containers"][0]
    assert "--pod-resources=false" in c["args"] and "--process-metrics=false" in c["args"]
    names = {v["name"] for v in p["volumes"]}
    assert not names & {"host-pod-resources", "host-proc", "host-var-log-pods", "host-var-log-containers"}
    assert "add" not in c["securityContext"]["capabilities"] and not p.get("hostPID")
    assert p["securityContext"]["runAsUser"] == 65532
    # the kubelet socket: its own read-only volume, uid 0 (the socket is root's)
    pr = pod({"podResources": {"enabled": True}})
    c = pr["containers"][0]
    assert "--pod-resources=true" in c["args"] and pr["securityContext"]["runAsUser"] == 0
    mount = next(m for m in c["volumeMounts"] if m["name"] == "host-pod-resources")
    assert mount["mountPath"] == "/host/var/lib/kubelet/pod-resources" and mount["readOnly"] is True
    vol = next(v for v in pr["volumes"] if v["name"] == "host-pod-resources")
    assert vol["hostPath"] == {"path": "/var/lib/kubelet/pod-resources", "type": "Directory"}
    assert "add" not in c["securityContext"]["capabilities"]
    # per-process usage: /proc and the kubelet's log directories, two capabilities, hostPID
    on = pod({"processMetrics": {"enabled": True, "hostPID": True}})
    c = on["containers"][0]
    assert "--process-metrics=true" in c["args"] and "--process-max-series=1000" in c["args"]
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["SYS_PTRACE", "DAC_READ_SEARCH"]}
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["host-proc"] == "/host/proc"
    assert mounts["host-var-log-pods"] == "/host/var/log/pods"
    assert mounts["host-var-log-containers"] == "/host/var/log/containers"
    assert on["hostPID"] is True and on["securityContext"]["runAsUser"] == 0
    # the unprivileged tier has no host paths: both features off
    un = pod({"security": {"tier": "unprivileged"}, "processMetrics": {"enabled": True},
              "podResources": {"enabled": True}})
    c = un["containers"][0]
    assert "--pod-resources=false" in c["args"] and "--process-metrics=false" in c["args"]
    assert all("hostPath" not in v for v in un["volumes"])


def test_monitors_keep_the_workload_labels_of_usage_series():
    """Both monitors put the workload's namespace/pod/container back on the usage series (the
    operator's target labels would otherwise rename them exported_*); the same rules, in
    Prometheus' own syntax, are exercised against a real Prometheus in tests/integration/pods.rs."""
    from conftest import objects

    sm = {"monitoring": {"crdCheck": False, "serviceMonitor": {"enabled": True}}}
    v = {"monitoring": {"crdCheck": False,
                        "podMonitor": {"enabled": True, "metricRelabelings": [{"action": "labeldrop", "regex": "x"}]}}}
    for kind, key, vals in (("ServiceMonitor", "endpoints", sm), ("PodMonitor", "podMetricsEndpoints", v)):
        ep = objects(vals, kind)[0]["spec"][key][0]
        rules = ep["metricRelabelings"]
        targets = [r.get("targetLabel") for r in rules if r["action"] == "replace"]
        assert targets == ["namespace", "pod", "container"], kind
        for r in rules[:3]:
            assert r["sourceLabels"][0] == "__name__" and r["replacement"] == "$2"
            assert r["regex"] == "gpuscout_(process_gpu_.+|gpu_allocation_info);(.*)"
        assert rules[3] == {"action": "labeldrop", "regex": "exported_(namespace|pod|container)"}
    # the user's own rules come after ours
    pm = objects(v, "PodMonitor")[0]["spec"]["podMetricsEndpoints"][0]["metricRelabelings"]
    assert pm[-1] == {"action": "labeldrop", "regex": "x"}
