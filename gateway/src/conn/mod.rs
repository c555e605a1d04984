//! Per-connection task: TLS handshake (for HTTPS listeners), protocol choice, and serving the
//! connection into the pipeline until it closes or the drain signal asks it to finish: HTTP/1.1
//! requests without a body on the connection's own path (`h1.rs`), the rest by hyper.
//!
//! Before: the accept loop (`listen/`). After: `pipeline::handle` for every request.

pub mod h1;
pub mod io;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use crate::telemetry::{ConnLabels, ListenerLabels, Metrics, TimeoutLabels};
use crate::Shared;
use io::{ConnState, TimedIo, Timeouts};

/// What a request knows about its connection.
#[derive(Debug)]
pub struct ConnInfo {
    /// Listener name.
    pub listener: Arc<str>,
    /// Client address.
    pub peer: SocketAddr,
    /// Whether TLS was used.
    pub tls: bool,
    /// `http1` or `h2`.
    pub protocol: &'static str,
    /// TLS version negotiated; `None` on plain listeners.
    pub tls_version: Option<baseline_engine::TlsVersion>,
    /// Shared request/timeout state.
    pub state: Arc<ConnState>,
    /// The peer as forwarding headers write it.
    pub peer_headers: crate::pipeline::forward::PeerHeaders,
    /// `Alt-Svc` for the answers, when the listener also serves HTTP/3.
    pub alt_svc: Option<http::HeaderValue>,
    /// The client certificate the listener verified, on mutual TLS.
    pub client_cert: Option<Arc<crate::identity::certificate::ClientCert>>,
}

impl ConnInfo {
    /// The same connection seen from a new client address (an HTTP/3 connection that
    /// migrated): the requests that follow are forwarded and scored as coming from there.
    pub fn moved_to(&self, peer: SocketAddr) -> Self {
        Self {
            listener: self.listener.clone(),
            peer,
            tls: self.tls,
            protocol: self.protocol,
            tls_version: self.tls_version,
            state: self.state.clone(),
            peer_headers: crate::pipeline::forward::PeerHeaders::new(peer),
            alt_svc: self.alt_svc.clone(),
            client_cert: self.client_cert.clone(),
        }
    }
}

/// Per-listener handles, resolved once.
#[derive(Debug)]
pub struct ListenerCtx {
    /// Name.
    pub name: Arc<str>,
    /// TLS listener.
    pub tls: bool,
    /// Accepted connections.
    pub accepted: Counter,
    /// Accepts that waited for a connection slot.
    pub limited: Counter,
    /// Failed handshakes.
    pub handshake_errors: Counter,
    /// Connections with a verified client certificate.
    pub client_certificates: Counter,
    /// Timeouts by kind.
    pub header_timeouts: Counter,
    /// Idle timeouts.
    pub idle_timeouts: Counter,
    /// Handshake timeouts.
    pub handshake_timeouts: Counter,
    /// Idle connections parked without hyper state now.
    pub parked: prometheus_client::metrics::gauge::Gauge,
    /// `Alt-Svc` advertising HTTP/3 on this listener's port, when QUIC is on.
    pub alt_svc: Option<http::HeaderValue>,
    metrics: Metrics,
}

// === impl ListenerCtx ===

impl ListenerCtx {
    /// Counts and logs an HTTP/1.1 connection handed to hyper.
    fn handed_off(&self, why: h1::Handoff, peer: SocketAddr) {
        let labels = crate::telemetry::HandoffLabels {
            listener: self.name.to_string(),
            reason: why.label(),
        };
        self.metrics.http1_handoffs.get_or_create(&labels).inc();
        tracing::debug!(listener = %self.name, %peer, reason = why.label(), "HTTP/1.1 connection handed to hyper's codec");
    }

    /// Handles for the listener `name`.
    pub fn new(name: &str, tls: bool, metrics: &Metrics) -> Self {
        let l = ListenerLabels {
            listener: name.to_string(),
        };
        let t = |kind| {
            metrics
                .connection_timeouts
                .get_or_create(&TimeoutLabels {
                    listener: name.to_string(),
                    kind,
                })
                .clone()
        };
        Self {
            name: name.into(),
            tls,
            accepted: metrics.connections_accepted.get_or_create(&l).clone(),
            limited: metrics.connections_limited.get_or_create(&l).clone(),
            handshake_errors: metrics.tls_handshake_errors.get_or_create(&l).clone(),
            client_certificates: metrics.tls_client_certificates.get_or_create(&l).clone(),
            header_timeouts: t("header"),
            idle_timeouts: t("idle"),
            handshake_timeouts: t("handshake"),
            parked: metrics.connections_parked.get_or_create(&l).clone(),
            alt_svc: None,
            metrics: metrics.clone(),
        }
    }
}

