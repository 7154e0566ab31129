//! `gpuscout serve`: the long-running agent. Runs discovery periodically, serves Prometheus
//! metrics and health endpoints, and hosts extra tasks (Kubernetes label sync) on the same
//! stream of reports.
//!
//! ```text
//!  discovery task ─(every --discovery-interval, blocking thread)─► hold ─► watch<Arc<Report>>
//!                                                                            │        │
//!        Daemon::reports() ── label sync (k8s, added with Daemon::spawn) ◄───┘        │
//!  httpconn gate ─► hyper http1 ─► /metrics ─► metrics::Exporter (reads sysfs) ◄───────┘
//!                              ─► /healthz (process alive)   /readyz (503 until ready)
//! ```
//!
//! Listens on `--listen` (env `GPUSCOUT_LISTEN`, default `0.0.0.0:10106`). Port 10106 is
//! outside 9100–9999, the range of the Prometheus "default port allocations" wiki page, which
//! its maintainers declared fully allocated in 2023; that keeps it clear of node_exporter
//! (9100), dcgm-exporter (9400) and nvidia_gpu_exporter (9835).
//!
//! Optional security (off by default, see docs/metrics-auth.md): `--tls-cert`/`--tls-key` serve
//! HTTPS ([`crate::tls`]); `--metrics-auth kubernetes` checks bearer tokens on `/metrics` with
//! TokenReview + SubjectAccessReview ([`crate::authn`]); `/healthz` and `/readyz` stay open.
//!
//! Connections go through [`crate::httpconn`]: a cap (`--http-max-connections`), header-read
//! and idle keep-alive timeouts, half-close, and a cheap answer over the cap that still serves
//! `/healthz` and `/readyz`. Each discovery pass goes through [`crate::hold`] before it is
//! published: a GPU whose read failed keeps its last good labels for `--label-hold`.
//!
//! SIGTERM or SIGINT: stop accepting, let in-flight scrapes finish (idle keep-alive connections
//! are closed), give extra tasks the same grace, then return (exit 0). A listen address that
//! does not parse or cannot be bound is a configuration error (one line, exit 2).

use crate::discover::{self, Evidence, Options};
use crate::hostroot::HostRoot;
use crate::metrics::{self, Exporter, ExporterConfig, Source};
use crate::model::{Host, Report};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

