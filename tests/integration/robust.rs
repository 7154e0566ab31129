//! Robustness at the edges (issue #13): one failed read never makes a GPU vanish nor strips the
//! Node's labels, parsers are bounded (nesting depth, checked sums, capped strings), and the
//! HTTP server survives idle-connection floods, slow clients and half-closes. Hostile inputs are
//! built in each test from a synthetic host root (`tests/support/src/synth.rs`); floods are bounded
//! in count and time and aimed at 127.0.0.1 only. Timing never decides a result here.

#![allow(clippy::disallowed_methods)] // tests build and break host trees directly

use crate::serve::http_get;
use crate::util::report_at;
use gpuscout::model::Status;
use gpuscout_test_support::synth;
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
fn unreadable_kfd_node_is_listed_on_the_amd_gpu_not_silently_absent() {
    let t = tempfile::tempdir().unwrap();
    synth::amd_host(t.path(), 1);
    make_unreadable(
        &t.path()
            .join("sys/devices/virtual/kfd/kfd/topology/nodes/1/properties"),
    );
    let g = &report_at(t.path()).gpus[0];
    assert_eq!(g.amd.as_ref().unwrap().gfx_target, None);
    assert!(
        g.unread
            .iter()
            .any(|u| u.path.ends_with("topology/nodes/1/properties")),
        "{:?}",
        g.unread
    );
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
            gpuscout::serve::DaemonConfig {
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

/// The next report the daemon publishes (one discovery pass), within 60 s.
async fn next_report(
    rx: &mut tokio::sync::watch::Receiver<std::sync::Arc<gpuscout::model::Report>>,
) -> std::sync::Arc<gpuscout::model::Report> {
    tokio::time::timeout(std::time::Duration::from_secs(60), rx.changed())
        .await
        .expect("a discovery pass within 60 s")
        .expect("daemon running");
    rx.borrow_and_update().clone()
}

/// Reports until `f` holds for one (at most 300 passes).
async fn report_where(
    rx: &mut tokio::sync::watch::Receiver<std::sync::Arc<gpuscout::model::Report>>,
    mut f: impl FnMut(&gpuscout::model::Report) -> bool,
) -> std::sync::Arc<gpuscout::model::Report> {
    for _ in 0..300 {
        let r = next_report(rx).await;
        if f(&r) {
            return r;
        }
    }
    panic!("no such report in 300 passes");
}

async fn metrics_of(addr: std::net::SocketAddr) -> String {
    let (code, _, body) = tokio::task::spawn_blocking(move || http_get(addr, "/metrics", None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(code, 200);
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_failures_keep_labels_and_only_an_unplug_seen_twice_removes_them() {
    let t = tempfile::tempdir().unwrap();
    synth::amd_host(t.path(), 1);
    let mut rx = None;
    let d = Served::start(t.path(), |d| {
        d.set_label_hold(std::time::Duration::from_secs(3600));
        rx = Some(d.reports());
    })
    .await;
    let mut rx = rx.unwrap();
    let good = report_where(&mut rx, |r| r.gpus.len() == 1).await;
    let want = good.labels.clone();
    assert_eq!(want["gpuscout.io/amd.count"], "1");
    assert_eq!(want["gpuscout.io/amd.ready"], "true");
    let dev = dev0(t.path());

    // `device` unreadable: the report tells the truth, the labels stay.
    make_unreadable(&dev.join("device"));
    let r = report_where(&mut rx, |r| {
        r.gpus.first().is_some_and(|g| g.device_id.is_none())
    })
    .await;
    assert_eq!(r.gpus[0].status, Status::Unknown);
    assert_eq!(r.labels, want, "a read failure must not change the labels");
    let m = metrics_of(d.addr).await;
    assert!(
        m.contains(&format!(
            "gpuscout_label_hold_seconds{{gpu=\"{GPU0}\",vendor=\"amd\"}}"
        )),
        "{}",
        m.lines()
            .filter(|l| l.contains("hold"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // `vendor` unreadable too: the device cannot be classified and leaves the report; it is
    // still listed in sys/bus/pci/devices, so its labels stay.
    make_unreadable(&dev.join("vendor"));
    let r = report_where(&mut rx, |r| r.gpus.is_empty()).await;
    assert_eq!(r.labels, want);
    let r = next_report(&mut rx).await;
    assert_eq!(r.labels, want, "held for as long as the device is listed");

    // Readable again: nothing held, no hold series.
    for f in ["vendor", "device"] {
        fs::remove_dir(dev.join(f)).unwrap();
    }
    fs::write(dev.join("vendor"), "0x1002\n").unwrap();
    fs::write(dev.join("device"), "0x744c\n").unwrap();
    let r = report_where(&mut rx, |r| {
        r.gpus.first().is_some_and(|g| g.device_id.is_some())
    })
    .await;
    assert_eq!(r.labels, want);
    let _ = next_report(&mut rx).await;
    assert!(
        !metrics_of(d.addr)
            .await
            .contains("gpuscout_label_hold_seconds{")
    );

    // Unplugged (gone from sys/bus/pci/devices): the first pass without it keeps the labels,
    // a later one removes them.
    fs::remove_file(t.path().join("sys/bus/pci/devices").join(GPU0)).unwrap();
    let first_gone = report_where(&mut rx, |r| r.gpus.is_empty()).await;
    assert_eq!(first_gone.labels, want, "one pass absent is not enough");
    let later = report_where(&mut rx, |r| !r.labels.contains_key("gpuscout.io/amd.count")).await;
    assert!(later.gpus.is_empty());
    assert!(!later.labels.contains_key("gpuscout.io/present"));
    d.stop().await;
}

fn limits(max: usize, header_ms: u64, idle_ms: u64) -> gpuscout::httpconn::Limits {
    gpuscout::httpconn::Limits {
        max_connections: max,
        header_timeout: std::time::Duration::from_millis(header_ms),
        idle_timeout: std::time::Duration::from_millis(idle_ms),
    }
}

/// The value of an unlabelled series (or one with exactly these labels) in a /metrics text.
fn metric(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Bounded in count (1,000 sockets, held at once) and aimed at 127.0.0.1 only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connection_flood_is_capped_and_probes_still_answer() {
    const FLOOD: usize = 1_000;
    const CAP: usize = 32;
    let t = tempfile::tempdir().unwrap();
    synth::amd_host(t.path(), 1);
    // Timeouts far longer than the test: only the cap and eviction are at work.
    let d = Served::start(t.path(), |d| {
        d.set_http_limits(limits(CAP, 600_000, 600_000))
    })
    .await;
    let addr = d.addr;
    let flood = tokio::task::spawn_blocking(move || {
        let mut held = Vec::with_capacity(FLOOD);
        for _ in 0..FLOOD {
            // Connects complete in the kernel's backlog whether or not the server accepts.
            if let Ok(s) = std::net::TcpStream::connect(addr) {
                held.push(s);
            }
        }
        held
    })
    .await
    .unwrap();
    assert!(flood.len() >= FLOOD / 2, "only {} connects", flood.len());
    // While the whole flood is held open: probes and scrapes are answered (accepted after the
    // flood, so every flood connection went through the gate first).
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (code, _, body) = tokio::task::spawn_blocking(move || http_get(addr, path, None))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(code, 200, "{path}: {body}");
    }
    let body = metrics_of(addr).await;
    let open = metric(&body, "gpuscout_http_connections").unwrap();
    assert!(open <= CAP as f64 + 1.0, "open {open}");
    let evicted = metric(
        &body,
        "gpuscout_http_connections_closed_total{reason=\"evicted\"}",
    )
    .unwrap();
    assert!(evicted >= (flood.len() - CAP) as f64, "evicted {evicted}");
    drop(flood);
    d.stop().await;
}

/// Connections that never finish their header cannot be evicted: at the cap new connections
/// are refused cheaply, and `/healthz` and `/readyz` are still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_with_slow_headers_new_connections_are_refused_but_probes_answer() {
    use std::io::Write;
    const CAP: usize = 8;
    let t = tempfile::tempdir().unwrap();
    synth::amd_host(t.path(), 1);
    let d = Served::start(t.path(), |d| {
        d.set_http_limits(limits(CAP, 600_000, 600_000))
    })
    .await;
    let addr = d.addr;
    let (slow, answers) = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let open_slow = || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s.set_nonblocking(true).unwrap();
            s
        };
        let mut slow: Vec<_> = (0..CAP).map(|_| open_slow()).collect();
        // Until the server has read every slow client's first bytes, one of them is still idle
        // and gets evicted for the next newcomer: replace those until a newcomer is refused.
        let mut metrics = (0, String::new());
        for _ in 0..100 {
            metrics = http_get(addr, "/metrics", None)
                .map(|(c, _, b)| (c, b))
                .unwrap_or_default();
            if metrics.0 == 503 {
                break;
            }
            for s in &mut slow {
                if matches!(s.read(&mut [0u8; 16]), Ok(0)) {
                    *s = open_slow();
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let mut answers: Vec<_> = ["/healthz", "/readyz"]
            .iter()
            .map(|p| http_get(addr, p, None).map(|(c, _, b)| (c, b)))
            .collect();
        answers.push(Ok(metrics));
        (slow, answers)
    })
    .await
    .unwrap();
    let codes: Vec<u16> = answers
        .iter()
        .map(|a| a.as_ref().map_or(0, |a| a.0))
        .collect();
    assert_eq!(codes, [200, 200, 503], "{answers:?}");
    assert!(
        answers[2]
            .as_ref()
            .unwrap()
            .1
            .contains("too many connections")
    );
    drop(slow);
    // The slow clients gave up: room again, and the refusals were counted.
    let mut body = String::new();
    for _ in 0..300 {
        if let Ok((200, _, b)) =
            tokio::task::spawn_blocking(move || http_get(addr, "/metrics", None))
                .await
                .unwrap()
        {
            body = b;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let refused = metric(&body, "gpuscout_http_connections_refused_total");
    assert!(refused.is_some_and(|r| r >= 3.0), "{refused:?}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_and_idle_keepalive_connections_are_cut() {
    use std::io::{Read, Write};
    let t = tempfile::tempdir().unwrap();
    synth::amd_host(t.path(), 1);
    let d = Served::start(t.path(), |d| d.set_http_limits(limits(16, 500, 1_000))).await;
    let addr = d.addr;
    let (slow, idle) = tokio::task::spawn_blocking(move || {
        // One header byte every 100 ms: never completes a header within 500 ms.
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_millis(100)))
            .unwrap();
        let mut cut = false;
        for b in b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: "
            .iter()
            .cycle()
            .take(600)
        {
            if s.write_all(&[*b]).is_err() {
                cut = true;
                break;
            }
            let mut buf = [0u8; 64];
            if matches!(s.read(&mut buf), Ok(0)) {
                cut = true;
                break;
            }
        }
        // A keep-alive client that got its answer and then says nothing.
        let mut k = std::net::TcpStream::connect(addr).unwrap();
        k.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        k.set_read_timeout(Some(std::time::Duration::from_secs(60)))
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        let closed = loop {
            match k.read(&mut buf) {
                Ok(0) => break true,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => break false,
            }
        };
        assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
        (cut, closed)
    })
    .await
    .unwrap();
    assert!(slow, "a 1-byte-per-100-ms header was never cut");
    assert!(idle, "an idle keep-alive connection was never closed");
    let m = metrics_of(addr).await;
    for reason in ["header_timeout", "idle_timeout"] {
        let v = metric(
            &m,
            &format!("gpuscout_http_connections_closed_total{{reason=\"{reason}\"}}"),
        );
        assert!(v.is_some_and(|v| v >= 1.0), "{reason}: {v:?}");
    }
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_half_closes_after_its_request_gets_the_response() {
    use std::io::{Read, Write};
    let t = tempfile::tempdir().unwrap();
    synth::amd_host(t.path(), 1);
    let d = Served::start(t.path(), |_| {}).await;
    let addr = d.addr;
    let answered = tokio::task::spawn_blocking(move || {
        let mut ok = 0;
        for i in 0..20 {
            let path = if i % 2 == 0 { "/metrics" } else { "/healthz" };
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
                .unwrap();
            write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
            let mut raw = Vec::new();
            let _ = s.read_to_end(&mut raw);
            let text = String::from_utf8_lossy(&raw);
            if text.starts_with("HTTP/1.1 200") && text.contains("\r\n\r\n") {
                ok += 1;
            }
        }
        ok
    })
    .await
    .unwrap();
    assert_eq!(answered, 20, "half-closed clients answered");
    d.stop().await;
}

/// During an API outage the agent says so once, and kube's client does not add an ERROR line
/// per reconnect attempt (it logs one for every failed request unless quieted).
#[test]
fn api_outage_is_logged_once_not_once_per_reconnect() {
    let t = tempfile::tempdir().unwrap();
    synth::amd_host(t.path(), 1);
    // A port nothing listens on: every request is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let kubeconfig = t.path().join("kubeconfig");
    fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:{port}\nusers:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\n"
        ),
    )
    .unwrap();
    let s = crate::serve::Served::start(
        t.path(),
        &[
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--node-name",
            "gpu-node-1",
        ],
    );
    s.wait_ready();
    // Wait (bounded) for several failed attempts: 1 s, 2 s, 4 s … of backoff.
    let mut attempts = 0.0;
    for _ in 0..600 {
        if let Ok((200, _, body)) = http_get(s.addr, "/metrics", None) {
            attempts =
                metric(&body, "gpuscout_label_sync_total{result=\"unreachable\"}").unwrap_or(0.0);
            if attempts >= 3.0 {
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(attempts >= 3.0, "only {attempts} attempts seen");
    let logs = s.logs.lock().unwrap().clone();
    let kube_lines: Vec<_> = logs.iter().filter(|l| l.contains("kube_client")).collect();
    assert!(kube_lines.is_empty(), "{kube_lines:#?}");
    let ours = logs
        .iter()
        .filter(|l| l.contains("label sync failed"))
        .count();
    assert_eq!(ours, 1, "{logs:#?}");
}
