"""Chart checks for the two opt-in features of the agent: Talos API evidence (docs/talos-api.md)
and a secured /metrics (Kubernetes bearer-token auth and TLS, docs/metrics-auth.md). Rendered with
the real Helm SDK; the Talos ServiceAccount, which kubernetes-validate has no schema for, is
validated structurally here (as test_chart.py does for the Prometheus Operator objects)."""

from __future__ import annotations

import copy
import re

import pytest

from conftest import CHART, NAMESPACE, load_scenario, manifests, objects, one, render

TALOS = load_scenario(str(CHART / "ci" / "talos-api-values.yaml"))

# talos.dev/v1alpha1 ServiceAccount as Talos' CRD defines it: spec.roles, a list of Talos roles.
TALOS_ROLES = {"os:admin", "os:operator", "os:reader", "os:etcd:backup", "os:impersonator"}
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def talos_sa_problems(doc: dict) -> list[str]:
    """Structural check of a talos.dev/v1alpha1 ServiceAccount (no schema in kubernetes-validate)."""
    out = []
    if doc.get("apiVersion") != "talos.dev/v1alpha1" or doc.get("kind") != "ServiceAccount":
        out.append("apiVersion/kind")
    if set(doc) - {"apiVersion", "kind", "metadata", "spec"}:
        out.append(f"top-level keys {sorted(set(doc) - {'apiVersion', 'kind', 'metadata', 'spec'})}")
    meta = doc.get("metadata") or {}
    if set(meta) - {"name", "namespace", "labels", "annotations"}:
        out.append(f"metadata keys {sorted(set(meta))}")
    name = meta.get("name", "")
    if not (isinstance(name, str) and DNS1123.match(name) and len(name) <= 253):
        out.append(f"metadata.name {name!r}")
    if not meta.get("namespace"):
        out.append("metadata.namespace missing (Talos creates the Secret in it)")
    for k, v in (meta.get("labels") or {}).items():
        if not isinstance(v, str) or len(v) > 63:
            out.append(f"label {k}")
    spec = doc.get("spec")
    if not isinstance(spec, dict) or set(spec) != {"roles"}:
        out.append(f"spec must hold exactly 'roles', got {spec!r}")
    else:
        roles = spec["roles"]
        if not isinstance(roles, list) or not roles or not all(isinstance(r, str) for r in roles):
            out.append(f"spec.roles {roles!r}")
        elif set(roles) - TALOS_ROLES:
            out.append(f"unknown Talos roles {sorted(set(roles) - TALOS_ROLES)}")
    return out


def container(values) -> dict:
    return one(values, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]


def pod(values) -> dict:
    return one(values, "DaemonSet")["spec"]["template"]["spec"]


def env_of(c) -> dict:
    return {e["name"]: e for e in c["env"]}


# --- Talos API evidence ------------------------------------------------------------------------

def test_talos_api_off_by_default():
    assert [d for d in manifests() if d["apiVersion"].startswith("talos.dev/")] == []
    c, p = container(None), pod(None)
    assert not [e for e in c["env"] if e["name"].startswith("GPUSCOUT_TALOS")]
    assert all(v["name"] != "talos-secrets" for v in p["volumes"])


def test_talos_serviceaccount_is_os_reader_and_valid():
    sas = [d for d in manifests(TALOS) if d["apiVersion"] == "talos.dev/v1alpha1"]
    assert len(sas) == 1
    sa = sas[0]
    assert talos_sa_problems(sa) == []
    assert sa["kind"] == "ServiceAccount" and sa["spec"]["roles"] == ["os:reader"]
    assert sa["metadata"] == {**sa["metadata"], "name": "gpuscout-talos", "namespace": NAMESPACE}
    # the check bites
    bad = copy.deepcopy(sa)
    bad["spec"]["role"] = bad["spec"].pop("roles")
    assert talos_sa_problems(bad)
    bad = copy.deepcopy(sa)
    bad["spec"]["roles"] = ["os:root"]
    assert talos_sa_problems(bad) == ["unknown Talos roles ['os:root']"]
    bad = copy.deepcopy(sa)
    bad["metadata"]["name"] = "Gpuscout_Talos"
    assert talos_sa_problems(bad)


