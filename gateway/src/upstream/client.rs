//! The upstream client: HTTP/1.1 connections per endpoint, pooled while idle, or one
//! multiplexed HTTP/2 connection per endpoint.
//!
//! HTTP/1.1: each [`Endpoint`] keeps a small stack of idle connections (most recently used on
//! top, so the warmest connection serves next and the coldest ones age out). A request takes
//! one, or connects (TCP, then TLS with the endpoint's host as SNI for `https://`), and the
//! connection goes back when the response body has ended. A pooled connection the upstream has
//! closed in the meantime is detected before the request is written, and the request moves to a
//! fresh connection; once written, a request is never sent again here (the pipeline may retry
//! it on a new connection when the pool's `retry` allows). Upgraded connections never return.
//! Requests without a body are exchanged by the request's own task ([`super::h1`]); the others
//! through hyper's client, whose connections run in tasks of their own. Each kind of
//! connection returns to its own stack.
//!
//! HTTP/2 (`protocol: h2`): every request to an endpoint shares its one connection (ALPN `h2`
//! over TLS, prior knowledge over TCP), opened by the first request that finds none and again
//! once it has closed (GOAWAY, error); requests go in absolute form (`:scheme`, `:authority` from
//! the Host the upstream would have got).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::time::Instant;

use super::h1;
use super::Endpoint;
use crate::error::BoxError;
use crate::pipeline::body::Limited;
use crate::pipeline::forward::Added;

/// The request body type sent upstream.
pub type UpstreamBody = Limited<crate::pipeline::body::ClientBody>;

/// A connection's request sender.
pub type Sender = http1::SendRequest<UpstreamBody>;

/// An HTTP/2 connection's request sender (cloned for each request).
pub type H2Sender = http2::SendRequest<UpstreamBody>;

/// A new connection of either protocol.
enum Conn {
    H1(Sender),
    H2(H2Sender),
}

/// An idle connection.
#[derive(Debug)]
pub(super) struct Idle {
    sender: Sender,
    since: Instant,
}

/// An idle connection for requests without a body.
#[derive(Debug)]
struct IdleConn {
    conn: Box<h1::Conn>,
    since: Instant,
}

/// Idle connections of both kinds, most recently used last.
#[derive(Debug, Default)]
struct Idles {
    /// hyper's, for requests with a body.
    senders: Vec<Idle>,
    /// The request task's own, for requests without one.
    conns: Vec<IdleConn>,
}

impl Idles {
    fn len(&self) -> usize {
        self.senders.len() + self.conns.len()
    }
}

/// The idle connections of one endpoint.
#[derive(Debug)]
pub(super) struct IdleStack {
    stack: Mutex<Idles>,
    /// The pool's idle-connections gauge (shared by its endpoints).
    gauge: prometheus_client::metrics::gauge::Gauge,
    /// The pool's opened-connections counter.
    opened: prometheus_client::metrics::counter::Counter,
}

/// Why an exchange failed.
#[derive(thiserror::Error)]
pub enum SendError {
    /// No connection could be made (TCP or TLS); the request comes back unsent.
    #[error("connect: {source}")]
    Connect {
        /// Why.
        source: BoxError,
        /// The request, untouched (its body unread), for another endpoint.
        request: Box<Request<UpstreamBody>>,
    },
    /// The exchange failed after the request was handed to a connection.
    #[error("{source}")]
    Exchange {
        /// Why.
        source: BoxError,
        /// The request back, when the connection only borrowed it (requests without a body
        /// on an HTTP/1.1 pool), to be sent again if it may.
        request: Option<Box<Request<UpstreamBody>>>,
    },
}

impl SendError {
    /// An exchange that failed on one of hyper's connections (which keep the request).
    fn hyper(e: hyper::Error) -> Self {
        SendError::Exchange {
            source: Box::new(e),
            request: None,
        }
    }
}

/// An exchange that got an answer.
pub struct Sent {
    /// The answer; its body streams from the connection.
    pub response: Response<Answer>,
    /// hyper's HTTP/1.1 connection, to release when the body ends.
    pub loan: Option<Loan>,
    /// The request back, when the connection only borrowed it (see [`SendError::Exchange`]).
    pub request: Option<Request<UpstreamBody>>,
}

impl Sent {
    /// An answer from one of hyper's connections (which keep the request).
    fn hyper(response: Response<Incoming>, loan: Option<Loan>) -> Self {
        Sent {
            response: response.map(Answer::Hyper),
            loan,
            request: None,
        }
    }
}

impl std::fmt::Debug for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Connect { source, .. } => f
                .debug_struct("Connect")
                .field("source", source)
                .finish_non_exhaustive(),
            SendError::Exchange { source, .. } => f
                .debug_struct("Exchange")
                .field("source", source)
                .finish_non_exhaustive(),
        }
    }
}

