//! The one door to the host filesystem (`docs/development.md`, "How it reads the host").
//!
//! Every read of `sys/`, `proc/`, `dev/`, `etc/`, `usr/` and `lib/` goes through [`HostRoot`],
//! which is built from `--root DIR` (env `GPUSCOUT_ROOT`, default `/`). No other module spells
//! `/sys`.
//!
//! Paths are resolved *inside* the root: an absolute symlink target (`/usr/lib/os-release`) or a
//! `..` chain restarts at, or stops at, the host root instead of escaping into the agent's own
//! container. That is why a DaemonSet can mount the host at `/host` and still follow the host's
//! absolute links safely. Symlink hops are capped (a loop is an error, not a hang).
//!
//! Two resolvers give the same answers ([`Resolver`]; `both_resolvers_agree_on_hostile_trees`):
//! - **Kernel** (the default where it works): `openat2(2)` on a descriptor of the root directory
//!   with `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`, through `rustix`. One system call opens a
//!   file wherever its links lead, and the kernel enforces the clamp (and its own limit of 40
//!   link hops). A resolved directory's canonical path is read back from `/proc/self/fd/N`.
//! - **Walk**: the same rules in user space, one `lstat` per path component and one `readlink`
//!   per link. Used where `openat2` is missing (`ENOSYS`: kernels before 5.6) or refused
//!   (`EPERM`: a seccomp profile; `EINVAL`: unknown flags), which is probed once per process and
//!   cached; while read recording is on (it must see every link followed); and when `openat2`
//!   answers `EAGAIN` (a rename raced the lookup) or `/proc/self/fd` cannot be read.
//!
//! Reads are capped at [`READ_CAP`] bytes (sysfs attributes are at most a page; a 100 MB file in
//! a hostile tree costs one capped read) and refuse anything that is not a regular file, so a
//! FIFO or device node never blocks the agent (opened `O_NONBLOCK`, checked with `fstat` before
//! the first read). [`HostRoot::open_attr`] keeps such a checked descriptor open for re-reading
//! with `pread` at offset 0 ([`AttrFile`]), which is what the metrics sources do on every
//! scrape. Every failure is a typed [`Error`] naming the
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

use rustix::fs::{Mode, OFlags, ResolveFlags};
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

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

    /// True when a kept-open descriptor no longer reaches a file: the device was removed
    /// (`ENODEV`, what sysfs answers after a hot unplug), the file is gone (`ENOENT`) or the
    /// handle went stale (`ESTALE`). The descriptor should be dropped and the value is absent.
    pub fn is_gone(&self) -> bool {
        match self {
            Error::NotFound { .. } => true,
            Error::Io { source, .. } => is_gone_errno(source.raw_os_error()),
            _ => false,
        }
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

fn is_gone_errno(e: Option<i32>) -> bool {
    matches!(e, Some(libc::ENODEV | libc::ENOENT | libc::ESTALE))
}

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

/// How a [`HostRoot`] resolves paths inside the root (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolver {
    /// `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` on a descriptor of the root.
    Kernel,
    /// The user-space walk: one `lstat` per component, one `readlink` per link.
    Walk,
}

/// The root directory held open for `openat2`, and its canonical path (to turn
/// `/proc/self/fd/N` back into a host path).
#[derive(Debug)]
struct RootDir {
    fd: OwnedFd,
    real: PathBuf,
}

/// The flags of every in-root `openat2`.
fn in_root() -> ResolveFlags {
    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS
}

/// Whether this kernel (and seccomp profile) allows `openat2` with our flags: probed once per
/// process on the first root opened, then cached.
fn kernel_resolver_works(dir: &OwnedFd) -> bool {
    static WORKS: OnceLock<bool> = OnceLock::new();
    *WORKS.get_or_init(|| {
        match rustix::fs::openat2(
            dir,
            ".",
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            in_root(),
        ) {
            Ok(_) => true,
            Err(e) => {
                // ENOSYS (before 5.6), EPERM (seccomp), EINVAL (flags unknown): walk instead.
                tracing::info!(
                    errno = e.raw_os_error(),
                    "openat2 unavailable; host paths resolved in user space"
                );
                false
            }
        }
    })
}

/// The host filesystem root every reader goes through.
#[derive(Debug, Clone)]
pub struct HostRoot {
    root: PathBuf,
    log: Option<Arc<ReadLog>>,
    /// Set when paths are resolved by the kernel ([`Resolver::Kernel`]).
    kernel: Option<Arc<RootDir>>,
    /// Whether readers may keep attribute descriptors open ([`keeps_open`](Self::keeps_open)).
    keep_open: bool,
}

