//! HTTP/3: a QUIC endpoint on a TLS listener's port number over UDP (quinn), serving each
//! connection with h3 into the same request pipeline as HTTP/1.1 and HTTP/2.
//!
//! Each new connection takes the QUIC config of the snapshot current when it arrives, so a reload
//! (certificates, limits) applies to new connections. Beyond `quic.max_connections` new ones
//! are refused; beyond `quic.retry_above` a client must first prove its address with a Retry.
//! On the drain signal the endpoint stops accepting and every connection sends GOAWAY, lets its
//! requests finish, and closes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::conn::io::ConnState;
use crate::conn::ConnInfo;
use crate::pipeline::body::{ClientBody, H3Body};
use crate::telemetry::{ConnLabels, HandshakeLabels, ListenerLabels, Metrics, TimeoutLabels};
use crate::Shared;

/// Marks a request that came in 0-RTT early data (its stream opened before the handshake
/// completed): it could be a replay (RFC 8470).
#[derive(Debug, Clone, Copy)]
pub struct EarlyData;

/// Binds the UDP socket of a listener's QUIC endpoint.
pub fn bind(addr: SocketAddr, config: Arc<quinn::ServerConfig>) -> std::io::Result<quinn::Endpoint> {
    let socket = std::net::UdpSocket::bind(addr)?;
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some((*config).clone()),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
}

/// The `Alt-Svc` value advertising HTTP/3 on `port` (for a day).
pub fn alt_svc(port: u16) -> http::HeaderValue {
    http::HeaderValue::from_str(&format!("h3=\":{port}\"; ma=86400"))
        .unwrap_or_else(|_| http::HeaderValue::from_static(""))
}

/// Per-listener QUIC handles.
struct Listener {
    name: Arc<str>,
    open: AtomicUsize,
    metrics: Metrics,
}

impl Listener {
    fn handshake(&self, result: &'static str) {
        self.metrics
            .quic_handshakes
            .get_or_create(&HandshakeLabels {
                listener: self.name.to_string(),
                result,
            })
            .inc();
    }

    fn head_timeouts(&self) -> prometheus_client::metrics::counter::Counter {
        self.metrics
            .connection_timeouts
            .get_or_create(&TimeoutLabels {
                listener: self.name.to_string(),
                kind: "h3_header",
            })
            .clone()
    }

    fn labels(&self) -> ListenerLabels {
        ListenerLabels {
            listener: self.name.to_string(),
        }
    }
}

/// Accepts QUIC connections on `endpoint` until `drain` fires.
pub async fn accept_loop(
    endpoint: quinn::Endpoint,
    name: Arc<str>,
    shared: Arc<Shared>,
    drain: CancellationToken,
    tracker: TaskTracker,
) {
    let l = Arc::new(Listener {
        name,
        open: AtomicUsize::new(0),
        metrics: shared.metrics.clone(),
    });
    for result in ["ok", "failed", "timeout", "refused", "retry"] {
        let _ = shared.metrics.quic_handshakes.get_or_create(&HandshakeLabels {
            listener: l.name.to_string(),
            result,
        });
    }
    let _ = shared.metrics.quic_streams.get_or_create(&l.labels());
    let _ = l.head_timeouts();
    let _ = shared.metrics.quic_lost_packets.get_or_create(&l.labels());
    let _ = shared.metrics.quic_migrations.get_or_create(&l.labels());
    let _ = shared.metrics.quic_rtt.get_or_create(&l.labels());
    loop {
        let incoming = tokio::select! {
            biased;
            _ = drain.cancelled() => break,
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
        };
        let snap = shared.snapshot.load();
        let (Some(sc), Some(q)) = (
            snap.quic.get(&*l.name).cloned(),
            snap.config
                .listeners
                .iter()
                .find(|c| *c.name == *l.name)
                .and_then(|c| c.quic.clone()),
        ) else {
            incoming.refuse();
            continue;
        };
        let open = l.open.load(Ordering::Relaxed);
        if open >= q.max_connections {
            l.handshake("refused");
            incoming.refuse();
            continue;
        }
        if open >= q.retry_above && !incoming.remote_address_validated() && incoming.may_retry() {
            l.handshake("retry");
            let _ = incoming.retry();
            continue;
        }
        let handshake_timeout = snap.config.limits.header_timeout;
        match incoming.accept_with(sc) {
            Ok(connecting) => {
                let task = serve(
                    connecting,
                    q.early_data,
                    handshake_timeout,
                    l.clone(),
                    shared.clone(),
                    drain.clone(),
                );
                tracker.spawn(shared.monitors.connection(task));
            }
            Err(e) => {
                l.handshake("failed");
                tracing::debug!(listener = %l.name, error = %e, "QUIC connection refused");
            }
        }
    }
    // No new connections: they are refused while the open ones send GOAWAY, finish their
    // requests and close.
    tracing::info!(listener = %l.name, "QUIC listener closed");
    tracker.spawn(async move {
        loop {
            tokio::select! {
                i = endpoint.accept() => match i {
                    Some(i) => {
                        l.handshake("refused");
                        i.refuse();
                    }
                    None => break,
                },
                _ = endpoint.wait_idle() => break,
            }
        }
    });
}