/// A connection on loan to a request; returns to its endpoint's pool when the response ends.
#[derive(Debug)]
pub struct Loan {
    sender: Sender,
    endpoint: Arc<Endpoint>,
}

// === impl Loan ===

impl Loan {
    fn new(sender: Sender, endpoint: &Arc<Endpoint>) -> Self {
        Loan {
            sender,
            endpoint: endpoint.clone(),
        }
    }

    /// Puts the connection back into the pool (when the response body has ended).
    pub fn release(self) {
        let Loan { sender, endpoint } = self;
        if sender.is_closed() {
            return;
        }
        let Ok(mut idle) = endpoint.idle.stack.lock() else {
            return;
        };
        if idle.len() < endpoint.max_idle {
            idle.senders.push(Idle {
                sender,
                since: Instant::now(),
            });
            endpoint.idle.gauge.inc();
        }
    }
}

// === impl IdleStack ===

impl Drop for IdleStack {
    fn drop(&mut self) {
        // A pool replaced by a reload closes its idle connections; the gauge is shared by name.
        if let Ok(idle) = self.stack.lock() {
            self.gauge.dec_by(idle.len() as i64);
        }
    }
}

impl IdleStack {
    /// An empty stack reporting to the pool's metrics.
    pub(super) fn new(
        gauge: prometheus_client::metrics::gauge::Gauge,
        opened: prometheus_client::metrics::counter::Counter,
    ) -> Self {
        Self {
            stack: Mutex::new(Idles::default()),
            gauge,
            opened,
        }
    }

    /// The freshest usable idle connection, dropping the ones that expired (idle for `max_age`
    /// by `now`) or closed.
    fn take(&self, max_age: Duration, now: Instant) -> Option<Sender> {
        let mut idle = self.stack.lock().ok()?;
        while let Some(i) = idle.senders.pop() {
            self.gauge.dec();
            if !i.sender.is_closed() && now.saturating_duration_since(i.since) < max_age {
                return Some(i.sender);
            }
        }
        None
    }

    /// The freshest usable idle connection for a request without a body.
    fn take_conn(&self, max_age: Duration, now: Instant) -> Option<Box<h1::Conn>> {
        let mut idle = self.stack.lock().ok()?;
        while let Some(mut i) = idle.conns.pop() {
            self.gauge.dec();
            if now.saturating_duration_since(i.since) < max_age && i.conn.usable() {
                return Some(i.conn);
            }
        }
        None
    }

    /// Puts back a connection whose answer has ended, unless `max_idle` are idle already.
    pub(super) fn put_conn(&self, conn: Box<h1::Conn>, max_idle: usize) {
        let Ok(mut idle) = self.stack.lock() else {
            return;
        };
        if idle.len() < max_idle {
            idle.conns.push(IdleConn {
                conn,
                since: Instant::now(),
            });
            self.gauge.inc();
        }
    }

    /// Closes idle connections older than `max_age`, or closed by the upstream.
    pub(super) fn prune(&self, max_age: Duration) {
        if let Ok(mut idle) = self.stack.lock() {
            let before = idle.len();
            idle.senders
                .retain(|i| !i.sender.is_closed() && i.since.elapsed() < max_age);
            idle.conns
                .retain_mut(|i| i.since.elapsed() < max_age && i.conn.usable());
            self.gauge.dec_by((before - idle.len()) as i64);
        }
    }

    /// Idle connections now.
    pub(super) fn len(&self) -> usize {
        self.stack.lock().map(|s| s.len()).unwrap_or(0)
    }
}

async fn handshake(io: h1::Stream, h2: bool) -> Result<Conn, BoxError> {
    if h2 {
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(io))
            .await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream HTTP/2 connection ended with an error");
            }
        });
        return Ok(Conn::H2(sender));
    }
    let (sender, conn) = http1::Builder::new().handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(Conn::H1(sender))
}

/// Opens a connection to `endpoint` (TCP, then TLS for `https://`; ALPN `h2` required if `h2`).
async fn open(
    endpoint: &Endpoint,
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
    h2: bool,
) -> Result<h1::Stream, BoxError> {
    let fut = async {
        let tcp = tokio::net::TcpStream::connect((endpoint.host.as_str(), endpoint.port)).await?;
        tcp.set_nodelay(true)?;
        match (&endpoint.server_name, tls) {
            (Some(name), Some(tls)) => {
                let tls = tokio_rustls::TlsConnector::from(tls).connect(name.clone(), tcp).await?;
                if h2 && tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                    return Err("the endpoint did not agree to HTTP/2 (ALPN h2)".into());
                }
                Ok(h1::Stream::Tls(Box::new(tls)))
            }
            _ => Ok(h1::Stream::Tcp(tcp)),
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("no connection within {timeout:?}").into()),
    }
}

