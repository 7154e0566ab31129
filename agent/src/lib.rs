//! gpuscout: a per-node GPU agent for Kubernetes, first of all on Talos Linux.
//!
//! ```text
//!            --root DIR (HostRoot: every host read, clamped to the root, capped)
//!                 │
//!   host ─────────┤  kernel, os-release, Talos extensions, modules
//!   pci ──────────┤  GPU functions, link, SR-IOV, DRM nodes
//!   vendors/* ────┘  amdgpu + KFD, NVIDIA procfs, Intel id tables
//!   nvml ─────────── NVML on its own worker thread (optional enrichment)
//!        │
//!   discover(root, options, Evidence{Node extensions, NVML, Talos API}): scan ──► enrich
//!            ──► verdict (driver stack per GPU, Talos API refinement) ──► labels ──► Report
//!        │                                                                             │
//!   render (table/json/yaml) ◄── cli: discover / check ◄───────────────────────────────┤
//!                                                                                      │
//!   serve: discovery every 30 s ──► watch<Arc<Report>> ◄───────────────────────────────┘
//!        └─► /metrics: metrics::{pci,amdgpu,i915,xe,nvidia_procfs,talos} read at scrape time
//!                      on one blocking thread per pass (kept-open attribute descriptors on sysfs)
//!                      nvml, rocm_smi (feature `rocm-smi`): vendor libraries, a thread each
//!                      pods::{podresources,processes}: who uses each GPU (kubelet, /proc, NVML)
//!
//!   capture: discover + one scrape on a recording HostRoot ──► tar.zst of what was read
//! ```
//!
//! Every module documents which kernel files it reads and what happens when they are missing.
//!
//! Layers, bottom to top. A module imports (`crate::x`) only from its own layer or a lower one,
//! and no two top-level modules import each other, directly or round a loop; the `layers` test
//! reads this list and every file under `agent/src` and fails naming the file and import
//! otherwise. A new top-level module needs a place here.
//!
//! 1. base: lock, logonce, backoff, hostroot, duration, status, pciaddr, hostpaths, httpconn, tls
//! 2. text: parse
//! 3. model: cause, model
//! 4. attributes: attr
//! 5. host: textcap, names, pci, host, vendors, talos
//! 6. sources: metrics, nvml, talosapi, rocm, pods
//! 7. judgement: verdict, labels, hold
//! 8. pass: discover, render, k8s, authn
//! 9. tools: readaudit, capture
//! 10. daemon: serve
//! 11. commands: cli, clidoc, telemetry
//!
//! Shared infrastructure: `lock` (the one poison-tolerant mutex lock), `logonce` (log a failure
//! reason once until it clears) and `backoff` (the one retry backoff) at the base, and `attr`
//! (read an optional attribute, record what cannot be used) above the model.

pub mod attr;
pub mod authn;
pub mod backoff;
pub mod capture;
pub mod cause;
pub mod cli;
pub mod clidoc;
pub mod discover;
pub mod duration;
pub mod hold;
pub mod host;
pub mod hostpaths;
pub mod hostroot;
pub mod httpconn;
pub mod k8s;
pub mod labels;
pub mod lock;
pub mod logonce;
pub mod metrics;
pub mod model;
pub mod names;
pub mod nvml;
pub mod parse;
pub mod pci;
pub mod pciaddr;
pub mod pods;
pub mod readaudit;
pub mod render;
#[cfg(feature = "rocm-smi")]
pub mod rocm;
pub mod serve;
pub mod status;
pub mod talos;
pub mod talosapi;
pub mod telemetry;
pub mod textcap;
pub mod tls;
pub mod vendors;
pub mod verdict;

#[cfg(test)]
mod layers;
