//! Fault injection: a GPU's sysfs device vanishing between and during scrapes (hot unplug) and
//! coming back; hwmon files that cannot be read (EACCES for real, as root too, by dropping
//! CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH with `setpriv`; and a directory where a file should
//! be); the NFD features file on a full filesystem (a 64 KiB tmpfs mounted in a private mount
//! namespace with `unshare -m`). Each checks: no panic, no lost data that was readable, recovery.
//!
//! Covered elsewhere, not duplicated here:
//! - API server gone for hours, then back: `k8s::api_down_for_hours_backs_off_then_recovers`
//!   (and `k8s::events_wait_for_the_api_to_come_back`);
//! - SIGTERM during a Node patch: `k8s::shutdown_during_a_hanging_write_is_bounded_and_keeps_labels`
//!   (the sync task) and `serve::sigterm_exits_zero` (the process);
//! - NVML call hanging: the NVML tests (metrics deadline marks the source failed).

#![allow(clippy::disallowed_methods)] // tests build and break host trees directly

use gpuscout::discover::Options;
use gpuscout::hostroot::HostRoot;
use gpuscout::metrics::ExporterConfig;
use gpuscout::serve::{Daemon, DaemonConfig};
use gpuscout_test_support::synth;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::serve::http_get;

const GPU0: &str = "0000:10:00.0";
const GPU1: &str = "0000:11:00.0";

/// Sysfs directory of synthetic GPU `i` (see tests/support/src/synth.rs).
fn dev_dir(root: &Path, i: usize) -> PathBuf {
    root.join(format!(
        "sys/devices/pci0000:00/0000:00:{i:02x}.0/0000:{:02x}:00.0",
        0x10 + i
    ))
}

fn config(discovery: Duration) -> DaemonConfig {
    DaemonConfig {
        discovery_interval: discovery,
        exporter: ExporterConfig {
            deadline: Duration::from_secs(30),
            cache: Duration::ZERO,
        },
        grace: Duration::from_secs(5),
    }
}

