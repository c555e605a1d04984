//! `gateway demo` starts with nothing else installed, serves through the proxy over HTTPS and
//! HTTP, prints how to use it (with a ready bearer token from its own issuer), and `/metrics`
//! shows the requests.

use bytes::Bytes;
use gateway_tests::{assert_eventually, get, json, metric, send, Process, TlsConn};
use http_body_util::Full;
use tokio::io::AsyncBufReadExt;

#[tokio::test]
async fn demo_serves_and_counts() -> anyhow::Result<()> {
    let (https, http, admin) = (
        gateway_tests::free_port(),
        gateway_tests::free_port(),
        gateway_tests::free_port(),
    );
    let args = [
        "demo".to_string(),
        "--https-port".into(),
        https.to_string(),
        "--http-port".into(),
        http.to_string(),
        "--admin-port".into(),
        admin.to_string(),
    ];
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
    let mut p = Process::spawn_with(&gateway_tests::gateway_bin!(), &args)?;
    assert_eventually!(
        get(&format!("http://127.0.0.1:{admin}/readyz"))
            .await
            .map(|r| r.status() == 200)
            .unwrap_or(false),
        "demo ready"
    );
    // The banner, read while the demo runs: URLs, curl lines and a ready token.
    let mut lines = tokio::io::BufReader::new(p.stdout().expect("stdout")).lines();
    let mut out = String::new();
    let token = loop {
        let line = tokio::time::timeout(gateway_tests::patience(), lines.next_line())
            .await??
            .unwrap_or_default();
        out.push_str(&line);
        out.push('\n');
        if let Some(t) = line.trim().strip_prefix("TOKEN=") {
            break t.to_string();
        }
    };
    assert!(out.contains(&format!("https://localhost:{https}/")), "{out}");
    assert!(out.contains("curl"), "the demo prints what to try: {out}");

    let r = get(&format!("http://127.0.0.1:{http}/hello")).await?;
    assert_eq!(r.status(), 200);
    assert_eq!(json(&r)["upstream"], "demo-upstream");

    // HTTPS with the certificate the demo made at start (self-signed, so not verified here).
    let conn = TlsConn::connect(
        format!("127.0.0.1:{https}").parse()?,
        "localhost",
        gateway_tests::insecure_client(),
    )
    .await?;
    assert_eq!(conn.version(), Some(rustls::ProtocolVersion::TLSv1_3));
    let r = conn.send(gateway_tests::request("localhost", "/over-tls")).await?;
    assert_eq!(r.status(), 200);
    assert_eq!(json(&r)["headers"]["x-forwarded-proto"], "https");

    let r = get(&format!("http://127.0.0.1:{http}/broken")).await?;
    assert_eq!(r.status(), 502);

    // The bearer lines the banner prints: no token, allowed, missing scope, step-up.
    let addr: std::net::SocketAddr = format!("127.0.0.1:{http}").parse()?;
    let api = |path: &str, with_token: bool| {
        let mut b = http::Request::get(path).header("host", format!("127.0.0.1:{http}"));
        if with_token {
            b = b.header("authorization", format!("Bearer {token}"));
        }
        b.body(Full::new(Bytes::new())).expect("request")
    };
    assert_eventually!(
        send(addr, api("/api/orders", true)).await?.status() == 200,
        "the demo issuer's token is accepted"
    );
    let r = send(addr, api("/api/orders", true)).await?;
    assert_eq!(json(&r)["headers"]["x-auth-subject"], "alice");
    assert_eq!(send(addr, api("/api/orders", false)).await?.status(), 401);
    assert_eq!(send(addr, api("/api/admin", true)).await?.status(), 403);
    let r = send(addr, api("/api/payments", true)).await?;
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()?
        .contains("insufficient_user_authentication"));

    let m = String::from_utf8_lossy(get(&format!("http://127.0.0.1:{admin}/metrics")).await?.body()).to_string();
    assert_eq!(
        metric(
            &m,
            "gateway_requests_total",
            &[("route", "demo"), ("status_class", "2xx")]
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &m,
            "gateway_requests_total",
            &[("route", "broken"), ("status_class", "5xx")]
        ),
        Some(1.0)
    );

    p.signal("INT")?;
    assert_eq!(p.wait_exit().await?, Some(0));
    Ok(())
}
