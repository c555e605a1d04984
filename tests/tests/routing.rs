//! Routing precedence, load balancing, passive health, and every error answer with its
//! RFC 9457 problem body.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use gateway_tests::{assert_eventually, endpoints, json, metric, request, send, Collected, TestGateway, Upstream};
use http_body_util::Full;

fn assert_problem(r: &Collected, status: u16, slug: &str) {
    assert_eq!(r.status().as_u16(), status, "status; body: {:?}", r.body());
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let p = json(r);
    assert_eq!(p["status"], status);
    assert_eq!(p["type"], format!("urn:gateway:problem:{slug}"));
    assert!(p["title"].is_string() && p["detail"].is_string());
    let rid = r.headers()["x-request-id"].to_str().expect("ascii");
    assert_eq!(p["request_id"], rid, "the problem carries the request id");
    let text = String::from_utf8_lossy(r.body());
    assert!(!text.contains("127.0.0.1"), "no internals in problem bodies: {text}");
}

#[tokio::test]
async fn routing_precedence() -> anyhow::Result<()> {
    let names = ["exact", "exact-api", "exact-api-post", "wild", "any", "any-deep"];
    let mut ups = Vec::new();
    for n in names {
        ups.push(Upstream::start(n, "127.0.0.1:0".parse()?).await?);
    }
    let mut yaml = String::from(
        r#"
listeners: [{ name: http, address: "127.0.0.1:0" }]
admin: { address: "127.0.0.1:0" }
routes:
  - { name: any, upstream: any }
  - { name: any-deep, upstream: any-deep, match: { path_prefix: /api/v1/ } }
  - { name: wild, upstream: wild, match: { host: "*.example.com" } }
  - { name: exact, upstream: exact, match: { host: www.example.com } }
  - { name: exact-api, upstream: exact-api, match: { host: www.example.com, path_prefix: /api } }
  - { name: exact-api-post, upstream: exact-api-post, match: { host: www.example.com, path_prefix: /api, methods: [POST, PUT] } }
upstreams:
"#,
    );
    for (n, u) in names.iter().zip(&ups) {
        yaml.push_str(&format!("  - {{ name: {n}, endpoints: [http://{}] }}\n", u.addr()));
    }
    let gw = TestGateway::start(&yaml).await?;
    let addr = gw.addr("http");
    let who = |r: &Collected| {
        r.headers()
            .get("x-upstream")
            .map(|v| v.to_str().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    let cases = [
        ("GET", "www.example.com", "/", "exact"),
        ("GET", "WWW.Example.COM:8080", "/x", "exact"),
        ("GET", "www.example.com", "/api", "exact-api"),
        ("GET", "www.example.com", "/api/users", "exact-api"),
        ("POST", "www.example.com", "/api/users", "exact-api-post"),
        ("GET", "www.example.com", "/apiary", "exact"),
        ("GET", "shop.example.com", "/api", "wild"),
        ("GET", "a.b.example.com", "/", "any"),
        ("GET", "other.org", "/api/v1/x", "any-deep"),
        ("GET", "other.org", "/api/v1", "any"),
    ];
    for (method, host, path, want) in cases {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", host)
            .body(Full::new(Bytes::new()))?;
        let r = send(addr, req).await?;
        assert_eq!(r.status(), 200, "{method} {host}{path}");
        assert_eq!(who(&r), want, "{method} {host}{path}");
    }
    Ok(())
}

#[tokio::test]
async fn method_mismatch_is_405_and_unknown_path_404() -> anyhow::Result<()> {
    let up = Upstream::start("up", "127.0.0.1:0".parse()?).await?;
    let yaml = format!(
        r#"
listeners: [{{ name: http, address: "127.0.0.1:0" }}]
admin: {{ address: "127.0.0.1:0" }}
routes:
  - {{ name: read, upstream: up, match: {{ host: api.test, path_prefix: /items, methods: [GET, HEAD] }} }}
upstreams:
  - {{ name: up, endpoints: [http://{}] }}
"#,
        up.addr()
    );
    let gw = TestGateway::start(&yaml).await?;
    let req = http::Request::post("/items")
        .header("host", "api.test")
        .body(Full::new(Bytes::new()))?;
    let r = send(gw.addr("http"), req).await?;
    assert_problem(&r, 405, "method-not-allowed");
    assert_eq!(r.headers()["allow"], "GET, HEAD");
    let r = send(gw.addr("http"), request("api.test", "/other")).await?;
    assert_problem(&r, 404, "no-route");
    let r = send(gw.addr("http"), request("nobody.test", "/items")).await?;
    assert_problem(&r, 404, "no-route");
    let m = gw.metrics().await?;
    assert_eq!(
        metric(
            &m,
            "gateway_requests_total",
            &[("route", "none"), ("method", "GET"), ("status_class", "4xx")]
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &m,
            "gateway_request_errors_total",
            &[("reason", "no_route"), ("side", "downstream")]
        ),
        Some(2.0)
    );
    Ok(())
}

#[tokio::test]
async fn load_balancing_spreads() -> anyhow::Result<()> {
    let a = Upstream::start("a", "127.0.0.1:0".parse()?).await?;
    let b = Upstream::start("b", "127.0.0.1:0".parse()?).await?;
    let c = Upstream::start("c", "127.0.0.1:0".parse()?).await?;
    for balance in ["round_robin", "least_in_flight"] {
        let yaml = format!(
            r#"
listeners: [{{ name: http, address: "127.0.0.1:0" }}]
admin: {{ address: "127.0.0.1:0" }}
routes: [{{ name: r, upstream: p }}]
upstreams:
  - {{ name: p, balance: {balance}, endpoints: {} }}
"#,
            endpoints(&[&a, &b, &c])
        );
        let gw = TestGateway::start(&yaml).await?;
        let mut counts = std::collections::HashMap::<String, usize>::new();
        for _ in 0..90 {
            let r = send(gw.addr("http"), request("x", "/")).await?;
            *counts
                .entry(r.headers()["x-upstream"].to_str()?.to_string())
                .or_default() += 1;
        }
        assert_eq!(counts.len(), 3, "{balance}: every endpoint served: {counts:?}");
        if balance == "round_robin" {
            assert!(counts.values().all(|&n| n == 30), "round robin is even: {counts:?}");
        } else {
            assert!(counts.values().all(|&n| n >= 10), "least in flight spreads: {counts:?}");
        }
    }
    Ok(())
}

/// A TCP server that accepts and closes at once, counting connections: a broken endpoint whose
/// traffic can be observed.
async fn broken_endpoint() -> anyhow::Result<(std::net::SocketAddr, Arc<AtomicUsize>)> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            h.fetch_add(1, Ordering::SeqCst);
            drop(s);
        }
    });
    Ok((addr, hits))
}

#[tokio::test]
async fn ejected_endpoint_gets_no_traffic_until_ejection_ends() -> anyhow::Result<()> {
    let good = Upstream::start("good", "127.0.0.1:0".parse()?).await?;
    let (bad, hits) = broken_endpoint().await?;
    // No retries, so every failure shows as a 502 until the ejection.
    let yaml = format!(
        r#"
listeners: [{{ name: http, address: "127.0.0.1:0" }}]
admin: {{ address: "127.0.0.1:0" }}
routes: [{{ name: r, upstream: p }}]
upstreams:
  - name: p
    endpoints: [http://{}, http://{bad}]
    health: {{ consecutive_failures: 2, ejection_time: 1s }}
    retry: {{ attempts: 1 }}
"#,
        good.addr()
    );
    let gw = TestGateway::start(&yaml).await?;
    let addr = gw.addr("http");
    // Round robin alternates: the bad endpoint fails twice within four requests and is ejected.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(send(addr, request("x", "/")).await?.status().as_u16());
    }
    assert_eq!(statuses.iter().filter(|&&s| s == 502).count(), 2, "{statuses:?}");
    let m = gw.metrics().await?;
    assert_eq!(
        metric(&m, "gateway_upstream_endpoints_ejected", &[("pool", "p")]),
        Some(1.0)
    );
    assert_eq!(
        metric(&m, "gateway_upstream_ejections_total", &[("pool", "p")]),
        Some(1.0)
    );
    let before = hits.load(Ordering::SeqCst);
    for _ in 0..20 {
        let r = send(addr, request("x", "/")).await?;
        assert_eq!(r.status(), 200, "the pool keeps serving from the healthy endpoint");
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        before,
        "no traffic to the ejected endpoint"
    );
    // After the ejection ends the endpoint is tried again.
    assert_eventually!(
        gateway_tests::metric(
            &gw.metrics().await?,
            "gateway_upstream_endpoints_ejected",
            &[("pool", "p")]
        ) == Some(0.0),
        "ejection ends"
    );
    for _ in 0..4 {
        let _ = send(addr, request("x", "/")).await?;
    }
    assert!(
        hits.load(Ordering::SeqCst) > before,
        "traffic resumes after the ejection"
    );
    Ok(())
}

#[tokio::test]
async fn a_request_no_endpoint_will_connect_for_moves_to_the_next() -> anyhow::Result<()> {
    let good = Upstream::start("good", "127.0.0.1:0".parse()?).await?;
    let (dead, dead2) = (gateway_tests::free_port(), gateway_tests::free_port());
    // Health never ejects here, so every request meets the refusing endpoint on its turn.
    let yaml = format!(
        r#"
listeners: [{{ name: http, address: "127.0.0.1:0" }}]
admin: {{ address: "127.0.0.1:0" }}
routes:
  - {{ name: retry, upstream: retry, match: {{ host: retry.test }} }}
  - {{ name: once, upstream: once, match: {{ host: once.test }} }}
  - {{ name: dead, upstream: dead, match: {{ host: dead.test }} }}
upstreams:
  - name: retry
    endpoints: [http://127.0.0.1:{dead}, http://{good}]
    health: {{ consecutive_failures: 1000 }}
  - name: once
    endpoints: [http://127.0.0.1:{dead}, http://{good}]
    connect_attempts: 1
    health: {{ consecutive_failures: 1000 }}
  - name: dead
    endpoints: [http://127.0.0.1:{dead}, http://127.0.0.1:{dead2}]
    health: {{ consecutive_failures: 1000 }}
"#,
        good = good.addr()
    );
    let gw = TestGateway::start(&yaml).await?;
    let addr = gw.addr("http");
    // Every request is answered, bodies included: a request that could not connect was not sent,
    // so its body is still whole for the next endpoint, whatever the method.
    for i in 0..10 {
        let payload = format!("payload {i}");
        let req = http::Request::post("/echo")
            .header("host", "retry.test")
            .body(Full::new(Bytes::from(payload.clone())))?;
        let r = send(addr, req).await?;
        assert_eq!(r.status(), 200, "request {i}: {:?}", r.body());
        assert_eq!(r.headers()["x-upstream"], "good");
        assert_eq!(r.body(), payload.as_bytes());
    }
    // Without retries, the refusing endpoint's turns are 502s.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(send(addr, request("once.test", "/")).await?.status().as_u16());
    }
    assert_eq!(statuses.iter().filter(|&&s| s == 502).count(), 2, "{statuses:?}");
    // When every endpoint refuses, each is tried once, then 502.
    assert_problem(&send(addr, request("dead.test", "/")).await?, 502, "upstream-connect");

    let m = gw.metrics().await?;
    let count = |name: &str, pool: &str| metric(&m, name, &[("pool", pool), ("reason", "connect")]);
    let connect = |pool: &str| {
        metric(
            &m,
            "gateway_upstream_errors_total",
            &[("pool", pool), ("kind", "connect")],
        )
    };
    // Round robin: the refusing endpoint's turn comes every other request; a retry takes no turn.
    assert_eq!(count("gateway_upstream_retries_total", "retry"), Some(5.0));
    assert_eq!(connect("retry"), Some(5.0));
    assert_eq!(count("gateway_upstream_retries_total", "once"), Some(0.0));
    assert_eq!(connect("once"), Some(2.0));
    assert_eq!(count("gateway_upstream_retries_total", "dead"), Some(1.0));
    assert_eq!(connect("dead"), Some(2.0));
    assert_eq!(
        metric(
            &m,
            "gateway_requests_total",
            &[("route", "retry"), ("method", "POST"), ("status_class", "2xx")]
        ),
        Some(10.0),
        "each request counted once"
    );
    Ok(())
}

#[tokio::test]
async fn active_checks_take_a_failing_endpoint_out_and_bring_it_back() -> anyhow::Result<()> {
    let good = Upstream::start("good", "127.0.0.1:0".parse()?).await?;
    let late = gateway_tests::free_port();
    let yaml = format!(
        r#"
listeners: [{{ name: http, address: "127.0.0.1:0" }}]
admin: {{ address: "127.0.0.1:0" }}
routes:
  - {{ name: r, upstream: p }}
  - {{ name: s, upstream: sick, match: {{ host: sick.test }} }}
upstreams:
  - name: p
    endpoints: [http://{good}, http://127.0.0.1:{late}]
    health: {{ check: {{ path: /healthz, interval: 100ms, timeout: 500ms }} }}
  - name: sick
    endpoints: [http://{good}]
    health: {{ check: {{ path: /status/503, interval: 100ms }} }}
"#,
        good = good.addr()
    );
    let gw = TestGateway::start(&yaml).await?;
    let addr = gw.addr("http");
    let down = |m: &str, pool: &str| metric(m, "gateway_upstream_endpoints_down", &[("pool", pool)]);
    // Without any request: the endpoint nobody listens on, and the one answering 503, go out.
    assert_eventually!(
        {
            let m = gw.metrics().await?;
            down(&m, "p") == Some(1.0) && down(&m, "sick") == Some(1.0)
        },
        "failing endpoints are taken out"
    );
    for _ in 0..10 {
        let r = send(addr, request("x", "/")).await?;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-upstream"], "good");
    }
    assert_problem(
        &send(addr, request("sick.test", "/")).await?,
        503,
        "no-healthy-endpoint",
    );
    let m = gw.metrics().await?;
    assert_eq!(
        metric(
            &m,
            "gateway_upstream_errors_total",
            &[("pool", "p"), ("kind", "connect")]
        ),
        Some(0.0),
        "no request went to the endpoint out of rotation"
    );
    assert!(
        metric(
            &m,
            "gateway_upstream_health_checks_total",
            &[("pool", "p"), ("result", "pass")]
        ) > Some(0.0)
    );
    assert!(
        metric(
            &m,
            "gateway_upstream_health_checks_total",
            &[("pool", "p"), ("result", "fail")]
        ) >= Some(2.0)
    );

    // Once it answers, it comes back and serves again.
    let _late = Upstream::start("late", format!("127.0.0.1:{late}").parse()?).await?;
    assert_eventually!(down(&gw.metrics().await?, "p") == Some(0.0), "the endpoint comes back");
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        let r = send(addr, request("x", "/")).await?;
        seen.insert(r.headers()["x-upstream"].to_str()?.to_string());
    }
    assert!(seen.contains("late"), "{seen:?}");
    Ok(())
}

#[tokio::test]
async fn rate_limits_by_client_route_and_subject() -> anyhow::Result<()> {
    let up = Upstream::start("up", "127.0.0.1:0".parse()?).await?;
    let issuer = gateway::demo::Issuer::start().await?;
    let yaml = format!(
        r#"
listeners: [{{ name: http, address: "127.0.0.1:0" }}]
admin: {{ address: "127.0.0.1:0" }}
trusted_proxies: [127.0.0.2]
identity: {{ providers: [{{ name: demo, issuer: "{issuer}", audiences: [demo-api] }}] }}
routes:
  - {{ name: client, upstream: up, match: {{ host: client.test }}, rate_limit: {{ rate: 1/m, burst: 3 }} }}
  - {{ name: all, upstream: up, match: {{ host: all.test }}, rate_limit: {{ rate: 2/h, by: route }} }}
  - name: subject
    upstream: up
    match: {{ host: subject.test }}
    auth: {{ bearer: demo }}
    rate_limit: {{ rate: 1/m, burst: 2, by: subject }}
upstreams: [{{ name: up, endpoints: ["http://{}"] }}]
"#,
        up.addr(),
        issuer = issuer.issuer()
    );
    let gw = TestGateway::start(&yaml).await?;
    let addr = gw.addr("http");
    // From one address: its burst, then 429 with the time until the next request is allowed.
    for _ in 0..3 {
        assert_eq!(send(addr, request("client.test", "/")).await?.status(), 200);
    }
    let r = send(addr, request("client.test", "/")).await?;
    assert_problem(&r, 429, "rate-limited");
    let wait: u64 = r.headers()["retry-after"].to_str()?.parse()?;
    assert!((1..=60).contains(&wait), "one request a minute: {wait}");
    // Behind a trusted proxy, each client the proxy forwards is counted apart.
    let from = |ip: &str| -> anyhow::Result<_> {
        Ok(http::Request::get("/")
            .header("host", "client.test")
            .header("x-forwarded-for", ip)
            .body(Full::new(Bytes::new()))?)
    };
    let local = tokio::net::TcpSocket::new_v4()?;
    local.bind("127.0.0.2:0".parse()?)?;
    let stream = local.connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    for _ in 0..3 {
        assert_eq!(sender.send_request(from("198.51.100.7")?).await?.status(), 200);
    }
    assert_eq!(sender.send_request(from("198.51.100.7")?).await?.status(), 429);
    // Counted by the address the proxy saw, not the proxy's own.
    assert_eq!(sender.send_request(from("198.51.100.8")?).await?.status(), 200);

    // By route: every client shares the two requests.
    assert_eq!(send(addr, request("all.test", "/")).await?.status(), 200);
    assert_eq!(send(addr, request("all.test", "/")).await?.status(), 200);
    assert_eq!(send(addr, request("all.test", "/")).await?.status(), 429);

    // By subject: each caller has its own count, after identity.
    let call = |token: String| -> anyhow::Result<_> {
        Ok(http::Request::get("/")
            .header("host", "subject.test")
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::new()))?)
    };
    let alice = issuer.token("alice", "read", "urn:pwd", std::time::Duration::from_secs(300));
    let bob = issuer.token("bob", "read", "urn:pwd", std::time::Duration::from_secs(300));
    assert_eventually!(
        send(addr, call(alice.clone())?).await?.status() == 200,
        "the issuer's keys are loaded"
    );
    assert_eq!(send(addr, call(alice.clone())?).await?.status(), 200);
    assert_eq!(send(addr, call(alice)?).await?.status(), 429);
    assert_eq!(send(addr, call(bob)?).await?.status(), 200);
    assert_eq!(
        send(addr, request("subject.test", "/")).await?.status(),
        401,
        "identity comes first"
    );

    let m = gw.metrics().await?;
    let limited = |route: &str| metric(&m, "gateway_rate_limited_total", &[("route", route)]);
    assert_eq!(limited("client"), Some(2.0));
    assert_eq!(limited("all"), Some(1.0));
    assert_eq!(limited("subject"), Some(1.0));
    assert_eq!(
        metric(
            &m,
            "gateway_request_errors_total",
            &[("side", "downstream"), ("reason", "rate_limited")]
        ),
        Some(4.0)
    );
    Ok(())
}

#[tokio::test]
async fn upstream_errors_502_503_504() -> anyhow::Result<()> {
    let slow = Upstream::start("slow", "127.0.0.1:0".parse()?).await?;
    let dead = gateway_tests::free_port();
    let yaml = format!(
        r#"
listeners: [{{ name: http, address: "127.0.0.1:0" }}]
admin: {{ address: "127.0.0.1:0" }}
routes:
  - {{ name: dead, upstream: dead, match: {{ path_prefix: /dead }} }}
  - {{ name: slow, upstream: slow }}
  - {{ name: patient, upstream: slow, match: {{ host: patient.test }}, request_timeout: 5s }}
upstreams:
  - name: dead
    endpoints: [http://127.0.0.1:{dead}]
    health: {{ consecutive_failures: 1, ejection_time: 1m }}
  - {{ name: slow, endpoints: [http://{}], request_timeout: 300ms }}
"#,
        slow.addr()
    );
    let gw = TestGateway::start(&yaml).await?;
    let addr = gw.addr("http");
    assert_problem(&send(addr, request("x", "/dead")).await?, 502, "upstream-connect");
    let r = send(addr, request("x", "/dead")).await?;
    assert_problem(&r, 503, "no-healthy-endpoint");
    assert!(r.headers().contains_key("retry-after"));
    assert_problem(&send(addr, request("x", "/delay/3000")).await?, 504, "upstream-timeout");
    // The slow endpoint keeps serving fast requests.
    assert_eq!(send(addr, request("x", "/delay/1")).await?.status(), 200);
    // A route's own request_timeout replaces the pool's.
    assert_eq!(send(addr, request("patient.test", "/delay/600")).await?.status(), 200);
    let m = gw.metrics().await?;
    assert_eq!(
        metric(
            &m,
            "gateway_upstream_errors_total",
            &[("pool", "dead"), ("kind", "connect")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &m,
            "gateway_upstream_errors_total",
            &[("pool", "dead"), ("kind", "no_healthy_endpoint")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &m,
            "gateway_upstream_errors_total",
            &[("pool", "slow"), ("kind", "timeout")]
        ),
        Some(1.0)
    );
    Ok(())
}

#[tokio::test]
async fn request_limits_413_414_431_400() -> anyhow::Result<()> {
    let up = Upstream::start("up", "127.0.0.1:0".parse()?).await?;
    let yaml = format!(
        r#"
listeners: [{{ name: http, address: "127.0.0.1:0" }}]
admin: {{ address: "127.0.0.1:0" }}
limits: {{ max_header_bytes: 4096, max_headers: 20, max_uri_bytes: 256, max_body_bytes: 1000 }}
routes:
  - {{ name: big, upstream: up, match: {{ host: big.test }}, max_body_bytes: 100000 }}
  - {{ name: small, upstream: up }}
upstreams:
  - {{ name: up, endpoints: [http://{}] }}
"#,
        up.addr()
    );
    let gw = TestGateway::start(&yaml).await?;
    let addr = gw.addr("http");
    // 413 by Content-Length, before anything is sent upstream.
    let req = http::Request::post("/drain")
        .header("host", "x")
        .body(Full::new(Bytes::from(vec![b'a'; 1001])))?;
    assert_problem(&send(addr, req).await?, 413, "body-too-large");
    // The per-route limit is larger.
    let req = http::Request::post("/drain")
        .header("host", "big.test")
        .body(Full::new(Bytes::from(vec![b'a'; 50_000])))?;
    let r = send(addr, req).await?;
    assert_eq!(r.status(), 200);
    assert_eq!(json(&r)["received"], 50_000);
    // 413 for a chunked body that grows past the limit while streaming.
    let (tx, body) = gateway_tests::ChannelBody::new(4);
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = http::Request::post("/drain").header("host", "x").body(body)?;
    let pending = tokio::spawn(async move { sender.send_request(req).await });
    for _ in 0..5 {
        if tx.send(Bytes::from(vec![b'a'; 400])).await.is_err() {
            break;
        }
    }
    drop(tx);
    let resp = pending.await??;
    assert_eq!(resp.status(), 413, "a streamed body over the limit is refused");
    let m = gw.metrics().await?;
    assert_eq!(
        metric(&m, "gateway_request_errors_total", &[("reason", "body_too_large")]),
        Some(2.0)
    );
    // 414
    let long = format!("/{}", "a".repeat(300));
    assert_problem(&send(addr, request("x", &long)).await?, 414, "uri-too-long");
    // 431 by count and by size.
    let mut req = request("x", "/");
    for i in 0..25 {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(format!("x-h{i}").as_bytes())?,
            http::HeaderValue::from_static("v"),
        );
    }
    assert_problem(&send(addr, req).await?, 431, "head-too-large");
    let mut req = request("x", "/");
    req.headers_mut()
        .insert("x-big", http::HeaderValue::from_str(&"v".repeat(5000))?);
    assert_problem(&send(addr, req).await?, 431, "head-too-large");
    // 400: HTTP/1.1 without Host.
    let req = http::Request::get("/").body(Full::new(Bytes::new()))?;
    let r = send(addr, req).await?;
    assert_eq!(r.status(), 400);
    Ok(())
}

#[tokio::test]
async fn more_than_a_hundred_headers_when_configured() -> anyhow::Result<()> {
    let up = Upstream::start("up", "127.0.0.1:0".parse()?).await?;
    let yaml = format!(
        "listeners: [{{ name: http, address: \"127.0.0.1:0\" }}]\nadmin: {{ address: \"127.0.0.1:0\" }}\n\
         limits: {{ max_headers: 150 }}\nroutes: [{{ name: r, upstream: up }}]\nupstreams: [{{ name: up, endpoints: [\"http://{}\"] }}]\n",
        up.addr()
    );
    let gw = TestGateway::start(&yaml).await?;
    let mut req = request("x", "/");
    for i in 0..120 {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(format!("x-h{i}").as_bytes())?,
            http::HeaderValue::from_static("v"),
        );
    }
    let r = send(gw.addr("http"), req).await?;
    assert_eq!(r.status(), 200);
    assert_eq!(json(&r)["headers"]["x-h119"], "v");
    let mut req = request("x", "/");
    for i in 0..160 {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(format!("x-h{i}").as_bytes())?,
            http::HeaderValue::from_static("v"),
        );
    }
    assert_problem(&send(gw.addr("http"), req).await?, 431, "head-too-large");
    Ok(())
}

#[tokio::test]
async fn a_split_sends_its_share_of_requests_to_other_pools() -> anyhow::Result<()> {
    let stable = Upstream::start("stable", "127.0.0.1:0".parse()?).await?;
    let canary = Upstream::start("canary", "127.0.0.1:0".parse()?).await?;
    let next = Upstream::start("next", "127.0.0.1:0".parse()?).await?;
    let yaml = format!(
        r#"
routes:
  - name: api
    upstream: stable
    split: [{{ upstream: canary, percent: 25 }}]
    match: {{ host: api.test }}
  - name: moved
    upstream: stable
    split: [{{ upstream: next, percent: 100 }}]
    match: {{ host: moved.test }}
  - name: sticky
    upstream: stable
    split: [{{ upstream: canary, percent: 50 }}]
    split_by: client
    match: {{ host: sticky.test }}
upstreams:
  - {{ name: stable, endpoints: ["http://{}"] }}
  - {{ name: canary, endpoints: ["http://{}"] }}
  - {{ name: next, endpoints: ["http://{}"] }}
"#,
        stable.addr(),
        canary.addr(),
        next.addr()
    );
    let gw = TestGateway::plain(&yaml).await?;
    let addr = gw.addr("http");
    let mut to_canary = 0;
    for _ in 0..400 {
        let r = send(addr, request("api.test", "/")).await?;
        assert_eq!(r.status(), 200);
        match r.headers()["x-upstream"].to_str()? {
            "canary" => to_canary += 1,
            "stable" => {}
            other => anyhow::bail!("unexpected upstream {other}"),
        }
    }
    // Each request is drawn on its own: about 100 of 400 (50 to 150 is more than five standard
    // deviations either way).
    assert!((50..=150).contains(&to_canary), "{to_canary} of 400 to the canary");
    for _ in 0..5 {
        assert_eq!(
            send(addr, request("moved.test", "/")).await?.headers()["x-upstream"],
            "next"
        );
    }
    // By client: each address stays on one side (16 clients: all on one side has odds 2 in 65536).
    let mut sides = std::collections::BTreeSet::new();
    for last in 10..26u8 {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..5 {
            let r = gateway_tests::send_from(
                std::net::IpAddr::from([127, 0, 0, last]),
                addr,
                request("sticky.test", "/"),
            )
            .await?;
            seen.insert(r.headers()["x-upstream"].to_str()?.to_string());
        }
        assert_eq!(seen.len(), 1, "127.0.0.{last} went to {seen:?}");
        sides.extend(seen);
    }
    assert_eq!(sides.len(), 2, "clients are spread over both pools: {sides:?}");
    let m = gw.metrics().await?;
    let split =
        |route: &str, pool: &str| metric(&m, "gateway_split_requests_total", &[("route", route), ("pool", pool)]);
    assert_eq!(split("api", "canary"), Some(f64::from(to_canary)));
    assert_eq!(split("moved", "next"), Some(5.0));
    Ok(())
}

#[tokio::test]
async fn routes_serve_only_the_client_addresses_they_allow() -> anyhow::Result<()> {
    let up = Upstream::start("up", "127.0.0.1:0".parse()?).await?;
    let yaml = format!(
        r#"
trusted_proxies: [127.0.0.9]
routes:
  - name: internal
    upstream: up
    match: {{ path_prefix: /internal }}
    clients: {{ allow: [127.0.0.0/29, "10.1.0.0/16"], deny: [127.0.0.3] }}
  - {{ name: open, upstream: up }}
upstreams: [{{ name: up, endpoints: ["http://{}"] }}]
"#,
        up.addr()
    );
    let gw = TestGateway::plain(&yaml).await?;
    let addr = gw.addr("http");
    let from = |last: u8| std::net::IpAddr::from([127, 0, 0, last]);
    let status = |r: &Collected| r.status().as_u16();
    assert_eq!(
        status(&gateway_tests::send_from(from(2), addr, request("x", "/internal")).await?),
        200
    );
    // Denied inside the allowed block; outside it.
    let r = gateway_tests::send_from(from(3), addr, request("x", "/internal")).await?;
    assert_problem(&r, 403, "client-not-allowed");
    let r = gateway_tests::send_from(from(20), addr, request("x", "/internal")).await?;
    assert_problem(&r, 403, "client-not-allowed");
    // Other routes serve everyone.
    assert_eq!(
        status(&gateway_tests::send_from(from(20), addr, request("x", "/")).await?),
        200
    );
    // Behind a trusted proxy, the address it saw counts; from anyone else, the header is ignored.
    let mut proxied = request("x", "/internal");
    proxied
        .headers_mut()
        .insert("x-forwarded-for", http::HeaderValue::from_static("10.1.2.3"));
    assert_eq!(status(&gateway_tests::send_from(from(9), addr, proxied).await?), 200);
    let mut forged = request("x", "/internal");
    forged
        .headers_mut()
        .insert("x-forwarded-for", http::HeaderValue::from_static("10.1.2.3"));
    let r = gateway_tests::send_from(from(20), addr, forged).await?;
    assert_problem(&r, 403, "client-not-allowed");
    let m = gw.metrics().await?;
    assert_eq!(
        metric(&m, "gateway_request_errors_total", &[("reason", "client_not_allowed")]),
        Some(3.0)
    );
    Ok(())
}

#[tokio::test]
async fn header_conditions_pick_a_route_before_the_plain_one() -> anyhow::Result<()> {
    let stable = Upstream::start("stable", "127.0.0.1:0".parse()?).await?;
    let canary = Upstream::start("canary", "127.0.0.1:0".parse()?).await?;
    let debug = Upstream::start("debug", "127.0.0.1:0".parse()?).await?;
    let deep = Upstream::start("deep", "127.0.0.1:0".parse()?).await?;
    // File order puts the plain route first: header conditions still win at the same prefix,
    // and a longer prefix still wins over them.
    let yaml = format!(
        r#"
routes:
  - {{ name: api, upstream: stable, match: {{ host: api.test }} }}
  - {{ name: api-canary, upstream: canary, match: {{ host: api.test, headers: {{ X-Canary: "1" }} }} }}
  - {{ name: api-debug, upstream: debug, match: {{ host: api.test, headers: {{ x-debug: "*" }} }} }}
  - {{ name: api-deep, upstream: deep, match: {{ host: api.test, path_prefix: /deep }} }}
upstreams:
  - {{ name: stable, endpoints: ["http://{}"] }}
  - {{ name: canary, endpoints: ["http://{}"] }}
  - {{ name: debug, endpoints: ["http://{}"] }}
  - {{ name: deep, endpoints: ["http://{}"] }}
"#,
        stable.addr(),
        canary.addr(),
        debug.addr(),
        deep.addr()
    );
    let gw = TestGateway::plain(&yaml).await?;
    let addr = gw.addr("http");
    let who = |path: &str, headers: &[(&'static str, &'static str)]| {
        let mut req = request("api.test", path);
        for (k, v) in headers {
            req.headers_mut().append(*k, http::HeaderValue::from_static(v));
        }
        async move {
            let r = send(addr, req).await?;
            anyhow::Ok(r.headers()["x-upstream"].to_str()?.to_string())
        }
    };
    assert_eq!(who("/", &[]).await?, "stable");
    assert_eq!(who("/", &[("x-canary", "1")]).await?, "canary");
    assert_eq!(who("/", &[("x-canary", "2")]).await?, "stable");
    assert_eq!(who("/", &[("x-canary", "2"), ("x-canary", "1")]).await?, "canary");
    assert_eq!(who("/", &[("x-debug", "")]).await?, "debug");
    assert_eq!(who("/deep/x", &[("x-canary", "1")]).await?, "deep");
    Ok(())
}

#[tokio::test]
async fn a_pool_may_send_its_endpoints_their_own_host() -> anyhow::Result<()> {
    let up = Upstream::start("up", "127.0.0.1:0".parse()?).await?;
    let yaml = format!(
        r#"
routes:
  - {{ name: own, upstream: own, match: {{ path_prefix: /own }} }}
  - {{ name: kept, upstream: kept }}
upstreams:
  - {{ name: own, endpoints: ["http://{up}"], host: endpoint }}
  - {{ name: kept, endpoints: ["http://{up}"] }}
"#,
        up = up.addr()
    );
    let gw = TestGateway::plain(&yaml).await?;
    let addr = gw.addr("http");
    let seen = json(&send(addr, request("shop.example", "/own/x")).await?);
    assert_eq!(seen["headers"]["host"], up.addr().to_string());
    assert_eq!(
        seen["headers"]["x-forwarded-host"], "shop.example",
        "the original stays known"
    );
    let seen = json(&send(addr, request("shop.example", "/x")).await?);
    assert_eq!(seen["headers"]["host"], "shop.example");
    Ok(())
}

#[tokio::test]
async fn routes_may_answer_by_themselves() -> anyhow::Result<()> {
    let up = Upstream::start("up", "127.0.0.1:0".parse()?).await?;
    let gw = TestGateway::plain(&format!(
        r#"
routes:
  - {{ name: moved, match: {{ host: old.test }}, redirect: {{ to: "https://new.example.com/" }} }}
  - {{ name: docs, match: {{ path_prefix: /docs }}, redirect: {{ to: /v2/docs, status: 308, keep_path: false }} }}
  - name: shop
    match: {{ path_prefix: /shop }}
    respond: {{ status: 503, body: "Back at noon", content_type: text/plain }}
    response_headers: {{ set: {{ retry-after: "3600" }} }}
  - {{ name: app, upstream: up }}
upstreams: [{{ name: up, endpoints: ["http://{}"] }}]
"#,
        up.addr()
    ))
    .await?;
    let addr = gw.addr("http");
    let r = send(addr, request("old.test", "/a/b?x=1")).await?;
    assert_eq!(r.status(), 301);
    assert_eq!(r.headers()["location"], "https://new.example.com/a/b?x=1");
    assert!(r.headers().contains_key("x-request-id"));
    let r = send(addr, request("x", "/docs/intro?lang=en")).await?;
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], "/v2/docs");
    let r = send(addr, request("x", "/shop/cart")).await?;
    assert_eq!(r.status(), 503);
    assert_eq!(r.body().as_ref(), b"Back at noon");
    assert_eq!(r.headers()["content-type"], "text/plain");
    assert_eq!(r.headers()["retry-after"], "3600");
    assert_eq!(send(addr, request("x", "/other")).await?.status(), 200);
    let m = gw.metrics().await?;
    assert_eq!(
        metric(
            &m,
            "gateway_requests_total",
            &[("route", "moved"), ("status_class", "3xx")]
        ),
        Some(1.0)
    );
    Ok(())
}
