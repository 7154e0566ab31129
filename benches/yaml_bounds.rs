//! The deepest `extensions.yaml` that fits the 256 KiB read cap (`layers: [[[[…]]]]`, 131,068
//! levels): the depth guard refuses it before libyaml sees it. Before the guard, libyaml's
//! quadratic scan took 37 s at 100,000 levels and 245 s at the cap (issue #13). Also a
//! discovery pass on a host root carrying that file, and a normal file for comparison.
//!
//! Run: `cargo bench --bench yaml_bounds`.

use criterion::{Criterion, criterion_group, criterion_main};
use gpuscout::discover::{Options, discover};
use gpuscout::host::parse_extensions;
use gpuscout::hostroot::HostRoot;

use gpuscout_test_support::synth;

fn deepest_at_cap() -> String {
    let half = (256 * 1024 - "layers: ".len()) / 2;
    format!("layers: {}{}", "[".repeat(half), "]".repeat(half))
}

const NORMAL: &str = "layers:\n  - image: 000-amdgpu.sqsh\n    metadata:\n      name: amdgpu\n      version: 20251021-v1.11.5\n      author: Sidero Labs\n      description: AMD GPU firmware and kernel modules\n      compatibility:\n        talos:\n          version: '>= v1.11.0'\n";

fn bench(c: &mut Criterion) {
    let deep = deepest_at_cap();
    assert!(parse_extensions(&deep).is_err());
    c.bench_function("extensions_yaml/deepest_at_256KiB_cap", |b| {
        b.iter(|| parse_extensions(&deep))
    });
    c.bench_function("extensions_yaml/normal", |b| {
        b.iter(|| parse_extensions(NORMAL))
    });
    let dir = tempfile::tempdir().unwrap();
    synth::amd_host(dir.path(), 1);
    #[allow(clippy::disallowed_methods)]
    std::fs::write(dir.path().join("etc/extensions.yaml"), &deep).unwrap();
    let root = HostRoot::new(dir.path()).unwrap();
    c.bench_function("discovery_pass/deepest_extensions_yaml", |b| {
        b.iter(|| discover(&root, &Options::default(), &Default::default()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
