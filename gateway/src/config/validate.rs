//! Validation: `FileConfig` → typed [`Config`], collecting every problem with its position.
//!
//! No I/O happens here: files named by the config (certificates, CA bundles) are read when the
//! snapshot is built (`dynamic.rs`), which reports its failures in the same form.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde_saphyr::Spanned;

use super::file::{self, FileConfig, Str};
use super::{
    Balance, CertConfig, Config, ConfigError, HealthConfig, Limits, ListenerConfig, Pos, ProviderConfig, ReloadConfig,
    RouteConfig, TlsConfig, UpstreamConfig, UpstreamProtocol, UpstreamTls,
};

/// Collects problems while walking the file.
pub(crate) struct Problems {
    file: String,
    pub(crate) list: Vec<ConfigError>,
}

// === impl Problems ===

impl Problems {
    pub(crate) fn new(file: &str) -> Self {
        Self {
            file: file.to_string(),
            list: Vec::new(),
        }
    }

    pub(crate) fn at(&mut self, pos: Pos, field: impl Into<String>, reason: impl Into<String>) {
        self.list.push(ConfigError {
            file: self.file.clone(),
            line: pos.line,
            column: pos.column,
            field: field.into(),
            reason: reason.into(),
        });
    }
}

fn pos<T>(s: &Spanned<T>) -> Pos {
    Pos {
        line: s.referenced.line(),
        column: s.referenced.column(),
    }
}

const TOP: Pos = Pos { line: 1, column: 1 };

/// Parses `500ms`, `10s`, `5m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 500ms, 10s, 5m or 1h"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("`{text}` has no unit: write it like 500ms, 10s, 5m or 1h")),
    };
    Ok(d)
}

fn duration(p: &mut Problems, v: &Option<Str>, field: &str, default: Duration) -> Duration {
    let Some(s) = v else { return default };
    match parse_duration(&s.value) {
        Ok(d) if d.is_zero() => {
            p.at(pos(s), field, "must be greater than zero");
            default
        }
        Ok(d) => d,
        Err(e) => {
            p.at(pos(s), field, e);
            default
        }
    }
}

fn positive(p: &mut Problems, v: &Option<Spanned<u64>>, field: &str, default: u64) -> u64 {
    positive_in(p, v.as_ref(), field, default)
}

/// [`positive`] for a value inside an optional section.
fn positive_in(p: &mut Problems, v: Option<&Spanned<u64>>, field: &str, default: u64) -> u64 {
    match v {
        Some(s) if s.value == 0 => {
            p.at(pos(s), field, "must be greater than zero");
            default
        }
        Some(s) => s.value,
        None => default,
    }
}

/// Headers no route may set or remove: they frame the message or belong to one hop.
const FRAMING_HEADERS: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// Request headers the gateway writes for the upstream itself.
const GATEWAY_REQUEST_HEADERS: [&str; 9] = [
    "x-forwarded-client-cert",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-prefix",
    "forwarded",
    "x-request-id",
    "traceparent",
    "tracestate",
];

/// Response headers the gateway writes itself.
const GATEWAY_RESPONSE_HEADERS: [&str; 2] = ["x-request-id", "alt-svc"];

/// A route's `request_headers` or `response_headers`; `owned` names headers the gateway
/// writes itself (refused, like the framing ones).
fn header_ops(p: &mut Problems, ops: Option<&file::FileHeaderOps>, field: &str, owned: &[&str]) -> super::HeaderOps {
    let mut out = super::HeaderOps::default();
    let Some(ops) = ops else { return out };
    let name = |p: &mut Problems, raw: &str, at: Pos, field: String| {
        let Ok(n) = http::HeaderName::from_bytes(raw.to_ascii_lowercase().as_bytes()) else {
            p.at(at, field, format!("`{raw}` is not a header name"));
            return None;
        };
        if FRAMING_HEADERS.contains(&n.as_str()) {
            p.at(
                at,
                field,
                format!("`{n}` frames the message or belongs to one hop; it cannot be changed"),
            );
            return None;
        }
        if owned.contains(&n.as_str()) {
            p.at(
                at,
                field,
                format!("`{n}` is written by the gateway; it cannot be changed"),
            );
            return None;
        }
        Some(n)
    };
    for (k, v) in &ops.set {
        let f = format!("{field}.set.{k}");
        let Some(n) = name(p, k, pos(v), f.clone()) else {
            continue;
        };
        match http::HeaderValue::from_str(&v.value) {
            Ok(hv) => out.set.push((n, hv)),
            Err(_) => p.at(pos(v), f, "not a header value (visible ASCII, spaces and tabs)"),
        }
    }
    for (j, r) in ops.remove.iter().enumerate() {
        if let Some(n) = name(p, &r.value, pos(r), format!("{field}.remove[{j}]")) {
            out.remove.push(n);
        }
    }
    out
}

/// A route's `cors`; `methods` are the route's own (its default for `allow_methods`).
fn cors(p: &mut Problems, c: &file::FileCors, field: &str, methods: &[http::Method]) -> super::CorsConfig {
    use super::OriginPattern;
    if c.allow_origins.is_empty() {
        p.at(TOP, format!("{field}.allow_origins"), "at least one origin is required");
    }
    let credentials = c.allow_credentials.unwrap_or(false);
    let mut origins = Vec::new();
    for (i, o) in c.allow_origins.iter().enumerate() {
        let f = format!("{field}.allow_origins[{i}]");
        let v = o.value.trim_end_matches('/').to_ascii_lowercase();
        if v == "*" {
            if credentials {
                p.at(
                    pos(o),
                    f,
                    "`*` cannot go with allow_credentials: browsers refuse it; list the origins",
                );
                continue;
            }
            origins.push(OriginPattern::Any);
            continue;
        }
        let parsed = v
            .split_once("://")
            .filter(|(s, _)| *s == "https" || *s == "http")
            .map(|(scheme, host)| match host.strip_prefix("*.") {
                Some(rest) => (scheme, true, rest),
                None => (scheme, false, host),
            })
            .filter(|(_, _, host)| {
                !host.is_empty()
                    && !host.contains(['/', '?', '#', '*', '@'])
                    && http::uri::Authority::try_from(*host).is_ok()
            });
        let Some((scheme, wild, host)) = parsed else {
            p.at(
                pos(o),
                f,
                format!(
                    "`{}` is not an origin like https://app.example.com or https://*.example.com",
                    o.value
                ),
            );
            continue;
        };
        origins.push(if wild {
            OriginPattern::Subdomains {
                scheme: format!("{scheme}://"),
                suffix: format!(".{host}"),
            }
        } else {
            OriginPattern::Exact(v)
        });
    }
    let mut allow_methods = Vec::new();
    for (i, m) in c.allow_methods.iter().enumerate() {
        match http::Method::from_bytes(m.value.to_ascii_uppercase().as_bytes()) {
            Ok(m) => allow_methods.push(m),
            Err(_) => p.at(
                pos(m),
                format!("{field}.allow_methods[{i}]"),
                format!("`{}` is not a method", m.value),
            ),
        }
    }
    if allow_methods.is_empty() {
        allow_methods = if methods.is_empty() {
            use http::Method;
            vec![
                Method::GET,
                Method::HEAD,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ]
        } else {
            methods.to_vec()
        };
    }
    let names = |p: &mut Problems, list: &[Str], what: &str, default: &[&'static str]| -> Vec<http::HeaderName> {
        if list.is_empty() {
            return default.iter().map(|n| http::HeaderName::from_static(n)).collect();
        }
        list.iter()
            .enumerate()
            .filter_map(
                |(i, n)| match http::HeaderName::from_bytes(n.value.to_ascii_lowercase().as_bytes()) {
                    Ok(h) => Some(h),
                    Err(_) => {
                        p.at(
                            pos(n),
                            format!("{field}.{what}[{i}]"),
                            format!("`{}` is not a header name", n.value),
                        );
                        None
                    }
                },
            )
            .collect()
    };
    let headers = names(p, &c.allow_headers, "allow_headers", &["authorization", "content-type"]);
    let expose = names(p, &c.expose_headers, "expose_headers", &["x-request-id"]);
    super::CorsConfig {
        origins,
        methods: allow_methods,
        headers,
        expose,
        max_age: duration(p, &c.max_age, &format!("{field}.max_age"), Duration::from_secs(300)),
        credentials,
    }
}

