//! Pod UID and container id → namespace, pod and container name, from the node itself: the
//! kubelet's log directories, read through [`HostRoot`]. No Kubernetes API, so no RBAC.
//!
//! - `/var/log/pods/<namespace>_<pod>_<uid>/` (one directory per pod the kubelet runs; it is
//!   removed with the pod): UID → namespace and pod name.
//! - `/var/log/containers/<pod>_<namespace>_<container>-<container id>.log` (a symlink per
//!   container): container id → container name.
//!
//! Namespace, pod and container names are DNS labels/subdomains and cannot contain `_`, so the
//! split is unambiguous. A directory that is missing (not a Kubernetes node, or not mounted)
//! gives an empty index: processes of unknown pods are then exported under their UID (see
//! [`super::usage`]). Entries that do not have these shapes are skipped and counted.

use crate::hostroot::HostRoot;
use std::collections::HashMap;

/// Where a pod's names come from.
pub const PODS_DIR: &str = "var/log/pods";
pub const CONTAINERS_DIR: &str = "var/log/containers";

/// Names of one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodName {
    pub namespace: String,
    pub pod: String,
}

/// The names the node knows, as of one listing.
#[derive(Debug, Clone, Default)]
pub struct PodIndex {
    pub pods: HashMap<String, PodName>,
    /// container id → container name.
    pub containers: HashMap<String, String>,
    /// Entries of the two directories that have neither shape.
    pub malformed: usize,
}

impl PodIndex {
    /// List both directories. Missing directories give an empty index.
    pub fn read(root: &HostRoot) -> Result<Self, crate::hostroot::Error> {
        let mut ix = PodIndex::default();
        match root.list_dir(PODS_DIR) {
            Ok(names) => {
                for n in names {
                    match parse_pod_dir(&n) {
                        Some((uid, name)) => {
                            ix.pods.insert(uid, name);
                        }
                        None => ix.malformed += 1,
                    }
                }
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        match root.list_dir(CONTAINERS_DIR) {
            Ok(names) => {
                for n in names {
                    match parse_container_log(&n) {
                        Some((id, container)) => {
                            ix.containers.insert(id, container);
                        }
                        None => ix.malformed += 1,
                    }
                }
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        Ok(ix)
    }
}

/// `<namespace>_<pod>_<uid>` → (uid, names).
pub fn parse_pod_dir(name: &str) -> Option<(String, PodName)> {
    let mut it = name.splitn(3, '_');
    let (ns, pod, uid) = (it.next()?, it.next()?, it.next()?);
    if ns.is_empty() || pod.is_empty() || uid.is_empty() || uid.contains('_') {
        return None;
    }
    Some((
        uid.to_owned(),
        PodName {
            namespace: ns.to_owned(),
            pod: pod.to_owned(),
        },
    ))
}

/// `<pod>_<namespace>_<container>-<64 hex>.log` → (container id, container name).
pub fn parse_container_log(name: &str) -> Option<(String, String)> {
    let stem = name.strip_suffix(".log")?;
    let (rest, id) = stem.rsplit_once('-')?;
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut it = rest.splitn(3, '_');
    let (_pod, _ns, container) = (it.next()?, it.next()?, it.next()?);
    if container.is_empty() || container.contains('_') {
        return None;
    }
    Some((id.to_ascii_lowercase(), container.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_directories() {
        let (uid, n) =
            parse_pod_dir("media_jellyfin-7c9d8f6b5-x2x4q_1f2e3d4c-5b6a-4789-8a9b-0c1d2e3f4a5b")
                .unwrap();
        assert_eq!(uid, "1f2e3d4c-5b6a-4789-8a9b-0c1d2e3f4a5b");
        assert_eq!(n.namespace, "media");
        assert_eq!(n.pod, "jellyfin-7c9d8f6b5-x2x4q");
        assert!(parse_pod_dir("garbage").is_none());
        assert!(parse_pod_dir("a_b_c_d").is_none());
    }

    #[test]
    fn container_logs() {
        let id = "a".repeat(64);
        let (cid, c) = parse_container_log(&format!(
            "jellyfin-7c9d8f6b5-x2x4q_media_transcode-sidecar-{id}.log"
        ))
        .unwrap();
        assert_eq!(cid, id);
        assert_eq!(c, "transcode-sidecar");
        assert!(parse_container_log("x_y_z-123.log").is_none());
        assert!(parse_container_log(&format!("x_y-{id}.log")).is_none());
    }
}
