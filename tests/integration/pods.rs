//! Who uses each GPU (agent/src/pods): per-process usage on the pod fixture host roots
//! (tests/fixtures/pods, all three vendors, both cgroup drivers, containerd and CRI-O), a fake
//! kubelet PodResources server over a real Unix socket (tonic), pod churn, processes that exit
//! mid-scan, 2,000 processes with 20,000 fds, and the documented PromQL joins against a real
//! Prometheus scraping `gpuscout serve`.

#![allow(clippy::disallowed_methods)]

use gpuscout::hostroot::HostRoot;
use gpuscout::metrics::{ScrapeContext, Sink, Source};
use gpuscout::nvml::{Nvml, NvmlConfig, NvmlHandle};
use gpuscout::pods::podresources::proto;
use gpuscout::pods::podresources::proto::pod_resources_lister_server::{
    PodResourcesLister, PodResourcesListerServer,
};
use gpuscout::pods::{AllocationSource, ProcessSource, scan};
use gpuscout_test_support::nvml_double::Double;
use gpuscout_test_support::proc_tree;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TALOS: &str = "talos-amd-nvidia-pods";
const UBUNTU: &str = "ubuntu-intel-crio-pods";
const RTX4090_UUID: &str = "GPU-5b2c7e0a-3f41-9d86-1c2e-7a4f0b9d3e61";
const JELLYFIN: &str = "jellyfin-7c9d8f6b5-x2x4q";
const PLEX: &str = "plex-6d8f7b9c4-k7m2p";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pods")
        .join(name)
}

