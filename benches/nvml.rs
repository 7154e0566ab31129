//! Cost of one NVML snapshot (every reading of every GPU, through the worker thread and the
//! watchdog) against the C test double, for 1 and 8 GPUs. The double answers from memory, so
//! this measures gpuscout's own per-scrape overhead: channel round trip, heartbeat per call,
//! nvml-wrapper's conversions, and building the snapshot. A real driver adds its own latency.
//!
//! And how long an answer takes while an NVML call hangs in the driver (the double never lets it
//! return during the measurement): `nvml_snapshot_with_a_hung_call` (call deadline 200 ms, the
//! snapshot must give up after about that) and `discover_command_with_a_hung_call` (the whole
//! `gpuscout discover` process with `--nvml-call-timeout-ms 200`, start-up included). The tests
//! check only that the answer comes while the call hangs; these are the numbers.

#![allow(clippy::disallowed_methods)]

use gpuscout_test_support::nvml_double;

use criterion::{Criterion, criterion_group, criterion_main};
use gpuscout::hostroot::HostRoot;
use gpuscout::nvml::{Error, Nvml, NvmlConfig};
use nvml_double::{Double, full_gpu};
use std::time::{Duration, Instant};

const HUNG: &str = "driver_version=570.172.08\nhang=nvmlDeviceGetTemperature\n";

fn rtx4090() -> String {
    full_gpu(0, "00000000:01:00.0", "NVIDIA GeForce RTX 4090", "GPU-0")
}

/// Each iteration a fresh double (its call hangs until released) and a fresh NVML handle.
fn hung_snapshot(c: &mut Criterion, rt: &tokio::runtime::Runtime, root: &std::path::Path) {
    let mut g = c.benchmark_group("hung");
    g.sample_size(10);
    g.bench_function("nvml_snapshot_with_a_hung_call", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let d = Double::new(&format!("{HUNG}{}", rtx4090()));
                let mut cfg = NvmlConfig::new(HostRoot::new(root).unwrap());
                cfg.lib_path = Some(d.lib.clone());
                cfg.call_timeout = Duration::from_millis(200);
                let h = Nvml::start(cfg);
                let t = Instant::now();
                let e = rt.block_on(h.snapshot()).unwrap_err();
                total += t.elapsed();
                assert!(matches!(e, Error::Hung { .. }), "{e}");
                d.release();
            }
            total
        })
    });
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/hosts/rtx4090-proprietary"
    );
    g.bench_function("discover_command_with_a_hung_call", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let d = Double::new(&format!("{HUNG}{}", rtx4090()));
                let t = Instant::now();
                let out = std::process::Command::new(env!("CARGO_BIN_EXE_gpuscout"))
                    .args([
                        "discover",
                        "--format",
                        "json",
                        "--nvml-call-timeout-ms",
                        "200",
                    ])
                    .args(["--root", fixture])
                    .arg("--nvml-lib")
                    .arg(&d.lib)
                    .output()
                    .expect("run gpuscout");
                total += t.elapsed();
                assert!(out.status.success());
                d.release();
            }
            total
        })
    });
    g.finish();
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let root_dir = tempfile::tempdir().unwrap();
    for n in [1u32, 8] {
        let mut conf = String::from("log_calls=0\ndriver_version=570.172.08\ncuda_version=12080\n");
        for i in 0..n {
            conf.push_str(&full_gpu(
                i,
                &format!("00000000:{:02X}:00.0", i + 1),
                "NVIDIA GeForce RTX 4090",
                &format!("GPU-{i:08}"),
            ));
        }
        let d = Double::new(&conf);
        let mut cfg = NvmlConfig::new(HostRoot::new(root_dir.path()).unwrap());
        cfg.lib_path = Some(d.lib.clone());
        let h = Nvml::start(cfg);
        let first = rt.block_on(h.snapshot()).expect("snapshot");
        assert_eq!(first.gpus.len(), n as usize);
        c.bench_function(&format!("nvml_snapshot_{n}_gpus"), |b| {
            b.iter(|| rt.block_on(h.snapshot()).expect("snapshot"))
        });
    }
    hung_snapshot(c, &rt, root_dir.path());
}

criterion_group!(benches, bench);
criterion_main!(benches);
