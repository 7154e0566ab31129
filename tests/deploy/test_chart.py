"""Helm chart checks with the real Helm Go SDK (helm-python-sdk): every ci/ scenario renders, lints
strictly, validates with kubernetes-validate --strict; the schema rejects bad values; and the
rendered objects say what the chart promises (security tiers, RBAC, admission policy, monitors)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import (CHART, NAMESPACE, RELEASE, REPO, RULES, binary, helm, load_scenario, manifests,
                      objects, one, render, scenario_name, scenarios, tool, yaml_mod)

# The oldest Kubernetes the chart supports (VAP v1, node-name claim) and a current one.
KUBE_VERSIONS = ["1.30.0", "1.35.0"]
SCENARIOS = scenarios()


def container(values=None) -> dict:
    return one(values, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]


def pod(values=None) -> dict:
    return one(values, "DaemonSet")["spec"]["template"]["spec"]


# --- every scenario --------------------------------------------------------------------------

@pytest.mark.parametrize("path", SCENARIOS, ids=scenario_name)
def test_scenario_renders_and_validates_strictly(path, tmp_path):
    docs = manifests(load_scenario(path), hooks=True)
    assert any(d["kind"] == "DaemonSet" for d in docs)
    out = tmp_path / "rendered.yaml"
    out.write_text(yaml_mod().safe_dump_all(docs))
    for k in KUBE_VERSIONS:
        r = subprocess.run([tool("kubernetes-validate"), "-k", k, "--strict", "--quiet", str(out)],
                           capture_output=True, text=True)
        assert r.returncode == 0, f"kubernetes {k}:\n{r.stdout}{r.stderr}"
        # Objects it has no schema for may only be the Prometheus Operator's and Talos'
        # ServiceAccount: both are checked structurally below / in test_chart_security.py.
        for line in (r.stdout + r.stderr).splitlines():
            if "Couldn't find schema" in line:
                assert "monitoring.coreos.com/v1" in line or "talos.dev/v1alpha1" in line, line


@pytest.mark.parametrize("path", SCENARIOS, ids=scenario_name)
def test_scenario_lints_strictly(path):
    report = helm().lint(str(CHART), load_scenario(path), strict=True, namespace=NAMESPACE,
                         kube_version="v1.32.0")
    assert report["errors"] == [], report
    # strict: warnings (severity 2) and errors (3) fail; info (1) may stay, but not the missing icon
    assert [m for m in report["messages"] if m["severity"] >= 2] == [], report
    assert not [m for m in report["messages"] if "icon" in str(m).lower()], report


def test_lint_catches_a_broken_template(tmp_path):
    """The lint step bites: a template with a syntax error is reported."""
    h = helm()
    with h.Chart.load(str(CHART)) as c:
        copy = c.save_dir(tmp_path)
    (tmp_path / "gpuscout" / "templates" / "broken.yaml").write_text("{{ if }}\n")
    report = h.lint(copy, strict=True)
    assert report["errors"] or any(m["severity"] >= 3 for m in report["messages"]), report


def test_validator_catches_an_unknown_field(tmp_path):
    docs = manifests()
    ds = next(d for d in docs if d["kind"] == "DaemonSet")
    ds["spec"]["template"]["spec"]["hostRoot"] = True
    out = tmp_path / "bad.yaml"
    out.write_text(yaml_mod().safe_dump_all(docs))
    r = subprocess.run([tool("kubernetes-validate"), "-k", "1.32.0", "--strict", str(out)],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "hostRoot" in r.stdout + r.stderr


# --- schema ----------------------------------------------------------------------------------

BAD_VALUES = [
    ({"security": {"tier": "root"}}, "/security/tier"),
    ({"labels": {"mode": "kubectl"}}, "/labels/mode"),
    ({"labels": {"prefix": "Gpuscout.IO"}}, "/labels/prefix"),
    ({"labels": {"prefix": "kubernetes.io"}}, "/labels/prefix"),
    ({"metrics": {"port": 70000}}, "/metrics/port"),
    ({"metrics": {"port": "10106"}}, "/metrics/port"),
    ({"replicas": 3}, "replicas"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ({"image": {"digest": "latest"}}, "/image/digest"),
    ({"updateStrategy": {"rollingUpdate": {"maxUnavailable": "a fifth"}}}, "maxUnavailable"),
    ({"admissionPolicy": {"validationActions": ["Block"]}}, "/admissionPolicy/validationActions"),
    ({"monitoring": {"serviceMonitor": {"enabled": True, "interval": "often"}}}, "interval"),
    ({"monitoring": {"serviceMonitor": {"enabled": True, "honorLabels": "yes"}}}, "honorLabels"),
    ({"monitoring": {"podMonitor": {"enabled": True, "sampleLimit": -1}}}, "sampleLimit"),
    ({"monitoring": {"podMonitor": {"attachMetadata": {"pod": True}}}}, "pod"),
    # tier/mode combinations say what is wrong and what to do, in words
    ({"security": {"tier": "unprivileged"}, "labels": {"mode": "nfd-file"}},
     "labels.mode=nfd-file writes the NFD features.d directory of the host (a hostPath): use it with security.tier=privileged"),
    ({"security": {"tier": "unprivileged", "privilegedContainer": True}},
     "security.privilegedContainer=true needs security.tier=privileged"),
    ({"security": {"tier": "unprivileged"}, "hostPaths": {"talosExtensionsFile": True}},
     "hostPaths.talosExtensionsFile=true mounts a host file (a hostPath): use it with security.tier=privileged"),
    ({"monitoring": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}}},
     "every agent would be scraped twice"),
    ({"monitoring": {"prometheusRule": {"severityOverrides": {"GpuscoutAgentDown": "page"}}}}, "severityOverrides"),
    ({"monitoring": {"prometheusRule": {"forOverrides": {"GpuscoutAgentDown": "ten minutes"}}}}, "forOverrides"),
    ({"monitoring": {"prometheusRule": {"disabled": {"GpuscoutAgentDown": "yes"}}}}, "disabled"),
    ({"networkPolicy": {"enabled": True, "podSelector": {"app": "prometheus"}}}, "podSelector"),
    ({"namespaceOverride": "Not_A_Namespace"}, "/namespaceOverride"),
    ({"revisionHistoryLimit": -1}, "/revisionHistoryLimit"),
    ({"cleanup": {"waitSeconds": -5}}, "/cleanup/waitSeconds"),
    ({"hostPaths": {"root": True}}, "root"),
    ({"tolerations": [{"key": "x", "operator": "Maybe"}]}, "operator"),
    ({"logFormat": "xml"}, "/logFormat"),
]


@pytest.mark.parametrize("values,where", BAD_VALUES, ids=[w[:40] for _, w in BAD_VALUES])
def test_schema_rejects_bad_values(values, where):
    h = helm()
    with h.Chart.load(str(CHART)) as c:
        with pytest.raises(h.HelmValuesError) as e:
            c.validate_schema(values)
        # and an install would refuse them too: rendering validates against the schema
        with pytest.raises(h.HelmValuesError):
            c.render(values, name=RELEASE, namespace=NAMESPACE)
    assert where in str(e.value), str(e.value)


@pytest.mark.parametrize("path", SCENARIOS, ids=scenario_name)
def test_schema_accepts_every_scenario(path):
    h = helm()
    with h.Chart.load(str(CHART)) as c:
        c.validate_schema(load_scenario(path))


def test_schema_is_draft07_with_descriptions_everywhere():
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    values = yaml_mod().safe_load((CHART / "values.yaml").read_text())

    def walk(node, path):
        assert "description" in node, f"{path}: no description"
        if node.get("type") == "object" and "properties" in node:
            if path != "/updateStrategy" and path != "/resources":
                assert node.get("additionalProperties") is False, f"{path}: additionalProperties"
            for k, sub in node["properties"].items():
                walk(sub, f"{path}/{k}")

    for k, sub in schema["properties"].items():
        walk(sub, f"/{k}")

    def keys(v, path=""):
        for k, x in v.items():
            yield f"{path}/{k}"
            if isinstance(x, dict) and x and k not in ("nodeSelector", "resources", "updateStrategy",
                                                       "namespaceSelector", "podSelector"):
                yield from keys(x, f"{path}/{k}")

    def has(path):
        node = schema
        for part in path.strip("/").split("/"):
            node = node.get("properties", {}).get(part)
            if node is None:
                return False
        return True

    missing = [k for k in keys(values) if not has(k)]
    assert not missing, f"values.yaml keys without a schema entry: {missing}"


def test_readme_documents_every_value_generated_from_values_yaml():
    """The README's Values and host-paths tables are what scripts/chart-readme.py makes of
    values.yaml and files/host-paths.yaml, and every value is documented."""
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "chart-readme.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    readme = (CHART / "README.md").read_text()
    values = yaml_mod().safe_load((CHART / "values.yaml").read_text())
    for key in ("cleanup.enabled", "networkPolicy.enabled", "monitoring.prometheusRule.forOverrides",
                "namespaceOverride", "hostPaths.talosExtensionsFile"):
        assert f"| `{key}` |" in readme, key
    assert len([line for line in readme.splitlines() if line.startswith("| `")]) > len(values)


def test_readme_generator_bites(tmp_path):
    """An undocumented value, and a comment changed without regenerating, both fail --check."""
    import shutil

    chart = tmp_path / "charts" / "gpuscout"
    shutil.copytree(CHART, chart)
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "chart-readme.py", tmp_path / "scripts")
    script = str(tmp_path / "scripts" / "chart-readme.py")
    values = chart / "values.yaml"
    original = values.read_text()
    values.write_text(original + "\nsneaky: true\n")
    r = subprocess.run([sys.executable, script, "--check"], capture_output=True, text=True)
    assert r.returncode == 1 and "sneaky" in r.stderr, r.stderr
    values.write_text(original.replace("# -- Log format: plain or json.", "# -- Log format: plain, or json."))
    r = subprocess.run([sys.executable, script, "--check"], capture_output=True, text=True)
    assert r.returncode == 1 and "stale" in r.stderr, r.stderr
    r = subprocess.run([sys.executable, script], capture_output=True, text=True)
    assert r.returncode == 0 and "plain, or json." in (chart / "README.md").read_text()


# --- what the objects promise ----------------------------------------------------------------

def test_default_daemonset_privileged_tier():
    c, p = container(), pod()
    assert "--root=/host" in c["args"] and c["args"][0] == "serve"
    assert "--listen=0.0.0.0:10106" in c["args"]
    assert "--labels=node" in c["args"] and "--label-prefix=gpuscout.io" in c["args"]
    # no longer the host's whole root: only the agent's table, read-only
    assert all(m["mountPath"] != "/host" for m in c["volumeMounts"])
    assert all(v.get("hostPath", {}).get("path") != "/" for v in p["volumes"])
    host = [m for m in c["volumeMounts"] if m["mountPath"].startswith("/host/")]
    assert host and all(m["readOnly"] is True for m in host)
    # non-root: every file the agent reads is world-readable
    assert p["securityContext"]["runAsNonRoot"] is True and p["securityContext"]["runAsUser"] == 65532
    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert p["priorityClassName"] == "system-node-critical"
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["privileged"] is False
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert "add" not in sc["capabilities"]
    assert p["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    ds = one(None, "DaemonSet")
    assert ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"].endswith("%")
    keys = {(t.get("key"), t.get("effect")) for t in p["tolerations"]}
    for k in ("nvidia.com/gpu", "amd.com/gpu", "gpu.intel.com/i915"):
        assert (k, "NoSchedule") in keys
    assert (None, "NoSchedule") in keys
    assert "runtimeClassName" not in p


def test_unprivileged_tier_has_no_host_access():
    v = {"security": {"tier": "unprivileged"}}
    c, p = container(v), pod(v)
    assert "--root=/" in c["args"]
    assert all("hostPath" not in vol for vol in p["volumes"])
    assert p["securityContext"]["runAsNonRoot"] is True and p["securityContext"]["runAsUser"] != 0
    sc = c["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert not p.get("hostNetwork") and not p.get("hostPID")


def test_nvml_runtime_class_option():
    v = {"nvml": {"runtimeClassName": "nvidia"}}
    p, c = pod(v), container(v)
    assert p["runtimeClassName"] == "nvidia"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all" and env["NVIDIA_DRIVER_CAPABILITIES"] == "utility"


def test_privileged_container_only_on_request():
    sc = container({"security": {"privilegedContainer": True}})["securityContext"]
    assert sc["privileged"] is True and sc["readOnlyRootFilesystem"] is True


def test_rbac_is_minimal_per_mode():
    # the agent's own RBAC (the uninstall hook's is checked in test_chart_knobs.py)
    for mode, verbs in (("node", {"get", "list", "watch", "patch"}), ("nfd-file", {"get", "list", "watch"}),
                        ("nodefeature", {"get", "list", "watch"}), ("off", {"get", "list", "watch"})):
        v = {"labels": {"mode": mode}}
        rules = one(v, "ClusterRole")["rules"]
        node_rules = [r for r in rules if "nodes" in r["resources"]]
        assert len(node_rules) == 1 and set(node_rules[0]["verbs"]) == verbs, (mode, node_rules)
        for r in rules:
            if r["resources"] == ["events"]:
                assert r["apiGroups"] == [""] and r["verbs"] == ["create"], r
            else:
                assert not {"create", "delete", "update", "*"} & set(r["verbs"]), r
            assert "nodes/status" not in r["resources"] and "*" not in r["resources"]
        roles = objects(v, "Role")
        env = {e["name"]: e.get("value") for e in container(v)["env"]}
        if mode == "nodefeature":
            assert roles[0]["rules"][0]["resources"] == ["nodefeatures"]
            assert set(roles[0]["rules"][0]["verbs"]) == {"get", "create", "patch"}
            assert roles[0]["metadata"]["namespace"] == NAMESPACE
            # the agent puts its NodeFeature where the Role allows it
            assert env["GPUSCOUT_NODEFEATURE_NAMESPACE"] == NAMESPACE
        else:
            assert roles == []
            assert "GPUSCOUT_NODEFEATURE_NAMESPACE" not in env
        if mode == "nfd-file":
            mount = next(m for m in container(v)["volumeMounts"] if m["name"] == "nfd-features")
            assert env["GPUSCOUT_NFD_FILE"] == mount["mountPath"] + "/gpuscout"
            assert mount.get("readOnly") is not True
    binding = one(None, "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "gpuscout", "namespace": NAMESPACE}]


def test_admission_policy_binds_own_node_and_prefix():
    vap = one(None, "ValidatingAdmissionPolicy")
    spec = vap["spec"]
    assert spec["failurePolicy"] == "Fail"
    assert spec["matchConstraints"]["resourceRules"][0]["resources"] == ["nodes"]
    cond = spec["matchConditions"][0]["expression"]
    assert cond == 'request.userInfo.username == "system:serviceaccount:gpu-system:gpuscout"'
    var = {v["name"]: v["expression"] for v in spec["variables"]}
    assert "authentication.kubernetes.io/node-name" in var["claim"]
    assert var["prefixes"] == "['gpuscout.io/']"
    exprs = " ".join(x["expression"] for x in spec["validations"])
    assert "object.metadata.name == variables.claim" in exprs
    assert "object.spec == oldObject.spec" in exprs
    binding = one(None, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["policyName"] == vap["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    # switchable, and the compat profiles widen the allowed prefixes
    assert objects({"admissionPolicy": {"enabled": False}}, "ValidatingAdmissionPolicy") == []
    compat = one({"labels": {"prefix": "gpu.example.com", "compat": {"nvidiaGfd": True, "amdLabeller": True}},
                  "serviceAccount": {"name": "agent"}}, "ValidatingAdmissionPolicy")["spec"]
    var = {v["name"]: v["expression"] for v in compat["variables"]}
    assert var["prefixes"] == "['gpu.example.com/', 'nvidia.com/gpu.', 'nvidia.com/cuda.', 'nvidia.com/mig.', 'amd.com/gpu.']"
    assert compat["matchConditions"][0]["expression"].endswith(':gpu-system:agent"')


def test_monitoring_objects_gated_on_the_crd():
    """crdCheck on and no monitoring.coreos.com/v1: no object, but `helm template` says why."""
    for monitor in ("serviceMonitor", "podMonitor"):
        v = {"monitoring": {monitor: {"enabled": True}, "prometheusRule": {"enabled": True}}}
        kinds = {d["kind"] for d in manifests(v)}
        assert not kinds & {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
        out = render(v)
        assert "monitoring.coreos.com/v1" in out["gpuscout/templates/NOTES.txt"]
        for t in (f"{monitor.lower()}.yaml", "prometheusrule.yaml"):
            text = out[f"gpuscout/templates/{t}"]
            assert "does not serve monitoring.coreos.com/v1" in text, t
            assert "--api-versions monitoring.coreos.com/v1" in text and "crdCheck=false" in text, t
            assert all(line.startswith("#") for line in text.strip().splitlines()), text
    # with the check off (or the API present) the objects are rendered, and no comment
    out = render({"monitoring": {"crdCheck": False, "podMonitor": {"enabled": True}}})
    assert "kind: PodMonitor" in out["gpuscout/templates/podmonitor.yaml"]
    assert "does not serve" not in out["gpuscout/templates/podmonitor.yaml"]


def monitoring_values():
    return load_scenario(str(CHART / "ci" / "monitoring-values.yaml"))


def test_monitors_carry_release_label_node_and_job():
    sm_values = monitoring_values()
    pm_values = {**sm_values, "monitoring": {**sm_values["monitoring"], "serviceMonitor": {"enabled": False},
                                             "podMonitor": {"enabled": True}}}
    for v, kind, key in ((sm_values, "ServiceMonitor", "endpoints"), (pm_values, "PodMonitor", "podMetricsEndpoints")):
        m = one(v, kind)
        assert m["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        ep = m["spec"][key][0]
        assert ep["port"] == "metrics" and ep["path"] == "/metrics"
        rl = ep["relabelings"]
        assert {"action": "replace", "sourceLabels": ["__meta_kubernetes_pod_node_name"],
                "targetLabel": "node"} in rl
        assert {"action": "replace", "targetLabel": "job", "replacement": "gpu-agent"} in rl
    assert one(sm_values, "ServiceMonitor")["metadata"]["labels"]["team"] == "platform"
    # the Service's port name is the one the ServiceMonitor scrapes
    assert one(sm_values, "Service")["spec"]["ports"][0]["name"] == "metrics"


def test_prometheusrule_is_the_rules_file(tmp_path):
    v = monitoring_values()
    rule = one(v, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    src = yaml_mod().safe_load(RULES.read_text())
    text = json.dumps(src["groups"]).replace('job=\\"gpuscout\\"', 'job=\\"gpu-agent\\"').replace(
        "https://github.com/gpuscout/gpuscout/blob/main/docs/runbooks/", "https://runbooks.example.org/gpuscout/")
    assert rule["spec"]["groups"] == json.loads(text)
    # and the rendered groups are a valid Prometheus rules file
    f = tmp_path / "rendered-rules.yaml"
    f.write_text(yaml_mod().safe_dump({"groups": rule["spec"]["groups"]}))
    r = subprocess.run([tool("promtool"), "check", "rules", str(f)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_dashboard_configmaps_match_dashboards_dir():
    v = monitoring_values()
    cms = objects(v, "ConfigMap")
    src = sorted((REPO / "dashboards").glob("*.json"))
    assert len(cms) == len(src) >= 3
    by_file = {k: val for cm in cms for k, val in cm["data"].items()}
    for cm in cms:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["metadata"]["annotations"] == {"grafana_folder": "GPUs"}
    for f in src:
        # the same dashboards, selecting the job the monitors and rules use (gpu-agent here)
        want = f.read_text().replace('job=\\"gpuscout\\"', 'job=\\"gpu-agent\\"')
        assert json.loads(by_file[f.name]) == json.loads(want), f.name
    assert objects(None, "ConfigMap") == []


def test_dashboards_copy_has_no_drift():
    r = subprocess.run(["bash", str(REPO / "scripts" / "sync-dashboards.sh"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_template_guards_fail_with_a_message():
    h = helm()
    with h.Chart.load(str(CHART)) as c:
        with pytest.raises(h.HelmError) as e:
            c.render({"monitoring": {"crdCheck": False, "serviceMonitor": {"enabled": True}},
                      "service": {"enabled": False}}, name=RELEASE, namespace=NAMESPACE)
    assert "needs service.enabled" in str(e.value)


# --- Pod Security Standards ------------------------------------------------------------------

def pss_violations(values, level: str) -> list[str]:
    """The checks of the Kubernetes Pod Security Standards (baseline, restricted) that a
    DaemonSet's pod template can violate, after kubernetes.io/docs/concepts/security/pod-security-standards."""
    p = pod(values)
    out = []
    if p.get("hostNetwork") or p.get("hostPID") or p.get("hostIPC"):
        out.append("host namespaces")
    for v in p.get("volumes", []):
        if "hostPath" in v:
            out.append(f"hostPath volume {v['name']}")
    baseline_caps = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                     "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
    for c in p["containers"]:
        sc = c.get("securityContext", {})
        if sc.get("privileged"):
            out.append("privileged container")
        if any(port.get("hostPort") for port in c.get("ports", [])):
            out.append("hostPort")
        added = set(sc.get("capabilities", {}).get("add", []))
        if added - baseline_caps:
            out.append(f"capabilities {added - baseline_caps}")
        if level == "restricted":
            if sc.get("allowPrivilegeEscalation") is not False:
                out.append("allowPrivilegeEscalation not false")
            if "ALL" not in sc.get("capabilities", {}).get("drop", []):
                out.append("capabilities not dropping ALL")
            if added - {"NET_BIND_SERVICE"}:
                out.append(f"restricted capabilities {added}")
            run_as_non_root = sc.get("runAsNonRoot", p.get("securityContext", {}).get("runAsNonRoot"))
            if run_as_non_root is not True:
                out.append("runAsNonRoot not true")
            if sc.get("runAsUser", p.get("securityContext", {}).get("runAsUser")) == 0:
                out.append("runAsUser 0")
            seccomp = (sc.get("seccompProfile") or p.get("securityContext", {}).get("seccompProfile") or {})
            if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
                out.append("seccomp not RuntimeDefault/Localhost")
    if level == "restricted":
        allowed = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                   "projected", "secret"}
        for v in p.get("volumes", []):
            kinds = set(v) - {"name"}
            if kinds - allowed:
                out.append(f"volume {v['name']} of type {kinds - allowed}")
    return out


