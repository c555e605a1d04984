//! An HTTP/3 client for the tests: quinn for QUIC and h3 for HTTP/3, with rustls (aws-lc-rs).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use bytes::{Buf, Bytes};
use http::{Request, Response};

/// One QUIC connection to the gateway with HTTP/3 on it.
pub struct H3Client {
    /// The QUIC connection (for stats and 0-RTT checks).
    pub conn: quinn::Connection,
    send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    driver: tokio::task::JoinHandle<()>,
    _endpoint: quinn::Endpoint,
}

/// A client endpoint on 127.0.0.1 for `tls` (its ALPN is set to `h3`); reusing one endpoint
/// keeps its session tickets, for 0-RTT.
pub fn endpoint(tls: &rustls::ClientConfig) -> anyhow::Result<quinn::Endpoint> {
    let mut tls = tls.clone();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    tls.enable_early_data = true;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    Ok(endpoint)
}

impl H3Client {
    /// Connects to `addr` as `server_name`, with a new endpoint.
    pub async fn connect(addr: SocketAddr, server_name: &str, tls: &rustls::ClientConfig) -> anyhow::Result<Self> {
        let endpoint = endpoint(tls)?;
        let conn = endpoint.connect(addr, server_name)?.await?;
        Self::over(endpoint, conn).await
    }

    /// HTTP/3 on an established connection.
    pub async fn over(endpoint: quinn::Endpoint, conn: quinn::Connection) -> anyhow::Result<Self> {
        let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn.clone())).await?;
        let driver = tokio::spawn(async move {
            let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        Ok(Self {
            conn,
            send,
            driver,
            _endpoint: endpoint,
        })
    }

    /// Sends `req` with `body` (none when empty) and reads the whole answer.
    pub async fn send(&self, req: Request<()>, body: Bytes) -> anyhow::Result<(Response<()>, Bytes)> {
        self.send_chunks(req, if body.is_empty() { Vec::new() } else { vec![body] })
            .await
    }

    /// Sends `req` with its body in `chunks` (each one DATA frame) and reads the whole answer.
    pub async fn send_chunks(&self, req: Request<()>, chunks: Vec<Bytes>) -> anyhow::Result<(Response<()>, Bytes)> {
        let mut send = self.send.clone();
        let mut stream = send.send_request(req).await.context("send_request")?;
        // A server may answer without reading the rest of the request and stop the client
        // sending (RFC 9114 §4.1): the answer still counts, so sending stops at the first refusal.
        let mut stopped = false;
        for c in chunks {
            if stream.send_data(c).await.is_err() {
                stopped = true;
                break;
            }
        }
        if !stopped {
            let _ = stream.finish().await;
        }
        let resp = stream.recv_response().await.context("recv_response")?;
        let mut body = Vec::new();
        while let Some(mut chunk) = stream.recv_data().await.context("recv_data")? {
            let n = chunk.remaining();
            body.extend_from_slice(&chunk.copy_to_bytes(n));
        }
        Ok((resp, Bytes::from(body)))
    }

    /// A GET for `path` on `host`.
    pub fn get(host: &str, path: &str) -> Request<()> {
        Request::get(format!("https://{host}{path}")).body(()).expect("request")
    }
}

impl Drop for H3Client {
    fn drop(&mut self) {
        self.conn.close(quinn::VarInt::from_u32(0x100), b"");
        self.driver.abort();
    }
}

/// A UDP relay on 127.0.0.1 between a client and `target` that spoils what the server sends:
/// drops every `nth` datagram (a lossy path, for loss recovery) or holds each back for a while
/// (a long path one way, so that a handshake stays incomplete while the client sends).
pub struct UdpPath {
    /// Where clients send.
    pub addr: SocketAddr,
    sent: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    tasks: [tokio::task::JoinHandle<()>; 3],
}

/// How many of the client's first datagrams a [`UdpPath`] keeps, for replays.
const KEPT: usize = 64;

impl UdpPath {
    /// Drops every `nth` datagram from `target`.
    pub async fn lossy(target: SocketAddr, nth: u64) -> anyhow::Result<Self> {
        Self::start(target, Some(nth), std::time::Duration::ZERO).await
    }

    /// Delays every datagram from `target` by `delay`, keeping their order.
    pub async fn slow(target: SocketAddr, delay: std::time::Duration) -> anyhow::Result<Self> {
        Self::start(target, None, delay).await
    }

    /// The first datagrams the client sent through the path, as an on-path attacker records
    /// them.
    pub fn client_datagrams(&self) -> Vec<Vec<u8>> {
        self.sent.lock().map(|d| d.clone()).unwrap_or_default()
    }

    async fn start(target: SocketAddr, drop_every: Option<u64>, delay: std::time::Duration) -> anyhow::Result<Self> {
        let front = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await?);
        let back = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await?);
        back.connect(target).await?;
        let addr = front.local_addr()?;
        let client = Arc::new(std::sync::Mutex::new(None::<SocketAddr>));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
        let (f, c) = (front.clone(), client.clone());
        let deliver = tokio::spawn(async move {
            while let Some((due, datagram)) = rx.recv().await {
                tokio::time::sleep_until(due).await;
                let to = *c.lock().expect("client address");
                if let Some(to) = to {
                    let _ = f.send_to(&datagram, to).await;
                }
            }
        });
        let b = back.clone();
        let answers = tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            let mut count = 0u64;
            while let Ok(n) = b.recv(&mut buf).await {
                count += 1;
                if drop_every.is_some_and(|nth| count % nth == 0) {
                    continue;
                }
                let _ = tx.send((tokio::time::Instant::now() + delay, buf[..n].to_vec()));
            }
        });
        let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = sent.clone();
        let requests = tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok((n, from)) = front.recv_from(&mut buf).await {
                *client.lock().expect("client address") = Some(from);
                {
                    let mut log = log.lock().expect("sent datagrams");
                    if log.len() < KEPT {
                        log.push(buf[..n].to_vec());
                    }
                }
                let _ = back.send(&buf[..n]).await;
            }
        });
        Ok(Self {
            addr,
            sent,
            tasks: [deliver, answers, requests],
        })
    }
}

impl Drop for UdpPath {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
