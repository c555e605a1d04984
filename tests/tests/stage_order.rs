//! The pipeline's stage order (see `gateway/README.md`): a request that breaks the rules of two
//! stages gets the answer of the earlier one. Head checks → route → identify → body limit →
//! endpoint.

use bytes::Bytes;
use gateway_tests::{json, send, TestGateway, Upstream};
use http_body_util::Full;

#[tokio::test]
async fn earlier_stages_answer_first() -> anyhow::Result<()> {
    let up = Upstream::start("up", "127.0.0.1:0".parse()?).await?;
    // The provider never answers, so identify has no keys: 503 if it were ever reached.
    let idp = gateway_tests::free_port();
    let dead = gateway_tests::free_port();
    let yaml = format!(
        r#"
listeners: [{{ name: http, address: "127.0.0.1:0" }}]
admin: {{ address: "127.0.0.1:0" }}
limits: {{ max_uri_bytes: 64, max_body_bytes: 10 }}
identity: {{ providers: [{{ name: idp, issuer: "http://127.0.0.1:{idp}" }}] }}
routes:
  - {{ name: private, upstream: up, match: {{ path_prefix: /private, methods: [GET, POST] }}, auth: {{ bearer: idp }} }}
  - {{ name: open, upstream: dead, match: {{ path_prefix: /open }} }}
upstreams:
  - {{ name: up, endpoints: ["http://{}"] }}
  - {{ name: dead, endpoints: ["http://127.0.0.1:{dead}"] }}
"#,
        up.addr()
    );
    let gw = TestGateway::start(&yaml).await?;
    let addr = gw.addr("http");
    let req = |method: &str, path: &str, body: &'static [u8], token: bool| {
        let mut b = http::Request::builder().method(method).uri(path).header("host", "x");
        if token {
            b = b.header("authorization", "Bearer eyJhbGciOiJFUzI1NiJ9.e30.AA");
        }
        b.body(Full::new(Bytes::from_static(body))).expect("request")
    };
    let kind = |r: &gateway_tests::Collected| json(r)["type"].as_str().unwrap_or("").to_string();

    // Head checks before routing: a URI too long for a path no route has.
    let long = format!("/nowhere/{}", "a".repeat(80));
    let r = send(addr, req("GET", &long, b"", false)).await?;
    assert_eq!(
        (r.status().as_u16(), kind(&r).as_str()),
        (414, "urn:gateway:problem:uri-too-long")
    );
    // Routing before identity: a method the protected route does not take, without a token.
    let r = send(addr, req("DELETE", "/private/x", b"", false)).await?;
    assert_eq!(
        (r.status().as_u16(), kind(&r).as_str()),
        (405, "urn:gateway:problem:method-not-allowed")
    );
    // Identity before the body limit: no token and a body over the limit.
    let r = send(addr, req("POST", "/private/x", b"far more than ten bytes", false)).await?;
    assert_eq!(
        (r.status().as_u16(), kind(&r).as_str()),
        (401, "urn:gateway:problem:missing-token")
    );
    // Identity's own unavailability also comes before the body limit.
    let r = send(addr, req("POST", "/private/x", b"far more than ten bytes", true)).await?;
    assert_eq!(
        (r.status().as_u16(), kind(&r).as_str()),
        (503, "urn:gateway:problem:identity-unavailable")
    );
    // The body limit before the upstream: the open route's upstream is down, but 413 comes first.
    let r = send(addr, req("POST", "/open/x", b"far more than ten bytes", false)).await?;
    assert_eq!(
        (r.status().as_u16(), kind(&r).as_str()),
        (413, "urn:gateway:problem:body-too-large")
    );
    // And then the upstream.
    let r = send(addr, req("POST", "/open/x", b"small", false)).await?;
    assert_eq!(
        (r.status().as_u16(), kind(&r).as_str()),
        (502, "urn:gateway:problem:upstream-connect")
    );
    Ok(())
}
