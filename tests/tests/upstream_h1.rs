//! Answers to requests without a body, read by the request's own task: every way RFC 9112
//! frames an answer body (length, chunked with trailers, to the end of the connection, none
//! for HEAD, 204 and 1xx), which of them leave the connection reusable, and the answers that
//! are refused (conflicting lengths, not HTTP, a body cut short). The upstream is a raw
//! HTTP/1.1 server answering each path with fixed bytes and saying which of its connections
//! carried the request (`x-conn`).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use gateway_tests::{assert_eventually, json, metric, next_head, raw_server, request, send, Connections, TestGateway};
use tokio::io::AsyncWriteExt;

/// The answer to `path`, with `{conn}` standing for the connection's number, and whether the
/// upstream closes the connection after it.
fn answer(path: &str) -> (&'static str, bool) {
    match path {
        "/chunked" => (
            "HTTP/1.1 200 OK\r\nx-conn: {conn}\r\ntransfer-encoding: chunked\r\n\r\n\
             5\r\nhello\r\n6;name=value\r\n world\r\n0\r\nx-checksum: 1\r\n\r\n",
            false,
        ),
        "/eof" => ("HTTP/1.1 200 OK\r\nx-conn: {conn}\r\n\r\nuntil the end", true),
        "/head" => (
            "HTTP/1.1 200 OK\r\nx-conn: {conn}\r\ncontent-length: 100\r\n\r\n",
            false,
        ),
        "/no-content" => ("HTTP/1.1 204 No Content\r\nx-conn: {conn}\r\n\r\n", false),
        "/early-hints" => (
            "HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n\
             HTTP/1.1 200 OK\r\nx-conn: {conn}\r\ncontent-length: 2\r\n\r\nok",
            false,
        ),
        "/both" => (
            "HTTP/1.1 200 OK\r\nx-conn: {conn}\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n\
             b\r\nhello world\r\n0\r\n\r\n",
            false,
        ),
        "/http10" => (
            "HTTP/1.0 200 OK\r\nx-conn: {conn}\r\ncontent-length: 2\r\n\r\nok",
            false,
        ),
        "/bad-length" => ("HTTP/1.1 200 OK\r\ncontent-length: 2, 3\r\n\r\nok", false),
        "/bad-chunk" => (
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
            false,
        ),
        "/garbage" => ("SSH-2.0-OpenSSH_9.2\r\n\r\n", true),
        "/short" => ("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc", true),
        // Keeps the connection by what it says, then closes it at once, as an upstream whose
        // idle timeout is very short.
        "/then-close" => ("HTTP/1.1 200 OK\r\nx-conn: {conn}\r\ncontent-length: 2\r\n\r\nok", true),
        _ => (
            "HTTP/1.1 200 OK\r\nx-conn: {conn}\r\ncontent-length: 2\r\n\r\nok",
            false,
        ),
    }
}

/// The raw upstream, and the connections it accepted and closed.
async fn upstream() -> anyhow::Result<(std::net::SocketAddr, Arc<Connections>)> {
    let conns = Arc::new(Connections::default());
    let addr = raw_server(conns.clone(), |mut s, conn| async move {
        let mut buf = Vec::new();
        while let Some(head) = next_head(&mut s, &mut buf).await {
            let path = head.split(' ').nth(1).unwrap_or("/").to_string();
            let (bytes, close) = answer(&path);
            let bytes = bytes.replace("{conn}", &conn.to_string());
            if s.write_all(bytes.as_bytes()).await.is_err() || close {
                break;
            }
        }
    })
    .await?;
    Ok((addr, conns))
}

fn conn_of(r: &gateway_tests::Collected) -> String {
    r.headers()
        .get("x-conn")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_string()
}