/// IP addresses and CIDR blocks; `field[i]` names a bad one.
fn networks(p: &mut Problems, list: &[Str], field: &str) -> Vec<IpNet> {
    let mut out = Vec::new();
    for (i, t) in list.iter().enumerate() {
        let v = t.value.trim();
        match v.parse::<IpNet>().or_else(|_| v.parse::<IpAddr>().map(IpNet::from)) {
            Ok(n) => out.push(n.trunc()),
            Err(_) => p.at(
                pos(t),
                format!("{field}[{i}]"),
                format!("`{v}` is not an IP address or CIDR like 10.0.0.0/8"),
            ),
        }
    }
    out
}

/// What a route answers by itself (`redirect`, `respond`), checked against the rest of it: a
/// route has exactly one of `upstream`, `redirect` and `respond`, and one that answers by
/// itself has no `split`, `auth` or `trust` (it answers before them).
fn direct_answer(p: &mut Problems, r: &file::FileRoute, base: &str) -> Option<super::DirectAnswer> {
    let given = [r.upstream.is_some(), r.redirect.is_some(), r.respond.is_some()]
        .iter()
        .filter(|g| **g)
        .count();
    if given != 1 {
        p.at(
            pos(&r.name),
            base.to_string(),
            if given == 0 {
                "a route needs `upstream`, `redirect` or `respond`"
            } else {
                "`upstream`, `redirect` and `respond` exclude each other: give one"
            },
        );
    }
    if r.upstream.is_none() {
        for (what, present) in [
            ("split", !r.split.is_empty()),
            ("auth", r.auth.is_some()),
            ("trust", r.trust.is_some()),
        ] {
            if present {
                p.at(
                    pos(&r.name),
                    format!("{base}.{what}"),
                    "a route without `upstream` answers before this would apply",
                );
            }
        }
    }
    if let Some(rd) = &r.redirect {
        let status = match rd.status.as_ref() {
            None => http::StatusCode::MOVED_PERMANENTLY,
            Some(s) => match s.value {
                301 | 302 | 303 | 307 | 308 => {
                    http::StatusCode::from_u16(s.value as u16).unwrap_or(http::StatusCode::FOUND)
                }
                _ => {
                    p.at(
                        pos(s),
                        format!("{base}.redirect.status"),
                        "a redirect status: 301, 302, 303, 307 or 308",
                    );
                    http::StatusCode::MOVED_PERMANENTLY
                }
            },
        };
        let to = rd.to.value.trim().to_string();
        let absolute = to
            .parse::<http::Uri>()
            .is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
        if !(absolute || to.starts_with('/')) || http::HeaderValue::from_str(&to).is_err() {
            p.at(
                pos(&rd.to),
                format!("{base}.redirect.to"),
                format!(
                    "`{}` is not a URL like https://new.example.com or a path like /v2",
                    rd.to.value
                ),
            );
        }
        return Some(super::DirectAnswer::Redirect {
            to,
            status,
            keep_path: rd.keep_path.unwrap_or(true),
        });
    }
    let rs = r.respond.as_ref()?;
    let status = match http::StatusCode::from_u16(rs.status.value.min(1000) as u16) {
        Ok(s) if (200..600).contains(&s.as_u16()) => s,
        _ => {
            p.at(
                pos(&rs.status),
                format!("{base}.respond.status"),
                "a status from 200 to 599",
            );
            http::StatusCode::OK
        }
    };
    let content_type = match &rs.content_type {
        None => http::HeaderValue::from_static("text/plain; charset=utf-8"),
        Some(ct) => http::HeaderValue::from_str(&ct.value).unwrap_or_else(|_| {
            p.at(pos(ct), format!("{base}.respond.content_type"), "not a header value");
            http::HeaderValue::from_static("text/plain; charset=utf-8")
        }),
    };
    Some(super::DirectAnswer::Respond {
        status,
        body: bytes::Bytes::from(rs.body.as_ref().map(|b| b.value.clone()).unwrap_or_default()),
        content_type,
    })
}

/// A route's `rate_limit`.
fn rate_limit(p: &mut Problems, rl: &file::FileRateLimit, field: &str) -> Option<super::RateLimitConfig> {
    let parsed = rl.rate.value.split_once('/').and_then(|(n, unit)| {
        let n: u32 = n.trim().parse().ok().filter(|n| *n > 0)?;
        let per = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return None,
        };
        Some((n, per / n))
    });
    let parsed = parsed.filter(|(_, period)| !period.is_zero());
    if parsed.is_none() {
        p.at(
            pos(&rl.rate),
            format!("{field}.rate"),
            format!("`{}` is not a rate like 100/s, 600/m or 1000/h", rl.rate.value),
        );
    }
    let n = parsed.map_or(1, |(n, _)| n);
    let burst =
        positive_in(p, rl.burst.as_ref(), &format!("{field}.burst"), u64::from(n)).min(u64::from(u32::MAX)) as u32;
    let by = match rl.by.as_ref() {
        None => super::RateKeyKind::Client,
        Some(b) => match b.value.as_str() {
            "client" => super::RateKeyKind::Client,
            "subject" => super::RateKeyKind::Subject,
            "route" => super::RateKeyKind::Route,
            other => {
                p.at(
                    pos(b),
                    format!("{field}.by"),
                    format!("`{other}` is not `client`, `subject` or `route`"),
                );
                super::RateKeyKind::Client
            }
        },
    };
    let max_keys = positive_in(p, rl.max_keys.as_ref(), &format!("{field}.max_keys"), 100_000) as usize;
    Some(super::RateLimitConfig {
        period: parsed?.1,
        burst: std::num::NonZeroU32::new(burst).unwrap_or(std::num::NonZeroU32::MIN),
        by,
        max_keys,
    })
}

fn socket_addr(p: &mut Problems, s: &Str, field: &str) -> Option<SocketAddr> {
    match s.value.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            p.at(
                pos(s),
                field,
                format!("`{}` is not an IP:port address like 127.0.0.1:8443", s.value),
            );
            None
        }
    }
}

fn name(p: &mut Problems, s: &Str, field: &str, seen: &mut HashMap<String, Pos>, kind: &str) {
    let ok = !s.value.is_empty()
        && s.value.len() <= 64
        && s.value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if !ok {
        p.at(
            pos(s),
            field,
            format!("`{}` is not a name: use 1 to 64 of a-z, 0-9, '-', '_', '.'", s.value),
        );
        return;
    }
    if let Some(first) = seen.get(&s.value) {
        p.at(
            pos(s),
            field,
            format!("{kind} `{}` is already defined at line {}", s.value, first.line),
        );
    } else {
        seen.insert(s.value.clone(), pos(s));
    }
}

