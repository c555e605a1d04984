//! HTTP/1.1 requests without a body, read and answered by the connection's own task.
//!
//! Most requests a gateway sees are a head and nothing else: a GET, a DELETE, an OPTIONS.
//! hyper's server dispatcher serves them too, but pays for what it must be ready for on every
//! request (bodies in both directions, upgrades, `Expect`, HTTP/1.0), and it reallocates its
//! read buffer for every head, since the head's header values keep the old one referenced.
//! Here the connection's task reads the head, parses it with `httparse` (the parser hyper
//! uses), hands the request to the pipeline and writes the answer itself, reusing one read
//! buffer and one write buffer for the connection's life.
//!
//! Anything else goes to hyper, for the rest of the connection's life: the bytes read so far
//! are replayed to it ([`TimedIo::resume`]), so it sees the connection exactly as if it had
//! served it from the start. That is: a request with a body or `Expect`, an upgrade, CONNECT
//! and HEAD, one asking for trailers (`TE: trailers`), HTTP/1.0, a request target not in
//! origin form, a head that does not parse (hyper answers 400), a head larger than
//! [`MAX_HEAD`] or with more than [`MAX_FIELDS`] fields (hyper and the pipeline answer the
//! configured limits). Which one it was is counted in `gateway_http1_handoffs_total`.
//!
//! Answers follow RFC 9112 as hyper writes them: the status line with the answer's own
//! reason phrase, the header fields as the pipeline left them, `Date` when missing, and the
//! framing: no body for 1xx, 204 and 304; the `Content-Length` given, or the body's exact size,
//! or chunked; `Connection: close` when the client asked for it or the gateway is draining,
//! and the connection is closed after that answer. Trailers are not sent: hyper sends them only
//! to a client that asked with `TE: trailers`, and such a request goes to hyper.
//! A body that fails, or is longer or shorter than its `Content-Length`, ends the connection.
//!
//! Timeouts and parking are the socket wrapper's, as for hyper ([`super::io`]).

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io::Write as _;
use std::mem::MaybeUninit;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::{header, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, Version};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::io::TimedIo;
use super::ConnInfo;
use crate::pipeline::body::ClientBody;
use crate::Shared;

/// Largest head read here; a longer one goes to hyper, whose limit sits above the configured
/// `limits.max_header_bytes` so that the pipeline can answer it with a problem body.
pub const MAX_HEAD: usize = 16 * 1024;
/// Most header fields parsed here; more go to hyper (and the pipeline's `limits.max_headers`).
pub const MAX_FIELDS: usize = 100;
/// Size of the connection's read buffer.
const READ_SIZE: usize = 8 * 1024;
/// Answer bytes gathered before a write: the head and small bodies go out in one.
const WRITE_GATHER: usize = 16 * 1024;
/// Room left in the request's header map for a few fields the pipeline may put in it (a route's
/// header changes, a forwarded client certificate); the forwarding fields, request id and trace
/// context are kept apart (`pipeline::forward::Added`).
const ADDED_FIELDS: usize = 2;

/// Why a connection went to hyper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handoff {
    /// The request has a body (`Content-Length` other than 0, or `Transfer-Encoding`).
    Body,
    /// `Upgrade`, `Expect`, `TE: trailers`, CONNECT or HEAD.
    Special,
    /// Not HTTP/1.1.
    Version,
    /// The request target is not in origin form (`/path?query`).
    Target,
    /// The head does not parse, or a name, value, method or target in it is invalid.
    Malformed,
    /// The head is larger than [`MAX_HEAD`] or has more than [`MAX_FIELDS`] fields.
    Large,
}

impl Handoff {
    /// The `reason` label of `gateway_http1_handoffs_total`.
    pub fn label(self) -> &'static str {
        match self {
            Handoff::Body => "body",
            Handoff::Special => "special",
            Handoff::Version => "version",
            Handoff::Target => "target",
            Handoff::Malformed => "malformed",
            Handoff::Large => "large",
        }
    }
}

/// How serving here ended.
#[derive(Debug)]
pub enum Outcome {
    /// The connection is done (closed by either side, drained, timed out, or broken).
    Closed,
    /// Parked by the socket wrapper: idle, nothing buffered.
    Parked,
    /// hyper takes the connection over; these bytes were read and not used.
    Handoff(Handoff, Bytes),
}

