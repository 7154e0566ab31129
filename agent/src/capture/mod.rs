//! `gpuscout capture`: everything the agent reads on this host, as a tarball that `--root`
//! accepts once unpacked: for bug reports and new fixtures.
//!
//! ```text
//!  readaudit::record (HostRoot::recording) ──► discover (NVML included) + one scrape of every
//!  metrics source
//!        │ ReadLog: every path asked for, every symlink followed, every path resolved to,
//!        │          every directory listed
//!        ▼
//!  filter: hostpaths::covering (the agent's read list; nothing else ever enters)
//!        ▼
//!  copy, as the host has it: symlinks as links (target text kept), directories, files
//!  (≤ READ_CAP bytes, like the agent reads them), entries of listed directories as empty
//!  name-only stubs; firmware, module and NVML library files as empty name-only files
//!        ▼
//!  sanitise ids (sanitise.rs) ──► tar + zstd (archive.rs), plus gpuscout-capture/:
//!  capture.json, report.json, metrics.txt, nvml.json, nvml_double.conf
//! ```
//!
//! Host reads go through [`HostRoot`]. A recorded path is copied only when it is *physical*:
//! its parent resolves to itself (no symlink on the way), so the copy never follows a link out
//! of where it was recorded; a path reached through a link is copied at the place the link
//! leads to, which the recording holds too. A path that vanished since it was recorded, a
//! FIFO, socket or device node, is left out and listed in `capture.json` under `skipped`.
//! ROCm SMI is not run (it reads the real `/sys`, not the root).

pub mod archive;
pub mod nvml_json;
pub mod sanitise;

use crate::discover::Options;
use crate::hostroot::{HostRoot, READ_CAP};
use crate::nvml::{NvmlConfig, NvmlState};
use archive::ArchiveWriter;
use sanitise::Sanitiser;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;

/// Directory of the side files in the archive (not a host path; `--root` ignores it).
pub const SIDE_DIR: &str = "gpuscout-capture";

/// Host paths (prefixes) whose files are stored as names only, empty: firmware blobs, kernel
/// modules and the NVML library are large, the agent only checks that they exist, and a
/// library copied into a bug report would be loaded by whoever unpacks it.
pub const NAME_ONLY: &[&str] = &[
    "/lib/firmware/",
    "/usr/lib/firmware/",
    "/lib/modules/",
    "/usr/lib/modules/",
    "/usr/local/",
];

/// What can go wrong writing a capture.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing the archive: {0}")]
    Archive(#[source] std::io::Error),
    #[error("discovery did not finish: {0}")]
    Discovery(String),
}

/// Settings of one capture.
#[derive(Debug, Clone)]
pub struct CaptureOptions {
    pub discover: Options,
    /// NVML settings; their root is replaced by the recording root.
    pub nvml: NvmlConfig,
    /// `None`: keep serial numbers and UUIDs (`--keep-ids`).
    pub sanitiser: Option<Sanitiser>,
}

/// One entry of the planned archive.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Dir { mode: u32 },
    File { mode: u32, content: Vec<u8> },
    Link { target: String },
}

/// A path left out, and why.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}

/// `gpuscout-capture/capture.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    pub format: u32,
    pub gpuscout_version: &'static str,
    pub created_unix: u64,
    /// `sanitised` (serials and UUIDs replaced by keyed fakes) or `kept` (`--keep-ids`).
    pub ids: &'static str,
    /// Host paths the agent touched (asked for, followed, resolved to, listed).
    pub recorded_paths: usize,
    /// Of those, how many no entry of the agent's read list covers (left out; their names
    /// are not kept either).
    pub outside_read_list: usize,
    pub directories: usize,
    pub files: usize,
    /// Files stored empty, by name only (firmware, modules, NVML library, unread entries of
    /// listed directories).
    pub name_only_files: usize,
    pub symlinks: usize,
    pub skipped: Vec<Skipped>,
    pub nvml: String,
}

