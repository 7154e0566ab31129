"""The ValidatingAdmissionPolicy's CEL, evaluated on Node updates with a real CEL implementation
(`common-expression-language`, Python bindings of the Rust `cel` crate).

No API server can run here, so this checks the policy's logic, not its admission wiring: the
match condition and every validation are evaluated as the API server would, with `object`,
`oldObject`, `request` and `variables`. That library has no optional syntax (`[?key].orValue()`),
so the `claim` variable's value is computed here with the same meaning (first node-name claim, or
'') and its expression text is checked instead.
"""

from __future__ import annotations

import copy

import pytest

from conftest import one

SA_USER = "system:serviceaccount:gpu-system:gpuscout"
CLAIM_KEY = "authentication.kubernetes.io/node-name"


def cel():
    try:
        import cel as c
    except ImportError:
        pytest.fail("common-expression-language is not installed; pip install common-expression-language")
    return c


def policy(values=None) -> dict:
    return one(values, "ValidatingAdmissionPolicy")["spec"]


def node(name="gpu-a", labels=None, annotations=None, taints=None) -> dict:
    n = {"apiVersion": "v1", "kind": "Node",
         "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                               "gpuscout.io/present": "true", **(labels or {})}},
         "spec": {"podCIDR": "10.0.0.0/24"}}
    if annotations is not None:
        n["metadata"]["annotations"] = annotations
    if taints is not None:
        n["spec"]["taints"] = taints
    return n


def request(user=SA_USER, claim="gpu-a") -> dict:
    extra = {CLAIM_KEY: [claim]} if claim is not None else {}
    return {"userInfo": {"username": user, "extra": extra}}


def admit(spec: dict, old: dict, new: dict, req: dict) -> tuple[bool, list[str]]:
    """(allowed, failed messages) as the API server would decide for an UPDATE of a Node."""
    c = cel()
    base = {"object": new, "oldObject": old, "request": req}
    if not all(c.evaluate(m["expression"], base) for m in spec["matchConditions"]):
        return True, []  # not the agent: the policy does not apply
    exprs = {v["name"]: v["expression"] for v in spec["variables"]}
    assert exprs["claim"] == f"request.userInfo.extra[?'{CLAIM_KEY}'].orValue([''])[0]"
    claims = req["userInfo"]["extra"].get(CLAIM_KEY, [""])
    variables = {"claim": claims[0], "prefixes": c.evaluate(exprs["prefixes"], {})}
    failed = []
    for v in spec["validations"]:
        try:
            ok = c.evaluate(v["expression"], {**base, "variables": variables})
        except Exception as e:  # an evaluation error is a denial under failurePolicy Fail
            ok = False
            assert spec["failurePolicy"] == "Fail", e
        if ok is not True:
            failed.append(v.get("message") or v.get("messageExpression"))
    return not failed, failed


def changed(old: dict, fn) -> dict:
    new = copy.deepcopy(old)
    fn(new)
    return new


def labels(n):
    return n["metadata"]["labels"]


ALLOWED = {
    "add own label": lambda n: labels(n).update({"gpuscout.io/amd.count": "1"}),
    "change own label": lambda n: labels(n).update({"gpuscout.io/present": "false"}),
    "remove own label": lambda n: labels(n).pop("gpuscout.io/present"),
    "no change": lambda n: None,
}
DENIED = {
    "add foreign label": lambda n: labels(n).update({"example.com/gpu": "yes"}),
    "prefix lookalike": lambda n: labels(n).update({"gpuscout.io.evil/x": "1"}),
    "change kubelet label": lambda n: labels(n).update({"kubernetes.io/hostname": "other"}),
    "remove kubelet label": lambda n: labels(n).pop("kubernetes.io/os"),
    "add taint": lambda n: n["spec"].update({"taints": [{"key": "k", "effect": "NoSchedule"}]}),
    "cordon": lambda n: n["spec"].update({"unschedulable": True}),
    "add annotation": lambda n: n["metadata"].update({"annotations": {"a": "b"}}),
    "compat key while compat is off": lambda n: labels(n).update({"nvidia.com/gpu.product": "H100"}),
}


@pytest.mark.parametrize("case", ALLOWED, ids=list(ALLOWED))
def test_agent_may_change_its_own_labels(case):
    old = node()
    ok, failed = admit(policy(), old, changed(old, ALLOWED[case]), request())
    assert ok, failed


