//! `gateway demo` starts with nothing else installed, serves through the proxy over HTTPS and
//! HTTP, prints how to use it, and `/metrics` shows the request.

use gateway_tests::{assert_eventually, get, metric, Process, TlsConn};
use tokio::io::AsyncReadExt;

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

    let r = get(&format!("http://127.0.0.1:{http}/hello")).await?;
    assert_eq!(r.status(), 200);
    assert_eq!(gateway_tests::json(&r)["upstream"], "demo-upstream");

    // HTTPS with the certificate the demo made at start (self-signed, so not verified here).
    let conn = TlsConn::connect(format!("127.0.0.1:{https}").parse()?, "localhost", insecure()).await?;
    assert_eq!(conn.version(), Some(rustls::ProtocolVersion::TLSv1_3));
    let r = conn.send(gateway_tests::request("localhost", "/over-tls")).await?;
    assert_eq!(r.status(), 200);
    assert_eq!(gateway_tests::json(&r)["headers"]["x-forwarded-proto"], "https");

    let r = get(&format!("http://127.0.0.1:{http}/broken")).await?;
    assert_eq!(r.status(), 502);

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
    let mut out = String::new();
    if let Some(mut stdout) = p.stdout() {
        stdout.read_to_string(&mut out).await?;
    }
    assert!(out.contains(&format!("https://localhost:{https}/")), "{out}");
    assert!(out.contains("curl"), "the demo prints what to try: {out}");
    Ok(())
}

fn insecure() -> std::sync::Arc<rustls::ClientConfig> {
    gateway_tests::insecure_client()
}
