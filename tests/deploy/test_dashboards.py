"""Dashboards: grafana-foundation-sdk round trip (unknown keys fail), variables, PromQL via promtool."""

from __future__ import annotations

import json

import pytest

from conftest import REPO, tool

import dashboard_lint

DASHBOARDS = sorted((REPO / "dashboards").glob("*.json"))


def test_the_three_dashboards_exist():
    uids = {json.loads(p.read_text())["uid"] for p in DASHBOARDS}
    assert {"gpuscout-fleet", "gpuscout-gpu", "gpuscout-agent"} <= uids


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_clean(path):
    try:
        import grafana_foundation_sdk  # noqa: F401
    except ImportError:
        pytest.fail("grafana-foundation-sdk is not installed; pip install grafana-foundation-sdk")
    problems = dashboard_lint.check(str(path), promtool=tool("promtool"))
    assert problems == []


def test_gpu_detail_has_gpu_variable():
    d = json.loads((REPO / "dashboards" / "gpuscout-gpu.json").read_text())
    assert [v["name"] for v in d["templating"]["list"]] == ["datasource", "cluster", "node", "gpu"]


def test_every_panel_query_is_filtered_by_cluster_and_node():
    for p in DASHBOARDS:
        d = json.loads(p.read_text())
        for panel, t in dashboard_lint.targets(d):
            assert 'cluster=~"$cluster"' in t["expr"] and 'node=~"$node"' in t["expr"], (p.name, panel["title"])


def test_linter_catches_unknown_keys_and_bad_promql(tmp_path):
    """The checker bites: a typo'd key and an unparsable query are both reported."""
    d = json.loads(DASHBOARDS[0].read_text())
    panels = [x for x in d["panels"] if x["type"] != "row"]
    panels[0]["gridPoss"] = panels[0]["gridPos"]
    panels[1]["options"]["colourMode"] = "value"
    panels[2]["targets"][0]["expr"] = "sum(rate(gpuscout_gpus[5m])"
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(d))
    problems = "\n".join(dashboard_lint.check(str(f), promtool=tool("promtool")))
    assert "gridPoss" in problems and "colourMode" in problems
    assert "unclosed left parenthesis" in problems
