//! Label sync scenarios against the Kubernetes API stand-in (`standin`), in paused tokio time
//! over the in-memory transport (virtual time only: nothing here depends on wall-clock speed),
//! plus the real `kubectl` as a second client over TCP.

use crate::standin::{Action, Fault, Match, Restart, StandIn};
use gpuscout::cause::{Cause, ModulesFix, Suggestion};
use gpuscout::k8s::{LabelMode, LabelSync, SyncConfig, SyncMetrics};
use gpuscout::model::{Extension, Gpu, Host, Problem, Report, Status, Vendor};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};

const NODE: &str = "gpu-node-1";

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn gpu(addr: &str, status: Status, problems: Vec<Problem>) -> Gpu {
    Gpu {
        device_id: Some(0x1586),
        model: "Radeon 8060S".into(),
        driver: Some("amdgpu".into()),
        status,
        problems,
        ..Gpu::test(Vendor::Amd, addr)
    }
}

fn report(l: &[(&str, &str)], gpus: Vec<Gpu>) -> Arc<Report> {
    Arc::new(Report::new(Host::default(), gpus, labels(l)))
}

const OURS: &[(&str, &str)] = &[
    ("gpuscout.io/amd.count", "1"),
    ("gpuscout.io/amd.ready", "true"),
    ("gpuscout.io/present", "true"),
];

fn cfg() -> SyncConfig {
    let mut c = SyncConfig::new(NODE, "gpuscout.io");
    c.start_jitter = Duration::ZERO;
    c.start_jitter_per_node = Duration::ZERO;
    c.seed = Some(42);
    c
}

struct Agent {
    reports: watch::Sender<Arc<Report>>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    metrics: SyncMetrics,
    extensions: watch::Receiver<Option<Vec<Extension>>>,
}

