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
//!   discover ──► verdict (driver stack per GPU) ──► labels (pure) ──► Report
//!        │                                                             │
//!   render (table/json/yaml) ◄── cli: discover / check ◄───────────────┤
//!                                                                      │
//!   serve: discovery every 30 s ──► watch<Arc<Report>> ◄───────────────┘
//!        └─► /metrics: metrics::{pci,amdgpu,i915,xe,nvidia_procfs,talos} read at scrape time
//!                      pods::{podresources,processes}: who uses each GPU (kubelet, /proc, NVML)
//!
//!   capture: discover + one scrape on a recording HostRoot ──► tar.zst of what was read
//! ```
//!
//! Every module documents which kernel files it reads and what happens when they are missing.
//!
//! Shared by every layer, above only `hostroot`/`model`/`parse`: `attr` (read an optional
//! attribute, record what cannot be used), `backoff` (the one retry backoff), `logonce` (log a
//! failure reason once until it clears) and `lock` (the one poison-tolerant mutex lock).

pub mod attr;
pub mod authn;
pub mod backoff;
pub mod capture;
pub mod cause;
pub mod cli;
pub mod clidoc;
pub mod discover;
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
pub mod pods;
pub mod readaudit;
pub mod render;
#[cfg(feature = "rocm-smi")]
pub mod rocm;
pub mod serve;
pub mod talos;
pub mod talosapi;
pub mod telemetry;
pub mod textcap;
pub mod tls;
pub mod vendors;
pub mod verdict;
