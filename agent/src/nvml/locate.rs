//! Where `libnvidia-ml.so.1` is loaded from.
//!
//! Order: `--nvml-lib PATH` (env `GPUSCOUT_NVML_LIB`), then the Talos locations under the host
//! root (`usr/local/glibc/usr/lib/libnvidia-ml.so.1` for Talos 1.8–1.12, `usr/local/lib/...`
//! from 1.13; see `docs/research/talos-extensions.md` §1), then the loader's default search
//! for `libnvidia-ml.so.1` (what the NVIDIA container toolkit injects into the pod).
//!
//! Host paths are resolved through [`HostRoot::resolve`], so the library's own symlinks
//! (`libnvidia-ml.so.1 -> libnvidia-ml.so.580.95.05`, or an absolute link) stay inside the host
//! root. A path that is absent is simply skipped; on a non-NVIDIA node every candidate is absent
//! and NVML is "absent", which is normal and not an error.

use crate::hostroot::HostRoot;
use std::path::{Path, PathBuf};

/// Talos locations of the NVML library, relative to the host root, newest layout last.
pub const TALOS_LIB_PATHS: [&str; 2] = [
    "usr/local/glibc/usr/lib/libnvidia-ml.so.1",
    "usr/local/lib/libnvidia-ml.so.1",
];

/// The name the dynamic loader searches for when nothing else is found.
pub const LOADER_NAME: &str = "libnvidia-ml.so.1";

/// The library to load, and why it was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LibChoice {
    /// Given with `--nvml-lib` / `GPUSCOUT_NVML_LIB`.
    Explicit(PathBuf),
    /// Found under the host root: the resolved path, and the host path it was found at.
    HostRoot {
        path: PathBuf,
        host_path: &'static str,
    },
    /// Nothing found: let the loader search for [`LOADER_NAME`].
    Loader,
}

impl LibChoice {
    /// What to pass to `dlopen`.
    pub fn load_path(&self) -> &Path {
        match self {
            LibChoice::Explicit(p) | LibChoice::HostRoot { path: p, .. } => p,
            LibChoice::Loader => Path::new(LOADER_NAME),
        }
    }

    /// For logs and errors.
    pub fn describe(&self) -> String {
        match self {
            LibChoice::Explicit(p) => format!("{} (--nvml-lib)", p.display()),
            LibChoice::HostRoot { path, host_path } => {
                format!("{} (host /{host_path})", path.display())
            }
            LibChoice::Loader => format!("{LOADER_NAME} (loader search path)"),
        }
    }
}

/// Pick the library: the explicit path, else the first Talos location present under `root`,
/// else the loader's search.
pub fn choose(root: &HostRoot, explicit: Option<&Path>) -> LibChoice {
    if let Some(p) = explicit {
        return LibChoice::Explicit(p.to_path_buf());
    }
    for host_path in TALOS_LIB_PATHS {
        if let Ok(r) = root.resolve(host_path) {
            return LibChoice::HostRoot {
                path: r.abs,
                host_path,
            };
        }
    }
    LibChoice::Loader
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn explicit_wins_then_talos_then_loader() {
        let dir = tempfile::tempdir().unwrap();
        let root = HostRoot::new(dir.path()).unwrap();
        assert_eq!(choose(&root, None), LibChoice::Loader);
        assert_eq!(
            choose(&root, Some(Path::new("/x/lib.so"))),
            LibChoice::Explicit("/x/lib.so".into())
        );

        // Talos 1.13 layout, with the library's own absolute symlink: it must stay in the root.
        let lib = dir.path().join("usr/local/lib");
        std::fs::create_dir_all(&lib).unwrap();
        std::fs::write(lib.join("libnvidia-ml.so.580.95.05"), b"").unwrap();
        symlink(
            "/usr/local/lib/libnvidia-ml.so.580.95.05",
            lib.join("libnvidia-ml.so.1"),
        )
        .unwrap();
        let c = choose(&root, None);
        assert_eq!(
            c,
            LibChoice::HostRoot {
                path: dir.path().join("usr/local/lib/libnvidia-ml.so.580.95.05"),
                host_path: TALOS_LIB_PATHS[1],
            }
        );

        // Talos 1.8-1.12 layout is preferred when present (glibc/lib -> usr/lib).
        let g = dir.path().join("usr/local/glibc/usr/lib");
        std::fs::create_dir_all(&g).unwrap();
        std::fs::write(g.join("libnvidia-ml.so.1"), b"").unwrap();
        match choose(&root, None) {
            LibChoice::HostRoot { host_path, .. } => assert_eq!(host_path, TALOS_LIB_PATHS[0]),
            other => panic!("unexpected {other:?}"),
        }
    }
}