/// Serves one accepted TCP connection to its end.
///
/// The TLS path and each hyper connection are boxed: an async fn's state is as large as its
/// largest branch, and every plain idle connection would otherwise pay for TLS and HTTP/2 state
/// it does not use.
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: Arc<ListenerCtx>,
    shared: Arc<Shared>,
    drain: CancellationToken,
    permit: OwnedSemaphorePermit,
) {
    let _permit = permit;
    if ctx.tls {
        Box::pin(serve_tls(stream, peer, ctx, shared, drain)).await;
    } else {
        serve_plain(stream, peer, ctx, shared, drain).await;
    }
}

async fn serve_tls(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: Arc<ListenerCtx>,
    shared: Arc<Shared>,
    drain: CancellationToken,
) {
    let snap = shared.snapshot.load_full();
    let limits = snap.config.limits.clone();
    let Some(cfg) = snap.tls.get(&*ctx.name).cloned() else {
        return;
    };
    drop(snap);
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    let tls = tokio::select! {
        r = tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)) => r,
        _ = drain.cancelled() => return,
    };
    let tls = match tls {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            ctx.handshake_errors.inc();
            tracing::debug!(listener = %ctx.name, %peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            ctx.handshake_timeouts.inc();
            return;
        }
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let version = match tls.get_ref().1.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_2) => baseline_engine::TlsVersion::Tls12,
        _ => baseline_engine::TlsVersion::Tls13,
    };
    let client_cert = client_cert(
        tls.get_ref().1.peer_certificates(),
        &ctx.client_certificates,
        &ctx.name,
        peer,
    );
    serve_io(tls, h2, Some((version, client_cert)), peer, ctx, shared, drain, limits).await;
}

