//! Compression: a route's `compress` gzips listed answers for clients that accept gzip, as
//! they stream, and leaves every other answer as it was.

use std::io::Read;

use gateway_tests::{metric, request, send, TestGateway, Upstream};

fn gunzip(body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body).read_to_end(&mut out)?;
    Ok(out)
}

#[tokio::test]
async fn listed_answers_are_gzipped_for_clients_that_accept_it() -> anyhow::Result<()> {
    let up = Upstream::start("up", "127.0.0.1:0".parse()?).await?;
    let gw = TestGateway::plain(&format!(
        r#"
routes:
  - name: files
    upstream: up
    match: {{ path_prefix: /files }}
    compress: {{ types: [application/octet-stream, "text/*"], min_bytes: 1000 }}
  - {{ name: plain, upstream: up }}
upstreams: [{{ name: up, endpoints: ["http://{}"] }}]
"#,
        up.addr()
    ))
    .await?;
    let addr = gw.addr("http");
    let get = |path: &str, gzip: bool| {
        let mut r = request("x", path);
        if gzip {
            r.headers_mut()
                .insert("accept-encoding", http::HeaderValue::from_static("br;q=1, gzip;q=0.8"));
        }
        r
    };
    // 300 KiB streamed from the upstream in 64 KiB chunks: gzipped as it streams, whole again
    // once decoded.
    let r = send(addr, get("/files/a?size=307200", true)).await?;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-encoding"], "gzip");
    assert_eq!(r.headers()["vary"], "accept-encoding");
    assert!(r.headers().get("content-length").is_none());
    assert!(r.body().len() < 10_000, "{} bytes on the wire", r.body().len());
    let body = gunzip(r.body())?;
    assert_eq!(body.len(), 307_200);
    assert!(body.iter().all(|&b| b == b'x'));
    // A client that does not take gzip, a short answer, an unlisted type, another route: as is.
    let r = send(addr, get("/files/a?size=307200", false)).await?;
    assert!(r.headers().get("content-encoding").is_none());
    assert_eq!(r.body().len(), 307_200);
    let r = send(addr, get("/files/a?size=999", true)).await?;
    assert!(r.headers().get("content-encoding").is_none(), "below min_bytes");
    let r = send(addr, get("/files/status/200", true)).await?;
    assert_eq!(r.headers()["content-type"], "application/json");
    assert!(r.headers().get("content-encoding").is_none(), "type not listed");
    let r = send(addr, get("/other?size=307200", true)).await?;
    assert!(r.headers().get("content-encoding").is_none(), "route without compress");

    let m = gw.metrics().await?;
    assert_eq!(
        metric(&m, "gateway_compressed_responses_total", &[("route", "files")]),
        Some(1.0)
    );
    Ok(())
}
