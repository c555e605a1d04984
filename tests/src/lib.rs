//! End-to-end harness: starts the gateway (in-process through its library, or the real binary)
//! on 127.0.0.1 with certificates made at run time, the built-in upstream server, and clients
//! for HTTP/1.1 and HTTP/2 over plain TCP and TLS.
//!
//! Waiting is done with [`assert_eventually!`], whose patience comes from
//! `GATEWAY_TEST_PATIENCE_MS` (default 10 s); no test sleeps to let something happen.

pub mod h3;
pub mod monitoring;
pub mod traffic;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

pub use gateway::demo::Upstream;

/// The next item from one of the tap's receivers, within [`patience`]: the tap is polled,
/// not waited on, so this looks every few milliseconds.
pub async fn next_from_tap<T>(rx: &gateway::telemetry::tap::Receiver<T>) -> anyhow::Result<T> {
    let deadline = tokio::time::Instant::now() + patience();
    loop {
        match rx.try_recv() {
            Ok(item) => return Ok(item),
            Err(gateway::telemetry::tap::TryRecvError::Disconnected) => anyhow::bail!("the tap closed"),
            Err(gateway::telemetry::tap::TryRecvError::Empty) if tokio::time::Instant::now() >= deadline => {
                anyhow::bail!("nothing from the tap within {:?}", patience())
            }
            Err(gateway::telemetry::tap::TryRecvError::Empty) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// How long `assert_eventually!` waits.
pub fn patience() -> Duration {
    let ms = std::env::var("GATEWAY_TEST_PATIENCE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    Duration::from_millis(ms)
}

/// Retries an async condition until it holds or patience runs out.
#[macro_export]
macro_rules! assert_eventually {
    ($cond:expr, $($msg:tt)+) => {{
        let deadline = tokio::time::Instant::now() + $crate::patience();
        loop {
            if $cond {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                panic!($($msg)+);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }};
}

/// A test certificate authority and the leaf certificates it issues.
pub struct TestPki {
    /// Directory holding the PEM files.
    pub dir: tempfile::TempDir,
    ca: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// CA certificate (DER).
    pub ca_der: CertificateDer<'static>,
}

impl TestPki {
    /// A fresh CA.
    pub fn new() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "gateway test CA");
        let key = rcgen::KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let ca_der = cert.der().clone();
        std::fs::write(dir.path().join("ca.pem"), cert.pem())?;
        Ok(Self {
            dir,
            ca: rcgen::Issuer::new(params, key),
            ca_der,
        })
    }

    /// Issues a leaf for `names`; returns (cert path, key path).
    pub fn leaf(&self, file_stem: &str, names: &[&str]) -> anyhow::Result<(PathBuf, PathBuf)> {
        let params = rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        let key = rcgen::KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.ca)?;
        let c = self.dir.path().join(format!("{file_stem}.pem"));
        let k = self.dir.path().join(format!("{file_stem}.key"));
        std::fs::write(&c, cert.pem())?;
        std::fs::write(&k, key.serialize_pem())?;
        Ok((c, k))
    }

    /// A TLS 1.3 client config trusting this CA, offering `alpn`, and presenting a client
    /// certificate for `names` that this CA issues.
    pub fn client_config_with_certificate(
        &self,
        alpn: &[&[u8]],
        names: &[&str],
    ) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        let params = rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        let key = rcgen::KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.ca)?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone())?;
        let key = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).map_err(anyhow::Error::msg)?;
        let mut cfg = rustls::ClientConfig::builder_with_provider(gateway::listen::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_client_auth_cert(vec![cert.der().clone()], key)?;
        cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        Ok(Arc::new(cfg))
    }

    /// A rustls client config trusting this CA, offering `alpn`, for the given TLS versions.
    pub fn client_config(
        &self,
        alpn: &[&[u8]],
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).expect("CA certificate is valid");
        let mut cfg = rustls::ClientConfig::builder_with_provider(gateway::listen::tls::provider())
            .with_protocol_versions(versions)
            .expect("versions are supported")
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        Arc::new(cfg)
    }
}

/// A gateway running in this process from a config file in a temporary directory.
pub struct TestGateway {
    /// The running gateway.
    pub gw: gateway::Gateway,
    /// Directory with `gateway.yaml`.
    pub dir: tempfile::TempDir,
}