/// What stops `serve`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--listen {addr:?}: not an address like 0.0.0.0:10106 or [::1]:10106")]
    ListenAddr { addr: String },
    #[error("--listen {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("installing the signal handler: {0}")]
    Signal(#[source] std::io::Error),
    #[error("Kubernetes: {0}")]
    Kube(#[source] crate::k8s::Error),
    #[error(transparent)]
    Tls(#[from] crate::tls::Error),
    #[error("--metrics-auth kubernetes: {0}")]
    MetricsAuth(#[source] crate::k8s::Error),
}

/// Parse `--listen`.
pub fn parse_listen(s: &str) -> Result<SocketAddr, Error> {
    s.trim()
        .parse()
        .map_err(|_| Error::ListenAddr { addr: s.to_owned() })
}

/// Settings of the [`Daemon`] itself.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub discovery_interval: Duration,
    pub exporter: ExporterConfig,
    /// How long in-flight requests and extra tasks get after SIGTERM.
    pub grace: Duration,
}

type Task = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// The evidence of each discovery pass (Node extensions, NVML, Talos API), asked on the pass's
/// blocking thread just before [`discover::discover`] runs.
pub type EvidenceFn = Arc<dyn Fn() -> Evidence + Send + Sync + 'static>;

/// The running agent: discovery loop, report channel, HTTP server and extra tasks.
///
/// Other parts of the agent (Kubernetes label sync) use it like this before `serve`:
/// ```no_run
/// # async fn f(mut d: gpuscout::serve::Daemon, l: tokio::net::TcpListener) {
/// let mut reports = d.reports();
/// let mut stop = d.shutdown_signal();
/// d.spawn(async move {
///     // The first value is a placeholder (no GPUs): act only on `changed()`.
///     loop {
///         tokio::select! {
///             r = reports.changed() => if r.is_err() { break },
///             _ = stop.wait_for(|s| *s) => break,
///         }
///         let report = reports.borrow_and_update().clone();
///         // ... patch the Node from `report` ...
///         # let _ = report;
///     }
/// });
/// d.serve(l, std::future::pending()).await;
/// # }
/// ```
pub struct Daemon {
    root: HostRoot,
    opts: Options,
    config: DaemonConfig,
    tx: watch::Sender<Arc<Report>>,
    ready: Arc<AtomicBool>,
    shutdown_tx: watch::Sender<bool>,
    tasks: Vec<Task>,
    sources: Vec<Arc<dyn Source>>,
    registry: Option<Registry>,
    evidence: EvidenceFn,
    auth: Option<crate::authn::Authenticator>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    label_hold: Duration,
    limits: crate::httpconn::Limits,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("root", &self.root)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The report the channel holds until the first discovery pass has finished.
fn placeholder() -> Report {
    Report::new(Host::default(), Vec::new(), BTreeMap::new())
}

impl Daemon {
    /// A daemon with the built-in metrics sources. Nothing runs until [`serve`](Self::serve).
    pub fn new(root: HostRoot, opts: Options, config: DaemonConfig) -> Self {
        let (tx, _) = watch::channel(Arc::new(placeholder()));
        let (shutdown_tx, _) = watch::channel(false);
        Self {
            root,
            opts,
            config,
            tx,
            ready: Arc::new(AtomicBool::new(false)),
            shutdown_tx,
            tasks: Vec::new(),
            sources: metrics::default_sources(),
            registry: None,
            evidence: Arc::new(Evidence::default),
            auth: None,
            tls: None,
            label_hold: crate::hold::DEFAULT_HOLD,
            limits: crate::httpconn::Limits::default(),
        }
    }

    /// How long a GPU's last good labels are kept through read failures (`--label-hold`,
    /// see [`crate::hold`]); zero turns holding off.
    pub fn set_label_hold(&mut self, hold: Duration) {
        self.label_hold = hold;
    }

    /// Connection limits and timeouts of the HTTP server (see [`crate::httpconn`]).
    pub fn set_http_limits(&mut self, limits: crate::httpconn::Limits) {
        self.limits = limits;
    }

    /// Require a bearer token allowed to `get /metrics` (TokenReview + SubjectAccessReview).
    pub fn set_metrics_auth(&mut self, auth: crate::authn::Authenticator) {
        self.auth = Some(auth);
    }

    /// Serve HTTPS with this acceptor ([`crate::tls::acceptor`]).
    pub fn set_tls(&mut self, tls: tokio_rustls::TlsAcceptor) {
        self.tls = Some(tls);
    }

    /// Where each discovery pass gets its [`Evidence`] (default: none). `f` runs on the pass's
    /// blocking thread every discovery interval; the pass itself is always
    /// [`discover::discover`], as in the one-shot commands.
    pub fn set_evidence(&mut self, f: impl Fn() -> Evidence + Send + Sync + 'static) {
        self.evidence = Arc::new(f);
    }

    /// The latest discovery report. The value before the first pass is an empty placeholder
    /// that is never "changed": wait for `changed()` before acting on a report.
    pub fn reports(&self) -> watch::Receiver<Arc<Report>> {
        self.tx.subscribe()
    }

    /// Becomes `true` when shutdown starts; tasks should finish within the grace period.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown_tx.subscribe()
    }

    /// Run `task` alongside the server (started by [`serve`](Self::serve); aborted if it has
    /// not returned within the grace period after shutdown starts).
    pub fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.push(Box::pin(task));
    }

    /// Add a metrics source (NVML, ROCm SMI). See [`metrics::Source`] for the contract.
    pub fn add_source(&mut self, source: Arc<dyn Source>) {
        self.sources.push(source);
    }

    /// Drop the sources named in `names` (`--disable-source`): they are not read at scrape
    /// time and report no `gpuscout_scrape_source_*` series. Call it after the last
    /// [`add_source`](Self::add_source).
    pub fn disable_sources(&mut self, names: &[String]) {
        self.sources
            .retain(|s| !names.iter().any(|n| n.as_str() == s.name()));
    }

    /// Names of the sources a scrape reads, in order.
    pub fn source_names(&self) -> Vec<&'static str> {
        self.sources.iter().map(|s| s.name()).collect()
    }

    /// A registry served on `/metrics` after the scrape-time series, encoded on every request
    /// (not cached). It adds no prefix: register complete names, e.g.
    /// `k8s::SyncMetrics::register(daemon.registry())` for `gpuscout_label_sync_total`.
    pub fn registry(&mut self) -> &mut Registry {
        self.registry.get_or_insert_with(Registry::default)
    }

    /// Serve until `shutdown` resolves, then drain. Never fails once the listener is bound.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let grace = self.config.grace;
        let tls = self.tls.clone();
        let running = self.start();
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        accept_loop(&listener, shutdown, &running, &graceful, tls).await;
        drop(listener);
        info!("shutting down: no new connections, finishing in-flight requests");
        drain(running, graceful, grace).await;
    }

    /// Start the discovery loop and the extra tasks; build what answers requests.
    fn start(self) -> Running {
        let Daemon {
            root,
            opts,
            config,
            tx,
            ready,
            shutdown_tx,
            tasks,
            sources,
            registry,
            evidence,
            auth,
            tls: _,
            label_hold,
            limits,
        } = self;
        if tasks.is_empty() {
            info!("no Kubernetes label sync configured: running as a standalone exporter");
        }
        let exporter = Exporter::new(
            root.clone(),
            tx.subscribe(),
            sources,
            config.exporter.clone(),
        );
        let hold = crate::hold::LabelHold::new(label_hold);
        let conn_metrics = crate::httpconn::ConnMetrics::default();
        let mut registry = registry;
        let reg = registry.get_or_insert_with(Registry::default);
        reg.register_collector(Box::new(hold.gauge()));
        conn_metrics.register(reg);
        let mut handles = Vec::new();
        handles.push(tokio::spawn(discovery_loop(
            evidence,
            root,
            opts,
            config.discovery_interval,
            tx,
            ready.clone(),
            shutdown_tx.subscribe(),
            hold,
        )));
        for t in tasks {
            handles.push(tokio::spawn(t));
        }
        let app = Arc::new(App {
            exporter,
            ready,
            extra: registry,
            auth,
        });
        Running {
            app,
            gate: crate::httpconn::Gate::new(limits, conn_metrics),
            shutdown_tx,
            handles,
        }
    }
}