/// Counts an open connection for the listener's limits and `gateway_connections_active`.
struct Open {
    l: Arc<Listener>,
    gauge: prometheus_client::metrics::gauge::Gauge,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.l.open.fetch_sub(1, Ordering::Relaxed);
        self.gauge.dec();
    }
}

async fn serve(
    connecting: quinn::Connecting,
    early_data: bool,
    handshake_timeout: std::time::Duration,
    l: Arc<Listener>,
    shared: Arc<Shared>,
    drain: CancellationToken,
) {
    let peer = connecting.remote_address();
    l.open.fetch_add(1, Ordering::Relaxed);
    let gauge = l
        .metrics
        .connections_active
        .get_or_create(&ConnLabels {
            listener: l.name.to_string(),
            protocol: "h3",
        })
        .clone();
    gauge.inc();
    let _open = Open { l: l.clone(), gauge };
    // With 0-RTT on, the connection is usable before the handshake completes; requests read
    // until then may be replayed early data.
    let (conn, pending) = if early_data {
        // Not before the ClientHello is read whole (with a hybrid key share it spans two
        // datagrams): until then the client's transport parameters are unknown, no stream can
        // be opened, and quinn does not wake a stream opener when they arrive.
        let mut connecting = connecting;
        if bounded(connecting.handshake_data(), handshake_timeout, &l)
            .await
            .is_none()
        {
            return;
        }
        match connecting.into_0rtt() {
            Ok((conn, done)) => (conn, Some(done)),
            Err(connecting) => match handshake(connecting, handshake_timeout, &l).await {
                Some(c) => (c, None),
                None => return,
            },
        }
    } else {
        match handshake(connecting, handshake_timeout, &l).await {
            Some(c) => (c, None),
            None => return,
        }
    };
    let zero_rtt = pending.is_some();
    // A connection in 0-RTT is served before its handshake completes; the handshake still has to
    // complete within the timeout, or the connection is closed (a replayed or abandoned first
    // flight holds nothing).
    let mut handshake_done = !zero_rtt;
    let mut completion = std::pin::pin!(async move {
        match pending {
            Some(done) => tokio::time::timeout(handshake_timeout, done).await,
            None => std::future::pending().await,
        }
    });
    let limits = shared.snapshot.load().config.limits.clone();
    // No grease frames and settings: they only exercise the client's tolerance, at a cost per
    // stream.
    let mut builder = h3::server::builder();
    let setup = builder
        .send_grease(false)
        .max_field_section_size((limits.max_header_bytes.saturating_mul(2).max(16 * 1024)) as u64)
        .build::<_, Bytes>(h3_quinn::Connection::new(conn.clone()));
    // Bounded like a handshake: a connection that cannot open its control stream holds nothing.
    let mut h3 = match tokio::time::timeout(handshake_timeout, setup).await {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            tracing::debug!(listener = %l.name, %peer, error = %e, "HTTP/3 connection setup failed");
            return;
        }
        Err(_) => {
            tracing::debug!(listener = %l.name, %peer, "HTTP/3 connection setup timed out");
            conn.close(quinn::VarInt::from_u32(0x102), b""); // H3_INTERNAL_ERROR
            return;
        }
    };
    let mut info = Arc::new(ConnInfo {
        listener: l.name.clone(),
        peer,
        tls: true,
        protocol: "h3",
        tls_version: Some(baseline_engine::TlsVersion::Tls13),
        state: Arc::new(ConnState::new()),
        peer_headers: crate::pipeline::forward::PeerHeaders::new(peer),
        alt_svc: None,
        // Known once the handshake is done (early data is refused with client certificates).
        client_cert: conn
            .peer_identity()
            .and_then(|id| id.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok())
            .and_then(|chain| {
                let verified = l.metrics.tls_client_certificates.get_or_create(&l.labels()).clone();
                crate::conn::client_cert(Some(&chain), &verified, &l.name, peer)
            }),
    });
    let streams = l.metrics.quic_streams.get_or_create(&l.labels()).clone();
    let heads = Heads {
        timeout: limits.header_timeout,
        expired: l.head_timeouts(),
    };
    let requests = TaskTracker::new();
    let mut address = peer;
    loop {
        let accepted = tokio::select! {
            r = h3.accept() => r,
            r = &mut completion, if !handshake_done => {
                handshake_done = true;
                // On a server the future's value says nothing (quinn gives `false` for a
                // completed handshake too): whether the connection still stands does.
                match r {
                    Ok(_) if conn.close_reason().is_none() => {
                        l.handshake("ok");
                        continue;
                    }
                    Ok(_) => {
                        l.handshake("failed");
                        break;
                    }
                    Err(_) => {
                        l.handshake("timeout");
                        tracing::debug!(listener = %l.name, %peer, "QUIC handshake after 0-RTT timed out");
                        break;
                    }
                }
            }
            _ = drain.cancelled() => {
                // GOAWAY: no request after the ones accepted; they finish, then the connection closes.
                let _ = h3.shutdown(0).await;
                break;
            }
        };
        match accepted {
            Ok(Some(resolver)) => {
                streams.inc();
                // A stream read before the handshake completed came in 0-RTT early data.
                let early = zero_rtt && handshaking(&conn);
                let now = conn.remote_address();
                if now != address {
                    address = now;
                    l.metrics.quic_migrations.get_or_create(&l.labels()).inc();
                    tracing::debug!(listener = %l.name, from = %info.peer, to = %now, "HTTP/3 connection moved to a new client address");
                    info = Arc::new(info.moved_to(now));
                }
                let task = request(resolver, early, heads.clone(), shared.clone(), info.clone());
                requests.spawn(shared.monitors.request(task));
            }
            Ok(None) => break,
            Err(e) => {
                if !e.is_h3_no_error() {
                    tracing::debug!(listener = %l.name, %peer, error = %e, "HTTP/3 connection ended with an error");
                }
                break;
            }
        }
    }
    requests.close();
    requests.wait().await;
    if drain.is_cancelled() {
        // Closing (also by dropping the HTTP/3 connection) discards what the peer has not
        // acknowledged yet: give the last answers a few round trips to arrive (the client may
        // also close first).
        let settle = std::time::Duration::from_millis(250) + conn.rtt() * 4;
        let _ = tokio::time::timeout(settle, conn.closed()).await;
    }
    drop(h3);
    let stats = conn.stats();
    l.metrics
        .quic_rtt
        .get_or_create(&l.labels())
        .observe(stats.path.rtt.as_secs_f64());
    l.metrics
        .quic_lost_packets
        .get_or_create(&l.labels())
        .inc_by(stats.path.lost_packets);
    conn.close(quinn::VarInt::from_u32(0x100), b""); // H3_NO_ERROR
}