impl Agent {
    fn start(api: Option<&StandIn>, cfg: SyncConfig, first: Arc<Report>) -> Self {
        let mut registry = prometheus_client::registry::Registry::default();
        let sync = LabelSync::new(cfg, api.map(StandIn::client), &mut registry);
        let metrics = sync.metrics();
        let extensions = sync.extensions();
        let (reports, rx) = watch::channel(first);
        let (stop, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(sync.run(rx, async move {
            let _ = stop_rx.await;
        }));
        Self {
            reports,
            stop: Some(stop),
            task,
            metrics,
            extensions,
        }
    }

    fn send(&self, r: Arc<Report>) {
        self.reports.send_replace(r);
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("agent stops within 60 s of virtual time after shutdown")
            .expect("agent task did not panic");
    }
}

/// Let `secs` of virtual time pass with every task running.
async fn pass(secs: u64) {
    tokio::time::sleep(Duration::from_secs(secs)).await;
}

fn ours_on(api: &StandIn) -> BTreeMap<String, String> {
    api.labels(NODE)
        .into_iter()
        .filter(|(k, _)| k.starts_with("gpuscout.io/"))
        .collect()
}

fn node_writes(api: &StandIn) -> Vec<crate::standin::Logged> {
    api.log()
        .into_iter()
        .filter(|l| l.is_write() && l.path.starts_with("/api/v1/nodes"))
        .collect()
}

fn kubelet_node(api: &StandIn) -> String {
    api.add_node(
        NODE,
        &[
            ("kubernetes.io/hostname", NODE),
            ("kubernetes.io/os", "linux"),
            ("team.example.com/owner", "ml"),
        ],
    )
}

#[tokio::test(start_paused = true)]
async fn first_apply_writes_exactly_our_labels_once() {
    let api = StandIn::new();
    kubelet_node(&api);
    let agent = Agent::start(Some(&api), cfg(), report(OURS, vec![]));
    pass(10).await;
    assert_eq!(ours_on(&api), labels(OURS));
    let writes = node_writes(&api);
    assert_eq!(writes.len(), 1, "one apply: {writes:?}");
    assert_eq!(writes[0].content_type, "application/apply-patch+yaml");
    assert_eq!(
        writes[0].query.get("fieldManager").map(String::as_str),
        Some("gpuscout")
    );
    assert_eq!(
        writes[0].query.get("force").map(String::as_str),
        Some("true")
    );
    let node = api.node(NODE).unwrap();
    let mine: Vec<_> = node
        .owned
        .managed
        .iter()
        .filter(|m| m.manager == "gpuscout")
        .collect();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].operation, "Apply");
    assert_eq!(mine[0].keys.len(), OURS.len());
    assert_eq!(agent.metrics.sync_count("applied"), 1);
    assert_eq!(agent.metrics.write_count("apply"), 1);
    assert!(agent.metrics.last_sync.get().is_some());
    // The agent reads its Node metadata-only, by name.
    let log = api.log();
    let list = log.iter().find(|l| l.method == "GET" && !l.watch).unwrap();
    assert_eq!(list.query["fieldSelector"], format!("metadata.name={NODE}"));
    assert!(list.accept.contains("as=PartialObjectMetadataList"));
    assert!(
        log.iter()
            .any(|l| l.watch && l.accept.contains("as=PartialObjectMetadata"))
    );
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn changed_label_is_reapplied_and_removed_label_is_deleted() {
    let api = StandIn::new();
    kubelet_node(&api);
    let agent = Agent::start(Some(&api), cfg(), report(OURS, vec![]));
    pass(5).await;
    // A label changes.
    let changed = [
        ("gpuscout.io/amd.count", "2"),
        ("gpuscout.io/amd.ready", "true"),
        ("gpuscout.io/present", "true"),
    ];
    agent.send(report(&changed, vec![]));
    pass(5).await;
    assert_eq!(ours_on(&api), labels(&changed));
    assert_eq!(node_writes(&api).len(), 2);
    // A label disappears: SSA releases it and, as nobody else owns it, deletes it.
    let fewer = [
        ("gpuscout.io/amd.count", "2"),
        ("gpuscout.io/present", "true"),
    ];
    agent.send(report(&fewer, vec![]));
    pass(5).await;
    assert_eq!(ours_on(&api), labels(&fewer));
    assert_eq!(node_writes(&api).len(), 3, "the apply alone removed it");
    assert_eq!(agent.metrics.write_count("cleanup"), 0);
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn foreign_labels_survive_every_change() {
    let api = StandIn::new();
    kubelet_node(&api);
    api.set_labels_as(
        NODE,
        "gpu-feature-discovery",
        &[("nvidia.com/gpu.product", Some("H100"))],
    );
    let agent = Agent::start(Some(&api), cfg(), report(OURS, vec![]));
    pass(5).await;
    agent.send(report(&[("gpuscout.io/present", "true")], vec![]));
    pass(5).await;
    agent.send(report(&[], vec![]));
    pass(5).await;
    let all = api.labels(NODE);
    assert!(ours_on(&api).is_empty(), "{all:?}");
    for (k, v) in [
        ("kubernetes.io/hostname", NODE),
        ("kubernetes.io/os", "linux"),
        ("team.example.com/owner", "ml"),
        ("nvidia.com/gpu.product", "H100"),
    ] {
        assert_eq!(all.get(k).map(String::as_str), Some(v), "{k} kept");
    }
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn prefix_key_owned_by_another_manager_is_cleaned_up() {
    let api = StandIn::new();
    kubelet_node(&api);
    // An older agent (or a person) set keys under our prefix with a merge patch.
    api.set_labels_as(
        NODE,
        "old-agent",
        &[
            ("gpuscout.io/legacy", Some("x")),
            ("gpuscout.io/present", Some("true")),
        ],
    );
    let agent = Agent::start(Some(&api), cfg(), report(OURS, vec![]));
    pass(10).await;
    assert_eq!(ours_on(&api), labels(OURS), "legacy key removed, ours set");
    assert_eq!(agent.metrics.write_count("cleanup"), 1);
    let cleanup = node_writes(&api)
        .into_iter()
        .find(|l| l.content_type == "application/merge-patch+json")
        .expect("a merge patch removed the stale key");
    assert_eq!(cleanup.status, 200);
    assert_eq!(api.labels(NODE)["team.example.com/owner"], "ml");
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn kubectl_style_override_of_our_key_is_reverted() {
    let api = StandIn::new();
    kubelet_node(&api);
    let agent = Agent::start(Some(&api), cfg(), report(OURS, vec![]));
    pass(5).await;
    api.set_labels_as(
        NODE,
        "kubectl-label",
        &[("gpuscout.io/amd.count", Some("9"))],
    );
    pass(5).await;
    assert_eq!(ours_on(&api), labels(OURS));
    let owner: Vec<_> = api
        .node(NODE)
        .unwrap()
        .owned
        .managed
        .into_iter()
        .filter(|m| m.keys.contains("gpuscout.io/amd.count"))
        .map(|m| m.manager)
        .collect();
    assert_eq!(owner, ["gpuscout"], "forced apply took the key back");
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn restart_with_nothing_changed_makes_zero_writes_and_labels_stay() {
    let api = StandIn::new();
    kubelet_node(&api);
    let first = Agent::start(Some(&api), cfg(), report(OURS, vec![]));
    pass(5).await;
    first.stop().await;
    assert_eq!(ours_on(&api), labels(OURS), "labels stay after shutdown");
    api.clear_log();
    let second = Agent::start(Some(&api), cfg(), report(OURS, vec![]));
    pass(3600).await;
    assert_eq!(node_writes(&api).len(), 0, "{:?}", api.log());
    assert_eq!(second.metrics.sync_count("applied"), 0);
    assert!(second.metrics.sync_count("unchanged") >= 1);
    // One LIST at start and one resync LIST every 10-12 min; otherwise only watch renewals
    // (every 300-600 s) from the last version.
    let log = api.log();
    let lists = log.iter().filter(|l| !l.watch).count();
    assert!(
        (1 + 3600 / 720..=1 + 3600 / 600).contains(&lists),
        "{log:?}"
    );
    assert!(log.iter().filter(|l| l.watch).count() <= 3600 / 300 + 1);
    second.stop().await;
}

#[tokio::test(start_paused = true)]
async fn spurious_node_updates_cause_no_writes() {
    let api = StandIn::new();
    kubelet_node(&api);
    let agent = Agent::start(Some(&api), cfg(), report(OURS, vec![]));
    pass(5).await;
    for _ in 0..100 {
        api.touch(NODE);
        api.set_labels_as(
            NODE,
            "kubelet",
            &[("node.kubernetes.io/heartbeat", Some("x"))],
        );
        pass(1).await;
    }
    assert_eq!(node_writes(&api).len(), 1);
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn recreated_node_gets_labels_again_and_absent_node_is_never_created() {
    let api = StandIn::new();
    api.allow_create(true); // even where RBAC would allow it, the agent must not create
    let uid1 = kubelet_node(&api);
    let agent = Agent::start(Some(&api), cfg(), report(OURS, vec![]));
    pass(5).await;
    api.delete_node(NODE);
    api.clear_log();
    pass(600).await;
    assert!(api.node(NODE).is_none(), "agent created the Node");
    assert!(node_writes(&api).is_empty());
    assert!(agent.metrics.sync_count("node_not_found") >= 1);
    let uid2 = kubelet_node(&api);
    assert_ne!(uid1, uid2);
    pass(5).await;
    assert_eq!(ours_on(&api), labels(OURS), "re-applied on the new Node");
    assert_eq!(api.node(NODE).unwrap().uid, uid2);
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn wrong_node_name_is_an_error_not_a_new_node() {
    let api = StandIn::new();
    api.allow_create(true);
    kubelet_node(&api);
    let mut c = cfg();
    c.node_name = "gpu-node-l".into(); // a typo
    let agent = Agent::start(Some(&api), c, report(OURS, vec![]));
    pass(3600).await;
    assert_eq!(api.node_names(), [NODE], "no phantom Node");
    assert!(node_writes(&api).is_empty());
    assert!(agent.metrics.sync_count("node_not_found") >= 1);
    assert!(
        !agent.task.is_finished(),
        "no crash loop: the agent keeps running"
    );
    // It waited on the watch (no polling): one LIST at start, then only the periodic resync
    // (every 10-12 min); when that Node registers, it is labelled.
    let polls = api.log().iter().filter(|l| !l.watch).count();
    assert!(
        (1 + 3600 / 720..=1 + 3600 / 600).contains(&polls),
        "{polls} LISTs in an hour"
    );
    api.add_node("gpu-node-l", &[]);
    pass(5).await;
    assert_eq!(api.labels("gpu-node-l"), labels(OURS));
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn api_down_for_hours_backs_off_then_recovers() {
    let api = StandIn::new();
    kubelet_node(&api);
    let agent = Agent::start(Some(&api), cfg(), report(OURS, vec![]));
    pass(5).await;
    api.fail(Fault {
        when: Match::any(),
        what: Action::Status(503, None),
        times: None,
    });
    api.drop_watches();
    let changed = [
        ("gpuscout.io/amd.count", "2"),
        ("gpuscout.io/present", "true"),
    ];
    agent.send(report(&changed, vec![]));
    api.clear_log();
    let hours = 6;
    pass(hours * 3600).await;
    let log = api.log();
    assert!(log.iter().all(|l| l.status == 503));
    // Capped at 300 s with jitter in [150 s, 300 s]: between 72 and 144 tries in 6 h, plus
    // the ramp-up; never a hot loop.
    let n = log.len() as u64;
    assert!(
        n >= hours * 3600 / 300 && n <= hours * 3600 / 150 + 12,
        "{n} requests in {hours} h"
    );
    let late_gaps: Vec<Duration> = log.windows(2).skip(12).map(|w| w[1].at - w[0].at).collect();
    assert!(
        late_gaps.iter().all(|g| *g >= Duration::from_secs(150)),
        "{late_gaps:?}"
    );
    assert!(agent.metrics.sync_count("server_error") >= 1);
    assert!(!agent.task.is_finished());
    api.clear_faults();
    pass(301).await;
    assert_eq!(
        ours_on(&api),
        labels(&changed),
        "recovered within one backoff cap"
    );
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn retry_after_of_429_is_honoured() {
    let api = StandIn::new();
    kubelet_node(&api);
    api.fail(Fault {
        when: Match::method("PATCH"),
        what: Action::Status(429, Some(120)),
        times: Some(2),
    });
    let agent = Agent::start(Some(&api), cfg(), report(OURS, vec![]));
    pass(600).await;
    let patches: Vec<_> = api
        .log()
        .into_iter()
        .filter(|l| l.method == "PATCH")
        .collect();
    assert_eq!(
        patches.iter().map(|p| p.status).collect::<Vec<_>>(),
        [429, 429, 200]
    );
    for w in patches.windows(2) {
        assert!(
            w[1].at - w[0].at >= Duration::from_secs(120),
            "retried before Retry-After"
        );
    }
    assert_eq!(agent.metrics.sync_count("throttled"), 2);
    assert_eq!(ours_on(&api), labels(OURS));
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn forbidden_is_surfaced_without_a_crash_loop() {
    let api = StandIn::new();
    kubelet_node(&api);
    api.fail(Fault {
        when: Match::method("PATCH"),
        what: Action::Status(403, None),
        times: None,
    });
    let agent = Agent::start(Some(&api), cfg(), report(OURS, vec![]));
    pass(3600).await;
    let forbidden = agent.metrics.sync_count("forbidden");
    assert!(forbidden >= 1);
    assert!(
        forbidden <= 3600 / 150 + 10,
        "{forbidden} tries in an hour: backoff is capped, not hot"
    );
    assert!(!agent.task.is_finished(), "still running");
    assert!(
        agent.metrics.last_sync.get().is_none(),
        "never claimed a sync"
    );
    api.clear_faults();
    pass(301).await;
    assert_eq!(ours_on(&api), labels(OURS));
    assert!(agent.metrics.last_sync.get().is_some());
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn slow_request_times_out_and_is_retried() {
    let api = StandIn::new();
    kubelet_node(&api);
    api.fail(Fault {
        when: Match::method("PATCH"),
        what: Action::Latency(Duration::from_secs(120)),
        times: Some(1),
    });
    let agent = Agent::start(Some(&api), cfg(), report(OURS, vec![]));
    pass(5).await;
    assert!(
        ours_on(&api).is_empty(),
        "the slow apply was abandoned after 10 s"
    );
    pass(60).await;
    assert_eq!(ours_on(&api), labels(OURS), "retried after backoff");
    assert_eq!(
        agent.metrics.sync_count("timeout"),
        1,
        "a timeout is its own result"
    );
    assert_eq!(agent.metrics.sync_count("error"), 0);
    assert_eq!(agent.metrics.write_count("apply"), 1);
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_during_a_hanging_write_is_bounded_and_keeps_labels() {
    let api = StandIn::new();
    kubelet_node(&api);
    let mut c = cfg();
    c.request_timeout = Duration::from_secs(600);
    let agent = Agent::start(Some(&api), c, report(OURS, vec![]));
    pass(5).await;
    api.fail(Fault {
        when: Match::method("PATCH"),
        what: Action::Latency(Duration::from_secs(3600)),
        times: None,
    });
    agent.send(report(&[("gpuscout.io/present", "true")], vec![]));
    pass(1).await;
    let t = tokio::time::Instant::now();
    agent.stop().await;
    assert!(
        t.elapsed() <= Duration::from_secs(6),
        "stopped after {:?}",
        t.elapsed()
    );
    assert_eq!(ours_on(&api), labels(OURS), "labels stay on shutdown");
}

#[tokio::test(start_paused = true)]
async fn refused_watches_still_label_and_back_off() {
    let api = StandIn::new();
    kubelet_node(&api);
    api.fail(Fault {
        when: Match::watches(),
        what: Action::Status(500, None),
        times: None,
    });
    let agent = Agent::start(Some(&api), cfg(), report(OURS, vec![]));
    pass(3600).await;
    assert_eq!(ours_on(&api), labels(OURS), "labelled without a watch");
    assert_eq!(api.open_watches(), 0);
    let tries = api.log().iter().filter(|l| l.watch).count();
    assert!(
        (5..=3600 / 150 + 10).contains(&tries),
        "{tries} watch tries in an hour"
    );
    assert_eq!(
        node_writes(&api).len(),
        1,
        "retries of the watch write nothing"
    );
    api.clear_faults();
    pass(301).await;
    assert_eq!(api.open_watches(), 1);
    agent.stop().await;
}

/// A watch cut midway (the API server restarted, or a load balancer dropped it) is followed by
/// a LIST: the server may have lost its watch history, or gone back in resourceVersion.
#[tokio::test(start_paused = true)]
async fn dropped_watch_is_followed_by_a_list_and_drift_is_repaired() {
    let api = StandIn::new();
    kubelet_node(&api);
    let agent = Agent::start(Some(&api), cfg(), report(OURS, vec![]));
    pass(5).await;
    pass(5).await; // the drop below must not look like a watch that failed at once
    api.clear_log();
    api.drop_watches();
    pass(1).await;
    api.set_labels_as(
        NODE,
        "kubectl-label",
        &[("gpuscout.io/present", Some("false"))],
    );
    pass(5).await;
    assert_eq!(
        ours_on(&api),
        labels(OURS),
        "drift after the drop was repaired"
    );
    let log = api.log();
    let list = log
        .iter()
        .position(|l| l.method == "GET" && !l.watch)
        .expect("listed after the drop");
    let rewatch = log.iter().position(|l| l.watch).expect("re-watched");
    assert!(list < rewatch, "LIST first: {log:?}");
    assert_ne!(log[rewatch].query["resourceVersion"], "0");

    // History compacted while disconnected: 410 Expired, then a fresh LIST.
    pass(10).await;
    api.clear_log();
    api.drop_watches();
    api.set_labels_as(
        NODE,
        "kubectl-label",
        &[("gpuscout.io/present", Some("false"))],
    );
    api.compact();
    pass(30).await;
    assert_eq!(ours_on(&api), labels(OURS));
    assert!(
        api.log().iter().any(|l| l.method == "GET" && !l.watch),
        "relisted after 410"
    );
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn talos_extensions_are_read_from_the_node() {
    let api = StandIn::new();
    kubelet_node(&api);
    api.set_labels_as(
        NODE,
        "talos",
        &[
            ("extensions.talos.dev/amdgpu", Some("20251021-v1.11.5")),
            ("extensions.talos.dev/modules.dep", Some("6.12.57-talos")),
        ],
    );
    api.set_annotation(
        NODE,
        "extensions.talos.dev/schematic",
        "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba",
    );
    let mut agent = Agent::start(Some(&api), cfg(), report(OURS, vec![]));
    pass(5).await;
    let got = agent.extensions.borrow_and_update().clone();
    assert_eq!(
        got,
        Some(vec![Extension {
            name: "amdgpu".into(),
            version: "20251021-v1.11.5".into()
        }])
    );
    api.set_annotation(
        NODE,
        "extensions.talos.dev/nvidia-container-toolkit-lts",
        "570.195.03-v1.17.8+x",
    );
    pass(5).await;
    assert!(agent.extensions.has_changed().unwrap());
    assert_eq!(agent.extensions.borrow().as_ref().map(Vec::len), Some(2));
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn verdict_change_posts_a_rate_limited_event() {
    let api = StandIn::new();
    kubelet_node(&api);
    let ok = gpu("0000:c5:00.0", Status::Ok, vec![]);
    let missing = gpu(
        "0000:c5:00.0",
        Status::ExtensionMissing,
        vec![Problem::new(Cause::DriverExtensionMissing {
            what: "amdgpu".into(),
            installed: Vec::new(),
            module: "amdgpu".into(),
            add: Suggestion {
                extensions: vec!["siderolabs/amdgpu".into()],
                ..Suggestion::default()
            },
        })],
    );
    let agent = Agent::start(Some(&api), cfg(), report(OURS, vec![ok.clone()]));
    pass(5).await;
    assert!(api.events().is_empty(), "a healthy start is silent");
    agent.send(report(OURS, vec![missing.clone()]));
    pass(5).await;
    let ev = api.events();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["reason"], "GpuExtensionMissing");
    assert_eq!(ev[0]["type"], "Warning");
    assert_eq!(ev[0]["involvedObject"]["kind"], "Node");
    assert_eq!(ev[0]["involvedObject"]["name"], NODE);
    assert_eq!(ev[0]["metadata"]["namespace"], "default");
    let msg = ev[0]["message"].as_str().unwrap();
    assert!(
        msg.contains("ok -> extension-missing") && msg.contains("Image Factory schematic"),
        "{msg}"
    );
    // A flapping GPU: 20 changes in 20 s are capped by the token bucket (burst 5).
    for i in 0..20 {
        agent.send(report(
            OURS,
            vec![if i % 2 == 0 {
                ok.clone()
            } else {
                missing.clone()
            }],
        ));
        pass(1).await;
    }
    let posted = api.events().len();
    assert!(posted <= 5 + 1, "{posted} events");
    assert!(agent.metrics.event_count("dropped") >= 14);
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn nfd_file_is_written_atomically_and_only_on_change() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gpuscout");
    let mut c = cfg();
    c.mode = LabelMode::NfdFile;
    c.nfd_file = path.clone();
    let agent = Agent::start(None, c.clone(), report(OURS, vec![]));
    pass(5).await;
    #[allow(clippy::disallowed_methods)]
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        text,
        "gpuscout.io/amd.count=1\ngpuscout.io/amd.ready=true\ngpuscout.io/present=true\n"
    );
    agent.stop().await;
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(&path).unwrap().ino();
    // Restart, same labels: the file is not rewritten.
    let agent = Agent::start(None, c, report(OURS, vec![]));
    pass(5).await;
    assert_eq!(std::fs::metadata(&path).unwrap().ino(), ino);
    assert_eq!(agent.metrics.write_count("nfd_file"), 0);
    // A change replaces the file by rename (a new inode), leaving no temp file behind.
    agent.send(report(&[("gpuscout.io/present", "true")], vec![]));
    pass(5).await;
    assert_ne!(std::fs::metadata(&path).unwrap().ino(), ino);
    #[allow(clippy::disallowed_methods)]
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["gpuscout"]);
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn nodefeature_object_is_applied_and_node_is_not_patched() {
    let api = StandIn::new();
    kubelet_node(&api);
    let mut c = cfg();
    c.mode = LabelMode::Nodefeature;
    c.nodefeature_namespace = "gpu-system".into();
    let agent = Agent::start(Some(&api), c.clone(), report(OURS, vec![]));
    pass(5).await;
    let nf = api
        .nodefeature("gpu-system", "gpuscout-gpu-node-1")
        .expect("NodeFeature created");
    assert_eq!(nf["apiVersion"], "nfd.k8s-sigs.io/v1alpha1");
    assert_eq!(nf["kind"], "NodeFeature");
    assert_eq!(
        nf["metadata"]["labels"]["nfd.node.kubernetes.io/node-name"],
        NODE
    );
    assert_eq!(
        serde_json::from_value::<BTreeMap<String, String>>(nf["spec"]["labels"].clone()).unwrap(),
        labels(OURS)
    );
    assert!(
        node_writes(&api).is_empty(),
        "the Node itself is NFD's to label"
    );
    agent.stop().await;
    api.clear_log();
    let agent = Agent::start(Some(&api), c, report(OURS, vec![]));
    pass(60).await;
    assert_eq!(api.successful_writes(), 0, "restart: zero writes");
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn metrics_are_exposed_in_the_registry() {
    let api = StandIn::new();
    kubelet_node(&api);
    let mut registry = prometheus_client::registry::Registry::default();
    let sync = LabelSync::new(cfg(), Some(api.client()), &mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        !text.contains("gpuscout_label_last_sync_timestamp_seconds"),
        "absent before a sync"
    );
    let (_tx, rx) = watch::channel(report(OURS, vec![]));
    let (stop, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(sync.run(rx, async move {
        let _ = stop_rx.await;
    }));
    pass(5).await;
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for want in [
        "gpuscout_label_sync_total{result=\"applied\"} 1",
        "gpuscout_label_writes_total{kind=\"apply\"} 1",
        "gpuscout_label_last_sync_timestamp_seconds ",
        "gpuscout_k8s_api_requests_total{result=\"2xx\"}",
    ] {
        assert!(text.contains(want), "missing {want} in\n{text}");
    }
    let _ = stop.send(());
    task.await.unwrap();
}

// ---- the real kubectl as a second client, over TCP, in real time ----

fn kubectl_path() -> std::path::PathBuf {
    let p: std::path::PathBuf = std::env::var_os("KUBECTL").map_or_else(
        || std::path::PathBuf::from("/usr/bin/kubectl"),
        std::path::PathBuf::from,
    );
    assert!(
        p.exists(),
        "kubectl not found at {} (preinstalled on the CI image; set KUBECTL=/path to override)",
        p.display()
    );
    p
}

struct Kubectl {
    bin: std::path::PathBuf,
    home: tempfile::TempDir,
    kubeconfig: std::path::PathBuf,
}

impl Kubectl {
    fn new(addr: std::net::SocketAddr) -> Self {
        let home = tempfile::tempdir().unwrap();
        let kubeconfig = home.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    server: http://{addr}\nusers:\n- name: agent\n  user:\n    token: test-token\ncontexts:\n- name: standin\n  context:\n    cluster: standin\n    user: agent\ncurrent-context: standin\n"
            ),
        )
        .unwrap();
        Self {
            bin: kubectl_path(),
            home,
            kubeconfig,
        }
    }

    async fn run(&self, args: &[&str]) -> (bool, String, String) {
        let mut cmd = std::process::Command::new(&self.bin);
        cmd.args(args)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.home.path().join("cache"))
            .env("HOME", self.home.path())
            .env_remove("KUBECONFIG");
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .expect("join")
            .expect("run kubectl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_kubectl_sees_our_labels_and_its_override_is_reverted() {
    let api = StandIn::new();
    kubelet_node(&api);
    let addr = api.serve_tcp().await;
    let kubectl = Kubectl::new(addr);
    // The agent connects like production does: from a kubeconfig, over HTTP.
    let client = gpuscout::k8s::connect(Some(&kubectl.kubeconfig))
        .await
        .expect("connect");
    let mut registry = prometheus_client::registry::Registry::default();
    let sync = LabelSync::new(cfg(), Some(client), &mut registry);
    let (_tx, rx) = watch::channel(report(OURS, vec![]));
    let (stop, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(sync.run(rx, async move {
        let _ = stop_rx.await;
    }));
    wait_for("first apply", || ours_on(&api) == labels(OURS)).await;

    let (ok, out, err) = kubectl.run(&["get", "node", NODE, "-o", "json"]).await;
    assert!(ok, "kubectl get failed: {err}");
    let node: serde_json::Value = serde_json::from_str(&out).expect("kubectl printed JSON");
    let seen: BTreeMap<String, String> =
        serde_json::from_value(node["metadata"]["labels"].clone()).unwrap();
    let seen_ours: BTreeMap<String, String> = seen
        .iter()
        .filter(|(k, _)| k.starts_with("gpuscout.io/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(
        seen_ours,
        labels(OURS),
        "kubectl sees exactly what gpuscout wrote"
    );
    assert_eq!(seen["team.example.com/owner"], "ml");

    let (ok, out, err) = kubectl
        .run(&[
            "label",
            "node",
            NODE,
            "gpuscout.io/amd.count=9",
            "--overwrite",
        ])
        .await;
    assert!(ok, "kubectl label failed: {err}");
    assert!(out.contains("labeled"), "{out}");
    let kubectl_patch = api
        .log()
        .into_iter()
        .find(|l| {
            l.method == "PATCH"
                && l.query.get("fieldManager").map(String::as_str) == Some("kubectl-label")
        })
        .expect("kubectl sent its PATCH");
    assert_eq!(kubectl_patch.status, 200);
    wait_for("revert of the kubectl override", || {
        api.log()
            .iter()
            .filter(|l| l.method == "PATCH" && l.status == 200)
            .count()
            >= 3
            && ours_on(&api) == labels(OURS)
    })
    .await;
    let (ok, out, _) = kubectl
        .run(&[
            "get",
            "node",
            NODE,
            "-o",
            "jsonpath={.metadata.labels.gpuscout\\.io/amd\\.count}",
        ])
        .await;
    assert!(ok);
    assert_eq!(out, "1", "kubectl sees the reverted value");

    // A foreign label set by kubectl is left alone, and kubectl can remove it again.
    let (ok, _, err) = kubectl
        .run(&["label", "node", NODE, "example.com/x=y"])
        .await;
    assert!(ok, "{err}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(api.labels(NODE)["example.com/x"], "y");
    let (ok, _, err) = kubectl
        .run(&["label", "node", NODE, "example.com/x-"])
        .await;
    assert!(ok, "{err}");
    assert!(!api.labels(NODE).contains_key("example.com/x"));
    // The listing works too (the stand-in has no Table output; kubectl falls back).
    let (ok, out, err) = kubectl.run(&["get", "nodes"]).await;
    assert!(ok && out.contains(NODE), "kubectl get nodes: {out} {err}");
    // kubectl reports a missing Node as NotFound.
    let (ok, _, err) = kubectl.run(&["get", "node", "nope"]).await;
    assert!(!ok && err.contains("NotFound"), "{err}");
    // Every other request kubectl made (discovery included) was understood.
    let log = api.log();
    for l in &log {
        eprintln!(
            "{} {} {:?} ct={} accept={} -> {}",
            l.method, l.path, l.query, l.content_type, l.accept, l.status
        );
    }
    let unanswered: Vec<_> = log
        .iter()
        .filter(|l| l.status >= 400 && l.path != "/api/v1/nodes/nope")
        .map(|l| format!("{} {} -> {}", l.method, l.path, l.status))
        .collect();
    assert!(
        unanswered.is_empty(),
        "stand-in failed requests: {unanswered:?}"
    );
    for path in ["/version", "/api", "/apis", "/api/v1"] {
        assert!(
            log.iter().any(|l| l.path == path),
            "kubectl did not ask for {path}"
        );
    }

    let _ = stop.send(());
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn off_mode_writes_nothing_but_still_reads_extensions() {
    let api = StandIn::new();
    kubelet_node(&api);
    api.set_labels_as(
        NODE,
        "talos",
        &[("extensions.talos.dev/i915", Some("20251021-v1.11.5"))],
    );
    let mut c = cfg();
    c.mode = LabelMode::Off;
    let mut agent = Agent::start(Some(&api), c, report(OURS, vec![]));
    pass(600).await;
    assert_eq!(api.successful_writes(), 0);
    assert!(ours_on(&api).is_empty());
    let ext = agent.extensions.borrow_and_update().clone().unwrap();
    assert_eq!(ext[0].name, "i915");
    agent.stop().await;
}

/// A 404 from the NodeFeature API (CRD not installed, namespace missing) is about the
/// NodeFeature, not the Node: counted as `not_found`, never as `node_not_found`.
#[tokio::test(start_paused = true)]
async fn a_missing_nodefeature_api_is_not_a_missing_node() {
    let api = StandIn::new();
    kubelet_node(&api);
    api.fail(Fault {
        when: Match {
            path_contains: Some("/nodefeatures".into()),
            ..Match::any()
        },
        what: Action::Status(404, None),
        times: Some(4),
    });
    let mut c = cfg();
    c.mode = LabelMode::Nodefeature;
    c.nodefeature_namespace = "gpu-system".into();
    let agent = Agent::start(Some(&api), c, report(OURS, vec![]));
    pass(60).await;
    // The first GET's 404 means "absent, create it"; the three applies after it fail.
    assert_eq!(agent.metrics.sync_count("not_found"), 3);
    assert_eq!(agent.metrics.sync_count("node_not_found"), 0);
    assert!(
        api.nodefeature("gpu-system", "gpuscout-gpu-node-1")
            .is_some(),
        "applied once the 404s stopped"
    );
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn node_gone_between_list_and_patch_is_surfaced_not_created() {
    let api = StandIn::new();
    kubelet_node(&api);
    api.fail(Fault {
        when: Match::method("PATCH"),
        what: Action::Status(404, None),
        times: Some(3),
    });
    let agent = Agent::start(Some(&api), cfg(), report(OURS, vec![]));
    pass(60).await;
    assert_eq!(agent.metrics.sync_count("node_not_found"), 3);
    assert_eq!(api.node_names(), [NODE]);
    assert_eq!(ours_on(&api), labels(OURS), "applied once the 404s stopped");
    agent.stop().await;
}

/// The stand-in itself: conflicts and JSON patch, as the apiserver answers them.
#[tokio::test]
async fn standin_answers_conflicts_and_json_patch_like_the_apiserver() {
    use bytes::Bytes;
    let api = StandIn::new();
    kubelet_node(&api);
    let req = |ctype: &str, query: &str, body: &str| {
        http::Request::builder()
            .method("PATCH")
            .uri(format!("/api/v1/nodes/{NODE}?{query}"))
            .header("content-type", ctype)
            .body(Bytes::from(body.to_owned()))
            .unwrap()
    };
    let apply = r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"gpu-node-1","labels":{"kubernetes.io/os":"windows"}}}"#;
    // An unforced apply of a key kubelet owns with another value conflicts; forced, it wins.
    let r = api
        .handle(req("application/apply-patch+yaml", "fieldManager=x", apply))
        .await;
    assert_eq!(r.status(), 409);
    let r = api
        .handle(req(
            "application/apply-patch+yaml",
            "fieldManager=x&force=true",
            apply,
        ))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(api.labels(NODE)["kubernetes.io/os"], "windows");
    // Apply without a field manager is rejected.
    let r = api
        .handle(req("application/apply-patch+yaml", "", apply))
        .await;
    assert_eq!(r.status(), 400);
    // A merge patch with a stale resourceVersion conflicts.
    let stale = r#"{"metadata":{"resourceVersion":"1","labels":{"a/b":"c"}}}"#;
    let r = api
        .handle(req("application/merge-patch+json", "fieldManager=m", stale))
        .await;
    assert_eq!(r.status(), 409);
    // JSON patch: a failing test op is 422 and changes nothing; a passing one applies.
    let rv = api.node(NODE).unwrap().rv;
    let bad = r#"[{"op":"test","path":"/metadata/resourceVersion","value":"999999"},{"op":"remove","path":"/metadata/labels/team.example.com~1owner"}]"#;
    let r = api
        .handle(req("application/json-patch+json", "fieldManager=m", bad))
        .await;
    assert_eq!(r.status(), 422);
    assert_eq!(api.labels(NODE)["team.example.com/owner"], "ml");
    let good = format!(
        r#"[{{"op":"test","path":"/metadata/resourceVersion","value":"{rv}"}},{{"op":"remove","path":"/metadata/labels/team.example.com~1owner"}}]"#
    );
    let r = api
        .handle(req("application/json-patch+json", "fieldManager=m", &good))
        .await;
    assert_eq!(r.status(), 200);
    assert!(!api.labels(NODE).contains_key("team.example.com/owner"));
    assert!(
        api.node(NODE).unwrap().rv > rv,
        "a change bumps the resourceVersion"
    );
    // A no-op merge patch leaves the resourceVersion alone (no watch event).
    let rv = api.node(NODE).unwrap().rv;
    let same = r#"{"metadata":{"labels":{"kubernetes.io/os":"windows"}}}"#;
    let r = api
        .handle(req("application/merge-patch+json", "fieldManager=m", same))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(api.node(NODE).unwrap().rv, rv);
}

#[tokio::test(start_paused = true)]
async fn missing_node_name_is_reported_and_nothing_is_touched() {
    let api = StandIn::new();
    kubelet_node(&api);
    let args = gpuscout::cli::K8sArgs {
        kubeconfig: None,
        labels: gpuscout::cli::LabelModeArg::Node,
        nfd_file: "/nonexistent".into(),
        nodefeature_namespace: "gpu-system".into(),
        no_events: false,
        resync_interval: Duration::from_secs(600),
        start_jitter_per_node: Duration::ZERO,
    };
    let mut c = args.sync_config(Some("  "), "gpuscout.io");
    c.start_jitter = Duration::ZERO;
    let agent = Agent::start(Some(&api), c, report(OURS, vec![]));
    pass(600).await;
    assert_eq!(agent.metrics.sync_count("no_node_name"), 1);
    assert!(api.log().is_empty(), "no request without a node name");
    assert!(!agent.task.is_finished(), "no crash loop");
    agent.stop().await;
}

/// Log capture per thread (the paused-time tests run the agent on the test's own thread).
/// One process-wide subscriber writes each line to the capturing thread's buffer, if any: a
/// thread-local `set_default` subscriber loses events to tracing's callsite-interest cache
/// when other tests hit the same callsites first on other threads.
mod logcapture {
    use std::cell::RefCell;
    use std::sync::{Arc, Mutex, Once};

    thread_local! {
        static BUF: RefCell<Option<Arc<Mutex<Vec<u8>>>>> = const { RefCell::new(None) };
    }

    struct ThreadWriter;

    impl std::io::Write for ThreadWriter {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            BUF.with(|c| {
                if let Some(buf) = c.borrow().as_ref() {
                    buf.lock().unwrap().extend_from_slice(b);
                }
            });
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Start capturing this thread's log lines.
    pub fn start() -> Arc<Mutex<Vec<u8>>> {
        static INIT: Once = Once::new();
        INIT.call_once(|| {
            let sub = tracing_subscriber::fmt()
                .with_writer(|| ThreadWriter)
                .with_ansi(false)
                .with_max_level(tracing::Level::INFO)
                .finish();
            tracing::subscriber::set_global_default(sub).expect("no other global subscriber");
        });
        let buf = Arc::new(Mutex::new(Vec::new()));
        BUF.with(|c| *c.borrow_mut() = Some(buf.clone()));
        buf
    }
}

#[tokio::test(start_paused = true)]
async fn forbidden_is_logged_once_and_recovery_is_logged() {
    let buf = logcapture::start();
    let api = StandIn::new();
    kubelet_node(&api);
    api.fail(Fault {
        when: Match::method("PATCH"),
        what: Action::Status(403, None),
        times: None,
    });
    let agent = Agent::start(Some(&api), cfg(), report(OURS, vec![]));
    pass(3600).await;
    api.clear_faults();
    pass(301).await;
    agent.stop().await;
    let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
    let failed = text
        .lines()
        .filter(|l| l.contains("label sync failed"))
        .count();
    let errors = text.lines().filter(|l| l.contains("ERROR")).count();
    assert_eq!(failed, 1, "logged once:\n{text}");
    assert_eq!(errors, 1, "{text}");
    assert!(
        text.contains("forbidden") && text.contains("RBAC"),
        "{text}"
    );
    assert!(text.contains("label sync recovered"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn events_wait_for_the_api_to_come_back() {
    let api = StandIn::new();
    kubelet_node(&api);
    let ok = gpu("0000:03:00.0", Status::Ok, vec![]);
    let bad = gpu(
        "0000:03:00.0",
        Status::ModuleNotLoaded,
        vec![Problem::new(Cause::ModulesNotLoaded {
            modules: vec!["i915".into()],
            bound: false,
            fix: ModulesFix::Modprobe,
            config: None,
            open_alpha: false,
        })],
    );
    let agent = Agent::start(Some(&api), cfg(), report(OURS, vec![ok]));
    pass(5).await;
    api.fail(Fault {
        when: Match::any(),
        what: Action::Status(503, None),
        times: None,
    });
    api.drop_watches();
    agent.send(report(&[("gpuscout.io/present", "true")], vec![bad]));
    pass(1800).await;
    assert!(api.events().is_empty());
    assert!(
        !api.log().iter().any(|l| l.path.ends_with("/events")),
        "no Event tried while the API fails"
    );
    api.clear_faults();
    pass(301).await;
    let ev = api.events();
    assert_eq!(ev.len(), 1, "the queued Event is posted after recovery");
    assert_eq!(ev[0]["reason"], "GpuModuleNotLoaded");
    agent.stop().await;
}

/// The whole daemon as the DaemonSet runs it: the real `gpuscout serve` binary with a
/// kubeconfig labels its Node in the stand-in from a real discovery pass, takes the Node's
/// Talos extension labels as verdict evidence, serves the sync metrics, and leaves the labels
/// in place after SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_binary_labels_its_node_and_keeps_labels_after_sigterm() {
    let api = StandIn::new();
    kubelet_node(&api);
    // Talos publishes installed extensions on the Node; the fixture's own extensions.yaml is
    // replaced by this evidence (it says amdgpu is installed, as the file does).
    api.set_labels_as(
        NODE,
        "talos",
        &[("extensions.talos.dev/amdgpu", Some("20251021-v1.11.5"))],
    );
    let addr = api.serve_tcp().await;
    let kubectl = Kubectl::new(addr);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hosts/talos-strixhalo-apu");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_gpuscout"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--root")
        .arg(&root)
        .arg("--kubeconfig")
        .arg(&kubectl.kubeconfig)
        .args(["--node-name", NODE, "--discovery-interval", "1s"])
        .env("RUST_LOG", "warn")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .spawn()
        .expect("start gpuscout serve");
    // Kill the daemon if an assertion fails before the SIGTERM below.
    struct KillOnDrop(Option<std::process::Child>);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            if let Some(c) = self.0.as_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    let mut guard = KillOnDrop(Some(child));
    wait_for("labels from the daemon", || {
        api.labels(NODE)
            .get("gpuscout.io/amd.count")
            .map(String::as_str)
            == Some("1")
    })
    .await;
    let labels = api.labels(NODE);
    assert_eq!(labels["gpuscout.io/amd.gfx"], "gfx1151");
    assert_eq!(labels["gpuscout.io/amd.ready"], "true");
    assert_eq!(labels["team.example.com/owner"], "ml", "foreign label kept");
    // The label sync's counters are served live; poll until the first sync shows up.
    let mut body = String::new();
    for _ in 0..100 {
        body = tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut out = String::new();
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                let _ = write!(
                    s,
                    "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                );
                let _ = s.read_to_string(&mut out);
            }
            out
        })
        .await
        .unwrap();
        if body.contains("gpuscout_label_sync_total{result=\"applied\"}") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        body.contains("gpuscout_label_sync_total{result=\"applied\"}"),
        "{body}"
    );
    assert!(body.contains("gpuscout_gpus{vendor=\"amd\"} 1"), "{body}");
    let before = api.successful_writes();
    // SIGTERM: exit 0, labels stay.
    let mut child = guard.0.take().expect("child");
    let pid = child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(api.labels(NODE)["gpuscout.io/amd.count"], "1");
    assert_eq!(api.successful_writes(), before, "no write on shutdown");
}

/// Virtual seconds (1-s steps, at most `limit`) until our labels are on the Node again.
async fn seconds_until_labelled(api: &StandIn, want: &BTreeMap<String, String>, limit: u64) -> u64 {
    for s in 0..=limit {
        if ours_on(api) == *want {
            return s;
        }
        pass(1).await;
    }
    panic!("labels not back within {limit} s: {:?}", api.labels(NODE));
}

/// The API server restarts with its etcd gone (re-created or restored from an old backup): the
/// resourceVersion starts again below the agent's, every watch is cut, the kubelet registers
/// the Node again. A watch from the agent's old version would be accepted and stay silent (as
/// the watch cache does); the agent lists after the cut, sees the version went back and
/// relabels.
#[tokio::test(start_paused = true)]
async fn api_server_restart_that_loses_state_relabels_within_seconds() {
    let api = StandIn::new();
    kubelet_node(&api);
    for i in 0..50 {
        api.touch(NODE); // the agent's resourceVersion ends up well above the new server's
        let _ = i;
    }
    let agent = Agent::start(Some(&api), cfg(), report(OURS, vec![]));
    pass(30).await;
    assert_eq!(ours_on(&api), labels(OURS));
    let before = api.resource_version();
    api.restart(Restart::LoseState);
    pass(2).await;
    kubelet_node(&api); // the kubelet re-registers its Node, without our labels
    assert!(api.resource_version() < before);
    assert!(ours_on(&api).is_empty());
    let secs = seconds_until_labelled(&api, &labels(OURS), 120).await;
    println!("labels back {secs} s after the Node was registered again");
    assert!(secs <= 60, "{secs} s");
    // Watching again, from the new server's versions.
    assert_eq!(api.open_watches(), 1);
    let log = api.log();
    let last_watch = log.iter().rev().find(|l| l.watch).unwrap();
    let rv: u64 = last_watch.query["resourceVersion"].parse().unwrap();
    assert!(rv <= api.resource_version(), "watch from {rv}");
    agent.stop().await;
}

/// A restart that keeps etcd: the watch cache is rebuilt, so a watch from before the restart
/// would get 410. The agent lists after the cut; nothing is written because nothing changed.
#[tokio::test(start_paused = true)]
async fn api_server_restart_that_keeps_state_writes_nothing() {
    let api = StandIn::new();
    kubelet_node(&api);
    let agent = Agent::start(Some(&api), cfg(), report(OURS, vec![]));
    pass(30).await;
    api.clear_log();
    api.restart(Restart::KeepState);
    api.touch(NODE); // the kubelet's next status update
    pass(60).await;
    assert_eq!(ours_on(&api), labels(OURS));
    assert!(node_writes(&api).is_empty(), "{:?}", api.log());
    assert_eq!(api.open_watches(), 1);
    agent.stop().await;
}

/// 504 with cause `ResourceVersionTooLarge` (the watch cache's answer to a version it has not
/// reached, as an ERROR event on a watch or HTTP 504 on a LIST) and 410 lead to a LIST.
#[tokio::test(start_paused = true)]
async fn too_large_resource_version_on_a_watch_leads_to_a_list() {
    let api = StandIn::new();
    kubelet_node(&api);
    api.fail(Fault {
        when: Match::watches(),
        what: Action::TooLargeResourceVersion,
        times: Some(1),
    });
    let agent = Agent::start(Some(&api), cfg(), report(OURS, vec![]));
    pass(30).await;
    assert_eq!(ours_on(&api), labels(OURS));
    let log = api.log();
    let first_watch = log.iter().position(|l| l.watch).unwrap();
    let relist = log[first_watch..]
        .iter()
        .position(|l| l.method == "GET" && !l.watch)
        .expect("a LIST after the 504");
    assert!(
        log[first_watch + relist..].iter().any(|l| l.watch),
        "and a new watch after it: {log:?}"
    );
    assert!(agent.metrics.sync_count("relist") >= 1);
    assert_eq!(api.open_watches(), 1);
    // The same answer to a LIST (HTTP 504, Retry-After: 1) is retried after a second.
    api.fail(Fault {
        when: Match {
            method: Some("GET"),
            watch: Some(false),
            ..Match::default()
        },
        what: Action::TooLargeResourceVersion,
        times: Some(1),
    });
    api.clear_log();
    api.drop_watches();
    pass(30).await;
    let log = api.log();
    let lists: Vec<_> = log.iter().filter(|l| !l.watch).collect();
    assert_eq!(lists[0].status, 504);
    assert!(lists.iter().any(|l| l.status == 200), "{log:?}");
    assert!(
        lists[1].at - lists[0].at >= Duration::from_secs(1),
        "Retry-After honoured"
    );
    assert_eq!(api.open_watches(), 1);
    agent.stop().await;
}

/// An event the watch never delivered (lost between server and client) is corrected by the
/// periodic resync, within its 10-12 minutes.
#[tokio::test(start_paused = true)]
async fn periodic_resync_repairs_a_change_the_watch_missed() {
    let api = StandIn::new();
    kubelet_node(&api);
    let agent = Agent::start(Some(&api), cfg(), report(OURS, vec![]));
    pass(30).await;
    api.set_labels_unwatched(
        NODE,
        "kubectl-label",
        &[("gpuscout.io/amd.count", Some("7"))],
    );
    pass(300).await;
    assert_eq!(
        api.labels(NODE)["gpuscout.io/amd.count"],
        "7",
        "the watch did not see it"
    );
    pass(12 * 60).await;
    assert_eq!(ours_on(&api), labels(OURS), "the resync did");
    agent.stop().await;
}

/// A foreign key under our prefix costs one write (a merge patch that removes it): no apply
/// that cannot remove it, and no re-apply triggered by a late watch event.
#[tokio::test(start_paused = true)]
async fn foreign_key_under_our_prefix_costs_one_write() {
    let api = StandIn::new();
    kubelet_node(&api);
    let agent = Agent::start(Some(&api), cfg(), report(OURS, vec![]));
    pass(30).await;
    api.clear_log();
    api.set_labels_as(NODE, "kubectl-label", &[("gpuscout.io/bogus", Some("x"))]);
    pass(60).await;
    assert_eq!(ours_on(&api), labels(OURS));
    let writes = node_writes(&api);
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(writes[0].content_type, "application/merge-patch+json");
    agent.stop().await;
}

/// A watch event that was already queued when the agent wrote (here: a kubelet heartbeat that
/// arrives together with a new report) is older than the agent's own write and must not roll
/// its view back: one write, not two.
#[tokio::test(start_paused = true)]
async fn stale_watch_event_does_not_roll_back_our_write() {
    let api = StandIn::new();
    kubelet_node(&api);
    let agent = Agent::start(Some(&api), cfg(), report(OURS, vec![]));
    pass(30).await;
    api.clear_log();
    let changed = [
        ("gpuscout.io/amd.count", "2"),
        ("gpuscout.io/amd.ready", "true"),
        ("gpuscout.io/present", "true"),
    ];
    api.set_labels_as(
        NODE,
        "kubelet",
        &[("node.kubernetes.io/heartbeat", Some("1"))],
    );
    agent.send(report(&changed, vec![]));
    pass(60).await;
    assert_eq!(ours_on(&api), labels(&changed));
    assert_eq!(node_writes(&api).len(), 1, "{:?}", api.log());
    agent.stop().await;
}

/// The first write waits a random time that grows with the cluster: on a one-Node cluster the
/// labels are there within about a second, on 5,000 Nodes 20 agents spread over seconds.
#[tokio::test(start_paused = true)]
async fn first_write_jitter_scales_with_cluster_size() {
    let api = StandIn::new();
    kubelet_node(&api);
    let mut c = SyncConfig::new(NODE, "gpuscout.io");
    c.seed = Some(42);
    let t0 = tokio::time::Instant::now();
    let agent = Agent::start(Some(&api), c, report(OURS, vec![]));
    let mut waited = None;
    for ms in 0..5_000u64 {
        if ours_on(&api) == labels(OURS) {
            waited = Some(ms);
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let waited = waited.expect("labelled within 5 s");
    println!("one-Node cluster labelled {waited} ms after start");
    assert!(waited <= 1_100, "{waited} ms");
    assert!(
        api.log()
            .iter()
            .any(|l| l.query.get("limit").map(String::as_str) == Some("1")),
        "the cluster was counted"
    );
    agent.stop().await;
    let _ = t0;

    let big = StandIn::new();
    for i in 0..5_000 {
        big.add_node(&format!("node-{i:05}"), &[]);
    }
    let mut agents = Vec::new();
    for i in 0..20u64 {
        let mut c = SyncConfig::new(format!("node-{i:05}"), "gpuscout.io");
        c.seed = Some(1000 + i);
        agents.push(Agent::start(Some(&big), c, report(OURS, vec![])));
    }
    pass(60).await;
    let writes: Vec<_> = big.log().into_iter().filter(|l| l.is_write()).collect();
    assert_eq!(writes.len(), 20);
    let first = writes.iter().map(|w| w.at).min().unwrap();
    let last = writes.iter().map(|w| w.at).max().unwrap();
    assert!(
        last - first >= Duration::from_secs(3),
        "5,000 Nodes: writes spread over {:?}",
        last - first
    );
    assert!(last - first <= Duration::from_secs(11));
    for a in agents {
        a.stop().await;
    }
}

mod standin_fidelity {
    //! The stand-in against what a real apiserver answers (sources named in its module docs):
    //! `Accept` negotiation, label syntax, versions newer than its own, bookmarks, restarts.

    use super::{NODE, kubelet_node};
    use crate::standin::{ChanBody, Restart, StandIn};
    use bytes::Bytes;
    use http_body_util::BodyExt;
    use serde_json::Value;
    use std::time::Duration;

    fn get(uri: &str, accept: &str) -> http::Request<Bytes> {
        http::Request::builder()
            .method("GET")
            .uri(uri)
            .header("accept", accept)
            .body(Bytes::new())
            .unwrap()
    }

    async fn json(r: http::Response<ChanBody>) -> Value {
        let b = r.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&b).unwrap()
    }

    /// The next line of a watch stream within `secs` of virtual time (`None`: ended or silent).
    async fn line(body: &mut ChanBody, secs: u64) -> Option<Value> {
        match tokio::time::timeout(Duration::from_secs(secs), body.frame()).await {
            Ok(Some(Ok(f))) => {
                let data = f.into_data().ok()?;
                serde_json::from_slice(data.strip_suffix(b"\n").unwrap_or(&data)).ok()
            }
            _ => None,
        }
    }

    const META: &str = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";
    const META_LIST: &str = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";

    #[tokio::test]
    async fn accept_is_negotiated_like_the_apiserver() {
        let api = StandIn::new();
        kubelet_node(&api);
        let list = format!("/api/v1/nodes?fieldSelector=metadata.name%3D{NODE}");
        let one = format!("/api/v1/nodes/{NODE}");
        for (uri, accept, want) in [
            (&list, META_LIST, 200),
            (&list, META, 406),
            (&one, META, 200),
            (&one, META_LIST, 406),
            (&one, "application/json;as=PartialObjectMetadata", 406),
            (
                &one,
                "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v9",
                406,
            ),
            (
                &one,
                "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1;x=y",
                406,
            ),
            (&one, "text/plain", 406),
            // kubectl: Table first (not served by the stand-in), then plain JSON.
            (
                &one,
                "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
                200,
            ),
            (&one, "", 200),
        ] {
            let r = api.handle(get(uri, accept)).await;
            assert_eq!(r.status(), want, "{uri} {accept}");
        }
        let v = json(api.handle(get(&list, META_LIST)).await).await;
        assert_eq!(v["kind"], "PartialObjectMetadataList");
        let v = json(api.handle(get(&one, META)).await).await;
        assert_eq!(v["kind"], "PartialObjectMetadata");
        let v = json(api.handle(get(&one, META_LIST)).await).await;
        assert_eq!(v["reason"], "NotAcceptable");
    }

    #[tokio::test]
    async fn invalid_label_keys_and_values_are_422() {
        let api = StandIn::new();
        kubelet_node(&api);
        let patch = |ctype: &str, body: String| {
            http::Request::builder()
                .method("PATCH")
                .uri(format!("/api/v1/nodes/{NODE}?fieldManager=t"))
                .header("content-type", ctype)
                .body(Bytes::from(body))
                .unwrap()
        };
        let apply = |k: &str, v: &str| {
            format!(
                r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"{NODE}","labels":{{"{k}":"{v}"}}}}}}"#
            )
        };
        let long = "x".repeat(64);
        for (k, v, why) in [
            (
                "bad key",
                "1",
                "name part must consist of alphanumeric characters",
            ),
            (
                "Example.com/x",
                "1",
                "prefix part a lowercase RFC 1123 subdomain",
            ),
            ("/x", "1", "prefix part must be non-empty"),
            ("a/b/c", "1", "a valid label key must consist of"),
            (&long, "1", "name part must be no more than 63 bytes"),
            ("gpuscout.io/x", &long, "must be no more than 63 bytes"),
            (
                "gpuscout.io/x",
                "-bad",
                "a valid label must be an empty string or consist of",
            ),
        ] {
            let r = api
                .handle(patch("application/apply-patch+yaml", apply(k, v)))
                .await;
            assert_eq!(r.status(), 422, "{k}={v}");
            let s = json(r).await;
            assert_eq!(s["reason"], "Invalid");
            let msg = s["message"].as_str().unwrap();
            assert!(
                msg.starts_with(&format!(
                    "Node \"{NODE}\" is invalid: metadata.labels: Invalid value: "
                )),
                "{msg}"
            );
            assert!(msg.contains(why), "{k}={v}: {msg}");
            assert_eq!(s["details"]["causes"][0]["reason"], "FieldValueInvalid");
            assert_eq!(s["details"]["causes"][0]["field"], "metadata.labels");
        }
        let r = api
            .handle(patch(
                "application/merge-patch+json",
                r#"{"metadata":{"labels":{"ok.example.com/fine":"yes_1.0","x y":"1"}}}"#.into(),
            ))
            .await;
        assert_eq!(r.status(), 422);
        assert!(
            !api.labels(NODE).contains_key("ok.example.com/fine"),
            "nothing applied"
        );
        // Removing a label (null) checks only its key.
        let r = api
            .handle(patch(
                "application/merge-patch+json",
                r#"{"metadata":{"labels":{"team.example.com/owner":null}}}"#.into(),
            ))
            .await;
        assert_eq!(r.status(), 200);
    }

    #[tokio::test(start_paused = true)]
    async fn versions_newer_than_the_servers_are_answered_like_the_watch_cache() {
        let api = StandIn::new();
        kubelet_node(&api);
        let rv = api.resource_version();
        let future = rv + 3;
        // GET/LIST at a version the server has not reached: 504 after 3 s.
        let t0 = tokio::time::Instant::now();
        let r = api
            .handle(get(
                &format!("/api/v1/nodes?resourceVersion={future}"),
                META_LIST,
            ))
            .await;
        assert_eq!(t0.elapsed(), Duration::from_secs(3));
        assert_eq!(r.status(), 504);
        assert_eq!(r.headers()["retry-after"], "1");
        let s = json(r).await;
        assert_eq!(s["reason"], "Timeout");
        assert_eq!(
            s["message"],
            format!("Timeout: Too large resource version: {future}, current: {rv}")
        );
        assert_eq!(
            s["details"]["causes"][0]["reason"],
            "ResourceVersionTooLarge"
        );
        assert_eq!(s["details"]["retryAfterSeconds"], 1);
        // A plain watch from there is accepted and silent until the server passes it.
        let w = api
            .handle(get(
                &format!("/api/v1/nodes?watch=true&resourceVersion={future}&timeoutSeconds=600"),
                META,
            ))
            .await;
        assert_eq!(w.status(), 200);
        let mut body = w.into_body();
        for _ in 0..3 {
            api.touch(NODE);
        }
        assert!(
            line(&mut body, 5).await.is_none(),
            "events at or below {future} are not sent"
        );
        api.touch(NODE);
        let ev = line(&mut body, 5).await.expect("the first event above it");
        assert_eq!(
            ev["object"]["metadata"]["resourceVersion"],
            (future + 1).to_string()
        );
        // With sendInitialEvents the watch ends with the 504 as an ERROR event after 3 s.
        let far = api.resource_version() + 100;
        let w = api
            .handle(get(
                &format!("/api/v1/nodes?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersion={far}"),
                META,
            ))
            .await;
        assert_eq!(w.status(), 200);
        let mut body = w.into_body();
        let ev = line(&mut body, 10).await.unwrap();
        assert_eq!(ev["type"], "ERROR");
        assert_eq!(ev["object"]["code"], 504);
        assert_eq!(
            ev["object"]["details"]["causes"][0]["reason"],
            "ResourceVersionTooLarge"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn bookmarks_arrive_every_minute_and_before_the_timeout() {
        let api = StandIn::new();
        kubelet_node(&api);
        let rv = api.resource_version();
        let w = api
            .handle(get(
                &format!("/api/v1/nodes?watch=true&allowWatchBookmarks=true&resourceVersion={rv}&timeoutSeconds=150"),
                META,
            ))
            .await;
        let mut body = w.into_body();
        api.touch(NODE);
        assert_eq!(line(&mut body, 1).await.unwrap()["type"], "MODIFIED");
        let t0 = tokio::time::Instant::now();
        let mut at = Vec::new();
        while let Some(ev) = line(&mut body, 200).await {
            assert_eq!(ev["type"], "BOOKMARK");
            assert_eq!(ev["object"]["kind"], "PartialObjectMetadata");
            at.push(t0.elapsed().as_secs());
        }
        assert_eq!(
            at,
            [60, 120, 148],
            "every 60 s and 2 s before the 150 s timeout"
        );
        // The period is the server's: at 100 s, one and the one before the timeout.
        api.set_bookmark_every(Duration::from_secs(100));
        let w = api
            .handle(get(
                &format!("/api/v1/nodes?watch=true&allowWatchBookmarks=true&resourceVersion={rv}&timeoutSeconds=150"),
                META,
            ))
            .await;
        let mut body = w.into_body();
        let t0 = tokio::time::Instant::now();
        let mut at = Vec::new();
        while let Some(ev) = line(&mut body, 200).await {
            if ev["type"] == "BOOKMARK" {
                at.push(t0.elapsed().as_secs());
            }
        }
        assert_eq!(at, [100, 148]);
        // Without allowWatchBookmarks: none.
        let w = api
            .handle(get(
                &format!("/api/v1/nodes?watch=true&resourceVersion={rv}&timeoutSeconds=150"),
                META,
            ))
            .await;
        let mut body = w.into_body();
        assert_eq!(line(&mut body, 1).await.unwrap()["type"], "MODIFIED");
        assert!(line(&mut body, 200).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn restarts_keep_or_lose_state_and_cut_every_watch() {
        let api = StandIn::new();
        kubelet_node(&api);
        api.touch(NODE);
        let rv = api.resource_version();
        let w = api
            .handle(get(
                &format!("/api/v1/nodes?watch=true&resourceVersion={rv}"),
                META,
            ))
            .await;
        let mut body = w.into_body();
        api.restart(Restart::KeepState);
        assert!(line(&mut body, 5).await.is_none(), "the watch was cut");
        assert_eq!(api.resource_version(), rv, "state kept");
        // The rebuilt watch cache cannot replay from before the restart: 410 as an ERROR event.
        let w = api
            .handle(get(
                &format!("/api/v1/nodes?watch=true&resourceVersion={}", rv - 1),
                META,
            ))
            .await;
        let ev = line(&mut w.into_body(), 5).await.unwrap();
        assert_eq!(
            (ev["type"].as_str(), ev["object"]["code"].as_u64()),
            (Some("ERROR"), Some(410))
        );
        // From the current version it works.
        let w = api
            .handle(get(
                &format!("/api/v1/nodes?watch=true&resourceVersion={rv}"),
                META,
            ))
            .await;
        let mut body = w.into_body();
        api.touch(NODE);
        assert_eq!(line(&mut body, 5).await.unwrap()["type"], "MODIFIED");
        api.restart(Restart::LoseState);
        assert!(line(&mut body, 5).await.is_none());
        assert_eq!(api.resource_version(), 0);
        assert!(api.node(NODE).is_none());
    }
}
