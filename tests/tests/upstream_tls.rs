//! HTTPS upstreams: the pool verifies the upstream's certificate against configured CA files
//! (and, unless turned off, the system roots), over HTTP/1.1 or HTTP/2 (ALPN). The upstream
//! here is a second gateway with a TLS listener and a certificate from the test CA, in front of
//! the built-in upstream server.

use gateway_tests::{json, metric, request, send, TestGateway, TestPki, Upstream};

/// The second gateway; `protocol` is what it speaks to the origin.
async fn tls_upstream(pki: &TestPki, origin: &Upstream, protocol: &str) -> anyhow::Result<TestGateway> {
    let (cert, key) = pki.leaf("upstream", &["localhost"])?;
    let yaml = format!(
        r#"
listeners:
  - name: https
    address: 127.0.0.1:0
    tls:
      certificates: [{{ cert: "{}", key: "{}" }}]
admin: {{ address: 127.0.0.1:0 }}
routes: [{{ name: origin, upstream: origin }}]
upstreams: [{{ name: origin, endpoints: ["http://{}"], protocol: {protocol} }}]
"#,
        cert.display(),
        key.display(),
        origin.addr()
    );
    TestGateway::start(&yaml).await
}

/// The gateway under test, towards the second one over `protocol`.
async fn front(upstream_port: u16, tls: &str, protocol: &str) -> anyhow::Result<TestGateway> {
    let yaml = format!(
        r#"
listeners: [{{ name: http, address: "127.0.0.1:0" }}]
admin: {{ address: 127.0.0.1:0 }}
routes: [{{ name: r, upstream: secure }}]
upstreams:
  - name: secure
    endpoints: ["https://localhost:{upstream_port}"]
    protocol: {protocol}
    health: {{ consecutive_failures: 100 }}
    tls: {tls}
"#
    );
    TestGateway::start(&yaml).await
}

#[tokio::test]
async fn https_upstream_with_configured_ca() -> anyhow::Result<()> {
    let pki = TestPki::new()?;
    let origin = Upstream::start("origin", "127.0.0.1:0".parse()?).await?;
    let up = tls_upstream(&pki, &origin, "http1").await?;
    let port = up.addr("https").port();
    let ca = pki.dir.path().join("ca.pem");
    let gw = front(
        port,
        &format!("{{ ca_files: [\"{}\"], system_roots: false }}", ca.display()),
        "http1",
    )
    .await?;
    let r = send(gw.addr("http"), request("app.test", "/through")).await?;
    assert_eq!(r.status(), 200, "{:?}", r.body());
    let body = json(&r);
    assert_eq!(body["upstream"], "origin");
    assert_eq!(body["path"], "/through");
    // The TLS hop is visible in the forwarding chain the origin sees.
    assert_eq!(body["headers"]["x-forwarded-proto"], "https");
    Ok(())
}

#[tokio::test]
async fn https_upstream_with_an_untrusted_certificate_is_502() -> anyhow::Result<()> {
    let pki = TestPki::new()?;
    let origin = Upstream::start("origin", "127.0.0.1:0".parse()?).await?;
    let up = tls_upstream(&pki, &origin, "http1").await?;
    let gw = front(up.addr("https").port(), "{ system_roots: true }", "http1").await?;
    let r = send(gw.addr("http"), request("app.test", "/")).await?;
    assert_eq!(r.status(), 502);
    assert_eq!(json(&r)["type"], "urn:gateway:problem:upstream-connect");
    Ok(())
}

#[tokio::test]
async fn https_upstream_over_h2_by_alpn() -> anyhow::Result<()> {
    let pki = TestPki::new()?;
    let origin = Upstream::start("origin", "127.0.0.1:0".parse()?).await?;
    let up = tls_upstream(&pki, &origin, "h2").await?;
    let ca = pki.dir.path().join("ca.pem");
    let gw = front(
        up.addr("https").port(),
        &format!("{{ ca_files: [\"{}\"], system_roots: false }}", ca.display()),
        "h2",
    )
    .await?;
    let r = send(gw.addr("http"), request("app.test", "/through")).await?;
    assert_eq!(r.status(), 200, "{:?}", r.body());
    let body = json(&r);
    assert_eq!(body["path"], "/through");
    assert_eq!(body["version"], "HTTP/2.0", "h2c from the second gateway to the origin");
    // The hop between the gateways is HTTP/2 (ALPN), on one connection the front keeps open.
    let m = up.metrics().await?;
    assert_eq!(
        metric(
            &m,
            "gateway_connections_active",
            &[("listener", "https"), ("protocol", "h2")]
        ),
        Some(1.0)
    );
    Ok(())
}