/// A started daemon: what the accept loop and the drain need.
struct Running {
    app: Arc<App>,
    gate: crate::httpconn::Gate,
    shutdown_tx: watch::Sender<bool>,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

/// Accept connections until `shutdown` resolves: each admitted one is served by
/// [`spawn_connection`]; over the connection cap the gate answers cheaply.
async fn accept_loop(
    listener: &TcpListener,
    shutdown: impl Future<Output = ()>,
    running: &Running,
    graceful: &hyper_util::server::graceful::GracefulShutdown,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let (gate, app) = (&running.gate, &running.app);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and similar: wait a moment, keep serving.
                        gate.accept_failed(&e);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                gate.accept_ok();
                let Some(slot) = gate.admit() else {
                    gate.refuse(stream, tls.is_some(), app.ready.clone());
                    continue;
                };
                spawn_connection(stream, peer, slot, gate, app, graceful, tls.clone());
            }
            () = &mut shutdown => break,
        }
    }
}

/// After the listener is closed: signal shutdown, give in-flight requests and then the extra
/// tasks `grace` each, and abort what is still running.
async fn drain(
    running: Running,
    graceful: hyper_util::server::graceful::GracefulShutdown,
    grace: Duration,
) {
    let _ = running.shutdown_tx.send(true);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        warn!(grace = ?grace, "connections still open after the grace period; closing them");
    }
    let deadline = tokio::time::Instant::now() + grace;
    for h in running.handles {
        let abort = h.abort_handle();
        if tokio::time::timeout_at(deadline, h).await.is_err() {
            abort.abort();
        }
    }
    info!("stopped");
}

