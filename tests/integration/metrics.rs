//! Metrics collectors against fixture host roots: golden `/metrics` text (insta, volatile
//! series masked) checked by the real `promtool`, scrape coalescing, deadline and isolation of
//! failing sources, and "unreadable is absent, never 0".

#![allow(clippy::disallowed_methods)] // tests build and edit fixture trees directly

use gpuscout::discover::{self, Options};
use gpuscout::hostroot::HostRoot;
use gpuscout::metrics::{
    self, Exporter, ExporterConfig, ScrapeContext, Sink, Snapshot, Source, SourceError,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Every fixture host root: the shared ones (`tests/fixtures/hosts/*`) and the metrics ones.
pub fn fixture_roots() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for group in ["hosts", "metrics"] {
        let Ok(rd) = std::fs::read_dir(fixtures_dir().join(group)) else {
            continue;
        };
        for e in rd.flatten() {
            if e.path().join("sys").is_dir() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

fn exporter(root: &Path, sources: Vec<Arc<dyn Source>>, config: ExporterConfig) -> Exporter {
    let host = HostRoot::new(root).unwrap();
    let report = discover::discover(&host, &Options::default(), &Default::default());
    let (_tx, rx) = watch::channel(Arc::new(report));
    Exporter::new(host, rx, sources, config)
}

async fn scrape(e: &Exporter) -> Arc<Snapshot> {
    e.scrape().await.expect("pass completed")
}

/// The exposition with volatile values masked (durations, build version).
fn masked(text: &str) -> String {
    text.lines()
        .map(|l| {
            if l.starts_with("gpuscout_scrape_source_duration_seconds{") {
                let (k, _) = l.rsplit_once(' ').unwrap();
                format!("{k} [duration]")
            } else if l.starts_with("gpuscout_build_info{") {
                "gpuscout_build_info{version=\"[version]\"} 1.0".to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Run the real `promtool check metrics` on an exposition; fail with its output.
pub fn promtool_check(text: &str, what: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool not runnable ({e}); install Debian package `prometheus`")
        });
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed for {what}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn value(snap: &Snapshot, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    snap.sink
        .samples(name)
        .iter()
        .find(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|s| s.value)
}

#[tokio::test]
async fn golden_metrics_per_fixture_and_promtool_clean() {
    let roots = fixture_roots();
    assert!(!roots.is_empty(), "no fixture host roots found");
    for root in roots {
        let name = root.file_name().unwrap().to_string_lossy().into_owned();
        let e = exporter(&root, metrics::default_sources(), ExporterConfig::default());
        let snap = scrape(&e).await;
        let text = snap.text();
        promtool_check(&text, &name);
        let om = metrics::exposition(&snap, None, true);
        let om = om.as_str();
        assert!(
            om.ends_with("# EOF\n") && om.matches("# EOF").count() == 1,
            "{name}: OpenMetrics must end with one # EOF"
        );
        let mut settings = insta::Settings::clone_current();
        settings.set_snapshot_suffix(name.clone());
        settings.set_prepend_module_to_snapshot(false);
        settings.bind(|| insta::assert_snapshot!("metrics", masked(&text)));
    }
}

/// The kernel prints `current_link_width 0` and `max_link_width 255` where a GPU has no link
/// registers (an integrated GPU, an SR-IOV VF): both mean "unknown", so the report says `null`
/// and no width series is exported, while the pci source still succeeds.
#[tokio::test]
async fn unknown_pcie_width_is_absent_in_report_and_metrics() {
    for (fixture, gpu) in [
        ("meteorlake-nuc-talos-i915", "0000:00:02.0"),
        ("sriov-flex170", "0000:4d:00.1"),
    ] {
        let root = fixtures_dir().join("hosts").join(fixture);
        let report = discover::discover(
            &HostRoot::new(&root).unwrap(),
            &Options::default(),
            &Default::default(),
        );
        let g = report
            .gpus
            .iter()
            .find(|g| g.pci_address == gpu)
            .unwrap_or_else(|| panic!("{fixture}: no {gpu}"));
        assert_eq!(
            (g.pcie.current_width, g.pcie.max_width),
            (None, None),
            "{fixture} {gpu}: an unknown width is absent, not 0 or 255"
        );
        assert!(
            !g.unread.iter().any(|u| u.path.contains("link_width")),
            "{fixture}: the kernel's 'unknown' is not a read failure: {:?}",
            g.unread
        );
        let e = exporter(&root, metrics::default_sources(), ExporterConfig::default());
        let s = scrape(&e).await;
        for state in ["current", "max"] {
            assert_eq!(
                value(&s, "gpu_pcie_link_width", &[("gpu", gpu), ("state", state)]),
                None,
                "{fixture} {gpu} {state}"
            );
        }
        assert_eq!(
            value(&s, "scrape_source_success", &[("source", "pci")]),
            Some(1.0),
            "{fixture}"
        );
    }
}

#[tokio::test]
async fn amd_values_are_read_in_base_units() {
    let root = fixtures_dir().join("metrics/amd-rx7900xtx-talos");
    let e = exporter(&root, metrics::default_sources(), ExporterConfig::default());
    let s = scrape(&e).await;
    let gpu = ("gpu", "0000:03:00.0");
    let v = |n, l: &[(&str, &str)]| value(&s, n, l);
    assert_eq!(
        v("gpu_temperature_celsius", &[gpu, ("sensor", "junction")]),
        Some(42.0)
    );
    assert_eq!(v("gpu_power_watts", &[gpu]), Some(61.0));
    assert_eq!(v("gpu_power_limit_watts", &[gpu]), Some(327.0));
    assert_eq!(v("gpu_utilization_ratio", &[gpu]), Some(0.37));
    assert_eq!(
        v("gpu_clock_hertz", &[gpu, ("domain", "sclk")]),
        Some(1.2e9)
    );
    // No freq2 in hwmon: mclk comes from the `*` line of pp_dpm_mclk.
    assert_eq!(
        v("gpu_clock_hertz", &[gpu, ("domain", "mclk")]),
        Some(1.249e9)
    );
    assert_eq!(
        v("gpu_memory_used_bytes", &[gpu, ("pool", "gtt")]),
        Some(144560128.0)
    );
    assert_eq!(
        v(
            "gpu_pcie_link_transfers_per_second",
            &[gpu, ("state", "current")]
        ),
        Some(16e9)
    );
    assert_eq!(v("talos_extension_info", &[("name", "amdgpu")]), Some(1.0));
    assert_eq!(v("gpu_driver_status", &[gpu, ("status", "ok")]), Some(1.0));
    assert_eq!(
        v("gpu_driver_status", &[gpu, ("status", "unknown")]),
        Some(0.0)
    );
}

#[tokio::test]
async fn intel_clocks_energy_and_limits() {
    let i915 = fixtures_dir().join("metrics/intel-arc-a770-i915");
    let s = scrape(&exporter(
        &i915,
        metrics::default_sources(),
        Default::default(),
    ))
    .await;
    let gpu = ("gpu", "0000:03:00.0");
    assert_eq!(
        value(&s, "gpu_clock_hertz", &[gpu, ("domain", "gt0")]),
        Some(1.95e9)
    );
    assert_eq!(value(&s, "gpu_energy_joules", &[gpu]), Some(1234.56789));
    assert_eq!(value(&s, "gpu_power_limit_watts", &[gpu]), Some(190.0));
    let xe = fixtures_dir().join("metrics/intel-b580-xe");
    let s = scrape(&exporter(
        &xe,
        metrics::default_sources(),
        Default::default(),
    ))
    .await;
    assert_eq!(
        value(&s, "gpu_clock_hertz", &[gpu, ("domain", "gt0")]),
        Some(2.85e9)
    );
    // act_freq 0 is a real reading (media GT idle), not a missing value.
    assert_eq!(
        value(&s, "gpu_clock_hertz", &[gpu, ("domain", "gt1")]),
        Some(0.0)
    );
    assert_eq!(value(&s, "gpu_energy_joules", &[gpu]), Some(987.654321));
    assert_eq!(
        value(&s, "gpu_temperature_celsius", &[gpu, ("sensor", "vram")]),
        Some(52.0)
    );
}

/// Copy a fixture into a temp dir so a test can break files in it.
fn scratch_copy(name: &str) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let st = Command::new("cp")
        .arg("-a")
        .arg(fixtures_dir().join("metrics").join(name).join("."))
        .arg(t.path())
        .status()
        .unwrap();
    assert!(st.success());
    t
}

#[tokio::test]
async fn unreadable_values_are_absent_never_zero() {
    let t = scratch_copy("amd-rx7900xtx-talos");
    let dev = t
        .path()
        .join("sys/devices/pci0000:00/0000:00:01.1/0000:03:00.0");
    let host = HostRoot::new(t.path()).unwrap();
    let report = discover::discover(&host, &Options::default(), &Default::default());
    // Break files after discovery, as a live driver would between scrapes.
    std::fs::remove_file(dev.join("hwmon/hwmon3/fan1_input")).unwrap();
    std::fs::write(dev.join("hwmon/hwmon3/power1_average"), "garbage\n").unwrap();
    std::fs::remove_file(dev.join("gpu_busy_percent")).unwrap();
    let (_tx, rx) = watch::channel(Arc::new(report));
    let e = Exporter::new(host, rx, metrics::default_sources(), Default::default());
    let s = scrape(&e).await;
    let gpu = ("gpu", "0000:03:00.0");
    assert_eq!(value(&s, "gpu_fan_speed_rpm", &[gpu]), None);
    assert_eq!(value(&s, "gpu_power_watts", &[gpu]), None);
    assert_eq!(value(&s, "gpu_utilization_ratio", &[gpu]), None);
    // Still there: everything else of the same source.
    assert_eq!(
        value(&s, "gpu_temperature_celsius", &[gpu, ("sensor", "edge")]),
        Some(39.0)
    );
    // A malformed file is a failure of the source; a missing one is not.
    assert_eq!(
        value(&s, "scrape_source_success", &[("source", "amdgpu")]),
        Some(0.0)
    );
    assert_eq!(
        value(&s, "scrape_source_success", &[("source", "pci")]),
        Some(1.0)
    );
}

/// Kept-open descriptors (the sysfs path, forced on for fixtures) give the same exposition as
/// opening every file on every scrape, on every fixture, on the first scrape (descriptors
/// opened) and on the next (descriptors re-read with `pread`).
#[tokio::test]
async fn kept_open_descriptors_read_the_same_values_as_reopening() {
    for root in fixture_roots() {
        let name = root.file_name().unwrap().to_string_lossy().into_owned();
        let cfg = ExporterConfig {
            cache: Duration::ZERO,
            ..ExporterConfig::default()
        };
        let plain = HostRoot::new(&root).unwrap().with_keep_open(false);
        let report = Arc::new(discover::discover(
            &plain,
            &Options::default(),
            &Default::default(),
        ));
        let (_tx, rx) = watch::channel(report.clone());
        let reopening = Exporter::new(plain, rx.clone(), metrics::default_sources(), cfg.clone());
        let keeping = HostRoot::new(&root).unwrap().with_keep_open(true);
        let kept = Exporter::new(keeping, rx, metrics::default_sources(), cfg);
        let want = masked(&scrape(&reopening).await.text());
        for pass in ["opened", "re-read"] {
            let got = masked(&scrape(&kept).await.text());
            assert_eq!(got, want, "{name}: {pass}");
        }
    }
}

/// With kept descriptors, a file removed from a tree that is not sysfs stays readable through
/// its descriptor (which is why only sysfs roots keep them by default); a new discovery report
/// opens everything again, and then the removed file is absent, never 0, and not an error.
#[tokio::test]
async fn kept_descriptors_are_opened_again_for_a_new_report() {
    let t = scratch_copy("amd-rx7900xtx-talos");
    let dev = t
        .path()
        .join("sys/devices/pci0000:00/0000:00:01.1/0000:03:00.0");
    let host = HostRoot::new(t.path()).unwrap().with_keep_open(true);
    let (tx, rx) = watch::channel(Arc::new(discover::discover(
        &host,
        &Options::default(),
        &Default::default(),
    )));
    let cfg = ExporterConfig {
        cache: Duration::ZERO,
        ..ExporterConfig::default()
    };
    let e = Exporter::new(host.clone(), rx, metrics::default_sources(), cfg);
    let gpu = ("gpu", "0000:03:00.0");
    let s = scrape(&e).await;
    assert_eq!(value(&s, "gpu_fan_speed_rpm", &[gpu]), Some(1187.0));
    std::fs::remove_file(dev.join("hwmon/hwmon3/fan1_input")).unwrap();
    std::fs::remove_file(dev.join("gpu_busy_percent")).unwrap();
    tx.send_replace(Arc::new(discover::discover(
        &host,
        &Options::default(),
        &Default::default(),
    )));
    let s = scrape(&e).await;
    assert_eq!(value(&s, "gpu_fan_speed_rpm", &[gpu]), None);
    assert_eq!(value(&s, "gpu_utilization_ratio", &[gpu]), None);
    assert_eq!(
        value(&s, "gpu_temperature_celsius", &[gpu, ("sensor", "edge")]),
        Some(39.0)
    );
    assert_eq!(
        value(&s, "scrape_source_success", &[("source", "amdgpu")]),
        Some(1.0)
    );
}

/// A source that counts its calls and can be held until the test releases it.
pub struct Gate {
    pub calls: AtomicUsize,
    entered: Mutex<Option<std::sync::mpsc::Sender<()>>>,
    release: Mutex<std::sync::mpsc::Receiver<()>>,
}

impl Gate {
    pub fn new() -> (
        Arc<Self>,
        std::sync::mpsc::Receiver<()>,
        std::sync::mpsc::Sender<()>,
    ) {
        let (etx, erx) = std::sync::mpsc::channel();
        let (rtx, rrx) = std::sync::mpsc::channel();
        let g = Arc::new(Self {
            calls: AtomicUsize::new(0),
            entered: Mutex::new(Some(etx)),
            release: Mutex::new(rrx),
        });
        (g, erx, rtx)
    }
}

impl Source for Gate {
    fn name(&self) -> &'static str {
        "gate"
    }
    fn collect(&self, _: &ScrapeContext, _: &mut Sink) -> Result<(), SourceError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if let Some(tx) = self.entered.lock().unwrap().as_ref() {
            let _ = tx.send(());
        }
        let _ = self.release.lock().unwrap().recv();
        Ok(())
    }
}

/// A [`Gate`] that claims to share the pass's blocking thread (as the sysfs sources do).
struct SharedGate(Arc<Gate>);

impl Source for SharedGate {
    fn name(&self) -> &'static str {
        "gate"
    }
    fn collect(&self, ctx: &ScrapeContext, out: &mut Sink) -> Result<(), SourceError> {
        self.0.collect(ctx, out)
    }
    fn shares_thread(&self) -> bool {
        true
    }
}

/// The sysfs sources share one blocking thread per pass. One of them hanging there (held in a
/// gate, first in line) must not hold back the sources queued behind it: they are moved to
/// threads of their own and served; the hung one is reported failed at the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_hung_on_the_shared_thread_does_not_hold_back_the_others() {
    let root = fixtures_dir().join("metrics/amd-rx7900xtx-talos");
    let (gate, _entered, release) = Gate::new();
    let mut sources: Vec<Arc<dyn Source>> = vec![Arc::new(SharedGate(gate.clone()))];
    sources.extend(metrics::default_sources());
    let e = exporter(
        &root,
        sources,
        ExporterConfig {
            deadline: Duration::from_millis(800),
            cache: Duration::ZERO,
        },
    );
    let s = scrape(&e).await;
    let ok = |s: &Snapshot, src| value(s, "scrape_source_success", &[("source", src)]);
    assert_eq!(ok(&s, "gate"), Some(0.0), "held past the deadline");
    for src in ["pci", "amdgpu", "talos"] {
        assert_eq!(ok(&s, src), Some(1.0), "{src} served despite the hung one");
    }
    assert_eq!(
        value(&s, "gpu_temperature_celsius", &[("sensor", "edge")]),
        Some(39.0)
    );
    // Still held: the next pass finds it busy and serves the rest.
    let s2 = scrape(&e).await;
    assert_eq!(ok(&s2, "gate"), Some(0.0));
    assert_eq!(ok(&s2, "amdgpu"), Some(1.0));
    release.send(()).unwrap();
    assert_eq!(gate.calls.load(Ordering::SeqCst), 1);
}

/// Counts the calls of a real source.
struct Counting(Arc<dyn Source>, AtomicUsize);

impl Source for Counting {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn collect(&self, ctx: &ScrapeContext, out: &mut Sink) -> Result<(), SourceError> {
        self.1.fetch_add(1, Ordering::SeqCst);
        self.0.collect(ctx, out)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_scrapes_share_one_sysfs_pass() {
    let root = fixtures_dir().join("metrics/amd-rx7900xtx-talos");
    let (gate, entered, release) = Gate::new();
    let amd = Arc::new(Counting(
        Arc::new(metrics::amdgpu::Amdgpu::default()),
        AtomicUsize::new(0),
    ));
    let e = exporter(
        &root,
        vec![amd.clone(), gate.clone()],
        ExporterConfig {
            deadline: Duration::from_secs(60),
            cache: Duration::from_secs(60),
        },
    );
    let first = e.scrape();
    let first = tokio::spawn(first);
    // The pass is running (held in the gate source); a second scrape now must join it.
    tokio::task::spawn_blocking(move || entered.recv().unwrap())
        .await
        .unwrap();
    let second = tokio::spawn(e.scrape());
    release.send(()).unwrap();
    let a = first.await.unwrap().unwrap();
    let b = second.await.unwrap().unwrap();
    assert!(Arc::ptr_eq(&a, &b), "both scrapes got the same snapshot");
    // A scrape right after the pass reuses it (cache).
    let c = scrape(&e).await;
    assert!(Arc::ptr_eq(&a, &c));
    assert_eq!(e.passes(), 1);
    assert_eq!(amd.1.load(Ordering::SeqCst), 1, "amdgpu sysfs read once");
    assert_eq!(gate.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cache_means_a_new_pass_per_scrape() {
    let root = fixtures_dir().join("metrics/amd-rx7900xtx-talos");
    let e = exporter(
        &root,
        metrics::default_sources(),
        ExporterConfig {
            deadline: Duration::from_secs(60),
            cache: Duration::ZERO,
        },
    );
    let a = scrape(&e).await;
    let b = scrape(&e).await;
    assert!(!Arc::ptr_eq(&a, &b));
    assert_eq!(e.passes(), 2);
}

struct Failing;
impl Source for Failing {
    fn name(&self) -> &'static str {
        "failing"
    }
    fn collect(&self, _: &ScrapeContext, out: &mut Sink) -> Result<(), SourceError> {
        out.push(&metrics::families::FAN, vec![("gpu", "x".into())], 5.0);
        Err(SourceError::Library("boom".into()))
    }
}

struct Panicking;
impl Source for Panicking {
    fn name(&self) -> &'static str {
        "panicking"
    }
    fn collect(&self, _: &ScrapeContext, _: &mut Sink) -> Result<(), SourceError> {
        panic!("test panic in a source")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_slow_and_panicking_sources_never_hide_the_others() {
    let root = fixtures_dir().join("metrics/amd-rx7900xtx-talos");
    let (gate, _entered, release) = Gate::new();
    let mut sources = metrics::default_sources();
    sources.push(Arc::new(Failing));
    sources.push(Arc::new(Panicking));
    sources.push(gate.clone());
    let e = exporter(
        &root,
        sources,
        ExporterConfig {
            deadline: Duration::from_millis(300),
            cache: Duration::ZERO,
        },
    );
    let s = scrape(&e).await;
    let ok = |src| value(&s, "scrape_source_success", &[("source", src)]);
    assert_eq!(ok("gate"), Some(0.0), "held past the deadline");
    assert_eq!(ok("failing"), Some(0.0));
    assert_eq!(ok("panicking"), Some(0.0));
    assert_eq!(ok("amdgpu"), Some(1.0));
    assert_eq!(
        value(&s, "gpu_temperature_celsius", &[("sensor", "edge")]),
        Some(39.0)
    );
    // What a failing source read before failing is still served.
    assert_eq!(value(&s, "gpu_fan_speed_rpm", &[("gpu", "x")]), Some(5.0));
    // The held source is not started again while its first call runs.
    let s2 = scrape(&e).await;
    assert_eq!(
        value(&s2, "scrape_source_success", &[("source", "gate")]),
        Some(0.0)
    );
    assert_eq!(gate.calls.load(Ordering::SeqCst), 1);
    release.send(()).unwrap();
    promtool_check(&s.text(), "failing sources");
}