impl HostRoot {
    /// A host root at `dir`. The directory must exist. Paths are resolved by the kernel where
    /// `openat2` works, else in user space.
    pub fn new(dir: impl Into<PathBuf>) -> io::Result<Self> {
        let root = dir.into();
        let meta = std::fs::metadata(&root)?;
        if !meta.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", root.display()),
            ));
        }
        let kernel = open_root_dir(&root);
        let keep_open = keep_open_default(&root);
        Ok(Self {
            root,
            log: None,
            kernel,
            keep_open,
        })
    }

    /// Whether a reader may keep attribute descriptors open across scrapes and trust a re-read
    /// ([`open_attr`](Self::open_attr)). True when `<root>/sys/devices` (where every device
    /// attribute lives; the chart mounts it on its own under `/host`) is sysfs: there a read on the
    /// descriptor of a removed device or attribute fails (`ENODEV`), so a kept descriptor
    /// never serves a value that is gone. On any other file system (test fixtures, a copied
    /// tree) a removed or renamed file stays readable through an open descriptor, so readers
    /// open the file again on every read. `GPUSCOUT_KEEP_OPEN=any` in the environment forces it
    /// on for every file system; that is for benchmarks on fixtures (`scripts/bench.sh`),
    /// which then measure the sysfs code path, and is wrong for a tree that changes.
    pub fn keeps_open(&self) -> bool {
        self.keep_open
    }

    /// This root with [`keeps_open`](Self::keeps_open) set as given (tests).
    pub fn with_keep_open(mut self, on: bool) -> Self {
        self.keep_open = on;
        self
    }

    /// This root with the given resolver. [`Resolver::Kernel`] takes effect only where `openat2`
    /// works (check [`resolver`](Self::resolver)). For tests and benchmarks that compare both.
    pub fn with_resolver(mut self, r: Resolver) -> Self {
        self.kernel = match r {
            Resolver::Kernel => self.kernel.or_else(|| open_root_dir(&self.root)),
            Resolver::Walk => None,
        };
        self
    }

    /// The resolver in use (recording roots use the walk whatever this says).
    pub fn resolver(&self) -> Resolver {
        if self.kernel.is_some() {
            Resolver::Kernel
        } else {
            Resolver::Walk
        }
    }

    /// The kernel resolver, unless recording is on (recording must see every link followed,
    /// which only the walk does).
    fn kernel(&self) -> Option<&RootDir> {
        match &self.log {
            Some(_) => None,
            None => self.kernel.as_deref(),
        }
    }

    /// Open `host` inside the root with `openat2`. `None` when the kernel answered `EAGAIN`
    /// (a concurrent rename): the caller walks instead.
    fn kernel_open(k: &RootDir, host: &Path, flags: OFlags) -> Option<io::Result<OwnedFd>> {
        let rel = host.strip_prefix("/").unwrap_or(host);
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        match rustix::fs::openat2(
            &k.fd,
            rel,
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            in_root(),
        ) {
            Ok(fd) => Some(Ok(fd)),
            Err(rustix::io::Errno::AGAIN) => None,
            Err(e) => Some(Err(e.into())),
        }
    }

    /// The canonical host path of an open descriptor, from `/proc/self/fd/N`; `None` when procfs
    /// cannot say or the answer lies outside the root.
    fn host_of(k: &RootDir, fd: &impl AsRawFd) -> Option<PathBuf> {
        #[allow(clippy::disallowed_methods)] // a procfs magic link, read for its path only
        let p = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
        p.strip_prefix(&k.real).ok().map(Path::to_path_buf)
    }

    /// Open a regular file for reading by the kernel resolver; `None` means "walk instead".
    fn kernel_read_open(&self, host: &Path) -> Option<Result<(File, PathBuf)>> {
        let k = self.kernel()?;
        let fd = match Self::kernel_open(k, host, OFlags::RDONLY | OFlags::NONBLOCK)? {
            Ok(fd) => fd,
            Err(e) => return Some(Err(Error::from_io(host, e))),
        };
        let file = File::from(fd);
        let shown = || Self::host_of(k, &file).unwrap_or_else(|| host.to_path_buf());
        Some(match file.metadata() {
            Ok(m) if m.is_file() => Ok((file, host.to_path_buf())),
            Ok(_) => Err(Error::NotAFile {
                path: display(&shown()),
            }),
            Err(e) => Err(Error::from_io(&shown(), e)),
        })
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
        if let Some(r) = self.kernel_resolve(host_path) {
            return r;
        }
        self.walk(Vec::new(), host_path, host_path)
    }

    /// [`resolve`](Self::resolve) by `openat2(O_PATH)` and `/proc/self/fd`: three system calls
    /// whatever the depth. `None` means "walk instead".
    fn kernel_resolve(&self, host_path: &Path) -> Option<Result<Resolved>> {
        let k = self.kernel()?;
        let fd = match Self::kernel_open(k, host_path, OFlags::PATH)? {
            Ok(fd) => fd,
            Err(e) => return Some(Err(Error::from_io(host_path, e))),
        };
        let host = Self::host_of(k, &fd)?;
        Some(Ok(Resolved {
            abs: self.root.join(&host),
            host,
        }))
    }

    /// Resolve `rel` below an already resolved directory, re-checking only the new components.
    pub fn resolve_in(&self, dir: &Resolved, rel: impl AsRef<Path>) -> Result<Resolved> {
        let rel = rel.as_ref();
        if let Some(r) = self.kernel_resolve(&dir.host.join(rel)) {
            return r;
        }
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
        let host_path = host_path.as_ref();
        if let Some(r) = self.kernel_read_open(host_path) {
            let (file, host) = r?;
            return into_text(read_file_capped(file, &host)?, &host);
        }
        let r = self.resolve(host_path)?;
        read_capped_text(&r.abs, &r.host)
    }

    /// Read raw bytes (binary attributes such as `gpu_metrics`), capped at [`READ_CAP`].
    pub fn read_bytes(&self, host_path: impl AsRef<Path>) -> Result<Vec<u8>> {
        let host_path = host_path.as_ref();
        if let Some(r) = self.kernel_read_open(host_path) {
            let (file, host) = r?;
            return read_file_capped(file, &host);
        }
        let r = self.resolve(host_path)?;
        read_capped(&r.abs, &r.host)
    }

    /// Open a text attribute `name` of an already resolved directory and keep it open: it is
    /// checked to be a regular file once, and each [`AttrFile::read`] is one `pread` at offset
    /// 0 (sysfs regenerates the value on every read at offset 0). Recorded like a read.
    pub fn open_attr(&self, dir: &Resolved, name: &str) -> Result<AttrFile> {
        let host = dir.host.join(name);
        let (file, host) = match self.kernel_read_open(&host) {
            Some(r) => r?,
            None => {
                let r = if name.contains('/') {
                    self.resolve_in(dir, name)?
                } else {
                    self.note(&host);
                    match open_regular(&dir.abs.join(name), &host) {
                        Err(Error::SymlinkLoop { .. }) => self.resolve_in(dir, name)?,
                        Err(e) => return Err(e),
                        Ok((file, _)) => return Ok(AttrFile { file, host }),
                    }
                };
                (open_regular(&r.abs, &r.host)?.0, r.host)
            }
        };
        Ok(AttrFile { file, host })
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
        if let Some(r) = self.kernel_read_open(&dir.host.join(name)) {
            let (file, host) = r?;
            return into_text(read_file_capped(file, &host)?, &host);
        }
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
    read_file_capped(file, host)
}

