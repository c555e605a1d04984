//! Upstream connection pooling: keep-alive connections are reused, an upstream that closes
//! its connections costs no failed request, and idle connections are closed after
//! `idle_timeout`. The upstream here is a raw HTTP/1.1 server that counts connections.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use gateway_tests::{assert_eventually, request, send, TestGateway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Default)]
struct Counts {
    opened: AtomicUsize,
    closed: AtomicUsize,
}

/// Answers every request with `ok`; with `close_each`, closes the connection after each answer.
async fn counting_upstream(close_each: bool) -> anyhow::Result<(std::net::SocketAddr, Arc<Counts>)> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            c.opened.fetch_add(1, Ordering::SeqCst);
            let c = c.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let head: &[u8] = if close_each {
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                        } else {
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                        };
                        if s.write_all(head).await.is_err() || close_each {
                            c.closed.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    }
                }
                c.closed.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
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
    let (up, counts) = counting_upstream(false).await?;
    let gw = gateway(up, "60s").await?;
    for _ in 0..20 {
        let r = send(gw.addr("http"), request("x", "/")).await?;
        assert_eq!(r.status(), 200);
        assert_eq!(r.body().as_ref(), b"ok");
    }
    assert_eq!(
        counts.opened.load(Ordering::SeqCst),
        1,
        "one upstream connection serves sequential requests"
    );
    Ok(())
}

#[tokio::test]
async fn an_upstream_closing_connections_costs_no_request() -> anyhow::Result<()> {
    let (up, counts) = counting_upstream(true).await?;
    let gw = gateway(up, "60s").await?;
    for i in 0..20 {
        let r = send(gw.addr("http"), request("x", "/")).await?;
        assert_eq!(r.status(), 200, "request {i}");
    }
    assert_eq!(
        counts.opened.load(Ordering::SeqCst),
        20,
        "a closed connection is never reused"
    );
    Ok(())
}

#[tokio::test]
async fn idle_connections_close_after_idle_timeout() -> anyhow::Result<()> {
    let (up, counts) = counting_upstream(false).await?;
    let gw = gateway(up, "300ms").await?;
    assert_eq!(send(gw.addr("http"), request("x", "/")).await?.status(), 200);
    assert_eq!(counts.opened.load(Ordering::SeqCst), 1);
    assert_eventually!(
        counts.closed.load(Ordering::SeqCst) == 1,
        "the idle upstream connection is closed"
    );
    // The next request opens a fresh connection.
    assert_eq!(send(gw.addr("http"), request("x", "/")).await?.status(), 200);
    assert_eq!(counts.opened.load(Ordering::SeqCst), 2);
    Ok(())
}