struct Running {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

async fn serve(root: &Path, discovery: Duration) -> Running {
    let d = Daemon::new(
        HostRoot::new(root).unwrap(),
        Options::default(),
        config(discovery),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(d.serve(listener, async {
        let _ = rx.await;
    }));
    let r = Running {
        addr,
        stop: Some(tx),
        task,
    };
    wait_for("/readyz 200", || {
        matches!(http_get(addr, "/readyz", None), Ok((200, _, _)))
    })
    .await;
    r
}

impl Running {
    async fn metrics(&self) -> String {
        let addr = self.addr;
        let (code, _, body) = tokio::task::spawn_blocking(move || http_get(addr, "/metrics", None))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(code, 200, "{body}");
        body
    }

    /// Stop; the server task must end by itself (a panic in it fails here).
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("server stops")
            .expect("server task did not panic");
    }
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..300 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

fn temp_line(body: &str, gpu: &str) -> Option<String> {
    body.lines()
        .find(|l| l.starts_with("gpuscout_gpu_temperature_celsius{") && l.contains(gpu))
        .map(str::to_owned)
}

fn has_gpu(body: &str, gpu: &str) -> bool {
    body.lines()
        .any(|l| l.starts_with("gpuscout_gpu_info{") && l.contains(gpu))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_unplugged_between_and_during_scrapes_then_replugged() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("host");
    synth::amd_host(&root, 2);
    // Rediscover quickly so the report follows the unplug and the replug.
    let srv = serve(&root, Duration::from_millis(100)).await;
    let body = srv.metrics().await;
    assert!(has_gpu(&body, GPU0) && has_gpu(&body, GPU1), "{body}");
    assert!(temp_line(&body, GPU1).is_some(), "{body}");

    // Between scrapes: the device directory goes; sys/bus/pci/devices/<bdf> and
    // sys/class/drm/card1 become dangling links, as after a surprise removal.
    let dev1 = dev_dir(&root, 1);
    let parked = dir.path().join("parked");
    std::fs::rename(&dev1, &parked).unwrap();
    let body = srv.metrics().await;
    assert!(
        temp_line(&body, GPU1).is_none(),
        "no reading for the gone GPU: {body}"
    );
    assert!(
        temp_line(&body, GPU0).is_some(),
        "the other GPU keeps its readings: {body}"
    );
    let addr = srv.addr;
    wait_for("discovery drops the unplugged GPU", || {
        http_get(addr, "/metrics", None).is_ok_and(|(c, _, b)| c == 200 && !has_gpu(&b, GPU1))
    })
    .await;

    // Back: rediscovered with its readings.
    std::fs::rename(&parked, &dev1).unwrap();
    wait_for("discovery finds the replugged GPU", || {
        http_get(addr, "/metrics", None)
            .is_ok_and(|(c, _, b)| c == 200 && has_gpu(&b, GPU1) && temp_line(&b, GPU1).is_some())
    })
    .await;

    // During scrapes: flap the device while scraping and rediscovering; every answer is a 200
    // that still carries GPU 0's reading.
    let flapping = Arc::new(AtomicBool::new(true));
    let flapper = {
        let (flapping, dev1, parked) = (flapping.clone(), dev1.clone(), parked.clone());
        std::thread::spawn(move || {
            let mut flips = 0u32;
            while flapping.load(Ordering::Relaxed) {
                std::fs::rename(&dev1, &parked).unwrap();
                std::thread::yield_now();
                std::fs::rename(&parked, &dev1).unwrap();
                flips += 1;
            }
            flips
        })
    };
    let scrapes = tokio::task::spawn_blocking(move || {
        let mut bad = Vec::new();
        for _ in 0..200 {
            match http_get(addr, "/metrics", None) {
                Ok((200, _, b)) if temp_line(&b, GPU0).is_some() => {}
                other => bad.push(format!("{other:?}")),
            }
        }
        bad
    })
    .await
    .unwrap();
    flapping.store(false, Ordering::Relaxed);
    let flips = flapper.join().unwrap();
    assert!(flips > 0);
    assert!(
        scrapes.is_empty(),
        "{} bad answers: {:?}",
        scrapes.len(),
        scrapes.first()
    );
    // Settled with the device present: both GPUs, with readings.
    wait_for("both GPUs after the flapping", || {
        http_get(addr, "/metrics", None).is_ok_and(|(c, _, b)| {
            c == 200 && temp_line(&b, GPU0).is_some() && temp_line(&b, GPU1).is_some()
        })
    })
    .await;
    srv.stop().await;
}

/// The hwmon temperature file replaced by a directory (read → EISDIR): the reading is absent,
/// never 0, the source reports the failure, other readings stay; restored, it comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_hwmon_file_is_absent_not_zero_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("host");
    synth::amd_host(&root, 2);
    let srv = serve(&root, Duration::from_secs(3600)).await;
    assert!(temp_line(&srv.metrics().await, GPU1).is_some());
    let temp = dev_dir(&root, 1).join("hwmon/hwmon0/temp1_input");
    let saved = std::fs::read(&temp).unwrap();
    std::fs::remove_file(&temp).unwrap();
    std::fs::create_dir(&temp).unwrap();
    let body = srv.metrics().await;
    assert!(temp_line(&body, GPU1).is_none(), "{body}");
    assert!(temp_line(&body, GPU0).is_some(), "{body}");
    assert!(
        body.contains("gpuscout_scrape_source_success{source=\"amdgpu\"} 0"),
        "the failure is visible: {body}"
    );
    std::fs::remove_dir(&temp).unwrap();
    std::fs::write(&temp, saved).unwrap();
    let body = srv.metrics().await;
    assert!(temp_line(&body, GPU1).is_some(), "{body}");
    assert!(
        body.contains("gpuscout_scrape_source_success{source=\"amdgpu\"} 1"),
        "{body}"
    );
    srv.stop().await;
}

/// `chmod 000` on hwmon files gives a real EACCES: directly when not root, and as root by
/// running the binary under `setpriv` without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH.
#[test]
fn hwmon_permission_denied_is_absent_not_zero_and_recovers() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("host");
    synth::amd_host(&root, 2);
    let hwmon = dev_dir(&root, 1).join("hwmon/hwmon0");
    let files = ["temp1_input", "power1_average"];
    let set = |mode: u32| {
        for f in files {
            std::fs::set_permissions(hwmon.join(f), std::fs::Permissions::from_mode(mode)).unwrap();
        }
    };
    set(0o000);
    let is_root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    let mut extra: Vec<String> = Vec::new();
    if is_root {
        let setpriv = Command::new("setpriv").arg("--version").output();
        assert!(
            setpriv.is_ok_and(|o| o.status.success()),
            "this test needs setpriv (util-linux) to drop CAP_DAC_OVERRIDE as root"
        );
        extra = [
            "--inh-caps=-all",
            "--bounding-set=-dac_override,-dac_read_search",
        ]
        .map(str::to_owned)
        .to_vec();
        // Proof that the trick denies root: `cat` under the same setpriv fails.
        let cat = Command::new("setpriv")
            .args(&extra)
            .arg("cat")
            .arg(hwmon.join("temp1_input"))
            .output()
            .unwrap();
        assert!(
            !cat.status.success()
                && String::from_utf8_lossy(&cat.stderr).contains("Permission denied"),
            "setpriv did not produce EACCES: {cat:?}"
        );
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut cmd = if is_root {
        let mut c = Command::new("setpriv");
        c.args(&extra).arg(env!("CARGO_BIN_EXE_gpuscout"));
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_gpuscout"))
    };
    let child = cmd
        .arg("--root")
        .arg(&root)
        .args([
            "serve",
            "--listen",
            &addr.to_string(),
            "--scrape-cache",
            "0",
        ])
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let served = Child(child, addr);
    let start = std::time::Instant::now();
    while !matches!(http_get(addr, "/readyz", None), Ok((200, _, _))) {
        // hang guard: a server that never gets ready fails instead of hanging the suite
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "gpuscout did not get ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, _, body) = http_get(served.addr(), "/metrics", None).unwrap();
    assert_eq!(code, 200);
    assert!(temp_line(&body, GPU1).is_none(), "{body}");
    assert!(
        !body
            .lines()
            .any(|l| l.starts_with("gpuscout_gpu_power_watts{") && l.contains(GPU1)),
        "{body}"
    );
    assert!(temp_line(&body, GPU0).is_some(), "{body}");
    assert!(
        body.contains("gpuscout_scrape_source_success{source=\"amdgpu\"} 0"),
        "{body}"
    );
    set(0o444);
    let (code, _, body) = http_get(served.addr(), "/metrics", None).unwrap();
    assert_eq!(code, 200);
    assert!(temp_line(&body, GPU1).is_some(), "{body}");
    assert!(
        body.contains("gpuscout_scrape_source_success{source=\"amdgpu\"} 1"),
        "{body}"
    );
}

/// A command that runs `gpuscout` so that `chmod 000` denies it for real: as root under
/// `setpriv` without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (checked with `cat`), else as is.
fn gpuscout_without_dac_override(probe: &Path) -> Command {
    let is_root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    if !is_root {
        return Command::new(env!("CARGO_BIN_EXE_gpuscout"));
    }
    let caps = [
        "--inh-caps=-all",
        "--bounding-set=-dac_override,-dac_read_search",
    ];
    let cat = Command::new("setpriv")
        .args(caps)
        .arg("cat")
        .arg(probe)
        .output()
        .expect("this test needs setpriv (util-linux) to drop CAP_DAC_OVERRIDE as root");
    assert!(
        !cat.status.success() && String::from_utf8_lossy(&cat.stderr).contains("Permission denied"),
        "setpriv did not produce EACCES: {cat:?}"
    );
    let mut c = Command::new("setpriv");
    c.args(caps).arg(env!("CARGO_BIN_EXE_gpuscout"));
    c
}

/// Discovery and a scrape with a real EACCES (as root too): the denied values of a GPU are
/// `null` with an `unread` entry naming the file and "permission denied", and absent from the
/// metrics; the GPU itself stays. When the PCI device list itself is denied, the GPUs are
/// unknown: `check` says so and exits 1, and `gpuscout_gpus` is absent, never 0.
#[test]
fn permission_denied_discovery_is_unknown_never_zero() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("host");
    synth::amd_host(&root, 2);
    let dev = dev_dir(&root, 1);
    let denied = [
        "numa_node",
        "current_link_width",
        "mem_info_vram_total",
        "gpu_busy_percent",
        "hwmon/hwmon0/temp1_input",
    ];
    let mode =
        |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    for f in denied {
        mode(&dev.join(f), 0o000);
    }
    let run = |args: &[&str]| {
        gpuscout_without_dac_override(&dev.join("numa_node"))
            .args(args)
            .arg("--root")
            .arg(&root)
            .env("RUST_LOG", "error")
            .output()
            .unwrap()
    };

    // Discovery: GPU1 is there, its denied values are null and listed as unread.
    let out = run(&["discover", "--format", "json"]);
    assert!(out.status.success(), "{out:?}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let gpus = r["gpus"].as_array().unwrap();
    assert_eq!(gpus.len(), 2, "no GPU vanished: {r}");
    let (g0, g1) = (&gpus[0], &gpus[1]);
    assert_eq!(g1["pci_address"], GPU1);
    assert_eq!(g1["numa_node"], serde_json::Value::Null);
    assert_eq!(g1["pcie"]["current_width"], serde_json::Value::Null);
    // (memory_bytes stays known: KFD's memory bank gives it too.)
    for f in ["numa_node", "current_link_width", "mem_info_vram_total"] {
        assert!(
            g1["unread"].as_array().unwrap().iter().any(|u| {
                u["path"].as_str().unwrap().ends_with(f) && u["error"] == "permission denied"
            }),
            "{f} not listed as unread: {}",
            g1["unread"]
        );
    }
    // The other GPU is read in full.
    assert_eq!(
        (
            g0["numa_node"].as_i64(),
            g0["pcie"]["current_width"].as_i64()
        ),
        (Some(0), Some(16))
    );
    assert_eq!(g0["memory_bytes"].as_u64(), Some(21_458_059_264));

    // A scrape: GPU1's denied series are absent (not 0), the sources say they failed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let child = gpuscout_without_dac_override(&dev.join("numa_node"))
        .arg("--root")
        .arg(&root)
        .args([
            "serve",
            "--listen",
            &addr.to_string(),
            "--scrape-cache",
            "0",
            "--discovery-interval",
            "1s",
        ])
        .env("RUST_LOG", "error")
        .spawn()
        .unwrap();
    let served = Child(child, addr);
    let start = std::time::Instant::now();
    while !matches!(http_get(addr, "/readyz", None), Ok((200, _, _))) {
        // hang guard: only turns a server that never gets ready into a failure
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "gpuscout did not get ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let metrics = || {
        let (code, _, body) = http_get(served.addr(), "/metrics", None).unwrap();
        assert_eq!(code, 200);
        body
    };
    let body = metrics();
    let series = |body: &str, gpu: &str, name: &str, more: &str| {
        let head = format!("{name}{{gpu=\"{gpu}\"{more}}} ");
        body.lines().any(|l| l.starts_with(&head))
    };
    assert!(has_gpu(&body, GPU1), "the GPU stays: {body}");
    for (name, more) in [
        ("gpuscout_gpu_memory_total_bytes", ",pool=\"vram\""),
        ("gpuscout_gpu_utilization_ratio", ""),
        ("gpuscout_gpu_temperature_celsius", ",sensor=\"edge\""),
    ] {
        assert!(!series(&body, GPU1, name, more), "{name} of {GPU1}: {body}");
        assert!(series(&body, GPU0, name, more), "{name} of {GPU0}: {body}");
    }
    assert!(
        !body
            .lines()
            .any(|l| l.starts_with("gpuscout_gpu_pcie_link_width{")
                && l.contains(GPU1)
                && l.contains("current")),
        "{body}"
    );
    for source in ["amdgpu", "pci"] {
        assert!(
            body.contains(&format!(
                "gpuscout_scrape_source_success{{source=\"{source}\"}} 0"
            )),
            "{source}: {body}"
        );
    }
    assert!(body.contains("gpuscout_gpus{vendor=\"amd\"} 2"), "{body}");

    // The PCI device list itself is denied: the GPUs are unknown, not zero.
    let list = root.join("sys/bus/pci/devices");
    mode(&list, 0o000);
    let out = run(&["discover", "--format", "json"]);
    assert!(out.status.success(), "{out:?}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        r["host"]["unread"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| { u["path"] == "/sys/bus/pci/devices" && u["error"] == "permission denied" }),
        "{r}"
    );
    let out = run(&["check"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "check must not say all is well: {stderr}"
    );
    assert!(
        stderr.contains("cannot list the PCI devices (/sys/bus/pci/devices: permission denied)"),
        "{stderr}"
    );
    // The daemon's next discovery pass cannot list the GPUs either.
    let mut body = metrics();
    while has_gpu(&body, GPU0) {
        // hang guard: waits for the next discovery pass (every second)
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no new discovery pass: {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
        body = metrics();
    }
    assert!(
        !body.lines().any(|l| l.starts_with("gpuscout_gpus{")),
        "an unknown GPU count is absent, not 0: {body}"
    );
    drop(served);
    mode(&list, 0o755);
    for f in denied {
        mode(&dev.join(f), 0o644);
    }
}

/// A child process killed when dropped.
struct Child(std::process::Child, SocketAddr);

impl Child {
    fn addr(&self) -> SocketAddr {
        self.1
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs [`nfd_file_on_a_full_filesystem`] in a private mount namespace with a 64 KiB tmpfs.
#[test]
fn nfd_file_disk_full_keeps_the_old_file_counts_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount -t tmpfs -o size=64k gpuscout-full "$1" && shift && exec "$@""#)
        .arg("sh")
        .arg(&mnt)
        .arg(&exe)
        .args([
            "--exact",
            "faults::nfd_file_on_a_full_filesystem",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("GPUSCOUT_TEST_TMPFS", &mnt)
        .output()
        .expect("this test needs unshare and mount (util-linux) and root or CAP_SYS_ADMIN");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("1 passed"),
        "the inner test did not run: {text}"
    );
}

/// The inner half of [`nfd_file_disk_full_keeps_the_old_file_counts_and_recovers`]: needs
/// `GPUSCOUT_TEST_TMPFS`, a small filesystem of its own.
#[tokio::test(start_paused = true)]
#[ignore = "run by nfd_file_disk_full_keeps_the_old_file_counts_and_recovers inside unshare -m"]
async fn nfd_file_on_a_full_filesystem() {
    use gpuscout::k8s::{LabelMode, LabelSync, SyncConfig};
    use std::io::Write;
    let mnt = PathBuf::from(std::env::var_os("GPUSCOUT_TEST_TMPFS").expect("GPUSCOUT_TEST_TMPFS"));
    let path = mnt.join("gpuscout");
    let mut cfg = SyncConfig::new("node-a", "gpuscout.io");
    cfg.mode = LabelMode::NfdFile;
    cfg.nfd_file = path.clone();
    cfg.start_jitter = Duration::ZERO;
    cfg.backoff_base = Duration::from_secs(1);
    cfg.backoff_cap = Duration::from_secs(8);
    cfg.seed = Some(7);
    let mut registry = prometheus_client::registry::Registry::default();
    let sync = LabelSync::new(cfg, None, &mut registry);
    let metrics = sync.metrics();
    let report = |count: &str| {
        let mut r = crate::util::report("no-gpu");
        r.labels = [
            ("gpuscout.io/amd.count".to_owned(), count.to_owned()),
            ("gpuscout.io/present".to_owned(), "true".to_owned()),
        ]
        .into();
        Arc::new(r)
    };
    let (tx, rx) = tokio::sync::watch::channel(report("1"));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(sync.run(rx, async move {
        let _ = stop_rx.await;
    }));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let first = "gpuscout.io/amd.count=1\ngpuscout.io/present=true\n";
    assert_eq!(std::fs::read_to_string(&path).unwrap(), first);

    // Fill the filesystem to the last byte.
    let filler = mnt.join("filler");
    {
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = [0u8; 4096];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
        let _ = f.sync_all();
    }
    tx.send_replace(report("2"));
    tokio::time::sleep(Duration::from_secs(20)).await;
    let failures = metrics.sync_count("file_error");
    assert!(
        failures >= 2,
        "write failures counted and retried: {failures}"
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        first,
        "old file intact"
    );
    let names: Vec<String> = std::fs::read_dir(&mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "no temp file left behind: {names:?}");

    // Space returns: the next retry writes the new labels.
    std::fs::remove_file(&filler).unwrap();
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "gpuscout.io/amd.count=2\ngpuscout.io/present=true\n"
    );
    assert_eq!(metrics.write_count("nfd_file"), 2);
    let _ = stop_tx.send(());
    task.await.expect("sync task did not panic");
}