fn read_file_capped(file: File, host: &Path) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(4096);
    file.take(READ_CAP)
        .read_to_end(&mut buf)
        .map_err(|e| Error::from_io(host, e))?;
    Ok(buf)
}

fn read_capped_text(abs: &Path, host: &Path) -> Result<String> {
    into_text(read_capped(abs, host)?, host)
}

fn into_text(bytes: Vec<u8>, host: &Path) -> Result<String> {
    String::from_utf8(bytes).map_err(|_| Error::NotText {
        path: display(host),
    })
}

/// Whether `root` keeps attribute descriptors open by default: `<root>/sys/devices` is sysfs (one
/// `statfs`), or `GPUSCOUT_KEEP_OPEN=any` is set.
fn keep_open_default(root: &Path) -> bool {
    if std::env::var_os("GPUSCOUT_KEEP_OPEN").is_some_and(|v| v == "any") {
        return true;
    }
    is_sysfs(&root.join("sys/devices"))
}

/// Whether `path` lies on sysfs (one `statfs`).
fn is_sysfs(path: &Path) -> bool {
    #[allow(clippy::useless_conversion)] // f_type and the constant differ in width by target
    rustix::fs::statfs(path).is_ok_and(|s| i64::from(s.f_type) == i64::from(libc::SYSFS_MAGIC))
}

