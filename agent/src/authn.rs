//! Optional Kubernetes authentication and authorisation of `/metrics`, as kube-rbac-proxy and
//! controller-runtime's `WithAuthenticationAndAuthorization` filter do it:
//!
//! 1. the request's `Authorization: Bearer <token>` goes to a `TokenReview`
//!    (`POST /apis/authentication.k8s.io/v1/tokenreviews`);
//! 2. the user it names goes to a `SubjectAccessReview`
//!    (`POST /apis/authorization.k8s.io/v1/subjectaccessreviews`) asking for verb `get` on the
//!    non-resource URL `/metrics` (the scraper's ClusterRole needs
//!    `nonResourceURLs: ["/metrics"], verbs: ["get"]`; the agent needs `create` on both review
//!    kinds).
//!
//! Outcomes: no or malformed header, or a token the API does not authenticate → 401 (with
//! `WWW-Authenticate: Bearer`); authenticated but not allowed → 403; the API cannot be asked
//! (unreachable, error status, no answer within [`AuthConfig::timeout`]) → 503: it **fails
//! closed**, because the agent cannot tell a good token from a bad one, and 503 (unlike 401/403)
//! tells the operator the problem is the API, not the scraper's credentials. Such failures are
//! not cached, so the next scrape asks again.
//!
//! Decisions are cached per token (keyed by its SHA-256, the token itself is not kept) for
//! [`AuthConfig::allow_ttl`] when allowed and [`AuthConfig::deny_ttl`] when unauthenticated or
//! denied, in a map of at most [`AuthConfig::max_entries`] entries (expired entries go first,
//! then the oldest). With one Prometheus token that is one TokenReview + one
//! SubjectAccessReview per agent per `allow_ttl`. Reads no host files.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tracing::{debug, warn};

/// Which authentication `/metrics` asks for (`--metrics-auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// Anyone who can reach the port may scrape (default; use a NetworkPolicy).
    #[default]
    None,
    /// Bearer token checked with TokenReview + SubjectAccessReview (get on /metrics).
    Kubernetes,
}

