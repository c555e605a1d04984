//! CORS: a route's policy answers preflights before authentication and rate limits (routed by
//! the method they ask for), refuses what it does not allow with a problem body, and puts its
//! headers on every answer to an allowed origin, the gateway's own errors included.

use bytes::Bytes;
use gateway_tests::{json, metric, send, TestGateway, Upstream};
use http_body_util::Full;

fn from(origin: &str, method: &str, path: &str, extra: &[(&str, &str)]) -> anyhow::Result<http::Request<Full<Bytes>>> {
    let mut b = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "api.test")
        .header("origin", origin);
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    Ok(b.body(Full::new(Bytes::new()))?)
}

#[tokio::test]
async fn preflights_and_answers_follow_the_route_policy() -> anyhow::Result<()> {
    let up = Upstream::start("up", "127.0.0.1:0".parse()?).await?;
    // The provider is never reached: a request without a token is refused before keys matter.
    let dead = gateway_tests::free_port();
    let yaml = format!(
        r#"
listeners: [{{ name: http, address: "127.0.0.1:0" }}]
admin: {{ address: "127.0.0.1:0" }}
identity:
  providers: [{{ name: corp, issuer: "http://127.0.0.1:{dead}", audiences: [api] }}]
routes:
  - name: api
    upstream: up
    match: {{ path_prefix: /api }}
    auth: {{ bearer: corp }}
    rate_limit: {{ rate: 3/h }}         # three requests; preflights do not count
    cors:
      allow_origins: ["https://app.example.com", "https://*.tenants.example.com"]
      allow_methods: [GET, POST]
      allow_headers: [authorization, content-type, x-trace]
      max_age: 10m
      allow_credentials: true
  - name: open
    upstream: up
    match: {{ path_prefix: /open, methods: [GET] }}
    cors: {{ allow_origins: ["*"] }}
upstreams: [{{ name: up, endpoints: ["http://{}"] }}]
"#,
        up.addr()
    );
    let gw = TestGateway::start(&yaml).await?;
    let addr = gw.addr("http");
    let app = "https://app.example.com";
    let ask = [
        ("access-control-request-method", "POST"),
        ("access-control-request-headers", "Authorization, X-Trace"),
    ];

    // Preflights: answered by the gateway, without a token, and more often than the rate limit
    // would let requests through.
    for origin in [app, "https://a.tenants.example.com"] {
        let r = send(addr, from(origin, "OPTIONS", "/api/orders", &ask)?).await?;
        assert_eq!(r.status(), 204, "{:?}", r.body());
        let h = r.headers();
        assert_eq!(h["access-control-allow-origin"], origin);
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert_eq!(h["access-control-allow-methods"], "GET, POST");
        assert_eq!(
            h["access-control-allow-headers"],
            "authorization, content-type, x-trace"
        );
        assert_eq!(h["access-control-max-age"], "600");
        assert_eq!(h["vary"], "origin");
        assert!(h.contains_key("x-request-id"));
    }
    // What the policy does not allow is refused, and says so.
    for (origin, extra) in [
        ("https://evil.test", &ask[..]),
        (app, &[("access-control-request-method", "DELETE")][..]),
        (
            app,
            &[
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "x-secret"),
            ][..],
        ),
    ] {
        let r = send(addr, from(origin, "OPTIONS", "/api/orders", extra)?).await?;
        assert_eq!(r.status(), 403, "{origin} {extra:?}");
        assert_eq!(json(&r)["type"], "urn:gateway:problem:cors-refused");
        assert!(r.headers().get("access-control-allow-methods").is_none());
    }

    // The real request: refused for want of a token, and the browser may read why.
    let r = send(addr, from(app, "GET", "/api/orders", &[])?).await?;
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["access-control-allow-origin"], app);
    assert_eq!(r.headers()["access-control-expose-headers"], "x-request-id");
    // Another origin's answers carry nothing a browser would hand to its script.
    let r = send(addr, from("https://evil.test", "GET", "/api/orders", &[])?).await?;
    assert!(r.headers().get("access-control-allow-origin").is_none());

    // Any origin, no credentials: `*`, on the upstream's answer.
    let r = send(addr, from("https://whoever.test", "GET", "/open/x", &[])?).await?;
    assert_eq!(r.status(), 200);
    assert_eq!(json(&r)["upstream"], "up");
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    assert!(r.headers().get("access-control-allow-credentials").is_none());
    // Preflights are routed by the method they ask for: /open matches GET only.
    let get = [("access-control-request-method", "GET")];
    let r = send(addr, from(app, "OPTIONS", "/open/x", &get)?).await?;
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    let delete = [("access-control-request-method", "DELETE")];
    assert_eq!(
        send(addr, from(app, "OPTIONS", "/open/x", &delete)?).await?.status(),
        405
    );
    // A plain OPTIONS (not a preflight) is routed like any request.
    let r = send(addr, from(app, "OPTIONS", "/api/x", &[])?).await?;
    assert_eq!(r.status(), 401);

    let m = gw.metrics().await?;
    let count = |result: &str| {
        metric(
            &m,
            "gateway_cors_preflights_total",
            &[("route", "api"), ("result", result)],
        )
    };
    assert_eq!(count("allowed"), Some(2.0));
    assert_eq!(count("refused"), Some(3.0));
    assert_eq!(
        metric(&m, "gateway_request_errors_total", &[("reason", "cors_refused")]),
        Some(3.0)
    );
    Ok(())
}
