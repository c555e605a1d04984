//! What the gateway reports to the baseline engine: one `RequestEvent` per request whatever its
//! outcome, `RuntimeSample`s that follow what the runtime does, and a tap that never makes a
//! request wait.

use std::time::Duration;

use baseline_engine::{AuthOutcome, Decision, Method, Outcome, Protocol, RequestEvent, RuntimeSample};
use bytes::Bytes;
use gateway::telemetry::tap::Receiver;
use gateway_tests::{assert_eventually, metric, send, TestGateway, Upstream};
use http_body_util::{BodyExt, Full};

async fn gateway(up: &Upstream, extra: &str) -> anyhow::Result<TestGateway> {
    let closed = gateway_tests::free_port();
    let idp = gateway_tests::free_port();
    let yaml = format!(
        r#"
listeners: [{{ name: http, address: "127.0.0.1:0" }}]
admin: {{ address: "127.0.0.1:0" }}
engine: {{ enabled: false }}
identity: {{ providers: [{{ name: idp, issuer: "http://127.0.0.1:{idp}" }}] }}
routes:
  - {{ name: open, upstream: up, match: {{ path_prefix: /open }} }}
  - {{ name: drain, upstream: up, match: {{ path_prefix: /drain }} }}
  - {{ name: bytes, upstream: up, match: {{ path_prefix: /bytes }} }}
  - {{ name: private, upstream: up, match: {{ path_prefix: /private }}, auth: {{ bearer: idp }} }}
  - {{ name: broken, upstream: gone, match: {{ path_prefix: /broken }} }}
  - {{ name: slow, upstream: slow, match: {{ path_prefix: /delay }} }}
upstreams:
  - {{ name: up, endpoints: ["http://{up}"] }}
  - {{ name: gone, endpoints: ["http://127.0.0.1:{closed}"] }}
  - {{ name: slow, endpoints: ["http://{up}"], request_timeout: 200ms }}
{extra}
"#,
        up = up.addr()
    );
    TestGateway::start(&yaml).await
}

fn request(method: &str, path: &str, body: &'static [u8]) -> http::Request<Full<Bytes>> {
    http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "app.test")
        .header("user-agent", "telemetry-test/1")
        .body(Full::new(Bytes::from_static(body)))
        .expect("request")
}

async fn next_event(rx: &mut Receiver<RequestEvent>) -> anyhow::Result<RequestEvent> {
    gateway_tests::next_from_tap(rx).await
}

#[tokio::test]
async fn a_request_event_for_every_outcome() -> anyhow::Result<()> {
    let up = Upstream::start("up", "127.0.0.1:0".parse()?).await?;
    let gw = gateway(&up, "").await?;
    let (mut events, _) = gw.gw.shared().tap.take_receiver().expect("the tap's receiver");
    let addr = gw.addr("http");

    // Allowed and forwarded, with a body each way.
    let r = send(addr, request("POST", "/drain", b"0123456789")).await?;
    assert_eq!(r.status(), 200);
    let e = next_event(&mut events).await?;
    assert_eq!(e.route.as_deref(), Some("drain"));
    assert_eq!((e.method, e.status), (Method::Post, 200));
    assert_eq!(e.bytes_in, 10);
    assert_eq!(e.bytes_out, r.body().len() as u64);
    assert!(e.upstream.is_some_and(|u| u <= e.total));
    assert_eq!((e.protocol, e.tls), (Protocol::Http1, None));
    assert_eq!(e.client, std::net::IpAddr::from([127, 0, 0, 1]));
    assert_eq!(e.user_agent, baseline_engine::hash_user_agent(b"telemetry-test/1"));
    assert_eq!(
        (e.auth, &e.decision, e.error),
        (AuthOutcome::NotRequired, &Decision::Allow, None)
    );
    assert_eq!(e.outcome, Outcome::Complete);
    assert!(e.unix_ms > 1_700_000_000_000);

    // Refused: a bearer route without a token.
    assert_eq!(send(addr, request("GET", "/private/x", b"")).await?.status(), 401);
    let e = next_event(&mut events).await?;
    assert_eq!((e.status, e.auth), (401, AuthOutcome::Missing));
    assert_eq!(
        e.decision,
        Decision::Deny {
            reasons: vec!["missing_token"]
        }
    );
    assert_eq!(e.error, Some("missing_token"));
    assert_eq!(e.upstream, None);

    // No route.
    assert_eq!(send(addr, request("GET", "/nowhere", b"")).await?.status(), 404);
    let e = next_event(&mut events).await?;
    assert_eq!((e.route.clone(), e.status, e.error), (None, 404, Some("no_route")));

    // Upstream refuses connections: 502.
    assert_eq!(send(addr, request("GET", "/broken", b"")).await?.status(), 502);
    let e = next_event(&mut events).await?;
    assert_eq!((e.route.as_deref(), e.status), (Some("broken"), 502));
    assert_eq!(e.error, Some("upstream_connect"));

    // Upstream too slow: 504.
    assert_eq!(send(addr, request("GET", "/delay/2000", b"")).await?.status(), 504);
    let e = next_event(&mut events).await?;
    assert_eq!((e.status, e.error), (504, Some("upstream_timeout")));
    assert!(e.total >= Duration::from_millis(200));

    // The client leaves in the middle of a large response.
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
    let driver = tokio::spawn(conn);
    let resp = sender.send_request(request("GET", "/bytes/1000000000", b"")).await?;
    let mut body = resp.into_body();
    let first = body.frame().await;
    assert!(first.is_some_and(|f| f.is_ok()));
    drop(body);
    drop(sender);
    driver.abort();
    let e = next_event(&mut events).await?;
    assert_eq!((e.status, e.outcome), (200, Outcome::ClientGone), "{e:?}");
    assert!(e.bytes_out > 0 && e.bytes_out < 1_000_000_000);

    // Counted on /metrics as well.
    let m = gw.metrics().await?;
    assert_eq!(metric(&m, "gateway_tap_events_total", &[("result", "sent")]), Some(6.0));
    assert_eq!(
        metric(&m, "gateway_tap_events_total", &[("result", "dropped")]),
        Some(0.0)
    );
    Ok(())
}

