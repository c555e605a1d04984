//! Upstream connection pooling: keep-alive connections are reused, an upstream that closes
//! its connections costs no failed request, and idle connections are closed after
//! `idle_timeout`; requests that can be sent again are retried after a broken exchange or a
//! listed status, the others are not; an endpoint at `max_in_flight_per_endpoint` takes no more
//! requests. The upstreams here are raw HTTP/1.1 servers that count
//! connections and requests.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use gateway_tests::{assert_eventually, json, metric, next_head, raw_server, request, send, Connections, TestGateway};
use tokio::io::AsyncWriteExt;

#[derive(Default)]
struct Counts {
    /// Connections accepted and closed.
    conns: Arc<Connections>,
    requests: AtomicUsize,
    /// Lets `Mode::Hold` answer.
    released: AtomicBool,
}

/// How the raw upstream treats the requests on a connection.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// `200 ok`, keeping the connection.
    KeepAlive,
    /// `200 ok`, then closes.
    CloseEach,
    /// `200 ok` to the first request; reads the second and closes without an answer, as an
    /// upstream closing an idle connection just as a request arrives.
    DropSecond,
    /// `503` to every request, keeping the connection.
    Unavailable,
    /// `200 ok` once `released` is set.
    Hold,
}

/// A raw HTTP/1.1 upstream counting connections and requests (heads; bodies are not read).
async fn counting_upstream(mode: Mode) -> anyhow::Result<(std::net::SocketAddr, Arc<Counts>)> {
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    let addr = raw_server(counts.conns.clone(), move |mut s, _| {
        let c = c.clone();
        async move {
            let mut buf = Vec::new();
            let mut served = 0;
            while next_head(&mut s, &mut buf).await.is_some() {
                c.requests.fetch_add(1, Ordering::SeqCst);
                served += 1;
                while mode == Mode::Hold && !c.released.load(Ordering::SeqCst) {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                let head: &[u8] = match mode {
                    Mode::DropSecond if served == 2 => break,
                    Mode::CloseEach => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    Mode::Unavailable => b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy",
                    _ => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
                };
                if s.write_all(head).await.is_err() || mode == Mode::CloseEach {
                    break;
                }
            }
        }
    })
    .await?;
    Ok((addr, counts))
}

async fn gateway(upstream: std::net::SocketAddr, idle: &str) -> anyhow::Result<TestGateway> {
    let yaml = format!(
        "listeners: [{{ name: http, address: \"127.0.0.1:0\" }}]\nadmin: {{ address: \"127.0.0.1:0\" }}\n\
         routes: [{{ name: r, upstream: u }}]\nupstreams: [{{ name: u, endpoints: [\"http://{upstream}\"], idle_timeout: {idle} }}]\n"
    );
    TestGateway::start(&yaml).await
}

#[tokio::test]
async fn keep_alive_connections_are_reused() -> anyhow::Result<()> {
    let (up, counts) = counting_upstream(Mode::KeepAlive).await?;
    let gw = gateway(up, "60s").await?;
    for _ in 0..20 {
        let r = send(gw.addr("http"), request("x", "/")).await?;
        assert_eq!(r.status(), 200);
        assert_eq!(r.body().as_ref(), b"ok");
    }
    assert_eq!(
        counts.conns.opened.load(Ordering::SeqCst),
        1,
        "one upstream connection serves sequential requests"
    );
    Ok(())
}

#[tokio::test]
async fn an_upstream_closing_connections_costs_no_request() -> anyhow::Result<()> {
    let (up, counts) = counting_upstream(Mode::CloseEach).await?;
    let gw = gateway(up, "60s").await?;
    for i in 0..20 {
        let r = send(gw.addr("http"), request("x", "/")).await?;
        assert_eq!(r.status(), 200, "request {i}");
    }
    assert_eq!(
        counts.conns.opened.load(Ordering::SeqCst),
        20,
        "a closed connection is never reused"
    );
    Ok(())
}

#[tokio::test]
async fn idle_connections_close_after_idle_timeout() -> anyhow::Result<()> {
    let (up, counts) = counting_upstream(Mode::KeepAlive).await?;
    let gw = gateway(up, "300ms").await?;
    assert_eq!(send(gw.addr("http"), request("x", "/")).await?.status(), 200);
    assert_eq!(counts.conns.opened.load(Ordering::SeqCst), 1);
    assert_eventually!(
        counts.conns.closed.load(Ordering::SeqCst) == 1,
        "the idle upstream connection is closed"
    );
    // The next request opens a fresh connection.
    assert_eq!(send(gw.addr("http"), request("x", "/")).await?.status(), 200);
    assert_eq!(counts.conns.opened.load(Ordering::SeqCst), 2);
    Ok(())
}

async fn metrics_of(gw: &TestGateway, pool: &str, reason: &str) -> anyhow::Result<Option<f64>> {
    let m = gw.metrics().await?;
    Ok(metric(
        &m,
        "gateway_upstream_retries_total",
        &[("pool", pool), ("reason", reason)],
    ))
}

#[tokio::test]
async fn a_request_a_pooled_connection_dropped_is_sent_again_when_it_can_be() -> anyhow::Result<()> {
    let (up, counts) = counting_upstream(Mode::DropSecond).await?;
    let (up_once, counts_once) = counting_upstream(Mode::DropSecond).await?;
    let yaml = format!(
        r#"
listeners: [{{ name: http, address: "127.0.0.1:0" }}]
admin: {{ address: "127.0.0.1:0" }}
routes:
  - {{ name: r, upstream: u, match: {{ host: retry.test }} }}
  - {{ name: once, upstream: once, match: {{ host: once.test }} }}
upstreams:
  - {{ name: u, endpoints: ["http://{up}"] }}
  - {{ name: once, endpoints: ["http://{up_once}"], retry: {{ attempts: 1 }} }}
"#
    );
    let gw = TestGateway::start(&yaml).await?;
    let addr = gw.addr("http");
    // The second GET goes out on the pooled connection, which the upstream drops unanswered;
    // sent again on a new connection, it is answered.
    for i in 0..2 {
        let r = send(addr, request("retry.test", "/")).await?;
        assert_eq!(r.status(), 200, "GET {i}: {:?}", r.body());
        assert_eq!(r.body().as_ref(), b"ok");
    }
    assert_eq!(
        counts.conns.opened.load(Ordering::SeqCst),
        2,
        "the retry took a new connection"
    );
    assert_eq!(counts.requests.load(Ordering::SeqCst), 3);
    assert_eq!(metrics_of(&gw, "u", "reset").await?, Some(1.0));
    // A POST with a body may have been acted on: never sent twice. (Requests with a body
    // have connections of their own: the first POST opens one, the second goes out on it.)
    let post = || {
        http::Request::post("/")
            .header("host", "retry.test")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(b"once only")))
    };
    assert_eq!(send(addr, post()?).await?.status(), 200);
    let r = send(addr, post()?).await?;
    assert_eq!(r.status(), 502, "{:?}", r.body());
    assert_eq!(json(&r)["type"], "urn:gateway:problem:upstream-protocol");
    assert_eq!(
        counts.requests.load(Ordering::SeqCst),
        5,
        "the second POST went out once"
    );
    assert_eq!(metrics_of(&gw, "u", "reset").await?, Some(1.0));
    // With `attempts: 1`, the dropped GET is answered 502.
    assert_eq!(send(addr, request("once.test", "/")).await?.status(), 200);
    assert_eq!(send(addr, request("once.test", "/")).await?.status(), 502);
    assert_eq!(counts_once.requests.load(Ordering::SeqCst), 2);
    assert_eq!(metrics_of(&gw, "once", "reset").await?, Some(0.0));
    let m = gw.metrics().await?;
    assert_eq!(
        metric(
            &m,
            "gateway_upstream_errors_total",
            &[("pool", "u"), ("kind", "protocol")]
        ),
        Some(2.0),
        "every broken exchange counts, retried or not"
    );
    Ok(())
}

