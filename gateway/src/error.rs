//! Errors of the request path and the one `rescue` that turns any of them into an answer.
//!
//! Each error knows its side (downstream, upstream, internal) and a bounded reason label, used by
//! metrics and logs. Answers are RFC 9457 `application/problem+json` bodies that carry the request
//! id and stay generic: addresses, pool internals and causes go to the log, not to the client.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

/// Boxed error used by bodies and the upstream client.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Which side of the proxy an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client sent something we refuse.
    Downstream,
    /// The upstream failed us.
    Upstream,
    /// Our own fault.
    Internal,
}

// === impl Side ===

impl Side {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Downstream => "downstream",
            Side::Upstream => "upstream",
            Side::Internal => "internal",
        }
    }
}

/// Why a request was not proxied normally.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No route matches host and path.
    #[error("no route for host {host:?} and path {path:?}")]
    NoRoute {
        /// Host as sent.
        host: String,
        /// Path as sent.
        path: String,
    },
    /// A request in HTTP/3 0-RTT early data that could be replayed with harm (RFC 8470).
    #[error("early data refused: {method} on route {route}")]
    TooEarly {
        /// The method.
        method: String,
        /// The route.
        route: String,
    },
    /// A route matches the path but not the method.
    #[error("method not allowed; allowed: {allow}")]
    MethodNotAllowed {
        /// `Allow` header value.
        allow: String,
    },
    /// Body larger than the route allows.
    #[error("request body larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit.
        limit: u64,
    },
    /// Request head larger than allowed, or too many fields.
    #[error("request head of {size} bytes and {count} fields exceeds the limits")]
    HeadTooLarge {
        /// Head size in bytes.
        size: usize,
        /// Number of header fields.
        count: usize,
    },
    /// Request target too long.
    #[error("request target of {len} bytes exceeds {limit}")]
    UriTooLong {
        /// Length.
        len: usize,
        /// Limit.
        limit: usize,
    },
    /// Malformed request.
    #[error("bad request: {reason}")]
    BadRequest {
        /// Bounded reason.
        reason: &'static str,
    },
    /// The route needs a bearer token and none was sent.
    #[error("no bearer token")]
    MissingToken,
    /// The bearer token was refused.
    #[error("bearer token refused: {source}")]
    InvalidToken {
        /// Why.
        source: crate::identity::jwt::JwtError,
    },
    /// The caller is authenticated but may not use the route as they are.
    #[error("refused: {refusal:?}")]
    Refused {
        /// Why.
        refusal: crate::identity::Refusal,
    },
    /// The route needs a browser session and this request cannot be sent to sign in (not a
    /// GET or HEAD).
    #[error("no session")]
    LoginRequired,
    /// A browser sign-in, step-up or logout step was refused.
    #[error("sign-in refused: {reason}")]
    Login {
        /// Status to answer.
        status: StatusCode,
        /// Bounded reason: `login_state`, `login_failed`, `login_exchange`, `step_up_failed`.
        reason: &'static str,
    },
    /// The trust policy refused the request on its risk.
    #[error("refused on risk {score:.2}: {explained}")]
    RiskDenied {
        /// Risk.
        score: f32,
        /// Reasons in words (logged, never sent to the client).
        explained: String,
    },
    /// The route's trust policy fails closed and the engine's risk is unavailable.
    #[error("risk unavailable")]
    RiskUnavailable,
    /// The route's identity provider has no keys loaded.
    #[error("identity provider {provider} unavailable")]
    IdentityUnavailable {
        /// Provider name.
        provider: String,
    },
    /// The route requires a client certificate and the connection has none.
    #[error("the route requires a client certificate")]
    ClientCertificateRequired,
    /// The route does not serve the client's address.
    #[error("the route does not serve this client address")]
    ClientNotAllowed,
    /// A CORS preflight asked for what the route's policy does not allow.
    #[error("CORS preflight refused: {what} not allowed")]
    CorsRefused {
        /// `origin`, `method` or `header`.
        what: &'static str,
    },
    /// The route's rate limit refused the request.
    #[error("over the route's rate limit; retry after {retry_after:?}")]
    RateLimited {
        /// Time until the caller has a cell again.
        retry_after: std::time::Duration,
    },
    /// Every endpoint of the pool is ejected.
    #[error("no healthy endpoint in pool {pool}")]
    NoHealthyEndpoint {
        /// Pool name.
        pool: String,
    },
    /// Every usable endpoint of the pool has its most requests in flight.
    #[error("every endpoint of pool {pool} is at max_in_flight_per_endpoint")]
    UpstreamOverloaded {
        /// Pool name.
        pool: String,
    },
    /// Could not connect to the endpoint.
    #[error("connecting to {endpoint} failed: {source}")]
    UpstreamConnect {
        /// Endpoint URL.
        endpoint: String,
        /// Cause.
        source: BoxError,
    },
    /// Endpoint did not answer in time.
    #[error("{endpoint} did not answer within {timeout:?}")]
    UpstreamTimeout {
        /// Endpoint URL.
        endpoint: String,
        /// The request timeout.
        timeout: Duration,
    },
    /// Endpoint broke the exchange.
    #[error("exchange with {endpoint} failed: {source}")]
    UpstreamProtocol {
        /// Endpoint URL.
        endpoint: String,
        /// Cause.
        source: BoxError,
    },
}

