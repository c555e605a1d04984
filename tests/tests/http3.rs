//! HTTP/3 over QUIC end to end: a quinn + h3 client against the gateway's QUIC endpoint on the
//! HTTPS listener's port number over UDP, through the same pipeline as HTTP/1.1 and HTTP/2.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gateway_tests::h3::H3Client;
use gateway_tests::{metric, OidcProvider, TestGateway, TestPki, TlsConn, Upstream};

struct Setup {
    gw: TestGateway,
    pki: TestPki,
    _up: Upstream,
}

async fn gateway(quic: &str, extra_routes: &str, identity: &str) -> anyhow::Result<Setup> {
    let up = Upstream::start("up", "127.0.0.1:0".parse()?).await?;
    let pki = TestPki::new()?;
    let (cert, key) = pki.leaf("leaf", &["localhost", "app.test"])?;
    let yaml = format!(
        r#"
listeners:
  - name: https
    address: 127.0.0.1:0
    tls: {{ certificates: [{{ cert: "{}", key: "{}" }}] }}
    {quic}
  - name: tls-only
    address: 127.0.0.1:0
    tls: {{ certificates: [{{ cert: "{}", key: "{}" }}] }}
admin: {{ address: "127.0.0.1:0" }}
{identity}
upstreams: [{{ name: up, endpoints: ["http://{}"] }}]
routes:
{extra_routes}
  - {{ name: app, upstream: up, match: {{ host: app.test }} }}
"#,
        cert.display(),
        key.display(),
        cert.display(),
        key.display(),
        up.addr()
    );
    Ok(Setup {
        gw: TestGateway::start(&yaml).await?,
        pki,
        _up: up,
    })
}

fn client_tls(pki: &TestPki) -> rustls::ClientConfig {
    (*pki.client_config(&[b"h3"], &[&rustls::version::TLS13])).clone()
}

fn json(body: &Bytes) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or_default()
}

/// The status of a GET for `/x` on `app.test` over `c`.
async fn get_x(c: &H3Client) -> anyhow::Result<http::StatusCode> {
    Ok(c.send(H3Client::get("app.test", "/x"), Bytes::new()).await?.0.status())
}

/// HTTP/3 connections the gateway has open on `https`.
fn h3_active(metrics: &str) -> Option<f64> {
    metric(
        metrics,
        "gateway_connections_active",
        &[("listener", "https"), ("protocol", "h3")],
    )
}

