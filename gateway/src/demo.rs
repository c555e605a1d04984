//! `gateway demo`: the gateway on a built-in config, a built-in upstream, and a self-signed
//! certificate made at start. Nothing else needs to be installed.
//!
//! The demo writes its config and certificate to a fresh directory and starts the gateway from
//! that file, so editing it shows a live reload. The [`Upstream`] here is also what the
//! end-to-end tests proxy to: it can answer any status, wait, stream any number of bytes, echo a
//! body (with trailers after it, as gRPC answers, on `/trailers`), and echo bytes after a
//! protocol upgrade; it speaks HTTP/1.1 and HTTP/2 (prior knowledge) on the same port.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body::{Body as HttpBody, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::pipeline::body::{self, Body};

/// A small HTTP server to proxy to.
#[derive(Debug)]
pub struct Upstream {
    addr: SocketAddr,
    stop: CancellationToken,
}

/// Streams `remaining` bytes of `x` in 64 KiB chunks without holding them.
struct Repeat {
    remaining: u64,
    chunk: Bytes,
}

impl HttpBody for Repeat {
    type Data = Bytes;
    type Error = crate::error::BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(self.chunk.len() as u64) as usize;
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

// === impl Upstream ===

impl Upstream {
    /// Starts an upstream named `name` (sent back in `x-upstream`) on `addr`.
    pub async fn start(name: &str, addr: SocketAddr) -> std::io::Result<Upstream> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let name: std::sync::Arc<str> = name.into();
        let token = stop.clone();
        accept_until(listener, stop.clone(), move |stream| {
            let name = name.clone();
            let token = token.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let name = name.clone();
                    async move { Ok::<_, Infallible>(respond(&name, req).await) }
                });
                let mut builder = auto::Builder::new(TokioExecutor::new());
                // Accept what the gateway may be configured to pass through.
                builder.http1().max_headers(512);
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = token.cancelled() => {}
                }
            });
        });
        Ok(Upstream { addr, stop })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and closes its connections.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn json(name: &str, status: StatusCode, doc: serde_json::Value) -> Response<Body> {
    let mut r = Response::new(body::full(doc.to_string()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(name) {
        r.headers_mut().insert("x-upstream", v);
    }
    r
}

/// `n` bytes of `x`, streamed.
fn repeat(name: &str, n: u64) -> Response<Body> {
    let mut r = Response::new(
        Repeat {
            remaining: n,
            chunk: Bytes::from(vec![b'x'; 64 * 1024]),
        }
        .boxed_unsync(),
    );
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(name) {
        r.headers_mut().insert("x-upstream", v);
    }
    r
}

async fn respond(name: &str, mut req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (first, arg) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if req.headers().contains_key(header::UPGRADE) {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let mut io = TokioIo::new(up);
                let mut buf = vec![0u8; 16 * 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        let mut r = Response::new(body::empty());
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Some(u) = req.headers().get(header::UPGRADE) {
            r.headers_mut().insert(header::UPGRADE, u.clone());
        }
        return r;
    }
    let size = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("size=")))
        .and_then(|n| n.parse::<u64>().ok());
    if let (Some(n), false) = (
        size,
        matches!(first, "status" | "delay" | "bytes" | "echo" | "trailers" | "drain"),
    ) {
        return repeat(name, n.min(64 << 20));
    }
    match first {
        "status" => {
            let code = arg
                .split('/')
                .next()
                .unwrap_or("")
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::BAD_REQUEST);
            json(
                name,
                code,
                serde_json::json!({ "upstream": name, "status": code.as_u16() }),
            )
        }
        "delay" => {
            let ms = arg.parse::<u64>().unwrap_or(0).min(60_000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            json(
                name,
                StatusCode::OK,
                serde_json::json!({ "upstream": name, "delayed_ms": ms }),
            )
        }
        "bytes" => repeat(name, arg.parse::<u64>().unwrap_or(0).min(8 << 30)),
        "echo" => {
            let (_, body) = req.into_parts();
            let mut r = Response::new(body.map_err(|e| Box::new(e) as crate::error::BoxError).boxed_unsync());
            if let Ok(v) = HeaderValue::from_str(name) {
                r.headers_mut().insert("x-upstream", v);
            }
            r
        }
        "trailers" => {
            // The body echoed, then trailers, as a gRPC server answers.
            let (_, body) = req.into_parts();
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            let body = body
                .map_err(|e| Box::new(e) as crate::error::BoxError)
                .with_trailers(async move { Some(Ok(trailers)) })
                .boxed_unsync();
            let mut r = Response::new(body);
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
            if let Ok(v) = HeaderValue::from_str(name) {
                r.headers_mut().insert("x-upstream", v);
            }
            r
        }
        "drain" => {
            let mut body = req.into_body();
            let mut received: u64 = 0;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => received += f.data_ref().map(|d| d.len() as u64).unwrap_or(0),
                    Err(_) => {
                        return json(
                            name,
                            StatusCode::BAD_REQUEST,
                            serde_json::json!({ "upstream": name, "error": "body" }),
                        )
                    }
                }
            }
            json(
                name,
                StatusCode::OK,
                serde_json::json!({ "upstream": name, "received": received }),
            )
        }
        _ => {
            let mut headers = serde_json::Map::new();
            for (k, v) in req.headers() {
                let v = String::from_utf8_lossy(v.as_bytes()).to_string();
                match headers.get_mut(k.as_str()) {
                    Some(serde_json::Value::String(prev)) => {
                        prev.push_str(", ");
                        prev.push_str(&v);
                    }
                    _ => {
                        headers.insert(k.as_str().to_string(), serde_json::Value::String(v));
                    }
                }
            }
            json(
                name,
                StatusCode::OK,
                serde_json::json!({
                    "upstream": name,
                    "method": req.method().as_str(),
                    "version": format!("{:?}", req.version()),
                    "path": path,
                    "query": req.uri().query().unwrap_or(""),
                    "headers": headers,
                }),
            )
        }
    }
}

