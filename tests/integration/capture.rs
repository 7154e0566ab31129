//! `gpuscout capture`: the archive of every fixture, unpacked by the real GNU `tar --zstd`,
//! gives the same report (and the same `/metrics`) as the fixture itself; ids are replaced by
//! stable fakes that leave no original behind; nothing off the agent's read list gets in; the
//! NVML readings replay through the NVML test double.

#![allow(clippy::disallowed_methods)] // tests build fixture copies and read archives directly

use gpuscout::capture::{self, CaptureOptions, Manifest, SIDE_DIR, sanitise::Sanitiser};
use gpuscout::discover::{self, Evidence, Options};
use gpuscout::hostroot::HostRoot;
use gpuscout::metrics::{self, Exporter, ExporterConfig};
use gpuscout::nvml::{Nvml, NvmlConfig};
use gpuscout::render::{self, Format};
use gpuscout_test_support::nvml_double::{Double, full_gpu};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Every fixture host root under tests/fixtures: hosts, verdicts and metrics.
fn fixture_roots() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for group in ["hosts", "verdicts", "metrics"] {
        for e in std::fs::read_dir(fixtures().join(group)).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() && e.file_name() != "__pycache__" {
                out.push(e.path());
            }
        }
    }
    out.sort();
    assert!(out.len() >= 40, "fixture roots not found: {out:?}");
    out
}

/// NVML settings that never find a real library on the test machine.
fn nvml_config(root: &HostRoot, lib: Option<&Path>) -> NvmlConfig {
    let mut c = NvmlConfig::new(root.clone());
    c.lib_path = Some(
        lib.map(Path::to_owned)
            .unwrap_or_else(|| PathBuf::from("/nonexistent/gpuscout-test/libnvidia-ml.so.1")),
    );
    c.call_timeout = Duration::from_secs(2);
    c.quiet = true;
    c
}

/// Capture `dir` into memory.
fn capture_of(dir: &Path, san: Option<Sanitiser>, lib: Option<&Path>) -> (Vec<u8>, Manifest) {
    let root = HostRoot::new(dir).unwrap();
    let opts = CaptureOptions {
        discover: Options::default(),
        nvml: nvml_config(&root, lib),
        sanitiser: san,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(capture::capture(&root, opts, Vec::new()))
        .unwrap_or_else(|e| panic!("capture of {}: {e}", dir.display()))
}

/// Unpack with the real GNU tar, as a bug reporter's reader would.
fn unpack(bytes: &[u8]) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let mut child = Command::new("tar")
        .args(["--zstd", "-xf", "-", "-C"])
        .arg(t.path())
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("GNU tar (with zstd) is needed: apt-get install tar zstd");
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "tar --zstd -x: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t
}

/// Every entry of an archive: path, type, link target, content.
fn entries(bytes: &[u8]) -> Vec<(String, tar::EntryType, Option<String>, Vec<u8>)> {
    let mut ar = tar::Archive::new(zstd::Decoder::new(bytes).unwrap());
    ar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let kind = e.header().entry_type();
            let link = e
                .link_name()
                .unwrap()
                .map(|l| l.to_string_lossy().into_owned());
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            (path, kind, link, data)
        })
        .collect()
}