#[tokio::test]
async fn answers_are_framed_as_rfc_9112_says_and_connections_reused_when_they_can_be() -> anyhow::Result<()> {
    let (up, counts) = upstream().await?;
    // One try per request: a reused connection found broken would show as a 502 here.
    let gw = TestGateway::plain(&format!(
        "routes: [{{ name: r, upstream: u }}]\nupstreams: [{{ name: u, endpoints: [\"http://{up}\"], retry: {{ attempts: 1 }} }}]\n"
    ))
    .await?;
    let addr = gw.addr("http");
    let get = |path: &str| send(addr, request("h1.test", path));

    let first = get("/").await?;
    assert_eq!((first.status().as_u16(), first.body().as_ref()), (200, &b"ok"[..]));
    let conn = conn_of(&first);

    // Chunked, with an extension and a trailer: decoded whole, and the connection stays.
    let r = get("/chunked").await?;
    assert_eq!(r.body().as_ref(), b"hello world");
    assert_eq!(conn_of(&r), conn);
    assert_eq!(conn_of(&get("/").await?), conn, "the chunked body was read to its end");

    // HEAD: no body, whatever Content-Length says; 204: none either.
    let head = http::Request::head("/head")
        .header("host", "h1.test")
        .body(http_body_util::Full::new(bytes::Bytes::new()))?;
    let r = send(addr, head).await?;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], "100");
    assert!(r.body().is_empty());
    assert_eq!(conn_of(&r), conn);
    let r = get("/no-content").await?;
    assert_eq!(r.status(), 204);
    assert_eq!(conn_of(&get("/").await?), conn);

    // An informational answer before the final one is skipped.
    let r = get("/early-hints").await?;
    assert_eq!((r.status().as_u16(), r.body().as_ref()), (200, &b"ok"[..]));
    assert_eq!(conn_of(&r), conn);

    // A body that ends with the connection: whole, and the connection is not kept.
    let r = get("/eof").await?;
    assert_eq!(r.body().as_ref(), b"until the end");
    assert!(r.headers().get("content-length").is_none());
    let after_eof = conn_of(&get("/").await?);
    assert_ne!(after_eof, conn);

    // Chunked beside Content-Length: the chunked framing wins, and the connection goes.
    let r = get("/both").await?;
    assert_eq!(r.body().as_ref(), b"hello world");
    assert!(r.headers().get("content-length").is_none() || r.headers()["content-length"] == "11");
    let after_both = conn_of(&get("/").await?);
    assert_ne!(after_both, after_eof);

    // HTTP/1.0 without keep-alive: answered, not reused.
    assert_eq!(get("/http10").await?.body().as_ref(), b"ok");
    let after_http10 = conn_of(&get("/").await?);
    assert_ne!(after_http10, after_both);

    // An upstream closing a connection it said it would keep: found closed while idle, so the
    // next request takes a new one instead of failing.
    let closed = counts.closed.load(Ordering::SeqCst);
    assert_eq!(get("/then-close").await?.status(), 200);
    assert_eventually!(
        counts.closed.load(Ordering::SeqCst) > closed,
        "the upstream closes the connection"
    );
    let r = get("/").await?;
    assert_eq!(r.status(), 200, "{:?}", r.body());
    assert_ne!(conn_of(&r), after_http10);

    // Refused answers: 502 with a problem body, and counted.
    for path in ["/bad-length", "/garbage"] {
        let r = get(path).await?;
        assert_eq!(r.status(), 502, "{path}: {:?}", r.body());
        assert_eq!(json(&r)["type"], "urn:gateway:problem:upstream-protocol", "{path}");
    }
    // A broken chunked body or one cut short fails the client's response, which was already
    // under way.
    assert!(get("/bad-chunk").await.is_err(), "a bad chunk size ends the answer");
    assert!(get("/short").await.is_err(), "a body cut short ends the answer");
    // And the pool goes on serving.
    assert_eq!(get("/").await?.status(), 200);

    let m = gw.metrics().await?;
    assert_eq!(
        metric(
            &m,
            "gateway_upstream_errors_total",
            &[("pool", "u"), ("kind", "protocol")]
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(&m, "gateway_upstream_connections_opened_total", &[("pool", "u")]),
        Some(counts.opened.load(Ordering::SeqCst) as f64)
    );
    Ok(())
}
