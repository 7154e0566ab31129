"""Chart checks for least privilege and the knobs operators expect, with the real Helm SDK: the
host paths mounted are exactly the agent's own table (from the real binary), non-root, the
securityContext overrides, namespaceOverride, NetworkPolicy, the monitor and alert knobs, the
job selector shared by rules and dashboards, and the uninstall hook with its short-lived RBAC.
Each ci/ scenario is also rendered, linted and validated by test_chart.py."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from conftest import (CHART, NAMESPACE, RELEASE, RULES, binary, helm, hook_objects, load_scenario,
                      manifests, objects, one, render, tool, yaml_mod)


def scenario(name: str) -> dict:
    return load_scenario(str(CHART / "ci" / f"{name}-values.yaml"))


def pod(values=None) -> dict:
    return one(values, "DaemonSet")["spec"]["template"]["spec"]


def container(values=None) -> dict:
    return pod(values)["containers"][0]


def agent_table() -> list[dict]:
    """The host-path table of the real binary (`gpuscout host-paths`)."""
    r = subprocess.run([binary(), "host-paths"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return yaml_mod().safe_load(r.stdout)["mounts"]


def host_mounts(values=None) -> dict[str, tuple]:
    """{host path: (mountPath, readOnly, hostPath type)} of the rendered hostPath volumes."""
    p, c = pod(values), container(values)
    vols = {v["name"]: v["hostPath"] for v in p["volumes"] if "hostPath" in v}
    out = {}
    for m in c["volumeMounts"]:
        if m["name"] in vols:
            hp = vols[m["name"]]
            out[hp["path"]] = (m["mountPath"], m.get("readOnly", False), hp.get("type", ""))
    assert len(out) == len(vols), "a hostPath volume without a mount"
    return out


# --- least privilege ---------------------------------------------------------------------------

def test_hostpath_mounts_are_the_agent_table():
    """The DaemonSet mounts exactly what the agent reads (its own table, from the binary), each
    read-only at the same place under /host; nothing else of the host."""
    table = agent_table()
    always = {m["path"]: m for m in table if not m["talosOnly"]}
    want = {p: (f"/host{p}", True, m["kind"] if m["typeCheck"] else "") for p, m in always.items()}
    assert host_mounts() == want
    assert "--root=/host" in container()["args"]
    # Talos' extensions file only on request, unchecked (Talos' kubelet cannot see it)
    talos = {m["path"]: m for m in table if m["talosOnly"]}
    assert list(talos) == ["/etc/extensions.yaml"]
    got = host_mounts(scenario("talos-extensions-file"))
    assert got == {**want, "/etc/extensions.yaml": ("/host/etc/extensions.yaml", True, "")}
    # nothing secret: no /, no /etc, no /var, no /dev, no /proc as a whole
    for p in got:
        assert p not in ("/", "/etc", "/var", "/dev", "/proc", "/sys", "/usr"), p
        assert not p.startswith(("/var/", "/etc/kubernetes", "/dev/", "/run")), p
    # the unprivileged tier has none
    assert host_mounts({"security": {"tier": "unprivileged"}}) == {}


def test_hostpath_check_bites_on_an_extra_mount():
    """A mount the agent does not read (an extra hostPath) shows up as a difference."""
    v = {"extraVolumes": [{"name": "kubelet", "hostPath": {"path": "/var/lib/kubelet"}}],
         "extraVolumeMounts": [{"name": "kubelet", "mountPath": "/host/var/lib/kubelet", "readOnly": True}]}
    assert "/var/lib/kubelet" in host_mounts(v)
    assert host_mounts(v) != host_mounts()


def test_non_root_everywhere_but_nfd_file():
    for v in (None, {"security": {"tier": "unprivileged"}}, {"nvml": {"runtimeClassName": "nvidia"}},
              {"security": {"privilegedContainer": True}}, {"labels": {"mode": "nodefeature"}}):
        sc = pod(v)["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532 and sc["runAsGroup"] == 65532, v
    # nfd-file writes the host's root-owned features.d directory: uid 0, still no capabilities
    v = {"labels": {"mode": "nfd-file"}}
    assert pod(v)["securityContext"]["runAsUser"] == 0
    assert container(v)["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_security_context_overrides_merge_over_the_chart():
    v = scenario("operator-knobs")
    sc = pod(v)["securityContext"]
    assert sc == {"runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": False, "supplementalGroups": [44],
                  "seccompProfile": {"type": "RuntimeDefault"}}
    csc = container(v)["securityContext"]
    assert csc["seccompProfile"] == {"type": "Localhost", "localhostProfile": "profiles/gpuscout.json"}
    # what the override does not name stays as the chart set it
    assert csc["readOnlyRootFilesystem"] is True and csc["capabilities"] == {"drop": ["ALL"]}
    assert csc["allowPrivilegeEscalation"] is False


# --- DaemonSet knobs ---------------------------------------------------------------------------

def test_namespace_override_moves_every_namespaced_object():
    v = {**scenario("operator-knobs"), "labels": {"mode": "nodefeature"},
         "monitoring": {"crdCheck": False, "podMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
         "dashboards": {"enabled": True}, "networkPolicy": {"enabled": True}}
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "ValidatingAdmissionPolicy",
                      "ValidatingAdmissionPolicyBinding"}
    docs = manifests(v, hooks=True)
    for d in docs:
        if d["kind"] in cluster_scoped:
            assert "namespace" not in d["metadata"], d["kind"]
        else:
            assert d["metadata"]["namespace"] == "gpu-agents", (d["kind"], d["metadata"]["name"])
    # and everything that names the namespace follows
    env = {e["name"]: e.get("value") for e in container(v)["env"]}
    assert env["GPUSCOUT_NODEFEATURE_NAMESPACE"] == "gpu-agents"
    assert one(v, "PodMonitor")["spec"]["namespaceSelector"]["matchNames"] == ["gpu-agents"]
    binding = next(b for b in objects(v, "ClusterRoleBinding") if b["metadata"]["name"] == "gpuscout")
    assert binding["subjects"][0]["namespace"] == "gpu-agents"
    vap = one(v, "ValidatingAdmissionPolicy")["spec"]["matchConditions"][0]["expression"]
    assert "system:serviceaccount:gpu-agents:gpuscout" in vap
    job = next(d for d in docs if d["kind"] == "Job")
    assert "--pods-namespace=gpu-agents" in job["spec"]["template"]["spec"]["containers"][0]["args"]


def test_revision_history_annotations_and_extra_volumes():
    v = scenario("operator-knobs")
    ds = one(v, "DaemonSet")
    assert ds["spec"]["revisionHistoryLimit"] == 3
    assert one(None, "DaemonSet")["spec"]["revisionHistoryLimit"] == 10
    assert ds["metadata"]["annotations"] == {"reloader.stakater.com/auto": "true"}
    assert "annotations" not in one(None, "DaemonSet")["metadata"]
    assert {"name": "corporate-ca", "configMap": {"name": "corporate-ca"}} in pod(v)["volumes"]
    assert {"name": "corporate-ca", "mountPath": "/etc/ssl/corporate", "readOnly": True} in container(v)["volumeMounts"]


def test_chart_has_an_icon_and_a_new_version():
    meta = yaml_mod().safe_load((CHART / "Chart.yaml").read_text())
    assert meta["icon"].startswith("https://") and meta["icon"].endswith("/docs/icon.svg")
    assert (CHART.parents[1] / "docs" / "icon.svg").read_text().lstrip().startswith("<svg")
    assert tuple(int(x) for x in meta["version"].split(".")) >= (0, 3, 0)


# --- NetworkPolicy -----------------------------------------------------------------------------

def test_networkpolicy_admits_only_the_scrapers_to_the_metrics_port():
    assert objects(None, "NetworkPolicy") == []
    np = one(scenario("networkpolicy"), "NetworkPolicy")["spec"]
    assert np["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "gpuscout",
                                                "app.kubernetes.io/instance": RELEASE}
    assert np["policyTypes"] == ["Ingress"], "egress stays open: the agent needs the API server"
    assert np["ingress"] == [{
        "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                  "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}],
        "ports": [{"port": 10106, "protocol": "TCP"}]}]
    # the port follows metrics.port, and the selectors take matchExpressions
    np = one({"networkPolicy": {"enabled": True, "podSelector": {"matchExpressions": [
        {"key": "app", "operator": "In", "values": ["prometheus", "vmagent"]}]}},
        "metrics": {"port": 9999}}, "NetworkPolicy")["spec"]
    assert np["ingress"][0]["ports"] == [{"port": 9999, "protocol": "TCP"}]
    assert np["ingress"][0]["from"][0]["podSelector"]["matchExpressions"][0]["values"] == ["prometheus", "vmagent"]


# --- monitors ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,name,key", [("ServiceMonitor", "servicemonitor-knobs", "endpoints"),
                                           ("PodMonitor", "podmonitor", "podMetricsEndpoints")])
def test_monitor_knobs(kind, name, key):
    m = one(scenario(name), kind)
    assert m["metadata"]["namespace"] == "monitoring"
    # it still scrapes the agents in the release namespace
    assert m["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert m["spec"]["sampleLimit"] == 5000
    assert m["spec"]["attachMetadata"] == {"node": True}
    assert m["spec"][key][0]["honorLabels"] is True
    # defaults: none of them rendered
    plain = one({"monitoring": {"crdCheck": False, kind[0].lower() + kind[1:]: {"enabled": True}}}, kind)
    assert plain["metadata"]["namespace"] == NAMESPACE
    assert not {"sampleLimit", "attachMetadata"} & set(plain["spec"])
    assert "honorLabels" not in plain["spec"][key][0]


def test_both_monitors_fail_with_a_message():
    h = helm()
    with h.Chart.load(str(CHART)) as c:
        with pytest.raises(h.HelmError) as e:
            c.render({"monitoring": {"crdCheck": False, "serviceMonitor": {"enabled": True},
                                     "podMonitor": {"enabled": True}}}, name=RELEASE, namespace=NAMESPACE)
    assert "scraped twice" in str(e.value)


# --- alert rules and the selector they share with the dashboards --------------------------------

def rules_of(values) -> dict[str, dict]:
    return {r["alert"]: r for g in one(values, "PrometheusRule")["spec"]["groups"]
            for r in g["rules"] if "alert" in r}


def test_alert_overrides():
    v = scenario("alert-overrides")
    src = {r["alert"]: r for g in yaml_mod().safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    got = rules_of(v)
    assert set(got) == set(src) - {"GpuscoutGpuXidErrors"}
    assert got["GpuscoutAgentDown"]["labels"]["severity"] == "critical"
    assert src["GpuscoutAgentDown"]["labels"]["severity"] == "warning"
    assert got["GpuscoutDriverNotReady"]["for"] == "30m"
    for name, r in got.items():
        assert r["labels"]["team"] == "platform", name
        # additionalRuleLabels never beat an alert's own labels, nor change anything else
        assert r["labels"]["severity"] == (src[name]["labels"]["severity"] if name != "GpuscoutAgentDown" else "critical")
        if name != "GpuscoutDriverNotReady":
            assert r.get("for") == src[name].get("for"), name
        assert r["annotations"] == src[name]["annotations"], name
    # unchanged without overrides
    plain = rules_of({"monitoring": {"crdCheck": False, "prometheusRule": {"enabled": True}}})
    assert {n: r["labels"] for n, r in plain.items()} == {n: r["labels"] for n, r in src.items()}


def test_alert_overrides_render_a_valid_rules_file(tmp_path):
    groups = one(scenario("alert-overrides"), "PrometheusRule")["spec"]["groups"]
    f = tmp_path / "rules.yaml"
    f.write_text(yaml_mod().safe_dump({"groups": groups}))
    r = subprocess.run([tool("promtool"), "check", "rules", str(f)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("what", ["disabled", "severityOverrides", "forOverrides"])
def test_an_override_naming_no_alert_fails_with_the_list(what):
    value = {"disabled": True, "severityOverrides": "info", "forOverrides": "1m"}[what]
    h = helm()
    with h.Chart.load(str(CHART)) as c:
        with pytest.raises(h.HelmError) as e:
            c.render({"monitoring": {"crdCheck": False, "prometheusRule": {
                "enabled": True, what: {"GpuscoutAgentDwon": value}}}}, name=RELEASE, namespace=NAMESPACE)
    msg = str(e.value)
    assert f"monitoring.prometheusRule.{what}.GpuscoutAgentDwon" in msg and "GpuscoutAgentDown" in msg, msg


def test_overrides_work_on_any_rule_list(tmp_path):
    """Rules added to the file later (another branch adds one) get the same treatment."""
    h = helm()
    with h.Chart.load(str(CHART)) as c:
        copy = c.save_dir(tmp_path)
    rules = tmp_path / "gpuscout" / "rules" / "gpuscout-rules.yaml"
    doc = yaml_mod().safe_load(rules.read_text())
    doc["groups"].append({"name": "extra", "rules": [
        {"record": "gpuscout:gpus:sum", "expr": 'sum(gpuscout_gpus{job="gpuscout"})'},
        {"alert": "GpuscoutNewAlert", "expr": 'up{job="gpuscout"} == 2', "for": "1m",
         "labels": {"severity": "info"}, "annotations": {"summary": "x"}}]})
    rules.write_text(yaml_mod().safe_dump(doc))
    v = {"monitoring": {"crdCheck": False, "jobName": "gpu-agent", "prometheusRule": {
        "enabled": True, "severityOverrides": {"GpuscoutNewAlert": "critical"},
        "forOverrides": {"GpuscoutNewAlert": "7m"}, "additionalRuleLabels": {"team": "x"},
        "disabled": {"GpuscoutAgentDown": True}}}}
    with h.Chart.load(copy) as c:
        out = c.render(v, name=RELEASE, namespace=NAMESPACE)
    groups = yaml_mod().safe_load(out["gpuscout/templates/prometheusrule.yaml"])["spec"]["groups"]
    extra = next(g for g in groups if g["name"] == "extra")["rules"]
    assert extra[0] == {"record": "gpuscout:gpus:sum", "expr": 'sum(gpuscout_gpus{job="gpu-agent"})'}, \
        "a recording rule gets the selector but no alert labels"
    assert extra[1]["labels"] == {"severity": "critical", "team": "x"} and extra[1]["for"] == "7m"
    assert extra[1]["expr"] == 'up{job="gpu-agent"} == 2'
    assert "GpuscoutAgentDown" not in json.dumps(groups)


def test_dashboards_select_exactly_what_the_rules_select():
    """With a job name and a namespace, no rule and no dashboard query keeps job="gpuscout"; both
    use the same matchers."""
    v = scenario("alert-overrides")
    want = 'job="gpu-agent", namespace="gpu-system"'
    rule_text = json.dumps(one(v, "PrometheusRule")["spec"])
    assert 'job=\\"gpuscout\\"' not in rule_text and 'job=\\"gpu-agent\\", namespace=\\"gpu-system\\"' in rule_text
    exprs = []
    for cm in objects(v, "ConfigMap"):
        for text in cm["data"].values():
            dash = json.loads(text)

            def walk(node):
                if isinstance(node, dict):
                    for k, x in node.items():
                        if k in ("expr", "query") and isinstance(x, str) and "job=" in x:
                            exprs.append(x)
                        walk(x)
                elif isinstance(node, list):
                    for x in node:
                        walk(x)
            walk(dash)
    assert len(exprs) >= 4, exprs
    assert all(want in e and 'job="gpuscout"' not in e for e in exprs), exprs
    # the monitoring scenario (job name only) has no query left on the default job either
    texts = [t for cm in objects(scenario("monitoring"), "ConfigMap") for t in cm["data"].values()]
    assert not any('job=\\"gpuscout\\"' in t for t in texts)
    assert sum(t.count('job=\\"gpu-agent\\"') for t in texts) >= 4


# --- uninstall hook ----------------------------------------------------------------------------

HOOK_KINDS = ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Job"]


def test_cleanup_hook_runs_prune_once_after_delete():
    hooks = hook_objects(None)
    assert sorted(d["kind"] for d in hooks) == sorted(HOOK_KINDS)
    for d in hooks:
        ann = d["metadata"]["annotations"]
        assert ann["helm.sh/hook"] == "post-delete", d["kind"]
        policy = set(ann["helm.sh/hook-delete-policy"].split(","))
        if d["kind"] == "Job":
            # kept after a failure, for its logs
            assert policy == {"before-hook-creation", "hook-succeeded"}
            assert int(ann["helm.sh/hook-weight"]) > -10
        else:
            # the RBAC lives only as long as the hook, whatever its outcome
            assert policy == {"before-hook-creation", "hook-succeeded", "hook-failed"}, d["kind"]
            assert ann["helm.sh/hook-weight"] == "-10", d["kind"]
    job = next(d for d in hooks if d["kind"] == "Job")
    spec = job["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "gpuscout-cleanup" and spec["restartPolicy"] == "Never"
    args = spec["containers"][0]["args"]
    assert args == ["prune-labels", "--all-nodes", "--label-prefix=gpuscout.io",
                    "--wait-for-pods=app.kubernetes.io/name=gpuscout,app.kubernetes.io/instance=gpuscout",
                    f"--pods-namespace={NAMESPACE}", "--wait-timeout=120s"]
    # the wait selector is the DaemonSet's pod selector, and the Job's own pod does not match it
    sel = one(None, "DaemonSet")["spec"]["selector"]["matchLabels"]
    assert args[3] == "--wait-for-pods=" + ",".join(f"{k}={v}" for k, v in sel.items())
    own = job["spec"]["template"]["metadata"]["labels"]
    assert any(own.get(k) != v for k, v in sel.items())
    # also with the longest names, where truncation could make them equal
    long = {"nameOverride": "a" * 63, "fullnameOverride": "b" * 63}
    ljob = next(d for d in hook_objects(long) if d["kind"] == "Job")
    lsel = one(long, "DaemonSet")["spec"]["selector"]["matchLabels"]
    assert any(ljob["spec"]["template"]["metadata"]["labels"].get(k) != v for k, v in lsel.items())
    assert len(ljob["metadata"]["name"]) <= 63 and ljob["metadata"]["name"].endswith("-cleanup")
    # Pod Security restricted: nothing but the API token
    sc, csc = spec["securityContext"], spec["containers"][0]["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert csc["allowPrivilegeEscalation"] is False and csc["capabilities"] == {"drop": ["ALL"]}
    assert not [v for v in spec.get("volumes", [])]


def test_cleanup_rbac_is_minimal_and_namespaced_where_it_can_be():
    hooks = {d["kind"]: d for d in hook_objects(None)}
    assert hooks["ClusterRole"]["rules"] == [{"apiGroups": [""], "resources": ["nodes"],
                                              "verbs": ["get", "list", "patch"]}]
    assert hooks["Role"]["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]
    for b in ("ClusterRoleBinding", "RoleBinding"):
        assert hooks[b]["subjects"] == [{"kind": "ServiceAccount", "name": "gpuscout-cleanup",
                                         "namespace": NAMESPACE}]
    # mode nodefeature: also list and delete NodeFeatures, and the Job deletes ours
    v = {"labels": {"mode": "nodefeature"}}
    hooks = {d["kind"]: d for d in hook_objects(v)}
    assert {"apiGroups": ["nfd.k8s-sigs.io"], "resources": ["nodefeatures"], "verbs": ["list", "delete"]} \
        in hooks["Role"]["rules"]
    assert f"--nodefeature-namespace={NAMESPACE}" in \
        hooks["Job"]["spec"]["template"]["spec"]["containers"][0]["args"]


def test_cleanup_off_and_not_in_nfd_file_mode():
    assert hook_objects(scenario("cleanup-off")) == []
    assert hook_objects({"labels": {"mode": "nfd-file"}}) == []
    # the agent's own objects are the same with and without the hook
    assert manifests(scenario("cleanup-off")) == manifests(None)


def test_cleanup_job_args_are_accepted_by_the_real_binary(tmp_path):
    """The hook's flags parse: the binary gets as far as the (missing) cluster, not a usage error."""
    for v in (None, {"labels": {"mode": "nodefeature"}}):
        job = next(d for d in hook_objects(v) if d["kind"] == "Job")
        args = job["spec"]["template"]["spec"]["containers"][0]["args"]
        r = subprocess.run([binary(), *args, f"--kubeconfig={tmp_path}/missing"],
                           capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
        assert r.returncode == 2, r.stderr
        assert "kubeconfig" in r.stderr and "unexpected argument" not in r.stderr, r.stderr
