//! OpenTelemetry traces exported over OTLP/gRPC and OTLP/HTTP to a receiver built on the
//! official protobuf definitions: the span tree (request → identity, decision, upstream) with
//! its parent links, the resource, the caller's trace continued from a trusted `traceparent`,
//! and the `traceparent` the upstream receives.

use std::time::Duration;

use bytes::Bytes;
use gateway_tests::{json, send, OtlpReceiver, ReceivedSpan, TestGateway, Upstream};
use http_body_util::Full;

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn gateway(up: &Upstream, issuer: &str, traces: &str) -> anyhow::Result<TestGateway> {
    let yaml = format!(
        r#"
listeners: [{{ name: http, address: "127.0.0.1:0" }}]
admin: {{ address: "127.0.0.1:0" }}
trusted_proxies: [127.0.0.1]
identity: {{ providers: [{{ name: demo, issuer: "{issuer}", audiences: [demo-api] }}] }}
routes:
  - {{ name: api, upstream: up, match: {{ path_prefix: /api }}, auth: {{ bearer: demo }} }}
  - {{ name: open, upstream: up }}
upstreams: [{{ name: up, endpoints: ["http://{up}"] }}]
telemetry: {{ traces: {{ {traces}, service_name: edge, instance: edge-1 }} }}
"#,
        up = up.addr()
    );
    TestGateway::start(&yaml).await
}

fn request(path: &str, token: Option<&str>, traceparent: Option<String>) -> http::Request<Full<Bytes>> {
    let mut r = http::Request::get(path).header("host", "api.test");
    if let Some(t) = token {
        r = r.header("authorization", format!("Bearer {t}"));
    }
    if let Some(tp) = traceparent {
        r = r.header("traceparent", tp).header("tracestate", "vendor=opaque");
    }
    r.body(Full::new(Bytes::new())).expect("request")
}

/// Checks the tree of one request's spans and returns the upstream span's id.
fn check_tree(spans: &[ReceivedSpan], transport: &str) -> String {
    let by_name = |n: &str| {
        spans.iter().find(|s| s.span.name == n).unwrap_or_else(|| {
            panic!(
                "a {n} span in {:?}",
                spans.iter().map(|s| &s.span.name).collect::<Vec<_>>()
            )
        })
    };
    let root = by_name("GET api");
    assert_eq!(root.transport, transport);
    assert_eq!(hex(&root.span.trace_id), CALLER_TRACE, "the caller's trace continues");
    assert_eq!(hex(&root.span.parent_span_id), CALLER_SPAN, "under the caller's span");
    assert_eq!(root.attr("http.response.status_code").as_deref(), Some("200"));
    assert_eq!(root.attr("http.route").as_deref(), Some("api"));
    assert_eq!(root.attr("enduser.id").as_deref(), Some("alice"));
    assert_eq!(root.attr("gateway.decision").as_deref(), Some("allow"));
    assert_eq!(root.resource.get("service.name").map(String::as_str), Some("edge"));
    assert_eq!(
        root.resource.get("service.instance.id").map(String::as_str),
        Some("edge-1")
    );
    assert!(root.resource.contains_key("service.version"));
    for child in ["identity", "decision", "upstream"] {
        let c = by_name(child);
        assert_eq!(c.span.trace_id, root.span.trace_id);
        assert_eq!(
            c.span.parent_span_id, root.span.span_id,
            "{child} is a child of the request"
        );
        assert!(c.span.start_time_unix_nano >= root.span.start_time_unix_nano);
        assert!(c.span.end_time_unix_nano <= root.span.end_time_unix_nano);
    }
    let upstream = by_name("upstream");
    assert_eq!(upstream.attr("http.response.status_code").as_deref(), Some("200"));
    hex(&upstream.span.span_id)
}

async fn round_trip(protocol: &str) -> anyhow::Result<()> {
    let receiver = OtlpReceiver::start().await?;
    let endpoint = match protocol {
        "grpc" => receiver.grpc,
        _ => receiver.http,
    };
    let issuer = gateway::demo::Issuer::start().await?;
    let up = Upstream::start("up", "127.0.0.1:0".parse()?).await?;
    let gw = gateway(
        &up,
        &issuer.issuer(),
        &format!("endpoint: \"http://{endpoint}\", protocol: {protocol}, sampling_ratio: 1.0"),
    )
    .await?;
    let token = issuer.token("alice", "read", "urn:pwd", Duration::from_secs(300));
    let parent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let mut r = send(gw.addr("http"), request("/api/x", Some(&token), Some(parent.clone()))).await?;
    for _ in 0..50 {
        if r.status() != 503 {
            break;
        }
        // The issuer's keys load in the background.
        tokio::time::sleep(Duration::from_millis(50)).await;
        r = send(gw.addr("http"), request("/api/x", Some(&token), Some(parent.clone()))).await?;
    }
    assert_eq!(r.status(), 200);
    let seen = json(&r)["headers"].clone();
    // Stopping flushes the batch exporter.
    let TestGateway { gw, dir: _dir } = gw;
    gw.shutdown(Duration::from_secs(5)).await;
    let spans = receiver.spans(4).await;
    let api: Vec<ReceivedSpan> = spans
        .into_iter()
        .filter(|s| hex(&s.span.trace_id) == CALLER_TRACE && s.attr("http.response.status_code") != Some("503".into()))
        .collect();
    let mine: Vec<ReceivedSpan> = {
        // The last request's tree: the root that answered 200 and its children.
        let root = api
            .iter()
            .find(|s| s.span.name == "GET api" && s.attr("http.response.status_code").as_deref() == Some("200"))
            .expect("the request span");
        api.iter()
            .filter(|s| s.span.span_id == root.span.span_id || s.span.parent_span_id == root.span.span_id)
            .cloned()
            .collect()
    };
    let upstream_span = check_tree(&mine, protocol);
    // The upstream is told about the gateway's upstream span, in the caller's trace.
    assert_eq!(
        seen["traceparent"].as_str(),
        Some(format!("00-{CALLER_TRACE}-{upstream_span}-01").as_str())
    );
    assert_eq!(seen["tracestate"], "vendor=opaque");
    Ok(())
}

