//! The one door to the host filesystem (`docs/development.md`, "How it reads the host").
//!
//! Every read of `sys/`, `proc/`, `dev/`, `etc/`, `usr/` and `lib/` goes through [`HostRoot`],
//! which is built from `--root DIR` (env `GPUSCOUT_ROOT`, default `/`). No other module spells
//! `/sys`.
//!
//! Paths are resolved *inside* the root, the way `openat2(RESOLVE_IN_ROOT)` does it: an absolute
//! symlink target (`/usr/lib/os-release`) or a `..` chain restarts at, or stops at, the host root
//! instead of escaping into the agent's own container. That is why a DaemonSet can mount the
//! host at `/host` and still follow the host's absolute links safely. Symlink hops are capped
//! (a loop is an error, not a hang).
//!
//! Reads are capped at [`READ_CAP`] bytes (sysfs attributes are at most a page; a 100 MB file in
//! a hostile tree costs one capped read) and refuse anything that is not a regular file, so a
//! FIFO or device node never blocks the agent. Every failure is a typed [`Error`] naming the
//! path, so callers can record what they could not read instead of inventing a value.
//!
//! Opt-in read recording ([`HostRoot::recording`], off by default): every host path a root is
//! asked for, every symlink it follows on the way and every path it ends up at goes into a
//! [`ReadLog`]. [`crate::readaudit`] uses it (the mount-table test, `gpuscout host-paths
//! --audit`) to learn what the agent touches, and `gpuscout capture` to copy it. Every internal
//! operation that stats, opens, lists or readlinks calls the one hook, `note`; a rewrite of the
//! internals must keep calling it (`recording_sees_every_kind_of_access` fails otherwise). A
//! listing also calls `note_listed`, so capture can keep the entry names of exactly the
//! directories the agent listed (`listings_are_recorded_and_links_read_without_following`).
//! When off it costs one `Option` check.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Largest number of bytes read from one file. Sysfs attributes are at most one page; procfs
/// files we read (`/proc/modules`, NVIDIA `information`) stay far below this.
pub const READ_CAP: u64 = 256 * 1024;

/// Most symlinks followed while resolving one path (the kernel's own limit is 40).
const MAX_LINK_HOPS: usize = 40;