def test_unprivileged_tier_meets_pss_restricted():
    assert pss_violations({"security": {"tier": "unprivileged"}}, "restricted") == []


def test_privileged_tier_needs_pss_privileged_only_for_the_host_paths():
    """The privileged tier breaks baseline for exactly one reason: its hostPath volumes, which are
    the agent's own table (test_chart_knobs.py checks which)."""
    v = pss_violations(None, "baseline")
    assert v and all(x.startswith("hostPath volume host-") for x in v), v
    assert "privileged container" in pss_violations({"security": {"privilegedContainer": True}}, "baseline")


# --- Prometheus Operator objects against the operator's CRD schema ----------------------------

def test_monitoring_objects_match_the_operator_crds():
    """kubernetes-validate has no schema for monitoring.coreos.com; cloudcoil's models are
    generated from the Prometheus Operator CRDs (patterns, enums, types). Unknown keys are dropped
    by the models, so a key lost on the round trip is one the CRD does not have."""
    try:
        from cloudcoil.models.prometheus_operator import v1
    except ImportError:
        pytest.fail("cloudcoil-models-prometheus-operator is not installed; "
                    "pip install cloudcoil-models-prometheus-operator")
    from dashboard_lint import dropped_keys

    def check(doc):
        model = getattr(v1, doc["kind"]).model_validate(doc)
        return dropped_keys(doc, model.model_dump(by_alias=True, exclude_unset=True, mode="json"))

    docs = [d for path in SCENARIOS for d in manifests(load_scenario(path))
            if d["apiVersion"] == "monitoring.coreos.com/v1"]
    assert {d["kind"] for d in docs} == {"PodMonitor", "PrometheusRule", "ServiceMonitor"}
    # the knobs are in what is checked: sampleLimit, attachMetadata, honorLabels, overrides
    assert any(d["spec"].get("sampleLimit") and d["spec"].get("attachMetadata") for d in docs)
    assert any(d["kind"] == "PodMonitor" and d["spec"]["podMetricsEndpoints"][0].get("honorLabels") for d in docs)
    for d in docs:
        assert check(d) == [], d["kind"]
    # the check bites: a misspelt endpoint key and a malformed interval
    import copy

    sm = copy.deepcopy(one(monitoring_values(), "ServiceMonitor"))
    sm["spec"]["endpoints"][0]["scrapeTimout"] = "5s"
    assert check(sm) == ["/spec/endpoints[0]/scrapeTimout"]
    sm["spec"]["endpoints"][0]["interval"] = "often"
    with pytest.raises(Exception, match="interval"):
        check(sm)