/// Capture `root` into `out` (a `.tar.zst` stream). Runs discovery on a blocking thread and
/// one scrape: call it inside a multi-threaded Tokio runtime.
pub async fn capture<W: Write>(
    root: &HostRoot,
    opts: CaptureOptions,
    out: W,
) -> Result<(W, Manifest), Error> {
    let pass = crate::readaudit::record(root, &opts.discover, opts.nvml.clone()).await;
    let report = pass
        .report
        .ok_or_else(|| Error::Discovery("discovery panicked".into()))?;
    let metrics_text = pass
        .metrics
        .map(|snap| snap.text().to_string())
        .unwrap_or_default();
    let (nvml, log) = (pass.nvml, pass.log);
    let nvml_state = match nvml.state() {
        NvmlState::NotStarted => "not-started".to_owned(),
        NvmlState::Ready => "ready".to_owned(),
        NvmlState::Absent => "absent".to_owned(),
        NvmlState::Failed(e) => format!("failed: {e}"),
    };
    let snap = nvml.last_snapshot();
    let nvml_capture = nvml_json::NvmlCapture::new(nvml_state.clone(), snap.as_deref());

    let recorded = log.paths();
    let listed = log.listed();
    let plan = plan(root, &recorded, &listed, opts.sanitiser.as_ref());

    let s = |text: String| match &opts.sanitiser {
        Some(s) => s.text(&text),
        None => text,
    };
    let mut side: BTreeMap<&str, String> = BTreeMap::new();
    side.insert(
        "report.json",
        s(serde_json::to_string_pretty(&*report).unwrap_or_default() + "\n"),
    );
    side.insert("metrics.txt", s(metrics_text));
    if snap.is_some() {
        side.insert(
            "nvml.json",
            s(serde_json::to_string_pretty(&nvml_capture).unwrap_or_default() + "\n"),
        );
        side.insert("nvml_double.conf", s(nvml_json::double_conf(&nvml_capture)));
    }

    let mut m = Manifest {
        format: 1,
        gpuscout_version: env!("CARGO_PKG_VERSION"),
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        ids: if opts.sanitiser.is_some() {
            "sanitised"
        } else {
            "kept"
        },
        recorded_paths: recorded.len(),
        outside_read_list: plan.outside,
        directories: 0,
        files: 0,
        name_only_files: plan.name_only,
        symlinks: 0,
        skipped: plan.skipped,
        nvml: nvml_state,
    };
    let mut w = ArchiveWriter::new(out).map_err(Error::Archive)?;
    for (path, e) in &plan.entries {
        let rel = path.trim_start_matches('/');
        match e {
            Entry::Dir { mode } => {
                m.directories += 1;
                w.dir(rel, *mode)
            }
            Entry::File { mode, content } => {
                m.files += 1;
                w.file(rel, *mode, content)
            }
            Entry::Link { target } => {
                m.symlinks += 1;
                w.symlink(rel, target)
            }
        }
        .map_err(Error::Archive)?;
    }
    let manifest = serde_json::to_string_pretty(&m).unwrap_or_default() + "\n";
    w.file(
        &format!("{SIDE_DIR}/capture.json"),
        0o644,
        manifest.as_bytes(),
    )
    .map_err(Error::Archive)?;
    for (name, text) in &side {
        w.file(&format!("{SIDE_DIR}/{name}"), 0o644, text.as_bytes())
            .map_err(Error::Archive)?;
    }
    let out = w.finish().map_err(Error::Archive)?;
    Ok((out, m))
}

/// What goes into the archive.
#[derive(Debug, Default)]
struct Plan {
    entries: BTreeMap<String, Entry>,
    skipped: Vec<Skipped>,
    outside: usize,
    name_only: usize,
}

fn covered(path: &str) -> bool {
    crate::hostpaths::covering(path).is_some()
}

fn name_only(path: &str) -> bool {
    NAME_ONLY.iter().any(|p| path.starts_with(p))
}

/// The parent of `/a/b/c` resolves to `/a/b` itself: no symlink on the way.
fn physical(root: &HostRoot, path: &str) -> bool {
    let parent = match path.rsplit_once('/') {
        Some(("", _)) | None => return true,
        Some((p, _)) => p,
    };
    root.resolve(parent.trim_start_matches('/'))
        .is_ok_and(|r| r.host_display() == parent)
}

fn plan(root: &HostRoot, recorded: &[String], listed: &[String], san: Option<&Sanitiser>) -> Plan {
    let mut p = Plan::default();
    for path in recorded {
        if path == "/" {
            continue;
        }
        if !covered(path) {
            p.outside += 1;
            continue;
        }
        if !physical(root, path) {
            continue;
        }
        if let Some(e) = p.copy(root, path, san, false) {
            p.entries.insert(path.clone(), e);
        }
    }
    for dir in listed {
        if !covered(dir) || !physical(root, dir) {
            continue;
        }
        let Ok(names) = root.list_dir(dir.trim_start_matches('/')) else {
            continue;
        };
        for n in names {
            let child = format!("{}/{n}", dir.trim_end_matches('/'));
            if p.entries.contains_key(&child) || !covered(&child) {
                continue;
            }
            if let Some(e) = p.copy(root, &child, san, true) {
                p.entries.insert(child, e);
            }
        }
    }
    p
}

impl Plan {
    /// The entry for one physical, covered host path; `stub`: a file is stored empty.
    fn copy(
        &mut self,
        root: &HostRoot,
        path: &str,
        san: Option<&Sanitiser>,
        stub: bool,
    ) -> Option<Entry> {
        let rel = path.trim_start_matches('/');
        let mut skip = |reason: String| {
            self.skipped.push(Skipped {
                path: path.to_owned(),
                reason,
            });
            None
        };
        let meta = match root.symlink_metadata(rel) {
            Ok(m) => m,
            // Recorded because the agent looked for it: absent is the normal case.
            Err(e) if e.is_not_found() => return None,
            Err(e) => return skip(e.to_string()),
        };
        let mode = meta.permissions().mode() & 0o7777;
        let ft = meta.file_type();
        if ft.is_symlink() {
            return match root.read_link(rel) {
                Ok(t) => match t.to_str() {
                    Some(t) if !t.is_empty() => Some(Entry::Link {
                        target: t.to_owned(),
                    }),
                    _ => skip("symlink target is not UTF-8".into()),
                },
                Err(e) => skip(e.to_string()),
            };
        }
        if ft.is_dir() {
            return Some(Entry::Dir { mode });
        }
        if !ft.is_file() {
            return skip("not a regular file, directory or symlink".into());
        }
        if stub || name_only(path) {
            self.name_only += 1;
            return Some(Entry::File {
                mode,
                content: Vec::new(),
            });
        }
        match root.read_bytes(rel) {
            Ok(bytes) => {
                debug_assert!(bytes.len() as u64 <= READ_CAP);
                let content = match san {
                    Some(s) => s.file(path, &bytes),
                    None => bytes,
                };
                Some(Entry::File { mode, content })
            }
            Err(e) => skip(e.to_string()),
        }
    }
}
