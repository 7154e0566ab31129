//! Connection handling of the `serve` HTTP server: a cap on open connections, a header-read
//! timeout, an idle keep-alive timeout, and a cheap answer for connections over the cap.
//!
//! ```text
//!  accept ─► admit? ──yes──► Tracked<TcpStream> ─► hyper http1 (half-close on) ─► App
//!     │        │                │ first byte of a request: Idle → Head
//!     │        │                │ service runs: Busy; service done: Idle
//!     │        │                └─ watchdog: Head longer than --http-header-timeout, or Idle
//!     │        │                   longer than --http-idle-timeout: connection dropped
//!     │        └─ at --http-max-connections: the longest-idle connection (nothing in flight,
//!     │           nothing received) is closed to make room ("evicted")
//!     └─no (at the cap, none idle)─► refuse: one short read of the request line, then
//!            `/healthz` 200, `/readyz` 200/503, anything else 503 + `Connection: close`;
//!            at most OVERFLOW_SLOTS such answers at once, beyond that the socket is closed
//! ```
//!
//! So an idle flood costs at most the cap in descriptors and never blocks a new client (its
//! connections are recycled), and a slow-header flood is refused cheaply while probes still
//! get their answer.
//!
//! Without this, hyper's header-read timeout never fired (no timer was set), idle sockets were
//! never closed and their number was unbounded: 20,000 idle connections exhausted the
//! descriptors, so `/metrics`, `/healthz` and `/readyz` all timed out. Refusals are counted in
//! `gpuscout_http_connections_refused_total`, timeouts in
//! `gpuscout_http_connections_closed_total{reason}`, open connections in
//! `gpuscout_http_connections`. A failing `accept` (out of descriptors) is logged once per
//! run of failures. Behind TLS the over-cap answer is a plain close: a handshake is not cheap.

use crate::logonce::LogOnce;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tracing::{debug, warn};

/// Default of `--http-max-connections`: far above what Prometheus, probes and a person with
/// curl open, far below a process's usual 1024 descriptors.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// Default of `--http-header-timeout`.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of `--http-idle-timeout`: longer than a 60 s scrape interval, so Prometheus keeps
/// its connection between scrapes.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Over-cap connections answered at once; more are closed without an answer.
const OVERFLOW_SLOTS: usize = 64;
/// How long an over-cap connection gets to send its request line.
const OVERFLOW_READ: Duration = Duration::from_millis(500);
/// Bytes read from an over-cap connection (a request line and a few headers).
const OVERFLOW_BUF: usize = 1024;

/// Limits of the HTTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    /// From the first byte of a request to the end of its header.
    pub header_timeout: Duration,
    /// A connection with no request in flight and nothing received.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// The server's connection metrics.
#[derive(Debug, Clone, Default)]
pub struct ConnMetrics {
    open: Gauge,
    refused: Counter,
    closed: Family<ReasonLabel, Counter>,
}

impl ConnMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "gpuscout_http_connections",
            "Open HTTP connections (admitted, under the cap)",
            self.open.clone(),
        );
        registry.register(
            "gpuscout_http_connections_refused",
            "Connections refused at --http-max-connections because none of the open ones was idle",
            self.refused.clone(),
        );
        registry.register(
            "gpuscout_http_connections_closed",
            "Connections the server closed, by reason (header_timeout, idle_timeout, evicted)",
            self.closed.clone(),
        );
    }

    /// Connections refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.get()
    }

    /// Connections open now.
    pub fn open(&self) -> i64 {
        self.open.get()
    }
}

/// Admitted connections: what each is doing, and how to close it.
type Conns = Arc<Mutex<BTreeMap<u64, (Arc<Activity>, Arc<Notify>)>>>;

/// Admission of new connections; cheap to clone.
#[derive(Debug, Clone)]
pub struct Gate {
    limits: Limits,
    metrics: ConnMetrics,
    overflow: Arc<Semaphore>,
    accept_failing: Arc<LogOnce<()>>,
    conns: Conns,
    next_id: Arc<AtomicU64>,
    base: Instant,
}

/// An admitted connection; releases its slot when dropped.
#[derive(Debug)]
pub struct Slot {
    id: u64,
    activity: Arc<Activity>,
    evict: Arc<Notify>,
    conns: Conns,
    open: Gauge,
}

impl Slot {
    /// What this connection is doing (for the stream wrapper, the service and the watchdog).
    pub fn activity(&self) -> Arc<Activity> {
        self.activity.clone()
    }

    /// Resolves when the gate closes this connection to make room for a new one.
    pub async fn evicted(&self) {
        self.evict.notified().await;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        crate::lock::lock(&self.conns).remove(&self.id);
        self.open.dec();
    }
}

