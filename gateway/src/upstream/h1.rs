//! HTTP/1.1 exchanges without a request body, driven by the request's own task.
//!
//! hyper's client runs every connection in a task of its own and passes requests, answers and
//! body chunks across it through channels; for the common request without a body (a GET, a
//! HEAD, a DELETE) that hand-over is most of what the exchange costs. Here the request's task
//! writes the request head on the connection and reads the answer itself, parsing it with
//! `httparse` (the parser hyper uses), and the answer's body reads from the same connection as
//! the client-facing side asks for it. The connection goes back to its endpoint's idle stack
//! once the body has been read to its end, and is closed instead when the answer says so
//! (`Connection: close`, HTTP/1.0 without keep-alive, a body that ends with the connection) or
//! when anything about it is out of the ordinary.
//!
//! Requests with a body or asking for a protocol upgrade go through hyper's client, which
//! writes the body while reading the answer and hands over upgraded connections.
//!
//! Framing follows RFC 9112 §6.3: no body for a HEAD request or a 1xx, 204 or 304 answer
//! (1xx answers other than 101 are skipped); `Transfer-Encoding` ending in `chunked` is decoded
//! (with a `Content-Length` beside it dropped, and the connection not reused); any other
//! `Transfer-Encoding`, or no length at all, reads to the end of the connection;
//! `Content-Length` must be one number (repeats of the same number are accepted), or the answer
//! is refused.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::Endpoint;
use crate::pipeline::forward::Added;

/// Most header fields an answer (or its trailers) may carry, as hyper's client allows.
const MAX_HEADERS: usize = 100;
/// Largest answer head, as hyper's client allows (its default read buffer limit).
const MAX_HEAD_BYTES: usize = 8192 + 4096 * 100;
/// Largest chunk-size line (size, extensions and CRLF).
const MAX_CHUNK_LINE: usize = 4096;
/// Largest trailer section.
const MAX_TRAILER_BYTES: usize = 16 * 1024;
/// How much a read asks for at least.
const READ_SIZE: usize = 8 * 1024;
/// How much a body read asks for at most.
const MAX_READ_SIZE: usize = 64 * 1024;

/// A connection to an endpoint: TCP, or TLS over TCP.
#[derive(Debug)]
pub enum Stream {
    /// `http://`.
    Tcp(TcpStream),
    /// `https://`.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

/// An open connection and what it has read beyond the last answer (nothing, when idle).
#[derive(Debug)]
pub struct Conn {
    stream: Stream,
    buf: BytesMut,
    /// The request head being written (kept for its capacity).
    head: Vec<u8>,
    /// Where the answer head's fields are (kept for its capacity).
    spans: Vec<[u32; 4]>,
}

// === impl Conn ===

impl Conn {
    /// A new connection (boxed once, so that answers and idle stacks move a pointer).
    pub fn new(stream: Stream) -> Box<Self> {
        Box::new(Self {
            stream,
            buf: BytesMut::new(),
            head: Vec::new(),
            spans: Vec::new(),
        })
    }