/// A client endpoint that has been served once by `s`, so it holds a session ticket (for 0-RTT).
async fn with_ticket(s: &Setup) -> anyhow::Result<quinn::Endpoint> {
    let endpoint = gateway_tests::h3::endpoint(&client_tls(&s.pki))?;
    let first = endpoint.connect(s.gw.addr("https"), "app.test")?.await?;
    let c = H3Client::over(endpoint.clone(), first).await?;
    get_x(&c).await?; // the session ticket arrives with or before the answer
    Ok(endpoint)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_post_many_streams_and_an_unknown_host_over_http3() -> anyhow::Result<()> {
    let s = gateway(
        "quic: {}",
        "  - { name: small, upstream: up, max_body_bytes: 1024, match: { host: app.test, path_prefix: /small } }",
        "engine: { enabled: false }",
    )
    .await?;
    let (events, _) = s.gw.gw.shared().tap.take_receiver().expect("the tap's receiver");
    let addr = s.gw.addr("https");
    let client = H3Client::connect(addr, "app.test", &client_tls(&s.pki)).await?;

    // GET: proxied with the forwarding headers, answered with the request id.
    let (resp, body) = client.send(H3Client::get("app.test", "/hello"), Bytes::new()).await?;
    assert_eq!(resp.status(), 200);
    // Its telemetry event says HTTP/3 over TLS 1.3.
    let e = gateway_tests::next_from_tap(&events).await?;
    assert_eq!(e.route.as_deref(), Some("app"));
    assert_eq!(e.status, 200);
    assert_eq!(
        (e.protocol, e.tls),
        (
            baseline_engine::Protocol::Http3,
            Some(baseline_engine::TlsVersion::Tls13)
        )
    );
    assert_eq!(e.bytes_out, body.len() as u64);
    assert!(resp.headers().contains_key("x-request-id"));
    assert!(!resp.headers().contains_key("alt-svc"), "no Alt-Svc on HTTP/3 itself");
    let doc = json(&body);
    assert_eq!(doc["path"], "/hello");
    assert_eq!(doc["headers"]["x-forwarded-proto"], "https");
    assert_eq!(doc["headers"]["x-forwarded-host"], "app.test");

    // POST of 8 MiB in 64 KiB frames, streamed to the upstream and back.
    let chunk = Bytes::from(vec![7u8; 64 * 1024]);
    let chunks = vec![chunk; 128];
    let req = http::Request::post("https://app.test/echo")
        .header("content-length", (8u64 << 20).to_string())
        .body(())?;
    let (resp, body) = client.send_chunks(req, chunks.clone()).await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(body.len(), 8 << 20);
    assert!(body.iter().all(|b| *b == 7));
    // The same without a content-length: streamed (chunked) to the upstream.
    let req = http::Request::post("https://app.test/drain").body(())?;
    let (resp, body) = client.send_chunks(req, chunks).await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(json(&body)["received"], 8u64 << 20);

    // 60 requests at once on the one connection.
    let client = Arc::new(client);
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let c = client.clone();
            tokio::spawn(async move {
                c.send(H3Client::get("app.test", &format!("/many/{i}")), Bytes::new())
                    .await
            })
        })
        .collect();
    for t in tasks {
        let (resp, body) = t.await??;
        assert_eq!(resp.status(), 200);
        assert!(json(&body)["path"].as_str().is_some_and(|p| p.starts_with("/many/")));
    }

    // Too large a head: 431; too large a declared body for the route: 413, both with problem
    // bodies, and the connection goes on.
    let req = http::Request::get("https://app.test/big-head")
        .header("x-filler", "a".repeat(40 * 1024))
        .body(())?;
    let (resp, body) = client.send(req, Bytes::new()).await?;
    assert_eq!(resp.status(), 431);
    assert_eq!(json(&body)["status"], 431);
    // Beyond what the gateway decodes at all (twice the limit), its SETTINGS
    // (SETTINGS_MAX_FIELD_SECTION_SIZE, RFC 9114 §4.2.2) keep the client from sending it.
    let req = http::Request::get("https://app.test/huge-head")
        .header("x-filler", "a".repeat(100 * 1024))
        .body(())?;
    assert!(client.send(req, Bytes::new()).await.is_err());
    let req = http::Request::post("https://app.test/small/upload")
        .header("content-length", "4096")
        .body(())?;
    let (resp, body) = client.send(req, Bytes::from(vec![1u8; 4096])).await?;
    assert_eq!(resp.status(), 413);
    assert_eq!(json(&body)["status"], 413);

    // An unknown host: 404 with a problem body.
    let (resp, body) = client.send(H3Client::get("nowhere.test", "/x"), Bytes::new()).await?;
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    assert_eq!(json(&body)["status"], 404);

    let m = s.gw.metrics().await?;
    assert_eq!(h3_active(&m), Some(1.0));
    assert_eq!(
        metric(
            &m,
            "gateway_quic_handshakes_total",
            &[("listener", "https"), ("result", "ok")]
        ),
        Some(1.0)
    );
    assert!(metric(&m, "gateway_quic_streams_total", &[("listener", "https")]).is_some_and(|n| n >= 64.0));
    assert!(metric(
        &m,
        "gateway_requests_total",
        &[("route", "app"), ("status_class", "2xx")]
    )
    .is_some_and(|n| n >= 63.0));
    drop(client);
    gateway_tests::assert_eventually!(
        metric(
            &s.gw.metrics().await?,
            "gateway_quic_rtt_seconds_count",
            &[("listener", "https")]
        ) == Some(1.0),
        "the closed connection's RTT is recorded"
    );
    Ok(())
}