/// Serves requests on `io` until the connection ends, parks, or needs hyper.
pub async fn serve<I>(
    io: &mut TimedIo<I>,
    shared: &Arc<Shared>,
    info: &Arc<ConnInfo>,
    drain: &CancellationToken,
) -> Outcome
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(READ_SIZE);
    let mut out = Vec::new();
    let mut spans = Vec::new();
    let mut drained = pin!(drain.cancelled());
    loop {
        let head = loop {
            if !buf.is_empty() {
                match parse(&mut buf, &mut spans) {
                    Ok(Some(head)) => break head,
                    Ok(None) if buf.len() >= MAX_HEAD => return Outcome::Handoff(Handoff::Large, buf.freeze()),
                    Ok(None) => {}
                    Err(why) => return Outcome::Handoff(why, buf.freeze()),
                }
            }
            // Reuses the buffer in place once the last request's head is no longer referenced.
            buf.reserve(READ_SIZE / 2);
            let read = poll_fn(
                |cx| match tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, &mut buf) {
                    Poll::Ready(r) => Poll::Ready(Some(r)),
                    Poll::Pending => drained.as_mut().poll(cx).map(|()| None),
                },
            )
            .await;
            match read {
                Some(Ok(0)) if io.is_parked() && buf.is_empty() => return Outcome::Parked,
                Some(Ok(0)) | Some(Err(_)) | None => return Outcome::Closed,
                Some(Ok(_)) => {}
            }
        };
        let Head { req, close } = head;
        // Pinned where it is made and awaited there (through the pin): the request's future is
        // large, and each move copies it.
        let handling = pin!(crate::pipeline::handle(shared.clone(), info.clone(), req, true));
        let Ok(mut answer) = match shared.monitors.sample_request() {
            Some(monitor) => monitor.instrument(handling).await,
            None => handling.await,
        };
        let close = close || drain.is_cancelled();
        match respond(io, &mut answer, &mut out, close).await {
            Ok(true) if !close => {
                // An answer with a very large head does not leave its buffer behind.
                if out.capacity() > 4 * WRITE_GATHER {
                    out = Vec::new();
                }
            }
            _ => {
                let _ = io.shutdown().await;
                return Outcome::Closed;
            }
        }
    }
}

/// A parsed request and whether the client asked to close after it.
struct Head {
    req: Request<ClientBody>,
    close: bool,
}

