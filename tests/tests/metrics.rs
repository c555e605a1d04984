//! `/metrics` and `docs/metrics.md` describe the same families (both directions), and
//! `promtool check metrics` (Prometheus, from Debian; installed by `scripts/test.sh`) finds the
//! real output clean.

use std::collections::BTreeSet;
use std::io::Write;

use gateway_tests::{get, request, send, TestGateway, Upstream};

fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn metrics_match_the_docs_and_pass_promtool() -> anyhow::Result<()> {
    let up = Upstream::start("up", "127.0.0.1:0".parse()?).await?;
    // An identity provider that never answers, and a route needing it, so its families exist.
    let idp = gateway_tests::free_port();
    // A TLS listener with QUIC, so the certificate and QUIC families exist; a listener that
    // redirects to HTTPS and a pool with active health checks, for theirs.
    let pki = gateway_tests::TestPki::new()?;
    let (cert, key) = pki.leaf("leaf", &["localhost"])?;
    let yaml = format!(
        "listeners: [{{ name: http, address: \"127.0.0.1:0\" }}, {{ name: https, address: \"127.0.0.1:0\", tls: {{ certificates: [{{ cert: \"{}\", key: \"{}\" }}] }}, quic: {{}} }}, {{ name: redirect, address: \"127.0.0.1:0\", redirect_to_https: 443 }}]\nadmin: {{ address: \"127.0.0.1:0\" }}\n\
         identity: {{ providers: [{{ name: idp, issuer: \"http://127.0.0.1:{idp}\", login: {{ client_id: c, client_secret: s }} }}] }}\n\
         routes:\n  - {{ name: r, upstream: up, match: {{ path_prefix: /ok }}, rate_limit: {{ rate: 1000/s }}, cors: {{ allow_origins: [\"*\"] }}, split: [{{ upstream: up2, percent: 1 }}], compress: {{}} }}\n  - {{ name: guarded, upstream: up, match: {{ path_prefix: /status }}, trust: {{}} }}\n  - {{ name: private, upstream: up, match: {{ path_prefix: /private }}, auth: {{ bearer: idp }} }}\n\
         upstreams: [{{ name: up, endpoints: [\"http://{up}\"], health: {{ check: {{ path: /ok, interval: 100ms }} }} }}, {{ name: up2, endpoints: [\"http://{up}\"] }}]\ntelemetry: {{ runtime_interval: 100ms }}\n\
         engine: {{ alerts: {{ webhooks: [\"http://127.0.0.1:9/hook\"] }} }}\n",
        cert.display(),
        key.display(),
        up = up.addr()
    );
    let gw = TestGateway::start(&yaml).await?;
    assert_eq!(send(gw.addr("http"), request("x", "/ok")).await?.status(), 200);
    assert_eq!(send(gw.addr("http"), request("x", "/missing")).await?.status(), 404);
    // A request with a body, for which the own HTTP/1.1 path hands its connection to hyper.
    let mut post = request("x", "/ok");
    *post.method_mut() = http::Method::POST;
    *post.body_mut() = http_body_util::Full::new(bytes::Bytes::from_static(b"x"));
    assert_eq!(send(gw.addr("http"), post).await?.status(), 200);
    assert_eq!(send(gw.addr("http"), request("x", "/private")).await?.status(), 401);
    // An enumeration of missing paths on a route with a trust policy ends in a deny, with its
    // reasons.
    let mut denied = false;
    for i in 0..40 {
        let status = send(gw.addr("http"), request("x", &format!("/status/404/probe-{i}")))
            .await?
            .status();
        if status == 403 {
            denied = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(denied, "the enumeration was never denied");
    // The engine's series appear with its first tick.
    gateway_tests::assert_eventually!(
        gw.metrics().await?.contains("gateway_baseline_score{"),
        "the baseline engine has ticked"
    );
    let text = gw.metrics().await?;
    // rcgen's default validity ends on 4096-01-01.
    let expiry = gateway_tests::metric(
        &text,
        "gateway_tls_certificate_expiry_timestamp_seconds",
        &[("listener", "https"), ("certificate", &cert.display().to_string())],
    );
    assert_eq!(expiry, Some(67_090_118_400.0), "{text}");
    let (doc, exp) = (gateway_tests::documented_metrics(), exported(&text));
    let undocumented: Vec<_> = exp.difference(&doc).collect();
    let missing: Vec<_> = doc.difference(&exp).collect();
    assert!(
        undocumented.is_empty(),
        "exported but not in docs/metrics.md: {undocumented:?}"
    );
    assert!(missing.is_empty(), "documented but not exported: {missing:?}");

    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| {
            anyhow::anyhow!("promtool is needed (apt-get install prometheus; scripts/test.sh does it): {e}")
        })?;
    child.stdin.take().expect("stdin").write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // OpenMetrics is served to scrapers that ask for it.
    let req = http::Request::get("/metrics")
        .header("host", "admin")
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .body(http_body_util::Full::new(bytes::Bytes::new()))?;
    let r = send(gw.gw.admin_addr(), req).await?;
    assert!(r.headers()["content-type"]
        .to_str()?
        .starts_with("application/openmetrics-text"));
    assert!(String::from_utf8_lossy(r.body()).ends_with("# EOF\n"));
    // Health and readiness.
    assert_eq!(
        get(&format!("http://{}/healthz", gw.gw.admin_addr())).await?.status(),
        200
    );
    assert_eq!(
        get(&format!("http://{}/readyz", gw.gw.admin_addr())).await?.status(),
        200
    );
    Ok(())
}