/// Whether the TLS handshake is still under way: keying material can only be exported from a
/// complete one (RFC 8446 §7.5). quinn reads packets in order, so a request stream that arrives
/// with or after the client's Finished finds the handshake complete.
fn handshaking(conn: &quinn::Connection) -> bool {
    conn.export_keying_material(&mut [0u8; 1], b"EXPORTER-gateway-handshake-probe", b"")
        .is_err()
}

async fn handshake(
    connecting: quinn::Connecting,
    timeout: std::time::Duration,
    l: &Listener,
) -> Option<quinn::Connection> {
    let c = bounded(connecting, timeout, l).await?;
    l.handshake("ok");
    Some(c)
}

/// A step of the handshake within `timeout`; a failure or timeout is counted and ends it.
async fn bounded<T>(
    step: impl std::future::Future<Output = Result<T, quinn::ConnectionError>>,
    timeout: std::time::Duration,
    l: &Listener,
) -> Option<T> {
    match tokio::time::timeout(timeout, step).await {
        Ok(Ok(c)) => Some(c),
        Ok(Err(e)) => {
            l.handshake("failed");
            tracing::debug!(listener = %l.name, error = %e, "QUIC handshake failed");
            None
        }
        Err(_) => {
            l.handshake("timeout");
            None
        }
    }
}

