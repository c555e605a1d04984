//! Connection limits: a client trickling its request head is cut off at the header timeout while
//! others are served; idle keep-alive connections close at the idle timeout but live past the
//! header timeout; beyond max_connections new connections wait until a slot frees.

use std::time::Duration;

use gateway_tests::{assert_eventually, metric, request, send, TestGateway, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn gateway(limits: &str) -> anyhow::Result<(TestGateway, Upstream)> {
    let up = Upstream::start("up", "127.0.0.1:0".parse()?).await?;
    let yaml = format!(
        "listeners: [{{ name: http, address: \"127.0.0.1:0\" }}]\nadmin: {{ address: \"127.0.0.1:0\" }}\nlimits: {limits}\n\
         routes: [{{ name: r, upstream: up }}]\nupstreams: [{{ name: up, endpoints: [\"http://{}\"] }}]\n",
        up.addr()
    );
    Ok((TestGateway::start(&yaml).await?, up))
}

/// Connections of the `http` listener closed for a timeout of `kind` (`header` or `idle`).
async fn timeouts(gw: &TestGateway, kind: &str) -> anyhow::Result<Option<f64>> {
    Ok(metric(
        &gw.metrics().await?,
        "gateway_connection_timeouts_total",
        &[("listener", "http"), ("kind", kind)],
    ))
}

#[tokio::test]
async fn slow_header_client_is_cut_off_while_others_are_served() -> anyhow::Result<()> {
    let (gw, _up) = gateway("{ header_timeout: 2s, idle_timeout: 30s }").await?;
    let addr = gw.addr("http");
    let mut slow = tokio::net::TcpStream::connect(addr).await?;
    let started = tokio::time::Instant::now();
    // One byte a second: the head never completes within the 2 s header timeout.
    let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut cut_off = false;
    for b in head.iter() {
        if slow.write_all(&[*b]).await.is_err() {
            cut_off = true;
            break;
        }
        // Others are served normally meanwhile.
        assert_eq!(send(addr, request("x", "/")).await?.status(), 200);
        let mut probe = [0u8; 64];
        match tokio::time::timeout(Duration::from_secs(1), slow.read(&mut probe)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                cut_off = true;
                break;
            }
            Ok(Ok(n)) => panic!("the gateway answered a head it never received: {:?}", &probe[..n]),
            Err(_) => {} // a second passed; send the next byte
        }
    }
    assert!(cut_off, "the slow client was cut off");
    let took = started.elapsed();
    // Not before the timeout (a lower bound only: a loaded machine can only make it later).
    assert!(took >= Duration::from_millis(1500), "cut off after only {took:?}");
    assert_eventually!(
        timeouts(&gw, "header").await? == Some(1.0),
        "the header timeout is counted"
    );
    Ok(())
}