#[tokio::test]
async fn alt_svc_is_advertised_only_where_quic_is_on() -> anyhow::Result<()> {
    let s = gateway("quic: {}", "", "").await?;
    let port = s.gw.addr("https").port();
    for alpn in [&b"http/1.1"[..], b"h2"] {
        let cfg = s.pki.client_config(&[alpn], &[&rustls::version::TLS13]);
        let conn = TlsConn::connect(s.gw.addr("https"), "app.test", cfg.clone()).await?;
        let resp = conn.send(gateway_tests::request("app.test", "/x")).await?;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["alt-svc"], format!("h3=\":{port}\"; ma=86400").as_str());
        let conn = TlsConn::connect(s.gw.addr("tls-only"), "app.test", cfg).await?;
        let resp = conn.send(gateway_tests::request("app.test", "/x")).await?;
        assert!(!resp.headers().contains_key("alt-svc"), "{:?}", resp.headers());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_and_step_up_over_http3() -> anyhow::Result<()> {
    let mut last = None;
    let mut idp = None;
    for _ in 0..3 {
        match OidcProvider::start(gateway_tests::free_port(), &[]).await {
            Ok(p) => {
                idp = Some(p);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let idp = idp.ok_or_else(|| last.unwrap_or_else(|| anyhow::anyhow!("provider did not start")))?;
    let identity = format!(
        "identity: {{ providers: [{{ name: idp, issuer: \"{}\", audiences: [api], algorithms: [ES256], require_at_jwt: true }}] }}",
        idp.issuer()
    );
    let routes = "  - { name: mfa, upstream: up, match: { host: app.test, path_prefix: /mfa }, auth: { bearer: idp, acr_values: [urn:mfa] } }\n  - { name: api, upstream: up, match: { host: app.test, path_prefix: /api }, auth: { bearer: idp } }";
    let s = gateway("quic: {}", routes, &identity).await?;
    gateway_tests::assert_eventually!(
        metric(
            &s.gw.metrics().await?,
            "gateway_identity_provider_ready",
            &[("provider", "idp")]
        ) == Some(1.0),
        "the provider's keys load"
    );
    let token = idp.token().await?;
    let client = H3Client::connect(s.gw.addr("https"), "app.test", &client_tls(&s.pki)).await?;
    let (resp, _) = client
        .send(H3Client::get("app.test", "/api/orders"), Bytes::new())
        .await?;
    assert_eq!(resp.status(), 401);
    assert!(resp.headers()["www-authenticate"].to_str()?.starts_with("Bearer"));
    let with = |path: &str| {
        http::Request::get(format!("https://app.test{path}"))
            .header("authorization", format!("Bearer {token}"))
            .body(())
    };
    let (resp, body) = client.send(with("/api/orders")?, Bytes::new()).await?;
    assert_eq!(resp.status(), 200);
    assert!(json(&body)["headers"]["x-auth-subject"].is_string());
    // The token has no acr: an RFC 9470 step-up challenge.
    let (resp, _) = client.send(with("/mfa/x")?, Bytes::new()).await?;
    assert_eq!(resp.status(), 401);
    assert!(resp.headers()["www-authenticate"]
        .to_str()?
        .contains("error=\"insufficient_user_authentication\""));
    Ok(())
}

/// A client that wants more requests at once than `quic.max_streams` waits for a stream to
/// finish: QUIC flow control holds it back, the gateway never has more open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_beyond_the_limit_wait() -> anyhow::Result<()> {
    let s = gateway("quic: { max_streams: 4 }", "", "").await?;
    let client = Arc::new(H3Client::connect(s.gw.addr("https"), "app.test", &client_tls(&s.pki)).await?);
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.send(H3Client::get("app.test", "/delay/400"), Bytes::new()).await })
        })
        .collect();
    // While the first four wait on the upstream, the gateway has accepted no more than four.
    gateway_tests::assert_eventually!(
        metric(
            &s.gw.metrics().await?,
            "gateway_quic_streams_total",
            &[("listener", "https")]
        ) == Some(4.0),
        "four streams open"
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        metric(
            &s.gw.metrics().await?,
            "gateway_quic_streams_total",
            &[("listener", "https")]
        ),
        Some(4.0),
        "a fifth stream was let in while four were open"
    );
    for t in tasks {
        assert_eq!(t.await??.0.status(), 200);
    }
    assert_eq!(
        metric(
            &s.gw.metrics().await?,
            "gateway_quic_streams_total",
            &[("listener", "https")]
        ),
        Some(12.0)
    );
    Ok(())
}