/// Copy a fixture (symlinks as symlinks) into a temporary directory the test may change.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let ft = e.file_type().unwrap();
        if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src).unwrap(), &dst).unwrap();
        } else if ft.is_dir() {
            copy_tree(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

fn scratch(profile: &str) -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    copy_tree(&fixture(profile), &root);
    (t, root)
}

fn ctx(root: &Path) -> ScrapeContext {
    let hr = HostRoot::new(root).unwrap();
    let report = gpuscout::discover::discover(
        &hr,
        &gpuscout::discover::Options::default(),
        &Default::default(),
    );
    ScrapeContext {
        root: hr,
        report: Arc::new(report),
    }
}

fn collect(src: &dyn Source, ctx: &ScrapeContext) -> (Sink, bool) {
    let mut sink = Sink::default();
    let ok = src.collect(ctx, &mut sink);
    if let Err(e) = &ok {
        eprintln!("source {} failed: {e}", src.name());
    }
    (sink, ok.is_ok())
}

/// The value of the one sample of `family` whose labels include all of `want`.
fn value(sink: &Sink, family: &str, want: &[(&str, &str)]) -> Option<f64> {
    let hits: Vec<f64> = sink
        .samples(family)
        .iter()
        .filter(|s| {
            want.iter()
                .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|s| s.value)
        .collect();
    assert!(hits.len() <= 1, "{family} {want:?}: {} samples", hits.len());
    hits.first().copied()
}

fn busy(sink: &Sink, gpu: &str, pod: &str, engine: &str) -> Option<f64> {
    value(
        sink,
        "process_gpu_busy_seconds",
        &[("gpu", gpu), ("pod", pod), ("engine", engine)],
    )
}

fn memory(sink: &Sink, gpu: &str, pod: &str, region: &str) -> Option<f64> {
    value(
        sink,
        "process_gpu_memory_bytes",
        &[("gpu", gpu), ("pod", pod), ("region", region)],
    )
}

/// NVML double for the Talos profile's RTX 4090: the trainer (pid 3301) holds 1 GiB and runs
/// the SMs at 60 % and the decoder at 5 %.
fn rtx4090(procs: &str) -> Double {
    Double::new(&format!(
        "log_calls=0\ngpu.0.bus_id=00000000:01:00.0\ngpu.0.name=NVIDIA GeForce RTX 4090\n\
gpu.0.uuid={RTX4090_UUID}\ngpu.0.pci_device_id=0x268410de\n{procs}"
    ))
}

fn nvml(root: &Path, d: &Double) -> NvmlHandle {
    let mut c = NvmlConfig::new(HostRoot::new(root).unwrap());
    c.lib_path = Some(d.lib.clone());
    c.call_timeout = Duration::from_secs(2);
    c.init_timeout = Duration::from_secs(5);
    Nvml::start(c)
}

#[test]
fn amd_and_nvidia_per_pod_usage_on_talos_containerd_cgroupfs() {
    let root = fixture(TALOS);
    let d = rtx4090("gpu.0.procs=3301:1073741824\ngpu.0.psamples=3301:60:0:5\n");
    let src = ProcessSource::new(Some(nvml(&root, &d)), Duration::from_secs(2), 1000);
    let c = ctx(&root);
    let (first, ok) = collect(&src, &c);
    assert!(ok);
    let amd = "0000:03:00.0";
    // one DRM client open as fd 18 and its dup fd 19: counted once
    assert_eq!(busy(&first, amd, JELLYFIN, "gfx"), Some(98.234511234));
    assert_eq!(busy(&first, amd, JELLYFIN, "dec"), Some(41.236001875));
    assert_eq!(
        memory(&first, amd, JELLYFIN, "vram"),
        Some(1734.0 * 1048576.0)
    );
    assert_eq!(
        value(
            &first,
            "process_gpu_busy_seconds",
            &[
                ("pod", JELLYFIN),
                ("engine", "gfx"),
                ("namespace", "media"),
                ("container", "jellyfin")
            ]
        ),
        Some(98.234511234)
    );
    // the Talos system service: outside pods
    assert_eq!(
        value(
            &first,
            "process_gpu_busy_seconds",
            &[
                ("namespace", ""),
                ("pod", "host"),
                ("container", ""),
                ("engine", "gfx")
            ]
        ),
        Some(1.5)
    );
    // NVIDIA through NVML: memory now, busy time from the second sample on
    let nv = "0000:01:00.0";
    assert_eq!(memory(&first, nv, "trainer-0", "vram"), Some(1073741824.0));
    assert_eq!(busy(&first, nv, "trainer-0", "sm"), Some(0.0));
    let t = Instant::now();
    std::thread::sleep(Duration::from_millis(50));
    let (second, ok) = collect(&src, &c);
    let elapsed = t.elapsed().as_secs_f64() + 0.5;
    assert!(ok);
    let sm = busy(&second, nv, "trainer-0", "sm").unwrap();
    assert!(sm > 0.0 && sm <= 0.6 * elapsed, "{sm}");
    assert!(busy(&second, nv, "trainer-0", "dec").unwrap() > 0.0);
    assert_eq!(
        value(
            &second,
            "process_gpu_busy_seconds",
            &[
                ("pod", "trainer-0"),
                ("engine", "sm"),
                ("namespace", "ml"),
                ("container", "trainer")
            ]
        ),
        Some(sm)
    );
    // the fdinfo counters did not move: the AMD counter stays, never counted twice
    assert_eq!(busy(&second, amd, JELLYFIN, "gfx"), Some(98.234511234));
}

#[test]
fn intel_i915_and_xe_per_pod_usage_on_systemd_crio() {
    let (_t, root) = scratch(UBUNTU);
    let src = ProcessSource::new(None, Duration::from_secs(2), 1000);
    let c = ctx(&root);
    let (first, ok) = collect(&src, &c);
    assert!(ok);
    let a770 = "0000:03:00.0";
    let b580 = "0000:0a:00.0";
    assert_eq!(busy(&first, a770, PLEX, "render"), Some(346.249));
    assert_eq!(busy(&first, a770, PLEX, "video"), Some(123.456789012));
    assert_eq!(
        memory(&first, a770, PLEX, "local0"),
        Some(512.0 * 1048576.0)
    );
    assert_eq!(
        value(
            &first,
            "process_gpu_busy_seconds",
            &[
                ("pod", PLEX),
                ("engine", "render"),
                ("namespace", "media"),
                ("container", "plex")
            ]
        ),
        Some(346.249)
    );
    // Xorg: a host process on the same GPU (through card1, not the render node)
    assert_eq!(busy(&first, a770, "host", "render"), Some(5.123));
    // xe: the first sight adds nothing, then Δcycles/Δtotal-cycles of the wall time
    let tdarr = "tdarr-node-5f6d7c8b9-qwert";
    assert_eq!(busy(&first, b580, tdarr, "rcs"), Some(0.0));
    assert_eq!(
        memory(&first, b580, tdarr, "vram0"),
        Some(2304.0 * 1048576.0)
    );
    let f = root.join("proc/6601/fdinfo/11");
    let text = std::fs::read_to_string(&f)
        .unwrap()
        .replace("drm-cycles-rcs:\t28257900", "drm-cycles-rcs:\t30757900")
        .replace("7655183225", "7665183225");
    std::fs::write(&f, text).unwrap();
    let t = Instant::now();
    std::thread::sleep(Duration::from_millis(50));
    let (second, _) = collect(&src, &c);
    let elapsed = t.elapsed().as_secs_f64() + 0.5;
    let rcs = busy(&second, b580, tdarr, "rcs").unwrap();
    // 2.5 M of 10 M GPU ticks busy: a quarter of the time between the two passes
    assert!(rcs > 0.0 && rcs <= 0.25 * elapsed, "{rcs}");
    assert_eq!(busy(&second, b580, tdarr, "bcs"), Some(0.0));
    // conmon is in the plex pod but holds no GPU: no extra series
    assert_eq!(
        second
            .samples("process_gpu_busy_seconds")
            .iter()
            .filter(|s| s
                .labels
                .iter()
                .any(|(k, v)| *k == "engine" && v == "render"))
            .count(),
        2
    );
}

#[test]
fn pod_churn_between_scrapes() {
    let (_t, root) = scratch(UBUNTU);
    let src = ProcessSource::new(None, Duration::from_secs(2), 1000);
    let c = ctx(&root);
    let (first, _) = collect(&src, &c);
    assert_eq!(busy(&first, "0000:03:00.0", PLEX, "render"), Some(346.249));
    // the transcoder exits; the pod is still on the node: the counter stays, memory goes
    std::fs::remove_dir_all(root.join("proc/5501")).unwrap();
    let (second, ok) = collect(&src, &c);
    assert!(ok);
    assert_eq!(busy(&second, "0000:03:00.0", PLEX, "render"), Some(346.249));
    assert_eq!(memory(&second, "0000:03:00.0", PLEX, "local0"), None);
    // the pod is deleted and another one starts on the same GPU
    for e in std::fs::read_dir(root.join("var/log/pods")).unwrap() {
        let e = e.unwrap();
        if e.file_name().to_string_lossy().starts_with("media_plex") {
            std::fs::remove_dir_all(e.path()).unwrap();
        }
    }
    let uid = "d1e2f3a4-b5c6-4d7e-8f9a-0b1c2d3e4f5a";
    let cid = "e".repeat(64);
    std::fs::create_dir_all(root.join(format!("var/log/pods/media_emby-0_{uid}/emby"))).unwrap();
    std::os::unix::fs::symlink(
        format!("/var/log/pods/media_emby-0_{uid}/emby/0.log"),
        root.join(format!("var/log/containers/emby-0_media_emby-{cid}.log")),
    )
    .unwrap();
    let p = root.join("proc/7701");
    std::fs::create_dir_all(p.join("fd")).unwrap();
    std::fs::create_dir_all(p.join("fdinfo")).unwrap();
    std::fs::write(
        p.join("cgroup"),
        format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/crio-{cid}.scope\n",
            uid.replace('-', "_")
        ),
    )
    .unwrap();
    std::os::unix::fs::symlink("/dev/dri/renderD128", p.join("fd/4")).unwrap();
    std::fs::write(
        p.join("fdinfo/4"),
        "drm-driver:\ti915\ndrm-client-id:\t77\ndrm-pdev:\t0000:03:00.0\ndrm-engine-render:\t2000000000 ns\n",
    )
    .unwrap();
    let (third, ok) = collect(&src, &c);
    assert!(ok);
    assert!(
        third
            .samples("process_gpu_busy_seconds")
            .iter()
            .all(|s| !s.labels.iter().any(|(_, v)| v == PLEX)),
        "the deleted pod's series must disappear"
    );
    assert_eq!(
        value(
            &third,
            "process_gpu_busy_seconds",
            &[
                ("pod", "emby-0"),
                ("engine", "render"),
                ("namespace", "media"),
                ("container", "emby")
            ]
        ),
        Some(2.0)
    );
    assert_eq!(busy(&third, "0000:03:00.0", "host", "render"), Some(5.123));
}

#[test]
fn a_process_that_exits_mid_scan_is_counted_not_fatal() {
    let (_t, root) = scratch(UBUNTU);
    // exited after its fd was listed: the fd link is there, its fdinfo directory is not
    let p = root.join("proc/8801");
    std::fs::create_dir_all(p.join("fd")).unwrap();
    std::fs::write(p.join("cgroup"), "0::/system.slice/x.service\n").unwrap();
    std::os::unix::fs::symlink("/dev/dri/renderD128", p.join("fd/9")).unwrap();
    // closed the fd between the two reads: link present, fdinfo file gone
    let q = root.join("proc/8802");
    std::fs::create_dir_all(q.join("fd")).unwrap();
    std::fs::create_dir_all(q.join("fdinfo")).unwrap();
    std::fs::write(q.join("cgroup"), "0::/system.slice/y.service\n").unwrap();
    std::os::unix::fs::symlink("/dev/dri/renderD129", q.join("fd/3")).unwrap();
    let src = ProcessSource::new(None, Duration::from_secs(2), 1000);
    let (sink, ok) = collect(&src, &ctx(&root));
    assert!(ok, "vanished processes are churn, not a failure");
    assert!(value(&sink, "process_scan_errors", &[("reason", "vanished")]).unwrap() >= 1.0);
    assert_eq!(busy(&sink, "0000:03:00.0", PLEX, "render"), Some(346.249));
    // and a process that exits between two passes retires cleanly
    std::fs::remove_dir_all(root.join("proc/1733")).unwrap();
    let (sink, ok) = collect(&src, &ctx(&root));
    assert!(ok);
    assert_eq!(busy(&sink, "0000:03:00.0", "host", "render"), Some(5.123));
    assert_eq!(memory(&sink, "0000:03:00.0", "host", "system0"), None);
}

#[test]
fn two_thousand_processes_with_twenty_thousand_fds() {
    let t = tempfile::tempdir().unwrap();
    let drm = proc_tree::write(t.path(), 2000, 10, 10);
    assert_eq!(drm, 200);
    let root = HostRoot::new(t.path()).unwrap();
    let mut s = scan::Scanner::new(scan::ScanConfig::default());
    let far = Instant::now() + Duration::from_secs(600);
    let first = s.scan(&root, far).unwrap();
    assert_eq!(first.stats.processes, 2000);
    assert_eq!(first.stats.new_scanned, 2000);
    assert_eq!(first.observations.len(), 200);
    assert!(first.observations.iter().all(|o| o.pod.is_some()));
    assert_eq!(first.stats.pending, 0);
    // incremental: the second pass reads only the 200 DRM fds, no fd link again
    let second = s.scan(&root, far).unwrap();
    assert_eq!(second.stats.new_scanned, 0);
    assert_eq!(second.stats.rescanned, 0);
    assert_eq!(second.stats.drm_fds_read, 200);
    assert_eq!(second.observations.len(), 200);
    // a pass past its deadline reads nothing new and says how much is left
    let mut fresh = scan::Scanner::new(scan::ScanConfig::default());
    let late = fresh.scan(&root, Instant::now()).unwrap();
    assert!(late.stats.deadline_hit);
    assert_eq!(late.stats.pending, 2000);
    assert_eq!(fresh.cached(), 0);
}

// ---- the kubelet

#[derive(Clone)]
struct FakeKubelet {
    list: proto::ListPodResourcesResponse,
    allocatable: proto::AllocatableResourcesResponse,
}

#[tonic::async_trait]
impl PodResourcesLister for FakeKubelet {
    async fn list(
        &self,
        _: tonic::Request<proto::ListPodResourcesRequest>,
    ) -> Result<tonic::Response<proto::ListPodResourcesResponse>, tonic::Status> {
        Ok(tonic::Response::new(self.list.clone()))
    }
    async fn get_allocatable_resources(
        &self,
        _: tonic::Request<proto::AllocatableResourcesRequest>,
    ) -> Result<tonic::Response<proto::AllocatableResourcesResponse>, tonic::Status> {
        Ok(tonic::Response::new(self.allocatable.clone()))
    }
    async fn get(
        &self,
        _: tonic::Request<proto::GetPodResourcesRequest>,
    ) -> Result<tonic::Response<proto::GetPodResourcesResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not used by gpuscout"))
    }
}

