//! The per-process GPU scan (agent/src/pods/scan.rs) on generated `/proc` trees of 20, 200 and
//! 2,000 processes with 10 fds each (200, 2,000 and 20,000 fds; every tenth process holds a DRM
//! fd with amdgpu fdinfo). Two cases per size:
//! - `steady`: the scan every scrape does once the cache is warm (list `/proc`, re-read the
//!   fdinfo of the known DRM fds); the target is under 5 ms at 2,000 processes;
//! - `first`: a cold scan (every fd link of every process read once), what a new agent pays on
//!   its first scrape, bounded by the scrape deadline.
//!
//! Run: `cargo bench --bench pods_scan`. Figures: docs/PERFORMANCE.md.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use gpuscout::hostroot::HostRoot;
use gpuscout::pods::scan::{ScanConfig, Scanner};
use std::time::{Duration, Instant};

use gpuscout_test_support::proc_tree;

fn far() -> Instant {
    Instant::now() + Duration::from_secs(3600)
}

fn bench(c: &mut Criterion) {
    let mut steady = c.benchmark_group("pods_scan_steady");
    let mut trees = Vec::new();
    for processes in [20u32, 200, 2000] {
        let dir = tempfile::tempdir().unwrap();
        let drm = proc_tree::write(dir.path(), processes, 10, 10);
        let root = HostRoot::new(dir.path()).unwrap();
        let mut s = Scanner::new(ScanConfig::default());
        assert_eq!(
            s.scan(&root, far()).unwrap().observations.len(),
            drm as usize
        );
        let fds = u64::from(processes) * 10;
        steady.throughput(Throughput::Elements(fds));
        steady.bench_with_input(BenchmarkId::new("fds", fds), &root, |b, root| {
            b.iter(|| s.scan(root, far()).unwrap())
        });
        trees.push((dir, root, fds));
    }
    steady.finish();
    let mut first = c.benchmark_group("pods_scan_first");
    first.sample_size(10);
    for (_dir, root, fds) in &trees {
        first.throughput(Throughput::Elements(*fds));
        first.bench_with_input(BenchmarkId::new("fds", fds), root, |b, root| {
            b.iter(|| {
                Scanner::new(ScanConfig::default())
                    .scan(root, far())
                    .unwrap()
            })
        });
    }
    first.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
