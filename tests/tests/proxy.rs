//! Proxy semantics: hop-by-hop removal, forwarding headers with and without a trusted proxy,
//! request id round trip, WebSocket upgrade pass-through, large streamed bodies both ways.

use bytes::Bytes;
use gateway_tests::{json, request, send, ChannelBody, TestGateway, Upstream};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn gateway(trusted: &str, up: &Upstream) -> anyhow::Result<TestGateway> {
    let yaml = format!(
        r#"
listeners: [{{ name: http, address: "127.0.0.1:0" }}]
admin: {{ address: "127.0.0.1:0" }}
trusted_proxies: [{trusted}]
limits: {{ max_body_bytes: 2147483648 }}
routes: [{{ name: r, upstream: up }}]
upstreams:
  - {{ name: up, endpoints: [http://{}], request_timeout: 60s }}
"#,
        up.addr()
    );
    TestGateway::start(&yaml).await
}

#[tokio::test]
async fn hop_by_hop_fields_are_removed_both_ways() -> anyhow::Result<()> {
    let up = Upstream::start("up", "127.0.0.1:0".parse()?).await?;
    let gw = gateway("", &up).await?;
    let req = http::Request::get("/")
        .header("host", "x")
        .header("connection", "keep-alive, x-private")
        .header("x-private", "secret")
        .header("keep-alive", "timeout=5")
        .header("te", "trailers")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("x-end-to-end", "kept")
        .body(Full::new(Bytes::new()))?;
    let r = send(gw.addr("http"), req).await?;
    let h = &json(&r)["headers"];
    for gone in ["connection", "x-private", "keep-alive", "te", "proxy-authorization"] {
        assert!(h.get(gone).is_none(), "{gone} must not reach the upstream: {h}");
    }
    assert_eq!(h["x-end-to-end"], "kept");
    assert!(r.headers().get("keep-alive").is_none());
    Ok(())
}

#[tokio::test]
async fn forwarding_headers_untrusted_peer() -> anyhow::Result<()> {
    let up = Upstream::start("up", "127.0.0.1:0".parse()?).await?;
    let gw = gateway("10.0.0.0/8", &up).await?;
    let req = http::Request::get("/")
        .header("host", "shop.test:8080")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "evil.test")
        .header("forwarded", "for=6.6.6.6")
        .header("x-request-id", "client-chosen")
        .body(Full::new(Bytes::new()))?;
    let r = send(gw.addr("http"), req).await?;
    let h = &json(&r)["headers"];
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "shop.test:8080");
    assert_eq!(h["forwarded"], "for=127.0.0.1;proto=http;host=\"shop.test:8080\"");
    let rid = r.headers()["x-request-id"].to_str()?;
    assert_ne!(rid, "client-chosen", "an untrusted client cannot choose the request id");
    assert_eq!(h["x-request-id"], rid, "the upstream sees the id the client gets back");
    Ok(())
}

#[tokio::test]
async fn routes_rewrite_the_prefix_and_change_headers() -> anyhow::Result<()> {
    let up = Upstream::start("up", "127.0.0.1:0".parse()?).await?;
    let yaml = format!(
        r#"
listeners: [{{ name: http, address: "127.0.0.1:0" }}]
admin: {{ address: "127.0.0.1:0" }}
routes:
  - name: api
    upstream: up
    match: {{ path_prefix: /api }}
    max_body_bytes: 10
    rewrite_prefix: /v2
    request_headers: {{ set: {{ x-env: prod, Host: internal.test }}, remove: [x-debug, Authorization] }}
    response_headers: {{ set: {{ strict-transport-security: "max-age=31536000" }}, remove: [x-upstream] }}
  - {{ name: shop, upstream: up, match: {{ path_prefix: /shop/ }}, rewrite_prefix: / }}
  - {{ name: rest, upstream: up }}
upstreams: [{{ name: up, endpoints: ["http://{}"] }}]
"#,
        up.addr()
    );
    let gw = TestGateway::start(&yaml).await?;
    let addr = gw.addr("http");
    let req = |path: &str| {
        http::Request::get(path)
            .header("host", "shop.test")
            .header("x-debug", "1")
            .header("authorization", "Basic YTpi")
            .header("x-keep", "yes")
            .header("x-forwarded-prefix", "/not-yours")
            .body(Full::new(Bytes::new()))
    };

    let r = send(addr, req("/api/users?page=2")?).await?;
    assert_eq!(r.status(), 200);
    let j = json(&r);
    assert_eq!(j["path"], "/v2/users", "the matched prefix is replaced");
    assert_eq!(j["query"], "page=2", "the query stays");
    let h = &j["headers"];
    assert_eq!(h["x-env"], "prod");
    assert_eq!(h["host"], "internal.test");
    assert_eq!(
        h["x-forwarded-host"], "shop.test",
        "the client's host is still forwarded"
    );
    assert!(h.get("x-debug").is_none() && h.get("authorization").is_none(), "{h}");
    assert_eq!(h["x-keep"], "yes");
    assert_eq!(r.headers()["strict-transport-security"], "max-age=31536000");
    assert!(!r.headers().contains_key("x-upstream"));
    assert_eq!(json(&send(addr, req("/api")?).await?)["path"], "/v2");
    assert!(
        h.get("x-forwarded-prefix").is_none(),
        "a replaced prefix is not announced, and a client's own value is dropped: {h}"
    );

    // A stripped prefix is announced to the upstream, so it can write links the client follows.
    let j = json(&send(addr, req("/shop/cart?x=1")?).await?);
    assert_eq!(j["path"], "/cart");
    assert_eq!(j["headers"]["x-forwarded-prefix"], "/shop");

    // The route's own answers carry its response headers too.
    let big = http::Request::post("/api/echo")
        .header("host", "shop.test")
        .body(Full::new(Bytes::from(vec![b'x'; 100])))?;
    let r = send(addr, big).await?;
    assert_eq!(r.status(), 413);
    assert_eq!(r.headers()["strict-transport-security"], "max-age=31536000");

    // Other routes are untouched.
    let r = send(addr, req("/apiary")?).await?;
    let j = json(&r);
    assert_eq!(j["path"], "/apiary", "a prefix matches whole segments only");
    assert_eq!(j["headers"]["x-debug"], "1");
    assert_eq!(j["headers"]["host"], "shop.test");
    assert!(!r.headers().contains_key("strict-transport-security"));
    assert_eq!(r.headers()["x-upstream"], "up");
    Ok(())
}

#[tokio::test]
async fn forwarding_headers_trusted_proxy() -> anyhow::Result<()> {
    let up = Upstream::start("up", "127.0.0.1:0".parse()?).await?;
    let gw = gateway("127.0.0.1/32", &up).await?;
    let req = http::Request::get("/")
        .header("host", "shop.test")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "www.shop.test")
        .header("forwarded", "for=203.0.113.9;proto=https")
        .header("x-request-id", "lb-1234")
        .header("x-forwarded-prefix", "/outer")
        .body(Full::new(Bytes::new()))?;
    let r = send(gw.addr("http"), req).await?;
    let h = &json(&r)["headers"];
    assert_eq!(h["x-forwarded-prefix"], "/outer", "a trusted proxy's prefix passes on");
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-forwarded-host"], "www.shop.test");
    assert_eq!(
        h["forwarded"],
        "for=203.0.113.9;proto=https, for=127.0.0.1;proto=http;host=\"shop.test\""
    );
    assert_eq!(h["x-request-id"], "lb-1234");
    assert_eq!(r.headers()["x-request-id"], "lb-1234");
    Ok(())
}