/// Checks a host pattern: a DNS name, optionally with one leading `*.` label.
pub(crate) fn host_pattern_ok(h: &str) -> bool {
    let rest = h.strip_prefix("*.").unwrap_or(h);
    !rest.is_empty()
        && rest.len() <= 253
        && rest.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

/// Validates a parsed file and produces the typed config, or every problem found.
pub fn validate(file_name: &str, f: FileConfig) -> Result<Config, Vec<ConfigError>> {
    let mut p = Problems::new(file_name);

    // --- listeners
    if f.listeners.is_empty() {
        p.at(TOP, "listeners", "at least one listener is required");
    }
    let mut listener_names = HashMap::new();
    let mut addrs: HashMap<SocketAddr, Pos> = HashMap::new();
    let mut listeners = Vec::new();
    for (i, l) in f.listeners.iter().enumerate() {
        let base = format!("listeners[{i}]");
        name(
            &mut p,
            &l.name,
            &format!("{base}.name"),
            &mut listener_names,
            "listener",
        );
        let addr = socket_addr(&mut p, &l.address, &format!("{base}.address"));
        if let Some(a) = addr.filter(|a| a.port() != 0) {
            if let Some(first) = addrs.get(&a) {
                p.at(
                    pos(&l.address),
                    format!("{base}.address"),
                    format!("address {a} is already used by the listener at line {}", first.line),
                );
            } else {
                addrs.insert(a, pos(&l.address));
            }
        }
        let tls = l.tls.as_ref().map(|t| tls_config(&mut p, t, &base));
        let quic = l.quic.as_ref().map(|q| {
            if tls.is_none() {
                p.at(
                    pos(&l.name),
                    format!("{base}.quic"),
                    "QUIC needs the listener's `tls` (HTTP/3 is always encrypted)",
                );
            }
            let quic = quic_config(&mut p, q, &base);
            if quic.early_data && tls.as_ref().is_some_and(|t| t.client_auth.is_some()) {
                p.at(
                    pos(&l.name),
                    format!("{base}.quic.early_data"),
                    "early data would serve requests before the client certificate is verified; \
                     turn off one of quic.early_data and tls.client_auth",
                );
            }
            quic
        });
        let redirect_to_https = l.redirect_to_https.as_ref().and_then(|r| {
            let field = format!("{base}.redirect_to_https");
            if tls.is_some() {
                p.at(
                    pos(r),
                    field,
                    "only a plain listener redirects to HTTPS (this one has `tls`)",
                );
                return None;
            }
            match u16::try_from(r.value) {
                Ok(port) if port > 0 => Some(port),
                _ => {
                    p.at(pos(r), field, "a port from 1 to 65535, e.g. 443");
                    None
                }
            }
        });
        if let Some(a) = addr {
            listeners.push(ListenerConfig {
                name: l.name.value.clone(),
                addr: a,
                tls,
                quic,
                redirect_to_https,
            });
        }
    }

    // --- admin
    let admin = match &f.admin {
        Some(a) => {
            let addr = socket_addr(&mut p, &a.address, "admin.address");
            if let Some(ad) = addr.filter(|a| a.port() != 0) {
                if let Some(first) = addrs.get(&ad) {
                    p.at(
                        pos(&a.address),
                        "admin.address",
                        format!("address {ad} is already used by the listener at line {}", first.line),
                    );
                }
            }
            addr.unwrap_or_else(default_admin)
        }
        None => default_admin(),
    };

    // --- limits
    let fl = f.limits.unwrap_or_default();
    let defaults = Limits::default();
    let limits = Limits {
        max_header_bytes: positive(
            &mut p,
            &fl.max_header_bytes,
            "limits.max_header_bytes",
            defaults.max_header_bytes as u64,
        ) as usize,
        max_headers: positive(
            &mut p,
            &fl.max_headers,
            "limits.max_headers",
            defaults.max_headers as u64,
        ) as usize,
        max_uri_bytes: positive(
            &mut p,
            &fl.max_uri_bytes,
            "limits.max_uri_bytes",
            defaults.max_uri_bytes as u64,
        ) as usize,
        max_body_bytes: positive(
            &mut p,
            &fl.max_body_bytes,
            "limits.max_body_bytes",
            defaults.max_body_bytes,
        ),
        header_timeout: duration(
            &mut p,
            &fl.header_timeout,
            "limits.header_timeout",
            defaults.header_timeout,
        ),
        idle_timeout: duration(&mut p, &fl.idle_timeout, "limits.idle_timeout", defaults.idle_timeout),
        max_connections: positive(
            &mut p,
            &fl.max_connections,
            "limits.max_connections",
            defaults.max_connections as u64,
        ) as usize,
    };

    // --- trusted proxies
    let trusted_proxies = networks(&mut p, &f.trusted_proxies, "trusted_proxies");

    // --- upstreams
    let mut upstream_names = HashMap::new();
    let mut upstreams = Vec::new();
    for (i, u) in f.upstreams.iter().enumerate() {
        let base = format!("upstreams[{i}]");
        name(
            &mut p,
            &u.name,
            &format!("{base}.name"),
            &mut upstream_names,
            "upstream",
        );
        upstreams.push(upstream_config(&mut p, u, &base));
    }

    // --- identity providers
    let mut provider_names = HashMap::new();
    let mut providers = Vec::new();
    for (i, fp) in f
        .identity
        .as_ref()
        .map(|id| id.providers.as_slice())
        .unwrap_or(&[])
        .iter()
        .enumerate()
    {
        let base = format!("identity.providers[{i}]");
        name(
            &mut p,
            &fp.name,
            &format!("{base}.name"),
            &mut provider_names,
            "identity provider",
        );
        match fp.issuer.value.parse::<http::Uri>() {
            Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() && u.query().is_none() => {}
            _ => p.at(
                pos(&fp.issuer),
                format!("{base}.issuer"),
                format!(
                    "`{}` is not an issuer URL like https://idp.example.com",
                    fp.issuer.value
                ),
            ),
        }
        let mut algorithms = Vec::new();
        for (j, a) in fp.algorithms.iter().enumerate() {
            match crate::identity::jwt::Alg::parse(&a.value) {
                Some(alg) => algorithms.push(alg),
                None => p.at(
                    pos(a),
                    format!("{base}.algorithms[{j}]"),
                    format!("`{}` is not an allowed algorithm: use RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA (never none or HS*)", a.value),
                ),
            }
        }
        if algorithms.is_empty() && fp.algorithms.is_empty() {
            algorithms = vec![
                crate::identity::jwt::Alg::RS256,
                crate::identity::jwt::Alg::ES256,
                crate::identity::jwt::Alg::EdDSA,
            ];
        }
        let leeway = duration(&mut p, &fp.leeway, &format!("{base}.leeway"), Duration::from_secs(30));
        providers.push(ProviderConfig {
            name: fp.name.value.clone(),
            issuer: fp.issuer.value.clone(),
            audiences: fp.audiences.iter().map(|a| a.value.clone()).collect(),
            algorithms,
            require_at_jwt: fp.require_at_jwt.unwrap_or(false),
            leeway_secs: leeway.as_secs(),
            max_token_bytes: positive(&mut p, &fp.max_token_bytes, &format!("{base}.max_token_bytes"), 8192) as usize,
            min_refresh_interval: duration(
                &mut p,
                &fp.min_refresh_interval,
                &format!("{base}.min_refresh_interval"),
                Duration::from_secs(10),
            ),
            ca_files: fp.ca_files.iter().map(|c| (PathBuf::from(&c.value), pos(c))).collect(),
            login: fp.login.as_ref().map(|l| login_client(&mut p, l, &base)),
        });
    }
    let sessions = session_config(&mut p, f.identity.as_ref().and_then(|i| i.sessions.as_ref()));

    // --- identity headers to upstreams
    let mut identity_headers = super::IdentityHeaders::default();
    if let Some(h) = f.identity.as_ref().and_then(|i| i.upstream_headers.as_ref()) {
        let mut header =
            |v: &Str, field: String| match http::HeaderName::from_bytes(v.value.to_ascii_lowercase().as_bytes()) {
                Ok(n) => Some(n),
                Err(_) => {
                    p.at(pos(v), field, format!("`{}` is not a header name", v.value));
                    None
                }
            };
        if let Some(s) = &h.subject {
            if let Some(n) = header(s, "identity.upstream_headers.subject".into()) {
                identity_headers.subject = n;
            }
        }
        for (claim, v) in &h.claims {
            if let Some(n) = header(v, format!("identity.upstream_headers.claims.{claim}")) {
                identity_headers.claims.push((claim.clone(), n));
            }
        }
    }

    // --- identity assertion
    let assertion = f.identity.as_ref().and_then(|i| i.assertion.as_ref()).map(|a| {
        let header = match &a.header {
            Some(h) => http::HeaderName::from_bytes(h.value.to_ascii_lowercase().as_bytes()).unwrap_or_else(|_| {
                p.at(
                    pos(h),
                    "identity.assertion.header",
                    format!("`{}` is not a header name", h.value),
                );
                http::HeaderName::from_static("x-gateway-assertion")
            }),
            None => http::HeaderName::from_static("x-gateway-assertion"),
        };
        super::AssertionConfig {
            header,
            issuer: a
                .issuer
                .as_ref()
                .map(|i| i.value.clone())
                .unwrap_or_else(|| "gateway".into()),
            ttl: duration(&mut p, &a.ttl, "identity.assertion.ttl", Duration::from_secs(60)),
            rotate_every: duration(
                &mut p,
                &a.rotate_every,
                "identity.assertion.rotate_every",
                Duration::from_secs(24 * 3600),
            ),
        }
    });

    // --- routes
    let mutual_tls = listeners
        .iter()
        .any(|l| l.tls.as_ref().is_some_and(|t| t.client_auth.is_some()));
    let mut route_names = HashMap::new();
    let mut route_keys: HashMap<(Option<String>, String, Vec<String>), Pos> = HashMap::new();
    let mut routes = Vec::new();
    for (i, r) in f.routes.iter().enumerate() {
        let base = format!("routes[{i}]");
        name(&mut p, &r.name, &format!("{base}.name"), &mut route_names, "route");
        if let Some(u) = r.upstream.as_ref().filter(|u| !upstream_names.contains_key(&u.value)) {
            let mut known: Vec<&str> = f.upstreams.iter().map(|u| u.name.value.as_str()).collect();
            known.sort_unstable();
            let known = if known.is_empty() {
                "none are defined".to_string()
            } else {
                format!("defined: {}", known.join(", "))
            };
            p.at(
                pos(u),
                format!("{base}.upstream"),
                format!("no upstream named `{}` ({known})", u.value),
            );
        }
        let direct = direct_answer(&mut p, r, &base);
        let mut split = Vec::new();
        let mut total = 0.0;
        for (j, s) in r.split.iter().enumerate() {
            let f = format!("{base}.split[{j}]");
            if !upstream_names.contains_key(&s.upstream.value) {
                p.at(
                    pos(&s.upstream),
                    format!("{f}.upstream"),
                    format!("no upstream named `{}`", s.upstream.value),
                );
            } else if r.upstream.as_ref().is_some_and(|u| u.value == s.upstream.value)
                || split.iter().any(|(u, _)| *u == s.upstream.value)
            {
                p.at(
                    pos(&s.upstream),
                    format!("{f}.upstream"),
                    format!("`{}` already has a share of this route", s.upstream.value),
                );
            }
            let pct = s.percent.value;
            if !(pct > 0.0 && pct <= 100.0) {
                p.at(pos(&s.percent), format!("{f}.percent"), "a share from above 0 to 100");
                continue;
            }
            let before = total;
            total += pct;
            // Said once, at the share that goes over.
            if total > 100.0 + 1e-9 && before <= 100.0 + 1e-9 {
                p.at(
                    pos(&s.percent),
                    format!("{f}.percent"),
                    format!("the route's shares add up to {total} percent, more than 100"),
                );
            }
            split.push((s.upstream.value.clone(), pct));
        }
        let m = r.matches.as_ref();
        let host = m.and_then(|m| m.host.as_ref()).map(|h| {
            let v = h.value.to_ascii_lowercase();
            if !host_pattern_ok(&v) {
                p.at(
                    pos(h),
                    format!("{base}.match.host"),
                    format!("`{}` is not a host name or `*.domain` pattern", h.value),
                );
            }
            v
        });
        let prefix = match m.and_then(|m| m.path_prefix.as_ref()) {
            Some(pp) => {
                if !pp.value.starts_with('/') {
                    p.at(
                        pos(pp),
                        format!("{base}.match.path_prefix"),
                        format!("`{}` must start with '/'", pp.value),
                    );
                }
                if pp.value.contains(['?', '#']) {
                    p.at(
                        pos(pp),
                        format!("{base}.match.path_prefix"),
                        "a path prefix cannot contain '?' or '#'",
                    );
                }
                pp.value.clone()
            }
            None => "/".to_string(),
        };
        let mut methods = Vec::new();
        for (j, me) in m.map(|m| m.methods.as_slice()).unwrap_or(&[]).iter().enumerate() {
            match http::Method::from_bytes(me.value.as_bytes()) {
                Ok(mm) if me.value.chars().all(|c| c.is_ascii_uppercase()) => methods.push(mm),
                _ => p.at(
                    pos(me),
                    format!("{base}.match.methods[{j}]"),
                    format!("`{}` is not an HTTP method like GET or POST", me.value),
                ),
            }
        }
        let mut headers = Vec::new();
        for (name, value) in m.map(|m| &m.headers).into_iter().flatten() {
            let f = format!("{base}.match.headers.{name}");
            let Ok(n) = http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) else {
                p.at(pos(value), f, format!("`{name}` is not a header name"));
                continue;
            };
            if value.value == "*" {
                headers.push((n, None));
                continue;
            }
            match http::HeaderValue::from_str(&value.value) {
                Ok(v) => headers.push((n, Some(v))),
                Err(_) => p.at(pos(value), f, "not a header value (visible ASCII, spaces and tabs)"),
            }
        }
        let mut key_methods: Vec<String> = methods.iter().map(|m| m.to_string()).collect();
        key_methods.sort();
        for (n, v) in &headers {
            key_methods.push(format!("{n}={}", v.as_ref().map_or("*", |v| v.to_str().unwrap_or(""))));
        }
        let key = (host.clone(), prefix.clone(), key_methods);
        if let Some(first) = route_keys.get(&key) {
            p.at(
                pos(&r.name),
                format!("{base}.match"),
                format!(
                    "matches exactly what the route at line {} matches, so it could never be chosen",
                    first.line
                ),
            );
        } else {
            route_keys.insert(key, pos(&r.name));
        }
        let max_body_bytes = positive(
            &mut p,
            &r.max_body_bytes,
            &format!("{base}.max_body_bytes"),
            limits.max_body_bytes,
        );
        let mut provider_ref = |v: &Option<Str>, field: &str, login: bool| {
            let v = v.as_ref()?;
            match providers.iter().find(|pc| pc.name == v.value) {
                None => p.at(
                    pos(v),
                    format!("{base}.auth.{field}"),
                    format!("no identity provider named `{}`", v.value),
                ),
                Some(pc) if login && pc.login.is_none() => p.at(
                    pos(v),
                    format!("{base}.auth.{field}"),
                    format!(
                        "identity provider `{}` has no `login` client for browser sign-in",
                        v.value
                    ),
                ),
                Some(_) => {}
            }
            Some(v.value.clone())
        };
        let bearer = r.auth.as_ref().and_then(|a| provider_ref(&a.bearer, "bearer", false));
        let login = r.auth.as_ref().and_then(|a| provider_ref(&a.login, "login", true));
        if let Some(a) = &r.auth {
            let token_checks =
                !a.scopes.is_empty() || !a.claims.is_empty() || !a.acr_values.is_empty() || a.max_age.is_some();
            if a.bearer.is_none() && a.login.is_none() && (token_checks || a.client_certificate != Some(true)) {
                p.at(
                    pos(&r.name),
                    format!("{base}.auth"),
                    "name a provider in `bearer`, `login` or both (leave `auth` out for a public route, \
                     or require only `client_certificate`)",
                );
            }
        }
        let requirements = match &r.auth {
            None => super::Requirements::default(),
            Some(a) => super::Requirements {
                scopes: a.scopes.iter().map(|s| s.value.clone()).collect(),
                claims: a.claims.iter().map(|(k, v)| (k.clone(), v.value.clone())).collect(),
                acr_values: a.acr_values.iter().map(|s| s.value.clone()).collect(),
                max_age: a.max_age.as_ref().map(|m| {
                    let spanned = Some(Spanned {
                        value: m.value.clone(),
                        referenced: m.referenced,
                        defined: m.defined,
                    });
                    duration(
                        &mut p,
                        &spanned,
                        &format!("{base}.auth.max_age"),
                        Duration::from_secs(300),
                    )
                }),
            },
        };
        let trust = r.trust.as_ref().map(|t| {
            let d = super::TrustConfig::default();
            let share = |p: &mut Problems, v: &Option<Spanned<f64>>, field: &str, default: f64| match v {
                None => default,
                Some(s) if s.value > 0.0 && s.value <= 1.0 => s.value,
                Some(s) => {
                    p.at(
                        pos(s),
                        format!("{base}.trust.{field}"),
                        "a risk from 0 (exclusive) to 1, e.g. 0.5",
                    );
                    default
                }
            };
            let step_up_at = share(&mut p, &t.step_up_at, "step_up_at", d.step_up_at);
            let deny_at = share(&mut p, &t.deny_at, "deny_at", d.deny_at);
            if let (Some(s), true) = (&t.step_up_at, step_up_at >= deny_at) {
                p.at(
                    pos(s),
                    format!("{base}.trust.step_up_at"),
                    format!("must be below deny_at ({deny_at}), or no request would ever be asked to step up"),
                );
            }
            let shadow = match &t.mode {
                None => false,
                Some(m) if m.value == "enforce" => false,
                Some(m) if m.value == "shadow" => true,
                Some(m) => {
                    p.at(pos(m), format!("{base}.trust.mode"), "`enforce` or `shadow`");
                    false
                }
            };
            let fail_closed = match &t.on_unavailable {
                None => false,
                Some(m) if m.value == "last_known" => false,
                Some(m) if m.value == "fail_closed" => true,
                Some(m) => {
                    p.at(
                        pos(m),
                        format!("{base}.trust.on_unavailable"),
                        "`last_known` or `fail_closed`",
                    );
                    false
                }
            };
            let step_up = match &t.step_up {
                None => d.step_up,
                Some(s) => super::Requirements {
                    acr_values: s.acr_values.iter().map(|a| a.value.clone()).collect(),
                    max_age: s.max_age.as_ref().map(|_| {
                        duration(
                            &mut p,
                            &s.max_age.clone_spanned(),
                            &format!("{base}.trust.step_up.max_age"),
                            Duration::from_secs(300),
                        )
                    }),
                    ..Default::default()
                },
            };
            if step_up.acr_values.is_empty() && step_up.max_age.is_none() {
                p.at(
                    pos(&r.name),
                    format!("{base}.trust.step_up"),
                    "name `acr_values`, `max_age` or both: a step-up must ask for something",
                );
            }
            super::TrustConfig {
                shadow,
                step_up_at,
                deny_at,
                step_up,
                fail_closed,
            }
        });
        let rewrite_prefix = r.rewrite_prefix.as_ref().map(|rw| {
            if !rw.value.starts_with('/')
                || http::uri::PathAndQuery::try_from(rw.value.as_str()).is_err()
                || rw.value.contains(['?', '#'])
            {
                p.at(
                    pos(rw),
                    format!("{base}.rewrite_prefix"),
                    format!("`{}` is not a path like / or /v2/", rw.value),
                );
            }
            rw.value.clone()
        });
        let mut request_owned: Vec<&str> = GATEWAY_REQUEST_HEADERS.to_vec();
        request_owned.extend(identity_headers.names().map(|n| n.as_str()));
        if let Some(a) = &assertion {
            request_owned.push(a.header.as_str());
        }
        let request_headers = header_ops(
            &mut p,
            r.request_headers.as_ref(),
            &format!("{base}.request_headers"),
            &request_owned,
        );
        let response_headers = header_ops(
            &mut p,
            r.response_headers.as_ref(),
            &format!("{base}.response_headers"),
            &GATEWAY_RESPONSE_HEADERS,
        );
        let rate_limit = r
            .rate_limit
            .as_ref()
            .and_then(|rl| rate_limit(&mut p, rl, &format!("{base}.rate_limit")));
        let cors = r
            .cors
            .as_ref()
            .map(|c| cors(&mut p, c, &format!("{base}.cors"), &methods));
        let clients = r.clients.as_ref().map(|c| super::ClientRules {
            allow: networks(&mut p, &c.allow, &format!("{base}.clients.allow")),
            deny: networks(&mut p, &c.deny, &format!("{base}.clients.deny")),
        });
        routes.push(RouteConfig {
            name: r.name.value.clone(),
            host,
            path_prefix: prefix,
            methods,
            headers,
            upstream: r.upstream.as_ref().map(|u| u.value.clone()),
            direct,
            split,
            split_by: match r.split_by.as_ref() {
                None => super::SplitBy::Request,
                Some(b) => match b.value.as_str() {
                    "request" => super::SplitBy::Request,
                    "client" => super::SplitBy::Client,
                    "subject" => super::SplitBy::Subject,
                    other => {
                        p.at(
                            pos(b),
                            format!("{base}.split_by"),
                            format!("`{other}` is not `request`, `client` or `subject`"),
                        );
                        super::SplitBy::Request
                    }
                },
            },
            max_body_bytes,
            request_timeout: r.request_timeout.is_some().then(|| {
                duration(
                    &mut p,
                    &r.request_timeout,
                    &format!("{base}.request_timeout"),
                    Duration::from_secs(30),
                )
            }),
            bearer,
            login,
            requirements,
            client_certificate: match r.auth.as_ref().and_then(|a| a.client_certificate) {
                Some(true) if !mutual_tls => {
                    p.at(
                        pos(&r.name),
                        format!("{base}.auth.client_certificate"),
                        "no listener asks for client certificates (listeners[].tls.client_auth)",
                    );
                    false
                }
                v => v.unwrap_or(false),
            },
            trust,
            early_data: r.early_data.unwrap_or(false),
            rewrite_prefix,
            request_headers,
            response_headers,
            rate_limit,
            cors,
            clients,
            compress: r.compress.as_ref().map(|c| {
                let mut types = Vec::new();
                for (j, t) in c.types.iter().enumerate() {
                    let v = t.value.trim().to_ascii_lowercase();
                    let ok = v.split_once('/').is_some_and(|(a, b)| {
                        !a.is_empty() && !b.is_empty() && !a.contains('*') && (b == "*" || !b.contains('*'))
                    }) && !v.contains([';', ' ']);
                    if ok {
                        types.push(v);
                    } else {
                        p.at(
                            pos(t),
                            format!("{base}.compress.types[{j}]"),
                            format!("`{}` is not a content type like application/json or text/*", t.value),
                        );
                    }
                }
                if c.types.is_empty() {
                    types = [
                        "text/html",
                        "text/plain",
                        "text/css",
                        "text/javascript",
                        "application/javascript",
                        "application/json",
                        "application/xml",
                        "image/svg+xml",
                    ]
                    .map(String::from)
                    .to_vec();
                }
                super::CompressConfig {
                    types,
                    min_bytes: c.min_bytes.as_ref().map_or(1024, |m| m.value),
                }
            }),
        });
    }

    // --- telemetry
    let telemetry = {
        let t = f.telemetry.as_ref();
        let d = super::TelemetryConfig::default();
        super::TelemetryConfig {
            tap_capacity: positive_in(
                &mut p,
                t.and_then(|t| t.tap_capacity.as_ref()),
                "telemetry.tap_capacity",
                d.tap_capacity as u64,
            ) as usize,
            runtime_interval: duration(
                &mut p,
                &t.and_then(|t| t.runtime_interval.clone_spanned()),
                "telemetry.runtime_interval",
                d.runtime_interval,
            ),
            task_sampling: positive_in(
                &mut p,
                t.and_then(|t| t.task_sampling.as_ref()),
                "telemetry.task_sampling",
                d.task_sampling,
            ),
            log_level: match t.and_then(|t| t.logs.as_ref()).and_then(|l| l.level.as_ref()) {
                None => d.log_level,
                Some(l) => {
                    if let Err(reason) = crate::telemetry::logs::check_level(&l.value) {
                        p.at(pos(l), "telemetry.logs.level", reason);
                    }
                    l.value.clone()
                }
            },
            profiles: {
                let f = t.and_then(|t| t.profiles.as_ref());
                let dp = super::ProfileConfig::default();
                let length = duration(
                    &mut p,
                    &f.and_then(|f| f.duration.clone_spanned()),
                    "telemetry.profiles.duration",
                    Duration::from_secs(dp.seconds),
                );
                if let Some(d) = f.and_then(|f| f.duration.as_ref()) {
                    let max = Duration::from_secs(crate::telemetry::profile::MAX_SECONDS);
                    if length < Duration::from_secs(1) || length > max {
                        p.at(pos(d), "telemetry.profiles.duration", "a capture lasts from 1s to 60s");
                    }
                }
                super::ProfileConfig {
                    dir: f
                        .and_then(|f| f.dir.as_ref())
                        .map(|d| PathBuf::from(&d.value))
                        .unwrap_or(dp.dir),
                    keep: positive_in(
                        &mut p,
                        f.and_then(|f| f.keep.as_ref()),
                        "telemetry.profiles.keep",
                        dp.keep as u64,
                    ) as usize,
                    seconds: length.as_secs(),
                }
            },
            traces: {
                let f = t.and_then(|t| t.traces.as_ref());
                let dt = super::TraceConfig::default();
                let endpoint = f.and_then(|f| f.endpoint.as_ref()).and_then(|e| {
                    let ok = e.value.parse::<http::Uri>().is_ok_and(|u| {
                        u.scheme_str() == Some("http") && u.host().is_some() && u.path_and_query().is_none_or(|pq| pq.as_str() == "/")
                    });
                    if !ok {
                        p.at(
                            pos(e),
                            "telemetry.traces.endpoint",
                            format!("`{}` is not an endpoint like http://127.0.0.1:4317 (TLS to the collector is not supported)", e.value),
                        );
                    }
                    ok.then(|| e.value.trim_end_matches('/').to_string())
                });
                let protocol = match f.and_then(|f| f.protocol.as_ref()) {
                    None => dt.protocol,
                    Some(v) if v.value == "grpc" => super::OtlpProtocol::Grpc,
                    Some(v) if v.value == "http" || v.value == "http/protobuf" => super::OtlpProtocol::Http,
                    Some(v) => {
                        p.at(
                            pos(v),
                            "telemetry.traces.protocol",
                            format!("`{}` is not `grpc` or `http`", v.value),
                        );
                        dt.protocol
                    }
                };
                let sampling_ratio = match f.and_then(|f| f.sampling_ratio.as_ref()) {
                    None => dt.sampling_ratio,
                    Some(r) if (0.0..=1.0).contains(&r.value) => r.value,
                    Some(r) => {
                        p.at(
                            pos(r),
                            "telemetry.traces.sampling_ratio",
                            "a share from 0 to 1, e.g. 0.01",
                        );
                        dt.sampling_ratio
                    }
                };
                super::TraceConfig {
                    endpoint,
                    protocol,
                    sampling_ratio,
                    service_name: f
                        .and_then(|f| f.service_name.as_ref())
                        .map(|s| s.value.clone())
                        .unwrap_or(dt.service_name),
                    instance: f
                        .and_then(|f| f.instance.as_ref())
                        .map(|s| s.value.clone())
                        .unwrap_or(dt.instance),
                }
            },
            log_format: match t.and_then(|t| t.logs.as_ref()).and_then(|l| l.format.as_ref()) {
                None => None,
                Some(f) if f.value == "text" => Some(crate::telemetry::logs::Format::Text),
                Some(f) if f.value == "json" => Some(crate::telemetry::logs::Format::Json),
                Some(f) => {
                    p.at(
                        pos(f),
                        "telemetry.logs.format",
                        format!("`{}` is not `text` or `json`", f.value),
                    );
                    None
                }
            },
        }
    };

    // --- engine
    let engine = {
        let e = f.engine.as_ref();
        let d = super::EngineConfig::default();
        super::EngineConfig {
            enabled: e.and_then(|e| e.enabled).unwrap_or(d.enabled),
            warmup: positive_in(
                &mut p,
                e.and_then(|e| e.warmup.as_ref()),
                "engine.warmup",
                u64::from(d.warmup),
            )
            .min(u64::from(u32::MAX)) as u32,
            sustained: positive_in(
                &mut p,
                e.and_then(|e| e.sustained.as_ref()),
                "engine.sustained",
                u64::from(d.sustained),
            )
            .min(u64::from(u32::MAX)) as u32,
            state_file: e.and_then(|e| e.state_file.as_ref()).map(|f| PathBuf::from(&f.value)),
            save_every: duration(
                &mut p,
                &e.and_then(|e| e.save_every.clone_spanned()),
                "engine.save_every",
                d.save_every,
            ),
            stale_after: duration(
                &mut p,
                &e.and_then(|e| e.stale_after.clone_spanned()),
                "engine.stale_after",
                d.stale_after,
            ),
            max_entities: positive_in(
                &mut p,
                e.and_then(|e| e.max_entities.as_ref()),
                "engine.max_entities",
                d.max_entities as u64,
            ) as usize,
            entity_idle: duration(
                &mut p,
                &e.and_then(|e| e.entity_idle.clone_spanned()),
                "engine.entity_idle",
                d.entity_idle,
            ),
            population: e.and_then(|e| e.population).unwrap_or(d.population),
            time_scale: match e.and_then(|e| e.time_scale.as_ref()) {
                None => d.time_scale,
                Some(s) if s.value >= 1.0 && s.value <= 100_000.0 => s.value,
                Some(s) => {
                    p.at(
                        pos(s),
                        "engine.time_scale",
                        "a factor from 1 to 100000 (1 in production)",
                    );
                    d.time_scale
                }
            },
            alerts: {
                let a = e.and_then(|e| e.alerts.as_ref());
                let da = d.alerts;
                // A webhook may carry a token in its query; an Alertmanager base URL may not.
                let urls = |p: &mut Problems, list: Option<&Vec<Str>>, field: &str, example: &str| -> Vec<String> {
                    let mut out = Vec::new();
                    let query_ok = field.ends_with("webhooks");
                    for (i, u) in list.into_iter().flatten().enumerate() {
                        let ok = u.value.parse::<http::Uri>().is_ok_and(|uri| {
                            matches!(uri.scheme_str(), Some("http" | "https"))
                                && uri.host().is_some()
                                && (query_ok || uri.query().is_none())
                        });
                        if ok {
                            out.push(u.value.trim_end_matches('/').to_string());
                        } else {
                            p.at(
                                pos(u),
                                format!("{field}[{i}]"),
                                format!("`{}` is not a URL like {example}", u.value),
                            );
                        }
                    }
                    out
                };
                super::EngineAlerts {
                    alertmanagers: urls(
                        &mut p,
                        a.map(|a| &a.alertmanagers),
                        "engine.alerts.alertmanagers",
                        "http://127.0.0.1:9093",
                    ),
                    webhooks: urls(
                        &mut p,
                        a.map(|a| &a.webhooks),
                        "engine.alerts.webhooks",
                        "https://hooks.example.com/gateway",
                    ),
                    resend_every: duration(
                        &mut p,
                        &a.and_then(|a| a.resend_every.clone_spanned()),
                        "engine.alerts.resend_every",
                        da.resend_every,
                    ),
                    instance: match a.and_then(|a| a.instance.as_ref()) {
                        Some(i) if !i.value.trim().is_empty() => i.value.trim().to_string(),
                        Some(i) => {
                            p.at(pos(i), "engine.alerts.instance", "an empty instance label");
                            da.instance
                        }
                        None => da.instance,
                    },
                }
            },
        }
    };

    // --- shutdown and reload
    let drain_timeout = duration(
        &mut p,
        &f.shutdown.as_ref().and_then(|s| s.drain_timeout.clone_spanned()),
        "shutdown.drain_timeout",
        Duration::from_secs(30),
    );
    let reload = ReloadConfig {
        watch: f.reload.as_ref().and_then(|r| r.watch).unwrap_or(true),
        poll_interval: duration(
            &mut p,
            &f.reload.as_ref().and_then(|r| r.poll_interval.clone_spanned()),
            "reload.poll_interval",
            Duration::from_secs(1),
        ),
    };

    // --- service level objectives
    let mut slos: Vec<super::SloConfig> = Vec::new();
    for (i, o) in f.slos.iter().enumerate() {
        let base = format!("slos[{i}]");
        let name = o.name.value.clone();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            p.at(
                pos(&o.name),
                format!("{base}.name"),
                "letters, digits, `-` and `_` only",
            );
        } else if slos.iter().any(|s| s.name == name) {
            p.at(
                pos(&o.name),
                format!("{base}.name"),
                format!("another objective is named `{name}`"),
            );
        }
        if o.routes.is_empty() {
            p.at(pos(&o.name), format!("{base}.routes"), "name at least one route");
        }
        for (j, r) in o.routes.iter().enumerate() {
            if !routes.iter().any(|x| x.name == r.value) {
                p.at(
                    pos(r),
                    format!("{base}.routes[{j}]"),
                    format!("no route named `{}`", r.value),
                );
            }
        }
        let window_days = match &o.window {
            None => 30,
            Some(w) if w.value == "30d" => 30,
            Some(w) if w.value == "28d" => 28,
            Some(w) => {
                p.at(pos(w), format!("{base}.window"), "`28d` or `30d`");
                30
            }
        };
        let percent = |p: &mut Problems, v: &Spanned<f64>, field: &str| {
            if v.value > 0.0 && v.value < 100.0 {
                Some(v.value / 100.0)
            } else {
                p.at(
                    pos(v),
                    format!("{base}.{field}"),
                    "a percentage above 0 and below 100, e.g. 99.9",
                );
                None
            }
        };
        let availability = o.availability.as_ref().and_then(|a| percent(&mut p, a, "availability"));
        let latency = o.latency.as_ref().and_then(|l| {
            let objective = percent(&mut p, &l.objective, "latency.objective");
            let bounds: Vec<f64> = crate::telemetry::duration_bounds().collect();
            let threshold = match parse_duration(&l.threshold.value) {
                Ok(d) => {
                    let secs = d.as_secs_f64();
                    match bounds.iter().find(|b| (**b - secs).abs() < 1e-9) {
                        Some(b) => Some(*b),
                        None => {
                            let list: Vec<String> = bounds
                                .iter()
                                .map(|b| b * 1000.0)
                                .filter(|ms| ms.fract() == 0.0)
                                .map(|ms| format!("{ms}ms"))
                                .collect();
                            p.at(
                                pos(&l.threshold),
                                format!("{base}.latency.threshold"),
                                format!(
                                    "must be a bound of the duration histogram's buckets: one of {}",
                                    list.join(", ")
                                ),
                            );
                            None
                        }
                    }
                }
                Err(e) => {
                    p.at(pos(&l.threshold), format!("{base}.latency.threshold"), e);
                    None
                }
            };
            Some((threshold?, objective?))
        });
        if o.availability.is_none() && o.latency.is_none() {
            p.at(pos(&o.name), base.clone(), "give `availability`, `latency` or both");
        }
        slos.push(super::SloConfig {
            name,
            routes: o.routes.iter().map(|r| r.value.clone()).collect(),
            window_days,
            availability,
            latency,
        });
    }

    if p.list.is_empty() {
        Ok(Config {
            listeners,
            admin,
            limits,
            trusted_proxies,
            routes,
            upstreams,
            providers,
            identity_headers,
            assertion,
            sessions,
            telemetry,
            engine,
            drain_timeout,
            reload,
            slos,
        })
    } else {
        Err(p.list)
    }
}