/// Parses a request head from the front of `buf` (taking it out); `None` if more bytes are
/// needed, `Err` with the reason when hyper is to serve it.
fn parse(buf: &mut BytesMut, spans: &mut Vec<[u32; 4]>) -> Result<Option<Head>, Handoff> {
    // Where the method, target and each field are in `buf`, so that they can share the head's
    // bytes once it is split off.
    spans.clear();
    let (len, method, target) = {
        let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
        let mut r = httparse::Request::new(&mut []);
        let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(&mut r, buf, &mut fields) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(Handoff::Large),
            Err(_) => return Err(Handoff::Malformed),
        };
        if r.version != Some(1) {
            return Err(Handoff::Version);
        }
        let base = buf.as_ptr() as usize;
        let at = |s: &[u8]| (s.as_ptr() as usize - base) as u32;
        let (Some(m), Some(t)) = (r.method, r.path) else {
            return Err(Handoff::Malformed);
        };
        if !t.starts_with('/') {
            return Err(Handoff::Target);
        }
        spans.extend(r.headers.iter().map(|f| {
            [
                at(f.name.as_bytes()),
                f.name.len() as u32,
                at(f.value),
                f.value.len() as u32,
            ]
        }));
        (
            len,
            (at(m.as_bytes()), m.len() as u32),
            (at(t.as_bytes()), t.len() as u32),
        )
    };
    let slice = |(at, n): (u32, u32)| (at as usize)..(at + n) as usize;
    let method = Method::from_bytes(&buf[slice(method)]).map_err(|_| Handoff::Malformed)?;
    if method == Method::HEAD || method == Method::CONNECT {
        return Err(Handoff::Special);
    }
    // Checked before the head is split off, so that hyper can be handed all of it.
    let mut close = false;
    for &[ns, nl, vs, vl] in spans.iter() {
        let name = &buf[slice((ns, nl))];
        let value = &buf[slice((vs, vl))];
        if name.eq_ignore_ascii_case(b"content-length") {
            if value.is_empty() || value.iter().any(|&b| b != b'0') {
                return Err(Handoff::Body);
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Err(Handoff::Body);
        } else if name.eq_ignore_ascii_case(b"upgrade")
            || name.eq_ignore_ascii_case(b"expect")
            || (name.eq_ignore_ascii_case(b"te") && lists(value, b"trailers"))
        {
            return Err(Handoff::Special);
        } else if name.eq_ignore_ascii_case(b"connection") {
            close |= lists(value, b"close");
        }
    }
    let mut headers = crate::pipeline::maps::take(spans.len() + ADDED_FIELDS);
    let head = buf.split_to(len).freeze();
    let built = (|| {
        for &[ns, nl, vs, vl] in spans.iter() {
            // httparse has checked the name's characters; `HeaderName` lower-cases it.
            let name = HeaderName::from_bytes(&head[slice((ns, nl))]).ok()?;
            let value = HeaderValue::from_maybe_shared(head.slice(slice((vs, vl)))).ok()?;
            headers.append(name, value);
        }
        Uri::from_maybe_shared(head.slice(slice(target))).ok()
    })();
    let Some(uri) = built else {
        // Put the head back in front of what follows it, for hyper to read and answer.
        let mut all = BytesMut::with_capacity(head.len() + buf.len());
        all.extend_from_slice(&head);
        all.extend_from_slice(buf);
        *buf = all;
        return Err(Handoff::Malformed);
    };
    let mut req = Request::new(ClientBody::Empty);
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    Ok(Some(Head { req, close }))
}

/// Whether a comma-separated field value lists `token` (parameters after `;` ignored).
fn lists(value: &[u8], token: &[u8]) -> bool {
    value.split(|&b| b == b',').any(|t| {
        let t = t.split(|&b| b == b';').next().unwrap_or_default();
        t.trim_ascii().eq_ignore_ascii_case(token)
    })
}

/// How an answer's body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body (1xx, 204, 304).
    None,
    /// This many bytes left.
    Length(u64),
    /// Chunked.
    Chunked,
    /// Until the connection closes.
    Close,
}

