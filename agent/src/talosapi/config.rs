//! The talosconfig the `talos.dev/v1alpha1` ServiceAccount secret carries, and where to connect.
//!
//! Reads one file **inside the pod** (default `/var/run/secrets/talos.dev/config`, the secret's
//! `config` key mounted at Talos' `ServiceAccountMountPath`). It is not a host file, so it is not
//! read through `HostRoot`. Shape (Talos `clientconfig`):
//!
//! ```text
//! context: default
//! contexts:
//!   default:
//!     endpoints: [talos.default]      # the `talos` Service in `default`, port 50000
//!     ca:  <base64 PEM: Talos OS CA>
//!     crt: <base64 PEM: client certificate carrying the roles, e.g. os:reader>
//!     key: <base64 PEM: its key; Talos writes Ed25519 keys as "ED25519 PRIVATE KEY">
//! ```
//!
//! A missing or malformed file is a [`Error`] naming the path and what is wrong; nothing here
//! panics on the file's content.

use base64::Engine as _;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

/// Where the ServiceAccount secret is mounted in the pod, plus its one key.
pub const DEFAULT_CONFIG_PATH: &str = "/var/run/secrets/talos.dev/config";
/// apid's port (Talos `constants.ApidPort`).
pub const APID_PORT: u16 = 50000;
/// Larger than any talosconfig (three PEMs); protects against a wrong path such as a device.
const MAX_CONFIG_BYTES: u64 = 256 * 1024;

/// What can be wrong with the talosconfig.
#[derive(Debug, thiserror::Error)]
pub enum TalosConfigError {
    #[error(
        "cannot read talosconfig {path}: {source} (is the talos.dev/v1alpha1 ServiceAccount secret mounted?)"
    )]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("talosconfig {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("bad Talos API endpoint {endpoint:?}: {reason}")]
    Endpoint { endpoint: String, reason: String },
}

#[derive(Debug, Deserialize)]
struct RawConfig {
    #[serde(default)]
    context: Option<String>,
    #[serde(default)]
    contexts: BTreeMap<String, RawContext>,
}

#[derive(Debug, Deserialize)]
struct RawContext {
    #[serde(default)]
    endpoints: Vec<String>,
    #[serde(default)]
    nodes: Vec<String>,
    #[serde(default)]
    ca: Option<String>,
    #[serde(default)]
    crt: Option<String>,
    #[serde(default)]
    key: Option<String>,
}

/// The selected context of a talosconfig, with its PEMs decoded and checked.
#[derive(Clone, PartialEq, Eq)]
pub struct TalosConfig {
    /// Name of the context used.
    pub context: String,
    /// `endpoints` as written (`talos.default`, `10.0.0.1:50000`, ...).
    pub endpoints: Vec<String>,
    /// `nodes` as written; the ServiceAccount's config has none.
    pub nodes: Vec<String>,
    /// PEM of the Talos OS CA that signs apid's certificate.
    pub ca_pem: Vec<u8>,
    /// PEM of the client certificate.
    pub crt_pem: Vec<u8>,
    /// PEM of the client key, relabelled so that rustls reads it (see [`normalise_key_pem`]).
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for TalosConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("TalosConfig")
            .field("context", &self.context)
            .field("endpoints", &self.endpoints)
            .field("nodes", &self.nodes)
            .finish_non_exhaustive()
    }
}

impl TalosConfig {
    /// Read and check the talosconfig at `path`.
    pub fn load(path: &Path) -> Result<Self, TalosConfigError> {
        let read_err = |source| TalosConfigError::Read {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_err)?;
        let mut text = String::new();
        file.take(MAX_CONFIG_BYTES)
            .read_to_string(&mut text)
            .map_err(read_err)?;
        Self::parse(&text).map_err(|reason| TalosConfigError::Invalid {
            path: path.to_owned(),
            reason,
        })
    }

    /// Parse a talosconfig's text. The error is a one-line reason.
    pub fn parse(text: &str) -> Result<Self, String> {
        crate::parse::check_yaml_bounds(text).map_err(|e| format!("not a talosconfig: {e}"))?;
        let raw: RawConfig =
            serde_norway::from_str(text).map_err(|e| format!("not a talosconfig: {e}"))?;
        let name = match raw.context {
            Some(c) if !c.is_empty() => c,
            _ => match raw.contexts.keys().next() {
                Some(k) if raw.contexts.len() == 1 => k.clone(),
                _ => return Err("no `context` selected".to_owned()),
            },
        };
        let ctx = raw
            .contexts
            .get(&name)
            .ok_or_else(|| format!("context {name:?} is not under `contexts`"))?;
        let ca_pem = decode_pem_field(&name, "ca", ctx.ca.as_deref())?;
        let crt_pem = decode_pem_field(&name, "crt", ctx.crt.as_deref())?;
        let key_pem = normalise_key_pem(&decode_pem_field(&name, "key", ctx.key.as_deref())?);
        if CertificateDer::pem_slice_iter(&ca_pem).next().is_none() {
            return Err(format!("context {name:?}: `ca` holds no PEM certificate"));
        }
        if CertificateDer::pem_slice_iter(&crt_pem).next().is_none() {
            return Err(format!("context {name:?}: `crt` holds no PEM certificate"));
        }
        PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| format!("context {name:?}: `key` is not a PEM private key ({e})"))?;
        Ok(TalosConfig {
            context: name,
            endpoints: ctx.endpoints.clone(),
            nodes: ctx.nodes.clone(),
            ca_pem,
            crt_pem,
            key_pem,
        })
    }
}