trait CloneSpanned {
    fn clone_spanned(&self) -> Option<Str>;
}

impl CloneSpanned for Option<Str> {
    fn clone_spanned(&self) -> Option<Str> {
        self.as_ref().map(|s| Spanned {
            value: s.value.clone(),
            referenced: s.referenced,
            defined: s.defined,
        })
    }
}

fn login_client(p: &mut Problems, l: &file::FileLogin, base: &str) -> super::LoginClient {
    let client_secret = match (&l.client_secret, &l.client_secret_file) {
        (Some(s), None) => super::Secret::Inline(s.value.clone()),
        (None, Some(f)) => super::Secret::File(PathBuf::from(&f.value), pos(f)),
        (Some(s), Some(_)) => {
            p.at(
                pos(s),
                format!("{base}.login"),
                "give `client_secret` or `client_secret_file`, not both",
            );
            super::Secret::Inline(String::new())
        }
        (None, None) => {
            p.at(
                pos(&l.client_id),
                format!("{base}.login"),
                "a `client_secret` or `client_secret_file` is required",
            );
            super::Secret::Inline(String::new())
        }
    };
    let mut scopes = vec!["openid".to_string()];
    for (j, s) in l.scopes.iter().enumerate() {
        if s.value.is_empty() || s.value.contains(|c: char| c.is_whitespace() || c == '"' || c == '\\') {
            p.at(pos(s), format!("{base}.login.scopes[{j}]"), "a scope is one word");
        } else if !scopes.contains(&s.value) {
            scopes.push(s.value.clone());
        }
    }
    if let Some(u) = &l.post_logout_redirect_uri {
        if !matches!(u.value.parse::<http::Uri>(), Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https"))) {
            p.at(
                pos(u),
                format!("{base}.login.post_logout_redirect_uri"),
                "an absolute http(s) URL is required",
            );
        }
    }
    super::LoginClient {
        client_id: l.client_id.value.clone(),
        client_secret,
        scopes,
        post_logout_redirect_uri: l.post_logout_redirect_uri.as_ref().map(|u| u.value.clone()),
    }
}