impl Gate {
    pub fn new(limits: Limits, metrics: ConnMetrics) -> Self {
        Self {
            limits,
            metrics,
            overflow: Arc::new(Semaphore::new(OVERFLOW_SLOTS)),
            accept_failing: Arc::new(LogOnce::new()),
            conns: Arc::new(Mutex::new(BTreeMap::new())),
            next_id: Arc::new(AtomicU64::new(0)),
            base: Instant::now(),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// A slot for a new connection. At the cap the longest-idle connection is evicted to make
    /// room; `None` when every admitted connection is busy or reading a header.
    pub fn admit(&self) -> Option<Slot> {
        let mut m = crate::lock::lock(&self.conns);
        if m.len() >= self.limits.max_connections {
            let victim = m
                .iter()
                .filter(|(_, (a, _))| a.phase.load(Ordering::Acquire) == IDLE)
                .min_by_key(|(_, (a, _))| a.since_ms.load(Ordering::Acquire))
                .map(|(id, _)| *id)?;
            if let Some((_, evict)) = m.remove(&victim) {
                evict.notify_one();
                self.closed(Timeout::Evicted);
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let activity = Activity::with_base(self.base);
        let evict = Arc::new(Notify::new());
        m.insert(id, (activity.clone(), evict.clone()));
        self.metrics.open.inc();
        Some(Slot {
            id,
            activity,
            evict,
            conns: self.conns.clone(),
            open: self.metrics.open.clone(),
        })
    }

    /// `accept` succeeded: a later failure is news again.
    pub fn accept_ok(&self) {
        self.accept_failing.clear();
    }

    /// `accept` failed (out of descriptors, usually): logged once per run of failures.
    pub fn accept_failed(&self, e: &std::io::Error) {
        if self.accept_failing.first(()) {
            warn!(error = %e, open = self.metrics.open.get(), "accept failed; retrying (logged once until an accept succeeds)");
        } else {
            debug!(error = %e, "accept failed again");
        }
    }

    /// Answer a connection over the cap: `/healthz` and `/readyz` as usual, anything else 503,
    /// then close. Bounded: OVERFLOW_SLOTS answers at once, each reading at most OVERFLOW_BUF
    /// bytes for at most OVERFLOW_READ; beyond that the socket is closed at once.
    pub fn refuse(&self, mut stream: TcpStream, tls: bool, ready: Arc<AtomicBool>) {
        self.metrics.refused.inc();
        if tls {
            return;
        }
        let Ok(permit) = self.overflow.clone().try_acquire_owned() else {
            return;
        };
        tokio::spawn(async move {
            let _permit = permit;
            let mut buf = [0u8; OVERFLOW_BUF];
            let mut n = 0;
            // The request line and headers (up to the blank line), within the buffer and time.
            let _ = tokio::time::timeout(OVERFLOW_READ, async {
                while n < buf.len() {
                    match stream.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => n += k,
                    }
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            })
            .await;
            let line = buf[..n].split(|b| *b == b'\n').next().unwrap_or_default();
            let reply = overflow_reply(line, ready.load(Ordering::Acquire));
            let _ = tokio::time::timeout(OVERFLOW_READ, async {
                let _ = stream.write_all(reply.as_bytes()).await;
                let _ = stream.shutdown().await;
                // Lingering close: closing with unread input would send a reset that can destroy
                // the answer before the client reads it; drain briefly instead.
                while matches!(stream.read(&mut buf).await, Ok(k) if k > 0) {}
            })
            .await;
        });
    }

    /// Count a connection the watchdog closed.
    pub fn closed(&self, reason: Timeout) {
        self.metrics
            .closed
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .inc();
    }
}

/// The whole HTTP/1.1 answer to an over-cap request line.
fn overflow_reply(request_line: &[u8], ready: bool) -> String {
    let mut parts = request_line.split(|b| *b == b' ');
    let method = parts.next().unwrap_or_default();
    let path = parts.next().unwrap_or_default();
    let get = method == b"GET" || method == b"HEAD";
    let (status, body) = match (get, path) {
        (true, b"/healthz") => ("200 OK", "ok\n"),
        (true, b"/readyz") if ready => ("200 OK", "ready\n"),
        (true, b"/readyz") => ("503 Service Unavailable", "first discovery not done yet\n"),
        _ => (
            "503 Service Unavailable",
            "too many connections; retry later\n",
        ),
    };
    let body = if method == b"HEAD" { "" } else { body };
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Why the server closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// A request's header took longer than the header timeout (slowloris).
    Header,
    /// Nothing in flight and nothing received for the idle timeout.
    Idle,
    /// Idle longest when a new connection needed its slot at the cap.
    Evicted,
}

impl Timeout {
    pub fn as_str(self) -> &'static str {
        match self {
            Timeout::Header => "header_timeout",
            Timeout::Idle => "idle_timeout",
            Timeout::Evicted => "evicted",
        }
    }
}

const IDLE: u8 = 0;
const HEAD: u8 = 1;
const BUSY: u8 = 2;

/// What one connection is doing, for its watchdog.
#[derive(Debug)]
pub struct Activity {
    base: Instant,
    phase: AtomicU8,
    /// Milliseconds after `base` when `phase` began.
    since_ms: AtomicU64,
}

impl Activity {
    /// A new connection's activity (idle since now).
    pub fn new() -> Arc<Self> {
        Self::with_base(Instant::now())
    }

    /// Times are kept as milliseconds after `base`, shared by a gate's connections so that
    /// their idle ages compare.
    fn with_base(base: Instant) -> Arc<Self> {
        let a = Self {
            base,
            phase: AtomicU8::new(IDLE),
            since_ms: AtomicU64::new(0),
        };
        a.set(IDLE);
        Arc::new(a)
    }

    fn set(&self, phase: u8) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.since_ms.store(ms, Ordering::Release);
        self.phase.store(phase, Ordering::Release);
    }

    /// A request reached the service.
    pub fn busy(&self) {
        self.set(BUSY);
    }

    /// The service answered: the connection waits for the next request.
    pub fn idle(&self) {
        self.set(IDLE);
    }

    fn first_byte(&self) {
        if self.phase.load(Ordering::Acquire) == IDLE {
            self.set(HEAD);
        }
    }

    /// Resolves when the connection has been in the header phase or idle for too long.
    pub async fn watchdog(&self, limits: Limits) -> Timeout {
        loop {
            let phase = self.phase.load(Ordering::Acquire);
            let since = self.base + Duration::from_millis(self.since_ms.load(Ordering::Acquire));
            let (limit, why) = match phase {
                HEAD => (limits.header_timeout, Some(Timeout::Header)),
                IDLE => (limits.idle_timeout, Some(Timeout::Idle)),
                _ => (limits.idle_timeout, None),
            };
            let deadline = since + limit;
            if let Some(why) = why
                && Instant::now() >= deadline
            {
                return why;
            }
            // Wake at the deadline (or a while later for a busy connection) and look again:
            // the phase may have changed meanwhile.
            tokio::time::sleep_until(deadline.max(Instant::now() + Duration::from_millis(10)))
                .await;
        }
    }
}

/// A stream that tells its [`Activity`] when a request starts arriving.
#[derive(Debug)]
pub struct Tracked<IO> {
    inner: IO,
    activity: Arc<Activity>,
}

impl<IO> Tracked<IO> {
    pub fn new(inner: IO, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Tracked<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.first_byte();
        }
        r
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Tracked<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_answers_probes_and_refuses_the_rest() {
        let r = overflow_reply(b"GET /healthz HTTP/1.1\r", false);
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\nok\n"));
        assert!(overflow_reply(b"GET /readyz HTTP/1.1", true).starts_with("HTTP/1.1 200"));
        assert!(overflow_reply(b"GET /readyz HTTP/1.1", false).starts_with("HTTP/1.1 503"));
        let m = overflow_reply(b"GET /metrics HTTP/1.1", true);
        assert!(m.starts_with("HTTP/1.1 503") && m.contains("connection: close"));
        assert!(overflow_reply(b"", true).starts_with("HTTP/1.1 503"));
        assert!(overflow_reply(b"HEAD /healthz HTTP/1.1", true).ends_with("\r\n\r\n"));
    }

    #[tokio::test(start_paused = true)]
    async fn watchdog_times_header_and_idle_phases() {
        let limits = Limits {
            max_connections: 1,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
        };
        let a = Activity::new();
        let t0 = Instant::now();
        assert_eq!(a.watchdog(limits).await, Timeout::Idle);
        assert_eq!(t0.elapsed().as_secs(), 90);
        let a = Activity::new();
        a.first_byte();
        let t0 = Instant::now();
        assert_eq!(a.watchdog(limits).await, Timeout::Header);
        assert_eq!(t0.elapsed().as_secs(), 10);
        // Busy: never times out while busy; idle again restarts the clock.
        let a = Activity::new();
        a.busy();
        let w = a.clone();
        let dog = tokio::spawn(async move { w.watchdog(limits).await });
        tokio::time::sleep(Duration::from_secs(1000)).await;
        assert!(!dog.is_finished());
        a.idle();
        let t0 = Instant::now();
        assert_eq!(dog.await.unwrap(), Timeout::Idle);
        assert!(t0.elapsed() <= Duration::from_secs(91));
    }

    #[test]
    fn gate_caps_and_releases() {
        let g = Gate::new(
            Limits {
                max_connections: 2,
                ..Limits::default()
            },
            ConnMetrics::default(),
        );
        let a = g.admit().unwrap();
        let _b = g.admit().unwrap();
        // At the cap with both idle: the longest-idle one (a) is evicted for the newcomer.
        let c = g.admit().expect("room made by eviction");
        assert_eq!(g.conns.lock().unwrap().len(), 2);
        assert!(!g.conns.lock().unwrap().contains_key(&a.id));
        // None idle: refused.
        _b.activity().busy();
        c.activity().first_byte();
        assert!(g.admit().is_none());
        drop(a);
        drop(c);
        assert!(g.admit().is_some());
    }
}
