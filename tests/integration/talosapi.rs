//! The Talos API client against a fake COSI `State` server: mutual TLS with a test CA made
//! here (rcgen, Ed25519 like Talos), client certificate required, resources served as Talos
//! serves them (YAML specs), and the refinements they cause on real discovery output.

use crate::util;
use gpuscout::model::{Gpu, Report, Status};
use gpuscout::talosapi::proto::state_server::{State, StateServer};
use gpuscout::talosapi::proto::{
    GetRequest, GetResponse, ListRequest, ListResponse, Metadata, Resource, Spec,
};
use gpuscout::talosapi::{
    self, Client, Error, NVIDIA_MODULES, PERSISTENCED, Settings, TalosApiFacts, TalosConfig,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    PKCS_ED25519,
};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status as GrpcStatus};

/// The node IP the client must send as `node` metadata.
const NODE_IP: &str = "10.5.0.7";

// ---------------------------------------------------------------------------------------------
// Test PKI

struct Pki {
    ca_pem: String,
    server_cert_pem: String,
    server_key_pem: String,
    client_cert_pem: String,
    client_key_pem: String,
}

fn ca(name: &str) -> (CertificateParams, KeyPair, String) {
    let key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::OrganizationName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let pem = p.self_signed(&key).unwrap().pem();
    (p, key, pem)
}

fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    sans: &[&str],
    org: &str,
    eku: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
    let mut p =
        CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::OrganizationName, org);
    p.extended_key_usages = vec![eku];
    let cert = p.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A CA, apid's server certificate (SANs like Talos gives it plus 127.0.0.1) and an `os:reader`