#[tokio::test]
async fn websocket_upgrade_echo() -> anyhow::Result<()> {
    let up = Upstream::start("up", "127.0.0.1:0".parse()?).await?;
    let gw = gateway("", &up).await?;
    let mut s = tokio::net::TcpStream::connect(gw.addr("http")).await?;
    s.write_all(
        b"GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await?;
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    // Bytes now flow both ways through the gateway (a masked WebSocket text frame "hi").
    let frame = [0x81u8, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2];
    for _ in 0..3 {
        s.write_all(&frame).await?;
        let mut back = [0u8; 8];
        s.read_exact(&mut back).await?;
        assert_eq!(back, frame);
    }
    Ok(())
}

#[tokio::test]
async fn large_bodies_stream_both_ways() -> anyhow::Result<()> {
    const SIZE: u64 = 256 * 1024 * 1024;
    let up = Upstream::start("up", "127.0.0.1:0".parse()?).await?;
    let gw = gateway("", &up).await?;
    // Download: counted as it arrives, never held whole.
    let stream = tokio::net::TcpStream::connect(gw.addr("http")).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let resp = sender.send_request(request("x", &format!("/bytes/{SIZE}"))).await?;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = 0u64;
    while let Some(f) = body.frame().await {
        got += f?.data_ref().map(|d| d.len() as u64).unwrap_or(0);
    }
    assert_eq!(got, SIZE);
    // Upload: fed in chunks, the upstream counts what arrives.
    let (tx, body) = ChannelBody::new(8);
    let stream = tokio::net::TcpStream::connect(gw.addr("http")).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = http::Request::post("/drain").header("host", "x").body(body)?;
    let pending = tokio::spawn(async move { sender.send_request(req).await });
    let chunk = Bytes::from(vec![b'u'; 1 << 20]);
    for _ in 0..(SIZE >> 20) {
        tx.send(chunk.clone()).await?;
    }
    drop(tx);
    let resp = pending.await??;
    assert_eq!(resp.status(), 200);
    let bytes = resp.into_body().collect().await?.to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&bytes)?;
    assert_eq!(v["received"], SIZE);
    Ok(())
}

