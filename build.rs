//! Generates the Rust types and the tonic client/server for the vendored protos:
//! `proto/cosi/state.proto` (Talos COSI API) and `proto/podresources/v1/api.proto` (the kubelet's
//! PodResources API, see `proto/podresources/README.md`).
//!
//! The protos are parsed by protox (pure Rust), so building needs no `protoc` on the machine.
//! The server halves are generated too: the integration tests run a fake Talos COSI server and a
//! fake kubelet PodResources server.
//!
//! Also sets `GPUSCOUT_GIT_COMMIT` for `--version`: the env var of that name when set (builds
//! from a tarball), else `git rev-parse --short=12 HEAD`, else `unknown` (no git, or not a checkout).

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!s.is_empty()).then_some(s)
}

fn commit() -> String {
    println!("cargo:rerun-if-env-changed=GPUSCOUT_GIT_COMMIT");
    if let Ok(c) = std::env::var("GPUSCOUT_GIT_COMMIT")
        && !c.trim().is_empty()
    {
        return c.trim().to_owned();
    }
    let Some(head) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown".to_owned();
    };
    // Rebuild when HEAD moves: the HEAD file (branch switches, detached commits) and the
    // branch's ref (new commits). Packed refs change on gc.
    for p in ["HEAD", "packed-refs"] {
        if let Some(path) = git(&["rev-parse", "--git-path", p]) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"])
        && let Some(path) = git(&["rev-parse", "--git-path", &r])
    {
        println!("cargo:rerun-if-changed={path}");
    }
    head
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-env=GPUSCOUT_GIT_COMMIT={}", commit());
    // GPUSCOUT_NO_PIE=1: link the binaries as fixed-address executables. A PIE carries about
    // 72,000 relative relocations (mostly the embedded PCI-ID tables' string pointers); the
    // loader applies them at start, which dirties the whole .data.rel.ro (about 1.8 MiB of
    // private memory) and pages in .rela.dyn (about 1.7 MiB). Without PIE both go; the price
    // is no address randomisation of the executable itself, so it is off by default
    // (docs/PERFORMANCE.md, "Memory").
    println!("cargo:rerun-if-env-changed=GPUSCOUT_NO_PIE");
    if std::env::var("GPUSCOUT_NO_PIE").is_ok_and(|v| v == "1")
        && std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|v| v == "linux")
    {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
    println!("cargo:rerun-if-changed=proto/cosi/state.proto");
    println!("cargo:rerun-if-changed=proto/podresources/v1/api.proto");
    let fds = protox::compile(["cosi/state.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .compile_fds(fds)?;
    let fds = protox::compile(["podresources/v1/api.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