fn decode_pem_field(ctx: &str, field: &str, value: Option<&str>) -> Result<Vec<u8>, String> {
    let value = value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("context {ctx:?} has no `{field}`"))?;
    // Talos writes base64 of the PEM; accept a literal PEM too (hand-written configs).
    if value.starts_with("-----BEGIN") {
        return Ok(value.as_bytes().to_vec());
    }
    let compact: String = value.split_whitespace().collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| format!("context {ctx:?}: `{field}` is not base64 ({e})"))
}

/// Talos (siderolabs/crypto) writes Ed25519 keys as PKCS#8 under the non-standard PEM label
/// `ED25519 PRIVATE KEY`; rustls only reads `PRIVATE KEY` for PKCS#8. The DER is the same, so
/// relabel it. Other labels pass through unchanged.
pub fn normalise_key_pem(pem: &[u8]) -> Vec<u8> {
    let Ok(text) = std::str::from_utf8(pem) else {
        return pem.to_vec();
    };
    text.replace(
        "-----BEGIN ED25519 PRIVATE KEY-----",
        "-----BEGIN PRIVATE KEY-----",
    )
    .replace(
        "-----END ED25519 PRIVATE KEY-----",
        "-----END PRIVATE KEY-----",
    )
    .into_bytes()
}

/// A gRPC endpoint: the URL to dial and the name the server certificate must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `https://host:port`.
    pub url: String,
    /// Host part without brackets: the TLS server name (DNS name or IP address).
    pub server_name: String,
}

impl Endpoint {
    /// Parse `host`, `host:port`, `[v6]`, `[v6]:port`, a bare IPv6 address, or any of them
    /// after `https://`. The port defaults to apid's 50000.
    pub fn parse(endpoint: &str) -> Result<Self, TalosConfigError> {
        let bad = |reason: &str| TalosConfigError::Endpoint {
            endpoint: endpoint.to_owned(),
            reason: reason.to_owned(),
        };
        let s = endpoint.trim();
        let s = s.strip_prefix("https://").unwrap_or(s);
        let s = s.trim_end_matches('/');
        if s.is_empty() {
            return Err(bad("empty"));
        }
        if s.contains("://") {
            return Err(bad("only https:// endpoints are supported"));
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, after) = rest
                .split_once(']')
                .ok_or_else(|| bad("unclosed '[' in IPv6 address"))?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ']'"))?),
            };
            (h.to_owned(), port)
        } else if s.parse::<std::net::Ipv6Addr>().is_ok() {
            (s.to_owned(), None)
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (s.to_owned(), None),
            }
        };
        if host.is_empty() || host.contains('/') {
            return Err(bad("no host"));
        }
        let port = match port {
            Some(p) => p.parse::<u16>().map_err(|_| bad("port is not a number"))?,
            None => APID_PORT,
        };
        let url_host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        Ok(Endpoint {
            url: format!("https://{url_host}:{port}"),
            server_name: host,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";
    // PKCS#8 Ed25519 key (RFC 8410 §10.3 example), under Talos' label.
    const KEY: &str = "-----BEGIN ED25519 PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END ED25519 PRIVATE KEY-----\n";

    fn config(key: &str) -> String {
        format!(
            "context: default\ncontexts:\n  default:\n    endpoints:\n      - talos.default\n    ca: {}\n    crt: {}\n    key: {}\n",
            b64(CERT),
            b64(CERT),
            b64(key)
        )
    }

    #[test]
    fn parses_service_account_config_and_relabels_ed25519_key() {
        let c = TalosConfig::parse(&config(KEY)).unwrap();
        assert_eq!(c.context, "default");
        assert_eq!(c.endpoints, vec!["talos.default"]);
        assert!(c.nodes.is_empty());
        let key = String::from_utf8(c.key_pem).unwrap();
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "{key}");
        assert!(key.trim_end().ends_with("-----END PRIVATE KEY-----"));
    }

    #[test]
    fn rejects_missing_fields_and_garbage_with_a_reason() {
        let no_key = config(KEY).replace("    key:", "    nokey:");
        let e = TalosConfig::parse(&no_key).unwrap_err();
        assert!(e.contains("no `key`"), "{e}");
        let e = TalosConfig::parse(&config("not a key")).unwrap_err();
        assert!(e.contains("`key` is not a PEM private key"), "{e}");
        let e = TalosConfig::parse("context: x\ncontexts: {}\n").unwrap_err();
        assert!(e.contains("\"x\" is not under `contexts`"), "{e}");
        let e = TalosConfig::parse(": : :").unwrap_err();
        assert!(e.starts_with("not a talosconfig"), "{e}");
        let bad_b64 = config(KEY).replace(&b64(CERT), "zz_not_base64");
        let e = TalosConfig::parse(&bad_b64).unwrap_err();
        assert!(e.contains("not base64"), "{e}");
    }

    #[test]
    fn missing_file_names_the_path() {
        let e = TalosConfig::load(Path::new("/nonexistent/talos.dev/config")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("/nonexistent/talos.dev/config"), "{msg}");
        assert!(!msg.contains('\n'));
    }

    #[test]
    fn endpoints_default_to_apid_port() {
        let e = Endpoint::parse("talos.default").unwrap();
        assert_eq!(e.url, "https://talos.default:50000");
        assert_eq!(e.server_name, "talos.default");
        assert_eq!(
            Endpoint::parse("127.0.0.1:4000").unwrap().url,
            "https://127.0.0.1:4000"
        );
        let v6 = Endpoint::parse("fd00::1").unwrap();
        assert_eq!(v6.url, "https://[fd00::1]:50000");
        assert_eq!(v6.server_name, "fd00::1");
        assert_eq!(
            Endpoint::parse("https://[fd00::1]:7").unwrap().url,
            "https://[fd00::1]:7"
        );
        assert!(Endpoint::parse("").is_err());
        assert!(Endpoint::parse("talos:x").is_err());
        assert!(Endpoint::parse("http://talos").is_err());
    }
}