/// How `serve` secures its endpoint (`--metrics-auth`, `--tls-cert`, `--tls-key`).
#[derive(Debug, Clone, Default)]
pub struct SecurityConfig {
    /// Authentication of `/metrics`; `/healthz` and `/readyz` stay open.
    pub metrics_auth: AuthMode,
    /// PEM certificate chain: serve HTTPS instead of HTTP (set together with `tls_key`).
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_cert`.
    pub tls_key: Option<std::path::PathBuf>,
}

/// Cache and timeout settings.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// How long an allowed token is trusted without asking again.
    pub allow_ttl: Duration,
    /// How long an unauthenticated or denied token is refused without asking again.
    pub deny_ttl: Duration,
    /// Most tokens remembered at once.
    pub max_entries: usize,
    /// Limit of one review request.
    pub timeout: Duration,
}

impl Default for AuthConfig {
    /// kube-rbac-proxy's TokenReview TTL (1 min) for allowed tokens, its SAR deny TTL (30 s)
    /// for refused ones.
    fn default() -> Self {
        Self {
            allow_ttl: Duration::from_secs(60),
            deny_ttl: Duration::from_secs(30),
            max_entries: 256,
            timeout: Duration::from_secs(5),
        }
    }
}

/// The answer for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// 401: no bearer token, or the API does not authenticate it.
    Unauthenticated,
    /// 403: authenticated as this user, who may not `get /metrics`.
    Forbidden {
        user: String,
    },
    /// 503: the API could not be asked; nothing cached.
    Unavailable,
}

/// Why a review could not be done.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{kind}: {source}")]
    Api {
        kind: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("{0}: no answer within the timeout")]
    Timeout(&'static str),
}

#[derive(Debug, Clone)]
struct Entry {
    decision: Decision,
    expires: Instant,
    inserted: Instant,
}

/// Checks bearer tokens against the API, with the cache described in the module docs.
/// Cheap to clone (shared cache).
#[derive(Clone)]
pub struct Authenticator {
    client: kube::Client,
    config: AuthConfig,
    cache: Arc<Mutex<HashMap<[u8; 32], Entry>>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The token of an `Authorization: Bearer <token>` header value (scheme case-insensitive, as
/// RFC 7235 says); `None` for other schemes and empty tokens.
pub fn bearer_token(header: Option<&str>) -> Option<&str> {
    let h = header?.trim();
    let (scheme, token) = h.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl Authenticator {
    pub fn new(client: kube::Client, config: AuthConfig) -> Self {
        Self {
            client,
            config,
            cache: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Decide for a request with this `Authorization` header value.
    pub async fn check(&self, authorization: Option<&str>) -> Decision {
        let Some(token) = bearer_token(authorization) else {
            return Decision::Unauthenticated;
        };
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = Instant::now();
        if let Some(e) = self.lock().get(&key).filter(|e| e.expires > now) {
            return e.decision.clone();
        }
        let decision = match self.review(token).await {
            Ok(d) => d,
            Err(e) => {
                warn!(error = %e, "cannot verify a /metrics token; answering 503");
                return Decision::Unavailable;
            }
        };
        let ttl = if decision == Decision::Allowed {
            self.config.allow_ttl
        } else {
            self.config.deny_ttl
        };
        self.remember(key, decision.clone(), ttl);
        decision
    }

    /// Tokens currently remembered (expired ones included until evicted).
    pub fn cached(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        crate::lock::lock(&self.cache)
    }

    fn remember(&self, key: [u8; 32], decision: Decision, ttl: Duration) {
        let now = Instant::now();
        let mut cache = self.lock();
        if cache.len() >= self.config.max_entries && !cache.contains_key(&key) {
            cache.retain(|_, e| e.expires > now);
            while cache.len() >= self.config.max_entries.max(1) {
                let Some(oldest) = cache
                    .iter()
                    .min_by_key(|(_, e)| e.inserted)
                    .map(|(k, _)| *k)
                else {
                    break;
                };
                cache.remove(&oldest);
            }
        }
        if self.config.max_entries > 0 {
            cache.insert(
                key,
                Entry {
                    decision,
                    expires: now + ttl,
                    inserted: now,
                },
            );
        }
    }

    async fn review(&self, token: &str) -> Result<Decision, Error> {
        let tr = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                audiences: None,
            },
            ..TokenReview::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let tr = tokio::time::timeout(self.config.timeout, api.create(&PostParams::default(), &tr))
            .await
            .map_err(|_| Error::Timeout("TokenReview"))?
            .map_err(|source| Error::Api {
                kind: "TokenReview",
                source,
            })?;
        let Some(status) = tr.status.filter(|s| s.authenticated == Some(true)) else {
            debug!("TokenReview: not authenticated");
            return Ok(Decision::Unauthenticated);
        };
        let user = status.user.unwrap_or_default();
        let name = user.username.clone().unwrap_or_default();
        let sar = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username,
                uid: user.uid,
                groups: user.groups,
                extra: user.extra,
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some("/metrics".to_owned()),
                    verb: Some("get".to_owned()),
                }),
                resource_attributes: None,
            },
            ..SubjectAccessReview::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let sar = tokio::time::timeout(
            self.config.timeout,
            api.create(&PostParams::default(), &sar),
        )
        .await
        .map_err(|_| Error::Timeout("SubjectAccessReview"))?
        .map_err(|source| Error::Api {
            kind: "SubjectAccessReview",
            source,
        })?;
        if sar.status.is_some_and(|s| s.allowed) {
            Ok(Decision::Allowed)
        } else {
            debug!(user = %name, "SubjectAccessReview: get /metrics not allowed");
            Ok(Decision::Forbidden { user: name })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_header() {
        assert_eq!(bearer_token(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer_token(Some("Basic abc")), None);
        assert_eq!(bearer_token(Some("Bearer ")), None);
        assert_eq!(bearer_token(Some("Bearer")), None);
        assert_eq!(bearer_token(None), None);
    }
}
