//! One discovery pass on generated hosts with 1, 8 and 64 AMD GPUs. Reports time per pass; the
//! growth from 8 to 64 shows whether the cost is linear in the number of GPUs.
//!
//! Run: `cargo bench --bench discovery`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use gpuscout::discover::{Options, discover};
use gpuscout::hostroot::HostRoot;

use gpuscout_test_support::synth;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("discovery_pass");
    for n in [1usize, 8, 64] {
        let dir = tempfile::tempdir().unwrap();
        synth::amd_host(dir.path(), n);
        let root = HostRoot::new(dir.path()).unwrap();
        let report = discover(&root, &Options::default(), &Default::default());
        assert_eq!(report.gpus.len(), n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &root, |b, root| {
            b.iter(|| discover(root, &Options::default(), &Default::default()))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
