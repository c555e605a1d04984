//! Forward stage helpers: what the proxy changes in headers on the way through.
//!
//! - hop-by-hop fields are removed both ways (RFC 9110 §7.6.1), including every field the
//!   `Connection` header names; an accepted `Upgrade` keeps `Connection: upgrade` and `Upgrade`;
//! - `X-Forwarded-For`, `-Proto`, `-Host` and `Forwarded` (RFC 7239) are appended to when the
//!   peer is a trusted proxy, and replaced otherwise;
//! - `X-Request-Id` is kept from a trusted peer when well-formed, or generated.
//!
//! The fields the gateway sets on every request (forwarding, request id, trace context) are
//! carried beside the request's map in an [`Added`], not inserted into it.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

/// `x-request-id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `x-forwarded-prefix`: the path prefix a route took off before the upstream saw the path.
pub static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
/// `forwarded` (a static, so that [`Added`] can hold it).
static FORWARDED: HeaderName = header::FORWARDED;
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Whether `ip` is one of the trusted proxies.
pub fn is_trusted(trusted: &[IpNet], ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    trusted.iter().any(|n| n.contains(&ip))
}

/// Whether the request asks for a protocol upgrade (HTTP/1.1 `Connection: upgrade` + `Upgrade`).
pub fn wants_upgrade(headers: &HeaderMap, version: http::Version) -> bool {
    version == http::Version::HTTP_11
        && headers.contains_key(header::UPGRADE)
        && connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

/// Whether a trusted proxy says the request reached it over HTTPS (`X-Forwarded-Proto`).
pub fn came_over_https(headers: &HeaderMap, trusted: bool) -> bool {
    trusted
        && headers
            .get(&X_FORWARDED_PROTO)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

/// The client's address: the peer's, or, when the peer is a trusted proxy, the address that
/// proxy saw (the last `X-Forwarded-For` entry).
pub fn client_ip(headers: &HeaderMap, peer: IpAddr, trusted: bool) -> IpAddr {
    if !trusted {
        return peer;
    }
    headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.rsplit(',').next())
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or(peer)
}

/// Whether `TE` lists `trailers`.
pub fn accepts_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
}

/// Adds `token` to `Vary` unless it is listed already.
pub fn add_vary(headers: &mut HeaderMap, token: &'static str) {
    let listed = headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)));
    if !listed {
        headers.append(header::VARY, HeaderValue::from_static(token));
    }
}

/// The tokens of a message's `Connection` fields, trimmed, empty ones left out.
pub fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Removes hop-by-hop fields. With `upgrade`, keeps `Upgrade` and sets `Connection: upgrade`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // Most requests carry none of these and most answers only `Connection`: one pass over the
    // names finds which are there, and only those are looked up again to be removed.
    let fixed: [&HeaderName; 9] = [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::PROXY_AUTHENTICATE,
        &header::PROXY_AUTHORIZATION,
        &header::UPGRADE,
    ];
    let mut present = 0u16;
    for k in headers.keys() {
        if let Some(i) = fixed.iter().position(|n| *n == k) {
            present |= 1 << i;
        }
    }
    if present == 0 && !upgrade {
        return;
    }
    if present & 1 != 0 {
        // `close` and `keep-alive` (the common tokens) name no field left to remove here.
        let named: Vec<HeaderName> = connection_tokens(headers)
            .filter(|t| !t.eq_ignore_ascii_case("close") && !t.eq_ignore_ascii_case("keep-alive"))
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for n in named {
            if !(upgrade && n == header::UPGRADE) {
                headers.remove(&n);
            }
        }
    }
    for (i, n) in fixed.into_iter().enumerate() {
        // The last is `Upgrade`, kept for an upgrade.
        if present & (1 << i) != 0 && !(upgrade && i == fixed.len() - 1) {
            headers.remove(n);
        }
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// A fresh request id: 128 random bits as 32 lowercase hex digits.
pub fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut n = fastrand::u128(..);
    let mut out = [0u8; 32];
    for b in out.iter_mut().rev() {
        *b = HEX[(n & 0xf) as usize];
        n >>= 4;
    }
    // Owned by the value: one allocation, shared (not copied) by the value's clones for the
    // upstream request, the answer and the access log.
    HeaderValue::from_maybe_shared(Bytes::from_owner(out)).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// The request id to use: a well-formed incoming one from a trusted peer, or a new one.
pub fn request_id(headers: &HeaderMap, trusted: bool) -> HeaderValue {
    if trusted {
        if let Some(v) = headers.get(&X_REQUEST_ID) {
            let b = v.as_bytes();
            if !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic()) {
                return v.clone();
            }
        }
    }
    new_request_id()
}

