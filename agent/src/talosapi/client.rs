//! gRPC client for the COSI `cosi.resource.State` service of Talos' apid (Get and List).
//!
//! Mutual TLS with the talosconfig's CA, certificate and key (rustls with ring, as kube uses).
//! Every call carries the gRPC metadata `node: <this node's IP>`, so apid proxies it one-to-one
//! to our own node (COSI calls reject the one-to-many `nodes` key). Every call, and the
//! connection itself, is bounded by one deadline; a hung server gives [`Error::Deadline`].
//!
//! Errors are one line: the endpoint plus the innermost causes (refused, TLS alert, ...).

use super::config::{Endpoint, TalosConfig, TalosConfigError};
use super::proto::state_client::StateClient;
use super::proto::{GetRequest, ListRequest, Resource};
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// Everything needed to reach the Talos API for this node.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Parsed talosconfig.
    pub config: TalosConfig,
    /// Endpoint to dial; `None` takes the talosconfig's first endpoint.
    pub endpoint: Option<String>,
    /// IP (or name) of the node to address, sent as gRPC metadata `node`.
    pub node: String,
    /// Bound on connecting and on each call.
    pub deadline: Duration,
}

/// Why the Talos API could not be used. Display is one line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] TalosConfigError),
    #[error("talosconfig lists no endpoint and none was given (--talos-endpoint)")]
    NoEndpoint,
    #[error(
        "no node address: set --talos-node (env GPUSCOUT_TALOS_NODE) to this node's IP, from the downward API status.hostIP"
    )]
    NoNode,
    #[error("the Talos API is not enabled (--talos-api)")]
    Disabled,
    #[error("--talos-timeout {0}: must be a number of seconds between 0 and 3600")]
    BadTimeout(f64),
    #[error("node address {0:?} is not a valid gRPC metadata value")]
    BadNode(String),
    #[error("Talos API TLS setup: {0}")]
    Tls(String),
    #[error("cannot reach the Talos API at {endpoint}: {reason}")]
    Connect { endpoint: String, reason: String },
    #[error("Talos API at {endpoint} did not answer within {}s", .deadline.as_secs_f64())]
    Deadline {
        endpoint: String,
        deadline: Duration,
    },
    #[error("Talos API at {endpoint} refused the client certificate: {reason}")]
    Rejected { endpoint: String, reason: String },
    #[error("Talos API {call} {rtype}: {code:?}: {message}{}", hint_for(*.code))]
    Rpc {
        call: &'static str,
        rtype: String,
        code: tonic::Code,
        message: String,
    },
}

fn hint_for(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::PermissionDenied => {
            " (the ServiceAccount needs roles [os:reader] and its namespace in machine.features.kubernetesTalosAPIAccess.allowedKubernetesNamespaces)"
        }
        _ => "",
    }
}

impl Error {
    /// Bounded label for the `gpuscout_errors_total{source="talos-api",kind}` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Config(_)
            | Error::NoEndpoint
            | Error::NoNode
            | Error::BadTimeout(_)
            | Error::Disabled
            | Error::BadNode(_) => "config",
            Error::Tls(_) => "tls",
            Error::Connect { .. } => "connect",
            Error::Deadline { .. } => "deadline",
            Error::Rejected { .. } => "rejected",
            Error::Rpc { .. } => "rpc",
        }
    }
}

/// The causes of an error joined into one line, outermost first, repeated texts dropped.
pub(crate) fn cause_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        let s = e.to_string().replace('\n', " ");
        if !s.is_empty() && !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = e.source();
    }
    parts.join(": ")
}

/// A connected client for one node.
#[derive(Debug, Clone)]
pub struct Client {
    inner: StateClient<Channel>,
    node: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    endpoint: String,
    deadline: Duration,
}