/// 0-RTT: off by default (the session ticket allows no early data). With `quic.early_data`
/// on, requests sent in early data (the path holds the gateway's packets back, so the handshake
/// is still under way when they arrive) are forwarded with `Early-Data: 1` when safe on a route
/// that takes early data, and answered 425 otherwise; once the handshake completes, the same
/// connection's requests are ordinary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_rtt_is_refused_by_default_and_early_requests_are_marked_or_refused() -> anyhow::Result<()> {
    let early_route =
        "  - { name: early, upstream: up, early_data: true, match: { host: app.test, path_prefix: /early } }";
    for (quic, offered) in [("quic: {}", false), ("quic: { early_data: true }", true)] {
        let s = gateway(quic, early_route, "").await?;
        let endpoint = with_ticket(&s).await?;
        let path = gateway_tests::h3::UdpPath::slow(s.gw.addr("https"), Duration::from_millis(400)).await?;
        let Ok((conn, accepted)) = endpoint.connect(path.addr, "app.test")?.into_0rtt() else {
            assert!(!offered, "0-RTT not offered with quic.early_data on");
            continue;
        };
        assert!(offered, "0-RTT offered while quic.early_data is off");
        let c = H3Client::over(endpoint.clone(), conn).await?;
        let post = |path: &str| {
            http::Request::post(format!("https://app.test{path}"))
                .body(())
                .map_err(anyhow::Error::from)
        };
        // All three leave in 0-RTT packets, before the gateway's first flight reaches the client.
        let (get, unsafe_method, other_route) = tokio::join!(
            c.send(H3Client::get("app.test", "/early/a"), Bytes::new()),
            c.send(post("/early/b")?, Bytes::from_static(b"once")),
            c.send(H3Client::get("app.test", "/x"), Bytes::new()),
        );
        let (resp, body) = get?;
        assert_eq!(resp.status(), 200);
        assert_eq!(json(&body)["headers"]["early-data"], "1", "{}", json(&body));
        for (what, r) in [("a POST", unsafe_method?), ("a route without early_data", other_route?)] {
            assert_eq!(r.0.status(), 425, "{what} in early data");
            assert_eq!(
                json(&r.1)["type"],
                "urn:gateway:problem:too-early",
                "{what}: {}",
                json(&r.1)
            );
        }
        // After the handshake: the POST sent again goes through, unmarked.
        assert!(
            tokio::time::timeout(Duration::from_secs(10), accepted).await?,
            "the handshake completes with the early data accepted"
        );
        let (resp, body) = c.send(post("/early/b")?, Bytes::from_static(b"once")).await?;
        assert_eq!(resp.status(), 200);
        assert!(json(&body)["headers"].get("early-data").is_none(), "{}", json(&body));
    }
    Ok(())
}