// One argument per piece of loop state; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
async fn discovery_loop(
    evidence: EvidenceFn,
    root: HostRoot,
    opts: Options,
    interval: Duration,
    tx: watch::Sender<Arc<Report>>,
    ready: Arc<AtomicBool>,
    mut stop: watch::Receiver<bool>,
    mut hold: crate::hold::LabelHold,
) {
    loop {
        let (r, o, ev) = (root.clone(), opts.clone(), evidence.clone());
        let pass = tokio::task::spawn_blocking(move || {
            let report = discover::discover(&r, &o, &ev());
            // Which devices exist, to tell an unplugged GPU from one that could not be read.
            let listing = match r.list_dir(crate::pci::DEVICES) {
                Ok(names) => crate::hold::Listing::Listed(names.into_iter().collect()),
                Err(e) if e.is_not_found() => crate::hold::Listing::Listed(Default::default()),
                Err(_) => crate::hold::Listing::Unknown,
            };
            (report, listing)
        });
        match pass.await {
            Ok((mut report, listing)) => {
                hold.apply(
                    &mut report,
                    &listing,
                    &opts.labels,
                    tokio::time::Instant::now(),
                );
                let gpus = report.gpus.len();
                let first = !ready.load(Ordering::Acquire);
                tx.send_replace(Arc::new(report));
                if first {
                    ready.store(true, Ordering::Release);
                    info!(gpus, "first discovery done; ready");
                } else {
                    debug!(gpus, "discovery done");
                }
            }
            Err(e) => error!(error = %e, "discovery pass panicked; keeping the previous report"),
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Serve one admitted connection: HTTP/1 with half-close, under the watchdog of
/// [`crate::httpconn`] (header-read and idle timeouts), inside the graceful-shutdown watcher.
fn spawn_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    slot: crate::httpconn::Slot,
    gate: &crate::httpconn::Gate,
    app: &Arc<App>,
    graceful: &hyper_util::server::graceful::GracefulShutdown,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let activity = slot.activity();
    let (app, act) = (app.clone(), activity.clone());
    let svc = hyper::service::service_fn(move |req| {
        let (app, act) = (app.clone(), act.clone());
        async move {
            act.busy();
            let resp = app.handle(req).await;
            act.idle();
            Ok::<_, Infallible>(resp)
        }
    });
    let watcher = graceful.watcher();
    let gate = gate.clone();
    let limits = gate.limits();
    tokio::spawn(async move {
        let mut http = hyper::server::conn::http1::Builder::new();
        // Our watchdog times the header and idle phases; hyper's own header timer (it needs a
        // timer to run at all) is a backstop at the sum of both.
        http.timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(limits.header_timeout + limits.idle_timeout)
            // A client that shuts down its write side after the request still gets the answer.
            .half_close(true);
        let io = crate::httpconn::Tracked::new(stream, activity.clone());
        let serve = async {
            match tls {
                None => {
                    watcher
                        .watch(http.serve_connection(TokioIo::new(io), svc))
                        .await
                }
                Some(tls) => {
                    // A client that never finishes the handshake is dropped, not kept.
                    let hs = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept(io)).await;
                    match hs {
                        Ok(Ok(s)) => {
                            watcher
                                .watch(http.serve_connection(TokioIo::new(s), svc))
                                .await
                        }
                        Ok(Err(e)) => {
                            debug!(peer = %peer, error = %e, "TLS handshake failed");
                            Ok(())
                        }
                        Err(_) => {
                            debug!(peer = %peer, "TLS handshake timed out");
                            Ok(())
                        }
                    }
                }
            }
        };
        tokio::select! {
            done = serve => if let Err(e) = done {
                debug!(peer = %peer, error = %e, "connection ended with an error");
            },
            why = activity.watchdog(limits) => {
                gate.closed(why);
                debug!(peer = %peer, reason = why.as_str(), "connection closed by the server");
            }
            () = slot.evicted() => {
                debug!(peer = %peer, "idle connection closed to make room for a new one");
            }
        }
    });
}

/// How long a client gets to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

struct App {
    exporter: Exporter,
    ready: Arc<AtomicBool>,
    extra: Option<Registry>,
    auth: Option<crate::authn::Authenticator>,
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// True when the client asks for OpenMetrics (Prometheus sends
/// `application/openmetrics-text;version=1.0.0,...;q=0.5,text/plain;version=0.0.4;q=0.4,...`).
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

impl App {
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        }
        match req.uri().path() {
            "/healthz" => plain(StatusCode::OK, "ok\n"),
            "/readyz" => {
                if self.ready.load(Ordering::Acquire) {
                    plain(StatusCode::OK, "ready\n")
                } else {
                    plain(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "first discovery not done yet\n",
                    )
                }
            }
            "/metrics" => {
                if let Some(auth) = &self.auth {
                    use crate::authn::Decision;
                    let header = req
                        .headers()
                        .get(hyper::header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok());
                    match auth.check(header).await {
                        Decision::Allowed => {}
                        Decision::Unauthenticated => {
                            let mut r = plain(StatusCode::UNAUTHORIZED, "unauthorized\n");
                            r.headers_mut().insert(
                                hyper::header::WWW_AUTHENTICATE,
                                HeaderValue::from_static("Bearer"),
                            );
                            return r;
                        }
                        Decision::Forbidden { .. } => {
                            return plain(
                                StatusCode::FORBIDDEN,
                                "forbidden: get /metrics not allowed\n",
                            );
                        }
                        Decision::Unavailable => {
                            return plain(
                                StatusCode::SERVICE_UNAVAILABLE,
                                "cannot verify credentials: Kubernetes API unavailable\n",
                            );
                        }
                    }
                }
                if !self.ready.load(Ordering::Acquire) {
                    return plain(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "first discovery not done yet\n",
                    );
                }
                let om = wants_openmetrics(req.headers().get(ACCEPT).and_then(|v| v.to_str().ok()));
                let Some(snap) = self.exporter.scrape().await else {
                    return plain(StatusCode::INTERNAL_SERVER_ERROR, "scrape failed\n");
                };
                let text = metrics::exposition(&snap, self.extra.as_ref(), om);
                let ct = if om {
                    metrics::OPENMETRICS_CONTENT_TYPE
                } else {
                    metrics::TEXT_CONTENT_TYPE
                };
                let body = match text {
                    metrics::Exposition::Owned(s) => Bytes::from(s),
                    shared => Bytes::from_owner(shared),
                };
                let mut r = Response::new(Full::new(body));
                r.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static(ct));
                r
            }
            _ => plain(StatusCode::NOT_FOUND, "not found; try /metrics\n"),
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub fn termination() -> Result<impl Future<Output = ()>, Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(Error::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(Error::Signal)?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => info!(signal = "SIGTERM", "signal received"),
            _ = int.recv() => info!(signal = "SIGINT", "signal received"),
        }
    })
}

