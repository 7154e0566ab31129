//! The daemon agrees with the one-shot command on every fixture.
//!
//! For every host root under `tests/fixtures/` (`hosts/`, `verdicts/`, `metrics/`) and every
//! label mode (`node`, `nfd-file`, `nodefeature`), the daemon path runs as `gpuscout serve` wires
//! it ([`serve::wire_label_sync`] + [`serve::wire_discovery`] on a [`Daemon`]) against the API
//! stand-in, over the in-memory transport in paused tokio time, for at least
//! [`MIN_PASSES`] discovery passes. Its Node is the one a real cluster would have:
//! `status.nodeInfo.osImage` is the fixture's os-release `PRETTY_NAME` and `kernelVersion` its
//! kernel release; on Talos v1.8 and later it also carries the `extensions.talos.dev/<name>`
//! entries Talos publishes for the fixture's `/etc/extensions.yaml` (siderolabs/talos
//! `internal/app/machined/pkg/controllers/k8s/node_label_spec.go` and
//! `node_annotation_spec.go`, since v1.8.0: a version that is a valid label value becomes a
//! label, any other (the 64-character schematic id) an annotation; a name that is not a valid
//! label key is skipped). Talos v1.7 and older, and other systems, publish nothing.
//!
//! Every pass's per-GPU `status` and `problems` and its `labels` must equal
//! `gpuscout discover --format json` on the same root, and what reached the cluster (the Node's
//! labels under our prefix, the NFD features file, the NodeFeature's labels) must equal the
//! same labels. A failure names the fixture, the mode, the pass and the field.

#![allow(clippy::disallowed_methods)] // the test reads fixture trees and its own temp files

use crate::standin::StandIn;
use gpuscout::discover::Options;
use gpuscout::hostroot::HostRoot;
use gpuscout::k8s::{LabelMode, SyncConfig};
use gpuscout::metrics::ExporterConfig;
use gpuscout::model::Report;
use gpuscout::serve::{self, Daemon, DaemonConfig};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const NODE: &str = "gpu-node-1";
const PREFIX: &str = "gpuscout.io";
const MIN_PASSES: usize = 3;
const INTERVAL: Duration = Duration::from_secs(30);
const NFD_NAMESPACE: &str = "gpuscout";

fn fixture_roots() -> Vec<(String, PathBuf)> {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out = Vec::new();
    for group in ["hosts", "verdicts", "metrics"] {
        let dir = base.join(group);
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() && !e.file_name().to_string_lossy().starts_with('_')
            {
                out.push((
                    format!("{group}/{}", e.file_name().to_string_lossy()),
                    e.path(),
                ));
            }
        }
    }
    out.sort();
    out
}

/// What the kubelet and Talos would publish on this fixture's Node.
#[derive(Debug, Default)]
struct NodeFacts {
    os_image: String,
    kernel_version: String,
    labels: Vec<(String, String)>,
    annotations: Vec<(String, String)>,
}

/// `KEY=value` lines of os-release(5), read independently of the agent's parser.
fn os_release(root: &HostRoot) -> BTreeMap<String, String> {
    let text = root
        .read_string("etc/os-release")
        .or_else(|_| root.read_string("usr/lib/os-release"))
        .unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            Some((k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        })
        .collect()
}

/// Kubernetes' label value rule (`k8s.io/apimachinery` `IsValidLabelValue`): at most 63
/// characters of `[A-Za-z0-9._-]`, starting and ending alphanumeric, or empty.
fn valid_label_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && v.as_bytes()[0].is_ascii_alphanumeric()
            && v.as_bytes()[v.len() - 1].is_ascii_alphanumeric())
}