/// An on-path attacker records a client's 0-RTT flight and replays it from elsewhere once the
/// connection is gone: session tickets are single-use, so the replay gets no early data and its
/// request is not forwarded again; the replayed connection, which never completes its
/// handshake, is closed at the handshake timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_zero_rtt_flight_is_not_forwarded_again() -> anyhow::Result<()> {
    let s = gateway(
        "quic: { early_data: true }",
        "  - { name: early, upstream: up, early_data: true, match: { host: app.test, path_prefix: /early } }",
        "limits: { header_timeout: 1s }",
    )
    .await?;
    let addr = s.gw.addr("https");
    let endpoint = with_ticket(&s).await?;
    let path = gateway_tests::h3::UdpPath::slow(addr, Duration::from_millis(30)).await?;
    let (conn, _) = endpoint
        .connect(path.addr, "app.test")?
        .into_0rtt()
        .map_err(|_| anyhow::anyhow!("0-RTT not offered"))?;
    let c = H3Client::over(endpoint.clone(), conn).await?;
    let (resp, body) = c.send(H3Client::get("app.test", "/early/once"), Bytes::new()).await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(json(&body)["headers"]["early-data"], "1", "sent in early data");
    drop(c);
    let m = s.gw.metrics().await?;
    let forwarded = |m: &str| metric(m, "gateway_requests_total", &[("route", "early")]);
    let handshakes = |m: &str, result: &str| {
        metric(
            m,
            "gateway_quic_handshakes_total",
            &[("listener", "https"), ("result", result)],
        )
    };
    assert_eq!(forwarded(&m), Some(1.0));
    assert_eq!(handshakes(&m, "timeout"), Some(0.0));
    // While the first connection drains, the gateway routes its packets to it and drops them;
    // the replay is sent until the gateway answers it as a new connection.
    let flight = path.client_datagrams();
    let attacker = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let mut answered = false;
    for _ in 0..50 {
        for d in &flight {
            attacker.send_to(d, addr).await?;
        }
        let mut buf = [0u8; 2048];
        if tokio::time::timeout(Duration::from_millis(200), attacker.recv_from(&mut buf))
            .await
            .is_ok()
        {
            answered = true;
            break;
        }
    }
    assert!(answered, "the replayed flight reached the gateway as a new connection");
    gateway_tests::assert_eventually!(
        handshakes(&s.gw.metrics().await?, "timeout") == Some(1.0),
        "the replayed connection is closed at the handshake timeout"
    );
    assert_eq!(
        forwarded(&s.gw.metrics().await?),
        Some(1.0),
        "the replayed request was not forwarded"
    );
    Ok(())
}

/// `quic.idle_timeout`: a connection with nothing to do is closed once it passes, and stops
/// counting as active.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_quic_connection_is_closed() -> anyhow::Result<()> {
    let s = gateway("quic: { idle_timeout: 300ms }", "", "").await?;
    let c = H3Client::connect(s.gw.addr("https"), "app.test", &client_tls(&s.pki)).await?;
    assert_eq!(get_x(&c).await?, 200);
    let closed = tokio::time::timeout(Duration::from_secs(10), c.conn.closed()).await?;
    assert!(
        matches!(closed, quinn::ConnectionError::TimedOut),
        "closed by the idle timeout: {closed}"
    );
    gateway_tests::assert_eventually!(
        h3_active(&s.gw.metrics().await?) == Some(0.0),
        "the gateway let the connection go"
    );
    Ok(())
}

/// A request stream that opens and never completes its head is ended at the header timeout,
/// counted, and the connection keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_head_is_cut_off() -> anyhow::Result<()> {
    let s = gateway("quic: {}", "", "limits: { header_timeout: 500ms }").await?;
    let c = H3Client::connect(s.gw.addr("https"), "app.test", &client_tls(&s.pki)).await?;
    let (mut send, mut recv) = c.conn.open_bi().await?;
    send.write_all(&[0x01]).await?; // the type of a HEADERS frame, and nothing more
    let ended = tokio::time::timeout(Duration::from_secs(10), recv.read_to_end(1024)).await;
    assert!(ended.is_ok(), "the stream was ended by the gateway");
    assert_eq!(
        metric(
            &s.gw.metrics().await?,
            "gateway_connection_timeouts_total",
            &[("listener", "https"), ("kind", "h3_header")]
        ),
        Some(1.0)
    );
    assert_eq!(get_x(&c).await?, 200);
    Ok(())
}