/// Everything `gpuscout serve` needs, built by the command line ([`crate::cli`]) from its flags.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The host root, already checked to be a readable directory.
    pub root: HostRoot,
    /// Options of every discovery pass (labels, node name).
    pub discover: Options,
    /// `--listen`, as given (parsed by [`run`], so a bad address is reported with its text).
    pub listen: String,
    pub discovery_interval: Duration,
    pub scrape_timeout: Duration,
    pub scrape_cache: Duration,
    /// Metrics sources not to read at scrape time.
    pub disable_source: Vec<String>,
    pub label_hold: Duration,
    pub http: crate::httpconn::Limits,
    pub nvml: crate::nvml::NvmlConfig,
    /// Kubeconfig for label sync and `--metrics-auth kubernetes`; `None`: in-cluster.
    pub kubeconfig: Option<std::path::PathBuf>,
    /// Label sync settings (node name and validated prefix included).
    pub sync: crate::k8s::SyncConfig,
    pub pods: crate::pods::PodsConfig,
    pub security: crate::authn::SecurityConfig,
    pub talos_api: crate::talosapi::TalosApiConfig,
}

/// `gpuscout serve` as the binary runs it: bind, serve until SIGTERM/SIGINT.
pub async fn run(cfg: ServeConfig) -> Result<u8, Error> {
    let ServeConfig {
        root,
        discover: opts,
        listen,
        discovery_interval,
        scrape_timeout,
        scrape_cache,
        disable_source,
        label_hold,
        http,
        nvml,
        kubeconfig,
        sync,
        pods,
        security,
        talos_api,
    } = cfg;
    let addr = parse_listen(&listen)?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind {
            addr: listen.clone(),
            source,
        })?;
    let local = listener.local_addr().map_or(addr, |a| a);
    let stop = termination()?;
    let config = DaemonConfig {
        discovery_interval,
        exporter: ExporterConfig {
            deadline: scrape_timeout,
            cache: scrape_cache,
        },
        grace: scrape_timeout + Duration::from_secs(1),
    };
    let mut daemon = Daemon::new(root.clone(), opts, config);
    daemon.set_label_hold(label_hold);
    daemon.set_http_limits(http);
    // Before anything starts: --metrics-auth without a cluster or bad TLS files stop here.
    secure(&mut daemon, &security, kubeconfig.as_deref()).await?;
    info!(listen = %local, root = %root.dir().display(), tls = security.tls_cert.is_some(),
        metrics_auth = ?security.metrics_auth, "serving /metrics, /healthz, /readyz");
    // NVML: readings as a metrics source, versions for the verdicts in every discovery pass.
    let nvml = crate::nvml::Nvml::start(nvml);
    daemon.add_source(Arc::new(crate::nvml::source::NvmlSource::new(nvml.clone())));
    // ROCm SMI (feature `rocm-smi`): energy, RAS counts, memory busy, PCIe replays.
    #[cfg(feature = "rocm-smi")]
    daemon.add_source(Arc::new(crate::rocm::source::RocmSmiSource::new()));
    // Who uses each GPU: kubelet allocations and per-process usage (agent/src/pods).
    wire_pods(&mut daemon, &pods, Some(nvml.clone()), scrape_timeout);
    if !disable_source.is_empty() {
        daemon.disable_sources(&disable_source);
        info!(disabled = ?disable_source, sources = ?daemon.source_names(),
            "metrics sources disabled by --disable-source");
    }
    let client = label_sync_client(kubeconfig.as_deref()).await?;
    let node_extensions = wire_label_sync(&mut daemon, sync, client);
    let talos = wire_talos_api(&mut daemon, &talos_api, discovery_interval);
    wire_discovery(&mut daemon, node_extensions, talos, Some(nvml));
    daemon.serve(listener, stop).await;
    Ok(0)
}