#[tokio::test]
async fn listed_statuses_are_retried_on_another_endpoint() -> anyhow::Result<()> {
    let good = gateway_tests::Upstream::start("good", "127.0.0.1:0".parse()?).await?;
    let (busy, _) = counting_upstream(Mode::Unavailable).await?;
    let (alone, alone_counts) = counting_upstream(Mode::Unavailable).await?;
    let good = good.addr();
    // Health never ejects here, so the busy endpoint keeps its turn.
    let yaml = format!(
        r#"
listeners: [{{ name: http, address: "127.0.0.1:0" }}]
admin: {{ address: "127.0.0.1:0" }}
routes:
  - {{ name: s, upstream: s, match: {{ host: s.test }} }}
  - {{ name: n, upstream: n, match: {{ host: n.test }} }}
  - {{ name: alone, upstream: alone, match: {{ host: alone.test }} }}
upstreams:
  - name: s
    endpoints: ["http://{busy}", "http://{good}"]
    retry: {{ statuses: [503] }}
    health: {{ consecutive_failures: 1000 }}
  - name: n
    endpoints: ["http://{busy}", "http://{good}"]
    health: {{ consecutive_failures: 1000 }}
  - name: alone
    endpoints: ["http://{alone}"]
    retry: {{ attempts: 3, statuses: [502, 503] }}
    health: {{ consecutive_failures: 1000 }}
"#
    );
    let gw = TestGateway::start(&yaml).await?;
    let addr = gw.addr("http");
    for i in 0..6 {
        let r = send(addr, request("s.test", "/")).await?;
        assert_eq!(r.status(), 200, "GET {i}");
        assert_eq!(r.headers()["x-upstream"], "good");
    }
    assert_eq!(metrics_of(&gw, "s", "status").await?, Some(3.0));
    // A POST is not sent again: the busy endpoint's answer passes as it is.
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let post = http::Request::post("/")
            .header("host", "s.test")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(b"x")))?;
        statuses.push(send(addr, post).await?.status().as_u16());
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 503]);
    // Without `statuses`, a 503 is passed on.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(send(addr, request("n.test", "/")).await?.status().as_u16());
    }
    assert_eq!(statuses.iter().filter(|&&s| s == 503).count(), 2, "{statuses:?}");
    // One endpoint: tried `attempts` times, then its last answer is passed on.
    let r = send(addr, request("alone.test", "/")).await?;
    assert_eq!(r.status(), 503);
    assert_eq!(r.body().as_ref(), b"busy");
    assert_eq!(alone_counts.requests.load(Ordering::SeqCst), 3);
    assert_eq!(metrics_of(&gw, "alone", "status").await?, Some(2.0));
    assert_eq!(metrics_of(&gw, "n", "status").await?, Some(0.0));
    Ok(())
}