fn devices(resource: &str, ids: &[&str]) -> proto::ContainerDevices {
    proto::ContainerDevices {
        resource_name: resource.into(),
        device_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
        topology: None,
    }
}

fn container(name: &str, devs: Vec<proto::ContainerDevices>) -> proto::ContainerResources {
    proto::ContainerResources {
        name: name.into(),
        devices: devs,
        ..Default::default()
    }
}

fn pod(ns: &str, name: &str, containers: Vec<proto::ContainerResources>) -> proto::PodResources {
    proto::PodResources {
        name: name.into(),
        namespace: ns.into(),
        containers,
    }
}

/// What the kubelet of a node with the Talos and the Ubuntu fixtures' GPUs would answer.
fn kubelet_answer() -> FakeKubelet {
    let mut trainer = container(
        "trainer",
        vec![devices(
            "nvidia.com/gpu.shared",
            &[&format!("{RTX4090_UUID}::2")],
        )],
    );
    trainer.dynamic_resources = vec![proto::DynamicResource {
        claim_name: "gpu-claim".into(),
        claim_namespace: "ml".into(),
        claim_resources: vec![proto::ClaimResource {
            cdi_devices: vec![proto::CdiDevice {
                name: "k8s.gpu.example.com/gpu=gpu-0".into(),
            }],
            driver_name: "gpu.example.com".into(),
            pool_name: "node-a".into(),
            device_name: "gpu-0".into(),
            share_id: None,
        }],
    }];
    FakeKubelet {
        list: proto::ListPodResourcesResponse {
            pod_resources: vec![
                pod(
                    "media",
                    JELLYFIN,
                    vec![container(
                        "jellyfin",
                        vec![devices("amd.com/gpu", &["0000:03:00.0"])],
                    )],
                ),
                pod("ml", "trainer-0", vec![trainer]),
                pod(
                    "media",
                    PLEX,
                    vec![container(
                        "plex",
                        vec![devices("gpu.intel.com/i915", &["card1-0"])],
                    )],
                ),
                pod(
                    "transcode",
                    "tdarr-node-5f6d7c8b9-qwert",
                    vec![container(
                        "tdarr-node",
                        vec![
                            devices("gpu.intel.com/xe", &["card2-3"]),
                            devices("squat.ai/fuse", &["fuse-0"]),
                        ],
                    )],
                ),
                pod(
                    "stale",
                    "ghost-0",
                    vec![container(
                        "ghost",
                        vec![devices(
                            "nvidia.com/gpu",
                            &["GPU-00000000-dead-beef-0000-000000000000"],
                        )],
                    )],
                ),
                pod(
                    "kube-system",
                    "coredns-0",
                    vec![container("coredns", vec![])],
                ),
            ],
        },
        allocatable: proto::AllocatableResourcesResponse {
            devices: vec![
                devices(
                    "nvidia.com/gpu.shared",
                    &[
                        &format!("{RTX4090_UUID}::0"),
                        &format!("{RTX4090_UUID}::1"),
                        &format!("{RTX4090_UUID}::2"),
                        &format!("{RTX4090_UUID}::3"),
                    ],
                ),
                devices("amd.com/gpu", &["0000:03:00.0"]),
                devices("gpu.intel.com/i915", &["card1-0", "card1-1"]),
                devices(
                    "gpu.intel.com/xe",
                    &["card2-0", "card2-1", "card2-2", "card2-3"],
                ),
            ],
            cpu_ids: Vec::new(),
            memory: Vec::new(),
        },
    }
}