/// Above `quic.retry_above` open connections a new client proves its address with a Retry
/// first (quinn's client follows it); at `quic.max_connections` new ones are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_under_load_and_the_connection_cap() -> anyhow::Result<()> {
    let s = gateway("quic: { retry_above: 0, max_connections: 1 }", "", "").await?;
    let tls = client_tls(&s.pki);
    let first = H3Client::connect(s.gw.addr("https"), "app.test", &tls).await?;
    assert_eq!(get_x(&first).await?, 200);
    let handshakes = |m: &str, result: &str| {
        metric(
            m,
            "gateway_quic_handshakes_total",
            &[("listener", "https"), ("result", result)],
        )
        .unwrap_or(0.0)
    };
    let m = s.gw.metrics().await?;
    assert_eq!(
        handshakes(&m, "retry"),
        1.0,
        "the client was asked to validate its address"
    );
    assert_eq!(handshakes(&m, "ok"), 1.0);
    // The one connection allowed is open: the next is refused.
    assert!(H3Client::connect(s.gw.addr("https"), "app.test", &tls).await.is_err());
    assert_eq!(handshakes(&s.gw.metrics().await?, "refused"), 1.0);
    // Once it closes, a new one gets in.
    drop(first);
    gateway_tests::assert_eventually!(
        h3_active(&s.gw.metrics().await?) == Some(0.0),
        "the first connection closed"
    );
    let again = H3Client::connect(s.gw.addr("https"), "app.test", &tls).await?;
    assert_eq!(get_x(&again).await?, 200);
    Ok(())
}

fn leaf(conn: &quinn::Connection) -> Option<Vec<u8>> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    certs.first().map(|c| c.to_vec())
}

/// The QUIC endpoint picks its certificate by SNI from the listener's certificates, as the
/// HTTPS listener does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_certificate_over_quic() -> anyhow::Result<()> {
    let up = Upstream::start("up", "127.0.0.1:0".parse()?).await?;
    let pki = TestPki::new()?;
    let (a_cert, a_key) = pki.leaf("a", &["a.test"])?;
    let (b_cert, b_key) = pki.leaf("b", &["b.test"])?;
    let yaml = format!(
        r#"
listeners:
  - name: https
    address: 127.0.0.1:0
    tls: {{ certificates: [{{ cert: "{}", key: "{}" }}, {{ cert: "{}", key: "{}" }}] }}
    quic: {{}}
admin: {{ address: "127.0.0.1:0" }}
upstreams: [{{ name: up, endpoints: ["http://{}"] }}]
routes: [{{ name: app, upstream: up }}]
"#,
        a_cert.display(),
        a_key.display(),
        b_cert.display(),
        b_key.display(),
        up.addr()
    );
    let gw = TestGateway::start(&yaml).await?;
    use rustls::pki_types::pem::PemObject;
    for (name, cert) in [("a.test", &a_cert), ("b.test", &b_cert)] {
        let c = H3Client::connect(gw.addr("https"), name, &client_tls(&pki)).await?;
        let want = rustls::pki_types::CertificateDer::from_pem_slice(&std::fs::read(cert)?)?;
        assert_eq!(leaf(&c.conn), Some(want.to_vec()), "{name}");
        let (resp, _) = c.send(H3Client::get(name, "/x"), Bytes::new()).await?;
        assert_eq!(resp.status(), 200, "{name}");
    }
    // A name no certificate carries gets the first certificate, which the client refuses.
    assert!(H3Client::connect(gw.addr("https"), "c.test", &client_tls(&pki))
        .await
        .is_err());
    Ok(())
}