#[tokio::test]
async fn endpoints_at_their_in_flight_cap_take_no_more() -> anyhow::Result<()> {
    let (a, a_counts) = counting_upstream(Mode::Hold).await?;
    let (b, b_counts) = counting_upstream(Mode::Hold).await?;
    let yaml = format!(
        r#"
listeners: [{{ name: http, address: "127.0.0.1:0" }}]
admin: {{ address: "127.0.0.1:0" }}
routes: [{{ name: r, upstream: u }}]
upstreams:
  - {{ name: u, endpoints: ["http://{a}", "http://{b}"], max_in_flight_per_endpoint: 2 }}
"#
    );
    let gw = TestGateway::start(&yaml).await?;
    let addr = gw.addr("http");
    // Four held requests fill both endpoints: round robin alternates, and each takes two.
    let held: Vec<_> = (0..4)
        .map(|_| tokio::spawn(async move { send(addr, request("x", "/")).await }))
        .collect();
    assert_eventually!(
        a_counts.requests.load(Ordering::SeqCst) == 2 && b_counts.requests.load(Ordering::SeqCst) == 2,
        "both endpoints hold two requests"
    );
    // A fifth finds no place: 503 at once, without reaching an endpoint.
    let r = send(addr, request("x", "/")).await?;
    assert_eq!(r.status(), 503, "{:?}", r.body());
    assert_eq!(json(&r)["type"], "urn:gateway:problem:upstream-overloaded");
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(
        a_counts.requests.load(Ordering::SeqCst) + b_counts.requests.load(Ordering::SeqCst),
        4
    );
    let in_flight = |m: &str| metric(m, "gateway_upstream_requests_in_flight", &[("pool", "u")]);
    assert_eq!(in_flight(&gw.metrics().await?), Some(4.0));
    a_counts.released.store(true, Ordering::SeqCst);
    b_counts.released.store(true, Ordering::SeqCst);
    for h in held {
        assert_eq!(h.await??.status(), 200);
    }
    // Places come back as requests end.
    assert_eq!(send(addr, request("x", "/")).await?.status(), 200);
    let m = gw.metrics().await?;
    assert_eq!(in_flight(&m), Some(0.0));
    assert_eq!(
        metric(
            &m,
            "gateway_upstream_errors_total",
            &[("pool", "u"), ("kind", "overloaded")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &m,
            "gateway_request_errors_total",
            &[("side", "upstream"), ("reason", "upstream_overloaded")]
        ),
        Some(1.0)
    );
    Ok(())
}