fn session_config(p: &mut Problems, s: Option<&file::FileSessions>) -> super::SessionConfig {
    let d = super::SessionConfig::default();
    let Some(s) = s else { return d };
    let path = |p: &mut Problems, v: &Option<Str>, field: &str, default: String| match v {
        None => default,
        Some(v)
            if v.value.starts_with('/')
                && !v.value.starts_with("//")
                && v.value
                    .parse::<http::uri::PathAndQuery>()
                    .is_ok_and(|pq| pq.query().is_none()) =>
        {
            v.value.clone()
        }
        Some(v) => {
            p.at(
                pos(v),
                format!("identity.sessions.{field}"),
                "a path like /.gateway/callback is required",
            );
            default
        }
    };
    let cookie_name = match &s.cookie_name {
        None => d.cookie_name,
        Some(c)
            if !c.value.is_empty()
                && c.value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
        {
            c.value.clone()
        }
        Some(c) => {
            p.at(
                pos(c),
                "identity.sessions.cookie_name",
                "letters, digits, `-`, `_` and `.` only",
            );
            d.cookie_name
        }
    };
    let idle_timeout = duration(p, &s.idle_timeout, "identity.sessions.idle_timeout", d.idle_timeout);
    let absolute_timeout = duration(
        p,
        &s.absolute_timeout,
        "identity.sessions.absolute_timeout",
        d.absolute_timeout,
    );
    let out = super::SessionConfig {
        key_file: s.key_file.as_ref().map(|k| (PathBuf::from(&k.value), pos(k))),
        cookie_name,
        idle_timeout,
        absolute_timeout,
        max_sessions: positive(
            p,
            &s.max_sessions,
            "identity.sessions.max_sessions",
            d.max_sessions as u64,
        ) as usize,
        callback_path: path(p, &s.callback_path, "callback_path", d.callback_path),
        login_path: path(p, &s.login_path, "login_path", d.login_path),
        logout_path: path(p, &s.logout_path, "logout_path", d.logout_path),
        backchannel_logout_path: path(
            p,
            &s.backchannel_logout_path,
            "backchannel_logout_path",
            d.backchannel_logout_path,
        ),
    };
    let paths = [
        &out.callback_path,
        &out.login_path,
        &out.logout_path,
        &out.backchannel_logout_path,
    ];
    if (1..paths.len()).any(|i| paths[..i].contains(&paths[i])) {
        p.at(
            TOP,
            "identity.sessions",
            "callback, login, logout and back-channel logout paths must differ",
        );
    }
    out
}

