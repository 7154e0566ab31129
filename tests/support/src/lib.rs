//! Test-only helpers shared by the integration tests (`tests/integration`), the benches and the
//! examples: a dev-dependency of `gpuscout`, never published, never linked into the agent.
//!
//! - [`nvml_double`]: builds the NVML C test double and hands out scripted copies;
//! - [`proc_tree`]: writes a large synthetic `/proc` for the per-process scan;
//! - [`scrape`]: one HTTP scrape on a fresh connection, for the load examples;
//! - [`standin`]: the in-process Kubernetes API stand-in of the k8s tests and `examples/standin`;
//! - [`synth`]: writes a host root with N AMD GPUs.

#![allow(clippy::disallowed_methods)] // they build host trees and compile the double directly

pub mod nvml_double;
pub mod proc_tree;
pub mod scrape;
pub mod standin;
pub mod synth;