impl TestGateway {
    /// Starts a gateway with one plain listener `http` and an admin listener, both on free
    /// loopback ports, and the rest of its config from `rest` (routes, upstreams, …).
    pub async fn plain(rest: &str) -> anyhow::Result<Self> {
        Self::start(&format!(
            "listeners: [{{ name: http, address: \"127.0.0.1:0\" }}]\nadmin: {{ address: \"127.0.0.1:0\" }}\n{rest}"
        ))
        .await
    }

    /// Writes `yaml` and starts the gateway from it.
    pub async fn start(yaml: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("gateway.yaml");
        std::fs::write(&path, yaml)?;
        let cfg = gateway::config::load(&path).map_err(|e| anyhow!("{e}"))?;
        let gw = gateway::Gateway::start(cfg, Some(path), prometheus_client::registry::Registry::default()).await?;
        Ok(Self { gw, dir })
    }

    /// Bound address of a listener.
    pub fn addr(&self, listener: &str) -> SocketAddr {
        self.gw.listener_addr(listener).expect("listener exists")
    }

    /// The config file path.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("gateway.yaml")
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.gw.admin_addr()
    }

    /// The admin listener's `/metrics` text.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let r = get(&format!("http://{}/metrics", self.gw.admin_addr())).await?;
        Ok(String::from_utf8_lossy(r.body()).to_string())
    }
}

/// The sum of the samples named `name` whose labels include every `label="value"` pair given
/// (like `sum(name{labels})`), or `None` when no sample matches.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = l.rsplit_once(' ') else {
            continue;
        };
        let (n, rest) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if n != name
            || !labels
                .iter()
                .all(|(k, v)| rest.split(',').any(|p| p == format!("{k}=\"{v}\"")))
        {
            continue;
        }
        if let Ok(v) = value.parse::<f64>() {
            found = Some(found.unwrap_or(0.0) + v);
        }
    }
    found
}

/// A response with its whole body.
pub type Collected = Response<Bytes>;

async fn collect(resp: Response<hyper::body::Incoming>) -> anyhow::Result<Collected> {
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await?.to_bytes();
    Ok(Response::from_parts(parts, bytes))
}

/// Sends a request over a new plain-TCP HTTP/1.1 connection and collects the response.
pub async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> anyhow::Result<Collected> {
    exchange(TcpStream::connect(addr).await?, req).await
}

/// [`send`] from the local address `from` (any of 127.0.0.0/8 works on Linux).
pub async fn send_from(
    from: std::net::IpAddr,
    addr: SocketAddr,
    req: Request<Full<Bytes>>,
) -> anyhow::Result<Collected> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    exchange(socket.connect(addr).await?, req).await
}

async fn exchange(stream: TcpStream, req: Request<Full<Bytes>>) -> anyhow::Result<Collected> {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    collect(sender.send_request(req).await?).await
}

/// GET `url` (plain HTTP) on a new connection.
pub async fn get(url: &str) -> anyhow::Result<Collected> {
    let uri: http::Uri = url.parse()?;
    let authority = uri.authority().context("url has a host")?.clone();
    let addr: SocketAddr = authority.as_str().parse().context("url host is IP:port")?;
    let req = Request::get(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
        .header("host", authority.as_str())
        .body(Full::new(Bytes::new()))?;
    send(addr, req).await
}

/// A simple GET request for `path` with `host`.
pub fn request(host: &str, path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .expect("valid request")
}

/// A TLS connection to the gateway, with what was negotiated.
pub struct TlsConn {
    /// The stream.
    pub stream: tokio_rustls::client::TlsStream<TcpStream>,
}

impl TlsConn {
    /// Connects with SNI `server_name`.
    pub async fn connect(addr: SocketAddr, server_name: &str, cfg: Arc<rustls::ClientConfig>) -> anyhow::Result<Self> {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from(server_name.to_string())?;
        let stream = tokio_rustls::TlsConnector::from(cfg).connect(name, tcp).await?;
        Ok(Self { stream })
    }

    /// ALPN protocol chosen.
    pub fn alpn(&self) -> Option<Vec<u8>> {
        self.stream.get_ref().1.alpn_protocol().map(|p| p.to_vec())
    }

    /// TLS version.
    pub fn version(&self) -> Option<rustls::ProtocolVersion> {
        self.stream.get_ref().1.protocol_version()
    }

    /// Key exchange group.
    pub fn kx_group(&self) -> Option<rustls::NamedGroup> {
        self.stream
            .get_ref()
            .1
            .negotiated_key_exchange_group()
            .map(|g| g.name())
    }

    /// The server's leaf certificate.
    pub fn peer_leaf(&self) -> Option<CertificateDer<'static>> {
        self.stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.clone().into_owned())
    }

    /// Sends one request over HTTP/1.1 or HTTP/2 according to ALPN.
    pub async fn send(self, req: Request<Full<Bytes>>) -> anyhow::Result<Collected> {
        let h2 = self.alpn().as_deref() == Some(b"h2");
        let io = TokioIo::new(self.stream);
        if h2 {
            let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            collect(sender.send_request(req).await?).await
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(conn);
            collect(sender.send_request(req).await?).await
        }
    }
}