/// What forwarding headers say about a client connection, computed once per connection.
#[derive(Debug, Clone)]
pub struct PeerHeaders {
    /// The peer's address as an `X-Forwarded-For` element.
    pub ip: HeaderValue,
    /// The peer's address as an RFC 7239 `node` (IPv6 quoted and bracketed).
    pub node: String,
}

// === impl PeerHeaders ===

impl PeerHeaders {
    /// Values for a peer address (IPv4-mapped IPv6 is shown as IPv4).
    pub fn new(peer: SocketAddr) -> Self {
        let ip = match peer.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        let node = match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("\"[{v6}]\""),
        };
        let ip = HeaderValue::from_str(&ip.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Self { ip, node }
    }
}

/// The length of `s` as a quoted string.
fn quoted_len(s: &str) -> usize {
    2 + s.len() + s.bytes().filter(|&b| b == b'"' || b == b'\\').count()
}

fn quoted_into(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// Every value of `name`, trimmed and comma-joined, with `last` appended.
fn joined(headers: &HeaderMap, name: &HeaderName, last: &[u8]) -> Option<HeaderValue> {
    let mut out: Vec<u8> = Vec::new();
    for v in headers.get_all(name) {
        let t = v.as_bytes().trim_ascii();
        if !t.is_empty() {
            out.extend_from_slice(t);
            out.extend_from_slice(b", ");
        }
    }
    out.extend_from_slice(last);
    HeaderValue::from_maybe_shared(Bytes::from(out)).ok()
}

/// The fields the gateway sets on every forwarded request (forwarding, request id, trace
/// context), held apart from the request's map: the gateway's own HTTP/1.1 connections write
/// them after the request's fields, hyper's and HTTP/2 connections put them in the map first
/// ([`Added::apply`]). Inserting them into the map would hash and place each name again on
/// every request; this way a request that brings none of them costs one pass over its names
/// ([`Added::take_from`]).
#[derive(Debug)]
pub struct Added {
    fields: [(&'static HeaderName, Option<HeaderValue>); Added::MAX],
    len: usize,
}

impl Default for Added {
    fn default() -> Self {
        Added {
            fields: std::array::from_fn(|_| (&X_REQUEST_ID, None)),
            len: 0,
        }
    }
}

impl Added {
    /// The most fields one request gets (each name at most once).
    const MAX: usize = 8;

    /// Sets `name` to `value`; `None` only removes what the request brought. Names are told
    /// apart by address: each is one of the gateway's statics.
    pub fn set(&mut self, name: &'static HeaderName, value: Option<HeaderValue>) {
        if let Some(slot) = self.fields[..self.len].iter_mut().find(|(n, _)| std::ptr::eq(*n, name)) {
            slot.1 = value;
        } else if self.len < Self::MAX {
            self.fields[self.len] = (name, value);
            self.len += 1;
        } else {
            debug_assert!(false, "more than {} added fields", Self::MAX);
        }
    }

    /// The fields to write, in the order they were set.
    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        self.fields[..self.len]
            .iter()
            .filter_map(|(n, v)| v.as_ref().map(|v| (*n, v)))
    }

    /// Removes from `headers` every field of a name set here (what the client sent in their
    /// place); the common request, with none of them, is only read.
    pub fn take_from(&self, headers: &mut HeaderMap) {
        let names = &self.fields[..self.len];
        if headers.keys().any(|k| names.iter().any(|(n, _)| *n == k)) {
            for (n, _) in names {
                headers.remove(*n);
            }
        }
    }

    /// Puts the fields into `headers`, replacing any of the same name.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (n, v) in self.iter() {
            headers.insert(n, v.clone());
        }
    }
}