/// Accepts connections until `stop` fires, handing each to `serve` (which spawns its task).
fn accept_until<F>(listener: tokio::net::TcpListener, stop: CancellationToken, serve: F)
where
    F: Fn(tokio::net::TcpStream) + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
                _ = stop.cancelled() => return,
            };
            let _ = stream.set_nodelay(true);
            serve(stream);
        }
    });
}

/// Ports the demo listens on.
#[derive(Debug, Clone, Copy)]
pub struct DemoPorts {
    /// HTTPS listener.
    pub https: u16,
    /// Plain HTTP listener.
    pub http: u16,
    /// Admin listener.
    pub admin: u16,
}

/// Writes a self-signed certificate for `localhost` and `127.0.0.1` into `dir`.
pub fn write_self_signed(dir: &Path) -> std::io::Result<(PathBuf, PathBuf)> {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .map_err(std::io::Error::other)?;
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, ck.cert.pem())?;
    std::fs::write(&key, ck.signing_key.serialize_pem())?;
    Ok((cert, key))
}

/// Writes a device identity into `dir`: a CA (`devices-ca.pem`, which the HTTPS listener trusts
/// for client certificates) and a certificate it signed for `demo-device` (`device.pem`,
/// `device.key`, for `curl --cert`); returns the CA's path.
pub fn write_device_identity(dir: &Path) -> std::io::Result<PathBuf> {
    let io = std::io::Error::other;
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(io)?;
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "gateway demo devices CA");
    let ca_key = rcgen::KeyPair::generate().map_err(io)?;
    let ca_cert = ca.self_signed(&ca_key).map_err(io)?;
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let mut device = rcgen::CertificateParams::new(vec!["demo-device".to_string()]).map_err(io)?;
    device.distinguished_name.push(rcgen::DnType::CommonName, "demo device");
    let device_key = rcgen::KeyPair::generate().map_err(io)?;
    let device_cert = device.signed_by(&device_key, &issuer).map_err(io)?;
    let ca_path = dir.join("devices-ca.pem");
    std::fs::write(&ca_path, ca_cert.pem())?;
    std::fs::write(dir.join("device.pem"), device_cert.pem())?;
    std::fs::write(dir.join("device.key"), device_key.serialize_pem())?;
    Ok(ca_path)
}

