//! `gpuscout serve` end to end: HTTP endpoints, readiness, SIGTERM drain, bad listen
//! addresses, and a real Prometheus (Debian `prometheus` package) scraping the binary.

#![allow(clippy::disallowed_methods)] // tests write config files directly

use crate::metrics::{Gate, fixtures_dir};
use gpuscout::discover::Options;
use gpuscout::hostroot::HostRoot;
use gpuscout::metrics::ExporterConfig;
use gpuscout::serve::{Daemon, DaemonConfig};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_gpuscout");

/// A plain HTTP/1.0 GET: (status, content type, body).
pub fn http_get(
    addr: SocketAddr,
    path: &str,
    accept: Option<&str>,
) -> std::io::Result<(u16, String, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{accept}\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let ctype = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_default();
    Ok((status, ctype, body.to_owned()))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        // hang guard: turns a condition that never comes into a failure
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A `gpuscout serve` child on 127.0.0.1 with a kernel-chosen port (read from its JSON log).
pub struct Served {
    pub child: Child,
    pub addr: SocketAddr,
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl Served {
    pub fn start(root: &Path, extra: &[&str]) -> Self {
        Self::start_with_env(root, extra, &[])
    }

    /// [`start`](Self::start) with extra environment variables (e.g. `RUST_LOG`).
    pub fn start_with_env(root: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(BIN)
            .envs(env.iter().copied())
            .arg("--root")
            .arg(root)
            .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn gpuscout");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                    && let Some(l) = v["fields"]["listen"].as_str()
                {
                    let _ = tx.send(l.to_owned());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| {
                panic!(
                    "gpuscout did not log its listen address: {:?}",
                    logs.lock().unwrap()
                )
            })
            .parse()
            .unwrap();
        Self { child, addr, logs }
    }

    pub fn wait_ready(&self) {
        wait_until("/readyz 200", Duration::from_secs(20), || {
            matches!(http_get(self.addr, "/readyz", None), Ok((200, _, _)))
        });
    }

    fn log_has(&self, needle: &str) -> bool {
        self.logs.lock().unwrap().iter().any(|l| l.contains(needle))
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn amd_root() -> std::path::PathBuf {
    fixtures_dir().join("metrics/amd-rx7900xtx-talos")
}

#[test]
fn endpoints_answer_in_both_formats() {
    let s = Served::start(&amd_root(), &[]);
    s.wait_ready();
    let (st, _, body) = http_get(s.addr, "/healthz", None).unwrap();
    assert_eq!((st, body.as_str()), (200, "ok\n"));
    let (st, ct, body) = http_get(s.addr, "/metrics", None).unwrap();
    assert_eq!(st, 200);
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    assert!(
        body.contains("gpuscout_gpu_info{gpu=\"0000:03:00.0\",vendor=\"amd\""),
        "{body}"
    );
    assert!(!body.contains("# EOF"));
    let (st, ct, body) = http_get(
        s.addr,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    )
    .unwrap();
    assert_eq!(st, 200);
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    assert!(body.ends_with("# EOF\n"));
    assert_eq!(http_get(s.addr, "/nope", None).unwrap().0, 404);
    assert!(
        s.log_has("standalone exporter"),
        "logs once that it is standalone"
    );
}

#[test]
fn sigterm_exits_zero() {
    let mut s = Served::start(&amd_root(), &[]);
    s.wait_ready();
    let pid = libc::pid_t::try_from(s.child.id()).unwrap();
    let rc = send_signal(pid, libc::SIGTERM);
    assert_eq!(rc, 0);
    let start = Instant::now();
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        // hang guard: a process that never exits fails instead of hanging the suite
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
    wait_until("stopped log line", Duration::from_secs(5), || {
        s.log_has("stopped")
    });
}

/// Signal a child this test started, through the `kill` command (the crate denies unsafe
/// code, so no `libc::kill`).
fn send_signal(pid: libc::pid_t, sig: libc::c_int) -> i32 {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    if st.success() { 0 } else { 1 }
}

#[test]
fn bad_or_busy_listen_address_is_a_one_line_error_exit_2() {
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = busy.local_addr().unwrap().to_string();
    for listen in ["nonsense", "127.0.0.1:99999", busy.as_str()] {
        let out = Command::new(BIN)
            .arg("--root")
            .arg(amd_root())
            .args(["serve", "--listen", listen])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{listen}: {err}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{listen}: {err}");
        assert!(lines[0].contains("--listen"), "{err}");
    }
}

fn daemon_config() -> DaemonConfig {
    DaemonConfig {
        discovery_interval: Duration::from_secs(3600),
        exporter: ExporterConfig {
            deadline: Duration::from_secs(60),
            cache: Duration::ZERO,
        },
        grace: Duration::from_secs(30),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_waits_for_the_first_discovery() {
    let root = HostRoot::new(amd_root()).unwrap();
    let mut d = Daemon::new(root, Options::default(), daemon_config());
    let (entered_tx, entered_rx) = std::sync::mpsc::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    // The evidence is asked on the pass's thread just before the pass: hold the pass there.
    d.set_evidence(move || {
        let _ = entered_tx.send(());
        let _ = release_rx.lock().unwrap().recv();
        Default::default()
    });
    let mut reports = d.reports();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(d.serve(listener, async {
        let _ = stop_rx.await;
    }));
    let checks = tokio::task::spawn_blocking(move || {
        entered_rx.recv().unwrap();
        let ready = http_get(addr, "/readyz", None).unwrap().0;
        let metrics = http_get(addr, "/metrics", None).unwrap().0;
        let health = http_get(addr, "/healthz", None).unwrap().0;
        release_tx.send(()).unwrap();
        wait_until("/readyz 200", Duration::from_secs(20), || {
            matches!(http_get(addr, "/readyz", None), Ok((200, _, _)))
        });
        let metrics_after = http_get(addr, "/metrics", None).unwrap().0;
        (ready, metrics, health, metrics_after)
    })
    .await
    .unwrap();
    assert_eq!(checks, (503, 503, 200, 200));
    reports.changed().await.unwrap();
    assert_eq!(
        reports.borrow().gpus.len(),
        1,
        "report published on the watch channel"
    );
    stop_tx.send(()).unwrap();
    server.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting_and_finishes_the_scrape_in_flight() {
    let root = HostRoot::new(amd_root()).unwrap();
    let mut d = Daemon::new(root, Options::default(), daemon_config());
    let (gate, entered, release) = Gate::new();
    d.add_source(gate.clone());
    let mut stopping = d.shutdown_signal();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(d.serve(listener, async {
        let _ = stop_rx.await;
    }));
    tokio::task::spawn_blocking(move || {
        wait_until("/readyz 200", Duration::from_secs(20), || {
            matches!(http_get(addr, "/readyz", None), Ok((200, _, _)))
        })
    })
    .await
    .unwrap();
    let in_flight = tokio::task::spawn_blocking(move || http_get(addr, "/metrics", None));
    tokio::task::spawn_blocking(move || entered.recv().unwrap())
        .await
        .unwrap();
    stop_tx.send(()).unwrap();
    stopping.wait_for(|s| *s).await.unwrap();
    let refused = tokio::task::spawn_blocking(move || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err()
    })
    .await
    .unwrap();
    assert!(refused, "no new connections once shutdown started");
    release.send(()).unwrap();
    let (st, _, body) = in_flight.await.unwrap().unwrap();
    assert_eq!(st, 200);
    assert!(
        body.contains("gpuscout_scrape_source_success{source=\"gate\"} 1"),
        "{body}"
    );
    server.await.unwrap();
}

/// Percent-encode a PromQL query for a URL.
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

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = send_signal(self.0.id() as libc::pid_t, libc::SIGTERM);
        let _ = self.0.wait();
    }
}

#[test]
fn real_prometheus_scrapes_the_fixture_values() {
    let s = Served::start(&amd_root(), &[]);
    s.wait_ready();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             scrape_configs:\n  - job_name: gpuscout\n    static_configs: [{{targets: ['{}']}}]\n",
            s.addr
        ),
    )
    .unwrap();
    let port = free_port();
    let web = format!("127.0.0.1:{port}");
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("prometheus not runnable ({e}); install Debian package `prometheus`")
        });
    let _prom = Prometheus(child);
    let api: SocketAddr = web.parse().unwrap();
    let query = |q: &str| -> Vec<serde_json::Value> {
        let path = format!("/api/v1/query?query={}", urlencode(q));
        match http_get(api, &path, None) {
            Ok((200, _, body)) => serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["data"]["result"].as_array().cloned())
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    };
    let value = |q: &str| -> Option<String> {
        query(q)
            .first()
            .and_then(|r| r["value"][1].as_str().map(str::to_owned))
    };
    wait_until(
        "first gpuscout sample in Prometheus",
        Duration::from_secs(30),
        || value("gpuscout_gpus{vendor=\"amd\"}").is_some(),
    );
    let gpu = "gpu=\"0000:03:00.0\"";
    let expect = [
        ("gpuscout_gpus{vendor=\"amd\"}".to_owned(), "1"),
        (
            format!("gpuscout_gpu_temperature_celsius{{{gpu},sensor=\"junction\"}}"),
            "42",
        ),
        (format!("gpuscout_gpu_power_watts{{{gpu}}}"), "61"),
        (
            format!("gpuscout_gpu_memory_total_bytes{{{gpu},pool=\"vram\"}}"),
            "25753026560",
        ),
        (format!("gpuscout_gpu_utilization_ratio{{{gpu}}}"), "0.37"),
        (
            format!("gpuscout_gpu_clock_hertz{{{gpu},domain=\"mclk\"}}"),
            "1249000000",
        ),
        (
            format!("gpuscout_gpu_driver_status{{{gpu},status=\"ok\"}}"),
            "1",
        ),
        ("gpuscout_talos_info{version=\"v1.10.3\"}".to_owned(), "1"),
        (
            "gpuscout_scrape_source_success{source=\"amdgpu\"}".to_owned(),
            "1",
        ),
        ("up{job=\"gpuscout\"}".to_owned(), "1"),
    ];
    for (q, want) in &expect {
        assert_eq!(value(q).as_deref(), Some(*want), "{q}");
    }
    let info = query("gpuscout_gpu_info");
    assert_eq!(info.len(), 1);
    assert_eq!(info[0]["metric"]["driver"], "amdgpu");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_sync_metrics_in_the_daemon_registry_are_served_live() {
    let root = HostRoot::new(amd_root()).unwrap();
    let mut d = Daemon::new(root, Options::default(), daemon_config());
    let sync = gpuscout::k8s::SyncMetrics::new();
    sync.register(d.registry());
    sync.sync_result("applied");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(d.serve(listener, async {
        let _ = stop_rx.await;
    }));
    let s2 = sync.clone();
    let (text, om, again) = tokio::task::spawn_blocking(move || {
        wait_until("/readyz 200", Duration::from_secs(20), || {
            matches!(http_get(addr, "/readyz", None), Ok((200, _, _)))
        });
        let text = http_get(addr, "/metrics", None).unwrap().2;
        let om = http_get(addr, "/metrics", Some("application/openmetrics-text"))
            .unwrap()
            .2;
        s2.sync_result("applied");
        let again = http_get(addr, "/metrics", None).unwrap().2;
        (text, om, again)
    })
    .await
    .unwrap();
    assert!(
        text.contains("gpuscout_label_sync_total{result=\"applied\"} 1\n"),
        "{text}"
    );
    assert!(text.contains("gpuscout_gpu_info{"));
    crate::metrics::promtool_check(&text, "snapshot + label sync registry");
    assert!(
        om.contains("gpuscout_label_sync_total{result=\"applied\"} 1\n"),
        "{om}"
    );
    assert!(
        om.ends_with("# EOF\n") && om.matches("# EOF").count() == 1,
        "{om}"
    );
    // Encoded per request, not cached with the snapshot.
    assert!(
        again.contains("gpuscout_label_sync_total{result=\"applied\"} 2\n"),
        "{again}"
    );
    stop_tx.send(()).unwrap();
    server.await.unwrap();
}

/// `--disable-source pci,nvml`: those sources are neither read nor reported; the others are.
#[test]
fn disabled_sources_are_not_read_or_reported() {
    let s = Served::start(&amd_root(), &["--disable-source", "pci,nvml"]);
    s.wait_ready();
    let (st, _, body) = http_get(s.addr, "/metrics", None).unwrap();
    assert_eq!(st, 200);
    assert!(
        body.contains("gpuscout_scrape_source_success{source=\"amdgpu\"} 1"),
        "{body}"
    );
    for gone in [
        "source=\"pci\"",
        "source=\"nvml\"",
        "gpuscout_gpu_pcie_link_width",
    ] {
        assert!(!body.contains(gone), "{gone} still served:\n{body}");
    }
    // Without the flag the same fixture serves the PCIe series (so the check above can fail).
    let all = Served::start(&amd_root(), &[]);
    all.wait_ready();
    let (_, _, body) = http_get(all.addr, "/metrics", None).unwrap();
    assert!(body.contains("gpuscout_gpu_pcie_link_width"), "{body}");
    assert!(body.contains("source=\"nvml\""), "{body}");
    // An unknown source name is a usage error naming the valid ones.
    let out = Command::new(BIN)
        .args(["serve", "--disable-source", "dcgm"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nvidia_procfs"));
}

/// The source names `--disable-source` accepts are exactly the sources `serve` runs.
#[test]
fn disable_source_names_match_the_sources() {
    let mut names: Vec<&str> = gpuscout::metrics::default_sources()
        .iter()
        .map(|s| s.name())
        .collect();
    names.push("nvml");
    // agent/src/pods: added by `serve` unless --pod-resources / --process-metrics are false
    names.extend(["podresources", "processes"]);
    // agent/src/rocm/source.rs: added by `serve` when built with the feature
    #[cfg(feature = "rocm-smi")]
    names.push("rocm_smi");
    assert_eq!(names, gpuscout::metrics::SOURCE_NAMES);
}