fn default_admin() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9901))
}

fn quic_config(p: &mut Problems, q: &file::FileQuic, base: &str) -> super::QuicConfig {
    let d = super::QuicConfig::default();
    let f = |field: &str| format!("{base}.quic.{field}");
    let window = |p: &mut Problems, v: &Option<Spanned<u64>>, field: &str, default: u32| -> u32 {
        let n = positive(p, v, &f(field), u64::from(default));
        match (v, u32::try_from(n)) {
            (_, Ok(n)) if n >= 1200 => n,
            (Some(s), _) => {
                p.at(pos(s), f(field), "a window from 1200 bytes to 4294967295");
                default
            }
            (None, _) => default,
        }
    };
    super::QuicConfig {
        idle_timeout: duration(p, &q.idle_timeout.clone_spanned(), &f("idle_timeout"), d.idle_timeout),
        max_streams: positive(p, &q.max_streams, &f("max_streams"), u64::from(d.max_streams)).min(u64::from(u32::MAX))
            as u32,
        stream_window: window(p, &q.stream_window, "stream_window", d.stream_window),
        connection_window: window(p, &q.connection_window, "connection_window", d.connection_window),
        max_connections: positive(p, &q.max_connections, &f("max_connections"), d.max_connections as u64) as usize,
        retry_above: q
            .retry_above
            .as_ref()
            .map(|r| r.value as usize)
            .unwrap_or(d.retry_above),
        early_data: q.early_data.unwrap_or(d.early_data),
    }
}

