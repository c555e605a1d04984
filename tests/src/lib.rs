//! End-to-end harness: starts the gateway (in-process through its library, or the real binary)
//! on 127.0.0.1 with certificates made at run time, the built-in upstream server, and clients
//! for HTTP/1.1 and HTTP/2 over plain TCP and TLS.
//!
//! Waiting is done with [`assert_eventually!`], whose patience comes from
//! `GATEWAY_TEST_PATIENCE_MS` (default 10 s); no test sleeps to let something happen.

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

    /// The current `/metrics` text.
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
    let stream = TcpStream::connect(addr).await?;
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

/// A free TCP port on 127.0.0.1 (for processes that take fixed ports).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
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

/// A TLS 1.3 client that accepts any server certificate (to inspect what is served, and for
/// the demo's self-signed certificate).
pub fn insecure_client() -> std::sync::Arc<rustls::ClientConfig> {
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
        .with_custom_certificate_verifier(std::sync::Arc::new(AcceptAny))
        .with_no_client_auth();
    std::sync::Arc::new(cfg)
}