/// client certificate, all signed by that CA.
fn pki() -> Pki {
    let (params, key, ca_pem) = ca("talos");
    let issuer = Issuer::new(params, key);
    let (server_cert_pem, server_key_pem) = leaf(
        &issuer,
        &["talos", "talos.default", "localhost", "127.0.0.1"],
        "talos",
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client_cert_pem, client_key_pem) = leaf(
        &issuer,
        &[],
        "os:reader",
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    Pki {
        ca_pem,
        server_cert_pem,
        server_key_pem,
        client_cert_pem,
        client_key_pem,
    }
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A talosconfig as the ServiceAccount controller writes it: context `default`, base64 PEMs,
/// the key under Talos' `ED25519 PRIVATE KEY` label.
fn talosconfig(ca_pem: &str, crt_pem: &str, key_pem: &str, endpoint: &str) -> String {
    let talos_key = key_pem
        .replace("BEGIN PRIVATE KEY", "BEGIN ED25519 PRIVATE KEY")
        .replace("END PRIVATE KEY", "END ED25519 PRIVATE KEY");
    assert!(talos_key.contains("ED25519 PRIVATE KEY"), "{key_pem}");
    format!(
        "context: default\ncontexts:\n    default:\n        endpoints:\n            - {endpoint}\n        ca: {}\n        crt: {}\n        key: {}\n",
        b64(ca_pem),
        b64(crt_pem),
        b64(&talos_key)
    )
}

fn settings_for(pki: &Pki, addr: SocketAddr, deadline: Duration) -> Settings {
    let text = talosconfig(
        &pki.ca_pem,
        &pki.client_cert_pem,
        &pki.client_key_pem,
        &addr.to_string(),
    );
    Settings {
        config: TalosConfig::parse(&text).unwrap(),
        endpoint: None,
        node: NODE_IP.to_owned(),
        deadline,
    }
}

// ---------------------------------------------------------------------------------------------
// Fake COSI server

fn resource(ns: &str, rtype: &str, id: &str, yaml: &str) -> Resource {
    Resource {
        metadata: Some(Metadata {
            namespace: ns.to_owned(),
            r#type: rtype.to_owned(),
            id: id.to_owned(),
            version: "1".to_owned(),
            owner: String::new(),
            phase: "running".to_owned(),
        }),
        spec: Some(Spec {
            proto_spec: Vec::new(),
            yaml_spec: yaml.to_owned(),
        }),
    }
}

/// Resources by (namespace, type), YAML in the shape Talos' yaml.v3 marshalling produces.
#[derive(Clone, Default)]
struct Node {
    resources: BTreeMap<(String, String), Vec<Resource>>,
}

impl Node {
    fn add(mut self, (ns, rtype): (&str, &str), id: &str, yaml: &str) -> Self {
        self.resources
            .entry((ns.to_owned(), rtype.to_owned()))
            .or_default()
            .push(resource(ns, rtype, id, yaml));
        self
    }

    fn extension(self, id: &str, name: &str, version: &str) -> Self {
        let yaml = format!(
            "image: {id}.sqsh\nmetadata:\n    name: {name}\n    version: {version}\n    author: Sidero Labs\n    description: test\n    compatibility:\n        talos:\n            version: '>= v1.11.0'\n"
        );
        self.add(talosapi::EXTENSION_STATUSES, id, &yaml)
    }

    fn kernel_module(self, name: &str) -> Self {
        // Talos' KernelModuleSpecSpec tags its name `yaml:"string"`.
        self.add(
            talosapi::KERNEL_MODULE_SPECS,
            name,
            &format!("string: {name}\nparameters: []\n"),
        )
    }

    fn service(self, id: &str, running: bool, healthy: bool) -> Self {
        self.add(
            talosapi::SERVICES,
            id,
            &format!("running: {running}\nhealthy: {healthy}\nunknown: false\n"),
        )
    }

    fn pci(self, addr: &str, vendor_id: &str, product_id: &str, driver: Option<&str>) -> Self {
        let mut yaml = format!(
            "class: Display controller\nsubclass: VGA compatible controller\nvendor: NVIDIA Corporation\nclass_id: \"0x03\"\nsubclass_id: \"0x00\"\nvendor_id: \"{vendor_id}\"\nproduct_id: \"{product_id}\"\n"
        );
        if let Some(d) = driver {
            yaml.push_str(&format!("driver: {d}\n"));
        }
        self.add(talosapi::PCI_DEVICES, addr, &yaml)
    }

    /// An RTX 4090 node with the open NVIDIA extensions, the given `machine.kernel.modules`,
    /// persistenced in the given state and the GPU bound to `driver` at boot. As on Talos, a
    /// `Services` resource exists only while its service runs: machined's ServiceController
    /// destroys it on every other state (siderolabs/talos
    /// `internal/app/machined/pkg/controllers/v1alpha1/service.go`).
    fn nvidia(modules: &[&str], persistenced_running: bool, driver: Option<&str>) -> Self {
        let mut n = Node::default()
            .extension(
                "0",
                "nvidia-open-gpu-kernel-modules-production",
                "570.172.08-v1.11.5",
            )
            .extension(
                "1",
                "nvidia-container-toolkit-production",
                "570.172.08-v1.17.8",
            )
            .extension("2", "schematic", "0123456789abcdef")
            .extension("modules.dep", "modules.dep", "6.12.57-talos")
            .service("apid", true, true)
            .pci("0000:00:01.1", "0x1022", "0x14db", Some("pcieport"))
            .pci("0000:01:00.0", "0x10de", "0x2684", driver);
        if persistenced_running {
            n = n.service(PERSISTENCED, true, true);
        }
        for m in modules {
            n = n.kernel_module(m);
        }
        n
    }
}

#[derive(Clone, Default)]
struct Fake {
    node: Node,
    /// Never answer (the slow-server case).
    hang: bool,
    /// `node` metadata of every call, or `<none>`.
    seen_nodes: Arc<Mutex<Vec<String>>>,
}

impl Fake {
    fn check(&self, md: &tonic::metadata::MetadataMap) -> Result<(), GrpcStatus> {
        // apid: COSI calls are proxied one-to-one; the one-to-many `nodes` key is refused.
        if md.get("nodes").is_some() {
            return Err(GrpcStatus::invalid_argument(
                "one-to-many proxying is not supported for COSI methods",
            ));
        }
        let node = md
            .get("node")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("<none>")
            .to_owned();
        self.seen_nodes.lock().unwrap().push(node);
        Ok(())
    }

    async fn maybe_hang(&self) {
        if self.hang {
            std::future::pending::<()>().await;
        }
    }
}

type ListStream =
    Pin<Box<dyn futures::Stream<Item = Result<ListResponse, GrpcStatus>> + Send + 'static>>;

#[tonic::async_trait]
impl State for Fake {
    async fn get(&self, req: Request<GetRequest>) -> Result<Response<GetResponse>, GrpcStatus> {
        self.check(req.metadata())?;
        self.maybe_hang().await;
        let r = req.into_inner();
        let found = self
            .node
            .resources
            .get(&(r.namespace.clone(), r.r#type.clone()))
            .and_then(|v| {
                v.iter()
                    .find(|x| x.metadata.as_ref().is_some_and(|m| m.id == r.id))
            })
            .cloned();
        match found {
            Some(res) => Ok(Response::new(GetResponse {
                resource: Some(res),
            })),
            None => Err(GrpcStatus::not_found(format!(
                "resource {}({}/{}) doesn't exist",
                r.r#type, r.namespace, r.id
            ))),
        }
    }

    type ListStream = ListStream;

    async fn list(&self, req: Request<ListRequest>) -> Result<Response<ListStream>, GrpcStatus> {
        self.check(req.metadata())?;
        self.maybe_hang().await;
        let r = req.into_inner();
        let items: Vec<Result<ListResponse, GrpcStatus>> = self
            .node
            .resources
            .get(&(r.namespace, r.r#type))
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|res| {
                Ok(ListResponse {
                    resource: Some(res),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(items))))
    }
}

/// Serve `fake` with TLS on 127.0.0.1 (any port), requiring a client certificate from `pki`'s CA.
async fn serve(pki: &Pki, fake: Fake) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(
            &pki.server_cert_pem,
            &pki.server_key_pem,
        ))
        .client_ca_root(Certificate::from_pem(&pki.ca_pem));
    let server = Server::builder()
        .tls_config(tls)
        .unwrap()
        .add_service(StateServer::new(fake))
        .serve_with_incoming(TcpListenerStream::new(listener));
    tokio::spawn(server);
    addr
}

/// Guard against a hang turning into a stuck test: fail instead (generous; not a timing check).
async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), f)
        .await
        .expect("the client did not return at all")
}

// ---------------------------------------------------------------------------------------------
// Host roots: copies of a fixture, changed into the failure under test

fn copy_fixture(profile: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let st = Command::new("cp")
        .arg("-a")
        .arg(util::host(profile).join("."))
        .arg(dir.path())
        .status()
        .expect("run cp");
    assert!(st.success(), "cp -a {profile}");
    dir
}

fn gpu_dir(root: &Path) -> PathBuf {
    root.join("sys/bus/pci/devices/0000:01:00.0")
}

/// RTX 4090, open modules installed, nothing loaded: `machine.kernel.modules` was not set.
fn nvidia_not_loaded() -> tempfile::TempDir {
    let d = copy_fixture("rtx4090-open");
    std::fs::remove_file(gpu_dir(d.path()).join("driver")).unwrap();
    #[allow(clippy::disallowed_methods)]
    let modules = std::fs::read_to_string(d.path().join("proc/modules")).unwrap();
    let kept: String = modules
        .lines()
        .filter(|l| !l.starts_with("nvidia"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(d.path().join("proc/modules"), kept).unwrap();
    for m in NVIDIA_MODULES {
        let _ = std::fs::remove_dir_all(d.path().join("sys/module").join(m));
    }
    let _ = std::fs::remove_dir_all(d.path().join("proc/driver/nvidia"));
    d
}

/// RTX 4090 with the nvidia module live but the device unbound.
fn nvidia_unbound() -> tempfile::TempDir {
    let d = copy_fixture("rtx4090-open");
    std::fs::remove_file(gpu_dir(d.path()).join("driver")).unwrap();
    d
}

fn the_gpu(report: &Report) -> &Gpu {
    report
        .gpus
        .iter()
        .find(|g| g.pci_address == "0000:01:00.0")
        .expect("the RTX 4090 at 0000:01:00.0")
}

async fn facts_from(node: Node) -> (TalosApiFacts, Vec<String>) {
    let pki = pki();
    let fake = Fake {
        node,
        ..Default::default()
    };
    let seen = fake.seen_nodes.clone();
    let addr = serve(&pki, fake).await;
    let facts = bounded(talosapi::fetch_once(&settings_for(
        &pki,
        addr,
        Duration::from_secs(10),
    )))
    .await
    .expect("facts from the fake Talos API");
    let seen = seen.lock().unwrap().clone();
    (facts, seen)
}

// ---------------------------------------------------------------------------------------------
// Cases

#[tokio::test]
async fn reads_all_four_resource_types_over_mtls_for_its_own_node() {
    let (facts, seen) = facts_from(Node::nvidia(NVIDIA_MODULES, true, Some("nvidia"))).await;
    let names: Vec<(&str, &str)> = facts
        .extensions
        .iter()
        .map(|e| (e.name.as_str(), e.version.as_str()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("nvidia-container-toolkit-production", "570.172.08-v1.17.8"),
            (
                "nvidia-open-gpu-kernel-modules-production",
                "570.172.08-v1.11.5"
            ),
        ],
        "schematic and modules.dep are synthetic"
    );
    assert_eq!(
        facts.kernel_modules.iter().collect::<Vec<_>>(),
        vec!["nvidia", "nvidia_drm", "nvidia_modeset", "nvidia_uvm"]
    );
    assert!(facts.services[PERSISTENCED].running);
    assert!(facts.services["apid"].healthy);
    assert_eq!(
        facts.pci_devices["0000:01:00.0"].driver.as_deref(),
        Some("nvidia")
    );
    assert_eq!(
        facts.pci_devices["0000:01:00.0"].product_id.as_deref(),
        Some("0x2684")
    );
    assert_eq!(facts.skipped, 0);
    assert_eq!(seen.len(), 4, "one List per resource type: {seen:?}");
    assert!(seen.iter().all(|n| n == NODE_IP), "{seen:?}");
}

#[tokio::test]
async fn get_returns_one_resource_and_none_when_not_found() {
    let pki = pki();
    let addr = serve(
        &pki,
        Fake {
            node: Node::nvidia(&[], true, None),
            ..Default::default()
        },
    )
    .await;
    let client = bounded(Client::connect(&settings_for(
        &pki,
        addr,
        Duration::from_secs(10),
    )))
    .await
    .unwrap();
    let (ns, t) = talosapi::SERVICES;
    let r = bounded(client.get(ns, t, PERSISTENCED))
        .await
        .unwrap()
        .expect("persistenced");
    assert_eq!(r.metadata.unwrap().id, PERSISTENCED);
    assert!(r.spec.unwrap().yaml_spec.contains("running: true"));
    assert!(
        bounded(client.get(ns, t, "ext-nvidia-cdi-gen"))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn unconfigured_kernel_modules_refine_module_not_loaded_with_the_exact_hint() {
    let host = nvidia_not_loaded();
    let mut report = util::report_at(host.path());
    assert_eq!(the_gpu(&report).status, Status::ModuleNotLoaded);
    let (facts, _) = facts_from(Node::nvidia(&[], false, None)).await;
    talosapi::refine(&facts, &report.host, &mut report.gpus);
    let g = the_gpu(&report);
    assert_eq!(g.status, Status::ModuleNotLoaded);
    let p = g
        .problems
        .iter()
        .find(|p| p.status == Status::ModuleNotLoaded)
        .unwrap();
    assert!(
        p.hint.starts_with(
            "add `nvidia`, `nvidia_uvm`, `nvidia_drm`, `nvidia_modeset` to machine.kernel.modules"
        ),
        "{}",
        p.hint
    );
    assert!(
        p.detail.contains("machine.kernel.modules lacks nvidia, nvidia_uvm, nvidia_drm, nvidia_modeset (Talos API)"),
        "{}",
        p.detail
    );
    // persistenced waits for the driver: noted, not a second verdict.
    assert!(
        g.problems.iter().any(|p| p
            .detail
            .contains("ext-nvidia-persistenced waits for the nvidia driver")),
        "{:?}",
        g.problems
    );
}

#[tokio::test]
async fn partly_configured_modules_name_only_the_missing_ones() {
    let host = nvidia_not_loaded();
    let mut report = util::report_at(host.path());
    let (facts, _) = facts_from(Node::nvidia(&["nvidia", "nvidia_drm"], false, None)).await;
    talosapi::refine(&facts, &report.host, &mut report.gpus);
    let p = the_gpu(&report)
        .problems
        .iter()
        .find(|p| p.status == Status::ModuleNotLoaded)
        .unwrap();
    assert!(
        p.hint
            .starts_with("add `nvidia_uvm`, `nvidia_modeset` to machine.kernel.modules"),
        "{}",
        p.hint
    );
}

#[tokio::test]
async fn configured_modules_that_did_not_load_are_not_blamed_on_the_config() {
    let host = nvidia_not_loaded();
    let mut report = util::report_at(host.path());
    let (facts, _) = facts_from(Node::nvidia(NVIDIA_MODULES, false, None)).await;
    talosapi::refine(&facts, &report.host, &mut report.gpus);
    let p = the_gpu(&report)
        .problems
        .iter()
        .find(|p| p.status == Status::ModuleNotLoaded)
        .unwrap();
    assert!(!p.hint.contains("to machine.kernel.modules"), "{}", p.hint);
    assert!(p.hint.contains("key was rejected"), "{}", p.hint);
}

#[tokio::test]
async fn persistenced_not_running_with_the_driver_bound_is_a_verdict() {
    let host = copy_fixture("rtx4090-open");
    let mut report = util::report_at(host.path());
    let before = the_gpu(&report).clone();
    assert_eq!(before.driver.as_deref(), Some("nvidia"));
    let (facts, _) = facts_from(Node::nvidia(NVIDIA_MODULES, false, Some("nvidia"))).await;
    talosapi::refine(&facts, &report.host, &mut report.gpus);
    let g = the_gpu(&report);
    assert_eq!(g.problems.len(), before.problems.len() + 1);
    let p = g.problems.last().unwrap();
    assert_eq!(p.status, Status::ServiceNotRunning);
    assert!(
        p.detail.contains("ext-nvidia-persistenced is not running"),
        "{}",
        p.detail
    );
    assert!(g.status >= Status::ServiceNotRunning);

    // Running: the bound GPU's verdict is what the kernel evidence said.
    let mut report = util::report_at(host.path());
    let (facts, _) = facts_from(Node::nvidia(NVIDIA_MODULES, true, Some("nvidia"))).await;
    talosapi::refine(&facts, &report.host, &mut report.gpus);
    assert_eq!(the_gpu(&report), &before);
}

#[tokio::test]
async fn the_driver_talos_saw_at_boot_explains_an_unbound_gpu() {
    let host = nvidia_unbound();
    let mut report = util::report_at(host.path());
    let before = the_gpu(&report).clone();
    assert!(before.driver.is_none());
    assert_ne!(before.status, Status::Ok);
    let (facts, _) = facts_from(Node::nvidia(NVIDIA_MODULES, true, Some("nvidia"))).await;
    talosapi::refine(&facts, &report.host, &mut report.gpus);
    let g = the_gpu(&report);
    assert_eq!(g.status, before.status, "the kernel decides the verdict");
    assert!(
        g.problems.iter().any(|p| p
            .detail
            .contains("Talos saw nvidia bound at boot, so it was unbound since")),
        "{:?}",
        g.problems
    );
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_rejected_with_a_clear_error() {
    let pki = pki();
    let addr = serve(
        &pki,
        Fake {
            node: Node::nvidia(&[], true, None),
            ..Default::default()
        },
    )
    .await;
    // Trusts the right server CA, but presents a certificate from a CA the server does not know.
    let (params, key, _) = ca("some other cluster");
    let other = Issuer::new(params, key);
    let (crt, key) = leaf(
        &other,
        &[],
        "os:reader",
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let text = talosconfig(&pki.ca_pem, &crt, &key, &addr.to_string());
    let settings = Settings {
        config: TalosConfig::parse(&text).unwrap(),
        endpoint: None,
        node: NODE_IP.to_owned(),
        deadline: Duration::from_secs(10),
    };
    let err = bounded(talosapi::fetch_once(&settings))
        .await
        .expect_err("a foreign client certificate must not be accepted");
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(
        matches!(err, Error::Rejected { .. }),
        "want Rejected, got {err:?}: {msg}"
    );
    assert!(msg.contains(&addr.to_string()), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_refused_by_the_client() {
    let pki = pki();
    let addr = serve(&pki, Fake::default()).await;
    let (_, _, other_ca) = ca("some other cluster");
    let text = talosconfig(
        &other_ca,
        &pki.client_cert_pem,
        &pki.client_key_pem,
        &addr.to_string(),
    );
    let settings = Settings {
        config: TalosConfig::parse(&text).unwrap(),
        endpoint: None,
        node: NODE_IP.to_owned(),
        deadline: Duration::from_secs(10),
    };
    let err = bounded(talosapi::fetch_once(&settings)).await.unwrap_err();
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert!(msg.to_lowercase().contains("certificate"), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
}

/// A port nothing listens on.
async fn closed_port() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}

#[tokio::test]
async fn an_unreachable_endpoint_gives_a_one_line_reason() {
    let pki = pki();
    let addr = closed_port().await;
    let err = bounded(talosapi::fetch_once(&settings_for(
        &pki,
        addr,
        Duration::from_secs(10),
    )))
    .await
    .unwrap_err();
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert!(
        msg.starts_with(&format!("cannot reach the Talos API at https://{addr}")),
        "{msg}"
    );
    assert!(msg.to_lowercase().contains("refused"), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
}

#[tokio::test]
async fn a_server_that_never_answers_hits_the_configured_deadline() {
    let pki = pki();
    let addr = serve(
        &pki,
        Fake {
            hang: true,
            ..Default::default()
        },
    )
    .await;
    let deadline = Duration::from_millis(1500);
    let err = bounded(talosapi::fetch_once(&settings_for(&pki, addr, deadline)))
        .await
        .unwrap_err();
    match &err {
        Error::Deadline { deadline: d, .. } => assert_eq!(*d, deadline),
        other => panic!("want Deadline, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        format!("Talos API at https://{addr} did not answer within 1.5s")
    );
}

#[tokio::test]
async fn the_poller_backs_off_after_a_failure_and_rereads_the_talosconfig() {
    let pki = pki();
    let addr = serve(
        &pki,
        Fake {
            node: Node::nvidia(NVIDIA_MODULES, true, Some("nvidia")),
            ..Default::default()
        },
    )
    .await;
    let closed = closed_port().await;
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), &pki, &closed.to_string());
    let args = talosapi::TalosApiConfig {
        enabled: true,
        config: cfg.clone(),
        endpoint: None,
        node: Some(NODE_IP.to_owned()),
        timeout_s: 10.0,
    };
    // Zero backoff: every poll tries again.
    let zero = gpuscout::backoff::Backoff::new(Duration::ZERO, Duration::ZERO);
    let mut poller = talosapi::Poller::with_backoff(args.clone(), zero).unwrap();
    assert!(bounded(poller.poll()).await.is_none());
    assert!(
        poller
            .last_error()
            .unwrap()
            .contains("cannot reach the Talos API"),
        "{:?}",
        poller.last_error()
    );
    // The secret is updated (here: a new endpoint): the next poll uses the new file.
    write_config(tmp.path(), &pki, &addr.to_string());
    let facts = bounded(poller.poll())
        .await
        .expect("facts after the update");
    assert!(facts.services[PERSISTENCED].running);
    assert!(poller.last_error().is_none());
    assert_eq!(poller.backoff().attempts(), 0);

    // A long backoff: after one failure, polls inside the window make no new attempt.
    write_config(tmp.path(), &pki, &closed.to_string());
    let long =
        gpuscout::backoff::Backoff::new(Duration::from_secs(3600), Duration::from_secs(3600));
    let mut poller = talosapi::Poller::with_backoff(args, long).unwrap();
    assert!(bounded(poller.poll()).await.is_none());
    assert_eq!(poller.backoff().attempts(), 1);
    for _ in 0..5 {
        assert!(bounded(poller.poll()).await.is_none());
    }
    assert_eq!(poller.backoff().attempts(), 1);
}

// ---------------------------------------------------------------------------------------------
// The binary

fn write_config(dir: &Path, pki: &Pki, endpoint: &str) -> PathBuf {
    let path = dir.join("config");
    std::fs::write(
        &path,
        talosconfig(
            &pki.ca_pem,
            &pki.client_cert_pem,
            &pki.client_key_pem,
            endpoint,
        ),
    )
    .unwrap();
    path
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gpuscout"))
        .args(args)
        .env_remove("GPUSCOUT_ROOT")
        .env_remove("GPUSCOUT_TALOS_API")
        .env_remove("GPUSCOUT_TALOS_NODE")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run gpuscout")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_prints_the_refined_hint_when_the_talos_api_answers() {
    let pki = pki();
    let addr = serve(
        &pki,
        Fake {
            node: Node::nvidia(&[], false, None),
            ..Default::default()
        },
    )
    .await;
    let host = nvidia_not_loaded();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), &pki, &addr.to_string());
    let root = host.path().to_str().unwrap().to_owned();
    let cfg = cfg.to_str().unwrap().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        run(&[
            "check",
            "--root",
            &root,
            "--talos-api",
            "--talos-config",
            &cfg,
            "--talos-node",
            NODE_IP,
        ])
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "fix: add `nvidia`, `nvidia_uvm`, `nvidia_drm`, `nvidia_modeset` to machine.kernel.modules"
        ),
        "{stderr}"
    );
}

#[tokio::test]
async fn discover_degrades_to_file_evidence_with_one_warning_when_unreachable() {
    let pki = pki();
    let addr = closed_port().await;
    let host = nvidia_not_loaded();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), &pki, &addr.to_string());
    let root = host.path().to_str().unwrap();
    let plain = run(&["discover", "--root", root, "--format", "json"]);
    let with_api = run(&[
        "discover",
        "--root",
        root,
        "--format",
        "json",
        "--talos-api",
        "--talos-config",
        cfg.to_str().unwrap(),
        "--talos-node",
        NODE_IP,
    ]);
    assert_eq!(with_api.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&with_api.stdout),
        String::from_utf8_lossy(&plain.stdout),
        "without the API the report is the file-evidence report"
    );
    let stderr = String::from_utf8_lossy(&with_api.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("cannot reach the Talos API"), "{stderr}");
    assert!(
        lines[0].contains("using file and label evidence"),
        "{stderr}"
    );
}

#[test]
fn missing_secret_or_node_address_is_one_warning_not_a_failure() {
    let host = nvidia_not_loaded();
    let root = host.path().to_str().unwrap();
    let out = run(&[
        "discover",
        "--root",
        root,
        "--talos-api",
        "--talos-config",
        "/nonexistent/talos.dev/config",
        "--talos-node",
        NODE_IP,
    ]);
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("cannot read talosconfig /nonexistent/talos.dev/config"),
        "{stderr}"
    );

    let out = run(&["discover", "--root", root, "--talos-api"]);
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--talos-node"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nodes_extension_statuses_stand_in_for_an_unmounted_extensions_yaml() {
    let pki = pki();
    let addr = serve(
        &pki,
        Fake {
            node: Node::nvidia(&[], false, None),
            ..Default::default()
        },
    )
    .await;
    let host = nvidia_not_loaded();
    std::fs::remove_file(host.path().join("etc/extensions.yaml")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), &pki, &addr.to_string());
    let root = host.path().to_str().unwrap().to_owned();
    let cfg = cfg.to_str().unwrap().to_owned();
    let (without, with) = tokio::task::spawn_blocking(move || {
        let without = run(&["check", "--root", &root]);
        let with = run(&[
            "check",
            "--root",
            &root,
            "--talos-api",
            "--talos-config",
            &cfg,
            "--talos-node",
            NODE_IP,
        ]);
        (without, with)
    })
    .await
    .unwrap();
    let without = String::from_utf8_lossy(&without.stderr).into_owned();
    let with = String::from_utf8_lossy(&with.stderr).into_owned();
    assert!(without.contains("extension-missing"), "{without}");
    assert!(!with.contains("extension-missing"), "{with}");
    assert!(
        with.contains("module-not-loaded")
            && with.contains("fix: add `nvidia`, `nvidia_uvm`, `nvidia_drm`, `nvidia_modeset` to machine.kernel.modules"),
        "{with}"
    );
}