/// Add the sources of [`crate::pods`] (kubelet allocations, per-process usage) that `pods`
/// turns on. `scrape_timeout` bounds the kubelet call and the scan.
pub fn wire_pods(
    daemon: &mut Daemon,
    pods: &crate::pods::PodsConfig,
    nvml: Option<crate::nvml::NvmlHandle>,
    scrape_timeout: Duration,
) {
    let budget = scrape_timeout.mul_f64(0.5);
    if pods.pod_resources {
        daemon.add_source(Arc::new(crate::pods::AllocationSource::new(
            pods.pod_resources_socket.clone(),
            nvml.clone(),
            budget,
        )));
    }
    if pods.process_metrics {
        daemon.add_source(Arc::new(crate::pods::ProcessSource::new(
            nvml,
            budget,
            usize::try_from(pods.process_max_series).unwrap_or(usize::MAX),
        )));
    }
}

/// Apply `--tls-cert/--tls-key` and `--metrics-auth` to `daemon`. `kubeconfig` as for label
/// sync (`None`: in-cluster). Auth on but no cluster is an error (exit 2), never "open".
pub async fn secure(
    daemon: &mut Daemon,
    sec: &crate::authn::SecurityConfig,
    kubeconfig: Option<&std::path::Path>,
) -> Result<(), Error> {
    if let (Some(cert), Some(key)) = (&sec.tls_cert, &sec.tls_key) {
        daemon.set_tls(crate::tls::acceptor(cert, key)?);
    }
    if sec.metrics_auth == crate::authn::AuthMode::Kubernetes {
        let client = crate::k8s::connect(kubeconfig)
            .await
            .map_err(Error::MetricsAuth)?;
        daemon.set_metrics_auth(crate::authn::Authenticator::new(
            client,
            crate::authn::AuthConfig::default(),
        ));
    }
    Ok(())
}