fn tls_config(p: &mut Problems, t: &file::FileTls, base: &str) -> TlsConfig {
    if t.certificates.is_empty() {
        p.at(
            TOP,
            format!("{base}.tls.certificates"),
            "at least one certificate is required",
        );
    }
    let allow_tls12 = match &t.min_version {
        None => false,
        Some(v) if v.value == "1.3" => false,
        Some(v) if v.value == "1.2" => true,
        Some(v) => {
            p.at(
                pos(v),
                format!("{base}.tls.min_version"),
                format!("`{}` is not a supported TLS version: use \"1.3\" or \"1.2\"", v.value),
            );
            false
        }
    };
    let mut certificates = Vec::new();
    for (i, c) in t.certificates.iter().enumerate() {
        let cb = format!("{base}.tls.certificates[{i}]");
        let mut server_names = Vec::new();
        for (j, n) in c.server_names.iter().enumerate() {
            let v = n.value.to_ascii_lowercase();
            if host_pattern_ok(&v) {
                server_names.push(v);
            } else {
                p.at(
                    pos(n),
                    format!("{cb}.server_names[{j}]"),
                    format!("`{}` is not a host name or `*.domain` pattern", n.value),
                );
            }
        }
        certificates.push(CertConfig {
            cert: PathBuf::from(&c.cert.value),
            key: PathBuf::from(&c.key.value),
            cert_at: pos(&c.cert),
            key_at: pos(&c.key),
            field: cb,
            server_names,
        });
    }
    let client_auth = t.client_auth.as_ref().map(|c| {
        let field = format!("{base}.tls.client_auth");
        if c.ca_files.is_empty() {
            p.at(TOP, format!("{field}.ca_files"), "at least one CA file is required");
        }
        super::ClientAuthConfig {
            ca_files: c.ca_files.iter().map(|f| (PathBuf::from(&f.value), pos(f))).collect(),
            required: c.required.unwrap_or(true),
            field,
        }
    });
    TlsConfig {
        certificates,
        allow_tls12,
        client_auth,
    }
}

