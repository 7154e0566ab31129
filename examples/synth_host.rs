//! Writes a synthetic host root with N AMD GPUs (tests/support/src/synth.rs) for scripts/soak.sh
//! and scripts/bench.sh. Usage: `synth_host DIR N` (DIR must not exist yet).

#![allow(clippy::disallowed_methods, dead_code)]

use gpuscout_test_support::synth;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(n)) = (
        args.get(1),
        args.get(2).and_then(|s| s.parse::<usize>().ok()),
    ) else {
        eprintln!("usage: synth_host DIR N");
        std::process::exit(2);
    };
    synth::amd_host(std::path::Path::new(dir), n);
}