// === impl ProxyError ===

impl ProxyError {
    /// Status, bounded reason label, side, title and client-facing detail.
    pub fn describe(&self) -> (StatusCode, &'static str, Side, &'static str, &'static str) {
        use ProxyError::*;
        match self {
            NoRoute { .. } => (
                StatusCode::NOT_FOUND,
                "no_route",
                Side::Downstream,
                "Not Found",
                "No route matches this host and path.",
            ),
            TooEarly { .. } => (
                StatusCode::TOO_EARLY,
                "too_early",
                Side::Downstream,
                "Too Early",
                "This request came in TLS early data and could be replayed; send it again once the handshake is complete.",
            ),
            MethodNotAllowed { .. } => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                Side::Downstream,
                "Method Not Allowed",
                "This route does not accept the request method.",
            ),
            BodyTooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                Side::Downstream,
                "Content Too Large",
                "The request body exceeds the size this route accepts.",
            ),
            HeadTooLarge { .. } => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "head_too_large",
                Side::Downstream,
                "Request Header Fields Too Large",
                "The request headers exceed the size or count this gateway accepts.",
            ),
            UriTooLong { .. } => (
                StatusCode::URI_TOO_LONG,
                "uri_too_long",
                Side::Downstream,
                "URI Too Long",
                "The request target exceeds the length this gateway accepts.",
            ),
            BadRequest { .. } => (
                StatusCode::BAD_REQUEST,
                "bad_request",
                Side::Downstream,
                "Bad Request",
                "The request is malformed.",
            ),
            MissingToken => (
                StatusCode::UNAUTHORIZED,
                "missing_token",
                Side::Downstream,
                "Unauthorized",
                "This route needs a bearer token.",
            ),
            InvalidToken { .. } => (
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                Side::Downstream,
                "Unauthorized",
                "The bearer token is not valid for this route.",
            ),
            Refused {
                refusal: crate::identity::Refusal::StepUp { .. },
            } => (
                StatusCode::UNAUTHORIZED,
                "step_up",
                Side::Downstream,
                "Unauthorized",
                "This route needs a stronger or more recent authentication.",
            ),
            Refused { refusal } => (
                StatusCode::FORBIDDEN,
                refusal.reason(),
                Side::Downstream,
                "Forbidden",
                "The token does not grant access to this route.",
            ),
            LoginRequired => (
                StatusCode::UNAUTHORIZED,
                "login_required",
                Side::Downstream,
                "Unauthorized",
                "This route needs a signed-in browser session.",
            ),
            Login { status, reason } => (
                *status,
                reason,
                if status.is_server_error() {
                    Side::Upstream
                } else {
                    Side::Downstream
                },
                status.canonical_reason().unwrap_or("Error"),
                match *reason {
                    "login_state" => "This sign-in is unknown, expired or already used; start again.",
                    "step_up_failed" => "The sign-in did not reach the authentication level this route needs.",
                    "login_exchange" => "The identity provider could not complete the sign-in; try again later.",
                    _ => "The sign-in could not be completed.",
                },
            ),
            RiskDenied { .. } => (
                StatusCode::FORBIDDEN,
                "risk_denied",
                Side::Downstream,
                "Forbidden",
                "The request was refused by the gateway's access policy. Authenticate again to continue.",
            ),
            RiskUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "risk_unavailable",
                Side::Internal,
                "Service Unavailable",
                "Access cannot be assessed right now; try again later.",
            ),
            IdentityUnavailable { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "identity_unavailable",
                Side::Upstream,
                "Service Unavailable",
                "Tokens cannot be checked right now; try again later.",
            ),
            ClientCertificateRequired => (
                StatusCode::FORBIDDEN,
                "client_certificate_required",
                Side::Downstream,
                "Forbidden",
                "This route requires a client certificate; connect with one the gateway trusts.",
            ),
            ClientNotAllowed => (
                StatusCode::FORBIDDEN,
                "client_not_allowed",
                Side::Downstream,
                "Forbidden",
                "This route does not serve requests from your network address.",
            ),
            CorsRefused { .. } => (
                StatusCode::FORBIDDEN,
                "cors_refused",
                Side::Downstream,
                "Forbidden",
                "This route does not allow the cross-origin request the preflight asks for.",
            ),
            RateLimited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                Side::Downstream,
                "Too Many Requests",
                "Too many requests for this route; try again after the time in Retry-After.",
            ),
            NoHealthyEndpoint { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "no_healthy_endpoint",
                Side::Upstream,
                "Service Unavailable",
                "No healthy upstream endpoint is available; try again later.",
            ),
            UpstreamOverloaded { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_overloaded",
                Side::Upstream,
                "Service Unavailable",
                "The upstream service has as many requests as it takes; try again shortly.",
            ),
            UpstreamConnect { .. } => (
                StatusCode::BAD_GATEWAY,
                "upstream_connect",
                Side::Upstream,
                "Bad Gateway",
                "The upstream service could not be reached.",
            ),
            UpstreamTimeout { .. } => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                Side::Upstream,
                "Gateway Timeout",
                "The upstream service did not answer in time.",
            ),
            UpstreamProtocol { .. } => (
                StatusCode::BAD_GATEWAY,
                "upstream_protocol",
                Side::Upstream,
                "Bad Gateway",
                "The upstream service answered with an invalid response.",
            ),
        }
    }
}