#[tokio::test]
async fn plain_listener_redirects_to_https() -> anyhow::Result<()> {
    let up = Upstream::start("up", "127.0.0.1:0".parse()?).await?;
    let yaml = format!(
        r#"
listeners:
  - {{ name: http, address: "127.0.0.1:0", redirect_to_https: 8443 }}
  - {{ name: edge, address: "127.0.0.1:0", redirect_to_https: 443 }}
admin: {{ address: "127.0.0.1:0" }}
trusted_proxies: [127.0.0.1]
routes: [{{ name: r, upstream: up }}]
upstreams: [{{ name: up, endpoints: ["http://{}"] }}]
"#,
        up.addr()
    );
    let gw = TestGateway::start(&yaml).await?;
    // Method, path and query are kept (308), the host loses its port and case.
    let req = http::Request::post("/a/b?c=1")
        .header("host", "Shop.Test:8080")
        .body(Full::new(Bytes::from_static(b"form")))?;
    let r = send(gw.addr("http"), req).await?;
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], "https://shop.test:8443/a/b?c=1");
    let r = send(gw.addr("edge"), request("x.test", "/")).await?;
    assert_eq!(r.headers()["location"], "https://x.test/", "443 is left out");
    // Behind a trusted proxy that took HTTPS, the request is served.
    let req = http::Request::get("/")
        .header("host", "x.test")
        .header("x-forwarded-proto", "https")
        .body(Full::new(Bytes::new()))?;
    let r = send(gw.addr("http"), req).await?;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-upstream"], "up");
    // Without a host there is nowhere to send the client.
    let mut s = tokio::net::TcpStream::connect(gw.addr("http")).await?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await?;
    assert!(
        answer.starts_with(b"HTTP/1.0 400"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    let m = gw.metrics().await?;
    let redirects = |l| gateway_tests::metric(&m, "gateway_https_redirects_total", &[("listener", l)]);
    assert_eq!(redirects("http"), Some(1.0));
    assert_eq!(redirects("edge"), Some(1.0));

    Ok(())
}