/// A pooled client for many requests over plain HTTP/1.1 keep-alive.
pub fn pooled_client(
) -> hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

/// JSON body of a response.
pub fn json(r: &Collected) -> serde_json::Value {
    serde_json::from_slice(r.body()).unwrap_or(serde_json::Value::Null)
}

/// The metric families `docs/metrics.md` defines (its table's first column).
pub fn documented_metrics() -> std::collections::BTreeSet<String> {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md")).expect("docs/metrics.md");
    doc.lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|n| n.starts_with("gateway_") || n.starts_with("process_"))
        .map(str::to_string)
        .collect()
}

/// The metric families a rule file or dashboard reads: every `gateway_…` or `process_…` name
/// in `text`, with a histogram's `_bucket`, `_sum` and `_count` series folded into their family.
/// Recording rules (`gateway:…`) are not families and are not returned.
pub fn metric_names_in(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let bytes = text.as_bytes();
    for prefix in ["gateway_", "process_"] {
        let mut from = 0;
        while let Some(i) = text[from..].find(prefix).map(|i| i + from) {
            let starts_word =
                i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_' || bytes[i - 1] == b':');
            let end = text[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(text.len(), |e| e + i);
            if starts_word {
                let name = &text[i..end];
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(name);
                names.insert(family.to_string());
            }
            from = end.max(i + 1);
        }
    }
    names
}

/// Connections a [`raw_server`] accepted, and closed (its `serve` ended, the socket dropped).
#[derive(Debug, Default)]
pub struct Connections {
    /// Accepted so far.
    pub opened: std::sync::atomic::AtomicUsize,
    /// Closed by the server so far.
    pub closed: std::sync::atomic::AtomicUsize,
}

/// A TCP server on 127.0.0.1 for upstreams written by hand: `serve` runs, in a task of its own,
/// for every connection accepted, with the connection's number (0 for the first); `conns`
/// counts them.
pub async fn raw_server<F, Fut>(conns: Arc<Connections>, serve: F) -> anyhow::Result<SocketAddr>
where
    F: Fn(TcpStream, usize) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    use std::sync::atomic::Ordering;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let n = conns.opened.fetch_add(1, Ordering::SeqCst);
            let served = serve(s, n);
            let conns = conns.clone();
            tokio::spawn(async move {
                served.await;
                conns.closed.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    Ok(addr)
}

/// The next request head (up to its blank line) on a raw HTTP/1.1 connection, for upstreams
/// written by hand; `buf` keeps what was read beyond it. `None` once the peer has closed.
/// Bodies are not read.
pub async fn next_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    use tokio::io::AsyncReadExt;
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            return Some(head);
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A free TCP port on 127.0.0.1, for processes that take fixed ports (the gateway binary, the
/// OpenID provider, Prometheus).
///
/// Picked below the kernel's ephemeral range (`ip_local_port_range`), so no socket another
/// test binds to port 0 or connects from can take it between this check and the process
/// binding it. Each port is handed out once per test process, from a start that differs
/// between processes.
pub fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    const LOW: u64 = 10_000;
    let high = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(32_768)
        .max(LOW + 1_000);
    let span = high - LOW;
    let start = u64::from(std::process::id()).wrapping_mul(7_919) % span;
    loop {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert!(n < span, "no free port left below the ephemeral range");
        let port = u16::try_from(LOW + (start + n) % span).expect("below 65536");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Path of the gateway binary built for these tests (the `gateway-under-test` target of this
/// crate, a thin wrapper over `gateway::cli::main`, so cargo rebuilds it with the library).
#[macro_export]
macro_rules! gateway_bin {
    () => {
        std::path::PathBuf::from(env!("CARGO_BIN_EXE_gateway-under-test"))
    };
}

/// A YAML snippet listing endpoints for upstream servers.
pub fn endpoints(ups: &[&Upstream]) -> String {
    let list: Vec<String> = ups.iter().map(|u| format!("http://{}", u.addr())).collect();
    format!("[{}]", list.join(", "))
}

/// A request body fed chunk by chunk from a channel (for streaming and slow uploads).
pub struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
}

impl ChannelBody {
    /// A body and the sender that feeds it; dropping the sender ends the body.
    pub fn new(depth: usize) -> (tokio::sync::mpsc::Sender<Bytes>, ChannelBody) {
        let (tx, rx) = tokio::sync::mpsc::channel(depth);
        (tx, ChannelBody { rx })
    }
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.rx.poll_recv(cx).map(|o| o.map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// A gateway process started from the binary under test; killed on drop.
pub struct Process {
    child: tokio::process::Child,
}

impl Process {
    /// Starts the binary with `args` (built by `gateway_bin!` in the calling test).
    pub fn spawn_with(bin: &std::path::Path, args: &[&std::ffi::OsStr]) -> anyhow::Result<Self> {
        let child = tokio::process::Command::new(bin)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        Ok(Self { child })
    }

    /// Starts the binary with `args`, its log (stderr) written to `log`, and no `RUST_LOG`, so
    /// the config's log settings apply.
    pub fn spawn_logging(
        bin: &std::path::Path,
        args: &[&std::ffi::OsStr],
        log: &std::path::Path,
    ) -> anyhow::Result<Self> {
        let child = tokio::process::Command::new(bin)
            .args(args)
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(log)?)
            .kill_on_drop(true)
            .spawn()?;
        Ok(Self { child })
    }

    /// Sends a signal by name (`TERM`, `HUP`, `INT`).
    pub fn signal(&self, name: &str) -> anyhow::Result<()> {
        let pid = self.child.id().context("process still running")?;
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()?;
        anyhow::ensure!(status.success(), "kill -{name} failed");
        Ok(())
    }

    /// Waits (with patience) for the exit code.
    pub async fn wait_exit(&mut self) -> anyhow::Result<Option<i32>> {
        let status = tokio::time::timeout(patience(), self.child.wait()).await??;
        Ok(status.code())
    }

    /// The child's stdout, once.
    pub fn stdout(&mut self) -> Option<tokio::process::ChildStdout> {
        self.child.stdout.take()
    }
}

/// A request header as the built-in upstream echoed it in its JSON answer (empty when absent).
pub fn echoed_header(answer: &serde_json::Value, name: &str) -> String {
    answer["headers"][name].as_str().unwrap_or_default().to_string()
}

/// A TLS 1.3 client that accepts any server certificate (to inspect what is served, and for
/// the demo's self-signed certificate).
pub fn insecure_client() -> std::sync::Arc<rustls::ClientConfig> {
    insecure_client_presenting(None)
}

/// [`insecure_client`] presenting a client certificate chain and key, when given.
pub fn insecure_client_presenting(
    identity: Option<(Vec<CertificateDer<'static>>, rustls::pki_types::PrivateKeyDer<'static>)>,
) -> std::sync::Arc<rustls::ClientConfig> {
    #[derive(Debug)]
    struct AcceptAny;
    impl rustls::client::danger::ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            gateway::listen::tls::provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
    let cfg = rustls::ClientConfig::builder_with_provider(gateway::listen::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(AcceptAny));
    let cfg = match identity {
        Some((chain, key)) => cfg
            .with_client_auth_cert(chain, key)
            .expect("a usable client certificate"),
        None => cfg.with_no_client_auth(),
    };
    std::sync::Arc::new(cfg)
}

/// A cookie-keeping HTTP client, like a browser: it stores `Set-Cookie` per host (host-only,
/// honouring `Max-Age=0` deletion and `Secure`), sends them back, and follows redirects when
/// asked. Trusts the given CA for HTTPS.
pub struct Browser {
    client: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        Full<Bytes>,
    >,
    /// Per host: name, value, and whether the cookie is `Secure`.
    jar: std::sync::Mutex<std::collections::HashMap<String, Vec<Cookie>>>,
}

/// A stored cookie: name, value, and whether it is `Secure`.
type Cookie = (String, String, bool);

/// The attributes of a `Set-Cookie` header, lowercased, without the name and value.
pub fn cookie_attributes(set_cookie: &str) -> Vec<String> {
    set_cookie
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_ascii_lowercase())
        .collect()
}

impl Browser {
    /// A browser trusting `pki`'s CA.
    pub fn new(pki: &TestPki) -> Self {
        let tls = pki.client_config(&[], &[&rustls::version::TLS13]);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_or_http()
            .enable_http1()
            .build();
        Self {
            client: hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(https),
            jar: Default::default(),
        }
    }

    /// The cookie `name` stored for `host`.
    pub fn cookie(&self, host: &str, name: &str) -> Option<String> {
        let jar = self.jar.lock().ok()?;
        jar.get(host)?
            .iter()
            .find(|(n, ..)| n == name)
            .map(|(_, v, _)| v.clone())
    }

    /// Stores (or replaces) a cookie, as a server could have set it.
    pub fn set_cookie(&self, host: &str, name: &str, value: &str) {
        if let Ok(mut jar) = self.jar.lock() {
            let list = jar.entry(host.to_string()).or_default();
            list.retain(|(n, ..)| n != name);
            list.push((name.to_string(), value.to_string(), true));
        }
    }

    fn store(&self, host: &str, headers: &http::HeaderMap) {
        for v in headers.get_all(http::header::SET_COOKIE) {
            let Ok(text) = v.to_str() else { continue };
            let Some((name, value)) = text.split(';').next().and_then(|nv| nv.split_once('=')) else {
                continue;
            };
            let attributes = cookie_attributes(text);
            let delete = attributes.iter().any(|a| a == "max-age=0");
            let secure = attributes.iter().any(|a| a == "secure");
            if let Ok(mut jar) = self.jar.lock() {
                let list = jar.entry(host.to_string()).or_default();
                list.retain(|(n, ..)| n != name.trim());
                if !delete {
                    list.push((name.trim().to_string(), value.trim().to_string(), secure));
                }
            }
        }
    }

    /// Sends one request (no redirect followed), with the cookies for its host.
    pub async fn send(&self, method: http::Method, url: &str, form: Option<&str>) -> anyhow::Result<Collected> {
        self.exchange(method, url, form, &[]).await
    }

    /// Sends one request with extra header fields.
    pub async fn send_with(
        &self,
        method: http::Method,
        url: &str,
        headers: &[(&str, String)],
    ) -> anyhow::Result<Collected> {
        self.exchange(method, url, None, headers).await
    }

    async fn exchange(
        &self,
        method: http::Method,
        url: &str,
        form: Option<&str>,
        headers: &[(&str, String)],
    ) -> anyhow::Result<Collected> {
        let uri: http::Uri = url.parse()?;
        let host = uri.host().context("absolute URL")?.to_string();
        let https = uri.scheme_str() == Some("https");
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("user-agent", "gateway-tests-browser/1");
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let cookies = self
            .jar
            .lock()
            .map(|j| j.get(&host).cloned().unwrap_or_default())
            .unwrap_or_default();
        // Secure cookies only over HTTPS (every cookie the gateway sets is Secure).
        let line: Vec<String> = cookies
            .iter()
            .filter(|(.., secure)| https || !secure)
            .map(|(n, v, _)| format!("{n}={v}"))
            .collect();
        if !line.is_empty() {
            req = req.header("cookie", line.join("; "));
        }
        let body = match form {
            Some(f) => {
                req = req.header("content-type", "application/x-www-form-urlencoded");
                Bytes::from(f.to_string())
            }
            None => Bytes::new(),
        };
        let resp = self
            .client
            .request(req.body(Full::new(body))?)
            .await
            .with_context(|| url.to_string())?;
        self.store(&host, resp.headers());
        collect(resp).await
    }

    /// GET `url` without following redirects.
    pub async fn get(&self, url: &str) -> anyhow::Result<Collected> {
        self.send(http::Method::GET, url, None).await
    }

    /// GET `url` and follow redirects (at most 10); returns the last response and every URL
    /// visited, in order.
    pub async fn follow(&self, url: &str) -> anyhow::Result<(Collected, Vec<String>)> {
        let mut visited = vec![url.to_string()];
        let mut r = self.get(url).await?;
        for _ in 0..10 {
            if !r.status().is_redirection() {
                return Ok((r, visited));
            }
            let next = resolve(visited.last().map(String::as_str).unwrap_or(""), location(&r)?)?;
            visited.push(next.clone());
            r = self.get(&next).await?;
        }
        anyhow::bail!("too many redirects: {visited:?}")
    }
}

/// The `Location` of a redirect.
pub fn location(r: &Collected) -> anyhow::Result<&str> {
    Ok(r.headers()
        .get(http::header::LOCATION)
        .context("redirect without Location")?
        .to_str()?)
}

/// `location` resolved against `base` (absolute URLs, and absolute paths).
pub fn resolve(base: &str, location: &str) -> anyhow::Result<String> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return Ok(location.to_string());
    }
    let b: http::Uri = base.parse()?;
    anyhow::ensure!(location.starts_with('/'), "relative location {location:?}");
    Ok(format!(
        "{}://{}{location}",
        b.scheme_str().unwrap_or("http"),
        b.authority().context("base has an authority")?
    ))
}

/// The query parameters of a URL.
pub fn query(url: &str) -> std::collections::HashMap<String, String> {
    let q = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

/// The real OpenID provider (`tests/oidc/provider.mjs`, oidc-provider from npm, installed by
/// `scripts/test.sh`) as a child process on 127.0.0.1; killed on drop.
pub struct OidcProvider {
    /// Its port.
    pub port: u16,
    _child: tokio::process::Child,
}

impl OidcProvider {
    /// Starts it on `port` with the given environment (see the script's header) and waits
    /// until it listens.
    pub async fn start(port: u16, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        use tokio::io::AsyncBufReadExt;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("oidc");
        anyhow::ensure!(
            dir.join("node_modules").exists(),
            "run `npm ci --prefix tests/oidc` (scripts/test.sh does)"
        );
        let mut child = tokio::process::Command::new("node")
            .arg(dir.join("provider.mjs"))
            .env("PORT", port.to_string())
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let mut lines = tokio::io::BufReader::new(child.stdout.take().context("stdout")?).lines();
        let ready = tokio::time::timeout(patience(), async {
            while let Some(l) = lines.next_line().await? {
                if l.contains("ready") {
                    return Ok(());
                }
            }
            anyhow::bail!("the provider exited before it was ready")
        });
        ready.await??;
        // Keep reading: the provider writes notices to stdout, and a closed pipe would kill it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self { port, _child: child })
    }

    /// Its issuer URL.
    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// An access token for client `svc` from the client-credentials grant.
    pub async fn token(&self) -> anyhow::Result<String> {
        self.token_for("svc", "svc-secret").await
    }

    /// An access token for client `id` (e.g. `user-7` when started with `USERS`).
    pub async fn token_for(&self, id: &str, secret: &str) -> anyhow::Result<String> {
        use base64::Engine as _;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
        let req = Request::post("/token")
            .header("host", format!("127.0.0.1:{}", self.port))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("authorization", format!("Basic {basic}"))
            .body(Full::new(Bytes::from_static(
                b"grant_type=client_credentials&scope=read&resource=https%3A%2F%2Fapi.test",
            )))?;
        let r = send(format!("127.0.0.1:{}", self.port).parse()?, req).await?;
        anyhow::ensure!(r.status() == 200, "token endpoint: {} {:?}", r.status(), r.body());
        Ok(json(&r)["access_token"].as_str().unwrap_or_default().to_string())
    }
}

/// An OTLP trace receiver for the tests, on the official protobuf definitions
/// (`opentelemetry-proto`): its generated gRPC service served over HTTP/2, and HTTP/protobuf at
/// `POST /v1/traces`, both on 127.0.0.1. (No OpenTelemetry Collector can be installed here.)
pub struct OtlpReceiver {
    /// The gRPC endpoint.
    pub grpc: SocketAddr,
    /// The HTTP endpoint.
    pub http: SocketAddr,
    rx: tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<(&'static str, TraceRequest)>>,
    stop: tokio_util::sync::CancellationToken,
}

/// What an exporter sent.
pub type TraceRequest = opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

/// One received span with its resource's attributes and the transport it came by.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// `grpc` or `http`.
    pub transport: &'static str,
    /// Resource attributes as text.
    pub resource: std::collections::HashMap<String, String>,
    /// The span.
    pub span: opentelemetry_proto::tonic::trace::v1::Span,
}

impl ReceivedSpan {
    /// A span attribute as text.
    pub fn attr(&self, key: &str) -> Option<String> {
        self.span
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| any_text(kv.value.as_ref()))
    }
}

fn any_text(v: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    match v?.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        Value::BoolValue(b) => Some(b.to_string()),
        Value::DoubleValue(d) => Some(d.to_string()),
        _ => None,
    }
}

#[derive(Clone)]
struct Collector(tokio::sync::mpsc::UnboundedSender<(&'static str, TraceRequest)>);

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<TraceRequest>,
    ) -> Result<
        tonic::Response<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse>,
        tonic::Status,
    > {
        let _ = self.0.send(("grpc", request.into_inner()));
        Ok(tonic::Response::new(Default::default()))
    }
}

impl OtlpReceiver {
    /// Starts both endpoints.
    pub async fn start() -> anyhow::Result<Self> {
        use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let stop = tokio_util::sync::CancellationToken::new();
        let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let (grpc, http) = (grpc_listener.local_addr()?, http_listener.local_addr()?);
        let service = TraceServiceServer::new(Collector(tx.clone()));
        let s = stop.clone();
        tokio::spawn(async move {
            loop {
                let (io, _) = tokio::select! {
                    r = grpc_listener.accept() => match r { Ok(c) => c, Err(_) => continue },
                    _ = s.cancelled() => return,
                };
                let svc = hyper_util::service::TowerToHyperService::new(service.clone());
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(io), svc)
                        .await;
                });
            }
        });
        let s = stop.clone();
        tokio::spawn(async move {
            loop {
                let (io, _) = tokio::select! {
                    r = http_listener.accept() => match r { Ok(c) => c, Err(_) => continue },
                    _ = s.cancelled() => return,
                };
                let tx = tx.clone();
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let tx = tx.clone();
                    async move {
                        use prost::Message;
                        let ok = req.method() == http::Method::POST
                            && req.uri().path() == "/v1/traces"
                            && req
                                .headers()
                                .get("content-type")
                                .is_some_and(|v| v == "application/x-protobuf");
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let status = match (ok, TraceRequest::decode(body)) {
                            (true, Ok(r)) => {
                                let _ = tx.send(("http", r));
                                200
                            }
                            _ => 400,
                        };
                        let answer =
                            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse::default();
                        Response::builder()
                            .status(status)
                            .header("content-type", "application/x-protobuf")
                            .body(Full::new(Bytes::from(answer.encode_to_vec())))
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(io), svc)
                        .await;
                });
            }
        });
        Ok(Self {
            grpc,
            http,
            rx: tokio::sync::Mutex::new(rx),
            stop,
        })
    }

    /// The spans received so far and until `want` have arrived (or patience runs out).
    pub async fn spans(&self, want: usize) -> Vec<ReceivedSpan> {
        self.spans_within(want, patience()).await
    }

    /// The spans received so far and until `want` have arrived or `wait` has passed.
    pub async fn spans_within(&self, want: usize, wait: Duration) -> Vec<ReceivedSpan> {
        let mut out = Vec::new();
        let mut rx = self.rx.lock().await;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            while let Ok((transport, req)) = rx.try_recv() {
                for rs in req.resource_spans {
                    let resource: std::collections::HashMap<String, String> = rs
                        .resource
                        .map(|r| {
                            r.attributes
                                .iter()
                                .filter_map(|kv| Some((kv.key.clone(), any_text(kv.value.as_ref())?)))
                                .collect()
                        })
                        .unwrap_or_default();
                    for ss in rs.scope_spans {
                        for span in ss.spans {
                            out.push(ReceivedSpan {
                                transport,
                                resource: resource.clone(),
                                span,
                            });
                        }
                    }
                }
            }
            if out.len() >= want || tokio::time::Instant::now() > deadline {
                return out;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
