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
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::Endpoint;
use crate::error::BoxError;
use crate::pipeline::body::Limited;

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

/// The idle connections of one endpoint.
#[derive(Debug)]
pub(super) struct IdleStack {
    stack: Mutex<Vec<Idle>>,
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
    #[error(transparent)]
    Exchange(#[from] hyper::Error),
}

impl std::fmt::Debug for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Connect { source, .. } => f
                .debug_struct("Connect")
                .field("source", source)
                .finish_non_exhaustive(),
            SendError::Exchange(e) => f.debug_tuple("Exchange").field(e).finish(),
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
            idle.push(Idle {
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
            stack: Mutex::new(Vec::new()),
            gauge,
            opened,
        }
    }

    /// The freshest usable idle connection, dropping the ones that expired or closed.
    fn take(&self, max_age: Duration) -> Option<Sender> {
        let mut idle = self.stack.lock().ok()?;
        while let Some(i) = idle.pop() {
            self.gauge.dec();
            if !i.sender.is_closed() && i.since.elapsed() < max_age {
                return Some(i.sender);
            }
        }
        None
    }

    /// Closes idle connections older than `max_age`.
    pub(super) fn prune(&self, max_age: Duration) {
        if let Ok(mut idle) = self.stack.lock() {
            let before = idle.len();
            idle.retain(|i| !i.sender.is_closed() && i.since.elapsed() < max_age);
            self.gauge.dec_by((before - idle.len()) as i64);
        }
    }

    /// Idle connections now.
    pub(super) fn len(&self) -> usize {
        self.stack.lock().map(|s| s.len()).unwrap_or(0)
    }
}

async fn handshake<I>(io: I, h2: bool) -> Result<Conn, BoxError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
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

/// Opens a connection to `endpoint` (TCP, then TLS for `https://`), speaking HTTP/2 if `h2`.
async fn connect(
    endpoint: &Endpoint,
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
    h2: bool,
) -> Result<Conn, BoxError> {
    let fut = async {
        let tcp = tokio::net::TcpStream::connect((endpoint.host.as_str(), endpoint.port)).await?;
        tcp.set_nodelay(true)?;
        match (&endpoint.server_name, tls) {
            (Some(name), Some(tls)) => {
                let tls = tokio_rustls::TlsConnector::from(tls).connect(name.clone(), tcp).await?;
                if h2 && tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                    return Err("the endpoint did not agree to HTTP/2 (ALPN h2)".into());
                }
                handshake(tls, h2).await
            }
            _ => handshake(tcp, h2).await,
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("no connection within {timeout:?}").into()),
    }
}

/// Sends `req` to `endpoint` on a pooled connection idle for less than `idle_timeout` (`None`:
/// on a new one); the loan (HTTP/1.1 only) goes back to the pool when the response has ended.
pub async fn send(
    endpoint: &Arc<Endpoint>,
    tls: Option<Arc<rustls::ClientConfig>>,
    connect_timeout: Duration,
    idle_timeout: Option<Duration>,
    h2: bool,
    mut req: Request<UpstreamBody>,
) -> Result<(Response<Incoming>, Option<Loan>), SendError> {
    if h2 {
        // Boxed: its state would otherwise enlarge every HTTP/1.1 request's future too.
        return Box::pin(send_h2(endpoint, tls, connect_timeout, req)).await;
    }
    while let Some(mut sender) = idle_timeout.and_then(|t| endpoint.idle.take(t)) {
        if sender.ready().await.is_err() {
            continue;
        }
        match sender.try_send_request(req).await {
            Ok(resp) => {
                return Ok((
                    resp,
                    Some(Loan {
                        sender,
                        endpoint: endpoint.clone(),
                    }),
                ))
            }
            Err(mut e) => match e.take_message() {
                // Never written: the connection went away while idle. Try the next one.
                Some(r) => req = r,
                None => return Err(SendError::Exchange(e.into_error())),
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
    let resp = sender.send_request(req).await?;
    Ok((
        resp,
        Some(Loan {
            sender,
            endpoint: endpoint.clone(),
        }),
    ))
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
) -> Result<(Response<Incoming>, Option<Loan>), SendError> {
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
            Ok(resp) => return Ok((resp, None)),
            Err(mut e) => match e.take_message() {
                Some(r) => req = r,
                None => return Err(SendError::Exchange(e.into_error())),
            },
        }
    }
    Err(SendError::Connect {
        source: "the endpoint's HTTP/2 connection closed twice before the request could be sent".into(),
        request: Box::new(req),
    })
}
