//! Generates the Rust types and the tonic client/server for `proto/cosi/state.proto`.
//!
//! The proto is parsed by protox (pure Rust), so building needs no `protoc` on the machine.
//! The server half is generated too: the integration tests run a fake Talos COSI server.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=proto/cosi/state.proto");
    let fds = protox::compile(["cosi/state.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
