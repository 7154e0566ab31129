"""The ValidatingAdmissionPolicy's CEL, evaluated on Node updates with a real CEL implementation
(`common-expression-language`, Python bindings of the Rust `cel` crate).

No API server can run here, so this checks the policy's logic, not its admission wiring: the
match condition and every validation are evaluated as the API server would, with `object`,
`oldObject`, `request` and `variables`. That library has no optional syntax (`[?key].orValue()`),
so the `claim` variable's value is computed here with the same meaning (first node-name claim, or
'') and its expression text is checked instead.

A denial counts only when a validation evaluates to `false`. An expression that raises (a missing
field, a type error) would also deny under `failurePolicy: Fail`, but for the wrong reason: the
policy would refuse everything, the agent's own labels included. Such errors are collected apart
and fail every test that sees them, "denied" cases included.
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


class Decision:
    """What the API server decides for one request, and why."""

    def __init__(self):
        self.denied_by: list[str] = []  # messages of validations that evaluated to false
        self.errors: list[str] = []  # validations whose evaluation raised (not a denial)

    @property
    def allowed(self) -> bool:
        return not self.denied_by and not self.errors

    def __iter__(self):  # `ok, failed = admit(...)` for the allowed cases
        return iter((self.allowed, self.denied_by + self.errors))

    def __repr__(self):
        return f"Decision(denied_by={self.denied_by}, errors={self.errors})"


def admit(spec: dict, old: dict, new: dict, req: dict) -> Decision:
    """The decision the API server would take for an UPDATE of a Node."""
    c = cel()
    d = Decision()
    base = {"object": new, "oldObject": old, "request": req}
    if not all(c.evaluate(m["expression"], base) for m in spec["matchConditions"]):
        return d  # not the agent: the policy does not apply
    exprs = {v["name"]: v["expression"] for v in spec["variables"]}
    assert exprs["claim"] == f"request.userInfo.extra[?'{CLAIM_KEY}'].orValue([''])[0]"
    claims = req["userInfo"]["extra"].get(CLAIM_KEY, [""])
    variables = {"claim": claims[0], "prefixes": c.evaluate(exprs["prefixes"], {})}
    for v in spec["validations"]:
        message = v.get("message") or v.get("messageExpression")
        try:
            ok = c.evaluate(v["expression"], {**base, "variables": variables})
        except Exception as e:  # denies under failurePolicy Fail, but is not the policy's verdict
            d.errors.append(f"{message}: evaluation error: {e}")
            continue
        if ok is False:
            d.denied_by.append(message)
        elif ok is not True:
            d.errors.append(f"{message}: evaluated to {ok!r}, not a bool")
    return d


def assert_denied(d: Decision, because: str | None = None):
    """Denied by a validation that evaluated to false (with `because` in its message), and no
    evaluation error on the way."""
    assert not d.errors, f"evaluation errors are not denials: {d.errors}"
    assert d.denied_by, "allowed"
    if because is not None:
        assert any(because in m for m in d.denied_by), d.denied_by


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
# The validation that must deny each case (a part of its message).
DENIED_BY = {
    "add foreign label": "only add or change labels under its own prefix",
    "prefix lookalike": "only add or change labels under its own prefix",
    "change kubelet label": "only add or change labels under its own prefix",
    "remove kubelet label": "only remove labels under its own prefix",
    "add taint": "may not change a Node's spec",
    "cordon": "may not change a Node's spec",
    "add annotation": "may not change a Node's annotations",
    "compat key while compat is off": "only add or change labels under its own prefix",
}


@pytest.mark.parametrize("case", ALLOWED, ids=list(ALLOWED))
def test_agent_may_change_its_own_labels(case):
    old = node()
    ok, failed = admit(policy(), old, changed(old, ALLOWED[case]), request())
    assert ok, failed


@pytest.mark.parametrize("case", DENIED, ids=list(DENIED))
def test_agent_may_not_change_anything_else(case):
    old = node()
    assert_denied(admit(policy(), old, changed(old, DENIED[case]), request()), DENIED_BY[case])


def test_agent_may_not_touch_another_node():
    old = node("gpu-b")
    d = admit(policy(), old, changed(old, ALLOWED["add own label"]), request(claim="gpu-a"))
    assert_denied(d, "may not modify")


def test_token_without_node_claim_is_refused():
    old = node()
    d = admit(policy(), old, changed(old, ALLOWED["add own label"]), request(claim=None))
    assert_denied(d, "no node-name claim")


def test_evaluation_errors_are_not_denials():
    """A policy whose expressions cannot be evaluated refuses every update under failurePolicy
    Fail, the agent's own labels included. The denied cases must not pass because of that: a
    policy with a broken expression fails them."""
    spec = copy.deepcopy(policy())
    for v in spec["validations"]:
        if "annotations" in v["expression"]:
            v["expression"] = "object.metadata.no_such_field == oldObject.metadata.no_such_field"
    old = node()
    d = admit(spec, old, changed(old, DENIED["add annotation"]), request())
    assert d.errors and not d.denied_by, d
    with pytest.raises(AssertionError, match="evaluation errors are not denials"):
        assert_denied(d, DENIED_BY["add annotation"])


def test_other_users_are_not_matched():
    old = node()
    new = changed(old, DENIED["add taint"])
    ok, _ = admit(policy(), old, new, request(user="system:serviceaccount:kube-system:other", claim=None))
    assert ok  # this policy only constrains the agent; other users go through RBAC alone


def test_annotations_unchanged_are_fine():
    old = node(annotations={"node.alpha.kubernetes.io/ttl": "0"})
    ok, failed = admit(policy(), old, changed(old, ALLOWED["add own label"]), request())
    assert ok, failed
    d = admit(policy(), old, changed(old, lambda n: n["metadata"]["annotations"].clear()), request())
    assert_denied(d, "may not change a Node's annotations")


def test_compat_profile_widens_the_prefixes():
    spec = policy({"labels": {"compat": {"nvidiaGfd": True}}})
    old = node()
    ok, failed = admit(spec, old, changed(old, DENIED["compat key while compat is off"]), request())
    assert ok, failed
    assert_denied(admit(spec, old, changed(old, DENIED["add foreign label"]), request()),
                  DENIED_BY["add foreign label"])


def test_custom_prefix():
    spec = policy({"labels": {"prefix": "gpu.example.com"}})
    old = node()
    ok, failed = admit(spec, old, changed(old, lambda n: labels(n).update({"gpu.example.com/x": "1"})), request())
    assert ok, failed
    # the default prefix is foreign now
    assert_denied(admit(spec, old, changed(old, ALLOWED["add own label"]), request()),
                  "only add or change labels under its own prefix")


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
            assert_denied(admit(off, old, new, request()),
                          "only add or change labels under its own prefix")
        # and removing all of them again (SSA dropping the keys) is allowed too
        ok, failed = admit(on, new, old, request())
        assert ok, (host, failed)