    /// Whether an idle connection can take a request: nothing has arrived on it since its last
    /// answer (the upstream closing it, say). Costs no system call unless the socket has
    /// become readable.
    pub fn usable(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut byte = [0u8; 1];
        let mut rb = ReadBuf::new(&mut byte);
        matches!(Pin::new(&mut self.stream).poll_read(&mut cx, &mut rb), Poll::Pending)
    }
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing the request failed.
    #[error("writing the request: {0}")]
    Write(#[source] io::Error),
    /// Reading the answer failed.
    #[error("reading the answer: {0}")]
    Read(#[source] io::Error),
    /// The upstream closed the connection before a whole answer head.
    #[error("the upstream closed the connection before answering")]
    Closed,
    /// The answer is not HTTP/1.x as RFC 9112 has it.
    #[error("invalid answer: {0}")]
    Invalid(&'static str),
    /// The body ended early or its framing is broken.
    #[error("answer body: {0}")]
    Body(&'static str),
}

/// A request that may go through here: no body, no upgrade, not CONNECT.
pub fn eligible<B: http_body::Body>(req: &Request<B>) -> bool {
    req.body().is_end_stream() && req.method() != Method::CONNECT && !req.headers().contains_key(header::UPGRADE)
}

/// Writes the head of `req` (its fields, then `added`) on `conn` and reads the answer's
/// head; the answer's body reads from the connection, which goes back to `endpoint` when that
/// body ends. `Err` carries
/// whether the request may not have reached the upstream at all (the write failed).
pub async fn exchange<B>(
    mut conn: Box<Conn>,
    req: &Request<B>,
    added: &Added,
    endpoint: &Arc<Endpoint>,
) -> Result<Response<Body>, (Error, bool)> {
    encode(req, added, &mut conn.head);
    if let Err(e) = conn.stream.write_all(&conn.head).await {
        return Err((Error::Write(e), true));
    }
    if let Err(e) = conn.stream.flush().await {
        return Err((Error::Write(e), true));
    }
    let head = loop {
        // An idle connection's buffer is empty: nothing to parse before the first read.
        if !conn.buf.is_empty() {
            match parse(&mut conn.buf, &mut conn.spans, req.method()) {
                Ok(Some(head)) => break head,
                Ok(None) => {}
                Err(e) => return Err((e, false)),
            }
        }
        if conn.buf.len() >= MAX_HEAD_BYTES {
            return Err((Error::Invalid("head larger than 417792 bytes"), false));
        }
        conn.buf.reserve(READ_SIZE);
        match conn.stream.read_buf(&mut conn.buf).await {
            Ok(0) if conn.buf.is_empty() => return Err((Error::Closed, false)),
            Ok(0) => return Err((Error::Invalid("the connection closed within the head"), false)),
            Ok(_) => {}
            Err(e) => return Err((Error::Read(e), false)),
        }
    };
    let mut body = Body {
        conn: Some(conn),
        framing: head.framing,
        keep_alive: head.keep_alive,
        endpoint: endpoint.clone(),
    };
    body.end_if_done();
    let mut resp = Response::new(body);
    *resp.status_mut() = head.status;
    *resp.version_mut() = head.version;
    *resp.headers_mut() = head.headers;
    if let Some(r) = head.reason {
        resp.extensions_mut().insert(r);
    }
    Ok(resp)
}

/// The request head: request line in origin form, then the header fields as they are, then
/// the gateway's own.
fn encode<B>(req: &Request<B>, added: &Added, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    let target = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    out.extend_from_slice(if target.is_empty() { b"/" } else { target.as_bytes() });
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers().iter().chain(added.iter()) {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A parsed answer head.
struct Head {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    /// A reason phrase other than the usual one.
    reason: Option<hyper::ext::ReasonPhrase>,
    framing: Framing,
    keep_alive: bool,
}

/// Parses an answer head from the front of `buf` (taking it out), skipping informational
/// answers; `None` if more bytes are needed. `spans` is scratch space kept with the connection.
fn parse(buf: &mut BytesMut, spans: &mut Vec<[u32; 4]>, method: &Method) -> Result<Option<Head>, Error> {
    loop {
        // Where each field's name and value are in `buf`, so that the values can share the
        // head's bytes once it is split off.
        spans.clear();
        let (len, code, minor, reason) = {
            let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
            let mut r = httparse::Response::new(&mut []);
            let len =
                match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut r, buf, &mut fields) {
                    Ok(httparse::Status::Complete(n)) => n,
                    Ok(httparse::Status::Partial) => return Ok(None),
                    Err(httparse::Error::TooManyHeaders) => return Err(Error::Invalid("more than 100 header fields")),
                    Err(_) => return Err(Error::Invalid("malformed head")),
                };
            let base = buf.as_ptr() as usize;
            let at = |s: &[u8]| (s.as_ptr() as usize - base) as u32;
            spans.extend(r.headers.iter().map(|f| {
                [
                    at(f.name.as_bytes()),
                    f.name.len() as u32,
                    at(f.value),
                    f.value.len() as u32,
                ]
            }));
            let code = r.code.unwrap_or(0);
            // A reason phrase other than the status code's usual one is passed on as it is.
            let reason = r
                .reason
                .filter(|&p| {
                    !p.is_empty() && StatusCode::from_u16(code).ok().and_then(|c| c.canonical_reason()) != Some(p)
                })
                .map(|p| (at(p.as_bytes()), p.len() as u32));
            (len, code, r.version.unwrap_or(1), reason)
        };
        let head = buf.split_to(len).freeze();
        let status = StatusCode::from_u16(code).map_err(|_| Error::Invalid("bad status code"))?;
        if status.is_informational() {
            if code == 101 {
                return Err(Error::Invalid(
                    "101 Switching Protocols to a request that asked for no upgrade",
                ));
            }
            continue;
        }
        // Room for the request id the answer gets.
        let mut headers = crate::pipeline::maps::take(spans.len() + 1);
        // The fields framing and persistence depend on, noted on the way (not looked up after).
        let (mut coded, mut length) = (false, Lengths::default());
        // `Connection` tokens (RFC 9112 §9.3).
        let (mut close, mut keep) = (false, false);
        for &[ns, nl, vs, vl] in spans.iter() {
            let (ns, nl, vs, vl) = (ns as usize, nl as usize, vs as usize, vl as usize);
            let name = HeaderName::from_bytes(&head[ns..ns + nl]).map_err(|_| Error::Invalid("bad field name"))?;
            coded |= name == header::TRANSFER_ENCODING;
            if name == header::CONTENT_LENGTH {
                length.note(&head[vs..vs + vl]);
            }
            if name == header::CONNECTION {
                let mut names_fields = false;
                for token in head[vs..vs + vl].split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        keep = true;
                    } else if !token.is_empty() {
                        names_fields = true;
                    }
                }
                // Hop-by-hop, removed on the way anyway: kept only when it names other fields
                // to be removed with it.
                if !names_fields {
                    continue;
                }
            }
            let value = HeaderValue::from_maybe_shared(head.slice(vs..vs + vl))
                .map_err(|_| Error::Invalid("bad field value"))?;
            headers.append(name, value);
        }
        let reason = reason
            .and_then(|(at, n)| hyper::ext::ReasonPhrase::try_from(head.slice(at as usize..(at + n) as usize)).ok());
        let version = if minor == 0 { Version::HTTP_10 } else { Version::HTTP_11 };
        let mut keep_alive = !close && (keep || version != Version::HTTP_10);
        let framing =
            if *method == Method::HEAD || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
                Framing::Done
            } else if coded {
                if version == Version::HTTP_10 {
                    return Err(Error::Invalid("Transfer-Encoding in an HTTP/1.0 answer"));
                }
                if headers.remove(header::CONTENT_LENGTH).is_some() {
                    // Both: the chunked framing wins (RFC 9112 §6.3), and nothing more is read on
                    // this connection.
                    keep_alive = false;
                }
                if chunked_last(&headers) {
                    Framing::Chunked(Chunk::Size)
                } else {
                    keep_alive = false;
                    Framing::Eof
                }
            } else if length.any() {
                let n = length.agreed().ok_or(Error::Invalid("bad Content-Length"))?;
                if length.repeated() {
                    // The same number several times: passed on once (RFC 9110 §8.6).
                    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
                }
                Framing::Length(n)
            } else {
                keep_alive = false;
                Framing::Eof
            };
        return Ok(Some(Head {
            status,
            version,
            headers,
            reason,
            framing,
            keep_alive,
        }));
    }
}

/// Whether the last transfer coding is `chunked`.
pub(crate) fn chunked_last(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
}

/// The `Content-Length` values of one head, noted as its fields go by (RFC 9110 §8.6: several
/// values, or a list, are acceptable only when they all state the same number).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Lengths {
    fields: u32,
    listed: bool,
    length: Option<u64>,
    bad: bool,
}

impl Lengths {
    /// One field's value.
    pub(crate) fn note(&mut self, value: &[u8]) {
        self.fields += 1;
        // The usual case, one plain number, read directly.
        if let Some(n) = number(value) {
            self.agree(n);
            return;
        }
        self.listed = true;
        for n in value.split(|&b| b == b',') {
            match number(n.trim_ascii()) {
                Some(n) => self.agree(n),
                None => self.bad = true,
            }
        }
    }