/// What went wrong reading one host path.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: not found")]
    NotFound { path: String },
    #[error("{path}: permission denied")]
    PermissionDenied { path: String },
    #[error("{path}: too many levels of symbolic links")]
    SymlinkLoop { path: String },
    #[error("{path}: not a regular file")]
    NotAFile { path: String },
    #[error("{path}: not valid UTF-8 text")]
    NotText { path: String },
    #[error("{path}: {reason}")]
    Malformed { path: String, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// The host path (relative to the root, with a leading `/`) this error is about.
    pub fn path(&self) -> &str {
        match self {
            Error::NotFound { path }
            | Error::PermissionDenied { path }
            | Error::SymlinkLoop { path }
            | Error::NotAFile { path }
            | Error::NotText { path }
            | Error::Malformed { path, .. }
            | Error::Io { path, .. } => path,
        }
    }

    /// True when the path simply does not exist (optional files are often absent).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// Bounded label value for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::NotFound { .. } => "not_found",
            Error::PermissionDenied { .. } => "permission_denied",
            Error::SymlinkLoop { .. } => "symlink_loop",
            Error::NotAFile { .. } => "not_a_file",
            Error::NotText { .. } => "not_text",
            Error::Malformed { .. } => "malformed",
            Error::Io { .. } => "io",
        }
    }

    fn from_io(path: &Path, e: io::Error) -> Self {
        let path = display(path);
        match e.kind() {
            io::ErrorKind::NotFound => Error::NotFound { path },
            io::ErrorKind::PermissionDenied => Error::PermissionDenied { path },
            _ if e.raw_os_error() == Some(libc::ELOOP) => Error::SymlinkLoop { path },
            _ if e.raw_os_error() == Some(libc::ENOTDIR) => Error::NotFound { path },
            _ => Error::Io { path, source: e },
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Host path as shown to people: relative to the host root, with a leading `/`.
fn display(p: &Path) -> String {
    let s = p.to_string_lossy();
    if s.starts_with('/') {
        s.into_owned()
    } else {
        format!("/{s}")
    }
}

/// The host paths a recording [`HostRoot`] touched, relative to the root with a leading `/`
/// (`/sys/bus/pci/devices`): every path it was asked for, every symlink it followed and every
/// path it resolved to. Shared by the clones of the root.
#[derive(Debug, Default)]
pub struct ReadLog {
    paths: Mutex<BTreeSet<String>>,
    /// The directories among `paths` whose entries were listed.
    listed: Mutex<BTreeSet<String>>,
}

impl ReadLog {
    /// Every path recorded so far, sorted.
    pub fn paths(&self) -> Vec<String> {
        self.lock().iter().cloned().collect()
    }

    /// The directories whose entries were listed (a subset of [`paths`](Self::paths)), sorted:
    /// `capture` keeps their entry names.
    pub fn listed(&self) -> Vec<String> {
        let l = crate::lock::lock(&self.listed);
        l.iter().cloned().collect()
    }

    /// Record `host` as `/a/b/c`. A requested path with `..` in it is recorded up to the first
    /// `..` (what was walked as given); the walk records where the rest leads.
    fn record(&self, host: &Path) {
        let mut s = String::new();
        for c in host.components() {
            match c {
                Component::Normal(n) => {
                    s.push('/');
                    s.push_str(&n.to_string_lossy());
                }
                Component::ParentDir => break,
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            }
        }
        if s.is_empty() {
            s.push('/');
        }
        self.lock().insert(s);
    }

    fn record_listed(&self, dir: &Path) {
        let s = display(dir);
        self.lock().insert(s.clone());
        let mut l = crate::lock::lock(&self.listed);
        l.insert(s);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        // Plain data: a panic elsewhere while holding the lock leaves nothing half-done.
        crate::lock::lock(&self.paths)
    }
}

/// The host filesystem root every reader goes through.
#[derive(Debug, Clone)]
pub struct HostRoot {
    root: PathBuf,
    log: Option<Arc<ReadLog>>,
}

impl HostRoot {
    /// A host root at `dir`. The directory must exist.
    pub fn new(dir: impl Into<PathBuf>) -> io::Result<Self> {
        let root = dir.into();
        let meta = std::fs::metadata(&root)?;
        if !meta.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", root.display()),
            ));
        }
        Ok(Self { root, log: None })
    }

    /// This root with read recording on: every host path it (and its clones) touches from now
    /// on goes into the returned [`ReadLog`].
    pub fn recording(mut self) -> (Self, Arc<ReadLog>) {
        let log = Arc::new(ReadLog::default());
        self.log = Some(log.clone());
        (self, log)
    }

    /// The one recording hook: every path an internal operation opens, lists, stats or
    /// readlinks passes through here first (the requested path, each symlink followed, the
    /// resolved path). Free when recording is off.
    fn note(&self, host: &Path) {
        if let Some(log) = &self.log {
            log.record(host);
        }
    }

    /// The hook for a directory listing (besides [`note`](Self::note)'s path).
    fn note_listed(&self, dir: &Resolved) {
        if let Some(log) = &self.log {
            log.record_listed(&dir.host);
        }
    }

    /// The directory this root stands for on the agent's own filesystem.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// Resolve a host path (e.g. `sys/bus/pci/devices/0000:01:00.0`) to a path on the agent's
    /// filesystem that contains no symlinks and lies inside the root. Absolute link targets are
    /// taken relative to the root; `..` never climbs above it.
    pub fn resolve(&self, host_path: impl AsRef<Path>) -> Result<Resolved> {
        let host_path = host_path.as_ref();
        self.walk(Vec::new(), host_path, host_path)
    }

    /// Resolve `rel` below an already resolved directory, re-checking only the new components.
    pub fn resolve_in(&self, dir: &Resolved, rel: impl AsRef<Path>) -> Result<Resolved> {
        let rel = rel.as_ref();
        let done = dir
            .host
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_os_string()),
                _ => None,
            })
            .collect();
        self.walk(done, rel, &dir.host.join(rel))
    }

    /// Walk `rel` starting from the symlink-free host components `done`.
    fn walk(&self, mut done: Vec<OsString>, rel: &Path, shown: &Path) -> Result<Resolved> {
        self.note(shown);
        let mut pending: Vec<OsString> = Vec::new();
        push_components(&mut pending, rel);
        let mut hops = 0;
        let mut candidate = self.root.clone();
        candidate.extend(done.iter());
        while let Some(name) = pending.pop() {
            if name == ".." {
                if done.pop().is_some() {
                    candidate.pop();
                }
                continue;
            }
            candidate.push(&name);
            let meta = match std::fs::symlink_metadata(&candidate) {
                Ok(m) => m,
                Err(e) => return Err(Error::from_io(shown, e)),
            };
            if meta.file_type().is_symlink() {
                self.note(candidate.strip_prefix(&self.root).unwrap_or(&candidate));
                hops += 1;
                if hops > MAX_LINK_HOPS {
                    return Err(Error::SymlinkLoop {
                        path: display(shown),
                    });
                }
                #[allow(clippy::disallowed_methods)] // the one place that reads links
                let target =
                    std::fs::read_link(&candidate).map_err(|e| Error::from_io(shown, e))?;
                candidate.pop();
                if target.is_absolute() {
                    done.clear();
                    candidate = self.root.clone();
                }
                push_components(&mut pending, &target);
            } else {
                done.push(name);
            }
        }
        let mut real = PathBuf::new();
        real.extend(done.iter());
        self.note(&real);
        Ok(Resolved {
            host: real,
            abs: candidate,
        })
    }

    /// Read a small text file, capped at [`READ_CAP`] bytes.
    pub fn read_string(&self, host_path: impl AsRef<Path>) -> Result<String> {
        let r = self.resolve(host_path)?;
        read_capped_text(&r.abs, &r.host)
    }

    /// Read raw bytes (binary attributes such as `gpu_metrics`), capped at [`READ_CAP`].
    pub fn read_bytes(&self, host_path: impl AsRef<Path>) -> Result<Vec<u8>> {
        let r = self.resolve(host_path)?;
        read_capped(&r.abs, &r.host)
    }

    /// Read a file and trim surrounding whitespace.
    pub fn read_trimmed(&self, host_path: impl AsRef<Path>) -> Result<String> {
        Ok(self.read_string(host_path)?.trim().to_owned())
    }

    /// The last path component of a symlink's target, without following it further
    /// (`driver -> ../../../bus/pci/drivers/amdgpu` gives `amdgpu`).
    pub fn link_name(&self, host_path: impl AsRef<Path>) -> Result<String> {
        let host_path = host_path.as_ref();
        let parent = host_path.parent().unwrap_or(Path::new(""));
        let name = host_path.file_name().ok_or_else(|| Error::NotFound {
            path: display(host_path),
        })?;
        let dir = self.resolve(parent)?;
        let link = dir.abs.join(name);
        self.note(link.strip_prefix(&self.root).unwrap_or(&link));
        #[allow(clippy::disallowed_methods)] // the one place that reads links
        let target = std::fs::read_link(&link).map_err(|e| Error::from_io(host_path, e))?;
        target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| Error::NotFound {
                path: display(host_path),
            })
    }

    /// Read a text attribute `name` inside an already resolved directory: one `open`, no
    /// re-walk of the path. When the attribute itself is a symlink, falls back to a full
    /// in-root resolve, so the root clamp still holds.
    pub fn read_attr(&self, dir: &Resolved, name: &str) -> Result<String> {
        if name.contains('/') {
            let r = self.resolve_in(dir, name)?;
            return read_capped_text(&r.abs, &r.host);
        }
        let abs = dir.abs.join(name);
        let host = dir.host.join(name);
        self.note(&host);
        match read_capped_text(&abs, &host) {
            Err(Error::SymlinkLoop { .. }) => {
                let r = self.resolve_in(dir, name)?;
                read_capped_text(&r.abs, &r.host)
            }
            other => other,
        }
    }

    /// [`read_attr`](Self::read_attr), trimmed.
    pub fn read_attr_trimmed(&self, dir: &Resolved, name: &str) -> Result<String> {
        Ok(self.read_attr(dir, name)?.trim().to_owned())
    }

    /// [`link_name`](Self::link_name) for an entry of an already resolved directory.
    pub fn link_name_in(&self, dir: &Resolved, name: &str) -> Result<String> {
        let host = dir.host.join(name);
        self.note(&host);
        #[allow(clippy::disallowed_methods)] // the one place that reads links
        let target =
            std::fs::read_link(dir.abs.join(name)).map_err(|e| Error::from_io(&host, e))?;
        target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| Error::NotFound {
                path: display(&host),
            })
    }

    /// [`list_dir`](Self::list_dir) below an already resolved directory.
    pub fn list_dir_in(&self, dir: &Resolved, rel: &str) -> Result<Vec<String>> {
        let r = if rel.is_empty() {
            dir.clone()
        } else {
            self.resolve_in(dir, rel)?
        };
        self.note_listed(&r);
        list_resolved(&r)
    }

    /// Names and inode numbers (`d_ino` of the listing itself, no `stat` per entry) below an
    /// already resolved directory, unsorted. For procfs scans: a `/proc/<pid>` entry gets a new
    /// inode number when its pid is reused, so `(name, inode)` names one process.
    pub fn list_dir_inodes_in(&self, dir: &Resolved, rel: &str) -> Result<Vec<(String, u64)>> {
        use std::os::unix::fs::DirEntryExt;
        let r = if rel.is_empty() {
            dir.clone()
        } else {
            self.resolve_in(dir, rel)?
        };
        self.note_listed(&r);
        #[allow(clippy::disallowed_methods)] // the one place that lists directories
        let rd = std::fs::read_dir(&r.abs).map_err(|e| Error::from_io(&r.host, e))?;
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| Error::from_io(&r.host, e))?;
            out.push((
                entry.file_name().to_string_lossy().into_owned(),
                entry.ino(),
            ));
        }
        Ok(out)
    }

    /// Whether a host path exists (after resolving links inside the root).
    pub fn exists(&self, host_path: impl AsRef<Path>) -> bool {
        self.resolve(host_path).is_ok()
    }

    /// Names in a host directory, sorted, so every output is deterministic.
    pub fn list_dir(&self, host_path: impl AsRef<Path>) -> Result<Vec<String>> {
        let r = self.resolve(host_path)?;
        self.note_listed(&r);
        list_resolved(&r)
    }

    /// Metadata of a host path itself, not following a final symlink (`lstat`); the parent is
    /// resolved inside the root. For `capture`, which copies links as links.
    pub fn symlink_metadata(&self, host_path: impl AsRef<Path>) -> Result<Metadata> {
        let (abs, host) = self.final_component(host_path.as_ref())?;
        self.note(&host);
        std::fs::symlink_metadata(&abs).map_err(|e| Error::from_io(&host, e))
    }

    /// The target of a symlink exactly as stored (`../../../devices/...`, `/usr/lib/x`), not
    /// followed; the parent is resolved inside the root. For `capture`.
    pub fn read_link(&self, host_path: impl AsRef<Path>) -> Result<PathBuf> {
        let (abs, host) = self.final_component(host_path.as_ref())?;
        self.note(&host);
        #[allow(clippy::disallowed_methods)] // the one place that reads links
        std::fs::read_link(&abs).map_err(|e| Error::from_io(&host, e))
    }

    /// The agent-side path of `host_path`'s last component, its parent resolved in the root.
    fn final_component(&self, host_path: &Path) -> Result<(PathBuf, PathBuf)> {
        let name = host_path.file_name().ok_or_else(|| Error::NotFound {
            path: display(host_path),
        })?;
        let dir = self.resolve(host_path.parent().unwrap_or(Path::new("")))?;
        Ok((dir.abs.join(name), dir.host.join(name)))
    }
}