/// Opens a connection to `endpoint` and hands it to hyper's client, speaking HTTP/2 if `h2`.
async fn connect(
    endpoint: &Endpoint,
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
    h2: bool,
) -> Result<Conn, BoxError> {
    handshake(open(endpoint, tls, timeout, h2).await?, h2).await
}

/// Sends `req` with the fields `added` to `endpoint` on a pooled connection idle for less than
/// `idle_timeout` (`None`: on a new one); the loan (hyper's HTTP/1.1 connections only) goes back
/// to the pool when the response has ended.
// The pool's settings one by one rather than the pool: this future holds only what it reads.
#[allow(clippy::too_many_arguments)]
pub async fn send(
    endpoint: &Arc<Endpoint>,
    tls: Option<Arc<rustls::ClientConfig>>,
    connect_timeout: Duration,
    idle_timeout: Option<Duration>,
    h2: bool,
    mut req: Request<UpstreamBody>,
    added: &Added,
    now: Instant,
) -> Result<Sent, SendError> {
    // The other paths are boxed: their states (hyper's futures hold the request by value) would
    // otherwise enlarge every request's future, which is moved several times before it runs.
    if !h2 && h1::eligible(&req) {
        return send_own(endpoint, tls, connect_timeout, idle_timeout, req, added, now).await;
    }
    // hyper's connections write the request's map as it is.
    added.apply(req.headers_mut());
    if h2 {
        return Box::pin(send_h2(endpoint, tls, connect_timeout, req)).await;
    }
    Box::pin(send_hyper(endpoint, tls, connect_timeout, idle_timeout, req, now)).await
}

/// Sends a request with a body (or asking for an upgrade) on one of hyper's HTTP/1.1
/// connections to `endpoint`: an idle one if usable, else a new one.
async fn send_hyper(
    endpoint: &Arc<Endpoint>,
    tls: Option<Arc<rustls::ClientConfig>>,
    connect_timeout: Duration,
    idle_timeout: Option<Duration>,
    mut req: Request<UpstreamBody>,
    now: Instant,
) -> Result<Sent, SendError> {
    while let Some(mut sender) = idle_timeout.and_then(|t| endpoint.idle.take(t, now)) {
        if sender.ready().await.is_err() {
            continue;
        }
        match sender.try_send_request(req).await {
            Ok(resp) => return Ok(Sent::hyper(resp, Some(Loan::new(sender, endpoint)))),
            Err(mut e) => match e.take_message() {
                // Never written: the connection went away while idle. Try the next one.
                Some(r) => req = r,
                None => return Err(SendError::hyper(e.into_error())),
            },
        }
    }
    // Boxed: connecting is the rare path, and its TLS state would otherwise enlarge every
    // request's future.
    endpoint.idle.opened.inc();
    let mut sender = match Box::pin(connect(endpoint, tls, connect_timeout, false)).await {
        Ok(Conn::H1(s)) => s,
        Ok(Conn::H2(_)) => unreachable!("asked for HTTP/1.1"),
        Err(source) => {
            return Err(SendError::Connect {
                source,
                request: Box::new(req),
            })
        }
    };
    let resp = sender.send_request(req).await.map_err(SendError::hyper)?;
    Ok(Sent::hyper(resp, Some(Loan::new(sender, endpoint))))
}

/// One active health check: `GET path` on a fresh connection to `endpoint` (not from the pool,
/// and not counted as opened by it), within `timeout`; the answer's status.
pub async fn probe(
    endpoint: &Endpoint,
    tls: Option<Arc<rustls::ClientConfig>>,
    h2: bool,
    path: &http::uri::PathAndQuery,
    timeout: Duration,
) -> Result<http::StatusCode, BoxError> {
    let exchange = async {
        let mut req = Request::get(path.as_str())
            .header(http::header::HOST, endpoint.authority())
            .header(http::header::USER_AGENT, "gateway-health-check")
            .body(Limited::new(crate::pipeline::body::ClientBody::Empty, 0))?;
        let status = match connect(endpoint, tls, timeout, h2).await? {
            Conn::H1(mut s) => s.send_request(req).await?.status(),
            Conn::H2(mut s) => {
                absolute_form(&mut req, endpoint);
                s.send_request(req).await?.status()
            }
        };
        Ok::<_, BoxError>(status)
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {timeout:?}").into()),
    }
}