#[tokio::test]
async fn a_full_tap_never_holds_a_request() -> anyhow::Result<()> {
    let up = Upstream::start("up", "127.0.0.1:0".parse()?).await?;
    // Room for two events and nobody reading them.
    let gw = gateway(&up, "telemetry: { tap_capacity: 2 }").await?;
    for _ in 0..50 {
        assert_eq!(
            send(gw.addr("http"), request("GET", "/open/x", b"")).await?.status(),
            200
        );
    }
    let m = gw.metrics().await?;
    assert_eq!(metric(&m, "gateway_tap_events_total", &[("result", "sent")]), Some(2.0));
    assert_eq!(
        metric(&m, "gateway_tap_events_total", &[("result", "dropped")]),
        Some(48.0)
    );
    assert_eq!(metric(&m, "gateway_tap_capacity", &[]), Some(2.0));
    Ok(())
}

async fn next_sample(rx: &mut Receiver<RuntimeSample>) -> anyhow::Result<RuntimeSample> {
    gateway_tests::next_from_tap(rx).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_samples_follow_a_busy_and_blocked_runtime() -> anyhow::Result<()> {
    let up = Upstream::start("up", "127.0.0.1:0".parse()?).await?;
    let gw = gateway(&up, "telemetry: { runtime_interval: 100ms, task_sampling: 1 }").await?;
    let (_, mut samples) = gw.gw.shared().tap.take_receiver().expect("the tap's receiver");

    let quiet = next_sample(&mut samples).await?;
    assert_eq!(quiet.workers, 2);
    assert!(quiet.elapsed > Duration::ZERO);
    assert!(quiet.resident_bytes > 1 << 20 && quiet.open_fds > 3, "{quiet:?}");

    // Requests move the monitored task counts.
    for _ in 0..20 {
        send(gw.addr("http"), request("GET", "/open/x", b"")).await?;
    }
    let mut seen_requests = 0;
    assert_eventually!(
        {
            let s = next_sample(&mut samples).await?;
            seen_requests += s.requests.instrumented;
            seen_requests >= 20
        },
        "sampled request tasks: {seen_requests}"
    );

    // Busy workers: tasks that spin (and poll slowly) for a while.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut spinners = Vec::new();
    for _ in 0..2 {
        let stop = stop.clone();
        spinners.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = tokio::time::Instant::now();
                while t.elapsed() < Duration::from_millis(5) {
                    std::hint::spin_loop();
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    // Blocking work: threads in the blocking pool.
    let blockers: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            tokio::task::spawn_blocking(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        })
        .collect();
    let mut busiest = 0.0f64;
    let mut most_blocking = 0;
    assert_eventually!(
        {
            let s = next_sample(&mut samples).await?;
            busiest = busiest.max(s.busy_ratio);
            most_blocking = most_blocking.max(s.blocking_threads);
            busiest > 0.8
                && most_blocking >= 4
                && s.polls > 0
                && s.mean_poll > Duration::ZERO
                && s.alive_tasks > quiet.alive_tasks
        },
        "busy ratio {busiest}, blocking threads {most_blocking}"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for s in spinners {
        s.await?;
    }
    for b in blockers {
        b.await?;
    }
    // The same figures on /metrics.
    let m = gw.metrics().await?;
    assert_eq!(metric(&m, "gateway_runtime_workers", &[]), Some(2.0));
    assert!(metric(&m, "gateway_runtime_blocking_threads", &[]).is_some_and(|v| v >= 4.0));
    assert!(metric(&m, "gateway_task_polls_total", &[("group", "requests")]).is_some_and(|v| v > 0.0));
    assert!(metric(&m, "process_resident_memory_bytes", &[]).is_some_and(|v| v > 1e6));
    Ok(())
}