/// How long a request stream may take to send its head, and the counter of those that did not.
#[derive(Clone)]
struct Heads {
    timeout: std::time::Duration,
    expired: prometheus_client::metrics::counter::Counter,
}

/// One request stream: read the head, run the pipeline, send the answer back as it streams.
async fn request(
    resolver: h3::server::RequestResolver<h3_quinn::Connection, Bytes>,
    early: bool,
    heads: Heads,
    shared: Arc<Shared>,
    info: Arc<ConnInfo>,
) {
    // A stream that opens and never completes its head holds nothing past the header timeout,
    // as on HTTP/1.1 (dropped: its receiving side is stopped, its sending side ended).
    let (req, stream) = match tokio::time::timeout(heads.timeout, resolver.resolve_request()).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::debug!(listener = %info.listener, peer = %info.peer, error = %e, "HTTP/3 request head refused");
            return;
        }
        Err(_) => {
            heads.expired.inc();
            tracing::debug!(listener = %info.listener, peer = %info.peer, "HTTP/3 request head timed out");
            return;
        }
    };
    let (mut send, recv) = stream.split();
    let length = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    let bodiless = matches!(
        *req.method(),
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS | http::Method::DELETE | http::Method::TRACE
    );
    let mut req = req.map(|()| ClientBody::H3(Box::new(H3Body::new(recv, length, bodiless))));
    if early {
        req.extensions_mut().insert(EarlyData);
    }
    let Ok(resp) = crate::pipeline::handle(shared, info.clone(), req, false).await;
    let (parts, mut body) = resp.into_parts();
    if let Err(e) = send.send_response(http::Response::from_parts(parts, ())).await {
        tracing::debug!(peer = %info.peer, error = %e, "HTTP/3 response head not sent");
        return;
    }
    // The head, the data and the end go out without waiting in between where the body has
    // them ready, so that a small answer leaves in one packet rather than three.
    while !http_body::Body::is_end_stream(&body) {
        let Some(frame) = body.frame().await else { break };
        let sent = match frame {
            Ok(f) => match f.into_data() {
                Ok(data) => send.send_data(data).await,
                Err(f) => match f.into_trailers() {
                    Ok(t) => send.send_trailers(t).await,
                    Err(_) => Ok(()),
                },
            },
            Err(e) => {
                tracing::debug!(peer = %info.peer, error = %e, "HTTP/3 response body broke");
                send.stop_stream(h3::error::Code::H3_INTERNAL_ERROR);
                return;
            }
        };
        if let Err(e) = sent {
            tracing::debug!(peer = %info.peer, error = %e, "HTTP/3 client went away");
            return;
        }
    }
    let _ = send.finish().await;
}
