//! Cost of one NVML snapshot (every reading of every GPU, through the worker thread and the
//! watchdog) against the C test double, for 1 and 8 GPUs. The double answers from memory, so
//! this measures gpuscout's own per-scrape overhead: channel round trip, heartbeat per call,
//! nvml-wrapper's conversions, and building the snapshot. A real driver adds its own latency.

#![allow(clippy::disallowed_methods)]

#[path = "../tests/support/nvml_double.rs"]
mod nvml_double;

use criterion::{Criterion, criterion_group, criterion_main};
use gpuscout::hostroot::HostRoot;
use gpuscout::nvml::{Nvml, NvmlConfig};
use nvml_double::{Double, full_gpu};

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
}

criterion_group!(benches, bench);
criterion_main!(benches);