    fn agree(&mut self, n: u64) {
        if self.length.is_some_and(|l| l != n) {
            self.bad = true;
        }
        self.length = Some(n);
    }

    /// Whether there was any `Content-Length` field.
    pub(crate) fn any(&self) -> bool {
        self.fields > 0
    }

    /// Whether the length came as more than one field or as a list (then to be passed on as
    /// one number).
    pub(crate) fn repeated(&self) -> bool {
        self.fields > 1 || self.listed
    }

    /// The length they all state; `None` without any, or when one is not a number or they
    /// disagree.
    pub(crate) fn agreed(&self) -> Option<u64> {
        if self.bad {
            None
        } else {
            self.length
        }
    }
}

/// A decimal number of 1 to 19 digits (so it fits in a `u64`), nothing else.
fn number(b: &[u8]) -> Option<u64> {
    (!b.is_empty() && b.len() <= 19 && b.iter().all(u8::is_ascii_digit))
        .then(|| b.iter().fold(0, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// How the rest of the body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes more.
    Length(u64),
    /// Chunked, at this point of a chunk.
    Chunked(Chunk),
    /// Until the upstream closes the connection.
    Eof,
    /// Ended.
    Done,
}

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Within a chunk's data, this many bytes left.
    Data(u64),
    /// After a chunk's data, before its CRLF.
    DataEnd,
    /// After the last chunk, before the trailer section and its final CRLF.
    Trailers,
}

/// An answer's body, read from its connection as it is asked for.
#[derive(Debug)]
pub struct Body {
    /// `None` once the body has ended (the connection went back or was closed).
    conn: Option<Box<Conn>>,
    framing: Framing,
    keep_alive: bool,
    endpoint: Arc<Endpoint>,
}

// === impl Body ===

impl Body {
    /// Once the body has ended: the connection goes back to the endpoint's idle stack, when it
    /// may be reused and nothing beyond the answer arrived on it.
    fn end_if_done(&mut self) {
        if !matches!(self.framing, Framing::Done | Framing::Length(0)) {
            return;
        }
        self.framing = Framing::Done;
        if let Some(conn) = self.conn.take() {
            if self.keep_alive && conn.buf.is_empty() {
                self.endpoint.idle.put_conn(conn, self.endpoint.max_idle);
            }
        }
    }

    /// The next frame, or `None` at the end.
    fn next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            let buf = &mut conn.buf;
            let want = match self.framing {
                Framing::Done | Framing::Length(0) => {
                    self.end_if_done();
                    return Poll::Ready(None);
                }
                Framing::Length(n) => {
                    if !buf.is_empty() {
                        let take = (buf.len() as u64).min(n) as usize;
                        self.framing = Framing::Length(n - take as u64);
                        let data = buf.split_to(take).freeze();
                        self.end_if_done();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    n.min(MAX_READ_SIZE as u64) as usize
                }
                Framing::Eof => {
                    if !buf.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(buf.split().freeze()))));
                    }
                    MAX_READ_SIZE
                }
                Framing::Chunked(state) => match chunk_step(buf, state) {
                    Ok(Step::Frame(next, frame)) => {
                        self.framing = next;
                        self.end_if_done();
                        return Poll::Ready(Some(Ok(frame)));
                    }
                    Ok(Step::Moved(next)) => {
                        self.framing = next;
                        continue;
                    }
                    Ok(Step::NeedMore(want)) => want,
                    Err(e) => {
                        self.conn = None;
                        self.framing = Framing::Done;
                        return Poll::Ready(Some(Err(e)));
                    }
                },
            };
            buf.reserve(want.max(READ_SIZE));
            let read = ready!(tokio_util::io::poll_read_buf(Pin::new(&mut conn.stream), cx, buf));
            match read {
                Ok(0) if self.framing == Framing::Eof => {
                    self.conn = None;
                    self.framing = Framing::Done;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    self.conn = None;
                    self.framing = Framing::Done;
                    return Poll::Ready(Some(Err(Error::Body("the connection closed before the body's end"))));
                }
                Ok(_) => {}
                Err(e) => {
                    self.conn = None;
                    self.framing = Framing::Done;
                    return Poll::Ready(Some(Err(Error::Read(e))));
                }
            }
        }
    }
}

