//! HTTP/1.1 towards clients, on raw sockets: requests without a body are read and answered by
//! the connection's own task; the first request that needs more (a body, HEAD, HTTP/1.0, a head
//! that does not parse) hands the connection to hyper's codec, counted in
//! `gateway_http1_handoffs_total`, and the connection goes on there.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gateway_tests::{metric, next_head, raw_server, Connections, TestGateway, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A gateway with one plain listener routing everything to `up`.
async fn gateway(up: SocketAddr) -> anyhow::Result<TestGateway> {
    let yaml = format!(
        "listeners: [{{ name: http, address: \"127.0.0.1:0\" }}]\nadmin: {{ address: \"127.0.0.1:0\" }}\n\
         routes: [{{ name: r, upstream: up, match: {{ path_prefix: / }} }}]\n\
         upstreams: [{{ name: up, endpoints: [\"http://{up}\"] }}]\n"
    );
    TestGateway::start(&yaml).await
}

/// A test upstream, a gateway routing to it, and a client connection to the gateway.
async fn connected() -> anyhow::Result<(Upstream, TestGateway, TcpStream)> {
    let up = Upstream::start("up", "127.0.0.1:0".parse()?).await?;
    let gw = gateway(up.addr()).await?;
    let c = TcpStream::connect(gw.addr("http")).await?;
    Ok((up, gw, c))
}

/// Connections of the `http` listener handed to hyper for `reason`.
async fn handoffs(gw: &TestGateway, reason: &str) -> anyhow::Result<Option<f64>> {
    Ok(metric(
        &gw.metrics().await?,
        "gateway_http1_handoffs_total",
        &[("listener", "http"), ("reason", reason)],
    ))
}

/// An answer as read off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// Header fields, names lower-cased, in order.
    fields: Vec<(String, String)>,
    body: Vec<u8>,
    chunked: bool,
}

impl Answer {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Reads `n` more bytes into `buf` (beyond what it holds), or fails at end of stream.
async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>, n: usize) -> anyhow::Result<()> {
    while buf.len() < n {
        let mut chunk = [0u8; 8192];
        let got = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk)).await??;
        anyhow::ensure!(got > 0, "the connection closed within an answer");
        buf.extend_from_slice(&chunk[..got]);
    }
    Ok(())
}

/// Reads one answer to a request with method `method`; `buf` keeps what follows it.
async fn read_answer(s: &mut TcpStream, buf: &mut Vec<u8>, method: &str) -> anyhow::Result<Answer> {
    let head = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8(buf[..end].to_vec())?;
            buf.drain(..end + 4);
            break head;
        }
        let have = buf.len();
        fill(s, buf, have + 1).await?;
    };
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    anyhow::ensure!(status_line.starts_with("HTTP/1."), "status line: {status_line}");
    let status = status_line.split(' ').nth(1).unwrap_or_default().parse()?;
    let fields: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut a = Answer {
        status,
        fields,
        body: Vec::new(),
        chunked: false,
    };
    if method == "HEAD" || status == 101 || status == 204 || status == 304 {
        return Ok(a);
    }
    if a.field("transfer-encoding") == Some("chunked") {
        a.chunked = true;
        loop {
            let line_end = loop {
                if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                let have = buf.len();
                fill(s, buf, have + 1).await?;
            };
            let size = usize::from_str_radix(std::str::from_utf8(&buf[..line_end])?.trim(), 16)?;
            buf.drain(..line_end + 2);
            fill(s, buf, size + 2).await?;
            a.body.extend_from_slice(&buf[..size]);
            buf.drain(..size + 2);
            if size == 0 {
                return Ok(a);
            }
        }
    }
    let len: usize = a.field("content-length").unwrap_or("0").parse()?;
    fill(s, buf, len).await?;
    a.body = buf.drain(..len).collect();
    Ok(a)
}

