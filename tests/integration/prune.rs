//! `gpuscout prune-labels` (the chart's uninstall hook) against the API stand-in: the labels the
//! real label sync applied go, foreign labels (including compat-looking keys another manager
//! set) stay; it waits for the agents to stop first; it deletes only our NodeFeatures; it
//! survives conflicts; and the binary, run as the hook runs it, leaves a Node the real kubectl
//! sees clean.

use crate::standin::{Action, Fault, Match, StandIn};
use gpuscout::k8s::prune::{self, Nodes, PruneConfig};
use gpuscout::k8s::{LabelSync, SyncConfig};
use gpuscout::model::{Host, Report};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};

const NS: &str = "gpu-system";
const AGENT: &[(&str, &str)] = &[
    ("app.kubernetes.io/name", "gpuscout"),
    ("app.kubernetes.io/instance", "gpuscout"),
];
const SELECTOR: &str = "app.kubernetes.io/name=gpuscout,app.kubernetes.io/instance=gpuscout";

/// What the agent applies: prefix keys and one compat key (GFD's product).
const OURS: &[(&str, &str)] = &[
    ("gpuscout.io/present", "true"),
    ("gpuscout.io/nvidia.count", "1"),
    ("nvidia.com/gpu.product", "NVIDIA-GeForce-RTX-4090"),
];

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A cluster after some time with gpuscout: `n1` and `n3` labelled by the real label sync
/// (server-side apply, field manager gpuscout), `n2` never ran an agent. Foreign labels: the
/// kubelet's, a team label, GFD's `nvidia.com/gpu.count`, and a key under our prefix set by
/// hand with `kubectl label` (ours by prefix, so it goes too).
async fn labelled_cluster() -> StandIn {
    let api = StandIn::new();
    for n in ["n1", "n2", "n3"] {
        api.add_node(
            n,
            &[
                ("kubernetes.io/hostname", n),
                ("team.example.com/owner", "ml"),
            ],
        );
    }
    for n in ["n1", "n3"] {
        let mut cfg = SyncConfig::new(n, "gpuscout.io");
        cfg.start_jitter = Duration::ZERO;
        cfg.events = false;
        cfg.seed = Some(7);
        let mut registry = prometheus_client::registry::Registry::default();
        let sync = LabelSync::new(cfg, Some(api.client()), &mut registry);
        let report = Arc::new(Report::new(Host::default(), Vec::new(), map(OURS)));
        let (_tx, rx) = watch::channel(report);
        let (stop, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(sync.run(rx, async move {
            let _ = stop_rx.await;
        }));
        for _ in 0..100 {
            if api.labels(n).contains_key("gpuscout.io/present") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = stop.send(());
        task.await.unwrap();
    }
    api.set_labels_as(
        "n1",
        "gpu-feature-discovery",
        &[("nvidia.com/gpu.count", Some("1"))],
    );
    api.set_labels_as(
        "n1",
        "kubectl-label",
        &[("gpuscout.io/note", Some("by-hand"))],
    );
    for (k, v) in OURS {
        assert_eq!(
            api.labels("n1").get(*k).map(String::as_str),
            Some(*v),
            "setup"
        );
    }
    api
}

fn foreign(n: &str) -> BTreeMap<String, String> {
    map(&[
        ("kubernetes.io/hostname", n),
        ("team.example.com/owner", "ml"),
    ])
}

fn config() -> PruneConfig {
    let mut c = PruneConfig::new("gpuscout.io");
    c.wait_for_pods = Some((NS.to_owned(), SELECTOR.to_owned()));
    c.wait = Duration::from_secs(60);
    c
}

fn node_patches(api: &StandIn, node: &str) -> usize {
    api.log()
        .iter()
        .filter(|l| l.method == "PATCH" && l.path == format!("/api/v1/nodes/{node}"))
        .count()
}

#[tokio::test(start_paused = true)]
async fn removes_our_labels_everywhere_and_keeps_foreign_ones() {
    let api = labelled_cluster().await;
    api.clear_log();
    let r = prune::prune(Some(&api.client()), &config()).await;
    assert_eq!(r.failures, Vec::<String>::new());
    assert_eq!(r.nodes, 3);
    assert_eq!(
        r.removed["n1"],
        [
            "gpuscout.io/note",
            "gpuscout.io/nvidia.count",
            "gpuscout.io/present",
            "nvidia.com/gpu.product"
        ]
    );
    let mut n1 = foreign("n1");
    n1.insert("nvidia.com/gpu.count".into(), "1".into());
    assert_eq!(api.labels("n1"), n1, "GFD's key and the team label survive");
    assert_eq!(api.labels("n2"), foreign("n2"));
    assert_eq!(api.labels("n3"), foreign("n3"));
    assert_eq!(
        node_patches(&api, "n2"),
        0,
        "a Node without our labels is not written"
    );
    // gpuscout owns nothing any more on the Nodes it pruned.
    for n in ["n1", "n3"] {
        let owned = api.node(n).unwrap().owned;
        assert!(
            owned
                .managed
                .iter()
                .filter(|m| m.manager == "gpuscout")
                .all(|m| m.keys.is_empty()),
            "{n}: {:?}",
            owned.managed
        );
    }
    // A second run finds nothing and writes nothing.
    api.clear_log();
    let again = prune::prune(Some(&api.client()), &config()).await;
    assert!(
        again.removed.is_empty() && again.failures.is_empty(),
        "{again:?}"
    );
    assert_eq!(api.successful_writes(), 0);
}

#[tokio::test(start_paused = true)]
async fn waits_for_the_agents_to_stop_before_touching_a_node() {
    let api = labelled_cluster().await;
    api.add_pod(NS, "gpuscout-abcde", AGENT);
    api.add_pod(NS, "other-app", &[("app.kubernetes.io/name", "other")]);
    api.add_pod("elsewhere", "gpuscout-zzzzz", AGENT);
    api.clear_log();
    let client = api.client();
    let task = tokio::spawn(async move { prune::prune(Some(&client), &config()).await });
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(!task.is_finished());
    assert_eq!(node_patches(&api, "n1"), 0, "no prune while an agent runs");
    assert!(
        api.requests_to("/api/v1/namespaces/gpu-system/pods") >= 5,
        "it polls"
    );
    api.remove_pod(NS, "gpuscout-abcde");
    let r = task.await.unwrap();
    assert_eq!(r.pods_still_running, 0);
    assert_eq!(api.labels("n1").get("gpuscout.io/present"), None);
}

#[tokio::test(start_paused = true)]
async fn prunes_anyway_after_the_wait_and_says_so() {
    let api = labelled_cluster().await;
    api.add_pod(NS, "gpuscout-stuck", AGENT);
    let mut c = config();
    c.wait = Duration::from_secs(10);
    let r = prune::prune(Some(&api.client()), &c).await;
    assert_eq!(r.pods_still_running, 1);
    assert!(r.failures.is_empty());
    assert_eq!(api.labels("n3"), foreign("n3"));
}

#[tokio::test(start_paused = true)]
async fn retries_a_node_whose_version_moved() {
    let api = labelled_cluster().await;
    api.fail(Fault {
        when: Match {
            method: Some("PATCH"),
            path_contains: Some("/api/v1/nodes/n3".into()),
            watch: None,
        },
        what: Action::Status(409, None),
        times: Some(2),
    });
    let mut c = config();
    c.nodes = Nodes::One("n3".into());
    let r = prune::prune(Some(&api.client()), &c).await;
    assert!(r.failures.is_empty(), "{r:?}");
    assert_eq!(api.labels("n3"), foreign("n3"));
    assert_eq!(
        api.labels("n1").get("gpuscout.io/present").unwrap(),
        "true",
        "only n3"
    );
}

#[tokio::test(start_paused = true)]
async fn a_forbidden_node_is_a_failure_and_the_others_are_still_pruned() {
    let api = labelled_cluster().await;
    api.fail(Fault {
        when: Match {
            method: Some("PATCH"),
            path_contains: Some("/api/v1/nodes/n1".into()),
            watch: None,
        },
        what: Action::Status(403, None),
        times: None,
    });
    let r = prune::prune(Some(&api.client()), &config()).await;
    assert_eq!(r.failures.len(), 1, "{r:?}");
    assert!(r.failures[0].contains("n1"), "{r:?}");
    assert_eq!(api.labels("n3"), foreign("n3"));
}

#[tokio::test(start_paused = true)]
async fn deletes_only_our_nodefeatures() {
    let api = StandIn::new();
    api.add_node("n1", &[]);
    api.put_nodefeature(
        NS,
        "gpuscout-n1",
        &[("nfd.node.kubernetes.io/node-name", "n1")],
    );
    api.put_nodefeature(
        NS,
        "gpuscout-n2",
        &[("nfd.node.kubernetes.io/node-name", "n2")],
    );
    // nfd-worker's own object, and look-alikes that are not ours.
    api.put_nodefeature(NS, "n1", &[("nfd.node.kubernetes.io/node-name", "n1")]);
    api.put_nodefeature(NS, "gpuscout-x", &[]);
    api.put_nodefeature(
        NS,
        "gpuscout-n3",
        &[("nfd.node.kubernetes.io/node-name", "n4")],
    );
    api.put_nodefeature(
        "other",
        "gpuscout-n1",
        &[("nfd.node.kubernetes.io/node-name", "n1")],
    );
    let mut c = PruneConfig::new("gpuscout.io");
    c.nodefeature_namespace = Some(NS.into());
    let r = prune::prune(Some(&api.client()), &c).await;
    assert!(r.failures.is_empty(), "{r:?}");
    assert_eq!(r.nodefeatures_deleted, ["gpuscout-n1", "gpuscout-n2"]);
    assert_eq!(
        api.nodefeature_names(NS),
        ["gpuscout-n3", "gpuscout-x", "n1"]
    );
    assert_eq!(api.nodefeature_names("other"), ["gpuscout-n1"]);
}

// ---- the binary, as the chart's hook runs it, with the real kubectl as second client ----

fn kubeconfig(dir: &std::path::Path, addr: std::net::SocketAddr) -> std::path::PathBuf {
    let p = dir.join("kubeconfig");
    std::fs::write(
        &p,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    server: http://{addr}\nusers:\n- name: hook\n  user:\n    token: test-token\ncontexts:\n- name: standin\n  context:\n    cluster: standin\n    user: hook\ncurrent-context: standin\n"
        ),
    )
    .unwrap();
    p
}

async fn run(cmd: std::process::Command) -> std::process::Output {
    let mut cmd = cmd;
    tokio::task::spawn_blocking(move || cmd.output().expect("run"))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hook_command_leaves_nodes_clean_as_kubectl_sees_them() {
    let api = labelled_cluster().await;
    let addr = api.serve_tcp().await;
    let home = tempfile::tempdir().unwrap();
    let kc = kubeconfig(home.path(), addr);
    let kubectl_bin = std::env::var_os("KUBECTL").unwrap_or_else(|| "/usr/bin/kubectl".into());
    let kubectl = |args: &[&str]| {
        let mut c = std::process::Command::new(&kubectl_bin);
        c.args(args)
            .arg("--kubeconfig")
            .arg(&kc)
            .arg("--cache-dir")
            .arg(home.path().join("cache"))
            .env("HOME", home.path())
            .env_remove("KUBECONFIG");
        c
    };
    // kubectl, a second client, adds a foreign label before the uninstall.
    let out = run(kubectl(&["label", "node", "n3", "example.com/rack=r7"])).await;
    assert!(out.status.success(), "{out:?}");

    let mut hook = std::process::Command::new(env!("CARGO_BIN_EXE_gpuscout"));
    hook.args([
        "prune-labels",
        "--all-nodes",
        "--label-prefix=gpuscout.io",
        &format!("--wait-for-pods={SELECTOR}"),
        &format!("--pods-namespace={NS}"),
        "--wait-timeout=30s",
        "--nodefeature-namespace",
        NS,
    ])
    .arg("--kubeconfig")
    .arg(&kc)
    .env("RUST_LOG", "info")
    .env_remove("KUBERNETES_SERVICE_HOST");
    let out = run(hook).await;
    let log =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(log.contains("prune finished"), "{log}");

    let out = run(kubectl(&["get", "nodes", "-o", "json"])).await;
    assert!(out.status.success(), "{out:?}");
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for item in list["items"].as_array().unwrap() {
        let name = item["metadata"]["name"].as_str().unwrap();
        let labels: BTreeMap<String, String> =
            serde_json::from_value(item["metadata"]["labels"].clone()).unwrap();
        assert!(
            !labels.keys().any(|k| k.starts_with("gpuscout.io/")),
            "{name}: {labels:?}"
        );
        assert!(!labels.contains_key("nvidia.com/gpu.product"), "{name}");
        assert_eq!(labels["team.example.com/owner"], "ml", "{name}");
    }
    let n3 = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["metadata"]["name"] == "n3")
        .unwrap();
    assert_eq!(n3["metadata"]["labels"]["example.com/rack"], "r7");
    assert_eq!(
        list["items"].as_array().unwrap()[0]["metadata"]["labels"]["nvidia.com/gpu.count"],
        "1",
        "GFD's key on n1 survives"
    );

    // Denied writes: the hook exits 1, so the Job retries.
    api.set_labels_as(
        "n2",
        "kubectl-label",
        &[("gpuscout.io/present", Some("true"))],
    );
    api.fail(Fault {
        when: Match::method("PATCH"),
        what: Action::Status(403, None),
        times: None,
    });
    let mut hook = std::process::Command::new(env!("CARGO_BIN_EXE_gpuscout"));
    hook.args(["prune-labels", "--all-nodes"])
        .arg("--kubeconfig")
        .arg(&kc)
        .env("RUST_LOG", "warn");
    let out = run(hook).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

#[test]
fn nfd_file_is_removed_on_the_node_without_an_api() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("gpuscout");
    std::fs::write(&f, "gpuscout.io/present=true\n").unwrap();
    let other = dir.path().join("other-vendor");
    std::fs::write(&other, "example.com/x=1\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gpuscout"))
        .args(["prune-labels", "--nfd-file"])
        .arg(&f)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(!f.exists() && other.exists());
    // Nothing to do is a usage error, not a silent success.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gpuscout"))
        .arg("prune-labels")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