/// A reload with a new certificate reaches new QUIC connections; open ones keep going.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_reaches_new_quic_connections() -> anyhow::Result<()> {
    let s = gateway("quic: {}", "", "").await?;
    let tls = client_tls(&s.pki);
    let old = H3Client::connect(s.gw.addr("https"), "app.test", &tls).await?;
    let before = leaf(&old.conn);
    assert!(before.is_some());
    let (cert, key) = s.pki.leaf("leaf-next", &["localhost", "app.test"])?;
    std::fs::copy(&cert, s.pki.dir.path().join("leaf.pem"))?;
    std::fs::copy(&key, s.pki.dir.path().join("leaf.key"))?;
    s.gw.gw.reload().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let new = H3Client::connect(s.gw.addr("https"), "app.test", &tls).await?;
    let after = leaf(&new.conn);
    assert_ne!(before, after, "the new connection got the new certificate");
    use rustls::pki_types::pem::PemObject;
    let next = rustls::pki_types::CertificateDer::from_pem_slice(&std::fs::read(&cert)?)?;
    assert_eq!(after, Some(next.to_vec()));
    assert_eq!(get_x(&new).await?, 200);
    assert_eq!(get_x(&old).await?, 200);
    Ok(())
}

/// On shutdown every HTTP/3 connection gets GOAWAY: the request in flight completes, nothing
/// new is taken, and the endpoint stops accepting connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_goaway_and_drains_http3() -> anyhow::Result<()> {
    let Setup { gw, pki, _up } = gateway("quic: {}", "", "").await?;
    let addr = gw.addr("https");
    let tls = client_tls(&pki);
    let client = Arc::new(H3Client::connect(addr, "app.test", &tls).await?);
    let c = client.clone();
    let slow = tokio::spawn(async move { c.send(H3Client::get("app.test", "/delay/800"), Bytes::new()).await });
    gateway_tests::assert_eventually!(
        metric(
            &gw.metrics().await?,
            "gateway_quic_streams_total",
            &[("listener", "https")]
        ) == Some(1.0),
        "the slow request is in flight"
    );
    let admin = gw.admin_addr();
    let TestGateway { gw, dir: _dir } = gw;
    let stopping = tokio::spawn(gw.shutdown(Duration::from_secs(10)));
    gateway_tests::assert_eventually!(
        gateway_tests::get(&format!("http://{admin}/readyz"))
            .await
            .map(|r| r.status())
            .ok()
            != Some(http::StatusCode::OK),
        "the gateway began draining"
    );
    // While the slow request drains, new connections are refused.
    assert!(
        H3Client::connect(addr, "app.test", &tls).await.is_err(),
        "a new connection was accepted"
    );
    let (resp, _) = slow.await??;
    assert_eq!(resp.status(), 200, "the request in flight completed");
    assert!(stopping.await?, "drained within the deadline");
    assert!(
        client
            .send(H3Client::get("app.test", "/x"), Bytes::new())
            .await
            .is_err(),
        "a request after GOAWAY was taken"
    );
    Ok(())
}

/// A client that moves to a new address (its endpoint rebinds to another socket, as after a
/// NAT rebinding or a network change) keeps its connection, the move is counted, and the
/// requests that follow are seen as coming from the new address (span `client.port`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_survives_a_move_to_a_new_address() -> anyhow::Result<()> {
    let receiver = gateway_tests::OtlpReceiver::start().await?;
    let traces = format!(
        "telemetry: {{ traces: {{ endpoint: \"http://{}\", protocol: grpc, sampling_ratio: 1.0 }} }}",
        receiver.grpc
    );
    let s = gateway("quic: {}", "", &traces).await?;
    let endpoint = gateway_tests::h3::endpoint(&client_tls(&s.pki))?;
    let conn = endpoint.connect(s.gw.addr("https"), "app.test")?.await?;
    let client = H3Client::over(endpoint.clone(), conn).await?;
    let before = endpoint.local_addr()?.port();
    assert_eq!(get_x(&client).await?, 200);
    endpoint.rebind(std::net::UdpSocket::bind("127.0.0.1:0")?)?;
    let after = endpoint.local_addr()?.port();
    let (resp, body) = client.send(H3Client::get("app.test", "/moved"), Bytes::new()).await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(json(&body)["path"], "/moved");
    assert_eq!(
        metric(
            &s.gw.metrics().await?,
            "gateway_quic_migrations_total",
            &[("listener", "https")]
        ),
        Some(1.0)
    );
    drop(client);
    // Stopping flushes the span exporter.
    let Setup { gw, pki: _pki, _up } = s;
    gw.gw.shutdown(Duration::from_secs(5)).await;
    let spans = receiver.spans(2).await;
    // The request span (the upstream span has the path too, but no client).
    let port = |path: &str| {
        spans
            .iter()
            .filter(|s| s.attr("url.path").as_deref() == Some(path))
            .find_map(|s| s.attr("client.port"))
    };
    assert_eq!(port("/x"), Some(before.to_string()));
    assert_eq!(port("/moved"), Some(after.to_string()), "the request after the move");
    Ok(())
}