/// Serve `k` on `<root>/var/lib/kubelet/pod-resources/kubelet.sock` until the handle is aborted.
fn serve_kubelet(
    rt: &tokio::runtime::Runtime,
    root: &Path,
    k: FakeKubelet,
) -> tokio::task::JoinHandle<()> {
    let dir = root.join("var/lib/kubelet/pod-resources");
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("kubelet.sock");
    let _ = std::fs::remove_file(&sock);
    let _guard = rt.enter();
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    rt.spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(PodResourcesListerServer::new(k))
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
            .await;
    })
}

/// A report with both fixtures' GPUs (one node with four GPUs of three vendors).
fn four_gpu_ctx(root: &Path) -> ScrapeContext {
    let mut c = ctx(root);
    let intel = ctx(&fixture(UBUNTU));
    let mut r = (*c.report).clone();
    r.gpus.extend(intel.report.gpus.iter().cloned());
    c.report = Arc::new(r);
    c
}

fn info(sink: &Sink, pod: &str) -> Vec<(String, String, String)> {
    sink.samples("gpu_allocation_info")
        .iter()
        .filter(|s| s.labels.iter().any(|(k, v)| *k == "pod" && v == pod))
        .map(|s| {
            let l = |n: &str| {
                s.labels
                    .iter()
                    .find(|(k, _)| *k == n)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            (l("gpu"), l("uuid"), l("resource"))
        })
        .collect()
}

#[test]
fn kubelet_allocations_map_to_gpus_for_every_plugin() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (_t, root) = scratch(TALOS);
    let server = serve_kubelet(&rt, &root, kubelet_answer());
    let c = four_gpu_ctx(&root);
    let src = Arc::new(AllocationSource::new(
        gpuscout::pods::podresources::DEFAULT_SOCKET.into(),
        None,
        Duration::from_secs(5),
    ));
    // the source blocks on the runtime it runs under, like the exporter's blocking threads
    let run = |src: Arc<AllocationSource>| {
        let c = c.clone();
        rt.block_on(async move {
            tokio::task::spawn_blocking(move || collect(&*src, &c))
                .await
                .unwrap()
        })
    };
    let (sink, ok) = run(src.clone());
    assert!(ok);
    assert_eq!(
        info(&sink, JELLYFIN),
        [("0000:03:00.0".into(), String::new(), "amd.com/gpu".into())]
    );
    assert_eq!(
        info(&sink, "trainer-0"),
        [(
            "0000:01:00.0".into(),
            RTX4090_UUID.into(),
            "nvidia.com/gpu.shared".into()
        )]
    );
    assert_eq!(
        info(&sink, PLEX),
        [(
            "0000:03:00.0".into(),
            String::new(),
            "gpu.intel.com/i915".into()
        )]
    );
    assert_eq!(
        info(&sink, "tdarr-node-5f6d7c8b9-qwert"),
        [(
            "0000:0a:00.0".into(),
            String::new(),
            "gpu.intel.com/xe".into()
        )]
    );
    assert!(info(&sink, "ghost-0").is_empty());
    let unmatched = |r: &str| value(&sink, "gpu_allocation_unmatched_devices", &[("reason", r)]);
    assert_eq!(unmatched("unknown_resource"), Some(1.0));
    assert_eq!(unmatched("unknown_id"), Some(1.0));
    assert_eq!(unmatched("dynamic_resource"), Some(1.0));
    let alloc = |g: &str, r: &str| {
        value(
            &sink,
            "gpu_allocatable_devices",
            &[("gpu", g), ("resource", r)],
        )
    };
    assert_eq!(alloc("0000:01:00.0", "nvidia.com/gpu.shared"), Some(4.0));
    assert_eq!(alloc("0000:0a:00.0", "gpu.intel.com/xe"), Some(4.0));
    assert_eq!(alloc("0000:03:00.0", "amd.com/gpu"), Some(1.0));

    // the kubelet goes away (socket file left behind): the last answer is served, the source fails
    server.abort();
    let _ = rt.block_on(server);
    let (sink, ok) = run(src);
    assert!(!ok);
    assert_eq!(info(&sink, JELLYFIN).len(), 1);
}