/// The verified client certificate of a connection (counted), if it presented one.
pub fn client_cert(
    chain: Option<&[rustls::pki_types::CertificateDer<'static>]>,
    verified: &Counter,
    listener: &str,
    peer: SocketAddr,
) -> Option<Arc<crate::identity::certificate::ClientCert>> {
    let leaf = chain?.first()?;
    verified.inc();
    let cert = crate::identity::certificate::ClientCert::from_der(leaf.as_ref());
    match &cert {
        Some(c) => {
            tracing::debug!(listener, %peer, subject = %c.subject, sha256 = %c.sha256, "client certificate verified")
        }
        None => tracing::warn!(listener, %peer, "verified client certificate could not be read; forwarded without it"),
    }
    cert.map(Arc::new)
}

async fn serve_plain(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: Arc<ListenerCtx>,
    shared: Arc<Shared>,
    drain: CancellationToken,
) {
    let limits = shared.snapshot.load().config.limits.clone();
    // Tell HTTP/2 prior knowledge from HTTP/1 by the first bytes.
    let mut buf = [0u8; 4];
    let n = tokio::select! {
        r = tokio::time::timeout(limits.header_timeout, stream.peek(&mut buf)) => match r {
            Ok(Ok(n)) => n,
            Ok(Err(_)) => return,
            Err(_) => {
                ctx.header_timeouts.inc();
                return;
            }
        },
        _ = drain.cancelled() => return,
    };
    if n == 0 {
        return;
    }
    let h2 = buf[..n].starts_with(b"PRI ") || (n < 4 && b"PRI ".starts_with(&buf[..n]));
    serve_io(stream, h2, None, peer, ctx, shared, drain, limits).await;
}

struct ActiveGuard(prometheus_client::metrics::gauge::Gauge);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// How long an idle HTTP/1 keep-alive connection keeps its hyper state before it is parked
/// (see `io.rs`). Busy connections and quick follow-up requests (page loads, bursts) never park;
/// a client idle for longer pays about a microsecond to rebuild the state for its next request.
/// Short, because what counts is how many connections hold hyper's buffers at the same time:
/// freed buffers are reused by the next connections, but the allocator keeps its peak resident.
const PARK_AFTER: Duration = Duration::from_millis(250);

/// A socket whose readiness can be awaited without reading (for parked connections).
pub trait Readable {
    /// Resolves when the socket has bytes (or end of stream) to read.
    fn readable(&self) -> impl std::future::Future<Output = std::io::Result<()>> + Send;
}

impl Readable for TcpStream {
    fn readable(&self) -> impl std::future::Future<Output = std::io::Result<()>> + Send {
        TcpStream::readable(self)
    }
}

impl Readable for tokio_rustls::server::TlsStream<TcpStream> {
    fn readable(&self) -> impl std::future::Future<Output = std::io::Result<()>> + Send {
        // Parking happens only when hyper's read found nothing, so rustls holds no plaintext.
        self.get_ref().0.readable()
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve_io<I>(
    io: I,
    h2: bool,
    tls: Option<(
        baseline_engine::TlsVersion,
        Option<Arc<crate::identity::certificate::ClientCert>>,
    )>,
    peer: SocketAddr,
    ctx: Arc<ListenerCtx>,
    shared: Arc<Shared>,
    drain: CancellationToken,
    limits: crate::config::Limits,
) where
    I: AsyncRead + AsyncWrite + Readable + Unpin + Send + Sync + 'static,
{
    let protocol = if h2 { "h2" } else { "http1" };
    let gauge = ctx
        .metrics
        .connections_active
        .get_or_create(&ConnLabels {
            listener: ctx.name.to_string(),
            protocol,
        })
        .clone();
    gauge.inc();
    let _active = ActiveGuard(gauge);
    let state = Arc::new(ConnState::new());
    let timeouts = Timeouts {
        header: limits.header_timeout,
        idle: limits.idle_timeout,
        header_expired: ctx.header_timeouts.clone(),
        idle_expired: ctx.idle_timeouts.clone(),
    };
    let info = Arc::new(ConnInfo {
        listener: ctx.name.clone(),
        peer,
        tls: ctx.tls,
        protocol,
        tls_version: tls.as_ref().map(|(v, _)| *v),
        state: state.clone(),
        peer_headers: crate::pipeline::forward::PeerHeaders::new(peer),
        alt_svc: ctx.alt_svc.clone(),
        client_cert: tls.and_then(|(_, c)| c),
    });
    let own = (shared.clone(), info.clone());
    let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let req = req.map(crate::pipeline::body::ClientBody::Hyper);
        let handling = crate::pipeline::handle(shared.clone(), info.clone(), req, false);
        shared.monitors.request(handling)
    });
    // hyper's own limits sit above the configured ones, as a backstop: the pipeline answers the
    // configured limits itself, with a problem body.
    let head_cap = limits.max_header_bytes.saturating_mul(2).max(16 * 1024);
    if h2 {
        let mut b = http2::Builder::new(TokioExecutor::new());
        b.timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(head_cap).unwrap_or(u32::MAX))
            .max_concurrent_streams(256);
        let io = TokioIo::new(TimedIo::new(io, state, timeouts, false));
        let mut conn = Box::pin(b.serve_connection(io, svc));
        let result = tokio::select! {
            r = conn.as_mut() => r,
            _ = drain.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = result {
            tracing::debug!(listener = %ctx.name, %peer, error = %e, "connection ended with an error");
        }
        return;
    }

    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(head_cap.max(8192) + 8192);
    // hyper parses up to 100 fields on the stack; asking for more moves that array to the heap
    // for every request, so only raise it when the configured limit needs it.
    if limits.max_headers > 100 {
        b.max_headers(limits.max_headers.saturating_mul(2));
    }
    let mut timed = TimedIo::new(io, state.clone(), timeouts, true).park_after(PARK_AFTER.min(limits.idle_timeout / 2));
    loop {
        // Requests without a body are served on the connection's own path (boxed: it holds a
        // request in flight, which an idle connection should not pay for); hyper takes the
        // connection over at the first request that needs it, until the connection parks.
        match Box::pin(h1::serve(&mut timed, &own.0, &own.1, &drain)).await {
            h1::Outcome::Closed => return,
            h1::Outcome::Parked => {
                if !wait_parked(&timed, &state, &ctx, &drain, limits.idle_timeout).await {
                    return;
                }
                timed.resume(bytes::Bytes::new());
                continue;
            }
            h1::Outcome::Handoff(why, read) => {
                ctx.handed_off(why, peer);
                timed.resume(read);
            }
        }
        let mut conn = Box::pin(b.serve_connection(TokioIo::new(timed), svc.clone()).with_upgrades());
        let result = tokio::select! {
            r = conn.as_mut() => r,
            _ = drain.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.as_mut().await
            }
        };
        if let Err(e) = result {
            tracing::debug!(listener = %ctx.name, %peer, error = %e, "connection ended with an error");
            return;
        }
        // Ended: closed by the client, handed to an upgrade, drained, or parked.
        let Some(parts) = Pin::into_inner(conn).into_parts() else {
            return;
        };
        timed = parts.io.into_inner();
        if !timed.is_parked() || drain.is_cancelled() {
            return;
        }
        // Parked: hyper's buffers are gone; hold the socket until the next request.
        if parts.read_buf.is_empty() && !wait_parked(&timed, &state, &ctx, &drain, limits.idle_timeout).await {
            return;
        }
        timed.resume(parts.read_buf);
    }
}

/// Holds a parked connection until its next request arrives (`true`), or until it times out,
/// fails or the gateway drains (`false`).
async fn wait_parked<I: Readable>(
    timed: &TimedIo<I>,
    state: &ConnState,
    ctx: &ListenerCtx,
    drain: &CancellationToken,
    idle_timeout: Duration,
) -> bool {
    if drain.is_cancelled() {
        return false;
    }
    let _parked = ParkedGuard::new(&ctx.parked);
    let deadline = state.idle_since() + idle_timeout;
    tokio::select! {
        r = timed.get_ref().readable() => r.is_ok(),
        _ = tokio::time::sleep_until(deadline) => {
            ctx.idle_timeouts.inc();
            false
        }
        _ = drain.cancelled() => false,
    }
}

/// Counts a connection as parked while it lives.
struct ParkedGuard(prometheus_client::metrics::gauge::Gauge);

impl ParkedGuard {
    fn new(g: &prometheus_client::metrics::gauge::Gauge) -> Self {
        g.inc();
        Self(g.clone())
    }
}

impl Drop for ParkedGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