impl Client {
    /// Connect (TCP, TLS, HTTP/2) within the deadline.
    pub async fn connect(s: &Settings) -> Result<Self, Error> {
        let raw = match &s.endpoint {
            Some(e) => e.clone(),
            None => s
                .config
                .endpoints
                .first()
                .cloned()
                .ok_or(Error::NoEndpoint)?,
        };
        let ep = Endpoint::parse(&raw)?;
        let node = s.node.parse().map_err(|_| Error::BadNode(s.node.clone()))?;
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&s.config.ca_pem))
            .identity(Identity::from_pem(&s.config.crt_pem, &s.config.key_pem))
            .domain_name(ep.server_name.clone());
        let endpoint = Channel::from_shared(ep.url.clone())
            .map_err(|e| Error::Connect {
                endpoint: ep.url.clone(),
                reason: cause_chain(&e),
            })?
            .tls_config(tls)
            .map_err(|e| Error::Tls(cause_chain(&e)))?
            .connect_timeout(s.deadline)
            .timeout(s.deadline);
        let channel = match tokio::time::timeout(s.deadline, endpoint.connect()).await {
            Err(_) => {
                return Err(Error::Deadline {
                    endpoint: ep.url,
                    deadline: s.deadline,
                });
            }
            Ok(Err(e)) => return Err(classify_transport(&ep.url, &e, s.deadline)),
            Ok(Ok(c)) => c,
        };
        Ok(Client {
            inner: StateClient::new(channel),
            node,
            endpoint: ep.url,
            deadline: s.deadline,
        })
    }

    /// The URL this client talks to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        req.set_timeout(self.deadline);
        req.metadata_mut().insert("node", self.node.clone());
        req
    }

    /// `State/Get`: one resource. `Ok(None)` when the server answers NotFound.
    pub async fn get(
        &self,
        namespace: &str,
        rtype: &str,
        id: &str,
    ) -> Result<Option<Resource>, Error> {
        let req = self.request(GetRequest {
            namespace: namespace.to_owned(),
            r#type: rtype.to_owned(),
            id: id.to_owned(),
        });
        let mut c = self.inner.clone();
        let res = tokio::time::timeout(self.deadline, c.get(req)).await;
        match res {
            Err(_) => Err(self.deadline_error()),
            Ok(Err(st)) if st.code() == tonic::Code::NotFound => Ok(None),
            Ok(Err(st)) => Err(self.status_error("Get", rtype, st)),
            Ok(Ok(r)) => Ok(r.into_inner().resource),
        }
    }

    /// `State/List`: every resource of a type, the whole stream read within the deadline.
    pub async fn list(&self, namespace: &str, rtype: &str) -> Result<Vec<Resource>, Error> {
        let req = self.request(ListRequest {
            namespace: namespace.to_owned(),
            r#type: rtype.to_owned(),
        });
        let mut c = self.inner.clone();
        let all = async move {
            let mut stream = c.list(req).await?.into_inner();
            let mut out = Vec::new();
            while let Some(item) = stream.message().await? {
                if let Some(r) = item.resource {
                    out.push(r);
                }
            }
            Ok::<_, tonic::Status>(out)
        };
        match tokio::time::timeout(self.deadline, all).await {
            Err(_) => Err(self.deadline_error()),
            Ok(Err(st)) => Err(self.status_error("List", rtype, st)),
            Ok(Ok(v)) => Ok(v),
        }
    }

    fn deadline_error(&self) -> Error {
        Error::Deadline {
            endpoint: self.endpoint.clone(),
            deadline: self.deadline,
        }
    }

    fn status_error(&self, call: &'static str, rtype: &str, st: tonic::Status) -> Error {
        let detail = std::error::Error::source(&st)
            .map(cause_chain)
            .unwrap_or_default();
        let text = format!("{} {}", st.message(), detail).to_lowercase();
        if st.code() == tonic::Code::DeadlineExceeded || text.contains("timeout expired") {
            return self.deadline_error();
        }
        if looks_like_cert_rejection(&text) {
            let reason = if detail.is_empty() {
                st.message().to_owned()
            } else {
                detail
            };
            return Error::Rejected {
                endpoint: self.endpoint.clone(),
                reason: format!("{reason} (is the talosconfig from this cluster's Talos CA?)"),
            };
        }
        if st.code() == tonic::Code::Unavailable
            || (st.code() == tonic::Code::Unknown && !detail.is_empty())
        {
            let reason = if detail.is_empty() {
                st.message().to_owned()
            } else {
                detail
            };
            return Error::Connect {
                endpoint: self.endpoint.clone(),
                reason,
            };
        }
        Error::Rpc {
            call,
            rtype: rtype.to_owned(),
            code: st.code(),
            message: st.message().replace('\n', " "),
        }
    }
}

fn looks_like_cert_rejection(text: &str) -> bool {
    [
        "alert",
        "certificate",
        "unknownca",
        "unknown_ca",
        "bad_certificate",
        "badcertificate",
    ]
    .iter()
    .any(|k| text.contains(k))
}

fn classify_transport(url: &str, e: &tonic::transport::Error, deadline: Duration) -> Error {
    let reason = cause_chain(e);
    let lower = reason.to_lowercase();
    if lower.contains("timed out") || lower.contains("timeout") {
        return Error::Deadline {
            endpoint: url.to_owned(),
            deadline,
        };
    }
    if looks_like_cert_rejection(&lower) && !lower.contains("invalid peer certificate") {
        return Error::Rejected {
            endpoint: url.to_owned(),
            reason,
        };
    }
    let reason = if lower.contains("invalid peer certificate") {
        format!(
            "{reason} (apid's certificate is not signed by the talosconfig's CA, or does not name the endpoint host)"
        )
    } else {
        reason
    };
    Error::Connect {
        endpoint: url.to_owned(),
        reason,
    }
}
