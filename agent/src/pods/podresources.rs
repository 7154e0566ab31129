//! Client of the kubelet's PodResources API v1 (`v1.PodResourcesLister`, vendored in
//! `proto/podresources/v1/api.proto`) over its Unix socket, with the tonic that the Talos API
//! client already uses: a lazy-free channel built per call with `tower::service_fn` dialing
//! `tokio::net::UnixStream` (wrapped in hyper-util's `TokioIo`). The URI is a placeholder; every
//! connection goes to the socket.
//!
//! Calls: `List` (devices assigned to each container, and DRA claims) and
//! `GetAllocatableResources` (every device id the kubelet can hand out). Both are bounded by
//! one deadline; a socket that does not exist is [`Error::NoSocket`] (not a Kubernetes node, or
//! the chart's mount is off), which the source reports as "nothing to say", not a failure.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Code generated from `proto/podresources/v1/api.proto` (`pod_resources_lister_client`,
/// `pod_resources_lister_server` for the tests' fake kubelet).
#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
pub mod proto {
    tonic::include_proto!("v1");
}

use proto::pod_resources_lister_client::PodResourcesListerClient;

/// Default socket path below the host root.
pub const DEFAULT_SOCKET: &str = "var/lib/kubelet/pod-resources/kubelet.sock";

/// What went wrong talking to the kubelet.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}: no kubelet PodResources socket")]
    NoSocket(String),
    #[error("{socket}: {reason}")]
    Connect { socket: String, reason: String },
    #[error("{socket}: {call}: {status}")]
    Call {
        socket: String,
        call: &'static str,
        status: String,
    },
    #[error("{socket}: no answer within {deadline:?}")]
    Deadline { socket: String, deadline: Duration },
}

impl Error {
    /// Bounded label value for logs and metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::NoSocket(_) => "no_socket",
            Error::Connect { .. } => "connect",
            Error::Call { .. } => "call",
            Error::Deadline { .. } => "deadline",
        }
    }
}

/// Devices of one resource given to one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assigned {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub resource: String,
    pub device_ids: Vec<String>,
}

/// Both answers of the kubelet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allocations {
    pub assigned: Vec<Assigned>,
    /// `GetAllocatableResources`: (resource, device ids).
    pub allocatable: Vec<(String, Vec<String>)>,
    /// DRA claim devices given to containers (not mapped to GPUs; counted).
    pub dynamic_devices: usize,
}

/// Ask the kubelet at `socket` (a path on the agent's filesystem, resolved through
/// [`crate::hostroot::HostRoot`] by the caller) for both lists.
pub async fn fetch(socket: &Path, deadline: Duration) -> Result<Allocations, Error> {
    let shown = socket.display().to_string();
    match tokio::time::timeout(deadline, fetch_inner(socket.to_path_buf(), &shown)).await {
        Ok(r) => r,
        Err(_) => Err(Error::Deadline {
            socket: shown,
            deadline,
        }),
    }
}

async fn fetch_inner(socket: PathBuf, shown: &str) -> Result<Allocations, Error> {
    let path = socket.clone();
    let channel = tonic::transport::Endpoint::from_static("http://kubelet.invalid")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let path = path.clone();
            async move {
                let s = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        }))
        .await
        .map_err(|e| Error::Connect {
            socket: shown.to_owned(),
            reason: chain(&e),
        })?;
    let mut client = PodResourcesListerClient::new(channel);
    let call = |call: &'static str, s: tonic::Status| Error::Call {
        socket: shown.to_owned(),
        call,
        status: format!("{:?}: {}", s.code(), s.message()),
    };
    let list = client
        .list(proto::ListPodResourcesRequest {})
        .await
        .map_err(|s| call("List", s))?
        .into_inner();
    let alloc = client
        .get_allocatable_resources(proto::AllocatableResourcesRequest {})
        .await
        .map_err(|s| call("GetAllocatableResources", s))?
        .into_inner();
    let mut out = Allocations::default();
    for p in list.pod_resources {
        for c in p.containers {
            for d in c.devices {
                out.assigned.push(Assigned {
                    namespace: p.namespace.clone(),
                    pod: p.name.clone(),
                    container: c.name.clone(),
                    resource: d.resource_name,
                    device_ids: d.device_ids,
                });
            }
            out.dynamic_devices += c
                .dynamic_resources
                .iter()
                .map(|d| d.claim_resources.len())
                .sum::<usize>();
        }
    }
    for d in alloc.devices {
        out.allocatable.push((d.resource_name, d.device_ids));
    }
    Ok(out)
}

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = s.source();
    }
    parts.join(": ")
}
