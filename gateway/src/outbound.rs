//! One HTTP/1.1 request from the gateway to a URL outside the data plane (identity providers,
//! alert receivers): a connection of its own, bounded in time and in the size of the answer.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;

use crate::error::BoxError;

/// An answer: status, headers and body.
pub type Answer = (http::StatusCode, http::HeaderMap, Bytes);

/// Sends `req` (its method and headers; the URI and `Host` come from `url`) with `body` to
/// `url`, over TLS with `tls` for `https`. The answer's body is read up to `limit` bytes; the
/// whole exchange has `timeout`.
pub async fn exchange(
    url: &str,
    req: http::request::Builder,
    body: Bytes,
    tls: &Arc<rustls::ClientConfig>,
    limit: usize,
    timeout: Duration,
) -> Result<Answer, BoxError> {
    let uri: http::Uri = url.parse()?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(format!("{url}: not an http(s) URL").into()),
    };
    let host = uri
        .host()
        .ok_or("no host")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let authority = uri.authority().ok_or("no authority")?.as_str().to_string();
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_string();
    let req = req
        .uri(path)
        .header(http::header::HOST, authority)
        .body(Full::new(body))?;
    let fut = async move {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
        let resp = if https {
            let name = rustls::pki_types::ServerName::try_from(host.clone())?;
            let io = tokio_rustls::TlsConnector::from(tls.clone()).connect(name, tcp).await?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
            tokio::spawn(conn);
            sender.send_request(req).await?
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
            tokio::spawn(conn);
            sender.send_request(req).await?
        };
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, limit).collect().await?.to_bytes();
        Ok::<_, BoxError>((parts.status, parts.headers, body))
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| format!("{url}: no answer within {timeout:?}"))?
}
