//! HTTP/2 upstreams (`protocol: h2`) with prior knowledge to `http://` endpoints: one
//! multiplexed connection per endpoint, and gRPC-style exchanges (request `TE: trailers` passed
//! on, response trailers passed back). The origin is the built-in upstream server, which speaks
//! HTTP/2 with prior knowledge on its port. HTTP/2 to `https://` endpoints (ALPN) is in
//! `upstream_tls.rs`.

use bytes::Bytes;
use gateway_tests::{json, metric, request, send, TestGateway, TestPki, TlsConn, Upstream};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// One request over HTTP/2 on a new TLS connection; the body and the trailers.
async fn h2_exchange(
    conn: TlsConn,
    req: http::Request<Full<Bytes>>,
) -> anyhow::Result<(http::response::Parts, Bytes, Option<http::HeaderMap>)> {
    assert_eq!(conn.alpn().as_deref(), Some(&b"h2"[..]));
    let (mut sender, driver) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(conn.stream)).await?;
    tokio::spawn(driver);
    let (parts, body) = sender.send_request(req).await?.into_parts();
    let collected = body.collect().await?;
    let trailers = collected.trailers().cloned();
    Ok((parts, collected.to_bytes(), trailers))
}

#[tokio::test]
async fn grpc_style_exchange_over_h2c() -> anyhow::Result<()> {
    let pki = TestPki::new()?;
    let (cert, key) = pki.leaf("gw", &["api.test"])?;
    let origin = Upstream::start("origin", "127.0.0.1:0".parse()?).await?;
    let yaml = format!(
        r#"
listeners:
  - {{ name: http, address: "127.0.0.1:0" }}
  - name: https
    address: "127.0.0.1:0"
    tls: {{ certificates: [{{ cert: "{}", key: "{}" }}] }}
admin: {{ address: "127.0.0.1:0" }}
routes: [{{ name: grpc, upstream: origin }}]
upstreams: [{{ name: origin, endpoints: ["http://{}"], protocol: h2 }}]
"#,
        cert.display(),
        key.display(),
        origin.addr()
    );
    let gw = TestGateway::start(&yaml).await?;
    let client = pki.client_config(&[b"h2"], &[&rustls::version::TLS13]);

    // A unary call: the body goes up, the answer and its trailers come back.
    let req = http::Request::post("https://api.test/trailers/pkg.Service/Method")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\x05hello")))?;
    let conn = TlsConn::connect(gw.addr("https"), "api.test", client.clone()).await?;
    let (parts, body, trailers) = h2_exchange(conn, req).await?;
    assert_eq!(parts.status, 200);
    assert_eq!(parts.headers["x-upstream"], "origin");
    assert_eq!(&body[..], b"\0\0\0\0\x05hello");
    let trailers = trailers.expect("trailers reach the client");
    assert_eq!(trailers["grpc-status"], "0");

    // What the origin saw: HTTP/2, `te: trailers`, the client's authority, the forwarding headers.
    let req = http::Request::get("https://api.test/seen")
        .header("te", "trailers")
        .body(Full::new(Bytes::new()))?;
    let conn = TlsConn::connect(gw.addr("https"), "api.test", client.clone()).await?;
    let (_, body, _) = h2_exchange(conn, req).await?;
    let seen: serde_json::Value = serde_json::from_slice(&body)?;
    assert_eq!(seen["version"], "HTTP/2.0");
    assert_eq!(seen["path"], "/seen");
    assert_eq!(seen["headers"]["te"], "trailers");
    assert_eq!(seen["headers"]["x-forwarded-host"], "api.test");
    assert_eq!(seen["headers"]["x-forwarded-proto"], "https");

    // An HTTP/1.1 client goes up over HTTP/2 too; without `TE: trailers` none is invented.
    let r = send(gw.addr("http"), request("plain.test", "/x?q=1")).await?;
    assert_eq!(r.status(), 200);
    let seen = json(&r);
    assert_eq!(seen["version"], "HTTP/2.0");
    assert_eq!(seen["query"], "q=1");
    assert!(seen["headers"].get("te").is_none(), "{seen}");

    // Many requests at once share one connection.
    let mut calls = Vec::new();
    for i in 0..20 {
        let addr = gw.addr("http");
        calls.push(tokio::spawn(async move {
            send(addr, request("plain.test", &format!("/delay/{}", 50 + i))).await
        }));
    }
    for c in calls {
        assert_eq!(c.await??.status(), 200);
    }
    let m = gw.metrics().await?;
    assert_eq!(
        metric(&m, "gateway_upstream_connections_opened_total", &[("pool", "origin")]),
        Some(1.0),
        "one multiplexed connection"
    );
    Ok(())
}

#[tokio::test]
async fn h2_pools_send_a_listed_status_again_to_the_other_endpoint() -> anyhow::Result<()> {
    // hyper's HTTP/2 client keeps the requests it sends, so these are sent again from a copy
    // of their head.
    let a = Upstream::start("a", "127.0.0.1:0".parse()?).await?;
    let b = Upstream::start("b", "127.0.0.1:0".parse()?).await?;
    let gw = TestGateway::plain(&format!(
        "routes: [{{ name: r, upstream: u }}]\nupstreams: [{{ name: u, endpoints: [\"http://{}\", \"http://{}\"], protocol: h2, retry: {{ attempts: 2, statuses: [503] }} }}]\n",
        a.addr(),
        b.addr()
    ))
    .await?;
    let mut last = Vec::new();
    for _ in 0..2 {
        let r = send(gw.addr("http"), request("h2.test", "/status/503")).await?;
        assert_eq!(r.status(), 503, "the last answer passes as it is");
        let seen = json(&r);
        assert_eq!(seen["status"], 503);
        last.push(seen["upstream"].as_str().unwrap_or_default().to_string());
    }
    last.sort();
    assert_eq!(
        last,
        ["a", "b"],
        "each request went again to the endpoint it had not tried"
    );
    let m = gw.metrics().await?;
    assert_eq!(
        metric(
            &m,
            "gateway_upstream_retries_total",
            &[("pool", "u"), ("reason", "status")]
        ),
        Some(2.0)
    );
    Ok(())
}