@pytest.mark.parametrize("case", DENIED, ids=list(DENIED))
def test_agent_may_not_change_anything_else(case):
    old = node()
    ok, failed = admit(policy(), old, changed(old, DENIED[case]), request())
    assert not ok


def test_agent_may_not_touch_another_node():
    old = node("gpu-b")
    ok, failed = admit(policy(), old, changed(old, ALLOWED["add own label"]), request(claim="gpu-a"))
    assert not ok and any("may not modify" in m for m in failed), failed


def test_token_without_node_claim_is_refused():
    old = node()
    ok, failed = admit(policy(), old, changed(old, ALLOWED["add own label"]), request(claim=None))
    assert not ok and any("no node-name claim" in m for m in failed), failed


def test_other_users_are_not_matched():
    old = node()
    new = changed(old, DENIED["add taint"])
    ok, _ = admit(policy(), old, new, request(user="system:serviceaccount:kube-system:other", claim=None))
    assert ok  # this policy only constrains the agent; other users go through RBAC alone


def test_annotations_unchanged_are_fine():
    old = node(annotations={"node.alpha.kubernetes.io/ttl": "0"})
    ok, failed = admit(policy(), old, changed(old, ALLOWED["add own label"]), request())
    assert ok, failed
    ok, _ = admit(policy(), old, changed(old, lambda n: n["metadata"]["annotations"].clear()), request())
    assert not ok


def test_compat_profile_widens_the_prefixes():
    spec = policy({"labels": {"compat": {"nvidiaGfd": True}}})
    old = node()
    ok, failed = admit(spec, old, changed(old, DENIED["compat key while compat is off"]), request())
    assert ok, failed
    ok, _ = admit(spec, old, changed(old, DENIED["add foreign label"]), request())
    assert not ok


def test_custom_prefix():
    spec = policy({"labels": {"prefix": "gpu.example.com"}})
    old = node()
    ok, failed = admit(spec, old, changed(old, lambda n: labels(n).update({"gpu.example.com/x": "1"})), request())
    assert ok, failed
    # the default prefix is foreign now
    ok, _ = admit(spec, old, changed(old, ALLOWED["add own label"]), request())
    assert not ok


def agent_label_sets(*flags: str) -> dict[str, dict[str, str]]:
    """The labels the real agent computes for every fixture host root, with these flags."""
    import json
    import os
    import subprocess

    from conftest import REPO

    binary = os.environ.get("GPUSCOUT_BINARY") or str(REPO / "target" / "debug" / "gpuscout")
    if not os.path.exists(binary):
        pytest.fail(f"no gpuscout binary at {binary}: set GPUSCOUT_BINARY (cargo test sets it)")
    out = {}
    for host in sorted((REPO / "tests" / "fixtures" / "hosts").iterdir()):
        r = subprocess.run([binary, "discover", "--root", str(host), "--format", "json", *flags],
                           capture_output=True, text=True, env={**os.environ, "RUST_LOG": "warn"})
        assert r.returncode == 0, r.stderr
        out[host.name] = json.loads(r.stdout)["labels"]
    return out


def test_policy_admits_every_label_the_agent_writes():
    """Every key the agent computes on the fixtures, compat profiles included, passes the policy
    rendered with the same settings; and the same keys are refused with the profiles off."""
    flags = ("--compat-nvidia-gfd", "--compat-amd-labeller", "--compat-intel-nfd")
    sets = agent_label_sets(*flags)
    keys = sorted({k for labels_ in sets.values() for k in labels_})
    assert any(k.startswith("nvidia.com/") for k in keys) and any(k.startswith("amd.com/") for k in keys)
    assert any(k.startswith("gpu.intel.com/") for k in keys)
    on = policy({"labels": {"compat": {"nvidiaGfd": True, "amdLabeller": True, "intelNfd": True}}})
    off = policy()
    for host, desired in sets.items():
        old = node()
        new = changed(old, lambda n: labels(n).update(desired))
        ok, failed = admit(on, old, new, request())
        assert ok, (host, failed)
        compat = {k for k in desired if not k.startswith("gpuscout.io/")}
        if compat:
            ok, _ = admit(off, old, new, request())
            assert not ok, host
        # and removing all of them again (SSA dropping the keys) is allowed too
        ok, failed = admit(on, new, old, request())
        assert ok, (host, failed)