/// The whole uncompressed tar stream (every header, name, link target and content).
fn raw(bytes: &[u8]) -> String {
    let mut out = Vec::new();
    zstd::Decoder::new(bytes)
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn side(bytes: &[u8], name: &str) -> String {
    let want = format!("{SIDE_DIR}/{name}");
    let e = entries(bytes);
    let (_, _, _, data) = e
        .iter()
        .find(|e| e.0 == want)
        .unwrap_or_else(|| panic!("{want} not in the archive"));
    String::from_utf8(data.clone()).unwrap()
}

/// The report as `discover --format json` prints it, without the time it was made.
fn report_json(dir: &Path) -> String {
    let mut r = discover::discover(
        &HostRoot::new(dir).unwrap(),
        &Options::default(),
        &Default::default(),
    );
    r.generated_at = None;
    render::render(&r, Format::Json).unwrap()
}

/// `discover --format json` output without its `generated_at` line.
fn untimed(json: &str) -> String {
    json.lines()
        .filter(|l| !l.trim_start().starts_with("\"generated_at\":"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// One scrape of every built-in source, durations masked.
async fn metrics_text(dir: &Path) -> String {
    let root = HostRoot::new(dir).unwrap();
    let report = discover::discover(&root, &Options::default(), &Default::default());
    let (_tx, rx) = watch::channel(Arc::new(report));
    let e = Exporter::new(
        root,
        rx,
        metrics::default_sources(),
        ExporterConfig::default(),
    );
    let text = e.scrape().await.expect("pass").text().to_string();
    text.lines()
        .filter(|l| !l.starts_with("gpuscout_scrape_source_duration_seconds{"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `cp -a`: a fixture copy with its symlinks as they are.
fn copy_fixture(name: &str) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let st = Command::new("cp")
        .arg("-a")
        .arg(fixtures().join("hosts").join(name).join("."))
        .arg(t.path())
        .status()
        .unwrap();
    assert!(st.success());
    t
}

#[test]
fn unpacked_capture_of_every_fixture_gives_the_same_report_and_metrics() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let key = Sanitiser::with_key("round-trip");
    for dir in fixture_roots() {
        let name = dir.strip_prefix(fixtures()).unwrap().display().to_string();
        let original = report_json(&dir);

        // --keep-ids: byte-identical.
        let (bytes, m) = capture_of(&dir, None, None);
        assert_eq!(
            m.outside_read_list, 0,
            "{name}: the agent read outside its table"
        );
        let kept = unpack(&bytes);
        assert_eq!(
            report_json(kept.path()),
            original,
            "{name}: report differs on the unpacked --keep-ids capture"
        );
        assert_eq!(
            rt.block_on(metrics_text(kept.path())),
            rt.block_on(metrics_text(&dir)),
            "{name}: /metrics differs on the unpacked capture"
        );

        // Sanitised: the same report with every id replaced the way the sanitiser does.
        let (bytes, _) = capture_of(&dir, Some(key.clone()), None);
        let sanitised = unpack(&bytes);
        assert_eq!(
            report_json(sanitised.path()),
            key.text(&original),
            "{name}: report differs on the unpacked sanitised capture"
        );
    }
}

#[test]
fn the_cli_writes_the_archive_and_discover_reads_it_back() {
    let dir = fixtures().join("hosts/rtx4090-proprietary");
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("host.tar.zst");
    let run = |extra: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_gpuscout"))
            .args([
                "--root",
                dir.to_str().unwrap(),
                "--nvml-lib",
                "/nonexistent/libnvidia-ml.so.1",
            ])
            .args(["capture", "-o", file.to_str().unwrap()])
            .args(extra)
            .env_remove("GPUSCOUT_ROOT")
            .env_remove("GPUSCOUT_CAPTURE_ID_KEY")
            .env_remove("GPUSCOUT_CAPTURE_KEEP_IDS")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let discover = |root: &Path| {
        let o = Command::new(env!("CARGO_BIN_EXE_gpuscout"))
            .args([
                "--root",
                root.to_str().unwrap(),
                "discover",
                "--format",
                "json",
            ])
            .env_remove("GPUSCOUT_ROOT")
            .output()
            .unwrap();
        assert!(o.status.success());
        untimed(&String::from_utf8(o.stdout).unwrap())
    };
    let summary = run(&["--keep-ids"]);
    assert!(summary.contains("ids kept"), "{summary}");
    assert!(!out.path().join("host.tar.zst.partial").exists());
    let t = unpack(&std::fs::read(&file).unwrap());
    assert_eq!(
        discover(t.path()),
        discover(&dir),
        "--keep-ids: byte-identical (but for generated_at)"
    );

    let summary = run(&[]);
    assert!(summary.contains("ids sanitised"), "{summary}");
    let t = unpack(&std::fs::read(&file).unwrap());
    let (orig, capt) = (discover(&dir), discover(t.path()));
    let uuid = "GPU-5b2c7e0a-3f41-9d86-1c2e-7a4f0b9d3e61";
    assert!(orig.contains(uuid) && !capt.contains(uuid));
    let fake = capt
        .lines()
        .find(|l| l.contains("\"uuid\""))
        .and_then(|l| l.split('"').nth(3))
        .unwrap()
        .to_owned();
    assert_eq!(capt, orig.replace(uuid, &fake), "only the uuid differs");

    // A root that is not a directory: exit 2, nothing written.
    std::fs::remove_file(&file).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_gpuscout"))
        .args([
            "--root",
            "/nonexistent/root",
            "capture",
            "-o",
            file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(!file.exists());
}

#[test]
fn sanitised_ids_are_stable_fakes_and_no_original_is_left() {
    let uuid = "GPU-5b2c7e0a-3f41-9d86-1c2e-7a4f0b9d3e61";
    let t = copy_fixture("rtx4090-proprietary");
    // AMD-style serial files in the GPU's device directory and a DMI board serial (not on the
    // read list at all).
    let dev = std::fs::canonicalize(t.path().join("sys/bus/pci/devices/0000:01:00.0")).unwrap();
    std::fs::write(dev.join("serial_number"), "0x7e57c0ffee5e41a1\n").unwrap();
    std::fs::write(dev.join("unique_id"), "c0ffee5e41a1d00d\n").unwrap();
    std::fs::create_dir_all(t.path().join("sys/class/dmi/id")).unwrap();
    std::fs::write(
        t.path().join("sys/class/dmi/id/board_serial"),
        "PM1ZK0SECRET7\n",
    )
    .unwrap();
    let d = Double::new(&full_gpu(
        0,
        "00000000:01:00.0",
        "NVIDIA GeForce RTX 4090",
        uuid,
    ));

    let key = Sanitiser::with_key("k");
    let fake = key.fake(uuid);
    assert_ne!(fake, uuid);
    let (bytes, m) = capture_of(t.path(), Some(key.clone()), Some(&d.lib));
    assert_eq!(m.ids, "sanitised");
    assert_eq!(m.nvml, "ready");
    let all = raw(&bytes);
    for original in [
        uuid,
        &uuid[4..],
        "7e57c0ffee5e41a1",
        "c0ffee5e41a1d00d",
        "PM1ZK0SECRET7",
    ] {
        assert!(!all.contains(original), "{original} is in the archive");
    }
    // The same fake everywhere the id was: procfs, NVML's readings, the report, /metrics.
    let e = entries(&bytes);
    let info = e
        .iter()
        .find(|e| e.0 == "proc/driver/nvidia/gpus/0000:01:00.0/information")
        .unwrap();
    let info = String::from_utf8_lossy(&info.3);
    assert!(info.contains(&format!(" {fake}\n")), "{info}");
    for f in [
        "nvml.json",
        "nvml_double.conf",
        "report.json",
        "metrics.txt",
    ] {
        assert!(side(&bytes, f).contains(&fake), "{f} lacks the fake uuid");
    }
    // The agent does not read them, nor list the device directory of a GPU without SR-IOV:
    // the serial files are not in the archive at all.
    assert!(
        !e.iter()
            .any(|x| x.0.ends_with("serial_number") || x.0.ends_with("unique_id"))
    );

    // Stable: a second capture with the key gives the same fake; another key another one.
    let (again, _) = capture_of(t.path(), Some(Sanitiser::with_key("k")), Some(&d.lib));
    assert!(raw(&again).contains(&fake));
    let (other, _) = capture_of(t.path(), Some(Sanitiser::with_key("k2")), Some(&d.lib));
    assert!(!raw(&other).contains(&fake) && !raw(&other).contains(uuid));
    // --keep-ids keeps them.
    let (kept, m) = capture_of(t.path(), None, Some(&d.lib));
    assert_eq!(m.ids, "kept");
    assert!(raw(&kept).contains(uuid));
}

#[test]
fn nothing_off_the_read_list_enters_the_archive() {
    const SECRET: &str = "TOPSECRET-7f3a9c";
    let t = copy_fixture("dual-vendor");
    let p = t.path();
    for (f, body) in [
        ("etc/shadow", format!("root:{SECRET}:19000:0:99999:7:::\n")),
        ("etc/kubernetes/kubelet.conf", format!("token: {SECRET}\n")),
        (
            "var/lib/kubelet/pki/kubelet-client-current.pem",
            format!("{SECRET}\n"),
        ),
        ("root/.ssh/id_ed25519", format!("{SECRET}\n")),
        (
            "proc/cmdline",
            format!("talos.config=https://x/?token={SECRET}\n"),
        ),
    ] {
        std::fs::create_dir_all(p.join(f).parent().unwrap()).unwrap();
        std::fs::write(p.join(f), body).unwrap();
    }
    // os-release now points at the shadow file: the agent follows the link and reads it.
    std::fs::remove_file(p.join("etc/os-release")).ok();
    std::os::unix::fs::symlink("/etc/shadow", p.join("etc/os-release")).unwrap();
    // A link planted in a directory the agent lists.
    let dev = std::fs::canonicalize(p.join("sys/bus/pci/devices/0000:01:00.0")).unwrap();
    std::os::unix::fs::symlink("/etc/kubernetes/kubelet.conf", dev.join("evil")).unwrap();

    let (bytes, m) = capture_of(p, None, None);
    assert!(
        m.outside_read_list >= 1,
        "the followed link target is outside: {m:?}"
    );
    assert!(
        !raw(&bytes).contains(SECRET),
        "a secret entered the archive"
    );
    for (path, kind, _, _) in entries(&bytes) {
        if path.starts_with(&format!("{SIDE_DIR}/")) {
            continue;
        }
        let host = format!("/{}", path.trim_end_matches('/'));
        for bad in [
            "/etc/shadow",
            "/etc/kubernetes",
            "/var",
            "/root",
            "/proc/cmdline",
        ] {
            assert!(!host.starts_with(bad), "{host} is in the archive");
        }
        if kind != tar::EntryType::Directory {
            assert!(
                gpuscout::hostpaths::covering(&host).is_some(),
                "{host} is not on the read list"
            );
        }
    }
    // The planted links stay links; what they point at is not copied.
    let e = entries(&bytes);
    let link = e.iter().find(|x| x.0 == "etc/os-release").unwrap();
    assert_eq!(link.2.as_deref(), Some("/etc/shadow"));
}

#[test]
fn nvml_readings_replay_through_the_double() {
    let dir = fixtures().join("hosts/rtx4090-proprietary");
    let uuid = "GPU-5b2c7e0a-3f41-9d86-1c2e-7a4f0b9d3e61";
    let conf = format!(
        "driver_version=570.172.08\ncuda_version=12080\n{}",
        full_gpu(0, "00000000:01:00.0", "NVIDIA GeForce RTX 4090", uuid)
    );
    let d = Double::new(&conf);
    let key = Sanitiser::with_key("replay");
    let (bytes, _) = capture_of(&dir, Some(key.clone()), Some(&d.lib));
    let unpacked = unpack(&bytes);
    let replay = Double::new(&side(&bytes, "nvml_double.conf"));

    let with_nvml = |root: &Path, lib: &Path| {
        let root = HostRoot::new(root).unwrap();
        let ev = Evidence::with_nvml(Nvml::start(nvml_config(&root, Some(lib))));
        let mut r = discover::discover(&root, &Options::default(), &ev);
        r.generated_at = None;
        render::render(&r, Format::Json).unwrap()
    };
    let original = with_nvml(&dir, &d.lib);
    assert!(
        original.contains("\"cuda_driver_version\": \"12.8\""),
        "NVML enriched it"
    );
    assert_eq!(with_nvml(unpacked.path(), &replay.lib), key.text(&original));
    let nvml: serde_json::Value = serde_json::from_str(&side(&bytes, "nvml.json")).unwrap();
    assert_eq!(nvml["gpus"][0]["memory_total_bytes"], 25_757_220_864_u64);
    assert_eq!(nvml["gpus"][0]["power_watts"], 123.456);
}