/// Over a path that loses one datagram in ten from the gateway, a 4 MiB answer still arrives
/// whole (QUIC recovers), and the losses are counted when the connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losses_are_recovered_and_counted() -> anyhow::Result<()> {
    let s = gateway("quic: {}", "", "").await?;
    let path = gateway_tests::h3::UdpPath::lossy(s.gw.addr("https"), 10).await?;
    let client = H3Client::connect(path.addr, "app.test", &client_tls(&s.pki)).await?;
    let (resp, body) = client
        .send(H3Client::get("app.test", "/bytes/4194304"), Bytes::new())
        .await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(body.len(), 4 << 20);
    drop(client);
    gateway_tests::assert_eventually!(
        metric(
            &s.gw.metrics().await?,
            "gateway_quic_lost_packets_total",
            &[("listener", "https")]
        )
        .is_some_and(|n| n > 0.0),
        "the lost packets are counted"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_over_http3_reaches_the_upstream() -> anyhow::Result<()> {
    let up = Upstream::start("up", "127.0.0.1:0".parse()?).await?;
    let pki = TestPki::new()?;
    let (cert, key) = pki.leaf("leaf", &["app.test"])?;
    let ca = pki.dir.path().join("ca.pem");
    let yaml = format!(
        r#"
listeners:
  - name: https
    address: 127.0.0.1:0
    tls:
      certificates: [{{ cert: "{}", key: "{}" }}]
      client_auth: {{ ca_files: ["{}"], required: false }}
    quic: {{}}
admin: {{ address: "127.0.0.1:0" }}
upstreams: [{{ name: up, endpoints: ["http://{}"] }}]
routes:
  - {{ name: devices, upstream: up, match: {{ path_prefix: /devices }}, auth: {{ client_certificate: true }} }}
  - {{ name: app, upstream: up }}
"#,
        cert.display(),
        key.display(),
        ca.display(),
        up.addr()
    );
    let gw = TestGateway::start(&yaml).await?;
    let addr = gw.addr("https");
    let device = pki.client_config_with_certificate(&[b"h3"], &["device-9.test"])?;
    let with = H3Client::connect(addr, "app.test", &device).await?;
    let (resp, body) = with.send(H3Client::get("app.test", "/devices/9"), Bytes::new()).await?;
    assert_eq!(resp.status(), 200);
    let xfcc = gateway_tests::echoed_header(&json(&body), "x-forwarded-client-cert");
    assert!(
        xfcc.starts_with("Hash=") && xfcc.ends_with(";DNS=device-9.test"),
        "{xfcc}"
    );
    // Without a certificate, the connection is let in and the route refuses the request.
    let without = H3Client::connect(addr, "app.test", &client_tls(&pki)).await?;
    let (resp, _) = without
        .send(H3Client::get("app.test", "/devices/9"), Bytes::new())
        .await?;
    assert_eq!(resp.status(), 403);
    let (resp, _) = without.send(H3Client::get("app.test", "/other"), Bytes::new()).await?;
    assert_eq!(resp.status(), 200);
    let m = gw.metrics().await?;
    assert_eq!(
        metric(&m, "gateway_tls_client_certificates_total", &[("listener", "https")]),
        Some(1.0)
    );
    Ok(())
}
