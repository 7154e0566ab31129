//! `/metrics` security: bearer tokens checked with TokenReview + SubjectAccessReview against the
//! API stand-in (allowed, unauthenticated, denied, cache hits, API down → 503, bounded cache),
//! probes left open, HTTPS with a test CA (rcgen), and the binary's start-up errors.

#![allow(clippy::disallowed_methods)] // tests write PEM files directly

use crate::metrics::fixtures_dir;
use crate::standin::{Action, Fault, Match, StandIn};
use gpuscout::authn::{AuthConfig, Authenticator, Decision};
use gpuscout::discover::Options;
use gpuscout::hostroot::HostRoot;
use gpuscout::metrics::ExporterConfig;
use gpuscout::serve::{Daemon, DaemonConfig};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PROM_TOKEN: &str = "prometheus-token";
const PROM_USER: &str = "system:serviceaccount:monitoring:prometheus";
const OTHER_TOKEN: &str = "someone-else-token";
const OTHER_USER: &str = "system:serviceaccount:default:nosy";

fn amd_root() -> std::path::PathBuf {
    fixtures_dir().join("metrics/amd-rx7900xtx-talos")
}

fn config() -> DaemonConfig {
    DaemonConfig {
        discovery_interval: Duration::from_secs(3600),
        exporter: ExporterConfig {
            deadline: Duration::from_secs(60),
            cache: Duration::ZERO,
        },
        grace: Duration::from_secs(5),
    }
}

fn api() -> StandIn {
    let api = StandIn::new();
    api.add_token(PROM_TOKEN, PROM_USER, &["system:serviceaccounts"]);
    api.add_token(OTHER_TOKEN, OTHER_USER, &["system:serviceaccounts"]);
    api.allow_metrics(PROM_USER);
    api
}

struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(
        auth: Option<Authenticator>,
        tls: Option<(tokio_rustls::TlsAcceptor, &str)>,
    ) -> Self {
        let mut d = Daemon::new(
            HostRoot::new(amd_root()).unwrap(),
            Options::default(),
            config(),
        );
        if let Some(a) = auth {
            d.set_metrics_auth(a);
        }
        let ca = tls.as_ref().map(|(_, ca)| (*ca).to_owned());
        if let Some((t, _)) = tls {
            d.set_tls(t);
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(d.serve(listener, async {
            let _ = rx.await;
        }));
        let s = Self {
            addr,
            stop: Some(tx),
            task,
        };
        for _ in 0..200 {
            let code = match &ca {
                None => s.get("/readyz", None).await.0,
                Some(ca) => tls_get(addr, ca, "/readyz", None).await.map_or(0, |r| r.0),
            };
            if code == 200 {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("daemon never became ready");
    }

    async fn get(&self, path: &str, auth: Option<&str>) -> (u16, String, String) {
        let s = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        exchange(s, self.addr, path, auth).await
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap();
    }
}

/// One HTTP/1.0 GET over `s`: (status, head, body).
async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    addr: SocketAddr,
    path: &str,
    auth: Option<&str>,
) -> (u16, String, String) {
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n").as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, head.to_owned(), body.to_owned())
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_token_scrapes_and_the_review_asks_for_get_on_metrics() {
    let api = api();
    let srv = Server::start(
        Some(Authenticator::new(api.client(), AuthConfig::default())),
        None,
    )
    .await;
    let (code, _, body) = srv.get("/metrics", Some(&bearer(PROM_TOKEN))).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("gpuscout_gpu_info{"), "{body}");
    let sars = api.sar_specs();
    assert_eq!(sars.len(), 1, "{sars:?}");
    assert_eq!(sars[0]["user"], PROM_USER);
    assert_eq!(sars[0]["uid"], format!("uid-{PROM_USER}"));
    assert_eq!(sars[0]["groups"][0], "system:serviceaccounts");
    assert_eq!(sars[0]["nonResourceAttributes"]["path"], "/metrics");
    assert_eq!(sars[0]["nonResourceAttributes"]["verb"], "get");
    assert!(sars[0]["resourceAttributes"].is_null(), "{sars:?}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_malformed_or_unknown_token_is_401_and_probes_stay_open() {
    let api = api();
    let srv = Server::start(
        Some(Authenticator::new(api.client(), AuthConfig::default())),
        None,
    )
    .await;
    for auth in [
        None,
        Some("Basic dXNlcjpwdw=="),
        Some("Bearer "),
        Some("Bearer not-a-token"),
    ] {
        let (code, head, _) = srv.get("/metrics", auth).await;
        assert_eq!(code, 401, "{auth:?}");
        assert!(
            head.to_ascii_lowercase()
                .contains("www-authenticate: bearer"),
            "{head}"
        );
    }
    // Only the one real token string reached the API; headers without a token never do.
    assert_eq!(api.requests_to("tokenreviews"), 1);
    assert_eq!(api.requests_to("subjectaccessreviews"), 0);
    assert_eq!(srv.get("/healthz", None).await.0, 200);
    assert_eq!(srv.get("/readyz", None).await.0, 200);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticated_but_not_allowed_is_403() {
    let api = api();
    let srv = Server::start(
        Some(Authenticator::new(api.client(), AuthConfig::default())),
        None,
    )
    .await;
    let (code, _, body) = srv.get("/metrics", Some(&bearer(OTHER_TOKEN))).await;
    assert_eq!(code, 403, "{body}");
    assert!(!body.contains("gpuscout_"), "{body}");
    assert_eq!(api.sar_specs()[0]["user"], OTHER_USER);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_are_cached_so_repeat_scrapes_do_not_reach_the_api() {
    let api = api();
    let srv = Server::start(
        Some(Authenticator::new(api.client(), AuthConfig::default())),
        None,
    )
    .await;
    for _ in 0..5 {
        assert_eq!(srv.get("/metrics", Some(&bearer(PROM_TOKEN))).await.0, 200);
        assert_eq!(srv.get("/metrics", Some(&bearer(OTHER_TOKEN))).await.0, 403);
        assert_eq!(srv.get("/metrics", Some("Bearer bogus")).await.0, 401);
    }
    // One TokenReview per distinct token, one SAR per authenticated token: 15 scrapes, 5 calls.
    assert_eq!(api.requests_to("tokenreviews"), 3);
    assert_eq!(api.requests_to("subjectaccessreviews"), 2);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_entries_are_asked_again() {
    let api = api();
    let cfg = AuthConfig {
        allow_ttl: Duration::from_millis(200),
        deny_ttl: Duration::from_millis(200),
        ..AuthConfig::default()
    };
    let auth = Authenticator::new(api.client(), cfg);
    assert_eq!(
        auth.check(Some(&bearer(PROM_TOKEN))).await,
        Decision::Allowed
    );
    assert_eq!(
        auth.check(Some(&bearer(PROM_TOKEN))).await,
        Decision::Allowed
    );
    assert_eq!(api.requests_to("tokenreviews"), 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        auth.check(Some(&bearer(PROM_TOKEN))).await,
        Decision::Allowed
    );
    assert_eq!(api.requests_to("tokenreviews"), 2);
    assert_eq!(api.requests_to("subjectaccessreviews"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_is_bounded() {
    let api = api();
    let cfg = AuthConfig {
        max_entries: 4,
        ..AuthConfig::default()
    };
    let auth = Authenticator::new(api.client(), cfg);
    for i in 0..20 {
        let d = auth.check(Some(&bearer(&format!("random-{i}")))).await;
        assert_eq!(d, Decision::Unauthenticated);
        assert!(auth.cached() <= 4, "{} entries", auth.cached());
    }
    // The newest token is still cached: asking again costs nothing.
    let before = api.requests_to("tokenreviews");
    auth.check(Some("Bearer random-19")).await;
    assert_eq!(api.requests_to("tokenreviews"), before);
}

/// Decision: when the API cannot be asked, /metrics fails closed with 503 (not 401/403: the
/// scraper's credentials may be fine) and nothing is cached, so it recovers on the next scrape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_fail_closed_with_503_and_recover() {
    let api = api();
    let srv = Server::start(
        Some(Authenticator::new(api.client(), AuthConfig::default())),
        None,
    )
    .await;
    api.fail(Fault {
        when: Match {
            path_contains: Some("tokenreviews".into()),
            ..Match::any()
        },
        what: Action::Status(503, None),
        times: None,
    });
    for _ in 0..3 {
        let (code, _, body) = srv.get("/metrics", Some(&bearer(PROM_TOKEN))).await;
        assert_eq!(code, 503, "{body}");
        assert!(!body.contains("gpuscout_"), "{body}");
    }
    assert_eq!(
        api.requests_to("tokenreviews"),
        3,
        "failures are not cached"
    );
    api.clear_faults();
    api.fail(Fault {
        when: Match {
            path_contains: Some("subjectaccessreviews".into()),
            ..Match::any()
        },
        what: Action::Status(500, None),
        times: Some(1),
    });
    assert_eq!(srv.get("/metrics", Some(&bearer(PROM_TOKEN))).await.0, 503);
    assert_eq!(srv.get("/metrics", Some(&bearer(PROM_TOKEN))).await.0, 200);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_api_is_503() {
    // A kube client over real HTTP to a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    std::fs::write(&kc, kubeconfig(&format!("http://127.0.0.1:{port}"))).unwrap();
    let client = gpuscout::k8s::connect(Some(&kc)).await.unwrap();
    let srv = Server::start(
        Some(Authenticator::new(client, AuthConfig::default())),
        None,
    )
    .await;
    assert_eq!(srv.get("/metrics", Some(&bearer(PROM_TOKEN))).await.0, 503);
    assert_eq!(srv.get("/healthz", None).await.0, 200);
    srv.stop().await;
}

fn kubeconfig(server: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\nusers:\n- name: u\n  user:\n    token: agent-token\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\n"
    )
}

// ---------------------------------------------------------------------------------------------
// TLS

struct TestPki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn test_pki(org: &str) -> TestPki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name.push(DnType::OrganizationName, org);
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    TestPki {
        ca_pem,
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

fn write_pki(dir: &std::path::Path, p: &TestPki) -> (std::path::PathBuf, std::path::PathBuf) {
    let (c, k) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&c, &p.cert_pem).unwrap();
    std::fs::write(&k, &p.key_pem).unwrap();
    (c, k)
}

fn tls_client(ca_pem: &str) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

async fn tls_get(
    addr: SocketAddr,
    ca_pem: &str,
    path: &str,
    auth: Option<&str>,
) -> std::io::Result<(u16, String, String)> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let s = tls_client(ca_pem).connect(name, tcp).await?;
    Ok(exchange(s, addr, path, auth).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_scrape_with_a_test_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = test_pki("gpuscout-test");
    let (c, k) = write_pki(dir.path(), &pki);
    let acceptor = gpuscout::tls::acceptor(&c, &k).unwrap();
    let api = api();
    let srv = Server::start(
        Some(Authenticator::new(api.client(), AuthConfig::default())),
        Some((acceptor, &pki.ca_pem)),
    )
    .await;
    let (code, _, body) = tls_get(srv.addr, &pki.ca_pem, "/metrics", Some(&bearer(PROM_TOKEN)))
        .await
        .unwrap();
    assert_eq!(code, 200);
    assert!(body.contains("gpuscout_gpu_info{"), "{body}");
    let (code, _, _) = tls_get(srv.addr, &pki.ca_pem, "/metrics", None)
        .await
        .unwrap();
    assert_eq!(code, 401);
    // A client that trusts another CA refuses the server's certificate.
    let other = test_pki("someone-else");
    assert!(
        tls_get(srv.addr, &other.ca_pem, "/healthz", None)
            .await
            .is_err()
    );
    // Plain HTTP to the HTTPS port gets no HTTP answer.
    let (code, _, _) = srv.get("/healthz", None).await;
    assert_eq!(code, 0);
    // The server keeps serving after those failed handshakes.
    let (code, _, _) = tls_get(srv.addr, &pki.ca_pem, "/healthz", None)
        .await
        .unwrap();
    assert_eq!(code, 200);
    srv.stop().await;
}

#[test]
fn tls_files_that_do_not_fit_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let pki = test_pki("a");
    let (c, k) = write_pki(dir.path(), &pki);
    let other = test_pki("b");
    let k2 = dir.path().join("other.key");
    std::fs::write(&k2, &other.key_pem).unwrap();
    let missing = dir.path().join("missing.crt");
    let err = |c: &std::path::Path, k: &std::path::Path| {
        gpuscout::tls::acceptor(c, k).err().map(|e| e.to_string())
    };
    assert!(err(&missing, &k).unwrap().contains("--tls-cert"));
    assert!(
        err(&c, &c).unwrap().contains("--tls-key"),
        "a cert is not a key"
    );
    assert!(
        err(&k, &k).unwrap().contains("--tls-cert"),
        "a key is not a cert"
    );
    assert!(err(&c, &k2).is_some(), "key of another certificate");
    assert!(err(&c, &k).is_none());
}

// ---------------------------------------------------------------------------------------------
// The binary

const BIN: &str = env!("CARGO_BIN_EXE_gpuscout");

fn one_line_exit_2(args: &[&str], needle: &str) {
    let out = std::process::Command::new(BIN)
        .arg("--root")
        .arg(amd_root())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("GPUSCOUT_KUBECONFIG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains(needle), "{err}");
}

#[test]
fn metrics_auth_without_a_cluster_refuses_to_start() {
    one_line_exit_2(
        &["--metrics-auth", "kubernetes"],
        "--metrics-auth kubernetes",
    );
}

#[test]
fn unreadable_tls_files_refuse_to_start() {
    one_line_exit_2(
        &[
            "--tls-cert",
            "/nonexistent/tls.crt",
            "--tls-key",
            "/nonexistent/tls.key",
        ],
        "--tls-cert",
    );
}
