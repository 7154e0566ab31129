//! The host paths the agent reads, as one table ([`MOUNTS`]).
//!
//! The Helm chart's privileged tier mounts exactly these, read-only, at the same places under
//! `/host` (the agent runs with `--root /host`); nothing else of the host is visible to it. The
//! table is exported by the hidden command `gpuscout host-paths` into
//! `charts/gpuscout/files/host-paths.yaml`, which the DaemonSet template renders its volumes
//! from. Tests keep the three in step: every read of `discover` and of a full scrape on every
//! fixture host root, recorded by [`HostRoot::recording`](crate::hostroot::HostRoot::recording),
//! must fall inside [`MOUNTS`] ([`uncovered`]); the chart file must equal [`chart_file`]; the
//! rendered DaemonSet must mount exactly [`MOUNTS`].
//!
//! A mount is the smallest directory (or file) that holds what is read *and exists on every
//! Linux node the chart runs on*: a hostPath that is missing stops the pod (with a type check)
//! or makes the container runtime create it on the host (without one). So
//! `/proc/driver/nvidia` (present only while the nvidia module is loaded) is read through
//! `/proc/driver` (created by the kernel at boot), and the NVML library directories of Talos
//! (`/usr/local/glibc/usr/lib`, `/usr/local/lib`, present only with the NVIDIA extensions)
//! through `/usr/local` (in the Talos rootfs: siderolabs/talos `Dockerfile`, `mkdir -pv
//! /rootfs/{…,usr/local/share,…}`). [`Mount::reads`] narrows each mount down to what is read in
//! it, and the recording test holds the agent to that too.
//!
//! Not in the table, on purpose: `/dev` (NVML opens the container's own `/dev/nvidia*`, which
//! the NVIDIA runtime class or a privileged container provides; the device cgroup blocks
//! hostPath device nodes anyway), `/lib/modules` (module state comes from `/proc/modules` and
//! `/sys/module`), `/proc/<pid>` (read only by the optional per-process scan of [`crate::pods`], whose chart
//! values mount `/proc`, `/var/log/pods`, `/var/log/containers` and the kubelet's
//! `pod-resources` directory as volumes of their own), and everything under `/etc`
//! but the two files below (kubelet credentials and other secrets live there).
//!
//! `/etc/extensions.yaml` exists only on Talos, so it is [`Mount::talos_only`]: the chart mounts
//! it only with `hostPaths.talosExtensionsFile`, without a hostPath type check (Talos runs the
//! kubelet in its own mount namespace, which does not contain that file: siderolabs/talos
//! `internal/app/machined/pkg/system/services/kubelet.go` mounts only `/etc/os-release`,
//! `/etc/kubernetes`, `/etc/cni` and `/etc/machine-id` of `/etc`). Talos ≥ 1.8 publishes the
//! same list as `extensions.talos.dev/*` Node labels, which the agent reads anyway.

use serde::Serialize;

/// What a mount is on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Kind {
    Directory,
    File,
}

/// One host path the chart mounts read-only at `/host/<path>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Mount {
    /// Volume name without the chart's `host-` prefix (DNS-1123 label).
    pub name: &'static str,
    /// Host path, absolute.
    pub path: &'static str,
    pub kind: Kind,
    /// What is read inside `path`, relative to it: a path (itself and everything below it) or a
    /// prefix ending in `*`; `""` is everything.
    pub reads: &'static [&'static str],
    /// Present only on Talos: mounted only when the chart is told the nodes run Talos.
    pub talos_only: bool,
    /// Whether the kubelet may check the path's type (`hostPath.type`) before mounting.
    pub type_check: bool,
    /// Why the agent reads it.
    pub why: &'static str,
}

/// Every host path the agent reads, grouped by the mount that holds it.
pub const MOUNTS: &[Mount] = &[
    Mount {
        name: "sys-bus",
        path: "/sys/bus",
        kind: Kind::Directory,
        reads: &["pci"],
        talos_only: false,
        type_check: true,
        why: "PCI functions (sys/bus/pci/devices) and their driver links",
    },
    Mount {
        name: "sys-class",
        path: "/sys/class",
        kind: Kind::Directory,
        reads: &["kfd"],
        talos_only: false,
        type_check: true,
        why: "the AMD KFD topology (sys/class/kfd, a link into sys/devices/virtual)",
    },
    Mount {
        name: "sys-devices",
        path: "/sys/devices",
        kind: Kind::Directory,
        reads: &[""],
        talos_only: false,
        type_check: true,
        why: "device attributes: IDs, link, SR-IOV, DRM cards, hwmon, GT clocks, KFD nodes",
    },
    Mount {
        name: "sys-module",
        path: "/sys/module",
        kind: Kind::Directory,
        reads: &[""],
        talos_only: false,
        type_check: true,
        why: "kernel modules: built-in ones, version, taint, initstate",
    },
    Mount {
        name: "proc-modules",
        path: "/proc/modules",
        kind: Kind::File,
        reads: &[""],
        talos_only: false,
        type_check: true,
        why: "loaded kernel modules",
    },
    Mount {
        name: "proc-osrelease",
        path: "/proc/sys/kernel/osrelease",
        kind: Kind::File,
        reads: &[""],
        talos_only: false,
        type_check: true,
        why: "kernel release",
    },
    Mount {
        name: "proc-hostname",
        path: "/proc/sys/kernel/hostname",
        kind: Kind::File,
        reads: &[""],
        talos_only: false,
        type_check: true,
        why: "the report's node name when --node-name / NODE_NAME is not set",
    },
    Mount {
        name: "proc-driver",
        path: "/proc/driver",
        kind: Kind::Directory,
        reads: &["nvidia"],
        talos_only: false,
        type_check: true,
        why: "NVIDIA kernel module version, per-GPU information and MIG capabilities",
    },
    Mount {
        name: "os-release",
        path: "/etc/os-release",
        kind: Kind::File,
        reads: &[""],
        talos_only: false,
        type_check: true,
        why: "operating system and Talos version",
    },
    Mount {
        name: "usr-lib",
        path: "/usr/lib",
        kind: Kind::Directory,
        reads: &["os-release", "firmware"],
        talos_only: false,
        type_check: true,
        why: "os-release when /etc has none; firmware files (Talos >= 1.10)",
    },
    Mount {
        name: "lib",
        path: "/lib",
        kind: Kind::Directory,
        reads: &["firmware"],
        talos_only: false,
        type_check: true,
        why: "firmware files (Talos < 1.10, other distributions)",
    },
    Mount {
        name: "usr-local",
        path: "/usr/local",
        kind: Kind::Directory,
        reads: &["glibc/usr/lib/libnvidia-ml.so*", "lib/libnvidia-ml.so*"],
        talos_only: false,
        type_check: true,
        why: "the NVML library of the Talos NVIDIA extensions (1.8-1.12: glibc/usr/lib, 1.13+: lib)",
    },
    Mount {
        name: "talos-extensions",
        path: "/etc/extensions.yaml",
        kind: Kind::File,
        reads: &[""],
        talos_only: true,
        type_check: false,
        why: "Talos system extensions installed (also published as Node labels since Talos 1.8)",
    },
];

