//! Robustness at the edges (issue #13): one failed read never makes a GPU vanish nor strips the
//! Node's labels, parsers are bounded (nesting depth, checked sums, capped strings), and the
//! HTTP server survives idle-connection floods, slow clients and half-closes. Hostile inputs are
//! built in each test from a synthetic host root (`tests/support/synth.rs`); floods are bounded
//! in count and time and aimed at 127.0.0.1 only. Timing never decides a result here.

#![allow(clippy::disallowed_methods)] // tests build and break host trees directly

#[path = "../support/synth.rs"]
mod synth;

use crate::serve::http_get;
use crate::util::report_at;
use gpuscout::model::Status;
use std::fs;
use std::path::{Path, PathBuf};

const GPU0: &str = "0000:10:00.0";

/// Sysfs directory of synthetic GPU 0.
fn dev0(root: &Path) -> PathBuf {
    root.join("sys/devices/pci0000:00/0000:00:00.0/0000:10:00.0")
}

/// Replace a file with a directory: reading it fails even for root (`not a regular file`).
fn make_unreadable(p: &Path) {
    fs::remove_file(p).unwrap();
    fs::create_dir(p).unwrap();
}

#[test]
fn unreadable_device_id_keeps_the_gpu_as_unknown() {
    let t = tempfile::tempdir().unwrap();
    synth::amd_host(t.path(), 1);
    make_unreadable(&dev0(t.path()).join("device"));
    let r = report_at(t.path());
    assert_eq!(r.gpus.len(), 1, "vendor and class are known: the GPU stays");
    let g = &r.gpus[0];
    assert_eq!(g.pci_address, GPU0);
    assert_eq!(g.device_id, None, "null, never a made-up id");
    assert!(
        g.unread.iter().any(|u| u.path.ends_with("/device")),
        "{:?}",
        g.unread
    );
    assert_eq!(g.status, Status::Unknown);
    assert!(
        g.problems[0].detail.contains("device id"),
        "{:?}",
        g.problems
    );
    assert_eq!(g.model, "AMD GPU (device id unread)");
    // Everything else still read.
    assert_eq!(g.memory_bytes, Some(21458059264));
    assert_eq!(g.driver.as_deref(), Some("amdgpu"));
    // `check` says so and fails, instead of exiting 0 with nothing said.
    let out = crate::util::gpuscout(&["--root", t.path().to_str().unwrap(), "check"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(GPU0) && err.contains("unknown"),
        "stderr: {err}"
    );
    let json = crate::util::gpuscout(&[
        "--root",
        t.path().to_str().unwrap(),
        "discover",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(v["gpus"][0]["device_id"].is_null());
}

#[test]
fn revision_above_a_byte_is_malformed_not_truncated() {
    let t = tempfile::tempdir().unwrap();
    synth::amd_host(t.path(), 1);
    fs::write(dev0(t.path()).join("revision"), "0x1c1\n").unwrap();
    let g = &report_at(t.path()).gpus[0];
    assert_eq!(g.revision, None);
    assert!(g.unread.iter().any(|u| u.path.ends_with("/revision")));
}

/// KFD topology of synthetic GPU 0 as `parts` compute partitions, each claiming `simd` SIMDs
/// (one per CU) and a `bank`-byte memory bank, with `mem_info_vram_total` removed so the
/// memory size comes from the KFD sum.
fn kfd_partitions(root: &Path, parts: usize, simd: u64, bank: u64) {
    fs::remove_file(dev0(root).join("mem_info_vram_total")).unwrap();
    let nodes = root.join("sys/devices/virtual/kfd/kfd/topology/nodes");
    for i in 0..parts {
        let n = nodes.join((i + 1).to_string());
        fs::create_dir_all(n.join("mem_banks/0")).unwrap();
        // The first partition carries the render minor; the others share the location.
        let minor = if i == 0 { "drm_render_minor 128\n" } else { "" };
        fs::write(
            n.join("properties"),
            format!(
                "cpu_cores_count 0\nsimd_count {simd}\nsimd_per_cu 1\ngfx_target_version 90402\nlocation_id {}\ndomain 0\n{minor}",
                (0x10 << 8) | i
            ),
        )
        .unwrap();
        fs::write(
            n.join("mem_banks/0/properties"),
            format!("heap_type 1\nsize_in_bytes {bank}\n"),
        )
        .unwrap();
    }
}

#[test]
fn kfd_sums_that_overflow_are_null_and_unread_never_zero() {
    let t = tempfile::tempdir().unwrap();
    synth::amd_host(t.path(), 1);
    // 8 partitions of 2^61: the u64 sum is exactly 2^64, which wraps to 0 unchecked.
    kfd_partitions(t.path(), 8, 1 << 61, 1 << 61);
    let g = &report_at(t.path()).gpus[0];
    let amd = g.amd.as_ref().unwrap();
    assert_eq!(amd.partitions, Some(8));
    assert_eq!(amd.simd_count, None);
    assert_eq!(amd.cu_count, None);
    assert_eq!(g.memory_bytes, None, "not 0");
    for what in ["simd_count", "cu_count", "size_in_bytes"] {
        assert!(
            g.unread.iter().any(|u| u.error.contains(what)),
            "{what} not in {:?}",
            g.unread
        );
    }
    // Sums that fit are still reported, and a sum past u32 is not truncated.
    let t = tempfile::tempdir().unwrap();
    synth::amd_host(t.path(), 1);
    kfd_partitions(t.path(), 2, 1 << 31, 1 << 33);
    let g = &report_at(t.path()).gpus[0];
    let amd = g.amd.as_ref().unwrap();
    assert_eq!(amd.simd_count, None, "2^32 does not fit a u32 count");
    assert_eq!(g.memory_bytes, Some(1 << 34));
}

#[test]
fn nested_extensions_yaml_at_the_cap_is_refused_quickly_and_said_once() {
    let t = tempfile::tempdir().unwrap();
    synth::amd_host(t.path(), 1);
    // The deepest document that fits the 256 KiB read cap.
    let half = (256 * 1024 - "layers: ".len()) / 2;
    let yaml = format!("layers: {}{}", "[".repeat(half), "]".repeat(half));
    assert!(yaml.len() <= 256 * 1024);
    fs::write(t.path().join("etc/extensions.yaml"), yaml).unwrap();
    let r = report_at(t.path());
    let talos = r.host.talos.as_ref().unwrap();
    assert!(talos.extensions.is_empty());
    let u: Vec<_> = r
        .host
        .unread
        .iter()
        .filter(|u| u.path == "/etc/extensions.yaml")
        .collect();
    assert_eq!(u.len(), 1, "{:?}", r.host.unread);
    assert!(u[0].error.contains("nesting deeper"), "{}", u[0].error);
    // The GPUs are still judged (extensions unknown), nothing else is lost.
    assert_eq!(r.gpus.len(), 1);
}

#[test]
fn long_host_strings_are_cut_with_a_marker_in_report_and_metrics() {
    let t = tempfile::tempdir().unwrap();
    synth::amd_host(t.path(), 1);
    let huge = "V".repeat(250_000);
    fs::write(dev0(t.path()).join("vbios_version"), &huge).unwrap();
    fs::write(
        t.path().join("etc/os-release"),
        format!("NAME=\"Talos\"\nID=talos\nVERSION_ID={huge}\n"),
    )
    .unwrap();
    let r = report_at(t.path());
    let vbios = r.gpus[0]
        .amd
        .as_ref()
        .unwrap()
        .vbios_version
        .clone()
        .unwrap();
    assert!(
        vbios.len() <= gpuscout::textcap::MAX_VALUE,
        "{}",
        vbios.len()
    );
    assert!(vbios.ends_with(gpuscout::textcap::CUT_MARK));
    let version = &r.host.talos.as_ref().unwrap().version;
    assert!(version.ends_with(gpuscout::textcap::CUT_MARK));
    let json = serde_json::to_string(&r).unwrap();
    assert!(json.len() < 20_000, "report is {} bytes", json.len());
    // Metric label values are capped the same way.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let d = Served::start(t.path(), |_| {}).await;
        let (code, _, body) = http_get(d.addr, "/metrics", None).unwrap();
        assert_eq!(code, 200);
        let line = body
            .lines()
            .find(|l| l.starts_with("gpuscout_talos_info{"))
            .expect("talos info");
        assert!(line.len() < 400, "{} bytes", line.len());
        assert!(line.contains(gpuscout::textcap::CUT_MARK), "{line}");
        assert!(body.lines().all(|l| l.len() < 2_000));
        d.stop().await;
    });
}

/// An in-process `serve` on 127.0.0.1 with a short discovery interval.
struct Served {
    addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Served {
    async fn start(root: &Path, setup: impl FnOnce(&mut gpuscout::serve::Daemon)) -> Self {
        let mut d = gpuscout::serve::Daemon::new(
            gpuscout::hostroot::HostRoot::new(root).unwrap(),
            gpuscout::discover::Options::default(),
            gpuscout::serve::ServeConfig {
                discovery_interval: std::time::Duration::from_millis(200),
                exporter: gpuscout::metrics::ExporterConfig {
                    deadline: std::time::Duration::from_secs(30),
                    cache: std::time::Duration::ZERO,
                },
                grace: std::time::Duration::from_secs(5),
            },
        );
        setup(&mut d);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(d.serve(listener, async {
            let _ = rx.await;
        }));
        let me = Self {
            addr,
            stop: Some(tx),
            task,
        };
        for _ in 0..600 {
            let a = me.addr;
            let ok = tokio::task::spawn_blocking(move || {
                matches!(http_get(a, "/readyz", None), Ok((200, _, _)))
            })
            .await
            .unwrap();
            if ok {
                return me;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("serve not ready within 30 s");
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(std::time::Duration::from_secs(30), self.task).await;
    }
}