fn talos_minor(version: &str) -> Option<(u32, u32)> {
    let v = version.trim_start_matches('v');
    let mut it = v.split(['.', '-']);
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

fn node_facts(root: &HostRoot) -> NodeFacts {
    let os = os_release(root);
    let mut f = NodeFacts {
        os_image: os
            .get("PRETTY_NAME")
            .cloned()
            .unwrap_or_else(|| "Unknown".to_owned()),
        kernel_version: root
            .read_string("proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
        ..NodeFacts::default()
    };
    let talos = os.get("ID").map(String::as_str) == Some("talos");
    let publishes = talos
        && os
            .get("VERSION_ID")
            .and_then(|v| talos_minor(v))
            .is_some_and(|v| v >= (1, 8));
    if !publishes {
        return f;
    }
    // The fixture's own record of what is installed; unreadable: nothing to publish.
    let Ok(text) = root.read_string("etc/extensions.yaml") else {
        return f;
    };
    let Ok(doc) = serde_norway::from_str::<Value>(&text) else {
        return f;
    };
    for layer in doc["layers"].as_array().into_iter().flatten() {
        let name = layer["metadata"]["name"].as_str().unwrap_or_default();
        let version = layer["metadata"]["version"].as_str().unwrap_or_default();
        if name.is_empty()
            || name.len() > 63
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            continue;
        }
        let key = format!("extensions.talos.dev/{name}");
        if valid_label_value(version) {
            f.labels.push((key, version.to_owned()));
        } else {
            f.annotations.push((key, version.to_owned()));
        }
    }
    f
}

/// `gpuscout discover --format json` on `root`, as a user runs it (no NVML library can load).
fn discover_json(root: &Path) -> Value {
    let out = crate::util::gpuscout(&[
        "discover",
        "--format",
        "json",
        "--nvml-lib",
        "/nonexistent/libnvidia-ml.so.1",
        "--root",
        &root.display().to_string(),
    ]);
    assert!(
        out.status.success(),
        "discover on {}: {out:?}",
        root.display()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn ours(m: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    m.iter()
        .filter(|(k, _)| k.starts_with(&format!("{PREFIX}/")))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn json_labels(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// Keys whose values differ between two label maps, as `key: a vs b` (absent is `-`).
fn label_diff(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> String {
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            let show = |m: &BTreeMap<String, String>| m.get(k).cloned().unwrap_or("-".into());
            format!("{k}: {} vs {}", show(a), show(b))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Differences between one daemon pass and the one-shot report, one line per field.
fn compare(report: &Report, want: &Value, what: &str, out: &mut Vec<String>) {
    let got = serde_json::to_value(report).unwrap();
    let (gg, wg) = (
        got["gpus"].as_array().cloned().unwrap_or_default(),
        want["gpus"].as_array().cloned().unwrap_or_default(),
    );
    if gg.len() != wg.len() {
        out.push(format!(
            "{what}: gpus: {} vs discover {}",
            gg.len(),
            wg.len()
        ));
        return;
    }
    for (g, w) in gg.iter().zip(&wg) {
        let addr = w["pci_address"].as_str().unwrap_or("?");
        for field in ["pci_address", "status", "problems"] {
            if g[field] != w[field] {
                out.push(format!(
                    "{what}: gpu {addr} {field}: daemon {} vs discover {}",
                    g[field], w[field]
                ));
            }
        }
    }
    let (gl, wl) = (json_labels(&got["labels"]), json_labels(&want["labels"]));
    if gl != wl {
        out.push(format!(
            "{what}: labels (daemon vs discover): {}",
            label_diff(&gl, &wl)
        ));
    }
}

/// Run the daemon path on one fixture in one mode; the mismatches found.
async fn daemon_path(fixture: &str, root: &Path, mode: LabelMode, want: &Value) -> Vec<String> {
    let host = HostRoot::new(root).unwrap();
    let facts = node_facts(&host);
    let api = StandIn::new();
    api.add_node(
        NODE,
        &[
            ("kubernetes.io/hostname", NODE),
            ("kubernetes.io/os", "linux"),
        ],
    );
    api.set_node_info(NODE, &facts.os_image, &facts.kernel_version);
    if !facts.labels.is_empty() {
        let changes: Vec<(&str, Option<&str>)> = facts
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), Some(v.as_str())))
            .collect();
        api.set_labels_as(NODE, "talos", &changes);
    }
    for (k, v) in &facts.annotations {
        api.set_annotation(NODE, k, v);
    }

    let tmp = tempfile::tempdir().unwrap();
    let nfd_file = tmp.path().join("gpuscout");
    let mut cfg = SyncConfig::new(NODE, PREFIX);
    cfg.mode = mode;
    cfg.nfd_file = nfd_file.clone();
    cfg.nodefeature_namespace = NFD_NAMESPACE.to_owned();
    let mut daemon = Daemon::new(
        host,
        Options::default(),
        DaemonConfig {
            discovery_interval: INTERVAL,
            exporter: ExporterConfig {
                deadline: Duration::from_secs(4),
                cache: Duration::ZERO,
            },
            grace: Duration::from_secs(5),
        },
    );
    let node_ext = serve::wire_label_sync(&mut daemon, cfg, Some(api.client()));
    assert!(node_ext.is_some(), "{fixture}: label sync is wired");
    serve::wire_discovery(&mut daemon, node_ext, None, None);

    // Every report the discovery loop publishes, in order.
    let passes: Arc<Mutex<Vec<Arc<Report>>>> = Arc::default();
    let mut rx = daemon.reports();
    let seen = passes.clone();
    let collector = tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let r = rx.borrow_and_update().clone();
            seen.lock().unwrap().push(r);
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(daemon.serve(listener, async move {
        let _ = stop_rx.await;
    }));
    // Virtual time: MIN_PASSES + 1 intervals, then time for the last sync turn.
    for _ in 0..=MIN_PASSES {
        tokio::time::sleep(INTERVAL).await;
    }
    tokio::time::sleep(Duration::from_secs(20)).await;

    let mut out = Vec::new();
    let reports = passes.lock().unwrap().clone();
    let m = format!("{mode:?}").to_lowercase();
    if reports.len() < MIN_PASSES {
        out.push(format!(
            "{fixture} [{m}]: only {} discovery passes",
            reports.len()
        ));
    }
    // Every pass must agree; the first disagreeing pass is reported (later ones repeat it).
    for (i, r) in reports.iter().enumerate() {
        let before = out.len();
        compare(
            r,
            want,
            &format!("{fixture} [{m}] pass {}", i + 1),
            &mut out,
        );
        if out.len() > before {
            break;
        }
    }
    let want_labels = json_labels(&want["labels"]);
    let published = match mode {
        LabelMode::Node => ours(&api.labels(NODE)),
        LabelMode::NfdFile => std::fs::read_to_string(&nfd_file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        LabelMode::Nodefeature => api
            .nodefeature(NFD_NAMESPACE, &format!("gpuscout-{NODE}"))
            .map(|nf| json_labels(&nf["spec"]["labels"]))
            .unwrap_or_default(),
        LabelMode::Off => BTreeMap::new(),
    };
    if published != want_labels {
        out.push(format!(
            "{fixture} [{m}]: labels in the cluster vs discover: {}",
            label_diff(&published, &want_labels)
        ));
    }
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("daemon stops")
        .expect("daemon task did not panic");
    collector.abort();
    out
}

#[tokio::test(start_paused = true)]
async fn daemon_path_equals_discover_on_every_fixture() {
    let fixtures = fixture_roots();
    assert!(fixtures.len() >= 30, "{} fixtures", fixtures.len());
    let mut failures = Vec::new();
    for (name, root) in &fixtures {
        let want = discover_json(root);
        for mode in [LabelMode::Node, LabelMode::NfdFile, LabelMode::Nodefeature] {
            failures.extend(daemon_path(name, root, mode, &want).await);
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches between the daemon path and `discover`:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The Node this harness builds is what Talos and the kubelet publish (checked on fixtures
/// whose facts are known), so the test above cannot pass by giving the daemon no evidence.
#[test]
fn the_harness_node_is_what_talos_publishes() {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let f = node_facts(&HostRoot::new(base.join("verdicts/talos-nvidia-ok-v1.11")).unwrap());
    assert_eq!(f.os_image, "Talos (v1.11.5)");
    assert_eq!(f.kernel_version, "6.12.57-talos");
    assert!(f.labels.contains(&(
        "extensions.talos.dev/nonfree-kmod-nvidia-production".to_owned(),
        "570.172.08-v1.11.5".to_owned()
    )));
    assert!(f.labels.contains(&(
        "extensions.talos.dev/modules.dep".to_owned(),
        "6.12.57-talos".to_owned()
    )));
    // The 64-character schematic id is not a valid label value: an annotation.
    assert_eq!(f.annotations.len(), 1, "{:?}", f.annotations);
    assert_eq!(f.annotations[0].0, "extensions.talos.dev/schematic");
    // Talos v1.8 publishes; other systems do not.
    let v18 = node_facts(&HostRoot::new(base.join("verdicts/talos-amd-ok-v1.8")).unwrap());
    assert!(!v18.labels.is_empty());
    let ubuntu = node_facts(&HostRoot::new(base.join("verdicts/ubuntu-nvidia-ok")).unwrap());
    assert_eq!(ubuntu.os_image, "Ubuntu 24.04.1 LTS");
    assert!(ubuntu.labels.is_empty() && ubuntu.annotations.is_empty());
}
