//! Deployment checks: the Helm chart, the alert rules, the Grafana dashboards and the container
//! image, each checked by the real tool (Helm Go SDK, kubernetes-validate, promtool,
//! grafana-foundation-sdk, hadolint, debootstrap + buildah).
//!
//! The checks live in the Python driver `tests/deploy/` (pytest); these tests run it so that the
//! one `cargo test` covers them. The Python with the packages is `.venv/bin/python` in the
//! repository (made by `scripts/install-deps-deploy.sh`), or `GPUSCOUT_DEPLOY_PYTHON`. A missing
//! interpreter or tool FAILS with the command that installs it; nothing is skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("GPUSCOUT_DEPLOY_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = repo().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "{} not found: run scripts/install-deps-deploy.sh (or set GPUSCOUT_DEPLOY_PYTHON)",
        venv.display()
    );
    venv
}

/// Runs `pytest` on one file of tests/deploy (optionally `-k` filtered) and fails with its output.
fn pytest(file: &str, filter: Option<&str>) {
    pytest_env(file, filter, &[]);
}

/// [`pytest`] with extra environment variables.
fn pytest_env(file: &str, filter: Option<&str>, env: &[(&str, &Path)]) {
    let mut cmd = Command::new(python());
    cmd.envs(env.iter().map(|(k, v)| (*k, *v)));
    cmd.current_dir(repo())
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA"])
        .arg(format!("tests/deploy/{file}"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("GPUSCOUT_BINARY", env!("CARGO_BIN_EXE_gpuscout"));
    if let Some(k) = filter {
        cmd.args(["-k", k]);
    }
    let out = cmd.output().expect("start python");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("No module named pytest"),
        "pytest missing: run scripts/install-deps-deploy.sh\n{text}"
    );
    assert!(out.status.success(), "pytest {file} failed:\n{text}");
    // Print pytest's own summary so the run shows how many checks ran.
    if let Some(last) = text.lines().rev().find(|l| l.contains(" passed")) {
        println!("{file}: {last}");
    }
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    pytest("test_alerts.py", None);
}

/// The optional unmanaged-GPU-use alert and the chart's pod-attribution mounts (docs/POD-ATTRIBUTION.md).
#[test]
fn unmanaged_gpu_use_alert_and_pod_attribution_chart_values() {
    pytest("test_unmanaged_alert.py", None);
}

#[test]
fn helm_chart_renders_lints_validates_and_rejects_bad_values() {
    pytest("test_chart.py", None);
}

/// The opt-in features: Talos API evidence (talos.dev ServiceAccount, validated structurally) and
/// a secured /metrics (review RBAC, TLS Secret, HTTPS probes against the real agent, monitors).
#[test]
fn helm_chart_talos_api_and_metrics_security() {
    pytest("test_chart_security.py", None);
}

/// Least privilege and the operator knobs: the mounts are the agent's own host-path table (from
/// the binary), non-root, securityContext overrides, namespaceOverride, NetworkPolicy, monitor
/// and alert knobs, the shared job selector, and the uninstall hook with its short-lived RBAC.
#[test]
fn helm_chart_least_privilege_knobs_and_uninstall_hook() {
    pytest("test_chart_knobs.py", None);
}

#[test]
fn admission_policy_cel_allows_only_own_node_and_prefix() {
    pytest("test_admission_policy.py", None);
}

#[test]
fn dashboards_round_trip_the_grafana_sdk_and_parse_in_promtool() {
    pytest("test_dashboards.py", None);
}

#[test]
fn containerfile_is_hadolint_clean() {
    pytest("test_image.py", Some("not builds"));
}

/// Slow (about 10 s with a cached debootstrap, about 2 minutes on a fresh machine): debootstrap,
/// buildah build, `gpuscout discover` inside the image.
#[test]
fn image_builds_without_a_registry_and_discovers_inside() {
    pytest("test_image.py", Some("builds"));
}

/// A real Prometheus scraping `gpuscout serve` on every fixture host root: every dashboard panel
/// and variable query returns data, and the pending alerts are the ones the verdicts call for.
#[test]
fn dashboards_and_alerts_against_prometheus_scraping_serve() {
    pytest("test_live.py", Some("not flags"));
}

/// The DaemonSet's flags and env vars are the real `serve`'s.
#[test]
fn chart_flags_and_env_are_accepted_by_serve() {
    pytest("test_live.py", Some("flags"));
}

/// The chart refuses a compat profile while the tool whose keys it writes runs in the cluster:
/// the Helm Go SDK renders cluster-aware against two API stand-ins over HTTP (one with GPU
/// Feature Discovery, ROCm's node labeller and Intel's NodeFeatureRule, one with none).
#[test]
fn helm_chart_refuses_compat_keys_beside_a_peer() {
    use crate::standin::StandIn;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let peers = StandIn::new();
    peers.add_node("gpu-1", &[("nvidia.com/gpu.present", "true")]);
    peers.add_daemonset(
        "gpu-operator",
        "gpu-feature-discovery",
        "nvcr.io/nvidia/k8s-device-plugin:v0.17.0",
    );
    peers.add_daemonset(
        "kube-amd-gpu",
        "amdgpu-labeller",
        "rocm/k8s-device-plugin:labeller-1.31.0.10",
    );
    peers.add_daemonset(
        "monitoring",
        "node-exporter",
        "quay.io/prometheus/node-exporter:v1.9.1",
    );
    peers.add_nodefeaturerule(
        "intel-dp-devices",
        &[("intel.feature.node.kubernetes.io/gpu", "true")],
    );
    let empty = StandIn::new();
    empty.add_node("gpu-1", &[]);
    empty.add_daemonset(
        "monitoring",
        "node-exporter",
        "quay.io/prometheus/node-exporter:v1.9.1",
    );
    let dir = tempfile::tempdir().unwrap();
    let mut configs = Vec::new();
    for (name, api) in [("peers", &peers), ("empty", &empty)] {
        let addr = rt.block_on(api.serve_tcp());
        let path = dir.path().join(format!("{name}.kubeconfig"));
        #[allow(clippy::disallowed_methods)]
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    server: http://{addr}\nusers:\n- name: admin\n  user:\n    token: test-token\ncontexts:\n- name: standin\n  context:\n    cluster: standin\n    user: admin\ncurrent-context: standin\n"
            ),
        )
        .unwrap();
        configs.push(path);
    }
    pytest_env(
        "test_chart_peers.py",
        None,
        &[
            ("GPUSCOUT_PEER_KUBECONFIG_PEERS", &configs[0]),
            ("GPUSCOUT_PEER_KUBECONFIG_EMPTY", &configs[1]),
        ],
    );
    // The chart did look: Helm listed the DaemonSets of the cluster with the peers.
    assert!(
        peers
            .log()
            .iter()
            .any(|l| l.path.contains("/apis/apps/v1/daemonsets")),
        "no DaemonSet LIST reached the stand-in"
    );
    drop(rt);
}