#[tokio::test]
async fn spans_over_otlp_grpc() -> anyhow::Result<()> {
    round_trip("grpc").await
}

#[tokio::test]
async fn spans_over_otlp_http() -> anyhow::Result<()> {
    round_trip("http").await
}

#[tokio::test]
async fn unsampled_requests_still_carry_trace_context() -> anyhow::Result<()> {
    let receiver = OtlpReceiver::start().await?;
    let up = Upstream::start("up", "127.0.0.1:0".parse()?).await?;
    let gw = gateway(
        &up,
        "http://127.0.0.1:1",
        &format!("endpoint: \"http://{}\", sampling_ratio: 0.0", receiver.grpc),
    )
    .await?;
    // A new trace, not sampled: the upstream still gets a well-formed traceparent.
    let r = send(gw.addr("http"), request("/open", None, None)).await?;
    let tp = json(&r)["headers"]["traceparent"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    assert_eq!((parts[0], parts[3]), ("00", "00"));
    assert!(parts[1].len() == 32 && parts[2].len() == 16 && parts[1] != "0".repeat(32));
    assert!(json(&r)["headers"].get("tracestate").is_none());
    let TestGateway { gw, dir: _dir } = gw;
    gw.shutdown(Duration::from_secs(5)).await;
    assert!(
        receiver.spans_within(1, Duration::from_millis(300)).await.is_empty(),
        "nothing sampled, nothing exported"
    );
    Ok(())
}

#[tokio::test]
async fn retries_show_on_the_upstream_span() -> anyhow::Result<()> {
    let receiver = OtlpReceiver::start().await?;
    let up = Upstream::start("up", "127.0.0.1:0".parse()?).await?;
    let dead = format!("http://127.0.0.1:{}", gateway_tests::free_port());
    // An endpoint that takes connections and closes them unanswered.
    let closing = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let broken = format!("http://{}", closing.local_addr()?);
    tokio::spawn(async move {
        while let Ok((s, _)) = closing.accept().await {
            drop(s);
        }
    });
    // Round robin starts at the first endpoint: the refusing one; the GET then meets the
    // closing one, and is sent again to the third.
    let yaml = format!(
        r#"
listeners: [{{ name: http, address: "127.0.0.1:0" }}]
admin: {{ address: "127.0.0.1:0" }}
routes: [{{ name: open, upstream: up }}]
upstreams: [{{ name: up, endpoints: ["{dead}", "{broken}", "http://{up}"] }}]
telemetry: {{ traces: {{ endpoint: "http://{otlp}", sampling_ratio: 1.0 }} }}
"#,
        up = up.addr(),
        otlp = receiver.grpc
    );
    let gw = gateway_tests::TestGateway::start(&yaml).await?;
    let r = send(gw.addr("http"), request("/x", None, None)).await?;
    assert_eq!(r.status(), 200);
    let TestGateway { gw, dir: _dir } = gw;
    gw.shutdown(Duration::from_secs(5)).await;
    let spans = receiver.spans(2).await;
    let upstream = spans
        .iter()
        .find(|s| s.span.name == "upstream")
        .expect("an upstream span");
    assert_eq!(upstream.attr("server.address"), Some(format!("http://{}", up.addr())));
    assert_eq!(upstream.attr("gateway.upstream.attempts").as_deref(), Some("3"));
    assert_eq!(upstream.attr("url.path").as_deref(), Some("/x"));
    assert_eq!(upstream.attr("network.protocol.version").as_deref(), Some("1.1"));
    assert_eq!(upstream.attr("http.response.status_code").as_deref(), Some("200"));
    let events: Vec<_> = upstream
        .span
        .events
        .iter()
        .map(|e| {
            let at = e
                .attributes
                .iter()
                .find(|kv| kv.key == "server.address")
                .and_then(|kv| kv.value.as_ref())
                .and_then(|v| v.value.clone());
            (e.name.as_str(), at)
        })
        .collect();
    let text = |s: &str| {
        Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
            s.to_string(),
        ))
    };
    assert_eq!(
        events,
        [("connect_failed", text(&dead)), ("exchange_failed", text(&broken))],
        "{:?}",
        upstream.span.events
    );
    Ok(())
}