/// Writes `answer` on `io`; `Ok(true)` when the connection may carry another request.
async fn respond<I>(
    io: &mut TimedIo<I>,
    answer: &mut crate::pipeline::Answer,
    out: &mut Vec<u8>,
    mut close: bool,
) -> std::io::Result<bool>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let status = answer.status();
    let headers = answer.headers();
    // Which framing fields it has, and the length: one pass over the fields, not a lookup each.
    let (mut te, mut lengths, mut has_date) = (false, crate::upstream::h1::Lengths::default(), false);
    for (name, value) in headers {
        te |= name == header::TRANSFER_ENCODING;
        if name == header::CONTENT_LENGTH {
            lengths.note(value.as_bytes());
        }
        has_date |= name == header::DATE;
    }
    let has_length = lengths.any();
    let mut framing =
        if status.is_informational() || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            Framing::None
        } else if te {
            if crate::upstream::h1::chunked_last(headers) {
                Framing::Chunked
            } else {
                Framing::Close
            }
        } else if has_length {
            lengths.agreed().map_or(Framing::Close, Framing::Length)
        } else {
            match answer.body().size_hint().exact() {
                Some(n) => Framing::Length(n),
                None => Framing::Chunked,
            }
        };
    if framing == Framing::Close {
        close = true;
    }
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    match answer.extensions().get::<hyper::ext::ReasonPhrase>() {
        Some(r) => out.extend_from_slice(r.as_bytes()),
        None => out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes()),
    }
    out.extend_from_slice(b"\r\n");
    let mut said_close = false;
    for (name, value) in headers {
        if te && name == header::CONTENT_LENGTH {
            continue; // never both (RFC 9112 §6.2)
        }
        if name == crate::pipeline::forward::X_REQUEST_ID {
            continue; // the gateway's own goes out below
        }
        if name == header::CONNECTION && lists(value.as_bytes(), b"close") {
            said_close = true;
        }
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    // The gateway's request id, written here rather than inserted among the fields
    // (`pipeline::handle` with `writes_id`).
    if let Some(id) = answer.body().request_id() {
        field(out, b"x-request-id", id.as_bytes());
    }
    if !has_date {
        DATE.with_borrow_mut(|d| field(out, b"date", d.now().as_bytes()));
    }
    if !has_length && !te {
        match framing {
            Framing::Length(n) => {
                let _ = write!(out, "content-length: {n}\r\n");
            }
            Framing::Chunked => field(out, b"transfer-encoding", b"chunked"),
            Framing::None | Framing::Close => {}
        }
    }
    close |= said_close;
    if close && !said_close {
        field(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    crate::pipeline::maps::give(std::mem::take(answer.headers_mut()));

    let mut body = Pin::new(answer.body_mut());
    if framing != Framing::None {
        loop {
            // The next frame if it is there; otherwise what is gathered goes out first.
            let frame = match poll_fn(|cx| Poll::Ready(body.as_mut().poll_frame(cx))).await {
                Poll::Ready(f) => f,
                Poll::Pending => {
                    send(io, out).await?;
                    io.flush().await?;
                    poll_fn(|cx| body.as_mut().poll_frame(cx)).await
                }
            };
            let data = match frame {
                None => break,
                Some(Err(_)) => {
                    // What came before the failure goes out; closing tells the client the rest
                    // is missing.
                    send(io, out).await?;
                    io.flush().await?;
                    return Ok(false);
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    Err(_) => continue, // trailers
                },
            };
            let ended = body.is_end_stream();
            if data.is_empty() && !ended {
                continue;
            }
            match &mut framing {
                Framing::Length(left) => {
                    if data.len() as u64 > *left {
                        // Longer than it said: what fits goes out, then the connection ends.
                        let fits = data.slice(..*left as usize);
                        gather(io, out, &fits).await?;
                        send(io, out).await?;
                        io.flush().await?;
                        return Ok(false);
                    }
                    *left -= data.len() as u64;
                    gather(io, out, &data).await?;
                }
                Framing::Chunked if data.is_empty() => {}
                Framing::Chunked => {
                    let _ = write!(out, "{:x}\r\n", data.len());
                    gather(io, out, &data).await?;
                    out.extend_from_slice(b"\r\n");
                }
                Framing::Close => gather(io, out, &data).await?,
                Framing::None => {}
            }
            if ended {
                break; // the body says so: no poll for its end
            }
        }
        match framing {
            Framing::Chunked => out.extend_from_slice(b"0\r\n\r\n"),
            Framing::Length(left) if left > 0 => close = true, // shorter than it said
            _ => {}
        }
    }
    send(io, out).await?;
    io.flush().await?;
    Ok(!close)
}

/// Appends one header field line.
fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Adds `data` to what is gathered, or writes both when that grows too large.
async fn gather<I>(io: &mut TimedIo<I>, out: &mut Vec<u8>, data: &Bytes) -> std::io::Result<()>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    if out.len() + data.len() <= WRITE_GATHER {
        out.extend_from_slice(data);
        return Ok(());
    }
    send(io, out).await?;
    io.write_all(data).await
}

/// Writes what is gathered.
async fn send<I>(io: &mut TimedIo<I>, out: &mut Vec<u8>) -> std::io::Result<()>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    if !out.is_empty() {
        io.write_all(out).await?;
        out.clear();
    }
    Ok(())
}

/// The `Date` value, formatted once a second per thread.
struct CachedDate {
    second: u64,
    text: String,
}

impl CachedDate {
    fn now(&mut self) -> &str {
        let now = SystemTime::now();
        let second = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        if second != self.second || self.text.is_empty() {
            self.second = second;
            self.text = httpdate::fmt_http_date(now);
        }
        &self.text
    }
}