/// Whether the peer closes the connection within 10 s (having sent nothing more).
async fn closes(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(10), s.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_the_own_path() -> anyhow::Result<()> {
    let (_up, gw, mut c) = connected().await?;
    c.write_all(
        b"GET /a?x=1 HTTP/1.1\r\nHost: one.test\r\nX-Mixed-Case: Kept\r\n\r\n\
          DELETE /b HTTP/1.1\r\nHost: one.test\r\nContent-Length: 0\r\n\r\n\
          OPTIONS /c HTTP/1.1\r\nHost: one.test\r\n\r\n",
    )
    .await?;
    let mut buf = Vec::new();
    for (method, path) in [("GET", "/a"), ("DELETE", "/b"), ("OPTIONS", "/c")] {
        let a = read_answer(&mut c, &mut buf, method).await?;
        assert_eq!(a.status, 200, "{a:?}");
        let doc = a.json();
        assert_eq!(doc["method"], method);
        assert_eq!(doc["path"], path);
        assert_eq!(doc["version"], "HTTP/1.1");
        assert_eq!(doc["headers"]["x-forwarded-host"], "one.test");
        assert!(a.field("x-request-id").is_some_and(|v| !v.is_empty()), "{a:?}");
        assert!(a.field("date").is_some(), "{a:?}");
        assert_eq!(a.field("connection"), None);
    }
    // The query and a field's value pass through as they came.
    c.write_all(b"GET /a?x=1 HTTP/1.1\r\nHost: one.test\r\nX-Mixed-Case: Kept\r\n\r\n")
        .await?;
    let doc = read_answer(&mut c, &mut buf, "GET").await?.json();
    assert_eq!(doc["query"], "x=1");
    assert_eq!(doc["headers"]["x-mixed-case"], "Kept");
    for reason in ["body", "special", "version", "target", "malformed", "large"] {
        assert_eq!(handoffs(&gw, reason).await?, None, "handed off for {reason}");
    }
    Ok(())
}

#[tokio::test]
async fn a_request_with_a_body_hands_the_connection_over_and_it_goes_on() -> anyhow::Result<()> {
    let (_up, gw, mut c) = connected().await?;
    let mut buf = Vec::new();
    c.write_all(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n").await?;
    assert_eq!(read_answer(&mut c, &mut buf, "GET").await?.json()["path"], "/first");
    // A body, sent with the next request pipelined behind it.
    c.write_all(
        b"POST /drain HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /after HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await?;
    let posted = read_answer(&mut c, &mut buf, "POST").await?;
    assert_eq!(posted.status, 200);
    assert_eq!(posted.json()["received"], 5);
    assert_eq!(read_answer(&mut c, &mut buf, "GET").await?.json()["path"], "/after");
    // Chunked request bodies too.
    c.write_all(b"POST /drain HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        .await?;
    assert_eq!(read_answer(&mut c, &mut buf, "POST").await?.json()["received"], 3);
    assert_eq!(handoffs(&gw, "body").await?, Some(1.0));
    Ok(())
}

#[tokio::test]
async fn head_http10_upgrades_and_trailers_are_left_to_the_general_codec() -> anyhow::Result<()> {
    let (_up, gw, _) = connected().await?;
    let addr = gw.addr("http");
    let mut buf = Vec::new();

    let mut c = TcpStream::connect(addr).await?;
    c.write_all(b"HEAD /bytes/1000 HTTP/1.1\r\nHost: x\r\n\r\n").await?;
    let head = read_answer(&mut c, &mut buf, "HEAD").await?;
    assert_eq!(head.status, 200);
    assert_eq!(head.field("content-length"), Some("1000"));
    // Nothing follows the head: the next answer starts right after it.
    c.write_all(b"GET /bytes/3 HTTP/1.1\r\nHost: x\r\n\r\n").await?;
    assert_eq!(read_answer(&mut c, &mut buf, "GET").await?.body, b"xxx");
    assert_eq!(handoffs(&gw, "special").await?, Some(1.0));

    let mut c = TcpStream::connect(addr).await?;
    buf.clear();
    c.write_all(b"GET /old HTTP/1.0\r\nHost: x\r\n\r\n").await?;
    let old = read_answer(&mut c, &mut buf, "GET").await?;
    assert_eq!(old.status, 200);
    assert_eq!(old.json()["path"], "/old");
    assert!(
        closes(&mut c).await,
        "an HTTP/1.0 request without keep-alive ends its connection"
    );
    assert_eq!(handoffs(&gw, "version").await?, Some(1.0));

    let mut c = TcpStream::connect(addr).await?;
    buf.clear();
    c.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n")
        .await?;
    let switched = read_answer(&mut c, &mut buf, "GET").await?;
    assert_eq!(switched.status, 101);
    c.write_all(b"ping").await?;
    fill(&mut c, &mut buf, 4).await?;
    assert_eq!(&buf[..4], b"ping", "the upgraded connection echoes");
    assert_eq!(handoffs(&gw, "special").await?, Some(2.0));

    // A client that takes trailers: hyper sends them, so it serves the connection.
    let mut c = TcpStream::connect(addr).await?;
    buf.clear();
    c.write_all(b"GET /te HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n")
        .await?;
    let a = read_answer(&mut c, &mut buf, "GET").await?;
    assert_eq!(a.json()["path"], "/te");
    assert_eq!(handoffs(&gw, "special").await?, Some(3.0));
    Ok(())
}

#[tokio::test]
async fn bad_heads_are_answered_by_the_general_codec() -> anyhow::Result<()> {
    let (_up, gw, _) = connected().await?;
    let addr = gw.addr("http");
    for (raw, reason) in [
        (&b"GET / HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n"[..], "malformed"),
        (b"GET http://x/abs HTTP/1.1\r\nHost: x\r\n\r\n", "target"),
    ] {
        let mut c = TcpStream::connect(addr).await?;
        let mut buf = Vec::new();
        c.write_all(raw).await?;
        let a = read_answer(&mut c, &mut buf, "GET").await?;
        if reason == "malformed" {
            assert_eq!(a.status, 400, "{a:?}");
        } else {
            // The absolute form is read by hyper and routed by its host.
            assert_eq!(a.status, 200, "{a:?}");
            assert_eq!(a.json()["path"], "/abs");
        }
        assert_eq!(handoffs(&gw, reason).await?, Some(1.0), "{reason}");
    }
    // A head with a field larger than the own path reads: hyper reads it, the configured limit
    // (32 KiB by default) is not reached, and the request is served.
    let mut c = TcpStream::connect(addr).await?;
    let mut buf = Vec::new();
    let big = "v".repeat(20 * 1024);
    c.write_all(format!("GET /big HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes())
        .await?;
    let a = read_answer(&mut c, &mut buf, "GET").await?;
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["headers"]["x-big"].as_str().map(str::len), Some(big.len()));
    assert_eq!(handoffs(&gw, "large").await?, Some(1.0));
    Ok(())
}

#[tokio::test]
async fn connection_close_is_answered_and_honoured() -> anyhow::Result<()> {
    let (_up, _gw, mut c) = connected().await?;
    let mut buf = Vec::new();
    c.write_all(b"GET /bye HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await?;
    let a = read_answer(&mut c, &mut buf, "GET").await?;
    assert_eq!(a.status, 200);
    assert_eq!(a.field("connection"), Some("close"));
    assert!(closes(&mut c).await, "the gateway closes after the answer");
    Ok(())
}

#[tokio::test]
async fn local_answers_are_framed_and_dated() -> anyhow::Result<()> {
    let up = Upstream::start("up", "127.0.0.1:0".parse()?).await?;
    let yaml = format!(
        "listeners: [{{ name: http, address: \"127.0.0.1:0\" }}]\nadmin: {{ address: \"127.0.0.1:0\" }}\n\
         routes: [{{ name: r, upstream: up, match: {{ path_prefix: /api }} }}]\n\
         upstreams: [{{ name: up, endpoints: [\"http://{}\"] }}]\n",
        up.addr()
    );
    let gw = TestGateway::start(&yaml).await?;
    let mut c = TcpStream::connect(gw.addr("http")).await?;
    let mut buf = Vec::new();
    c.write_all(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\nGET /api/x HTTP/1.1\r\nHost: x\r\n\r\n")
        .await?;
    let missing = read_answer(&mut c, &mut buf, "GET").await?;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.field("content-type"), Some("application/problem+json"));
    assert_eq!(
        missing.field("content-length").map(str::parse::<usize>).transpose()?,
        Some(missing.body.len())
    );
    let date = missing.field("date").unwrap_or_default();
    assert!(date.ends_with(" GMT") && date.len() == 29, "date: {date:?}");
    assert_eq!(missing.json()["status"], 404);
    // The connection goes on after a local answer.
    assert_eq!(read_answer(&mut c, &mut buf, "GET").await?.json()["path"], "/api/x");
    Ok(())
}

/// An upstream written by hand: answers each request head with `answer(path)`, the bytes to
/// send and whether its connection stays open after them.
async fn scripted_upstream(answer: fn(&str) -> (Vec<u8>, bool)) -> anyhow::Result<SocketAddr> {
    raw_server(Arc::new(Connections::default()), move |mut s, _| async move {
        let mut buf = Vec::new();
        while let Some(head) = next_head(&mut s, &mut buf).await {
            let path = head.split(' ').nth(1).unwrap_or("/").to_string();
            let (bytes, keep) = answer(&path);
            if s.write_all(&bytes).await.is_err() || !keep {
                return;
            }
        }
    })
    .await
}

#[tokio::test]
async fn answers_without_a_length_go_out_chunked_and_short_ones_end_the_connection() -> anyhow::Result<()> {
    let up = scripted_upstream(|path| match path {
        // No length: the body ends with the upstream's connection.
        "/eof" => (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nto the end".to_vec(),
            false,
        ),
        // Chunked from the upstream.
        "/chunked" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n2\r\nef\r\n0\r\n\r\n".to_vec(),
            true,
        ),
        // Promises 100 bytes, sends 10, closes.
        "/short" => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789".to_vec(),
            false,
        ),
        // Its own request id, and its length as a list of the same number twice.
        "/ids" => (
            b"HTTP/1.1 200 OK\r\nX-Request-Id: upstream-chosen\r\nContent-Length: 5, 5\r\n\r\nfive!".to_vec(),
            true,
        ),
        _ => (b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(), true),
    })
    .await?;
    let gw = gateway(up).await?;
    let mut c = TcpStream::connect(gw.addr("http")).await?;
    let mut buf = Vec::new();
    // The gateway's request id goes out in place of the upstream's, once.
    c.write_all(b"GET /ids HTTP/1.1\r\nHost: x\r\n\r\n").await?;
    let a = read_answer(&mut c, &mut buf, "GET").await?;
    let ids: Vec<&str> = a
        .fields
        .iter()
        .filter(|(n, _)| n == "x-request-id")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(ids.len(), 1, "{a:?}");
    assert_ne!(ids[0], "upstream-chosen");
    assert_eq!((a.status, a.body.as_slice()), (200, &b"five!"[..]), "{a:?}");
    // The length passed on as one number.
    assert_eq!(a.field("content-length"), Some("5"), "{a:?}");
    c.write_all(b"GET /eof HTTP/1.1\r\nHost: x\r\n\r\n").await?;
    let a = read_answer(&mut c, &mut buf, "GET").await?;
    assert!(a.chunked, "{a:?}");
    assert_eq!(a.body, b"to the end");
    c.write_all(b"GET /chunked HTTP/1.1\r\nHost: x\r\n\r\n").await?;
    let a = read_answer(&mut c, &mut buf, "GET").await?;
    assert_eq!(a.body, b"abcdef");
    c.write_all(b"GET /empty HTTP/1.1\r\nHost: x\r\n\r\n").await?;
    let a = read_answer(&mut c, &mut buf, "GET").await?;
    assert_eq!(a.status, 204);
    assert_eq!(a.field("content-length"), None);
    assert_eq!(a.field("transfer-encoding"), None);
    // The client connection carried all three; the short answer ends it.
    c.write_all(b"GET /short HTTP/1.1\r\nHost: x\r\n\r\n").await?;
    let mut raw = std::mem::take(&mut buf);
    let _ = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut raw)).await?;
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.to_ascii_lowercase().contains("content-length: 100\r\n"), "{text}");
    let body = &raw[raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4..];
    assert!(
        body.len() < 100,
        "the connection closed before the promised length: {text}"
    );
    Ok(())
}

#[tokio::test]
async fn a_large_answer_streams_through_in_order() -> anyhow::Result<()> {
    let (_up, _gw, mut c) = connected().await?;
    let mut buf = Vec::new();
    c.write_all(b"GET /bytes/5000000 HTTP/1.1\r\nHost: x\r\n\r\nGET /bytes/7 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await?;
    let big = read_answer(&mut c, &mut buf, "GET").await?;
    assert_eq!(big.body.len(), 5_000_000);
    assert!(big.body.iter().all(|&b| b == b'x'));
    assert_eq!(read_answer(&mut c, &mut buf, "GET").await?.body, b"xxxxxxx");
    Ok(())
}
