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
