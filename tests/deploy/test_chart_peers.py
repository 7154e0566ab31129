"""The chart's compat peer check (templates/compat-peer-check.yaml) against a cluster: the Helm Go
SDK renders cluster-aware (its `lookup` asks the API server) against the in-process Kubernetes API
stand-in, which the Rust test `deploy::helm_chart_refuses_compat_keys_beside_a_peer` starts and
seeds. Two stand-ins: one with GPU Feature Discovery, ROCm's node labeller and Intel's
NodeFeatureRule running, one with none of them."""

from __future__ import annotations

import os

import pytest

from conftest import CHART, NAMESPACE, RELEASE, helm


def kubeconfig(which: str) -> str:
    var = f"GPUSCOUT_PEER_KUBECONFIG_{which.upper()}"
    path = os.environ.get(var)
    if not path:
        pytest.fail(f"{var} is not set: run `cargo test --test integration "
                    "deploy::helm_chart_refuses_compat_keys_beside_a_peer`, which starts the API stand-in")
    return path


def render_against(which: str, compat: dict) -> dict[str, str]:
    h = helm()
    with h.Config(kubeconfig_path=kubeconfig(which), namespace=NAMESPACE) as cfg, \
            h.Chart.load(str(CHART)) as chart:
        return cfg.render(chart, {"labels": {"compat": compat}}, name=RELEASE, namespace=NAMESPACE,
                          is_install=True)


@pytest.mark.parametrize("profile, peer", [
    ("nvidiaGfd", "DaemonSet gpu-operator/gpu-feature-discovery runs NVIDIA GPU Feature Discovery"),
    ("amdLabeller", "DaemonSet kube-amd-gpu/amdgpu-labeller runs ROCm's node labeller"),
    ("intelNfd", "NodeFeatureRule intel-dp-devices writes the Intel GPU keys"),
])
def test_profile_refused_while_its_peer_runs(profile, peer):
    with pytest.raises(Exception) as e:
        render_against("peers", {profile: True})
    msg = str(e.value)
    assert peer in msg, msg
    assert "docs/coexistence.md" in msg, msg
    # Only the peer of the profile that is on is named.
    others = {"nvidiaGfd": "Feature Discovery", "amdLabeller": "node labeller", "intelNfd": "NodeFeatureRule"}
    for p, word in others.items():
        if p != profile:
            assert word not in msg, msg


def test_profiles_off_install_beside_peers():
    out = render_against("peers", {})
    assert any("kind: DaemonSet" in m for m in out.values())


def test_peer_check_can_be_turned_off():
    out = render_against("peers", {"nvidiaGfd": True, "peerCheck": False})
    ds = next(m for m in out.values() if "kind: DaemonSet" in m)
    assert "GPUSCOUT_COMPAT_NVIDIA_GFD" in ds


def test_profiles_install_without_peers():
    out = render_against("empty", {"nvidiaGfd": True, "amdLabeller": True, "intelNfd": True})
    ds = next(m for m in out.values() if "kind: DaemonSet" in m)
    for env in ("GPUSCOUT_COMPAT_NVIDIA_GFD", "GPUSCOUT_COMPAT_AMD_LABELLER", "GPUSCOUT_COMPAT_INTEL_NFD"):
        assert env in ds