#[test]
fn no_kubelet_socket_is_not_an_error() {
    let src = AllocationSource::new(
        gpuscout::pods::podresources::DEFAULT_SOCKET.into(),
        None,
        Duration::from_secs(1),
    );
    let (sink, ok) = collect(&src, &ctx(&fixture(TALOS)));
    assert!(ok);
    assert!(sink.samples("gpu_allocation_info").is_empty());
}

// ---- the documented PromQL, against a real Prometheus scraping `gpuscout serve`

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The ```promql blocks of docs/POD-ATTRIBUTION.md.
fn documented_queries() -> Vec<String> {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/POD-ATTRIBUTION.md"),
    )
    .unwrap();
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in doc.lines() {
        match (&mut cur, line.trim()) {
            (None, "```promql") => cur = Some(String::new()),
            (Some(q), "```") => {
                out.push(q.trim().to_owned());
                cur = None;
            }
            (Some(q), _) if !line.trim_start().starts_with('#') => {
                q.push_str(line);
                q.push('\n');
            }
            _ => {}
        }
    }
    out
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn documented_promql_joins_allocation_and_usage_in_real_prometheus() {
    let queries = documented_queries();
    assert!(
        queries.len() >= 3,
        "docs/POD-ATTRIBUTION.md lost its ```promql blocks"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (t, root) = scratch(TALOS);
    // jellyfin reaches /dev/dri without a device plugin here: unmanaged use
    let mut answer = kubelet_answer();
    answer.list.pod_resources.retain(|p| p.name != JELLYFIN);
    let _kubelet = serve_kubelet(&rt, &root, answer);
    // its decoder keeps working: the fdinfo counters move while Prometheus scrapes
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bumper = {
        let (root, stop) = (root.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut ns: u64 = 98234511234;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                ns += 150_000_000;
                for fd in [18, 19] {
                    let f = root.join(format!("proc/2101/fdinfo/{fd}"));
                    let text = std::fs::read_to_string(&f).unwrap();
                    let text: String = text
                        .lines()
                        .map(|l| {
                            if l.starts_with("drm-engine-gfx:") {
                                format!("drm-engine-gfx:\t{ns} ns\n")
                            } else {
                                format!("{l}\n")
                            }
                        })
                        .collect();
                    let tmp = f.with_extension("tmp");
                    std::fs::write(&tmp, text).unwrap();
                    std::fs::rename(&tmp, &f).unwrap();
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };
    struct Stop(
        Arc<std::sync::atomic::AtomicBool>,
        Option<std::thread::JoinHandle<()>>,
    );
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
            if let Some(h) = self.1.take() {
                let _ = h.join();
            }
        }
    }
    let _bumper = Stop(stop, Some(bumper));
    let d = rtx4090("gpu.0.procs=3301:1073741824\ngpu.0.psamples=3301:60:0:5\n");
    let served = crate::serve::Served::start(
        &root,
        &["--nvml-lib", d.lib.to_str().unwrap(), "--scrape-cache", "0"],
    );
    served.wait_ready();
    let config = t.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            // The target labels the Prometheus Operator gives the agent's pod, and the chart's
            // metric relabelings (templates/_helpers.tpl, gpuscout.workloadRelabelings) in
            // Prometheus' own syntax: the usage series must keep the workload's labels.
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             scrape_configs:\n  - job_name: gpuscout\n    static_configs: [{{targets: ['{}'], labels: {{node: n1, cluster: test, namespace: gpu-system, pod: gpuscout-x7k2p, container: gpuscout}}}}]\n\
             \x20   metric_relabel_configs:\n{}",
            served.addr,
            ["namespace", "pod", "container"]
                .iter()
                .map(|l| format!(
                    "      - {{action: replace, source_labels: [__name__, exported_{l}], regex: 'gpuscout_(process_gpu_.+|gpu_allocation_info);(.*)', target_label: {l}, replacement: '$2'}}\n"
                ))
                .chain(std::iter::once(
                    "      - {action: labeldrop, regex: 'exported_(namespace|pod|container)'}\n".to_owned()
                ))
                .collect::<String>()
        ),
    )
    .unwrap();
    let web = format!("127.0.0.1:{}", free_port());
    let _prom = Child(
        std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                t.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .arg("--log.level=warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("prometheus not runnable ({e}); install Debian package `prometheus`")
            }),
    );
    let api: std::net::SocketAddr = web.parse().unwrap();
    let query = |q: &str| -> Vec<serde_json::Value> {
        let path = format!("/api/v1/query?query={}", urlencode(q));
        match crate::serve::http_get(api, &path, None) {
            Ok((200, _, body)) => serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["data"]["result"].as_array().cloned())
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    };
    // enough samples for the 1m windows of the documented queries
    let start = Instant::now();
    while query("count_over_time(gpuscout_process_gpu_busy_seconds_total[1m]) >= 6").is_empty() {
        // hang guard: only turns a Prometheus that never gets the series into a failure
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "no process series in Prometheus"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    for q in &queries {
        let r = query(q);
        assert!(!r.is_empty(), "documented query returned nothing:\n{q}");
    }
    // every panel of the "GPU by namespace and pod" dashboard has data, allocations included
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards/gpuscout-pods.json"),
        )
        .unwrap(),
    )
    .unwrap();
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m")
                .replace("$cluster", ".*")
                .replace("$node", ".*")
                .replace("$gpu", ".*")
                .replace("$namespace", ".*");
            assert!(
                !query(&expr).is_empty(),
                "panel {:?} has no data: {expr}",
                panel["title"]
            );
        }
    }
    // host processes keep namespace="" (not the agent's gpu-system), pods their own names
    assert!(
        !query("gpuscout_process_gpu_busy_seconds_total{pod=\"host\", namespace=\"\"}").is_empty()
    );
    assert!(query("gpuscout_process_gpu_busy_seconds_total{namespace=\"gpu-system\"}").is_empty());
    assert!(
        !query("gpuscout_gpu_info{namespace=\"gpu-system\", pod=\"gpuscout-x7k2p\"}").is_empty()
    );
    // the join names the pod's allocation next to its usage
    let join = queries
        .iter()
        .find(|q| q.contains("group_left") && q.contains("gpuscout_gpu_allocation_info"))
        .expect("the docs' allocation join");
    let rows = query(join);
    let pods: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["metric"]["pod"].as_str().unwrap_or("").to_owned(),
                r["metric"]["resource"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        pods,
        [("trainer-0".to_owned(), "nvidia.com/gpu.shared".to_owned())]
    );
    // unmanaged use: jellyfin is busy on a GPU it was not allocated; host processes are not pods
    let unmanaged = queries
        .iter()
        .find(|q| q.contains("unless on"))
        .expect("the docs' unmanaged-use query");
    let rows = query(unmanaged);
    let who: Vec<&str> = rows
        .iter()
        .filter_map(|r| r["metric"]["pod"].as_str())
        .collect();
    assert_eq!(who, [JELLYFIN]);
}