/// Sets the forwarding fields in `added` for a request from `peer` with the fields `headers`;
/// `host` is the Host the client sent.
pub fn add_forwarding(
    headers: &HeaderMap,
    added: &mut Added,
    peer: &PeerHeaders,
    trusted: bool,
    proto: &'static str,
    host: Option<&HeaderValue>,
) {
    // X-Forwarded-For: append to a trusted proxy's list, else start a new one.
    let xff = if trusted && headers.contains_key(&X_FORWARDED_FOR) {
        joined(headers, &X_FORWARDED_FOR, peer.ip.as_bytes()).unwrap_or_else(|| peer.ip.clone())
    } else {
        peer.ip.clone()
    };
    added.set(&X_FORWARDED_FOR, Some(xff));
    // A trusted proxy's X-Forwarded-Proto and -Host stay as they are (not set here).
    if !(trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        added.set(&X_FORWARDED_PROTO, Some(HeaderValue::from_static(proto)));
    }
    if !(trusted && headers.contains_key(&X_FORWARDED_HOST)) {
        added.set(&X_FORWARDED_HOST, host.cloned());
    }

    // Forwarded (RFC 7239)
    let host = host.and_then(|h| h.to_str().ok()).unwrap_or("");
    // Sized exactly: a value made from a string with room to spare would need a second
    // allocation to be shared.
    let host_len = if host.is_empty() { 0 } else { 6 + quoted_len(host) };
    let mut element = String::with_capacity(4 + peer.node.len() + 7 + proto.len() + host_len);
    element.push_str("for=");
    element.push_str(&peer.node);
    element.push_str(";proto=");
    element.push_str(proto);
    if !host.is_empty() {
        element.push_str(";host=");
        quoted_into(&mut element, host);
    }
    debug_assert_eq!(element.len(), element.capacity());
    let value = if trusted && headers.contains_key(header::FORWARDED) {
        joined(headers, &header::FORWARDED, element.as_bytes())
    } else {
        HeaderValue::from_maybe_shared(Bytes::from(element)).ok()
    };
    added.set(&FORWARDED, value);
}

