//! What clients send cannot break the gateway: HTTP/2 with prior knowledge on the plain listener
//! is served, and garbage of every shape on both listeners is refused without affecting others.

use bytes::Bytes;
use gateway_tests::{json, request, send, TestGateway, TestPki, TlsConn, Upstream};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn gateway() -> anyhow::Result<(TestGateway, TestPki, Upstream)> {
    let pki = TestPki::new()?;
    let (cert, key) = pki.leaf("gw", &["localhost"])?;
    let up = Upstream::start("up", "127.0.0.1:0".parse()?).await?;
    let yaml = format!(
        "listeners:\n  - {{ name: http, address: \"127.0.0.1:0\" }}\n  - name: https\n    address: \"127.0.0.1:0\"\n    tls:\n      certificates: [{{ cert: \"{}\", key: \"{}\" }}]\n\
         admin: {{ address: \"127.0.0.1:0\" }}\nlimits: {{ header_timeout: 2s }}\n\
         routes: [{{ name: r, upstream: up }}]\nupstreams: [{{ name: up, endpoints: [\"http://{}\"] }}]\n",
        cert.display(),
        key.display(),
        up.addr()
    );
    Ok((TestGateway::start(&yaml).await?, pki, up))
}

#[tokio::test]
async fn h2_prior_knowledge_on_the_plain_listener() -> anyhow::Result<()> {
    let (gw, _pki, _up) = gateway().await?;
    let stream = tokio::net::TcpStream::connect(gw.addr("http")).await?;
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    for i in 0..3 {
        let req = http::Request::get(format!("http://h2c.test/stream/{i}")).body(Full::new(Bytes::new()))?;
        let resp = sender.send_request(req).await?;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let body: serde_json::Value = serde_json::from_slice(&resp.into_body().collect().await?.to_bytes())?;
        assert_eq!(body["path"], format!("/stream/{i}"));
        assert_eq!(body["headers"]["host"], "h2c.test");
    }
    let m = gw.metrics().await?;
    assert_eq!(
        gateway_tests::metric(&m, "gateway_requests_total", &[("route", "r"), ("status_class", "2xx")]),
        Some(3.0)
    );
    Ok(())
}

#[tokio::test]
async fn garbage_is_refused_and_others_are_served() -> anyhow::Result<()> {
    let (gw, pki, _up) = gateway().await?;
    let mut rng = fastrand::Rng::with_seed(42);
    let shapes: Vec<Vec<u8>> = vec![
        b"\r\n\r\n\r\n".to_vec(),
        b"GET\r\n\r\n".to_vec(),
        b"GET / HTTP/9.9\r\nHost: x\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello".to_vec(),
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n".to_vec(),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x07\x00\x00\x00\x00\x00garbage".to_vec(),
        [b"GET /".as_slice(), &vec![b'a'; 70_000], b" HTTP/1.1\r\n\r\n"].concat(),
    ];
    let mut inputs = shapes;
    for _ in 0..40 {
        let len = rng.usize(1..2048);
        inputs.push((0..len).map(|_| rng.u8(..)).collect());
    }
    for input in &inputs {
        // Plain listener: whatever comes back, the connection ends and nothing else is affected.
        let mut s = tokio::net::TcpStream::connect(gw.addr("http")).await?;
        let _ = s.write_all(input).await;
        let _ = s.shutdown().await;
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(gateway_tests::patience(), s.read_to_end(&mut sink)).await;
        if let Ok(text) = std::str::from_utf8(&sink) {
            assert!(
                !text.contains("500 Internal"),
                "no internal error for {:?}: {text}",
                &input[..input.len().min(40)]
            );
        }
        // TLS listener: garbage instead of a handshake.
        let mut s = tokio::net::TcpStream::connect(gw.addr("https")).await?;
        let _ = s.write_all(input).await;
        let _ = s.shutdown().await;
        let _ = tokio::time::timeout(gateway_tests::patience(), s.read_to_end(&mut sink)).await;
    }
    // Still serving, over both listeners.
    let r = send(gw.addr("http"), request("x", "/after")).await?;
    assert_eq!(json(&r)["path"], "/after");
    let cfg = pki.client_config(&[b"h2"], &[&rustls::version::TLS13]);
    let r = TlsConn::connect(gw.addr("https"), "localhost", cfg)
        .await?
        .send(request("localhost", "/after-tls"))
        .await?;
    assert_eq!(json(&r)["path"], "/after-tls");
    // Every garbage connection was closed (none left open).
    gateway_tests::assert_eventually!(
        gateway_tests::metric(&gw.metrics().await?, "gateway_connections_active", &[]) == Some(0.0),
        "no connection left behind"
    );
    Ok(())
}