/// Open the root directory for the kernel resolver, when `openat2` works here.
fn open_root_dir(root: &Path) -> Option<Arc<RootDir>> {
    let fd = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    if !kernel_resolver_works(&fd) {
        return None;
    }
    let real = std::fs::canonicalize(root).ok()?;
    Some(Arc::new(RootDir { fd, real }))
}

/// A regular file held open by [`HostRoot::open_attr`], re-read from offset 0.
#[derive(Debug)]
pub struct AttrFile {
    file: File,
    host: PathBuf,
}

/// Bytes asked for by the first `pread` of an [`AttrFile`]: more than a page, so a sysfs
/// attribute (at most one page, produced whole by one `show()` call) arrives in one call.
const ATTR_FIRST_READ: usize = 4096 + 1;

impl AttrFile {
    /// The canonical host path of the file.
    pub fn host(&self) -> &Path {
        &self.host
    }

    /// The whole text of the file, read with `pread` at offset 0, capped at [`READ_CAP`]. A
    /// read that returns fewer bytes than asked is the whole file (sysfs produces an attribute
    /// in one `show()` call; a regular file reads short only at its end), so a sysfs attribute
    /// costs one system call. [`Error::is_gone`] tells a removed device from other failures.
    pub fn read(&self) -> Result<String> {
        let mut buf = vec![0u8; ATTR_FIRST_READ];
        let mut len = 0;
        loop {
            let n = rustix::io::pread(&self.file, &mut buf[len..], len as u64)
                .map_err(|e| Error::from_io(&self.host, e.into()))?;
            len += n;
            if n == 0 || len < buf.len() || len as u64 >= READ_CAP {
                break;
            }
            let grow = (buf.len() * 2).min(READ_CAP as usize);
            buf.resize(grow, 0);
        }
        buf.truncate(len);
        into_text(buf, &self.host)
    }
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