fn upstream_config(p: &mut Problems, u: &file::FileUpstream, base: &str) -> UpstreamConfig {
    if u.endpoints.is_empty() {
        p.at(
            pos(&u.name),
            format!("{base}.endpoints"),
            "at least one endpoint is required",
        );
    }
    let mut endpoints = Vec::new();
    let mut seen = HashSet::new();
    for (i, e) in u.endpoints.iter().enumerate() {
        let field = format!("{base}.endpoints[{i}]");
        match e.value.parse::<http::Uri>() {
            Ok(uri)
                if matches!(uri.scheme_str(), Some("http" | "https"))
                    && uri.host().is_some_and(|h| !h.is_empty())
                    && matches!(uri.path(), "" | "/")
                    && uri.query().is_none() =>
            {
                let canonical = format!(
                    "{}://{}",
                    uri.scheme_str().unwrap_or("http"),
                    uri.authority().map(|a| a.as_str()).unwrap_or("")
                );
                if !seen.insert(canonical.clone()) {
                    p.at(pos(e), field, format!("endpoint `{}` is listed twice", e.value));
                } else {
                    endpoints.push(canonical);
                }
            }
            _ => p.at(
                pos(e),
                field,
                format!(
                    "`{}` is not an endpoint like http://10.0.0.1:8080 or https://api.internal",
                    e.value
                ),
            ),
        }
    }
    let balance = match &u.balance {
        None => Balance::RoundRobin,
        Some(b) if b.value == "round_robin" => Balance::RoundRobin,
        Some(b) if b.value == "least_in_flight" => Balance::LeastInFlight,
        Some(b) => {
            p.at(
                pos(b),
                format!("{base}.balance"),
                format!(
                    "`{}` is not a balancing policy: use round_robin or least_in_flight",
                    b.value
                ),
            );
            Balance::RoundRobin
        }
    };
    let protocol = match &u.protocol {
        None => UpstreamProtocol::Http1,
        Some(v) if v.value == "http1" => UpstreamProtocol::Http1,
        Some(v) if v.value == "h2" => UpstreamProtocol::Http2,
        Some(v) => {
            p.at(
                pos(v),
                format!("{base}.protocol"),
                format!("`{}` is not an upstream protocol: use http1 or h2", v.value),
            );
            UpstreamProtocol::Http1
        }
    };
    let host_from_endpoint = match &u.host {
        None => false,
        Some(v) if v.value == "client" => false,
        Some(v) if v.value == "endpoint" => true,
        Some(v) => {
            p.at(
                pos(v),
                format!("{base}.host"),
                format!("`{}` is not `client` or `endpoint`", v.value),
            );
            false
        }
    };
    let tls = UpstreamTls {
        ca_files: u
            .tls
            .as_ref()
            .map(|t| t.ca_files.iter().map(|c| (PathBuf::from(&c.value), pos(c))).collect())
            .unwrap_or_default(),
        system_roots: u.tls.as_ref().and_then(|t| t.system_roots).unwrap_or(true),
        client_certificate: u
            .tls
            .as_ref()
            .and_then(|t| t.client_certificate.as_ref())
            .map(|c| CertConfig {
                cert: PathBuf::from(&c.cert.value),
                key: PathBuf::from(&c.key.value),
                cert_at: pos(&c.cert),
                key_at: pos(&c.key),
                field: format!("{base}.tls.client_certificate"),
                server_names: Vec::new(),
            }),
    };
    let h = u.health.as_ref();
    let health = HealthConfig {
        consecutive_failures: positive_in(
            p,
            h.and_then(|h| h.consecutive_failures.as_ref()),
            &format!("{base}.health.consecutive_failures"),
            5,
        ) as u32,
        ejection_time: duration(
            p,
            &h.and_then(|h| h.ejection_time.clone_spanned()),
            &format!("{base}.health.ejection_time"),
            Duration::from_secs(30),
        ),
        check: h.and_then(|h| h.check.as_ref()).map(|c| {
            let field = format!("{base}.health.check");
            let path = match http::uri::PathAndQuery::try_from(c.path.value.as_str()) {
                Ok(pq) if c.path.value.starts_with('/') => pq,
                _ => {
                    p.at(
                        pos(&c.path),
                        format!("{field}.path"),
                        format!("`{}` is not a path like /healthz", c.path.value),
                    );
                    http::uri::PathAndQuery::from_static("/")
                }
            };
            super::HealthCheck {
                path,
                interval: duration(p, &c.interval, &format!("{field}.interval"), Duration::from_secs(10)),
                timeout: duration(p, &c.timeout, &format!("{field}.timeout"), Duration::from_secs(2)),
                unhealthy_after: positive_in(p, c.unhealthy_after.as_ref(), &format!("{field}.unhealthy_after"), 2)
                    .min(u64::from(u32::MAX)) as u32,
                healthy_after: positive_in(p, c.healthy_after.as_ref(), &format!("{field}.healthy_after"), 2)
                    .min(u64::from(u32::MAX)) as u32,
            }
        }),
    };
    UpstreamConfig {
        name: u.name.value.clone(),
        endpoints,
        balance,
        protocol,
        host_from_endpoint,
        connect_timeout: duration(
            p,
            &u.connect_timeout,
            &format!("{base}.connect_timeout"),
            Duration::from_secs(2),
        ),
        request_timeout: duration(
            p,
            &u.request_timeout,
            &format!("{base}.request_timeout"),
            Duration::from_secs(30),
        ),
        idle_timeout: duration(
            p,
            &u.idle_timeout,
            &format!("{base}.idle_timeout"),
            Duration::from_secs(90),
        ),
        max_idle_per_endpoint: positive(
            p,
            &u.max_idle_per_endpoint,
            &format!("{base}.max_idle_per_endpoint"),
            256,
        ) as usize,
        max_in_flight_per_endpoint: u.max_in_flight_per_endpoint.as_ref().map_or(usize::MAX, |_| {
            positive(
                p,
                &u.max_in_flight_per_endpoint,
                &format!("{base}.max_in_flight_per_endpoint"),
                u64::MAX,
            )
            .try_into()
            .unwrap_or(usize::MAX)
        }),
        connect_attempts: positive(p, &u.connect_attempts, &format!("{base}.connect_attempts"), 3)
            .min(u64::from(u32::MAX)) as u32,
        retry: retry(p, u.retry.as_ref(), &format!("{base}.retry")),
        tls,
        health,
    }
}

/// An upstream's `retry`.
fn retry(p: &mut Problems, r: Option<&file::FileRetry>, field: &str) -> super::RetryConfig {
    let given = r.and_then(|r| r.attempts.as_ref());
    let mut attempts = positive_in(p, given, &format!("{field}.attempts"), 2);
    if let Some(a) = given.filter(|_| attempts > 10) {
        p.at(pos(a), format!("{field}.attempts"), "must be at most 10");
        attempts = 10;
    }
    let attempts = attempts as u32;
    let mut statuses: Vec<http::StatusCode> = Vec::new();
    for (i, s) in r.map(|r| r.statuses.as_slice()).unwrap_or_default().iter().enumerate() {
        match u16::try_from(s.value)
            .ok()
            .and_then(|v| http::StatusCode::from_u16(v).ok())
        {
            Some(code) if code.is_server_error() => {
                if !statuses.contains(&code) {
                    statuses.push(code);
                }
            }
            _ => p.at(
                pos(s),
                format!("{field}.statuses[{i}]"),
                format!("{} is not a 5xx status like 502 or 503", s.value),
            ),
        }
    }
    super::RetryConfig { attempts, statuses }
}