/// Builds an RFC 9457 problem response (the body as bytes; callers choose the body type).
pub fn problem(status: StatusCode, slug: &str, title: &str, detail: &str, request_id: &str) -> Response<Bytes> {
    let doc = serde_json::json!({
        "type": format!("urn:gateway:problem:{}", slug.replace('_', "-")),
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
        "request_id": request_id,
    });
    let bytes = Bytes::from(serde_json::to_vec(&doc).unwrap_or_default());
    let mut resp = Response::new(bytes);
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Maps an error to the answer the client gets.
pub fn rescue(err: &ProxyError, request_id: &str) -> Response<Bytes> {
    let (status, reason, _, title, detail) = err.describe();
    let mut resp = problem(status, reason, title, detail, request_id);
    if let ProxyError::MethodNotAllowed { allow } = err {
        if let Ok(v) = HeaderValue::from_str(allow) {
            resp.headers_mut().insert(header::ALLOW, v);
        }
    }
    // RFC 6750 §3: the challenge, with the error code when a token was sent. The description
    // stays generic; the precise reason is in the log.
    let challenge = match err {
        ProxyError::MissingToken => Some(HeaderValue::from_static("Bearer realm=\"gateway\"")),
        ProxyError::InvalidToken { .. } => Some(HeaderValue::from_static(
            "Bearer realm=\"gateway\", error=\"invalid_token\", error_description=\"the token is not valid\"",
        )),
        ProxyError::Refused { refusal } => challenge(refusal),
        _ => None,
    };
    if let Some(c) = challenge {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, c);
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        // A full pool frees places as its requests finish: sooner than an ejection ends.
        let secs = if matches!(err, ProxyError::UpstreamOverloaded { .. }) {
            "1"
        } else {
            "5"
        };
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static(secs));
    }
    if let ProxyError::RateLimited { retry_after, .. } = err {
        // Whole seconds, rounded up: coming back earlier would be refused again.
        let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    resp
}

/// The `WWW-Authenticate` value for a refused caller: RFC 6750 `insufficient_scope`, or the
/// RFC 9470 step-up challenge laid out as in the RFC's examples.
pub fn challenge(refusal: &crate::identity::Refusal) -> Option<HeaderValue> {
    use crate::identity::Refusal;
    let text = match refusal {
        Refusal::InsufficientScope(scope) => {
            format!("Bearer realm=\"gateway\", error=\"insufficient_scope\", scope=\"{scope}\"")
        }
        Refusal::MissingClaim(_) => return None,
        Refusal::StepUp {
            acr_values,
            max_age,
            description,
        } => {
            let mut t =
                format!("Bearer error=\"insufficient_user_authentication\", error_description=\"{description}\"");
            if let Some(a) = acr_values {
                t.push_str(&format!(", acr_values=\"{a}\""));
            }
            if let Some(m) = max_age {
                t.push_str(&format!(", max_age=\"{m}\""));
            }
            t
        }
    };
    HeaderValue::from_str(&text).ok()
}

/// Whether `err`'s cause chain contains an `E`.
pub fn is_caused_by<E: std::error::Error + 'static>(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if e.is::<E>() {
            return true;
        }
        cur = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Refusal;

    #[test]
    fn step_up_challenges_read_as_the_rfc_9470_examples() {
        // RFC 9470 §3, figures 1 and 2 (folded there for width, one line on the wire).
        let acr = Refusal::StepUp {
            acr_values: Some("myACR".into()),
            max_age: None,
            description: "A different authentication level is required",
        };
        assert_eq!(
            challenge(&acr).expect("header"),
            "Bearer error=\"insufficient_user_authentication\", error_description=\"A different authentication level is required\", acr_values=\"myACR\""
        );
        let age = Refusal::StepUp {
            acr_values: None,
            max_age: Some(5),
            description: "More recent authentication is required",
        };
        assert_eq!(
            challenge(&age).expect("header"),
            "Bearer error=\"insufficient_user_authentication\", error_description=\"More recent authentication is required\", max_age=\"5\""
        );
        let scope = Refusal::InsufficientScope("read write".into());
        assert_eq!(
            challenge(&scope).expect("header"),
            "Bearer realm=\"gateway\", error=\"insufficient_scope\", scope=\"read write\""
        );
        let resp = rescue(&ProxyError::Refused { refusal: acr }, "rid");
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert!(resp.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .is_ok_and(|v| v.contains("acr_values=\"myACR\"")));
        assert_eq!(
            rescue(&ProxyError::Refused { refusal: scope }, "rid").status(),
            StatusCode::FORBIDDEN
        );
    }
}
