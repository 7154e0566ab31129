"""Checks a Grafana dashboard JSON file without a Grafana server.

1. Structure: a round trip through grafana-foundation-sdk (`Dashboard.from_json(...).to_json()`).
   The SDK ignores keys it does not know, so a key that is in the file but missing after the round
   trip is unknown to the dashboard schema (a typo such as `gridPoss`, or an option the panel type
   does not have): that is an error.
2. Conventions: the template variables datasource, cluster, node (and gpu where the dashboard is
   per GPU), every panel and target using the `${datasource}` variable, unique panel ids.
3. PromQL: every target's expr, with the Grafana variables replaced, becomes a recording rule and
   `promtool check rules` must accept the file (promtool parses with the real Prometheus parser).

Run as a script: python3 dashboard_lint.py FILE... (exit 1 on the first problem list).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

REQUIRED_VARS = ("datasource", "cluster", "node")
# Grafana's built-in and our own variables, replaced by values valid in PromQL.
VAR_VALUES = {
    "__rate_interval": "5m",
    "__interval": "1m",
    "__range": "1h",
    "datasource": "prometheus",
    "cluster": ".*",
    "node": ".*",
    "gpu": ".*",
    "vendor": ".*",
}


def sdk_round_trip(raw: dict) -> dict:
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.cog.plugins import register_default_plugins
    from grafana_foundation_sdk.models.dashboard import Dashboard

    register_default_plugins()
    return json.loads(json.dumps(Dashboard.from_json(raw), cls=JSONEncoder))


def dropped_keys(before, after, path="") -> list[str]:
    """Key paths present in `before` but absent from `after`."""
    out: list[str] = []
    if isinstance(before, dict):
        if not isinstance(after, dict):
            return [f"{path or '/'}: became {type(after).__name__}"]
        for k, v in before.items():
            p = f"{path}/{k}"
            if k not in after:
                out.append(p)
            else:
                out.extend(dropped_keys(v, after[k], p))
    elif isinstance(before, list):
        if not isinstance(after, list) or len(after) != len(before):
            return [f"{path}: list changed length"]
        for i, (b, a) in enumerate(zip(before, after)):
            out.extend(dropped_keys(b, a, f"{path}[{i}]"))
    return out


def all_panels(dash: dict):
    for p in dash.get("panels", []):
        yield p
        yield from p.get("panels", [])  # collapsed rows


def substitute(expr: str) -> str:
    def repl(m: re.Match) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in VAR_VALUES:
            raise ValueError(f"unknown variable ${name} in {expr!r}")
        return VAR_VALUES[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)", repl, expr)


def targets(dash: dict):
    for p in all_panels(dash):
        for t in p.get("targets", []):
            yield p, t


def check(path: str, promtool: str | None = None) -> list[str]:
    problems: list[str] = []
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)

    # 1. structure
    try:
        after = sdk_round_trip(raw)
    except Exception as e:  # the SDK raises plain exceptions on broken shapes
        return [f"{path}: grafana-foundation-sdk cannot parse it: {e!r}"]
    problems += [f"{path}: key unknown to the dashboard schema: {k}" for k in dropped_keys(raw, after)]

    # 2. conventions
    names = [v.get("name") for v in raw.get("templating", {}).get("list", [])]
    for v in REQUIRED_VARS:
        if v not in names:
            problems.append(f"{path}: template variable {v!r} missing")
    if not raw.get("uid"):
        problems.append(f"{path}: no uid")
    ids = [p.get("id") for p in all_panels(raw)]
    if len(ids) != len(set(ids)):
        problems.append(f"{path}: duplicate panel ids {ids}")
    for p in all_panels(raw):
        if p.get("type") == "row":
            continue
        if (p.get("datasource") or {}).get("uid") != "${datasource}":
            problems.append(f"{path}: panel {p.get('title')!r} does not use ${{datasource}}")
        if not p.get("targets"):
            problems.append(f"{path}: panel {p.get('title')!r} has no query")
        if "gridPos" not in p:
            problems.append(f"{path}: panel {p.get('title')!r} has no gridPos")

    # 3. PromQL through promtool
    exprs = []
    for p, t in targets(raw):
        if "expr" not in t or not t["expr"].strip():
            problems.append(f"{path}: panel {p.get('title')!r} target {t.get('refId')} has no expr")
            continue
        try:
            exprs.append((p.get("title"), substitute(t["expr"])))
        except ValueError as e:
            problems.append(f"{path}: panel {p.get('title')!r}: {e}")
    for v in raw.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", q or "")
            if not m:
                problems.append(f"{path}: variable {v.get('name')!r} query {q!r} is not label_values(expr, label)")
            else:
                exprs.append((f"variable {v.get('name')}", substitute(m.group(1))))
    promtool = promtool or shutil.which("promtool")
    if not promtool:
        problems.append("promtool not found: install it (apt-get install prometheus)")
        return problems
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": e} for i, (_, e) in enumerate(exprs)]}]}
    with tempfile.TemporaryDirectory() as d:
        rf = os.path.join(d, "queries.yaml")
        with open(rf, "w", encoding="utf-8") as f:
            json.dump(rules, f)  # JSON is YAML
        r = subprocess.run([promtool, "check", "rules", rf], capture_output=True, text=True)
        if r.returncode != 0:
            problems.append(f"{path}: promtool rejects a query:\n{r.stdout}{r.stderr}")
    return problems


def main(argv: list[str]) -> int:
    bad = 0
    for p in argv:
        probs = check(p)
        for x in probs:
            print(x)
        bad += bool(probs)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