#[test]
fn mig_device_ids_map_to_their_gpu_through_nvml() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hosts/nvidia-h100-mig"),
        &root,
    );
    const MIG: &str = "MIG-1a2b3c4d-5e6f-5a7b-8c9d-0e1f2a3b4c5d";
    let d = Double::new(&format!(
        "log_calls=0\ngpu.0.bus_id=00000000:1B:00.0\ngpu.0.uuid=GPU-9f3e1a27-64b0-4c8d-a5e2-71d0c4b83f19\n\
gpu.0.mig_current=1\ngpu.0.mig_max=7\ngpu.0.mig_devices=2\ngpu.0.mig_uuid.0={MIG}\n\
gpu.0.mig_uuid.1=MIG-99999999-0000-5000-8000-000000000001\n"
    ));
    let answer = FakeKubelet {
        list: proto::ListPodResourcesResponse {
            pod_resources: vec![pod(
                "ml",
                "notebook-0",
                vec![container(
                    "jupyter",
                    vec![devices("nvidia.com/mig-1g.10gb", &[MIG])],
                )],
            )],
        },
        allocatable: proto::AllocatableResourcesResponse::default(),
    };
    let _server = serve_kubelet(&rt, &root, answer);
    let c = ctx(&root);
    let src = Arc::new(AllocationSource::new(
        gpuscout::pods::podresources::DEFAULT_SOCKET.into(),
        Some(nvml(&root, &d)),
        Duration::from_secs(5),
    ));
    let (sink, ok) = rt.block_on(async move {
        tokio::task::spawn_blocking(move || collect(&*src, &c))
            .await
            .unwrap()
    });
    assert!(ok);
    assert_eq!(
        info(&sink, "notebook-0"),
        [(
            "0000:1b:00.0".into(),
            MIG.into(),
            "nvidia.com/mig-1g.10gb".into()
        )]
    );
}