/// The mount and read pattern that cover a host path (`/sys/bus/pci/devices/0000:01:00.0`),
/// if any.
pub fn covering(path: &str) -> Option<(&'static Mount, &'static str)> {
    MOUNTS.iter().find_map(|m| {
        let rest = if path == m.path {
            ""
        } else {
            path.strip_prefix(m.path)?.strip_prefix('/')?
        };
        m.reads
            .iter()
            .find(|r| read_matches(r, rest))
            .map(|r| (m, *r))
    })
}

fn read_matches(pattern: &str, rest: &str) -> bool {
    if pattern.is_empty() || rest.is_empty() {
        return true;
    }
    // A directory on the way to what is read (walked through or listed) counts too.
    if pattern
        .strip_prefix(rest)
        .is_some_and(|r| r.starts_with('/'))
    {
        return true;
    }
    match pattern.strip_suffix('*') {
        Some(prefix) => rest.starts_with(prefix),
        None => {
            rest == pattern
                || rest
                    .strip_prefix(pattern)
                    .is_some_and(|r| r.starts_with('/'))
        }
    }
}

/// The paths of `paths` (as a [`ReadLog`](crate::hostroot::ReadLog) records them) that no
/// mount covers.
pub fn uncovered<'a>(paths: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    paths
        .into_iter()
        .filter(|p| covering(p).is_none())
        .collect()
}

/// The chart's copy of the table (`charts/gpuscout/files/host-paths.yaml`): a comment, then
/// `mounts:` as YAML.
pub fn chart_file() -> String {
    #[derive(Serialize)]
    struct File {
        mounts: &'static [Mount],
    }
    let body = serde_norway::to_string(&File { mounts: MOUNTS })
        .unwrap_or_else(|e| format!("# serialisation failed: {e}\n"));
    format!(
        "# Generated by `gpuscout host-paths` from agent/src/hostpaths.rs; do not edit.\n\
         # The DaemonSet mounts each path read-only at /host/<path> (tests fail on drift).\n{body}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_covered_by_their_mount_only() {
        assert_eq!(
            covering("/sys/bus/pci/devices/0000:01:00.0").map(|(m, _)| m.name),
            Some("sys-bus")
        );
        assert!(covering("/sys/bus/usb/devices").is_none());
        assert!(covering("/sys/bus").is_some(), "the mount itself");
        assert!(covering("/proc/driver/nvidia/gpus/0000:01:00.0/information").is_some());
        assert!(covering("/proc/driver/rtc").is_none());
        assert!(covering("/usr/local/lib/libnvidia-ml.so.580.95.05").is_some());
        assert!(covering("/usr/local/lib/libcuda.so.1").is_none());
        assert!(covering("/usr/local/glibc/usr/lib").is_some(), "on the way");
        assert!(covering("/usr/lib/firmware/amdgpu/gc_11_0_0_me.bin").is_some());
        assert!(covering("/usr/lib/firmwarex").is_none());
        assert!(covering("/etc/kubernetes/kubelet.conf").is_none());
        assert!(covering("/proc/1/environ").is_none());
        assert!(covering("/sys/kernel/iommu_groups").is_none());
        assert_eq!(
            uncovered(["/sys/module/amdgpu", "/etc/shadow"]),
            ["/etc/shadow"]
        );
    }

    #[test]
    fn names_are_unique_volume_names_and_paths_absolute() {
        let mut names: Vec<_> = MOUNTS.iter().map(|m| m.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), MOUNTS.len());
        for m in MOUNTS {
            assert!(
                m.path.starts_with('/') && !m.path.ends_with('/'),
                "{}",
                m.path
            );
            assert!(
                m.name.len() <= 58
                    && m.name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{}",
                m.name
            );
            // no mount inside another: each host path is mounted once
            for o in MOUNTS {
                assert!(
                    o.path == m.path || !o.path.starts_with(&format!("{}/", m.path)),
                    "{} inside {}",
                    o.path,
                    m.path
                );
            }
        }
    }

    #[test]
    fn chart_file_lists_every_mount() {
        let f = chart_file();
        for m in MOUNTS {
            assert!(f.contains(&format!("path: {}", m.path)), "{f}");
        }
    }
}