#[tokio::test]
async fn a_second_head_that_stalls_on_a_kept_alive_connection_meets_the_header_timeout() -> anyhow::Result<()> {
    let (gw, _up) = gateway("{ header_timeout: 300ms, idle_timeout: 30s }").await?;
    let mut s = tokio::net::TcpStream::connect(gw.addr("http")).await?;
    let mut buf = vec![0u8; 4096];
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await?;
    let n = s.read(&mut buf).await?;
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // The next head starts and stalls: the header timeout applies, not the 30 s idle timeout.
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await?;
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await??;
    assert!(
        n == 0 || buf[..n].starts_with(b"HTTP/1.1 408"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert_eventually!(
        timeouts(&gw, "header").await? == Some(1.0),
        "the header timeout is counted"
    );
    Ok(())
}

#[tokio::test]
async fn idle_keep_alive_outlives_header_timeout_and_closes_at_idle_timeout() -> anyhow::Result<()> {
    let (gw, _up) = gateway("{ header_timeout: 300ms, idle_timeout: 1500ms }").await?;
    let mut s = tokio::net::TcpStream::connect(gw.addr("http")).await?;
    let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut buf = vec![0u8; 4096];
    for _ in 0..2 {
        s.write_all(req).await?;
        let n = s.read(&mut buf).await?;
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        // Idle for longer than the header timeout but less than the idle timeout.
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    // Now stay idle: the gateway closes the connection at the idle timeout.
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await??;
    assert_eq!(n, 0);
    assert_eventually!(timeouts(&gw, "idle").await? == Some(1.0), "the idle timeout is counted");
    Ok(())
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_for_a_slot() -> anyhow::Result<()> {
    let (gw, _up) = gateway("{ max_connections: 2 }").await?;
    let addr = gw.addr("http");
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await?;
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).await?;
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(s);
    }
    // A third connection is queued, not served.
    let third = tokio::spawn(async move { send(addr, request("x", "/")).await });
    assert_eventually!(
        metric(
            &gw.metrics().await?,
            "gateway_connections_limited_total",
            &[("listener", "http")]
        ) == Some(1.0),
        "the wait is counted"
    );
    assert!(!third.is_finished());
    drop(held.pop());
    let r = tokio::time::timeout(gateway_tests::patience(), third).await???;
    assert_eq!(r.status(), 200, "served once a slot frees");
    Ok(())
}

/// Reads one HTTP/1.1 response with a Content-Length body from `s`.
async fn read_response<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> anyhow::Result<(String, Vec<u8>)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        anyhow::ensure!(s.read(&mut byte).await? == 1, "connection closed");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await?;
    Ok((head, body))
}

async fn parked(gw: &TestGateway, listener: &str) -> anyhow::Result<Option<f64>> {
    Ok(metric(
        &gw.metrics().await?,
        "gateway_connections_parked",
        &[("listener", listener)],
    ))
}

#[tokio::test]
async fn an_idle_connection_is_parked_and_serves_its_next_requests() -> anyhow::Result<()> {
    let (gw, _up) = gateway("{ idle_timeout: 2s }").await?;
    let mut s = tokio::net::TcpStream::connect(gw.addr("http")).await?;
    s.write_all(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n").await?;
    let (head, body) = read_response(&mut s).await?;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("/first"));
    // Idle for half the idle timeout: parked, still open.
    assert_eventually!(parked(&gw, "http").await? == Some(1.0), "the idle connection is parked");
    // Two pipelined requests on the parked connection are both answered, in order.
    s.write_all(b"GET /second HTTP/1.1\r\nHost: x\r\n\r\nGET /third HTTP/1.1\r\nHost: x\r\n\r\n")
        .await?;
    let (head, body) = read_response(&mut s).await?;
    assert!(
        head.starts_with("HTTP/1.1 200") && String::from_utf8_lossy(&body).contains("/second"),
        "{head}"
    );
    let (head, body) = read_response(&mut s).await?;
    assert!(
        head.starts_with("HTTP/1.1 200") && String::from_utf8_lossy(&body).contains("/third"),
        "{head}"
    );
    assert_eq!(parked(&gw, "http").await?, Some(0.0));
    // Parked again, then closed at the idle timeout.
    assert_eventually!(parked(&gw, "http").await? == Some(1.0), "parked again");
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(gateway_tests::patience(), s.read(&mut buf)).await??;
    assert_eq!(n, 0, "closed at the idle timeout");
    assert_eq!(parked(&gw, "http").await?, Some(0.0));
    assert_eq!(timeouts(&gw, "idle").await?, Some(1.0));
    Ok(())
}

#[tokio::test]
async fn a_parked_tls_connection_serves_its_next_request() -> anyhow::Result<()> {
    let pki = gateway_tests::TestPki::new()?;
    let (cert, key) = pki.leaf("gw", &["localhost"])?;
    let up = Upstream::start("up", "127.0.0.1:0".parse()?).await?;
    let yaml = format!(
        "listeners:\n  - name: https\n    address: \"127.0.0.1:0\"\n    tls:\n      certificates: [{{ cert: \"{}\", key: \"{}\" }}]\n\
         admin: {{ address: \"127.0.0.1:0\" }}\nlimits: {{ idle_timeout: 2s }}\n\
         routes: [{{ name: r, upstream: up }}]\nupstreams: [{{ name: up, endpoints: [\"http://{}\"] }}]\n",
        cert.display(),
        key.display(),
        up.addr()
    );
    let gw = TestGateway::start(&yaml).await?;
    let cfg = pki.client_config(&[b"http/1.1"], &[&rustls::version::TLS13]);
    let conn = gateway_tests::TlsConn::connect(gw.addr("https"), "localhost", cfg).await?;
    let mut s = conn.stream;
    for path in ["/one", "/two"] {
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
            .await?;
        let (head, body) = read_response(&mut s).await?;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(String::from_utf8_lossy(&body).contains(path));
        assert_eventually!(parked(&gw, "https").await? == Some(1.0), "parked after {path}");
    }
    Ok(())
}
