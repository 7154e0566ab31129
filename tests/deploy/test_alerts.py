"""Alert rules (docs/operations.md): promtool check/test, annotation conventions, metric names of docs/reference/metrics.md,
runbooks, and a fire and a silent case for every alert."""

from __future__ import annotations

import re
import subprocess

from conftest import REPO, RULES, tool, yaml_mod

TESTS = REPO / "tests" / "alerts"
RUNBOOK_BASE = "https://github.com/gpuscout/gpuscout/blob/main/docs/runbooks/"

# Metric families of docs/reference/metrics.md the rules may use, plus the Prometheus series every target has.
CONTRACT_METRICS = {
    "gpuscout_gpu_info", "gpuscout_gpus", "gpuscout_gpu_driver_status", "gpuscout_gpu_ready",
    "gpuscout_gpu_memory_total_bytes", "gpuscout_gpu_memory_used_bytes",
    "gpuscout_gpu_utilization_ratio", "gpuscout_gpu_temperature_celsius", "gpuscout_gpu_power_watts",
    "gpuscout_gpu_power_limit_watts", "gpuscout_gpu_energy_joules_total", "gpuscout_gpu_clock_hertz",
    "gpuscout_gpu_fan_speed_rpm", "gpuscout_gpu_pcie_link_width",
    "gpuscout_gpu_pcie_link_transfers_per_second", "gpuscout_gpu_ecc_errors_total",
    "gpuscout_gpu_xid_errors_total", "gpuscout_kernel_module_loaded", "gpuscout_talos_info",
    "gpuscout_talos_extension_info", "gpuscout_scrape_source_success",
    "gpuscout_scrape_source_duration_seconds", "gpuscout_label_sync_total", "gpuscout_build_info",
}
# Used only where present (the rule falls back without it); not in that set.
OPTIONAL_METRICS = {"gpuscout_gpu_temperature_critical_celsius"}
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}

REQUIRED_ALERTS = {
    "driver not ready for 10m": "GpuscoutDriverNotReady",
    "Talos extension missing": "GpuscoutTalosExtensionMissing",
    "GPU count dropped below its recent maximum": "GpuscoutGpuCountDropped",
    "agent down": "GpuscoutAgentDown",
    "agent absent": "GpuscoutAgentAbsent",
    "label sync failing": "GpuscoutLabelSyncFailing",
    "a source failing": "GpuscoutSourceFailing",
    "temperature near critical": "GpuscoutGpuTemperatureNearCritical",
    "XID errors": "GpuscoutGpuXidErrors",
    "uncorrected ECC errors": "GpuscoutGpuUncorrectedEccErrors",
}


def rules() -> list[dict]:
    doc = yaml_mod().safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def test_promtool_check_rules():
    r = subprocess.run([tool("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(rules())} rules found" in r.stdout


def test_promtool_unit_tests_pass():
    files = sorted(TESTS.glob("*.yaml"))
    assert files, "no promtool unit tests in tests/alerts/"
    r = subprocess.run([tool("promtool"), "test", "rules", *map(str, files)], capture_output=True,
                       text=True, cwd=TESTS)
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_unit_tests_can_fail(tmp_path):
    """The unit tests bite: a rule whose threshold is changed makes them fail."""
    src = RULES.read_text()
    broken = src.replace("for: 10m", "for: 1m", 1)
    assert broken != src
    (tmp_path / "rules.yaml").write_text(broken)
    test = (TESTS / "gpuscout-rules.test.yaml").read_text().replace(
        "../../charts/gpuscout/rules/gpuscout-rules.yaml", "rules.yaml")
    (tmp_path / "t.yaml").write_text(test)
    r = subprocess.run([tool("promtool"), "test", "rules", "t.yaml"], capture_output=True, text=True,
                       cwd=tmp_path)
    assert r.returncode != 0 and "GpuscoutDriverNotReady" in r.stdout + r.stderr


def test_every_spec_alert_exists():
    names = {r["alert"] for r in rules()}
    missing = {k: v for k, v in REQUIRED_ALERTS.items() if v not in names}
    assert not missing, missing


def test_annotations_labels_and_runbooks():
    for r in rules():
        name = r["alert"]
        assert re.fullmatch(r"Gpuscout[A-Z][A-Za-z]+", name), name
        assert r["labels"]["severity"] in {"critical", "warning", "info"}, name
        ann = r["annotations"]
        for key in ("summary", "description", "runbook_url"):
            assert ann.get(key, "").strip(), f"{name}: {key} missing"
        assert ann["runbook_url"] == RUNBOOK_BASE + name.lower() + ".md", name
        runbook = REPO / "docs" / "runbooks" / (name.lower() + ".md")
        assert runbook.is_file(), f"{name}: {runbook} missing"
        text = runbook.read_text()
        assert name in text, f"{runbook} does not name {name}"
        for section in ("## Meaning", "## Impact", "## Diagnosis", "## Mitigation"):
            assert section in text, f"{runbook}: no {section!r} section"


def test_metric_names_are_the_spec_names():
    allowed = CONTRACT_METRICS | OPTIONAL_METRICS | PROMETHEUS_SERIES
    funcs = {"max", "min", "sum", "avg", "count", "by", "on", "without", "ignoring", "group_left",
             "unless", "and", "or", "absent", "rate", "increase", "max_over_time", "humanize"}
    for r in rules():
        # strip label matchers, grouping lists and strings, then collect identifiers
        expr = re.sub(r'\{[^}]*\}|"[^"]*"|\[[^\]]*\]', " ", r["expr"])
        expr = re.sub(r"\b(by|on|without|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
        names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr)) - funcs
        unknown = {n for n in names if not re.fullmatch(r"\d+[smh]?", n)} - allowed
        assert not unknown, f"{r['alert']}: metric names not in docs/reference/metrics.md: {unknown}"


def test_every_alert_has_a_firing_and_a_silent_case():
    doc = yaml_mod().safe_load((TESTS / "gpuscout-rules.test.yaml").read_text())
    fires, silent = set(), set()
    for t in doc["tests"]:
        for case in t.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else silent).add(case["alertname"])
    names = {r["alert"] for r in rules()}
    assert names - fires == set(), f"no firing case: {names - fires}"
    assert names - silent == set(), f"no silent case: {names - silent}"