/// The Kubernetes client label sync uses: in-cluster or `--kubeconfig`. `None` means no cluster
/// (a standalone exporter). A `--kubeconfig` that cannot be used is a configuration error.
async fn label_sync_client(
    kubeconfig: Option<&std::path::Path>,
) -> Result<Option<kube::Client>, Error> {
    use crate::k8s;
    match k8s::connect(kubeconfig).await {
        Ok(c) => Ok(Some(c)),
        Err(k8s::Error::NoCluster) => Ok(None),
        Err(e) if kubeconfig.is_some() => Err(Error::Kube(e)),
        Err(e) => {
            warn!(error = %e, "cannot use the in-cluster Kubernetes config; running as a standalone exporter");
            Ok(None)
        }
    }
}

/// Node evidence for the verdicts: Talos' `extensions.talos.dev/*` records as label sync last
/// saw them on this Node (`None` inside until the Node was seen, and while it carries none).
pub type NodeExtensions = watch::Receiver<Option<Vec<crate::model::Extension>>>;

/// Start Kubernetes label sync, as `serve` does, when there is a cluster (`client`) or the mode
/// needs none (`nfd-file`). Returns the Node's Talos extension records for the verdicts
/// ([`wire_discovery`]); `None` when label sync does not run.
pub fn wire_label_sync(
    daemon: &mut Daemon,
    cfg: crate::k8s::SyncConfig,
    client: Option<kube::Client>,
) -> Option<NodeExtensions> {
    if client.is_none() && cfg.mode != crate::k8s::LabelMode::NfdFile {
        return None;
    }
    let sync = crate::k8s::LabelSync::new(cfg, client, daemon.registry());
    let extensions = sync.extensions();
    let mut reports = daemon.reports();
    let mut stop = daemon.shutdown_signal();
    daemon.spawn(async move {
        // The channel starts with a placeholder; the sync applies its current value as the
        // complete owned label set, so it starts only on the first real report.
        tokio::select! {
            r = reports.changed() => if r.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
        let mut stop2 = stop.clone();
        sync.run(reports, async move {
            let _ = stop2.wait_for(|s| *s).await;
        })
        .await;
    });
    Some(extensions)
}

/// The evidence of the discovery pass `serve` runs every interval: the latest Node extensions
/// (from [`wire_label_sync`]), Talos API facts and the NVML source.
pub fn wire_discovery(
    daemon: &mut Daemon,
    node_extensions: Option<NodeExtensions>,
    talos: Option<watch::Receiver<Option<Arc<crate::talosapi::TalosApiFacts>>>>,
    nvml: Option<crate::nvml::NvmlHandle>,
) {
    daemon.set_evidence(move || Evidence {
        node_extensions: node_extensions.as_ref().and_then(|rx| rx.borrow().clone()),
        talos: talos.as_ref().and_then(|rx| rx.borrow().clone()),
        nvml: nvml
            .clone()
            .map_or(discover::NvmlEvidence::None, discover::NvmlEvidence::Source),
    });
}

/// Poll the Talos API (`--talos-api`) once per discovery interval, with its own backoff;
/// the latest answer refines every discovery pass.
fn wire_talos_api(
    daemon: &mut Daemon,
    talos_api: &crate::talosapi::TalosApiConfig,
    interval: Duration,
) -> Option<watch::Receiver<Option<Arc<crate::talosapi::TalosApiFacts>>>> {
    let mut poller = crate::talosapi::Poller::new(talos_api.clone())?;
    let (tx, rx) = watch::channel(None);
    let mut stop = daemon.shutdown_signal();
    daemon.spawn(async move {
        loop {
            if let Some(facts) = poller.poll().await {
                tx.send_replace(Some(Arc::new(facts)));
            }
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    });
    Some(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_and_accept() {
        assert!(parse_listen("0.0.0.0:10106").is_ok());
        assert!(parse_listen("[::1]:10106").is_ok());
        assert!(parse_listen("localhost").is_err());
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
        )));
        assert!(!wants_openmetrics(Some("text/plain")));
        assert!(!wants_openmetrics(None));
    }
}
