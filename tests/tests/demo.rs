//! `gateway demo` starts with nothing else installed, serves through the proxy over HTTPS and
//! HTTP, prints how to use it (with ready bearer tokens from its own issuer), `/metrics` shows
//! the requests, and the adaptive-trust lines it prints do what they say.

use bytes::Bytes;
use std::net::Ipv4Addr;
use std::sync::Arc;

use gateway_tests::traffic::{self, Kind};
use gateway_tests::{assert_eventually, get, json, metric, send, Process, TlsConn};
use http_body_util::Full;
use rustls::pki_types::pem::PemObject;
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
    let (mut token, mut mallory) = (String::new(), String::new());
    while mallory.is_empty() {
        let line = tokio::time::timeout(gateway_tests::patience(), lines.next_line())
            .await??
            .unwrap_or_default();
        out.push_str(&line);
        out.push('\n');
        if let Some(t) = line.trim().strip_prefix("TOKEN=") {
            token = t.to_string();
        }
        if let Some(t) = line.trim().strip_prefix("MALLORY=") {
            mallory = t.to_string();
        }
    }
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

    // The device lines: the certificate the demo wrote lets /device through, and the origin
    // learns which device connected; without it, 403.
    let dir = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Config (edit it, it reloads):"))
        .and_then(|p| p.trim().strip_suffix("/gateway.yaml"))
        .unwrap_or_default()
        .to_string();
    let dir = std::path::Path::new(&dir);
    let chain: Vec<_> =
        rustls::pki_types::CertificateDer::pem_file_iter(dir.join("device.pem"))?.collect::<Result<_, _>>()?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(dir.join("device.key"))?;
    let tls_addr: std::net::SocketAddr = format!("127.0.0.1:{https}").parse()?;
    let device = gateway_tests::insecure_client_presenting(Some((chain, key)));
    let conn = TlsConn::connect(tls_addr, "localhost", device).await?;
    let r = conn.send(gateway_tests::request("localhost", "/device/hello")).await?;
    assert_eq!(r.status(), 200, "{:?}", r.body());
    let xfcc = gateway_tests::echoed_header(&json(&r), "x-forwarded-client-cert");
    assert!(
        xfcc.contains("CN=demo device") && xfcc.ends_with("DNS=demo-device"),
        "{xfcc}"
    );
    let conn = TlsConn::connect(tls_addr, "localhost", gateway_tests::insecure_client()).await?;
    let r = conn.send(gateway_tests::request("localhost", "/device/hello")).await?;
    assert_eq!(r.status(), 403);

    // The rate-limited route the banner loops over: its prefix rewritten, its header set, five
    // requests at once, then 429.
    let mut statuses = Vec::new();
    for i in 0..20 {
        let r = get(&format!("http://127.0.0.1:{http}/limited/x")).await?;
        if i == 0 {
            assert_eq!(json(&r)["path"], "/x");
            assert_eq!(r.headers()["x-demo-limit"], "5/s");
        }
        statuses.push(r.status().as_u16());
    }
    assert_eq!(&statuses[..5], &[200; 5], "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");

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

    // The adaptive-trust lines: a scraper is asked to step up, a stuffer is denied, and the
    // admin API says why.
    let step = |i: u64, target: String, cred, ip| traffic::Step {
        at_ms: i * 20,
        target,
        cred,
        ip,
        attack: true,
    };
    let scraper = traffic::Actor {
        kind: Kind::Scraping,
        agent: "curl/8.5.0".into(),
        steps: (0..25)
            .map(|i| {
                step(
                    i,
                    format!("/api/items/{i}"),
                    traffic::Cred::Principal(0),
                    Ipv4Addr::new(127, 0, 0, 3),
                )
            })
            .collect(),
    };
    let stuffer = traffic::Actor {
        kind: Kind::Stuffing,
        agent: "curl/8.5.0".into(),
        steps: (0..15)
            .map(|i| {
                step(
                    i,
                    "/api/orders".into(),
                    traffic::Cred::Garbage(i as u32),
                    Ipv4Addr::new(127, 0, 0, 2),
                )
            })
            .collect(),
    };
    for (actor, expected) in [(scraper, traffic::Answer::StepUp), (stuffer, traffic::Answer::Denied)] {
        let plan = traffic::Plan {
            actors: vec![actor],
            principals: 1,
            length_ms: 500,
        };
        let seen = traffic::drive(
            &plan,
            addr,
            &format!("127.0.0.1:{http}"),
            Arc::new(vec![mallory.clone()]),
            1.0,
        )
        .await;
        assert!(seen[0].answers.contains(&expected), "{:?}", seen[0].answers);
        assert_eq!(
            seen[0].answers[0],
            if expected == traffic::Answer::StepUp {
                traffic::Answer::Allowed
            } else {
                traffic::Answer::Refused
            }
        );
    }
    let top = json(&get(&format!("http://127.0.0.1:{admin}/risk/top")).await?);
    let entities: Vec<String> = top["entities"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["entity"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(entities.contains(&"client:127.0.0.2".to_string()), "{top}");
    assert!(entities.contains(&"principal:mallory".to_string()), "{top}");
    // Alice, from her own address, is left alone.
    assert_eq!(send(addr, api("/api/orders", true)).await?.status(), 200);

    p.signal("INT")?;
    assert_eq!(p.wait_exit().await?, Some(0));
    Ok(())
}
