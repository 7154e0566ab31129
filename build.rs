//! Generates the Rust types and the tonic client/server for the vendored protos:
//! `proto/cosi/state.proto` (Talos COSI API) and `proto/podresources/v1/api.proto` (the kubelet's
//! PodResources API, see `proto/podresources/README.md`).
//!
//! The protos are parsed by protox (pure Rust), so building needs no `protoc` on the machine.
//! The server halves are generated too: the integration tests run a fake Talos COSI server and a
//! fake kubelet PodResources server.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=build.rs");
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
