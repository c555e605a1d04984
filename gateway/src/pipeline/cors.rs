//! CORS stage: a route's `cors` policy for browsers calling it from another origin (the Fetch
//! standard's CORS protocol).
//!
//! A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is answered by the
//! gateway right after routing, before rate limits and authentication: browsers send it without
//! credentials, so a route that needs a token would otherwise refuse it and the real request
//! would never be sent. It is routed by the method it asks for. Every answer to an allowed
//! origin, the gateway's own errors included, carries `Access-Control-Allow-Origin` (and
//! credentials, exposed headers and `Vary: Origin`); answers to other origins carry none, so
//! browsers keep them from the calling script.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use prometheus_client::metrics::counter::Counter;

use super::body::ProxyBody;
use crate::config::{CorsConfig, OriginPattern};
use crate::error::ProxyError;

/// A route's compiled CORS policy.
#[derive(Debug)]
pub struct Cors {
    /// What it was built from (kept across reloads when unchanged).
    pub config: CorsConfig,
    methods: HeaderValue,
    headers: HeaderValue,
    expose: Option<HeaderValue>,
    max_age: HeaderValue,
    /// Preflights by result: allowed, refused.
    preflights: [Counter; 2],
}

/// Joins header names or methods into one comma-separated value.
fn joined<'a>(items: impl Iterator<Item = &'a str>) -> HeaderValue {
    HeaderValue::from_str(&items.collect::<Vec<_>>().join(", ")).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The method a preflight asks for, when `req` is one.
pub fn preflight_method<B>(req: &Request<B>) -> Option<Method> {
    if req.method() != Method::OPTIONS || !req.headers().contains_key(header::ORIGIN) {
        return None;
    }
    let m = req.headers().get(header::ACCESS_CONTROL_REQUEST_METHOD)?;
    Method::from_bytes(m.as_bytes()).ok()
}

// === impl Cors ===

impl Cors {
    /// Compiles `config`; `preflights` counts allowed and refused preflights.
    pub fn new(config: CorsConfig, preflights: [Counter; 2]) -> Cors {
        let methods = joined(config.methods.iter().map(|m| m.as_str()));
        let headers = joined(config.headers.iter().map(|h| h.as_str()));
        let expose = (!config.expose.is_empty()).then(|| joined(config.expose.iter().map(|h| h.as_str())));
        let max_age = HeaderValue::from(config.max_age.as_secs());
        Cors {
            config,
            methods,
            headers,
            expose,
            max_age,
            preflights,
        }
    }

    /// Whether `origin` may call the route.
    pub fn allows(&self, origin: &HeaderValue) -> bool {
        let Ok(o) = origin.to_str() else { return false };
        self.config.origins.iter().any(|p| match p {
            OriginPattern::Any => true,
            OriginPattern::Exact(e) => o.eq_ignore_ascii_case(e),
            OriginPattern::Subdomains { scheme, suffix } => {
                let o = o.to_ascii_lowercase();
                o.strip_prefix(scheme.as_str())
                    .and_then(|host| host.strip_suffix(suffix.as_str()))
                    .is_some_and(|sub| !sub.is_empty() && !sub.contains([':', '/']))
            }
        })
    }

    /// Answers a preflight for `method` from the request's `Origin` with the request headers it
    /// asks for: 204 with what the route allows, or a refusal saying which part is not allowed.
    pub fn preflight(&self, headers: &HeaderMap, method: &Method) -> Result<Response<ProxyBody>, ProxyError> {
        let refused = |what: &'static str| {
            self.preflights[1].inc();
            ProxyError::CorsRefused { what }
        };
        if !headers.get(header::ORIGIN).is_some_and(|o| self.allows(o)) {
            return Err(refused("origin"));
        }
        if !self.config.methods.contains(method) {
            return Err(refused("method"));
        }
        let asked = headers
            .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|h| !h.is_empty());
        for h in asked {
            if !self.config.headers.iter().any(|a| a.as_str().eq_ignore_ascii_case(h)) {
                return Err(refused("header"));
            }
        }
        self.preflights[0].inc();
        let mut r = Response::new(ProxyBody::local(bytes::Bytes::new()));
        *r.status_mut() = StatusCode::NO_CONTENT;
        let h = r.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, self.methods.clone());
        if !self.config.headers.is_empty() {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, self.headers.clone());
        }
        h.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        Ok(r)
    }

    /// Adds the CORS headers of an answer to `origin`, when it is allowed.
    pub fn decorate(&self, origin: &HeaderValue, headers: &mut HeaderMap) {
        if !self.allows(origin) {
            return;
        }
        let any = !self.config.credentials && self.config.origins.contains(&OriginPattern::Any);
        if any {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        } else {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            // The answer depends on the origin: caches must keep one per origin.
            super::forward::add_vary(headers, "origin");
        }
        if self.config.credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(e) = &self.expose {
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, e.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderName;

    fn cors(origins: Vec<OriginPattern>, credentials: bool) -> Cors {
        Cors::new(
            CorsConfig {
                origins,
                methods: vec![Method::GET, Method::POST],
                headers: vec![header::AUTHORIZATION, header::CONTENT_TYPE],
                expose: vec![HeaderName::from_static("x-request-id")],
                max_age: std::time::Duration::from_secs(600),
                credentials,
            },
            [Counter::default(), Counter::default()],
        )
    }

    #[test]
    fn origins_match_exactly_or_by_subdomain() {
        let c = cors(
            vec![
                OriginPattern::Exact("https://app.example.com".into()),
                OriginPattern::Subdomains {
                    scheme: "https://".into(),
                    suffix: ".tenants.example.com".into(),
                },
            ],
            false,
        );
        let allows = |o: &'static str| c.allows(&HeaderValue::from_static(o));
        assert!(allows("https://app.example.com"));
        assert!(allows("HTTPS://APP.example.com"));
        assert!(allows("https://a.tenants.example.com"));
        assert!(
            !allows("https://tenants.example.com"),
            "the parent itself is not a subdomain"
        );
        assert!(!allows("http://a.tenants.example.com"), "scheme");
        assert!(!allows("https://a.tenants.example.com:8443"), "port");
        assert!(!allows("https://app.example.com.evil.test"));
        assert!(!allows("https://evil.test/.tenants.example.com"));
        assert!(!allows("null"));
    }

    #[test]
    fn preflights_say_what_is_not_allowed() {
        let c = cors(vec![OriginPattern::Exact("https://app.example.com".into())], true);
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, HeaderValue::from_static("https://app.example.com"));
        h.insert(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            HeaderValue::from_static("Authorization, content-type"),
        );
        let r = c.preflight(&h, &Method::POST);
        assert!(r.as_ref().is_ok_and(|r| r.status() == 204), "{r:?}");
        let what = |r: Result<Response<ProxyBody>, ProxyError>| match r {
            Err(ProxyError::CorsRefused { what }) => what,
            _ => "",
        };
        assert_eq!(what(c.preflight(&h, &Method::DELETE)), "method");
        h.insert(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            HeaderValue::from_static("x-secret"),
        );
        assert_eq!(what(c.preflight(&h, &Method::GET)), "header");
        h.insert(header::ORIGIN, HeaderValue::from_static("https://evil.test"));
        assert_eq!(what(c.preflight(&h, &Method::GET)), "origin");
    }

    #[test]
    fn answers_to_allowed_origins_are_decorated() {
        let origin = HeaderValue::from_static("https://app.example.com");
        let c = cors(vec![OriginPattern::Exact("https://app.example.com".into())], true);
        let mut h = HeaderMap::new();
        h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        c.decorate(&origin, &mut h);
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example.com");
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(h[header::ACCESS_CONTROL_EXPOSE_HEADERS], "x-request-id");
        assert_eq!(h.get_all(header::VARY).iter().count(), 2);
        c.decorate(&origin, &mut h);
        assert_eq!(h.get_all(header::VARY).iter().count(), 2, "Vary: origin once");
        let mut other = HeaderMap::new();
        c.decorate(&HeaderValue::from_static("https://evil.test"), &mut other);
        assert!(other.is_empty());
        // Any origin without credentials: `*`, and nothing varies.
        let any = cors(vec![OriginPattern::Any], false);
        let mut h = HeaderMap::new();
        any.decorate(&HeaderValue::from_static("https://whoever.test"), &mut h);
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(h.get(header::VARY).is_none());
    }
}