/// Puts `req` in absolute form for HTTP/2: `:scheme` from the endpoint, `:authority` from the
/// `Host` the upstream would have got over HTTP/1.1 (moved out of the headers), else the
/// endpoint's own.
fn absolute_form(req: &mut Request<UpstreamBody>, endpoint: &Endpoint) {
    let host = req.headers_mut().remove(http::header::HOST);
    let mut parts = req.uri().clone().into_parts();
    if parts.authority.is_none() {
        parts.authority = host
            .and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok())
            .or_else(|| http::uri::Authority::try_from(endpoint.authority()).ok());
    }
    parts.scheme = Some(if endpoint.server_name.is_some() {
        http::uri::Scheme::HTTPS
    } else {
        http::uri::Scheme::HTTP
    });
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    if let Ok(uri) = http::Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
}

/// Sends `req` on the endpoint's HTTP/2 connection, opening it if there is none (one opener at
/// a time; the others wait for it and share it).
async fn send_h2(
    endpoint: &Arc<Endpoint>,
    tls: Option<Arc<rustls::ClientConfig>>,
    connect_timeout: Duration,
    mut req: Request<UpstreamBody>,
) -> Result<Sent, SendError> {
    absolute_form(&mut req, endpoint);
    // A connection found closed only now (GOAWAY, error) gives the request back unsent: one
    // more try on a fresh connection.
    for _ in 0..2 {
        let mut sender = {
            let mut shared = endpoint.h2.lock().await;
            match shared.as_ref().filter(|s| !s.is_closed()) {
                Some(s) => s.clone(),
                None => {
                    endpoint.idle.opened.inc();
                    match Box::pin(connect(endpoint, tls.clone(), connect_timeout, true)).await {
                        Ok(Conn::H2(s)) => {
                            *shared = Some(s.clone());
                            s
                        }
                        Ok(Conn::H1(_)) => unreachable!("asked for HTTP/2"),
                        Err(source) => {
                            *shared = None;
                            return Err(SendError::Connect {
                                source,
                                request: Box::new(req),
                            });
                        }
                    }
                }
            }
        };
        if sender.ready().await.is_err() {
            continue;
        }
        match sender.try_send_request(req).await {
            Ok(resp) => return Ok(Sent::hyper(resp, None)),
            Err(mut e) => match e.take_message() {
                Some(r) => req = r,
                None => return Err(SendError::hyper(e.into_error())),
            },
        }
    }
    Err(SendError::Connect {
        source: "the endpoint's HTTP/2 connection closed twice before the request could be sent".into(),
        request: Box::new(req),
    })
}

/// Sends a request without a body on one of the endpoint's own connections ([`h1`]): an idle
/// one if usable, else a new one. A pooled connection that fails while the request is written
/// (closed by the upstream as it went out) gives way to the next one.
async fn send_own(
    endpoint: &Arc<Endpoint>,
    tls: Option<Arc<rustls::ClientConfig>>,
    connect_timeout: Duration,
    idle_timeout: Option<Duration>,
    req: Request<UpstreamBody>,
    added: &Added,
    now: Instant,
) -> Result<Sent, SendError> {
    loop {
        let (conn, pooled) = match idle_timeout.and_then(|t| endpoint.idle.take_conn(t, now)) {
            Some(conn) => (conn, true),
            None => {
                endpoint.idle.opened.inc();
                // Boxed: connecting is the rare path, and its TLS state would otherwise enlarge
                // every request's future.
                match Box::pin(open(endpoint, tls.clone(), connect_timeout, false)).await {
                    Ok(stream) => (h1::Conn::new(stream), false),
                    Err(source) => {
                        return Err(SendError::Connect {
                            source,
                            request: Box::new(req),
                        })
                    }
                }
            }
        };
        // One call site: each would take its own room in the request's future.
        match h1::exchange(conn, &req, added, endpoint).await {
            Ok(response) => {
                return Ok(Sent {
                    response: response.map(Answer::H1),
                    loan: None,
                    request: Some(req),
                })
            }
            Err((_, true)) if pooled => continue,
            Err((e, _)) => {
                return Err(SendError::Exchange {
                    source: Box::new(e),
                    request: Some(Box::new(req)),
                })
            }
        }
    }
}

/// An upstream answer's body: from hyper's client, or from one of the endpoint's own
/// connections.
#[derive(Debug)]
pub enum Answer {
    /// hyper's (requests with a body, upgrades, HTTP/2).
    Hyper(Incoming),
    /// Read by the request's task ([`h1`]).
    H1(h1::Body),
}

impl http_body::Body for Answer {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, BoxError>>> {
        match self.get_mut() {
            Answer::Hyper(b) => std::pin::Pin::new(b)
                .poll_frame(cx)
                .map_err(|e| Box::new(e) as BoxError),
            Answer::H1(b) => std::pin::Pin::new(b)
                .poll_frame(cx)
                .map_err(|e| Box::new(e) as BoxError),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Answer::Hyper(b) => b.is_end_stream(),
            Answer::H1(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Answer::Hyper(b) => b.size_hint(),
            Answer::H1(b) => b.size_hint(),
        }
    }
}