thread_local! {
    static DATE: RefCell<CachedDate> = const { RefCell::new(CachedDate { second: 0, text: String::new() }) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(raw: &[u8]) -> (Result<Option<Head>, Handoff>, BytesMut) {
        let mut buf = BytesMut::from(raw);
        let mut spans = Vec::new();
        let r = parse(&mut buf, &mut spans);
        (r, buf)
    }

    #[test]
    fn a_request_without_a_body_is_parsed_and_split_off() {
        let (r, rest) =
            parsed(b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 00\r\nX-A: 1\r\nx-a: 2\r\n\r\nGET /next");
        let Ok(Some(head)) = r else { panic!("not parsed") };
        assert_eq!(head.req.method(), Method::GET);
        assert_eq!(head.req.uri(), "/a?b=1");
        assert_eq!(head.req.version(), Version::HTTP_11);
        let a: Vec<_> = head.req.headers().get_all("x-a").iter().collect();
        assert_eq!(a, ["1", "2"]);
        assert!(!head.close);
        assert_eq!(&rest[..], b"GET /next", "what follows the head stays");
    }

    #[test]
    fn connection_close_is_read_among_other_tokens() {
        let (r, _) = parsed(b"GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n");
        assert!(matches!(r, Ok(Some(Head { close: true, .. }))));
    }

    #[test]
    fn partial_heads_wait_for_more() {
        let (r, rest) = parsed(b"GET / HTTP/1.1\r\nHost: x\r\n");
        assert!(matches!(r, Ok(None)));
        assert_eq!(&rest[..], b"GET / HTTP/1.1\r\nHost: x\r\n");
    }

    #[test]
    fn anything_else_is_left_whole_for_hyper() {
        for (raw, why) in [
            (&b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"[..], Handoff::Body),
            (b"GET / HTTP/1.1\r\nContent-Length: 0, 0\r\n\r\n", Handoff::Body),
            (b"GET / HTTP/1.1\r\nContent-Length: \r\n\r\n", Handoff::Body),
            (
                b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                Handoff::Body,
            ),
            (
                b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
                Handoff::Special,
            ),
            (b"PUT / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n", Handoff::Special),
            (b"GET / HTTP/1.1\r\nTE: gzip, trailers;q=1\r\n\r\n", Handoff::Special),
            (b"HEAD / HTTP/1.1\r\n\r\n", Handoff::Special),
            (b"CONNECT x:443 HTTP/1.1\r\n\r\n", Handoff::Target),
            (b"CONNECT / HTTP/1.1\r\n\r\n", Handoff::Special),
            (b"GET / HTTP/1.0\r\n\r\n", Handoff::Version),
            (b"GET http://x/ HTTP/1.1\r\n\r\n", Handoff::Target),
            (b"OPTIONS * HTTP/1.1\r\n\r\n", Handoff::Target),
            (b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", Handoff::Malformed),
            (b"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n", Handoff::Malformed),
            (b"GET  / HTTP/1.1\r\n\r\n", Handoff::Malformed),
            // Accepted by the head parser, refused by the URI type: found after the head was
            // split off, and put back.
            (b"GET /a<b> HTTP/1.1\r\nHost: x\r\n\r\nnext", Handoff::Malformed),
        ] {
            let (r, rest) = parsed(raw);
            assert!(
                matches!(r, Err(w) if w == why),
                "{:?}: {:?}",
                String::from_utf8_lossy(raw),
                r.map(|h| h.is_some())
            );
            assert_eq!(&rest[..], raw, "{:?}", String::from_utf8_lossy(raw));
        }
        let many: String = (0..MAX_FIELDS + 1).map(|i| format!("x-{i}: v\r\n")).collect();
        let raw = format!("GET / HTTP/1.1\r\n{many}\r\n");
        let (r, rest) = parsed(raw.as_bytes());
        assert!(matches!(r, Err(Handoff::Large)));
        assert_eq!(&rest[..], raw.as_bytes());
    }

    #[test]
    fn lists_reads_tokens_and_ignores_parameters() {
        assert!(lists(b"a, Close", b"close"));
        assert!(lists(b"trailers;q=0.5", b"trailers"));
        assert!(!lists(b"closed", b"close"));
        assert!(!lists(b"", b"close"));
    }
}
