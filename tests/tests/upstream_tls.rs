//! HTTPS upstreams: the pool verifies the upstream's certificate against configured CA files
//! (and, unless turned off, the system roots), over HTTP/1.1 or HTTP/2 (ALPN); a pooled TLS
//! connection the upstream closed while it idled is not used again. The upstream
//! here is a second gateway with a TLS listener and a certificate from the test CA, in front of
//! the built-in upstream server.

use gateway_tests::{assert_eventually, json, metric, request, send, TestGateway, TestPki, Upstream};

/// The second gateway; `protocol` is what it speaks to the origin; `extra` is more of its
/// config (top-level keys).
async fn tls_upstream(pki: &TestPki, origin: &Upstream, protocol: &str, extra: &str) -> anyhow::Result<TestGateway> {
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
{extra}
"#,
        cert.display(),
        key.display(),
        origin.addr()
    );
    TestGateway::start(&yaml).await
}

/// The gateway under test, towards the second one over `protocol`; `extra` is more of the
/// pool's fields.
async fn front(upstream_port: u16, tls: &str, protocol: &str, extra: &str) -> anyhow::Result<TestGateway> {
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
    {extra}
"#
    );
    TestGateway::start(&yaml).await
}

#[tokio::test]
async fn https_upstream_with_configured_ca() -> anyhow::Result<()> {
    let pki = TestPki::new()?;
    let origin = Upstream::start("origin", "127.0.0.1:0".parse()?).await?;
    let up = tls_upstream(&pki, &origin, "http1", "").await?;
    let port = up.addr("https").port();
    let ca = pki.dir.path().join("ca.pem");
    let gw = front(
        port,
        &format!("{{ ca_files: [\"{}\"], system_roots: false }}", ca.display()),
        "http1",
        "",
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
    let up = tls_upstream(&pki, &origin, "http1", "").await?;
    let gw = front(up.addr("https").port(), "{ system_roots: true }", "http1", "").await?;
    let r = send(gw.addr("http"), request("app.test", "/")).await?;
    assert_eq!(r.status(), 502);
    assert_eq!(json(&r)["type"], "urn:gateway:problem:upstream-connect");
    Ok(())
}

#[tokio::test]
async fn https_upstream_over_h2_by_alpn() -> anyhow::Result<()> {
    let pki = TestPki::new()?;
    let origin = Upstream::start("origin", "127.0.0.1:0".parse()?).await?;
    let up = tls_upstream(&pki, &origin, "h2", "").await?;
    let ca = pki.dir.path().join("ca.pem");
    let gw = front(
        up.addr("https").port(),
        &format!("{{ ca_files: [\"{}\"], system_roots: false }}", ca.display()),
        "h2",
        "",
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

#[tokio::test]
async fn mutual_tls_towards_an_upstream_that_asks_for_a_client_certificate() -> anyhow::Result<()> {
    let pki = TestPki::new()?;
    let origin = Upstream::start("origin", "127.0.0.1:0".parse()?).await?;
    let ca = pki.dir.path().join("ca.pem").display().to_string();
    let (cert, key) = pki.leaf("upstream", &["localhost"])?;
    let (client_cert, client_key) = pki.leaf("front-client", &["front.internal"])?;
    let tls = |client_auth: &str| {
        format!(
            r#"{{ certificates: [{{ cert: "{}", key: "{}" }}], client_auth: {client_auth} }}"#,
            cert.display(),
            key.display()
        )
    };
    // The second gateway: one listener refuses handshakes without a client certificate, the
    // other lets them in, and its /devices route asks for one.
    let up = TestGateway::start(&format!(
        r#"
listeners:
  - {{ name: strict, address: 127.0.0.1:0, tls: {strict} }}
  - {{ name: lenient, address: 127.0.0.1:0, tls: {lenient} }}
admin: {{ address: 127.0.0.1:0 }}
routes:
  - {{ name: devices, upstream: origin, match: {{ path_prefix: /devices }}, auth: {{ client_certificate: true }} }}
  - {{ name: open, upstream: origin }}
upstreams: [{{ name: origin, endpoints: ["http://{origin}"] }}]
"#,
        strict = tls(&format!(r#"{{ ca_files: ["{ca}"] }}"#)),
        lenient = tls(&format!(r#"{{ ca_files: ["{ca}"], required: false }}"#)),
        origin = origin.addr()
    ))
    .await?;
    let (strict, lenient) = (up.addr("strict").port(), up.addr("lenient").port());
    let pool = |name: &str, port: u16, identity: &str| {
        format!(
            "  - {{ name: {name}, endpoints: [\"https://localhost:{port}\"], health: {{ consecutive_failures: 100 }}, \
             tls: {{ ca_files: [\"{ca}\"], system_roots: false{identity} }} }}\n"
        )
    };
    let identity = format!(
        r#", client_certificate: {{ cert: "{}", key: "{}" }}"#,
        client_cert.display(),
        client_key.display()
    );
    let yaml = format!(
        "listeners: [{{ name: http, address: \"127.0.0.1:0\" }}]\nadmin: {{ address: 127.0.0.1:0 }}\nroutes:\n\
         \x20 - {{ name: with, upstream: with, match: {{ host: with.test }} }}\n\
         \x20 - {{ name: without, upstream: without, match: {{ host: without.test }} }}\n\
         \x20 - {{ name: lenient, upstream: lenient, match: {{ host: lenient.test }} }}\n\
         upstreams:\n{}{}{}",
        pool("with", strict, &identity),
        pool("without", strict, ""),
        pool("lenient", lenient, ""),
    );
    let gw = TestGateway::start(&yaml).await?;
    let addr = gw.addr("http");

    // With its certificate, the front is let in, and the origin learns who connected.
    let r = send(addr, request("with.test", "/devices/7")).await?;
    assert_eq!(r.status(), 200, "{:?}", r.body());
    let xfcc = gateway_tests::echoed_header(&json(&r), "x-forwarded-client-cert");
    assert!(
        xfcc.starts_with("Hash=") && xfcc.ends_with(";DNS=front.internal"),
        "{xfcc}"
    );
    // Without one, the strict listener refuses the handshake: the front answers 502.
    let r = send(addr, request("without.test", "/devices/7")).await?;
    assert_eq!(r.status(), 502, "{:?}", r.body());
    // The lenient listener lets the connection in; the route that asks for a certificate
    // refuses its request, the others serve it, and a client's own header never gets through.
    let r = send(addr, request("lenient.test", "/devices/7")).await?;
    assert_eq!(r.status(), 403, "{:?}", r.body());
    assert_eq!(json(&r)["type"], "urn:gateway:problem:client-certificate-required");
    let mut forged = request("lenient.test", "/open");
    forged
        .headers_mut()
        .insert("x-forwarded-client-cert", http::HeaderValue::from_static("Hash=forged"));
    let r = send(addr, forged).await?;
    assert_eq!(r.status(), 200);
    assert!(
        json(&r)["headers"].get("x-forwarded-client-cert").is_none(),
        "{:?}",
        r.body()
    );

    let m = up.metrics().await?;
    let verified = |l: &str| metric(&m, "gateway_tls_client_certificates_total", &[("listener", l)]);
    assert_eq!(
        verified("strict"),
        Some(1.0),
        "one pooled connection with a certificate"
    );
    assert_eq!(verified("lenient"), Some(0.0));
    assert_eq!(
        metric(
            &m,
            "gateway_request_errors_total",
            &[("reason", "client_certificate_required")]
        ),
        Some(1.0)
    );
    Ok(())
}

#[tokio::test]
async fn a_tls_connection_the_upstream_closed_while_idle_is_not_used() -> anyhow::Result<()> {
    let pki = TestPki::new()?;
    let origin = Upstream::start("origin", "127.0.0.1:0".parse()?).await?;
    // The upstream closes keep-alive connections idle for half a second.
    let up = tls_upstream(&pki, &origin, "http1", "limits: { idle_timeout: 500ms }").await?;
    let ca = pki.dir.path().join("ca.pem");
    // One try per request: a pooled connection found broken would show as a 502.
    let gw = front(
        up.addr("https").port(),
        &format!("{{ ca_files: [\"{}\"], system_roots: false }}", ca.display()),
        "http1",
        "retry: { attempts: 1 }",
    )
    .await?;
    assert_eq!(send(gw.addr("http"), request("app.test", "/")).await?.status(), 200);
    let open = |m: &str| {
        metric(
            m,
            "gateway_connections_active",
            &[("listener", "https"), ("protocol", "http1")],
        )
    };
    assert_eq!(open(&up.metrics().await?), Some(1.0));
    assert_eventually!(
        open(&up.metrics().await?) == Some(0.0),
        "the upstream closes the idle connection"
    );
    // Found closed before it is used: a new connection, and no failed try (one try only here).
    let r = send(gw.addr("http"), request("app.test", "/")).await?;
    assert_eq!(r.status(), 200, "{:?}", r.body());
    let m = gw.metrics().await?;
    assert_eq!(
        metric(&m, "gateway_upstream_connections_opened_total", &[("pool", "secure")]),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &m,
            "gateway_upstream_errors_total",
            &[("pool", "secure"), ("kind", "protocol")]
        ),
        Some(0.0)
    );
    Ok(())
}
