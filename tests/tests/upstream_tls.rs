//! HTTPS upstreams: the pool verifies the upstream's certificate against configured CA files
//! (and, unless turned off, the system roots). The upstream here is a second gateway with a TLS
//! listener and a certificate from the test CA, in front of the built-in upstream server.

use gateway_tests::{json, request, send, TestGateway, TestPki, Upstream};

async fn tls_upstream(pki: &TestPki, origin: &Upstream) -> anyhow::Result<TestGateway> {
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
upstreams: [{{ name: origin, endpoints: ["http://{}"] }}]
"#,
        cert.display(),
        key.display(),
        origin.addr()
    );
    TestGateway::start(&yaml).await
}

async fn front(upstream_port: u16, tls: &str) -> anyhow::Result<TestGateway> {
    let yaml = format!(
        r#"
listeners: [{{ name: http, address: "127.0.0.1:0" }}]
admin: {{ address: 127.0.0.1:0 }}
routes: [{{ name: r, upstream: secure }}]
upstreams:
  - name: secure
    endpoints: ["https://localhost:{upstream_port}"]
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
    let up = tls_upstream(&pki, &origin).await?;
    let port = up.addr("https").port();
    let ca = pki.dir.path().join("ca.pem");
    let gw = front(
        port,
        &format!("{{ ca_files: [\"{}\"], system_roots: false }}", ca.display()),
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
    let up = tls_upstream(&pki, &origin).await?;
    let gw = front(up.addr("https").port(), "{ system_roots: true }").await?;
    let r = send(gw.addr("http"), request("app.test", "/")).await?;
    assert_eq!(r.status(), 502);
    assert_eq!(json(&r)["type"], "urn:gateway:problem:upstream-connect");
    Ok(())
}