    /// The hostile cases, each answered by both resolvers: same value, same error kind, same
    /// error path, nothing outside the root. Where `openat2` does not work here, only the walk
    /// runs (and the test says so on stderr).
    #[test]
    fn both_resolvers_agree_on_hostile_trees() {
        let t = tempfile::tempdir().unwrap();
        let host = t.path().join("host");
        let p = |rel: &str| host.join(rel);
        std::fs::write(t.path().join("outside"), "escaped").unwrap();
        for d in ["usr/lib", "etc", "sys/devices/x", "sys/class", "dir"] {
            std::fs::create_dir_all(p(d)).unwrap();
        }
        std::fs::write(p("usr/lib/os-release"), "ID=talos\n").unwrap();
        std::fs::write(p("outside"), "inside").unwrap();
        std::fs::write(p("sys/devices/x/vendor"), "0x1002\n").unwrap();
        symlink("/usr/lib/os-release", p("etc/os-release")).unwrap();
        symlink("../../../../../../outside", p("sys/up")).unwrap();
        symlink("/../../outside", p("sys/abs-up")).unwrap();
        symlink("../devices/x", p("sys/class/x")).unwrap();
        symlink("/proc/self/root/outside", p("sys/magic")).unwrap();
        symlink("loop-b", p("loop-a")).unwrap();
        symlink("loop-a", p("loop-b")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            p("sys/fifo"),
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        File::create(p("big"))
            .unwrap()
            .set_len(100 * 1024 * 1024)
            .unwrap();

        let walk = HostRoot::new(&host).unwrap().with_resolver(Resolver::Walk);
        let kernel = HostRoot::new(&host)
            .unwrap()
            .with_resolver(Resolver::Kernel);
        assert_eq!(walk.resolver(), Resolver::Walk);
        let mut roots = vec![walk];
        if kernel.resolver() == Resolver::Kernel {
            roots.push(kernel);
        } else {
            eprintln!("openat2 does not work here: only the user-space walk was checked");
        }
        // What a read gives, reduced to something comparable across resolvers.
        let outcome = |r: Result<String>| match r {
            Ok(s) => format!("ok {}", s.trim()),
            Err(e) => format!("{} {}", e.metric_label(), e.path()),
        };
        let mut answers: Vec<Vec<String>> = Vec::new();
        for root in &roots {
            let dir = root.resolve("sys/class/x").unwrap();
            assert_eq!(dir.host, Path::new("sys/devices/x"));
            assert!(dir.abs.starts_with(&host));
            let a = vec![
                outcome(root.read_string("etc/os-release")),
                outcome(root.read_string("sys/up")),
                outcome(root.read_string("sys/abs-up")),
                outcome(root.read_string("../../outside")),
                outcome(root.read_string("/sys/../../outside")),
                outcome(root.read_string("sys/class/x/vendor")),
                outcome(root.read_attr(&dir, "vendor")),
                outcome(root.read_attr(&dir, "../x/vendor")),
                outcome(root.read_attr(&dir, "missing")),
                outcome(root.read_string("loop-a")),
                outcome(root.read_string("sys/fifo")),
                outcome(root.read_string("dir")),
                outcome(root.read_string("sys/devices/x/vendor/below-a-file")),
                outcome(root.open_attr(&dir, "vendor").and_then(|f| f.read())),
                outcome(root.open_attr(&dir, "../../fifo").map(|_| String::new())),
                format!("{}", root.read_bytes("big").unwrap().len()),
                format!("{:?}", root.resolve("sys/up").map(|r| r.host)),
            ];
            answers.push(a);
        }
        assert_eq!(
            answers[0],
            [
                "ok ID=talos",
                "ok inside",
                "ok inside",
                "ok inside",
                "ok inside",
                "ok 0x1002",
                "ok 0x1002",
                "ok 0x1002",
                "not_found /sys/devices/x/missing",
                "symlink_loop /loop-a",
                "not_a_file /sys/fifo",
                "not_a_file /dir",
                "not_found /sys/devices/x/vendor/below-a-file",
                "ok 0x1002",
                "not_a_file /sys/fifo",
                "262144",
                "Ok(\"outside\")",
            ]
        );
        for a in &answers[1..] {
            assert_eq!(a, &answers[0]);
        }
        // A magic link (`/proc/self/...`) is taken inside the root too: here it does not exist.
        for root in &roots {
            assert!(root.read_string("sys/magic").unwrap_err().is_not_found());
        }
    }

    #[test]
    fn a_kept_open_attribute_is_reread_from_the_start() {
        let (t, root) = tree();
        std::fs::create_dir_all(t.path().join("d")).unwrap();
        std::fs::write(t.path().join("d/busy"), "37\n").unwrap();
        let dir = root.resolve("d").unwrap();
        let f = root.open_attr(&dir, "busy").unwrap();
        assert_eq!(f.read().unwrap(), "37\n");
        // Rewritten in place, as sysfs regenerates a value: the next read sees the new one.
        std::fs::write(t.path().join("d/busy"), "5\n").unwrap();
        assert_eq!(f.read().unwrap(), "5\n");
        // Longer than the first read asks for: read on to the end.
        let long = "x".repeat(10_000);
        std::fs::write(t.path().join("d/busy"), &long).unwrap();
        assert_eq!(f.read().unwrap(), long);
        assert_eq!(f.host(), Path::new("d/busy"));
    }

    #[test]
    fn descriptors_are_kept_only_where_sys_devices_is_sysfs() {
        if std::env::var_os("GPUSCOUT_KEEP_OPEN").is_some() {
            eprintln!("GPUSCOUT_KEEP_OPEN is set: skipped");
            return;
        }
        let (t, root) = tree();
        std::fs::create_dir_all(t.path().join("sys/devices")).unwrap();
        assert!(!HostRoot::new(t.path()).unwrap().keeps_open());
        assert!(!root.keeps_open());
        // This machine's own /sys/devices, where it is sysfs (a container may not mount it).
        assert_eq!(
            HostRoot::new("/").unwrap().keeps_open(),
            is_sysfs(Path::new("/sys/devices"))
        );
        assert!(root.with_keep_open(true).keeps_open());
    }

    #[test]
    fn gone_means_a_removed_device_or_file() {
        let io = |e| Error::Io {
            path: "/x".into(),
            source: io::Error::from_raw_os_error(e),
        };
        assert!(io(libc::ENODEV).is_gone());
        assert!(io(libc::ESTALE).is_gone());
        assert!(
            Error::from_io(Path::new("x"), io::Error::from_raw_os_error(libc::ENOENT)).is_gone()
        );
        assert!(!io(libc::EIO).is_gone());
        assert!(!Error::NotAFile { path: "/x".into() }.is_gone());
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