/// The demo's config text.
pub fn config_text(
    ports: DemoPorts,
    upstream: SocketAddr,
    (cert, key): (&Path, &Path),
    devices_ca: &Path,
    issuer: &str,
) -> String {
    format!(
        r#"# Demo config written by `gateway demo`. Edit and save: the gateway reloads it.
listeners:
  - name: https
    address: 127.0.0.1:{https}
    tls:
      certificates:
        - cert: {cert}
          key: {key}
      client_auth:                    # mutual TLS: a device certificate is verified when sent
        ca_files: [{devices_ca}]
        required: false               # clients without one connect too; /device asks for one
    quic: {{}}
  - name: http
    address: 127.0.0.1:{http}
admin:
  address: 127.0.0.1:{admin}
limits:
  max_body_bytes: 1048576
  header_timeout: 10s
  idle_timeout: 60s
identity:
  providers:
    - name: demo
      issuer: {issuer}
      audiences: [demo-api]
      algorithms: [ES256]
routes:
  - name: demo
    upstream: demo
  - name: api
    match:
      path_prefix: /api
    upstream: demo
    auth:
      bearer: demo
    trust:                      # decide on the baseline engine's risk
      step_up_at: 0.5
      deny_at: 0.85
      step_up: {{ acr_values: [urn:demo:mfa] }}
  - name: api-admin
    match:
      path_prefix: /api/admin
    upstream: demo
    auth:
      bearer: demo
      scopes: [admin]
  - name: api-payments
    match:
      path_prefix: /api/payments
    upstream: demo
    auth:
      bearer: demo
      acr_values: [urn:demo:mfa]
  - name: broken
    match:
      path_prefix: /broken
    upstream: nowhere
  - name: limited
    match:
      path_prefix: /limited
    upstream: demo
    rewrite_prefix: /                 # the upstream sees /limited/x as /x
    rate_limit: {{ rate: 5/s }}          # per client address; beyond it 429 with Retry-After
    response_headers:
      set: {{ x-demo-limit: 5/s }}
  - name: device
    match:
      path_prefix: /device
    upstream: demo
    auth:
      client_certificate: true        # 403 without a verified client certificate
upstreams:
  - name: demo
    endpoints: [http://{upstream}]
    request_timeout: 5s
    health:
      consecutive_failures: 5
      ejection_time: 10s
      check: {{ path: /healthz, interval: 5s }}
  - name: nowhere
    endpoints: [http://127.0.0.1:9]
engine:
  warmup: 10                    # series score after 10 samples (default 60)
reload:
  poll_interval: 1s
"#,
        https = ports.https,
        http = ports.http,
        admin = ports.admin,
        cert = cert.display(),
        key = key.display(),
        devices_ca = devices_ca.display(),
        upstream = upstream,
        issuer = issuer,
    )
}

/// What a newcomer should try, printed at start; `token` is alice's, `mallory` the scraper's.
pub fn banner(ports: DemoPorts, dir: &Path, token: &str, mallory: &str) -> String {
    let DemoPorts { https, http, admin } = ports;
    format!(
        r#"
Adaptive gateway demo is running.

  HTTPS (TLS 1.3, h2 + http/1.1): https://localhost:{https}/
  HTTP/3 (QUIC, same port, UDP): https://localhost:{https}/   (advertised in Alt-Svc)
  HTTP:                           http://127.0.0.1:{http}/
  Admin:                          http://127.0.0.1:{admin}/metrics  /healthz  /readyz
  Config (edit it, it reloads):   {dir}/gateway.yaml

Try:
  curl -k https://localhost:{https}/hello                       # proxied, see X-Forwarded-* and X-Request-Id
  curl -k --http2 -i https://localhost:{https}/status/503       # upstream status passed through; see alt-svc
  curl -k --http3-only -i https://localhost:{https}/hello       # HTTP/3, with a curl built with HTTP/3 support
  curl -i http://127.0.0.1:{http}/delay/6000                    # 504 after the 5s request timeout
  curl -i http://127.0.0.1:{http}/broken                        # 502, problem+json body
  curl -i -X POST --data-binary @/dev/zero -H 'content-length: 2000000' http://127.0.0.1:{http}/drain   # 413
  curl -s http://127.0.0.1:{admin}/metrics | grep gateway_requests_total
  for i in $(seq 8); do curl -s -o /dev/null -w '%{{http_code}} ' http://127.0.0.1:{http}/limited/x; done; echo   # 200 x5, then 429

Device identity (mutual TLS; the demo made a device certificate in the directory above):
  curl -k --cert {dir}/device.pem --key {dir}/device.key https://localhost:{https}/device/hello   # allowed; see x-forwarded-client-cert upstream
  curl -k -i https://localhost:{https}/device/hello                                           # 403, no client certificate

Bearer tokens (the demo issuer signed this one for alice: scope read, acr urn:demo:pwd, valid 1 h):
  TOKEN={token}
  curl -i http://127.0.0.1:{http}/api/orders                                         # 401, no token
  curl -i -H "Authorization: Bearer $TOKEN" http://127.0.0.1:{http}/api/orders       # allowed; see x-auth-subject upstream
  curl -i -H "Authorization: Bearer $TOKEN" http://127.0.0.1:{http}/api/admin        # 403, scope admin needed
  curl -i -H "Authorization: Bearer $TOKEN" http://127.0.0.1:{http}/api/payments     # 401, RFC 9470 step-up challenge

Adaptive trust (/api has a trust policy; the engine learns from every request):
  MALLORY={mallory}
  # A scraper from 127.0.0.3: 25 new paths at once. Allowed at first, then 401 with a step-up challenge:
  for i in $(seq 25); do curl -s -o /dev/null -w '%{{http_code}} ' --interface 127.0.0.3 -H "Authorization: Bearer $MALLORY" http://127.0.0.1:{http}/api/items/$i; done; echo
  # Credential stuffing from 127.0.0.2: 401 for each bad token, then 403 for anything from that address:
  for i in $(seq 15); do curl -s -o /dev/null -w '%{{http_code}} ' --interface 127.0.0.2 -H "Authorization: Bearer bad-$i" http://127.0.0.1:{http}/api/orders; done; echo
  # Why: the riskiest entities now, with their reasons (and one of them with its history)
  curl -s http://127.0.0.1:{admin}/risk/top
  curl -s http://127.0.0.1:{admin}/risk/principal:mallory
  curl -s http://127.0.0.1:{admin}/metrics | grep gateway_trust_decisions_total

Dashboards and alerts (docs/observability.md): point Prometheus at http://127.0.0.1:{admin}/metrics
with the rules in alerts/, and Grafana at Prometheus with dashboards/ (Overview, Trust, Baselines,
Runtime, Identity). What the engine learned, with bands and scores:
  curl -s http://127.0.0.1:{admin}/metrics | grep 'gateway_baseline_score{{scope="route'

Press Ctrl-C to stop (in-flight requests are drained).
"#,
        dir = dir.display()
    )
}

/// The demo's token issuer: an ES256 key made at start, its discovery document and JWKS served
/// on loopback, and tokens signed on request. For the demo only: it has no login.
pub struct Issuer {
    addr: SocketAddr,
    key: aws_lc_rs::signature::EcdsaKeyPair,
    stop: CancellationToken,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer").field("addr", &self.addr).finish()
    }
}

// === impl Issuer ===

impl Issuer {
    /// Starts the issuer on an ephemeral loopback port.
    pub async fn start() -> std::io::Result<Issuer> {
        use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(|_| std::io::Error::other("key generation failed"))?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let issuer = format!("http://{addr}");
        let jwks = serde_json::json!({ "keys": [crate::identity::jwt::es256_jwk(&key, "demo-1")] }).to_string();
        let discovery = serde_json::json!({ "issuer": issuer, "jwks_uri": format!("{issuer}/jwks") }).to_string();
        let stop = CancellationToken::new();
        accept_until(listener, stop.clone(), move |stream| {
            let (jwks, discovery) = (jwks.clone(), discovery.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let body = match req.uri().path() {
                        "/.well-known/openid-configuration" => Some(discovery.clone()),
                        "/jwks" => Some(jwks.clone()),
                        _ => None,
                    };
                    async move {
                        let mut r = match body {
                            Some(b) => Response::new(body::full(b)),
                            None => {
                                let mut r = Response::new(body::empty());
                                *r.status_mut() = StatusCode::NOT_FOUND;
                                r
                            }
                        };
                        r.headers_mut()
                            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                        r.headers_mut()
                            .insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=300"));
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        });
        Ok(Issuer { addr, key, stop })
    }

    /// The issuer URL.
    pub fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A signed access token for `subject` with `scope` and `acr`, valid for `ttl`.
    pub fn token(&self, subject: &str, scope: &str, acr: &str, ttl: Duration) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let header = serde_json::json!({ "alg": "ES256", "kid": "demo-1", "typ": "at+jwt" });
        let claims = serde_json::json!({ "iss": self.issuer(), "aud": "demo-api", "sub": subject, "scope": scope, "acr": acr,
            "auth_time": now, "iat": now, "exp": now + ttl.as_secs() });
        crate::identity::jwt::sign_es256(&self.key, &header, &claims).unwrap_or_default()
    }

    /// Stops serving.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}