/// `308 Permanent Redirect` to the same target over HTTPS at `host` and `port` (443 left out);
/// method and body are to be kept by the client.
pub fn https_redirect(host: &str, port: u16, uri: &http::Uri) -> http::Response<super::body::ProxyBody> {
    let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let location = if port == 443 {
        format!("https://{host}{pq}")
    } else {
        format!("https://{host}:{port}{pq}")
    };
    let mut r = http::Response::new(super::body::ProxyBody::local(Bytes::new()));
    *r.status_mut() = http::StatusCode::PERMANENT_REDIRECT;
    if let Ok(v) = HeaderValue::try_from(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// The answer of a route without an upstream: its redirect (with the request's path after
/// `prefix` and its query appended when it keeps the path) or its fixed answer.
pub fn direct_answer(
    d: &crate::config::DirectAnswer,
    prefix: &str,
    uri: &http::Uri,
) -> http::Response<super::body::ProxyBody> {
    use crate::config::DirectAnswer;
    match d {
        DirectAnswer::Redirect { to, status, keep_path } => {
            let mut location = to.clone();
            if *keep_path {
                let path = uri.path();
                let rest = path.strip_prefix(prefix.trim_end_matches('/')).unwrap_or(path);
                if !rest.is_empty() && rest != "/" {
                    let rest = if rest.starts_with('/') {
                        rest.to_string()
                    } else {
                        format!("/{rest}")
                    };
                    location = format!("{}{rest}", location.trim_end_matches('/'));
                }
                if let Some(q) = uri.query() {
                    location.push(if location.contains('?') { '&' } else { '?' });
                    location.push_str(q);
                }
            }
            let mut r = http::Response::new(super::body::ProxyBody::local(Bytes::new()));
            *r.status_mut() = *status;
            if let Ok(v) = HeaderValue::try_from(location) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        DirectAnswer::Respond {
            status,
            body,
            content_type,
        } => {
            let mut r = http::Response::new(super::body::ProxyBody::local(body.clone()));
            *r.status_mut() = *status;
            r.headers_mut().insert(header::CONTENT_TYPE, content_type.clone());
            r
        }
    }
}

/// The path the upstream gets when a route rewrites its prefix: `path` with the part `prefix`
/// matched (on a segment boundary) replaced by `to`; the query stays.
pub fn rewrite_prefix(prefix: &str, to: &str, pq: Option<&http::uri::PathAndQuery>) -> http::Uri {
    let path = pq.map(|p| p.path()).unwrap_or("/");
    let rest = path.strip_prefix(prefix).unwrap_or(path);
    // What follows the prefix, as "" or "/…": a prefix ending in '/' took the separator with it.
    let sep = if prefix.ends_with('/') { "/" } else { "" };
    let base = to.trim_end_matches('/');
    let query = pq.and_then(|p| p.query());
    let mut s = String::with_capacity(base.len() + sep.len() + rest.len() + query.map_or(0, |q| q.len() + 1) + 1);
    s.push_str(base);
    s.push_str(sep);
    s.push_str(rest);
    if s.is_empty() {
        s.push('/');
    }
    if let Some(q) = query {
        s.push('?');
        s.push_str(q);
    }
    http::Uri::try_from(s).unwrap_or_else(|_| http::Uri::from_static("/"))
}

/// Sets `X-Forwarded-Prefix` for a route that strips its path prefix (`rewrite_prefix: /`):
/// the prefix taken off, after a trusted proxy's own prefix when it sent one (untrusted ones
/// are removed before this). A prefix replaced by another path is not announced: the
/// upstream's paths then do not map onto the client's by a prefix.
pub fn add_prefix(headers: &mut HeaderMap, prefix: &str, to: &str) {
    let stripped = prefix.trim_end_matches('/');
    if to != "/" || stripped.is_empty() {
        return;
    }
    let outer = headers
        .get(&X_FORWARDED_PREFIX)
        .map(|v| {
            v.as_bytes()
                .trim_ascii()
                .strip_suffix(b"/")
                .unwrap_or(v.as_bytes().trim_ascii())
        })
        .unwrap_or_default();
    let mut value = Vec::with_capacity(outer.len() + stripped.len());
    value.extend_from_slice(outer);
    value.extend_from_slice(stripped.as_bytes());
    if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(value)) {
        headers.insert(&X_FORWARDED_PREFIX, v);
    }
}

/// The head of an upstream request without a body, kept to send the request again where the
/// client keeps the request it sends (hyper's HTTP/2 client; HTTP/1.1 pools hand it back).
#[derive(Debug)]
pub struct Replay {
    method: http::Method,
    uri: http::Uri,
    headers: HeaderMap,
}

// === impl Replay ===

impl Replay {
    /// A copy of `parts` (its extensions aside: nothing upstream reads them).
    pub fn of(parts: &http::request::Parts) -> Replay {
        Replay {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
        }
    }

    /// The request again, with an empty body.
    pub fn request(&self) -> http::Request<crate::upstream::client::UpstreamBody> {
        let mut req = http::Request::new(super::body::Limited::new(super::body::ClientBody::Empty, 0));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        req
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_rewrites() {
        let cases = [
            ("/api", "/", "/api", "/"),
            ("/api", "/", "/api/", "/"),
            ("/api", "/", "/api/users?x=1", "/users?x=1"),
            ("/api/", "/", "/api/", "/"),
            ("/api/", "/", "/api/users", "/users"),
            ("/api", "/v2", "/api", "/v2"),
            ("/api", "/v2", "/api/", "/v2/"),
            ("/api", "/v2/", "/api/a/b", "/v2/a/b"),
            ("/api/", "/v2/", "/api/a", "/v2/a"),
            ("/", "/v2", "/", "/v2/"),
            ("/", "/v2", "/x?q", "/v2/x?q"),
        ];
        for (prefix, to, path, want) in cases {
            let pq = http::uri::PathAndQuery::try_from(path).ok();
            assert_eq!(
                rewrite_prefix(prefix, to, pq.as_ref()).to_string(),
                want,
                "{prefix} → {to} on {path}"
            );
        }
    }

    /// The forwarding fields set on `h` as a request's fields are.
    fn forward_into(
        h: &mut HeaderMap,
        peer: &PeerHeaders,
        trusted: bool,
        proto: &'static str,
        host: Option<&HeaderValue>,
    ) {
        let mut added = Added::default();
        add_forwarding(h, &mut added, peer, trusted, proto, host);
        added.take_from(h);
        added.apply(h);
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap_or(header::ACCEPT),
                HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static("")),
            );
        }
        h
    }

    #[test]
    fn strips_fields_named_by_connection() {
        let mut h = map(&[
            ("connection", "close, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("accept", "*/*"),
            ("upgrade", "websocket"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert!(h.get("x-secret").is_none());
        assert!(h.get("keep-alive").is_none());
        assert!(h.get("te").is_none());
        assert!(h.get("connection").is_none());
        assert!(h.get("upgrade").is_none());
        assert_eq!(h.get("accept").map(|v| v.as_bytes()), Some(&b"*/*"[..]));
    }

    #[test]
    fn upgrade_keeps_upgrade_fields() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get("upgrade").map(|v| v.as_bytes()), Some(&b"websocket"[..]));
        assert_eq!(h.get("connection").map(|v| v.as_bytes()), Some(&b"upgrade"[..]));
    }

    #[test]
    fn added_fields_replace_the_clients_and_are_set_once_each() {
        let mut h = map(&[
            ("x-request-id", "from-client"),
            ("forwarded", "for=6.6.6.6"),
            ("accept", "*/*"),
        ]);
        let mut added = Added::default();
        added.set(&X_REQUEST_ID, Some(HeaderValue::from_static("first")));
        added.set(&X_FORWARDED_FOR, Some(HeaderValue::from_static("192.0.2.7")));
        added.set(&X_REQUEST_ID, Some(HeaderValue::from_static("second")));
        added.set(&FORWARDED, None);
        let written: Vec<_> = added.iter().map(|(n, v)| (n.as_str(), v.as_bytes())).collect();
        assert_eq!(
            written,
            [("x-request-id", &b"second"[..]), ("x-forwarded-for", &b"192.0.2.7"[..])],
            "set again: replaced in place; set to nothing: not written"
        );
        added.take_from(&mut h);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(
            left,
            ["accept"],
            "the client's fields of those names are gone, others stay"
        );
        added.apply(&mut h);
        assert_eq!(h["x-request-id"], "second");
        assert!(h.get("forwarded").is_none());
        // A request with none of them is left as it is.
        let mut plain = map(&[("accept", "*/*")]);
        added.take_from(&mut plain);
        assert_eq!(plain.len(), 1);
    }

    #[test]
    fn untrusted_forwarding_is_replaced() {
        let mut h = map(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil"),
        ]);
        let host = HeaderValue::from_static("example.com:8080");
        let peer = PeerHeaders::new("192.0.2.7:5000".parse().expect("addr"));
        forward_into(&mut h, &peer, false, "http", Some(&host));
        assert_eq!(h.get("x-forwarded-for").map(|v| v.as_bytes()), Some(&b"192.0.2.7"[..]));
        assert_eq!(h.get("x-forwarded-proto").map(|v| v.as_bytes()), Some(&b"http"[..]));
        assert_eq!(
            h.get("x-forwarded-host").map(|v| v.as_bytes()),
            Some(&b"example.com:8080"[..])
        );
        assert_eq!(
            h.get("forwarded").map(|v| v.as_bytes()),
            Some(&b"for=192.0.2.7;proto=http;host=\"example.com:8080\""[..])
        );
    }

    #[test]
    fn a_stripped_prefix_is_announced_after_a_trusted_proxys_own() {
        let prefix = |headers: &HeaderMap| headers.get("x-forwarded-prefix").map(|v| v.as_bytes().to_vec());
        let mut h = HeaderMap::new();
        add_prefix(&mut h, "/shop", "/");
        assert_eq!(prefix(&h), Some(b"/shop".to_vec()));
        let mut h = map(&[("x-forwarded-prefix", "/outer/")]);
        add_prefix(&mut h, "/shop/", "/");
        assert_eq!(prefix(&h), Some(b"/outer/shop".to_vec()));
        // A replaced prefix, or none at all: nothing is announced, a trusted value stays.
        let mut h = map(&[("x-forwarded-prefix", "/outer")]);
        add_prefix(&mut h, "/v1", "/v2");
        add_prefix(&mut h, "/", "/");
        assert_eq!(prefix(&h), Some(b"/outer".to_vec()));
    }

    #[test]
    fn forwarded_host_is_quoted_and_escaped() {
        let peer = PeerHeaders::new("192.0.2.7:5000".parse().expect("addr"));
        let mut h = HeaderMap::new();
        let host = HeaderValue::from_static("we\"ird\\host");
        forward_into(&mut h, &peer, false, "https", Some(&host));
        assert_eq!(
            h.get("forwarded").map(|v| v.as_bytes()),
            Some(&b"for=192.0.2.7;proto=https;host=\"we\\\"ird\\\\host\""[..])
        );
        let mut h = HeaderMap::new();
        forward_into(&mut h, &peer, false, "https", None);
        assert_eq!(
            h.get("forwarded").map(|v| v.as_bytes()),
            Some(&b"for=192.0.2.7;proto=https"[..])
        );
    }

    #[test]
    fn trusted_forwarding_is_appended() {
        let mut h = map(&[
            ("x-forwarded-for", "198.51.100.1"),
            ("forwarded", "for=198.51.100.1;proto=https"),
            ("x-forwarded-proto", "https"),
        ]);
        let host = HeaderValue::from_static("a.example");
        let peer = PeerHeaders::new("[2001:db8::1]:443".parse().expect("addr"));
        forward_into(&mut h, &peer, true, "http", Some(&host));
        assert_eq!(
            h.get("x-forwarded-for").map(|v| v.as_bytes()),
            Some(&b"198.51.100.1, 2001:db8::1"[..])
        );
        assert_eq!(h.get("x-forwarded-proto").map(|v| v.as_bytes()), Some(&b"https"[..]));
        assert_eq!(
            h.get("forwarded").map(|v| v.as_bytes()),
            Some(&b"for=198.51.100.1;proto=https, for=\"[2001:db8::1]\";proto=http;host=\"a.example\""[..])
        );
    }

    #[test]
    fn request_id_from_untrusted_is_replaced() {
        let h = map(&[("x-request-id", "abc")]);
        assert_eq!(request_id(&h, true), "abc");
        let generated = request_id(&h, false);
        assert_eq!(generated.len(), 32);
        assert!(generated.as_bytes().iter().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(generated, "abc");
        assert_ne!(request_id(&h, false), generated, "ids differ");
        let bad = map(&[("x-request-id", "a b")]);
        assert_ne!(request_id(&bad, true), "a b");
    }
}
