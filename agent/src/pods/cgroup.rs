//! pid → pod: the pod UID and container id in `/proc/<pid>/cgroup`. Pure text in, no I/O.
//!
//! The kubelet names a pod's cgroup after its UID and the runtime names the container's after
//! its id; both cgroup drivers and both runtimes are recognised (cgroup v1 lines and the v2
//! `0::` line alike; the first line that names a pod wins):
//!
//! | driver | runtime | container cgroup path |
//! |---|---|---|
//! | cgroupfs (Talos) | containerd | `/kubepods/burstable/pod<uid>/<id>` |
//! | cgroupfs | CRI-O | `/kubepods/burstable/pod<uid>/crio-<id>` |
//! | systemd | containerd | `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid with _>.slice/cri-containerd-<id>.scope` |
//! | systemd | CRI-O | `/kubepods.slice/…/kubepods-besteffort-pod<uid with _>.slice/crio-<id>.scope` |
//!
//! Guaranteed pods have no QoS level (`/kubepods/pod<uid>/…`, `kubepods-pod<uid>.slice`). The
//! kubelet's side is `pkg/kubelet/cm/cgroup_manager_linux.go` (systemd names escape `-` as `_`),
//! containerd's `cri-containerd` prefix and CRI-O's `crio-` prefix are their runtimes' scope
//! names. The path is searched anywhere, not from the root: seen from inside a container with
//! its own cgroup namespace the path is relative (`/../../pod<uid>/<id>`). CRI-O's
//! `crio-conmon-<id>.scope` (the monitor, not the container) gives the pod with no container.
//! Anything else (system services, Talos `/system/…`, `/podruntime/…`) is not a pod: `None`.

/// The pod (and container, when the process is in one) a process belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodRef {
    /// Pod UID with dashes (`6f0f1c2e-…`), or the 32-hex config hash of a static pod.
    pub uid: String,
    /// 64-hex container id, when the process runs in a container of the pod.
    pub container_id: Option<String>,
}

fn is_uid(s: &str) -> bool {
    (32..=36).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The pod UID a path segment names, if it is a pod's cgroup.
fn pod_uid(seg: &str) -> Option<String> {
    if let Some(rest) = seg.strip_suffix(".slice") {
        // systemd: kubepods-burstable-pod<uid_with_underscores>.slice
        let at = rest.rfind("-pod")?;
        let uid = rest[at + 4..].replace('_', "-");
        return is_uid(&uid).then_some(uid);
    }
    let uid = seg.strip_prefix("pod")?;
    is_uid(uid).then(|| uid.to_owned())
}

/// The container id a path segment names, if it is a container's cgroup.
fn container_id(seg: &str) -> Option<String> {
    let s = seg.strip_suffix(".scope").unwrap_or(seg);
    if s.starts_with("crio-conmon-") {
        return None;
    }
    let id = ["cri-containerd-", "crio-", "docker-", "containerd-"]
        .iter()
        .find_map(|p| s.strip_prefix(p))
        .unwrap_or(s);
    is_container_id(id).then(|| id.to_ascii_lowercase())
}

/// Parse the text of `/proc/<pid>/cgroup`. `None` when the process is not in a pod.
pub fn parse(text: &str) -> Option<PodRef> {
    for line in text.lines() {
        // hierarchy-id:controllers:path; the path may itself contain ':' only in odd setups.
        let Some(path) = line.splitn(3, ':').nth(2) else {
            continue;
        };
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        for (i, seg) in segs.iter().enumerate() {
            if let Some(uid) = pod_uid(seg) {
                let container_id = segs.get(i + 1).and_then(|s| container_id(s));
                return Some(PodRef { uid, container_id });
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "7d5b6f3a-2c1e-4b8f-9a0d-3e6f1c2b4a59";
    const CID: &str = "3f1c9e2a7b4d6e8f0a1b2c3d4e5f60718293a4b5c6d7e8f9012345678abcdef0";

    #[test]
    fn cgroupfs_containerd_talos() {
        let t = format!("0::/kubepods/besteffort/pod{UID}/{CID}\n");
        let p = parse(&t).unwrap();
        assert_eq!(p.uid, UID);
        assert_eq!(p.container_id.as_deref(), Some(CID));
        // Guaranteed QoS has no level
        let t = format!("0::/kubepods/pod{UID}/{CID}\n");
        assert_eq!(parse(&t).unwrap().uid, UID);
    }

    #[test]
    fn systemd_containerd_and_crio() {
        let u = UID.replace('-', "_");
        let t = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/cri-containerd-{CID}.scope\n"
        );
        let p = parse(&t).unwrap();
        assert_eq!(
            (p.uid.as_str(), p.container_id.as_deref()),
            (UID, Some(CID))
        );
        let t = format!("0::/kubepods.slice/kubepods-pod{u}.slice/crio-{CID}.scope\n");
        assert_eq!(parse(&t).unwrap().container_id.as_deref(), Some(CID));
        let t = format!("0::/kubepods.slice/kubepods-pod{u}.slice/crio-conmon-{CID}.scope\n");
        let p = parse(&t).unwrap();
        assert_eq!((p.uid.as_str(), p.container_id), (UID, None));
    }

    #[test]
    fn cgroupfs_crio_v1_and_namespaced_paths() {
        let t = format!(
            "12:pids:/kubepods/burstable/pod{UID}/crio-{CID}\n11:memory:/kubepods/burstable/pod{UID}/crio-{CID}\n"
        );
        assert_eq!(parse(&t).unwrap().container_id.as_deref(), Some(CID));
        // seen from a container with its own cgroup namespace
        let t = format!("0::/../../pod{UID}/{CID}\n");
        assert_eq!(parse(&t).unwrap().uid, UID);
        // a static pod's UID is the 32-hex config hash
        let t = format!("0::/kubepods/burstable/pod0123456789abcdef0123456789abcdef/{CID}\n");
        assert_eq!(parse(&t).unwrap().uid, "0123456789abcdef0123456789abcdef");
    }

    #[test]
    fn host_processes_are_not_pods() {
        assert_eq!(parse("0::/system/runtime\n"), None);
        assert_eq!(parse("0::/podruntime/kubelet\n"), None);
        assert_eq!(
            parse("0::/user.slice/user-1000.slice/session-2.scope\n"),
            None
        );
        assert_eq!(parse("0::/kubepods/burstable/podnot-a-uid/x\n"), None);
        assert_eq!(parse(""), None);
    }
}