fn list_resolved(r: &Resolved) -> Result<Vec<String>> {
    #[allow(clippy::disallowed_methods)] // the one place that lists directories
    let rd = std::fs::read_dir(&r.abs).map_err(|e| Error::from_io(&r.host, e))?;
    let mut names = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::from_io(&r.host, e))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// A host path resolved inside the root: `host` is the canonical host path (relative to the
/// root), `abs` the path on the agent's filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub host: PathBuf,
    pub abs: PathBuf,
}

impl Resolved {
    /// Canonical host path with a leading `/`.
    pub fn host_display(&self) -> String {
        display(&self.host)
    }
}

fn push_components(stack: &mut Vec<OsString>, p: &Path) {
    // `stack` is popped from the end, so push in reverse order.
    let mut parts: Vec<OsString> = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => parts.push(n.to_os_string()),
            Component::ParentDir => parts.push(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    stack.extend(parts.into_iter().rev());
}

fn open_regular(abs: &Path, host: &Path) -> Result<(File, Metadata)> {
    // O_NONBLOCK: opening a FIFO planted in a hostile tree must not wait for a writer.
    // O_NOFOLLOW: `abs` is already resolved; a link swapped in since then is refused.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(abs)
        .map_err(|e| Error::from_io(host, e))?;
    let meta = file.metadata().map_err(|e| Error::from_io(host, e))?;
    if !meta.is_file() {
        return Err(Error::NotAFile {
            path: display(host),
        });
    }
    Ok((file, meta))
}

fn read_capped(abs: &Path, host: &Path) -> Result<Vec<u8>> {
    let (file, _) = open_regular(abs, host)?;
    let mut buf = Vec::with_capacity(4096);
    file.take(READ_CAP)
        .read_to_end(&mut buf)
        .map_err(|e| Error::from_io(host, e))?;
    Ok(buf)
}

fn read_capped_text(abs: &Path, host: &Path) -> Result<String> {
    let bytes = read_capped(abs, host)?;
    String::from_utf8(bytes).map_err(|_| Error::NotText {
        path: display(host),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> (tempfile::TempDir, HostRoot) {
        let t = tempfile::tempdir().unwrap();
        let root = HostRoot::new(t.path()).unwrap();
        (t, root)
    }

    #[test]
    fn absolute_links_stay_inside_the_root() {
        let (t, root) = tree();
        std::fs::create_dir_all(t.path().join("usr/lib")).unwrap();
        std::fs::create_dir_all(t.path().join("etc")).unwrap();
        std::fs::write(t.path().join("usr/lib/os-release"), "ID=talos\n").unwrap();
        symlink("/usr/lib/os-release", t.path().join("etc/os-release")).unwrap();
        assert_eq!(root.read_trimmed("etc/os-release").unwrap(), "ID=talos");
    }

    #[test]
    fn dotdot_cannot_escape_the_root() {
        let (t, root) = tree();
        std::fs::create_dir_all(t.path().join("sys")).unwrap();
        std::fs::write(t.path().join("secret"), "inside").unwrap();
        symlink("../../../../../../secret", t.path().join("sys/up")).unwrap();
        assert_eq!(root.read_trimmed("sys/up").unwrap(), "inside");
        let r = root.resolve("sys/up").unwrap();
        assert!(r.abs.starts_with(t.path()));
    }

    #[test]
    fn a_symlink_loop_is_an_error() {
        let (t, root) = tree();
        symlink("b", t.path().join("a")).unwrap();
        symlink("a", t.path().join("b")).unwrap();
        let e = root.read_string("a").unwrap_err();
        assert!(matches!(e, Error::SymlinkLoop { .. }), "{e:?}");
    }

    #[test]
    fn reads_are_capped_and_fifos_refused() {
        let (t, root) = tree();
        let big = File::create(t.path().join("big")).unwrap();
        big.set_len(100 * 1024 * 1024).unwrap();
        assert_eq!(root.read_bytes("big").unwrap().len() as u64, READ_CAP);
        std::fs::create_dir(t.path().join("dir")).unwrap();
        assert!(matches!(
            root.read_string("dir"),
            Err(Error::NotAFile { .. }) | Err(Error::Io { .. })
        ));
    }

    #[test]
    fn recording_sees_every_kind_of_access() {
        let (t, root) = tree();
        let dev = t.path().join("sys/devices/pci0000:00/0000:01:00.0");
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::create_dir_all(t.path().join("sys/bus/pci/devices")).unwrap();
        std::fs::create_dir_all(t.path().join("sys/bus/pci/drivers/amdgpu")).unwrap();
        std::fs::create_dir_all(t.path().join("usr/lib")).unwrap();
        std::fs::create_dir_all(t.path().join("etc")).unwrap();
        std::fs::write(dev.join("vendor"), "0x1002\n").unwrap();
        std::fs::write(t.path().join("usr/lib/os-release"), "ID=talos\n").unwrap();
        symlink("/usr/lib/os-release", t.path().join("etc/os-release")).unwrap();
        symlink(
            "../../../devices/pci0000:00/0000:01:00.0",
            t.path().join("sys/bus/pci/devices/0000:01:00.0"),
        )
        .unwrap();
        symlink("../../../../bus/pci/drivers/amdgpu", dev.join("driver")).unwrap();
        // Off by default: nothing is kept.
        root.read_string("etc/os-release").unwrap();
        let (root, log) = root.recording();
        assert!(log.paths().is_empty());

        root.read_string("etc/os-release").unwrap();
        let d = root.resolve("sys/bus/pci/devices/0000:01:00.0").unwrap();
        root.read_attr(&d, "vendor").unwrap();
        root.link_name_in(&d, "driver").unwrap();
        root.link_name("sys/devices/pci0000:00/0000:01:00.0/driver")
            .unwrap();
        root.list_dir("sys/bus/pci/devices").unwrap();
        assert!(!root.exists("proc/driver/nvidia/version"));
        // A clone records into the same log.
        root.clone().read_bytes("usr/lib/os-release").unwrap();
        assert_eq!(
            log.paths(),
            [
                "/etc/os-release",
                "/proc/driver/nvidia/version",
                "/sys/bus/pci/devices",
                "/sys/bus/pci/devices/0000:01:00.0",
                "/sys/devices/pci0000:00/0000:01:00.0",
                "/sys/devices/pci0000:00/0000:01:00.0/driver",
                "/sys/devices/pci0000:00/0000:01:00.0/vendor",
                "/usr/lib/os-release",
            ]
        );
    }

    #[test]
    fn listings_are_recorded_and_links_read_without_following() {
        let (t, root) = tree();
        std::fs::create_dir_all(t.path().join("sys/bus/pci/devices")).unwrap();
        std::fs::create_dir_all(t.path().join("sys/devices/x")).unwrap();
        symlink(
            "../../../devices/x",
            t.path().join("sys/bus/pci/devices/0000:01:00.0"),
        )
        .unwrap();
        symlink("/etc/shadow", t.path().join("sys/devices/x/evil")).unwrap();
        let (root, log) = root.recording();
        root.list_dir("sys/bus/pci/devices").unwrap();
        let d = root.resolve("sys/bus/pci/devices/0000:01:00.0").unwrap();
        root.list_dir_in(&d, "").unwrap();
        root.read_string("sys/devices/x/evil").unwrap_err();
        assert_eq!(log.listed(), ["/sys/bus/pci/devices", "/sys/devices/x"]);
        // The link itself, not what it points at; its parent is resolved in the root.
        let l = "sys/bus/pci/devices/0000:01:00.0/evil";
        assert!(root.symlink_metadata(l).unwrap().file_type().is_symlink());
        assert_eq!(root.read_link(l).unwrap(), Path::new("/etc/shadow"));
        assert!(root.symlink_metadata("sys/devices/x").unwrap().is_dir());
        assert!(
            root.read_link("sys/devices/x/none")
                .unwrap_err()
                .is_not_found()
        );
    }

    #[test]
    fn link_name_and_missing_files() {
        let (t, root) = tree();
        std::fs::create_dir_all(t.path().join("bus/pci/drivers/amdgpu")).unwrap();
        std::fs::create_dir_all(t.path().join("dev0")).unwrap();
        symlink("../bus/pci/drivers/amdgpu", t.path().join("dev0/driver")).unwrap();
        assert_eq!(root.link_name("dev0/driver").unwrap(), "amdgpu");
        let e = root.read_string("dev0/vendor").unwrap_err();
        assert!(e.is_not_found());
        assert_eq!(e.path(), "/dev0/vendor");
    }
}