def test_talos_secret_mounted_as_directory_and_env_set():
    c, p = container(TALOS), pod(TALOS)
    mount = next(m for m in c["volumeMounts"] if m["name"] == "talos-secrets")
    assert mount == {"name": "talos-secrets", "mountPath": "/var/run/secrets/talos.dev", "readOnly": True}
    assert "subPath" not in mount  # renewed certificates must reach the pod
    vol = next(v for v in p["volumes"] if v["name"] == "talos-secrets")
    sa = next(d for d in manifests(TALOS) if d["apiVersion"] == "talos.dev/v1alpha1")
    assert vol["secret"] == {"secretName": sa["metadata"]["name"], "optional": True}
    env = env_of(c)
    assert env["GPUSCOUT_TALOS_API"]["value"] == "true"
    assert env["GPUSCOUT_TALOS_NODE"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"
    assert env["GPUSCOUT_TALOS_TIMEOUT"]["value"] == "3"
    # pod network + cluster DNS reach talos.default
    assert not p.get("hostNetwork")


def test_talos_api_works_in_the_unprivileged_tier():
    v = {**TALOS, "security": {"tier": "unprivileged"}}
    from test_chart import pss_violations
    assert pss_violations(v, "restricted") == []
    assert any(m["name"] == "talos-secrets" for m in container(v)["volumeMounts"])


@pytest.mark.parametrize("values,where", [
    ({"talosApi": {"enabled": "yes"}}, "/talosApi/enabled"),
    ({"talosApi": {"timeoutSeconds": 0}}, "/talosApi/timeoutSeconds"),
    ({"talosApi": {"timeoutSeconds": 7200}}, "/talosApi/timeoutSeconds"),
    ({"talosApi": {"roles": ["os:admin"]}}, "roles"),
])
def test_talos_schema_rejects_bad_values(values, where):
    from conftest import helm
    h = helm()
    with h.Chart.load(str(CHART)) as c:
        with pytest.raises(h.HelmValuesError) as e:
            c.validate_schema(values)
    assert where in str(e.value), str(e.value)


def test_talos_notes_mention_the_machine_feature():
    assert "kubernetesTalosAPIAccess" in render(TALOS)["gpuscout/templates/NOTES.txt"]
    assert "kubernetesTalosAPIAccess" not in render(None)["gpuscout/templates/NOTES.txt"]


# --- secured /metrics --------------------------------------------------------------------------

SECURE = load_scenario(str(CHART / "ci" / "metrics-secure-values.yaml"))
# The same, scraped by the PodMonitor (both monitors at once are refused).
SECURE_PM = load_scenario(str(CHART / "ci" / "metrics-secure-podmonitor-values.yaml"))
SECURE_BY_KIND = {"ServiceMonitor": SECURE, "PodMonitor": SECURE_PM}
ENDPOINTS = {"ServiceMonitor": "endpoints", "PodMonitor": "podMetricsEndpoints"}
REVIEW_RULES = [
    {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
    {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
]


def endpoint(values, kind) -> dict:
    return one(values, kind)["spec"][ENDPOINTS[kind]][0]


def test_metrics_security_off_by_default():
    c = container(None)
    assert not [a for a in c["args"] if a.startswith(("--metrics-auth", "--tls-"))]
    assert c["livenessProbe"]["httpGet"]["scheme"] == "HTTP"
    assert c["readinessProbe"]["httpGet"]["scheme"] == "HTTP"
    assert all(m["name"] != "metrics-tls" for m in c["volumeMounts"])
    rules = one(None, "ClusterRole")["rules"]
    assert not [r for r in rules if r in REVIEW_RULES]
    assert [d["metadata"]["name"] for d in objects(None, "ClusterRole")] == ["gpuscout"]
    for kind in ENDPOINTS:
        mon = {"monitoring": {"crdCheck": False, kind[0].lower() + kind[1:]: {"enabled": True}}}
        ep = endpoint(mon, kind)
        assert not {"scheme", "tlsConfig", "authorization", "bearerTokenFile"} & set(ep), ep


def test_kubernetes_auth_adds_only_the_review_rules():
    v = {"metrics": {"auth": "kubernetes"}}
    c = container(v)
    assert "--metrics-auth=kubernetes" in c["args"]
    agent = next(r for r in objects(v, "ClusterRole") if r["metadata"]["name"] == "gpuscout")
    default = one(None, "ClusterRole")
    assert agent["rules"] == default["rules"] + REVIEW_RULES
    # the scraper's role: get on the non-resource URL the agent's SubjectAccessReview asks about
    reader = next(r for r in objects(v, "ClusterRole") if r["metadata"]["name"] == "gpuscout-metrics-reader")
    assert reader["rules"] == [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]
    # no binding unless subjects are given
    assert [b["metadata"]["name"] for b in objects(v, "ClusterRoleBinding")] == ["gpuscout"]
    # without TLS the probes stay plain HTTP
    assert c["livenessProbe"]["httpGet"]["scheme"] == "HTTP"


def test_secure_scenario_daemonset():
    c, p = container(SECURE), pod(SECURE)
    assert "--tls-cert=/etc/gpuscout/tls/tls.crt" in c["args"]
    assert "--tls-key=/etc/gpuscout/tls/tls.key" in c["args"]
    mount = next(m for m in c["volumeMounts"] if m["name"] == "metrics-tls")
    assert mount == {"name": "metrics-tls", "mountPath": "/etc/gpuscout/tls", "readOnly": True}
    vol = next(x for x in p["volumes"] if x["name"] == "metrics-tls")
    assert vol["secret"] == {"secretName": "gpuscout-metrics-tls"}  # not optional: no silent HTTP
    # the agent serves /healthz and /readyz over HTTPS too (docs/metrics-auth.md)
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = c[probe]["httpGet"]
        assert get == {"path": path, "port": "metrics", "scheme": "HTTPS"}
    binding = next(b for b in objects(SECURE, "ClusterRoleBinding")
                   if b["metadata"]["name"] == "gpuscout-metrics-reader")
    assert binding["roleRef"]["name"] == "gpuscout-metrics-reader"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kube-prometheus-stack-prometheus",
                                    "namespace": "monitoring"}]


def test_secure_monitors_scrape_https_with_the_token():
    for kind in ENDPOINTS:
        ep = endpoint(SECURE_BY_KIND[kind], kind)
        assert ep["scheme"] == "https"
        assert ep["tlsConfig"] == {"ca": {"secret": {"name": "gpuscout-metrics-tls", "key": "ca.crt"}},
                                   "insecureSkipVerify": False, "serverName": "gpuscout.gpu-system.svc"}
        assert ep["authorization"] == {"type": "Bearer",
                                       "credentials": {"name": "gpuscout-scraper-token", "key": "token"}}
        assert "bearerTokenFile" not in ep


def test_servicemonitor_defaults_to_prometheus_own_token_and_skip_verify():
    v = {"metrics": {"auth": "kubernetes", "tls": {"secretName": "agent-tls"}},
         "monitoring": {"crdCheck": False, "serviceMonitor": {"enabled": True}}}
    ep = endpoint(v, "ServiceMonitor")
    assert ep["scheme"] == "https" and ep["tlsConfig"] == {"insecureSkipVerify": True}
    assert ep["bearerTokenFile"] == "/var/run/secrets/kubernetes.io/serviceaccount/token"
    assert "authorization" not in ep
    # TLS alone: https, no token
    ep = endpoint({"metrics": {"tls": {"secretName": "agent-tls"}},
                   "monitoring": {"crdCheck": False, "podMonitor": {"enabled": True}}}, "PodMonitor")
    assert ep["scheme"] == "https" and "authorization" not in ep
    # auth alone: plain http, with the token
    ep = endpoint({"metrics": {"auth": "kubernetes"},
                   "monitoring": {"crdCheck": False, "serviceMonitor": {"enabled": True}}}, "ServiceMonitor")
    assert "scheme" not in ep and "tlsConfig" not in ep and "bearerTokenFile" in ep


def test_podmonitor_with_auth_needs_a_token_secret():
    from conftest import RELEASE, helm
    h = helm()
    with h.Chart.load(str(CHART)) as c:
        with pytest.raises(h.HelmError) as e:
            c.render({"metrics": {"auth": "kubernetes"},
                      "monitoring": {"crdCheck": False, "podMonitor": {"enabled": True}}},
                     name=RELEASE, namespace=NAMESPACE)
    assert "tokenSecret.name" in str(e.value)


def test_secure_monitors_match_the_operator_crds():
    """Same cloudcoil round trip as test_chart.py: a key the CRD does not have is dropped."""
    try:
        from cloudcoil.models.prometheus_operator import v1
    except ImportError:
        pytest.fail("cloudcoil-models-prometheus-operator is not installed; "
                    "pip install cloudcoil-models-prometheus-operator")
    from dashboard_lint import dropped_keys

    def check(doc):
        model = getattr(v1, doc["kind"]).model_validate(doc)
        return dropped_keys(doc, model.model_dump(by_alias=True, exclude_unset=True, mode="json"))

    sm_file = {"metrics": {"auth": "kubernetes", "tls": {"secretName": "agent-tls"}},
               "monitoring": {"crdCheck": False, "serviceMonitor": {"enabled": True}}}
    docs = [one(SECURE, "ServiceMonitor"), one(SECURE_PM, "PodMonitor"), one(sm_file, "ServiceMonitor")]
    for d in docs:
        assert check(d) == [], d["kind"]
    # bites: PodMonitor endpoints have no bearerTokenFile (why the chart needs tokenSecret there)
    pm = copy.deepcopy(docs[1])
    pm["spec"]["podMetricsEndpoints"][0]["bearerTokenFile"] = "/token"
    assert check(pm) == ["/spec/podMetricsEndpoints[0]/bearerTokenFile"]


@pytest.mark.parametrize("values,where", [
    ({"metrics": {"auth": "rbac-proxy"}}, "/metrics/auth"),
    ({"metrics": {"tls": {"secretName": "Not_A_Name"}}}, "/metrics/tls/secretName"),
    ({"metrics": {"tls": {"cert": "/x"}}}, "cert"),
    ({"monitoring": {"scrapeTls": {"insecureSkipVerify": "yes"}}}, "/monitoring/scrapeTls/insecureSkipVerify"),
    ({"monitoring": {"scrapeAuth": {"readerSubjects": [{"kind": "Robot", "name": "x"}]}}}, "kind"),
])
def test_metrics_security_schema_rejects_bad_values(values, where):
    from conftest import helm
    h = helm()
    with h.Chart.load(str(CHART)) as c:
        with pytest.raises(h.HelmValuesError) as e:
            c.validate_schema(values)
    assert where in str(e.value), str(e.value)


def test_probe_scheme_matches_what_the_real_agent_serves(tmp_path):
    """Run the real `gpuscout serve` with the chart's --tls-cert/--tls-key (files from openssl) and
    send the chart's probes as the kubelet would (HTTPS, certificate not verified): both answer
    200, and plain HTTP on the same port gets no HTTP answer, so scheme HTTP would fail."""
    import os
    import shutil
    import socket
    import ssl
    import subprocess
    import time
    import urllib.error
    import urllib.request

    from conftest import REPO

    openssl = shutil.which("openssl")
    if not openssl:
        pytest.fail("openssl is not installed; apt-get install -y --no-install-recommends openssl")
    binary = os.environ.get("GPUSCOUT_BINARY") or str(REPO / "target" / "debug" / "gpuscout")
    if not os.path.exists(binary):
        pytest.fail(f"no gpuscout binary at {binary}: set GPUSCOUT_BINARY (cargo test sets it)")
    host = sorted(p for p in (REPO / "tests" / "fixtures" / "hosts").iterdir() if p.is_dir())[0]
    r = subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-days", "1", "-subj", "/CN=gpuscout.gpu-system.svc",
                        "-keyout", str(tmp_path / "tls.key"), "-out", str(tmp_path / "tls.crt")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    c = container(SECURE)
    tls_args = [a.replace("/etc/gpuscout/tls", str(tmp_path)) for a in c["args"] if a.startswith("--tls-")]
    assert len(tls_args) == 2
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp_path / "agent.log", "w")
    proc = subprocess.Popen([binary, "serve", "--root", str(host), "--listen", f"127.0.0.1:{port}",
                             "--discovery-interval", "2s", *tls_args],
                            stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "RUST_LOG": "warn", "KUBERNETES_SERVICE_HOST": ""})
    kubelet = ssl.create_default_context()
    kubelet.check_hostname = False
    kubelet.verify_mode = ssl.CERT_NONE  # the kubelet's HTTPS probes do not verify
    try:
        status = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            for probe in ("livenessProbe", "readinessProbe"):
                get = c[probe]["httpGet"]
                url = f"{get['scheme'].lower()}://127.0.0.1:{port}{get['path']}"
                try:
                    with urllib.request.urlopen(url, timeout=2, context=kubelet) as resp:
                        status[probe] = resp.status
                except (urllib.error.URLError, OSError) as e:
                    status[probe] = getattr(e, "code", repr(e))
            if status == {"livenessProbe": 200, "readinessProbe": 200}:
                break
            time.sleep(0.3)
        assert proc.poll() is None, (tmp_path / "agent.log").read_text()
        assert status == {"livenessProbe": 200, "readinessProbe": 200}, status
        with pytest.raises((urllib.error.URLError, OSError, http_exc())):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def http_exc():
    import http.client
    return http.client.HTTPException