/// What one step of chunked decoding did.
enum Step {
    /// A frame to hand on, and where decoding goes on.
    Frame(Framing, Frame<Bytes>),
    /// Moved on without a frame.
    Moved(Framing),
    /// Needs more bytes (about this many).
    NeedMore(usize),
}

/// Decodes what `buf` holds of a chunked body at `state`.
fn chunk_step(buf: &mut BytesMut, state: Chunk) -> Result<Step, Error> {
    match state {
        Chunk::Size => {
            // httparse reads the size, skips extensions and wants the CRLF; it would take an
            // empty line for a zero size, so a hex digit must come first.
            if buf.first().is_some_and(|b| !b.is_ascii_hexdigit()) {
                return Err(Error::Body("bad chunk size"));
            }
            match httparse::parse_chunk_size(buf) {
                Ok(httparse::Status::Complete((n, _))) if n > MAX_CHUNK_LINE => {
                    Err(Error::Body("chunk-size line too long"))
                }
                Ok(httparse::Status::Complete((n, size))) => {
                    buf.advance(n);
                    Ok(Step::Moved(Framing::Chunked(if size == 0 {
                        Chunk::Trailers
                    } else {
                        Chunk::Data(size)
                    })))
                }
                Ok(httparse::Status::Partial) if buf.len() > MAX_CHUNK_LINE => {
                    Err(Error::Body("chunk-size line too long"))
                }
                Ok(httparse::Status::Partial) => Ok(Step::NeedMore(READ_SIZE)),
                Err(_) => Err(Error::Body("bad chunk size")),
            }
        }
        Chunk::Data(n) => {
            if buf.is_empty() {
                return Ok(Step::NeedMore(n.min(MAX_READ_SIZE as u64) as usize));
            }
            let take = (buf.len() as u64).min(n) as usize;
            let data = buf.split_to(take).freeze();
            let left = n - take as u64;
            let next = if left == 0 { Chunk::DataEnd } else { Chunk::Data(left) };
            Ok(Step::Frame(Framing::Chunked(next), Frame::data(data)))
        }
        Chunk::DataEnd => {
            if buf.len() < 2 {
                return Ok(Step::NeedMore(READ_SIZE));
            }
            if &buf[..2] != b"\r\n" {
                return Err(Error::Body("chunk data not followed by CRLF"));
            }
            buf.advance(2);
            Ok(Step::Moved(Framing::Chunked(Chunk::Size)))
        }
        Chunk::Trailers => {
            if buf.len() >= 2 && &buf[..2] == b"\r\n" {
                buf.advance(2);
                return Ok(Step::Moved(Framing::Done));
            }
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                if buf.len() > MAX_TRAILER_BYTES {
                    return Err(Error::Body("trailer section too large"));
                }
                return Ok(Step::NeedMore(READ_SIZE));
            };
            let section = buf.split_to(end + 4);
            let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let parsed = match httparse::parse_headers(&section, &mut fields) {
                Ok(httparse::Status::Complete((_, parsed))) => parsed,
                _ => return Err(Error::Body("malformed trailer section")),
            };
            let mut trailers = HeaderMap::with_capacity(parsed.len());
            for f in parsed {
                let name = HeaderName::from_bytes(f.name.as_bytes()).map_err(|_| Error::Body("bad trailer name"))?;
                let value = HeaderValue::from_bytes(f.value).map_err(|_| Error::Body("bad trailer value"))?;
                trailers.append(name, value);
            }
            Ok(Step::Frame(Framing::Done, Frame::trailers(trailers)))
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        self.get_mut().next(cx)
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Done | Framing::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Done => SizeHint::with_exact(0),
            Framing::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head_of(raw: &str, method: &Method) -> Result<Option<Head>, Error> {
        let mut buf = BytesMut::from(raw.as_bytes());
        parse(&mut buf, &mut Vec::new(), method)
    }

    fn ok(raw: &str) -> Head {
        match head_of(raw, &Method::GET) {
            Ok(Some(h)) => h,
            Ok(None) => panic!("incomplete: {raw:?}"),
            Err(e) => panic!("{e}: {raw:?}"),
        }
    }

    fn refused(raw: &str) -> String {
        match head_of(raw, &Method::GET) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted: {raw:?}"),
        }
    }

    #[test]
    fn heads_are_parsed_with_their_framing() {
        let h = ok("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\n\r\nhello");
        assert_eq!(h.status, StatusCode::OK);
        assert_eq!(h.framing, Framing::Length(5));
        assert!(h.keep_alive);
        assert_eq!(h.headers.get_all("x-a").iter().count(), 2);
        assert!(h.reason.is_none(), "the usual reason phrase is not kept");
        assert!(ok("HTTP/1.1 200 Fine\r\ncontent-length: 0\r\n\r\n").reason.is_some());

        let h = ok("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n");
        assert_eq!(h.framing, Framing::Chunked(Chunk::Size));
        assert!(h.keep_alive);
        let h = ok("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n");
        assert_eq!(h.framing, Framing::Chunked(Chunk::Size));
        assert!(!h.headers.contains_key(header::CONTENT_LENGTH));
        assert!(!h.keep_alive, "both framings: not reused");
        let h = ok("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n");
        assert_eq!(h.framing, Framing::Eof);
        assert!(!h.keep_alive);
        let h = ok("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(h.framing, Framing::Eof);
        assert!(!h.keep_alive);

        assert_eq!(
            ok("HTTP/1.1 204 No Content\r\ncontent-length: 9\r\n\r\n").framing,
            Framing::Done
        );
        assert_eq!(
            ok("HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n").framing,
            Framing::Done
        );
        match head_of("HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n", &Method::HEAD) {
            Ok(Some(h)) => assert_eq!(h.framing, Framing::Done),
            _ => panic!("HEAD answer refused"),
        }
        // Informational answers are skipped.
        let h = ok("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(h.status, StatusCode::CREATED);
        assert!(!h.headers.contains_key("link"));
    }

    #[test]
    fn keep_alive_follows_version_and_connection() {
        assert!(!ok("HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n").keep_alive);
        assert!(ok("HTTP/1.0 200 OK\r\nconnection: Keep-Alive\r\ncontent-length: 0\r\n\r\n").keep_alive);
        assert!(!ok("HTTP/1.1 200 OK\r\nconnection: x-other, close\r\ncontent-length: 0\r\n\r\n").keep_alive);
        assert!(ok("HTTP/1.1 200 OK\r\nconnection: x-other\r\ncontent-length: 0\r\n\r\n").keep_alive);
        // A `Connection` field naming no other field is not kept (it would only be removed);
        // one that names others stays, for them to be removed with it.
        let head = ok("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\ncontent-length: 0\r\n\r\n");
        assert!(head.keep_alive && !head.headers.contains_key(header::CONNECTION));
        let head = ok("HTTP/1.1 200 OK\r\nconnection: keep-alive, x-other\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(head.headers[header::CONNECTION], "keep-alive, x-other");
    }

    #[test]
    fn a_partial_head_asks_for_more() {
        for raw in [
            "",
            "HTTP/1.1 200",
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n",
            "HTTP/1.1 100 Continue\r\n\r\n",
        ] {
            assert!(matches!(head_of(raw, &Method::GET), Ok(None)), "{raw:?}");
        }
    }

    #[test]
    fn content_length_must_be_one_number() {
        let repeated = ok("HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\ncontent-length: 5\r\n\r\n");
        assert_eq!(repeated.framing, Framing::Length(5));
        // Passed on as one number.
        let values: Vec<_> = repeated.headers.get_all(header::CONTENT_LENGTH).iter().collect();
        assert_eq!(values, ["5"]);
        for bad in ["5, 6", "-1", "+5", "0x10", "", "5 5", "99999999999999999999"] {
            let raw = format!("HTTP/1.1 200 OK\r\ncontent-length: {bad}\r\n\r\n");
            assert_eq!(refused(&raw), "invalid answer: bad Content-Length", "{bad:?}");
        }
        assert_eq!(
            refused("HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n"),
            "invalid answer: bad Content-Length"
        );
    }

    #[test]
    fn malformed_heads_are_refused() {
        assert_eq!(refused("SSH-2.0-OpenSSH\r\n\r\n"), "invalid answer: malformed head");
        assert_eq!(refused("HTTP/1.1 2000 OK\r\n\r\n"), "invalid answer: malformed head");
        assert_eq!(
            refused("HTTP/1.1 200 OK\r\nbad header\r\n\r\n"),
            "invalid answer: malformed head"
        );
        assert!(refused("HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n").contains("101"));
        assert!(refused("HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").contains("HTTP/1.0"));
        let many: String = (0..101).map(|i| format!("x-{i}: v\r\n")).collect();
        assert_eq!(
            refused(&format!("HTTP/1.1 200 OK\r\n{many}\r\n")),
            "invalid answer: more than 100 header fields"
        );
    }

    /// Decodes `input` fed `step` bytes at a time: the data, and the trailers if any.
    fn decode(input: &[u8], step: usize) -> Result<(Vec<u8>, Option<HeaderMap>), Error> {
        let mut buf = BytesMut::new();
        let mut fed = 0;
        let mut state = Framing::Chunked(Chunk::Size);
        let (mut data, mut trailers) = (Vec::new(), None);
        loop {
            let Framing::Chunked(chunk) = state else {
                assert!(buf.is_empty(), "nothing left over");
                return Ok((data, trailers));
            };
            match chunk_step(&mut buf, chunk)? {
                Step::Frame(next, frame) => {
                    state = next;
                    match frame.into_data() {
                        Ok(d) => data.extend_from_slice(&d),
                        Err(f) => trailers = f.into_trailers().ok(),
                    }
                }
                Step::Moved(next) => state = next,
                Step::NeedMore(_) => {
                    if fed == input.len() {
                        return Err(Error::Body("ended early"));
                    }
                    let end = (fed + step).min(input.len());
                    buf.extend_from_slice(&input[fed..end]);
                    fed = end;
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_however_they_arrive() {
        let input =
            b"5\r\nhello\r\n6;name=\"value\"\r\n world\r\nA \r\n, and more\r\n0\r\nX-Checksum: 1\r\nX-Other: 2\r\n\r\n";
        for step in [1, 2, 3, 7, input.len()] {
            let (data, trailers) = decode(input, step).unwrap_or_else(|e| panic!("step {step}: {e}"));
            assert_eq!(data, b"hello world, and more", "step {step}");
            let trailers = trailers.unwrap_or_default();
            assert_eq!(trailers["x-checksum"], "1");
            assert_eq!(trailers.len(), 2);
        }
        let (data, trailers) = decode(b"0\r\n\r\n", 1).unwrap_or_else(|e| panic!("{e}"));
        assert!(data.is_empty() && trailers.is_none());
    }

    #[test]
    fn broken_chunked_bodies_are_refused() {
        let long_ext = format!("1;{}\r\nx\r\n0\r\n\r\n", "e".repeat(MAX_CHUNK_LINE + 10));
        let many_trailers = format!("0\r\n{}\r\n", "x-t: v\r\n".repeat(MAX_TRAILER_BYTES / 8 + 10));
        for (input, why) in [
            (&b"zz\r\nhello\r\n0\r\n\r\n"[..], "bad chunk size"),
            (b"\r\n", "bad chunk size"),
            (b"5\nhello\r\n0\r\n\r\n", "bad chunk size"),
            (b"1ffffffffffffffff\r\n", "bad chunk size"),
            (b"5\r\nhelloXX0\r\n\r\n", "chunk data not followed by CRLF"),
            (long_ext.as_bytes(), "chunk-size line too long"),
            (many_trailers.as_bytes(), "trailer section too large"),
            (b"0\r\nnot a field\r\n\r\n", "malformed trailer section"),
        ] {
            match decode(input, 64) {
                Err(e) => assert_eq!(e.to_string(), format!("answer body: {why}")),
                Ok(_) => panic!("accepted {:?}", String::from_utf8_lossy(input)),
            }
        }
    }

    #[test]
    fn request_heads_are_written_in_origin_form() {
        let req = Request::delete("/a/b?c=d")
            .header("host", "example.test")
            .header("x-two", "1")
            .header("x-two", "2")
            .body(())
            .unwrap_or_default();
        let mut out = Vec::new();
        let mut added = Added::default();
        added.set(
            &crate::pipeline::forward::X_REQUEST_ID,
            Some(HeaderValue::from_static("r1")),
        );
        added.set(&crate::telemetry::trace::TRACESTATE, None);
        encode(&req, &added, &mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "DELETE /a/b?c=d HTTP/1.1\r\nhost: example.test\r\nx-two: 1\r\nx-two: 2\r\nx-request-id: r1\r\n\r\n",
            "the gateway's fields after the request's, one set to nothing left out"
        );
        let bare = Request::get("http://example.test").body(()).unwrap_or_default();
        encode(&bare, &Added::default(), &mut out);
        assert!(out.starts_with(b"GET / HTTP/1.1\r\n"));
    }
}
